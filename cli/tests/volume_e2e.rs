//! Mounts end to end: a real daemon runs a service whose tasks write to a named volume (its
//! name a template the node fills with the task's slot), read a host directory through a
//! read-only bind mount and get a tmpfs; the volume's data outlives the task that wrote it,
//! a forced replacement and a service update, and `swarm volume` lists it, refuses to
//! remove it while in use, and prunes it once unused.
//!
//! Address pool 198.18.198.0/23 (no other test uses it); the cluster, dropped, removes
//! containers, mounts and bridges even when the test fails.

mod common;

use std::time::Duration;

use common::*;

/// How long a task may take to reach a state, with room for parallel tests on two cores.
const TASK_WAIT: Duration = Duration::from_secs(60);

/// The id of the one running task of `service`, once it runs and is not `previous`.
fn running_task(cluster: &Cluster, service: &str, previous: Option<&str>) -> String {
    wait_for("a new running task", TASK_WAIT, || {
        let tasks = live_tasks(cluster, service);
        let task = tasks.first()?;
        let id = task["id"].as_str()?;
        (tasks.len() == 1 && task["status"]["state"] == "running" && Some(id) != previous)
            .then(|| id.to_owned())
    })
}

/// The lines of a file once it has `count` of them.
fn lines_once(path: &std::path::Path, count: usize) -> Vec<String> {
    wait_for(
        &format!("{count} lines in {}", path.display()),
        TASK_WAIT,
        || {
            let text = std::fs::read_to_string(path).ok()?;
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            (lines.len() == count).then_some(lines)
        },
    )
}

#[test]
fn a_named_volume_outlives_its_tasks_and_binds_and_tmpfs_reach_the_container() {
    let test = "a_named_volume_outlives_its_tasks_and_binds_and_tmpfs_reach_the_container";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(1, &init_args("198.18.198.0/23", &[]));
    let host = cluster.nodes[0].0.join("host-conf");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("greeting"), "from the host\n").unwrap();

    // Each task appends a line to the volume, copies the bind mount's file into it, says
    // whether it can write there, and records how /scratch is mounted.
    let script = "echo run >> /data/runs; cat /conf/greeting > /data/greeting; \
                  (touch /conf/x 2>/dev/null && echo writable || echo read-only) > /data/conf-mode; \
                  grep ' /scratch ' /proc/mounts > /data/scratch; \
                  while true; do sleep 1; done";
    let bind = format!("type=bind,source={},target=/conf,readonly", host.display());
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "create",
            "-d",
            "--name",
            "keeper",
            "--stop-grace-period",
            "1s",
            "--mount",
            // The volume's name is filled per task (its slot, 1): one volume per replica,
            // the way Docker users name them.
            "type=volume,source=keeper-{{.Task.Slot}},target=/data",
            "--mount",
            &bind,
            "--mount",
            "type=tmpfs,target=/scratch,tmpfs-size=1m",
            "--entrypoint",
            "/bin/sh -c",
            &image,
            script,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = running_task(&cluster, "keeper", None);

    let data = cluster.data(0).join("volumes/keeper-1/_data");
    assert_eq!(lines_once(&data.join("runs"), 1), ["run"]);
    assert_eq!(lines_once(&data.join("greeting"), 1), ["from the host"]);
    assert_eq!(lines_once(&data.join("conf-mode"), 1), ["read-only"]);
    let scratch = lines_once(&data.join("scratch"), 1);
    assert!(
        scratch[0].starts_with("tmpfs /scratch tmpfs") && scratch[0].contains("size=1024k"),
        "{scratch:?}"
    );

    // A forced replacement and an update: each new task finds what the others wrote.
    let out = swarm(
        &cluster.socket(0),
        &["service", "update", "-d", "--force", "keeper"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let second = running_task(&cluster, "keeper", Some(&first));
    assert_eq!(lines_once(&data.join("runs"), 2), ["run", "run"]);
    let out = swarm(
        &cluster.socket(0),
        &["service", "update", "-d", "--env-add", "ROUND=3", "keeper"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    running_task(&cluster, "keeper", Some(&second));
    assert_eq!(lines_once(&data.join("runs"), 3), ["run", "run", "run"]);

    // The volume is listed with its users, and cannot be removed while in use.
    let out = swarm(&cluster.socket(0), &["volume", "ls"]);
    let listing = text(&out.stdout);
    let line = listing
        .lines()
        .find(|l| l.contains("keeper-1"))
        .unwrap_or_else(|| panic!("{listing}"));
    // The stopped tasks' containers (kept for `service ps`, as Docker keeps them) count.
    assert!(
        line.starts_with("local") && !line.trim_end().ends_with(" 0"),
        "{listing}"
    );
    let out = swarm(&cluster.socket(0), &["volume", "rm", "keeper-1"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("volume keeper-1 is in use by container"),
        "{}",
        text(&out.stderr)
    );

    // A bind source missing on the node fails the task, naming the path.
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "create",
            "-d",
            "--name",
            "lost",
            "--restart-condition",
            "none",
            "--mount",
            "type=bind,source=/no/such/dir,target=/x",
            &image,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let error = wait_for("the task's error", TASK_WAIT, || {
        let out = swarm(&cluster.socket(0), &["service", "ps", "lost"]);
        let listing = text(&out.stdout);
        listing
            .contains("bind source path does not exist: /no/such/dir")
            .then_some(listing)
    });
    assert!(
        error.contains("Failed") || error.contains("failed"),
        "{error}"
    );

    // The volume stays when its service goes.
    for service in ["keeper", "lost"] {
        let out = swarm(&cluster.socket(0), &["service", "rm", service]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    wait_for("keeper's tasks gone", TASK_WAIT, || {
        containers(&cluster, 0).is_empty().then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(data.join("runs")).unwrap(),
        "run\nrun\nrun\n"
    );
    let out = swarm(&cluster.socket(0), &["volume", "inspect", "keeper-1"]);
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        inspected[0]["used_by"],
        serde_json::json!([]),
        "{inspected}"
    );
    assert_eq!(inspected[0]["mountpoint"], data.to_str().unwrap());
    let out = swarm(&cluster.socket(0), &["volume", "prune"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("Deleted Volumes:\nkeeper-1\n"),
        "{}",
        text(&out.stdout)
    );
    let out = swarm(&cluster.socket(0), &["volume", "ls", "-q"]);
    assert_eq!(text(&out.stdout), "");
    assert!(!data.exists());
}
