//! GitOps on the control API: repositories declared, listed, inspected, removed and synced
//! (`swarm repo`), and the Deployments the leader's watcher recorded (`swarm deploy`).
//!
//! A repository's secrets (credentials, webhook secret) arrive in `AddRepository` and go to
//! the store; nothing here sends them back: the views below have no field that could hold
//! them, and no error or log line quotes a request's secret fields.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use swarm_api::gitops::{
    Commit, DEFAULT_INTERVAL_MS, Deployment, DeploymentOutcome, GitCredentials, Repository,
    RepositoryRecord, RepositorySecrets, RepositoryStatus, Trigger,
};
use swarm_api::grpc::control::{AddRepositoryRequest, RepositoryCredentials};
use swarm_api::plan::{Kind, Op};
use swarm_api::rollout::UpdateStatus;
use swarm_api::spec::ServiceMode;
use swarm_api::state::ClusterState;
use swarm_api::store::{Command, StoreData};
use swarm_api::task::{DesiredState, TaskState};
use swarm_controller::gitops::redact_url;
use swarm_controller::store::Store;
use swarm_controller::store::client::{StoreClient, StoreError};
use tonic::Status;

use super::{millis, store_status};

/// The Deployments `repo inspect` shows.
pub const INSPECT_DEPLOYMENTS: usize = 5;

/// How many times `repo rm --prune` plans again when the cluster changed meanwhile.
const ATTEMPTS: u32 = 5;

/// Where a repository stands, as `repo ls` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RepositoryState {
    /// Never fetched yet.
    Pending,
    /// The fetched head is processed, and the cluster runs what git says.
    Synced,
    /// A fetched head is not processed yet.
    Syncing,
    /// The last fetch or deployment failed.
    Error,
    /// Services of its stacks differ from git.
    Drifted,
}

impl RepositoryState {
    pub fn of(status: &RepositoryStatus) -> RepositoryState {
        if status.error.is_some() {
            return RepositoryState::Error;
        }
        let Some(fetched) = &status.fetched else {
            return RepositoryState::Pending;
        };
        if status.processed.as_ref() != Some(&fetched.commit) {
            RepositoryState::Syncing
        } else if !status.drift.is_empty() {
            RepositoryState::Drifted
        } else {
            RepositoryState::Synced
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RepositoryState::Pending => "pending",
            RepositoryState::Synced => "synced",
            RepositoryState::Syncing => "syncing",
            RepositoryState::Error => "error",
            RepositoryState::Drifted => "drifted",
        }
    }
}

/// A repository as the control API shows it: what was declared, the kind of its
/// credentials (never their value), where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositoryView {
    pub repository: Repository,
    /// `token`, `basic` or `ssh-key`; none for a public repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    pub webhook_secret: bool,
    pub state: RepositoryState,
    pub status: RepositoryStatus,
    /// The services of the stacks it owns, by name, with the commit that last changed each.
    #[serde(default)]
    pub services: BTreeMap<String, String>,
    /// Its last Deployments, newest first (`repo inspect` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<DeploymentSummary>,
}

impl RepositoryView {
    fn of(data: &StoreData, record: &RepositoryRecord, deployments: usize) -> RepositoryView {
        let status = &record.status;
        let services = data
            .objects
            .services
            .iter()
            .filter(|o| {
                o.origin
                    .stack
                    .as_ref()
                    .is_some_and(|stack| status.stacks.contains(stack))
            })
            .map(|o| {
                let commit =
                    o.id.as_ref()
                        .and_then(|id| data.service_commits.get(id))
                        .or(status.applied.as_ref())
                        .cloned()
                        .unwrap_or_default();
                (o.spec.name.clone(), commit)
            })
            .collect();
        RepositoryView {
            repository: record.repository.clone(),
            credentials: record
                .secrets
                .credentials
                .as_ref()
                .map(|c| c.kind().to_owned()),
            webhook_secret: record.secrets.webhook_secret.is_some(),
            state: RepositoryState::of(status),
            status: status.clone(),
            services,
            deployments: record
                .deployments
                .iter()
                .rev()
                .take(deployments)
                .map(DeploymentSummary::of)
                .collect(),
        }
    }
}

