//! `jobcell_spank.so`: a Slurm SPANK plugin that runs every task of every job through jobcell.
//!
//! One line in `plugstack.conf` enables it:
//! ```text
//! required /usr/local/lib/slurm/jobcell_spank.so jobcell=/usr/local/bin/jobcell scratch=/var/lib/jobcell/slurm
//! ```
//! How it works (docs/slurm.md has the reasoning and the limits):
//! - `slurm_spank_init` (srun, sbatch, salloc, slurmstepd): reads the plugstack arguments and
//!   registers `--jobcell-image=NAME`.
//! - `slurm_spank_task_init_privileged` (root, in the task before it becomes the user): makes
//!   the per-job dir `<scratch>/slurm-<jobid>` owned by the job's user (shared by all its
//!   tasks and steps on the node).
//! - `slurm_spank_task_init` (the user, in the task, already in the step's cgroup, right
//!   before slurmstepd's execve): replaces `argv[0]` with the jobcell binary and passes the
//!   original `argv[0]` and the settings in `JOBCELL_SPANK_*` variables. Slurm then execs
//!   jobcell in place of the task (same pid), which runs the task rootless in new
//!   user/pid/mount/ipc/uts namespaces with private dirs from the per-job dir.
//! - `slurm_spank_job_epilog` (root, slurmd, at the job's end): removes the per-job dir without
//!   following symlinks or crossing mounts.
//!
//! The SPANK glue is compiled only when Slurm's headers were found at build time (`have_slurm`);
//! this module holds the parts that do not need Slurm, tested on their own.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use thiserror::Error;

#[cfg(all(have_slurm, not(test)))]
mod plugin;

pub const DEFAULT_JOBCELL: &str = "/usr/local/bin/jobcell";
pub const DEFAULT_SCRATCH: &str = "/var/lib/jobcell/slurm";
pub const DEFAULT_PRIVATE: [&str; 2] = ["/tmp", "/var/tmp"];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("plugstack argument '{0}' is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("unknown plugstack argument '{0}' (known: jobcell, scratch, image, private, binds, config, state_dir, images_dir)")]
    Unknown(String),
    #[error("plugstack argument {key}={value}: must be an absolute path")]
    NotAbsolute { key: String, value: String },
    #[error("image name '{0}' may only contain letters, digits, '.', '_' and '-'")]
    BadImage(String),
}

/// The site's settings: the plugin's arguments in plugstack.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The jobcell binary the tasks are exec'd through.
    pub jobcell: PathBuf,
    /// Where per-job dirs are made (root-owned, not writable by others).
    pub scratch: PathBuf,
    /// The image tasks run in unless the user asks otherwise (`--jobcell-image=host`: none).
    pub image: Option<String>,
    /// Dirs made private to the job (bound from the per-job dir).
    pub private: Vec<PathBuf>,
    /// Host paths (`SRC[:DST]`) bound into image views, e.g. shared filesystems like /home.
    pub binds: Vec<String>,
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub images_dir: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            jobcell: DEFAULT_JOBCELL.into(),
            scratch: DEFAULT_SCRATCH.into(),
            image: None,
            private: DEFAULT_PRIVATE.iter().map(PathBuf::from).collect(),
            binds: Vec::new(),
            config: None,
            state_dir: None,
            images_dir: None,
        }
    }
}

fn abs(key: &str, value: &str) -> Result<PathBuf, SettingsError> {
    if !value.starts_with('/') {
        return Err(SettingsError::NotAbsolute {
            key: key.into(),
            value: value.into(),
        });
    }
    Ok(PathBuf::from(value))
}

fn csv(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty())
}

/// Image names as the registry accepts them; also keeps the value safe to pass in argv/env.
pub fn check_image_name(name: &str) -> Result<(), SettingsError> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(SettingsError::BadImage(name.into()));
    }
    Ok(())
}

