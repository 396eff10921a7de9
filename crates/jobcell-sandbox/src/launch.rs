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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jobcell_cgroup::{CgroupError, CgroupOptions, CgroupRoot, JobCgroup, OomWatch, Usage, Version};
use jobcell_spec::{JobSpec, NetMode};
use thiserror::Error;

use crate::disk::{DiskError, ScratchDisk};
use crate::fsid::{self, FsIdError};
use crate::identity::{self, Identity, IdentityError};
use crate::plan::{self, BindIn, PlanInput};
use crate::report::{DiskUsage, Isolation, Report};
use crate::scratch::{self, private_subdir, ScratchDir, ScratchError};
use crate::sync::{Msg, Reader, Stage};
use crate::syscall::{cstr, Linux, Syscall};

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

/// Run `open` (of bind sources) with `user`'s filesystem rights, or the launcher's own; a
/// source the user may not open is named with the user.
fn opened_as<T>(
    user: Option<&Identity>,
    open: impl FnOnce() -> Result<T, LaunchError>,
) -> Result<T, LaunchError> {
    let Some(u) = user else { return open() };
    fsid::with_rights_of(u, open)?.map_err(|e| match e {
        LaunchError::Path { what, path, source } => LaunchError::BindSource {
            what,
            path,
            user: u.name.clone(),
            source,
        },
        e => e,
    })
}

