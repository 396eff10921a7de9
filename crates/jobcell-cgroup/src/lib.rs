//! # jobcell-cgroup — one cgroup per job, on cgroup v1 and v2
//!
//! The resource-isolation layer of jobcell. It knows nothing about jobs beyond their
//! [`Resources`] (jobcell-spec's, validated there; this crate applies them as given): a
//! [`CgroupRoot`] is detected once per process, [`CgroupRoot::create`] makes a job cgroup and
//! applies the limits, the launcher puts the job in it *before it execs* (v2: pass
//! [`JobCgroup::clone_into_fd`] to `clone3(CLONE_INTO_CGROUP)`; v1 or fallback: the parent calls
//! [`JobCgroup::attach`] with the child's pid before releasing it), and at the end
//! [`JobCgroup::stats`] reads what the kernel accounted and [`JobCgroup::remove`] kills what is
//! left and removes every directory.
//!
//! ```no_run
//! use jobcell_cgroup::{job_cgroup_name, CgroupOptions, CgroupRoot, MemoryPolicy, Resources};
//! # fn main() -> Result<(), jobcell_cgroup::CgroupError> {
//! let root = CgroupRoot::detect(None)?; // may move this process into a v2 leaf: call early
//! root.gc_stale()?;                      // leftovers of SIGKILLed jobcells
//! let resources = Resources { memory: Some(1 << 30), memory_policy: MemoryPolicy::Hard,
//!                             cpus: Some(2.0), pids: Some(512), ..Default::default() };
//! let job = root.create(&job_cgroup_name("42"), &resources, CgroupOptions::default())?;
//! for w in job.warnings() { eprintln!("jobcell: warning: {w}"); }
//! let oom = job.oom_watch()?;            // poll oom.fd() next to the child's pidfd
//! // v2: clone3(CLONE_INTO_CGROUP, cgroup = job.clone_into_fd()); otherwise:
//! // fork a child that blocks on a pipe, job.attach(child_pid)?, then release it.
//! // ... wait for the job ...
//! let usage = job.stats()?;              // before remove(): the figures go with the cgroup
//! let oom_killed = usage.oom_kills > 0 || oom.oom_kills()? > 0;
//! job.remove()?;                         // kills leftovers, removes every directory
//! # let _ = oom_killed; Ok(()) }
//! ```
//!
//! ## Where job cgroups live
//! Under a `jobcell` child of the cgroup this process already lives in — per controller on v1,
//! since every v1 hierarchy places a process independently (`/proc/self/cgroup`) — or under an
//! explicit parent. jobcell never writes limits to, moves processes out of, or removes a cgroup
//! it did not create. On v2, controllers can only be enabled in a cgroup that has no processes
//! (the no-internal-process rule, the root excepted): if jobcell is the only process in its
//! cgroup it moves itself into the leaf `jobcell/launcher` first; if other processes share that
//! cgroup, detection fails with an error saying so (start jobcell in its own cgroup, e.g.
//! `systemd-run --scope -p Delegate=yes`, or pass a parent). One exception to "below its own
//! cgroup": a process started in a systemd unit's `DelegateSubgroup=` (its cgroup's parent
//! carries `trusted.delegate` = "1", and every process in it runs jobcell's executable) uses
//! `<unit>/jobcell`, a sibling of that subgroup, and moves nowhere: the unit's cgroup holds
//! no process, and a restarted service can start in its subgroup while jobs run.
//!
//! An unprivileged (rootless) caller uses [`CgroupRoot::detect_delegated`]: the same places,
//! but only after checking, creating nothing, that they were delegated to it (writable
//! directories, `subtree_control`, and on v2 the common ancestor's `cgroup.procs` that
//! `clone3(CLONE_INTO_CGROUP)` needs); otherwise it gets [`CgroupError::Delegation`] and the
//! caller leaves limits to whoever owns its cgroup.
//!
//! ## v1 / v2 mapping
//! | [`Resources`] / [`Usage`]    | cgroup v2                                  | cgroup v1                                             |
//! |------------------------------|--------------------------------------------|-------------------------------------------------------|
//! | `cpus = N` (weight)          | `cpu.weight = 100·N` (1..=10000)           | `cpu.shares = 1024·N` (2..=262144)                    |
//! | `cpu_limit = N` (hard cap)   | `cpu.max = "N·100000 100000"`              | `cpu.cfs_quota_us = N·100000` (period 100000)         |
//! | `cpuset`                     | `cpuset.cpus` (controller enabled lazily)  | `cpuset.cpus` + `cpuset.mems` copied from the parent  |
//! | `memory`, policy `Hard`      | `memory.max`, `memory.oom.group = 1`       | `memory.limit_in_bytes`                               |
//! | `memory`, policy `Soft`      | `memory.low`                               | `memory.soft_limit_in_bytes`                          |
//! | `memory`, policy `None`      | measured only                              | measured only                                         |
//! | `swap`                       | `memory.swap.max`                          | `memory.memsw.limit_in_bytes = memory + swap` (Hard only; needs swap accounting) |
//! | each row of [`jobcell_spec::FILE_LIMITS`] (e.g. `pids`) | its `v2` file (`pids.max`) | its `v1` file, in the hierarchy of the controller it is named after (`pids.max`) |
//! | `io_weight` (1..=10000, default 100) | `io.weight "default N"` / `io.bfq.weight` | `blkio.bfq.weight` (1..=1000) or `blkio.weight` (10..=1000) |
//! | cpu user/system µs           | `cpu.stat` `user_usec`/`system_usec`       | `cpuacct.usage_user`/`usage_sys` (ns → µs)            |
//! | memory peak                  | `memory.peak` (≥ 5.19; else sampled)       | `memory.max_usage_in_bytes`                           |
//! | anon / shmem / file          | `memory.stat` `anon`, `shmem`, `file − shmem` | `memory.stat` `total_rss`, `total_shmem`, `total_cache − total_shmem` |
//! | swap peak                    | `memory.swap.peak` (≥ 6.5; else sampled)   | sampled from `memory.stat` `total_swap`               |
//! | io read/write bytes          | `io.stat` `rbytes`/`wbytes` (io always enabled) | `blkio.throttle.io_service_bytes_recursive` (only when `io_weight` created the blkio cgroup) |
//! | pids peak                    | `pids.peak` (where present; else sampled)  | `pids.peak` (where present; else sampled)             |
//! | OOM kills (processes)        | `memory.events` `oom_kill − oom_group_kill` | `memory.oom_control` `oom_kill`                       |
//! | OOM event fd                 | inotify on `memory.events`                 | eventfd registered via `cgroup.event_control`         |
//! | memory pressure (PSI)        | `memory.pressure` (+ poll triggers)        | none ([`CgroupError::Unsupported`])                   |
//! | freeze / thaw                | `cgroup.freeze`, wait `cgroup.events frozen` | `freezer.state` FROZEN/THAWED, wait until it settles |
//! | kill everything              | `cgroup.kill` (≥ 5.14), wait `populated 0` | freeze, SIGKILL each pid, thaw, repeat until empty    |
//!
//! v1 hierarchies created for every job: memory, cpu, cpuacct, pids, freezer (fewer directories
//! where controllers are co-mounted, e.g. `cpu,cpuacct`); blkio only with `io_weight`, cpuset
//! only with `cpuset`. v2: one directory.
//!
//! ## Cost
//! Measured with `cargo run --release -p jobcell-cgroup --example bench -- 500` on the hybrid-v1
//! development machine (kernel 6.18, 2 cores): create + limits (cpus, memory, pids) + attach of a
//! forked child + remove adds a median ~0.36–0.41 ms to a plain fork/release/wait (create ~160 µs
//! for 5 mkdirs + 2 writes, attach ~70 µs for 5 writes, remove ~110 µs). All files are opened
//! with `openat` relative to kept directory fds; writes equal to the kernel default are skipped.
//!
//! ## Events
//! [`JobCgroup::oom_watch`] gives an fd that polls readable when the kernel records an OOM event
//! (no polling of counters). `oom_kills` counts processes: with `memory.oom.group` the kernel
//! counts the victim twice in `oom_kill`, so v2 reports `oom_kill − oom_group_kill`.
//!
//! "Sampled" figures come from [`JobCgroup::sample`] calls (and one at every [`JobCgroup::stats`]);
//! [`Usage`] says which source each peak came from.

