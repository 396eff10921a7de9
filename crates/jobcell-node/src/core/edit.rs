//! condor_qedit: a queued or held job's request or custom attributes changed in place, within
//! the same bounds as at submission; the job runs with what the edit left.

use jobcell_classad::{EvalBudget, Expr, Value};

use super::*;
use crate::store::JobEdit;

/// One attribute and its new value (ClassAd text, checked to parse).
#[derive(Debug, Clone)]
pub struct Edit {
    pub attribute: String,
    pub value: String,
}

/// The request attributes qedit changes, each what the job runs with.
const REQUESTS: [&str; 4] = ["RequestMemory", "RequestCpus", "RequestDisk", "JobPrio"];

/// Attributes the daemon sets, or that say what and where the job runs: not the owner's to
/// rewrite after submission (submit again instead).
const FIXED: &[&str] = &[
    "Owner",
    "User",
    "ClusterId",
    "ProcId",
    "JobStatus",
    "QDate",
    "NumJobStarts",
    "JobCurrentStartDate",
    "CompletionDate",
    "EnteredCurrentStatus",
    "HoldReason",
    "HoldReasonCode",
    "RemoveReason",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
    "RemoteWallClockTime",
    "RemoteUserCpu",
    "RemoteSysCpu",
    "MemoryUsage",
    "Cmd",
    "Args",
    "Arguments",
    "Env",
    "Environment",
    "Iwd",
    "In",
    "Out",
    "Err",
    "UserLog",
    "JobUniverse",
    "TransferInput",
    "TransferOutput",
    "ShouldTransferFiles",
    "WhenToTransferOutput",
    "AllowedJobDuration",
    "PeriodicHold",
    "PeriodicRelease",
    "PeriodicRemove",
    "OnExitHold",
    "OnExitRemove",
    "Requirements",
];

/// Why an attribute name cannot be edited, or None.
pub fn refuse_attribute(name: &str) -> Option<String> {
    let valid = name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Some(format!(
            "'{name}' is not an attribute name (letters, digits and _, at most 128)"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("jobcell") || FIXED.iter().any(|f| f.eq_ignore_ascii_case(name)) {
        return Some(format!(
            "{name} cannot be changed by qedit (editable: {}, JobBatchName and custom attributes)",
            REQUESTS.join(", ")
        ));
    }
    None
}

/// `value` as a whole number of at least `min`, for `attr`.
fn whole(attr: &str, value: &Value, min: i64, max: i64) -> Result<i64, CoreError> {
    let n = match value {
        Value::Int(i) => Some(*i),
        Value::Real(r) if r.fract() == 0.0 && r.is_finite() => Some(*r as i64),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(CoreError::BadRequest(format!(
            "{attr} must be a whole number from {min} to {max}, not {value}"
        ))),
    }
}

impl Core {
    /// Sets one attribute of a queued or held job (the caller's check is done).
    pub(super) fn edit(
        &mut self,
        tx: &Batch,
        caller: u32,
        id: u64,
        edit: &Edit,
    ) -> Result<JobInfo, CoreError> {
        let bad = |m: String| CoreError::BadRequest(m);
        let expr =
            Expr::parse(&edit.value).map_err(|e| bad(format!("value '{}': {e}", edit.value)))?;
        let j = &self.jobs[&id];
        let mut spec: JobSpec = serde_json::from_str(&j.spec)
            .map_err(|e| CoreError::Internal(format!("job {id}'s stored spec: {e}")))?;
        let mut x: JobExtra = j
            .extra
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| CoreError::Internal(format!("job {id}'s stored extras: {e}")))?
            .unwrap_or_default();
        let (owner, old_priority) = (j.info.owner, j.info.priority);
        let mut priority = old_priority;
        // Evaluated against the job's ad as `q -l` shows it, so `RequestMemory * 2` works.
        let ad = select::classad_of(self.ad(tx, caller, id)?);
        let mut budget = EvalBudget {
            steps: 100_000,
            bytes: 1 << 20,
        };
        let value = expr.eval_within(&ad, None, &mut budget);
        let name = REQUESTS
            .iter()
            .find(|r| r.eq_ignore_ascii_case(&edit.attribute))
            .copied()
            .unwrap_or(edit.attribute.as_str());
        // What the ad keeps: a request as its value, anything else as written.
        let text = match name {
            "RequestMemory" => {
                let mib = whole(name, &value, 1, 1 << 40)?;
                spec.resources.memory = Some((mib as u64) << 20);
                mib.to_string()
            }
            "RequestDisk" => {
                let kib = whole(name, &value, 1, 1 << 50)?;
                spec.resources.disk = Some((kib as u64) << 10);
                kib.to_string()
            }
            "RequestCpus" => {
                let cpus = match value {
                    Value::Int(i) => i as f64,
                    Value::Real(r) => r,
                    _ => f64::NAN,
                };
                if !(cpus.is_finite() && cpus > 0.0) {
                    return Err(bad(format!(
                        "RequestCpus must be a number > 0, not {value}"
                    )));
                }
                spec.resources.cpus = Some(cpus);
                cpus.to_string()
            }
            "JobPrio" => {
                priority = whole(name, &value, i32::MIN as i64, i32::MAX as i64)? as i32;
                priority.to_string()
            }
            other => {
                if let Some(why) = refuse_attribute(other) {
                    return Err(bad(why));
                }
                edit.value.clone()
            }
        };
        spec.validate().map_err(|e| bad(e.to_string()))?;
        let cpus = spec.resources.cpus.unwrap_or(self.cfg.default_cpus);
        let memory = spec.resources.memory.unwrap_or(self.cfg.default_memory);
        // Exactly as at submission: a user's job within `[limits]` and the node, whoever edits.
        self.bound(owner != 0, &mut spec, cpus, memory)?;
        if x.ad.is_empty() {
            x.ad = ads::spec_ad(&spec);
        }
        match x.ad.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(e) => e.1 = text.clone(),
            None => {
                if x.ad.len() >= 10_000 {
                    return Err(bad("a job ad has at most 10000 attributes".into()));
                }
                x.ad.push((name.to_string(), text.clone()));
            }
        }
        let spec_json =
            serde_json::to_string(&spec).map_err(|e| CoreError::Internal(e.to_string()))?;
        let extra_json =
            serde_json::to_string(&x).map_err(|e| CoreError::Internal(e.to_string()))?;
        tx.edit_job(
            id,
            &JobEdit {
                spec: &spec_json,
                cpus,
                memory,
                priority,
                extra: Some(&extra_json),
            },
        )?;
        tx.add_event(
            id,
            "edited",
            Some(&serde_json::json!({"attribute": name, "value": text, "by": caller})),
        )?;
        let before = self.jobs[&id].info.clone();
        let j = self.jobs.get_mut(&id).expect("present");
        j.spec = spec_json;
        j.extra = Some(extra_json);
        j.info.cpus = cpus;
        j.info.memory = memory;
        j.info.priority = priority;
        if name.eq_ignore_ascii_case("JobBatchName") {
            j.info.batch_name = crate::store::batch_name_in(&x.ad);
        }
        let info = j.info.clone();
        // The queue orders by priority and groups by shape (cpus, memory): re-file the job.
        if info.state == State::Queued
            && (priority != before.priority || cpus != before.cpus || memory != before.memory)
        {
            self.queue.remove(&before);
            self.queue.insert(&info);
        }
        Ok(info)
    }
}
