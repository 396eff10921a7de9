//! The API under abuse, and the CLI when the daemon does not answer: a flood of idle
//! connections from another user, slow requests, a socket nobody accepts on, a lost answer to
//! a submission, a closed stdout. Real daemon, real second and third uids; needs root (each
//! test prints SKIPPED without it).

mod daemon_harness;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use daemon_harness::*;

/// The flooding user and a bystander: numeric uids with no account (the kernel's peer
/// credentials are all the API looks at).
const FLOODER: (u32, u32) = (4242, 4242);
const BYSTANDER: (u32, u32) = (4243, 4243);

/// Runs `cmd`, killing it if it has not ended within `limit` (then `None`).
fn run_bounded(mut cmd: Command, limit: Duration) -> (Option<Output>, Duration) {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            return (Some(child.wait_with_output().unwrap()), t.elapsed());
        }
        if t.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            return (None, t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn cli_cmd(sock: &Path, uid: Option<(u32, u32)>, args: &[&str]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(BIN);
    c.args(args).current_dir("/").env("JOBCELL_SOCKET", sock);
    if let Some((u, g)) = uid {
        c.uid(u).gid(g);
    }
    c
}

/// A non-blocking connect; `Err(EAGAIN)` when the listener's backlog is full.
fn connect_nonblocking(addr: &libc::sockaddr_un) -> Result<libc::c_int, i32> {
    // SAFETY: plain syscalls on a fresh descriptor and a valid address.
    unsafe {
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(*libc::__errno_location());
        }
        let r = libc::connect(
            fd,
            (addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        );
        if r < 0 {
            let e = *libc::__errno_location();
            libc::close(fd);
            return Err(e);
        }
        Ok(fd)
    }
}

/// A process of uid `who` that opens up to `n` connections to `sock` and holds them until it
/// is killed. Returns its pid and how many connects succeeded.
fn flood_as(who: (u32, u32), sock: &Path, n: usize) -> (libc::pid_t, usize) {
    let addr = unix_sockaddr(sock);
    // SAFETY: in the child: `lim` is a local rlimit; setgroups gets a null list with count 0;
    // connect_nonblocking and usleep, write of the local `connected` (8 bytes) and pause make
    // no allocation; the child never returns.
    let (pid, mut report) = unsafe {
        fork_with_pipe(|out| {
            let lim = libc::rlimit {
                rlim_cur: n as u64 + 64,
                rlim_max: n as u64 + 64,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::setgroups(0, std::ptr::null());
            libc::setgid(who.1);
            libc::setuid(who.0);
            let mut connected: u64 = 0;
            let mut stalled = 0;
            while (connected as usize) < n && stalled < 500 {
                match connect_nonblocking(&addr) {
                    Ok(_) => {
                        connected += 1;
                        stalled = 0;
                    }
                    // Backlog full: the daemon is not accepting; wait a little, then give up.
                    Err(libc::EAGAIN) => {
                        stalled += 1;
                        libc::usleep(2000);
                    }
                    Err(_) => break,
                }
            }
            libc::write(out, (&connected as *const u64).cast(), 8);
            loop {
                libc::pause();
            }
        })
    };
    let mut b = [0u8; 8];
    report.read_exact(&mut b).unwrap();
    (pid, u64::from_ne_bytes(b) as usize)
}

fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: our own child, not yet reaped.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// The daemon with at most `nofile` descriptors (soft and hard), as a node's systemd unit or
/// ulimit would give it.
fn start_with_nofile(config: &str, nofile: u64) -> Daemon {
    use std::os::unix::process::CommandExt;
    let mut d = Daemon::prepare_with_config(&[], Some(config));
    // SAFETY: pre_exec's closure runs in the forked child before exec and calls only setrlimit with
    // a local rlimit, which is async-signal-safe and allocates nothing.
    d.launch_with(|c| unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            // SAFETY: setrlimit between fork and exec touches no shared state.
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    });
    d
}

#[test]
fn a_flood_of_idle_connections_from_one_user_does_not_stop_the_others() {
    if !root_or_skip("a_flood_of_idle_connections_from_one_user_does_not_stop_the_others") {
        return;
    }
    let _g = serial();
    // 1024 descriptors: a flood of 3000 is well past what the daemon can hold.
    let d = start_with_nofile(
        "[node]\napi_max_connections_per_uid = 16\napi_idle_timeout = \"60s\"\n",
        1024,
    );
    let (flooder, connected) = flood_as(FLOODER, &d.sock, 3000);
    eprintln!("flooder connected {connected} times");
    let mut results = Vec::new();
    for who in [None, Some(BYSTANDER)] {
        let (o, took) = run_bounded(cli_cmd(&d.sock, who, &["q"]), Duration::from_secs(15));
        results.push((who, o, took));
    }
    let (flooder_q, _) = run_bounded(
        cli_cmd(&d.sock, Some(FLOODER), &["q"]),
        Duration::from_secs(15),
    );
    kill_and_reap(flooder);
    for (who, o, took) in &results {
        let o = o
            .as_ref()
            .unwrap_or_else(|| panic!("`jobcell q` as {who:?} did not end within 15 s"));
        assert!(o.status.success(), "q as {who:?}: {}", err(o));
        assert!(out(o).contains("0 jobs"), "{}", out(o));
        assert!(*took < Duration::from_secs(5), "q as {who:?} took {took:?}");
    }
    let fo = flooder_q.expect("the flooder's own q must end");
    assert!(!fo.status.success(), "the flooder was served: {}", out(&fo));
    let e = err(&fo);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains("too many connections from uid 4242"),
        "the flooder's refusal: {e}"
    );
    let log = d.log();
    let about: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refus") || l.contains("accept"))
        .collect();
    assert!(!about.is_empty(), "no refusal logged:\n{log}");
    assert!(
        about.len() <= 3,
        "{} log lines:\n{}",
        about.len(),
        about.join("\n")
    );
}

