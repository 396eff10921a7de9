//! `jobcell daemon`: the start sequence. Everything that forks happens before the tokio
//! runtime exists; afterwards the process only talks to the spawner.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jobcell_cgroup::CgroupRoot;
use thiserror::Error;
use tracing::{error, info, warn};

use crate::core::{Core, CoreConfig, CoreError};
use crate::resources::{self, NodeResources};
use crate::spawner::Spawner;
use crate::store::{Store, StoreError};
use crate::sys;

pub use jobcell_api::DEFAULT_SOCKET;
pub const DEFAULT_STATE_DIR: &str = "/var/lib/jobcell";

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// Cores / bytes offered to jobs; None: what the daemon's cgroup allows minus the reserve.
    pub cpus: Option<f64>,
    pub memory: Option<u64>,
    pub reserve_cpus: f64,
    pub reserve_memory: u64,
    /// A job's request when it names none (HTCondor's request_cpus = 1 default).
    pub default_cpus: f64,
    pub default_memory: u64,
    pub scratch_base: PathBuf,
    /// The node's bound on a job's scratch when it asks for no request_disk (`[scratch]
    /// disk`; see `jobcell_sandbox::quota`).
    pub scratch_bound: Option<u64>,
    /// Where the scratch base is not on btrfs: mount the node's scratch pool there (of this
    /// size, default a quarter of the state dir's filesystem) once the state dir is ours; if
    /// None, such a scratch base leaves jobs' scratch unbounded.
    pub scratch_pool: Option<Option<u64>>,
    pub cgroup_parent: Option<PathBuf>,
    /// If set, the spawner execs supervisors as `<exe> supervise DIR ATTEMPT`; if not (the
    /// default, cheaper), its forked child runs the supervisor code directly.
    pub exe: Option<PathBuf>,
    /// The image store (jobs may name an image, as with `jobcell run --image`).
    pub images: crate::jobdir::ImagesConfig,
    /// `[policy]`: wall-time limit...
    pub policy: crate::core::Policy,
    /// `[limits]`: what users other than root may ask for.
    pub limits: crate::limits::UserLimits,
    /// Also serve `GET /metrics` here (a loopback address).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `[node] api_*`: connection limits and timeouts; `max_connections` None: what the
    /// descriptor limit allows.
    pub api_max_connections: Option<usize>,
    pub api_max_connections_per_uid: usize,
    pub api_idle_timeout: std::time::Duration,
    pub api_body_timeout: std::time::Duration,
    /// `[run] job_uids`: a uid of its own for each job that would run as nobody.
    pub job_uids: Option<jobcell_spec::UidRange>,
    /// `[usage] sample_interval` in seconds; None: running jobs are not sampled.
    pub usage_interval: Option<f64>,
}

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("state dir {path}: {err}")]
    StateDir { path: PathBuf, err: io::Error },
    #[error("state dir {path} is in use by another jobcell daemon{}", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { path: PathBuf, pid: Option<u32> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("socket {path}: {err}")]
    Socket { path: PathBuf, err: io::Error },
    #[error("starting the spawner process: {0}")]
    Spawner(io::Error),
    #[error("starting the async runtime: {0}")]
    Runtime(io::Error),
    #[error(transparent)]
    ScratchPool(#[from] jobcell_sandbox::quota::QuotaError),
    #[error("cgroups: {0}")]
    Cgroup(#[from] jobcell_cgroup::CgroupError),
    #[error("{0}")]
    Config(String),
}

fn state_err(path: &Path) -> impl FnOnce(io::Error) -> DaemonError + '_ {
    move |e| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        let e = match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
                io::Error::new(e.kind(), format!("not writable by uid {euid}: {e}"))
            }
            _ => e,
        };
        DaemonError::StateDir {
            path: path.to_path_buf(),
            err: e,
        }
    }
}

/// Take the state dir's lock: one daemon per state dir.
fn lock_state_dir(dir: &Path) -> Result<File, DaemonError> {
    let p = dir.join("daemon.lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&p)
        .map_err(state_err(dir))?;
    if !sys::try_flock(&f).map_err(state_err(dir))? {
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        return Err(DaemonError::Locked {
            path: dir.to_path_buf(),
            pid: s.trim().parse().ok(),
        });
    }
    f.set_len(0).map_err(state_err(dir))?;
    f.rewind().map_err(state_err(dir))?;
    writeln!(f, "{}", std::process::id()).map_err(state_err(dir))?;
    Ok(f)
}

/// Descriptors the daemon keeps for itself beyond API connections (the database, the
/// spawner's and supervisors' pipes, job dirs being read, the log).
const DAEMON_OWN_FDS: usize = 256;

/// Raises RLIMIT_NOFILE's soft limit to the hard one (a distribution's default soft limit,
/// 1024, is what a few hundred idle clients would exhaust); returns the soft limit now.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            } else {
                warn!(
                    "raising the descriptor limit to {}: {}",
                    lim.rlim_max,
                    io::Error::last_os_error()
                );
            }
        }
    }
    lim.rlim_cur
}

