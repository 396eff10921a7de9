//! Helpers for the integration tests: run the real `jobcell` binary and look at the host.
//!
//! Every job gets a scratch base inside a per-test directory under /var/lib/jobcell-itest (not
//! under /tmp, so the jobs see the scratch base covered by a tmpfs, as on a real node, and
//! wherever the checkout lives), and the tests never touch /var/lib/jobcell.

#![allow(dead_code)]

use std::ffi::CString;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const JOBCELL: &str = env!("CARGO_BIN_EXE_jobcell");

/// No job of this suite should take longer; a hung jobcell fails the test instead of the suite.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(30);

/// Returns true (after a loud line on stderr) when the test cannot run here.
pub fn skip_unless_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root");
        return true;
    }
    false
}

/// A string no other process on the host has in its argv: pid of the test process + counter.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}{}x{n}x{t}", std::process::id())
}

/// A number for `sleep` whose text is unique on the host, e.g. `1000.004242007`.
pub fn unique_sleep(secs: u32) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{secs}.{:07}{:02}",
        std::process::id() % 10_000_000,
        n % 100
    )
}

/// A per-test directory (mode 0755 so `nobody` can pass through), removed on drop.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Under `$JOBCELL_TEST_DIR`, else /var/lib/jobcell-itest: never under /tmp, /var/tmp or
    /// /dev/shm (private in jobs, so host files there are invisible to them) nor under a
    /// checkout that `nobody` may not be able to traverse (/root/...).
    pub fn new(tag: &str) -> TestDir {
        let parent = std::env::var_os("JOBCELL_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/jobcell-itest"));
        std::fs::create_dir_all(&parent).unwrap();
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self::new_in(&parent, tag)
    }

    /// Under another parent (e.g. the host's /tmp).
    pub fn new_in(parent: &Path, tag: &str) -> TestDir {
        std::fs::create_dir_all(parent).unwrap();
        let tmpl = CString::new(format!("{}/itest-{tag}-XXXXXX", parent.display())).unwrap();
        let raw = tmpl.into_raw();
        // SAFETY: `raw` is a NUL-terminated template from CString::into_raw that mkdtemp edits in
        // place without changing its length.
        let r = unsafe { libc::mkdtemp(raw) };
        // SAFETY: `raw` came from CString::into_raw just above and is taken back exactly once;
        // mkdtemp kept its length and NUL.
        let tmpl = unsafe { CString::from_raw(raw) };
        assert!(!r.is_null(), "mkdtemp: {}", std::io::Error::last_os_error());
        let path = PathBuf::from(tmpl.into_string().unwrap());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The scratch base for this test's jobs (created on first use by jobcell itself or here).
    pub fn base(&self) -> PathBuf {
        self.path.join("scratch")
    }

    /// A subdirectory with the given mode.
    pub fn subdir(&self, name: &str, mode: u32) -> PathBuf {
        let p = self.path.join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// Asserts the scratch base holds nothing (missing counts as empty).
    pub fn assert_base_empty(&self) {
        assert_dir_empty(&self.base());
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // Root can remove chmod-000 trees; a failed scratch removal must not fail the drop too.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn assert_dir_empty(p: &Path) {
    match std::fs::read_dir(p) {
        Ok(rd) => {
            let left: Vec<_> = rd.map(|e| e.unwrap().file_name()).collect();
            assert!(left.is_empty(), "{} is not empty: {left:?}", p.display());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("{}: {e}", p.display()),
    }
}

/// The result of one finished `jobcell run`.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Out {
    /// jobcell's exit code (panics if jobcell itself died of a signal).
    pub fn code(&self) -> i32 {
        match self.status.code() {
            Some(c) => c,
            None => panic!("jobcell died of a signal: {self:?}"),
        }
    }

    /// Asserts jobcell exited with `code`, showing everything it printed otherwise.
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "jobcell exit status\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// The value of `key=value` lines the job printed.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
}

/// A `jobcell run` invocation.
pub struct Job {
    cmd: Command,
}

impl Job {
    pub fn new(base: &Path) -> Job {
        let mut cmd = Command::new(JOBCELL);
        cmd.arg("run").arg("--scratch-base").arg(base);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Job { cmd }
    }

    /// A `jobcell run` with the node config `config` and the scratch base it names (no
    /// `--scratch-base`: the node's own base, as a node's jobs get it).
    pub fn with_config(config: &Path) -> Job {
        let mut cmd = Command::new(JOBCELL);
        cmd.arg("run").arg("--config").arg(config);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Job { cmd }
    }

    /// A jobcell option (before `--`).
    pub fn opt(mut self, a: impl AsRef<std::ffi::OsStr>) -> Job {
        self.cmd.arg(a);
        self
    }

    pub fn opts<I, S>(mut self, a: I) -> Job
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(a);
        self
    }

    /// Run jobcell itself as an unprivileged caller `uid:gid` (rootless mode).
    pub fn by_caller(mut self, uid: u32, gid: u32) -> Job {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the forked child before exec and calls only setgroups (with a
        // local array), setresgid and setresuid, which are async-signal-safe and allocate nothing.
        unsafe {
            self.cmd.pre_exec(move || {
                let g: [libc::gid_t; 1] = [gid];
                if libc::setgroups(1, g.as_ptr()) != 0
                    || libc::setresgid(gid, gid, gid) != 0
                    || libc::setresuid(uid, uid, uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self
    }

    /// Run jobcell pinned to these CPUs (as `taskset` would).
    pub fn on_cpus(mut self, cpus: &[usize]) -> Job {
        use std::os::unix::process::CommandExt;
        // SAFETY: cpu_set_t is a plain bit array, for which all-zero (the empty set) is valid.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in cpus {
            // SAFETY: CPU_SET writes one bit of `set`; callers pass CPU numbers below CPU_SETSIZE.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        // SAFETY: the closure runs in the forked child before exec and calls only sched_setaffinity
        // with the moved-in `set` of the size passed, which is async-signal-safe.
        unsafe {
            self.cmd.pre_exec(move || {
                let size = std::mem::size_of::<libc::cpu_set_t>();
                if libc::sched_setaffinity(0, size, &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self
    }

    /// A variable in jobcell's own environment (not the job's).
    pub fn host_env(mut self, k: &str, v: &str) -> Job {
        self.cmd.env(k, v);
        self
    }

    pub fn command(mut self, argv: &[&str]) -> Command {
        self.cmd.arg("--").args(argv);
        self.cmd
    }

    /// Runs `argv` as the job and waits (with a timeout).
    pub fn run(self, argv: &[&str]) -> Out {
        let started = Instant::now();
        let child = self.command(argv).spawn().expect("spawning jobcell");
        finish(child, started)
    }

    /// Runs `sh -c script` as the job.
    pub fn sh(self, script: &str) -> Out {
        self.run(&["sh", "-c", script])
    }

    /// Starts `sh -c script` as the job without waiting.
    pub fn spawn_sh(self, script: &str) -> Running {
        let started = Instant::now();
        let child = self
            .command(&["sh", "-c", script])
            .spawn()
            .expect("spawning jobcell");
        Running { child, started }
    }
}

/// A job started in the background. Dropping it kills jobcell (its init dies with it).
pub struct Running {
    child: Child,
    started: Instant,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill takes integers only; the pid is this Job's own unreaped child, so it names
        // no other process.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill jobcell");
    }

    pub fn wait(self) -> Out {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped (ManuallyDrop), so `child` is moved out exactly once.
        let child = unsafe { std::ptr::read(&me.child) };
        finish(child, me.started)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects stdout/stderr (when piped) and the status, killing jobcell if it hangs.
pub fn finish(mut child: Child, started: Instant) -> Out {
    let so = child.stdout.take();
    let se = child.stderr.take();
    let t1 = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut so) = so {
            let _ = so.read_to_string(&mut s);
        }
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut se) = se {
            let _ = se.read_to_string(&mut s);
        }
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > JOB_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("jobcell did not finish within {JOB_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    Out {
        status,
        stdout: t1.join().unwrap(),
        stderr: t2.join().unwrap(),
        elapsed,
    }
}

/// Waits for `p` to exist (a job's "ready" marker), panicking after `timeout`.
pub fn wait_for_file(p: &Path, timeout: Duration) {
    let t = Instant::now();
    while !p.exists() {
        assert!(
            t.elapsed() < timeout,
            "{} did not appear within {timeout:?}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Host pids whose argv contains `needle` inside one argument.
pub fn host_pids_with_arg(needle: &str) -> Vec<i32> {
    host_pids_where(|a| a.contains(needle))
}

/// Host pids with `arg` as one whole argument (e.g. a unique `sleep` time).
pub fn host_pids_with_exact_arg(arg: &str) -> Vec<i32> {
    host_pids_where(|a| a == arg)
}

fn host_pids_where(pred: impl Fn(&str) -> bool) -> Vec<i32> {
    host_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                cmd.split(|b| *b == 0)
                    .any(|a| pred(&String::from_utf8_lossy(a)))
            })
        })
        .collect()
}

/// Every host pid but this test process's.
pub fn host_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .collect()
}

/// A host process the test started, killed by its pid when dropped.
pub struct HostProc(pub Child);

impl HostProc {
    pub fn sleep(secs: &str) -> HostProc {
        HostProc(
            Command::new("sleep")
                .arg(secs)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    pub fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Creates the user `name` with `useradd` if it does not exist yet.
pub fn ensure_user(name: &str) -> bool {
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    if ok(Command::new("id").arg("-u").arg(name).stdout(Stdio::null())) {
        return true;
    }
    ok(Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .arg(name))
}

/// Why a scratch pool (a loop-mounted btrfs with quotas) cannot be made here, if it cannot.
pub fn scratch_pool_missing() -> Option<String> {
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.lines().any(|l| l.trim_end().ends_with("btrfs")) {
        return Some("the kernel has no btrfs (the scratch pool's filesystem)".into());
    }
    if ![
        "/usr/sbin/mkfs.btrfs",
        "/sbin/mkfs.btrfs",
        "/usr/bin/mkfs.btrfs",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
    {
        return Some("mkfs.btrfs is missing (install btrfs-progs)".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control".into());
    }
    None
}

/// A scratch pool mounted at `path` by jobcell during a test: unmounted on drop (its loop
/// device detaches itself with the mount). Only a mount at exactly `path` is touched.
pub struct PoolMount(pub PathBuf);

impl PoolMount {
    pub fn is_mounted(&self) -> bool {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let me = self.0.display().to_string();
        mi.lines()
            .any(|l| l.split_whitespace().nth(4) == Some(me.as_str()))
    }
}

impl Drop for PoolMount {
    fn drop(&mut self) {
        while self.is_mounted() {
            let c = CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: `c` is a valid C string; only the mount at exactly this path goes.
            if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
                eprintln!(
                    "unmounting the scratch pool {}: {}",
                    self.0.display(),
                    std::io::Error::last_os_error()
                );
                break;
            }
        }
    }
}

/// Loop devices whose backing file is `image`.
pub fn loop_devices_backed_by(image: &Path) -> Vec<String> {
    let want = image.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with("loop") {
            continue;
        }
        let f = std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
        if f.trim_end() == want {
            out.push(n);
        }
    }
    out
}

/// Puts /bin/busybox with links for `applets` in `tree`/bin and packs all of `tree` (with what
/// else the caller put there) as the tarball `tar`: a minimal image to import.
pub fn pack_busybox_tree(tree: &Path, applets: &[&str], tar: &Path) {
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    for applet in applets {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet)).unwrap();
    }
    let packed = Command::new("tar")
        .arg("-C")
        .arg(tree)
        .arg("-cf")
        .arg(tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(packed.success(), "tar of {}", tree.display());
}
