//! The job's filesystem view as an ordered list of steps.
//!
//! [`plan`] is a pure function of the job's inputs, so the order and flags of every mount can be
//! tested without privileges; [`apply`] runs the steps through a [`Syscall`].

use std::io;
use std::path::{Path, PathBuf};

use jobcell_spec::DevMode;

use crate::syscall::{under, Syscall};

const MS_HARDEN: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Device nodes of the minimal /dev, bound from the host's.
pub const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Make the job's copy of the host tree a slave of the host's: the host's mounts and
    /// unmounts reach the job (it does not keep a filesystem the host unmounts busy), nothing
    /// mounted for the job reaches the host.
    MakeRootSlave,
    Tmpfs {
        dst: PathBuf,
        flags: libc::c_ulong,
        data: String,
    },
    /// An empty tmpfs of root's over a host directory of jobcell's own state, which may be
    /// missing (or, rootless, out of the caller's reach): then there is nothing to cover.
    CoverState {
        dst: PathBuf,
    },
    Bind {
        src: PathBuf,
        dst: PathBuf,
        recursive: bool,
    },
    /// Remount a bind mount with `flags` (MS_REMOUNT|MS_BIND are added); `recursive` also
    /// applies read-only to the mounts below it.
    Remount {
        dst: PathBuf,
        flags: libc::c_ulong,
        recursive: bool,
    },
    Overlay {
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
        dst: PathBuf,
    },
    Proc {
        dst: PathBuf,
    },
    Sysfs {
        dst: PathBuf,
    },
    Devpts {
        dst: PathBuf,
        data: String,
    },
    Mkdir {
        path: PathBuf,
        mode: u32,
    },
    /// mkdir -p, for mount points inside the writable upper layer of an image view.
    MkdirAll {
        path: PathBuf,
    },
    Touch {
        path: PathBuf,
    },
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    /// Make `new_root` the root and detach the old one.
    PivotRoot {
        new_root: PathBuf,
    },
}

/// A host path bound into the job: `src` is usually `/proc/self/fd/N` of a descriptor the
/// launcher opened before cloning, so nothing can swap it for a symlink in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindIn {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub readonly: bool,
    pub is_dir: bool,
    /// Flags the source mount already has (nosuid, noexec, ...) that a remount must keep.
    pub keep: libc::c_ulong,
}

#[derive(Debug, Clone)]
pub struct PlanInput {
    /// Where the launcher's descriptor of the scratch dir is reachable (`/proc/self/fd/N`).
    pub scratch_src: PathBuf,
    /// The scratch dir's path, as the job sees it (the host path).
    pub scratch_path: PathBuf,
    pub scratch_base: PathBuf,
    /// (path inside the job, subdirectory of scratch it comes from)
    pub private_dirs: Vec<(PathBuf, String)>,
    pub scratch_keep: libc::c_ulong,
    pub binds: Vec<BindIn>,
    pub image: Option<PathBuf>,
    pub dev: DevMode,
    /// Where the host's /dev is reachable (`/proc/self/fd/N`).
    pub host_dev: PathBuf,
    /// In a user namespace (rootless): no uid/gid mount options, no fresh sysfs.
    pub userns: bool,
    /// World-writable host directories outside the private list (e.g. /run/lock): each gets an
    /// empty tmpfs of its own, so jobs cannot leave files there for each other.
    pub covers: Vec<PathBuf>,
    /// jobcell's own state (state dir, image trees, job dirs): each gets an empty tmpfs that
    /// nobody but root may write. None lies inside a private dir, the scratch base or another.
    pub state_covers: Vec<PathBuf>,
}

/// Host directories that are often world-writable; those that are (and are not private) get
/// covered in jobs without an image.
pub const COVER_CANDIDATES: [&str; 5] = [
    "/run/lock",
    "/var/lock",
    "/dev/mqueue",
    "/var/lib/php/sessions",
    "/var/spool/uucppublic",
];

/// Where the image view is assembled before pivot_root (a tmpfs private to the job's mount ns).
pub const STAGE: &str = "/tmp";

/// Where the job's root is assembled: the host's `/`, or the image view's stage.
fn view_root(i: &PlanInput) -> PathBuf {
    match &i.image {
        Some(_) => Path::new(STAGE).join("root"),
        None => PathBuf::from("/"),
    }
}

