//! `jobcell top`: a live view of the node and its running jobs (`GET /v1/top` every few
//! seconds; CPU% and IO rates are the change between two frames). Drawn with plain ANSI
//! escapes and termios: this binary is also the launcher, and a TUI library's static tables
//! would be relocated at every `jobcell run`.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use clap::Args;
use jobcell_api::types::{State, TopFrame, TopJob};
use jobcell_api::Client;

use crate::cmd_client::fmt_secs;
use crate::socket::SocketArg;

#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub sock: SocketArg,
    /// Seconds between refreshes.
    #[arg(short = 'd', long = "delay", value_name = "SECS", default_value = "2", value_parser = parse_delay)]
    pub delay: Duration,
    /// Print one plain-text frame (no escape codes) and exit.
    #[arg(long, conflicts_with = "json")]
    pub once: bool,
    /// Print one frame as JSON (`GET /v1/top`) and exit.
    #[arg(long)]
    pub json: bool,
}

/// A refresh delay in seconds (fractions allowed, at least 0.1), as top's and watch's `-d`.
pub(crate) fn parse_delay(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.1)
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("'{s}' is not a number of seconds (at least 0.1)"))
}

/// What a `--once` frame waits between its two samples, so CPU% and IO rates have a base.
const ONCE_SAMPLE_GAP: Duration = Duration::from_millis(500);

pub fn top(a: TopArgs) -> anyhow::Result<i32> {
    let client = a.sock.client()?;
    if a.json {
        let frame = client.top()?;
        println!("{}", serde_json::to_string_pretty(&frame)?);
        return Ok(0);
    }
    if a.once {
        let first = client.top()?;
        std::thread::sleep(ONCE_SAMPLE_GAP);
        let frame = client.top()?;
        let view = View::default();
        let rows = rows(&frame, Some(&first), &view);
        for line in render(&frame, &rows, &view, None, usize::MAX, false) {
            println!("{}", line.trim_end());
        }
        return Ok(0);
    }
    // SAFETY: isatty takes any integer.
    if unsafe { libc::isatty(0) } != 1 || unsafe { libc::isatty(1) } != 1 {
        anyhow::bail!("top: not a terminal (use --once or --json in scripts)");
    }
    interactive(&client, a.delay)
}

/// Sort columns, cycled with s / S.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum SortBy {
    #[default]
    Id,
    Owner,
    Cpu,
    Mem,
    RunTime,
}

impl SortBy {
    const ALL: [SortBy; 5] = [
        SortBy::Id,
        SortBy::Owner,
        SortBy::Cpu,
        SortBy::Mem,
        SortBy::RunTime,
    ];

    fn step(self, forward: bool) -> SortBy {
        let i = SortBy::ALL.iter().position(|s| *s == self).unwrap_or(0);
        let n = SortBy::ALL.len();
        SortBy::ALL[if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        }]
    }

    fn name(self) -> &'static str {
        match self {
            SortBy::Id => "ID",
            SortBy::Owner => "OWNER",
            SortBy::Cpu => "CPU%",
            SortBy::Mem => "MEM",
            SortBy::RunTime => "RUN_TIME",
        }
    }
}

/// What the user chose to see.
#[derive(Debug, Default)]
struct View {
    sort: SortBy,
    owner: Option<String>,
    text: Option<String>,
}

/// One job's row: the frame's figures and the rates against the previous frame.
struct Row<'a> {
    job: &'a TopJob,
    cpu_percent: Option<f64>,
    read_rate: Option<f64>,
    write_rate: Option<f64>,
}

impl Row<'_> {
    fn id(&self) -> String {
        format!("{}.{}", self.job.cluster, self.job.proc)
    }

    fn command(&self) -> String {
        self.job.command.join(" ")
    }
}

fn rate(now: Option<u64>, before: Option<u64>, dt: f64) -> Option<f64> {
    Some(now?.saturating_sub(before?) as f64 / dt)
}

