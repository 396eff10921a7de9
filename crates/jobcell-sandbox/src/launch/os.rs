//! Operating-system glue of the launch: descriptors, pipes, signals, clone, CPU affinity.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::fsid;
use crate::identity::Identity;
use crate::syscall::{cstr, Syscall};

use super::{last_err, LaunchError, FORWARDED};

pub(super) fn open_path(what: &'static str, p: &Path) -> Result<(OwnedFd, bool), LaunchError> {
    let c = cstr(p).map_err(|source| LaunchError::Path {
        what,
        path: p.into(),
        source,
    })?;
    // SAFETY: `c` is a NUL-terminated path alive for the call.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(LaunchError::Path {
            what,
            path: p.into(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: open returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: stat is plain data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` writable, alive for the call.
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
pub(super) fn locked_flags(fd: RawFd) -> libc::c_ulong {
    // SAFETY: statvfs is plain data; all-zero is a valid value.
    let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `v` is writable and alive for the call; a bad `fd` is an error, not UB.
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

pub(super) fn current_umask() -> libc::mode_t {
    // SAFETY: umask cannot fail and touches no memory; the old mask is put back at once (single-
    // threaded).
    let m = unsafe { libc::umask(0o022) };
    // SAFETY: as above.
    unsafe { libc::umask(m) };
    m
}

pub(super) fn proc_fd(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

pub(super) fn random_suffix() -> String {
    let mut b = [0u8; 4];
    // SAFETY: `b` is a writable buffer of b.len() bytes; a short read leaves zeros, which only
    // makes the name less random.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The launcher and the job's init work at the same time: the cgroup and the group lookup
/// here while the init makes its mounts, then the clean-up here while the init exits. The
/// kernel starts a child on its parent's CPU and pulls a pipe's reader to the writer's, which
/// would run the two one after the other; so for the job's set-up and tear-down each gets
/// CPUs of its own. Best effort: a single CPU, or a cpuset that refuses a mask, changes
/// nothing. The job gets all the caller's CPUs back before exec, and the launcher when done.
#[derive(Clone, Copy)]
pub(super) struct CpuSplit {
    all: libc::cpu_set_t,
    here: libc::cpu_set_t,
    others: libc::cpu_set_t,
}

impl CpuSplit {
    pub(super) fn new() -> Option<Self> {
        // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
        let mut all: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: `all` and `here` are valid cpu_set_t values of `size` bytes; sched_getcpu takes
        // nothing; the CPU_* macros index within the set (cpu < CPU_SETSIZE, checked by CPU_ISSET
        // on `all`).
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
    pub(super) fn apply(self, init: libc::pid_t) -> RestoreCpus {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: the sets are valid cpu_set_t values of `size` bytes; `init` is our child. A
        // refused mask is harmless (best effort).
        unsafe {
            libc::sched_setaffinity(init, size, &self.others);
            libc::sched_setaffinity(0, size, &self.here);
        }
        RestoreCpus(self)
    }

    /// Give this process all the caller's CPUs again.
    pub(super) fn restore(&self) {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: `all` is a valid cpu_set_t of `size` bytes.
        unsafe { libc::sched_setaffinity(0, size, &self.all) };
    }
}

/// Gives the launcher its CPUs back however launch_task returns.
pub(super) struct RestoreCpus(CpuSplit);

impl Drop for RestoreCpus {
    fn drop(&mut self) {
        self.0.restore();
    }
}

/// `JOBCELL_TIMING=1` prints when each launcher phase ended, for benchmarking (the init's and
/// the job's phases too: the clock is the same monotonic one in every process).
#[derive(Clone, Copy)]
pub(super) struct Timeline {
    t0: Instant,
    on: bool,
}

impl Timeline {
    pub(super) fn new() -> Self {
        Timeline {
            t0: Instant::now(),
            on: std::env::var_os("JOBCELL_TIMING").is_some(),
        }
    }
    pub(super) fn mark(&self, what: &str) {
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

/// Whether the other end of the pipe `fd` reads from has hung up (its writer is gone).
pub(super) fn hung_up(fd: RawFd) -> bool {
    let mut hup = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout.
    (unsafe { libc::poll(&mut hup, 1, 0) }) > 0 && hup.revents & libc::POLLHUP != 0
}

/// Whether `pid` (our child) has exited, leaving it to be reaped by the wait.
pub(super) fn exited(pid: libc::pid_t) -> bool {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is writable and alive for the call; WNOWAIT leaves the child to be reaped.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: waitid filled `info` for a child event (r == 0), so si_pid is the field it set.
    r == 0 && unsafe { info.si_pid() } == pid
}

/// The two pipes between the launcher and the init: the init's messages up; "S" and "go"
/// down.
pub(super) struct Channels {
    pub(super) msg_r: OwnedFd,
    pub(super) msg_w: OwnedFd,
    pub(super) go_r: OwnedFd,
    pub(super) go_w: OwnedFd,
}

impl Channels {
    pub(super) fn open() -> Result<Self, LaunchError> {
        let (msg_r, msg_w) = pipe()?;
        let (go_r, go_w) = pipe()?;
        Ok(Channels {
            msg_r,
            msg_w,
            go_r,
            go_w,
        })
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return last_err("pipe");
    }
    // SAFETY: pipe2 succeeded: both are new descriptors nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub(super) fn set_nonblock(fd: RawFd) {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it and sigaddset takes valid signal
    // numbers.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

pub(super) fn signal_set() -> libc::sigset_t {
    // SAFETY: `fd` is a descriptor the caller owns; F_GETFL/F_SETFL take and return plain flags.
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

/// Signals that end a job (after the grace period) rather than only being passed on.
pub(super) const TERMINATING: [libc::c_int; 4] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// The launcher's signals, blocked and readable from `fd` for as long as this lives; the
/// previous mask comes back on drop. Blocked before the clone, the child inherits the mask,
/// so nothing is lost between clone and the init's first wait.
pub(super) struct SignalMask {
    pub(super) fd: OwnedFd,
    pub(super) old: libc::sigset_t,
}

impl SignalMask {
    pub(super) fn block() -> Result<Self, LaunchError> {
        // SAFETY: sigset_t is plain data; all-zero is a valid value, overwritten by sigprocmask.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        let set = signal_set();
        // SAFETY: `set` is a valid set and `old` writable, both alive for the call.
        if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) } < 0 {
            return last_err("sigprocmask");
        }
        // SAFETY: `set` is a valid signal set; -1 asks for a new descriptor.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            return last_err("signalfd");
        }
        Ok(SignalMask {
            // SAFETY: signalfd returned a new descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            old,
        })
    }
}

impl Drop for SignalMask {
    fn drop(&mut self) {
        // SAFETY: `old` is the mask sigprocmask saved in block().
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// Read every pending signal from a non-blocking signalfd.
pub(super) fn drain_signals(fd: &OwnedFd) -> Vec<libc::c_int> {
    let mut out = Vec::new();
    loop {
        // SAFETY: signalfd_siginfo is plain data; all-zero is a valid value.
        let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let sz = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `si` is a writable buffer of exactly `sz` bytes, alive for the call.
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
pub(super) fn clone_job(
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
        // SAFETY: clone3 reads `args` (alive for the call, its size passed along); with no stack it
        // returns twice like fork, and the child continues on a copy of this stack in a single-
        // threaded process.
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
    // SAFETY: clone with a null stack is fork with namespace flags: the child continues on a copy
    // of this (single-threaded) process's memory; the tid pointers are unused (no CLONE_*TID
    // flags).
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
pub(super) fn crash_point(_point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("JOBCELL_CRASH_AT").is_some_and(|v| v == _point) {
        // SAFETY: kill on our own pid takes plain integers.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

pub(super) fn micros(t: libc::timeval) -> u64 {
    t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64
}

/// Mount the size-limited scratch over the scratch dir, in this (the job's) mount namespace
/// only, with the dir's owner and mode; returns its root for measuring at the end.
pub(super) fn mount_disk(
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
    // SAFETY: stat is plain data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `host` is open and `st` writable, alive for the call.
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
    // SAFETY: `p` is a NUL-terminated path alive for the call.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(fail("opening the --disk filesystem at"));
    }
    // SAFETY: open returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `fd` is open for the whole block; lost+found is a NUL-terminated literal.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::Recorder;

    #[test]
    fn a_disk_scratch_is_mounted_only_once_the_tree_no_longer_propagates_to_the_host() {
        let dir = std::env::temp_dir().join(format!("jobcell-mount-disk-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let dev = Path::new("/dev/loop-test");
        let rec = Recorder::default();
        let mounted = mount_disk(&dir, dev, &rec).map(|fd| (locked_flags(fd.as_raw_fd()), fd));
        let slave_failed = {
            let rec = Recorder {
                fail_on: Some("mount - / ".into()),
                ..Default::default()
            };
            let e = mount_disk(&dir, dev, &rec).unwrap_err();
            (e.0, rec.lines())
        };
        std::fs::remove_dir(&dir).unwrap();

        let (locked, _fd) = mounted.unwrap();
        // noexec only where the dir's own filesystem has it (a bind could not clear it).
        let flags = libc::MS_NOSUID | libc::MS_NODEV | (locked & libc::MS_NOEXEC);
        assert_eq!(
            rec.lines(),
            [
                "mount - / - rec|slave -".to_string(),
                format!(
                    "mount /dev/loop-test {} ext4 {} noinit_itable",
                    dir.display(),
                    crate::syscall::mount_flags_str(flags)
                ),
            ]
        );
        // Without the slave tree nothing is mounted: it could show on the host.
        assert_eq!(
            slave_failed.0,
            "making the mount tree a slave of the host's"
        );
        assert_eq!(slave_failed.1, ["mount - / - rec|slave -"]);
    }
}
