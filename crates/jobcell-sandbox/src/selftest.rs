//! `jobcell selftest`: attack this node's isolation from inside real jobs and report what held.
//!
//! Each row starts one or more real `jobcell run` jobs (of the `jobcell` binary given in
//! [`Options::exe`]), and the job tries one attack. Syscalls without a shell tool are made by
//! [`probe`], the binary's hidden `jobcell selftest-probe NAME ARGS...` mode (one syscall, one
//! line of output), so the suite needs only /bin/sh and coreutils on the node. A site admin
//! runs it as root after installing or upgrading the kernel: an attack that works makes the
//! exit status 1. The suite is in this crate because every attack is against what the launcher
//! sets up; it spawns `jobcell` processes and reads their output on threads, never launching a
//! job in-process.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SelftestError {
    #[error("selftest must run as root (it attacks jobs run as nobody, as on a node)")]
    NotRoot,
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    #[error(transparent)]
    Config(#[from] jobcell_spec::ConfigError),
    #[error("unknown probe {0}")]
    UnknownProbe(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SelftestError {
    let what = what.into();
    move |err| SelftestError::Io { what, err }
}

/// What the suite runs with.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `jobcell` binary: each attack is a `jobcell run` of it, and its
    /// `selftest-probe` mode makes the syscalls.
    pub exe: PathBuf,
    /// A registered image to run the image attacks in; without, a small image of the
    /// binary's own libraries is made in the work dir.
    pub image: Option<String>,
    /// Parent of the suite's temporary work dir. It must be on a filesystem jobs see at the
    /// same path and that is not mounted nosuid (the setuid attack needs a real setuid file).
    pub work_dir: PathBuf,
    /// Extra options for every `jobcell run` (e.g. --config FILE).
    pub run_opt: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The attack was refused.
    Pass,
    /// The attack worked.
    Fail,
    /// The attack could not be tried here.
    Skip,
}

/// One attack and what came of it.
#[derive(Debug, Clone)]
pub struct Row {
    pub attack: String,
    pub expected: String,
    pub seen: String,
    pub verdict: Verdict,
}

/// Every row, in the order they ran, and how long the suite took.
#[derive(Debug, Clone)]
pub struct SuiteReport {
    pub rows: Vec<Row>,
    pub seconds: f64,
}

impl SuiteReport {
    fn count(&self, v: Verdict) -> usize {
        self.rows.iter().filter(|r| r.verdict == v).count()
    }
    /// Attacks that were refused.
    pub fn passed(&self) -> usize {
        self.count(Verdict::Pass)
    }
    /// Attacks that worked.
    pub fn failed(&self) -> usize {
        self.count(Verdict::Fail)
    }
    pub fn skipped(&self) -> usize {
        self.count(Verdict::Skip)
    }
}

fn row(attack: &str, expected: &str, seen: impl Into<String>, held: bool) -> Row {
    Row {
        attack: attack.into(),
        expected: expected.into(),
        seen: seen.into(),
        verdict: if held { Verdict::Pass } else { Verdict::Fail },
    }
}

fn skip(attack: &str, expected: &str, why: impl Into<String>) -> Row {
    Row {
        attack: attack.into(),
        expected: expected.into(),
        seen: format!("skipped: {}", why.into()),
        verdict: Verdict::Skip,
    }
}

const JOB_TIMEOUT: Duration = Duration::from_secs(20);
const NOBODY: u32 = 65534;

/// One finished job.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn first(&self) -> String {
        self.stdout.lines().next().unwrap_or("").trim().to_string()
    }
    fn value(&self, key: &str) -> Option<&str> {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
    /// What jobcell or the job said when a probe printed nothing.
    fn why(&self) -> String {
        let e = self.stderr.lines().last().unwrap_or("").trim();
        format!("no output (exit {:?}: {e})", self.code)
    }
    /// A probe's "denied:ERRNO" line: true when the attack was refused.
    fn denied(&self) -> (bool, String) {
        let f = self.first();
        if f.is_empty() {
            // jobcell refused to start the job at all: the attack did not run; not a pass.
            return (false, self.why());
        }
        (f.starts_with("denied:"), f)
    }
}

struct Suite {
    exe: PathBuf,
    work: PathBuf,
    base: PathBuf,
    /// `--run-opt`s with the node's config, but `[run] job_uids = "none"`: jobs run as
    /// nobody itself, the uid of the host processes they attack and of each other (the
    /// hardest case; a uid of their own would stop some attacks before the namespaces do).
    run_opt: Vec<String>,
    /// `--run-opt`s as given, for the row about per-job uids.
    site_run_opt: Vec<String>,
}

/// `run_opt` with its `--config` (else the node config, if there is one) replaced by a copy in
/// `work` that sets `[run] job_uids = "none"`.
fn shared_uid_run_opts(run_opt: &[String], work: &Path) -> Result<Vec<String>, SelftestError> {
    let mut opts = Vec::new();
    let mut config = None;
    let mut it = run_opt.iter();
    while let Some(o) = it.next() {
        if let Some(p) = o.strip_prefix("--config=") {
            config = Some(PathBuf::from(p));
        } else if o == "--config" {
            config = it.next().map(PathBuf::from);
        } else {
            opts.push(o.clone());
        }
    }
    let config = config.or_else(|| {
        let node = Path::new(jobcell_spec::DEFAULT_CONFIG_PATH);
        node.exists().then(|| node.to_path_buf())
    });
    let text = match &config {
        Some(p) => std::fs::read_to_string(p).map_err(io_err(format!("config {}", p.display())))?,
        None => String::new(),
    };
    let name = config.map(|p| p.display().to_string()).unwrap_or_default();
    let shared = work.join("shared-uid.toml");
    std::fs::write(&shared, jobcell_spec::with_job_uids(&text, &name, "none")?)
        .map_err(io_err(shared.display().to_string()))?;
    opts.push(format!("--config={}", shared.display()));
    Ok(opts)
}

impl Suite {
    fn cmd(&self, opts: &[&str], argv: &[&str]) -> Command {
        self.cmd_with(&self.run_opt, opts, argv)
    }

    fn cmd_with(&self, run_opt: &[String], opts: &[&str], argv: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("run").arg("--scratch-base").arg(&self.base);
        c.args(run_opt).args(opts).arg("--").args(argv);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, opts: &[&str], argv: &[&str]) -> Out {
        match self.cmd(opts, argv).spawn() {
            Ok(child) => finish(child),
            Err(e) => Out {
                code: None,
                stdout: String::new(),
                stderr: format!("spawning jobcell: {e}"),
            },
        }
    }

    fn sh(&self, opts: &[&str], script: &str) -> Out {
        self.run(opts, &["/bin/sh", "-c", script])
    }

    /// The probe binary, as the job sees it.
    fn probe_path(&self) -> String {
        self.work.join("bin/jobcell").display().to_string()
    }

    fn probe(&self, opts: &[&str], name: &str, args: &[&str]) -> Out {
        let p = self.probe_path();
        let mut argv = vec![p.as_str(), "selftest-probe", name];
        argv.extend_from_slice(args);
        self.run(opts, &argv)
    }
}

fn finish(mut child: Child) -> Out {
    let started = Instant::now();
    let so = child.stdout.take();
    let se = child.stderr.take();
    let t1 = std::thread::spawn(move || read_all(so));
    let t2 = std::thread::spawn(move || read_all(se));
    let code = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st.code(),
            Ok(None) => {}
            Err(_) => break None,
        }
        if started.elapsed() > JOB_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Out {
        code,
        stdout: t1.join().unwrap_or_default(),
        stderr: t2.join().unwrap_or_default(),
    }
}

