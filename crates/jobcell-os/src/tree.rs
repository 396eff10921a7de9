//! The one tree removal: never follows a symlink, never enters or unlinks anything on another
//! mount, and holds a bounded number of descriptors however deep the tree.
//!
//! Every step is `openat`/`unlinkat` relative to a directory descriptor with `O_NOFOLLOW`;
//! entries are compared by `statx` mount id with the tree's root (which also catches a bind
//! mount of the same filesystem, invisible to `st_dev`). A directory is first simply `rmdir`ed
//! (which neither follows a symlink nor removes a mount point): only what rmdir refuses is
//! opened and walked. Below [`MAX_OPEN_DIRS`] levels the outer descriptors are closed and
//! re-opened on the way back up through `..`, checked to be the same directory (mount, device,
//! inode) as before.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use thiserror::Error;

use crate::dir::{fchmod, ident_at, open_dir_at, read_dir_names, retry, unlinkat, Ident};

#[derive(Debug, Error)]
pub enum RemoveTreeError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("left {left} entries on other mounts in place ({first})")]
    CrossesMount { left: usize, first: String },
}

/// The most directory descriptors a removal holds at once (plus one while listing a
/// directory), however deep the tree.
pub const MAX_OPEN_DIRS: usize = 16;

struct Frame {
    /// None once closed to stay within [`MAX_OPEN_DIRS`]; the top frame always has one.
    fd: Option<OwnedFd>,
    ident: Ident,
    /// Entries still to remove.
    pending: Vec<CString>,
    /// This directory's name in its parent.
    name: CString,
}

fn is_errno(e: &io::Error, errno: i32) -> bool {
    e.raw_os_error() == Some(errno)
}

