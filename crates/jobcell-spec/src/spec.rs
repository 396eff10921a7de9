use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::resources::{ResourceError, Resources};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("no command given (usage: jobcell run [OPTIONS] -- COMMAND [ARGS...])")]
    NoCommand,
    #[error("{what} '{path}' must be an absolute path")]
    NotAbsolute { what: &'static str, path: String },
    #[error("{what} '{path}' must not contain '..'")]
    DotDot { what: &'static str, path: String },
    #[error("{what} '{path}' contains a NUL byte")]
    Nul { what: &'static str, path: String },
    #[error("--env '{0}' is not of the form KEY=VALUE with a non-empty KEY")]
    BadEnv(String),
    #[error("--user '{0}' is empty")]
    EmptyUser(String),
    #[error(transparent)]
    Resources(#[from] ResourceError),
    #[error("private dir '{0}' is listed twice")]
    DuplicatePrivate(String),
    #[error("--private {0}: a job cannot get a private {0}, it needs the system's own")]
    SystemPrivate(String),
}

/// Who the job runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserSpec {
    Name(String),
    Uid(u32),
}

impl UserSpec {
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        if s.is_empty() {
            return Err(SpecError::EmptyUser(s.into()));
        }
        Ok(match s.parse::<u32>() {
            Ok(uid) => UserSpec::Uid(uid),
            Err(_) => UserSpec::Name(s.to_string()),
        })
    }
}

impl std::fmt::Display for UserSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserSpec::Name(n) => f.write_str(n),
            UserSpec::Uid(u) => write!(f, "{u}"),
        }
    }
}

/// A host path made visible inside the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub readonly: bool,
}

/// What the job's /dev is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DevMode {
    /// A small tmpfs with null, zero, full, random, urandom, tty, pts, shm.
    #[default]
    Minimal,
    /// The host's /dev (for GPUs and other devices a site trusts jobs with).
    Host,
}

/// The job's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// The host's network namespace.
    #[default]
    Host,
    /// A private network namespace with only a loopback interface.
    None,
}

/// Everything the launcher needs to run one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub argv: Vec<String>,
    /// The job's whole environment beyond what jobcell sets (PATH, HOME, TMPDIR, ...).
    pub env: Vec<(String, String)>,
    pub user: UserSpec,
    pub scratch_base: PathBuf,
    pub keep_scratch: bool,
    /// Directories bind-mounted from subdirectories of scratch (MOUNT_UNDER_SCRATCH).
    pub private_dirs: Vec<PathBuf>,
    pub mounts: Vec<MountSpec>,
    pub grace: Duration,
    pub image: Option<String>,
    /// Where the job starts (in its own view); default: its scratch dir.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    pub dev: DevMode,
    pub net: NetMode,
    pub resources: Resources,
}

pub const DEFAULT_PRIVATE_DIRS: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

impl JobSpec {
    pub fn new(argv: Vec<String>) -> Self {
        JobSpec {
            argv,
            env: Vec::new(),
            user: UserSpec::Name("nobody".into()),
            scratch_base: PathBuf::from("/var/lib/jobcell/scratch"),
            keep_scratch: false,
            private_dirs: DEFAULT_PRIVATE_DIRS.iter().map(PathBuf::from).collect(),
            mounts: Vec::new(),
            grace: Duration::from_secs(10),
            image: None,
            workdir: None,
            dev: DevMode::Minimal,
            net: NetMode::Host,
            resources: Resources::default(),
        }
    }

    /// Check everything that can be checked without touching the system, and normalise paths.
    pub fn validate(&mut self) -> Result<(), SpecError> {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err(SpecError::NoCommand);
        }
        self.validate_rest()
    }

    /// `validate` for a request to the daemon: a job in an image may leave the command out,
    /// since the daemon takes it from the image's Entrypoint + Cmd (and refuses an image that
    /// names none).
    pub fn validate_request(&mut self) -> Result<(), SpecError> {
        if self.argv.is_empty() && self.image.is_some() {
            return self.validate_rest();
        }
        self.validate()
    }

    fn validate_rest(&mut self) -> Result<(), SpecError> {
        self.scratch_base = clean_abs_path("--scratch-base", &self.scratch_base)?;
        if let Some(w) = &self.workdir {
            self.workdir = Some(clean_abs_path("workdir", w)?);
        }
        let mut seen = Vec::new();
        for d in &mut self.private_dirs {
            *d = clean_abs_path("private dir", d)?;
            // Bound over these the job would lose its root, /proc, /sys or /dev.
            let sys = d == Path::new("/")
                || d == Path::new("/dev")
                || d.starts_with("/proc")
                || d.starts_with("/sys");
            if sys {
                return Err(SpecError::SystemPrivate(d.display().to_string()));
            }
            if seen.contains(d) {
                return Err(SpecError::DuplicatePrivate(d.display().to_string()));
            }
            seen.push(d.clone());
        }
        for m in &mut self.mounts {
            m.src = clean_abs_path("bind source", &m.src)?;
            m.dst = clean_abs_path("bind destination", &m.dst)?;
        }
        for (k, _) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(SpecError::BadEnv(k.clone()));
            }
        }
        self.resources.validate()?;
        Ok(())
    }
}

