//! jobcell's launcher: the only code that clones namespaces. See [`launch`] for the sequence.

pub mod identity;
pub mod launch;
pub mod plan;
pub mod report;
pub mod scratch;
pub mod sync;
pub mod syscall;

pub use launch::{launch, JobExit, Launch, LaunchError, Outcome};
pub use report::Report;
