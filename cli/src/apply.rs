//! `swarm apply`: the stack files (or a plan saved by `swarm plan --cluster --out`) applied
//! to the cluster as one change. The plan is made against the cluster's state as the
//! manager reads it now, shown, confirmed by the user (or `--auto-approve`), sent as one
//! `ApplyPlan` — one Raft entry, refused whole when an object it touches changed since
//! the state it was made against — and waited for like `stack deploy`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use swarm_controller::deploy::{self, Current, WorkingCopy};
use swarm_controller::gitops::Repo;
use swarm_controller::plan::render;

use crate::client::Host;
use crate::converge::Wait;
use crate::plans::{self, Color, EXIT_CHANGES, Format, Sending};

/// Apply stack files to the cluster: plan them against its state, show the plan, ask, apply
/// it as one change and wait for the changed services to converge.
///
/// Exit status: 0 when there was nothing to do, 2 when changes were applied, 1 on error.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Stack files, or directories of *.yml / *.yaml files [default: stacks/ if it exists, else .]
    #[arg(conflicts_with = "plan")]
    paths: Vec<PathBuf>,

    /// Apply this plan, saved by `swarm plan --cluster --out FILE`, instead of planning again;
    /// refused if an object it changes changed in the cluster since
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,

    /// Apply without asking (required when stdin is not a terminal)
    #[arg(long)]
    auto_approve: bool,

    /// Also change stacks that a git repository manages: they are then drifted from git
    /// (and reported so) until git agrees
    #[arg(long)]
    force: bool,

    /// Send the registry credentials of Docker's client config to the nodes, for the
    /// services the plan creates, updates or scales
    #[arg(long)]
    with_registry_auth: bool,

    #[command(flatten)]
    wait: Wait,

    /// Colour the plan [default: auto, off when NO_COLOR is set or stdout is not a terminal]
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
}

/// Whether a plan with changes may be applied, and who says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Approval {
    /// `--auto-approve`.
    Given,
    /// Ask on the terminal.
    Ask,
    /// Nobody can be asked (stdin is not a terminal) and `--auto-approve` was not given.
    Refused,
}

fn approval(auto_approve: bool, stdin_is_terminal: bool) -> Approval {
    match (auto_approve, stdin_is_terminal) {
        (true, _) => Approval::Given,
        (false, true) => Approval::Ask,
        (false, false) => Approval::Refused,
    }
}

/// Whether the user's answer approves: `y` or `yes`, any case; anything else does not.
fn approves(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

pub async fn run(host: &Host, args: ApplyArgs) -> anyhow::Result<ExitCode> {
    // A saved plan has no contents: it can create or change no config or secret.
    let mut stacks = Vec::new();
    let plan = match &args.plan {
        Some(file) => plans::read_saved(file)?,
        None => {
            let paths = plans::paths_or_default(&args.paths);
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            // Inside a repository, objects record their stack file from its root, as the
            // GitOps watcher and `swarm plan --base` name them.
            let repo = Repo::discover(&cwd).ok();
            let desired = WorkingCopy {
                repo: repo.as_ref(),
            };
            let env = |name: &str| std::env::var(name).ok();
            let current = Current::State(plans::cluster_state(host).await?);
            let outcome = deploy::plan_paths(&paths, &desired, current, &env)?;
            stacks.clone_from(&outcome.desired.stacks);
            plans::planned(outcome, &desired, None, !args.paths.is_empty())?
        }
    };
    plans::print_plan(&plan, Format::Text, plans::use_color(args.color))?;
    if !plan.has_changes() {
        return Ok(ExitCode::SUCCESS);
    }
    match approval(args.auto_approve, std::io::stdin().is_terminal()) {
        Approval::Given => {}
        Approval::Ask => {
            eprint!("Apply these changes? [y/N] ");
            std::io::stderr().flush()?;
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer)?;
            if !approves(&answer) {
                bail!("apply cancelled; nothing was changed");
            }
        }
        Approval::Refused => bail!(
            "stdin is not a terminal, so nobody can confirm the plan: pass --auto-approve to apply it without asking; nothing was changed"
        ),
    }
    let changed = plans::changed_services(&plan);
    let registry_auth = if args.with_registry_auth {
        plans::registry_auth(changed.iter().copied())?
    } else {
        Default::default()
    };
    let sending = Sending {
        registry_auth,
        force: args.force,
        file_contents: swarm_controller::plan::contents(&plan, &stacks),
    };
    plans::apply(host, &plan, sending).await?;
    println!("Applied: {}.", render::summary(&plan));
    plans::wait_for(host, &args.wait, changed.iter().map(|(name, _)| *name)).await?;
    Ok(ExitCode::from(EXIT_CHANGES))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        args: ApplyArgs,
    }

    fn parse(args: &[&str]) -> Result<ApplyArgs, clap::Error> {
        Command::try_parse_from(std::iter::once("apply").chain(args.iter().copied()))
            .map(|c| c.args)
    }

    #[test]
    fn arguments_pick_paths_or_a_saved_plan() {
        let args = parse(&[]).unwrap();
        assert!(args.paths.is_empty() && args.plan.is_none());
        assert!(!args.auto_approve && !args.force && !args.with_registry_auth);

        let args = parse(&["stacks/web.yaml", "more", "--auto-approve", "--force"]).unwrap();
        assert_eq!(
            args.paths,
            [PathBuf::from("stacks/web.yaml"), PathBuf::from("more")]
        );
        assert!(args.auto_approve && args.force);

        let args = parse(&["--plan", "p.json", "-d", "--timeout", "30s"]).unwrap();
        assert_eq!(args.plan, Some(PathBuf::from("p.json")));

        let error = parse(&["stacks", "--plan", "p.json"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
        let error = parse(&["--plan"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::InvalidValue);
        let error = parse(&["--timeout", "soon"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn only_a_terminal_is_asked_and_only_yes_approves() {
        let cases = [
            (true, true, Approval::Given),
            (true, false, Approval::Given),
            (false, true, Approval::Ask),
            (false, false, Approval::Refused),
        ];
        for (auto_approve, terminal, expected) in cases {
            assert_eq!(
                approval(auto_approve, terminal),
                expected,
                "{auto_approve} {terminal}"
            );
        }
        for answer in ["y\n", "Y", "yes\n", " YES "] {
            assert!(approves(answer), "{answer:?}");
        }
        for answer in ["", "\n", "n\n", "no", "yess", "ok"] {
            assert!(!approves(answer), "{answer:?}");
        }
    }
}
