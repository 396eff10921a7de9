//! A uid of its own for every job that would run as the shared `nobody`.
//!
//! Per-uid kernel limits (RLIMIT_NPROC, inotify instances and watches, POSIX message queue
//! bytes, pipe buffers) and file ownership are shared by every process of a uid on the node,
//! whatever its namespaces: jobs that all run as `nobody` could exhaust them for each other.
//! Such a job instead gets a uid (and the gid of the same number, no supplementary groups)
//! from `[run] job_uids`, held for the job's life by an `flock` on a per-uid lock file in a
//! root-only runtime dir. The lock belongs to the open file, so a launcher or supervisor that
//! dies releases it with no cleanup; allocation starts at a pseudo-random offset so a launch
//! tries one file, not the range.

use std::ffi::CStr;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use jobcell_spec::{UidRange, UserSpec};
use thiserror::Error;

use crate::identity::{Identity, IdentityError};

/// Where the per-uid lock files live (root's, 0700: no user can take a job uid away).
pub const LOCK_DIR: &str = "/run/jobcell/uids";
/// The shared account these uids replace.
pub const NOBODY_UID: u32 = 65534;
/// The record of the last range check: the range and the account files it was made against.
const CHECKED: &str = ".range-checked";
/// The account databases a range must not overlap; a change to any of them makes the next
/// launch check the range again.
const ACCOUNT_FILES: [&str; 5] = [
    "/etc/passwd",
    "/etc/group",
    "/etc/subuid",
    "/etc/subgid",
    "/etc/nsswitch.conf",
];

#[derive(Debug, Error)]
pub enum JobUidError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("config [run] job_uids = \"{range}\": {what} '{name}' ({id}) is in the range; pick a range no account uses")]
    Account {
        range: UidRange,
        what: &'static str,
        name: String,
        id: u32,
    },
    #[error("config [run] job_uids = \"{range}\": {file} gives '{name}' ids {first}-{last}, which overlap it; pick a range no account uses")]
    SubIds {
        range: UidRange,
        file: String,
        name: String,
        first: u64,
        last: u64,
    },
    #[error("config [run] job_uids = \"{0}\": every uid of the range is held by a running job")]
    Exhausted(UidRange),
    #[error("{0}: not a directory of root's with mode 0700; refusing to keep job uid locks there")]
    UnsafeDir(PathBuf),
    #[error("job uid lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JobUidError + '_ {
    move |source| JobUidError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A job uid held until this is dropped (or its process dies).
#[derive(Debug)]
pub struct JobUidLease {
    uid: u32,
    path: PathBuf,
    _lock: OwnedFd,
}

impl JobUidLease {
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The job's identity: `account`'s name (the job's `USER` stays `nobody`), this uid as
    /// uid and gid, and no supplementary groups.
    pub fn identity(&self, account: &Identity) -> Identity {
        Identity {
            name: account.name.clone(),
            uid: self.uid,
            gid: self.uid,
            groups: vec![self.uid],
        }
    }
}

impl Drop for JobUidLease {
    /// The file goes while the lock is still held, so lock files do not pile up; a process
    /// that opened it just before sees a link count of 0 once it has the lock, and tries
    /// again (see `try_lock`).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The job uid for a job of `user`, if it runs as `nobody` and `range` is set: `None` for
/// any other user (the caller resolves it as usual). Root only (the lock dir is root's).
pub fn for_user(
    user: &UserSpec,
    range: Option<UidRange>,
) -> Result<Option<(Identity, JobUidLease)>, JobUidError> {
    let Some(range) = range else {
        return Ok(None);
    };
    let account = Identity::resolve_user(user)?;
    if account.uid != NOBODY_UID {
        return Ok(None);
    }
    let lease = acquire(Path::new(LOCK_DIR), range)?;
    Ok(Some((lease.identity(&account), lease)))
}

/// Take a free uid of `range`, locked in `dir`.
pub fn acquire(dir: &Path, range: UidRange) -> Result<JobUidLease, JobUidError> {
    check_range(dir, range)?;
    let n = range.len() as u64;
    let start = pseudo_random() % n;
    for i in 0..n {
        let uid = range.first + ((start + i) % n) as u32;
        if let Some(lease) = try_lock(dir, uid)? {
            return Ok(lease);
        }
    }
    Err(JobUidError::Exhausted(range))
}

/// A different start for each launch without a syscall: the clock's nanoseconds (vDSO) mixed
/// with the pid.
fn pseudo_random() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let x = nanos ^ (std::process::id() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64's finaliser: consecutive inputs land far apart.
    let x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Lock `uid`'s file, or `None` when a live job holds it.
fn try_lock(dir: &Path, uid: u32) -> Result<Option<JobUidLease>, JobUidError> {
    let path = dir.join(uid.to_string());
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io_err(&path))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Ok(None);
            }
            return Err(io_err(&path)(e));
        }
        // Its holder removed it between our open and our lock: the name is free again.
        if file.metadata().map_err(io_err(&path))?.nlink() == 0 {
            continue;
        }
        return Ok(Some(JobUidLease {
            uid,
            path,
            _lock: file.into(),
        }));
    }
}

/// What identifies the account files as they are now: a change to any of them changes this.
fn account_files_key(range: UidRange) -> String {
    let mut key = format!("{range}");
    for f in ACCOUNT_FILES {
        match std::fs::metadata(f) {
            Ok(m) => key.push_str(&format!(
                " {}:{}:{}:{}.{}:{}.{}",
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            )),
            Err(_) => key.push_str(" -"),
        }
    }
    key.push('\n');
    key
}

