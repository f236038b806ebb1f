//! The store's typed client: a [`Command`] in, what the store did out, over the Raft
//! handle, which carries bytes for any state machine. Callers tell from the error whether
//! to ask elsewhere (no leader), decide again (a conflict), give up (invalid), or check
//! (the outcome is unknown); the control API maps them to gRPC codes at its edge.

use raft::prelude::{ConfChange, ConfChangeType};
use swarm_api::store::{Command, Conflict, Outcome, Rejection};

use super::Store;
use crate::raft::driver::{RaftError, RaftHandle, Status};

/// A command the store applied, at `version` (its Raft index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No leader is known (an election, or no majority of managers reachable): nothing was
    /// proposed.
    #[error("no leader is known yet; try again shortly")]
    NoLeader,
    /// The cluster did not answer in time: a write may or may not be applied.
    #[error(
        "timed out waiting for the cluster (is a majority of managers reachable?{})",
        leader.map(|l| format!(" the leader is raft id {l}")).unwrap_or_default()
    )]
    Timeout { leader: Option<u64> },
    /// The leader the write went to lost its leadership before the write was applied: it may
    /// or may not be applied.
    #[error(
        "the leader changed before the change was acknowledged: it may or may not have been applied; check and try again"
    )]
    UnknownOutcome,
    #[error("the replica stopped")]
    Stopped,
    /// What the command was decided against changed: decide it again.
    #[error("{0}")]
    Conflict(Conflict),
    /// The store refused the command, with its reasons; nothing changed.
    #[error("{}", reasons.join("; "))]
    Invalid { reasons: Vec<String> },
}

#[derive(Clone)]
pub struct StoreClient {
    raft: RaftHandle<Store>,
}

impl StoreClient {
    pub fn new(raft: RaftHandle<Store>) -> Self {
        StoreClient { raft }
    }

    /// The Raft handle under it, for what is not a command (leadership, applied index).
    pub fn raft(&self) -> &RaftHandle<Store> {
        &self.raft
    }

    /// Proposes `command` and waits until the store applied (or refused) it.
    pub async fn propose(&self, command: &Command) -> Result<Applied, StoreError> {
        let bytes = serde_json::to_vec(command).expect("commands serialise");
        match self.raft.propose(bytes).await {
            Ok(response) => outcome(&response),
            Err(error) => Err(self.raft_error(error).await),
        }
    }

    /// Adds or removes the voter `raft_id`, with `command` applied to the store at the same
    /// index: the store's managers and Raft's voters never disagree.
    pub async fn change_voters(
        &self,
        change_type: ConfChangeType,
        raft_id: u64,
        command: &Command,
    ) -> Result<Applied, StoreError> {
        let change = ConfChange {
            node_id: raft_id,
            change_type,
            context: serde_json::to_vec(command)
                .expect("commands serialise")
                .into(),
            ..ConfChange::default()
        };
        match self.raft.propose_conf_change(change).await {
            Ok(response) => outcome(&response),
            Err(error) => Err(self.raft_error(error).await),
        }
    }

    /// Runs `query` on the store once every write acknowledged before this call is applied.
    pub async fn read<R: Send + 'static>(
        &self,
        query: impl FnOnce(&Store) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        match self.raft.read(query).await {
            Ok(answer) => Ok(answer),
            Err(error) => Err(self.raft_error(error).await),
        }
    }

    pub async fn status(&self) -> Result<Status, StoreError> {
        self.raft.status().await.map_err(|_| StoreError::Stopped)
    }

    async fn raft_error(&self, error: RaftError) -> StoreError {
        match error {
            RaftError::NoLeader => StoreError::NoLeader,
            RaftError::Timeout => {
                let leader = match self.raft.status().await {
                    Ok(status) if status.leader != 0 => Some(status.leader),
                    _ => None,
                };
                StoreError::Timeout { leader }
            }
            RaftError::LeaderChanged => StoreError::UnknownOutcome,
            RaftError::Stopped => StoreError::Stopped,
        }
    }
}

/// The store's response to an applied entry.
fn outcome(response: &[u8]) -> Result<Applied, StoreError> {
    match serde_json::from_slice(response).expect("the store's outcomes decode") {
        Outcome::Applied { version } => Ok(Applied { version }),
        Outcome::Rejected(Rejection::Conflict(conflict)) => Err(StoreError::Conflict(conflict)),
        Outcome::Rejected(Rejection::Invalid { reasons }) => Err(StoreError::Invalid { reasons }),
    }
}
