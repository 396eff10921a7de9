//! What a job may use, from the command line, a submit file or the daemon's JSON down to the
//! cgroup files: [`Resources`] is the one description, validated here once; the cgroup layer
//! applies it as given.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::size::{parse_size, SizeError, Unit};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ResourceError {
    #[error("--{0} {1} must be a number greater than 0")]
    BadCpus(&'static str, String),
    #[error("--{0} 0 must be at least 1")]
    ZeroCount(&'static str),
    #[error("--{0} must be at least 1 byte")]
    ZeroSize(&'static str),
    #[error("--io-weight {0} must be between 1 and 10000")]
    BadIoWeight(u16),
    #[error("--cpuset {list:?}: {reason}")]
    BadCpuset { list: String, reason: String },
    #[error("--{flag} {value}: {source}")]
    BadSize {
        flag: &'static str,
        value: String,
        #[source]
        source: SizeError,
    },
}

/// How [`Resources::memory`] is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MemoryPolicy {
    /// Hard limit; the job is OOM-killed (as a group on v2) past it.
    #[default]
    Hard,
    /// Protected/soft target: the job may exceed it while the host has free memory.
    Soft,
    /// Measure only.
    None,
}

impl std::str::FromStr for MemoryPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hard" => Ok(Self::Hard),
            "soft" => Ok(Self::Soft),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "memory policy '{s}' is not one of hard, soft, none"
            )),
        }
    }
}

/// What the job may use; applied through its cgroup. Sizes are bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Proportional CPU weight in cpus (fractional allowed).
    pub cpus: Option<f64>,
    /// Hard CPU quota in cores.
    pub cpu_limit: Option<f64>,
    /// Pinning, kernel cpu-list syntax ("0-1,3"); must be within the parent's effective cpus.
    pub cpuset: Option<String>,
    pub memory: Option<u64>,
    pub memory_policy: MemoryPolicy,
    pub swap: Option<u64>,
    /// Where the kernel starts throttling the job and reclaiming its memory, without killing
    /// it (v2 `memory.high`; v1, which has no such throttle, `memory.soft_limit_in_bytes`).
    #[serde(default)]
    pub memory_high: Option<u64>,
    pub pids: Option<u64>,
    /// IO weight on the v2 scale, 1..=10000 (default 100).
    pub io_weight: Option<u16>,
    /// Bytes the job may write in its scratch (request_disk): a filesystem of that size of
    /// its own, so a full one is ENOSPC inside the job and never a full host disk.
    #[serde(default)]
    pub disk: Option<u64>,
    /// The node's bound on scratch (`[scratch] disk`) for a job without `disk`: its scratch
    /// dir is a subvolume of the scratch pool that may hold at most this many bytes.
    #[serde(default)]
    pub scratch_bound: Option<u64>,
}

/// A finite default: a fork bomb stops here, and real jobs (threads count too) rarely come near.
pub const DEFAULT_PIDS: u64 = 4096;

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpus: None,
            cpu_limit: None,
            cpuset: None,
            memory: None,
            memory_policy: MemoryPolicy::Hard,
            swap: None,
            memory_high: None,
            pids: Some(DEFAULT_PIDS),
            io_weight: None,
            disk: None,
            scratch_bound: None,
        }
    }
}

/// A limit that is one number written to one cgroup file. Its `Resources` field (the JSON
/// name), command-line option, submit-file command and cgroup files meet in this row, so a
/// new one is a field, a row and a command-line flag; the cgroup layer and the submit parser
/// go by [`FILE_LIMITS`].
#[derive(Debug)]
pub struct FileLimit {
    /// The [`Resources`] field, as JSON names it.
    pub field: &'static str,
    /// The `jobcell run` / `jobcell submit` option, without `--`.
    pub flag: &'static str,
    /// The submit-file command, where the limit has one.
    pub submit: Option<&'static str>,
    /// What a bare number means for a size; `None` for a count.
    pub unit: Option<Unit>,
    pub get: fn(&Resources) -> Option<u64>,
    pub set: fn(&mut Resources, u64),
    /// The cgroup v2 file.
    pub v2: &'static str,
    /// The cgroup v1 file; its controller is the part of the name before the first dot.
    pub v1: &'static str,
}

