//! `jobcell image ...`: the image registry's command line (owned by the image-store work).

#[derive(clap::Subcommand, Debug)]
pub enum ImageCmd {
    /// List the images this user can use.
    Ls,
}

pub fn run(cmd: ImageCmd) -> anyhow::Result<i32> {
    match cmd {
        ImageCmd::Ls => anyhow::bail!("image registry not built yet"),
    }
}
