//! `swarm plan --cluster` and `swarm apply` against one real daemon (issue 11, item 4):
//! a stack file in a working directory planned against the live cluster, applied as one
//! change and waited for until its tasks run; applied again, nothing to do; a saved plan
//! refused once the cluster changed under it; no confirmation, no change.
//!
//! Each test's cluster has its own address pool (198.18.206.0/23 and 198.18.208.0/23, no
//! other test uses them); the cluster, dropped, removes what the tasks leave on the host.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{
    Cluster, cluster, init_args, live_tasks, output_with_input, registry_for,
    registry_with_auth_for, text,
};

/// A stack `app` with one service, `app_web`.
fn stack(registry: &str, replicas: u32, env: &str) -> String {
    format!(
        "services:\n  web:\n    image: {registry}/swarm/hello:1\n    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n    environment:\n      STAGE: {env}\n    deploy:\n      replicas: {replicas}\n"
    )
}

/// `swarm ARGS` run in `dir` against node 0, with `input` on its stdin (a pipe: not a
/// terminal) and Docker's client config in `dir/.docker`.
fn swarm_in(cluster: &Cluster, dir: &Path, args: &[&str], input: &str) -> Output {
    output_with_input(
        Command::new(env!("CARGO_BIN_EXE_swarm"))
            .args(args)
            .current_dir(dir)
            .env(
                "SWARM_HOST",
                format!("unix://{}", cluster.socket(0).display()),
            )
            .env("DOCKER_CONFIG", dir.join(".docker"))
            .env("NO_COLOR", "1"),
        input,
    )
}

