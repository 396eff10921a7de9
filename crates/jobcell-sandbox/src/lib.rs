//! jobcell's launcher: the only code that clones namespaces. See [`launch`] for the sequence.

mod btrfs;
pub mod disk;
pub mod fsid;
pub mod identity;
pub mod jobuid;
pub mod launch;
pub mod plan;
pub mod quota;
pub mod report;
pub mod scratch;
pub mod seccomp;
pub mod selftest;
pub mod sync;
pub mod syscall;

pub use launch::{
    launch, launch_task, unenforced_limits_warning, JobExit, Launch, LaunchError, Outcome,
    SchedulerTask, ScratchMount, UsageSampler,
};
pub use report::Report;