/// The image a task runs in: the user's `--jobcell-image`, else the site default; `host` or
/// `none` mean no image.
pub fn effective_image(user: Option<&str>, site: Option<&str>) -> Option<String> {
    match user.or(site) {
        None | Some("host") | Some("none") | Some("") => None,
        Some(n) => Some(n.to_string()),
    }
}

impl Settings {
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Settings, SettingsError> {
        let mut s = Settings::default();
        for a in args {
            let a = a.as_ref();
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| SettingsError::NotKeyValue(a.into()))?;
            match k {
                "jobcell" => s.jobcell = abs(k, v)?,
                "scratch" => s.scratch = abs(k, v)?,
                "image" => {
                    s.image = match v {
                        "" | "host" | "none" => None,
                        n => {
                            check_image_name(n)?;
                            Some(n.into())
                        }
                    }
                }
                "private" => {
                    s.private = if v == "none" {
                        Vec::new()
                    } else {
                        csv(v).map(|p| abs(k, p)).collect::<Result<_, _>>()?
                    }
                }
                "binds" => {
                    for b in csv(v) {
                        abs(k, b.split(':').next().unwrap_or(""))?;
                    }
                    s.binds = csv(v).map(String::from).collect();
                }
                "config" => s.config = Some(abs(k, v)?),
                "state_dir" => s.state_dir = Some(abs(k, v)?),
                "images_dir" => s.images_dir = Some(abs(k, v)?),
                _ => return Err(SettingsError::Unknown(a.into())),
            }
        }
        Ok(s)
    }

    /// The `JOBCELL_SPANK_*` variables (without the prefix) the task's jobcell reads. Every
    /// key is always set, so nothing a user exported can stand in for a site setting.
    pub fn task_env(
        &self,
        scratch: &Path,
        image: Option<&str>,
        batch: bool,
    ) -> Vec<(String, String)> {
        let p = |o: &Option<PathBuf>| {
            o.as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        vec![
            ("SCRATCH".into(), scratch.to_string_lossy().into_owned()),
            (
                "PRIVATE".into(),
                self.private
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("IMAGE".into(), image.unwrap_or("").into()),
            ("BINDS".into(), self.binds.join(",")),
            ("CONFIG".into(), p(&self.config)),
            ("STATE_DIR".into(), p(&self.state_dir)),
            ("IMAGES_DIR".into(), p(&self.images_dir)),
            ("BATCH".into(), if batch { "1" } else { "0" }.into()),
        ]
    }
}

#[derive(Debug, Error)]
pub enum JobDirError {
    #[error("scratch base {path}: {source}")]
    Base { path: PathBuf, source: io::Error },
    #[error("scratch base {0} must be a directory owned by root and not writable by others")]
    BaseUnsafe(PathBuf),
    #[error("per-job dir {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("per-job dir {path} exists but belongs to uid {found}, not the job's uid {want}")]
    WrongOwner {
        path: PathBuf,
        found: u32,
        want: u32,
    },
    #[error(transparent)]
    Remove(#[from] jobcell_sandbox::scratch::ScratchError),
}

/// The per-job dir's name under the scratch base.
pub fn job_dir_name(jobid: u32) -> String {
    format!("slurm-{jobid}")
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain integers, for which all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a writable stat that outlives the call; a bad `fd` only makes the call fail.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Open the scratch base, creating it (root, 0755) if missing. A base a user could write to
/// would let them plant `slurm-<jobid>` for someone else's job: refused.
fn open_base(base: &Path, create: bool) -> Result<OwnedFd, JobDirError> {
    let err = |source| JobDirError::Base {
        path: base.to_path_buf(),
        source,
    };
    if create {
        let mut cur = PathBuf::from("/");
        for c in base.components().skip(1) {
            cur.push(c);
            let p = cpath(&cur).map_err(err)?;
            // SAFETY: `p` is NUL-terminated and outlives the call.
            if unsafe { libc::mkdir(p.as_ptr(), 0o755) } < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(err(e));
                }
            }
        }
    }
    let fd = jobcell_sandbox::scratch::open_dir_at(libc::AT_FDCWD, &cpath(base).map_err(err)?)
        .map_err(err)?;
    let st = fstat(fd.as_raw_fd()).map_err(err)?;
    if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
        return Err(JobDirError::BaseUnsafe(base.to_path_buf()));
    }
    Ok(fd)
}