/// The frame's jobs the view selects, with rates against `prev`, sorted.
fn rows<'a>(frame: &'a TopFrame, prev: Option<&TopFrame>, view: &View) -> Vec<Row<'a>> {
    let before: HashMap<u64, &TopJob> = prev
        .map(|p| p.jobs.iter().map(|j| (j.id, j)).collect())
        .unwrap_or_default();
    let dt = prev.map(|p| frame.time - p.time).filter(|d| *d > 0.0);
    let mut out: Vec<Row> = frame
        .jobs
        .iter()
        .map(|job| {
            let b = before.get(&job.id);
            let (cpu_percent, read_rate, write_rate) = match (b, dt) {
                (Some(b), Some(dt)) => (
                    rate(job.cpu_us, b.cpu_us, dt).map(|us| us / 1e4),
                    rate(job.io_read_bytes, b.io_read_bytes, dt),
                    rate(job.io_write_bytes, b.io_write_bytes, dt),
                ),
                _ => (None, None, None),
            };
            Row {
                job,
                cpu_percent,
                read_rate,
                write_rate,
            }
        })
        .filter(|r| view.owner.as_ref().is_none_or(|o| r.job.owner_name == *o))
        .filter(|r| {
            view.text.as_ref().is_none_or(|t| {
                r.command().contains(t.as_str())
                    || r.job.owner_name.contains(t.as_str())
                    || r.id().contains(t.as_str())
            })
        })
        .collect();
    let key = |r: &Row| -> f64 {
        match view.sort {
            SortBy::Cpu => r.cpu_percent.unwrap_or(0.0),
            SortBy::Mem => r.job.memory_current.unwrap_or(0) as f64,
            SortBy::RunTime => r.job.run_time.unwrap_or(0.0),
            SortBy::Id | SortBy::Owner => 0.0,
        }
    };
    match view.sort {
        SortBy::Id => out.sort_by_key(|r| r.job.id),
        SortBy::Owner => {
            out.sort_by(|a, b| (&a.job.owner_name, a.job.id).cmp(&(&b.job.owner_name, b.job.id)))
        }
        // Biggest first, as top does.
        _ => out.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.job.id.cmp(&b.job.id))),
    }
    out
}

/// `1536` -> `1.5K`.
fn human(bytes: f64) -> String {
    let units = ["B", "K", "M", "G", "T"];
    let mut v = bytes;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v >= 100.0 {
        format!("{v:.0}{}", units[u])
    } else {
        format!("{v:.1}{}", units[u])
    }
}

