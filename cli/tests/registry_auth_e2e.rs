//! Registry credentials end to end: a loopback registry that wants basic authentication
//! for every request, `swarm login|logout` writing a Docker client config in a temp dir
//! (`DOCKER_CONFIG`), and services created, updated and deployed from that registry with
//! `--with-registry-auth`, their tasks run by runc. The password must show nowhere: not in
//! `service inspect`, `state export`, or the daemon's log.
//!
//! Address pools: 198.18.252.0/23 (no other test uses it).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::Value;
use swarm_testkit::{TEST_PASSWORD, TEST_USER};

/// A pull, a start, a report through the dispatcher, and the restart delay of a failed
/// task, with room for parallel tests on two cores.
const TASK_WAIT: Duration = Duration::from_secs(90);

/// `swarm ARGS` against node 0 with Docker's client config in `docker_config`, `stdin`
/// written to its standard input.
fn swarm_with_config(
    cluster: &Cluster,
    docker_config: &Path,
    args: &[&str],
    stdin: &str,
) -> Output {
    output_with_input(
        Command::new(env!("CARGO_BIN_EXE_swarm"))
            .args(args)
            .env(
                "SWARM_HOST",
                format!("unix://{}", cluster.socket(0).display()),
            )
            .env("DOCKER_CONFIG", docker_config),
        stdin,
    )
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Every task of `service`, history included.
fn all_tasks(cluster: &Cluster, service: &str) -> Vec<Value> {
    let out = swarm(
        &cluster.socket(0),
        &["service", "ps", service, "--format", "json"],
    );
    serde_json::from_str(&succeeded(&out)).unwrap()
}

/// Waits until `service` has one live task, running; returns it.
fn running(cluster: &Cluster, service: &str) -> Value {
    wait_for(&format!("{service} running"), TASK_WAIT, || {
        let mut tasks = live_tasks(cluster, service);
        (tasks.len() == 1 && tasks[0]["status"]["state"] == "running").then(|| tasks.remove(0))
    })
}

#[test]
fn services_pull_from_an_authenticated_registry_with_registry_auth() {
    let test = "services_pull_from_an_authenticated_registry_with_registry_auth";
    let Some(registry) = registry_with_auth_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(1, &init_args("198.18.252.0/23", &[]));
    let docker_config = tempfile::tempdir().unwrap();
    let config = docker_config.path();

    // No credentials: the task fails, saying which registry refused it.
    succeeded(&swarm_with_config(
        &cluster,
        config,
        &["service", "create", "-d", "--name", "private", &image],
        "",
    ));
    let refused = format!("registry {} refused access", registry.addr());
    let failed = wait_for("the task refused by the registry", TASK_WAIT, || {
        all_tasks(&cluster, "private")
            .into_iter()
            .find(|t| t["status"]["state"] == "failed")
    });
    let error = failed["status"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&refused) && error.contains("--with-registry-auth"),
        "{failed}"
    );
    let table = succeeded(&swarm(&cluster.socket(0), &["service", "ps", "private"]));
    assert!(table.contains(&refused), "{table}");

    // Logged in (docker's file format, written by swarm).
    let out = swarm_with_config(
        &cluster,
        config,
        &[
            "login",
            &registry.addr(),
            "-u",
            TEST_USER,
            "--password-stdin",
        ],
        &format!("{TEST_PASSWORD}\n"),
    );
    assert!(text(&out.stdout).contains("not checked with the registry"));
    succeeded(&out);
    let written = config.join("config.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&written).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // The same service with the login's credentials: it converges (update waits for it).
    succeeded(&swarm_with_config(
        &cluster,
        config,
        &["service", "update", "--with-registry-auth", "private"],
        "",
    ));
    running(&cluster, "private");

    // An update without the flag keeps the credentials: a forced new task pulls (its tag
    // is resolved with the registry) and runs.
    let before = running(&cluster, "private")["id"].clone();
    succeeded(&swarm_with_config(
        &cluster,
        config,
        &["service", "update", "--force", "private"],
        "",
    ));
    let after = running(&cluster, "private");
    assert_ne!(after["id"], before, "a new task");

    // A stack deployed with the flag runs too.
    let stack = config.join("stack.yml");
    std::fs::write(&stack, format!("services:\n  web:\n    image: {image}\n")).unwrap();
    let stack_path = stack.to_string_lossy();
    succeeded(&swarm_with_config(
        &cluster,
        config,
        &[
            "stack",
            "deploy",
            "--with-registry-auth",
            "-c",
            &stack_path,
            "authed",
        ],
        "",
    ));
    running(&cluster, "authed_web");

    // The password shows nowhere.
    for args in [
        &["service", "inspect", "private"][..],
        &["service", "inspect", "authed_web"][..],
        &["state", "export"][..],
    ] {
        let shown = succeeded(&swarm(&cluster.socket(0), args));
        assert!(!shown.contains(TEST_PASSWORD), "{args:?}: {shown}");
    }
    assert!(!cluster.log(0).contains(TEST_PASSWORD), "the daemon's log");

    // Logged out, the file keeps nothing for the registry.
    let out = swarm_with_config(&cluster, config, &["logout", &registry.addr()], "");
    assert!(succeeded(&out).contains("Removing login credentials"));
    let document = std::fs::read_to_string(&written).unwrap();
    assert!(!document.contains(&registry.addr()), "{document}");

    succeeded(&swarm(
        &cluster.socket(0),
        &["service", "rm", "private", "authed_web"],
    ));
    wait_for("no container left", TASK_WAIT, || {
        containers(&cluster, 0).is_empty().then_some(())
    });
    succeeded(&swarm(&cluster.socket(0), &["leave", "--force"]));
}

/// A credential helper holds the registry's login: `--with-registry-auth` refuses, says
/// why, and nothing is created.
#[test]
fn registry_auth_from_a_credential_helper_is_refused_with_a_way_around() {
    let test = "registry_auth_from_a_credential_helper_is_refused_with_a_way_around";
    if !swarm_testkit::require(test, swarm_testkit::is_root(), "root") {
        return;
    }
    let cluster = cluster(1, &init_args("198.18.254.0/23", &[]));
    let docker_config = tempfile::tempdir().unwrap();
    std::fs::write(
        docker_config.path().join("config.json"),
        r#"{"auths":{"127.0.0.1:5999":{}},"credsStore":"desktop"}"#,
    )
    .unwrap();
    let out = swarm_with_config(
        &cluster,
        docker_config.path(),
        &[
            "service",
            "create",
            "-d",
            "--with-registry-auth",
            "--name",
            "helped",
            "127.0.0.1:5999/swarm/hello:1",
        ],
        "",
    );
    assert!(!out.status.success());
    let error = text(&out.stderr);
    assert!(
        error.contains("credential helper \"desktop\"")
            && error.contains("swarm login 127.0.0.1:5999"),
        "{error}"
    );
    let listed = succeeded(&swarm(&cluster.socket(0), &["service", "ls"]));
    assert!(!listed.contains("helped"), "{listed}");
    succeeded(&swarm(&cluster.socket(0), &["leave", "--force"]));
}
