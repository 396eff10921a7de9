//! The queue commands: submit, q, rm, hold, release, suspend, continue, history, status,
//! output. Each is one or a few HTTP requests to the daemon's socket.

use std::io::Write;

use clap::Args;
use jobcell_api::new_submit_key;
use jobcell_api::types::{
    now, BulkAction, BulkActionRequest, BulkActionResponse, JobFilter, JobInfo, OutputStream,
    ProcSelector, State, SubmitRequest,
};
use jobcell_spec::{format_size, JobSpec};

use crate::cmd_image::user_name;
use crate::socket::SocketArg;
use crate::submit_args::{
    finish_spec, is_root, job_user, words_follow_dashes, SubmitArgs, SubmitForm,
};

fn abs(p: &str) -> anyhow::Result<String> {
    let pb = std::path::Path::new(p);
    Ok(if pb.is_absolute() {
        p.to_string()
    } else {
        std::env::current_dir()?
            .join(pb)
            .to_string_lossy()
            .into_owned()
    })
}

pub fn build_spec(a: &SubmitArgs, command: Vec<String>) -> anyhow::Result<JobSpec> {
    let user = job_user(a)?;
    let mut spec = JobSpec::new(command);
    a.job.apply(&mut spec, None)?;
    finish_spec(&mut spec, user, a)?;
    Ok(spec)
}

pub fn submit(a: SubmitArgs) -> anyhow::Result<i32> {
    let args: Vec<_> = std::env::args_os().collect();
    let after_dashes = words_follow_dashes(&args, a.words.first().map(String::as_str));
    let command = match a.form(after_dashes) {
        SubmitForm::File(f) => {
            if a.dry_run {
                return crate::cmd_submit_file::dry_run(&f, &a);
            }
            if a.user.is_some() && !is_root() {
                anyhow::bail!("--user needs root: your jobs run as you");
            }
            anyhow::ensure!(
                a.count == 1 && a.output.is_none() && a.error.is_none() && a.job.chdir.is_none(),
                "--count, --output, --error and --chdir are for a command; a submit file says `queue N`, `output`, `error`, `initialdir`"
            );
            return crate::cmd_submit_file::submit(&f, &a);
        }
        SubmitForm::Command(c) => c,
    };
    // In an image the command may come from its Entrypoint + Cmd, which the daemon applies.
    anyhow::ensure!(
        !command.is_empty() || a.job.image.is_some(),
        "no command given (usage: jobcell submit [OPTIONS] COMMAND [ARGS...])"
    );
    anyhow::ensure!(!a.dry_run, "--dry-run is for a submit file, not a command");
    if a.user.is_some() && !is_root() {
        anyhow::bail!("--user needs root: your jobs run as you");
    }
    let spec = build_spec(&a, command)?;
    // One key per invocation: if the answer is lost (the daemon restarted between its commit
    // and its reply), the resend gets the jobs made the first time instead of a second copy.
    let req = SubmitRequest {
        spec,
        priority: a.priority,
        hold: a.hold,
        count: Some(a.count),
        stdout: a.output.as_deref().map(abs).transpose()?,
        stderr: a.error.as_deref().map(abs).transpose()?,
        submit_key: Some(new_submit_key()),
    };
    let client = a.sock.client()?;
    let r = client.submit(&req)?;
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for id in &r.ids {
            writeln!(out, "{id}")?;
        }
    } else if r.ids.len() == 1 {
        writeln!(out, "Submitted job {}.", r.ids[0])?;
    } else {
        writeln!(
            out,
            "Submitted {} jobs: {}-{}.",
            r.ids.len(),
            r.ids[0],
            r.ids[r.ids.len() - 1]
        )?;
    }
    if a.wait {
        drop(out);
        return crate::cmd_wait::wait_for(&client, &r.ids, false, None, a.quiet);
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub sock: SocketArg,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How many finished jobs at most, newest first (history only; also `-match`).
    #[arg(long, visible_alias = "match", default_value_t = 100)]
    pub limit: u32,
    /// Each job's attributes in ClassAd form, like `condor_q -l` (also `-long`).
    #[arg(short = 'l', long = "long", conflicts_with = "af")]
    pub long: bool,
    /// One line a job instead of the batch summary (q only; also `-nobatch`).
    #[arg(long)]
    pub nobatch: bool,
    /// Only the totals line (q only; also `-totals`).
    #[arg(long)]
    pub totals: bool,
    /// Only held jobs, each with its hold reason (q only; also `-hold`).
    #[arg(long, conflicts_with_all = ["run", "idle"])]
    pub hold: bool,
    /// Only running (and suspended) jobs (q only; also `-run`).
    #[arg(long, conflicts_with = "idle")]
    pub run: bool,
    /// Only idle (queued) jobs (q only; also `-idle`).
    #[arg(long)]
    pub idle: bool,
    /// condor_q's `-format FMT ATTR` (repeatable): per job, each ATTR's value printed with
    /// its printf-style FMT (%d %f %s %v %V, \n), nothing else added.
    #[arg(long, num_args = 2, value_names = ["FMT", "ATTR"], action = clap::ArgAction::Append,
          conflicts_with_all = ["af", "long", "json"])]
    pub format: Vec<String>,
    /// Jobs that ended at or after this time: epoch seconds or `YYYY-MM-DD[ HH:MM]`, local
    /// (history only; also `-completedsince`).
    #[arg(long, value_name = "TIME")]
    pub completedsince: Option<String>,
    /// Stop at this job: an id or C.P, or a ClassAd expression (history only, newest first;
    /// also `-since`), as condor_history does.
    #[arg(long, value_name = "ID|EXPR")]
    pub since: Option<String>,
    /// Only jobs whose ClassAd satisfies this expression (also `-constraint`), chosen by the
    /// daemon: `'RequestCpus > 1 && Owner == "alice"'`.
    #[arg(long, value_name = "EXPR")]
    pub constraint: Option<String>,
    /// Autoformat (also `-af`): per job, the values of these attributes, space-separated,
    /// one line per job.
    #[arg(long = "af", visible_alias = "autoformat", value_name = "ATTR", num_args = 1.., conflicts_with = "json")]
    pub af: Vec<String>,
    /// Only these jobs (finished ones too, q only): a job id, or CLUSTER.PROC, or CLUSTER.
    /// (every job of a cluster), as condor_q takes them; or a user name: that owner's jobs.
    #[arg(value_name = "ID|C.P|C.|OWNER")]
    pub ids: Vec<String>,
}