/// A Deployment without its plan, as `deploy ls` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentSummary {
    pub id: String,
    pub repository: String,
    pub commit: Commit,
    pub trigger: Trigger,
    pub created_at: u64,
    pub updated_at: u64,
    pub outcome: DeploymentOutcome,
    /// How many actions its plan had.
    pub changes: usize,
}

impl DeploymentSummary {
    fn of(deployment: &Deployment) -> DeploymentSummary {
        DeploymentSummary {
            id: deployment.id.clone(),
            repository: deployment.repository.clone(),
            commit: deployment.commit.clone(),
            trigger: deployment.trigger,
            created_at: deployment.created_at,
            updated_at: deployment.updated_at,
            outcome: deployment.outcome.clone(),
            changes: deployment.plan.actions.len(),
        }
    }
}

/// A Deployment with its plan, and where each service it changed stands now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentDetail {
    pub deployment: Deployment,
    pub services: Vec<ServiceConvergence>,
}

/// One service a Deployment's plan touched, as the cluster runs it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceConvergence {
    pub name: String,
    /// What the plan did to it: create, update, scale or remove.
    pub op: Op,
    /// Whether the service exists now.
    pub exists: bool,
    /// Its last update's state, if the store keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateStatus>,
    /// Its tasks running, and how many should.
    pub running: usize,
    pub desired: usize,
    /// The commit that last changed it, if git manages it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

fn convergence(data: &StoreData, deployment: &Deployment) -> Vec<ServiceConvergence> {
    deployment
        .plan
        .actions
        .iter()
        .filter(|a| a.kind == Kind::Service)
        .map(|action| {
            let service = data
                .objects
                .services
                .iter()
                .find(|o| o.spec.name == action.name);
            let id = service.and_then(|s| s.id.clone()).unwrap_or_default();
            let live = || {
                data.tasks
                    .values()
                    .filter(|t| t.service_id == id && t.desired == DesiredState::Running)
            };
            let desired = match service.map(|s| s.spec.mode) {
                Some(ServiceMode::Replicated { replicas }) => replicas as usize,
                Some(ServiceMode::Global) => live().count(),
                // A job wants the tasks it still has to complete.
                Some(ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob) => live()
                    .filter(|t| t.status.state != TaskState::Complete)
                    .count(),
                None => 0,
            };
            ServiceConvergence {
                name: action.name.clone(),
                op: action.op,
                exists: service.is_some(),
                update: data.update_status.get(&id).cloned(),
                running: live()
                    .filter(|t| t.status.state == TaskState::Running)
                    .count(),
                desired,
                commit: data.service_commits.get(&id).cloned(),
            }
        })
        .collect()
}

/// The repository and secrets an `AddRepository` request declares, checked: errors name
/// the repository and the flag to fix, never a secret.
pub fn declaration(
    request: AddRepositoryRequest,
    now: u64,
) -> Result<(Repository, RepositorySecrets), String> {
    let name = request.name.trim().to_owned();
    if name.is_empty() {
        return Err("a repository needs a name".to_owned());
    }
    let url = request.url.trim().to_owned();
    if url.is_empty() {
        return Err(format!("repository {name}: the URL is empty"));
    }
    if redact_url(&url) != url {
        return Err(format!(
            "repository {name}: the URL holds a password: put credentials in --token-file/--password-file"
        ));
    }
    let branch = match request.branch.trim() {
        "" => "main".to_owned(),
        branch => branch.to_owned(),
    };
    let path =
        stack_path(&request.path).map_err(|reason| format!("repository {name}: {reason}"))?;
    let interval_ms = match request.interval_ms {
        0 => DEFAULT_INTERVAL_MS,
        ms if ms < 1000 => {
            return Err(format!(
                "repository {name}: the interval must be at least 1s (webhooks make changes immediate)"
            ));
        }
        ms => ms,
    };
    let notify = match request.notify.trim() {
        "" => None,
        url if url.starts_with("http://") || url.starts_with("https://") => Some(url.to_owned()),
        url => {
            return Err(format!(
                "repository {name}: --notify {url:?} is not an http:// or https:// URL"
            ));
        }
    };
    let credentials = credentials(request.credentials.unwrap_or_default())
        .map_err(|reason| format!("repository {name}: {reason}"))?;
    let webhook_secret = Some(request.webhook_secret).filter(|s| !s.is_empty());
    Ok((
        Repository {
            name,
            url,
            branch,
            path,
            interval_ms,
            self_heal: request.self_heal,
            prune: request.prune,
            notify,
            created_at: now,
        },
        RepositorySecrets {
            credentials,
            webhook_secret,
        },
    ))
}

