//! A size-limited scratch (`--disk`, HTCondor's request_disk): an ext4 filesystem of the
//! requested size in an anonymous file, attached to a loop device, which the job's init mounts
//! over the scratch dir inside the job's own mount namespace.
//!
//! Why this shape:
//! - A filesystem of its own is the only limit that every scratch base supports (project quotas
//!   need a prjquota-mounted XFS/ext4; tmpfs `size=` would charge the files to the job's memory).
//!   A full one is ENOSPC inside the job; the host's disk never fills, because the whole size is
//!   reserved with fallocate up front (and refused clearly when the host lacks it).
//! - The backing file is `O_TMPFILE`: it has no name, so a SIGKILLed launcher leaves nothing to
//!   collect; the kernel frees it when the loop device lets go. `--keep-scratch` links it in.
//! - The loop device is `LO_FLAGS_AUTOCLEAR`: it detaches itself when the launcher's descriptor
//!   is closed and the job's mount namespace (the only place it is mounted) is gone.
//! - mkfs.ext4 `-d` copies the prepared scratch dir (private subdirs, anything a caller put
//!   there) into the new filesystem, so the mount shows the same tree with the same owners.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DiskError {
    #[error("--disk {size}: the scratch base has not that much free space ({source})")]
    NoSpace { size: String, source: io::Error },
    #[error("--disk: {what}: {source}")]
    Sys {
        what: &'static str,
        source: io::Error,
    },
    #[error("--disk: mkfs.ext4 is needed for a size-limited scratch and was not found (install e2fsprogs)")]
    NoMkfs,
    #[error("--disk: mkfs.ext4 failed: {0}")]
    Mkfs(String),
    #[error("--disk needs root (a size-limited scratch is a loop-mounted filesystem); rootless, ask the enclosing scheduler for a disk limit")]
    Rootless,
}

fn sys(what: &'static str) -> impl FnOnce(io::Error) -> DiskError {
    move |source| DiskError::Sys { what, source }
}

/// Filesystem overhead on top of the request (inode tables at one inode per 64 KiB, bitmaps,
/// group descriptors), so the job can write at least what it asked for.
pub fn fs_size(request: u64) -> u64 {
    const MIN: u64 = 16 << 20;
    let with_overhead = request.saturating_add(request / 32).saturating_add(4 << 20);
    with_overhead.max(MIN).div_ceil(4096) * 4096
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// The job's scratch filesystem, ready to be mounted by the init.
pub struct ScratchDisk {
    image: OwnedFd,
    /// Held open until the job is over: closing the last descriptor (and the mount going with
    /// the job's namespace) detaches the device (autoclear).
    _device: OwnedFd,
    device_path: PathBuf,
    pub size: u64,
}

impl ScratchDisk {
    /// Make a filesystem of [`fs_size`]`(request)` bytes holding a copy of `scratch` (the
    /// prepared dir, open as `scratch_fd`), on a loop device labelled `label`.
    pub fn create(
        scratch: &Path,
        scratch_fd: RawFd,
        request: u64,
        label: &str,
    ) -> Result<Self, DiskError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err(DiskError::Rootless);
        }
        let size = fs_size(request);
        // SAFETY: "." is NUL-terminated and 'static; the caller's `scratch_fd` is an open
        // directory; O_TMPFILE takes the mode as the variadic argument.
        let image = unsafe {
            libc::openat(
                scratch_fd,
                c".".as_ptr(),
                libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
                0o600,
            )
        };
        if image < 0 {
            return Err(sys("creating the filesystem image in the scratch dir")(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `image` was just returned by a successful openat; nothing else owns it.
        let image = unsafe { OwnedFd::from_raw_fd(image) };
        // SAFETY: plain integer arguments on the descriptor `image` owns.
        let r = unsafe { libc::fallocate(image.as_raw_fd(), 0, 0, size as libc::off_t) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EFBIG) => DiskError::NoSpace {
                    size: jobcell_spec::format_size(request),
                    source: e,
                },
                _ => sys("reserving the filesystem's space")(e),
            });
        }
        mkfs(&image, scratch)?;
        let (device, device_path) = attach_loop(&image, label)?;
        Ok(ScratchDisk {
            image,
            _device: device,
            device_path,
            size,
        })
    }

    /// The loop device to mount (the launcher's descriptor keeps it attached until drop).
    pub fn device_path(&self) -> &Path {
        &self.device_path
    }

    /// Give the image a name in `dir` (for `--keep-scratch`): `linkat` of the anonymous file.
    pub fn keep_in(&self, dir: RawFd, name: &str) -> io::Result<()> {
        let c = CString::new(name).expect("no NUL in a generated name");
        let from =
            CString::new(format!("/proc/self/fd/{}", self.image.as_raw_fd())).expect("no NUL");
        // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc link form works for root too.
        // SAFETY: both paths are NUL-terminated and outlive the call; `dir` is the caller's open
        // directory.
        let r = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                dir,
                c.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn mkfs(image: &OwnedFd, populate: &Path) -> Result<(), DiskError> {
    let mkfs = ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or(DiskError::NoMkfs)?;
    // The child opens the image through our descriptor table (root may, by /proc's rules).
    let target = format!("/proc/{}/fd/{}", std::process::id(), image.as_raw_fd());
    let out = Command::new(mkfs)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-m",
            "0",
            "-i",
            "65536",
            "-O",
            "^has_journal,^resize_inode",
            // nodiscard: a discard would punch holes into the reserved file.
            "-E",
            "nodiscard,lazy_itable_init=1,root_owner=0:0",
            "-d",
        ])
        .arg(populate)
        .arg(&target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(sys("running mkfs.ext4"))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let line = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(DiskError::Mkfs(format!("{} ({})", line.trim(), out.status)));
    }
    Ok(())
}

