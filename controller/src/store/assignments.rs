//! Each node's assignments, followed from the store's watch: the dispatcher's pure core. Built
//! once from the state, then kept current by each entry's changes at the cost of what
//! changed, telling which nodes' assignments changed, so that a node is sent its own when
//! they change and no node's are read again otherwise. A node's assignments carry its
//! share of the endpoint table (`endpoints.rs`), followed alongside.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use swarm_api::auth::RegistryAuth;
use swarm_api::endpoints::NetworkView;
use swarm_api::files::FileContents;
use swarm_api::plan::Kind;
use swarm_api::spec::FileReference;
use swarm_api::task::{DesiredState, Task};

use super::{Changed, Changes, Endpoints, Store};

/// What a node's agent is given: its tasks that should run and those it should stop that
/// have not stopped yet (by id), its subnet, its tasks' services' registry credentials
/// (by service id, and no others), the overlay networks its tasks are on, and the contents
/// of the configs and secrets its tasks use (by digest, and no others: each task's
/// references pin the version they mount).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assignment {
    pub tasks: Vec<Task>,
    pub subnet: String,
    pub registry_auth: BTreeMap<String, RegistryAuth>,
    pub network_view: NetworkView,
    pub file_contents: FileContents,
}

#[derive(Debug, Default)]
pub struct Assignments {
    tasks: HashMap<String, BTreeMap<String, Task>>,
    node_of_task: HashMap<String, String>,
    subnets: HashMap<String, String>,
    credentials: BTreeMap<String, RegistryAuth>,
    endpoints: Endpoints,
    contents: FileContents,
    /// The content digest of each config and secret, by kind and name: what a reference
    /// that pins none mounts.
    digests: BTreeMap<(Kind, String), String>,
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
            contents: data.file_contents.clone(),
            digests: file_digests(&data.objects),
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
                Changed::FileContent { digest, content } => {
                    match content {
                        Some(content) => {
                            drop(self.contents.insert(digest.clone(), content.clone()))
                        }
                        None => drop(self.contents.remove(digest)),
                    }
                    changed_nodes.extend(self.nodes_using(|kind, reference| {
                        self.digest_of(kind, reference) == Some(digest)
                    }));
                }
                Changed::Config { name, config } => {
                    let digest = config.as_ref().map(|c| c.spec.digest.clone());
                    changed_nodes.extend(self.set_digest(Kind::Config, name, digest));
                }
                Changed::Secret { name, secret } => {
                    let digest = secret.as_ref().map(|s| s.spec.digest.clone());
                    changed_nodes.extend(self.set_digest(Kind::Secret, name, digest));
                }
                Changed::Service { .. } | Changed::Network { .. } | Changed::Repository { .. } => {}
            }
        }
        changed_nodes
    }

    /// The version a task's reference to a `kind` mounts: the one it pins, or the object's.
    fn digest_of<'a>(&'a self, kind: Kind, reference: &'a FileReference) -> Option<&'a String> {
        reference
            .digest
            .as_ref()
            .or_else(|| self.digests.get(&(kind, reference.source.clone())))
    }

    /// The nodes with a task that has a reference for which `uses` holds (rare: contents
    /// and objects change with plans only, so a scan).
    fn nodes_using(&self, uses: impl Fn(Kind, &FileReference) -> bool) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|(_, tasks)| {
                tasks.values().any(|task| {
                    let container = &task.spec.container;
                    container.configs.iter().any(|r| uses(Kind::Config, r))
                        || container.secrets.iter().any(|r| uses(Kind::Secret, r))
                })
            })
            .map(|(node, _)| node.clone())
            .collect()
    }

    /// A config's or secret's digest as it is now; the nodes whose tasks mount it unpinned.
    fn set_digest(&mut self, kind: Kind, name: &str, digest: Option<String>) -> Vec<String> {
        let key = (kind, name.to_owned());
        if self.digests.get(&key) == digest.as_ref() {
            return Vec::new();
        }
        match digest {
            Some(digest) => drop(self.digests.insert(key, digest)),
            None => drop(self.digests.remove(&key)),
        }
        self.nodes_using(|k, r| k == kind && r.source == name && r.digest.is_none())
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
        let mut tasks: Vec<Task> = self
            .tasks
            .get(node_id)
            .map(|tasks| tasks.values().cloned().collect())
            .unwrap_or_default();
        let mut file_contents = FileContents::new();
        for task in &mut tasks {
            let container = &mut task.spec.container;
            let references = container
                .configs
                .iter_mut()
                .map(|r| (Kind::Config, r))
                .chain(container.secrets.iter_mut().map(|r| (Kind::Secret, r)));
            for (kind, reference) in references {
                // The node mounts by digest: an unpinned reference gets the object's.
                if reference.digest.is_none() {
                    reference.digest = self.digests.get(&(kind, reference.source.clone())).cloned();
                }
                let Some(digest) = &reference.digest else {
                    continue;
                };
                if let Some(content) = self.contents.get(digest) {
                    file_contents.insert(digest.clone(), content.clone());
                }
            }
        }
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
            file_contents,
        }
    }
}

