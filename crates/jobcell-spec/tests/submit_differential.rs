//! Differential test: jobcell's submit parser against HTCondor's own (the `htcondor` wheel,
//! 23.10.29), over the corpus in tests/submit/corpus.
//!
//! tests/submit/condor_reference.py prints the job ads HTCondor makes for every corpus file;
//! this test parses the same files with the same cwd and environment and compares, per job:
//! ProcId, the number of jobs, Cmd, Args/Arguments (attribute name and canonical text),
//! Environment (canonical text), RequestCpus, RequestMemory, RequestDisk, Iwd, In, Out, Err,
//! UserLog, JobPrio, JobStatus (held), TransferInput, ShouldTransferFiles,
//! WhenToTransferOutput and the custom attributes. `bad-*.sub` files must be refused by both,
//! and jobcell's error must name a line.
//!
//! Normalisation (and why):
//! - RequestMemory/RequestDisk without a request come back as HTCondor's usage-based default
//!   expressions; jobcell reports "no request" (None). Any other request expression is
//!   compared by its value in the job's ad (sizes rounded up), which is what jobcell queues.
//! - In/Out/Err are relative to Iwd in the ad (`/dev/null` when unset); jobcell stores them
//!   resolved against initialdir, so the ad's value is joined with Iwd before comparing.
//! - A custom attribute that is no literal comes back unparsed by HTCondor (`0 * 2`); jobcell
//!   keeps the expanded text (`0*2`): the two are compared with whitespace removed (and `=?=`
//!   read as HTCondor's spelling `is`); a ClassAd list comes back as a JSON list.
//!
//! Needs the venv from tests/submit/setup-venv.sh (or $JOBCELL_HTCONDOR_VENV); skips LOUDLY
//! without it, or fails if JOBCELL_REQUIRE_HTCONDOR=1.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use jobcell_spec::submit::{
    env_to_v2_raw, parse_submit, wildcard_match, CustomValue, SubmitEnv, SubmitJob, SubmitOptions,
};
use serde_json::Value;

const CLUSTER: u64 = 42;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("JOBCELL_HTCONDOR_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/htcondor-venv"));
    venv.join("bin/python")
}

/// The environment both parsers see (HTCondor's through its process environment).
fn test_environment() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PATH", "/usr/bin:/bin"),
        ("HOME", "/root"),
        ("LANG", "C.UTF-8"),
        ("CONDOR_CONFIG", "/dev/null"),
        ("JC_ONE", "1"),
        ("JC_TWO", "two words"),
        ("JC_quote", "it's"),
        ("jc_lower", "x"),
        ("JC_SEMI", "a;b"),
    ]
}

/// The real filesystem under the corpus dir, and the environment the reference ran with.
struct CorpusEnv {
    cwd: PathBuf,
    environ: Vec<(String, String)>,
}

impl SubmitEnv for CorpusEnv {
    fn read_file(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(self.cwd.join(path))
    }
    /// Wildcards in the last component only: enough for the corpus.
    fn glob(&self, pattern: &str) -> Vec<String> {
        let (dir, pat) = match pattern.rfind('/') {
            Some(i) => (&pattern[..=i], &pattern[i + 1..]),
            None => ("", pattern),
        };
        let Ok(rd) = std::fs::read_dir(self.cwd.join(dir)) else {
            return vec![];
        };
        let mut out: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let hidden_ok = !name.starts_with('.') || pat.starts_with('.');
                (hidden_ok && wildcard_match(pat, &name)).then(|| {
                    let mark = if e.path().is_dir() { "/" } else { "" };
                    format!("{dir}{name}{mark}")
                })
            })
            .collect();
        out.sort();
        out
    }
    fn env(&self, name: &str) -> Option<String> {
        self.environ
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
    fn env_vars(&self) -> Vec<(String, String)> {
        self.environ.clone()
    }
    fn cwd(&self) -> PathBuf {
        self.cwd.clone()
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.cwd.join(path).is_dir()
    }
}