/// The job's view of the system: the mount tree made a slave, the image's overlay and the
/// job's /dev. It reads neither `scratch_src` nor `scratch_keep`, so the init applies it
/// while the launcher is still making the scratch dir (see [`view_first`]); [`plan`] starts
/// with exactly these steps.
pub fn view(i: &PlanInput) -> Vec<Step> {
    let mut s = vec![Step::MakeRootSlave];
    let root = view_root(i);
    if let Some(image) = &i.image {
        let stage = PathBuf::from(STAGE);
        s.push(Step::Tmpfs {
            dst: stage.clone(),
            flags: MS_HARDEN | libc::MS_NOEXEC,
            data: "mode=0700,size=1m".into(),
        });
        for d in ["upper", "work", "root"] {
            s.push(Step::Mkdir {
                path: stage.join(d),
                mode: 0o755,
            });
        }
        s.push(Step::Overlay {
            lower: image.clone(),
            upper: stage.join("upper"),
            work: stage.join("work"),
            dst: root.clone(),
        });
    }
    let in_image = i.image.is_some();
    let at = |p: &Path| under(&root, p);

    let dev = at(Path::new("/dev"));
    let dev_shm_private = i
        .private_dirs
        .iter()
        .any(|(p, _)| p == Path::new("/dev/shm"));
    if i.dev == DevMode::Minimal {
        if in_image {
            s.push(Step::MkdirAll { path: dev.clone() });
        }
        s.push(Step::Tmpfs {
            dst: dev.clone(),
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
            data: "mode=0755,size=64k".into(),
        });
        for n in DEV_NODES {
            s.push(Step::Touch { path: dev.join(n) });
            s.push(Step::Bind {
                src: i.host_dev.join(n),
                dst: dev.join(n),
                recursive: false,
            });
        }
        s.push(Step::Mkdir {
            path: dev.join("pts"),
            mode: 0o755,
        });
        let pts_data = if i.userns {
            "newinstance,ptmxmode=0666,mode=0620"
        } else {
            "newinstance,ptmxmode=0666,mode=0620,gid=5"
        };
        s.push(Step::Devpts {
            dst: dev.join("pts"),
            data: pts_data.into(),
        });
        s.push(Step::Symlink {
            target: "pts/ptmx".into(),
            link: dev.join("ptmx"),
        });
        s.push(Step::Mkdir {
            path: dev.join("shm"),
            mode: 0o1777,
        });
        if !dev_shm_private {
            s.push(Step::Tmpfs {
                dst: dev.join("shm"),
                flags: MS_HARDEN,
                data: "mode=1777".into(),
            });
        }
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            s.push(Step::Symlink {
                target: target.into(),
                link: dev.join(name),
            });
        }
    } else if in_image {
        s.push(Step::MkdirAll { path: dev.clone() });
        s.push(Step::Bind {
            src: i.host_dev.clone(),
            dst: dev.clone(),
            recursive: true,
        });
    }

    s
}

/// Whether the init may apply [`view`] before the scratch dir exists: its mounts must not
/// hide the scratch path (a scratch base under /dev, or under the image stage), and a
/// rootless image view needs mount points made from the whole plan before its overlay.
pub fn view_first(i: &PlanInput, view: &[Step]) -> bool {
    if i.image.is_some() && i.userns {
        return false;
    }
    !view.iter().any(|st| match st {
        Step::Tmpfs { dst, .. } | Step::Overlay { dst, .. } | Step::Devpts { dst, .. } => {
            i.scratch_path.starts_with(dst)
        }
        Step::Bind { dst, .. } => i.scratch_path.starts_with(dst),
        _ => false,
    })
}

