//! The launch sequence. Single-threaded: every clone, unshare and mount of a job happens here,
//! in this order.
//!
//! ```text
//! launcher (host)                          init = PID 1 of the job (root, new namespaces)
//!  1. resolve user, image, bind sources
//!  2. (v2) create the cgroup; (--disk) scratch and its filesystem
//!  3. block forwarded signals; clone  ───►  uid maps (rootless); empty bounding set, seccomp
//!  4. scratch, "S" ─────────────────────►  mount plan;
//!     (v1) cgroup; groups; "go" ────────►  wait for "go"
//!                                            5. start the job: (v1) join the cgroup, setsid,
//!                                               drop privileges, chdir, exec
//!                                            6. reap orphans, forward signals, and on the
//!  7. wait: forward signals, grace; on ◄─────   job's exit kill what is left, report its
//!     the status: (v1) usage (only the          children's rusage and the status, and exit
//!     OOM count without a report) and
//!     cgroup; scratch; done, the init still
//!     exiting (v2, --disk: reap it first)
//!  8. (v2) usage, remove cgroup; report
//! ```

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use jobcell_cgroup::{CgroupError, CgroupRoot, Limits, OomWatch, Version};
use jobcell_spec::{JobSpec, NetMode};
use thiserror::Error;

use crate::disk::{DiskError, ScratchDisk};
use crate::fsid::FsIdError;
use crate::identity::{self, Identity, IdentityError};
use crate::report::{DiskUsage, Isolation, Report};
use crate::scratch::{self, private_subdir, ScratchDir, ScratchError};
use crate::sync::{Msg, Reader, Stage};
use crate::syscall::{Linux, Syscall};

mod init;
mod job;
mod launcher;
mod os;

use init::{init_main, ChildPlan, PlanShape};
use launcher::{
    explicit_limits, final_usage, namespaces, opened_as, say_oom, state_covers, wait_loop,
    world_writable, InitGuard, Waited,
};
use os::{
    clone_job, crash_point, current_umask, drain_signals, exited, micros, mount_disk, open_path,
    pipe, set_nonblock, CpuSplit, SignalMask, Timeline, TERMINATING,
};

pub use launcher::{job_env, job_name, limits};

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Scratch(#[from] ScratchError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("{what} '{path}': {source}")]
    Path {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} '{path}' (opened as {user}): {source}")]
    BindSource {
        what: &'static str,
        path: PathBuf,
        user: String,
        source: io::Error,
    },
    #[error(transparent)]
    FsId(#[from] FsIdError),
    #[error("{0}")]
    Setup(String),
    #[error("{0}: {1}")]
    Sys(&'static str, io::Error),
    #[error("the job's init exited without reporting the job's status (status {0})")]
    InitDied(i32),
    #[error("cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("interrupted by signal {0} before the job started")]
    Interrupted(i32),
}

/// The signals the launcher and the init pass on to the job.
pub const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// How the job ended, and the code jobcell itself exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobExit {
    Code(i32),
    Signal(i32),
}

impl JobExit {
    /// Like a shell: the code, or 128+N for death by signal N.
    pub fn shell_code(self) -> i32 {
        match self {
            JobExit::Code(c) => c,
            JobExit::Signal(s) => 128 + s,
        }
    }
}

/// One job to launch: the validated spec, plus what the caller resolved for it.
pub struct Launch<'a> {
    pub spec: &'a JobSpec,
    /// The image's root directory, already resolved and leased by the caller.
    pub image_root: Option<PathBuf>,
    pub image_name: Option<String>,
    /// Environment the caller passes through (`--env-pass`), already looked up.
    pub extra_env: Vec<(String, String)>,
    /// Where job cgroups go (a path in the hierarchy); default: a `jobcell` child of our own.
    pub cgroup_parent: Option<PathBuf>,
    /// Name of the job's cgroup and scratch dir (`job-<pid>-<hex>`, so stale-leftover GC still
    /// recognises it); default: generated. A supervisor passes one so the daemon knows it.
    pub cgroup_name: Option<String>,
    /// An already detected cgroup root (a supervisor detects it before leaving the daemon's
    /// cgroup); default: detected here from `cgroup_parent`.
    pub cgroup_root: Option<&'a CgroupRoot>,
    /// The job's user, already resolved by the caller (a supervisor needs it before the launch,
    /// to stage files as that user); default: resolved here.
    pub identity: Option<&'a Identity>,
    /// Read the job's cgroup usage when it ends, for the report. Without it (`jobcell run`
    /// with no `--report`: nobody would see it) only the OOM-kill count is read, for the OOM
    /// message: one file instead of eight, on the way out of every launch.
    pub usage: bool,
    /// The caller may freeze the job later (the daemon's `jobcell suspend`): on v1 the job
    /// then needs a freezer cgroup too.
    pub suspendable: bool,
    /// Whose rights the bind sources are opened with: their submitter's, so that every
    /// directory on the way and every symlink is checked as that user. `None`: the launcher's
    /// own (root running `jobcell run` is trusted; rootless, they are the caller's anyway).
    pub binds_as: Option<&'a Identity>,
    /// jobcell's own state on this host (state dir, image trees, job dirs): in a job without an
    /// image each is covered by an empty tmpfs. One that does not exist is skipped.
    pub hidden: Vec<PathBuf>,
}

