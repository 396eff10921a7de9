//! # jobcell-api — the node agent's HTTP/JSON API, as a library
//!
//! The request and response types of `jobcelld`'s API ([`types`], JSON on the wire, documented
//! in docs/api.yaml) and a blocking client for its Unix socket ([`Client`], one method per
//! endpoint). The daemon serves these same types; the `jobcell` CLI, which every launch
//! starts, talks to the daemon only through this crate, so it links no async runtime or HTTP
//! library.

pub mod client;
pub mod compact;
pub mod submit_file;
pub mod types;

pub use client::{new_submit_key, Client, ClientError};

/// Where the daemon listens when neither its config nor the caller names a socket.
pub const DEFAULT_SOCKET: &str = "/run/jobcell/api.sock";
