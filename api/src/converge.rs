//! Whether a service converged after a change: every task it should run runs its current
//! spec and its update (if one began) completed, or for a job, its latest iteration
//! completed; an update that paused or rolled back will not, nor a job whose task failed
//! for good. Judged from a services view: the CLI's wait (`service update`, `stack
//! deploy`) and the GitOps watcher's Deployment outcomes use the same judgement.

use std::collections::BTreeMap;

use crate::rollout::UpdateState;
use crate::spec::{ServiceMode, ServiceSpec, TaskSpec};
use crate::state::Object;
use crate::task::{DesiredState, ServicesView, Task, TaskState};
use crate::units::GoDuration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvergeError {
    #[error(
        "{service}: update paused: {message}: fix the spec and `swarm service update` it, or `swarm service rollback {service}`"
    )]
    Paused { service: String, message: String },
    #[error("{service}: rollback: {message}")]
    RolledBack { service: String, message: String },
    #[error("{service}: rollback paused: {message}: fix the spec and `swarm service update` it")]
    RollbackPaused { service: String, message: String },
    /// A job's task failed and its restart policy will not retry it (`condition: none`, or
    /// its slot's `max_attempts` used up with no `window`).
    #[error("{service}: job failed: {message}")]
    JobFailed { service: String, message: String },
    #[error("{service} did not converge within {timeout}: {missing}{}", last_error.as_ref().map_or(String::new(), |e| format!("; last task error: {e}")))]
    Timeout {
        service: String,
        timeout: GoDuration,
        missing: String,
        last_error: Option<String>,
    },
}

/// What the command waits for: the update a change started, or the rollback that
/// `service rollback` started (whose `rollback_*` states are then its progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Update,
    Rollback,
}

/// Where a service stands, from one view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Converged,
    Waiting {
        /// Tasks running the current spec, of `wanted`; for a job, tasks completed.
        running: usize,
        wanted: usize,
        /// What `running` and `wanted` count, for the progress line ("tasks running").
        counted: &'static str,
        /// What is missing, for the timeout's message.
        missing: String,
    },
}

/// The service's progress in `view`, or why it will not converge.
pub fn progress(
    view: &ServicesView,
    service: &Object<ServiceSpec>,
    change: Change,
) -> Result<Progress, ConvergeError> {
    let id = service.id.as_deref().unwrap_or_default();
    let name = &service.spec.name;
    let status = view.update_status.get(id);
    if let Some(status) = status {
        let (service, message) = (name.clone(), status.message.clone());
        match (status.state, change) {
            (UpdateState::Paused, _) => return Err(ConvergeError::Paused { service, message }),
            (UpdateState::RollbackPaused, _) => {
                return Err(ConvergeError::RollbackPaused { service, message });
            }
            (UpdateState::RollbackStarted | UpdateState::RollbackCompleted, Change::Update) => {
                return Err(ConvergeError::RolledBack { service, message });
            }
            (UpdateState::RollbackStarted | UpdateState::RollbackCompleted, Change::Rollback)
            | (UpdateState::Updating | UpdateState::Completed, _) => {}
        }
    }
    let live: Vec<&Task> = view
        .tasks
        .iter()
        .filter(|t| t.service_id == id && t.desired == DesiredState::Running)
        .collect();
    if service.spec.is_job() {
        let all: Vec<&Task> = view.tasks.iter().filter(|t| t.service_id == id).collect();
        return job_progress(service, &live, &all);
    }
    // During a rolling update the old tasks run too: only the current spec counts.
    let current = |t: &&&Task| t.spec == service.spec.task;
    let running = live
        .iter()
        .filter(current)
        .filter(|t| t.status.state == TaskState::Running)
        .count();
    let wanted = service.spec.replicas().map_or(live.len(), |r| r as usize);
    let updating = status.is_some_and(|s| {
        matches!(
            s.state,
            UpdateState::Updating | UpdateState::RollbackStarted
        )
    });
    if running == wanted && live.len() == wanted && !updating {
        return Ok(Progress::Converged);
    }
    let mut not_running: BTreeMap<&str, usize> = BTreeMap::new();
    for task in live.iter().filter(current) {
        if task.status.state != TaskState::Running {
            *not_running.entry(task.status.state.as_str()).or_default() += 1;
        }
    }
    let mut missing = format!("{running}/{wanted} tasks running");
    if !not_running.is_empty() {
        let states: Vec<String> = not_running
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect();
        missing += &format!(" ({})", states.join(", "));
    }
    let outdated = live.iter().filter(|t| t.spec != service.spec.task).count();
    if outdated > 0 {
        missing += &format!(", {outdated} of the previous spec still to replace");
    }
    if running == wanted && updating {
        missing += ", the update is watching its new tasks (update_config.monitor)";
    }
    Ok(Progress::Waiting {
        running,
        wanted,
        counted: "tasks running",
        missing,
    })
}

