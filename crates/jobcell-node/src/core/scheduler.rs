//! Starting jobs: the scheduler, the spawn requests after the commit, and a supervisor's
//! report that it started.

use super::finish::remove_scratch;
use super::*;

impl Core {
    /// A supervisor was spawned: watch its pidfd and record the job running.
    pub(super) fn started(
        &mut self,
        tx: &Batch,
        id: u64,
        attempt: u32,
        pid: i32,
        start: u64,
        effects: &mut Vec<Effect>,
    ) -> Result<(), StoreError> {
        let Some(j) = self.jobs.get_mut(&id) else {
            return Ok(());
        };
        if j.info.attempt != attempt || j.info.state != State::Starting {
            return Ok(());
        }
        j.sup = Some((pid, start));
        match sys::pidfd_for(pid, start) {
            Ok(fd) => {
                let fd = Arc::new(fd);
                j.pidfd = Some(fd.clone());
                if j.pending.is_some() {
                    effects.push(Effect::Signal(fd.clone(), libc::SIGTERM));
                }
                self.watch(id, attempt, fd);
            }
            Err(_) => self.local.push_back(Cmd::Exited { id, attempt }),
        }
        let j = self.jobs.get_mut(&id).expect("present");
        j.info.state = State::Running;
        tx.mark_running(id, pid, start)?;
        tx.add_event(
            id,
            "started",
            Some(&serde_json::json!({"supervisor_pid": pid, "attempt": attempt})),
        )?;
        let t = now();
        if let Some(q) = self.queued_at.remove(&id) {
            let c = &mut self.counters;
            let lat = (t - q).max(0.0);
            for (i, b) in SCHED_BUCKETS.iter().enumerate() {
                if lat <= *b {
                    c.sched_buckets[i] += 1;
                }
            }
            c.sched_sum += lat;
            c.sched_count += 1;
        }
        self.counters.started += 1;
        self.ulog_job(id, userlog::Event::Executing);
        let started_at = self.jobs[&id].info.started_at.unwrap_or(t);
        self.arm_deadline(id, attempt, started_at);
        Ok(())
    }

    /// Start queued jobs that fit. Between owners the node is shared: the owner with the
    /// fewest CPUs in use goes next; of owners using as many, the one whose last start is
    /// oldest (so equal users take turns), then the one whose next job was submitted first.
    /// A job's priority orders only its owner's jobs (HTCondor's JobPrio), then submission:
    /// no user's `--priority` jumps another's queue. An owner's first job that fits starts
    /// (smaller jobs fill the room that a large one cannot use).
    pub(super) fn schedule(
        &mut self,
        tx: &Batch,
        effects: &mut Vec<Effect>,
    ) -> Result<(), StoreError> {
        let node = self.cfg.node;
        let room = |alloc_cpus: f64, alloc_mem: u64| {
            node.cpus - alloc_cpus >= 1e-6 && alloc_mem < node.memory
        };
        if self.queue.is_empty() || !room(self.alloc_cpus, self.alloc_mem) {
            return Ok(());
        }
        // Owners with queued jobs; the next one of an owner is its first that fits (smaller
        // jobs fill room a large one cannot use). A job picked leaves the queue at once, so
        // the queue alone says what is left.
        let mut started = Vec::new();
        let mut owners: Vec<u32> = self.queue.owners().collect();
        while room(self.alloc_cpus, self.alloc_mem) && !owners.is_empty() {
            let used = |o: &u32| self.alloc_by_owner.get(o).copied().unwrap_or(0.0);
            let turn = |o: &u32| self.last_start.get(o).copied().unwrap_or(0);
            let head = |o: &u32| self.queue.head(*o);
            let (at, &owner) = owners
                .iter()
                .enumerate()
                .min_by(|(_, a), (_, b)| {
                    used(a)
                        .total_cmp(&used(b))
                        .then(turn(a).cmp(&turn(b)))
                        .then(head(a).cmp(&head(b)))
                })
                .expect("owners is not empty");
            let (free_cpus, free_mem) = (node.cpus - self.alloc_cpus, node.memory - self.alloc_mem);
            let Some(id) = self.queue.first_fitting(owner, free_cpus, free_mem) else {
                // Nothing more of this owner's fits in what is left: the others' may.
                owners.swap_remove(at);
                continue;
            };
            self.queue.remove(&self.jobs[&id].info);
            self.allocate(allocation(&self.jobs[&id].info));
            self.starts += 1;
            self.last_start.insert(owner, self.starts);
            started.push(id);
        }
        let t = now();
        for id in started {
            let j = self.jobs.get_mut(&id).expect("queued job");
            j.info.attempt += 1;
            j.info.state = State::Starting;
            j.info.started_at = Some(t);
            j.info.suspended_s = 0.0;
            j.info.suspended_at = None;
            // Committed before the supervisor exists: a crash from here on is resolved by the
            // claim protocol, never by running the job a second time.
            tx.mark_starting(id, j.info.attempt, t)?;
            effects.push(Effect::Start(id));
        }
        Ok(())
    }

