//! `swarm deploy` and the GitOps parts of `service ls` and `repo` against a real daemon
//! whose leader watches a real git repository (a bare repository on disk as the remote,
//! commits made by the test): a pushed stack is recorded as a Deployment (`deploy
//! ls|show`), its service shows its repository and commit (`service ls`, also in JSON), a
//! change by hand is drift, `repo sync --wait` follows a push, `deploy rollback --push`
//! reverts from a clone, `repo rm --prune` removes what the repository deployed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{swarm, text, wait_for};

/// A work tree on branch `main` whose pushes go to a bare repository beside it.
struct Git {
    work: PathBuf,
    remote: PathBuf,
}

impl Git {
    fn new(dir: &Path) -> Git {
        let remote = dir.join("remote.git");
        git2::Repository::init_bare(&remote).unwrap();
        let work = dir.join("work");
        let mut options = git2::RepositoryInitOptions::new();
        options.initial_head("main");
        let repo = git2::Repository::init_opts(&work, &options).unwrap();
        let mut config = repo.config().unwrap();
        config.set_str("user.name", "Ada").unwrap();
        config.set_str("user.email", "ada@example.com").unwrap();
        repo.remote("origin", remote.to_str().unwrap()).unwrap();
        std::fs::create_dir(work.join("stacks")).unwrap();
        Git { work, remote }
    }

    /// Commits `stacks/web.yaml` with `replicas` sites and pushes; returns the commit.
    fn push_replicas(&self, replicas: u32, message: &str) -> String {
        std::fs::write(
            self.work.join("stacks/web.yaml"),
            format!(
                "services:\n  site:\n    image: 127.0.0.1:9/none/busybox:1\n    deploy:\n      replicas: {replicas}\n"
            ),
        )
        .unwrap();
        let repo = git2::Repository::open(&self.work).unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("stacks/web.yaml")).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = repo.signature().unwrap();
        let parent = repo.head().ok().map(|h| h.peel_to_commit().unwrap());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let id = repo
            .commit(
                Some("HEAD"),
                &signature,
                &signature,
                message,
                &tree,
                &parents,
            )
            .unwrap();
        repo.find_remote("origin")
            .unwrap()
            .push(&["refs/heads/main:refs/heads/main"], None)
            .unwrap();
        id.to_string()
    }
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn deployments(socket: &Path) -> Vec<serde_json::Value> {
    let out = swarm(
        socket,
        &["deploy", "ls", "--repo", "app", "--format", "json"],
    );
    serde_json::from_str(&ok(out, "deploy ls")).unwrap()
}

/// The `service ls` line of `service`.
fn service_line(socket: &Path, service: &str) -> Option<String> {
    let listing = ok(swarm(socket, &["service", "ls"]), "service ls");
    common::node_line(&listing, service)
}

#[test]
fn pushed_commits_become_deployments_shown_rolled_back_and_pruned() {
    let cluster = common::cluster(1, &[]);
    let socket = cluster.socket(0);
    let files = tempfile::tempdir().unwrap();
    let git = Git::new(files.path());
    let first = git.push_replicas(2, "two sites");

    ok(
        swarm(
            &socket,
            &[
                "repo",
                "add",
                "app",
                git.remote.to_str().unwrap(),
                "--path",
                "stacks/",
                "--interval",
                "1s",
            ],
        ),
        "repo add",
    );
    let listed = wait_for("the first commit deployed", Duration::from_secs(20), || {
        deployments(&socket).into_iter().next()
    });
    assert_eq!(listed["commit"]["id"], first.as_str(), "{listed}");
    assert_eq!(listed["commit"]["author_name"], "Ada");
    let table = ok(swarm(&socket, &["deploy", "ls"]), "deploy ls");
    let row = common::node_line(&table, "app").expect("a row of app");
    assert!(
        row.contains(&first[..12]) && row.contains("two sites"),
        "{table}"
    );

    // `deploy show` by a commit prefix: the commit, the plan, the service.
    let show = ok(
        swarm(&socket, &["deploy", "show", &first[..8]]),
        "deploy show",
    );
    assert!(show.contains(&format!("Commit:     {first}\n")), "{show}");
    assert!(
        show.contains("Author:     Ada <ada@example.com>\n"),
        "{show}"
    );
    assert!(show.contains("+ create service web_site"), "{show}");
    let services: Vec<&str> = show
        .lines()
        .skip_while(|l| *l != "Services:")
        .skip(2)
        .collect();
    assert!(
        services
            .first()
            .is_some_and(|l| l.starts_with("web_site") && l.contains("create")),
        "{show}"
    );

    // `service ls`: where the service comes from.
    let line = service_line(&socket, "web_site").expect("web_site is listed");
    assert!(line.ends_with(&format!("app@{}", &first[..12])), "{line}");
    let json: serde_json::Value = serde_json::from_str(&ok(
        swarm(&socket, &["service", "ls", "--format", "json"]),
        "ls",
    ))
    .unwrap();
    assert_eq!(json[0]["Source"]["Repository"], "app", "{json}");
    assert_eq!(json[0]["Source"]["Commit"], first.as_str());

    // Scaled by hand: drifted, in `service ls` and `repo ls`.
    ok(
        swarm(&socket, &["service", "scale", "web_site=3", "-d"]),
        "service scale",
    );
    wait_for("the drift reported", Duration::from_secs(10), || {
        service_line(&socket, "web_site").filter(|l| l.ends_with("(drifted)"))
    });
    let repos = ok(swarm(&socket, &["repo", "ls"]), "repo ls");
    let row = common::node_line(&repos, "app").unwrap();
    assert!(row.contains(" drifted ") && row.contains(" 1"), "{repos}");
    let inspect = ok(swarm(&socket, &["repo", "inspect", "app"]), "repo inspect");
    assert!(
        inspect.contains("Drift (git → cluster):\n  web_site:\n"),
        "{inspect}"
    );

    // A push, followed by `repo sync --wait`.
    let second = git.push_replicas(4, "four sites");
    let out = ok(
        swarm(
            &socket,
            &["repo", "sync", "app", "--wait", "--timeout", "20s"],
        ),
        "repo sync --wait",
    );
    assert!(
        out.contains(&format!("Repository app is at {}", &second[..12])),
        "{out}"
    );
    let line = service_line(&socket, "web_site").unwrap();
    assert!(line.ends_with(&format!("app@{}", &second[..12])), "{line}");

    // Rolled back from the clone: the revert is pushed and deployed like any commit.
    let out = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["deploy", "rollback", "--push"])
        .env("SWARM_HOST", format!("unix://{}", socket.display()))
        .current_dir(&git.work)
        .output()
        .unwrap();
    let out = ok(out, "deploy rollback --push");
    assert!(out.starts_with("Pushed "), "{out}");
    ok(
        swarm(
            &socket,
            &["repo", "sync", "app", "--wait", "--timeout", "20s"],
        ),
        "repo sync --wait",
    );
    let latest = &deployments(&socket)[0];
    assert_eq!(
        latest["commit"]["summary"], "Revert \"four sites\"",
        "{latest}"
    );
    let stack = std::fs::read_to_string(git.work.join("stacks/web.yaml")).unwrap();
    assert!(stack.contains("replicas: 2"), "{stack}");

    // Removed with --prune: its service goes in the same change.
    let out = ok(swarm(&socket, &["repo", "rm", "app", "--prune"]), "repo rm");
    assert!(out.contains("Removed service web_site\n"), "{out}");
    assert!(service_line(&socket, "web_site").is_none());
}
