//! `swarm events` under load (issue 15): does a manager's event pipeline keep up with 1,000
//! task changes per second, and how late is an event?
//!
//!     cargo bench -p swarm-controller --bench events
//!
//! In process, no Raft, no gRPC: a thread applies `TaskStatuses` entries to the real
//! `Store` at a fixed rate (as the Raft task applies what the leader's agents report); on a
//! two-thread tokio runtime, the manager's recorder (`node/src/events.rs`'s loop) follows
//! the store's watch, derives each entry's events (`EventView::derive`) and publishes them
//! to the `EventHub` (ring and live feed); a client's feed takes each event, checks a
//! filter and serialises it to JSON as the `Events` stream does, then parses it back as the
//! CLI does. Lag: from the entry's apply to the event parsed by the client.
//!
//! The state: 100 Ready nodes and one service of 2,000 tasks, placed; each task then goes
//! accepted → preparing → starting → running, one state change per task per report: 8,000
//! task changes, each one event.

#[allow(dead_code)]
#[path = "support/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "support/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cluster::node;
use harness::quantile;
use swarm_api::events::{Event, EventFilter};
use swarm_api::store::{Command, Outcome, TaskStatusUpdate};
use swarm_api::task::{TaskState, TaskStatus};
use swarm_controller::store::events::{EventHub, EventView};
use swarm_controller::store::{Missed, Store};
use swarm_controller::{orchestrator, plan, source, stack};
use tokio::sync::broadcast;

const NODES: usize = 100;
const TASKS: usize = 2_000;
const STATES: [TaskState; 4] = [
    TaskState::Accepted,
    TaskState::Preparing,
    TaskState::Starting,
    TaskState::Running,
];

/// A store with the nodes and a service of `TASKS` tasks, placed (assigned); the next free
/// Raft index.
fn state() -> (Store, u64) {
    let mut store = Store::default();
    let mut index = 0;
    let mut apply = |store: &mut Store, command: Command| {
        index += 1;
        let outcome = store.apply_command(index, command);
        assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    };
    apply(&mut store, cluster::init("172.16.0.0/12"));
    for n in 0..NODES {
        apply(&mut store, Command::AddNode(node(n)));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.yaml");
    std::fs::write(
        &path,
        format!("services:\n  web:\n    image: nginx\n    deploy:\n      replicas: {TASKS}\n"),
    )
    .unwrap();
    let stack = stack::load(&source::WorkTree, &path, "bench.yaml", &|_| None)
        .stack
        .unwrap();
    let plan = plan::plan(
        &[stack],
        &swarm_api::state::ClusterState::empty(),
        &Default::default(),
        Default::default(),
    )
    .unwrap();
    apply(
        &mut store,
        Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: None,
            actions: plan.actions,
            registry_auth: Default::default(),
            override_git: false,
        },
    );
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
    assert_eq!(store.data().tasks.len(), TASKS);
    (store, index + 1)
}

/// The reports: each task through `STATES`, `per_entry` tasks of one node per entry.
fn reports(store: &Store, per_entry: usize) -> Vec<Command> {
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for task in store.data().tasks.values() {
        by_node
            .entry(task.node_id.clone().expect("placed"))
            .or_default()
            .push(task.id.clone());
    }
    let mut reports = Vec::new();
    for (since, state) in STATES.into_iter().enumerate() {
        for (node_id, tasks) in &by_node {
            for chunk in tasks.chunks(per_entry) {
                reports.push(Command::TaskStatuses {
                    node_id: node_id.clone(),
                    updates: chunk
                        .iter()
                        .map(|id| TaskStatusUpdate {
                            id: id.clone(),
                            status: TaskStatus::new(state, since as u64 + 10),
                        })
                        .collect(),
                });
            }
        }
    }
    reports
}

fn now_nano() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

struct Run {
    changes: usize,
    /// Why the recorder stopped following before the end, if it did.
    missed: Option<Missed>,
    /// Events the client's feed lost for reading slower than they came.
    feed_lost: u64,
    push_seconds: f64,
    delivered: usize,
    deliver_seconds: f64,
    lags_ms: Vec<f64>,
}

