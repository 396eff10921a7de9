//! cgroup v2 backend: one directory per job below jobcell's parent.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::detect::{fs_path, override_path, Mount};
use crate::dir::{keyed, single, Dir};
use crate::events::{parse_pressure, OomWatch, Pressure, PressureKind, PressureTrigger};
use crate::{
    cpu_quota_us, cpu_weight_v2, cpuset, job_name_pid, kill_pids, pid_alive, rmdir_retry,
    wait_until, CgroupError, MemoryPolicy, Resources, Sample, Source, Usage, CFS_PERIOD_US,
    SETTLE_TIMEOUT,
};
use jobcell_spec::FILE_LIMITS;

/// Controllers enabled for every job where available (io too: on v2 it is one directory either
/// way, and it gives io.stat byte counts for every job).
const BASE_CTRLS: [&str; 4] = ["cpu", "memory", "pids", "io"];
/// Leaf jobcell moves itself into when its own cgroup must become an inner node.
const LAUNCHER_LEAF: &str = "launcher";

/// What detect changed in this process's original cgroup when it moved the process into the
/// launcher leaf, so that `restore` can undo exactly that (per process: cgroup membership is).
struct Moved {
    base: PathBuf,
    enabled: Vec<String>,
}
static MOVED: Mutex<Option<Moved>> = Mutex::new(None);

/// The xattr systemd (>= 251) sets on the cgroup of a unit with `Delegate=yes`.
const DELEGATE_XATTR: &std::ffi::CStr = c"trusted.delegate";

/// jobcell's parent when none is configured, for a process in cgroup `own_fs`: `<own>/jobcell`,
/// or `<parent>` itself if `own_fs` is already jobcell's launcher leaf (an earlier detect moved
/// this process there, or it started there); `<service>/jobcell`, a sibling of `own_fs`, if
/// `own_fs` is the subgroup of a delegated unit (`DelegateSubgroup=`) that systemd starts the
/// service in: the unit's cgroup holds no process, so controllers can be enabled there.
fn default_parent(own_fs: &Path, in_delegate_subgroup: bool) -> PathBuf {
    let own_parent = own_fs.parent().unwrap_or(own_fs);
    if own_fs.ends_with(Path::new("jobcell").join(LAUNCHER_LEAF)) {
        own_parent.to_path_buf()
    } else if in_delegate_subgroup {
        own_parent.join("jobcell")
    } else {
        own_fs.join("jobcell")
    }
}

/// Is `own_fs` a unit's DelegateSubgroup, jobcell's alone? Its parent (below the mount root)
/// carries systemd's delegation mark, and it is a leaf whose processes all run this process's
/// executable: the daemon, its spawner, and supervisors that detect before they leave it.
/// Without the mark, jobcell only ever creates cgroups below its own.
fn in_delegate_subgroup(own_fs: &Path, mountpoint: &Path) -> bool {
    let Some(unit) = own_fs
        .parent()
        .filter(|p| p.starts_with(mountpoint) && *p != mountpoint)
    else {
        return false;
    };
    if !has_delegate_xattr(unit) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(own_fs) else {
        return false;
    };
    if entries
        .flatten()
        .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
    {
        return false;
    }
    let Ok(procs) = std::fs::read_to_string(own_fs.join("cgroup.procs")) else {
        return false;
    };
    let Some(exe) = executable("self") else {
        return false;
    };
    procs.split_whitespace().all(|pid| match executable(pid) {
        Some(other) => other == exe,
        // Gone (or a zombie) since cgroup.procs was read: it holds nothing.
        None => std::fs::metadata(format!("/proc/{pid}")).is_err(),
    })
}

/// Whether `dir` carries `trusted.delegate` = "1" (readable with CAP_SYS_ADMIN only: for an
/// unprivileged caller it is never there).
fn has_delegate_xattr(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut value = [0u8; 8];
    // SAFETY: path and name are NUL-terminated; the kernel writes at most value.len() bytes.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            DELEGATE_XATTR.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n > 0 && value[..n as usize].trim_ascii() == b"1"
}

