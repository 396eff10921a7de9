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
    #[error("config [run] job_uids = \"{value}\": {reason}")]
    JobUids { value: String, reason: String },
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
    /// Per-job uids for jobs that would run as `nobody`: `"FIRST-LAST"`, or `"none"` for the
    /// shared `nobody` (default [`DEFAULT_JOB_UIDS`]).
    pub job_uids: Option<String>,
}

/// `[run] job_uids` when unset: 0x70000000-0x7000FFFF, just past systemd's container range
/// (0x00080000-0x6FFFFFFF), below its foreign range (0x7FFE0000-) and below 2^31.
pub const DEFAULT_JOB_UIDS: UidRange = UidRange {
    first: 0x7000_0000,
    last: 0x7000_FFFF,
};

/// An inclusive range of uids (each also used as the gid of the same number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

impl std::fmt::Display for UidRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl UidRange {
    /// Parse `"FIRST-LAST"` (`"none"` is `None`). Refused: uid 0, the overflow uids 65534 and
    /// 65535, and uids of 2^31 and above (many tools read uid_t as a signed int).
    pub fn parse(text: &str) -> Result<Option<UidRange>, ConfigError> {
        let bad = |why: &str| ConfigError::JobUids {
            value: text.to_string(),
            reason: why.to_string(),
        };
        if text.trim() == "none" {
            return Ok(None);
        }
        let (a, b) = text
            .trim()
            .split_once('-')
            .ok_or_else(|| bad("expected FIRST-LAST or \"none\""))?;
        let num = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| bad(&format!("'{}' is not a uid", s.trim())))
        };
        let r = UidRange {
            first: num(a)?,
            last: num(b)?,
        };
        if r.first > r.last {
            return Err(bad("FIRST is above LAST"));
        }
        if r.first == 0 {
            return Err(bad("it contains uid 0 (root)"));
        }
        if r.first <= 65535 && r.last >= 65534 {
            return Err(bad(
                "it contains 65534 or 65535 (nobody, the overflow uids)",
            ));
        }
        if r.last > 0x7FFF_FFFF {
            return Err(bad(
                "uids above 2147483647 are read as negative by many tools",
            ));
        }
        Ok(Some(r))
    }

    pub fn contains(&self, id: u32) -> bool {
        self.first <= id && id <= self.last
    }

    pub fn len(&self) -> u32 {
        self.last - self.first + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// `text` (a config file, possibly empty) with `[run] job_uids` set to `value`, everything
/// else as it was: `jobcell selftest` runs its jobs with the site's config but one shared uid.
pub fn with_job_uids(text: &str, path: &str, value: &str) -> Result<String, ConfigError> {
    let parse_err = |message: String| ConfigError::Parse {
        path: path.to_string(),
        message,
    };
    let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.message().into()))?;
    let run = table
        .entry("run")
        .or_insert_with(|| toml::Value::Table(Default::default()));
    let toml::Value::Table(run) = run else {
        return Err(parse_err("[run] is not a table".into()));
    };
    run.insert("job_uids".into(), toml::Value::String(value.into()));
    toml::to_string(&table).map_err(|e| parse_err(e.to_string()))
}

impl RunDefaults {
    /// The per-job uid range this config asks for (`None`: jobs share `nobody`).
    pub fn job_uid_range(&self) -> Result<Option<UidRange>, ConfigError> {
        match &self.job_uids {
            Some(t) => UidRange::parse(t),
            None => Ok(Some(DEFAULT_JOB_UIDS)),
        }
    }
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
    fn job_uid_ranges() {
        let parse = |t: &str| UidRange::parse(t).map_err(|e| e.to_string());
        assert_eq!(
            parse("100000-100009"),
            Ok(Some(UidRange {
                first: 100000,
                last: 100009
            }))
        );
        assert_eq!(parse("none"), Ok(None));
        assert_eq!(
            RunDefaults::default().job_uid_range().unwrap(),
            Some(DEFAULT_JOB_UIDS)
        );
        for (t, why) in [
            ("5", "expected FIRST-LAST"),
            ("9-3", "FIRST is above LAST"),
            ("0-10", "uid 0"),
            ("60000-70000", "65534"),
            ("x-10", "'x' is not a uid"),
            ("2147483000-2147483648", "above 2147483647"),
        ] {
            let e = parse(t).unwrap_err();
            assert!(
                e.starts_with(&format!("config [run] job_uids = \"{t}\": ")) && e.contains(why),
                "{e}"
            );
        }
    }

    #[test]
    fn job_uids_can_be_set_in_a_config_text() {
        let text = "[paths]\nscratch_base = \"/s\"\n[run]\ngrace_secs = 3\n";
        let c = Config::parse(&with_job_uids(text, "c.toml", "none").unwrap(), "c.toml").unwrap();
        assert_eq!(c.run.job_uids.as_deref(), Some("none"));
        assert_eq!(c.run.grace_secs, Some(3));
        assert_eq!(c.paths.scratch_base, Some("/s".into()));
        let c = Config::parse(&with_job_uids("", "c.toml", "none").unwrap(), "c.toml").unwrap();
        assert_eq!(c.run.job_uid_range().unwrap(), None);
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
