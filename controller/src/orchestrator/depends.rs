//! `depends_on` in the pass: a service's tasks are placed only once the services it
//! depends on run (`service_started`: each of their tasks started; `service_healthy`:
//! each runs, past its healthcheck when it has one: the agent reports Running only then).
//! Until then its new tasks stay pending, their message saying what they wait for. Only
//! the start waits: tasks placed already stay whatever becomes of their dependencies, as
//! Compose's `depends_on` orders starts and no more.

use swarm_api::spec::{DependencyCondition, ServiceSpec};
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
        let Some(id) = data
            .objects
            .services
            .iter()
            .find(|s| s.spec.name == *name)
            .and_then(|s| s.id.as_deref())
        else {
            return Some(format!("waiting for service {name}, which does not exist"));
        };
        let tasks = tasks_of(id);
        // A task that completed started (a job's stay live once done).
        let live: Vec<&Task> = tasks
            .into_iter()
            .filter(|t| {
                t.is_live()
                    && (!t.status.state.is_terminal() || t.status.state == TaskState::Complete)
            })
            .collect();
        let ready = |task: &&Task| match dependency.condition {
            DependencyCondition::ServiceStarted => task.status.state >= TaskState::Starting,
            DependencyCondition::ServiceHealthy => task.status.state == TaskState::Running,
        };
        let met = !live.is_empty() && live.iter().all(ready);
        let what = match dependency.condition {
            DependencyCondition::ServiceStarted => "to start",
            DependencyCondition::ServiceHealthy => "to be healthy",
        };
        (!met).then(|| format!("waiting for service {name} {what}"))
    })
}
