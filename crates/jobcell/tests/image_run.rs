//! `jobcell run --image NAME`: the job runs inside a registered image, entered with pivot_root,
//! read-only, with its scratch, private dirs and binds mounted in. Real images built from
//! busybox-static; run as root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A minimal OS tree: busybox and its applets, an os-release, and a passwd without the job's
/// user (the job still runs with its numeric uid).
fn busybox_tree(dir: &Path) -> Option<PathBuf> {
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())?;
    let root = dir.join("tree");
    for d in ["bin", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(&bb, root.join("bin/busybox")).unwrap();
    for a in [
        "sh", "cat", "ls", "touch", "ps", "id", "sleep", "grep", "test", "echo", "stat", "mkdir",
        "pwd", "head", "wc", "rm",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        root.join("etc/os-release"),
        "ID=jobcelltest\nPRETTY_NAME=\"jobcell test image\"\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    Some(root)
}

struct Store {
    dir: TestDir,
}

impl Store {
    /// A private store with one public image named `name`.
    fn with_image(tag: &str, name: &str) -> Option<Store> {
        let dir = TestDir::new(tag);
        let Some(tree) = busybox_tree(dir.path()) else {
            eprintln!("SKIPPED: no busybox (apt-get install busybox-static)");
            return None;
        };
        let s = Store { dir };
        let out = s.cli(&["image", "add", name, "--public", tree.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "image add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(s)
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new(JOBCELL);
        c.args(args).arg("--state-dir").arg(self.state());
        c.output().unwrap()
    }

    fn job(&self, image: &str) -> Job {
        Job::new(&self.dir.base())
            .opt("--state-dir")
            .opt(self.state())
            .opt("--image")
            .opt(image)
    }
}

#[test]
fn a_job_sees_the_image_not_the_host_and_cannot_write_it() {
    if skip_unless_root() {
        return;
    }
    let Some(s) = Store::with_image("img-view", "testos") else {
        return;
    };
    let script = r#"cat /etc/os-release | head -1
echo uid=$(id -u)
test -e /usr/bin/env && echo host-usr=visible || echo host-usr=hidden
touch /bin/x 2>/dev/null && echo bin=writable || echo bin=readonly
touch /etc/x 2>/dev/null && echo etc=writable || echo etc=readonly
echo data > /tmp/t && echo tmp=ok
echo data > ./f && echo scratch=ok
echo cwd=$(pwd)
echo pids=$(ps -o pid= | wc -l)"#;
    let out = s.job("testos").sh(script);
    out.expect(0);
    assert_eq!(out.lines()[0], "ID=jobcelltest", "{out:?}");
    // The job's own uid (from [run] job_uids), which the image's passwd does not name.
    let uid: u32 = out.value("uid").unwrap().parse().unwrap();
    assert!((0x7000_0000..=0x7000_FFFF).contains(&uid), "uid {uid}");
    assert_eq!(out.value("host-usr"), Some("hidden"));
    assert_eq!(out.value("bin"), Some("readonly"));
    assert_eq!(out.value("etc"), Some("readonly"));
    assert_eq!(out.value("tmp"), Some("ok"));
    assert_eq!(out.value("scratch"), Some("ok"));
    assert!(
        out.value("cwd")
            .unwrap()
            .starts_with(s.dir.base().to_str().unwrap()),
        "{out:?}"
    );
    s.dir.assert_base_empty();
}

#[test]
fn ro_binds_land_inside_the_image_and_host_files_outside_binds_stay_hidden() {
    if skip_unless_root() {
        return;
    }
    let Some(s) = Store::with_image("img-bind", "testos") else {
        return;
    };
    let shared = s.dir.subdir("shared", 0o755);
    std::fs::write(shared.join("input"), "from the host\n").unwrap();
    let secret = s.dir.subdir("secret", 0o755);
    std::fs::write(secret.join("file"), "secret\n").unwrap();
    let out = s
        .job("testos")
        .opt("--ro-bind")
        .opt(format!("{}:/data", shared.display()))
        .sh(&format!(
            "cat /data/input; echo x > /data/new 2>/dev/null && echo w=yes || echo w=no; \
             test -e {} && echo secret=visible || echo secret=hidden",
            secret.join("file").display()
        ));
    out.expect(0);
    assert_eq!(out.lines()[0], "from the host");
    assert_eq!(out.value("w"), Some("no"));
    assert_eq!(out.value("secret"), Some("hidden"));
    assert!(!shared.join("new").exists());
}

#[test]
fn two_concurrent_jobs_share_one_image_and_it_cannot_be_removed_meanwhile() {
    if skip_unless_root() {
        return;
    }
    let Some(s) = Store::with_image("img-share", "testos") else {
        return;
    };
    let ctl = s.dir.subdir("ctl", 0o777);
    let c = ctl.display();
    let a = s.job("testos").opt("--bind").opt(&ctl).spawn_sh(&format!(
        "echo a > /tmp/mine; touch {c}/a; n=0; while [ ! -e {c}/go ] && [ $n -lt 500 ]; do sleep 0.02; n=$((n+1)); done; cat /tmp/mine"
    ));
    let b = s.job("testos").opt("--bind").opt(&ctl).spawn_sh(&format!(
        "echo b > /tmp/mine; touch {c}/b; n=0; while [ ! -e {c}/go ] && [ $n -lt 500 ]; do sleep 0.02; n=$((n+1)); done; cat /tmp/mine"
    ));
    wait_for_file(&ctl.join("a"), std::time::Duration::from_secs(20));
    wait_for_file(&ctl.join("b"), std::time::Duration::from_secs(20));
    let rm = s.cli(&["image", "rm", "testos"]);
    assert!(
        !rm.status.success(),
        "rm of an image in use must be refused"
    );
    let e = String::from_utf8_lossy(&rm.stderr);
    assert!(e.contains("testos"), "{e}");
    std::fs::write(ctl.join("go"), "").unwrap();
    let (a, b) = (a.wait(), b.wait());
    a.expect(0);
    b.expect(0);
    assert_eq!(
        a.stdout, "a\n",
        "each job has its own /tmp in the shared image"
    );
    assert_eq!(b.stdout, "b\n");
    // Once nobody uses it, it can go.
    let rm = s.cli(&["image", "rm", "testos"]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    s.dir.assert_base_empty();
}

#[test]
fn an_unknown_image_is_a_clear_error_listing_the_usable_names() {
    if skip_unless_root() {
        return;
    }
    let Some(s) = Store::with_image("img-unknown", "testos") else {
        return;
    };
    let out = s.job("nosuch").run(&["true"]);
    out.expect(125);
    let l = out.stderr.lines().collect::<Vec<_>>();
    assert_eq!(l.len(), 1, "{:?}", out.stderr);
    assert!(
        l[0].contains("nosuch") && l[0].contains("testos"),
        "{}",
        l[0]
    );
    s.dir.assert_base_empty();
}
