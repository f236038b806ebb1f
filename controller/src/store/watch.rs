//! The store's watch: what each applied entry changed, published to whoever follows the
//! state (the dispatcher, the orchestrator, the control API's streams; later the mesh and
//! GitOps), so that readers pay for what changed instead of rescanning the state.
//!
//! A subscriber starts from a consistent point: [`Store::subscribe`] runs where the store
//! is (on the Raft task, between two entries), builds the subscriber's view of the state at
//! version N, and hands it a receiver of the [`Changes`] of every entry after N. A
//! subscriber that falls more than [`CAPACITY`] entries behind, or whose replica installed
//! a snapshot (the state replaced as a whole), is told to resync ([`Missed`]): it
//! subscribes again, from a fresh view.
//!
//! Changes carry the changed records as they are after the entry (clones of what changed
//! only), so a subscriber needs no read of the store to follow it. The watch covers the
//! nodes, the tasks, the objects (services with their update status, networks, configs,
//! secrets), the networks' allocations, the services' virtual IPs, the services' registry
//! credentials and the config and secret contents (for the dispatcher only: never forwarded
//! to clients) and the two versions; not the cluster record or the previous specs.
//! Entries that change nothing watched are not published.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use swarm_api::auth::RegistryAuth;
use swarm_api::files::FileContent;
use swarm_api::rollout::UpdateStatus;
use swarm_api::spec::{AssignedPort, FileObjectSpec, NetworkSpec, ServiceSpec};
use swarm_api::state::Object;
use swarm_api::store::{NetworkAllocation, Node, StoreData};
use swarm_api::task::{NetworkAddress, Task};
use tokio::sync::broadcast;

use super::{Event, Store};

/// How many entries a subscriber may fall behind before it must resync.
pub const CAPACITY: usize = 4096;

/// What one applied entry changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    /// The entry's Raft index: the store's version after it.
    pub index: u64,
    pub objects_version: u64,
    pub tasks_version: u64,
    pub changed: Vec<Changed>,
}

/// One changed record, as it is after the entry (`None`: removed).
#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    Node {
        id: String,
        node: Option<Node>,
    },
    Task {
        id: String,
        task: Option<Task>,
    },
    /// A service, by name, with where its update stands, its virtual IPs (by network
    /// name; empty when it has none) and the ports the cluster gave its unnumbered ingress
    /// ports (empty when none).
    Service {
        name: String,
        service: Option<Object<ServiceSpec>>,
        update_status: Option<UpdateStatus>,
        vips: Vec<NetworkAddress>,
        ports: Vec<AssignedPort>,
    },
    /// A network, by name, with its address space (`None` with the network, or until the
    /// store gave one).
    Network {
        name: String,
        network: Option<Object<NetworkSpec>>,
        allocation: Option<NetworkAllocation>,
    },
    Config {
        name: String,
        config: Option<Object<FileObjectSpec>>,
    },
    Secret {
        name: String,
        secret: Option<Object<FileObjectSpec>>,
    },
    /// A git repository's record (declaration, status, Deployments) changed or went: read
    /// it from the store (it carries secrets, which changes never do).
    Repository {
        name: String,
    },
    /// A service's registry credentials, by service id.
    Credentials {
        service_id: String,
        auth: Option<RegistryAuth>,
    },
    /// A config's or secret's content version came (with its content, for the dispatcher to
    /// hand to the nodes whose tasks use it) or went (`None`). Its `Debug` shows the size
    /// only, so a logged change reveals nothing.
    FileContent {
        digest: String,
        content: Option<FileContent>,
    },
}

/// Why a subscriber must subscribe again to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Missed {
    #[error("the watch fell behind by {0} entries")]
    Lagged(u64),
    /// The replica replaced its state with a snapshot, or stopped.
    #[error("the watched state was replaced or its replica stopped")]
    Closed,
}

/// A subscriber's view of the state at `version`, and the changes after it.
#[derive(Debug)]
pub struct Subscription<V> {
    pub view: V,
    pub version: u64,
    pub changes: Receiver,
}

/// The changes of the entries after a subscription's version, in order.
#[derive(Debug)]
pub struct Receiver(broadcast::Receiver<Arc<Changes>>);

