//! `swarm repo` against a real daemon (issue 11, item 1): a repository declared with a token
//! and a webhook secret, by `init --repo` and by `repo add`, is listed and inspected without
//! either secret appearing in any output, export or log; bad declarations are refused with
//! clear errors; `repo sync` records a request; `repo rm` forgets it.

mod common;

use std::path::Path;
use std::process::Output;

use common::{swarm, text};

const TOKEN: &str = "tok-SECRET-8c1f2e";
const WEBHOOK_SECRET: &str = "hook-SECRET-77d0a3";
const PASSWORD: &str = "pw-SECRET-41b9";

/// Runs `swarm ARGS`, checks that no secret is in what it printed, and returns it.
fn run(socket: &Path, args: &[&str]) -> Output {
    let out = swarm(socket, args);
    for stream in [text(&out.stdout), text(&out.stderr)] {
        for secret in [TOKEN, WEBHOOK_SECRET, PASSWORD] {
            assert!(
                !stream.contains(secret),
                "`swarm {}` printed a secret: {stream}",
                args.join(" ")
            );
        }
    }
    out
}

fn ok(socket: &Path, args: &[&str]) -> String {
    let out = run(socket, args);
    assert!(
        out.status.success(),
        "`swarm {}`: {}",
        args.join(" "),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn fails(socket: &Path, args: &[&str]) -> String {
    let out = run(socket, args);
    assert!(
        !out.status.success(),
        "`swarm {}` succeeded: {}",
        args.join(" "),
        text(&out.stdout)
    );
    text(&out.stderr)
}

#[test]
fn repositories_are_declared_listed_and_removed_without_showing_secrets() {
    let files = tempfile::tempdir().unwrap();
    let token = files.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let hook = files.path().join("hook");
    std::fs::write(&hook, WEBHOOK_SECRET).unwrap();
    let password = files.path().join("password");
    std::fs::write(&password, PASSWORD).unwrap();
    let (token, hook, password) = (
        token.to_str().unwrap(),
        hook.to_str().unwrap(),
        password.to_str().unwrap(),
    );

    // One command: the cluster, and a repository named after its URL.
    let cluster = common::cluster(
        1,
        &[
            "--repo",
            "https://git.example.com/team/platform.git",
            "--path",
            "stacks/",
            "--username",
            "deploy",
            "--password-file",
            password,
        ],
    );
    let socket = cluster.socket(0);
    let listing = ok(&socket, &["repo", "ls"]);
    let row = common::node_line(&listing, "platform").expect("platform is listed");
    assert!(
        row.contains("https://git.example.com/team/platform.git") && row.contains("stacks"),
        "{listing}"
    );

    ok(
        &socket,
        &[
            "repo",
            "add",
            "app",
            "https://git.example.com/team/app.git",
            "--branch",
            "prod",
            "--path",
            "deploy/stacks",
            "--interval",
            "30s",
            "--token-file",
            token,
            "--webhook-secret-file",
            hook,
            "--self-heal",
        ],
    );
    let listing = ok(&socket, &["repo", "ls"]);
    let row = common::node_line(&listing, "app").expect("app is listed");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..4],
        [
            "app",
            "https://git.example.com/team/app.git",
            "prod",
            "deploy/stacks"
        ],
        "{listing}"
    );
    assert_eq!(
        ok(&socket, &["repo", "ls", "-q"])
            .lines()
            .collect::<Vec<_>>(),
        ["app", "platform"]
    );

    let inspect = ok(&socket, &["repo", "inspect", "app"]);
    assert!(inspect.contains("Credentials:    token\n"), "{inspect}");
    assert!(inspect.contains("Webhook secret: set\n"), "{inspect}");
    assert!(inspect.contains("Self-heal:      true\n"), "{inspect}");
    let json: serde_json::Value = serde_json::from_str(&ok(
        &socket,
        &["repo", "inspect", "app", "--format", "json"],
    ))
    .unwrap();
    assert_eq!(json["credentials"], "token");
    assert_eq!(json["webhook_secret"], true);
    assert_eq!(json["repository"]["interval_ms"], 30_000);
    assert_eq!(json["repository"]["branch"], "prod");
    let platform: serde_json::Value = serde_json::from_str(&ok(
        &socket,
        &["repo", "inspect", "platform", "--format", "json"],
    ))
    .unwrap();
    assert_eq!(platform["credentials"], "basic");
    assert_eq!(platform["webhook_secret"], false);
    assert_eq!(platform["repository"]["path"], "stacks");
    ok(&socket, &["repo", "ls", "--format", "json"]);
    ok(&socket, &["state", "export"]);

    // Refused, each with its reason, naming no secret.
    let error = fails(
        &socket,
        &[
            "repo",
            "add",
            "leaky",
            &format!("https://deploy:{PASSWORD}@git.example.com/x.git"),
        ],
    );
    assert!(
        error.contains("put credentials in --token-file/--password-file"),
        "{error}"
    );
    let missing = files.path().join("missing-token");
    let error = fails(
        &socket,
        &[
            "repo",
            "add",
            "other",
            "/srv/git/other",
            "--token-file",
            missing.to_str().unwrap(),
        ],
    );
    assert!(
        error.contains(&format!("cannot read --token-file {}", missing.display())),
        "{error}"
    );
    let error = fails(&socket, &["repo", "add", "app", "/srv/git/app"]);
    assert!(error.contains("repository app already exists"), "{error}");
    let error = fails(
        &socket,
        &[
            "repo",
            "add",
            "fast",
            "/srv/git/fast",
            "--interval",
            "500ms",
        ],
    );
    assert!(error.contains("at least 1s"), "{error}");
    let error = fails(
        &socket,
        &[
            "repo",
            "add",
            "both",
            "/srv/git/both",
            "--token-file",
            token,
            "--ssh-key",
            hook,
        ],
    );
    assert!(error.contains("cannot be used with"), "{error}");
    for command in [
        &["repo", "inspect", "nope"][..],
        &["repo", "sync", "nope"],
        &["repo", "rm", "nope"],
    ] {
        let error = fails(&socket, command);
        assert!(error.contains("no repository nope"), "{error}");
    }
    assert_eq!(
        ok(&socket, &["repo", "ls", "-q"])
            .lines()
            .collect::<Vec<_>>(),
        ["app", "platform"]
    );

    // A sync is recorded for the leader's watcher.
    let out = ok(&socket, &["repo", "sync", "app"]);
    assert!(out.contains("Sync of repository app requested"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&ok(
        &socket,
        &["repo", "inspect", "app", "--format", "json"],
    ))
    .unwrap();
    assert_eq!(json["status"]["sync"]["trigger"], "sync", "{json}");

    // Nothing deployed yet (the watcher records Deployments): empty lists, clear errors.
    assert_eq!(
        ok(&socket, &["deploy", "ls"]),
        "ID   REPO   COMMIT   AUTHOR   MESSAGE   TRIGGER   OUTCOME   AGE\n"
    );
    assert_eq!(ok(&socket, &["deploy", "ls", "--repo", "app", "-q"]), "");
    let error = fails(&socket, &["deploy", "ls", "--repo", "nope"]);
    assert!(error.contains("no repository nope"), "{error}");
    let error = fails(&socket, &["deploy", "show", "1a2b3c4d"]);
    assert!(
        error.contains("no deployment of a commit 1a2b3c4d"),
        "{error}"
    );
    let error = fails(&socket, &["deploy", "rollback"]);
    assert!(error.contains("name one with --repo"), "{error}");
    let error = fails(&socket, &["deploy", "rollback", "--repo", "app"]);
    assert!(
        error.contains("repository app has no deployment that changed the cluster"),
        "{error}"
    );

    // Removed: a repository that deployed nothing removes nothing, even with --prune.
    let out = ok(&socket, &["repo", "rm", "app", "--prune"]);
    assert_eq!(out, "Removed repository app\n");
    ok(&socket, &["repo", "rm", "platform"]);
    assert_eq!(ok(&socket, &["repo", "ls", "-q"]), "");

    let log = cluster.log(0);
    for secret in [TOKEN, WEBHOOK_SECRET, PASSWORD] {
        assert!(!log.contains(secret), "the daemon logged a secret: {log}");
    }
}
