//! The job's report: how it ended, what it used, and what isolation was applied.
//! The schema is documented in docs/REPORT.md; bump [`SCHEMA`] on any incompatible change.

use std::path::PathBuf;
use std::time::Duration;

use jobcell_spec::{DevMode, JobSpec};
use serde::Serialize;

use crate::identity::Identity;

pub const SCHEMA: &str = "jobcell.report/1";

#[derive(Debug, Clone, Serialize)]
pub struct Isolation {
    pub namespaces: Vec<&'static str>,
    pub user: Identity,
    pub private_dirs: Vec<PathBuf>,
    pub scratch: PathBuf,
    pub scratch_kept: bool,
    /// The node's bound on the job's scratch (`[scratch] disk`); null when the job has its
    /// own `--disk` filesystem or its scratch is not bounded.
    pub scratch_bound_bytes: Option<u64>,
    pub image: Option<String>,
    pub dev: DevMode,
    pub no_new_privs: bool,
    pub capabilities: &'static str,
    pub rootless: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskUsage {
    /// What the job asked for (`--disk` / request_disk).
    pub limit_bytes: u64,
    /// The filesystem's size (the request plus ext4's overhead).
    pub size_bytes: u64,
    pub used_bytes: u64,
    /// Less than 1 MiB was left: a write of the job got ENOSPC.
    pub full: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub command: Vec<String>,
    /// The job's exit code, or null when it died of a signal.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// What `jobcell run` exits with: the code, or 128+signal.
    pub status: i32,
    pub started_at: f64,
    pub wall_time_s: f64,
    pub cpu_user_us: u64,
    pub cpu_system_us: u64,
    /// Where the CPU figures come from: `rusage` (the init and every process it reaped) or
    /// `cgroup` (the kernel's accounting of the job's cgroup).
    pub cpu_source: &'static str,
    /// Filled by the cgroup layer when the job had a cgroup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<serde_json::Value>,
    pub oom_killed: bool,
    /// The size-limited scratch (`--disk`), measured at the job's end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskUsage>,
    pub isolation: Isolation,
    pub warnings: Vec<String>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: &JobSpec,
        exit: JobExit,
        wall: Duration,
        started_at: f64,
        cpu_user_us: u64,
        cpu_system_us: u64,
        isolation: Isolation,
        warnings: Vec<String>,
    ) -> Self {
        let (exit_code, signal) = match exit {
            JobExit::Code(c) => (Some(c), None),
            JobExit::Signal(s) => (None, Some(s)),
        };
        Report {
            schema: SCHEMA,
            command: spec.argv.clone(),
            exit_code,
            signal,
            status: exit.shell_code(),
            started_at,
            wall_time_s: wall.as_secs_f64(),
            cpu_user_us,
            cpu_system_us,
            cpu_source: "rusage",
            usage: None,
            oom_killed: false,
            disk: None,
            isolation,
            warnings,
        }
    }
}

/// How the job ended, and the code jobcell itself exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobExit {
    Code(i32),
    Signal(i32),
}

impl JobExit {
    /// Like a shell: the code, or 128+N for death by signal N.
    pub fn shell_code(self) -> i32 {
        match self {
            JobExit::Code(c) => c,
            JobExit::Signal(s) => 128 + s,
        }
    }
}
