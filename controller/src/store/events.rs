//! Cluster events (`swarm events`) derived from the store's watch: [`EventView`] is what a
//! subscriber remembers of the state (enough to tell a creation from an update, and the
//! state a task or node left), and turns each entry's [`Changes`] into [`Event`]s; [`Ring`]
//! keeps the most recent ones for `--since`; [`EventHub`] is a manager's ring and the live
//! feed its clients' streams follow.
//!
//! All read no clock and do no IO: the time of an event is given by the caller (when its
//! manager saw the change), and a repository's record, which changes never carry (it holds
//! secrets), is read by the caller and handed in as a [`RepositorySeen`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use swarm_api::events::{Event, EventType};
use swarm_api::gitops::{Repository, RepositoryRecord, RepositoryStatus};
use swarm_api::rollout::UpdateState;
use swarm_api::spec::{FileObjectSpec, NetworkSpec, ServiceSpec};
use swarm_api::state::Object;
use swarm_api::store::{Node, NodeRole, NodeStatus};
use swarm_api::task::{DesiredState, Task, TaskState};
use tokio::sync::broadcast;

use super::Store;
use super::watch::{Changed, Changes};

/// How many events a manager keeps for `--since`: at most this many of the latest (Docker
/// keeps 256).
pub const KEPT_EVENTS: usize = 10_000;

/// What the derivation remembers of the state.
#[derive(Debug, Clone, Default)]
pub struct EventView {
    nodes: BTreeMap<String, Node>,
    tasks: BTreeMap<String, TaskSeen>,
    /// By name, as the watch names them.
    services: BTreeMap<String, ServiceSeen>,
    networks: BTreeMap<String, Object<NetworkSpec>>,
    configs: BTreeMap<String, Object<FileObjectSpec>>,
    secrets: BTreeMap<String, Object<FileObjectSpec>>,
    repositories: BTreeMap<String, RepositorySeen>,
}

/// A task's part that events report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TaskSeen {
    state: TaskState,
    desired: DesiredState,
    node_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct ServiceSeen {
    service: Object<ServiceSpec>,
    update_state: Option<UpdateState>,
}

/// A repository's record without its secrets, and its Deployments' outcomes by id.
#[derive(Debug, Clone, PartialEq)]
pub struct RepositorySeen {
    repository: Repository,
    status: RepositoryStatus,
    deployments: BTreeMap<String, DeploymentSeen>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DeploymentSeen {
    outcome: &'static str,
    commit: String,
    trigger: &'static str,
}

impl RepositorySeen {
    pub fn of(record: &RepositoryRecord) -> RepositorySeen {
        RepositorySeen {
            repository: record.repository.clone(),
            status: record.status.clone(),
            deployments: record
                .deployments
                .iter()
                .map(|d| {
                    let seen = DeploymentSeen {
                        outcome: d.outcome.as_str(),
                        commit: d.commit.id.clone(),
                        trigger: d.trigger.as_str(),
                    };
                    (d.id.clone(), seen)
                })
                .collect(),
        }
    }

    /// The records of the repositories an entry's changes name, as the store holds them now
    /// (`None`: gone).
    pub fn named(store: &Store, changes: &Changes) -> BTreeMap<String, Option<RepositorySeen>> {
        changes
            .changed
            .iter()
            .filter_map(|change| match change {
                Changed::Repository { name } => Some((
                    name.clone(),
                    store.data().repositories.get(name).map(RepositorySeen::of),
                )),
                _ => None,
            })
            .collect()
    }
}

/// Events of one entry, as they are made.
struct Made<'a> {
    time_nano: i64,
    index: u64,
    events: &'a mut Vec<Event>,
}

impl Made<'_> {
    fn push(
        &mut self,
        kind: EventType,
        action: &str,
        id: &str,
        name: &str,
        attributes: BTreeMap<String, String>,
    ) {
        self.events.push(Event {
            time_nano: self.time_nano,
            kind,
            action: action.to_owned(),
            id: id.to_owned(),
            name: name.to_owned(),
            attributes,
            index: self.index,
        });
    }
}

fn attributes<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}

fn lowercase<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => String::new(),
    }
}

fn replicas(spec: &ServiceSpec) -> String {
    spec.replicas().map(|n| n.to_string()).unwrap_or_default()
}