/// The API's limits: the global cap stays below the descriptor limit (`nofile`), so a flood
/// is refused with an answer instead of making accept fail.
fn api_limits(o: &DaemonOptions, nofile: u64) -> crate::api::ApiLimits {
    let room = usize::try_from(nofile)
        .unwrap_or(usize::MAX)
        .saturating_sub(DAEMON_OWN_FDS)
        .max(2 * crate::api::ROOT_RESERVED_CONNECTIONS);
    let max_connections = match o.api_max_connections {
        Some(n) if n > room => {
            warn!("api_max_connections = {n} is more than the descriptor limit ({nofile}) leaves room for: {room} instead");
            room
        }
        Some(n) => n,
        None => room.min(crate::api::ApiLimits::default().max_connections),
    };
    crate::api::ApiLimits {
        max_connections,
        max_connections_per_uid: o.api_max_connections_per_uid,
        idle_timeout: o.api_idle_timeout,
        body_timeout: o.api_body_timeout,
    }
}

/// The state dir holds every job's spec (environment, arguments: tokens passed with `-e`),
/// results and default output: root's alone. The dir itself stays traversable (0711) for what
/// users reach by name below it (images, scratch); the jobs dir and the job dirs are 0700, the
/// queue's files 0600. Modes of a state dir made by an older daemon are fixed here too; its
/// job dirs are walked once, when the jobs dir is found open.
fn close_state_dir(sd: &Path, jobs_dir: &Path, lock: &File) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let set =
        |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    set(sd, 0o711)?;
    lock.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    // The queue: made 0600 before SQLite first opens it (its WAL and shared-memory files take
    // the database's mode); an existing one and its companions are closed.
    let db = sd.join("state.db");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&db)?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() && m.mode() & 0o077 != 0 => set(&p, 0o600)?,
            _ => {}
        }
    }
    let jobs = std::fs::symlink_metadata(jobs_dir)?;
    if jobs.mode() & 0o777 == 0o700 {
        return Ok(());
    }
    // Closed first: nothing below is reachable by others from this moment.
    set(jobs_dir, 0o700)?;
    for job in std::fs::read_dir(jobs_dir)? {
        let job = job?;
        if !job.file_type()?.is_dir() {
            continue;
        }
        set(&job.path(), 0o700)?;
        for f in std::fs::read_dir(job.path())? {
            let f = f?;
            if f.file_type()?.is_file() {
                let p = f.path();
                set(&p, 0o600)?;
                // Default output was once given to the job's user.
                std::os::unix::fs::lchown(&p, Some(0), Some(0))?;
            }
        }
    }
    Ok(())
}

/// The node's offer: explicit values, else detection minus the reserve.
pub fn node_resources(o: &DaemonOptions) -> Result<NodeResources, DaemonError> {
    let d = resources::detect();
    let cpus = o.cpus.unwrap_or((d.cpus - o.reserve_cpus).max(0.0));
    let memory = o
        .memory
        .unwrap_or(d.memory.saturating_sub(o.reserve_memory));
    if cpus <= 0.0 || memory == 0 {
        return Err(DaemonError::Config(format!(
            "the node offers no resources to jobs ({cpus} cpus, {memory} bytes after the reserve)"
        )));
    }
    Ok(NodeResources { cpus, memory })
}

/// The exit status of a daemon whose core failed (sysexits' EX_SOFTWARE).
pub const EXIT_CORE_FAILED: i32 = 70;