/// A stack path as the watcher reads it: relative to the repository's root, without `./`
/// or a trailing `/`; empty for the root.
fn stack_path(path: &str) -> Result<String, String> {
    let mut path = path.trim();
    while let Some(rest) = path.strip_prefix("./") {
        path = rest;
    }
    let path = path.trim_start_matches('/').trim_end_matches('/');
    let path = if path == "." { "" } else { path };
    if path.split('/').any(|part| part == "..") {
        return Err(format!(
            "--path {path:?} leaves the repository: give a path inside it"
        ));
    }
    Ok(path.to_owned())
}

/// At most one kind of credentials, whole.
fn credentials(given: RepositoryCredentials) -> Result<Option<GitCredentials>, String> {
    let RepositoryCredentials {
        token,
        username,
        password,
        ssh_private_key,
        ssh_passphrase,
    } = given;
    let mut kinds = Vec::new();
    if !token.is_empty() {
        kinds.push("a token");
    }
    if !username.is_empty() || !password.is_empty() {
        kinds.push("a username and password");
    }
    if !ssh_private_key.is_empty() {
        kinds.push("an ssh key");
    }
    if kinds.len() > 1 {
        return Err(format!(
            "give one kind of credentials, not {}",
            kinds.join(" and ")
        ));
    }
    if !ssh_passphrase.is_empty() && ssh_private_key.is_empty() {
        return Err("a passphrase without an ssh key (--ssh-key)".to_owned());
    }
    if !token.is_empty() {
        return Ok(Some(GitCredentials::Token { token }));
    }
    if !ssh_private_key.is_empty() {
        return Ok(Some(GitCredentials::SshKey {
            private_key: ssh_private_key,
            passphrase: Some(ssh_passphrase).filter(|p| !p.is_empty()),
        }));
    }
    match (username.is_empty(), password.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(GitCredentials::Basic { username, password })),
        (true, false) => Err("a password needs a --username".to_owned()),
        (false, true) => Err("--username needs a --password-file".to_owned()),
    }
}

fn no_repository(name: &str) -> Status {
    Status::not_found(format!(
        "no repository {name}: `swarm repo ls` lists the repositories"
    ))
}

pub async fn add(store: &StoreClient, request: AddRepositoryRequest) -> Result<(), Status> {
    let (repository, secrets) =
        declaration(request, millis(SystemTime::now())).map_err(Status::invalid_argument)?;
    let name = repository.name.clone();
    let url = redact_url(&repository.url);
    let exists = {
        let name = name.clone();
        store
            .read(move |store: &Store| store.data().repositories.contains_key(&name))
            .await
            .map_err(store_status)?
    };
    if exists {
        return Err(Status::already_exists(format!(
            "repository {name} already exists: `swarm repo rm {name}` first, or choose another name"
        )));
    }
    store
        .propose(&Command::AddRepository {
            repository,
            secrets,
        })
        .await
        .map_err(store_status)?;
    tracing::info!(repository = %name, %url, "repository added");
    Ok(())
}

