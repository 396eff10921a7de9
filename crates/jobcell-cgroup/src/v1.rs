//! cgroup v1 backend: one directory per hierarchy (controllers may be co-mounted).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::detect::{fs_path, override_path, Mount};
use crate::dir::{keyed, single, Dir};
use crate::events::OomWatch;
use crate::{
    cpu_quota_us, cpu_shares_v1, cpuset, job_name_pid, kill_pids, pid_alive, rmdir_retry,
    wait_until, CgroupError, CgroupOptions, MemoryPolicy, Resources, Sample, Source, Usage,
    SETTLE_TIMEOUT,
};
use jobcell_spec::FILE_LIMITS;

/// How long the collection of a dead launcher's cgroup waits for its last tasks to go:
/// GC_ATTEMPTS tries, GC_RETRY apart.
const GC_ATTEMPTS: u32 = 25;
const GC_RETRY: Duration = Duration::from_millis(2);

/// The memory controller's one soft limit (the reclaim target under host memory pressure).
const SOFT_LIMIT: &str = "memory.soft_limit_in_bytes";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Ctrl {
    Memory,
    Cpu,
    Cpuacct,
    Pids,
    Freezer,
    Blkio,
    Cpuset,
}

impl Ctrl {
    const ALL: [Ctrl; 7] = [
        Ctrl::Memory,
        Ctrl::Cpu,
        Ctrl::Cpuacct,
        Ctrl::Pids,
        Ctrl::Freezer,
        Ctrl::Blkio,
        Ctrl::Cpuset,
    ];
    /// Created for every job.
    const ALWAYS: [Ctrl; 3] = [Ctrl::Memory, Ctrl::Cpu, Ctrl::Pids];

    /// The controllers a job with these limits gets a cgroup in: [`Ctrl::ALWAYS`], cpuacct and
    /// freezer unless left out, blkio, cpuset and those of `FILE_LIMITS` rows when limited.
    fn wanted(l: &Resources, o: CgroupOptions) -> Vec<Ctrl> {
        let mut w = Ctrl::ALWAYS.to_vec();
        if !o.v1_without_cpuacct {
            w.push(Ctrl::Cpuacct);
        }
        if !o.v1_without_freezer {
            w.push(Ctrl::Freezer);
        }
        if l.io_weight.is_some() {
            w.push(Ctrl::Blkio);
        }
        if l.cpuset.is_some() {
            w.push(Ctrl::Cpuset);
        }
        for f in FILE_LIMITS.iter().filter(|f| (f.get)(l).is_some()) {
            match Ctrl::of_file(f.v1) {
                Some(c) if !w.contains(&c) => w.push(c),
                _ => {}
            }
        }
        w
    }
    /// The controller whose interface file `file` is (`pids.max` → pids).
    fn of_file(file: &str) -> Option<Ctrl> {
        let prefix = file.split_once('.')?.0;
        Ctrl::ALL.into_iter().find(|c| c.name() == prefix)
    }
    fn name(self) -> &'static str {
        match self {
            Ctrl::Memory => "memory",
            Ctrl::Cpu => "cpu",
            Ctrl::Cpuacct => "cpuacct",
            Ctrl::Pids => "pids",
            Ctrl::Freezer => "freezer",
            Ctrl::Blkio => "blkio",
            Ctrl::Cpuset => "cpuset",
        }
    }
}

/// One mounted hierarchy jobcell uses.
struct Hier {
    ctrls: Vec<Ctrl>,
    /// Where the hierarchy is mounted.
    mount: PathBuf,
    /// The cgroup this process lives in, in this hierarchy.
    own: PathBuf,
    /// jobcell's parent directory for job cgroups.
    parent_path: PathBuf,
    /// Opened (and created) on first use.
    parent: Mutex<Option<Arc<Dir>>>,
}

impl Hier {
    fn has(&self, c: Ctrl) -> bool {
        self.ctrls.contains(&c)
    }

