//! The job directory: the contract between the daemon and a job's supervisor.
//!
//! ```text
//! <state>/jobs/<id>/spec.json            written by the daemon before spawning an exec'd
//!                                        supervisor (a forked one gets it in memory)
//!                  /claim-<attempt>      made atomically (link) by the supervisor, or by a
//!                                        recovering daemon to fence off a late supervisor
//!                  /result-<attempt>.json  written last by the supervisor (tmp+rename, not
//!                                        fsync'd: the daemon's commit makes it durable)
//!                  /result-<attempt>.unwritten-<errno>  an empty file instead, when the
//!                                        result could not be written (a full disk)
//!                  /stdout, /stderr      the job's output, unless its owner named files
//!                  /usage                the job's cgroup sampled over its latest run, one
//!                                        JSON line per point (see crate::usage)
//! ```
//!
//! Everything here is root's and private: the jobs dir and each job dir are 0700, the files
//! 0600, made new (O_EXCL) and never through a symlink. The job writes its default output
//! through the descriptors its supervisor hands it; its owner reads it through the API. A
//! path a client names is never looked up here: the supervisor opens it as the submitter.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use jobcell_spec::JobSpec;
use serde::{Deserialize, Serialize};

/// What the supervisor reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorSpec {
    pub id: u64,
    pub spec: JobSpec,
    /// The file the owner named for the job's stdout (opened as the submitter); None: `stdout`
    /// in the job dir.
    #[serde(default)]
    pub stdout: Option<PathBuf>,
    /// As `stdout`, for stderr.
    #[serde(default)]
    pub stderr: Option<PathBuf>,
    pub cgroup_parent: Option<PathBuf>,
    /// The node's per-job uid range: a job that would run as nobody runs as one of these.
    #[serde(default)]
    pub job_uids: Option<jobcell_spec::UidRange>,
    /// Who submitted the job (image visibility is checked for this uid).
    #[serde(default)]
    pub owner: u32,
    /// Where the image store is, for jobs that name an image.
    #[serde(default)]
    pub images: Option<ImagesConfig>,
    /// Where the job starts (HTCondor's initialdir), unless `transfer`.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// The job's stdin (opened as the job's user); default /dev/null.
    #[serde(default)]
    pub stdin: Option<PathBuf>,
    /// Copied into scratch, as the job's user, before the job starts.
    #[serde(default)]
    pub transfer_input: Vec<PathBuf>,
    /// Run in scratch (HTCondor's file transfer) and copy what the job made there back to
    /// `cwd` at exit.
    #[serde(default)]
    pub transfer: bool,
    /// Seconds between samples of the job's cgroup (`[usage] sample_interval`); None: none.
    #[serde(default)]
    pub usage_interval: Option<f64>,
}

/// The image store's location and the admin-named image trees (`[images]` in the config).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImagesConfig {
    pub state_dir: PathBuf,
    pub images_dir: PathBuf,
    pub named: std::collections::BTreeMap<String, PathBuf>,
}

impl ImagesConfig {
    pub fn open(&self) -> Result<jobcell_images::ImageStore, jobcell_images::ImageError> {
        jobcell_images::ImageStore::open(&self.state_dir, &self.images_dir, self.named.clone())
    }
}

/// Who claimed an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Claim {
    Supervisor {
        pid: i32,
        starttime: u64,
    },
    /// A recovering daemon claimed the attempt: it never started and never will.
    Fenced,
}

/// How an attempt ended, as the supervisor recorded it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub attempt: u32,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// jobcell's own failure to run the job (bad user, mount failed...), one line.
    pub error: Option<String>,
    /// The command could not be executed (126/127).
    pub exec_error: Option<String>,
    pub report: Option<serde_json::Value>,
    pub finished_at: f64,
    /// The job could not start for a reason its owner can fix (an input file missing or
    /// unreadable...): the daemon holds it with this reason instead of failing it.
    #[serde(default)]
    pub hold_reason: Option<String>,
}

impl JobResult {
    /// An attempt that jobcell could not run or whose end it could not learn: `why`, one line.
    pub fn failed(attempt: u32, why: String, finished_at: f64) -> Self {
        JobResult {
            attempt,
            exit_code: None,
            signal: None,
            error: Some(why),
            exec_error: None,
            report: None,
            finished_at,
            hold_reason: None,
        }
    }
}

/// Make a job's dir: root's, closed to everyone else (0700). One that exists (an earlier
/// attempt's) must be a directory, not a link to one.
pub fn make_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(dir)?.is_dir() {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                ))
            }
        }
        r => r,
    }
}

pub fn stdout_path(dir: &Path) -> PathBuf {
    dir.join("stdout")
}
pub fn stderr_path(dir: &Path) -> PathBuf {
    dir.join("stderr")
}
pub fn usage_path(dir: &Path) -> PathBuf {
    dir.join("usage")
}
pub fn spec_path(dir: &Path) -> PathBuf {
    dir.join("spec.json")
}
pub fn claim_path(dir: &Path, attempt: u32) -> PathBuf {
    dir.join(format!("claim-{attempt}"))
}
pub fn result_path(dir: &Path, attempt: u32) -> PathBuf {
    dir.join(format!("result-{attempt}.json"))
}

