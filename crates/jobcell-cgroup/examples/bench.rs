//! What a job cgroup adds to a launch: create + limits + attach(forked child) + remove, against a
//! plain fork + release + wait. Prints medians.
//!
//!   cargo run --release -p jobcell-cgroup --example bench -- [ITERATIONS]   (root)

use std::time::{Duration, Instant};

use jobcell_cgroup::{job_cgroup_name, CgroupOptions, CgroupRoot, MemoryPolicy, Resources};

/// Fork a child that waits on a pipe; `between(pid)` runs before the child is released.
fn fork_release_wait(mut between: impl FnMut(i32)) {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 into a local array; fork in a single-threaded program; the child only
    // read()s and _exit()s.
    unsafe {
        assert_eq!(libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC), 0);
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let mut b = [0u8; 1];
            libc::read(p[0], b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
        libc::close(p[0]);
        between(pid);
        libc::write(p[1], b"g".as_ptr().cast(), 1);
        libc::close(p[1]);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        assert!(libc::WIFEXITED(st));
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let root = CgroupRoot::detect(None).expect("detect");
    let limits = Resources {
        cpus: Some(2.0),
        memory: Some(1 << 30),
        memory_policy: MemoryPolicy::Hard,
        pids: Some(1000),
        ..Default::default()
    };
    println!(
        "cgroup {:?} ({:?}), {} iterations, limits: cpus 2, memory 1 GiB hard, pids 1000",
        root.version(),
        root.layout(),
        n
    );
    let (mut base, mut full, mut create, mut attach, mut remove) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..n + 10 {
        let t = Instant::now();
        fork_release_wait(|_| {});
        let b = t.elapsed();

        let t = Instant::now();
        let job = root
            .create(
                &job_cgroup_name(&format!("bench{i}")),
                &limits,
                CgroupOptions::default(),
            )
            .expect("create");
        let c = t.elapsed();
        let mut a = Duration::ZERO;
        fork_release_wait(|pid| {
            let t = Instant::now();
            job.attach(pid).expect("attach");
            a = t.elapsed();
        });
        let t2 = Instant::now();
        job.remove().expect("remove");
        let r = t2.elapsed();
        let f = t.elapsed();
        if i >= 10 {
            // The first rounds warm caches and create parents.
            base.push(b);
            full.push(f);
            create.push(c);
            attach.push(a);
            remove.push(r);
        }
    }
    let (mb, mf) = (median(&mut base), median(&mut full));
    println!("plain fork+release+wait          median {:8.1} µs", us(mb));
    println!("with cgroup (create..remove)     median {:8.1} µs", us(mf));
    let (c, a, r) = (
        median(&mut create),
        median(&mut attach),
        median(&mut remove),
    );
    println!("  create + limits                median {:8.1} µs", us(c));
    println!("  attach                         median {:8.1} µs", us(a));
    println!("  remove                         median {:8.1} µs", us(r));
    // Robust against fork noise on a busy host: the cgroup calls alone.
    println!(
        "  sum of those three medians            {:8.1} µs",
        us(c + a + r)
    );
    println!(
        "added by the cgroup              median {:8.1} µs",
        us(mf.saturating_sub(mb))
    );
}
