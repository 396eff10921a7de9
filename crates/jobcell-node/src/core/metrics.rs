//! The Prometheus text exposition (`GET /metrics`, format version 0.0.4): jobs by state, the
//! node's offer and allocation, what the jobs' cgroups use, and counters since the start.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::*;

impl Core {
    /// The whole exposition, in the order of the pieces below.
    pub(super) fn metrics(&self, tx: &Batch) -> Result<String, CoreError> {
        let mut o = String::new();
        self.write_jobs_by_state(tx, &mut o)?;
        self.write_node_offer(&mut o);
        if let Some(root) = &self.cgroups {
            write_node_usage(root, &mut o);
            self.write_job_usage(root, &mut o);
        }
        self.write_counters(&mut o);
        Ok(o)
    }

    /// Jobs by state: the unfinished from memory, the finished from the database.
    fn write_jobs_by_state(&self, tx: &Batch, o: &mut String) -> Result<(), CoreError> {
        let mut by_state: BTreeMap<&str, u64> = [
            "queued",
            "held",
            "starting",
            "running",
            "suspended",
            "completed",
            "failed",
            "removed",
        ]
        .iter()
        .map(|s| (*s, 0))
        .collect();
        for (k, n) in tx.ended_counts()? {
            if let Some(s @ (State::Completed | State::Failed | State::Removed)) = State::parse(&k)
            {
                *by_state.entry(s.as_str()).or_default() = n;
            }
        }
        for j in self.jobs.values() {
            *by_state.entry(j.info.state.as_str()).or_default() += 1;
        }
        head(o, "jobcell_jobs", "gauge", "Jobs by state.");
        for (k, n) in &by_state {
            let _ = writeln!(o, "jobcell_jobs{{state=\"{k}\"}} {n}");
        }
        Ok(())
    }

    /// What the node offers to jobs and how much of it is allocated.
    fn write_node_offer(&self, o: &mut String) {
        let node = self.cfg.node;
        head(o, "jobcell_node_cpus", "gauge", "Cores offered to jobs.");
        let _ = writeln!(o, "jobcell_node_cpus {}", node.cpus);
        head(
            o,
            "jobcell_node_cpus_allocated",
            "gauge",
            "Cores allocated to starting, running and suspended jobs.",
        );
        let _ = writeln!(
            o,
            "jobcell_node_cpus_allocated {}",
            (self.alloc_cpus * 1000.0).round() / 1000.0
        );
        head(
            o,
            "jobcell_node_memory_bytes",
            "gauge",
            "Memory offered to jobs.",
        );
        let _ = writeln!(o, "jobcell_node_memory_bytes {}", node.memory);
        head(
            o,
            "jobcell_node_memory_allocated_bytes",
            "gauge",
            "Memory allocated to starting, running and suspended jobs.",
        );
        let _ = writeln!(o, "jobcell_node_memory_allocated_bytes {}", self.alloc_mem);
    }

    /// Per running (or suspended) job, from its own cgroup.
    fn write_job_usage(&self, root: &CgroupRoot, o: &mut String) {
        let mut running: Vec<&Job> = self
            .jobs
            .values()
            .filter(|j| matches!(j.info.state, State::Running | State::Suspended))
            .collect();
        running.sort_by_key(|j| j.info.id);
        let mut cpu_lines = String::new();
        let mut mem_lines = String::new();
        for j in running {
            let Some((pid, _)) = j.sup else { continue };
            let Ok(cg) = root.open(&jobdir::cgroup_name(pid, j.info.id)) else {
                continue;
            };
            let u = cg.stats();
            cg.leak();
            let Ok(u) = u else { continue };
            let labels = format!(
                "id=\"{}\",cluster=\"{}\",proc=\"{}\",owner=\"{}\"",
                j.info.id,
                j.info.cluster,
                j.info.proc,
                sys::user_name(j.info.owner).replace(['\\', '"', '\n'], "_")
            );
            let _ = writeln!(
                cpu_lines,
                "jobcell_job_cpu_seconds_total{{{labels}}} {:.6}",
                (u.cpu_user_us + u.cpu_system_us) as f64 / 1e6
            );
            let _ = writeln!(
                mem_lines,
                "jobcell_job_memory_bytes{{{labels}}} {}",
                u.memory_current
            );
        }
        head(
            o,
            "jobcell_job_cpu_seconds_total",
            "counter",
            "CPU time used by each running job.",
        );
        *o += &cpu_lines;
        head(
            o,
            "jobcell_job_memory_bytes",
            "gauge",
            "Memory charged to each running job now.",
        );
        *o += &mem_lines;
    }

