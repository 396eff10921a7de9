//! What users other than root may ask of the daemon (`[limits]` in the node config).
//!
//! The daemon runs every job as root's child in a cgroup of its own; the job's spec decides
//! the limits written there. A user's request may lower a limit but never lift one past the
//! node's: a request above a maximum or for something closed is refused (HTTP 403) with one
//! line naming the key, and a missing limit gets the node's default (a `pids: null` sent
//! through the API means "the default", never "no limit"). Root's requests pass unchanged.

use std::path::PathBuf;
use std::time::Duration;

use jobcell_spec::{parse_size, DevMode, JobSpec, LimitsConfig, MemoryPolicy, NetMode, Unit};
use thiserror::Error;

/// The defaults: a fork bomb stops at `default_pids`; a user asks for at most `max_pids`.
pub const DEFAULT_PIDS: u64 = jobcell_spec::DEFAULT_PIDS;
pub const DEFAULT_MAX_PIDS: u64 = 32768;
pub const DEFAULT_MAX_DISK: &str = "100G";
/// The kernel's default IO weight: a user may lower theirs, not raise it above their
/// neighbours'.
pub const DEFAULT_MAX_IO_WEIGHT: u16 = 100;
pub const DEFAULT_MAX_GRACE_SECS: u64 = 60;
/// Swap is closed to users by default: a job past its memory limit is held, not left to
/// push the node's other jobs out to swap.
pub const DEFAULT_MAX_SWAP: &str = "0";

/// Private dirs every user job gets, whatever it asks: with the host's own, a job would write
/// outside its scratch (and past its disk bound) into dirs shared with every other user, and
/// leave files there (in /dev/shm, memory) after it ends.
const USER_PRIVATE_DIRS: [&str; 3] = jobcell_spec::DEFAULT_PRIVATE_DIRS;

/// A `[limits]` the daemon cannot honour (at start), or why a user's request is refused (each
/// message one line naming the config key).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error("[limits] {key} = {value}: {reason}")]
    Config {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("{what} exceeds the node's limit (limits.{key} = {max})")]
    Exceeds {
        what: String,
        key: &'static str,
        max: String,
    },
    #[error("{what} is not open to users on this node (limits.{key} = {value})")]
    Closed {
        what: String,
        key: &'static str,
        value: String,
    },
    #[error("--memory-policy none is for root only: a measure-only job has no memory limit")]
    MeasureOnly,
}

/// `[limits]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct UserLimits {
    pub memory_policies: Vec<MemoryPolicy>,
    pub default_pids: u64,
    pub max_pids: u64,
    /// None: no maximum (the admin wrote "none").
    pub max_disk: Option<u64>,
    /// As written in the config (or the default), for messages.
    pub max_disk_text: String,
    pub disk: bool,
    pub dev_host: bool,
    pub net_host: bool,
    pub keep_scratch: bool,
    pub max_io_weight: u16,
    pub max_grace: Duration,
    /// None: no maximum (the admin wrote "none").
    pub max_swap: Option<u64>,
    /// As written in the config (or the default), for messages.
    pub max_swap_text: String,
}

impl Default for UserLimits {
    fn default() -> Self {
        UserLimits::from_config(&LimitsConfig::default()).expect("the defaults are valid")
    }
}

fn policy_name(p: MemoryPolicy) -> &'static str {
    match p {
        MemoryPolicy::Hard => "hard",
        MemoryPolicy::Soft => "soft",
        MemoryPolicy::None => "none",
    }
}