#[test]
fn connections_beyond_the_global_cap_are_refused_but_root_keeps_its_reserve() {
    if !root_or_skip("connections_beyond_the_global_cap_are_refused_but_root_keeps_its_reserve") {
        return;
    }
    let _g = serial();
    let d = start_with_nofile(
        "[node]\napi_max_connections = 100\napi_max_connections_per_uid = 1000\napi_idle_timeout = \"60s\"\n",
        1024,
    );
    let (flooder, connected) = flood_as(FLOODER, &d.sock, 500);
    assert_eq!(connected, 500);
    let (bystander, _) = run_bounded(
        cli_cmd(&d.sock, Some(BYSTANDER), &["q"]),
        Duration::from_secs(15),
    );
    let (root, took) = run_bounded(cli_cmd(&d.sock, None, &["q"]), Duration::from_secs(15));
    kill_and_reap(flooder);
    let b = bystander.expect("the bystander's q must end");
    assert!(!b.status.success(), "{}", out(&b));
    assert!(
        err(&b).contains("the daemon is at its connection limit"),
        "{}",
        err(&b)
    );
    let r = root.expect("root's q must end");
    assert!(r.status.success(), "root: {}", err(&r));
    assert!(took < Duration::from_secs(5), "root's q took {took:?}");
}

