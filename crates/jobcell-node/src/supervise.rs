//! `jobcell supervise <job-dir> <attempt>`: one job's supervisor. Single-threaded, no async:
//! it leaves the daemon's cgroup for jobcell's `supervisors` cgroup, claims the attempt, points
//! its stdout/stderr at the job's output files, runs the launcher, and records the result
//! atomically. It is started by the spawner in its own session, so it outlives the daemon; if
//! it is SIGKILLed, the job's init dies with it (PR_SET_PDEATHSIG) and the daemon records the
//! job as failed.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use jobcell_cgroup::CgroupRoot;
use jobcell_sandbox::identity::Identity;
use jobcell_sandbox::jobuid;
use jobcell_sandbox::scratch::ScratchDir;
use jobcell_sandbox::{launch_task, Launch, SchedulerTask};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use crate::jobdir::{self, Claim, JobResult, SupervisorSpec};
use crate::sys;
use crate::types::now;
use crate::usage;

/// Run the supervisor; the process exit code (0 unless the result could not be written).
pub fn supervise(dir: &Path, attempt: u32) -> i32 {
    supervise_with(dir, attempt, None)
}

/// [`supervise`] with the spec handed over in memory (a supervisor forked by the spawner)
/// instead of read from the job's `spec.json` (an exec'd one): one file fewer per job.
pub fn supervise_with(dir: &Path, attempt: u32, spec: Option<&[u8]>) -> i32 {
    let pid = std::process::id() as i32;
    let start = match sys::starttime(pid) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("jobcell supervise: reading my start time: {e}");
            return 1;
        }
    };
    // Into the supervisors cgroup before claiming: a recovering daemon trusts a claim only
    // from a process there (which only root can put there), so a claim is always provable.
    let prepared = read_spec(dir, spec).and_then(|s| {
        let root = join_supervisors_cgroups(&s, pid)?;
        Ok((s, root))
    });
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
    let fail = |error: Option<String>, hold_reason: Option<String>| JobResult {
        attempt,
        exit_code: None,
        signal: None,
        error,
        exec_error: None,
        report: None,
        finished_at: now(),
        hold_reason,
    };
    // The result must land even if the job's output fills the state dir: its space is taken
    // now (a result with the job's report is a few KiB).
    let reserved = sys::reserve_atomic(&jobdir::result_path(dir, attempt), 64 << 10);
    let res = match prepared
        .map_err(Failure::Fail)
        .and_then(|(s, root)| run(dir, attempt, pid, &s, root))
    {
        Ok(r) => r,
        Err(Failure::Fail(e)) => fail(Some(e), None),
        Err(Failure::Hold(e)) => fail(None, Some(e)),
    };
    let data = serde_json::to_vec_pretty(&res).unwrap_or_default();
    let written = match reserved {
        Ok(r) if data.len() <= 64 << 10 => r.commit(&data),
        _ => sys::write_atomic(&jobdir::result_path(dir, attempt), &data),
    };
    if let Err(e) = written {
        // The daemon would otherwise only see a supervisor gone without a result. (Said
        // first, and without eprintln!, which panics when stderr — by now the job's stderr
        // file, on the same full disk — cannot be written.)
        let marked = jobdir::mark_unwritten(dir, attempt, &e);
        let mut err = std::io::stderr();
        let _ = writeln!(err, "jobcell supervise: writing the result: {e}");
        if let Err(m) = marked {
            let _ = writeln!(
                err,
                "jobcell supervise: saying why the result is missing: {m}"
            );
        }
        return 1;
    }
    0
}

/// Why a job did not run: jobcell's own failure, or something its owner can fix (held).
enum Failure {
    Fail(String),
    Hold(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Fail(s)
    }
}

/// The supervisor's spec: handed over in memory, or read from the job's `spec.json`.
fn read_spec(dir: &Path, spec: Option<&[u8]>) -> Result<SupervisorSpec, String> {
    match spec {
        Some(b) => serde_json::from_slice(b).map_err(|e| format!("supervisor spec: {e}")),
        None => {
            let text = std::fs::read(jobdir::spec_path(dir))
                .map_err(|e| format!("reading {}: {e}", jobdir::spec_path(dir).display()))?;
            serde_json::from_slice(&text).map_err(|e| format!("spec.json: {e}"))
        }
    }
}

