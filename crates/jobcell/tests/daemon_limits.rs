//! `[limits]`: what a user other than root may ask of the daemon. Each test submits as a real
//! second user (a system account made for the tests) through the CLI, a submit file or the
//! raw API, and checks that the request is refused with one line naming the key, or bounded by
//! the node's default in the job's real cgroup. Needs root; without it each test says SKIPPED.

mod daemon_harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use daemon_harness::*;
use jobcell_node::types::State;
use serde_json::{json, Value};

const CONFIG: &str = "[limits]\ndefault_pids = 123\nmax_disk = \"1G\"\n";

/// A system account for the tests (made once, kept: uids are cheap and tests may run in
/// parallel with other suites that use it).
fn user_a() -> Option<(u32, u32)> {
    test_user("jobcell-test-a")
}

/// POST /v1/jobs with `body` as `user`, on a connection of its own; the status and the body.
fn post_job_as(d: &Daemon, user: (u32, u32), body: &Value) -> (u16, String) {
    http_as(
        &d.sock,
        Some(user),
        "POST",
        "/v1/jobs",
        &serde_json::to_vec(body).unwrap(),
    )
}

/// A job spec as the API takes it, running as `uid`, with `edit` applied.
fn spec_json(uid: u32, argv: &[&str], edit: impl FnOnce(&mut Value)) -> Value {
    let mut s = jobcell_spec::JobSpec::new(argv.iter().map(|a| a.to_string()).collect());
    s.user = jobcell_spec::UserSpec::Uid(uid);
    s.resources.cpus = Some(0.1);
    s.resources.memory = Some(64 << 20);
    let mut v = serde_json::to_value(&s).unwrap();
    edit(&mut v);
    json!({ "spec": v })
}

/// The job cgroup's file `name` of controller `ctrl` (v1) or of the unified tree (v2).
fn job_cgroup_file(d: &Daemon, id: u64, ctrl: &str, name: &str) -> Option<PathBuf> {
    let (pid, _) = d.supervisor_of(id);
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let job = format!("jobcell/job-{pid}-{id:x}");
    for l in cg.lines() {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        let dir = if ctrls.split(',').any(|c| c == ctrl) {
            Path::new("/sys/fs/cgroup").join(ctrl)
        } else if ctrls.is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            continue;
        };
        return Some(dir.join(path.trim_start_matches('/')).join(job).join(name));
    }
    None
}

fn one_line(e: &str) -> bool {
    e.trim().lines().count() == 1
}