/// Reads until the peer closes; the time that took and what came.
fn read_until_closed(s: &mut UnixStream, limit: Duration) -> (Duration, String) {
    let t = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    (t.elapsed(), String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn idle_and_slow_requests_are_closed_after_their_timeouts() {
    if !root_or_skip("idle_and_slow_requests_are_closed_after_their_timeouts") {
        return;
    }
    let _g = serial();
    let d = Daemon::start_with_config(
        &[],
        Some("[node]\napi_idle_timeout = \"2s\"\napi_body_timeout = \"2s\"\n"),
    );
    // Connected, says nothing.
    let mut idle = UnixStream::connect(&d.sock).unwrap();
    let (took, _) = read_until_closed(&mut idle, Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(5),
        "idle connection kept {took:?}"
    );

    // Slowloris: the head trickled a byte every 300 ms, never finished.
    let mut slow = UnixStream::connect(&d.sock).unwrap();
    slow.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let t = Instant::now();
    let mut closed = None;
    while t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(300));
        if slow.write_all(b"X").is_err() {
            closed = Some(t.elapsed());
            break;
        }
        slow.set_nonblocking(true).unwrap();
        let mut b = [0u8; 256];
        let r = slow.read(&mut b);
        slow.set_nonblocking(false).unwrap();
        if r.is_ok() {
            closed = Some(t.elapsed());
            break;
        }
    }
    let took = closed.expect("a trickled head was still being read after 10 s");
    assert!(took < Duration::from_secs(5), "slow head kept {took:?}");

    // A whole head, then a body that never comes: 408 with a JSON error.
    let mut body = UnixStream::connect(&d.sock).unwrap();
    body.write_all(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let (took, resp) = read_until_closed(&mut body, Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "slow body kept {took:?}");
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains(r#"{"error":"#), "{resp}");

    // An answer of 8 MiB of job output that the client does not read: dropped after the
    // 2 s (before, the daemon kept the connection and the whole answer for as long as the
    // client liked).
    let o = d.cli(&[
        "submit",
        "-q",
        "--",
        "/bin/sh",
        "-c",
        "head -c 8388608 /dev/zero",
    ]);
    let id = ids(&o)[0];
    d.wait_state(
        id,
        jobcell_node::types::State::Completed,
        Duration::from_secs(60),
    );
    let mut unread = UnixStream::connect(&d.sock).unwrap();
    write!(
        unread,
        "GET /v1/jobs/{id}/stdout HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let (_, resp) = read_until_closed(&mut unread, Duration::from_secs(10));
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "{}",
        &resp[..resp.len().min(200)]
    );
    assert!(
        resp.len() < 8 << 20,
        "the whole answer ({} bytes) waited for a client that read nothing",
        resp.len()
    );

    // Others are served throughout, and afterwards.
    let o = d.cli(&["q"]);
    assert!(o.status.success(), "{}", err(&o));
}

/// A socket that is bound and listening, where nobody ever accepts (a stopped daemon).
fn deaf_socket(dir: &Path) -> (UnixListener, PathBuf) {
    let p = dir.join("api.sock");
    (UnixListener::bind(&p).unwrap(), p)
}

#[test]
fn the_cli_gives_up_with_the_timeout_message_when_nobody_answers() {
    let dir = TempDir::new_in("/tmp");
    let (_listener, sock) = deaf_socket(dir.path());
    let s = sock.display().to_string();

    // Accepted into the backlog, never answered.
    let mut c = cli_cmd(&sock, None, &["q"]);
    c.env("JOBCELL_TIMEOUT", "2");
    let (o, took) = run_bounded(c, Duration::from_secs(15));
    let o = o.expect("`jobcell q` against a deaf socket did not end within 15 s");
    assert!(!o.status.success());
    assert_eq!(
        err(&o).trim(),
        format!("jobcell: no answer from the daemon on {s} within 2 s (waiting for its answer)")
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // The backlog full: the connect itself waits.
    let addr = unix_sockaddr(&sock);
    let mut held = Vec::new();
    while let Ok(fd) = connect_nonblocking(&addr) {
        // SAFETY: connect_nonblocking returned a fresh socket descriptor that nothing else owns.
        held.push(unsafe { OwnedFd::from_raw_fd(fd) });
        assert!(held.len() < 20_000, "the backlog never filled");
    }
    let (o, took) = run_bounded(
        cli_cmd(&sock, None, &["status", "--timeout", "1"]),
        Duration::from_secs(15),
    );
    let o = o.expect("`jobcell status` against a full backlog did not end within 15 s");
    assert!(!o.status.success());
    assert_eq!(
        err(&o).trim(),
        format!("jobcell: no answer from the daemon on {s} within 1 s (connecting)")
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
    drop(held);

    let o = cli_cmd(&sock, None, &["q", "--timeout", "soon"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(err(&o).contains("soon"), "{}", err(&o));
}

/// A pipe whose reader is gone: every write to it fails with EPIPE.
fn closed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: pipe into a valid array; both ends owned below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: pipe succeeded, so both are fresh descriptors that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(r);
    w
}

#[test]
fn a_closed_stdout_ends_every_client_command_quietly() {
    if !root_or_skip("a_closed_stdout_ends_every_client_command_quietly") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    // Enough jobs that `q` and `history` write more than a pipe holds (64 KiB) after the
    // reader has gone.
    let o = d.cli(&[
        "submit",
        "--hold",
        "-q",
        "--count",
        "1000",
        "--",
        "/bin/true",
    ]);
    let id = ids(&o)[0].to_string();
    for args in [
        &["history", "--json"][..],
        &["history"],
        &["q"],
        &["q", "--json"],
        &["q", "-l", &id],
        &["status"],
        &["status", "--json"],
        &["output", &id, "--events"],
        &["output", &id, "--events", "--json"],
        &["submit", "--hold", "--", "/bin/true"],
        &["rm", &id],
    ] {
        let w = closed_pipe();
        assert!(w.as_raw_fd() > 2);
        let o = cli_cmd(&d.sock, None, args)
            .stdout(Stdio::from(w))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            (o.status.code(), err(&o).as_str()),
            (Some(0), ""),
            "jobcell {args:?} into a closed pipe"
        );
    }
    // The shell's form: the reader takes what it wants and goes.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{BIN}' history --json | head -c 100 >/dev/null; '{BIN}' q | head -1 >/dev/null"
        ))
        .env("JOBCELL_SOCKET", &d.sock)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(err(&o), "");
}

/// Reads one HTTP request (head and Content-Length body) from `s`; `None` if it closes first.
fn read_request(s: &mut UnixStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = s.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut b).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&b[..n]);
            }
            return Some(buf);
        }
    }
}

