//! The replicated state machine: one `apply` over the [`Command`]s of the Raft log, like
//! Nomad's fsm.go. Deterministic: the same commands give the same state on every manager.
//! An entry that does not decode is a bug or corruption, and applying it panics rather than
//! letting replicas diverge. A command that is well formed but not allowed (removing an
//! unknown node, a plan against a moved state) is rejected as a whole and changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sha2::{Digest, Sha256};
use swarm_api::plan::{Action, Kind, ObjectSpec, Op};
use swarm_api::spec::Named;
use swarm_api::state::{ClusterState, Object};
use swarm_api::store::{
    Command, Conflict, ConflictSubject, NodeRole, Outcome, Rejection, StoreData, TaskChange,
};
use swarm_api::task::{Task, TaskState};

use crate::raft::replica::StateMachine;

mod assignments;
pub mod client;
mod endpoints;
pub mod events;
mod files;
#[cfg(test)]
pub(crate) mod fixtures;
mod gitops;
mod networks;
mod ports;
mod validate;
mod watch;
pub use assignments::{Assignment, Assignments};
pub use endpoints::Endpoints;
pub use watch::{CAPACITY, Changed, Changes, Missed, Receiver, Subscription};

/// What changed, for watchers (leader loops, clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub object: &'static str,
    pub name: String,
    pub change: Change,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Removed,
}

#[derive(Debug, Default, Clone)]
pub struct Store {
    data: StoreData,
    /// Events of the last `apply`, for whoever drives the store to hand on.
    events: Vec<Event>,
    /// The tasks assigned to each node, and each task's node: derived from `data.tasks`
    /// (never serialised), so that a node's assignments cost its tasks, not all of them.
    tasks_by_node: HashMap<String, BTreeSet<String>>,
    node_of_task: HashMap<String, String>,
    /// Each service's tasks (by service id), and each task's service: derived likewise, so
    /// that a pass over one service costs its tasks.
    tasks_by_service: HashMap<String, BTreeSet<String>>,
    service_of_task: HashMap<String, String>,
    /// Where each entry's changes go (see `watch`).
    watch: watch::Publisher,
}

impl Store {
    pub fn data(&self) -> &StoreData {
        &self.data
    }

    /// The objects as `swarm state export` writes them: no secret material.
    pub fn export(&self) -> ClusterState {
        self.data.objects.clone()
    }

    /// Replaces the objects without a plan, for tests of what reads them.
    #[cfg(test)]
    pub(crate) fn replace_objects_for_tests(&mut self, objects: swarm_api::state::ClusterState) {
        self.data.objects = objects;
    }

    /// The tasks assigned to node `node_id`.
    pub fn tasks_on<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks_by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.data.tasks.get(id))
    }

    /// The tasks of service `service_id`.
    pub fn tasks_of<'a>(&'a self, service_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks_by_service
            .get(service_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.data.tasks.get(id))
    }

    /// Moves the tasks the last command touched to their node's and their service's sets.
    fn reindex_tasks(&mut self) {
        for event in self.events.iter().filter(|e| e.object == "task") {
            let id = &event.name;
            match self.data.tasks.get(id) {
                Some(task) => {
                    if !self.service_of_task.contains_key(id) {
                        self.tasks_by_service
                            .entry(task.service_id.clone())
                            .or_default()
                            .insert(id.clone());
                        self.service_of_task
                            .insert(id.clone(), task.service_id.clone());
                    }
                }
                None => {
                    if let Some(service) = self.service_of_task.remove(id)
                        && let Some(set) = self.tasks_by_service.get_mut(&service)
                    {
                        set.remove(id);
                        if set.is_empty() {
                            self.tasks_by_service.remove(&service);
                        }
                    }
                }
            }
            let now = self.data.tasks.get(id).and_then(|t| t.node_id.clone());
            let before = self.node_of_task.get(id).cloned();
            if now == before {
                continue;
            }
            if let Some(node) = before {
                if let Some(set) = self.tasks_by_node.get_mut(&node) {
                    set.remove(id);
                    if set.is_empty() {
                        self.tasks_by_node.remove(&node);
                    }
                }
                self.node_of_task.remove(id);
            }
            if let Some(node) = now {
                self.tasks_by_node
                    .entry(node.clone())
                    .or_default()
                    .insert(id.clone());
                self.node_of_task.insert(id.clone(), node);
            }
        }
    }

    fn rebuild_task_index(&mut self) {
        self.tasks_by_node.clear();
        self.node_of_task.clear();
        self.tasks_by_service.clear();
        self.service_of_task.clear();
        for task in self.data.tasks.values() {
            self.tasks_by_service
                .entry(task.service_id.clone())
                .or_default()
                .insert(task.id.clone());
            self.service_of_task
                .insert(task.id.clone(), task.service_id.clone());
            if let Some(node) = &task.node_id {
                self.tasks_by_node
                    .entry(node.clone())
                    .or_default()
                    .insert(task.id.clone());
                self.node_of_task.insert(task.id.clone(), node.clone());
            }
        }
    }

    /// The events of the last command applied.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Applies the command at Raft `index`.
    pub fn apply_command(&mut self, index: u64, command: Command) -> Outcome {
        assert!(
            index > self.data.version,
            "entry {index} applied after {}",
            self.data.version
        );
        let mut events = Vec::new();
        // Credentials change only with a plan; they are compared only when someone watches.
        let credentials_before = (self.watch.watched()
            && matches!(command, Command::ApplyPlan { .. }))
        .then(|| self.data.registry_auth.clone());
        // Content versions come with plans and go with plans and tasks: their digests are
        // compared, never their contents.
        let contents_before = (self.watch.watched()
            && matches!(
                command,
                Command::ApplyPlan { .. }
                    | Command::Deploy { .. }
                    | Command::RemoveRepository { .. }
                    | Command::WriteTasks { .. }
                    | Command::TaskStatuses { .. }
            ))
        .then(|| {
            self.data
                .file_contents
                .keys()
                .cloned()
                .collect::<BTreeSet<_>>()
        });
        let outcome = match apply(&mut self.data, index, command, &mut events) {
            Ok(()) => Outcome::Applied { version: index },
            Err(rejection) => {
                events.clear();
                Outcome::Rejected(rejection)
            }
        };
        self.data.version = index;
        self.events = events;
        self.reindex_tasks();
        if self.watch.watched() {
            self.watch.publish(self.changes(
                &self.events,
                credentials_before.as_ref(),
                contents_before.as_ref(),
            ));
        }
        outcome
    }
}

/// The object called `name` in `list`, which the store keeps sorted by name (see `upsert`).
pub(crate) fn object_named<'a, S: Named>(
    list: &'a [Object<S>],
    name: &str,
) -> Option<&'a Object<S>> {
    let at = list.partition_point(|o| o.spec.name() < name);
    list.get(at).filter(|o| o.spec.name() == name)
}

fn event(object: &'static str, name: &str, change: Change) -> Event {
    Event {
        object,
        name: name.to_owned(),
        change,
    }
}

