//! A job of an HTCondor submit file as the daemon queues it (`POST /v1/clusters/{id}/jobs`).

use jobcell_spec::submit::SubmitJob;
use jobcell_spec::JobSpec;
use thiserror::Error;

use crate::types::{ClusterJob, JobExtra};

#[derive(Debug, Error, PartialEq)]
pub enum SubmitFileError {
    #[error("priority {0} is out of range")]
    PriorityOutOfRange(i64),
}

/// The cluster job for `job`, which runs `spec` (the file's job with whatever the submitter
/// added: see [`SubmitJob::to_job_spec`]). `extra_priority` is added to the file's priority;
/// `hold` holds it even when the file does not.
pub fn cluster_job(
    job: &SubmitJob,
    spec: JobSpec,
    extra_priority: i32,
    hold: bool,
) -> Result<ClusterJob, SubmitFileError> {
    let priority = i32::try_from(job.priority)
        .map_err(|_| SubmitFileError::PriorityOutOfRange(job.priority))?
        .saturating_add(extra_priority);
    let mut c = ClusterJob {
        spec,
        priority,
        hold: job.held || hold,
        stdout: job.output.clone(),
        stderr: job.error.clone(),
        extra: JobExtra {
            cwd: Some(job.initialdir.clone()),
            stdin: job.input.clone(),
            log: job.log.clone(),
            transfer_input: job.transfer_input_paths(),
            transfer: job.transfers_files(),
            ad: job.classad(),
            allowed_job_duration: job.allowed_job_duration.map(|d| d as f64),
        },
    };
    // The ad says what is queued, the submitter's options included.
    c.extra.ad = as_queued(job, &c).classad();
    Ok(c)
}

/// The file's `job` with what the submitter's options changed in it (`c`, its cluster job):
/// requests, priority, hold, image. What `--dry-run` shows and the job's ad holds.
pub fn as_queued(job: &SubmitJob, c: &ClusterJob) -> SubmitJob {
    let mut j = job.clone();
    let r = &c.spec.resources;
    if let Some(cpus) = r.cpus {
        j.request_cpus = cpus;
    }
    if let Some(m) = r.memory {
        j.request_memory = Some(m.div_ceil(1 << 20));
    }
    if let Some(d) = r.disk {
        j.request_disk = Some(d.div_ceil(1 << 10));
    }
    j.priority = c.priority.into();
    j.held = c.hold;
    j.image = c.spec.image.clone();
    j
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use jobcell_spec::submit::{parse_submit, SubmitEnv, SubmitOptions};

    use super::*;

    /// A submitter in /home/u whose only directory is its cwd.
    struct Submitter;

    impl SubmitEnv for Submitter {
        fn read_file(&self, path: &Path) -> std::io::Result<String> {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                path.display().to_string(),
            ))
        }
        fn glob(&self, _: &str) -> Vec<String> {
            Vec::new()
        }
        fn env(&self, _: &str) -> Option<String> {
            None
        }
        fn env_vars(&self) -> Vec<(String, String)> {
            Vec::new()
        }
        fn cwd(&self) -> PathBuf {
            PathBuf::from("/home/u")
        }
        fn is_dir(&self, path: &Path) -> bool {
            path == Path::new("/home/u") || path == Path::new("/home/u/run/")
        }
        fn random_u64(&self) -> u64 {
            4
        }
    }

    fn job(text: &str) -> SubmitJob {
        let sub = parse_submit(text, &Submitter, &SubmitOptions { cluster_id: 7 }).unwrap();
        sub.jobs.into_iter().next().unwrap()
    }

    #[test]
    fn a_file_job_keeps_its_io_transfer_and_ad() {
        let j = job(
            "executable = /bin/echo\ninitialdir = run/\ninput = in.txt\n\
                     output = out\nlog = log\ntransfer_input_files = a, /abs/b\n\
                     priority = 5\nhold = true\nqueue\n",
        );
        let spec = j.to_job_spec();
        let c = cluster_job(&j, spec.clone(), 2, false).unwrap();
        assert_eq!(c.priority, 7);
        assert!(c.hold, "held by the file");
        assert_eq!(c.stdout.as_deref(), Some("/home/u/run/out"));
        assert_eq!(c.spec.argv, spec.argv);
        let x = &c.extra;
        assert_eq!(x.cwd.as_deref(), Some("/home/u/run/"));
        assert_eq!(x.stdin.as_deref(), Some("/home/u/run/in.txt"));
        assert_eq!(x.log.as_deref(), Some("/home/u/run/log"));
        assert_eq!(x.transfer_input, ["/home/u/run/a", "/abs/b"]);
        assert!(x.transfer, "IF_NEEDED with files to send");
        assert_eq!(x.ad, as_queued(&j, &c).classad());
        assert!(x.ad.contains(&("JobPrio".to_string(), "7".to_string())));
    }

    #[test]
    fn if_needed_without_inputs_transfers_nothing_and_yes_always_does() {
        let j = job("executable = /bin/true\nqueue\n");
        assert!(
            !cluster_job(&j, j.to_job_spec(), 0, true)
                .unwrap()
                .extra
                .transfer
        );
        let j = job("executable = /bin/true\nshould_transfer_files = YES\nqueue\n");
        assert!(
            cluster_job(&j, j.to_job_spec(), 0, false)
                .unwrap()
                .extra
                .transfer
        );
    }

    #[test]
    fn a_priority_past_i32_is_refused_and_the_sum_saturates() {
        let j = job("executable = /bin/true\npriority = 3000000000\nqueue\n");
        assert_eq!(
            cluster_job(&j, j.to_job_spec(), 0, false).unwrap_err(),
            SubmitFileError::PriorityOutOfRange(3_000_000_000)
        );
        let j = job(&format!(
            "executable = /bin/true\npriority = {}\nqueue\n",
            i32::MAX
        ));
        let c = cluster_job(&j, j.to_job_spec(), 1, false).unwrap();
        assert_eq!(c.priority, i32::MAX);
    }
}
