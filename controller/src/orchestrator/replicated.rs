//! Replicated services: slots 1..=replicas, each running one task; a failed task is
//! replaced in its slot as the restart policy says; scaling down stops the highest slots;
//! a task whose node is lost or drained is replaced; a changed spec rolls out as `rollout`
//! says (batches, delay, failures), stopping the old task first or starting the new one
//! first (the policy's `order`).

use std::collections::BTreeMap;

use swarm_api::spec::UpdateOrder;
use swarm_api::store::{Availability, Node};
use swarm_api::task::{Task, TaskState};

use super::{Decisions, Restart, Service, lost, restart, rollout};

pub(super) fn reconcile(
    service: &Service<'_>,
    replicas: u64,
    tasks: &[&Task],
    nodes: &BTreeMap<String, Node>,
    d: &mut Decisions<'_>,
) {
    let spec = &service.spec().task;
    let order = rollout::policy(service).order;
    let mut slots: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
    for task in tasks {
        match task.slot {
            Some(slot) => slots.entry(slot).or_default().push(task),
            // A task of the service from when it was global: it goes.
            None if task.is_live() => d.stop(task),
            None => {}
        }
    }
    let mut outdated: Vec<&Task> = Vec::new();
    for (&slot, history) in &slots {
        let live: Vec<&Task> = history.iter().copied().filter(|t| t.is_live()).collect();
        d.trim_history(history, nodes);
        if slot > replicas {
            for task in live {
                d.stop(task);
            }
            continue;
        }
        let Some((&newest, older)) = live.split_last() else {
            d.create(service, Some(slot), None);
            continue;
        };
        let drained = newest
            .node_id
            .as_ref()
            .and_then(|id| nodes.get(id))
            .is_some_and(|node| node.availability == Availability::Drain);
        if lost(nodes, newest) || drained {
            for task in &live {
                if lost(nodes, task) {
                    d.orphan(task);
                } else {
                    d.stop(task);
                }
            }
            d.create(service, Some(slot), None);
        } else if newest.status.state.is_terminal() {
            match restart(&spec.restart, newest, history, d.now) {
                Restart::Now => {
                    for task in &live {
                        d.stop(task);
                    }
                    d.create(service, Some(slot), None);
                }
                later @ (Restart::Later { .. } | Restart::Never) => {
                    if let Restart::Later { at } = later {
                        d.wake(service.id, at);
                    }
                    for task in older {
                        d.stop(task);
                    }
                    // A task of an older spec that is not restarted (yet) is replaced by
                    // the rollout, as a running one would be.
                    if newest.spec != *spec {
                        outdated.push(newest);
                    }
                }
            }
        } else if newest.spec != *spec {
            for task in older {
                d.stop(task);
            }
            outdated.push(newest);
        } else if newest.status.state == TaskState::Running || order == UpdateOrder::StopFirst {
            // A start-first update: the old task stops once the new one runs.
            for task in older {
                d.stop(task);
            }
        }
    }
    for slot in 1..=replicas {
        if !slots.contains_key(&slot) {
            d.create(service, Some(slot), None);
        }
    }
    let units: Vec<Vec<&Task>> = slots.range(1..=replicas).map(|(_, h)| h.clone()).collect();
    let budget = rollout::budget(service, replicas as usize, &units, &outdated, d);
    for task in outdated.into_iter().take(budget) {
        if order == UpdateOrder::StopFirst {
            d.stop(task);
        }
        d.create(service, task.slot, None);
    }
}