fn open_path(what: &'static str, p: &Path) -> Result<(OwnedFd, bool), LaunchError> {
    let c = cstr(p).map_err(|source| LaunchError::Path {
        what,
        path: p.into(),
        source,
    })?;
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(LaunchError::Path {
            what,
            path: p.into(),
            source: io::Error::last_os_error(),
        });
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(LaunchError::Path {
            what,
            path: p.into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok((fd, st.st_mode & libc::S_IFMT == libc::S_IFDIR))
}

/// Mount flags of the filesystem under `fd` that a bind remount must keep (in a user namespace
/// the kernel refuses to clear them).
fn locked_flags(fd: RawFd) -> libc::c_ulong {
    let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatvfs(fd, &mut v) } < 0 {
        return 0;
    }
    let mut f = 0;
    for (st, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if v.f_flag & st != 0 {
            f |= ms;
        }
    }
    f
}

fn current_umask() -> libc::mode_t {
    let m = unsafe { libc::umask(0o022) };
    unsafe { libc::umask(m) };
    m
}

fn proc_fd(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

fn random_suffix() -> String {
    let mut b = [0u8; 4];
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The job's name on this node: names its scratch dir and its cgroup. The launcher's pid lets a
/// later run tell leftovers of a dead launcher from a live one's.
pub fn job_name() -> String {
    format!("job-{}-{}", std::process::id(), random_suffix())
}

/// The environment the job starts with: clean, plus what jobcell promises and the caller adds.
pub fn job_env(
    spec: &JobSpec,
    id: &Identity,
    scratch: &Path,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let s = scratch.to_string_lossy().into_owned();
    let tmpdir = if spec.private_dirs.iter().any(|p| p == Path::new("/tmp")) {
        "/tmp".to_string()
    } else {
        s.clone()
    };
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin".into(),
        ),
        ("HOME".into(), s.clone()),
        ("TMPDIR".into(), tmpdir),
        ("USER".into(), id.name.clone()),
        ("LOGNAME".into(), id.name.clone()),
        ("JOBCELL_SCRATCH".into(), s.clone()),
        ("_CONDOR_SCRATCH_DIR".into(), s),
    ];
    for (k, v) in extra.iter().chain(spec.env.iter()) {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// Everything the job side needs, prepared before clone so the child only makes syscalls.
/// What the init needs to compute the mount plan. The descriptors the plan binds from are
/// opened by the init itself: a bind mount's source must live in the caller's mount namespace.
struct PlanShape {
    scratch_path: PathBuf,
    scratch_base: PathBuf,
    private_dirs: Vec<(PathBuf, String)>,
    binds: Vec<(PathBuf, PathBuf, bool)>,
    image: Option<PathBuf>,
    dev: jobcell_spec::DevMode,
    userns: bool,
    covers: Vec<PathBuf>,
    state_covers: Vec<PathBuf>,
    binds_as: Option<Identity>,
}

impl PlanShape {
    /// Open what the plan binds from, other than the scratch dir, in the job's new mount
    /// namespace before any mount changes the view: the host's /dev, the image, the bind
    /// sources (as the submitter). The scratch fields are filled by [`Self::open_scratch`].
    /// The descriptors stay open until exec (CLOEXEC).
    fn open_sources(&self) -> Result<(PlanInput, Vec<OwnedFd>), LaunchError> {
        let (dev, _) = open_path("host /dev", Path::new("/dev"))?;
        // The image by descriptor too: its path may lie under /tmp, where the view is staged.
        let image = match &self.image {
            Some(p) => Some(open_path("image root", p)?.0),
            None => None,
        };
        let mut binds = Vec::new();
        let mut fds = Vec::new();
        if !self.binds.is_empty() {
            opened_as(self.binds_as.as_ref(), || {
                for (src, dst, readonly) in &self.binds {
                    let (fd, is_dir) = open_path("bind source", src)?;
                    binds.push(BindIn {
                        src: proc_fd(fd.as_raw_fd()),
                        dst: dst.clone(),
                        readonly: *readonly,
                        is_dir,
                        keep: locked_flags(fd.as_raw_fd()),
                    });
                    fds.push(fd);
                }
                Ok(())
            })?;
        }
        let input = PlanInput {
            scratch_src: PathBuf::new(),
            scratch_path: self.scratch_path.clone(),
            scratch_base: self.scratch_base.clone(),
            private_dirs: self.private_dirs.clone(),
            scratch_keep: 0,
            binds,
            image: image.as_ref().map(|fd| proc_fd(fd.as_raw_fd())),
            dev: self.dev,
            host_dev: proc_fd(dev.as_raw_fd()),
            userns: self.userns,
            covers: self.covers.clone(),
            state_covers: self.state_covers.clone(),
        };
        fds.push(dev);
        fds.extend(image);
        Ok((input, fds))
    }

    /// The scratch dir, once the launcher has made it: by its host path, which the view
    /// applied so far does not hide (see `plan::view_first`).
    fn open_scratch(
        &self,
        input: &mut PlanInput,
        fds: &mut Vec<OwnedFd>,
    ) -> Result<(), LaunchError> {
        let (scratch, _) = open_path("scratch dir", &self.scratch_path)?;
        input.scratch_src = proc_fd(scratch.as_raw_fd());
        input.scratch_keep = locked_flags(scratch.as_raw_fd());
        fds.push(scratch);
        Ok(())
    }
}

/// Tell the launcher why opening a mount source failed.
fn send_open_fail(c: &ChildPlan, e: LaunchError) {
    match e {
        LaunchError::Path { what, path, source } => send_fail(
            c.msg_fd,
            Stage::Setup,
            format!("{what} '{}'", path.display()),
            &source,
        ),
        LaunchError::BindSource {
            what,
            path,
            user,
            source,
        } => send_fail(
            c.msg_fd,
            Stage::Setup,
            format!("{what} '{}' (opened as {user})", path.display()),
            &source,
        ),
        e => send_fail(
            c.msg_fd,
            Stage::Setup,
            e.to_string(),
            &io::Error::from_raw_os_error(libc::EIO),
        ),
    }
}

struct ChildPlan {
    shape: PlanShape,
    /// The caller's umask, for the job.
    umask: libc::mode_t,
    identity: Identity,
    last_cap: u32,
    userns: Option<(u32, u32)>,
    net_none: bool,
    cgroupns: bool,
    workdir: PathBuf,
    /// Where the job starts when `workdir` is missing in its view.
    workdir_fallback: PathBuf,
    argv: Vec<CString>,
    envp: Vec<CString>,
    path_dirs: Vec<Vec<u8>>,
    msg_fd: RawFd,
    go_fd: RawFd,
    /// The loop device holding the size-limited scratch, mounted over the scratch dir.
    disk: Option<PathBuf>,
    /// v1: the hierarchies' parent dirs, where the job joins `cgroup_name` (see job_main).
    cgroup_join: Vec<RawFd>,
    cgroup_name: String,
    /// The caller's CPUs, given back to the job (see CpuSplit).
    cpus: Option<CpuSplit>,
    /// The job's seccomp program, built before the clone (the job only makes syscalls).
    seccomp: Vec<libc::sock_filter>,
    tl: Timeline,
}

/// The launcher and the job's init work at the same time: the cgroup and the group lookup
/// here while the init makes its mounts, then the clean-up here while the init exits. The
/// kernel starts a child on its parent's CPU and pulls a pipe's reader to the writer's, which
/// would run the two one after the other; so for the job's set-up and tear-down each gets
/// CPUs of its own. Best effort: a single CPU, or a cpuset that refuses a mask, changes
/// nothing. The job gets all the caller's CPUs back before exec, and the launcher when done.
#[derive(Clone, Copy)]
struct CpuSplit {
    all: libc::cpu_set_t,
    here: libc::cpu_set_t,
    others: libc::cpu_set_t,
}

impl CpuSplit {
    fn new() -> Option<Self> {
        let mut all: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        unsafe {
            if libc::sched_getaffinity(0, size, &mut all) < 0 || libc::CPU_COUNT(&all) < 2 {
                return None;
            }
            let cpu = libc::sched_getcpu();
            if cpu < 0 || !libc::CPU_ISSET(cpu as usize, &all) {
                return None;
            }
            let mut here: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut here);
            let mut others = all;
            libc::CPU_CLR(cpu as usize, &mut others);
            Some(CpuSplit { all, here, others })
        }
    }

    /// Move the (new) init off this CPU and keep the launcher on it.
    fn apply(self, init: libc::pid_t) -> RestoreCpus {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        unsafe {
            libc::sched_setaffinity(init, size, &self.others);
            libc::sched_setaffinity(0, size, &self.here);
        }
        RestoreCpus(self)
    }

    /// Give this process all the caller's CPUs again.
    fn restore(&self) {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        unsafe { libc::sched_setaffinity(0, size, &self.all) };
    }
}

/// Gives the launcher its CPUs back however launch_task returns.
struct RestoreCpus(CpuSplit);

impl Drop for RestoreCpus {
    fn drop(&mut self) {
        self.0.restore();
    }
}

/// `JOBCELL_TIMING=1` prints when each launcher phase ended, for benchmarking (the init's and
/// the job's phases too: the clock is the same monotonic one in every process).
#[derive(Clone, Copy)]
struct Timeline {
    t0: Instant,
    on: bool,
}

impl Timeline {
    fn new() -> Self {
        Timeline {
            t0: Instant::now(),
            on: std::env::var_os("JOBCELL_TIMING").is_some(),
        }
    }
    fn mark(&self, what: &str) {
        if self.on {
            // One write per line (the launcher and the init share stderr), and a closed
            // stderr is no reason to stop a job.
            let line = format!(
                "jobcell-timing: {:>9.3} ms {what}\n",
                self.t0.elapsed().as_secs_f64() * 1e3
            );
            let _ = io::Write::write_all(&mut io::stderr().lock(), line.as_bytes());
        }
    }
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
        if spec.resources.has_explicit_limits() {
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
    let cg_options = CgroupOptions {
        v1_without_freezer: !l.suspendable,
        // Without a report nothing reads it (see `usage`).
        v1_without_cpuacct: !l.usage,
    };
    let make_cgroup = |root: &CgroupRoot, warnings: &mut Vec<String>| {
        let cg = root.create(&name, &spec.resources, cg_options)?;
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
        Some(r) if cgroup.is_none() => r.self_join_dirs(&spec.resources, cg_options)?,
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

/// The job's usage as its cgroup accounted it; with `all` false, only the OOM-kill count.
fn final_usage(cg: &JobCgroup, all: bool) -> Result<Usage, CgroupError> {
    if all {
        return cg.stats();
    }
    Ok(Usage {
        oom_kills: cg.oom_kills()?,
        ..Usage::default()
    })
}

/// The cover candidates that are real, world-writable directories here and not private.
fn world_writable(private: &[(PathBuf, String)]) -> Vec<PathBuf> {
    plan::COVER_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .filter(|p| !private.iter().any(|(q, _)| q == p))
        .filter(|p| {
            std::fs::symlink_metadata(p)
                .map(|m| m.is_dir() && m.permissions().mode() & 0o002 != 0)
                .unwrap_or(false)
        })
        .collect()
}

/// jobcell's state dirs that need a cover of their own: not one a private dir, the scratch
/// base's cover or another state cover hides already, nor one holding a private dir (its cover
/// would hide that). Path checks only: nothing per launch touches the disk for this.
fn state_covers(
    hidden: &[PathBuf],
    private: &[(PathBuf, String)],
    scratch_base: &Path,
) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    for h in hidden {
        let hidden_already = h.parent().is_none()
            || !h.is_absolute()
            || h.starts_with(scratch_base)
            || private
                .iter()
                .any(|(p, _)| h.starts_with(p) || p.starts_with(h))
            || hidden.iter().any(|o| o != h && h.starts_with(o))
            || v.contains(h);
        if !hidden_already {
            v.push(h.clone());
        }
    }
    v
}

fn say_oom(spec: &JobSpec) {
    eprintln!(
        "jobcell: the job went over its memory limit ({}) and was killed by the kernel's OOM killer",
        jobcell_spec::format_size(spec.resources.memory.unwrap_or(0))
    );
}

fn namespaces(flags: libc::c_int) -> Vec<&'static str> {
    [
        (libc::CLONE_NEWPID, "pid"),
        (libc::CLONE_NEWNS, "mount"),
        (libc::CLONE_NEWIPC, "ipc"),
        (libc::CLONE_NEWUTS, "uts"),
        (libc::CLONE_NEWUSER, "user"),
        (libc::CLONE_NEWNET, "net"),
        (libc::CLONE_NEWCGROUP, "cgroup"),
    ]
    .iter()
    .filter(|(f, _)| flags & f != 0)
    .map(|(_, n)| *n)
    .collect()
}

/// Kills the init (and so the whole PID namespace) if the launcher bails out early.
struct InitGuard(libc::pid_t);

/// Whether `pid` (our child) has exited, leaving it to be reaped by the wait.
fn exited(pid: libc::pid_t) -> bool {
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    r == 0 && unsafe { info.si_pid() } == pid
}

impl Drop for InitGuard {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return last_err("pipe");
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblock(fd: RawFd) {
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

fn signal_set() -> libc::sigset_t {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Block the forwarded signals and SIGCHLD (the child inherits the mask, so nothing is lost
/// between clone and the init's first wait) and read them from a signalfd.
/// Signals that end a job (after the grace period) rather than only being passed on.
const TERMINATING: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// The launcher's signals, blocked and readable from `fd` for as long as this lives; the
/// previous mask comes back on drop.
struct SignalMask {
    fd: OwnedFd,
    old: libc::sigset_t,
}

impl SignalMask {
    fn block() -> Result<Self, LaunchError> {
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        let set = signal_set();
        if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) } < 0 {
            return last_err("sigprocmask");
        }
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            return last_err("signalfd");
        }
        Ok(SignalMask {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            old,
        })
    }
}

impl Drop for SignalMask {
    fn drop(&mut self) {
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// Read every pending signal from a non-blocking signalfd.
fn drain_signals(fd: &OwnedFd) -> Vec<libc::c_int> {
    let mut out = Vec::new();
    loop {
        let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let sz = std::mem::size_of::<libc::signalfd_siginfo>();
        let r = unsafe {
            libc::read(
                fd.as_raw_fd(),
                (&mut si as *mut libc::signalfd_siginfo).cast(),
                sz,
            )
        };
        if r != sz as isize {
            return out;
        }
        out.push(si.ssi_signo as libc::c_int);
    }
}

#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// fork-like clone into new namespaces, straight into the job's v2 cgroup where the kernel has
/// clone3(CLONE_INTO_CGROUP) (5.7+); returns (pid, whether the child is already in the cgroup).
fn clone_job(
    flags: libc::c_int,
    cgroup_fd: Option<RawFd>,
) -> Result<(libc::pid_t, bool), LaunchError> {
    if let Some(fd) = cgroup_fd {
        let args = CloneArgs {
            flags: flags as u64 | CLONE_INTO_CGROUP,
            pidfd: 0,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: libc::SIGCHLD as u64,
            stack: 0,
            stack_size: 0,
            tls: 0,
            set_tid: 0,
            set_tid_size: 0,
            cgroup: fd as u64,
        };
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if r >= 0 {
            return Ok((r as libc::pid_t, true));
        }
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::E2BIG)) {
            return Err(LaunchError::Setup(format!(
                "creating the job's namespaces in its cgroup: {e}"
            )));
        }
    }
    Ok((clone_fork(flags)?, false))
}

/// fork-like clone into new namespaces (no stack: the child continues here on a copy).
fn clone_fork(flags: libc::c_int) -> Result<libc::pid_t, LaunchError> {
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
            0 as libc::c_ulong,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::ENOSPC) if flags & libc::CLONE_NEWUSER != 0 => {
                " (user namespaces are disabled or exhausted on this host: check kernel.unprivileged_userns_clone and user.max_user_namespaces)"
            }
            _ => "",
        };
        return Err(LaunchError::Setup(format!(
            "creating the job's namespaces: {e}{hint}"
        )));
    }
    Ok(r as libc::pid_t)
}

/// Fault injection (debug builds only): `JOBCELL_CRASH_AT=<point>` makes the launcher SIGKILL
/// itself at that point of the launch sequence (`scratch`, `clone`, `cgroup`, `go`, `wait`), so
/// tests can check that the next start's garbage collection leaves nothing behind.
#[inline]
fn crash_point(_point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("JOBCELL_CRASH_AT").is_some_and(|v| v == _point) {
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

fn micros(t: libc::timeval) -> u64 {
    t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64
}

/// The job's OOM watch and what to do when it fires.
type OnOom<'a> = (&'a OomWatch, &'a mut dyn FnMut(&OomWatch));

/// How [`wait_loop`] ended.
enum Waited {
    /// The init exited and was reaped: its wait status and rusage.
    Reaped(libc::c_int, libc::rusage),
    /// The init reported the job's status, and `on_status` said that is the end.
    Reported,
}

/// The launcher's wait: pass signals on, enforce the grace period, run `on_status` once the
/// init reports the job's end, and reap the init (unless `on_status` returns true).
fn wait_loop(
    init: libc::pid_t,
    sigfd: &OwnedFd,
    msg_fd: RawFd,
    reader: &mut Reader,
    grace: Duration,
    mut oom: Option<OnOom<'_>>,
    on_status: &mut dyn FnMut() -> bool,
) -> Result<Waited, LaunchError> {
    let mut deadline: Option<Instant> = None;
    let mut msg_open = true;
    let mut status_seen = false;
    loop {
        crash_point("wait");
        let mut fds = [
            libc::pollfd {
                fd: sigfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if msg_open { msg_fd } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: oom.as_ref().map_or(-1, |(w, _)| w.fd().as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32,
            None => -1,
        };
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(LaunchError::Sys("poll", e));
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                // Grace is over: the init's death takes every process of the job with it.
                unsafe { libc::kill(init, libc::SIGKILL) };
                deadline = None;
            }
        }
        // OOM before the status: the kernel signals an OOM kill before its victim is reaped,
        // and the status hook may remove the cgroup the OOM count is read from.
        if let (Some((w, on_oom)), true) = (oom.as_mut(), fds[2].revents != 0) {
            on_oom(w);
        }
        if fds[1].revents != 0 {
            msg_open = reader.fill(msg_fd).unwrap_or(false);
            if !status_seen && reader.has_status() {
                status_seen = true;
                if on_status() {
                    return Ok(Waited::Reported);
                }
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            for sig in drain_signals(sigfd) {
                if sig == libc::SIGCHLD {
                    continue;
                }
                unsafe { libc::kill(init, sig) };
                if deadline.is_none() && TERMINATING.contains(&sig) {
                    deadline = Some(Instant::now() + grace);
                }
            }
        }
        let mut status = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(init, &mut status, libc::WNOHANG, &mut ru) };
        if r == init {
            return Ok(Waited::Reaped(status, ru));
        }
        if r < 0 {
            return last_err("waiting for the job");
        }
    }
}

// ---------------------------------------------------------------- the job side (after clone)

fn send_fail(fd: RawFd, stage: Stage, what: String, e: &io::Error) {
    Msg::Failed {
        stage,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
        what,
    }
    .send(fd);
}

/// PID 1 of the job. Never returns; a panic cannot unwind into the launcher's copy of the stack.
fn init_main(c: &ChildPlan) -> ! {
    let code =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init_inner(c))).unwrap_or(125);
    unsafe { libc::_exit(code) }
}

fn init_inner(c: &ChildPlan) -> i32 {
    let sys = Linux;
    // The launcher gone means nobody would clean up: take the whole job down with it.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // A launcher that died before that prctl sends no signal (and getppid() is 0 across the
    // pid namespace). It holds the go pipe's write end for its whole life, so a hang-up there
    // means it is gone, even if its "go" is already in the pipe.
    let mut hup = libc::pollfd {
        fd: c.go_fd,
        events: 0,
        revents: 0,
    };
    if unsafe { libc::poll(&mut hup, 1, 0) } > 0 && hup.revents & libc::POLLHUP != 0 {
        return 125;
    }
    c.tl.mark("init: started");
    // The mounts are made before "go", while the launcher makes the v1 cgroup: nothing here
    // depends on it, and nothing of the job runs before "go".
    // Mount points and device files get exactly the modes the plan says, whatever the
    // caller's umask (the job gets the caller's back before exec).
    unsafe { libc::umask(0o022) };
    if let Err((what, e)) = setup_namespaces(c) {
        send_fail(c.msg_fd, Stage::Setup, what, &e);
        return 125;
    }
    // What the job inherits (bounding set, seccomp filter), while the launcher makes scratch:
    // neither limits what the init does itself (its own capabilities stay; no mount uses a
    // keyring).
    if let Err(e) = identity::confine_init(&sys, c.last_cap) {
        send_fail(
            c.msg_fd,
            Stage::Setup,
            "confining the job's init".into(),
            &e,
        );
        return 125;
    }
    // The view (slave tree, image, /dev) while the launcher makes the scratch dir; the
    // sandbox's mounts (scratch, private dirs, covers, binds, /proc) once it is there.
    let (mut input, mut fds) = match c.shape.open_sources() {
        Ok(x) => x,
        Err(e) => {
            send_open_fail(c, e);
            return 125;
        }
    };
    let view = plan::view(&input);
    // A --disk filesystem is mounted from its loop device's path under the host's /dev.
    let view_first = c.disk.is_none() && plan::view_first(&input, &view);
    if view_first {
        if let Err(e) = plan::apply(&view, &sys) {
            send_fail(c.msg_fd, Stage::Setup, plan::describe(&e.step), &e.error);
            return 125;
        }
        c.tl.mark("init: view mounted");
    }
    // The launcher gave up or died before the scratch dir was there: nothing to say.
    if crate::sync::read_scratch_ready(c.go_fd).is_err() {
        return 125;
    }
    let disk_fd = match &c.disk {
        Some(dev) => match mount_disk(&c.shape.scratch_path, dev, &sys) {
            Ok(fd) => Some(fd),
            Err((what, e)) => {
                send_fail(c.msg_fd, Stage::Setup, what, &e);
                return 125;
            }
        },
        None => None,
    };
    if let Err(e) = c.shape.open_scratch(&mut input, &mut fds) {
        send_open_fail(c, e);
        return 125;
    }
    let steps = plan::plan(&input);
    let rest = match view_first {
        // plan() starts with view(): what is left is the sandbox.
        true if steps.starts_with(&view) => &steps[view.len()..],
        true => {
            send_fail(
                c.msg_fd,
                Stage::Setup,
                "the mount plan does not start with the view already mounted".into(),
                &io::Error::from_raw_os_error(libc::EIO),
            );
            return 125;
        }
        false => &steps[..],
    };
    if let Err(e) = plan::apply(rest, &sys) {
        send_fail(c.msg_fd, Stage::Setup, plan::describe(&e.step), &e.error);
        return 125;
    }
    c.tl.mark("init: mounts done");
    // The launcher died or gave up before releasing us: an error here.
    let Ok(groups) = crate::sync::read_go(c.go_fd) else {
        return 125;
    };
    unsafe { libc::close(c.go_fd) };
    let user = Identity {
        groups,
        ..c.identity.clone()
    };
    c.tl.mark("init: released, forking the job");
    let job = match spawn_job(c, &user, &sys) {
        Ok(pid) => pid,
        Err(e) => {
            send_fail(c.msg_fd, Stage::Setup, "starting the job".into(), &e);
            return 125;
        }
    };
    for fd in &c.cgroup_join {
        unsafe { libc::close(*fd) };
    }
    init_loop(c, job, disk_fd.as_ref().map(|f| f.as_raw_fd()))
}

/// What [`spawn_job`]'s child needs, passed through clone's argument.
struct JobArgs<'a> {
    c: &'a ChildPlan,
    user: &'a Identity,
    sys: &'a dyn Syscall,
}