mod cpuset;
mod detect;
mod dir;
mod events;
mod v1;
mod v2;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use events::{OomWatch, Pressure, PressureKind, PressureLine, PressureTrigger};

/// Move the calling process, which must be single-threaded, into v1 job cgroup `name` under
/// each of `parents` (from [`CgroupRoot::self_join_dirs`]) by writing "0" to its `tasks`
/// file. A thread moving itself takes no global lock; writing a pid to `cgroup.procs` takes the
/// threadgroup rwsem for writing, which waits for an RCU grace period (1–15 ms measured here,
/// the largest single cost of a launch). Hierarchies without that cgroup are skipped; returns
/// how many were joined. Allocates nothing: safe in a forked child.
pub fn join_self(parents: &[std::os::fd::RawFd], name: &str) -> std::io::Result<usize> {
    let mut path = [0u8; 256];
    let tail = b"/tasks\0";
    if name.len() + tail.len() > path.len() || name.as_bytes().contains(&0) {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    path[..name.len()].copy_from_slice(name.as_bytes());
    path[name.len()..name.len() + tail.len()].copy_from_slice(tail);
    let mut joined = 0;
    for &dir in parents {
        // SAFETY: `path` holds the name and "/tasks" followed by a NUL (checked above to fit and to
        // hold no other NUL) and outlives the call; a stale `dir` only makes the call fail.
        let fd = unsafe {
            libc::openat(
                dir,
                path.as_ptr().cast(),
                libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                continue;
            }
            return Err(e);
        }
        // SAFETY: writes one byte from a 'static literal to `fd`, opened just above.
        let r = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        let e = std::io::Error::last_os_error();
        // SAFETY: `fd` was opened above by this loop iteration and is closed exactly once, here.
        unsafe { libc::close(fd) };
        if r != 1 {
            return Err(e);
        }
        joined += 1;
    }
    Ok(joined)
}

/// Which cgroup version jobcell drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

/// What the host has mounted (hybrid = v1 controllers plus a v2 mount; jobcell then uses v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    V1,
    Hybrid,
    V2,
}

