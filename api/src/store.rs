//! The replicated store's vocabulary: every change to the cluster is one [`Command`] in the
//! Raft log, and the store is a deterministic function of those commands. Commands carry
//! everything that is not deterministic (ids, timestamps): the proposer decides them, every
//! replica applies the same values.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::auth::RegistryAuth;
use crate::files::FileContents;
use crate::gitops::{
    Deployment, DeploymentOutcome, Fetched, Repository, RepositoryError, RepositoryRecord,
    RepositorySecrets, Trigger,
};
use crate::plan::{Action, FieldChange, Kind};
use crate::task::{DesiredState, Task, TaskStatus};
use crate::units::Millis;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// The first command of a cluster: its identity and settings.
    InitCluster(Cluster),
    AddNode(Node),
    UpdateNode(NodeUpdate),
    /// Removes a node for good: its certificate is refused from then on.
    RemoveNode {
        id: String,
    },
    /// A node becomes a Raft voter with `raft_id` (a manager joining, or a promoted worker
    /// starting its replica). Carried by the conf change that adds the voter, so the store
    /// and the Raft configuration change at the same index.
    JoinRaft {
        id: String,
        raft_id: u64,
    },
    /// A manager stops being a voter and becomes a worker (`swarm node demote`, or a manager
    /// leaving); carried by the conf change that removes the voter.
    LeaveRaft {
        id: String,
    },
    /// Status changes seen by a manager's dispatcher, batched into one entry.
    NodeStatuses {
        at: Millis,
        changes: Vec<NodeStatusChange>,
    },
    /// A whole plan, applied atomically. With `expected_version` (the state version the
    /// plan was computed against), refused if any object it touches changed after that
    /// version: changes to other objects meanwhile do not matter.
    ApplyPlan {
        expected_version: Option<u64>,
        actions: Vec<Action>,
        /// Registry credentials by service name (`--with-registry-auth`), for services the
        /// plan leaves in place: they replace what the store keeps for that service.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        registry_auth: BTreeMap<String, RegistryAuth>,
        /// The contents of the configs and secrets the plan creates or changes, by digest:
        /// beside the actions, never in them, so no rendering of the plan shows them.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        file_contents: FileContents,
        /// Whether the plan may change stacks a repository owns (`service update|scale`,
        /// `swarm apply --force`): they are then drifted from git. Without it such a plan
        /// is refused, naming the repository.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        override_git: bool,
    },
    /// `swarm repo add`.
    AddRepository {
        repository: Repository,
        secrets: RepositorySecrets,
    },
    /// `swarm repo rm`, with the plan that removes its stacks (`--prune`; empty otherwise:
    /// they stay, no longer managed), applied with it.
    RemoveRepository {
        name: String,
        expected_version: u64,
        actions: Vec<Action>,
    },
    /// Fetch a repository now (`swarm repo sync`, or a push webhook any manager received and
    /// verified): the leader's watcher follows the store and fetches when it sees one.
    SyncRepository {
        name: String,
        trigger: Trigger,
        at: Millis,
    },
    /// The watcher fetched a repository's branch (written when the head moved or an
    /// error clears, not on every poll).
    RepositoryFetched {
        name: String,
        fetched: Fetched,
    },
    /// The watcher could not fetch or process a repository: nothing else changes.
    RepositoryFailed {
        name: String,
        error: RepositoryError,
    },
    /// A commit processed, as one entry: its plan (empty for a no-op, invalid or refused
    /// commit) and its Deployment, whose id the store gives from the index. `stacks` are
    /// the stacks the commit's files declare: the repository owns them from then on.
    /// Refused if the commit was already processed (a new leader resuming never applies it
    /// twice) or, like `ApplyPlan`, if an object the plan touches changed after
    /// `expected_version`. A plan that touches a stack another repository owns, or one
    /// deployed by hand, is recorded as `refused` and changes nothing.
    Deploy {
        expected_version: u64,
        deployment: Box<Deployment>,
        stacks: BTreeSet<String>,
        /// The contents of the commit's configs and secrets, by digest (as `ApplyPlan`'s).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        file_contents: FileContents,
    },
    /// An applied Deployment converged or failed.
    SetDeploymentOutcome {
        repository: String,
        id: String,
        outcome: DeploymentOutcome,
        at: Millis,
    },
    /// Which of a repository's services differ from its applied commit (written when it
    /// changes).
    RepositoryDrift {
        name: String,
        drift: BTreeMap<String, Vec<FieldChange>>,
    },
    /// A new secret for a join token (`swarm join-token --rotate`).
    RotateJoinToken {
        role: NodeRole,
        secret: String,
    },
    /// Autolock on with this unlock key (`init --autolock`, `cluster update --autolock=true`,
    /// `unlock-key --rotate`), or off (`None`).
    SetAutolock {
        unlock_key: Option<String>,
    },
    /// The orchestrator's and the scheduler's decisions of one pass. Refused when another
    /// pass wrote tasks since `expected_version` (two leaders for a moment): it is redone.
    WriteTasks {
        expected_version: u64,
        changes: Vec<TaskChange>,
    },
    /// `swarm service rollback`: the service's previous spec becomes its spec again (and the
    /// current one its previous spec, so rolling back twice goes forward again); it rolls
    /// out with its `rollback_config`, its update status `rollback_started` from `at`.
    /// Refused if the service changed after `expected_version`.
    RollbackService {
        expected_version: u64,
        service_id: String,
        at: Millis,
    },
    /// What a node's agent saw of its tasks.
    TaskStatuses {
        node_id: String,
        updates: Vec<TaskStatusUpdate>,
    },
}