/// (device, inode) of the executable process `pid` (or "self") runs.
fn executable(pid: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some((m.dev(), m.ino()))
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

pub(crate) struct Root {
    /// The cgroup holding jobcell's parent (its subtree_control must enable our controllers).
    base: Dir,
    /// jobcell's parent: job cgroups are created here (re-opened if someone removed it).
    parent: Mutex<Arc<Dir>>,
    parent_path: PathBuf,
    /// The parent came from `parent_override`: never remove it.
    overridden: bool,
    /// Controllers enabled in `parent`'s subtree_control (grows lazily: io, cpuset).
    enabled: Mutex<Vec<String>>,
}

impl Root {
    /// (own cgroup, jobcell's parent, the parent's parent) as filesystem paths.
    fn paths(
        m: &Mount,
        own: &str,
        over: Option<&Path>,
    ) -> Result<(PathBuf, PathBuf, PathBuf), CgroupError> {
        let own_fs = fs_path(m, own);
        let parent_path = match over {
            Some(o) => override_path(m, o),
            None => {
                let subgroup = !own_fs.ends_with(Path::new("jobcell").join(LAUNCHER_LEAF))
                    && in_delegate_subgroup(&own_fs, &m.mountpoint);
                default_parent(&own_fs, subgroup)
            }
        };
        let base_path = parent_path
            .parent()
            .filter(|p| p.starts_with(&m.mountpoint))
            .ok_or_else(|| CgroupError::Delegation {
                path: parent_path.clone(),
                why: "jobcell's parent cannot be the cgroup2 root itself".into(),
            })?
            .to_path_buf();
        Ok((own_fs, parent_path, base_path))
    }

    /// For an unprivileged caller, without creating anything: may it create job cgroups below
    /// the parent and start jobs in them? The parent (or the base, to make it) must be a
    /// directory it can write; controllers not yet enabled need a writable `subtree_control`;
    /// and `clone3(CLONE_INTO_CGROUP)` (like any migration) needs write access to
    /// `cgroup.procs` of the common ancestor of the launcher's cgroup and the job's —
    /// delegation containment: a user cannot pull its process out of a subtree it was not
    /// given. (If detect must move the launcher into `<parent>/launcher`, that move needs the
    /// same file: the common ancestor is then the base, which is the launcher's own cgroup.)
    pub(crate) fn check_delegated(
        m: &Mount,
        own: &str,
        over: Option<&Path>,
    ) -> Result<(), CgroupError> {
        let (own_fs, parent_path, base_path) = Root::paths(m, own, over)?;
        crate::check_creatable(&parent_path, &m.mountpoint)?;
        let base = Dir::open(&base_path)?;
        let available = words(&base.read("cgroup.controllers")?);
        let want: Vec<&str> = BASE_CTRLS
            .iter()
            .copied()
            .filter(|c| available.iter().any(|a| a == c))
            .collect();
        let missing_in = |d: &Path| -> Result<bool, CgroupError> {
            let on = words(&Dir::open(d)?.read("cgroup.subtree_control")?);
            Ok(want.iter().any(|c| !on.iter().any(|o| o == c)))
        };
        if missing_in(&base_path)? {
            crate::check_writable(&base_path.join("cgroup.subtree_control"))?;
        }
        if parent_path.exists() && missing_in(&parent_path)? {
            crate::check_writable(&parent_path.join("cgroup.subtree_control"))?;
        }
        let common = own_fs
            .ancestors()
            .find(|a| parent_path.starts_with(a))
            .unwrap_or(&m.mountpoint);
        crate::check_writable(&common.join("cgroup.procs"))
    }

    pub(crate) fn detect(m: &Mount, own: &str, over: Option<&Path>) -> Result<Root, CgroupError> {
        let (own_fs, parent_path, base_path) = Root::paths(m, own, over)?;
        let base = Dir::open(&base_path)?;
        let available = words(&base.read("cgroup.controllers")?);
        let want: Vec<&str> = BASE_CTRLS
            .iter()
            .copied()
            .filter(|c| available.iter().any(|a| a == c))
            .collect();
        if !want.contains(&"memory") {
            return Err(CgroupError::Delegation {
                path: base_path,
                why: format!(
                    "the memory controller is not available there (cgroup.controllers: {:?}); \
                     enable it in the parent's cgroup.subtree_control or delegate the cgroup",
                    available.join(" ")
                ),
            });
        }
        let is_root = base_path == m.mountpoint;
        let mut moved = false;
        let enabled_in_base = enable(&base, &want, || {
            // EBUSY: the no-internal-process rule. Only if jobcell is alone in its cgroup may it
            // move itself into a leaf below its own parent and retry.
            if is_root || own_fs != base_path {
                return Ok(false);
            }
            let me = std::process::id() as i32;
            let procs = base.procs()?;
            if procs.iter().any(|p| *p != me) {
                return Err(CgroupError::Delegation {
                    path: base_path.clone(),
                    why: format!(
                        "cannot enable controllers: it holds processes other than jobcell ({:?}) and \
                         cgroup v2 forbids controllers on a cgroup with processes; start jobcell in \
                         its own cgroup (e.g. systemd-run --scope -p Delegate=yes) or pass a parent",
                        procs.iter().filter(|p| **p != me).take(8).collect::<Vec<_>>()
                    ),
                });
            }
            let parent = open_or_mkdir(&base, &parent_path)?;
            let leaf = open_or_mkdir(&parent, &parent_path.join(LAUNCHER_LEAF))?;
            leaf.write("cgroup.procs", "0")?;
            moved = true;
            Ok(true)
        })?;
        if moved {
            *MOVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Moved {
                base: base_path.clone(),
                enabled: enabled_in_base,
            });
        }
        let parent = open_or_mkdir(&base, &parent_path)?;
        enable(&parent, &want, || Ok(false))?;
        let enabled = words(&parent.read("cgroup.subtree_control")?);
        Ok(Root {
            base,
            parent: Mutex::new(Arc::new(parent)),
            parent_path,
            overridden: over.is_some(),
            enabled: Mutex::new(enabled),
        })
    }

    pub(crate) fn parent_path(&self) -> PathBuf {
        self.parent_path.clone()
    }

    fn parent(&self) -> Arc<Dir> {
        self.parent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Recreate the parent after it was removed (e.g. by `remove_parent_if_empty` of another
    /// jobcell process), with the controllers it had.
    fn reopen_parent(&self) -> Result<Arc<Dir>, CgroupError> {
        let en = self
            .enabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let d = open_or_mkdir(&self.base, &self.parent_path)?;
        let refs: Vec<&str> = en.iter().map(String::as_str).collect();
        enable(&d, &refs, || Ok(false))?;
        let d = Arc::new(d);
        *self.parent.lock().unwrap_or_else(|e| e.into_inner()) = d.clone();
        Ok(d)
    }

    /// Undo detect's changes to this process's own cgroup when nothing uses them any more: if it
    /// moved this process into `<parent>/launcher`, this process is alone there and no job
    /// cgroups remain, disable the controllers it enabled, move back, remove leaf and parent.
    /// Otherwise just remove an empty parent.
    pub(crate) fn restore(&self) -> Result<Vec<PathBuf>, CgroupError> {
        let mut guard = MOVED.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mv) = guard.as_ref().filter(|m| m.base == self.base.path()) else {
            return Ok(self.remove_parent_if_empty());
        };
        let parent = self.parent();
        let Ok(leaf) = parent.open_child(LAUNCHER_LEAF) else {
            return Ok(Vec::new());
        };
        let me = std::process::id() as i32;
        if leaf.procs()?.iter().any(|p| *p != me)
            || parent.subdirs()?.iter().any(|n| n != LAUNCHER_LEAF)
        {
            return Ok(Vec::new());
        }
        let off = |d: &Dir, ctrls: &[String]| -> Result<(), CgroupError> {
            if ctrls.is_empty() {
                return Ok(());
            }
            let cmd: Vec<String> = ctrls.iter().map(|c| format!("-{c}")).collect();
            d.write("cgroup.subtree_control", &cmd.join(" "))
        };
        off(&parent, &words(&parent.read("cgroup.subtree_control")?))?;
        off(&self.base, &mv.enabled)?;
        self.base.write("cgroup.procs", "0")?;
        *guard = None;
        let mut removed = Vec::new();
        if parent.rmdir_child(LAUNCHER_LEAF).is_ok() {
            removed.push(self.parent_path.join(LAUNCHER_LEAF));
        }
        if std::fs::remove_dir(&self.parent_path).is_ok() {
            removed.push(self.parent_path.clone());
        }
        Ok(removed)
    }

    /// For a process that ends while job cgroups outlive it: if detect moved it into
    /// `<parent>/launcher` and it is alone there, move it into `<parent>/<refuge>` (a leaf of
    /// jobcell's that stays busy, e.g. the supervisors') and remove the launcher leaf, which
    /// would otherwise stay behind empty. Whether the leaf was removed.
    pub(crate) fn leave_launcher_leaf(&self, refuge: &str) -> Result<bool, CgroupError> {
        let mut guard = MOVED.lock().unwrap_or_else(|e| e.into_inner());
        if guard
            .as_ref()
            .filter(|m| m.base == self.base.path())
            .is_none()
        {
            return Ok(false);
        }
        let parent = self.parent();
        let Ok(leaf) = parent.open_child(LAUNCHER_LEAF) else {
            return Ok(false);
        };
        let me = std::process::id() as i32;
        if leaf.procs()?.iter().any(|p| *p != me) {
            return Ok(false);
        }
        parent.open_child(refuge)?.write("cgroup.procs", "0")?;
        *guard = None;
        Ok(parent.rmdir_child(LAUNCHER_LEAF).is_ok())
    }

    pub(crate) fn remove_parent_if_empty(&self) -> Vec<PathBuf> {
        if self.overridden {
            return Vec::new();
        }
        match std::fs::remove_dir(&self.parent_path) {
            Ok(()) => vec![self.parent_path.clone()],
            Err(_) => Vec::new(),
        }
    }

    /// Enable an optional controller (io, cpuset) on base and parent; false if unavailable.
    fn ensure(&self, ctrl: &str) -> Result<bool, CgroupError> {
        let mut en = self.enabled.lock().unwrap_or_else(|e| e.into_inner());
        if en.iter().any(|c| c == ctrl) {
            return Ok(true);
        }
        if !words(&self.base.read("cgroup.controllers")?)
            .iter()
            .any(|c| c == ctrl)
        {
            return Ok(false);
        }
        let mut newly = enable(&self.base, &[ctrl], || Ok(false))?;
        if let Some(m) = MOVED.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            if m.base == self.base.path() {
                m.enabled.append(&mut newly);
            }
        }
        enable(&self.parent(), &[ctrl], || Ok(false))?;
        en.push(ctrl.to_string());
        Ok(true)
    }

    pub(crate) fn create(
        &self,
        name: &str,
        l: &Resources,
        warnings: &mut Vec<String>,
    ) -> Result<Job, CgroupError> {
        let cpus = match &l.cpuset {
            Some(want) => {
                // Validate before creating anything: the parent's effective cpus if it already
                // has cpuset, else the base's (what the parent will get).
                let allowed = match self.parent().read_opt("cpuset.cpus.effective")? {
                    Some(s) => s,
                    None => self
                        .base
                        .read_opt("cpuset.cpus.effective")?
                        .ok_or_else(|| {
                            CgroupError::unsupported(
                                "cpuset",
                                format!(
                                    "the cpuset controller is not available in {}",
                                    self.base.path().display()
                                ),
                            )
                        })?,
                };
                let c = cpuset::validate(want, &allowed).map_err(|reason| {
                    CgroupError::InvalidLimit {
                        field: "cpuset",
                        reason: format!("{want:?}: {reason}"),
                    }
                })?;
                if !self.ensure("cpuset")? {
                    return Err(CgroupError::unsupported(
                        "cpuset",
                        format!(
                            "the cpuset controller is not available in {}",
                            self.base.path().display()
                        ),
                    ));
                }
                Some(c)
            }
            None => None,
        };
        let io = match l.io_weight {
            Some(w) => {
                if self.ensure("io")? {
                    Some(w)
                } else {
                    warnings.push(
                        "io weight cannot be enforced: the io controller is not available".into(),
                    );
                    None
                }
            }
            None => None,
        };
        let mut parent = self.parent();
        let mut made = parent.mkdir_child(name);
        if matches!(&made, Err(e) if e.is_enoent()) {
            parent = self.reopen_parent()?;
            made = parent.mkdir_child(name);
        }
        let dir = match made? {
            Some(d) => d,
            None => return Err(CgroupError::Exists(parent.path().join(name))),
        };
        let job = Job {
            parent: parent.clone(),
            dir,
            name: name.to_string(),
        };
        if let Err(e) = job.apply(l, cpus.as_deref(), io, warnings) {
            let _ = parent.rmdir_child(name);
            return Err(e);
        }
        Ok(job)
    }

    pub(crate) fn open(&self, name: &str) -> Result<Job, CgroupError> {
        let parent = self.parent();
        let dir = parent.open_child(name)?;
        Ok(Job {
            parent,
            dir,
            name: name.to_string(),
        })
    }

    pub(crate) fn gc_stale(&self) -> Result<Vec<String>, CgroupError> {
        let mut removed = Vec::new();
        let parent = self.parent();
        for n in parent.subdirs()? {
            let Some(pid) = job_name_pid(&n) else {
                continue;
            };
            if pid_alive(pid) {
                continue;
            }
            let Ok(d) = parent.open_child(&n) else {
                continue;
            };
            let populated = keyed(&d.read("cgroup.events")?, "populated").unwrap_or(1);
            if populated != 0 {
                continue;
            }
            if parent.rmdir_child(&n).is_ok() {
                removed.push(n);
            }
        }
        Ok(removed)
    }
}