impl UserLimits {
    pub fn from_config(c: &LimitsConfig) -> Result<Self, LimitsError> {
        let bad = |key, value: String, reason: &str| LimitsError::Config {
            key,
            value,
            reason: reason.to_string(),
        };
        let mut memory_policies = Vec::new();
        for name in c
            .user_memory_policies
            .clone()
            .unwrap_or_else(|| vec!["hard".into()])
        {
            let p: MemoryPolicy = name
                .parse()
                .map_err(|e: String| bad("user_memory_policies", format!("{name:?}"), &e))?;
            if p == MemoryPolicy::None {
                return Err(bad(
                    "user_memory_policies",
                    "\"none\"".into(),
                    "never open to users (a measure-only job has no memory limit)",
                ));
            }
            memory_policies.push(p);
        }
        let default_pids = c.default_pids.unwrap_or(DEFAULT_PIDS);
        let max_pids = c.max_pids.unwrap_or(DEFAULT_MAX_PIDS.max(default_pids));
        if default_pids == 0 || default_pids > max_pids {
            return Err(bad(
                "default_pids",
                default_pids.to_string(),
                &format!("must be between 1 and max_pids ({max_pids})"),
            ));
        }
        let max_disk_text = c
            .max_disk
            .clone()
            .unwrap_or_else(|| DEFAULT_MAX_DISK.into());
        let max_disk = match max_disk_text.trim() {
            "none" => None,
            t => Some(
                parse_size(t, Unit::MiB)
                    .map_err(|e| bad("max_disk", format!("{max_disk_text:?}"), &e.to_string()))?,
            ),
        };
        let max_swap_text = c
            .max_swap
            .clone()
            .unwrap_or_else(|| DEFAULT_MAX_SWAP.into());
        let max_swap = match max_swap_text.trim() {
            "none" => None,
            t => Some(
                parse_size(t, Unit::MiB)
                    .map_err(|e| bad("max_swap", format!("{max_swap_text:?}"), &e.to_string()))?,
            ),
        };
        let max_io_weight = c.max_io_weight.unwrap_or(DEFAULT_MAX_IO_WEIGHT);
        if !(1..=10000).contains(&max_io_weight) {
            return Err(bad(
                "max_io_weight",
                max_io_weight.to_string(),
                "must be between 1 and 10000",
            ));
        }
        Ok(UserLimits {
            memory_policies,
            default_pids,
            max_pids,
            max_disk,
            max_disk_text,
            disk: c.user_disk.unwrap_or(true),
            dev_host: c.user_dev_host.unwrap_or(false),
            net_host: c.user_net_host.unwrap_or(true),
            keep_scratch: c.user_keep_scratch.unwrap_or(false),
            max_io_weight,
            max_grace: Duration::from_secs(c.max_grace_secs.unwrap_or(DEFAULT_MAX_GRACE_SECS)),
            max_swap,
            max_swap_text,
        })
    }

    /// Bound a non-root user's job: refuse what is above a maximum or closed, fill in the
    /// defaults of what is missing.
    pub fn apply(&self, spec: &mut JobSpec) -> Result<(), LimitsError> {
        self.apply_on(spec, host_has_swap())
    }

