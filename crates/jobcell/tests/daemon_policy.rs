//! The daemon's node policies end to end with real jobs: a job OOM-killed at its memory limit
//! is held (HTCondor's reason) and `release` runs it again; a job past `allowed_job_duration`
//! is held; `GET /metrics` parses as Prometheus text and says what the node is doing.
//! Needs root; without it each test prints SKIPPED.

mod daemon_harness;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use daemon_harness::*;
use jobcell_node::types::{Event, State};

const T: Duration = Duration::from_secs(60);

/// A real Prometheus text parse of /metrics: (name, labels) -> value, histogram buckets as
/// `name_bucket` with an `le` label, plus `name_count`/`name_sum`.
/// (metric name, sorted labels) -> value.
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

fn scrape(d: &Daemon) -> Samples {
    use prometheus_parse::{Scrape, Value};
    let text = d.metrics();
    let s = Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not Prometheus text ({e}):\n{text}"));
    let mut out = HashMap::new();
    for sm in s.samples {
        let mut labels: Vec<(String, String)> = sm
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        match sm.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => {
                out.insert((sm.metric, labels), v);
            }
            Value::Histogram(buckets) => {
                for b in buckets {
                    let mut l = labels.clone();
                    l.push(("le".into(), format!("{}", b.less_than)));
                    out.insert((format!("{}_bucket", sm.metric), l), b.count);
                }
            }
            Value::Summary(_) => {}
        }
    }
    // Each HELP'd family must have a TYPE too (the parser read both).
    assert!(s.docs.contains_key("jobcell_jobs"), "{:?}", s.docs);
    out
}

fn get(m: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    *m.get(&(name.to_string(), l.clone()))
        .unwrap_or_else(|| panic!("no {name}{l:?} in {:?}", m.keys().collect::<Vec<_>>()))
}

fn events(d: &Daemon, id: u64) -> Vec<Event> {
    d.client()
        .call("GET", &format!("/v1/jobs/{id}/events"), None)
        .unwrap()
}

#[test]
fn a_job_killed_at_its_memory_limit_is_held_and_release_runs_it_again() {
    if !root_or_skip("a_job_killed_at_its_memory_limit_is_held_and_release_runs_it_again") {
        return;
    }
    if !std::path::Path::new("/usr/bin/perl").exists() {
        eprintln!("SKIPPED: a_job_killed_at_its_memory_limit_is_held_and_release_runs_it_again: no /usr/bin/perl for the memory hog");
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let work = TempDir::itest();
    // Touches 512 MiB against a 32 MiB limit (no swap for jobs: the hard limit kills).
    let hog = work.path().join("hog.pl");
    std::fs::write(
        &hog,
        "#!/usr/bin/perl\nmy $x = \"x\" x (512 << 20);\nprint length($x), \"\\n\";\n",
    )
    .unwrap();
    std::fs::set_permissions(&hog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = format!(
        "executable = {}\nrequest_memory = 32\nlog = {}/hog.log\nqueue\n",
        hog.display(),
        work.path().display()
    );
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let id = ids(&d.cli_in(work.path(), None, &[], &["submit", "-q", "-"], Some(&file)))[0];
    let j = d.wait_state(id, State::Held, T);
    assert_eq!(
        j.hold_reason.as_deref(),
        Some("memory usage exceeded request_memory"),
        "{j:?}"
    );
    assert_eq!(j.attempt, 1);
    assert_eq!(j.report.as_ref().unwrap()["oom_killed"], true, "{j:?}");
    let ad = d.ad(id);
    assert_eq!(ad["JobStatus"], "5");
    assert_eq!(ad["HoldReasonCode"], "34");
    let m = scrape(&d);
    assert_eq!(get(&m, "jobcell_oom_kills_total", &[]), 1.0);
    assert_eq!(
        get(&m, "jobcell_preemptions_total", &[("reason", "memory")]),
        1.0
    );
    assert_eq!(get(&m, "jobcell_jobs", &[("state", "held")]), 1.0);
    // Release requeues it: it runs (attempt 2) and is held again for the same reason.
    let o = d.cli(&["release", &id.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    let j = d.wait_for(id, T, |j| j.attempt == 2 && j.state == State::Held);
    assert_eq!(
        j.hold_reason.as_deref(),
        Some("memory usage exceeded request_memory")
    );
    let kinds: Vec<String> = events(&d, id).into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "held").count(),
        2,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"released".to_string()), "{kinds:?}");
    // The user log says it too, as HTCondor's: held, released, held.
    let t = Instant::now();
    let log_path = work.path().join("hog.log");
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.matches("012 (").count() == 2 && log.contains("013 (") {
            assert!(
                log.contains("Job was held.\n\tmemory usage exceeded request_memory\n"),
                "{log}"
            );
            break;
        }
        assert!(t.elapsed() < T, "user log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A pid whose command line contains `needle`.
fn pid_with(needle: &str) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&c).contains(needle) {
                return Some(pid);
            }
        }
    }
    None
}