/// A positional job selector of q, rm, hold and release.
enum Selector {
    Id(u64),
    Proc(ProcSelector),
    Owner(String),
}

fn selector(sel: &str) -> anyhow::Result<Selector> {
    if let Ok(id) = sel.parse::<u64>() {
        return Ok(Selector::Id(id));
    }
    if !sel.starts_with(|c: char| c.is_ascii_digit()) {
        return Ok(Selector::Owner(sel.to_string()));
    }
    let bad =
        || anyhow::anyhow!("'{sel}' is not a job id, CLUSTER.PROC or CLUSTER. (e.g. 12, 7.0, 7.)");
    let (c, p) = sel.split_once('.').ok_or_else(bad)?;
    let cluster: u64 = c.parse().map_err(|_| bad())?;
    let proc = if p.is_empty() {
        None
    } else {
        Some(p.parse().map_err(|_| bad())?)
    };
    Ok(Selector::Proc(ProcSelector { cluster, proc }))
}

/// The commands that take HTCondor's single-dash long options, and those options.
const CONDOR_COMMANDS: [&str; 8] = [
    "q", "history", "rm", "hold", "release", "suspend", "continue", "qedit",
];
const CONDOR_OPTIONS: [&str; 16] = [
    "-constraint",
    "-af",
    "-autoformat",
    "-nobatch",
    "-hold",
    "-run",
    "-idle",
    "-long",
    "-format",
    "-limit",
    "-match",
    "-completedsince",
    "-since",
    "-reason",
    "-json",
    "-totals",
];
/// HTCondor options that ask for what jobcell does anyway: dropped.
const CONDOR_DEFAULTS: [&str; 3] = ["-batch", "-allusers", "-backwards"];
/// HTCondor options that change nothing on one node: dropped with a warning.
const CONDOR_NO_EFFECT: [&str; 3] = ["-global", "-wide", "-debug"];
/// HTCondor options jobcell has no counterpart for: refused in one line.
const CONDOR_UNSUPPORTED: [&str; 22] = [
    "-name",
    "-pool",
    "-schedd",
    "-addr",
    "-submitter",
    "-analyze",
    "-better-analyze",
    "-dag",
    "-io",
    "-userlog",
    "-file",
    "-forwards",
    "-startd",
    "-goodput",
    "-cputime",
    "-currentrun",
    "-xml",
    "-attributes",
    "-forcex",
    "-subcode",
    "-jobads",
    "-stream-results",
];