pub use jobcell_spec::{MemoryPolicy, Resources};

/// How a launch wants its job cgroup made, beside the job's [`Resources`].
#[derive(Default, Clone, Copy, Debug)]
pub struct CgroupOptions {
    /// v1: no cgroup in the freezer hierarchy, for a job nothing will suspend (`jobcell run`;
    /// the daemon's `suspend` needs it). Each v1 hierarchy is a mkdir, a join and an rmdir
    /// per launch, and a css the kernel frees later. v2 has the freezer in every cgroup.
    pub v1_without_freezer: bool,
    /// v1: no cgroup in a cpuacct hierarchy of its own, for a job whose CPU accounting nobody
    /// reads (no report; the init's rusage counts the job's CPU anyway). Where cpuacct is
    /// mounted with cpu, as usual, it comes with the cpu cgroup regardless.
    pub v1_without_cpuacct: bool,
}

/// Where a figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The kernel's own high-water mark: exact.
    #[default]
    Kernel,
    /// Maximum of our samples: a lower bound.
    Sampled,
}

/// What a job cgroup used, as accounted by the kernel.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    pub cpu_user_us: u64,
    pub cpu_system_us: u64,
    /// Peak of all memory charged to the job (anon + shmem + page cache + kernel).
    pub memory_peak: u64,
    pub memory_peak_source: Source,
    pub memory_current: u64,
    /// Current breakdown at the time of reading.
    pub memory_anon: u64,
    pub memory_shmem: u64,
    /// Page cache excluding shmem.
    pub memory_file: u64,
    /// Highest anon+shmem seen by sampling (the kernel keeps no per-type peak), if sampled.
    pub anon_shmem_peak_sampled: Option<u64>,
    pub swap_peak: Option<u64>,
    pub swap_peak_source: Source,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    pub pids_peak: u64,
    pub pids_peak_source: Source,
    /// Processes the kernel OOM-killed (v2: `oom_kill − oom_group_kill`, because with
    /// `memory.oom.group` the kernel counts the victim twice).
    pub oom_kills: u64,
}

/// Every failure of this crate; messages name the file or input at fault.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy: {0}")]
    NoHierarchy(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid limit {field}: {reason}")]
    InvalidLimit { field: &'static str, reason: String },
    #[error("cgroup {0} already exists")]
    Exists(PathBuf),
    #[error("{what} is not supported here: {why}")]
    Unsupported { what: &'static str, why: String },
    #[error("cannot use cgroup {path}: {why}")]
    Delegation { path: PathBuf, why: String },
    #[error("timed out after {secs:.1} s {what}")]
    Timeout { what: String, secs: f64 },
    #[error("cannot parse {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("`..` would leave the cgroup hierarchy")]
    ParentEscapes(PathBuf),
}

/// A parent cgroup path (`--cgroup-parent`, `[paths] cgroup_parent`) stays where it says: a
/// `..` would make jobcell create (and leave) directories outside the hierarchy it names, even
/// outside cgroupfs.
pub fn check_parent_path(p: &Path) -> Result<(), CgroupError> {
    if p.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(CgroupError::ParentEscapes(p.to_path_buf()));
    }
    Ok(())
}

impl CgroupError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        CgroupError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
    /// The directory (or file) was not there.
    pub(crate) fn is_enoent(&self) -> bool {
        match self {
            CgroupError::Io { source, .. } | CgroupError::Write { source, .. } => {
                source.raw_os_error() == Some(libc::ENOENT)
            }
            _ => false,
        }
    }

    pub(crate) fn unsupported(what: &'static str, why: impl Into<String>) -> Self {
        CgroupError::Unsupported {
            what,
            why: why.into(),
        }
    }
}

