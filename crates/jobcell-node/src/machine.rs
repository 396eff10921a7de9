//! The node's machine ClassAd (HTCondor's slot ad, as one partitionable slot with the whole
//! node): TARGET when a job's `requirements` are evaluated, and `jobcell status -l`.

use std::sync::OnceLock;

use jobcell_classad::{ClassAd, EvalBudget, Expr, Value};

/// What does not change while the daemon runs: read once.
struct Fixed {
    arch: String,
    os_name: String,
    os_major: Option<i64>,
    machine: String,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let field = |k: &str| {
            release.lines().find_map(|l| {
                let v = l.strip_prefix(k)?.strip_prefix('=')?;
                Some(v.trim_matches('"').to_string())
            })
        };
        // HTCondor's OpSysName is the distribution's name, capitalised ("Debian", "Ubuntu").
        let os_name = field("ID")
            .map(|id| {
                let mut c = id.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .unwrap_or_else(|| "Linux".into());
        let os_major = field("VERSION_ID").and_then(|v| v.split('.').next()?.parse().ok());
        Fixed {
            // HTCondor's names: X86_64 for x86_64; others as uname says, upper case.
            arch: std::env::consts::ARCH.to_ascii_uppercase(),
            os_name,
            os_major,
            machine: crate::sys::hostname(),
        }
    })
}

/// The machine ad: what a job may be matched against on this node. `cpus`, `memory` (bytes)
/// are the node's totals for jobs; `disk` the scratch base's size in bytes, when known.
pub fn machine_ad(cpus: f64, memory: u64, disk: Option<u64>, version: &str) -> ClassAd {
    let f = fixed();
    let mut ad = ClassAd::new();
    let whole_cpus = cpus.floor() as i64;
    let mb = (memory >> 20) as i64;
    ad.insert("MyType", Expr::string("Machine"));
    ad.insert("Machine", Expr::string(&f.machine));
    ad.insert("Name", Expr::string(&f.machine));
    ad.insert("OpSys", Expr::string("LINUX"));
    ad.insert("Arch", Expr::string(&f.arch));
    ad.insert("OpSysName", Expr::string(&f.os_name));
    if let Some(major) = f.os_major {
        ad.insert("OpSysMajorVer", Expr::int(major));
        ad.insert("OpSysAndVer", Expr::string(format!("{}{major}", f.os_name)));
    } else {
        ad.insert("OpSysAndVer", Expr::string(&f.os_name));
    }
    ad.insert("Cpus", Expr::int(whole_cpus));
    ad.insert("TotalCpus", Expr::real(cpus));
    ad.insert("Memory", Expr::int(mb));
    ad.insert("TotalMemory", Expr::int(mb));
    if let Some(d) = disk {
        ad.insert("Disk", Expr::int((d >> 10) as i64));
        ad.insert("TotalDisk", Expr::int((d >> 10) as i64));
    }
    ad.insert("HasFileTransfer", Expr::bool(true));
    ad.insert("HasDocker", Expr::bool(false));
    ad.insert("HasSingularity", Expr::bool(false));
    ad.insert("HasContainer", Expr::bool(true));
    ad.insert("Jobcell", Expr::bool(true));
    ad.insert("JobcellVersion", Expr::string(version));
    ad.insert("SlotType", Expr::string("Partitionable"));
    ad
}

/// The size in bytes of the file system holding `path` (the jobs' scratch).
pub fn disk_size(path: &std::path::Path) -> Option<u64> {
    let c =
        std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())).ok()?;
    // SAFETY: statvfs is plain data the call fills; `c` is a valid C string.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        st
    };
    Some(st.f_blocks as u64 * st.f_frsize as u64)
}

/// The ad as (name, ClassAd text) pairs, as `q -l` prints a job's.
pub fn to_pairs(ad: &ClassAd) -> Vec<(String, String)> {
    ad.iter()
        .map(|(n, e)| (n.to_string(), e.to_string()))
        .collect()
}

/// The evaluation budget of the `requirements` of a cluster of `jobs`, shared by all of them
/// (as a constraint's): a hostile expression must not stall the daemon.
pub fn requirements_budget(jobs: usize) -> EvalBudget {
    let jobs = jobs as u64;
    EvalBudget {
        steps: 100_000 + 1_000 * jobs,
        bytes: (16 << 20) + (64 << 10) * jobs,
    }
}