/// Expression text compared loosely: without whitespace, and with the operators HTCondor
/// unparses under another spelling (`=?=` is `is`, `=!=` is `isnt`).
fn no_ws(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    s.replace("=?=", "is").replace("=!=", "isnt")
}

fn custom_text(v: &CustomValue) -> String {
    match v {
        CustomValue::String(s) => format!("{s:?}"),
        CustomValue::Int(i) => i.to_string(),
        CustomValue::Real(f) => f.to_string(),
        CustomValue::Bool(b) => b.to_string(),
        CustomValue::Expr { expr } => expr.clone(),
    }
}

fn custom_equal(ours: &CustomValue, theirs: &Value) -> bool {
    match (ours, theirs) {
        (CustomValue::String(a), Value::String(b)) => a == b,
        (CustomValue::Int(a), Value::Number(b)) => b.as_i64() == Some(*a),
        (CustomValue::Real(a), Value::Number(b)) => b.as_f64() == Some(*a),
        (CustomValue::Bool(a), Value::Bool(b)) => a == b,
        (o, Value::Array(items)) => {
            let items: Vec<String> = items.iter().map(Value::to_string).collect();
            no_ws(&custom_text(o)) == format!("{{{}}}", items.join(","))
        }
        (o, Value::Object(m)) => m
            .get("expr")
            .and_then(Value::as_str)
            .is_some_and(|e| no_ws(e) == no_ws(&custom_text(o))),
        _ => false,
    }
}

/// A size attribute: `Some(n)` for a literal, `None` for HTCondor's default expressions.
fn size_attr(v: Option<&Value>) -> Result<Option<u64>, String> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| format!("{n}")),
        Some(Value::Object(m)) => {
            let e = m.get("expr").and_then(Value::as_str).unwrap_or("");
            if e == "DiskUsage" || e.starts_with("ifthenelse(MemoryUsage isnt undefined") {
                Ok(None)
            } else {
                // Any other expression: its value in the job's ad, sizes rounded up.
                match m.get("value").and_then(Value::as_f64) {
                    Some(v) if v >= 0.0 => Ok(Some(v.ceil() as u64)),
                    _ => Err(format!("expression {e}")),
                }
            }
        }
        other => Err(format!("{other:?}")),
    }
}

