//! Rootless `jobcell run` where the host forbids user namespaces: one clear line, exit 125,
//! nothing left behind.
//!
//! The host's own setting is never touched: the test makes a user namespace (as root), sets
//! `user.max_user_namespaces = 0` *inside it* (the limit is per user namespace and binds its
//! descendants), and runs jobcell there as an unprivileged uid.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const JOBCELL: &str = env!("CARGO_BIN_EXE_jobcell");

#[test]
fn userns_disabled_is_one_clear_error() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (to map an unprivileged uid into a test user namespace)");
        return;
    }
    if Command::new("unshare").arg("--version").output().is_err()
        || Command::new("setpriv").arg("--version").output().is_err()
    {
        eprintln!("SKIPPED: needs unshare and setpriv (util-linux)");
        return;
    }
    let base = std::env::temp_dir().join(format!("jobcell-userns-test-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let scratch = base.join("scratch");
    // The inner sh is exec'd after the uid map exists, so it starts as root of the namespace
    // (with CAP_SYS_RESOURCE there); the outer one lost its capabilities when unshare exec'd it.
    let script = format!(
        "read go; exec sh -c 'echo 0 > /proc/sys/user/max_user_namespaces || exit 99; \
         exec setpriv --reuid 65534 --regid 65534 --clear-groups {JOBCELL} run \
         --scratch-base {} -- true'",
        scratch.display()
    );
    let mut child = Command::new("unshare")
        .args(["--user", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until unshare has entered the new namespace, then map root and nobody (we are root
    // outside, so two ranges are allowed) and let the script go on.
    let mine = std::fs::metadata("/proc/self/ns/user").unwrap().ino();
    let start = Instant::now();
    while std::fs::metadata(format!("/proc/{pid}/ns/user"))
        .map(|m| m.ino())
        .ok()
        == Some(mine)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "unshare never made its namespace"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(format!("/proc/{pid}/uid_map"), "0 0 1\n65534 65534 1\n").unwrap();
    std::fs::write(format!("/proc/{pid}/gid_map"), "0 0 1\n65534 65534 1\n").unwrap();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(
        lines[0].starts_with("jobcell: ") && lines[0].contains("user namespaces"),
        "the error must say user namespaces are unavailable: {err}"
    );
    eprintln!("jobcell said: {}", lines[0]);
    // Nothing was left in the scratch base (it may have been created, empty).
    if scratch.exists() {
        assert_eq!(
            std::fs::read_dir(&scratch).unwrap().count(),
            0,
            "leftovers in scratch"
        );
    }
    std::fs::remove_dir_all(&base).unwrap();
    assert!(!Path::new(&base).exists());
}

fn setpriv_nobody() -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        JOBCELL,
    ]);
    c
}

/// An unprivileged user runs a public image that root registered: the image's files, read-only
/// binds, private IPC/UTS, no host cgroup tree, the "limits come from the scheduler" warning
/// said once, and a report built from rusage. Nothing is left behind.
#[test]
fn rootless_image_view_binds_and_report() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (to register an image and become an unprivileged user)");
        return;
    }
    let Some(bb) = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("SKIPPED: no busybox for the test image (apt-get install busybox-static)");
        return;
    };
    let t = std::env::temp_dir().join(format!("jobcell-rootless-img-{}", std::process::id()));
    // Removed even when a check fails (no mount can be in it: jobs mount only in their own
    // namespaces).
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(t.clone());
    let r = t.join("rootfs");
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::copy(bb, r.join("bin/busybox")).unwrap();
    for a in ["sh", "cat", "ls", "wc", "echo", "hostname", "readlink"] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
    }
    std::fs::write(r.join("etc/os-release"), "ID=jobcell-rootless-test\n").unwrap();
    let data = t.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("in"), "input\n").unwrap();
    let scratch = t.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    std::os::unix::fs::chown(&scratch, Some(65534), Some(65534)).unwrap();
    for d in [&t, &data] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let store = t.join("store");
    let o = Command::new(JOBCELL)
        .args([
            "image",
            "add",
            "rl",
            r.to_str().unwrap(),
            "--public",
            "--state-dir",
        ])
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "image add: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    let o = setpriv_nobody()
        .args(["run", "--report", "-", "--memory", "100M", "--scratch-base"])
        .arg(&scratch)
        .arg("--state-dir")
        .arg(&store)
        .args(["--image", "rl", "--ro-bind"])
        .arg(format!("{}:/data", data.display()))
        .args([
            "--",
            "sh",
            "-c",
            "cat /etc/os-release; echo cg=$(ls /sys/fs/cgroup | wc -l); cat /data/in; \
             (echo x > /data/out) 2>/dev/null; echo rw=$?; \
             echo ipc=$(readlink /proc/self/ns/ipc) uts=$(readlink /proc/self/ns/uts)",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    if o.status.code() == Some(125) && err.contains("user namespaces") {
        eprintln!("SKIPPED: user namespaces unavailable: {}", err.trim());
        std::fs::remove_dir_all(&t).unwrap();
        return;
    }
    assert!(o.status.success(), "{out}\n{err}");
    let host_ns = |n: &str| std::fs::read_link(format!("/proc/self/ns/{n}")).unwrap();
    assert!(out.contains("ID=jobcell-rootless-test"), "{out}");
    assert!(
        out.contains("cg=0"),
        "the host's cgroup tree is visible: {out}"
    );
    assert!(out.contains("input"), "{out}");
    assert!(
        !out.contains("rw=0") && !data.join("out").exists(),
        "--ro-bind was writable: {out}"
    );
    for n in ["ipc", "uts"] {
        let h = host_ns(n).to_string_lossy().into_owned();
        assert!(
            !out.contains(&h),
            "the job shares the host's {n} namespace: {out}"
        );
    }
    let (said, json) = err.split_at(err.find('{').expect("a JSON report on stderr"));
    assert_eq!(
        said.matches("limits are the enclosing scheduler's").count(),
        1,
        "the warning must be said once: {said}"
    );
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["isolation"]["rootless"], true);
    assert_eq!(v["isolation"]["image"], "rl");
    assert_eq!(v["cpu_source"], "rusage");
    for ns in ["user", "pid", "mount", "ipc", "uts"] {
        assert!(
            v["isolation"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == ns),
            "{ns} missing: {json}"
        );
    }
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "scratch leftovers"
    );
    std::fs::remove_dir_all(&t).unwrap();
}