fn exit(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Service `app_web` as the cluster's state export holds it (replicas, STAGE).
fn web(cluster: &Cluster) -> Option<(u64, String)> {
    let out = common::swarm(&cluster.socket(0), &["state", "export"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let service = state["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["spec"]["name"] == "app_web")?
        .clone();
    let spec = &service["spec"];
    Some((
        spec["replicas"].as_u64().unwrap(),
        spec["task"]["container"]["env"]["STAGE"]
            .as_str()
            .unwrap()
            .to_owned(),
    ))
}

fn running(cluster: &Cluster) -> usize {
    live_tasks(cluster, "app_web")
        .iter()
        .filter(|t| t["status"]["state"] == "running")
        .count()
}

#[test]
fn apply_plans_against_the_cluster_applies_once_and_refuses_a_stale_plan() {
    let Some(registry) = registry_for("apply_plans_against_the_cluster") else {
        return;
    };
    let cluster = cluster(1, &init_args("198.18.206.0/23", &[]));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    std::fs::create_dir(dir.join("stacks")).unwrap();
    let file = dir.join("stacks/app.yaml");
    let registry = registry.addr();
    std::fs::write(&file, stack(&registry, 1, "one")).unwrap();

    // Planned against the live cluster: a create, in each format.
    let out = swarm_in(&cluster, dir, &["plan", "--cluster"], "");
    assert_eq!(out.status.code(), Some(2), "{}", exit(&out));
    assert!(
        text(&out.stdout).contains("+ create service app_web"),
        "{}",
        exit(&out)
    );
    let out = swarm_in(
        &cluster,
        dir,
        &["plan", "--cluster", "--format", "json"],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", exit(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The objects' version: 0 in a cluster where nothing was deployed yet.
    assert_eq!(plan["basis"]["state_version"], 0, "{plan}");
    let actions: Vec<(&str, &str)> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["op"].as_str().unwrap(), a["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [("create", "app_default"), ("create", "app_web")],
        "{plan}"
    );
    let out = swarm_in(
        &cluster,
        dir,
        &["plan", "--cluster", "stacks", "--format", "markdown"],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", exit(&out));
    assert!(
        text(&out.stdout).contains("### swarm plan: 2 to create"),
        "{}",
        exit(&out)
    );
    assert_eq!(web(&cluster), None, "planning changes nothing");

    // Applied, and waited for until its task runs.
    let out = swarm_in(
        &cluster,
        dir,
        &["apply", "--auto-approve", "--timeout", "90s"],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", exit(&out));
    assert!(
        text(&out.stdout).contains("+ create service app_web")
            && text(&out.stdout).contains("Applied: 2 to create."),
        "{}",
        exit(&out)
    );
    assert!(
        text(&out.stderr).contains("app_web: converged"),
        "{}",
        exit(&out)
    );
    assert_eq!(running(&cluster), 1);
    assert_eq!(web(&cluster), Some((1, "one".to_owned())));

    // Again: nothing to do.
    let out = swarm_in(&cluster, dir, &["apply", "--auto-approve", "stacks"], "");
    assert_eq!(out.status.code(), Some(0), "{}", exit(&out));
    assert!(text(&out.stdout).contains("No changes"), "{}", exit(&out));
    let out = swarm_in(&cluster, dir, &["plan", "--cluster"], "");
    assert_eq!(out.status.code(), Some(0), "{}", exit(&out));

    // A plan saved (scale to 2), then the service changed by another apply: the saved plan
    // is refused whole, naming the service, and nothing of it is applied.
    std::fs::write(&file, stack(&registry, 2, "one")).unwrap();
    let saved = dir.join("p.json");
    let out = swarm_in(
        &cluster,
        dir,
        &["plan", "--cluster", "--out", saved.to_str().unwrap()],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", exit(&out));
    assert!(
        text(&out.stdout).contains("scale service app_web"),
        "{}",
        exit(&out)
    );
    std::fs::write(&file, stack(&registry, 1, "two")).unwrap();
    let out = swarm_in(
        &cluster,
        dir,
        &["apply", "--auto-approve", "--timeout", "90s"],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", exit(&out));
    assert_eq!(web(&cluster), Some((1, "two".to_owned())));
    let out = swarm_in(
        &cluster,
        dir,
        &["apply", "--auto-approve", "--plan", saved.to_str().unwrap()],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", exit(&out));
    let error = text(&out.stderr);
    assert!(
        error.contains("the cluster changed since this plan was made")
            && error.contains("service app_web changed")
            && error.contains("plan again"),
        "{}",
        exit(&out)
    );
    assert!(!text(&out.stdout).contains("Applied"), "{}", exit(&out));
    assert_eq!(web(&cluster), Some((1, "two".to_owned())));

    // Nobody to confirm (stdin is a pipe, not a terminal) and no --auto-approve: the plan is
    // shown and refused, and nothing changes.
    std::fs::write(&file, stack(&registry, 2, "two")).unwrap();
    let out = swarm_in(&cluster, dir, &["apply"], "y\n");
    assert_eq!(out.status.code(), Some(1), "{}", exit(&out));
    assert!(
        text(&out.stdout).contains("scale service app_web"),
        "{}",
        exit(&out)
    );
    assert!(
        text(&out.stderr).contains("stdin is not a terminal")
            && text(&out.stderr).contains("--auto-approve"),
        "{}",
        exit(&out)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(web(&cluster), Some((1, "two".to_owned())));
    assert_eq!(running(&cluster), 1);

    // On a terminal (util-linux `script` gives the command one), it asks: "n" keeps the
    // cluster as it is, "y" applies.
    let test = "apply_plans_against_the_cluster (the prompt)";
    if !swarm_testkit::require(test, swarm_testkit::has_program("script"), "script") {
        return;
    }
    let out = on_a_terminal(&cluster, dir, "apply --timeout 90s", "n\n");
    assert_eq!(out.status.code(), Some(1), "{}", exit(&out));
    let screen = text(&out.stdout);
    assert!(
        screen.contains("Apply these changes? [y/N]")
            && screen.contains("apply cancelled; nothing was changed"),
        "{}",
        exit(&out)
    );
    assert_eq!(web(&cluster), Some((1, "two".to_owned())));
    let out = on_a_terminal(&cluster, dir, "apply --timeout 90s", "y\n");
    assert_eq!(out.status.code(), Some(2), "{}", exit(&out));
    let screen = text(&out.stdout);
    assert!(
        screen.contains("Applied: 1 to scale.") && screen.contains("app_web: converged"),
        "{}",
        exit(&out)
    );
    assert_eq!(web(&cluster), Some((2, "two".to_owned())));
    assert_eq!(running(&cluster), 2);
}

/// `swarm ARGS` run in `dir` on a pseudo-terminal (`script`), typing `typed`; everything it
/// wrote to the terminal is the output's stdout.
fn on_a_terminal(cluster: &Cluster, dir: &Path, args: &str, typed: &str) -> Output {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_swarm"));
    output_with_input(
        Command::new("timeout")
            .args(["120", "script", "-qec", &command, "/dev/null"])
            .current_dir(dir)
            .env(
                "SWARM_HOST",
                format!("unix://{}", cluster.socket(0).display()),
            )
            .env("NO_COLOR", "1"),
        typed,
    )
}

/// `--with-registry-auth` as `stack deploy` has it: the credentials of Docker's client
/// config for the images of the services the plan creates reach the node, which pulls from
/// a registry that wants them; no output shows the password.
#[test]
fn apply_with_registry_auth_pulls_from_a_private_registry() {
    let test = "apply_with_registry_auth_pulls_from_a_private_registry";
    let Some(registry) = registry_with_auth_for(test) else {
        return;
    };
    let cluster = cluster(1, &init_args("198.18.208.0/23", &[]));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    std::fs::write(dir.join("app.yaml"), stack(&registry.addr(), 1, "private")).unwrap();
    let login = [
        "login",
        &registry.addr(),
        "-u",
        swarm_testkit::TEST_USER,
        "--password-stdin",
    ];
    let out = swarm_in(
        &cluster,
        dir,
        &login,
        &format!("{}\n", swarm_testkit::TEST_PASSWORD),
    );
    assert!(out.status.success(), "{}", exit(&out));

    let out = swarm_in(
        &cluster,
        dir,
        &[
            "apply",
            "app.yaml",
            "--auto-approve",
            "--with-registry-auth",
            "--timeout",
            "90s",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", exit(&out));
    assert!(
        text(&out.stderr).contains("app_web: converged"),
        "{}",
        exit(&out)
    );
    assert_eq!(running(&cluster), 1);
    for output in [&out.stdout, &out.stderr] {
        assert!(!text(output).contains(swarm_testkit::TEST_PASSWORD));
    }
}
