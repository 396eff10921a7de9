// std's runtime start is skipped (see `main` below): every launch starts this binary.
#![cfg_attr(not(test), no_main)]

use clap::{Parser, Subcommand};

mod cmd_client;
mod cmd_docs;
mod cmd_image;
mod cmd_run;
mod cmd_selftest;
mod cmd_show;
mod cmd_spank;
mod cmd_submit_file;
mod cmd_top;
mod cmd_wait;
mod cmd_watch;
mod config;
mod exit;
mod image_tool;
mod job_opts;
mod localtime;
mod paths;
mod socket;
mod submit_args;

use exit::{one_line, EXIT_JOBCELL_ERROR};
use jobcell_api::types::BulkAction;

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
    #[command(about = RUN_ABOUT)]
    Run(Box<cmd_run::RunArgs>),
    /// Manage the image registry.
    #[command(subcommand)]
    Image(cmd_image::ImageCmd),
    /// Queue a job on this node's daemon: jobcell submit [OPTIONS] COMMAND [ARGS...], or a
    /// submit file: jobcell submit [OPTIONS] FILE
    Submit(Box<submit_args::SubmitArgs>),
    /// List unfinished jobs (everyone's), like condor_q: a line per owner and batch, or
    /// -nobatch a line per job; -hold, -run, -idle filter.
    Q(cmd_client::ListArgs),
    /// Remove jobs (stopping those that run), like condor_rm.
    Rm(cmd_client::RmArgs),
    /// Hold jobs, like condor_hold: they will not start (running ones are stopped and held);
    /// --reason says why.
    Hold(cmd_client::HoldArgs),
    /// Release held jobs back to the queue, like condor_release.
    Release(cmd_client::ActArgs),
    /// Freeze running jobs (their cgroups' freezer), like condor_suspend.
    Suspend(cmd_client::ActArgs),
    /// Thaw suspended jobs, like condor_continue.
    Continue(cmd_client::ActArgs),
    /// Change an attribute of queued or held jobs, like condor_qedit.
    #[command(
        override_usage = "jobcell qedit [OPTIONS] ID|C.P|C. ... ATTR VALUE\n       \
                                jobcell qedit [OPTIONS] -constraint EXPR ATTR VALUE"
    )]
    Qedit(cmd_client::QeditArgs),
    /// Finished jobs with exit status and usage, newest first, like condor_history.
    History(cmd_client::ListArgs),
    /// The node: cpus and memory total/allocated/used, jobs by state.
    Status(cmd_client::StatusArgs),
    /// Print a job's stdout (or --stderr); -f follows it until the job ends.
    Output(cmd_client::OutputArgs),
    /// A job's summary and its CPU and memory over its run, drawn in the terminal.
    Show(cmd_show::ShowArgs),
    /// Wait until the jobs have ended, like condor_wait; exit 0 if all completed with 0.
    Wait(cmd_wait::WaitArgs),
    /// A live view of the node and its running jobs (CPU, memory, IO), like top.
    Top(cmd_top::TopArgs),
    /// One progress line per cluster until the jobs end, like condor_watch_q.
    Watch(cmd_watch::WatchArgs),
    /// Run the node agent in the foreground (the jobcelld binary beside this one; see
    /// `jobcell daemon --help`).
    #[command(disable_help_flag = true)]
    Daemon {
        /// jobcelld's options.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Attack this node's isolation from inside real jobs (run as root) and print the table.
    Selftest(cmd_selftest::SelftestArgs),
    /// Print a shell completion script: bash, zsh or fish.
    Completions(cmd_docs::CompletionsArgs),
    /// Write the man pages (jobcell(1), one per subcommand) into DIR, or jobcell(1) to stdout.
    Man(cmd_docs::ManArgs),
    /// (internal) One attack syscall from inside a selftest job.
    #[command(hide = true, name = "selftest-probe")]
    SelftestProbe(cmd_selftest::ProbeArgs),
}

const RUN_ABOUT: &str =
    "Run one job isolated, in the foreground: jobcell run [OPTIONS] [--] COMMAND [ARGS...]";

/// `jobcell run` parsed without the other subcommands. Every launch starts this binary, and
/// building clap's whole command tree first (every subcommand's arguments, ~150 KiB of heap)
/// was a tenth of a launch's start-up; `run`'s own options, help and errors are the same.
#[derive(Parser, Debug)]
#[command(name = "jobcell", version)]
struct RunOnly {
    #[command(subcommand)]
    cmd: RunCmd,
}

#[derive(Subcommand, Debug)]
enum RunCmd {
    #[command(about = RUN_ABOUT)]
    Run(Box<cmd_run::RunArgs>),
}

