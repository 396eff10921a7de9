//! Submission: one job (or `count` copies) or a submit file's whole cluster, checked before
//! anything is written.

use jobcell_api::compact::{self, CompactError};
use jobcell_api::types::ClusterJob;
use jobcell_spec::submit::MAX_CLUSTER_JOBS;

use super::*;
use crate::machine;

/// The most a cluster's jobs may come to, spec and submit-file extras (about 3000 bytes
/// each for 100,000 jobs, which is more than a submit file's jobs with their environment
/// take): what the daemon holds in memory while it checks them.
const MAX_EXPANDED_CLUSTER: u64 = 512 << 20;

/// About what a job's extras take stored (their JSON).
fn extra_size(x: &JobExtra) -> usize {
    let paths = [&x.cwd, &x.stdin, &x.log]
        .iter()
        .filter_map(|p| p.as_ref().map(String::len))
        .sum::<usize>();
    let inputs: usize = x.transfer_input.iter().map(|p| p.len() + 3).sum();
    let ad: usize = x.ad.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
    paths + inputs + ad
}

/// The hold reason of a job submitted held.
const HELD_AT_SUBMISSION: &str = "held at submission";

impl Core {
    /// The ids of the caller's jobs made by an earlier request with this key (empty: none).
    pub(super) fn resubmitted(
        &self,
        tx: &Batch,
        caller: u32,
        key: &Option<String>,
    ) -> Result<Vec<u64>, CoreError> {
        let Some(k) = key else {
            return Ok(Vec::new());
        };
        if k.is_empty() || k.len() > 128 {
            return Err(CoreError::BadRequest(
                "submit_key must be 1 to 128 bytes".into(),
            ));
        }
        Ok(tx.jobs_with_key(caller, k)?)
    }

    /// Check one job's request and settle its defaults; writes nothing. `images` remembers
    /// the images already found visible to the caller (a cluster names the same one often).
    pub(super) fn check_job(
        &self,
        caller: u32,
        mut spec: JobSpec,
        stdout: &Option<String>,
        stderr: &Option<String>,
        extra: Option<&JobExtra>,
        images: &mut std::collections::HashMap<String, Option<jobcell_images::ImageConfig>>,
    ) -> Result<(JobSpec, f64, u64), CoreError> {
        // Who the job runs as: a user may only run jobs as themself; root may choose.
        let (uid, _) = sys::lookup_user(&spec.user)
            .ok_or_else(|| CoreError::BadRequest(format!("user '{}' does not exist", spec.user)))?;
        if caller != 0 && uid != caller {
            return Err(CoreError::Forbidden(format!(
                "only root may submit jobs that run as another user (asked for '{}')",
                spec.user
            )));
        }
        if caller != 0 {
            spec.user = UserSpec::Uid(uid);
        }
        // The node decides where scratch dirs go.
        spec.scratch_base = self.cfg.scratch_base.clone();
        spec.resources.scratch_bound = match spec.resources.disk {
            None => self.cfg.scratch_bound,
            Some(_) => None,
        };
        let cpus = spec.resources.cpus.unwrap_or(self.cfg.default_cpus);
        let memory = spec.resources.memory.unwrap_or(self.cfg.default_memory);
        spec.resources.cpus = Some(cpus);
        spec.resources.memory = Some(memory);
        if let Some(name) = spec.image.clone() {
            if !images.contains_key(&name) {
                // Refuse an unknown or invisible image now, not when the job starts.
                let img = self
                    .cfg
                    .images
                    .open()
                    .and_then(|s| s.show(&name, caller))
                    .map_err(|e| CoreError::BadRequest(format!("image '{name}': {e}")))?;
                images.insert(name.clone(), img.config);
            }
            // The image's Env, WorkingDir, Entrypoint and Cmd, applied once, at submission.
            match &images[&name] {
                Some(c) => {
                    let given = !spec.argv.is_empty();
                    c.apply_to(&name, &mut spec, given)
                        .map_err(|e| CoreError::BadRequest(e.to_string()))?;
                }
                None if spec.argv.is_empty() => {
                    return Err(CoreError::BadRequest(format!(
                        "image '{name}' is a plain tree with no Entrypoint or Cmd: give the command to run"
                    )))
                }
                None => {}
            }
        }
        spec.validate()
            .map_err(|e| CoreError::BadRequest(e.to_string()))?;
        self.bound(caller != 0, &mut spec, cpus, memory)?;
        for (what, p) in [("stdout", stdout), ("stderr", stderr)] {
            if let Some(p) = p {
                jobcell_spec::clean_abs_path(what, Path::new(p))
                    .map_err(|e| CoreError::BadRequest(e.to_string()))?;
            }
        }
        if let Some(x) = extra {
            // Opened as the job's user by the supervisor: only the shape is checked here.
            let abs = |what: &str, p: &str| {
                if p.starts_with('/') && !p.contains('\0') && p.len() <= 4096 {
                    Ok(())
                } else {
                    Err(CoreError::BadRequest(format!(
                        "{what} '{p}' must be an absolute path (at most 4096 bytes, no NUL)"
                    )))
                }
            };
            for (what, p) in [("initialdir", &x.cwd), ("input", &x.stdin), ("log", &x.log)] {
                if let Some(p) = p {
                    abs(what, p)?;
                }
            }
            for p in &x.transfer_input {
                abs("transfer_input_files entry", p)?;
            }
            if x.ad.len() > 10_000 {
                return Err(CoreError::BadRequest(
                    "a job ad has at most 10000 attributes".into(),
                ));
            }
            job_policy::JobPolicy::from_ad(&x.ad)
                .map_err(|e| CoreError::BadRequest(e.to_string()))?;
            if let Some(d) = x.allowed_job_duration {
                if !(d.is_finite() && d > 0.0) {
                    return Err(CoreError::BadRequest(format!(
                        "allowed_job_duration {d} must be a number of seconds > 0"
                    )));
                }
            }
        }
        Ok((spec, cpus, memory))
    }

