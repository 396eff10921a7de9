//! A small seccomp filter for the job: the kernel's key management syscalls, new cgroup
//! namespaces, and the btrfs ioctls that make a subvolume or change its flags fail with EPERM.
//!
//! Keyrings are not isolated by PID or mount namespaces: every process of a uid shares that
//! uid's user keyring (`@u`), so two jobs running as the same user (often all `nobody`) could
//! pass secrets through it or read each other's keys. No batch job needs add_key, request_key
//! or keyctl; container runtimes block them for the same reason.
//!
//! A cgroup namespace of the job's own making (`unshare -U -C`, allowed with a user namespace)
//! would let it mount cgroupfs rooted where it stands in every hierarchy, including, on a
//! v1 host, the unified one, where it stands in the launcher's cgroup among host processes.
//! The job gets its cgroup namespace from jobcell before this filter exists; after it, unshare
//! and clone with CLONE_NEWCGROUP fail, and clone3 (whose flags a filter cannot read) fails
//! with ENOSYS, so that glibc falls back to clone, as under Docker's default profile.
//!
//! A subvolume or snapshot made in a bounded scratch would have a qgroup of its own, outside
//! the job's bound, and a read-only scratch subvolume could not be cleaned up (`quota.rs`).
//!
//! The x32 ABI, which would let a job reach the same syscalls under other numbers, is refused
//! too.

/// `struct seccomp_data`: nr at offset 0, arch at offset 4, args from offset 16, 8 bytes each
/// (the low word of each first, on the little-endian architectures listed here).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LO: u32 = 16;
/// An ioctl's request (an unsigned int: the low word of the second argument).
const OFF_ARG1_LO: u32 = 24;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;

/// The syscall numbers the filter looks at, per architecture.
struct Numbers {
    /// AUDIT_ARCH_* of the architecture.
    arch: u32,
    keyring: [u32; 3],
    unshare: u32,
    clone: u32,
    clone3: u32,
    ioctl: u32,
}

