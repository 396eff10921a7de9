//! Small syscall wrappers the daemon and supervisors share.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat): with the pid it
/// names one process for the life of the system (pids are reused, start times do not repeat).
pub fn starttime(pid: i32) -> io::Result<u64> {
    let s = std::fs::read(format!("/proc/{pid}/stat"))?;
    // comm may contain spaces and parentheses: fields start after the last ')'.
    let close = s
        .iter()
        .rposition(|&b| b == b')')
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat"))?;
    let rest = std::str::from_utf8(&s[close + 1..])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat"))?;
    // After ')' come field 3 (state) onwards; starttime is field 22.
    rest.split_whitespace()
        .nth(19)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat"))
}

/// A pidfd for `pid`, checked to be the process that started at `start` (else ESRCH).
pub fn pidfd_for(pid: i32, start: u64) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by a successful pidfd_open; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // The pidfd pins the process: if its start time matches now, it is the one we meant.
    match starttime(pid) {
        Ok(s) if s == start => Ok(fd),
        _ => Err(io::Error::from_raw_os_error(libc::ESRCH)),
    }
}

/// Whether the process behind `fd` (pid `pid`) is listed in the cgroup.procs file `procs`.
/// The pidfd must still be alive after the read, or the listed pid may have been another
/// process's: Ok(None) when the process has exited.
pub fn pidfd_in_cgroup(fd: &OwnedFd, pid: i32, procs: &Path) -> io::Result<Option<bool>> {
    let text = std::fs::read_to_string(procs)?;
    let listed = text.lines().any(|l| l.trim().parse() == Ok(pid));
    if pidfd_exited(fd) {
        return Ok(None);
    }
    Ok(Some(listed))
}

/// Whether the process behind a pidfd has exited (pidfd polls readable then).
pub fn pidfd_exited(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one pollfd, the count passed, alive across the call; the pidfd stays open
    // (borrowed from `fd`).
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

pub fn pidfd_signal(fd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: the pidfd is open (borrowed from `fd`) and a null siginfo is allowed (the kernel
    // makes one as kill would).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Take an exclusive, non-blocking flock; Ok(false) when another process holds it.
pub fn try_flock(f: &File) -> io::Result<bool> {
    // SAFETY: plain integer arguments; `f` keeps its descriptor open across the call.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Create `path` as a new file, mode 0600, never through a symlink (a name that exists, link or
/// not, is not opened: it is the leftover of a dead process with the same pid, and replaced).
/// For everything root makes in the state dir.
pub fn create_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // unlink removes a symlink itself, never its target.
            std::fs::remove_file(path)?;
            open()
        }
        r => r,
    }
}

/// Let `uid` write (not read) the open file `f` by a POSIX access ACL: a job's default output is
/// root's, and the job writes it through the descriptor it inherits, but a job that reopens
/// that descriptor by name (`echo > /dev/stdout`, `tee /dev/stderr`) needs the right to open it
/// too. Its dir stays closed, so the name reaches it only through the job's own /proc.
pub fn acl_grant_write(f: &File, uid: u32) -> io::Result<()> {
    // linux/posix_acl_xattr.h: a version, then (tag, perm, id) entries sorted by tag.
    const VERSION: u32 = 2;
    const UNDEFINED: u32 = u32::MAX;
    let entries: [(u16, u16, u32); 5] = [
        (0x01, 6, UNDEFINED), // owner: rw
        (0x02, 2, uid),       // the job's user: w
        (0x04, 0, UNDEFINED), // owning group: -
        (0x10, 2, UNDEFINED), // mask: w
        (0x20, 0, UNDEFINED), // others: -
    ];
    let mut acl = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the length given.
    let rc = unsafe {
        libc::fsetxattr(
            f.as_raw_fd(),
            c"system.posix_acl_access".as_ptr(),
            acl.as_ptr().cast(),
            acl.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Write `data` to `path` atomically: a temporary file in the same dir, renamed over `path`.
/// Not durable (no fsync): a reader sees the old state or the whole new file, never a partial
/// one, as long as the machine stays up. Used for a supervisor's result, which the daemon
/// makes durable in its own group commit before anyone is told (ARCHITECTURE.md,
/// "Durability"); after a power loss the name may survive without its data, and the daemon's
/// restart path reads such a file as damaged, never as a result.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut f = create_private(&tmp)?;
    let r = f.write_all(data).and_then(|()| {
        drop(f);
        std::fs::rename(&tmp, path)
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Space set aside now for a [`write_atomic`] later that must not fail for a full filesystem:
/// a supervisor's result, after a job whose output filled the state dir. The temporary file is
/// allocated up front; committing writes into its blocks, trims it, and renames it over
/// `path` (atomic, not durable, as [`write_atomic`]). Dropped uncommitted, it is removed.
pub struct Reserved {
    file: Option<File>,
    tmp: PathBuf,
    path: PathBuf,
}

pub fn reserve_atomic(path: &Path, size: u64) -> io::Result<Reserved> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.reserved.{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let file = create_private(&tmp)?;
    // SAFETY: plain integer arguments; `file` keeps its descriptor open across the call.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, size as libc::off_t) } < 0 {
        let e = io::Error::last_os_error();
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(Reserved {
        file: Some(file),
        tmp,
        path: path.to_path_buf(),
    })
}

impl Reserved {
    pub fn commit(mut self, data: &[u8]) -> io::Result<()> {
        let mut f = self.file.take().expect("committed once");
        f.write_all(data)?;
        f.set_len(data.len() as u64)?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path)
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// systemd's readiness protocol: one datagram to $NOTIFY_SOCKET (a path, or '@' for the
/// abstract namespace). A no-op when the variable is unset.
pub fn sd_notify(msg: &str) -> io::Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => notify_socket(&socket, msg),
        None => Ok(()),
    }
}

/// Send `msg` as one datagram to `socket`: a path, or `@name` for the abstract name `name`.
fn notify_socket(socket: &std::ffi::OsStr, msg: &str) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None if bytes.is_empty() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is empty",
            ))
        }
        None => SocketAddr::from_pathname(Path::new(socket))?,
    };
    UnixDatagram::unbound()?.send_to_addr(msg.as_bytes(), &addr)?;
    Ok(())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A user's name from the passwd database (for display), else the number.
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: passwd is pointers and integers, for which all-zero (null) is valid; it is read only
    // after getpwuid_r fills it.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let rc =
        // SAFETY: `pw`, `buf` (with its length) and `out` are writable and outlive the call; the
        // strings it fills in point into `buf`.
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if rc == 0 && !out.is_null() {
        // SAFETY: after a successful lookup (`out` non-null) pw_name points at a NUL-terminated
        // name inside `buf`, still alive.
        let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
        return name.to_string_lossy().into_owned();
    }
    uid.to_string()
}