    /// [`Self::apply`] on a node with or without swap.
    fn apply_on(&self, spec: &mut JobSpec, swap_on_host: bool) -> Result<(), LimitsError> {
        let closed = |what: &str, key, value: &str| LimitsError::Closed {
            what: what.to_string(),
            key,
            value: value.to_string(),
        };
        let r = &mut spec.resources;
        if r.memory_policy == MemoryPolicy::None {
            return Err(LimitsError::MeasureOnly);
        }
        if !self.memory_policies.contains(&r.memory_policy) {
            let open: Vec<String> = self
                .memory_policies
                .iter()
                .map(|p| format!("{:?}", policy_name(*p)))
                .collect();
            return Err(closed(
                &format!("--memory-policy {}", policy_name(r.memory_policy)),
                "user_memory_policies",
                &format!("[{}]", open.join(", ")),
            ));
        }
        match r.pids {
            None => r.pids = Some(self.default_pids),
            Some(p) if p > self.max_pids => {
                return Err(LimitsError::Exceeds {
                    what: format!("--pids {p}"),
                    key: "max_pids",
                    max: self.max_pids.to_string(),
                })
            }
            Some(_) => {}
        }
        if let Some(d) = r.disk {
            if !self.disk {
                return Err(closed("--disk", "user_disk", "false"));
            }
            if let Some(max) = self.max_disk {
                if d > max {
                    return Err(LimitsError::Exceeds {
                        what: format!("--disk (request_disk) {}", jobcell_spec::format_size(d)),
                        key: "max_disk",
                        max: format!("{:?}", self.max_disk_text),
                    });
                }
            }
        }
        match (r.swap, self.max_swap) {
            (Some(s), Some(max)) if s > max => {
                return Err(LimitsError::Exceeds {
                    what: format!("--swap {}", jobcell_spec::format_size(s)),
                    key: "max_swap",
                    max: format!("{:?}", self.max_swap_text),
                })
            }
            // A memory limit without a swap limit lets the job swap without bound (v2's
            // memory.swap.max stays "max"; v1 writes no memsw limit). Only where the node
            // has swap: elsewhere there is nothing to bound, and v1 without swap accounting
            // would warn on every job.
            (None, Some(_)) if r.memory.is_some() && swap_on_host => r.swap = Some(0),
            _ => {}
        }
        if let Some(w) = r.io_weight {
            if w > self.max_io_weight {
                return Err(LimitsError::Exceeds {
                    what: format!("--io-weight {w}"),
                    key: "max_io_weight",
                    max: self.max_io_weight.to_string(),
                });
            }
        }
        if spec.grace > self.max_grace {
            return Err(LimitsError::Exceeds {
                what: format!("--grace {}", spec.grace.as_secs_f64()),
                key: "max_grace_secs",
                max: self.max_grace.as_secs().to_string(),
            });
        }
        if spec.dev == DevMode::Host && !self.dev_host {
            return Err(closed("--dev host", "user_dev_host", "false"));
        }
        if spec.net == NetMode::Host && !self.net_host {
            return Err(closed(
                "--net host (ask for --net none)",
                "user_net_host",
                "false",
            ));
        }
        if spec.keep_scratch && !self.keep_scratch {
            return Err(closed("--keep-scratch", "user_keep_scratch", "false"));
        }
        for d in USER_PRIVATE_DIRS {
            if !spec.private_dirs.iter().any(|p| p.as_os_str() == d) {
                spec.private_dirs.push(PathBuf::from(d));
            }
        }
        Ok(())
    }
}

/// Whether the node has swap (`SwapTotal` in /proc/meminfo), read again after 10 s: swap can
/// be turned on while the daemon runs, and jobs are checked at every start.
fn host_has_swap() -> bool {
    use std::sync::Mutex;
    use std::time::Instant;
    static SEEN: Mutex<Option<(Instant, bool)>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    match *seen {
        Some((at, has)) if at.elapsed() < Duration::from_secs(10) => has,
        _ => {
            let has = read_swap_total();
            *seen = Some((Instant::now(), has));
            has
        }
    }
}

