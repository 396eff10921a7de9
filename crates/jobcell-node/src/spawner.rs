//! The spawner: a small single-threaded process forked before the daemon starts its tokio
//! runtime. Forking a multithreaded process is unsafe (only the forking thread survives; locks
//! held by other threads — the allocator's included — stay locked in the child), so the daemon
//! never forks: it sends "spawn <attempt> <job dir>" over a socketpair and the spawner does
//! fork → setsid → fork → exec `jobcell supervise`. The double fork makes the supervisor a child
//! of init (or the nearest subreaper), not of the daemon: it outlives a daemon restart.
//! The intermediate child reads the supervisor's start time before exiting (it is still the
//! parent, so the pid cannot be reused yet) and the daemon checks it when opening a pidfd.

use std::ffi::CString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::sys::starttime;

pub struct Spawner {
    sock: UnixStream,
    reader: BufReader<UnixStream>,
    pid: i32,
    execs: bool,
}

impl Spawner {
    /// Fork the spawner. Call before any thread exists (before the tokio runtime).
    /// With `exe`, supervisors are `exe supervise DIR ATTEMPT`; without, the spawner's forked
    /// child runs [`crate::supervise::supervise`] itself (no exec, no dynamic loading: the
    /// spawner is a single-threaded copy of the daemon from before its runtime existed).
    pub fn start(exe: Option<&Path>) -> io::Result<Spawner> {
        let execs = exe.is_some();
        let exe = exe
            .map(|e| CString::new(e.as_os_str().as_bytes()))
            .transpose()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "exe path has a NUL"))?;
        let (ours, theirs) = UnixStream::pair()?;
        // SAFETY: start is called before any thread exists (before the tokio runtime), so the child
        // is a complete single-threaded copy and may run ordinary Rust code.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            drop(ours);
            // Die with the daemon; supervisors (grandchildren) do not inherit this.
            // SAFETY: PR_SET_PDEATHSIG takes integers only; no memory is passed.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            // Hold nothing of the daemon's but the socket: above all not the state dir's lock,
            // which must die with the daemon so a restart can take it at once.
            let keep = theirs.as_raw_fd() as u32;
            // SAFETY: close_range takes integers only; it closes descriptors this fresh child
            // inherited and owns no Rust object for, except `theirs`, which the ranges skip.
            unsafe {
                if keep > 3 {
                    libc::syscall(libc::SYS_close_range, 3u32, keep - 1, 0u32);
                }
                libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
            }
            let code = match serve(theirs, exe.as_ref()) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // SAFETY: _exit ends the child without running the parent's atexit handlers or
            // destructors, which belong to the daemon.
            unsafe { libc::_exit(code) };
        }
        drop(theirs);
        let reader = BufReader::new(ours.try_clone()?);
        Ok(Spawner {
            sock: ours,
            reader,
            pid,
            execs,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether supervisors are exec'd (they read the job's `spec.json`); forked supervisors
    /// are handed their spec in the spawn request instead, so no file is written for it.
    pub fn execs(&self) -> bool {
        self.execs
    }

    /// Start supervisors for `(job dir, attempt, spec)`; requests are pipelined. `spec` is the
    /// supervisor's spec (JSON) for a forked supervisor (an exec'd one reads `spec.json`).
    /// Returns, in order, each supervisor's pid and start time, or why it could not be started.
    pub fn spawn_many(
        &mut self,
        reqs: &[(&Path, u32, &[u8])],
    ) -> io::Result<Vec<Result<(i32, u64), String>>> {
        let mut out = Vec::with_capacity(reqs.len());
        let mut buf = Vec::new();
        for (dir, attempt, spec) in reqs {
            let d = dir.as_os_str().as_bytes();
            if d.contains(&b'\n') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "newline in job dir",
                ));
            }
            // "<attempt> <spec length> <dir>\n<spec bytes>"
            buf.extend_from_slice(format!("{attempt} {} ", spec.len()).as_bytes());
            buf.extend_from_slice(d);
            buf.push(b'\n');
            buf.extend_from_slice(spec);
        }
        self.sock.write_all(&buf)?;
        for _ in reqs {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the spawner process exited",
                ));
            }
            let line = line.trim_end();
            out.push(match line.strip_prefix("ok ") {
                Some(rest) => {
                    let mut it = rest.split(' ');
                    match (
                        it.next().and_then(|p| p.parse().ok()),
                        it.next().and_then(|s| s.parse().ok()),
                    ) {
                        (Some(p), Some(s)) => Ok((p, s)),
                        _ => Err(format!("bad spawner reply '{line}'")),
                    }
                }
                None => Err(line.strip_prefix("err ").unwrap_or(line).to_string()),
            });
        }
        Ok(out)
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        // SAFETY: the spawner is our own child, reaped only here; a null status pointer is allowed.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
    }
}