/// Delete `parent/name` and everything below it that is on the same mount. A missing `name`
/// is fine. Entries on other mounts are left in place (with the directories holding them) and
/// reported as [`RemoveTreeError::CrossesMount`] once everything else is gone.
pub fn remove_tree_at(parent: BorrowedFd, name: &CStr) -> Result<(), RemoveTreeError> {
    let root = match ident_at(parent, name) {
        Ok(i) => i,
        Err(e) if is_errno(&e, libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if !root.is_dir {
        return Ok(unlinkat(parent, name, 0)?);
    }
    let root_fd = open_checked(parent, name, &root)?;
    let pending = read_dir_names(root_fd.as_fd())?;
    let mut stack = vec![Frame {
        fd: Some(root_fd),
        ident: root,
        pending,
        name: name.to_owned(),
    }];
    let mut open = 1usize;
    let mut skipped: Vec<String> = Vec::new();

    while let Some(top) = stack.last_mut() {
        let Some(child) = top.pending.pop() else {
            // Directory emptied: remove it from its parent.
            let done = stack.pop().expect("the loop saw a top frame");
            let done_fd = done.fd.expect("the top frame always holds its descriptor");
            open -= 1;
            let Some(up) = stack.last_mut() else {
                drop(done_fd);
                rmdir_at(parent, &done.name, !skipped.is_empty())?;
                break;
            };
            if up.fd.is_none() {
                let fd = open_dir_at(done_fd.as_fd(), c"..")?;
                if ident_at(fd.as_fd(), c"")? != up.ident {
                    return Err(
                        io::Error::other("a directory moved during removal; stopped").into(),
                    );
                }
                up.fd = Some(fd);
                open += 1;
            }
            drop(done_fd);
            let up_fd = up.fd.as_ref().expect("re-opened above").as_fd();
            rmdir_at(up_fd, &done.name, !skipped.is_empty())?;
            continue;
        };
        let fd = top
            .fd
            .as_ref()
            .expect("the top frame always holds its descriptor")
            .as_fd();
        let id = match ident_at(fd, &child) {
            Ok(i) => i,
            Err(e) if is_errno(&e, libc::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if id.mnt_id != root.mnt_id {
            // A mount point: never descend, never unlink.
            skipped.push(child.to_string_lossy().into_owned());
            continue;
        }
        if !id.is_dir {
            match unlinkat(fd, &child, 0) {
                // A directory the job left read-only: ours (or root's) to make writable.
                Err(e) if is_errno(&e, libc::EACCES) => {
                    fchmod(fd, 0o700)?;
                    unlinkat(fd, &child, 0)?;
                }
                r => r?,
            }
            continue;
        }
        // Most directories are empty by now (the private dirs of a job that cleaned up): rmdir
        // needs no descent. It never follows a symlink (ENOTDIR) and never removes a mount
        // point (EBUSY); anything it refuses is walked below.
        match unlinkat(fd, &child, libc::AT_REMOVEDIR) {
            Ok(()) => continue,
            Err(e) if is_errno(&e, libc::ENOENT) => continue,
            Err(_) => {}
        }
        if open >= MAX_OPEN_DIRS {
            // Deep trees: close the outermost descriptors (never the root's or the top's);
            // they are re-opened through ".." on the way back up.
            let last = stack.len() - 1;
            for f in &mut stack[1..last] {
                if open < MAX_OPEN_DIRS / 2 {
                    break;
                }
                if f.fd.take().is_some() {
                    open -= 1;
                }
            }
        }
        let top = stack.last().expect("the loop saw a top frame");
        let fd = top.fd.as_ref().expect("never closed above").as_fd();
        let cfd = open_checked(fd, &child, &id)?;
        let pending = read_dir_names(cfd.as_fd())?;
        open += 1;
        stack.push(Frame {
            fd: Some(cfd),
            ident: id,
            pending,
            name: child,
        });
    }
    if let Some(first) = skipped.first() {
        return Err(RemoveTreeError::CrossesMount {
            left: skipped.len(),
            first: first.clone(),
        });
    }
    Ok(())
}

/// Open directory `name` below `parent` for removal and check it is still what `ident_at` saw
/// (not swapped for another directory or a mount in between). A directory left chmod 000 is
/// made searchable first (root does not need this; a rootless launcher does).
fn open_checked(parent: BorrowedFd, name: &CStr, expected: &Ident) -> io::Result<OwnedFd> {
    let fd = match open_dir_at(parent, name) {
        Err(e) if is_errno(&e, libc::EACCES) => {
            chmod_dir_nofollow(parent, name, 0o700)?;
            open_dir_at(parent, name)?
        }
        r => r?,
    };
    if ident_at(fd.as_fd(), c"")? != *expected {
        return Err(io::Error::other(
            "a directory was swapped during removal; stopped",
        ));
    }
    Ok(fd)
}

/// chmod directory `name` below `parent`, never a symlink's target: fchmodat cannot refuse to
/// follow one, so the directory is pinned with an `O_PATH|O_NOFOLLOW` descriptor and changed
/// through its /proc/self/fd link, which names that inode and nothing else.
fn chmod_dir_nofollow(parent: BorrowedFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `name` is NUL-terminated and outlives the call; `parent` is borrowed, so open.
    let raw = retry(|| unsafe { libc::openat(parent.as_raw_fd(), name.as_ptr(), flags) })?;
    // SAFETY: `raw` was just returned by a successful openat; nothing else owns it.
    let pinned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    let link = CString::new(format!("/proc/self/fd/{}", pinned.as_raw_fd())).expect("no NUL");
    // SAFETY: `link` is NUL-terminated and outlives the call.
    retry(|| unsafe { libc::chmod(link.as_ptr(), mode) }).map(drop)
}

/// rmdir, making the parent writable first if it was left read-only (matters rootless). With
/// `tolerate_full`, a directory still holding a skipped mount point is left in place (the
/// caller reports those mounts).
fn rmdir_at(parent: BorrowedFd, name: &CStr, tolerate_full: bool) -> io::Result<()> {
    match unlinkat(parent, name, libc::AT_REMOVEDIR) {
        Err(e) if is_errno(&e, libc::EACCES) => {
            fchmod(parent, 0o700)?;
            unlinkat(parent, name, libc::AT_REMOVEDIR)
        }
        Err(e) if tolerate_full && is_errno(&e, libc::ENOTEMPTY) => Ok(()),
        r => r,
    }
}
