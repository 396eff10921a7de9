//! `jobcell run`: one isolated job in the foreground.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use jobcell_sandbox::{jobuid, Launch, LaunchError};
use jobcell_spec::{DevMode, JobSpec, UserSpec};

use crate::config;
use crate::job_opts::JobOpts;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run as this user (name or uid); root only. Default: nobody.
    #[arg(long, short = 'u', value_name = "NAME|UID")]
    pub user: Option<String>,
    /// Directory under which the job's scratch dir is made.
    #[arg(long, value_name = "DIR")]
    pub scratch_base: Option<PathBuf>,
    /// Keep the scratch dir after the job (for debugging); its path is in the report.
    #[arg(long)]
    pub keep_scratch: bool,
    #[command(flatten)]
    pub job: JobOpts,
    /// Pass a variable of jobcell's own environment to the job.
    #[arg(long, value_name = "KEY")]
    pub env_pass: Vec<String>,
    /// Write the JSON report to FILE ('-' for stderr).
    #[arg(long, value_name = "FILE")]
    pub report: Option<String>,
    /// Parent cgroup for job cgroups (default: a `jobcell` child of jobcell's own cgroup).
    #[arg(long, value_name = "PATH")]
    pub cgroup_parent: Option<PathBuf>,
    /// State dir holding the image index (default /var/lib/jobcell); hidden in jobs.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Directory of image trees (default <state-dir>/images).
    #[arg(long, value_name = "DIR")]
    pub images_dir: Option<PathBuf>,
    /// Node config file (default /etc/jobcell/config.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The command and its arguments (optional with an --image that names Entrypoint/Cmd).
    /// Everything from the first word that is not an option on is the command; `--` before
    /// it is needed only when the command itself starts with `-`.
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `image_config`: the run settings of the job's image, applied before the spec is checked.
pub fn build_spec(
    a: &RunArgs,
    cfg: &jobcell_spec::Config,
    image_config: Option<&jobcell_images::ImageConfig>,
) -> anyhow::Result<JobSpec> {
    let mut spec = JobSpec::new(a.command.clone());
    let user = a
        .user
        .clone()
        .or_else(|| cfg.run.user.clone())
        .unwrap_or_else(|| "nobody".into());
    spec.user = UserSpec::parse(&user)?;
    spec.scratch_base = match &a.scratch_base {
        Some(p) => {
            // The launcher makes the base's last directory; a mistyped path must not become a
            // tree of root's dirs.
            if let Some(parent) = p.parent().filter(|q| !q.as_os_str().is_empty()) {
                anyhow::ensure!(
                    parent.is_dir(),
                    "--scratch-base {}: {} does not exist (jobcell makes only the last directory)",
                    p.display(),
                    parent.display()
                );
            }
            p.clone()
        }
        None => config::default_scratch_base(cfg)?,
    };
    spec.keep_scratch = a.keep_scratch;
    a.job
        .apply(&mut spec, cfg.run.grace_secs.map(|g| g as f64))?;
    if let Some(list) = a.job.private_dirs() {
        // Asked for by name: it must be a directory the job can be given (an image view
        // makes its own; /dev/shm lives in the job's own /dev).
        if a.job.image.is_none() {
            for p in &list {
                let own_dev = p.starts_with("/dev") && a.job.dev == DevMode::Minimal;
                if !own_dev && !p.is_dir() {
                    anyhow::bail!("--private {}: not a directory on this host", p.display());
                }
            }
        }
    } else if let Some(list) = &cfg.run.mount_under_scratch {
        spec.private_dirs = list.clone();
    }
    if let (Some(c), Some(name)) = (image_config, &a.job.image) {
        c.apply_to(name, &mut spec, !a.command.is_empty())?;
    }
    spec.validate()?;
    Ok(spec)
}

