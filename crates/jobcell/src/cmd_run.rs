//! `jobcell run`: one isolated job in the foreground.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use jobcell_sandbox::{launch, Launch, LaunchError};
use jobcell_spec::{
    parse_bind, parse_env, parse_size, DevMode, JobSpec, MemoryPolicy, NetMode, Unit, UserSpec,
};

use crate::config;

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
    /// A directory to make private (bound from scratch). Repeatable; replaces the default list
    /// (/tmp, /var/tmp, /dev/shm). `--private none` makes none private.
    #[arg(long = "private", value_name = "DIR")]
    pub private: Vec<PathBuf>,
    /// Make a host path visible read-write at DST (default: the same path).
    #[arg(long, value_name = "SRC[:DST]")]
    pub bind: Vec<String>,
    /// Make a host path visible read-only (and nosuid, nodev) at DST.
    #[arg(long = "ro-bind", value_name = "SRC[:DST]")]
    pub ro_bind: Vec<String>,
    /// Set a variable in the job's environment.
    #[arg(long, short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Pass a variable of jobcell's own environment to the job.
    #[arg(long, value_name = "KEY")]
    pub env_pass: Vec<String>,
    /// Seconds between passing SIGTERM/SIGINT/SIGHUP/SIGQUIT to the job and killing it.
    #[arg(long, value_name = "SECS")]
    pub grace: Option<f64>,
    /// Write the JSON report to FILE ('-' for stderr).
    #[arg(long, value_name = "FILE")]
    pub report: Option<String>,
    /// Run inside this registered image.
    #[arg(long, value_name = "NAME")]
    pub image: Option<String>,
    /// The job's /dev: a minimal one, or the host's.
    #[arg(long, value_name = "minimal|host", default_value = "minimal", value_parser = parse_dev)]
    pub dev: DevMode,
    /// The job's network: the host's, or none (a private loopback only).
    #[arg(long, value_name = "host|none", default_value = "host", value_parser = parse_net)]
    pub net: NetMode,
    /// CPU share in cores (fractional allowed): a proportional weight, not a cap; an idle
    /// machine lets the job use more.
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Hard CPU quota in cores.
    #[arg(long, value_name = "N")]
    pub cpu_limit: Option<f64>,
    /// Pin the job to these CPUs (kernel list syntax, e.g. 0-1,3).
    #[arg(long, value_name = "LIST")]
    pub cpuset: Option<String>,
    /// Memory for the job (bare numbers are MiB, like HTCondor's request_memory; 2G, 512MB,
    /// 1.5GiB).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// hard: OOM-killed past --memory; soft: may exceed it while the host has free memory;
    /// none: measure only.
    #[arg(long, value_name = "hard|soft|none", default_value = "hard")]
    pub memory_policy: MemoryPolicy,
    /// Swap the job may use on top of --memory (bare numbers are MiB).
    #[arg(long, value_name = "SIZE")]
    pub swap: Option<String>,
    /// Most processes and threads the job may have at once.
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// IO weight, 1..10000 (default 100).
    #[arg(long, value_name = "N")]
    pub io_weight: Option<u16>,
    /// Parent cgroup for job cgroups (default: a `jobcell` child of jobcell's own cgroup).
    #[arg(long, value_name = "PATH")]
    pub cgroup_parent: Option<PathBuf>,
    /// State dir holding the image index (default /var/lib/jobcell).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Directory of image trees (default <state-dir>/images).
    #[arg(long, value_name = "DIR")]
    pub images_dir: Option<PathBuf>,
    /// Node config file (default /etc/jobcell/config.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn parse_dev(s: &str) -> Result<DevMode, String> {
    match s {
        "minimal" => Ok(DevMode::Minimal),
        "host" => Ok(DevMode::Host),
        _ => Err(format!("'{s}' is not one of minimal, host")),
    }
}

fn parse_net(s: &str) -> Result<NetMode, String> {
    match s {
        "host" => Ok(NetMode::Host),
        "none" => Ok(NetMode::None),
        _ => Err(format!("'{s}' is not one of host, none")),
    }
}