    /// Open the parent, creating missing directories down from the first existing ancestor.
    /// New cpuset directories get cpus/mems copied from their parent (v1 starts them empty).
    fn parent(&self) -> Result<Arc<Dir>, CgroupError> {
        let mut guard = self.parent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = guard.as_ref() {
            return Ok(d.clone());
        }
        // Usually there already (one open, no stat first); else made, missing levels and all.
        let dir = match Dir::open(&self.parent_path) {
            Ok(d) => d,
            Err(e) if e.is_enoent() => self.make_parent()?,
            Err(e) => return Err(e),
        };
        if self.has(Ctrl::Cpuset) && dir.read("cpuset.cpus")?.trim().is_empty() {
            // Our own parent left empty by an interrupted earlier run.
            let up = Dir::open(dir.path().parent().unwrap_or(Path::new("/")))?;
            init_cpuset(&up, &dir)?;
        }
        let d = Arc::new(dir);
        *guard = Some(d.clone());
        Ok(d)
    }

    fn make_parent(&self) -> Result<Dir, CgroupError> {
        let mut missing = Vec::new();
        let mut cur = self.parent_path.clone();
        while !cur.exists() {
            let Some(name) = cur.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                break;
            };
            missing.push(name);
            if !cur.pop() {
                break;
            }
        }
        let mut dir = Dir::open(&cur)?;
        for name in missing.iter().rev() {
            let created = dir.mkdir_child(name)?;
            let child = match created {
                Some(c) => {
                    if self.has(Ctrl::Cpuset) {
                        init_cpuset(&dir, &c)?;
                    }
                    c
                }
                None => dir.open_child(name)?,
            };
            dir = child;
        }
        Ok(dir)
    }

    /// Forget the cached parent (it was removed underneath us).
    fn reset(&self) {
        *self.parent.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn parent_if_exists(&self) -> Option<Arc<Dir>> {
        if let Some(d) = self
            .parent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Some(d.clone());
        }
        Dir::open(&self.parent_path).ok().map(Arc::new)
    }
}

fn init_cpuset(parent: &Dir, child: &Dir) -> Result<(), CgroupError> {
    let cpus = parent.read("cpuset.effective_cpus")?;
    let mems = parent.read("cpuset.effective_mems")?;
    child.write("cpuset.cpus", cpus.trim())?;
    child.write("cpuset.mems", mems.trim())
}

pub(crate) struct Root {
    hiers: Vec<Hier>,
    /// Parents came from `parent_override`: never remove them.
    overridden: bool,
}

impl Root {
    /// The hierarchies jobcell uses and its parent path in each (nothing opened or created).
    fn hierarchies(
        mounts: &[Mount],
        cgs: &[(Vec<String>, String)],
        over: Option<&Path>,
    ) -> Vec<Hier> {
        let mut hiers = Vec::new();
        for m in mounts.iter().filter(|m| !m.v2) {
            let ctrls: Vec<Ctrl> = Ctrl::ALL
                .into_iter()
                .filter(|c| m.controllers.iter().any(|mc| mc == c.name()))
                .collect();
            if ctrls.is_empty() {
                continue;
            }
            let Some((_, cg)) = cgs
                .iter()
                .find(|(cc, _)| cc.iter().any(|c| c == ctrls[0].name()))
            else {
                continue;
            };
            let own = fs_path(m, cg);
            let parent_path = match over {
                Some(o) => override_path(m, o),
                None => own.join("jobcell"),
            };
            hiers.push(Hier {
                ctrls,
                mount: m.mountpoint.clone(),
                own,
                parent_path,
                parent: Mutex::new(None),
            });
        }
        hiers
    }

    /// For an unprivileged caller, without creating anything: may it create job cgroups below
    /// the parent in every hierarchy a job uses? (A delegated subtree: the parent, or its first
    /// existing ancestor, is a directory the caller can write.) On v1 the launcher attaches
    /// the job by writing its pid to the job's own `cgroup.procs`, which the caller owns once it
    /// made the directory, so nothing else needs checking.
    pub(crate) fn check_delegated(
        mounts: &[Mount],
        cgs: &[(Vec<String>, String)],
        over: Option<&Path>,
    ) -> Result<(), CgroupError> {
        let hiers = Root::hierarchies(mounts, cgs, over);
        if !hiers.iter().any(|h| h.has(Ctrl::Memory)) {
            return Err(CgroupError::NoHierarchy(
                "the v1 memory controller is mounted but this process is not in it".into(),
            ));
        }
        // Every hierarchy a job may use (the default limits leave none out).
        let used = Ctrl::wanted(&Resources::default(), CgroupOptions::default());
        for h in hiers.iter().filter(|h| used.iter().any(|c| h.has(*c))) {
            crate::check_creatable(&h.parent_path, &h.mount)?;
        }
        Ok(())
    }

