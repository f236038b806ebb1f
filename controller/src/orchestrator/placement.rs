//! The pass's scheduling step: new and pending tasks placed by the `scheduler` core over
//! the nodes, loaded with the tasks that stay.

use std::collections::{HashMap, HashSet};

use swarm_api::spec::{Protocol, PublishMode, TaskSpec};
use swarm_api::store::{Availability, Node, StoreData, TaskChange};
use swarm_api::task::{DesiredState, Task, TaskState, TaskStatus};

use super::Decisions;
use super::depends::{TasksOf, waiting_for};
use crate::scheduler::{self, Candidate, Group, Load, Resources};

/// A node as the scheduler sees it.
pub(super) fn candidate(node: &Node) -> Candidate {
    let description = &node.description;
    let reported = description.nano_cpus > 0 || description.memory_bytes > 0;
    Candidate {
        id: node.id.clone(),
        hostname: node.hostname.clone(),
        role: node.role,
        availability: node.availability,
        status: node.status,
        labels: node.labels.clone(),
        ip: scheduler::host_ip(&node.address),
        os: description.os.clone(),
        arch: description.arch.clone(),
        capacity: reported.then_some(Resources {
            nano_cpus: description.nano_cpus,
            memory_bytes: description.memory_bytes,
        }),
        worker_error: node.worker_error.clone(),
    }
}

/// Whether a task of `spec` belongs on `node`, as a global service or job places one on
/// each: the node is not drained and meets every placement constraint (its status aside).
pub(super) fn runs_on(spec: &TaskSpec, node: &Node) -> bool {
    let candidate = candidate(node);
    node.availability != Availability::Drain
        && spec
            .placement
            .constraints
            .iter()
            .all(|c| scheduler::satisfies(&candidate, c))
}

fn reservations(spec: &TaskSpec) -> Resources {
    let reserved = &spec.resources.reservations;
    Resources {
        nano_cpus: reserved.cpus.map_or(0, |c| c.0),
        memory_bytes: reserved.memory.map_or(0, |m| m.0),
    }
}

