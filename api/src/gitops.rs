//! GitOps in the replicated state: the repositories the leader watches, what it last saw and
//! did with each, and the Deployments (one per processed commit) that make the history
//! `swarm deploy ls` shows.
//!
//! A repository owns the stacks its files declare: no other repository and no imperative
//! `stack deploy` changes them (`swarm apply --force` does, and the service is then drifted
//! until git says the same or the watcher heals it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::plan::{FieldChange, Plan};
use crate::units::Millis;

/// How often a repository is fetched unless it says otherwise (Argo CD polls every 3
/// minutes; a webhook makes it immediate).
pub const DEFAULT_INTERVAL_MS: u64 = 15_000;

/// Deployments kept per repository: older ones are dropped as new ones come.
pub const DEPLOYMENT_HISTORY: usize = 100;

/// A repository as `swarm repo add` declared it. Holds no secret: those are
/// [`RepositorySecrets`], kept beside it and never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub name: String,
    /// As given (a local path, `file://`, `https://`, `ssh://` or `user@host:path`); never
    /// with a password in it (`repo add` refuses one: credentials go in files).
    pub url: String,
    pub branch: String,
    /// The directory (or one file) the stack files are under, from the repository's root;
    /// empty for the root.
    pub path: String,
    pub interval_ms: u64,
    /// Whether the watcher restores the git spec of a service changed by hand.
    pub self_heal: bool,
    /// Whether `repo rm` removes the repository's stacks (otherwise they stay, unmanaged).
    pub prune: bool,
    /// Where each Deployment's state changes are POSTed as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    pub created_at: Millis,
}

/// What the watcher needs to fetch and to check webhooks: replicated with the repository so
/// any leader can use them, never printed, exported or sent to a client.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositorySecrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<GitCredentials>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

impl fmt::Debug for RepositorySecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepositorySecrets")
            .field("credentials", &self.credentials)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// How the watcher authenticates to a remote.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GitCredentials {
    /// An access token (https), sent as the password.
    Token { token: String },
    /// https basic authentication.
    Basic { username: String, password: String },
    /// An ssh private key's content (OpenSSH or PEM): the leader writes it to a file only
    /// it can read before it fetches.
    SshKey {
        private_key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase: Option<String>,
    },
}

impl GitCredentials {
    /// What kind of credentials, for `repo inspect` (never their value).
    pub fn kind(&self) -> &'static str {
        match self {
            GitCredentials::Token { .. } => "token",
            GitCredentials::Basic { .. } => "basic",
            GitCredentials::SshKey { .. } => "ssh-key",
        }
    }
}

impl fmt::Debug for GitCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitCredentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            other => write!(f, "{}(<redacted>)", other.kind()),
        }
    }
}

/// What the watcher last saw and did with a repository: written by the leader through Raft
/// when it changes (an unchanged poll writes nothing).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepositoryStatus {
    /// The branch's head at the last successful fetch, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched: Option<Fetched>,
    /// The last commit processed (a Deployment exists for it, whatever its outcome): never
    /// processed again, unless a newer one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed: Option<String>,
    /// The last commit whose plan was applied (or was a no-op): what runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
    /// Why the last fetch or deployment attempt failed; cleared by the next success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RepositoryError>,
    /// The stacks this repository's files declared at the last applied commit: it owns them.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub stacks: BTreeSet<String>,
    /// The last fetch asked for (`SyncRepository`), at the index that asked: the leader's
    /// watcher fetches once for each new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncRequest>,
    /// Services whose spec in the cluster differs from the applied commit's, by name, with
    /// the fields that differ (`before`: git, `after`: the cluster).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drift: BTreeMap<String, Vec<FieldChange>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub trigger: Trigger,
    pub at: Millis,
    /// The Raft index of the request: tells one request from the next.
    pub index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    pub commit: String,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryError {
    pub message: String,
    /// When it first happened, and how many attempts in a row failed since.
    pub since: Millis,
    pub attempts: u32,
}

/// A repository in the store: what was declared, its secrets, where it stands, and its
/// Deployments (oldest first, at most [`DEPLOYMENT_HISTORY`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositoryRecord {
    pub repository: Repository,
    #[serde(default)]
    pub secrets: RepositorySecrets,
    #[serde(default)]
    pub status: RepositoryStatus,
    #[serde(default)]
    pub deployments: Vec<Deployment>,
}

/// What the leader did with one commit (or with a drift it healed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// `<repository>-<Raft index>`: unique, and sorts with time within a repository.
    pub id: String,
    pub repository: String,
    pub commit: Commit,
    pub trigger: Trigger,
    /// When it was recorded, and when its outcome last changed.
    pub created_at: Millis,
    pub updated_at: Millis,
    /// The plan as applied (empty for a no-op, an invalid or refused commit).
    pub plan: Plan,
    pub outcome: DeploymentOutcome,
}

/// The commit a Deployment is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub id: String,
    pub author_name: String,
    pub author_email: String,
    /// The message's first line.
    pub summary: String,
    /// When it was committed, in seconds since the Unix epoch.
    pub time: i64,
}

/// What made the watcher process a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// The interval's fetch found it.
    Poll,
    /// A push webhook.
    Webhook,
    /// `swarm repo sync`, or the repository was just added.
    Sync,
    /// `--self-heal` restored git's spec over a change made by hand.
    SelfHeal,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Poll => "poll",
            Trigger::Webhook => "webhook",
            Trigger::Sync => "sync",
            Trigger::SelfHeal => "self-heal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum DeploymentOutcome {
    /// The plan is in the store; its services are rolling out.
    Applied,
    /// Every service the plan changed runs its new spec.
    Converged,
    /// An update paused or rolled back: the reason, naming the service.
    Failed { reason: String },
    /// The commit changed nothing the cluster runs.
    NoOp,
    /// The stack files have errors (`file:line:column: error: …` each): nothing changed.
    Invalid { findings: Vec<String> },
    /// The plan was refused (a stack owned elsewhere, the store's checks): nothing changed.
    Refused { reason: String },
}

impl DeploymentOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeploymentOutcome::Applied => "applied",
            DeploymentOutcome::Converged => "converged",
            DeploymentOutcome::Failed { .. } => "failed",
            DeploymentOutcome::NoOp => "no-op",
            DeploymentOutcome::Invalid { .. } => "invalid",
            DeploymentOutcome::Refused { .. } => "refused",
        }
    }

    /// Whether the outcome can still change (an applied plan converges or fails).
    pub fn is_final(&self) -> bool {
        !matches!(self, DeploymentOutcome::Applied)
    }
}

/// What `repo add --notify URL` receives: one JSON object per state a Deployment reaches
/// (`applied`, then `converged` or `failed`; or at once `no-op`, `invalid`, `refused`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Always `deployment`.
    pub event: String,
    pub repository: String,
    pub deployment: String,
    pub commit: Commit,
    pub trigger: Trigger,
    pub outcome: DeploymentOutcome,
    /// What the plan did, one line per action (`update service web_site`).
    pub changes: Vec<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Notification {
    pub fn of(deployment: &Deployment) -> Notification {
        Notification {
            event: "deployment".to_owned(),
            repository: deployment.repository.clone(),
            deployment: deployment.id.clone(),
            commit: deployment.commit.clone(),
            trigger: deployment.trigger,
            outcome: deployment.outcome.clone(),
            changes: deployment
                .plan
                .actions
                .iter()
                .map(|a| format!("{} {} {}", a.op.as_str(), a.kind.as_str(), a.name))
                .collect(),
            created_at: deployment.created_at,
            updated_at: deployment.updated_at,
        }
    }
}
