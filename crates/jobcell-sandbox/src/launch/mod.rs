//! The launch sequence, by process: the launcher on the host (`launcher.rs`), the job's init,
//! PID 1 of its new namespaces (`init.rs`), and the job between the init's clone and exec
//! (`job.rs`); `os.rs` holds the glue they share. Single-threaded: every clone, unshare and
//! mount of a job happens here, in this order ([`launch_task`] is the list of the steps).
//!
//! ```text
//! launcher (host)                          init = PID 1 of the job (root, new namespaces)
//!  1. resolve user, image, bind sources
//!  2. (v2) create the cgroup; (--disk) scratch and its filesystem
//!  3. block forwarded signals; clone  ───►  uid maps (rootless); empty bounding set
//!  4. scratch, "S" ─────────────────────►  mount plan;
//!     (v1) cgroup; groups; "go" ────────►  wait for "go"
//!                                            5. start the job: (v1) join the cgroup, seccomp,
//!                                               setsid, drop privileges, chdir, exec
//!                                            6. reap orphans, forward signals, and on the
//!  7. wait: forward signals, grace; on ◄─────   job's exit kill what is left, report its
//!     the status: (v1) usage (only the          children's rusage and the status, and exit
//!     OOM count without a report) and
//!     cgroup; scratch; done, the init still
//!     exiting (v2, --disk: reap it first)
//!  8. (v2) usage, remove cgroup; report
//! ```

use std::io;
use std::path::PathBuf;

use jobcell_cgroup::{CgroupError, CgroupRoot};
use jobcell_spec::JobSpec;
use thiserror::Error;

use crate::disk::{DiskError, ScratchDisk};
use crate::fsid::FsIdError;
use crate::identity::{Identity, IdentityError};
pub use crate::report::JobExit;
use crate::report::Report;
use crate::scratch::ScratchError;
use crate::syscall::{Linux, Syscall};

mod init;
mod job;
mod launcher;
mod os;

use os::{Channels, SignalMask, Timeline};

pub use launcher::{job_env, job_name};

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
    /// Called with the job's cgroup while the job runs and once at its end (a daemon's
    /// supervisor keeps the job's usage over time); `None` (`jobcell run`) adds no wake-up.
    pub sampler: Option<&'a dyn UsageSampler>,
}

/// Reads a running job's cgroup every [`interval`](Self::interval) from the launcher's own
/// wait loop (no thread: the launcher stays single-threaded), and once more right before the
/// cgroup is removed, so the last sample holds the job's final figures.
pub trait UsageSampler {
    fn interval(&self) -> std::time::Duration;
    /// `last`: the job has ended; the cgroup is about to go.
    fn sample(&self, cgroup: &jobcell_cgroup::JobCgroup, last: bool);
}

/// What a rootless job without a cgroup of its own (none is delegated to its caller) is told
/// about the limits it asked for, if any: they are not enforced.
pub fn unenforced_limits_warning(r: &jobcell_spec::Resources) -> Option<String> {
    if !r.has_explicit_limits() {
        return None;
    }
    Some(format!(
        "{} not enforced: running rootless with no cgroup of jobcell's own (none is delegated to this user), so limits are the enclosing scheduler's; usage is the kernel's accounting of the job's processes",
        r.explicit_limit_flags().join(", ")
    ))
}

/// When jobcell runs as one task of an enclosing scheduler (the SPANK plugin execs it in place
/// of a Slurm task): the job keeps the task's working directory, and its private dirs come from
/// a per-job dir the scheduler side made and removes, shared by the job's tasks and steps.
#[derive(Debug, Clone, Default)]
pub struct SchedulerTask {
    /// Where the job starts; if it does not exist in the job's view (an image), scratch.
    pub workdir: Option<PathBuf>,
    /// `workdir` was chosen by the job's submitter (`--chdir`, initialdir): a job that cannot
    /// enter it fails instead of starting in scratch.
    pub workdir_required: bool,
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
        // SAFETY: a null status pointer is allowed; the pid is our child, reaped only here.
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

/// [`launch`], placed in a scheduler's task (see [`SchedulerTask`]). The launch's steps, in
/// order; each takes what the one before made (see the module's diagram).
pub fn launch_task(l: &Launch, task: &SchedulerTask) -> Result<Outcome, LaunchError> {
    let tl = Timeline::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let rootless = unsafe { libc::geteuid() } != 0;
    // Signals are blocked before anything is created: a SIGTERM during setup is read from the
    // signalfd (and aborts the launch, cleaning up) instead of killing jobcell half-way.
    let signals = SignalMask::block()?;
    // 1.
    let resolved = launcher::resolve(l, rootless)?;
    tl.mark("resolved user and paths");
    // 2.
    let mut host = launcher::prepare(l, task, resolved)?;
    // 3.
    let channels = Channels::open()?;
    let early_signals = launcher::signals_before_clone(&signals)?;
    let plan = launcher::child_plan(l, task, &host, &channels, tl)?;
    let init = launcher::clone_init(&host, &plan, channels, tl)?;
    // 4. (the init: 5., 6.)
    let mut running = launcher::release(l, &mut host, init, early_signals, tl)?;
    // 7.
    let ended = launcher::wait_for_job(l, &signals, &mut host, &mut running, tl)?;
    // 8.
    launcher::finish(l, task, &mut host, running, ended, tl)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that exits after `ms` milliseconds (only async-signal-safe calls after fork).
    fn child_exiting_after(ms: u64) -> libc::pid_t {
        // SAFETY: the test process forks a child that makes only async-signal-safe calls before
        // _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: (ms * 1_000_000) as libc::c_long,
            };
            // SAFETY: nanosleep reads a valid timespec; _exit ends the child without running the
            // parent's destructors.
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
            // SAFETY: a null status pointer is allowed.
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
        // SAFETY: a null status pointer is allowed.
        assert_eq!(unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) }, pid);
    }
}