fn open_or_mkdir(up: &Dir, path: &Path) -> Result<Dir, CgroupError> {
    if let Ok(d) = Dir::open(path) {
        return Ok(d);
    }
    // Create missing components between `up` and `path`.
    let rel = path
        .strip_prefix(up.path())
        .map_err(|_| CgroupError::Delegation {
            path: path.to_path_buf(),
            why: format!("not below {}", up.path().display()),
        })?;
    let mut cur = up.try_clone()?;
    for comp in rel.iter() {
        let n = comp.to_string_lossy();
        cur = match cur.mkdir_child(&n)? {
            Some(d) => d,
            None => cur.open_child(&n)?,
        };
    }
    Ok(cur)
}

/// Enable `ctrls` in `d`'s subtree_control (skipping enabled ones). On EBUSY `on_busy` may fix
/// things and ask for one retry by returning true.
fn enable(
    d: &Dir,
    ctrls: &[&str],
    mut on_busy: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<Vec<String>, CgroupError> {
    let cur = words(&d.read("cgroup.subtree_control")?);
    let missing: Vec<String> = ctrls
        .iter()
        .filter(|c| !cur.iter().any(|x| x == *c))
        .map(|c| c.to_string())
        .collect();
    if missing.is_empty() {
        return Ok(missing);
    }
    let cmd = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    match d.write_raw("cgroup.subtree_control", cmd.as_bytes()) {
        Ok(()) => Ok(missing),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            if on_busy()? {
                // A thread of ours that was already exiting is not migrated and counts as a
                // process of the old cgroup until it is gone: retry briefly.
                let mut last = None;
                let ok = wait_until(Duration::from_secs(2), || {
                    match d.write_raw("cgroup.subtree_control", cmd.as_bytes()) {
                        Ok(()) => Ok(true),
                        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                            last = Some(e);
                            Ok(false)
                        }
                        Err(e) => Err(CgroupError::Write {
                            path: d.path().join("cgroup.subtree_control"),
                            value: cmd.clone(),
                            source: e,
                        }),
                    }
                })?;
                if !ok {
                    return Err(CgroupError::Write {
                        path: d.path().join("cgroup.subtree_control"),
                        value: cmd,
                        source: last.expect("set on EBUSY"),
                    });
                }
                Ok(missing)
            } else {
                Err(CgroupError::Delegation {
                    path: d.path().to_path_buf(),
                    why: format!(
                        "cannot enable {cmd:?} in cgroup.subtree_control: it holds processes (no-internal-process rule)"
                    ),
                })
            }
        }
        Err(e) => Err(CgroupError::Write {
            path: d.path().join("cgroup.subtree_control"),
            value: cmd,
            source: e,
        }),
    }
}

