//! Thin, fd-relative wrappers over the syscalls the store needs.
//!
//! Everything that touches an image tree goes through a directory fd and a single path
//! component, with `O_NOFOLLOW`, so a symlink planted in a tree can never redirect a write
//! or a removal onto the host.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Retry a syscall on EINTR (our SIGINT handler does not use SA_RESTART).
fn retry<F: FnMut() -> libc::c_int>(mut f: F) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

pub(crate) fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

pub(crate) fn path_c(p: &Path) -> io::Result<CString> {
    cstr(p.as_os_str().as_bytes())
}

pub(crate) const DIR_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// Open a directory by absolute/relative host path (used only for configured roots: the
/// images dir itself, the source dir of a directory import).
pub(crate) fn open_dir_path(p: &Path) -> io::Result<OwnedFd> {
    let c = path_c(p)?;
    let open = |flags| {
        retry(|| unsafe { libc::open(c.as_ptr(), flags | libc::O_DIRECTORY | libc::O_CLOEXEC) })
    };
    let fd = match open(libc::O_RDONLY) {
        // A traversable but unreadable dir (the 0711 images dir, for other users): O_PATH is
        // enough to resolve names below it.
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => open(libc::O_PATH)?,
        r => r?,
    };
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open one directory component below `dir` without following a symlink.
pub(crate) fn open_dir_at(dir: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    let fd = retry(|| unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), DIR_FLAGS) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn openat(
    dir: BorrowedFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let fd = retry(|| unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn mkdirat(dir: BorrowedFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    retry(|| unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub(crate) fn symlinkat(target: &CStr, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    retry(|| unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

pub(crate) fn linkat(
    odir: BorrowedFd,
    oname: &CStr,
    ndir: BorrowedFd,
    nname: &CStr,
) -> io::Result<()> {
    // flags = 0: never follow a symlink at the source.
    retry(|| unsafe {
        libc::linkat(
            odir.as_raw_fd(),
            oname.as_ptr(),
            ndir.as_raw_fd(),
            nname.as_ptr(),
            0,
        )
    })
    .map(drop)
}

pub(crate) fn unlinkat(dir: BorrowedFd, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    retry(|| unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub(crate) fn renameat(
    odir: BorrowedFd,
    oname: &CStr,
    ndir: BorrowedFd,
    nname: &CStr,
) -> io::Result<()> {
    retry(|| unsafe {
        libc::renameat(
            odir.as_raw_fd(),
            oname.as_ptr(),
            ndir.as_raw_fd(),
            nname.as_ptr(),
        )
    })
    .map(drop)
}

pub(crate) fn fstatat(dir: BorrowedFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    retry(|| unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

pub(crate) fn fstat(fd: BorrowedFd) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    retry(|| unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// Mount id of `name` below `dir` (not following symlinks): tells a mount point on the same
/// device apart from a plain directory.
pub(crate) fn mnt_id_at(dir: BorrowedFd, name: &CStr) -> io::Result<u64> {
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    retry(|| unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    })?;
    Ok(stx.stx_mnt_id)
}

pub(crate) fn fchmod(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    retry(|| unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

pub(crate) fn fchown(fd: BorrowedFd, uid: u32, gid: u32) -> io::Result<()> {
    retry(|| unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

pub(crate) fn lchownat(dir: BorrowedFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    retry(|| unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Set the modification time (atime left as now).
pub(crate) fn futimens_mtime(fd: BorrowedFd, mtime: i64) -> io::Result<()> {
    let ts = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: mtime as libc::time_t,
            tv_nsec: 0,
        },
    ];
    retry(|| unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map(drop)
}

pub(crate) fn readlinkat(dir: BorrowedFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

pub(crate) fn syncfs(fd: BorrowedFd) -> io::Result<()> {
    retry(|| unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

pub(crate) fn fsync(fd: BorrowedFd) -> io::Result<()> {
    retry(|| unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

/// flock; `Ok(false)` when non-blocking and somebody else holds a conflicting lock.
pub(crate) fn flock(fd: BorrowedFd, op: libc::c_int) -> io::Result<bool> {
    match retry(|| unsafe { libc::flock(fd.as_raw_fd(), op) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Names in a directory (without `.`/`..`), read through a duplicate of `fd`.
pub(crate) fn read_dir_names(fd: BorrowedFd) -> io::Result<Vec<CString>> {
    let dup = retry(|| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    let dirp = unsafe { libc::fdopendir(dup) };
    if dirp.is_null() {
        let e = io::Error::last_os_error();
        unsafe { libc::close(dup) };
        return Err(e);
    }
    unsafe { libc::rewinddir(dirp) };
    let mut out = Vec::new();
    loop {
        unsafe { *libc::__errno_location() = 0 };
        let ent = unsafe { libc::readdir64(dirp) };
        if ent.is_null() {
            let err = unsafe { *libc::__errno_location() };
            unsafe { libc::closedir(dirp) };
            if err != 0 {
                return Err(io::Error::from_raw_os_error(err));
            }
            return Ok(out);
        }
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b == b"." || b == b".." {
            continue;
        }
        out.push(name.to_owned());
    }
}

pub(crate) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Remove `name` below `parent` and everything under it, never following a symlink and never
/// descending into another filesystem or mount (those are left in place and reported as an
/// error, so a bind mount inside a tree can never cost host data).
pub(crate) fn remove_tree_at(parent: BorrowedFd, name: &CStr) -> io::Result<()> {
    let pst = fstat(parent)?;
    let pmnt = mnt_id_at(parent, c".")?;
    remove_rec(parent, name, pst.st_dev, pmnt, 0)
}

fn remove_rec(parent: BorrowedFd, name: &CStr, dev: u64, mnt: u64, depth: u32) -> io::Result<()> {
    let st = match fstatat(parent, name) {
        Ok(st) => st,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !is_dir(&st) {
        return unlinkat(parent, name, 0);
    }
    if st.st_dev != dev || mnt_id_at(parent, name)? != mnt {
        return Err(io::Error::other(format!(
            "refusing to remove {:?}: it is on another filesystem or a mount point",
            OsStr::from_bytes(name.to_bytes())
        )));
    }
    if depth > 4096 {
        return Err(io::Error::other("directory tree too deep to remove"));
    }
    let fd = open_dir_at(parent, name)?;
    let fst = fstat(fd_b(&fd))?;
    if fst.st_ino != st.st_ino || fst.st_dev != st.st_dev {
        return Err(io::Error::other("directory changed while removing it"));
    }
    // Image trees are made read-only; we own them (or are root), so make them writable again.
    if fst.st_mode & 0o700 != 0o700 {
        let _ = fchmod(fd_b(&fd), 0o700);
    }
    for child in read_dir_names(fd_b(&fd))? {
        remove_rec(fd_b(&fd), &child, dev, mnt, depth + 1)?;
    }
    drop(fd);
    unlinkat(parent, name, libc::AT_REMOVEDIR)
}

pub(crate) fn fd_b(fd: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    fd.as_fd()
}

#[allow(dead_code)]
pub(crate) fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}

/// The process umask, read from /proc (calling umask() to read it would briefly change it for
/// every thread). Unknown -> 0o777, i.e. always fchmod.
pub(crate) fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}

pub(crate) fn geteuid() -> u32 {
    unsafe { libc::geteuid() }
}

pub(crate) fn getegid() -> u32 {
    unsafe { libc::getegid() }
}

pub(crate) fn getuid() -> u32 {
    unsafe { libc::getuid() }
}

pub(crate) fn getgid() -> u32 {
    unsafe { libc::getgid() }
}
