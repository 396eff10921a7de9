//! The node config file (`/etc/jobcell/config.toml`). Every key is optional: the embedded
//! defaults run a job on a fresh machine.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use thiserror::Error;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/jobcell/config.toml";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub paths: Paths,
    #[serde(default)]
    pub run: RunDefaults,
    /// Admin-named image trees, as HTCondor's `NAMED_CHROOT = RHEL5=/chroot/sl5/root`.
    #[serde(default)]
    pub images: BTreeMap<String, PathBuf>,
    /// What `jobcell daemon` offers jobs and where it listens.
    #[serde(default)]
    pub node: NodeConfig,
    /// What the daemon does to jobs that overstay or overuse (`[policy]`).
    #[serde(default)]
    pub policy: PolicyConfig,
}

/// `[policy]`: durations are strings like `"90s"`, `"10m"`, `"1h30m"`, `"2d"` (bare numbers
/// are seconds).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Longest a job may run; a job past it is held with the reason (HTCondor's
    /// `allowed_job_duration`, as a node-wide cap).
    pub allowed_job_duration: Option<String>,
    /// Memory pressure preemption: a running job whose tasks stall on memory (PSI `some`,
    /// cgroup v2) more than this percentage of the time...
    pub pressure_stall_percent: Option<f64>,
    /// ...or that takes more major page faults per second than this (swap-ins and
    /// refaults; cgroup v1 has no per-cgroup PSI, so this is its signal)...
    pub pressure_major_faults: Option<f64>,
    /// ...continuously for this long (default "30s")...
    pub pressure_duration: Option<String>,
    /// ...is preempted: "requeue" (killed and queued again, the default) or "hold".
    pub pressure_action: Option<String>,
}

/// `[node]`: sizes are strings in HTCondor units (bare numbers are MiB).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub socket: Option<PathBuf>,
    /// Cores offered to jobs (default: what the daemon's cgroup allows minus `reserve_cpus`).
    pub cpus: Option<f64>,
    pub memory: Option<String>,
    pub reserve_cpus: Option<f64>,
    pub reserve_memory: Option<String>,
    /// A job's request when it names none.
    pub default_cpus: Option<f64>,
    pub default_memory: Option<String>,
    /// Also serve `GET /metrics` on this loopback TCP address (`"9105"`,
    /// `"127.0.0.1:9105"`, `"[::1]:9105"`); off by default.
    pub metrics_listen: Option<String>,
    /// API connections open at once, all clients (default: what the descriptor limit leaves,
    /// at most 4096); the last 16 only for root.
    pub api_max_connections: Option<usize>,
    /// API connections open at once from one non-root uid (default 64).
    pub api_max_connections_per_uid: Option<usize>,
    /// A connection that sends no whole request head within this of connecting or of its
    /// last answer is closed (default "15s").
    pub api_idle_timeout: Option<String>,
    /// A request whose body has not arrived within this gets 408, and a client that reads
    /// nothing of its answer for this long is dropped (default "60s").
    pub api_body_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    pub state_dir: Option<PathBuf>,
    pub scratch_base: Option<PathBuf>,
    pub images_dir: Option<PathBuf>,
    pub cgroup_parent: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunDefaults {
    /// HTCondor's MOUNT_UNDER_SCRATCH.
    pub mount_under_scratch: Option<Vec<PathBuf>>,
    pub user: Option<String>,
    pub grace_secs: Option<u64>,
}

impl Config {
    /// Parse config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.message().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config() {
        let c = Config::parse(
            r#"
            [paths]
            scratch_base = "/scratch"
            [run]
            mount_under_scratch = ["/tmp", "/var/tmp"]
            [images]
            RHEL5 = "/chroot/sl5-v3/root"
            "#,
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.paths.scratch_base, Some("/scratch".into()));
        assert_eq!(c.run.mount_under_scratch.unwrap().len(), 2);
        assert_eq!(c.images["RHEL5"], PathBuf::from("/chroot/sl5-v3/root"));
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_file() {
        let e = Config::parse(
            "[paths]\nscrach_base = \"/x\"\n",
            "/etc/jobcell/config.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/etc/jobcell/config.toml") && e.contains("scrach_base"),
            "{e}"
        );
    }
}