impl EventView {
    /// The view of the state as `store` holds it.
    pub fn of(store: &Store) -> EventView {
        let data = store.data();
        let objects = &data.objects;
        fn by_name<S: swarm_api::spec::Named + Clone>(
            list: &[Object<S>],
        ) -> BTreeMap<String, Object<S>> {
            list.iter()
                .map(|o| (o.spec.name().to_owned(), o.clone()))
                .collect()
        }
        EventView {
            nodes: data.nodes.clone(),
            tasks: data
                .tasks
                .values()
                .map(|t| (t.id.clone(), TaskSeen::of(t)))
                .collect(),
            services: objects
                .services
                .iter()
                .map(|s| {
                    let update_state =
                        s.id.as_ref()
                            .and_then(|id| data.update_status.get(id))
                            .map(|u| u.state);
                    let seen = ServiceSeen {
                        service: s.clone(),
                        update_state,
                    };
                    (s.spec.name.clone(), seen)
                })
                .collect(),
            networks: by_name(&objects.networks),
            configs: by_name(&objects.configs),
            secrets: by_name(&objects.secrets),
            repositories: data
                .repositories
                .iter()
                .map(|(name, record)| (name.clone(), RepositorySeen::of(record)))
                .collect(),
        }
    }

    /// The events of one entry's changes, seen at `time_nano`; `repositories` holds the
    /// records of the repositories the changes name ([`RepositorySeen::named`]).
    pub fn derive(
        &mut self,
        changes: &Changes,
        repositories: &BTreeMap<String, Option<RepositorySeen>>,
        time_nano: i64,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let mut made = Made {
            time_nano,
            index: changes.index,
            events: &mut events,
        };
        for change in &changes.changed {
            match change {
                Changed::Node { id, node } => self.node(&mut made, id, node.as_ref()),
                Changed::Task { id, task } => self.task(&mut made, id, task.as_ref()),
                Changed::Service {
                    name,
                    service,
                    update_status,
                    ..
                } => {
                    let seen = service.as_ref().map(|service| ServiceSeen {
                        service: service.clone(),
                        update_state: update_status.as_ref().map(|u| u.state),
                    });
                    self.service(&mut made, name, seen);
                }
                Changed::Network { name, network, .. } => {
                    let driver = |n: &Object<NetworkSpec>| n.spec.driver.clone();
                    object(
                        &mut made,
                        EventType::Network,
                        &mut self.networks,
                        name,
                        network.as_ref(),
                        |n| attributes([("driver", driver(n))]),
                    );
                }
                Changed::Config { name, config } => object(
                    &mut made,
                    EventType::Config,
                    &mut self.configs,
                    name,
                    config.as_ref(),
                    |_| BTreeMap::new(),
                ),
                Changed::Secret { name, secret } => object(
                    &mut made,
                    EventType::Secret,
                    &mut self.secrets,
                    name,
                    secret.as_ref(),
                    |_| BTreeMap::new(),
                ),
                Changed::Repository { name } => {
                    if let Some(record) = repositories.get(name) {
                        self.repository(&mut made, name, record.as_ref());
                    }
                }
                // Not objects users see: no event.
                Changed::Credentials { .. } | Changed::FileContent { .. } => {}
            }
        }
        events
    }

    fn hostname(&self, node_id: Option<&str>) -> String {
        node_id
            .and_then(|id| self.nodes.get(id))
            .map(|n| n.hostname.clone())
            .unwrap_or_default()
    }