// ---------------------------------------------------------------- delegated cgroups (v1 host)

/// A cgroup subtree root delegated to uid 65534 for this test: `<own>/jobcell/<name>` in each
/// v1 hierarchy a job uses, chowned the way systemd's `Delegate=yes` does (the directory and
/// its `cgroup.procs`). Drop kills the launcher if it is still running and removes every
/// directory below, bottom-up, waiting until they are empty (rmdir never removes a cgroup
/// with processes), and `<own>/jobcell` if this test created it and it is empty.
struct Delegated {
    dirs: Vec<std::path::PathBuf>,
    /// The controller each of `dirs` was found by.
    ctrls: Vec<String>,
    made_parents: Vec<std::path::PathBuf>,
    launcher: Option<std::process::Child>,
}

/// (controller, mountpoint, this process's cgroup) for the v1 hierarchies jobs use.
fn v1_hierarchies() -> Option<Vec<(String, std::path::PathBuf, String)>> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let pc = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut out: Vec<(String, std::path::PathBuf, String)> = Vec::new();
    for ctrl in ["memory", "cpu", "cpuacct", "pids", "freezer"] {
        let mount = mi.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let post: Vec<&str> = post.split(' ').collect();
            (post.first() == Some(&"cgroup") && post.get(2)?.split(',').any(|o| o == ctrl))
                .then(|| std::path::PathBuf::from(pre.split(' ').nth(4).unwrap()))
        });
        let Some(mount) = mount else {
            if ctrl == "memory" {
                return None;
            }
            continue;
        };
        let own = pc.lines().find_map(|l| {
            let mut it = l.splitn(3, ':');
            let _ = it.next();
            let c = it.next()?;
            let p = it.next()?;
            c.split(',').any(|x| x == ctrl).then(|| p.to_string())
        })?;
        if !out.iter().any(|(_, m, _)| *m == mount) {
            out.push((ctrl.to_string(), mount, own));
        }
    }
    Some(out)
}

fn rmdir_tree(d: &Path) -> bool {
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                rmdir_tree(&e.path());
            }
        }
    }
    std::fs::remove_dir(d).is_ok() || !d.exists()
}