#[test]
fn a_job_past_its_allowed_duration_is_held_with_the_reason() {
    if !root_or_skip("a_job_past_its_allowed_duration_is_held_with_the_reason") {
        return;
    }
    let _g = serial();
    let d = Daemon::start_with_config(&[], Some("[policy]\nallowed_job_duration = \"3s\"\n"));
    let work = TempDir::itest();
    let long = format!("1000.{}", std::process::id());
    // The node's limit.
    let a = ids(&d.cli(&["submit", "-q", "--memory", "32", "--", "/bin/sleep", &long]))[0];
    // A job's own, shorter one (a submit file's allowed_job_duration).
    let long2 = format!("1001.{}", std::process::id());
    let file = format!(
        "executable = /bin/sleep\narguments = {long2}\nallowed_job_duration = 1\nrequest_memory = 32\nqueue\n"
    );
    let b = ids(&d.cli_in(work.path(), None, &[], &["submit", "-q", "-"], Some(&file)))[0];
    // A short one finishes normally.
    let c = ids(&d.cli(&["submit", "-q", "--memory", "32", "--", "/bin/sleep", "0.2"]))[0];
    d.wait_state(c, State::Completed, T);
    let ja = d.wait_state(a, State::Held, T);
    let jb = d.wait_state(b, State::Held, T);
    assert_eq!(
        ja.hold_reason.as_deref(),
        Some("The job exceeded allowed job duration of 3s")
    );
    assert_eq!(
        jb.hold_reason.as_deref(),
        Some("The job exceeded allowed job duration of 1s")
    );
    // It ran at least as long as its limit, and its processes are gone.
    // From the start the limit counts from (the job's started_at) to the hold.
    let ran = |id: u64| {
        let start = d.job(id).started_at.unwrap();
        let held = events(&d, id)
            .iter()
            .rfind(|e| e.kind == "held")
            .unwrap()
            .time;
        held - start
    };
    assert!(ran(a) >= 3.0 - 0.01, "held after {}s", ran(a));
    assert!(ran(b) >= 1.0 - 0.01, "held after {}s", ran(b));
    assert_eq!(pid_with(&long), None);
    assert_eq!(pid_with(&long2), None);
    assert!(events(&d, a).iter().any(|e| e.kind == "policy"));
    let m = scrape(&d);
    assert_eq!(
        get(&m, "jobcell_preemptions_total", &[("reason", "duration")]),
        2.0
    );
    assert_eq!(d.ad(b)["HoldReasonCode"], "46");
}