    fn node(&mut self, made: &mut Made, id: &str, node: Option<&Node>) {
        let before = self.nodes.get(id);
        match (before, node) {
            (None, None) => {}
            (Some(before), None) => {
                let name = before.hostname.clone();
                made.push(EventType::Node, "remove", id, &name, BTreeMap::new());
                self.nodes.remove(id);
            }
            (None, Some(node)) => {
                let attributes = attributes([
                    ("role", lowercase(&node.role)),
                    ("availability", lowercase(&node.availability)),
                    ("state", lowercase(&node.status)),
                ]);
                made.push(EventType::Node, "create", id, &node.hostname, attributes);
                self.nodes.insert(id.to_owned(), node.clone());
            }
            (Some(before), Some(node)) => {
                let name = &node.hostname;
                if before.status != node.status {
                    let attributes = attributes([
                        ("state.old", lowercase(&before.status)),
                        ("state.new", lowercase(&node.status)),
                    ]);
                    made.push(
                        EventType::Node,
                        &lowercase(&node.status),
                        id,
                        name,
                        attributes,
                    );
                }
                if before.role != node.role {
                    let action = match node.role {
                        NodeRole::Manager => "promote",
                        NodeRole::Worker => "demote",
                    };
                    let attributes = attributes([
                        ("role.old", lowercase(&before.role)),
                        ("role.new", lowercase(&node.role)),
                    ]);
                    made.push(EventType::Node, action, id, name, attributes);
                }
                // Anything else (availability, labels, address, the worker's error).
                let rest = |n: &Node| Node {
                    status: NodeStatus::Unknown,
                    status_since: 0,
                    role: NodeRole::Worker,
                    ..n.clone()
                };
                if rest(before) != rest(node) {
                    let mut attributes = BTreeMap::new();
                    if before.availability != node.availability {
                        attributes.insert(
                            "availability.old".to_owned(),
                            lowercase(&before.availability),
                        );
                        attributes
                            .insert("availability.new".to_owned(), lowercase(&node.availability));
                    }
                    made.push(EventType::Node, "update", id, name, attributes);
                }
                self.nodes.insert(id.to_owned(), node.clone());
            }
        }
    }

    fn task(&mut self, made: &mut Made, id: &str, task: Option<&Task>) {
        let Some(task) = task else {
            if self.tasks.remove(id).is_some() {
                made.push(EventType::Task, "remove", id, "", BTreeMap::new());
            }
            return;
        };
        let seen = TaskSeen::of(task);
        let before = self.tasks.insert(id.to_owned(), seen.clone());
        if before.as_ref() == Some(&seen) {
            return;
        }
        let mut attributes = attributes([
            ("service", task.service_name.clone()),
            ("service.id", task.service_id.clone()),
            ("node", self.hostname(task.node_id.as_deref())),
            ("node.id", task.node_id.clone().unwrap_or_default()),
            ("image", task.spec.container.image.clone()),
            ("desired", lowercase(&task.desired)),
        ]);
        let name = task.name();
        let Some(before) = before else {
            made.push(EventType::Task, "create", id, &name, attributes.clone());
            if task.status.state != TaskState::New {
                state_attributes(&mut attributes, task);
                made.push(
                    EventType::Task,
                    task.status.state.as_str(),
                    id,
                    &name,
                    attributes,
                );
            }
            return;
        };
        if before.state != seen.state {
            state_attributes(&mut attributes, task);
            made.push(
                EventType::Task,
                task.status.state.as_str(),
                id,
                &name,
                attributes,
            );
        } else {
            // The managers changed what they want of it (a stop order), or placed it.
            made.push(EventType::Task, "update", id, &name, attributes);
        }
    }

    fn service(&mut self, made: &mut Made, name: &str, service: Option<ServiceSeen>) {
        let before = self.services.get(name);
        let id = |s: &ServiceSeen| s.service.id.clone().unwrap_or_default();
        match (before, service) {
            (None, None) => {}
            (Some(before), None) => {
                made.push(
                    EventType::Service,
                    "remove",
                    &id(before),
                    name,
                    BTreeMap::new(),
                );
                self.services.remove(name);
            }
            (before, Some(after)) => {
                let spec = &after.service.spec;
                let same_service = before.filter(|b| b.service.id == after.service.id);
                match same_service {
                    None => {
                        if let Some(before) = before {
                            // Another service took the name in the same entry.
                            made.push(
                                EventType::Service,
                                "remove",
                                &id(before),
                                name,
                                BTreeMap::new(),
                            );
                        }
                        let attributes = attributes([
                            ("image", spec.task.container.image.clone()),
                            ("replicas", replicas(spec)),
                        ]);
                        made.push(EventType::Service, "create", &id(&after), name, attributes);
                    }
                    Some(before) if *before != after => {
                        let old = &before.service.spec;
                        let mut attributes = BTreeMap::new();
                        let mut changed = |key: &str, old: String, new: String| {
                            if old != new {
                                attributes.insert(format!("{key}.old"), old);
                                attributes.insert(format!("{key}.new"), new);
                            }
                        };
                        changed(
                            "image",
                            old.task.container.image.clone(),
                            spec.task.container.image.clone(),
                        );
                        changed("replicas", replicas(old), replicas(spec));
                        let state = |s: Option<UpdateState>| {
                            s.map(|s| s.as_str().to_owned()).unwrap_or_default()
                        };
                        changed(
                            "updatestate",
                            state(before.update_state),
                            state(after.update_state),
                        );
                        made.push(EventType::Service, "update", &id(&after), name, attributes);
                    }
                    // What else the watch carries (virtual IPs) is not the service's own.
                    Some(_) => {}
                }
                self.services.insert(name.to_owned(), after);
            }
        }
    }