/// Make (or reuse) `<base>/slurm-<jobid>`, mode 0700, owned by the job's user. Called as root
/// by every task of the job on this node; concurrent calls are fine.
pub fn prepare_job_dir(
    base: &Path,
    jobid: u32,
    uid: u32,
    gid: u32,
) -> Result<PathBuf, JobDirError> {
    let base_fd = open_base(base, true)?;
    let path = base.join(job_dir_name(jobid));
    let name = CString::new(job_dir_name(jobid)).expect("no NUL");
    let err = |source| JobDirError::Dir {
        path: path.clone(),
        source,
    };
    // SAFETY: `name` is NUL-terminated and outlives the call; `base_fd` is open.
    if unsafe { libc::mkdirat(base_fd.as_raw_fd(), name.as_ptr(), 0o700) } == 0 {
        let fd = jobcell_sandbox::scratch::open_dir_at(base_fd.as_raw_fd(), &name).map_err(err)?;
        // SAFETY: plain integer arguments; `fd` is open.
        if unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) } < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: `name` is NUL-terminated and outlives the call; `base_fd` is open.
            unsafe { libc::unlinkat(base_fd.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) };
            return Err(err(e));
        }
        return Ok(path);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EEXIST) {
        return Err(err(e));
    }
    // Another task of the job made it (or a job with a reused id left it: refuse a stranger's).
    let fd = jobcell_sandbox::scratch::open_dir_at(base_fd.as_raw_fd(), &name).map_err(err)?;
    let st = fstat(fd.as_raw_fd()).map_err(err)?;
    if st.st_uid != uid {
        return Err(JobDirError::WrongOwner {
            path,
            found: st.st_uid,
            want: uid,
        });
    }
    Ok(path)
}