/// HTCondor's single-dash long options (`-constraint`, `-af`, `-nobatch`, ...) of the queue
/// commands, spelled as clap takes them (`-h` stays help, `-l` long); `rm -all` is
/// `--all-mine`. Options without effect here are dropped with a warning on stderr; those
/// jobcell cannot honour are an error.
pub fn condor_style_args(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>, String> {
    let Some(cmd) = args
        .get(1)
        .and_then(|c| CONDOR_COMMANDS.iter().find(|n| c == **n))
    else {
        return Ok(args);
    };
    let mut out = Vec::with_capacity(args.len());
    let mut options_end = false;
    for a in args {
        options_end |= a == "--";
        let name = a.to_string_lossy();
        if options_end {
            out.push(a);
        } else if CONDOR_OPTIONS.iter().any(|o| name == *o) {
            let mut long = std::ffi::OsString::from("-");
            long.push(&a);
            out.push(long);
        } else if *cmd == "rm" && name == "-all" {
            out.push("--all-mine".into());
        } else if CONDOR_DEFAULTS.iter().any(|o| name == *o) {
        } else if CONDOR_NO_EFFECT
            .iter()
            .any(|o| name == *o || name.starts_with(&format!("{o}:")))
        {
            eprintln!("jobcell: {name} has no effect on a single jobcell node; ignored");
        } else if CONDOR_UNSUPPORTED.iter().any(|o| name == *o) {
            return Err(format!(
                "{cmd} {name}: HTCondor's option is not supported by jobcell (one node, one \
                 queue; see docs/submit-files.md)"
            ));
        } else {
            out.push(a);
        }
    }
    Ok(out)
}

/// An attribute's ClassAd text as condor_q -af prints it: a string literal without its quotes
/// and escapes, anything else as written.
fn autoformat(text: &str) -> String {
    let Some(body) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
        return text.to_string();
    };
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Seconds as condor_q's run time, `D+HH:MM:SS`.
pub(crate) fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!(
        "{}+{:02}:{:02}:{:02}",
        s / 86400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

fn cmdline(c: &[String]) -> String {
    let s = c.join(" ");
    if s.chars().count() > 40 {
        s.chars().take(39).collect::<String>() + "…"
    } else {
        s
    }
}

fn state_short(s: State) -> &'static str {
    // condor_q's letters, plus S for starting... spelled out: readable beats terse here.
    s.as_str()
}

/// The jobs `a`'s ids, owners and constraint choose, from the queue (and, for named ids, the
/// history), by id.
fn chosen_jobs(client: &jobcell_api::Client, a: &ListArgs) -> anyhow::Result<Vec<JobInfo>> {
    let mut filter = JobFilter {
        constraint: a.constraint.clone(),
        owners: Vec::new(),
        clusters: Vec::new(),
    };
    let mut ids = Vec::new();
    let mut procs = Vec::new();
    for sel in &a.ids {
        match selector(sel)? {
            Selector::Id(id) => ids.push((sel, id)),
            Selector::Proc(p) => procs.push((sel, p)),
            Selector::Owner(o) => filter.owners.push(o),
        }
    }
    let mut jobs: Vec<JobInfo> = if ids.is_empty() && procs.is_empty() {
        client.queue_matching(&filter)?
    } else {
        let mut out = Vec::new();
        for (_, id) in &ids {
            out.push(client.job(*id)?);
        }
        if !procs.is_empty() {
            // Cluster forms need every job's cluster and proc: the queue and the history.
            let mut all = client.queue()?;
            let known: std::collections::HashSet<u64> = all.iter().map(|j| j.id).collect();
            let h = client.history(100_000)?;
            all.extend(h.into_iter().filter(|h| !known.contains(&h.id)));
            for (sel, p) in &procs {
                let found: Vec<JobInfo> = all
                    .iter()
                    .filter(|j| j.cluster == p.cluster && p.proc.is_none_or(|n| j.proc == n))
                    .cloned()
                    .collect();
                anyhow::ensure!(!found.is_empty(), "no job {sel}");
                out.extend(found);
            }
        }
        if filter != JobFilter::default() {
            // Named jobs, narrowed by the daemon's choice among the queue and the history.
            let mut chosen: std::collections::HashSet<u64> = client
                .queue_matching(&filter)?
                .iter()
                .map(|j| j.id)
                .collect();
            chosen.extend(
                client
                    .history_matching(100_000, &filter)?
                    .iter()
                    .map(|j| j.id),
            );
            out.retain(|j| chosen.contains(&j.id));
        }
        out
    };
    jobs.sort_by_key(|j| j.id);
    jobs.dedup_by_key(|j| j.id);
    Ok(jobs)
}

/// The jobs as JSON, each with its owner's name beside the uid.
fn print_json(jobs: &mut [JobInfo]) -> anyhow::Result<i32> {
    for j in jobs.iter_mut() {
        j.owner_name = Some(user_name(j.owner));
    }
    writeln!(
        std::io::stdout(),
        "{}",
        serde_json::to_string_pretty(&jobs)?
    )?;
    Ok(0)
}

/// `-l`: each job's ad, `Name = value` lines and a blank line (or JSON objects).
fn print_long(client: &jobcell_api::Client, jobs: &[JobInfo], json: bool) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    for j in jobs {
        let ad = client.ad(j.id)?;
        if json {
            let m: serde_json::Map<String, serde_json::Value> = ad
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&m)?)?;
            continue;
        }
        for (k, v) in ad {
            writeln!(out, "{k} = {v}")?;
        }
        writeln!(out)?;
    }
    Ok(0)
}

/// `-format`, `-af`, `-l` and `--json`, as q and history both print them; None: the table.
fn print_projection(
    client: &jobcell_api::Client,
    jobs: &mut [JobInfo],
    a: &ListArgs,
) -> Option<anyhow::Result<i32>> {
    Some(if !a.format.is_empty() {
        print_format(client, jobs, &a.format)
    } else if !a.af.is_empty() {
        print_autoformat(client, jobs, &a.af)
    } else if a.long {
        print_long(client, jobs, a.json)
    } else if a.json {
        print_json(jobs)
    } else {
        return None;
    })
}

pub fn q(a: ListArgs) -> anyhow::Result<i32> {
    for (set, what) in [
        (a.completedsince.is_some(), "-completedsince"),
        (a.since.is_some(), "-since"),
    ] {
        anyhow::ensure!(!set, "{what} is for history; q lists unfinished jobs");
    }
    let client = a.sock.client()?;
    let mut jobs = chosen_jobs(&client, &a)?;
    if a.hold {
        jobs.retain(|j| j.state == State::Held);
    } else if a.run {
        jobs.retain(|j| j.state.active());
    } else if a.idle {
        jobs.retain(|j| j.state == State::Queued);
    }
    if let Some(printed) = print_projection(&client, &mut jobs, &a) {
        return printed;
    }
    let mut out = std::io::stdout().lock();
    if a.totals {
        print_totals(&mut out, &jobs)?;
        return Ok(0);
    }
    if a.nobatch || a.hold || a.run || a.idle {
        print_job_lines(&mut out, &jobs, a.hold)?;
    } else {
        print_batches(&client, &mut out, &jobs)?;
    }
    writeln!(out)?;
    print_totals(&mut out, &jobs)?;
    Ok(0)
}

