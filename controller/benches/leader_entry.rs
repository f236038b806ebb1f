//! The leader's cost per applied entry (issue 10): what one small change (one task status
//! report) costs the leader at 100, 1,000 and 10,000 tasks over 1,000 nodes. It must grow
//! with what changed, not with the state.
//!
//!     cargo bench -p swarm-controller --bench leader_entry
//!
//! In process, no Raft: the store's apply is what every replica does per entry; the rest is
//! what the leader's readers do after it. The state: 1,000 Ready nodes and one replicated
//! service of N tasks, placed by the orchestrator and all running. The entry: one
//! `TaskStatuses` from the node of one task (running, a new `since`).
//!
//! `watch` is the leader now: the store's apply publishes the entry's changes; the
//! dispatcher's `Assignments` follows them and names the nodes whose assignments changed
//! (each compared with what it was last sent, as a session does), and the orchestrator's
//! `Dirty` follows them into the scope of a pass over the changed services only.
//!
//! `rescan` is the leader as it was before the watch: after the apply, a full orchestrator
//! pass (`node/src/orchestrate.rs` ran one per applied entry) and, for each of the 1,000
//! connected nodes, the dispatcher's read of its assignments compared with what it was last
//! sent (`node/src/dispatcher.rs` ran one `local_read` per node per applied entry).

#[allow(dead_code)]
#[path = "support/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "support/harness.rs"]
mod harness;

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use cluster::node;
use harness::{Timing, measure, quantile};
use swarm_api::auth::RegistryAuth;
use swarm_api::store::{Command, Outcome, TaskStatusUpdate};
use swarm_api::task::{DesiredState, Task, TaskState, TaskStatus};
use swarm_controller::orchestrator::Dirty;
use swarm_controller::store::{Assignment, Assignments, Store};
use swarm_controller::{orchestrator, plan, source, stack};

const NODES: usize = 1_000;
const SIZES: [usize; 3] = [100, 1_000, 10_000];
const RUNS: usize = 200;

