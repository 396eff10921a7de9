//! HTCondor's submit description language (`condor_submit` files), for what makes sense on one
//! node: the same commands, macros, quoting and `queue` forms, deriving the same job attributes
//! HTCondor derives (checked against HTCondor's own parser by `tests/submit_differential.rs`).
//!
//! The crate does no I/O: everything that touches the system (`queue ... from FILE`,
//! `matching` globs, `$ENV()`, `getenv`, the submit directory) goes through [`SubmitEnv`], which
//! the binary implements and tests fake.
//!
//! Deliberate departures from `condor_submit` (each reported, never silent):
//! - `request_memory`, `request_disk` and `request_cpus` that are ClassAd expressions are
//!   evaluated against the job's ad at submit time (HTCondor keeps the expression and
//!   evaluates it when matching); one that is not a number there (`MemoryUsage * 2`) is an
//!   error naming the line.
//! - Universes other than vanilla, and commands that need a pool (grid, docker/container,
//!   GPUs, cron, x509...), are errors naming the line. Pool-only commands that change nothing on
//!   one node (`rank`, `notification`...) are warnings.
//! - A name that is no command and that no macro refers to gets a warning (usually a typo);
//!   `condor_submit` says nothing.
//! - Undefined `$(NAME)` expands to nothing, as in HTCondor, with a warning naming the line.
//! - A queue statement that yields no job, or a file that queues nothing, is an error
//!   (`condor_submit` would submit an empty cluster).

mod expand;
mod parse;
mod policy;
mod quote;
mod requests;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::spec::JobSpec;

pub use parse::parse_submit;

/// The most jobs one cluster holds: a submit file's `queue` statements together, and
/// `jobcell submit --count` (the daemon enforces the same number for both).
pub const MAX_CLUSTER_JOBS: u64 = 100_000;
pub use quote::{
    args_to_v2_raw, env_to_v2_raw, parse_arguments, parse_environment, v2_raw_readable,
};

/// Everything the parser needs from the system. Paths are relative to [`SubmitEnv::cwd`]
/// unless absolute, like `condor_submit`'s.
pub trait SubmitEnv {
    /// Contents of a file (`queue VAR from FILE`).
    fn read_file(&self, path: &Path) -> io::Result<String>;
    /// Paths matching a shell glob, sorted, as written relative to the cwd; directories end
    /// with `/` (like glob(3)'s GLOB_MARK).
    fn glob(&self, pattern: &str) -> Vec<String>;
    /// One variable of the submitter's environment (`$ENV(NAME)`).
    fn env(&self, name: &str) -> Option<String>;
    /// The submitter's whole environment (`getenv`).
    fn env_vars(&self) -> Vec<(String, String)>;
    /// The directory `condor_submit` would run in: relative executables, initialdir and
    /// globs resolve against it.
    fn cwd(&self) -> PathBuf;
    /// Whether a directory exists (HTCondor refuses a missing initialdir).
    fn is_dir(&self, path: &Path) -> bool;
    /// Randomness for `$RANDOM_INTEGER()` / `$RANDOM_CHOICE()`.
    fn random_u64(&self) -> u64 {
        0x9e37_79b9_7f4a_7c15
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitOptions {
    /// The cluster id `$(Cluster)` expands to (`condor_submit -dry-run` uses 1).
    pub cluster_id: u64,
}

impl Default for SubmitOptions {
    fn default() -> Self {
        SubmitOptions { cluster_id: 1 }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("line {line}: {msg}")]
    Syntax { line: usize, msg: String },
    #[error("line {line}: {command} = {value}: {msg}")]
    BadValue {
        line: usize,
        command: String,
        value: String,
        msg: String,
    },
    #[error("line {line}: {what} is not supported by jobcell ({why})")]
    Unsupported {
        line: usize,
        what: String,
        why: String,
    },
    #[error("line {line}: cannot read {path}: {msg}")]
    Read {
        line: usize,
        path: String,
        msg: String,
    },
    #[error("line {line}: no executable is set for the jobs of this queue statement")]
    NoExecutable { line: usize },
    #[error("no queue statement: the file would queue nothing (end it with `queue`)")]
    NoQueue,
    #[error("line {line}: this queue statement yields no job")]
    EmptyQueue { line: usize },
    #[error("line {line}: macro {name} expands too deeply (does it refer to itself?)")]
    Recursion { line: usize, name: String },
    #[error("line {line}: the file queues more than {MAX_CLUSTER_JOBS} jobs, the most one cluster holds")]
    TooManyJobs { line: usize },
}

impl SubmitError {
    /// The submit file line at fault, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            SubmitError::Syntax { line, .. }
            | SubmitError::BadValue { line, .. }
            | SubmitError::Unsupported { line, .. }
            | SubmitError::Read { line, .. }
            | SubmitError::NoExecutable { line }
            | SubmitError::EmptyQueue { line }
            | SubmitError::Recursion { line, .. }
            | SubmitError::TooManyJobs { line } => Some(*line),
            SubmitError::NoQueue => None,
        }
    }
}