/// Make `claim-<attempt>` with `c` as its content, atomically: written to a private temporary
/// file, then hard-linked into place (link fails with EEXIST if anyone claimed first, and the
/// content is complete the moment the name exists). Ok(false): someone else holds the claim.
pub fn claim(dir: &Path, attempt: u32, c: &Claim) -> io::Result<bool> {
    let tmp = dir.join(format!(".claim-{attempt}.{}", std::process::id()));
    let data = serde_json::to_vec(c).map_err(io::Error::other)?;
    crate::sys::create_private(&tmp)?.write_all(&data)?;
    let r = std::fs::hard_link(&tmp, claim_path(dir, attempt));
    let _ = std::fs::remove_file(&tmp);
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn read_claim(dir: &Path, attempt: u32) -> io::Result<Option<Claim>> {
    match std::fs::read(claim_path(dir, attempt)) {
        Ok(d) => serde_json::from_slice(&d)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Leaves word that the attempt's result could not be written, and why: an empty file (it
/// takes an inode and a directory entry, no data block) named after the error number.
pub fn mark_unwritten(dir: &Path, attempt: u32, e: &io::Error) -> io::Result<()> {
    let errno = e.raw_os_error().unwrap_or(libc::EIO);
    std::fs::File::create(dir.join(format!("result-{attempt}.unwritten-{errno}"))).map(drop)
}

/// Why the attempt's result could not be written, if its supervisor said so.
pub fn read_unwritten(dir: &Path, attempt: u32) -> Option<io::Error> {
    let prefix = format!("result-{attempt}.unwritten-");
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let name = e.file_name();
        let errno = name.to_str()?.strip_prefix(&prefix)?.parse().ok()?;
        Some(io::Error::from_raw_os_error(errno))
    })
}

/// What an attempt's result file holds.
#[derive(Debug)]
pub enum ResultFile {
    /// No result file: the supervisor has not written one (or is gone without writing it).
    Missing,
    Found(JobResult),
    /// A result file that is not a result: after a power loss the renamed name can be on disk
    /// without its data (the supervisor does not fsync it), which reads as an empty file,
    /// zeros, or a cut-off JSON document. Why, in words.
    Damaged(String),
}

pub fn read_result(dir: &Path, attempt: u32) -> io::Result<ResultFile> {
    let p = result_path(dir, attempt);
    let d = match std::fs::read(&p) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ResultFile::Missing),
        Err(e) => return Err(e),
    };
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    if d.is_empty() {
        return Ok(ResultFile::Damaged(format!("{name} is empty")));
    }
    if d.iter().all(|&b| b == 0) {
        return Ok(ResultFile::Damaged(format!(
            "{name} holds {} zero bytes",
            d.len()
        )));
    }
    match serde_json::from_slice::<JobResult>(&d) {
        Ok(r) if r.attempt == attempt => Ok(ResultFile::Found(r)),
        Ok(r) => Ok(ResultFile::Damaged(format!(
            "{name} is the result of attempt {}",
            r.attempt
        ))),
        Err(e) => Ok(ResultFile::Damaged(format!(
            "{name} is not a complete result ({} bytes: {e})",
            d.len()
        ))),
    }
}

/// The name of an attempt's cgroup and scratch dir: `job-<supervisor pid>-<id in hex>`, the
/// shape the cgroup and scratch garbage collectors recognise.
pub fn cgroup_name(supervisor_pid: i32, id: u64) -> String {
    format!("job-{supervisor_pid}-{id:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_is_exclusive_and_complete() {
        let d = tempfile::tempdir().unwrap();
        assert!(claim(d.path(), 1, &Claim::Fenced).unwrap());
        let c = Claim::Supervisor {
            pid: 1,
            starttime: 2,
        };
        assert!(!claim(d.path(), 1, &c).unwrap());
        assert_eq!(read_claim(d.path(), 1).unwrap(), Some(Claim::Fenced));
        assert!(claim(d.path(), 2, &c).unwrap());
        assert_eq!(read_claim(d.path(), 2).unwrap(), Some(c));
        assert_eq!(read_claim(d.path(), 3).unwrap(), None);
        // No temporary files left.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }

    #[test]
    fn an_unwritten_result_says_why() {
        let d = tempfile::tempdir().unwrap();
        assert!(read_unwritten(d.path(), 1).is_none());
        mark_unwritten(d.path(), 1, &io::Error::from_raw_os_error(libc::ENOSPC)).unwrap();
        assert!(read_unwritten(d.path(), 2).is_none());
        let e = read_unwritten(d.path(), 1).unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }

    #[test]
    fn claims_and_results_are_private_and_never_written_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        // A planted temporary name (as a dead process with this pid would leave it).
        let tmp = d.path().join(format!(".claim-1.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        assert!(claim(d.path(), 1, &Claim::Fenced).unwrap());
        let res = result_path(d.path(), 1);
        let tmp = d
            .path()
            .join(format!(".result-1.json.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        crate::sys::write_atomic(&res, b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        for p in [claim_path(d.path(), 1), res] {
            let m = std::fs::symlink_metadata(&p).unwrap();
            assert!(m.is_file(), "{}", p.display());
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{}", p.display());
        }
        // A job dir that is a link is refused.
        let link = d.path().join("7");
        std::os::unix::fs::symlink(d.path(), &link).unwrap();
        assert!(make_dir(&link).is_err());
        make_dir(&d.path().join("8")).unwrap();
        let m = std::fs::metadata(d.path().join("8")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
    }
}