/// Each config's and secret's digest, by kind and name.
fn file_digests(objects: &swarm_api::state::ClusterState) -> BTreeMap<(Kind, String), String> {
    let configs = objects.configs.iter().map(|o| (Kind::Config, o));
    let secrets = objects.secrets.iter().map(|o| (Kind::Secret, o));
    configs
        .chain(secrets)
        .map(|(kind, o)| ((kind, o.spec.name.clone()), o.spec.digest.clone()))
        .collect()
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
            // These tests' tasks use no config or secret (see the test of contents below).
            file_contents: FileContents::new(),
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

    /// A node is given the contents of the configs and secrets its own tasks mount, and no
    /// other: a changed secret's new version reaches the node of a task that pins it, and
    /// a reference that pins none is given the object's version.
    #[test]
    fn a_node_gets_the_contents_its_tasks_mount_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let stack_file = dir.path().join("v.yaml");
        std::fs::write(
            &stack_file,
            "services:\n  api:\n    image: nginx\n    secrets: [token]\n    configs: [site]\nsecrets:\n  token:\n    file: ./token\nconfigs:\n  site:\n    file: ./site\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("site"), "listen 80;").unwrap();
        let mut store = Store::default();
        let mut index = 0;
        let mut apply = |store: &mut Store, command| {
            index += 1;
            let outcome = store.apply_command(index, command);
            assert!(
                matches!(outcome, swarm_api::store::Outcome::Applied { .. }),
                "{outcome:?}"
            );
        };
        apply(&mut store, cluster());
        apply(&mut store, node("a", NodeRole::Worker));
        apply(&mut store, node("b", NodeRole::Worker));
        let mut subscription = store.subscribe(Assignments::of);
        let deploy = |store: &Store, token: &str| {
            std::fs::write(dir.path().join("token"), token).unwrap();
            let stack =
                crate::stack::load(&crate::source::WorkTree, &stack_file, "v.yaml", &|_| None)
                    .stack
                    .unwrap();
            let plan = crate::plan::plan(
                std::slice::from_ref(&stack),
                &store.export(),
                &Default::default(),
                Default::default(),
            )
            .unwrap();
            Command::ApplyPlan {
                expected_version: None,
                file_contents: crate::plan::contents(&plan, std::slice::from_ref(&stack)),
                actions: plan.actions,
                registry_auth: Default::default(),
                override_git: false,
            }
        };
        let command = deploy(&store, "first");
        apply(&mut store, command);
        let mut using = task("t1", "v_api", "a");
        using.spec = store.export().services[0].spec.task.clone();
        // The config reference as `service create --config` makes it: no pinned version.
        using.spec.container.configs[0].digest = None;
        let expected_version = store.data().tasks_version;
        apply(
            &mut store,
            Command::WriteTasks {
                expected_version,
                changes: vec![
                    TaskChange::Create(Box::new(using)),
                    TaskChange::Create(Box::new(task("t2", "web", "b"))),
                ],
            },
        );
        let command = deploy(&store, "second");
        apply(&mut store, command);
        let mut second = task("t3", "v_api", "a");
        second.spec = store.export().services[0].spec.task.clone();
        let expected_version = store.data().tasks_version;
        apply(
            &mut store,
            Command::WriteTasks {
                expected_version,
                changes: vec![TaskChange::Create(Box::new(second))],
            },
        );
        let assignments = &mut subscription.view;
        while let Some(entry) = subscription.changes.try_recv().unwrap() {
            assignments.apply(&entry);
        }
        let digest = |text: &str| swarm_api::files::digest_of(text.as_bytes());
        let given = assignments.of_node("a");
        assert_eq!(
            given.file_contents.keys().cloned().collect::<BTreeSet<_>>(),
            BTreeSet::from([digest("first"), digest("second"), digest("listen 80;")])
        );
        assert_eq!(given.file_contents[&digest("second")].bytes(), b"second");
        let pinned = &given.tasks[0].spec.container.configs[0].digest;
        assert_eq!(pinned.as_deref(), Some(digest("listen 80;").as_str()));
        assert!(assignments.of_node("b").file_contents.is_empty());
        assert_eq!(
            Assignments::of(&store).of_node("a"),
            given,
            "followed = read afresh"
        );
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
