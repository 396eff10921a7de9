//! The store's syscalls: the descriptor-relative ones come from `jobcell_os` (one component
//! below a directory fd, `O_NOFOLLOW`), so a symlink planted in a tree can never redirect a
//! write or a removal onto the host; the few below are the store's own.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

pub(crate) use jobcell_os::dir::{
    cstr, fchmod, fchown, flock, fstat, fstatat, fsync, futimens_mtime, is_dir, lchownat, linkat,
    mkdirat, open_dir_at, openat, read_dir_names, readlinkat, renameat, retry, symlinkat, syncfs,
    unlinkat,
};
use jobcell_os::dir::{ident_at, path_cstr};

pub(crate) fn path_c(p: &Path) -> io::Result<std::ffi::CString> {
    path_cstr(p)
}

/// Open a directory by absolute/relative host path (used only for configured roots: the
/// images dir itself, the source dir of a directory import).
pub(crate) fn open_dir_path(p: &Path) -> io::Result<OwnedFd> {
    let c = path_c(p)?;
    let open = |flags| {
        // SAFETY: `c` is NUL-terminated and outlives every call of the closure.
        retry(|| unsafe { libc::open(c.as_ptr(), flags | libc::O_DIRECTORY | libc::O_CLOEXEC) })
    };
    let fd = match open(libc::O_RDONLY) {
        // A traversable but unreadable dir (the 0711 images dir, for other users): O_PATH is
        // enough to resolve names below it.
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => open(libc::O_PATH)?,
        r => r?,
    };
    // SAFETY: `fd` was just returned by a successful open; nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Mount id of `name` below `dir` (not following symlinks): tells a mount point on the same
/// device apart from a plain directory.
pub(crate) fn mnt_id_at(dir: BorrowedFd, name: &std::ffi::CStr) -> io::Result<u64> {
    ident_at(dir, name).map(|i| i.mnt_id)
}

/// Remove `name` below `parent` and everything under it with the workspace's one tree removal
/// (`jobcell_os::remove_tree_at`): never following a symlink, never entering another mount
/// (left in place and reported as an error, so a bind mount inside a tree can never cost host
/// data), with a bounded number of descriptors however deep the tree.
pub(crate) fn remove_tree_at(parent: BorrowedFd, name: &std::ffi::CStr) -> io::Result<()> {
    jobcell_os::remove_tree_at(parent, name).map_err(|e| match e {
        jobcell_os::RemoveTreeError::Io(e) => e,
        e => io::Error::other(format!(
            "refusing to remove {}: {e}",
            name.to_string_lossy()
        )),
    })
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
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

pub(crate) fn getegid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

pub(crate) fn getuid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

pub(crate) fn getgid() -> u32 {
    // SAFETY: getgid has no preconditions and cannot fail.
    unsafe { libc::getgid() }
}
