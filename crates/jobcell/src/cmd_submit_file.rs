//! `jobcell submit [--dry-run [--json]] FILE|-`: HTCondor submit description files.
//!
//! The parsing is `jobcell_spec::submit`; this module is its window on the system (the file
//! or stdin, the cwd, the environment, globs) and the dry-run output.

use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use jobcell_api::new_submit_key;
use jobcell_api::types::{ClusterJob, ClusterSubmitRequest};
use jobcell_spec::submit::{parse_submit, SubmitEnv, SubmitJob, SubmitOptions};

use crate::submit_args::SubmitArgs;

/// The submitting process's view, as `condor_submit` has it: paths relative to its cwd.
pub struct HostEnv {
    cwd: PathBuf,
}

impl HostEnv {
    pub fn new() -> anyhow::Result<Self> {
        Ok(HostEnv {
            cwd: std::env::current_dir().context("the current directory")?,
        })
    }
}

impl SubmitEnv for HostEnv {
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(self.cwd.join(path))
    }

    fn glob(&self, pattern: &str) -> Vec<String> {
        let Ok(c) = CString::new(pattern) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        // SAFETY: glob_t is plain data; glob(3) fills it and globfree releases it, and the
        // paths are read before that.
        unsafe {
            let mut g: libc::glob_t = std::mem::zeroed();
            if libc::glob(c.as_ptr(), libc::GLOB_MARK, None, &mut g) == 0 {
                for i in 0..g.gl_pathc {
                    let p = CStr::from_ptr(*g.gl_pathv.add(i));
                    out.push(p.to_string_lossy().into_owned());
                }
            }
            libc::globfree(&mut g);
        }
        out
    }

    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn env_vars(&self) -> Vec<(String, String)> {
        // Variables that are not UTF-8 cannot be written into a job description anyway.
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }

    fn cwd(&self) -> PathBuf {
        self.cwd.clone()
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.cwd.join(path).is_dir()
    }

    fn random_u64(&self) -> u64 {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(std::process::id())
    }
}

fn read_description(path: &Path) -> anyhow::Result<(String, String)> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the submit description from stdin")?;
        Ok(("<stdin>".into(), text))
    } else {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    " (a submit file; to queue a command: jobcell submit -- {})",
                    path.display()
                ),
                _ => String::new(),
            };
            anyhow::anyhow!("cannot read {}: {e}{hint}", path.display())
        })?;
        Ok((path.display().to_string(), text))
    }
}

fn parse_text(name: &str, text: &str, cluster_id: u64) -> anyhow::Result<Vec<SubmitJob>> {
    let env = HostEnv::new()?;
    let sub = parse_submit(text, &env, &SubmitOptions { cluster_id })
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    for w in &sub.warnings {
        eprintln!("jobcell: warning: {name}: {w}");
    }
    // condor_submit refuses an executable it cannot send. Checked by this process, which is
    // the submitter's; an image's executable is in the image's view, and
    // `transfer_executable = false` names a program already on the node.
    let mut seen = std::collections::HashSet::new();
    for job in &sub.jobs {
        if job.image.is_some() || !job.transfer_executable || !seen.insert(&job.executable) {
            continue;
        }
        if let Err(why) = crate::paths::check_executable(Path::new(&job.executable)) {
            anyhow::bail!(
                "{name}: line {}: executable {}: {why}",
                job.executable_line,
                job.executable
            );
        }
    }
    Ok(sub.jobs)
}

/// `jobcell submit --dry-run [--json] FILE|-`: print what would be queued, queue nothing. The
/// jobs go through what a real submit does before it asks the daemon (the command line's
/// options over the file's, the checks of the spec and of the input files), so what is
/// printed is what would be sent.
pub fn dry_run(path: &Path, a: &SubmitArgs) -> anyhow::Result<i32> {
    let (name, text) = read_description(path)?;
    let jobs = parse_text(&name, &text, 1)?;
    let mut shown = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let c = cluster_job(&name, job, a)?;
        shown.push(jobcell_api::submit_file::as_queued(job, &c));
    }
    // Buffered: stdout is line-buffered, and a large cluster prints millions of lines.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if a.json {
        serde_json::to_writer_pretty(&mut out, &shown)?;
        writeln!(out)?;
    } else {
        // Like `condor_submit -dry-run`: each job's attributes, then a summary line.
        for job in &shown {
            writeln!(out, "{}.{}", job.cluster_id, job.proc_id)?;
            for (k, v) in job.classad() {
                writeln!(out, "{k} = {v}")?;
            }
            writeln!(out)?;
        }
        writeln!(
            out,
            "{} job(s) dry-run to cluster 1 (nothing was queued).",
            shown.len()
        )?;
    }
    out.flush()?;
    Ok(0)
}