fn service_plan(dir: &Path, replicas: usize) -> Command {
    let path = dir.join("bench.yaml");
    std::fs::write(
        &path,
        format!("services:\n  web:\n    image: nginx\n    deploy:\n      replicas: {replicas}\n"),
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

/// A store with the nodes and a service of `replicas` tasks, all placed and running; the
/// next free Raft index.
fn state(replicas: usize) -> (Store, u64) {
    let mut store = Store::default();
    let mut index = 0;
    let mut apply = |store: &mut Store, command: Command| {
        index += 1;
        let outcome = store.apply_command(index, command);
        assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    };
    apply(&mut store, cluster::init("10.0.0.0/8"));
    for n in 0..NODES {
        apply(&mut store, Command::AddNode(node(n)));
    }
    let dir = tempfile::tempdir().unwrap();
    apply(&mut store, service_plan(dir.path(), replicas));
    let mut next = 0u64;
    let mut new_id = move || {
        next += 1;
        format!("task-{next:06}")
    };
    loop {
        let changes = orchestrator::pass(1, store.data(), &mut new_id);
        if changes.is_empty() {
            break;
        }
        let expected_version = store.data().tasks_version;
        apply(
            &mut store,
            Command::WriteTasks {
                expected_version,
                changes,
            },
        );
    }
    let mut by_node: BTreeMap<String, Vec<TaskStatusUpdate>> = BTreeMap::new();
    for task in store.data().tasks.values() {
        by_node
            .entry(task.node_id.clone().expect("placed"))
            .or_default()
            .push(TaskStatusUpdate {
                id: task.id.clone(),
                status: TaskStatus::new(TaskState::Running, 2),
            });
    }
    for (node_id, updates) in by_node {
        apply(&mut store, Command::TaskStatuses { node_id, updates });
    }
    assert_eq!(store.data().tasks.len(), replicas);
    (store, index + 1)
}

/// One node's assignments as the dispatcher sent them before the watch: its tasks, its
/// subnet, its tasks' services' credentials.
type Assigned = (Vec<Task>, String, BTreeMap<String, RegistryAuth>);

fn assigned_by_rescan(store: &Store, node_id: &str) -> Assigned {
    let subnet = store.data().nodes.get(node_id).and_then(|n| n.subnet);
    let subnet = subnet.map(|s| s.to_string()).unwrap_or_default();
    let tasks: Vec<Task> = store
        .tasks_on(node_id)
        .filter(|t| t.desired == DesiredState::Running || !t.status.state.is_terminal())
        .cloned()
        .collect();
    let auth = tasks
        .iter()
        .filter_map(|t| {
            let kept = store.data().registry_auth.get(&t.service_id)?;
            Some((t.service_id.clone(), kept.clone()))
        })
        .collect();
    (tasks, subnet, auth)
}

/// The status report of the entry: the task's node says it runs, with a new `since`.
fn report_of(task: &Task, since: u64) -> Command {
    Command::TaskStatuses {
        node_id: task.node_id.clone().expect("placed"),
        updates: vec![TaskStatusUpdate {
            id: task.id.clone(),
            status: TaskStatus::new(TaskState::Running, since),
        }],
    }
}

fn rescan(replicas: usize) {
    let (mut store, first) = state(replicas);
    let nodes: Vec<String> = store.data().nodes.keys().cloned().collect();
    let mut sent: Vec<Assigned> = nodes
        .iter()
        .map(|id| assigned_by_rescan(&store, id))
        .collect();
    let task = store.data().tasks.values().next().unwrap().clone();
    let index = Cell::new(first);
    let timing = measure(RUNS, 5, || {
        let at = index.get();
        index.set(at + 1);
        store.apply_command(at, report_of(&task, at));
        let mut new_id = || unreachable!("a converged state makes no task");
        let changes = orchestrator::pass(at, store.data(), &mut new_id);
        assert!(changes.is_empty(), "{changes:?}");
        let mut resent = 0;
        for (node_id, last) in nodes.iter().zip(sent.iter_mut()) {
            let now = assigned_by_rescan(&store, node_id);
            if *last != now {
                *last = now;
                resent += 1;
            }
        }
        assert_eq!(resent, 1, "only the reporting node's assignments changed");
    });
    report_us(&format!("rescan_{replicas}_tasks_1k_nodes"), &timing);
}

fn watch(replicas: usize) {
    let (mut store, first) = state(replicas);
    let mut dispatcher = store.subscribe(Assignments::of);
    let mut orchestrator = store.subscribe(Dirty::of);
    let mut new_id = || unreachable!("a converged state makes no task");
    // The leader's first pass is a full one; after it, only what changes is looked at.
    let scope = orchestrator.view.take(first);
    let pass = orchestrator::pass_over(first, &store, &scope, &mut new_id);
    assert!(pass.changes.is_empty(), "{:?}", pass.changes);
    orchestrator.view.passed(&scope, &pass);
    // Every node is connected, and was sent its assignments.
    let mut sent: HashMap<String, Assignment> = store
        .data()
        .nodes
        .keys()
        .map(|id| (id.clone(), dispatcher.view.of_node(id)))
        .collect();
    let task = store.data().tasks.values().next().unwrap().clone();
    let index = Cell::new(first);
    let timing = measure(RUNS, 5, || {
        let at = index.get();
        index.set(at + 1);
        store.apply_command(at, report_of(&task, at));
        let entry = dispatcher.changes.try_recv().unwrap().expect("published");
        let mut resent = 0;
        for node in dispatcher.view.apply(&entry) {
            if let Some(last) = sent.get_mut(&node) {
                let now = dispatcher.view.of_node(&node);
                if *last != now {
                    *last = now;
                    resent += 1;
                }
            }
        }
        assert_eq!(resent, 1, "only the reporting node's assignments changed");
        let entry = orchestrator.changes.try_recv().unwrap().expect("published");
        orchestrator.view.add(&entry);
        let scope = orchestrator.view.take(at);
        let pass = orchestrator::pass_over(at, &store, &scope, &mut new_id);
        assert!(pass.changes.is_empty(), "{:?}", pass.changes);
        orchestrator.view.passed(&scope, &pass);
    });
    report_us(&format!("watch_{replicas}_tasks_1k_nodes"), &timing);
}

/// In µs: the watched leader's entries take a few.
fn report_us(name: &str, timing: &Timing) {
    let us = |q| quantile(&timing.samples, q) * 1e3;
    println!(
        "{name:<30} median {:>9.1} µs  p10 {:>9.1} µs  p90 {:>9.1} µs  ({} runs)",
        us(0.5),
        us(0.1),
        us(0.9),
        timing.samples.len()
    );
}

fn main() {
    for replicas in SIZES {
        watch(replicas);
        rescan(replicas);
    }
}