#[test]
fn a_user_cannot_lift_the_nodes_limits() {
    if !root_or_skip("a_user_cannot_lift_the_nodes_limits") {
        return;
    }
    let Some(user) = user_a() else {
        eprintln!("SKIPPED: a_user_cannot_lift_the_nodes_limits: cannot create a test user");
        return;
    };
    let _g = serial();
    let d = Daemon::start_with_config(&["--cpus", "2", "--memory", "1G"], Some(CONFIG));
    let mut escaped = Vec::new();
    let cli = [
        (vec!["--memory-policy", "none"], "--memory-policy none is for root only"),
        (
            vec!["--memory-policy", "soft"],
            "--memory-policy soft is not open to users on this node (limits.user_memory_policies = [\"hard\"])",
        ),
        (
            vec!["--pids", "100000"],
            "--pids 100000 exceeds the node's limit (limits.max_pids = 32768)",
        ),
        (
            vec!["--disk", "2G"],
            "--disk (request_disk) 2.0 GiB exceeds the node's limit (limits.max_disk = \"1G\")",
        ),
        (
            vec!["--dev", "host"],
            "--dev host is not open to users on this node (limits.user_dev_host = false)",
        ),
        (
            vec!["--io-weight", "10000"],
            "--io-weight 10000 exceeds the node's limit (limits.max_io_weight = 100)",
        ),
        (
            vec!["--grace", "86400"],
            "--grace 86400 exceeds the node's limit (limits.max_grace_secs = 60)",
        ),
        (
            vec!["--memory", "64M", "--swap", "1G"],
            "--swap 1.0 GiB exceeds the node's limit (limits.max_swap = \"0\")",
        ),
    ];
    for (opts, want) in cli {
        let mut args = vec!["submit", "--hold"];
        args.extend(&opts);
        args.extend(["--", "/bin/true"]);
        let o = d.cli_as(Some(user), &args);
        let e = err(&o);
        eprintln!("{opts:?}: exit {:?}, stderr: {}", o.status.code(), e.trim());
        if o.status.success() || !e.contains(want) || !one_line(&e) {
            escaped.push(format!("{opts:?}"));
        }
    }
    // What the CLI has no option for, through the raw API.
    let raw = [
        (
            spec_json(user.0, &["/bin/true"], |v| v["keep_scratch"] = json!(true)),
            "--keep-scratch is not open to users on this node (limits.user_keep_scratch = false)",
        ),
        (
            spec_json(user.0, &["/bin/true"], |v| {
                v["resources"]["memory_policy"] = json!("none")
            }),
            "--memory-policy none is for root only",
        ),
    ];
    for (body, want) in raw {
        let mut body = body;
        body["hold"] = json!(true);
        let (code, msg) = post_job_as(&d, user, &body);
        eprintln!("raw {want:?}: HTTP {code}: {}", msg.trim());
        if code != 403 || !msg.contains(want) {
            escaped.push(want.to_string());
        }
    }
    assert!(escaped.is_empty(), "not refused: {escaped:?}");
    assert!(d.all_jobs().is_empty(), "a refused request queued a job");
}

