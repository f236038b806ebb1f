//! Imperative commands racing each other on a real daemon (issue 10, item 11): changes to
//! different services never conflict, and concurrent changes to one service are made again
//! over each other by the server instead of failing.

mod common;

use common::{cluster, swarm, text};

/// The spec of service `name` in the state export.
fn spec(cluster: &common::Cluster, name: &str) -> serde_json::Value {
    let out = swarm(&cluster.socket(0), &["state", "export"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    state["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["spec"]["name"] == name)
        .unwrap_or_else(|| panic!("no service {name} in {state}"))["spec"]
        .clone()
}

fn replicas(cluster: &common::Cluster, name: &str) -> u64 {
    spec(cluster, name)["replicas"].as_u64().unwrap()
}

/// Runs `commands` at the same moment, each in its own `swarm` process; all must succeed.
fn all_at_once(cluster: &common::Cluster, commands: Vec<Vec<String>>) {
    let socket = cluster.socket(0);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(commands.len()));
    let runs: Vec<_> = commands
        .into_iter()
        .map(|args| {
            let (socket, barrier) = (socket.clone(), barrier.clone());
            std::thread::spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                barrier.wait();
                (args.join(" "), swarm(&socket, &args))
            })
        })
        .collect();
    for run in runs {
        let (command, out) = run.join().unwrap();
        assert!(
            out.status.success(),
            "swarm {command}: {}\n{}",
            text(&out.stderr),
            cluster.log(0)
        );
    }
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

#[test]
fn concurrent_commands_on_services_all_succeed() {
    let cluster = cluster(1, &[]);
    for name in ["a", "b"] {
        let out = swarm(
            &cluster.socket(0),
            &[
                "service", "create", "-d", "--name", name, "busybox", "sleep", "600",
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // The report: a scale of one service and an update of another, at the same moment,
    // ten times; 6 of the 20 failed with "the state moved since the plan was made".
    for round in 1..=10 {
        all_at_once(
            &cluster,
            vec![
                args(&["service", "scale", "-d", &format!("a={round}")]),
                args(&[
                    "service",
                    "update",
                    "-d",
                    "--env-add",
                    &format!("R={round}"),
                    "b",
                ]),
            ],
        );
        assert_eq!(replicas(&cluster, "a"), round);
        assert_eq!(
            spec(&cluster, "b")["task"]["container"]["env"]["R"],
            round.to_string()
        );
    }
    // Twenty scales of one service at once: each one changes what the others read, so
    // the server makes most of them again over the others'; all succeed, and one of them
    // is the last.
    let counts: Vec<u64> = (1..=20).collect();
    all_at_once(
        &cluster,
        counts
            .iter()
            .map(|n| args(&["service", "scale", "-d", &format!("a={n}")]))
            .collect(),
    );
    let last = replicas(&cluster, "a");
    assert!(counts.contains(&last), "{last}");
    // The other service's changes survived all of this.
    assert_eq!(spec(&cluster, "b")["task"]["container"]["env"]["R"], "10");
    // Twenty updates of one service at once, each adding its own variable: every one is
    // kept (maps merge key by key when a change is made again).
    all_at_once(
        &cluster,
        (1..=20)
            .map(|n| {
                args(&[
                    "service",
                    "update",
                    "-d",
                    "--env-add",
                    &format!("V{n}={n}"),
                    "b",
                ])
            })
            .collect(),
    );
    let env = spec(&cluster, "b")["task"]["container"]["env"].clone();
    for n in 1..=20 {
        assert_eq!(env[format!("V{n}")], n.to_string(), "{env}");
    }
}