/// One decision about a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskChange {
    Create(Box<Task>),
    /// Scheduled onto a node.
    Assign {
        id: String,
        node_id: String,
    },
    /// A status the managers decide: pending (with the scheduler's reasons), orphaned.
    Status {
        id: String,
        status: TaskStatus,
    },
    Desire {
        id: String,
        desired: DesiredState,
    },
    /// Dropped from the history.
    Remove {
        id: String,
    },
    /// The rollout of a service's spec reached a new state.
    UpdateStatus {
        service_id: String,
        status: crate::rollout::UpdateStatus,
    },
    /// An update failed (`failure_action: rollback`): the service's previous spec becomes
    /// its spec again and the failed one its previous spec, as `swarm service rollback`
    /// would; its rollout is then `status` (rollback started).
    RollBack {
        service_id: String,
        status: crate::rollout::UpdateStatus,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatusUpdate {
    pub id: String,
    pub status: TaskStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: String,
    pub created_at: Millis,
    /// How often nodes report (default 1 s).
    pub heartbeat_period_ms: u64,
    /// Missed periods before a node is Down (default 3).
    pub missed_heartbeats_for_down: u32,
    /// How long node certificates are valid (default 90 days); nodes renew them before.
    #[serde(default = "default_certificate_validity_ms")]
    pub certificate_validity_ms: u64,
    /// Join token secrets by role; never exported.
    pub worker_token_secret: String,
    pub manager_token_secret: String,
    /// Where nodes' task subnets come from.
    #[serde(default)]
    pub address_pool: AddressPool,
}

/// The cluster's pool of task addresses: each node leases one subnet of `subnet_size` bits
/// from `base` when it joins (Docker's `--default-addr-pool`, default 198.19.0.0/16 in /24s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPool {
    pub base: ipnet::Ipv4Net,
    pub subnet_size: u8,
}

impl Default for AddressPool {
    fn default() -> Self {
        AddressPool {
            base: "198.19.0.0/16".parse().expect("a valid CIDR"),
            subnet_size: 24,
        }
    }
}

impl AddressPool {
    /// Where networks without a `--subnet` get theirs: Docker's default-addr-pool for
    /// networks, 10.0.0.0/8, in /20s rather than Docker's /24s: a stack's services share
    /// its default network, and 4,094 addresses hold thousands of replicas where 254 do
    /// not (4,096 networks remain). The nodes' pool (198.19.0.0/16 by default) lies outside
    /// it; a node pool configured inside it is skipped subnet by subnet, so the two never
    /// overlap.
    pub fn networks() -> Self {
        AddressPool {
            base: "10.0.0.0/8".parse().expect("a valid CIDR"),
            subnet_size: 20,
        }
    }
}

/// A network's address space, decided by the store when the network is created (its own
/// `--subnet`, or one of the networks' pool) and released when it is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAllocation {
    pub subnet: ipnet::Ipv4Net,
    /// Never given to a task.
    pub gateway: std::net::Ipv4Addr,
    /// The network's VXLAN identifier, unique in the cluster; 0 until the store gave one
    /// (an allocation recorded before VNIs were).
    #[serde(default)]
    pub vni: u32,
}

/// Docker's default certificate lifetime: 90 days.
pub const DEFAULT_CERTIFICATE_VALIDITY_MS: u64 = 90 * 24 * 3600 * 1000;