#[test]
fn a_users_job_without_a_pids_limit_gets_the_nodes_default() {
    if !root_or_skip("a_users_job_without_a_pids_limit_gets_the_nodes_default") {
        return;
    }
    let Some(user) = user_a() else {
        eprintln!("SKIPPED: pids default: cannot create a test user");
        return;
    };
    let _g = serial();
    let d = Daemon::start_with_config(&["--cpus", "2", "--memory", "1G"], Some(CONFIG));
    // `pids: null` through the API, and the CLI without --pids.
    let body = spec_json(user.0, &["/bin/sleep", "30"], |v| {
        v["resources"]["pids"] = Value::Null
    });
    let (code, msg) = post_job_as(&d, user, &body);
    assert_eq!(code, 201, "{msg}");
    let o = d.cli_as(
        Some(user),
        &[
            "submit",
            "--cpus",
            "0.1",
            "--memory",
            "64",
            "--",
            "/bin/sleep",
            "30",
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    for id in [1, 2] {
        d.wait_state(id, State::Running, Duration::from_secs(20));
        let Some(f) = job_cgroup_file(&d, id, "pids", "pids.max") else {
            eprintln!("SKIPPED: no pids controller for the job's cgroup");
            return;
        };
        // The limit is written before the job is moved in; wait for the job to be there.
        let t = Instant::now();
        let procs = f.with_file_name("cgroup.procs");
        while std::fs::read_to_string(&procs).map_or(true, |p| p.trim().is_empty()) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "job {id} never joined"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let max = std::fs::read_to_string(&f).unwrap();
        eprintln!("job {id}: {} = {}", f.display(), max.trim());
        assert_eq!(max.trim(), "123", "job {id}: pids.max");
        assert!(d.cli(&["rm", &id.to_string()]).status.success());
    }
    d.wait_idle(Duration::from_secs(30));
}

/// `memory_high` reaches a user's job cgroup the same way from the JSON API (`memory_high`), the
/// CLI (`--memory-high`) and a submit file (`jobcell_memory_high`): v2 `memory.high`, v1
/// `memory.soft_limit_in_bytes` (v1 has no throttle).
#[test]
fn memory_high_reaches_the_job_cgroup_from_the_api_the_cli_and_a_submit_file() {
    if !root_or_skip("memory_high_reaches_the_job_cgroup_from_the_api_the_cli_and_a_submit_file") {
        return;
    }
    let Some(user) = user_a() else {
        eprintln!("SKIPPED: memory_high: cannot create a test user");
        return;
    };
    let _g = serial();
    let d = Daemon::start_with_config(&["--cpus", "2", "--memory", "1G"], Some(CONFIG));
    const HIGH: u64 = 32 << 20;
    let body = spec_json(user.0, &["/bin/sleep", "30"], |v| {
        v["resources"]["memory_high"] = json!(HIGH)
    });
    let (code, msg) = post_job_as(&d, user, &body);
    assert_eq!(code, 201, "{msg}");
    let o = d.cli_as(
        Some(user),
        &[
            "submit",
            "--cpus",
            "0.1",
            "--memory",
            "64",
            "--memory-high",
            "32M",
            "--",
            "/bin/sleep",
            "30",
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    let work = TempDir::new_in("/tmp");
    let o = d.cli_in(
        work.path(),
        Some(user),
        &[],
        &["submit", "-"],
        Some("executable = /bin/sleep\narguments = 30\nrequest_cpus = 0.1\nrequest_memory = 64\njobcell_memory_high = 32\nqueue\n"),
    );
    assert!(o.status.success(), "{}", err(&o));
    let ids: Vec<u64> = d.all_jobs().iter().map(|j| j.id).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let file = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "memory.high"
    } else {
        "memory.soft_limit_in_bytes"
    };
    for id in ids {
        d.wait_state(id, State::Running, Duration::from_secs(20));
        let f = job_cgroup_file(&d, id, "memory", file).expect("a memory cgroup");
        let t = Instant::now();
        let procs = f.with_file_name("cgroup.procs");
        while std::fs::read_to_string(&procs).map_or(true, |p| p.trim().is_empty()) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "job {id} never joined"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let high = std::fs::read_to_string(&f).unwrap();
        eprintln!("job {id}: {} = {}", f.display(), high.trim());
        assert_eq!(high.trim(), HIGH.to_string(), "job {id}: {file}");
        assert!(d.cli(&["rm", &id.to_string()]).status.success());
    }
    let ad = d.ad(3);
    assert_eq!(
        ad.get("JobcellMemoryHigh").map(String::as_str),
        Some("33554432"),
        "{ad:?}"
    );
    d.wait_idle(Duration::from_secs(30));
}

/// On v1 `--memory-high` and a soft `--memory` are the same file (`memory.soft_limit_in_bytes`,
/// the reclaim target under host memory pressure): a user with the soft policy open must not
/// raise it past `--memory`, the size the node reserved, by asking for a huge memory_high.
#[test]
fn memory_high_cannot_lift_a_users_soft_memory_limit() {
    if !root_or_skip("memory_high_cannot_lift_a_users_soft_memory_limit") {
        return;
    }
    let Some(user) = user_a() else {
        eprintln!("SKIPPED: memory_high soft: cannot create a test user");
        return;
    };
    let _g = serial();
    let config = format!("{CONFIG}user_memory_policies = [\"hard\", \"soft\"]\n");
    let d = Daemon::start_with_config(&["--cpus", "2", "--memory", "1G"], Some(&config));
    let o = d.cli_as(
        Some(user),
        &[
            "submit",
            "--cpus",
            "0.1",
            "--memory",
            "64",
            "--memory-policy",
            "soft",
            "--memory-high",
            "100G",
            "--",
            "/bin/sleep",
            "30",
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    d.wait_state(1, State::Running, Duration::from_secs(20));
    let file = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "memory.low"
    } else {
        "memory.soft_limit_in_bytes"
    };
    let f = job_cgroup_file(&d, 1, "memory", file).expect("a memory cgroup");
    let t = Instant::now();
    let procs = f.with_file_name("cgroup.procs");
    while std::fs::read_to_string(&procs).map_or(true, |p| p.trim().is_empty()) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the job never joined"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let soft = std::fs::read_to_string(&f).unwrap();
    eprintln!("{} = {}", f.display(), soft.trim());
    assert_eq!(soft.trim(), (64u64 << 20).to_string(), "{file}");
    assert!(d.cli(&["rm", "1"]).status.success());
    d.wait_idle(Duration::from_secs(30));
}

#[test]
fn a_users_job_never_writes_the_hosts_shared_tmp() {
    if !root_or_skip("a_users_job_never_writes_the_hosts_shared_tmp") {
        return;
    }
    let Some(user) = user_a() else {
        eprintln!("SKIPPED: shared tmp: cannot create a test user");
        return;
    };
    let _g = serial();
    let d = Daemon::start_with_config(&["--cpus", "2", "--memory", "1G"], Some(CONFIG));
    let marker = format!("jobcell-limits-marker-{}", std::process::id());
    let script = format!("echo x > /tmp/{marker}; echo x > /var/tmp/{marker}; true");
    // Only /dev/shm private (the harness's scratch base is under it).
    let body = spec_json(user.0, &["/bin/sh", "-c", &script], |v| {
        v["private_dirs"] = json!(["/dev/shm"])
    });
    let (code, msg) = post_job_as(&d, user, &body);
    assert_eq!(code, 201, "{msg}");
    let j = d.wait_state(1, State::Completed, Duration::from_secs(20));
    assert_eq!(j.exit_code, Some(0), "{j:?}");
    let mut left = Vec::new();
    for dir in ["/tmp", "/var/tmp"] {
        let p = Path::new(dir).join(&marker);
        if p.exists() {
            let _ = std::fs::remove_file(&p);
            left.push(p);
        }
    }
    assert!(left.is_empty(), "the job wrote the host's {left:?}");
}

#[test]
fn submit_files_of_users_are_bounded_too() {
    if !root_or_skip("submit_files_of_users_are_bounded_too") {
        return;
    }
    let Some(user) = user_a() else {
        eprintln!("SKIPPED: submit files: cannot create a test user");
        return;
    };
    let _g = serial();
    let d = Daemon::start_with_config(&["--cpus", "2", "--memory", "1G"], Some(CONFIG));
    let work = TempDir::new_in("/tmp");
    let o = d.cli_in(
        work.path(),
        Some(user),
        &[],
        &["submit", "-"],
        Some("executable = /bin/true\nrequest_disk = 2G\nhold = true\nqueue 2\n"),
    );
    let e = err(&o);
    eprintln!("exit {:?}, stderr: {}", o.status.code(), e.trim());
    assert!(!o.status.success(), "a 2G request_disk was queued");
    assert!(
        e.contains("job 1.0:") && e.contains("exceeds the node's limit (limits.max_disk = \"1G\")"),
        "{e}"
    );
    assert!(one_line(&e), "{e}");
    assert!(d.all_jobs().is_empty(), "half a cluster was queued");
}

#[test]
fn roots_requests_are_not_bounded() {
    if !root_or_skip("roots_requests_are_not_bounded") {
        return;
    }
    let _g = serial();
    let d = Daemon::start_with_config(&["--cpus", "2", "--memory", "1G"], Some(CONFIG));
    let o = d.cli(&[
        "submit",
        "--hold",
        "--memory-policy",
        "none",
        "--pids",
        "100000",
        "--dev",
        "host",
        "--disk",
        "2G",
        "--io-weight",
        "10000",
        "--",
        "/bin/true",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(d.job(1).state, State::Held);
}

/// A bind source is reached as the job's user: a user cannot bind a directory that sits behind
/// a dir it may not enter (root opening it would hand the job what its user cannot reach).
#[test]
fn a_users_bind_source_is_opened_as_that_user() {
    if !root_or_skip("a_users_bind_source_is_opened_as_that_user") {
        return;
    }
    let Some(user) = user_a() else {
        eprintln!("SKIPPED: bind sources: cannot create a test user");
        return;
    };
    let _g = serial();
    use std::os::unix::fs::PermissionsExt;
    let host = TempDir::itest();
    let locked = host.path().join("locked");
    let public = locked.join("pub");
    std::fs::create_dir_all(&public).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(public.join("f"), "the-secret\n").unwrap();
    std::fs::set_permissions(public.join("f"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = Daemon::start_with_config(&["--cpus", "2", "--memory", "1G"], Some(CONFIG));
    let bind = format!("{}:/tmp/pub", public.display());
    let o = d.cli_as(
        Some(user),
        &[
            "submit",
            "--cpus",
            "0.1",
            "--memory",
            "64",
            "--ro-bind",
            &bind,
            "--",
            "/bin/cat",
            "/tmp/pub/f",
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    let j = d.wait_for(1, Duration::from_secs(20), |j| {
        j.state != State::Queued && j.state != State::Running
    });
    let out = d.cli(&["output", "1"]);
    let seen = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "job 1: {:?} exit {:?}, reason {:?}, hold {:?}, stdout {:?}",
        j.state,
        j.exit_code,
        j.reason,
        j.hold_reason,
        seen.trim()
    );
    assert!(!seen.contains("the-secret"), "the job read {seen:?}");
    assert_eq!(j.state, State::Held, "{j:?}");
    let why = j.hold_reason.unwrap_or_default();
    assert!(
        why.contains(&public.display().to_string()) && why.contains("Permission denied"),
        "{why}"
    );
    assert!(!why.contains('\n'), "{why}");
    // Once the user may enter the dir, the same bind works (dir and file sources alike).
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file_bind = format!("{}:/tmp/f", public.join("f").display());
    let o = d.cli_as(
        Some(user),
        &[
            "submit",
            "--cpus",
            "0.1",
            "--memory",
            "64",
            "--ro-bind",
            &bind,
            "--ro-bind",
            &file_bind,
            "--",
            "/bin/sh",
            "-c",
            "cat /tmp/pub/f /tmp/f",
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    let j = d.wait_state(2, State::Completed, Duration::from_secs(20));
    assert_eq!(j.exit_code, Some(0), "{j:?}");
    let out = d.cli(&["output", "2"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "the-secret\nthe-secret\n"
    );
}

/// A `[limits]` the daemon cannot honour stops it at start with one line naming the key.
#[test]
fn a_bad_limits_config_stops_the_daemon_with_one_line() {
    let dir = TempDir::new_in("/tmp");
    for (config, key) in [
        (
            "[limits]\nuser_memory_policies = [\"hard\", \"none\"]\n",
            "[limits] user_memory_policies = \"none\": never open to users",
        ),
        (
            "[limits]\nmax_disk = \"plenty\"\n",
            "[limits] max_disk = \"plenty\"",
        ),
        (
            "[limits]\ndefault_pids = 500\nmax_pids = 100\n",
            "[limits] default_pids = 500: must be between 1 and max_pids (100)",
        ),
    ] {
        let p = dir.path().join("config.toml");
        std::fs::write(&p, config).unwrap();
        let mut child = Command::new(BIN)
            .arg("daemon")
            .arg("--config")
            .arg(&p)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--socket")
            .arg(dir.path().join("api.sock"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A daemon that accepted the config would serve forever: stop it and fail.
        let t = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{config}: the daemon started");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = child.wait_with_output().unwrap();
        let e = err(&o);
        assert_eq!(o.status.code(), Some(125), "{config}: {e}");
        assert!(e.contains(key) && one_line(&e), "{config}: {e}");
    }
}

/// Two users on a one-CPU node: A queues three jobs at priority 100, then B one at priority 0.
/// A's priority orders A's jobs only; between A and B the node takes turns, so B's job starts
/// after A's first, not after all three.
#[test]
fn a_users_priority_orders_only_their_own_jobs() {
    if !root_or_skip("a_users_priority_orders_only_their_own_jobs") {
        return;
    }
    let Some((a, b)) = test_users_or_skip("a_users_priority_orders_only_their_own_jobs") else {
        return;
    };
    let _g = serial();
    let d = Daemon::start_with_config(&["--cpus", "1", "--memory", "1G"], Some(CONFIG));
    let ctl = TempDir::itest();
    let go = ctl.path().join("go");
    let wait_go = format!("while [ ! -e {} ]; do sleep 0.02; done", go.display());
    let blocker = ids(&d.cli(&[
        "submit", "-q", "--cpus", "1", "--", "/bin/sh", "-c", &wait_go,
    ]))[0];
    d.wait_state(blocker, State::Running, Duration::from_secs(20));
    let quick = ["--cpus", "1", "--memory", "64M", "--", "/bin/sleep", "0.2"];
    let mut args = vec!["submit", "-q", "--priority", "100", "--count", "3"];
    args.extend(quick);
    let a_jobs = ids(&d.cli_as(Some(a), &args));
    let mut args = vec!["submit", "-q", "--priority", "0"];
    args.extend(quick);
    let b_job = ids(&d.cli_as(Some(b), &args))[0];
    assert_eq!(a_jobs.len(), 3);
    std::fs::write(&go, "").unwrap();
    d.wait_idle(Duration::from_secs(30));
    let started = |id: u64| {
        let j = d.job(id);
        assert_eq!(j.state, State::Completed, "job {id}: {j:?}");
        j.started_at.expect("started")
    };
    let b_at = started(b_job);
    let a_at: Vec<f64> = a_jobs.iter().map(|&id| started(id)).collect();
    eprintln!("A started at {a_at:?}, B at {b_at}");
    assert!(a_at[0] < b_at, "A's first job was queued first");
    assert!(
        b_at < a_at[1] && b_at < a_at[2],
        "B's job waited for all of A's: A {a_at:?}, B {b_at}"
    );
}

/// A user's job held under one `[limits]` and released after the admin tightened them starts
/// within the new ones or not at all (the same for jobs queued by an older version).
#[test]
fn limits_are_checked_again_when_a_job_starts() {
    if !root_or_skip("limits_are_checked_again_when_a_job_starts") {
        return;
    }
    let Some(user) = user_a() else {
        eprintln!("SKIPPED: limits_are_checked_again_when_a_job_starts: cannot create a test user");
        return;
    };
    let _g = serial();
    let mut d = Daemon::start_with_config(&["--cpus", "2", "--memory", "1G"], Some(CONFIG));
    let big = ids(&d.cli_as(
        Some(user),
        &[
            "submit",
            "-q",
            "--hold",
            "--pids",
            "20000",
            "--",
            "/bin/true",
        ],
    ))[0];
    let small = ids(&d.cli_as(
        Some(user),
        &["submit", "-q", "--hold", "--pids", "50", "--", "/bin/true"],
    ))[0];
    d.stop();
    let config = d.state.parent().unwrap().join("config.toml");
    std::fs::write(&config, "[limits]\ndefault_pids = 123\nmax_pids = 1000\n").unwrap();
    d.restart();
    for id in [big, small] {
        let o = d.cli_as(Some(user), &["release", &id.to_string()]);
        assert!(o.status.success(), "release {id}: {}", err(&o));
    }
    d.wait_idle(Duration::from_secs(30));
    let j = d.job(small);
    assert_eq!(j.state, State::Completed, "{j:?}");
    let j = d.job(big);
    assert_eq!(j.state, State::Failed, "{j:?}");
    let why = j.reason.clone().unwrap_or_default();
    assert!(
        why.contains("refused by the node's limits at start")
            && why.contains("--pids 20000 exceeds the node's limit (limits.max_pids = 1000)"),
        "{why}"
    );
}
