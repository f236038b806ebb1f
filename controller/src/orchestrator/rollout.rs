//! The rollout of a service's spec over its slots (replicated) or nodes (global), shared by
//! both modes: which update policy applies (`update_config`, or `rollback_config` while the
//! service goes back to its previous spec), how many outdated tasks are replaced now
//! (`parallelism`, `delay`), which new tasks failed within `monitor` of starting, and the
//! persisted update status this moves (updating → completed, paused, or rolled back).

use swarm_api::rollout::{UpdateState, UpdateStatus};
use swarm_api::spec::{FailureAction, UpdatePolicy};
use swarm_api::task::{Task, TaskState};

use super::{Decisions, Service};

/// The policy the service's tasks are replaced with now.
pub(super) fn policy<'a>(service: &Service<'a>) -> &'a UpdatePolicy {
    match service.status {
        Some(status) if status.state.is_rollback() => &service.object.spec.rollback,
        _ => &service.object.spec.update,
    }
}

/// How many of the `outdated` tasks (of an older spec) are replaced in this pass, and the
/// update status the pass moves to. `units` are the tasks (oldest first) of every slot or
/// node the service should run a task in now, `wanted` of them.
pub(super) fn budget(
    service: &Service<'_>,
    wanted: usize,
    units: &[Vec<&Task>],
    outdated: &[&Task],
    d: &mut Decisions<'_>,
) -> usize {
    let (state, started_at) = match service.status {
        Some(status) => (status.state, status.started_at),
        None if outdated.is_empty() => return 0,
        // Tasks to replace and no update under way: a user changed the spec.
        None => {
            d.update_status(service, UpdateState::Updating, d.now, "update in progress");
            (UpdateState::Updating, d.now)
        }
    };
    if state.is_paused() {
        return 0;
    }
    let policy = policy(service);
    let watch = Watch::of(service, started_at, policy, units);
    let running = matches!(state, UpdateState::Updating | UpdateState::RollbackStarted);
    if running && let Some(failed) = watch.too_many_failures(policy, wanted) {
        match (state, policy.failure_action) {
            (UpdateState::Updating, FailureAction::Rollback) if service.has_previous => {
                d.roll_back(service, failed);
            }
            (UpdateState::Updating, _) => d.update_status(
                service,
                UpdateState::Paused,
                started_at,
                &format!("update paused due to failure or early termination of task {failed}"),
            ),
            // A rollback that fails stops where it is (`rollback` means pause here).
            _ => d.update_status(
                service,
                UpdateState::RollbackPaused,
                started_at,
                &format!("rollback paused due to failure or early termination of task {failed}"),
            ),
        }
        return 0;
    }
    let monitor = policy.monitor.0.as_millis() as u64;
    // Done once every slot (or node) runs the spec and the last new task has run `monitor`.
    let settled = watch
        .last_started
        .is_none_or(|at| d.now >= at.saturating_add(monitor));
    if running && let Some(at) = watch.last_started.filter(|_| !settled) {
        d.wake(service.id, at.saturating_add(monitor));
    }
    if running && outdated.is_empty() && watch.running == wanted && settled {
        let (done, message) = if state.is_rollback() {
            (UpdateState::RollbackCompleted, "rollback completed")
        } else {
            (UpdateState::Completed, "update completed")
        };
        d.update_status(service, done, started_at, message);
        return 0;
    }
    let delay = policy.delay.0.as_millis() as u64;
    let resting = watch
        .last_started
        .is_some_and(|at| d.now < at.saturating_add(delay));
    if resting && let Some(at) = watch.last_started {
        d.wake(service.id, at.saturating_add(delay));
    }
    match policy.parallelism {
        _ if resting => 0,
        0 => usize::MAX,
        n => (n as usize).saturating_sub(watch.starting),
    }
}

/// What the tasks made by the current rollout have done.
struct Watch<'a> {
    /// Units whose live task runs the current spec.
    running: usize,
    /// New tasks not running yet: they take from the batch.
    starting: usize,
    /// When the latest new task started running.
    last_started: Option<u64>,
    /// Units where a new task failed within `monitor` of starting (or before it ran), and
    /// the first such task.
    failures: usize,
    first_failure: Option<&'a Task>,
}

