//! Thin wrappers over the descriptor-relative calls: one path component below a directory
//! descriptor, never following a symlink, retried on EINTR (callers install signal handlers
//! without SA_RESTART). Errors are the kernel's, as `io::Error`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The current directory as a descriptor for the `*at` calls.
// SAFETY: AT_FDCWD is not -1, and the kernel reads it as "the current directory" in every
// `*at` call, so the borrow can never refer to a closed or reused descriptor.
pub const CWD: BorrowedFd<'static> = unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) };

/// Flags every directory open uses: a symlink in place of a directory fails with ELOOP.
pub const DIR_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// A C string from bytes; a NUL inside is an `InvalidInput` error, not a truncated name.
pub fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

/// A C string from a path; a NUL inside is an `InvalidInput` error.
pub fn path_cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// A libc return value as a result (`-1` and errno become the error).
pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Run `f` until it does not fail with EINTR.
pub fn retry<F: FnMut() -> libc::c_int>(mut f: F) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Take ownership of a descriptor a successful call just returned.
fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: callers pass only the non-negative result of an open/openat that just succeeded:
    // a fresh descriptor no other owner knows about.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Open directory `name` below `dir` without following a symlink (close-on-exec).
pub fn open_dir_at(dir: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is borrowed, so open.
    let fd = retry(|| unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), DIR_FLAGS) })?;
    Ok(owned(fd))
}

/// Open the directory at `path` (relative to the current directory), the last component not
/// followed if it is a symlink.
pub fn open_dir(path: &CStr) -> io::Result<OwnedFd> {
    open_dir_at(CWD, path)
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)`.
pub fn openat(
    dir: BorrowedFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is borrowed, so open; the
    // mode is passed as the variadic argument's promoted type.
    let fd = retry(|| unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    Ok(owned(fd))
}

pub fn mkdirat(dir: BorrowedFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is borrowed, so open.
    retry(|| unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and outlive the call; `dir` is borrowed, so open.
    retry(|| unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// A hard link; a symlink at the source is linked itself, never followed.
pub fn linkat(odir: BorrowedFd, oname: &CStr, ndir: BorrowedFd, nname: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated and outlive the call; both dirs are borrowed, so
    // open. flags = 0 means no symlink following.
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

pub fn unlinkat(dir: BorrowedFd, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is borrowed, so open.
    retry(|| unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub fn renameat(odir: BorrowedFd, oname: &CStr, ndir: BorrowedFd, nname: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated and outlive the call; both dirs are borrowed, so
    // open.
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

/// `lstat` of `name` below `dir`.
pub fn fstatat(dir: BorrowedFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: `stat` is plain integers, for which all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated and `st` is a writable `stat`, both live across the
    // call; `dir` is borrowed, so open.
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

pub fn fstat(fd: BorrowedFd) -> io::Result<libc::stat> {
    // SAFETY: `stat` is plain integers, for which all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a writable `stat` that outlives the call; `fd` is borrowed, so open.
    retry(|| unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// What a directory entry is, for telling a mount point or a swapped entry apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ident {
    /// The mount it is on: tells a bind mount of the same filesystem apart, which `st_dev`
    /// cannot.
    pub mnt_id: u64,
    /// The device too: btrfs subvolumes of one mount number their inodes each from 256.
    pub dev: (u32, u32),
    pub ino: u64,
    pub is_dir: bool,
}

/// The identity of `name` below `dir` (not following a symlink, not triggering an automount);
/// `c""` names `dir` itself.
pub fn ident_at(dir: BorrowedFd, name: &CStr) -> io::Result<Ident> {
    // SAFETY: `statx` is plain integers, for which all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated and `stx` a writable `statx`, both live across the call;
    // `dir` is borrowed, so open.
    retry(|| unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT | libc::AT_EMPTY_PATH,
            libc::STATX_TYPE | libc::STATX_INO | libc::STATX_MNT_ID,
            &mut stx,
        )
    })?;
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "kernel gives no mount id (statx)",
        ));
    }
    Ok(Ident {
        mnt_id: stx.stx_mnt_id,
        dev: (stx.stx_dev_major, stx.stx_dev_minor),
        ino: stx.stx_ino,
        is_dir: (stx.stx_mode as u32 & libc::S_IFMT) == libc::S_IFDIR,
    })
}

pub fn fchmod(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    // SAFETY: plain integer arguments; `fd` is borrowed, so open.
    retry(|| unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

pub fn fchown(fd: BorrowedFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain integer arguments; `fd` is borrowed, so open.
    retry(|| unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// Change the owner of `name` below `dir`, a symlink itself rather than its target.
pub fn lchownat(dir: BorrowedFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is borrowed, so open.
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

/// Set the modification time (atime left as is).
pub fn futimens_mtime(fd: BorrowedFd, mtime: i64) -> io::Result<()> {
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
    // SAFETY: `ts` is the two-element array futimens reads, alive across the call; `fd` is
    // borrowed, so open.
    retry(|| unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map(drop)
}

/// A symlink's target (at most 4096 bytes, PATH_MAX).
pub fn readlinkat(dir: BorrowedFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which outlives the call;
    // `name` is NUL-terminated; `dir` is borrowed, so open.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast::<libc::c_char>(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

pub fn syncfs(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: plain integer argument; `fd` is borrowed, so open.
    retry(|| unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

pub fn fsync(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: plain integer argument; `fd` is borrowed, so open.
    retry(|| unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

/// flock; `Ok(false)` when non-blocking and somebody else holds a conflicting lock.
pub fn flock(fd: BorrowedFd, op: libc::c_int) -> io::Result<bool> {
    // SAFETY: plain integer arguments; `fd` is borrowed, so open.
    match retry(|| unsafe { libc::flock(fd.as_raw_fd(), op) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Names in a directory (without `.`/`..`), read through a duplicate of `fd` from the start.
/// Holds one extra descriptor while it runs.
pub fn read_dir_names(fd: BorrowedFd) -> io::Result<Vec<CString>> {
    // SAFETY: plain integer arguments; `fd` is borrowed, so open.
    let dup = retry(|| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: `dup` is a fresh descriptor only this function knows; on success the DIR stream
    // owns it (closedir closes it).
    let dirp = unsafe { libc::fdopendir(dup) };
    if dirp.is_null() {
        let e = io::Error::last_os_error();
        drop(owned(dup));
        return Err(e);
    }
    // The duplicate shares the file offset with `fd`, which may have been read before.
    // SAFETY: `dirp` is the valid stream fdopendir just returned.
    unsafe { libc::rewinddir(dirp) };
    let mut out = Vec::new();
    let result = loop {
        // readdir tells the end from an error only by errno.
        // SAFETY: errno is this thread's own.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `dirp` is valid until the closedir below, and no other thread uses it.
        let ent = unsafe { libc::readdir64(dirp) };
        if ent.is_null() {
            // SAFETY: errno is this thread's own.
            let err = unsafe { *libc::__errno_location() };
            break if err == 0 {
                Ok(out)
            } else {
                Err(io::Error::from_raw_os_error(err))
            };
        }
        // SAFETY: a non-null entry stays valid until the next readdir on `dirp`, and its
        // d_name is NUL-terminated; the name is copied before that.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b != b"." && b != b".." {
            out.push(name.to_owned());
        }
    };
    // SAFETY: `dirp` is valid and not used after this; closedir also closes `dup`.
    unsafe { libc::closedir(dirp) };
    result
}
