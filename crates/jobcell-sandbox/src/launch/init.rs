//! The job's init: PID 1 of its namespaces. It mounts the job's view and sandbox, starts the
//! job when the launcher says "go", then reaps, forwards signals and reports the job's end.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::identity::{self, Identity};
use crate::plan::{self, BindIn, PlanInput};
use crate::sync::{send_fail, Msg, Stage};
use crate::syscall::{Linux, Syscall};

use super::job::{spawn_job, JobPlan};
use super::os::{
    hung_up, locked_flags, micros, mount_disk, open_path, opened_as, proc_fd, signal_set, Timeline,
};
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

/// Why the init gives up before the job starts.
#[derive(Debug, Error)]
enum InitError {
    #[error("{0}: {1}")]
    Step(String, io::Error),
    /// Opening a mount source failed (named as the launcher names it).
    #[error(transparent)]
    Open(LaunchError),
    /// The launcher died or gave up: nobody to tell.
    #[error("the launcher is gone")]
    LauncherGone,
}

impl From<(String, io::Error)> for InitError {
    fn from((what, e): (String, io::Error)) -> Self {
        InitError::Step(what, e)
    }
}

impl InitError {
    /// Tell the launcher why the job never started.
    fn send(self, msg_fd: RawFd) {
        let (what, e) = match self {
            InitError::Step(what, e) => (what, e),
            InitError::Open(LaunchError::Path { what, path, source }) => {
                (format!("{what} '{}'", path.display()), source)
            }
            InitError::Open(LaunchError::BindSource {
                what,
                path,
                user,
                source,
            }) => (
                format!("{what} '{}' (opened as {user})", path.display()),
                source,
            ),
            InitError::Open(e) => (e.to_string(), io::Error::from_raw_os_error(libc::EIO)),
            InitError::LauncherGone => return,
        };
        send_fail(msg_fd, Stage::Setup, what, &e);
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

/// PID 1 of the job. Never returns; a panic cannot unwind into the launcher's copy of the stack.
pub(super) fn init_main(c: &InitPlan) -> ! {
    let code =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init_inner(c))).unwrap_or(125);
    // SAFETY: _exit ends the init without unwinding or running the launcher's copied destructors
    // (its exit handlers, buffered state); nothing borrowed outlives it.
    unsafe { libc::_exit(code) }
}

/// The init's steps, in order.
fn init_inner(c: &InitPlan) -> i32 {
    let sys = Linux;
    let run = || {
        watch_launcher(c, &sys)?;
        c.tl.mark("init: started");
        confine(c, &sys)?;
        let mounted = mount_sandbox(c, &sys)?;
        let job = start_job(c, &sys)?;
        Ok::<_, InitError>(init_loop(c, &sys, job, mounted.disk_fd()))
    };
    run().unwrap_or_else(|e| {
        e.send(c.msg_fd);
        125
    })
}

/// The launcher gone means nobody would clean up: take the whole job down with it.
fn watch_launcher(c: &InitPlan, sys: &dyn Syscall) -> Result<(), InitError> {
    let _ = sys.set_pdeathsig(libc::SIGKILL);
    // A launcher that died before that prctl sends no signal (and getppid() is 0 across the
    // pid namespace). It holds the go pipe's write end for its whole life, so a hang-up there
    // means it is gone, even if its "go" is already in the pipe.
    if hung_up(c.go_fd) {
        return Err(InitError::LauncherGone);
    }
    Ok(())
}

/// The job's namespaces made usable (uid maps, loopback) and what the job inherits (the
/// bounding set), while the launcher makes scratch. The mounts are made before "go", while
/// the launcher makes the v1 cgroup: nothing here depends on it, and nothing of the job runs
/// before "go".
fn confine(c: &InitPlan, sys: &dyn Syscall) -> Result<(), InitError> {
    // Mount points and device files get exactly the modes the plan says, whatever the
    // caller's umask (the job gets the caller's back before exec).
    sys.umask(0o022);
    setup_namespaces(c, sys)?;
    // Neither limits what the init does itself (its own capabilities stay; no mount uses a
    // keyring).
    identity::confine_init(sys, c.last_cap)
        .map_err(|e| InitError::Step("confining the job's init".into(), e))
}

