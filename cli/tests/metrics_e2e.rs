//! `swarm daemon --metrics-addr`: a real single-node cluster scraped over loopback while a
//! service of 2 replicas starts (the cluster's gauges, the node's own tasks, the Raft
//! replica's metrics), and the addresses the flag refuses at start.
//!
//! The scrape tests need root and runc (skipped with a message otherwise, except under
//! CI=true); their clusters' address pools are 198.18.224.0/24 and 198.18.225.0/24 (cut
//! into /25s). The refusals need neither.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `GET /metrics` on `port` of the loopback, bounded; the body.
fn scrape(port: u16) -> Option<String> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The value of the series `series` (name and labels, as written) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

const PROPOSALS: &str = "swarm_raft_proposal_duration_seconds_count";
const RUNNING: &str = r#"swarm_tasks{state="running",desired_state="running"}"#;

#[test]
fn a_manager_exports_its_cluster_its_replica_and_its_own_tasks() {
    let test = "a_manager_exports_its_cluster_its_replica_and_its_own_tasks";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let cluster = cluster_with(
        1,
        &init_args("198.18.224.0/24", &[]),
        &["--metrics-addr", &metrics_addr],
    );

    let before = wait_for("a first scrape", Duration::from_secs(10), || scrape(port));
    assert!(must(&before, "swarm_raft_term") >= 1.0, "{before}");
    assert_eq!(must(&before, "swarm_raft_is_leader"), 1.0, "{before}");
    assert!(must(&before, "swarm_raft_leader_changes_total") >= 1.0);
    assert!(must(&before, "swarm_raft_commit_index") >= must(&before, "swarm_raft_applied_index"));
    assert_eq!(must(&before, "swarm_services"), 0.0);
    assert_eq!(must(&before, RUNNING), 0.0);
    assert_eq!(
        must(
            &before,
            r#"swarm_nodes{status="ready",availability="active",role="manager"}"#
        ),
        1.0,
        "{before}"
    );
    assert_eq!(must(&before, "swarm_node_tasks_running"), 0.0);
    let proposals_before = must(&before, PROPOSALS);
    // A published port on the loopback (the mesh answers on every address of the node).
    let published = free_port();

    ok(
        &cluster,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "--publish",
            &format!("{published}:80"),
            &image,
        ],
    );
    let after = wait_for(
        "2 running tasks in the metrics",
        Duration::from_secs(60),
        || {
            let text = scrape(port)?;
            (value(&text, RUNNING) == Some(2.0)
                && value(&text, "swarm_node_tasks_running") == Some(2.0))
            .then_some(text)
        },
    );
    assert_eq!(must(&after, "swarm_services"), 1.0, "{after}");
    assert!(
        must(&after, PROPOSALS) > proposals_before,
        "the service's proposals were observed: {after}"
    );
    assert!(must(&after, "swarm_raft_applied_index") > must(&before, "swarm_raft_applied_index"));
    assert_eq!(
        must(
            &after,
            r#"swarm_raft_proposals_failed_total{reason="abandoned"}"#
        ),
        0.0
    );
    // Three requests through the routing mesh are three connections of web's port, and
    // their bytes each way (IP packets: at least the request's and the page's).
    let mesh = format!(
        r#"swarm_mesh_connections_total{{service="web",protocol="tcp",port="{published}"}}"#
    );
    let bytes = |direction: &str| {
        format!(
            r#"swarm_mesh_bytes_total{{service="web",protocol="tcp",port="{published}",direction="{direction}"}}"#
        )
    };
    wait_for("the mesh answering", Duration::from_secs(30), || {
        http_get_at(&format!("127.0.0.1:{published}"))
    });
    let before = scrape(port).expect("a scrape");
    let counted = must(&before, &mesh);
    let mut page = String::new();
    for _ in 0..3 {
        page = http_get_at(&format!("127.0.0.1:{published}")).expect("an answer");
    }
    let text = scrape(port).expect("a scrape");
    assert_eq!(must(&text, &mesh), counted + 3.0, "{text}");
    let request = b"GET / HTTP/1.0\r\nHost: web\r\n\r\n".len() as f64;
    let sent = must(&text, &bytes("in")) - must(&before, &bytes("in"));
    let answered = must(&text, &bytes("out")) - must(&before, &bytes("out"));
    assert!(sent >= 3.0 * request, "{sent} bytes in: {text}");
    assert!(
        answered >= 3.0 * page.len() as f64,
        "{answered} bytes out: {text}"
    );
    assert_eq!(must(&text, "swarm_mesh_refused_total"), 0.0);
    ok(&cluster, &["service", "rm", "web"]);
    wait_for("no running task left", Duration::from_secs(60), || {
        let text = scrape(port)?;
        (value(&text, RUNNING) == Some(0.0) && value(&text, "swarm_services") == Some(0.0))
            .then_some(())
    });
}

