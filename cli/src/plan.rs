//! `swarm plan`: what applying the stack files would change, computed offline. The desired
//! side is the stack files (working tree, or `--head REV`); the current side is the same
//! paths at `--base REV`, a state export (`--state FILE`), or an empty cluster. The work is
//! `swarm_controller::deploy::plan_paths`; this file reads the arguments and prints.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use swarm_api::plan::Plan;
use swarm_api::state::{ClusterState, STATE_FORMAT};
use swarm_controller::deploy::{self, Current, Side, StackSource, Verdict, WorkingCopy};
use swarm_controller::gitops::Repo;
use swarm_controller::plan::render;

use crate::output::print_diagnostics;

/// Plan the changes that the stack files make: offline, no cluster needed.
///
/// Exit status: 0 when nothing changes, 2 when the plan has changes, 1 on error.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Stack files, or directories of *.yml / *.yaml files [default: stacks/ if it exists, else .]
    paths: Vec<PathBuf>,

    /// Compare with the same paths at this git revision (e.g. origin/main, HEAD~1)
    #[arg(long, value_name = "REV", conflicts_with = "state")]
    base: Option<String>,

    /// Read the stack files at this git revision instead of the working tree
    #[arg(long, value_name = "REV")]
    head: Option<String>,

    /// Compare with a state export (`swarm state export`), JSON
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,

    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Also write the plan, with what it was computed against, to FILE for `swarm apply`
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,

    /// Colour text output [default: auto, off when NO_COLOR is set or stdout is not a terminal]
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Markdown,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

/// Exit status when the plan has changes (like `terraform plan -detailed-exitcode`).
const EXIT_CHANGES: u8 = 2;

pub fn run(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let paths = if args.paths.is_empty() {
        vec![default_path()]
    } else {
        args.paths.clone()
    };
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

    if let Some(current) = &outcome.current {
        print_findings(current);
        if current.invalid() > 0 {
            let rev = args.base.as_deref().unwrap_or_default();
            eprintln!(
                "warning: {} stack file(s) at {rev} are invalid and were never applied; they count as absent on the current side",
                current.invalid()
            );
        }
    }
    let plan = match outcome.verdict {
        Verdict::Missing(missing) => {
            let place = desired
                .revision()
                .map(|r| format!(" at {r}"))
                .unwrap_or_default();
            bail!("{}: no such file or directory{place}", missing[0].display());
        }
        Verdict::Invalid(errors) => {
            print_findings(&outcome.desired);
            bail!("{errors} stack file(s) are invalid; nothing was planned");
        }
        Verdict::Conflict(conflict) => {
            print_findings(&outcome.desired);
            return Err(conflict.into());
        }
        Verdict::Planned(plan) => {
            print_findings(&outcome.desired);
            plan
        }
    };
    print_plan(&plan, args.format, use_color(args.color))?;
    if let Some(out) = &args.out {
        let json = serde_json::to_string_pretty(&plan)? + "\n";
        std::fs::write(out, json)
            .with_context(|| format!("cannot write the plan to {}", out.display()))?;
    }
    Ok(if plan.has_changes() {
        ExitCode::from(EXIT_CHANGES)
    } else {
        ExitCode::SUCCESS
    })
}

/// Each file's findings, as it was loaded.
fn print_findings(side: &Side) {
    for file in &side.files {
        print_diagnostics(&file.findings);
    }
}

fn default_path() -> PathBuf {
    let stacks = PathBuf::from("stacks");
    if stacks.is_dir() {
        stacks
    } else {
        PathBuf::from(".")
    }
}

fn read_state(file: &Path) -> anyhow::Result<ClusterState> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the state export {}", file.display()))?;
    // The format version is checked before the shape, so an export from a newer swarm says so.
    #[derive(serde::Deserialize)]
    struct Header {
        format: Option<u64>,
    }
    let header: Header = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", file.display()))?;
    match header.format {
        Some(format) if format == u64::from(STATE_FORMAT) => {}
        Some(format) => bail!(
            "{}: state format {format} is not supported by this swarm (it reads format {STATE_FORMAT})",
            file.display()
        ),
        None => bail!(
            "{}: not a swarm state export (no `format` field); write one with `swarm state export`",
            file.display()
        ),
    }
    serde_json::from_str(&text).with_context(|| format!("{}: invalid state export", file.display()))
}

fn use_color(choice: Color) -> bool {
    match choice {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stdout().is_terminal()
        }
    }
}

fn print_plan(plan: &Plan, format: Format, color: bool) -> anyhow::Result<()> {
    let text = match format {
        Format::Text => render::text(plan, color),
        Format::Markdown => render::markdown(plan),
        Format::Json => serde_json::to_string_pretty(plan)? + "\n",
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
