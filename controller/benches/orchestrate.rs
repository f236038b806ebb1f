//! The leader's orchestration through Raft at scale. Target (issue 5): through Raft, 3
//! managers, fsync on, 10,000 tasks onto 1,000 simulated agents committed in ≤ 2 s.
//!
//!     cargo bench -p swarm-controller --bench orchestrate
//!
//! Each run starts a fresh cluster: three managers in this process, each with the real
//! `Store` as its state machine and a durable redb log (fsync on) in `target/bench-tmp`,
//! talking over the real gRPC transport with mutual TLS on loopback. 1,000 worker nodes are
//! added (records only: no agent runs), then one service of 10,000 replicas is applied as a
//! plan. What is timed is the leader loop's work (`node/src/orchestrate.rs`), from the
//! ApplyPlan applied to the last WriteTasks applied: repeat { local_read → pass → at most
//! 1,000 decisions → propose WriteTasks } until a pass decides nothing. Reported: that time
//! on the leader, the time until both followers applied the last entry too, and the
//! entries written (count and bytes).

// Each run needs a fresh cluster, so runs are timed here, not with `harness::measure`.
#[allow(dead_code)]
#[path = "support/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "support/harness.rs"]
mod harness;
#[path = "../tests/support/raft_cluster.rs"]
mod raft_cluster;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cluster::node;
use harness::{Timing, quantile, report};
use raft_cluster::{Manager, ManagerConfig, credentials};
use swarm_api::store::{AddressPool, Cluster, Command, Outcome, StoreData};
use swarm_api::task::DesiredState;
use swarm_controller::ca::{Role, RootCa};
use swarm_controller::raft::crypt::DataKey;
use swarm_controller::raft::driver::RaftHandle;
use swarm_controller::raft::log::{DurableLog, Location};
use swarm_controller::store::Store;
use swarm_controller::{orchestrator, plan, source, stack};
use tokio::task::JoinSet;

const CLUSTER: &str = "bench-cluster";
const NODES: usize = 1_000;
const REPLICAS: usize = 10_000;
/// As in `node/src/orchestrate.rs`: the most task decisions in one Raft entry.
const MAX_CHANGES_PER_ENTRY: usize = 1000;
const RUNS: usize = 7;
/// Target (issue 5), in ms.
const TARGET_MS: f64 = 2000.0;
/// How many AddNode proposals are in flight at once while the cluster is filled (setup,
/// not timed).
const SETUP_CONCURRENCY: usize = 64;

/// Three managers bootstrapped as voters of a new cluster, and the id of their leader.
async fn cluster(dir: &Path, ca: &RootCa) -> (HashMap<u64, Manager<Store>>, u64) {
    let (mut listeners, addresses) = raft_cluster::listeners(3).await;
    let key = DataKey::generate();
    for id in 1..=3u64 {
        let mut log = DurableLog::open(Location::File {
            path: &dir.join(format!("{id}.redb")),
            durable: true,
            key: key.clone(),
        })
        .unwrap();
        log.bootstrap(&[1, 2, 3], Vec::new()).unwrap();
    }
    let managers: HashMap<u64, Manager<Store>> = (1..=3)
        .map(|id| {
            let credentials = credentials(ca, &format!("manager-{id}"), Role::Manager, CLUSTER);
            let config = ManagerConfig {
                cluster: CLUSTER,
                dir,
                credentials: &credentials,
                addresses: &addresses,
                timeout: Duration::from_secs(30),
                key: &key,
            };
            let listener = listeners.remove(&id).unwrap();
            (
                id,
                raft_cluster::start(id, Store::default(), &config, listener),
            )
        })
        .collect();
    let leader = raft_cluster::leader(&managers, Duration::from_secs(20)).await;
    (managers, leader)
}

/// Proposes `command` through `raft`; returns the entry's size in bytes.
async fn propose(raft: &RaftHandle<Store>, command: &Command) -> Result<usize, String> {
    let bytes = serde_json::to_vec(command).unwrap();
    let size = bytes.len();
    let response = raft.propose(bytes).await.map_err(|e| e.to_string())?;
    match serde_json::from_slice(&response).unwrap() {
        Outcome::Applied { .. } => Ok(size),
        Outcome::Rejected(rejection) => Err(rejection.to_string()),
    }
}

