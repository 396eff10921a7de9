//! Reads: one job, its events and output paths, the node's status, the history.

use super::*;

impl Core {
    pub(super) fn get(&self, tx: &Batch, id: u64) -> Result<JobInfo, CoreError> {
        if let Some(j) = self.jobs.get(&id) {
            return Ok(j.info.clone());
        }
        load(tx, id).map(|r| r.info)
    }

    pub(super) fn events(&self, tx: &Batch, caller: u32, id: u64) -> Result<Vec<Event>, CoreError> {
        let owner = self.owner_of(tx, id)?;
        self.check_owner(caller, owner, id, "read the events of")?;
        Ok(tx.events(id)?)
    }

    /// The job's usage series file: the same readers as its events and output.
    pub(super) fn usage_path(
        &self,
        tx: &Batch,
        caller: u32,
        id: u64,
    ) -> Result<PathBuf, CoreError> {
        let owner = self.owner_of(tx, id)?;
        self.check_owner(caller, owner, id, "read the usage of")?;
        Ok(jobdir::usage_path(&self.job_dir(id)))
    }

    pub(super) fn owner_of(&self, tx: &Batch, id: u64) -> Result<u32, CoreError> {
        match self.jobs.get(&id) {
            Some(j) => Ok(j.info.owner),
            None => Ok(load(tx, id)?.info.owner),
        }
    }

    pub(super) fn output(
        &self,
        tx: &Batch,
        caller: u32,
        id: u64,
        which: Stream,
    ) -> Result<PathBuf, CoreError> {
        let (owner, out, err) = match self.jobs.get(&id) {
            Some(j) => (j.info.owner, j.stdout.clone(), j.stderr.clone()),
            None => {
                let r = load(tx, id)?;
                (r.info.owner, r.stdout, r.stderr)
            }
        };
        self.check_owner(caller, owner, id, "read the output of")?;
        let custom = match which {
            Stream::Stdout => out,
            Stream::Stderr => err,
        };
        if let Some(p) = custom {
            // Never read a path the user chose with the daemon's privileges.
            return Err(CoreError::Conflict(format!(
                "job {id}'s output goes to {p}; read it there"
            )));
        }
        Ok(custom.map(PathBuf::from).unwrap_or_else(|| {
            self.job_dir(id).join(match which {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            })
        }))
    }

    pub(super) fn status(&self, tx: &Batch) -> Result<NodeStatus, CoreError> {
        let mut jobs = std::collections::BTreeMap::new();
        for (s, n) in tx.counts_by_state()? {
            jobs.insert(s, n);
        }
        let load_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let memory_used = self.cgroups.as_ref().and_then(|r| {
            r.parent_paths().iter().find_map(|p| {
                ["memory.usage_in_bytes", "memory.current"]
                    .iter()
                    .find_map(|f| std::fs::read_to_string(p.join(f)).ok()?.trim().parse().ok())
            })
        });
        Ok(NodeStatus {
            cpus_total: self.cfg.node.cpus,
            memory_total: self.cfg.node.memory,
            cpus_allocated: (self.alloc_cpus * 1000.0).round() / 1000.0,
            memory_allocated: self.alloc_mem,
            load_1m,
            memory_used,
            jobs,
            daemon_pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            machine_ad: crate::machine::to_pairs(&crate::machine::machine_ad(
                self.cfg.node.cpus,
                self.cfg.node.memory,
                crate::machine::disk_size(&self.cfg.scratch_base),
                env!("CARGO_PKG_VERSION"),
            )),
        })
    }
}
