//! `swarm daemon` as a real process, driven by the real `swarm` commands over its unix
//! socket: init, node ls, join-token, and a restart from the data dir.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A daemon process, killed when the test ends however it ends.
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &Path, port: u16) -> Daemon {
    let child = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["daemon", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-addr", &format!("127.0.0.1:{port}"), "--socket"])
        .arg(dir.join("swarm.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon { child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("swarm.sock").exists() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not open its socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon
}

fn swarm(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(args)
        .env("SWARM_HOST", format!("unix://{}", socket.display()))
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Retries a command until it succeeds (a restarted manager elects itself first).
fn eventually(socket: &Path, args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = swarm(socket, args);
        if out.status.success() || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn init_then_list_nodes_and_tokens_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("swarm.sock");
    let port = free_port();
    let mut daemon = start(dir.path(), port);

    let out = swarm(&socket, &["node", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a swarm manager: run `swarm init`"),
        "{}",
        text(&out.stderr)
    );

    let out = swarm(&socket, &["init"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.starts_with("Swarm initialized: current node ("),
        "{printed}"
    );
    let worker_token = printed
        .split_whitespace()
        .skip_while(|w| *w != "--token")
        .nth(1)
        .expect("the join command carries a token")
        .to_owned();
    assert!(worker_token.starts_with("SWMTKN-1-"), "{worker_token}");
    assert!(
        printed.contains(&format!("{worker_token} 127.0.0.1:{port}")),
        "{printed}"
    );

    let out = swarm(&socket, &["init"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("already part of a swarm"));

    let out = swarm(&socket, &["node", "ls"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("ID") && lines[0].ends_with("MANAGER STATUS"),
        "{table}"
    );
    assert!(
        lines[1].contains(" * ")
            && lines[1].contains("Ready")
            && lines[1].contains("Active")
            && lines[1].ends_with("Leader"),
        "{table}"
    );

    let out = swarm(&socket, &["join-token", "worker", "-q"]);
    assert_eq!(text(&out.stdout).trim(), worker_token);
    let out = swarm(&socket, &["join-token", "worker", "--rotate", "-q"]);
    let rotated = text(&out.stdout).trim().to_owned();
    assert!(
        rotated.starts_with("SWMTKN-1-") && rotated != worker_token,
        "{rotated}"
    );
    // The CA digest part stays: only the secret changes.
    assert_eq!(
        rotated.rsplit_once('-').unwrap().0,
        worker_token.rsplit_once('-').unwrap().0
    );

    // The state export is what `swarm plan --state` reads.
    let export = dir.path().join("state.json");
    let out = swarm(
        &socket,
        &["state", "export", "-o", export.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    assert_eq!(state["format"], 1);
    assert!(
        !std::fs::read_to_string(&export).unwrap().contains("SWMTKN"),
        "no secret material"
    );
    let stack = dir.path().join("web.yaml");
    std::fs::write(&stack, "services:\n  site:\n    image: nginx\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args([
            "plan",
            "--state",
            export.to_str().unwrap(),
            stack.to_str().unwrap(),
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("+ create service web_site"),
        "{}",
        text(&out.stdout)
    );

    // SIGTERM: the daemon stops cleanly and removes its socket.
    let pid = daemon.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!socket.exists());

    // Restarted from its data dir, the node is still the manager of its cluster.
    let _daemon = start(dir.path(), port);
    let out = eventually(&socket, &["node", "ls"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("Leader")
    );
    let out = swarm(&socket, &["join-token", "worker", "-q"]);
    assert_eq!(
        text(&out.stdout).trim(),
        rotated,
        "the rotated token survived the restart"
    );
}

#[test]
fn a_missing_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = swarm(&dir.path().join("nothing.sock"), &["node", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is `swarm daemon` running?"),
        "{}",
        text(&out.stderr)
    );
}

/// The swarm journey of the control plane: init, two managers and a worker join, bad tokens
/// are refused, the leader is SIGKILLed, a new one takes over and the killed node comes back.
#[test]
fn managers_join_and_survive_the_loss_of_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<(std::path::PathBuf, u16)> = (1..=5)
        .map(|n| {
            let node_dir = dir.path().join(format!("node{n}"));
            std::fs::create_dir(&node_dir).unwrap();
            (node_dir, free_port())
        })
        .collect();
    let socket = |n: usize| nodes[n].0.join("swarm.sock");
    let address = |n: usize| format!("127.0.0.1:{}", nodes[n].1);
    let mut daemons: Vec<Option<Daemon>> = nodes.iter().map(|(d, p)| Some(start(d, *p))).collect();

    assert!(swarm(&socket(0), &["init"]).status.success());
    let manager_token = text(&swarm(&socket(0), &["join-token", "manager", "-q"]).stdout)
        .trim()
        .to_owned();
    let worker_token = text(&swarm(&socket(0), &["join-token", "worker", "-q"]).stdout)
        .trim()
        .to_owned();
    for n in [1, 2] {
        let out = swarm(
            &socket(n),
            &["join", "--token", &manager_token, &address(0)],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("as a manager"),
            "{}",
            text(&out.stdout)
        );
    }
    // A worker may join through any manager.
    let out = swarm(&socket(3), &["join", "--token", &worker_token, &address(1)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("as a worker"));
    let worker_id = text(&out.stdout)
        .rsplit_once("(node ")
        .map(|(_, id)| id.trim_end_matches([')', '.', '\n']).to_owned())
        .unwrap();

    // A token with a wrong secret, and one pinning another CA, are refused with reasons.
    let (pinned, _) = worker_token.rsplit_once('-').unwrap();
    let wrong_secret = format!("{pinned}-{}", "a".repeat(25));
    let out = swarm(&socket(4), &["join", "--token", &wrong_secret, &address(0)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("invalid join token"),
        "{}",
        text(&out.stderr)
    );
    let wrong_ca = format!(
        "SWMTKN-1-{}-{}",
        "1".repeat(50),
        worker_token.rsplit_once('-').unwrap().1
    );
    let out = swarm(&socket(4), &["join", "--token", &wrong_ca, &address(0)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not match the join token"),
        "{}",
        text(&out.stderr)
    );

    let out = swarm(&socket(3), &["node", "ls"]);
    assert!(
        text(&out.stderr).contains("this node is a worker"),
        "{}",
        text(&out.stderr)
    );

    let listing = |n: usize| {
        let out = eventually(&socket(n), &["node", "ls"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let table = listing(2);
    assert_eq!(table.lines().count(), 5, "{table}");
    assert_eq!(
        table.lines().filter(|l| l.ends_with("Leader")).count(),
        1,
        "{table}"
    );

    // Node management through any manager: by a unique id prefix, then refusals.
    let prefix = &worker_id[..6];
    let out = swarm(
        &socket(1),
        &[
            "node",
            "update",
            "--availability",
            "drain",
            "--label-add",
            "zone=b",
            prefix,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), worker_id);
    let table = listing(0);
    let worker_line = table.lines().find(|l| l.starts_with(&worker_id)).unwrap();
    assert!(worker_line.contains("Drain"), "{table}");
    let export = text(&swarm(&socket(0), &["state", "export"]).stdout);
    assert!(export.contains("\"format\": 1"), "{export}");
    let out = swarm(
        &socket(0),
        &["node", "update", "--availability", "asleep", prefix],
    );
    assert!(
        text(&out.stderr).contains("use active, pause or drain"),
        "{}",
        text(&out.stderr)
    );
    let out = swarm(&socket(0), &["node", "rm", "no-such-node"]);
    assert!(
        text(&out.stderr).contains("no node \"no-such-node\""),
        "{}",
        text(&out.stderr)
    );
    let manager_line = table.lines().find(|l| l.ends_with("Leader")).unwrap();
    let manager_id = manager_line.split_whitespace().next().unwrap();
    let out = swarm(&socket(0), &["node", "rm", manager_id]);
    assert!(
        text(&out.stderr).contains("is a manager: demote it first"),
        "{}",
        text(&out.stderr)
    );
    let out = swarm(&socket(0), &["node", "rm", &worker_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(listing(0).lines().count(), 4, "the worker is gone");

    // SIGKILL the leader (node 0): the two other managers elect a new one.
    drop(daemons[0].take());
    let deadline = Instant::now() + Duration::from_secs(20);
    let new_leader = loop {
        let out = swarm(&socket(1), &["node", "ls"]);
        let table = text(&out.stdout);
        if let Some(line) = table.lines().find(|l| l.ends_with("Leader")) {
            let leader_id = line.split_whitespace().next().unwrap().to_owned();
            break leader_id;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let first_id = table
        .lines()
        .find(|l| l.ends_with("Leader"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_ne!(new_leader, first_id);
    // Writes go on: rotating a token is a Raft proposal.
    let out = swarm(&socket(2), &["join-token", "worker", "--rotate", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rotated = text(&out.stdout).trim().to_owned();

    // The killed node restarts from its data dir and catches up.
    daemons[0] = Some(start(&nodes[0].0, nodes[0].1));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = swarm(&socket(0), &["join-token", "worker", "-q"]);
        if text(&out.stdout).trim() == rotated {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted manager did not catch up: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
