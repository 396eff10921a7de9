//! jobcell under a real Slurm: munged, slurmctld and slurmd for one node on loopback ports,
//! all state in a temporary directory, stopped by pid at the end (also when a check fails).
//!
//! Phase 1 (no plugin): `srun jobcell run` and `sbatch` of a script calling `jobcell run
//! --image` as an unprivileged user. Phase 2 (jobcell_spank.so in plugstack.conf): plain
//! `srun`/`sbatch` tasks are isolated, `--jobcell-image`, private /tmp removed at the job's end,
//! scancel, exit codes, two concurrent jobs of one user.
//!
//! Needs root (to run the daemons and a test user), Slurm and munge installed
//! (`apt-get install slurm-wlm munge libslurm-dev`), a static busybox for the test image, and
//! `libjobcell_spank.so` built next to the jobcell binary (`cargo build -p jobcell-spank`, which
//! `cargo test --workspace` does). Anything missing: a loud SKIPPED line.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const JOBCELL: &str = env!("CARGO_BIN_EXE_jobcell");
const USER: &str = "jobcell-slurm";
const IMAGE: &str = "slurmtest";

fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default() + ":/usr/sbin:/sbin";
    path.split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ensure_user() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, USER]).output().ok()?;
        o.status
            .success()
            .then(|| text(&o.stdout).trim().parse().ok())?
    };
    if id("-u").is_none() {
        let o = run(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            USER,
        ]));
        if !o.status.success() {
            eprintln!("useradd {USER}: {}", text(&o.stderr));
            return None;
        }
    }
    Some((id("-u")?, id("-g")?))
}

fn chown(p: &Path, uid: u32, gid: u32) {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(
        // SAFETY: `c` is NUL-terminated and outlives the call.
        unsafe { libc::chown(c.as_ptr(), uid, gid) },
        0,
        "chown {}",
        p.display()
    );
}

fn mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// The daemons and the temporary tree. Drop stops the daemons by pid and removes the tree.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    uid: u32,
    gid: u32,
    munged: Option<u32>,
    ctld: Option<Child>,
    slurmd: Option<Child>,
    image: bool,
    /// The freezer cgroups named slurm* before the test (proctrack/cgroup makes one,
    /// `slurm_<node>` here); only new ones are cleaned up.
    slurm_freezers_before: Vec<PathBuf>,
}

const FREEZER: &str = "/sys/fs/cgroup/freezer";

fn slurm_freezers() -> Vec<PathBuf> {
    std::fs::read_dir(FREEZER)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("slurm"))
        .map(|e| e.path())
        .collect()
}

/// rmdir the empty cgroup directories below `dir` (bottom-up), then `dir`: only what Slurm
/// made for this test's jobs, and rmdir never removes a cgroup that still has processes.
fn rmdir_empty_cgroups(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                rmdir_empty_cgroups(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failed check can leave jobs running: cancel them while the daemons still listen,
        // then stop the daemons, then kill by pid whatever of this cluster is still alive
        // (slurmstepds and job processes carry our SLURM_CONF or our dir in their command).
        if self.slurmd.is_some() && self.ctld.is_some() {
            let _ = self.cmd("scancel", &["--user", USER]).output();
            wait_until(Duration::from_secs(15), || {
                self.cmd("squeue", &["-h", "-u", USER])
                    .output()
                    .map(|o| text(&o.stdout).trim().is_empty())
                    .unwrap_or(true)
            });
        }
        self.stop_slurmd();
        if let Some(mut c) = self.ctld.take() {
            // SAFETY: kill takes integers only; the pid is this harness's own unreaped child
            // (slurmctld).
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            wait_or_kill(&mut c, Duration::from_secs(10));
        }
        for pid in self.stragglers() {
            // SAFETY: kill takes integers only; stragglers are processes of the test cluster this
            // harness started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(pid) = self.munged.take() {
            // SAFETY: kill takes integers only; the pid is the munged this harness started.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            // munged is not our child (it daemonizes): wait for its pid to go.
            let t = Instant::now();
            // SAFETY: signal 0 only checks that the pid exists and delivers nothing.
            while unsafe { libc::kill(pid as i32, 0) } == 0 && t.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if proctrack() == "cgroup" {
            for d in slurm_freezers() {
                if !self.slurm_freezers_before.contains(&d) {
                    rmdir_empty_cgroups(&d);
                }
            }
        }
        if std::env::var_os("JOBCELL_SLURM_KEEP").is_some() {
            eprintln!("kept {}", self.dir.display());
            return;
        }
        // No mount can be in here (jobs mount only in their own namespaces), and the scratch
        // dirs are ours: a plain recursive removal is fine.
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("removing {}: {e}", self.dir.display());
        }
    }
}

