//! The agent end to end with real containers: daemons as processes, images from a loopback
//! registry, containers run by runc in the nodes' task networks. What a node does when its
//! daemon is killed and restarted, and what healthchecks, the restart policy, a memory
//! limit and a missing command make of a task, as `swarm service ps` shows it.
//!
//! Every test has its own cluster with its own address pool (198.18.230.0/23 to
//! 198.18.238.0/23, and 198.18.250.0/23; two /23 apart), so tests running in parallel never share a subnet; the cluster, dropped,
//! removes containers, mounts and bridges even when a test fails.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// How long a task may take to reach a state it is waiting for (a pull, a start, a report
/// through the dispatcher), with room for the parallel tests on two cores.
const TASK_WAIT: Duration = Duration::from_secs(60);

/// `swarm service create ARGS`, which must succeed.
fn create(cluster: &Cluster, args: &[&str]) {
    // Detached: the tests watch the tasks themselves (some never converge on purpose).
    let mut full = vec!["service", "create", "-d"];
    full.extend_from_slice(args);
    let out = swarm(&cluster.socket(0), &full);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Every task of `service`, history included, as `service ps --format json` gives them.
fn all_tasks(cluster: &Cluster, service: &str) -> Vec<Value> {
    let out = swarm(
        &cluster.socket(0),
        &["service", "ps", service, "--format", "json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `service ps` table of `service`.
fn ps_table(cluster: &Cluster, service: &str) -> String {
    let out = swarm(&cluster.socket(0), &["service", "ps", service]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

fn id_of(task: &Value) -> String {
    task["id"].as_str().expect("a task id").to_owned()
}

fn state_of(task: &Value) -> &str {
    task["status"]["state"].as_str().unwrap_or_default()
}

fn error_of(task: &Value) -> &str {
    task["status"]["error"].as_str().unwrap_or_default()
}

/// Waits until `service` has `count` live tasks, all running; returns them.
fn running_tasks(cluster: &Cluster, service: &str, count: usize) -> Vec<Value> {
    wait_for(
        &format!("{count} running tasks of {service}"),
        TASK_WAIT,
        || {
            let tasks = live_tasks(cluster, service);
            (tasks.len() == count && tasks.iter().all(|t| state_of(t) == "running"))
                .then_some(tasks)
        },
    )
}

/// Waits until the task at `address` answers with its hostname (its id's first twelve
/// characters) and the image's version 1.
fn assert_answers(task: &Value) {
    let address = task["status"]["address"].as_str().expect("an address");
    let id = id_of(task);
    let body = wait_for(
        &format!("task {id} answering at {address}"),
        Duration::from_secs(10),
        || http_get(address),
    );
    assert_eq!(body, format!("{} v1", &id[..12]), "{address}");
}

/// The pid of container `id`'s init on node `n`, as `runc state` reports it.
fn init_pid(cluster: &Cluster, n: usize, id: &str) -> i64 {
    let out = Command::new("runc")
        .arg("--root")
        .arg(cluster.data(n).join("runc"))
        .args(["state", id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{id}: {}", text(&out.stderr));
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["status"], "running", "{id}: {state}");
    state["pid"].as_i64().expect("a pid")
}

/// The end every test should reach: its services removed, no container left, every node
/// gone from the cluster (nodes `1..` first), and nothing of theirs left on the host: no
/// mount under the cluster's dir, no bridge or its FORWARD rule, no cgroup.
fn remove_all(cluster: &Cluster, services: &[&str]) {
    let mut args = vec!["service", "rm"];
    args.extend_from_slice(services);
    let out = swarm(&cluster.socket(0), &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("no container left", TASK_WAIT, || {
        (0..cluster.nodes.len())
            .all(|n| containers(cluster, n).is_empty())
            .then_some(())
    });
    let node_ids: Vec<String> = (0..cluster.nodes.len())
        .map(|n| cluster.node_id(n).expect("a member"))
        .collect();
    for n in (0..cluster.nodes.len()).rev() {
        let out = swarm(&cluster.socket(n), &["leave", "--force"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let bridges = links_in(&cluster.pools);
    assert!(bridges.is_empty(), "bridges left: {bridges:?}");
    let rules = Command::new("iptables")
        .args(["-w", "5", "-S", "FORWARD"])
        .output()
        .unwrap();
    for id in &node_ids {
        let bridge = swarm_agent::network::bridge_name(id);
        assert!(
            !text(&rules.stdout).contains(&bridge),
            "the FORWARD rule of {bridge} is left"
        );
    }
    for id in &node_ids {
        let left = node_cgroup_dirs(id);
        // Removed before failing: once a node left, its id is known nowhere else.
        for dir in &left {
            let _ = std::fs::remove_dir(dir);
        }
        assert!(left.is_empty(), "node {id} left its cgroups: {left:?}");
    }
    let dir = cluster.nodes[0]
        .0
        .parent()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&dir), "{mounts}");
}

/// A worker's daemon SIGKILLed while its three tasks run: the containers go on answering;
/// restarted from its data dir, the daemon adopts them (the same tasks, the same container
/// processes, nothing new). Then an adopted container that dies is replaced, a scale-down
/// stops another, and the last one's healthcheck goes on.
#[test]
fn a_restarted_agent_adopts_its_running_containers() {
    let test = "a_restarted_agent_adopts_its_running_containers";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    // 30 missed heartbeats: the managers must not give up on the worker (and replace its
    // tasks) while its daemon is down; that is another test's matter.
    let cluster = cluster(
        2,
        &init_args("198.18.230.0/23", &["--missed-heartbeats", "30"]),
    );
    cluster.join(1, "worker", 0);

    create(
        &cluster,
        &[
            "--name",
            "web",
            "--replicas",
            "3",
            "--constraint",
            "node.role==worker",
            "--stop-grace-period",
            "1s",
            "--restart-delay",
            "1s",
            // Healthy until told otherwise, to see the check go on after the restart.
            "--health-cmd",
            "test ! -f /tmp/sick",
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
            &image,
        ],
    );
    let tasks = running_tasks(&cluster, "web", 3);
    let ids: BTreeSet<String> = tasks.iter().map(id_of).collect();
    for task in &tasks {
        assert_answers(task);
    }
    assert_eq!(
        containers(&cluster, 1).into_iter().collect::<BTreeSet<_>>(),
        ids
    );
    let pids: Vec<i64> = ids.iter().map(|id| init_pid(&cluster, 1, id)).collect();

    // SIGKILL: the daemon has no chance to stop anything.
    let worker = cluster.daemons[1].as_ref().expect("the worker's daemon");
    kill_hard(worker);
    wait_for(
        "the worker's daemon is gone",
        Duration::from_secs(10),
        || (!is_alive(worker)).then_some(()),
    );
    for task in &tasks {
        assert_answers(task);
    }

    // Restarted from its data dir (the old process is reaped when the cluster drops).
    let (dir, port) = &cluster.nodes[1];
    let _restarted = start(dir, *port);
    wait_for("the three containers adopted", TASK_WAIT, || {
        (cluster
            .log(1)
            .matches("adopted a running container")
            .count()
            == 3)
            .then_some(())
    });
    // Give a wrong re-creation or removal the time to show.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        containers(&cluster, 1).into_iter().collect::<BTreeSet<_>>(),
        ids,
        "exactly the same containers"
    );
    let after: Vec<i64> = ids.iter().map(|id| init_pid(&cluster, 1, id)).collect();
    assert_eq!(after, pids, "the same container processes, not new ones");
    let all = all_tasks(&cluster, "web");
    assert_eq!(all.len(), 3, "no new task: {all:?}");
    let tasks = running_tasks(&cluster, "web", 3);
    assert_eq!(tasks.iter().map(id_of).collect::<BTreeSet<_>>(), ids);
    for task in &tasks {
        assert_answers(task);
    }

    // An adopted container that dies is seen (with no exit code: the daemon is not its
    // parent any more), and its slot gets a new task.
    let dead = id_of(tasks.iter().find(|t| t["slot"] == 3).unwrap());
    let pid = init_pid(&cluster, 1, &dead).to_string();
    let status = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    assert!(status.success());
    let failed = wait_for("the killed container's task failed", TASK_WAIT, || {
        all_tasks(&cluster, "web")
            .into_iter()
            .find(|t| id_of(t) == dead && state_of(t) == "failed")
    });
    assert_eq!(
        error_of(&failed),
        "task: the container exited with an unknown code (it was started before the agent restarted)"
    );
    let replaced = running_tasks(&cluster, "web", 3);
    let new = replaced.iter().find(|t| t["slot"] == 3).unwrap();
    assert_ne!(id_of(new), dead);
    assert_answers(new);

    // Scaled down, the adopted container of slot 2 stops and goes.
    let out = swarm(&cluster.socket(0), &["service", "scale", "-d", "web=1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let gone = id_of(tasks.iter().find(|t| t["slot"] == 2).unwrap());
    wait_for(
        "the adopted container of slot 2 is gone",
        Duration::from_secs(20),
        || (!containers(&cluster, 1).contains(&gone)).then_some(()),
    );
    wait_for("slot 2 shut down", Duration::from_secs(20), || {
        all_tasks(&cluster, "web")
            .iter()
            .any(|t| id_of(t) == gone && state_of(t) == "shutdown")
            .then_some(())
    });
    let kept = running_tasks(&cluster, "web", 1).remove(0);
    assert!(ids.contains(&id_of(&kept)));
    assert_answers(&kept);

    // The adopted container's healthcheck still runs: made sick, it fails and is replaced.
    let out = Command::new("runc")
        .arg("--root")
        .arg(cluster.data(1).join("runc"))
        .args(["exec", &id_of(&kept), "touch", "/tmp/sick"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let failed = wait_for("the adopted task unhealthy", TASK_WAIT, || {
        all_tasks(&cluster, "web")
            .into_iter()
            .find(|t| id_of(t) == id_of(&kept) && state_of(t) == "failed")
    });
    assert!(
        error_of(&failed).starts_with("unhealthy container: healthcheck exited 1"),
        "{failed}"
    );
    let replacement = running_tasks(&cluster, "web", 1).remove(0);
    assert_ne!(id_of(&replacement), id_of(&kept));
    assert_answers(&replacement);

    remove_all(&cluster, &["web"]);
}

/// An adopted task that names its image by tag keeps the image's config: the worker
/// recorded the digest it pulled, so after a SIGKILLed daemon restarts (the registry gone
/// meanwhile, so nothing can be asked of it) the image's HEALTHCHECK still runs — made
/// sick, the task fails unhealthy — and the container is stopped with the image's
/// STOPSIGNAL (SIGUSR1, which its process writes to its log), not with SIGTERM.
#[test]
fn an_adopted_task_named_by_tag_keeps_its_image_healthcheck_and_stop_signal() {
    let test = "an_adopted_task_named_by_tag_keeps_its_image_healthcheck_and_stop_signal";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/signals:1", registry.addr());
    let cluster = cluster(
        2,
        &init_args("198.18.250.0/23", &["--missed-heartbeats", "30"]),
    );
    cluster.join(1, "worker", 0);

    create(
        &cluster,
        &[
            "--name",
            "signals",
            "--constraint",
            "node.role==worker",
            "--stop-grace-period",
            "10s",
            &image,
        ],
    );
    let task = running_tasks(&cluster, "signals", 1).remove(0);
    let id = id_of(&task);
    let task_dir = cluster.data(1).join("tasks").join(&id);
    let recorded = std::fs::read_to_string(task_dir.join("image-digest")).unwrap();
    assert!(recorded.starts_with("sha256:"), "{recorded}");
    let pid = init_pid(&cluster, 1, &id);

    let worker = cluster.daemons[1].as_ref().expect("the worker's daemon");
    kill_hard(worker);
    wait_for(
        "the worker's daemon is gone",
        Duration::from_secs(10),
        || (!is_alive(worker)).then_some(()),
    );
    // No registry to resolve the tag with: the config must come from the record.
    drop(registry);
    let (dir, port) = &cluster.nodes[1];
    let _restarted = start(dir, *port);
    wait_for("the container adopted", TASK_WAIT, || {
        cluster
            .log(1)
            .contains("adopted a running container")
            .then_some(())
    });
    assert!(
        !cluster.log(1).contains("image config is unknown"),
        "{}",
        cluster.log(1)
    );
    assert_eq!(
        init_pid(&cluster, 1, &id),
        pid,
        "the same container process"
    );

    // The image's healthcheck (`test ! -f /tmp/sick`), the service has none of its own.
    let out = Command::new("runc")
        .arg("--root")
        .arg(cluster.data(1).join("runc"))
        .args(["exec", &id, "touch", "/tmp/sick"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let failed = wait_for("the adopted task unhealthy", TASK_WAIT, || {
        all_tasks(&cluster, "signals")
            .into_iter()
            .find(|t| id_of(t) == id && state_of(t) == "failed")
    });
    assert!(
        error_of(&failed).starts_with("unhealthy container: healthcheck exited 1"),
        "{failed}"
    );
    let stdout = task_dir.join("logs").join("stdout.log");
    let log = wait_for("the task stopped by a signal", TASK_WAIT, || {
        let log = std::fs::read_to_string(&stdout).unwrap_or_default();
        log.contains("stopped by").then_some(log)
    });
    assert!(
        log.contains("stopped by SIGUSR1") && !log.contains("SIGTERM"),
        "the image's stop signal: {log}"
    );
    // The record goes with the task's other files (its logs stay).
    wait_for("the task cleaned up", TASK_WAIT, || {
        (containers(&cluster, 1).is_empty() && !task_dir.join("image-digest").exists())
            .then_some(())
    });
    remove_all(&cluster, &["signals"]);
}

/// A healthcheck that fails at first holds the task in `starting`, and its first pass makes
/// it `running`; one that never passes fails the task as unhealthy, and the slot gets a new
/// task.
#[test]
fn healthchecks_gate_running_and_fail_unhealthy_tasks() {
    let test = "healthchecks_gate_running_and_fail_unhealthy_tasks";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(1, &init_args("198.18.232.0/23", &[]));

    // Ready after about 2 s, then serving.
    create(
        &cluster,
        &[
            "--name",
            "slow",
            "--stop-grace-period",
            "1s",
            "--health-cmd",
            "test -f /tmp/ready",
            "--health-interval",
            "1s",
            "--health-retries",
            "30",
            "--entrypoint",
            "/bin/sh -c",
            &image,
            // Backquotes: `$` would be read as a variable by the service loader.
            "sleep 2; touch /tmp/ready; mkdir -p /www; echo \"`hostname` v1\" > /www/index.html; \
             exec httpd -f -p 80 -h /www",
        ],
    );
    let mut waiting_since = None;
    let task = wait_for("the slow task running", TASK_WAIT, || {
        let tasks = live_tasks(&cluster, "slow");
        let task = tasks.first()?;
        match state_of(task) {
            "starting" if task["status"]["message"] == "waiting for the healthcheck to pass" => {
                waiting_since.get_or_insert_with(Instant::now);
                None
            }
            "running" => Some(task.clone()),
            "failed" => panic!("the slow task failed: {task}"),
            _ => None,
        }
    });
    let waited = waiting_since
        .expect("the task was seen starting, waiting for its healthcheck")
        .elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "running only once the check passed, about 2 s after the start: {waited:?}"
    );
    assert_answers(&task);
    assert_eq!(all_tasks(&cluster, "slow").len(), 1, "no restart");

    // Never healthy: two failures a second apart, then failed, and replaced.
    create(
        &cluster,
        &[
            "--name",
            "sick",
            "--stop-grace-period",
            "1s",
            "--restart-delay",
            "1s",
            "--health-cmd",
            "false",
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
            &image,
        ],
    );
    let failed = wait_for("the sick task failed", TASK_WAIT, || {
        all_tasks(&cluster, "sick")
            .into_iter()
            .find(|t| state_of(t) == "failed")
    });
    assert!(
        error_of(&failed).starts_with("unhealthy container: healthcheck exited 1"),
        "{failed}"
    );
    assert_eq!(failed["slot"], 1);
    let table = ps_table(&cluster, "sick");
    assert!(table.contains("unhealthy container"), "{table}");
    let replacement = wait_for("a new task in slot 1", TASK_WAIT, || {
        live_tasks(&cluster, "sick")
            .into_iter()
            .find(|t| t["slot"] == 1 && id_of(t) != id_of(&failed))
    });
    assert!(
        replacement["created_at"].as_u64() > failed["created_at"].as_u64(),
        "{replacement}"
    );
    // The slow service was not disturbed.
    let slow = running_tasks(&cluster, "slow", 1);
    assert_eq!(id_of(&slow[0]), id_of(&task));

    remove_all(&cluster, &["slow", "sick"]);
}

/// `on-failure` with two attempts: a command that exits 3 runs three times in its slot,
/// each task failed with its exit code, and then no more.
#[test]
fn the_restart_policy_gives_up_after_its_attempts() {
    let test = "the_restart_policy_gives_up_after_its_attempts";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(1, &init_args("198.18.234.0/23", &[]));

    create(
        &cluster,
        &[
            "--name",
            "crash",
            "--restart-condition",
            "on-failure",
            "--restart-delay",
            "1s",
            "--restart-max-attempts",
            "2",
            "--entrypoint",
            "/bin/sh -c",
            &image,
            "exit 3",
        ],
    );
    let three_failed = |tasks: &[Value]| {
        tasks.len() == 3
            && tasks
                .iter()
                .all(|t| state_of(t) == "failed" && t["slot"] == 1)
    };
    let tasks = wait_for("three failed tasks", TASK_WAIT, || {
        let tasks = all_tasks(&cluster, "crash");
        three_failed(&tasks).then_some(tasks)
    });
    for task in &tasks {
        assert_eq!(error_of(task), "task: non-zero exit (3)", "{task}");
        assert_eq!(task["status"]["exit_code"], 3, "{task}");
    }
    // Each restart waited for the delay after the failure before it.
    let mut created: Vec<u64> = tasks
        .iter()
        .map(|t| t["created_at"].as_u64().unwrap())
        .collect();
    created.sort();
    for pair in created.windows(2) {
        assert!(pair[1] - pair[0] >= 1000, "restarts 1 s apart: {created:?}");
    }
    // More than the delay later, still no fourth.
    std::thread::sleep(Duration::from_secs(4));
    let tasks = all_tasks(&cluster, "crash");
    assert!(three_failed(&tasks), "{tasks:?}");
    let table = ps_table(&cluster, "crash");
    assert_eq!(table.matches("non-zero exit (3)").count(), 3, "{table}");
    assert!(containers(&cluster, 0).is_empty());

    remove_all(&cluster, &["crash"]);
}

/// A task that eats more than its memory limit is killed by the kernel, and its task
/// fails saying so.
#[test]
fn a_task_over_its_memory_limit_fails_out_of_memory() {
    let test = "a_task_over_its_memory_limit_fails_out_of_memory";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(1, &init_args("198.18.236.0/23", &[]));

    // tail keeps the last lines of a file without newlines: all of it.
    create(
        &cluster,
        &[
            "--name",
            "hog",
            "--limit-memory",
            "16M",
            "--restart-condition",
            "none",
            "--entrypoint",
            "tail /dev/zero",
            &image,
        ],
    );
    let task = wait_for("the hog failed", TASK_WAIT, || {
        all_tasks(&cluster, "hog")
            .into_iter()
            .find(|t| state_of(t) == "failed")
    });
    assert_eq!(
        error_of(&task),
        "task: the container ran out of memory and was killed (exit 137)",
        "{task}"
    );
    let table = ps_table(&cluster, "hog");
    assert!(table.contains("ran out of memory"), "{table}");
    assert_eq!(
        all_tasks(&cluster, "hog").len(),
        1,
        "restart condition none"
    );

    remove_all(&cluster, &["hog"]);
}

/// A command the image does not have fails its task with runc's reason; a service already
/// running on the node goes on as it was.
#[test]
fn a_missing_command_fails_its_task_and_nothing_else() {
    let test = "a_missing_command_fails_its_task_and_nothing_else";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(1, &init_args("198.18.238.0/23", &[]));

    create(
        &cluster,
        &["--name", "web", "--stop-grace-period", "1s", &image],
    );
    let web = running_tasks(&cluster, "web", 1).remove(0);
    assert_answers(&web);
    let pid = init_pid(&cluster, 0, &id_of(&web));

    create(
        &cluster,
        &[
            "--name",
            "broken",
            "--restart-condition",
            "none",
            "--entrypoint",
            "no-such-command",
            &image,
        ],
    );
    let task = wait_for("the broken task failed", TASK_WAIT, || {
        all_tasks(&cluster, "broken")
            .into_iter()
            .find(|t| state_of(t) == "failed")
    });
    let error = error_of(&task);
    assert!(
        error.contains("no-such-command") && error.contains("not found"),
        "{task}"
    );
    let table = ps_table(&cluster, "broken");
    assert!(table.contains("no-such-command"), "{table}");
    assert!(!containers(&cluster, 0).contains(&id_of(&task)));

    // The other service: the same task, the same process, still answering.
    let still = running_tasks(&cluster, "web", 1).remove(0);
    assert_eq!(id_of(&still), id_of(&web));
    assert_eq!(init_pid(&cluster, 0, &id_of(&web)), pid);
    assert_answers(&still);
    assert_eq!(all_tasks(&cluster, "web").len(), 1);

    remove_all(&cluster, &["web", "broken"]);
}