fn read_all<R: Read>(r: Option<R>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}

/// A background process the suite started; killed (by its pid) on drop.
struct Bg(Child);

impl Drop for Bg {
    /// SIGTERM first: a jobcell killed with SIGKILL would leave its cgroup and scratch dir to
    /// the next run's garbage collection.
    fn drop(&mut self) {
        // SAFETY: kill with a pid of a child this suite started and has not reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let done = wait_until(Duration::from_secs(5), || {
            !matches!(self.0.try_wait(), Ok(None))
        });
        if !done {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A string no other process has in its argv.
fn unique(tag: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("jobcell-selftest-{tag}-{}-{t}", std::process::id())
}

/// Host pids with an argv element containing `needle` (not this process).
fn host_pids_with_arg(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            if c.split(|b| *b == 0)
                .any(|a| String::from_utf8_lossy(a).contains(needle))
            {
                out.push(pid);
            }
        }
    }
    out
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn mkdtemp(parent: &Path, tag: &str) -> Result<PathBuf, SelftestError> {
    std::fs::create_dir_all(parent).map_err(io_err(parent.display().to_string()))?;
    let tmpl = CString::new(format!("{}/{tag}-XXXXXX", parent.display())).map_err(|_| {
        SelftestError::Io {
            what: parent.display().to_string(),
            err: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        }
    })?;
    let raw = tmpl.into_raw();
    // SAFETY: raw is a NUL-terminated template of ours that mkdtemp rewrites in place.
    let r = unsafe { libc::mkdtemp(raw) };
    let made = std::io::Error::last_os_error();
    // SAFETY: raw came from CString::into_raw just above and its length is unchanged.
    let tmpl = unsafe { CString::from_raw(raw) };
    if r.is_null() {
        return Err(SelftestError::Io {
            what: format!("creating a temporary dir in {}", parent.display()),
            err: made,
        });
    }
    let p = PathBuf::from(tmpl.into_string().unwrap_or_default());
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
        .map_err(io_err(p.display().to_string()))?;
    Ok(p)
}

