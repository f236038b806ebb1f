//! Leaving a cluster (`swarm leave`) and recovering one that lost its quorum
//! (`swarm init --force-new-cluster`).

use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeV2, ConfState, EntryType, Snapshot};
use swarm_api::grpc::control::InitResponse;
use swarm_api::store::{Command, NodeRole};
use tonic::Status;

use super::control::demote;
use super::{
    Daemon, DaemonError, Membership, internal, propose, raft_status, store_status, wait_for_leader,
};
use swarm_controller::raft::log::DurableLog;
use swarm_controller::raft::replica::{ReplicaError, StateMachine};
use swarm_controller::store::Store;

/// How long a leaving manager tries to stop being a voter before it leaves anyway.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

impl Daemon {
    /// `swarm leave`: the node forgets its cluster. A manager must be forced, and first
    /// tries to remove its own voter, so that the others keep their quorum.
    pub(super) async fn leave(&self, force: bool) -> Result<(), Status> {
        let mut membership = self.membership.lock().await;
        let Membership::Member(member) = &*membership else {
            return Err(Status::failed_precondition(
                "this node is not part of a swarm",
            ));
        };
        if let Some(manager) = &member.manager {
            let raft = manager.raft.clone();
            let node_id = member.state.node_id.clone();
            if !force {
                let managers = raft
                    .local_read(|store: &Store| {
                        store
                            .data()
                            .nodes
                            .values()
                            .filter(|n| n.role == NodeRole::Manager)
                            .count()
                    })
                    .await
                    .map_err(raft_status)?;
                return Err(Status::failed_precondition(if managers <= 1 {
                    "this node is the last manager of the swarm: leaving loses the cluster's state for good. Use --force to leave anyway".to_owned()
                } else {
                    format!(
                        "this node is a manager: leaving leaves {} managers out of {managers}, and without a Raft quorum the swarm stops accepting changes. Demote it first (`swarm node demote {node_id}` on another manager), or use --force",
                        managers - 1
                    )
                }));
            }
            match tokio::time::timeout(LEAVE_TIMEOUT, demote(&raft, &node_id)).await {
                Ok(Ok(_)) => {}
                Ok(Err(status)) => {
                    tracing::warn!(
                        reason = status.message(),
                        "leaving without removing this manager's voter"
                    )
                }
                Err(_) => {
                    tracing::warn!("leaving without removing this manager's voter: no answer")
                }
            }
        }
        let previous = std::mem::replace(&mut *membership, Membership::Outside);
        if let Membership::Member(member) = previous {
            // Its tasks stop and its network goes: the node is no longer the cluster's.
            member.agent.leave().await;
            if let Some(manager) = member.manager {
                manager.stop().await;
            }
        }
        self.forget_cluster().map_err(internal)?;
        tracing::info!("left the swarm");
        Ok(())
    }

    /// `swarm init --force-new-cluster`: this manager's replica restarts from its own data
    /// as the only voter of the same cluster; the other managers become workers in the
    /// store (they must join again to be managers).
    pub(super) async fn force_new_cluster(
        self: &Arc<Self>,
        membership: &mut Membership,
    ) -> Result<InitResponse, Status> {
        let Membership::Member(member) = membership else {
            return Err(Status::failed_precondition(
                "this node holds no cluster to recover: --force-new-cluster restarts a manager of an existing cluster from its data",
            ));
        };
        let Some(manager) = member.manager.take() else {
            return Err(Status::failed_precondition(
                "this node is a worker: run --force-new-cluster on a surviving manager",
            ));
        };
        manager.stop().await;
        let raft_id = member
            .state
            .raft_id
            .ok_or_else(|| internal("a manager without a raft id"))?;
        let log = self.open_log(&self.path("raft.redb")).map_err(internal)?;
        single_voter_log(log, raft_id).map_err(internal)?;
        let manager = self
            .start_manager(&member.state, Default::default())
            .await
            .map_err(internal)?;
        let raft = manager.raft.clone();
        member.manager = Some(manager);
        wait_for_leader(&raft).await?;
        let (others, cluster) = raft
            .read(move |store: &Store| {
                let data = store.data();
                let others: Vec<String> = data
                    .nodes
                    .values()
                    .filter(|n| n.role == NodeRole::Manager && n.raft_id != Some(raft_id))
                    .map(|n| n.id.clone())
                    .collect();
                (others, data.cluster.clone())
            })
            .await
            .map_err(raft_status)?;
        for id in others {
            propose(&raft, &Command::LeaveRaft { id })
                .await
                .map_err(store_status)?;
        }
        let cluster = cluster.ok_or_else(|| internal("the recovered store holds no cluster"))?;
        tracing::warn!("forced a new cluster from this manager's data: it is the only manager");
        Ok(InitResponse {
            node_id: member.state.node_id.clone(),
            cluster_id: cluster.id,
            worker_token: cluster.worker_token_secret,
            manager_token: cluster.manager_token_secret,
            advertise_addr: member.state.advertise_addr.clone(),
            unlock_key: String::new(),
        })
    }
}

/// Rewrites a manager's log as a snapshot of everything it knows committed, whose
/// configuration has `raft_id` as its only voter. Entries past the commit index, which no
/// quorum acknowledged to this replica, are dropped.
fn single_voter_log(mut log: DurableLog, raft_id: u64) -> Result<(), DaemonError> {
    let storage = &log;
    let state = raft::Storage::initial_state(storage).map_err(ReplicaError::from)?;
    let commit = state.hard_state.commit;
    let snapshot_index = log.snapshot_index();
    let mut store = Store::default();
    let snapshot =
        raft::Storage::snapshot(&log, snapshot_index, raft_id).map_err(ReplicaError::from)?;
    store.restore(&snapshot.data);
    if commit > snapshot_index {
        let entries = raft::Storage::entries(
            &log,
            snapshot_index + 1,
            commit + 1,
            None,
            raft::GetEntriesContext::empty(false),
        )
        .map_err(ReplicaError::from)?;
        for entry in entries {
            let command = match entry.get_entry_type() {
                EntryType::EntryNormal => entry.data.to_vec(),
                EntryType::EntryConfChange => ConfChange::parse_from_bytes(&entry.data)
                    .map(|c| c.context.to_vec())
                    .unwrap_or_default(),
                EntryType::EntryConfChangeV2 => ConfChangeV2::parse_from_bytes(&entry.data)
                    .map(|c| c.context.to_vec())
                    .unwrap_or_default(),
            };
            if !command.is_empty() {
                store.apply(entry.index, &command);
            }
        }
    }
    let index = commit.max(snapshot_index);
    let term = raft::Storage::term(&log, index).map_err(ReplicaError::from)?;
    let mut recovered = Snapshot {
        data: store.snapshot().into(),
        ..Snapshot::default()
    };
    let metadata = recovered.mut_metadata();
    metadata.index = index;
    metadata.term = term;
    metadata.set_conf_state(ConfState {
        voters: vec![raft_id],
        ..ConfState::default()
    });
    log.apply_snapshot(recovered)?;
    Ok(())
}
