//! Golden tests: every example stack, every invalid fixture and every real-world stack is
//! loaded and planned, and the output is compared with the text checked in under
//! `tests/golden/`. Regenerate with `UPDATE_GOLDEN=1 cargo test -p swarm-tests --test golden`
//! and review the diff like code.

use std::fmt::Write;
use std::io;
use std::path::{Path, PathBuf};

use swarm_api::plan::Basis;
use swarm_api::state::ClusterState;
use swarm_controller::plan::{Scope, plan, render};
use swarm_controller::source::{SourceTree, WorkTree, find_stack_files};
use swarm_controller::stack::{self, Loaded, Stack};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The working tree seen from the workspace root, so paths in the output are the same on
/// every machine.
struct Workspace;

impl SourceTree for Workspace {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        WorkTree.read(&root().join(path))
    }

    fn list(&self, dir: &Path) -> io::Result<Option<Vec<String>>> {
        WorkTree.list(&root().join(dir))
    }

    /// Relative bind sources resolve under a fixed root, whatever the machine's checkout.
    fn absolute(&self, path: &Path) -> PathBuf {
        Path::new("/workspace").join(path)
    }
}

/// The golden tests see no environment variables: `${VAR:-default}` takes its default.
fn no_env(_: &str) -> Option<String> {
    None
}

fn stack_files(dir: &str) -> Vec<PathBuf> {
    let found = find_stack_files(&Workspace, &[Path::new(dir)]).unwrap();
    assert!(
        found.missing.is_empty() && !found.files.is_empty(),
        "no stack files in {dir}"
    );
    found.files
}

fn load(path: &Path) -> Loaded {
    stack::load(&Workspace, path, &path.to_string_lossy(), &no_env)
}

fn diagnostics_text(loaded: &Loaded) -> String {
    loaded
        .diagnostics
        .iter()
        .map(|d| format!("{d}\n"))
        .collect()
}

fn check_golden(name: &str, actual: &str) {
    let path = root().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let diff = similar::TextDiff::from_lines(&expected, actual)
            .unified_diff()
            .header("expected", "actual")
            .to_string();
        panic!(
            "{} differs from the output (UPDATE_GOLDEN=1 to accept):\n{diff}",
            path.display()
        );
    }
}

/// Loads a file that must be valid: its findings (warnings at most) and its stack.
fn load_valid(file: &Path) -> (Loaded, Stack) {
    let loaded = load(file);
    match loaded.stack.clone() {
        Some(stack) => (loaded, stack),
        None => panic!(
            "{} is invalid:\n{}",
            file.display(),
            diagnostics_text(&loaded)
        ),
    }
}

fn golden_name(path: &Path, suffix: &str) -> String {
    format!("{}{suffix}", path.file_stem().unwrap().to_string_lossy())
}

#[test]
fn example_stacks_load_and_plan() {
    for file in stack_files("examples/stacks") {
        let (loaded, stack) = load_valid(&file);
        let mut out = String::new();
        out.push_str("# findings\n");
        out.push_str(&diagnostics_text(&loaded));
        out.push_str("\n# normalised specs\n");
        out.push_str(&render::yaml(
            &serde_json::to_value(stack::as_state(std::slice::from_ref(&stack))).unwrap(),
        ));
        let plan = plan(
            &[stack],
            &ClusterState::empty(),
            &Scope::default(),
            Basis::default(),
        )
        .unwrap();
        let _ = write!(
            out,
            "\n# plan against an empty cluster\n{}",
            render::text(&plan, false)
        );
        check_golden(&format!("examples/{}", golden_name(&file, ".txt")), &out);
    }
}

#[test]
fn invalid_stacks_report_every_finding() {
    for file in stack_files("tests/fixtures/invalid") {
        let loaded = load(&file);
        assert!(
            loaded.stack.is_none(),
            "{} loaded without errors",
            file.display()
        );
        check_golden(
            &format!("invalid/{}", golden_name(&file, ".txt")),
            &diagnostics_text(&loaded),
        );
    }
}

#[test]
fn real_world_stacks_load_with_at_most_warnings() {
    for file in stack_files("tests/fixtures/realworld") {
        let (loaded, stack) = load_valid(&file);
        let plan = plan(
            &[stack],
            &ClusterState::empty(),
            &Scope::default(),
            Basis::default(),
        )
        .unwrap();
        let out = format!(
            "{}\n{}",
            diagnostics_text(&loaded),
            render::text(&plan, false)
        );
        check_golden(&format!("realworld/{}", golden_name(&file, ".txt")), &out);
    }
}

/// Loads a directory of the plan fixtures as if it were `stacks/` in a repository.
fn load_as_stacks_dir(dir: &str) -> Vec<Stack> {
    stack_files(dir)
        .iter()
        .map(|file| {
            let mut stack = load(file).stack.expect("plan fixtures are valid");
            stack.source = format!("stacks/{}", file.file_name().unwrap().to_string_lossy());
            stack
        })
        .collect()
}

#[test]
fn plan_of_changes_in_every_format() {
    let current = stack::as_state(&load_as_stacks_dir("tests/fixtures/plan/before"));
    let desired = load_as_stacks_dir("tests/fixtures/plan/after");
    let scope = Scope {
        paths: vec!["stacks".to_owned()],
    };
    let basis = Basis {
        base_commit: Some("0123456789abcdef0123456789abcdef01234567".to_owned()),
        ..Basis::default()
    };
    let plan = plan(&desired, &current, &scope, basis).unwrap();
    check_golden("plan/changes.txt", &render::text(&plan, false));
    check_golden("plan/changes.md", &render::markdown(&plan));
    check_golden(
        "plan/changes.json",
        &(serde_json::to_string_pretty(&plan).unwrap() + "\n"),
    );

    // The same stacks on both sides: no action at all, however they are written.
    let unchanged = plan_between("tests/fixtures/plan/after", "tests/fixtures/plan/after");
    assert!(unchanged.actions.is_empty(), "{unchanged:#?}");
}

fn plan_between(before: &str, after: &str) -> swarm_api::plan::Plan {
    let current = stack::as_state(&load_as_stacks_dir(before));
    plan(
        &load_as_stacks_dir(after),
        &current,
        &Scope::default(),
        Basis::default(),
    )
    .unwrap()
}

/// A stack whose secret file changed: the secret is updated to its new version (digest) and
/// so is the service that pins it, which rolls; neither the plan nor its renderings hold
/// the content.
#[test]
fn plan_of_a_changed_secret_file() {
    let current = stack::as_state(&load_as_stacks_dir("tests/fixtures/secret/before"));
    let desired = load_as_stacks_dir("tests/fixtures/secret/after");
    let scope = Scope {
        paths: vec!["stacks".to_owned()],
    };
    let plan = plan(&desired, &current, &scope, Basis::default()).unwrap();
    let text = render::text(&plan, false);
    let markdown = render::markdown(&plan);
    let json = serde_json::to_string_pretty(&plan).unwrap() + "\n";
    for rendered in [&text, &markdown, &json] {
        assert!(!rendered.contains("golden-"), "{rendered}");
    }
    check_golden("plan/secret-changed.txt", &text);
    check_golden("plan/secret-changed.json", &json);
}