pub async fn list(store: &StoreClient) -> Result<Vec<RepositoryView>, Status> {
    store
        .read(|store: &Store| {
            let data = store.data();
            data.repositories
                .values()
                .map(|record| RepositoryView::of(data, record, 0))
                .collect()
        })
        .await
        .map_err(store_status)
}

pub async fn inspect(store: &StoreClient, name: String) -> Result<RepositoryView, Status> {
    let found = {
        let name = name.clone();
        store
            .read(move |store: &Store| {
                let data = store.data();
                data.repositories
                    .get(&name)
                    .map(|record| RepositoryView::of(data, record, INSPECT_DEPLOYMENTS))
            })
            .await
            .map_err(store_status)?
    };
    found.ok_or_else(|| no_repository(&name))
}

/// The stacks of `stacks` that still have objects in `objects`.
fn stacks_with_objects(stacks: &BTreeSet<String>, objects: &ClusterState) -> Vec<String> {
    let in_stack =
        |stack: &str, origin: &swarm_api::state::Origin| origin.stack.as_deref() == Some(stack);
    stacks
        .iter()
        .filter(|stack| {
            objects.services.iter().any(|o| in_stack(stack, &o.origin))
                || objects.networks.iter().any(|o| in_stack(stack, &o.origin))
                || objects.configs.iter().any(|o| in_stack(stack, &o.origin))
                || objects.secrets.iter().any(|o| in_stack(stack, &o.origin))
        })
        .cloned()
        .collect()
}

/// The command that forgets repository `name` as `store` stands, with the plan that
/// removes its stacks' objects if `prune`; and what that plan removes ("service web_site").
fn removal(store: &Store, name: &str, prune: bool) -> Result<(Command, Vec<String>), Status> {
    let record = store
        .data()
        .repositories
        .get(name)
        .ok_or_else(|| no_repository(name))?;
    let objects = store.export();
    let owned = stacks_with_objects(&record.status.stacks, &objects);
    let actions = if prune && !owned.is_empty() {
        swarm_controller::deploy::plan_removal(&owned, &objects)
            .map_err(|e| Status::failed_precondition(e.to_string()))?
            .actions
    } else {
        Vec::new()
    };
    let removed = actions
        .iter()
        .map(|a| format!("{} {}", a.kind.as_str(), a.name))
        .collect();
    let command = Command::RemoveRepository {
        name: name.to_owned(),
        expected_version: objects.version,
        actions,
    };
    Ok((command, removed))
}

/// Forgets repository `name`; with `prune`, removes its stacks' objects in the same
/// command. Returns what was removed.
pub async fn remove(store: &StoreClient, name: String, prune: bool) -> Result<Vec<String>, Status> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (command, removed) = {
            let name = name.clone();
            store
                .read(move |store: &Store| removal(store, &name, prune))
                .await
                .map_err(store_status)??
        };
        match store.propose(&command).await {
            Ok(_) => {
                tracing::info!(repository = %name, prune, removed = removed.len(), "repository removed");
                return Ok(removed);
            }
            // Its stacks changed since they were read: plan their removal again.
            Err(StoreError::Conflict(_)) if attempt < ATTEMPTS => continue,
            Err(error) => return Err(store_status(error)),
        }
    }
}

/// Asks the leader's watcher to fetch repository `name` now; returns when that was asked.
pub async fn sync(store: &StoreClient, name: String) -> Result<u64, Status> {
    let exists = {
        let name = name.clone();
        store
            .read(move |store: &Store| store.data().repositories.contains_key(&name))
            .await
            .map_err(store_status)?
    };
    if !exists {
        return Err(no_repository(&name));
    }
    let at = millis(SystemTime::now());
    store
        .propose(&Command::SyncRepository {
            name,
            trigger: Trigger::Sync,
            at,
        })
        .await
        .map_err(store_status)?;
    Ok(at)
}

/// The Deployments of repository `name` (all repositories if empty), newest first.
pub async fn deployments(
    store: &StoreClient,
    name: String,
) -> Result<Vec<DeploymentSummary>, Status> {
    let found = {
        let name = name.clone();
        store
            .read(move |store: &Store| deployments_of(store.data(), &name))
            .await
            .map_err(store_status)?
    };
    found.ok_or_else(|| no_repository(&name))
}

