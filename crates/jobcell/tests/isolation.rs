//! Integration tests that try to break each isolation claim of `jobcell run` from inside a real
//! job. They run the built binary as root; without root each test prints
//! `SKIPPED: needs root` and returns.
//!
//! Run: `cargo test -p jobcell --test isolation -- --test-threads=2`

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

// ------------------------------------------------------------------------------ processes

#[test]
fn ps_sees_only_the_job_and_host_processes_are_out_of_reach() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("ps");
    let marker = unique("psjob");
    let host_arg = unique_sleep(60);
    let mut host = HostProc::sleep(&host_arg);
    let hp = host.pid();
    let script = format!(
        r#": {marker}
ps -eo pid=,args=
echo ---
for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' < "$f"; echo; done
echo ---
test -e /proc/{hp} && echo hostpid_visible=yes
kill -0 {hp} 2>/dev/null; echo kill0=$?
kill -9 {hp} 2>/dev/null; echo kill9=$?
kill -9 1 2>/dev/null; echo killinit=$?
echo alive=yes"#
    );
    let out = Job::new(&t.base()).sh(&script);
    out.expect(0);
    let parts: Vec<&str> = out.stdout.split("---\n").collect();
    // `ps`: pid 1 is jobcell's init; everything else is the job's own shell and ps.
    for line in parts[0].lines() {
        let (pid, args) = line.trim().split_once(' ').unwrap();
        let pid: i32 = pid.parse().unwrap();
        if pid == 1 {
            assert!(args.contains("jobcell"), "pid 1 is not the init: {line}");
        } else {
            assert!(
                args.contains(&marker) || args.starts_with("ps -eo"),
                "a process that is not the job's is visible: {line}\n{}",
                out.stdout
            );
        }
    }
    assert!(parts[0].lines().count() <= 3, "{}", parts[0]);
    assert!(
        !parts[1].contains(&host_arg),
        "host process visible in /proc: {}",
        parts[1]
    );
    assert_eq!(out.value("hostpid_visible"), None, "{}", out.stdout);
    assert_eq!(
        out.value("kill0"),
        Some("1"),
        "kill -0 of a host pid must fail"
    );
    assert_eq!(
        out.value("kill9"),
        Some("1"),
        "kill -9 of a host pid must fail"
    );
    assert_eq!(
        out.value("killinit"),
        Some("1"),
        "the job must not kill its init"
    );
    assert_eq!(out.value("alive"), Some("yes"));
    assert!(
        host.alive(),
        "the host process was killed from inside the job"
    );
    t.assert_base_empty();
}

/// Two jobs under the same uid (both `nobody`, per-job uids off), running at the same time: B
/// must not see A's processes, reach them with a signal, read A's private dirs, find A's
/// scratch dir, or see A's SysV IPC objects.
fn concurrent_jobs_cannot_see_each_other(t: &TestDir) {
    // The control dir outside /tmp (see bind_destination_under_a_private_dir_works).
    let ctl_dir = TestDir::new("pairctl");
    let ctl = ctl_dir.subdir("ctl", 0o777);
    let shared_uid = job_uids_config(&ctl_dir, "none");
    let marker = unique("jobA");
    let script_a = format!(
        r#": {marker}
for d in /tmp /var/tmp /dev/shm; do echo secretA > $d/secret; chmod 600 $d/secret; done
ipcmk -M 4096 >/dev/null && echo ipcA=$(ipcs -m | grep -c '^0x')
echo "$JOBCELL_SCRATCH" > {ctl}/a.tmp && mv {ctl}/a.tmp {ctl}/a
while [ ! -e {ctl}/done ]; do sleep 0.02; done"#,
        ctl = ctl.display()
    );
    let a = Job::new(&t.base())
        .opt("--config")
        .opt(&shared_uid)
        .opt("--bind")
        .opt(&ctl)
        .spawn_sh(&script_a);
    wait_for_file(&ctl.join("a"), Duration::from_secs(10));
    let a_scratch = std::fs::read_to_string(ctl.join("a")).unwrap();
    let a_scratch = a_scratch.trim();
    // A's processes on the host: jobcell, its init and the job's shell all carry the marker.
    let a_pids = host_pids_with_arg(&marker);
    assert!(a_pids.len() >= 2, "job A's processes not found on the host");
    let pids: Vec<String> = a_pids.iter().map(|p| p.to_string()).collect();

    let script_b = format!(
        r#"ps -eo args=
echo ---
for d in /tmp /var/tmp /dev/shm; do ls -A $d; cat $d/secret 2>/dev/null; done
echo ---
ls -A "$(dirname "$JOBCELL_SCRATCH")"
echo ---
ls -A {a_scratch} 2>/dev/null && echo a_scratch=listed
cat {a_scratch}/tmp/secret 2>/dev/null && echo a_secret=read
for p in {pids}; do kill -0 $p 2>/dev/null && echo reached=$p; done
echo ipcB=$(ipcs -m | grep -c '^0x')
basename "$JOBCELL_SCRATCH""#,
        pids = pids.join(" ")
    );
    let b = Job::new(&t.base())
        .opt("--config")
        .opt(&shared_uid)
        .sh(&script_b);
    std::fs::write(ctl.join("done"), "").unwrap();
    let a = a.wait();
    a.expect(0);
    b.expect(0);
    assert_eq!(
        a.value("ipcA"),
        Some("1"),
        "job A could not create SysV shm"
    );
    let parts: Vec<&str> = b.stdout.split("---\n").collect();
    assert!(
        !parts[0].contains(&marker),
        "B sees A's processes:\n{}",
        parts[0]
    );
    assert!(
        parts[0].lines().count() <= 3,
        "B sees more than itself:\n{}",
        parts[0]
    );
    assert!(
        !parts[1].contains("secret"),
        "B sees A's private files:\n{}",
        parts[1]
    );
    let own = b.lines().last().unwrap().to_string();
    assert_eq!(
        parts[2].split_whitespace().collect::<Vec<_>>(),
        vec![own.as_str()],
        "B lists other jobs' scratch dirs in the scratch base"
    );
    assert_eq!(b.value("a_scratch"), None, "B lists A's scratch dir");
    assert_eq!(b.value("a_secret"), None, "B reads A's /tmp");
    assert_eq!(b.value("reached"), None, "B can signal A's processes");
    assert_eq!(b.value("ipcB"), Some("0"), "B sees A's SysV shm");
    t.assert_base_empty();
}

#[test]
fn concurrent_jobs_same_uid_cannot_see_or_signal_each_other() {
    if skip_unless_root() {
        return;
    }
    // The scratch base outside the private dirs, as /var/lib/jobcell on a node.
    let t = TestDir::new("pair");
    concurrent_jobs_cannot_see_each_other(&t);
}

#[test]
fn concurrent_jobs_isolated_with_scratch_base_under_host_tmp() {
    if skip_unless_root() {
        return;
    }
    // The scratch base inside /tmp, which the jobs replace with their own.
    let t = TestDir::new_in(Path::new("/tmp"), "pairtmp");
    concurrent_jobs_cannot_see_each_other(&t);
}

#[test]
fn concurrent_jobs_isolated_with_scratch_base_under_host_dev_shm() {
    if skip_unless_root() {
        return;
    }
    // The scratch base on the host's /dev/shm (a tmpfs scratch), which the job's own /dev
    // hides: its mounts must wait for the scratch dir instead of coming first.
    let t = TestDir::new_in(Path::new("/dev/shm"), "pairshm");
    concurrent_jobs_cannot_see_each_other(&t);
}

#[test]
fn leftover_processes_are_killed_when_the_main_process_exits() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("orphans");
    let bg = unique_sleep(1000);
    let daemon = unique_sleep(1001);
    // A plain background child and a double-forked, setsid'd "daemon" that ignores TERM/HUP.
    let script = format!(
        r#"sleep {bg} &
setsid sh -c 'trap "" TERM HUP INT; sleep {daemon} & wait' &
n=0
until ps -eo args= | grep -q '^sleep {daemon}' && ps -eo args= | grep -q '^sleep {bg}'; do
  n=$((n+1)); [ $n -gt 500 ] && exit 9; sleep 0.01
done
echo started"#
    );
    let out = Job::new(&t.base()).sh(&script);
    out.expect(0);
    assert_eq!(out.stdout.trim(), "started");
    // PID 1's exit makes the kernel kill and reap the namespace before jobcell is told.
    assert_eq!(
        host_pids_with_exact_arg(&bg),
        Vec::<i32>::new(),
        "background sleep survived"
    );
    assert_eq!(
        host_pids_with_exact_arg(&daemon),
        Vec::<i32>::new(),
        "daemon survived"
    );
    t.assert_base_empty();
}

#[test]
fn sigkill_of_jobcell_takes_the_whole_job_down() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("sigkill");
    let ctl = t.subdir("ctl", 0o777);
    let s = unique_sleep(1002);
    let job = Job::new(&t.base())
        .opt("--bind")
        .opt(&ctl)
        .spawn_sh(&format!("sleep {s} & touch {}/ready; wait", ctl.display()));
    wait_for_file(&ctl.join("ready"), Duration::from_secs(10));
    assert_eq!(host_pids_with_exact_arg(&s).len(), 1);
    job.signal(libc::SIGKILL);
    let out = job.wait();
    assert_eq!(out.status.code(), None);
    // PDEATHSIG of the init fires asynchronously: give it a moment.
    let t0 = Instant::now();
    while !host_pids_with_exact_arg(&s).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the job outlived jobcell's SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Scratch removal is not promised for this one exit path; TestDir removes it.
}

