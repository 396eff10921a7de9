//! A daemon stopped cleanly (SIGTERM) leaves no empty cgroup of its own behind, and a running
//! job survives the stop with its cgroup. Needs root; without it each test prints SKIPPED.

mod daemon_harness;

use std::path::PathBuf;
use std::time::Duration;

use daemon_harness::*;
use jobcell_node::types::State;

const T: Duration = Duration::from_secs(60);

/// Where the daemon (a child of this process, in its cgroups) makes its default parent: a
/// `jobcell` child of its own cgroup in each mounted hierarchy.
fn default_parents() -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut out = Vec::new();
    for m in mounts.lines() {
        let Some((pre, post)) = m.split_once(" - ") else {
            continue;
        };
        if !post.starts_with("cgroup ") && !post.starts_with("cgroup2 ") {
            continue;
        }
        let mp = pre.split(' ').nth(4).unwrap();
        for l in own.lines() {
            let path = l.splitn(3, ':').nth(2).unwrap();
            let p = PathBuf::from(format!("{mp}{path}")).join("jobcell");
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// Subdirectories of a cgroup dir (its child cgroups).
fn children(p: &std::path::Path) -> Vec<PathBuf> {
    std::fs::read_dir(p)
        .map(|r| {
            r.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_clean_stop_removes_the_daemons_empty_cgroups_and_keeps_a_running_jobs() {
    if !root_or_skip("a_clean_stop_removes_the_daemons_empty_cgroups_and_keeps_a_running_jobs") {
        return;
    }
    let _g = serial();
    let mut d = Daemon::start(&[]);
    let ids = d.submit(serde_json::json!({"spec": spec_json(&["/bin/true"])}));
    d.wait_state(ids[0], State::Completed, T);
    let made: Vec<PathBuf> = default_parents()
        .into_iter()
        .filter(|p| p.join("supervisors").is_dir())
        .collect();
    assert!(!made.is_empty(), "the daemon made no cgroup parent");
    d.stop();
    for p in &made {
        // Another jobcell on this host may share a parent (same cgroup): then it holds that
        // one's cgroups. An empty one, or an empty `supervisors`, is a leftover.
        let left = children(p);
        assert!(
            !p.exists() || left.iter().any(|c| !children(c).is_empty() || has_procs(c)),
            "{} left behind with {left:?}",
            p.display()
        );
    }

    // A running job's cgroup survives the stop (and so does the job), and is its own again
    // after a restart.
    d.restart();
    let ids = d.submit(serde_json::json!({"spec": spec_json(&["sleep", "30"])}));
    d.wait_state(ids[0], State::Running, T);
    d.stop();
    let still: Vec<PathBuf> = made
        .iter()
        .filter(|p| p.join("supervisors").is_dir())
        .cloned()
        .collect();
    assert!(
        !still.is_empty(),
        "the running job's supervisor cgroups went"
    );
    d.restart();
    let j = d.job(ids[0]);
    assert_eq!(j.state, State::Running, "{j:?}\n{}", d.log());
    let out = d.cli(&["rm", &ids[0].to_string()]);
    assert!(out.status.success(), "{out:?}");
    d.wait_idle(T);
}

fn spec_json(argv: &[&str]) -> serde_json::Value {
    let mut s = jobcell_spec::JobSpec::new(argv.iter().map(|s| s.to_string()).collect());
    s.resources.cpus = Some(0.05);
    s.resources.memory = Some(32 << 20);
    serde_json::to_value(s).unwrap()
}

fn has_procs(p: &std::path::Path) -> bool {
    std::fs::read_to_string(p.join("cgroup.procs")).is_ok_and(|s| !s.trim().is_empty())
}
