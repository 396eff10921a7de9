//! A cluster's jobs in compact form: the first job once (`common`), then per proc only what
//! differs from it (a [`ProcPatch`]). A 100,000-job cluster whose jobs differ in their
//! arguments and output paths is ~32 MB this way instead of ~86 MB.
//!
//! The daemon expands every proc back into the full [`ClusterJob`] the client had and checks
//! it exactly as one sent whole; the client checks, before sending, that each proc expands
//! to its job (else it sends the jobs whole).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::types::ClusterJob;

#[derive(Debug, Error)]
pub enum CompactError {
    #[error("patch: {0}")]
    Json(#[from] serde_json::Error),
    #[error("common is not a JSON object")]
    CommonNotObject,
    #[error("ad entry '{0}' is not in the common job's ad")]
    UnknownAdEntry(String),
}

/// What one proc changes in the common job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcPatch {
    /// A JSON merge patch (RFC 7386) over the common job: objects merge key by key, `null`
    /// removes a key, any other value (arrays too) replaces it. Absent: the common job.
    #[serde(default, skip_serializing_if = "is_empty_object")]
    pub patch: Value,
    /// New values of entries of the common job's `extra.ad`, by name, in place (after
    /// `patch`): the ad is a list, which a merge patch could only replace whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ad: Vec<(String, String)>,
}

fn is_empty_object(v: &Value) -> bool {
    v.is_null() || v.as_object().is_some_and(Map::is_empty)
}

/// The jobs as `common` and one patch per job, or `None` when they do not expand back
/// exactly (then they are sent whole).
pub fn compact(jobs: &[ClusterJob]) -> Result<Option<(Value, Vec<ProcPatch>)>, CompactError> {
    let Some(first) = jobs.first() else {
        return Ok(None);
    };
    let common = serde_json::to_value(first)?;
    let mut procs = Vec::with_capacity(jobs.len());
    for job in jobs {
        let full = serde_json::to_value(job)?;
        let p = patch_for(&common, &full);
        // The same expansion the daemon does, so what it queues is what was parsed here.
        if serde_json::to_value(expand(&common, &p)?)? != full {
            return Ok(None);
        }
        procs.push(p);
    }
    Ok(Some((common, procs)))
}

/// The full job of one proc.
pub fn expand(common: &Value, p: &ProcPatch) -> Result<ClusterJob, CompactError> {
    if !common.is_object() {
        return Err(CompactError::CommonNotObject);
    }
    let mut job = common.clone();
    // Absent (null): nothing changes.
    if !p.patch.is_null() {
        merge(&mut job, &p.patch);
    }
    if !p.ad.is_empty() {
        let ad = job
            .get_mut("extra")
            .and_then(|x| x.get_mut("ad"))
            .and_then(Value::as_array_mut);
        let mut entries: Vec<(String, String)> = match ad {
            Some(a) => serde_json::from_value(Value::Array(std::mem::take(a)))?,
            None => Vec::new(),
        };
        for (name, value) in &p.ad {
            let e = entries
                .iter_mut()
                .find(|(n, _)| n == name)
                .ok_or_else(|| CompactError::UnknownAdEntry(name.clone()))?;
            e.1 = value.clone();
        }
        job["extra"]["ad"] = serde_json::to_value(entries)?;
    }
    Ok(serde_json::from_value(job)?)
}

/// RFC 7386's MergePatch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The merge patch from `base` to `full`, with `extra.ad` as in-place entries when only
/// values changed.
fn patch_for(base: &Value, full: &Value) -> ProcPatch {
    let (mut base_x, full_x) = (base.clone(), full.clone());
    let mut ad = Vec::new();
    let base_ad = base_x.get_mut("extra").and_then(|x| x.get_mut("ad"));
    let full_ad = full_x.get("extra").and_then(|x| x.get("ad"));
    if let (Some(Value::Array(b)), Some(Value::Array(f))) = (base_ad, full_ad) {
        let same_names = b.len() == f.len() && b.iter().zip(f).all(|(x, y)| x.get(0) == y.get(0));
        if same_names {
            for (x, y) in b.iter_mut().zip(f) {
                if x != y {
                    if let (Some(n), Some(v)) = (y[0].as_str(), y[1].as_str()) {
                        ad.push((n.to_string(), v.to_string()));
                        *x = y.clone();
                    }
                }
            }
        }
    }
    ProcPatch {
        patch: diff(&base_x, &full_x).unwrap_or(Value::Null),
        ad,
    }
}