/// Something jobcell accepted but the user should know about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub line: usize,
    pub msg: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

/// The value of a custom job attribute (`+Attr = value`, `MY.Attr = value`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum CustomValue {
    String(String),
    Int(i64),
    Real(f64),
    Bool(bool),
    /// Any other ClassAd expression, as written (after macro expansion).
    Expr {
        expr: String,
    },
}

/// One job as `condor_submit` would queue it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubmitJob {
    pub cluster_id: u64,
    pub proc_id: u64,
    /// Absolute (a relative `executable` resolves against the submit directory, as HTCondor's
    /// `Cmd`; not against initialdir). Empty for a job in an image that names none: it runs
    /// the image's Entrypoint + Cmd (its `arguments` replacing Cmd).
    pub executable: String,
    /// The line of the `executable` command in effect.
    #[serde(skip)]
    pub executable_line: usize,
    /// `transfer_executable` (default true); false: the executable is a path on the node,
    /// not a file of the submitter's, and is not checked at submit time.
    #[serde(skip)]
    pub transfer_executable: bool,
    /// The arguments (without the executable).
    pub arguments: Vec<String>,
    /// `executable` followed by `arguments`.
    pub argv: Vec<String>,
    /// The `arguments` value used the old (V1) syntax: HTCondor writes `Args`, not `Arguments`.
    #[serde(skip)]
    pub args_v1: bool,
    pub environment: BTreeMap<String, String>,
    /// The job's initial working directory (HTCondor's `Iwd`), absolute.
    pub initialdir: String,
    /// stdin/stdout/stderr and the job event log, absolute (resolved against `initialdir`);
    /// `None` is HTCondor's `/dev/null` (no log).
    pub input: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub log: Option<String>,
    pub request_cpus: f64,
    /// MiB; `None`: HTCondor's default (the node's default).
    pub request_memory: Option<u64>,
    /// KiB; `None`: HTCondor's default.
    pub request_disk: Option<u64>,
    /// The `jobcell_*` commands of [`FILE_LIMITS`](crate::FILE_LIMITS) rows, by `Resources`
    /// field: bytes or a count.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<&'static str, u64>,
    pub priority: i64,
    pub held: bool,
    /// From `jobcell_image` or a string `+RequestedChroot`.
    pub image: Option<String>,
    pub transfer_input_files: Vec<String>,
    pub should_transfer_files: String,
    /// `None` when should_transfer_files is NO.
    pub when_to_transfer_output: Option<String>,
    pub custom_attributes: BTreeMap<String, CustomValue>,
    /// Seconds the job may run before it is held (HTCondor's `allowed_job_duration`).
    pub allowed_job_duration: Option<u64>,
    /// The policy commands as HTCondor's attributes (`PeriodicHold`, `OnExitRemove`, ...):
    /// (name, ClassAd text), evaluated by the daemon.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<(String, String)>,
    /// `job_max_vacate_time`: seconds between SIGTERM and SIGKILL when the job is stopped.
    pub job_max_vacate_time: Option<u64>,
    /// `requirements`, a ClassAd expression in its normal form: matched by the daemon
    /// against the node's machine ad (docs/submit-files.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requirements: Option<String>,
    /// Where the file named the job's input files, for errors about them.
    #[serde(skip)]
    pub input_lines: InputLines,
}

/// The lines of a job's `input` and `transfer_input_files` commands.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InputLines {
    pub input: Option<usize>,
    pub transfer_input_files: Option<usize>,
}

impl SubmitJob {
    /// The arguments attribute HTCondor writes: (`Args`, V1 text) or (`Arguments`, V2 text).
    pub fn arguments_attr(&self) -> (&'static str, String) {
        if self.args_v1 {
            ("Args", self.arguments.join(" "))
        } else {
            ("Arguments", args_to_v2_raw(&self.arguments))
        }
    }