/// Applies one command. Each arm checks before it changes anything, so a rejected command
/// leaves no trace.
fn apply(
    data: &mut StoreData,
    index: u64,
    command: Command,
    events: &mut Vec<Event>,
) -> Result<(), Rejection> {
    // Autolock may be set first: `init --autolock` sets it before the cluster exists, so no
    // manager ever sees a cluster without its unlock key and stores a key-encryption key.
    if data.cluster.is_none()
        && !matches!(
            command,
            Command::InitCluster(_) | Command::SetAutolock { .. }
        )
    {
        return Err(Rejection::invalid("the cluster is not initialised"));
    }
    match command {
        Command::InitCluster(cluster) => {
            if data.cluster.is_some() {
                return Err(Rejection::invalid("the cluster is already initialised"));
            }
            data.cluster = Some(cluster);
        }
        Command::AddNode(node) => {
            if data.nodes.contains_key(&node.id) {
                return Err(format!("node {} already exists", node.id).into());
            }
            // Two managers joining at once may be offered the same Raft id: the second loses.
            if let Some(raft_id) = node.raft_id
                && data.nodes.values().any(|n| n.raft_id == Some(raft_id))
            {
                return Err(format!("raft id {raft_id} is taken; join again").into());
            }
            let mut node = node;
            if node.subnet.is_none() {
                let pool = data
                    .cluster
                    .as_ref()
                    .map(|c| c.address_pool.clone())
                    .unwrap_or_default();
                node.subnet = Some(free_subnet(&pool, &data.nodes).ok_or_else(|| {
                    format!(
                        "the address pool {} has no free /{} subnet left for node {}: remove nodes, or start the cluster with a larger --default-addr-pool",
                        pool.base, pool.subnet_size, node.id
                    )
                })?);
            }
            events.push(event("node", &node.id, Change::Created));
            data.nodes.insert(node.id.clone(), node);
        }
        Command::UpdateNode(update) => {
            let node = data
                .nodes
                .get_mut(&update.id)
                .ok_or_else(|| format!("node {} does not exist", update.id))?;
            if let Some(availability) = update.availability {
                node.availability = availability;
            }
            if let Some(role) = update.role {
                // A voter stops being one only through the conf change that removes it.
                if role == NodeRole::Worker && node.raft_id.is_some() {
                    return Err(format!(
                        "node {} is a Raft voter: demote it with the conf change",
                        update.id
                    )
                    .into());
                }
                node.role = role;
            }
            for key in &update.labels_remove {
                node.labels.remove(key);
            }
            node.labels.extend(update.labels_add);
            events.push(event("node", &update.id, Change::Updated));
        }
        Command::RemoveNode { id } => {
            let node = data
                .nodes
                .get(&id)
                .ok_or_else(|| format!("node {id} does not exist"))?;
            if node.role == NodeRole::Manager {
                return Err(format!("node {id} is a manager: demote it first").into());
            }
            data.nodes.remove(&id);
            data.removed_nodes.insert(id.clone());
            events.push(event("node", &id, Change::Removed));
        }
        Command::JoinRaft { id, raft_id } => {
            if data
                .nodes
                .values()
                .any(|n| n.raft_id == Some(raft_id) && n.id != id)
            {
                return Err(format!("raft id {raft_id} is taken").into());
            }
            let node = data
                .nodes
                .get_mut(&id)
                .ok_or_else(|| format!("node {id} does not exist"))?;
            node.role = NodeRole::Manager;
            node.raft_id = Some(raft_id);
            events.push(event("node", &id, Change::Updated));
        }
        Command::LeaveRaft { id } => {
            let node = data
                .nodes
                .get_mut(&id)
                .ok_or_else(|| format!("node {id} does not exist"))?;
            node.role = NodeRole::Worker;
            node.raft_id = None;
            events.push(event("node", &id, Change::Updated));
        }
        Command::NodeStatuses { at, changes } => {
            for change in changes {
                // A node removed meanwhile has no status to change; that is not an error.
                let Some(node) = data.nodes.get_mut(&change.id) else {
                    continue;
                };
                let mut changed = node.worker_error != change.worker_error
                    || node.ports_taken != change.ports_taken;
                node.worker_error = change.worker_error;
                node.ports_taken = change.ports_taken;
                if node.status != change.status {
                    node.status = change.status;
                    node.status_since = at;
                    changed = true;
                }
                if changed {
                    events.push(event("node", &change.id, Change::Updated));
                }
            }
        }
        Command::SetAutolock { unlock_key } => data.unlock_key = unlock_key,
        Command::RotateJoinToken { role, secret } => {
            let cluster = data.cluster.as_mut().expect("checked above");
            match role {
                NodeRole::Worker => cluster.worker_token_secret = secret,
                NodeRole::Manager => cluster.manager_token_secret = secret,
            }
        }
        Command::WriteTasks {
            expected_version,
            changes,
        } => {
            if expected_version != data.tasks_version {
                return Err(Rejection::Conflict(Conflict {
                    subject: ConflictSubject::Tasks,
                    expected: expected_version,
                    actual: data.tasks_version,
                }));
            }
            // Built at the first task created, for the whole command.
            let mut addresses = None;
            for change in changes {
                apply_task_change(data, index, change, &mut addresses, events);
            }
            data.tasks_version = index;
            files::prune(data);
        }
        Command::TaskStatuses { node_id, updates } => {
            for update in updates {
                // Only the node a task is assigned to speaks for it, and only forward.
                let Some(task) = data.tasks.get_mut(&update.id) else {
                    continue;
                };
                if task.node_id.as_deref() != Some(node_id.as_str())
                    || update.status.state < task.status.state
                    || task.status.state.is_terminal()
                {
                    continue;
                }
                if update.status.state == TaskState::Running && task.started_at.is_none() {
                    task.started_at = Some(update.status.since);
                }
                task.status = update.status;
                events.push(event("task", &update.id, Change::Updated));
            }
            files::prune(data);
        }
        Command::RollbackService {
            expected_version,
            service_id,
            at,
        } => {
            let name = data
                .objects
                .services
                .iter()
                .find(|o| o.id.as_ref() == Some(&service_id))
                .map(|o| o.spec.name.clone())
                .ok_or_else(|| format!("service {service_id} does not exist"))?;
            check_version(data, expected_version, Kind::Service, &name)?;
            if !data.previous_specs.contains_key(&service_id) {
                return Err(format!(
                    "service {name} has no previous spec to roll back to (it was never updated)"
                )
                .into());
            }
            let status = swarm_api::rollout::UpdateStatus {
                state: swarm_api::rollout::UpdateState::RollbackStarted,
                started_at: at,
                completed_at: None,
                message: "manually requested rollback".to_owned(),
            };
            roll_back(data, index, service_id, status, events);
            // A pass decided before would roll out the spec rolled back from.
            data.tasks_version = index;
        }
        Command::ApplyPlan {
            expected_version,
            actions,
            registry_auth,
            file_contents,
            override_git,
        } => {
            if !override_git {
                gitops::check_unmanaged(data, &actions)?;
            }
            apply_plan(
                data,
                index,
                expected_version,
                actions,
                Brought {
                    registry_auth,
                    file_contents,
                },
                events,
            )?;
            gitops::forget_unmanaged_commits(data);
        }
        Command::AddRepository {
            repository,
            secrets,
        } => gitops::add_repository(data, repository, secrets, events)?,
        Command::RemoveRepository {
            name,
            expected_version,
            actions,
        } => {
            gitops::check_removal(data, &name, &actions)?;
            apply_plan(
                data,
                index,
                Some(expected_version),
                actions,
                Brought::default(),
                events,
            )?;
            data.repositories.remove(&name);
            gitops::forget_unmanaged_commits(data);
            events.push(event("repository", &name, Change::Removed));
        }
        Command::SyncRepository { name, trigger, at } => {
            gitops::status_mut(data, &name)?.sync =
                Some(swarm_api::gitops::SyncRequest { trigger, at, index });
            events.push(event("repository", &name, Change::Updated));
        }
        Command::RepositoryFetched { name, fetched } => {
            let status = gitops::status_mut(data, &name)?;
            status.fetched = Some(fetched);
            status.error = None;
            events.push(event("repository", &name, Change::Updated));
        }
        Command::RepositoryFailed { name, error } => {
            gitops::status_mut(data, &name)?.error = Some(error);
            events.push(event("repository", &name, Change::Updated));
        }
        Command::RepositoryDrift { name, drift } => {
            gitops::status_mut(data, &name)?.drift = drift;
            events.push(event("repository", &name, Change::Updated));
        }
        Command::Deploy {
            expected_version,
            deployment,
            stacks,
            file_contents,
        } => {
            let mut deployment = *deployment;
            match gitops::check_deploy(data, &deployment, &stacks)? {
                Some(reason) => {
                    // Recorded, so that the commit is not tried again; nothing else changes.
                    deployment.plan.actions.clear();
                    deployment.outcome = swarm_api::gitops::DeploymentOutcome::Refused { reason };
                }
                None if deployment.outcome.is_final() => deployment.plan.actions.clear(),
                None => {
                    apply_plan(
                        data,
                        index,
                        Some(expected_version),
                        deployment.plan.actions.clone(),
                        Brought {
                            file_contents,
                            ..Brought::default()
                        },
                        events,
                    )?;
                    if deployment.plan.actions.is_empty() {
                        deployment.outcome = swarm_api::gitops::DeploymentOutcome::NoOp;
                    }
                }
            }
            gitops::record_deployment(data, index, deployment, stacks, events);
        }
        Command::SetDeploymentOutcome {
            repository,
            id,
            outcome,
            at,
        } => gitops::set_outcome(data, &repository, &id, outcome, at, events)?,
    }
    Ok(())
}

