//! GitOps against one real daemon (issue 11, items 2, 3, 5 and 6): a bare repository on
//! disk is the remote, the test commits and pushes to it with git; the daemon's watcher
//! applies each commit. A pushed stack runs; a commit changing replicas scales it; invalid
//! YAML is recorded invalid and changes nothing; `git revert` goes back to the previous
//! spec; a service changed by hand is reported drifted, and healed in a repository that
//! asks for it.
//!
//! The cluster has its own address pool (198.18.212.0/23, no other test uses it); a
//! `Leftovers` guard removes what the tasks leave on the host.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Cluster, Leftovers, cluster, init_args, live_tasks, registry_for, text, wait_for};

fn stack(registry: &str, replicas: u32) -> String {
    format!(
        "services:\n  web:\n    image: {registry}/swarm/hello:1\n    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n    deploy:\n      replicas: {replicas}\n"
    )
}

/// `git ARGS` in `dir`, as a user with no configuration of their own.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Ada Lovelace",
            "-c",
            "user.email=ada@example.org",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// Commits everything in `work` and pushes it; returns the new head.
fn push(work: &Path, message: &str) -> String {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", message]);
    git(work, &["push", "-q", "origin", "HEAD:main"]);
    git(work, &["rev-parse", "HEAD"])
}

fn ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = common::swarm(&cluster.socket(0), args);
    assert!(
        out.status.success(),
        "`swarm {}`: {}",
        args.join(" "),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn json(cluster: &Cluster, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(cluster, args)).unwrap()
}

/// Repository `repo`'s newest Deployment, as `deploy ls --format json` shows it.
fn latest(cluster: &Cluster, repo: &str) -> Option<serde_json::Value> {
    json(
        cluster,
        &["deploy", "ls", "--repo", repo, "--format", "json"],
    )
    .as_array()
    .and_then(|all| all.first().cloned())
}

/// Waits until `repo`'s newest Deployment is of `commit` and reached `outcome`.
fn reaches(cluster: &Cluster, repo: &str, commit: &str, outcome: &str) -> serde_json::Value {
    wait_for(
        &format!("{repo}: {commit} {outcome}"),
        Duration::from_secs(90),
        || {
            latest(cluster, repo)
                .filter(|d| d["commit"]["id"] == commit && d["outcome"]["state"] == outcome)
        },
    )
}

/// Service `name`'s replicas in the cluster's state.
fn replicas(cluster: &Cluster, name: &str) -> Option<u64> {
    let state = json(cluster, &["state", "export"]);
    state["services"]
        .as_array()?
        .iter()
        .find(|s| s["spec"]["name"] == name)
        .and_then(|s| s["spec"]["replicas"].as_u64())
}

fn running(cluster: &Cluster, service: &str) -> usize {
    live_tasks(cluster, service)
        .iter()
        .filter(|t| t["status"]["state"] == "running")
        .count()
}

