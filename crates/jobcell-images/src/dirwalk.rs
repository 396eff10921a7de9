//! Directory import: walk a host tree with the same rules as a tarball (copy, never follow a
//! symlink, never cross into another filesystem or mount).

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use crate::error::ImageError;
use crate::extract::{Extractor, Meta};
use crate::sys::{self, fd_b};

struct Walk {
    dev: u64,
    mnt: u64,
    /// (dev, ino) of multiply-linked files already copied -> their path, to recreate hardlinks.
    links: HashMap<(u64, u64), Vec<u8>>,
}

fn meta(st: &libc::stat) -> Meta {
    Meta {
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime: st.st_mtime,
    }
}

pub(crate) fn import_dir(x: &mut Extractor, src: &Path) -> Result<(), ImageError> {
    let ctx = |e: std::io::Error| ImageError::Io {
        context: format!("source directory {}", src.display()),
        source: e,
    };
    let root = sys::open_dir_path(src).map_err(ctx)?;
    let st = sys::fstat(fd_b(&root)).map_err(ctx)?;
    let mnt = sys::mnt_id_at(fd_b(&root), c".").map_err(ctx)?;
    x.dir(b"", meta(&st))?;
    let mut w = Walk {
        dev: st.st_dev,
        mnt,
        links: HashMap::new(),
    };
    walk(x, &mut w, &root, &mut Vec::new(), src)
}

fn walk(
    x: &mut Extractor,
    w: &mut Walk,
    dir: &OwnedFd,
    prefix: &mut Vec<u8>,
    src: &Path,
) -> Result<(), ImageError> {
    let err = |p: &[u8], e: std::io::Error| ImageError::Entry {
        entry: format!("{}/{}", src.display(), String::from_utf8_lossy(p)),
        reason: e.to_string(),
    };
    let mut names = sys::read_dir_names(fd_b(dir)).map_err(|e| err(prefix, e))?;
    // Sorted for a deterministic order (and digest-independent anyway).
    names.sort();
    for name in names {
        let plen = prefix.len();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(name.to_bytes());
        let r = entry(x, w, fd_b(dir), &name, prefix, src).map_err(|e| match e {
            ImageError::Io { source, .. } => err(prefix, source),
            e => e,
        });
        prefix.truncate(plen);
        r?;
    }
    Ok(())
}

fn entry(
    x: &mut Extractor,
    w: &mut Walk,
    dir: BorrowedFd,
    name: &CStr,
    path: &mut Vec<u8>,
    src: &Path,
) -> Result<(), ImageError> {
    let io = |e: std::io::Error| ImageError::Io {
        context: String::new(),
        source: e,
    };
    let st = sys::fstatat(dir, name).map_err(io)?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            if st.st_dev != w.dev || sys::mnt_id_at(dir, name).map_err(io)? != w.mnt {
                return x.skip(path, "mount point (other filesystem not imported)");
            }
            x.dir(path, meta(&st))?;
            let sub = sys::open_dir_at(dir, name).map_err(io)?;
            walk(x, w, &sub, path, src)
        }
        libc::S_IFREG => {
            if st.st_nlink > 1 {
                if let Some(first) = w.links.get(&(st.st_dev, st.st_ino)) {
                    let first = first.clone();
                    return x.hardlink(path, &first);
                }
                w.links.insert((st.st_dev, st.st_ino), path.clone());
            }
            let fd = sys::openat(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0).map_err(io)?;
            let mut f = File::from(fd).take(st.st_size as u64);
            x.file(path, meta(&st), st.st_size as u64, &mut f)
        }
        libc::S_IFLNK => {
            let t = sys::readlinkat(dir, name).map_err(io)?;
            x.symlink(path, meta(&st), &t)
        }
        libc::S_IFCHR => x.skip(path, "character device"),
        libc::S_IFBLK => x.skip(path, "block device"),
        libc::S_IFIFO => x.skip(path, "fifo"),
        libc::S_IFSOCK => x.skip(path, "socket"),
        _ => x.skip(path, "unknown file type"),
    }
}
