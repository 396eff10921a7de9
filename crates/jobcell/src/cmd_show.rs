//! `jobcell show ID`: one job's summary, and its CPU and memory over its run drawn in the
//! terminal (block characters, eight levels per row; ~100 lines here rather than a plotting
//! crate in the binary every `jobcell run` starts).

use std::io::Write;

use clap::Args;
use jobcell_api::types::{JobInfo, UsagePoint, UsageSeries};
use jobcell_spec::format_size;

use crate::socket::SocketArg;

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub sock: SocketArg,
    pub id: u64,
    /// Print the usage series as JSON (`GET /v1/jobs/{id}/usage`) instead.
    #[arg(long)]
    pub json: bool,
}

/// Rows of each plot.
const PLOT_ROWS: usize = 8;
/// Columns of the y-axis labels and their tick (`" 1.50 ┤"`).
const AXIS_COLS: usize = 11;
const BLOCKS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub fn show(a: ShowArgs) -> anyhow::Result<i32> {
    let client = a.sock.client()?;
    let series = client.usage(a.id)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&series)?)?;
        return Ok(0);
    }
    let job = client.job(a.id)?;
    let tty = is_tty();
    let width = if tty { terminal_width() } else { 80 };
    let width = width.clamp(40, 240);
    for line in summary(&job, &series, width) {
        writeln!(out, "{line}")?;
    }
    for line in plots(&job, &series, width, tty) {
        writeln!(out, "{line}")?;
    }
    Ok(0)
}

/// The summary lines, none wider than `width` but a hold reason's.
fn summary(j: &JobInfo, s: &UsageSeries, width: usize) -> Vec<String> {
    let mut v = vec![format!("job {}  {}", j.id, j.state.as_str())];
    v.push(format!(
        "owner      {} (uid {}), runs as {}",
        crate::cmd_image::user_name(j.owner),
        j.owner,
        j.user
    ));
    v.push(format!(
        "command    {}",
        command_line(&j.command, width.saturating_sub(11))
    ));
    v.push(format!(
        "requests   {} cpus, {} memory",
        j.cpus,
        format_size(j.memory)
    ));
    v.push(format!(
        "submitted  {} UTC",
        crate::cmd_image::utc(j.submitted_at as i64)
    ));
    if let Some(t) = j.started_at {
        v.push(format!(
            "started    {} UTC (attempt {})",
            crate::cmd_image::utc(t as i64),
            j.attempt
        ));
    }
    if let Some(t) = j.ended_at {
        let ran = j.started_at.map(|s| format!(", ran {:.1}s", t - s));
        v.push(format!(
            "ended      {} UTC{}",
            crate::cmd_image::utc(t as i64),
            ran.unwrap_or_default()
        ));
    }
    match (j.exit_code, j.signal) {
        (Some(c), _) => v.push(format!("exit       code {c}")),
        (None, Some(sig)) => v.push(format!("exit       signal {sig}")),
        _ => {}
    }
    if let Some(r) = &j.hold_reason {
        v.push(format!("held       {r}"));
    }
    if let Some(r) = j
        .reason
        .as_ref()
        .filter(|r| Some(*r) != j.hold_reason.as_ref())
    {
        v.push(format!("reason     {r}"));
    }
    v.push(match s.points.last() {
        Some(last) => format!(
            "usage      {} samples, every {}s; peak memory {}; CPU {:.1} core-seconds",
            s.points.len(),
            s.interval,
            format_size(last.mem_peak),
            last.cpu_us as f64 / 1e6
        ),
        None => "usage      no samples (not run yet, or the node samples no usage)".into(),
    });
    v
}

