//! `jobcell submit FILE` end to end: HTCondor submit files queued in a real daemon as one
//! cluster, run by real supervisors; files opened as the job's user; the HTCondor user log;
//! `jobcell q -l`. Needs root; without it each test prints SKIPPED.

mod daemon_harness;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use daemon_harness::*;
use jobcell_node::types::State;

const T: Duration = Duration::from_secs(60);

fn chmod(p: &std::path::Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_submit_file_is_one_cluster_with_its_files_environment_and_user_log() {
    if !root_or_skip("a_submit_file_is_one_cluster_with_its_files_environment_and_user_log") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let work = TempDir::itest();
    let sub = work.path().join("run");
    std::fs::create_dir(&sub).unwrap();
    chmod(&sub, 0o777);
    std::fs::write(sub.join("in.txt"), "the input\n").unwrap();
    std::fs::write(sub.join("data.txt"), "transferred\n").unwrap();
    // Runs in initialdir (no transfer): procs 0 and 1; one with transfer: proc 2.
    let file = "\
universe = vanilla
executable = /bin/sh
arguments = \"-c 'echo proc=$(Process) cluster=$(Cluster) pwd=$PWD greeting=$GREETING from_env=$JOBCELL_T_VAR; cat; echo to-stderr >&2'\"
environment = \"GREETING='hi there'\"
getenv = JOBCELL_T_*
initialdir = run
input = in.txt
output = out.$(Process)
error = err.$(Process)
log = cluster.log
request_cpus = 0.1
request_memory = 48
priority = 3
+Project = \"physics\"
+Answer = 42
queue 2

transfer_input_files = data.txt
should_transfer_files = YES
arguments = \"-c 'pwd; cat data.txt; echo made-in-scratch > result.txt'\"
queue
";
    std::fs::write(work.path().join("job.sub"), file).unwrap();
    let o = d.cli_in(
        work.path(),
        None,
        &[("JOBCELL_T_VAR", "imported")],
        &["submit", "job.sub"],
        None,
    );
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    let cluster: u64 = text
        .split("submitted to cluster ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no cluster in: {text}"));
    assert!(text.contains("3 job(s) submitted to cluster"), "{text}");
    let jobs: Vec<_> = d
        .all_jobs()
        .into_iter()
        .filter(|j| j.cluster == cluster)
        .collect();
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    let mut by_proc = jobs.clone();
    by_proc.sort_by_key(|j| j.proc);
    for (i, j) in by_proc.iter().enumerate() {
        assert_eq!(j.proc, i as u64);
        assert_eq!(j.priority, 3);
        assert_eq!(j.memory, 48 << 20);
        assert!((j.cpus - 0.1).abs() < 1e-9);
        let done = d.wait_for(j.id, T, |j| j.state.terminal());
        assert_eq!(done.state, State::Completed, "{done:?}\n{}", d.log());
        assert_eq!(done.exit_code, Some(0));
    }
    let (nobody_uid, _) = nobody();
    for p in 0..2 {
        let o = std::fs::read_to_string(sub.join(format!("out.{p}"))).unwrap();
        assert_eq!(
            o,
            format!(
                "proc={p} cluster={cluster} pwd={} greeting=hi there from_env=imported\nthe input\n",
                sub.display()
            )
        );
        let e = std::fs::read_to_string(sub.join(format!("err.{p}"))).unwrap();
        assert_eq!(e, "to-stderr\n");
        assert_eq!(owner_of(&sub.join(format!("out.{p}"))), nobody_uid);
    }
    // Proc 2 ran in its scratch dir with the input there; what it made came back.
    let o2 = std::fs::read_to_string(sub.join("out.2")).unwrap();
    assert!(
        o2.starts_with(&format!("{}/job-", d.scratch.display())),
        "{o2}"
    );
    assert!(o2.ends_with("transferred\n"), "{o2}");
    assert_eq!(
        std::fs::read_to_string(sub.join("result.txt")).unwrap(),
        "made-in-scratch\n"
    );
    assert_eq!(owner_of(&sub.join("result.txt")), nobody_uid);
    // Its scratch dir is gone.
    assert_eq!(std::fs::read_dir(&d.scratch).unwrap().count(), 0);

    // The user log, as the job's user, with HTCondor's events for every proc.
    let log_path = sub.join("cluster.log");
    assert_eq!(owner_of(&log_path), nobody_uid);
    let t = std::time::Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap();
        if log.matches("005 (").count() == 3 || t.elapsed() > T {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for p in 0..3 {
        let id = format!("({cluster:03}.{p:03}.000)");
        for code in ["000", "001", "005"] {
            assert!(
                log.contains(&format!("{code} {id}")),
                "no {code} for {id} in:\n{log}"
            );
        }
    }
    assert!(log.contains("Job terminated.\n\t(1) Normal termination (return value 0)"));

    // q -l: the submit file's ad with the live attributes.
    let ad = d.ad(by_proc[1].id);
    assert_eq!(ad["ClusterId"], cluster.to_string());
    assert_eq!(ad["ProcId"], "1");
    assert_eq!(ad["Project"], "\"physics\"");
    assert_eq!(ad["Answer"], "42");
    assert_eq!(ad["JobStatus"], "4");
    assert_eq!(ad["ExitCode"], "0");
    assert_eq!(ad["RequestMemory"], "48");
    assert_eq!(ad["Iwd"], format!("\"{}\"", sub.display()));
    // V2 form, each entry quoted whole where it needs quotes.
    assert!(ad["Environment"].contains("'GREETING=hi there'"), "{ad:?}");
    assert!(
        ad["Environment"].contains("JOBCELL_T_VAR=imported"),
        "{ad:?}"
    );
    let o = d.cli(&["q", "-l", &by_proc[1].id.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("Project = \"physics\"\n"), "{}", out(&o));
    assert!(out(&o).contains("JobStatus = 4\n"), "{}", out(&o));
    // Others see the ad (as condor_q -l) but not the environment, which may hold secrets.
    let o = d.cli_in(
        work.path(),
        Some(nobody()),
        &[],
        &["q", "-l", "--json", &by_proc[1].id.to_string()],
        None,
    );
    assert!(o.status.success(), "{}", err(&o));
    let m: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(m["Project"], "\"physics\"");
    assert!(m.get("Environment").is_none(), "{m}");
}

#[test]
fn hold_true_queues_held_from_stdin_and_quiet_prints_the_ids() {
    if !root_or_skip("hold_true_queues_held_from_stdin_and_quiet_prints_the_ids") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let work = TempDir::itest();
    let file = "executable = /bin/true\nhold = true\nrequest_memory = 32\nqueue 2\n";
    let o = d.cli_in(work.path(), None, &[], &["submit", "-q", "-"], Some(file));
    assert!(o.status.success(), "{}", err(&o));
    let ids = ids(&o);
    assert_eq!(ids.len(), 2);
    for id in &ids {
        let j = d.job(*id);
        assert_eq!(j.state, State::Held);
        let ad = d.ad(*id);
        assert_eq!(ad["JobStatus"], "5");
        assert!(ad.contains_key("HoldReason"), "{ad:?}");
    }
    // The table shows cluster.proc and why each held job waits.
    let o = d.cli(&["q", "-nobatch"]);
    let table = out(&o);
    let cluster = d.job(ids[1]).cluster;
    assert!(table.contains(&format!(" {cluster}.1 ")), "{table}");
    assert_eq!(
        table.matches("hold: held at submission").count(),
        2,
        "{table}"
    );
    // condor_q's selectors: CLUSTER.PROC and CLUSTER.
    let o = d.cli(&["q", "-l", &format!("{cluster}.1")]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("ProcId = 1\n") && !out(&o).contains("ProcId = 0\n"),
        "{}",
        out(&o)
    );
    let o = d.cli(&["q", "-nobatch", &format!("{cluster}.")]);
    assert_eq!(
        out(&o).matches(&format!(" {cluster}.")).count(),
        2,
        "{}",
        out(&o)
    );
    let o = d.cli(&["q", &format!("{cluster}.7")]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        err(&o).contains(&format!("no job {cluster}.7")),
        "{}",
        err(&o)
    );
    let o = d.cli(&["release", &ids[0].to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    d.wait_state(ids[0], State::Completed, T);
    assert_eq!(d.job(ids[1]).state, State::Held);
}

#[test]
fn a_bad_file_queues_nothing() {
    if !root_or_skip("a_bad_file_queues_nothing") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let work = TempDir::itest();
    let cases = [
        // A bad value in the second queue statement: the first is not queued either.
        (
            "executable = /bin/true\nqueue\nrequest_memory = lots\nqueue\n",
            "line 3",
        ),
        (
            "executable = /bin/true\narguments = \"unbalanced\nqueue\n",
            "line 2",
        ),
        ("executable = /bin/true\n", "no queue statement"),
        ("executable = /bin/true\nqueue 0\n", "line 2"),
        (
            "executable = /bin/true\narguments = $INT(x)\nqueue\n",
            "line 2",
        ),
        (
            "executable = /bin/true\nqueue x matching nothing-matches-*.none\n",
            "line 2",
        ),
        (
            "executable = /bin/true\nrequest_memory = 100000G\nqueue\n",
            "this node has",
        ),
        (
            "executable = /bin/true\ntransfer_input_files = /nonexistent/x\nqueue\n",
            "/nonexistent/x",
        ),
        (
            "executable = /bin/true\ninput = /nonexistent/in\nqueue\n",
            "/nonexistent/in",
        ),
    ];
    for (file, want) in cases {
        let o = d.cli_in(work.path(), None, &[], &["submit", "-"], Some(file));
        assert_eq!(o.status.code(), Some(125), "{file}: {}", out(&o));
        let e = err(&o);
        assert!(e.contains(want), "{file}: wanted '{want}' in: {e}");
        assert_eq!(
            e.trim().lines().filter(|l| !l.contains("warning")).count(),
            1,
            "{e}"
        );
    }
    assert!(d.all_jobs().is_empty(), "{:?}", d.all_jobs());
    // A file the submitter cannot read is refused before anything is queued.
    let secret = work.path().join("secret");
    std::fs::write(&secret, "root only").unwrap();
    chmod(&secret, 0o600);
    let file = format!(
        "executable = /bin/true\ntransfer_input_files = {}\nqueue\n",
        secret.display()
    );
    let o = d.cli_in(
        work.path(),
        Some(nobody()),
        &[],
        &["submit", "-"],
        Some(&file),
    );
    assert_eq!(o.status.code(), Some(125), "{}", out(&o));
    assert!(err(&o).contains("Permission denied"), "{}", err(&o));
    assert!(d.all_jobs().is_empty());
}

#[test]
fn files_are_opened_as_the_job_user_so_symlinks_and_foreign_files_get_a_hold() {
    if !root_or_skip("files_are_opened_as_the_job_user_so_symlinks_and_foreign_files_get_a_hold") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let work = TempDir::itest();
    // A root-owned file a symlink in a world-writable dir points at: the job (nobody) must
    // not be able to truncate or write it through its output.
    let victim = work.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    chmod(&victim, 0o644);
    let open = work.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    std::os::unix::fs::symlink(&victim, open.join("out")).unwrap();
    let secret = work.path().join("secret");
    std::fs::write(&secret, "root only\n").unwrap();
    chmod(&secret, 0o600);
    let closed = work.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    chmod(&closed, 0o755);
    // Submitted by root, run as nobody: root's client may read everything, the job may not.
    let files = [
        (format!("output = {}/out", open.display()), "open/out"),
        (format!("input = {}", secret.display()), "secret"),
        (format!("error = {}/err", closed.display()), "closed/err"),
        (
            format!(
                "transfer_input_files = {}\nshould_transfer_files = YES",
                secret.display()
            ),
            "transfer_input_files",
        ),
        (
            format!(
                "log = {}/log\noutput = {}/o2",
                closed.display(),
                open.display()
            ),
            "",
        ),
    ];
    for (line, want) in files {
        let file = format!("executable = /bin/echo\narguments = hi\n{line}\nqueue\n");
        let o = d.cli_in(work.path(), None, &[], &["submit", "-q", "-"], Some(&file));
        assert!(o.status.success(), "{line}: {}", err(&o));
        let id = ids(&o)[0];
        if want.is_empty() {
            // The log cannot be written as nobody: the job still runs, the event is dropped.
            d.wait_state(id, State::Completed, T);
            assert_eq!(std::fs::read_to_string(open.join("o2")).unwrap(), "hi\n");
            assert!(!closed.join("log").exists());
            continue;
        }
        let j = d.wait_state(id, State::Held, T);
        let r = j.hold_reason.unwrap_or_default();
        assert!(r.contains(want) && r.contains("nobody"), "{line}: {r}");
        assert!(r.contains("Permission denied"), "{line}: {r}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!closed.join("err").exists());
    assert_eq!(std::fs::read_dir(&d.scratch).unwrap().count(), 0);
}

#[test]
fn jobcell_image_runs_the_cluster_in_the_image_and_an_unknown_one_queues_nothing() {
    if !root_or_skip(
        "jobcell_image_runs_the_cluster_in_the_image_and_an_unknown_one_queues_nothing",
    ) {
        return;
    }
    if !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED: jobcell_image_runs_the_cluster_in_the_image_and_an_unknown_one_queues_nothing: no static /bin/busybox to build a tiny image from");
        return;
    }
    let _g = serial();
    let imgdir = TempDir::new_in("/tmp");
    let img = imgdir.path().join("tiny");
    std::fs::create_dir_all(img.join("bin")).unwrap();
    std::fs::create_dir_all(img.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", img.join("bin/busybox")).unwrap();
    std::fs::write(img.join("etc/jobcell-marker"), "in-the-image\n").unwrap();
    let d = Daemon::start_with_config(
        &[],
        Some(&format!("[images]\ntiny = \"{}\"\n", img.display())),
    );
    let work = TempDir::itest();
    chmod(work.path(), 0o777);
    let file = "executable = /bin/busybox\narguments = cat /etc/jobcell-marker\njobcell_image = tiny\nrequest_memory = 32\noutput = out.$(Process)\nqueue 2\n";
    let o = d.cli_in(work.path(), None, &[], &["submit", "-q", "-"], Some(file));
    let ids = ids(&o);
    for (p, id) in ids.iter().enumerate() {
        let j = d.wait_for(*id, T, |j| j.state.terminal());
        assert_eq!(j.exit_code, Some(0), "{j:?}");
        assert_eq!(
            std::fs::read_to_string(work.path().join(format!("out.{p}"))).unwrap(),
            "in-the-image\n"
        );
        assert_eq!(d.ad(*id)["JobcellImage"], "\"tiny\"");
    }
    let o = d.cli_in(
        work.path(),
        None,
        &[],
        &["submit", "-"],
        Some("executable = /bin/true\njobcell_image = nosuch\nqueue 3\n"),
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("image 'nosuch'"), "{}", err(&o));
    assert_eq!(d.all_jobs().len(), 2);
}

#[test]
fn the_cluster_api_is_idempotent_per_key_and_guards_its_clusters() {
    if !root_or_skip("the_cluster_api_is_idempotent_per_key_and_guards_its_clusters") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let c = d.client();
    let cl: jobcell_node::types::ClusterResponse = c.call("POST", "/v1/clusters", None).unwrap();
    let mut spec = jobcell_spec::JobSpec::new(vec!["/bin/true".into()]);
    spec.resources.memory = Some(32 << 20);
    let job = serde_json::json!({"spec": spec, "hold": true});
    let body = serde_json::json!({"jobs": [job.clone(), job.clone()], "submit_key": "k1"});
    let path = format!("/v1/clusters/{}/jobs", cl.cluster);
    let a: jobcell_node::types::SubmitResponse = c.call("POST", &path, Some(&body)).unwrap();
    let b: jobcell_node::types::SubmitResponse = c.call("POST", &path, Some(&body)).unwrap();
    assert_eq!(a.ids.len(), 2);
    assert_eq!(a.ids, b.ids, "a resend with the same key makes no new jobs");
    assert_eq!(a.cluster, Some(cl.cluster));
    assert_eq!(d.job(a.ids[1]).proc, 1);
    let status = |p: &str, body: &serde_json::Value| {
        let (code, data) = c
            .raw("POST", p, Some(&serde_json::to_vec(body).unwrap()))
            .unwrap();
        (code, String::from_utf8_lossy(&data).into_owned())
    };
    // The cluster is full now; a missing one; an empty list; a bad job names its proc.
    let (code, msg) = status(&path, &serde_json::json!({"jobs": [job.clone()]}));
    assert_eq!(code, 409, "{msg}");
    let (code, msg) = status(
        "/v1/clusters/999999/jobs",
        &serde_json::json!({"jobs": [job.clone()]}),
    );
    assert_eq!(code, 404, "{msg}");
    let cl2: jobcell_node::types::ClusterResponse = c.call("POST", "/v1/clusters", None).unwrap();
    let p2 = format!("/v1/clusters/{}/jobs", cl2.cluster);
    let (code, msg) = status(&p2, &serde_json::json!({"jobs": []}));
    assert_eq!(code, 400, "{msg}");
    let mut big = spec.clone();
    big.resources.memory = Some(1 << 50);
    let (code, msg) = status(
        &p2,
        &serde_json::json!({"jobs": [job.clone(), {"spec": big}]}),
    );
    assert_eq!(code, 422, "{msg}");
    assert!(msg.contains(&format!("job {}.1", cl2.cluster)), "{msg}");
    let (code, msg) = status(
        &p2,
        &serde_json::json!({"jobs": [{"spec": spec, "extra": {"cwd": "relative"}}]}),
    );
    assert_eq!(code, 400, "{msg}");
    assert!(msg.contains("initialdir 'relative'"), "{msg}");
    // A cluster may be larger than other requests (64 MiB), not more.
    let (code, msg) = raw_status(
        &d.sock,
        &format!(
            "POST {p2} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            (64 << 20) + 1
        ),
    );
    assert_eq!(code, 413, "{msg}");
    // Nothing of the refused requests was queued.
    assert_eq!(d.all_jobs().len(), 2);
    // Another user may not fill someone else's cluster.
    let (nu, ng) = nobody();
    let mut theirs = jobcell_spec::JobSpec::new(vec!["/bin/true".into()]);
    theirs.user = jobcell_spec::UserSpec::Uid(nu);
    let body = serde_json::to_vec(&serde_json::json!({"jobs": [{"spec": theirs}]})).unwrap();
    assert_eq!(http_as(&d.sock, Some((nu, ng)), "POST", &p2, &body).0, 403);
    assert_eq!(d.all_jobs().len(), 2);
}

/// Send a raw request head (no body) and read the status line's code and the rest.
fn raw_status(sock: &std::path::Path, head: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    (
        r.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        r,
    )
}

#[test]
fn q_counts_one_job_in_the_singular() {
    if !root_or_skip("q_counts_one_job_in_the_singular") {
        return;
    }
    let d = Daemon::start(&[]);
    ids(&d.cli(&["submit", "-q", "--hold", "--", "/bin/true"]));
    let o = d.cli(&["q"]);
    assert!(o.status.success(), "{}", err(&o));
    let last = out(&o).lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("Total for query: 1 job;"), "{last}");
}

/// `jobcell submit --chdir DIR job.sh`: the job runs in DIR, the script (a `#!` file given
/// alone, as to sbatch) is the submitter's from the submit directory.
#[test]
fn submit_chdir_runs_a_script_of_the_submit_directory_there() {
    if !root_or_skip("submit_chdir_runs_a_script_of_the_submit_directory_there") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let work = TempDir::itest();
    let run = work.path().join("run");
    std::fs::create_dir(&run).unwrap();
    chmod(&run, 0o777);
    std::fs::write(
        work.path().join("job.sh"),
        "#!/bin/sh\necho pwd=$(pwd) args=$*\n",
    )
    .unwrap();
    chmod(&work.path().join("job.sh"), 0o755);
    let out = d.cli_in(
        work.path(),
        Some(nobody()),
        &[],
        &["submit", "-q", "--chdir", "run", "job.sh"],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let id: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let done = d.wait_state(id, State::Completed, T);
    assert_eq!(done.owner, nobody().0);
    let o = d.cli(&["output", &id.to_string()]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("pwd={} args=", run.display())
    );
    // Several words without `--` are the command too.
    let out = d.cli_in(
        &run,
        Some(nobody()),
        &[],
        &["submit", "-q", "--chdir", ".", "sh", "-c", "echo here=$PWD"],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let id: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    d.wait_state(id, State::Completed, T);
    let o = d.cli(&["output", &id.to_string()]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("here={}", run.display())
    );
}

/// A directory the submitter cannot enter is refused by `jobcell submit` (which runs as the
/// submitter), and a job that names one through the API directly is held when it would start
/// (checked as the job's user), instead of running in its scratch dir.
#[test]
fn a_workdir_the_submitter_cannot_enter_is_refused_or_held_never_run_elsewhere() {
    if !root_or_skip("a_workdir_the_submitter_cannot_enter_is_refused_or_held_never_run_elsewhere")
    {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let work = TempDir::itest();
    let closed = work.path().join("roots-only");
    std::fs::create_dir(&closed).unwrap();
    chmod(&closed, 0o700);
    let dir = closed.to_str().unwrap();
    let out = d.cli_in(
        work.path(),
        Some(nobody()),
        &[],
        &["submit", "--chdir", dir, "--", "/bin/pwd"],
        None,
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("jobcell: --chdir {dir}: Permission denied")
    );
    assert!(d.all_jobs().is_empty());
    // The same through the API, as that user.
    let mut spec = jobcell_spec::JobSpec::new(vec!["/bin/pwd".into()]);
    let (nu, ng) = nobody();
    spec.user = jobcell_spec::UserSpec::Uid(nu);
    spec.workdir = Some(closed.clone());
    let body = serde_json::to_vec(&serde_json::json!({"spec": spec})).unwrap();
    assert_eq!(
        http_as(&d.sock, Some((nu, ng)), "POST", "/v1/jobs", &body).0,
        201
    );
    let id = d.all_jobs()[0].id;
    let held = d.wait_state(id, State::Held, T);
    let why = held.hold_reason.unwrap_or_default();
    assert!(
        why.contains(dir) && why.contains("Permission denied"),
        "{why}"
    );
}

/// A submit file's `initialdir` under the submitter's /tmp, which the job's private /tmp
/// covers: bound into the job at its own path and entered, as `--chdir` is, so the job reads
/// and writes the submitter's directory instead of silently starting in its scratch dir.
#[test]
fn an_initialdir_under_the_private_tmp_is_bound_into_the_job_and_entered() {
    if !root_or_skip("an_initialdir_under_the_private_tmp_is_bound_into_the_job_and_entered") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let work = TempDir::new_in("/tmp");
    chmod(work.path(), 0o777);
    std::fs::write(work.path().join("in.txt"), "from the submitter\n").unwrap();
    let dir = work.path().to_str().unwrap();
    let file = format!(
        "\
executable = /bin/sh
arguments = \"-c 'echo pwd=$PWD; cat in.txt; echo made-by-job > made.txt'\"
initialdir = {dir}
output = out.txt
queue
"
    );
    std::fs::write(work.path().join("job.sub"), file).unwrap();
    let o = d.cli_in(
        work.path(),
        Some(nobody()),
        &[],
        &["submit", "-q", "job.sub"],
        None,
    );
    assert!(o.status.success(), "{}", err(&o));
    let id: u64 = out(&o).trim().parse().unwrap();
    let done = d.wait_state(id, State::Completed, T);
    assert_eq!(done.exit_code, Some(0), "{done:?}");
    let printed = std::fs::read_to_string(work.path().join("out.txt")).unwrap();
    assert_eq!(printed, format!("pwd={dir}\nfrom the submitter\n"));
    assert_eq!(
        std::fs::read_to_string(work.path().join("made.txt")).unwrap(),
        "made-by-job\n"
    );
}