/// `[#####.....]` filled to `part / whole`.
fn bar(part: f64, whole: f64, width: usize) -> String {
    let filled = if whole > 0.0 {
        ((part / whole).clamp(0.0, 1.0) * width as f64).round() as usize
    } else {
        0
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// The frame as lines of text: the header, then one row per job (`selected` marked when
/// `color`, which also allows escape codes), at most `height` lines.
fn render(
    frame: &TopFrame,
    rows: &[Row],
    view: &View,
    selected: Option<u64>,
    height: usize,
    color: bool,
) -> Vec<String> {
    let n = &frame.node;
    // Cores in use: the sum of the shown jobs' CPU%.
    let cpu_used = rows
        .iter()
        .filter_map(|r| r.cpu_percent)
        .fold(0.0, |a, b| a + b)
        / 100.0;
    let mut lines = vec![
        format!(
            "jobcell top   load {:.2}   sort {}{}{}",
            n.load_1m,
            view.sort.name(),
            view.owner
                .as_ref()
                .map(|o| format!("   owner {o}"))
                .unwrap_or_default(),
            view.text
                .as_ref()
                .map(|t| format!("   filter '{t}'"))
                .unwrap_or_default(),
        ),
        format!(
            "CPU  {} {:.1} used  {:.1} allocated  of {:.1} cores",
            bar(cpu_used, n.cpus_total, 24),
            cpu_used,
            n.cpus_allocated,
            n.cpus_total
        ),
        format!(
            "MEM  {} {} used  {} allocated  of {}",
            bar(n.memory_used.unwrap_or(0) as f64, n.memory_total as f64, 24),
            n.memory_used
                .map(|m| human(m as f64))
                .unwrap_or_else(|| "-".into()),
            human(n.memory_allocated as f64),
            human(n.memory_total as f64)
        ),
        match (n.disk_used, n.disk_total) {
            (Some(u), Some(t)) => format!(
                "DISK {} {} used  {} allocated  of {}",
                bar(u as f64, t as f64, 24),
                human(u as f64),
                human(n.disk_allocated as f64),
                human(t as f64)
            ),
            _ => format!(
                "DISK {} {} allocated",
                bar(0.0, 0.0, 24),
                human(n.disk_allocated as f64)
            ),
        },
        format!("JOBS {}", state_counts(frame)),
        String::new(),
        format!(
            "{:<11} {:<14} {:<2} {:>5} {:<19} {:>5} {:>7} {:>7} {:>11}  {}",
            "ID", "OWNER", "ST", "CPU%", "MEM", "PSI", "READ/s", "WRITE/s", "RUN_TIME", "COMMAND"
        ),
    ];
    for r in rows {
        if lines.len() >= height {
            break;
        }
        let j = r.job;
        let mem = format!(
            "{} {:>6}",
            bar(j.memory_current.unwrap_or(0) as f64, j.memory as f64, 10),
            j.memory_current
                .map(|m| human(m as f64))
                .unwrap_or_else(|| "-".into())
        );
        let opt =
            |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "-".into());
        let line = format!(
            "{:<11} {:<14} {:<2} {:>5} {:<19} {:>5} {:>7} {:>7} {:>11}  {}",
            r.id(),
            j.owner_name,
            if j.state == State::Suspended {
                "S"
            } else {
                "R"
            },
            opt(r.cpu_percent, &|v| format!("{v:.0}")),
            mem,
            opt(j.memory_pressure, &|v| format!("{v:.1}")),
            opt(r.read_rate, &|v| human(v)),
            opt(r.write_rate, &|v| human(v)),
            opt(j.run_time, &fmt_secs),
            r.command()
        );
        if color && selected == Some(j.id) {
            lines.push(format!("\x1b[7m{line}\x1b[0m"));
        } else {
            lines.push(line);
        }
    }
    if rows.is_empty() && lines.len() < height {
        lines.push("(no running jobs)".into());
    }
    lines
}

fn state_counts(frame: &TopFrame) -> String {
    let get = |s: &str| frame.jobs_by_state.get(s).copied().unwrap_or(0);
    format!(
        "{} running, {} suspended, {} queued, {} held",
        get("running") + get("starting"),
        get("suspended"),
        get("queued"),
        get("held")
    )
}

/// The terminal in raw mode on the alternate screen, restored when dropped (every return
/// path, errors included), at a panic (the hook), and at SIGTERM, SIGINT or SIGHUP (taken
/// through a signalfd instead of killing the process).
struct Terminal {
    saved: libc::termios,
    signals: OwnedFd,
    old_mask: libc::sigset_t,
}

// The normal screen first: leaving the alternate one restores the cursor state saved with it.
const LEAVE: &str = "\x1b[0m\x1b[?1049l\x1b[?25h";

impl Terminal {
    fn enter() -> anyhow::Result<Terminal> {
        // SAFETY: termios is plain data, valid all zero; tcgetattr fills it for fd 0.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a writable termios.
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            anyhow::bail!(
                "top: reading the terminal's mode: {}",
                std::io::Error::last_os_error()
            );
        }
        let (signals, old_mask) = signal_fd()?;
        let mut raw = saved;
        // SAFETY: cfmakeraw edits the termios in place.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Keep output's newline translation: lines are written with \n.
        raw.c_oflag |= libc::OPOST;
        // SAFETY: fd 0 and a valid termios.
        if unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, &raw) } != 0 {
            anyhow::bail!(
                "top: setting the terminal's mode: {}",
                std::io::Error::last_os_error()
            );
        }
        let t = Terminal {
            saved,
            signals,
            old_mask,
        };
        let saved_for_panic = saved;
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore(&saved_for_panic);
            default_hook(info);
        }));
        print!("\x1b[?1049h\x1b[?25l\x1b[2J");
        std::io::stdout().flush()?;
        Ok(t)
    }
}

fn restore(saved: &libc::termios) {
    // SAFETY: fd 0 and a valid termios (the one read before raw mode).
    unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, saved) };
    let mut out = std::io::stdout();
    let _ = out.write_all(LEAVE.as_bytes());
    let _ = out.flush();
}

