//! The node's default bound on every job's scratch (`[scratch] disk`), for a few syscalls per
//! launch: the job's scratch dir is a btrfs subvolume whose qgroup may reference at most the
//! bound, so the job's writes past it fail with EDQUOT and the node's disk is never filled.
//!
//! Why this shape:
//! - A filesystem per job (`--disk`, see `disk.rs`) costs an mkfs and a mount per launch; a
//!   subvolume is one ioctl, its limit another, and `rmdir` of the emptied scratch deletes it
//!   (the kernel drops its qgroup once the cleaner has freed it).
//! - ext4/XFS project quotas would need the kernel's quota formats (`CONFIG_QFMT_V2`,
//!   `CONFIG_XFS_QUOTA`, often left out) and let a file's owner outside a user namespace move
//!   its files to another project (`FS_IOC_FSSETXATTR`); btrfs qgroups come with btrfs.
//! - Where the scratch base is not on btrfs, the node gets a scratch pool: a sparse image file
//!   in the state dir, formatted once and loop-mounted at the scratch base (nosuid, nodev) by
//!   the daemon at start and by `jobcell run` on first use, under a lock file so concurrent
//!   launchers make and mount it once. Freed space goes back to the host (btrfs discards
//!   freed extents, which punches holes in the image).
//! - A job cannot step outside its qgroup: making a subvolume or snapshot inside its scratch
//!   (which would get a qgroup of its own), or making its scratch subvolume read-only (out of
//!   cleanup's reach), is refused by the job's seccomp filter; changing a limit needs
//!   CAP_SYS_ADMIN.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use thiserror::Error;

use crate::syscall::cstr;

#[derive(Debug, Error)]
pub enum QuotaError {
    #[error("scratch pool {path}: {what}: {source}")]
    Sys {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("scratch pool: mkfs.btrfs is needed to make the node's scratch pool and was not found (install btrfs-progs, or set [scratch] disk = \"none\")")]
    NoMkfs,
    #[error("scratch pool {image}: mkfs.btrfs failed: {message}")]
    Mkfs { image: PathBuf, message: String },
    #[error("scratch base {0} is not empty: the scratch pool is mounted over an empty scratch base only (move what is there away, or set [scratch] disk = \"none\")")]
    BaseNotEmpty(PathBuf),
    #[error("scratch pool needs root (it is a loop-mounted filesystem)")]
    Rootless,
}

impl QuotaError {
    /// This machine cannot have a btrfs pool at all (no mkfs.btrfs, or a kernel without
    /// btrfs), as opposed to a pool that failed: callers then run jobs unbounded and say so.
    pub fn btrfs_unavailable(&self) -> bool {
        match self {
            QuotaError::NoMkfs => true,
            QuotaError::Sys { what, source, .. } => {
                *what == "mounting the pool" && source.raw_os_error() == Some(libc::ENODEV)
            }
            _ => false,
        }
    }
}

/// `statfs` f_type of btrfs.
const BTRFS_SUPER_MAGIC: libc::c_long = 0x9123_683E;

// The ioctls, as `_IOW/_IOR/_IOWR(0x94, nr, size)` of linux/btrfs.h.
/// `_IOW(0x94, 14, struct btrfs_ioctl_vol_args)` (4096 bytes).
const BTRFS_IOC_SUBVOL_CREATE: libc::c_ulong = 0x5000_940E;
/// `_IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)` (48 bytes).
const BTRFS_IOC_QGROUP_LIMIT: libc::c_ulong = 0x8030_942B;
/// `_IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args)` (16 bytes).
const BTRFS_IOC_QUOTA_CTL: libc::c_ulong = 0xC010_9428;
const BTRFS_QUOTA_CTL_ENABLE: u64 = 1;
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;