/// The core ended (the database or the spawner failed): one line in the log, then exit at
/// once, without the orderly stop. Crash-only: nothing uncommitted was acknowledged, and a
/// restart recovers from the committed state.
fn exit_for_core(
    ended: Result<Result<(), CoreError>, tokio::sync::oneshot::error::RecvError>,
) -> ! {
    const RESTART: &str = "exiting so a restart recovers from the committed state";
    match ended {
        Ok(Err(CoreError::Store(StoreError::Sql { err, .. }))) => {
            error!("state database failed ({err}); {RESTART}")
        }
        Ok(Err(CoreError::Spawner(e))) => error!("the spawner failed ({e}); {RESTART}"),
        Ok(Err(e)) => error!("{e}; {RESTART}"),
        Ok(Ok(())) | Err(_) => error!("the core thread ended; {RESTART}"),
    }
    std::process::exit(EXIT_CORE_FAILED)
}

/// Run the daemon in the foreground until SIGTERM/SIGINT.
pub fn run_daemon(o: DaemonOptions) -> Result<(), DaemonError> {
    let sd = &o.state_dir;
    std::fs::create_dir_all(sd).map_err(state_err(sd))?;
    let jobs_dir = sd.join("jobs");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&jobs_dir)
        .map_err(state_err(sd))?;
    sys::spread_subdirs(&jobs_dir);
    // Fail now, with the state dir named, rather than at the first job.
    let probe = sd.join(".write-test");
    sys::create_private(&probe).map_err(state_err(sd))?;
    let _ = std::fs::remove_file(&probe);
    let _lock = lock_state_dir(sd)?;
    if sys::is_root() {
        close_state_dir(sd, &jobs_dir, &_lock).map_err(state_err(sd))?;
    }
    let node = node_resources(&o)?;
    let cgroups = if sys::is_root() {
        Some(Arc::new(CgroupRoot::detect(o.cgroup_parent.as_deref())?))
    } else {
        warn!("not running as root: jobs run as the daemon's user, without cgroups of their own");
        None
    };
    std::fs::create_dir_all(&o.scratch_base).map_err(|e| DaemonError::StateDir {
        path: o.scratch_base.clone(),
        err: e,
    })?;
    // The pool is mounted only by the daemon that holds the state dir.
    let scratch_bound = match (o.scratch_bound, o.scratch_pool) {
        (Some(b), Some(size)) if sys::is_root() => {
            match jobcell_sandbox::quota::ensure_pool(sd, &o.scratch_base, size) {
                Ok(_) => Some(b),
                Err(e) if e.btrfs_unavailable() => {
                    warn!("jobs' scratch is not size-bounded on this node: {e}");
                    None
                }
                Err(e) => return Err(e.into()),
            }
        }
        (Some(b), _) if sys::is_root() && jobcell_sandbox::quota::on_btrfs(&o.scratch_base) => {
            Some(b)
        }
        _ => None,
    };

    let supervisor_cgroups: Vec<PathBuf> = cgroups
        .as_ref()
        .map(|r| {
            r.parent_paths()
                .iter()
                .map(|p| p.join("supervisors"))
                .collect()
        })
        .unwrap_or_default();
    // The `jobcell` parents jobcell made itself (an admin's `cgroup_parent` is theirs to keep).
    let own_parents: Vec<PathBuf> = match (&cgroups, &o.cgroup_parent) {
        (Some(r), None) => r.parent_paths(),
        _ => Vec::new(),
    };

    // Fork the spawner while this process has a single thread.
    let spawner = Spawner::start(o.exe.as_deref()).map_err(DaemonError::Spawner)?;
    let spawner_pid = spawner.pid();
    let cgroups_at_stop = cgroups.clone();
    // After the spawner's fork: supervisors and jobs keep the limit the daemon was started with.
    let limits = api_limits(&o, raise_nofile());
    let store = Store::open(&sd.join("state.db"))?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let cfg = CoreConfig {
        node,
        default_cpus: o.default_cpus,
        default_memory: o.default_memory,
        jobs_dir,
        scratch_base: o.scratch_base.clone(),
        scratch_bound,
        cgroup_parent: o.cgroup_parent.clone(),
        images: o.images.clone(),
        policy: o.policy.clone(),
        limits: o.limits.clone(),
        job_uids: o.job_uids,
        usage_interval: o.usage_interval,
    };
    let mut core = Core::new(
        &store.path,
        cfg,
        spawner,
        rt.handle().clone(),
        tx.clone(),
        cgroups,
    );
    core.set_userlog(crate::userlog::start().map_err(DaemonError::Runtime)?);
    {
        let _g = rt.enter();
        core.recover(&store)?;
        core.start_pressure_sampler();
        core.start_policy_timer();
    }
    let (core_ended_tx, core_ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("core".into())
        .spawn(move || {
            let _ = core_ended_tx.send(core.run(store, rx));
        })
        .map_err(DaemonError::Runtime)?;

    let sock = o.socket.clone();
    let sock_err = |source| DaemonError::Socket {
        path: sock.clone(),
        err: source,
    };
    if let Some(parent) = sock.parent() {
        std::fs::create_dir_all(parent).map_err(sock_err)?;
    }
    // We hold the state dir's lock, so a socket file here is a dead daemon's.
    match std::fs::remove_file(&sock) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(sock_err(e)),
        _ => {}
    }
    let listener = {
        let _g = rt.enter();
        tokio::net::UnixListener::bind(&sock).map_err(sock_err)?
    };
    let metrics_listener = match o.metrics_listen {
        Some(addr) => {
            let _g = rt.enter();
            let l = std::net::TcpListener::bind(addr)
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    tokio::net::TcpListener::from_std(l)
                })
                .map_err(|e| DaemonError::Config(format!("metrics_listen {addr}: {e}")))?;
            info!("metrics on http://{addr}/metrics");
            Some(l)
        }
        None => None,
    };
    // Everyone may connect; the API checks who they are.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).map_err(sock_err)?;
    info!(
        "jobcell daemon {} ready on {} (state {}, {} cpus and {} for jobs)",
        env!("CARGO_PKG_VERSION"),
        sock.display(),
        sd.display(),
        node.cpus,
        jobcell_spec::format_size(node.memory)
    );
    info!(
        "API limits: {} connections ({} of them root's), {} per uid; request head within {:?}, body within {:?}",
        limits.max_connections,
        crate::api::ROOT_RESERVED_CONNECTIONS,
        limits.max_connections_per_uid,
        limits.idle_timeout,
        limits.body_timeout
    );
    if let Err(e) = sys::sd_notify(&format!("READY=1\nMAINPID={}", std::process::id())) {
        warn!("sd_notify: {e}");
    }
    let core_failed = rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        if let Some(l) = metrics_listener {
            tokio::spawn(crate::api::serve_metrics(l, tx.clone(), limits));
        }
        tokio::select! {
            _ = crate::api::serve(listener, tx, limits) => None,
            _ = term.recv() => {
                info!("SIGTERM: stopping; running jobs keep running under their supervisors");
                None
            }
            _ = tokio::signal::ctrl_c() => {
                info!("SIGINT: stopping; running jobs keep running under their supervisors");
                None
            }
            ended = core_ended => Some(ended),
        }
    });
    if let Some(ended) = core_failed {
        exit_for_core(ended);
    }
    let _ = sys::sd_notify("STOPPING=1");
    let _ = std::fs::remove_file(&o.socket);
    // Only succeeds when no supervisor is left in it (rmdir of a non-empty cgroup fails), and
    // the parents only when no job nor anyone else's cgroup is: running jobs keep theirs, for
    // the next daemon to re-attach to.
    for d in supervisor_cgroups.iter().chain(&own_parents) {
        let _ = std::fs::remove_dir(d);
    }
    if let Some(root) = cgroups_at_stop {
        leave_cgroups(&root, spawner_pid, &supervisor_cgroups);
    }
    Ok(())
}

