//! # jobcell-node — the node agent
//!
//! `jobcell daemon` owns a node's cores and memory: it queues jobs in SQLite, starts each one
//! under its own `jobcell supervise` process, and answers an HTTP/JSON API on a Unix socket.
//!
//! ```text
//!  clients ──HTTP/unix socket──► api (tokio) ──Cmd──► core thread (owns SQLite + queue)
//!                                                        │ group commit, then effects:
//!                                                        ▼
//!                     spawner process (forked before tokio) ──fork,setsid,fork,exec──►
//!                         jobcell supervise <job-dir> <attempt>  ──► launcher ──► job
//!  pidfd watchers (tokio AsyncFd) ──SupervisorExited──► core: read result-N.json, record
//! ```
//!
//! The job directory is the contract between daemon and supervisor ([`jobdir`]): the daemon
//! hands the supervisor its spec (in the spawn request; `spec.json` for an exec'd one); the
//! supervisor atomically claims `claim-<attempt>` (so a daemon recovering from a crash can
//! prove a job never started by claiming it first), writes its output files and finally
//! `result-<attempt>.json` (tmp + rename; made durable by the daemon's commit, not by an fsync
//! of its own).

pub mod api;
pub mod core;
pub mod daemon;
pub mod jobdir;
pub mod limits;
pub mod machine;
pub mod resources;
pub mod space;
pub mod spawner;
pub mod store;
pub mod supervise;
pub mod sys;
pub mod usage;
pub mod userlog;

pub use daemon::{run_daemon, DaemonError, DaemonOptions};
// The API's wire types and client live in jobcell-api (no runtime, for the CLI); the daemon
// serves and stores the same types.
pub use jobcell_api::{client, types};
