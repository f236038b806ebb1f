//! One pass over one repository: fetch its branch (when due), process a new head (plan,
//! propose the Deployment, decide again on a conflict), then check its services against the
//! applied commit (drift, and the heal when it is asked for). Git work runs on the blocking
//! pool; every write goes through the typed store client.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use swarm_api::gitops::{
    DeploymentOutcome, Fetched, Repository, RepositoryError, RepositorySecrets, RepositoryStatus,
    Trigger,
};
use swarm_api::state::ClusterState;
use swarm_api::store::Command;
use swarm_api::units::Millis;
use swarm_controller::gitops::{Decision, LoadCache, Mirrors, Target, decide};
use swarm_controller::store::Store;
use swarm_controller::store::client::{StoreClient, StoreError};

use super::keys;
use super::schedule::{FetchWant, Report, Work};
use crate::millis;

/// How many times a commit is planned again when what its plan was made against changed
/// before it was applied; past that it waits for the next pass.
const MAX_ATTEMPTS: usize = 3;

/// What every pass shares: the store, the mirrors (one per URL), where ssh keys go, and each
/// repository's loads by content.
pub struct Context {
    pub client: StoreClient,
    pub mirrors: Mirrors,
    pub keys: PathBuf,
    caches: Mutex<HashMap<String, Arc<LoadCache>>>,
}

/// What a pass reads of its repository.
#[derive(Debug, Clone)]
struct Seen {
    repository: Repository,
    secrets: RepositorySecrets,
    status: RepositoryStatus,
    /// The last Deployment's outcome and when it was recorded.
    last: Option<(DeploymentOutcome, Millis)>,
}

/// What planning needs of the store: the repository and the cluster's objects.
struct Planning {
    seen: Seen,
    state: ClusterState,
}

impl Context {
    /// Mirrors under `<dir>/mirrors`, ssh keys under `<dir>/keys`.
    pub fn new(client: StoreClient, dir: PathBuf) -> Context {
        Context::with_mirrors(client, Mirrors::new(dir.join("mirrors")), dir.join("keys"))
    }