pub fn plan(i: &PlanInput) -> Vec<Step> {
    let mut s = view(i);
    let root = view_root(i);
    let in_image = i.image.is_some();
    let at = |p: &Path| under(&root, p);
    let dev = at(Path::new("/dev"));

    // MOUNT_UNDER_SCRATCH: /tmp, /var/tmp, /dev/shm from subdirectories of scratch.
    for (p, sub) in &i.private_dirs {
        let dst = at(p);
        // The minimal /dev is the job's own tmpfs: private dirs in it get their mount point.
        let in_own_dev = i.dev == DevMode::Minimal && p.starts_with("/dev");
        if in_image || in_own_dev {
            s.push(Step::MkdirAll { path: dst.clone() });
        }
        s.push(Step::Bind {
            src: i.scratch_src.join(sub),
            dst: dst.clone(),
            recursive: false,
        });
        s.push(Step::Remount {
            dst,
            flags: MS_HARDEN | i.scratch_keep,
            recursive: false,
        });
    }

    if !in_image {
        for c in &i.state_covers {
            s.push(Step::CoverState { dst: c.clone() });
        }
    }
    let in_state_cover = |p: &Path| !in_image && i.state_covers.iter().any(|c| p.starts_with(c));

    // The scratch dir at its own path. Without an image, a tmpfs first covers the scratch base,
    // so the job cannot look into the scratch dirs of other jobs (which may run as the same uid).
    // A base inside a state cover (by default <state_dir>/scratch) is covered by that one.
    let base_is_private = i
        .private_dirs
        .iter()
        .any(|(p, _)| i.scratch_base.starts_with(p));
    if !in_image && !base_is_private && !in_state_cover(&i.scratch_base) {
        s.push(Step::Tmpfs {
            dst: i.scratch_base.clone(),
            flags: MS_HARDEN | libc::MS_NOEXEC,
            data: "mode=0755,size=16k".into(),
        });
    }
    if in_state_cover(&i.scratch_base) {
        // Its parent is the cover's (empty) tmpfs: one mkdir, not a walk from /.
        s.push(Step::MkdirAll {
            path: i.scratch_base.clone(),
        });
    }
    s.push(Step::MkdirAll {
        path: at(&i.scratch_path),
    });
    s.push(Step::Bind {
        src: i.scratch_src.clone(),
        dst: at(&i.scratch_path),
        recursive: false,
    });
    s.push(Step::Remount {
        dst: at(&i.scratch_path),
        flags: MS_HARDEN | i.scratch_keep,
        recursive: false,
    });

    if !in_image {
        for c in &i.covers {
            s.push(Step::Tmpfs {
                dst: c.clone(),
                flags: MS_HARDEN | libc::MS_NOEXEC,
                data: "mode=1777,size=1m".into(),
            });
        }
    }

    for b in &i.binds {
        let dst = at(&b.dst);
        // Mount points can be made in the image view and inside the job's own scratch (a
        // private dir or the covered scratch base) or a state cover; never on the host.
        let inside_scratch = b.dst.starts_with(&i.scratch_base)
            || i.private_dirs.iter().any(|(p, _)| b.dst.starts_with(p));
        if in_image || inside_scratch || in_state_cover(&b.dst) {
            if b.is_dir {
                s.push(Step::MkdirAll { path: dst.clone() });
            } else {
                if let Some(parent) = dst.parent() {
                    s.push(Step::MkdirAll {
                        path: parent.to_path_buf(),
                    });
                }
                s.push(Step::Touch { path: dst.clone() });
            }
        }
        s.push(Step::Bind {
            src: b.src.clone(),
            dst: dst.clone(),
            recursive: true,
        });
        let ro = if b.readonly { libc::MS_RDONLY } else { 0 };
        s.push(Step::Remount {
            dst,
            flags: MS_HARDEN | ro | b.keep,
            recursive: b.readonly,
        });
    }

    let sys = at(Path::new("/sys"));
    if in_image && !i.userns {
        s.push(Step::MkdirAll { path: sys.clone() });
        s.push(Step::Sysfs { dst: sys });
    } else {
        if in_image {
            // Rootless: a fresh sysfs needs a network namespace owned by the job's user
            // namespace, so the image view gets the host's (still under this cover below).
            s.push(Step::MkdirAll { path: sys.clone() });
            s.push(Step::Bind {
                src: "/sys".into(),
                dst: sys.clone(),
                recursive: true,
            });
        }
        // The host's cgroup tree lists host pids; the job gets an empty read-only directory.
        s.push(Step::Tmpfs {
            dst: sys.join("fs/cgroup"),
            flags: MS_HARDEN | libc::MS_NOEXEC | libc::MS_RDONLY,
            data: "mode=0755,size=4k".into(),
        });
    }

    let proc_ = at(Path::new("/proc"));
    if in_image {
        s.push(Step::MkdirAll {
            path: proc_.clone(),
        });
    }
    s.push(Step::Proc { dst: proc_.clone() });
    // Keyrings are per uid, not per namespace: /proc/keys would list the names of the job
    // user's keys on the host and in other jobs (the seccomp filter already refuses keyctl).
    s.push(Step::Bind {
        src: at(Path::new("/dev/null")),
        dst: proc_.join("keys"),
        recursive: false,
    });

    if i.dev == DevMode::Minimal {
        s.push(Step::Remount {
            dst: dev,
            flags: libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
            recursive: false,
        });
    }
    if in_image {
        s.push(Step::Remount {
            dst: root.clone(),
            flags: libc::MS_RDONLY | MS_HARDEN,
            recursive: false,
        });
        s.push(Step::PivotRoot {
            new_root: root.clone(),
        });
        if i.userns {
            premake_in_upper(&mut s, &root);
        }
    }
    s
}

