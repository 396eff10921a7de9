//! The launcher: the parent, on the host. One function per step of the launch, in order
//! (resolve, prepare, clone the init, release it, wait, finish), each taking what the step
//! before made; the helpers they share follow.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jobcell_cgroup::{CgroupError, CgroupOptions, CgroupRoot, JobCgroup, OomWatch, Usage, Version};
use jobcell_spec::{JobSpec, NetMode};

use crate::disk::{DiskError, ScratchDisk};
use crate::identity::{self, Identity};
use crate::plan;
use crate::report::{DiskUsage, Isolation, Report};
use crate::scratch::{self, private_subdir, ScratchDir, ScratchError};
use crate::sync::{Msg, Reader, Stage};
use crate::syscall::{Linux, Syscall};

use super::init::{init_main, InitPlan, PlanShape};
use super::job::JobPlan;
use super::os::{
    clone_job, crash_point, current_umask, drain_signals, exited, micros, mount_disk, open_path,
    opened_as, random_suffix, set_nonblock, Channels, CpuSplit, RestoreCpus, SignalMask, Timeline,
    TERMINATING,
};
use super::{
    last_err, ExitingInit, JobExit, Launch, LaunchError, Outcome, SchedulerTask, ScratchMount,
};

/// The cgroup hierarchy the job's cgroup goes in: the caller's, or detected here.
enum Hierarchy<'a> {
    Given(&'a CgroupRoot),
    Detected(CgroupRoot),
}

impl Hierarchy<'_> {
    fn root(&self) -> &CgroupRoot {
        match self {
            Hierarchy::Given(r) => r,
            Hierarchy::Detected(r) => r,
        }
    }
}

/// Step 1: who the job runs as and what it gets, checked before anything is created.
pub(super) struct Resolved {
    rootless: bool,
    identity: Identity,
    /// The supplementary groups are looked up after the clone (see Identity::resolve_user).
    groups_pending: bool,
    /// The private dirs the job gets, each with its subdir of scratch.
    private: Vec<(PathBuf, String)>,
    warnings: Vec<String>,
}

/// Resolve everything that can fail before creating anything.
pub(super) fn resolve(l: &Launch, rootless: bool) -> Result<Resolved, LaunchError> {
    let spec = l.spec;
    let (identity, groups_pending) = match l.identity {
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
    Ok(Resolved {
        rootless,
        identity,
        groups_pending,
        private,
        warnings,
    })
}

/// Step 2: what exists on the host before the clone. Fields drop in this order on a failed
/// launch: the descriptors and cgroup first, the scratch dir last.
pub(super) struct Prepared<'a> {
    resolved: Resolved,
    /// Names the job's scratch dir and cgroup.
    name: String,
    scratch_base: PathBuf,
    scratch_path: PathBuf,
    /// The private dirs' subdirs of scratch.
    subdirs: Vec<String>,
    /// The node's scratch bound, where no --disk filesystem applies.
    bound: Option<u64>,
    /// v1: the hierarchies' parent dirs, through which the job joins its cgroup.
    join_dirs: Vec<OwnedFd>,
    cgroup: Option<JobCgroup>,
    oom: Option<OomWatch>,
    hierarchy: Option<Hierarchy<'a>>,
    cg_options: CgroupOptions,
    /// The root of a --disk filesystem mounted here (see [`SchedulerTask::own_scratch`]).
    own_disk_fd: Option<OwnedFd>,
    scratch_mount: Option<ScratchMount>,
    /// A --disk filesystem the init mounts.
    disk: Option<ScratchDisk>,
    /// Scratch made before the clone (for --disk, or a scheduler's dir).
    early_scratch: Option<ScratchDir>,
}

fn make_scratch(
    spec: &JobSpec,
    name: &str,
    identity: &Identity,
    subdirs: &[String],
    bound: Option<u64>,
) -> Result<ScratchDir, ScratchError> {
    ScratchDir::create_bounded(
        &spec.scratch_base,
        name,
        identity.uid,
        identity.gid,
        subdirs,
        spec.keep_scratch,
        bound,
    )
}

fn make_cgroup(
    root: &CgroupRoot,
    name: &str,
    options: CgroupOptions,
    spec: &JobSpec,
    warnings: &mut Vec<String>,
) -> Result<(JobCgroup, Option<OomWatch>), LaunchError> {
    let cg = root.create(name, &spec.resources, options)?;
    warnings.extend(cg.warnings().iter().cloned());
    let oom = match spec.resources.memory {
        Some(_) => Some(cg.oom_watch()?),
        None => None,
    };
    Ok((cg, oom))
}

