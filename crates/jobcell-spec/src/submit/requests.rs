//! `request_cpus`, `request_memory`, `request_disk` and `priority` as `condor_submit` reads
//! them: a number (sizes with HTCondor's units) or a ClassAd expression. Request expressions
//! are evaluated against the job's ad (so they may use `ProcId` or each other); `priority` is
//! evaluated on its own, as `condor_submit` does, and truncated to a whole number.

use jobcell_classad::{ClassAd, Expr, Value};

use super::parse::{bad, condor_size};
use super::{classad_string, CustomValue, SubmitError};
use crate::Unit;

/// One request command as written.
pub(super) enum Request {
    Unset,
    /// A number in the command's unit (cores, MiB, KiB).
    Number(f64),
    Expr {
        expr: Expr,
        text: String,
        line: usize,
    },
}

impl Request {
    /// Reads `text` (from line `line` of command `cmd`): a size in `unit` when given, else a
    /// plain number; anything else must parse as a ClassAd expression.
    pub(super) fn read(
        cmd: &str,
        text: &str,
        line: usize,
        unit: Option<Unit>,
    ) -> Result<Request, SubmitError> {
        let number_error = match unit {
            Some(unit) => match condor_size(text, unit) {
                Ok(n) => return Ok(Request::Number(n as f64)),
                Err(e) => e,
            },
            None => match text.trim().parse::<f64>() {
                Ok(n) if n.is_finite() && n >= 0.0 => return Ok(Request::Number(n)),
                _ => "expected a number of cores".to_string(),
            },
        };
        match Expr::parse(text.trim()) {
            Ok(expr) => Ok(Request::Expr {
                expr,
                text: text.to_string(),
                line,
            }),
            Err(e) => Err(bad(
                line,
                cmd,
                text,
                format!("{number_error}, or a ClassAd expression ({e})"),
            )),
        }
    }

    fn as_expr(&self) -> Option<Expr> {
        match self {
            Request::Unset => None,
            Request::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
                Some(Expr::int(*n as i64))
            }
            Request::Number(n) => Some(Expr::real(*n)),
            Request::Expr { expr, .. } => Some(expr.clone()),
        }
    }
}

/// The evaluated requests of one job.
pub(super) struct Requests {
    pub cpus: f64,
    pub memory: Option<u64>,
    pub disk: Option<u64>,
}

/// Evaluates the three requests against the job's ad: its ids, the requests themselves, its
/// priority and its custom attributes. Sizes that come out fractional round up, as sizes
/// written with units do.
pub(super) fn evaluate(
    [cpus, memory, disk]: [(&str, Request); 3],
    cluster_id: u64,
    proc_id: u64,
    priority: i64,
    custom: &std::collections::BTreeMap<String, CustomValue>,
) -> Result<Requests, SubmitError> {
    let mut ad = ClassAd::new();
    for (name, value) in custom {
        let text = match value {
            CustomValue::String(s) => classad_string(s),
            CustomValue::Int(i) => i.to_string(),
            CustomValue::Real(f) => format!("{f:?}"),
            CustomValue::Bool(b) => b.to_string(),
            CustomValue::Expr { expr } => expr.clone(),
        };
        if let Ok(expr) = Expr::parse(&text) {
            ad.insert(name.clone(), expr);
        }
    }
    ad.insert("ClusterId", Expr::int(cluster_id as i64));
    ad.insert("ProcId", Expr::int(proc_id as i64));
    ad.insert("JobPrio", Expr::int(priority));
    for (attr, (_, request)) in [
        ("RequestCpus", &cpus),
        ("RequestMemory", &memory),
        ("RequestDisk", &disk),
    ] {
        if let Some(expr) = request.as_expr() {
            ad.insert(attr, expr);
        }
    }
    let number =
        |attr: &str, (cmd, request): &(&str, Request)| -> Result<Option<f64>, SubmitError> {
            match request {
                Request::Unset => Ok(None),
                Request::Number(n) => Ok(Some(*n)),
                Request::Expr { text, line, .. } => match ad.eval_attr(attr) {
                    Value::Int(i) if i >= 0 => Ok(Some(i as f64)),
                    Value::Real(r) if r.is_finite() && r >= 0.0 => Ok(Some(r)),
                    v => Err(bad(
                        *line,
                        cmd,
                        text,
                        format!("evaluates to {v} in the job's ad; expected a number >= 0"),
                    )),
                },
            }
        };
    let size = |n: Option<f64>| n.map(|n| n.ceil().min(u64::MAX as f64) as u64);
    Ok(Requests {
        cpus: number("RequestCpus", &cpus)?.unwrap_or(1.0),
        memory: size(number("RequestMemory", &memory)?),
        disk: size(number("RequestDisk", &disk)?),
    })
}

/// `priority`: a whole number, or an expression of constants whose value is truncated to one
/// (`condor_submit` evaluates it without the job's ad, so `ProcId` is undefined there).
pub(super) fn priority(text: &str, line: usize) -> Result<i64, SubmitError> {
    if let Ok(n) = text.trim().parse::<i64>() {
        return Ok(n);
    }
    let expr = Expr::parse(text.trim()).map_err(|e| {
        bad(
            line,
            "priority",
            text,
            format!("expected a whole number or a ClassAd expression ({e})"),
        )
    })?;
    match ClassAd::new().eval(&expr) {
        Value::Int(i) => Ok(i),
        Value::Real(r) if r.is_finite() && r.abs() < 9.0e18 => Ok(r.trunc() as i64),
        v => Err(bad(
            line,
            "priority",
            text,
            format!("evaluates to {v}; expected a whole number"),
        )),
    }
}
