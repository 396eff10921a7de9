//! What one usage sample costs a job's supervisor, as root:
//! `cargo run --release -p jobcell-node --example usage_sample_cost [SAMPLES]` (default 1000).
//!
//! Makes a job cgroup (as a daemon job's: usage and freezer) under jobcell's parent, with one
//! sleeping process in it, and takes SAMPLES points through the supervisor's own `Recorder`
//! (the cgroup reads and one appended line each; thinning included), then prints the CPU time
//! this process spent (getrusage, user + system) per sample.

use std::time::{Duration, Instant};

use jobcell_cgroup::{CgroupOptions, CgroupRoot, Resources};
use jobcell_node::usage::Recorder;
use jobcell_sandbox::UsageSampler;

fn cpu_us() -> u64 {
    // SAFETY: rusage is plain data; getrusage writes one into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is alive and writable for the call.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

fn main() {
    let samples: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("SAMPLES is a number"))
        .unwrap_or(1000);
    let root = CgroupRoot::detect(None).expect("cgroups (run as root)");
    let cg = root
        .create(
            &jobcell_cgroup::job_cgroup_name("usagecost"),
            &Resources {
                memory: Some(64 << 20),
                ..Resources::default()
            },
            CgroupOptions::default(),
        )
        .expect("job cgroup");
    let mut job = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("sleep");
    cg.attach(job.id() as i32).expect("attach");
    let dir = tempfile::tempdir().expect("temp dir");
    let rec = Recorder::start(dir.path(), Duration::from_secs(1)).expect("recorder");
    let (cpu0, t0) = (cpu_us(), Instant::now());
    for _ in 0..samples {
        rec.sample(&cg, false);
    }
    let (cpu, wall) = (cpu_us() - cpu0, t0.elapsed());
    let _ = job.kill();
    let _ = job.wait();
    let kept = rec.series().points.len();
    cg.remove().expect("removing the job cgroup");
    root.remove_parents_if_empty();
    println!(
        "{samples} samples ({kept} kept, {:?}): {:.1} µs CPU and {:.1} µs wall per sample",
        root.version(),
        cpu as f64 / samples as f64,
        wall.as_secs_f64() * 1e6 / samples as f64
    );
}
