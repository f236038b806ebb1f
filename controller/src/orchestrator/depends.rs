//! `depends_on` in the pass: a service's tasks are placed only once the services it
//! depends on run (`service_started`: each of their tasks started; `service_healthy`:
//! each runs, past its healthcheck when it has one: the agent reports Running only then;
//! `service_completed_successfully`: a job whose latest run completed).
//! Until then its new tasks stay pending, their message saying what they wait for. Only
//! the start waits: tasks placed already stay whatever becomes of their dependencies, as
//! Compose's `depends_on` orders starts and no more.

use swarm_api::spec::{DependencyCondition, ServiceMode, ServiceSpec};
use swarm_api::store::StoreData;
use swarm_api::task::{Task, TaskState};

/// The tasks of a service, by its id.
pub(super) type TasksOf<'a> = dyn Fn(&str) -> Vec<&'a Task> + 'a;

/// What the tasks of `spec` wait for, or `None` when its dependencies are met.
pub(super) fn waiting_for(
    spec: &ServiceSpec,
    data: &StoreData,
    tasks_of: &TasksOf<'_>,
) -> Option<String> {
    spec.depends_on.iter().find_map(|dependency| {
        let name = &dependency.service;
        let Some((id, mode)) = data
            .objects
            .services
            .iter()
            .find(|s| s.spec.name == *name)
            .and_then(|s| Some((s.id.as_deref()?, s.spec.mode)))
        else {
            return Some(format!("waiting for service {name}, which does not exist"));
        };
        let tasks = tasks_of(id);
        if dependency.condition == DependencyCondition::ServiceCompletedSuccessfully {
            return (!completed(mode, &tasks))
                .then(|| format!("waiting for service {name} to complete"));
        }
        // A task that completed started (a job's stay live once done).
        let live: Vec<&Task> = tasks
            .into_iter()
            .filter(|t| {
                t.is_live()
                    && (!t.status.state.is_terminal() || t.status.state == TaskState::Complete)
            })
            .collect();
        let healthy = dependency.condition == DependencyCondition::ServiceHealthy;
        let ready = |task: &&Task| match healthy {
            false => task.status.state >= TaskState::Starting,
            true => task.status.state == TaskState::Running,
        };
        let met = !live.is_empty() && live.iter().all(ready);
        let what = if healthy { "to be healthy" } else { "to start" };
        (!met).then(|| format!("waiting for service {name} {what}"))
    })
}

/// Whether a job's latest run completed: each of its completions done (a replicated job),
/// or each of its tasks, on every node it runs on (a global job). A service that is not a
/// job never completes.
fn completed(mode: ServiceMode, tasks: &[&Task]) -> bool {
    let Some(iteration) = tasks.iter().map(|t| t.spec.job_iteration).max() else {
        return false;
    };
    let current: Vec<&&Task> = tasks
        .iter()
        .filter(|t| t.spec.job_iteration == iteration)
        .collect();
    let done = current
        .iter()
        .filter(|t| t.status.state == TaskState::Complete)
        .count();
    match mode {
        ServiceMode::ReplicatedJob {
            total_completions, ..
        } => done as u64 >= total_completions,
        ServiceMode::GlobalJob => {
            done > 0
                && current
                    .iter()
                    .filter(|t| t.is_live())
                    .all(|t| t.status.state == TaskState::Complete)
        }
        ServiceMode::Replicated { .. } | ServiceMode::Global => false,
    }
}