/// How long freeze/kill/remove wait for the kernel before giving up (generous: the v2 test VM
/// runs under emulation).
pub(crate) const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Poll `f` with a short exponential back-off until it returns true or `timeout` passes.
pub(crate) fn wait_until(
    timeout: Duration,
    mut f: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(20);
    loop {
        if f()? {
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            return Ok(false);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// The name [`CgroupRoot::gc_stale`] recognises: `job-<this pid>-<suffix>`.
pub fn job_cgroup_name(suffix: &str) -> String {
    format!("job-{}-{}", std::process::id(), suffix)
}

/// Pid encoded in a job cgroup name, if it is one.
pub(crate) fn job_name_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("job-")?;
    let (pid, suffix) = rest.split_once('-')?;
    if suffix.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0)
}

/// Whether `pid` exists (EPERM means it exists but is not ours).
pub(crate) fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn check_name(name: &str) -> Result<(), CgroupError> {
    let bad = |reason| {
        Err(CgroupError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 200 {
        return bad("longer than 200 bytes");
    }
    if matches!(name, "." | ".." | "launcher" | "supervisors") {
        return bad("reserved name");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b':'))
    {
        return bad("only ASCII letters, digits and - _ . @ : are allowed");
    }
    // Names that look like controller files would clash with cgroupfs entries.
    if name.starts_with("cgroup.") || name.contains('.') && !name.starts_with("job-") {
        return bad("must not look like a cgroup interface file (use job-<pid>-<suffix>)");
    }
    Ok(())
}

pub(crate) fn cpu_weight_v2(cpus: f64) -> u64 {
    ((cpus * 100.0).round() as u64).clamp(1, 10000)
}
pub(crate) fn cpu_shares_v1(cpus: f64) -> u64 {
    ((cpus * 1024.0).round() as u64).clamp(2, 262144)
}
pub(crate) const CFS_PERIOD_US: u64 = 100_000;
pub(crate) fn cpu_quota_us(cores: f64) -> u64 {
    ((cores * CFS_PERIOD_US as f64).round() as u64).max(1000)
}

/// This process's cgroups: (v1 controllers or empty for v2, path), from `/proc/self/cgroup`.
type ProcCgroups = Vec<(Vec<String>, String)>;

/// The cgroup mounts and this process's cgroups.
fn read_layout() -> Result<(Vec<detect::Mount>, ProcCgroups), CgroupError> {
    let read = |p: &str| read_proc(p).map_err(|e| CgroupError::io("read", Path::new(p), e));
    Ok((
        detect::parse_mountinfo(&read("/proc/self/mountinfo")?),
        detect::parse_proc_cgroup(&read("/proc/self/cgroup")?),
    ))
}

/// A /proc file, read in page-sized chunks. (`fs::read_to_string` asks for the size first,
/// which /proc reports as 0, then reads 32 bytes and grows from there: ten system calls for a
/// mountinfo, before every launch.)
fn read_proc(path: &str) -> std::io::Result<String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    dir::read_fd_to_string(f.as_raw_fd())
}

/// Whether this process may write `path` (by its effective ids, as the kernel will check).
fn may_access(path: &Path, mode: libc::c_int) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: faccessat on a NUL-terminated absolute path.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

fn not_delegated(path: &Path, what: &str) -> CgroupError {
    CgroupError::Delegation {
        path: path.to_path_buf(),
        why: format!(
            "{what} is not writable by uid {} (no cgroup is delegated to this user here)",
            // SAFETY: geteuid has no preconditions.
            unsafe { libc::geteuid() }
        ),
    }
}

/// A cgroup file the caller must be able to write.
pub(crate) fn check_writable(file: &Path) -> Result<(), CgroupError> {
    if may_access(file, libc::W_OK) {
        Ok(())
    } else {
        Err(not_delegated(file, "this file"))
    }
}

/// Directory `dir` (below `mount`) exists and the caller may create cgroups in it, or it is
/// missing and the caller may create it (its first existing ancestor is writable).
pub(crate) fn check_creatable(dir: &Path, mount: &Path) -> Result<(), CgroupError> {
    let mut cur = dir;
    while !cur.exists() {
        match cur.parent() {
            Some(up) if up.starts_with(mount) => cur = up,
            _ => break,
        }
    }
    if may_access(cur, libc::W_OK | libc::X_OK) {
        Ok(())
    } else {
        Err(not_delegated(cur, "the cgroup directory"))
    }
}

enum RootImpl {
    V1(v1::Root),
    V2(v2::Root),
}

/// The detected hierarchy and jobcell's own parent cgroup(s).
pub struct CgroupRoot {
    inner: RootImpl,
    layout: Layout,
}

impl std::fmt::Debug for CgroupRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgroupRoot")
            .field("layout", &self.layout)
            .field("parents", &self.parent_paths())
            .finish()
    }
}

