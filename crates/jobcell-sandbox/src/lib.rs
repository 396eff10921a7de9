pub mod plan;
pub mod scratch;
pub mod syscall;
