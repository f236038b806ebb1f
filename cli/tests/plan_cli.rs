//! `swarm plan` as users run it: the real binary, real git repositories, real files.

use std::path::Path;
use std::process::{Command, Output};

use swarm_controller::source::WorkTree;
use swarm_controller::stack;
use swarm_testkit::git;

const WEB: &str = "services:\n  site:\n    image: registry.example.com/web:1.4\n    ports: [\"8080:80\"]\n    deploy:\n      replicas: 3\n";

fn swarm(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(args)
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .output()
        .expect("swarm runs")
}

/// A repository with `stacks/web.yaml` committed once.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("stacks")).unwrap();
    std::fs::write(dir.path().join("stacks/web.yaml"), WEB).unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "web"]);
    dir
}

fn commit_change(dir: &Path, file: &str, content: &str) {
    std::fs::write(dir.join(file), content).unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "change"]);
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn no_change_exits_zero() {
    let dir = repo();
    let out = swarm(dir.path(), &["plan", "--base", "HEAD"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("No changes"), "{}", stdout(&out));
}

#[test]
fn a_commit_is_planned_against_its_parent() {
    let dir = repo();
    commit_change(
        dir.path(),
        "stacks/web.yaml",
        &WEB.replace("replicas: 3", "replicas: 5"),
    );
    let out = swarm(dir.path(), &["plan", "--base", "HEAD~1", "stacks"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("~ scale service web_site  (stack web)"),
        "{text}"
    );
    assert!(text.contains("replicas: 3 → 5"), "{text}");
    assert!(text.contains("Plan: 1 to scale."), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no colour when stdout is not a terminal: {text:?}"
    );
}

#[test]
fn a_deleted_stack_file_is_removed() {
    let dir = repo();
    git(dir.path(), &["rm", "-q", "stacks/web.yaml"]);
    git(dir.path(), &["commit", "-q", "-m", "drop web"]);
    let out = swarm(dir.path(), &["plan", "--base", "HEAD~1", "stacks/web.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("- remove service web_site"), "{text}");
    assert!(text.contains("- remove network web_default"), "{text}");
}

#[test]
fn head_reads_a_revision_and_ignores_the_working_tree() {
    let dir = repo();
    commit_change(
        dir.path(),
        "stacks/web.yaml",
        &WEB.replace("web:1.4", "web:1.5"),
    );
    // An uncommitted, invalid edit must not matter with --head.
    std::fs::write(dir.path().join("stacks/web.yaml"), "services: [").unwrap();
    let out = swarm(
        dir.path(),
        &[
            "plan", "--base", "HEAD~1", "--head", "HEAD", "--format", "json",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let action = &plan["actions"][0];
    assert_eq!(action["op"], "update");
    assert_eq!(action["changes"][0]["path"], "task.container.image");
    assert_eq!(
        action["changes"][0]["after"],
        "registry.example.com/web:1.5"
    );
    assert_eq!(action["source"], "stacks/web.yaml");
    assert!(plan["basis"]["base_commit"].as_str().unwrap().len() == 40);
    assert!(plan["basis"]["head_commit"].as_str().unwrap().len() == 40);
}

#[test]
fn invalid_stacks_exit_one_with_positions_on_stderr() {
    let dir = repo();
    std::fs::write(
        dir.path().join("stacks/web.yaml"),
        "services:\n  site:\n    image: nginx\n    deploy:\n      replicas: -2\n      modee: global\n",
    )
    .unwrap();
    let out = swarm(dir.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing planned: {}", stdout(&out));
    let errors = stderr(&out);
    assert!(errors.contains("stacks/web.yaml:5:17: error: services.site.deploy.replicas: -2 is less than the minimum 0"), "{errors}");
    assert!(
        errors.contains("stacks/web.yaml:6:7: error: services.site.deploy: unknown key `modee`"),
        "{errors}"
    );
    assert!(errors.contains("did you mean `mode`?"), "{errors}");
}

#[test]
fn an_invalid_base_counts_as_absent() {
    let dir = repo();
    commit_change(dir.path(), "stacks/web.yaml", "services: [");
    commit_change(dir.path(), "stacks/web.yaml", WEB);
    let out = swarm(dir.path(), &["plan", "--base", "HEAD~1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("HEAD~1:stacks/web.yaml:2:1:"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("+ create service web_site"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn state_exports_are_the_current_side() {
    let dir = repo();
    let loaded = stack::load(
        &WorkTree,
        &dir.path().join("stacks/web.yaml"),
        "web.yaml",
        &|_| None,
    );
    let mut stack = loaded.stack.unwrap();
    stack.source = "stacks/web.yaml".to_owned();
    let mut state = stack::as_state(&[stack]);
    state.version = 42;
    let state_file = dir.path().join("state.json");
    std::fs::write(&state_file, serde_json::to_string(&state).unwrap()).unwrap();

    let out = swarm(dir.path(), &["plan", "--state", "state.json", "stacks"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    std::fs::write(
        dir.path().join("stacks/web.yaml"),
        WEB.replace("web:1.4", "web:2.0"),
    )
    .unwrap();
    let out = swarm(
        dir.path(),
        &[
            "plan",
            "--state",
            "state.json",
            "--out",
            "plan.json",
            "--format",
            "markdown",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("### swarm plan: 1 to update"),
        "{}",
        stdout(&out)
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("plan.json")).unwrap())
            .unwrap();
    assert_eq!(saved["basis"]["state_version"], 42);
    assert_eq!(
        saved["actions"][0]["spec"]["task"]["container"]["image"],
        "registry.example.com/web:2.0"
    );

    std::fs::write(&state_file, r#"{"format": 9, "version": 1}"#).unwrap();
    let out = swarm(dir.path(), &["plan", "--state", "state.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("state format 9 is not supported"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn colour_is_explicit_or_follows_the_terminal() {
    let dir = repo();
    let out = swarm(dir.path(), &["plan", "--color", "always"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("\x1b[32m"), "{:?}", stdout(&out));
}

#[test]
fn bad_arguments_exit_one() {
    let dir = repo();
    let out = swarm(dir.path(), &["plan", "--base", "no-such-branch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown revision \"no-such-branch\""),
        "{}",
        stderr(&out)
    );

    let out = swarm(dir.path(), &["plan", "missing.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("missing.yaml: no such file or directory"),
        "{}",
        stderr(&out)
    );

    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("web.yaml"), WEB).unwrap();
    let out = swarm(outside.path(), &["plan", "--base", "HEAD", "web.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not inside a git repository"),
        "{}",
        stderr(&out)
    );

    // Outside a repository, planning the working tree needs no git at all.
    let out = swarm(outside.path(), &["plan", "web.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn output_into_a_reader_that_went_away_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // A plan long enough to fill a pipe: 400 services.
    let dir = tempfile::tempdir().unwrap();
    let mut file = String::from("services:\n");
    for n in 0..400 {
        file.push_str(&format!(
            "  s{n}:\n    image: registry.example.com/web:1.4\n"
        ));
    }
    std::fs::write(dir.path().join("big.yaml"), file).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["plan", "big.yaml"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -0`: the reader goes away before reading anything.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = stderr(&output);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}",
        output.status
    );
}

/// One folder per stack is found and each stack named after its folder, in the working tree
/// and at a git revision alike.
#[test]
fn a_folder_per_stack_plans_each_folder_as_a_stack() {
    let dir = tempfile::tempdir().unwrap();
    for (folder, file, port) in [
        ("web", "docker-compose.yml", "8080"),
        ("db", "compose.yaml", "8081"),
    ] {
        std::fs::create_dir_all(dir.path().join("stacks").join(folder)).unwrap();
        std::fs::write(
            dir.path().join("stacks").join(folder).join(file),
            WEB.replace("8080", port),
        )
        .unwrap();
    }
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "folders"]);
    let out = swarm(dir.path(), &["plan", "stacks"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("+ create service web_site"), "{text}");
    assert!(text.contains("+ create service db_site"), "{text}");
    let out = swarm(dir.path(), &["plan", "--base", "HEAD", "stacks"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("No changes"), "{}", stdout(&out));
}

/// A directory with no stack file says so: an error when it was named, a note when it is
/// the default.
#[test]
fn an_empty_stacks_directory_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("stacks")).unwrap();
    let out = swarm(dir.path(), &["plan", "stacks"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("stacks: no stack files here"),
        "{}",
        stderr(&out)
    );
    let out = swarm(dir.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("note: stacks: no stack files here"),
        "{}",
        stderr(&out)
    );
}
