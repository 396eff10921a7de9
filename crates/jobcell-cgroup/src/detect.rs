//! Hierarchy detection from `/proc/self/mountinfo` and `/proc/self/cgroup` (pure parsing; the
//! callers open the directories).

use std::path::{Path, PathBuf};

/// One cgroup filesystem mount.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mount {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Which part of the hierarchy is visible there (field 4 of mountinfo; "/" usually).
    pub root: String,
    /// v1 controllers (from the super options), empty for cgroup2.
    pub controllers: Vec<String>,
    pub v2: bool,
}

/// Undo mountinfo's octal escapes (`\040` for space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let fstype = post[0];
        let v2 = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            post[2]
                .split(',')
                .filter(|o| V1_CONTROLLERS.contains(o))
                .map(str::to_string)
                .collect()
        };
        let m = Mount {
            mountpoint: PathBuf::from(unescape(pre[4])),
            root: unescape(pre[3]),
            controllers,
            v2,
        };
        // The first mount of a hierarchy wins (bind mounts of it elsewhere are ignored).
        let dup = out.iter().any(|o: &Mount| {
            o.v2 == m.v2
                && (if v2 {
                    true
                } else {
                    o.controllers == m.controllers
                })
        });
        if !dup {
            out.push(m);
        }
    }
    out
}

/// `/proc/self/cgroup`: (v1 controller list or empty for v2, path).
pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let ctrls = if ctrls.is_empty() {
                Vec::new()
            } else {
                ctrls.split(',').map(str::to_string).collect()
            };
            Some((ctrls, path.to_string()))
        })
        .collect()
}

/// Filesystem directory of cgroup `cg_path` in a hierarchy mounted at `m`.
pub(crate) fn fs_path(m: &Mount, cg_path: &str) -> PathBuf {
    let rel = if m.root == "/" {
        cg_path
    } else {
        // Mount shows only a subtree: strip it (in a cgroup namespace paths are already relative).
        cg_path.strip_prefix(m.root.as_str()).unwrap_or(cg_path)
    };
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        m.mountpoint.clone()
    } else {
        m.mountpoint.join(rel)
    }
}

/// Resolve a `parent_override`: a filesystem path under `m`'s mountpoint is taken as is;
/// anything else is a hierarchy-relative cgroup path (`/batch/jobs`).
pub(crate) fn override_path(m: &Mount, over: &Path) -> PathBuf {
    if over.starts_with(&m.mountpoint) {
        return over.to_path_buf();
    }
    let rel = over.strip_prefix("/").unwrap_or(over);
    if rel.as_os_str().is_empty() {
        m.mountpoint.clone()
    } else {
        m.mountpoint.join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:38 / /mnt/x\\040y rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_hybrid() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.len(), 5, "{m:?}");
        assert_eq!(m[0].controllers, vec!["cpu"]);
        assert_eq!(m[2].mountpoint, PathBuf::from("/sys/fs/cgroup/memory"));
        assert!(m[3].controllers.is_empty() && !m[3].v2); // name=systemd
        assert!(m[4].v2);
        assert_eq!(unescape("/mnt/x\\040y"), "/mnt/x y");
    }

    #[test]
    fn proc_cgroup() {
        let c = parse_proc_cgroup("4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/user.slice\n");
        assert_eq!(
            c[0],
            (vec!["memory".to_string()], "/process_api/abc".to_string())
        );
        assert_eq!(c[1].0, vec!["cpu", "cpuacct"]);
        assert_eq!(c[2], (vec![], "/user.slice".to_string()));
    }

    #[test]
    fn paths() {
        let m = Mount {
            mountpoint: "/sys/fs/cgroup".into(),
            root: "/kubepods/pod1".into(),
            controllers: vec![],
            v2: true,
        };
        assert_eq!(
            fs_path(&m, "/kubepods/pod1/c"),
            PathBuf::from("/sys/fs/cgroup/c")
        );
        assert_eq!(fs_path(&m, "/"), PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(
            override_path(&m, Path::new("/batch/jc")),
            PathBuf::from("/sys/fs/cgroup/batch/jc")
        );
        assert_eq!(
            override_path(&m, Path::new("/sys/fs/cgroup/a")),
            PathBuf::from("/sys/fs/cgroup/a")
        );
    }
}