/// Detect jobcell's cgroup parent while still in the daemon's cgroup, then move into a
/// `supervisors` sibling of the job cgroups: the daemon's cgroup holds only the daemon, and
/// supervisors' memory is accounted apart from jobs'. None without root (no cgroups).
fn join_supervisors_cgroups(s: &SupervisorSpec, pid: i32) -> Result<Option<CgroupRoot>, String> {
    if !sys::is_root() {
        return Ok(None);
    }
    let r = CgroupRoot::detect(s.cgroup_parent.as_deref()).map_err(|e| format!("cgroup: {e}"))?;
    for p in r.parent_paths() {
        // A v1 cpuset cgroup needs cpus/mems set before it takes a process; supervisors
        // need no pinning, so they stay in the daemon's cpuset cgroup.
        if p.starts_with("/sys/fs/cgroup/cpuset") {
            continue;
        }
        join_supervisors(&p.join("supervisors"), pid)?;
    }
    Ok(Some(r))
}

fn run(
    dir: &Path,
    attempt: u32,
    pid: i32,
    s: &SupervisorSpec,
    root: Option<CgroupRoot>,
) -> Result<JobResult, Failure> {
    // The lease keeps the image from being removed while the job runs.
    let lease = match (&s.spec.image, &s.images) {
        (Some(name), Some(cfg)) => Some(
            cfg.open()
                .and_then(|st| st.lease(name, s.owner))
                .map_err(|e| format!("image '{name}': {e}"))?,
        ),
        (Some(name), None) => {
            return Err(format!("image '{name}': no image store configured").into())
        }
        _ => None,
    };
    let rootless = !sys::is_root();
    let identity = if rootless {
        Identity::current()
    } else {
        Identity::resolve(&s.spec.user).map_err(|e| e.to_string())?
    };
    // A job that would run as nobody runs as a uid of its own, held until this returns (or
    // this process dies). The files opened for it stay nobody's: its account opens them.
    let job_uid = match s.job_uids {
        Some(range) if !rootless && identity.uid == jobuid::NOBODY_UID => {
            Some(jobuid::acquire(Path::new(jobuid::LOCK_DIR), range).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let job_identity = match &job_uid {
        Some(lease) => lease.identity(&identity),
        None => identity.clone(),
    };
    // Everything the owner named is opened with the owner's identity; a failure here is
    // theirs to fix, so the job is held (as HTCondor does), not failed.
    let hold = Failure::Hold;
    // The submitter's initialdir or `--chdir` (without an image a spec's workdir is only
    // ever the latter). In an image the directory is looked up in the image's view, by the
    // launcher.
    let chosen_dir = match &lease {
        None if !s.transfer => s.cwd.as_ref().or(s.spec.workdir.as_ref()),
        _ => None,
    };
    if let Some(dir) = chosen_dir {
        check_dir(dir, &job_identity).map_err(hold)?;
    }
    // An initialdir under one of the job's private dirs (the submitter's /tmp) is covered in
    // the job's view: bound there at its own path, as `--chdir` is, so the job runs in it.
    let covered_initialdir = s.cwd.as_ref().filter(|d| {
        chosen_dir == Some(*d)
            && s.spec.private_dirs.iter().any(|p| d.starts_with(p))
            && !s.spec.mounts.iter().any(|m| &m.dst == *d)
    });
    let bound_spec;
    let spec = match covered_initialdir {
        Some(d) => {
            let mut with_bind = s.spec.clone();
            with_bind.mounts.push(jobcell_spec::MountSpec {
                src: d.clone(),
                dst: d.clone(),
                readonly: false,
            });
            bound_spec = with_bind;
            &bound_spec
        }
        None => &s.spec,
    };
    // Bind sources: with the submitter's rights (root's are its own; the job's user may be
    // another, chosen by root).
    let binds_as = match s.owner {
        0 => None,
        _ if rootless || spec.mounts.is_empty() => None,
        owner => Some(
            Identity::resolve(&jobcell_spec::UserSpec::Uid(owner))
                .map_err(|e| Failure::Hold(format!("bind sources: the submitter: {e}")))?,
        ),
    };
    let input = match &s.stdin {
        Some(p) => Some(open_input(p, &identity).map_err(hold)?),
        None => None,
    };
    let out = open_output(
        s.stdout.as_deref(),
        &jobdir::stdout_path(dir),
        &identity,
        job_identity.uid,
        rootless,
    )
    .map_err(hold)?;
    // output = error (one file for both, as HTCondor allows) shares one open file.
    let err = if s.stderr.is_some() && s.stderr == s.stdout {
        out.try_clone().map_err(|e| e.to_string())?
    } else {
        open_output(
            s.stderr.as_deref(),
            &jobdir::stderr_path(dir),
            &identity,
            job_identity.uid,
            rootless,
        )
        .map_err(hold)?
    };
    let name = jobdir::cgroup_name(pid, s.id);
    // HTCondor's file transfer: the job runs in its scratch dir, with its input files copied
    // there first (as its user); what it makes there comes back to initialdir at exit.
    let staged = if s.transfer {
        let sd = ScratchDir::create_bounded(
            &s.spec.scratch_base,
            &name,
            job_identity.uid,
            job_identity.gid,
            &[],
            false,
            s.spec
                .resources
                .scratch_bound
                .filter(|_| s.spec.resources.disk.is_none()),
        )
        .map_err(|e| e.to_string())?;
        match transfer_in(&s.transfer_input, sd.path(), &job_identity) {
            Ok(before) => Some((sd, before)),
            Err(e) => {
                let _ = sd.remove();
                return Err(Failure::Hold(e));
            }
        }
    } else {
        None
    };
    // Said on the supervisor's own stderr (the daemon's log), before it becomes the job's: a
    // series that cannot be kept costs the job nothing else.
    let recorder = s
        .usage_interval
        .and_then(|i| std::time::Duration::try_from_secs_f64(i).ok())
        .filter(|_| root.is_some())
        .and_then(|tick| match usage::Recorder::start(dir, tick) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("jobcell supervise: job {}: no usage series: {e}", s.id);
                None
            }
        });
    // SAFETY: dup2 of descriptors this function holds open (dropped only below) onto the
    // standard ones, which nothing else in this process holds as Rust objects.
    unsafe {
        if let Some(i) = &input {
            libc::dup2(i.as_raw_fd(), 0);
        }
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(err.as_raw_fd(), 2);
    }
    drop((out, err, input));
    let task = SchedulerTask {
        workdir: match &staged {
            Some((sd, _)) => Some(sd.path().to_path_buf()),
            // The job's own initialdir, else the image's WorkingDir (or scratch).
            None => s.cwd.clone().or_else(|| s.spec.workdir.clone()),
        },
        // `--chdir` and an initialdir are in the job's view (bound into it when it would cover
        // them): the job runs there or not at all, never silently elsewhere.
        workdir_required: chosen_dir.is_some(),
        job_scratch: staged.as_ref().map(|(sd, _)| sd.path().to_path_buf()),
        // The staged dir is this job's alone: request_disk applies to it.
        own_scratch: staged.is_some(),
    };
    let mut outcome = launch_task(
        &Launch {
            spec,
            image_root: lease.as_ref().map(|l| l.root.clone()),
            image_name: lease.as_ref().map(|l| l.name.clone()),
            extra_env: Vec::new(),
            cgroup_parent: s.cgroup_parent.clone(),
            cgroup_name: Some(name),
            cgroup_root: root.as_ref(),
            identity: Some(&job_identity),
            usage: true,
            suspendable: true,
            binds_as: binds_as.as_ref(),
            // The daemon's own state: its queue, the job dirs (every job's output), images.
            hidden: s
                .images
                .iter()
                .flat_map(|i| [i.state_dir.clone(), i.images_dir.clone()])
                .chain(dir.parent().map(Path::to_path_buf))
                .collect(),
            sampler: recorder
                .as_ref()
                .map(|r| r as &dyn jobcell_sandbox::UsageSampler),
        },
        &task,
    );
    // The init's exit (its namespaces' teardown) is waited for here, before the staged dir
    // is touched: this process goes on (see ExitingInit).
    if let Ok(o) = outcome.as_mut() {
        drop(o.init.take());
    }
    // A size-limited scratch is still mounted over the staged dir (in our own mount
    // namespace) so that its files can be transferred out first; unmounted before removal.
    let scratch_mount = outcome.as_mut().ok().and_then(|o| o.scratch_mount.take());
    if let Some((sd, before)) = staged {
        if let (Ok(_), Some(cwd)) = (&outcome, &s.cwd) {
            if let Err(e) = transfer_out(sd.path(), &before, cwd, &job_identity, &identity) {
                eprintln!(
                    "jobcell: transferring output files to {}: {e}",
                    cwd.display()
                );
            }
        }
        drop(scratch_mount);
        if let Err(e) = sd.remove() {
            eprintln!("jobcell: {e}");
        }
    }
    let outcome = outcome.map_err(|e| match e {
        jobcell_sandbox::LaunchError::BindSource { .. } => Failure::Hold(e.to_string()),
        e => Failure::Fail(e.to_string()),
    })?;
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
        hold_reason: None,
    })
}