/// One line a job (`-nobatch`); with `-hold` the hold reason is a column.
fn print_job_lines(out: &mut impl Write, jobs: &[JobInfo], hold: bool) -> anyhow::Result<()> {
    let now = now();
    if hold {
        writeln!(
            out,
            "{:>7} {:>10} {:<10} {:<11}  HOLD_REASON",
            "ID", "CLUSTER", "OWNER", "SUBMITTED"
        )?;
        for j in jobs {
            writeln!(
                out,
                "{:>7} {:>10} {:<10} {:<11}  {}",
                j.id,
                format!("{}.{}", j.cluster, j.proc),
                user_name(j.owner),
                crate::localtime::short(j.submitted_at),
                j.hold_reason.as_deref().unwrap_or("")
            )?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:>7} {:>10} {:<10} {:<11} {:<9} {:>5} {:>9} {:>12} {:>4}  COMMAND",
        "ID", "CLUSTER", "OWNER", "SUBMITTED", "STATE", "CPUS", "MEMORY", "RUN_TIME", "PRIO"
    )?;
    for j in jobs {
        let run = if j.state.active() {
            j.run_time(now)
        } else {
            0.0
        };
        writeln!(
            out,
            "{:>7} {:>10} {:<10} {:<11} {:<9} {:>5} {:>9} {:>12} {:>4}  {}",
            j.id,
            format!("{}.{}", j.cluster, j.proc),
            user_name(j.owner),
            crate::localtime::short(j.submitted_at),
            state_short(j.state),
            j.cpus,
            format_size(j.memory),
            fmt_secs(run),
            j.priority,
            cmdline(&j.command)
        )?;
        // Why it waits, like condor_q -hold.
        if let (State::Held, Some(r)) = (j.state, &j.hold_reason) {
            writeln!(out, "{:>7} hold: {r}", "")?;
        }
    }
    Ok(())
}

/// The jobs' ids as condor_q's JOB_IDS column: `12.0-49` (first and last proc of a cluster),
/// `12.0 ... 13.4` over several clusters.
fn job_ids(jobs: &[&JobInfo]) -> String {
    let (Some(first), Some(last)) = (jobs.first(), jobs.last()) else {
        return String::new();
    };
    if first.id == last.id {
        format!("{}.{}", first.cluster, first.proc)
    } else if first.cluster == last.cluster {
        format!("{}.{}-{}", first.cluster, first.proc, last.proc)
    } else {
        format!(
            "{}.{} ... {}.{}",
            first.cluster, first.proc, last.cluster, last.proc
        )
    }
}

/// condor_q's default view: a line per owner and batch (JobBatchName, else the cluster).
fn print_batches(
    client: &jobcell_api::Client,
    out: &mut impl Write,
    jobs: &[JobInfo],
) -> anyhow::Result<()> {
    let mut batches: Vec<((String, String), Vec<&JobInfo>)> = Vec::new();
    for j in jobs {
        let key = (
            user_name(j.owner),
            match &j.batch_name {
                Some(b) => b.clone(),
                None => format!("ID: {}", j.cluster),
            },
        );
        match batches.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(j),
            None => batches.push((key, vec![j])),
        }
    }
    // DONE: the batches' jobs that have left the queue, from the history, one request that
    // the daemon answers from those clusters' rows alone.
    let clusters: std::collections::BTreeSet<u64> = jobs.iter().map(|j| j.cluster).collect();
    let mut done: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    if !clusters.is_empty() {
        let filter = JobFilter {
            constraint: None,
            owners: Vec::new(),
            clusters: clusters.iter().copied().collect(),
        };
        for h in client.history_matching(u32::MAX, &filter)? {
            *done.entry(h.cluster).or_default() += 1;
        }
    }
    writeln!(
        out,
        "{:<10} {:<16} {:<11} {:>5} {:>5} {:>5} {:>5} {:>6} JOB_IDS",
        "OWNER", "BATCH_NAME", "SUBMITTED", "DONE", "RUN", "IDLE", "HOLD", "TOTAL"
    )?;
    let dash = |n: usize| {
        if n == 0 {
            "_".to_string()
        } else {
            n.to_string()
        }
    };
    for ((owner, batch), js) in &batches {
        let count = |f: fn(State) -> bool| js.iter().filter(|j| f(j.state)).count();
        let run = count(|s| s.active());
        let idle = count(|s| s == State::Queued);
        let held = count(|s| s == State::Held);
        let mut in_batch: Vec<u64> = js.iter().map(|j| j.cluster).collect();
        in_batch.dedup();
        let finished = count(|s| !s.active() && s != State::Queued && s != State::Held);
        let gone: usize = in_batch
            .iter()
            .map(|c| done.get(c).copied().unwrap_or(0))
            .sum();
        // Jobs named by id may be finished ones already counted in the history.
        let done_n = gone.max(finished);
        let submitted = js
            .iter()
            .map(|j| j.submitted_at)
            .fold(f64::INFINITY, f64::min);
        writeln!(
            out,
            "{:<10} {:<16} {:<11} {:>5} {:>5} {:>5} {:>5} {:>6} {}",
            owner,
            batch,
            crate::localtime::short(submitted),
            dash(done_n),
            dash(run),
            dash(idle),
            dash(held),
            js.len() - finished + done_n,
            job_ids(js)
        )?;
    }
    Ok(())
}