/// The btrfs ioctls the job's seccomp filter refuses: those that make a new subvolume (each
/// would come with a qgroup of its own, outside the job's): `SNAP_CREATE`, `SUBVOL_CREATE`,
/// `SNAP_CREATE_V2`, `SUBVOL_CREATE_V2`; and `SUBVOL_SETFLAGS`, with which the owner of its
/// scratch subvolume's root (the job) could make it read-only, out of cleanup's reach.
pub const REFUSED_BTRFS_IOCTLS: [u32; 5] = [
    0x5000_9401,
    0x5000_940E,
    0x5000_9417,
    0x5000_9418,
    0x4008_941A,
];

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

/// The pool's image file in the state dir, and the lock that serialises making it.
pub const POOL_IMAGE: &str = "scratch-pool.img";
const POOL_LOCK: &str = "scratch-pool.lock";

/// Whether `dir` is on btrfs (a scratch pool, or a btrfs scratch base of the admin's).
pub fn on_btrfs(dir: &Path) -> bool {
    let Ok(c) = cstr(dir) else { return false };
    // SAFETY: statfs is plain data; all zeroes is a valid value. `c` is a valid C string and
    // `s` a writable statfs buffer.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `s` a writable statfs, both alive across the call.
    (unsafe { libc::statfs(c.as_ptr(), &mut s) } == 0)
        && s.f_type as libc::c_long == BTRFS_SUPER_MAGIC
}