/// Run `f` with the job user's filesystem identity.
fn as_user<T>(id: &Identity, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    sys::as_user(id.uid, id.gid, &id.groups, f)?
}

/// The job's initial directory must be one its user may enter.
fn check_dir(p: &Path, id: &Identity) -> Result<(), String> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("initialdir {}: contains a NUL byte", p.display()))?;
    as_user(id, || {
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        let r =
            unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if !std::fs::metadata(p)?.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        Ok(())
    })
    .map_err(|e| format!("initialdir {} (as {}): {e}", p.display(), id.name))
}

/// The job's stdin, opened for reading as its user.
fn open_input(p: &Path, id: &Identity) -> Result<std::fs::File, String> {
    as_user(id, || {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(p)
    })
    .map_err(|e| format!("input {} (as {}): {e}", p.display(), id.name))
}

/// What a top-level entry of scratch was when the job started: (size, mtime ns).
type Snapshot = std::collections::HashMap<std::ffi::OsString, (u64, i128)>;

fn stamp(m: &std::fs::Metadata) -> (u64, i128) {
    use std::os::unix::fs::MetadataExt;
    (
        m.len(),
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
    )
}

/// Whether a file is as it was staged. A size-limited scratch is a copy made by mkfs.ext4 -d,
/// which keeps whole seconds of mtime but not nanoseconds: a zero there with the same second
/// is the copy; a file the job wrote has the nanoseconds of its write.
fn same(before: (u64, i128), now: (u64, i128)) -> bool {
    const NS: i128 = 1_000_000_000;
    before == now
        || (before.0 == now.0
            && now.1.rem_euclid(NS) == 0
            && before.1.div_euclid(NS) == now.1.div_euclid(NS))
}

