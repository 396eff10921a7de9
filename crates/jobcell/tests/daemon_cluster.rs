//! Large submit-file clusters (the compact cluster request, one limit for `queue N` and
//! `--count`), `requirements` matched against the node's machine ad, and the submit path's
//! checks before anything is queued. Needs root; without it each test prints SKIPPED.

mod daemon_harness;

use std::time::{Duration, Instant};

use daemon_harness::*;
use jobcell_node::types::State;

const T: Duration = Duration::from_secs(60);

#[test]
fn a_100000_job_cluster_is_queued_whole_from_one_file() {
    if !root_or_skip("a_100000_job_cluster_is_queued_whole_from_one_file") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let work = TempDir::itest();
    let file = "executable = /bin/echo\narguments = $(Process)\noutput = out.$(Process)\n\
                request_memory = 16M\nhold = true\nqueue 100000\n";
    let t = Instant::now();
    let o = d.cli_in(work.path(), None, &[], &["submit", "-"], Some(file));
    let took = t.elapsed();
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("100000 job(s) submitted to cluster"),
        "{}",
        out(&o)
    );
    eprintln!("100000 jobs submitted in {took:?}");
    // "100000 job(s) submitted to cluster C (job ids A-B)."
    let text = out(&o);
    let range = text
        .rsplit("job ids ")
        .next()
        .unwrap()
        .trim_end_matches(").\n");
    let (first, last): (u64, u64) = range
        .split_once('-')
        .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(last - first, 99_999);
    let counts = d.client().status().unwrap().jobs;
    let job = d.job(last);
    let ad = d.ad(last);
    // Removed in one request: the harness would remove what is left one job at a time.
    let o = d.cli(&["rm", &format!("{}.", job.cluster)]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(counts.get("held"), Some(&100_000), "{counts:?}");
    assert_eq!(job.proc, 99_999);
    assert_eq!(job.command, ["/bin/echo", "99999"]);
    assert_eq!(ad["ProcId"], "99999");
    let wd = work.path().canonicalize().unwrap();
    assert_eq!(ad["Out"], format!("\"{}/out.99999\"", wd.display()));
    // One more job than a cluster holds: refused whole, with one line, from either form.
    let before = d.client().status().unwrap().jobs;
    let o = d.cli_in(
        work.path(),
        None,
        &[],
        &["submit", "-"],
        Some("executable = /bin/true\nqueue 100001\n"),
    );
    assert_eq!(o.status.code(), Some(125), "{}", out(&o));
    assert!(
        err(&o).contains("line 2: the file queues more than 100000 jobs"),
        "{}",
        err(&o)
    );
    assert_eq!(err(&o).trim().lines().count(), 1, "{}", err(&o));
    let o = d.cli(&["submit", "--count", "100001", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125), "{}", out(&o));
    assert!(
        err(&o).contains("count 100001 must be between 1 and 100000"),
        "{}",
        err(&o)
    );
    assert_eq!(
        d.client().status().unwrap().jobs,
        before,
        "nothing of the refused ones is queued"
    );
}

#[test]
fn requirements_this_node_can_never_meet_hold_the_job_naming_them() {
    if !root_or_skip("requirements_this_node_can_never_meet_hold_the_job_naming_them") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let work = TempDir::itest();
    let file = "executable = /bin/true\nrequest_memory = 16M\n\
                requirements = OpSys == \"LINUX\" && TARGET.Memory >= RequestMemory && Jobcell\n\
                queue\n\
                requirements = TARGET.Cpus >= 100000\nqueue\n\
                requirements = TARGET.HasGPU\nqueue\n";
    let o = d.cli_in(work.path(), None, &[], &["submit", "-q", "-"], Some(file));
    let ids = ids(&o);
    assert_eq!(ids.len(), 3);
    let ok = d.wait_state(ids[0], State::Completed, T);
    assert_eq!(ok.exit_code, Some(0));
    let never = d.job(ids[1]);
    assert_eq!(never.state, State::Held);
    let why = never.hold_reason.unwrap();
    assert!(
        why.starts_with("requirements (TARGET.Cpus >= 100000) can never match this node: false"),
        "{why}"
    );
    let undefined = d.job(ids[2]);
    assert_eq!(undefined.state, State::Held);
    assert!(undefined.hold_reason.unwrap().contains(": undefined"));
    assert_eq!(d.ad(ids[1])["Requirements"], "TARGET.Cpus >= 100000");
    // What they were matched against.
    let o = d.cli(&["status", "-l"]);
    assert!(o.status.success(), "{}", err(&o));
    let ad = out(&o);
    for line in [
        "OpSys = \"LINUX\"",
        "HasFileTransfer = true",
        "HasDocker = false",
        "HasContainer = true",
        "Jobcell = true",
    ] {
        assert!(ad.lines().any(|l| l == line), "{line} in:\n{ad}");
    }
    assert!(ad.lines().any(|l| l.starts_with("Memory = ")), "{ad}");
    assert!(ad.lines().any(|l| l.starts_with("Cpus = ")), "{ad}");
}