/// The Deployments of repository `name` (all if empty), newest first; none if there is no
/// such repository.
fn deployments_of(data: &StoreData, name: &str) -> Option<Vec<DeploymentSummary>> {
    let repositories = &data.repositories;
    if !name.is_empty() && !repositories.contains_key(name) {
        return None;
    }
    let mut all: Vec<DeploymentSummary> = repositories
        .values()
        .filter(|r| name.is_empty() || r.repository.name == name)
        .flat_map(|r| r.deployments.iter().map(DeploymentSummary::of))
        .collect();
    // Within a millisecond, by the Raft index the id ends with.
    let index = |d: &DeploymentSummary| {
        d.id.rsplit_once('-')
            .and_then(|(_, index)| index.parse::<u64>().ok())
            .unwrap_or(0)
    };
    all.sort_by_key(|d| std::cmp::Reverse((d.created_at, index(d))));
    Some(all)
}

/// The Deployment `reference` names: its id, or a commit id prefix (the newest
/// Deployment of that commit).
fn find_deployment<'d>(data: &'d StoreData, reference: &str) -> Result<&'d Deployment, String> {
    let all = || {
        data.repositories
            .values()
            .flat_map(|r| r.deployments.iter())
    };
    if let Some(deployment) = all().find(|d| d.id == reference) {
        return Ok(deployment);
    }
    let is_commit_prefix = reference.len() >= 4 && reference.chars().all(|c| c.is_ascii_hexdigit());
    if !is_commit_prefix {
        return Err(format!(
            "no deployment {reference}: `swarm deploy ls` lists them (give an id or 4 or more hex digits of a commit)"
        ));
    }
    let prefix = reference.to_ascii_lowercase();
    let matching: Vec<&Deployment> = all().filter(|d| d.commit.id.starts_with(&prefix)).collect();
    let targets: BTreeSet<(&str, &str)> = matching
        .iter()
        .map(|d| (d.repository.as_str(), d.commit.id.as_str()))
        .collect();
    match targets.len() {
        0 => Err(format!(
            "no deployment of a commit {reference}: `swarm deploy ls` lists them"
        )),
        1 => Ok(matching
            .into_iter()
            .max_by_key(|d| d.created_at)
            .expect("one matches")),
        n => Err(format!(
            "{reference} names {n} deployments' commits: give more of the commit, or a deployment id ({})",
            matching
                .iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

pub async fn show(store: &StoreClient, reference: String) -> Result<DeploymentDetail, Status> {
    store
        .read(move |store: &Store| {
            let data = store.data();
            find_deployment(data, &reference).map(|deployment| DeploymentDetail {
                services: convergence(data, deployment),
                deployment: deployment.clone(),
            })
        })
        .await
        .map_err(store_status)?
        .map_err(Status::not_found)
}

pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("views serialise")
}

#[cfg(test)]
mod tests {
    use swarm_api::gitops::{Fetched, RepositoryError};
    use swarm_api::plan::Basis;
    use swarm_api::store::Outcome;
    use swarm_controller::source::WorkTree;

    use super::*;

    fn request() -> AddRepositoryRequest {
        AddRepositoryRequest {
            name: "app".into(),
            url: "https://git.example.com/team/app.git".into(),
            ..AddRepositoryRequest::default()
        }
    }

    #[test]
    fn a_declaration_gets_the_defaults() {
        let (repository, secrets) = declaration(request(), 7).unwrap();
        assert_eq!(repository.branch, "main");
        assert_eq!(repository.path, "");
        assert_eq!(repository.interval_ms, DEFAULT_INTERVAL_MS);
        assert_eq!(repository.created_at, 7);
        assert_eq!(repository.notify, None);
        assert_eq!(secrets, RepositorySecrets::default());
    }

    #[test]
    fn stack_paths_are_relative_to_the_root() {
        assert_eq!(stack_path("stacks/").unwrap(), "stacks");
        assert_eq!(stack_path("./stacks/prod/").unwrap(), "stacks/prod");
        assert_eq!(stack_path("/web.yaml").unwrap(), "web.yaml");
        assert_eq!(stack_path(".").unwrap(), "");
        assert!(
            stack_path("stacks/../../etc")
                .unwrap_err()
                .contains("leaves the repository")
        );
    }

    #[test]
    fn bad_declarations_are_refused_without_quoting_secrets() {
        let with = |change: fn(&mut AddRepositoryRequest)| {
            let mut request = request();
            change(&mut request);
            declaration(request, 0).unwrap_err()
        };
        assert_eq!(
            with(|r| r.url = " ".into()),
            "repository app: the URL is empty"
        );
        let error = with(|r| r.url = "https://me:hunter2@git.example.com/app.git".into());
        assert!(error.contains("--token-file/--password-file"), "{error}");
        assert!(!error.contains("hunter2"));
        assert!(with(|r| r.interval_ms = 500).contains("at least 1s"));
        assert!(with(|r| r.notify = "ftp://x".into()).contains("--notify"));
        let error = with(|r| {
            r.credentials = Some(RepositoryCredentials {
                token: "tok-secret".into(),
                ssh_private_key: "key-secret".into(),
                ..Default::default()
            })
        });
        assert_eq!(
            error,
            "repository app: give one kind of credentials, not a token and an ssh key"
        );
        assert!(
            with(|r| {
                r.credentials = Some(RepositoryCredentials {
                    password: "pw-secret".into(),
                    ..Default::default()
                })
            })
            .contains("needs a --username")
        );
        assert!(
            with(|r| {
                r.credentials = Some(RepositoryCredentials {
                    username: "me".into(),
                    ..Default::default()
                })
            })
            .contains("--password-file")
        );
        assert!(with(|r| r.name = "".into()).contains("needs a name"));
    }

    #[test]
    fn credentials_keep_their_kind() {
        let mut request = request();
        request.credentials = Some(RepositoryCredentials {
            username: "me".into(),
            password: "pw".into(),
            ..Default::default()
        });
        request.webhook_secret = "hook".into();
        let (_, secrets) = declaration(request, 0).unwrap();
        assert_eq!(
            secrets.credentials,
            Some(GitCredentials::Basic {
                username: "me".into(),
                password: "pw".into()
            })
        );
        assert_eq!(secrets.webhook_secret.as_deref(), Some("hook"));
    }

    #[test]
    fn the_state_says_where_a_repository_stands() {
        let mut status = RepositoryStatus::default();
        assert_eq!(RepositoryState::of(&status), RepositoryState::Pending);
        status.fetched = Some(Fetched {
            commit: "b".into(),
            at: 1,
        });
        status.processed = Some("a".into());
        assert_eq!(RepositoryState::of(&status), RepositoryState::Syncing);
        status.processed = Some("b".into());
        assert_eq!(RepositoryState::of(&status), RepositoryState::Synced);
        status.drift.insert("web_site".into(), Vec::new());
        assert_eq!(RepositoryState::of(&status), RepositoryState::Drifted);
        status.error = Some(RepositoryError {
            message: "unreachable".into(),
            since: 1,
            attempts: 2,
        });
        assert_eq!(RepositoryState::of(&status), RepositoryState::Error);
    }

    fn deployment(repository: &str, index: u64, commit: &str) -> Deployment {
        Deployment {
            id: format!("{repository}-{index}"),
            repository: repository.into(),
            commit: Commit {
                id: commit.into(),
                author_name: "Ada".into(),
                author_email: "ada@example.com".into(),
                summary: "scale web".into(),
                time: 0,
            },
            trigger: Trigger::Poll,
            created_at: index,
            updated_at: index,
            plan: swarm_api::plan::Plan {
                format: swarm_api::plan::PLAN_FORMAT,
                basis: Default::default(),
                actions: Vec::new(),
            },
            outcome: DeploymentOutcome::NoOp,
        }
    }

    fn with_deployments(deployments: Vec<Deployment>) -> StoreData {
        let mut data = StoreData::default();
        for deployment in deployments {
            let name = deployment.repository.clone();
            let (repository, secrets) = declaration(
                AddRepositoryRequest {
                    name: name.clone(),
                    url: "/srv/git/app".into(),
                    ..AddRepositoryRequest::default()
                },
                0,
            )
            .unwrap();
            data.repositories
                .entry(name)
                .or_insert(RepositoryRecord {
                    repository,
                    secrets,
                    status: Default::default(),
                    deployments: Vec::new(),
                })
                .deployments
                .push(deployment);
        }
        data
    }

    #[test]
    fn a_deployment_is_found_by_id_or_commit_prefix() {
        let data = with_deployments(vec![
            deployment("app", 3, "1a2b3c4d5e6f7a8b"),
            deployment("app", 9, "1a2b3c4d5e6f7a8b"),
            deployment("app", 12, "1a2bffff00001111"),
            deployment("ops", 4, "99aa00"),
        ]);
        assert_eq!(find_deployment(&data, "app-3").unwrap().id, "app-3");
        // The newest of a commit's Deployments.
        assert_eq!(find_deployment(&data, "1a2b3c").unwrap().id, "app-9");
        assert_eq!(find_deployment(&data, "99AA").unwrap().id, "ops-4");
        let error = find_deployment(&data, "1a2b").unwrap_err();
        assert!(error.contains("give more of the commit"), "{error}");
        assert!(
            find_deployment(&data, "abc")
                .unwrap_err()
                .contains("no deployment abc")
        );
        assert!(
            find_deployment(&data, "dead")
                .unwrap_err()
                .contains("no deployment of a commit")
        );
    }

    /// A store where repository `app` deployed stack `web` (service `web_site`, 2
    /// replicas) at commit `c1`, beside a service `tools` created by hand.
    fn deployed() -> Store {
        let mut store = Store::default();
        let (repository, secrets) = declaration(
            AddRepositoryRequest {
                name: "app".into(),
                url: "/srv/git/app".into(),
                ..AddRepositoryRequest::default()
            },
            0,
        )
        .unwrap();
        let applied = |outcome| assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
        applied(store.apply_command(
            1,
            Command::InitCluster(swarm_api::store::Cluster {
                id: "c".into(),
                created_at: 0,
                heartbeat_period_ms: 1000,
                missed_heartbeats_for_down: 3,
                certificate_validity_ms: 1000,
                worker_token_secret: String::new(),
                manager_token_secret: String::new(),
                address_pool: Default::default(),
            }),
        ));
        applied(store.apply_command(
            2,
            Command::AddRepository {
                repository,
                secrets,
            },
        ));
        let dir = tempfile::tempdir().unwrap();
        let load = |file: &str, yaml: &str| {
            let path = dir.path().join(file);
            std::fs::write(&path, yaml).unwrap();
            swarm_controller::stack::load(&WorkTree, &path, file, &|_| None)
                .stack
                .unwrap()
        };
        let web = load(
            "web.yaml",
            "services:\n  site:\n    image: busybox\n    deploy:\n      replicas: 2\n",
        );
        let current = store.export();
        let plan =
            swarm_controller::plan::plan(&[web], &current, &Default::default(), Basis::default())
                .unwrap();
        let mut deployment = deployment("app", 0, "c1");
        deployment.plan = plan;
        deployment.outcome = DeploymentOutcome::Applied;
        applied(store.apply_command(
            3,
            Command::Deploy {
                file_contents: Default::default(),
                expected_version: current.version,
                deployment: Box::new(deployment),
                stacks: ["web".to_owned()].into(),
            },
        ));
        let tools = load("tools.yaml", "services:\n  tools:\n    image: busybox\n");
        let plan = swarm_controller::plan::plan(
            &[tools],
            &store.export(),
            &Default::default(),
            Basis::default(),
        )
        .unwrap();
        applied(store.apply_command(
            4,
            Command::ApplyPlan {
                file_contents: Default::default(),
                expected_version: None,
                actions: plan.actions,
                registry_auth: Default::default(),
                override_git: false,
            },
        ));
        store
    }

    fn services(store: &Store) -> Vec<String> {
        store
            .export()
            .services
            .into_iter()
            .map(|s| s.spec.name)
            .collect()
    }

    #[test]
    fn removing_a_repository_keeps_its_services_unless_pruned() {
        let mut store = deployed();
        assert_eq!(services(&store), ["tools_tools", "web_site"]);
        let view = RepositoryView::of(store.data(), &store.data().repositories["app"], 5);
        assert_eq!(
            view.services,
            [("web_site".to_owned(), "c1".to_owned())].into()
        );
        assert_eq!(view.deployments[0].id, "app-3");

        let (command, removed) = removal(&store, "app", false).unwrap();
        assert!(removed.is_empty());
        let mut kept = store.clone();
        assert!(matches!(
            kept.apply_command(5, command),
            Outcome::Applied { .. }
        ));
        assert_eq!(services(&kept), ["tools_tools", "web_site"]);
        assert!(kept.data().repositories.is_empty());

        let (command, removed) = removal(&store, "app", true).unwrap();
        assert_eq!(removed, ["service web_site", "network web_default"]);
        assert!(matches!(
            store.apply_command(5, command),
            Outcome::Applied { .. }
        ));
        assert_eq!(services(&store), ["tools_tools"]);

        let error = removal(&store, "app", true).unwrap_err();
        assert_eq!(error.code(), tonic::Code::NotFound);
    }

    #[test]
    fn a_deployment_shows_how_its_services_converge() {
        let store = deployed();
        let data = store.data();
        let deployment = find_deployment(data, "app-3").unwrap();
        let services = convergence(data, deployment);
        assert_eq!(services.len(), 1);
        let site = &services[0];
        assert_eq!(
            (site.name.as_str(), site.op, site.exists),
            ("web_site", Op::Create, true)
        );
        // No orchestrator ran: nothing runs yet of the 2 replicas.
        assert_eq!((site.running, site.desired), (0, 2));
        assert_eq!(site.commit.as_deref(), Some("c1"));
    }

    #[test]
    fn deployments_are_listed_newest_first() {
        let mut data = with_deployments(vec![
            deployment("app", 9, "a"),
            deployment("app", 10, "b"),
            deployment("ops", 4, "c"),
        ]);
        // Recorded in the same millisecond: the index decides.
        for record in data.repositories.values_mut() {
            for deployment in &mut record.deployments {
                deployment.created_at = 100;
            }
        }
        let ids = |list: Vec<DeploymentSummary>| list.into_iter().map(|d| d.id).collect::<Vec<_>>();
        assert_eq!(
            ids(deployments_of(&data, "").unwrap()),
            ["app-10", "app-9", "ops-4"]
        );
        assert_eq!(ids(deployments_of(&data, "ops").unwrap()), ["ops-4"]);
        assert!(deployments_of(&data, "nope").is_none());
    }

    #[test]
    fn views_hold_no_secret() {
        let mut data = with_deployments(vec![deployment("app", 3, "1a2b")]);
        let record = data.repositories.get_mut("app").unwrap();
        record.secrets = RepositorySecrets {
            credentials: Some(GitCredentials::Token {
                token: "tok-secret".into(),
            }),
            webhook_secret: Some("hook-secret".into()),
        };
        let view = RepositoryView::of(&data, &data.repositories["app"], INSPECT_DEPLOYMENTS);
        let json = to_json(&view);
        assert!(
            !json.contains("tok-secret") && !json.contains("hook-secret"),
            "{json}"
        );
        assert_eq!(view.credentials.as_deref(), Some("token"));
        assert!(view.webhook_secret);
        assert_eq!(view.deployments.len(), 1);
    }
}
