//! `jobcell supervise <job-dir> <attempt>`: one job's supervisor. Single-threaded, no async:
//! it claims the attempt, leaves the daemon's cgroup, points its stdout/stderr at the job's
//! output files, runs the launcher, and records the result atomically. It is started by the
//! spawner in its own session, so it outlives the daemon; if it is SIGKILLed, the job's init
//! dies with it (PR_SET_PDEATHSIG) and the daemon records the job as failed.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use jobcell_cgroup::CgroupRoot;
use jobcell_sandbox::identity::Identity;
use jobcell_sandbox::{launch, Launch};

use crate::jobdir::{self, Claim, JobResult, SupervisorSpec};
use crate::sys;
use crate::types::now;

/// Run the supervisor; the process exit code (0 unless the result could not be written).
pub fn supervise(dir: &Path, attempt: u32) -> i32 {
    let pid = std::process::id() as i32;
    let start = match sys::starttime(pid) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("jobcell supervise: reading my start time: {e}");
            return 1;
        }
    };
    match jobdir::claim(
        dir,
        attempt,
        &Claim::Supervisor {
            pid,
            starttime: start,
        },
    ) {
        Ok(true) => {}
        Ok(false) => {
            // A recovering daemon fenced this attempt off: the job was requeued.
            eprintln!(
                "jobcell supervise: attempt {attempt} of {} is already claimed; not running it",
                dir.display()
            );
            return 0;
        }
        Err(e) => {
            eprintln!("jobcell supervise: claiming {}: {e}", dir.display());
            return 1;
        }
    }
    let res = match run(dir, attempt, pid) {
        Ok(r) => r,
        Err(e) => JobResult {
            attempt,
            exit_code: None,
            signal: None,
            error: Some(e),
            exec_error: None,
            report: None,
            finished_at: now(),
        },
    };
    let data = serde_json::to_vec_pretty(&res).unwrap_or_default();
    if let Err(e) = sys::write_atomic(&jobdir::result_path(dir, attempt), &data) {
        eprintln!("jobcell supervise: writing the result: {e}");
        return 1;
    }
    0
}

fn run(dir: &Path, attempt: u32, pid: i32) -> Result<JobResult, String> {
    let text = std::fs::read(jobdir::spec_path(dir))
        .map_err(|e| format!("reading {}: {e}", jobdir::spec_path(dir).display()))?;
    let s: SupervisorSpec = serde_json::from_slice(&text).map_err(|e| format!("spec.json: {e}"))?;
    // The lease keeps the image from being removed while the job runs.
    let lease = match (&s.spec.image, &s.images) {
        (Some(name), Some(cfg)) => Some(
            cfg.open()
                .and_then(|st| st.lease(name, s.owner))
                .map_err(|e| format!("image '{name}': {e}"))?,
        ),
        (Some(name), None) => return Err(format!("image '{name}': no image store configured")),
        _ => None,
    };
    let rootless = !sys::is_root();
    let identity = if rootless {
        Identity::current()
    } else {
        Identity::resolve(&s.spec.user).map_err(|e| e.to_string())?
    };
    // Detect jobcell's cgroup parent while still in the daemon's cgroup, then move into a
    // `supervisors` sibling of the job cgroups: the daemon's cgroup holds only the daemon, and
    // supervisors' memory is accounted apart from jobs'.
    let root = if rootless {
        None
    } else {
        let r =
            CgroupRoot::detect(s.cgroup_parent.as_deref()).map_err(|e| format!("cgroup: {e}"))?;
        for p in r.parent_paths() {
            // A v1 cpuset cgroup needs cpus/mems set before it takes a process; supervisors
            // need no pinning, so they stay in the daemon's cpuset cgroup.
            if p.starts_with("/sys/fs/cgroup/cpuset") {
                continue;
            }
            join_supervisors(&p.join("supervisors"), pid)?;
        }
        Some(r)
    };
    let out = open_output(&s.stdout, dir, &identity, rootless)?;
    let err = open_output(&s.stderr, dir, &identity, rootless)?;
    unsafe {
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(err.as_raw_fd(), 2);
    }
    drop((out, err));
    let outcome = launch(&Launch {
        spec: &s.spec,
        image_root: lease.as_ref().map(|l| l.root.clone()),
        image_name: lease.as_ref().map(|l| l.name.clone()),
        extra_env: Vec::new(),
        cgroup_parent: s.cgroup_parent.clone(),
        cgroup_name: Some(jobdir::cgroup_name(pid, s.id)),
        cgroup_root: root.as_ref(),
    })
    .map_err(|e| e.to_string())?;
    if let Some(e) = &outcome.exec_error {
        eprintln!("jobcell: {e}");
    }
    Ok(JobResult {
        attempt,
        exit_code: outcome.report.exit_code,
        signal: outcome.report.signal,
        error: None,
        exec_error: outcome.exec_error.clone(),
        report: serde_json::to_value(&outcome.report).ok(),
        finished_at: now(),
    })
}

/// Open an output file owned by the job's user. Files in the job dir are made by us and given
/// to the user; a path the user chose is opened with the user's filesystem identity, so it can
/// only name a file the user may write.
fn open_output(
    p: &Path,
    dir: &Path,
    id: &Identity,
    rootless: bool,
) -> Result<std::fs::File, String> {
    let in_dir = p.parent() == Some(dir);
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if in_dir { 0o600 } else { 0o644 })
            .custom_flags(if in_dir { libc::O_NOFOLLOW } else { 0 })
            .open(p)
    };
    let f = if in_dir || rootless {
        let f = open().map_err(|e| format!("{}: {e}", p.display()))?;
        if !rootless && unsafe { libc::fchown(f.as_raw_fd(), id.uid, id.gid) } < 0 {
            return Err(format!(
                "chown {}: {}",
                p.display(),
                io::Error::last_os_error()
            ));
        }
        f
    } else {
        unsafe {
            libc::setfsgid(id.gid);
            libc::setfsuid(id.uid);
        }
        let r = open();
        unsafe {
            libc::setfsuid(0);
            libc::setfsgid(0);
        }
        r.map_err(|e| format!("{} (as {}): {e}", p.display(), id.name))?
    };
    Ok(f)
}

/// Move `pid` into the supervisors cgroup `d`, creating it; a daemon that stops removes it when
/// empty, so a concurrent removal (ENOENT) is retried.
fn join_supervisors(d: &Path, pid: i32) -> Result<(), String> {
    let mut tries = 0;
    loop {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("creating {}: {e}", d.display())),
        }
        match std::fs::write(d.join("cgroup.procs"), pid.to_string()) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 3 => tries += 1,
            Err(e) => return Err(format!("joining {}: {e}", d.display())),
        }
    }
}
