//! The job process, between the init's clone and exec: cgroup, seccomp, identity, exec.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

use thiserror::Error;

use crate::identity::{self, Identity};
use crate::sync::Stage;
use crate::syscall::Syscall;

use super::os::{CpuSplit, Timeline};
use crate::sync::send_fail;

/// What the job process needs, prepared before the init's clone so that it only makes system
/// calls.
pub(super) struct JobPlan {
    /// The caller's umask, for the job.
    pub(super) umask: libc::mode_t,
    /// In a user namespace that maps only the caller (rootless).
    pub(super) userns: bool,
    pub(super) cgroupns: bool,
    pub(super) workdir: PathBuf,
    /// Where the job starts when `workdir` is missing in its view; `None`: the job fails
    /// instead (a directory its submitter chose must not silently become another).
    pub(super) workdir_fallback: Option<PathBuf>,
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
struct JobArgs<'a> {
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

const JOB_STACK: usize = 256 << 10;

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
    // SAFETY: an anonymous private mapping at an address the kernel picks: it aliases nothing.
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
    // SAFETY: `stack` is the start of the JOB_STACK-byte mapping just made, and page-aligned.
    unsafe { libc::mprotect(stack, 4096, libc::PROT_NONE) };
    let args = JobArgs { c, user, sys };
    // SAFETY: clone with CLONE_VM | CLONE_VFORK runs job_entry on the fresh stack (its top, the
    // stack grows down) and suspends this thread until the child execs or exits, so `args` and the
    // stack outlive the child's use of them; the child touches no lock (see above).
    let pid = unsafe {
        libc::clone(
            job_entry,
            stack.cast::<u8>().add(JOB_STACK).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const JobArgs as *mut libc::c_void,
        )
    };
    let e = io::Error::last_os_error();
    // SAFETY: the child has exec'd or exited (CLONE_VFORK): nothing uses the stack any more.
    unsafe { libc::munmap(stack, JOB_STACK) };
    if pid < 0 {
        return Err(e);
    }
    Ok(pid)
}

/// Why the job process gives up before exec; told to the launcher by stage.
#[derive(Debug, Error)]
enum JobError {
    /// Still root in the job's namespaces: cgroup, cgroup namespace, seccomp.
    #[error("{0}: {1}")]
    Setup(String, io::Error),
    /// Becoming the job's user, in its working directory.
    #[error("{0}: {1}")]
    Identity(String, io::Error),
}

/// The job process: from root in the new namespaces to the user's command.
fn job_main(c: &JobPlan, user: &Identity, sys: &dyn Syscall) -> ! {
    if let Err(e) = become_job(c, user, sys) {
        let (stage, what, e) = match e {
            JobError::Setup(what, e) => (Stage::Setup, what, e),
            JobError::Identity(what, e) => (Stage::Identity, what, e),
        };
        send_fail(c.msg_fd, stage, what, &e);
        // SAFETY: _exit ends this process at once; the init's memory it shares is untouched.
        unsafe { libc::_exit(125) };
    }
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
    // SAFETY: as above.
    unsafe { libc::_exit(code) }
}

/// The job's steps before exec, in order: the process state it must not inherit, its cgroup
/// and cgroup namespace, the seccomp filter, a new session, the user's identity, the working
/// directory, and no descriptor but stdin, stdout and stderr.
fn become_job(c: &JobPlan, user: &Identity, sys: &dyn Syscall) -> Result<(), JobError> {
    sys.umask(c.umask);
    sys.reset_signals();
    let _ = sys.set_pdeathsig(0);
    if let Some(cpus) = &c.cpus {
        cpus.restore();
    }
    // v1: the job moves itself into its cgroup (made by now) before anything of the user's
    // runs. The init stays out of it, so that the cgroup is empty, and can be removed while
    // the init still exits, as soon as the init has reaped the job's last process (an exiting
    // process keeps its cgroup busy until it is reaped). Then its cgroup namespace, rooted
    // there.
    if !c.cgroup_join.is_empty() {
        // Joined nowhere: the cgroup is gone.
        match jobcell_cgroup::join_self(&c.cgroup_join, &c.cgroup_name) {
            Ok(0) => Err(io::Error::from_raw_os_error(libc::ENOENT)),
            r => r.map(|_| ()),
        }
        .map_err(|e| JobError::Setup(format!("joining the job's cgroup {}", c.cgroup_name), e))?;
    }
    if c.cgroupns {
        sys.unshare(libc::CLONE_NEWCGROUP)
            .map_err(|e| JobError::Setup("creating the cgroup namespace".into(), e))?;
    }
    // Only now: the filter refuses new cgroup namespaces (still root, so no_new_privs is
    // not needed yet; it passes to every process of the job and cannot be undone).
    sys.seccomp(&c.seccomp)
        .map_err(|e| JobError::Setup("installing the job's seccomp filter".into(), e))?;
    // A new session: no controlling terminal, so no TIOCSTI into the caller's shell.
    sys.setsid()
        .map_err(|e| JobError::Identity("setsid".into(), e))?;
    identity::drop_privileges(sys, user, c.userns).map_err(|e| {
        JobError::Identity(format!("becoming user {} ({})", user.name, user.uid), e)
    })?;
    sys.chdir(&c.workdir)
        .or_else(|e| match &c.workdir_fallback {
            Some(f) => sys.chdir(f),
            None => Err(e),
        })
        .map_err(|e| JobError::Identity(format!("entering {}", c.workdir.display()), e))?;
    // Nothing of the launcher's reaches the job but stdin, stdout and stderr.
    let _ = sys.cloexec_from(3);
    Ok(())
}