/// The argv on one line: an argument with spaces or control characters quoted and escaped
/// (a `-c` script's newlines as `\n`), the whole cut at `max` characters.
fn command_line(argv: &[String], max: usize) -> String {
    let line = argv
        .iter()
        .map(|a| {
            if a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
                format!("{a:?}")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    if line.chars().count() > max {
        line.chars().take(max.saturating_sub(1)).collect::<String>() + "…"
    } else {
        line
    }
}

/// Both plots, or nothing without samples.
fn plots(j: &JobInfo, s: &UsageSeries, width: usize, colour: bool) -> Vec<String> {
    let (Some(first), Some(last)) = (s.points.first(), s.points.last()) else {
        return Vec::new();
    };
    let x0 = j.started_at.filter(|&t| t < first.t).unwrap_or(first.t);
    let x1 = last.t.max(x0 + 1e-3);
    let cols = width.saturating_sub(AXIS_COLS + 1).max(10);
    let cores = cpu_steps(s, x0);
    let cores_max = cores.iter().map(|c| c.2).fold(j.cpus, f64::max);
    let mut v = vec![String::new(), "CPU (cores used)".to_string()];
    v.extend(plot(
        &cores,
        (x0, x1),
        nice_ceiling(cores_max),
        None,
        cols,
        |y| format!("{y:.2}"),
        colour.then_some("32"),
    ));
    v.push(x_axis(x1 - x0, cols));
    // In MiB, so that the axis ends at a round number of them.
    const MIB: f64 = 1048576.0;
    let mem: Vec<(f64, f64, f64)> = steps(&s.points, x0, |p| p.mem as f64 / MIB);
    let peak = s.points.iter().map(|p| p.mem_peak).max().unwrap_or(0);
    let limit = j.memory as f64 / MIB;
    v.push(String::new());
    v.push(format!(
        "memory (peak {}, ─ request {})",
        format_size(peak),
        format_size(j.memory)
    ));
    v.extend(plot(
        &mem,
        (x0, x1),
        nice_ceiling((peak as f64 / MIB).max(limit)),
        (limit > 0.0).then_some(limit),
        cols,
        |y| {
            if y >= 10240.0 {
                format!("{:.1} GiB", y / 1024.0)
            } else {
                format!("{y:.0} MiB")
            }
        },
        colour.then_some("34"),
    ));
    v.push(x_axis(x1 - x0, cols));
    v
}

/// Each point's value held over the interval that ends at it: `(from, to, value)`.
fn steps(
    points: &[UsagePoint],
    x0: f64,
    value: impl Fn(&UsagePoint) -> f64,
) -> Vec<(f64, f64, f64)> {
    let mut from = x0;
    points
        .iter()
        .map(|p| {
            let s = (from, p.t, value(p));
            from = p.t;
            s
        })
        .collect()
}

/// Cores used in each interval: the CPU time's growth over the wall time.
fn cpu_steps(s: &UsageSeries, x0: f64) -> Vec<(f64, f64, f64)> {
    let (mut from, mut used) = (x0, 0u64);
    s.points
        .iter()
        .map(|p| {
            let dt = p.t - from;
            let cores = if dt > 0.0 {
                p.cpu_us.saturating_sub(used) as f64 / 1e6 / dt
            } else {
                0.0
            };
            let seg = (from, p.t, cores);
            (from, used) = (p.t, p.cpu_us);
            seg
        })
        .collect()
}

/// A round number at least `v` (and above 0): 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a
/// power of ten, so that a job just above its request still fills most of the plot.
fn nice_ceiling(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v * 0.999_999)
        .unwrap_or(10.0 * p)
}

/// One column per time slot, the highest value of the steps that touch it, drawn up from the
/// bottom in eighths of a row; `mark` is a dashed line at that value (the memory request).
fn plot(
    steps: &[(f64, f64, f64)],
    (x0, x1): (f64, f64),
    y_max: f64,
    mark: Option<f64>,
    cols: usize,
    label: impl Fn(f64) -> String,
    colour: Option<&str>,
) -> Vec<String> {
    let slot = (x1 - x0) / cols as f64;
    let heights: Vec<usize> = (0..cols)
        .map(|c| {
            let (a, b) = (x0 + c as f64 * slot, x0 + (c + 1) as f64 * slot);
            let v = steps
                .iter()
                .filter(|(from, to, _)| *to > a && *from < b)
                .map(|s| s.2)
                .fold(0.0, f64::max);
            ((v / y_max) * (PLOT_ROWS * 8) as f64).round() as usize
        })
        .collect();
    let mark_row = mark.map(|m| ((m / y_max) * PLOT_ROWS as f64).ceil() as usize);
    let mut rows = Vec::with_capacity(PLOT_ROWS);
    for r in (0..PLOT_ROWS).rev() {
        let axis = match r {
            _ if r == PLOT_ROWS - 1 => label(y_max),
            _ if Some(r + 1) == mark_row => label(mark.unwrap_or(0.0)),
            0 => label(0.0),
            _ => String::new(),
        };
        let tick = if axis.is_empty() { '│' } else { '┤' };
        let mut line = format!("{axis:>w$} {tick}", w = AXIS_COLS - 2);
        if let Some(c) = colour {
            line.push_str(&format!("\x1b[{c}m"));
        }
        for &h in &heights {
            let eighths = h.saturating_sub(r * 8).min(8);
            line.push(match eighths {
                0 if Some(r + 1) == mark_row => '─',
                e => BLOCKS[e],
            });
        }
        if colour.is_some() {
            line.push_str("\x1b[0m");
        }
        rows.push(line.trim_end().to_string());
    }
    rows
}

/// The time axis under a plot: `0s` at the start, the run's length at the end.
fn x_axis(span: f64, cols: usize) -> String {
    let end = if span >= 120.0 {
        format!("{:.1}m", span / 60.0)
    } else {
        format!("{span:.1}s")
    };
    let pad = " ".repeat(AXIS_COLS - 1);
    format!(
        "{pad}└{}\n{pad}0s{end:>w$}",
        "─".repeat(cols),
        w = cols.saturating_sub(1)
    )
}

fn is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { libc::isatty(1) == 1 }
}