#[test]
fn the_init_left_exiting_takes_the_job_namespaces_with_it() {
    if skip_unless_root() {
        return;
    }
    // `jobcell run` returns once the init has reported the job's end (every process of the job
    // killed and reaped, scratch removed), without waiting for the init's own exit, as bwrap
    // does for its PID 1. Nothing may then be left in the job's namespaces, and the init may
    // run nothing more: it is gone, or a zombie for whoever adopted it to reap.
    let t = TestDir::new("initexit");
    let ctl = t.subdir("ctl", 0o777);
    let c = ctl.display();
    let job = Job::new(&t.base())
        .opt("--bind")
        .opt(&ctl)
        .spawn_sh(&format!(
            "{{ readlink /proc/self/ns/mnt; readlink /proc/self/ns/pid; }} > {c}/ns.tmp
mv {c}/ns.tmp {c}/ns
until [ -e {c}/done ]; do sleep 0.01; done"
        ));
    wait_for_file(&ctl.join("ns"), Duration::from_secs(10));
    let ns: Vec<String> = std::fs::read_to_string(ctl.join("ns"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ns.len(), 2, "{ns:?}");
    // The launcher's only child is the job's init.
    let inits = host_children_of(job.pid());
    assert_eq!(inits.len(), 1, "children of the launcher: {inits:?}");
    let init = inits[0];
    let inside = host_pids_in_namespaces(&ns);
    assert!(
        inside.contains(&init),
        "the init {init} is not seen in the job's namespaces {ns:?}: {inside:?}"
    );
    std::fs::write(ctl.join("done"), "").unwrap();
    job.wait().expect(0);
    let t0 = Instant::now();
    loop {
        let holders = host_pids_in_namespaces(&ns);
        let state = proc_state(init);
        if holders.is_empty() && state.is_none_or(|s| s == 'Z') {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "5 s after jobcell: processes {holders:?} still in the job's namespaces {ns:?}, init {init} in state {state:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    t.assert_base_empty();
}

fn host_children_of(parent: i32) -> Vec<i32> {
    host_pids()
        .into_iter()
        .filter(|pid| proc_stat(*pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// Live host pids in any of these namespaces (`readlink /proc/PID/ns/...` strings). A zombie
/// runs nothing and holds no mount; only its pid keeps a number in its PID namespace.
fn host_pids_in_namespaces(ns: &[String]) -> Vec<i32> {
    host_pids()
        .into_iter()
        .filter(|pid| proc_state(*pid) != Some('Z'))
        .filter(|pid| {
            ["mnt", "pid"].iter().any(|kind| {
                std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
                    .is_ok_and(|l| ns.iter().any(|n| Path::new(n) == l))
            })
        })
        .collect()
}

/// The state letter of a process (`R`, `S`, `Z`, ...), `None` once it is gone.
fn proc_state(pid: i32) -> Option<char> {
    proc_stat(pid).map(|(state, _)| state)
}

/// State and parent pid from `/proc/PID/stat` (the command name may hold spaces and ')').
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = stat.rsplit_once(')')?.1.split_whitespace();
    Some((f.next()?.chars().next()?, f.next()?.parse().ok()?))
}

// ------------------------------------------------------------------------------ files

#[test]
fn private_dirs_are_invisible_to_the_host_and_gone_after_the_job() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("private");
    let ctl = t.subdir("ctl", 0o777);
    let name = unique("jobcell-itest-private-");
    let script = format!(
        r#"for d in /tmp /var/tmp /dev/shm; do echo inside > $d/{name} || exit 9; done
touch {ctl}/ready
while [ ! -e {ctl}/go ]; do sleep 0.02; done
cat /tmp/{name}"#,
        ctl = ctl.display()
    );
    let job = Job::new(&t.base())
        .opt("--bind")
        .opt(&ctl)
        .spawn_sh(&script);
    wait_for_file(&ctl.join("ready"), Duration::from_secs(10));
    for d in ["/tmp", "/var/tmp", "/dev/shm"] {
        assert!(
            !Path::new(d).join(&name).exists(),
            "the job's file is in the host's {d}"
        );
    }
    // The files really went to the job's scratch dir.
    let scratch: Vec<_> = std::fs::read_dir(t.base()).unwrap().flatten().collect();
    assert_eq!(scratch.len(), 1);
    for sub in ["tmp", "var_tmp", "dev_shm"] {
        let p = scratch[0].path().join(sub).join(&name);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "inside\n", "{p:?}");
    }
    std::fs::write(ctl.join("go"), "").unwrap();
    let out = job.wait();
    out.expect(0);
    assert_eq!(out.stdout, "inside\n");
    t.assert_base_empty();
}

#[test]
fn dev_is_minimal_read_only_and_has_no_host_terminals() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("dev");
    let script = r#"echo dev=$(ls -A /dev | tr '\n' ' ')
echo pts=$(ls -A /dev/pts | tr '\n' ' ')
touch /dev/x 2>&1 | grep -q 'Read-only file system' && echo devro=yes
mknod /tmp/n c 1 3 2>/dev/null; echo mknod=$?
echo hi > /dev/null && echo null=ok
head -c 4 /dev/urandom | wc -c | sed 's/^/urandom=/'"#;
    let out = Job::new(&t.base()).sh(script);
    out.expect(0);
    let mut dev: Vec<&str> = out.value("dev").unwrap().split_whitespace().collect();
    dev.sort_unstable();
    assert_eq!(
        dev,
        vec![
            "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
            "tty", "urandom", "zero"
        ]
    );
    // A fresh devpts instance: none of the host's terminals.
    assert_eq!(out.value("pts").unwrap().trim(), "ptmx");
    assert_eq!(out.value("devro"), Some("yes"));
    assert_ne!(out.value("mknod"), Some("0"));
    assert_eq!(out.value("null"), Some("ok"));
    assert_eq!(out.value("urandom"), Some("4"));
    t.assert_base_empty();
}

#[test]
fn dev_shm_stays_private_with_the_hosts_dev() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("devhost");
    let name = unique("jobcell-itest-devhost-");
    let out = Job::new(&t.base()).opt("--dev").opt("host").sh(&format!(
        "echo x > /dev/shm/{name} && test -e /dev/null && echo ok"
    ));
    out.expect(0);
    assert_eq!(out.stdout.trim(), "ok");
    assert!(!Path::new("/dev/shm").join(&name).exists());
    t.assert_base_empty();
}

#[test]
fn the_init_reaps_orphans() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("reap");
    // Subshells exit at once: their sleeps are orphaned to PID 1, which must reap them.
    let out = Job::new(&t.base())
        .sh("for i in 1 2 3 4 5; do (sleep 0.1 &); done; sleep 0.6; ps -eo stat=,pid=,args=");
    out.expect(0);
    let zombies: Vec<&str> = out
        .lines()
        .into_iter()
        .filter(|l| l.starts_with('Z'))
        .collect();
    assert!(zombies.is_empty(), "unreaped: {zombies:?}");
    t.assert_base_empty();
}

#[test]
fn keep_scratch_keeps_it_private_to_the_job_user() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("keep");
    let out = Job::new(&t.base())
        .opt("--keep-scratch")
        .opt("--report")
        .opt("-")
        .sh("echo kept > /tmp/f; echo kept > f");
    out.expect(0);
    let r: serde_json::Value = serde_json::from_str(&out.stderr).unwrap();
    let kept = Path::new(r["isolation"]["scratch"].as_str().unwrap()).to_path_buf();
    assert_eq!(r["isolation"]["scratch_kept"], true);
    let md = std::fs::metadata(&kept).unwrap();
    assert_eq!(md.mode() & 0o777, 0o700, "{kept:?}");
    // The job's own uid (with per-job uids, the one the report names).
    assert_eq!(
        md.uid() as u64,
        r["isolation"]["user"]["uid"].as_u64().unwrap()
    );
    assert!(DEFAULT_JOB_UIDS.contains(&md.uid()));
    assert_eq!(std::fs::read_to_string(kept.join("f")).unwrap(), "kept\n");
    assert_eq!(
        std::fs::read_to_string(kept.join("tmp/f")).unwrap(),
        "kept\n"
    );
    std::fs::remove_dir_all(&kept).unwrap();
    t.assert_base_empty();
}

#[test]
fn scratch_is_removed_even_when_the_job_leaves_a_hostile_tree() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("hostile");
    // chmod-000 and read-only non-empty trees, a deep tree (more levels than the remover keeps
    // descriptors open for), a FIFO and a socket, in the scratch dir and every private dir.
    let script = r#"set -e
for d in "$JOBCELL_SCRATCH" /tmp /var/tmp /dev/shm; do
  mkdir -p $d/a/b/c $d/ro/x
  echo data > $d/a/b/c/f; echo data > $d/ro/x/f; echo data > $d/a/f
  chmod 000 $d/a/b/c $d/a/b $d/a
  chmod 444 $d/ro/x/f; chmod 555 $d/ro/x $d/ro
  mkfifo $d/fifo
  python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' $d/sock
done
cd /tmp; i=0
while [ $i -lt 300 ]; do mkdir d; cd d; i=$((i+1)); done
echo deep > f; chmod 000 .
echo done"#;
    let out = Job::new(&t.base()).sh(script);
    out.expect(0);
    assert_eq!(out.stdout.trim(), "done");
    t.assert_base_empty();
}

#[test]
fn scratch_removal_never_follows_a_symlink_out_of_scratch() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("symlink");
    let victim = t.subdir("victim", 0o777);
    std::fs::write(victim.join("precious"), "keep me").unwrap();
    std::fs::create_dir(victim.join("sub")).unwrap();
    std::fs::write(victim.join("sub/precious"), "keep me").unwrap();
    let v = victim.display();
    // Links to the victim from every private dir and from scratch, and the scratch's own
    // private subdirectories (not mount points inside the job) replaced by links.
    let script = format!(
        r#"set -e
for d in "$JOBCELL_SCRATCH" /tmp /var/tmp /dev/shm; do
  ln -s {v} $d/link; ln -s {v}/precious $d/flink; ln -s / $d/root; ln -s /etc $d/etc
done
cd "$JOBCELL_SCRATCH"
for s in tmp var_tmp dev_shm; do mv $s $s.moved; ln -s {v} $s; done
ln -s {v} "$JOBCELL_SCRATCH/zz"
echo done"#
    );
    let out = Job::new(&t.base()).sh(&script);
    out.expect(0);
    assert_eq!(out.stdout.trim(), "done");
    assert_eq!(
        std::fs::read_to_string(victim.join("precious")).unwrap(),
        "keep me"
    );
    assert_eq!(
        std::fs::read_to_string(victim.join("sub/precious")).unwrap(),
        "keep me"
    );
    assert!(Path::new("/etc/passwd").exists());
    t.assert_base_empty();
}

#[test]
fn ro_bind_is_read_only_nosuid_nodev_and_bind_is_writable() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("binds");
    let ro_src = t.subdir("ro-src", 0o777);
    std::fs::write(ro_src.join("f"), "host").unwrap();
    std::fs::set_permissions(ro_src.join("f"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let ro_dst = t.subdir("ro-dst", 0o755);
    let rw = t.subdir("rw", 0o777);
    let script = format!(
        r#"cat {ro}/f; echo
echo x 2>&1 > {ro}/f | grep -q 'Read-only file system' && echo overwrite=erofs
touch {ro}/new 2>&1 | grep -q 'Read-only file system' && echo create=erofs
awk '$5 == "{ro}" {{print "opts=" $6}}' /proc/self/mountinfo
awk '$5 == "{rw}" {{print "rwopts=" $6}}' /proc/self/mountinfo
echo from-job > {rw}/written && echo rw=ok"#,
        ro = ro_dst.display(),
        rw = rw.display()
    );
    let out = Job::new(&t.base())
        .opt("--ro-bind")
        .opt(format!("{}:{}", ro_src.display(), ro_dst.display()))
        .opt("--bind")
        .opt(&rw)
        .sh(&script);
    out.expect(0);
    assert!(out.stdout.starts_with("host\n"), "{}", out.stdout);
    assert_eq!(out.value("overwrite"), Some("erofs"), "{out:?}");
    assert_eq!(out.value("create"), Some("erofs"), "{out:?}");
    let opts: Vec<&str> = out
        .value("opts")
        .expect("no mount at DST")
        .split(',')
        .collect();
    for o in ["ro", "nosuid", "nodev"] {
        assert!(opts.contains(&o), "--ro-bind mount lacks {o}: {opts:?}");
    }
    let rwopts: Vec<&str> = out.value("rwopts").unwrap().split(',').collect();
    assert!(rwopts.contains(&"rw"), "{rwopts:?}");
    assert_eq!(out.value("rw"), Some("ok"));
    assert_eq!(std::fs::read_to_string(ro_src.join("f")).unwrap(), "host");
    assert!(!ro_src.join("new").exists());
    let w = rw.join("written");
    assert_eq!(std::fs::read_to_string(&w).unwrap(), "from-job\n");
    // A read-write bind is where a job's files outlive it: owned by the job's uid.
    let owner = std::fs::metadata(&w).unwrap().uid();
    assert!(DEFAULT_JOB_UIDS.contains(&owner), "written as {owner}");
    t.assert_base_empty();
}

/// A read-only bind of a tree with mounts below it (the host's root: /dev/shm, /run, the job's
/// own /tmp...) is read-only all the way down, including world-writable host filesystems, and
/// stays so for a job that makes itself root in a user namespace of its own.
#[test]
fn ro_bind_is_read_only_all_the_way_down() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("rorec");
    let dst = t.subdir("dst", 0o755);
    let name = unique("jobcell-itest-rorec-");
    let py = format!(
        r#"
import ctypes, os
l = ctypes.CDLL(None, use_errno=True)
dst = "{dst}"
def attempt(tag):
    for d in ["dev/shm", "tmp", "var/tmp", "run/lock", "run", "etc", ""]:
        p = os.path.join(dst, d, "{name}")
        try:
            open(p, "w").close(); print("%s_wrote=%s" % (tag, p))
        except OSError as e:
            if e.errno != 30:
                print("%s_not_erofs=%s:%d" % (tag, p, e.errno))
attempt("job")
rw = [l.split()[4] for l in open("/proc/self/mountinfo")
      if l.split()[4].startswith(dst) and "ro" not in l.split()[5].split(",")]
print("rw_mounts=" + ",".join(rw))
if os.environ.get("NESTED"):
    for d in ["dev/shm", "run", ""]:
        l.umount2(os.path.join(dst, d).encode(), 2)
    l.mount(None, os.path.join(dst, "dev/shm").encode(), None, 32 | 4096, None)
    attempt("nested")
"#,
        dst = dst.display()
    );
    let out = Job::new(&t.base())
        .opt("--ro-bind")
        .opt(format!("/:{}", dst.display()))
        .sh(&format!(
            "python3 -c '{py}' && NESTED=1 unshare -Urm python3 -c '{py}'",
            py = py.replace('\'', "\"")
        ));
    for d in [
        "/dev/shm",
        "/tmp",
        "/var/tmp",
        "/run/lock",
        "/run",
        "/etc",
        "/",
    ] {
        let _ = std::fs::remove_file(Path::new(d).join(&name));
    }
    out.expect(0);
    assert!(!out.stdout.contains("_wrote="), "{}", out.stdout);
    assert!(!out.stdout.contains("_not_erofs="), "{}", out.stdout);
    // Both passes ran: the job itself, then as root of its own user namespace.
    assert_eq!(
        out.stdout.lines().filter(|l| *l == "rw_mounts=").count(),
        2,
        "{}",
        out.stdout
    );
    t.assert_base_empty();
}

