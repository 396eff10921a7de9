//! The job's init: PID 1 of its namespaces. It mounts the job's view and sandbox, starts the
//! job when the launcher says "go", then reaps, forwards signals and reports the job's end.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::identity::{self, Identity};
use crate::plan::{self, BindIn, PlanInput};
use crate::sync::{Msg, Stage};
use crate::syscall::Linux;

use super::job::{spawn_job, JobPlan};
use super::launcher::opened_as;
use super::os::{locked_flags, micros, mount_disk, open_path, proc_fd, signal_set, Timeline};
use super::LaunchError;

/// What the init needs to compute the mount plan. The descriptors the plan binds from are
/// opened by the init itself: a bind mount's source must live in the caller's mount namespace.
pub(super) struct PlanShape {
    pub(super) scratch_path: PathBuf,
    pub(super) scratch_base: PathBuf,
    pub(super) private_dirs: Vec<(PathBuf, String)>,
    pub(super) binds: Vec<(PathBuf, PathBuf, bool)>,
    pub(super) image: Option<PathBuf>,
    pub(super) dev: jobcell_spec::DevMode,
    pub(super) userns: bool,
    pub(super) covers: Vec<PathBuf>,
    pub(super) state_covers: Vec<PathBuf>,
    pub(super) binds_as: Option<Identity>,
}

impl PlanShape {
    /// Open what the plan binds from, other than the scratch dir, in the job's new mount
    /// namespace before any mount changes the view: the host's /dev, the image, the bind
    /// sources (as the submitter). The scratch fields are filled by [`Self::open_scratch`].
    /// The descriptors stay open until exec (CLOEXEC).
    pub(super) fn open_sources(&self) -> Result<(PlanInput, Vec<OwnedFd>), LaunchError> {
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
    pub(super) fn open_scratch(
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
pub(super) fn send_open_fail(c: &InitPlan, e: LaunchError) {
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

/// What the init needs, prepared before clone so that it only makes system calls.
pub(super) struct InitPlan {
    pub(super) shape: PlanShape,
    /// The job's user (its groups come with "go").
    pub(super) identity: Identity,
    pub(super) last_cap: u32,
    /// Rootless: the caller's uid and gid, mapped to themselves in the job's user namespace.
    pub(super) userns: Option<(u32, u32)>,
    pub(super) net_none: bool,
    pub(super) msg_fd: RawFd,
    pub(super) go_fd: RawFd,
    /// The loop device holding the size-limited scratch, mounted over the scratch dir.
    pub(super) disk: Option<PathBuf>,
    pub(super) tl: Timeline,
    pub(super) job: JobPlan,
}

pub(super) fn send_fail(fd: RawFd, stage: Stage, what: String, e: &io::Error) {
    Msg::Failed {
        stage,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
        what,
    }
    .send(fd);
}

/// PID 1 of the job. Never returns; a panic cannot unwind into the launcher's copy of the stack.
pub(super) fn init_main(c: &InitPlan) -> ! {
    let code =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init_inner(c))).unwrap_or(125);
    unsafe { libc::_exit(code) }
}

pub(super) fn init_inner(c: &InitPlan) -> i32 {
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
    let job = match spawn_job(&c.job, &user, &sys) {
        Ok(pid) => pid,
        Err(e) => {
            send_fail(c.msg_fd, Stage::Setup, "starting the job".into(), &e);
            return 125;
        }
    };
    for fd in &c.job.cgroup_join {
        unsafe { libc::close(*fd) };
    }
    init_loop(c, job, disk_fd.as_ref().map(|f| f.as_raw_fd()))
}

pub(super) fn setup_namespaces(c: &InitPlan) -> Result<(), (String, io::Error)> {
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

pub(super) fn loopback_up() -> io::Result<()> {
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
pub(super) fn init_loop(c: &InitPlan, job: libc::pid_t, disk_fd: Option<RawFd>) -> i32 {
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

pub(super) const CAP_KILL: u32 = 5;

/// Its bounding set is already empty ([`identity::confine_init`], before "go"); dropping
/// every capability a second time would make 41 more credentials while the job starts.
pub(super) fn keep_only_kill_cap() {
    let kill = 1u32 << CAP_KILL;
    let _ = crate::syscall::capset(kill, kill, 0);
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
}