    pub(crate) fn detect(
        mounts: &[Mount],
        cgs: &[(Vec<String>, String)],
        over: Option<&Path>,
    ) -> Result<Root, CgroupError> {
        let root = Root {
            hiers: Root::hierarchies(mounts, cgs, over),
            overridden: over.is_some(),
        };
        if root.hier(Ctrl::Memory).is_none() {
            return Err(CgroupError::NoHierarchy(
                "the v1 memory controller is mounted but this process is not in it".into(),
            ));
        }
        // Parents of the hierarchies every job uses are made now, so create() only mkdirs leaves.
        for c in Ctrl::ALWAYS {
            if let Some(h) = root.hier(c) {
                h.parent()?;
            }
        }
        Ok(root)
    }

    fn hier(&self, c: Ctrl) -> Option<&Hier> {
        self.hiers.iter().find(|h| h.has(c))
    }

    /// The parent in every hierarchy a job with limits `l` gets a cgroup in, opened (and made)
    /// now, as descriptors of their own.
    pub(crate) fn parent_fds(
        &self,
        l: &Resources,
        o: CgroupOptions,
    ) -> Result<Vec<std::os::fd::OwnedFd>, CgroupError> {
        use std::os::fd::FromRawFd;
        let wanted = Ctrl::wanted(l, o);
        let mut out = Vec::with_capacity(self.hiers.len());
        for h in self
            .hiers
            .iter()
            .filter(|h| wanted.iter().any(|c| h.has(*c)))
        {
            let d = h.parent()?;
            // SAFETY: F_DUPFD_CLOEXEC takes integers only; `d` keeps its descriptor open across the
            // call.
            let fd = unsafe { libc::fcntl(d.raw(), libc::F_DUPFD_CLOEXEC, 0) };
            if fd < 0 {
                return Err(CgroupError::io(
                    "dup",
                    d.path(),
                    std::io::Error::last_os_error(),
                ));
            }
            // SAFETY: `fd` was just returned by a successful F_DUPFD_CLOEXEC; nothing else owns it.
            out.push(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        }
        Ok(out)
    }

    /// The parent in the memory hierarchy: every job gets a memory cgroup, so no job process
    /// stays in a sibling of the job cgroups there.
    pub(crate) fn memory_parent_path(&self) -> Option<PathBuf> {
        self.hiers
            .iter()
            .find(|h| h.has(Ctrl::Memory))
            .map(|h| h.parent_path.clone())
    }

    pub(crate) fn parent_paths(&self) -> Vec<PathBuf> {
        self.hiers
            .iter()
            .filter(|h| h.parent_path.exists())
            .map(|h| h.parent_path.clone())
            .collect()
    }

    pub(crate) fn create(
        &self,
        name: &str,
        l: &Resources,
        o: CgroupOptions,
        warnings: &mut Vec<String>,
    ) -> Result<Job, CgroupError> {
        let wanted = Ctrl::wanted(l, o);
        // Which hierarchies, in order; refuse limits whose controller is missing.
        let mut idx: Vec<usize> = Vec::new();
        for c in &wanted {
            match self.hiers.iter().position(|h| h.has(*c)) {
                Some(i) => {
                    if !idx.contains(&i) {
                        idx.push(i);
                    }
                }
                None => {
                    let required = match c {
                        Ctrl::Memory => l.memory.is_some() || l.swap.is_some(),
                        Ctrl::Cpu => l.cpus.is_some() || l.cpu_limit.is_some(),
                        Ctrl::Cpuset => true,
                        _ => false,
                    } || FILE_LIMITS
                        .iter()
                        .any(|f| (f.get)(l).is_some() && Ctrl::of_file(f.v1) == Some(*c));
                    if required {
                        return Err(CgroupError::unsupported(
                            c.name(),
                            "the v1 controller is not mounted or this process is not in it",
                        ));
                    }
                    warnings.push(format!(
                        "{} controller not mounted: not accounted/enforced",
                        c.name()
                    ));
                }
            }
        }
        // Validate the cpuset before anything is created.
        let cpus = match &l.cpuset {
            Some(want) => {
                let h = self.hier(Ctrl::Cpuset).expect("checked above");
                let allowed = match Dir::open(&h.parent_path) {
                    Ok(d) => d.read("cpuset.effective_cpus")?,
                    Err(_) => Dir::open(&h.own)?.read("cpuset.effective_cpus")?,
                };
                Some(cpuset::validate(want, &allowed).map_err(|reason| {
                    CgroupError::InvalidLimit {
                        field: "cpuset",
                        reason: format!("{want:?}: {reason}"),
                    }
                })?)
            }
            None => None,
        };

        let mut job = Job {
            name: name.to_string(),
            dirs: Vec::with_capacity(idx.len()),
        };
        let made = (|| {
            for &i in &idx {
                let h = &self.hiers[i];
                let mut parent = h.parent()?;
                let mut made = parent.mkdir_child(name);
                if matches!(&made, Err(e) if e.is_enoent()) {
                    // Our parent was removed (remove_parents_if_empty elsewhere): recreate.
                    h.reset();
                    parent = h.parent()?;
                    made = parent.mkdir_child(name);
                }
                match made? {
                    Some(d) => job.dirs.push(JobDir {
                        ctrls: h.ctrls.clone(),
                        parent,
                        dir: d,
                    }),
                    // Not ours: leave it alone.
                    None => return Err(CgroupError::Exists(parent.path().join(name))),
                }
            }
            job.apply(l, cpus.as_deref(), warnings)
        })();
        if let Err(e) = made {
            // Undo exactly what we made (Job has no Drop of its own).
            job.rmdir_quiet();
            return Err(e);
        }
        Ok(job)
    }

    pub(crate) fn remove_parents_if_empty(&self) -> Vec<PathBuf> {
        if self.overridden {
            return Vec::new();
        }
        let mut out = Vec::new();
        for h in &self.hiers {
            let mut g = h.parent.lock().unwrap_or_else(|e| e.into_inner());
            *g = None;
            if std::fs::remove_dir(&h.parent_path).is_ok() {
                out.push(h.parent_path.clone());
            }
        }
        out
    }

    pub(crate) fn open(&self, name: &str) -> Result<Job, CgroupError> {
        let mut job = Job {
            name: name.to_string(),
            dirs: Vec::new(),
        };
        for h in &self.hiers {
            let Some(parent) = h.parent_if_exists() else {
                continue;
            };
            match parent.open_child(name) {
                Ok(dir) => job.dirs.push(JobDir {
                    ctrls: h.ctrls.clone(),
                    parent,
                    dir,
                }),
                Err(e) if e.is_enoent() => {}
                Err(e) => return Err(e),
            }
        }
        if job.dir(Ctrl::Memory).is_none() {
            let path = self.hier(Ctrl::Memory).map(|h| h.parent_path.join(name));
            return Err(CgroupError::io(
                "open",
                &path.unwrap_or_else(|| PathBuf::from(name)),
                std::io::Error::from_raw_os_error(libc::ENOENT),
            ));
        }
        Ok(job)
    }

    /// Remove the stale job cgroup `n` from every hierarchy, if none of them lists a task.
    fn gc_one(&self, parents: &[Arc<Dir>], n: &str) -> Result<bool, CgroupError> {
        for p in parents {
            if let Ok(d) = p.open_child(n) {
                if !d.procs()?.is_empty() {
                    return Ok(false);
                }
            }
        }
        let mut ok = true;
        for p in parents {
            if let Err(e) = p.rmdir_child(n) {
                if e.raw_os_error() != Some(libc::ENOENT) {
                    ok = false;
                }
            }
        }
        Ok(ok)
    }

    pub(crate) fn gc_stale(&self) -> Result<Vec<String>, CgroupError> {
        let mut removed = Vec::new();
        // Decide per name once (memory hierarchy first): a job is stale only if its pid is gone
        // and it is empty in every hierarchy.
        let mut names: Vec<String> = Vec::new();
        let parents: Vec<Arc<Dir>> = self
            .hiers
            .iter()
            .filter_map(|h| h.parent_if_exists())
            .collect();
        for p in &parents {
            for n in p.subdirs()? {
                if job_name_pid(&n).is_some() && !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        for n in names {
            let pid = job_name_pid(&n).expect("filtered");
            if pid_alive(pid) {
                continue;
            }
            // The dead launcher's job was killed with it, but its last tasks may still be
            // exiting (a killed init is reaped by whoever inherits it): such a cgroup lists
            // them, or refuses rmdir with EBUSY, for a moment. Wait for that briefly; this runs
            // only where a launcher was SIGKILLed.
            for attempt in 0..GC_ATTEMPTS {
                if attempt > 0 {
                    std::thread::sleep(GC_RETRY);
                }
                if self.gc_one(&parents, &n)? {
                    removed.push(n);
                    break;
                }
            }
        }
        Ok(removed)
    }
}

struct JobDir {
    ctrls: Vec<Ctrl>,
    parent: Arc<Dir>,
    dir: Dir,
}

pub(crate) struct Job {
    name: String,
    dirs: Vec<JobDir>,
}

impl Job {
    fn dir(&self, c: Ctrl) -> Option<&Dir> {
        self.dirs
            .iter()
            .find(|d| d.ctrls.contains(&c))
            .map(|d| &d.dir)
    }

    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.dir.path().to_path_buf())
            .collect()
    }

    fn apply(
        &self,
        l: &Resources,
        cpus: Option<&str>,
        warnings: &mut Vec<String>,
    ) -> Result<(), CgroupError> {
        if let Some(m) = self.dir(Ctrl::Memory) {
            if let Some(bytes) = l.memory {
                match l.memory_policy {
                    MemoryPolicy::Hard => m.write("memory.limit_in_bytes", &bytes.to_string())?,
                    MemoryPolicy::Soft => m.write(SOFT_LIMIT, &bytes.to_string())?,
                    MemoryPolicy::None => {}
                }
            }
            if let Some(swap) = l.swap {
                if !m.has("memory.memsw.limit_in_bytes") {
                    warnings.push(
                        "swap limit cannot be enforced: no swap accounting (memory.memsw.* absent; boot with swapaccount=1)".into(),
                    );
                } else if let (Some(bytes), MemoryPolicy::Hard) = (l.memory, l.memory_policy) {
                    m.write(
                        "memory.memsw.limit_in_bytes",
                        &bytes.saturating_add(swap).to_string(),
                    )?;
                } else {
                    warnings.push(
                        "swap limit cannot be enforced: cgroup v1 limits memory+swap together, which needs a hard memory limit".into(),
                    );
                }
            }
        }
        if let Some(c) = self.dir(Ctrl::Cpu) {
            if let Some(n) = l.cpus {
                let shares = cpu_shares_v1(n);
                if shares != 1024 {
                    c.write("cpu.shares", &shares.to_string())?;
                }
            }
            if let Some(n) = l.cpu_limit {
                c.write("cpu.cfs_quota_us", &cpu_quota_us(n).to_string())?;
            }
        }
        // v1 has one soft limit: a row writing it too (memory_high) must not raise a soft
        // --memory, the size the job was given, so the lower of the two stays.
        let soft = (l.memory_policy == MemoryPolicy::Soft)
            .then_some(l.memory)
            .flatten();
        for f in FILE_LIMITS {
            let Some(mut n) = (f.get)(l) else { continue };
            if f.v1 == SOFT_LIMIT {
                n = soft.map_or(n, |s| s.min(n));
            }
            if let Some(d) = Ctrl::of_file(f.v1).and_then(|c| self.dir(c)) {
                d.write(f.v1, &n.to_string())?;
            }
        }
        if let (Some(b), Some(w)) = (self.dir(Ctrl::Blkio), l.io_weight) {
            if b.has("blkio.bfq.weight") {
                b.write("blkio.bfq.weight", &w.clamp(1, 1000).to_string())?;
            } else if b.has("blkio.weight") {
                b.write("blkio.weight", &w.clamp(10, 1000).to_string())?;
            } else {
                warnings.push("io weight cannot be enforced: no proportional io scheduler (blkio.bfq.weight/blkio.weight absent)".into());
            }
        }
        if let (Some(cs), Some(cpus)) = (self.dir(Ctrl::Cpuset), cpus) {
            let parent = &self
                .dirs
                .iter()
                .find(|d| d.ctrls.contains(&Ctrl::Cpuset))
                .expect("cpuset dir")
                .parent;
            cs.write("cpuset.cpus", cpus)?;
            cs.write("cpuset.mems", parent.read("cpuset.effective_mems")?.trim())?;
        }
        Ok(())
    }

    fn rmdir_quiet(&mut self) {
        for d in self.dirs.drain(..).rev() {
            let _ = d.parent.rmdir_child(&self.name);
        }
    }

    pub(crate) fn rmdir(&self) -> Result<(), CgroupError> {
        let mut first = None;
        for d in self.dirs.iter().rev() {
            if let Err(e) = rmdir_retry(&d.parent, &self.name) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Remove the cgroup in every hierarchy if it has no process; `Ok(false)` if it has.
    /// A cgroup's processes are in all its hierarchies, so a busy one fails on the first
    /// rmdir, before any directory is gone.
    pub(crate) fn rmdir_if_empty(&self) -> Result<bool, CgroupError> {
        for d in self.dirs.iter().rev() {
            if !crate::rmdir_once(&d.parent, &self.name)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(crate) fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        let s = pid.to_string();
        for d in &self.dirs {
            d.dir.write("cgroup.procs", &s)?;
        }
        Ok(())
    }

    /// Union of the pids in every hierarchy (they normally agree).
    pub(crate) fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = Vec::new();
        for d in &self.dirs {
            for p in d.dir.procs()? {
                if !all.contains(&p) {
                    all.push(p);
                }
            }
        }
        Ok(all)
    }

    fn freezer(&self) -> Result<&Dir, CgroupError> {
        self.dir(Ctrl::Freezer).ok_or_else(|| {
            CgroupError::unsupported("freeze", "the v1 freezer controller is not mounted")
        })
    }

    fn set_freezer(&self, state: &str, timeout: Duration) -> Result<(), CgroupError> {
        let f = self.freezer()?;
        f.write("freezer.state", state)?;
        let mut n = 0u32;
        let ok = wait_until(timeout, || {
            n += 1;
            let cur = f.read("freezer.state")?;
            if cur.trim() == state {
                return Ok(true);
            }
            // Re-request now and then: tasks forked mid-freeze may need another pass.
            if n.is_multiple_of(50) {
                f.write("freezer.state", state)?;
            }
            Ok(false)
        })?;
        if ok {
            Ok(())
        } else {
            if state == "FROZEN" {
                let _ = f.write("freezer.state", "THAWED");
            }
            Err(CgroupError::Timeout {
                what: format!(
                    "waiting for {} to become {state}",
                    f.path().join("freezer.state").display()
                ),
                secs: timeout.as_secs_f64(),
            })
        }
    }

    pub(crate) fn is_frozen(&self) -> Result<bool, CgroupError> {
        Ok(self.freezer()?.read("freezer.state")?.trim() == "FROZEN")
    }

    pub(crate) fn freeze(&self) -> Result<(), CgroupError> {
        self.set_freezer("FROZEN", SETTLE_TIMEOUT)
    }

    pub(crate) fn thaw(&self) -> Result<(), CgroupError> {
        self.set_freezer("THAWED", SETTLE_TIMEOUT)
    }

    /// Freeze (so nothing can fork), SIGKILL every pid, thaw (so the kills are delivered),
    /// repeat until empty. Without a freezer: kill-and-rescan only.
    pub(crate) fn kill(&self) -> Result<(), CgroupError> {
        let has_freezer = self.dir(Ctrl::Freezer).is_some();
        let ok = wait_until(SETTLE_TIMEOUT, || {
            if has_freezer {
                // A freeze that cannot settle (task in D state) must not stop the kill: the
                // kill-and-rescan loop still converges, only without the fork-race guarantee.
                let _ = self.set_freezer("FROZEN", Duration::from_secs(1));
            }
            let pids = self.procs()?;
            if !pids.is_empty() {
                kill_pids(&pids);
            }
            if has_freezer {
                self.freezer()?.write("freezer.state", "THAWED")?;
            }
            if pids.is_empty() {
                return Ok(true);
            }
            // Give the killed tasks a moment to exit before rescanning.
            wait_until(Duration::from_millis(50), || Ok(self.procs()?.is_empty()))
        })?;
        if ok {
            Ok(())
        } else {
            Err(CgroupError::Timeout {
                what: format!("killing the processes of v1 cgroup {}", self.name),
                secs: SETTLE_TIMEOUT.as_secs_f64(),
            })
        }
    }

    pub(crate) fn sample(&self) -> Result<Sample, CgroupError> {
        let mut s = Sample::default();
        if let Some(m) = self.dir(Ctrl::Memory) {
            s.memory = single(&m.read("memory.usage_in_bytes")?).unwrap_or(0);
            let st = m.read("memory.stat")?;
            s.anon_shmem =
                keyed(&st, "total_rss").unwrap_or(0) + keyed(&st, "total_shmem").unwrap_or(0);
            s.swap = keyed(&st, "total_swap").unwrap_or(0);
        }
        if let Some(p) = self.dir(Ctrl::Pids) {
            s.pids = single(&p.read("pids.current")?).unwrap_or(0);
        }
        Ok(s)
    }

    pub(crate) fn oom_kills(&self) -> Result<u64, CgroupError> {
        match self.dir(Ctrl::Memory) {
            Some(m) => Ok(crate::events::oom_kills_from(
                &m.read("memory.oom_control")?,
            )),
            None => Ok(0),
        }
    }

    /// The usage, and a [`sample`](Self::sample) taken from the same reads (the final figures
    /// are read on a job's critical path: no file twice).
    pub(crate) fn stats(&self) -> Result<(Usage, Sample), CgroupError> {
        let mut u = Usage::default();
        let mut s = Sample::default();
        if let Some(a) = self.dir(Ctrl::Cpuacct) {
            match (
                a.read_opt("cpuacct.usage_user")?,
                a.read_opt("cpuacct.usage_sys")?,
            ) {
                (Some(us), Some(sy)) => {
                    u.cpu_user_us = single(&us).unwrap_or(0) / 1000;
                    u.cpu_system_us = single(&sy).unwrap_or(0) / 1000;
                }
                _ => {
                    // Older kernels: cpuacct.stat in USER_HZ ticks.
                    let st = a.read("cpuacct.stat")?;
                    // SAFETY: sysconf has no preconditions.
                    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
                    u.cpu_user_us = keyed(&st, "user").unwrap_or(0) * 1_000_000 / hz;
                    u.cpu_system_us = keyed(&st, "system").unwrap_or(0) * 1_000_000 / hz;
                }
            }
        }
        if let Some(m) = self.dir(Ctrl::Memory) {
            u.memory_peak = single(&m.read("memory.max_usage_in_bytes")?).unwrap_or(0);
            u.memory_peak_source = Source::Kernel;
            u.memory_current = single(&m.read("memory.usage_in_bytes")?).unwrap_or(0);
            let st = m.read("memory.stat")?;
            u.memory_anon = keyed(&st, "total_rss").unwrap_or(0);
            u.memory_shmem = keyed(&st, "total_shmem").unwrap_or(0);
            s.memory = u.memory_current;
            s.anon_shmem = u.memory_anon + u.memory_shmem;
            s.swap = keyed(&st, "total_swap").unwrap_or(0);
            u.memory_file = keyed(&st, "total_cache")
                .unwrap_or(0)
                .saturating_sub(u.memory_shmem);
            if m.has("memory.memsw.usage_in_bytes") {
                u.swap_peak = Some(keyed(&st, "total_swap").unwrap_or(0));
                u.swap_peak_source = Source::Sampled;
            }
            u.oom_kills = self.oom_kills()?;
        }
        if let Some(p) = self.dir(Ctrl::Pids) {
            match p.read_opt("pids.peak")? {
                Some(s) => {
                    u.pids_peak = single(&s).unwrap_or(0);
                    u.pids_peak_source = Source::Kernel;
                }
                None => {
                    u.pids_peak = single(&p.read("pids.current")?).unwrap_or(0);
                    u.pids_peak_source = Source::Sampled;
                    s.pids = u.pids_peak;
                }
            }
        }
        if let Some(b) = self.dir(Ctrl::Blkio) {
            if let Some(s) = b.read_opt("blkio.throttle.io_service_bytes_recursive")? {
                let (r, w) = parse_blkio(&s);
                u.io_read_bytes = Some(r);
                u.io_write_bytes = Some(w);
            }
        }
        Ok((u, s))
    }

    pub(crate) fn oom_watch(&self) -> Result<OomWatch, CgroupError> {
        let m = self.dir(Ctrl::Memory).ok_or_else(|| {
            CgroupError::unsupported("OOM watch", "the v1 memory controller is not mounted")
        })?;
        OomWatch::v1(m)
    }
}

/// Sum "MAJ:MIN Read N" / "MAJ:MIN Write N" lines.
fn parse_blkio(s: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for l in s.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 3 {
            let n: u64 = f[2].parse().unwrap_or(0);
            match f[1] {
                "Read" => r += n,
                "Write" => w += n,
                _ => {}
            }
        }
    }
    (r, w)
}

#[cfg(test)]
mod tests {
    #[test]
    fn blkio() {
        let (r, w) = super::parse_blkio(
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 1\n8:0 Total 12288\n8:16 Read 1\nTotal 12289\n",
        );
        assert_eq!((r, w), (4097, 8192));
    }
}