/// On cgroup v2 the daemon may live in jobcell's `<parent>/launcher` leaf: detect moved it
/// there to enable controllers in its own cgroup (a service's, under systemd). With no job
/// left, undo that, so the service's cgroup is as it was (no children, no controllers); with
/// jobs running, move into the supervisors' leaf they keep busy, so the launcher leaf does not
/// stay behind empty. Started in a unit's `DelegateSubgroup=`, the daemon never moved: both
/// leave its subgroup alone and at most remove an empty `<unit>/jobcell`. The spawner shares
/// the daemon's cgroup: it ends first.
fn leave_cgroups(root: &CgroupRoot, spawner_pid: i32, supervisor_cgroups: &[PathBuf]) {
    // SAFETY: kill and waitpid take integers and a null status pointer; the spawner is this
    // process's own child and would die with it anyway (PR_SET_PDEATHSIG).
    unsafe {
        libc::kill(spawner_pid, libc::SIGKILL);
        libc::waitpid(spawner_pid, std::ptr::null_mut(), 0);
    }
    let left = if supervisor_cgroups.iter().any(|d| d.exists()) {
        root.leave_launcher_leaf("supervisors").map(|_| ())
    } else {
        root.restore().map(|_| ())
    };
    if let Err(e) = left {
        warn!("cgroups: {e}");
    }
}
