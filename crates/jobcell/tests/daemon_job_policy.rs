//! HTCondor job policy expressions end to end, with real jobs and a daemon evaluating the
//! periodic ones every second: periodic_hold on a running job's memory and periodic_release,
//! max_retries and retry_until, periodic_remove on wall time, on_exit_hold, leave_in_queue
//! (across a restart), allowed_execute_duration, and a user's costly expression that must not
//! stall the daemon. Needs root; without it each test prints SKIPPED.

mod daemon_harness;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use daemon_harness::*;
use jobcell_node::types::State;

const T: Duration = Duration::from_secs(60);

const CONFIG: &str = "[policy]\nperiodic_expr_interval = \"1s\"\n";

/// A daemon evaluating periodic expressions every second, and a work dir anyone may write
/// (jobs run as nobody).
fn setup() -> (Daemon, TempDir) {
    let d = Daemon::start_with_config(&[], Some(CONFIG));
    let work = TempDir::itest();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // Each attempt may run as a uid of its own: the file the attempts append to is anyone's.
    let runs = work.path().join("runs");
    std::fs::write(&runs, "").unwrap();
    std::fs::set_permissions(&runs, std::fs::Permissions::from_mode(0o666)).unwrap();
    (d, work)
}

/// Submits `file` (as root, from `work`); the job's id.
fn submit(d: &Daemon, work: &Path, file: &str) -> u64 {
    let o = d.cli_in(work, None, &[], &["submit", "-q", "-"], Some(file));
    assert!(o.status.success(), "{}", err(&o));
    ids(&o)[0]
}

fn q(d: &Daemon) -> String {
    let o = d.cli(&["q", "-nobatch"]);
    assert!(o.status.success(), "{}", err(&o));
    out(&o)
}

fn history(d: &Daemon) -> String {
    let o = d.cli(&["history"]);
    assert!(o.status.success(), "{}", err(&o));
    out(&o)
}