/// condor_q's footer: `Total for query: 5 jobs; 0 completed, 0 removed, 2 idle, 1 running,
/// 2 held, 0 suspended`.
fn print_totals(out: &mut impl Write, jobs: &[JobInfo]) -> anyhow::Result<()> {
    let n = |f: fn(State) -> bool| jobs.iter().filter(|j| f(j.state)).count();
    writeln!(
        out,
        "Total for query: {}; {} completed, {} removed, {} idle, {} running, {} held, {} suspended",
        count_jobs(jobs.len()),
        n(|s| s == State::Completed || s == State::Failed),
        n(|s| s == State::Removed),
        n(|s| s == State::Queued),
        n(|s| matches!(s, State::Running | State::Starting)),
        n(|s| s == State::Held),
        n(|s| s == State::Suspended),
    )?;
    Ok(())
}

/// `-format FMT ATTR ...`: per job, each value through its printf-style format.
fn print_format(
    client: &jobcell_api::Client,
    jobs: &[JobInfo],
    pairs: &[String],
) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    for j in jobs {
        let ad = client.ad(j.id)?;
        for pair in pairs.chunks(2) {
            let [fmt, name] = pair else { continue };
            let text = ad
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, t)| t.as_str());
            write!(out, "{}", printf(fmt, text))?;
        }
    }
    Ok(0)
}

/// One `-format` conversion: the first `%[-0-9.]*[dfsvVx]` of `fmt` gets the attribute's
/// value (`undefined` when missing); `%%`, `\n` and `\t` as printf has them.
fn printf(fmt: &str, text: Option<&str>) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    let mut used = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            },
            '%' if chars.peek() == Some(&'%') => {
                chars.next();
                out.push('%');
            }
            '%' if !used => {
                let mut spec = String::new();
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_digit() || d == '.' || d == '-' {
                        spec.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                let conv = chars.next().unwrap_or('v');
                used = true;
                let raw = text.unwrap_or("undefined");
                let plain = autoformat(raw);
                let (left, rest) = match spec.strip_prefix('-') {
                    Some(r) => (true, r),
                    None => (false, spec.as_str()),
                };
                let (width, prec) = match rest.split_once('.') {
                    Some((w, p)) => (w.parse().unwrap_or(0), p.parse::<usize>().ok()),
                    None => (rest.parse().unwrap_or(0), None),
                };
                let v = match conv {
                    'd' | 'i' => plain
                        .parse::<f64>()
                        .map(|f| (f as i64).to_string())
                        .unwrap_or(plain),
                    'f' | 'g' => plain
                        .parse::<f64>()
                        .map(|f| format!("{f:.*}", prec.unwrap_or(6)))
                        .unwrap_or(plain),
                    'V' => raw.to_string(),
                    _ => plain,
                };
                if left {
                    out.push_str(&format!("{v:<width$}"));
                } else {
                    out.push_str(&format!("{v:>width$}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// `-af`: each job's ad, fetched one by one, and the named attributes' values (names are
/// case-insensitive; a missing one is `undefined`, as condor_q prints it).
fn print_autoformat(
    client: &jobcell_api::Client,
    jobs: &[JobInfo],
    attrs: &[String],
) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    for j in jobs {
        let ad = client.ad(j.id)?;
        let values: Vec<String> = attrs
            .iter()
            .map(|name| {
                ad.iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, text)| autoformat(text))
                    .unwrap_or_else(|| "undefined".into())
            })
            .collect();
        writeln!(out, "{}", values.join(" "))?;
    }
    Ok(0)
}

/// condor_history's `-since`: a job id or C.P (the listing stops before it), or an
/// expression (it stops at the first job that satisfies it).
enum Since {
    Job(Selector),
    Expr(String),
}

pub fn history(a: ListArgs) -> anyhow::Result<i32> {
    for (set, what) in [
        (a.nobatch, "-nobatch"),
        (a.totals, "-totals"),
        (a.hold, "-hold"),
        (a.run, "-run"),
        (a.idle, "-idle"),
    ] {
        anyhow::ensure!(!set, "{what} is for q; history lists finished jobs");
    }
    let completed_since = a
        .completedsince
        .as_deref()
        .map(crate::localtime::parse)
        .transpose()?;
    let since = match a.since.as_deref() {
        None => None,
        Some(s) if s.starts_with(|c: char| c.is_ascii_digit()) && selector(s).is_ok() => {
            Some(Since::Job(selector(s)?))
        }
        Some(e) => Some(Since::Expr(e.to_string())),
    };
    let mut filter = JobFilter {
        constraint: a.constraint.clone(),
        owners: Vec::new(),
        clusters: Vec::new(),
    };
    // Ids, C.P and C. narrow the daemon's choice by a constraint on ClusterId/ProcId; when
    // only clusters are named, the daemon reads those clusters' rows alone.
    let mut picks = Vec::new();
    let mut only_clusters = true;
    for sel in &a.ids {
        match selector(sel)? {
            Selector::Owner(o) => filter.owners.push(o),
            Selector::Id(id) => {
                only_clusters = false;
                picks.push(format!("JobcellId == {id}"));
            }
            Selector::Proc(ProcSelector {
                cluster,
                proc: None,
            }) => {
                filter.clusters.push(cluster);
                picks.push(format!("ClusterId == {cluster}"));
            }
            Selector::Proc(ProcSelector {
                cluster,
                proc: Some(p),
            }) => {
                filter.clusters.push(cluster);
                picks.push(format!("(ClusterId == {cluster} && ProcId == {p})"));
            }
        }
    }
    if !only_clusters {
        filter.clusters.clear();
    }
    let mut clauses = Vec::new();
    if let Some(c) = &a.constraint {
        clauses.push(format!("({c})"));
    }
    if !picks.is_empty() {
        clauses.push(format!("({})", picks.join(" || ")));
    }
    if let Some(t) = completed_since {
        clauses.push(format!("CompletionDate >= {}", t.floor() as i64));
    }
    filter.constraint = (!clauses.is_empty()).then(|| clauses.join(" && "));
    let client = a.sock.client()?;
    let mut jobs = match &since {
        None => client.history_matching(a.limit, &filter)?,
        Some(_) => client.history_matching(u32::MAX, &filter)?,
    };
    if let Some(s) = since {
        // Newest first: everything after the `-since` job.
        let stop = match s {
            Since::Job(Selector::Id(id)) => jobs.iter().position(|j| j.id == id),
            Since::Job(Selector::Proc(p)) => jobs
                .iter()
                .position(|j| j.cluster == p.cluster && p.proc.is_none_or(|n| j.proc == n)),
            Since::Job(Selector::Owner(_)) => None,
            Since::Expr(e) => {
                let matching = JobFilter {
                    constraint: Some(match &filter.constraint {
                        Some(c) => format!("({c}) && ({e})"),
                        None => e,
                    }),
                    owners: filter.owners.clone(),
                    clusters: filter.clusters.clone(),
                };
                let hits: std::collections::HashSet<u64> = client
                    .history_matching(u32::MAX, &matching)?
                    .iter()
                    .map(|j| j.id)
                    .collect();
                jobs.iter().position(|j| hits.contains(&j.id))
            }
        };
        if let Some(n) = stop {
            jobs.truncate(n);
        }
        jobs.truncate(a.limit as usize);
    }
    if let Some(printed) = print_projection(&client, &mut jobs, &a) {
        return printed;
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:>7} {:>10} {:<10} {:<11} {:<11} {:<11} {:<9} {:>6} {:>9} {:>9} {:>10}  COMMAND",
        "ID",
        "CLUSTER",
        "OWNER",
        "SUBMITTED",
        "STARTED",
        "COMPLETED",
        "STATE",
        "EXIT",
        "CPU_S",
        "MEM_PEAK",
        "WALL_S"
    )?;
    let when = |t: Option<f64>| t.map(crate::localtime::short).unwrap_or_else(|| "-".into());
    for j in &jobs {
        let exit = match (j.exit_code, j.signal) {
            (Some(c), _) => c.to_string(),
            (None, Some(s)) => format!("sig{s}"),
            _ => "-".into(),
        };
        let rep = j.report.as_ref();
        let cpu = rep
            .map(|r| {
                (r["cpu_user_us"].as_u64().unwrap_or(0) + r["cpu_system_us"].as_u64().unwrap_or(0))
                    as f64
                    / 1e6
            })
            .map(|c| format!("{c:.3}"))
            .unwrap_or_else(|| "-".into());
        let peak = rep
            .and_then(|r| r["usage"]["memory_peak"].as_u64())
            .map(format_size)
            .unwrap_or_else(|| "-".into());
        let wall = rep
            .and_then(|r| r["wall_time_s"].as_f64())
            .map(|w| format!("{w:.3}"))
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:>7} {:>10} {:<10} {:<11} {:<11} {:<11} {:<9} {:>6} {:>9} {:>9} {:>10}  {}",
            j.id,
            format!("{}.{}", j.cluster, j.proc),
            user_name(j.owner),
            when(Some(j.submitted_at)),
            when(j.started_at),
            when(j.ended_at),
            j.state.as_str(),
            exit,
            cpu,
            peak,
            wall,
            cmdline(&j.command)
        )?;
        if let Some(r) = &j.reason {
            writeln!(out, "{:>7} reason: {r}", "")?;
        }
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub sock: SocketArg,
    #[arg(long)]
    pub json: bool,
    /// The node's machine ClassAd (what submit files' `requirements` are matched against),
    /// like `condor_status -l`.
    #[arg(short = 'l', long = "long", conflicts_with = "json")]
    pub long: bool,
}