/// The native architecture, and the compat one whose binaries it also runs (32-bit x86 under
/// x86_64, arm under aarch64).
#[cfg(target_arch = "x86_64")]
const ARCHES: &[Numbers] = &[
    Numbers {
        arch: 0xC000_003E,
        keyring: [248, 249, 250],
        unshare: 272,
        clone: 56,
        clone3: 435,
        ioctl: 16,
    },
    Numbers {
        arch: 0x4000_0003,
        keyring: [286, 287, 288],
        unshare: 310,
        clone: 120,
        clone3: 435,
        ioctl: 54,
    },
];
#[cfg(target_arch = "aarch64")]
const ARCHES: &[Numbers] = &[
    Numbers {
        arch: 0xC000_00B7,
        keyring: [217, 218, 219],
        unshare: 97,
        clone: 220,
        clone3: 435,
        ioctl: 29,
    },
    Numbers {
        arch: 0x4000_0028,
        keyring: [309, 310, 311],
        unshare: 337,
        clone: 120,
        clone3: 435,
        ioctl: 54,
    },
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHES: &[Numbers] = &[];

const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const CLONE_NEWCGROUP: u32 = libc::CLONE_NEWCGROUP as u32;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A conditional jump from instruction `at` to the absolute instructions `t` and `f`.
fn jump(code: u16, k: u32, at: usize, t: usize, f: usize) -> libc::sock_filter {
    let rel = |to: usize| u8::try_from(to - at - 1).expect("a short forward jump");
    libc::sock_filter {
        code,
        jt: rel(t),
        jf: rel(f),
        k,
    }
}

/// The filter program; empty where jobcell does not know the architecture's numbers.
pub fn job_filter() -> Vec<libc::sock_filter> {
    if ARCHES.is_empty() {
        return Vec::new();
    }
    let eperm = RET_ERRNO | libc::EPERM as u32;
    let enosys = RET_ERRNO | libc::ENOSYS as u32;
    let ioctls = crate::btrfs::REFUSED_BTRFS_IOCTLS;
    let mut p = Vec::new();
    for (n, a) in ARCHES.iter().enumerate() {
        let native = n == 0;
        let b = p.len();
        // The block's layout, by absolute index: arch test, syscall tests, then the argument
        // tests of unshare/clone (flags) and of ioctl (request), then the shared returns.
        let x = usize::from(native);
        let nr_tests = b + 3 + x;
        let allow = nr_tests + 7;
        let flags = allow + 1;
        let request = flags + 3;
        let deny = request + 1 + ioctls.len() + 1;
        let nosys = deny + 1;
        let next = nosys + 1;
        p.push(stmt(BPF_LD_W_ABS, OFF_ARCH));
        p.push(jump(BPF_JEQ_K, a.arch, b + 1, b + 2, next));
        p.push(stmt(BPF_LD_W_ABS, OFF_NR));
        if native {
            // x32 reaches the same calls under other numbers: refuse the whole ABI.
            p.push(jump(BPF_JGE_K, X32_SYSCALL_BIT, b + 3, nosys, b + 4));
        }
        let tests = [
            (a.keyring[0], deny),
            (a.keyring[1], deny),
            (a.keyring[2], deny),
            (a.clone3, nosys),
            (a.unshare, flags),
            (a.clone, flags),
            (a.ioctl, request),
        ];
        for (i, (nr, to)) in tests.into_iter().enumerate() {
            let at = nr_tests + i;
            p.push(jump(BPF_JEQ_K, nr, at, to, at + 1));
        }
        p.push(stmt(BPF_RET_K, RET_ALLOW));
        // unshare(flags) and clone(flags, ...): the flags are the first argument.
        p.push(stmt(BPF_LD_W_ABS, OFF_ARG0_LO));
        p.push(jump(
            BPF_JSET_K,
            CLONE_NEWCGROUP,
            flags + 1,
            deny,
            flags + 2,
        ));
        p.push(stmt(BPF_RET_K, RET_ALLOW));
        // ioctl(fd, request, ...): the refused btrfs requests.
        p.push(stmt(BPF_LD_W_ABS, OFF_ARG1_LO));
        for (i, &req) in ioctls.iter().enumerate() {
            let at = request + 1 + i;
            p.push(jump(BPF_JEQ_K, req, at, deny, at + 1));
        }
        p.push(stmt(BPF_RET_K, RET_ALLOW));
        p.push(stmt(BPF_RET_K, eperm));
        p.push(stmt(BPF_RET_K, enosys));
        debug_assert_eq!(p.len(), next);
    }
    // Any other architecture: nothing to translate, allow as the host would.
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the subset of classic BPF the filter uses.
    fn run(prog: &[libc::sock_filter], nr: u32, arch: u32, arg0: u32) -> u32 {
        run_with(prog, nr, arch, arg0, 0)
    }

    fn run_with(prog: &[libc::sock_filter], nr: u32, arch: u32, arg0: u32, arg1: u32) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            match i.code {
                BPF_LD_W_ABS => {
                    acc = match i.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        OFF_ARG0_LO => arg0,
                        OFF_ARG1_LO => arg1,
                        k => panic!("unexpected offset {k}"),
                    }
                }
                BPF_JEQ_K => {
                    pc += if acc == i.k { i.jt } else { i.jf } as usize;
                }
                BPF_JGE_K => {
                    pc += if acc >= i.k { i.jt } else { i.jf } as usize;
                }
                BPF_JSET_K => {
                    pc += if acc & i.k != 0 { i.jt } else { i.jf } as usize;
                }
                BPF_RET_K => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn keyring_calls_and_new_cgroup_namespaces_fail_and_everything_else_passes() {
        let p = job_filter();
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let enosys = RET_ERRNO | libc::ENOSYS as u32;
        let x86 = 0xC000_003E;
        for nr in [248, 249, 250] {
            assert_eq!(run(&p, nr, x86, 0), eperm);
        }
        for nr in [0, 1, 59, 57, 247, 251, 434, 436] {
            assert_eq!(run(&p, nr, x86, CLONE_NEWCGROUP), RET_ALLOW, "syscall {nr}");
        }
        assert_eq!(run(&p, 250 | X32_SYSCALL_BIT, x86, 0), enosys);
        // unshare and clone: refused with CLONE_NEWCGROUP among the flags, else allowed.
        let newuser = libc::CLONE_NEWUSER as u32;
        let newns = libc::CLONE_NEWNS as u32;
        for nr in [272, 56] {
            assert_eq!(run(&p, nr, x86, CLONE_NEWCGROUP), eperm, "syscall {nr}");
            assert_eq!(run(&p, nr, x86, newuser | CLONE_NEWCGROUP | newns), eperm);
            assert_eq!(run(&p, nr, x86, newuser | newns), RET_ALLOW, "syscall {nr}");
            assert_eq!(run(&p, nr, x86, libc::SIGCHLD as u32), RET_ALLOW);
        }
        assert_eq!(run(&p, 435, x86, 0), enosys, "clone3 falls back to clone");
        // 32-bit binaries (old images) still run; only these calls fail.
        let i386 = 0x4000_0003;
        for nr in [286, 287, 288] {
            assert_eq!(run(&p, nr, i386, 0), eperm);
        }
        for nr in [310, 120] {
            assert_eq!(run(&p, nr, i386, CLONE_NEWCGROUP), eperm, "i386 {nr}");
            assert_eq!(run(&p, nr, i386, newuser), RET_ALLOW, "i386 {nr}");
        }
        assert_eq!(run(&p, 435, i386, 0), enosys);
        for nr in [1, 4, 11, 248, 250, 272] {
            assert_eq!(
                run(&p, nr, i386, CLONE_NEWCGROUP),
                RET_ALLOW,
                "i386 syscall {nr}"
            );
        }
        assert_eq!(run(&p, 250, 0x1234, 0), RET_ALLOW, "unknown arch passes");
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn refused_btrfs_ioctls_fail_and_other_ioctls_pass() {
        let p = job_filter();
        let eperm = RET_ERRNO | libc::EPERM as u32;
        for (arch, ioctl) in [(0xC000_003E, 16), (0x4000_0003, 54)] {
            for req in crate::btrfs::REFUSED_BTRFS_IOCTLS {
                assert_eq!(run_with(&p, ioctl, arch, 0, req), eperm, "{req:#x}");
            }
            // TCGETS, FIONREAD, the qgroup limit (root's; the job has no CAP_SYS_ADMIN).
            for req in [0x5401, 0x541B, 0x8030_942B] {
                assert_eq!(run_with(&p, ioctl, arch, 0, req), RET_ALLOW, "{req:#x}");
            }
            // The same numbers in another syscall's argument mean nothing.
            assert_eq!(run_with(&p, 0, arch, 0, 0x5000_940E), RET_ALLOW);
        }
    }
}