/// What rides in a plan's entry beside its actions, kept by the store outside the specs.
#[derive(Default)]
struct Brought {
    /// Registry credentials by service name.
    registry_auth: BTreeMap<String, swarm_api::auth::RegistryAuth>,
    /// Config and secret contents by digest.
    file_contents: swarm_api::files::FileContents,
}

/// Applies a plan's actions as one change, all or nothing; with `expected_version`, refused
/// if an object it touches changed after that version.
fn apply_plan(
    data: &mut StoreData,
    index: u64,
    expected_version: Option<u64>,
    actions: Vec<Action>,
    brought: Brought,
    events: &mut Vec<Event>,
) -> Result<(), Rejection> {
    if let Some(expected) = expected_version {
        for action in &actions {
            check_version(data, expected, action.kind, &action.name)?;
        }
    }
    let cluster_id = data.cluster.as_ref().expect("checked above").id.clone();
    // A plan is all or nothing: its actions apply to a copy that replaces the objects
    // only when every action succeeded. (Plans are rare; statuses and heartbeats,
    // which are frequent, never copy.)
    let mut objects = data.objects.clone();
    let touched: Vec<(Kind, String, Op)> = actions
        .iter()
        .map(|a| (a.kind, a.name.clone(), a.op))
        .collect();
    for action in actions {
        apply_action(&mut objects, &cluster_id, index, action, events)?;
    }
    let mut reasons = validate::plan_result(&objects, &touched);
    reasons.extend(validate::node_ports(&objects, &data.nodes, &|name| {
        touched
            .iter()
            .any(|(kind, n, op)| *kind == Kind::Service && n == name && *op != Op::Remove)
    }));
    reasons.extend(files::plan_reasons(
        &objects,
        &touched,
        &brought.file_contents,
        &data.file_contents,
    ));
    if !reasons.is_empty() {
        return Err(Rejection::Invalid { reasons });
    }
    let network_allocations = if touched.iter().any(|(kind, ..)| *kind == Kind::Network) {
        let node_pool = &data.cluster.as_ref().expect("checked above").address_pool;
        networks::allocate_subnets(
            &objects.networks,
            &data.network_allocations,
            node_pool,
            &swarm_api::store::AddressPool::networks(),
        )
        .map_err(|reasons| Rejection::Invalid { reasons })?
    } else {
        data.network_allocations.clone()
    };
    let service_vips = if touched
        .iter()
        .any(|(kind, ..)| matches!(kind, Kind::Service | Kind::Network))
    {
        let (vips, reasons) =
            reallocate_vips(data, &objects.services, &network_allocations, events);
        if !reasons.is_empty() {
            return Err(Rejection::Invalid { reasons });
        }
        vips
    } else {
        data.service_vips.clone()
    };
    let assigned_ports = if touched.iter().any(|(kind, ..)| *kind == Kind::Service) {
        let (ports, reasons) = reassign_ports(data, &objects.services, events);
        if !reasons.is_empty() {
            return Err(Rejection::Invalid { reasons });
        }
        ports
    } else {
        data.assigned_ports.clone()
    };
    objects.version = index;
    for (kind, name, op) in touched {
        let versions = data.object_versions.entry(kind).or_default();
        match op {
            Op::Remove => versions.remove(&name),
            Op::Create | Op::Update | Op::Scale => versions.insert(name, index),
        };
    }
    let mut kept_auth = data.registry_auth.clone();
    update_registry_auth(&mut kept_auth, &objects, brought.registry_auth)?;
    if remember_previous_specs(data, &objects) {
        // A pass decided before a spec changed would roll out the old one (and
        // its update status): it is refused, and decided again.
        data.tasks_version = index;
    }
    data.objects = objects;
    data.registry_auth = kept_auth;
    data.network_allocations = network_allocations;
    data.service_vips = service_vips;
    data.assigned_ports = assigned_ports;
    files::keep(data, brought.file_contents);
    Ok(())
}

