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
    /// How every job's scratch is bounded (`[scratch]`).
    #[serde(default)]
    pub scratch: ScratchConfig,
    /// What non-root submitters to the daemon may ask for, and get by default (`[limits]`).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Bounds on `jobcell image add`, for every caller (`[import]`).
    #[serde(default)]
    pub import: ImportConfig,
    /// How the daemon samples running jobs' usage over time (`[usage]`).
    #[serde(default)]
    pub usage: UsageConfig,
}

/// `[usage]`: the series `jobcell show` draws.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    /// How often a running job's cgroup is sampled: a duration as in `[policy]` (default
    /// "15s"), or `"none"` for no series.
    pub sample_interval: Option<String>,
}

/// The bound when `[scratch] disk` is not set.
pub const DEFAULT_SCRATCH_DISK: &str = "10G";

/// `[scratch]`: sizes in HTCondor units (bare numbers are KiB, as `request_disk`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScratchConfig {
    /// What a job that asks for no `--disk`/`request_disk` may write in its scratch (default
    /// "10G"); `"none"` leaves such scratch unbounded.
    pub disk: Option<String>,
    /// The size of the node's scratch pool, made when the scratch base is not on btrfs
    /// (default: a quarter of the state dir's filesystem).
    pub pool_size: Option<String>,
}

impl ScratchConfig {
    /// The default bound in bytes, or None for `"none"`.
    pub fn bound(&self) -> Result<Option<u64>, crate::SizeError> {
        let s = self.disk.as_deref().unwrap_or(DEFAULT_SCRATCH_DISK);
        if s.trim().eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        crate::parse_size(s, crate::Unit::KiB).map(Some)
    }

    pub fn pool_size(&self) -> Result<Option<u64>, crate::SizeError> {
        self.pool_size
            .as_deref()
            .map(|s| crate::parse_size(s, crate::Unit::KiB))
            .transpose()
    }
}

/// `[limits]`: applied by the daemon to jobs submitted by users other than root (root's
/// requests are the admin's and pass unchanged). Sizes are strings in HTCondor units (bare
/// numbers are MiB); `"none"` lifts a maximum.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Memory policies users may ask for (default `["hard"]`; "soft" may be added, "none"
    /// never: a measure-only job has no memory limit at all).
    pub user_memory_policies: Option<Vec<String>>,
    /// A job's pids limit when it names none (default 4096).
    pub default_pids: Option<u64>,
    /// Most pids a user's job may ask for (default 32768).
    pub max_pids: Option<u64>,
    /// Largest `--disk`/`request_disk` a user may ask for (default "100G"; "none": any).
    pub max_disk: Option<String>,
    /// Whether users may ask for a size-limited scratch at all (default true).
    pub user_disk: Option<bool>,
    /// Whether users may have the host's /dev (default false).
    pub user_dev_host: Option<bool>,
    /// Whether users may have the host's network (default true).
    pub user_net_host: Option<bool>,
    /// Whether users may keep their scratch dir after the job (default false).
    pub user_keep_scratch: Option<bool>,
    /// Highest IO weight a user may ask for (default 100, the kernel's default weight).
    pub max_io_weight: Option<u16>,
    /// Longest grace between SIGTERM and SIGKILL a user may ask for, in seconds (default 60).
    pub max_grace_secs: Option<u64>,
    /// Most swap a user's job may use beyond its memory limit (default "0": none; "none":
    /// any, and a job that names none may swap without bound, as root's).
    pub max_swap: Option<String>,
}

/// `[import]`: sizes are strings (bare numbers are MiB); `"none"` lifts the bound.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImportConfig {
    /// Most bytes an imported image may unpack to (default "20G").
    pub max_unpacked_size: Option<String>,
    /// Most entries (files, dirs, links) an imported image may have (default 1000000).
    pub max_entries: Option<u64>,
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
    /// How often jobs' periodic policy expressions (`periodic_hold`, `periodic_release`,
    /// `periodic_remove`, `leave_in_queue`) are evaluated (HTCondor's
    /// PERIODIC_EXPR_INTERVAL; default "60s").
    pub periodic_expr_interval: Option<String>,
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
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            // `file:line`, as compilers say it, when toml knows where.
            path: match e.span() {
                Some(span) => format!("{path}:{}", line_of(text, span.start)),
                None => path.to_string(),
            },
            message: e.message().trim_end().to_string(),
        })?;
        let bad = |key: &str, e: crate::SizeError| ConfigError::Parse {
            path: path.to_string(),
            message: format!("[scratch] {key}: {e} (or \"none\")"),
        };
        c.scratch.bound().map_err(|e| bad("disk", e))?;
        c.scratch.pool_size().map_err(|e| bad("pool_size", e))?;
        Ok(c)
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_config_names_its_file_and_line() {
        let text = "[paths]\nstate_dir = \"/s\"\n\n[run]\ngrace_secs = \"ten\"\n";
        let e = Config::parse(text, "/etc/jobcell/config.toml").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("config /etc/jobcell/config.toml:5: "),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1, "{msg}");
        let e = Config::parse("[paths]\nnot_a_key = 1\n", "c.toml").unwrap_err();
        assert!(e.to_string().starts_with("config c.toml:2: "), "{e}");
    }

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
    fn scratch_bound_defaults_on_and_none_turns_it_off() {
        let c = Config::parse("", "x.toml").unwrap();
        assert_eq!(c.scratch.bound().unwrap(), Some(10 << 30));
        let c = Config::parse("[scratch]\ndisk = \"16M\"\npool_size = \"2G\"\n", "x.toml").unwrap();
        assert_eq!(c.scratch.bound().unwrap(), Some(16 << 20));
        assert_eq!(c.scratch.pool_size().unwrap(), Some(2 << 30));
        let c = Config::parse("[scratch]\ndisk = \"none\"\n", "x.toml").unwrap();
        assert_eq!(c.scratch.bound().unwrap(), None);
        let e = Config::parse("[scratch]\ndisk = \"lots\"\n", "/etc/j.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/j.toml") && e.contains("[scratch] disk") && e.contains("'lots'"),
            "{e}"
        );
    }

    #[test]
    fn parses_limits_and_import() {
        let c = Config::parse(
            r#"
            [limits]
            user_memory_policies = ["hard", "soft"]
            max_pids = 10000
            max_disk = "none"
            user_dev_host = true
            [import]
            max_unpacked_size = "5G"
            max_entries = 1000
            "#,
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.limits.max_pids, Some(10000));
        assert_eq!(c.limits.max_disk.as_deref(), Some("none"));
        assert_eq!(c.limits.user_dev_host, Some(true));
        assert_eq!(c.limits.user_keep_scratch, None);
        assert_eq!(c.import.max_entries, Some(1000));
        let e = Config::parse(
            "[limits]
max_pid = 1
",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_pid"), "{e}");
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