/// A host path under a private dir (here the host's /tmp) bound into the job: the job's /tmp
/// is its own, so the mount point must be made there (it is scratch, jobcell may create it).
#[test]
fn bind_destination_under_a_private_dir_works() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("bindtmp");
    let host = TestDir::new_in(Path::new("/tmp"), "bindsrc");
    let d = host.subdir("data", 0o777);
    std::fs::write(d.join("f"), "host data").unwrap();
    let dd = d.display();
    let out = Job::new(&t.base())
        .opt("--bind")
        .opt(&d)
        .sh(&format!("cat {dd}/f; echo; echo job > {dd}/w"));
    // Whatever happens, an error must name the user's path, not a /proc/self/fd alias.
    assert!(!out.stderr.contains("/proc/self/fd"), "{}", out.stderr);
    out.expect(0);
    assert_eq!(out.stdout, "host data\n");
    assert_eq!(std::fs::read_to_string(d.join("w")).unwrap(), "job\n");
    t.assert_base_empty();
}

// ------------------------------------------------------------------------------ privileges

#[test]
fn no_capabilities_no_new_privs_and_no_mount_chroot_unshare() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("caps");
    // The commands named in the issue, then the raw syscalls (so a missing tool cannot pass).
    let script = r#"grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Uid|Gid):' /proc/self/status | tr -s '\t' ' '
mount -t tmpfs none /mnt 2>/dev/null; echo mount=$?
chroot / true 2>/dev/null; echo chroot=$?
unshare -m true 2>/dev/null; echo unshare_m=$?
python3 - <<'PY'
import ctypes
l = ctypes.CDLL(None, use_errno=True)
l.syscall.restype = ctypes.c_long
def r(name, ret):
    print("%s=%d" % (name, 0 if ret == 0 else ctypes.get_errno()))
r("sys_mount", l.mount(b"none", b"/mnt", b"tmpfs", 0, None))
r("sys_bind", l.mount(b"/tmp", b"/mnt", None, 4096, None))
r("sys_chroot", l.chroot(b"/"))
r("sys_unshare_mnt", l.unshare(0x00020000))
r("sys_unshare_pid", l.unshare(0x20000000))
r("sys_unshare_net", l.unshare(0x40000000))
r("sys_setuid", l.setuid(0))
r("sys_setgid", l.setgid(0))
r("sys_setgroups", l.setgroups(0, None))
r("sys_sethostname", l.sethostname(b"x", 1))
r("sys_init_module", l.syscall(175, None, 0, b""))
try:
    open("/proc/sys/kernel/pid_max", "w"); print("sysctl=0")
except OSError as e:
    print("sysctl=%d" % e.errno)
PY
"#;
    let out = Job::new(&t.base()).sh(script);
    out.expect(0);
    let s = &out.stdout;
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            s.contains(&format!("{cap}: 0000000000000000\n")),
            "{cap} is not empty:\n{s}"
        );
    }
    assert!(s.contains("NoNewPrivs: 1\n"), "{s}");
    // Real, effective, saved and filesystem ids all the job's own uid (and gid).
    for key in ["Uid:", "Gid:"] {
        let ids: Vec<u32> = s
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in\n{s}"))
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert!(
            ids.len() == 4
                && ids
                    .iter()
                    .all(|&i| i == ids[0] && DEFAULT_JOB_UIDS.contains(&i)),
            "{key} {ids:?}"
        );
    }
    for k in ["mount", "chroot", "unshare_m"] {
        let v = out.value(k).unwrap_or_else(|| panic!("{k} missing:\n{s}"));
        assert!(v != "0" && v != "127", "{k}: exit {v} inside the job:\n{s}");
    }
    let eperm = libc::EPERM.to_string();
    for k in [
        "sys_mount",
        "sys_bind",
        "sys_chroot",
        "sys_unshare_mnt",
        "sys_unshare_pid",
        "sys_unshare_net",
        "sys_setuid",
        "sys_setgid",
        "sys_setgroups",
        "sys_sethostname",
    ] {
        assert_eq!(out.value(k), Some(eperm.as_str()), "{k}: want EPERM\n{s}");
    }
    assert_eq!(
        out.value("sysctl"),
        Some(libc::EACCES.to_string().as_str()),
        "{s}"
    );
    if Path::new("/proc/modules").exists() {
        assert_eq!(out.value("sys_init_module"), Some(eperm.as_str()), "{s}");
    } else {
        // This kernel has no module support at all (ENOSYS): nothing to load anyway.
        assert_ne!(out.value("sys_init_module"), Some("0"), "{s}");
        eprintln!("note: kernel without module support; init_module not meaningful here");
    }
    t.assert_base_empty();
}

/// If the kernel allows unprivileged user namespaces (it does on this test machine), the job
/// can become "root" in a namespace of its own. That must give it nothing over the host: mounts
/// it inherited are locked (cannot be unmounted or bound without their submounts to reveal what
/// is under them: the host's /tmp, other jobs' scratch dirs), read-only binds stay read-only,
/// and host files keep their owners' permissions.
#[test]
fn a_user_namespace_inside_the_job_gives_no_power_over_the_host() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("userns");
    let ro = t.subdir("ro", 0o777);
    let probe = unique("jobcell-itest-hosttmp-");
    let host_tmp_file = Path::new("/tmp").join(&probe);
    std::fs::write(&host_tmp_file, "host").unwrap();
    let _cleanup = RemoveOnDrop(host_tmp_file.clone());
    // A parked scratch dir of "another job" (as nobody, as jobcell makes them).
    std::fs::create_dir_all(t.base().join("job-other/tmp")).unwrap();
    std::fs::write(t.base().join("job-other/tmp/secret"), "other").unwrap();
    Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(t.base().join("job-other"))
        .status()
        .unwrap();

    let userns_ok = Job::new(&t.base()).run(&["unshare", "-U", "true"]);
    match userns_ok.code() {
        0 => {}
        127 => panic!(
            "unshare (util-linux) is not installed: {}",
            userns_ok.stderr
        ),
        _ => {
            // Unprivileged user namespaces are off: the job cannot even try.
            eprintln!(
                "SKIPPED: unshare -U fails inside the job ({}); nothing more to try",
                userns_ok.stderr.trim()
            );
            return;
        }
    }
    let py = format!(
        r#"
import ctypes, os
l = ctypes.CDLL(None, use_errno=True)
base = os.path.dirname(os.environ["JOBCELL_SCRATCH"])
def r(name, ret):
    print("%s=%s" % (name, "ok" if ret == 0 else os.strerror(ctypes.get_errno())))
for p in ["/tmp", base, "/proc", "/dev", "{ro}"]:
    r("umount:" + p, l.umount2(p.encode(), 2))
r("bind_root", l.mount(b"/", b"/mnt", None, 4096, None))
print("mnt_tmp=" + ",".join(os.listdir("/mnt/tmp")) if os.path.isdir("/mnt/tmp") else "mnt_tmp=")
r("bind_base_parent", l.mount(os.path.dirname(base).encode(), b"/mnt", None, 4096, None))
b = os.path.join("/mnt", os.path.basename(base))
print("mnt_base=" + (",".join(os.listdir(b)) if os.path.isdir(b) else ""))
r("remount_rw", l.mount(None, b"{ro}", None, 32 | 4096, None))
try:
    open("{ro}/x", "w"); print("ro_write=ok")
except OSError as e:
    print("ro_write=" + e.strerror)
try:
    open("/etc/passwd", "a"); print("passwd=ok")
except OSError as e:
    print("passwd=" + e.strerror)
print("tmp=" + ",".join(os.listdir("/tmp")))
print("base=" + ",".join(os.listdir(base)))
"#,
        ro = ro.display()
    );
    let out = Job::new(&t.base())
        .opt("--ro-bind")
        .opt(&ro)
        .run(&["unshare", "-Urm", "python3", "-c", &py]);
    out.expect(0);
    let s = &out.stdout;
    for p in ["/tmp", "/proc", "/dev", &ro.display().to_string()] {
        assert_ne!(out.value(&format!("umount:{p}")), Some("ok"), "{s}");
    }
    assert!(!s.contains(&probe), "the host's /tmp was revealed:\n{s}");
    assert!(
        !s.contains("job-other"),
        "another job's scratch was revealed:\n{s}"
    );
    assert_eq!(out.value("ro_write"), Some("Read-only file system"), "{s}");
    assert_eq!(out.value("passwd"), Some("Permission denied"), "{s}");
    assert!(!ro.join("x").exists());
    std::fs::remove_dir_all(t.base().join("job-other")).unwrap();
    t.assert_base_empty();
}

struct RemoveOnDrop(std::path::PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn setuid_root_binary_does_not_raise_privileges() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("suid");
    // On the host's root filesystem (not nosuid), reachable by the job at the same path.
    let dir = t.subdir("bin", 0o755);
    let suid = dir.join("suid-id");
    let _cleanup = RemoveOnDrop(suid.clone());
    std::fs::copy("/usr/bin/id", &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    // Control: on the host it does raise the euid of nobody.
    let host = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&suid)
        .arg("-u")
        .output()
        .unwrap();
    let out = Job::new(&t.base()).run(&[suid.to_str().unwrap(), "-u"]);
    std::fs::remove_file(&suid).unwrap();
    out.expect(0);
    let euid: u32 = out.stdout.trim().parse().unwrap();
    assert!(
        DEFAULT_JOB_UIDS.contains(&euid),
        "setuid-root raised the job's euid to {euid}"
    );
    if String::from_utf8_lossy(&host.stdout).trim() != "0" {
        eprintln!("note: the control (setuid on the host) did not give euid 0 either");
    }
    t.assert_base_empty();
}

// ------------------------------------------------------------------------------ job uids

/// `[run] job_uids` when the config does not set it (0x70000000-0x7000FFFF).
const DEFAULT_JOB_UIDS: std::ops::RangeInclusive<u32> = 0x7000_0000..=0x7000_FFFF;

/// A config file in `t` with `[run] job_uids = range`.
fn job_uids_config(t: &TestDir, range: &str) -> std::path::PathBuf {
    let p = t.path().join("config.toml");
    std::fs::write(&p, format!("[run]\njob_uids = \"{range}\"\n")).unwrap();
    p
}

#[test]
fn concurrent_default_user_jobs_get_distinct_uids_of_the_range() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("jobuids");
    let script = "echo uid=$(id -u) gid=$(id -g) groups=$(id -G) user=$USER; sleep 1";
    let a = Job::new(&t.base()).spawn_sh(script);
    let b = Job::new(&t.base()).spawn_sh(script);
    let (a, b) = (a.wait(), b.wait());
    a.expect(0);
    b.expect(0);
    let uid = |o: &Out| -> u32 {
        let line = o.stdout.trim();
        let v: Vec<&str> = line.split(' ').collect();
        let uid: u32 = v[0].strip_prefix("uid=").unwrap().parse().unwrap();
        // The gid of the same number, no other group; USER stays the account's name.
        assert_eq!(
            &v[1..],
            [
                format!("gid={uid}"),
                format!("groups={uid}"),
                "user=nobody".to_string()
            ],
            "{line}"
        );
        uid
    };
    let (ua, ub) = (uid(&a), uid(&b));
    assert_ne!(ua, ub, "two concurrent jobs share a uid");
    for u in [ua, ub] {
        assert_ne!(u, 65534);
        assert!(
            DEFAULT_JOB_UIDS.contains(&u),
            "uid {u} is outside the range"
        );
    }
    t.assert_base_empty();
}

