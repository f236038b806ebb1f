//! Compose fidelity end to end (issue 15): a stack deployed whole on a real daemon, whose
//! `web` depends on `db` being healthy, runs swarm-init as its PID 1 (`init: true`) and has
//! its `extra_hosts` in /etc/hosts and its `dns_search` in /etc/resolv.conf. `web`'s task
//! waits, saying so in `service ps`, until `db`'s passes its healthcheck.
//!
//! Address pool 198.18.249.0/24; the cluster, dropped, removes containers, mounts and bridges
//! even when the test fails. Needs root, runc, busybox and docker-registry; skipped with a
//! message otherwise, except under CI=true.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(90);

#[test]
fn a_stack_waits_for_its_dependency_then_runs_with_its_runtime_keys() {
    let test = "a_stack_waits_for_its_dependency_then_runs_with_its_runtime_keys";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(1, &init_args("198.18.249.0/24", &[]));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let stack = dir.path().join("dep.yaml");
    // db is healthy only once its marker exists, 3 s after it starts (within its start
    // period, the checks that fail before do not count).
    let file = format!(
        "services:
  db:
    image: {image}
    entrypoint: [/bin/sh, -c]
    command: ['sleep 3; touch /tmp/ready; while true; do sleep 1; done']
    healthcheck:
      test: [CMD, test, -e, /tmp/ready]
      interval: 1s
      start_period: 20s
    stop_grace_period: 1s
  web:
    image: {image}
    init: true
    extra_hosts: ['backup:10.0.0.9']
    dns_search: [corp.example]
    depends_on:
      db:
        condition: service_healthy
    entrypoint: [/bin/sh, -c]
    command: ['cat /proc/1/comm > /out/pid1; grep backup /etc/hosts > /out/hosts; grep search /etc/resolv.conf > /out/search; while true; do sleep 1; done']
    volumes: ['./out:/out']
    stop_grace_period: 1s
"
    );
    std::fs::write(&stack, file).unwrap();
    ok(
        &cluster,
        &[
            "stack",
            "deploy",
            "-d",
            "-c",
            &stack.to_string_lossy(),
            "dep",
        ],
    );

    // While db starts, web's task waits and says what for.
    let waiting = wait_for("web waiting for db", WAIT, || {
        let tasks = live_tasks(&cluster, "dep_web");
        let task = tasks.first()?;
        (task["status"]["state"] == "pending").then(|| task["status"]["message"].clone())
    });
    assert_eq!(waiting, "waiting for service dep_db to be healthy");
    let ps = ok(&cluster, &["service", "ps", "dep_web"]);
    assert!(
        ps.contains("waiting for service dep_db to be healthy"),
        "{ps}"
    );

    let deadline = std::time::Instant::now() + WAIT;
    while live_tasks(&cluster, "dep_web")[0]["status"]["state"] != "running" {
        assert!(
            std::time::Instant::now() < deadline,
            "web not running: {}\n{}\n{}",
            ok(&cluster, &["service", "ps", "dep_db", "--format", "json"]),
            ok(&cluster, &["service", "ps", "dep_web", "--format", "json"]),
            cluster.log(0)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let db = live_tasks(&cluster, "dep_db");
    assert_eq!(db[0]["status"]["state"], "running", "db ran first: {db:?}");
    let out = |name: &str| {
        let path = dir.path().join("out").join(name);
        wait_for(&format!("{}", path.display()), WAIT, || {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|text| !text.is_empty())
        })
    };
    assert_eq!(out("pid1"), "swarm-init\n");
    assert_eq!(out("hosts"), "10.0.0.9\tbackup\n");
    assert_eq!(out("search"), "search corp.example\n");
    ok(&cluster, &["stack", "rm", "dep"]);
}