/// The job's mounts: kept open until exec (CLOEXEC), like the init's other descriptors.
struct Mounted {
    /// The root of a --disk filesystem, measured when the job ends.
    disk: Option<OwnedFd>,
    _sources: Vec<OwnedFd>,
}

impl Mounted {
    fn disk_fd(&self) -> Option<RawFd> {
        self.disk.as_ref().map(|f| f.as_raw_fd())
    }
}

/// The view (slave tree, image, /dev) while the launcher makes the scratch dir; the
/// sandbox's mounts (scratch, private dirs, covers, binds, /proc) once it is there ("S").
fn mount_sandbox(c: &InitPlan, sys: &dyn Syscall) -> Result<Mounted, InitError> {
    let (mut input, mut fds) = c.shape.open_sources().map_err(InitError::Open)?;
    let view = plan::view(&input);
    // A --disk filesystem is mounted from its loop device's path under the host's /dev.
    let view_first = c.disk.is_none() && plan::view_first(&input, &view);
    if view_first {
        plan::apply(&view, sys).map_err(|e| InitError::Step(plan::describe(&e.step), e.error))?;
        c.tl.mark("init: view mounted");
    }
    // The launcher gave up or died before the scratch dir was there: nothing to say.
    crate::sync::read_scratch_ready(c.go_fd).map_err(|_| InitError::LauncherGone)?;
    let disk = match &c.disk {
        Some(dev) => Some(mount_disk(&c.shape.scratch_path, dev, sys)?),
        None => None,
    };
    c.shape
        .open_scratch(&mut input, &mut fds)
        .map_err(InitError::Open)?;
    let steps = plan::plan(&input);
    let rest = match view_first {
        // plan() starts with view(): what is left is the sandbox.
        true if steps.starts_with(&view) => &steps[view.len()..],
        true => {
            return Err(InitError::Step(
                "the mount plan does not start with the view already mounted".into(),
                io::Error::from_raw_os_error(libc::EIO),
            ))
        }
        false => &steps[..],
    };
    plan::apply(rest, sys).map_err(|e| InitError::Step(plan::describe(&e.step), e.error))?;
    c.tl.mark("init: mounts done");
    Ok(Mounted {
        disk,
        _sources: fds,
    })
}

/// Wait for "go" with the job's groups, then start the job.
fn start_job(c: &InitPlan, sys: &dyn Syscall) -> Result<libc::pid_t, InitError> {
    // The launcher died or gave up before releasing us: an error here.
    let groups = crate::sync::read_go(c.go_fd).map_err(|_| InitError::LauncherGone)?;
    sys.close(c.go_fd);
    let user = Identity {
        groups,
        ..c.identity.clone()
    };
    c.tl.mark("init: released, forking the job");
    let job =
        spawn_job(&c.job, &user, sys).map_err(|e| InitError::Step("starting the job".into(), e))?;
    for fd in &c.job.cgroup_join {
        sys.close(*fd);
    }
    Ok(job)
}