fn read_swap_total() -> bool {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("SwapTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .is_some_and(|kib| kib > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec::new(vec!["/bin/true".into()])
    }

    #[test]
    fn swap_is_closed_to_users_by_default() {
        let l = UserLimits::default();
        let mut s = spec();
        s.resources.swap = Some(1 << 30);
        assert_eq!(
            l.apply_on(&mut s, true).unwrap_err().to_string(),
            "--swap 1.0 GiB exceeds the node's limit (limits.max_swap = \"0\")"
        );
        // A memory limit and no word on swap: none, where the node has any to give.
        let mut s = spec();
        s.resources.memory = Some(1 << 30);
        l.apply_on(&mut s, true).unwrap();
        assert_eq!(s.resources.swap, Some(0));
        let mut s = spec();
        s.resources.memory = Some(1 << 30);
        l.apply_on(&mut s, false).unwrap();
        assert_eq!(s.resources.swap, None);
        // No memory limit: nothing to add swap to.
        let mut s = spec();
        l.apply_on(&mut s, true).unwrap();
        assert_eq!(s.resources.swap, None);

        let cfg = |v: &str| LimitsConfig {
            max_swap: Some(v.into()),
            ..Default::default()
        };
        let open = UserLimits::from_config(&cfg("2G")).unwrap();
        let mut s = spec();
        s.resources.swap = Some(1 << 30);
        open.apply_on(&mut s, true).unwrap();
        s.resources.swap = Some(3 << 30);
        assert!(open.apply_on(&mut s, true).is_err());
        let any = UserLimits::from_config(&cfg("none")).unwrap();
        let mut s = spec();
        s.resources.memory = Some(1 << 30);
        any.apply_on(&mut s, true).unwrap();
        assert_eq!(s.resources.swap, None);
        assert!(UserLimits::from_config(&cfg("lots")).is_err());
    }

    #[test]
    fn defaults_fill_in_and_maximums_refuse() {
        let l = UserLimits::default();
        let mut s = spec();
        s.resources.pids = None;
        s.private_dirs.clear();
        l.apply(&mut s).unwrap();
        assert_eq!(s.resources.pids, Some(DEFAULT_PIDS));
        assert_eq!(s.private_dirs.len(), 3);
        let mut s = spec();
        s.resources.pids = Some(100_000);
        assert_eq!(
            l.apply(&mut s).unwrap_err().to_string(),
            "--pids 100000 exceeds the node's limit (limits.max_pids = 32768)"
        );
        let mut s = spec();
        s.resources.disk = Some(200 << 30);
        assert_eq!(
            l.apply(&mut s).unwrap_err().to_string(),
            "--disk (request_disk) 200.0 GiB exceeds the node's limit (limits.max_disk = \"100G\")"
        );
        for (f, key) in [
            (
                (|s: &mut JobSpec| s.resources.memory_policy = MemoryPolicy::Soft)
                    as fn(&mut JobSpec),
                "limits.user_memory_policies = [\"hard\"]",
            ),
            (|s| s.dev = DevMode::Host, "limits.user_dev_host = false"),
            (
                |s| s.keep_scratch = true,
                "limits.user_keep_scratch = false",
            ),
            (
                |s| s.resources.io_weight = Some(1000),
                "limits.max_io_weight",
            ),
            (
                |s| s.grace = Duration::from_secs(3600),
                "limits.max_grace_secs",
            ),
        ] {
            let mut s = spec();
            f(&mut s);
            let e = l.apply(&mut s).unwrap_err().to_string();
            assert!(e.contains(key) && !e.contains('\n'), "{e}");
        }
        let mut s = spec();
        s.resources.memory_policy = MemoryPolicy::None;
        assert_eq!(l.apply(&mut s), Err(LimitsError::MeasureOnly));
        let closed_net = UserLimits {
            net_host: false,
            ..UserLimits::default()
        };
        let e = closed_net.apply(&mut spec()).unwrap_err().to_string();
        assert!(e.contains("limits.user_net_host = false"), "{e}");
        let mut s = spec();
        s.net = NetMode::None;
        closed_net.apply(&mut s).unwrap();
    }

    #[test]
    fn none_is_never_open_and_bad_values_name_the_key() {
        let c = |t: &str| {
            let cfg = jobcell_spec::Config::parse(t, "x.toml").unwrap();
            UserLimits::from_config(&cfg.limits)
        };
        let e = c("[limits]\nuser_memory_policies = [\"hard\", \"none\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("user_memory_policies") && e.contains("never"),
            "{e}"
        );
        let e = c("[limits]\nmax_disk = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_disk"), "{e}");
        let e = c("[limits]\ndefault_pids = 100\nmax_pids = 10\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("default_pids"), "{e}");
        let l = c("[limits]\nmax_disk = \"none\"\nuser_memory_policies = [\"hard\", \"soft\"]\n")
            .unwrap();
        let mut s = spec();
        s.resources.disk = Some(1 << 50);
        s.resources.memory_policy = MemoryPolicy::Soft;
        l.apply(&mut s).unwrap();
    }
}
