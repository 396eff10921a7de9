//! `jobcell watch`, like condor_watch_q: one line per cluster with a progress bar, kept up
//! to date until every watched job has ended (or is held). On a terminal the lines are
//! redrawn in place; otherwise a line is printed when a cluster's counts change.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use clap::Args;
use jobcell_api::types::{JobFilter, JobInfo, State};
use jobcell_api::Client;

use crate::cmd_top::parse_delay;
use crate::socket::SocketArg;

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub sock: SocketArg,
    /// Seconds between looks at the queue.
    #[arg(short = 'd', long = "delay", value_name = "SECS", default_value = "1", value_parser = parse_delay)]
    pub delay: Duration,
    /// Stop when: `all,done` (every job has ended; held ones keep it waiting), `any,done`
    /// (a job has ended), `any,held` (a job is held). Default: every job has ended or is held.
    #[arg(long = "exit", value_name = "GROUP,STATE", value_parser = parse_exit)]
    pub exit: Option<ExitWhen>,
    /// What to watch: a job id, CLUSTER.PROC, CLUSTER. (a whole cluster), or an owner's
    /// name (the clusters that owner has in the queue now). Default: your own clusters.
    #[arg(value_name = "ID|C.P|C.|OWNER")]
    pub what: Vec<String>,
}

/// When `watch` stops, as condor_watch_q's `-exit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitWhen {
    AllDone,
    AnyDone,
    AnyHeld,
}

fn parse_exit(s: &str) -> Result<ExitWhen, String> {
    match s.trim() {
        "all,done" => Ok(ExitWhen::AllDone),
        "any,done" => Ok(ExitWhen::AnyDone),
        "any,held" => Ok(ExitWhen::AnyHeld),
        _ => Err(format!("'{s}' is not all,done, any,done or any,held")),
    }
}

/// Whether the watch is over, given every cluster's counts.
fn over(exit: Option<ExitWhen>, counts: &BTreeMap<u64, Counts>) -> bool {
    let mut all = counts.values();
    match exit {
        None => all.all(Counts::settled),
        Some(ExitWhen::AllDone) => all.all(|n| n.settled() && n.held == 0),
        Some(ExitWhen::AnyDone) => all.any(|n| n.done + n.failed > 0),
        Some(ExitWhen::AnyHeld) => all.any(|n| n.held > 0),
    }
}

/// The watched jobs of one cluster: all of them, or these ids.
type Watched = BTreeMap<u64, Option<BTreeSet<u64>>>;

/// One cluster's jobs by how far they got.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counts {
    done: u64,
    failed: u64,
    run: u64,
    idle: u64,
    held: u64,
}

impl Counts {
    fn total(&self) -> u64 {
        self.done + self.failed + self.run + self.idle + self.held
    }

    /// Every job has ended or is held (waits for a person).
    fn settled(&self) -> bool {
        self.run == 0 && self.idle == 0 && self.total() > 0
    }

    fn add(&mut self, j: &JobInfo) {
        match j.state {
            State::Completed if j.exit_code == Some(0) => self.done += 1,
            State::Completed | State::Failed | State::Removed => self.failed += 1,
            State::Running | State::Starting | State::Suspended => self.run += 1,
            State::Queued => self.idle += 1,
            State::Held => self.held += 1,
        }
    }
}

pub fn watch(a: WatchArgs) -> anyhow::Result<i32> {
    let client = a.sock.client()?;
    let what = if a.what.is_empty() {
        // SAFETY: getuid has no preconditions and cannot fail.
        vec![crate::cmd_image::user_name(unsafe { libc::getuid() })]
    } else {
        a.what.clone()
    };
    let watched = resolve(&client, &what)?;
    // SAFETY: isatty takes any integer.
    let tty = unsafe { libc::isatty(1) } == 1;
    let mut last: BTreeMap<u64, Counts> = BTreeMap::new();
    let mut drawn = 0;
    loop {
        let jobs = watched_jobs(&client, &watched)?;
        let mut counts: BTreeMap<u64, Counts> =
            watched.keys().map(|c| (*c, Counts::default())).collect();
        for j in &jobs {
            counts.entry(j.cluster).or_default().add(j);
        }
        let mut out = std::io::stdout().lock();
        if tty {
            let mut s = String::new();
            if drawn > 0 {
                s += &format!("\x1b[{drawn}A");
            }
            for (c, n) in &counts {
                s += &format!("\r{}\x1b[K\n", line(*c, n, true));
            }
            out.write_all(s.as_bytes())?;
            drawn = counts.len();
        } else {
            for (c, n) in &counts {
                if last.get(c) != Some(n) {
                    writeln!(out, "{}", line(*c, n, false))?;
                }
            }
        }
        out.flush()?;
        drop(out);
        if over(a.exit, &counts) {
            return Ok(report_failures(&jobs));
        }
        last = counts;
        std::thread::sleep(a.delay);
    }
}