pub const FILE_LIMITS: &[FileLimit] = &[
    FileLimit {
        field: "pids",
        flag: "pids",
        submit: None,
        unit: None,
        get: |r| r.pids,
        set: |r, n| r.pids = Some(n),
        v2: "pids.max",
        v1: "pids.max",
    },
    FileLimit {
        field: "memory_high",
        flag: "memory-high",
        submit: Some("jobcell_memory_high"),
        unit: Some(Unit::MiB),
        get: |r| r.memory_high,
        set: |r, n| r.memory_high = Some(n),
        v2: "memory.high",
        // v1 has no throttle: the soft limit is the closest, the reclaim target under pressure.
        // With a soft --memory (the same file) the lower of the two is written.
        v1: "memory.soft_limit_in_bytes",
    },
];

impl FileLimit {
    /// The row for [`Resources`] field `field`.
    pub fn by_field(field: &str) -> Option<&'static FileLimit> {
        FILE_LIMITS.iter().find(|f| f.field == field)
    }

    /// Parse `value` as given to the command-line option and set it in `r`.
    pub fn parse_into(&self, r: &mut Resources, value: &str) -> Result<(), ResourceError> {
        let n = match self.unit {
            Some(unit) => parse_size(value, unit),
            None => value
                .trim()
                .parse::<u64>()
                .map_err(|_| SizeError::Malformed(value.to_string())),
        }
        .map_err(|source| ResourceError::BadSize {
            flag: self.flag,
            value: value.to_string(),
            source,
        })?;
        (self.set)(r, n);
        Ok(())
    }
}

