//! GitOps against one real daemon (issue 11, items 2, 3, 5 and 6): a bare repository on
//! disk is the remote, the test commits and pushes to it with git; the daemon's watcher
//! applies each commit. A pushed stack runs; a commit changing replicas scales it; invalid
//! YAML is recorded invalid and changes nothing; `git revert` goes back to the previous
//! spec; a service changed by hand is reported drifted, and healed in a repository that
//! asks for it. With three managers, the leader killed right after a sync was asked: the
//! commit is applied exactly once, by the new leader or before the old one died.
//!
//! Each test's cluster has its own address pool (198.18.212.0/23 and 198.18.240.0/22, no
//! other test uses them); a `Leftovers` guard removes what the tasks leave on the host.
//! The first test prints push → applied and push → converged times (`--nocapture`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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

/// `swarm ARGS` against node 0.
fn ok(cluster: &Cluster, args: &[&str]) -> String {
    ok_on(cluster, 0, args)
}

/// `swarm ARGS` against node `n`.
fn ok_on(cluster: &Cluster, n: usize, args: &[&str]) -> String {
    let out = common::swarm(&cluster.socket(n), args);
    assert!(
        out.status.success(),
        "`swarm {}`: {}",
        args.join(" "),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn json(cluster: &Cluster, args: &[&str]) -> serde_json::Value {
    json_on(cluster, 0, args)
}

fn json_on(cluster: &Cluster, n: usize, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok_on(cluster, n, args)).unwrap()
}

/// Repository `repo`'s newest Deployment, as `deploy ls --format json` shows it.
fn latest(cluster: &Cluster, repo: &str) -> Option<serde_json::Value> {
    deployments_on(cluster, 0, repo).into_iter().next()
}

/// Repository `repo`'s Deployments, newest first, as node `n` shows them.
fn deployments_on(cluster: &Cluster, n: usize, repo: &str) -> Vec<serde_json::Value> {
    json_on(
        cluster,
        n,
        &["deploy", "ls", "--repo", repo, "--format", "json"],
    )
    .as_array()
    .cloned()
    .unwrap_or_default()
}

/// How long until `repo`'s newest Deployment is of `commit` and reached `outcome`
/// (checked every 20 ms, at most 60 s).
fn time_to(cluster: &Cluster, repo: &str, commit: &str, outcome: &str, since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(60);
    loop {
        let reached = latest(cluster, repo)
            .is_some_and(|d| d["commit"]["id"] == commit && d["outcome"]["state"] == outcome);
        if reached {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{repo}: {commit} not {outcome} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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

    // Replicas changed in git: scaled (`repo sync`, as a webhook does, fetches at once).
    std::fs::write(&app, stack(&registry, 10)).unwrap();
    let scaled = push(&work, "ten replicas");
    let pushed = Instant::now();
    ok(&cluster, &["repo", "sync", "site"]);
    let applied = time_to(&cluster, "site", &scaled, "applied", pushed);
    let converged = time_to(&cluster, "site", &scaled, "converged", pushed);
    eprintln!(
        "push + sync -> applied {:.0} ms, -> 10 replicas running (converged) {:.0} ms",
        applied.as_secs_f64() * 1e3,
        converged.as_secs_f64() * 1e3
    );
    assert_eq!(replicas(&cluster, "app_web"), Some(10));
    assert_eq!(running(&cluster, "app_web"), 10);

    // Invalid YAML: recorded invalid with its findings; what runs is untouched.
    std::fs::write(
        &app,
        stack(&registry, 10).replace("replicas: 10", "replicas: many"),
    )
    .unwrap();
    let broken = push(&work, "broken");
    // Found by the poll (every 2 s), not a sync.
    let polled = time_to(&cluster, "site", &broken, "invalid", Instant::now());
    eprintln!(
        "push -> processed by polling (interval 2 s) {:.0} ms",
        polled.as_secs_f64() * 1e3
    );
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
    assert_eq!(replicas(&cluster, "app_web"), Some(10));
    assert_eq!(running(&cluster, "app_web"), 10);

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

/// The leader of a three-manager cluster killed right after a sync was asked: the new
/// leader processes the commit, once.
#[test]
fn a_commit_is_applied_exactly_once_when_the_leader_dies_during_its_sync() {
    let Some(registry) = registry_for("gitops_e2e_failover") else {
        return;
    };
    let registry = registry.addr();
    let cluster = cluster(3, &init_args("198.18.240.0/22", &[]));
    let _leftovers = Leftovers(&cluster);
    cluster.join(1, "manager", 0);
    cluster.join(2, "manager", 0);
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("remote.git");
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("stacks")).unwrap();
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
    let first = push(&work, "deploy the app");
    // A long interval: only the sync (and a new leader's first pass) fetch.
    ok(
        &cluster,
        &[
            "repo",
            "add",
            "site",
            remote.to_str().unwrap(),
            "--path",
            "stacks",
            "--interval",
            "10m",
        ],
    );
    reaches(&cluster, "site", &first, "converged");
    let leader = cluster.listing(0);
    assert!(
        common::node_line(&leader, "node1").is_some_and(|l| l.ends_with("Leader")),
        "{leader}"
    );

    std::fs::write(&app, stack(&registry, 2)).unwrap();
    let second = push(&work, "two replicas");
    ok_on(&cluster, 1, &["repo", "sync", "site"]);
    common::kill_hard(cluster.daemons[0].as_ref().unwrap());

    let processed = wait_for(
        "the new leader processed the commit",
        Duration::from_secs(60),
        || {
            let out = common::swarm(
                &cluster.socket(1),
                &["deploy", "ls", "--repo", "site", "--format", "json"],
            );
            let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
            all.iter()
                .any(|d| d["commit"]["id"] == second.as_str())
                .then_some(all)
        },
    );
    // Past the new leader's first passes: still one Deployment of the commit.
    std::thread::sleep(Duration::from_secs(3));
    let all = deployments_on(&cluster, 1, "site");
    let of_second = all
        .iter()
        .filter(|d| d["commit"]["id"] == second.as_str())
        .count();
    assert_eq!(of_second, 1, "{all:#?} (first seen: {processed:#?})");
    assert_eq!(all.len(), 2, "{all:#?}");
    let state = json_on(&cluster, 1, &["state", "export"]);
    let web = state["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["spec"]["name"] == "app_web")
        .unwrap()
        .clone();
    assert_eq!(web["spec"]["replicas"], 2);
}