    fn repository(&mut self, made: &mut Made, name: &str, record: Option<&RepositorySeen>) {
        let before = self.repositories.get(name);
        let Some(after) = record else {
            if before.is_some() {
                made.push(EventType::Repository, "remove", name, name, BTreeMap::new());
                self.repositories.remove(name);
            }
            return;
        };
        match before {
            None => {
                let attributes = attributes([
                    ("url", after.repository.url.clone()),
                    ("branch", after.repository.branch.clone()),
                ]);
                made.push(EventType::Repository, "create", name, name, attributes);
            }
            Some(before)
                if (&before.repository, &before.status) != (&after.repository, &after.status) =>
            {
                let head = |r: &RepositorySeen| {
                    r.status
                        .fetched
                        .as_ref()
                        .map(|f| f.commit.clone())
                        .unwrap_or_default()
                };
                made.push(
                    EventType::Repository,
                    "update",
                    name,
                    name,
                    attributes([("commit", head(after))]),
                );
            }
            Some(_) => {}
        }
        let known = before.map(|b| &b.deployments);
        for (id, deployment) in &after.deployments {
            let was = known.and_then(|k| k.get(id));
            if was == Some(deployment) {
                continue;
            }
            let attributes = attributes([
                ("repository", name.to_owned()),
                ("commit", deployment.commit.clone()),
                ("trigger", deployment.trigger.to_owned()),
                ("outcome", deployment.outcome.to_owned()),
            ]);
            if was.is_none() {
                made.push(EventType::Deployment, "create", id, id, attributes.clone());
            }
            made.push(
                EventType::Deployment,
                deployment.outcome,
                id,
                id,
                attributes,
            );
        }
        self.repositories.insert(name.to_owned(), after.clone());
    }
}

impl TaskSeen {
    fn of(task: &Task) -> TaskSeen {
        TaskSeen {
            state: task.status.state,
            desired: task.desired,
            node_id: task.node_id.clone(),
        }
    }
}

/// A task's error and exit code, where its state reports them.
fn state_attributes(attributes: &mut BTreeMap<String, String>, task: &Task) {
    if let Some(error) = &task.status.error {
        attributes.insert("error".to_owned(), error.clone());
    }
    if let Some(code) = task.status.exit_code {
        attributes.insert("exitcode".to_owned(), code.to_string());
    }
}

/// A network, config or secret made, changed or gone.
fn object<S: Clone + PartialEq>(
    made: &mut Made,
    kind: EventType,
    known: &mut BTreeMap<String, Object<S>>,
    name: &str,
    after: Option<&Object<S>>,
    attributes: impl Fn(&Object<S>) -> BTreeMap<String, String>,
) {
    let id = |o: &Object<S>| o.id.clone().unwrap_or_default();
    match (known.get(name), after) {
        (None, None) => {}
        (Some(before), None) => {
            made.push(kind, "remove", &id(before), name, BTreeMap::new());
            known.remove(name);
        }
        (before, Some(after)) => {
            let action = match before {
                None => "create",
                Some(before) if before.id != after.id => "create",
                Some(before) if before == after => return,
                Some(_) => "update",
            };
            made.push(kind, action, &id(after), name, attributes(after));
            known.insert(name.to_owned(), after.clone());
        }
    }
}

/// The latest events, at most [`KEPT_EVENTS`], and since when they are complete.
#[derive(Debug, Clone)]
pub struct Ring {
    capacity: usize,
    events: VecDeque<Event>,
    /// Events from this time on are all kept: when recording began, or just after the last
    /// event dropped to make room.
    complete_since_nano: i64,
}

/// What a `--since` finds in the ring.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub events: Vec<Event>,
    /// Set when events asked for may be missing: the ring is complete only since then.
    pub complete_since_nano: Option<i64>,
}

impl Ring {
    /// An empty ring of `capacity` events, recording from `started_nano` on.
    pub fn new(capacity: usize, started_nano: i64) -> Ring {
        Ring {
            capacity,
            events: VecDeque::with_capacity(capacity.min(1024)),
            complete_since_nano: started_nano,
        }
    }

