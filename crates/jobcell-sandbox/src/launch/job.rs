//! The job process, between the init's clone and exec: cgroup, seccomp, identity, exec.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

use crate::identity::{self, Identity};
use crate::sync::Stage;
use crate::syscall::Syscall;

use super::init::send_fail;
use super::os::{CpuSplit, Timeline};

/// What the job process needs, prepared before the init's clone so that it only makes system
/// calls.
pub(super) struct JobPlan {
    /// The caller's umask, for the job.
    pub(super) umask: libc::mode_t,
    /// In a user namespace that maps only the caller (rootless).
    pub(super) userns: bool,
    pub(super) cgroupns: bool,
    pub(super) workdir: PathBuf,
    /// Where the job starts when `workdir` is missing in its view.
    pub(super) workdir_fallback: PathBuf,
    pub(super) argv: Vec<CString>,
    pub(super) envp: Vec<CString>,
    pub(super) path_dirs: Vec<Vec<u8>>,
    pub(super) msg_fd: RawFd,
    /// v1: the hierarchies' parent dirs, where the job joins `cgroup_name` (see job_main).
    pub(super) cgroup_join: Vec<RawFd>,
    pub(super) cgroup_name: String,
    /// The caller's CPUs, given back to the job (see CpuSplit).
    pub(super) cpus: Option<CpuSplit>,
    /// The job's seccomp program, built before the clone (the job only makes syscalls).
    pub(super) seccomp: Vec<libc::sock_filter>,
    pub(super) tl: Timeline,
}

/// What [`spawn_job`]'s child needs, passed through clone's argument.
pub(super) struct JobArgs<'a> {
    c: &'a JobPlan,
    user: &'a Identity,
    sys: &'a dyn Syscall,
}

extern "C" fn job_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: spawn_job passes a JobArgs that outlives the child's use of it (the parent is
    // suspended until the child has exec'd or exited).
    let a = unsafe { &*(arg as *const JobArgs) };
    job_main(a.c, a.user, a.sys)
}

pub(super) const JOB_STACK: usize = 256 << 10;

/// Start the job like posix_spawn does: `clone(CLONE_VM | CLONE_VFORK)` on a stack of its own.
/// The init is suspended until the job has exec'd (or failed and exited), so the child runs
/// at once on this CPU, and nothing is copied: fork copied the init's page tables (it is a
/// copy of the whole launcher) and both then took copy-on-write faults, ~0.3 ms from fork to
/// the job's first instruction. The job's side (job_main) only makes system calls, allocates
/// (the suspended parent holds no lock) and ends in execve or _exit; the signal handlers, the
/// descriptors, the cwd and the credentials it changes are its own (no CLONE_SIGHAND,
/// CLONE_FILES, CLONE_FS or CLONE_THREAD).
pub(super) fn spawn_job(
    c: &JobPlan,
    user: &Identity,
    sys: &dyn Syscall,
) -> io::Result<libc::pid_t> {
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

/// The job process: from root in the new namespaces to the user's command.
pub(super) fn job_main(c: &JobPlan, user: &Identity, sys: &dyn Syscall) -> ! {
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
            identity::drop_privileges(sys, user, c.userns)
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
pub(super) fn exec_search(c: &JobPlan) -> io::Error {
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