/// An absolute path with `.` and repeated slashes removed; `..` is refused rather than resolved,
/// because resolving it lexically could differ from what the kernel would do through a symlink.
pub fn clean_abs_path(what: &'static str, p: &Path) -> Result<PathBuf, SpecError> {
    let s = p.to_string_lossy();
    if s.contains('\0') {
        return Err(SpecError::Nul {
            what,
            path: s.into(),
        });
    }
    if !p.is_absolute() {
        return Err(SpecError::NotAbsolute {
            what,
            path: s.into(),
        });
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(SpecError::DotDot {
                    what,
                    path: s.into(),
                })
            }
        }
    }
    Ok(out)
}

/// `SRC[:DST]` as given to `--bind` / `--ro-bind`.
pub fn parse_bind(s: &str, readonly: bool) -> Result<MountSpec, SpecError> {
    let what = if readonly { "--ro-bind" } else { "--bind" };
    let (src, dst) = match s.split_once(':') {
        Some((a, b)) => (a, b),
        None => (s, s),
    };
    Ok(MountSpec {
        src: clean_abs_path(what, Path::new(src))?,
        dst: clean_abs_path(what, Path::new(dst))?,
        readonly,
    })
}

/// `KEY=VALUE` as given to `--env`.
pub fn parse_env(s: &str) -> Result<(String, String), SpecError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(SpecError::BadEnv(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_and_dotdot_refused() {
        assert_eq!(
            clean_abs_path("x", Path::new("//var/./tmp/")).unwrap(),
            PathBuf::from("/var/tmp")
        );
        assert!(matches!(
            clean_abs_path("x", Path::new("/var/../etc")),
            Err(SpecError::DotDot { .. })
        ));
        assert!(matches!(
            clean_abs_path("x", Path::new("tmp")),
            Err(SpecError::NotAbsolute { .. })
        ));
    }

    #[test]
    fn binds() {
        let m = parse_bind("/data:/mnt/data", true).unwrap();
        assert_eq!(m.src, PathBuf::from("/data"));
        assert_eq!(m.dst, PathBuf::from("/mnt/data"));
        assert!(m.readonly);
        assert_eq!(
            parse_bind("/cvmfs", false).unwrap().dst,
            PathBuf::from("/cvmfs")
        );
        let e = parse_bind("data:/x", true).unwrap_err().to_string();
        assert!(e.contains("--ro-bind") && e.contains("'data'"), "{e}");
    }

    #[test]
    fn env() {
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("NOEQUALS").is_err());
    }

    #[test]
    fn validate_catches_bad_values() {
        assert_eq!(JobSpec::new(vec![]).validate(), Err(SpecError::NoCommand));
        let mut s = JobSpec::new(vec!["true".into()]);
        s.private_dirs.push("/tmp/".into());
        assert!(matches!(s.validate(), Err(SpecError::DuplicatePrivate(_))));
        for d in ["/", "/proc", "/proc/sys", "/sys", "/dev"] {
            let mut s = JobSpec::new(vec!["true".into()]);
            s.private_dirs = vec![d.into()];
            assert!(
                matches!(s.validate(), Err(SpecError::SystemPrivate(_))),
                "{d}"
            );
        }
        let mut s = JobSpec::new(vec!["true".into()]);
        s.resources.cpus = Some(0.0);
        assert!(matches!(
            s.validate(),
            Err(SpecError::Resources(ResourceError::BadCpus("cpus", _)))
        ));
        let mut s = JobSpec::new(vec!["true".into()]);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn users() {
        assert_eq!(UserSpec::parse("1000").unwrap(), UserSpec::Uid(1000));
        assert_eq!(
            UserSpec::parse("alice").unwrap(),
            UserSpec::Name("alice".into())
        );
        assert!(UserSpec::parse("").is_err());
    }
}
