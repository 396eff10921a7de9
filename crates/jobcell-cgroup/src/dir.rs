//! Directory-fd helpers: every cgroup file is opened relative to a kept directory fd
//! (`openat`), so a launch costs one `openat`+`write`+`close` per setting and no path walks.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::CgroupError;

/// An open cgroup directory plus its path (kept for messages and inotify).
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cpath(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

impl Dir {
    pub(crate) fn open(path: &Path) -> Result<Dir, CgroupError> {
        let c = cpath(path).map_err(|e| CgroupError::io("open", path, e))?;
        // SAFETY: plain open(2) on a NUL-terminated path.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        let fd = check(fd).map_err(|e| CgroupError::io("open", path, e))?;
        Ok(Dir {
            // SAFETY: fd was just returned by open and is owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn borrow(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn try_clone(&self) -> Result<Dir, CgroupError> {
        Ok(Dir {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| CgroupError::io("dup", &self.path, e))?,
            path: self.path.clone(),
        })
    }

    /// `mkdirat` + open. `Ok(None)` if it already exists (callers decide if that is an error).
    pub(crate) fn mkdir_child(&self, name: &str) -> Result<Option<Dir>, CgroupError> {
        let c = cstr(name).map_err(|e| CgroupError::io("mkdir", &self.path.join(name), e))?;
        // SAFETY: mkdirat with a valid dir fd and NUL-terminated name.
        let rc = unsafe { libc::mkdirat(self.raw(), c.as_ptr(), 0o755) };
        if let Err(e) = check(rc) {
            if e.raw_os_error() == Some(libc::EEXIST) {
                return Ok(None);
            }
            return Err(CgroupError::io("mkdir", &self.path.join(name), e));
        }
        match self.open_child(name) {
            Ok(d) => Ok(Some(d)),
            Err(e) => {
                let _ = self.rmdir_child(name);
                Err(e)
            }
        }
    }

    pub(crate) fn open_child(&self, name: &str) -> Result<Dir, CgroupError> {
        let path = self.path.join(name);
        let c = cstr(name).map_err(|e| CgroupError::io("open", &path, e))?;
        // SAFETY: openat with a valid dir fd; O_NOFOLLOW: cgroupfs has no symlinks, refuse any.
        let fd = unsafe {
            libc::openat(
                self.raw(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        let fd = check(fd).map_err(|e| CgroupError::io("open", &path, e))?;
        Ok(Dir {
            // SAFETY: fresh fd from openat, owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path,
        })
    }

    pub(crate) fn rmdir_child(&self, name: &str) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: unlinkat(AT_REMOVEDIR) only removes an empty directory; never recursive.
        check(unsafe { libc::unlinkat(self.raw(), c.as_ptr(), libc::AT_REMOVEDIR) }).map(|_| ())
    }

    /// Open a file below this directory (O_CLOEXEC, never following symlinks).
    pub(crate) fn open_file(&self, file: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
        let c = cstr(file)?;
        // SAFETY: openat with valid dir fd and NUL-terminated name.
        let fd = check(unsafe {
            libc::openat(
                self.raw(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        })?;
        // SAFETY: fresh fd.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Write `value` to `file` in one write(2) — cgroupfs parses each write as one command.
    pub(crate) fn write_raw(&self, file: &str, value: &[u8]) -> io::Result<()> {
        let fd = self.open_file(file, libc::O_WRONLY)?;
        write_all_once(fd.as_raw_fd(), value)
    }

    pub(crate) fn write(&self, file: &str, value: &str) -> Result<(), CgroupError> {
        self.write_raw(file, value.as_bytes())
            .map_err(|e| CgroupError::Write {
                path: self.path.join(file),
                value: value.trim_end().to_string(),
                source: e,
            })
    }

    pub(crate) fn read_raw(&self, file: &str) -> io::Result<String> {
        let fd = self.open_file(file, libc::O_RDONLY)?;
        read_fd_to_string(fd.as_raw_fd())
    }

    pub(crate) fn read(&self, file: &str) -> Result<String, CgroupError> {
        self.read_raw(file)
            .map_err(|e| CgroupError::io("read", &self.path.join(file), e))
    }

    /// Read a file that may be absent on older kernels: `Ok(None)` on ENOENT.
    pub(crate) fn read_opt(&self, file: &str) -> Result<Option<String>, CgroupError> {
        match self.read_raw(file) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(CgroupError::io("read", &self.path.join(file), e)),
        }
    }

    pub(crate) fn has(&self, file: &str) -> bool {
        let Ok(c) = cstr(file) else { return false };
        // SAFETY: faccessat on a valid dir fd.
        unsafe {
            libc::faccessat(
                self.raw(),
                c.as_ptr(),
                libc::F_OK,
                libc::AT_SYMLINK_NOFOLLOW,
            ) == 0
        }
    }

    /// Pids listed in `cgroup.procs`.
    pub(crate) fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let s = self.read("cgroup.procs")?;
        Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Names of the sub-directories (cgroups) of this directory.
    pub(crate) fn subdirs(&self) -> Result<Vec<String>, CgroupError> {
        let rd =
            std::fs::read_dir(&self.path).map_err(|e| CgroupError::io("list", &self.path, e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| CgroupError::io("list", &self.path, e))?;
            if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                if let Some(n) = ent.file_name().to_str() {
                    out.push(n.to_string());
                }
            }
        }
        Ok(out)
    }
}

pub(crate) fn write_all_once(fd: RawFd, value: &[u8]) -> io::Result<()> {
    // SAFETY: write from a valid buffer.
    let n = unsafe { libc::write(fd, value.as_ptr().cast(), value.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != value.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
    }
    Ok(())
}

pub(crate) fn read_fd_to_string(fd: RawFd) -> io::Result<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        // SAFETY: read into a stack buffer of the given size.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n as usize]);
    }
    String::from_utf8(buf).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Parse `key value` lines (memory.stat, cpu.stat, memory.events, ...).
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

/// Parse a single number, treating "max" as `None`.
pub(crate) fn single(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}