/// The services' virtual IPs once `services` replace the store's
/// (`networks::allocate_vips` over the addresses tasks hold), and the reasons of those that
/// could not be given; each service whose VIPs change is told to watchers, which read them
/// with the service.
fn reallocate_vips(
    data: &StoreData,
    services: &[Object<swarm_api::spec::ServiceSpec>],
    allocations: &BTreeMap<String, swarm_api::store::NetworkAllocation>,
    events: &mut Vec<Event>,
) -> (
    BTreeMap<String, Vec<swarm_api::task::NetworkAddress>>,
    Vec<String>,
) {
    let tasks_used = networks::addresses_in_use(data.tasks.values(), &BTreeMap::new());
    let (vips, reasons) =
        networks::allocate_vips(services, allocations, &data.service_vips, &tasks_used);
    tell_services_changed(services, &data.service_vips, &vips, events);
    (vips, reasons)
}

/// An event for each of `services` whose entry differs between `before` and `after` (maps
/// by service id of what the store keeps beside the specs).
fn tell_services_changed<T: PartialEq>(
    services: &[Object<swarm_api::spec::ServiceSpec>],
    before: &BTreeMap<String, T>,
    after: &BTreeMap<String, T>,
    events: &mut Vec<Event>,
) {
    for service in services {
        let Some(id) = service.id.as_ref() else {
            continue;
        };
        if after.get(id) != before.get(id) {
            events.push(event("service", &service.spec.name, Change::Updated));
        }
    }
}

/// The ports given to unnumbered ingress ports once `services` replace the store's
/// (`ports::assign`, never a node's own port), and why some could not be; each service whose
/// ports change is told to watchers, which read them with the service.
fn reassign_ports(
    data: &StoreData,
    services: &[Object<swarm_api::spec::ServiceSpec>],
    events: &mut Vec<Event>,
) -> (
    BTreeMap<String, Vec<swarm_api::spec::AssignedPort>>,
    Vec<String>,
) {
    let reserved = ports::reserved(&data.nodes);
    let (assigned, reasons) = ports::assign(services, &data.assigned_ports, &reserved);
    tell_services_changed(services, &data.assigned_ports, &assigned, events);
    (assigned, reasons)
}

/// Refuses a command decided at state version `expected` if the object `kind` `name`
/// changed after it (or, for one that does not exist, was created after it).
fn check_version(data: &StoreData, expected: u64, kind: Kind, name: &str) -> Result<(), Rejection> {
    let actual = data
        .object_versions
        .get(&kind)
        .and_then(|versions| versions.get(name))
        .copied()
        .unwrap_or(0);
    if actual > expected {
        return Err(Rejection::Conflict(Conflict {
            subject: ConflictSubject::Object {
                kind,
                name: name.to_owned(),
            },
            expected,
            actual,
        }));
    }
    Ok(())
}

/// Stores the credentials a plan brings for its services (by name) under their ids, and
/// forgets those of removed services. A service the plan does not bring credentials for
/// keeps its own (Docker: an update without `--with-registry-auth` keeps them).
fn update_registry_auth(
    kept: &mut std::collections::BTreeMap<String, swarm_api::auth::RegistryAuth>,
    after: &ClusterState,
    brought: std::collections::BTreeMap<String, swarm_api::auth::RegistryAuth>,
) -> Result<(), String> {
    for (name, auth) in brought {
        let id = object_named(&after.services, &name)
            .and_then(|o| o.id.clone())
            .ok_or_else(|| {
                format!("registry credentials for service {name}, which the plan does not keep")
            })?;
        kept.insert(id, auth);
    }
    kept.retain(|id, _| after.services.iter().any(|o| o.id.as_deref() == Some(id)));
    Ok(())
}

/// Records, for each service whose spec changed from `data.objects` to `after`, the spec it
/// had, and clears its update status (a user's change starts a new update, as Docker's
/// `service update` resets `UpdateStatus`); forgets removed services. Whether a spec changed.
fn remember_previous_specs(data: &mut StoreData, after: &ClusterState) -> bool {
    let old: HashMap<&str, &swarm_api::spec::ServiceSpec> = data
        .objects
        .services
        .iter()
        .filter_map(|o| Some((o.id.as_deref()?, &o.spec)))
        .collect();
    let mut changed = false;
    for object in &after.services {
        let Some(id) = object.id.as_deref() else {
            continue;
        };
        if let Some(spec) = old.get(id).filter(|spec| ***spec != object.spec) {
            data.previous_specs.insert(id.to_owned(), (*spec).clone());
            data.update_status.remove(id);
            changed = true;
        }
    }
    let exists = |id: &String| after.services.iter().any(|o| o.id.as_ref() == Some(id));
    data.previous_specs.retain(|id, _| exists(id));
    data.update_status.retain(|id, _| exists(id));
    changed
}

/// The orchestrator's word on a service's rollout; moot if the service is gone.
fn set_update_status(
    data: &mut StoreData,
    service_id: String,
    status: swarm_api::rollout::UpdateStatus,
    events: &mut Vec<Event>,
) {
    let Some(service) = data
        .objects
        .services
        .iter()
        .find(|o| o.id.as_ref() == Some(&service_id))
    else {
        return;
    };
    events.push(event("service", &service.spec.name, Change::Updated));
    data.update_status.insert(service_id, status);
}

/// A rollback, automatic or asked for: the previous spec and the current one swap (so
/// rolling back again goes forward to the spec rolled back from, as Docker's does). The
/// objects changed: a plan made before is refused. Moot if the service or its previous
/// spec is gone (for an automatic one, a user changed it meanwhile and the pass was not
/// refused: impossible, as that change moves `tasks_version`).
fn roll_back(
    data: &mut StoreData,
    index: u64,
    service_id: String,
    status: swarm_api::rollout::UpdateStatus,
    events: &mut Vec<Event>,
) {
    let Some(service) = data
        .objects
        .services
        .iter_mut()
        .find(|o| o.id.as_ref() == Some(&service_id))
    else {
        return;
    };
    let Some(previous) = data.previous_specs.get_mut(&service_id) else {
        return;
    };
    std::mem::swap(&mut service.spec, previous);
    events.push(event("service", &service.spec.name, Change::Updated));
    data.object_versions
        .entry(Kind::Service)
        .or_default()
        .insert(service.spec.name.clone(), index);
    data.objects.version = index;
    // The spec rolled back to had its addresses when it was current; one that cannot have
    // them again (its network filled meanwhile) runs without that VIP.
    let (vips, _) = reallocate_vips(
        data,
        &data.objects.services,
        &data.network_allocations,
        events,
    );
    data.service_vips = vips;
    let (ports, _) = reassign_ports(data, &data.objects.services, events);
    data.assigned_ports = ports;
    data.update_status.insert(service_id, status);
}

/// The lowest subnet of the pool that no node holds: deterministic, so every replica leases
/// the same one.
fn free_subnet(
    pool: &swarm_api::store::AddressPool,
    nodes: &std::collections::BTreeMap<String, swarm_api::store::Node>,
) -> Option<ipnet::Ipv4Net> {
    let taken: std::collections::HashSet<_> = nodes.values().filter_map(|n| n.subnet).collect();
    pool.base
        .subnets(pool.subnet_size)
        .ok()?
        .find(|subnet| !taken.contains(subnet))
}

