//! Where the rollout of a service's spec stands, as Docker's `UpdateStatus`: written by the
//! orchestrator's passes into the replicated store (beside the service, not in its spec, so
//! plans and diffs never see it), cleared when a user changes the spec (a new update starts).

use serde::{Deserialize, Serialize};

use crate::units::Millis;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStatus {
    pub state: UpdateState,
    /// When this update (or rollback) began.
    pub started_at: Millis,
    /// When it completed; `None` while it runs or is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Millis>,
    /// Why it is in this state ("update paused due to failure or early termination of task …").
    #[serde(default)]
    pub message: String,
}

/// Docker's update states, spelled as Docker spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Updating,
    /// Stopped by failures; stays so until the spec changes again.
    Paused,
    Completed,
    /// The orchestrator put the previous spec back after failures (`failure_action: rollback`).
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

impl UpdateState {
    /// Whether the service's tasks are going back to its previous spec (the rollout then
    /// follows `rollback_config`).
    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            UpdateState::RollbackStarted
                | UpdateState::RollbackPaused
                | UpdateState::RollbackCompleted
        )
    }

    /// Whether the update (or rollback) finished: it has a completion time.
    pub fn is_completed(self) -> bool {
        matches!(
            self,
            UpdateState::Completed | UpdateState::RollbackCompleted
        )
    }

    /// Whether no more tasks are replaced until the spec changes.
    pub fn is_paused(self) -> bool {
        matches!(self, UpdateState::Paused | UpdateState::RollbackPaused)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rollback_started",
            UpdateState::RollbackPaused => "rollback_paused",
            UpdateState::RollbackCompleted => "rollback_completed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialise_as_docker_spells_them() {
        for state in [
            UpdateState::Updating,
            UpdateState::Paused,
            UpdateState::Completed,
            UpdateState::RollbackStarted,
            UpdateState::RollbackPaused,
            UpdateState::RollbackCompleted,
        ] {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.as_str())
            );
        }
        let status = UpdateStatus {
            state: UpdateState::Paused,
            started_at: 1,
            completed_at: None,
            message: "m".into(),
        };
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            serde_json::json!({"State": "paused", "StartedAt": 1, "Message": "m"})
        );
    }
}
