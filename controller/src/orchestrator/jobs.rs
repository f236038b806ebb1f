//! Jobs, as Docker's (swarmkit's `orchestrator/jobs`): tasks that run to completion.
//! A replicated job fills slots 1..=total_completions, at most `max_concurrent` of them
//! in progress at once, until every slot holds a task that exited 0; a global job runs one
//! task to completion on every eligible node, once per node (a node that joins later gets
//! its own). A completed task is never restarted; a failed one is replaced in its slot (or
//! on its node) as the restart policy says. Tasks carry the job iteration they run for
//! (`TaskSpec::job_iteration`, the index of the service's last change): a changed job —
//! `service update --force` included — runs again, and tasks of earlier iterations stop.
//! Jobs are not rolled out: they have no update status.

use std::collections::BTreeMap;

use swarm_api::spec::TaskSpec;
use swarm_api::store::{Availability, Node, NodeStatus};
use swarm_api::task::{Task, TaskState};

use super::placement::runs_on;
use super::{Decisions, Restart, Service, lost, restart};

/// Where the newest task of a slot (or a node) of the current iteration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// It exited 0: this unit of the job is done.
    Done,
    /// A task is on its way or running, or a failed one will be restarted.
    InProgress,
    /// It failed and the restart policy gives up on it.
    GivenUp,
}

/// Decides for the newest live task of a unit: replaces it on a lost or drained node, or
/// when it failed and the policy says now; `make` makes the replacement.
fn unit(
    service: &Service<'_>,
    history: &[&Task],
    nodes: &BTreeMap<String, Node>,
    d: &mut Decisions<'_>,
    make: &mut dyn FnMut(&mut Decisions<'_>),
) -> Option<Unit> {
    let live: Vec<&Task> = history.iter().copied().filter(|t| t.is_live()).collect();
    let (&newest, older) = live.split_last()?;
    for task in older {
        d.stop(task);
    }
    if newest.status.state == TaskState::Complete {
        return Some(Unit::Done);
    }
    let drained = newest
        .node_id
        .as_ref()
        .and_then(|id| nodes.get(id))
        .is_some_and(|node| node.availability == Availability::Drain);
    if !newest.status.state.is_terminal() && (lost(nodes, newest) || drained) {
        if lost(nodes, newest) {
            d.orphan(newest);
        } else {
            d.stop(newest);
        }
        make(d);
        return Some(Unit::InProgress);
    }
    if !newest.status.state.is_terminal() {
        return Some(Unit::InProgress);
    }
    match restart(&service.spec().task.restart, newest, history, d.now) {
        Restart::Now => {
            d.stop(newest);
            make(d);
            Some(Unit::InProgress)
        }
        Restart::Later { at } => {
            d.wake(service.id, at);
            Some(Unit::InProgress)
        }
        Restart::Never => Some(Unit::GivenUp),
    }
}

/// A job's tasks by slot (or node), oldest first.
type Units<'t, K> = BTreeMap<K, Vec<&'t Task>>;

/// Splits a job's tasks into the current iteration's and earlier ones, by `key`, and
/// stops the live ones of earlier iterations (completed ones too, so that only the
/// current iteration is live).
fn current_by<'t, K: Ord>(
    service: &Service<'_>,
    tasks: &[&'t Task],
    d: &mut Decisions<'_>,
    key: impl Fn(&Task) -> Option<K>,
) -> (Units<'t, K>, Units<'t, K>) {
    let spec: TaskSpec = service.task_spec();
    let mut current: Units<'t, K> = BTreeMap::new();
    let mut earlier: Units<'t, K> = BTreeMap::new();
    for task in tasks {
        let Some(key) = key(task) else {
            // A task from when the service had another mode: it goes.
            if task.is_live() {
                d.stop(task);
            }
            continue;
        };
        if task.spec == spec {
            current.entry(key).or_default().push(task);
        } else {
            if task.is_live() {
                d.stop(task);
            }
            earlier.entry(key).or_default().push(task);
        }
    }
    (current, earlier)
}

pub(super) fn replicated(
    service: &Service<'_>,
    max_concurrent: u64,
    total_completions: u64,
    tasks: &[&Task],
    nodes: &BTreeMap<String, Node>,
    d: &mut Decisions<'_>,
) {
    let (current, earlier) = current_by(service, tasks, d, |t| t.slot);
    let mut in_progress = 0;
    let mut idle = Vec::new();
    for slot in 1..=total_completions {
        let history = current.get(&slot).map(Vec::as_slice).unwrap_or_default();
        d.trim_history(history, nodes);
        let mut make = |d: &mut Decisions<'_>| d.create(service, Some(slot), None);
        match unit(service, history, nodes, d, &mut make) {
            Some(Unit::InProgress) => in_progress += 1,
            Some(Unit::Done | Unit::GivenUp) => {}
            None => idle.push(slot),
        }
    }
    for history in earlier.values() {
        d.trim_history(history, nodes);
    }
    // Slots not running in this iteration start, lowest first, up to the concurrency.
    let room = max_concurrent.saturating_sub(in_progress) as usize;
    for slot in idle.into_iter().take(room) {
        d.create(service, Some(slot), None);
    }
}

pub(super) fn global(
    service: &Service<'_>,
    tasks: &[&Task],
    nodes: &BTreeMap<String, Node>,
    d: &mut Decisions<'_>,
) {
    let spec = &service.spec().task;
    let (mut current, mut earlier) =
        current_by(service, tasks, d, |t| match (&t.node_id, t.slot) {
            (Some(node), None) => Some(node.clone()),
            _ => None,
        });
    for node in nodes.values() {
        let history = current.remove(&node.id).unwrap_or_default();
        d.trim_history(&history, nodes);
        if let Some(old) = earlier.remove(&node.id) {
            d.trim_history(&old, nodes);
        }
        if !runs_on(spec, node) {
            for task in history.iter().filter(|t| t.is_live()) {
                if !task.status.state.is_terminal() {
                    d.stop(task);
                }
            }
            continue;
        }
        if node.status == NodeStatus::Down {
            continue;
        }
        let mut make = |d: &mut Decisions<'_>| d.create(service, None, Some(&node.id));
        if unit(service, &history, nodes, d, &mut make).is_none()
            && node.status == NodeStatus::Ready
        {
            make(d);
        }
    }
    // Nodes that left the cluster: what their tasks did no longer counts.
    for history in current.values().chain(earlier.values()) {
        for task in history {
            if task.is_live() {
                d.orphan(task);
            }
        }
        d.trim_history(history, nodes);
    }
}