pub(crate) struct Job {
    parent: Arc<Dir>,
    dir: Dir,
    name: String,
}

impl Job {
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn dir_fd(&self) -> BorrowedFd<'_> {
        self.dir.borrow()
    }

    fn apply(
        &self,
        l: &Resources,
        cpus: Option<&str>,
        io: Option<u16>,
        warnings: &mut Vec<String>,
    ) -> Result<(), CgroupError> {
        let d = &self.dir;
        if let Some(n) = l.cpus {
            let w = cpu_weight_v2(n);
            if w != 100 {
                d.write("cpu.weight", &w.to_string())?;
            }
        }
        if let Some(n) = l.cpu_limit {
            d.write("cpu.max", &format!("{} {}", cpu_quota_us(n), CFS_PERIOD_US))?;
        }
        if let Some(c) = cpus {
            d.write("cpuset.cpus", c)?;
        }
        if let Some(bytes) = l.memory {
            match l.memory_policy {
                MemoryPolicy::Hard => {
                    d.write("memory.max", &bytes.to_string())?;
                    d.write("memory.oom.group", "1")?;
                }
                MemoryPolicy::Soft => d.write("memory.low", &bytes.to_string())?,
                MemoryPolicy::None => {}
            }
        }
        if let Some(s) = l.swap {
            if d.has("memory.swap.max") {
                d.write("memory.swap.max", &s.to_string())?;
            } else {
                warnings.push(
                    "swap limit cannot be enforced: no swap accounting (memory.swap.max absent)"
                        .into(),
                );
            }
        }
        for f in FILE_LIMITS {
            if let Some(n) = (f.get)(l) {
                d.write(f.v2, &n.to_string())?;
            }
        }
        if let Some(w) = io {
            let mut done = false;
            if d.has("io.weight") {
                d.write("io.weight", &format!("default {w}"))?;
                done = true;
            }
            if d.has("io.bfq.weight") {
                d.write("io.bfq.weight", &w.clamp(1, 1000).to_string())?;
                done = true;
            }
            if !done {
                warnings.push(
                    "io weight cannot be enforced: neither io.weight nor io.bfq.weight exists"
                        .into(),
                );
            }
        }
        Ok(())
    }

    pub(crate) fn rmdir(&self) -> Result<(), CgroupError> {
        rmdir_retry(&self.parent, &self.name)
    }

    /// Remove the cgroup if it has no process; `Ok(false)` if it has.
    pub(crate) fn rmdir_if_empty(&self) -> Result<bool, CgroupError> {
        crate::rmdir_once(&self.parent, &self.name)
    }

    pub(crate) fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        self.dir.write("cgroup.procs", &pid.to_string())
    }

    pub(crate) fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        self.dir.procs()
    }

    /// Wait until `cgroup.events` shows `key value`, sleeping in poll(POLLPRI) between reads
    /// (kernfs signals every change of the file).
    fn wait_event(&self, key: &str, value: u64, what: &str) -> Result<(), CgroupError> {
        let path = self.dir.path().join("cgroup.events");
        let fd = self
            .dir
            .open_file("cgroup.events", libc::O_RDONLY)
            .map_err(|e| CgroupError::io("open", &path, e))?;
        let start = Instant::now();
        loop {
            let mut buf = [0u8; 256];
            // SAFETY: pread into a local buffer.
            let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(CgroupError::io(
                    "read",
                    &path,
                    std::io::Error::last_os_error(),
                ));
            }
            let text = String::from_utf8_lossy(&buf[..n as usize]);
            if keyed(&text, key) == Some(value) {
                return Ok(());
            }
            let left = SETTLE_TIMEOUT.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(CgroupError::Timeout {
                    what: format!("waiting for {what} ({} {key} {value})", path.display()),
                    secs: SETTLE_TIMEOUT.as_secs_f64(),
                });
            }
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLPRI,
                revents: 0,
            };
            // Bounded wait: a change between our read and poll is caught on the next round.
            let ms = left.min(Duration::from_millis(100)).as_millis() as libc::c_int;
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, ms) };
        }
    }

    pub(crate) fn is_frozen(&self) -> Result<bool, CgroupError> {
        Ok(keyed(&self.dir.read("cgroup.events")?, "frozen") == Some(1))
    }

    pub(crate) fn freeze(&self) -> Result<(), CgroupError> {
        self.dir.write("cgroup.freeze", "1")?;
        self.wait_event("frozen", 1, "the cgroup to freeze")
    }

    pub(crate) fn thaw(&self) -> Result<(), CgroupError> {
        self.dir.write("cgroup.freeze", "0")?;
        self.wait_event("frozen", 0, "the cgroup to thaw")
    }

    pub(crate) fn kill(&self) -> Result<(), CgroupError> {
        if self.dir.has("cgroup.kill") {
            self.dir.write("cgroup.kill", "1")?;
            return self.wait_event("populated", 0, "the killed cgroup to empty");
        }
        // Before 5.14: freeze so nothing forks, kill, thaw so the kills land, until empty.
        let start = Instant::now();
        loop {
            let frozen = self.freeze().is_ok();
            let pids = self.procs()?;
            kill_pids(&pids);
            if frozen {
                self.dir.write("cgroup.freeze", "0")?;
            }
            if pids.is_empty() {
                return self.wait_event("populated", 0, "the killed cgroup to empty");
            }
            if start.elapsed() > SETTLE_TIMEOUT {
                return Err(CgroupError::Timeout {
                    what: format!("killing the processes of {}", self.dir.path().display()),
                    secs: SETTLE_TIMEOUT.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub(crate) fn sample(&self) -> Result<Sample, CgroupError> {
        let d = &self.dir;
        let st = d.read("memory.stat")?;
        Ok(Sample {
            memory: single(&d.read("memory.current")?).unwrap_or(0),
            anon_shmem: keyed(&st, "anon").unwrap_or(0) + keyed(&st, "shmem").unwrap_or(0),
            swap: d
                .read_opt("memory.swap.current")?
                .and_then(|s| single(&s))
                .unwrap_or(0),
            pids: single(&d.read("pids.current")?).unwrap_or(0),
        })
    }

    pub(crate) fn oom_kills(&self) -> Result<u64, CgroupError> {
        Ok(crate::events::oom_kills_from(
            &self.dir.read("memory.events")?,
        ))
    }

    /// The usage and a [`sample`](Self::sample) (taken first, as before).
    pub(crate) fn stats(&self) -> Result<(Usage, Sample), CgroupError> {
        let s = self.sample()?;
        Ok((self.usage()?, s))
    }

    fn usage(&self) -> Result<Usage, CgroupError> {
        let d = &self.dir;
        let mut u = Usage::default();
        let cpu = d.read("cpu.stat")?;
        u.cpu_user_us = keyed(&cpu, "user_usec").unwrap_or(0);
        u.cpu_system_us = keyed(&cpu, "system_usec").unwrap_or(0);
        u.memory_current = single(&d.read("memory.current")?).unwrap_or(0);
        match d.read_opt("memory.peak")? {
            Some(s) => {
                u.memory_peak = single(&s).unwrap_or(0);
                u.memory_peak_source = Source::Kernel;
            }
            None => {
                u.memory_peak = u.memory_current;
                u.memory_peak_source = Source::Sampled;
            }
        }
        let st = d.read("memory.stat")?;
        u.memory_anon = keyed(&st, "anon").unwrap_or(0);
        u.memory_shmem = keyed(&st, "shmem").unwrap_or(0);
        u.memory_file = keyed(&st, "file")
            .unwrap_or(0)
            .saturating_sub(u.memory_shmem);
        match d.read_opt("memory.swap.peak")? {
            Some(s) => {
                u.swap_peak = single(&s);
                u.swap_peak_source = Source::Kernel;
            }
            None => {
                u.swap_peak = d.read_opt("memory.swap.current")?.and_then(|s| single(&s));
                u.swap_peak_source = Source::Sampled;
            }
        }
        u.oom_kills = self.oom_kills()?;
        match d.read_opt("pids.peak")? {
            Some(s) => {
                u.pids_peak = single(&s).unwrap_or(0);
                u.pids_peak_source = Source::Kernel;
            }
            None => {
                u.pids_peak = single(&d.read("pids.current")?).unwrap_or(0);
                u.pids_peak_source = Source::Sampled;
            }
        }
        if let Some(io) = d.read_opt("io.stat")? {
            let (r, w) = parse_io_stat(&io);
            u.io_read_bytes = Some(r);
            u.io_write_bytes = Some(w);
        }
        Ok(u)
    }

    pub(crate) fn oom_watch(&self) -> Result<OomWatch, CgroupError> {
        OomWatch::v2(&self.dir)
    }

    pub(crate) fn memory_pressure(&self) -> Result<Pressure, CgroupError> {
        let path = self.dir.path().join("memory.pressure");
        match self.dir.read_opt("memory.pressure")? {
            Some(s) => parse_pressure(&s, &path),
            None => Err(CgroupError::unsupported(
                "memory pressure (PSI)",
                format!("{} is absent (kernel without PSI or psi=0)", path.display()),
            )),
        }
    }

    pub(crate) fn pressure_trigger(
        &self,
        kind: PressureKind,
        stall: Duration,
        window: Duration,
    ) -> Result<PressureTrigger, CgroupError> {
        PressureTrigger::new(&self.dir, kind, stall, window)
    }
}

/// Sum rbytes/wbytes over the devices in io.stat.
fn parse_io_stat(s: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for l in s.lines() {
        for kv in l.split_whitespace().skip(1) {
            match kv.split_once('=') {
                Some(("rbytes", v)) => r += v.parse::<u64>().unwrap_or(0),
                Some(("wbytes", v)) => w += v.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
    }
    (r, w)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn default_parent_is_a_child_unless_in_a_delegate_subgroup() {
        let svc = Path::new("/sys/fs/cgroup/system.slice/jobcell.service");
        let own = svc.join("daemon");
        assert_eq!(super::default_parent(&own, false), own.join("jobcell"));
        assert_eq!(super::default_parent(&own, true), svc.join("jobcell"));
        // Already in the launcher leaf: its parent is jobcell's, subgroup or not.
        let leaf = svc.join("jobcell/launcher");
        assert_eq!(super::default_parent(&leaf, false), svc.join("jobcell"));
        assert_eq!(super::default_parent(&leaf, true), svc.join("jobcell"));
    }

    #[test]
    fn delegate_xattr_is_read_from_the_directory() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP delegate_xattr_is_read_from_the_directory: trusted.* xattrs need root");
            return;
        }
        let base = std::env::temp_dir().join(format!("jobcell-xattr-{}", std::process::id()));
        let unit = base.join("unit.service");
        std::fs::create_dir_all(unit.join("daemon")).unwrap();
        let set = |value: &[u8]| {
            let path = std::ffi::CString::new(unit.to_str().unwrap()).unwrap();
            // SAFETY: NUL-terminated path and name; value is a live slice of value.len() bytes.
            unsafe {
                libc::setxattr(
                    path.as_ptr(),
                    super::DELEGATE_XATTR.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            }
        };
        let mark = set(b"1");
        if mark != 0 {
            let err = std::io::Error::last_os_error();
            std::fs::remove_dir_all(&base).unwrap();
            eprintln!(
                "SKIP delegate_xattr_is_read_from_the_directory: setxattr on {}: {err}",
                unit.display()
            );
            return;
        }
        let marked = super::has_delegate_xattr(&unit);
        let child_marked = super::has_delegate_xattr(&unit.join("daemon"));
        set(b"0");
        let zero_marked = super::has_delegate_xattr(&unit);
        std::fs::remove_dir_all(&base).unwrap();
        assert!(marked, "trusted.delegate=1 not seen");
        assert!(!child_marked, "the mark is the unit's, not its subgroup's");
        assert!(!zero_marked, "trusted.delegate=0 is no delegation");
    }

    #[test]
    fn executable_tells_this_program_from_its_parent() {
        let me = super::executable("self");
        assert!(me.is_some());
        assert_eq!(super::executable(&std::process::id().to_string()), me);
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        assert_ne!(
            super::executable(&parent.to_string()),
            me,
            "cargo's test runner is not us"
        );
    }

    #[test]
    fn io_stat() {
        let (r, w) = super::parse_io_stat(
            "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n253:0 rbytes=1 wbytes=2\n",
        );
        assert_eq!((r, w), (101, 202));
    }
}