fn compare(file: &str, i: usize, ours: &SubmitJob, ad: &Value, out: &mut Vec<String>) {
    let s = |k: &str| ad.get(k).and_then(Value::as_str).map(String::from);
    let mut check = |field: &str, theirs: String, mine: String| {
        if theirs != mine {
            out.push(format!(
                "{file} job {i}: {field}: htcondor {theirs:?}, jobcell {mine:?}"
            ));
        }
    };
    check("ProcId", ad["ProcId"].to_string(), ours.proc_id.to_string());
    check(
        "ClusterId",
        ad["ClusterId"].to_string(),
        ours.cluster_id.to_string(),
    );
    check("Cmd", s("Cmd").unwrap_or_default(), ours.executable.clone());
    let (name, text) = ours.arguments_attr();
    let theirs = match (s("Args"), s("Arguments")) {
        (Some(a), None) => format!("Args={a}"),
        (None, Some(a)) => format!("Arguments={a}"),
        other => format!("{other:?}"),
    };
    check("Args/Arguments", theirs, format!("{name}={text}"));
    check(
        "Environment",
        s("Environment").unwrap_or_default(),
        env_to_v2_raw(&ours.environment),
    );
    let cpus = ad["RequestCpus"]
        .as_f64()
        .or_else(|| ad["RequestCpus"]["value"].as_f64())
        .map(|c| c.to_string())
        .unwrap_or(ad["RequestCpus"].to_string());
    check("RequestCpus", cpus, ours.request_cpus.to_string());
    for (field, mine) in [
        ("RequestMemory", ours.request_memory),
        ("RequestDisk", ours.request_disk),
    ] {
        match size_attr(ad.get(field)) {
            Ok(t) => check(field, format!("{t:?}"), format!("{mine:?}")),
            Err(e) => check(field, e, format!("{mine:?}")),
        }
    }
    let iwd = s("Iwd").unwrap_or_default();
    check("Iwd", iwd.clone(), ours.initialdir.clone());
    let resolve = |p: Option<String>| match p {
        Some(p) if p == "/dev/null" => None,
        Some(p) if p.starts_with('/') => Some(p),
        Some(p) => Some(format!("{}/{p}", iwd.trim_end_matches('/'))),
        None => None,
    };
    let dev_null = |p: &Option<String>| p.clone().filter(|p| p != "/dev/null");
    check(
        "In",
        format!("{:?}", resolve(s("In"))),
        format!("{:?}", dev_null(&ours.input)),
    );
    check(
        "Out",
        format!("{:?}", resolve(s("Out"))),
        format!("{:?}", dev_null(&ours.output)),
    );
    check(
        "Err",
        format!("{:?}", resolve(s("Err"))),
        format!("{:?}", dev_null(&ours.error)),
    );
    check(
        "UserLog",
        format!("{:?}", s("UserLog")),
        format!("{:?}", ours.log),
    );
    check(
        "JobPrio",
        ad["JobPrio"].to_string(),
        ours.priority.to_string(),
    );
    check(
        "JobStatus(held)",
        (ad["JobStatus"] == 5).to_string(),
        ours.held.to_string(),
    );
    check(
        "TransferInput",
        s("TransferInput").unwrap_or_default(),
        ours.transfer_input_files.join(","),
    );
    check(
        "ShouldTransferFiles",
        s("ShouldTransferFiles").unwrap_or_default(),
        ours.should_transfer_files.clone(),
    );
    check(
        "WhenToTransferOutput",
        format!("{:?}", s("WhenToTransferOutput")),
        format!("{:?}", ours.when_to_transfer_output),
    );
    // Job policy attributes: HTCondor's that differ from a plain job's, against ours.
    let theirs: BTreeMap<String, String> = ad["policy"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), no_ws(v.as_str().unwrap_or_default())))
                .collect()
        })
        .unwrap_or_default();
    let mine: BTreeMap<String, String> = ours
        .policy
        .iter()
        .map(|(k, v)| (k.clone(), no_ws(v)))
        .collect();
    check(
        "policy attributes",
        format!("{theirs:?}"),
        format!("{mine:?}"),
    );
    let theirs: BTreeMap<String, Value> = ad["custom"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mine: BTreeMap<String, &CustomValue> = ours
        .custom_attributes
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let tk: Vec<_> = theirs.keys().collect();
    let mk: Vec<_> = mine.keys().collect();
    if tk != mk {
        out.push(format!(
            "{file} job {i}: custom attribute names: htcondor {tk:?}, jobcell {mk:?}"
        ));
    } else {
        for (k, v) in &theirs {
            if !custom_equal(mine[k], v) {
                out.push(format!(
                    "{file} job {i}: +{k}: htcondor {v}, jobcell {:?}",
                    mine[k]
                ));
            }
        }
    }
}