/// One job takes every inotify instance its uid may have (fs.inotify.max_user_instances, a
/// per-uid limit no namespace splits); a job started meanwhile must still get one.
#[test]
fn a_job_exhausting_a_per_uid_limit_does_not_starve_another_job() {
    if skip_unless_root() {
        return;
    }
    let max: u32 = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if max > 512 {
        // The job's descriptor limit (1024) would stop it first: no per-uid exhaustion.
        eprintln!("SKIPPED: fs.inotify.max_user_instances is {max}; the test needs at most 512");
        return;
    }
    let t = TestDir::new("peruid");
    let signal = t.subdir("signal", 0o777);
    let ready = signal.join("ready");
    let hog = format!(
        r#"
import ctypes, time
l = ctypes.CDLL(None, use_errno=True)
fds = []
while len(fds) < 100000:
    fd = l.inotify_init1(0)
    if fd < 0:
        break
    fds.append(fd)
print("held=%d errno=%d" % (len(fds), ctypes.get_errno()), flush=True)
open("{}", "w").close()
time.sleep(30)
"#,
        ready.display()
    );
    let a = Job::new(&t.base()).spawn_sh(&format!("exec python3 -c '{hog}'"));
    wait_for_file(&ready, Duration::from_secs(20));
    let b = Job::new(&t.base()).sh(r#"exec python3 -c '
import ctypes
l = ctypes.CDLL(None, use_errno=True)
fd = l.inotify_init1(0)
print("inotify=%d errno=%d" % (fd, ctypes.get_errno()))'"#);
    a.signal(libc::SIGTERM);
    let a = a.wait();
    // A uid of its own: all of the limit, and nothing else.
    assert_eq!(
        a.stdout.trim(),
        format!("held={max} errno=24"),
        "the first job did not reach the per-uid limit: {}",
        a.stderr
    );
    b.expect(0);
    assert!(
        !b.stdout.contains("inotify=-1"),
        "a job could not create an inotify instance while another job held its uid's all ({}): {}",
        a.stdout.trim(),
        b.stdout
    );
    t.assert_base_empty();
}

#[test]
fn a_uid_held_by_a_live_job_is_never_given_to_another() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("uidlock");
    // One uid, away from the default range other tests use at the same time.
    let one = 0x7002_0000u32;
    let cfg = job_uids_config(&t, &format!("{one}-{one}"));
    let signal = t.subdir("signal", 0o777);
    let ready = signal.join("ready");
    let a = Job::new(&t.base())
        .opt("--config")
        .opt(&cfg)
        .spawn_sh(&format!(
            "id -u > {0}.tmp; mv {0}.tmp {0}; sleep 30",
            ready.display()
        ));
    wait_for_file(&ready, Duration::from_secs(20));
    let b = Job::new(&t.base())
        .opt("--config")
        .opt(&cfg)
        .run(&["id", "-u"]);
    assert_eq!(b.code(), 125, "{}{}", b.stdout, b.stderr);
    assert_eq!(
        b.stderr.trim(),
        format!(
            "jobcell: config [run] job_uids = \"{one}-{one}\": every uid of the range is held by a running job"
        )
    );
    assert_eq!(
        std::fs::read_to_string(&ready).unwrap().trim(),
        one.to_string()
    );
    a.signal(libc::SIGTERM);
    a.wait();
    // Released with the job: the next job gets it.
    let c = Job::new(&t.base())
        .opt("--config")
        .opt(&cfg)
        .run(&["id", "-u"]);
    c.expect(0);
    assert_eq!(c.stdout.trim(), one.to_string());
    // A launcher killed outright releases it too (the lock dies with its holder).
    std::fs::remove_file(&ready).unwrap();
    let d = Job::new(&t.base())
        .opt("--config")
        .opt(&cfg)
        .spawn_sh(&format!(
            "id -u > {0}.tmp; mv {0}.tmp {0}; sleep 30",
            ready.display()
        ));
    wait_for_file(&ready, Duration::from_secs(20));
    d.signal(libc::SIGKILL);
    drop(d);
    let e = Job::new(&t.base())
        .opt("--config")
        .opt(&cfg)
        .run(&["id", "-u"]);
    e.expect(0);
    assert_eq!(e.stdout.trim(), one.to_string());
    // Files the jobs wrote outside scratch are all that is left of them.
    std::fs::remove_file(&ready).unwrap();
    // The killed launcher's scratch dir goes at the next launch's collection.
    Job::new(&t.base()).run(&["true"]).expect(0);
    t.assert_base_empty();
}

#[test]
fn a_job_uid_range_holding_an_account_is_refused() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("uidcollide");
    // uid 1 is an account on every Debian-like system (daemon); 1-10 holds a few more.
    // SAFETY: getpwuid has no preconditions; its result is only tested for null, before any other
    // passwd call could overwrite it.
    let holder = unsafe { libc::getpwuid(1) };
    if holder.is_null() {
        eprintln!("SKIPPED: no account with uid 1 to collide with");
        return;
    }
    let cfg = job_uids_config(&t, "1-10");
    let out = Job::new(&t.base()).opt("--config").opt(&cfg).run(&["true"]);
    assert_eq!(out.code(), 125, "{}", out.stderr);
    let line = out.stderr.trim();
    assert!(
        line.starts_with("jobcell: config [run] job_uids = \"1-10\": user '")
            && line.contains(") is in the range")
            && !line.contains('\n'),
        "{line}"
    );
    // "none": jobs share nobody, as before.
    std::fs::write(&cfg, "[run]\njob_uids = \"none\"\n").unwrap();
    let out = Job::new(&t.base())
        .opt("--config")
        .opt(&cfg)
        .run(&["id", "-u"]);
    out.expect(0);
    assert_eq!(out.stdout.trim(), "65534");
    t.assert_base_empty();
}

#[test]
fn runs_as_a_real_user_with_only_that_users_groups() {
    if skip_unless_root() {
        return;
    }
    let user = "jobcell-test";
    if !ensure_user(user) {
        eprintln!("SKIPPED: cannot create user {user} with useradd");
        return;
    }
    let id = |a: &str| {
        let o = Command::new("id").arg(a).arg(user).output().unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    };
    let (uid, gid, groups) = (id("-u"), id("-g"), id("-G"));
    let t = TestDir::new("user");
    let script = r#"echo uid=$(id -u); echo gid=$(id -g); echo groups=$(id -G)
echo user=$USER; touch "$HOME/x" && echo home=ok; grep NoNewPrivs /proc/self/status"#;
    // jobcell itself carries extra supplementary groups: none of them may reach the job.
    let mut cmd = Job::new(&t.base())
        .opt("--user")
        .opt(user)
        .command(&["sh", "-c", script]);
    // SAFETY: the closure runs in the forked child before exec and calls only setgroups with a
    // local array, which is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let g: [libc::gid_t; 3] = [0, 4, 27];
            if libc::setgroups(3, g.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = finish(cmd.spawn().unwrap(), Instant::now());
    out.expect(0);
    assert_eq!(out.value("uid"), Some(uid.as_str()));
    assert_eq!(out.value("gid"), Some(gid.as_str()));
    assert_eq!(out.value("groups"), Some(groups.as_str()));
    assert_eq!(out.value("user"), Some(user));
    assert_eq!(out.value("home"), Some("ok"));
    // By uid too.
    let out = Job::new(&t.base())
        .opt("--user")
        .opt(&uid)
        .run(&["id", "-u"]);
    out.expect(0);
    assert_eq!(out.stdout.trim(), uid);
    t.assert_base_empty();
}

/// PID 1 of the job is a fork of jobcell: it holds descriptors of host paths (bind sources,
/// the scratch dir, the host's /dev) and its /proc/1/exe is the host's jobcell binary. The job
/// must not get at any of it, nor stop or kill the init, as root or rootless (where the init
/// runs under the job's own uid).
fn init_is_out_of_reach(job: Job) {
    let py = r#"
import ctypes, os, signal
l = ctypes.CDLL(None, use_errno=True)
got = []
for f in ["environ", "maps", "mem", "auxv", "syscall", "stack"]:
    try:
        open("/proc/1/" + f, "rb").read(1); got.append("read:" + f)
    except OSError:
        pass
fds = []
try:
    fds = os.listdir("/proc/1/fd")
except OSError:
    pass
for n in fds:
    p = "/proc/1/fd/" + n
    try:
        os.readlink(p); got.append("readlink:" + p)
    except OSError:
        pass
    try:
        os.close(os.open(p, os.O_RDONLY)); got.append("open:" + p)
    except OSError:
        pass
for p in ["/proc/1/root/", "/proc/1/cwd/"]:
    try:
        os.listdir(p); got.append("list:" + p)
    except OSError:
        pass
for flags in [os.O_RDONLY, os.O_WRONLY]:
    try:
        os.close(os.open("/proc/1/exe", flags)); got.append("exe:%d" % flags)
    except OSError:
        pass
if l.ptrace(16, 1, None, None) == 0:  # PTRACE_ATTACH
    got.append("ptrace")
for sig in [signal.SIGKILL, signal.SIGSTOP]:
    try:
        os.kill(1, sig)
    except OSError:
        pass
st = open("/proc/1/stat").read()
print("init_state=" + st[st.rindex(")") + 2])
print("got=" + ",".join(got))
"#;
    let out = job.run(&["python3", "-c", py]);
    out.expect(0);
    assert_eq!(out.value("got"), Some(""), "{}", out.stdout);
    let state = out.value("init_state").unwrap();
    assert!(state == "S" || state == "R", "init was stopped: {state}");
}

#[test]
fn the_init_is_out_of_the_jobs_reach() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("init");
    let ro = t.subdir("ro", 0o755);
    init_is_out_of_reach(Job::new(&t.base()).opt("--ro-bind").opt(&ro));
    t.assert_base_empty();
    let rl = t.subdir("rootless-scratch", 0o755);
    std::os::unix::fs::chown(&rl, Some(65534), Some(65534)).unwrap();
    init_is_out_of_reach(
        Job::new(&rl)
            .by_caller(65534, 65534)
            .opt("--ro-bind")
            .opt(&ro),
    );
    assert_dir_empty(&rl);
}

/// `--private DIR` names a directory the job believes is its own. When jobcell cannot make it
/// private (it is missing, or not a directory) it skips it; that must not be silent.
#[test]
fn a_private_dir_that_cannot_be_made_private_is_not_silently_dropped() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("privbad");
    let file = t.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let missing = t.path().join("missing-dir");
    for p in [&file, &missing] {
        let out = Job::new(&t.base()).opt("--private").opt(p).run(&["true"]);
        let named = out.stderr.contains(&p.display().to_string());
        assert!(
            named && (out.code() == 125 || out.code() == 0),
            "--private {}: exit {:?}, stderr {:?}",
            p.display(),
            out.status.code(),
            out.stderr
        );
    }
    t.assert_base_empty();
}

