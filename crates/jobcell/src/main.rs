use clap::{Parser, Subcommand};

mod cmd_image;

#[derive(Parser, Debug)]
#[command(name = "jobcell", version, about = "Run batch jobs isolated from each other and from the host")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Manage the image registry.
    #[command(subcommand)]
    Image(cmd_image::ImageCmd),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Image(c) => cmd_image::run(c),
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("jobcell: {e:#}");
            std::process::exit(125);
        }
    }
}