impl Drop for Terminal {
    fn drop(&mut self) {
        restore(&self.saved);
        // SAFETY: restores the signal mask read at enter().
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}

/// Ending signals and SIGWINCH blocked and readable from a signalfd; and the mask before.
fn signal_fd() -> anyhow::Result<(OwnedFd, libc::sigset_t)> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise and edit it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sigset_t pointers and signal numbers; the process has one thread here.
    let fd = unsafe {
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGWINCH] {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    if fd < 0 {
        anyhow::bail!("top: signalfd: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, old))
}

/// The terminal's rows and columns.
fn term_size() -> (usize, usize) {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: fd 1 and a writable winsize.
    if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
        (ws.ws_row as usize, ws.ws_col as usize)
    } else {
        (24, 80)
    }
}

/// What the keyboard is doing: plain keys, or a line being typed after a prompt.
enum Mode {
    Normal,
    Typing { owner: bool, text: String },
    ConfirmRemove(u64),
}

/// What happened while waiting for the next refresh.
enum Input {
    Key(u8),
    Up,
    Down,
    Resize,
    Quit(i32),
    Timeout,
}

fn wait_input(term: &Terminal, until: Instant, buf: &mut Vec<u8>) -> anyhow::Result<Input> {
    loop {
        if let Some(i) = take_key(buf) {
            return Ok(i);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Input::Timeout);
        }
        let mut fds = [
            libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: term.signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, left.as_millis().max(1) as i32) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            anyhow::bail!("top: poll: {e}");
        }
        if fds[1].revents != 0 {
            // SAFETY: signalfd_siginfo is plain data; read fills it from the signalfd.
            let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            // SAFETY: reads at most size_of(si) bytes into si.
            let r = unsafe {
                libc::read(
                    term.signals.as_raw_fd(),
                    (&mut si as *mut libc::signalfd_siginfo).cast(),
                    std::mem::size_of::<libc::signalfd_siginfo>(),
                )
            };
            if r > 0 {
                let sig = si.ssi_signo as i32;
                return Ok(if sig == libc::SIGWINCH {
                    Input::Resize
                } else {
                    Input::Quit(128 + sig)
                });
            }
        }
        if fds[0].revents != 0 {
            let mut b = [0u8; 64];
            // SAFETY: reads at most b.len() bytes into b.
            let r = unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) };
            if r == 0 {
                // The terminal is gone.
                return Ok(Input::Quit(0));
            }
            if r > 0 {
                buf.extend_from_slice(&b[..r as usize]);
            }
        }
    }
}

fn take_key(buf: &mut Vec<u8>) -> Option<Input> {
    if buf.is_empty() {
        return None;
    }
    if buf.starts_with(b"\x1b[A") || buf.starts_with(b"\x1bOA") {
        buf.drain(..3);
        return Some(Input::Up);
    }
    if buf.starts_with(b"\x1b[B") || buf.starts_with(b"\x1bOB") {
        buf.drain(..3);
        return Some(Input::Down);
    }
    if buf[0] == 0x1b && buf.len() >= 3 && buf[1] == b'[' {
        // Another escape sequence (a function key): ignore it whole.
        let end = buf[2..]
            .iter()
            .position(|c| c.is_ascii_alphabetic() || *c == b'~')
            .map(|p| p + 3)
            .unwrap_or(buf.len());
        buf.drain(..end);
        return take_key(buf);
    }
    Some(Input::Key(buf.remove(0)))
}

