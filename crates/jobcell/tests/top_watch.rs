//! `jobcell top` driven in a real terminal (a private tmux server) against a real daemon, and
//! `jobcell watch` on real clusters. Needs root (jobs run as other users in their own
//! cgroups) and tmux; without them each test prints SKIPPED.

mod daemon_harness;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use daemon_harness::*;
use jobcell_node::types::{State, TopFrame};

const T: Duration = Duration::from_secs(30);

fn tmux_or_skip(test: &str) -> bool {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("SKIPPED: {test}: needs tmux (test.sh installs it)");
        return false;
    }
    true
}

/// A private tmux server with one pane running `cmd` (kept after it exits, to read its
/// terminal's state); the server and its pane are killed at drop.
struct Tmux {
    socket: String,
    /// Every byte the pane's program wrote (tmux's pipe-pane).
    log: std::path::PathBuf,
}

static TMUX_SERVERS: AtomicU32 = AtomicU32::new(0);

impl Tmux {
    fn start(cmd: &str) -> Tmux {
        let socket = format!(
            "jobcell-top-test-{}-{}",
            std::process::id(),
            TMUX_SERVERS.fetch_add(1, Ordering::Relaxed)
        );
        let log = std::env::temp_dir().join(format!("{socket}.out"));
        let t = Tmux { socket, log };
        // The program waits for the pipe to be in place (tmux pipes only later output).
        let cmd = format!("sleep 0.3; {cmd}");
        let o = t
            .cmd()
            .args(["new-session", "-d", "-s", "t", "-x", "200", "-y", "40"])
            .arg(&cmd)
            .args([";", "set-option", "-w", "-t", "t", "remain-on-exit", "on"])
            .args([";", "pipe-pane", "-t", "t"])
            .arg(format!("cat > {}", t.log.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "tmux: {}", err(&o));
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }

    fn screen(&self) -> String {
        out(&self
            .cmd()
            .args(["capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap())
    }

    fn keys(&self, keys: &str) {
        let o = self
            .cmd()
            .args(["send-keys", "-t", "t", "-l", keys])
            .output()
            .unwrap();
        assert!(o.status.success(), "send-keys: {}", err(&o));
    }

    fn pane(&self, format: &str) -> String {
        out(&self
            .cmd()
            .args(["display-message", "-p", "-t", "t", format])
            .output()
            .unwrap())
        .trim()
        .to_string()
    }

    /// Waits until the screen satisfies `f`; returns it.
    fn wait_screen(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let s = self.screen();
            if f(&s) {
                return s;
            }
            assert!(t.elapsed() < T, "{what}; the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until top has exited; its exit status, as the pane's shell printed it (tmux's own
    /// `pane_dead_status` is at times left empty when the terminal closes before the reap).
    fn wait_exit(&self) -> i32 {
        let t = Instant::now();
        loop {
            let screen = self.screen();
            if let Some(code) = screen
                .lines()
                .find_map(|l| l.trim().strip_prefix("top-exit="))
            {
                return code.parse().unwrap();
            }
            assert!(t.elapsed() < T, "top still runs:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pane's terminal is as a shell expects it: the normal screen, the cursor shown,
    /// canonical mode and echo on.
    fn assert_restored(&self) {
        assert_eq!(
            self.pane("#{alternate_on}"),
            "0",
            "still on the alternate screen"
        );
        // tmux hides a dead pane's cursor itself: read what the program wrote last instead.
        let written = String::from_utf8_lossy(&std::fs::read(&self.log).unwrap()).into_owned();
        let (shown, hidden) = (written.rfind("\x1b[?25h"), written.rfind("\x1b[?25l"));
        assert!(
            hidden.is_some() && shown > hidden,
            "cursor left hidden: {written:?}"
        );
        // The shell around top printed the terminal's modes after it (see top_command).
        let after = &written[written
            .rfind("\x1b[?1049l")
            .expect("alternate screen not left")..];
        let words: Vec<&str> = after.split_whitespace().collect();
        for m in ["icanon", "echo", "isig", "opost"] {
            assert!(words.contains(&m), "{m} not restored: {after:?}");
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `top` in a pane, as `uid` (root when None), against `d`.
fn top_command(d: &Daemon, uid: Option<(u32, u32)>, args: &str) -> String {
    let who = match uid {
        Some((u, g)) => format!("setpriv --reuid {u} --regid {g} --clear-groups "),
        None => String::new(),
    };
    // The terminal's modes once top has ended, and top's exit status.
    format!(
        "env JOBCELL_SOCKET={} {who}{BIN} top {args}; code=$?; stty -a; echo top-exit=$code; exit $code",
        d.sock.display()
    )
}

/// The fields of the screen's row of job `c.p`.
fn row(screen: &str, id: &str) -> Option<Vec<String>> {
    screen.lines().find_map(|l| {
        let f: Vec<String> = l.split_whitespace().map(String::from).collect();
        (f.first().map(String::as_str) == Some(id)).then_some(f)
    })
}

/// The suite's lock and [`two_jobs`] of the test user `jobcell-test-a`; `None` after a loud line
/// naming `test` when that user cannot be made.
fn two_jobs_of_a_test_user(test: &str) -> Option<(MutexGuard<'static, ()>, Daemon)> {
    let owner = test_user_or_skip(test, "jobcell-test-a")?;
    let serial = serial();
    Some((serial, two_jobs(owner)))
}

/// A daemon with two jobs of `owner` running: 1.0 spins on a CPU, 2.0 holds ~60 MB.
fn two_jobs(owner: (u32, u32)) -> Daemon {
    let d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let submit = |args: &[&str]| {
        let o = d.cli_as(Some(owner), args);
        assert!(o.status.success(), "{}", err(&o));
    };
    submit(&[
        "submit",
        "--cpus",
        "1",
        "--memory",
        "64M",
        "--",
        "/bin/sh",
        "-c",
        "while :; do :; done",
    ]);
    submit(&[
        "submit",
        "--cpus",
        "0.5",
        "--memory",
        "256M",
        "--",
        "/bin/sh",
        "-c",
        "x=$(head -c 60000000 /dev/zero | tr '\\0' a); sleep 600",
    ]);
    d.wait_state(1, State::Running, T);
    d.wait_state(2, State::Running, T);
    // Running is recorded when the supervisor starts; the cgroup comes a moment later.
    let t = Instant::now();
    while !d
        .client()
        .top()
        .unwrap()
        .jobs
        .iter()
        .all(|j| j.cpu_us.is_some())
    {
        assert!(t.elapsed() < T, "no cgroup figures for the jobs");
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

/// Percent of a core job `id` used over two seconds, from its cgroup's CPU time.
fn cpu_share(d: &Daemon, id: u64) -> f64 {
    let sample = || {
        let f = d.client().top().unwrap();
        let j = f.jobs.iter().find(|j| j.id == id).unwrap().cpu_us.unwrap();
        (f.time, j)
    };
    let (t0, c0) = sample();
    std::thread::sleep(Duration::from_secs(2));
    let (t1, c1) = sample();
    (c1 - c0) as f64 / 1e4 / (t1 - t0)
}

fn stop_all(d: &Daemon) {
    for j in d.active() {
        let _ = d.client().remove(j.id);
    }
    d.wait_idle(T);
}

#[test]
fn top_shows_each_running_job_with_its_cpu_and_h_holds_the_selected_one() {
    let test = "top_shows_each_running_job_with_its_cpu_and_h_holds_the_selected_one";
    if !root_or_skip(test) || !tmux_or_skip(test) {
        return;
    }
    let Some((_g, d)) = two_jobs_of_a_test_user(test) else {
        return;
    };
    let tm = Tmux::start(&top_command(&d, None, "-d 1"));
    // A spinning job takes a whole core on an idle machine (> 50%); where other work shares
    // the cores, top must still show most of what the kernel accounted to it meanwhile.
    let share = cpu_share(&d, 1);
    let want = (share * 0.6).min(50.0);
    let s = tm.wait_screen(&format!("the busy job's CPU% above {want:.0}"), |s| {
        row(s, "1.0").is_some_and(|f| f[3].parse::<f64>().is_ok_and(|c| c > want))
    });
    assert!(
        s.contains("CPU  [") && s.contains("MEM  [") && s.contains("DISK ["),
        "{s}"
    );
    assert!(s.contains("JOBS 2 running"), "{s}");
    let busy = row(&s, "1.0").unwrap();
    assert_eq!(busy[1], "jobcell-test-a", "{s}");
    assert!(s.contains("while :; do :; done"), "{s}");
    // The memory job's row shows what its cgroup holds (the 60 MB string, in MiB).
    let s = tm.wait_screen("the memory job holding its 60 MB", |s| {
        row(s, "2.0").is_some_and(|f| {
            f.iter().any(|x| {
                x.strip_suffix('M')
                    .and_then(|m| m.parse::<f64>().ok())
                    .is_some_and(|m| m > 50.0)
            })
        })
    });
    assert!(row(&s, "2.0").unwrap()[1] == "jobcell-test-a", "{s}");
    // s cycles the sort column; o filters by owner (Enter with nothing typed: everyone).
    tm.keys("ss");
    tm.wait_screen("sorted by CPU%", |s| s.contains("sort CPU%"));
    tm.keys("SS");
    tm.wait_screen("sorted by id again", |s| s.contains("sort ID"));
    tm.keys("onobody\r");
    tm.wait_screen("nobody's jobs: none", |s| {
        s.contains("owner nobody") && s.contains("(no running jobs)")
    });
    tm.keys("o\r");
    tm.wait_screen("everyone's jobs again", |s| row(s, "1.0").is_some());
    // The first row (1.0) is selected: h holds it, through the API, as root.
    tm.keys("h");
    tm.wait_screen("the hold's outcome", |s| s.contains("job 1.0 held"));
    let j = d.wait_state(1, State::Held, T);
    assert_eq!(j.state, State::Held);
    assert_eq!(d.job(2).state, State::Running);
    tm.wait_screen("the held job gone from the rows", |s| {
        row(s, "1.0").is_none()
    });
    tm.keys("q");
    assert_eq!(tm.wait_exit(), 0);
    tm.assert_restored();
    stop_all(&d);
}

#[test]
fn top_once_prints_one_plain_frame_and_json_one_api_frame() {
    let test = "top_once_prints_one_plain_frame_and_json_one_api_frame";
    if !root_or_skip(test) {
        return;
    }
    let Some((_g, d)) = two_jobs_of_a_test_user(test) else {
        return;
    };
    let o = d.cli(&["top", "--once"]);
    assert!(o.status.success(), "{}", err(&o));
    let s = out(&o);
    assert!(!s.contains('\x1b'), "escape codes in --once: {s:?}");
    assert!(s.starts_with("jobcell top"), "{s}");
    let busy = row(&s, "1.0").unwrap_or_else(|| panic!("no row of 1.0: {s}"));
    // Two samples half a second apart (other work on the machine takes its share).
    assert!(
        busy[3].parse::<f64>().is_ok_and(|c| c > 5.0),
        "the busy job's CPU% from two samples: {s}"
    );
    assert!(row(&s, "2.0").is_some(), "{s}");
    // The memory job has built its 60 MB string.
    let t = Instant::now();
    let f = loop {
        let o = d.cli(&["top", "--json"]);
        assert!(o.status.success(), "{}", err(&o));
        let f: TopFrame = serde_json::from_slice(&o.stdout).unwrap();
        if f.jobs.get(1).and_then(|j| j.memory_current) > Some(50_000_000) {
            break f;
        }
        assert!(t.elapsed() < T, "{f:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(f.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [1, 2]);
    let mem = &f.jobs[1];
    assert_eq!(mem.owner_name, "jobcell-test-a");
    assert!(mem.memory_current.unwrap() > 50_000_000, "{mem:?}");
    assert!(f.jobs[0].cpu_us.unwrap() > 0);
    assert!(f.jobs[0].run_time.unwrap() >= 0.0);
    assert_eq!(f.node.cpus_total, 2.0);
    assert_eq!(f.node.cpus_allocated, 1.5);
    assert_eq!(f.jobs_by_state.get("running"), Some(&2));
    assert!(f.node.disk_total.is_some());
    // Not a terminal: the live view refuses, with one line saying what to use.
    let o = d.cli(&["top"]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("not a terminal (use --once or --json"),
        "{}",
        err(&o)
    );
    let o = d.cli(&["top", "-d", "0"]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("'0' is not a number of seconds"),
        "{}",
        err(&o)
    );
    stop_all(&d);
}

#[test]
fn another_user_sees_in_top_what_q_shows_and_cannot_hold_a_job_there() {
    let test = "another_user_sees_in_top_what_q_shows_and_cannot_hold_a_job_there";
    if !root_or_skip(test) || !tmux_or_skip(test) {
        return;
    }
    let Some((a, b)) = test_users_or_skip(test) else {
        return;
    };
    let _g = serial();
    let d = two_jobs(a);
    // What B's q lists, B's top lists: the same jobs.
    let q = out(&d.cli_as(Some(b), &["q"]));
    let o = d.cli_as(Some(b), &["top", "--once"]);
    assert!(o.status.success(), "{}", err(&o));
    let once = out(&o);
    for id in ["1.0", "2.0"] {
        assert!(q.contains(id), "{q}");
        assert!(row(&once, id).is_some(), "{once}");
    }
    // B selects A's busy job and presses h, then z: both refused by the daemon.
    let tm = Tmux::start(&top_command(&d, Some(b), "-d 1"));
    tm.wait_screen("A's jobs in B's top", |s| row(s, "1.0").is_some());
    tm.keys("h");
    let s = tm.wait_screen("the refusal", |s| s.contains("job 1.0: "));
    assert!(
        s.contains("belongs to jobcell-test-a") && s.contains("only its owner or root"),
        "{s}"
    );
    tm.keys("z");
    tm.wait_screen("the suspend's refusal", |s| {
        s.lines().last().is_some_and(|l| l.contains("job 1.0: "))
            || s.contains("only its owner or root")
    });
    // r asks first; y sends the remove, refused too.
    tm.keys("r");
    tm.wait_screen("the confirmation", |s| s.contains("remove job 1.0? (y/n)"));
    tm.keys("y");
    tm.wait_screen("the remove's refusal", |s| {
        s.contains("only its owner or root")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.job(1).state, State::Running, "B's top changed A's job");
    tm.keys("q");
    assert_eq!(tm.wait_exit(), 0);
    tm.assert_restored();
    stop_all(&d);
}

#[test]
fn top_restores_the_terminal_when_terminated() {
    let test = "top_restores_the_terminal_when_terminated";
    if !root_or_skip(test) || !tmux_or_skip(test) {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let tm = Tmux::start(&top_command(&d, None, ""));
    tm.wait_screen("top's header", |s| s.contains("(no running jobs)"));
    assert_eq!(tm.pane("#{alternate_on}"), "1");
    let shell = tm.pane("#{pane_pid}");
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
    let pid: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: kill takes integers; the pid is top, the pane's shell's only child, which
    // this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(tm.wait_exit(), 128 + libc::SIGTERM);
    tm.assert_restored();
}

/// `jobcell submit -` of `file` in `dir`; what it printed.
fn submit_file(d: &Daemon, dir: &Path, file: &str) -> String {
    let o = d.cli_in(dir, None, &[], &["submit", "-"], Some(file));
    assert!(o.status.success(), "{}", err(&o));
    out(&o)
}

#[test]
fn watch_exits_0_when_every_job_of_the_cluster_is_done() {
    let test = "watch_exits_0_when_every_job_of_the_cluster_is_done";
    if !root_or_skip(test) {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let dir = TempDir::itest();
    let said = submit_file(
        &d,
        dir.path(),
        "executable = /bin/sh\narguments = \"-c 'sleep 0.$(Process)'\"\nrequest_memory = 32M\nqueue 5\n",
    );
    assert!(said.contains("5 job(s) submitted to cluster 1"), "{said}");
    let o = d.cli(&["watch", "1."]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    let s = out(&o);
    let last = s.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("1 ") && last.contains("5 done") && last.contains("(5 jobs)"),
        "{s}"
    );
    assert!(!s.contains('\x1b'), "{s:?}");
    // A job that is already done: nothing to wait for.
    let o = d.cli(&["watch", "1.3"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("1 done"), "{}", out(&o));
    // A held job ends the watch (default, and --exit any,held), with exit 1 naming it.
    let o = d.cli(&["submit", "--hold", "--memory", "32M", "--", "/bin/true"]);
    assert!(o.status.success(), "{}", err(&o));
    for args in [
        vec!["watch", "2."],
        vec!["watch", "--exit", "any,held", "2."],
    ] {
        let o = d.cli(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", err(&o));
        assert!(out(&o).contains("0 done, 1 held"), "{}", out(&o));
        assert!(err(&o).contains("job 2.0 (id 6) is held"), "{}", err(&o));
    }
    let o = d.cli(&["watch", "--exit", "any,idle", "2."]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("'any,idle' is not all,done"),
        "{}",
        err(&o)
    );
    let o = d.cli(&["watch", "9."]);
    assert!(!o.status.success());
    assert!(err(&o).contains("no job 9."), "{}", err(&o));
}

#[test]
fn watch_exits_non_zero_and_names_the_job_that_failed() {
    let test = "watch_exits_non_zero_and_names_the_job_that_failed";
    if !root_or_skip(test) {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&["--cpus", "2", "--memory", "2G"]);
    let dir = TempDir::itest();
    submit_file(
        &d,
        dir.path(),
        "executable = /bin/sh\narguments = \"-c 'sleep 0.5; exit $(Process)'\"\nrequest_memory = 32M\nqueue 3\n",
    );
    let o = d.cli(&["watch", "1."]);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    let last = out(&o).lines().last().unwrap_or_default().to_string();
    assert!(last.contains("1 done, 2 failed"), "{last}");
    let e = err(&o);
    assert!(e.contains("job 1.1 (id 2) failed with exit code 1"), "{e}");
    assert!(e.contains("job 1.2 (id 3) failed with exit code 2"), "{e}");
    assert!(!e.contains("job 1.0"), "{e}");
}