pub fn status(a: StatusArgs) -> anyhow::Result<i32> {
    let s = a.sock.client()?.status()?;
    if a.long {
        let mut out = std::io::stdout().lock();
        for (k, v) in &s.machine_ad {
            writeln!(out, "{k} = {v}")?;
        }
        return Ok(0);
    }
    if a.json {
        writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&s)?)?;
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "jobcell daemon {} (pid {})", s.version, s.daemon_pid)?;
    writeln!(
        out,
        "cpus:   {} total, {} allocated, load {:.2}",
        s.cpus_total, s.cpus_allocated, s.load_1m
    )?;
    writeln!(
        out,
        "memory: {} total, {} allocated, {} used by jobs",
        format_size(s.memory_total),
        format_size(s.memory_allocated),
        s.memory_used.map(format_size).unwrap_or_else(|| "-".into())
    )?;
    let jobs: Vec<String> = s.jobs.iter().map(|(k, v)| format!("{v} {k}")).collect();
    writeln!(
        out,
        "jobs:   {}",
        if jobs.is_empty() {
            "none".into()
        } else {
            jobs.join(", ")
        }
    )?;
    Ok(0)
}

/// The jobs of release, suspend and continue.
#[derive(Args, Debug)]
pub struct ActArgs {
    #[command(flatten)]
    pub sock: SocketArg,
    /// The jobs: ids, CLUSTER.PROC or CLUSTER. (every job of the cluster).
    #[arg(value_name = "ID|C.P|C.", required_unless_present = "constraint")]
    pub ids: Vec<String>,
    /// Every unfinished job of mine (root: anyone's) whose ClassAd satisfies this (also
    /// `-constraint`).
    #[arg(long, value_name = "EXPR")]
    pub constraint: Option<String>,
}

