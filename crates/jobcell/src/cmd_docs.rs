//! `jobcell completions SHELL` and `jobcell man [DIR]`: shell completions and man pages made
//! from the same clap definitions the commands are parsed with, so they cannot drift from them.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, ValueEnum};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DocsError {
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a directory (create it first)", .0.display())]
    NotADir(PathBuf),
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write jobcell.1 and one jobcell-SUBCOMMAND.1 per subcommand here (e.g.
    /// /usr/local/share/man/man1); without it, jobcell.1 goes to stdout.
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script for `a.shell` (bash: `source <(jobcell completions bash)` or a
/// file in /usr/share/bash-completion/completions).
pub fn completions<C: CommandFactory>(a: CompletionsArgs) -> std::io::Result<i32> {
    let mut cmd = C::command();
    let mut out = std::io::stdout().lock();
    let shell = match a.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "jobcell", &mut out);
    out.flush()?;
    Ok(0)
}

/// Writes the pages: jobcell(1) and jobcell-NAME(1) for each visible subcommand and each of
/// theirs (`jobcell-image-add.1`), or jobcell(1) alone to stdout.
pub fn man<C: CommandFactory>(a: ManArgs) -> Result<i32, DocsError> {
    let cmd = C::command().name("jobcell");
    let Some(dir) = a.dir else {
        let mut out = std::io::stdout().lock();
        clap_mangen::Man::new(cmd)
            .render(&mut out)
            .and_then(|_| out.flush())
            .map_err(|source| DocsError::Write {
                path: "<stdout>".into(),
                source,
            })?;
        return Ok(0);
    };
    if !dir.is_dir() {
        return Err(DocsError::NotADir(dir));
    }
    let mut cmd = cmd;
    // Built once from the top, each subcommand knows its full name ("jobcell image add") and
    // page name (jobcell-image-add).
    cmd.build();
    write_pages(&dir, &cmd)?;
    Ok(0)
}

/// `cmd`'s page as DISPLAY-NAME.1 in `dir`, then its visible subcommands'.
fn write_pages(dir: &Path, cmd: &clap::Command) -> Result<(), DocsError> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .and_then(|_| std::fs::write(&path, &page))
        .map_err(|source| DocsError::Write {
            path: path.clone(),
            source,
        })?;
    for sub in cmd.get_subcommands() {
        if !sub.is_hide_set() && sub.get_name() != "help" {
            write_pages(dir, sub)?;
        }
    }
    Ok(())
}
