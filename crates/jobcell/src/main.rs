use clap::{Parser, Subcommand};

mod cmd_image;
mod cmd_run;
mod cmd_spank;
mod config;

#[derive(Parser, Debug)]
#[command(
    name = "jobcell",
    version,
    about = "Run batch jobs isolated from each other and from the host"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one job isolated, in the foreground: jobcell run [OPTIONS] -- COMMAND [ARGS...]
    Run(Box<cmd_run::RunArgs>),
    /// Manage the image registry.
    #[command(subcommand)]
    Image(cmd_image::ImageCmd),
}

/// jobcell's own failures exit 125 (like `env` and container runtimes); 126/127 and the job's
/// own codes come from the job.
pub(crate) const EXIT_JOBCELL_ERROR: i32 = 125;

fn main() {
    // Exec'd by the SPANK plugin in place of a Slurm task (see cmd_spank.rs); the variable is
    // removed from the job's environment, so a `jobcell` inside the job parses its arguments.
    if let Some(argv0) = std::env::var_os(cmd_spank::ARGV0_VAR) {
        std::process::exit(cmd_spank::main(argv0));
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                EXIT_JOBCELL_ERROR
            } else {
                0
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let result = match cli.cmd {
        Cmd::Run(a) => cmd_run::run(*a),
        Cmd::Image(c) => cmd_image::run(c),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("jobcell: {e:#}");
            std::process::exit(EXIT_JOBCELL_ERROR);
        }
    }
}