    /// Counters since the daemon started, and the scheduling latency histogram.
    fn write_counters(&self, o: &mut String) {
        let c = &self.counters;
        head(
            o,
            "jobcell_oom_kills_total",
            "counter",
            "Jobs OOM-killed at their memory limit (and held) since the daemon started.",
        );
        let _ = writeln!(o, "jobcell_oom_kills_total {}", c.oom_holds);
        head(
            o,
            "jobcell_preemptions_total",
            "counter",
            "Jobs stopped by a node policy since the daemon started, by policy.",
        );
        labeled(
            o,
            "jobcell_preemptions_total",
            "reason",
            &["memory", "disk", "duration", "pressure"],
            &c.preemptions,
        );
        head(
            o,
            "jobcell_jobs_started_total",
            "counter",
            "Job attempts started since the daemon started.",
        );
        let _ = writeln!(o, "jobcell_jobs_started_total {}", c.started);
        head(
            o,
            "jobcell_jobs_ended_total",
            "counter",
            "Job attempts that ended since the daemon started, by outcome.",
        );
        labeled(
            o,
            "jobcell_jobs_ended_total",
            "state",
            &["completed", "failed", "removed", "held"],
            &c.finished,
        );
        head(
            o,
            "jobcell_schedule_latency_seconds",
            "histogram",
            "From submission or release to the job's supervisor running.",
        );
        for (i, b) in SCHED_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "jobcell_schedule_latency_seconds_bucket{{le=\"{b}\"}} {}",
                c.sched_buckets[i]
            );
        }
        let _ = writeln!(
            o,
            "jobcell_schedule_latency_seconds_bucket{{le=\"+Inf\"}} {}",
            c.sched_count
        );
        let _ = writeln!(o, "jobcell_schedule_latency_seconds_sum {:.6}", c.sched_sum);
        let _ = writeln!(
            o,
            "jobcell_schedule_latency_seconds_count {}",
            c.sched_count
        );
    }
}

/// What all jobs use together, from their cgroups' parent (as the kernel charges it).
fn write_node_usage(root: &CgroupRoot, o: &mut String) {
    let parents = root.parent_paths();
    let read = |f: &str| {
        parents
            .iter()
            .find_map(|p| std::fs::read_to_string(p.join(f)).ok())
    };
    if let Some(m) = read("memory.usage_in_bytes").or_else(|| read("memory.current")) {
        if let Ok(m) = m.trim().parse::<u64>() {
            head(
                o,
                "jobcell_node_memory_used_bytes",
                "gauge",
                "Memory in use by all jobs (their cgroups' parent, as the kernel charges it).",
            );
            let _ = writeln!(o, "jobcell_node_memory_used_bytes {m}");
        }
    }
    let cpu_s = read("cpuacct.usage")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ns| ns as f64 / 1e9)
        .or_else(|| {
            read("cpu.stat")?
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
                .map(|us| us as f64 / 1e6)
        });
    if let Some(c) = cpu_s {
        head(
            o,
            "jobcell_node_cpu_used_seconds_total",
            "counter",
            "CPU time used by all jobs (their cgroups' parent).",
        );
        let _ = writeln!(o, "jobcell_node_cpu_used_seconds_total {c:.6}");
    }
}

/// A metric's HELP and TYPE lines.
fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One sample per label value, 0 for values not seen yet (so every series exists).
fn labeled(
    o: &mut String,
    name: &str,
    label: &str,
    values: &[&str],
    counts: &BTreeMap<&'static str, u64>,
) {
    for v in values {
        let n = counts.get(v).copied().unwrap_or(0);
        let _ = writeln!(o, "{name}{{{label}=\"{v}\"}} {n}");
    }
}