#[test]
fn submit_files_match_htcondor() {
    let python = venv_python();
    if !python.exists() {
        // test.sh sets this after running setup-venv.sh, so a broken venv cannot pass quietly.
        if std::env::var_os("JOBCELL_REQUIRE_HTCONDOR").is_some_and(|v| v == "1") {
            panic!(
                "JOBCELL_REQUIRE_HTCONDOR=1 but {} is missing; run tests/submit/setup-venv.sh",
                python.display()
            );
        }
        eprintln!("SKIPPED: htcondor reference not installed; run tests/submit/setup-venv.sh");
        return;
    }
    let repo = repo();
    let corpus = repo.join("tests/submit/corpus");
    let started = Instant::now();
    let run = Command::new(&python)
        .arg(repo.join("tests/submit/condor_reference.py"))
        .arg(&corpus)
        .arg(CLUSTER.to_string())
        .env_clear()
        .envs(test_environment())
        .output()
        .expect("run condor_reference.py");
    assert!(
        run.status.success(),
        "condor_reference.py failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let reference_time = started.elapsed();
    let reference: Value = serde_json::from_slice(&run.stdout).expect("reference JSON");
    let env = CorpusEnv {
        cwd: PathBuf::from(reference["cwd"].as_str().unwrap()),
        environ: reference["environ"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect(),
    };
    let files = reference["files"].as_object().unwrap();
    assert!(files.len() >= 40, "corpus has only {} files", files.len());

    let mut mismatches = Vec::new();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let ours_started = Instant::now();
    for (name, r) in files {
        let text = std::fs::read_to_string(corpus.join(name)).unwrap();
        let parsed = parse_submit(
            &text,
            &env,
            &SubmitOptions {
                cluster_id: CLUSTER,
            },
        );
        let bad = name.starts_with("bad-");
        match (r["ok"].as_bool().unwrap(), parsed) {
            (true, Ok(sub)) => {
                *counts.entry("accepted").or_default() += 1;
                let ads = r["jobs"].as_array().unwrap();
                if bad {
                    mismatches.push(format!("{name}: named bad-* but HTCondor accepts it"));
                }
                if ads.len() != sub.jobs.len() {
                    mismatches.push(format!(
                        "{name}: htcondor queues {} jobs, jobcell {}",
                        ads.len(),
                        sub.jobs.len()
                    ));
                    continue;
                }
                for (i, (job, ad)) in sub.jobs.iter().zip(ads).enumerate() {
                    compare(name, i, job, ad, &mut mismatches);
                }
            }
            (false, Err(e)) => {
                *counts.entry("refused").or_default() += 1;
                if !bad {
                    mismatches.push(format!("{name}: refused by both but not named bad-*"));
                }
                if e.line().is_none() {
                    mismatches.push(format!("{name}: jobcell's error names no line: {e}"));
                }
                let theirs = r["error"].as_str().unwrap_or("");
                eprintln!(
                    "{name}: both refuse; htcondor: {}; jobcell: {e}",
                    theirs.lines().next().unwrap_or("")
                );
            }
            (true, Err(e)) => {
                mismatches.push(format!("{name}: htcondor accepts it, jobcell refuses: {e}"))
            }
            (false, Ok(s)) => mismatches.push(format!(
                "{name}: htcondor refuses it ({}), jobcell queues {} jobs",
                r["error"],
                s.jobs.len()
            )),
        }
    }
    eprintln!(
        "differential: {} files ({} accepted, {} refused by both); reference {:?}, jobcell {:?}",
        files.len(),
        counts.get("accepted").unwrap_or(&0),
        counts.get("refused").unwrap_or(&0),
        reference_time,
        ours_started.elapsed()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// Without the reference (or with it): every corpus file jobcell should accept parses, and
/// every `bad-*` file is refused with an error naming its line.
#[test]
fn corpus_accepts_good_files_and_names_the_line_of_bad_ones() {
    let corpus = repo().join("tests/submit/corpus");
    let env = CorpusEnv {
        cwd: corpus.clone(),
        environ: test_environment()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let mut names: Vec<String> = std::fs::read_dir(&corpus)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".sub"))
        .collect();
    names.sort();
    assert!(names.len() >= 40);
    for name in names {
        let text = std::fs::read_to_string(corpus.join(&name)).unwrap();
        match parse_submit(&text, &env, &SubmitOptions::default()) {
            Ok(s) => {
                assert!(!name.starts_with("bad-"), "{name} parsed");
                assert!(!s.jobs.is_empty(), "{name}");
            }
            Err(e) => {
                assert!(name.starts_with("bad-"), "{name}: {e}");
                let line = e
                    .line()
                    .unwrap_or_else(|| panic!("{name}: {e} names no line"));
                assert!(
                    e.to_string().starts_with(&format!("line {line}: ")),
                    "{name}: {e}"
                );
                assert!(line <= text.lines().count(), "{name}: {e}");
            }
        }
    }
}