    pub fn with_mirrors(client: StoreClient, mirrors: Mirrors, keys: PathBuf) -> Context {
        Context {
            client,
            mirrors,
            keys,
            caches: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets what is kept for repositories not in `names`: their loads, their keys.
    pub fn retain(&self, names: &BTreeSet<String>) {
        self.caches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|name, _| names.contains(name));
        keys::retain(&self.keys, names);
    }

    fn cache(&self, name: &str) -> Arc<LoadCache> {
        self.caches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    async fn seen(&self, name: &str) -> Option<Seen> {
        let name = name.to_owned();
        self.client
            .raft()
            .local_read(move |store: &Store| seen(store, &name))
            .await
            .ok()
            .flatten()
    }

    async fn planning(&self, name: &str) -> Option<Planning> {
        let name = name.to_owned();
        self.client
            .raft()
            .local_read(move |store: &Store| {
                seen(store, &name).map(|seen| Planning {
                    seen,
                    state: store.export(),
                })
            })
            .await
            .ok()
            .flatten()
    }

    async fn write(&self, command: &Command) -> Result<(), StoreError> {
        self.client.propose(command).await.map(|_| ())
    }

    /// Fetches the repository's branch (a fetch of its URL since `want.not_before` serves).
    async fn fetch(&self, seen: &Seen, want: FetchWant) -> Result<String, String> {
        let repository = &seen.repository;
        let credentials = keys::credentials(
            &self.keys,
            &repository.name,
            seen.secrets.credentials.as_ref(),
        )
        .map_err(|e| {
            format!(
                "cannot write the ssh key of repository {} under {}: {e}",
                repository.name,
                self.keys.display()
            )
        })?;
        self.mirrors
            .mirror(&repository.url)
            .fetch_async(repository.branch.clone(), credentials, want.not_before)
            .await
            .map_err(|e| e.to_string())
    }

    /// Records that the repository could not be fetched or processed.
    async fn failed(&self, seen: &Seen, message: String) {
        let name = &seen.repository.name;
        tracing::warn!(repository = %name, %message, "gitops");
        let now = millis(SystemTime::now());
        let previous = seen
            .status
            .error
            .as_ref()
            .filter(|_| !deployment_error(&seen.status, seen.last.as_ref()));
        let error = RepositoryError {
            message,
            since: previous.map_or(now, |e| e.since),
            attempts: previous.map_or(1, |e| e.attempts + 1),
        };
        let command = Command::RepositoryFailed {
            name: name.clone(),
            error,
        };
        if let Err(error) = self.write(&command).await {
            tracing::debug!(repository = %name, %error, "gitops: failure not recorded");
        }
    }

    /// Plans `commit` of repository `name` against the cluster as this replica has it.
    async fn decide(
        &self,
        planning: Planning,
        commit: &str,
        trigger: Trigger,
    ) -> Result<Decision, String> {
        let Planning { seen, state } = planning;
        let mirror = self.mirrors.mirror(&seen.repository.url);
        let cache = self.cache(&seen.repository.name);
        let commit = commit.to_owned();
        let now = millis(SystemTime::now());
        tokio::task::spawn_blocking(move || {
            let repo = mirror.open().map_err(|e| e.to_string())?;
            let target = Target {
                repository: &seen.repository,
                owned: &seen.status.stacks,
                state: &state,
            };
            decide(&repo, &commit, &target, &cache, trigger, now).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("planning stopped: {e}")))
    }

    /// Processes the new head `commit` of repository `name`: true when a Deployment was
    /// recorded for it.
    async fn deploy(&self, name: &str, commit: &str, trigger: Trigger) -> bool {
        for _ in 0..MAX_ATTEMPTS {
            let Some(planning) = self.planning(name).await else {
                return false;
            };
            // Another leader (or an earlier pass whose answer was lost) recorded it.
            if planning.seen.status.processed.as_deref() == Some(commit) {
                return false;
            }
            let seen = planning.seen.clone();
            let decision = match self.decide(planning, commit, trigger).await {
                Ok(decision) => decision,
                Err(message) => {
                    self.failed(&seen, message).await;
                    return false;
                }
            };
            let outcome = decision.deployment.outcome.as_str();
            match self.write(&decision.clone().command()).await {
                Ok(()) => {
                    tracing::info!(repository = %name, %commit, outcome, "gitops: deployed");
                    return true;
                }
                Err(StoreError::Conflict(conflict)) => {
                    tracing::debug!(repository = %name, %conflict, "gitops: planning again");
                }
                Err(StoreError::Invalid { reasons }) => {
                    return self.refuse(name, commit, decision, reasons).await;
                }
                Err(error) => {
                    tracing::warn!(repository = %name, %commit, %error, "gitops: not deployed; tried again next pass");
                    return false;
                }
            }
        }
        if let Some(seen) = self.seen(name).await {
            let message = format!(
                "the plan of commit {} conflicted {MAX_ATTEMPTS} times with changes made meanwhile; it is planned again on the next pass",
                short(commit)
            );
            self.failed(&seen, message).await;
        }
        false
    }

    /// The store's checks refused the plan: the commit is recorded as refused, so that it
    /// is not tried on every pass.
    async fn refuse(
        &self,
        name: &str,
        commit: &str,
        decision: Decision,
        reasons: Vec<String>,
    ) -> bool {
        let processed = self.seen(name).await.and_then(|seen| seen.status.processed);
        if processed.as_deref() == Some(commit) {
            return false;
        }
        let reason = reasons.join("; ");
        tracing::warn!(repository = %name, %commit, %reason, "gitops: refused");
        match self.write(&decision.refused(reason).command()).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(repository = %name, %commit, %error, "gitops: refusal not recorded");
                false
            }
        }
    }

    /// Compares the repository's services with its applied commit: records the drift when it
    /// changed, and heals it when the repository asks for it and `may_heal`. True when a
    /// heal was recorded.
    async fn drift(&self, name: &str, may_heal: bool) -> bool {
        let Some(planning) = self.planning(name).await else {
            return false;
        };
        let seen = planning.seen.clone();
        let Some(applied) = seen.status.applied.clone() else {
            return false;
        };
        let decision = match self.decide(planning, &applied, Trigger::SelfHeal).await {
            Ok(decision) => decision,
            Err(message) => {
                // The applied commit is not in this leader's mirror before its first fetch.
                tracing::debug!(repository = %name, %message, "gitops: drift not checked");
                return false;
            }
        };
        if let DeploymentOutcome::Invalid { findings } = &decision.deployment.outcome {
            // It planned when it was applied; an empty drift would be a guess.
            tracing::warn!(repository = %name, commit = %applied, ?findings, "gitops: the applied commit no longer plans; drift not checked");
            return false;
        }
        let drift = decision.drift();
        if drift != seen.status.drift {
            tracing::info!(repository = %name, services = drift.len(), "gitops: drift");
            let command = Command::RepositoryDrift {
                name: name.to_owned(),
                drift,
            };
            if let Err(error) = self.write(&command).await {
                tracing::debug!(repository = %name, %error, "gitops: drift not recorded");
            }
        }
        // An update that failed and rolled back moved the spec away from git on purpose:
        // healing it would redo the failed update, over and over.
        let failed = matches!(seen.last, Some((DeploymentOutcome::Failed { .. }, _)));
        if !seen.repository.self_heal
            || !may_heal
            || failed
            || decision.deployment.plan.actions.is_empty()
        {
            return false;
        }
        match self.write(&decision.command()).await {
            Ok(()) => {
                tracing::info!(repository = %name, commit = %applied, "gitops: healed");
                true
            }
            Err(error) => {
                tracing::debug!(repository = %name, %error, "gitops: not healed");
                false
            }
        }
    }
}

