//! `jobcelld` (the daemon) and `jobcelld supervise`: thin wrappers over jobcell-node.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use jobcell_node::daemon::{DEFAULT_SOCKET, DEFAULT_STATE_DIR};
use jobcell_node::DaemonOptions;
use jobcell_spec::{parse_size, Unit};

use crate::config;

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// API socket (default: [node] socket in the config, else /run/jobcell/api.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// State dir: state.db, jobs/ (default: [paths] state_dir, else /var/lib/jobcell).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Node config file (default /etc/jobcell/config.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Cores offered to jobs (default: what the daemon's cgroup allows).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Memory offered to jobs (default: the daemon's cgroup limit or RAM, minus the reserve).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Directory under which job scratch dirs are made (default: <state-dir>/scratch).
    #[arg(long, value_name = "DIR")]
    pub scratch_base: Option<PathBuf>,
    /// Parent cgroup for job cgroups (default: a `jobcell` child of the daemon's own).
    #[arg(long, value_name = "PATH")]
    pub cgroup_parent: Option<PathBuf>,
    /// Also serve GET /metrics on this loopback TCP address or port (default: [node]
    /// metrics_listen, else only on the API socket).
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub metrics_listen: Option<String>,
}

fn size(s: &Option<String>, what: &str) -> anyhow::Result<Option<u64>> {
    s.as_ref()
        .map(|v| parse_size(v, Unit::MiB).with_context(|| format!("{what} {v}")))
        .transpose()
}

