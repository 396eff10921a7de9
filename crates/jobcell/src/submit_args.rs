//! `jobcell submit`'s options, and what makes a job's spec whole whichever form it came in
//! (a command after `--`, or a submit file).

use std::path::{Path, PathBuf};

use clap::Args;
use jobcell_spec::{JobSpec, UserSpec};

use crate::job_opts::JobOpts;
use crate::socket::SocketArg;

#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub sock: SocketArg,
    /// Run as this user (name or uid); root only. Default: the submitter (root: nobody).
    #[arg(long, short = 'u', value_name = "NAME|UID")]
    pub user: Option<String>,
    #[command(flatten)]
    pub job: JobOpts,
    /// Higher runs first (default 0).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    /// Submit held: it starts only after `jobcell release`.
    #[arg(long)]
    pub hold: bool,
    /// Submit this many copies (HTCondor's `queue N`).
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Write the job's stdout to FILE (opened as the job's user) instead of the job dir.
    #[arg(long, value_name = "FILE")]
    pub output: Option<String>,
    /// Write the job's stderr to FILE instead of the job dir.
    #[arg(long, value_name = "FILE")]
    pub error: Option<String>,
    /// Print only the job ids.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Then wait until the jobs have ended and exit like `jobcell wait` (sbatch --wait).
    #[arg(long, conflicts_with = "dry_run")]
    pub wait: bool,
    /// With FILE: print the jobs it would queue (like condor_submit -dry-run); queue nothing.
    #[arg(long, requires = "words")]
    pub dry_run: bool,
    /// With --dry-run: a JSON list of the jobs.
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    /// An HTCondor submit description file (`-` for stdin): all its jobs are queued as one
    /// cluster, or none; options given here add to or override what the file says
    /// (docs/submit-files.md). Or the command and its arguments: several words, a program
    /// (a `#!` script or a binary), or anything after `--` (optional with an --image that names
    /// Entrypoint/Cmd; after an Entrypoint they replace its Cmd, as with `docker run IMAGE ARGS`).
    #[arg(trailing_var_arg = true, value_name = "FILE|COMMAND")]
    pub words: Vec<String>,
}

/// What `jobcell submit` was given to queue.
#[derive(Debug, PartialEq)]
pub enum SubmitForm {
    /// A submit description file (`-`: stdin).
    File(PathBuf),
    /// A command and its arguments.
    Command(Vec<String>),
}

impl SubmitArgs {
    /// A single word is a submit file unless it is a program: one starting with `#!` or an
    /// ELF header (sbatch's `job.sh`). `after_dashes`: the words followed `--`, so they are a
    /// command whatever they name.
    pub fn form(&self, after_dashes: bool) -> SubmitForm {
        match self.words.as_slice() {
            [one] if !after_dashes && (one == "-" || !is_program(Path::new(one))) => {
                SubmitForm::File(PathBuf::from(one))
            }
            // The file named, not a program of that name in the job's PATH.
            [one] if !after_dashes && !one.contains('/') => {
                SubmitForm::Command(vec![format!("./{one}")])
            }
            words => SubmitForm::Command(words.to_vec()),
        }
    }
}

/// Starts like a script (`#!`) or an ELF executable. Read as the submitter; a file that
/// cannot be read is left to the submit-file reader to report.
fn is_program(p: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    let Ok(mut f) = std::fs::File::open(p) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    head[..n].starts_with(b"#!") || head[..n].starts_with(b"\x7fELF")
}

/// Whether `--` came before the command's first word on this process's command line.
pub fn words_follow_dashes(args: &[std::ffi::OsString], first_word: Option<&str>) -> bool {
    for a in args.iter().skip(2) {
        if a == "--" {
            return true;
        }
        if first_word.is_some_and(|w| a == w) {
            return false;
        }
    }
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Who a submitted job runs as: `--user`, else the submitter (root's jobs: nobody).
pub fn job_user(a: &SubmitArgs) -> anyhow::Result<UserSpec> {
    Ok(match &a.user {
        Some(u) => UserSpec::parse(u)?,
        None if is_root() => UserSpec::Name("nobody".into()),
        // SAFETY: getuid cannot fail and touches no memory.
        None => UserSpec::Uid(unsafe { libc::getuid() }),
    })
}

/// Sets the job's user and, for a user's job without `--pids`, leaves the limit to the node;
/// then checks the whole spec.
pub fn finish_spec(spec: &mut JobSpec, user: UserSpec, a: &SubmitArgs) -> anyhow::Result<()> {
    spec.user = user;
    if !is_root() && a.job.pids.is_none() {
        // The node's default for users (`[limits] default_pids`) applies.
        spec.resources.pids = None;
    }
    spec.validate_request()?;
    Ok(())
}
