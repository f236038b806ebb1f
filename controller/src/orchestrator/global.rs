//! Global services: one task on every node that is not drained and satisfies the
//! constraints. A down node keeps its task (it is the node's); a node that leaves the
//! service's reach (drained, relabelled) has its task stopped; a removed node's task is
//! orphaned. Spec changes roll out over the nodes as `rollout` says (batches, delay,
//! failures, rollback), in the policy's order: start-first keeps a node's old task until
//! its new one runs, unless the service publishes ports on the host (the two tasks of a
//! node would want the same port).

use std::collections::BTreeMap;

use swarm_api::spec::{PublishMode, UpdateOrder};
use swarm_api::store::{Node, NodeStatus};
use swarm_api::task::{Task, TaskState};

use super::placement::runs_on;
use super::{Decisions, Restart, Service, restart, rollout};

pub(super) fn reconcile(
    service: &Service<'_>,
    tasks: &[&Task],
    nodes: &BTreeMap<String, Node>,
    d: &mut Decisions<'_>,
) {
    let spec = &service.spec().task;
    let host_ports = service
        .spec()
        .endpoint
        .ports
        .iter()
        .any(|p| p.mode == PublishMode::Host);
    let start_first = rollout::policy(service).order == UpdateOrder::StartFirst && !host_ports;
    let mut by_node: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for task in tasks {
        match (&task.node_id, task.slot) {
            (Some(node), None) => by_node.entry(node).or_default().push(task),
            // A task from when the service was replicated: it goes.
            _ if task.is_live() => d.stop(task),
            _ => {}
        }
    }
    let mut outdated: Vec<&Task> = Vec::new();
    // The tasks of the nodes that should run one now: what the rollout watches.
    let mut units: Vec<Vec<&Task>> = Vec::new();
    for node in nodes.values() {
        let history = by_node.remove(node.id.as_str()).unwrap_or_default();
        d.trim_history(&history, nodes);
        let live: Vec<&Task> = history.iter().copied().filter(|t| t.is_live()).collect();
        if !runs_on(spec, node) {
            for task in live {
                d.stop(task);
            }
            continue;
        }
        if node.status == NodeStatus::Down {
            continue;
        }
        let Some((&newest, older)) = live.split_last() else {
            if node.status == NodeStatus::Ready {
                d.create(service, None, Some(&node.id));
                units.push(history);
            }
            continue;
        };
        // A start-first update: the old task stops once the new one runs.
        let replacing = start_first && newest.status.state < TaskState::Running;
        if !replacing {
            for task in older {
                d.stop(task);
            }
        }
        if newest.status.state.is_terminal() {
            let restart = restart(&spec.restart, newest, &history, d.now);
            if let Restart::Later { at } = restart {
                d.wake(service.id, at);
            }
            if restart == Restart::Now {
                d.stop(newest);
                d.create(service, None, Some(&node.id));
            } else if newest.spec != *spec {
                // Not restarted (yet), and of an older spec: the rollout replaces it.
                outdated.push(newest);
            }
        } else if newest.spec != *spec {
            outdated.push(newest);
        }
        units.push(history);
    }
    // Nodes that left the cluster.
    for history in by_node.into_values() {
        for task in &history {
            if task.is_live() {
                d.orphan(task);
            }
        }
        d.trim_history(&history, nodes);
    }
    let budget = rollout::budget(service, units.len(), &units, &outdated, d);
    for task in outdated.into_iter().take(budget) {
        if !start_first {
            d.stop(task);
        }
        d.create(service, None, task.node_id.as_deref());
    }
}