pub fn run(a: DaemonArgs) -> anyhow::Result<i32> {
    let cfg = config::load(a.config.as_deref())?;
    let n = &cfg.node;
    let state_dir = a
        .state_dir
        .clone()
        .or_else(|| cfg.paths.state_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let opts = DaemonOptions {
        socket: a
            .socket
            .clone()
            .or_else(|| n.socket.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        cpus: a.cpus.or(n.cpus),
        memory: match size(&a.memory, "--memory")? {
            Some(m) => Some(m),
            None => size(&n.memory, "[node] memory")?,
        },
        reserve_cpus: n.reserve_cpus.unwrap_or(0.0),
        reserve_memory: size(&n.reserve_memory, "[node] reserve_memory")?.unwrap_or(256 << 20),
        default_cpus: n.default_cpus.unwrap_or(1.0),
        default_memory: size(&n.default_memory, "[node] default_memory")?.unwrap_or(256 << 20),
        scratch_base: a
            .scratch_base
            .clone()
            .or_else(|| cfg.paths.scratch_base.clone())
            .unwrap_or_else(|| state_dir.join("scratch")),
        // The daemon's own scratch base gets the scratch pool (made on first start, mounted
        // after a reboot); one given as --scratch-base is bounded only if it is on btrfs.
        // Each job's report says whether it got the bound (isolation.scratch_bound_bytes).
        scratch_bound: cfg.scratch.bound()?,
        scratch_pool: match a.scratch_base {
            Some(_) => None,
            None => Some(cfg.scratch.pool_size()?),
        },
        cgroup_parent: a.cgroup_parent.clone().or(cfg.paths.cgroup_parent.clone()),
        // JOBCELL_EXEC_SUPERVISOR=1: exec `jobcell supervise` per job (the older, costlier way;
        // kept for comparison and debugging).
        exe: std::env::var_os("JOBCELL_EXEC_SUPERVISOR")
            .filter(|v| v == "1")
            .map(|_| PathBuf::from("/proc/self/exe")),
        images: {
            let (s, i) = config::store_dirs(&cfg, Some(&state_dir), None);
            jobcell_node::jobdir::ImagesConfig {
                state_dir: s,
                images_dir: i,
                named: cfg.images.clone(),
            }
        },
        policy: jobcell_node::core::Policy {
            allowed_job_duration: cfg
                .policy
                .allowed_job_duration
                .as_deref()
                .map(|d| {
                    parse_duration(d)
                        .with_context(|| format!("[policy] allowed_job_duration = \"{d}\""))
                })
                .transpose()?,
            pressure: pressure_policy(&cfg)?,
            periodic_expr_interval: match cfg.policy.periodic_expr_interval.as_deref() {
                None => jobcell_node::core::DEFAULT_PERIODIC_EXPR_INTERVAL,
                Some(d) => {
                    let secs = parse_duration(d)
                        .with_context(|| format!("[policy] periodic_expr_interval = \"{d}\""))?;
                    if secs < 1.0 {
                        anyhow::bail!(
                            "[policy] periodic_expr_interval = \"{d}\" must be at least 1s"
                        );
                    }
                    std::time::Duration::from_secs_f64(secs)
                }
            },
        },
        limits: jobcell_node::limits::UserLimits::from_config(&cfg.limits)?,
        metrics_listen: a
            .metrics_listen
            .as_deref()
            .or(n.metrics_listen.as_deref())
            .map(parse_loopback)
            .transpose()?,
        api_max_connections: positive(n.api_max_connections, "api_max_connections")?,
        api_max_connections_per_uid: positive(
            n.api_max_connections_per_uid,
            "api_max_connections_per_uid",
        )?
        .unwrap_or(64),
        api_idle_timeout: timeout(&n.api_idle_timeout, "api_idle_timeout", 15.0)?,
        api_body_timeout: timeout(&n.api_body_timeout, "api_body_timeout", 60.0)?,
        job_uids: cfg.run.job_uid_range()?,
        usage_interval: usage_interval(&cfg.usage)?,
        state_dir,
    };
    // A range that holds an account is refused now, not at every job's start.
    if let (Some(range), true) = (opts.job_uids, config::is_root()) {
        jobcell_sandbox::jobuid::check_range(
            std::path::Path::new(jobcell_sandbox::jobuid::LOCK_DIR),
            range,
        )?;
    }
    if let Some(c) = opts.cpus {
        anyhow::ensure!(
            c.is_finite() && c > 0.0,
            "--cpus {c} must be a number greater than 0"
        );
    }
    init_logging();
    jobcell_node::run_daemon(opts)?;
    Ok(0)
}

/// `[usage] sample_interval`: seconds, or None for `"none"`.
fn usage_interval(u: &jobcell_spec::UsageConfig) -> anyhow::Result<Option<f64>> {
    let Some(v) = u.sample_interval.as_deref() else {
        return Ok(Some(jobcell_node::usage::DEFAULT_SAMPLE_INTERVAL));
    };
    if v.trim().eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let secs = parse_duration(v).with_context(|| format!("[usage] sample_interval = \"{v}\""))?;
    anyhow::ensure!(
        (0.1..=86400.0).contains(&secs),
        "[usage] sample_interval = \"{v}\": must be between 0.1s and 1d"
    );
    Ok(Some(secs))
}

/// `[node] KEY`, a count that must be at least 1.
fn positive(v: Option<usize>, key: &str) -> anyhow::Result<Option<usize>> {
    if v == Some(0) {
        anyhow::bail!("[node] {key} = 0: must be at least 1");
    }
    Ok(v)
}

/// `[node] KEY = "DURATION"`, else `default` seconds.
fn timeout(v: &Option<String>, key: &str, default: f64) -> anyhow::Result<std::time::Duration> {
    let secs = match v {
        Some(d) => parse_duration(d).with_context(|| format!("[node] {key} = \"{d}\""))?,
        None => default,
    };
    std::time::Duration::try_from_secs_f64(secs)
        .with_context(|| format!("[node] {key}: {secs} s is out of range"))
}

/// `[policy] pressure_*`: on when a threshold is set.
fn pressure_policy(
    cfg: &jobcell_spec::Config,
) -> anyhow::Result<Option<jobcell_node::core::PressurePolicy>> {
    let p = &cfg.policy;
    if p.pressure_stall_percent.is_none() && p.pressure_major_faults.is_none() {
        anyhow::ensure!(
            p.pressure_duration.is_none() && p.pressure_action.is_none(),
            "[policy] pressure_duration/pressure_action need pressure_stall_percent or pressure_major_faults"
        );
        return Ok(None);
    }
    for (k, v) in [
        ("pressure_stall_percent", p.pressure_stall_percent),
        ("pressure_major_faults", p.pressure_major_faults),
    ] {
        if let Some(v) = v {
            anyhow::ensure!(
                v.is_finite() && v > 0.0,
                "[policy] {k} = {v} must be a number greater than 0"
            );
        }
    }
    let duration = match &p.pressure_duration {
        Some(d) => {
            parse_duration(d).with_context(|| format!("[policy] pressure_duration = \"{d}\""))?
        }
        None => 30.0,
    };
    let hold = match p.pressure_action.as_deref() {
        None | Some("requeue") => false,
        Some("hold") => true,
        Some(a) => anyhow::bail!("[policy] pressure_action = \"{a}\" is not requeue or hold"),
    };
    Ok(Some(jobcell_node::core::PressurePolicy {
        stall_percent: p.pressure_stall_percent,
        major_faults: p.pressure_major_faults,
        duration,
        hold,
    }))
}

/// `9105` (127.0.0.1), `127.0.0.1:9105`, `[::1]:9105`; anything but loopback is refused:
/// the metrics name users and jobs, and TCP has no peer credentials to check.
fn parse_loopback(s: &str) -> anyhow::Result<std::net::SocketAddr> {
    let addr: std::net::SocketAddr = match s.trim().parse::<u16>() {
        Ok(port) => ([127, 0, 0, 1], port).into(),
        Err(_) => s
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("metrics_listen '{s}' is not PORT or ADDR:PORT"))?,
    };
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "metrics_listen '{s}' must be a loopback address (127.0.0.1 or ::1): the metrics name users and jobs"
    );
    Ok(addr)
}

/// `90`, `90s`, `10m`, `1h30m`, `2d` -> seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<f64> {
    let t = s.trim();
    if let Ok(n) = t.parse::<f64>() {
        anyhow::ensure!(
            n.is_finite() && n > 0.0,
            "a duration must be greater than 0"
        );
        return Ok(n);
    }
    let (mut total, mut num) = (0.0, String::new());
    for c in t.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => anyhow::bail!("'{c}' is not a unit (s, m, h, d)"),
        };
        let n: f64 = num
            .parse()
            .map_err(|_| anyhow::anyhow!("expected a number before '{c}'"))?;
        total += n * unit;
        num.clear();
    }
    anyhow::ensure!(num.is_empty(), "'{num}' has no unit (s, m, h, d)");
    anyhow::ensure!(total > 0.0, "a duration must be greater than 0");
    Ok(total)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JOBCELL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // SAFETY: isatty only inspects the descriptor number; a closed one is an error return.
        .with_ansi(unsafe { libc::isatty(2) } == 1)
        .init();
}

#[derive(Args, Debug)]
pub struct SuperviseArgs {
    /// The job's directory (spec.json).
    pub job_dir: PathBuf,
    /// Which attempt of the job this is.
    pub attempt: u32,
}

pub fn supervise(a: SuperviseArgs) -> anyhow::Result<i32> {
    Ok(jobcell_node::supervise::supervise(&a.job_dir, a.attempt))
}