fn wait_or_kill(c: &mut Child, t: Duration) {
    let start = Instant::now();
    while start.elapsed() < t {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

impl Cluster {
    fn start() -> Result<Cluster, String> {
        let (uid, gid) = ensure_user().ok_or("no test user")?;
        // Not under /tmp: the jobs' private /tmp would hide slurmd's spool and slurm.conf.
        let tmpl = CString::new("/var/lib/jobcell-slurmtest-XXXXXX").unwrap();
        let raw = tmpl.into_raw();
        // SAFETY: `raw` is a NUL-terminated template from CString::into_raw that mkdtemp edits in
        // place without changing its length.
        assert!(!unsafe { libc::mkdtemp(raw) }.is_null());
        // SAFETY: `raw` came from CString::into_raw just above and is taken back exactly once;
        // mkdtemp kept its length and NUL.
        let dir = PathBuf::from(unsafe { CString::from_raw(raw) }.into_string().unwrap());
        mode(&dir, 0o755);
        let mut c = Cluster {
            conf: dir.join("etc/slurm.conf"),
            dir,
            uid,
            gid,
            munged: None,
            ctld: None,
            slurmd: None,
            image: false,
            slurm_freezers_before: slurm_freezers(),
        };
        c.setup_files()?;
        c.start_munge()?;
        c.start_slurm()?;
        Ok(c)
    }

    /// Processes of this cluster that outlived its daemons (never the test process itself).
    fn stragglers(&self) -> Vec<i32> {
        let conf = format!("SLURM_CONF={}", self.conf.display());
        let dir = self.dir.to_string_lossy().into_owned();
        let me = std::process::id() as i32;
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == me || Some(pid as u32) == self.munged {
                continue;
            }
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&env).split('\0').any(|v| v == conf)
                || String::from_utf8_lossy(&cmd).contains(&dir)
            {
                out.push(pid);
            }
        }
        out
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn setup_files(&mut self) -> Result<(), String> {
        let d = &self.dir;
        for s in [
            "bin",
            "etc",
            "state",
            "spool",
            "log",
            "run",
            "scratch",
            "munge/etc",
            "munge/log",
            "munge/lib",
            "munge/run",
        ] {
            std::fs::create_dir_all(d.join(s)).unwrap();
        }
        // What the test user owns: job output, its own scratch base for `jobcell run`.
        for s in ["work", "uscratch"] {
            std::fs::create_dir_all(d.join(s)).unwrap();
            chown(&d.join(s), self.uid, self.gid);
        }
        let bin = PathBuf::from(JOBCELL);
        std::fs::copy(&bin, d.join("bin/jobcell")).unwrap();
        mode(&d.join("bin/jobcell"), 0o755);
        // `cargo build -p jobcell-spank` puts it next to the binary; `cargo test` (through the
        // dev-dependency) in deps/.
        let so = [
            bin.with_file_name("libjobcell_spank.so"),
            bin.with_file_name("deps").join("libjobcell_spank.so"),
        ]
        .into_iter()
        .find(|p| p.exists());
        if let Some(so) = so {
            std::fs::copy(&so, d.join("bin/jobcell_spank.so")).unwrap();
            mode(&d.join("bin/jobcell_spank.so"), 0o755);
        }
        // The test image: a static busybox and an os-release to recognise it by.
        if let Some(bb) = which("busybox") {
            let ok = Command::new("file")
                .arg(&bb)
                .output()
                .map(|o| !text(&o.stdout).contains("dynamically"))
                .unwrap_or(true);
            if ok {
                let r = d.join("rootfs");
                for s in ["bin", "etc", "usr/bin"] {
                    std::fs::create_dir_all(r.join(s)).unwrap();
                }
                std::fs::copy(&bb, r.join("bin/busybox")).unwrap();
                mode(&r.join("bin/busybox"), 0o755);
                for a in ["sh", "cat", "ls", "ps", "echo", "sleep", "true", "id", "wc"] {
                    std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
                }
                std::fs::write(
                    r.join("etc/os-release"),
                    "NAME=\"jobcell slurm test\"\nID=jobcell-slurmtest\nVERSION_ID=1\n",
                )
                .unwrap();
                let o = run(Command::new(d.join("bin/jobcell")).args([
                    "image".as_ref(),
                    "add".as_ref(),
                    IMAGE.as_ref(),
                    r.as_os_str(),
                    "--public".as_ref(),
                    "--state-dir".as_ref(),
                    d.join("store").as_os_str(),
                ]));
                if !o.status.success() {
                    return Err(format!("jobcell image add: {}", text(&o.stderr)));
                }
                self.image = true;
            }
        }
        Ok(())
    }

    fn start_munge(&mut self) -> Result<(), String> {
        let m = self.p("munge");
        let key = m.join("etc/munge.key");
        let o = run(Command::new("mungekey")
            .arg("--create")
            .arg(format!("--keyfile={}", key.display())));
        if !o.status.success() {
            return Err(format!("mungekey: {}", text(&o.stderr)));
        }
        let o = run(Command::new("chown").arg("-R").arg("munge:munge").arg(&m));
        if !o.status.success() {
            return Err(format!("chown munge: {}", text(&o.stderr)));
        }
        for (s, md) in [
            ("etc", 0o700),
            ("log", 0o700),
            ("lib", 0o700),
            ("run", 0o755),
        ] {
            mode(&m.join(s), md);
        }
        mode(&key, 0o600);
        let pidfile = m.join("run/munged.pid");
        let o = run(Command::new("runuser")
            .args(["-u", "munge", "--"])
            .arg("munged")
            .args([
                format!("--key-file={}", key.display()),
                format!("--socket={}", m.join("run/munge.socket.2").display()),
                format!("--pid-file={}", pidfile.display()),
                format!("--log-file={}", m.join("log/munged.log").display()),
                format!("--seed-file={}", m.join("lib/munge.seed").display()),
            ]));
        if !o.status.success() {
            return Err(format!("munged: {}", text(&o.stderr)));
        }
        let pid =
            std::fs::read_to_string(&pidfile).map_err(|e| format!("{}: {e}", pidfile.display()))?;
        self.munged = Some(
            pid.trim()
                .parse()
                .map_err(|_| "munged pid file".to_string())?,
        );
        Ok(())
    }

    fn write_conf(&self, plugin: bool) {
        let d = self.dir.display();
        // Ports derived from our pid keep two test runs on one host apart.
        let port = 17000 + (std::process::id() % 2000) * 2;
        let conf = format!(
            "ClusterName=jobcelltest\nSlurmctldHost=localhost\nSlurmUser=root\n\
             AuthType=auth/munge\nAuthInfo=socket={d}/munge/run/munge.socket.2\nCredType=cred/munge\n\
             StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/run/slurmctld.pid\nSlurmdPidFile={d}/run/slurmd.pid\n\
             SlurmctldLogFile={d}/log/slurmctld.log\nSlurmdLogFile={d}/log/slurmd.log\n\
             SlurmctldPort={port}\nSlurmdPort={}\n\
             ProctrackType=proctrack/{}\nTaskPlugin=task/none\n\
             SelectType=select/cons_tres\nSelectTypeParameters=CR_Core_Memory\nReturnToService=2\n\
             JobAcctGatherType=jobacct_gather/linux\nJobAcctGatherFrequency=task=1\n\
             AccountingStorageType=accounting_storage/none\n\
             MpiDefault=none\nKillWait=5\nDefMemPerCPU=100\nPlugStackConfig={d}/etc/plugstack.conf\n\
             NodeName=localhost CPUs=2 RealMemory=2000 State=UNKNOWN\n\
             PartitionName=debug Nodes=ALL Default=YES State=UP MaxTime=INFINITE OverSubscribe=YES\n",
            port + 1,
            proctrack()
        );
        std::fs::write(&self.conf, conf).unwrap();
        // Only freezer tracking: nothing that moves processes between memory or cpu cgroups.
        std::fs::write(
            self.p("etc/cgroup.conf"),
            "CgroupPlugin=cgroup/v1\nCgroupMountpoint=/sys/fs/cgroup\nCgroupAutomount=no\n\
             ConstrainCores=no\nConstrainRAMSpace=no\nConstrainDevices=no\n",
        )
        .unwrap();
        let stack = if plugin {
            format!(
                "required {d}/bin/jobcell_spank.so jobcell={d}/bin/jobcell scratch={d}/scratch state_dir={d}/store\n"
            )
        } else {
            String::new()
        };
        std::fs::write(self.p("etc/plugstack.conf"), stack).unwrap();
        mode(&self.p("etc"), 0o755);
        mode(&self.conf, 0o644);
        mode(&self.p("etc/plugstack.conf"), 0o644);
    }

    fn daemon(&self, prog: &str, args: &[&str], log: &str) -> Child {
        let out = std::fs::File::create(self.p(&format!("log/{log}"))).unwrap();
        Command::new(prog)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{prog}: {e}"))
    }

    fn start_slurm(&mut self) -> Result<(), String> {
        self.write_conf(false);
        let conf = self.conf.to_string_lossy().into_owned();
        self.ctld = Some(self.daemon("slurmctld", &["-D", "-i", "-f", &conf], "ctld.out"));
        self.start_slurmd()
    }

    fn start_slurmd(&mut self) -> Result<(), String> {
        let conf = self.conf.to_string_lossy().into_owned();
        self.slurmd = Some(self.daemon("slurmd", &["-D", "-f", &conf], "slurmd.out"));
        let t = Instant::now();
        loop {
            let o = self
                .cmd("sinfo", &["-h", "-n", "localhost", "-o", "%T"])
                .output();
            if let Ok(o) = o {
                if text(&o.stdout).trim() == "idle" {
                    return Ok(());
                }
            }
            if t.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "the node did not become idle in 30 s; logs in {}",
                    self.p("log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop_slurmd(&mut self) {
        if let Some(mut c) = self.slurmd.take() {
            // SAFETY: kill takes integers only; the pid is this harness's own unreaped child
            // (slurmd).
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            wait_or_kill(&mut c, Duration::from_secs(10));
        }
    }

    /// slurmd reads plugstack.conf (which hooks exist) only when it starts.
    fn enable_plugin(&mut self) -> Result<(), String> {
        self.stop_slurmd();
        self.write_conf(true);
        self.start_slurmd()
    }

    /// A Slurm client command as root.
    fn cmd(&self, prog: &str, args: &[&str]) -> Command {
        let mut c = Command::new(prog);
        c.args(args).env("SLURM_CONF", &self.conf);
        c
    }

    /// A command as the unprivileged test user, in its work dir.
    fn user(&self, args: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.args([
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--init-groups".into(),
            "--reset-env".into(),
            "--".into(),
        ])
        .args(["env", &format!("SLURM_CONF={}", self.conf.display())])
        .args(args)
        .current_dir(self.p("work"))
        .stdin(Stdio::null());
        c
    }

    fn user_out(&self, args: &[&str]) -> Output {
        timeout(self.user(args), Duration::from_secs(60))
    }

    /// sbatch a script as the user; returns the job id.
    fn sbatch(&self, script: &str, wait: bool) -> (u32, Output) {
        self.sbatch_with(&[], script, wait)
    }

    fn sbatch_with(&self, opts: &[&str], script: &str, wait: bool) -> (u32, Output) {
        let path = self.p(&format!("work/job-{}.sh", unique()));
        std::fs::write(&path, script).unwrap();
        mode(&path, 0o755);
        let out = self.p("work/%j.out").to_string_lossy().into_owned();
        let mut args = vec!["sbatch", "--parsable", "-o", &out];
        args.extend_from_slice(opts);
        if wait {
            args.push("--wait");
        }
        let p = path.to_string_lossy().into_owned();
        args.push(&p);
        let o = self.user_out(&args);
        let id = text(&o.stdout)
            .lines()
            .next()
            .and_then(|l| l.trim().split(';').next()?.parse().ok())
            .unwrap_or_else(|| panic!("sbatch: {} {}", text(&o.stdout), text(&o.stderr)));
        (id, o)
    }

    fn job_output(&self, id: u32) -> String {
        std::fs::read_to_string(self.p(&format!("work/{id}.out"))).unwrap_or_default()
    }

    fn job_field(&self, id: u32, field: &str) -> String {
        let o = self
            .cmd("scontrol", &["show", "job", &id.to_string()])
            .output()
            .unwrap();
        text(&o.stdout)
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{field}=")).map(String::from))
            .unwrap_or_default()
    }

    fn wait_state(&self, id: u32, want: &[&str], t: Duration) -> String {
        let start = Instant::now();
        loop {
            let s = self.job_field(id, "JobState");
            if want.contains(&s.as_str()) || start.elapsed() > t {
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `JOBCELL_SLURM_PROCTRACK=cgroup` runs the suite with Slurm's cgroup process tracking
/// (freezer cgroups Slurm makes under /sys/fs/cgroup/freezer/slurm; opt-in because those are
/// cgroups on the host that jobcell did not create). Default: proctrack/linuxproc.
fn proctrack() -> &'static str {
    match std::env::var("JOBCELL_SLURM_PROCTRACK").as_deref() {
        Ok("cgroup") => "cgroup",
        _ => "linuxproc",
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Run with a hard limit: a hung srun fails the test instead of hanging the suite.
fn timeout(mut c: Command, t: Duration) -> Output {
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{c:?}: {e}"));
    let pid = child.id() as i32;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    let watchdog = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < t {
            if d2.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: kill takes integers only; it fires only on timeout, while wait_with_output
        // still waits, so `pid` is still this test's unreaped child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let o = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watchdog.join().unwrap();
    o
}

/// Host pids whose command line contains `needle`.
fn host_pids(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cl) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cl)
                .replace('\0', " ")
                .contains(needle)
            {
                out.push(pid);
            }
        }
    }
    out
}

/// The command names (comm) of `pid`'s ancestors, nearest first.
fn ancestors(mut pid: i32) -> Vec<String> {
    let mut out = Vec::new();
    while pid > 1 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            break;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split at the last ')'.
        let Some(close) = stat.rfind(')') else { break };
        let ppid: i32 = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        pid = ppid;
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            out.push(comm.trim().to_string());
        }
    }
    out
}

fn wait_until(t: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < t {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// The `ps -e` of an isolated job: jobcell's init as PID 1, the command, ps; nothing else.
fn assert_isolated_ps(out: &str, what: &str) {
    let procs: Vec<&str> = out
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        procs.len() <= 4 && procs.iter().any(|l| l.trim_start().starts_with("1 ")),
        "{what}: the job sees more than itself:\n{out}"
    );
    assert!(
        !out.contains("slurm") && !out.contains("munged"),
        "{what}: daemons visible:\n{out}"
    );
}

/// Slurm's elapsed-time format: `[DD-][HH:]MM:SS[.mmm]`, in seconds.
fn slurm_secs(s: &str) -> Option<f64> {
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (d.parse::<f64>().ok()?, r),
        None => (0.0, s),
    };
    let mut secs = 0.0;
    for part in rest.split(':') {
        secs = secs * 60.0 + part.parse::<f64>().ok()?;
    }
    Some(days * 86400.0 + secs)
}

/// Slurm's sizes: `123K`, `4.5M`, `1G` (or bytes), in bytes.
fn slurm_bytes(s: &str) -> Option<u64> {
    jobcell_spec::parse_size(s, jobcell_spec::Unit::Bytes).ok()
}

/// `sstat -n -P -o MaxRSS,AveCPU,NTasks`: (MaxRSS bytes, AveCPU seconds, tasks).
fn parse_sstat(out: &str) -> Option<(u64, f64, u32)> {
    let line = out.lines().find(|l| l.matches('|').count() >= 2)?;
    let f: Vec<&str> = line.split('|').collect();
    Some((
        slurm_bytes(f[0].trim())?,
        slurm_secs(f[1].trim())?,
        f[2].trim().parse().ok()?,
    ))
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (runs slurmctld, slurmd, munged and a test user)".into());
    }
    for b in [
        "slurmctld",
        "slurmd",
        "munged",
        "mungekey",
        "srun",
        "sbatch",
        "scancel",
        "scontrol",
        "sinfo",
        "setpriv",
        "runuser",
    ] {
        if which(b).is_none() {
            return Some(format!(
                "slurm not installed ({b} missing: apt-get install slurm-wlm munge)"
            ));
        }
    }
    None
}

#[test]
fn jobcell_under_a_real_slurm() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let started = Instant::now();
    let mut c = match Cluster::start() {
        Ok(c) => c,
        Err(e) => panic!("starting the test cluster: {e}"),
    };
    let jc = c.p("bin/jobcell").to_string_lossy().into_owned();
    let us = c.p("uscratch").to_string_lossy().into_owned();
    let store = c.p("store").to_string_lossy().into_owned();

    // ---- Phase 1: rootless `jobcell run` inside ordinary Slurm jobs.
    let o = c.user_out(&["srun", &jc, "run", "--scratch-base", &us, "--", "ps", "-e"]);
    assert!(o.status.success(), "srun jobcell run: {}", text(&o.stderr));
    assert_isolated_ps(&text(&o.stdout), "srun jobcell run -- ps -e");

    if c.image {
        let script = format!(
            "#!/bin/sh\n{jc} run --scratch-base {us} --state-dir {store} --image {IMAGE} -- cat /etc/os-release\n"
        );
        let (id, o) = c.sbatch(&script, true);
        let out = c.job_output(id);
        assert!(
            o.status.success() && out.contains("ID=jobcell-slurmtest"),
            "sbatch of jobcell run --image: {} / {}\n{out}",
            text(&o.stderr),
            c.p("log").display()
        );
    } else {
        eprintln!("SKIPPED: the image parts (no static busybox: apt-get install busybox-static)");
    }
    // `jobcell run` leaves nothing in the user's scratch base.
    assert_eq!(
        std::fs::read_dir(&us).unwrap().count(),
        0,
        "leftovers in {us}"
    );

    // ---- Phase 2: the SPANK plugin isolates every task.
    if !c.p("bin/jobcell_spank.so").exists() {
        eprintln!(
            "SKIPPED: the SPANK plugin parts (no libjobcell_spank.so next to {JOBCELL}: cargo build -p jobcell-spank)"
        );
        return;
    }
    c.enable_plugin()
        .expect("restarting slurmd with the plugin");

    let o = c.user_out(&["srun", "--help"]);
    assert!(
        text(&o.stdout).contains("--jobcell-image"),
        "srun --help lacks --jobcell-image: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );

    // A plain srun is isolated, in its own pid namespace, with its own /tmp.
    let o = c.user_out(&["srun", "ps", "-e"]);
    assert!(o.status.success(), "srun ps -e: {}", text(&o.stderr));
    assert_isolated_ps(&text(&o.stdout), "srun ps -e under the plugin");

    if c.image {
        let o = c.user_out(&[
            "srun",
            &format!("--jobcell-image={IMAGE}"),
            "cat",
            "/etc/os-release",
        ]);
        assert!(
            o.status.success() && text(&o.stdout).contains("ID=jobcell-slurmtest"),
            "srun --jobcell-image: {} {}",
            text(&o.stdout),
            text(&o.stderr)
        );
        // sbatch's option reaches the batch step: the script itself runs in the image.
        let opt = format!("--jobcell-image={IMAGE}");
        let (id, o) = c.sbatch_with(&[&opt], "#!/bin/sh\ncat /etc/os-release\n", true);
        let out = c.job_output(id);
        assert!(
            o.status.success() && out.contains("ID=jobcell-slurmtest"),
            "sbatch --jobcell-image: {} {out}",
            text(&o.stderr)
        );
        let o = c.user_out(&["srun", "--jobcell-image=no-such-image", "true"]);
        assert!(!o.status.success(), "an unknown image must fail the task");
        assert!(
            text(&o.stderr).contains("no-such-image"),
            "{}",
            text(&o.stderr)
        );
    }

    // Private /tmp: the file lands in the per-job dir, never in the host's /tmp, and the
    // per-job dir is gone after the job.
    let name = format!("jobcell-slurm-{}", unique());
    let o = c.user_out(&[
        "srun",
        "sh",
        "-c",
        &format!("echo secret > /tmp/{name} && ls /tmp && echo $SLURM_JOB_ID"),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains(&name), "{out}");
    assert!(
        !Path::new("/tmp").join(&name).exists(),
        "the job wrote to the host's /tmp"
    );
    let jobid: u32 = out.lines().last().unwrap().trim().parse().unwrap();
    let jobdir = c.p(&format!("scratch/slurm-{jobid}"));
    assert!(
        wait_until(Duration::from_secs(15), || !jobdir.exists()),
        "{} is still there after the job",
        jobdir.display()
    );

    // Exit codes reach srun, sbatch --wait and slurmctld's record of the job.
    let o = c.user_out(&["srun", "sh", "-c", "exit 3"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "srun exit status: {}",
        text(&o.stderr)
    );
    let o = c.user_out(&["srun", "sh", "-c", "kill -KILL $$"]);
    assert!(
        text(&o.stderr).contains("Killed") || o.status.code() == Some(137),
        "a task killed by SIGKILL: status {:?}, {}",
        o.status,
        text(&o.stderr)
    );
    // The batch script and its steps share the job's /tmp (each in its own pid namespace).
    let (id, o) = c.sbatch(
        "#!/bin/sh\necho batch-ran\necho shared-$SLURM_JOB_ID > /tmp/f\nsrun cat /tmp/f\nexit 7\n",
        true,
    );
    assert_eq!(
        o.status.code(),
        Some(7),
        "sbatch --wait: {}",
        text(&o.stderr)
    );
    let out = c.job_output(id);
    assert!(out.contains("batch-ran"), "{out}");
    assert!(
        out.contains(&format!("shared-{id}")),
        "a step did not see the batch script's /tmp: {out}"
    );
    assert_eq!(c.job_field(id, "ExitCode"), "7:0");

    // Two concurrent jobs of one user: neither sees the other's processes or /tmp. Job A
    // (a batch job) holds a file in its /tmp and sleeps; job B looks.
    let tag = format!("77{}", std::process::id() % 100000);
    let (a, _) = c.sbatch(
        &format!("#!/bin/sh\necho a > /tmp/mark-{tag}\nexec sleep {tag}\n"),
        false,
    );
    assert_eq!(
        c.wait_state(a, &["RUNNING"], Duration::from_secs(30)),
        "RUNNING"
    );
    assert!(
        wait_until(Duration::from_secs(15), || !host_pids(&format!(
            "sleep {tag}"
        ))
        .is_empty()),
        "job A's sleep never showed up"
    );
    // Slurm still tracks the job: its process descends from the step's slurmstepd, and with
    // proctrack/cgroup it sits in the step's freezer cgroup.
    let sleeper = host_pids(&format!("sleep {tag}"))[0];
    assert!(
        ancestors(sleeper)
            .iter()
            .any(|c| c.starts_with("slurmstepd")),
        "job A's process does not descend from slurmstepd: {:?}",
        ancestors(sleeper)
    );
    if proctrack() == "cgroup" {
        let cg = std::fs::read_to_string(format!("/proc/{sleeper}/cgroup")).unwrap();
        assert!(
            cg.lines()
                .any(|l| l.contains(":freezer:/slurm") && l.contains(&format!("/job_{a}/"))),
            "job A's process is outside Slurm's freezer cgroup:\n{cg}"
        );
    }
    let adir = c.p(&format!("scratch/slurm-{a}"));
    assert!(
        adir.join("tmp").join(format!("mark-{tag}")).exists(),
        "job A's /tmp file is not in its per-job dir"
    );
    let o = c.user_out(&["srun", "sh", "-c", "ps -ef; ls -a /tmp; ls /proc"]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        !out.contains(&format!("sleep {tag}")),
        "job B sees job A's process:\n{out}"
    );
    assert!(
        !out.contains(&format!("mark-{tag}")),
        "job B sees job A's /tmp:\n{out}"
    );

    // scancel reaches every process of the job, and the per-job dir goes.
    let o = c.user_out(&["scancel", &a.to_string()]);
    assert!(o.status.success(), "scancel: {}", text(&o.stderr));
    assert!(
        wait_until(Duration::from_secs(30), || host_pids(&format!(
            "sleep {tag}"
        ))
        .is_empty()),
        "job A's processes survived scancel"
    );
    let st = c.wait_state(a, &["CANCELLED"], Duration::from_secs(30));
    assert_eq!(st, "CANCELLED");
    assert!(
        wait_until(Duration::from_secs(15), || !adir.exists()),
        "{} is still there after scancel",
        adir.display()
    );
    // Slurm's own accounting still sees the task's usage through jobcell: a step that spins a
    // CPU and holds ~80 MiB (tail buffers a newline-free stream) is measured by slurmstepd's
    // jobacct_gather/linux (which walks the step's processes, jobcell's init and job included)
    // and reported by sstat; then scancel ends it.
    let tag = format!("acct{}", unique());
    let (id, _) = c.sbatch(
        &format!(
            "#!/bin/sh\nsrun sh -c ': {tag}; (while :; do :; done) & (head -c 80M /dev/zero; sleep 600) | tail'\n"
        ),
        false,
    );
    assert_eq!(
        c.wait_state(id, &["RUNNING"], Duration::from_secs(30)),
        "RUNNING"
    );
    let step = format!("{id}.0");
    let mut last = String::new();
    let measured = wait_until(Duration::from_secs(90), || {
        let o = c
            .cmd(
                "sstat",
                &["-n", "-P", "-j", &step, "-o", "MaxRSS,AveCPU,NTasks"],
            )
            .output()
            .unwrap();
        last = format!("{}{}", text(&o.stdout), text(&o.stderr));
        match parse_sstat(&text(&o.stdout)) {
            Some((rss, cpu, _)) => rss >= 60 << 20 && cpu >= 2.0,
            None => false,
        }
    });
    assert!(
        measured,
        "sstat never showed the step's CPU (>= 2 s) and memory (>= 60 MiB): {last}"
    );
    let (rss, cpu, ntasks) = parse_sstat(&last).unwrap();
    assert!(
        rss < 1 << 30,
        "MaxRSS {rss} is not plausible for an 80 MiB holder: {last}"
    );
    assert_eq!(ntasks, 1, "{last}");
    eprintln!(
        "sstat of {step} under jobcell_spank: MaxRSS {} MiB, AveCPU {cpu:.1} s",
        rss >> 20
    );
    let o = c.user_out(&["scancel", &id.to_string()]);
    assert!(o.status.success(), "scancel: {}", text(&o.stderr));
    assert!(
        wait_until(Duration::from_secs(30), || host_pids(&tag).is_empty()),
        "the accounted job's processes survived scancel"
    );
    assert_eq!(
        c.wait_state(id, &["CANCELLED"], Duration::from_secs(30)),
        "CANCELLED"
    );

    // Nothing of ours is left mounted on the host.
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains(c.dir.to_str().unwrap()),
        "a mount under {} leaked",
        c.dir.display()
    );
    let _ = std::io::stderr().flush();
    eprintln!("slurm test took {:.1} s", started.elapsed().as_secs_f64());
}
