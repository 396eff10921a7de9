//! The options that shape a job, shared by `jobcell run` and `jobcell submit`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use jobcell_spec::{
    parse_bind, parse_env, parse_size, DevMode, FileLimit, JobSpec, MemoryPolicy, NetMode, Unit,
};

#[derive(Args, Debug, Clone)]
pub struct JobOpts {
    /// A directory to make private (bound from scratch). Repeatable; replaces the default list
    /// (/tmp, /var/tmp, /dev/shm). `--private none` makes none private.
    #[arg(long = "private", value_name = "DIR")]
    pub private: Vec<PathBuf>,
    /// Start the job in this host directory (HTCondor's initialdir, sbatch --chdir), which
    /// must be one you can enter; with --image it is bound into the job at the same path.
    /// Default: the job's scratch dir (or its image's WorkingDir).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub chdir: Option<PathBuf>,
    /// Make a host path visible read-write at DST (default: the same path).
    #[arg(long, value_name = "SRC[:DST]")]
    pub bind: Vec<String>,
    /// Make a host path visible read-only (and nosuid, nodev) at DST.
    #[arg(long = "ro-bind", value_name = "SRC[:DST]")]
    pub ro_bind: Vec<String>,
    /// Set a variable in the job's environment.
    #[arg(long, short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Seconds between passing SIGTERM/SIGINT/SIGHUP/SIGQUIT to the job (or removing it) and
    /// killing it.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub grace: Option<f64>,
    /// Run inside this registered image (see `jobcell image ls`).
    #[arg(long, value_name = "NAME")]
    pub image: Option<String>,
    /// The job's /dev: a minimal one, or the host's.
    #[arg(long, value_name = "minimal|host", default_value = "minimal", value_parser = parse_dev)]
    pub dev: DevMode,
    /// The job's network: the host's, or none (a private loopback only).
    #[arg(long, value_name = "host|none", default_value = "host", value_parser = parse_net)]
    pub net: NetMode,
    /// CPU share in cores (fractional allowed): a proportional weight, not a cap; an idle
    /// machine lets the job use more. The daemon also reserves it (default 1 there).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub cpus: Option<f64>,
    /// Hard CPU quota in cores.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub cpu_limit: Option<f64>,
    /// Pin the job to these CPUs (kernel list syntax, e.g. 0-1,3).
    #[arg(long, value_name = "LIST")]
    pub cpuset: Option<String>,
    /// Memory for the job (bare numbers are MiB, like HTCondor's request_memory; 2G, 512MB,
    /// 1.5GiB).
    #[arg(long, value_name = "SIZE", allow_negative_numbers = true)]
    pub memory: Option<String>,
    /// hard: OOM-killed past --memory; soft: may exceed it while the host has free memory;
    /// none: measure only.
    #[arg(long, value_name = "hard|soft|none", default_value = "hard")]
    pub memory_policy: MemoryPolicy,
    /// Swap the job may use on top of --memory (bare numbers are MiB).
    #[arg(long, value_name = "SIZE", allow_negative_numbers = true)]
    pub swap: Option<String>,
    /// Throttle and reclaim the job's memory above this, without killing it (bare numbers are
    /// MiB; v2 memory.high, v1 memory.soft_limit_in_bytes).
    #[arg(long, value_name = "SIZE", allow_negative_numbers = true)]
    pub memory_high: Option<String>,
    /// Most processes and threads the job may have at once.
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// IO weight, 1..10000 (default 100).
    #[arg(long, value_name = "N")]
    pub io_weight: Option<u16>,
    /// Disk the job may fill in its scratch, as its own filesystem (bare numbers are KiB, like
    /// HTCondor's request_disk; 10G, 500MB). Root only.
    #[arg(long, value_name = "SIZE", allow_negative_numbers = true)]
    pub disk: Option<String>,
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

impl JobOpts {
    /// The `--private` list as given (`none` dropped), or None when the option was not used.
    pub fn private_dirs(&self) -> Option<Vec<PathBuf>> {
        (!self.private.is_empty()).then(|| {
            self.private
                .iter()
                .filter(|p| p.as_os_str() != "none")
                .cloned()
                .collect()
        })
    }

    /// Apply these options to `spec` (private dirs only when given; `default_grace` when
    /// `--grace` is not).
    pub fn apply(&self, spec: &mut JobSpec, default_grace: Option<f64>) -> anyhow::Result<()> {
        if let Some(p) = self.private_dirs() {
            spec.private_dirs = p;
        }
        for b in &self.bind {
            spec.mounts.push(parse_bind(b, false)?);
        }
        if let Some(d) = &self.chdir {
            let dir = crate::paths::checked_workdir(d)?;
            // Bound at its own path: an image's view has no host dir but those bound into it,
            // and the host's view may cover it (a dir under the job's private /tmp).
            if !spec.mounts.iter().any(|m| m.dst == dir) {
                spec.mounts.push(jobcell_spec::MountSpec {
                    src: dir.clone(),
                    dst: dir.clone(),
                    readonly: false,
                });
            }
            spec.workdir = Some(dir);
        }
        // A relative program with a `/` is the submitter's file, as condor_submit reads it
        // (in an image, the image's).
        if self.image.is_none() {
            if let Some(program) = spec.argv.first() {
                if let Some(abs) = crate::paths::resolve_program(program)? {
                    spec.argv[0] = abs;
                }
            }
        }
        for b in &self.ro_bind {
            spec.mounts.push(parse_bind(b, true)?);
        }
        for e in &self.env {
            spec.env.push(parse_env(e)?);
        }
        if let Some(g) = self.grace.or(default_grace) {
            anyhow::ensure!(
                g.is_finite() && g >= 0.0,
                "--grace {g} must be a number of seconds >= 0"
            );
            spec.grace = Duration::from_secs_f64(g);
        }
        spec.image = self.image.clone();
        spec.dev = self.dev;
        spec.net = self.net;
        let r = &mut spec.resources;
        r.cpus = self.cpus;
        r.cpu_limit = self.cpu_limit;
        r.cpuset = self.cpuset.clone();
        r.memory_policy = self.memory_policy;
        if let Some(m) = &self.memory {
            r.memory = Some(parse_size(m, Unit::MiB).with_context(|| format!("--memory {m}"))?);
        }
        if let Some(m) = &self.swap {
            r.swap = Some(parse_size(m, Unit::MiB).with_context(|| format!("--swap {m}"))?);
        }
        if self.pids.is_some() {
            r.pids = self.pids;
        }
        r.io_weight = self.io_weight;
        // Options that are rows of FILE_LIMITS.
        for (field, value) in [("memory_high", &self.memory_high)] {
            if let Some(v) = value {
                let row = FileLimit::by_field(field).expect("a FILE_LIMITS row");
                row.parse_into(r, v)?;
            }
        }
        if let Some(d) = &self.disk {
            r.disk = Some(parse_size(d, Unit::KiB).with_context(|| format!("--disk {d}"))?);
        }
        Ok(())
    }
}