/// The jobs of hold, and why.
#[derive(Args, Debug)]
pub struct HoldArgs {
    #[command(flatten)]
    pub act: ActArgs,
    /// Why, shown as the job's HoldReason (also `-reason`).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    #[command(flatten)]
    pub sock: SocketArg,
    /// The jobs: ids, CLUSTER.PROC or CLUSTER.
    #[arg(
        value_name = "ID|C.P|C.",
        required_unless_present_any = ["all_mine", "constraint"],
        conflicts_with = "all_mine"
    )]
    pub ids: Vec<String>,
    /// Every unfinished job of mine (root: anyone's) whose ClassAd satisfies this (also
    /// `-constraint`).
    #[arg(long, value_name = "EXPR", conflicts_with = "all_mine")]
    pub constraint: Option<String>,
    /// Remove every unfinished job of mine.
    #[arg(long)]
    pub all_mine: bool,
}

/// The bulk request for positional selectors and a constraint.
fn bulk_request(
    action: BulkAction,
    ids: &[String],
    constraint: Option<String>,
    reason: Option<String>,
) -> anyhow::Result<BulkActionRequest> {
    let mut req = BulkActionRequest {
        action,
        reason,
        ids: Vec::new(),
        procs: Vec::new(),
        constraint,
        attribute: None,
        value: None,
    };
    for sel in ids {
        match selector(sel)? {
            Selector::Id(id) => req.ids.push(id),
            Selector::Proc(p) => req.procs.push(p),
            Selector::Owner(_) => anyhow::bail!(
                "'{sel}' is not a job id, CLUSTER.PROC or CLUSTER. (for an owner's jobs: -constraint 'Owner == \"{sel}\"')"
            ),
        }
    }
    Ok(req)
}

/// The jobs acted on as `12.0-49, 13.2`: each cluster's runs of consecutive procs.
fn proc_ranges(procs: &[(u64, u64)]) -> String {
    let mut sorted = procs.to_vec();
    sorted.sort_unstable();
    let mut runs: Vec<(u64, u64, u64)> = Vec::new();
    for (c, p) in sorted {
        match runs.last_mut() {
            Some((rc, _, last)) if *rc == c && *last + 1 == p => *last = p,
            _ => runs.push((c, p, p)),
        }
    }
    const SHOWN: usize = 8;
    let mut parts: Vec<String> = runs
        .iter()
        .take(SHOWN)
        .map(|(c, a, b)| {
            if a == b {
                format!("{c}.{a}")
            } else {
                format!("{c}.{a}-{b}")
            }
        })
        .collect();
    if runs.len() > SHOWN {
        parts.push(format!("and {} more", runs.len() - SHOWN));
    }
    parts.join(", ")
}

/// One request; one summary line (`Job(s) 12.0-49 held`), then a line per refusal (the
/// first few) on stderr.
fn send_bulk(sock: &SocketArg, req: &BulkActionRequest) -> anyhow::Result<i32> {
    let r = sock.client()?.act_on_many(req)?;
    report_bulk(req.action, r, "")
}

fn report_bulk(action: BulkAction, r: BulkActionResponse, what: &str) -> anyhow::Result<i32> {
    let (verb, done) = match action {
        BulkAction::Remove => ("remove", "marked for removal"),
        BulkAction::Hold => ("hold", "held"),
        BulkAction::Release => ("release", "released"),
        BulkAction::Suspend => ("suspend", "suspended"),
        BulkAction::Continue => ("continue", "continued"),
        BulkAction::Edit => ("edit", "edited"),
    };
    if !r.done.is_empty() {
        let which = if r.done_procs.len() == r.done.len() {
            proc_ranges(&r.done_procs)
        } else {
            let ids: Vec<String> = r.done.iter().map(u64::to_string).collect();
            ids.join(", ")
        };
        let jobs = if r.done.len() == 1 { "Job" } else { "Job(s)" };
        writeln!(std::io::stdout(), "{jobs} {which} {done}{what}")?;
    }
    for sel in &r.unmatched {
        eprintln!("jobcell: no unfinished job {sel}");
    }
    const SHOWN: usize = 3;
    for f in r.refused.iter().take(SHOWN) {
        eprintln!("jobcell: job {}: {}", f.id, f.error);
    }
    if r.refused.len() > SHOWN {
        eprintln!(
            "jobcell: {} more could not be {done}",
            count_jobs(r.refused.len() - SHOWN)
        );
    }
    if r.done.is_empty() && r.refused.is_empty() && r.unmatched.is_empty() {
        let which = if action == BulkAction::Edit {
            "queued or held"
        } else {
            "unfinished"
        };
        eprintln!("jobcell: no {which} job of yours matches; nothing to {verb}");
    }
    Ok(
        if r.done.is_empty() || !r.refused.is_empty() || !r.unmatched.is_empty() {
            1
        } else {
            0
        },
    )
}

fn describe(verb: &str, j: &JobInfo) -> String {
    match (verb, j.state) {
        ("remove", State::Removed) => format!("Job {} removed.", j.id),
        ("remove", _) | ("hold", State::Running | State::Starting) => {
            format!("Job {}: stopping ({verb} requested).", j.id)
        }
        _ => format!("Job {} is {}.", j.id, j.state.as_str()),
    }
}