    pub fn push(&mut self, event: Event) {
        if self.events.len() == self.capacity
            && let Some(dropped) = self.events.pop_front()
        {
            self.complete_since_nano = dropped.time_nano + 1;
        }
        self.events.push_back(event);
    }

    /// Events up to `time_nano` may be missing (the recorder missed entries): a replay
    /// from before it says so.
    pub fn lost_until(&mut self, time_nano: i64) {
        self.complete_since_nano = self.complete_since_nano.max(time_nano);
    }

    /// The kept events at or after `since_nano` and before `until_nano`, in order.
    pub fn since(&self, since_nano: i64, until_nano: Option<i64>) -> Replay {
        let start = self.events.partition_point(|e| e.time_nano < since_nano);
        let events = self
            .events
            .range(start..)
            .take_while(|e| until_nano.is_none_or(|until| e.time_nano <= until))
            .cloned()
            .collect();
        Replay {
            events,
            complete_since_nano: (since_nano < self.complete_since_nano)
                .then_some(self.complete_since_nano),
        }
    }
}

/// Events a client's feed may fall behind by before it loses some (and is told so).
pub const LIVE_EVENTS: usize = 4096;

/// A manager's kept events and the live feed of new ones.
#[derive(Debug)]
pub struct EventHub {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<Event>>,
}

impl EventHub {
    /// A hub keeping [`KEPT_EVENTS`], recording from `started_nano` on.
    pub fn new(started_nano: i64) -> EventHub {
        EventHub {
            ring: Mutex::new(Ring::new(KEPT_EVENTS, started_nano)),
            live: broadcast::channel(LIVE_EVENTS).0,
        }
    }

    /// Keeps `events` and sends them to the feeds, under the ring's lock so that a feed
    /// starting meanwhile finds each either in its replay or in its live part, never both.
    pub fn publish(&self, events: Vec<Event>) {
        let mut ring = self
            .ring
            .lock()
            .expect("the event ring's lock is not poisoned");
        for event in events {
            // No feed listening is not an error.
            let _ = self.live.send(Arc::new(event.clone()));
            ring.push(event);
        }
    }

    /// The recorder missed entries until now (`now_nano`): their events are not kept.
    pub fn lost_until(&self, now_nano: i64) {
        let mut ring = self
            .ring
            .lock()
            .expect("the event ring's lock is not poisoned");
        ring.lost_until(now_nano);
    }