/// Without root, jobcell runs the job rootless (a user namespace mapping the caller to itself):
/// the same process and file isolation, and still no capabilities over anything.
#[test]
fn rootless_job_is_isolated_too() {
    if skip_unless_root() {
        return; // root is needed to become an unprivileged caller
    }
    let t = TestDir::new("rootless");
    let base = t.subdir("scratch", 0o755);
    std::os::unix::fs::chown(&base, Some(65534), Some(65534)).unwrap();
    let name = unique("jobcell-itest-rootless-");
    let script = format!(
        r#"ps -eo pid=
echo ---
echo x > /tmp/{name} && echo tmp=ok
grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status | tr -s '\t' ' '
mount -t tmpfs none /mnt 2>/dev/null; echo mount=$?
echo uid=$(id -u)"#
    );
    let out = Job::new(&base).by_caller(65534, 65534).sh(&script);
    if out.code() == 125 && out.stderr.contains("user namespaces") {
        eprintln!(
            "SKIPPED: user namespaces unavailable: {}",
            out.stderr.trim()
        );
        return;
    }
    out.expect(0);
    let parts: Vec<&str> = out.stdout.split("---\n").collect();
    assert!(parts[0].lines().count() <= 3, "{}", parts[0]);
    assert_eq!(out.value("tmp"), Some("ok"));
    assert!(!Path::new("/tmp").join(&name).exists());
    for k in ["CapEff", "CapPrm", "CapBnd"] {
        assert!(
            out.stdout.contains(&format!("{k}: 0000000000000000")),
            "{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("NoNewPrivs: 1"), "{}", out.stdout);
    assert_ne!(out.value("mount"), Some("0"));
    assert_eq!(out.value("uid"), Some("65534"));
    assert_dir_empty(&base);
}

// ------------------------------------------------------------------------------ exit

#[test]
fn exit_codes_and_signals_propagate() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("exit");
    for (script, want) in [
        ("exit 0", 0),
        ("exit 3", 3),
        ("exit 255", 255),
        ("kill -9 $$", 137),
        ("kill -TERM $$", 143),
        ("kill -SEGV $$", 139),
    ] {
        let out = Job::new(&t.base()).sh(script);
        assert_eq!(out.code(), want, "`{script}`: {out:?}");
    }
    t.assert_base_empty();
}

fn assert_one_line_naming(stderr: &str, name: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one line of error, got:\n{stderr}");
    assert!(
        lines[0].contains(name),
        "the error does not name {name}: {stderr}"
    );
}

#[test]
fn missing_command_is_127_and_non_executable_is_126() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("exec");
    let missing = unique("no-such-command-");
    let out = Job::new(&t.base()).run(&[&missing]);
    out.expect(127);
    assert_one_line_naming(&out.stderr, &missing);

    let out = Job::new(&t.base()).run(&["/nonexistent/dir/cmd"]);
    out.expect(127);
    assert_one_line_naming(&out.stderr, "/nonexistent/dir/cmd");

    let d = t.subdir("bin", 0o755);
    let f = d.join("not-executable");
    std::fs::write(&f, "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Job::new(&t.base()).run(&[f.to_str().unwrap()]);
    out.expect(126);
    assert_one_line_naming(&out.stderr, f.to_str().unwrap());
    assert_eq!(out.stdout, "");

    let out = Job::new(&t.base()).run(&[d.to_str().unwrap()]);
    out.expect(126);
    assert_one_line_naming(&out.stderr, d.to_str().unwrap());
    t.assert_base_empty();
}

#[test]
fn bad_input_is_125_with_one_line_and_nothing_created() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("badinput");
    // The scratch base does not exist yet: a refused job must not even create it.
    let base = t.path().join("never-created");
    let bad_user = unique("no-such-user-");
    let missing_src = t.path().join("missing-src");
    let cases: Vec<(Vec<String>, String)> = vec![
        (vec!["--user".into(), bad_user.clone()], bad_user.clone()),
        (vec!["--user".into(), "root".into()], "root".into()),
        (vec!["--user".into(), "0".into()], "0".into()),
        (
            vec!["--bind".into(), missing_src.display().to_string()],
            missing_src.display().to_string(),
        ),
        (
            vec![
                "--ro-bind".into(),
                format!("/etc:{}", t.path().join("missing-dst").display()),
            ],
            "missing-dst".into(),
        ),
        (
            vec!["--memory-high".into(), "0".into()],
            "--memory-high".into(),
        ),
        (
            vec!["--memory-high".into(), "lots".into()],
            "--memory-high lots".into(),
        ),
        // Negative values reach the range check, not clap's "use -- -1" tip.
        (vec!["--cpus".into(), "-1".into()], "--cpus -1".into()),
        (
            vec!["--cpu-limit".into(), "-2".into()],
            "--cpu-limit -2".into(),
        ),
        (vec!["--memory".into(), "-5".into()], "--memory -5".into()),
        (vec!["--disk".into(), "-3".into()], "--disk -3".into()),
        (vec!["--grace".into(), "-1".into()], "--grace -1".into()),
    ];
    for (opts, name) in cases {
        let out = Job::new(&base).opts(&opts).run(&["true"]);
        assert_eq!(out.code(), 125, "{opts:?}: {out:?}");
        assert_one_line_naming(&out.stderr, &name);
        assert!(!base.exists(), "{opts:?} created the scratch base");
    }

    // Refused only inside the job's init, after scratch (and cgroup) exist: still one line,
    // 125, and everything removed again.
    let out = Job::new(&t.base())
        .opt("--private")
        .opt("/proc")
        .run(&["true"]);
    assert_eq!(out.code(), 125, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    t.assert_base_empty();
}

/// `--memory-high` reaches the job's cgroup: v2 `memory.high`, v1 (no throttle there)
/// `memory.soft_limit_in_bytes`; the hard `--memory` stays as it was.
#[test]
fn memory_high_is_written_to_the_jobs_cgroup() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("memhigh");
    let job = Job::new(&t.base())
        .opts(["--memory", "128M", "--memory-high", "64M"])
        .spawn_sh("sleep 30");
    // Job cgroups are `job-<launcher pid>-...` in a `jobcell` child of this process's cgroup.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let (parent, high_file, max_file) = own
        .lines()
        .find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
            let rel = path.trim_start_matches('/');
            if ctrls.split(',').any(|c| c == "memory") {
                let dir = Path::new("/sys/fs/cgroup/memory").join(rel);
                Some((dir, "memory.soft_limit_in_bytes", "memory.limit_in_bytes"))
            } else if ctrls.is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                Some((
                    Path::new("/sys/fs/cgroup").join(rel),
                    "memory.high",
                    "memory.max",
                ))
            } else {
                None
            }
        })
        .expect("a memory cgroup of this process");
    let prefix = format!("job-{}-", job.pid());
    let t0 = Instant::now();
    let cg = loop {
        let found = std::fs::read_dir(parent.join("jobcell"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&prefix)
            })
            .filter(|p| {
                std::fs::read_to_string(p.join("cgroup.procs")).is_ok_and(|s| !s.trim().is_empty())
            });
        if let Some(p) = found {
            break p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no job cgroup {prefix}* in {}",
            parent.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |f: &str| {
        std::fs::read_to_string(cg.join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(
        read(high_file),
        (64u64 << 20).to_string(),
        "{}",
        cg.display()
    );
    assert_eq!(
        read(max_file),
        (128u64 << 20).to_string(),
        "{}",
        cg.display()
    );
    job.signal(libc::SIGTERM);
    let out = job.wait();
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert!(!cg.exists(), "{} left behind", cg.display());
    t.assert_base_empty();
}

/// Private dirs that cannot work (the root, the kernel's filesystems, /dev which jobcell itself
/// builds) must be refused before anything is created, naming the dir, not fail inside the
/// init with a message about a scratch path, nor be accepted and leave the job an empty /dev.
#[test]
fn private_dirs_that_cannot_work_are_refused_up_front() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("privsys");
    let base = t.path().join("never-created");
    let mut bad = Vec::new();
    for d in ["/", "/proc", "/sys", "/dev"] {
        let out = Job::new(&base).opt("--private").opt(d).run(&["true"]);
        let l: Vec<&str> = out.stderr.lines().collect();
        let ok = out.status.code() == Some(125)
            && l.len() == 1
            && l[0].contains("private")
            && l[0].contains(&format!(" {d}"))
            && !base.exists();
        if !ok {
            bad.push(format!(
                "--private {d}: {:?} {:?}",
                out.status.code(),
                out.stderr
            ));
        }
        let _ = std::fs::remove_dir_all(&base);
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// One line of error says the cause once.
#[test]
fn error_lines_say_the_cause_once() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("errtwice");
    let dst = t.path().join("missing-dst");
    let out = Job::new(&t.base())
        .opt("--bind")
        .opt(format!("/etc:{}", dst.display()))
        .run(&["true"]);
    out.expect(125);
    assert_one_line_naming(&out.stderr, &dst.display().to_string());
    assert_eq!(out.stderr.matches("(os error").count(), 1, "{}", out.stderr);
}

#[test]
fn sigterm_to_jobcell_reaches_the_job() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("sigterm");
    let ctl = t.subdir("ctl", 0o777);
    let c = ctl.display();
    let script = format!(
        r#"for s in USR1 USR2 HUP INT QUIT; do trap "echo $s >> {c}/m" $s; done
trap 'echo TERM >> {c}/m; exit 3' TERM
touch {c}/ready
while :; do sleep 0.02; done"#
    );
    let job = Job::new(&t.base())
        .opt("--bind")
        .opt(&ctl)
        .spawn_sh(&script);
    wait_for_file(&ctl.join("ready"), Duration::from_secs(10));
    // Every forwarded signal reaches the job, one at a time, in order.
    let mut want = String::new();
    for (sig, name) in [
        (libc::SIGUSR1, "USR1"),
        (libc::SIGUSR2, "USR2"),
        (libc::SIGHUP, "HUP"),
        (libc::SIGINT, "INT"),
        (libc::SIGQUIT, "QUIT"),
    ] {
        job.signal(sig);
        want += name;
        want += "\n";
        let t0 = Instant::now();
        while std::fs::read_to_string(ctl.join("m")).unwrap_or_default() != want {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "SIG{name} never arrived"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    job.signal(libc::SIGTERM);
    let out = job.wait();
    out.expect(3);
    assert_eq!(
        std::fs::read_to_string(ctl.join("m")).unwrap(),
        want + "TERM\n"
    );
    t.assert_base_empty();
}

/// Leftovers a jobcell with host pid `pid` could leave: scratch dirs and cgroups are named
/// `job-<launcher pid>-<hex>`.
fn leftovers_of(base: &Path, pid: i32) -> Vec<String> {
    let prefix = format!("job-{pid}-");
    let mut left: Vec<String> = std::fs::read_dir(base)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    let out = Command::new("find")
        .args(["/sys/fs/cgroup", "-maxdepth", "8", "-type", "d", "-name"])
        .arg(format!("{prefix}*"))
        .output()
        .unwrap();
    left.extend(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from),
    );
    left
}

/// SIGTERM (or INT, HUP, QUIT) can reach jobcell at any moment of the launch, not only once the
/// job runs: wherever it lands, jobcell must end with 128+N and leave no scratch dir, cgroup or
/// process behind.
#[test]
fn sigterm_at_any_moment_of_the_launch_leaves_nothing_behind() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("termrace");
    let mut failures = Vec::new();
    let sigs = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];
    for i in 0..60u64 {
        let sig = sigs[i as usize % sigs.len()];
        let s = unique_sleep(20);
        let job = Job::new(&t.base()).spawn_sh(&format!("exec sleep {s}"));
        // Sweep the launch: 0 to ~15 ms after spawn, in 250 us steps.
        std::thread::sleep(Duration::from_micros(i * 250));
        let pid = job.pid();
        job.signal(sig);
        let out = job.wait();
        let left = leftovers_of(&t.base(), pid);
        let procs = host_pids_with_exact_arg(&s);
        // Before anything exists, dying of the signal itself is as good as exiting 128+N.
        let ended_by_sig = out.status.code() == Some(128 + sig)
            || std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(sig);
        if !ended_by_sig || !left.is_empty() || !procs.is_empty() {
            failures.push(format!(
                "signal {sig} after {} us: status {:?}, left {left:?}, processes {procs:?}, \
                 stderr {:?}",
                i * 250,
                out.status,
                out.stderr.trim()
            ));
            // Clean up what this run left, so the next runs are judged on their own.
            for p in &left {
                if p.starts_with("/sys/fs/cgroup") {
                    let _ = std::fs::remove_dir(p);
                }
            }
            for p in procs {
                // SAFETY: kill takes integers only and touches no memory of ours; these pids are
                // processes this test's own launches left behind.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            let _ = std::fs::remove_dir_all(t.base());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    t.assert_base_empty();
}

#[test]
fn grace_period_ends_with_sigkill_of_a_job_ignoring_term() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("grace");
    let ctl = t.subdir("ctl", 0o777);
    let s = format!("0.05{}", &unique_sleep(0)[2..]);
    let script = format!(
        r#"trap '' TERM INT HUP
touch {c}/ready
while :; do sleep {s}; done"#,
        c = ctl.display()
    );
    let job = Job::new(&t.base())
        .opt("--grace")
        .opt("1")
        .opt("--bind")
        .opt(&ctl)
        .spawn_sh(&script);
    wait_for_file(&ctl.join("ready"), Duration::from_secs(10));
    let t0 = Instant::now();
    job.signal(libc::SIGTERM);
    let out = job.wait();
    let took = t0.elapsed();
    // The job is SIGKILLed after the grace period: 128 + 9.
    out.expect(137);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "killed after {took:?}, want about 1 s"
    );
    assert_eq!(host_pids_with_exact_arg(&s), Vec::<i32>::new());
    t.assert_base_empty();
}

// ------------------------------------------------------------------------------ host state

fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

#[test]
fn host_mounts_unchanged_after_100_jobs() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("mounts");
    let _mounts = mount_table();
    let before = mountinfo();
    for _ in 0..100 {
        Job::new(&t.base()).run(&["/bin/true"]).expect(0);
    }
    let after = mountinfo();
    assert_eq!(before, after, "the host's mount table changed");
    assert!(
        !after.contains("jobcell") && !after.contains(&t.base().display().to_string()),
        "a jobcell mount is on the host"
    );
    t.assert_base_empty();
}

// ------------------------------------------------------------------------------ environment

/// `Cpus_allowed_list` of /proc/self/status, e.g. "0-1".
fn own_cpus() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string()
}

/// While it sets a job up, the launcher keeps the job's init off its own CPU (launch/os.rs,
/// CpuSplit). The job itself, and what it starts, must run on exactly the CPUs jobcell was
/// given: all of them, and no others.
#[test]
fn the_job_runs_on_all_of_the_callers_cpus() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("cpus");
    let script = "sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status; \
                  sh -c \"sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status\"";
    let mine = own_cpus();
    let out = Job::new(&t.base()).sh(script);
    out.expect(0);
    assert_eq!(
        out.lines(),
        [mine.as_str(), mine.as_str()],
        "{}",
        out.stderr
    );
    // A caller pinned to one CPU (the last one it has): the job is on that one alone.
    // SAFETY: cpu_set_t is a plain bit array, for which all-zero (the empty set) is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a writable cpu_set_t of exactly `size` bytes, alive across the call.
    assert_eq!(unsafe { libc::sched_getaffinity(0, size, &mut set) }, 0);
    let last = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads one bit of `set`, and `c` < CPU_SETSIZE.
        .rfind(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .unwrap();
    let out = Job::new(&t.base()).on_cpus(&[last]).sh(script);
    out.expect(0);
    let want = last.to_string();
    assert_eq!(
        out.lines(),
        [want.as_str(), want.as_str()],
        "{}",
        out.stderr
    );
}