impl Resources {
    /// Every check the cgroup layer relies on; it applies validated resources as they are.
    pub fn validate(&self) -> Result<(), ResourceError> {
        for (v, name) in [(self.cpus, "cpus"), (self.cpu_limit, "cpu-limit")] {
            if let Some(c) = v {
                if !(c.is_finite() && c > 0.0) {
                    return Err(ResourceError::BadCpus(name, c.to_string()));
                }
            }
        }
        if let Some(w) = self.io_weight {
            if !(1..=10000).contains(&w) {
                return Err(ResourceError::BadIoWeight(w));
            }
        }
        if self.memory == Some(0) {
            return Err(ResourceError::ZeroSize("memory"));
        }
        for f in FILE_LIMITS {
            if (f.get)(self) == Some(0) {
                return Err(match f.unit {
                    Some(_) => ResourceError::ZeroSize(f.flag),
                    None => ResourceError::ZeroCount(f.flag),
                });
            }
        }
        if let Some(list) = &self.cpuset {
            parse_cpu_list(list).map_err(|reason| ResourceError::BadCpuset {
                list: list.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    /// Whether the job asks for a limit that has no default (pids always has one).
    /// The limits asked for, as the options that ask for them (`--memory 1.0 GiB`), for
    /// saying which are not enforced.
    pub fn explicit_limit_flags(&self) -> Vec<String> {
        let defaults = Resources::default();
        let mut flags = Vec::new();
        let mut say = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                flags.push(format!("--{flag} {v}"));
            }
        };
        say("cpus", self.cpus.map(|c| c.to_string()));
        say("cpu-limit", self.cpu_limit.map(|c| c.to_string()));
        say("cpuset", self.cpuset.clone());
        say("memory", self.memory.map(crate::format_size));
        say("swap", self.swap.map(crate::format_size));
        say("io-weight", self.io_weight.map(|w| w.to_string()));
        for f in FILE_LIMITS {
            if (f.get)(&defaults).is_none() {
                let v = (f.get)(self);
                say(
                    f.flag,
                    match f.unit {
                        Some(_) => v.map(crate::format_size),
                        None => v.map(|n| n.to_string()),
                    },
                );
            }
        }
        flags
    }

    pub fn has_explicit_limits(&self) -> bool {
        let defaults = Resources::default();
        self.cpus.is_some()
            || self.cpu_limit.is_some()
            || self.cpuset.is_some()
            || self.memory.is_some()
            || self.swap.is_some()
            || self.io_weight.is_some()
            || FILE_LIMITS
                .iter()
                .any(|f| (f.get)(&defaults).is_none() && (f.get)(self).is_some())
    }
}

/// Parse a kernel cpu list ("0-1,3"). Empty input is an error: an empty cpuset would make the
/// job unrunnable.
pub fn parse_cpu_list(list: &str) -> Result<BTreeSet<u32>, String> {
    let list = list.trim();
    if list.is_empty() {
        return Err("empty cpu list".into());
    }
    let mut out = BTreeSet::new();
    for part in list.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let num = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("{part:?} is not a cpu number or range"))
        };
        let (a, b) = (num(a)?, num(b)?);
        if a > b {
            return Err(format!("range {part:?} is backwards"));
        }
        if b >= 1 << 16 {
            return Err(format!("cpu {b} is out of range"));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_catches_bad_values() {
        let bad = |f: fn(&mut Resources)| {
            let mut r = Resources::default();
            f(&mut r);
            r.validate().unwrap_err()
        };
        assert!(matches!(
            bad(|r| r.cpus = Some(0.0)),
            ResourceError::BadCpus("cpus", _)
        ));
        assert!(matches!(
            bad(|r| r.cpu_limit = Some(f64::NAN)),
            ResourceError::BadCpus("cpu-limit", _)
        ));
        assert_eq!(
            bad(|r| r.pids = Some(0)).to_string(),
            "--pids 0 must be at least 1"
        );
        assert_eq!(
            bad(|r| r.memory = Some(0)),
            ResourceError::ZeroSize("memory")
        );
        assert_eq!(
            bad(|r| r.io_weight = Some(0)),
            ResourceError::BadIoWeight(0)
        );
        let e = bad(|r| r.cpuset = Some("0-x".into())).to_string();
        assert!(e.starts_with("--cpuset \"0-x\": "), "{e}");
        assert_eq!(Resources::default().validate(), Ok(()));
    }

    #[test]
    fn file_limits_name_their_field_flag_and_files_alike() {
        for f in FILE_LIMITS {
            assert_eq!(f.flag, f.field.replace('_', "-"), "{f:?}");
            if let Some(cmd) = f.submit {
                assert_eq!(cmd, format!("jobcell_{}", f.field), "{f:?}");
            }
            for file in [f.v1, f.v2] {
                assert!(file.split_once('.').is_some(), "{f:?}");
            }
            let mut r = Resources::default();
            (f.set)(&mut r, 7);
            assert_eq!((f.get)(&r), Some(7), "{f:?}");
            let json = serde_json::to_value(&r).unwrap();
            assert_eq!(json[f.field], 7, "{f:?}");
        }
    }

    #[test]
    fn options_parse_in_their_unit() {
        let mut r = Resources::default();
        let pids = FileLimit::by_field("pids").unwrap();
        pids.parse_into(&mut r, "12").unwrap();
        assert_eq!(r.pids, Some(12));
        let e = pids.parse_into(&mut r, "lots").unwrap_err().to_string();
        assert!(e.starts_with("--pids lots: "), "{e}");
    }

    #[test]
    fn explicit_limits_leave_out_the_pids_default() {
        let mut r = Resources::default();
        assert!(!r.has_explicit_limits());
        r.pids = Some(20);
        assert!(!r.has_explicit_limits());
        r.memory_high = Some(1 << 20);
        assert!(r.has_explicit_limits());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("3,2,1, 7").unwrap(),
            [1, 2, 3, 7].into_iter().collect()
        );
        for bad in ["", "a", "3-1", "1-", "70000"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad}");
        }
    }
}