/// Removes the work dir on drop (it holds only files this suite made; jobs' mounts live in
/// their own mount namespaces, and jobcell removes each scratch dir itself).
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var_os("JOBCELL_SELFTEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Starts `argv` on the host as nobody (the uid jobs run as), so only isolation, not file
/// permissions, stands between a job and it.
fn host_as_nobody(argv: &[&str]) -> std::io::Result<Child> {
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: the hook runs in the forked child before exec and makes only async-signal-safe
    // system calls.
    unsafe {
        c.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(NOBODY, NOBODY, NOBODY) != 0
                || libc::setresuid(NOBODY, NOBODY, NOBODY) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.spawn()
}

/// Runs every attack and returns the rows. An attack that cannot be tried here is a skipped
/// row, not an error; errors are for a suite that cannot start (not root, no work dir).
pub fn run(a: &Options) -> Result<SuiteReport, SelftestError> {
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Err(SelftestError::NotRoot);
    }
    let t0 = Instant::now();
    let exe = a.exe.clone();
    let work = mkdtemp(&a.work_dir, "jobcell-selftest")?;
    let _guard = WorkDir(work.clone());
    let base = work.join("scratch");
    std::fs::create_dir(&base).map_err(io_err(base.display().to_string()))?;
    // The probe binary where a job (running as nobody) can execute it.
    let bin = work.join("bin");
    std::fs::create_dir(&bin).map_err(io_err(bin.display().to_string()))?;
    let probe = bin.join("jobcell");
    if std::fs::hard_link(&exe, &probe).is_err() {
        std::fs::copy(&exe, &probe).map_err(io_err("copying the jobcell binary for the probes"))?;
    }
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755))
        .map_err(io_err(probe.display().to_string()))?;
    let s = Suite {
        exe,
        work: work.clone(),
        base,
        run_opt: shared_uid_run_opts(&a.run_opt, &work)?,
        site_run_opt: a.run_opt.clone(),
    };

    let mut rows = Vec::new();
    host_process_rows(&s, &mut rows);
    neighbour_rows(&s, &mut rows);
    job_uid_row(&s, &mut rows);
    host_view_rows(&s, &mut rows);
    privilege_rows(&s, &mut rows);
    image_rows(&s, a.image.as_deref(), &mut rows);
    write_rows(&s, &mut rows);
    device_rows(&s, &mut rows);
    limit_rows(&s, &mut rows);
    misc_rows(&s, &mut rows);
    Ok(SuiteReport {
        rows,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

// ------------------------------------------------------------------------------------ rows

/// Signal, ptrace and process_vm_readv a host process of the job's own uid.
fn host_process_rows(s: &Suite, rows: &mut Vec<Row>) {
    let marker = unique("host");
    let child = host_as_nobody(&["/bin/sh", "-c", &format!(": {marker}; exec sleep 60")]);
    let Ok(child) = child else {
        for a in [
            "kill a host process",
            "ptrace a host process",
            "process_vm_readv a host process",
        ] {
            rows.push(skip(
                a,
                "denied",
                "could not start a host process as nobody",
            ));
        }
        return;
    };
    let mut host = Bg(child);
    let pid = host.0.id().to_string();
    for (attack, probe) in [
        ("kill a host process (same uid)", "kill"),
        ("ptrace a host process (same uid)", "ptrace"),
        ("process_vm_readv a host process", "vmread"),
    ] {
        let o = s.probe(&[], probe, &[&pid]);
        let (held, seen) = o.denied();
        let alive = matches!(host.0.try_wait(), Ok(None));
        rows.push(row(attack, "denied", seen, held && alive));
    }
}

/// Attacks on a concurrent job of the same uid: its processes, /tmp, scratch, environment.
/// Two jobs of the default user at once: with `[run] job_uids` each runs as a uid of its own,
/// so per-uid kernel limits (processes, inotify, message queues) are not shared.
fn job_uid_row(s: &Suite, rows: &mut Vec<Row>) {
    let attack = "two default-user jobs share a uid";
    let start = || {
        s.cmd_with(
            &s.site_run_opt,
            &[],
            &["/bin/sh", "-c", "id -u; exec sleep 1"],
        )
        .spawn()
    };
    let (Ok(a), Ok(b)) = (start(), start()) else {
        rows.push(skip(attack, "no", "could not start the jobs"));
        return;
    };
    let (a, b) = (finish(a), finish(b));
    let (ua, ub) = (a.stdout.trim(), b.stdout.trim());
    rows.push(match (a.code, b.code) {
        (Some(0), Some(0)) if ua == ub => {
            row(attack, "no", format!("yes: both ran as {ua}"), false)
        }
        (Some(0), Some(0)) => row(attack, "no", format!("no: {ua} and {ub}"), true),
        _ => skip(
            attack,
            "no",
            format!("a job failed: {}{}", a.stderr.trim(), b.stderr.trim()),
        ),
    });
}

fn neighbour_rows(s: &Suite, rows: &mut Vec<Row>) {
    let marker = unique("nb");
    let secret_env = format!("JOBCELL_SELFTEST_SECRET={marker}");
    let script = format!(
        ": {marker}; echo {marker} > /tmp/secret; chmod 644 /tmp/secret; \
         echo scratch=$JOBCELL_SCRATCH; echo ready; exec sleep 30"
    );
    let mut cmd = s.cmd(&["--env", &secret_env], &["/bin/sh", "-c", &script]);
    let names = [
        "kill a concurrent job (same uid)",
        "ptrace a concurrent job",
        "process_vm_readv a concurrent job",
        "read a concurrent job's /tmp",
        "list a concurrent job's scratch dir",
        "read a concurrent job's environ/cmdline",
    ];
    let Ok(mut child) = cmd.spawn() else {
        for n in names {
            rows.push(skip(n, "denied", "could not start the neighbour job"));
        }
        return;
    };
    let mut lines = BufReader::new(child.stdout.take().expect("piped"));
    let _nb = Bg(child);
    let mut scratch = String::new();
    let mut ready = false;
    let mut l = String::new();
    while lines.read_line(&mut l).map(|n| n > 0).unwrap_or(false) {
        if let Some(v) = l.trim().strip_prefix("scratch=") {
            scratch = v.to_string();
        }
        if l.trim() == "ready" {
            ready = true;
            break;
        }
        l.clear();
    }
    let pids = if ready {
        let mut p = Vec::new();
        wait_until(Duration::from_secs(5), || {
            p = host_pids_with_arg(&marker);
            p.len() >= 2
        });
        p
    } else {
        Vec::new()
    };
    if pids.is_empty() {
        for n in names {
            rows.push(skip(n, "denied", "the neighbour job did not start"));
        }
        return;
    }
    // The job's shell (sleep now) is the last one started.
    let target = pids.iter().max().copied().unwrap_or(pids[0]).to_string();
    for (attack, probe) in [
        (names[0], "kill"),
        (names[1], "ptrace"),
        (names[2], "vmread"),
    ] {
        let o = s.probe(&[], probe, &[&target]);
        let (held, seen) = o.denied();
        rows.push(row(attack, "denied", seen, held));
    }
    let o = s.sh(
        &[],
        "cat /tmp/secret 2>/dev/null && echo read || echo denied:not-found",
    );
    let held = !o.stdout.contains(&marker) && o.first().starts_with("denied");
    rows.push(row(names[3], "not found", o.first(), held));
    let o = s.sh(
        &[],
        &format!(
            "ls -A '{scratch}' >/dev/null 2>&1 && echo listed || echo denied:not-found; \
             cat '{scratch}'/*/secret 2>/dev/null"
        ),
    );
    let held = !o.stdout.contains(&marker) && o.first().starts_with("denied");
    rows.push(row(names[4], "not found", o.first(), held));
    let o = s.probe(&[], "find-marker", &[&reversed(&marker)]);
    rows.push(row(
        names[5],
        "not found",
        o.first(),
        o.first() == "found=0",
    ));
}

/// Looking for host processes through /proc, /sys/fs/cgroup and /proc/1/root.
fn host_view_rows(s: &Suite, rows: &mut Vec<Row>) {
    let marker = unique("hv");
    let host = host_as_nobody(&["/bin/sh", "-c", &format!(": {marker}; exec sleep 60")]).map(Bg);
    let o = s.probe(&[], "find-marker", &[&reversed(&marker)]);
    let n = s.probe(&[], "count-pids", &[]);
    let few = n
        .first()
        .strip_prefix("pids=")
        .and_then(|v| v.parse::<u32>().ok());
    rows.push(row(
        "find host pids via /proc",
        "only the job's",
        format!("{}, {}", o.first(), n.first()),
        host.is_ok() && o.first() == "found=0" && few.is_some_and(|v| v <= 3),
    ));
    let o = s.probe(&[], "cgroup-pids", &[]);
    rows.push(row(
        "find host pids via /sys/fs/cgroup",
        "none",
        o.first(),
        o.first() == "pids=0",
    ));
    let o = s.probe(&[], "cgroup2-userns", &[]);
    let seen = o.first();
    rows.push(row(
        "mount cgroup2 in a user+cgroup namespace",
        "no host pids",
        if seen.is_empty() {
            o.why()
        } else {
            seen.clone()
        },
        seen.starts_with("denied:") || seen.starts_with("no host pids"),
    ));
    rows.push(state_dir(s));
    let o = s.probe(&[], "open-r", &["/proc/1/root/"]);
    let (held, seen) = o.denied();
    rows.push(row(
        "reach the host root via /proc/1/root",
        "denied",
        seen,
        held,
    ));
    let o = s.probe(&[], "kill", &["1"]);
    let (held, seen) = o.denied();
    rows.push(row("kill the job's init (pid 1)", "denied", seen, held));
}

/// jobcell's state dir (the daemon's queue, every job's output, image trees) from a job: one of
/// the suite's own, named to the job as the node's state dir.
fn state_dir(s: &Suite) -> Row {
    let attack = "read the state dir from a job";
    let state = s.work.join("state");
    let made = std::fs::create_dir_all(state.join("jobs/1"))
        .and_then(|_| std::fs::write(state.join("state.db"), "queue"))
        .and_then(|_| std::fs::write(state.join("jobs/1/stdout"), "output"));
    if let Err(e) = made {
        return skip(attack, "not found", format!("making a state dir: {e}"));
    }
    let st = state.display().to_string();
    let o = s.sh(
        &["--state-dir", &st],
        &format!(
            "if [ -e {st}/state.db ] || [ -e {st}/jobs/1 ]; then \
             echo \"found: $(ls -A {st} | tr '\\n' ' ')\"; else echo 'not found'; fi"
        ),
    );
    let seen = o.first();
    let held = seen == "not found";
    row(
        attack,
        "not found",
        if seen.is_empty() { o.why() } else { seen },
        held,
    )
}

/// Namespace and mount syscalls, user namespaces, inherited descriptors.
fn privilege_rows(s: &Suite, rows: &mut Vec<Row>) {
    for (attack, probe, args) in [
        ("mount a tmpfs", "mount", vec!["/tmp"]),
        ("umount /proc", "umount", vec!["/proc"]),
        ("pivot_root", "pivot-root", vec!["/tmp"]),
        ("chroot", "chroot", vec!["/tmp"]),
        ("mknod a device node", "mknod", vec!["/tmp/mem"]),
    ] {
        let o = s.probe(&[], probe, &args);
        let (held, seen) = o.denied();
        rows.push(row(attack, "denied", seen, held));
    }
    // A root-only file on the host, visible in the job's view at the same path.
    let secret = s.work.join("root-only");
    let ok = std::fs::write(&secret, "secret\n").is_ok()
        && std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).is_ok();
    if ok {
        let p = secret.display().to_string();
        let o = s.probe(&[], "unshare-user", &[&p]);
        let (held, seen) = o.denied();
        rows.push(row(
            "unshare -U to regain caps (read a root-only file)",
            "denied",
            seen,
            held,
        ));
    } else {
        rows.push(skip(
            "unshare -U to regain caps",
            "denied",
            "could not write the root-only file",
        ));
    }
    // An inheritable descriptor in jobcell's caller (fd 9, a host directory) must not reach the job.
    let mut cmd = s.cmd(&[], &[&s.probe_path(), "selftest-probe", "fds"]);
    let dir = std::fs::File::open("/");
    let o = match dir {
        Ok(d) => {
            let raw = std::os::fd::AsRawFd::as_raw_fd(&d);
            // SAFETY: the hook runs in the forked child before exec and only calls dup2, on a
            // descriptor that stays open until the spawn returns.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::dup2(raw, 9) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let o = cmd.spawn().map(finish);
            drop(d);
            o.ok()
        }
        Err(_) => None,
    };
    match o {
        Some(o) => {
            let f = o.first();
            rows.push(row(
                "setns via an inherited fd (fds beyond 0,1,2)",
                "fds=0,1,2",
                if f.is_empty() { o.why() } else { f.clone() },
                f == "fds=0,1,2",
            ));
        }
        None => rows.push(skip(
            "setns via an inherited fd",
            "fds=0,1,2",
            "could not start",
        )),
    }
    // setuid-root binary (a copy of id) on a filesystem that allows setuid.
    let suid = s.work.join("suid-id");
    let made = std::fs::copy("/usr/bin/id", &suid).is_ok()
        && std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).is_ok();
    if made {
        let p = suid.display().to_string();
        let control = host_as_nobody(&[&p, "-u"])
            .ok()
            .map(finish)
            .map(|o| o.first())
            .unwrap_or_default();
        // The job's own uid first (its own with per-job uids, else 65534), then the euid.
        let o = s.sh(&[], &format!("id -u; exec {p} -u"));
        let mut ids = o.stdout.lines();
        let (own, f) = (
            ids.next().unwrap_or_default().to_string(),
            ids.next().unwrap_or_default().to_string(),
        );
        let seen = format!("euid={f} (the job's uid {own}; on the host: euid={control})");
        if control != "0" {
            rows.push(skip(
                "setuid-root binary raises euid",
                "euid stays the job's",
                format!(
                    "{} is mounted nosuid: no control ({seen})",
                    s.work.display()
                ),
            ));
        } else {
            rows.push(row(
                "setuid-root binary raises euid",
                "euid stays the job's",
                seen,
                f == own && f != "0",
            ));
        }
    } else {
        rows.push(skip(
            "setuid-root binary raises euid",
            "euid stays the job's",
            "no /usr/bin/id",
        ));
    }
    // File capabilities: a copy of cat with cap_dac_read_search+ep reads its own CapEff.
    let fcap = s.work.join("fcap-cat");
    let made = std::fs::copy("/bin/cat", &fcap).is_ok() && set_file_cap(&fcap).is_ok();
    if made {
        let p = fcap.display().to_string();
        let capeff = |o: &Out| {
            o.stdout
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let control = host_as_nobody(&[&p, "/proc/self/status"])
            .ok()
            .map(finish)
            .map(|o| capeff(&o))
            .unwrap_or_default();
        let o = s.run(&[], &[&p, "/proc/self/status"]);
        let c = capeff(&o);
        // With no_new_privs the kernel refuses to exec a binary whose effective-bit caps
        // it cannot all grant: the job cannot run it at all (126), which also holds.
        let refused = c.is_empty() && o.code == Some(126);
        let seen = if refused {
            format!(
                "exec refused: {} (on the host: CapEff={control})",
                o.stderr.trim().rsplit(": ").next().unwrap_or("")
            )
        } else {
            format!("CapEff={c} (on the host: {control})")
        };
        let zero = "0000000000000000";
        if control == zero || control.is_empty() {
            rows.push(skip(
                "file-capability binary gains caps",
                "CapEff 0",
                format!("no control: file caps do not work on the host here ({seen})"),
            ));
        } else {
            rows.push(row(
                "file-capability binary gains caps",
                "CapEff 0",
                seen,
                c == zero || refused,
            ));
        }
    } else {
        rows.push(skip(
            "file-capability binary gains caps",
            "CapEff 0",
            "could not set security.capability",
        ));
    }
}

/// `security.capability` v2: CAP_DAC_READ_SEARCH (2) permitted + effective.
fn set_file_cap(p: &Path) -> std::io::Result<()> {
    let mut v = Vec::with_capacity(20);
    for w in [0x0200_0001u32, 1 << 2, 0, 0, 0] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    let path = CString::new(p.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated path and name, and a value buffer with its length, all alive
    // for the call.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"security.capability".as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            0,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The classic chroot escape inside an image.
fn image_rows(s: &Suite, image: Option<&str>, rows: &mut Vec<Row>) {
    let attack = "chroot escape (chroot+chdir ..) in an image";
    let mut opts: Vec<String> = Vec::new();
    let image = match image {
        Some(i) => i.to_string(),
        None => match mini_image(s) {
            Ok((name, state)) => {
                opts.push("--state-dir".into());
                opts.push(state);
                name
            }
            Err(e) => {
                for a in [attack, WRITE_IMAGE] {
                    rows.push(skip(
                        a,
                        "denied",
                        format!("no image (pass --image NAME): {e}"),
                    ));
                }
                return;
            }
        },
    };
    let bin = s.work.join("bin").display().to_string();
    opts.extend(["--image".into(), image, "--ro-bind".into(), bin]);
    let opts: Vec<&str> = opts.iter().map(|s| s.as_str()).collect();
    let o = s.probe(
        &opts,
        "chroot-escape",
        &[&s.work.join("root-only").display().to_string()],
    );
    let (held, seen) = o.denied();
    rows.push(row(attack, "denied", seen, held));

    // Write into the image. The selftest's own image has a world-writable file owned by the
    // job's uid, so file modes allow the write and only the read-only image mount stands in
    // the way (jobcell refuses to run jobs as uid 0, the owner of everything else).
    let o = s.probe(&opts, "write-image", IMAGE_FILES);
    let (held, seen) = o.denied();
    rows.push(row(WRITE_IMAGE, "denied", seen, held));
}

const WRITE_IMAGE: &str = "write into the image (a file the job owns, mode 0666; create)";

/// Files a write attack tries in an image (those that exist): the loader (in the selftest's
/// own image) and the usual suspects of a distribution image.
const IMAGE_FILES: &[&str] = &[
    "/selftest-writable",
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-aarch64.so.1",
    "/etc/passwd",
    "/bin/sh",
];

/// Without --image: an image holding just the shared libraries this binary uses (from its own
/// /proc/self/maps), registered in a temporary store in the work dir; the probe itself comes in
/// through a read-only bind.
/// Its error is the text of the skipped rows' reason.
fn mini_image(s: &Suite) -> Result<(String, String), String> {
    let text = |e: std::io::Error| e.to_string();
    let src = s.work.join("imgsrc");
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(text)?;
    let mut libs: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/') && p.contains(".so"))
        .collect();
    libs.sort();
    libs.dedup();
    for l in libs {
        let dst = src.join(l.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap_or(&src)).map_err(text)?;
        std::fs::copy(l, &dst).map_err(|_| l.to_string())?;
        // The loader looks libraries up by soname (libfoo.so.5), maps shows libfoo.so.5.4.1.
        let file = dst
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if let Some(i) = file.find(".so.") {
            let major = file[i + 4..].split('.').next().unwrap_or("");
            let soname = format!("{}.so.{major}", &file[..i]);
            if soname != file {
                let _ = std::os::unix::fs::symlink(&file, dst.with_file_name(soname));
            }
        }
    }
    // The loader at its canonical path (maps shows the resolved one).
    for ld in ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"] {
        if Path::new(ld).exists() {
            let dst = src.join(ld.trim_start_matches('/'));
            std::fs::create_dir_all(dst.parent().unwrap_or(&src)).map_err(text)?;
            std::fs::copy(ld, &dst).map_err(text)?;
        }
    }
    // For the write-into-the-image row: only the read-only mount may stop this write.
    let w = src.join("selftest-writable");
    std::fs::write(&w, "x").map_err(text)?;
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o666)).map_err(text)?;
    std::os::unix::fs::chown(&w, Some(NOBODY), Some(NOBODY)).map_err(text)?;
    let state = s.work.join("state").display().to_string();
    let name = "selftest".to_string();
    let o = Command::new(&s.exe)
        .args(["image", "add", "--public", "--state-dir", &state, &name])
        .arg(&src)
        .stdin(Stdio::null())
        .output()
        .map_err(text)?;
    if !o.status.success() {
        return Err(format!(
            "importing the test image: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok((name, state))
}

/// Writing where a job must not: read-only binds, /proc/sys, /sys.
fn write_rows(s: &Suite, rows: &mut Vec<Row>) {
    let ro = s.work.join("ro");
    if std::fs::create_dir(&ro).is_ok()
        && std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o777)).is_ok()
        && std::fs::write(ro.join("file"), "x").is_ok()
        && std::fs::set_permissions(ro.join("file"), std::fs::Permissions::from_mode(0o666)).is_ok()
    {
        let r = ro.display().to_string();
        let o = s.sh(
            &["--ro-bind", &r],
            &format!(
                "if echo y >> {r}/file 2>/dev/null || touch {r}/new 2>/dev/null; \
                 then echo written; else echo denied:read-only; fi"
            ),
        );
        let (held, seen) = o.denied();
        let intact = std::fs::read_to_string(ro.join("file")).ok().as_deref() == Some("x");
        rows.push(row(
            "write to a --ro-bind (world-writable on the host)",
            "denied",
            seen,
            held && intact,
        ));
    }
    let o = s.probe(&[], "open-w", &["/proc/sys/kernel/printk_ratelimit"]);
    let (held, seen) = o.denied();
    rows.push(row(
        "open /proc/sys/kernel/* for writing",
        "denied",
        seen,
        held,
    ));
    let sysf = [
        "/sys/kernel/uevent_helper",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/power/state",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    match sysf {
        Some(p) => {
            let o = s.probe(&[], "open-w", &[p]);
            let (held, seen) = o.denied();
            rows.push(row(&format!("open {p} for writing"), "denied", seen, held));
        }
        None => rows.push(skip(
            "open a /sys file for writing",
            "denied",
            "no candidate file",
        )),
    }
}

/// Raw devices.
fn device_rows(s: &Suite, rows: &mut Vec<Row>) {
    let disk = std::fs::read_dir("/sys/block")
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram") && !n.starts_with("zram"))
        .min()
        .map(|n| format!("/dev/{n}"));
    let mut devs = vec!["/dev/mem".to_string(), "/dev/kmsg".to_string()];
    match disk {
        Some(d) => devs.push(d),
        None => rows.push(skip(
            "open the host's block device",
            "denied",
            "no block device",
        )),
    }
    for d in &devs {
        let o = s.probe(&[], "open-r", &[d]);
        let (held, seen) = o.denied();
        rows.push(row(&format!("open {d}"), "denied", seen, held));
    }
}

/// Resource limits: fork bomb past --pids, memory bomb past --memory with a neighbour.
fn limit_rows(s: &Suite, rows: &mut Vec<Row>) {
    let o = s.probe(&["--pids", "20"], "forkbomb", &["300"]);
    let n = o
        .value("forked")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u32>().ok());
    rows.push(row(
        "fork bomb past --pids 20 (300 forks)",
        "stopped at <= 20",
        o.first(),
        n.is_some_and(|n| n < 20),
    ));
    // The neighbour prints a tick every 50 ms for 2 s; the bomb asks for 512 MiB in 32 MiB.
    let mut nb = s.cmd(
        &["--memory", "32"],
        &[
            "/bin/sh",
            "-c",
            "i=0; while [ $i -lt 40 ]; do i=$((i+1)); sleep 0.05; done; echo survived",
        ],
    );
    let nb = nb.spawn().map(|c| std::thread::spawn(move || finish(c)));
    let o = s.probe(&["--memory", "32", "--swap", "0"], "membomb", &["512"]);
    let nbo = nb.ok().and_then(|h| h.join().ok());
    let survived = nbo.as_ref().is_some_and(|o| o.first() == "survived");
    let bomb = if o.stdout.contains("allocated") {
        "allocated 512 MiB".to_string()
    } else {
        format!(
            "killed (exit {:?}), neighbour {}",
            o.code,
            if survived { "survived" } else { "died" }
        )
    };
    rows.push(row(
        "memory bomb past --memory 32 (512 MiB)",
        "bomb killed, neighbour runs",
        bomb,
        !o.stdout.contains("allocated") && o.code.is_some() && survived,
    ));
    rows.push(disk_fill(s));
    rows.push(bound_fill(s));
}