/// Pushes the reports at `entries_per_second` (`None`: as fast as the store applies them)
/// while the recorder and a client's feed follow.
fn run(per_entry: usize, entries_per_second: Option<f64>) -> Run {
    let (mut store, first) = state();
    let reports = reports(&store, per_entry);
    let changes = reports.len() * per_entry;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hub = Arc::new(EventHub::new(now_nano()));
    let subscription = store.subscribe(EventView::of);
    let epoch = Instant::now();
    // When each entry was applied, in ns since `epoch`, by its offset from `first`.
    let applied: Arc<Vec<AtomicU64>> =
        Arc::new((0..reports.len()).map(|_| AtomicU64::new(0)).collect());

    let recorder = {
        let hub = hub.clone();
        runtime.spawn(async move {
            let mut view = subscription.view;
            let mut changes = subscription.changes;
            let repositories = BTreeMap::new();
            loop {
                match changes.recv().await {
                    Ok(entry) => hub.publish(view.derive(&entry, &repositories, now_nano())),
                    // The store was dropped: all was followed.
                    Err(Missed::Closed) => return None,
                    Err(missed) => return Some(missed),
                }
            }
        })
    };
    let client = {
        let (_, mut live) = hub.subscribe(None, None);
        let applied = applied.clone();
        let filter = EventFilter::parse(&["type=task".to_owned()]).unwrap();
        runtime.spawn(async move {
            let mut lags_ms = Vec::with_capacity(changes);
            let mut last = Instant::now();
            let mut lost = 0;
            while lags_ms.len() + (lost as usize) < changes {
                // Quiet for a second: the pipeline lost the rest (the recorder says why).
                let next = tokio::time::timeout(Duration::from_secs(1), live.recv()).await;
                let event = match next {
                    Ok(Ok(event)) => event,
                    Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                        lost += n;
                        continue;
                    }
                    Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
                };
                if !filter.matches(&event) {
                    continue;
                }
                let json = serde_json::to_string(&*event).unwrap();
                let parsed: Event = serde_json::from_str(&json).unwrap();
                let at = applied[(parsed.index - first) as usize].load(Ordering::Acquire);
                let lag = epoch.elapsed().as_nanos() as u64 - at;
                lags_ms.push(lag as f64 / 1e6);
                last = Instant::now();
            }
            (lags_ms, last, lost)
        })
    };

    let start = Instant::now();
    for (n, report) in reports.into_iter().enumerate() {
        if let Some(rate) = entries_per_second {
            let due = start + Duration::from_secs_f64(n as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        // Recorded before the apply publishes: the lag includes the apply.
        applied[n].store(epoch.elapsed().as_nanos() as u64, Ordering::Release);
        let outcome = store.apply_command(first + n as u64, report);
        assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    }
    let push_seconds = start.elapsed().as_secs_f64();
    let (mut lags_ms, last, feed_lost) = runtime.block_on(client).unwrap();
    drop(store);
    let missed = runtime.block_on(recorder).unwrap();
    lags_ms.sort_by(f64::total_cmp);
    Run {
        changes,
        missed,
        feed_lost,
        push_seconds,
        delivered: lags_ms.len(),
        deliver_seconds: last.duration_since(start).as_secs_f64(),
        lags_ms,
    }
}

fn main() {
    let cases: [(&str, usize, Option<f64>); 5] = [
        ("1,000 changes/s, 1 a report", 1, Some(1_000.0)),
        ("1,000 changes/s, 10 a report", 10, Some(100.0)),
        ("5,000 changes/s, 1 a report", 1, Some(5_000.0)),
        ("20,000 changes/s, 1 a report", 1, Some(20_000.0)),
        ("unpaced, 1 a report", 1, None),
    ];
    for (name, per_entry, rate) in cases {
        let run = run(per_entry, rate);
        let s = &run.lags_ms;
        println!(
            "{name:<30} pushed {:>6.0} changes/s  delivered {}/{} at {:>6.0} events/s  lag p50 {:>6.3} ms  p99 {:>6.3} ms  max {:>6.3} ms",
            run.changes as f64 / run.push_seconds,
            run.delivered,
            run.changes,
            run.delivered as f64 / run.deliver_seconds,
            quantile(s, 0.5),
            quantile(s, 0.99),
            s[s.len() - 1],
        );
        if run.missed.is_some() || run.feed_lost > 0 {
            println!(
                "{:<30} recorder: {:?}, client's feed lost {}",
                "", run.missed, run.feed_lost
            );
        }
    }
}