fn default_certificate_validity_ms() -> u64 {
    DEFAULT_CERTIFICATE_VALIDITY_MS
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Manager,
    Worker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Unknown,
    Ready,
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    pub role: NodeRole,
    pub availability: Availability,
    pub status: NodeStatus,
    /// When the status last changed.
    pub status_since: Millis,
    pub labels: BTreeMap<String, String>,
    /// Where other nodes reach it (`host:port`).
    pub address: String,
    /// The Raft replica id of a manager; `None` for a worker, and for a node promoted to
    /// manager whose replica has not joined yet.
    pub raft_id: Option<u64>,
    /// What the node said of itself when it joined.
    #[serde(default)]
    pub description: NodeDescription,
    /// The subnet its tasks' addresses come from, leased from the cluster's pool when the
    /// node was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<ipnet::Ipv4Net>,
    /// Why the node's worker cannot run tasks (no runc, say), as its heartbeats last said;
    /// `None` while it can. The scheduler places nothing on such a node; `node ls` and
    /// `node inspect` show it as the node's status message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_error: Option<String>,
    /// The published ports (`8080/tcp`, sorted) another process on the node holds, as its
    /// heartbeats last said: the node's routing mesh leaves them to that process (the other
    /// nodes answer them) until it can hold them itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports_taken: Vec<String>,
}

impl Node {
    /// The node's status message (Docker's `Status.Message`): what keeps a node that
    /// answers from running tasks, or from answering published ports.
    pub fn status_message(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(error) = &self.worker_error {
            parts.push(format!("worker not running: {error}"));
        }
        parts.extend(self.ports_taken.iter().map(|port| port_taken_message(port)));
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// What `node ls`, `node ps` and `service ps` say of a published port (`8080/tcp`) another
/// process holds on a node.
pub fn port_taken_message(port: &str) -> String {
    format!("port {port} taken by another process on this node")
}

/// A node's platform and resources, as it reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescription {
    /// `linux`.
    pub os: String,
    /// `x86_64`, `aarch64`.
    pub arch: String,
    /// CPUs × 10⁹; 0 when unknown.
    pub nano_cpus: u64,
    /// 0 when unknown.
    pub memory_bytes: u64,
    /// The UDP port it takes overlay (VXLAN) traffic on, at its address's host.
    #[serde(default = "default_data_path_port")]
    pub data_path_port: u16,
    /// The TCP port its metrics endpoint listens on (`--metrics-addr`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<u16>,
}

fn default_data_path_port() -> u16 {
    crate::endpoints::VXLAN_PORT
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUpdate {
    pub id: String,
    pub availability: Option<Availability>,
    pub role: Option<NodeRole>,
    pub labels_add: BTreeMap<String, String>,
    pub labels_remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatusChange {
    pub id: String,
    pub status: NodeStatus,
    /// The node's worker error as last heard (see `Node::worker_error`); replaces the
    /// node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_error: Option<String>,
    /// The published ports another process holds on the node, as last heard (see
    /// `Node::ports_taken`); replaces the node's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports_taken: Vec<String>,
}

/// What applying a command did, for the proposer's client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Applied {
        version: u64,
    },
    /// The command was valid Raft-wise but refused by the store; nothing changed.
    Rejected(Rejection),
}

/// Why the store refused a command: whether deciding it again can succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// What the command was decided against changed since: deciding it again over the
    /// state as it is now may succeed.
    #[error("{0}")]
    Conflict(Conflict),
    /// The command is not allowed over this state, whoever decides it again: the reasons.
    #[error("{}", reasons.join("; "))]
    Invalid { reasons: Vec<String> },
}

impl Rejection {
    pub fn invalid(reason: impl Into<String>) -> Self {
        Rejection::Invalid {
            reasons: vec![reason.into()],
        }
    }
}

impl From<String> for Rejection {
    fn from(reason: String) -> Self {
        Rejection::invalid(reason)
    }
}

/// A version check that failed: what moved, the version the command was decided against,
/// and the version of what moved now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub subject: ConflictSubject,
    pub expected: u64,
    pub actual: u64,
}