/// One orchestrator decision. Decisions about tasks or services that are gone (removed by
/// an earlier entry) are moot, not errors.
fn apply_task_change(
    data: &mut StoreData,
    index: u64,
    change: TaskChange,
    addresses: &mut Option<BTreeMap<String, BTreeSet<std::net::Ipv4Addr>>>,
    events: &mut Vec<Event>,
) {
    let tasks = &mut data.tasks;
    match change {
        TaskChange::Create(mut task) => {
            // Its addresses are the store's to give, whatever the proposer wrote.
            task.networks.clear();
            if !task.spec.networks.is_empty() {
                let used = addresses.get_or_insert_with(|| {
                    networks::addresses_in_use(tasks.values(), &data.service_vips)
                });
                if let Err(reason) =
                    networks::address_task(&mut task, &data.network_allocations, used)
                {
                    // It cannot run without its addresses: it fails, and the orchestrator
                    // replaces it under its restart policy, as for any task that fails.
                    task.status.state = TaskState::Rejected;
                    task.status.error = Some(reason);
                }
            }
            events.push(event("task", &task.id, Change::Created));
            tasks.insert(task.id.clone(), *task);
        }
        TaskChange::Assign { id, node_id } => {
            if let Some(task) = tasks.get_mut(&id) {
                task.node_id = Some(node_id);
                task.status.state = TaskState::Assigned;
                task.status.message = "scheduled".to_owned();
                events.push(event("task", &id, Change::Updated));
            }
        }
        TaskChange::Status { id, status } => {
            if let Some(task) = tasks.get_mut(&id)
                && !task.status.state.is_terminal()
            {
                task.status = status;
                events.push(event("task", &id, Change::Updated));
            }
        }
        TaskChange::Desire { id, desired } => {
            if let Some(task) = tasks.get_mut(&id) {
                task.desired = desired;
                events.push(event("task", &id, Change::Updated));
            }
        }
        TaskChange::Remove { id } => {
            if tasks.remove(&id).is_some() {
                events.push(event("task", &id, Change::Removed));
            }
        }
        TaskChange::UpdateStatus { service_id, status } => {
            set_update_status(data, service_id, status, events);
        }
        TaskChange::RollBack { service_id, status } => {
            roll_back(data, index, service_id, status, events);
        }
    }
}

fn apply_action(
    objects: &mut ClusterState,
    cluster_id: &str,
    index: u64,
    action: Action,
    events: &mut Vec<Event>,
) -> Result<(), String> {
    let id = object_id(cluster_id, index, action.kind, &action.name);
    let object = action.kind.as_str();
    let name = action.name.clone();
    // The spec, when the action carries one, must be of the action's kind.
    let mismatch = || {
        let kind = action.kind.as_str();
        format!("{kind} {name}: the spec is not a {kind} spec")
    };
    let spec = action.spec;
    let (op, origin) = (action.op, action.origin);
    match action.kind {
        Kind::Service => {
            let spec = spec.map(|s| match s {
                ObjectSpec::Service(spec) => Ok(*spec),
                _ => Err(mismatch()),
            });
            upsert(
                &mut objects.services,
                op,
                id,
                origin,
                spec.transpose()?,
                &name,
            )?
        }
        Kind::Network => {
            let spec = spec.map(|s| match s {
                ObjectSpec::Network(spec) => Ok(spec),
                _ => Err(mismatch()),
            });
            upsert(
                &mut objects.networks,
                op,
                id,
                origin,
                spec.transpose()?,
                &name,
            )?
        }
        Kind::Config | Kind::Secret => {
            let spec = spec.map(|s| match s {
                ObjectSpec::File(spec) => Ok(spec),
                _ => Err(mismatch()),
            });
            let list = if action.kind == Kind::Config {
                &mut objects.configs
            } else {
                &mut objects.secrets
            };
            upsert(list, op, id, origin, spec.transpose()?, &name)?
        }
    }
    let change = match op {
        Op::Create => Change::Created,
        Op::Update | Op::Scale => Change::Updated,
        Op::Remove => Change::Removed,
    };
    events.push(event(object, &name, change));
    Ok(())
}

/// Creates, replaces or removes the object `name` of one kind.
fn upsert<S: Named>(
    list: &mut Vec<Object<S>>,
    op: Op,
    id: String,
    origin: swarm_api::state::Origin,
    spec: Option<S>,
    name: &str,
) -> Result<(), String> {
    let position = list.iter().position(|o| o.spec.name() == name);
    match (op, position, spec) {
        (Op::Create, None, Some(spec)) => {
            if spec.name() != name {
                return Err(format!("{name}: the spec is named {}", spec.name()));
            }
            // Sorted by name, so exports and snapshots are the same on every replica.
            let at = list.partition_point(|o| o.spec.name() < name);
            list.insert(
                at,
                Object {
                    id: Some(id),
                    origin,
                    spec,
                },
            );
        }
        (Op::Create, Some(_), _) => return Err(format!("{name} already exists")),
        (Op::Update | Op::Scale, Some(at), Some(spec)) => {
            let existing = &mut list[at];
            existing.spec = spec;
            existing.origin = origin;
        }
        (Op::Remove, Some(at), _) => {
            list.remove(at);
        }
        (Op::Update | Op::Scale | Op::Remove, None, _) => {
            return Err(format!("{name} does not exist"));
        }
        (Op::Create | Op::Update | Op::Scale, _, None) => {
            return Err(format!("{name}: the action carries no spec"));
        }
    }
    Ok(())
}

/// A new object's id: derived from where it was created, so every replica gives the same.
fn object_id(cluster_id: &str, index: u64, kind: Kind, name: &str) -> String {
    let digest = Sha256::digest(format!("{cluster_id}/{index}/{}/{name}", kind.as_str()));
    digest
        .iter()
        .take(13)
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..25]
        .to_owned()
}