fn setup_namespaces(c: &InitPlan, sys: &dyn Syscall) -> Result<(), InitError> {
    if let Some((uid, gid)) = c.userns {
        // Map only the caller to itself: inside, the job is who it was outside.
        let w = |file: &str, text: String| {
            sys.write_file(Path::new(file), &text)
                .map_err(|e| InitError::Step(format!("writing {file}"), e))
        };
        w("/proc/self/setgroups", "deny".into())?;
        w("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        w("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    }
    if c.net_none {
        sys.loopback_up()
            .map_err(|e| InitError::Step("bringing up the loopback interface".into(), e))?;
    }
    Ok(())
}

/// Forward signals to the job, reap every orphan, and report the job's end.
fn init_loop(c: &InitPlan, sys: &dyn Syscall, job: libc::pid_t, disk_fd: Option<RawFd>) -> i32 {
    // The init keeps only CAP_KILL (to signal the job's uid) for the rest of its life.
    keep_only_kill_cap(sys);
    let set = signal_set();
    loop {
        // SAFETY: siginfo_t is plain data; all-zero is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid signal set and `info` a writable siginfo_t, both alive for the
        // call.
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig < 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            // SAFETY: kill takes plain integers; `job` is our child, not yet reaped, so its pid is
            // not reused.
            unsafe { libc::kill(job, sig) };
            continue;
        }
        loop {
            let mut status = 0;
            // SAFETY: `status` is a writable int alive for the call.
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
                // SAFETY: kill(-1) as PID 1 signals only the processes of the job's own pid
                // namespace.
                unsafe { libc::kill(-1, libc::SIGKILL) };
                // SAFETY: a null status pointer is allowed: the statuses are not wanted.
                while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::__WALL) } > 0
                    || io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
                {
                }
                if let Some((used, total, full)) = disk_fd.and_then(crate::disk::usage) {
                    Msg::Disk { used, total, full }.send(c.msg_fd);
                }
                // Every process of the job is reaped: its CPU is all in our children's usage.
                // Said now, so that the launcher need not wait for this process's own exit.
                // SAFETY: rusage is plain data; all-zero is a valid value.
                let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
                // SAFETY: `ru` is a writable rusage alive for the call.
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
fn keep_only_kill_cap(sys: &dyn Syscall) {
    let kill = 1u32 << CAP_KILL;
    let _ = sys.set_caps(kill, kill, 0);
    let _ = sys.set_no_new_privs();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::Recorder;

    fn plan(userns: Option<(u32, u32)>, net_none: bool) -> InitPlan {
        InitPlan {
            shape: PlanShape {
                scratch_path: "/scratch/job".into(),
                scratch_base: "/scratch".into(),
                private_dirs: Vec::new(),
                binds: Vec::new(),
                image: None,
                dev: jobcell_spec::DevMode::Minimal,
                userns: userns.is_some(),
                covers: Vec::new(),
                state_covers: Vec::new(),
                binds_as: None,
            },
            identity: Identity {
                name: "u".into(),
                uid: 1000,
                gid: 100,
                groups: Vec::new(),
            },
            last_cap: 2,
            userns,
            net_none,
            msg_fd: -1,
            go_fd: -1,
            disk: None,
            tl: Timeline::new(),
            job: super::super::job::tests::plan(true, userns.is_some()),
        }
    }

    #[test]
    fn the_init_maps_its_user_and_brings_up_loopback_before_emptying_the_bounding_set() {
        let rec = Recorder::default();
        confine(&plan(Some((1000, 100)), true), &rec).unwrap();
        assert_eq!(
            rec.lines(),
            [
                "umask 22",
                // setgroups is denied before the gid map: the kernel requires it.
                "write /proc/self/setgroups deny",
                "write /proc/self/uid_map 1000 1000 1",
                "write /proc/self/gid_map 100 100 1",
                "loopback_up",
                "capbset_drop 0",
                "capbset_drop 1",
                "capbset_drop 2",
            ]
        );

        // As root with the host's network: no maps, no loopback to bring up.
        let rec = Recorder::default();
        confine(&plan(None, false), &rec).unwrap();
        assert_eq!(
            rec.lines(),
            [
                "umask 22",
                "capbset_drop 0",
                "capbset_drop 1",
                "capbset_drop 2"
            ]
        );
    }

    #[test]
    fn an_init_that_cannot_bring_up_loopback_says_so_and_confines_nothing() {
        let rec = Recorder {
            fail_on: Some("loopback_up".into()),
            ..Default::default()
        };
        let e = confine(&plan(None, true), &rec).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bringing up the loopback interface: Operation not permitted (os error 1)"
        );
        assert_eq!(rec.lines(), ["umask 22", "loopback_up"]);
    }

    #[test]
    fn the_init_keeps_only_the_kill_capability_once_the_job_runs() {
        let rec = Recorder::default();
        keep_only_kill_cap(&rec);
        assert_eq!(rec.lines(), ["set_caps 0x20 0x20 0x0", "no_new_privs"]);
    }
}