impl CgroupRoot {
    /// Detect pure v1 / pure v2 / hybrid from `/proc/self/mountinfo` + `/proc/self/cgroup` and
    /// create (if needed) jobcell's parent: a `jobcell` child of the cgroup this process lives in
    /// (per v1 hierarchy), or `parent_override` — a cgroup path relative to the hierarchy root
    /// (`/batch/jobcell`), or on v2 also a filesystem path below the cgroup2 mount.
    /// On v2 this may move this process into `<parent>/launcher` (see the crate docs).
    pub fn detect(parent_override: Option<&Path>) -> Result<Self, CgroupError> {
        parent_override.map(check_parent_path).transpose()?;
        let (mounts, cgs) = read_layout()?;
        let has_v1_memory = mounts
            .iter()
            .any(|m| !m.v2 && m.controllers.iter().any(|c| c == "memory"));
        let v2 = mounts.iter().find(|m| m.v2);
        if has_v1_memory {
            let layout = if v2.is_some() {
                Layout::Hybrid
            } else {
                Layout::V1
            };
            let root = v1::Root::detect(&mounts, &cgs, parent_override)?;
            Ok(CgroupRoot {
                inner: RootImpl::V1(root),
                layout,
            })
        } else if let Some(m) = v2 {
            let own = cgs
                .iter()
                .find(|(c, _)| c.is_empty())
                .map(|(_, p)| p.clone())
                .ok_or_else(|| {
                    CgroupError::NoHierarchy("/proc/self/cgroup has no cgroup2 (0::) line".into())
                })?;
            let root = v2::Root::detect(m, &own, parent_override)?;
            Ok(CgroupRoot {
                inner: RootImpl::V2(root),
                layout: Layout::V2,
            })
        } else {
            Err(CgroupError::NoHierarchy(
                "neither a cgroup v1 memory hierarchy nor a cgroup2 filesystem is mounted".into(),
            ))
        }
    }

    /// [`detect`](Self::detect) for an unprivileged (rootless) caller: only where a cgroup is
    /// delegated to it. First checks, creating nothing, that this process can create job cgroups
    /// below the parent (`parent_override`, else a `jobcell` child of its own cgroup) in every
    /// hierarchy a job uses, and start jobs there — on v2 also that the common ancestor of its
    /// own cgroup and the parent has a `cgroup.procs` it may write (what systemd's
    /// `Delegate=yes` gives: the unit's directory and its `cgroup.procs`,
    /// `cgroup.subtree_control` chowned to the user). Then detects as usual. Fails with
    /// [`CgroupError::Delegation`] naming the first directory or file it may not write; the
    /// caller then leaves limits to the enclosing scheduler.
    pub fn detect_delegated(parent_override: Option<&Path>) -> Result<Self, CgroupError> {
        parent_override.map(check_parent_path).transpose()?;
        let (mounts, cgs) = read_layout()?;
        let has_v1_memory = mounts
            .iter()
            .any(|m| !m.v2 && m.controllers.iter().any(|c| c == "memory"));
        if has_v1_memory {
            v1::Root::check_delegated(&mounts, &cgs, parent_override)?;
        } else if let Some(m) = mounts.iter().find(|m| m.v2) {
            let own = cgs
                .iter()
                .find(|(c, _)| c.is_empty())
                .map(|(_, p)| p.clone())
                .ok_or_else(|| {
                    CgroupError::NoHierarchy("/proc/self/cgroup has no cgroup2 (0::) line".into())
                })?;
            v2::Root::check_delegated(m, &own, parent_override)?;
        }
        Self::detect(parent_override)
    }