fn interactive(client: &Client, delay: Duration) -> anyhow::Result<i32> {
    let term = Terminal::enter()?;
    let mut view = View::default();
    let mut mode = Mode::Normal;
    let mut selected: Option<u64> = None;
    let mut message =
        String::from("s/S sort  o owner  / filter  h hold  r rm  z suspend/continue  q quit");
    let mut prev: Option<TopFrame> = None;
    let mut frame = client.top()?;
    let mut next = Instant::now() + delay;
    let mut keys = Vec::new();
    loop {
        let shown = rows(&frame, prev.as_ref(), &view);
        if selected.is_none_or(|s| !shown.iter().any(|r| r.job.id == s)) {
            selected = shown.first().map(|r| r.job.id);
        }
        let (height, width) = term_size();
        let prompt = match &mode {
            Mode::Normal => message.clone(),
            Mode::Typing { owner: true, text } => format!("owner (empty: everyone): {text}"),
            Mode::Typing { owner: false, text } => format!("filter (empty: none): {text}"),
            Mode::ConfirmRemove(id) => format!("remove job {}? (y/n)", label(&frame, *id)),
        };
        draw(
            &render(
                &frame,
                &shown,
                &view,
                selected,
                height.saturating_sub(1),
                true,
            ),
            &prompt,
            height,
            width,
        )?;
        let ids: Vec<u64> = shown.iter().map(|r| r.job.id).collect();
        drop(shown);
        // An action's result shows at once, not at the next refresh.
        let mut refresh = false;
        match wait_input(&term, next, &mut keys)? {
            Input::Timeout => {
                let f = client.top()?;
                prev = Some(std::mem::replace(&mut frame, f));
                next = Instant::now() + delay;
            }
            Input::Resize => {}
            Input::Quit(code) => return Ok(code),
            Input::Up | Input::Down if !matches!(mode, Mode::Normal) => {}
            Input::Up => selected = step(&ids, selected, false),
            Input::Down => selected = step(&ids, selected, true),
            Input::Key(k) => match &mut mode {
                Mode::Typing { owner, text } => match k {
                    b'\r' | b'\n' => {
                        let v = (!text.is_empty()).then(|| text.clone());
                        if *owner {
                            view.owner = v;
                        } else {
                            view.text = v;
                        }
                        mode = Mode::Normal;
                    }
                    0x1b => mode = Mode::Normal,
                    0x7f | 0x08 => {
                        text.pop();
                    }
                    k if (0x20..0x7f).contains(&k) => text.push(k as char),
                    _ => {}
                },
                Mode::ConfirmRemove(id) => {
                    let id = *id;
                    mode = Mode::Normal;
                    message = if k == b'y' || k == b'Y' {
                        refresh = true;
                        outcome(client.remove(id), "removed", &frame, id)
                    } else {
                        "not removed".into()
                    };
                }
                Mode::Normal => match k {
                    b'q' | 3 => return Ok(0),
                    b's' => view.sort = view.sort.step(true),
                    b'S' => view.sort = view.sort.step(false),
                    b'j' => selected = step(&ids, selected, true),
                    b'k' => selected = step(&ids, selected, false),
                    b'o' => {
                        mode = Mode::Typing {
                            owner: true,
                            text: String::new(),
                        }
                    }
                    b'/' => {
                        mode = Mode::Typing {
                            owner: false,
                            text: String::new(),
                        }
                    }
                    b'h' | b'r' | b'z' => {
                        let Some(id) = selected else {
                            message = "no job selected".into();
                            continue;
                        };
                        match k {
                            b'h' => message = outcome(client.hold(id, None), "held", &frame, id),
                            b'r' => mode = Mode::ConfirmRemove(id),
                            _ => {
                                let suspended = frame
                                    .jobs
                                    .iter()
                                    .any(|j| j.id == id && j.state == State::Suspended);
                                message = if suspended {
                                    outcome(client.continue_job(id), "continued", &frame, id)
                                } else {
                                    outcome(client.suspend(id), "suspended", &frame, id)
                                };
                            }
                        }
                        refresh = !matches!(mode, Mode::ConfirmRemove(_));
                    }
                    _ => {}
                },
            },
        }
        if refresh {
            let f = client.top()?;
            prev = Some(std::mem::replace(&mut frame, f));
        }
    }
}

/// `12.0` for a job of the frame, else its id.
fn label(frame: &TopFrame, id: u64) -> String {
    frame
        .jobs
        .iter()
        .find(|j| j.id == id)
        .map(|j| format!("{}.{}", j.cluster, j.proc))
        .unwrap_or_else(|| id.to_string())
}

fn outcome<T>(
    r: Result<T, jobcell_api::ClientError>,
    done: &str,
    frame: &TopFrame,
    id: u64,
) -> String {
    match r {
        Ok(_) => format!("job {} {done}", label(frame, id)),
        Err(e) => format!("job {}: {e}", label(frame, id)),
    }
}

