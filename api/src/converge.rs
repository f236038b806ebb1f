//! Whether a service converged after a change: every task it should run runs its current
//! spec and its update (if one began) completed; an update that paused or rolled back will
//! not. Judged from a services view: the CLI's wait (`service update`, `stack deploy`) and
//! the GitOps watcher's Deployment outcomes use the same judgement.

use std::collections::BTreeMap;

use crate::rollout::UpdateState;
use crate::spec::ServiceSpec;
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
        /// Tasks running the current spec, of `wanted`.
        running: usize,
        wanted: usize,
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
        missing,
    })
}