/// When jobcell runs as one task of an enclosing scheduler (the SPANK plugin execs it in place
/// of a Slurm task): the job keeps the task's working directory, and its private dirs come from
/// a per-job dir the scheduler side made and removes, shared by the job's tasks and steps.
#[derive(Debug, Clone, Default)]
pub struct SchedulerTask {
    /// Where the job starts; if it does not exist in the job's view (an image), scratch.
    pub workdir: Option<PathBuf>,
    /// An existing per-job dir owned by the caller, used instead of a fresh scratch dir and
    /// left in place; the tmpfs that hides other jobs' dirs covers its parent.
    pub job_scratch: Option<PathBuf>,
    /// `job_scratch` is this job's alone (a supervisor's staged dir with the job's input
    /// files), not shared by a scheduler's tasks: `--disk` applies to it. Its size-limited
    /// filesystem is then mounted in a mount namespace of this process's own, where it stays
    /// until [`Outcome::scratch_mount`] is dropped, so the caller can copy results out first.
    pub own_scratch: bool,
}

/// A size-limited scratch still mounted over the caller's staged dir (in the launcher's own
/// mount namespace, invisible to the host). Dropping it unmounts it and frees the filesystem.
pub struct ScratchMount {
    path: PathBuf,
    _disk: ScratchDisk,
}

impl Drop for ScratchMount {
    fn drop(&mut self) {
        let _ = Linux.umount_detach(&self.path);
    }
}

pub struct Outcome {
    pub exit: JobExit,
    /// A one-line reason when the job never started (exec failed): exit is 126/127 then.
    pub exec_error: Option<String>,
    pub report: Report,
    /// See [`SchedulerTask::own_scratch`].
    pub scratch_mount: Option<ScratchMount>,
    /// The job's init, still exiting; `None` when it was reaped already (see [`ExitingInit`]).
    pub init: Option<ExitingInit>,
}

/// The job's init after it reported the job's end: every process of the job is dead and
/// reaped, scratch is removed, and the init only exits (the kernel tears down its namespaces;
/// on a disk mounted with `discard` that includes freeing scratch's directories, ~0.3 ms). The
/// launch returns without waiting for that, as bwrap's monitor does for its PID 1. Dropping
/// this waits and reaps the init. A caller about to exit [`leave`](Self::leave)s it instead:
/// like any orphan it is then reaped by whoever adopts it, a moment later.
pub struct ExitingInit(libc::pid_t);

impl ExitingInit {
    /// The caller exits now: the init's own exit is not waited for.
    pub fn leave(self) {
        std::mem::forget(self)
    }
}