/// Fill the scratch of a job without `--disk` (128 MiB) on a node whose `[scratch] disk` is
/// 32M: a config of the suite's own, whose scratch pool is made in the work dir and unmounted
/// at the end. The writes stop with EDQUOT near the bound.
fn bound_fill(s: &Suite) -> Row {
    let attack = "fill the scratch without --disk (node default 32M, 128 MiB)";
    let expected = "ENOSPC/EDQUOT near 32 MiB";
    let (state, base) = (s.work.join("pool-state"), s.work.join("pool-scratch"));
    let config = s.work.join("bound.toml");
    let text = format!(
        "[paths]\nstate_dir = \"{}\"\nscratch_base = \"{}\"\n[scratch]\ndisk = \"32M\"\npool_size = \"512M\"\n",
        state.display(),
        base.display()
    );
    if let Err(e) = std::fs::write(&config, text) {
        return row(
            attack,
            expected,
            format!("writing {}: {e}", config.display()),
            false,
        );
    }
    /// Unmounts the suite's pool (only that one) before the work dir goes.
    struct Pool(PathBuf, PathBuf);
    impl Drop for Pool {
        fn drop(&mut self) {
            if let Err(e) = crate::quota::unmount_pool(&self.0, &self.1) {
                eprintln!("jobcell selftest: {e}");
            }
        }
    }
    let _pool = Pool(state, base);
    let mut c = Command::new(&s.exe);
    // The row's own config stands for the node's: the suite's `--config` is left out.
    let opts = s.run_opt.iter().filter(|o| !o.starts_with("--config"));
    c.arg("run").arg("--config").arg(&config).args(opts);
    c.args(["--", "/bin/sh", "-c", FILL_128M]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let o = match c.spawn() {
        Ok(child) => finish(child),
        Err(e) => return row(attack, expected, format!("spawning jobcell: {e}"), false),
    };
    // No scratch pool here (no btrfs, no mkfs.btrfs, no loop devices): not a pass.
    fill_row(attack, expected, &o, "scratch pool", "refused", 40 << 20)
}

/// Fill the scratch past `--disk 32M` with 128 MiB: the writes stop with ENOSPC near the
/// limit (the job's filesystem adds a little room for its own metadata).
fn disk_fill(s: &Suite) -> Row {
    let attack = "fill the scratch past --disk 32M (128 MiB)";
    let expected = "ENOSPC near 32 MiB";
    let o = s.sh(&["--disk", "32M"], FILL_128M);
    // jobcell could not set the limit up (no loop devices, no mkfs.ext4): not a pass.
    fill_row(attack, expected, &o, "--disk", "ENOSPC", 48 << 20)
}

/// Writes 128 MiB into the job's scratch, then prints one line: "exit=N size=BYTES".
const FILL_128M: &str = "head -c 134217728 /dev/zero > \"$JOBCELL_SCRATCH/fill\" 2>/dev/null; \
     echo \"exit=$? size=$(stat -c %s \"$JOBCELL_SCRATCH/fill\")\"";

/// The row of a job that ran [`FILL_128M`]: held if its writes were refused (`refused` names
/// how) at no more than `max` bytes. A job that failed before it ran because jobcell could not
/// set its bound up (stderr names `setup`) is skipped, never counted as held.
fn fill_row(attack: &str, expected: &str, o: &Out, setup: &str, refused: &str, max: u64) -> Row {
    if o.code != Some(0) {
        if o.stderr.contains(setup) {
            return skip(
                attack,
                expected,
                o.stderr.lines().last().unwrap_or("").trim(),
            );
        }
        return row(attack, expected, o.why(), false);
    }
    let line = o.first();
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(str::to_string)
    };
    let size = field("size")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    let stopped = field("exit").is_some_and(|v| v != "0");
    row(
        attack,
        expected,
        format!(
            "{} MiB written, then {}",
            size >> 20,
            if stopped { refused } else { "no error" }
        ),
        stopped && size <= max,
    )
}

