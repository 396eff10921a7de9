//! Kernel event fds: OOM notification (v2 inotify on `memory.events`, v1 eventfd registered on
//! `memory.oom_control`) and PSI memory-pressure triggers (v2 only).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dir::{keyed, read_fd_to_string, write_all_once, Dir};
use crate::CgroupError;

/// Pollable OOM notification for one job cgroup.
///
/// `fd()` becomes readable (POLLIN) when the kernel reports an OOM event for the cgroup. On v2 it
/// also fires for other `memory.events` changes (`high`, `max`) and on v1 when the cgroup is
/// removed, so after a wake-up call [`OomWatch::oom_kills`] for the count and
/// [`OomWatch::clear`] to re-arm. Independent of the [`crate::JobCgroup`] lifetime.
#[derive(Debug)]
pub struct OomWatch {
    fd: OwnedFd,
    mem: Dir,
    counter_file: &'static str,
    /// v1: the memory.oom_control fd the eventfd is registered on.
    _ctl: Option<OwnedFd>,
}

impl OomWatch {
    /// v2: inotify IN_MODIFY on `memory.events` (kernfs notifies on every counter change).
    pub(crate) fn v2(mem: &Dir) -> Result<OomWatch, CgroupError> {
        let path = mem.path().join("memory.events");
        // SAFETY: inotify_init1 returns a fresh fd or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(CgroupError::io(
                "inotify_init1",
                &path,
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let c = path_c(&path)?;
        // SAFETY: valid inotify fd and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) };
        if wd < 0 {
            return Err(CgroupError::io(
                "inotify_add_watch",
                &path,
                io::Error::last_os_error(),
            ));
        }
        Ok(OomWatch {
            fd,
            mem: mem.try_clone()?,
            counter_file: "memory.events",
            _ctl: None,
        })
    }

    /// v1: eventfd + `cgroup.event_control` "<eventfd> <oom_control fd>".
    pub(crate) fn v1(mem: &Dir) -> Result<OomWatch, CgroupError> {
        let path = mem.path().join("memory.oom_control");
        // SAFETY: eventfd returns a fresh fd or -1.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(CgroupError::io(
                "eventfd",
                &path,
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: fresh fd.
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };
        let ctl = mem
            .open_file("memory.oom_control", libc::O_RDONLY)
            .map_err(|e| CgroupError::io("open", &path, e))?;
        let cmd = format!("{} {}", efd.as_raw_fd(), ctl.as_raw_fd());
        mem.write("cgroup.event_control", &cmd)?;
        Ok(OomWatch {
            fd: efd,
            mem: mem.try_clone()?,
            counter_file: "memory.oom_control",
            _ctl: Some(ctl),
        })
    }

    /// The fd to poll for POLLIN.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Processes OOM-killed in the cgroup so far (see [`crate::Usage::oom_kills`]).
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        Ok(oom_kills_from(&self.mem.read(self.counter_file)?))
    }

    /// Consume pending notifications so the fd is not readable until the next event.
    pub fn clear(&self) {
        let mut buf = [0u8; 4096];
        // SAFETY: non-blocking reads into a local buffer until EAGAIN.
        while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

/// Processes OOM-killed, from memory.events (v2) or memory.oom_control (v1). With
/// `memory.oom.group` the kernel counts the chosen victim twice in `oom_kill` (once as victim,
/// once as group member) and counts each group kill in `oom_group_kill`, so subtract that.
pub(crate) fn oom_kills_from(text: &str) -> u64 {
    let kills = keyed(text, "oom_kill").unwrap_or(0);
    kills.saturating_sub(keyed(text, "oom_group_kill").unwrap_or(0))
}

fn path_c(p: &Path) -> Result<CString, CgroupError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| CgroupError::io("open", p, io::Error::from_raw_os_error(libc::EINVAL)))
}

/// `some`: at least one task stalled; `full`: all non-idle tasks stalled at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PressureKind {
    Some,
    Full,
}

/// One line of a PSI file.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PressureLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Total stall time, µs.
    pub total_us: u64,
}

/// Parsed `memory.pressure`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Pressure {
    pub some: PressureLine,
    pub full: PressureLine,
}

pub(crate) fn parse_pressure(text: &str, path: &Path) -> Result<Pressure, CgroupError> {
    let mut p = Pressure::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let target = match it.next() {
            Some("some") => &mut p.some,
            Some("full") => &mut p.full,
            _ => continue,
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let bad = || CgroupError::Parse {
                path: path.to_path_buf(),
                detail: format!("bad field {kv:?}"),
            };
            match k {
                "avg10" => target.avg10 = v.parse().map_err(|_| bad())?,
                "avg60" => target.avg60 = v.parse().map_err(|_| bad())?,
                "avg300" => target.avg300 = v.parse().map_err(|_| bad())?,
                "total" => target.total_us = v.parse().map_err(|_| bad())?,
                _ => {}
            }
        }
    }
    Ok(p)
}

/// A registered PSI trigger: poll [`PressureTrigger::fd`] for `POLLPRI`. The trigger lives as
/// long as this fd.
#[derive(Debug)]
pub struct PressureTrigger {
    fd: OwnedFd,
    path: PathBuf,
}

impl PressureTrigger {
    pub(crate) fn new(
        mem: &Dir,
        kind: PressureKind,
        stall: Duration,
        window: Duration,
    ) -> Result<PressureTrigger, CgroupError> {
        let path = mem.path().join("memory.pressure");
        let fd = mem
            .open_file("memory.pressure", libc::O_RDWR | libc::O_NONBLOCK)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ENOENT) {
                    CgroupError::unsupported(
                        "memory pressure trigger (PSI)",
                        format!("{} is absent (kernel without PSI or psi=0)", path.display()),
                    )
                } else {
                    CgroupError::io("open", &path, e)
                }
            })?;
        let cmd = format!(
            "{} {} {}\0",
            match kind {
                PressureKind::Some => "some",
                PressureKind::Full => "full",
            },
            stall.as_micros(),
            window.as_micros()
        );
        write_all_once(fd.as_raw_fd(), cmd.as_bytes()).map_err(|e| CgroupError::Write {
            path: path.clone(),
            value: cmd.trim_end_matches('\0').to_string(),
            source: e,
        })?;
        Ok(PressureTrigger { fd, path })
    }

    /// Poll this for `POLLPRI` (`POLLERR` means the cgroup went away).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Read the current pressure through the trigger's own fd.
    pub fn read(&self) -> Result<Pressure, CgroupError> {
        // SAFETY: lseek on our own fd.
        unsafe { libc::lseek(self.fd.as_raw_fd(), 0, libc::SEEK_SET) };
        let s = read_fd_to_string(self.fd.as_raw_fd())
            .map_err(|e| CgroupError::io("read", &self.path, e))?;
        parse_pressure(&s, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_counts() {
        assert_eq!(oom_kills_from("oom 1\noom_kill 2\noom_group_kill 1\n"), 1);
        assert_eq!(oom_kills_from("oom 1\noom_kill 3\n"), 3);
        assert_eq!(
            oom_kills_from("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"),
            1
        );
    }

    #[test]
    fn psi() {
        let p = parse_pressure(
            "some avg10=1.50 avg60=0.00 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=5\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.some.total_us, 1234);
        assert_eq!(p.full.total_us, 5);
    }
}