/// A path the submitting user must be able to read (checked as that user, here, before
/// anything is queued; the supervisor checks again as the job's user when it starts).
/// `at` names the file and line that gave it.
fn check_readable(at: &str, what: &str, p: &str) -> anyhow::Result<()> {
    let path = Path::new(p);
    let m = std::fs::metadata(path).with_context(|| format!("{at}{what} {p}"))?;
    if m.is_dir() {
        std::fs::read_dir(path).with_context(|| format!("{at}{what} {p}"))?;
    } else {
        std::fs::File::open(path).with_context(|| format!("{at}{what} {p}"))?;
    }
    Ok(())
}

/// `FILE: line N: ` (or `FILE: `).
fn file_line(name: &str, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{name}: line {l}: "),
        None => format!("{name}: "),
    }
}

/// The job the daemon is asked to queue for one job of the file: the file's job with the
/// command line's options over it, its input files checked as the submitter.
fn cluster_job(name: &str, job: &SubmitJob, a: &SubmitArgs) -> anyhow::Result<ClusterJob> {
    let mut spec = job.to_job_spec();
    let from_file = spec.resources.clone();
    // Options given on the command line add to (or override) what the file says.
    a.job.apply(&mut spec, None)?;
    if a.job.cpus.is_none() {
        spec.resources.cpus = from_file.cpus;
    }
    if a.job.memory.is_none() {
        spec.resources.memory = from_file.memory;
    }
    if a.job.image.is_none() {
        spec.image = job.image.clone();
    }
    crate::submit_args::finish_spec(&mut spec, crate::submit_args::job_user(a)?, a)?;
    let lines = job.input_lines;
    for f in job.transfer_input_paths() {
        let at = file_line(name, lines.transfer_input_files);
        check_readable(&at, "transfer_input_files:", &f)?;
    }
    if let Some(i) = &job.input {
        check_readable(&file_line(name, lines.input), "input", i)?;
    }
    Ok(jobcell_api::submit_file::cluster_job(
        job, spec, a.priority, a.hold,
    )?)
}

/// The jobs of the file as one request: compact (the first job, then what each of the
/// others changes) when that expands back to every job exactly, else each job whole.
fn cluster_request(jobs: Vec<ClusterJob>) -> anyhow::Result<ClusterSubmitRequest> {
    // The key makes a resend after a lost answer (the daemon restarted between its commit and
    // its reply) return the jobs made the first time instead of a second copy.
    let submit_key = Some(new_submit_key());
    Ok(match jobcell_api::compact::compact(&jobs)? {
        Some((common, procs)) => ClusterSubmitRequest {
            common: Some(common),
            procs,
            submit_key,
            ..Default::default()
        },
        None => ClusterSubmitRequest {
            jobs,
            submit_key,
            ..Default::default()
        },
    })
}

/// How long a submit file's cluster may take to be answered, by default.
const CLUSTER_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// `jobcell submit FILE|-`: queue every job of the file as one cluster, all or nothing.
pub fn submit(path: &Path, a: &SubmitArgs) -> anyhow::Result<i32> {
    let (name, text) = read_description(path)?;
    // Everything is checked before a cluster is asked for: a bad file leaves no trace.
    let first = parse_text(&name, &text, 1)?;
    for j in &first {
        cluster_job(&name, j, a)?;
    }
    drop(first);
    let client = a.sock.client()?;
    let c = client.new_cluster()?;
    // $(Cluster) expands to the real cluster id now; warnings were said the first time.
    let env = HostEnv::new()?;
    let jobs = parse_submit(
        &text,
        &env,
        &SubmitOptions {
            cluster_id: c.cluster,
        },
    )
    .map_err(|e| anyhow::anyhow!("{name}: {e}"))?
    .jobs;
    let jobs = jobs
        .iter()
        .map(|j| cluster_job(&name, j, a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let n = jobs.len();
    let req = cluster_request(jobs)?;
    // A large cluster is checked and committed in one request: give it longer than a query
    // unless the user chose.
    let cluster_client = match a.sock.timeout()? {
        Some(_) => client,
        None => {
            let connect = client.connect_timeout();
            client.with_timeouts(connect, CLUSTER_ANSWER_TIMEOUT)
        }
    };
    let r = cluster_client.submit_cluster(c.cluster, &req)?;
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for id in &r.ids {
            writeln!(out, "{id}")?;
        }
    } else {
        writeln!(out, "Submitting job(s){}", ".".repeat(n.min(80)))?;
        writeln!(
            out,
            "{n} job(s) submitted to cluster {} (job ids {}).",
            c.cluster,
            match r.ids.as_slice() {
                [one] => one.to_string(),
                [first, .., last] => format!("{first}-{last}"),
                [] => "none".into(),
            }
        )?;
    }
    if a.wait {
        drop(out);
        let client = a.sock.client()?;
        return crate::cmd_wait::wait_for(&client, &r.ids, false, None, a.quiet);
    }
    Ok(0)
}