/// Rootless image views: root is unmapped in the job's user namespace, so mkdir in a merged
/// directory whose lower (image) side root owns is refused, whatever owns the upper layer.
/// Mount points made in the upper layer *before* the overlay is mounted show through it owned
/// by the job's user; the original steps stay (they then find the path, or run inside a mount
/// made later).
fn premake_in_upper(s: &mut Vec<Step>, root: &Path) {
    let upper = Path::new(STAGE).join("upper");
    let Some(at) = s.iter().position(|x| matches!(x, Step::Overlay { .. })) else {
        return;
    };
    let mut pre = Vec::new();
    for st in s.iter() {
        match st {
            Step::MkdirAll { path } => {
                if let Ok(rel) = path.strip_prefix(root) {
                    pre.push(Step::MkdirAll {
                        path: upper.join(rel),
                    });
                }
            }
            Step::Touch { path } => {
                if let Ok(rel) = path.strip_prefix(root) {
                    let f = upper.join(rel);
                    if let Some(parent) = f.parent() {
                        pre.push(Step::MkdirAll {
                            path: parent.to_path_buf(),
                        });
                    }
                    pre.push(Step::Touch { path: f });
                }
            }
            _ => {}
        }
    }
    s.splice(at..at, pre);
}

/// Why a step failed, for the one-line error the launcher prints.
#[derive(Debug)]
pub struct StepError {
    pub step: Step,
    pub error: io::Error,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", describe(&self.step), self.error)
    }
}

pub fn describe(s: &Step) -> String {
    match s {
        Step::MakeRootSlave => "making the mount tree a slave of the host's".into(),
        Step::Tmpfs { dst, .. } | Step::CoverState { dst } => {
            format!("mounting tmpfs on {}", dst.display())
        }
        Step::Bind { dst, src, .. } if src.starts_with("/proc/self/fd") => {
            format!("bind-mounting onto {}", dst.display())
        }
        Step::Bind { src, dst, .. } => {
            format!("bind-mounting {} on {}", src.display(), dst.display())
        }
        Step::Remount { dst, .. } => format!("remounting {}", dst.display()),
        Step::Overlay { lower, .. } => format!("mounting image {}", lower.display()),
        Step::Proc { dst } => format!("mounting proc on {}", dst.display()),
        Step::Sysfs { dst } => format!("mounting sysfs on {}", dst.display()),
        Step::Devpts { dst, .. } => format!("mounting devpts on {}", dst.display()),
        Step::Mkdir { path, .. } | Step::MkdirAll { path } => {
            format!("creating {}", path.display())
        }
        Step::Touch { path } => format!("creating {}", path.display()),
        Step::Symlink { link, .. } => format!("creating symlink {}", link.display()),
        Step::PivotRoot { new_root } => format!("pivot_root to {}", new_root.display()),
    }
}

pub fn apply(steps: &[Step], sys: &dyn Syscall) -> Result<(), StepError> {
    for step in steps {
        apply_one(step, sys).map_err(|error| StepError {
            step: step.clone(),
            error,
        })?;
    }
    Ok(())
}