/// The node's bound on scratch for a root job without `--disk`: on the node's scratch base the
/// scratch pool is made or mounted on first use (afterwards a `statfs` per launch); a
/// `--scratch-base` of the caller's is bounded only if it is on btrfs. Whether the job got the
/// bound is in its report (`isolation.scratch_bound_bytes`).
fn bound_scratch(
    a: &RunArgs,
    cfg: &jobcell_spec::Config,
    spec: &mut JobSpec,
) -> anyhow::Result<()> {
    if !config::is_root() || spec.resources.disk.is_some() {
        return Ok(());
    }
    let Some(bound) = cfg.scratch.bound()? else {
        return Ok(());
    };
    if a.scratch_base.is_some() {
        if !jobcell_sandbox::quota::on_btrfs(&spec.scratch_base) {
            return Ok(());
        }
    } else {
        let (state_dir, _) = config::store_dirs(cfg, a.state_dir.as_deref(), None);
        match jobcell_sandbox::quota::ensure_pool(
            &state_dir,
            &spec.scratch_base,
            cfg.scratch.pool_size()?,
        ) {
            Ok(_) => {}
            // A machine without btrfs cannot bound scratch this way: the job still runs, and
            // every run says so (selftest's scratch row fails there too).
            Err(e) if e.btrfs_unavailable() => {
                eprintln!("jobcell: warning: scratch is not size-bounded on this node: {e}");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    spec.resources.scratch_bound = Some(bound);
    Ok(())
}

pub fn run(a: RunArgs) -> anyhow::Result<i32> {
    // Before anything is made (the scratch pool, an image lease).
    if let Some(p) = &a.cgroup_parent {
        jobcell_cgroup::check_parent_path(p)
            .map_err(|e| anyhow::anyhow!("--cgroup-parent {}: {e}", p.display()))?;
    }
    let cfg = config::load(a.config.as_deref())?;
    // The lease keeps the image from being removed while the job runs; the store stays open
    // (closing SQLite costs ~0.35 ms, not worth adding to the launch).
    let mut store = None;
    let (state_dir, images_dir) =
        config::store_dirs(&cfg, a.state_dir.as_deref(), a.images_dir.as_deref());
    let lease = match &a.job.image {
        Some(name) => {
            // Non-root callers get a read-only view of root's index.
            let s = store.insert(jobcell_images::ImageStore::open(
                &state_dir,
                &images_dir,
                cfg.images.clone(),
            )?);
            Some(
                // SAFETY: getuid cannot fail and touches no memory.
                s.lease(name, unsafe { libc::getuid() })
                    .with_context(|| format!("--image {name}"))?,
            )
        }
        None => None,
    };
    let mut spec = build_spec(&a, &cfg, lease.as_ref().and_then(|l| l.config.as_ref()))?;
    if !config::is_root() && a.user.is_some() {
        anyhow::bail!("--user needs root: rootless jobs run as their caller");
    }
    bound_scratch(&a, &cfg, &mut spec)?;
    // A job that would run as nobody gets a uid of its own, held until this process exits.
    let job_uid = match cfg.run.job_uid_range()? {
        range @ Some(_) if config::is_root() => jobuid::for_user(&spec.user, range)?,
        _ => None,
    };
    let extra_env = a
        .env_pass
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
        .collect();
    let cgroup_parent = a.cgroup_parent.clone().or(cfg.paths.cgroup_parent.clone());
    // Rootless: a cgroup of the job's own only where one is delegated to the caller (its own
    // cgroup or --cgroup-parent; the config's parent is the admin's, for root jobs). Otherwise
    // the job stays in the scheduler's cgroup and the launcher says once that limits are the
    // scheduler's. A --cgroup-parent the user cannot write is an error, not a silent fallback.
    let delegated = if config::is_root() {
        None
    } else {
        match jobcell_cgroup::CgroupRoot::detect_delegated(a.cgroup_parent.as_deref()) {
            Ok(root) => Some(root),
            Err(e) => match &a.cgroup_parent {
                Some(p) => anyhow::bail!("--cgroup-parent {}: {e}", p.display()),
                None => None,
            },
        }
    };
    // Said before the job runs, not after: the job is not held to them.
    let unenforced = match (&delegated, &a.cgroup_parent) {
        (None, None) if !config::is_root() => {
            jobcell_sandbox::unenforced_limits_warning(&spec.resources)
        }
        _ => None,
    };
    if let Some(w) = &unenforced {
        eprintln!("jobcell: {w}");
    }
    let _terminal = TerminalModes::save();
    // The job starts in --chdir, else its image's WorkingDir (or scratch): the launcher's task
    // workdir.
    let task = jobcell_sandbox::SchedulerTask {
        workdir: spec.workdir.clone(),
        workdir_required: a.job.chdir.is_some(),
        ..Default::default()
    };
    let launch = |l: &Launch| jobcell_sandbox::launch_task(l, &task);
    let outcome = launch(&Launch {
        cgroup_parent: if config::is_root() {
            cgroup_parent
        } else {
            None
        },
        spec: &spec,
        image_root: lease.as_ref().map(|l| l.root.clone()),
        image_name: lease.as_ref().map(|l| l.name.clone()),
        extra_env,
        cgroup_name: None,
        cgroup_root: delegated.as_ref(),
        identity: job_uid.as_ref().map(|(id, _)| id),
        usage: a.report.is_some(),
        // Nothing suspends a `jobcell run` job (only the daemon's `jobcell suspend` does).
        suspendable: false,
        // Root is trusted with what it names; rootless, the caller's rights apply anyway.
        binds_as: None,
        hidden: [state_dir, images_dir]
            .into_iter()
            .filter_map(|d| std::path::absolute(d).ok())
            .collect(),
        sampler: None,
    });
    let mut outcome = match outcome {
        Ok(o) => o,
        // A signal before the job started: nothing was left behind; die like the job would.
        Err(LaunchError::Interrupted(sig)) => return Ok(128 + sig),
        Err(e) => return Err(e.into()),
    };
    // The job is over and its scratch gone; jobcell exits next, so the init's own exit (its
    // namespaces' teardown) is left to the kernel and whoever adopts it, as bwrap leaves its
    // PID 1's.
    if let Some(init) = outcome.init.take() {
        init.leave();
    }
    for w in outcome
        .report
        .warnings
        .iter()
        .filter(|w| Some(*w) != unenforced.as_ref())
    {
        eprintln!("jobcell: warning: {w}");
    }
    if let Some(e) = &outcome.exec_error {
        eprintln!("jobcell: {e}");
    }
    if let Some(dest) = &a.report {
        let json = serde_json::to_string_pretty(&outcome.report)? + "\n";
        if dest == "-" {
            std::io::stderr().write_all(json.as_bytes())?;
        } else {
            std::fs::write(dest, json).with_context(|| format!("--report {dest}"))?;
        }
    }
    // jobcell exits right after this: the kernel closes the index and drops the lease's flock;
    // SQLite's own close (a WAL checkpoint, ~0.35 ms) would only delay the exit.
    std::mem::forget(store);
    Ok(outcome.exit.shell_code())
}

/// The modes of the terminals on jobcell's stdin, stdout and stderr, put back when `run` ends
/// however the job ended: the job may change them (`stty -echo`, a full-screen program that
/// was killed) and would leave the caller's shell without echo. Nothing to do off a terminal.
struct TerminalModes(Vec<(libc::c_int, libc::termios)>);

impl TerminalModes {
    fn save() -> Self {
        let mut saved = Vec::new();
        for fd in 0..3 {
            // SAFETY: tcgetattr writes one termios into `t`, which lives on this stack.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: `t` is a writable termios on this stack; a descriptor that is not a
            // terminal is an error return.
            if unsafe { libc::tcgetattr(fd, &mut t) } == 0 {
                saved.push((fd, t));
            }
        }
        TerminalModes(saved)
    }
}

impl Drop for TerminalModes {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        // From a background process group the kernel would stop jobcell with SIGTTOU instead
        // of changing the modes; with it blocked the change is made.
        // SAFETY: plain signal-mask calls on sets that live on this stack.
        unsafe {
            let mut ttou: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut ttou);
            libc::sigaddset(&mut ttou, libc::SIGTTOU);
            libc::pthread_sigmask(libc::SIG_BLOCK, &ttou, &mut old);
            for (fd, t) in &self.0 {
                libc::tcsetattr(*fd, libc::TCSANOW, t);
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
    }
}
