//! What the node offers jobs: by default the cores and memory the daemon's own cgroup (and CPU
//! affinity) allow, minus a reserve for the system.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeResources {
    pub cpus: f64,
    pub memory: u64,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// This process's cgroup path for a v1 controller, or the v2 path ("" key).
fn own_cgroup(ctrl: &str) -> Option<String> {
    let s = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    s.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let _ = it.next()?;
        let ctrls = it.next()?;
        let path = it.next()?;
        let hit = if ctrl.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == ctrl)
        };
        hit.then(|| path.to_string())
    })
}

/// The cgroup dir and its ancestors up to the mount point.
fn ancestors(mount: &Path, rel: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut p = mount.join(rel.trim_start_matches('/'));
    while p.starts_with(mount) {
        out.push(p.clone());
        if !p.pop() {
            break;
        }
    }
    out
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Cores and memory this process may use.
pub fn detect() -> NodeResources {
    // SAFETY: cpu_set_t is a plain bit mask, valid all zero.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of_val(&set) bytes into `set`, a live local;
    // CPU_COUNT only reads it.
    let mut cpus =
        if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } == 0 {
            unsafe { libc::CPU_COUNT(&set) as f64 }
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(1.0)
        };
    let mut memory = mem_total();
    let root = Path::new("/sys/fs/cgroup");
    // v1
    if let Some(rel) = own_cgroup("memory") {
        for d in ancestors(&root.join("memory"), &rel) {
            if let Some(l) = read_u64(&d.join("memory.limit_in_bytes")) {
                memory = memory.min(l);
            }
        }
    }
    if let Some(rel) = own_cgroup("cpu") {
        for d in ancestors(&root.join("cpu"), &rel) {
            let q = std::fs::read_to_string(d.join("cpu.cfs_quota_us")).ok();
            let p = read_u64(&d.join("cpu.cfs_period_us"));
            if let (Some(q), Some(p)) = (q.and_then(|q| q.trim().parse::<i64>().ok()), p) {
                if q > 0 && p > 0 {
                    cpus = cpus.min(q as f64 / p as f64);
                }
            }
        }
    }
    // v2 (pure, or the unified hierarchy when it carries controllers)
    if let Some(rel) = own_cgroup("") {
        let mount = if root.join("cgroup.controllers").exists() {
            root.to_path_buf()
        } else {
            root.join("unified")
        };
        for d in ancestors(&mount, &rel) {
            if let Some(l) = read_u64(&d.join("memory.max")) {
                memory = memory.min(l);
            }
            if let Ok(s) = std::fs::read_to_string(d.join("cpu.max")) {
                let mut it = s.split_whitespace();
                if let (Some(Ok(q)), Some(Ok(p))) = (
                    it.next().map(str::parse::<f64>),
                    it.next().map(str::parse::<f64>),
                ) {
                    if p > 0.0 {
                        cpus = cpus.min(q / p);
                    }
                }
            }
        }
    }
    NodeResources { cpus, memory }
}

#[cfg(test)]
mod tests {
    #[test]
    fn detects_something_plausible() {
        let r = super::detect();
        assert!(r.cpus >= 1.0 && r.memory > 64 << 20, "{r:?}");
    }
}