/// Scratch's path (and the scratch itself when it must exist before the clone), a --disk
/// filesystem, and the job's cgroup where it must exist before the clone (v2).
pub(super) fn prepare<'a>(
    l: &Launch<'a>,
    task: &SchedulerTask,
    mut resolved: Resolved,
) -> Result<Prepared<'a>, LaunchError> {
    let spec = l.spec;
    let warnings = &mut resolved.warnings;
    // What SIGKILLed launchers left is collected once the init is released. A fresh scratch
    // is made after the clone, while the init confines itself, unless a --disk filesystem or
    // a scheduler's dir needs it now: only its path is needed before.
    let name = l.cgroup_name.clone().unwrap_or_else(job_name);
    let scratch_base = match &task.job_scratch {
        Some(p) => p.parent().unwrap_or(Path::new("/")).to_path_buf(),
        None => spec.scratch_base.clone(),
    };
    // The node's bound applies where no --disk filesystem does.
    let bound = spec
        .resources
        .scratch_bound
        .filter(|_| spec.resources.disk.is_none());
    let subdirs: Vec<String> = resolved.private.iter().map(|(_, s)| s.clone()).collect();
    let early_scratch = match &task.job_scratch {
        Some(p) => Some(ScratchDir::existing(p, resolved.identity.uid, &subdirs)?),
        None if spec.resources.disk.is_some() => Some(make_scratch(
            spec,
            &name,
            &resolved.identity,
            &subdirs,
            bound,
        )?),
        None => None,
    };
    let scratch_path = match &early_scratch {
        Some(s) => s.path().to_path_buf(),
        None => spec.scratch_base.join(&name),
    };

    // A size-limited scratch: its own filesystem, mounted by the init (in the job's mount
    // namespace only) over the scratch dir. Not in a scheduler's task, whose dir is shared.
    let mut disk = match (spec.resources.disk, &early_scratch) {
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
    let (mut scratch_mount, mut own_disk_fd) = (None, None);
    if let (Some(_), true) = (&disk, task.own_scratch) {
        let d = disk.take().expect("checked");
        Linux
            .unshare(libc::CLONE_NEWNS)
            .map_err(|e| LaunchError::Sys("a mount namespace for the --disk filesystem", e))?;
        let fd = mount_disk(&scratch_path, d.device_path(), &Linux)
            .map_err(|(what, e)| LaunchError::Setup(format!("{what}: {e}")))?;
        own_disk_fd = Some(fd);
        scratch_mount = Some(ScratchMount {
            path: scratch_path.clone(),
            _disk: d,
        });
    }
    // Where the job's cgroup goes. Rootless, only when the caller names a cgroup it may
    // write (a delegated subtree); otherwise the job lives in the scheduler's cgroup.
    let hierarchy = if resolved.rootless && l.cgroup_root.is_none() && l.cgroup_parent.is_none() {
        warnings.extend(super::unenforced_limits_warning(&spec.resources));
        None
    } else {
        Some(match l.cgroup_root {
            Some(r) => Hierarchy::Given(r),
            None => Hierarchy::Detected(CgroupRoot::detect(l.cgroup_parent.as_deref())?),
        })
    };
    let cg_options = CgroupOptions {
        v1_without_freezer: !l.suspendable,
        // Without a report nothing reads it (see `usage`).
        v1_without_cpuacct: !l.usage,
    };
    // v2 clones straight into the cgroup, so it must exist first. v1 attaches the init after
    // the clone, so its cgroup is made then, while the init does its mounts on the other core.
    let (mut cgroup, mut oom) = (None, None);
    if let Some(root) = hierarchy
        .as_ref()
        .map(Hierarchy::root)
        .filter(|r| r.version() == Version::V2)
    {
        let (cg, o) = make_cgroup(root, &name, cg_options, spec, warnings)?;
        (cgroup, oom) = (Some(cg), o);
    }
    // v1: the job moves itself into its cgroup once it exists (see join_self: far cheaper
    // than our writing its pid), through the hierarchies' parents opened now.
    let join_dirs = match &hierarchy {
        Some(h) if cgroup.is_none() => h.root().self_join_dirs(&spec.resources, cg_options)?,
        _ => Vec::new(),
    };
    Ok(Prepared {
        resolved,
        name,
        scratch_base,
        scratch_path,
        subdirs,
        bound,
        join_dirs,
        cgroup,
        oom,
        hierarchy,
        cg_options,
        own_disk_fd,
        scratch_mount,
        disk,
        early_scratch,
    })
}

