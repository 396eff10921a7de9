//! `jobcell submit [--dry-run [--json]] FILE|-`: HTCondor submit description files.
//!
//! The parsing is `jobcell_spec::submit`; this module is its window on the system (the file
//! or stdin, the cwd, the environment, globs) and the dry-run output.

use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use jobcell_spec::submit::{parse_submit, SubmitEnv, SubmitJob, SubmitOptions};

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
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok((path.display().to_string(), text))
    }
}

/// Parse a submit file (`-` for stdin) into the jobs it queues; warnings go to stderr, each
/// naming the file and line. Nothing is returned unless the whole file is valid.
pub fn parse_for_submit(path: &Path) -> anyhow::Result<Vec<SubmitJob>> {
    let (name, text) = read_description(path)?;
    let env = HostEnv::new()?;
    let sub = parse_submit(&text, &env, &SubmitOptions { cluster_id: 1 })
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    for w in &sub.warnings {
        eprintln!("jobcell: warning: {name}: {w}");
    }
    // condor_submit refuses a missing executable; here it is only a warning, since the job may
    // create it first or find it inside its image (then the host's view says nothing).
    let mut seen = std::collections::HashSet::new();
    for job in sub.jobs.iter().filter(|j| j.image.is_none()) {
        if seen.insert(&job.executable) && !Path::new(&job.executable).is_file() {
            eprintln!(
                "jobcell: warning: {name}: executable {} is not a file on this host",
                job.executable
            );
        }
    }
    Ok(sub.jobs)
}

/// `jobcell submit --dry-run [--json] FILE|-`: print what would be queued, queue nothing.
pub fn dry_run(path: &Path, json: bool) -> anyhow::Result<i32> {
    let jobs = parse_for_submit(path)?;
    // Buffered: stdout is line-buffered, and a large cluster prints millions of lines.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        serde_json::to_writer_pretty(&mut out, &jobs)?;
        writeln!(out)?;
    } else {
        // Like `condor_submit -dry-run`: each job's attributes, then a summary line.
        for job in &jobs {
            writeln!(out, "{}.{}", job.cluster_id, job.proc_id)?;
            for (k, v) in job.classad() {
                writeln!(out, "{k} = {v}")?;
            }
            writeln!(out)?;
        }
        writeln!(
            out,
            "{} job(s) dry-run to cluster 1 (nothing was queued).",
            jobs.len()
        )?;
    }
    out.flush()?;
    Ok(0)
}
