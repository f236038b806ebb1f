//! The GitOps watcher, on the leader only: it follows the store's watch for repositories
//! (added, removed, a sync asked), services (drift) and tasks (rollouts converging), keeps
//! each repository on its interval (`schedule`), and runs one pass at a time per repository
//! (`pass`): fetch into the mirror under the data dir, plan a new head and propose it with
//! its Deployment as one entry, check drift. A new leader starts from what the store
//! recorded (processed and applied commits), so no commit is applied twice.
//!
//! Applied Deployments are judged after each change of tasks or services: converged once
//! their services run their spec and still do a second later, failed when an update paused
//! or rolled back.

mod keys;
mod pass;
mod schedule;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use swarm_api::gitops::DeploymentOutcome;
use swarm_api::store::Command;
use swarm_controller::gitops::judge;
use swarm_controller::raft::driver::RaftHandle;
use swarm_controller::store::Store;
use swarm_controller::store::client::StoreClient;
use swarm_controller::store::{Changed, Changes};
use tokio::task::JoinSet;

use crate::millis;
use pass::{Context, pass};
use schedule::{RepoView, Report, Schedule};

/// How long an applied Deployment's services must stay converged before it is recorded so.
const STABLE: Duration = Duration::from_secs(1);

/// What the loop follows of the repositories, read when one changes.
struct Repositories {
    views: Vec<RepoView>,
    /// Every repository's URL: the mirrors to keep.
    urls: Vec<String>,
    /// Whether some Deployment is still rolling out.
    unsettled: bool,
}

/// What an entry asked of the loop.
#[derive(Default)]
struct Asked {
    repositories: bool,
    outcomes: bool,
}

/// Watches the repositories while this manager (`own_raft_id`) leads; mirrors and ssh keys
/// live under `dir` (`<data dir>/gitops`).
pub async fn run(raft: RaftHandle<Store>, own_raft_id: u64, dir: PathBuf) {
    let ctx = Context::new(StoreClient::new(raft.clone()), dir);
    watch(raft, own_raft_id, ctx).await;
}

