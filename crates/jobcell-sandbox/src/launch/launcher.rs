//! What the launcher (the parent, on the host) does around the job: resolve, wait, report.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jobcell_cgroup::{CgroupError, JobCgroup, Limits, OomWatch, Usage};
use jobcell_spec::{JobSpec, MemoryPolicy, Resources};

use crate::fsid;
use crate::identity::Identity;
use crate::plan;
use crate::sync::Reader;

use super::os::{crash_point, drain_signals, random_suffix, TERMINATING};
use super::{last_err, LaunchError};

/// Run `open` (of bind sources) with `user`'s filesystem rights, or the launcher's own; a
/// source the user may not open is named with the user.
pub(super) fn opened_as<T>(
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
pub(super) fn final_usage(cg: &JobCgroup, all: bool) -> Result<Usage, CgroupError> {
    if all {
        return cg.stats();
    }
    Ok(Usage {
        oom_kills: cg.oom_kills()?,
        ..Usage::default()
    })
}

/// The cover candidates that are real, world-writable directories here and not private.
pub(super) fn world_writable(private: &[(PathBuf, String)]) -> Vec<PathBuf> {
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
pub(super) fn state_covers(
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

pub(super) fn say_oom(spec: &JobSpec) {
    eprintln!(
        "jobcell: the job went over its memory limit ({}) and was killed by the kernel's OOM killer",
        jobcell_spec::format_size(spec.resources.memory.unwrap_or(0))
    );
}

pub(super) fn explicit_limits(r: &Resources) -> bool {
    r.cpus.is_some()
        || r.cpu_limit.is_some()
        || r.cpuset.is_some()
        || r.memory.is_some()
        || r.swap.is_some()
        || r.io_weight.is_some()
}

/// The spec's resources in the cgroup layer's terms.
pub fn limits(r: &Resources) -> Limits {
    Limits {
        cpus: r.cpus,
        cpu_limit: r.cpu_limit,
        cpuset: r.cpuset.clone(),
        memory: r.memory,
        memory_policy: match r.memory_policy {
            MemoryPolicy::Hard => jobcell_cgroup::MemoryPolicy::Hard,
            MemoryPolicy::Soft => jobcell_cgroup::MemoryPolicy::Soft,
            MemoryPolicy::None => jobcell_cgroup::MemoryPolicy::None,
        },
        swap: r.swap,
        pids: r.pids,
        io_weight: r.io_weight,
        ..Limits::default()
    }
}

pub(super) fn namespaces(flags: libc::c_int) -> Vec<&'static str> {
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
pub(super) struct InitGuard(pub(super) libc::pid_t);

impl Drop for InitGuard {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// The job's OOM watch and what to do when it fires.
pub(super) type OnOom<'a> = (&'a OomWatch, &'a mut dyn FnMut(&OomWatch));

/// How [`wait_loop`] ended.
pub(super) enum Waited {
    /// The init exited and was reaped: its wait status and rusage.
    Reaped(libc::c_int, libc::rusage),
    /// The init reported the job's status, and `on_status` said that is the end.
    Reported,
}

/// The launcher's wait: pass signals on, enforce the grace period, run `on_status` once the
/// init reports the job's end, and reap the init (unless `on_status` returns true).
pub(super) fn wait_loop(
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
