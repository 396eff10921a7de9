//! Loading the node config: `--config FILE`, else /etc/jobcell/config.toml if present, else the
//! embedded defaults.

use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use jobcell_spec::{Config, DEFAULT_CONFIG_PATH};

pub fn load(explicit: Option<&Path>) -> anyhow::Result<Config> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => PathBuf::from(DEFAULT_CONFIG_PATH),
        None => return Ok(Config::default()),
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("config {}", path.display()))?;
    Ok(Config::parse(&text, &path.to_string_lossy())?)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Where scratch dirs go: the config, else /var/lib/jobcell/scratch as root; rootless, a
/// private dir of the caller's under the batch system's or the user's temporary dir.
pub fn default_scratch_base(cfg: &Config) -> anyhow::Result<PathBuf> {
    if let Some(p) = &cfg.paths.scratch_base {
        return Ok(p.clone());
    }
    if is_root() {
        return Ok(cfg
            .paths
            .state_dir
            .as_ref()
            .map(|s| s.join("scratch"))
            .unwrap_or_else(|| PathBuf::from("/var/lib/jobcell/scratch")));
    }
    let tmp = ["SLURM_TMPDIR", "TMPDIR"]
        .iter()
        .find_map(|k| std::env::var_os(k).filter(|v| Path::new(v).is_absolute()))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    // SAFETY: getuid cannot fail and touches no memory.
    rootless_scratch_base(&tmp, unsafe { libc::getuid() })
}

/// `tmp/jobcell-UID` when it is the caller's own private dir (made if missing). In a shared
/// `tmp` anyone can make that name first (a dir of theirs, or a symlink) and so deny the
/// caller its jobs or catch its files; then another private dir of the caller's is used:
/// `$XDG_RUNTIME_DIR/jobcell`, else a `tmp/jobcell-UID.XXXXXX` made by mkdtemp and found again
/// by later runs, so that the start-up collection of dead launchers' dirs still covers it.
fn rootless_scratch_base(tmp: &Path, uid: u32) -> anyhow::Result<PathBuf> {
    let primary = tmp.join(format!("jobcell-{uid}"));
    let refused = match private_dir(&primary, uid, true) {
        Ok(()) => return Ok(primary),
        Err(e) => e,
    };
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if run.is_absolute() && private_dir(&run, uid, false).is_ok() {
            let p = run.join("jobcell");
            if private_dir(&p, uid, true).is_ok() {
                return Ok(p);
            }
        }
    }
    let prefix = format!("jobcell-{uid}.");
    if let Ok(rd) = std::fs::read_dir(tmp) {
        for e in rd.flatten() {
            let own = e.file_name().to_string_lossy().starts_with(&prefix)
                && private_dir(&e.path(), uid, false).is_ok();
            if own {
                return Ok(e.path());
            }
        }
    }
    let template = std::ffi::CString::new(format!("{}XXXXXX", tmp.join(&prefix).display()))
        .map_err(|_| anyhow::anyhow!("scratch base {}: contains a NUL byte", tmp.display()))?;
    let mut buf = template.into_bytes_with_nul();
    // SAFETY: buf is a NUL-terminated template mkdtemp may rewrite in place; it outlives the call.
    if unsafe { libc::mkdtemp(buf.as_mut_ptr().cast()) }.is_null() {
        anyhow::bail!(
            "no private scratch base: {} {refused}, and making a private dir in {} failed: {}",
            primary.display(),
            tmp.display(),
            std::io::Error::last_os_error()
        );
    }
    buf.pop();
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

/// `p` is a real directory (not a symlink) owned by `uid` that nobody else may write; made
/// (0700) when missing and `create`.
fn private_dir(p: &Path, uid: u32, create: bool) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let md = match std::fs::symlink_metadata(p) {
        Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::DirBuilder::new().mode(0o700).create(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("cannot be made ({e})")),
            }
            std::fs::symlink_metadata(p).map_err(|e| e.to_string())?
        }
        r => r.map_err(|e| e.to_string())?,
    };
    if md.file_type().is_symlink() {
        return Err("is a symlink".into());
    }
    if !md.is_dir() {
        return Err("is not a directory".into());
    }
    if md.uid() != uid {
        return Err(format!("belongs to uid {}", md.uid()));
    }
    if md.mode() & 0o022 != 0 {
        return Err("is writable by others".into());
    }
    Ok(())
}

/// The image store's state and images dirs: flags, else `[paths]`, else the node defaults.
pub fn store_dirs(
    cfg: &Config,
    state_dir: Option<&Path>,
    images_dir: Option<&Path>,
) -> (PathBuf, PathBuf) {
    let state = state_dir
        .map(Path::to_path_buf)
        .or_else(|| cfg.paths.state_dir.clone())
        .unwrap_or_else(|| PathBuf::from("/var/lib/jobcell"));
    let images = images_dir
        .map(Path::to_path_buf)
        .or_else(|| cfg.paths.images_dir.clone())
        .unwrap_or_else(|| state.join("images"));
    (state, images)
}