pub(crate) fn attach_loop(image: &OwnedFd, label: &str) -> Result<(OwnedFd, PathBuf), DiskError> {
    // SAFETY: the path is a NUL-terminated 'static literal.
    let ctl = unsafe {
        libc::open(
            c"/dev/loop-control".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC,
        )
    };
    if ctl < 0 {
        return Err(sys("opening /dev/loop-control")(io::Error::last_os_error()));
    }
    // SAFETY: `ctl` was just returned by a successful open; nothing else owns it.
    let ctl = unsafe { OwnedFd::from_raw_fd(ctl) };
    // SAFETY: LoopInfo64 is repr(C) integers and byte arrays, for which all-zero is valid (and what
    // the kernel expects for unused fields).
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    info.flags = LO_FLAGS_AUTOCLEAR;
    let name = format!("jobcell:{label}");
    let n = name.len().min(63);
    info.file_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    // Another process may take the free device between asking and attaching: try again.
    for _ in 0..32 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument; `ctl` is the open loop-control device.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(sys("finding a free loop device")(io::Error::last_os_error()));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
        // SAFETY: `c` is NUL-terminated and outlives the call.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(sys("opening the loop device")(io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by a successful open; nothing else owns it.
        let dev = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: LoopConfig is repr(C) integers and a LoopInfo64, for which all-zero is valid.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = image.as_raw_fd() as u32;
        // SAFETY: LoopInfo64 is plain data without Drop: a bitwise read is an independent copy and
        // `info` stays valid.
        cfg.info = unsafe { std::ptr::read(&info) };
        // SAFETY: `cfg` is the repr(C) loop_config LOOP_CONFIGURE reads, alive across the call;
        // `dev` is open.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg) };
        if r == 0 {
            return Ok((dev, path));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EBUSY) => continue,
            // Before Linux 5.8: attach, then set the flags.
            Some(libc::EINVAL) | Some(libc::ENOTTY) => {
                // SAFETY: LOOP_SET_FD takes the backing file's descriptor by value; both
                // descriptors are open.
                if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, image.as_raw_fd()) } < 0 {
                    if io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY) {
                        continue;
                    }
                    return Err(sys("attaching the loop device")(io::Error::last_os_error()));
                }
                // SAFETY: `info` is the repr(C) loop_info64 LOOP_SET_STATUS64 reads, alive across
                // the call; `dev` is open.
                if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64, &info) } < 0 {
                    let e = io::Error::last_os_error();
                    // SAFETY: LOOP_CLR_FD takes no pointer; `dev` is open.
                    unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) };
                    return Err(sys("configuring the loop device")(e));
                }
                return Ok((dev, path));
            }
            _ => return Err(sys("attaching the loop device")(e)),
        }
    }
    Err(sys("attaching the loop device")(
        io::Error::from_raw_os_error(libc::EBUSY),
    ))
}

/// Used and total bytes of the filesystem under `fd`, and whether it is full (less than 1 MiB
/// left for the job: a write that needed more got ENOSPC).
pub fn usage(fd: RawFd) -> Option<(u64, u64, bool)> {
    // SAFETY: statvfs is plain integers, for which all-zero is a valid value.
    let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `v` is a writable statvfs that outlives the call; an invalid `fd` only makes the call
    // fail.
    if unsafe { libc::fstatvfs(fd, &mut v) } < 0 {
        return None;
    }
    let b = v.f_frsize;
    let total = v.f_blocks * b;
    let used = (v.f_blocks - v.f_bfree) * b;
    Some((used, total, v.f_bavail * b < (1 << 20)))
}