/// A user's uid and gid (passwd through NSS, as the launcher resolves it); a numeric uid with
/// no passwd entry stands for itself.
pub fn lookup_user(user: &jobcell_spec::UserSpec) -> Option<(u32, u32)> {
    // A name made only of digits (possible in raw API JSON) is a uid, as on the command line.
    let user = &jobcell_spec::UserSpec::parse(&user.to_string()).ok()?;
    match jobcell_sandbox::identity::lookup(user) {
        Ok(Some((_, uid, gid))) => Some((uid, gid)),
        _ => match user {
            jobcell_spec::UserSpec::Uid(u) => Some((*u, *u)),
            jobcell_spec::UserSpec::Name(_) => None,
        },
    }
}

/// Run `f` with this thread's filesystem identity (fsuid, fsgid and supplementary groups) set
/// to a user's, so every open, create and path lookup in `f` is checked with that user's
/// permissions (and a file it creates is the user's), symlinks and all: nothing `f` opens is
/// something the user could not open themself. The switch is the launcher's
/// (`jobcell_sandbox::fsid`): the calling thread only, and its restore is checked. Without
/// root this is the caller's identity already and `f` just runs. `f` must not start threads:
/// a thread inherits its creator's credentials.
pub fn as_user<T>(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce() -> T) -> io::Result<T> {
    if !is_root() {
        return Ok(f());
    }
    let user = jobcell_sandbox::identity::Identity {
        name: uid.to_string(),
        uid,
        gid,
        groups: groups.to_vec(),
    };
    jobcell_sandbox::fsid::with_rights_of(&user, f).map_err(io::Error::other)
}

/// Ask the filesystem to spread `dir`'s subdirectories over its allocation groups, as if
/// each were a top-level directory (ext2/3/4's `chattr +T`, FS_TOPDIR_FL for the Orlov
/// allocator); best effort, a no-op where unsupported. For the jobs dir: every job dir with
/// its files otherwise lands in the one group of the jobs dir, where, on an ext4 without a
/// journal, each new inode is found by scanning past every inode of the group freed in the
/// last 60-360 s (ext4's `recently_deleted()`): after thousands of job dirs were removed, that
/// scan was ~75% of the daemon's core thread CPU and ~40% of the supervisors'.
pub fn spread_subdirs(dir: &Path) {
    // The kernel reads and writes an int, whatever the ioctl's name says.
    const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;
    let Ok(f) = File::open(dir) else { return };
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes and FS_IOC_SETFLAGS reads the one c_int `flags`, alive across
    // both calls; `f` keeps its descriptor open.
    unsafe {
        if libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) == 0
            && flags & FS_TOPDIR_FL == 0
        {
            flags |= FS_TOPDIR_FL;
            libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags);
        }
    }
}