#[test]
fn commits_are_applied_scaled_refused_when_invalid_reverted_and_drift_is_healed() {
    let Some(registry) = registry_for("gitops_e2e") else {
        return;
    };
    let registry = registry.addr();
    let cluster = cluster(1, &init_args("198.18.212.0/23", &[]));
    let _leftovers = Leftovers(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("remote.git");
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("stacks")).unwrap();
    std::fs::create_dir_all(work.join("auto")).unwrap();
    git(
        dir.path(),
        &["init", "-q", "--bare", remote.to_str().unwrap()],
    );
    git(&work, &["init", "-q"]);
    git(
        &work,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    let app = work.join("stacks/app.yaml");
    std::fs::write(&app, stack(&registry, 1)).unwrap();
    std::fs::write(work.join("auto/api.yaml"), stack(&registry, 1)).unwrap();
    let first = push(&work, "deploy the app");

    // Two repositories on one remote: `site` reports drift, `auto` heals it.
    let url = remote.to_str().unwrap();
    ok(
        &cluster,
        &[
            "repo",
            "add",
            "site",
            url,
            "--path",
            "stacks",
            "--interval",
            "2s",
        ],
    );
    ok(
        &cluster,
        &[
            "repo",
            "add",
            "auto",
            url,
            "--path",
            "auto",
            "--interval",
            "2s",
            "--self-heal",
        ],
    );

    // Pushed: applied, then converged once its task runs.
    let deployment = reaches(&cluster, "site", &first, "converged");
    assert_eq!(deployment["commit"]["summary"], "deploy the app");
    assert_eq!(running(&cluster, "app_web"), 1);
    reaches(&cluster, "auto", &first, "converged");
    let service_ls = ok(&cluster, &["service", "ls"]);
    assert!(service_ls.contains("site@"), "{service_ls}");

    // Replicas changed in git: scaled (`repo sync` fetches at once).
    std::fs::write(&app, stack(&registry, 3)).unwrap();
    let scaled = push(&work, "three replicas");
    ok(&cluster, &["repo", "sync", "site"]);
    reaches(&cluster, "site", &scaled, "converged");
    assert_eq!(replicas(&cluster, "app_web"), Some(3));
    assert_eq!(running(&cluster, "app_web"), 3);

    // Invalid YAML: recorded invalid with its findings; what runs is untouched.
    std::fs::write(
        &app,
        stack(&registry, 3).replace("replicas: 3", "replicas: many"),
    )
    .unwrap();
    let broken = push(&work, "broken");
    ok(&cluster, &["repo", "sync", "site"]);
    let invalid = reaches(&cluster, "site", &broken, "invalid");
    let findings = invalid["outcome"]["findings"].as_array().unwrap();
    assert!(
        findings[0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:stacks/app.yaml:6:", &broken[..12])),
        "{findings:?}"
    );
    let status = json(&cluster, &["repo", "inspect", "site", "--format", "json"]);
    assert_eq!(status["status"]["applied"], scaled.as_str(), "{status}");
    assert_eq!(replicas(&cluster, "app_web"), Some(3));
    assert_eq!(running(&cluster, "app_web"), 3);

    // `git revert` of both commits: the spec before them runs again.
    git(&work, &["revert", "--no-edit", "HEAD", "HEAD~1"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    let reverted = git(&work, &["rev-parse", "HEAD"]);
    ok(&cluster, &["repo", "sync", "site"]);
    reaches(&cluster, "site", &reverted, "converged");
    assert_eq!(replicas(&cluster, "app_web"), Some(1));
    wait_for("one task running", Duration::from_secs(60), || {
        (running(&cluster, "app_web") == 1 && live_tasks(&cluster, "app_web").len() == 1)
            .then_some(())
    });

    // Changed by hand: reported as drift with the field that differs, not healed.
    ok(&cluster, &["service", "scale", "-d", "app_web=2"]);
    let drift = wait_for("drift reported", Duration::from_secs(30), || {
        let status = json(&cluster, &["repo", "inspect", "site", "--format", "json"]);
        let drift = status["status"]["drift"]["app_web"].clone();
        (!drift.is_null()).then_some(drift)
    });
    assert_eq!(drift[0]["before"], 1, "{drift}");
    assert_eq!(drift[0]["after"], 2, "{drift}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        replicas(&cluster, "app_web"),
        Some(2),
        "healed without --self-heal"
    );
    let service_ls = ok(&cluster, &["service", "ls"]);
    assert!(service_ls.contains("(drifted)"), "{service_ls}");

    // With --self-heal: git's spec comes back, recorded as a Deployment saying so. (`auto`
    // follows the same branch: each commit is a no-op there.)
    reaches(&cluster, "auto", &reverted, "no-op");
    ok(&cluster, &["service", "scale", "-d", "api_web=3"]);
    let healed = wait_for("healed", Duration::from_secs(30), || {
        latest(&cluster, "auto").filter(|d| d["trigger"] == "self-heal")
    });
    assert_eq!(healed["commit"]["id"], reverted.as_str());
    wait_for(
        "api_web back to one replica",
        Duration::from_secs(30),
        || (replicas(&cluster, "api_web") == Some(1)).then_some(()),
    );
    wait_for("the drift cleared", Duration::from_secs(30), || {
        let status = json(&cluster, &["repo", "inspect", "auto", "--format", "json"]);
        status["status"]["drift"]
            .as_object()
            .is_none_or(|d| d.is_empty())
            .then_some(())
    });
}