#[test]
fn a_restarted_daemon_still_enforces_the_duration_of_jobs_it_reattached() {
    if !root_or_skip("a_restarted_daemon_still_enforces_the_duration_of_jobs_it_reattached") {
        return;
    }
    let _g = serial();
    let mut d = Daemon::start_with_config(&[], Some("[policy]\nallowed_job_duration = \"4s\"\n"));
    let long = format!("1002.{}", std::process::id());
    let id = ids(&d.cli(&["submit", "-q", "--memory", "32", "--", "/bin/sleep", &long]))[0];
    d.wait_state(id, State::Running, T);
    let t = Instant::now();
    while pid_with(&long).is_none() {
        assert!(t.elapsed() < T, "the job's sleep never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The daemon dies before the limit; the job keeps running under its supervisor.
    d.kill9();
    assert!(pid_with(&long).is_some());
    d.restart();
    let j = d.wait_state(id, State::Held, T);
    assert_eq!(
        j.hold_reason.as_deref(),
        Some("The job exceeded allowed job duration of 4s")
    );
    assert_eq!(j.attempt, 1, "re-attached, not restarted: {j:?}");
    assert_eq!(pid_with(&long), None);
}

#[test]
fn a_job_that_fills_its_request_disk_is_held() {
    if !root_or_skip("a_job_that_fills_its_request_disk_is_held") {
        return;
    }
    if !std::path::Path::new("/dev/loop-control").exists() {
        eprintln!("SKIPPED: a_job_that_fills_its_request_disk_is_held: no /dev/loop-control (loop devices are needed for request_disk)");
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let work = TempDir::itest();
    // 10 MiB of scratch; the job tries to write 40 MiB there (and says what it got).
    let file = "executable = /bin/sh\narguments = \"-c 'head -c 41943040 /dev/zero > $_CONDOR_SCRATCH_DIR/big; echo rc=$?'\"\nrequest_disk = 10M\nrequest_memory = 64\nqueue\n";
    let small = "executable = /bin/sh\narguments = \"-c 'head -c 1048576 /dev/zero > $_CONDOR_SCRATCH_DIR/small'\"\nrequest_disk = 10M\nrequest_memory = 64\nqueue\n";
    let id = ids(&d.cli_in(work.path(), None, &[], &["submit", "-q", "-"], Some(file)))[0];
    let ok = ids(&d.cli_in(work.path(), None, &[], &["submit", "-q", "-"], Some(small)))[0];
    let j = d.wait_state(id, State::Held, T);
    assert!(
        j.hold_reason
            .as_deref()
            .unwrap_or("")
            .starts_with("disk usage exceeded request_disk"),
        "{j:?}"
    );
    assert_eq!(j.report.as_ref().unwrap()["disk"]["full"], true, "{j:?}");
    let o = d.cli(&["output", &id.to_string()]);
    assert!(out(&o).contains("rc=1"), "ENOSPC inside: {}", out(&o));
    let j = d.wait_for(ok, T, |j| j.state.terminal());
    assert_eq!(j.state, State::Completed, "{j:?}");
    let m = scrape(&d);
    assert_eq!(
        get(&m, "jobcell_preemptions_total", &[("reason", "disk")]),
        1.0
    );
}

/// With file transfer the job runs in a scratch dir its supervisor staged with the inputs:
/// request_disk applies there too, and what the job made still comes back to initialdir.
#[test]
fn a_transfer_job_gets_its_request_disk_and_its_outputs_back() {
    if !root_or_skip("a_transfer_job_gets_its_request_disk_and_its_outputs_back") {
        return;
    }
    if !std::path::Path::new("/dev/loop-control").exists() {
        eprintln!("SKIPPED: a_transfer_job_gets_its_request_disk_and_its_outputs_back: no /dev/loop-control (loop devices are needed for request_disk)");
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    let work = TempDir::itest();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(work.path().join("in.txt"), "the input\n").unwrap();
    std::fs::write(
        work.path().join("job.sh"),
        "df -k . | tail -1 | awk '{print $1}' > fs.txt\ncat in.txt > copy.txt\nhead -c 41943040 /dev/zero > big; echo rc=$?\n",
    )
    .unwrap();
    let in_mtime = std::fs::metadata(work.path().join("in.txt"))
        .unwrap()
        .modified()
        .unwrap();
    let file = "executable = /bin/sh\narguments = job.sh\nshould_transfer_files = YES\ntransfer_input_files = in.txt, job.sh\nrequest_disk = 10M\nrequest_memory = 64\nqueue\n";
    let id = ids(&d.cli_in(work.path(), None, &[], &["submit", "-q", "-"], Some(file)))[0];
    let j = d.wait_state(id, State::Held, T);
    assert!(
        j.hold_reason
            .as_deref()
            .unwrap_or("")
            .starts_with("disk usage exceeded request_disk"),
        "{j:?}\n{}",
        d.log()
    );
    let o = d.cli(&["output", &id.to_string()]);
    assert!(out(&o).contains("rc=1"), "ENOSPC inside: {}", out(&o));
    let read = |n: &str| std::fs::read_to_string(work.path().join(n)).unwrap_or_default();
    assert!(
        read("fs.txt").starts_with("/dev/loop"),
        "scratch was {:?}",
        read("fs.txt")
    );
    assert_eq!(read("copy.txt"), "the input\n", "outputs came back");
    // The inputs were not copied back over themselves.
    let after = std::fs::metadata(work.path().join("in.txt"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(after, in_mtime);
    // Nothing of the filesystem is left: no mount on the host, no loop device on its file.
    let scratch = d.scratch.display().to_string();
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(&scratch), "{mi}");
    let t0 = Instant::now();
    loop {
        let left: Vec<_> = std::fs::read_dir("/sys/block")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path().join("loop/backing_file"))
                    .is_ok_and(|f| f.contains(&scratch))
            })
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "loop devices left: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_are_prometheus_text_with_node_job_and_latency_figures() {
    if !root_or_skip("metrics_are_prometheus_text_with_node_job_and_latency_figures") {
        return;
    }
    let _g = serial();
    // A metrics port anywhere but loopback is refused before anything starts.
    let o = std::process::Command::new(BIN)
        .args([
            "daemon",
            "--state-dir",
            "/nonexistent/x",
            "--metrics-listen",
            "0.0.0.0:9105",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("loopback"), "{}", err(&o));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Daemon::start(&[
        "--cpus",
        "2",
        "--memory",
        "1G",
        "--metrics-listen",
        &port.to_string(),
    ]);
    let m = scrape(&d);
    assert_eq!(get(&m, "jobcell_node_cpus", &[]), 2.0);
    assert_eq!(
        get(&m, "jobcell_node_memory_bytes", &[]),
        (1u64 << 30) as f64
    );
    assert_eq!(get(&m, "jobcell_node_cpus_allocated", &[]), 0.0);
    assert_eq!(get(&m, "jobcell_jobs", &[("state", "running")]), 0.0);
    assert_eq!(get(&m, "jobcell_schedule_latency_seconds_count", &[]), 0.0);

    // One job that uses memory and CPU, and stays.
    let script = "x=$(head -c 8000000 /dev/zero | tr '\\0' x); i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec sleep 1000";
    let id = ids(&d.cli(&[
        "submit", "-q", "--cpus", "0.5", "--memory", "64", "--", "/bin/sh", "-c", script,
    ]))[0];
    for _ in 0..3 {
        ids(&d.cli(&["submit", "-q", "--memory", "32", "--", "/bin/true"]));
    }
    d.wait_state(id, State::Running, T);
    let label = id.to_string();
    let t = Instant::now();
    let m = loop {
        let m = scrape(&d);
        let ready = m.iter().any(|((n, l), v)| {
            n == "jobcell_job_cpu_seconds_total"
                && l.iter().any(|(k, x)| k == "id" && *x == label)
                && *v > 0.0
        }) && get(&m, "jobcell_jobs", &[("state", "completed")]) == 3.0;
        if ready {
            break m;
        }
        assert!(
            t.elapsed() < T,
            "no per-job figures for job {id}: {:?}",
            m.keys()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(get(&m, "jobcell_jobs", &[("state", "running")]), 1.0);
    assert_eq!(get(&m, "jobcell_node_cpus_allocated", &[]), 0.5);
    assert_eq!(
        get(&m, "jobcell_node_memory_allocated_bytes", &[]),
        (64u64 << 20) as f64
    );
    let j = d.job(id);
    let labels = [
        ("id", label.as_str()),
        ("cluster", &j.cluster.to_string()),
        ("proc", "0"),
        ("owner", "root"),
    ];
    let mem = get(&m, "jobcell_job_memory_bytes", &labels);
    assert!(mem > 0.0 && mem <= (64u64 << 20) as f64, "{mem}");
    assert!(get(&m, "jobcell_node_memory_used_bytes", &[]) > 0.0);
    assert!(get(&m, "jobcell_node_cpu_used_seconds_total", &[]) > 0.0);
    // Four jobs started; the histogram's +Inf bucket is its count.
    assert_eq!(get(&m, "jobcell_jobs_started_total", &[]), 4.0);
    assert_eq!(get(&m, "jobcell_schedule_latency_seconds_count", &[]), 4.0);
    let inf = m
        .iter()
        .find(|((n, l), _)| {
            n == "jobcell_schedule_latency_seconds_bucket"
                && l.iter().any(|(k, v)| k == "le" && v.contains("inf"))
        })
        .map(|(_, v)| *v);
    assert_eq!(inf, Some(4.0), "{:?}", m.keys());
    assert_eq!(get(&m, "jobcell_oom_kills_total", &[]), 0.0);
    assert_eq!(
        get(&m, "jobcell_jobs_ended_total", &[("state", "completed")]),
        3.0
    );
    // Also under /v1, and on the loopback TCP port (that one serves nothing else).
    let (code, body) = d.client().raw("GET", "/v1/metrics", None).unwrap();
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains("# TYPE jobcell_jobs gauge"));
    let tcp = |path: &str| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut r = String::new();
        c.read_to_string(&mut r).unwrap();
        r
    };
    let r = tcp("/metrics");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("text/plain; version=0.0.4"), "{r}");
    assert!(r.contains("jobcell_jobs{state=\"running\"} 1"), "{r}");
    let r = tcp("/v1/jobs");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
}

/// A job that keeps faulting its program's pages back in (the page cache dropped each time,
/// as under thrashing) past `pressure_major_faults` for `pressure_duration` is preempted:
/// killed and queued again, with the reason; `pressure_action = "hold"` holds it instead.
/// (cgroup v1 has no per-cgroup PSI: the major-fault rate is the signal there.)
#[test]
fn a_job_under_memory_pressure_is_preempted_and_requeued_or_held() {
    if !root_or_skip("a_job_under_memory_pressure_is_preempted_and_requeued_or_held") {
        return;
    }
    if !std::path::Path::new("/usr/bin/perl").exists() {
        eprintln!("SKIPPED: a_job_under_memory_pressure_is_preempted_and_requeued_or_held: no /usr/bin/perl to fault in");
        return;
    }
    let _g = serial();
    // On a file system with a page cache (not tmpfs): `dd iflag=nocache` drops the copy's
    // pages, so every exec faults them in from disk again.
    let work = TempDir::itest();
    let prog = work.path().join("p");
    std::fs::copy("/usr/bin/perl", &prog).unwrap();
    let script = format!(
        "cd {}; while :; do dd if=p iflag=nocache count=0 2>/dev/null; ./p -e 1; done",
        work.path().display()
    );
    for (action, want) in [("requeue", State::Queued), ("hold", State::Held)] {
        let d = Daemon::start_with_config(
            &[],
            Some(&format!(
                "[policy]\npressure_major_faults = 10\npressure_duration = \"2s\"\npressure_action = \"{action}\"\n"
            )),
        );
        let calm = ids(&d.cli(&["submit", "-q", "--memory", "32", "--", "/bin/sleep", "1000"]))[0];
        let id = ids(&d.cli(&[
            "submit", "-q", "--memory", "64", "--", "/bin/sh", "-c", &script,
        ]))[0];
        d.wait_state(id, State::Running, T);
        let t = Instant::now();
        let ev = loop {
            let ev = events(&d, id);
            let done = match want {
                State::Queued => ev.iter().any(|e| e.kind == "requeued"),
                _ => ev.iter().any(|e| e.kind == "held"),
            };
            if done {
                break ev;
            }
            assert!(
                t.elapsed() < T,
                "{action}: not preempted: {ev:?}\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let policy = ev
            .iter()
            .find(|e| e.kind == "policy")
            .expect("policy event");
        let reason = policy.detail.as_ref().unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            reason.starts_with("preempted under memory pressure: ")
                && reason.contains("major page faults/s (threshold 10)")
                && reason.ends_with("for 2s"),
            "{reason}"
        );
        // It ran at least the policy's duration before it was stopped.
        let started = ev.iter().find(|e| e.kind == "started").unwrap().time;
        assert!(
            policy.time - started >= 2.0 - 0.1,
            "{}",
            policy.time - started
        );
        let j = d.job(id);
        match want {
            State::Queued => {
                // Requeued: it runs again (a new attempt), the reason kept.
                let j = d.wait_for(id, T, |j| j.attempt >= 2);
                assert_eq!(j.reason.as_deref(), Some(reason.as_str()), "{j:?}");
            }
            _ => {
                assert_eq!(j.state, State::Held);
                assert_eq!(j.hold_reason.as_deref(), Some(reason.as_str()));
            }
        }
        // A job under no pressure is left alone.
        assert_eq!(d.job(calm).state, State::Running);
        let m = scrape(&d);
        assert!(get(&m, "jobcell_preemptions_total", &[("reason", "pressure")]) >= 1.0);
    }
}

/// A swap file turned on for the length of a test, off and removed at drop.
struct SwapFile(std::path::PathBuf);

impl SwapFile {
    fn on(dir: &std::path::Path, mib: u64) -> Result<SwapFile, String> {
        let p = dir.join("swapfile");
        let run = |cmd: &str, args: &[&str]| -> Result<(), String> {
            let o = std::process::Command::new(cmd)
                .args(args)
                .output()
                .map_err(|e| format!("{cmd}: {e}"))?;
            if o.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd} {args:?}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
        };
        let ps = p.to_str().unwrap();
        // dd, not fallocate: swapon refuses files with holes or unwritten extents on some fs.
        run(
            "dd",
            &[
                "if=/dev/zero",
                &format!("of={ps}"),
                "bs=1M",
                &format!("count={mib}"),
                "status=none",
            ],
        )?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        run("mkswap", &[ps])?;
        let sf = SwapFile(p.clone());
        run("swapon", &[ps])?;
        Ok(sf)
    }
}

impl Drop for SwapFile {
    fn drop(&mut self) {
        let _ = std::process::Command::new("swapoff").arg(&self.0).status();
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The seed's case proper: a job swapping heavily against a low limit is preempted. Without
/// swap on the machine, a 512 MiB swap file is on for the test's length. While it is on, jobs
/// without a swap limit swap instead of being OOM-killed: every test of this file holds the
/// serial lock (so none runs meanwhile), cargo runs test binaries one at a time, and
/// `JOBCELL_TEST_SWAPFILE=0` skips the test on a machine shared with other work.
#[test]
fn a_job_thrashing_against_its_limit_with_swap_is_preempted() {
    if !root_or_skip("a_job_thrashing_against_its_limit_with_swap_is_preempted") {
        return;
    }
    // Before the swap goes on: no other test of this file may run while it is.
    let _g = serial();
    let work = TempDir::itest();
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    let _swap = if swaps.lines().count() >= 2 {
        None
    } else if std::env::var_os("JOBCELL_TEST_SWAPFILE").is_none_or(|v| v != "0") {
        match SwapFile::on(work.path(), 512) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("SKIPPED: a_job_thrashing_against_its_limit_with_swap_is_preempted: cannot turn a swap file on: {e}");
                return;
            }
        }
    } else {
        eprintln!("SKIPPED: a_job_thrashing_against_its_limit_with_swap_is_preempted: no swap on this machine and JOBCELL_TEST_SWAPFILE=0 (no swap file for the test); the major-fault test covers the policy");
        return;
    };
    if !std::path::Path::new("/usr/bin/perl").exists() {
        eprintln!(
            "SKIPPED: a_job_thrashing_against_its_limit_with_swap_is_preempted: no /usr/bin/perl"
        );
        return;
    }
    let d = Daemon::start_with_config(
        &[],
        Some("[policy]\npressure_major_faults = 50\npressure_stall_percent = 20\npressure_duration = \"3s\"\npressure_action = \"hold\"\n"),
    );
    // 96 MiB touched over and over with 32 MiB of memory and 256 MiB of swap.
    let hog = work.path().join("thrash.pl");
    std::fs::write(
        &hog,
        "#!/usr/bin/perl\nmy @a = map { \"x\" x (1 << 20) } 1..96;\nwhile (1) { for my $s (@a) { substr($s, 0, 1) = 'y'; for (my $i = 0; $i < length($s); $i += 4096) { substr($s, $i, 1) = 'z' } } }\n",
    )
    .unwrap();
    std::fs::set_permissions(&hog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = ids(&d.cli(&[
        "submit",
        "-q",
        "--memory",
        "32",
        "--swap",
        "256",
        "--",
        hog.to_str().unwrap(),
    ]))[0];
    let j = d.wait_state(id, State::Held, Duration::from_secs(120));
    let reason = j.hold_reason.unwrap_or_default();
    assert!(
        reason.starts_with("preempted under memory pressure"),
        "{reason}\n{}",
        d.log()
    );
    eprintln!("thrashing job held: {reason}");
}

#[test]
fn a_job_without_request_disk_stops_near_the_node_default_bound() {
    let test = "a_job_without_request_disk_stops_near_the_node_default_bound";
    if !root_or_skip(test) {
        return;
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.lines().any(|l| l.trim_end().ends_with("btrfs"))
        || !std::path::Path::new("/usr/sbin/mkfs.btrfs").exists()
        || !std::path::Path::new("/dev/loop-control").exists()
    {
        eprintln!("SKIPPED: {test}: the scratch pool needs btrfs in the kernel, mkfs.btrfs (btrfs-progs) and loop devices");
        return;
    }
    let _g = serial();
    let d =
        Daemon::start_with_node_scratch(&[], "[scratch]\ndisk = \"16M\"\npool_size = \"512M\"\n");
    let fill = "err=$(head -c 67108864 /dev/zero 2>&1 >\"$JOBCELL_SCRATCH/fill\"); \
                echo rc=$?; echo size=$(stat -c %s \"$JOBCELL_SCRATCH/fill\"); echo err=$err";
    let o = d.cli(&["submit", "--memory", "64", "--", "/bin/sh", "-c", fill]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j = d.wait_for(1, T, |j| j.state.terminal());
    assert_eq!(j.state, State::Completed, "{j:?}");
    let text = out(&d.cli(&["output", "1"]));
    let value = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .unwrap_or("")
            .to_string()
    };
    assert_ne!(value("rc"), "0", "wrote 64 MiB past a 16 MiB bound: {text}");
    let size: u64 = value("size").parse().unwrap_or(u64::MAX);
    assert!(
        (12 << 20..=20 << 20).contains(&size),
        "stopped at {size}: {text}"
    );
    assert!(value("err").contains("quota exceeded"), "{text}");
    // The pool is the daemon's scratch base; the job's subvolume went with the job.
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mi.contains(&format!(" {} ", d.scratch.display())),
        "no scratch pool at {}",
        d.scratch.display()
    );
    wait_gone(&d.scratch.join("job-1"), T);
    let left: Vec<_> = std::fs::read_dir(&d.scratch)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "scratch pool holds {left:?}");
}