fn apply_one(step: &Step, sys: &dyn Syscall) -> io::Result<()> {
    match step {
        Step::MakeRootSlave => sys.mount(
            None,
            Path::new("/"),
            None,
            libc::MS_REC | libc::MS_SLAVE,
            None,
        ),
        Step::Tmpfs { dst, flags, data } => sys.mount(
            Some(Path::new("tmpfs")),
            dst,
            Some("tmpfs"),
            *flags,
            Some(data),
        ),
        Step::CoverState { dst } => match sys.mount(
            Some(Path::new("tmpfs")),
            dst,
            Some("tmpfs"),
            MS_HARDEN | libc::MS_NOEXEC,
            Some("mode=0755,size=16k"),
        ) {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ENOTDIR | libc::EACCES)
                ) =>
            {
                Ok(())
            }
            r => r,
        },
        Step::Bind {
            src,
            dst,
            recursive,
        } => {
            let rec = if *recursive { libc::MS_REC } else { 0 };
            sys.mount(Some(src), dst, None, libc::MS_BIND | rec, None)
        }
        Step::Remount {
            dst,
            flags,
            recursive,
        } => {
            if *recursive && flags & libc::MS_RDONLY != 0 {
                // mount_setattr covers the submounts too; a plain remount only the top one.
                let attr = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
                match sys.setattr_recursive(dst, attr) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
                    Err(e) => return Err(e),
                }
            }
            sys.mount(
                None,
                dst,
                None,
                libc::MS_REMOUNT | libc::MS_BIND | flags,
                None,
            )
        }
        Step::Overlay {
            lower,
            upper,
            work,
            dst,
        } => {
            let data = format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            );
            sys.mount(
                Some(Path::new("overlay")),
                dst,
                Some("overlay"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(&data),
            )
        }
        Step::Proc { dst } => sys.mount(
            Some(Path::new("proc")),
            dst,
            Some("proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        ),
        Step::Sysfs { dst } => sys.mount(
            Some(Path::new("sysfs")),
            dst,
            Some("sysfs"),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        ),
        Step::Devpts { dst, data } => sys.mount(
            Some(Path::new("devpts")),
            dst,
            Some("devpts"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(data),
        ),
        Step::Mkdir { path, mode } => ok_if_exists(sys.mkdir(path, *mode)),
        Step::MkdirAll { path } => {
            // Most mount points' parents exist (or the point itself does): one call, and the
            // walk from / only when a parent is missing.
            match sys.mkdir(path, 0o755) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                r => return ok_if_exists(r),
            }
            let mut cur = PathBuf::from("/");
            for c in path.components().skip(1) {
                cur.push(c);
                ok_if_exists(sys.mkdir(&cur, 0o755))?;
            }
            Ok(())
        }
        Step::Touch { path } => sys.create_file(path, 0o644),
        Step::Symlink { target, link } => sys.symlink(target, link),
        Step::PivotRoot { new_root } => {
            sys.chdir(new_root)?;
            sys.pivot_root_here()?;
            sys.umount_detach(Path::new("."))?;
            sys.chdir(Path::new("/"))
        }
    }
}