impl Drop for ExitingInit {
    fn drop(&mut self) {
        while unsafe { libc::waitpid(self.0, std::ptr::null_mut(), 0) } < 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
}

fn last_err<T>(what: &'static str) -> Result<T, LaunchError> {
    Err(LaunchError::Sys(what, io::Error::last_os_error()))
}

pub fn launch(l: &Launch) -> Result<Outcome, LaunchError> {
    launch_task(l, &SchedulerTask::default())
}

/// [`launch`], placed in a scheduler's task (see [`SchedulerTask`]).
pub fn launch_task(l: &Launch, task: &SchedulerTask) -> Result<Outcome, LaunchError> {
    let tl = Timeline::new();
    let spec = l.spec;
    let rootless = unsafe { libc::geteuid() } != 0;
    // Signals are blocked before anything is created: a SIGTERM during setup is read from the
    // signalfd (and aborts the launch, cleaning up) instead of killing jobcell half-way.
    let mask = SignalMask::block()?;
    let sigfd = &mask.fd;

    // 1. Resolve everything that can fail before creating anything.
    // The supplementary groups are looked up after the clone (see Identity::resolve_user).
    let (mut identity, groups_pending) = match l.identity {
        Some(id) => (id.clone(), false),
        None if rootless => (Identity::current(), false),
        None => (Identity::resolve_user(&spec.user)?, true),
    };
    if !spec.mounts.is_empty() {
        opened_as(l.binds_as, || {
            for m in &spec.mounts {
                let what = if m.readonly {
                    "--ro-bind source"
                } else {
                    "--bind source"
                };
                open_path(what, &m.src)?;
            }
            Ok(())
        })?;
    }
    for m in &spec.mounts {
        // Mount points are made only in an image view or inside the job's scratch (or in a
        // cover of jobcell's state).
        let in_scratch = m.dst.starts_with(&spec.scratch_base)
            || spec.private_dirs.iter().any(|p| m.dst.starts_with(p))
            || l.hidden.iter().any(|h| m.dst.starts_with(h));
        if l.image_root.is_none() && !in_scratch {
            open_path(
                "bind destination (without --image it must exist on the host)",
                &m.dst,
            )?;
        }
    }
    // Private dirs the host lacks are skipped without an image (jobcell never creates
    // directories on the host outside scratch); an image view gets them all.
    let mut warnings = Vec::new();
    let private: Vec<(PathBuf, String)> = spec
        .private_dirs
        .iter()
        .filter(|p| {
            let ok = l.image_root.is_some()
                || (p.as_path() == Path::new("/dev/shm")
                    && spec.dev == jobcell_spec::DevMode::Minimal)
                || p.is_dir();
            if !ok {
                warnings.push(format!(
                    "private dir {} does not exist on the host; skipped",
                    p.display()
                ));
            }
            ok
        })
        .map(|p| (p.clone(), private_subdir(p)))
        .collect();

    if rootless && spec.resources.disk.is_some() {
        return Err(DiskError::Rootless.into());
    }
    tl.mark("resolved user and paths");
    // 2. Scratch (what SIGKILLed launchers left is collected once the init is released). A
    // fresh one is made after the clone (step 3b), while the init confines itself, unless a
    // --disk filesystem or a scheduler's dir needs it now: only its path is needed before.
    let name = l.cgroup_name.clone().unwrap_or_else(job_name);
    let subs: Vec<String> = private.iter().map(|(_, s)| s.clone()).collect();
    let scratch_base = match &task.job_scratch {
        Some(p) => p.parent().unwrap_or(Path::new("/")).to_path_buf(),
        None => spec.scratch_base.clone(),
    };
    // The node's bound applies where no --disk filesystem does.
    let bound = spec
        .resources
        .scratch_bound
        .filter(|_| spec.resources.disk.is_none());
    let make_scratch = |identity: &Identity| {
        ScratchDir::create_bounded(
            &spec.scratch_base,
            &name,
            identity.uid,
            identity.gid,
            &subs,
            spec.keep_scratch,
            bound,
        )
    };
    let early_scratch = match &task.job_scratch {
        Some(p) => Some(ScratchDir::existing(p, identity.uid, &subs)?),
        None if spec.resources.disk.is_some() => Some(make_scratch(&identity)?),
        None => None,
    };
    let scratch_path = match &early_scratch {
        Some(s) => s.path().to_path_buf(),
        None => spec.scratch_base.join(&name),
    };

    // 2a. A size-limited scratch: its own filesystem, mounted by the init (in the job's mount
    // namespace only) over the scratch dir. Not in a scheduler's task, whose dir is shared.
    let disk = match (spec.resources.disk, &early_scratch) {
        (Some(req), Some(s)) if task.job_scratch.is_none() || task.own_scratch => {
            Some(ScratchDisk::create(s.path(), s.fd(), req, &name)?)
        }
        (Some(_), _) => {
            warnings.push("--disk is not applied to a scheduler's task (its scratch is shared by the job's tasks); the scheduler's own disk limits apply".into());
            None
        }
        (None, _) => None,
    };
    // A caller's staged scratch: mounted here, in a mount namespace of our own (the init
    // inherits it), so the caller still sees the job's files after the job.
    let (mut disk, mut scratch_mount, mut own_disk_fd) = (disk, None, None);
    if let (Some(_), true) = (&disk, task.own_scratch) {
        let d = disk.take().expect("checked");
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } < 0 {
            return last_err("a mount namespace for the --disk filesystem");
        }
        let fd = mount_disk(&scratch_path, d.device_path(), &Linux)
            .map_err(|(what, e)| LaunchError::Setup(format!("{what}: {e}")))?;
        own_disk_fd = Some(fd);
        scratch_mount = Some(ScratchMount {
            path: scratch_path.clone(),
            _disk: d,
        });
    }
    // 2b. Where the job's cgroup goes. Rootless, only when the caller names a cgroup it may
    // write (a delegated subtree); otherwise the job lives in the scheduler's cgroup.
    let detected;
    let cg_root = if rootless && l.cgroup_root.is_none() && l.cgroup_parent.is_none() {
        if explicit_limits(&spec.resources) {
            warnings.push("running rootless: no cgroup of jobcell's own, so limits come from the enclosing scheduler; usage is the kernel's accounting of the job's processes".into());
        }
        None
    } else {
        match l.cgroup_root {
            Some(r) => Some(r),
            None => {
                detected = CgroupRoot::detect(l.cgroup_parent.as_deref())?;
                Some(&detected)
            }
        }
    };
    let job_limits = Limits {
        v1_without_freezer: !l.suspendable,
        // Without a report nothing reads it (see `usage`).
        v1_without_cpuacct: !l.usage,
        ..limits(&spec.resources)
    };
    let make_cgroup = |root: &CgroupRoot, warnings: &mut Vec<String>| {
        let cg = root.create(&name, &job_limits)?;
        warnings.extend(cg.warnings().iter().cloned());
        let oom = match spec.resources.memory {
            Some(_) => Some(cg.oom_watch()?),
            None => None,
        };
        Ok::<_, LaunchError>((cg, oom))
    };
    // v2 clones straight into the cgroup, so it must exist first. v1 attaches the init after
    // the clone, so its cgroup is made then, while the init does its mounts on the other core.
    let (mut cgroup, mut oom) = (None, None);
    if let Some(root) = cg_root.filter(|r| r.version() == Version::V2) {
        let (cg, o) = make_cgroup(root, &mut warnings)?;
        (cgroup, oom) = (Some(cg), o);
    }

