//! `swarm service logs` end to end: real daemons (two managers and a worker), real
//! containers printing known lines, the CLI asking either manager. Each manager serves the
//! nodes whose agents are connected to it and asks the other for the rest, so whichever
//! manager is asked, the lines of every node's tasks come back.
//!
//! Address pool 198.18.244.0/22 (no other test uses it); the cluster, dropped, removes
//! containers, mounts and bridges even when the test fails.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// How long a task may take to reach a state (a pull, a start, a report), with room for
/// parallel tests on two cores.
const TASK_WAIT: Duration = Duration::from_secs(60);

/// A `swarm` child process (a following `service logs`), killed and reaped however the
/// test ends.
struct Cli(Child);

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Cli {
    /// `swarm service logs -f --tail 0 SERVICE` through `socket`, its stdout piped.
    fn follow(socket: &std::path::Path, service: &str) -> Cli {
        Cli(Command::new(env!("CARGO_BIN_EXE_swarm"))
            .args(["service", "logs", "-f", "--tail", "0", service])
            .env("SWARM_HOST", format!("unix://{}", socket.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap())
    }
}

/// `swarm service logs ARGS` through node `n`'s socket: (stdout, stderr), which must
/// succeed.
fn logs(cluster: &Cluster, n: usize, args: &[&str]) -> (String, String) {
    let mut full = vec!["service", "logs"];
    full.extend_from_slice(args);
    let out = swarm(&cluster.socket(n), &full);
    assert!(out.status.success(), "{}", text(&out.stderr));
    (text(&out.stdout), text(&out.stderr))
}

/// The running tasks of `service` by id, once there are `count`, with the hostname of
/// their node.
fn running(cluster: &Cluster, service: &str, count: usize) -> BTreeMap<String, String> {
    let tasks: Vec<Value> = wait_for(&format!("{count} running tasks"), TASK_WAIT, || {
        let tasks = live_tasks(cluster, service);
        (tasks.len() == count && tasks.iter().all(|t| t["status"]["state"] == "running"))
            .then_some(tasks)
    });
    let ids: BTreeMap<String, String> = tasks
        .iter()
        .map(|t| {
            let node = t["node_id"].as_str().unwrap();
            let n = (0..cluster.nodes.len())
                .find(|n| cluster.node_id(*n).as_deref() == Some(node))
                .unwrap();
            (
                t["id"].as_str().unwrap().to_owned(),
                format!("node{}", n + 1),
            )
        })
        .collect();
    ids
}

/// The prefix Docker prints for the task `id` of slot `slot` on `node`.
fn prefix(service: &str, slot: &Value, id: &str, node: &str) -> String {
    format!("{service}.{slot}.{}@{node}    | ", &id[..12])
}

#[test]
fn service_logs_gather_every_nodes_tasks_through_any_manager() {
    let test = "service_logs_gather_every_nodes_tasks_through_any_manager";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(3, &init_args("198.18.244.0/22", &[]));
    cluster.join(1, "manager", 0);
    cluster.join(2, "worker", 0);

    // Each task says hello on stdout and oops on stderr (where its node and slot come
    // from a variable's templates, filled on the node), then a line whenever /tmp/more
    // appears.
    let script = "echo hello-`hostname`; echo oops-$WHERE >&2; \
                  while true; do if [ -f /tmp/more ]; then rm /tmp/more; echo more-`hostname`; fi; sleep 0.2; done";
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "create",
            "-d",
            "--name",
            "talk",
            "--replicas",
            "3",
            "--stop-grace-period",
            "1s",
            "--env",
            "WHERE={{.Node.Hostname}}.{{ .Task.Slot }}",
            "--entrypoint",
            "/bin/sh -c",
            &image,
            script,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tasks = running(&cluster, "talk", 3);
    let nodes: std::collections::BTreeSet<&String> = tasks.values().collect();
    assert_eq!(nodes.len(), 3, "one task per node: {tasks:?}");
    let slots: BTreeMap<String, Value> = live_tasks(&cluster, "talk")
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_owned(), t["slot"].clone()))
        .collect();

    // Through either manager: every task's lines, with their prefixes, stdout and stderr
    // apart.
    for n in [0, 1] {
        let (stdout, stderr) = wait_for("every task's lines", TASK_WAIT, || {
            let (stdout, stderr) = logs(&cluster, n, &["talk"]);
            (stdout.lines().count() == 3 && stderr.lines().count() == 3).then_some((stdout, stderr))
        });
        for (id, node) in &tasks {
            let prefix = prefix("talk", &slots[id], id, node);
            let hello = format!("{prefix}hello-{}", &id[..12]);
            let oops = format!("{prefix}oops-{node}.{}", slots[id]);
            assert!(stdout.lines().any(|l| l == hello), "{hello:?} in\n{stdout}");
            assert!(stderr.lines().any(|l| l == oops), "{oops:?} in\n{stderr}");
        }
    }

    // --tail 1: one line per task, its last.
    let (stdout, stderr) = logs(&cluster, 0, &["--tail", "1", "talk"]);
    let all: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
    assert_eq!(all.len(), 3, "{all:?}");
    for id in tasks.keys() {
        assert_eq!(
            all.iter().filter(|l| l.contains(&id[..12])).count(),
            1,
            "{all:?}"
        );
    }

    // -t: an RFC 3339 time after the prefix; --no-task-ids and --raw.
    let (stdout, _) = logs(&cluster, 1, &["-t", "talk"]);
    for line in stdout.lines() {
        let (_, rest) = line.split_once("    | ").expect("a prefix");
        let (time, text) = rest.split_once(' ').expect("a time");
        assert_eq!(time.len(), "2026-01-02T15:04:05.123456789Z".len(), "{line}");
        assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{line}");
        assert!(text.starts_with("hello-"), "{line}");
    }
    let (stdout, _) = logs(&cluster, 0, &["--no-task-ids", "talk"]);
    for (id, node) in &tasks {
        let line = format!("talk.{}@{node}    | hello-{}", slots[id], &id[..12]);
        assert!(stdout.lines().any(|l| l == line), "{line:?} in\n{stdout}");
    }
    let (stdout, _) = logs(&cluster, 0, &["--raw", "talk"]);
    let mut raw: Vec<&str> = stdout.lines().collect();
    raw.sort();
    let mut expected: Vec<String> = tasks
        .keys()
        .map(|id| format!("hello-{}", &id[..12]))
        .collect();
    expected.sort();
    assert_eq!(raw, expected);
    // One task, by its id.
    let (worker_task, _) = tasks.iter().find(|(_, node)| *node == "node3").unwrap();
    let (stdout, _) = logs(&cluster, 1, &[worker_task]);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains(&format!("hello-{}", &worker_task[..12])));
    // --since in the future: nothing.
    let (stdout, stderr) = logs(&cluster, 0, &["--since", "2999-01-01T00:00:00Z", "talk"]);
    assert_eq!((stdout.as_str(), stderr.as_str()), ("", ""));

    // -f, through the manager the worker may not be connected to: a line printed after
    // the command started arrives; the command is killed and reaped.
    let mut follow = Cli::follow(&cluster.socket(1), "talk");
    let (lines, received) = mpsc::channel();
    let reader = BufReader::new(follow.0.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in reader.lines() {
            if lines.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    // Printed again and again until seen: the follower may still be subscribing.
    let wanted = format!("more-{}", &worker_task[..12]);
    let seen = wait_for("a followed line", TASK_WAIT, || {
        let out = Command::new("runc")
            .arg("--root")
            .arg(cluster.data(2).join("runc"))
            .args(["exec", worker_task, "touch", "/tmp/more"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        received
            .recv_timeout(Duration::from_secs(2))
            .ok()
            .filter(|line| line.ends_with(&wanted))
    });
    let prefix_of_worker = prefix("talk", &slots[worker_task], worker_task, "node3");
    assert_eq!(seen, format!("{prefix_of_worker}{wanted}"));
    // A task started while following is followed too, from its first line.
    let out = swarm(&cluster.socket(0), &["service", "scale", "-d", "talk=4"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let new_line = wait_for("the new task's first line", TASK_WAIT, || {
        received
            .recv_timeout(Duration::from_secs(1))
            .ok()
            .filter(|line| line.contains("| hello-"))
    });
    let new_task = live_tasks(&cluster, "talk")
        .into_iter()
        .find(|t| t["slot"] == 4)
        .expect("slot 4");
    let id = new_task["id"].as_str().unwrap();
    assert!(
        new_line.starts_with(&format!("talk.4.{}@node", &id[..12]))
            && new_line.ends_with(&format!("    | hello-{}", &id[..12])),
        "{new_line}"
    );
    drop(follow);

    // A reader that goes (`| head -1`): the next line the command writes ends it, and
    // successfully, as Docker's does.
    let mut piped = Cli::follow(&cluster.socket(0), "talk");
    drop(piped.0.stdout.take());
    let status = wait_for("the command ends on a closed pipe", TASK_WAIT, || {
        let out = Command::new("runc")
            .arg("--root")
            .arg(cluster.data(2).join("runc"))
            .args(["exec", worker_task, "touch", "/tmp/more"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(500));
        piped.0.try_wait().unwrap()
    });
    assert!(status.success(), "{status}");

    // A stopped task's lines remain: scaled down, slots 3 and 4 stop, their lines stay.
    let out = swarm(&cluster.socket(0), &["service", "scale", "-d", "talk=2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stopped = slots
        .iter()
        .find(|(_, slot)| **slot == 3)
        .map(|(id, _)| id.clone())
        .unwrap();
    wait_for("slot 3 stopped", TASK_WAIT, || {
        let out = swarm(
            &cluster.socket(0),
            &["service", "ps", "talk", "--format", "json"],
        );
        let tasks: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
        tasks
            .iter()
            .any(|t| t["id"] == stopped.as_str() && t["status"]["state"] == "shutdown")
            .then_some(())
    });
    let (stdout, _) = logs(&cluster, 0, &["talk"]);
    assert!(
        stdout.contains(&format!("hello-{}", &stopped[..12])),
        "{stdout}"
    );

    // A name that is neither a service nor a task.
    let out = swarm(&cluster.socket(0), &["service", "logs", "nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no service or task \"nope\""),
        "{}",
        text(&out.stderr)
    );

    // The worker's daemon gone: its tasks' logs are named unavailable, the others shown.
    let worker = cluster.daemons[2].as_ref().unwrap();
    kill_hard(worker);
    let (stdout, stderr) = wait_for("the worker reported unavailable", TASK_WAIT, || {
        let (stdout, stderr) = logs(&cluster, 0, &["talk"]);
        stderr
            .contains("warning: logs of node node3 unavailable: not connected")
            .then_some((stdout, stderr))
    });
    assert!(
        !stdout.contains(&format!("hello-{}", &worker_task[..12])),
        "{stdout}\n{stderr}"
    );
    let others = tasks.iter().filter(|(_, node)| *node != "node3");
    for (id, _) in others {
        assert!(stdout.contains(&format!("hello-{}", &id[..12])), "{stdout}");
    }
}