extern "C" fn job_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: spawn_job passes a JobArgs that outlives the child's use of it (the parent is
    // suspended until the child has exec'd or exited).
    let a = unsafe { &*(arg as *const JobArgs) };
    job_main(a.c, a.user, a.sys)
}

const JOB_STACK: usize = 256 << 10;

/// Start the job like posix_spawn does: `clone(CLONE_VM | CLONE_VFORK)` on a stack of its own.
/// The init is suspended until the job has exec'd (or failed and exited), so the child runs
/// at once on this CPU, and nothing is copied: fork copied the init's page tables (it is a
/// copy of the whole launcher) and both then took copy-on-write faults, ~0.3 ms from fork to
/// the job's first instruction. The job's side (job_main) only makes system calls, allocates
/// (the suspended parent holds no lock) and ends in execve or _exit; the signal handlers, the
/// descriptors, the cwd and the credentials it changes are its own (no CLONE_SIGHAND,
/// CLONE_FILES, CLONE_FS or CLONE_THREAD).
fn spawn_job(c: &ChildPlan, user: &Identity, sys: &dyn Syscall) -> io::Result<libc::pid_t> {
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            JOB_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // A guard page: an overflow faults instead of writing over the init's memory.
    unsafe { libc::mprotect(stack, 4096, libc::PROT_NONE) };
    let args = JobArgs { c, user, sys };
    let pid = unsafe {
        libc::clone(
            job_entry,
            stack.cast::<u8>().add(JOB_STACK).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const JobArgs as *mut libc::c_void,
        )
    };
    let e = io::Error::last_os_error();
    unsafe { libc::munmap(stack, JOB_STACK) };
    if pid < 0 {
        return Err(e);
    }
    Ok(pid)
}

