//! `swarm plan`: what applying the stack files would change, computed offline. The desired
//! side is the stack files (working tree, or `--head REV`); the current side is the same
//! paths at `--base REV`, a state export (`--state FILE`), or an empty cluster.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use swarm_api::plan::{Basis, Plan};
use swarm_api::state::{ClusterState, STATE_FORMAT};
use swarm_controller::gitops::Repo;
use swarm_controller::plan::{Scope, plan, render};
use swarm_controller::source::{SourceTree, WorkTree, find_stack_files};
use swarm_controller::stack::{self, Diagnostic, Severity, Stack};

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
    let naming = Naming {
        repo: repo.as_ref(),
    };
    let path_refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let env = |name: &str| std::env::var(name).ok();
    let mut basis = Basis::default();

    // The current side first: a path that exists only there is a deleted stack, not a typo.
    let mut current = ClusterState::empty();
    let mut base_paths: Vec<PathBuf> = Vec::new();
    if let Some(rev) = &args.base {
        let repo = repo.as_ref().expect("checked above");
        let tree = repo.revision(rev)?;
        basis.base_commit = Some(tree.commit_id());
        let found = find_stack_files(&tree, &path_refs)?;
        base_paths = found.files.clone();
        let (stacks, errors) = load_stacks(&tree, &found.files, &naming, Some(rev), &env);
        if errors > 0 {
            eprintln!(
                "warning: {errors} stack file(s) at {rev} are invalid and were never applied; they count as absent on the current side"
            );
        }
        current = stack::as_state(&stacks);
    } else if let Some(file) = &args.state {
        current = read_state(file)?;
        basis.state_version = Some(current.version);
    }

    let (desired, errors) = match &args.head {
        Some(rev) => {
            let repo = repo.as_ref().expect("checked above");
            let tree = repo.revision(rev)?;
            basis.head_commit = Some(tree.commit_id());
            load_desired(&tree, &path_refs, &base_paths, &naming, Some(rev), &env)?
        }
        None => load_desired(&WorkTree, &path_refs, &base_paths, &naming, None, &env)?,
    };
    if errors > 0 {
        bail!("{errors} stack file(s) are invalid; nothing was planned");
    }

    let scope = Scope {
        paths: paths.iter().map(|p| naming.source(p)).collect(),
    };
    let plan = plan(&desired, &current, &scope, basis)?;
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

fn default_path() -> PathBuf {
    let stacks = PathBuf::from("stacks");
    if stacks.is_dir() {
        stacks
    } else {
        PathBuf::from(".")
    }
}

/// How stack files are named: in findings, the path as the user can open it (or `REV:path`
/// for a revision); as an object's source, the path from the repository root when there is
/// a repository, so that both sides of a plan and the cluster's records agree.
struct Naming<'r> {
    repo: Option<&'r Repo>,
}

impl Naming<'_> {
    fn source(&self, path: &Path) -> String {
        self.repo
            .and_then(|repo| repo.relative(path).ok())
            .unwrap_or_else(|| path.to_path_buf())
            .to_string_lossy()
            .into_owned()
    }

    fn display(&self, path: &Path, rev: Option<&str>) -> String {
        match rev {
            Some(rev) => format!("{rev}:{}", self.source(path)),
            None => path.to_string_lossy().into_owned(),
        }
    }
}

fn load_desired(
    tree: &dyn SourceTree,
    paths: &[&Path],
    base_files: &[PathBuf],
    naming: &Naming,
    rev: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(Vec<Stack>, usize)> {
    let found = find_stack_files(tree, paths)?;
    for missing in &found.missing {
        // Gone here but present on the current side: the stack was deleted, plan its removal.
        let deleted = base_files
            .iter()
            .any(|f| f == missing || f.parent() == Some(missing));
        if !deleted {
            let place = rev.map(|r| format!(" at {r}")).unwrap_or_default();
            bail!("{}: no such file or directory{place}", missing.display());
        }
    }
    Ok(load_stacks(tree, &found.files, naming, rev, env))
}

/// Loads every file, printing its findings to stderr; returns the valid stacks and the
/// number of invalid files.
fn load_stacks(
    tree: &dyn SourceTree,
    files: &[PathBuf],
    naming: &Naming,
    rev: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Vec<Stack>, usize) {
    let mut stacks = Vec::new();
    let mut invalid = 0;
    for file in files {
        let loaded = stack::load(tree, file, &naming.display(file, rev), env);
        print_diagnostics(&loaded.diagnostics);
        match loaded.stack {
            Some(mut stack) => {
                stack.source = naming.source(file);
                stacks.push(stack);
            }
            None => invalid += 1,
        }
    }
    (stacks, invalid)
}

pub(crate) fn print_diagnostics(diagnostics: &[Diagnostic]) {
    let mut stderr = std::io::stderr().lock();
    for diagnostic in diagnostics {
        let _ = writeln!(stderr, "{diagnostic}");
    }
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    if errors > 0 {
        let _ = writeln!(stderr, "{errors} error(s) in {}", diagnostics[0].file);
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