/// Signals that arrived during setup: a terminating one gives up now, before the job exists
/// (the scratch dir and cgroup are removed as they go out of scope); the others are passed
/// on once the init is released.
pub(super) fn signals_before_clone(signals: &SignalMask) -> Result<Vec<libc::c_int>, LaunchError> {
    let mut early = Vec::new();
    for sig in drain_signals(&signals.fd) {
        if TERMINATING.contains(&sig) {
            return Err(LaunchError::Interrupted(sig));
        }
        if sig != libc::SIGCHLD {
            early.push(sig);
        }
    }
    Ok(early)
}

/// What the init and the job will need, built before the clone so that they only make
/// system calls.
pub(super) fn child_plan(
    l: &Launch,
    task: &SchedulerTask,
    host: &Prepared,
    channels: &Channels,
    tl: Timeline,
) -> Result<InitPlan, LaunchError> {
    let spec = l.spec;
    let r = &host.resolved;
    let state_covers = match l.image_root {
        Some(_) => Vec::new(),
        None => state_covers(&l.hidden, &r.private, &host.scratch_base),
    };
    let shape = PlanShape {
        scratch_path: host.scratch_path.clone(),
        scratch_base: host.scratch_base.clone(),
        private_dirs: r.private.clone(),
        binds: spec
            .mounts
            .iter()
            .map(|m| (m.src.clone(), m.dst.clone(), m.readonly))
            .collect(),
        image: l.image_root.clone(),
        dev: spec.dev,
        userns: r.rootless,
        covers: world_writable(&r.private),
        state_covers,
        binds_as: l.binds_as.cloned(),
    };
    let env = job_env(spec, &r.identity, &host.scratch_path, &l.extra_env);
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
    // SAFETY: getuid and getgid have no preconditions and cannot fail.
    let userns = r
        .rootless
        .then(|| unsafe { (libc::getuid(), libc::getgid()) });
    let msg_fd = channels.msg_w.as_raw_fd();
    Ok(InitPlan {
        shape,
        identity: r.identity.clone(),
        last_cap: identity::last_cap(),
        userns,
        net_none: spec.net == NetMode::None,
        go_fd: channels.go_r.as_raw_fd(),
        msg_fd,
        disk: host.disk.as_ref().map(|d| d.device_path().to_path_buf()),
        tl,
        job: JobPlan {
            umask: current_umask(),
            userns: userns.is_some(),
            cgroupns: host.hierarchy.is_some(),
            workdir: task
                .workdir
                .clone()
                .unwrap_or_else(|| host.scratch_path.clone()),
            workdir_fallback: (!task.workdir_required).then(|| host.scratch_path.clone()),
            argv,
            envp,
            path_dirs,
            msg_fd,
            cgroup_join: host.join_dirs.iter().map(|f| f.as_raw_fd()).collect(),
            cgroup_name: host.name.clone(),
            cpus: CpuSplit::new(),
            seccomp: crate::seccomp::job_filter(),
            tl,
        },
    })
}

/// Step 3: the init exists, in its namespaces. Fields drop in order on a failed launch: the
/// launcher's CPUs come back, then the init is killed (and with it the whole job).
pub(super) struct Started {
    _cpus: Option<RestoreCpus>,
    guard: Option<InitGuard>,
    pid: libc::pid_t,
    /// Cloned straight into its (v2) cgroup.
    entered: bool,
    /// The namespaces the job got (the cgroup namespace is the job's own unshare).
    namespaces: libc::c_int,
    started: Instant,
    started_unix: f64,
    /// "S" and "go"; open until the init is reaped: its hang-up tells the init we died.
    go: std::fs::File,
    msg: OwnedFd,
}