/// This boot of the kernel (a random UUID per boot): a daemon that finds another one recorded
/// knows the machine went down since, with whatever had not reached the disk.
pub fn boot_id() -> io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string())
}

/// This machine's host name (for the user log).
pub fn hostname() -> String {
    let mut b = [0u8; 256];
    // SAFETY: the kernel writes at most `b.len()` bytes into `b`, which outlives the call.
    if unsafe { libc::gethostname(b.as_mut_ptr().cast(), b.len()) } == 0 {
        let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        return String::from_utf8_lossy(&b[..n]).into_owned();
    }
    "localhost".into()
}

/// The CPUs this process may run on (its affinity: the node's CPUs for jobs, which run in
/// cgroups below the daemon's).
pub fn allowed_cpus() -> io::Result<std::collections::BTreeSet<u32>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills at most its size.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        set
    };
    Ok((0..libc::CPU_SETSIZE as u32)
        // SAFETY: i < CPU_SETSIZE, within the set.
        .filter(|&i| unsafe { libc::CPU_ISSET(i as usize, &set) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn notifications_reach_path_and_abstract_sockets() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        notify_socket(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("jobcell-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        notify_socket(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        for bad in ["", "relative-but-nobody-listens"] {
            assert!(
                notify_socket(std::ffi::OsStr::new(bad), "X").is_err(),
                "{bad:?}"
            );
        }
        let long = "/".to_string() + &"x".repeat(200);
        assert!(notify_socket(std::ffi::OsStr::new(&long), "X").is_err());
    }

    #[test]
    fn spread_subdirs_marks_the_dir_a_top_of_hierarchies() {
        let d = tempfile::tempdir().unwrap();
        let flags = || {
            let f = File::open(d.path()).unwrap();
            let mut v: libc::c_int = 0;
            // SAFETY: FS_IOC_GETFLAGS writes the one c_int `v`, alive across the call; `f` is open.
            let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut v) };
            (rc == 0).then_some(v)
        };
        if flags().is_none() {
            eprintln!(
                "SKIPPED: spread_subdirs: {} has no inode flags (not ext2/3/4?)",
                d.path().display()
            );
            return;
        }
        spread_subdirs(d.path());
        let v = flags().unwrap();
        if v & 0x0002_0000 == 0 {
            // Filesystems with flags but without the Orlov allocator (xfs, btrfs) refuse it.
            eprintln!(
                "SKIPPED: spread_subdirs: the filesystem of {} keeps no TOPDIR flag",
                d.path().display()
            );
            return;
        }
        // Idempotent, and other flags are kept.
        spread_subdirs(d.path());
        assert_eq!(flags(), Some(v));
    }

    #[test]
    fn as_user_opens_with_the_users_rights_on_this_thread_only() {
        if !is_root() {
            eprintln!(
                "SKIPPED: as_user_opens_with_the_users_rights_on_this_thread_only: needs root"
            );
            return;
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let secret = d.path().join("secret");
        std::fs::write(&secret, "x").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (uid, gid) = (65534, 65534);
        let r = as_user(uid, gid, &[], || std::fs::File::open(&secret)).unwrap();
        assert_eq!(
            r.unwrap_err().kind(),
            io::ErrorKind::PermissionDenied,
            "root's 0600 file must be closed to the user"
        );
        // A file made as the user is the user's.
        let mine = d.path().join("mine");
        as_user(uid, gid, &[], || std::fs::write(&mine, "y"))
            .unwrap()
            .unwrap();
        let m = std::fs::metadata(&mine).unwrap();
        assert_eq!((m.uid(), m.gid()), (uid, gid));
        // And afterwards this thread is root again (groups included).
        std::fs::File::open(&secret).unwrap();
        // SAFETY: a zero count with a null list only asks for the number of groups; nothing is
        // written.
        let groups_before = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        as_user(uid, gid, &[uid], || ()).unwrap();
        assert_eq!(
            // SAFETY: a zero count with a null list only asks for the number of groups; nothing is
            // written.
            unsafe { libc::getgroups(0, std::ptr::null_mut()) },
            groups_before
        );
        // Another thread (made before: a thread inherits its creator's credentials), asked
        // while this one is the user, keeps root's rights.
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (res_tx, res_rx) = std::sync::mpsc::channel();
        let other = std::thread::spawn({
            let secret = secret.clone();
            move || {
                go_rx.recv().unwrap();
                res_tx.send(std::fs::File::open(&secret).is_ok()).unwrap();
            }
        });
        let seen = as_user(uid, gid, &[], || {
            go_tx.send(()).unwrap();
            res_rx.recv().unwrap()
        })
        .unwrap();
        other.join().unwrap();
        assert!(seen);
    }
}
