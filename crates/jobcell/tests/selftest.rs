//! `jobcell selftest` on this machine: every attack of the suite must be refused.
//!
//! Run: `cargo test -p jobcell --test selftest`

mod common;

use std::process::Command;

use common::*;

#[test]
fn every_selftest_attack_is_refused() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("selftest");
    let out = Command::new(JOBCELL)
        .args(["selftest", "--json", "--work-dir"])
        .arg(t.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("selftest --json: {e}\n{stdout}\n{stderr}"));
    let rows = v["attacks"].as_array().unwrap();
    assert!(rows.len() >= 25, "only {} attacks", rows.len());
    let mut bad = Vec::new();
    for r in rows {
        if r["skipped"] == true {
            // The suite builds its own image, so nothing here needs to be skipped.
            bad.push(format!("skipped: {r}"));
        } else if r["ok"] != true {
            bad.push(format!("SUCCEEDED: {r}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(v["failed"], 0);
    // The human table says the same, and the suite is quick.
    let table = Command::new(JOBCELL)
        .args(["selftest", "--work-dir"])
        .arg(t.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("attack "), "{text}");
    assert!(text.contains(" held, 0 succeeded, 0 skipped"), "{text}");
    assert!(v["seconds"].as_f64().unwrap() < 30.0, "{v}");
    // Nothing of the suite is left: its work dir is gone, and no job cgroup or mount stayed.
    let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains("jobcell-selftest"), "{mi}");
}

#[test]
fn selftest_refuses_to_run_unprivileged() {
    if skip_unless_root() {
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            JOBCELL,
            "selftest",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("must run as root"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}
