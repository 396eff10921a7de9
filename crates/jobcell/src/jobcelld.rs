//! `jobcelld`: the node agent (the daemon, and the per-job supervisors it may exec). A binary
//! of its own so that `jobcell`, which every `jobcell run` starts, carries no async runtime or
//! HTTP server: the daemon's code was a third of jobcell's relocations, each launch's start-up
//! paid for them (docs/ARCHITECTURE.md). `jobcell daemon ARGS` runs this binary from the same
//! directory.

use clap::{Parser, Subcommand};

mod cmd_daemon;
// Shared with jobcell; not all of it is needed here.
#[allow(dead_code)]
mod config;
mod exit;

#[derive(Parser, Debug)]
#[command(
    name = "jobcelld",
    version,
    about = "The jobcell node agent: a durable queue, scheduling within the node's cores and memory, one supervisor per job",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    daemon: cmd_daemon::DaemonArgs,
    #[command(subcommand)]
    internal: Option<Internal>,
}

#[derive(Subcommand, Debug)]
enum Internal {
    /// (internal) Supervise one job for the daemon (JOBCELL_EXEC_SUPERVISOR=1).
    #[command(hide = true)]
    Supervise(cmd_daemon::SuperviseArgs),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() {
                exit::EXIT_JOBCELL_ERROR
            } else {
                0
            });
        }
    };
    let result = match cli.internal {
        Some(Internal::Supervise(a)) => cmd_daemon::supervise(a),
        None => cmd_daemon::run(cli.daemon),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("jobcelld: {}", exit::one_line(&e));
            std::process::exit(exit::EXIT_JOBCELL_ERROR);
        }
    }
}
