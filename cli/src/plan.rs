//! `swarm plan`: what applying the stack files would change. The desired side is the stack
//! files (working tree, or `--head REV`); the current side is the same paths at `--base
//! REV`, a state export (`--state FILE`), the live cluster (`--cluster`), or an empty
//! cluster. The work is `swarm_controller::deploy::plan_paths`; this file reads the
//! arguments, and `plans.rs` prints.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use swarm_api::state::{ClusterState, STATE_FORMAT};
use swarm_controller::deploy::{self, Current, StackSource, WorkingCopy};
use swarm_controller::gitops::Repo;

use crate::client::Host;
use crate::plans::{self, Color, EXIT_CHANGES, Format};

/// Plan the changes that the stack files make: offline, or against the cluster with
/// `--cluster`.
///
/// Exit status: 0 when nothing changes, 2 when the plan has changes, 1 on error.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Stack files, or directories of *.yml / *.yaml files [default: stacks/ if it exists, else .]
    paths: Vec<PathBuf>,

    /// Compare with the same paths at this git revision (e.g. origin/main, HEAD~1)
    #[arg(long, value_name = "REV", conflicts_with_all = ["state", "cluster"])]
    base: Option<String>,

    /// Read the stack files at this git revision instead of the working tree
    #[arg(long, value_name = "REV")]
    head: Option<String>,

    /// Compare with a state export (`swarm state export`), JSON
    #[arg(long, value_name = "FILE", conflicts_with = "cluster")]
    state: Option<PathBuf>,

    /// Compare with the live cluster's state (read from the daemon `--host` names)
    #[arg(long)]
    cluster: bool,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Also write the plan, with what it was computed against, to FILE (with --cluster: for `swarm apply --plan FILE`)
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,

    /// Colour text output [default: auto, off when NO_COLOR is set or stdout is not a terminal]
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
}

pub async fn run(host: &Host, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let paths = plans::paths_or_default(&args.paths);
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let repo = match Repo::discover(&cwd) {
        Ok(repo) => Some(repo),
        Err(e) if args.base.is_some() || args.head.is_some() => {
            return Err(e).context("--base and --head read git revisions");
        }
        Err(_) => None,
    };
    let env = |name: &str| std::env::var(name).ok();

    let base = match &args.base {
        Some(rev) => Some(repo.as_ref().expect("checked above").revision(rev)?),
        None => None,
    };
    let current = match (&base, &args.state) {
        (Some(base), _) => Current::Source(base),
        (None, Some(file)) => Current::State(read_state(file)?),
        (None, None) if args.cluster => Current::State(plans::cluster_state(host).await?),
        (None, None) => Current::Empty,
    };
    let head = match &args.head {
        Some(rev) => Some(repo.as_ref().expect("checked above").revision(rev)?),
        None => None,
    };
    let work_tree = WorkingCopy {
        repo: repo.as_ref(),
    };
    let desired: &dyn StackSource = match &head {
        Some(head) => head,
        None => &work_tree,
    };
    let outcome = deploy::plan_paths(&paths, desired, current, &env)?;
    let plan = plans::planned(
        outcome,
        desired,
        args.base.as_deref(),
        !args.paths.is_empty(),
    )?;
    plans::print_plan(&plan, args.format, plans::use_color(args.color))?;
    if let Some(out) = &args.out {
        plans::save(&plan, out)?;
    }
    Ok(if plan.has_changes() {
        ExitCode::from(EXIT_CHANGES)
    } else {
        ExitCode::SUCCESS
    })
}

fn read_state(file: &Path) -> anyhow::Result<ClusterState> {
    plans::read_versioned(
        file,
        "state export",
        ("state", STATE_FORMAT),
        "write one with `swarm state export`",
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        args: PlanArgs,
    }

    fn parse(args: &[&str]) -> Result<PlanArgs, clap::Error> {
        Command::try_parse_from(std::iter::once("plan").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn the_cluster_is_one_current_side_among_the_others() {
        let args = parse(&["--cluster", "stacks", "--out", "p.json"]).unwrap();
        assert!(args.cluster);
        assert_eq!(args.paths, [PathBuf::from("stacks")]);
        assert_eq!(args.out, Some(PathBuf::from("p.json")));
        // The desired side may still be a revision.
        let args = parse(&["--cluster", "--head", "HEAD~1", "--format", "json"]).unwrap();
        assert_eq!(args.head.as_deref(), Some("HEAD~1"));
        assert_eq!(args.format, Format::Json);
        for conflicting in [
            &["--cluster", "--base", "origin/main"][..],
            &["--cluster", "--state", "state.json"],
            &["--base", "origin/main", "--state", "state.json"],
        ] {
            let error = parse(conflicting).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{conflicting:?}"
            );
        }
        // The CI recipe's command line (examples/ci).
        let args = parse(&["--base", "origin/main", "--format", "markdown"]).unwrap();
        assert_eq!(args.base.as_deref(), Some("origin/main"));
        assert_eq!(args.format, Format::Markdown);
        assert!(!args.cluster);
    }
}
