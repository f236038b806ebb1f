//! A node whose worker cannot start, end to end: a daemon whose runc is missing (its
//! `SWARM_RUNC` names a file that does not exist yet) says so in `node ls` and `node
//! inspect`, the scheduler places nothing on it and says why, a task already assigned to it
//! (a global service's, which is made for the node) is rejected with the reason; once runc
//! is there, the node heals without a daemon restart and both services run.
//!
//! The cluster has its own address pool (198.18.248.0/23); the cluster, dropped, removes
//! containers, mounts and bridges even when the test fails.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// How long the node may take to heal or a task to get where it is awaited (the worker
/// tries again every 10 s at most; a pull; the parallel tests on two cores).
const WAIT: Duration = Duration::from_secs(60);

/// Starts a daemon like `common::start`, with `SWARM_RUNC` set to `runc`.
fn start_with_runc(dir: &Path, port: u16, runc: &Path) -> Daemon {
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["daemon", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-addr", &format!("127.0.0.1:{port}"), "--socket"])
        .arg(dir.join("swarm.sock"))
        .arg("--run-dir")
        .arg(dir.join("run"))
        .arg("--hostname")
        .arg(dir.file_name().unwrap())
        .env("SWARM_RUNC", runc)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let daemon = Daemon {
        child,
        data_dir: Some(dir.join("data")),
    };
    wait_for("the daemon's socket", Duration::from_secs(10), || {
        dir.join("swarm.sock").exists().then_some(())
    });
    daemon
}

fn tasks(cluster: &Cluster, service: &str) -> Vec<Value> {
    let out = swarm(
        &cluster.socket(0),
        &["service", "ps", service, "--format", "json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn field<'a>(task: &'a Value, name: &str) -> &'a str {
    task["status"][name].as_str().unwrap_or_default()
}

/// The `node ls` table once its line for `node1` satisfies `check`.
fn node_ls_when(cluster: &Cluster, what: &str, check: impl Fn(&str, &str) -> bool) -> String {
    wait_for(what, WAIT, || {
        let table = cluster.listing(0);
        let line = node_line(&table, "node1")?;
        check(&table, &line).then_some(table)
    })
}

#[test]
fn a_node_without_runc_says_so_refuses_tasks_and_heals_when_runc_comes() {
    let test = "a_node_without_runc_says_so_refuses_tasks_and_heals_when_runc_comes";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let real_runc = Command::new("sh")
        .args(["-c", "command -v runc"])
        .output()
        .unwrap();
    let real_runc = text(&real_runc.stdout).trim().to_owned();
    assert!(!real_runc.is_empty(), "runc in PATH");

    let dir = tempfile::tempdir().unwrap();
    let node_dir = dir.path().join("node1");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&node_dir).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let runc = bin.join("runc");
    let port = free_port();
    let daemon = start_with_runc(&node_dir, port, &runc);
    let pool = "198.18.248.0/23";
    let cluster = Cluster {
        _dir: dir,
        nodes: vec![(node_dir, port)],
        daemons: vec![Some(daemon)],
        pools: vec![pool.parse().unwrap()],
        hosts: None,
    };
    let out = swarm(&cluster.socket(0), &{
        let mut args = vec!["init"];
        args.extend(init_args(pool, &[]));
        args
    });
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The node answers (Ready) and says why it runs nothing.
    let message = format!("worker not running: {} not found", runc.display());
    let table = node_ls_when(&cluster, "the node's message in node ls", |_, line| {
        line.contains("Ready") && line.contains(&message)
    });
    assert!(
        table.lines().next().unwrap().ends_with("MESSAGE"),
        "{table}"
    );
    let out = swarm(&cluster.socket(0), &["node", "inspect", "self"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let inspected: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspected[0]["Status"]["State"], "ready");
    assert_eq!(inspected[0]["Status"]["Message"], message.as_str());
    let out = swarm(&cluster.socket(0), &["node", "inspect", "--pretty", "self"]);
    assert!(
        text(&out.stdout).contains(&format!(" Message:\t\t{message}\n")),
        "{}",
        text(&out.stdout)
    );
    let log = cluster.log(0);
    assert_eq!(
        log.matches("cannot start this node's worker").count(),
        1,
        "one error, however many tries: {log}"
    );

    // A replicated task is not placed on the node: the scheduler says why.
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--restart-delay",
            "1s",
            &image,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reason = format!(
        "no suitable node (1 node's worker is not running: {} not found)",
        runc.display()
    );
    let pending = wait_for("web's task pending with the reason", WAIT, || {
        let tasks = tasks(&cluster, "web");
        tasks
            .into_iter()
            .find(|t| field(t, "state") == "pending" && field(t, "message") == reason)
    });
    assert!(pending["node_id"].is_null(), "{pending}");

    // A global service's task is made for the node: the node rejects it with the reason.
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "create",
            "-d",
            "--mode",
            "global",
            "--name",
            "everywhere",
            "--restart-delay",
            "1s",
            &image,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("everywhere's task rejected with the reason", WAIT, || {
        tasks(&cluster, "everywhere")
            .into_iter()
            .find(|t| field(t, "state") == "rejected" && field(t, "error") == message)
    });
    let out = swarm(&cluster.socket(0), &["service", "ps", "everywhere"]);
    assert!(
        text(&out.stdout).contains(&message),
        "the ERROR column: {}",
        text(&out.stdout)
    );

    // runc is installed: the node heals by itself, with the same daemon.
    let pid = cluster.daemons[0].as_ref().unwrap().child.id();
    std::os::unix::fs::symlink(&real_runc, &runc).unwrap();
    let healed = Instant::now();
    node_ls_when(&cluster, "the node's message gone", |table, line| {
        line.contains("Ready") && !table.contains("MESSAGE")
    });
    for service in ["web", "everywhere"] {
        wait_for(&format!("{service} running"), WAIT, || {
            let live = live_tasks(&cluster, service);
            (live.len() == 1 && field(&live[0], "state") == "running").then_some(())
        });
    }
    eprintln!("healed and running in {:?}", healed.elapsed());
    assert_eq!(
        cluster.daemons[0].as_ref().unwrap().child.id(),
        pid,
        "no daemon restart"
    );
    assert!(is_alive(cluster.daemons[0].as_ref().unwrap()));
    assert!(
        cluster.log(0).contains("this node's worker started"),
        "{}",
        cluster.log(0)
    );

    let out = swarm(&cluster.socket(0), &["service", "rm", "web", "everywhere"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("no container left", WAIT, || {
        containers(&cluster, 0).is_empty().then_some(())
    });
    let out = swarm(&cluster.socket(0), &["leave", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