/// The merge patch that turns `a` into `b` (`None`: they are equal). A `null` in `b` is
/// written as a removal, which the job's types read as absent, the same.
fn diff(a: &Value, b: &Value) -> Option<Value> {
    if a == b {
        return None;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut out = Map::new();
            for (k, v) in y {
                match x.get(k) {
                    Some(old) => {
                        if let Some(d) = diff(old, v) {
                            out.insert(k.clone(), d);
                        }
                    }
                    None if v.is_null() => {}
                    None => {
                        out.insert(k.clone(), strip_nulls(v));
                    }
                }
            }
            for k in x.keys().filter(|k| !y.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Some(Value::Object(out))
        }
        _ => Some(strip_nulls(b)),
    }
}

/// A new object value in a merge patch cannot carry `null`s (they would mean "remove").
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use jobcell_spec::JobSpec;

    use super::*;
    use crate::types::JobExtra;

    fn job(proc: u64, stdin: Option<&str>) -> ClusterJob {
        let mut spec = JobSpec::new(vec!["/bin/echo".into(), proc.to_string()]);
        spec.env.push(("P".into(), proc.to_string()));
        ClusterJob {
            spec,
            priority: 0,
            hold: proc == 3,
            stdout: Some(format!("/home/u/out.{proc}")),
            stderr: None,
            extra: JobExtra {
                cwd: Some("/home/u".into()),
                stdin: stdin.map(String::from),
                ad: vec![
                    ("ProcId".into(), proc.to_string()),
                    ("Cmd".into(), "\"/bin/echo\"".into()),
                ],
                ..Default::default()
            },
        }
    }

    #[test]
    fn every_proc_expands_to_its_job_and_only_differences_are_sent() {
        let jobs: Vec<ClusterJob> = (0..5).map(|p| job(p, (p == 2).then_some("/in"))).collect();
        let (common, procs) = compact(&jobs).unwrap().expect("compactable");
        assert_eq!(
            procs[0],
            ProcPatch::default(),
            "the first job is the common one"
        );
        for (j, p) in jobs.iter().zip(&procs) {
            let back = expand(&common, p).unwrap();
            assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(j).unwrap()
            );
        }
        assert_eq!(procs[1].ad, [("ProcId".to_string(), "1".to_string())]);
        let text = serde_json::to_string(&procs[1]).unwrap();
        assert!(
            !text.contains("Cmd") && !text.contains("/home/u\""),
            "unchanged values are not sent: {text}"
        );
        assert_eq!(procs[2].patch["extra"]["stdin"], "/in");
    }

    #[test]
    fn a_patch_naming_an_unknown_ad_entry_or_a_bad_field_is_refused() {
        let common = serde_json::to_value(job(0, None)).unwrap();
        let p = ProcPatch {
            patch: Value::Null,
            ad: vec![("Nope".into(), "1".into())],
        };
        assert!(matches!(
            expand(&common, &p),
            Err(CompactError::UnknownAdEntry(n)) if n == "Nope"
        ));
        let p = ProcPatch {
            patch: serde_json::json!({"priority": "high"}),
            ad: vec![],
        };
        assert!(matches!(expand(&common, &p), Err(CompactError::Json(_))));
        let p = ProcPatch {
            patch: serde_json::json!({"spec": null}),
            ad: vec![],
        };
        assert!(expand(&common, &p).is_err(), "a job without a spec");
    }
}