    pub fn version(&self) -> Version {
        match self.inner {
            RootImpl::V1(_) => Version::V1,
            RootImpl::V2(_) => Version::V2,
        }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// v1: jobcell's parent directory in every hierarchy a job with `limits` gets a cgroup in
    /// (what [`create`](Self::create) will make), opened (and made) now, for a process forked
    /// before its job cgroup exists to move itself in later with [`join_self`]. Empty on v2,
    /// where the job is cloned straight into its cgroup.
    pub fn self_join_dirs(
        &self,
        resources: &Resources,
        options: CgroupOptions,
    ) -> Result<Vec<std::os::fd::OwnedFd>, CgroupError> {
        match &self.inner {
            RootImpl::V1(r) => r.parent_fds(resources, options),
            RootImpl::V2(_) => Ok(Vec::new()),
        }
    }

    /// jobcell's parent directories (one per v1 hierarchy that exists so far, one on v2).
    pub fn parent_paths(&self) -> Vec<PathBuf> {
        match &self.inner {
            RootImpl::V1(r) => r.parent_paths(),
            RootImpl::V2(r) => vec![r.parent_path()],
        }
    }

    /// jobcell's parent directory in the hierarchy every job cgroup is made in (memory on v1,
    /// the one on v2): a sibling of the job cgroups there holds no job process, so membership
    /// of one (which only root can grant) tells jobcell's own processes from jobs'.
    pub fn every_job_parent_path(&self) -> Option<PathBuf> {
        match &self.inner {
            RootImpl::V1(r) => r.memory_parent_path(),
            RootImpl::V2(r) => Some(r.parent_path()),
        }
    }

    /// Create job cgroup `name` and apply `resources`, which
    /// [`Resources::validate`] must have accepted. On any failure nothing is left behind.
    pub fn create(
        &self,
        name: &str,
        resources: &Resources,
        options: CgroupOptions,
    ) -> Result<JobCgroup, CgroupError> {
        check_name(name)?;
        debug_assert_eq!(resources.validate(), Ok(()), "unvalidated resources");
        let mut warnings = Vec::new();
        let inner = match &self.inner {
            RootImpl::V1(r) => JobImpl::V1(r.create(name, resources, options, &mut warnings)?),
            RootImpl::V2(r) => JobImpl::V2(r.create(name, resources, &mut warnings)?),
        };
        Ok(JobCgroup {
            inner,
            name: name.to_string(),
            warnings,
            owner_pid: std::process::id(),
            done: false,
            samples: Samples::default(),
        })
    }

    /// Open an existing job cgroup made by [`create`](Self::create) (e.g. by a supervisor that
    /// outlived the launcher). The returned handle owns it like a created one: dropping it
    /// removes it unless [`JobCgroup::leak`] is called.
    pub fn open(&self, name: &str) -> Result<JobCgroup, CgroupError> {
        check_name(name)?;
        let inner = match &self.inner {
            RootImpl::V1(r) => JobImpl::V1(r.open(name)?),
            RootImpl::V2(r) => JobImpl::V2(r.open(name)?),
        };
        Ok(JobCgroup {
            inner,
            name: name.to_string(),
            warnings: Vec::new(),
            owner_pid: std::process::id(),
            done: false,
            samples: Samples::default(),
        })
    }

    /// Remove jobcell's own parent directories (never an overridden parent) if they are empty;
    /// returns those removed. For tests and uninstall: a concurrent jobcell process recreates
    /// them on its next `create`.
    pub fn remove_parents_if_empty(&self) -> Vec<PathBuf> {
        match &self.inner {
            RootImpl::V1(r) => r.remove_parents_if_empty(),
            RootImpl::V2(r) => r.remove_parent_if_empty(),
        }
    }

    /// Undo what [`detect`](Self::detect) did, as far as nothing else uses it: remove jobcell's
    /// empty parent directories, and on v2, if detect moved this process into
    /// `<parent>/launcher` and no job cgroups remain, disable the controllers it enabled in the
    /// original cgroup and move this process back there. Returns the directories removed.
    /// Call at the very end (tests, `jobcell run` exit); a later detect sets things up again.
    pub fn restore(&self) -> Result<Vec<PathBuf>, CgroupError> {
        match &self.inner {
            RootImpl::V1(r) => Ok(r.remove_parents_if_empty()),
            RootImpl::V2(r) => r.restore(),
        }
    }

    /// For a process that ends while job cgroups outlive it (a daemon stopping with jobs
    /// running): on v2, if [`detect`](Self::detect) moved it into `<parent>/launcher`, move it
    /// into `<parent>/<refuge>`, a leaf of jobcell's that stays busy, and remove the launcher
    /// leaf, which would otherwise stay behind empty. Whether a leaf was removed; v1 has none.
    pub fn leave_launcher_leaf(&self, refuge: &str) -> Result<bool, CgroupError> {
        match &self.inner {
            RootImpl::V1(_) => Ok(false),
            RootImpl::V2(r) => r.leave_launcher_leaf(refuge),
        }
    }

    /// Remove empty leftover job cgroups (`job-<pid>-<suffix>`) whose launcher pid no longer
    /// exists. Returns the names removed. Never touches a non-empty cgroup or a live pid's.
    pub fn gc_stale(&self) -> Result<Vec<String>, CgroupError> {
        let mut out = match &self.inner {
            RootImpl::V1(r) => r.gc_stale()?,
            RootImpl::V2(r) => r.gc_stale()?,
        };
        out.sort();
        out.dedup();
        Ok(out)
    }
}

enum JobImpl {
    V1(v1::Job),
    V2(v2::Job),
}

#[derive(Default)]
struct Samples {
    memory: AtomicU64,
    anon_shmem: AtomicU64,
    swap: AtomicU64,
    pids: AtomicU64,
}

/// One job's cgroup (one directory per v1 hierarchy, or one v2 directory). Dropping it without
/// [`JobCgroup::remove`] or [`JobCgroup::leak`] kills and removes it (best effort, only in the
/// process that created it — never in a forked child).
pub struct JobCgroup {
    inner: JobImpl,
    name: String,
    warnings: Vec<String>,
    owner_pid: u32,
    done: bool,
    samples: Samples,
}

impl std::fmt::Debug for JobCgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobCgroup")
            .field("name", &self.name)
            .field("paths", &self.paths())
            .finish()
    }
}

impl JobCgroup {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> Version {
        match self.inner {
            JobImpl::V1(_) => Version::V1,
            JobImpl::V2(_) => Version::V2,
        }
    }

    /// Every directory of this job cgroup.
    pub fn paths(&self) -> Vec<PathBuf> {
        match &self.inner {
            JobImpl::V1(j) => j.paths(),
            JobImpl::V2(j) => vec![j.path().to_path_buf()],
        }
    }

