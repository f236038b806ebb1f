//! The leader's orchestration loop: it follows the store's watch, and as soon as an entry
//! gives it something to do (or a delayed decision comes due) runs one orchestrator pass,
//! over the services that changed, on the state this replica has applied; its decisions
//! are proposed as one `WriteTasks` entry. The first pass of a new leader (or after the
//! watch resyncs, or after a refused write) is a full reconcile, so a manager that becomes
//! leader picks up where the last one stopped.

use std::time::{Duration, SystemTime};

use swarm_api::store::Command;

use super::{millis, propose, random_id};
use swarm_controller::orchestrator::{self, Dirty, Scope};
use swarm_controller::raft::driver::RaftHandle;
use swarm_controller::store::Store;

/// The most task decisions in one Raft entry.
const MAX_CHANGES_PER_ENTRY: usize = 1000;

pub async fn run(raft: RaftHandle<Store>, own_raft_id: u64) {
    // A new leader commits an entry of its own, which the store does not see: the applied
    // index is what tells a follower it may lead now.
    let mut applied = raft.applied();
    loop {
        let Ok(subscription) = raft
            .local_read(|store: &Store| store.subscribe(Dirty::of))
            .await
        else {
            return; // the replica stopped
        };
        let (mut dirty, mut changes) = (subscription.view, subscription.changes);
        let mut leading = false;
        let missed = loop {
            let Ok(status) = raft.status().await else {
                return;
            };
            if status.leader != own_raft_id {
                leading = false;
            } else if !leading {
                leading = true;
                dirty.all();
            }
            if leading {
                let now = millis(SystemTime::now());
                let scope = dirty.take(now);
                if !scope.is_empty() && !write_pass(&raft, now, scope, &mut dirty).await {
                    return;
                }
            }
            // Sleeps until an entry comes, the next delayed decision is due, or (not
            // leading) leadership may have moved.
            let due = dirty
                .next_wake()
                .filter(|_| leading)
                .map(|at| Duration::from_millis(at.saturating_sub(millis(SystemTime::now()))));
            let woke = tokio::select! {
                entry = changes.recv() => Some(entry),
                () = tokio::time::sleep(due.unwrap_or_default()), if due.is_some() => None,
                changed = applied.changed(), if !leading => {
                    if changed.is_err() {
                        return;
                    }
                    None
                }
            };
            if let Some(entry) = woke
                && let Err(missed) = entry.and_then(|entry| {
                    dirty.add(&entry);
                    // What is already published joins the same pass.
                    while let Some(entry) = changes.try_recv()? {
                        dirty.add(&entry);
                    }
                    Ok(())
                })
            {
                break missed;
            }
        };
        tracing::debug!(%missed, "orchestrator: subscribing again");
    }
}

/// One pass over `scope`, its decisions proposed; false when the replica stopped.
async fn write_pass(raft: &RaftHandle<Store>, now: u64, scope: Scope, dirty: &mut Dirty) -> bool {
    // The pass runs where the state is, without copying it; over the services that changed
    // it costs their tasks.
    let decided = raft
        .local_read(move |store: &Store| {
            let pass = orchestrator::pass_over(now, store, &scope, &mut random_id);
            (store.data().tasks_version, pass, scope)
        })
        .await;
    let Ok((expected_version, pass, scope)) = decided else {
        return false;
    };
    dirty.passed(&scope, &pass);
    let mut changes = pass.changes;
    if changes.is_empty() {
        return true;
    }
    if changes.len() > MAX_CHANGES_PER_ENTRY {
        // A big service's first pass would be one huge entry (every task carries its
        // spec): it is written in parts, each pass deciding again what is left.
        changes.truncate(MAX_CHANGES_PER_ENTRY);
        dirty.all();
    }
    let command = Command::WriteTasks {
        expected_version,
        changes,
    };
    // A refusal (another pass wrote first) or a lost leadership is redone by the next
    // pass, over the state as it then is.
    if let Err(error) = propose(raft, &command).await {
        tracing::debug!(%error, "orchestrator pass not applied");
        dirty.all();
    }
    true
}
