//! HTCondor's job policy expressions, evaluated by the daemon with MY = the job's ad as it is
//! now: `OnExitHold`/`OnExitRemove` (which carries `max_retries`, `retry_until` and
//! `success_exit_code`) and `LeaveJobInQueue` when an attempt exits; `PeriodicRemove`,
//! `PeriodicHold` and `PeriodicRelease` every `[policy] periodic_expr_interval` over the jobs
//! in memory that have them (one timer for the node; no database read per tick).

use jobcell_classad::{ClassAd, EvalBudget, Expr, Value};
use serde::{Deserialize, Serialize};

use super::finish::Ending;
use super::*;

/// HTCondor's HoldReasonCode of a hold by the job's own policy expression.
pub const HOLD_CODE_JOB_POLICY: i64 = 3;
/// HTCondor's HoldReasonCode of a hold by its owner (or root): `jobcell hold`.
pub const HOLD_CODE_USER_REQUEST: i64 = 1;

/// The work one evaluation of one expression may do: far more than a real policy needs, and
/// little enough that a user's pathological expression cannot stall the core, which serves
/// everyone.
fn budget() -> EvalBudget {
    EvalBudget {
        steps: 20_000,
        bytes: 1 << 20,
    }
}

/// What is wrong with a job's policy attributes (they come from the client).
#[derive(Debug, Error, PartialEq)]
pub enum PolicyError {
    #[error("the job's {attr} is not a ClassAd expression ({why})")]
    Parse { attr: &'static str, why: String },
    #[error("the job's {attr} = {value} must be a whole number{min}")]
    Count {
        attr: &'static str,
        value: String,
        min: &'static str,
    },
}

/// The policy attributes jobcell evaluates.
const EXPRESSIONS: [&str; 10] = [
    "PeriodicHold",
    "PeriodicHoldReason",
    "PeriodicHoldSubCode",
    "PeriodicRelease",
    "PeriodicRemove",
    "OnExitHold",
    "OnExitHoldReason",
    "OnExitHoldSubCode",
    "OnExitRemove",
    "LeaveJobInQueue",
];

/// A job's policy: its expressions (checked when it was submitted), and the limits among them.
#[derive(Debug, Clone, Default)]
pub(super) struct JobPolicy {
    /// (attribute, expression as written), for the expressions the job has.
    exprs: Vec<(&'static str, String)>,
    /// `allowed_execute_duration` (seconds).
    pub execute_limit: Option<f64>,
    /// `job_max_vacate_time` (seconds); the job's spec carries it as its stop grace.
    pub vacate_time: Option<u64>,
    /// The job's submit ad, kept so that an evaluation decodes nothing.
    ad: Vec<(String, String)>,
}

impl JobPolicy {
    /// The policy in a job's ad; None when it has none. Checked again here because the ad
    /// comes from the client.
    pub fn from_ad(ad: &[(String, String)]) -> Result<Option<JobPolicy>, PolicyError> {
        let find = |name: &str| {
            ad.iter()
                .rev()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        let mut p = JobPolicy::default();
        for attr in EXPRESSIONS {
            if let Some(text) = find(attr) {
                Expr::parse(&text).map_err(|e| PolicyError::Parse {
                    attr,
                    why: e.to_string(),
                })?;
                p.exprs.push((attr, text));
            }
        }
        let count = |attr: &'static str, min: i64, says: &'static str| {
            find(attr)
                .map(|v| {
                    v.parse::<i64>()
                        .ok()
                        .filter(|n| *n >= min)
                        .ok_or(PolicyError::Count {
                            attr,
                            value: v.clone(),
                            min: says,
                        })
                })
                .transpose()
        };
        p.execute_limit = count("AllowedExecuteDuration", 1, " > 0")?.map(|n| n as f64);
        p.vacate_time = count("JobMaxVacateTime", 0, " >= 0")?.map(|n| n as u64);
        // Read by OnExitRemove; a bad one would make it undefined, not wrong.
        count("JobMaxRetries", 0, " >= 0")?;
        count("JobSuccessExitCode", i64::MIN, "")?;
        let any = !p.exprs.is_empty() || p.execute_limit.is_some() || p.vacate_time.is_some();
        if any {
            p.ad = ad.to_vec();
        }
        Ok(any.then_some(p))
    }

    fn text(&self, attr: &str) -> Option<&str> {
        self.exprs
            .iter()
            .find(|(a, _)| *a == attr)
            .map(|(_, t)| t.as_str())
    }

    /// Whether the periodic timer has anything to evaluate for this job.
    pub fn is_periodic(&self) -> bool {
        [
            "PeriodicHold",
            "PeriodicRelease",
            "PeriodicRemove",
            "LeaveJobInQueue",
        ]
        .iter()
        .any(|a| self.text(a).is_some())
    }

    /// Whether `attr` evaluates to true in `ad` (HTCondor: true or a non-zero number);
    /// undefined, error and a spent budget are not true.
    fn is_true(&self, ad: &ClassAd, attr: &str) -> bool {
        self.text(attr).is_some() && truth(&eval(ad, attr)) == Some(true)
    }

    /// Whether `attr` evaluates to false (not merely undefined) in `ad`.
    fn is_false(&self, ad: &ClassAd, attr: &str) -> bool {
        self.text(attr).is_some() && truth(&eval(ad, attr)) == Some(false)
    }

    /// A hold by `attr` (PeriodicHold or OnExitHold): the reason (its `...Reason` expression
    /// when that gives a string, else HTCondor's sentence) and the subcode.
    fn hold(&self, ad: &ClassAd, attr: &str) -> PolicyHold {
        let reason = self
            .text(&format!("{attr}Reason"))
            .and(
                eval(ad, &format!("{attr}Reason"))
                    .as_str()
                    .map(str::to_string),
            )
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| {
                format!(
                    "The job attribute {attr} expression '{}' evaluated to TRUE",
                    self.text(attr).unwrap_or_default()
                )
            });
        let subcode = self
            .text(&format!("{attr}SubCode"))
            .and(eval(ad, &format!("{attr}SubCode")).as_int())
            .unwrap_or(0);
        PolicyHold {
            reason,
            code: HOLD_CODE_JOB_POLICY,
            subcode,
        }
    }
}

/// HTCondor's reading of a policy expression's value.
fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Int(i) => Some(*i != 0),
        Value::Real(r) => Some(*r != 0.0),
        _ => None,
    }
}

