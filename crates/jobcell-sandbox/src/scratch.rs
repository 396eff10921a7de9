//! The job's scratch directory: created under the scratch base, removed without ever leaving it.
//!
//! Removal is `jobcell_os::remove_tree_at`: `openat`/`unlinkat` relative to directory
//! descriptors, never following a symlink, never descending into anything on another mount
//! (compared by `statx` mount id, which also catches bind mounts of the same filesystem that
//! `st_dev` cannot see). A job that leaves a symlink to /etc, a chmod-000 or read-only tree, or
//! a bind mount behind cannot make cleanup touch anything outside scratch. A job that left its
//! scratch as it got it takes the short way ([`ScratchDir::remove`]), a few rmdirs.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use jobcell_os::dir as os;
use jobcell_os::RemoveTreeError;
use thiserror::Error;

use crate::quota;
use crate::syscall::cstr;

#[derive(Debug, Error)]
pub enum ScratchError {
    #[error("scratch base {path}: {source}")]
    Base { path: PathBuf, source: io::Error },
    #[error("scratch base {0} is not a directory owned by root (or by you)")]
    BaseUnsafe(PathBuf),
    #[error("creating scratch dir {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("scratch dir {path}: the node's disk bound needs a scratch base on btrfs with quotas on (a scratch pool; or set [scratch] disk = \"none\"): {source}")]
    Bound { path: PathBuf, source: io::Error },
    #[error("removing scratch dir {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("removing scratch dir {path}: left {left} entries on other mounts in place ({first})")]
    CrossesMount {
        path: PathBuf,
        left: usize,
        first: String,
    },
}

/// A per-job scratch directory with its private subdirectories.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    name: CString,
    base_fd: OwnedFd,
    fd: OwnedFd,
    keep: bool,
    removed: bool,
    /// Made and removed by someone else (a scheduler's per-job dir): never removed here.
    borrowed: bool,
    /// The private subdirectories made in it, for [`ScratchDir::remove`]'s short way.
    subdirs: Vec<CString>,
}

/// Open directory `name` under `dirfd` (or `AT_FDCWD`) without following a symlink (CLOEXEC).
pub fn open_dir_at(dirfd: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    os::open_dir_at(borrow(dirfd), name)
}

/// A raw descriptor from this module's callers as the borrowed kind `jobcell_os` takes.
fn borrow<'a>(dirfd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: every caller passes AT_FDCWD or a descriptor it holds open for the whole call
    // (an OwnedFd's raw value, never -1), and the borrow does not outlive that call.
    unsafe { BorrowedFd::borrow_raw(dirfd) }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Make `name` in `dir` the source of a private dir: mode 01777, given to `owner` if any. After
/// the mkdir it is changed through its own O_NOFOLLOW descriptor, never by name: in a dir the
/// job's user owns, a name could be swapped for a symlink before a chmod by name.
fn make_private_subdir(dir: BorrowedFd, name: &CStr, owner: Option<(u32, u32)>) -> io::Result<()> {
    os::mkdirat(dir, name, 0o700)?;
    let fd = os::open_dir_at(dir, name)?;
    if let Some((uid, gid)) = owner {
        os::fchown(fd.as_fd(), uid, gid)?;
    }
    // mkdirat applies the umask and cannot set the sticky bit: chmod explicitly.
    os::fchmod(fd.as_fd(), 0o1777)
}

/// The scratch subdirectory a private dir comes from: `/var/tmp` -> `var_tmp`.
pub fn private_subdir(p: &Path) -> String {
    let s = p.to_string_lossy();
    let t = s.trim_start_matches('/').replace('/', "_");
    if t.is_empty() {
        "root".into()
    } else {
        t
    }
}

