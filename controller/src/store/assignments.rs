//! Each node's assignments, followed from the store's watch: the dispatcher's pure core. Built
//! once from the state, then kept current by each entry's changes at the cost of what
//! changed, telling which nodes' assignments changed, so that a node is sent its own when
//! they change and no node's are read again otherwise. A node's assignments carry its
//! share of the endpoint table (`endpoints.rs`), followed alongside.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use swarm_api::auth::RegistryAuth;
use swarm_api::endpoints::NetworkView;
use swarm_api::task::{DesiredState, Task};

use super::{Changed, Changes, Endpoints, Store};

/// What a node's agent is given: its tasks that should run and those it should stop that
/// have not stopped yet (by id), its subnet, its tasks' services' registry credentials
/// (by service id, and no others), and the overlay networks its tasks are on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assignment {
    pub tasks: Vec<Task>,
    pub subnet: String,
    pub registry_auth: BTreeMap<String, RegistryAuth>,
    pub network_view: NetworkView,
}

#[derive(Debug, Default)]
pub struct Assignments {
    tasks: HashMap<String, BTreeMap<String, Task>>,
    node_of_task: HashMap<String, String>,
    subnets: HashMap<String, String>,
    credentials: BTreeMap<String, RegistryAuth>,
    endpoints: Endpoints,
}

/// Whether a node's agent is given `task`.
fn given(task: &Task) -> bool {
    task.desired == DesiredState::Running || !task.status.state.is_terminal()
}

fn subnet(node: &swarm_api::store::Node) -> String {
    node.subnet.map(|s| s.to_string()).unwrap_or_default()
}

impl Assignments {
    /// Every node's assignments in `store`.
    pub fn of(store: &Store) -> Self {
        let data = store.data();
        let mut assignments = Assignments {
            subnets: data
                .nodes
                .values()
                .map(|n| (n.id.clone(), subnet(n)))
                .collect(),
            credentials: data.registry_auth.clone(),
            endpoints: Endpoints::of(store),
            ..Assignments::default()
        };
        for task in data.tasks.values() {
            assignments.put(task.id.clone(), Some(task.clone()));
        }
        assignments
    }

    /// Follows one entry's changes; returns the nodes whose assignments changed.
    pub fn apply(&mut self, changes: &Changes) -> BTreeSet<String> {
        let mut changed_nodes = self.endpoints.apply(changes);
        for change in &changes.changed {
            match change {
                Changed::Task { id, task } => {
                    changed_nodes.extend(self.put(id.clone(), task.clone()));
                }
                Changed::Node { id, node } => {
                    let now = node.as_ref().map(subnet);
                    if self.subnets.get(id) != now.as_ref() {
                        match now {
                            Some(subnet) => drop(self.subnets.insert(id.clone(), subnet)),
                            None => drop(self.subnets.remove(id)),
                        }
                        changed_nodes.insert(id.clone());
                    }
                }
                Changed::Credentials { service_id, auth } => {
                    match auth {
                        Some(auth) => {
                            drop(self.credentials.insert(service_id.clone(), auth.clone()))
                        }
                        None => drop(self.credentials.remove(service_id)),
                    }
                    // Rare (plans only): the nodes running the service are found by a scan.
                    changed_nodes.extend(
                        self.tasks
                            .iter()
                            .filter(|(_, tasks)| {
                                tasks.values().any(|t| t.service_id == *service_id)
                            })
                            .map(|(node, _)| node.clone()),
                    );
                }
                Changed::Service { .. }
                | Changed::Network { .. }
                | Changed::Config { .. }
                | Changed::Secret { .. }
                | Changed::Repository { .. } => {}
            }
        }
        changed_nodes
    }

    /// Task `id` as it is now (`None`: gone): out of its previous node's set, into its
    /// node's if it is given; the nodes whose sets changed.
    fn put(&mut self, id: String, task: Option<Task>) -> Vec<String> {
        let mut changed = Vec::new();
        if let Some(node) = self.node_of_task.remove(&id) {
            if let Some(tasks) = self.tasks.get_mut(&node) {
                tasks.remove(&id);
                if tasks.is_empty() {
                    self.tasks.remove(&node);
                }
            }
            changed.push(node);
        }
        if let Some(task) = task.filter(given)
            && let Some(node) = task.node_id.clone()
        {
            self.tasks
                .entry(node.clone())
                .or_default()
                .insert(id.clone(), task);
            self.node_of_task.insert(id, node.clone());
            if !changed.contains(&node) {
                changed.push(node);
            }
        }
        changed
    }

