//! Rootless `jobcell run` where the host forbids user namespaces: one clear line, exit 125,
//! nothing left behind.
//!
//! The host's own setting is never touched: the test makes a user namespace (as root), sets
//! `user.max_user_namespaces = 0` *inside it* (the limit is per user namespace and binds its
//! descendants), and runs jobcell there as an unprivileged uid.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const JOBCELL: &str = env!("CARGO_BIN_EXE_jobcell");

#[test]
fn userns_disabled_is_one_clear_error() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (to map an unprivileged uid into a test user namespace)");
        return;
    }
    if Command::new("unshare").arg("--version").output().is_err()
        || Command::new("setpriv").arg("--version").output().is_err()
    {
        eprintln!("SKIPPED: needs unshare and setpriv (util-linux)");
        return;
    }
    let base = std::env::temp_dir().join(format!("jobcell-userns-test-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let scratch = base.join("scratch");
    // The inner sh is exec'd after the uid map exists, so it starts as root of the namespace
    // (with CAP_SYS_RESOURCE there); the outer one lost its capabilities when unshare exec'd it.
    let script = format!(
        "read go; exec sh -c 'echo 0 > /proc/sys/user/max_user_namespaces || exit 99; \
         exec setpriv --reuid 65534 --regid 65534 --clear-groups {JOBCELL} run \
         --scratch-base {} -- true'",
        scratch.display()
    );
    let mut child = Command::new("unshare")
        .args(["--user", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until unshare has entered the new namespace, then map root and nobody (we are root
    // outside, so two ranges are allowed) and let the script go on.
    let mine = std::fs::metadata("/proc/self/ns/user").unwrap().ino();
    let start = Instant::now();
    while std::fs::metadata(format!("/proc/{pid}/ns/user"))
        .map(|m| m.ino())
        .ok()
        == Some(mine)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "unshare never made its namespace"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(format!("/proc/{pid}/uid_map"), "0 0 1\n65534 65534 1\n").unwrap();
    std::fs::write(format!("/proc/{pid}/gid_map"), "0 0 1\n65534 65534 1\n").unwrap();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(
        lines[0].starts_with("jobcell: ") && lines[0].contains("user namespaces"),
        "the error must say user namespaces are unavailable: {err}"
    );
    eprintln!("jobcell said: {}", lines[0]);
    // Nothing was left in the scratch base (it may have been created, empty).
    if scratch.exists() {
        assert_eq!(
            std::fs::read_dir(&scratch).unwrap().count(),
            0,
            "leftovers in scratch"
        );
    }
    std::fs::remove_dir_all(&base).unwrap();
    assert!(!Path::new(&base).exists());
}