impl Receiver {
    /// The next entry's changes, waiting for one.
    pub async fn recv(&mut self) -> Result<Arc<Changes>, Missed> {
        self.0.recv().await.map_err(|error| match error {
            broadcast::error::RecvError::Lagged(n) => Missed::Lagged(n),
            broadcast::error::RecvError::Closed => Missed::Closed,
        })
    }

    /// The next entry's changes if one is already published.
    pub fn try_recv(&mut self) -> Result<Option<Arc<Changes>>, Missed> {
        match self.0.try_recv() {
            Ok(changes) => Ok(Some(changes)),
            Err(broadcast::error::TryRecvError::Empty) => Ok(None),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Err(Missed::Lagged(n)),
            Err(broadcast::error::TryRecvError::Closed) => Err(Missed::Closed),
        }
    }
}

/// The sending side, inside the store.
#[derive(Debug)]
pub(super) struct Publisher(broadcast::Sender<Arc<Changes>>);

impl Default for Publisher {
    fn default() -> Self {
        Publisher(broadcast::channel(CAPACITY).0)
    }
}

/// A copy of a store is another store, which nobody watches yet.
impl Clone for Publisher {
    fn clone(&self) -> Self {
        Publisher::default()
    }
}

impl Publisher {
    /// Whether anyone listens: without subscribers, nothing is built.
    pub(super) fn watched(&self) -> bool {
        self.0.receiver_count() > 0
    }

    pub(super) fn publish(&self, changes: Changes) {
        if !changes.changed.is_empty() {
            // No receiver left is not an error: the next subscriber starts from a view.
            let _ = self.0.send(Arc::new(changes));
        }
    }

    fn receiver(&self) -> Receiver {
        Receiver(self.0.subscribe())
    }
}

impl Store {
    /// Subscribes to the changes after the state as it is now, with `view` built from it.
    /// Call it where the store is (a replica's `local_read`): no entry can come between the
    /// view and the first change.
    pub fn subscribe<V>(&self, view: impl FnOnce(&Store) -> V) -> Subscription<V> {
        Subscription {
            view: view(self),
            version: self.data.version,
            changes: self.watch.receiver(),
        }
    }

    /// The changes of the entry just applied, from its events and the state after it;
    /// `credentials_before` is what the services' credentials were, for a command that may
    /// change them.
    pub(super) fn changes(
        &self,
        events: &[Event],
        credentials_before: Option<&BTreeMap<String, RegistryAuth>>,
        contents_before: Option<&BTreeSet<String>>,
    ) -> Changes {
        let data = &self.data;
        let mut seen = BTreeSet::new();
        let mut changed: Vec<Changed> = events
            .iter()
            .filter(|e| seen.insert((e.object, e.name.as_str())))
            .filter_map(|e| changed(data, e.object, &e.name))
            .collect();
        if let Some(before) = credentials_before {
            let ids: BTreeSet<&String> = before.keys().chain(data.registry_auth.keys()).collect();
            for id in ids {
                let after = data.registry_auth.get(id);
                if before.get(id) != after {
                    changed.push(Changed::Credentials {
                        service_id: id.clone(),
                        auth: after.cloned(),
                    });
                }
            }
        }
        if let Some(before) = contents_before {
            for digest in before
                .iter()
                .filter(|d| !data.file_contents.contains_key(*d))
            {
                changed.push(Changed::FileContent {
                    digest: digest.clone(),
                    content: None,
                });
            }
            for (digest, content) in &data.file_contents {
                if !before.contains(digest) {
                    changed.push(Changed::FileContent {
                        digest: digest.clone(),
                        content: Some(content.clone()),
                    });
                }
            }
        }
        Changes {
            index: data.version,
            objects_version: data.objects.version,
            tasks_version: data.tasks_version,
            changed,
        }
    }
}