#[test]
fn a_worker_exports_only_its_own_tasks() {
    let test = "a_worker_exports_only_its_own_tasks";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let manager_port = free_port();
    let manager_metrics = format!("127.0.0.1:{manager_port}");
    let mut cluster = cluster_with(
        1,
        &pool_args("198.18.225.0/24", "25", &[]),
        &["--metrics-addr", &manager_metrics],
    );
    // The worker, with a metrics address of its own.
    let worker_dir = cluster._dir.path().join("node2");
    std::fs::create_dir(&worker_dir).unwrap();
    let (worker_port, worker_listen) = (free_port(), free_port());
    let worker_metrics = format!("127.0.0.1:{worker_port}");
    let worker = start_with(
        &worker_dir,
        worker_listen,
        &["--metrics-addr", &worker_metrics],
    );
    cluster.nodes.push((worker_dir, worker_listen));
    cluster.daemons.push(Some(worker));
    cluster.join(1, "worker", 0);
    wait_for("two Ready nodes", Duration::from_secs(20), || {
        (cluster.listing(0).matches("Ready").count() == 2).then_some(())
    });

    ok(
        &cluster,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--constraint",
            "node.role==worker",
            &image,
        ],
    );
    let on_worker = wait_for(
        "the task running on the worker",
        Duration::from_secs(60),
        || {
            let text = scrape(worker_port)?;
            (value(&text, "swarm_node_tasks_running") == Some(1.0)).then_some(text)
        },
    );
    assert!(
        !on_worker.lines().any(|l| l.starts_with("swarm_raft")
            || l.starts_with("swarm_tasks")
            || l.starts_with("swarm_nodes")
            || l.starts_with("swarm_services")),
        "a worker exports only its own: {on_worker}"
    );
    let on_manager = wait_for("the manager's count", Duration::from_secs(30), || {
        let text = scrape(manager_port)?;
        (value(&text, RUNNING) == Some(1.0)).then_some(text)
    });
    assert_eq!(must(&on_manager, "swarm_node_tasks_running"), 0.0);
    assert_eq!(
        must(
            &on_manager,
            r#"swarm_nodes{status="ready",availability="active",role="worker"}"#
        ),
        1.0,
        "{on_manager}"
    );
}

/// Runs `swarm daemon ARGS` in a fresh directory, which must fail at once; its stderr.
fn refused_start(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["daemon", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--socket")
        .arg(dir.path().join("swarm.sock"))
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("swarm daemon {args:?} did not stop within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "swarm daemon {args:?} started");
    assert!(
        !dir.path().join("swarm.sock").exists(),
        "the control socket was opened"
    );
    stderr
}

#[test]
fn the_metrics_address_may_be_neither_the_cluster_port_nor_taken() {
    let port = free_port();
    let stderr = refused_start(&[
        "--listen-addr",
        &format!("0.0.0.0:{port}"),
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
    ]);
    assert!(
        stderr.contains(&format!(
            "--metrics-addr 127.0.0.1:{port}: port {port} is the cluster port (--listen-addr 0.0.0.0:{port})"
        )),
        "{stderr}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let stderr = refused_start(&[
        "--listen-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--metrics-addr",
        &taken_addr,
    ]);
    assert!(
        stderr.contains(&format!("--metrics-addr {taken_addr}: cannot listen:")),
        "{stderr}"
    );
}

/// `GET /` at `address` (HOST:PORT), bounded: the body, if it answered.
fn http_get_at(address: &str) -> Option<String> {
    let address: std::net::SocketAddr = address.parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let body = response.split_once("\r\n\r\n")?.1.trim().to_owned();
    (!body.is_empty()).then_some(body)
}
