//! Fault injection: the launcher SIGKILLed at each point of the launch sequence
//! (`JOBCELL_CRASH_AT`, debug builds only) leaves nothing once the next `jobcell run` has
//! garbage-collected: no mount, no cgroup of the dead launcher, no scratch dir, no job process.
//!
//! Run: `cargo test -p jobcell --test crash`

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const POINTS: [&str; 5] = ["clone", "scratch", "cgroup", "go", "wait"];

/// Cgroup dirs named `job-<pid>-*` anywhere under /sys/fs/cgroup (jobcell's subtrees only are
/// deep enough to matter; the walk is bounded).
fn cgroups_of(pid: i32) -> Vec<String> {
    fn walk(d: &Path, depth: u32, prefix: &str, out: &mut Vec<String>) {
        if depth > 8 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(prefix) {
                out.push(e.path().display().to_string());
            } else {
                walk(&e.path(), depth + 1, prefix, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        Path::new("/sys/fs/cgroup"),
        0,
        &format!("job-{pid}-"),
        &mut out,
    );
    out
}

fn crash_at(point: &str) {
    let t = TestDir::new(&format!("crash-{point}"));
    let marker = unique_sleep(100);
    // Output to /dev/null: a job that outlived its launcher would hold a pipe open, and the
    // test would wait for it instead of failing.
    let mut cmd = Job::new(&t.base())
        .host_env("JOBCELL_CRASH_AT", point)
        .command(&["sleep", &marker]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{point}: jobcell did not crash there"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{point}: jobcell did not crash there: {status:?}"
    );
    // Nothing of the job outlives the launcher, whenever it died (PDEATHSIG, or the init
    // seeing the go pipe hang up when the launcher died before it could set PDEATHSIG).
    let t0 = Instant::now();
    while !host_pids_with_exact_arg(&marker).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{point}: the job outlived its launcher: {:?}",
            host_pids_with_exact_arg(&marker)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The dead launcher left its scratch dir (made right after the clone: every point but
    // "clone" is after it), and from "cgroup" on its cgroup (v2 makes it before the clone, v1
    // after): the next start collects both.
    let before = std::fs::read_dir(t.base()).map(|r| r.count()).unwrap_or(0);
    assert_eq!(
        before,
        usize::from(point != "clone"),
        "{point}: scratch dirs left to collect"
    );
    if !matches!(point, "scratch" | "clone") {
        assert!(!cgroups_of(pid).is_empty(), "{point}: no cgroup to collect");
    }
    Job::new(&t.base()).run(&["true"]).expect(0);
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let base = t.base().display().to_string();
    assert!(
        !mi.lines().any(|l| l.contains(&base)),
        "{point}: a mount under the scratch base is left:\n{mi}"
    );
    assert_eq!(
        cgroups_of(pid),
        Vec::<String>::new(),
        "{point}: cgroup left"
    );
    t.assert_base_empty();
    // The job's processes die with the init (PDEATHSIG, then the pid namespace).
    let t0 = Instant::now();
    while !host_pids_with_exact_arg(&marker).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{point}: job processes left: {:?}",
            host_pids_with_exact_arg(&marker)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigkill_at_each_launch_point_leaves_nothing_after_the_next_start() {
    if skip_unless_root() {
        return;
    }
    if !cfg!(debug_assertions) {
        eprintln!("SKIPPED: JOBCELL_CRASH_AT exists in debug builds only");
        return;
    }
    for p in POINTS {
        crash_at(p);
    }
}

#[test]
fn a_job_that_ran_before_the_crash_is_gone_too() {
    if skip_unless_root() {
        return;
    }
    if !cfg!(debug_assertions) {
        eprintln!("SKIPPED: JOBCELL_CRASH_AT exists in debug builds only");
        return;
    }
    // "wait" with a job that is surely running: the launcher is killed from outside while the
    // job runs (the same state as the "wait" point, reached later), then GC.
    let t = TestDir::new("crash-running");
    let marker = unique_sleep(100);
    let ready = t.subdir("ctl", 0o777).join("ready");
    let r = Job::new(&t.base())
        .opt("--bind")
        .opt(t.path().join("ctl"))
        .spawn_sh(&format!("touch {}; exec sleep {marker}", ready.display()));
    wait_for_file(&ready, Duration::from_secs(10));
    let pid = r.pid();
    let t0 = Instant::now();
    while host_pids_with_exact_arg(&marker).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(5), "the job never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    r.signal(libc::SIGKILL);
    let out = r.wait();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL));
    Job::new(&t.base()).run(&["true"]).expect(0);
    assert_eq!(cgroups_of(pid), Vec::<String>::new());
    t.assert_base_empty();
    let t0 = Instant::now();
    while !host_pids_with_exact_arg(&marker).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(5), "job processes left");
        std::thread::sleep(Duration::from_millis(10));
    }
}