/// `attr` of `ad`, evaluated within a fresh [`budget`].
fn eval(ad: &ClassAd, attr: &str) -> Value {
    match ad.get(attr) {
        Some(e) => e.clone().eval_within(ad, None, &mut budget()),
        None => Value::Undefined,
    }
}

/// A hold's reason with its HTCondor codes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct PolicyHold {
    pub reason: String,
    pub code: i64,
    pub subcode: i64,
}

/// What a job's policy reads that no other column keeps; stored with the job as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct PolicyState {
    /// Attempts that ran to an exit (HTCondor's NumJobCompletions).
    #[serde(default)]
    pub completions: u32,
    /// Wall time of the attempts that ended, seconds.
    #[serde(default)]
    pub wall_s: f64,
    /// When the job entered its current status (while it is not running).
    #[serde(default)]
    pub entered_at: f64,
    /// The codes of its current hold, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<PolicyHold>,
}

impl PolicyState {
    pub fn decode(s: Option<&str>) -> PolicyState {
        s.and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A running job's memory as HTCondor's attributes read it: (peak MiB, current KiB).
#[derive(Debug, Clone, Copy)]
pub(super) struct MemoryNow {
    pub peak_mb: u64,
    pub rss_kib: u64,
}

/// The policy attributes the daemon keeps current, over the job's `q -l` ad.
pub(super) fn set_policy_attributes(
    ad: &mut Vec<(String, String)>,
    info: &JobInfo,
    st: &PolicyState,
    t: f64,
    memory: Option<MemoryNow>,
) {
    let set = super::ads::set;
    set(ad, "NumJobCompletions", st.completions.to_string());
    let running = matches!(
        info.state,
        State::Starting | State::Running | State::Suspended
    );
    let current = match (running, info.started_at) {
        (true, Some(s)) => (t - s).max(0.0),
        _ => 0.0,
    };
    set(
        ad,
        "RemoteWallClockTime",
        format!("{:.3}", st.wall_s + current),
    );
    let entered = match (running, info.started_at) {
        (true, Some(s)) => s,
        _ if st.entered_at > 0.0 => st.entered_at,
        _ => info.submitted_at,
    };
    set(ad, "EnteredCurrentStatus", (entered as i64).to_string());
    set(ad, "CurrentTime", "time()".into());
    if let (Some(h), State::Held) = (&st.hold, info.state) {
        if info.hold_reason.as_deref() == Some(h.reason.as_str()) {
            set(ad, "HoldReasonCode", h.code.to_string());
            set(ad, "HoldReasonSubCode", h.subcode.to_string());
        }
    }
    if let Some(m) = memory {
        set(ad, "MemoryUsage", m.peak_mb.to_string());
        set(ad, "ResidentSetSize", m.rss_kib.to_string());
    }
}

/// What the periodic expressions decide for one job.
#[derive(Debug, PartialEq)]
pub(super) enum PeriodicDecision {
    Remove(String),
    Hold(PolicyHold),
    Release,
    /// A completed job's `LeaveJobInQueue` is no longer true.
    LeaveQueue,
}

/// The periodic expressions of a job in `state` (with its hold's code), in HTCondor's order:
/// remove, then hold, then release. A hold by its owner is never released by the policy.
pub(super) fn periodic_decision(
    p: &JobPolicy,
    ad: &ClassAd,
    state: State,
    hold_code: Option<i64>,
) -> Option<PeriodicDecision> {
    if state == State::Completed {
        return (!p.is_true(ad, "LeaveJobInQueue")).then_some(PeriodicDecision::LeaveQueue);
    }
    if state.terminal() {
        return None;
    }
    if p.is_true(ad, "PeriodicRemove") {
        return Some(PeriodicDecision::Remove(format!(
            "The job attribute PeriodicRemove expression '{}' evaluated to TRUE",
            p.text("PeriodicRemove").unwrap_or_default()
        )));
    }
    if state != State::Held && p.is_true(ad, "PeriodicHold") {
        return Some(PeriodicDecision::Hold(p.hold(ad, "PeriodicHold")));
    }
    if state == State::Held
        && hold_code != Some(HOLD_CODE_USER_REQUEST)
        && p.is_true(ad, "PeriodicRelease")
    {
        return Some(PeriodicDecision::Release);
    }
    None
}

/// What the exit expressions make of an attempt that ran to an exit.
#[derive(Debug, PartialEq)]
pub(super) enum ExitDecision {
    Hold(PolicyHold),
    Requeue(String),
    /// Completed; `true`: kept in the queue (`leave_in_queue`).
    Complete(bool),
}

/// HTCondor's order: OnExitHold, then OnExitRemove (false: run it again), then
/// LeaveJobInQueue. `ad` is the job's ad with the attempt's exit.
pub(super) fn exit_decision(p: &JobPolicy, ad: &ClassAd) -> ExitDecision {
    if p.is_true(ad, "OnExitHold") {
        return ExitDecision::Hold(p.hold(ad, "OnExitHold"));
    }
    if p.is_false(ad, "OnExitRemove") {
        return ExitDecision::Requeue(format!(
            "The job attribute OnExitRemove expression '{}' evaluated to FALSE",
            p.text("OnExitRemove").unwrap_or_default()
        ));
    }
    ExitDecision::Complete(p.is_true(ad, "LeaveJobInQueue"))
}

impl Core {
    /// Send ourselves a [`Cmd::PolicyTick`] every `[policy] periodic_expr_interval`.
    pub fn start_policy_timer(&self) {
        let every = self.cfg.policy.periodic_expr_interval;
        if every.is_zero() {
            return;
        }
        let tx = self.tx.clone();
        self.rt.spawn(async move {
            let mut iv = tokio::time::interval(every);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            iv.tick().await;
            loop {
                iv.tick().await;
                if tx.send(Cmd::PolicyTick).is_err() {
                    return;
                }
            }
        });
    }

    /// The ad a job's policy is evaluated in: its `q -l` ad with the live policy attributes.
    fn policy_ad(&self, j: &Job, info: &JobInfo, memory: Option<MemoryNow>) -> ClassAd {
        let mut ad = j.policy.as_ref().map(|p| p.ad.clone()).unwrap_or_default();
        let limit = j.max_duration.or(self.cfg.policy.allowed_job_duration);
        super::ads::set_live_attributes(&mut ad, info, limit);
        set_policy_attributes(&mut ad, info, &j.policy_state, now(), memory);
        super::select::classad_of(ad)
    }

    /// A running job's memory from its cgroup, now.
    fn memory_now(&self, j: &Job) -> Option<MemoryNow> {
        let root = self.cgroups.as_ref()?;
        let (pid, _) = j.sup?;
        let cg = root.open(&jobdir::cgroup_name(pid, j.info.id)).ok()?;
        let u = cg.stats().ok();
        // The supervisor owns the cgroup: never let this handle remove it.
        cg.leak();
        u.map(|u| MemoryNow {
            peak_mb: u.memory_peak.div_ceil(1 << 20),
            rss_kib: u.memory_current / 1024,
        })
    }

    /// `jobcell rm` of a completed job kept by `leave_in_queue`: it leaves the queue.
    pub(super) fn leave_queue(&mut self, tx: &Batch, id: u64) -> Result<JobInfo, CoreError> {
        tx.set_in_queue(id, false)?;
        tx.add_event(id, "left-queue", None)?;
        let j = self.jobs.remove(&id).expect("present");
        Ok(j.info)
    }

    /// Records the job's policy state.
    fn save_policy_state(&mut self, tx: &Batch, id: u64) -> Result<(), StoreError> {
        let Some(j) = self.jobs.get(&id) else {
            return Ok(());
        };
        if j.policy.is_none() {
            return Ok(());
        }
        tx.set_policy(id, &j.policy_state.encode())
    }

    /// The job was held with `hold` (kept so its ad shows the codes).
    pub(super) fn note_hold(
        &mut self,
        tx: &Batch,
        id: u64,
        hold: PolicyHold,
    ) -> Result<(), StoreError> {
        let Some(j) = self.jobs.get_mut(&id) else {
            return Ok(());
        };
        if j.policy.is_none() {
            return Ok(());
        }
        j.policy_state.hold = Some(hold);
        self.save_policy_state(tx, id)
    }

    /// Its owner (or root) held it: the policy does not release it.
    pub(super) fn note_user_hold(
        &mut self,
        tx: &Batch,
        id: u64,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.note_hold(
            tx,
            id,
            PolicyHold {
                reason: reason.to_string(),
                code: HOLD_CODE_USER_REQUEST,
                subcode: 0,
            },
        )
    }

    /// Every job with periodic expressions: evaluated now, and acted on.
    pub(super) fn policy_tick(
        &mut self,
        tx: &Batch,
        effects: &mut Vec<Effect>,
    ) -> Result<(), CoreError> {
        let t = now();
        let ids: Vec<u64> = self
            .jobs
            .values()
            .filter(|j| j.pending.is_none() && j.policy.as_ref().is_some_and(|p| p.is_periodic()))
            .map(|j| j.info.id)
            .collect();
        for id in ids {
            let j = self.jobs.get_mut(&id).expect("listed");
            // A status change this module did not make (a user's hold or release, a start).
            if j.seen_state != j.info.state {
                j.seen_state = j.info.state;
                j.policy_state.entered_at = t;
            }
            let j = &self.jobs[&id];
            let memory = match j.info.state {
                State::Running | State::Suspended => self.memory_now(j),
                _ => None,
            };
            let ad = self.policy_ad(j, &j.info, memory);
            let policy = j.policy.as_deref().expect("filtered");
            let hold_code = j
                .policy_state
                .hold
                .as_ref()
                .filter(|h| j.info.hold_reason.as_deref() == Some(h.reason.as_str()))
                .map(|h| h.code);
            let Some(decision) = periodic_decision(policy, &ad, j.info.state, hold_code) else {
                continue;
            };
            match self.periodic_act(tx, id, decision, effects) {
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => warn!("job {id}: acting on its periodic policy: {e}"),
                Ok(()) => {}
            }
        }
        Ok(())
    }

    fn periodic_act(
        &mut self,
        tx: &Batch,
        id: u64,
        decision: PeriodicDecision,
        effects: &mut Vec<Effect>,
    ) -> Result<(), CoreError> {
        let t = now();
        let state = self.jobs[&id].info.state;
        let what = match &decision {
            PeriodicDecision::Remove(_) => "remove",
            PeriodicDecision::Hold(_) => "hold",
            PeriodicDecision::Release => "release",
            PeriodicDecision::LeaveQueue => "leave the queue",
        };
        info!("job {id}: its periodic policy says {what}");
        match decision {
            PeriodicDecision::LeaveQueue => {
                self.leave_queue(tx, id)?;
            }
            PeriodicDecision::Remove(reason) => {
                tx.add_event(
                    id,
                    "policy",
                    Some(&serde_json::json!({"policy": "periodic_remove", "reason": reason, "action": "remove"})),
                )?;
                if matches!(state, State::Queued | State::Held) {
                    self.queue.remove(&self.jobs[&id].info);
                    tx.remove(id, t, &reason)?;
                    tx.add_event(id, "removed", Some(&serde_json::json!({"reason": reason})))?;
                    self.queued_at.remove(&id);
                    let j = self.jobs.remove(&id).expect("present");
                    self.ulog(&j.ulog, userlog::Event::Aborted(reason));
                } else {
                    self.evict(tx, id, Pending::PolicyRemove(reason), effects)?;
                }
            }
            PeriodicDecision::Hold(hold) => {
                let reason = hold.reason.clone();
                tx.add_event(
                    id,
                    "policy",
                    Some(&serde_json::json!({"policy": "periodic_hold", "reason": reason, "action": "hold"})),
                )?;
                self.note_hold(tx, id, hold)?;
                if state == State::Queued {
                    self.queue.remove(&self.jobs[&id].info);
                    tx.hold(id, &reason)?;
                    tx.add_event(id, "held", Some(&serde_json::json!({"reason": reason})))?;
                    self.queued_at.remove(&id);
                    self.ulog_job(id, userlog::Event::Held(reason.clone()));
                    let j = self.jobs.get_mut(&id).expect("present");
                    j.info.state = State::Held;
                    j.info.hold_reason = Some(reason);
                    j.seen_state = State::Held;
                    j.policy_state.entered_at = t;
                    self.save_policy_state(tx, id)?;
                } else {
                    self.evict(tx, id, Pending::Hold(reason), effects)?;
                }
            }
            PeriodicDecision::Release => {
                tx.release(id)?;
                tx.add_event(
                    id,
                    "released",
                    Some(&serde_json::json!({"policy": "periodic_release"})),
                )?;
                self.queued_at.insert(id, t);
                self.ulog_job(id, userlog::Event::Released);
                let j = self.jobs.get_mut(&id).expect("present");
                j.info.state = State::Queued;
                j.info.hold_reason = None;
                j.seen_state = State::Queued;
                j.policy_state.hold = None;
                j.policy_state.entered_at = t;
                self.queue.insert(&self.jobs[&id].info);
                self.save_policy_state(tx, id)?;
            }
        }
        Ok(())
    }

    /// An attempt of a job with a policy ended: its completions and wall time are counted,
    /// and, when it ran to an exit and nothing else decided its fate, the exit expressions
    /// may hold it or queue it again instead. Returns whether it stays in the queue once
    /// completed (`leave_in_queue`).
    pub(super) fn apply_exit_policy(&mut self, j: &mut Job, e: &mut Ending) -> bool {
        let Some(policy) = j.policy.clone() else {
            return false;
        };
        let t = now();
        let wall = e
            .report
            .as_ref()
            .and_then(|r| r["wall_time_s"].as_f64())
            .or_else(|| j.info.started_at.map(|s| t - s))
            .unwrap_or(0.0);
        j.policy_state.wall_s += wall.max(0.0);
        j.policy_state.entered_at = t;
        let exited = e.exit_code.is_some() || e.signal.is_some();
        if e.state != State::Completed || !exited {
            return false;
        }
        j.policy_state.completions += 1;
        let mut info = j.info.clone();
        info.state = State::Completed;
        info.exit_code = e.exit_code;
        info.signal = e.signal;
        info.report = e.report.clone();
        info.ended_at = Some(t);
        info.started_at = None;
        let ad = self.policy_ad(j, &info, None);
        match exit_decision(&policy, &ad) {
            ExitDecision::Hold(h) => {
                e.state = State::Held;
                e.reason = Some(h.reason.clone());
                j.policy_state.hold = Some(h);
                false
            }
            ExitDecision::Requeue(reason) => {
                e.state = State::Queued;
                e.reason = Some(reason);
                false
            }
            ExitDecision::Complete(keep) => keep,
        }
    }

    /// Records a job's policy state after its attempt ended.
    pub(super) fn save_exit_policy_state(&self, tx: &Batch, j: &Job) -> Result<(), StoreError> {
        if j.policy.is_none() {
            return Ok(());
        }
        tx.set_policy(j.info.id, &j.policy_state.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_jobs::queued_job;

    fn policy(attrs: &[(&str, &str)]) -> JobPolicy {
        let ad: Vec<(String, String)> = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        JobPolicy::from_ad(&ad).unwrap().unwrap()
    }

    fn ad(attrs: &[(&str, &str)], p: &JobPolicy) -> ClassAd {
        let mut v: Vec<(String, String)> = p
            .exprs
            .iter()
            .map(|(k, t)| (k.to_string(), t.clone()))
            .collect();
        v.extend(attrs.iter().map(|(k, t)| (k.to_string(), t.to_string())));
        super::super::select::classad_of(v)
    }

    #[test]
    fn a_job_without_policy_attributes_has_no_policy() {
        let ad = vec![("Cmd".to_string(), "\"/bin/true\"".to_string())];
        assert!(JobPolicy::from_ad(&ad).unwrap().is_none());
    }

    #[test]
    fn bad_policy_attributes_are_refused() {
        let bad = vec![("PeriodicHold".to_string(), "(1 +".to_string())];
        assert!(matches!(
            JobPolicy::from_ad(&bad),
            Err(PolicyError::Parse {
                attr: "PeriodicHold",
                ..
            })
        ));
        let bad = vec![("AllowedExecuteDuration".to_string(), "0".to_string())];
        let e = JobPolicy::from_ad(&bad).unwrap_err().to_string();
        assert_eq!(
            e,
            "the job's AllowedExecuteDuration = 0 must be a whole number > 0"
        );
    }

    #[test]
    fn periodic_hold_names_the_expression_unless_a_reason_is_given() {
        let p = policy(&[("PeriodicHold", "MemoryUsage > 100")]);
        let a = ad(&[("MemoryUsage", "150")], &p);
        assert_eq!(
            periodic_decision(&p, &a, State::Running, None),
            Some(PeriodicDecision::Hold(PolicyHold {
                reason: "The job attribute PeriodicHold expression 'MemoryUsage > 100' evaluated to TRUE".into(),
                code: 3,
                subcode: 0,
            }))
        );
        let a = ad(&[("MemoryUsage", "50")], &p);
        assert_eq!(periodic_decision(&p, &a, State::Running, None), None);
        // Undefined is not true.
        let a = ad(&[], &p);
        assert_eq!(periodic_decision(&p, &a, State::Running, None), None);
        let p = policy(&[
            ("PeriodicHold", "true"),
            ("PeriodicHoldReason", "strcat(\"too big: \", MemoryUsage)"),
            ("PeriodicHoldSubCode", "42"),
        ]);
        let a = ad(&[("MemoryUsage", "7")], &p);
        assert_eq!(
            periodic_decision(&p, &a, State::Queued, None),
            Some(PeriodicDecision::Hold(PolicyHold {
                reason: "too big: 7".into(),
                code: 3,
                subcode: 42
            }))
        );
        // A held job is not held again.
        assert_eq!(periodic_decision(&p, &a, State::Held, Some(3)), None);
    }

    #[test]
    fn release_spares_a_hold_by_the_owner_and_remove_comes_first() {
        let p = policy(&[("PeriodicRelease", "true")]);
        let a = ad(&[], &p);
        assert_eq!(
            periodic_decision(&p, &a, State::Held, Some(3)),
            Some(PeriodicDecision::Release)
        );
        assert_eq!(
            periodic_decision(&p, &a, State::Held, None),
            Some(PeriodicDecision::Release)
        );
        assert_eq!(periodic_decision(&p, &a, State::Held, Some(1)), None);
        let p = policy(&[
            ("PeriodicRemove", "RemoteWallClockTime > 2"),
            ("PeriodicHold", "true"),
        ]);
        let a = ad(&[("RemoteWallClockTime", "3.5")], &p);
        assert!(matches!(
            periodic_decision(&p, &a, State::Running, None),
            Some(PeriodicDecision::Remove(r)) if r == "The job attribute PeriodicRemove expression 'RemoteWallClockTime > 2' evaluated to TRUE"
        ));
    }

    #[test]
    fn exit_policy_in_htcondor_order() {
        let remove = "NumJobCompletions > JobMaxRetries || ExitCode is 0";
        let p = policy(&[("JobMaxRetries", "2"), ("OnExitRemove", remove)]);
        let exit = |code: &str, n: &str| {
            exit_decision(
                &p,
                &ad(
                    &[
                        ("ExitCode", code),
                        ("ExitBySignal", "false"),
                        ("NumJobCompletions", n),
                        ("JobMaxRetries", "2"),
                    ],
                    &p,
                ),
            )
        };
        let d = exit("1", "1");
        assert!(matches!(d, ExitDecision::Requeue(_)), "{d:?}");
        assert!(matches!(exit("1", "2"), ExitDecision::Requeue(_)));
        assert_eq!(exit("1", "3"), ExitDecision::Complete(false));
        assert_eq!(exit("0", "1"), ExitDecision::Complete(false));
        let p = policy(&[("OnExitHold", "ExitCode == 3"), ("LeaveJobInQueue", "true")]);
        assert!(matches!(
            exit_decision(&p, &ad(&[("ExitCode", "3")], &p)),
            ExitDecision::Hold(h) if h.code == 3 && h.reason == "The job attribute OnExitHold expression 'ExitCode == 3' evaluated to TRUE"
        ));
        assert_eq!(
            exit_decision(&p, &ad(&[("ExitCode", "0")], &p)),
            ExitDecision::Complete(true)
        );
    }

    #[test]
    fn a_costly_expression_is_cut_short_and_is_not_true() {
        // Each level doubles the references: 2^40 evaluations without a budget.
        let mut attrs = vec![("A0".to_string(), "1".to_string())];
        for i in 1..=40 {
            attrs.push((format!("A{i}"), format!("A{} + A{}", i - 1, i - 1)));
        }
        attrs.push(("PeriodicHold".into(), "A40 > 0".into()));
        let p = JobPolicy::from_ad(&attrs).unwrap().unwrap();
        let a = super::super::select::classad_of(attrs);
        let t = std::time::Instant::now();
        assert_eq!(periodic_decision(&p, &a, State::Running, None), None);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn live_attributes_count_the_running_attempt() {
        let info = JobInfo {
            user: "root".into(),
            state: State::Running,
            submitted_at: 100.0,
            started_at: Some(1000.0),
            attempt: 2,
            ..queued_job(1)
        };
        let st = PolicyState {
            completions: 1,
            wall_s: 5.0,
            entered_at: 900.0,
            hold: None,
        };
        let mut ad = Vec::new();
        let mem = MemoryNow {
            peak_mb: 200,
            rss_kib: 204800,
        };
        set_policy_attributes(&mut ad, &info, &st, 1010.0, Some(mem));
        let get = |k: &str| ad.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("RemoteWallClockTime").as_deref(), Some("15.000"));
        assert_eq!(get("NumJobCompletions").as_deref(), Some("1"));
        assert_eq!(get("EnteredCurrentStatus").as_deref(), Some("1000"));
        assert_eq!(get("MemoryUsage").as_deref(), Some("200"));
        assert_eq!(get("ResidentSetSize").as_deref(), Some("204800"));
    }
}