/// Copy the input files and directories into scratch as the job's user (so nothing the user
/// could not read is ever copied), and note what scratch holds then.
fn transfer_in(
    inputs: &[std::path::PathBuf],
    scratch: &Path,
    id: &Identity,
) -> Result<Snapshot, String> {
    as_user(id, || {
        for src in inputs {
            let s = src.to_string_lossy();
            // HTCondor: `dir/` copies the directory's contents, `dir` the directory itself.
            let contents = s.ends_with('/') && s.len() > 1;
            let meta = std::fs::metadata(src)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", src.display())))?;
            if meta.is_dir() && contents {
                for e in std::fs::read_dir(src)? {
                    let e = e?;
                    copy_tree(&e.path(), &scratch.join(e.file_name()), 0)?;
                }
            } else {
                let name = src
                    .file_name()
                    .ok_or_else(|| io::Error::other(format!("{}: no file name", src.display())))?;
                copy_tree(src, &scratch.join(name), 0)?;
            }
        }
        let mut snap = Snapshot::new();
        for e in std::fs::read_dir(scratch)? {
            let e = e?;
            snap.insert(e.file_name(), stamp(&e.metadata()?));
        }
        Ok(snap)
    })
    .map_err(|e| format!("transfer_input_files (as {}): {e}", id.name))
}