/// Clone the init into the job's new namespaces. The child never returns from here.
pub(super) fn clone_init(
    host: &Prepared,
    plan: &InitPlan,
    channels: Channels,
    tl: Timeline,
) -> Result<Started, LaunchError> {
    let mut flags =
        libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if host.resolved.rootless {
        flags |= libc::CLONE_NEWUSER;
    }
    if plan.net_none {
        flags |= libc::CLONE_NEWNET;
    }
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let into = host
        .cgroup
        .as_ref()
        .and_then(|c| c.clone_into_fd())
        .map(|fd| fd.as_raw_fd());
    let Channels {
        msg_r,
        msg_w,
        go_r,
        go_w,
    } = channels;
    let (pid, entered) = clone_job(flags, into)?;
    if pid == 0 {
        drop(msg_r);
        drop(go_w);
        init_main(plan);
    }
    drop(msg_w);
    drop(go_r);
    let guard = InitGuard(pid);
    let cpus = plan.job.cpus.map(|s| s.apply(pid));
    tl.mark("cloned");
    crash_point("clone");
    let namespaces = if plan.job.cgroupns {
        flags | libc::CLONE_NEWCGROUP
    } else {
        flags
    };
    Ok(Started {
        _cpus: cpus,
        guard: Some(guard),
        pid,
        entered,
        namespaces,
        started,
        started_unix,
        go: std::fs::File::from(go_w),
        msg: msg_r,
    })
}

/// Step 4: the init is released and the job starting. Fields drop in order on a failed
/// launch: the init (and the job) first, then scratch (the cgroup, in [`Prepared`], after).
/// After the clone the launcher's steps borrow [`Prepared`] rather than move it: every page
/// the launcher writes then is a copy-on-write fault, shared with the init.
pub(super) struct Running {
    init: Started,
    scratch: Option<ScratchDir>,
}

