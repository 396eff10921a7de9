//! A job's ClassAd (`jobcell q -l`).

use jobcell_spec::submit::classad_string as q;

use super::*;

impl Core {
    /// The job's ClassAd: what its submit file said (or, for a quick submission, what its
    /// spec says in HTCondor's names), with the live attributes as the daemon knows them now.
    /// Others than the owner and root do not see the environment (it may hold secrets).
    pub(super) fn ad(
        &self,
        tx: &Batch,
        caller: u32,
        id: u64,
    ) -> Result<Vec<(String, String)>, CoreError> {
        let (info, spec, extra, policy_state) = match self.jobs.get(&id) {
            Some(j) => (
                j.info.clone(),
                j.spec.clone(),
                j.extra.clone(),
                j.policy_state.clone(),
            ),
            None => {
                let r = load(tx, id)?;
                let st = job_policy::PolicyState::decode(r.policy.as_deref());
                (r.info, r.spec, r.extra, st)
            }
        };
        let x: JobExtra = extra
            .as_deref()
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or_default();
        let spec: Option<JobSpec> = serde_json::from_str(&spec).ok();
        let mut ad: Vec<(String, String)> = x.ad.clone();
        if ad.is_empty() {
            if let Some(sp) = &spec {
                ad = spec_ad(sp);
            }
        }
        let limit = x
            .allowed_job_duration
            .or(self.cfg.policy.allowed_job_duration);
        set_live_attributes(&mut ad, &info, limit);
        if matches!(job_policy::JobPolicy::from_ad(&x.ad), Ok(Some(_))) {
            job_policy::set_policy_attributes(&mut ad, &info, &policy_state, now(), None);
        }
        readable_quoting(&mut ad);
        if caller != 0 && caller != info.owner {
            ad.retain(|(k, _)| !k.eq_ignore_ascii_case("Environment"));
        }
        Ok(ad)
    }
}

/// A quick submission's ad: its spec in HTCondor's names.
pub(super) fn spec_ad(sp: &JobSpec) -> Vec<(String, String)> {
    let (cmd, args) = sp
        .argv
        .split_first()
        .map(|(c, a)| (c.clone(), a.to_vec()))
        .unwrap_or_default();
    let env: std::collections::BTreeMap<String, String> = sp.env.iter().cloned().collect();
    let mut ad = vec![
        ("Cmd".into(), q(&cmd)),
        (
            "Arguments".into(),
            q(&jobcell_spec::submit::args_to_v2_raw(&args)),
        ),
        (
            "Environment".into(),
            q(&jobcell_spec::submit::env_to_v2_raw(&env)),
        ),
    ];
    if let Some(i) = &sp.image {
        ad.push(("JobcellImage".into(), q(i)));
    }
    ad
}

/// What the daemon knows of the job now, over what its submit file said.
pub(super) fn set_live_attributes(
    ad: &mut Vec<(String, String)>,
    info: &JobInfo,
    duration_limit: Option<f64>,
) {
    let status = match info.state {
        State::Queued => 1,
        State::Starting | State::Running => 2,
        State::Removed => 3,
        State::Completed | State::Failed => 4,
        State::Held => 5,
        State::Suspended => 7,
    };
    set(ad, "ClusterId", info.cluster.to_string());
    set(ad, "ProcId", info.proc.to_string());
    set(ad, "JobcellId", info.id.to_string());
    set(ad, "JobStatus", status.to_string());
    set(ad, "JobcellState", q(info.state.as_str()));
    set(ad, "Owner", q(&sys::user_name(info.owner)));
    set(ad, "JobcellUser", q(&info.user));
    // The uid the job ran as: its own when it ran as nobody with per-job uids.
    if let Some(uid) = info
        .report
        .as_ref()
        .and_then(|r| r["isolation"]["user"]["uid"].as_u64())
    {
        set(ad, "JobcellUid", uid.to_string());
    }
    set(ad, "JobPrio", info.priority.to_string());
    set(ad, "RequestCpus", info.cpus.to_string());
    set(
        ad,
        "RequestMemory",
        info.memory.div_ceil(1 << 20).to_string(),
    );
    set(ad, "QDate", (info.submitted_at as i64).to_string());
    set(ad, "NumJobStarts", info.attempt.to_string());
    if let Some(t) = info.started_at {
        set(ad, "JobCurrentStartDate", (t as i64).to_string());
    }
    if let Some(t) = info.ended_at {
        set(ad, "CompletionDate", (t as i64).to_string());
    }
    if let Some(limit) = duration_limit {
        set(ad, "AllowedJobDuration", (limit as i64).to_string());
    }
    match (&info.hold_reason, info.state) {
        (Some(r), State::Held) => {
            set(ad, "HoldReason", q(r));
            if r == OOM_HOLD_REASON {
                set(ad, "HoldReasonCode", "34".into());
            } else if r.starts_with("The job exceeded allowed job duration") {
                set(ad, "HoldReasonCode", "46".into());
            } else if r.starts_with("The job exceeded allowed execute duration") {
                set(ad, "HoldReasonCode", "47".into());
            }
        }
        _ => {
            ad.retain(|(k, _)| {
                k != "HoldReason" && k != "HoldReasonCode" && k != "HoldReasonSubCode"
            });
        }
    }
    if let Some(r) = &info.reason {
        set(
            ad,
            if info.state == State::Removed {
                "RemoveReason"
            } else {
                "JobcellReason"
            },
            q(r),
        );
    }
    if let Some(c) = info.exit_code {
        set(ad, "ExitCode", c.to_string());
        set(ad, "ExitBySignal", "false".into());
    }
    if let Some(sig) = info.signal {
        set(ad, "ExitBySignal", "true".into());
        set(ad, "ExitSignal", sig.to_string());
    }
    if let Some(r) = &info.report {
        if let Some(w) = r["wall_time_s"].as_f64() {
            set(ad, "RemoteWallClockTime", format!("{w:.3}"));
        }
        let cpu = |k: &str| r[k].as_u64().map(|us| format!("{:.3}", us as f64 / 1e6));
        if let Some(u) = cpu("cpu_user_us") {
            set(ad, "RemoteUserCpu", u);
        }
        if let Some(u) = cpu("cpu_system_us") {
            set(ad, "RemoteSysCpu", u);
        }
        if let Some(p) = r["usage"]["memory_peak"].as_u64() {
            set(ad, "MemoryUsage", p.div_ceil(1 << 20).to_string());
        }
        if let Some(o) = r["oom_killed"].as_bool() {
            set(ad, "JobcellOomKilled", o.to_string());
        }
    }
}

/// Arguments and Environment (V2 syntax) with each word quoted whole (`'a b'`), as a person
/// writes them; they split into the same words as HTCondor's per-character quoting.
fn readable_quoting(ad: &mut [(String, String)]) {
    for (name, text) in ad.iter_mut() {
        if !(name.eq_ignore_ascii_case("Arguments") || name.eq_ignore_ascii_case("Environment")) {
            continue;
        }
        let raw = match jobcell_classad::Expr::parse(text)
            .ok()
            .map(|e| e.eval_in(&jobcell_classad::ClassAd::new(), None))
        {
            Some(jobcell_classad::Value::String(s)) => s,
            _ => continue,
        };
        *text = q(&jobcell_spec::submit::v2_raw_readable(&raw));
    }
}

/// Sets an attribute (names are case-insensitive), adding it if absent.
pub(super) fn set(ad: &mut Vec<(String, String)>, name: &str, value: String) {
    match ad.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        Some(e) => e.1 = value,
        None => ad.push((name.to_string(), value)),
    }
}
