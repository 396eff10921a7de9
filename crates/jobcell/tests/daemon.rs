//! The node agent end to end: a real `jobcell daemon` on a temporary state dir and socket, real
//! jobs through real supervisors and the launcher. Needs root (jobs run as other users, in
//! cgroups); without it each test prints SKIPPED and returns.
//!
//! Scratch dirs go to a tmpfs (/dev/shm) dir: on this machine's root ext4 every rmdir costs
//! ~3 ms (discard), which would dominate short jobs.

mod daemon_harness;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_harness::*;
use jobcell_node::client::{Client, ClientError};
use jobcell_node::types::{Event, NodeStatus, State, SubmitResponse};
use serde_json::json;

fn true_job(extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "spec": spec_json(&["/bin/true"]),
    });
    if let (Some(o), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    spec
}

/// A JobSpec as the CLI would send it.
fn spec_json(argv: &[&str]) -> serde_json::Value {
    let mut s = jobcell_spec::JobSpec::new(argv.iter().map(|s| s.to_string()).collect());
    s.resources.cpus = Some(0.05);
    s.resources.memory = Some(32 << 20);
    serde_json::to_value(s).unwrap()
}

/// Jobs of nobody running at the same time each get a uid of their own from `[run] job_uids`
/// (the default range here); the job's files the daemon keeps stay nobody's.
#[test]
fn concurrent_jobs_of_nobody_run_as_distinct_job_uids() {
    if !root_or_skip("concurrent_jobs_of_nobody_run_as_distinct_job_uids") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let submit = || {
        let o = d.cli(&[
            "submit",
            "-q",
            "--cpus",
            "0.1",
            "--memory",
            "32",
            "--",
            "/bin/sh",
            "-c",
            "id -u; id -G; sleep 1.5",
        ]);
        assert!(o.status.success(), "{}", err(&o));
        ids(&o)[0]
    };
    let (a, b) = (submit(), submit());
    let ja = d.wait_state(a, State::Completed, Duration::from_secs(30));
    let jb = d.wait_state(b, State::Completed, Duration::from_secs(30));
    assert!(
        ja.started_at.unwrap() < jb.ended_at.unwrap()
            && jb.started_at.unwrap() < ja.ended_at.unwrap(),
        "the two jobs did not run at the same time: {ja:?} {jb:?}"
    );
    let uid_of = |id: u64| -> u32 {
        let o = d.cli(&["output", &id.to_string()]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let mut lines = text.lines();
        let uid: u32 = lines.next().unwrap().parse().unwrap();
        // The gid of the same number is its only group.
        assert_eq!(lines.next(), Some(uid.to_string().as_str()), "{text}");
        // `q -l` says which uid it ran as.
        assert_eq!(d.ad(id)["JobcellUid"], uid.to_string());
        // Its default output is root's: nothing of the job's uid outlives the job.
        let out = d.state.join(format!("jobs/{id}/stdout"));
        let meta = std::fs::metadata(out).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
        uid
    };
    let (ua, ub) = (uid_of(a), uid_of(b));
    assert_ne!(ua, ub, "two concurrent jobs of nobody share a uid");
    for u in [ua, ub] {
        assert!(
            (0x7000_0000..=0x7000_FFFF).contains(&u),
            "uid {u} outside the range"
        );
    }
    let o = d.cli(&["q", "-l", &a.to_string()]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("JobcellUid = {ua}")),
        "{}",
        out(&o)
    );
}

