//! Choosing jobs by ClassAd expression: `q`/`history` with `-constraint`, `-af` and owner
//! names, and `rm`/`hold`/`release` on every match in one request. The daemon does the
//! choosing; the attacks run as two real unprivileged users against a real daemon. Needs root;
//! without it each test prints SKIPPED.

mod daemon_harness;

use std::process::{Command, Output};
use std::time::Duration;

use daemon_harness::*;
use jobcell_node::types::State;

const T: Duration = Duration::from_secs(30);

/// Submits `count` held jobs (one cluster) as `uid` with `extra` submit options; their ids.
fn submit_held(d: &Daemon, uid: Option<(u32, u32)>, count: u32, extra: &[&str]) -> Vec<u64> {
    d.submit_small(uid, count, &[&["--hold"], extra].concat(), &["/bin/true"])
}

fn lines(o: &Output) -> Vec<String> {
    out(o).lines().map(str::to_string).collect()
}

#[test]
fn q_and_history_choose_jobs_by_constraint_and_owner() {
    if !root_or_skip("q_and_history_choose_jobs_by_constraint_and_owner") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let low = submit_held(&d, None, 2, &["--priority", "1"]);
    let high = submit_held(&d, None, 3, &["--priority", "7"]);

    // Both spellings; the daemon returns only the matches.
    for flag in ["-constraint", "--constraint"] {
        let o = d.cli(&["q", flag, "JobPrio > 5", "--json"]);
        assert!(o.status.success(), "{}", err(&o));
        let got: Vec<u64> = serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout)
            .unwrap()
            .iter()
            .map(|j| j["id"].as_u64().unwrap())
            .collect();
        assert_eq!(got, high, "{flag}");
    }
    let filter = jobcell_node::types::JobFilter {
        constraint: Some("JobPrio < 5 && JobStatus == 5".into()),
        owners: vec![],
        clusters: vec![],
    };
    let got: Vec<u64> = d
        .client()
        .queue_matching(&filter)
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(got, low);

    // -af: the values, one line per job, strings without quotes.
    let o = d.cli(&[
        "q",
        "-af",
        "ProcId",
        "jobprio",
        "Owner",
        "NoSuchAttr",
        "-constraint",
        "JobPrio > 5",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        lines(&o),
        [
            "0 7 root undefined",
            "1 7 root undefined",
            "2 7 root undefined"
        ]
    );

    // Owner names as positional filters.
    let o = d.cli(&["q", "root", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout)
            .unwrap()
            .len(),
        5
    );
    let o = d.cli(&["q", "nosuchowner", "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).trim(), "[]");

    // A bad expression: one line naming the column, from the daemon's 400.
    let o = d.cli(&["q", "-constraint", "JobPrio >"]);
    assert!(!o.status.success());
    let e = err(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("constraint 'JobPrio >': column"), "{e}");
    let (code, body) = d
        .client()
        .raw("GET", "/v1/jobs?constraint=JobPrio%20%3E", None)
        .unwrap();
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("column"));

    // history: the same filter over finished jobs.
    let o = d.cli(&["rm", "-constraint", "true"]);
    assert!(o.status.success(), "{}", err(&o));
    let (lc, hc) = (d.job(low[0]).cluster, d.job(high[0]).cluster);
    assert_eq!(
        out(&o).trim(),
        format!("Job(s) {lc}.0-1, {hc}.0-2 marked for removal")
    );
    let o = d.cli(&[
        "history",
        "-constraint",
        "JobPrio == 1",
        "-af",
        "JobcellId",
        "JobStatus",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let mut got = lines(&o);
    got.sort();
    assert_eq!(
        got,
        low.iter().map(|i| format!("{i} 3")).collect::<Vec<_>>()
    );
    let o = d.cli(&["history", "nosuchowner", "--json"]);
    assert_eq!(out(&o).trim(), "[]");
    let o = d.cli(&[
        "history",
        "-constraint",
        "JobPrio > 5",
        "--limit",
        "2",
        "--json",
    ]);
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn rm_hold_release_act_on_every_match_in_one_request() {
    if !root_or_skip("rm_hold_release_act_on_every_match_in_one_request") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let first = submit_held(&d, None, 4, &[]);
    let second = submit_held(&d, None, 3, &[]);
    let cluster = d.job(first[0]).cluster;

    let o = d.cli(&["release", "-constraint", &format!("ClusterId == {cluster}")]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).trim(), format!("Job(s) {cluster}.0-3 released"));
    for id in &first {
        d.wait_for(*id, T, |j| j.state.terminal());
    }
    assert_eq!(d.job(second[0]).state, State::Held);

    // Several ids and CLUSTER.PROC in one command; a finished job among them is refused.
    let o = d.cli(&["release", &second[0].to_string(), &first[0].to_string()]);
    assert!(!o.status.success());
    let sc = d.job(second[0]).cluster;
    assert_eq!(out(&o).trim(), format!("Job {sc}.0 released"));
    assert!(
        err(&o).contains(&format!("job {}", first[0])),
        "{}",
        err(&o)
    );
    let second_cluster = d.job(second[1]).cluster;
    let o = d.cli(&["hold", &format!("{second_cluster}.1")]);
    assert!(!o.status.success());
    assert!(err(&o).contains("already held"), "{}", err(&o));
    // A running job is stopped and held, with the reason given.
    let running = d.submit_small(None, 1, &[], &["/bin/sleep", "60"]);
    d.wait_state(running[0], State::Running, T);
    let c = d.job(running[0]).cluster;
    let o = d.cli(&["hold", &format!("{c}.0"), "--reason", "wait"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).trim(), format!("Job {c}.0 held"));
    let j = d.wait_state(running[0], State::Held, T);
    assert_eq!(j.hold_reason.as_deref(), Some("wait"));
    d.cli(&["rm", &running[0].to_string()]);

    // Nothing matches: said, and non-zero.
    let o = d.cli(&["rm", "-constraint", "JobPrio == 99"]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("no unfinished job of yours matches"),
        "{}",
        err(&o)
    );
    let o = d.cli(&["rm", "999."]);
    assert!(!o.status.success());
    assert!(err(&o).contains("no unfinished job 999."), "{}", err(&o));
    let o = d.cli(&["hold", "-constraint", "1 +"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("column"), "{}", err(&o));

    // The cluster's finished job is no longer among its unfinished ones.
    d.wait_for(second[0], T, |j| j.state.terminal());
    let o = d.cli(&["rm", &format!("{second_cluster}.")]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        out(&o).trim(),
        format!("Job(s) {second_cluster}.1-2 marked for removal")
    );
    for id in &second[1..] {
        assert_eq!(d.job(*id).state, State::Removed);
    }
}

/// User B's `-constraint true` selects only B's own jobs: A's stay untouched, and B cannot
/// learn what `q -l` hides from B (A's environment) through a constraint either.
#[test]
fn a_constraint_reaches_only_the_callers_own_jobs() {
    if !root_or_skip("a_constraint_reaches_only_the_callers_own_jobs") {
        return;
    }
    let Some((a, b)) = test_users_or_skip("a_constraint_reaches_only_the_callers_own_jobs") else {
        return;
    };
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let of_a = submit_held(&d, Some(a), 3, &["-e", "TOKEN=a-secret-token"]);
    let of_b = d.submit_small(Some(b), 2, &["--hold"], &["/bin/sleep", "60"]);

    // B cannot probe A's environment: the constraint sees B's view of A's ad.
    let probe = "regexp(\"a-secret-token\", Environment)";
    let o = d.cli_as(Some(b), &["q", "-constraint", probe, "--json"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).trim(), "[]", "B matched on A's environment");
    let o = d.cli_as(Some(a), &["q", "-constraint", probe, "--json"]);
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout)
            .unwrap()
            .len(),
        3,
        "A sees its own"
    );

    // B's own jobs are held already: B's hold is refused for each of them, and only them.
    let o = d.cli_as(Some(b), &["hold", "-constraint", "true"]);
    assert!(!o.status.success());
    let said = format!("{}{}", out(&o), err(&o));
    assert!(!said.contains("jobcell-test-a"), "{said}");
    for id in &of_b {
        assert!(said.contains(&format!("job {id}: cannot hold")), "{said}");
    }
    for (verb, done) in [("release", "released"), ("rm", "marked for removal")] {
        let o = d.cli_as(Some(b), &[verb, "-constraint", "true"]);
        let said = format!("{}{}", out(&o), err(&o));
        assert!(o.status.success(), "{verb}: {said}");
        let cb = d.job(of_b[0]).cluster;
        assert_eq!(out(&o).trim(), format!("Job(s) {cb}.0-1 {done}"), "{said}");
        for id in &of_a {
            assert_eq!(
                d.job(*id).state,
                State::Held,
                "{verb} as B changed A's job {id}"
            );
        }
    }
    for id in &of_b {
        d.wait_state(*id, State::Removed, T);
    }
    // Named ids go through the owner check one by one.
    let o = d.cli_as(Some(b), &["rm", &of_a[0].to_string(), &of_a[1].to_string()]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("belongs to jobcell-test-a") && err(&o).contains("only its owner or root"),
        "{}",
        err(&o)
    );
    let cluster_a = d.job(of_a[0]).cluster;
    let o = d.cli_as(Some(b), &["release", &format!("{cluster_a}.")]);
    assert!(!o.status.success());
    for id in &of_a {
        assert_eq!(d.job(*id).state, State::Held);
    }
    // Root acts on everyone's.
    let o = d.cli(&["rm", "-constraint", "true"]);
    assert_eq!(
        out(&o).trim(),
        format!("Job(s) {cluster_a}.0-2 marked for removal"),
        "{}",
        err(&o)
    );
}

/// `[a0 = 1; a1 = a0 + a0; ...].aN`: each level doubles the work of evaluating it.
fn fan_out_bomb(levels: usize, base: &str, op: impl Fn(&str) -> String) -> String {
    let mut attrs = vec![format!("a0 = {base}")];
    for i in 1..=levels {
        attrs.push(format!("a{i} = {}", op(&format!("a{}", i - 1))));
    }
    format!("[{}].a{levels}", attrs.join("; "))
}

/// Another user's constraint that would take years (or all memory) to evaluate is cut short:
/// the daemon keeps answering everyone, the caller gets one line saying why, and a bulk
/// action with it touches nothing.
#[test]
fn a_constraint_that_explodes_is_cut_short_and_the_daemon_keeps_answering() {
    if !root_or_skip("a_constraint_that_explodes_is_cut_short_and_the_daemon_keeps_answering") {
        return;
    }
    let Some(b) = test_user_or_skip(
        "a_constraint_that_explodes_is_cut_short_and_the_daemon_keeps_answering",
        "jobcell-test-b",
    ) else {
        return;
    };
    let _g = serial();
    let mut d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    submit_held(&d, None, 20, &[]);
    let of_b = submit_held(&d, Some(b), 3, &[]);
    let time_bomb = format!("{} > 0", fan_out_bomb(62, "1", |a| format!("{a} + {a}")));
    let memory_bomb = format!(
        "size({}) > 0",
        fan_out_bomb(40, &format!("\"{}\"", "x".repeat(1000)), |a| {
            format!("strcat({a}, {a})")
        })
    );
    for bomb in [&time_bomb, &memory_bomb] {
        let mut attack = Command::new(BIN);
        attack
            .args(["q", "-constraint", bomb])
            .env("JOBCELL_SOCKET", &d.sock)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        {
            use std::os::unix::process::CommandExt;
            attack.uid(b.0).gid(b.1);
        }
        let mut child = attack.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // Meanwhile the daemon answers others.
        let t = std::time::Instant::now();
        let status = d
            .client()
            .with_timeouts(Duration::from_secs(5), Duration::from_secs(5))
            .status();
        let answered_in = t.elapsed();
        let ended = (0..200).find_map(|_| {
            let s = child.try_wait().unwrap();
            if s.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            s
        });
        if status.is_err() || ended.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            d.kill9();
            panic!(
                "the daemon stalled on a constraint: status {:?} after {answered_in:?}, attacker ended: {ended:?}",
                status.err()
            );
        }
        assert!(answered_in < Duration::from_secs(2), "{answered_in:?}");
        let o = child.wait_with_output().unwrap();
        assert!(!o.status.success());
        let e = err(&o);
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert!(e.contains("takes too much work"), "{e}");
    }
    let o = d.cli_as(Some(b), &["rm", "-constraint", &time_bomb]);
    assert!(!o.status.success());
    assert!(err(&o).contains("takes too much work"), "{}", err(&o));
    for id in &of_b {
        assert_eq!(d.job(*id).state, State::Held);
    }
}
