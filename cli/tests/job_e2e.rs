//! Jobs end to end (issue 15): a replicated job of 3 completions, 2 at once, runs
//! `sleep 1; exit 0` on a real daemon: `service create` waits until it completed, `service
//! ls` shows `0/0 (3/3 completed)`, exactly 3 tasks ran (none restarted, never more than 2
//! at once), and `service update --force` runs it again; a job whose task fails with no
//! retry ends the wait with the failure; a job from a stack file completes under `stack
//! deploy`'s wait. A global job on two test hosts completes once on each.
//!
//! Address pools inside 198.18.120.0/23; the cluster, dropped, removes containers, mounts
//! and bridges even when a test fails. Needs root, runc, busybox and docker-registry;
//! skipped with a message otherwise, except under CI=true.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Every task of `service` that `service ps` lists, history included.
fn all_tasks(cluster: &Cluster, service: &str) -> Vec<serde_json::Value> {
    let out = ok(cluster, &["service", "ps", service, "--format", "json"]);
    serde_json::from_str(&out).unwrap()
}

/// The most tasks that ran at once: over each task's life, from when it first ran (or,
/// if no running report came before its end, when it was made) to when it completed.
fn most_at_once(tasks: &[serde_json::Value]) -> usize {
    let runs: Vec<(u64, u64)> = tasks
        .iter()
        .map(|t| {
            let started = t["started_at"].as_u64().or(t["created_at"].as_u64());
            (started.unwrap(), t["status"]["since"].as_u64().unwrap())
        })
        .collect();
    runs.iter()
        .map(|(start, _)| {
            runs.iter()
                .filter(|(s, end)| s <= start && start < end)
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn states(tasks: &[serde_json::Value]) -> Vec<String> {
    tasks
        .iter()
        .map(|t| t["status"]["state"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_replicated_job_completes_max_concurrent_at_a_time_and_again_when_forced() {
    let test = "a_replicated_job_completes_max_concurrent_at_a_time_and_again_when_forced";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(1, &init_args("198.18.120.0/24", &[]));
    let started = Instant::now();
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "create",
            "--name",
            "job",
            "--mode",
            "replicated-job",
            "--replicas",
            "3",
            "--max-concurrent",
            "2",
            "--entrypoint",
            "/bin/sh -c",
            &image,
            "sleep 1; exit 0",
        ],
    );
    let waited = started.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("job: converged"),
        "{}",
        text(&out.stderr)
    );
    eprintln!("service create of a 3-completion job, 2 at once, waited {waited:?}");
    // Two rounds of a task of at least 1 s: the wait ended when the job did.
    assert!(waited >= Duration::from_secs(2), "{waited:?}");

    let ls = ok(&cluster, &["service", "ls"]);
    let line = ls.lines().find(|l| l.contains(" job ")).expect("listed");
    assert!(
        line.contains("replicated job") && line.contains("0/0 (3/3 completed)"),
        "{ls}"
    );
    let tasks = all_tasks(&cluster, "job");
    assert_eq!(
        states(&tasks),
        ["complete"; 3],
        "none restarted: {tasks:#?}"
    );
    assert_eq!(most_at_once(&tasks), 2, "{tasks:#?}");
    let ps = ok(&cluster, &["service", "ps", "job"]);
    assert_eq!(
        ps.matches("Complete ").count(),
        6,
        "desired and current: {ps}"
    );
    let inspect = ok(&cluster, &["service", "inspect", "--pretty", "job"]);
    assert!(
        inspect.contains("ReplicatedJob") && inspect.contains("Total Completions: 3"),
        "{inspect}"
    );

    // Forced, it runs again: three new tasks; the first three stay as history.
    let first: Vec<String> = tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    ok(&cluster, &["service", "update", "--force", "job"]);
    let live = live_tasks(&cluster, "job");
    assert_eq!(states(&live), ["complete"; 3], "{live:#?}");
    assert!(
        live.iter()
            .all(|t| !first.contains(&t["id"].as_str().unwrap().to_owned())),
        "{live:#?}"
    );
    let tasks = all_tasks(&cluster, "job");
    assert_eq!(tasks.len(), 6, "{tasks:#?}");
    let ls = ok(&cluster, &["service", "ls"]);
    assert!(ls.contains("0/0 (3/3 completed)"), "{ls}");
    ok(&cluster, &["service", "rm", "job"]);

    // A job that fails, with no retry: the wait ends at once, saying so.
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "create",
            "--name",
            "broken",
            "--mode",
            "replicated-job",
            "--restart-condition",
            "none",
            "--entrypoint",
            "/bin/sh -c",
            &image,
            "exit 3",
        ],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("broken: job failed: task broken.1 failed"),
        "{stderr}"
    );
    ok(&cluster, &["service", "rm", "broken"]);

    // From a stack file, as Docker's loader reads it; `stack deploy` waits for it too, and
    // `app` (`service_completed_successfully`) starts only once both completions are done.
    let dir = tempfile::tempdir().unwrap();
    let stack = dir.path().join("batch.yaml");
    let file = format!(
        "services:
  seed:
    image: {image}
    entrypoint: [/bin/sh, -c]
    command: ['sleep 1; exit 0']
    deploy:
      mode: replicated-job
      replicas: 2
  app:
    image: {image}
    depends_on:
      seed: {{condition: service_completed_successfully}}
"
    );
    std::fs::write(&stack, file).unwrap();
    ok(
        &cluster,
        &["stack", "deploy", "-c", &stack.to_string_lossy(), "batch"],
    );
    let tasks = all_tasks(&cluster, "batch_seed");
    assert_eq!(states(&tasks), ["complete"; 2], "{tasks:#?}");
    let completed = tasks
        .iter()
        .filter_map(|t| t["status"]["since"].as_u64())
        .max()
        .unwrap();
    let app = wait_for("app running", Duration::from_secs(60), || {
        all_tasks(&cluster, "batch_app")
            .into_iter()
            .find(|t| t["status"]["state"] == "running")
    });
    let created = app["created_at"].as_u64().unwrap();
    let started = app["started_at"].as_u64().unwrap_or(created);
    assert!(
        started >= completed,
        "app started at {started}, before the job completed at {completed}"
    );
    let ls = ok(&cluster, &["service", "ls"]);
    assert!(ls.contains("0/0 (2/2 completed)"), "{ls}");
    ok(&cluster, &["stack", "rm", "batch"]);
}

#[test]
fn a_global_job_completes_once_on_each_host() {
    let test = "a_global_job_completes_once_on_each_host";
    if !hosts_can_run_containers(test, &[]) {
        return;
    }
    // A /25 for each node's tasks: the other test has 198.18.120.0/24.
    let pool = pool_args("198.18.121.0/24", "25", &[]);
    let (cluster, registry) = workers_on_hosts("job", 2, &pool);
    let image = format!("{}/swarm/hello:1", registry.addr());
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "create",
            "--name",
            "once",
            "--mode",
            "global-job",
            "--entrypoint",
            "/bin/sh -c",
            &image,
            "sleep 1; exit 0",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tasks = all_tasks(&cluster, "once");
    assert_eq!(states(&tasks), ["complete"; 2], "{tasks:#?}");
    let mut nodes: Vec<String> = tasks
        .iter()
        .map(|t| t["node_id"].as_str().unwrap().to_owned())
        .collect();
    nodes.sort();
    let mut ids: Vec<String> = (0..2).map(|n| cluster.node_id(n).unwrap()).collect();
    ids.sort();
    assert_eq!(nodes, ids, "one on each host");
    // Nothing more runs later.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(all_tasks(&cluster, "once").len(), 2);
    let ls = ok(&cluster, &["service", "ls"]);
    let line = ls.lines().find(|l| l.contains(" once ")).expect("listed");
    assert!(
        line.contains("global job") && line.contains("0/0 (2/2 completed)"),
        "{ls}"
    );
    ok(&cluster, &["service", "rm", "once"]);
}