    /// The job as ClassAd attributes (name, value in ClassAd syntax), in the names HTCondor
    /// uses: what `condor_submit -dry-run` and `condor_q -l` show.
    pub fn classad(&self) -> Vec<(String, String)> {
        let q = |s: &str| classad_string(s);
        let dev_null = |p: &Option<String>| q(p.as_deref().unwrap_or("/dev/null"));
        let (args_name, args) = self.arguments_attr();
        let mut ad = vec![
            ("ClusterId".to_string(), self.cluster_id.to_string()),
            ("ProcId".into(), self.proc_id.to_string()),
            ("Cmd".into(), q(&self.executable)),
            (args_name.into(), q(&args)),
            ("Environment".into(), q(&env_to_v2_raw(&self.environment))),
            ("Iwd".into(), q(&self.initialdir)),
            ("In".into(), dev_null(&self.input)),
            ("Out".into(), dev_null(&self.output)),
            ("Err".into(), dev_null(&self.error)),
        ];
        if let Some(l) = &self.log {
            ad.push(("UserLog".into(), q(l)));
        }
        ad.push(("RequestCpus".into(), self.request_cpus.to_string()));
        if let Some(m) = self.request_memory {
            ad.push(("RequestMemory".into(), m.to_string()));
        }
        if let Some(d) = self.request_disk {
            ad.push(("RequestDisk".into(), d.to_string()));
        }
        ad.push(("JobPrio".into(), self.priority.to_string()));
        ad.push(("JobStatus".into(), if self.held { "5" } else { "1" }.into()));
        if self.held {
            ad.push((
                "HoldReason".into(),
                q("submitted on hold at user's request"),
            ));
        }
        if !self.transfer_input_files.is_empty() {
            ad.push((
                "TransferInput".into(),
                q(&self.transfer_input_files.join(",")),
            ));
        }
        ad.push(("ShouldTransferFiles".into(), q(&self.should_transfer_files)));
        if let Some(w) = &self.when_to_transfer_output {
            ad.push(("WhenToTransferOutput".into(), q(w)));
        }
        if let Some(i) = &self.image {
            ad.push(("JobcellImage".into(), q(i)));
        }
        for (field, n) in &self.limits {
            ad.push((format!("Jobcell{}", camel_case(field)), n.to_string()));
        }
        if let Some(d) = self.allowed_job_duration {
            ad.push(("AllowedJobDuration".into(), d.to_string()));
        }
        ad.extend(self.policy.iter().cloned());
        if let Some(r) = &self.requirements {
            ad.push(("Requirements".into(), r.clone()));
        }
        for (k, v) in &self.custom_attributes {
            let text = match v {
                CustomValue::String(s) => q(s),
                CustomValue::Int(i) => i.to_string(),
                CustomValue::Real(f) => format!("{f:?}"),
                CustomValue::Bool(b) => b.to_string(),
                CustomValue::Expr { expr } => expr.clone(),
            };
            ad.push((k.clone(), text));
        }
        ad
    }

    /// Whether HTCondor's file transfer applies: YES, or IF_NEEDED with files to send (one
    /// node always shares its file system with itself, so IF_NEEDED without inputs needs no
    /// transfer).
    pub fn transfers_files(&self) -> bool {
        self.should_transfer_files == "YES"
            || (self.should_transfer_files == "IF_NEEDED" && !self.transfer_input_files.is_empty())
    }

    /// `transfer_input_files`, each made absolute against the job's `initialdir`.
    pub fn transfer_input_paths(&self) -> Vec<String> {
        self.transfer_input_files
            .iter()
            .map(|f| {
                if f.starts_with('/') {
                    f.clone()
                } else {
                    format!("{}/{f}", self.initialdir.trim_end_matches('/'))
                }
            })
            .collect()
    }

    /// The launcher's view of the job: argv, environment, cpus, memory and disk (bytes), the
    /// `jobcell_*` limits, image.
    /// Stdio, initialdir, priority and hold are the queue's business.
    pub fn to_job_spec(&self) -> JobSpec {
        let mut spec = JobSpec::new(self.argv.clone());
        spec.env = self
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        spec.resources.cpus = (self.request_cpus > 0.0).then_some(self.request_cpus);
        spec.resources.memory = self.request_memory.map(|m| m << 20);
        // KiB -> bytes: the size of the job's scratch file system.
        spec.resources.disk = self.request_disk.map(|d| d << 10);
        for (field, n) in &self.limits {
            if let Some(f) = crate::FileLimit::by_field(field) {
                (f.set)(&mut spec.resources, *n);
            }
        }
        spec.image = self.image.clone();
        if let Some(t) = self.job_max_vacate_time {
            spec.grace = std::time::Duration::from_secs(t);
        }
        spec
    }
}

/// The result of parsing one submit description.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Submission {
    pub jobs: Vec<SubmitJob>,
    pub warnings: Vec<Warning>,
}

/// `memory_high` → `MemoryHigh`, as HTCondor spells attributes.
fn camel_case(field: &str) -> String {
    field
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Shell-style wildcard match (`*`, `?`), used for `getenv` lists; handy for [`SubmitEnv::glob`]
/// implementations too.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// A ClassAd string literal.
pub fn classad_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `dir` joined with `p` the way HTCondor joins (`dir/p`), unless `p` is absolute.
fn join(dir: &str, p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else if dir.ends_with('/') {
        format!("{dir}{p}")
    } else {
        format!("{dir}/{p}")
    }
}

#[cfg(test)]
mod tests;