impl<'a> Watch<'a> {
    fn of(
        service: &Service<'_>,
        started_at: u64,
        policy: &UpdatePolicy,
        units: &[Vec<&'a Task>],
    ) -> Self {
        let spec = &service.object.spec.task;
        let monitor = policy.monitor.0.as_millis() as u64;
        let new = |t: &Task| t.spec == *spec && t.created_at >= started_at;
        let mut watch = Watch {
            running: 0,
            starting: 0,
            last_started: None,
            failures: 0,
            first_failure: None,
        };
        for history in units {
            if let Some(live) = history.iter().rev().find(|t| t.is_live()) {
                let runs = live.status.state == TaskState::Running;
                if runs && live.spec == *spec {
                    watch.running += 1;
                }
                if new(live) && live.status.state < TaskState::Running {
                    watch.starting += 1;
                }
                if new(live) && runs {
                    let since = live.started_at.unwrap_or(live.status.since);
                    watch.last_started = Some(watch.last_started.map_or(since, |t| t.max(since)));
                }
            }
            let failed = history
                .iter()
                .copied()
                .filter(|t| new(t) && failed_early(t, monitor))
                .min_by_key(|t| (t.status.since, t.id.as_str()));
            if let Some(failed) = failed {
                watch.failures += 1;
                let earlier = |first: &&Task| {
                    (failed.status.since, failed.id.as_str())
                        < (first.status.since, first.id.as_str())
                };
                if watch.first_failure.is_none_or(|first| earlier(&first)) {
                    watch.first_failure = Some(failed);
                }
            }
        }
        watch
    }

    /// The first failed task, when more failed than the policy tolerates.
    fn too_many_failures(&self, policy: &UpdatePolicy, wanted: usize) -> Option<&'a str> {
        let tolerated = policy.failure_action == FailureAction::Continue
            || self.failures as f64 / wanted.max(1) as f64 <= policy.max_failure_ratio;
        if tolerated {
            return None;
        }
        self.first_failure.map(|t| t.id.as_str())
    }
}

/// A task that ended by itself (failed, refused, or exited at all: a service's task is
/// meant to run) before it ran, or within `monitor` of starting to run.
fn failed_early(task: &Task, monitor: u64) -> bool {
    matches!(
        task.status.state,
        TaskState::Complete | TaskState::Failed | TaskState::Rejected
    ) && task
        .started_at
        .is_none_or(|started| task.status.since < started.saturating_add(monitor))
}

impl Decisions<'_> {
    /// The service's rollout moves to `state`; a completed one completes now.
    fn update_status(
        &mut self,
        service: &Service<'_>,
        state: UpdateState,
        started_at: u64,
        message: &str,
    ) {
        self.rollouts
            .push(swarm_api::store::TaskChange::UpdateStatus {
                service_id: service.id.to_owned(),
                status: UpdateStatus {
                    state,
                    started_at,
                    completed_at: state.is_completed().then_some(self.now),
                    message: message.to_owned(),
                },
            });
    }

    fn roll_back(&mut self, service: &Service<'_>, failed: &str) {
        self.rollouts.push(swarm_api::store::TaskChange::RollBack {
            service_id: service.id.to_owned(),
            status: UpdateStatus {
                state: UpdateState::RollbackStarted,
                started_at: self.now,
                completed_at: None,
                message: format!(
                    "update rolled back due to failure or early termination of task {failed}"
                ),
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_api::task::{DesiredState, TaskStatus};

    fn task(state: TaskState, started_at: Option<u64>, since: u64) -> Task {
        Task {
            id: "t".into(),
            service_id: "s".into(),
            service_name: "s".into(),
            slot: Some(1),
            node_id: None,
            spec: crate::orchestrator::tests::spec("s", "").task,
            desired: DesiredState::Running,
            status: TaskStatus::new(state, since),
            created_at: 0,
            started_at,
            networks: Vec::new(),
        }
    }

    #[test]
    fn a_task_fails_the_update_only_within_monitor_of_starting() {
        let monitor = 5_000;
        for (state, started_at, since, counts) in [
            (TaskState::Failed, None, 100, true),
            (TaskState::Rejected, None, 100, true),
            (TaskState::Failed, Some(1_000), 5_999, true),
            (TaskState::Failed, Some(1_000), 6_000, false),
            (TaskState::Complete, Some(1_000), 2_000, true),
            (TaskState::Shutdown, Some(1_000), 2_000, false),
            (TaskState::Running, Some(1_000), 1_000, false),
        ] {
            assert_eq!(
                failed_early(&task(state, started_at, since), monitor),
                counts,
                "{state:?} started {started_at:?} ended {since}"
            );
        }
    }
}