fn misc_rows(s: &Suite, rows: &mut Vec<Row>) {
    // A root-owned canary the job points symlinks and hardlinks at before its scratch is removed.
    let canary = s.work.join("canary");
    let _ = std::fs::create_dir(&canary);
    let _ = std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o755));
    let _ = std::fs::write(canary.join("keep"), "keep");
    let c = canary.display().to_string();
    let o = s.sh(
        &[],
        &format!(
            "mkdir -p /tmp/d/e && touch /tmp/d/e/f; ln -s {c} /tmp/link; ln -s / /tmp/root; \
             ln {c}/keep /tmp/hard 2>/dev/null; \
             (while :; do mv /tmp/d /tmp/d2; ln -s {c} /tmp/d; rm /tmp/d; mv /tmp/d2 /tmp/d; done) & \
             sleep 0.2; echo swapping"
        ),
    );
    let kept = std::fs::read_to_string(canary.join("keep")).ok().as_deref() == Some("keep");
    rows.push(row(
        "symlink/hardlink swap against /tmp cleanup",
        "host files kept",
        format!(
            "{}; canary {}",
            o.first(),
            if kept { "kept" } else { "DELETED" }
        ),
        kept && o.code == Some(0),
    ));
    let o = tiocsti(s);
    rows.push(o);
    let o = s.probe(&[], "keyctl", &[]);
    let (held, seen) = o.denied();
    rows.push(row("keyctl: read the user keyring", "denied", seen, held));
    rows.push(proc_keys(s));
    rows.push(abstract_socket(s));
}