    let state_covers = match l.image_root {
        Some(_) => Vec::new(),
        None => state_covers(&l.hidden, &private, &scratch_base),
    };
    let shape = PlanShape {
        scratch_path: scratch_path.clone(),
        scratch_base,
        private_dirs: private.clone(),
        binds: spec
            .mounts
            .iter()
            .map(|m| (m.src.clone(), m.dst.clone(), m.readonly))
            .collect(),
        image: l.image_root.clone(),
        dev: spec.dev,
        userns: rootless,
        covers: world_writable(&private),
        state_covers,
        binds_as: l.binds_as.cloned(),
    };
    let env = job_env(spec, &identity, &scratch_path, &l.extra_env);
    let path_dirs = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| {
            v.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| d.as_bytes().to_vec())
                .collect()
        })
        .unwrap_or_default();
    let to_c = |s: &str| {
        CString::new(s).map_err(|_| LaunchError::Setup(format!("'{s}' contains a NUL byte")))
    };
    let argv = spec
        .argv
        .iter()
        .map(|a| to_c(a))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|(k, v)| to_c(&format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;

    // v1: the job moves itself into its cgroup once it exists (see join_self: far cheaper
    // than our writing its pid), through the hierarchies' parents opened now.
    let join_dirs = match cg_root {
        Some(r) if cgroup.is_none() => r.self_join_dirs(&job_limits)?,
        _ => Vec::new(),
    };

    // 3. Channels and signals, then clone.
    let (msg_r, msg_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // A terminating signal that arrived during setup: give up now, before the job exists
    // (the scratch dir and cgroup are removed as they go out of scope).
    let mut early = Vec::new();
    for sig in drain_signals(sigfd) {
        if TERMINATING.contains(&sig) {
            return Err(LaunchError::Interrupted(sig));
        }
        if sig != libc::SIGCHLD {
            early.push(sig);
        }
    }

    let split = CpuSplit::new();
    let child = ChildPlan {
        shape,
        umask: current_umask(),
        identity: identity.clone(),
        last_cap: identity::last_cap(),
        userns: rootless.then(|| (unsafe { libc::getuid() }, unsafe { libc::getgid() })),
        net_none: spec.net == NetMode::None,
        cgroupns: cg_root.is_some(),
        workdir: task.workdir.clone().unwrap_or_else(|| scratch_path.clone()),
        workdir_fallback: scratch_path.clone(),
        argv,
        envp,
        path_dirs,
        msg_fd: msg_w.as_raw_fd(),
        go_fd: go_r.as_raw_fd(),
        disk: disk.as_ref().map(|d| d.device_path().to_path_buf()),
        cgroup_join: join_dirs.iter().map(|f| f.as_raw_fd()).collect(),
        cgroup_name: name.clone(),
        cpus: split,
        seccomp: crate::seccomp::job_filter(),
        tl,
    };
    let mut flags =
        libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if rootless {
        flags |= libc::CLONE_NEWUSER;
    }
    if child.net_none {
        flags |= libc::CLONE_NEWNET;
    }

    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let child_cgroupns = child.cgroupns;
    let into = cgroup
        .as_ref()
        .and_then(|c| c.clone_into_fd())
        .map(|fd| fd.as_raw_fd());
    let (pid, entered) = clone_job(flags, into)?;
    if pid == 0 {
        drop(msg_r);
        drop(go_w);
        init_main(&child);
    }
    drop(msg_w);
    drop(go_r);
    let mut go_w = std::fs::File::from(go_w);
    let init = InitGuard(pid);
    let _cpus = split.map(|s| s.apply(pid));
    tl.mark("cloned");
    crash_point("clone");
    // 3b. Scratch, made while the init confines itself; its mounts wait for "S". A
    // failure here kills the init (InitGuard) before it mounted anything.
    let scratch = match early_scratch {
        Some(s) => s,
        None => make_scratch(&identity)?,
    };
    match std::io::Write::write_all(&mut go_w, &[crate::sync::SCRATCH_READY]) {
        Err(e) if e.raw_os_error() != Some(libc::EPIPE) => {
            return Err(LaunchError::Sys(
                "telling the job's init its scratch is ready",
                e,
            ));
        }
        _ => {}
    }
    tl.mark("scratch created");
    crash_point("scratch");
    if let (None, Some(root)) = (&cgroup, cg_root) {
        let (cg, o) = make_cgroup(root, &mut warnings)?;
        (cgroup, oom) = (Some(cg), o);
    }
    tl.mark("cgroup created");
    crash_point("cgroup");
    if groups_pending {
        identity.load_groups();
    }
    tl.mark("groups looked up");
    if let (Some(cg), false, true) = (&cgroup, entered, join_dirs.is_empty()) {
        // v2 without clone3: the init waits for "go" before it starts the job, so nothing of
        // the job runs outside the cgroup. An init that
        // already failed its setup has its reason in the message pipe: read that below.
        if let Err(e) = cg.attach(pid) {
            if !exited(pid) {
                return Err(e.into());
            }
        }
    }

    // 4. Release the child (EPIPE: it failed its setup and said why; the wait collects that).
    match std::io::Write::write_all(&mut go_w, &crate::sync::encode_go(&identity.groups)) {
        Err(e) if e.raw_os_error() != Some(libc::EPIPE) => {
            return Err(LaunchError::Sys("releasing the job's init", e));
        }
        _ => {}
    }
    // go_w stays open until the init is reaped: its hang-up tells the init we died (below).
    crash_point("go");
    // Leftovers of launchers that were SIGKILLed, collected while the init sets up.
    scratch::gc_stale(&spec.scratch_base);
    if let Some(root) = cg_root {
        let _ = root.gc_stale();
    }
    for sig in early {
        unsafe { libc::kill(pid, sig) };
    }

    // 7. Wait. Once the init reports the job's status, every process of the job is gone: the
    // job's usage is final, scratch can go, and the launch is over while the init still exits
    // (its namespaces' teardown; see ExitingInit). A --disk scratch waits for that teardown
    // (its loop device), and so does a v2 cgroup (below).
    set_nonblock(msg_r.as_raw_fd());
    let mut reader = Reader::default();
    let mut oom_seen = false;
    let mut scratch = Some(scratch);
    let (mut usage, mut removed, mut cg_removed) = (None, None, None);
    // v1: the init never joins the job's cgroup (the job does), so it is empty once the init
    // reports the status, and its usage final. v2's init is cloned into it and keeps it busy
    // (and its CPU counted) until reaped: usage and removal wait for that.
    let cgroup_free_at_status = !join_dirs.is_empty();
    let ends_at_status =
        disk.is_none() && own_disk_fd.is_none() && (cgroup.is_none() || cgroup_free_at_status);
    let mut on_oom = |w: &OomWatch| {
        w.clear();
        if !oom_seen && w.oom_kills().unwrap_or(0) > 0 {
            oom_seen = true;
            say_oom(spec);
        }
    };
    let waited = wait_loop(
        pid,
        sigfd,
        msg_r.as_raw_fd(),
        &mut reader,
        spec.grace,
        oom.as_ref()
            .map(|w| (w, &mut on_oom as &mut dyn FnMut(&OomWatch))),
        &mut || {
            if cgroup_free_at_status {
                usage = cgroup.as_ref().map(|c| final_usage(c, l.usage));
                cg_removed = cgroup.take().map(|c| c.remove());
            }
            if disk.is_none() {
                removed = scratch.take().map(|s| (s.path().to_path_buf(), s.remove()));
            }
            tl.mark("usage read, scratch removed");
            ends_at_status
        },
    )?;
    let wall = started.elapsed();
    std::mem::forget(init);
    let (status, init_rusage, exiting_init) = match waited {
        Waited::Reaped(status, rusage) => {
            while let Ok(true) = reader.fill(msg_r.as_raw_fd()) {}
            tl.mark("init reaped");
            (Some(status), Some(rusage), None)
        }
        Waited::Reported => (None, None, Some(ExitingInit(pid))),
    };
    // 8. Interpret, clean up, report.
    let mut exec_error = None;
    let mut setup_error = None;
    let mut exit = None;
    let mut disk_usage = None;
    let mut job_cpu = None;
    for m in &reader.msgs {
        match m {
            Msg::Failed {
                stage: Stage::Exec,
                errno,
                what,
            } => exec_error = Some(format!("{what}: {}", io::Error::from_raw_os_error(*errno))),
            Msg::Failed { errno, what, .. } => {
                setup_error = Some(format!("{what}: {}", io::Error::from_raw_os_error(*errno)))
            }
            Msg::ExitCode(c) => exit = Some(JobExit::Code(*c)),
            Msg::Signaled(s) => exit = Some(JobExit::Signal(*s)),
            Msg::Usage { user_us, system_us } => job_cpu = Some((*user_us, *system_us)),
            Msg::Disk { used, total, full } => disk_usage = Some((*used, *total, *full)),
        }
    }
    // A scratch mounted here is measured here (the init measures one it mounted itself).
    if let Some(fd) = own_disk_fd.take() {
        disk_usage = crate::disk::usage(fd.as_raw_fd()).or(disk_usage);
    }
    if usage.is_none() {
        usage = cgroup.as_ref().map(|c| final_usage(c, l.usage));
    }
    if let Some(c) = cgroup.take() {
        cg_removed = Some(c.remove());
    }
    tl.mark("cgroup read and removed");
    if let Some(scratch) = scratch.take() {
        if let (Some(d), true) = (&disk, spec.keep_scratch) {
            // The files are in the filesystem image: give it a name in the kept dir.
            match d.keep_in(scratch.fd(), "scratch.ext4") {
                Ok(()) => warnings.push(
                    "the kept scratch's files are in scratch.ext4 inside it (mount -o loop,ro)"
                        .into(),
                ),
                Err(e) => warnings.push(format!(
                    "--keep-scratch: could not keep the --disk filesystem image: {e}"
                )),
            }
        }
        drop(disk);
        removed = Some((scratch.path().to_path_buf(), scratch.remove()));
    }
    let (mut scratch_path, removed) = removed.expect("scratch is removed once, above or here");
    if let Some(e) = setup_error {
        return Err(LaunchError::Setup(e));
    }
    let exit = match (exit, status) {
        (Some(e), _) => e,
        (None, Some(s)) if libc::WIFSIGNALED(s) => JobExit::Signal(libc::WTERMSIG(s)),
        (None, Some(s)) => return Err(LaunchError::InitDied(libc::WEXITSTATUS(s))),
        (None, None) => unreachable!("the wait ends before the init's exit only at a status"),
    };
    tl.mark("scratch removed");
    if let Some(kept) = removed? {
        scratch_path = kept;
    }
    cg_removed.transpose()?;
    let usage = usage.transpose()?;

    // The job's processes as the init reaped them; an init killed before it could say (the
    // grace ran out) is reaped here, and its rusage includes what it reaped.
    let (cpu_user_us, cpu_system_us) = job_cpu
        .or(init_rusage.map(|r| (micros(r.ru_utime), micros(r.ru_stime))))
        .unwrap_or((0, 0));
    let mut report = Report::new(
        spec,
        exit,
        wall,
        started_unix,
        cpu_user_us,
        cpu_system_us,
        Isolation {
            namespaces: namespaces(if child_cgroupns {
                flags | libc::CLONE_NEWCGROUP
            } else {
                flags
            }),
            user: identity,
            private_dirs: private.iter().map(|(p, _)| p.clone()).collect(),
            scratch: scratch_path,
            scratch_kept: spec.keep_scratch,
            // A staged scratch of the job's own got the same bound from its maker.
            scratch_bound_bytes: bound.filter(|_| task.job_scratch.is_none() || task.own_scratch),
            image: l.image_name.clone(),
            dev: spec.dev,
            no_new_privs: true,
            capabilities: "none",
            rootless,
        },
        warnings,
    );
    if let Some(u) = &usage {
        // The event can lose the race with the init's death (v2 kills the whole group): the
        // kernel's counter is the last word.
        if u.oom_kills > 0 && !oom_seen {
            say_oom(spec);
        }
    }
    if let Some(u) = usage.filter(|_| l.usage) {
        // v1's cpuacct splits user/system in scheduler ticks: a short job can read 0 there while
        // rusage (every process the init reaped) has microseconds. Take the larger;
        // where both count the same nanoseconds they round them to microseconds differently
        // (the cgroup's sum, each reaped process's share), which must not flip the source.
        const ROUNDING_US: u64 = 10;
        let cg = u.cpu_user_us + u.cpu_system_us;
        if cg + ROUNDING_US >= report.cpu_user_us + report.cpu_system_us {
            report.cpu_user_us = u.cpu_user_us;
            report.cpu_system_us = u.cpu_system_us;
            report.cpu_source = "cgroup";
        }
        report.oom_killed = u.oom_kills > 0;
        report.usage = serde_json::to_value(&u).ok();
    }
    let disk_usage = disk_usage.map(|(used, total, full)| DiskUsage {
        limit_bytes: spec.resources.disk.unwrap_or(0),
        size_bytes: total,
        used_bytes: used,
        full,
    });
    if disk_usage.as_ref().is_some_and(|d| d.full) {
        eprintln!(
            "jobcell: the job filled its scratch disk ({}): writes past it got 'No space left on device'",
            jobcell_spec::format_size(spec.resources.disk.unwrap_or(0))
        );
    }
    report.disk = disk_usage;
    Ok(Outcome {
        exit,
        exec_error,
        report,
        scratch_mount,
        init: exiting_init,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that exits after `ms` milliseconds (only async-signal-safe calls after fork).
    fn child_exiting_after(ms: u64) -> libc::pid_t {
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: (ms * 1_000_000) as libc::c_long,
            };
            unsafe {
                libc::nanosleep(&ts, std::ptr::null_mut());
                libc::_exit(0)
            }
        }
        pid
    }

    #[test]
    fn an_exiting_init_is_reaped_when_dropped_and_left_when_left() {
        let pid = child_exiting_after(20);
        drop(ExitingInit(pid));
        // Reaped: no longer our child.
        assert_eq!(
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) },
            -1
        );
        assert_eq!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::ECHILD)
        );

        let pid = child_exiting_after(20);
        ExitingInit(pid).leave();
        // Left alone: still ours to reap (a process that exits leaves it to its adopter).
        assert_eq!(unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) }, pid);
    }
}