    /// v2 only: the directory fd to pass as `clone_args.cgroup` with `CLONE_INTO_CGROUP`
    /// (Linux ≥ 5.7). `None` on v1, where the parent must [`attach`](Self::attach) the child.
    pub fn clone_into_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match &self.inner {
            JobImpl::V1(_) => None,
            JobImpl::V2(j) => Some(j.dir_fd()),
        }
    }

    /// Move process `pid` (the whole thread group) into this cgroup: write it to `cgroup.procs`
    /// of every hierarchy. Call before releasing the child so it never runs outside.
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        match &self.inner {
            JobImpl::V1(j) => j.attach(pid),
            JobImpl::V2(j) => j.attach(pid),
        }
    }

    /// Pids currently in the cgroup.
    pub fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        match &self.inner {
            JobImpl::V1(j) => j.procs(),
            JobImpl::V2(j) => j.procs(),
        }
    }

    /// Freeze every process; returns once the kernel reports the cgroup frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match &self.inner {
            JobImpl::V1(j) => j.freeze(),
            JobImpl::V2(j) => j.freeze(),
        }
    }

    /// Resume a frozen cgroup; returns once the kernel reports it thawed.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match &self.inner {
            JobImpl::V1(j) => j.thaw(),
            JobImpl::V2(j) => j.thaw(),
        }
    }

    /// Whether the kernel reports the cgroup frozen (v2 `cgroup.events`, v1 `freezer.state`).
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        match &self.inner {
            JobImpl::V1(j) => j.is_frozen(),
            JobImpl::V2(j) => j.is_frozen(),
        }
    }

    /// SIGKILL everything in the cgroup (also frozen and newly forked processes) and wait until
    /// it is empty.
    pub fn kill(&self) -> Result<(), CgroupError> {
        match &self.inner {
            JobImpl::V1(j) => j.kill(),
            JobImpl::V2(j) => j.kill(),
        }
    }

    /// Take a sample of figures the kernel has no peak for on this system (see [`Source`]).
    /// Cheap; the launcher or supervisor may call it whenever it wakes up.
    pub fn sample(&self) -> Result<(), CgroupError> {
        let s = match &self.inner {
            JobImpl::V1(j) => j.sample()?,
            JobImpl::V2(j) => j.sample()?,
        };
        self.keep_sample(&s);
        Ok(())
    }

    /// What the cgroup holds right now (memory, swap, processes), for a series sampled over a
    /// job's life; also kept as a [`sample`](Self::sample) for the peaks.
    pub fn current(&self) -> Result<Current, CgroupError> {
        let s = match &self.inner {
            JobImpl::V1(j) => j.sample()?,
            JobImpl::V2(j) => j.sample()?,
        };
        self.keep_sample(&s);
        Ok(Current {
            memory: s.memory,
            swap: s.swap,
            pids: s.pids,
        })
    }

    fn keep_sample(&self, s: &Sample) {
        self.samples.memory.fetch_max(s.memory, Ordering::Relaxed);
        self.samples
            .anon_shmem
            .fetch_max(s.anon_shmem, Ordering::Relaxed);
        self.samples.swap.fetch_max(s.swap, Ordering::Relaxed);
        self.samples.pids.fetch_max(s.pids, Ordering::Relaxed);
    }

    /// Usage accounted so far (also takes a [`sample`](Self::sample)).
    pub fn stats(&self) -> Result<Usage, CgroupError> {
        let (mut u, s) = match &self.inner {
            JobImpl::V1(j) => j.stats()?,
            JobImpl::V2(j) => j.stats()?,
        };
        self.keep_sample(&s);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        if u.memory_peak_source == Source::Sampled {
            u.memory_peak = u.memory_peak.max(get(&self.samples.memory));
        }
        if u.swap_peak_source == Source::Sampled {
            u.swap_peak = u.swap_peak.map(|s| s.max(get(&self.samples.swap)));
        }
        if u.pids_peak_source == Source::Sampled {
            u.pids_peak = u.pids_peak.max(get(&self.samples.pids));
        }
        u.anon_shmem_peak_sampled = Some(get(&self.samples.anon_shmem));
        Ok(u)
    }

    /// How many of this cgroup's processes the OOM killer killed: the one figure of
    /// [`stats`](Self::stats) that a launch needs when nobody asked for the usage (one file
    /// instead of eight on the job's exit path). 0 without a memory controller.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        match &self.inner {
            JobImpl::V1(j) => j.oom_kills(),
            JobImpl::V2(j) => j.oom_kills(),
        }
    }

    /// A pollable fd that becomes readable on OOM events of this cgroup.
    pub fn oom_watch(&self) -> Result<OomWatch, CgroupError> {
        match &self.inner {
            JobImpl::V1(j) => j.oom_watch(),
            JobImpl::V2(j) => j.oom_watch(),
        }
    }

    /// Current PSI memory pressure (`memory.pressure`). v2 only: cgroup v1 has no per-cgroup
    /// PSI, so this returns [`CgroupError::Unsupported`] there.
    pub fn memory_pressure(&self) -> Result<Pressure, CgroupError> {
        match &self.inner {
            JobImpl::V1(_) => Err(CgroupError::unsupported(
                "memory pressure (PSI)",
                "cgroup v1 has no per-cgroup memory.pressure",
            )),
            JobImpl::V2(j) => j.memory_pressure(),
        }
    }

    /// A PSI trigger: the returned fd polls `POLLPRI` when tasks were stalled on memory for
    /// `stall` within any `window` (kernel limits: window 500 ms..10 s, stall ≤ window). v2
    /// only; [`CgroupError::Unsupported`] on v1 and where the kernel runs without PSI.
    pub fn pressure_trigger(
        &self,
        kind: PressureKind,
        stall: Duration,
        window: Duration,
    ) -> Result<PressureTrigger, CgroupError> {
        match &self.inner {
            JobImpl::V1(_) => Err(CgroupError::unsupported(
                "memory pressure trigger (PSI)",
                "cgroup v1 has no per-cgroup memory.pressure",
            )),
            JobImpl::V2(j) => j.pressure_trigger(kind, stall, window),
        }
    }

    /// Limits that were requested but cannot be enforced here, one line each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Kill what is left and remove every directory of the cgroup. Read [`stats`](Self::stats)
    /// first: the figures go with the directories.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.done = true;
        self.remove_inner()
    }

    /// Give the cgroup up without removing it (e.g. to hand it to another process);
    /// [`CgroupRoot::gc_stale`] collects it once it is empty and this pid is gone.
    pub fn leak(mut self) {
        self.done = true;
    }

    fn remove_inner(&mut self) -> Result<(), CgroupError> {
        // Usually every process is gone by now (the launcher reaps the job first): then the
        // directories go at once, without first listing each one's processes (on a job's
        // critical path: five v1 hierarchies, 15 system calls). Only a busy cgroup is killed.
        let removed = match &self.inner {
            JobImpl::V1(j) => j.rmdir_if_empty()?,
            JobImpl::V2(j) => j.rmdir_if_empty()?,
        };
        if removed {
            return Ok(());
        }
        if !self.procs()?.is_empty() {
            self.kill()?;
        }
        match &self.inner {
            JobImpl::V1(j) => j.rmdir(),
            JobImpl::V2(j) => j.rmdir(),
        }
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        if !self.done && std::process::id() == self.owner_pid {
            let _ = self.remove_inner();
        }
    }
}