/// Mount the size-limited scratch over the scratch dir, in this (the job's) mount namespace
/// only, with the dir's owner and mode; returns its root for measuring at the end.
fn mount_disk(
    scratch: &Path,
    dev: &Path,
    sys: &dyn Syscall,
) -> Result<OwnedFd, (String, io::Error)> {
    let fail = |what: &str| {
        let e = io::Error::last_os_error();
        (format!("{what} '{}'", scratch.display()), e)
    };
    // A slave first: this mount must never propagate to the host (the host's unmounts still
    // reach the job, see plan::Step::MakeRootSlave).
    sys.mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_SLAVE,
        None,
    )
    .map_err(|e| ("making the mount tree a slave of the host's".to_string(), e))?;
    let (host, _) =
        open_path("scratch dir", scratch).map_err(|_| fail("opening the scratch dir"))?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(host.as_raw_fd(), &mut st) } < 0 {
        return Err(fail("reading the scratch dir"));
    }
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    flags |= locked_flags(host.as_raw_fd()) & libc::MS_NOEXEC;
    drop(host);
    sys.mount(
        Some(dev),
        scratch,
        Some("ext4"),
        flags,
        Some("noinit_itable"),
    )
    .map_err(|e| {
        (
            format!("mounting the --disk filesystem on '{}'", scratch.display()),
            e,
        )
    })?;
    let p = cstr(scratch).map_err(|e| ("scratch path".to_string(), e))?;
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(fail("opening the --disk filesystem at"));
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    unsafe {
        if libc::fchown(fd.as_raw_fd(), st.st_uid, st.st_gid) < 0
            || libc::fchmod(fd.as_raw_fd(), st.st_mode & 0o7777) < 0
        {
            return Err(fail("setting the owner of the --disk filesystem at"));
        }
        // mke2fs always makes one; the job has no use for it.
        libc::unlinkat(fd.as_raw_fd(), c"lost+found".as_ptr(), libc::AT_REMOVEDIR);
    }
    Ok(fd)
}