    /// The node's bounds on a job's request: a user's `[limits]` (when `limited`), and what
    /// the node has at all. The same at submission and at qedit.
    pub(super) fn bound(
        &self,
        limited: bool,
        spec: &mut JobSpec,
        cpus: f64,
        memory: u64,
    ) -> Result<(), CoreError> {
        if limited {
            self.cfg
                .limits
                .apply(spec)
                .map_err(|e| CoreError::Forbidden(e.to_string()))?;
        }
        let node = self.cfg.node;
        if cpus > node.cpus + 1e-9 {
            return Err(CoreError::ExceedsNode(format!(
                "the job asks for {cpus} cpus but this node has {} for jobs",
                node.cpus
            )));
        }
        if memory > node.memory {
            return Err(CoreError::ExceedsNode(format!(
                "the job asks for {} of memory but this node has {} for jobs",
                jobcell_spec::format_size(memory),
                jobcell_spec::format_size(node.memory)
            )));
        }
        if let Some(list) = &spec.resources.cpuset {
            // Refused now rather than failing when the job starts (validate checked the form).
            let wanted = jobcell_spec::parse_cpu_list(list)
                .map_err(|e| CoreError::BadRequest(format!("--cpuset {list}: {e}")))?;
            let have = sys::allowed_cpus().map_err(|e| CoreError::Internal(e.to_string()))?;
            let missing: Vec<String> = wanted.difference(&have).map(|c| c.to_string()).collect();
            if !missing.is_empty() {
                return Err(CoreError::ExceedsNode(format!(
                    "--cpuset {list}: this node has no CPU {} for jobs",
                    missing.join(",")
                )));
            }
        }
        Ok(())
    }

    /// A new, empty cluster for a submit file (its jobs come in a second request).
    pub(super) fn empty_cluster(
        &mut self,
        tx: &Batch,
        caller: u32,
    ) -> Result<ClusterResponse, CoreError> {
        self.take_room(CLUSTER_NEED)?;
        Ok(ClusterResponse {
            cluster: self.new_cluster(tx, caller)?,
        })
    }

