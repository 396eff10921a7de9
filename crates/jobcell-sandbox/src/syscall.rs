//! The seam between the launch sequence and the kernel.
//!
//! Every namespace, mount and identity step goes through [`Syscall`], so unit tests can run the
//! same code against [`Recorder`] and assert the exact order and flags, while production uses
//! [`Linux`]. Process control (clone, wait, kill, exec) and signalfd stay raw in `launch/`
//! and are covered by the integration tests that run real jobs.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

pub use jobcell_os::path_cstr as cstr;

fn check(r: libc::c_int) -> io::Result<()> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Kernel operations the sandbox performs, one method per syscall.
pub trait Syscall {
    fn mount(
        &self,
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// Make `dst` and everything under it read-only/nosuid/nodev (mount_setattr with
    /// AT_RECURSIVE); `Unsupported` where the kernel lacks it, so callers fall back to remount.
    fn setattr_recursive(&self, dst: &Path, attr_set: u64) -> io::Result<()>;
    fn umount_detach(&self, dst: &Path) -> io::Result<()>;
    fn pivot_root_here(&self) -> io::Result<()>;
    fn chdir(&self, dir: &Path) -> io::Result<()>;
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()>;
    fn create_file(&self, path: &Path, mode: u32) -> io::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    fn unshare(&self, flags: libc::c_int) -> io::Result<()>;
    fn setgroups(&self, groups: &[u32]) -> io::Result<()>;
    fn setresgid(&self, gid: u32) -> io::Result<()>;
    fn setresuid(&self, uid: u32) -> io::Result<()>;
    /// Drop `cap` from the bounding set.
    fn capbset_drop(&self, cap: u32) -> io::Result<()>;
    fn clear_ambient_caps(&self) -> io::Result<()>;
    /// Zero the effective, permitted and inheritable sets.
    fn clear_caps(&self) -> io::Result<()>;
    fn set_no_new_privs(&self) -> io::Result<()>;
    fn setsid(&self) -> io::Result<()>;
    /// Install a seccomp filter (needs no_new_privs first); an empty program installs nothing.
    fn seccomp(&self, prog: &[libc::sock_filter]) -> io::Result<()>;
    /// Set this process's effective, permitted and inheritable capability sets (see [`capset`]).
    fn set_caps(&self, effective: u32, permitted: u32, inheritable: u32) -> io::Result<()>;
    /// The signal this process gets when its parent dies (0: none).
    fn set_pdeathsig(&self, sig: libc::c_int) -> io::Result<()>;
    /// Set the file mode creation mask; returns the previous one.
    fn umask(&self, mask: libc::mode_t) -> libc::mode_t;
    fn close(&self, fd: RawFd);
    /// Mark every descriptor from `first` up close-on-exec.
    fn cloexec_from(&self, first: u32) -> io::Result<()>;
    /// Unblock every signal and give each its default action: a blocked or ignored signal
    /// would survive exec.
    fn reset_signals(&self);
    /// Write `contents` to an existing file (procfs: the user namespace's maps).
    fn write_file(&self, path: &Path, contents: &str) -> io::Result<()>;
    /// Bring up the loopback interface of this network namespace.
    fn loopback_up(&self) -> io::Result<()>;
}

/// The real kernel.
pub struct Linux;

const MOUNT_ATTR_SIZE_VER0: usize = 32;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

impl Syscall for Linux {
    fn mount(
        &self,
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        let src = src.map(cstr).transpose()?;
        let dst = cstr(dst)?;
        let fstype = fstype.map(|s| CString::new(s).unwrap());
        let data = data.map(|s| CString::new(s).unwrap());
        let p = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: the strings are NUL-terminated CStrings (or null where mount accepts none) that
        // live until the call returns.
        check(unsafe {
            libc::mount(
                p(&src),
                dst.as_ptr(),
                p(&fstype),
                flags,
                data.as_ref()
                    .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
            )
        })
    }

