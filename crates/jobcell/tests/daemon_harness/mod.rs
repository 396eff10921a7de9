//! A real `jobcell daemon` on a temporary state dir, socket and scratch base, shared by the
//! daemon, submit file and policy tests.
//!
//! Scratch dirs go to a tmpfs (/dev/shm) dir: on this machine's root ext4 every rmdir costs
//! ~3 ms (discard), which would dominate short jobs.

#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jobcell_node::client::Client;
use jobcell_node::types::{JobInfo, State, SubmitResponse};

pub const BIN: &str = env!("CARGO_BIN_EXE_jobcell");

/// Waits for `p` (a job's cgroup or scratch dir) to be gone, panicking after `timeout`.
pub fn wait_gone(p: &Path, timeout: Duration) {
    let t = Instant::now();
    while p.exists() {
        assert!(t.elapsed() < timeout, "{} left", p.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Daemon tests share the `supervisors` cgroup and the machine's 2 cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: {test}: needs root (jobs run as other users in their own cgroups)");
        return false;
    }
    true
}

/// A directory (0755) removed at drop; never holds a mount (jobs mount only in their own
/// namespaces).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new_in(base: &str) -> TempDir {
        std::fs::create_dir_all(base).unwrap();
        let t = CString::new(format!("{base}/jobcell-daemon-test.XXXXXX")).unwrap();
        let mut b = t.into_bytes_with_nul();
        // SAFETY: `b` is the template's bytes with its NUL, which mkdtemp edits in place without
        // changing the length; `b` outlives the call.
        let p = unsafe { libc::mkdtemp(b.as_mut_ptr().cast()) };
        assert!(!p.is_null(), "mkdtemp in {base}");
        b.pop();
        let d = PathBuf::from(String::from_utf8(b).unwrap());
        // Jobs run as other users: they must reach their scratch dirs and the socket.
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        TempDir(d)
    }

    /// Under /var/lib/jobcell-itest: visible inside jobs (unlike /tmp, private there).
    pub fn itest() -> TempDir {
        std::fs::create_dir_all("/var/lib/jobcell-itest").unwrap();
        std::fs::set_permissions(
            "/var/lib/jobcell-itest",
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        TempDir::new_in("/var/lib/jobcell-itest")
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Daemon {
    child: Option<Child>,
    pub dir: TempDir,
    _scratch: TempDir,
    pub sock: PathBuf,
    pub state: PathBuf,
    pub scratch: PathBuf,
    /// The scratch base is the daemon's own (`<state>/scratch`, given no `--scratch-base`),
    /// where it mounts its scratch pool; unmounted at drop.
    node_scratch: bool,
    args: Vec<String>,
}

impl Daemon {
    pub fn start(args: &[&str]) -> Daemon {
        Self::start_with_config(args, None)
    }

    /// With a config file holding `config` (TOML).
    pub fn start_with_config(args: &[&str], config: Option<&str>) -> Daemon {
        let mut d = Self::prepare_with_config(args, config);
        d.launch();
        d
    }

    /// With a config file holding `config` and the node's own scratch base (`<state>/scratch`,
    /// no `--scratch-base`): with a `[scratch] disk` bound, the daemon mounts its scratch pool
    /// there.
    pub fn start_with_node_scratch(args: &[&str], config: &str) -> Daemon {
        let dir = TempDir::itest();
        let p = dir.0.join("config.toml");
        std::fs::write(&p, config).unwrap();
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.push("--config".into());
        args.push(p.to_string_lossy().into_owned());
        let scratch = TempDir::new_in("/dev/shm");
        let mut d = Daemon {
            child: None,
            sock: dir.0.join("api.sock"),
            state: dir.0.join("state"),
            scratch: dir.0.join("state/scratch"),
            node_scratch: true,
            dir,
            _scratch: scratch,
            args,
        };
        d.launch();
        d
    }

    /// With its state dir and socket in `dir` (which may already hold files, e.g. a config).
    pub fn start_in(dir: TempDir, args: &[&str]) -> Daemon {
        Self::launch_in(dir, args.iter().map(|s| s.to_string()).collect())
    }

    fn launch_in(dir: TempDir, args: Vec<String>) -> Daemon {
        let mut d = Self::prepare_in(dir, args);
        d.launch();
        d
    }

    /// Like [`Daemon::start_with_config`], not started yet: [`Daemon::launch_with`] starts it.
    pub fn prepare_with_config(args: &[&str], config: Option<&str>) -> Daemon {
        let dir = TempDir::new_in("/tmp");
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if let Some(c) = config {
            let p = dir.0.join("config.toml");
            std::fs::write(&p, c).unwrap();
            args.push("--config".into());
            args.push(p.to_string_lossy().into_owned());
        }
        Self::prepare_in(dir, args)
    }

    fn prepare_in(dir: TempDir, args: Vec<String>) -> Daemon {
        let scratch = TempDir::new_in("/dev/shm");
        Daemon {
            child: None,
            sock: dir.0.join("api.sock"),
            state: dir.0.join("state"),
            scratch: scratch.0.clone(),
            node_scratch: false,
            dir,
            _scratch: scratch,
            args,
        }
    }

    /// The daemon's command line (not started).
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("daemon")
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--socket")
            .arg(&self.sock);
        if !self.node_scratch {
            c.arg("--scratch-base").arg(&self.scratch);
        }
        c.args(&self.args);
        c
    }

    pub fn launch(&mut self) {
        self.launch_with(|_| {});
    }

    /// Start it with `adjust` applied to its command (environment, limits).
    pub fn launch_with(&mut self, adjust: impl FnOnce(&mut Command)) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.0.join("daemon.log"))
            .unwrap();
        let mut cmd = self.cmd();
        adjust(&mut cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t = Instant::now();
        while UnixStream::connect(&self.sock).is_err() {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited ({st}): {}", self.log());
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "daemon not ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The running daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon not running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("daemon.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Start the daemon again on the same state dir, socket and config.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill9 it first");
        self.launch();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill takes integers only; the pid is this harness's own unreaped child (the
            // daemon).
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            c.wait().unwrap();
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.sock)
    }

    /// Run the CLI against this daemon, in `cwd`, as `uid` (default: us), with extra env.
    pub fn cli_in(
        &self,
        cwd: &Path,
        uid: Option<(u32, u32)>,
        env: &[(&str, &str)],
        args: &[&str],
        stdin: Option<&str>,
    ) -> Output {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(cwd)
            .env("JOBCELL_SOCKET", &self.sock);
        for (k, v) in env {
            c.env(k, v);
        }
        if let Some((u, g)) = uid {
            c.uid(u).gid(g);
        }
        match stdin {
            Some(text) => {
                use std::io::Write;
                c.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let mut ch = c.spawn().unwrap();
                ch.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
                ch.wait_with_output().unwrap()
            }
            None => c.output().unwrap(),
        }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_as(None, args)
    }

    pub fn cli_as(&self, uid: Option<(u32, u32)>, args: &[&str]) -> Output {
        self.cli_in(Path::new("/"), uid, &[], args, None)
    }

    pub fn submit(&self, body: serde_json::Value) -> Vec<u64> {
        let r: SubmitResponse = self.client().call("POST", "/v1/jobs", Some(&body)).unwrap();
        r.ids
    }

    pub fn job(&self, id: u64) -> JobInfo {
        self.client()
            .call("GET", &format!("/v1/jobs/{id}"), None)
            .unwrap()
    }

    pub fn active(&self) -> Vec<JobInfo> {
        self.client().call("GET", "/v1/jobs", None).unwrap()
    }

    pub fn history(&self) -> Vec<JobInfo> {
        self.client()
            .call("GET", "/v1/history?limit=100000", None)
            .unwrap()
    }

    /// Wait until no job is unfinished (held jobs count as idle).
    pub fn wait_idle(&self, timeout: Duration) {
        let t = Instant::now();
        loop {
            let a = self.active();
            if a.iter().all(|j| j.state == State::Held) {
                return;
            }
            assert!(
                t.elapsed() < timeout,
                "{} jobs still unfinished after {timeout:?}: {:?}",
                a.len(),
                a.iter()
                    .take(5)
                    .map(|j| (j.id, j.state))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every job, finished or not, once each (a job may finish between the two requests:
    /// its finished record wins).
    pub fn all_jobs(&self) -> Vec<JobInfo> {
        let mut by_id = std::collections::BTreeMap::new();
        for j in self.active() {
            by_id.insert(j.id, j);
        }
        for j in self.history() {
            by_id.insert(j.id, j);
        }
        by_id.into_values().collect()
    }

    pub fn wait_state(&self, id: u64, want: State, timeout: Duration) -> JobInfo {
        let t = Instant::now();
        loop {
            let j = self.job(id);
            if j.state == want {
                return j;
            }
            assert!(
                t.elapsed() < timeout,
                "job {id} is {:?}, not {want:?}: {j:?}\n{}",
                j.state,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait until `f` holds for the job, returning it.
    pub fn wait_for(&self, id: u64, timeout: Duration, f: impl Fn(&JobInfo) -> bool) -> JobInfo {
        let t = Instant::now();
        loop {
            let j = self.job(id);
            if f(&j) {
                return j;
            }
            assert!(t.elapsed() < timeout, "job {id}: condition not met: {j:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `jobcell q -l ID` as a map.
    pub fn ad(&self, id: u64) -> std::collections::BTreeMap<String, String> {
        let ad: Vec<(String, String)> = self
            .client()
            .call("GET", &format!("/v1/jobs/{id}/ad"), None)
            .unwrap();
        ad.into_iter().collect()
    }

    pub fn metrics(&self) -> String {
        let (code, body) = self.client().raw("GET", "/metrics", None).unwrap();
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        String::from_utf8(body).unwrap()
    }

    /// The supervisor of a running job, once it has claimed the job.
    pub fn supervisor_of(&self, id: u64) -> (i32, u64) {
        let t = Instant::now();
        loop {
            let p = self.state.join(format!("jobs/{id}/claim-1"));
            if let Ok(d) = std::fs::read(&p) {
                let c: serde_json::Value = serde_json::from_slice(&d).unwrap();
                let s = &c["supervisor"];
                return (
                    s["pid"].as_i64().unwrap() as i32,
                    s["starttime"].as_u64().unwrap(),
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no claim for job {id}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Every supervisor pid recorded in claim files.
    pub fn supervisor_pids(&self) -> Vec<(i32, u64)> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.state.join("jobs")) else {
            return out;
        };
        for d in rd.flatten() {
            for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                if f.file_name().to_string_lossy().starts_with("claim-") {
                    let Ok(data) = std::fs::read(f.path()) else {
                        continue;
                    };
                    let c: serde_json::Value = serde_json::from_slice(&data).unwrap();
                    if let Some(s) = c.get("supervisor") {
                        out.push((
                            s["pid"].as_i64().unwrap() as i32,
                            s["starttime"].as_u64().unwrap(),
                        ));
                    }
                }
            }
        }
        out
    }
}

pub fn starttime(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Remove what is left, stop the daemon, make sure every supervisor we caused is gone.
        if self.child.is_some() {
            if let Ok(jobs) = self.client().call::<Vec<JobInfo>>("GET", "/v1/jobs", None) {
                for j in jobs {
                    let _ = self.client().call::<JobInfo>(
                        "DELETE",
                        &format!("/v1/jobs/{}", j.id),
                        None,
                    );
                }
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(15) {
                    match self.client().call::<Vec<JobInfo>>("GET", "/v1/jobs", None) {
                        Ok(v) if v.iter().any(|j| j.state.active()) => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        _ => break,
                    }
                }
            }
        }
        self.stop();
        let t = Instant::now();
        for (pid, st) in self.supervisor_pids() {
            while starttime(pid) == Some(st) {
                if t.elapsed() > Duration::from_secs(15) {
                    // Ours (a supervisor this test's daemon started, same start time).
                    // SAFETY: kill takes integers only; the pid was checked (same start time) to be
                    // a supervisor this test's daemon started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        remove_supervisors_cgroup();
        if self.node_scratch {
            unmount_scratch_pool(&self.scratch);
        }
    }
}

/// Unmount what is mounted at exactly `path` (a test daemon's scratch pool; its loop device
/// detaches itself), before the test's dir is removed.
pub fn unmount_scratch_pool(path: &Path) {
    let me = path.display().to_string();
    loop {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if !mi
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some(me.as_str()))
        {
            return;
        }
        let c = CString::new(me.as_str()).unwrap();
        // SAFETY: `c` is a valid C string; only the mount at exactly this path goes.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            eprintln!("unmounting {me}: {}", std::io::Error::last_os_error());
            return;
        }
    }
}

/// The daemon removes its (empty) supervisors cgroup when it stops; after a SIGKILLed daemon,
/// one that exited on an error or one stopped while the cgroup was in use, the test does (only
/// ours: `jobcell/supervisors` under this process's cgroups).
pub fn remove_supervisors_cgroup() {
    let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for l in cg.lines() {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or(""));
        let Some(first) = ctrls.split(',').next().filter(|c| !c.is_empty()) else {
            continue;
        };
        if ctrls.contains("name=") {
            continue;
        }
        let d = Path::new(&format!("/sys/fs/cgroup/{first}"))
            .join(path.trim_start_matches('/'))
            .join("jobcell/supervisors");
        let _ = std::fs::remove_dir(&d);
    }
}

/// The ids `submit -q` printed (the submit must have succeeded).
pub fn ids(o: &Output) -> Vec<u64> {
    assert!(o.status.success(), "{}", err(o));
    out(o)
        .lines()
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not an id: {l}"))
        })
        .collect()
}

pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// uid and gid of `nobody`.
pub fn nobody() -> (u32, u32) {
    let o = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    let g = Command::new("id").args(["-g", "nobody"]).output().unwrap();
    (
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap(),
        String::from_utf8_lossy(&g.stdout).trim().parse().unwrap(),
    )
}

pub fn owner_of(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().uid()
}

/// (uid, gid) of a system user made for the tests if missing (kept: uids are cheap, and
/// suites running at the same time may use it).
pub fn test_user(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").arg(flag).arg(name).output().ok()?;
        String::from_utf8(o.stdout).ok()?.trim().parse().ok()
    };
    if id("-u").is_none() {
        let made = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(name)
            .status()
            .ok()?
            .success();
        if !made {
            return None;
        }
    }
    Some((id("-u")?, id("-g")?))
}

/// One HTTP request to `sock` from a forked child running as `who` (root when `None`); the
/// status (0 when no answer came) and the body.
pub fn http_as(
    sock: &Path,
    who: Option<(u32, u32)>,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let resp = raw_request_as(sock, who, &req);
    let code = http_status(&resp);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

/// The status code of the HTTP answer `resp`; 0 when it has none.
pub fn http_status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Sends the bytes `req` to `sock` from a forked child running as `who` (root when `None`)
/// and returns the whole answer. The daemon checks the peer uid of the connection, which is
/// fixed at connect: so the child switches identity first, then connects.
pub fn raw_request_as(sock: &Path, who: Option<(u32, u32)>, req: &[u8]) -> String {
    let addr = unix_sockaddr(sock);
    // SAFETY: the child makes only raw syscalls on memory prepared before the fork (`addr`,
    // `req`, a stack buffer).
    let (pid, mut answer) = unsafe {
        fork_with_pipe(|out| {
            if let Some((uid, gid)) = who {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    libc::_exit(2);
                }
            }
            let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if libc::connect(
                s,
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as u32,
            ) != 0
            {
                libc::_exit(3);
            }
            let mut off = 0;
            while off < req.len() {
                let n = libc::write(s, req[off..].as_ptr().cast(), req.len() - off);
                if n <= 0 {
                    break;
                }
                off += n as usize;
            }
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(s, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                libc::write(out, buf.as_ptr().cast(), n as usize);
            }
        })
    };
    let mut resp = Vec::new();
    std::io::Read::read_to_end(&mut answer, &mut resp).unwrap();
    // SAFETY: `pid` is our own child, reaped only here; a null status pointer is allowed.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    String::from_utf8_lossy(&resp).into_owned()
}

impl Daemon {
    /// Submits `count` small jobs (0.1 CPU, 32 MiB) running `argv` as `uid` (root when
    /// `None`), with the extra submit options `extra`; their ids.
    pub fn submit_small(
        &self,
        uid: Option<(u32, u32)>,
        count: u32,
        extra: &[&str],
        argv: &[&str],
    ) -> Vec<u64> {
        let count = count.to_string();
        let mut args = vec![
            "submit", "-q", "--count", &count, "--cpus", "0.1", "--memory", "32",
        ];
        args.extend_from_slice(extra);
        args.push("--");
        args.extend_from_slice(argv);
        let o = self.cli_as(uid, &args);
        assert!(o.status.success(), "{}", err(&o));
        ids(&o)
    }
}

/// The two system users `jobcell-test-a` and `jobcell-test-b`, made if missing; `None` after a
/// loud line naming `test` when they cannot be made.
pub fn test_users_or_skip(test: &str) -> Option<((u32, u32), (u32, u32))> {
    Some((
        test_user_or_skip(test, "jobcell-test-a")?,
        test_user_or_skip(test, "jobcell-test-b")?,
    ))
}

/// The system user `name` (see [`test_user`]); `None` after a loud line naming `test` when it
/// cannot be made.
pub fn test_user_or_skip(test: &str, name: &str) -> Option<(u32, u32)> {
    let user = test_user(name);
    if user.is_none() {
        eprintln!("SKIPPED: {test}: cannot create the test user {name}");
    }
    user
}

/// The address of the Unix socket at `p`, which must fit in `sun_path`.
pub fn unix_sockaddr(p: &Path) -> libc::sockaddr_un {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = p.as_os_str().as_bytes();
    assert!(
        b.len() < a.sun_path.len(),
        "socket path too long: {}",
        p.display()
    );
    for (d, s) in a.sun_path.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    a
}

/// Forks a child that runs `child` with the write end of a pipe; the child's pid and the read
/// end, which reaches end of file once the child has exited.
///
/// # Safety
/// `child` runs in the forked copy of a multi-threaded process: it must make only
/// async-signal-safe calls on memory prepared before the fork (no allocation: another thread
/// may have held malloc's lock). The child exits with status 0 when `child` returns.
pub unsafe fn fork_with_pipe(child: impl FnOnce(libc::c_int)) -> (libc::pid_t, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is the two-element array pipe fills.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child runs only `child`, which the caller vouches for (see above).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: the read end is the child's own copy, closed once, here.
        unsafe { libc::close(fds[0]) };
        child(fds[1]);
        // SAFETY: _exit ends the child without running the test binary's destructors.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: the write end is the parent's own copy, closed once, here.
    unsafe { libc::close(fds[1]) };
    // SAFETY: the read end came from pipe above and nothing else owns it now; the File closes it.
    (pid, unsafe {
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0])
    })
}