#[test]
fn environment_is_clean() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("env");
    let out = Job::new(&t.base())
        .host_env("SECRET_TOKEN", "hunter2")
        .host_env("PASSME", "passed")
        .opt("--env")
        .opt("FOO=bar=baz")
        .opt("--env-pass")
        .opt("PASSME")
        .opt("--env-pass")
        .opt("NOT_SET_ANYWHERE_XYZ")
        .run(&["env"]);
    out.expect(0);
    let env: std::collections::BTreeMap<&str, &str> = out
        .stdout
        .lines()
        .map(|l| l.split_once('=').unwrap())
        .collect();
    let keys: Vec<&str> = env.keys().copied().collect();
    assert_eq!(
        keys,
        vec![
            "FOO",
            "HOME",
            "JOBCELL_SCRATCH",
            "LOGNAME",
            "PASSME",
            "PATH",
            "TMPDIR",
            "USER",
            "_CONDOR_SCRATCH_DIR"
        ],
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("hunter2"));
    let scratch = env["JOBCELL_SCRATCH"];
    assert!(Path::new(scratch).starts_with(t.base()), "{scratch}");
    assert_eq!(env["HOME"], scratch);
    assert_eq!(env["_CONDOR_SCRATCH_DIR"], scratch);
    assert_eq!(env["TMPDIR"], "/tmp");
    assert_eq!(env["USER"], "nobody");
    assert_eq!(env["LOGNAME"], "nobody");
    assert_eq!(env["FOO"], "bar=baz");
    assert_eq!(env["PASSME"], "passed");
    // Without a private /tmp, TMPDIR points into scratch instead.
    let out = Job::new(&t.base()).opt("--private").opt("none").run(&[
        "sh",
        "-c",
        "echo $TMPDIR; echo $JOBCELL_SCRATCH",
    ]);
    out.expect(0);
    let l = out.lines();
    assert_eq!(l[0], l[1], "--private none: TMPDIR must be the scratch dir");
    // The working directory is the scratch dir.
    let out = Job::new(&t.base()).run(&["sh", "-c", "pwd -P; echo $JOBCELL_SCRATCH"]);
    out.expect(0);
    let l = out.lines();
    assert_eq!(l[0], l[1]);
    t.assert_base_empty();
}

#[test]
fn no_descriptor_of_jobcell_reaches_the_job() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("fds");
    let leak = t.path().join("leaked-file");
    std::fs::write(&leak, "x").unwrap();
    let file = std::fs::File::open(&leak).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut cmd = Job::new(&t.base()).command(&["ls", "-l", "/proc/self/fd/"]);
    // jobcell's caller hands it an inheritable fd 7: it must stop at jobcell.
    // SAFETY: the closure runs in the forked child before exec and calls only dup2, which is async-
    // signal-safe; `raw` is open in the parent and so in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = finish(cmd.spawn().unwrap(), Instant::now());
    out.expect(0);
    let mut fds = Vec::new();
    for l in out.stdout.lines().filter(|l| l.contains(" -> ")) {
        let (left, target) = l.split_once(" -> ").unwrap();
        let fd: i32 = left.rsplit(' ').next().unwrap().parse().unwrap();
        // ls's own descriptor of the directory it lists.
        if fd > 2 && target.starts_with("/proc/") && target.ends_with("/fd") {
            continue;
        }
        fds.push(fd);
    }
    assert_eq!(fds, vec![0, 1, 2], "{}", out.stdout);
    assert!(!out.stdout.contains("leaked-file"));
    t.assert_base_empty();
}

#[test]
fn net_none_has_only_loopback_and_it_is_up() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("net");
    let py = r#"
import socket
ifs = [l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]]
print("ifs=" + ",".join(ifs))
for name, addr in [("lo", ("127.0.0.1", 9)), ("out", ("192.0.2.1", 80))]:
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(addr); print(name + "=connected")
    except OSError as e:
        print("%s=%s" % (name, e.errno))
"#;
    let out = Job::new(&t.base())
        .opt("--net")
        .opt("none")
        .run(&["python3", "-c", py]);
    out.expect(0);
    assert_eq!(out.value("ifs"), Some("lo"), "{}", out.stdout);
    // Refused (nobody listens) rather than unreachable: the loopback is up.
    assert_eq!(
        out.value("lo"),
        Some(libc::ECONNREFUSED.to_string().as_str())
    );
    assert_eq!(
        out.value("out"),
        Some(libc::ENETUNREACH.to_string().as_str())
    );
    t.assert_base_empty();
}

#[test]
fn the_job_has_no_controlling_terminal_and_cannot_push_input() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("tty");
    let ctl = t.subdir("ctl", 0o777);
    let (mut master, mut slave) = (0, 0);
    // SAFETY: `master` and `slave` are writable c_ints for the two descriptors; null name, termios
    // and winsize are allowed.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty succeeded, so `master` is a fresh descriptor nothing else owns.
    let master = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(master) };
    // SAFETY: openpty succeeded, so `slave` is a fresh descriptor nothing else owns.
    let slave = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(slave) };
    let py = format!(
        r#"
import os, fcntl, termios
st = open("/proc/self/stat").read()
f = st[st.rindex(")") + 2:].split()
out = open("{c}/out", "w")
out.write("tty_nr=%s\nisatty=%d\n" % (f[4], os.isatty(0)))
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"X"); out.write("tiocsti=ok\n")
except OSError as e:
    out.write("tiocsti=%d\n" % e.errno)
"#,
        c = ctl.display()
    );
    // Control: a plain child set up the same way has the pty as controlling terminal.
    let ctty = || {
        // SAFETY: runs in the forked child before exec: setsid and ioctl(TIOCSCTTY) are async-
        // signal-safe and take no pointers.
        unsafe {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    let mut control = Command::new("python3");
    control
        .args(["-c", &py])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: `ctty` calls only async-signal-safe functions (setsid, ioctl), fit for the forked
    // child.
    unsafe { control.pre_exec(ctty) };
    assert!(control.status().unwrap().success());
    let res = std::fs::read_to_string(ctl.join("out")).unwrap();
    assert!(
        !res.contains("tty_nr=0\n") && res.contains("tiocsti=ok"),
        "control without jobcell: {res}"
    );
    std::fs::remove_file(ctl.join("out")).unwrap();

    let mut cmd = Job::new(&t.base())
        .opt("--bind")
        .opt(&ctl)
        .command(&["python3", "-c", &py]);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // jobcell runs with the pty as its controlling terminal, like from an interactive shell.
    // SAFETY: `ctty` calls only async-signal-safe functions (setsid, ioctl), fit for the forked
    // child.
    unsafe { cmd.pre_exec(ctty) };
    let child = cmd.spawn().unwrap();
    drop(cmd);
    drop(slave);
    let out = finish(child, Instant::now());
    drop(master);
    out.expect(0);
    let res = std::fs::read_to_string(ctl.join("out")).unwrap();
    assert!(
        res.contains("isatty=1\n"),
        "the pty did not reach the job: {res}"
    );
    assert!(
        res.contains("tty_nr=0\n"),
        "the job has a controlling tty: {res}"
    );
    assert!(!res.contains("tiocsti=ok"), "TIOCSTI worked: {res}");
    t.assert_base_empty();
}

// ------------------------------------------------------------------------------ report

fn read_report(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn report_has_the_documented_schema_and_counts_cpu() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("report");
    let rep = t.path().join("report.json");
    let out = Job::new(&t.base())
        .opt("--report")
        .opt(&rep)
        .sh("i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exit 7");
    out.expect(7);
    let r = read_report(&rep);
    assert_eq!(r["schema"], "jobcell.report/1", "{r:#}");
    assert_eq!(r["exit_code"], 7);
    assert!(r["signal"].is_null());
    let wall = r["wall_time_s"].as_f64().unwrap();
    assert!(
        wall > 0.0 && wall < out.elapsed.as_secs_f64() + 0.01,
        "{r:#}"
    );
    assert!(r["cpu_user_us"].as_u64().unwrap() > 0, "{r:#}");
    assert!(r["cpu_system_us"].as_u64().is_some(), "{r:#}");
    let iso = &r["isolation"];
    for ns in ["pid", "mount", "ipc", "uts"] {
        assert!(
            iso["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == ns),
            "namespace {ns} missing: {iso:#}"
        );
    }
    assert_eq!(iso["no_new_privs"], true);
    assert!(Path::new(iso["scratch"].as_str().unwrap()).starts_with(t.base()));

    // CPU of the whole job: an orphaned burner killed only when the job ends still counts.
    let out = Job::new(&t.base())
        .opt("--report")
        .opt("-")
        .sh("(sh -c 'while :; do :; done' &); sleep 0.6");
    out.expect(0);
    let r: serde_json::Value = serde_json::from_str(&out.stderr).unwrap();
    let cpu = r["cpu_user_us"].as_u64().unwrap() + r["cpu_system_us"].as_u64().unwrap();
    // Loose (a busy 2-core host): it burned for 0.6 s of wall time.
    assert!(
        cpu >= 50_000,
        "the orphan's CPU is missing: {cpu} us\n{r:#}"
    );

    // A job killed by a signal, reported on stderr.
    let out = Job::new(&t.base())
        .opt("--report")
        .opt("-")
        .sh("kill -KILL $$");
    out.expect(137);
    let r: serde_json::Value = serde_json::from_str(&out.stderr).unwrap();
    assert!(r["exit_code"].is_null(), "{r:#}");
    assert_eq!(r["signal"], 9);
    t.assert_base_empty();
}

/// Without --report only the OOM count is read at the end (the rest of the usage would go
/// unseen): the OOM line must still come, and with a report so must the usage.
#[test]
fn an_oom_kill_is_said_with_or_without_a_report() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("oom");
    let hog = "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived";
    let out = Job::new(&t.base()).opt("--memory").opt("32M").sh(hog);
    out.expect(137);
    assert!(out.stderr.contains("OOM killer"), "{}", out.stderr);
    assert!(!out.stdout.contains("survived"));

    let out = Job::new(&t.base())
        .opt("--memory")
        .opt("32M")
        .opt("--report")
        .opt("-")
        .sh(hog);
    out.expect(137);
    assert!(out.stderr.contains("OOM killer"), "{}", out.stderr);
    let json = &out.stderr[out.stderr.find('{').expect("a report")..];
    let r: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(r["oom_killed"], true, "{r:#}");
    let peak = r["usage"]["memory_peak"].as_u64().unwrap();
    assert!(
        peak > 16 << 20 && peak <= 33 << 20,
        "memory_peak {peak}\n{r:#}"
    );
    t.assert_base_empty();
}

// ------------------------------------------------------------------------------ shared kernel state

/// The kernel keyring of a uid is shared by every process of that uid in the same user
/// namespace (namespaces do not split it), so two jobs running as `nobody` would share `@u`:
/// a key one job (or any other process of that uid) adds, any other job could read.
#[test]
fn jobs_of_the_same_uid_do_not_share_the_user_keyring() {
    if skip_unless_root() {
        return;
    }
    if !cfg!(target_arch = "x86_64") {
        eprintln!("SKIPPED: syscall numbers below are for x86_64");
        return;
    }
    let t = TestDir::new("keyring");
    let planted = unique("jobcell-itest-hostkey-");
    let desc = unique("jobcell-itest-key-");
    // add_key(248) into @u (-4) with a 10 s timeout (keyctl 250, KEYCTL_SET_TIMEOUT 15) so
    // nothing stays behind for long.
    let add = |d: &str| {
        format!(
            r#"
import ctypes
l = ctypes.CDLL(None, use_errno=True); l.syscall.restype = ctypes.c_long
k = l.syscall(248, b"user", b"{d}", b"secret", 6, -4)
print("added=%d" % (k > 0 and 1 or -ctypes.get_errno()))
if k > 0: l.syscall(250, 15, k, 10)
"#
        )
    };
    let read = format!(
        r#"
import ctypes
l = ctypes.CDLL(None, use_errno=True); l.syscall.restype = ctypes.c_long
for name, d in [("planted", b"{planted}"), ("job", b"{desc}")]:
    k = l.syscall(249, b"user", d, None, 0)
    buf = ctypes.create_string_buffer(64)
    n = l.syscall(250, 11, k, buf, 64) if k > 0 else -1
    print(name + "=" + (buf.value.decode() if n > 0 else "nothing"))
"#
    );
    // A key of `nobody` made outside any job (as a host daemon running as nobody would).
    let host = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
        ])
        .arg(add(&planted))
        .output()
        .unwrap();
    let host_added = String::from_utf8_lossy(&host.stdout).contains("added=1");
    if !host_added {
        eprintln!("note: could not plant a host key as nobody: {host:?}");
    }
    // Job A tries to leave a key; job B tries to read both.
    // Both as nobody itself (per-job uids off), as with a shared account.
    let shared_uid = job_uids_config(&t, "none");
    let a =
        Job::new(&t.base())
            .opt("--config")
            .opt(&shared_uid)
            .run(&["python3", "-c", &add(&desc)]);
    a.expect(0);
    let b = Job::new(&t.base())
        .opt("--config")
        .opt(&shared_uid)
        .run(&["python3", "-c", &read]);
    b.expect(0);
    assert_eq!(
        b.value("planted"),
        Some("nothing"),
        "a job read nobody's host key"
    );
    assert_eq!(
        b.value("job"),
        Some("nothing"),
        "job B read job A's key ({a:?})"
    );
    t.assert_base_empty();
}