/// The plan that creates one service of `REPLICAS` replicas, from a stack file as a user
/// would write it.
fn service_plan(dir: &Path) -> Command {
    let path = dir.join("bench.yaml");
    std::fs::write(
        &path,
        format!("services:\n  web:\n    image: nginx\n    deploy:\n      replicas: {REPLICAS}\n"),
    )
    .unwrap();
    let loaded = stack::load(&source::WorkTree, &path, "bench.yaml", &|_| None);
    let stack = loaded
        .stack
        .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics));
    let plan = plan::plan(
        &[stack],
        &swarm_api::state::ClusterState::empty(),
        &Default::default(),
        Default::default(),
    )
    .unwrap();
    Command::ApplyPlan {
        file_contents: Default::default(),
        expected_version: None,
        actions: plan.actions,
        registry_auth: Default::default(),
        override_git: false,
    }
}

fn millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Task ids as the daemon makes them: random, so every run writes entries of the real size.
fn random_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 25];
    getrandom::fill(&mut bytes).unwrap();
    bytes
        .iter()
        .map(|b| ALPHABET[(*b % 36) as usize] as char)
        .collect()
}

struct Run {
    leader_ms: f64,
    /// Of `leader_ms`, the time spent in passes (the rest is Raft: replication, fsync, apply).
    passes_ms: f64,
    all_replicas_ms: f64,
    entries: usize,
    bytes: Vec<usize>,
    refused: usize,
}

/// Tasks meant to run and assigned to a node, on one replica's state.
fn assigned(data: &StoreData) -> usize {
    data.tasks
        .values()
        .filter(|t| t.desired == DesiredState::Running && t.node_id.is_some())
        .count()
}

