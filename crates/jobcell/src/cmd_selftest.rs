//! `jobcell selftest`: the attack suite (`jobcell_sandbox::selftest`) and its table; and
//! `jobcell selftest-probe`, the one syscall a suite's job makes.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use jobcell_sandbox::selftest::{self, Options, Verdict};

#[derive(Args, Debug)]
pub struct SelftestArgs {
    /// Print the table as JSON.
    #[arg(long)]
    pub json: bool,
    /// A registered image to run the image attacks in (chroot escape); skipped without.
    #[arg(long, value_name = "NAME")]
    pub image: Option<String>,
    /// Parent of the selftest's temporary work dir. It must be on a filesystem jobs see at
    /// the same path and that is not mounted nosuid (the setuid attack needs a real setuid
    /// file); default /var/lib.
    #[arg(long, value_name = "DIR", default_value = "/var/lib")]
    pub work_dir: PathBuf,
    /// Extra options for every `jobcell run` (e.g. --config FILE); repeatable.
    #[arg(long = "run-opt", value_name = "OPT", allow_hyphen_values = true)]
    pub run_opt: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ProbeArgs {
    pub name: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(a: SelftestArgs) -> anyhow::Result<i32> {
    let report = selftest::run(&Options {
        exe: std::env::current_exe().context("finding the jobcell binary")?,
        image: a.image,
        work_dir: a.work_dir,
        run_opt: a.run_opt,
    })?;
    let rows = &report.rows;
    let (passed, failed, skipped) = (report.passed(), report.failed(), report.skipped());
    let secs = report.seconds;
    let mut out = std::io::stdout().lock();
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "attack": r.attack, "expected": r.expected, "seen": r.seen,
                    "ok": match r.verdict { Verdict::Pass => serde_json::json!(true),
                        Verdict::Fail => serde_json::json!(false),
                        Verdict::Skip => serde_json::Value::Null },
                    "skipped": r.verdict == Verdict::Skip,
                })
            })
            .collect();
        let doc = serde_json::json!({"attacks": v, "passed": passed, "failed": failed,
            "skipped": skipped, "seconds": secs});
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        let w0 = rows
            .iter()
            .map(|r| r.attack.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let w1 = rows
            .iter()
            .map(|r| r.expected.len())
            .max()
            .unwrap_or(8)
            .max(8);
        let w2 = rows
            .iter()
            .map(|r| r.seen.chars().count().min(70))
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            out,
            "{:w0$} | {:w1$} | {:w2$} | ok",
            "attack", "expected", "seen"
        )?;
        writeln!(out, "{}", "-".repeat(w0 + w1 + w2 + 13))?;
        for r in rows {
            let seen: String = r.seen.replace('\n', " ").chars().take(70).collect();
            let ok = match r.verdict {
                Verdict::Pass => "ok",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "skip",
            };
            writeln!(
                out,
                "{:w0$} | {:w1$} | {:w2$} | {ok}",
                r.attack, r.expected, seen
            )?;
        }
        writeln!(
            out,
            "{} attacks: {passed} held, {failed} succeeded, {skipped} skipped ({secs:.1} s)",
            rows.len()
        )?;
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

pub fn probe(p: ProbeArgs) -> anyhow::Result<i32> {
    Ok(selftest::probe(&p.name, &p.args)?)
}