/// Create `base` (mode 0711: others may pass through to their own job dir, not list it) if missing.
pub(crate) fn open_base(base: &Path) -> Result<OwnedFd, ScratchError> {
    let err = |source| ScratchError::Base {
        path: base.to_path_buf(),
        source,
    };
    let mut cur = PathBuf::from("/");
    for c in base.components().skip(1) {
        cur.push(c);
        let p = cstr(&cur).map_err(err)?;
        match os::mkdirat(os::CWD, &p, 0o711) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(err(e)),
            // mkdir applied the umask; a base others cannot pass through breaks their jobs.
            // SAFETY: `p` is NUL-terminated and outlives the call.
            Ok(()) => check(unsafe { libc::chmod(p.as_ptr(), 0o711) }).map_err(err)?,
        }
    }
    let p = cstr(base).map_err(err)?;
    let fd = os::open_dir(&p).map_err(err)?;
    let st = os::fstat(fd.as_fd()).map_err(err)?;
    // A base another user owns could be swapped under us; refuse it.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if st.st_uid != 0 && st.st_uid != me {
        return Err(ScratchError::BaseUnsafe(base.to_path_buf()));
    }
    Ok(fd)
}

impl ScratchDir {
    /// Create `base/name` (0700, owned by `uid:gid`) and one subdirectory (01777, owned by the
    /// job) for each private dir. On failure nothing is left behind.
    pub fn create(
        base: &Path,
        name: &str,
        uid: u32,
        gid: u32,
        subdirs: &[String],
        keep: bool,
    ) -> Result<Self, ScratchError> {
        Self::create_bounded(base, name, uid, gid, subdirs, keep, None)
    }

