//! The btrfs calls behind the scratch bound (see `quota.rs`): making a subvolume, limiting
//! its qgroup, turning a filesystem's quotas on, and the ioctls a job may not make.

use std::io;
use std::os::fd::RawFd;
use std::path::Path;

use crate::syscall::cstr;

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

/// Turn quotas (qgroups) on for the btrfs filesystem of `root`; a no-op where they are on.
pub(crate) fn enable_quotas(root: RawFd) -> io::Result<()> {
    let mut ctl = QuotaCtlArgs {
        cmd: BTRFS_QUOTA_CTL_ENABLE,
        status: 0,
    };
    // SAFETY: `ctl` is a properly laid out `btrfs_ioctl_quota_ctl_args` that outlives the
    // call; enabling quotas that are on already is a no-op.
    if unsafe { libc::ioctl(root, BTRFS_IOC_QUOTA_CTL, &mut ctl) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
