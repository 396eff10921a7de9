//! The tree removal against real trees: deep ones under a low descriptor limit, and hostile
//! ones holding a bind mount and symlinks to a directory outside the tree.
//!
//! Each test body runs in a re-executed copy of this test binary, so its descriptor limit and
//! its mounts (in a mount namespace of its own) cannot leak into the other tests or the host.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use jobcell_os::dir::{mkdirat, openat};
use jobcell_os::{open_dir, open_dir_at, path_cstr, remove_tree_at, RemoveTreeError};

const CHILD_ENV: &str = "JOBCELL_OS_TEST_CHILD";

/// Run test `name` alone in a fresh process with at most `nofile` descriptors, in a private
/// mount namespace when `own_mounts`, as `uid` (and gid) when given; fails the calling test if
/// it fails.
fn run_in_child(name: &str, nofile: Option<u64>, own_mounts: bool, uid: Option<u32>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1");
    // SAFETY: the closure runs in the forked child before exec and calls only setrlimit,
    // unshare, mount and the set*id calls, which are async-signal-safe and take no lock and
    // allocate nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(n) = nofile {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if own_mounts {
                if libc::unshare(libc::CLONE_NEWNS) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Nothing mounted here propagates back to the host.
                let rc = libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                );
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(id) = uid {
                if libc::setgroups(0, std::ptr::null()) < 0
                    || libc::setresgid(id, id, id) < 0
                    || libc::setresuid(id, id, id) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} failed in its child:\n{text}");
    assert!(
        text.contains("1 passed"),
        "{name} did not run in its child:\n{text}"
    );
}

fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn tmp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("jobcell-os-test-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p).unwrap();
    p
}

/// Make a chain of `depth` directories `d/d/d...` below `dir`, each holding a file, holding
/// two descriptors at a time (the path is far longer than PATH_MAX).
fn make_deep(dir: &Path, depth: usize) {
    let mut fd: OwnedFd = open_dir(&path_cstr(dir).unwrap()).unwrap();
    for _ in 0..depth {
        mkdirat(fd.as_fd(), c"d", 0o755).unwrap();
        drop(openat(fd.as_fd(), c"f", libc::O_CREAT | libc::O_WRONLY, 0o644).unwrap());
        fd = open_dir_at(fd.as_fd(), c"d").unwrap();
    }
}

#[test]
fn a_10000_deep_tree_is_removed_under_a_descriptor_limit_of_32() {
    if !in_child() {
        return run_in_child(
            "a_10000_deep_tree_is_removed_under_a_descriptor_limit_of_32",
            Some(32),
            false,
            None,
        );
    }
    let base = tmp("deep");
    fs::create_dir(base.join("tree")).unwrap();
    make_deep(&base.join("tree"), 10_000);
    let bfd = open_dir(&path_cstr(&base).unwrap()).unwrap();
    remove_tree_at(bfd.as_fd(), c"tree").unwrap();
    assert!(!base.join("tree").exists(), "the deep tree is gone");
    drop(bfd);
    fs::remove_dir(&base).unwrap();
}

/// Unmounts on drop, so a failing assertion leaves no mount behind (the child's mount
/// namespace goes with it anyway).
struct Mounted(CString);