/// Lines of the file the job's attempts append to.
fn runs(work: &Path) -> usize {
    std::fs::read_to_string(work.join("runs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn periodic_hold_on_memory_then_periodic_release() {
    if !root_or_skip("periodic_hold_on_memory_then_periodic_release") {
        return;
    }
    let _g = serial();
    let (d, work) = setup();
    // Touches 200 MiB, then waits: held while running (MemoryUsage read from its cgroup),
    // released once (NumJobStarts < 2), held again on its second run.
    let file = "executable = /usr/bin/perl\n\
                arguments = \"-e '$x = \"\"x\"\" x (200 << 20); sleep 120'\"\n\
                request_memory = 1024\n\
                periodic_hold = MemoryUsage > 100\n\
                periodic_hold_subcode = 9\n\
                periodic_release = NumJobStarts < 2\n\
                queue\n";
    let id = submit(&d, work.path(), file);
    let reason = "The job attribute PeriodicHold expression 'MemoryUsage > 100' evaluated to TRUE";
    let j = d.wait_for(id, T, |j| j.attempt == 2 && j.state == State::Held);
    assert_eq!(j.hold_reason.as_deref(), Some(reason), "{j:?}");
    let ad = d.ad(id);
    assert_eq!(ad["HoldReasonCode"], "3", "{ad:?}");
    assert_eq!(ad["HoldReasonSubCode"], "9", "{ad:?}");
    assert_eq!(ad["NumJobStarts"], "2", "{ad:?}");
    assert_eq!(ad["PeriodicHold"], "MemoryUsage > 100", "{ad:?}");
    let shown = q(&d);
    assert!(shown.contains(&format!("hold: {reason}")), "{shown}");
    // Stays held: NumJobStarts < 2 is false now.
    std::thread::sleep(Duration::from_secs(3));
    let j = d.job(id);
    assert_eq!((j.state, j.attempt), (State::Held, 2), "{j:?}");
    let events: Vec<jobcell_node::types::Event> = d
        .client()
        .call("GET", &format!("/v1/jobs/{id}/events"), None)
        .unwrap();
    assert_eq!(
        events.iter().filter(|e| e.kind == "released").count(),
        1,
        "{events:?}"
    );
    let o = d.cli(&["rm", &id.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
}

#[test]
fn max_retries_runs_a_failing_job_n_plus_one_times() {
    if !root_or_skip("max_retries_runs_a_failing_job_n_plus_one_times") {
        return;
    }
    let _g = serial();
    let (d, work) = setup();
    let file = format!(
        "executable = /bin/sh\n\
         arguments = \"-c 'echo x >> {}/runs; exit 1'\"\n\
         max_retries = 2\n\
         queue\n",
        work.path().display()
    );
    let id = submit(&d, work.path(), &file);
    let j = d.wait_state(id, State::Completed, T);
    assert_eq!(runs(work.path()), 3, "{j:?} {:?}", d.ad(id));
    assert_eq!((j.attempt, j.exit_code), (3, Some(1)), "{j:?}");
    let ad = d.ad(id);
    assert_eq!(ad["NumJobCompletions"], "3", "{ad:?}");
    assert_eq!(ad["JobMaxRetries"], "2", "{ad:?}");
    let h = history(&d);
    assert!(h.contains(&format!("{id:>7} ")), "{h}");
}

#[test]
fn retry_until_stops_the_retries_early() {
    if !root_or_skip("retry_until_stops_the_retries_early") {
        return;
    }
    let _g = serial();
    let (d, work) = setup();
    // Exits with the number of its run: 1, then 2, which retry_until accepts.
    let file = format!(
        "executable = /bin/sh\n\
         arguments = \"-c 'echo x >> {0}/runs; exit `wc -l < {0}/runs`'\"\n\
         max_retries = 5\n\
         retry_until = 2\n\
         queue\n",
        work.path().display()
    );
    let id = submit(&d, work.path(), &file);
    let j = d.wait_state(id, State::Completed, T);
    assert_eq!(runs(work.path()), 2);
    assert_eq!((j.attempt, j.exit_code), (2, Some(2)), "{j:?}");
    // Between the runs it was queued again, saying why.
    let events: Vec<jobcell_node::types::Event> = d
        .client()
        .call("GET", &format!("/v1/jobs/{id}/events"), None)
        .unwrap();
    let requeued: Vec<_> = events.iter().filter(|e| e.kind == "requeued").collect();
    assert_eq!(requeued.len(), 1, "{events:?}");
    let why = requeued[0].detail.as_ref().unwrap()["why"]
        .as_str()
        .unwrap();
    assert_eq!(
        why,
        "The job attribute OnExitRemove expression 'NumJobCompletions > JobMaxRetries || ExitCode is 0 || ExitCode is 2' evaluated to FALSE"
    );
}

#[test]
fn periodic_remove_after_wall_time() {
    if !root_or_skip("periodic_remove_after_wall_time") {
        return;
    }
    let _g = serial();
    let (d, work) = setup();
    let file = "executable = /bin/sleep\narguments = 120\nperiodic_remove = RemoteWallClockTime > 2\nqueue\n";
    let t = Instant::now();
    let id = submit(&d, work.path(), file);
    let j = d.wait_state(id, State::Removed, T);
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let reason =
        "The job attribute PeriodicRemove expression 'RemoteWallClockTime > 2' evaluated to TRUE";
    assert_eq!(j.reason.as_deref(), Some(reason), "{j:?}");
    let h = history(&d);
    assert!(h.contains(&format!("reason: {reason}")), "{h}");
    assert_eq!(d.ad(id)["RemoveReason"], format!("\"{reason}\""));
}

#[test]
fn on_exit_hold_holds_with_htcondor_codes() {
    if !root_or_skip("on_exit_hold_holds_with_htcondor_codes") {
        return;
    }
    let _g = serial();
    let (mut d, work) = setup();
    let file = "executable = /bin/sh\narguments = \"-c 'exit 3'\"\n\
                on_exit_hold = ExitCode == 3\non_exit_hold_subcode = 7\nqueue\n";
    let id = submit(&d, work.path(), file);
    let j = d.wait_state(id, State::Held, T);
    let reason = "The job attribute OnExitHold expression 'ExitCode == 3' evaluated to TRUE";
    assert_eq!(j.hold_reason.as_deref(), Some(reason), "{j:?}");
    assert_eq!(j.exit_code, Some(3));
    let ad = d.ad(id);
    assert_eq!(
        (
            ad["HoldReasonCode"].as_str(),
            ad["HoldReasonSubCode"].as_str()
        ),
        ("3", "7"),
        "{ad:?}"
    );
    assert!(q(&d).contains(&format!("hold: {reason}")));
    // The codes and counts are kept across a restart.
    d.stop();
    d.restart();
    let ad = d.ad(id);
    assert_eq!(
        (
            ad["HoldReasonCode"].as_str(),
            ad["HoldReasonSubCode"].as_str(),
            ad["NumJobCompletions"].as_str()
        ),
        ("3", "7", "1"),
        "{ad:?}"
    );
    // A reason of its own.
    let file = "executable = /bin/sh\narguments = \"-c 'exit 4'\"\n\
                on_exit_hold = ExitCode != 0\n\
                on_exit_hold_reason = strcat(\"exited with \", ExitCode)\nqueue\n";
    let id2 = submit(&d, work.path(), file);
    let j = d.wait_state(id2, State::Held, T);
    assert_eq!(j.hold_reason.as_deref(), Some("exited with 4"), "{j:?}");
    for id in [id, id2] {
        assert!(d.cli(&["rm", &id.to_string()]).status.success());
    }
}

#[test]
fn leave_in_queue_keeps_a_completed_job_until_rm_or_false() {
    if !root_or_skip("leave_in_queue_keeps_a_completed_job_until_rm_or_false") {
        return;
    }
    let _g = serial();
    let (mut d, work) = setup();
    let kept = submit(
        &d,
        work.path(),
        "executable = /bin/true\nleave_in_queue = true\nqueue\n",
    );
    let brief = submit(
        &d,
        work.path(),
        "executable = /bin/true\nleave_in_queue = time() - CompletionDate < 3\nqueue\n",
    );
    for id in [kept, brief] {
        d.wait_for(id, T, |j| j.state == State::Completed);
    }
    let shown = q(&d);
    assert!(
        shown.contains(&format!("{kept:>7} ")) && shown.contains("completed"),
        "{shown}"
    );
    assert!(!history(&d).contains(&format!("{kept:>7} ")));
    // The second leaves when its expression turns false.
    let t = Instant::now();
    while d.active().iter().any(|j| j.id == brief) {
        assert!(t.elapsed() < T, "job {brief} never left the queue");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(history(&d).contains(&format!("{brief:>7} ")));
    // Still there after a restart.
    d.stop();
    d.restart();
    let a = d.active();
    assert!(
        a.iter()
            .any(|j| j.id == kept && j.state == State::Completed),
        "{a:?}"
    );
    let o = d.cli(&["hold", &kept.to_string()]);
    assert!(!o.status.success());
    assert!(err(&o).contains("it has completed"), "{}", err(&o));
    let o = d.cli(&["rm", &kept.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(!d.active().iter().any(|j| j.id == kept));
    let h = history(&d);
    assert!(h.contains(&format!("{kept:>7} ")), "{h}");
    assert_eq!(d.job(kept).state, State::Completed);
}

#[test]
fn allowed_execute_duration_holds_with_code_47() {
    if !root_or_skip("allowed_execute_duration_holds_with_code_47") {
        return;
    }
    let _g = serial();
    let (d, work) = setup();
    let id = submit(
        &d,
        work.path(),
        "executable = /bin/sleep\narguments = 120\nallowed_execute_duration = 2\nqueue\n",
    );
    let j = d.wait_state(id, State::Held, T);
    assert_eq!(
        j.hold_reason.as_deref(),
        Some("The job exceeded allowed execute duration of 2s"),
        "{j:?}"
    );
    assert_eq!(d.ad(id)["HoldReasonCode"], "47");
    assert!(d.cli(&["rm", &id.to_string()]).status.success());
}

#[test]
fn a_bad_policy_expression_is_refused_at_its_line() {
    if !root_or_skip("a_bad_policy_expression_is_refused_at_its_line") {
        return;
    }
    let _g = serial();
    let (d, work) = setup();
    let o = d.cli_in(
        work.path(),
        None,
        &[],
        &["submit", "-q", "-"],
        Some("executable = /bin/true\nperiodic_hold = MemoryUsage >\nqueue\n"),
    );
    assert!(!o.status.success());
    let e = err(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains(":2:") || e.contains("line 2"), "{e}");
    assert!(e.contains("periodic_hold"), "{e}");
    assert!(d.active().is_empty());
}

/// A user's policy expression that would take 2^40 steps is cut short: the daemon keeps
/// answering everyone, and the expression is not taken as true.
#[test]
fn a_users_costly_periodic_expression_does_not_stall_the_daemon() {
    if !root_or_skip("a_users_costly_periodic_expression_does_not_stall_the_daemon") {
        return;
    }
    let _g = serial();
    let (d, work) = setup();
    let mut file = String::from("executable = /bin/sleep\narguments = 120\n+A0 = 1\n");
    for i in 1..=40 {
        file += &format!("+A{i} = A{} + A{}\n", i - 1, i - 1);
    }
    file += "periodic_hold = A40 > 0\nqueue\n";
    let Some(user) = test_user_or_skip(
        "a_users_costly_periodic_expression_does_not_stall_the_daemon",
        "jobcell-test-b",
    ) else {
        return;
    };
    let o = d.cli_in(
        work.path(),
        Some(user),
        &[],
        &["submit", "-q", "-"],
        Some(&file),
    );
    assert!(o.status.success(), "{}", err(&o));
    let id = ids(&o)[0];
    d.wait_state(id, State::Running, T);
    // Several ticks; each request must be answered promptly.
    for _ in 0..6 {
        let t = Instant::now();
        let o = d.cli(&["q"]);
        assert!(o.status.success(), "{}", err(&o));
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "q took {:?} while the policy was evaluated",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let j = d.job(id);
    assert_eq!(j.state, State::Running, "{j:?}");
    let o = d.cli_as(Some(user), &["rm", &id.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
}