#[test]
fn a_job_runs_and_its_result_output_and_events_are_recorded() {
    if !root_or_skip("a_job_runs") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let o = d.cli(&[
        "submit",
        "--cpus",
        "0.5",
        "--memory",
        "64",
        "--",
        "/bin/sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Submitted job 1."), "{out}");
    let j = d.wait_state(1, State::Completed, Duration::from_secs(30));
    assert_eq!(j.exit_code, Some(3));
    assert_eq!(j.cpus, 0.5);
    assert_eq!(j.memory, 64 << 20);
    assert!(j.report.as_ref().unwrap()["wall_time_s"].as_f64().unwrap() > 0.0);
    let o = d.cli(&["output", "1"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    let o = d.cli(&["output", "1", "--stderr"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "err\n");
    // Default output files are root's, readable by no one else (the job writes through its
    // descriptors, or by name with a write-only ACL).
    let meta = std::fs::metadata(d.state.join("jobs/1/stdout")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    assert_eq!(std::os::unix::fs::MetadataExt::mode(&meta) & 0o047, 0);
    let ev: Vec<Event> = d.client().call("GET", "/v1/jobs/1/events", None).unwrap();
    let kinds: Vec<&str> = ev.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["submitted", "started", "ended"], "{ev:?}");
    let o = d.cli(&["output", "1", "--events"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("ended") && text.contains("\"exit_code\":3"),
        "{text}"
    );
    let o = d.cli(&["history"]);
    let h = String::from_utf8_lossy(&o.stdout);
    assert!(h.contains("completed") && h.contains("/bin/sh -c"), "{h}");
    let o = d.cli(&["status", "--json"]);
    let s: NodeStatus = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s.cpus_total, 2.0);
    assert_eq!(s.jobs.get("completed"), Some(&1));
    // The supervisor is not in the daemon's cgroup.
    let (pid, _) = d.supervisor_of(1);
    assert!(pid > 0);
}

#[test]
fn five_hundred_jobs_from_four_clients_complete_exactly_once() {
    if !root_or_skip("five_hundred_jobs") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "4G"]);
    let t = Instant::now();
    let ids: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let d = &d;
                s.spawn(move || {
                    (0..125)
                        .flat_map(|_| d.submit(true_job(json!({}))))
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 500, "ids are unique");
    d.wait_idle(Duration::from_secs(240));
    eprintln!(
        "500 jobs from 4 clients: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let h = d.history();
    assert_eq!(h.len(), 500);
    for j in &h {
        assert_eq!(j.state, State::Completed, "{j:?}");
        assert_eq!(j.exit_code, Some(0), "{j:?}");
        assert_eq!(j.attempt, 1, "{j:?}");
        assert!(j.report.is_some());
    }
    // Exactly one supervisor ran each job: one claim each, by a supervisor.
    assert_eq!(d.supervisor_pids().len(), 500);
}

#[test]
fn kill9_of_the_daemon_loses_and_duplicates_nothing() {
    if !root_or_skip("kill9_of_the_daemon") {
        return;
    }
    let _g = serial();
    let mut d = Daemon::start(&["--cpus", "2", "--memory", "4G"]);
    // Each job appends its token to a shared log: a job run twice would show up twice.
    let out = TempDir::new_in("/dev/shm");
    std::fs::set_permissions(&out.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    // Every job appends to one log; each job runs as a uid of its own, so the log is made
    // writable by all first (the first job's umask would keep it to that job's uid).
    std::fs::write(out.0.join("log"), "").unwrap();
    std::fs::set_permissions(
        out.0.join("log"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let log = out.0.join("log");
    let n = 200;
    let mut submitted = 0;
    let mut kills = 0;
    let mut rng = 0x2545F4914F6CDD1Du64 ^ std::process::id() as u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let t = Instant::now();
    let mut kill_at = Instant::now() + Duration::from_millis(30 + next() % 150);
    while submitted < n || kills < 10 {
        if submitted < n {
            let mut spec = jobcell_spec::JobSpec::new(vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo $TOKEN >> $OUT/log".into(),
            ]);
            spec.env.push(("TOKEN".into(), format!("t{submitted}")));
            spec.env
                .push(("OUT".into(), out.0.to_string_lossy().into_owned()));
            spec.mounts.push(jobcell_spec::MountSpec {
                src: out.0.clone(),
                dst: out.0.clone(),
                readonly: false,
            });
            spec.resources.cpus = Some(0.1);
            spec.resources.memory = Some(32 << 20);
            let body = json!({"spec": spec, "submit_key": format!("k{submitted}")});
            // A lost answer is retried with the same key: the job is made once.
            match d
                .client()
                .call::<SubmitResponse>("POST", "/v1/jobs", Some(&body))
            {
                Ok(_) => submitted += 1,
                Err(ClientError::NotRunning(_))
                | Err(ClientError::Io { .. })
                | Err(ClientError::BadResponse(_)) => {}
                Err(e) => panic!("submit: {e}"),
            }
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
        if Instant::now() >= kill_at && kills < 10 {
            d.kill9();
            kills += 1;
            d.launch();
            kill_at = Instant::now() + Duration::from_millis(30 + next() % 300);
        }
    }
    d.wait_idle(Duration::from_secs(240));
    eprintln!(
        "200 jobs with 10 daemon kills: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let h = d.history();
    assert_eq!(h.len(), n, "every submitted job was recorded once");
    for j in &h {
        assert_eq!(j.state, State::Completed, "{j:?}");
        assert_eq!(j.exit_code, Some(0), "{j:?}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let mut tokens: Vec<&str> = text.lines().collect();
    tokens.sort();
    let total = tokens.len();
    tokens.dedup();
    assert_eq!(tokens.len(), n, "every job ran");
    assert_eq!(total, n, "no job ran twice");
    assert_eq!(d.supervisor_pids().len(), n, "one supervisor per job");
}

struct TestUsers {
    a: (u32, u32),
    b: (u32, u32),
}

fn test_users() -> Option<TestUsers> {
    let get = |name: &str| -> Option<(u32, u32)> {
        let o = Command::new("id").arg("-u").arg(name).output().ok()?;
        if !o.status.success() {
            let ok = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    name,
                ])
                .status()
                .ok()?
                .success();
            if !ok {
                return None;
            }
        }
        let uid =
            String::from_utf8(Command::new("id").arg("-u").arg(name).output().ok()?.stdout).ok()?;
        let gid =
            String::from_utf8(Command::new("id").arg("-g").arg(name).output().ok()?.stdout).ok()?;
        Some((uid.trim().parse().ok()?, gid.trim().parse().ok()?))
    };
    Some(TestUsers {
        a: get("jobcell-test-a")?,
        b: get("jobcell-test-b")?,
    })
}

#[test]
fn users_may_act_only_on_their_own_jobs() {
    if !root_or_skip("users_may_act_only_on_their_own_jobs") {
        return;
    }
    let Some(u) = test_users() else {
        eprintln!("SKIPPED: users_may_act_only_on_their_own_jobs: cannot create test users");
        return;
    };
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let o = d.cli_as(
        Some(u.a),
        &[
            "submit",
            "--cpus",
            "0.1",
            "--memory",
            "32",
            "--",
            "/bin/sh",
            "-c",
            "echo secret-of-a; sleep 30",
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    let j = d.wait_state(1, State::Running, Duration::from_secs(20));
    assert_eq!(j.owner, u.a.0);
    // The job runs as its submitter.
    assert_eq!(j.user, "jobcell-test-a");
    // B sees A's job (like condor_q) ...
    let o = d.cli_as(Some(u.b), &["q"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("jobcell-test-a"));
    // ... but may not touch it.
    for args in [
        vec!["rm", "1"],
        vec!["hold", "1"],
        vec!["suspend", "1"],
        vec!["output", "1"],
    ] {
        let o = d.cli_as(Some(u.b), &args);
        assert!(!o.status.success(), "{args:?} as B succeeded");
        let e = err(&o);
        assert!(
            e.contains("job 1 belongs to jobcell-test-a") && e.contains("only its owner or root"),
            "{args:?}: {e}"
        );
        assert!(!String::from_utf8_lossy(&o.stdout).contains("secret"));
    }
    // B cannot run a job as A either.
    let o = d.cli_as(
        Some(u.b),
        &["submit", "--user", "jobcell-test-a", "--", "/bin/true"],
    );
    assert!(!o.status.success());
    let body = json!({"spec": {
        "argv": ["/bin/true"], "env": [], "user": {"Name": "jobcell-test-a"},
        "scratch_base": "/tmp", "keep_scratch": false, "private_dirs": [], "mounts": [],
        "grace": {"secs": 1, "nanos": 0}, "image": null, "dev": "minimal", "net": "host",
        "resources": {"cpus": 0.1, "cpu_limit": null, "cpuset": null, "memory": 1048576,
                      "memory_policy": "hard", "swap": null, "pids": 10, "io_weight": null}}});
    let o = Command::new("curl").arg("--version").output();
    let _ = o;
    let (code, msg) = http_as(
        &d.sock,
        Some(u.b),
        "POST",
        "/v1/jobs",
        &serde_json::to_vec(&body).unwrap(),
    );
    assert_eq!(code, 403, "{msg}");
    assert!(
        msg.contains("only root may submit jobs that run as another user"),
        "{msg}"
    );
    assert_eq!(d.job(1).state, State::Running, "still running");
    // A may read and remove its own job.
    let t = Instant::now();
    loop {
        let o = d.cli_as(Some(u.a), &["output", "1"]);
        if String::from_utf8_lossy(&o.stdout).contains("secret-of-a") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{}", err(&o));
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = d.cli_as(Some(u.a), &["rm", "1"]);
    assert!(o.status.success(), "{}", err(&o));
    let j = d.wait_state(1, State::Removed, Duration::from_secs(30));
    assert!(j.reason.unwrap().contains("removed by jobcell-test-a"));
    // rm --all-mine touches only mine.
    d.cli_as(Some(u.a), &["submit", "--hold", "--", "/bin/true"]);
    d.cli_as(Some(u.b), &["submit", "--hold", "--", "/bin/true"]);
    let o = d.cli_as(Some(u.b), &["rm", "--all-mine"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(d.job(2).state, State::Held);
    assert_eq!(d.job(3).state, State::Removed);
}

#[test]
fn the_node_is_never_overcommitted_and_oversized_jobs_are_refused() {
    if !root_or_skip("never_overcommitted") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "1G"]);
    // Oversized requests: refused at submit, with the numbers.
    let o = d.cli(&["submit", "--cpus", "3", "--", "/bin/true"]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("asks for 3 cpus but this node has 2"),
        "{}",
        err(&o)
    );
    let o = d.cli(&["submit", "--memory", "2G", "--", "/bin/true"]);
    assert!(
        err(&o).contains("asks for 2.0 GiB of memory but this node has 1.0 GiB"),
        "{}",
        err(&o)
    );
    // A mix that cannot all run at once.
    let mut ids = Vec::new();
    for i in 0..16 {
        let (cpus, mem) = if i % 2 == 0 {
            ("0.5", "300")
        } else {
            ("1", "100")
        };
        let o = d.cli(&[
            "submit",
            "-q",
            "--cpus",
            cpus,
            "--memory",
            mem,
            "--",
            "/bin/sleep",
            "0.3",
        ]);
        assert!(o.status.success(), "{}", err(&o));
        ids.push(
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .unwrap(),
        );
    }
    // While they run, the daemon's allocation never exceeds the node.
    let t = Instant::now();
    let mut max_running = 0;
    let mut max_cg = 0.0f64;
    loop {
        let s: NodeStatus = d.client().call("GET", "/v1/status", None).unwrap();
        assert!(s.cpus_allocated <= 2.0 + 1e-9, "{s:?}");
        assert!(s.memory_allocated <= 1 << 30, "{s:?}");
        let a = d.active();
        max_running = max_running.max(a.iter().filter(|j| j.state.active()).count());
        // And the kernel's view: the job cgroups that exist now carry at most the node.
        let (cg_cpus, cg_mem) = live_job_cgroups(&d, &ids);
        assert!(
            cg_cpus <= 2.0 + 1e-9 && cg_mem <= 1 << 30,
            "cgroups: {cg_cpus} cpus, {cg_mem} bytes"
        );
        max_cg = max_cg.max(cg_cpus);
        if a.is_empty() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(max_running >= 2, "jobs ran in parallel ({max_running})");
    assert!(max_cg > 0.0, "job cgroups were seen");
    // And from the records: at no instant did running jobs sum to more than the node.
    let h = d.history();
    assert_eq!(h.len(), 16);
    let mut edges: Vec<(f64, f64, i64)> = Vec::new();
    for j in &h {
        assert_eq!(j.state, State::Completed);
        edges.push((j.started_at.unwrap(), j.cpus, j.memory as i64));
        edges.push((j.ended_at.unwrap(), -j.cpus, -(j.memory as i64)));
    }
    edges.sort_by(|a, b| {
        a.0.partial_cmp(&b.0)
            .unwrap()
            .then(a.1.partial_cmp(&b.1).unwrap())
    });
    let (mut c, mut m) = (0.0, 0i64);
    for (_, dc, dm) in edges {
        c += dc;
        m += dm;
        assert!(
            c <= 2.0 + 1e-9 && m <= 1 << 30,
            "over-commit: {c} cpus, {m} bytes"
        );
    }
}

#[test]
fn malformed_and_oversized_requests_get_a_4xx_with_a_reason() {
    if !root_or_skip("malformed_requests") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "1G"]);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            "/v1/jobs",
            b"{not json".to_vec(),
            400,
            "invalid JSON",
        ),
        (
            "POST",
            "/v1/jobs",
            b"{}".to_vec(),
            400,
            "missing field `spec`",
        ),
        (
            "POST",
            "/v1/jobs",
            br#"{"spec": 1}"#.to_vec(),
            400,
            "invalid JSON",
        ),
        (
            "POST",
            "/v1/jobs",
            serde_json::to_vec(&json!({"spec": spec_json(&["/bin/true"]), "bogus": 1})).unwrap(),
            400,
            "unknown field `bogus`",
        ),
        (
            "POST",
            "/v1/jobs",
            serde_json::to_vec(&json!({"spec": spec_json(&[])})).unwrap(),
            400,
            "no command given",
        ),
        (
            "POST",
            "/v1/jobs",
            serde_json::to_vec(&json!({"spec": spec_json(&["/bin/true"]), "count": 0})).unwrap(),
            400,
            "count 0",
        ),
        ("POST", "/v1/jobs", vec![b' '; 2 << 20], 413, "larger than"),
        ("GET", "/v1/jobs/abc", vec![], 400, "'abc' is not a job id"),
        ("GET", "/v1/jobs/999", vec![], 404, "no job 999"),
        ("DELETE", "/v1/jobs/999", vec![], 404, "no job 999"),
        (
            "POST",
            "/v1/jobs/1/explode",
            vec![],
            404,
            "no action 'explode'",
        ),
        ("GET", "/v2/everything", vec![], 404, "no such endpoint"),
        ("PUT", "/v1/jobs", vec![], 405, "no such endpoint"),
        (
            "POST",
            "/v1/jobs/1/hold",
            b"[1,2]".to_vec(),
            400,
            "invalid JSON",
        ),
    ];
    for (m, p, body, code, want) in cases {
        let (c, msg) = http_as(&d.sock, None, m, p, &body);
        assert_eq!(c, code, "{m} {p}: {msg}");
        let e: serde_json::Value = serde_json::from_str(&msg).unwrap_or(json!({"error": msg}));
        let e = e["error"].as_str().unwrap_or_default().to_string();
        assert!(e.contains(want), "{m} {p}: '{e}' lacks '{want}'");
    }
    // Not HTTP at all: a 400 from the parser, and the daemon keeps serving.
    let resp = raw_request_as(&d.sock, None, b"\x00\x01garbage\r\n\r\n");
    let c = http_status(&resp);
    assert!(c == 400 || c == 0, "{c}");
    let (c, _) = http_as(&d.sock, None, "GET", "/v1/status", b"");
    assert_eq!(c, 200);
    // Negative sizes and bad resource values from the CLI are refused before sending.
    let o = d.cli(&["submit", "--cpus", "-1", "--", "/bin/true"]);
    assert!(!o.status.success());
}

#[test]
fn clear_errors_when_the_daemon_is_not_running_or_cannot_start() {
    let bin = BIN;
    // No daemon: a clear message, quickly.
    let t = Instant::now();
    let o = Command::new(bin)
        .args(["q", "--socket", "/nonexistent/jobcell/api.sock"])
        .output()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(o.status.code(), Some(125));
    let e = err(&o);
    assert!(
        e.contains("the jobcell daemon is not running")
            && e.contains("/nonexistent/jobcell/api.sock"),
        "{e}"
    );
    if !root_or_skip("daemon_cannot_start") {
        return;
    }
    let _g = serial();
    // State dir not writable (the daemon as nobody, the dir root's).
    let dir = TempDir::new_in("/tmp");
    let state = dir.0.join("state");
    std::fs::create_dir(&state).unwrap();
    let o = Command::new(bin)
        .args(["daemon", "--state-dir"])
        .arg(&state)
        .arg("--socket")
        .arg(dir.0.join("s.sock"))
        .arg("--scratch-base")
        .arg(dir.0.join("scratch"))
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    let e = err(&o);
    assert!(
        e.contains(&format!("state dir {}", state.display())) && e.contains("not writable"),
        "{e}"
    );
    // A second daemon on the same state dir.
    let d = Daemon::start(&["--cpus", "1", "--memory", "1G"]);
    let o = Command::new(bin)
        .arg("daemon")
        .arg("--state-dir")
        .arg(&d.state)
        .arg("--socket")
        .arg(d.dir.0.join("other.sock"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    let e = err(&o);
    let pid = d.pid();
    assert!(
        e.contains("is in use by another jobcell daemon") && e.contains(&format!("pid {pid}")),
        "{e}"
    );
    // The first one still answers.
    assert!(d
        .client()
        .call::<NodeStatus>("GET", "/v1/status", None)
        .is_ok());
}

#[test]
fn a_state_dir_from_a_newer_jobcell_is_refused() {
    if !root_or_skip("newer_state_dir") {
        return;
    }
    let _g = serial();
    let mut d = Daemon::start(&["--cpus", "1", "--memory", "1G"]);
    d.stop();
    let db = d.state.join("state.db");
    let o = Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA user_version = 42;")
        .output();
    if o.map(|o| !o.status.success()).unwrap_or(true) {
        // No sqlite3 tool: write the header field directly (user_version is at offset 60).
        let mut data = std::fs::read(&db).unwrap();
        data[60..64].copy_from_slice(&42u32.to_be_bytes());
        std::fs::write(&db, data).unwrap();
    }
    let o = d.cmd().output().unwrap();
    assert_eq!(o.status.code(), Some(125));
    let e = err(&o);
    assert!(
        e.contains("schema version 42, newer than this jobcell understands"),
        "{e}"
    );
}

#[test]
fn a_killed_supervisor_fails_its_job_and_leaves_nothing() {
    if !root_or_skip("killed_supervisor") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "1G"]);
    let ids = d.submit(json!({"spec": spec_json(&["/bin/sleep", "60"])}));
    d.wait_state(ids[0], State::Running, Duration::from_secs(20));
    let (pid, st) = d.supervisor_of(ids[0]);
    // Wait until the job itself runs (its cgroup has a process), then SIGKILL the supervisor.
    let name = format!("job-{pid}-{:x}", ids[0]);
    let freezer = own_v1_dir("freezer").map(|p| p.join("jobcell").join(&name));
    let t = Instant::now();
    if let Some(f) = &freezer {
        while std::fs::read_to_string(f.join("cgroup.procs"))
            .unwrap_or_default()
            .trim()
            .is_empty()
        {
            assert!(t.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert_eq!(starttime(pid), Some(st));
    // SAFETY: kill takes integers only; the pid was just checked (start time) to be the job's
    // supervisor.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let j = d.wait_state(ids[0], State::Failed, Duration::from_secs(20));
    let r = j.reason.unwrap();
    assert!(
        r.contains(&format!("supervisor (pid {pid})")) && r.contains("killed"),
        "{r}"
    );
    // The job's cgroup and scratch are gone.
    if let Some(f) = &freezer {
        wait_gone(f, Duration::from_secs(10));
    }
    let t = Instant::now();
    while std::fs::read_dir(&d.scratch).unwrap().count() > 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "scratch left");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn own_v1_dir(ctrl: &str) -> Option<PathBuf> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cg.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let _ = it.next()?;
        let ctrls = it.next()?;
        let path = it.next()?;
        ctrls.split(',').any(|c| c == ctrl).then(|| {
            Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join(path.trim_start_matches('/'))
        })
    })
}

#[test]
fn suspend_continue_hold_release_and_priority() {
    if !root_or_skip("suspend_continue_hold_release") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "1", "--memory", "1G"]);
    let o = d.cli(&[
        "submit",
        "-q",
        "--cpus",
        "1",
        "--memory",
        "32",
        "--",
        "/bin/sleep",
        "30",
    ]);
    let id: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    d.wait_state(id, State::Running, Duration::from_secs(20));
    let (pid, _) = d.supervisor_of(id);
    let state_file =
        own_v1_dir("freezer").map(|p| p.join(format!("jobcell/job-{pid}-{id:x}/freezer.state")));
    // Wait for the launcher to have made the cgroup.
    if let Some(f) = &state_file {
        let t = Instant::now();
        while !f.exists() {
            assert!(t.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let o = d.cli(&["suspend", &id.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(d.job(id).state, State::Suspended);
    if let Some(f) = &state_file {
        assert_eq!(std::fs::read_to_string(f).unwrap().trim(), "FROZEN");
    }
    let o = d.cli(&["suspend", &id.to_string()]);
    assert!(err(&o).contains("not running"), "{}", err(&o));
    let o = d.cli(&["continue", &id.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    if let Some(f) = &state_file {
        assert_eq!(std::fs::read_to_string(f).unwrap().trim(), "THAWED");
    }
    // The node is full: queue a low and a high priority job, and a held one.
    let low = d.submit(json!({"spec": spec_json(&["/bin/true"]), "priority": -5}))[0];
    let high = d.submit(json!({"spec": spec_json(&["/bin/true"]), "priority": 10}))[0];
    let held =
        d.submit(json!({"spec": spec_json(&["/bin/true"]), "hold": true, "priority": 100}))[0];
    let o = d.cli(&["hold", &low.to_string(), "--reason", "not yet"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(d.job(low).hold_reason.as_deref(), Some("not yet"));
    let o = d.cli(&["release", &low.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    // Evict the running job by holding it: it stops and waits, held.
    let o = d.cli(&["hold", &id.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    d.wait_state(id, State::Held, Duration::from_secs(30));
    d.wait_state(low, State::Completed, Duration::from_secs(30));
    let (h, l) = (d.job(high), d.job(low));
    assert!(
        h.started_at.unwrap() <= l.started_at.unwrap(),
        "high priority first: {h:?} {l:?}"
    );
    assert_eq!(d.job(held).state, State::Held, "held jobs are skipped");
    let o = d.cli(&["release", &held.to_string()]);
    assert!(o.status.success());
    d.wait_state(held, State::Completed, Duration::from_secs(30));
    let o = d.cli(&["rm", &id.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(d.job(id).state, State::Removed);
}

#[test]
fn readiness_is_notified_to_systemd_once_the_socket_is_up() {
    if !root_or_skip("readiness_is_notified") {
        return;
    }
    let _g = serial();
    let dir = TempDir::new_in("/tmp");
    let scratch = TempDir::new_in("/dev/shm");
    let notify = dir.0.join("notify.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let sock = dir.0.join("api.sock");
    let mut child = Command::new(BIN)
        .arg("daemon")
        .arg("--state-dir")
        .arg(dir.0.join("state"))
        .arg("--socket")
        .arg(&sock)
        .arg("--scratch-base")
        .arg(&scratch.0)
        .args(["--cpus", "1", "--memory", "1G"])
        .env("NOTIFY_SOCKET", &notify)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = rx.recv(&mut buf);
    // When READY=1 arrives the API must already answer.
    let status = Client::new(&sock).call::<NodeStatus>("GET", "/v1/status", None);
    // SAFETY: kill takes integers only; the pid is this test's own unreaped child, so it names no
    // other process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    remove_supervisors_cgroup();
    let msg = String::from_utf8_lossy(&buf[..n.expect("no notification")]).into_owned();
    assert!(
        msg.contains("READY=1") && msg.contains(&format!("MAINPID={}", child.id())),
        "{msg}"
    );
    assert!(status.is_ok(), "{status:?}");
    assert!(!sock.exists(), "the socket is removed at a clean stop");
}

#[test]
fn an_acknowledged_remove_survives_a_daemon_kill() {
    if !root_or_skip("acknowledged_remove_survives") {
        return;
    }
    let _g = serial();
    let mut d = Daemon::start(&["--cpus", "1", "--memory", "1G"]);
    // The job ignores SIGTERM: it ends only when the launcher kills it after the grace time,
    // long after the daemon below is gone.
    let o = d.cli(&[
        "submit",
        "-q",
        "--cpus",
        "0.1",
        "--memory",
        "32",
        "--grace",
        "2",
        "--",
        "/bin/sh",
        "-c",
        "trap '' TERM; sleep 30",
    ]);
    let id: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    d.wait_state(id, State::Running, Duration::from_secs(20));
    d.supervisor_of(id);
    std::thread::sleep(Duration::from_millis(300));
    let o = d.cli(&["rm", &id.to_string()]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("stopping"),
        "{}",
        err(&o)
    );
    d.kill9();
    d.launch();
    let j = d.wait_state(id, State::Removed, Duration::from_secs(30));
    assert_eq!(j.signal, Some(9), "{j:?}");
    assert!(j.reason.unwrap().contains("removed by root"));
}

/// What a power loss can do to a job dir that the daemon had not yet folded into its commit:
/// supervisors rename their result into place without an fsync (the daemon's SQLite commit is
/// the durable record), so after a crash of the machine a result file can be empty, cut off or
/// zeros (the name reached the disk, the data did not), and a claim can be gone. The test
/// makes those files by hand while the daemon is down, and makes the daemon see another boot
/// (the boot id it recorded is changed). Every such job is recorded once, failed with the
/// reason, never run again and never left running; an intact result is recorded as usual.
#[test]
fn results_lost_to_a_power_loss_fail_their_jobs_once_with_the_reason() {
    if !root_or_skip("results_lost_to_a_power_loss") {
        return;
    }
    let _g = serial();
    let mut d = Daemon::start(&["--cpus", "2", "--memory", "1G"]);
    // Each job waits for `go`, then appends its token to a shared log: a job run twice would
    // show up twice.
    let out = TempDir::new_in("/dev/shm");
    std::fs::set_permissions(&out.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    // Every job appends to one log; each job runs as a uid of its own, so the log is made
    // writable by all first (the first job's umask would keep it to that job's uid).
    std::fs::write(out.0.join("log"), "").unwrap();
    std::fs::set_permissions(
        out.0.join("log"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let names = ["empty", "truncated", "zeros", "lost", "intact"];
    let mut ids = Vec::new();
    for name in names {
        let mut spec = jobcell_spec::JobSpec::new(vec![
            "/bin/sh".into(),
            "-c".into(),
            "while [ ! -e $OUT/go ]; do sleep 0.02; done; echo $TOKEN >> $OUT/log".into(),
        ]);
        spec.env.push(("TOKEN".into(), name.into()));
        spec.env
            .push(("OUT".into(), out.0.to_string_lossy().into_owned()));
        spec.mounts.push(jobcell_spec::MountSpec {
            src: out.0.clone(),
            dst: out.0.clone(),
            readonly: false,
        });
        spec.resources.cpus = Some(0.1);
        spec.resources.memory = Some(32 << 20);
        ids.extend(d.submit(json!({ "spec": spec })));
    }
    let sups: Vec<(i32, u64)> = ids
        .iter()
        .map(|&id| {
            d.wait_state(id, State::Running, Duration::from_secs(20));
            d.supervisor_of(id)
        })
        .collect();
    d.kill9();
    // The jobs end while the daemon is down; their supervisors write their results and exit.
    std::fs::write(out.0.join("go"), "").unwrap();
    let t = Instant::now();
    for (&id, &(pid, st)) in ids.iter().zip(&sups) {
        let res = d.state.join(format!("jobs/{id}/result-1.json"));
        while !res.exists() || starttime(pid) == Some(st) {
            assert!(t.elapsed() < Duration::from_secs(30), "job {id}: no result");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // What the disk may hold after a power loss.
    let state = d.state.clone();
    let file = |i: usize, f: &str| state.join(format!("jobs/{}/{f}", ids[i]));
    let whole = std::fs::read(file(1, "result-1.json")).unwrap();
    std::fs::write(file(0, "result-1.json"), b"").unwrap();
    std::fs::write(file(1, "result-1.json"), &whole[..whole.len() / 2]).unwrap();
    let n = std::fs::metadata(file(2, "result-1.json")).unwrap().len() as usize;
    std::fs::write(file(2, "result-1.json"), vec![0u8; n]).unwrap();
    std::fs::remove_file(file(3, "result-1.json")).unwrap();
    // A "lost" supervisor's scratch dir, as a machine restart leaves it on a disk-backed
    // scratch base: the daemon removes it.
    let left = d.scratch.join(format!("job-{}-{:x}", sups[3].0, ids[3]));
    std::fs::create_dir_all(left.join("tmp")).unwrap();
    std::fs::write(left.join("tmp/data"), "x").unwrap();
    std::fs::remove_file(file(3, "claim-1")).unwrap();
    // The machine "restarted": the daemon's recorded boot differs from this one.
    {
        let db = jobcell_node::store::Store::open(&d.state.join("state.db")).unwrap();
        let changed = db
            .conn
            .execute(
                "UPDATE node SET value = 'a-boot-before-the-power-loss' WHERE key = 'boot_id'",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1, "the daemon recorded its boot");
    }
    d.launch();
    d.wait_idle(Duration::from_secs(30));
    let want = [
        Some("result-1.json is empty"),
        Some("result-1.json is not a complete result"),
        Some(&*format!("result-1.json holds {n} zero bytes")),
        None,
        None,
    ];
    for (i, &id) in ids.iter().enumerate() {
        let j = d.job(id);
        assert_eq!(j.attempt, 1, "{}: run once: {j:?}", names[i]);
        assert!(
            !file(i, "claim-2").exists(),
            "{}: no second attempt",
            names[i]
        );
        let reason = j.reason.clone().unwrap_or_default();
        match i {
            0..=2 => {
                assert_eq!(j.state, State::Failed, "{}: {j:?}", names[i]);
                assert!(
                    reason.contains("attempt 1 ended but its result was lost")
                        && reason.contains(want[i].unwrap())
                        && reason.contains("not run again"),
                    "{}: {reason}",
                    names[i]
                );
            }
            3 => {
                assert_eq!(j.state, State::Failed, "{j:?}");
                assert!(
                    reason.contains("the machine went down") && reason.contains("not run again"),
                    "{reason}"
                );
            }
            _ => {
                assert_eq!(j.state, State::Completed, "{j:?}");
                assert_eq!(j.exit_code, Some(0), "{j:?}");
            }
        }
    }
    wait_gone(&left, Duration::from_secs(10));
    let mut log: Vec<String> = std::fs::read_to_string(out.0.join("log"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    log.sort();
    let mut all: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    all.sort();
    assert_eq!(log, all, "every job ran exactly once");
    // And the node goes on: a new job runs.
    let id = d.submit(true_job(json!({})))[0];
    let j = d.wait_state(id, State::Completed, Duration::from_secs(20));
    assert_eq!(j.exit_code, Some(0));
}

/// A supervisor that cannot write its claim (here: the job dir is immutable; in life a full or
/// read-only state dir) exits before starting the job: the job is failed saying it never ran,
/// not that its supervisor was killed.
#[test]
fn a_supervisor_that_cannot_claim_fails_its_job_as_never_run() {
    if !root_or_skip("supervisor_that_cannot_claim") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "1", "--memory", "1G"]);
    // The first job of a new state dir is job 1.
    let dir = d.state.join("jobs/1");
    std::fs::create_dir_all(&dir).unwrap();
    let chattr = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i") {
        eprintln!(
            "SKIPPED: a_supervisor_that_cannot_claim: chattr +i failed on {}",
            dir.display()
        );
        return;
    }
    let ids = d.submit(true_job(json!({})));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_eq!(ids, vec![1]);
        let j = d.wait_state(1, State::Failed, Duration::from_secs(20));
        let reason = j.reason.unwrap_or_default();
        assert!(
            reason.contains("ended before claiming attempt 1, so the job never ran"),
            "{reason}"
        );
        assert_eq!(j.attempt, 1);
    }));
    assert!(chattr("-i"), "chattr -i {}", dir.display());
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn a_job_can_run_in_a_configured_image() {
    if !root_or_skip("job_in_image") {
        return;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED: job_in_image: no static /bin/busybox to build a tiny image from");
        return;
    }
    let _g = serial();
    let dir = TempDir::new_in("/tmp");
    // A tiny image tree: a static busybox and a marker file the host does not have.
    let img = dir.0.join("tiny");
    std::fs::create_dir_all(img.join("bin")).unwrap();
    std::fs::create_dir_all(img.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", img.join("bin/busybox")).unwrap();
    std::fs::write(img.join("etc/jobcell-marker"), "in-the-image\n").unwrap();
    let cfg = dir.0.join("config.toml");
    std::fs::write(&cfg, format!("[images]\ntiny = \"{}\"\n", img.display())).unwrap();
    let cfg_s = cfg.to_string_lossy().into_owned();
    let d = Daemon::start_in(dir, &["--cpus", "1", "--memory", "1G", "--config", &cfg_s]);
    let o = d.cli(&[
        "submit",
        "-q",
        "--image",
        "tiny",
        "--memory",
        "64",
        "--",
        "/bin/busybox",
        "cat",
        "/etc/jobcell-marker",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let id: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let j = d.wait_state(id, State::Completed, Duration::from_secs(30));
    assert_eq!(j.exit_code, Some(0), "{j:?}");
    assert_eq!(j.report.unwrap()["isolation"]["image"], "tiny");
    let o = d.cli(&["output", &id.to_string()]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "in-the-image\n");
    // An unknown image is refused at submit.
    let o = d.cli(&["submit", "--image", "nosuch", "--", "/bin/true"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("image 'nosuch'"), "{}", err(&o));
}

/// Sum of cpu.shares/1024 and memory.limit_in_bytes over the job cgroups of `ids` that exist
/// right now (v1; (0, 0) elsewhere).
fn live_job_cgroups(d: &Daemon, ids: &[u64]) -> (f64, u64) {
    let (Some(cpu), Some(mem)) = (own_v1_dir("cpu"), own_v1_dir("memory")) else {
        return (0.0, 0);
    };
    let (mut c, mut m) = (0.0, 0);
    for id in ids {
        let Ok(data) = std::fs::read(d.state.join(format!("jobs/{id}/claim-1"))) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
        let Some(pid) = v["supervisor"]["pid"].as_i64() else {
            continue;
        };
        let name = format!("jobcell/job-{pid}-{id:x}");
        let read =
            |p: PathBuf| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
        // A cgroup carries a job only once a process is in it: the launcher creates the
        // directory, writes the limits, then moves the job in, so an empty one seen between
        // mkdir and the limit writes still shows the kernel defaults (unlimited) and is not a job.
        let populated = std::fs::read_to_string(mem.join(&name).join("cgroup.procs"))
            .map(|p| !p.trim().is_empty())
            .unwrap_or(false);
        if !populated {
            continue;
        }
        if let (Some(sh), Some(lim)) = (
            read(cpu.join(&name).join("cpu.shares")),
            read(mem.join(&name).join("memory.limit_in_bytes")),
        ) {
            c += sh as f64 / 1024.0;
            m += lim;
        }
    }
    (c, m)
}