#[test]
fn dry_run_applies_the_command_line_as_a_submit_does() {
    if !root_or_skip("dry_run_applies_the_command_line_as_a_submit_does") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let work = TempDir::itest();
    let file = "executable = /bin/true\nrequest_memory = 16M\npriority = 2\nqueue\n";
    let opts = [
        "--memory",
        "48M",
        "--cpus",
        "0.5",
        "--priority",
        "5",
        "--hold",
    ];
    let mut args = vec!["submit", "--dry-run", "--json"];
    args.extend(opts);
    args.push("-");
    let o = d.cli_in(work.path(), None, &[], &args, Some(file));
    assert!(o.status.success(), "{}", err(&o));
    let jobs: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    let j = &jobs[0];
    assert_eq!(j["request_memory"], 48);
    assert_eq!(j["request_cpus"], 0.5);
    assert_eq!(j["priority"], 7);
    assert_eq!(j["held"], true);
    // The same options on a real submit: its ad says the same.
    let mut args = vec!["submit", "-q"];
    args.extend(opts);
    args.push("-");
    let o = d.cli_in(work.path(), None, &[], &args, Some(file));
    let id = ids(&o)[0];
    let ad = d.ad(id);
    assert_eq!(ad["RequestMemory"], "48");
    assert_eq!(ad["RequestCpus"], "0.5");
    assert_eq!(ad["JobPrio"], "7");
    assert_eq!(d.job(id).state, State::Held);
    assert_eq!(d.job(id).memory, 48 << 20);
}

#[test]
fn a_cpuset_the_node_lacks_is_refused_at_submit() {
    if !root_or_skip("a_cpuset_the_node_lacks_is_refused_at_submit") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let o = d.cli(&["submit", "--cpuset", "1023", "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(125), "{}", out(&o));
    let e = err(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains("--cpuset 1023: this node has no CPU 1023 for jobs"),
        "{e}"
    );
    assert!(d.all_jobs().is_empty());
    // A CPU it has is fine.
    let o = d.cli(&["submit", "-q", "--cpuset", "0", "--", "/bin/true"]);
    let id = ids(&o)[0];
    assert_eq!(d.wait_state(id, State::Completed, T).exit_code, Some(0));
}

#[test]
fn a_compact_cluster_cannot_expand_past_what_the_daemon_holds() {
    if !root_or_skip("a_compact_cluster_cannot_expand_past_what_the_daemon_holds") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let user = nobody();
    // The attacker, another local user: a 1 MiB job repeated by 100000 empty patches is a
    // 2 MB request that would expand to 100 GB of checked jobs in the root daemon.
    let (code, body) = http_as(&d.sock, Some(user), "POST", "/v1/clusters", b"");
    let cluster = serde_json::from_str::<serde_json::Value>(body.trim())
        .ok()
        .and_then(|v| v["cluster"].as_u64())
        .unwrap_or_else(|| panic!("{code} {body}"));
    let mut spec = jobcell_spec::JobSpec::new(vec!["/bin/true".into()]);
    spec.user = jobcell_spec::UserSpec::Uid(user.0);
    spec.env.push(("PAD".into(), "x".repeat(1 << 20)));
    let req = serde_json::json!({
        "common": {"spec": spec, "hold": true},
        "procs": vec![serde_json::json!({}); 100_000],
    });
    let t = Instant::now();
    let (code, body) = http_as(
        &d.sock,
        Some(user),
        "POST",
        &format!("/v1/clusters/{cluster}/jobs"),
        &serde_json::to_vec(&req).unwrap(),
    );
    assert_eq!(code, 400, "{}", &body[..body.len().min(300)]);
    assert!(
        body.contains("the cluster's jobs come to more than 512 MiB"),
        "{body}"
    );
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert!(d.all_jobs().is_empty());
    // The daemon is still there for everyone.
    assert!(d.cli(&["status"]).status.success());
}

#[test]
fn an_exploding_requirements_is_refused_and_the_daemon_keeps_answering() {
    if !root_or_skip("an_exploding_requirements_is_refused_and_the_daemon_keeps_answering") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let work = TempDir::itest();
    // Another local user's file: each attribute adds the one before to itself, so
    // `a60 > 0` is 2^60 additions per job, for 1000 jobs.
    let mut file = String::from("executable = /bin/true\n+a0 = 1\n");
    for i in 1..=60 {
        file.push_str(&format!("+a{i} = a{} + a{}\n", i - 1, i - 1));
    }
    file.push_str("requirements = a60 > 0\nqueue 1000\n");
    let t = Instant::now();
    let o = d.cli_in(
        work.path(),
        Some(nobody()),
        &[],
        &["submit", "-"],
        Some(&file),
    );
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(125), "{}", out(&o));
    let e = err(&o);
    assert!(
        e.contains("requirements (a60 > 0): evaluation takes more than the node allows"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(d.all_jobs().is_empty());
    assert!(d.cli(&["status"]).status.success());
}

#[test]
fn a_job_that_cannot_start_is_failed_with_the_reason() {
    if !root_or_skip("a_job_that_cannot_start_is_failed_with_the_reason") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let o = d.cli(&["submit", "-q", "--", "/nonexistent/command"]);
    let id = ids(&o)[0];
    let j = d.wait_for(id, T, |j| j.state.terminal());
    assert_eq!(j.state, State::Failed, "{j:?}");
    let why = j.reason.unwrap_or_default();
    assert!(why.contains("/nonexistent/command"), "{why}");
    // A job's own exit status 127 is still its own.
    let o = d.cli(&["submit", "-q", "--", "/bin/sh", "-c", "exit 127"]);
    let id = ids(&o)[0];
    let j = d.wait_for(id, T, |j| j.state.terminal());
    assert_eq!((j.state, j.exit_code), (State::Completed, Some(127)));
}