/// Why a job's `requirements` cannot match `machine`, or `Ok(None)` when they do. `job` is
/// the job's ad (its `Requirements` among them). Undefined and error never match, as in
/// HTCondor's negotiator. Err: the evaluation spent what was left of `budget`.
pub fn unmatched(
    job: &[(String, String)],
    machine: &ClassAd,
    budget: &mut EvalBudget,
) -> Result<Option<String>, String> {
    let Some(text) = job
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Requirements"))
        .map(|(_, v)| v.as_str())
    else {
        return Ok(None);
    };
    let mut my = ClassAd::new();
    for (n, v) in job {
        // The submit parser wrote every value in ClassAd syntax; one that does not parse
        // cannot be referred to, so it is left out (undefined).
        if let Ok(e) = Expr::parse(v) {
            my.insert(n.clone(), e);
        }
    }
    let Ok(expr) = Expr::parse(text) else {
        return Ok(Some(format!(
            "requirements ({text}) can never match this node: not a ClassAd expression"
        )));
    };
    let expr = unscoped_to_target(&expr, &my, machine);
    let value = expr.eval_within(&my, Some(machine), budget);
    if budget.is_spent() {
        return Err(format!(
            "requirements ({text}): evaluation takes more than the node allows"
        ));
    }
    let outcome = match value {
        Value::Bool(true) => return Ok(None),
        Value::Bool(false) => "false".to_string(),
        Value::Undefined => "undefined".to_string(),
        Value::Error => "error".to_string(),
        other => format!("{other:?}, not a boolean"),
    };
    Ok(Some(format!(
        "requirements ({text}) can never match this node: {outcome} against its machine ad \
         (jobcell status -l)"
    )))
}

/// HTCondor's matchmaking looks a name the job's ad lacks up in the machine's (so
/// `OpSys == "LINUX"` works unscoped); the evaluator follows the ClassAd language, where
/// it is undefined: such names become `TARGET.name`.
fn unscoped_to_target(e: &Expr, my: &ClassAd, target: &ClassAd) -> Expr {
    let go = |x: &Expr| Box::new(unscoped_to_target(x, my, target));
    match e {
        Expr::Attr {
            name,
            absolute: false,
        } if my.get(name).is_none() && target.get(name).is_some() => Expr::Select(
            Box::new(Expr::Attr {
                name: "TARGET".into(),
                absolute: false,
            }),
            name.clone(),
        ),
        Expr::Select(base, name) => Expr::Select(go(base), name.clone()),
        Expr::Index(a, b) => Expr::Index(go(a), go(b)),
        Expr::Unary(op, a) => Expr::Unary(*op, go(a)),
        Expr::Binary(op, a, b) => Expr::Binary(*op, go(a), go(b)),
        Expr::Cond(a, b, c) => Expr::Cond(go(a), go(b), go(c)),
        Expr::Paren(a) => Expr::Paren(go(a)),
        Expr::Call(f, args) => Expr::Call(
            f.clone(),
            args.iter()
                .map(|a| unscoped_to_target(a, my, target))
                .collect(),
        ),
        Expr::List(items) => Expr::List(
            items
                .iter()
                .map(|a| unscoped_to_target(a, my, target))
                .collect(),
        ),
        // A nested ad is a scope of its own; literals have no names.
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(req: &str) -> Vec<(String, String)> {
        vec![
            ("RequestMemory".into(), "2048".into()),
            ("Requirements".into(), req.into()),
        ]
    }

    fn unmatched(job: &[(String, String)], m: &ClassAd) -> Option<String> {
        super::unmatched(job, m, &mut requirements_budget(1)).unwrap()
    }

    #[test]
    fn an_exploding_requirements_spends_the_budget_and_is_refused() {
        let m = machine_ad(4.0, 8 << 30, None, "0");
        let mut ad = vec![("a0".to_string(), "1".to_string())];
        for i in 1..64 {
            ad.push((format!("a{i}"), format!("a{} + a{}", i - 1, i - 1)));
        }
        ad.push(("Requirements".into(), "a63 > 0".into()));
        let mut budget = requirements_budget(10);
        let e = super::unmatched(&ad, &m, &mut budget).unwrap_err();
        assert!(
            e.contains("evaluation takes more than the node allows"),
            "{e}"
        );
    }

    #[test]
    fn requirements_are_matched_against_the_node_totals() {
        let m = machine_ad(4.0, 8 << 30, Some(100 << 30), "0");
        assert_eq!(unmatched(&job("TARGET.Memory >= RequestMemory"), &m), None);
        assert_eq!(
            unmatched(&job("OpSys == \"LINUX\" && Arch == \"X86_64\""), &m)
                .filter(|_| std::env::consts::ARCH == "x86_64"),
            None
        );
        let why = unmatched(&job("TARGET.Cpus >= 64"), &m).unwrap();
        assert!(
            why.starts_with("requirements (TARGET.Cpus >= 64) can never match"),
            "{why}"
        );
        assert!(why.contains(": false"), "{why}");
        let why = unmatched(&job("TARGET.HasGPU"), &m).unwrap();
        assert!(why.contains(": undefined"), "{why}");
        assert!(unmatched(&job("HasDocker"), &m).is_some());
        assert_eq!(unmatched(&job("Jobcell && HasFileTransfer"), &m), None);
        assert_eq!(
            unmatched(&[("Cmd".into(), "\"/bin/true\"".into())], &m),
            None
        );
    }
}
