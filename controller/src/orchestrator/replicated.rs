//! Replicated services: slots 1..=replicas, each running one task; a failed task is
//! replaced in its slot as the restart policy says; scaling down stops the highest slots;
//! a task whose node is lost or drained is replaced; a changed spec rolls out
//! `parallelism` slots at a time, `delay` apart, stopping the old task first or starting
//! the new one first (`update_config.order`), and stops rolling out when more of its new
//! tasks failed than `max_failure_ratio` allows.

use std::collections::BTreeMap;

use swarm_api::spec::{FailureAction, UpdateOrder};
use swarm_api::store::{Availability, Node};
use swarm_api::task::{Task, TaskState};

use super::{Decisions, Restart, Service, lost, restart};

pub(super) fn reconcile(
    service: &Service<'_>,
    replicas: u64,
    tasks: &[&Task],
    nodes: &BTreeMap<String, Node>,
    d: &mut Decisions<'_>,
) {
    let spec = &service.spec().task;
    let update = &service.spec().update;
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
    let mut updating = 0usize;
    // When the latest replaced slot's new task started running: the next batch waits
    // `update_config.delay` after it.
    let mut last_replaced_running: Option<u64> = None;
    // Slots this update reached, and those where a task of the new spec failed.
    let (mut reached, mut failed) = (0usize, 0usize);
    for (&slot, history) in &slots {
        if slot <= replicas
            && history.iter().any(|t| t.spec != *spec)
            && history.iter().any(|t| t.spec == *spec)
        {
            reached += 1;
            let failure = |t: &&Task| {
                t.spec == *spec && matches!(t.status.state, TaskState::Failed | TaskState::Rejected)
            };
            if history.iter().any(failure) {
                failed += 1;
            }
        }
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
                Restart::Later | Restart::Never => {
                    for task in older {
                        d.stop(task);
                    }
                }
            }
        } else if newest.spec != *spec {
            for task in older {
                d.stop(task);
            }
            outdated.push(newest);
        } else {
            let replaced_older_spec = history.iter().any(|t| t.spec != *spec);
            if newest.status.state < TaskState::Running && replaced_older_spec {
                updating += 1;
            }
            if newest.status.state == TaskState::Running && replaced_older_spec {
                let since = newest.status.since;
                last_replaced_running = Some(last_replaced_running.map_or(since, |t| t.max(since)));
            }
            // A start-first update: the old task stops once the new one runs.
            if newest.status.state == TaskState::Running || update.order == UpdateOrder::StopFirst {
                for task in older {
                    d.stop(task);
                }
            }
        }
    }
    for slot in 1..=replicas {
        if !slots.contains_key(&slot) {
            d.create(service, Some(slot), None);
        }
    }
    let delay = update.delay.0.as_millis() as u64;
    let resting = last_replaced_running.is_some_and(|at| d.now < at.saturating_add(delay));
    // More failures than the update tolerates: it stops where it is (`pause`, Docker's
    // default; `rollback` pauses too until rollbacks are automatic — `swarm service
    // rollback` goes back by hand).
    let failing = update.failure_action != FailureAction::Continue
        && reached > 0
        && failed as f64 / reached as f64 > update.max_failure_ratio;
    let budget = match update.parallelism {
        _ if resting || failing => 0,
        0 => usize::MAX,
        n => (n as usize).saturating_sub(updating),
    };
    for task in outdated.into_iter().take(budget) {
        if update.order == UpdateOrder::StopFirst {
            d.stop(task);
        }
        d.create(service, task.slot, None);
    }
}