impl Drop for Mounted {
    fn drop(&mut self) {
        // SAFETY: the path is NUL-terminated and outlives the call.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

fn bind(src: &Path, dst: &Path) -> Mounted {
    let (s, d) = (path_cstr(src).unwrap(), path_cstr(dst).unwrap());
    // SAFETY: both paths are NUL-terminated and outlive the call; a bind needs no data.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    assert_eq!(
        rc,
        0,
        "bind {src:?} on {dst:?}: {}",
        std::io::Error::last_os_error()
    );
    Mounted(d)
}

#[test]
fn removal_never_crosses_a_mount_nor_follows_a_symlink() {
    if !is_root() {
        eprintln!(
            "SKIPPED removal_never_crosses_a_mount_nor_follows_a_symlink: needs root (bind mounts)"
        );
        return;
    }
    if !in_child() {
        return run_in_child(
            "removal_never_crosses_a_mount_nor_follows_a_symlink",
            Some(64),
            true,
            None,
        );
    }
    let base = tmp("mount");
    let victim = base.join("victim");
    fs::create_dir_all(victim.join("sub")).unwrap();
    fs::write(victim.join("canary"), b"alive").unwrap();
    fs::write(victim.join("sub/canary"), b"alive").unwrap();
    let tree = base.join("tree");
    // One bind mount near the top, one deeper than the descriptor bound (so the re-opening
    // through ".." runs past it), and symlinks to the victim at both ends.
    fs::create_dir_all(tree.join("a/mnt")).unwrap();
    fs::create_dir(tree.join("deep")).unwrap();
    make_deep(&tree.join("deep"), 40);
    let mut deep = tree.join("deep");
    for _ in 0..40 {
        deep.push("d");
    }
    fs::create_dir(deep.join("mnt")).unwrap();
    symlink(&victim, tree.join("link")).unwrap();
    symlink(victim.join("canary"), deep.join("file-link")).unwrap();
    let _m1 = bind(&victim, &tree.join("a/mnt"));
    let _m2 = bind(&victim, &deep.join("mnt"));

    let bfd = open_dir(&path_cstr(&base).unwrap()).unwrap();
    let e = remove_tree_at(bfd.as_fd(), c"tree").unwrap_err();
    assert!(
        matches!(e, RemoveTreeError::CrossesMount { left: 2, ref first } if first == "mnt"),
        "{e}"
    );
    for c in ["canary", "sub/canary"] {
        assert_eq!(fs::read(victim.join(c)).unwrap(), b"alive", "{c}");
    }
    // Everything but the mount points and the directories holding them is gone.
    assert!(!tree.join("link").exists() && !deep.join("file-link").exists());
    assert!(!tree.join("deep/f").exists() && !deep.join("f").exists());
    assert_eq!(fs::read(tree.join("a/mnt/canary")).unwrap(), b"alive");
    assert_eq!(fs::read(deep.join("mnt/canary")).unwrap(), b"alive");
    drop((_m1, _m2));
    remove_tree_at(bfd.as_fd(), c"tree").unwrap();
    assert!(!tree.exists());
    assert_eq!(fs::read(victim.join("canary")).unwrap(), b"alive");
    drop(bfd);
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_symlink_or_file_as_the_root_is_unlinked_itself() {
    let base = tmp("root-link");
    fs::write(base.join("target"), b"kept").unwrap();
    symlink(base.join("target"), base.join("link")).unwrap();
    let bfd = open_dir(&path_cstr(&base).unwrap()).unwrap();
    remove_tree_at(bfd.as_fd(), c"link").unwrap();
    assert!(!base.join("link").exists());
    assert_eq!(fs::read(base.join("target")).unwrap(), b"kept");
    remove_tree_at(bfd.as_fd(), c"missing").unwrap();
    remove_tree_at(bfd.as_fd(), c"target").unwrap();
    assert!(!base.join("target").exists());
    drop(bfd);
    fs::remove_dir(&base).unwrap();
}

/// A uid with no passwd entry and no privilege: the owner of a job's tree, removing it rootless.
const OTHER_UID: u32 = 4242;

#[test]
fn read_only_and_unsearchable_directories_are_removed_by_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    if is_root() {
        // Root reads and writes through any mode: only the owner exercises the chmods.
        return run_in_child(
            "read_only_and_unsearchable_directories_are_removed_by_their_owner",
            None,
            false,
            Some(OTHER_UID),
        );
    }
    let base = tmp("ro");
    let t = base.join("tree");
    fs::create_dir_all(t.join("ro/a/b")).unwrap();
    fs::write(t.join("ro/a/b/file"), b"x").unwrap();
    fs::set_permissions(t.join("ro/a/b"), fs::Permissions::from_mode(0o500)).unwrap();
    fs::set_permissions(t.join("ro/a"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(t.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    let bfd = open_dir(&path_cstr(&base).unwrap()).unwrap();
    remove_tree_at(bfd.as_fd(), c"tree").unwrap();
    assert!(!t.exists());
    drop(bfd);
    fs::remove_dir(&base).unwrap();
}