    /// The kept events from `since_nano` (when asked) and the feed of those after them.
    pub fn subscribe(
        &self,
        since_nano: Option<i64>,
        until_nano: Option<i64>,
    ) -> (Option<Replay>, broadcast::Receiver<Arc<Event>>) {
        let ring = self
            .ring
            .lock()
            .expect("the event ring's lock is not poisoned");
        let replay = since_nano.map(|since| ring.since(since, until_nano));
        (replay, self.live.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use swarm_api::plan::Op;
    use swarm_api::store::{Availability, Command, NodeStatusChange, NodeUpdate, TaskStatusUpdate};
    use swarm_api::task::TaskStatus;

    use super::*;
    use crate::store::fixtures::{self, node, service_plan as service};

    /// A store driven as the leader drives it, with a subscriber deriving events.
    struct Cluster {
        store: Store,
        index: u64,
        view: EventView,
        changes: super::super::Receiver,
        events: Vec<Event>,
    }

    impl Cluster {
        fn new() -> Cluster {
            let mut store = Store::default();
            store.apply_command(1, fixtures::cluster());
            store.apply_command(2, node("a", NodeRole::Worker));
            let subscription = store.subscribe(EventView::of);
            Cluster {
                store,
                index: 2,
                view: subscription.view,
                changes: subscription.changes,
                events: Vec::new(),
            }
        }

        fn apply(&mut self, command: Command) {
            self.index += 1;
            self.store.apply_command(self.index, command);
            while let Some(changes) = self.changes.try_recv().unwrap() {
                let repositories = RepositorySeen::named(&self.store, &changes);
                let time = changes.index as i64 * 1000;
                let events = self.view.derive(&changes, &repositories, time);
                self.events.extend(events);
            }
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

        fn report(&mut self, state: TaskState) {
            let updates: Vec<TaskStatusUpdate> = self
                .store
                .data()
                .tasks
                .values()
                .filter(|t| !t.status.state.is_terminal())
                .filter(|t| t.node_id.as_deref() == Some("a"))
                .map(|t| TaskStatusUpdate {
                    id: t.id.clone(),
                    status: TaskStatus::new(
                        if t.desired == DesiredState::Running {
                            state
                        } else {
                            TaskState::Shutdown
                        },
                        self.index,
                    ),
                })
                .collect();
            self.apply(Command::TaskStatuses {
                node_id: "a".into(),
                updates,
            });
        }

        /// `type action name` of each event since the last call.
        fn take(&mut self) -> Vec<String> {
            std::mem::take(&mut self.events)
                .into_iter()
                .map(|e| format!("{} {} {}", e.kind.as_str(), e.action, e.name))
                .collect()
        }
    }

    #[test]
    fn a_services_life_gives_dockers_events_in_order() {
        let mut cluster = Cluster::new();
        cluster.apply(service("web", 2, Op::Create));
        assert_eq!(
            cluster.take(),
            ["network create s_default", "service create s_web"]
        );
        cluster.pass();
        let made = cluster.take();
        assert_eq!(
            made,
            [
                "task create s_web.1",
                "task assigned s_web.1",
                "task create s_web.2",
                "task assigned s_web.2"
            ],
            "each task made and placed in one entry"
        );
        cluster.report(TaskState::Running);
        assert_eq!(
            cluster.take(),
            ["task running s_web.1", "task running s_web.2"]
        );
        cluster.apply(service("web", 1, Op::Scale));
        let events = cluster.events.clone();
        assert_eq!(cluster.take(), ["service update s_web"]);
        assert_eq!(events[0].attributes["replicas.old"], "2");
        assert_eq!(events[0].attributes["replicas.new"], "1");
        cluster.pass();
        assert_eq!(
            cluster.take(),
            ["task update s_web.2"],
            "the stop order of the highest slot"
        );
        cluster.report(TaskState::Running);
        assert_eq!(cluster.take(), ["task shutdown s_web.2"]);
        cluster.apply(service("web", 0, Op::Remove));
        let removed = cluster.take();
        assert_eq!(removed, ["service remove s_web"]);
    }

    #[test]
    fn task_events_name_their_service_node_and_image() {
        let mut cluster = Cluster::new();
        cluster.apply(service("web", 1, Op::Create));
        cluster.pass();
        cluster.report(TaskState::Failed);
        let failed = cluster.events.last().unwrap().clone();
        assert_eq!(failed.action, "failed");
        let service_id = cluster.store.export().services[0].id.clone().unwrap();
        let expected: BTreeMap<String, String> = [
            ("service", "s_web"),
            ("service.id", service_id.as_str()),
            ("node", "host-a"),
            ("node.id", "a"),
            ("image", "nginx"),
            ("desired", "running"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(failed.attributes, expected);
        assert_eq!(failed.name, "s_web.1");
        assert_eq!(failed.index, cluster.index);
        assert_eq!(failed.time_nano, cluster.index as i64 * 1000);
    }

    #[test]
    fn node_events_say_what_changed() {
        let mut cluster = Cluster::new();
        cluster.apply(node("b", NodeRole::Worker));
        cluster.apply(Command::NodeStatuses {
            at: 9,
            changes: vec![NodeStatusChange {
                id: "b".into(),
                status: NodeStatus::Down,
                worker_error: None,
                ports_taken: Vec::new(),
            }],
        });
        cluster.apply(Command::UpdateNode(NodeUpdate {
            id: "b".into(),
            availability: Some(Availability::Drain),
            role: None,
            labels_add: BTreeMap::new(),
            labels_remove: Vec::new(),
        }));
        let events = cluster.events.clone();
        assert_eq!(
            cluster.take(),
            [
                "node create host-b",
                "node down host-b",
                "node update host-b"
            ]
        );
        assert_eq!(events[1].attributes["state.old"], "ready");
        assert_eq!(events[2].attributes["availability.new"], "drain");
        cluster.apply(Command::RemoveNode { id: "b".into() });
        assert_eq!(cluster.take(), ["node remove host-b"]);
    }

    #[test]
    fn repositories_and_their_deployments_give_events() {
        use swarm_api::gitops::{
            Commit, Deployment, DeploymentOutcome, Repository, RepositorySecrets, Trigger,
        };
        let mut cluster = Cluster::new();
        cluster.apply(Command::AddRepository {
            repository: Repository {
                name: "app".into(),
                url: "/srv/git/app.git".into(),
                branch: "main".into(),
                path: "stacks".into(),
                interval_ms: 15_000,
                self_heal: false,
                prune: false,
                notify: None,
                created_at: 5,
            },
            secrets: RepositorySecrets::default(),
        });
        assert_eq!(cluster.take(), ["repository create app"]);
        let Command::ApplyPlan { actions, .. } = service("web", 1, Op::Create) else {
            unreachable!()
        };
        let expected_version = cluster.store.data().version;
        cluster.apply(Command::Deploy {
            expected_version,
            deployment: Box::new(Deployment {
                id: String::new(),
                repository: "app".into(),
                commit: Commit {
                    id: "1a2b3c".into(),
                    author_name: "Ada".into(),
                    author_email: "ada@example.com".into(),
                    summary: "deploy".into(),
                    time: 1,
                },
                trigger: Trigger::Webhook,
                created_at: 10,
                updated_at: 10,
                plan: swarm_api::plan::Plan {
                    format: swarm_api::plan::PLAN_FORMAT,
                    basis: Default::default(),
                    actions,
                },
                outcome: DeploymentOutcome::Applied,
            }),
            stacks: ["s".to_owned()].into(),
            file_contents: Default::default(),
        });
        let events = cluster.events.clone();
        let made = cluster.take();
        let deployment = events
            .iter()
            .find(|e| e.kind == EventType::Deployment)
            .expect("a deployment event")
            .clone();
        let id = deployment.id.clone();
        assert!(id.starts_with("app-"), "{id}");
        let deployments: Vec<&String> = made
            .iter()
            .filter(|e| e.starts_with("deployment"))
            .collect();
        assert_eq!(
            deployments,
            [
                &format!("deployment create {id}"),
                &format!("deployment applied {id}")
            ]
        );
        assert!(
            made.contains(&"service create s_web".to_owned()),
            "{made:?}"
        );
        assert_eq!(deployment.attributes["repository"], "app");
        assert_eq!(deployment.attributes["commit"], "1a2b3c");
        assert_eq!(deployment.attributes["trigger"], "webhook");
        cluster.apply(Command::SetDeploymentOutcome {
            repository: "app".into(),
            id: id.clone(),
            outcome: DeploymentOutcome::Converged,
            at: 20,
        });
        assert_eq!(cluster.take(), [format!("deployment converged {id}")]);
        let expected_version = cluster.store.data().version;
        cluster.apply(Command::RemoveRepository {
            name: "app".into(),
            expected_version,
            actions: Vec::new(),
        });
        assert_eq!(cluster.take(), ["repository remove app"]);
    }

    fn event(time_nano: i64) -> Event {
        Event {
            time_nano,
            kind: EventType::Node,
            action: "ready".into(),
            id: "a".into(),
            name: "a".into(),
            attributes: BTreeMap::new(),
            index: time_nano as u64,
        }
    }

    #[test]
    fn the_ring_keeps_the_latest_and_says_when_it_is_complete_from() {
        let mut ring = Ring::new(3, 10);
        for time in [10, 20, 30] {
            ring.push(event(time));
        }
        let times = |replay: &Replay| {
            replay
                .events
                .iter()
                .map(|e| e.time_nano)
                .collect::<Vec<_>>()
        };
        let all = ring.since(10, None);
        assert_eq!(
            (times(&all), all.complete_since_nano),
            (vec![10, 20, 30], None)
        );
        let early = ring.since(5, None);
        assert_eq!(
            early.complete_since_nano,
            Some(10),
            "before recording began"
        );
        ring.push(event(40));
        let replay = ring.since(15, None);
        assert_eq!(
            (times(&replay), replay.complete_since_nano),
            (vec![20, 30, 40], None)
        );
        let replay = ring.since(10, None);
        assert_eq!(times(&replay), [20, 30, 40]);
        assert_eq!(replay.complete_since_nano, Some(11), "10 was dropped");
        let window = ring.since(20, Some(30));
        assert_eq!(
            (times(&window), window.complete_since_nano),
            (vec![20, 30], None)
        );
        ring.lost_until(35);
        let replay = ring.since(30, None);
        assert_eq!(times(&replay), [30, 40]);
        assert_eq!(
            replay.complete_since_nano,
            Some(35),
            "the recorder missed entries"
        );
    }
}