fn terminal_width() -> usize {
    // SAFETY: winsize is plain data; TIOCGWINSZ writes at most one winsize into it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `ws` is alive and writable for the call.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: f64, cpu_s: f64, mem_mib: u64) -> UsagePoint {
        UsagePoint {
            t,
            cpu_us: (cpu_s * 1e6) as u64,
            mem: mem_mib << 20,
            mem_peak: mem_mib << 20,
            ..UsagePoint::default()
        }
    }

    fn job() -> JobInfo {
        serde_json::from_value(serde_json::json!({
            "id": 7, "owner": 1000, "user": "alice", "state": "completed", "priority": 0,
            "cpus": 1.0, "memory": 256u64 << 20, "command": ["python3", "grow.py"],
            "submitted_at": 1000.0, "started_at": 1000.0, "ended_at": 1010.0,
            "hold_reason": null, "reason": null, "attempt": 1, "exit_code": 0, "signal": null
        }))
        .unwrap()
    }

    /// Memory that grows 50 MiB a second for 4 s, one core busy throughout.
    fn growing() -> UsageSeries {
        UsageSeries {
            interval: 1.0,
            points: (1..=8)
                .map(|i| point(1000.0 + i as f64, i as f64, 50 * (i.min(4) as u64)))
                .collect(),
        }
    }

    #[test]
    fn the_plots_fit_80_columns_and_have_labels_axes_and_bars() {
        let lines = plots(&job(), &growing(), 80, false);
        let text = lines.join("\n");
        assert!(text.contains("CPU (cores used)"), "{text}");
        assert!(
            text.contains("memory (peak 200.0 MiB, ─ request 256.0 MiB)"),
            "{text}"
        );
        assert!(text.contains("0s") && text.contains("8.0s"), "{text}");
        for l in text.lines() {
            assert!(l.chars().count() <= 80, "too wide: {l:?}");
            assert!(!l.contains('\x1b'), "colour without a tty: {l:?}");
        }
        // CPU: one core of a 1-core axis is a full column in every row.
        let cpu: Vec<&str> = lines[2..2 + PLOT_ROWS].iter().map(|s| s.as_str()).collect();
        assert!(cpu[0].starts_with("     1.00 ┤█"), "{cpu:?}");
        assert!(cpu[PLOT_ROWS - 1].starts_with("     0.00 ┤█"), "{cpu:?}");
        // Memory: the first columns are low, the last full to 200 of a 500 MiB axis; the
        // request's row is dashed where the bars are below it.
        let mem: Vec<&str> = lines[5 + PLOT_ROWS..5 + 2 * PLOT_ROWS]
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert!(mem[0].starts_with("  300 MiB ┤"), "{mem:?}");
        assert!(mem.iter().any(|r| r.starts_with("  256 MiB ┤─")), "{mem:?}");
        let bottom = mem[PLOT_ROWS - 1];
        let bars: Vec<char> = bottom.chars().skip(AXIS_COLS).collect();
        assert_eq!(bars.len(), 80 - AXIS_COLS - 1, "{bottom:?}");
        // A row is 37.5 MiB: the first 50 MiB fill the bottom one.
        assert!(bars.iter().all(|&c| c == '█'), "{bottom:?}");
        let rising: Vec<usize> = (0..PLOT_ROWS)
            .map(|r| mem[r].chars().filter(|&c| c == '█').count())
            .collect();
        assert!(rising.windows(2).all(|w| w[0] <= w[1]), "{rising:?}");
    }

    #[test]
    fn colour_only_when_asked() {
        let text = plots(&job(), &growing(), 80, true).join("\n");
        assert!(
            text.contains("\x1b[32m") && text.contains("\x1b[0m"),
            "{text}"
        );
    }

    #[test]
    fn no_samples_no_plot_and_a_summary_that_says_so() {
        let empty = UsageSeries::default();
        assert!(plots(&job(), &empty, 80, false).is_empty());
        let s = summary(&job(), &empty, 80).join("\n");
        assert!(s.contains("no samples"), "{s}");
        assert!(
            s.contains("job 7  completed") && s.contains("exit       code 0"),
            "{s}"
        );
    }

    #[test]
    fn cores_come_from_cpu_time_deltas() {
        let s = UsageSeries {
            interval: 1.0,
            points: vec![point(1.0, 0.5, 0), point(2.0, 2.5, 0), point(4.0, 2.5, 0)],
        };
        let c: Vec<f64> = cpu_steps(&s, 0.0).iter().map(|x| x.2).collect();
        assert_eq!(c, [0.5, 2.0, 0.0]);
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(1.1), 1.2);
        assert_eq!(nice_ceiling(1.3), 1.5);
        assert_eq!(nice_ceiling(3.5), 4.0);
        assert_eq!(nice_ceiling(450.0), 500.0);
        assert_eq!(nice_ceiling(900.0), 1000.0);
    }

    #[test]
    fn a_command_is_one_line() {
        let argv = ["python3", "-c", "import os\nprint(1)", ""].map(String::from);
        assert_eq!(
            command_line(&argv, 80),
            "python3 -c \"import os\\nprint(1)\" \"\""
        );
        let long = vec!["x".repeat(300)];
        assert_eq!(command_line(&long, 69).chars().count(), 69);
    }
}