/// Places the new tasks and the pending ones among `among` (all the store's when `None`),
/// but those of services whose dependencies are not met (`tasks_of` gives a dependency's
/// tasks), which stay pending saying why. The nodes' loads are counted only when there is
/// something to place.
pub(super) fn place<'t>(
    data: &'t StoreData,
    d: &mut Decisions<'_>,
    among: Option<&[&'t Task]>,
    tasks_of: &TasksOf<'t>,
) {
    let stopping: HashSet<&str> = d
        .changes
        .iter()
        .filter_map(|change| match change {
            TaskChange::Desire {
                id,
                desired: DesiredState::Shutdown,
            } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let staying = |t: &&Task| {
        t.is_live() && !t.status.state.is_terminal() && !stopping.contains(t.id.as_str())
    };
    let unplaced = |t: &&Task| t.node_id.is_none() && t.status.state <= TaskState::Pending;
    let mut pending: Vec<&Task> = match among {
        Some(tasks) => tasks
            .iter()
            .copied()
            .chain(d.created.iter())
            .filter(staying)
            .filter(unplaced)
            .collect(),
        None => data
            .tasks
            .values()
            .chain(d.created.iter())
            .filter(staying)
            .filter(unplaced)
            .collect(),
    };
    // Tasks waiting for their service's dependencies: (id, what they show, why they wait).
    let mut waits: HashMap<&str, Option<String>> = HashMap::new();
    let mut waiting: Vec<(String, (TaskState, String), String)> = Vec::new();
    pending.retain(|task| {
        let reason = waits.entry(task.service_id.as_str()).or_insert_with(|| {
            let spec = data
                .objects
                .services
                .iter()
                .find(|s| s.id.as_deref() == Some(task.service_id.as_str()))?;
            waiting_for(&spec.spec, data, tasks_of)
        });
        let Some(reason) = reason else {
            return true;
        };
        let shown = (task.status.state, task.status.message.clone());
        waiting.push((task.id.clone(), shown, reason.clone()));
        false
    });
    if pending.is_empty() {
        hold(d, waiting);
        return;
    }
    let host_ports: HashMap<&str, Vec<(Protocol, u16)>> = data
        .objects
        .services
        .iter()
        .filter_map(|service| {
            let ports = service
                .spec
                .endpoint
                .ports
                .iter()
                .filter(|p| p.mode == PublishMode::Host)
                .filter_map(|p| Some((p.protocol, p.published?)))
                .collect();
            Some((service.id.as_deref()?, ports))
        })
        .collect();
    let nodes: Vec<Candidate> = data.nodes.values().map(candidate).collect();
    let index: HashMap<&str, usize> = data
        .nodes
        .keys()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut loads = vec![Load::default(); nodes.len()];
    for task in data.tasks.values().chain(d.created.iter()).filter(staying) {
        let Some(node) = &task.node_id else {
            continue;
        };
        let Some(&i) = index.get(node.as_str()) else {
            continue;
        };
        let load = &mut loads[i];
        let wants = reservations(&task.spec);
        load.reserved.nano_cpus += wants.nano_cpus;
        load.reserved.memory_bytes += wants.memory_bytes;
        load.tasks += 1;
        *load
            .tasks_by_service
            .entry(task.service_id.clone())
            .or_default() += 1;
        if let Some(ports) = host_ports.get(task.service_id.as_str()) {
            load.host_ports.extend(ports.iter().copied());
        }
    }
    // One group per service and spec (a rolling update has two specs pending at once).
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut group_of: HashMap<(&str, usize), usize> = HashMap::new();
    let mut specs: HashMap<&str, Vec<&TaskSpec>> = HashMap::new();
    for task in &pending {
        let known = specs.entry(task.service_id.as_str()).or_default();
        let spec_index = match known.iter().position(|s| **s == task.spec) {
            Some(i) => i,
            None => {
                known.push(&task.spec);
                known.len() - 1
            }
        };
        let at = *group_of
            .entry((task.service_id.as_str(), spec_index))
            .or_insert_with(|| {
                groups.push(Group {
                    service_id: &task.service_id,
                    tasks: Vec::new(),
                    placement: &task.spec.placement,
                    reservations: reservations(&task.spec),
                    host_ports: host_ports
                        .get(task.service_id.as_str())
                        .cloned()
                        .unwrap_or_default(),
                });
                groups.len() - 1
            });
        groups[at].tasks.push(task.id.clone());
    }
    let decisions = scheduler::schedule(&nodes, &mut loads, &groups);
    // What the stored pending tasks show now, to write only what changes.
    let shown: HashMap<String, (TaskState, String)> = pending
        .iter()
        .map(|t| (t.id.clone(), (t.status.state, t.status.message.clone())))
        .collect();
    drop(groups);
    let mut assigned: HashMap<String, String> = HashMap::new();
    let mut unschedulable: HashMap<String, String> = HashMap::new();
    for (task, node) in decisions.assignments {
        assigned.insert(task, node);
    }
    for (task, reason) in decisions.unschedulable {
        unschedulable.insert(task, reason);
    }
    for task in &mut d.created {
        if let Some(node) = assigned.remove(&task.id) {
            task.node_id = Some(node);
            task.status.state = TaskState::Assigned;
            task.status.message = "scheduled".to_owned();
        } else if let Some(reason) = unschedulable.remove(&task.id) {
            task.status.state = TaskState::Pending;
            task.status.message = reason;
        }
    }
    let mut changes = Vec::new();
    for (id, node_id) in assigned {
        changes.push(TaskChange::Assign { id, node_id });
    }
    for (id, reason) in unschedulable {
        let (state, message) = &shown[&id];
        if *state != TaskState::Pending || *message != reason {
            let mut status = TaskStatus::new(TaskState::Pending, d.now);
            status.message = reason;
            changes.push(TaskChange::Status { id, status });
        }
    }
    // Deterministic order, for tests and for identical entries on a retry.
    changes.sort_by(|a, b| change_id(a).cmp(change_id(b)));
    d.changes.extend(changes);
    hold(d, waiting);
}

/// Tasks waiting for their service's dependencies stay pending, saying why: `waiting` is
/// each one's id, state and message now, and the reason.
fn hold(d: &mut Decisions<'_>, waiting: Vec<(String, (TaskState, String), String)>) {
    for (id, shown, reason) in waiting {
        if let Some(task) = d.created.iter_mut().find(|t| t.id == id) {
            task.status.state = TaskState::Pending;
            task.status.message = reason;
        } else if shown != (TaskState::Pending, reason.clone()) {
            let mut status = TaskStatus::new(TaskState::Pending, d.now);
            status.message = reason;
            d.changes.push(TaskChange::Status { id, status });
        }
    }
}

fn change_id(change: &TaskChange) -> &str {
    match change {
        TaskChange::Create(task) => &task.id,
        TaskChange::Assign { id, .. }
        | TaskChange::Status { id, .. }
        | TaskChange::Desire { id, .. }
        | TaskChange::Remove { id } => id,
        TaskChange::UpdateStatus { service_id, .. } | TaskChange::RollBack { service_id, .. } => {
            service_id
        }
    }
}