fn step(ids: &[u64], selected: Option<u64>, down: bool) -> Option<u64> {
    let i = selected.and_then(|s| ids.iter().position(|x| *x == s));
    match (i, down) {
        (None, _) => ids.first().copied(),
        (Some(i), true) => ids.get(i + 1).or(ids.get(i)).copied(),
        (Some(i), false) => ids.get(i.saturating_sub(1)).copied(),
    }
}

/// One screen: every line cut to the width (escape codes of the selected row kept), the
/// prompt on the last line.
fn draw(lines: &[String], prompt: &str, height: usize, width: usize) -> std::io::Result<()> {
    let mut s = String::from("\x1b[H");
    for line in lines.iter().take(height.saturating_sub(1)) {
        s += &cut(line, width);
        s += "\x1b[0m\x1b[K\r\n";
    }
    s += "\x1b[J";
    s += &format!("\x1b[{height};1H{}\x1b[K", cut(prompt, width));
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()
}

/// `line` cut to `width` visible characters (escape sequences take no room).
fn cut(line: &str, width: usize) -> String {
    let mut out = String::new();
    let mut visible = 0;
    let mut in_escape = false;
    for c in line.chars() {
        if in_escape {
            out.push(c);
            in_escape = !c.is_ascii_alphabetic();
        } else if c == '\x1b' {
            out.push(c);
            in_escape = true;
        } else if visible < width {
            out.push(c);
            visible += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobcell_api::types::TopNode;

    fn job(id: u64, owner: &str, cpu_us: u64, mem: u64) -> TopJob {
        TopJob {
            id,
            cluster: id,
            proc: 0,
            owner: 1000,
            owner_name: owner.into(),
            state: State::Running,
            cpus: 1.0,
            memory: 1 << 30,
            command: vec!["sleep".into(), "60".into()],
            started_at: Some(0.0),
            run_time: Some(61.0),
            cpu_us: Some(cpu_us),
            memory_current: Some(mem),
            memory_pressure: None,
            io_read_bytes: Some(0),
            io_write_bytes: Some(0),
        }
    }

    fn frame(time: f64, jobs: Vec<TopJob>) -> TopFrame {
        TopFrame {
            time,
            node: TopNode {
                cpus_total: 2.0,
                cpus_allocated: 2.0,
                memory_total: 4 << 30,
                memory_allocated: 2 << 30,
                memory_used: Some(1 << 30),
                disk_total: None,
                disk_used: None,
                disk_allocated: 0,
                load_1m: 0.5,
            },
            jobs_by_state: Default::default(),
            jobs,
        }
    }

    #[test]
    fn cpu_percent_is_the_cgroup_time_between_frames_over_wall_time() {
        let a = frame(10.0, vec![job(1, "alice", 0, 0), job(2, "bob", 0, 0)]);
        let b = frame(
            12.0,
            vec![job(1, "alice", 2_000_000, 0), job(2, "bob", 500_000, 0)],
        );
        let view = View {
            sort: SortBy::Cpu,
            ..View::default()
        };
        let r = rows(&b, Some(&a), &view);
        assert_eq!(r[0].job.id, 1);
        assert_eq!(r[0].cpu_percent, Some(100.0));
        assert_eq!(r[1].cpu_percent, Some(25.0));
        let text = render(&b, &r, &view, None, 100, false).join("\n");
        assert!(text.contains("1.2 used"), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
    }

    #[test]
    fn owner_and_text_filters_select_rows() {
        let f = frame(1.0, vec![job(1, "alice", 0, 0), job(2, "bob", 0, 0)]);
        let view = View {
            owner: Some("bob".into()),
            ..View::default()
        };
        let r = rows(&f, None, &view);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].job.id, 2);
        let view = View {
            text: Some("1.0".into()),
            ..View::default()
        };
        assert_eq!(rows(&f, None, &view).len(), 1);
    }

    #[test]
    fn cut_keeps_escapes_and_counts_only_visible_characters() {
        assert_eq!(cut("\x1b[7mabcdef\x1b[0m", 3), "\x1b[7mabc\x1b[0m");
        assert_eq!(human(1536.0), "1.5K");
        assert_eq!(fmt_secs(90061.0), "1+01:01:01");
        assert_eq!(bar(1.0, 4.0, 4), "[#...]");
    }
}