/// The object `name` of kind `object` as it is in `data`.
fn changed(data: &StoreData, object: &str, name: &str) -> Option<Changed> {
    fn by_name<S: swarm_api::spec::Named + Clone>(
        list: &[Object<S>],
        name: &str,
    ) -> Option<Object<S>> {
        super::object_named(list, name).cloned()
    }
    let objects = &data.objects;
    let name = name.to_owned();
    Some(match object {
        "node" => Changed::Node {
            node: data.nodes.get(&name).cloned(),
            id: name,
        },
        "task" => Changed::Task {
            task: data.tasks.get(&name).cloned(),
            id: name,
        },
        "service" => {
            let service = by_name(&objects.services, &name);
            let update_status = service
                .as_ref()
                .and_then(|s| data.update_status.get(s.id.as_deref()?))
                .cloned();
            let vips = service
                .as_ref()
                .and_then(|s| data.service_vips.get(s.id.as_deref()?))
                .cloned()
                .unwrap_or_default();
            let ports = service
                .as_ref()
                .and_then(|s| data.assigned_ports.get(s.id.as_deref()?))
                .cloned()
                .unwrap_or_default();
            Changed::Service {
                name,
                service,
                update_status,
                vips,
                ports,
            }
        }
        "repository" => Changed::Repository { name },
        "network" => Changed::Network {
            network: by_name(&objects.networks, &name),
            allocation: data.network_allocations.get(&name).copied(),
            name,
        },
        "config" => Changed::Config {
            config: by_name(&objects.configs, &name),
            name,
        },
        "secret" => Changed::Secret {
            secret: by_name(&objects.secrets, &name),
            name,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use swarm_api::plan::Op;
    use swarm_api::store::{Command, NodeRole, NodeStatus, NodeStatusChange, TaskStatusUpdate};
    use swarm_api::task::{TaskState, TaskStatus};

    use super::*;
    use crate::store::fixtures::{self, node, service_plan as service};

    /// A follower's copy of the watched part of the state: the snapshot, then each entry's
    /// changes applied to it.
    fn follow(data: &mut StoreData, changes: &Changes) {
        fn put<S: swarm_api::spec::Named>(
            list: &mut Vec<Object<S>>,
            name: &str,
            object: Option<Object<S>>,
        ) {
            list.retain(|o| o.spec.name() != name);
            if let Some(object) = object {
                let at = list.partition_point(|o| o.spec.name() < name);
                list.insert(at, object);
            }
        }
        data.version = changes.index;
        data.objects.version = changes.objects_version;
        data.tasks_version = changes.tasks_version;
        for change in changes.changed.iter().cloned() {
            match change {
                Changed::Node { id, node } => match node {
                    Some(node) => drop(data.nodes.insert(id, node)),
                    None => drop(data.nodes.remove(&id)),
                },
                Changed::Task { id, task } => match task {
                    Some(task) => drop(data.tasks.insert(id, task)),
                    None => drop(data.tasks.remove(&id)),
                },
                Changed::Service {
                    name,
                    service,
                    update_status,
                    vips,
                    ports,
                } => {
                    let gone = data
                        .objects
                        .services
                        .iter()
                        .find(|o| o.spec.name == name)
                        .and_then(|o| o.id.clone());
                    if let Some(id) = gone {
                        data.update_status.remove(&id);
                        data.service_vips.remove(&id);
                        data.assigned_ports.remove(&id);
                    }
                    if let Some(id) = service.as_ref().and_then(|s| s.id.clone())
                        && !vips.is_empty()
                    {
                        data.service_vips.insert(id, vips);
                    }
                    if let Some(id) = service.as_ref().and_then(|s| s.id.clone())
                        && !ports.is_empty()
                    {
                        data.assigned_ports.insert(id, ports);
                    }
                    if let (Some(id), Some(status)) =
                        (service.as_ref().and_then(|s| s.id.clone()), update_status)
                    {
                        data.update_status.insert(id, status);
                    }
                    put(&mut data.objects.services, &name, service);
                }
                Changed::Network {
                    name,
                    network,
                    allocation,
                } => {
                    match allocation {
                        Some(allocation) => {
                            data.network_allocations.insert(name.clone(), allocation);
                        }
                        None => {
                            data.network_allocations.remove(&name);
                        }
                    }
                    put(&mut data.objects.networks, &name, network)
                }
                Changed::Config { name, config } => put(&mut data.objects.configs, &name, config),
                Changed::Secret { name, secret } => put(&mut data.objects.secrets, &name, secret),
                Changed::Credentials { service_id, auth } => match auth {
                    Some(auth) => drop(data.registry_auth.insert(service_id, auth)),
                    None => drop(data.registry_auth.remove(&service_id)),
                },
                Changed::FileContent { digest, content } => match content {
                    Some(content) => drop(data.file_contents.insert(digest, content)),
                    None => drop(data.file_contents.remove(&digest)),
                },
                // Names only: a follower reads the record from the store.
                Changed::Repository { .. } => {}
            }
        }
    }

    /// The part of the state the watch covers.
    fn watched(data: &StoreData) -> StoreData {
        StoreData {
            version: data.version,
            nodes: data.nodes.clone(),
            objects: data.objects.clone(),
            tasks: data.tasks.clone(),
            tasks_version: data.tasks_version,
            update_status: data.update_status.clone(),
            registry_auth: data.registry_auth.clone(),
            network_allocations: data.network_allocations.clone(),
            service_vips: data.service_vips.clone(),
            assigned_ports: data.assigned_ports.clone(),
            file_contents: data.file_contents.clone(),
            ..StoreData::default()
        }
    }

    /// A store driven like the leader's: passes written as `WriteTasks`, statuses reported.
    struct Leader {
        store: Store,
        index: u64,
    }

    impl Leader {
        fn apply(&mut self, command: Command) {
            self.index += 1;
            self.store.apply_command(self.index, command);
        }

        fn pass(&mut self) {
            let mut next = self.index * 100;
            let mut new_id = || {
                next += 1;
                format!("t{next}")
            };
            let changes = crate::orchestrator::pass(self.index, self.store.data(), &mut new_id);
            let expected_version = self.store.data().tasks_version;
            self.apply(Command::WriteTasks {
                expected_version,
                changes,
            });
        }

        fn run_all(&mut self) {
            let mut by_node: BTreeMap<String, Vec<TaskStatusUpdate>> = BTreeMap::new();
            for task in self.store.data().tasks.values() {
                if let Some(node) = &task.node_id {
                    by_node
                        .entry(node.clone())
                        .or_default()
                        .push(TaskStatusUpdate {
                            id: task.id.clone(),
                            status: TaskStatus::new(TaskState::Running, self.index),
                        });
                }
            }
            for (node_id, updates) in by_node {
                self.apply(Command::TaskStatuses { node_id, updates });
            }
        }

        /// Some of everything: nodes, services created, scaled and removed, tasks made,
        /// placed, running and stopped.
        fn busy(&mut self) {
            self.apply(node("b", NodeRole::Worker));
            self.apply(service("web", 3, Op::Create));
            self.pass();
            self.run_all();
            self.apply(service("web", 1, Op::Scale));
            self.pass();
            self.apply(Command::NodeStatuses {
                at: 9,
                changes: vec![NodeStatusChange {
                    id: "a".into(),
                    status: NodeStatus::Down,
                    worker_error: None,
                    ports_taken: Vec::new(),
                }],
            });
            self.pass();
            self.apply(service("db", 2, Op::Create));
            self.pass();
            self.run_all();
            self.apply(service("web", 0, Op::Remove));
            self.pass();
        }
    }

    fn started() -> Leader {
        let mut cluster = Leader {
            store: Store::default(),
            index: 0,
        };
        cluster.apply(fixtures::cluster());
        cluster.apply(node("a", NodeRole::Worker));
        cluster
    }

    #[tokio::test]
    async fn a_view_and_the_changes_after_it_make_the_state() {
        let mut cluster = started();
        let Subscription {
            mut view,
            version,
            mut changes,
        } = cluster.store.subscribe(|store| watched(store.data()));
        assert_eq!(version, cluster.index);
        cluster.busy();
        let mut indexes = Vec::new();
        while let Some(entry) = changes.try_recv().unwrap() {
            indexes.push(entry.index);
            follow(&mut view, &entry);
        }
        assert!(indexes.len() > 5, "{indexes:?}");
        assert!(
            indexes.windows(2).all(|w| w[0] < w[1]),
            "in the order applied: {indexes:?}"
        );
        assert!(indexes[0] > version, "only entries after the view");
        // The store's per-service index agrees with its tasks.
        for task in cluster.store.data().tasks.values() {
            assert!(
                cluster
                    .store
                    .tasks_of(&task.service_id)
                    .any(|t| t.id == task.id)
            );
        }
        let services: BTreeSet<&str> = cluster
            .store
            .data()
            .tasks
            .values()
            .map(|t| t.service_id.as_str())
            .collect();
        let indexed: usize = services
            .iter()
            .map(|id| cluster.store.tasks_of(id).count())
            .sum();
        assert_eq!(indexed, cluster.store.data().tasks.len());
        let mut state = watched(cluster.store.data());
        // Entries that change nothing watched are not published; their version is the
        // store's.
        view.version = state.version;
        assert_eq!(view, std::mem::take(&mut state));
    }

    #[tokio::test]
    async fn each_change_carries_the_record_as_it_is_after_the_entry() {
        let mut cluster = started();
        let mut subscription = cluster.store.subscribe(|_| ());
        cluster.apply(service("web", 1, Op::Create));
        cluster.pass();
        let created = subscription
            .changes
            .try_recv()
            .unwrap()
            .expect("a change was published");
        // The stack's network, then its service.
        let [
            Changed::Network { .. },
            Changed::Service {
                name,
                service: Some(service),
                update_status: None,
                ..
            },
        ] = created.changed.as_slice()
        else {
            panic!("{created:?}");
        };
        assert_eq!((name.as_str(), created.objects_version), ("s_web", 3));
        let written = subscription
            .changes
            .try_recv()
            .unwrap()
            .expect("a change was published");
        let [
            Changed::Task {
                task: Some(task), ..
            },
        ] = written.changed.as_slice()
        else {
            panic!("one task made and placed in one entry, one change: {written:?}");
        };
        assert_eq!(task.service_id, *service.id.as_ref().unwrap());
        assert_eq!(task.node_id.as_deref(), Some("a"));
        assert_eq!(written.tasks_version, written.index);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_resyncs_from_a_fresh_view() {
        let mut cluster = started();
        let mut subscription = cluster.store.subscribe(|store| watched(store.data()));
        for n in 0..CAPACITY + 10 {
            cluster.apply(Command::NodeStatuses {
                at: n as u64,
                changes: vec![NodeStatusChange {
                    id: "a".into(),
                    status: if n % 2 == 0 {
                        NodeStatus::Down
                    } else {
                        NodeStatus::Ready
                    },
                    worker_error: None,
                    ports_taken: Vec::new(),
                }],
            });
        }
        assert!(matches!(
            subscription.changes.try_recv(),
            Err(Missed::Lagged(_))
        ));
        let mut subscription = cluster.store.subscribe(|store| watched(store.data()));
        cluster.busy();
        while let Some(entry) = subscription.changes.try_recv().unwrap() {
            follow(&mut subscription.view, &entry);
        }
        subscription.view.version = cluster.store.data().version;
        assert_eq!(subscription.view, watched(cluster.store.data()));
    }

    #[tokio::test]
    async fn a_restored_snapshot_closes_the_watch() {
        use crate::raft::replica::StateMachine;
        let mut cluster = started();
        let mut subscription = cluster.store.subscribe(|_| ());
        let snapshot = cluster.store.snapshot();
        cluster.store.restore(&snapshot);
        assert_eq!(subscription.changes.try_recv(), Err(Missed::Closed));
        let mut subscription = cluster.store.subscribe(|_| ());
        cluster.apply(node("b", NodeRole::Worker));
        let entry = subscription
            .changes
            .try_recv()
            .unwrap()
            .expect("a change was published");
        assert!(matches!(&entry.changed[..], [Changed::Node { id, node: Some(_) }] if id == "b"));
    }

    #[tokio::test]
    async fn credentials_changes_are_published_by_service_id() {
        let mut cluster = started();
        let mut subscription = cluster.store.subscribe(|_| ());
        let Command::ApplyPlan { actions, .. } = service("web", 1, Op::Create) else {
            unreachable!()
        };
        let auth = swarm_api::auth::RegistryAuth::from([(
            "127.0.0.1:5000".to_owned(),
            swarm_api::auth::RegistryCredential {
                username: "ci".into(),
                password: "pw".into(),
            },
        )]);
        cluster.apply(Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: None,
            actions,
            registry_auth: BTreeMap::from([("s_web".to_owned(), auth.clone())]),
            override_git: false,
        });
        let entry = subscription
            .changes
            .try_recv()
            .unwrap()
            .expect("a change was published");
        let id = cluster.store.export().services[0].id.clone().unwrap();
        assert!(entry.changed.contains(&Changed::Credentials {
            service_id: id,
            auth: Some(auth)
        }));
    }
}
