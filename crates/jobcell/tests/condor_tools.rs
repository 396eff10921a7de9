//! HTCondor's everyday tools against a real daemon: condor_q's batch view and filters,
//! condor_history's selectors and time windows, suspend/continue on many jobs, and
//! condor_qedit (its bounds attacked as a real second user, its effect checked on the job's
//! cgroup limit). Needs root; without it each test prints SKIPPED.

mod daemon_harness;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::Duration;

use daemon_harness::*;
use jobcell_node::types::State;

const T: Duration = Duration::from_secs(30);

/// A submit file's jobs, given on stdin from a world-writable work dir.
fn submit_file(d: &Daemon, work: &TempDir, file: &str) -> Vec<u64> {
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = d.cli_in(work.path(), None, &[], &["submit", "-q", "-"], Some(file));
    assert!(o.status.success(), "{}", err(&o));
    ids(&o)
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}{}", out(o), err(o));
    out(o)
}

/// The one line of stderr of a refusal, which must exit non-zero.
fn refused(o: &Output) -> String {
    assert!(!o.status.success(), "succeeded: {}", out(o));
    let e = err(o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    e
}

#[test]
fn q_prints_condor_qs_batches_and_its_filters() {
    if !root_or_skip("q_prints_condor_qs_batches_and_its_filters") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let work = TempDir::itest();
    let sweep = submit_file(
        &d,
        &work,
        "executable = /bin/true\nbatch_name = sweep\nrequest_memory = 32\nhold = true\nqueue 3\n",
    );
    let quick = d.submit_small(None, 2, &["--hold"], &["/bin/true"]);
    let running = d.submit_small(None, 1, &[], &["/bin/sleep", "60"]);
    d.wait_state(running[0], State::Running, T);
    let (qc, rc) = (d.job(quick[0]).cluster, d.job(running[0]).cluster);
    let sc = d.job(sweep[0]).cluster;

    let table = ok(&d.cli(&["q"]));
    let lines: Vec<&str> = table.lines().collect();
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        head,
        [
            "OWNER",
            "BATCH_NAME",
            "SUBMITTED",
            "DONE",
            "RUN",
            "IDLE",
            "HOLD",
            "TOTAL",
            "JOB_IDS"
        ]
    );
    let row = |name: &str| -> Vec<String> {
        let l = lines
            .iter()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no {name} in {table}"));
        // The date-time is two words (`12/7 04:30`).
        l.split_whitespace().map(str::to_string).collect()
    };
    let s = row("sweep");
    assert_eq!(&s[0], "root");
    assert!(s[2].contains('/') && s[3].contains(':'), "{s:?}");
    assert_eq!(&s[4..], ["_", "_", "_", "3", "3", &format!("{sc}.0-2")]);
    let q = row(&format!("ID: {qc} "));
    assert_eq!(&q[5..], ["_", "_", "_", "2", "2", &format!("{qc}.0-1")]);
    let r = row(&format!("ID: {rc} "));
    assert_eq!(&r[5..], ["_", "1", "_", "_", "1", &format!("{rc}.0")]);
    assert_eq!(
        lines.last().unwrap().trim(),
        "Total for query: 6 jobs; 0 completed, 0 removed, 0 idle, 1 running, 5 held, 0 suspended"
    );

    // -nobatch: a line a job; -hold: held ones with the reason as a column; -run, -idle.
    for flag in ["-nobatch", "--nobatch"] {
        let t = ok(&d.cli(&["q", flag]));
        assert_eq!(t.lines().filter(|l| l.contains(" root ")).count(), 6, "{t}");
    }
    let t = ok(&d.cli(&["q", "-hold"]));
    assert!(t.lines().next().unwrap().ends_with("HOLD_REASON"), "{t}");
    assert_eq!(t.matches("held at submission").count(), 5, "{t}");
    assert!(t.contains("Total for query: 5 jobs;"), "{t}");
    let t = ok(&d.cli(&["q", "-run"]));
    assert!(
        t.contains(&format!(" {rc}.0 ")) && t.contains("1 running"),
        "{t}"
    );
    assert!(t.contains("Total for query: 1 job;"), "{t}");
    let t = ok(&d.cli(&["q", "-idle"]));
    assert!(t.contains("Total for query: 0 jobs;"), "{t}");
    // A job released from the batch is idle or running now: it moves columns.
    ok(&d.cli(&["release", &format!("{sc}.0")]));
    d.wait_for(sweep[0], T, |j| j.state.terminal());
    let t = ok(&d.cli(&["q", "-constraint", "JobBatchName == \"sweep\""]));
    let s: Vec<&str> = t
        .lines()
        .find(|l| l.contains("sweep"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        &s[4..],
        ["1", "_", "_", "2", "3", &format!("{sc}.1-2")],
        "{t}"
    );

    // condor_q's other single-dash options; -h stays help.
    let o = ok(&d.cli(&["q", "-long", &format!("{sc}.1")]));
    assert!(o.contains("JobBatchName = \"sweep\""), "{o}");
    let o = ok(&d.cli(&[
        "q",
        "-format",
        "%d.",
        "ClusterId",
        "-format",
        "%s\\n",
        "JobBatchName",
        "-hold",
    ]));
    assert_eq!(
        o.lines().filter(|l| *l == format!("{sc}.sweep")).count(),
        2,
        "{o}"
    );
    assert_eq!(
        o.lines()
            .filter(|l| *l == format!("{qc}.undefined"))
            .count(),
        2,
        "{o}"
    );
    let o = ok(&d.cli(&["q", "-totals", "-batch", "-allusers"]));
    assert_eq!(
        o.trim(),
        "Total for query: 5 jobs; 0 completed, 0 removed, 0 idle, 1 running, 4 held, 0 suspended"
    );
    let o = d.cli(&["q", "-global", "-nobatch"]);
    assert!(ok(&o).contains("Total for query"));
    assert_eq!(
        err(&o).trim(),
        "jobcell: -global has no effect on a single jobcell node; ignored"
    );
    let e = refused(&d.cli(&["q", "-better-analyze", "1"]));
    assert!(
        e.contains("q -better-analyze: HTCondor's option is not supported"),
        "{e}"
    );
    let o = ok(&d.cli(&["q", "-h"]));
    assert!(o.contains("Usage: jobcell q"), "{o}");
    // Bad input: one line.
    let e = refused(&d.cli(&["q", "-since", "3"]));
    assert!(e.contains("-since is for history"), "{e}");
    let o = d.cli(&["q", "-run", "-idle"]);
    assert!(
        !o.status.success() && err(&o).contains("cannot be used with"),
        "{}",
        err(&o)
    );

    // --json: owner (uid) and owner_name; q -l: Arguments quoted a word at a time.
    let spaced = d.submit_small(None, 1, &["--hold"], &["/bin/echo", "a b", "it's", "c"]);
    let o = ok(&d.cli(&["q", &spaced[0].to_string(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v[0]["owner"], 0);
    assert_eq!(v[0]["owner_name"], "root");
    let o = ok(&d.cli(&["q", "-l", &spaced[0].to_string()]));
    assert!(o.contains("Arguments = \"'a b' 'it''s' c\"\n"), "{o}");
    d.cli(&["rm", "-constraint", "true"]);
}

#[test]
fn history_takes_ids_clusters_owners_and_time_windows() {
    if !root_or_skip("history_takes_ids_clusters_owners_and_time_windows") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let first = d.submit_small(None, 3, &[], &["/bin/true"]);
    for id in &first {
        d.wait_state(*id, State::Completed, T);
    }
    // Whole seconds apart: CompletionDate is in seconds.
    std::thread::sleep(Duration::from_millis(1100));
    let mid = jobcell_api::types::now();
    std::thread::sleep(Duration::from_millis(1100));
    let second = d.submit_small(None, 2, &[], &["/bin/sh", "-c", "exit 3"]);
    for id in &second {
        d.wait_state(*id, State::Completed, T);
    }
    let (c1, c2) = (d.job(first[0]).cluster, d.job(second[0]).cluster);
    let listed = |args: &[&str]| -> Vec<u64> {
        let o = ok(&d.cli(&[&["history", "--json"], args].concat()));
        let v: Vec<serde_json::Value> = serde_json::from_str(&o).unwrap();
        let mut got: Vec<u64> = v.iter().map(|j| j["id"].as_u64().unwrap()).collect();
        got.sort();
        got
    };
    // Ids, C.P, C. and owners, as condor_history takes them.
    assert_eq!(listed(&[&first[1].to_string()]), [first[1]]);
    assert_eq!(listed(&[&format!("{c2}.1")]), [second[1]]);
    assert_eq!(listed(&[&format!("{c1}.")]), first);
    assert_eq!(
        listed(&[&format!("{c1}.0"), &format!("{c2}.")]),
        [&first[..1], &second[..]].concat()
    );
    assert_eq!(listed(&["root"]).len(), 5);
    assert!(listed(&["nosuchowner"]).is_empty());
    // Time windows: -completedsince (epoch or local date-time), -since, -match.
    let since = (mid.ceil() as i64).to_string();
    assert_eq!(listed(&["-completedsince", &since]), second);
    assert_eq!(listed(&["-completedsince", "2000-01-01 00:00"]).len(), 5);
    assert!(listed(&["-completedsince", "2999-01-01"]).is_empty());
    // Newest first, up to the -since job (not included).
    let newest_first: Vec<u64> =
        serde_json::from_str::<Vec<serde_json::Value>>(&ok(&d.cli(&["history", "--json"])))
            .unwrap()
            .iter()
            .map(|j| j["id"].as_u64().unwrap())
            .collect();
    let at = newest_first.iter().position(|i| *i == first[2]).unwrap();
    let mut want = newest_first[..at].to_vec();
    want.sort();
    assert_eq!(listed(&["-since", &first[2].to_string()]), want);
    assert_eq!(listed(&["-since", "ExitCode == 0"]), second);
    assert_eq!(listed(&["-match", "2", "-backwards"]).len(), 2);
    assert_eq!(listed(&["-limit", "1"]).len(), 1);
    // The API's cluster filter, and a bad one.
    let by_cluster = jobcell_api::types::JobFilter {
        clusters: vec![c1],
        ..Default::default()
    };
    let mut got: Vec<u64> = d
        .client()
        .history_matching(100, &by_cluster)
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    got.sort();
    assert_eq!(got, first);
    let (code, _) = d
        .client()
        .raw("GET", "/v1/history?limit=5&cluster=x", None)
        .unwrap();
    assert_eq!(code, 400);
    // -l: the finished job's ad.
    let o = ok(&d.cli(&["history", "-l", &format!("{c2}.0")]));
    assert!(
        o.contains("ExitCode = 3\n") && o.contains("JobStatus = 4\n"),
        "{o}"
    );
    // The table: cluster ids and local date-times, not epoch numbers.
    let t = ok(&d.cli(&["history", &format!("{c2}.0")]));
    let row: Vec<&str> = t.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[1], format!("{c2}.0"), "{t}");
    assert!(row[3].contains('/') && row[4].contains(':'), "{t}");
    assert!(!t.contains(&(mid as u64 / 100_000).to_string()), "{t}");
    // Bad input: one line each.
    let e = refused(&d.cli(&["history", "-completedsince", "yesterday"]));
    assert!(e.contains("'yesterday' is not a time"), "{e}");
    let e = refused(&d.cli(&["history", "-hold"]));
    assert!(e.contains("-hold is for q"), "{e}");
    let e = refused(&d.cli(&["history", "7.x"]));
    assert!(e.contains("'7.x' is not a job id"), "{e}");
}

#[test]
fn suspend_and_continue_take_clusters_and_constraints() {
    if !root_or_skip("suspend_and_continue_take_clusters_and_constraints") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let jobs = d.submit_small(None, 3, &[], &["/bin/sh", "-c", "echo up; exec sleep 60"]);
    // Running in their cgroups (made by the launcher after the daemon says running).
    for id in &jobs {
        let t = std::time::Instant::now();
        while !out(&d.cli(&["output", &id.to_string()])).contains("up") {
            assert!(t.elapsed() < T, "job {id} never started");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let c = d.job(jobs[0]).cluster;
    let o = d.cli(&["suspend", &format!("{c}.")]);
    assert_eq!(ok(&o).trim(), format!("Job(s) {c}.0-2 suspended"));
    for id in &jobs {
        assert_eq!(d.job(*id).state, State::Suspended);
    }
    // Frozen time is not run time.
    std::thread::sleep(Duration::from_millis(1500));
    let j = d.job(jobs[0]);
    let now = jobcell_api::types::now();
    assert!(j.suspended_at.is_some(), "{j:?}");
    let frozen_for = now - j.suspended_at.unwrap();
    assert!(frozen_for >= 1.4, "{frozen_for}");
    assert!(
        j.run_time(now) <= now - j.started_at.unwrap() - 1.4,
        "{j:?}"
    );
    let o = d.cli(&[
        "continue",
        "-constraint",
        &format!("ClusterId == {c} && ProcId < 2"),
    ]);
    assert_eq!(ok(&o).trim(), format!("Job(s) {c}.0-1 continued"));
    let j = d.job(jobs[0]);
    assert_eq!(j.state, State::Running);
    assert!(j.suspended_s >= 1.4 && j.suspended_at.is_none(), "{j:?}");
    assert_eq!(d.job(jobs[2]).state, State::Suspended);
    // What is not suspended is refused, the rest done; the exit code says so.
    let o = d.cli(&["continue", &format!("{c}.0"), &format!("{c}.2")]);
    assert!(!o.status.success());
    assert_eq!(out(&o).trim(), format!("Job {c}.2 continued"));
    assert!(err(&o).contains("not suspended"), "{}", err(&o));
    // Its events, with local date-times.
    let ev = ok(&d.cli(&["output", &jobs[0].to_string(), "--events"]));
    let kinds: Vec<&str> = ev
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["submitted", "started", "suspended", "continued"],
        "{ev}"
    );
    for l in ev.lines() {
        let (date, time) = (&l[..10], &l[11..23]);
        assert!(
            date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-' && time.as_bytes()[2] == b':',
            "{l}"
        );
    }
    // Separate help texts: --reason is hold's only.
    let h = ok(&d.cli(&["hold", "--help"]));
    assert!(h.contains("--reason"), "{h}");
    for verb in ["release", "suspend", "continue"] {
        let h = ok(&d.cli(&[verb, "--help"]));
        assert!(!h.contains("--reason"), "{verb}: {h}");
    }
    let o = d.cli(&["suspend", "--reason", "x", "1"]);
    assert!(
        !o.status.success() && err(&o).contains("'--reason'"),
        "{}",
        err(&o)
    );
    // rm -all (--all-mine): one summary line.
    let o = d.cli(&["rm", "-all"]);
    assert_eq!(ok(&o).trim(), format!("Job(s) {c}.0-2 marked for removal"));
    for id in &jobs {
        d.wait_state(*id, State::Removed, T);
    }
}

#[test]
fn qedit_changes_a_queued_or_held_jobs_request_and_it_persists() {
    if !root_or_skip("qedit_changes_a_queued_or_held_jobs_request_and_it_persists") {
        return;
    }
    let _g = serial();
    let mut d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let held = d.submit_small(None, 3, &["--hold"], &["/bin/true"]);
    let c = d.job(held[0]).cluster;
    let o = d.cli(&["qedit", &format!("{c}."), "RequestMemory", "64 * 2"]);
    assert_eq!(
        ok(&o).trim(),
        format!("Job(s) {c}.0-2 edited: RequestMemory = 64 * 2")
    );
    ok(&d.cli(&["qedit", &held[0].to_string(), "RequestCpus", "0.5"]));
    ok(&d.cli(&["qedit", &format!("{c}.1"), "JobPrio", "-3"]));
    ok(&d.cli(&["qedit", &format!("{c}.2"), "+Project", "\"atlas\""]));
    ok(&d.cli(&[
        "qedit",
        "-constraint",
        &format!("ClusterId == {c}"),
        "MY.Tries",
        "2",
    ]));
    ok(&d.cli(&["qedit", &held[0].to_string(), "JobBatchName", "\"renamed\""]));
    let check = |d: &Daemon| {
        let j0 = d.job(held[0]);
        assert_eq!((j0.memory, j0.cpus), (128 << 20, 0.5));
        assert_eq!(j0.batch_name.as_deref(), Some("renamed"));
        assert_eq!(d.job(held[1]).priority, -3);
        let ad = d.ad(held[2]);
        assert_eq!(ad["RequestMemory"], "128");
        assert_eq!(ad["Project"], "\"atlas\"");
        assert_eq!(ad["Tries"], "2");
        // The spec the job starts with carries the new request.
        let o = ok(&d.cli(&[
            "q",
            &held[0].to_string(),
            "-af",
            "RequestMemory",
            "RequestCpus",
            "JobPrio",
        ]));
        assert_eq!(o.trim(), "128 0.5 0");
    };
    check(&d);
    d.stop();
    d.restart();
    check(&d);
    // A running job and a finished one are refused, each with one line.
    let running = d.submit_small(None, 1, &[], &["/bin/sleep", "60"]);
    d.wait_state(running[0], State::Running, T);
    let e = refused(&d.cli(&["qedit", &running[0].to_string(), "RequestMemory", "64"]));
    assert!(
        e.contains("it is running; qedit changes queued or held jobs only"),
        "{e}"
    );
    ok(&d.cli(&["release", &held[0].to_string()]));
    let j = d.wait_state(held[0], State::Completed, T);
    assert_eq!(j.memory, 128 << 20);
    let e = refused(&d.cli(&["qedit", &held[0].to_string(), "RequestMemory", "64"]));
    assert!(e.contains("has already ended"), "{e}");
    // Bad values and attributes: one line naming them, nothing changed.
    for (attr, value, says) in [
        (
            "RequestMemory",
            "\"lots\"",
            "RequestMemory must be a whole number",
        ),
        ("RequestMemory", "0", "RequestMemory must be a whole number"),
        ("RequestCpus", "-1", "RequestCpus must be a number > 0"),
        ("RequestMemory", "64 +", "value '64 +'"),
        ("Cmd", "\"/bin/sh\"", "Cmd cannot be changed by qedit"),
        (
            "JobcellUser",
            "\"root\"",
            "JobcellUser cannot be changed by qedit",
        ),
        ("Owner", "\"x\"", "Owner cannot be changed by qedit"),
        ("1bad", "1", "'1bad' is not an attribute name"),
    ] {
        let e = refused(&d.cli(&["qedit", &held[1].to_string(), attr, value]));
        assert!(e.contains(says), "{attr} {value}: {e}");
    }
    assert_eq!(d.job(held[1]).memory, 128 << 20);
    let e = refused(&d.cli(&["qedit", "RequestMemory", "64"]));
    assert!(
        e.contains("which jobs?") || e.contains("not a job id"),
        "{e}"
    );
    d.cli(&["rm", "-constraint", "true"]);
}

/// User B can neither qedit past the node's `[limits]` and size (exactly as at submission) nor
/// touch user A's job, by id, cluster or constraint.
#[test]
fn qedit_cannot_pass_the_limits_or_reach_anothers_job() {
    if !root_or_skip("qedit_cannot_pass_the_limits_or_reach_anothers_job") {
        return;
    }
    let Some((a, b)) = test_users_or_skip("qedit_cannot_pass_the_limits_or_reach_anothers_job")
    else {
        return;
    };
    let _g = serial();
    let d = Daemon::start_with_config(
        &["--cpus", "2", "--memory", "1G"],
        Some("[limits]\nmax_disk = \"1G\"\n"),
    );
    let of_a = d.submit_small(Some(a), 1, &["--hold"], &["/bin/true"]);
    let of_b = d.submit_small(Some(b), 2, &["--hold"], &["/bin/true"]);
    let (ca, cb) = (d.job(of_a[0]).cluster, d.job(of_b[0]).cluster);
    let before_a = d.ad(of_a[0]);

    // Past the limits and the node: refused, one line, nothing changed.
    for (attr, value, says) in [
        ("RequestDisk", "2 * 1024 * 1024", "max_disk"),
        ("RequestMemory", "2048", "this node has 1.0 GiB"),
        ("RequestCpus", "3", "this node has 2 for jobs"),
    ] {
        let e = refused(&d.cli_as(Some(b), &["qedit", &of_b[0].to_string(), attr, value]));
        assert!(e.contains(says), "{attr} {value}: {e}");
    }
    let j = d.job(of_b[0]);
    assert_eq!((j.memory, j.cpus), (32 << 20, 0.1));
    assert!(!d.ad(of_b[0]).contains_key("RequestDisk"));
    // Within them: done.
    ok(&d.cli_as(
        Some(b),
        &["qedit", &of_b[0].to_string(), "RequestDisk", "1024"],
    ));

    // A's job by id and by cluster: refused; by constraint: never selected.
    let e = refused(&d.cli_as(
        Some(b),
        &["qedit", &of_a[0].to_string(), "RequestMemory", "64"],
    ));
    assert!(e.contains("belongs to jobcell-test-a"), "{e}");
    let o = d.cli_as(Some(b), &["qedit", &format!("{ca}."), "+Stolen", "true"]);
    assert!(!o.status.success());
    let o = d.cli_as(Some(b), &["qedit", "-constraint", "true", "JobPrio", "9"]);
    assert_eq!(
        ok(&o).trim(),
        format!("Job(s) {cb}.0-1 edited: JobPrio = 9")
    );
    assert_eq!(d.ad(of_a[0]), before_a, "B's qedit changed A's job");
    assert_eq!(d.job(of_a[0]).priority, 0);

    // Root may edit anyone's job, but a user's job stays within [limits].
    let e = refused(&d.cli(&[
        "qedit",
        &of_a[0].to_string(),
        "RequestDisk",
        "2 * 1024 * 1024",
    ]));
    assert!(e.contains("max_disk"), "{e}");
    ok(&d.cli(&["qedit", &of_a[0].to_string(), "RequestMemory", "64"]));
    assert_eq!(d.job(of_a[0]).memory, 64 << 20);
    d.cli(&["rm", "-constraint", "true"]);
}

/// An OOM-held job's RequestMemory raised with qedit: after release it runs, and finishes,
/// under the new limit.
#[test]
fn an_oom_held_job_runs_with_the_memory_qedit_gave_it() {
    if !root_or_skip("an_oom_held_job_runs_with_the_memory_qedit_gave_it") {
        return;
    }
    if !std::path::Path::new("/usr/bin/perl").exists() {
        eprintln!("SKIPPED: an_oom_held_job_runs_with_the_memory_qedit_gave_it: no /usr/bin/perl for the memory hog");
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let work = TempDir::itest();
    // Touches 96 MiB.
    let hog = work.path().join("hog.pl");
    std::fs::write(
        &hog,
        "#!/usr/bin/perl\nmy $x = \"x\" x (96 << 20);\nprint length($x), \"\\n\";\n",
    )
    .unwrap();
    std::fs::set_permissions(&hog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = format!(
        "executable = {}\nrequest_memory = 32\nqueue\n",
        hog.display()
    );
    let id = submit_file(&d, &work, &file)[0];
    let j = d.wait_state(id, State::Held, T);
    assert_eq!(
        j.hold_reason.as_deref(),
        Some("memory usage exceeded request_memory"),
        "{j:?}"
    );
    let o = d.cli(&[
        "qedit",
        &id.to_string(),
        "RequestMemory",
        "RequestMemory * 8",
    ]);
    assert!(ok(&o).contains("edited"), "{}", out(&o));
    assert_eq!(d.ad(id)["RequestMemory"], "256");
    ok(&d.cli(&["release", &id.to_string()]));
    let j = d.wait_for(id, T, |j| {
        j.state.terminal() || (j.state == State::Held && j.attempt > 1)
    });
    assert_eq!(j.state, State::Completed, "{j:?}");
    assert_eq!(j.exit_code, Some(0));
    let peak = j.report.as_ref().unwrap()["usage"]["memory_peak"]
        .as_u64()
        .unwrap();
    assert!(
        peak > 64 << 20,
        "peak {peak}: the new limit was not what it ran under"
    );
    assert_ne!(j.report.as_ref().unwrap()["oom_killed"], true);
}