fn setup_namespaces(c: &ChildPlan) -> Result<(), (String, io::Error)> {
    if let Some((uid, gid)) = c.userns {
        // Map only the caller to itself: inside, the job is who it was outside.
        let w = |file: &str, text: String| {
            std::fs::write(file, text).map_err(|e| (format!("writing {file}"), e))
        };
        w("/proc/self/setgroups", "deny".into())?;
        w("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        w("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    }
    if c.net_none {
        loopback_up().map_err(|e| ("bringing up the loopback interface".into(), e))?;
    }
    Ok(())
}

fn loopback_up() -> io::Result<()> {
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        req.ifr_ifru.ifru_flags =
            (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as libc::c_short;
        let r = libc::ioctl(s, libc::SIOCSIFFLAGS, &req);
        let e = io::Error::last_os_error();
        libc::close(s);
        if r < 0 {
            return Err(e);
        }
    }
    Ok(())
}

/// Forward signals to the job, reap every orphan, and report the job's end.
fn init_loop(c: &ChildPlan, job: libc::pid_t, disk_fd: Option<RawFd>) -> i32 {
    // The init keeps only CAP_KILL (to signal the job's uid) for the rest of its life.
    keep_only_kill_cap();
    let set = signal_set();
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig < 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            unsafe { libc::kill(job, sig) };
            continue;
        }
        loop {
            let mut status = 0;
            let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if r <= 0 {
                break;
            }
            if r == job {
                let (msg, code) = if libc::WIFSIGNALED(status) {
                    let s = libc::WTERMSIG(status);
                    (Msg::Signaled(s), 128 + s)
                } else {
                    let c = libc::WEXITSTATUS(status);
                    (Msg::ExitCode(c), c)
                };
                c.tl.mark("init: job reaped");
                // Everything the job left is killed and reaped before the status goes out, so
                // that the launcher may clean up scratch while this process still exits (its
                // mount namespace's teardown takes a while): nothing of the job writes there
                // any more.
                unsafe { libc::kill(-1, libc::SIGKILL) };
                while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::__WALL) } > 0
                    || io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
                {
                }
                if let Some((used, total, full)) = disk_fd.and_then(crate::disk::usage) {
                    Msg::Disk { used, total, full }.send(c.msg_fd);
                }
                // Every process of the job is reaped: its CPU is all in our children's usage.
                // Said now, so that the launcher need not wait for this process's own exit.
                let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
                unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
                Msg::Usage {
                    user_us: micros(ru.ru_utime),
                    system_us: micros(ru.ru_stime),
                }
                .send(c.msg_fd);
                msg.send(c.msg_fd);
                return code;
            }
        }
    }
}

