//! A container image's own run settings (its OCI/docker config), and the one place they are
//! applied to a job.

use std::collections::BTreeMap;
use std::path::PathBuf;

use jobcell_spec::JobSpec;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageConfigError {
    #[error("image {0:?} names no Entrypoint or Cmd: give the command to run")]
    NoCommand(String),
    #[error("image {image:?}: Env entry {entry:?} is not NAME=VALUE")]
    BadEnv { image: String, entry: String },
}

/// Variables jobcell sets for the job's identity and scratch: an image's Env does not replace
/// them (an image's `HOME=/root` would point the job at a read-only dir of the image).
const JOBCELL_ENV: &[&str] = &[
    "HOME",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "JOBCELL_SCRATCH",
    "_CONDOR_SCRATCH_DIR",
];

/// What the image's config asks for, as recorded at import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `NAME=VALUE`, in the image's order.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Shown, never used: jobs run as the identity jobcell gives them.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The reference the image was chosen by (`NAME:TAG` or a tag).
    #[serde(default)]
    pub reference: Option<String>,
    /// `os/arch` of the image.
    #[serde(default)]
    pub platform: Option<String>,
    /// Digest of the chosen OCI manifest.
    #[serde(default)]
    pub manifest: Option<String>,
}

impl ImageConfig {
    /// Apply the image's settings to a job that runs in it (`image` names it in errors):
    /// - Env goes under the job's own environment (a name the job sets keeps the job's value),
    ///   except the variables jobcell sets for the job's identity and scratch;
    /// - WorkingDir is where the job starts unless it names its own;
    /// - with no command the job runs Entrypoint + Cmd; with a command and an Entrypoint the
    ///   command replaces Cmd (as `docker run IMAGE ARGS`); with no Entrypoint it runs as given;
    /// - User is never applied.
    pub fn apply_to(
        &self,
        image: &str,
        spec: &mut JobSpec,
        command_given: bool,
    ) -> Result<(), ImageConfigError> {
        let mut env = Vec::with_capacity(self.env.len() + spec.env.len());
        for e in &self.env {
            let (k, v) = e
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| ImageConfigError::BadEnv {
                    image: image.to_string(),
                    entry: e.clone(),
                })?;
            if !spec.env.iter().any(|(jk, _)| jk == k) && !JOBCELL_ENV.contains(&k) {
                env.retain(|(ek, _): &(String, String)| ek != k);
                env.push((k.to_string(), v.to_string()));
            }
        }
        env.append(&mut spec.env);
        spec.env = env;
        if spec.workdir.is_none() {
            if let Some(w) = &self.working_dir {
                spec.workdir = Some(PathBuf::from("/").join(w));
            }
        }
        if !command_given {
            let argv: Vec<String> = self.entrypoint.iter().chain(&self.cmd).cloned().collect();
            if argv.is_empty() {
                return Err(ImageConfigError::NoCommand(image.to_string()));
            }
            spec.argv = argv;
        } else if !self.entrypoint.is_empty() {
            let mut argv = self.entrypoint.clone();
            argv.append(&mut spec.argv);
            spec.argv = argv;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ImageConfig {
        ImageConfig {
            env: vec!["PATH=/opt/bin:/usr/bin".into(), "A=image".into()],
            working_dir: Some("/work".into()),
            entrypoint: vec!["/bin/tool".into()],
            cmd: vec!["--help".into()],
            ..Default::default()
        }
    }

    #[test]
    fn no_command_runs_entrypoint_and_cmd() {
        let mut s = JobSpec::new(vec![]);
        cfg().apply_to("x", &mut s, false).unwrap();
        assert_eq!(s.argv, ["/bin/tool", "--help"]);
        assert_eq!(s.workdir, Some(PathBuf::from("/work")));
    }

    #[test]
    fn command_replaces_cmd_after_entrypoint() {
        let mut s = JobSpec::new(vec!["run".into(), "1".into()]);
        cfg().apply_to("x", &mut s, true).unwrap();
        assert_eq!(s.argv, ["/bin/tool", "run", "1"]);
        let mut s = JobSpec::new(vec!["/bin/sh".into()]);
        let c = ImageConfig {
            cmd: vec!["/bin/bash".into()],
            ..Default::default()
        };
        c.apply_to("x", &mut s, true).unwrap();
        assert_eq!(s.argv, ["/bin/sh"]);
    }

    #[test]
    fn job_env_and_workdir_win() {
        let mut s = JobSpec::new(vec!["a".into()]);
        s.env = vec![("A".into(), "job".into())];
        s.workdir = Some("/mine".into());
        cfg().apply_to("x", &mut s, true).unwrap();
        assert_eq!(
            s.env,
            [
                ("PATH".to_string(), "/opt/bin:/usr/bin".to_string()),
                ("A".to_string(), "job".to_string())
            ]
        );
        assert_eq!(s.workdir, Some(PathBuf::from("/mine")));
    }

    #[test]
    fn the_image_does_not_move_home_or_scratch() {
        let mut s = JobSpec::new(vec!["a".into()]);
        let c = ImageConfig {
            env: vec![
                "HOME=/root".into(),
                "TMPDIR=/x".into(),
                "LANG=C.UTF-8".into(),
            ],
            ..Default::default()
        };
        c.apply_to("x", &mut s, true).unwrap();
        assert_eq!(s.env, [("LANG".to_string(), "C.UTF-8".to_string())]);
    }

    #[test]
    fn nothing_to_run_is_an_error() {
        let mut s = JobSpec::new(vec![]);
        let e = ImageConfig::default()
            .apply_to("x", &mut s, false)
            .unwrap_err();
        assert_eq!(e, ImageConfigError::NoCommand("x".into()));
    }
}