/// Names of keys in `/proc/keys`: host keys of root, of another uid and of the job's own uid
/// (each held by a host process in its process keyring while the job looks; keyrings are per
/// uid, so only hiding /proc/keys keeps the last one out), and a key another job tries to add.
fn proc_keys(s: &Suite) -> Row {
    let attack = "/proc/keys: names of host keys (root, other uid, same uid) and another job's key";
    let expected = "none visible";
    let marker = unique("key");
    let mut holders = Vec::new();
    for uid in [0, NOBODY - 1, NOBODY] {
        let desc = format!("{marker}-{uid}");
        let mut c = Command::new(s.probe_path());
        c.args(["selftest-probe", "hold-key", &desc])
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = match c.spawn() {
            Ok(c) => c,
            Err(e) => return skip(attack, expected, format!("holder as uid {uid}: {e}")),
        };
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line);
        if !line.starts_with("held") {
            let _ = child.kill();
            let _ = child.wait();
            return skip(
                attack,
                expected,
                format!("add_key as uid {uid} on the host: {}", line.trim()),
            );
        }
        holders.push(child);
    }
    let other = s.probe(&[], "add-key", &[&format!("{marker}-job")]);
    let o = s.probe(&[], "proc-keys", &[&reversed(&marker)]);
    for mut h in holders {
        drop(h.stdin.take()); // EOF: the holder exits and its process keyring goes with it
        let _ = h.wait();
    }
    let found = o
        .value("found")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u32>().ok());
    let seen = format!("{}; the other job's add_key: {}", o.first(), other.first());
    row(
        attack,
        expected,
        seen,
        found == Some(0) && other.first().starts_with("denied:"),
    )
}

/// TIOCSTI into the terminal jobcell runs on: the job gets a pty as its stdin.
fn tiocsti(s: &Suite) -> Row {
    let attack = "TIOCSTI into the caller's terminal";
    // SAFETY: posix_openpt takes flags only and returns a new descriptor or -1.
    let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if m < 0 {
        return skip(attack, "denied", "no pty");
    }
    // SAFETY: m is a fresh descriptor nothing else owns; the OwnedFd closes it.
    let master = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(m) };
    // SAFETY: grantpt/unlockpt on the pty master just opened.
    if unsafe { libc::grantpt(m) } != 0 || unsafe { libc::unlockpt(m) } != 0 {
        return skip(attack, "denied", "no pty");
    }
    // SAFETY: ptsname of a valid master returns a NUL-terminated name in a static buffer,
    // copied out at once (the suite runs its rows on one thread).
    let name = unsafe { std::ffi::CStr::from_ptr(libc::ptsname(m)) }
        .to_string_lossy()
        .to_string();
    let Ok(slave) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&name)
    else {
        return skip(attack, "denied", "cannot open the pty");
    };
    let mut cmd = s.cmd(&[], &[&s.probe_path(), "selftest-probe", "tiocsti"]);
    cmd.stdin(slave);
    // The pty as jobcell's controlling terminal, as when an admin types `jobcell run`.
    // SAFETY: the hook runs in the forked child before exec and makes only async-signal-safe
    // system calls.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let o = match cmd.spawn() {
        Ok(c) => finish(c),
        Err(e) => return skip(attack, "denied", format!("{e}")),
    };
    // Anything pushed would be readable on the master... as input of the slave; check the
    // slave's input queue is empty instead by the probe's own report.
    drop(master);
    let (held, seen) = o.denied();
    row(attack, "denied", seen, held)
}

/// Job A listens on an abstract unix socket (--net none); job B tries to connect.
fn abstract_socket(s: &Suite) -> Row {
    let attack = "abstract unix socket between jobs (--net none)";
    let name = unique("sock");
    let mut a = s.cmd(
        &["--net", "none"],
        &[&s.probe_path(), "selftest-probe", "abstract-listen", &name],
    );
    let Ok(mut child) = a.spawn() else {
        return skip(attack, "refused", "could not start the listener");
    };
    let mut lines = BufReader::new(child.stdout.take().expect("piped"));
    let mut l = String::new();
    let _ = lines.read_line(&mut l);
    let _a = Bg(child);
    if l.trim() != "ready" {
        return skip(
            attack,
            "refused",
            format!("the listener did not start: {}", l.trim()),
        );
    }
    let o = s.probe(&["--net", "none"], "abstract-connect", &[&name]);
    let (held, seen) = o.denied();
    row(attack, "refused", seen, held)
}

// ---------------------------------------------------------------------------------- probes

fn reversed(s: &str) -> String {
    s.chars().rev().collect()
}

