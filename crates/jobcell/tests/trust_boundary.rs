//! The daemon's trust boundary, attacked by a real second user and by jobs: the daemon's own
//! files (queue, lock, claims, results, default output) cannot be named as a job's output or
//! log, cannot be read by anyone but root, and nothing a job or user writes is ever taken for
//! a supervisor's pid. Needs root (the daemon runs jobs as other users); without it each test
//! prints SKIPPED and returns.

mod daemon_harness;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon_harness::*;
use jobcell_node::types::State;

const T: Duration = Duration::from_secs(30);

/// A second local user with a passwd entry (jobs run as their submitter, looked up by name).
fn user_a() -> Option<(u32, u32)> {
    test_user("jobcell-test-a")
}

/// Read `p` as `who` with `cat`: its bytes, or what cat said.
fn read_as(who: (u32, u32), p: &Path) -> Result<Vec<u8>, String> {
    let o = Command::new("cat")
        .arg(p)
        .uid(who.0)
        .gid(who.1)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if o.status.success() {
        Ok(o.stdout)
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn mode(p: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.permissions().mode() & 0o7777, m.uid())
}

/// A root process the test owns, to be named by a forged claim.
struct RootSleep(Child);

impl RootSleep {
    fn start() -> RootSleep {
        RootSleep(Command::new("sleep").arg("300").spawn().unwrap())
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
    fn claim(&self) -> String {
        let st = starttime(self.pid()).unwrap();
        format!(
            "{{\"supervisor\":{{\"pid\":{},\"starttime\":{st}}}}}",
            self.pid()
        )
    }
}

impl Drop for RootSleep {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn submit_as(d: &Daemon, who: Option<(u32, u32)>, args: &[&str]) -> u64 {
    let mut a = vec!["submit", "-q", "--cpus", "0.1", "--memory", "32"];
    a.extend_from_slice(args);
    let o = d.cli_as(who, &a);
    ids(&o)[0]
}

#[test]
fn naming_the_daemons_own_files_as_output_error_or_log_is_refused() {
    if !root_or_skip("naming_the_daemons_own_files_as_output_error_or_log_is_refused") {
        return;
    }
    let Some(a) = user_a() else {
        eprintln!("SKIPPED: naming_the_daemons_own_files: cannot create a test user");
        return;
    };
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let st = d.state.clone();
    // The user's first job, with its output in the daemon's job dir.
    let first = submit_as(&d, Some(a), &["--", "/bin/sh", "-c", "echo first-output"]);
    d.wait_state(first, State::Completed, T);
    let lock = std::fs::read(st.join("daemon.lock")).unwrap();
    let first_out = st.join(format!("jobs/{first}/stdout"));
    let first_result = st.join(format!("jobs/{first}/result-1.json"));
    let result_bytes = std::fs::read(&first_result).unwrap();
    assert_eq!(std::fs::read(&first_out).unwrap(), b"first-output\n");
    // Each target, as --output or --error; the next job's own claim is predictable.
    let next = first + 1;
    for (n, (flag, target)) in [
        ("--output", format!("{}/jobs/{next}/claim-1", st.display())),
        ("--error", st.join("daemon.lock").display().to_string()),
        ("--output", st.join("state.db").display().to_string()),
        ("--output", first_out.display().to_string()),
        ("--error", first_result.display().to_string()),
    ]
    .into_iter()
    .enumerate()
    {
        let id = submit_as(
            &d,
            Some(a),
            &[
                flag,
                &target,
                "--",
                "/bin/sh",
                "-c",
                "echo forged; echo forged >&2",
            ],
        );
        assert_eq!(id, next + n as u64);
        let j = d.wait_for(id, T, |j| j.state == State::Held || j.state.terminal());
        assert_eq!(
            j.state,
            State::Held,
            "{flag} {target}: the job ran ({j:?})\n{}",
            d.log()
        );
        let r = j.hold_reason.unwrap_or_default();
        assert!(
            r.contains(&target) && r.contains("Permission denied"),
            "{flag} {target}: {r}"
        );
        // The attempt's claim is still the supervisor's, and root's.
        let claim = st.join(format!("jobs/{id}/claim-1"));
        let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&claim).unwrap()).unwrap();
        assert!(c["supervisor"]["pid"].as_i64().is_some(), "{c}");
        assert_eq!(mode(&claim).1, 0);
    }
    // The HTCondor user log, pointed at a result: the event is dropped, the file untouched.
    let work = TempDir::new_in("/tmp");
    let file = format!(
        "executable = /bin/true\nrequest_memory = 32\nrequest_cpus = 0.1\nlog = {}\nqueue\n",
        first_result.display()
    );
    let o = d.cli_in(
        work.path(),
        Some(a),
        &[],
        &["submit", "-q", "-"],
        Some(&file),
    );
    let id = ids(&o)[0];
    d.wait_state(id, State::Completed, T);
    assert_eq!(std::fs::read(st.join("daemon.lock")).unwrap(), lock);
    assert_eq!(std::fs::read(&first_out).unwrap(), b"first-output\n");
    assert_eq!(std::fs::read(&first_result).unwrap(), result_bytes);
    let db = std::fs::read(st.join("state.db")).unwrap();
    assert!(db.starts_with(b"SQLite format 3\0"), "state.db overwritten");
    assert_eq!(mode(&st.join("state.db")).1, 0);
    assert_eq!(mode(&st.join("daemon.lock")).1, 0);
}

/// Waits until `p` holds exactly `want`.
fn wait_content(p: &Path, want: &str) -> bool {
    let t = Instant::now();
    while t.elapsed() < T {
        if std::fs::read_to_string(p).is_ok_and(|s| s == want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The whole chain as the user plays it: the job's output is its own claim, the job writes a
/// claim naming a root process, the daemon restarts, and the user removes the job.
#[test]
fn a_claim_forged_by_a_job_never_makes_root_signal_another_process() {
    if !root_or_skip("a_claim_forged_by_a_job_never_makes_root_signal_another_process") {
        return;
    }
    let Some(a) = user_a() else {
        eprintln!("SKIPPED: a_claim_forged_by_a_job: cannot create a test user");
        return;
    };
    let _g = serial();
    let mut d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    // Declared after the daemon: killed and reaped before the harness waits for supervisors.
    let mut victim = RootSleep::start();
    let claim = d.state.join("jobs/1/claim-1");
    let script = format!("printf '%s' '{}'; exec sleep 300", victim.claim());
    let id = submit_as(
        &d,
        Some(a),
        &[
            "--output",
            &claim.display().to_string(),
            "--",
            "/bin/sh",
            "-c",
            &script,
        ],
    );
    assert_eq!(id, 1);
    let j = d.wait_for(id, T, |j| {
        j.state != State::Queued && j.state != State::Starting
    });
    if j.state == State::Running {
        // The job got its claim as stdout: wait for the forgery to land.
        wait_content(&claim, &victim.claim());
    }
    d.kill9();
    d.restart();
    let o = d.cli_as(Some(a), &["rm", &id.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    let j = d.wait_for(id, T, |j| j.state.terminal());
    assert_eq!(j.state, State::Removed, "{j:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        victim.alive(),
        "root's process {} was signalled on the user's request",
        victim.pid()
    );
}

/// Whoever rewrites a running job's claim (here the test, as root: the claim is root's now),
/// a restarted daemon re-attaches to the supervisor it recorded itself and never signals the
/// process the claim names.
#[test]
fn a_restarted_daemon_trusts_its_own_record_of_a_supervisor_not_the_claim() {
    if !root_or_skip("a_restarted_daemon_trusts_its_own_record_of_a_supervisor_not_the_claim") {
        return;
    }
    let _g = serial();
    let mut d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let mut victim = RootSleep::start();
    let id = submit_as(&d, None, &["--", "/bin/sleep", "300"]);
    d.wait_state(id, State::Running, T);
    let (sup, sup_start) = d.supervisor_of(id);
    let claim = d.state.join(format!("jobs/{id}/claim-1"));
    d.kill9();
    std::fs::write(&claim, victim.claim()).unwrap();
    d.restart();
    // Still tracked: running, under its real supervisor.
    assert_eq!(d.job(id).state, State::Running, "{}", d.log());
    let o = d.cli(&["rm", &id.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    let j = d.wait_for(id, T, |j| j.state.terminal());
    assert_eq!(j.state, State::Removed, "{j:?}");
    // The real supervisor ended with its job; the named process lives.
    let t = Instant::now();
    while starttime(sup) == Some(sup_start) {
        assert!(t.elapsed() < T, "the job's supervisor {sup} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(victim.alive(), "the process the claim named was signalled");
    assert!(
        d.log().contains("not its supervisor"),
        "no warning in the log:\n{}",
        d.log()
    );
}

#[test]
fn the_daemons_records_are_closed_to_other_users_and_to_jobs() {
    if !root_or_skip("the_daemons_records_are_closed_to_other_users_and_to_jobs") {
        return;
    }
    let Some(a) = user_a() else {
        eprintln!("SKIPPED: the_daemons_records_are_closed: cannot create a test user");
        return;
    };
    let _g = serial();
    // Under /var/lib (not /tmp, which is private in jobs): the state dir's path exists in jobs.
    let d = Daemon::start_in(TempDir::itest(), &["--cpus", "2", "--memory", "2G"]);
    let st = d.state.clone();
    let nobody = nobody();
    // Root's job, run as the shared default user, with a token in its environment.
    let first = submit_as(
        &d,
        None,
        &[
            "-e",
            "TOKEN=tok-5ecret-7",
            "--",
            "/bin/sh",
            "-c",
            "echo output-of-the-first-job",
        ],
    );
    d.wait_state(first, State::Completed, T);
    let job_dir = st.join(format!("jobs/{first}"));
    let files = [
        st.join("state.db"),
        st.join("state.db-wal"),
        st.join("state.db-shm"),
        st.join("daemon.lock"),
        job_dir.join("claim-1"),
        job_dir.join("result-1.json"),
        job_dir.join("stdout"),
        job_dir.join("stderr"),
    ];
    // Another user cannot read them (nor list the state dir).
    for who in [a, nobody] {
        for f in &files {
            let r = read_as(who, f);
            assert!(
                r.as_ref().is_err_and(|e| e.contains("Permission denied")),
                "uid {} read {}: {:?}",
                who.0,
                f.display(),
                r.map(|b| String::from_utf8_lossy(&b).into_owned())
            );
        }
        let ls = Command::new("ls")
            .arg(&st)
            .uid(who.0)
            .gid(who.1)
            .output()
            .unwrap();
        assert!(
            !ls.status.success(),
            "uid {} listed {}",
            who.0,
            st.display()
        );
    }
    // Nor can a job: one as the same shared user as the first job, one as the user.
    let probe = files
        .iter()
        .map(|f| {
            format!(
                "cat '{}' >/dev/null 2>&1 && echo READ {};",
                f.display(),
                f.display()
            )
        })
        .collect::<String>()
        + "echo probed; echo its-own-output-by-name >> /dev/stdout";
    let by_root = submit_as(&d, None, &["--", "/bin/sh", "-c", &probe]);
    let by_a = submit_as(&d, Some(a), &["--", "/bin/sh", "-c", &probe]);
    for id in [by_root, by_a] {
        d.wait_state(id, State::Completed, T);
        let o = d.cli(&["output", &id.to_string()]);
        let text = out(&o);
        assert!(text.contains("probed"), "job {id}: {text}");
        // A job may still reopen its own output by name.
        assert!(text.contains("its-own-output-by-name"), "job {id}: {text}");
        assert!(
            !text.contains("READ"),
            "job {id} read the daemon's files:\n{text}"
        );
    }
    // Modes: traversable state dir, closed job dirs, root's files.
    assert_eq!(mode(&st), (0o711, 0), "{}", st.display());
    assert_eq!(mode(&st.join("jobs")), (0o700, 0));
    assert_eq!(mode(&job_dir), (0o700, 0));
    for f in &files {
        let (m, uid) = mode(f);
        // Default output also lets its job's user write (not read) it, by ACL (mask: g=w).
        let output = f.ends_with("stdout") || f.ends_with("stderr");
        assert!(
            uid == 0 && (m == 0o600 || (output && m == 0o620)),
            "{}: {m:o} uid {uid}",
            f.display()
        );
    }
    // The owner still reads their output through the API.
    let o = d.cli(&["output", &first.to_string()]);
    assert_eq!(out(&o), "output-of-the-first-job\n");
    let o = d.cli_as(Some(a), &["output", &by_a.to_string()]);
    assert!(out(&o).contains("probed"), "{}", err(&o));
}

/// A daemon killed before it recorded a supervisor has only the claim to go by: it attaches
/// only to a process in jobcell's supervisors cgroup; a claim naming any other is recorded
/// as a lost attempt, and nothing is signalled.
#[test]
fn an_unrecorded_claim_is_trusted_only_from_the_supervisors_cgroup() {
    if !root_or_skip("an_unrecorded_claim_is_trusted_only_from_the_supervisors_cgroup") {
        return;
    }
    let _g = serial();
    let mut d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let mut victim = RootSleep::start();
    let id = submit_as(&d, None, &["--", "/bin/sleep", "300"]);
    d.wait_state(id, State::Running, T);
    let (sup, sup_start) = d.supervisor_of(id);
    d.kill9();
    // As if the daemon died between spawning the supervisor and recording it.
    {
        let db = jobcell_node::store::Store::open(&d.state.join("state.db")).unwrap();
        let changed = db
            .conn
            .execute(
                "UPDATE jobs SET state = 'starting', sup_pid = NULL, sup_start = NULL WHERE id = ?1",
                [id as i64],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    std::fs::write(d.state.join(format!("jobs/{id}/claim-1")), victim.claim()).unwrap();
    d.restart();
    let j = d.wait_for(id, T, |j| j.state.terminal());
    // The real supervisor is beyond the daemon's reach now: ended here, by its pid.
    if starttime(sup) == Some(sup_start) {
        // SAFETY: kill takes integers only; the pid was just checked (same start time) to be this
        // test's supervisor.
        unsafe { libc::kill(sup, libc::SIGTERM) };
    }
    let t = Instant::now();
    while starttime(sup) == Some(sup_start) {
        assert!(t.elapsed() < T, "supervisor {sup} does not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(j.state, State::Failed, "{j:?}\n{}", d.log());
    let why = j.reason.clone().unwrap_or_default();
    assert!(why.contains("not a jobcell supervisor"), "{why}");
    let o = d.cli(&["rm", &id.to_string()]);
    assert!(!o.status.success(), "a finished job was removed");
    std::thread::sleep(Duration::from_millis(300));
    assert!(victim.alive(), "the process the claim named was signalled");
    assert!(d.log().contains("not its supervisor"), "{}", d.log());
}

/// A state dir left open by an older daemon (world-readable queue and job dirs, output given
/// to the job's user) is closed when the daemon starts.
#[test]
fn an_older_state_dir_is_closed_at_daemon_start() {
    if !root_or_skip("an_older_state_dir_is_closed_at_daemon_start") {
        return;
    }
    let _g = serial();
    let mut d = Daemon::start(&["--cpus", "1", "--memory", "1G"]);
    let id = submit_as(&d, None, &["--", "/bin/echo", "hi"]);
    d.wait_state(id, State::Completed, T);
    d.stop();
    let st = d.state.clone();
    let job_dir = st.join(format!("jobs/{id}"));
    let chmod =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    // As an older daemon left it.
    chmod(&st, 0o755);
    chmod(&st.join("jobs"), 0o755);
    chmod(&job_dir, 0o755);
    for f in ["state.db", "daemon.lock"] {
        chmod(&st.join(f), 0o644);
    }
    for f in ["claim-1", "result-1.json", "stdout", "stderr"] {
        chmod(&job_dir.join(f), 0o644);
    }
    let nobody = nobody();
    std::os::unix::fs::chown(job_dir.join("stdout"), Some(nobody.0), Some(nobody.1)).unwrap();
    d.restart();
    assert_eq!(mode(&st), (0o711, 0));
    assert_eq!(mode(&st.join("jobs")), (0o700, 0));
    assert_eq!(mode(&job_dir), (0o700, 0));
    for f in [st.join("state.db"), st.join("daemon.lock")] {
        assert_eq!(mode(&f), (0o600, 0), "{}", f.display());
    }
    for f in ["claim-1", "result-1.json", "stdout", "stderr"] {
        assert_eq!(mode(&job_dir.join(f)), (0o600, 0), "{f}");
    }
    // The owner still reads the output.
    assert_eq!(out(&d.cli(&["output", &id.to_string()])), "hi\n");
}