/// Refuse a range that holds an account's uid or gid, or overlaps a subordinate id range.
/// The whole check runs once per change of the account files (their identity is recorded in
/// `dir`); a launch otherwise only compares that record with five `stat`s.
pub fn check_range(dir: &Path, range: UidRange) -> Result<(), JobUidError> {
    let key = account_files_key(range);
    let record = dir.join(CHECKED);
    // One read into a buffer larger than any key (read_to_string would stat and seek first).
    let mut seen = [0u8; 1024];
    if let Ok(n) = std::fs::File::open(&record).and_then(|mut f| f.read(&mut seen)) {
        if seen[..n] == *key.as_bytes() {
            return Ok(());
        }
    }
    make_lock_dir(dir)?;
    check_accounts(range)?;
    for file in ["/etc/subuid", "/etc/subgid"] {
        check_subids(Path::new(file), range)?;
    }
    let tmp = dir.join(format!("{CHECKED}.{}", std::process::id()));
    std::fs::write(&tmp, &key)
        .and_then(|()| std::fs::rename(&tmp, &record))
        .map_err(io_err(&record))?;
    Ok(())
}

/// Create `dir` (and its parent) as root's, mode 0700, or check that it is.
fn make_lock_dir(dir: &Path) -> Result<(), JobUidError> {
    if let Some(parent) = dir.parent() {
        match std::fs::DirBuilder::new().mode(0o755).create(parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(parent)(e)),
        }
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(dir)(e)),
    }
    let m = std::fs::symlink_metadata(dir).map_err(io_err(dir))?;
    if !m.is_dir() || m.uid() != 0 || m.mode() & 0o077 != 0 {
        return Err(JobUidError::UnsafeDir(dir.to_path_buf()));
    }
    Ok(())
}

/// Every user and group NSS enumerates (the local files, and directories that allow it).
fn check_accounts(range: UidRange) -> Result<(), JobUidError> {
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: the *ent_r functions write only into `pw`/`gr` and `buf` (whose length is
    // passed); the enumeration state is process-wide, and the launcher and supervisor that
    // call this are single-threaded.
    unsafe {
        libc::setpwent();
        loop {
            let mut pw: libc::passwd = std::mem::zeroed();
            let mut out: *mut libc::passwd = std::ptr::null_mut();
            let r = libc::getpwent_r(&mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out);
            if r != 0 || out.is_null() {
                break;
            }
            for (what, id) in [
                ("user", pw.pw_uid),
                ("the primary group of user", pw.pw_gid),
            ] {
                if range.contains(id) {
                    let name = CStr::from_ptr(pw.pw_name).to_string_lossy().into_owned();
                    libc::endpwent();
                    return Err(JobUidError::Account {
                        range,
                        what,
                        name,
                        id,
                    });
                }
            }
        }
        libc::endpwent();
        libc::setgrent();
        loop {
            let mut gr: libc::group = std::mem::zeroed();
            let mut out: *mut libc::group = std::ptr::null_mut();
            let r = libc::getgrent_r(&mut gr, buf.as_mut_ptr().cast(), buf.len(), &mut out);
            if r != 0 || out.is_null() {
                break;
            }
            if range.contains(gr.gr_gid) {
                let name = CStr::from_ptr(gr.gr_name).to_string_lossy().into_owned();
                libc::endgrent();
                return Err(JobUidError::Account {
                    range,
                    what: "group",
                    name,
                    id: gr.gr_gid,
                });
            }
        }
        libc::endgrent();
    }
    Ok(())
}

/// `name:first:count` lines of /etc/subuid or /etc/subgid (a missing file gives none).
fn check_subids(file: &Path, range: UidRange) -> Result<(), JobUidError> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(file)(e)),
    };
    for line in text.lines() {
        let mut f = line.trim().split(':');
        let (Some(name), Some(first), Some(count)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (Ok(first), Ok(count)) = (first.parse::<u64>(), count.parse::<u64>()) else {
            continue;
        };
        if count == 0 {
            continue;
        }
        let last = first + count - 1;
        if first <= range.last as u64 && last >= range.first as u64 {
            return Err(JobUidError::SubIds {
                range,
                file: file.display().to_string(),
                name: name.to_string(),
                first,
                last,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: job uid locks need root (the lock dir is root's 0700)");
            return false;
        }
        true
    }

    fn lock_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("jobcell-uids-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_held_uid_is_never_given_twice_and_comes_back_when_released() {
        if !root() {
            return;
        }
        let dir = lock_dir("held");
        let range = UidRange::parse("1879048192-1879048193").unwrap().unwrap();
        let a = acquire(&dir, range).unwrap();
        let b = acquire(&dir, range).unwrap();
        assert_ne!(a.uid(), b.uid());
        assert!(range.contains(a.uid()) && range.contains(b.uid()));
        let e = acquire(&dir, range).unwrap_err().to_string();
        assert_eq!(
            e,
            "config [run] job_uids = \"1879048192-1879048193\": every uid of the range is held by a running job"
        );
        let freed = a.uid();
        drop(a);
        let c = acquire(&dir, range).unwrap();
        assert_eq!(c.uid(), freed);
        drop((b, c));
        // Only the record of the range check is left.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [CHECKED]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn subordinate_id_ranges_are_collisions() {
        let f = std::env::temp_dir().join(format!("jobcell-subuid-{}", std::process::id()));
        std::fs::write(&f, "alice:100000:65536\n# junk\nbob:165536:65536\n").unwrap();
        let hit = UidRange::parse("165000-166000").unwrap().unwrap();
        let e = check_subids(&f, hit).unwrap_err().to_string();
        assert!(e.contains("gives 'alice' ids 100000-165535"), "{e}");
        let clear = UidRange::parse("231072-231100").unwrap().unwrap();
        check_subids(&f, clear).unwrap();
        std::fs::remove_file(&f).unwrap();
    }
}