/// The exit status: 0 if no watched job failed, was removed or is held; else 1, each such
/// one named.
fn report_failures(jobs: &[JobInfo]) -> i32 {
    let mut code = 0;
    for j in jobs {
        let id = format!("{}.{}", j.cluster, j.proc);
        let why = match (j.state, j.exit_code, j.signal) {
            (State::Completed, Some(0), _) => continue,
            (State::Queued | State::Starting | State::Running | State::Suspended, ..) => continue,
            (State::Held, ..) => format!(
                "is held: {}",
                j.hold_reason.as_deref().unwrap_or("no reason given")
            ),
            (State::Removed, ..) => "was removed".to_string(),
            (_, Some(c), _) => format!("failed with exit code {c}"),
            (_, None, Some(s)) => format!("was killed by signal {s}"),
            _ => format!(
                "failed: {}",
                j.reason.as_deref().unwrap_or("no reason given")
            ),
        };
        eprintln!("jobcell: job {id} (id {}) {why}", j.id);
        code = 1;
    }
    code
}

/// `12  [####====----]  3 done, 1 run, 1 idle  (5 jobs)`, coloured on a terminal.
fn line(cluster: u64, n: &Counts, color: bool) -> String {
    const WIDTH: u64 = 30;
    let total = n.total().max(1);
    let parts = [
        (n.done, '#', "32"),
        (n.failed, 'x', "31"),
        (n.held, '!', "33"),
        (n.run, '=', "36"),
        (n.idle, '-', "2"),
    ];
    let mut bar = String::new();
    let mut used = 0;
    for (k, (count, ch, sgr)) in parts.iter().enumerate() {
        // The last part takes what rounding left, so the bar is always WIDTH wide.
        let cells = if k + 1 == parts.len() {
            WIDTH - used
        } else {
            (count * WIDTH).div_ceil(total).min(WIDTH - used)
        };
        used += cells;
        let seg: String = std::iter::repeat_n(*ch, cells as usize).collect();
        if color && cells > 0 {
            bar += &format!("\x1b[{sgr}m{seg}\x1b[0m");
        } else {
            bar += &seg;
        }
    }
    let mut what = vec![format!("{} done", n.done)];
    for (count, name) in [
        (n.failed, "failed"),
        (n.run, "run"),
        (n.idle, "idle"),
        (n.held, "held"),
    ] {
        if count > 0 {
            what.push(format!("{count} {name}"));
        }
    }
    format!(
        "{cluster:<8} [{bar}]  {}  ({} job{})",
        what.join(", "),
        n.total(),
        if n.total() == 1 { "" } else { "s" }
    )
}