impl Delegated {
    fn new(name: &str, uid: u32) -> Option<Delegated> {
        let mut d = Delegated {
            dirs: Vec::new(),
            ctrls: Vec::new(),
            made_parents: Vec::new(),
            launcher: None,
        };
        for (ctrl, mount, own) in v1_hierarchies()? {
            let parent = mount.join(own.trim_start_matches('/')).join("jobcell");
            if !parent.exists() {
                std::fs::create_dir(&parent).unwrap();
                d.made_parents.push(parent.clone());
            }
            let dir = parent.join(name);
            std::fs::create_dir(&dir).unwrap();
            d.dirs.push(dir.clone());
            d.ctrls.push(ctrl);
            for p in [dir.clone(), dir.join("cgroup.procs")] {
                std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
            }
        }
        Some(d)
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        if let Some(mut c) = self.launcher.take() {
            // The launcher's death takes the job with it (the init has PDEATHSIG).
            let _ = c.kill();
            let _ = c.wait();
        }
        let start = Instant::now();
        for d in &self.dirs {
            while !rmdir_tree(d) && start.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for p in &self.made_parents {
            let _ = std::fs::remove_dir(p);
        }
    }
}

fn scratch_for_nobody(tag: &str) -> (std::path::PathBuf, impl Drop) {
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let s = std::env::temp_dir().join(format!("jobcell-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&s).unwrap();
    std::os::unix::fs::chown(&s, Some(65534), Some(65534)).unwrap();
    (s.clone(), Rm(s))
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// An unprivileged user whose cgroup was delegated to it (as systemd's `Delegate=yes` does on
/// v1: the unit's cgroup chowned in every hierarchy, the process living there) gets a cgroup of
/// its own per job below it, with the limits: checked in the kernel's files while the job runs,
/// then a memory hog is OOM-killed at 64 MiB and the report has the cgroup's usage; every job
/// cgroup is gone afterwards.
#[test]
fn rootless_with_a_delegated_cgroup_applies_limits_and_reports_usage() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (to delegate a cgroup to an unprivileged user)");
        return;
    }
    let name = format!("rootless-test-{}", std::process::id());
    let Some(mut deleg) = Delegated::new(&name, 65534) else {
        eprintln!(
            "SKIPPED: no cgroup v1 memory hierarchy here (pure v2: tests/vm/launcher-checks.sh \
             checks delegation in the v2 VM)"
        );
        return;
    };
    let (scratch, _rm) = scratch_for_nobody("deleg");
    // As root, move the shell into the delegated cgroups, then become nobody and exec jobcell:
    // jobcell lives in a cgroup it may write, like a process of a delegated systemd unit.
    let script = format!(
        "for d in \"$@\"; do echo $$ > \"$d/cgroup.procs\" || exit 99; done; \
         exec setpriv --reuid=65534 --regid=65534 --clear-groups -- {JOBCELL} run \
         --scratch-base {} --report - --memory 64M --pids 50 --cpus 0.5 -- \
         sh -c 'echo ready; read go; head -c 300M /dev/zero | tail; echo hog-ended'",
        scratch.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script, "sh"])
        .args(&deleg.dirs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    deleg.launcher = Some(child);
    let mut line = String::new();
    use std::io::{BufRead, Read};
    stdout.read_line(&mut line).unwrap();
    if line.trim() != "ready" {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        if err.contains("user namespaces") {
            eprintln!("SKIPPED: user namespaces unavailable: {}", err.trim());
            return;
        }
        panic!("the job did not start: {line:?} {err}");
    }
    // While the job waits: its cgroup is a child of the delegated one, owned by the user,
    // with the limits in the kernel's files, and holds the job's processes.
    let mem = &deleg.dirs[0];
    let jobs: Vec<std::path::PathBuf> = std::fs::read_dir(mem.join("jobcell"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("job-"))
        .collect();
    assert_eq!(jobs.len(), 1, "one job cgroup expected: {jobs:?}");
    let job = &jobs[0];
    assert_eq!(std::fs::metadata(job).unwrap().uid(), 65534);
    assert_eq!(read_trim(&job.join("memory.limit_in_bytes")), "67108864");
    assert!(!read_trim(&job.join("cgroup.procs")).is_empty());
    let rel = job.strip_prefix(mem).unwrap();
    for (d, ctrl) in deleg.dirs.iter().zip(&deleg.ctrls).skip(1) {
        let j = d.join(rel);
        if ctrl == "freezer" {
            // Nothing suspends a `jobcell run` job: it gets no freezer cgroup (the daemon's
            // jobs do) and stays in its launcher's, the delegated one.
            assert!(!j.exists(), "{} was made", j.display());
            continue;
        }
        if j.join("pids.max").exists() {
            assert_eq!(read_trim(&j.join("pids.max")), "50");
        }
        if j.join("cpu.shares").exists() {
            assert_eq!(read_trim(&j.join("cpu.shares")), "512");
        }
        assert!(
            !read_trim(&j.join("cgroup.procs")).is_empty(),
            "the job is not in {}",
            j.display()
        );
    }
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let mut out = line;
    stdout.read_to_string(&mut out).unwrap();
    let mut err = String::new();
    stderr.read_to_string(&mut err).unwrap();
    let status = deleg.launcher.take().unwrap().wait().unwrap();
    assert!(status.success(), "status {status:?}\n{out}\n{err}");
    assert!(
        !err.contains("not enforced"),
        "a delegated cgroup was not used: {err}"
    );
    assert!(err.contains("went over its memory limit"), "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&err[err.find('{').expect("a JSON report")..]).unwrap();
    assert_eq!(v["isolation"]["rootless"], true);
    assert_eq!(v["oom_killed"], true, "{err}");
    let peak = v["usage"]["memory_peak"]
        .as_u64()
        .expect("cgroup usage in the report");
    assert!(
        peak > 32 << 20 && peak <= 64 << 20,
        "memory peak {peak} is not the hog's"
    );
    assert!(v["usage"]["pids_peak"].as_u64().unwrap() >= 2, "{err}");
    assert!(
        v["isolation"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "cgroup"),
        "{err}"
    );
    // The job's cgroup is gone in every hierarchy (only jobcell's parent remains, empty; in
    // the freezer, where the job had none, not even that need exist).
    for (d, ctrl) in deleg.dirs.iter().zip(&deleg.ctrls) {
        if ctrl == "freezer" && !d.join("jobcell").exists() {
            continue;
        }
        let left: Vec<_> = std::fs::read_dir(d.join("jobcell"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    let dirs = deleg.dirs.clone();
    drop(deleg);
    for d in dirs {
        assert!(!d.exists(), "{} was not removed", d.display());
    }
}

/// Without a delegated cgroup (this test's cgroups belong to root): limits asked for are said
/// once to come from the enclosing scheduler, the report's CPU comes from rusage and has no
/// cgroup usage; a `--cgroup-parent` the user cannot write is one clear error, exit 125, and
/// nothing is created.
#[test]
fn rootless_without_a_delegated_cgroup_says_so_once() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (to become an unprivileged user)");
        return;
    }
    let (scratch, _rm) = scratch_for_nobody("nodeleg");
    let o = setpriv_nobody()
        .args([
            "run",
            "--report",
            "-",
            "--memory",
            "64M",
            "--cpus",
            "1",
            "--scratch-base",
        ])
        .arg(&scratch)
        .args([
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    if o.status.code() == Some(125) && err.contains("user namespaces") {
        eprintln!("SKIPPED: user namespaces unavailable: {}", err.trim());
        return;
    }
    assert!(o.status.success(), "{err}");
    let (said, json) = err.split_at(err.find('{').expect("a JSON report on stderr"));
    let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line expected: {said}");
    assert!(
        lines[0].starts_with(
            "jobcell: --cpus 1, --memory 64.0 MiB not enforced: running rootless with no cgroup"
        ) && lines[0].contains("limits are the enclosing scheduler's"),
        "{said}"
    );
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["cpu_source"], "rusage");
    assert!(v.get("usage").is_none(), "{json}");
    assert!(
        v["cpu_user_us"].as_u64().unwrap() + v["cpu_system_us"].as_u64().unwrap() > 0,
        "the kernel's accounting of the job's processes is empty: {json}"
    );
    // No limits asked: nothing said.
    let o = setpriv_nobody()
        .args(["run", "--scratch-base"])
        .arg(&scratch)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let bogus = format!("/jobcell-rootless-test-{}", std::process::id());
    let o = setpriv_nobody()
        .args(["run", "--cgroup-parent", &bogus, "--scratch-base"])
        .arg(&scratch)
        .args(["--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(125), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("jobcell: --cgroup-parent") && lines[0].contains("not writable"),
        "{err}"
    );
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for m in mi.lines().filter(|l| l.contains(" - cgroup")) {
        let mp = m.split(' ').nth(4).unwrap();
        assert!(
            !Path::new(mp).join(bogus.trim_start_matches('/')).exists(),
            "{bogus} was created under {mp}"
        );
    }
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}

/// Another user pre-creates the victim's default rootless scratch base
/// (`$TMPDIR/jobcell-<uid>`) as a world-writable dir of theirs, or as a symlink to such a dir.
/// The victim's `jobcell run -- true` still works, in a private dir of its own, and writes
/// nothing into (or through) what the squatter made. The test's TMPDIR is a sticky 1777 dir of
/// its own, so the host's /tmp/jobcell-* are never touched.
#[test]
fn a_squatted_rootless_scratch_base_is_refused_and_a_private_one_used() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (to act as two unprivileged users)");
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED: needs setpriv (util-linux)");
        return;
    }
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let squatter = |args: &[&str]| {
        let ok = Command::new("setpriv")
            .args(["--reuid=4242", "--regid=4242", "--clear-groups", "--"])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "squatter: {args:?}");
    };
    // "xdg": the victim has a private $XDG_RUNTIME_DIR, which is then used.
    for variant in ["dir", "symlink", "xdg"] {
        let tmp = std::env::temp_dir().join(format!(
            "jobcell-squat-test-{variant}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let _rm = Rm(tmp.clone());
        let base = tmp.join("jobcell-65534");
        let trap = tmp.join("trap");
        squatter(&["mkdir", "-m", "0777", trap.to_str().unwrap()]);
        match variant {
            "symlink" => squatter(&["ln", "-s", trap.to_str().unwrap(), base.to_str().unwrap()]),
            _ => squatter(&["mkdir", "-m", "0777", base.to_str().unwrap()]),
        }
        let run_dir = tmp.join("run-65534");
        if variant == "xdg" {
            std::fs::create_dir(&run_dir).unwrap();
            std::os::unix::fs::chown(&run_dir, Some(65534), Some(65534)).unwrap();
            std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let victim = || {
            let mut c = setpriv_nobody();
            c.args(["run", "--", "/bin/sh", "-c", "echo $JOBCELL_SCRATCH"])
                .env("TMPDIR", &tmp)
                .env_remove("SLURM_TMPDIR")
                .env_remove("XDG_RUNTIME_DIR");
            if variant == "xdg" {
                c.env("XDG_RUNTIME_DIR", &run_dir);
            }
            c.output().unwrap()
        };
        let o = victim();
        let err = String::from_utf8_lossy(&o.stderr);
        let scratch = String::from_utf8_lossy(&o.stdout).trim().to_string();
        eprintln!(
            "{variant}: exit {:?}, scratch {scratch:?}, stderr: {}",
            o.status.code(),
            err.trim()
        );
        assert!(o.status.success(), "{variant}: {err}");
        assert!(err.trim().is_empty(), "{variant}: said {err}");
        // The job's scratch was in a dir of the victim's own, not in or through the squatter's.
        let used = Path::new(&scratch).parent().unwrap().to_path_buf();
        assert!(used.starts_with(&tmp), "{variant}: {scratch}");
        assert_ne!(used, base, "{variant}: the squatted base was used");
        let md = std::fs::symlink_metadata(&used).unwrap();
        assert!(md.is_dir() && md.uid() == 65534, "{variant}: {used:?}");
        assert_eq!(
            md.mode() & 0o077,
            0,
            "{variant}: {used:?} is open to others"
        );
        for d in [&trap, &base] {
            if let Ok(rd) = std::fs::read_dir(d) {
                let names: Vec<_> = rd.map(|e| e.unwrap().file_name()).collect();
                assert!(names.is_empty(), "{variant}: written into {d:?}: {names:?}");
            }
        }
        if variant == "xdg" {
            assert_eq!(used, run_dir.join("jobcell"));
        }
        // A second run uses the same private dir (so its leftovers stay collected).
        let o = victim();
        assert!(o.status.success());
        let again = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert_eq!(
            Path::new(&again).parent(),
            Some(used.as_path()),
            "{variant}"
        );
        // Nothing but the private base and the squatter's two entries.
        let mut names: Vec<String> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{variant}: {names:?}");
        assert_eq!(
            std::fs::read_dir(&used).unwrap().count(),
            0,
            "{variant}: scratch left in {used:?}"
        );
    }
    // Nowhere private to go (a TMPDIR the victim cannot write): one line, exit 125.
    let tmp = std::env::temp_dir().join(format!("jobcell-squat-test-ro-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _rm = Rm(tmp.clone());
    let o = setpriv_nobody()
        .args(["run", "--", "/bin/true"])
        .env("TMPDIR", &tmp)
        .env_remove("SLURM_TMPDIR")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!(
        "read-only TMPDIR: exit {:?}, stderr: {}",
        o.status.code(),
        err.trim()
    );
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no private scratch base"), "{err}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}