pub fn build_spec(a: &RunArgs, cfg: &jobcell_spec::Config) -> anyhow::Result<JobSpec> {
    let mut spec = JobSpec::new(a.command.clone());
    let user = a
        .user
        .clone()
        .or_else(|| cfg.run.user.clone())
        .unwrap_or_else(|| "nobody".into());
    spec.user = UserSpec::parse(&user)?;
    spec.scratch_base = a
        .scratch_base
        .clone()
        .unwrap_or_else(|| config::default_scratch_base(cfg));
    spec.keep_scratch = a.keep_scratch;
    if !a.private.is_empty() {
        spec.private_dirs = a
            .private
            .iter()
            .filter(|p| p.as_os_str() != "none")
            .cloned()
            .collect();
        // Asked for by name: it must be a directory the job can be given (an image view
        // makes its own; /dev/shm lives in the job's own /dev).
        if a.image.is_none() {
            for p in &spec.private_dirs {
                let own_dev = p.starts_with("/dev") && a.dev == DevMode::Minimal;
                if !own_dev && !p.is_dir() {
                    anyhow::bail!("--private {}: not a directory on this host", p.display());
                }
            }
        }
    } else if let Some(list) = &cfg.run.mount_under_scratch {
        spec.private_dirs = list.clone();
    }
    for b in &a.bind {
        spec.mounts.push(parse_bind(b, false)?);
    }
    for b in &a.ro_bind {
        spec.mounts.push(parse_bind(b, true)?);
    }
    for e in &a.env {
        spec.env.push(parse_env(e)?);
    }
    if let Some(g) = a.grace.or(cfg.run.grace_secs.map(|s| s as f64)) {
        anyhow::ensure!(
            g.is_finite() && g >= 0.0,
            "--grace {g} must be a number of seconds >= 0"
        );
        spec.grace = Duration::from_secs_f64(g);
    }
    let r = &mut spec.resources;
    r.cpus = a.cpus;
    r.cpu_limit = a.cpu_limit;
    r.cpuset = a.cpuset.clone();
    r.memory_policy = a.memory_policy;
    if let Some(m) = &a.memory {
        r.memory = Some(parse_size(m, Unit::MiB).with_context(|| format!("--memory {m}"))?);
    }
    if let Some(m) = &a.swap {
        r.swap = Some(parse_size(m, Unit::MiB).with_context(|| format!("--swap {m}"))?);
    }
    if a.pids.is_some() {
        r.pids = a.pids;
    }
    r.io_weight = a.io_weight;
    spec.image = a.image.clone();
    spec.dev = a.dev;
    spec.net = a.net;
    spec.validate()?;
    Ok(spec)
}

pub fn run(a: RunArgs) -> anyhow::Result<i32> {
    let cfg = config::load(a.config.as_deref())?;
    let spec = build_spec(&a, &cfg)?;
    if !config::is_root() && a.user.is_some() {
        anyhow::bail!("--user needs root: rootless jobs run as their caller");
    }
    // The lease keeps the image from being removed while the job runs.
    let lease = match &spec.image {
        Some(name) => {
            let (state_dir, images_dir) =
                config::store_dirs(&cfg, a.state_dir.as_deref(), a.images_dir.as_deref());
            // Non-root callers get a read-only view of root's index.
            let store =
                jobcell_images::ImageStore::open(&state_dir, &images_dir, cfg.images.clone())?;
            Some(
                store
                    .lease(name, unsafe { libc::getuid() })
                    .with_context(|| format!("--image {name}"))?,
            )
        }
        None => None,
    };
    let extra_env = a
        .env_pass
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
        .collect();
    let cgroup_parent = a.cgroup_parent.clone().or(cfg.paths.cgroup_parent.clone());
    let outcome = launch(&Launch {
        cgroup_parent,
        spec: &spec,
        image_root: lease.as_ref().map(|l| l.root.clone()),
        image_name: lease.as_ref().map(|l| l.name.clone()),
        extra_env,
        cgroup_name: None,
        cgroup_root: None,
    });
    let outcome = match outcome {
        Ok(o) => o,
        // A signal before the job started: nothing was left behind; die like the job would.
        Err(LaunchError::Interrupted(sig)) => return Ok(128 + sig),
        Err(e) => return Err(e.into()),
    };
    for w in &outcome.report.warnings {
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
    Ok(outcome.exit.shell_code())
}