/// The C entry point instead of std's `lang_start`. Every `jobcell run` and every supervisor
/// starts this binary, and std's start-up reads and parses /proc/self/maps (to find the main
/// thread's stack for its overflow message) and sets up an alternate signal stack: ~0.06 ms
/// of each launch (`perf stat`). What of it jobcell needs is done here: fds 0–2 that are
/// closed get /dev/null (so no file jobcell opens becomes a job's stdout), and SIGPIPE is
/// ignored (a closed pipe is an EPIPE error, e.g. an init that died before "go"). A stack
/// overflow is then a plain SIGSEGV without std's one-line message. `std::env::args` works
/// as before (glibc hands std argc/argv before main).
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    for fd in 0..3 {
        // SAFETY: fcntl/open/signal with constant arguments.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0 {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null < 0 {
                    libc::abort();
                }
            }
        }
    }
    // SAFETY: ignoring SIGPIPE installs no handler code; no other thread exists yet.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    jobcell_main();
}

#[cfg(test)]
fn main() {
    jobcell_main()
}

fn jobcell_main() -> ! {
    // Exec'd by the SPANK plugin in place of a Slurm task (see cmd_spank.rs); the variable is
    // removed from the job's environment, so a `jobcell` inside the job parses its arguments.
    if let Some(argv0) = std::env::var_os(cmd_spank::ARGV0_VAR) {
        std::process::exit(cmd_spank::main(argv0));
    }
    let parsed = if std::env::args_os().nth(1).is_some_and(|a| a == "run") {
        RunOnly::try_parse().map(|r| match r.cmd {
            RunCmd::Run(a) => Cli { cmd: Cmd::Run(a) },
        })
    } else {
        match cmd_client::condor_style_args(std::env::args_os().collect()) {
            Ok(args) => Cli::try_parse_from(args),
            Err(e) => {
                eprintln!("jobcell: {e}");
                std::process::exit(EXIT_JOBCELL_ERROR);
            }
        }
    };
    let cli = match parsed {
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
        Cmd::Submit(a) => cmd_client::submit(*a),
        Cmd::Q(a) => cmd_client::q(a),
        Cmd::Rm(a) => cmd_client::rm(a),
        Cmd::Hold(a) => cmd_client::act(BulkAction::Hold, a.act, a.reason),
        Cmd::Release(a) => cmd_client::act(BulkAction::Release, a, None),
        Cmd::Suspend(a) => cmd_client::act(BulkAction::Suspend, a, None),
        Cmd::Continue(a) => cmd_client::act(BulkAction::Continue, a, None),
        Cmd::Qedit(a) => cmd_client::qedit(a),
        Cmd::History(a) => cmd_client::history(a),
        Cmd::Status(a) => cmd_client::status(a),
        Cmd::Output(a) => cmd_client::output(a),
        Cmd::Show(a) => cmd_show::show(a),
        Cmd::Wait(a) => cmd_wait::wait(a),
        Cmd::Top(a) => cmd_top::top(a),
        Cmd::Watch(a) => cmd_watch::watch(a),
        Cmd::Daemon { args } => exec_jobcelld(args),
        Cmd::Selftest(a) => cmd_selftest::run(a),
        Cmd::SelftestProbe(a) => cmd_selftest::probe(a),
        Cmd::Completions(a) => cmd_docs::completions::<Cli>(a).map_err(Into::into),
        Cmd::Man(a) => cmd_docs::man::<Cli>(a).map_err(Into::into),
    };
    match result {
        Ok(code) => std::process::exit(code),
        // The reader has what it wanted (`jobcell q | head -1`): end quietly, with 0, as
        // `jobcell image ls` (which skips what it cannot write) does.
        Err(e) if stdout_lost_its_reader(&e) => std::process::exit(0),
        Err(e) => {
            eprintln!("jobcell: {}", one_line(&e));
            std::process::exit(EXIT_JOBCELL_ERROR);
        }
    }
}

/// The command failed on EPIPE, and it was stdout's: its pipe or socket has no reader (an
/// EPIPE from the daemon's socket is an error to report).
fn stdout_lost_its_reader(e: &anyhow::Error) -> bool {
    let epipe = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if !epipe {
        return false;
    }
    let mut p = libc::pollfd {
        fd: 1,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd, no waiting.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// `jobcell daemon ARGS` is `jobcelld ARGS`, from the directory this binary is in (where
/// `cargo build` and an install put both). Exec'd, so the daemon keeps this pid (systemd's
/// `Type=notify`, a caller's `kill`).
fn exec_jobcelld(args: Vec<std::ffi::OsString>) -> anyhow::Result<i32> {
    use anyhow::Context;
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe().context("finding the jobcell binary")?;
    let d = me.with_file_name("jobcelld");
    let e = std::process::Command::new(&d).args(args).exec();
    Err(e).with_context(|| {
        format!(
            "jobcell daemon: cannot run {} (the node agent, installed beside jobcell)",
            d.display()
        )
    })
}