/// hold, release, suspend and continue: one job id is one request to that job's endpoint
/// (its answer says what became of it); anything else is one bulk request.
pub fn act(action: BulkAction, a: ActArgs, reason: Option<String>) -> anyhow::Result<i32> {
    let single = match a.ids.as_slice() {
        [one] if a.constraint.is_none() => one.parse::<u64>().ok(),
        _ => None,
    };
    let Some(id) = single else {
        let req = bulk_request(action, &a.ids, a.constraint, reason)?;
        return send_bulk(&a.sock, &req);
    };
    let c = a.sock.client()?;
    let (verb, j) = match action {
        BulkAction::Hold => ("hold", c.hold(id, reason.as_deref())?),
        BulkAction::Release => ("release", c.release(id)?),
        BulkAction::Suspend => ("suspend", c.suspend(id)?),
        BulkAction::Continue => ("continue", c.continue_job(id)?),
        BulkAction::Remove | BulkAction::Edit => unreachable!("rm and qedit have their own"),
    };
    writeln!(std::io::stdout(), "{}", describe(verb, &j))?;
    Ok(0)
}

pub fn rm(a: RmArgs) -> anyhow::Result<i32> {
    if !a.all_mine {
        if let ([one], None) = (a.ids.as_slice(), &a.constraint) {
            if let Ok(id) = one.parse::<u64>() {
                let j = a.sock.client()?.remove(id)?;
                writeln!(std::io::stdout(), "{}", describe("remove", &j))?;
                return Ok(0);
            }
        }
        let req = bulk_request(BulkAction::Remove, &a.ids, a.constraint, None)?;
        return send_bulk(&a.sock, &req);
    }
    // SAFETY: getuid cannot fail and touches no memory.
    let me = unsafe { libc::getuid() };
    // The daemon's constraint selects only the caller's jobs, but root's selects everyone's:
    // name the owner.
    let mine = format!(
        "Owner == {}",
        jobcell_spec::submit::classad_string(&user_name(me))
    );
    let req = bulk_request(BulkAction::Remove, &[], Some(mine), None)?;
    send_bulk(&a.sock, &req)
}

#[derive(Args, Debug)]
pub struct QeditArgs {
    #[command(flatten)]
    pub sock: SocketArg,
    /// Every queued or held job of mine (root: anyone's) whose ClassAd satisfies this (also
    /// `-constraint`); then only ATTR and VALUE follow.
    #[arg(long, value_name = "EXPR")]
    pub constraint: Option<String>,
    /// The jobs (ID, C.P or C.), then the attribute (RequestMemory in MiB, RequestCpus,
    /// RequestDisk in KiB, JobPrio, JobBatchName, or a custom `+Foo`/`MY.Foo`), then its
    /// value, a ClassAd expression (a string in double quotes).
    #[arg(value_name = "WORDS", required = true, num_args = 2.., allow_hyphen_values = true)]
    pub words: Vec<String>,
}

/// condor_qedit: `qedit ID|C.P|C. ... ATTR VALUE` or `qedit -constraint EXPR ATTR VALUE`.
pub fn qedit(a: QeditArgs) -> anyhow::Result<i32> {
    let [sels @ .., attr, value] = a.words.as_slice() else {
        anyhow::bail!("qedit needs an attribute and a value (qedit ID ATTR VALUE)");
    };
    anyhow::ensure!(
        !sels.is_empty() || a.constraint.is_some(),
        "qedit: which jobs? give ids, CLUSTER.PROC or CLUSTER. before {attr}, or -constraint"
    );
    let req = bulk_request(BulkAction::Edit, sels, a.constraint.clone(), None)?;
    let r = a.sock.client()?.edit(req, attr, value)?;
    report_bulk(BulkAction::Edit, r, &format!(": {attr} = {value}"))
}

#[derive(Args, Debug)]
pub struct OutputArgs {
    #[command(flatten)]
    pub sock: SocketArg,
    pub id: u64,
    /// Show stderr instead of stdout.
    #[arg(long, conflicts_with = "events")]
    pub stderr: bool,
    /// Show the job's event log (submitted, started, suspended, held, ended with usage).
    #[arg(long)]
    pub events: bool,
    /// With --events: JSON instead of lines.
    #[arg(long, requires = "events")]
    pub json: bool,
    /// Keep printing what the job writes until it ends, like `tail -f`.
    #[arg(long, short = 'f', conflicts_with = "events")]
    pub follow: bool,
}

pub fn output(a: OutputArgs) -> anyhow::Result<i32> {
    if a.events {
        let ev = a.sock.client()?.events(a.id)?;
        if a.json {
            writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&ev)?)?;
            return Ok(0);
        }
        let mut out = std::io::stdout().lock();
        for e in ev {
            let t = crate::localtime::full(e.time);
            let detail = e.detail.map(|d| d.to_string()).unwrap_or_default();
            writeln!(out, "{t} {:<17} {detail}", e.kind)?;
        }
        return Ok(0);
    }
    let which = if a.stderr {
        OutputStream::Stderr
    } else {
        OutputStream::Stdout
    };
    if a.follow {
        return crate::cmd_wait::follow(&a.sock, a.id, which);
    }
    let data = a.sock.client()?.output(a.id, which)?;
    std::io::stdout().write_all(&data)?;
    Ok(0)
}

/// "1 job", "2 jobs".
fn count_jobs(n: usize) -> String {
    if n == 1 {
        "1 job".to_string()
    } else {
        format!("{n} jobs")
    }
}