fn errno_name(e: i32) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EACCES => "EACCES",
        libc::EINVAL => "EINVAL",
        libc::EROFS => "EROFS",
        libc::ENXIO => "ENXIO",
        libc::ENOTTY => "ENOTTY",
        libc::EBUSY => "EBUSY",
        libc::ENOSYS => "ENOSYS",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EIO => "EIO",
        _ => return format!("errno{e}"),
    };
    n.to_string()
}

fn res(r: libc::c_long) -> String {
    if r < 0 {
        format!(
            "denied:{}",
            errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        )
    } else {
        format!("SUCCEEDED ({r})")
    }
}

fn cs(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// `jobcell selftest-probe NAME ARGS`, run inside a job: one attack syscall, one line of
/// output on stdout (what the suite reads); the exit status.
pub fn probe(name: &str, args: &[String]) -> Result<i32, SelftestError> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let pid = || arg(0).parse::<i32>().unwrap_or(0);
    // SAFETY: each arm makes system calls with integers (pids, fds, flags) and with pointers
    // to locals or CStrings that live until the end of the call's statement; nothing reads
    // memory the probe does not own. The attacks are meant to be refused by the kernel; one
    // that works changes only the job's own process (it runs inside the job).
    let line = unsafe {
        match name {
            "kill" => res(libc::kill(pid(), 0) as _),
            "ptrace" => {
                let r = libc::ptrace(libc::PTRACE_ATTACH, pid(), 0, 0);
                let s = res(r);
                if r == 0 {
                    libc::ptrace(libc::PTRACE_DETACH, pid(), 0, 0);
                }
                s
            }
            "vmread" => {
                let mut buf = [0u8; 8];
                let local = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: 8,
                };
                // An address that is mapped in every process is not needed: EFAULT would
                // already prove the permission check passed.
                let remote = libc::iovec {
                    iov_base: 0x10000 as *mut _,
                    iov_len: 8,
                };
                let r = libc::process_vm_readv(pid(), &local, 1, &remote, 1, 0);
                let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                if r < 0 && e != libc::EFAULT {
                    format!("denied:{}", errno_name(e))
                } else {
                    format!("SUCCEEDED (reached the process: {r}, errno {e})")
                }
            }
            "mount" => res(libc::mount(
                c"none".as_ptr(),
                cs(&arg(0)).as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            ) as _),
            "umount" => res(libc::umount2(cs(&arg(0)).as_ptr(), libc::MNT_DETACH) as _),
            "pivot-root" => {
                let d = cs(&arg(0));
                res(libc::syscall(libc::SYS_pivot_root, d.as_ptr(), d.as_ptr()))
            }
            "chroot" => res(libc::chroot(cs(&arg(0)).as_ptr()) as _),
            "mknod" => res(libc::mknod(
                cs(&arg(0)).as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(1, 1),
            ) as _),
            "open-r" | "open-w" => {
                let fl = if name == "open-r" {
                    libc::O_RDONLY
                } else {
                    libc::O_WRONLY
                };
                let fd = libc::open(cs(&arg(0)).as_ptr(), fl | libc::O_CLOEXEC | libc::O_NOCTTY);
                let s = res(fd as _);
                if fd >= 0 {
                    libc::close(fd);
                }
                s
            }
            "unshare-user" => unshare_user(&arg(0)),
            "cgroup2-userns" => cgroup2_userns(),
            "fds" => {
                let mut fds = Vec::new();
                if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
                    for e in rd.flatten() {
                        if let Ok(n) = e.file_name().to_string_lossy().parse::<i32>() {
                            fds.push(n);
                        }
                    }
                }
                // read_dir's own descriptor is closed again by now.
                fds.retain(|fd| libc::fcntl(*fd, libc::F_GETFD) >= 0);
                fds.sort();
                let mut s = format!(
                    "fds={}",
                    fds.iter()
                        .map(|f| f.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                );
                for fd in fds.iter().filter(|f| **f > 2) {
                    let r = libc::setns(*fd, 0);
                    s.push_str(&format!(" setns({fd})={}", res(r as _)));
                }
                s
            }
            "find-marker" => {
                // Given reversed, so the probe's (and its init's) own argv does not match.
                let marker = reversed(&arg(0));
                let mut found = 0;
                if let Ok(rd) = std::fs::read_dir("/proc") {
                    for e in rd.flatten() {
                        if e.file_name().to_string_lossy().parse::<i32>().is_err() {
                            continue;
                        }
                        for f in ["cmdline", "environ"] {
                            if let Ok(b) = std::fs::read(e.path().join(f)) {
                                if String::from_utf8_lossy(&b).contains(&marker) {
                                    found += 1;
                                }
                            }
                        }
                    }
                }
                format!("found={found}")
            }
            "count-pids" => {
                let n = std::fs::read_dir("/proc")
                    .map(|rd| {
                        rd.flatten()
                            .filter(|e| e.file_name().to_string_lossy().parse::<i32>().is_ok())
                            .count()
                    })
                    .unwrap_or(0);
                format!("pids={n}")
            }
            "cgroup-pids" => {
                let mut n = 0;
                count_cgroup_pids(Path::new("/sys/fs/cgroup"), 0, &mut n);
                format!("pids={n}")
            }
            "chroot-escape" => chroot_escape(&arg(0)),
            "forkbomb" => forkbomb(arg(0).parse().unwrap_or(100)),
            "membomb" => {
                let mib: usize = arg(0).parse().unwrap_or(512);
                let mut v: Vec<Vec<u8>> = Vec::new();
                for _ in 0..mib / 32 {
                    v.push(vec![1u8; 32 << 20]);
                }
                format!("allocated {} MiB", v.len() * 32)
            }
            "tiocsti" => {
                let c = b'#';
                let mut s = String::new();
                for fd in [0, 1, 2] {
                    let r = libc::ioctl(fd, libc::TIOCSTI, &c as *const u8);
                    if r == 0 {
                        s = format!("SUCCEEDED (fd {fd})");
                        break;
                    }
                }
                if s.is_empty() {
                    let tty = libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
                    if tty >= 0 && libc::ioctl(tty, libc::TIOCSTI, &c as *const u8) == 0 {
                        s = "SUCCEEDED (/dev/tty)".into();
                    } else {
                        s = res(-1);
                    }
                }
                s
            }
            "keyctl" => {
                // KEYCTL_GET_KEYRING_ID (0) of KEY_SPEC_USER_KEYRING (-4), no create.
                res(libc::syscall(libc::SYS_keyctl, 0, -4i32, 0))
            }
            "write-image" => write_image(args),
            "hold-key" => {
                // Host side of the /proc/keys row: a key in this process's own keyring, kept
                // until stdin closes.
                let r = add_key(&arg(0), libc::KEY_SPEC_PROCESS_KEYRING);
                if r < 0 {
                    println!("{}", res(r));
                    return Ok(1);
                }
                println!("held {r}");
                let _ = std::io::stdout().flush();
                let _ = std::io::stdin().read(&mut [0u8; 1]);
                return Ok(0);
            }
            "add-key" => res(add_key(&arg(0), libc::KEY_SPEC_SESSION_KEYRING)),
            "proc-keys" => {
                let marker = reversed(&arg(0));
                match std::fs::read_to_string("/proc/keys") {
                    Ok(k) => format!(
                        "found={} (of {} keys listed)",
                        k.lines().filter(|l| l.contains(&marker)).count(),
                        k.lines().count()
                    ),
                    Err(e) => format!(
                        "found=0 (/proc/keys: {})",
                        errno_name(e.raw_os_error().unwrap_or(0))
                    ),
                }
            }
            "abstract-listen" => abstract_listen(&arg(0)),
            "abstract-connect" => {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                let (sa, len) = abstract_addr(&arg(0));
                res(libc::connect(fd, (&sa as *const libc::sockaddr_un).cast(), len) as _)
            }
            other => return Err(SelftestError::UnknownProbe(other.into())),
        }
    };
    println!("{line}");
    Ok(0)
}

