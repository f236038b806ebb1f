//! What `/metrics` costs on a manager of a big cluster, and what the Raft loop pays for it.
//!
//!     cargo bench -p swarm-node --bench metrics
//!
//! The state: 1,000 Ready nodes, 1,000 services of 3 running tasks each (3,000 tasks), built
//! with the store's own apply, then handed to a real Raft loop (one voter, log in memory)
//! as its snapshot; the node's metrics follow that loop's store as a daemon's do, and are
//! served by the daemon's own HTTP endpoint on loopback.
//!
//! - `scrape over HTTP`: `GET /metrics` on a new connection each (as `curl`), response read
//!   whole: p50, p90, p99 of 2,000;
//! - `render`: the registry rendered to text, no HTTP;
//! - `rescan`: counting the whole state (`Tally::of`), what a scrape would cost the Raft
//!   loop if it counted at scrape time instead of following the watch;
//! - `follow one entry`: one task status change applied to the tally (what each entry
//!   costs the follower, off the Raft loop);
//! - `histogram observe` / `counter inc`: what the Raft loop pays per proposal and per
//!   failure, against its cost per write.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use raft::prelude::Message;
use swarm_api::plan::{Action, Kind, ObjectSpec, Op};
use swarm_api::store::{
    Availability, Cluster, Command, Node, NodeRole, NodeStatus, TaskChange, TaskStatusUpdate,
};
use swarm_api::task::{DesiredState, Task, TaskState, TaskStatus};
use swarm_controller::raft::driver::{self, DriverConfig, RaftMetrics, Transport, Unreachable};
use swarm_controller::raft::log::{DurableLog, Location};
use swarm_controller::raft::replica::{Config, Replica, StateMachine};
use swarm_controller::store::{Changed, Store};
use swarm_node::metrics::{self, Metrics, Tally};

const NODES: usize = 1_000;
const SERVICES: usize = 1_000;
const TASKS_PER_SERVICE: usize = 3;
const SCRAPES: usize = 2_000;
const OBSERVATIONS: usize = 10_000_000;

/// A single voter has no one to talk to.
struct Alone;

impl Transport for Alone {
    fn send(&mut self, _message: Message) -> Result<(), Unreachable> {
        Err(Unreachable)
    }
}

