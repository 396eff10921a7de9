//! A daemon job's usage over time: its supervisor samples the job's cgroup into the job dir,
//! `GET /v1/jobs/{id}/usage` serves it to the job's owner and root, and `jobcell show` draws
//! it. Real jobs, cgroups and users; needs root, else each test prints SKIPPED.

mod daemon_harness;

use std::time::Duration;

use daemon_harness::*;
use jobcell_node::types::{State, UsagePoint, UsageSeries};

const T: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;

/// A daemon sampling every `interval`.
fn start(interval: &str) -> Daemon {
    Daemon::start_with_config(
        &["--cpus", "2", "--memory", "2G"],
        Some(&format!("[usage]\nsample_interval = \"{interval}\"\n")),
    )
}

/// `submit -q` of a Python program as `uid` (default: root), with `cpus` and `memory`.
fn submit_py(d: &Daemon, uid: Option<(u32, u32)>, cpus: &str, memory: &str, py: &str) -> u64 {
    let o = d.cli_as(
        uid,
        &[
            "submit",
            "-q",
            "--cpus",
            cpus,
            "--memory",
            memory,
            "--",
            "/usr/bin/python3",
            "-c",
            py,
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    ids(&o)[0]
}

/// When the series first reaches `bytes` of memory.
fn first_at(s: &UsageSeries, bytes: u64) -> Option<f64> {
    s.points.iter().find(|p| p.mem >= bytes).map(|p| p.t)
}

/// Cores used between two points.
fn cores(a: &UsagePoint, b: &UsagePoint) -> f64 {
    (b.cpu_us - a.cpu_us) as f64 / 1e6 / (b.t - a.t)
}

/// 50 MiB more every second for 4 s (written, so the pages are charged), then a second more.
const GROW: &str = "import time\nb = []\nfor i in range(4):\n    b.append(b'x' * (50 << 20))\n    time.sleep(1)\ntime.sleep(1)\n";

#[test]
fn a_job_growing_in_steps_has_a_rising_series_whose_peak_matches_its_report() {
    let test = "a_job_growing_in_steps_has_a_rising_series_whose_peak_matches_its_report";
    if !root_or_skip(test) {
        return;
    }
    let _g = serial();
    let d = start("0.25s");
    let id = submit_py(&d, None, "0.5", "512M", GROW);
    let j = d.wait_for(id, T, |j| j.ended_at.is_some());
    assert_eq!(j.state, State::Completed, "{j:?}\n{}", d.log());
    let s = d.client().usage(id).unwrap();
    assert_eq!(s.interval, 0.25);
    assert!(s.points.len() >= 12, "{} points: {s:?}", s.points.len());
    assert!(s.points.windows(2).all(|w| w[0].t < w[1].t), "{s:?}");
    // Each 50 MiB step is seen about a second after the one before.
    let steps: Vec<f64> = (1..=4)
        .map(|k| first_at(&s, k * 45 * MIB).unwrap_or_else(|| panic!("never {k}x45 MiB: {s:?}")))
        .collect();
    for w in steps.windows(2) {
        assert!(
            (0.6..2.0).contains(&(w[1] - w[0])),
            "steps at {steps:?}: {s:?}"
        );
    }
    // The first point is taken within the first step (Python allocates at once).
    assert!(s.points[0].mem < 95 * MIB, "{s:?}");
    // The last point is taken as the job ends: its peak is the report's.
    let report = &j.report.as_ref().unwrap()["usage"];
    let reported = report["memory_peak"].as_u64().unwrap();
    let last = s.points.last().unwrap();
    assert!(
        last.mem_peak.abs_diff(reported) <= reported / 20,
        "series peak {} vs report {reported}",
        last.mem_peak
    );
    assert!(last.mem_peak >= 200 * MIB, "{last:?}");
    let cpu = report["cpu_user_us"].as_u64().unwrap() + report["cpu_system_us"].as_u64().unwrap();
    assert!(
        last.cpu_us.abs_diff(cpu) <= cpu / 10 + 20_000,
        "{last:?} vs {cpu}"
    );
    assert!(last.pids <= 1, "the job has ended: {last:?}");
    assert!(s.points.iter().any(|p| p.pids >= 1), "{s:?}");
    // Kept root's, in the root-only job dir, where no job can write.
    let file = d.state.join(format!("jobs/{id}/usage"));
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (m.uid(), m.mode() & 0o777),
        (0, 0o600),
        "{}",
        file.display()
    );

    // `jobcell show`: the summary, two plots with labelled axes and bars, in 80 columns and
    // without colour (stdout is a pipe); --json is the same series.
    let o = d.cli(&["show", &id.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    assert!(
        text.starts_with(&format!("job {id}  completed\n")),
        "{text}"
    );
    for want in [
        "owner      root (uid 0), runs as nobody",
        "command    /usr/bin/python3 -c",
        "requests   0.5 cpus, 512.0 MiB memory",
        "exit       code 0",
        "CPU (cores used)",
        "memory (peak ",
        "  512 MiB ┤",
        "    0 MiB ┤",
        "     0.00 ┤",
        "0s",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
    assert!(!text.contains('\x1b'), "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    let bars = text
        .lines()
        .filter(|l| l.chars().any(|c| ('▁'..='█').contains(&c)))
        .count();
    // 200 MiB of a 512 MiB axis fills three of its eight rows and reaches into a fourth.
    assert!(bars >= 4, "{bars} rows with bars:\n{text}");
    let o = d.cli(&["show", "--json", &id.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    let parsed: UsageSeries = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(parsed, s);
}

#[test]
fn a_busy_job_uses_about_one_core() {
    let test = "a_busy_job_uses_about_one_core";
    if !root_or_skip(test) {
        return;
    }
    let _g = serial();
    let d = start("0.5s");
    // It says how much CPU it got itself, and of how much time: on a busy machine less
    // than one core.
    let py = "import time\nt = time.time()\nwhile time.time() - t < 4:\n    pass\nprint(time.process_time(), time.time() - t)\n";
    let id = submit_py(&d, None, "1", "64M", py);
    let j = d.wait_for(id, T, |j| j.ended_at.is_some());
    assert_eq!(j.state, State::Completed, "{j:?}");
    let said = out(&d.cli(&["output", &id.to_string()]));
    let v: Vec<f64> = said
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (own_cpu, own_wall) = (v[0], v[1]);
    let own = own_cpu / own_wall;
    let s = d.client().usage(id).unwrap();
    assert!(s.points.len() >= 6, "{s:?}");
    // All of the job's CPU time is in the series (its last point is taken at the end).
    let total = s.points.last().unwrap().cpu_us as f64 / 1e6;
    assert!(
        // (v1 splits user and system time by ticks: a little slack below.)
        total >= own_cpu * 0.95 - 0.02 && total < own_cpu + 0.3 + own_cpu / 10.0,
        "{total:.2} s in the series, {own_cpu:.2} s by the job itself"
    );
    // Between the second point and the one before the last (start-up and exit left out).
    let (a, b) = (&s.points[1], &s.points[s.points.len() - 2]);
    let c = cores(a, b);
    assert!(c < 1.15, "{c:.2} cores: {s:?}");
    if own > 0.9 {
        assert!(c > 0.8, "{c:.2} cores: {s:?}");
    } else {
        eprintln!("{test}: the machine is busy: the job got {own:.2} of a core, {c:.2} sampled");
    }
    // `show` draws it on an axis that ends at the request (1 core), or a little above: a
    // sample read late on a loaded machine can make one short interval look busier.
    let text = out(&d.cli(&["show", &id.to_string()]));
    let top = text
        .lines()
        .skip_while(|l| *l != "CPU (cores used)")
        .nth(1)
        .and_then(|l| l.split('┤').next()?.trim().parse::<f64>().ok());
    assert!(top.is_some_and(|t| (1.0..=3.0).contains(&t)), "{text}");
}

#[test]
fn the_series_survives_a_daemon_restart_and_stays_readable_in_the_history() {
    let test = "the_series_survives_a_daemon_restart_and_stays_readable_in_the_history";
    if !root_or_skip(test) {
        return;
    }
    let _g = serial();
    let mut d = start("0.25s");
    let id = submit_py(&d, None, "0.5", "64M", "import time\ntime.sleep(4)\n");
    d.wait_state(id, State::Running, T);
    std::thread::sleep(Duration::from_secs(1));
    // The supervisor samples on while no daemon runs.
    d.kill9();
    std::thread::sleep(Duration::from_secs(1));
    d.restart();
    let j = d.wait_for(id, T, |j| j.ended_at.is_some());
    assert_eq!(j.state, State::Completed, "{j:?}\n{}", d.log());
    let s = d.client().usage(id).unwrap();
    let span = s.points.last().unwrap().t - s.points[0].t;
    assert!(span >= 3.0, "{span:.2} s: {s:?}");
    let gap = s
        .points
        .windows(2)
        .map(|w| w[1].t - w[0].t)
        .fold(0.0, f64::max);
    assert!(gap < 1.0, "a {gap:.2} s gap: {s:?}");
    assert!(d.history().iter().any(|h| h.id == id));
    d.stop();
    d.restart();
    assert_eq!(d.client().usage(id).unwrap(), s);
}

#[test]
fn another_user_cannot_read_a_jobs_usage_but_its_owner_and_root_can() {
    let test = "another_user_cannot_read_a_jobs_usage_but_its_owner_and_root_can";
    if !root_or_skip(test) {
        return;
    }
    let Some((owner, other)) = test_users_or_skip(test) else {
        return;
    };
    let _g = serial();
    let d = start("0.25s");
    let id = submit_py(
        &d,
        Some(owner),
        "0.5",
        "64M",
        "import time\ntime.sleep(1)\n",
    );
    let j = d.wait_for(id, T, |j| j.ended_at.is_some());
    assert_eq!(j.state, State::Completed, "{j:?}");
    for args in [vec!["show", "--json"], vec!["show"]] {
        let mut args = args;
        let id = id.to_string();
        args.push(&id);
        let o = d.cli_as(Some(other), &args);
        let e = err(&o);
        assert_eq!(o.status.code(), Some(125), "{args:?}: {e}\n{}", out(&o));
        assert!(
            e.contains("belongs to jobcell-test-a") && e.contains("only its owner or root"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(out(&o).is_empty(), "{}", out(&o));
    }
    for who in [Some(owner), None] {
        let o = d.cli_as(who, &["show", "--json", &id.to_string()]);
        assert!(o.status.success(), "{who:?}: {}", err(&o));
        let s: UsageSeries = serde_json::from_str(&out(&o)).unwrap();
        assert!(!s.points.is_empty(), "{s:?}");
    }
}

#[test]
fn a_bad_sample_interval_is_one_line_and_no_daemon() {
    let test = "a_bad_sample_interval_is_one_line_and_no_daemon";
    if !root_or_skip(test) {
        return;
    }
    for (value, want) in [
        ("0.01s", "must be between 0.1s and 1d"),
        ("fast", "'f' is not a unit"),
    ] {
        let d = Daemon::prepare_with_config(
            &[],
            Some(&format!("[usage]\nsample_interval = \"{value}\"\n")),
        );
        let o = d.cmd().output().unwrap();
        let e = err(&o);
        assert!(!o.status.success(), "{value}: {e}");
        assert!(
            e.contains("[usage] sample_interval") && e.contains(want),
            "{value}: {e}"
        );
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert!(!d.sock.exists(), "{value}: the daemon made its socket");
    }
}

#[test]
fn sampling_can_be_turned_off() {
    let test = "sampling_can_be_turned_off";
    if !root_or_skip(test) {
        return;
    }
    let _g = serial();
    let d = start("none");
    let id = submit_py(&d, None, "0.5", "64M", "pass\n");
    let j = d.wait_for(id, T, |j| j.ended_at.is_some());
    assert_eq!(j.state, State::Completed, "{j:?}");
    assert!(d.client().usage(id).unwrap().points.is_empty());
    assert!(!d.state.join(format!("jobs/{id}/usage")).exists());
    let text = out(&d.cli(&["show", &id.to_string()]));
    assert!(text.contains("no samples"), "{text}");
}