const CAP_KILL: u32 = 5;

/// Its bounding set is already empty ([`identity::confine_init`], before "go"); dropping
/// every capability a second time would make 41 more credentials while the job starts.
fn keep_only_kill_cap() {
    let kill = 1u32 << CAP_KILL;
    let _ = crate::syscall::capset(kill, kill, 0);
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
}

/// The job process: from root in the new namespaces to the user's command.
fn job_main(c: &ChildPlan, user: &Identity, sys: &dyn Syscall) -> ! {
    unsafe {
        libc::umask(c.umask);
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // Rust ignores SIGPIPE; an ignored signal would survive exec.
        for s in 1..32 {
            if s != libc::SIGKILL && s != libc::SIGSTOP {
                libc::signal(s, libc::SIG_DFL);
            }
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0);
    }
    if let Some(cpus) = &c.cpus {
        cpus.restore();
    }
    // v1: the job moves itself into its cgroup (made by now) before anything of the user's
    // runs. The init stays out of it, so that the cgroup is empty, and can be removed while
    // the init still exits, as soon as the init has reaped the job's last process (an exiting
    // process keeps its cgroup busy until it is reaped). Then its cgroup namespace, rooted
    // there.
    let joined = if c.cgroup_join.is_empty() {
        Ok(())
    } else {
        // Joined nowhere: the cgroup is gone.
        match jobcell_cgroup::join_self(&c.cgroup_join, &c.cgroup_name) {
            Ok(0) => Err(io::Error::from_raw_os_error(libc::ENOENT)),
            r => r.map(|_| ()),
        }
        .map_err(|e| (format!("joining the job's cgroup {}", c.cgroup_name), e))
    };
    let setup = joined
        .and_then(|_| {
            if c.cgroupns {
                sys.unshare(libc::CLONE_NEWCGROUP)
                    .map_err(|e| ("creating the cgroup namespace".to_string(), e))
            } else {
                Ok(())
            }
        })
        // Only now: the filter refuses new cgroup namespaces (still root, so no_new_privs is
        // not needed yet; it passes to every process of the job and cannot be undone).
        .and_then(|_| {
            sys.seccomp(&c.seccomp)
                .map_err(|e| ("installing the job's seccomp filter".to_string(), e))
        });
    if let Err((what, e)) = setup {
        send_fail(c.msg_fd, Stage::Setup, what, &e);
        unsafe { libc::_exit(125) };
    }
    // A new session: no controlling terminal, so no TIOCSTI into the caller's shell.
    let step = sys
        .setsid()
        .map_err(|e| ("setsid".to_string(), e))
        .and_then(|_| {
            identity::drop_privileges(sys, user, c.userns.is_some())
                .map_err(|e| (format!("becoming user {} ({})", user.name, user.uid), e))
        })
        .and_then(|_| {
            sys.chdir(&c.workdir)
                .or_else(|_| sys.chdir(&c.workdir_fallback))
                .map_err(|e| (format!("entering {}", c.workdir.display()), e))
        });
    if let Err((what, e)) = step {
        send_fail(c.msg_fd, Stage::Identity, what, &e);
        unsafe { libc::_exit(125) };
    }
    // Nothing of the launcher's reaches the job but stdin, stdout and stderr.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    c.tl.mark("job: exec");
    let e = exec_search(c);
    let code = match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => 127,
        _ => 126,
    };
    send_fail(
        c.msg_fd,
        Stage::Exec,
        format!("cannot run '{}'", c.argv[0].to_string_lossy()),
        &e,
    );
    unsafe { libc::_exit(code) }
}

/// execvpe with the job's own PATH (glibc's looks at the launcher's environment).
fn exec_search(c: &ChildPlan) -> io::Error {
    let mut argv: Vec<*const libc::c_char> = c.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = c.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let cmd = c.argv[0].as_bytes();
    if cmd.contains(&b'/') {
        unsafe { libc::execve(c.argv[0].as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        return io::Error::last_os_error();
    }
    let mut seen_eacces = false;
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for d in &c.path_dirs {
        let mut full = d.clone();
        full.push(b'/');
        full.extend_from_slice(cmd);
        let Ok(full) = CString::new(full) else {
            continue;
        };
        unsafe { libc::execve(full.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT)
            | Some(libc::ENOTDIR)
            | Some(libc::ELOOP)
            | Some(libc::ENAMETOOLONG) => {}
            Some(libc::EACCES) => seen_eacces = true,
            _ => return e,
        }
        last = e;
    }
    if seen_eacces {
        io::Error::from_raw_os_error(libc::EACCES)
    } else {
        last
    }
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
