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
    /// How many finished jobs (history only).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Each job's attributes in ClassAd form, like `condor_q -l`.
    #[arg(short = 'l', long = "long", conflicts_with = "af")]
    pub long: bool,
    /// Only jobs whose ClassAd satisfies this expression (also `-constraint`), chosen by the
    /// daemon: `'RequestCpus > 1 && Owner == "alice"'`.
    #[arg(long, value_name = "EXPR")]
    pub constraint: Option<String>,
    /// Autoformat (also `-af`): per job, the values of these attributes, space-separated,
    /// one line per job.
    #[arg(long = "af", value_name = "ATTR", num_args = 1.., conflicts_with = "json")]
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

/// HTCondor's single-dash long options (`-constraint`, `-af`) of q, history, rm, hold and
/// release, spelled as clap takes them.
pub fn condor_style_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let takes_them = args.get(1).is_some_and(|c| {
        ["q", "history", "rm", "hold", "release"]
            .iter()
            .any(|n| c == *n)
    });
    if !takes_them {
        return args;
    }
    let mut out = Vec::with_capacity(args.len());
    let mut options_end = false;
    for a in args {
        options_end |= a == "--";
        if !options_end && (a == "-constraint" || a == "-af") {
            let mut long = std::ffi::OsString::from("-");
            long.push(&a);
            out.push(long);
        } else {
            out.push(a);
        }
    }
    out
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

fn fmt_secs(s: f64) -> String {
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

pub fn q(a: ListArgs) -> anyhow::Result<i32> {
    let client = a.sock.client()?;
    let mut filter = JobFilter {
        constraint: a.constraint.clone(),
        owners: Vec::new(),
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
    if !a.af.is_empty() {
        return print_autoformat(&client, &jobs, &a.af);
    }
    if a.long {
        let mut out = std::io::stdout().lock();
        for j in &jobs {
            let ad = client.ad(j.id)?;
            if a.json {
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
        return Ok(0);
    }
    if a.json {
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(&jobs)?
        )?;
        return Ok(0);
    }
    let now = now();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:>7} {:>10} {:<10} {:<9} {:>5} {:>9} {:>12} {:>4}  COMMAND",
        "ID", "CLUSTER", "OWNER", "STATE", "CPUS", "MEMORY", "RUN_TIME", "PRIO"
    )?;
    let mut counts = std::collections::BTreeMap::new();
    for j in &jobs {
        *counts.entry(j.state.as_str()).or_insert(0) += 1;
        let run = match (j.started_at, j.state.active()) {
            (Some(s), true) => now - s,
            _ => 0.0,
        };
        writeln!(
            out,
            "{:>7} {:>10} {:<10} {:<9} {:>5} {:>9} {:>12} {:>4}  {}",
            j.id,
            format!("{}.{}", j.cluster, j.proc),
            user_name(j.owner),
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
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    writeln!(
        out,
        "\n{}{}{}",
        count_jobs(jobs.len()),
        if summary.is_empty() { "" } else { "; " },
        summary.join(", ")
    )?;
    Ok(0)
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

pub fn history(a: ListArgs) -> anyhow::Result<i32> {
    let mut filter = JobFilter {
        constraint: a.constraint.clone(),
        owners: Vec::new(),
    };
    for sel in &a.ids {
        match selector(sel)? {
            Selector::Owner(o) => filter.owners.push(o),
            _ => anyhow::bail!(
                "'{sel}': history takes owner names (use -constraint 'ClusterId == N' for jobs)"
            ),
        }
    }
    let client = a.sock.client()?;
    let jobs = client.history_matching(a.limit, &filter)?;
    if !a.af.is_empty() {
        return print_autoformat(&client, &jobs, &a.af);
    }
    if a.json {
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(&jobs)?
        )?;
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:>7} {:<10} {:<9} {:>6} {:>9} {:>9} {:>10}  COMMAND",
        "ID", "OWNER", "STATE", "EXIT", "CPU_S", "MEM_PEAK", "WALL_S"
    )?;
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
            "{:>7} {:<10} {:<9} {:>6} {:>9} {:>9} {:>10}  {}",
            j.id,
            user_name(j.owner),
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

#[derive(Args, Debug)]
pub struct ActArgs {
    #[command(flatten)]
    pub sock: SocketArg,
    /// The jobs: ids, CLUSTER.PROC or CLUSTER. (suspend and continue: one id).
    #[arg(value_name = "ID|C.P|C.", required_unless_present = "constraint")]
    pub ids: Vec<String>,
    /// Every unfinished job of mine (root: anyone's) whose ClassAd satisfies this (also
    /// `-constraint`); hold and release only.
    #[arg(long, value_name = "EXPR")]
    pub constraint: Option<String>,
    /// Why (hold only).
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

/// One action on the jobs `ids` and `constraint` select, in one request; one summary line,
/// then a line per refusal (the first few) on stderr.
fn act_on_many(
    sock: &SocketArg,
    action: BulkAction,
    ids: &[String],
    constraint: Option<String>,
    reason: Option<String>,
) -> anyhow::Result<i32> {
    let mut req = BulkActionRequest {
        action,
        reason,
        ids: Vec::new(),
        procs: Vec::new(),
        constraint,
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
    let r: BulkActionResponse = sock.client()?.act_on_many(&req)?;
    let (verb, done) = match action {
        BulkAction::Remove => ("remove", "marked for removal"),
        BulkAction::Hold => ("hold", "held"),
        BulkAction::Release => ("release", "released"),
    };
    if !r.done.is_empty() {
        writeln!(std::io::stdout(), "{} {done}", count_jobs(r.done.len()))?;
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
        eprintln!("jobcell: no unfinished job of yours matches; nothing to {verb}");
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

pub fn act(verb: &str, a: ActArgs) -> anyhow::Result<i32> {
    if a.reason.is_some() && verb != "hold" {
        anyhow::bail!("--reason is only for hold");
    }
    let single = match a.ids.as_slice() {
        [one] if a.constraint.is_none() => one.parse::<u64>().ok(),
        _ => None,
    };
    let Some(id) = single else {
        let action = match verb {
            "hold" => BulkAction::Hold,
            "release" => BulkAction::Release,
            v => anyhow::bail!(
                "{v} takes one job id (several jobs and -constraint: hold, release, rm)"
            ),
        };
        return act_on_many(&a.sock, action, &a.ids, a.constraint, a.reason);
    };
    let c = a.sock.client()?;
    let j = match verb {
        "hold" => c.hold(id, a.reason.as_deref())?,
        "release" => c.release(id)?,
        "suspend" => c.suspend(id)?,
        "continue" => c.continue_job(id)?,
        v => anyhow::bail!("no action '{v}' (hold, release, suspend, continue)"),
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
        return act_on_many(&a.sock, BulkAction::Remove, &a.ids, a.constraint, None);
    }
    let c = a.sock.client()?;
    // SAFETY: getuid cannot fail and touches no memory.
    let me = unsafe { libc::getuid() };
    let ids: Vec<u64> = c
        .queue()?
        .into_iter()
        .filter(|j| j.owner == me)
        .map(|j| j.id)
        .collect();
    let mut failed = 0;
    for id in ids {
        match c.remove(id) {
            Ok(j) => writeln!(std::io::stdout(), "{}", describe("remove", &j))?,
            Err(e) => {
                eprintln!("jobcell: job {id}: {e}");
                failed += 1;
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
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
            let t = e.time;
            let detail = e.detail.map(|d| d.to_string()).unwrap_or_default();
            writeln!(out, "{t:.3} {:<17} {detail}", e.kind)?;
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