/// [`run`] with the mirrors and keys of `ctx`.
async fn watch(raft: RaftHandle<Store>, own_raft_id: u64, ctx: Context) {
    let ctx = Arc::new(ctx);
    let mut applied = raft.applied();
    let mut leading = false;
    let mut schedule = Schedule::default();
    let mut passes: JoinSet<Report> = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut unsettled = false;
    // Deployments seen converged, and since when: recorded once the view held `STABLE`.
    let mut held: HashMap<String, Instant> = HashMap::new();
    let mut recheck: Option<Instant> = None;
    loop {
        let Ok(subscription) = raft
            .local_read(|store: &Store| store.subscribe(|_| ()))
            .await
        else {
            return; // the replica stopped
        };
        let mut changes = subscription.changes;
        // What changed while not subscribed is read again.
        let mut asked = Asked {
            repositories: true,
            outcomes: true,
        };
        let missed = loop {
            let Ok(status) = raft.status().await else {
                return;
            };
            if status.leader != own_raft_id {
                if leading {
                    // Another leader takes over from what the store recorded.
                    passes.abort_all();
                    running.clear();
                    schedule = Schedule::default();
                    held.clear();
                    recheck = None;
                }
                leading = false;
            } else if !leading {
                leading = true;
                asked = Asked {
                    repositories: true,
                    outcomes: true,
                };
            }
            if leading {
                let now = Instant::now();
                if std::mem::take(&mut asked.repositories) {
                    let Ok(repositories) = raft.local_read(repositories).await else {
                        return;
                    };
                    schedule.update(now, &repositories.views);
                    ctx.retain(&repositories.views.iter().map(|v| v.name.clone()).collect());
                    let ctx = ctx.clone();
                    let urls = repositories.urls;
                    // Removing a mirror is file system work, off the loop.
                    tokio::task::spawn_blocking(move || {
                        for removed in ctx.mirrors.retain(urls.iter().map(String::as_str)) {
                            tracing::info!(mirror = %removed.display(), "gitops: removed the mirror of a URL no repository uses");
                        }
                    });
                    unsettled = repositories.unsettled;
                    asked.outcomes = true;
                }
                if recheck.is_some_and(|at| now >= at) {
                    asked.outcomes = true;
                }
                if std::mem::take(&mut asked.outcomes) {
                    recheck = if unsettled {
                        settle(&ctx.client, &mut held).await
                    } else {
                        // Nothing rolls out (what was held went with its repository).
                        held.clear();
                        None
                    };
                }
                for (name, work) in schedule.take_due(now) {
                    let handle = passes.spawn(pass(ctx.clone(), name.clone(), work));
                    running.insert(handle.id(), name);
                }
            }
            let wake = schedule
                .next_wake(Instant::now())
                .into_iter()
                .chain(recheck)
                .min()
                .filter(|_| leading)
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                entry = changes.recv() => {
                    let drained = entry.and_then(|entry| {
                        note(&entry, &mut schedule, &mut asked);
                        while let Some(entry) = changes.try_recv()? {
                            note(&entry, &mut schedule, &mut asked);
                        }
                        Ok(())
                    });
                    if let Err(missed) = drained {
                        break missed;
                    }
                }
                Some(done) = passes.join_next_with_id(), if !passes.is_empty() => {
                    let (id, report) = match done {
                        Ok((id, report)) => (id, report),
                        Err(error) => (error.id(), Report::default()),
                    };
                    if let Some(name) = running.remove(&id) {
                        schedule.finished(&name, Instant::now(), report);
                    }
                }
                () = sleep_until(wake), if wake.is_some() => {}
                changed = applied.changed(), if !leading => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        };
        tracing::debug!(%missed, "gitops: subscribing again");
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What one entry asks of the loop: repositories to read again, Deployments to judge,
/// repositories whose services changed to check for drift.
fn note(entry: &Changes, schedule: &mut Schedule, asked: &mut Asked) {
    for changed in &entry.changed {
        match changed {
            Changed::Repository { .. } => asked.repositories = true,
            Changed::Task { .. } => asked.outcomes = true,
            Changed::Service { service, .. } => {
                asked.outcomes = true;
                match service.as_ref().and_then(|s| s.origin.stack.as_deref()) {
                    Some(stack) => {
                        if let Some(owner) = schedule.owner_of(stack).map(str::to_owned) {
                            schedule.drifted(&owner);
                        }
                    }
                    // A removed service's stack is not in the change.
                    None if service.is_none() => schedule.drifted_all(),
                    None => {}
                }
            }
            _ => {}
        }
    }
}

fn repositories(store: &Store) -> Repositories {
    let records = store.data().repositories.values();
    Repositories {
        urls: records
            .clone()
            .map(|record| record.repository.url.clone())
            .collect(),
        views: records
            .clone()
            .map(|record| RepoView {
                name: record.repository.name.clone(),
                interval: Duration::from_millis(record.repository.interval_ms),
                sync: record.status.sync.clone(),
                fetched_at: record.status.fetched.as_ref().map(|f| f.at),
                stacks: record.status.stacks.clone(),
            })
            .collect(),
        unsettled: records
            .flat_map(|record| &record.deployments)
            .any(|d| d.outcome == DeploymentOutcome::Applied),
    }
}

/// Records the outcome of every applied Deployment that failed since, or converged and
/// stayed so for [`STABLE`] (`held`: since when each was seen converged). Returns when to
/// look again for those still holding.
async fn settle(client: &StoreClient, held: &mut HashMap<String, Instant>) -> Option<Instant> {
    let judged = client
        .raft()
        .local_read(|store: &Store| {
            let mut judged = Vec::new();
            for record in store.data().repositories.values() {
                for deployment in &record.deployments {
                    if deployment.outcome == DeploymentOutcome::Applied {
                        judged.push((
                            record.repository.name.clone(),
                            deployment.id.clone(),
                            judge(store, deployment),
                        ));
                    }
                }
            }
            judged
        })
        .await
        .unwrap_or_default();
    let now = Instant::now();
    // Deployments no longer applied (recorded, or their repository removed) are forgotten.
    held.retain(|id, _| judged.iter().any(|(_, applied, _)| applied == id));
    let at = millis(SystemTime::now());
    let mut recheck = None;
    for (repository, id, outcome) in judged {
        let Some(outcome) = outcome else {
            held.remove(&id);
            continue;
        };
        if outcome == DeploymentOutcome::Converged {
            // A task that exits at once is reported running first, its failure a report
            // later: the view must hold before the Deployment is called converged.
            let since = *held.entry(id.clone()).or_insert(now);
            if now.duration_since(since) < STABLE {
                let due = since + STABLE;
                recheck = Some(recheck.map_or(due, |at: Instant| at.min(due)));
                continue;
            }
        }
        held.remove(&id);
        tracing::info!(%repository, deployment = %id, outcome = outcome.as_str(), "gitops");
        let command = Command::SetDeploymentOutcome {
            repository,
            id,
            outcome,
            at,
        };
        // Refused only when it was recorded already (by this pass's predecessor).
        if let Err(error) = client.propose(&command).await {
            tracing::debug!(%error, "gitops: outcome not recorded");
        }
    }
    recheck
}