fn main() {
    let started = Instant::now();
    let store = big_store();
    println!(
        "state: {NODES} nodes, {SERVICES} services, {} tasks (built in {:.1} s)",
        store.data().tasks.len(),
        started.elapsed().as_secs_f64()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let registry = Arc::new(registry);
    let port = runtime.block_on(async {
        let mut log = DurableLog::open(Location::Memory).unwrap();
        log.bootstrap(&[1], store.snapshot()).unwrap();
        let replica = Replica::open(&Config::new(1), log, Store::default()).unwrap();
        let config = DriverConfig {
            tick: Duration::from_millis(10),
            metrics: metrics.raft.clone(),
            ..DriverConfig::default()
        };
        let (raft, driver) = driver::spawn(replica, |_| Alone, config);
        std::mem::forget(driver); // runs until the process ends
        tokio::spawn(metrics::follow_cluster(raft.clone(), metrics.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(metrics::serve(listener, registry.clone()));
        port
    });
    // The follower subscribed once the loop runs: every task counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let running = format!(
        r#"swarm_tasks{{state="running",desired_state="running"}} {}"#,
        SERVICES * TASKS_PER_SERVICE
    );
    while !scrape(port).contains(&running) {
        assert!(
            Instant::now() < deadline,
            "the tally never counted the state"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let body = scrape(port);
    println!(
        "one scrape: {} bytes, {} lines",
        body.len(),
        body.lines().count()
    );

    report("scrape over HTTP (new connection)", SCRAPES, || {
        std::hint::black_box(scrape(port));
    });
    report("render (registry to text)", SCRAPES, || {
        std::hint::black_box(metrics::render(&registry));
    });
    report("rescan (Tally::of, 3,000 tasks)", 200, || {
        std::hint::black_box(Tally::of(&store));
    });

    // One entry's changes: a task of the middle service fails, as its node reports it; and
    // the same entry with the task running again, to alternate (the tally skips a record
    // whose counts do not move).
    let mut followed = store.clone();
    let subscription = followed.subscribe(Tally::of);
    let mut tally = subscription.view;
    let mut changes = subscription.changes;
    let index = followed.data().version + 1;
    followed.apply_command(
        index,
        Command::TaskStatuses {
            node_id: node_id((500 * TASKS_PER_SERVICE) % NODES),
            updates: vec![TaskStatusUpdate {
                id: task_id(500, 0),
                status: TaskStatus::new(TaskState::Failed, 2),
            }],
        },
    );
    let failed = changes.try_recv().unwrap().expect("a change");
    let mut running = (*failed).clone();
    for change in &mut running.changed {
        if let Changed::Task {
            task: Some(task), ..
        } = change
        {
            task.status = TaskStatus::new(TaskState::Running, 1);
        }
    }
    let entries = [failed, Arc::new(running)];
    let mut turn = 0;
    report("follow one entry (1 task status)", 100_000, || {
        tally.apply(&entries[turn % 2]);
        turn += 1;
    });

    let raft = RaftMetrics::default();
    let started = Instant::now();
    for n in 0..OBSERVATIONS {
        raft.proposal_seconds
            .observe(std::hint::black_box(n as f64 * 1e-9));
    }
    let observe = started.elapsed().as_secs_f64() * 1e9 / OBSERVATIONS as f64;
    let started = Instant::now();
    for _ in 0..OBSERVATIONS {
        raft.leader_changes.inc();
    }
    let inc = started.elapsed().as_secs_f64() * 1e9 / OBSERVATIONS as f64;
    println!("histogram observe: {observe:.1} ns; counter inc: {inc:.1} ns (mean of 10M)");
}

/// Runs `f` `runs` times after a tenth as many untimed; prints p50, p90, p99.
fn report(name: &str, runs: usize, mut f: impl FnMut()) {
    for _ in 0..runs / 10 {
        f();
    }
    let mut samples: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name}: p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs ({runs} runs)",
        at(0.5),
        at(0.9),
        at(0.99)
    );
}

/// `GET /metrics` on a new connection; the whole response.
fn scrape(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn node_id(n: usize) -> String {
    format!("node-{n:04}")
}

fn task_id(service: usize, replica: usize) -> String {
    format!("task-{service:04}-{replica}")
}

/// The state, applied entry by entry as a replica would.
fn big_store() -> Store {
    let mut store = Store::default();
    let mut index = 0;
    let mut apply = |store: &mut Store, command: Command| {
        index += 1;
        store.apply_command(index, command);
    };
    apply(
        &mut store,
        Command::InitCluster(Cluster {
            id: "bench".into(),
            created_at: 0,
            heartbeat_period_ms: 1000,
            missed_heartbeats_for_down: 3,
            certificate_validity_ms: 1,
            worker_token_secret: String::new(),
            manager_token_secret: String::new(),
            address_pool: Default::default(),
        }),
    );
    for n in 0..NODES {
        apply(
            &mut store,
            Command::AddNode(Node {
                id: node_id(n),
                hostname: format!("host-{n:04}"),
                role: if n == 0 {
                    NodeRole::Manager
                } else {
                    NodeRole::Worker
                },
                availability: Availability::Active,
                status: NodeStatus::Ready,
                status_since: 1,
                labels: Default::default(),
                address: String::new(),
                raft_id: None,
                description: Default::default(),
                subnet: None,
                worker_error: None,
                ports_taken: Vec::new(),
            }),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    let mut yaml = String::from("services:\n");
    for s in 0..SERVICES {
        yaml.push_str(&format!("  svc{s:04}:\n    image: nginx:1.{s}\n"));
    }
    std::fs::write(&path, yaml).unwrap();
    let loaded = swarm_controller::stack::load(
        &swarm_controller::source::WorkTree,
        &path,
        "big.yaml",
        &|_| None,
    );
    let actions = loaded
        .stack
        .expect("the stack loads")
        .services
        .into_iter()
        .map(|mut spec| {
            // Attached to no network: the store refuses a service naming one it lacks.
            spec.task.networks.clear();
            Action {
                op: Op::Create,
                kind: Kind::Service,
                name: spec.name.clone(),
                origin: Default::default(),
                changes: Vec::new(),
                spec: Some(ObjectSpec::Service(Box::new(spec))),
            }
        })
        .collect();
    apply(
        &mut store,
        Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: None,
            actions,
            registry_auth: Default::default(),
            override_git: false,
        },
    );
    let services = store.export().services;
    let changes = services
        .iter()
        .enumerate()
        .flat_map(|(s, service)| {
            (0..TASKS_PER_SERVICE).map(move |r| {
                TaskChange::Create(Box::new(Task {
                    id: task_id(s, r),
                    service_id: service.id.clone().unwrap(),
                    service_name: service.spec.name.clone(),
                    slot: Some(r as u64 + 1),
                    node_id: Some(node_id((s * TASKS_PER_SERVICE + r) % NODES)),
                    spec: service.spec.task.clone(),
                    desired: DesiredState::Running,
                    status: TaskStatus::new(TaskState::Running, 1),
                    created_at: 1,
                    started_at: Some(1),
                    networks: Vec::new(),
                }))
            })
        })
        .collect();
    let expected_version = store.data().tasks_version;
    apply(
        &mut store,
        Command::WriteTasks {
            expected_version,
            changes,
        },
    );
    store
}