/// What a version check covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictSubject {
    /// A service, network, config or secret the command touches (for a create: the name
    /// was taken meanwhile).
    Object { kind: Kind, name: String },
    /// The tasks (the orchestrator's `WriteTasks`).
    Tasks,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Conflict {
            expected, actual, ..
        } = self;
        match &self.subject {
            ConflictSubject::Object { kind, name } => write!(
                f,
                "{} {name} changed since version {expected} (now {actual}): decide again over the state as it is",
                kind.as_str()
            ),
            ConflictSubject::Tasks => write!(
                f,
                "tasks were written since version {expected} (now {actual}): decide again"
            ),
        }
    }
}

/// Everything the store holds: what a snapshot contains.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreData {
    /// The Raft index of the last command applied.
    pub version: u64,
    /// The cluster's unlock key (`SWMKEY-1-…`) while autolock is on: replicated so that
    /// every manager wraps its log's key with it; the log itself is encrypted. Never exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_key: Option<String>,
    pub cluster: Option<Cluster>,
    pub nodes: BTreeMap<String, Node>,
    /// Nodes removed from the cluster, whose certificates are refused.
    #[serde(default)]
    pub removed_nodes: std::collections::BTreeSet<String>,
    /// The cluster's objects; `objects.version` is the index of their last change.
    pub objects: Objects,
    /// The index of each object's last change, by kind and name (swarmkit's per-object
    /// version): what a command's version check compares, so that changes to different
    /// objects never conflict. Beside the objects, not in them: the export format stays.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub object_versions: BTreeMap<Kind, BTreeMap<String, u64>>,
    #[serde(default)]
    pub tasks: BTreeMap<String, Task>,
    /// The index of the last `WriteTasks`, or of the last plan that changed a service's spec:
    /// a pass decided before either is refused.
    #[serde(default)]
    pub tasks_version: u64,
    /// Each service's spec before its last change, by service id: what `swarm service
    /// rollback` goes back to.
    #[serde(default)]
    pub previous_specs: BTreeMap<String, crate::spec::ServiceSpec>,
    /// Where each service's last update (or rollback) stands, by service id; none for a
    /// service whose spec has not changed since it was created or last changed by hand
    /// and whose tasks need no replacing.
    #[serde(default)]
    pub update_status: BTreeMap<String, crate::rollout::UpdateStatus>,
    /// Each service's registry credentials, by service id: kept apart from the specs so
    /// that no plan, export or `service inspect` shows them; on disk only inside the
    /// encrypted Raft log, as everything in the store.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registry_auth: BTreeMap<String, RegistryAuth>,
    /// The git repositories the leader watches, by name, each with its secrets, status and
    /// Deployments. A stack belongs to the repository whose status lists it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub repositories: BTreeMap<String, RepositoryRecord>,
    /// For each git-managed service (by id), the commit that last changed its spec.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_commits: BTreeMap<String, String>,
    /// Each network's address space, by network name: beside the objects, not in their
    /// specs (specs are what users write and plans compare).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub network_allocations: BTreeMap<String, NetworkAllocation>,
    /// Each service's virtual IP on each of its networks (endpoint mode `vip`), by service
    /// id: given when the service is created or attached to a network, freed with it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_vips: BTreeMap<String, Vec<crate::task::NetworkAddress>>,
    /// The ports the cluster published for ingress ports given no number, by service id
    /// (`EndpointSpec::published_ports` applies them): kept while the service keeps such a
    /// port, freed with it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub assigned_ports: BTreeMap<String, Vec<crate::spec::AssignedPort>>,
    /// Config and secret contents by digest: each version an object or a task that has not
    /// stopped names (`FileObjectSpec::digest`, `FileReference::digest`). Beside the
    /// objects, so no export, plan or `inspect` shows them; stored as plainly as the rest of
    /// the Raft log.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub file_contents: FileContents,
}

impl StoreData {
    /// The repository that owns `stack`, if one does.
    pub fn stack_owner(&self, stack: &str) -> Option<&str> {
        self.repositories
            .values()
            .find(|record| record.status.stacks.contains(stack))
            .map(|record| record.repository.name.as_str())
    }
}

/// Services, networks, configs and secrets: the state a plan is computed against.
pub type Objects = crate::state::ClusterState;

/// What a node keeps about itself in its data dir (`node.json`), beside its certificates and
/// its Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub node_id: String,
    pub cluster_id: String,
    pub role: NodeRole,
    /// The Raft replica id of a manager.
    pub raft_id: Option<u64>,
    pub advertise_addr: String,
    /// The managers' addresses as last heard, for a worker to reach the cluster after a
    /// restart even when the manager it joined through is gone.
    #[serde(default)]
    pub managers: Vec<String>,
}