/// Make `name` in the directory `dir` a new, empty subvolume (mode 0700 after the umask is
/// ignored: it is fixed by the caller through its descriptor).
pub(crate) fn make_subvolume(dir: RawFd, name: &[u8]) -> io::Result<()> {
    let mut args = VolArgs {
        fd: 0,
        name: [0; 4088],
    };
    if name.len() >= args.name.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    args.name[..name.len()].copy_from_slice(name);
    // SAFETY: `args` is a properly laid out `btrfs_ioctl_vol_args` the kernel only reads.
    if unsafe { libc::ioctl(dir, BTRFS_IOC_SUBVOL_CREATE, &args) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Limit what the subvolume open as `subvolume` may reference to `bytes` (qgroup id 0: the
/// subvolume of the descriptor).
pub(crate) fn limit_subvolume(subvolume: RawFd, bytes: u64) -> io::Result<()> {
    let mut args = QgroupLimitArgs {
        qgroupid: 0,
        flags: BTRFS_QGROUP_LIMIT_MAX_RFER,
        max_rfer: bytes,
        max_excl: 0,
        rsv_rfer: 0,
        rsv_excl: 0,
    };
    // SAFETY: `args` is a properly laid out `btrfs_ioctl_qgroup_limit_args`.
    if unsafe { libc::ioctl(subvolume, BTRFS_IOC_QGROUP_LIMIT, &mut args) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make sure `scratch_base` can bound each job's scratch. Already on btrfs: nothing to do (one
/// `statfs`, the per-launch cost). Otherwise, under a lock in `state_dir`: make the pool image
/// if there is none (`size` bytes, sparse; default a quarter of the state dir's filesystem),
/// loop-mount it at the (empty) scratch base and turn its quotas on. Returns whether it
/// mounted the pool now.
pub fn ensure_pool(
    state_dir: &Path,
    scratch_base: &Path,
    size: Option<u64>,
) -> Result<bool, QuotaError> {
    if on_btrfs(scratch_base) {
        return Ok(false);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(QuotaError::Rootless);
    }
    let sys = |path: &Path, what: &'static str| {
        let path = path.to_path_buf();
        move |source| QuotaError::Sys { path, what, source }
    };
    std::fs::create_dir_all(state_dir).map_err(sys(state_dir, "making the state dir"))?;
    let lock_path = state_dir.join(POOL_LOCK);
    // Root's alone (0600): the state dir is traversable, and a user holding this flock would
    // stall every launcher that waits to mount the pool.
    let lock = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(sys(&lock_path, "opening the lock"))?
    };
    {
        use std::os::unix::fs::PermissionsExt;
        lock.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(sys(&lock_path, "closing the lock to others"))?;
    }
    // SAFETY: a valid descriptor; the lock goes with it when `lock` is dropped.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } < 0 {
        return Err(sys(&lock_path, "locking")(io::Error::last_os_error()));
    }
    // Another launcher may have mounted it while we waited.
    if on_btrfs(scratch_base) {
        return Ok(false);
    }
    let base_fd = crate::scratch::open_base(scratch_base).map_err(|e| QuotaError::Sys {
        path: scratch_base.to_path_buf(),
        what: "opening the scratch base",
        source: io::Error::other(e.to_string()),
    })?;
    if std::fs::read_dir(scratch_base)
        .map_err(sys(scratch_base, "listing the scratch base"))?
        .next()
        .is_some()
    {
        return Err(QuotaError::BaseNotEmpty(scratch_base.to_path_buf()));
    }
    drop(base_fd);
    let image = state_dir.join(POOL_IMAGE);
    if !image.exists() {
        let size = match size {
            Some(s) => s,
            None => default_pool_size(state_dir).map_err(sys(state_dir, "statvfs"))?,
        };
        make_image(&image, size)?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .map_err(sys(&image, "opening the image"))?;
    let file = OwnedFd::from(file);
    let (device, device_path) =
        crate::disk::attach_loop(&file, "scratch-pool").map_err(|e| QuotaError::Sys {
            path: image.clone(),
            what: "attaching a loop device",
            source: io::Error::other(e.to_string()),
        })?;
    let dev = cstr(&device_path).map_err(sys(&image, "loop device path"))?;
    let target = cstr(scratch_base).map_err(sys(scratch_base, "path"))?;
    // SAFETY: valid C strings; no data argument.
    let r = unsafe {
        libc::mount(
            dev.as_ptr(),
            target.as_ptr(),
            c"btrfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        )
    };
    if r < 0 {
        return Err(sys(scratch_base, "mounting the pool")(
            io::Error::last_os_error(),
        ));
    }
    // The mount holds the device now; it detaches itself when the pool is unmounted.
    drop(device);
    let root = std::fs::File::open(scratch_base).map_err(sys(scratch_base, "opening the pool"))?;
    let mut ctl = QuotaCtlArgs {
        cmd: BTRFS_QUOTA_CTL_ENABLE,
        status: 0,
    };
    // SAFETY: `ctl` is a properly laid out `btrfs_ioctl_quota_ctl_args`; enabling quotas
    // that are on already is a no-op.
    let quota = match unsafe { libc::ioctl(root.as_raw_fd(), BTRFS_IOC_QUOTA_CTL, &mut ctl) } {
        r if r < 0 => Err(("turning the pool's quotas on", io::Error::last_os_error())),
        _ => Ok(()),
    };
    // SAFETY: a valid descriptor. Others pass through to their own job dir, not list it.
    let ready = quota.and_then(
        |()| match unsafe { libc::fchmod(root.as_raw_fd(), 0o711) } {
            r if r < 0 => Err(("making the pool's root 0711", io::Error::last_os_error())),
            _ => Ok(()),
        },
    );
    if let Err((what, e)) = ready {
        drop(root);
        // SAFETY: `target` is a valid C string; the mount is the one made just above.
        unsafe { libc::umount2(target.as_ptr(), 0) };
        return Err(sys(scratch_base, what)(e));
    }
    Ok(true)
}

/// A quarter of the filesystem holding the state dir, in whole MiB, at least 1 GiB.
fn default_pool_size(state_dir: &Path) -> io::Result<u64> {
    let c = cstr(state_dir)?;
    // SAFETY: statvfs is plain data; all zeroes is a valid value. `c` is a valid C string and
    // `v` a writable statvfs buffer.
    let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `v` a writable statvfs, both alive across the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut v) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let quarter = v.f_blocks.saturating_mul(v.f_frsize) / 4;
    Ok((quarter >> 20 << 20).max(1 << 30))
}

/// A sparse file of `size` bytes with an empty btrfs, made under a temporary name and renamed
/// into place only once complete (a crash leaves no half-made pool).
fn make_image(image: &Path, size: u64) -> Result<(), QuotaError> {
    let mkfs = [
        "/usr/sbin/mkfs.btrfs",
        "/sbin/mkfs.btrfs",
        "/usr/bin/mkfs.btrfs",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .ok_or(QuotaError::NoMkfs)?;
    let partial = image.with_extension("img.partial");
    let sys = |what: &'static str| {
        let path = partial.clone();
        move |source| QuotaError::Sys { path, what, source }
    };
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&partial)
        .map_err(sys("creating the image"))?;
    f.set_len(size).map_err(sys("sizing the image"))?;
    drop(f);
    let out = Command::new(mkfs)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        // -K: no discard of the whole image first (it is all holes already).
        .args(["-q", "-f", "-K", "-L", "jobcell-scratch"])
        .arg(&partial)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(sys("running mkfs.btrfs"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&partial);
        let msg = String::from_utf8_lossy(&out.stderr);
        let line = msg
            .lines()
            .find(|l| l.starts_with("ERROR"))
            .or_else(|| msg.lines().find(|l| !l.trim().is_empty()))
            .unwrap_or("");
        return Err(QuotaError::Mkfs {
            image: image.to_path_buf(),
            message: format!("{} ({})", line.trim(), out.status),
        });
    }
    std::fs::rename(&partial, image).map_err(sys("renaming the image into place"))
}

/// Unmount the scratch pool at `scratch_base` if it is the one whose image is in `state_dir`
/// (its loop device detaches itself). Anything else mounted there is left alone.
pub fn unmount_pool(state_dir: &Path, scratch_base: &Path) -> Result<bool, QuotaError> {
    let image = state_dir.join(POOL_IMAGE);
    let Some(dev) = mounted_device(scratch_base) else {
        return Ok(false);
    };
    let Some(n) = dev.strip_prefix("/dev/loop") else {
        return Ok(false);
    };
    let backing = std::fs::read_to_string(format!("/sys/block/loop{n}/loop/backing_file"))
        .unwrap_or_default();
    if Path::new(backing.trim_end()) != image {
        return Ok(false);
    }
    let target = cstr(scratch_base).map_err(|source| QuotaError::Sys {
        path: scratch_base.to_path_buf(),
        what: "path",
        source,
    })?;
    // SAFETY: a valid C string; the mount was checked to be the pool's.
    if unsafe { libc::umount2(target.as_ptr(), 0) } < 0 {
        return Err(QuotaError::Sys {
            path: scratch_base.to_path_buf(),
            what: "unmounting the pool",
            source: io::Error::last_os_error(),
        });
    }
    Ok(true)
}

/// The source of the mount whose mount point is exactly `path`, in this mount namespace.
fn mounted_device(path: &Path) -> Option<String> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_string_lossy();
    mi.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.get(4) == Some(&want.as_ref())).then(|| f.get(sep + 2).map(|s| s.to_string()))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // c_ulong is u64 only on 64-bit targets.
    #[allow(clippy::unnecessary_cast)]
    fn ioctl_numbers_match_the_kernel_header_encoding() {
        let iow = |nr: u64, size: u64| (1u64 << 30) | (size << 16) | (0x94 << 8) | nr;
        let ior = |nr: u64, size: u64| (2u64 << 30) | (size << 16) | (0x94 << 8) | nr;
        assert_eq!(BTRFS_IOC_SUBVOL_CREATE as u64, iow(14, 4096));
        assert_eq!(BTRFS_IOC_QGROUP_LIMIT as u64, ior(43, 48));
        assert_eq!(
            BTRFS_IOC_QUOTA_CTL as u64,
            (3u64 << 30) | (16 << 16) | (0x94 << 8) | 40
        );
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<QgroupLimitArgs>(), 48);
        let mut refused: Vec<u64> = [1, 14, 23, 24].iter().map(|&n| iow(n, 4096)).collect();
        refused.push(iow(26, 8));
        assert_eq!(
            REFUSED_BTRFS_IOCTLS
                .iter()
                .map(|&n| n as u64)
                .collect::<Vec<_>>(),
            refused
        );
    }
}