fn ok_if_exists(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::Recorder;

    fn input() -> PlanInput {
        PlanInput {
            scratch_src: "/proc/self/fd/5".into(),
            scratch_path: "/var/lib/jobcell/scratch/job-1".into(),
            scratch_base: "/var/lib/jobcell/scratch".into(),
            private_dirs: vec![
                ("/tmp".into(), "tmp".into()),
                ("/var/tmp".into(), "var_tmp".into()),
                ("/dev/shm".into(), "dev_shm".into()),
            ],
            scratch_keep: 0,
            binds: vec![BindIn {
                src: "/proc/self/fd/6".into(),
                dst: "/data".into(),
                readonly: true,
                is_dir: true,
                keep: 0,
            }],
            image: None,
            dev: DevMode::Minimal,
            host_dev: "/proc/self/fd/7".into(),
            userns: false,
            covers: vec!["/run/lock".into()],
            state_covers: Vec::new(),
        }
    }

    fn pos(steps: &[Step], f: impl Fn(&Step) -> bool) -> usize {
        steps.iter().position(f).expect("step present")
    }

    /// The init mounts `view()` before the scratch dir exists and the rest of `plan()` after:
    /// the view must be exactly the plan's first steps, touch nothing of scratch, and never
    /// hide the path the init opens the scratch dir by.
    #[test]
    fn the_view_is_the_plans_start_and_needs_no_scratch() {
        let image = |userns| PlanInput {
            image: Some("/proc/self/fd/8".into()),
            userns,
            ..input()
        };
        for i in [input(), image(false), image(true)] {
            let v = view(&i);
            assert!(plan(&i).starts_with(&v) || (i.image.is_some() && i.userns));
            let other = PlanInput {
                scratch_src: "/proc/self/fd/99".into(),
                scratch_keep: libc::MS_NOSUID,
                ..i.clone()
            };
            assert_eq!(view(&other), v, "view() read a scratch field");
            assert!(!v.iter().any(|st| format!("{st:?}").contains("fd/5")));
        }
        assert!(view_first(&input(), &view(&input())));
        // Rootless image views premake mount points from the whole plan.
        assert!(!view_first(&image(true), &view(&image(true))));
        // A scratch base under the job's own /dev, or under the image stage (/tmp).
        let under_dev = PlanInput {
            scratch_path: "/dev/shm/jobcell/job-1".into(),
            scratch_base: "/dev/shm/jobcell".into(),
            ..input()
        };
        assert!(!view_first(&under_dev, &view(&under_dev)));
        let under_stage = PlanInput {
            scratch_path: "/tmp/jobcell-1000/job-1".into(),
            scratch_base: "/tmp/jobcell-1000".into(),
            ..image(false)
        };
        assert!(!view_first(&under_stage, &view(&under_stage)));
        let host_dev = PlanInput {
            dev: DevMode::Host,
            ..under_dev
        };
        assert!(view_first(&host_dev, &view(&host_dev)));
    }

    #[test]
    fn host_view_order() {
        let s = plan(&input());
        assert_eq!(
            s[0],
            Step::MakeRootSlave,
            "propagation must be one-way before any mount"
        );
        let dev = pos(
            &s,
            |x| matches!(x, Step::Tmpfs { dst, .. } if dst == Path::new("/dev")),
        );
        let shm = pos(
            &s,
            |x| matches!(x, Step::Bind { dst, .. } if dst == Path::new("/dev/shm")),
        );
        assert!(
            dev < shm,
            "/dev/shm must be bound onto the new /dev, not the host's"
        );
        let cover = pos(
            &s,
            |x| matches!(x, Step::Tmpfs { dst, .. } if dst == Path::new("/var/lib/jobcell/scratch")),
        );
        let scratch = pos(
            &s,
            |x| matches!(x, Step::Bind { src, .. } if src == Path::new("/proc/self/fd/5")),
        );
        assert!(
            cover < scratch,
            "other jobs' scratch dirs are hidden before ours is bound"
        );
        let proc_ = pos(&s, |x| matches!(x, Step::Proc { .. }));
        let last_bind = s
            .iter()
            .rposition(|x| matches!(x, Step::Bind { src, .. } if src.starts_with("/proc/self/fd")))
            .unwrap();
        let keys = pos(
            &s,
            |x| matches!(x, Step::Bind { dst, .. } if dst == Path::new("/proc/keys")),
        );
        assert!(keys > proc_, "/proc/keys is hidden in the job's own proc");
        assert!(
            proc_ > last_bind,
            "binds from /proc/self/fd need the launcher's /proc"
        );
        assert!(!s.iter().any(|x| matches!(x, Step::PivotRoot { .. })));
    }

    #[test]
    fn ro_binds_are_ro_nosuid_nodev_and_recursive() {
        let s = plan(&input());
        let r = s
            .iter()
            .find(|x| matches!(x, Step::Remount { dst, .. } if dst == Path::new("/data")))
            .unwrap();
        match r {
            Step::Remount {
                flags, recursive, ..
            } => {
                assert_eq!(flags & libc::MS_RDONLY, libc::MS_RDONLY);
                assert_eq!(flags & libc::MS_NOSUID, libc::MS_NOSUID);
                assert_eq!(flags & libc::MS_NODEV, libc::MS_NODEV);
                assert!(recursive);
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn scratch_base_under_a_private_dir_is_not_covered() {
        let mut i = input();
        i.scratch_base = "/tmp/u".into();
        i.scratch_path = "/tmp/u/job-1".into();
        let s = plan(&i);
        assert!(!s
            .iter()
            .any(|x| matches!(x, Step::Tmpfs { dst, .. } if dst == Path::new("/tmp/u"))));
        let tmp = pos(
            &s,
            |x| matches!(x, Step::Bind { dst, .. } if dst == Path::new("/tmp")),
        );
        let mk = pos(
            &s,
            |x| matches!(x, Step::MkdirAll { path } if path == Path::new("/tmp/u/job-1")),
        );
        assert!(tmp < mk);
    }

    #[test]
    fn image_view_is_built_under_the_stage_then_pivoted_read_only() {
        let mut i = input();
        i.image = Some("/var/lib/jobcell/images/abc".into());
        let s = plan(&i);
        let r = Path::new("/tmp/root");
        for x in &s {
            match x {
                Step::Bind { dst, .. } | Step::Proc { dst } | Step::Sysfs { dst } => {
                    assert!(dst.starts_with(r), "{x:?} lands outside the new root")
                }
                _ => {}
            }
        }
        let ro = pos(
            &s,
            |x| matches!(x, Step::Remount { dst, flags, .. } if dst == r && flags & libc::MS_RDONLY != 0),
        );
        let pivot = pos(&s, |x| matches!(x, Step::PivotRoot { .. }));
        assert_eq!(pivot, s.len() - 1);
        assert_eq!(
            ro,
            pivot - 1,
            "the image root is read-only before the job can see it"
        );
    }

    #[test]
    fn apply_records_syscalls_in_order_and_reports_the_failing_step() {
        let rec = Recorder::default();
        apply(&plan(&input()), &rec).unwrap();
        let lines = rec.lines();
        assert_eq!(lines[0], "mount - / - rec|slave -");
        assert!(lines.contains(&"mount /proc/self/fd/6 /data - bind|rec -".to_string()));
        assert!(lines.contains(&"mount_setattr /data 0x7".to_string()));
        assert_eq!(
            lines.last().unwrap(),
            "mount - /dev - bind|remount|ro|nosuid|noexec -"
        );

        let rec = Recorder {
            fail_on: Some("mount proc".into()),
            ..Default::default()
        };
        let e = apply(&plan(&input()), &rec).unwrap_err().to_string();
        assert!(e.starts_with("mounting proc on /proc: "), "{e}");
    }

    #[test]
    fn rootless_image_view_binds_the_host_sysfs_under_a_cgroup_cover() {
        let mut i = input();
        i.image = Some("/proc/self/fd/9".into());
        i.userns = true;
        let s = plan(&i);
        assert!(!s.iter().any(|x| matches!(x, Step::Sysfs { .. })));
        let root = Path::new(STAGE).join("root");
        let b = pos(
            &s,
            |x| matches!(x, Step::Bind { src, dst, recursive: true } if src == Path::new("/sys") && dst == &root.join("sys")),
        );
        let c = pos(
            &s,
            |x| matches!(x, Step::Tmpfs { dst, .. } if dst == &root.join("sys/fs/cgroup")),
        );
        assert!(b < c);
        i.userns = false;
        assert!(plan(&i).iter().any(|x| matches!(x, Step::Sysfs { .. })));
    }

    #[test]
    fn bind_under_a_private_dir_gets_a_mount_point_in_scratch() {
        let mut i = input();
        i.binds[0].dst = "/tmp/data".into();
        let s = plan(&i);
        let tmp = pos(
            &s,
            |x| matches!(x, Step::Bind { dst, .. } if dst == Path::new("/tmp")),
        );
        let mk = pos(
            &s,
            |x| matches!(x, Step::MkdirAll { path } if path == Path::new("/tmp/data")),
        );
        let b = pos(
            &s,
            |x| matches!(x, Step::Bind { dst, .. } if dst == Path::new("/tmp/data")),
        );
        assert!(tmp < mk && mk < b);
        // A bind onto the host's own tree never creates anything there.
        let s = plan(&input());
        assert!(!s
            .iter()
            .any(|x| matches!(x, Step::MkdirAll { path } if path == Path::new("/data"))));
    }

    #[test]
    fn world_writable_dirs_are_covered_without_an_image() {
        let s = plan(&input());
        assert!(s
            .iter()
            .any(|x| matches!(x, Step::Tmpfs { dst, .. } if dst == Path::new("/run/lock"))));
        let mut i = input();
        i.image = Some("/img".into());
        assert!(!plan(&i)
            .iter()
            .any(|x| matches!(x, Step::Tmpfs { dst, .. } if dst == Path::new("/run/lock"))));
    }

    #[test]
    fn the_state_dir_cover_hides_the_scratch_base_too_and_comes_before_scratch() {
        let mut i = input();
        i.state_covers = vec!["/var/lib/jobcell".into(), "/srv/images".into()];
        i.binds[0].dst = "/var/lib/jobcell/data".into();
        let s = plan(&i);
        let state = pos(
            &s,
            |x| matches!(x, Step::CoverState { dst } if dst == Path::new("/var/lib/jobcell")),
        );
        pos(
            &s,
            |x| matches!(x, Step::CoverState { dst } if dst == Path::new("/srv/images")),
        );
        let mkdir = pos(
            &s,
            |x| matches!(x, Step::MkdirAll { path } if path == Path::new("/var/lib/jobcell/scratch/job-1")),
        );
        let scratch = pos(
            &s,
            |x| matches!(x, Step::Bind { src, .. } if src == Path::new("/proc/self/fd/5")),
        );
        assert!(state < mkdir && mkdir < scratch, "{s:?}");
        // One mount instead of two: the base's own cover would only repeat the state dir's.
        assert!(!s.iter().any(
            |x| matches!(x, Step::Tmpfs { dst, .. } if dst == Path::new("/var/lib/jobcell/scratch"))
        ));
        // A bind into the covered tree gets its mount point there (never on the host).
        let point = pos(
            &s,
            |x| matches!(x, Step::MkdirAll { path } if path == Path::new("/var/lib/jobcell/data")),
        );
        assert!(state < point);
        // An image view never shows the host tree: nothing to cover.
        i.image = Some("/img".into());
        assert!(!plan(&i)
            .iter()
            .any(|x| matches!(x, Step::CoverState { .. })));
    }

    #[test]
    fn a_state_cover_refused_for_another_reason_than_absence_fails() {
        let rec = Recorder {
            fail_on: Some("mount".into()),
            ..Default::default()
        };
        let e = apply(
            &[Step::CoverState {
                dst: "/var/lib/jobcell".into(),
            }],
            &rec,
        )
        .unwrap_err();
        assert_eq!(e.error.raw_os_error(), Some(libc::EPERM));
        assert_eq!(
            e.to_string(),
            "mounting tmpfs on /var/lib/jobcell: Operation not permitted (os error 1)"
        );
    }

    #[test]
    fn pivot_detaches_the_old_root() {
        let rec = Recorder::default();
        apply(
            &[Step::PivotRoot {
                new_root: "/tmp/root".into(),
            }],
            &rec,
        )
        .unwrap();
        assert_eq!(
            rec.lines(),
            [
                "chdir /tmp/root",
                "pivot_root . .",
                "umount_detach .",
                "chdir /"
            ]
        );
    }

    #[test]
    fn rootless_image_mount_points_are_made_in_the_upper_layer_first() {
        let mut i = input();
        i.image = Some("/proc/self/fd/9".into());
        i.userns = true;
        i.scratch_base = "/var/lib/jobcell/slurm".into();
        i.scratch_path = "/var/lib/jobcell/slurm/slurm-7".into();
        let s = plan(&i);
        let ov = pos(&s, |x| matches!(x, Step::Overlay { .. }));
        let pre = pos(
            &s,
            |x| matches!(x, Step::MkdirAll { path } if path == Path::new("/tmp/upper/var/lib/jobcell/slurm/slurm-7")),
        );
        let real = pos(
            &s,
            |x| matches!(x, Step::MkdirAll { path } if path == Path::new("/tmp/root/var/lib/jobcell/slurm/slurm-7")),
        );
        assert!(pre < ov && ov < real);
        i.userns = false;
        assert!(!plan(&i)
            .iter()
            .any(|x| matches!(x, Step::MkdirAll { path } if path.starts_with("/tmp/upper"))));
    }
}
