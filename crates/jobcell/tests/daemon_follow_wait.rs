//! Watching jobs instead of polling: `jobcell output -f`, `jobcell wait` and `jobcell submit
//! --wait` against a real daemon and real jobs. Needs root (jobs run as other users, in
//! cgroups); without it each test prints SKIPPED and returns.

mod daemon_harness;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_harness::*;
use jobcell_node::types::State;

const T: Duration = Duration::from_secs(60);

fn start() -> Daemon {
    Daemon::start(&["--cpus", "2", "--memory", "2G"])
}

/// `submit -q` of a shell command as the caller; its job id.
fn submit_sh(d: &Daemon, uid: Option<(u32, u32)>, script: &str) -> u64 {
    let o = d.cli_as(
        uid,
        &[
            "submit", "-q", "--cpus", "0.1", "--memory", "32", "--", "/bin/sh", "-c", script,
        ],
    );
    ids(&o)[0]
}

#[test]
fn a_follower_gets_the_lines_in_order_as_they_are_written_and_ends_with_the_job() {
    let test = "a_follower_gets_the_lines_in_order_as_they_are_written_and_ends_with_the_job";
    if !root_or_skip(test) {
        return;
    }
    let _g = serial();
    let d = start();
    // Ten lines over ~1 s, then a failing exit: the job's status is not the follower's.
    let id = submit_sh(
        &d,
        None,
        "for i in 1 2 3 4 5 6 7 8 9 10; do echo line-$i; sleep 0.1; done; echo to-stderr >&2; exit 3",
    );
    let t0 = Instant::now();
    let mut f = Command::new(BIN)
        .args(["output", "-f", &id.to_string()])
        .env("JOBCELL_SOCKET", &d.sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut arrivals = Vec::new();
    for line in BufReader::new(f.stdout.take().unwrap()).lines() {
        arrivals.push((line.unwrap(), t0.elapsed()));
    }
    let st = f.wait().unwrap();
    let ended_after = t0.elapsed();
    let mut e = String::new();
    std::io::Read::read_to_string(&mut f.stderr.take().unwrap(), &mut e).unwrap();
    assert!(st.success(), "follower: {st}: {e}");
    let lines: Vec<&str> = arrivals.iter().map(|(l, _)| l.as_str()).collect();
    let want: Vec<String> = (1..=10).map(|i| format!("line-{i}")).collect();
    assert_eq!(lines, want, "stderr: {e}");
    // Streamed, not read once at the end: the first line came well before the last.
    let spread = arrivals[9].1 - arrivals[0].1;
    assert!(
        spread >= Duration::from_millis(500),
        "lines came within {spread:?}"
    );
    // The follower ended because the job did, and soon after.
    let j = d.job(id);
    assert_eq!(j.state, State::Completed);
    assert_eq!(j.exit_code, Some(3));
    assert!(ended_after < Duration::from_secs(20), "{ended_after:?}");
    // Following a job of ~1.5 s is one request (a stream), not a poll per line.
    let id2 = submit_sh(&d, None, "for i in 1 2 3; do echo x; sleep 0.5; done");
    if let Some((o, n)) = connections_of(&d, &["output", "-f", &id2.to_string()]) {
        assert!(o.status.success(), "{}", err(&o));
        assert_eq!(out(&o), "x\nx\nx\n");
        assert_eq!(n, 1, "connections of one follower");
    }
    // --stderr follows the other stream; a finished job's is printed whole at once.
    let o = d.cli(&["output", "--follow", "--stderr", &id.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "to-stderr\n");
}

#[test]
fn a_follower_of_a_held_job_ends_at_once_and_one_of_a_removed_job_ends_with_it() {
    let test = "a_follower_of_a_held_job_ends_at_once_and_one_of_a_removed_job_ends_with_it";
    if !root_or_skip(test) {
        return;
    }
    let _g = serial();
    let d = start();
    let o = d.cli(&[
        "submit",
        "-q",
        "--hold",
        "--memory",
        "32",
        "--",
        "/bin/sh",
        "-c",
        "echo started; sleep 60",
    ]);
    let id = ids(&o)[0];
    // A held job writes nothing more until it is released: its follower ends.
    let o = d.cli(&["output", "-f", &id.to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(out(&o), "");
    assert!(d.cli(&["release", &id.to_string()]).status.success());
    let mut f = follower(&d, id);
    let mut first = String::new();
    BufReader::new(f.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "started\n");
    assert!(f.try_wait().unwrap().is_none(), "the job still runs");
    assert!(d.cli(&["rm", &id.to_string()]).status.success());
    let t = Instant::now();
    let st = loop {
        if let Some(st) = f.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < T, "the follower did not end with the job");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success(), "{st}");
    assert_eq!(d.job(id).state, State::Removed);
}

fn follower(d: &Daemon, id: u64) -> std::process::Child {
    Command::new(BIN)
        .args(["output", "-f", &id.to_string()])
        .env("JOBCELL_SOCKET", &d.sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs the CLI under strace and counts its connections to the daemon: a watcher must not
/// poll. None (said loudly) without strace.
fn connections_of(d: &Daemon, args: &[&str]) -> Option<(std::process::Output, usize)> {
    let log = d.dir.path().join(format!("strace-{}.log", args[0]));
    let o = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=connect", "-o"])
        .arg(&log)
        .arg(BIN)
        .args(args)
        .env("JOBCELL_SOCKET", &d.sock)
        .output();
    let o = match o {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIPPED (the polling check): strace: {e}");
            return None;
        }
    };
    let sock = d.sock.to_string_lossy().into_owned();
    let n = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("connect(") && l.contains(&sock))
        .count();
    Some((o, n))
}

#[test]
fn wait_on_two_jobs_exits_with_the_first_failures_code() {
    if !root_or_skip("wait_on_two_jobs_exits_with_the_first_failures_code") {
        return;
    }
    let _g = serial();
    let d = start();
    let ok = submit_sh(&d, None, "sleep 0.5; exit 0");
    let bad = submit_sh(&d, None, "sleep 1; exit 7");
    let t = Instant::now();
    let o = d.cli(&["wait", &ok.to_string(), &bad.to_string()]);
    assert_eq!(o.status.code(), Some(7), "{}{}", out(&o), err(&o));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert!(
        out(&o).contains(&format!("Job {bad} completed, exit code 7")),
        "{}",
        out(&o)
    );
    for id in [ok, bad] {
        assert_eq!(d.job(id).state, State::Completed);
    }
    // Ended jobs answer at once; the cluster form names the same jobs.
    let o = d.cli(&["wait", "-q", &ok.to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(out(&o), "");
    let j = d.job(bad);
    let o = d.cli(&["wait", &format!("{}.", j.cluster)]);
    assert_eq!(o.status.code(), Some(7), "{}", err(&o));
    // A removed job is a failure without a code: 1.
    let gone = submit_sh(&d, None, "sleep 60");
    d.wait_state(gone, State::Running, T);
    assert!(d.cli(&["rm", &gone.to_string()]).status.success());
    let o = d.cli(&["wait", &ok.to_string(), &gone.to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    // A job that does not exist: one line, jobcell's own error status.
    let o = d.cli(&["wait", "999"]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(err(&o).trim().lines().count(), 1, "{}", err(&o));
    assert!(err(&o).contains("no job 999"), "{}", err(&o));
}

#[test]
fn wait_gives_up_after_its_timeout_with_124_and_a_held_job_ends_it_only_if_asked() {
    let test = "wait_gives_up_after_its_timeout_with_124_and_a_held_job_ends_it_only_if_asked";
    if !root_or_skip(test) {
        return;
    }
    let _g = serial();
    let d = start();
    let id = submit_sh(&d, None, "sleep 60");
    d.wait_state(id, State::Running, T);
    let t = Instant::now();
    let o = d.cli(&["wait", "--timeout", "1.5", &id.to_string()]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(124), "{}", err(&o));
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let e = err(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains(&format!("job {id} has not ended")) && e.contains("running"),
        "{e}"
    );
    // Three seconds of waiting are one long-poll, not a request per tick.
    if let Some((o, n)) = connections_of(&d, &["wait", "--timeout", "3", &id.to_string()]) {
        assert_eq!(o.status.code(), Some(124), "{}", err(&o));
        assert!(n <= 2, "{n} connections to the daemon in 3 s of waiting");
    }
    // Held: not ended for a plain wait, a failure with --held-ends.
    assert!(d.cli(&["hold", &id.to_string()]).status.success());
    d.wait_state(id, State::Held, T);
    let o = d.cli(&["wait", "--timeout", "1", &id.to_string()]);
    assert_eq!(o.status.code(), Some(124), "{}", err(&o));
    let o = d.cli(&["wait", "--held-ends", &id.to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(out(&o).contains("held"), "{}", out(&o));
    assert!(d.cli(&["rm", &id.to_string()]).status.success());
}

#[test]
fn submit_wait_exits_with_the_jobs_status() {
    if !root_or_skip("submit_wait_exits_with_the_jobs_status") {
        return;
    }
    let _g = serial();
    let d = start();
    let o = d.cli(&[
        "submit",
        "--wait",
        "-q",
        "--memory",
        "32",
        "--",
        "/bin/sh",
        "-c",
        "sleep 0.3; exit 5",
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", err(&o));
    let id: u64 = out(&o).trim().parse().expect("-q prints the id alone");
    assert_eq!(d.job(id).state, State::Completed);
    let o = d.cli(&[
        "submit",
        "--wait",
        "--memory",
        "32",
        "--count",
        "2",
        "--",
        "/bin/true",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains("completed, exit code 0"), "{}", out(&o));
    // A submit file's cluster too.
    let o = d.cli_in(
        std::path::Path::new("/"),
        None,
        &[],
        &["submit", "--wait", "-q", "-"],
        Some("executable = /bin/sh\narguments = \"-c 'exit 4'\"\nrequest_memory = 32\nqueue 1\n"),
    );
    assert_eq!(o.status.code(), Some(4), "{}{}", out(&o), err(&o));
}

#[test]
fn another_user_cannot_follow_or_read_your_job_but_root_can() {
    let test = "another_user_cannot_follow_or_read_your_job_but_root_can";
    if !root_or_skip(test) {
        return;
    }
    let Some((owner, other)) = test_users_or_skip(test) else {
        return;
    };
    let _g = serial();
    let d = start();
    let id = submit_sh(&d, Some(owner), "echo secret-of-a; sleep 60");
    d.wait_state(id, State::Running, T);
    let o = d.cli_as(Some(other), &["output", "-f", &id.to_string()]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    let e = err(&o);
    assert!(
        e.contains("belongs to jobcell-test-a") && e.contains("only its owner or root"),
        "{e}"
    );
    assert!(!out(&o).contains("secret"), "{}", out(&o));
    let o = d.cli_as(Some(other), &["output", "-f", "--stderr", &id.to_string()]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    // Root follows it, and its follower ends when the owner removes the job.
    let mut f = Command::new(BIN)
        .args(["output", "-f", &id.to_string()])
        .env("JOBCELL_SOCKET", &d.sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(f.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "secret-of-a\n");
    assert!(d
        .cli_as(Some(owner), &["rm", &id.to_string()])
        .status
        .success());
    let t = Instant::now();
    while f.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < T, "root's follower did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_wait_outlives_a_daemon_restart() {
    if !root_or_skip("a_wait_outlives_a_daemon_restart") {
        return;
    }
    let _g = serial();
    let mut d = start();
    let id = submit_sh(&d, None, "sleep 3; exit 6");
    d.wait_state(id, State::Running, T);
    let w = Command::new(BIN)
        .args(["wait", &id.to_string()])
        .env("JOBCELL_SOCKET", &d.sock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The job keeps running under its supervisor; the waiter asks the new daemon.
    d.stop();
    d.restart();
    let o = w.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(6), "{}", err(&o));
    assert_eq!(d.job(id).state, State::Completed);
}