impl StateMachine for Store {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        let command: Command = serde_json::from_slice(command).unwrap_or_else(|e| {
            panic!("raft entry {index} is not a command ({e}): refusing to diverge")
        });
        let outcome = self.apply_command(index, command);
        serde_json::to_vec(&outcome).expect("outcomes serialise")
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.data).expect("the store serialises")
    }

    fn restore(&mut self, snapshot: &[u8]) {
        self.data = if snapshot.is_empty() {
            StoreData::default()
        } else {
            serde_json::from_slice(snapshot).expect("a snapshot written by the store decodes")
        };
        self.events.clear();
        self.rebuild_task_index();
        // The state was replaced as a whole: its watchers start again from a view of it.
        self.watch = watch::Publisher::default();
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{cluster, node, plan_command};
    use super::*;
    use std::collections::BTreeMap;
    use swarm_api::store::{Availability, Node, NodeStatus, NodeStatusChange, NodeUpdate};

    /// Node `a` reporting itself Ready at `index`, with its worker's error and the ports
    /// another process holds.
    fn ready_a(index: u64, worker_error: Option<String>, ports_taken: Vec<String>) -> Command {
        Command::NodeStatuses {
            at: index,
            changes: vec![NodeStatusChange {
                id: "a".into(),
                status: NodeStatus::Ready,
                worker_error,
                ports_taken,
            }],
        }
    }

    #[test]
    fn a_nodes_worker_error_is_recorded_and_cleared() {
        let mut store = Store::default();
        store.apply_command(1, cluster());
        store.apply_command(3, node("a", NodeRole::Worker));
        store.take_events();
        // A worker that cannot start is recorded without moving the status's time, and
        // cleared when the node says its worker runs.
        for (index, worker_error) in [(51, Some("runc not found in PATH")), (52, None)] {
            let report = ready_a(index, worker_error.map(str::to_owned), Vec::new());
            store.apply_command(index, report);
            let a = &store.data().nodes["a"];
            assert_eq!(a.worker_error.as_deref(), worker_error);
            assert_eq!(a.status_since, 1, "the status did not change");
            assert_eq!(
                store.take_events(),
                vec![event("node", "a", Change::Updated)]
            );
        }
    }

    #[test]
    fn the_ports_another_process_holds_on_a_node_are_recorded_and_cleared() {
        let mut store = Store::default();
        store.apply_command(1, cluster());
        store.apply_command(3, node("a", NodeRole::Worker));
        store.take_events();
        for (index, taken) in [(51, vec!["8080/tcp".to_owned()]), (52, Vec::new())] {
            store.apply_command(index, ready_a(index, None, taken.clone()));
            let a = &store.data().nodes["a"];
            assert_eq!(a.ports_taken, taken);
            assert_eq!(
                a.status_message(),
                (index == 51)
                    .then(|| "port 8080/tcp taken by another process on this node".to_owned())
            );
            assert_eq!(
                store.take_events(),
                vec![event("node", "a", Change::Updated)]
            );
        }
    }

    #[test]
    fn nodes_lease_the_lowest_free_subnet_of_the_pool() {
        let mut store = Store::default();
        store.apply_command(1, cluster());
        for (index, id) in ["a", "b", "c", "d"].iter().enumerate() {
            let outcome = store.apply_command(2 + index as u64, node(id, NodeRole::Worker));
            assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
        }
        let subnet = |store: &Store, id: &str| store.data().nodes[id].subnet.unwrap().to_string();
        assert_eq!(subnet(&store, "a"), "10.9.0.0/24");
        assert_eq!(subnet(&store, "d"), "10.9.3.0/24");
        // The pool (a /22) is full.
        let outcome = store.apply_command(6, node("e", NodeRole::Worker));
        assert!(
            matches!(&outcome, Outcome::Rejected(rejection) if rejection.to_string().contains("no free /24 subnet left for node e")),
            "{outcome:?}"
        );
        // A removed node's subnet is free again.
        store.apply_command(7, Command::RemoveNode { id: "b".into() });
        store.apply_command(8, node("e", NodeRole::Worker));
        assert_eq!(subnet(&store, "e"), "10.9.1.0/24");
    }

    fn service_plan() -> Vec<Action> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yaml");
        std::fs::write(
            &path,
            "services:\n  site:\n    image: nginx\n    deploy:\n      replicas: 2\n",
        )
        .unwrap();
        let stack = crate::stack::load(&crate::source::WorkTree, &path, "web.yaml", &|_| None)
            .stack
            .unwrap();
        crate::plan::plan(
            &[stack],
            &ClusterState::empty(),
            &Default::default(),
            Default::default(),
        )
        .unwrap()
        .actions
    }

    #[test]
    fn nodes_are_added_updated_and_removed() {
        let mut store = Store::default();
        assert!(
            matches!(
                store.apply_command(1, node("a", NodeRole::Worker)),
                Outcome::Rejected(_)
            ),
            "before init"
        );
        assert_eq!(
            store.apply_command(2, cluster()),
            Outcome::Applied { version: 2 }
        );
        store.apply_command(3, node("a", NodeRole::Worker));
        let update = NodeUpdate {
            id: "a".into(),
            availability: Some(Availability::Drain),
            labels_add: [("zone".to_owned(), "b".to_owned())].into(),
            ..NodeUpdate::default()
        };
        store.apply_command(4, Command::UpdateNode(update));
        let a = &store.data().nodes["a"];
        assert_eq!(a.availability, Availability::Drain);
        assert_eq!(a.labels["zone"], "b");
        store.apply_command(
            5,
            Command::NodeStatuses {
                at: 50,
                changes: vec![NodeStatusChange {
                    id: "a".into(),
                    status: NodeStatus::Down,
                    worker_error: None,
                    ports_taken: Vec::new(),
                }],
            },
        );
        assert_eq!(store.data().nodes["a"].status_since, 50);
        assert_eq!(
            store.take_events(),
            vec![event("node", "a", Change::Updated)]
        );
        assert_eq!(
            store.apply_command(6, Command::RemoveNode { id: "a".into() }),
            Outcome::Applied { version: 6 }
        );
        assert!(matches!(
            store.apply_command(7, Command::RemoveNode { id: "a".into() }),
            Outcome::Rejected(_)
        ));
        assert_eq!(store.data().version, 7);
    }

    #[test]
    fn promotion_and_demotion_go_through_raft_membership() {
        let mut store = Store::default();
        store.apply_command(1, cluster());
        store.apply_command(2, node("w", NodeRole::Worker));
        let promote = NodeUpdate {
            id: "w".into(),
            role: Some(NodeRole::Manager),
            ..NodeUpdate::default()
        };
        store.apply_command(3, Command::UpdateNode(promote));
        let w = &store.data().nodes["w"];
        assert_eq!((w.role, w.raft_id), (NodeRole::Manager, None), "pending");
        store.apply_command(
            4,
            Command::JoinRaft {
                id: "w".into(),
                raft_id: 2,
            },
        );
        assert_eq!(store.data().nodes["w"].raft_id, Some(2));
        let demote = NodeUpdate {
            id: "w".into(),
            role: Some(NodeRole::Worker),
            ..NodeUpdate::default()
        };
        let outcome = store.apply_command(5, Command::UpdateNode(demote));
        assert!(
            matches!(outcome, Outcome::Rejected(ref rejection) if rejection.to_string().contains("voter")),
            "{outcome:?}"
        );
        store.apply_command(6, Command::LeaveRaft { id: "w".into() });
        let w = &store.data().nodes["w"];
        assert_eq!((w.role, w.raft_id), (NodeRole::Worker, None));
        store.apply_command(7, Command::RemoveNode { id: "w".into() });
        assert!(store.data().removed_nodes.contains("w"), "a tombstone");
    }

    #[test]
    fn an_action_whose_spec_is_of_another_kind_is_refused() {
        let mut store = Store::default();
        store.apply_command(1, cluster());
        let mut actions = service_plan();
        let service = actions
            .iter_mut()
            .find(|a| a.kind == Kind::Service)
            .unwrap();
        service.kind = Kind::Network;
        let outcome = store.apply_command(2, plan_command(actions));
        assert!(
            matches!(outcome, Outcome::Rejected(ref rejection) if rejection.to_string().contains("is not a network spec")),
            "{outcome:?}"
        );
        assert!(
            store.export().networks.is_empty(),
            "nothing of the plan was applied"
        );
    }

    #[test]
    fn raft_ids_are_never_given_twice() {
        let mut store = Store::default();
        store.apply_command(1, cluster());
        let manager = |id: &str| match node(id, NodeRole::Manager) {
            Command::AddNode(node) => Command::AddNode(Node {
                raft_id: Some(2),
                ..node
            }),
            _ => unreachable!(),
        };
        assert_eq!(
            store.apply_command(2, manager("m1")),
            Outcome::Applied { version: 2 }
        );
        let outcome = store.apply_command(3, manager("m2"));
        assert!(
            matches!(outcome, Outcome::Rejected(ref rejection) if rejection.to_string().contains("raft id 2 is taken")),
            "{outcome:?}"
        );
    }

    #[test]
    fn plans_apply_atomically_and_refuse_a_moved_state() {
        let mut store = Store::default();
        store.apply_command(1, cluster());
        let actions = service_plan();
        let outcome = store.apply_command(
            2,
            Command::ApplyPlan {
                file_contents: Default::default(),
                expected_version: Some(0),
                actions: actions.clone(),
                registry_auth: Default::default(),
                override_git: false,
            },
        );
        assert_eq!(outcome, Outcome::Applied { version: 2 });
        let export = store.export();
        assert_eq!(export.version, 2);
        assert_eq!(export.services[0].spec.name, "web_site");
        assert_eq!(export.services[0].id.as_deref().map(str::len), Some(25));
        // The same plan again: the state moved, nothing changes.
        let outcome = store.apply_command(
            3,
            Command::ApplyPlan {
                file_contents: Default::default(),
                expected_version: Some(0),
                actions: actions.clone(),
                registry_auth: Default::default(),
                override_git: false,
            },
        );
        assert!(
            matches!(outcome, Outcome::Rejected(Rejection::Conflict(ref conflict)) if conflict.to_string().contains("changed since version 0")),
            "{outcome:?}"
        );
        // Without a version check, creating what exists is refused as a whole.
        let outcome = store.apply_command(4, plan_command(actions));
        assert!(
            matches!(outcome, Outcome::Rejected(ref rejection) if rejection.to_string().contains("already exists")),
            "{outcome:?}"
        );
        assert_eq!(store.export(), export, "a rejected plan leaves no trace");
    }

    /// Two services: changing one does not conflict with a change to the other decided at
    /// the same version; a second change to the same service decided at that version does,
    /// and says which service moved, from which version to which.
    #[test]
    fn versions_are_checked_per_object() {
        let mut store = Store::default();
        store.apply_command(1, cluster());
        let mut actions = service_plan();
        let site = actions
            .iter()
            .find(|a| a.kind == Kind::Service)
            .unwrap()
            .clone();
        let mut other = site.clone();
        other.name = "web_other".into();
        let Some(ObjectSpec::Service(spec)) = other.spec.as_mut() else {
            panic!("a service action");
        };
        spec.name = "web_other".into();
        actions.push(other.clone());
        let plan = |expected_version, actions| Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: Some(expected_version),
            actions,
            registry_auth: Default::default(),
            override_git: false,
        };
        assert_eq!(
            store.apply_command(2, plan(1, actions)),
            Outcome::Applied { version: 2 }
        );
        let scaled = |mut action: Action, replicas| {
            action.op = Op::Scale;
            let Some(ObjectSpec::Service(spec)) = action.spec.as_mut() else {
                panic!("a service action");
            };
            spec.mode = swarm_api::spec::ServiceMode::Replicated { replicas };
            action
        };
        // Both decided at version 2: one changes web_site, the other web_other.
        assert_eq!(
            store.apply_command(3, plan(2, vec![scaled(site.clone(), 3)])),
            Outcome::Applied { version: 3 }
        );
        assert_eq!(
            store.apply_command(4, plan(2, vec![scaled(other.clone(), 4)])),
            Outcome::Applied { version: 4 }
        );
        assert_eq!(store.data().object_versions[&Kind::Service]["web_site"], 3);
        assert_eq!(store.data().object_versions[&Kind::Service]["web_other"], 4);
        // web_site changed at 3: a change decided at 2 is a conflict, and nothing applies.
        let before = store.export();
        let outcome = store.apply_command(5, plan(2, vec![scaled(site.clone(), 5)]));
        assert_eq!(
            outcome,
            Outcome::Rejected(Rejection::Conflict(Conflict {
                subject: ConflictSubject::Object {
                    kind: Kind::Service,
                    name: "web_site".into(),
                },
                expected: 2,
                actual: 3,
            }))
        );
        assert_eq!(store.export(), before);
        // A whole plan is all or nothing over what it touches: one moved object refuses it.
        let outcome = store.apply_command(
            6,
            plan(3, vec![scaled(site.clone(), 6), scaled(other.clone(), 6)]),
        );
        assert!(
            matches!(outcome, Outcome::Rejected(Rejection::Conflict(ref c)) if c.subject == ConflictSubject::Object { kind: Kind::Service, name: "web_other".into() }),
            "{outcome:?}"
        );
        assert_eq!(store.export().services, before.services);
        // A create whose name was taken after the plan's version is a conflict too; a
        // removal forgets the version, so the name is free again.
        let mut create = site.clone();
        create.op = Op::Create;
        assert!(matches!(
            store.apply_command(7, plan(2, vec![create.clone()])),
            Outcome::Rejected(Rejection::Conflict(_))
        ));
        let mut remove = site.clone();
        remove.op = Op::Remove;
        remove.spec = None;
        assert_eq!(
            store.apply_command(8, plan(8, vec![remove])),
            Outcome::Applied { version: 8 }
        );
        assert!(!store.data().object_versions[&Kind::Service].contains_key("web_site"));
        assert_eq!(
            store.apply_command(9, plan(8, vec![create])),
            Outcome::Applied { version: 9 }
        );
    }

    /// The guard: a plan whose service breaks the converter's rules is refused with the
    /// reasons, and nothing of it is applied.
    #[test]
    fn a_plan_with_a_malformed_spec_is_refused_whole() {
        let mut store = Store::default();
        store.apply_command(1, cluster());
        let mut actions = service_plan();
        let service = actions
            .iter_mut()
            .find(|a| a.kind == Kind::Service)
            .unwrap();
        let Some(ObjectSpec::Service(spec)) = service.spec.as_mut() else {
            panic!("a service action");
        };
        spec.task.container.image = "NGINX:latest".into();
        spec.task.networks.push(swarm_api::spec::NetworkAttachment {
            target: "nowhere".into(),
            aliases: vec![],
        });
        let outcome = store.apply_command(2, plan_command(actions));
        let Outcome::Rejected(Rejection::Invalid { reasons }) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("must be lower-case"), "{reasons:?}");
        assert!(
            reasons[1].contains("network nowhere does not exist"),
            "{reasons:?}"
        );
        let export = store.export();
        assert!(
            export.services.is_empty() && export.networks.is_empty(),
            "nothing of the plan was applied"
        );
        assert!(store.data().object_versions.is_empty());
    }

    /// The orchestrator's update status and automatic rollback, and what a user's change
    /// does to them: a new update (status cleared), and any pass decided before refused.
    #[test]
    fn update_status_and_rollback_follow_the_specs() {
        use swarm_api::rollout::{UpdateState, UpdateStatus};
        let status = |state| UpdateStatus {
            state,
            started_at: 7,
            completed_at: None,
            message: String::new(),
        };
        let mut store = Store::default();
        store.apply_command(1, cluster());
        let plan = service_plan();
        store.apply_command(2, plan_command(plan.clone()));
        let id = store.export().services[0].id.clone().unwrap();
        let mut actions: Vec<Action> = plan
            .into_iter()
            .filter(|a| a.kind == Kind::Service)
            .collect();
        let ObjectSpec::Service(spec) = actions[0].spec.as_mut().unwrap() else {
            panic!("a service action");
        };
        let first = (**spec).clone();
        spec.task.container.image = "nginx:2".into();
        let second = (**spec).clone();
        actions[0].op = Op::Update;
        let update = plan_command(actions.clone());
        store.apply_command(3, update.clone());
        assert_eq!(
            store.data().tasks_version,
            3,
            "a spec change refuses older passes"
        );
        let write = |expected_version, change| Command::WriteTasks {
            expected_version,
            changes: vec![change],
        };
        let paused = TaskChange::UpdateStatus {
            service_id: id.clone(),
            status: status(UpdateState::Paused),
        };
        assert!(matches!(
            store.apply_command(4, write(2, paused.clone())),
            Outcome::Rejected(_)
        ));
        assert_eq!(
            store.apply_command(5, write(3, paused)),
            Outcome::Applied { version: 5 }
        );
        assert_eq!(store.data().update_status[&id].state, UpdateState::Paused);
        // The rollback swaps the specs, and moves the objects' version.
        let rollback = TaskChange::RollBack {
            service_id: id.clone(),
            status: status(UpdateState::RollbackStarted),
        };
        store.apply_command(6, write(5, rollback));
        assert_eq!(store.export().services[0].spec, first);
        assert_eq!(store.data().previous_specs[&id], second);
        assert_eq!(store.export().version, 6);
        assert_eq!(
            store.data().update_status[&id].state,
            UpdateState::RollbackStarted
        );
        // A user's rollback swaps them back, and refuses a moved state or a service
        // without a previous spec.
        let rollback = |expected_version, service_id: &str| Command::RollbackService {
            expected_version,
            service_id: service_id.to_owned(),
            at: 9,
        };
        assert!(matches!(
            store.apply_command(7, rollback(5, &id)),
            Outcome::Rejected(ref rejection) if rejection.to_string().contains("changed since version 5")
        ));
        assert_eq!(
            store.apply_command(8, rollback(6, &id)),
            Outcome::Applied { version: 8 }
        );
        assert_eq!(store.export().services[0].spec, second);
        assert_eq!(store.data().previous_specs[&id], first);
        assert_eq!(store.data().tasks_version, 8);
        let status = &store.data().update_status[&id];
        assert_eq!(
            (status.state, status.started_at),
            (UpdateState::RollbackStarted, 9)
        );
        assert_eq!(status.message, "manually requested rollback");
        // A user's change starts afresh.
        let ObjectSpec::Service(spec) = actions[0].spec.as_mut().unwrap() else {
            panic!("a service action");
        };
        spec.task.container.image = "nginx:3".into();
        store.apply_command(9, plan_command(actions));
        assert_eq!(store.data().update_status.get(&id), None);
        assert_eq!(store.data().previous_specs[&id], second);
    }

    #[test]
    fn registry_credentials_are_kept_per_service_until_it_goes() {
        let mut store = Store::default();
        store.apply_command(1, cluster());
        let auth = |password: &str| {
            BTreeMap::from([(
                "web_site".to_owned(),
                swarm_api::auth::RegistryAuth::from([(
                    "127.0.0.1:5000".to_owned(),
                    swarm_api::auth::RegistryCredential {
                        username: "ci".into(),
                        password: password.into(),
                    },
                )]),
            )])
        };
        let plan = |actions, registry_auth| Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: None,
            actions,
            registry_auth,
            override_git: false,
        };
        store.apply_command(2, plan(service_plan(), auth("one")));
        let id = store.export().services[0].id.clone().unwrap();
        let password = |store: &Store| {
            let kept = store.data().registry_auth.get(&id)?;
            Some(kept["127.0.0.1:5000"].password.clone())
        };
        assert_eq!(password(&store).as_deref(), Some("one"));
        assert!(
            !serde_json::to_string(&store.export())
                .unwrap()
                .contains("one\""),
            "the export holds no credentials"
        );
        // A plan that brings none keeps them; one that brings new ones replaces them.
        store.apply_command(3, plan(Vec::new(), BTreeMap::new()));
        assert_eq!(password(&store).as_deref(), Some("one"));
        store.apply_command(4, plan(Vec::new(), auth("two")));
        assert_eq!(password(&store).as_deref(), Some("two"));
        // Credentials for a service that the plan does not keep are refused, as a whole.
        let mut stray = auth("three");
        stray.insert("web_other".into(), stray["web_site"].clone());
        let outcome = store.apply_command(5, plan(Vec::new(), stray));
        assert!(
            matches!(outcome, Outcome::Rejected(ref rejection) if rejection.to_string().contains("web_other")),
            "{outcome:?}"
        );
        assert_eq!(password(&store).as_deref(), Some("two"));
        let remove = Action {
            op: Op::Remove,
            kind: Kind::Service,
            name: "web_site".into(),
            origin: Default::default(),
            changes: Vec::new(),
            spec: None,
        };
        store.apply_command(6, plan(vec![remove], BTreeMap::new()));
        assert!(
            store.data().registry_auth.is_empty(),
            "gone with the service"
        );
    }

    #[test]
    fn replicas_agree_through_snapshots() {
        let commands = [
            cluster(),
            node("m1", NodeRole::Manager),
            plan_command(service_plan()),
        ];
        let mut first = Store::default();
        for (i, command) in commands.iter().enumerate() {
            StateMachine::apply(
                &mut first,
                i as u64 + 1,
                &serde_json::to_vec(command).unwrap(),
            );
        }
        let mut second = Store::default();
        second.restore(&first.snapshot());
        assert_eq!(second.data(), first.data());
        assert!(
            matches!(second.apply_command(4, Command::RemoveNode { id: "m1".into() }), Outcome::Rejected(ref rejection) if rejection.to_string().contains("demote"))
        );
    }

    #[test]
    #[should_panic(expected = "is not a command")]
    fn an_undecodable_entry_stops_the_replica() {
        StateMachine::apply(&mut Store::default(), 1, b"garbage");
    }
}