/// Copy a file or directory tree; the destination must not exist (two inputs with the same
/// name are an error, as in HTCondor). Symlinks inside directories are skipped.
fn copy_tree(src: &Path, dst: &Path, depth: u32) -> io::Result<()> {
    let with = |e: io::Error, p: &Path| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    if depth > 64 {
        return Err(io::Error::other(format!(
            "{}: nested too deeply",
            src.display()
        )));
    }
    let meta = if depth == 0 {
        std::fs::metadata(src)
    } else {
        std::fs::symlink_metadata(src)
    }
    .map_err(|e| with(e, src))?;
    if meta.is_dir() {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(dst)
            .map_err(|e| with(e, dst))?;
        for e in std::fs::read_dir(src).map_err(|e| with(e, src))? {
            let e = e.map_err(|e| with(e, src))?;
            copy_tree(&e.path(), &dst.join(e.file_name()), depth + 1)?;
        }
        Ok(())
    } else if meta.is_file() {
        let mut from = std::fs::File::open(src).map_err(|e| with(e, src))?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(meta.permissions().mode() & 0o777)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dst)
            .map_err(|e| with(e, dst))?;
        io::copy(&mut from, &mut to).map_err(|e| with(e, src))?;
        Ok(())
    } else {
        // Devices, fifos, sockets, symlinks found inside directories: not job input.
        Ok(())
    }
}

/// Copy regular files the job made or changed at the top of scratch back to initialdir
/// (HTCondor's default output transfer): read as the job's uid, written as its account (the
/// same user unless the job had a uid of its own, which must own nothing after the job).
fn transfer_out(
    scratch: &Path,
    before: &Snapshot,
    cwd: &Path,
    job: &Identity,
    account: &Identity,
) -> io::Result<()> {
    let changed = as_user(job, || {
        let mut changed = Vec::new();
        for e in std::fs::read_dir(scratch)? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_file()
                && !before
                    .get(&e.file_name())
                    .is_some_and(|b| same(*b, stamp(&m)))
            {
                changed.push((e.file_name(), m.permissions().mode() & 0o777));
            }
        }
        Ok(changed)
    })?;
    for (name, mode) in changed {
        let mut from = as_user(job, || {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(scratch.join(&name))
        })?;
        as_user(account, || {
            let mut to = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .custom_flags(libc::O_NOFOLLOW)
                .open(cwd.join(&name))?;
            io::copy(&mut from, &mut to)
        })?;
    }
    Ok(())
}

/// Open a job's output file. The default one, in the job dir, is made by root for root
/// (0600, never through a symlink, write-only for the job's uid by ACL): the job writes it
/// through the descriptor it inherits (or reopens it as /dev/stdout) and its owner reads it
/// through the API. A path the owner named is opened with the job user's filesystem identity,
/// so it can only name a file they may write, wherever it points.
/// `job_uid` is the uid the job runs as (a per-job uid for jobs of nobody).
fn open_output(
    named: Option<&Path>,
    default: &Path,
    id: &Identity,
    job_uid: u32,
    rootless: bool,
) -> Result<std::fs::File, String> {
    let Some(p) = named else {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(default)
            .map_err(|e| format!("{}: {e}", default.display()))?;
        if !rootless {
            // Best effort: without ACLs (filesystem or kernel) only the descriptor writes.
            let _ = sys::acl_grant_write(&f, job_uid);
        }
        return Ok(f);
    };
    if rootless {
        return std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(p)
            .map_err(|e| format!("{}: {e}", p.display()));
    }
    // A symlink or a file they may not write gets the refusal they would get; a fifo never
    // blocks the open.
    let f = as_user(id, || {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(p)
    })
    .map_err(|e| format!("{} (as {}): {e}", p.display(), id.name))?;
    // SAFETY: fcntl on a descriptor this function owns; only the O_NONBLOCK flag changes.
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
    Ok(f)
}

/// Move `pid` into the supervisors cgroup `d`, creating it; a daemon that stops removes it and
/// jobcell's parent above it when empty, so a concurrent removal (ENOENT) is retried, the
/// parent made again first.
fn join_supervisors(d: &Path, pid: i32) -> Result<(), String> {
    let mut tries = 0;
    loop {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 3 => {
                tries += 1;
                if let Some(parent) = d.parent() {
                    let _ = std::fs::create_dir(parent);
                }
                continue;
            }
            Err(e) => return Err(format!("creating {}: {e}", d.display())),
        }
        match std::fs::write(d.join("cgroup.procs"), pid.to_string()) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 3 => tries += 1,
            Err(e) => return Err(format!("joining {}: {e}", d.display())),
        }
    }
}