/// What a job cgroup holds at one moment (see [`JobCgroup::current`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Current {
    pub memory: u64,
    /// 0 where the kernel accounts no swap for the cgroup.
    pub swap: u64,
    /// Processes and threads (`pids.current`); 0 without a pids controller.
    pub pids: u64,
}

/// One sample of the figures that may lack a kernel peak.
#[derive(Default)]
pub(crate) struct Sample {
    pub memory: u64,
    pub anon_shmem: u64,
    pub swap: u64,
    pub pids: u64,
}

/// One rmdir, no retry: `Ok(false)` if the cgroup is busy (it still has processes).
pub(crate) fn rmdir_once(parent: &dir::Dir, name: &str) -> Result<bool, CgroupError> {
    match parent.rmdir_child(name) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(false),
        Err(e) => Err(CgroupError::io("remove", &parent.path().join(name), e)),
    }
}

/// rmdir with retries: right after a kill the kernel may still report the cgroup busy.
pub(crate) fn rmdir_retry(parent: &dir::Dir, name: &str) -> Result<(), CgroupError> {
    let mut last = None;
    let ok = wait_until(SETTLE_TIMEOUT, || match parent.rmdir_child(name) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            last = Some(e);
            Ok(false)
        }
        Err(e) => Err(CgroupError::io("rmdir", &parent.path().join(name), e)),
    })?;
    if ok {
        Ok(())
    } else {
        Err(CgroupError::io(
            "rmdir",
            &parent.path().join(name),
            last.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EBUSY)),
        ))
    }
}

/// SIGKILL every listed pid (ESRCH ignored: it already went).
pub(crate) fn kill_pids(pids: &[i32]) {
    for &p in pids {
        if p > 0 {
            // SAFETY: plain kill(2) of a pid read from the job's own cgroup.procs.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(job_name_pid("job-123-abc"), Some(123));
        assert_eq!(job_name_pid("job-123-"), None);
        assert_eq!(job_name_pid("job-x-1"), None);
        assert_eq!(job_name_pid("launcher"), None);
        assert!(check_name("job-1-a.b").is_ok());
        assert!(check_name("../x").is_err());
        assert!(check_name("memory.max").is_err());
        assert!(check_name("").is_err());
        assert!(job_cgroup_name("x").starts_with("job-"));
    }

    #[test]
    fn limits() {
        assert_eq!(cpu_weight_v2(1.0), 100);
        assert_eq!(cpu_weight_v2(0.001), 1);
        assert_eq!(cpu_weight_v2(1000.0), 10000);
        assert_eq!(cpu_shares_v1(3.0), 3072);
        assert_eq!(cpu_shares_v1(0.0001), 2);
        assert_eq!(cpu_quota_us(1.5), 150000);
    }
}
