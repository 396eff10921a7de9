//! A job's usage over time. Its supervisor samples the job's cgroup from the launcher's own
//! wait loop ([`Recorder`] is the launcher's `UsageSampler`) and appends each point to
//! `<job dir>/usage`; `GET /v1/jobs/{id}/usage` reads the file back ([`read`]).
//!
//! The file is one JSON line `{"interval":S}`, then one [`UsagePoint`] per line, oldest
//! first: a sample costs one append, and the file is as current as the last sample, for a
//! running job, after a daemon restart and in the history alike. It stays bounded: when a
//! long job's series would pass [`MAX_POINTS`], every other point is dropped, the interval
//! doubles, and the file is rewritten (tmp + rename) once.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jobcell_cgroup::JobCgroup;
use jobcell_sandbox::UsageSampler;
use serde::{Deserialize, Serialize};

use crate::jobdir;
use crate::sys;
use crate::types::{now, UsagePoint, UsageSeries};

/// Most points a series keeps (~150 KB of file).
pub const MAX_POINTS: usize = 1000;

/// `[usage] sample_interval` when unset, in seconds.
pub const DEFAULT_SAMPLE_INTERVAL: f64 = 15.0;

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: the first line is not {{\"interval\":SECONDS}}: {message}")]
    Header { path: PathBuf, message: String },
}

/// The file's first line.
#[derive(Serialize, Deserialize)]
struct Header {
    interval: f64,
}

/// Records one run's series: a [`UsageSampler`] for the launcher (single-threaded, hence the
/// `RefCell`).
pub struct Recorder {
    path: PathBuf,
    tick: Duration,
    state: RefCell<State>,
}

struct State {
    series: UsageSeries,
    /// Open for appending; None after a failed write (the next point rewrites the file).
    file: Option<File>,
    ticks: u64,
    /// Every how many ticks a point is kept: doubles with each thinning.
    stride: u64,
}

impl Recorder {
    /// Start a new run's series in job dir `dir` (an earlier attempt's series is replaced),
    /// sampling every `tick`.
    pub fn start(dir: &Path, tick: Duration) -> Result<Recorder, UsageError> {
        let path = jobdir::usage_path(dir);
        let series = UsageSeries {
            interval: tick.as_secs_f64(),
            points: Vec::new(),
        };
        let file = rewrite(&path, &series)?;
        Ok(Recorder {
            path,
            tick,
            state: RefCell::new(State {
                series,
                file: Some(file),
                ticks: 0,
                stride: 1,
            }),
        })
    }

    /// Keep one point: append it, or thin the series and rewrite the file when it is full.
    pub fn record(&self, p: UsagePoint) {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        st.series.points.push(p);
        if st.series.points.len() > MAX_POINTS {
            thin(&mut st.series);
            st.stride *= 2;
            st.file = None;
        }
        let appended = match st.file.as_mut() {
            Some(f) => {
                let mut line = serde_json::to_vec(st.series.points.last().expect("pushed"))
                    .unwrap_or_default();
                line.push(b'\n');
                f.write_all(&line).is_ok()
            }
            None => false,
        };
        if !appended {
            // Best effort (a full disk): the job runs on; the next point tries again.
            st.file = rewrite(&self.path, &st.series).ok();
        }
    }

    /// Count a tick; whether a point is due at it (every one until the series is first
    /// thinned, then every 2nd, 4th, ...; always the last). A tick with none reads nothing.
    pub fn due(&self, last: bool) -> bool {
        let mut st = self.state.borrow_mut();
        // Counted from 0, as the points kept by a thinning are: new ones fall in step.
        let due = last || st.ticks.is_multiple_of(st.stride);
        st.ticks += 1;
        due
    }

    /// The series as recorded so far.
    pub fn series(&self) -> UsageSeries {
        self.state.borrow().series.clone()
    }
}

impl UsageSampler for Recorder {
    fn interval(&self) -> Duration {
        self.tick
    }

    fn sample(&self, cgroup: &JobCgroup, last: bool) {
        if self.due(last) {
            if let Some(p) = point(cgroup) {
                self.record(p);
            }
        }
    }
}

/// One point from the cgroup's files (None if the cgroup cannot be read: it is going away).
pub fn point(cgroup: &JobCgroup) -> Option<UsagePoint> {
    let u = cgroup.stats().ok()?;
    let c = cgroup.current().ok()?;
    Some(UsagePoint {
        t: now(),
        cpu_us: u.cpu_user_us + u.cpu_system_us,
        mem: u.memory_current,
        mem_peak: u.memory_peak,
        swap: u.swap_peak.map(|_| c.swap),
        // cgroup v1 has no per-cgroup PSI: None there.
        psi_some: cgroup.memory_pressure().ok().map(|p| p.some.avg10),
        io_r: u.io_read_bytes,
        io_w: u.io_write_bytes,
        pids: c.pids,
    })
}