/// One pass of `work` over repository `name`.
pub async fn pass(ctx: Arc<Context>, name: String, work: Work) -> Report {
    let mut report = Report::default();
    let Some(seen) = ctx.seen(&name).await else {
        return report;
    };
    let mut deployed = false;
    if let Some(want) = work.fetch {
        match ctx.fetch(&seen, want).await {
            Ok(head) => {
                report.fetched = Some(true);
                if record_fetch(&seen.status, seen.last.as_ref(), &head) {
                    let command = Command::RepositoryFetched {
                        name: name.clone(),
                        fetched: Fetched {
                            commit: head.clone(),
                            at: millis(SystemTime::now()),
                        },
                    };
                    if let Err(error) = ctx.write(&command).await {
                        tracing::debug!(repository = %name, %error, "gitops: fetch not recorded");
                    }
                }
                // A force-pushed branch is no different: its head is new, and processed.
                if seen.status.processed.as_deref() != Some(head.as_str()) {
                    deployed = ctx.deploy(&name, &head, want.trigger).await;
                }
            }
            Err(message) => {
                report.fetched = Some(false);
                ctx.failed(&seen, message).await;
            }
        }
    }
    if work.drift || deployed {
        report.healed = ctx.drift(&name, work.may_heal).await;
    }
    report
}

fn seen(store: &Store, name: &str) -> Option<Seen> {
    let record = store.data().repositories.get(name)?;
    Some(Seen {
        repository: record.repository.clone(),
        secrets: record.secrets.clone(),
        status: record.status.clone(),
        last: record
            .deployments
            .last()
            .map(|d| (d.outcome.clone(), d.created_at)),
    })
}

/// Whether a fetch that found `head` is worth a write: the head moved, or an error of an
/// earlier fetch (not of a deployment, which the next commit clears) is to be cleared. An
/// unchanged poll writes nothing.
fn record_fetch(
    status: &RepositoryStatus,
    last: Option<&(DeploymentOutcome, Millis)>,
    head: &str,
) -> bool {
    let moved = status.fetched.as_ref().is_none_or(|f| f.commit != head);
    moved || (status.error.is_some() && !deployment_error(status, last))
}

/// Whether the repository's error is the one its last Deployment (invalid or refused) left.
fn deployment_error(status: &RepositoryStatus, last: Option<&(DeploymentOutcome, Millis)>) -> bool {
    match (&status.error, last) {
        (
            Some(error),
            Some((DeploymentOutcome::Invalid { .. } | DeploymentOutcome::Refused { .. }, at)),
        ) => error.since == *at,
        _ => false,
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_moved_head_or_a_fetch_error_to_clear_is_written() {
        let mut status = RepositoryStatus {
            fetched: Some(Fetched {
                commit: "c1".into(),
                at: 1,
            }),
            ..RepositoryStatus::default()
        };
        assert!(!record_fetch(&status, None, "c1"));
        assert!(record_fetch(&status, None, "c2"));
        status.error = Some(RepositoryError {
            message: "cannot reach".into(),
            since: 5,
            attempts: 2,
        });
        assert!(record_fetch(&status, None, "c1"));
        // An invalid commit's error stays until the next commit.
        let invalid = (DeploymentOutcome::Invalid { findings: vec![] }, 5);
        assert!(!record_fetch(&status, Some(&invalid), "c1"));
        assert!(record_fetch(&status, Some(&invalid), "c2"));
    }
}
