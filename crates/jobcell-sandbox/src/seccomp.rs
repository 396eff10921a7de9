//! A small seccomp filter for the job: the kernel's key management syscalls, and the btrfs
//! ioctls that make a subvolume or change its flags, fail with EPERM.
//!
//! Keyrings are not isolated by PID or mount namespaces: every process of a uid shares that
//! uid's user keyring (`@u`), so two jobs running as the same user (often all `nobody`) could
//! pass secrets through it or read each other's keys. No batch job needs add_key, request_key
//! or keyctl; container runtimes block them for the same reason. A subvolume or snapshot made
//! in a bounded scratch would have a qgroup of its own, outside the job's bound, and a
//! read-only scratch subvolume could not be cleaned up (see `quota.rs`). The x32 ABI, which would let a job reach the same syscalls under other
//! numbers, is refused too.

/// `struct seccomp_data`: nr at offset 0, arch at offset 4, args[1] (an ioctl's request, an
/// unsigned int: its low 32 bits) at offset 24.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
#[cfg(target_endian = "little")]
const OFF_ARG1_LOW: u32 = 24;
#[cfg(target_endian = "big")]
const OFF_ARG1_LOW: u32 = 28;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;

/// (audit arch, [add_key, request_key, keyctl, ioctl]) for the native architecture, and for
/// the compat one whose binaries it also runs (32-bit x86 under x86_64, arm under aarch64).
#[cfg(target_arch = "x86_64")]
const ARCHES: &[(u32, [u32; 4])] = &[
    (0xC000_003E, [248, 249, 250, 16]),
    (0x4000_0003, [286, 287, 288, 54]),
];
#[cfg(target_arch = "aarch64")]
const ARCHES: &[(u32, [u32; 4])] = &[
    (0xC000_00B7, [217, 218, 219, 29]),
    (0x4000_0028, [309, 310, 311, 54]),
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHES: &[(u32, [u32; 4])] = &[];

const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter program; empty where jobcell does not know the architecture's numbers.
pub fn job_filter() -> Vec<libc::sock_filter> {
    if ARCHES.is_empty() {
        return Vec::new();
    }
    let eperm = RET_ERRNO | libc::EPERM as u32;
    let enosys = RET_ERRNO | libc::ENOSYS as u32;
    let ioctls = crate::quota::REFUSED_BTRFS_IOCTLS;
    let n = ioctls.len() as u8;
    let mut p = Vec::new();
    for (i, &(arch, [add_key, request_key, keyctl, ioctl])) in ARCHES.iter().enumerate() {
        let native = i == 0;
        // This block: load arch, test it, load nr, (native: x32 test, its return), then from
        // `k`: 3 key tests, the ioctl test, load the request, `n` request tests, allow, eperm.
        let len: u8 = if native { 5 } else { 3 } + 4 + 1 + n + 2;
        let eperm_at = 4 + 1 + n + 1; // from k
        p.push(stmt(BPF_LD_W_ABS, OFF_ARCH));
        p.push(jump(BPF_JEQ_K, arch, 0, len - 2)); // not this arch: skip to the next block
        p.push(stmt(BPF_LD_W_ABS, OFF_NR));
        if native {
            p.push(jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1));
            p.push(stmt(BPF_RET_K, enosys));
        }
        for (j, nr) in [add_key, request_key, keyctl].into_iter().enumerate() {
            p.push(jump(BPF_JEQ_K, nr, eperm_at - j as u8 - 1, 0));
        }
        // Not an ioctl: on to allow.
        p.push(jump(BPF_JEQ_K, ioctl, 0, 1 + n));
        p.push(stmt(BPF_LD_W_ABS, OFF_ARG1_LOW));
        for (j, &req) in ioctls.iter().enumerate() {
            p.push(jump(BPF_JEQ_K, req, n - j as u8, 0));
        }
        p.push(stmt(BPF_RET_K, RET_ALLOW));
        p.push(stmt(BPF_RET_K, eperm));
    }
    // Any other architecture: nothing to translate, allow as the host would.
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the subset of classic BPF the filter uses.
    fn run(prog: &[libc::sock_filter], nr: u32, arch: u32) -> u32 {
        run_with(prog, nr, arch, 0)
    }

    fn run_with(prog: &[libc::sock_filter], nr: u32, arch: u32, arg1: u32) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            match i.code {
                BPF_LD_W_ABS => {
                    acc = match i.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        OFF_ARG1_LOW => arg1,
                        k => panic!("load at {k}"),
                    }
                }
                BPF_JEQ_K => {
                    pc += if acc == i.k { i.jt } else { i.jf } as usize;
                }
                BPF_JGE_K => {
                    pc += if acc >= i.k { i.jt } else { i.jf } as usize;
                }
                BPF_RET_K => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn keyring_calls_fail_and_everything_else_passes() {
        let p = job_filter();
        let x86 = 0xC000_003E;
        for nr in [248, 249, 250] {
            assert_eq!(run(&p, nr, x86), RET_ERRNO | libc::EPERM as u32);
        }
        for nr in [0, 1, 59, 56, 247, 251, 435] {
            assert_eq!(run(&p, nr, x86), RET_ALLOW, "syscall {nr}");
        }
        assert_eq!(
            run(&p, 250 | X32_SYSCALL_BIT, x86),
            RET_ERRNO | libc::ENOSYS as u32
        );
        // 32-bit binaries (old images) still run; only their keyring calls fail.
        let i386 = 0x4000_0003;
        for nr in [286, 287, 288] {
            assert_eq!(run(&p, nr, i386), RET_ERRNO | libc::EPERM as u32);
        }
        for nr in [1, 4, 11, 248, 250] {
            assert_eq!(run(&p, nr, i386), RET_ALLOW, "i386 syscall {nr}");
        }
        assert_eq!(run(&p, 250, 0x1234), RET_ALLOW, "unknown arch passes");
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn refused_btrfs_ioctls_fail_and_other_ioctls_pass() {
        let p = job_filter();
        let eperm = RET_ERRNO | libc::EPERM as u32;
        for (arch, ioctl) in [(0xC000_003E, 16), (0x4000_0003, 54)] {
            for req in crate::quota::REFUSED_BTRFS_IOCTLS {
                assert_eq!(run_with(&p, ioctl, arch, req), eperm, "{req:#x}");
            }
            // TCGETS, FIONREAD, the qgroup limit (root's; the job has no CAP_SYS_ADMIN).
            for req in [0x5401, 0x541B, 0x8030_942B] {
                assert_eq!(run_with(&p, ioctl, arch, req), RET_ALLOW, "{req:#x}");
            }
            // The same numbers in another syscall's argument mean nothing.
            assert_eq!(run_with(&p, 0, arch, 0x5000_940E), RET_ALLOW);
        }
    }
}