    /// What the committed batch decided: spawn supervisors, signal them, clean up after dead
    /// ones. Only a failed spawner is an error (fatal).
    pub(super) fn perform(&mut self, effects: Vec<Effect>) -> Result<(), CoreError> {
        let mut starts: Vec<(u64, u32, PathBuf, Vec<u8>)> = Vec::new();
        for e in effects {
            match e {
                Effect::Start(id) => {
                    let j = &self.jobs[&id];
                    let dir = self.job_dir(id);
                    match self.prepare_dir(id, &dir) {
                        Ok(spec) => starts.push((id, j.info.attempt, dir, spec)),
                        Err(why) => self.local.push_back(Cmd::SpawnFailed {
                            id,
                            attempt: j.info.attempt,
                            why,
                        }),
                    }
                }
                Effect::Signal(fd, sig) => {
                    if let Err(e) = sys::pidfd_signal(&fd, sig) {
                        if e.raw_os_error() != Some(libc::ESRCH) {
                            warn!("signalling a supervisor: {e}");
                        }
                    }
                }
                Effect::Cleanup { id, pid } => {
                    // What a SIGKILLed supervisor left: its job cgroup (processes are already
                    // dead through PDEATHSIG; remove() kills stragglers) and its scratch dir.
                    if let Some(root) = &self.cgroups {
                        if let Ok(cg) = root.open(&jobdir::cgroup_name(pid, id)) {
                            if let Err(e) = cg.remove() {
                                warn!("job {id}: removing its cgroup: {e}");
                            }
                        }
                    }
                    remove_scratch(&self.cfg.scratch_base, &jobdir::cgroup_name(pid, id));
                }
            }
        }
        if starts.is_empty() {
            return Ok(());
        }
        let reqs: Vec<(&Path, u32, &[u8])> = starts
            .iter()
            .map(|(_, a, d, s)| (d.as_path(), *a, s.as_slice()))
            .collect();
        match self.spawner.spawn_many(&reqs) {
            Ok(results) => {
                for ((id, attempt, _, _), r) in starts.iter().zip(results) {
                    let (id, attempt) = (*id, *attempt);
                    self.local.push_back(match r {
                        Ok((pid, start)) => Cmd::Started {
                            id,
                            attempt,
                            pid,
                            start,
                        },
                        Err(why) => Cmd::SpawnFailed { id, attempt, why },
                    });
                }
            }
            // Without the spawner no job can start; a restart forks a new one and the claim
            // protocol sorts out what was spawned.
            Err(e) => return Err(CoreError::Spawner(e)),
        }
        Ok(())
    }

    /// The job's dir, and its supervisor's spec: handed to a forked supervisor in the spawn
    /// request (empty here), written to `spec.json` for an exec'd one.
    pub(super) fn prepare_dir(&self, id: u64, dir: &Path) -> Result<Vec<u8>, String> {
        let j = &self.jobs[&id];
        jobdir::make_dir(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut spec: JobSpec =
            serde_json::from_str(&j.spec).map_err(|e| format!("stored spec: {e}"))?;
        // The node's policy as it is now, not as it was at submission: a job queued before
        // the admin tightened `[limits]` or `[scratch] disk` (or by an older version without
        // them) starts within today's, or not at all.
        spec.resources.scratch_bound = match spec.resources.disk {
            None => self.cfg.scratch_bound,
            Some(_) => None,
        };
        if j.info.owner != 0 {
            self.cfg
                .limits
                .apply(&mut spec)
                .map_err(|e| format!("refused by the node's limits at start: {e}"))?;
        }
        let x: JobExtra = j
            .extra
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| format!("stored job extras: {e}"))?
            .unwrap_or_default();
        let s = SupervisorSpec {
            id,
            cwd: x.cwd.map(PathBuf::from),
            stdin: x.stdin.map(PathBuf::from),
            transfer_input: x.transfer_input.into_iter().map(PathBuf::from).collect(),
            transfer: x.transfer,
            spec,
            // Only a path the owner named; the default is the supervisor's to make, as root.
            stdout: j.stdout.clone().map(PathBuf::from),
            stderr: j.stderr.clone().map(PathBuf::from),
            cgroup_parent: self.cfg.cgroup_parent.clone(),
            owner: j.info.owner,
            images: Some(self.cfg.images.clone()),
            job_uids: self.cfg.job_uids,
            usage_interval: self.cfg.usage_interval,
        };
        let data = serde_json::to_vec(&s).map_err(|e| e.to_string())?;
        if !self.spawner.execs() {
            return Ok(data);
        }
        sys::create_private(&jobdir::spec_path(dir))
            .and_then(|mut f| std::io::Write::write_all(&mut f, &data))
            .map_err(|e| format!("writing spec.json: {e}"))?;
        Ok(Vec::new())
    }
}