    /// What node `node_id` is given now.
    pub fn of_node(&self, node_id: &str) -> Assignment {
        let tasks: Vec<Task> = self
            .tasks
            .get(node_id)
            .map(|tasks| tasks.values().cloned().collect())
            .unwrap_or_default();
        let registry_auth = tasks
            .iter()
            .filter_map(|t| {
                let auth = self.credentials.get(&t.service_id)?;
                Some((t.service_id.clone(), auth.clone()))
            })
            .collect();
        Assignment {
            tasks,
            subnet: self.subnets.get(node_id).cloned().unwrap_or_default(),
            registry_auth,
            network_view: self.endpoints.of_node(node_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use swarm_api::auth::RegistryCredential;
    use swarm_api::store::{Command, NodeRole, TaskChange, TaskStatusUpdate};
    use swarm_api::task::{TaskState, TaskStatus};

    use super::*;
    use crate::store::fixtures::{cluster, node};

    fn task_spec() -> swarm_api::spec::TaskSpec {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, "services:\n  web:\n    image: nginx\n").unwrap();
        let stack = crate::stack::load(&crate::source::WorkTree, &path, "s.yaml", &|_| None);
        stack.stack.unwrap().services.remove(0).task
    }

    fn task(id: &str, service: &str, node: &str) -> Task {
        Task {
            id: id.into(),
            service_id: service.into(),
            service_name: service.into(),
            slot: Some(1),
            node_id: Some(node.into()),
            spec: task_spec(),
            desired: DesiredState::Running,
            status: TaskStatus::new(TaskState::Assigned, 1),
            created_at: 1,
            started_at: None,
            networks: Vec::new(),
        }
    }

    /// What the dispatcher sent before the watch: each node's tasks read from the store.
    fn read(store: &Store, node_id: &str) -> Assignment {
        let tasks: Vec<Task> = store
            .tasks_on(node_id)
            .filter(|t| given(t))
            .cloned()
            .collect();
        let registry_auth = tasks
            .iter()
            .filter_map(|t| {
                let auth = store.data().registry_auth.get(&t.service_id)?;
                Some((t.service_id.clone(), auth.clone()))
            })
            .collect();
        let subnet = store.data().nodes.get(node_id).and_then(|n| n.subnet);
        Assignment {
            tasks,
            subnet: subnet.map(|s| s.to_string()).unwrap_or_default(),
            registry_auth,
            network_view: Endpoints::of(store).of_node(node_id),
        }
    }

    #[test]
    fn assignments_follow_the_changes_and_name_the_nodes_they_change() {
        let mut store = Store::default();
        let mut index = 0;
        let mut apply = |store: &mut Store, command| {
            index += 1;
            store.apply_command(index, command);
        };
        apply(&mut store, cluster());
        apply(&mut store, node("a", NodeRole::Worker));
        let mut subscription = store.subscribe(Assignments::of);
        apply(&mut store, node("b", NodeRole::Worker));
        let write = |changes| Command::WriteTasks {
            expected_version: 0,
            changes,
        };
        apply(
            &mut store,
            write(vec![
                TaskChange::Create(Box::new(task("t1", "web", "a"))),
                TaskChange::Create(Box::new(task("t2", "web", "b"))),
            ]),
        );
        let expected_version = store.data().tasks_version;
        apply(
            &mut store,
            Command::WriteTasks {
                expected_version,
                changes: vec![TaskChange::Desire {
                    id: "t1".into(),
                    desired: DesiredState::Shutdown,
                }],
            },
        );
        apply(
            &mut store,
            Command::TaskStatuses {
                node_id: "a".into(),
                updates: vec![TaskStatusUpdate {
                    id: "t1".into(),
                    status: TaskStatus::new(TaskState::Shutdown, 5),
                }],
            },
        );
        let assignments = &mut subscription.view;
        let mut changed = Vec::new();
        while let Some(entry) = subscription.changes.try_recv().unwrap() {
            changed.push(assignments.apply(&entry));
        }
        let names = |nodes: &[&str]| nodes.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            changed,
            vec![
                names(&["b"]),
                names(&["a", "b"]),
                names(&["a"]),
                names(&["a"])
            ]
        );
        for node in ["a", "b", "c"] {
            assert_eq!(assignments.of_node(node), read(&store, node), "{node}");
        }
        assert!(assignments.of_node("a").tasks.is_empty(), "t1 stopped");
        assert_eq!(assignments.of_node("b").tasks[0].id, "t2");
        assert!(!assignments.of_node("b").subnet.is_empty());
    }

    /// Moved here from the dispatcher with the logic (`registry_auth_of`), same cases.
    #[test]
    fn a_node_gets_the_credentials_of_its_own_tasks_services_only() {
        let auth = |user: &str| {
            RegistryAuth::from([(
                "127.0.0.1:5000".to_owned(),
                RegistryCredential {
                    username: user.into(),
                    password: "pw".into(),
                },
            )])
        };
        let kept = BTreeMap::from([
            ("web".to_owned(), auth("web")),
            ("db".to_owned(), auth("db")),
        ]);
        let cases: [(&[&str], &[&str]); 4] = [
            (&["web", "web"], &["web"]),
            (&["web", "db", "cache"], &["db", "web"]),
            (&["cache"], &[]),
            (&[], &[]),
        ];
        for (services, want) in cases {
            let mut assignments = Assignments {
                credentials: kept.clone(),
                ..Assignments::default()
            };
            for (i, service) in services.iter().enumerate() {
                let id = format!("t{i}");
                assignments.put(id.clone(), Some(task(&id, service, "n")));
            }
            let sent = assignments.of_node("n").registry_auth;
            assert_eq!(sent.keys().map(String::as_str).collect::<Vec<_>>(), want);
            for (id, auth) in &sent {
                assert_eq!(auth, &kept[id]);
            }
        }
    }

    /// The hub's wake-up: a task of another node changing on a network a node carries
    /// changes that node's assignment (its view), and no other node's.
    #[test]
    fn a_task_on_a_shared_network_changing_wakes_the_nodes_that_carry_it() {
        let spec: swarm_api::spec::NetworkSpec = serde_json::from_value(serde_json::json!({
            "name": "front", "driver": "overlay", "driver_opts": {}, "attachable": false,
            "internal": false, "labels": {}, "subnets": [],
        }))
        .unwrap();
        let network = Changed::Network {
            name: "front".into(),
            network: Some(swarm_api::state::Object {
                id: Some("front-id".into()),
                origin: Default::default(),
                spec,
            }),
            allocation: Some(swarm_api::store::NetworkAllocation {
                subnet: "10.0.1.0/24".parse().unwrap(),
                gateway: "10.0.1.1".parse().unwrap(),
                vni: 4096,
            }),
        };
        let on_front = |id: &str, node: &str, last: u8, state: TaskState| {
            let mut task = task(id, "web", node);
            task.status = TaskStatus::new(state, 2);
            task.networks = vec![swarm_api::task::NetworkAddress {
                network: "front".into(),
                address: std::net::Ipv4Addr::new(10, 0, 1, last),
            }];
            Changed::Task {
                id: id.into(),
                task: Some(task),
            }
        };
        let entry = |changed| Changes {
            index: 9,
            objects_version: 9,
            tasks_version: 9,
            changed,
        };
        let mut assignments = Assignments::default();
        assignments.apply(&entry(vec![
            network,
            on_front("t1", "a", 2, TaskState::Running),
            on_front("t2", "b", 3, TaskState::Assigned),
            Changed::Task {
                id: "t3".into(),
                task: Some(task("t3", "db", "c")),
            },
        ]));
        let before = assignments.of_node("a");
        let names = |nodes: &[&str]| nodes.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            assignments.apply(&entry(vec![on_front("t2", "b", 3, TaskState::Running)])),
            names(&["a", "b"])
        );
        let after = assignments.of_node("a");
        assert_eq!(before.tasks, after.tasks, "a's own tasks did not change");
        assert!(!before.network_view.networks["front"].tasks["t2"].serving);
        assert!(after.network_view.networks["front"].tasks["t2"].serving);
        assert!(assignments.of_node("c").network_view.networks.is_empty());
    }

    #[test]
    fn a_credentials_change_reaches_the_nodes_of_the_service_only() {
        let mut assignments = Assignments::default();
        for (id, service, node) in [("t1", "web", "a"), ("t2", "db", "b"), ("t3", "web", "b")] {
            assignments.put(id.into(), Some(task(id, service, node)));
        }
        let credentials = |service: &str| Changes {
            index: 9,
            objects_version: 9,
            tasks_version: 1,
            changed: vec![Changed::Credentials {
                service_id: service.into(),
                auth: None,
            }],
        };
        let names = |nodes: &[&str]| nodes.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(assignments.apply(&credentials("db")), names(&["b"]));
        assert_eq!(assignments.apply(&credentials("web")), names(&["a", "b"]));
        assert_eq!(assignments.apply(&credentials("cache")), names(&[]));
    }
}