fn submit_key(req: &[u8]) -> Option<String> {
    let end = req.windows(4).position(|w| w == b"\r\n\r\n")?;
    let v: serde_json::Value = serde_json::from_slice(&req[end + 4..]).ok()?;
    v["submit_key"].as_str().map(str::to_string)
}

#[test]
fn a_quick_submit_whose_answer_is_lost_is_retried_and_queued_once() {
    if !root_or_skip("a_quick_submit_whose_answer_is_lost_is_retried_and_queued_once") {
        return;
    }
    let _g = serial();
    let d = Daemon::start(&[]);
    // Between the CLI and the daemon: the first request reaches the daemon (which commits
    // it), and its answer is dropped, as when the daemon dies before replying.
    let proxy_dir = TempDir::new_in("/tmp");
    let proxy = proxy_dir.path().join("proxy.sock");
    let listener = UnixListener::bind(&proxy).unwrap();
    let upstream = d.sock.clone();
    let relay = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for n in 0..2 {
            let Ok((mut c, _)) = listener.accept() else {
                break;
            };
            let Some(req) = read_request(&mut c) else {
                break;
            };
            let mut up = UnixStream::connect(&upstream).unwrap();
            up.write_all(&req).unwrap();
            let mut resp = Vec::new();
            up.read_to_end(&mut resp).unwrap();
            requests.push(req);
            if n == 0 {
                drop(c);
                continue;
            }
            c.write_all(&resp).unwrap();
            break;
        }
        requests
    });
    let (o, _) = run_bounded(
        cli_cmd(&proxy, None, &["submit", "--hold", "-q", "--", "/bin/true"]),
        Duration::from_secs(30),
    );
    // Unblocks the relay if the CLI never came back a second time.
    let _ = UnixStream::connect(&proxy);
    let requests = relay.join().unwrap();
    let o = o.expect("the submit did not end");
    assert!(o.status.success(), "{}", err(&o));
    let got = ids(&o);
    let jobs = d.all_jobs();
    assert_eq!(
        jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        got,
        "one job queued, the one the CLI printed"
    );
    assert_eq!(requests.len(), 2);
    let keys: Vec<Option<String>> = requests.iter().map(|r| submit_key(r)).collect();
    assert!(keys[0].is_some(), "the quick submit sent no key");
    assert_eq!(keys[0], keys[1], "the retry must carry the same key");

    // Two invocations are two submissions: each has its own key.
    let a = ids(&d.cli(&["submit", "--hold", "-q", "--", "/bin/true"]));
    let b = ids(&d.cli(&["submit", "--hold", "-q", "--", "/bin/true"]));
    assert_ne!(a, b);
    assert_eq!(d.all_jobs().len(), 3);
}