/// Make scratch (while the init confines itself) and say "S"; make the v1 cgroup and look
/// up the groups (while the init mounts); then say "go" with the groups, collect killed
/// launchers' leftovers and pass on the signals that came early.
pub(super) fn release(
    l: &Launch,
    h: &mut Prepared,
    init: Started,
    early_signals: Vec<libc::c_int>,
    tl: Timeline,
) -> Result<Running, LaunchError> {
    let spec = l.spec;
    let mut r = Running {
        init,
        scratch: None,
    };
    // A failure here kills the init (InitGuard) before it mounted anything.
    r.scratch = Some(match h.early_scratch.take() {
        Some(s) => s,
        None => make_scratch(spec, &h.name, &h.resolved.identity, &h.subdirs, h.bound)?,
    });
    match std::io::Write::write_all(&mut r.init.go, &[crate::sync::SCRATCH_READY]) {
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
    if let (None, Some(root)) = (&h.cgroup, h.hierarchy.as_ref().map(Hierarchy::root)) {
        let (cg, o) = make_cgroup(root, &h.name, h.cg_options, spec, &mut h.resolved.warnings)?;
        (h.cgroup, h.oom) = (Some(cg), o);
    }
    tl.mark("cgroup created");
    crash_point("cgroup");
    if h.resolved.groups_pending {
        h.resolved.identity.load_groups();
    }
    tl.mark("groups looked up");
    let pid = r.init.pid;
    if let (Some(cg), false, true) = (&h.cgroup, r.init.entered, h.join_dirs.is_empty()) {
        // v2 without clone3: the init waits for "go" before it starts the job, so nothing of
        // the job runs outside the cgroup. An init that
        // already failed its setup has its reason in the message pipe: read that below.
        if let Err(e) = cg.attach(pid) {
            if !exited(pid) {
                return Err(e.into());
            }
        }
    }

    // Release the child (EPIPE: it failed its setup and said why; the wait collects that).
    match std::io::Write::write_all(
        &mut r.init.go,
        &crate::sync::encode_go(&h.resolved.identity.groups),
    ) {
        Err(e) if e.raw_os_error() != Some(libc::EPIPE) => {
            return Err(LaunchError::Sys("releasing the job's init", e));
        }
        _ => {}
    }
    crash_point("go");
    // Leftovers of launchers that were SIGKILLed, collected while the init sets up.
    scratch::gc_stale(&spec.scratch_base);
    if let Some(h) = &h.hierarchy {
        let _ = h.root().gc_stale();
    }
    for sig in early_signals {
        // SAFETY: kill has no memory preconditions; pid is our child, not yet reaped.
        unsafe { libc::kill(pid, sig) };
    }
    Ok(r)
}

/// Step 7: the launcher's wait is over.
pub(super) struct Ended {
    reader: Reader,
    /// The init's wait status and rusage, when it was reaped.
    reaped: Option<(libc::c_int, libc::rusage)>,
    /// The init, still exiting, when it was not.
    exiting: Option<ExitingInit>,
    oom_seen: bool,
    usage: Option<Result<Usage, CgroupError>>,
    /// Scratch's path and its removal's result.
    removed: Option<(PathBuf, Result<Option<PathBuf>, ScratchError>)>,
    cgroup_removed: Option<Result<(), CgroupError>>,
    wall: Duration,
}

/// Wait. Once the init reports the job's status, every process of the job is gone: the job's
/// usage is final, scratch can go, and the launch is over while the init still exits (its
/// namespaces' teardown; see ExitingInit). A --disk scratch waits for that teardown (its loop
/// device), and so does a v2 cgroup.
pub(super) fn wait_for_job(
    l: &Launch,
    signals: &SignalMask,
    h: &mut Prepared,
    r: &mut Running,
    tl: Timeline,
) -> Result<Ended, LaunchError> {
    let spec = l.spec;
    let msg_fd = r.init.msg.as_raw_fd();
    set_nonblock(msg_fd);
    let mut reader = Reader::default();
    let mut oom_seen = false;
    let (mut usage, mut removed, mut cgroup_removed) = (None, None, None);
    // v1: the init never joins the job's cgroup (the job does), so it is empty once the init
    // reports the status, and its usage final. v2's init is cloned into it and keeps it busy
    // (and its CPU counted) until reaped: usage and removal wait for that.
    let cgroup_free_at_status = !h.join_dirs.is_empty();
    let ends_at_status = h.disk.is_none()
        && h.own_disk_fd.is_none()
        && (h.cgroup.is_none() || cgroup_free_at_status);
    let mut on_oom = |w: &OomWatch| {
        w.clear();
        if !oom_seen && w.oom_kills().unwrap_or(0) > 0 {
            oom_seen = true;
            say_oom(spec);
        }
    };
    let (cgroup, scratch, disk) = (&mut h.cgroup, &mut r.scratch, &h.disk);
    let waited = wait_loop(
        r.init.pid,
        &signals.fd,
        msg_fd,
        &mut reader,
        spec.grace,
        h.oom
            .as_ref()
            .map(|w| (w, &mut on_oom as &mut dyn FnMut(&OomWatch))),
        l.sampler.map(|s| s.interval()),
        &mut |wake| {
            if wake == Wake::Tick {
                if let (Some(s), Some(c)) = (l.sampler, cgroup.as_ref()) {
                    s.sample(c, false);
                }
                return false;
            }
            if cgroup_free_at_status {
                if let (Some(s), Some(c)) = (l.sampler, cgroup.as_ref()) {
                    s.sample(c, true);
                }
                usage = cgroup.as_ref().map(|c| final_usage(c, l.usage));
                cgroup_removed = cgroup.take().map(|c| c.remove());
            }
            if disk.is_none() {
                removed = scratch.take().map(|s| (s.path().to_path_buf(), s.remove()));
            }
            tl.mark("usage read, scratch removed");
            ends_at_status
        },
    )?;
    let wall = r.init.started.elapsed();
    std::mem::forget(r.init.guard.take());
    let (reaped, exiting) = match waited {
        Waited::Reaped(status, rusage) => {
            while let Ok(true) = reader.fill(msg_fd) {}
            tl.mark("init reaped");
            (Some((status, rusage)), None)
        }
        Waited::Reported => (None, Some(ExitingInit(r.init.pid))),
    };
    Ok(Ended {
        reader,
        reaped,
        exiting,
        oom_seen,
        usage,
        removed,
        cgroup_removed,
        wall,
    })
}

/// Step 8: interpret the init's messages, clean up what is left, and report.
pub(super) fn finish(
    l: &Launch,
    task: &SchedulerTask,
    h: &mut Prepared,
    mut r: Running,
    ended: Ended,
    tl: Timeline,
) -> Result<Outcome, LaunchError> {
    let spec = l.spec;
    let Ended {
        reader,
        reaped,
        exiting,
        oom_seen,
        mut usage,
        mut removed,
        mut cgroup_removed,
        wall,
    } = ended;
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
    if let Some(fd) = h.own_disk_fd.take() {
        disk_usage = crate::disk::usage(fd.as_raw_fd()).or(disk_usage);
    }
    if usage.is_none() {
        if let (Some(s), Some(c)) = (l.sampler, h.cgroup.as_ref()) {
            s.sample(c, true);
        }
        usage = h.cgroup.as_ref().map(|c| final_usage(c, l.usage));
    }
    if let Some(c) = h.cgroup.take() {
        cgroup_removed = Some(c.remove());
    }
    tl.mark("cgroup read and removed");
    let mut warnings = std::mem::take(&mut h.resolved.warnings);
    if let Some(scratch) = r.scratch.take() {
        if let (Some(d), true) = (&h.disk, spec.keep_scratch) {
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
        drop(h.disk.take());
        removed = Some((scratch.path().to_path_buf(), scratch.remove()));
    }
    let (mut scratch_path, removed) = removed.expect("scratch is removed once, above or here");
    if let Some(e) = setup_error {
        return Err(LaunchError::Setup(e));
    }
    let status = reaped.map(|(s, _)| s);
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
    cgroup_removed.transpose()?;
    let usage = usage.transpose()?;

    // The job's processes as the init reaped them; an init killed before it could say (the
    // grace ran out) is reaped here, and its rusage includes what it reaped.
    let (cpu_user_us, cpu_system_us) = job_cpu
        .or(reaped.map(|(_, r)| (micros(r.ru_utime), micros(r.ru_stime))))
        .unwrap_or((0, 0));
    let scratch_mount = h.scratch_mount.take();
    let bound = h.bound;
    // Taken, not copied: nothing is allocated on the way out.
    let rootless = h.resolved.rootless;
    let private = std::mem::take(&mut h.resolved.private);
    let identity = std::mem::replace(
        &mut h.resolved.identity,
        Identity {
            name: String::new(),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        },
    );
    let mut report = Report::new(
        spec,
        exit,
        wall,
        r.init.started_unix,
        cpu_user_us,
        cpu_system_us,
        Isolation {
            namespaces: namespaces(r.init.namespaces),
            user: identity,
            private_dirs: private.into_iter().map(|(p, _)| p).collect(),
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
        init: exiting,
    })
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

impl Drop for InitGuard {
    fn drop(&mut self) {
        // SAFETY: kill and waitpid take plain integers and a null status pointer; the init is our
        // unreaped child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
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

/// Why [`wait_loop`] calls its hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The init reported the job's end (once).
    Status,
    /// A sampling interval passed while the job runs.
    Tick,
}

/// The launcher's wait: pass signals on, enforce the grace period, call `on_wake` every `tick`
/// until the job ends and once the init reports that end, and reap the init (unless `on_wake`
/// returns true for the status).
#[allow(clippy::too_many_arguments)]
fn wait_loop(
    init: libc::pid_t,
    sigfd: &OwnedFd,
    msg_fd: RawFd,
    reader: &mut Reader,
    grace: Duration,
    mut oom: Option<OnOom<'_>>,
    tick: Option<Duration>,
    on_wake: &mut dyn FnMut(Wake) -> bool,
) -> Result<Waited, LaunchError> {
    let mut deadline: Option<Instant> = None;
    let mut msg_open = true;
    let mut status_seen = false;
    let mut next_tick = tick.map(|t| Instant::now() + t);
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
        let wake_at = match (deadline, next_tick) {
            (Some(d), Some(t)) => Some(d.min(t)),
            (d, t) => d.or(t),
        };
        let timeout = match wake_at {
            // Rounded up: a poll that returns just before the instant would spin.
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_micros()
                .div_ceil(1000)
                .min(i32::MAX as u128) as i32,
            None => -1,
        };
        // SAFETY: `fds` is an array of valid pollfds (a negative fd is ignored), alive for the
        // call.
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
                // SAFETY: kill takes plain integers; the init is our child and not yet reaped.
                unsafe { libc::kill(init, libc::SIGKILL) };
                deadline = None;
            }
        }
        if let (Some(t), Some(at)) = (tick, next_tick) {
            let now = Instant::now();
            if now >= at && !status_seen {
                on_wake(Wake::Tick);
                // The next one an interval from now: a stalled wake-up is not made up for.
                next_tick = Some(now + t);
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
                next_tick = None;
                if on_wake(Wake::Status) {
                    return Ok(Waited::Reported);
                }
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            for sig in drain_signals(sigfd) {
                if sig == libc::SIGCHLD {
                    continue;
                }
                // SAFETY: as above.
                unsafe { libc::kill(init, sig) };
                if deadline.is_none() && TERMINATING.contains(&sig) {
                    deadline = Some(Instant::now() + grace);
                }
            }
        }
        let mut status = 0;
        // SAFETY: rusage is plain data; all-zero is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `status` and `ru` are writable and alive for the call.
        let r = unsafe { libc::wait4(init, &mut status, libc::WNOHANG, &mut ru) };
        if r == init {
            return Ok(Waited::Reaped(status, ru));
        }
        if r < 0 {
            return last_err("waiting for the job");
        }
    }
}
