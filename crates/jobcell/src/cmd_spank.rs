//! The task side of the SPANK plugin (`crates/jobcell-spank`).
//!
//! In `slurm_spank_task_init` the plugin replaces the task's `argv[0]` with this binary's path
//! and puts the original `argv[0]` and the job's settings in `JOBCELL_SPANK_*` variables of the
//! task's environment (SPANK cannot grow argv). slurmstepd then execs us *in place of the task*:
//! same pid, already in the step's cgroup, so Slurm's process tracking, signals, accounting and
//! exit status see the launcher, and every process of the job is its descendant.
//!
//! We run as the job's user (slurmstepd dropped privileges before exec), so this is rootless
//! jobcell: a user namespace mapping the user to itself, new pid/mount/ipc/uts namespaces, and
//! private dirs bound from the per-job dir the plugin made as root (removed in its job epilog).
//! Unlike `jobcell run`, the task keeps its environment and working directory.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use jobcell_sandbox::{launch_task, JobExit, Launch, SchedulerTask};
use jobcell_spec::{parse_bind, JobSpec, UserSpec};

use crate::config;

/// The variable whose presence selects this mode; the others carry the plugin's settings.
pub const ARGV0_VAR: &str = "JOBCELL_SPANK_ARGV0";
const PREFIX: &str = "JOBCELL_SPANK_";

/// Entry from `main` when `JOBCELL_SPANK_ARGV0` is set. Never returns normally on a signal
/// death: the job's signal is re-raised so slurmstepd sees the task killed by it.
pub fn main(argv0: OsString) -> i32 {
    match run(argv0) {
        Ok(JobExit::Code(c)) => c,
        Ok(JobExit::Signal(s)) => reraise(s),
        Err(e) => {
            eprintln!("jobcell (slurm task): {e:#}");
            crate::exit::EXIT_JOBCELL_ERROR
        }
    }
}

fn utf8(what: &str, s: OsString) -> anyhow::Result<String> {
    s.into_string()
        .map_err(|s| anyhow::anyhow!("{what} {s:?} is not valid UTF-8"))
}

fn list(v: Option<&String>) -> Vec<String> {
    v.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

fn run(argv0: OsString) -> anyhow::Result<JobExit> {
    // Split the plugin's settings from the task's own environment (which the job keeps).
    let mut settings = std::collections::BTreeMap::new();
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os() {
        // The job's environment is kept as text; a variable that is not UTF-8 is dropped (with
        // a word) rather than failing the whole task.
        let (k, v) = match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => (k, v),
            (k, _) => {
                eprintln!(
                    "jobcell: warning: environment variable {:?} is not UTF-8; not passed to the job",
                    k.unwrap_or_else(|k| k.to_string_lossy().into_owned())
                );
                continue;
            }
        };
        match k.strip_prefix(PREFIX) {
            // The plugin sets every key; an empty value means "not set".
            Some(_) if v.is_empty() => {}
            Some(name) => {
                settings.insert(name.to_string(), v);
            }
            None => env.push((k, v)),
        }
    }
    let mut argv = vec![utf8("command", argv0)?];
    for a in std::env::args_os().skip(1) {
        argv.push(utf8("argument", a)?);
    }
    let scratch = PathBuf::from(
        settings
            .get("SCRATCH")
            .context("JOBCELL_SPANK_SCRATCH is not set (is jobcell_spank.so too old?)")?,
    );
    let cfg = config::load(settings.get("CONFIG").map(Path::new))?;
    let image = settings.get("IMAGE").filter(|s| !s.is_empty()).cloned();

    let mut spec = JobSpec::new(argv);
    // SAFETY: getuid cannot fail and touches no memory.
    spec.user = UserSpec::parse(&unsafe { libc::getuid() }.to_string())?;
    spec.scratch_base = scratch.parent().unwrap_or(Path::new("/")).to_path_buf();
    spec.private_dirs = list(settings.get("PRIVATE"))
        .into_iter()
        .map(PathBuf::from)
        .collect();
    spec.image = image.clone();
    let (state_dir, images_dir) = config::store_dirs(
        &cfg,
        settings.get("STATE_DIR").map(Path::new),
        settings.get("IMAGES_DIR").map(Path::new),
    );
    let lease = match &image {
        Some(name) => {
            let store =
                jobcell_images::ImageStore::open(&state_dir, &images_dir, cfg.images.clone())
                    .with_context(|| format!("image store {}", state_dir.display()))?;
            Some(
                store
                    // SAFETY: getuid cannot fail and touches no memory.
                    .lease(name, unsafe { libc::getuid() })
                    .with_context(|| format!("--jobcell-image={name}"))?,
            )
        }
        None => None,
    };
    let batch = settings.get("BATCH").map(String::as_str) == Some("1");
    if batch
        && lease.is_none()
        && spec
            .private_dirs
            .iter()
            .any(|d| Path::new(&spec.argv[0]).starts_with(d))
    {
        // A spool dir under a private dir (SlurmdSpoolDir=/tmp/...) would hide the script.
        let cmd = spec.argv[0].clone();
        spec.mounts.push(parse_bind(&cmd, true)?);
    }
    if let Some(l) = &lease {
        // Site binds (shared filesystems such as /home) exist only in image views; the host
        // view has them already.
        for b in list(settings.get("BINDS")) {
            if Path::new(b.split(':').next().unwrap_or("")).exists() {
                spec.mounts.push(parse_bind(&b, false)?);
            }
        }
        let cmd = spec.argv[0].clone();
        if batch {
            // The batch script lives in slurmd's spool on the host: show it to the image.
            spec.mounts.push(parse_bind(&cmd, true)?);
        } else if let Some(rel) = cmd.strip_prefix('/') {
            // srun resolved the command against the submit host's PATH; if the image has no
            // such file, search the image's PATH for the same name instead.
            if l.root.join(rel).symlink_metadata().is_err() {
                if let Some(name) = Path::new(&cmd).file_name() {
                    spec.argv[0] = name.to_string_lossy().into_owned();
                }
            }
        }
    }
    spec.validate()?;

    let workdir = std::env::current_dir().ok();
    let outcome = launch_task(
        &Launch {
            spec: &spec,
            image_root: lease.as_ref().map(|l| l.root.clone()),
            image_name: lease.as_ref().map(|l| l.name.clone()),
            extra_env: env,
            cgroup_parent: None,
            cgroup_name: None,
            cgroup_root: None,
            identity: None,
            // Slurm accounts the task itself; nothing here reports usage.
            usage: false,
            suspendable: false,
            // The task runs as its user already (rootless): the binds are opened as them.
            binds_as: None,
            hidden: vec![state_dir, images_dir],
            sampler: None,
        },
        &SchedulerTask {
            workdir,
            // The task's own cwd, which an image may lack: scratch then, as before.
            workdir_required: false,
            job_scratch: Some(scratch),
            // Shared by every task and step of the Slurm job on this node.
            own_scratch: false,
        },
    )?;
    if let Some(e) = &outcome.exec_error {
        eprintln!("jobcell: {e}");
    }
    Ok(outcome.exit)
}

/// Die of the job's signal, so Slurm reports the task as killed by it (no core dump of ours).
fn reraise(sig: i32) -> i32 {
    // SAFETY: plain syscalls on values on this stack (a zeroed sigset_t is valid and is
    // initialised by sigemptyset before use); nothing here touches shared memory.
    unsafe {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    128 + sig
}