/// Halve the resolution: keep every other point, from the first (so, of an odd count, the
/// last too), and double the interval.
pub fn thin(series: &mut UsageSeries) {
    let mut i = 0;
    series.points.retain(|_| {
        i += 1;
        i % 2 == 1
    });
    series.interval *= 2.0;
}

/// Replace the file with `series` (tmp + rename) and open it for appending.
fn rewrite(path: &Path, series: &UsageSeries) -> Result<File, UsageError> {
    let io_err = |source| UsageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut data = serde_json::to_vec(&Header {
        interval: series.interval,
    })
    .unwrap_or_default();
    data.push(b'\n');
    for p in &series.points {
        data.extend(serde_json::to_vec(p).unwrap_or_default());
        data.push(b'\n');
    }
    sys::write_atomic(path, &data).map_err(io_err)?;
    std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err)
}

/// The series in `path`; None if the job has none (it never ran, or ran unsampled). A last
/// line cut short (its supervisor killed mid-write) is left out.
pub fn read(path: &Path) -> Result<Option<UsageSeries>, UsageError> {
    let text = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .and_then(io::read_to_string)
    {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(UsageError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut lines = text.lines();
    let header: Header =
        serde_json::from_str(lines.next().unwrap_or("")).map_err(|e| UsageError::Header {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(Some(UsageSeries {
        interval: header.interval,
        points: lines.filter_map(|l| serde_json::from_str(l).ok()).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: f64) -> UsagePoint {
        UsagePoint {
            t,
            cpu_us: t as u64 * 1000,
            ..UsagePoint::default()
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("jobcell-usage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        d
    }

    #[test]
    fn thinning_keeps_every_other_point_from_the_first_and_doubles_the_interval() {
        let mut s = UsageSeries {
            interval: 1.0,
            points: (0..7).map(|i| at(i as f64)).collect(),
        };
        thin(&mut s);
        let ts: Vec<f64> = s.points.iter().map(|p| p.t).collect();
        assert_eq!(ts, [0.0, 2.0, 4.0, 6.0]);
        assert_eq!(s.interval, 2.0);
    }

    #[test]
    fn a_long_series_stays_bounded_and_spans_the_whole_run() {
        let d = tmpdir("bounded");
        let r = Recorder::start(&d, Duration::from_secs(1)).unwrap();
        for i in 0..5000 {
            if r.due(i == 4999) {
                r.record(at(i as f64));
            }
        }
        let mem = r.series();
        assert!(mem.points.len() <= MAX_POINTS, "{}", mem.points.len());
        assert!(mem.points.len() > MAX_POINTS / 4, "{}", mem.points.len());
        assert_eq!(mem.points[0].t, 0.0);
        assert!(mem.points.last().unwrap().t >= 4990.0);
        assert_eq!(mem.points.last().unwrap().t, 4999.0);
        assert!(mem.points.windows(2).all(|w| w[0].t < w[1].t));
        // Evenly spaced at the final interval, the last point apart.
        let body = &mem.points[..mem.points.len() - 1];
        let uneven = body.windows(2).find(|w| w[1].t - w[0].t != 8.0);
        assert!(uneven.is_none(), "{uneven:?}");
        // What the file says is what was recorded (appends after the rewrites).
        let file = read(&jobdir::usage_path(&d)).unwrap().unwrap();
        assert_eq!(file, mem);
        assert_eq!(file.interval, 8.0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_line_cut_short_is_left_out() {
        let d = tmpdir("torn");
        let r = Recorder::start(&d, Duration::from_millis(500)).unwrap();
        r.record(at(1.0));
        r.record(at(2.0));
        let p = jobdir::usage_path(&d);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"t\":3.0,\"cpu_").unwrap();
        let s = read(&p).unwrap().unwrap();
        assert_eq!(s.interval, 0.5);
        assert_eq!(s.points.len(), 2);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn no_file_is_no_series_and_a_bad_header_names_the_file() {
        let d = tmpdir("none");
        let p = jobdir::usage_path(&d);
        assert!(read(&p).unwrap().is_none());
        std::fs::write(&p, "garbage\n").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains(&*p.to_string_lossy()) && e.contains("interval"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