    pub(super) fn new_cluster(&self, tx: &Batch, caller: u32) -> Result<u64, StoreError> {
        tx.insert_cluster(caller, now())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_job(
        &mut self,
        tx: &Batch,
        caller: u32,
        (cluster, proc): (u64, u64),
        spec: &JobSpec,
        spec_json: &str,
        (cpus, memory): (f64, u64),
        (priority, hold): (i32, Option<&str>),
        (stdout, stderr): (&Option<String>, &Option<String>),
        extra: Option<&JobExtra>,
        submit_key: &Option<String>,
        t: f64,
    ) -> Result<u64, StoreError> {
        let command = serde_json::to_string(&spec.argv).unwrap_or_default();
        let user = match &spec.user {
            UserSpec::Uid(u) => sys::user_name(*u),
            u => u.to_string(),
        };
        let state = if hold.is_some() {
            State::Held
        } else {
            State::Queued
        };
        let hold_reason = hold.map(String::from);
        let extra_json = extra.map(|x| serde_json::to_string(x).unwrap_or_default());
        let id = tx.insert_job(&NewJob {
            owner: caller,
            user: &user,
            state,
            priority,
            cpus,
            memory,
            command: &command,
            spec: spec_json,
            stdout: stdout.as_deref(),
            stderr: stderr.as_deref(),
            submitted_at: t,
            hold_reason: hold_reason.as_deref(),
            submit_key: submit_key.as_deref(),
            cluster,
            proc,
            extra: extra_json.as_deref(),
        })?;
        tx.add_event(id,
            "submitted",
            Some(
                &serde_json::json!({"owner": caller, "held": hold, "cluster": cluster, "proc": proc}),
            ),
        )?;
        let info = JobInfo {
            id,
            cluster,
            proc,
            owner: caller,
            user,
            state,
            priority,
            cpus,
            memory,
            command: spec.argv.clone(),
            submitted_at: t,
            started_at: None,
            ended_at: None,
            hold_reason: hold_reason.clone(),
            reason: None,
            attempt: 0,
            exit_code: None,
            signal: None,
            report: None,
            batch_name: extra.and_then(|x| crate::store::batch_name_in(&x.ad)),
            suspended_s: 0.0,
            suspended_at: None,
            owner_name: None,
        };
        if state == State::Queued {
            self.queue.insert(&info);
            self.queued_at.insert(id, t);
        }
        let ulog = extra
            .and_then(|x| x.log.clone())
            .map(|path| userlog::Target {
                path,
                user: spec.user.clone(),
                cluster,
                proc,
            });
        self.jobs.insert(
            id,
            Job {
                info,
                spec: spec_json.to_string(),
                stdout: stdout.clone(),
                stderr: stderr.clone(),
                sup: None,
                pidfd: None,
                pending: None,
                extra: extra_json,
                ulog,
                max_duration: extra.and_then(|x| x.allowed_job_duration),
                policy: extra
                    .and_then(|x| job_policy::JobPolicy::from_ad(&x.ad).ok().flatten())
                    .map(Arc::new),
                policy_state: job_policy::PolicyState {
                    entered_at: t,
                    ..Default::default()
                },
                seen_state: state,
            },
        );
        self.ulog_job(id, userlog::Event::Submitted);
        if let Some(r) = hold_reason {
            self.ulog_job(id, userlog::Event::Held(r));
        }
        Ok(id)
    }

    pub(super) fn submit(
        &mut self,
        tx: &Batch,
        caller: u32,
        req: SubmitRequest,
    ) -> Result<SubmitResponse, CoreError> {
        let ids = self.resubmitted(tx, caller, &req.submit_key)?;
        if !ids.is_empty() {
            let cluster = self.jobs.get(&ids[0]).map(|j| j.info.cluster);
            return Ok(SubmitResponse { ids, cluster });
        }
        let count = req.count.unwrap_or(1);
        if count == 0 || u64::from(count) > MAX_CLUSTER_JOBS {
            return Err(CoreError::BadRequest(format!(
                "count {count} must be between 1 and {MAX_CLUSTER_JOBS}"
            )));
        }
        let (spec, cpus, memory) = self.check_job(
            caller,
            req.spec,
            &req.stdout,
            &req.stderr,
            None,
            &mut Default::default(),
        )?;
        let spec_json =
            serde_json::to_string(&spec).map_err(|e| CoreError::Internal(e.to_string()))?;
        self.take_room(space::jobs_need(count as u64, spec_json.len() as u64))?;
        // The cluster's insert comes first: it takes the write lock (waiting out another
        // writer), which a transaction that has only read cannot wait for.
        let cluster = self.new_cluster(tx, caller)?;
        if let Err(e) = self.make_job_dirs(tx, count as u64) {
            tx.delete_cluster(cluster)?;
            return Err(e);
        }
        let t = now();
        let ids = (0..count as u64)
            .map(|proc| {
                self.insert_job(
                    tx,
                    caller,
                    (cluster, proc),
                    &spec,
                    &spec_json,
                    (cpus, memory),
                    (req.priority, req.hold.then_some(HELD_AT_SUBMISSION)),
                    (&req.stdout, &req.stderr),
                    None,
                    &req.submit_key,
                    t,
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(SubmitResponse {
            ids,
            cluster: Some(cluster),
        })
    }

    /// A submit file's jobs: every one is checked before any is written, so the cluster is
    /// queued whole or not at all.
    pub(super) fn submit_cluster(
        &mut self,
        tx: &Batch,
        caller: u32,
        cluster: u64,
        req: ClusterSubmitRequest,
    ) -> Result<SubmitResponse, CoreError> {
        let ids = self.resubmitted(tx, caller, &req.submit_key)?;
        if !ids.is_empty() {
            return Ok(SubmitResponse {
                ids,
                cluster: Some(cluster),
            });
        }
        match tx.cluster_owner(cluster)? {
            None => return Err(CoreError::NotFound(format!("no cluster {cluster}"))),
            Some(o) if o != caller => {
                return Err(CoreError::Forbidden(format!(
                    "cluster {cluster} belongs to {}",
                    sys::user_name(o)
                )))
            }
            _ => {}
        }
        if tx.cluster_job_count(cluster)? > 0 {
            return Err(CoreError::Conflict(format!(
                "cluster {cluster} already has jobs; ask for a new one"
            )));
        }
        let ClusterSubmitRequest {
            jobs,
            common,
            procs,
            submit_key,
        } = req;
        let count = match &common {
            Some(_) if !jobs.is_empty() => {
                return Err(CoreError::BadRequest(
                    "a cluster request has either jobs or common and procs, not both".into(),
                ))
            }
            Some(_) => procs.len(),
            None => jobs.len(),
        };
        if count == 0 || count as u64 > MAX_CLUSTER_JOBS {
            return Err(CoreError::BadRequest(format!(
                "a cluster has 1 to {MAX_CLUSTER_JOBS} jobs, not {count}"
            )));
        }
        // Each of the compact form's jobs is at least the common one: refuse at once what
        // would expand past the bound, rather than after checking hundreds of large jobs.
        if let Some(c) = &common {
            let base = serde_json::to_string(c).map_or(0, |t| t.len() as u64);
            if base.saturating_mul(count as u64) > MAX_EXPANDED_CLUSTER {
                return Err(CoreError::BadRequest(format!(
                    "the cluster's jobs come to more than {} MiB",
                    MAX_EXPANDED_CLUSTER >> 20
                )));
            }
        }
        // The compact form is expanded one job at a time into what a full request holds, and
        // each goes through the same checks.
        let full: Box<dyn Iterator<Item = Result<ClusterJob, CompactError>>> = match &common {
            Some(c) => Box::new(procs.iter().map(|p| compact::expand(c, p))),
            None => Box::new(jobs.into_iter().map(Ok)),
        };
        let mut images = Default::default();
        let mut checked = Vec::with_capacity(count);
        let mut expanded = 0u64;
        let mut budget = machine::requirements_budget(count);
        // TARGET for the jobs' `requirements`: the node as a whole (see unmatched_hold).
        let node_ad = machine::machine_ad(
            self.cfg.node.cpus,
            self.cfg.node.memory,
            machine::disk_size(&self.cfg.scratch_base),
            env!("CARGO_PKG_VERSION"),
        );
        for (proc, j) in full.enumerate() {
            let j = j.map_err(|e| CoreError::BadRequest(format!("job {cluster}.{proc}: {e}")))?;
            let (spec, cpus, memory) = self
                .check_job(
                    caller,
                    j.spec,
                    &j.stdout,
                    &j.stderr,
                    Some(&j.extra),
                    &mut images,
                )
                .map_err(|e| e.about(&format!("job {cluster}.{proc}")))?;
            let spec_json =
                serde_json::to_string(&spec).map_err(|e| CoreError::Internal(e.to_string()))?;
            // The compact form lets a small body stand for much more (a large common job
            // repeated per proc): bound what it expands to, as the body limit bounds a full one.
            expanded += (spec_json.len() + extra_size(&j.extra)) as u64;
            if expanded > MAX_EXPANDED_CLUSTER {
                return Err(CoreError::BadRequest(format!(
                    "job {cluster}.{proc}: the cluster's jobs come to more than {} MiB",
                    MAX_EXPANDED_CLUSTER >> 20
                )));
            }
            // Requirements that this node can never meet hold the job now, saying why, rather
            // than leave it idle for ever; ones it meets wait for room like every job.
            let hold = machine::unmatched(&j.extra.ad, &node_ad, &mut budget)
                .map_err(|e| CoreError::BadRequest(format!("job {cluster}.{proc}: {e}")))?
                .or_else(|| j.hold.then(|| HELD_AT_SUBMISSION.to_string()));
            checked.push((
                spec, spec_json, cpus, memory, j.priority, hold, j.stdout, j.stderr, j.extra,
            ));
        }
        let spec_bytes: u64 = checked.iter().map(|c| c.1.len() as u64).sum();
        self.take_room(space::jobs_need(checked.len() as u64, 0) + 2 * spec_bytes)?;
        self.make_job_dirs(tx, checked.len() as u64)?;
        let t = now();
        let mut ids = Vec::with_capacity(checked.len());
        for (proc, (spec, spec_json, cpus, memory, prio, hold, out, err, extra)) in
            checked.into_iter().enumerate()
        {
            ids.push(self.insert_job(
                tx,
                caller,
                (cluster, proc as u64),
                &spec,
                &spec_json,
                (cpus, memory),
                (prio, hold.as_deref()),
                (&out, &err),
                Some(&extra),
                &submit_key,
                t,
            )?);
        }
        Ok(SubmitResponse {
            ids,
            cluster: Some(cluster),
        })
    }

    /// Makes the dirs of the next `count` jobs (the ids their rows will get) before they are
    /// acknowledged: a job whose dir cannot be made is refused now rather than accepted and
    /// failed at its start.
    pub(super) fn make_job_dirs(&self, tx: &Batch, count: u64) -> Result<(), CoreError> {
        let first = tx.last_job_id()? + 1;
        let mut made = Vec::new();
        for id in first..first + count {
            let dir = self.job_dir(id);
            // Root's and closed, as every job dir (jobdir::make_dir).
            match std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(&dir)
            {
                Ok(()) => made.push(dir),
                // Left by a batch whose commit never happened: the id is free again.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    for d in made {
                        let _ = std::fs::remove_dir(d);
                    }
                    let msg = format!("creating {}: {e}", dir.display());
                    return Err(match e.raw_os_error() {
                        Some(libc::ENOSPC | libc::EDQUOT) => CoreError::Full(msg),
                        _ => CoreError::Internal(msg),
                    });
                }
            }
        }
        Ok(())
    }
}
