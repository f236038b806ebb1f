//! The leader's orchestration loop: whenever the store changes, and at least every `TICK`
//! (restart delays are a matter of time), one orchestrator pass over the state this replica
//! has applied, its decisions proposed as one `WriteTasks` entry. Every pass is a full
//! reconcile, so a manager that becomes leader picks up where the last one stopped.

use std::time::{Duration, SystemTime};

use swarm_api::store::Command;

use super::{millis, propose, random_id};
use swarm_controller::orchestrator;
use swarm_controller::raft::driver::RaftHandle;
use swarm_controller::store::Store;

/// The longest a pass waits when nothing changes.
const TICK: Duration = Duration::from_millis(250);
/// The most task decisions in one Raft entry.
const MAX_CHANGES_PER_ENTRY: usize = 1000;

pub async fn run(raft: RaftHandle<Store>, own_raft_id: u64) {
    let mut applied = raft.applied();
    loop {
        if let Ok(Err(_)) = tokio::time::timeout(TICK, applied.changed()).await {
            return; // the replica stopped
        }
        let Ok(status) = raft.status().await else {
            return;
        };
        if status.leader != own_raft_id {
            continue;
        }
        let now = millis(SystemTime::now());
        // The pass runs where the state is, without copying it; it is quick (a pass over
        // 10,000 tasks takes milliseconds) and decides, it does not wait.
        let decided = raft
            .local_read(move |store: &Store| {
                let data = store.data();
                let changes = orchestrator::pass(now, data, &mut random_id);
                (data.tasks_version, changes)
            })
            .await;
        let Ok((expected_version, mut changes)) = decided else {
            return;
        };
        if changes.is_empty() {
            continue;
        }
        // A big service's first pass would be one huge entry (every task carries its
        // spec): it is written in parts, each pass deciding again what is left.
        changes.truncate(MAX_CHANGES_PER_ENTRY);
        let command = Command::WriteTasks {
            expected_version,
            changes,
        };
        // A refusal (another pass wrote first) or a lost leadership is redone by the next
        // pass, over the state as it then is.
        if let Err(error) = propose(&raft, &command).await {
            tracing::debug!(%error, "orchestrator pass not applied");
        }
    }
}