async fn one_run(base: &Path, ca: &RootCa) -> Run {
    let dir = tempfile::tempdir_in(base).unwrap();
    let (managers, leader_id) = cluster(dir.path(), ca).await;
    let leader = &managers[&leader_id].handle;

    // Setup, not timed: the cluster, 1,000 nodes, the plan.
    let init = Command::InitCluster(Cluster {
        id: CLUSTER.into(),
        created_at: millis_now(),
        heartbeat_period_ms: 1000,
        missed_heartbeats_for_down: 3,
        certificate_validity_ms: swarm_api::store::DEFAULT_CERTIFICATE_VALIDITY_MS,
        worker_token_secret: String::new(),
        manager_token_secret: String::new(),
        // A /8 in /24s: room for every node's subnet (the default /16 holds 256).
        address_pool: AddressPool {
            base: "10.0.0.0/8".parse().unwrap(),
            subnet_size: 24,
        },
    });
    propose(leader, &init).await.unwrap();
    let mut adding: JoinSet<Result<usize, String>> = JoinSet::new();
    for n in 0..NODES {
        if adding.len() >= SETUP_CONCURRENCY {
            adding.join_next().await.unwrap().unwrap().unwrap();
        }
        let raft = leader.clone();
        adding.spawn(async move { propose(&raft, &Command::AddNode(node(n))).await });
    }
    while let Some(added) = adding.join_next().await {
        added.unwrap().unwrap();
    }
    let apply_plan = service_plan(dir.path());
    propose(leader, &apply_plan).await.unwrap();

    // Timed: the leader loop's work, from the plan applied to the last WriteTasks applied.
    let start = Instant::now();
    // Each replica's applied index as it moves, with when: the end is known only once a
    // pass decides nothing, after the followers may have applied the last entry already.
    let watchers: Vec<_> = managers
        .values()
        .map(|manager| {
            let mut applied = manager.handle.applied();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while applied.changed().await.is_ok() {
                    seen.push((*applied.borrow_and_update(), Instant::now()));
                }
                seen
            })
        })
        .collect();
    let mut bytes = Vec::new();
    let mut refused = 0;
    let mut passes = Duration::ZERO;
    let mut last_written = (start, 0);
    loop {
        let now = millis_now();
        let pass_started = Instant::now();
        let (expected_version, mut changes) = leader
            .local_read(move |store: &Store| {
                let data = store.data();
                let mut new_id = random_id;
                let changes = orchestrator::pass(now, data, &mut new_id);
                (data.tasks_version, changes)
            })
            .await
            .unwrap();
        if changes.is_empty() {
            break;
        }
        passes += pass_started.elapsed();
        changes.truncate(MAX_CHANGES_PER_ENTRY);
        let command = Command::WriteTasks {
            expected_version,
            changes,
        };
        match propose(leader, &command).await {
            Ok(size) => {
                bytes.push(size);
                last_written = (Instant::now(), *leader.applied().borrow());
            }
            // Only one pass writes here, so a refusal is a defect of the bench, but it is
            // counted rather than hidden: the loop redoes it, as the daemon does.
            Err(_) => refused += 1,
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "orchestration did not converge within 120 s"
        );
    }
    let (last_at, last) = last_written;
    let leader_ms = (last_at - start).as_secs_f64() * 1e3;
    // The followers learn the commit of the last entry with the leader's next message.
    let deadline = Instant::now() + Duration::from_secs(30);
    for manager in managers.values() {
        let mut applied = manager.handle.applied();
        tokio::time::timeout_at(deadline.into(), applied.wait_for(|a| *a >= last))
            .await
            .expect("every replica applies the last entry within 30 s")
            .unwrap();
    }
    for manager in managers.values() {
        let count = manager
            .handle
            .local_read(|store: &Store| assigned(store.data()))
            .await
            .unwrap();
        assert_eq!(count, REPLICAS, "every replica holds every task assigned");
    }
    let mut all_applied_at = last_at;
    for manager in managers.values() {
        // Stopping a replica closes its watch, which ends its watcher.
        manager.stop();
    }
    for watcher in watchers {
        let seen = watcher.await.unwrap();
        let (_, at) = seen.iter().find(|(index, _)| *index >= last).unwrap();
        all_applied_at = all_applied_at.max(*at);
    }
    let all_replicas_ms = (all_applied_at - start).as_secs_f64() * 1e3;
    drop(managers);
    Run {
        leader_ms,
        passes_ms: passes.as_secs_f64() * 1e3,
        all_replicas_ms,
        entries: bytes.len(),
        bytes,
        refused,
    }
}

fn timing(mut samples: Vec<f64>) -> Timing {
    let first = samples[0];
    samples.sort_by(f64::total_cmp);
    Timing { samples, first }
}

fn main() {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tmp");
    std::fs::create_dir_all(&base).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ca = RootCa::generate(CLUSTER, SystemTime::now()).unwrap();
    let runs: Vec<Run> = (0..RUNS)
        .map(|_| runtime.block_on(one_run(&base, &ca)))
        .collect();
    report(
        "10k_tasks_1k_nodes_3_managers_leader",
        Some(TARGET_MS),
        &timing(runs.iter().map(|r| r.leader_ms).collect()),
    );
    report(
        "  of_which_passes",
        None,
        &timing(runs.iter().map(|r| r.passes_ms).collect()),
    );
    report(
        "10k_tasks_1k_nodes_3_managers_all",
        Some(TARGET_MS),
        &timing(runs.iter().map(|r| r.all_replicas_ms).collect()),
    );
    let mut sizes: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.bytes.iter().map(|b| *b as f64))
        .collect();
    sizes.sort_by(f64::total_cmp);
    let entries: Vec<usize> = runs.iter().map(|r| r.entries).collect();
    let total_mib: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{:.1}",
                r.bytes.iter().sum::<usize>() as f64 / (1 << 20) as f64
            )
        })
        .collect();
    println!(
        "WriteTasks entries per run {entries:?} (refused {:?}); entry size median {:.0} KiB, max {:.0} KiB; MiB per run {total_mib:?}",
        runs.iter().map(|r| r.refused).collect::<Vec<_>>(),
        quantile(&sizes, 0.5) / 1024.0,
        quantile(&sizes, 1.0) / 1024.0,
    );
}
