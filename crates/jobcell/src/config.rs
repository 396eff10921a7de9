//! Loading the node config: `--config FILE`, else /etc/jobcell/config.toml if present, else the
//! embedded defaults.

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
    unsafe { libc::geteuid() == 0 }
}

/// Where scratch dirs go: the config, else /var/lib/jobcell/scratch as root; rootless, a
/// per-user dir under the batch system's or the user's temporary dir.
pub fn default_scratch_base(cfg: &Config) -> PathBuf {
    if let Some(p) = &cfg.paths.scratch_base {
        return p.clone();
    }
    if is_root() {
        return cfg
            .paths
            .state_dir
            .as_ref()
            .map(|s| s.join("scratch"))
            .unwrap_or_else(|| PathBuf::from("/var/lib/jobcell/scratch"));
    }
    let tmp = ["SLURM_TMPDIR", "TMPDIR"]
        .iter()
        .find_map(|k| std::env::var_os(k).filter(|v| Path::new(v).is_absolute()))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    tmp.join(format!("jobcell-{}", unsafe { libc::getuid() }))
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