    fn setattr_recursive(&self, dst: &Path, attr_set: u64) -> io::Result<()> {
        let dst = cstr(dst)?;
        let attr = MountAttr {
            attr_set,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: `dst` is NUL-terminated and `attr` is a MountAttr laid out as the kernel's
        // version-0 struct, whose size is passed; both outlive the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                dst.as_ptr(),
                libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW,
                &attr as *const MountAttr,
                MOUNT_ATTR_SIZE_VER0,
            )
        };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOSYS) {
                return Err(io::Error::new(io::ErrorKind::Unsupported, e));
            }
            return Err(e);
        }
        Ok(())
    }

    fn umount_detach(&self, dst: &Path) -> io::Result<()> {
        let dst = cstr(dst)?;
        // SAFETY: `dst` is NUL-terminated and outlives the call.
        check(unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) })
    }

    fn pivot_root_here(&self) -> io::Result<()> {
        // pivot_root(".", "."): the old root ends up stacked on the new one and is detached by
        // the caller; no put_old directory is needed inside the image.
        let dot = c".";
        // SAFETY: "." is NUL-terminated and 'static; pivot_root only reads the two paths.
        let r = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
        check(r as libc::c_int)
    }

    fn chdir(&self, dir: &Path) -> io::Result<()> {
        let d = cstr(dir)?;
        // SAFETY: `d` is NUL-terminated and outlives the call.
        check(unsafe { libc::chdir(d.as_ptr()) })
    }

    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        let p = cstr(path)?;
        // SAFETY: `p` is NUL-terminated and outlives the call.
        check(unsafe { libc::mkdir(p.as_ptr(), mode) })
    }

    fn create_file(&self, path: &Path, mode: u32) -> io::Result<()> {
        let p = cstr(path)?;
        // SAFETY: `p` is NUL-terminated and outlives the call; with O_CREAT the mode is the
        // variadic argument.
        let fd = unsafe {
            libc::open(
                p.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                mode,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened above and is closed exactly once, here.
        unsafe { libc::close(fd) };
        Ok(())
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        let t = cstr(target)?;
        let l = cstr(link)?;
        // SAFETY: both paths are NUL-terminated and outlive the call.
        check(unsafe { libc::symlink(t.as_ptr(), l.as_ptr()) })
    }

    fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: plain integer flags; the kernel refuses what this process may not unshare.
        check(unsafe { libc::unshare(flags) })
    }

    fn setgroups(&self, groups: &[u32]) -> io::Result<()> {
        // SAFETY: the pointer and length describe the `groups` slice, which outlives the call.
        check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })
    }

    fn setresgid(&self, gid: u32) -> io::Result<()> {
        // SAFETY: plain integer arguments.
        check(unsafe { libc::setresgid(gid, gid, gid) })
    }

    fn setresuid(&self, uid: u32) -> io::Result<()> {
        // SAFETY: plain integer arguments.
        check(unsafe { libc::setresuid(uid, uid, uid) })
    }

    fn capbset_drop(&self, cap: u32) -> io::Result<()> {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and unused zero arguments; no memory is
        // passed.
        check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) })
    }

    fn clear_ambient_caps(&self) -> io::Result<()> {
        // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes only integer arguments; no memory is passed.
        check(unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        })
    }

    fn clear_caps(&self) -> io::Result<()> {
        capset(0, 0, 0)
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        // SAFETY: PR_SET_NO_NEW_PRIVS takes only integer arguments; no memory is passed.
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
    }

    fn setsid(&self) -> io::Result<()> {
        // SAFETY: setsid takes no arguments and touches no memory of ours.
        if unsafe { libc::setsid() } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn seccomp(&self, prog: &[libc::sock_filter]) -> io::Result<()> {
        if prog.is_empty() {
            return Ok(());
        }
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut _,
        };
        // SAFETY: `fprog` points at `prog`, a slice of `len` filters, and both outlive the call;
        // the kernel copies the program.
        check(unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            )
        })
    }

    fn set_caps(&self, effective: u32, permitted: u32, inheritable: u32) -> io::Result<()> {
        capset(effective, permitted, inheritable)
    }

    fn set_pdeathsig(&self, sig: libc::c_int) -> io::Result<()> {
        // SAFETY: PR_SET_PDEATHSIG takes a signal number; no pointers.
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) })
    }

    fn umask(&self, mask: libc::mode_t) -> libc::mode_t {
        // SAFETY: umask cannot fail and touches no memory of ours.
        unsafe { libc::umask(mask) }
    }

    fn close(&self, fd: RawFd) {
        // SAFETY: the caller owns `fd` and does not use it again.
        unsafe { libc::close(fd) };
    }

    fn cloexec_from(&self, first: u32) -> io::Result<()> {
        // SAFETY: close_range takes plain integers; CLOEXEC closes nothing now.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        check(r as libc::c_int)
    }

    fn reset_signals(&self) {
        // SAFETY: sigset_t is plain data, all-zero is a valid empty set; sigprocmask reads
        // it and writes nothing (null old set); signal() installs SIG_DFL, not a handler.
        unsafe {
            let empty: libc::sigset_t = std::mem::zeroed();
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            // Rust ignores SIGPIPE.
            for s in 1..32 {
                if s != libc::SIGKILL && s != libc::SIGSTOP {
                    libc::signal(s, libc::SIG_DFL);
                }
            }
        }
    }

    fn write_file(&self, path: &Path, contents: &str) -> io::Result<()> {
        std::fs::write(path, contents)
    }

    fn loopback_up(&self) -> io::Result<()> {
        // SAFETY: ifreq is plain data (all-zero is valid) and lives across the ioctl, which
        // reads only its name and flags; the socket is ours and closed here.
        unsafe {
            let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if s < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut req: libc::ifreq = std::mem::zeroed();
            for (i, b) in b"lo\0".iter().enumerate() {
                req.ifr_name[i] = *b as libc::c_char;
            }
            req.ifr_ifru.ifru_flags =
                (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as libc::c_short;
            let r = libc::ioctl(s, libc::SIOCSIFFLAGS, &req);
            let e = io::Error::last_os_error();
            libc::close(s);
            if r < 0 {
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Set this process's effective, permitted and inheritable capability sets (caps 0..=31; the
/// upper word is zero, so every capability above 31 is dropped).
pub fn capset(effective: u32, permitted: u32, inheritable: u32) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut h = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let d = [
        Data {
            effective,
            permitted,
            inheritable,
        },
        Data::default(),
    ];
    check(
        // SAFETY: `h` and `d` are the repr(C) v3 header and the two data words capset reads, alive
        // across the call.
        unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) }
            as libc::c_int,
    )
}

/// A test double that records every call as one line and succeeds (or fails on a chosen call).
#[derive(Default)]
pub struct Recorder {
    pub calls: std::cell::RefCell<Vec<String>>,
    /// Fail the call whose line starts with this prefix, with EPERM.
    pub fail_on: Option<String>,
}

impl Recorder {
    fn rec(&self, line: String) -> io::Result<()> {
        let fail = self
            .fail_on
            .as_ref()
            .is_some_and(|p| line.starts_with(p.as_str()));
        self.calls.borrow_mut().push(line);
        if fail {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        } else {
            Ok(())
        }
    }
    pub fn lines(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

fn show(p: Option<&Path>) -> String {
    p.map_or("-".into(), |p| p.display().to_string())
}

pub fn mount_flags_str(flags: libc::c_ulong) -> String {
    let names: [(libc::c_ulong, &str); 10] = [
        (libc::MS_BIND, "bind"),
        (libc::MS_REC, "rec"),
        (libc::MS_REMOUNT, "remount"),
        (libc::MS_RDONLY, "ro"),
        (libc::MS_NOSUID, "nosuid"),
        (libc::MS_NODEV, "nodev"),
        (libc::MS_NOEXEC, "noexec"),
        (libc::MS_PRIVATE, "private"),
        (libc::MS_SLAVE, "slave"),
        (libc::MS_STRICTATIME, "strictatime"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        "0".into()
    } else {
        v.join("|")
    }
}

impl Syscall for Recorder {
    fn mount(
        &self,
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.rec(format!(
            "mount {} {} {} {} {}",
            show(src),
            dst.display(),
            fstype.unwrap_or("-"),
            mount_flags_str(flags),
            data.unwrap_or("-")
        ))
    }
    fn setattr_recursive(&self, dst: &Path, attr_set: u64) -> io::Result<()> {
        self.rec(format!("mount_setattr {} {attr_set:#x}", dst.display()))
    }
    fn umount_detach(&self, dst: &Path) -> io::Result<()> {
        self.rec(format!("umount_detach {}", dst.display()))
    }
    fn pivot_root_here(&self) -> io::Result<()> {
        self.rec("pivot_root . .".into())
    }
    fn chdir(&self, dir: &Path) -> io::Result<()> {
        self.rec(format!("chdir {}", dir.display()))
    }
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.rec(format!("mkdir {} {mode:o}", path.display()))
    }
    fn create_file(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.rec(format!("create {} {mode:o}", path.display()))
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.rec(format!("symlink {} {}", target.display(), link.display()))
    }
    fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
        self.rec(format!("unshare {flags:#x}"))
    }
    fn setgroups(&self, groups: &[u32]) -> io::Result<()> {
        self.rec(format!("setgroups {groups:?}"))
    }
    fn setresgid(&self, gid: u32) -> io::Result<()> {
        self.rec(format!("setresgid {gid}"))
    }
    fn setresuid(&self, uid: u32) -> io::Result<()> {
        self.rec(format!("setresuid {uid}"))
    }
    fn capbset_drop(&self, cap: u32) -> io::Result<()> {
        self.rec(format!("capbset_drop {cap}"))
    }
    fn clear_ambient_caps(&self) -> io::Result<()> {
        self.rec("clear_ambient".into())
    }
    fn clear_caps(&self) -> io::Result<()> {
        self.rec("clear_caps".into())
    }
    fn set_no_new_privs(&self) -> io::Result<()> {
        self.rec("no_new_privs".into())
    }
    fn setsid(&self) -> io::Result<()> {
        self.rec("setsid".into())
    }
    fn seccomp(&self, prog: &[libc::sock_filter]) -> io::Result<()> {
        self.rec(format!("seccomp {} insns", prog.len()))
    }
    fn set_caps(&self, effective: u32, permitted: u32, inheritable: u32) -> io::Result<()> {
        self.rec(format!(
            "set_caps {effective:#x} {permitted:#x} {inheritable:#x}"
        ))
    }
    fn set_pdeathsig(&self, sig: libc::c_int) -> io::Result<()> {
        self.rec(format!("pdeathsig {sig}"))
    }
    fn umask(&self, mask: libc::mode_t) -> libc::mode_t {
        let _ = self.rec(format!("umask {mask:o}"));
        0o022
    }
    fn close(&self, fd: RawFd) {
        let _ = self.rec(format!("close {fd}"));
    }
    fn cloexec_from(&self, first: u32) -> io::Result<()> {
        self.rec(format!("cloexec_from {first}"))
    }
    fn reset_signals(&self) {
        let _ = self.rec("reset_signals".into());
    }
    fn write_file(&self, path: &Path, contents: &str) -> io::Result<()> {
        self.rec(format!("write {} {contents}", path.display()))
    }
    fn loopback_up(&self) -> io::Result<()> {
        self.rec("loopback_up".into())
    }
}

/// A path under `root` (`root` + absolute `p`).
pub fn under(root: &Path, p: &Path) -> PathBuf {
    let rel = p.strip_prefix("/").unwrap_or(p);
    if rel.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}