    /// [`ScratchDir::create`], and with `bound`, the dir is a subvolume of the btrfs scratch
    /// base that may reference at most `bound` bytes (see `quota.rs`).
    pub fn create_bounded(
        base: &Path,
        name: &str,
        uid: u32,
        gid: u32,
        subdirs: &[String],
        keep: bool,
        bound: Option<u64>,
    ) -> Result<Self, ScratchError> {
        let base_fd = open_base(base)?;
        let path = base.join(name);
        let cname = CString::new(name).expect("scratch names are generated without NUL");
        let err = |source| ScratchError::Create {
            path: path.clone(),
            source,
        };
        match bound {
            None => os::mkdirat(base_fd.as_fd(), &cname, 0o700).map_err(err)?,
            Some(_) => {
                quota::make_subvolume(base_fd.as_raw_fd(), cname.as_bytes()).map_err(|source| {
                    ScratchError::Bound {
                        path: path.clone(),
                        source,
                    }
                })?
            }
        }
        // The job's user gets its dir only once it is complete: while root still owns it (0700),
        // nobody else can touch the subdirs being made.
        let subdirs: Vec<CString> = subdirs
            .iter()
            .map(|s| CString::new(s.as_str()).expect("subdir names have no NUL"))
            .collect();
        let setup = || -> io::Result<OwnedFd> {
            let fd = os::open_dir_at(base_fd.as_fd(), &cname)?;
            if let Some(bytes) = bound {
                // A new subvolume's root has the creator's umask, not 0700.
                os::fchmod(fd.as_fd(), 0o700)?;
                quota::limit_subvolume(fd.as_raw_fd(), bytes).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "setting its disk bound (are the scratch base's btrfs quotas on?): {e}"
                        ),
                    )
                })?;
            }
            for sub in &subdirs {
                make_private_subdir(fd.as_fd(), sub, Some((uid, gid)))?;
            }
            os::fchown(fd.as_fd(), uid, gid)?;
            Ok(fd)
        };
        match setup() {
            Ok(fd) => Ok(ScratchDir {
                path,
                name: cname,
                base_fd,
                fd,
                keep,
                removed: false,
                borrowed: false,
                subdirs,
            }),
            Err(e) => {
                let _ = remove_tree_at(base_fd.as_raw_fd(), &cname, &path);
                Err(err(e))
            }
        }
    }

    /// Use an existing per-job dir that its creator removes (the SPANK plugin's
    /// `<base>/slurm-<jobid>`, shared by every task and step of a job on this node). It must be
    /// a real directory (not a symlink) owned by `uid`; missing private subdirectories are made.
    /// [`ScratchDir::remove`] leaves it in place.
    pub fn existing(path: &Path, uid: u32, subdirs: &[String]) -> Result<Self, ScratchError> {
        let err = |source| ScratchError::Create {
            path: path.to_path_buf(),
            source,
        };
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(err(io::Error::from_raw_os_error(libc::EINVAL)));
        };
        let base_fd = open_dir_at(libc::AT_FDCWD, &cstr(parent).map_err(err)?).map_err(err)?;
        let cname = CString::new(name.as_encoded_bytes())
            .map_err(|_| err(io::Error::from_raw_os_error(libc::EINVAL)))?;
        let fd = os::open_dir_at(base_fd.as_fd(), &cname).map_err(err)?;
        let st = os::fstat(fd.as_fd()).map_err(err)?;
        if st.st_uid != uid {
            return Err(err(io::Error::from_raw_os_error(libc::EPERM)));
        }
        for sub in subdirs {
            let c = CString::new(sub.as_str()).expect("subdir names have no NUL");
            match make_private_subdir(fd.as_fd(), &c, None) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                r => r.map_err(err)?,
            }
        }
        Ok(ScratchDir {
            path: path.to_path_buf(),
            name: cname,
            base_fd,
            fd,
            keep: true,
            removed: false,
            borrowed: true,
            subdirs: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Remove the whole tree (unless created with `keep`).
    /// Remove the whole tree; or, when created with `keep`, rename it to `<name>.kept` (so
    /// garbage collection leaves it alone) and return that path.
    pub fn remove(mut self) -> Result<Option<PathBuf>, ScratchError> {
        self.removed = true;
        if self.borrowed {
            return Ok(None);
        }
        if self.keep {
            let kept =
                CString::new(format!("{}.kept", self.name.to_string_lossy())).expect("no NUL");
            let base = self.base_fd.as_fd();
            os::renameat(base, &self.name, base, &kept).map_err(|source| ScratchError::Remove {
                path: self.path.clone(),
                source,
            })?;
            return Ok(Some(
                self.path.with_file_name(kept.to_string_lossy().as_ref()),
            ));
        }
        if self.remove_as_made() {
            return Ok(None);
        }
        remove_tree_at(self.base_fd.as_raw_fd(), &self.name, &self.path).map(|_| None)
    }

    /// The short way, for a job that left its scratch as it got it (most leave nothing behind):
    /// rmdir the subdirectories by name, then the scratch dir itself. rmdir follows no
    /// symlink (ENOTDIR) and removes no mount point (EBUSY) or non-empty directory; whatever
    /// it refuses is left to [`remove_tree_at`]'s walk. Saves that walk's dozen calls (stat,
    /// open, list) on every launch's way out.
    fn remove_as_made(&self) -> bool {
        for sub in &self.subdirs {
            match os::unlinkat(self.fd.as_fd(), sub, libc::AT_REMOVEDIR) {
                Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return false,
                _ => {}
            }
        }
        os::unlinkat(self.base_fd.as_fd(), &self.name, libc::AT_REMOVEDIR).is_ok()
    }
}

/// The launcher pid in a scratch dir name `job-<pid>-<hex>` (kept dirs have a suffix and do not
/// match).
fn launcher_pid(name: &[u8]) -> Option<libc::pid_t> {
    let rest = name.strip_prefix(b"job-")?;
    let dash = rest.iter().position(|&b| b == b'-')?;
    let (pid, hex) = (&rest[..dash], &rest[dash + 1..]);
    if pid.is_empty()
        || hex.is_empty()
        || !pid.iter().all(u8::is_ascii_digit)
        || !hex.iter().all(u8::is_ascii_hexdigit)
    {
        return None;
    }
    std::str::from_utf8(pid)
        .ok()?
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// Remove scratch dirs left by launchers that died without cleaning up (SIGKILL): named
/// `job-<pid>-<hex>` with that pid gone. Returns the names removed; never touches a live
/// launcher's dir or a kept one.
pub fn gc_stale(base: &Path) -> Vec<String> {
    let Ok(c) = cstr(base) else { return Vec::new() };
    let Ok(fd) = open_dir_at(libc::AT_FDCWD, &c) else {
        return Vec::new();
    };
    let Ok(names) = jobcell_os::read_dir_names(fd.as_fd()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for n in names {
        let Some(pid) = launcher_pid(n.to_bytes()) else {
            continue;
        };
        // SAFETY: signal 0 only checks that `pid` exists; it delivers nothing.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        if alive {
            continue;
        }
        let shown = base.join(n.to_string_lossy().as_ref());
        if remove_tree_at(fd.as_raw_fd(), &n, &shown).is_ok() {
            out.push(n.to_string_lossy().into_owned());
        }
    }
    out
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.removed && !self.keep {
            let _ = remove_tree_at(self.base_fd.as_raw_fd(), &self.name, &self.path);
        }
    }
}

/// Delete `parent/name` and everything below it that is on the same mount, with the
/// workspace's one tree removal (`jobcell_os::remove_tree_at`): no symlink followed, no mount
/// entered or unlinked (those are reported as [`ScratchError::CrossesMount`]), a bounded number
/// of descriptors however deep the tree.
pub fn remove_tree_at(parent: RawFd, name: &CStr, shown: &Path) -> Result<(), ScratchError> {
    jobcell_os::remove_tree_at(borrow(parent), name).map_err(|e| match e {
        RemoveTreeError::Io(source) => ScratchError::Remove {
            path: shown.to_path_buf(),
            source,
        },
        RemoveTreeError::CrossesMount { left, first } => ScratchError::CrossesMount {
            path: shown.to_path_buf(),
            left,
            first,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn tmp(tag: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("jobcell-scratch-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn create_makes_private_subdirs_and_remove_takes_everything() {
        let base = tmp("create");
        let subs = vec!["tmp".to_string(), "var_tmp".to_string()];
        // SAFETY: geteuid and getegid have no preconditions and cannot fail.
        let (me, my_gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let s = ScratchDir::create(&base, "job-1", me, my_gid, &subs, false).unwrap();
        let p = s.path().to_path_buf();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        assert_eq!(
            fs::metadata(p.join("tmp")).unwrap().permissions().mode() & 0o7777,
            0o1777
        );
        fs::write(p.join("tmp/f"), b"x").unwrap();
        s.remove().unwrap();
        assert!(!p.exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_job_user_gets_its_dir_and_subdirs_with_their_modes() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: needs root (chown to another user)");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let base = tmp("owner");
        let subs = vec!["tmp".to_string(), "dev_shm".to_string()];
        let s = ScratchDir::create(&base, "job-2", 65534, 65534, &subs, false).unwrap();
        let p = s.path().to_path_buf();
        for (path, mode) in [
            (p.clone(), 0o700),
            (p.join("tmp"), 0o1777),
            (p.join("dev_shm"), 0o1777),
        ] {
            let m = fs::symlink_metadata(&path).unwrap();
            assert!(m.is_dir(), "{path:?}");
            assert_eq!((m.uid(), m.gid()), (65534, 65534), "{path:?}");
            assert_eq!(m.mode() & 0o7777, mode, "{path:?}");
        }
        s.remove().unwrap();
        assert!(!p.exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn hostile_tree_is_removed_and_symlinks_are_not_followed() {
        let base = tmp("hostile");
        let victim = tmp("victim");
        fs::write(victim.join("precious"), b"keep me").unwrap();
        let s = ScratchDir::create(&base, "job-2", 0, 0, &["tmp".into()], false).unwrap();
        let p = s.path().to_path_buf();
        // A symlink to a host directory, a read-only non-empty tree, a chmod-000 directory.
        symlink(&victim, p.join("tmp/link-to-victim")).unwrap();
        symlink("/etc", p.join("etc-link")).unwrap();
        fs::create_dir_all(p.join("ro/a/b")).unwrap();
        fs::write(p.join("ro/a/b/file"), b"x").unwrap();
        fs::set_permissions(p.join("ro/a/b/file"), fs::Permissions::from_mode(0o400)).unwrap();
        fs::set_permissions(p.join("ro/a/b"), fs::Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(p.join("ro/a"), fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(p.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        s.remove().unwrap();
        assert!(!p.exists(), "scratch left behind");
        assert_eq!(fs::read(victim.join("precious")).unwrap(), b"keep me");
        assert!(Path::new("/etc/passwd").exists());
        fs::remove_dir_all(&base).unwrap();
        fs::remove_dir_all(&victim).unwrap();
    }

    #[test]
    fn the_short_way_out_refuses_swapped_subdirs() {
        // remove() first rmdirs the subdirs by name: a subdir the job replaced by a symlink
        // to a host directory, or one the job moved away and replaced by a non-empty one,
        // must send it down the full walk without touching the host's files.
        let base = tmp("swapped");
        let victim = tmp("swapped-victim");
        fs::write(victim.join("precious"), b"keep me").unwrap();
        let subs = vec![
            "tmp".to_string(),
            "var_tmp".to_string(),
            "dev_shm".to_string(),
        ];
        let s = ScratchDir::create(&base, "job-5", 0, 0, &subs, false).unwrap();
        let p = s.path().to_path_buf();
        fs::remove_dir(p.join("tmp")).unwrap();
        symlink(&victim, p.join("tmp")).unwrap();
        fs::rename(p.join("var_tmp"), p.join("moved")).unwrap();
        fs::create_dir(p.join("var_tmp")).unwrap();
        fs::write(p.join("var_tmp/f"), b"x").unwrap();
        fs::remove_dir(p.join("dev_shm")).unwrap();
        s.remove().unwrap();
        assert!(!p.exists(), "scratch left behind");
        assert_eq!(fs::read(victim.join("precious")).unwrap(), b"keep me");
        // And the short way itself: a scratch left as made goes entirely.
        let s = ScratchDir::create(&base, "job-6", 0, 0, &subs, false).unwrap();
        let p = s.path().to_path_buf();
        assert!(s.remove_as_made());
        assert!(!p.exists());
        drop(s);
        fs::remove_dir_all(&base).unwrap();
        fs::remove_dir_all(&victim).unwrap();
    }

    #[test]
    fn very_deep_tree_is_removed_with_bounded_descriptors() {
        let base = tmp("deep");
        let s = ScratchDir::create(&base, "job-3", 0, 0, &[], false).unwrap();
        let p = s.path().to_path_buf();
        // 1500 levels: deeper than the descriptor cap, so ".." re-opening is exercised.
        let mut fd = open_dir_at(libc::AT_FDCWD, &cstr(&p).unwrap()).unwrap();
        for i in 0..1500 {
            let n = CString::new(format!("d{}", i % 3)).unwrap();
            os::mkdirat(fd.as_fd(), &n, 0o755).unwrap();
            drop(os::openat(fd.as_fd(), c"f", libc::O_CREAT | libc::O_WRONLY, 0o644).unwrap());
            fd = open_dir_at(fd.as_raw_fd(), &n).unwrap();
        }
        drop(fd);
        s.remove().unwrap();
        assert!(!p.exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn failed_create_leaves_nothing() {
        let base = tmp("fail");
        // A subdir name with a slash cannot be created: the half-made job dir must vanish.
        let e = ScratchDir::create(&base, "job-4", 0, 0, &["a/b".into()], false).unwrap_err();
        assert!(e.to_string().contains("job-4"), "{e}");
        assert!(!base.join("job-4").exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn gc_removes_only_dead_launchers_dirs() {
        let base = tmp("gc");
        // pid 2^22+1 cannot exist (pid_max is at most 2^22); our own pid is alive.
        for n in [
            "job-4194305-abcd",
            "job-4194305-abcd.kept",
            "other",
            &format!("job-{}-ab", std::process::id()),
        ] {
            fs::create_dir_all(base.join(n).join("tmp")).unwrap();
        }
        assert_eq!(gc_stale(&base), vec!["job-4194305-abcd".to_string()]);
        assert!(!base.join("job-4194305-abcd").exists());
        assert!(base.join("job-4194305-abcd.kept").exists());
        assert!(base.join("other").exists());
        assert!(base.join(format!("job-{}-ab", std::process::id())).exists());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn kept_scratch_is_renamed() {
        let base = tmp("keep");
        let s = ScratchDir::create(&base, "job-1-aa", 0, 0, &[], true).unwrap();
        let kept = s.remove().unwrap().unwrap();
        assert_eq!(kept, base.join("job-1-aa.kept"));
        assert!(kept.is_dir());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn subdir_names() {
        assert_eq!(private_subdir(Path::new("/var/tmp")), "var_tmp");
        assert_eq!(private_subdir(Path::new("/tmp")), "tmp");
        assert_eq!(private_subdir(Path::new("/dev/shm")), "dev_shm");
    }
}