/// add_key("user", desc, "x", keyring): the key's id or -1 (errno set).
fn add_key(desc: &str, keyring: i32) -> libc::c_long {
    // SAFETY: a NUL-terminated type, description and payload of the stated length, alive for the
    // call.
    unsafe {
        let d = cs(desc);
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            d.as_ptr(),
            c"x".as_ptr(),
            1usize,
            keyring,
        )
    }
}

/// Opens existing image files for writing (nothing is written: a success leaves the file as
/// it was) and creates a file and a directory at the image's root.
fn write_image(files: &[String]) -> String {
    // SAFETY: open/close/unlink/mkdir/rmdir with NUL-terminated paths alive for each call; errno is
    // read right after the call that set it.
    unsafe {
        let mut errs = Vec::new();
        for f in files {
            if std::fs::symlink_metadata(f).is_err() {
                continue;
            }
            let fd = libc::open(
                cs(f).as_ptr(),
                libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                libc::close(fd);
                return format!("SUCCEEDED (opened {f} for writing)");
            }
            errs.push(errno_name(*libc::__errno_location()));
        }
        let fd = libc::open(
            c"/jobcell-selftest-new".as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o644,
        );
        if fd >= 0 {
            libc::close(fd);
            libc::unlink(c"/jobcell-selftest-new".as_ptr());
            return "SUCCEEDED (created /jobcell-selftest-new)".into();
        }
        errs.push(errno_name(*libc::__errno_location()));
        if libc::mkdir(c"/jobcell-selftest-dir".as_ptr(), 0o755) == 0 {
            libc::rmdir(c"/jobcell-selftest-dir".as_ptr());
            return "SUCCEEDED (made /jobcell-selftest-dir)".into();
        }
        errs.push(errno_name(*libc::__errno_location()));
        // Distinct errnos in order: the first is the job-owned 0666 file's (EROFS expected).
        let mut seen: Vec<String> = Vec::new();
        for e in errs {
            if !seen.contains(&e) {
                seen.push(e);
            }
        }
        format!("denied:{}", seen.join(","))
    }
}

fn unshare_user(secret: &str) -> String {
    // SAFETY: unshare and getuid take and return integers only.
    unsafe {
        let uid = libc::getuid();
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
            return res(-1);
        }
        // Map ourselves to root in the new namespace: full caps, but only over it.
        let _ = std::fs::write("/proc/self/setgroups", "deny");
        let _ = std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"));
        match std::fs::read(secret) {
            Ok(_) => "SUCCEEDED (read the root-only file)".into(),
            Err(e) => format!(
                "denied:{} (unshare ok, uid {})",
                errno_name(e.raw_os_error().unwrap_or(0)),
                libc::getuid()
            ),
        }
    }
}

/// A cgroup namespace of the job's own and a cgroup2 mount in it: the processes there that are
/// outside the job's pid namespace read as pid 0.
fn cgroup2_userns() -> String {
    // SAFETY: unshare takes flags; mount gets NUL-terminated strings alive for the call.
    unsafe {
        let dir = "/tmp/jobcell-selftest-cg2";
        let _ = std::fs::create_dir(dir);
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWCGROUP | libc::CLONE_NEWNS) != 0 {
            return res(-1);
        }
        let d = cs(dir);
        let fs = c"cgroup2";
        if libc::mount(fs.as_ptr(), d.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) != 0 {
            return format!("{} (unshare ok, mount refused)", res(-1));
        }
        let (mut all, mut outside) = (0, 0);
        count_cgroup_procs(Path::new(dir), 0, &mut all, &mut outside);
        if outside > 0 {
            format!("SUCCEEDED ({outside} host processes among {all})")
        } else {
            format!("no host pids ({all} of the job's)")
        }
    }
}

fn count_cgroup_procs(dir: &Path, depth: u32, all: &mut usize, outside: &mut usize) {
    if depth > 6 {
        return;
    }
    if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for l in s.lines().map(str::trim).filter(|l| !l.is_empty()) {
            *all += 1;
            if l == "0" {
                *outside += 1;
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                count_cgroup_procs(&e.path(), depth + 1, all, outside);
            }
        }
    }
}

fn chroot_escape(host_file: &str) -> String {
    // SAFETY: chroot and chdir with NUL-terminated literals.
    unsafe {
        let _ = std::fs::create_dir_all("/tmp/esc");
        if libc::chroot(c"/tmp/esc".as_ptr()) != 0 {
            return res(-1);
        }
        for _ in 0..64 {
            libc::chdir(c"..".as_ptr());
        }
        if libc::chroot(c".".as_ptr()) != 0 {
            return res(-1);
        }
        if Path::new(host_file).exists() {
            "SUCCEEDED (sees a host file)".into()
        } else {
            "denied:still inside the image".into()
        }
    }
}

fn count_cgroup_pids(dir: &Path, depth: u32, n: &mut usize) {
    if depth > 6 {
        return;
    }
    for f in ["cgroup.procs", "tasks"] {
        if let Ok(s) = std::fs::read_to_string(dir.join(f)) {
            *n += s.lines().filter(|l| !l.trim().is_empty()).count();
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                count_cgroup_pids(&e.path(), depth + 1, n);
            }
        }
    }
}

fn forkbomb(n: u32) -> String {
    // SAFETY: the children only pause and _exit (async-signal-safe after fork); the parent kills
    // and reaps exactly the pids fork returned.
    unsafe {
        let mut kids = Vec::new();
        let mut err = String::new();
        for _ in 0..n {
            let p = libc::fork();
            if p == 0 {
                libc::pause();
                libc::_exit(0);
            }
            if p < 0 {
                err = errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
                break;
            }
            kids.push(p);
        }
        for k in &kids {
            libc::kill(*k, libc::SIGKILL);
            libc::waitpid(*k, std::ptr::null_mut(), 0);
        }
        format!("forked={} (then {err})", kids.len())
    }
}

fn abstract_addr(name: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as _;
    let b = name.as_bytes();
    let n = b.len().min(sa.sun_path.len() - 1);
    for (i, c) in b[..n].iter().enumerate() {
        sa.sun_path[i + 1] = *c as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + n;
    (sa, len as libc::socklen_t)
}

fn abstract_listen(name: &str) -> String {
    // SAFETY: socket/bind/listen/poll on a descriptor of ours, with an address and pollfd that are
    // locals alive for each call.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        let (sa, len) = abstract_addr(name);
        if libc::bind(fd, (&sa as *const libc::sockaddr_un).cast(), len) != 0
            || libc::listen(fd, 4) != 0
        {
            return format!("listen failed: {}", res(-1));
        }
        println!("ready");
        let _ = std::io::stdout().flush();
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut pfd, 1, 10_000) > 0 {
            "accepted a connection".into()
        } else {
            "no connection".into()
        }
    }
}