/// The spawner's loop (in the forked child). Ends at EOF.
fn serve(sock: UnixStream, exe: Option<&CString>) -> io::Result<()> {
    let mut out = sock.try_clone()?;
    let mut r = BufReader::new(sock);
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let reply = match parse_req(&line) {
            Some((attempt, len, dir)) => {
                let mut spec = vec![0; len];
                r.read_exact(&mut spec)?;
                match spawn_one(exe, &attempt, &dir, &spec) {
                    Ok((pid, st)) => format!("ok {pid} {st}\n"),
                    Err(e) => format!("err spawning a supervisor: {e}\n"),
                }
            }
            // The stream cannot be trusted past a malformed request (a spec of unknown
            // length may follow): end, and the daemon exits for a restart to recover.
            None => return Err(io::Error::other("malformed spawn request")),
        };
        out.write_all(reply.as_bytes())?;
    }
}

fn parse_req(line: &[u8]) -> Option<(CString, usize, CString)> {
    let mut it = line.splitn(3, |&b| b == b' ');
    let (attempt, len, dir) = (it.next()?, it.next()?, it.next()?);
    if attempt.is_empty() || !attempt.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len = std::str::from_utf8(len).ok()?.parse().ok()?;
    Some((CString::new(attempt).ok()?, len, CString::new(dir).ok()?))
}

fn spawn_one(
    exe: Option<&CString>,
    attempt: &CString,
    dir: &CString,
    spec: &[u8],
) -> io::Result<(i32, u64)> {
    let arg0 = CString::new("jobcell").unwrap();
    let sup = CString::new("supervise").unwrap();
    let argv = [
        arg0.as_ptr(),
        sup.as_ptr(),
        dir.as_ptr(),
        attempt.as_ptr(),
        std::ptr::null(),
    ];
    let devnull = CString::new("/dev/null").unwrap();
    let mut fds = [0; 2];
    // SAFETY: `fds` is the two-element array pipe2 fills.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors nothing else owns.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the spawner process is single-threaded (forked before the daemon's runtime), so the
    // child is a complete copy and may run ordinary Rust code.
    let a = unsafe { libc::fork() };
    if a < 0 {
        return Err(io::Error::last_os_error());
    }
    if a == 0 {
        // Intermediate child: new session, fork the supervisor, report it, exit.
        // SAFETY: setsid takes no arguments; failure (already a leader) is harmless here.
        unsafe { libc::setsid() };
        // SAFETY: this intermediate child is single-threaded, like its parent, the spawner.
        let b = unsafe { libc::fork() };
        if b == 0 {
            // SAFETY: in the single-threaded supervisor child: `devnull`, `exe`, the argv array
            // (NULL-terminated, pointing at CStrings alive until exec) and the name literal are all
            // NUL-terminated and alive; descriptors 0 and 1 are replaced, not closed, and _exit
            // ends the child without running the spawner's destructors.
            unsafe {
                // stderr stays the daemon's (the journal): a supervisor's own complaints
                // before it redirects to the job's files land next to the daemon's log.
                let null = libc::open(devnull.as_ptr(), libc::O_RDWR);
                libc::dup2(null, 0);
                libc::dup2(null, 1);
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                match exe {
                    Some(exe) => {
                        libc::execv(exe.as_ptr(), argv.as_ptr());
                        libc::_exit(127);
                    }
                    None => {
                        libc::prctl(libc::PR_SET_NAME, c"jobcell-superv".as_ptr(), 0, 0, 0);
                        let dir = std::ffi::OsStr::from_bytes(dir.as_bytes());
                        let attempt = std::str::from_utf8(attempt.as_bytes())
                            .ok()
                            .and_then(|a| a.parse().ok())
                            .unwrap_or(0);
                        let code = crate::supervise::supervise_with(
                            Path::new(dir),
                            attempt,
                            (!spec.is_empty()).then_some(spec),
                        );
                        libc::_exit(code);
                    }
                }
            }
        }
        let msg = if b < 0 {
            format!("fork: {}", io::Error::last_os_error())
        } else {
            // b is our child and unreaped: its /proc entry cannot belong to anyone else.
            format!("{b} {}", starttime(b).unwrap_or(0))
        };
        // SAFETY: the pointer and length describe `msg`, alive across the write; _exit then ends
        // this intermediate child without the spawner's destructors.
        unsafe {
            libc::write(wr.as_raw_fd(), msg.as_ptr().cast(), msg.len());
            libc::_exit(0);
        }
    }
    drop(wr);
    let mut s = String::new();
    let r = std::fs::File::from(rd).read_to_string(&mut s);
    // SAFETY: `a` is our own child, reaped only here; a null status pointer is allowed.
    unsafe { libc::waitpid(a, std::ptr::null_mut(), 0) };
    r?;
    let mut it = s.split(' ');
    match (
        it.next().and_then(|p| p.parse::<i32>().ok()),
        it.next().and_then(|p| p.parse::<u64>().ok()),
    ) {
        (Some(p), Some(st)) if st > 0 => Ok((p, st)),
        _ => Err(io::Error::other(s)),
    }
}