/// The watched clusters (and jobs) that the arguments name.
fn resolve(client: &Client, what: &[String]) -> anyhow::Result<Watched> {
    let queue = client.queue()?;
    let mut history: Option<Vec<JobInfo>> = None;
    let mut watched = Watched::new();
    let mut names = BTreeMap::new();
    for w in what {
        if !w.starts_with(|c: char| c.is_ascii_digit()) {
            let clusters: BTreeSet<u64> = queue
                .iter()
                .filter(|j| {
                    *names
                        .entry(j.owner)
                        .or_insert_with(|| crate::cmd_image::user_name(j.owner))
                        == *w
                })
                .map(|j| j.cluster)
                .collect();
            anyhow::ensure!(!clusters.is_empty(), "'{w}' has no jobs in the queue");
            for c in clusters {
                watched.insert(c, None);
            }
            continue;
        }
        let bad =
            || anyhow::anyhow!("'{w}' is not a job id, CLUSTER.PROC, CLUSTER. or an owner's name");
        let (cluster, proc) = match w.split_once('.') {
            None => (None, w.parse::<u64>().map_err(|_| bad())?),
            Some((c, "")) => {
                let c: u64 = c.parse().map_err(|_| bad())?;
                let known = queue.iter().any(|j| j.cluster == c)
                    || finished(client, &mut history)?
                        .iter()
                        .any(|j| j.cluster == c);
                anyhow::ensure!(known, "no job {w}");
                watched.insert(c, None);
                continue;
            }
            Some((c, p)) => (
                Some(c.parse::<u64>().map_err(|_| bad())?),
                p.parse::<u64>().map_err(|_| bad())?,
            ),
        };
        // An id, or CLUSTER.PROC: that one job.
        let matches = |j: &JobInfo| match cluster {
            None => j.id == proc,
            Some(c) => j.cluster == c && j.proc == proc,
        };
        let job = match queue.iter().find(|j| matches(j)) {
            Some(j) => j.clone(),
            None => finished(client, &mut history)?
                .iter()
                .find(|j| matches(j))
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no job {w}"))?,
        };
        if let Some(ids) = watched
            .entry(job.cluster)
            .or_insert_with(|| Some(BTreeSet::new()))
        {
            ids.insert(job.id);
        }
    }
    Ok(watched)
}

fn finished<'a>(
    client: &Client,
    history: &'a mut Option<Vec<JobInfo>>,
) -> anyhow::Result<&'a Vec<JobInfo>> {
    if history.is_none() {
        *history = Some(client.history(100_000)?);
    }
    Ok(history.as_ref().expect("just set"))
}

/// The watched jobs now: unfinished ones from the queue, ended ones from the history.
fn watched_jobs(client: &Client, watched: &Watched) -> anyhow::Result<Vec<JobInfo>> {
    let selects = |j: &JobInfo| {
        watched
            .get(&j.cluster)
            .is_some_and(|ids| ids.as_ref().is_none_or(|s| s.contains(&j.id)))
    };
    let mut jobs: Vec<JobInfo> = client.queue()?.into_iter().filter(|j| selects(j)).collect();
    // The finished jobs of the watched clusters only (the daemon selects them by cluster).
    let filter = JobFilter {
        constraint: None,
        owners: Vec::new(),
        clusters: watched.keys().copied().collect(),
    };
    let queued: BTreeSet<u64> = jobs.iter().map(|j| j.id).collect();
    jobs.extend(
        client
            .history_matching(100_000, &filter)?
            .into_iter()
            .filter(|j| selects(j) && !queued.contains(&j.id)),
    );
    jobs.sort_by_key(|j| j.id);
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_is_always_its_full_width_and_names_every_nonzero_count() {
        let n = Counts {
            done: 3,
            failed: 0,
            run: 1,
            idle: 1,
            held: 0,
        };
        let l = line(7, &n, false);
        let bar = l.split('[').nth(1).unwrap().split(']').next().unwrap();
        assert_eq!(bar.chars().count(), 30, "{l}");
        assert!(l.contains("3 done, 1 run, 1 idle  (5 jobs)"), "{l}");
        assert!(!n.settled());
        let all = Counts {
            done: 5,
            ..Counts::default()
        };
        assert!(all.settled());
        assert!(line(7, &all, false).contains(&"#".repeat(30)));
    }

    #[test]
    fn exit_conditions_stop_at_the_first_state_they_name() {
        let c = |n: Counts| BTreeMap::from([(1, n)]);
        let held = c(Counts {
            done: 1,
            held: 1,
            ..Counts::default()
        });
        assert!(over(None, &held));
        assert!(!over(Some(ExitWhen::AllDone), &held));
        assert!(over(Some(ExitWhen::AnyHeld), &held));
        let running = c(Counts {
            done: 1,
            run: 1,
            ..Counts::default()
        });
        assert!(!over(None, &running));
        assert!(over(Some(ExitWhen::AnyDone), &running));
        assert!(!over(Some(ExitWhen::AnyHeld), &running));
        assert!(parse_exit("any,idle").unwrap_err().contains("'any,idle'"));
    }
}
