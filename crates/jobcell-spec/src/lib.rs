//! The description of a jobcell job: what to run, as whom, with which files and limits.
//!
//! This crate does no syscalls. It parses command-line values and config files into a
//! [`JobSpec`] and validates it, so that every bad input is reported as one clear line before the
//! launcher creates anything.

mod config;
mod resources;
mod size;
mod spec;
pub mod submit;

pub use config::{
    with_job_uids, Config, ConfigError, ImportConfig, LimitsConfig, ScratchConfig, UidRange,
    UsageConfig, DEFAULT_CONFIG_PATH, DEFAULT_JOB_UIDS, DEFAULT_SCRATCH_DISK,
};
pub use resources::{
    parse_cpu_list, FileLimit, MemoryPolicy, ResourceError, Resources, DEFAULT_PIDS, FILE_LIMITS,
};
pub use size::{format_size, parse_condor_size, parse_size, SizeError, Unit};
pub use spec::{
    clean_abs_path, parse_bind, parse_env, DevMode, JobSpec, MountSpec, NetMode, SpecError,
    UserSpec, DEFAULT_PRIVATE_DIRS,
};
