//! `swarm`: the command line. Each subcommand lives in its own module; this file parses the
//! arguments and turns outcomes into exit codes.

mod plan;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A container orchestrator with the simplicity of Docker Swarm mode and a GitOps heart.
#[derive(Debug, Parser)]
#[command(name = "swarm", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Plan(plan::PlanArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Plan(args) => plan::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}