/// execvpe with the job's own PATH (glibc's looks at the launcher's environment).
fn exec_search(c: &JobPlan) -> io::Error {
    let mut argv: Vec<*const libc::c_char> = c.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = c.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let cmd = c.argv[0].as_bytes();
    if cmd.contains(&b'/') {
        // SAFETY: argv and envp are null-terminated arrays of pointers into CStrings that outlive
        // the call.
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
        // SAFETY: as above; `full` is a CString alive for the call.
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
pub(super) mod tests {
    use super::*;
    use crate::syscall::Recorder;

    /// A job plan that touches nothing of the host: no cgroup to join, no CPUs to restore.
    pub(in crate::launch) fn plan(cgroupns: bool, userns: bool) -> JobPlan {
        JobPlan {
            umask: 0o027,
            userns,
            cgroupns,
            workdir: "/missing".into(),
            workdir_fallback: Some("/scratch/job".into()),
            argv: vec![c"/bin/true".into()],
            envp: Vec::new(),
            path_dirs: Vec::new(),
            msg_fd: -1,
            cgroup_join: Vec::new(),
            cgroup_name: "job-1-00".into(),
            cpus: None,
            seccomp: vec![
                libc::sock_filter {
                    code: 0,
                    jt: 0,
                    jf: 0,
                    k: 0,
                };
                3
            ],
            tl: Timeline::new(),
        }
    }

    fn user() -> Identity {
        Identity {
            name: "u".into(),
            uid: 1000,
            gid: 100,
            groups: vec![100, 27],
        }
    }

    #[test]
    fn the_job_confines_itself_then_becomes_the_user() {
        let rec = Recorder {
            fail_on: Some("chdir /missing".into()),
            ..Default::default()
        };
        become_job(&plan(true, false), &user(), &rec).unwrap();
        assert_eq!(
            rec.lines(),
            [
                "umask 27",
                "reset_signals",
                "pdeathsig 0",
                // Its own cgroup namespace while still root, then the filter that refuses
                // any further one: the job can never make a namespace of its own.
                &format!("unshare {:#x}", libc::CLONE_NEWCGROUP),
                "seccomp 3 insns",
                "setsid",
                "setgroups [100, 27]",
                "setresgid 100",
                "clear_ambient",
                "setresuid 1000",
                "clear_caps",
                "no_new_privs",
                // The workdir is missing in the job's view: scratch instead.
                "chdir /missing",
                "chdir /scratch/job",
                "cloexec_from 3",
            ]
        );
    }

    #[test]
    fn a_failed_job_step_stops_before_anything_of_the_user_runs() {
        // Rootless: no groups to set, no cgroup namespace of its own.
        let rec = Recorder {
            fail_on: Some("seccomp".into()),
            ..Default::default()
        };
        let e = become_job(&plan(false, true), &user(), &rec).unwrap_err();
        assert!(
            matches!(&e, JobError::Setup(what, _) if what == "installing the job's seccomp filter"),
            "{e}"
        );
        assert_eq!(
            rec.lines(),
            [
                "umask 27",
                "reset_signals",
                "pdeathsig 0",
                "seccomp 3 insns"
            ]
        );

        let rec = Recorder {
            fail_on: Some("setresuid".into()),
            ..Default::default()
        };
        let e = become_job(&plan(false, true), &user(), &rec).unwrap_err();
        assert_eq!(
            e.to_string(),
            "becoming user u (1000): Operation not permitted (os error 1)"
        );
        assert_eq!(rec.lines().last().unwrap(), "setresuid 1000");
        assert!(!rec.lines().iter().any(|l| l.starts_with("chdir")));
    }
}