/// World-writable host directories other than the private ones (on Debian: /run/lock) are
/// shared by every job and keep what a job wrote after it ended.
#[test]
fn no_world_writable_host_dir_is_shared_between_jobs() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("worldw");
    let name = unique("jobcell-itest-ww-");
    // Other tests' fixtures (dirs they hand to `nobody` for rootless runs) live beside this
    // test's dir: those are not host dirs, and a concurrent test may own one right now.
    let fixtures = t.path().parent().unwrap().display().to_string();
    // Every directory the job can write into that is not private: try to leave a file there.
    let script = format!(
        r#"for m in $(awk '{{print $5}}' /proc/self/mountinfo | sort -u); do
  find "$m" -xdev -maxdepth 8 -type d -writable 2>/dev/null
done | sort -u | while read d; do
  case "$d" in /tmp|/tmp/*|/var/tmp|/var/tmp/*|/dev/shm|/dev/shm/*|"$JOBCELL_SCRATCH"*|{fixtures}/*) continue;; esac
  echo x 2>/dev/null > "$d/{name}" && echo "$d"
done
exit 0"#
    );
    let out = Job::new(&t.base()).sh(&script);
    let mut left = Vec::new();
    for d in out.stdout.lines() {
        let p = Path::new(d).join(&name);
        if p.exists() {
            let _ = std::fs::remove_file(&p);
            left.push(d.to_string());
        }
    }
    out.expect(0);
    assert!(
        left.is_empty(),
        "the job left files in shared host dirs: {left:?}"
    );
    t.assert_base_empty();
}

/// Loop devices whose backing file lies under `dir` (a size-limited scratch's image).
fn loop_devices_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let f = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            f.contains(&needle)
                .then(|| e.file_name().to_string_lossy().to_string())
        })
        .collect()
}

#[test]
fn disk_limit_is_enospc_inside_and_nothing_on_the_host() {
    if skip_unless_root() {
        return;
    }
    if !Path::new("/dev/loop-control").exists() {
        eprintln!("SKIPPED: no /dev/loop-control (loop devices are needed for --disk)");
        return;
    }
    let t = TestDir::new("disk");
    let report = t.path().join("report.json");
    // The job may write what it asked for (20 MiB, in /tmp: private dirs live on the same
    // filesystem), and not 16 MiB more. While it runs, the host sees no mount of it.
    let running = Job::new(&t.base())
        .opts(["--disk", "20M", "--report"])
        .opt(&report)
        .spawn_sh(
            "df -k \"$JOBCELL_SCRATCH\" | tail -1 | awk '{print \"fs=\" $1}'
dd if=/dev/zero of=/tmp/a bs=1M count=20 2>/dev/null && echo first=ok
dd if=/dev/zero of=\"$JOBCELL_SCRATCH/b\" bs=1M count=16 2>/dev/null; echo second=$?
touch \"$JOBCELL_SCRATCH/ready\"; sleep 1; echo owner=$(stat -c %u \"$JOBCELL_SCRATCH\"); echo me=$(id -u)",
        );
    let t0 = Instant::now();
    let mut seen_running = false;
    while t0.elapsed() < Duration::from_secs(30) {
        if !loop_devices_under(&t.base()).is_empty() {
            seen_running = true;
            let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            assert!(
                !mi.contains(&t.base().display().to_string()),
                "the --disk mount is visible on the host:\n{mi}"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        seen_running,
        "no loop device backed by the scratch was seen"
    );
    let out = running.wait();
    out.expect(0);
    assert!(
        out.value("fs").unwrap_or("").starts_with("/dev/loop"),
        "{}",
        out.stdout
    );
    assert_eq!(out.value("first"), Some("ok"), "{}", out.stderr);
    assert_ne!(out.value("second"), Some("0"), "wrote past --disk");
    assert_eq!(out.value("owner"), out.value("me"), "{}", out.stdout);
    assert!(
        out.stderr.contains("filled its scratch disk (20.0 MiB)"),
        "{}",
        out.stderr
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["disk"]["limit_bytes"], 20 << 20);
    assert_eq!(r["disk"]["full"], true);
    assert!(r["disk"]["used_bytes"].as_u64().unwrap() >= 20 << 20);
    // The device detaches itself once the job's namespace is gone; the scratch is removed.
    let t0 = Instant::now();
    while !loop_devices_under(&t.base()).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "loop device left: {:?}",
            loop_devices_under(&t.base())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t.assert_base_empty();
}

#[test]
fn disk_limits_that_cannot_be_met_are_refused_up_front() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("disk-bad");
    // More than the scratch base's filesystem has: one line, nothing left.
    let out = Job::new(&t.base()).opts(["--disk", "1000T"]).run(&["true"]);
    out.expect(125);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("--disk 1000.0 TiB") && out.stderr.contains("free space"),
        "{}",
        out.stderr
    );
    t.assert_base_empty();
    assert!(loop_devices_under(&t.base()).is_empty());
    // Not a size.
    let out = Job::new(&t.base()).opts(["--disk", "lots"]).run(&["true"]);
    out.expect(125);
    assert!(out.stderr.contains("--disk lots"), "{}", out.stderr);
    t.assert_base_empty();
    // Rootless: a loop-mounted filesystem needs root; said clearly, before anything is made.
    let base = t.subdir("rootless", 0o755);
    std::os::unix::fs::chown(&base, Some(65534), Some(65534)).unwrap();
    let out = Job::new(&base)
        .by_caller(65534, 65534)
        .opts(["--disk", "10M"])
        .run(&["true"]);
    out.expect(125);
    assert!(out.stderr.contains("--disk needs root"), "{}", out.stderr);
    assert_dir_empty(&base);
}

#[test]
fn kept_scratch_with_a_disk_limit_keeps_its_filesystem_image() {
    if skip_unless_root() {
        return;
    }
    if !Path::new("/dev/loop-control").exists() {
        eprintln!("SKIPPED: no /dev/loop-control (loop devices are needed for --disk)");
        return;
    }
    let t = TestDir::new("disk-keep");
    let out = Job::new(&t.base())
        .opts(["--disk", "8M", "--keep-scratch"])
        .sh("echo kept > \"$JOBCELL_SCRATCH/result\"");
    out.expect(0);
    let kept: Vec<_> = std::fs::read_dir(t.base())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let image = kept[0].join("scratch.ext4");
    // The result is inside the image (read back with debugfs, without mounting anything).
    let cat = std::process::Command::new("debugfs")
        .args(["-R", "cat /result"])
        .arg(&image)
        .output()
        .expect("debugfs (e2fsprogs)");
    assert_eq!(String::from_utf8_lossy(&cat.stdout).trim(), "kept");
    assert!(out.stderr.contains("scratch.ext4"), "{}", out.stderr);
}

// ------------------------------------------------------------------------ default disk bound

/// Held by the tests that mount a scratch pool and by the one that compares the host's mount
/// table before and after, so that one's pool is not taken for the other's leftover.
fn mount_table() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A node config whose scratch base and state dir live in `t`, with `[scratch]` keys `extra`.
fn node_config(t: &TestDir, extra: &str) -> std::path::PathBuf {
    let cfg = t.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[paths]\nstate_dir = \"{}\"\nscratch_base = \"{}\"\n[scratch]\n{extra}\n",
            t.path().join("state").display(),
            t.base().display()
        ),
    )
    .unwrap();
    cfg
}

/// Writes 64 MiB into scratch; prints the writer's exit code, the size written and its error.
const FILL_64M: &str = "err=$(head -c 67108864 /dev/zero 2>&1 >\"$JOBCELL_SCRATCH/fill\"); \
     echo rc=$?; echo size=$(stat -c %s \"$JOBCELL_SCRATCH/fill\"); echo err=$err";

#[test]
fn scratch_without_disk_stops_near_the_node_default_bound() {
    if skip_unless_root() {
        return;
    }
    if let Some(why) = scratch_pool_missing() {
        eprintln!("SKIPPED: the node's default scratch bound needs a scratch pool: {why}");
        return;
    }
    let _mounts = mount_table();
    let t = TestDir::new("bound");
    let pool = PoolMount(t.base());
    let cfg = node_config(&t, "disk = \"16M\"\npool_size = \"512M\"");
    let out = Job::with_config(&cfg).sh(FILL_64M);
    out.expect(0);
    let size: u64 = out.value("size").unwrap_or("").parse().unwrap_or(u64::MAX);
    assert_ne!(
        out.value("rc"),
        Some("0"),
        "wrote 64 MiB past a 16 MiB bound: {}",
        out.stdout
    );
    assert!(
        (12 << 20..=20 << 20).contains(&size),
        "stopped at {size} bytes, not near 16 MiB: {}",
        out.stdout
    );
    let err = out.value("err").unwrap_or("");
    assert!(
        err.contains("quota exceeded") || err.contains("No space left"),
        "{err}"
    );
    // The node is unharmed: the pool took the writes, the next job writes again (the bound
    // is per job, not used up), and the scratch dirs are gone.
    assert!(
        pool.is_mounted(),
        "no scratch pool at {}",
        t.base().display()
    );
    // The pool's lock is root's alone: a user holding its flock would stall every launcher.
    let lock = t.path().join("state/scratch-pool.lock");
    let mode = std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}: {mode:o}", lock.display());
    let report = t.path().join("report.json");
    let out = Job::with_config(&cfg)
        .opt("--report")
        .opt(&report)
        .sh("head -c 8388608 /dev/zero > \"$JOBCELL_SCRATCH/f\"; echo rc=$?");
    out.expect(0);
    assert_eq!(out.value("rc"), Some("0"), "{}", out.stderr);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["isolation"]["scratch_bound_bytes"], 16 << 20, "{r}");
    t.assert_base_empty();
    let image = t.path().join("state/scratch-pool.img");
    drop(pool);
    // The device detaches itself once the unmounted filesystem lets go of it.
    let t0 = Instant::now();
    while !loop_devices_backed_by(&image).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "loop device left for {}",
            image.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_explicit_disk_request_uses_its_own_size_over_the_default_bound() {
    if skip_unless_root() {
        return;
    }
    if let Some(why) = scratch_pool_missing() {
        eprintln!("SKIPPED: the node's default scratch bound needs a scratch pool: {why}");
        return;
    }
    let _mounts = mount_table();
    let t = TestDir::new("bound-disk");
    let pool = PoolMount(t.base());
    let cfg = node_config(&t, "disk = \"16M\"\npool_size = \"512M\"");
    let out = Job::with_config(&cfg).opts(["--disk", "40M"]).sh(FILL_64M);
    out.expect(0);
    let size: u64 = out.value("size").unwrap_or("").parse().unwrap_or(u64::MAX);
    assert_ne!(out.value("rc"), Some("0"), "{}", out.stdout);
    assert!(
        (36 << 20..=48 << 20).contains(&size),
        "--disk 40M stopped at {size} bytes: {}",
        out.stdout
    );
    t.assert_base_empty();
    drop(pool);
}

#[test]
fn disk_none_leaves_scratch_unbounded_and_says_so() {
    if skip_unless_root() {
        return;
    }
    let _mounts = mount_table();
    let t = TestDir::new("bound-none");
    let pool = PoolMount(t.base());
    let cfg = node_config(&t, "disk = \"none\"");
    let out = Job::with_config(&cfg).sh(FILL_64M);
    out.expect(0);
    assert_eq!(out.value("rc"), Some("0"), "{}", out.stdout);
    assert_eq!(out.value("size"), Some("67108864"));
    let report = t.path().join("report.json");
    let out = Job::with_config(&cfg)
        .opt("--report")
        .opt(&report)
        .run(&["true"]);
    out.expect(0);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(
        r["isolation"]["scratch_bound_bytes"].is_null(),
        "the report says the scratch is bounded: {r}"
    );
    assert!(
        !pool.is_mounted(),
        "a scratch pool was made with disk = \"none\""
    );
    t.assert_base_empty();
}

#[test]
fn a_job_cannot_leave_its_bound_through_a_subvolume_of_its_own() {
    if skip_unless_root() {
        return;
    }
    if let Some(why) = scratch_pool_missing() {
        eprintln!("SKIPPED: the node's default scratch bound needs a scratch pool: {why}");
        return;
    }
    let Some(btrfs) = [
        "/usr/bin/btrfs",
        "/bin/btrfs",
        "/usr/sbin/btrfs",
        "/sbin/btrfs",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists()) else {
        eprintln!("SKIPPED: no btrfs tool (btrfs-progs) for the job to make a subvolume with");
        return;
    };
    let _mounts = mount_table();
    let t = TestDir::new("bound-subvol");
    let pool = PoolMount(t.base());
    let cfg = node_config(&t, "disk = \"16M\"\npool_size = \"512M\"");
    // A new subvolume (or a snapshot of the scratch) would have a qgroup of its own, unbounded.
    let out = Job::with_config(&cfg).sh(&format!(
        "cd \"$JOBCELL_SCRATCH\"; {btrfs} subvolume create escape >/dev/null 2>&1; echo made=$?; \
         {btrfs} subvolume snapshot . snap >/dev/null 2>&1; echo snap=$?; \
         d=escape; [ -d escape ] || d=.; head -c 33554432 /dev/zero > $d/fill 2>/dev/null; \
         echo size=$(stat -c %s $d/fill); rm -f $d/fill"
    ));
    out.expect(0);
    assert_ne!(
        out.value("made"),
        Some("0"),
        "the job made a subvolume: {}",
        out.stdout
    );
    assert_ne!(
        out.value("snap"),
        Some("0"),
        "the job made a snapshot: {}",
        out.stdout
    );
    let size: u64 = out.value("size").unwrap_or("").parse().unwrap_or(u64::MAX);
    assert!(
        size <= 20 << 20,
        "wrote {size} bytes past a 16 MiB bound: {}",
        out.stdout
    );
    t.assert_base_empty();
    drop(pool);
}

#[test]
fn a_job_cannot_make_its_bounded_scratch_read_only_to_outlive_cleanup() {
    if skip_unless_root() {
        return;
    }
    if let Some(why) = scratch_pool_missing() {
        eprintln!("SKIPPED: the node's default scratch bound needs a scratch pool: {why}");
        return;
    }
    let Some(btrfs) = [
        "/usr/bin/btrfs",
        "/bin/btrfs",
        "/usr/sbin/btrfs",
        "/sbin/btrfs",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists()) else {
        eprintln!("SKIPPED: no btrfs tool (btrfs-progs) for the job to set subvolume flags with");
        return;
    };
    let _mounts = mount_table();
    let t = TestDir::new("bound-ro");
    let pool = PoolMount(t.base());
    let cfg = node_config(&t, "disk = \"16M\"\npool_size = \"512M\"");
    // The job owns its scratch subvolume's root: a read-only subvolume could be removed by
    // nobody, its files (up to the bound) left on the node for good.
    let out = Job::with_config(&cfg).sh(&format!(
        "head -c 1048576 /dev/zero > \"$JOBCELL_SCRATCH/data\"; \
         {btrfs} property set \"$JOBCELL_SCRATCH\" ro true >/dev/null 2>&1; echo ro=$?"
    ));
    out.expect(0);
    assert_ne!(
        out.value("ro"),
        Some("0"),
        "the job made its scratch read-only"
    );
    t.assert_base_empty();
    drop(pool);
}

#[test]
fn a_scratch_pool_is_not_mounted_over_a_scratch_base_in_use() {
    if skip_unless_root() {
        return;
    }
    if let Some(why) = scratch_pool_missing() {
        eprintln!("SKIPPED: the node's default scratch bound needs a scratch pool: {why}");
        return;
    }
    let _mounts = mount_table();
    let t = TestDir::new("bound-busy");
    let pool = PoolMount(t.base());
    std::fs::create_dir_all(t.base().join("job-1-kept.kept")).unwrap();
    let cfg = node_config(&t, "disk = \"16M\"\npool_size = \"512M\"");
    let out = Job::with_config(&cfg).run(&["true"]);
    out.expect(125);
    let line = format!("scratch base {} is not empty", t.base().display());
    assert!(
        out.stderr.lines().count() == 1 && out.stderr.contains(&line),
        "{}",
        out.stderr
    );
    assert!(
        !pool.is_mounted(),
        "a pool was mounted over a scratch base in use"
    );
    assert!(!t.path().join("state/scratch-pool.img").exists());
}

// ------------------------------------------------------------------------ jobcell's own state

#[test]
fn the_state_images_and_jobs_dirs_are_hidden_while_scratch_works() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("state");
    let state = t.subdir("state", 0o755);
    std::fs::write(state.join("state.db"), "queue-of-every-job\n").unwrap();
    let other = state.join("jobs/7");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("stdout"), "output-of-another-job\n").unwrap();
    let images = t.subdir("images", 0o755);
    std::fs::write(images.join("marker"), "image-tree\n").unwrap();
    // The scratch base inside the state dir, as by default (<state_dir>/scratch).
    let base = state.join("scratch");
    let script = format!(
        r#"test -e {s}/state.db && echo db=visible
ls -A {s}/jobs {i} 2>/dev/null
cat {s}/jobs/7/stdout {i}/marker 2>/dev/null
echo hello > "$JOBCELL_SCRATCH/f" && cat "$JOBCELL_SCRATCH/f" | sed 's/^/scratch=/'
echo end=yes"#,
        s = state.display(),
        i = images.display()
    );
    let out = Job::new(&base)
        .opt("--state-dir")
        .opt(&state)
        .opt("--images-dir")
        .opt(&images)
        .sh(&script);
    out.expect(0);
    for leak in [
        "db=visible",
        "queue-of-every-job",
        "output-of-another-job",
        "image-tree",
    ] {
        assert!(
            !out.stdout.contains(leak),
            "{leak} seen in the job: {}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains("marker\n"), "{}", out.stdout);
    assert_eq!(out.value("scratch"), Some("hello"), "{}", out.stderr);
    assert_eq!(out.value("end"), Some("yes"));
    assert_dir_empty(&base);
}

#[test]
fn a_cgroup2_mount_in_a_user_and_cgroup_namespace_shows_no_host_process() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("cg2");
    // Each line of a cgroup.procs is a process of that cgroup; one outside the job's pid
    // namespace reads as 0. (-r: mount(8) wants uid 0, which the new user namespace maps.)
    let script = r#"mkdir "$JOBCELL_SCRATCH/cg"
unshare -r -U -C -m sh -c 'mount -t cgroup2 none "$JOBCELL_SCRATCH/cg" && echo mounted=yes &&
  find "$JOBCELL_SCRATCH/cg" -name cgroup.procs -exec cat {} + |
  awk "\$1 == 0 { z++ } END { print \"outside=\" z+0; print \"procs=\" NR }"'
echo unshare=$?"#;
    let out = Job::new(&t.base()).sh(script);
    out.expect(0);
    if out.value("mounted") == Some("yes") {
        assert_eq!(out.value("outside"), Some("0"), "{}", out.stdout);
        let procs: usize = out.value("procs").unwrap().parse().unwrap();
        assert!(
            procs < 10,
            "the job counts {procs} processes: {}",
            out.stdout
        );
    } else {
        assert_ne!(out.value("unshare"), Some("0"), "{}", out.stdout);
    }
    t.assert_base_empty();
}

#[test]
fn a_caller_cannot_bind_a_file_of_another_users_home_directly_or_through_a_symlink() {
    if skip_unless_root() {
        return; // root is needed to become an unprivileged caller
    }
    let t = TestDir::new("bindhome");
    let (uid, gid) = (4242, 4242);
    let base = t.subdir("scratch", 0o755);
    std::os::unix::fs::chown(&base, Some(uid), Some(gid)).unwrap();
    let home = t.subdir("home", 0o700);
    let secret = home.join("secret");
    std::fs::write(&secret, "secret-of-root\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let lair = t.subdir("lair", 0o755);
    std::os::unix::fs::chown(&lair, Some(uid), Some(gid)).unwrap();
    let link = lair.join("link");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(uid), Some(gid)).unwrap();
    for src in [&secret, &link] {
        let out = Job::new(&base)
            .by_caller(uid, gid)
            .opt("--ro-bind")
            .opt(format!("{}:/tmp/loot", src.display()))
            .run(&["cat", "/tmp/loot"]);
        assert!(!out.stdout.contains("secret-of-root"), "{}", src.display());
        out.expect(125);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}", out.stderr);
        assert!(
            lines[0].contains(&src.display().to_string()) && lines[0].contains("Permission denied"),
            "{}",
            out.stderr
        );
    }
    assert_dir_empty(&base);
}

// ------------------------------------------------------------------------ the caller's terminal

fn termios_of(fd: std::os::fd::RawFd) -> libc::termios {
    // SAFETY: termios is plain integers and byte arrays, for which all-zero is valid.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a writable termios that outlives the call; the caller's `fd` is open.
    assert_eq!(unsafe { libc::tcgetattr(fd, &mut t) }, 0);
    t
}

#[test]
fn the_callers_terminal_modes_come_back_however_the_job_ends() {
    if skip_unless_root() {
        return;
    }
    use std::os::fd::AsRawFd;
    let t = TestDir::new("termios");
    let ctl = t.subdir("ctl", 0o777);
    let (mut master, mut slave) = (0, 0);
    // SAFETY: `master` and `slave` are writable c_ints for the two descriptors; null name, termios
    // and winsize are allowed.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty succeeded, so `master` is a fresh descriptor nothing else owns.
    let master = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(master) };
    // SAFETY: openpty succeeded, so `slave` is a fresh descriptor nothing else owns.
    let slave = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(slave) };
    let before = termios_of(slave.as_raw_fd());
    let modes = libc::ECHO | libc::ICANON;
    assert_eq!(
        before.c_lflag & modes,
        modes,
        "the pty starts in cooked mode"
    );
    let ready = ctl.join("ready");
    let changed = format!("stty -echo -icanon; touch {}", ready.display());
    let cases: [(&str, String, i32, Option<i32>); 4] = [
        ("normal end", changed.clone(), 0, None),
        (
            "job killed",
            format!("{changed}; kill -9 $$"),
            128 + 9,
            None,
        ),
        (
            "SIGTERM forwarded",
            format!("{changed}; exec sleep 60"),
            128 + libc::SIGTERM,
            Some(libc::SIGTERM),
        ),
        (
            "SIGINT forwarded",
            format!("{changed}; exec sleep 60"),
            128 + libc::SIGINT,
            Some(libc::SIGINT),
        ),
    ];
    for (case, script, code, signal) in cases {
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Job::new(&t.base())
            .opt("--bind")
            .opt(&ctl)
            .command(&["sh", "-c", &script]);
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave.try_clone().unwrap());
        // The pty as jobcell's controlling terminal, as from an interactive shell.
        // SAFETY: the closure runs in the forked child before exec and calls only setsid and
        // ioctl(TIOCSCTTY), which are async-signal-safe and take no pointers.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let started = Instant::now();
        let child = cmd.spawn().unwrap();
        drop(cmd);
        if let Some(sig) = signal {
            wait_for_file(&ready, Duration::from_secs(10));
            // SAFETY: kill takes integers only; the pid is this test's own unreaped child, so it
            // cannot be another process.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
        let out = finish(child, started);
        assert_eq!(out.status.code(), Some(code), "{case}");
        assert!(ready.exists(), "{case}: the job did not run");
        let after = termios_of(slave.as_raw_fd());
        assert_eq!(
            after.c_lflag & modes,
            modes,
            "{case}: the caller's terminal was left without echo/icanon"
        );
    }
    drop(master);
    t.assert_base_empty();
}
