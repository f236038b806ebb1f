//! `swarm daemon` as a real process, driven by the real `swarm` commands over its unix
//! socket: init, node ls, join-token, and a restart from the data dir.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

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

/// A bad address pool is refused at init with the reason, and nothing is initialised.
#[test]
fn init_refuses_a_bad_address_pool() {
    let dir = tempfile::tempdir().unwrap();
    let _daemon = start(dir.path(), free_port());
    let socket = dir.path().join("swarm.sock");
    for (args, says) in [
        (
            ["--default-addr-pool", "10.1.2.3/16"],
            "has host bits set: did you mean 10.1.0.0/16?",
        ),
        (["--default-addr-pool", "10.1.0.0"], "is not an IPv4 CIDR"),
        (
            ["--default-addr-pool-mask-length", "12"],
            "must be between the pool's prefix (16) and 29",
        ),
    ] {
        let mut command = vec!["init"];
        command.extend(args);
        let out = swarm(&socket, &command);
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
    let out = swarm(&socket, &["init"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
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
    assert!(
        text(&out.stderr).contains("is not down and can't be removed"),
        "{}",
        text(&out.stderr)
    );

    // A node that stops heartbeating is Down after 3 missed periods of 1 s; then it can go.
    drop(daemons[3].take());
    let killed = Instant::now();
    wait_for("the killed worker is Down", Duration::from_secs(10), || {
        node_line(&listing(0), "node4").filter(|l| l.contains(" Down "))
    });
    let detected = killed.elapsed();
    assert!(detected < Duration::from_millis(4500), "{detected:?}");
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
    // The new leader sees the old one stop heartbeating.
    wait_for(
        "the killed leader is shown unreachable",
        Duration::from_secs(10),
        || {
            node_line(&listing(1), "node1")
                .filter(|l| l.ends_with("Unreachable") && l.contains(" Down "))
        },
    );
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
    wait_for(
        "the restarted manager is reachable again",
        Duration::from_secs(10),
        || {
            node_line(&listing(2), "node1")
                .filter(|l| l.ends_with("Reachable") && l.contains(" Ready "))
        },
    );
}

/// Promotion and demotion go through Raft membership and new certificates; a removed node's
/// certificate is refused and the node leaves by itself; `swarm leave` protects a manager.
#[test]
fn nodes_are_promoted_demoted_removed_and_leave() {
    let cluster = cluster(3, &[]);
    cluster.join(1, "worker", 0);
    cluster.join(2, "worker", 0);

    let out = swarm(&cluster.socket(0), &["node", "promote", "node2", "node3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("promoted to a manager"),
        "{}",
        text(&out.stdout)
    );
    // At their next heartbeat they take manager certificates and start their replicas.
    for n in [1, 2] {
        wait_for(
            "the promoted node answers as a manager",
            Duration::from_secs(15),
            || {
                let out = swarm(&cluster.socket(n), &["node", "ls"]);
                out.status.success().then_some(())
            },
        );
    }
    wait_for("three reachable managers", Duration::from_secs(10), || {
        let table = cluster.listing(1);
        (table.lines().filter(|l| l.ends_with("Reachable")).count() == 2
            && table.lines().filter(|l| l.ends_with("Leader")).count() == 1)
            .then_some(())
    });
    let inspect = text(&swarm(&cluster.socket(1), &["node", "inspect", "self"]).stdout);
    let inspected: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspected[0]["Spec"]["Role"], "manager", "{inspect}");
    assert_eq!(
        inspected[0]["Description"]["Hostname"], "node2",
        "{inspect}"
    );
    // Docker's way for scripts: a Go template over the same JSON.
    let out = swarm(
        &cluster.socket(1),
        &[
            "node",
            "inspect",
            "self",
            "--format",
            "{{.Description.Hostname}} {{.Spec.Role}}",
        ],
    );
    assert_eq!(
        text(&out.stdout),
        "node2 manager\n",
        "{}",
        text(&out.stderr)
    );

    // Demoting the leader hands leadership over first.
    let out = swarm(&cluster.socket(0), &["node", "demote", "node1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("demoted"),
        "{}",
        text(&out.stdout)
    );
    wait_for(
        "the demoted node is a worker",
        Duration::from_secs(15),
        || {
            let out = swarm(&cluster.socket(0), &["node", "ls"]);
            text(&out.stderr)
                .contains("this node is a worker")
                .then_some(())
        },
    );
    let table = cluster.listing(1);
    let line = node_line(&table, "node1").unwrap();
    assert!(
        !line.ends_with("Leader") && !line.ends_with("Reachable"),
        "{table}"
    );
    assert!(
        !cluster.data(0).join("raft.redb").exists(),
        "a worker keeps no log"
    );

    // Leaving as a manager needs --force; a worker leaves and is shown Down.
    let out = swarm(&cluster.socket(2), &["leave"]);
    assert!(
        text(&out.stderr).contains("this node is a manager"),
        "{}",
        text(&out.stderr)
    );

    // Removing a live worker needs --force; its certificate is then refused, and it leaves.
    let out = swarm(&cluster.socket(1), &["node", "rm", "node1"]);
    assert!(
        text(&out.stderr).contains("is not down"),
        "{}",
        text(&out.stderr)
    );
    let out = swarm(&cluster.socket(1), &["node", "rm", "--force", "node1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(
        "the removed node leaves by itself",
        Duration::from_secs(10),
        || (!cluster.data(0).join("node.json").exists()).then_some(()),
    );
    assert!(
        cluster.log(0).contains("was removed from the cluster"),
        "{}",
        cluster.log(0)
    );
    let out = swarm(&cluster.socket(0), &["node", "ls"]);
    assert!(
        text(&out.stderr).contains("not a swarm manager"),
        "{}",
        text(&out.stderr)
    );

    // Demoting either of the two remaining managers would leave one manager: allowed (a
    // quorum of one); the last one cannot be demoted.
    let out = swarm(&cluster.socket(1), &["node", "demote", "node3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = swarm(&cluster.socket(1), &["node", "demote", "node2"]);
    assert!(
        text(&out.stderr).contains("last manager"),
        "{}",
        text(&out.stderr)
    );
    wait_for("node3 is a worker", Duration::from_secs(15), || {
        let out = swarm(&cluster.socket(2), &["node", "ls"]);
        text(&out.stderr)
            .contains("this node is a worker")
            .then_some(())
    });
    let out = swarm(&cluster.socket(2), &["leave"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(
        "the worker that left is Down",
        Duration::from_secs(10),
        || node_line(&cluster.listing(1), "node3").filter(|l| l.contains(" Down ")),
    );
}

/// Two of three managers lost: writes stop; `init --force-new-cluster` on the survivor
/// brings the cluster back with its state, the lost managers recorded as workers.
#[test]
fn force_new_cluster_recovers_from_a_lost_quorum() {
    let mut cluster = cluster(3, &[]);
    cluster.join(1, "manager", 0);
    cluster.join(2, "manager", 0);
    let out = swarm(
        &cluster.socket(0),
        &["node", "update", "--label-add", "zone=a", "node1"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(cluster.daemons[1].take());
    drop(cluster.daemons[2].take());
    let out = swarm(&cluster.socket(0), &["join-token", "worker", "--rotate"]);
    assert!(!out.status.success(), "no quorum, no writes");

    let out = swarm(&cluster.socket(0), &["init", "--force-new-cluster"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("is now the only manager"),
        "{}",
        text(&out.stdout)
    );
    let out = swarm(
        &cluster.socket(0),
        &["join-token", "worker", "--rotate", "-q"],
    );
    assert!(out.status.success(), "writes again: {}", text(&out.stderr));
    let table = cluster.listing(0);
    assert!(
        node_line(&table, "node1").unwrap().ends_with("Leader"),
        "{table}"
    );
    for lost in ["node2", "node3"] {
        let line = node_line(&table, lost).unwrap();
        assert!(
            !line.ends_with("Reachable") && !line.ends_with("Unreachable"),
            "a worker now: {table}"
        );
    }
    let inspect = text(&swarm(&cluster.socket(0), &["node", "inspect", "node1"]).stdout);
    assert!(
        inspect.contains("\"zone\": \"a\""),
        "the state survived: {inspect}"
    );
    // And the recovered cluster survives a restart.
    drop(cluster.daemons[0].take());
    cluster.daemons[0] = Some(start(&cluster.nodes[0].0, cluster.nodes[0].1));
    let table = cluster.listing(0);
    assert!(
        node_line(&table, "node1").unwrap().ends_with("Leader"),
        "{table}"
    );
}

/// Certificates are renewed before they expire, on workers and managers alike.
#[test]
fn certificates_renew_before_they_expire() {
    let cluster = cluster(2, &["--cert-expiry", "10s"]);
    cluster.join(1, "worker", 0);
    let certificate =
        |n: usize| std::fs::read_to_string(cluster.data(n).join("certs/node.pem")).unwrap();
    let first = [certificate(0), certificate(1)];
    // Renewed when less than 40 % of the lifetime remains: after about 6 s.
    wait_for("both certificates renewed", Duration::from_secs(20), || {
        (certificate(0) != first[0] && certificate(1) != first[1]).then_some(())
    });
    let table = cluster.listing(0);
    assert!(
        node_line(&table, "node2").unwrap().contains(" Ready "),
        "{table}"
    );
    assert!(
        cluster.log(1).contains("certificate renewed"),
        "{}",
        cluster.log(1)
    );
}

/// An operator reaches a manager from elsewhere with an admin certificate of the cluster;
/// worker certificates, other clusters' certificates and node-local commands are refused.
#[test]
fn a_remote_manager_answers_over_mutual_tls() {
    let cluster = cluster(2, &[]);
    cluster.join(1, "worker", 0);
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin");
    let out = swarm(
        &cluster.socket(0),
        &["client-cert", "--out", admin.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let remote = |tls_dir: &Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_swarm"))
            .args(args)
            .env("SWARM_HOST", format!("tcp://{}", cluster.address(0)))
            .env("SWARM_TLS_DIR", tls_dir)
            .output()
            .unwrap()
    };
    let out = remote(&admin, &["node", "ls"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("node2"), "{}", text(&out.stdout));
    let out = remote(
        &admin,
        &["node", "update", "--label-add", "zone=b", "node2"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = remote(&admin, &["init"]);
    assert!(
        text(&out.stderr).contains("acts on the node it runs on"),
        "{}",
        text(&out.stderr)
    );

    // A worker's own certificate is no admin's.
    let worker = dir.path().join("worker");
    std::fs::create_dir(&worker).unwrap();
    let certs = cluster.data(1).join("certs");
    for (from, to) in [
        ("ca.pem", "ca.pem"),
        ("node.pem", "cert.pem"),
        ("node-key.pem", "key.pem"),
    ] {
        std::fs::copy(certs.join(from), worker.join(to)).unwrap();
    }
    let out = remote(&worker, &["node", "ls"]);
    assert!(
        text(&out.stderr).contains("holds a worker certificate"),
        "{}",
        text(&out.stderr)
    );

    // Another cluster's admin is not trusted.
    let other = self::cluster(1, &[]);
    let stranger = dir.path().join("stranger");
    let out = swarm(
        &other.socket(0),
        &["client-cert", "--out", stranger.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = remote(&stranger, &["node", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot reach the manager"),
        "{}",
        text(&out.stderr)
    );
    let out = remote(&dir.path().join("missing"), &["node", "ls"]);
    assert!(
        text(&out.stderr).contains("swarm client-cert --out"),
        "{}",
        text(&out.stderr)
    );
}

/// Services are created from flags (checked as stack files are), their tasks scheduled
/// over the nodes with the spread, scaled, moved off a drained node, held pending with the
/// reason when no node fits, and removed.
#[test]
fn services_are_created_spread_scaled_drained_and_removed() {
    let cluster = cluster(3, &[]);
    cluster.join(1, "worker", 0);
    cluster.join(2, "worker", 0);
    let env_file = cluster.nodes[0].0.join("web.env");
    std::fs::write(
        &env_file,
        "# from a file\nFROM_FILE=yes\nGREETING=from the file\n",
    )
    .unwrap();

    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "6",
            "--publish",
            "8080:80",
            "--env-file",
            env_file.to_str().unwrap(),
            "--env",
            "GREETING=hi $USER ${X}",
            "busybox",
            "httpd",
            "-f",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tasks = wait_for("six tasks on nodes", Duration::from_secs(10), || {
        let tasks = live_tasks(&cluster, "web");
        (tasks.len() == 6 && tasks.iter().all(|t| t["node_id"].is_string())).then_some(tasks)
    });
    // Flags are taken as written: a `$` is not interpolated; --env wins over --env-file.
    assert_eq!(
        tasks[0]["spec"]["container"]["env"]["GREETING"], "hi $USER ${X}",
        "{tasks:?}"
    );
    assert_eq!(tasks[0]["spec"]["container"]["env"]["FROM_FILE"], "yes");
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for task in &tasks {
        *per_node
            .entry(task["node_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        per_node.values().collect::<Vec<_>>(),
        [&2, &2, &2],
        "{per_node:?}"
    );
    let listing = text(&swarm(&cluster.socket(0), &["service", "ls"]).stdout);
    let line = listing.lines().find(|l| l.contains(" web ")).unwrap();
    assert!(
        line.contains("replicated") && line.contains("/6"),
        "{listing}"
    );
    assert!(line.contains("*:8080->80/tcp"), "{listing}");

    // Listings as JSON, for tools.
    let out = swarm(&cluster.socket(0), &["node", "ls", "--format", "json"]);
    let nodes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert_eq!(nodes.iter().filter(|n| n["self"] == true).count(), 1);
    let out = swarm(&cluster.socket(0), &["stack", "ls", "--format", "json"]);
    assert_eq!(text(&out.stdout).trim(), "[]");

    // Bad flags are refused with the flag and the reason; nothing is created.
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "create",
            "--name",
            "bad",
            "--restart-condition",
            "sometimes",
            "--limit-memory",
            "12X",
            "busybox",
        ],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--restart-condition: expected one of"),
        "{stderr}"
    );
    assert!(stderr.contains("--limit-memory: invalid size"), "{stderr}");
    let out = swarm(
        &cluster.socket(0),
        &[
            "service", "create", "--name", "clash", "-p", "8080:81", "busybox",
        ],
    );
    assert!(
        text(&out.stderr).contains("port 8080/tcp is already published by service web"),
        "{}",
        text(&out.stderr)
    );
    let out = swarm(
        &cluster.socket(0),
        &["service", "create", "--name", "web", "busybox"],
    );
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );

    // No node has that much memory: the task waits, and says why.
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "create",
            "-d",
            "--name",
            "huge",
            "--reserve-memory",
            "100T",
            "busybox",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(
        "the reason a task is pending",
        Duration::from_secs(10),
        || {
            let out = swarm(&cluster.socket(0), &["service", "ps", "huge"]);
            text(&out.stdout)
                .contains("no suitable node (3 nodes lack 100TiB of memory)")
                .then_some(())
        },
    );

    // Scaling down stops the highest slots.
    let out = swarm(&cluster.socket(0), &["service", "scale", "-d", "web=2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tasks = wait_for("two live tasks", Duration::from_secs(10), || {
        let tasks = live_tasks(&cluster, "web");
        (tasks.len() == 2).then_some(tasks)
    });
    let mut slots: Vec<u64> = tasks.iter().map(|t| t["slot"].as_u64().unwrap()).collect();
    slots.sort();
    assert_eq!(slots, [1, 2]);

    // A drained node's tasks are placed elsewhere.
    let out = swarm(&cluster.socket(0), &["service", "scale", "-d", "web=3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = swarm(
        &cluster.socket(0),
        &["node", "update", "--availability", "drain", "node2"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let node2 = wait_for("node2's id", Duration::from_secs(5), || {
        let out = swarm(&cluster.socket(0), &["node", "inspect", "node2"]);
        let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        inspected[0]["ID"].as_str().map(str::to_owned)
    });
    wait_for(
        "no live task on the drained node",
        Duration::from_secs(10),
        || {
            let tasks = live_tasks(&cluster, "web");
            (tasks.len() == 3
                && tasks
                    .iter()
                    .all(|t| t["node_id"].is_string() && t["node_id"] != node2.as_str()))
            .then_some(())
        },
    );
    let out = swarm(&cluster.socket(0), &["node", "ps", "node2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("Running   "),
        "{}",
        text(&out.stdout)
    );

    // A rollback goes back to the spec before the last change; rolling back again goes
    // forward; a service never changed has nothing to roll back to.
    let image = |cluster: &Cluster| {
        let out = swarm(&cluster.socket(0), &["service", "inspect", "web"]);
        let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        inspected[0]["spec"]["task"]["container"]["image"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let out = swarm(
        &cluster.socket(0),
        &["service", "update", "-d", "--image", "busybox:2", "web"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(image(&cluster), "busybox:2");
    let out = swarm(&cluster.socket(0), &["service", "rollback", "-d", "web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(image(&cluster), "busybox");
    // Docker's spelling of the same.
    let out = swarm(
        &cluster.socket(0),
        &["service", "update", "--rollback", "-d", "web"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(image(&cluster), "busybox:2");
    let out = swarm(&cluster.socket(0), &["service", "rollback", "-d", "huge"]);
    assert!(
        text(&out.stderr).contains("has no previous spec to roll back to"),
        "{}",
        text(&out.stderr)
    );

    // Docker's update flags change what they name and keep the rest; a port that another
    // service publishes is refused.
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "update",
            "-d",
            "--publish-add",
            "9090:90",
            "--publish-rm",
            "80",
            "--label-add",
            "team=web",
            "--restart-max-attempts",
            "3",
            "--args",
            "httpd -f -p 90",
            "web",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = swarm(&cluster.socket(0), &["service", "inspect", "web"]);
    let spec = &serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0]["spec"];
    assert_eq!(spec["labels"]["team"], "web", "{spec}");
    assert_eq!(spec["task"]["restart"]["max_attempts"], 3, "{spec}");
    assert_eq!(
        spec["task"]["container"]["command"],
        serde_json::json!(["httpd", "-f", "-p", "90"])
    );
    let ports = spec["endpoint"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{spec}");
    assert_eq!(ports[0]["published"], 9090, "{spec}");
    assert_eq!(spec["task"]["container"]["image"], "busybox:2", "unchanged");
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "inspect",
            "-f",
            "{{.spec.task.container.image}} {{json .spec.labels}}",
            "web",
        ],
    );
    assert_eq!(
        text(&out.stdout),
        "busybox:2 {\"team\":\"web\"}\n",
        "{}",
        text(&out.stderr)
    );
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "update",
            "-d",
            "--publish-add",
            "9090:80",
            "huge",
        ],
    );
    assert!(text(&out.stderr).contains("9090"), "{}", text(&out.stderr));

    let out = swarm(&cluster.socket(0), &["service", "rm", "web", "huge"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&swarm(&cluster.socket(0), &["service", "ls", "-q"]).stdout);
    assert!(listing.trim().is_empty(), "{listing}");
}

/// The journey with real containers: images from a loopback registry, tasks run by runc
/// on two nodes, each answering at its address; scaled down, their containers stop; a
/// missing image fails its task with the reason; removing the service and leaving the
/// cluster leave no container, mount or network behind.
#[test]
fn services_run_real_containers_on_the_nodes() {
    let Some(registry) = registry_for("services_run_real_containers_on_the_nodes") else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    // A pool of its own: no other cluster on this machine uses these subnets.
    let cluster = cluster(2, &init_args("198.18.220.0/23", &[]));
    cluster.join(1, "worker", 0);

    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "3",
            "--stop-grace-period",
            "1s",
            &image,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tasks = wait_for("three running tasks", Duration::from_secs(30), || {
        let tasks = live_tasks(&cluster, "web");
        (tasks.len() == 3 && tasks.iter().all(|t| t["status"]["state"] == "running"))
            .then_some(tasks)
    });
    let mut nodes = std::collections::BTreeSet::new();
    for task in &tasks {
        nodes.insert(task["node_id"].as_str().unwrap().to_owned());
        let address = task["status"]["address"].as_str().expect("an address");
        let id = task["id"].as_str().unwrap();
        let body = wait_for("the task answers", Duration::from_secs(10), || {
            http_get(address)
        });
        assert_eq!(body, format!("{} v1", &id[..12]), "{address}");
    }
    assert_eq!(nodes.len(), 2, "spread over both nodes: {tasks:?}");
    let listing = text(&swarm(&cluster.socket(0), &["service", "ls"]).stdout);
    assert!(listing.contains("3/3"), "{listing}");

    // Scaled down: the highest slot's container stops and goes. `-q` waits for it
    // without a word of progress.
    let out = swarm(&cluster.socket(0), &["service", "scale", "-q", "web=2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "quiet");
    let gone = tasks.iter().find(|t| t["slot"] == 3).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(
        "the scaled-down container is gone",
        Duration::from_secs(20),
        || {
            (!containers(&cluster, 0).contains(&gone) && !containers(&cluster, 1).contains(&gone))
                .then_some(())
        },
    );
    let out = swarm(&cluster.socket(0), &["service", "ps", "web"]);
    assert!(
        text(&out.stdout).contains("Shutdown"),
        "{}",
        text(&out.stdout)
    );

    // A rolling update to v2, one task at a time, each new task started before the old one
    // stops; then --force replaces the tasks again with the same spec.
    let image2 = format!("{}/swarm/hello:2", registry.addr());
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "update",
            "--image",
            &image2,
            "--update-parallelism",
            "1",
            "--update-order",
            "start-first",
            "web",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let updated = |image: &str| {
        let tasks = live_tasks(&cluster, "web");
        (tasks.len() == 2
            && tasks.iter().all(|t| {
                t["status"]["state"] == "running" && t["spec"]["container"]["image"] == image
            }))
        .then_some(tasks)
    };
    let tasks = wait_for("both tasks run v2", Duration::from_secs(30), || {
        updated(&image2)
    });
    for task in &tasks {
        let address = task["status"]["address"].as_str().unwrap();
        let id = task["id"].as_str().unwrap();
        let body = wait_for("a v2 task answers", Duration::from_secs(10), || {
            http_get(address)
        });
        assert_eq!(body, format!("{} v2", &id[..12]));
    }
    let out = swarm(&cluster.socket(0), &["service", "update", "--force", "web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before: Vec<&str> = tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
    wait_for(
        "the forced update replaced both tasks",
        Duration::from_secs(30),
        || {
            updated(&image2).filter(|now| {
                now.iter()
                    .all(|t| !before.contains(&t["id"].as_str().unwrap()))
            })
        },
    );

    // An image that does not exist fails its task, with the registry's answer.
    let missing = format!("{}/swarm/nope:1", registry.addr());
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "create",
            "-d",
            "--name",
            "nope",
            "--restart-condition",
            "none",
            &missing,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("the missing image's error", Duration::from_secs(20), || {
        let out = swarm(&cluster.socket(0), &["service", "ps", "nope"]);
        let table = text(&out.stdout);
        (table.contains("Failed") && table.contains("not found")).then_some(())
    });

    let out = swarm(&cluster.socket(0), &["service", "rm", "web", "nope"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("no container left", Duration::from_secs(20), || {
        (containers(&cluster, 0).is_empty() && containers(&cluster, 1).is_empty()).then_some(())
    });
    // Leaving takes the nodes' networks and mounts with them.
    for n in [1, 0] {
        let out = swarm(&cluster.socket(n), &["leave", "--force"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let links = links_in(&cluster.pools);
    assert!(links.is_empty(), "{links:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = cluster.nodes[0]
        .0
        .parent()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(!mounts.contains(&dir), "{mounts}");
}

/// Node failure with real containers: a worker's daemon is SIGKILLed (its containers go on
/// running, orphaned); the manager marks it Down and runs its tasks elsewhere; when the
/// daemon comes back, its stale containers are removed, never adopted, so no task runs
/// twice.
#[test]
fn a_lost_nodes_tasks_move_and_are_not_duplicated_when_it_returns() {
    let Some(registry) =
        registry_for("a_lost_nodes_tasks_move_and_are_not_duplicated_when_it_returns")
    else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(2, &init_args("198.18.224.0/23", &[]));
    cluster.join(1, "worker", 0);
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--stop-grace-period",
            "1s",
            &image,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tasks = wait_for("two running tasks", Duration::from_secs(30), || {
        let tasks = live_tasks(&cluster, "web");
        (tasks.len() == 2 && tasks.iter().all(|t| t["status"]["state"] == "running"))
            .then_some(tasks)
    });
    let node2 = wait_for("node2's id", Duration::from_secs(5), || {
        let out = swarm(&cluster.socket(0), &["node", "inspect", "node2"]);
        let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        inspected[0]["ID"].as_str().map(str::to_owned)
    });
    let on_node2: Vec<String> = tasks
        .iter()
        .filter(|t| t["node_id"] == node2.as_str())
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(on_node2.len(), 1, "spread: {tasks:?}");

    // SIGKILL, as a crash: the daemon cleans nothing up.
    let killed = Instant::now();
    kill_hard(cluster.daemons[1].as_ref().unwrap());
    wait_for("node2 is Down", Duration::from_secs(10), || {
        node_line(&cluster.listing(0), "node2").filter(|l| l.contains(" Down "))
    });
    let down = killed.elapsed();
    wait_for("both tasks run on node1", Duration::from_secs(20), || {
        let tasks = live_tasks(&cluster, "web");
        (tasks.len() == 2
            && tasks
                .iter()
                .all(|t| t["status"]["state"] == "running" && t["node_id"] != node2.as_str()))
        .then_some(())
    });
    let replaced = killed.elapsed();
    eprintln!("node killed → Down {down:?}, → replacements running {replaced:?}");
    // The lost node's container still runs: nobody could stop it.
    assert!(containers(&cluster, 1).contains(&on_node2[0]));

    let _restarted = start(&cluster.nodes[1].0, cluster.nodes[1].1);
    wait_for("node2 is Ready again", Duration::from_secs(15), || {
        node_line(&cluster.listing(0), "node2").filter(|l| l.contains(" Ready "))
    });
    wait_for(
        "the stale container is removed",
        Duration::from_secs(20),
        || containers(&cluster, 1).is_empty().then_some(()),
    );
    let tasks = live_tasks(&cluster, "web");
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(
        tasks.iter().all(|t| t["node_id"] != node2.as_str()),
        "{tasks:?}"
    );
    for n in [1, 0] {
        let out = swarm(&cluster.socket(n), &["leave", "--force"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

/// `swarm stack deploy` of the example web stack (its registry variable pointed at a
/// loopback registry): planned against the cluster, applied, running; deployed again
/// unchanged it is up to date; changed, it is updated in place; `stack rm` removes it all.
#[test]
fn stacks_deploy_update_and_remove() {
    let Some(registry) = registry_for("stacks_deploy_update_and_remove") else {
        return;
    };
    let cluster = cluster(1, &init_args("198.18.226.0/24", &[]));
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/stacks/web.yaml"
    ))
    .unwrap()
    .replace("${REGISTRY:-127.0.0.1:5000}", &registry.addr());
    let file = cluster.nodes[0].0.join("web.yaml");
    std::fs::write(&file, &example).unwrap();
    let file = file.to_string_lossy().into_owned();

    let out = swarm(
        &cluster.socket(0),
        &["stack", "deploy", "--timeout", "90s", "-c", &file, "web"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("+ create service web_site"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("web_site: converged"),
        "{}",
        text(&out.stderr)
    );
    let tasks = live_tasks(&cluster, "web_site");
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    for task in &tasks {
        let address = task["status"]["address"].as_str().unwrap();
        let body = wait_for("the task answers", Duration::from_secs(10), || {
            http_get(address)
        });
        let slot = task["slot"].as_u64().unwrap();
        assert_eq!(body, format!("web_site-{slot} v1"));
    }
    let listing = text(&swarm(&cluster.socket(0), &["stack", "ls"]).stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("web ") && l.ends_with('1')),
        "{listing}"
    );

    let out = swarm(&cluster.socket(0), &["stack", "deploy", "-c", &file, "web"]);
    assert!(
        text(&out.stdout).contains("Stack web is up to date."),
        "{}",
        text(&out.stdout)
    );

    // Listings as JSON.
    let out = swarm(
        &cluster.socket(0),
        &["stack", "services", "web", "--format", "json"],
    );
    let services: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(services.len(), 1, "{services:?}");
    assert_eq!(services[0]["spec"]["name"], "web_site");
    // Scripts written for Docker find a stack's services by its label, and filter them.
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "ls",
            "-q",
            "--filter",
            "label=com.docker.stack.namespace=web",
        ],
    );
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "{}",
        text(&out.stdout)
    );
    let out = swarm(
        &cluster.socket(0),
        &["stack", "services", "web", "-q", "--filter", "name=nothing"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    let out = swarm(
        &cluster.socket(0),
        &[
            "stack",
            "ps",
            "web",
            "--format",
            "json",
            "-f",
            "desired-state=running",
        ],
    );
    let tasks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tasks.len(), 3, "{tasks:?}");

    // A second file overrides the first, field by field, as `docker stack deploy` merges.
    let production = cluster.nodes[0].0.join("web.prod.yaml");
    std::fs::write(
        &production,
        format!(
            "services:\n  site:\n    image: {}/swarm/hello:2\n    deploy:\n      replicas: 4\n",
            registry.addr()
        ),
    )
    .unwrap();
    let production = production.to_string_lossy().into_owned();
    // The update is start-first with a healthcheck: throughout it, at least the three
    // replicas of before answer (an old task stops only once its replacement is healthy).
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let socket = cluster.socket(0);
        std::thread::spawn(move || {
            let mut fewest = usize::MAX;
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while sampling.load(std::sync::atomic::Ordering::SeqCst)
                && std::time::Instant::now() < deadline
            {
                let out = swarm(
                    &socket,
                    &[
                        "service",
                        "ps",
                        "web_site",
                        "--filter",
                        "desired-state=running",
                        "--format",
                        "json",
                    ],
                );
                let tasks: Vec<serde_json::Value> =
                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                let answering = tasks
                    .iter()
                    .filter(|t| t["status"]["state"] == "running")
                    .filter_map(|t| t["status"]["address"].as_str())
                    .filter(|address| http_get(address).is_some())
                    .count();
                fewest = fewest.min(answering);
                std::thread::sleep(Duration::from_millis(100));
            }
            fewest
        })
    };
    let out = swarm(
        &cluster.socket(0),
        &["stack", "deploy", "-c", &file, "-c", &production, "web"],
    );
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let fewest_answering = sampler.join().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        fewest_answering >= 3,
        "only {fewest_answering} tasks answered at one point of the update"
    );
    assert!(
        text(&out.stdout).contains("~ update service web_site"),
        "{}",
        text(&out.stdout)
    );
    let tasks = live_tasks(&cluster, "web_site");
    assert_eq!(tasks.len(), 4, "{tasks:?}");
    assert!(
        tasks.iter().all(|t| t["spec"]["container"]["image"]
            .as_str()
            .unwrap()
            .ends_with("hello:2")),
        "{tasks:?}"
    );

    let out = swarm(&cluster.socket(0), &["stack", "rm", "web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&swarm(&cluster.socket(0), &["stack", "ls"]).stdout);
    assert_eq!(listing.trim(), "NAME   SERVICES", "{listing}");
    wait_for("no container left", Duration::from_secs(30), || {
        containers(&cluster, 0).is_empty().then_some(())
    });
    let out = swarm(&cluster.socket(0), &["stack", "rm", "web"]);
    assert!(
        text(&out.stderr).contains("nothing found in stack web"),
        "{}",
        text(&out.stderr)
    );
    let out = swarm(&cluster.socket(0), &["leave", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `service inspect`'s update status of a service, or null.
fn update_state(cluster: &Cluster, service: &str) -> serde_json::Value {
    let out = swarm(&cluster.socket(0), &["service", "inspect", service]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    inspected[0]["UpdateStatus"]["State"].clone()
}

/// An update whose tasks exit at once, with `--update-failure-action rollback`: the CLI
/// stops waiting as soon as the orchestrator rolls the service back (non-zero, naming the
/// rollback), the old spec's tasks run again, and the rollback completes.
#[test]
fn a_failing_update_rolls_back_by_itself() {
    let Some(registry) = registry_for("a_failing_update_rolls_back_by_itself") else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(1, &init_args("198.18.196.0/24", &[]));
    let socket = cluster.socket(0);
    let out = swarm(
        &socket,
        &[
            "service",
            "create",
            "--name",
            "rb",
            "--replicas",
            "2",
            "--stop-grace-period",
            "1s",
            "--rollback-monitor",
            "1s",
            "--timeout",
            "30s",
            &image,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let original: Vec<String> = live_tasks(&cluster, "rb")
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(original.len(), 2);
    assert_eq!(update_state(&cluster, "rb"), serde_json::Value::Null);

    let started = std::time::Instant::now();
    let out = swarm(
        &socket,
        &[
            "service",
            "update",
            "rb",
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "2s",
            // The second slot waits 3 s after the first runs: the failure comes first.
            "--update-delay",
            "3s",
            "--entrypoint",
            "/bin/false",
            "--timeout",
            "40s",
        ],
    );
    let waited = started.elapsed();
    assert!(!out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "rb: rollback: update rolled back due to failure or early termination of task"
        ),
        "{stderr}"
    );
    assert!(
        waited < Duration::from_secs(30),
        "the CLI waited {waited:?}"
    );

    let state = wait_for("the rollback completes", Duration::from_secs(30), || {
        let state = update_state(&cluster, "rb");
        (state == "rollback_completed").then_some(state)
    });
    assert_eq!(state, "rollback_completed");
    let out = swarm(&socket, &["service", "inspect", "rb"]);
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        inspected[0]["spec"]["task"]["container"]["entrypoint"],
        serde_json::Value::Null,
        "the spec before the update is back"
    );
    let tasks = live_tasks(&cluster, "rb");
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    for task in &tasks {
        assert_eq!(task["status"]["state"], "running", "{task}");
        assert_eq!(
            task["spec"]["container"]["entrypoint"],
            serde_json::Value::Null
        );
    }
    // The slot the update never reached kept its task.
    assert!(
        tasks
            .iter()
            .any(|t| original.iter().any(|o| t["id"] == o.as_str())),
        "{tasks:?} / {original:?}"
    );
    let out = swarm(&socket, &["service", "inspect", "--pretty", "rb"]);
    let pretty = text(&out.stdout);
    assert!(
        pretty.contains(" State:             rollback_completed"),
        "{pretty}"
    );
    // The spec before the update, whose failure action was the default.
    assert!(pretty.contains(" On failure:        pause"), "{pretty}");
    assert!(
        pretty.contains("RollbackConfig:\n Parallelism:       1\n Delay:             0s\n On failure:        pause\n Monitoring Period: 1s\n"),
        "{pretty}"
    );

    // A good update completes (the CLI waits for it), and `service rollback` waits for its
    // rollback to complete.
    let hello2 = format!("{}/swarm/hello:2", registry.addr());
    let out = swarm(
        &socket,
        &[
            "service",
            "update",
            "--image",
            &hello2,
            "--update-monitor",
            "1s",
            "--timeout",
            "30s",
            "rb",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(update_state(&cluster, "rb"), "completed");
    let out = swarm(&socket, &["service", "rollback", "--timeout", "30s", "rb"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("rb: converged"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(update_state(&cluster, "rb"), "rollback_completed");
    let tasks = live_tasks(&cluster, "rb");
    assert!(
        tasks
            .iter()
            .all(|t| t["spec"]["container"]["image"] == image.as_str()),
        "{tasks:?}"
    );
    let out = swarm(&socket, &["service", "rm", "rb"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("no container left", Duration::from_secs(30), || {
        containers(&cluster, 0).is_empty().then_some(())
    });
}

/// Services that cannot converge: `--timeout` bounds the wait, and the error says what is
/// missing and the tasks' last error; a paused update ends the wait at once.
#[test]
fn waits_that_cannot_converge_fail_with_the_reason() {
    let Some(registry) = registry_for("waits_that_cannot_converge_fail_with_the_reason") else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(1, &init_args("198.18.197.0/24", &[]));
    let socket = cluster.socket(0);
    let started = std::time::Instant::now();
    let out = swarm(
        &socket,
        &[
            "service",
            "create",
            "--name",
            "stuck",
            "--entrypoint",
            "/bin/false",
            "--timeout",
            "3s",
            &image,
        ],
    );
    let waited = started.elapsed();
    assert!(!out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: stuck did not converge within 3s: 0/1 tasks running"),
        "{stderr}"
    );
    assert!(
        stderr.contains("last task error: task: non-zero exit (1)"),
        "{stderr}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "the CLI waited {waited:?}"
    );

    // An update whose tasks exit at once pauses (the default failure action): the wait
    // ends at once with the reason, and the slot the update did not reach keeps its task.
    let out = swarm(
        &socket,
        &[
            "service",
            "create",
            "--name",
            "held",
            "--replicas",
            "2",
            "--stop-grace-period",
            "1s",
            "--timeout",
            "30s",
            &image,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let started = std::time::Instant::now();
    let out = swarm(
        &socket,
        &[
            "service",
            "update",
            "--entrypoint",
            "/bin/false",
            "--update-delay",
            "3s",
            "--timeout",
            "40s",
            "held",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "held: update paused: update paused due to failure or early termination of task"
        ),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(update_state(&cluster, "held"), "paused");
    // Well past the update delay: still paused, the old task still runs.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(update_state(&cluster, "held"), "paused");
    let old_running = live_tasks(&cluster, "held")
        .iter()
        .filter(|t| t["spec"]["container"]["entrypoint"].is_null())
        .filter(|t| t["status"]["state"] == "running")
        .count();
    assert_eq!(old_running, 1);

    let out = swarm(&socket, &["service", "rm", "stuck", "held"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("no container left", Duration::from_secs(30), || {
        containers(&cluster, 0).is_empty().then_some(())
    });
}
