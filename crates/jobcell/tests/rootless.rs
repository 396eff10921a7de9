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

fn setpriv_nobody() -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        JOBCELL,
    ]);
    c
}

/// An unprivileged user runs a public image that root registered: the image's files, read-only
/// binds, private IPC/UTS, no host cgroup tree, the "limits come from the scheduler" warning
/// said once, and a report built from rusage. Nothing is left behind.
#[test]
fn rootless_image_view_binds_and_report() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (to register an image and become an unprivileged user)");
        return;
    }
    let Some(bb) = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("SKIPPED: no busybox for the test image (apt-get install busybox-static)");
        return;
    };
    let t = std::env::temp_dir().join(format!("jobcell-rootless-img-{}", std::process::id()));
    // Removed even when a check fails (no mount can be in it: jobs mount only in their own
    // namespaces).
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(t.clone());
    let r = t.join("rootfs");
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::copy(bb, r.join("bin/busybox")).unwrap();
    for a in ["sh", "cat", "ls", "wc", "echo", "hostname", "readlink"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
    }
    std::fs::write(r.join("etc/os-release"), "ID=jobcell-rootless-test\n").unwrap();
    let data = t.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("in"), "input\n").unwrap();
    let scratch = t.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    std::os::unix::fs::chown(&scratch, Some(65534), Some(65534)).unwrap();
    for d in [&t, &data] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let store = t.join("store");
    let o = Command::new(JOBCELL)
        .args([
            "image",
            "add",
            "rl",
            r.to_str().unwrap(),
            "--public",
            "--state-dir",
        ])
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "image add: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    let o = setpriv_nobody()
        .args(["run", "--report", "-", "--memory", "100M", "--scratch-base"])
        .arg(&scratch)
        .arg("--state-dir")
        .arg(&store)
        .args(["--image", "rl", "--ro-bind"])
        .arg(format!("{}:/data", data.display()))
        .args([
            "--",
            "sh",
            "-c",
            "cat /etc/os-release; echo cg=$(ls /sys/fs/cgroup | wc -l); cat /data/in; \
             (echo x > /data/out) 2>/dev/null; echo rw=$?; \
             echo ipc=$(readlink /proc/self/ns/ipc) uts=$(readlink /proc/self/ns/uts)",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    if o.status.code() == Some(125) && err.contains("user namespaces") {
        eprintln!("SKIPPED: user namespaces unavailable: {}", err.trim());
        std::fs::remove_dir_all(&t).unwrap();
        return;
    }
    assert!(o.status.success(), "{out}\n{err}");
    let host_ns = |n: &str| std::fs::read_link(format!("/proc/self/ns/{n}")).unwrap();
    assert!(out.contains("ID=jobcell-rootless-test"), "{out}");
    assert!(
        out.contains("cg=0"),
        "the host's cgroup tree is visible: {out}"
    );
    assert!(out.contains("input"), "{out}");
    assert!(
        !out.contains("rw=0") && !data.join("out").exists(),
        "--ro-bind was writable: {out}"
    );
    for n in ["ipc", "uts"] {
        let h = host_ns(n).to_string_lossy().into_owned();
        assert!(
            !out.contains(&h),
            "the job shares the host's {n} namespace: {out}"
        );
    }
    let (said, json) = err.split_at(err.find('{').expect("a JSON report on stderr"));
    assert_eq!(
        said.matches("limits come from the enclosing scheduler")
            .count(),
        1,
        "the warning must be said once: {said}"
    );
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["isolation"]["rootless"], true);
    assert_eq!(v["isolation"]["image"], "rl");
    assert_eq!(v["cpu_source"], "rusage");
    for ns in ["user", "pid", "mount", "ipc", "uts"] {
        assert!(
            v["isolation"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == ns),
            "{ns} missing: {json}"
        );
    }
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "scratch leftovers"
    );
    std::fs::remove_dir_all(&t).unwrap();
}