/// A job converged once its current iteration completed: `total_completions` tasks of a
/// replicated job, every task of a global job (one per eligible node, once it has one),
/// exited 0; it fails when a task failed that its restart policy never retries (its
/// condition, or its slot's attempts used up: `all` holds the replaced tasks too).
fn job_progress(
    service: &Object<ServiceSpec>,
    live: &[&Task],
    all: &[&Task],
) -> Result<Progress, ConvergeError> {
    let name = &service.spec.name;
    // Tasks of the current spec (whatever their iteration), of the latest iteration among
    // them: until the orchestrator's pass, those of the previous iteration are live.
    let of_spec: Vec<&Task> = live
        .iter()
        .copied()
        .filter(|t| {
            t.spec
                == TaskSpec {
                    job_iteration: t.spec.job_iteration,
                    ..service.spec.task.clone()
                }
        })
        .collect();
    let iteration = of_spec.iter().map(|t| t.spec.job_iteration).max();
    let current: Vec<&Task> = of_spec
        .into_iter()
        .filter(|t| Some(t.spec.job_iteration) == iteration)
        .collect();
    let count = |state: TaskState| current.iter().filter(|t| t.status.state == state).count();
    let completed = count(TaskState::Complete);
    let (wanted, done) = match service.spec.mode {
        ServiceMode::ReplicatedJob {
            total_completions, ..
        } => (
            total_completions as usize,
            completed as u64 >= total_completions,
        ),
        // Before the orchestrator made its tasks, a new global job would pass as done.
        _ => (
            current.len(),
            !current.is_empty() && completed == current.len(),
        ),
    };
    if done {
        return Ok(Progress::Converged);
    }
    // A slot is a replicated job's slot number, or a global job's node.
    let restarts = |task: &Task| {
        let same_slot = all.iter().filter(|t| {
            t.spec.job_iteration == task.spec.job_iteration
                && t.slot == task.slot
                && (task.slot.is_some() || t.node_id == task.node_id)
        });
        (same_slot.count() as u64).saturating_sub(1)
    };
    if let Some(failed) = current.iter().find(|t| {
        matches!(t.status.state, TaskState::Failed | TaskState::Rejected)
            && service.spec.task.restart.gives_up(restarts(t))
    }) {
        let reason = failed
            .status
            .error
            .clone()
            .unwrap_or_else(|| failed.status.message.clone());
        return Err(ConvergeError::JobFailed {
            service: name.clone(),
            message: format!(
                "task {} {}: {reason}",
                failed.name(),
                failed.status.state.as_str()
            ),
        });
    }
    let mut missing = format!("{completed}/{wanted} tasks completed");
    let states: Vec<String> = [TaskState::Running, TaskState::Failed, TaskState::Rejected]
        .into_iter()
        .filter(|state| count(*state) > 0)
        .map(|state| format!("{} {}", count(state), state.as_str()))
        .collect();
    if !states.is_empty() {
        missing += &format!(" ({})", states.join(", "));
    }
    Ok(Progress::Waiting {
        running: completed,
        wanted,
        counted: "tasks completed",
        missing,
    })
}