/// Remove `<base>/slurm-<jobid>` and everything in it, never following a symlink or entering
/// another mount. A missing dir (the job never ran a task here) is fine.
pub fn remove_job_dir(base: &Path, jobid: u32) -> Result<(), JobDirError> {
    let base_fd = match open_base(base, false) {
        Err(JobDirError::Base { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
            return Ok(())
        }
        r => r?,
    };
    let name = CString::new(job_dir_name(jobid)).expect("no NUL");
    jobcell_sandbox::scratch::remove_tree_at(
        base_fd.as_raw_fd(),
        &name,
        &base.join(job_dir_name(jobid)),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_every_key() {
        assert_eq!(Settings::parse::<&str>(&[]).unwrap(), Settings::default());
        let s = Settings::parse(&[
            "jobcell=/opt/jc/bin/jobcell",
            "scratch=/local/jobcell",
            "image=debian-12",
            "private=/tmp,/var/tmp,/dev/shm",
            "binds=/home,/scratch:/data",
            "config=/etc/jobcell/config.toml",
            "state_dir=/var/lib/jobcell",
            "images_dir=/var/lib/jobcell/images",
        ])
        .unwrap();
        assert_eq!(s.jobcell, Path::new("/opt/jc/bin/jobcell"));
        assert_eq!(s.scratch, Path::new("/local/jobcell"));
        assert_eq!(s.image.as_deref(), Some("debian-12"));
        assert_eq!(s.private.len(), 3);
        assert_eq!(s.binds, vec!["/home", "/scratch:/data"]);
        assert!(Settings::parse(&["private=none"])
            .unwrap()
            .private
            .is_empty());
        assert_eq!(Settings::parse(&["image=host"]).unwrap().image, None);
    }

    #[test]
    fn bad_arguments_name_the_culprit() {
        let e = Settings::parse(&["scratch=relative/dir"]).unwrap_err();
        assert!(e.to_string().contains("scratch=relative/dir"), "{e}");
        let e = Settings::parse(&["colour=blue"]).unwrap_err();
        assert!(e.to_string().contains("colour=blue"), "{e}");
        let e = Settings::parse(&["jobcell"]).unwrap_err();
        assert_eq!(e, SettingsError::NotKeyValue("jobcell".into()));
        let e = Settings::parse(&["image=../../etc"]).unwrap_err();
        assert!(e.to_string().contains("../../etc"), "{e}");
        assert!(Settings::parse(&["private=/tmp,tmp2"]).is_err());
        assert!(Settings::parse(&["binds=home"]).is_err());
    }

    #[test]
    fn image_choice() {
        assert_eq!(effective_image(None, None), None);
        assert_eq!(effective_image(None, Some("deb")).as_deref(), Some("deb"));
        assert_eq!(
            effective_image(Some("alp"), Some("deb")).as_deref(),
            Some("alp")
        );
        assert_eq!(effective_image(Some("host"), Some("deb")), None);
        assert!(check_image_name("debian-12.2_x").is_ok());
        assert!(check_image_name("a b").is_err());
        assert!(check_image_name("").is_err());
    }

    #[test]
    fn task_env_sets_every_key() {
        let s = Settings::default();
        let env = s.task_env(Path::new("/b/slurm-7"), None, true);
        let get = |k: &str| env.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        assert_eq!(get("SCRATCH"), Some("/b/slurm-7"));
        assert_eq!(get("PRIVATE"), Some("/tmp,/var/tmp"));
        assert_eq!(get("IMAGE"), Some(""));
        assert_eq!(get("BATCH"), Some("1"));
        assert_eq!(get("CONFIG"), Some(""));
    }

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: needs root (chown, a root-owned scratch base)");
            return false;
        }
        true
    }

    fn tempdir() -> PathBuf {
        let parent = std::env::temp_dir();
        let t = CString::new(format!("{}/jobcell-spank-XXXXXX", parent.display())).unwrap();
        let raw = t.into_raw();
        // SAFETY: `raw` is a NUL-terminated template from CString::into_raw that mkdtemp edits in
        // place without changing its length.
        assert!(!unsafe { libc::mkdtemp(raw) }.is_null());
        // SAFETY: `raw` came from CString::into_raw above and is taken back exactly once; mkdtemp
        // kept its length and NUL.
        PathBuf::from(unsafe { CString::from_raw(raw) }.into_string().unwrap())
    }

    #[test]
    fn job_dir_lifecycle() {
        if !root() {
            return;
        }
        let t = tempdir();
        let base = t.join("base");
        let p = prepare_job_dir(&base, 42, 65534, 65534).unwrap();
        assert_eq!(p, base.join("slurm-42"));
        let st = std::fs::metadata(&p).unwrap();
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        assert_eq!((st.uid(), st.mode() & 0o7777), (65534, 0o700));
        // A second task of the same job reuses it; another uid is refused.
        assert_eq!(prepare_job_dir(&base, 42, 65534, 65534).unwrap(), p);
        let e = prepare_job_dir(&base, 42, 1234, 1234).unwrap_err();
        assert!(
            matches!(e, JobDirError::WrongOwner { found: 65534, .. }),
            "{e}"
        );
        // The job leaves a symlink to a file outside: removal must not follow it.
        let outside = t.join("outside");
        std::fs::write(&outside, "keep me").unwrap();
        std::fs::create_dir(p.join("tmp")).unwrap();
        std::os::unix::fs::symlink(&outside, p.join("tmp/link")).unwrap();
        std::os::unix::fs::symlink(&t, p.join("dirlink")).unwrap();
        remove_job_dir(&base, 42).unwrap();
        assert!(!p.exists());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me");
        // Removing a dir that was never made is fine.
        remove_job_dir(&base, 43).unwrap();
        // A base others can write to is refused.
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = prepare_job_dir(&base, 44, 65534, 65534).unwrap_err();
        assert!(matches!(e, JobDirError::BaseUnsafe(_)), "{e}");
        std::fs::remove_dir_all(&t).unwrap();
    }
}
