//! Choosing jobs by their ClassAd: `q`/`history` with `-constraint` and owner names, and one
//! action on many jobs (`rm`/`hold`/`release -constraint`), all done here so a big queue is
//! never shipped to the CLI to be filtered there.

use std::collections::{BTreeSet, HashMap};

use jobcell_classad::{ClassAd, EvalBudget, Expr, Value};

use super::*;

/// Which jobs a listing returns: the constraint is evaluated against the ad the caller would
/// see with `q -l` (so it cannot probe what `q -l` hides, another user's environment).
#[derive(Debug, Clone, Default)]
pub struct AdFilter {
    pub constraint: Option<Expr>,
    /// User names; empty: everyone's.
    pub owners: Vec<String>,
    /// Cluster ids; empty: every cluster.
    pub clusters: Vec<u64>,
}

impl AdFilter {
    pub fn is_empty(&self) -> bool {
        self.constraint.is_none() && self.owners.is_empty() && self.clusters.is_empty()
    }
}

/// The jobs one bulk action applies to (the union of the three).
#[derive(Debug, Clone)]
pub struct BulkSelection {
    pub action: Action,
    pub ids: Vec<u64>,
    pub procs: Vec<ProcSelector>,
    pub constraint: Option<Expr>,
}

/// The work one request's constraint may do over `jobs` jobs: far more than any real
/// constraint needs, little enough that the core (which serves everyone) stays responsive.
fn budget_for(jobs: usize) -> EvalBudget {
    let jobs = jobs as u64;
    EvalBudget {
        steps: 100_000 + 1_000 * jobs,
        bytes: (16 << 20) + (64 << 10) * jobs,
    }
}

fn too_costly() -> CoreError {
    CoreError::BadRequest(
        "the constraint takes too much work to evaluate (an expression whose attribute \
         references fan out, or that builds huge strings); simplify it"
            .into(),
    )
}

/// What one request's matching carries from job to job: user names by uid, and what is left
/// of its evaluation budget.
struct Work {
    names: HashMap<u32, String>,
    budget: EvalBudget,
}

impl Work {
    fn for_jobs(jobs: usize) -> Work {
        Work {
            names: HashMap::new(),
            budget: budget_for(jobs),
        }
    }
}

/// HTCondor's reading of a constraint's value: true, or a non-zero number.
fn satisfied(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::Real(r) => *r != 0.0,
        _ => false,
    }
}

/// The `q -l` attributes as a ClassAd (values are ClassAd text; one that does not parse,
/// which the daemon never writes, is left out rather than failing the listing).
pub(super) fn classad_of(attrs: Vec<(String, String)>) -> ClassAd {
    let mut ad = ClassAd::new();
    for (name, text) in attrs {
        if let Ok(expr) = Expr::parse(&text) {
            ad.insert(name, expr);
        }
    }
    ad
}

impl Core {
    /// Whether `info`'s job is one of `owners` and satisfies `constraint`, for `caller`.
    fn passes(
        &self,
        tx: &Batch,
        caller: u32,
        info: &JobInfo,
        owners: &[String],
        constraint: Option<&Expr>,
        work: &mut Work,
    ) -> Result<bool, CoreError> {
        if !owners.is_empty() {
            let name = work
                .names
                .entry(info.owner)
                .or_insert_with(|| sys::user_name(info.owner));
            if !owners.iter().any(|o| o == name) {
                return Ok(false);
            }
        }
        match constraint {
            None => Ok(true),
            Some(c) => {
                let ad = classad_of(self.ad(tx, caller, info.id)?);
                let value = c.eval_within(&ad, None, &mut work.budget);
                if work.budget.is_spent() {
                    return Err(too_costly());
                }
                Ok(satisfied(&value))
            }
        }
    }

    /// `GET /v1/jobs`: the unfinished jobs `filter` selects, by id.
    pub(super) fn list(
        &self,
        tx: &Batch,
        caller: u32,
        filter: &AdFilter,
    ) -> Result<Vec<JobInfo>, CoreError> {
        let mut work = Work::for_jobs(self.jobs.len());
        let mut out = Vec::new();
        for j in self.jobs.values() {
            if !filter.clusters.is_empty() && !filter.clusters.contains(&j.info.cluster) {
                continue;
            }
            if filter.is_empty()
                || self.passes(
                    tx,
                    caller,
                    &j.info,
                    &filter.owners,
                    filter.constraint.as_ref(),
                    &mut work,
                )?
            {
                out.push(j.info.clone());
            }
        }
        out.sort_by_key(|j| j.id);
        Ok(out)
    }

    /// `GET /v1/history`: the last `limit` finished jobs `filter` selects.
    pub(super) fn history(
        &self,
        tx: &Batch,
        caller: u32,
        limit: u32,
        filter: &AdFilter,
    ) -> Result<Vec<JobInfo>, CoreError> {
        if filter.is_empty() {
            return Ok(tx.history(limit)?);
        }
        let ended = if filter.clusters.is_empty() {
            tx.history(u32::MAX)?
        } else {
            tx.history_of_clusters(&filter.clusters)?
        };
        let mut work = Work::for_jobs(ended.len());
        let mut out = Vec::new();
        for info in ended {
            if out.len() >= limit as usize {
                break;
            }
            if self.passes(
                tx,
                caller,
                &info,
                &filter.owners,
                filter.constraint.as_ref(),
                &mut work,
            )? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// `POST /v1/actions`: the action on every selected job, each through the same owner
    /// check as a single action. A constraint only ever selects the caller's own jobs (root:
    /// everyone's); ids and procs naming another's job are refused one by one.
    pub(super) fn act_on_many(
        &mut self,
        tx: &Batch,
        caller: u32,
        sel: BulkSelection,
        effects: &mut Vec<Effect>,
    ) -> Result<BulkActionResponse, CoreError> {
        let mut resp = BulkActionResponse::default();
        let mut chosen: BTreeSet<u64> = sel.ids.iter().copied().collect();
        for p in &sel.procs {
            let mut any = false;
            for j in self.jobs.values() {
                if j.info.cluster == p.cluster && p.proc.is_none_or(|n| j.info.proc == n) {
                    chosen.insert(j.info.id);
                    any = true;
                }
            }
            if !any {
                resp.unmatched.push(match p.proc {
                    Some(n) => format!("{}.{n}", p.cluster),
                    None => format!("{}.", p.cluster),
                });
            }
        }
        if let Some(c) = &sel.constraint {
            let mut work = Work::for_jobs(self.jobs.len());
            for j in self.jobs.values() {
                if (caller == 0 || j.info.owner == caller)
                    && self.passes(tx, caller, &j.info, &[], Some(c), &mut work)?
                {
                    chosen.insert(j.info.id);
                }
            }
        }
        for id in chosen {
            match self.act(tx, caller, id, sel.action.clone(), effects) {
                Ok(j) => {
                    resp.done.push(id);
                    resp.done_procs.push((j.cluster, j.proc));
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => resp.refused.push(BulkRefusal {
                    id,
                    error: e.to_string(),
                }),
            }
        }
        Ok(resp)
    }
}
