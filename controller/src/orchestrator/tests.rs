//! The orchestrator and the scheduler in a deterministic simulation: a real store, passes
//! whose decisions are applied as the leader would propose them, a fake agent that runs
//! what it is given, and a clock that only moves when told.

use std::collections::BTreeMap;

use swarm_api::plan::{Action, Kind, ObjectSpec, Op};
use swarm_api::rollout::UpdateState;
use swarm_api::spec::{ServiceMode, ServiceSpec, UpdateOrder};
use swarm_api::state::{Object, Origin};
use swarm_api::store::{
    Availability, Cluster, Command, Node, NodeDescription, NodeRole, NodeStatus, NodeStatusChange,
    NodeUpdate, Outcome, TaskChange, TaskStatusUpdate,
};
use swarm_api::task::{DesiredState, Task, TaskState, TaskStatus};

use super::{Dirty, pass, pass_over};
use crate::store::{Store, Subscription};

const GIB: u64 = 1 << 30;

/// A service spec as a stack file gives it, from the `deploy`-level YAML of one service; it
/// is named `s_<name>` (the stack file is `s.yaml`).
pub(super) fn spec(name: &str, body: &str) -> ServiceSpec {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.yaml");
    std::fs::write(
        &path,
        format!("services:\n  {name}:\n    image: nginx\n{body}"),
    )
    .unwrap();
    let stack = crate::stack::load(&crate::source::WorkTree, &path, "s.yaml", &|_| None);
    let mut stack = stack
        .stack
        .unwrap_or_else(|| panic!("{:?}", stack.diagnostics));
    stack.services.remove(0)
}

struct Sim {
    store: Store,
    index: u64,
    now: u64,
    next_id: u64,
    /// What the leader's next pass looks at, followed from the store's watch.
    watch: Subscription<Dirty>,
}

impl Sim {
    fn new(nodes: usize) -> Sim {
        let store = Store::default();
        let mut sim = Sim {
            watch: store.subscribe(Dirty::of),
            store,
            index: 0,
            now: 1_000_000,
            next_id: 0,
        };
        sim.apply(Command::InitCluster(Cluster {
            id: "c".into(),
            created_at: 0,
            heartbeat_period_ms: 1000,
            missed_heartbeats_for_down: 3,
            certificate_validity_ms: 1,
            worker_token_secret: String::new(),
            manager_token_secret: String::new(),
            address_pool: Default::default(),
        }));
        for n in 0..nodes {
            sim.add_node(&format!("n{n:02}"));
        }
        sim
    }

    fn add_node(&mut self, id: &str) {
        self.apply(Command::AddNode(Node {
            id: id.to_owned(),
            hostname: id.to_owned(),
            role: NodeRole::Worker,
            availability: Availability::Active,
            status: NodeStatus::Ready,
            status_since: 0,
            labels: BTreeMap::new(),
            address: String::new(),
            raft_id: None,
            description: NodeDescription {
                os: "linux".into(),
                arch: "x86_64".into(),
                nano_cpus: 4_000_000_000,
                memory_bytes: 8 * GIB,
                data_path_port: swarm_api::endpoints::VXLAN_PORT,
                metrics_port: None,
            },
            subnet: None,
            worker_error: None,
            ports_taken: Vec::new(),
        }));
    }

    fn apply(&mut self, command: Command) -> Outcome {
        self.index += 1;
        self.store.apply_command(self.index, command)
    }

    fn data(&self) -> &swarm_api::store::StoreData {
        self.store.data()
    }

    /// Creates or replaces a service with a one-action plan, as `service create|update` do
    /// (so the store keeps its previous spec and a change starts a new update).
    fn put_service(&mut self, spec: ServiceSpec) {
        let exists = self
            .data()
            .objects
            .services
            .iter()
            .any(|s| s.spec.name == spec.name);
        // The networks it attaches to are created with it: the store refuses a service
        // that names a network the cluster does not have.
        let mut actions: Vec<Action> = spec
            .task
            .networks
            .iter()
            .filter(|n| {
                !self
                    .data()
                    .objects
                    .networks
                    .iter()
                    .any(|o| o.spec.name == n.target)
            })
            .map(|n| Action {
                op: Op::Create,
                kind: Kind::Network,
                name: n.target.clone(),
                origin: Origin::default(),
                changes: Vec::new(),
                spec: Some(ObjectSpec::Network(swarm_api::spec::NetworkSpec {
                    name: n.target.clone(),
                    driver: "overlay".into(),
                    driver_opts: Default::default(),
                    attachable: false,
                    internal: false,
                    labels: Default::default(),
                    subnets: Vec::new(),
                    gateway: None,
                })),
            })
            .collect();
        actions.push(Action {
            op: if exists { Op::Update } else { Op::Create },
            kind: Kind::Service,
            name: spec.name.clone(),
            origin: Origin::default(),
            changes: Vec::new(),
            spec: Some(ObjectSpec::Service(Box::new(spec))),
        });
        let outcome = self.apply(Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: None,
            actions,
            registry_auth: Default::default(),
            override_git: false,
        });
        assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    }

    fn remove_service(&mut self, name: &str) {
        let mut objects = self.data().objects.clone();
        objects
            .services
            .retain(|s| s.spec.name != format!("s_{name}"));
        self.store.replace_objects_for_tests(objects);
        // Not through an entry: nothing was published.
        self.watch.view.all();
    }

    /// One leader pass, applied; returns how many decisions it made. The pass is scoped
    /// as the leader scopes it (to what the watch says changed, and to the services whose
    /// time came), and must decide what a full pass decides.
    fn pass(&mut self) -> usize {
        loop {
            match self.watch.changes.try_recv() {
                Ok(Some(entry)) => self.watch.view.add(&entry),
                Ok(None) => break,
                Err(_) => {
                    self.watch = self.store.subscribe(Dirty::of);
                    break;
                }
            }
        }
        let scope = self.watch.view.take(self.now);
        let ids = |mut next_id: u64| {
            move || {
                next_id += 1;
                format!("t{next_id:05}")
            }
        };
        let full = pass(self.now, self.store.data(), &mut ids(self.next_id));
        let mut new_id = ids(self.next_id);
        let scoped = pass_over(self.now, &self.store, &scope, &mut new_id);
        let sorted = |changes: &[TaskChange]| {
            let mut changes: Vec<String> = changes.iter().map(|c| format!("{c:?}")).collect();
            changes.sort();
            changes
        };
        assert_eq!(
            sorted(&scoped.changes),
            sorted(&full),
            "a pass over {scope:?} decides as a full pass"
        );
        self.next_id += full
            .iter()
            .filter(|c| matches!(c, TaskChange::Create(_)))
            .count() as u64;
        self.watch.view.passed(&scope, &scoped);
        let changes = scoped.changes;
        let count = changes.len();
        if count > 0 {
            let expected_version = self.data().tasks_version;
            let outcome = self.apply(Command::WriteTasks {
                expected_version,
                changes,
            });
            assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
        }
        count
    }

    /// Passes until nothing changes (bounded).
    fn settle(&mut self) {
        for _ in 0..20 {
            if self.pass() == 0 {
                return;
            }
        }
        panic!("the orchestrator does not settle");
    }

    /// The fake agents: every assigned, wanted task on an up node runs; every unwanted one
    /// stops.
    fn agents_run(&mut self) {
        let mut by_node: BTreeMap<String, Vec<TaskStatusUpdate>> = BTreeMap::new();
        for task in self.data().tasks.values() {
            let Some(node) = &task.node_id else { continue };
            if self.data().nodes.get(node).map(|n| n.status) != Some(NodeStatus::Ready) {
                continue;
            }
            let state = match (task.desired, task.status.state) {
                (DesiredState::Running, TaskState::Assigned) => TaskState::Running,
                (DesiredState::Shutdown, state) if !state.is_terminal() => TaskState::Shutdown,
                _ => continue,
            };
            by_node
                .entry(node.clone())
                .or_default()
                .push(TaskStatusUpdate {
                    id: task.id.clone(),
                    status: TaskStatus::new(state, self.now),
                });
        }
        for (node_id, updates) in by_node {
            self.apply(Command::TaskStatuses { node_id, updates });
        }
    }

    fn converge(&mut self) {
        for _ in 0..20 {
            let before = self.index;
            self.settle();
            self.agents_run();
            if self.index == before {
                return;
            }
        }
        panic!("no convergence");
    }

    fn set_status(&mut self, node: &str, status: NodeStatus) {
        self.apply(Command::NodeStatuses {
            at: self.now,
            changes: vec![NodeStatusChange {
                id: node.to_owned(),
                status,
                worker_error: None,
                ports_taken: Vec::new(),
            }],
        });
    }

    fn update_node(&mut self, update: NodeUpdate) {
        self.apply(Command::UpdateNode(update));
    }

    fn fail(&mut self, task_id: &str) {
        let node_id = self.data().tasks[task_id].node_id.clone().unwrap();
        let mut status = TaskStatus::new(TaskState::Failed, self.now);
        status.exit_code = Some(1);
        self.apply(Command::TaskStatuses {
            node_id,
            updates: vec![TaskStatusUpdate {
                id: task_id.to_owned(),
                status,
            }],
        });
    }

    /// The agents report every live task of `service` in `state`.
    fn report(&mut self, service: &str, state: TaskState) {
        let tasks: Vec<(String, String)> = self
            .live(service)
            .iter()
            .map(|t| (t.id.clone(), t.node_id.clone().expect("placed")))
            .collect();
        for (id, node_id) in tasks {
            let status = TaskStatus::new(state, self.now);
            let updates = vec![TaskStatusUpdate { id, status }];
            self.apply(Command::TaskStatuses { node_id, updates });
        }
    }

    fn live(&self, service: &str) -> Vec<&Task> {
        self.data()
            .tasks
            .values()
            .filter(|t| t.service_name == format!("s_{service}") && t.is_live())
            .collect()
    }

    /// Where the service's rollout stands.
    fn status(&self, service: &str) -> Option<UpdateState> {
        let id = self.service(service).id.as_ref()?;
        self.data().update_status.get(id).map(|s| s.state)
    }

    fn service(&self, service: &str) -> &Object<ServiceSpec> {
        let name = format!("s_{service}");
        let found = self
            .data()
            .objects
            .services
            .iter()
            .find(|o| o.spec.name == name);
        found.unwrap_or_else(|| panic!("no service {name}"))
    }

    /// Live tasks of the service running `image`.
    fn running_image(&self, service: &str, image: &str) -> usize {
        self.live(service)
            .iter()
            .filter(|t| t.status.state == TaskState::Running && t.spec.container.image == image)
            .count()
    }

    /// Every running task of `image` fails now.
    fn fail_running(&mut self, image: &str) {
        let running: Vec<String> = self
            .data()
            .tasks
            .values()
            .filter(|t| t.spec.container.image == image && t.status.state == TaskState::Running)
            .map(|t| t.id.clone())
            .collect();
        for id in running {
            self.fail(&id);
        }
    }

    /// Rounds of passes and agents, `step` ms apart, where every task of `bad` fails as it
    /// runs.
    fn run_failing(&mut self, bad: &str, rounds: usize, step: u64) {
        for _ in 0..rounds {
            self.settle();
            self.agents_run();
            self.fail_running(bad);
            self.now += step;
        }
        self.settle();
    }

    fn running_per_node(&self, service: &str) -> BTreeMap<String, usize> {
        let mut per_node = BTreeMap::new();
        for task in self.live(service) {
            if task.status.state == TaskState::Running {
                *per_node.entry(task.node_id.clone().unwrap()).or_default() += 1;
            }
        }
        per_node
    }
}

#[test]
fn replicas_are_created_spread_and_run() {
    let mut sim = Sim::new(3);
    sim.put_service(spec("web", "    deploy:\n      replicas: 5\n"));
    sim.converge();
    let live = sim.live("web");
    assert_eq!(live.len(), 5);
    let mut slots: Vec<u64> = live.iter().map(|t| t.slot.unwrap()).collect();
    slots.sort();
    assert_eq!(slots, [1, 2, 3, 4, 5]);
    let mut spread: Vec<usize> = sim.running_per_node("web").into_values().collect();
    spread.sort();
    assert_eq!(spread, [1, 2, 2]);
    assert_eq!(sim.pass(), 0, "a converged cluster needs no decision");
}

#[test]
fn scaling_down_stops_the_highest_slots() {
    let mut sim = Sim::new(3);
    sim.put_service(spec("web", "    deploy:\n      replicas: 5\n"));
    sim.converge();
    sim.put_service(spec("web", "    deploy:\n      replicas: 2\n"));
    sim.converge();
    let mut slots: Vec<u64> = sim.live("web").iter().map(|t| t.slot.unwrap()).collect();
    slots.sort();
    assert_eq!(slots, [1, 2]);
    let stopped = sim
        .data()
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Shutdown)
        .count();
    assert_eq!(stopped, 3, "kept as history");
}

#[test]
fn a_failed_task_is_replaced_in_its_slot_after_the_delay_up_to_max_attempts() {
    let mut sim = Sim::new(2);
    sim.put_service(spec(
        "job",
        "    deploy:\n      replicas: 1\n      restart_policy:\n        condition: on-failure\n        delay: 10s\n        max_attempts: 2\n",
    ));
    sim.converge();
    for attempt in 1..=3 {
        let task = sim.live("job")[0].id.clone();
        sim.fail(&task);
        sim.converge();
        if attempt == 3 {
            // Two restarts were allowed: the third failure stays.
            assert_eq!(sim.live("job")[0].id, task);
            assert_eq!(sim.live("job")[0].status.state, TaskState::Failed);
            sim.now += 60_000;
            sim.converge();
            assert_eq!(sim.live("job")[0].id, task, "never restarted again");
            break;
        }
        assert_eq!(sim.live("job")[0].id, task, "not before the delay");
        sim.now += 10_000;
        sim.converge();
        let replacement = sim.live("job");
        assert_eq!(replacement.len(), 1);
        assert_ne!(replacement[0].id, task);
        assert_eq!(replacement[0].slot, Some(1));
        assert_eq!(replacement[0].status.state, TaskState::Running);
        assert_eq!(sim.data().tasks[&task].desired, DesiredState::Shutdown);
    }
}

#[test]
fn a_completed_task_is_not_restarted_on_failure_only() {
    let mut sim = Sim::new(1);
    sim.put_service(spec(
        "once",
        "    deploy:\n      restart_policy:\n        condition: on-failure\n",
    ));
    sim.converge();
    let task = sim.live("once")[0].id.clone();
    let node_id = sim.data().tasks[&task].node_id.clone().unwrap();
    sim.apply(Command::TaskStatuses {
        node_id,
        updates: vec![TaskStatusUpdate {
            id: task.clone(),
            status: TaskStatus::new(TaskState::Complete, sim.now),
        }],
    });
    sim.now += 3_600_000;
    sim.converge();
    assert_eq!(sim.live("once").len(), 1);
    assert_eq!(sim.live("once")[0].status.state, TaskState::Complete);
}

#[test]
fn tasks_of_a_down_node_are_replaced_and_never_duplicated_when_it_returns() {
    let mut sim = Sim::new(3);
    sim.put_service(spec("web", "    deploy:\n      replicas: 6\n"));
    sim.converge();
    sim.set_status("n00", NodeStatus::Down);
    sim.converge();
    let per_node = sim.running_per_node("web");
    assert_eq!(per_node.get("n00"), None, "{per_node:?}");
    assert_eq!(per_node.values().sum::<usize>(), 6);
    let orphaned = sim
        .data()
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Orphaned)
        .count();
    assert_eq!(orphaned, 2);

    sim.set_status("n00", NodeStatus::Ready);
    sim.converge();
    assert_eq!(
        sim.live("web").len(),
        6,
        "the returning node's old tasks stay stopped"
    );
}

#[test]
fn draining_moves_tasks_and_pausing_holds_them() {
    let mut sim = Sim::new(2);
    sim.put_service(spec("web", "    deploy:\n      replicas: 4\n"));
    sim.converge();
    sim.update_node(NodeUpdate {
        id: "n01".into(),
        availability: Some(Availability::Pause),
        ..NodeUpdate::default()
    });
    sim.converge();
    assert_eq!(sim.running_per_node("web")["n01"], 2, "paused: tasks stay");
    sim.update_node(NodeUpdate {
        id: "n01".into(),
        availability: Some(Availability::Drain),
        ..NodeUpdate::default()
    });
    sim.converge();
    assert_eq!(
        sim.running_per_node("web"),
        BTreeMap::from([("n00".to_owned(), 4)])
    );
}

#[test]
fn global_services_run_once_per_eligible_node() {
    let mut sim = Sim::new(3);
    sim.update_node(NodeUpdate {
        id: "n02".into(),
        labels_add: BTreeMap::from([("edge".to_owned(), "no".to_owned())]),
        ..NodeUpdate::default()
    });
    sim.put_service(spec(
        "agent",
        "    deploy:\n      mode: global\n      placement:\n        constraints: [node.labels.edge != no]\n",
    ));
    sim.converge();
    let per_node = sim.running_per_node("agent");
    assert_eq!(per_node.len(), 2);
    assert!(per_node.values().all(|n| *n == 1));
    // A new node gets one; a down node keeps its own; a drained one loses it.
    sim.add_node("n03");
    sim.set_status("n00", NodeStatus::Down);
    sim.update_node(NodeUpdate {
        id: "n01".into(),
        availability: Some(Availability::Drain),
        ..NodeUpdate::default()
    });
    sim.converge();
    let live: BTreeMap<String, TaskState> = sim
        .live("agent")
        .iter()
        .map(|t| (t.node_id.clone().unwrap(), t.status.state))
        .collect();
    assert_eq!(
        live,
        BTreeMap::from([
            ("n00".to_owned(), TaskState::Running),
            ("n03".to_owned(), TaskState::Running)
        ])
    );
    assert!(matches!(
        sim.data().objects.services[0].spec.mode,
        ServiceMode::Global
    ));
}

#[test]
fn an_update_rolls_out_parallelism_slots_at_a_time() {
    let mut sim = Sim::new(3);
    let web = |image: &str, order: &str| {
        let mut spec = spec(
            "web",
            &format!(
                "    deploy:\n      replicas: 4\n      update_config:\n        parallelism: 1\n        order: {order}\n"
            ),
        );
        spec.task.container.image = image.to_owned();
        spec
    };
    sim.put_service(web("nginx:1", "stop-first"));
    sim.converge();
    sim.put_service(web("nginx:2", "stop-first"));
    // Each round: one slot replaced; it must run before the next goes.
    for round in 1..=4 {
        sim.settle();
        let new = sim
            .live("web")
            .iter()
            .filter(|t| t.spec.container.image == "nginx:2")
            .count();
        assert_eq!(new, round, "round {round}");
        sim.agents_run();
    }
    sim.converge();
    assert!(
        sim.live("web")
            .iter()
            .all(|t| t.spec.container.image == "nginx:2")
    );
    assert_eq!(sim.live("web").len(), 4);

    // Start-first: the old task keeps running until its replacement runs.
    sim.put_service(web("nginx:3", "start-first"));
    sim.settle();
    let live = sim.live("web");
    assert_eq!(live.len(), 5, "one slot runs old and new side by side");
    sim.agents_run();
    sim.settle();
    sim.agents_run();
    sim.converge();
    assert_eq!(sim.live("web").len(), 4);
    assert!(
        sim.live("web")
            .iter()
            .all(|t| t.spec.container.image == "nginx:3")
    );
    assert_eq!(
        sim.data().objects.services[0].spec.update.order,
        UpdateOrder::StartFirst
    );
}

#[test]
fn unschedulable_tasks_wait_with_the_reason_then_go_when_a_node_fits() {
    let mut sim = Sim::new(2);
    sim.put_service(spec(
        "db",
        "    deploy:\n      placement:\n        constraints: [node.labels.disk == ssd]\n",
    ));
    sim.converge();
    let task = sim.live("db")[0];
    assert_eq!(task.status.state, TaskState::Pending);
    assert_eq!(
        task.status.message,
        "no suitable node (2 nodes do not satisfy node.labels.disk == ssd)"
    );
    assert_eq!(sim.pass(), 0, "the same reason is not written again");
    sim.update_node(NodeUpdate {
        id: "n01".into(),
        labels_add: BTreeMap::from([("disk".to_owned(), "ssd".to_owned())]),
        ..NodeUpdate::default()
    });
    sim.converge();
    assert_eq!(
        sim.running_per_node("db"),
        BTreeMap::from([("n01".to_owned(), 1)])
    );
}

/// `depends_on`: a service's tasks stay pending, saying what they wait for, until every
/// task of its dependency is healthy (Running: the agent reports a task with a healthcheck
/// Starting until it passes) — or, with `service_started`, has started; then they are
/// placed, and what becomes of the dependency afterwards does not stop them. Every scoped
/// pass decides as a full one: a dependency's task reaching Running wakes the dependents.
#[test]
fn a_service_waits_for_its_dependencies_to_run() {
    use swarm_api::spec::{Dependency, DependencyCondition};
    let mut sim = Sim::new(3);
    let mut web = spec("web", "    deploy:\n      replicas: 2\n");
    web.depends_on = vec![Dependency {
        service: "s_db".into(),
        condition: DependencyCondition::ServiceHealthy,
    }];
    // The store refuses a dependency on a service it does not have: the dependency first.
    sim.put_service(spec("db", "    deploy:\n      replicas: 2\n"));
    sim.settle();
    sim.put_service(web);
    sim.settle();
    let messages = |sim: &Sim, service: &str| -> Vec<(TaskState, String)> {
        let tasks = sim.live(service);
        tasks
            .iter()
            .map(|t| (t.status.state, t.status.message.clone()))
            .collect()
    };
    let waiting = |reason: &str| vec![(TaskState::Pending, reason.to_owned()); 2];
    assert_eq!(
        messages(&sim, "web"),
        waiting("waiting for service s_db to be healthy")
    );
    assert_eq!(sim.pass(), 0, "the same reason is not written again");
    // Started, not healthy yet: the dependents wait on.
    sim.report("db", TaskState::Starting);
    sim.settle();
    assert!(sim.live("web").iter().all(|t| t.node_id.is_none()));
    sim.report("db", TaskState::Running);
    sim.settle();
    assert!(sim.live("web").iter().all(|t| t.node_id.is_some()));
    sim.converge();
    assert_eq!(sim.running_per_node("web").values().sum::<usize>(), 2);

    // A failed dependency does not stop them.
    let db_task = sim.live("db")[0].id.clone();
    sim.fail(&db_task);
    sim.settle();
    assert_eq!(sim.running_per_node("web").values().sum::<usize>(), 2);

    // service_started: a started task is enough.
    let mut api = spec("api", "");
    api.depends_on = vec![Dependency {
        service: "s_cache".into(),
        condition: DependencyCondition::ServiceStarted,
    }];
    sim.put_service(spec("cache", ""));
    sim.settle();
    sim.put_service(api);
    sim.settle();
    assert_eq!(
        messages(&sim, "api"),
        [(
            TaskState::Pending,
            "waiting for service s_cache to start".to_owned()
        )]
    );
    sim.report("cache", TaskState::Starting);
    sim.settle();
    assert!(sim.live("api")[0].node_id.is_some());
}

#[test]
fn a_removed_service_stops_its_tasks_then_forgets_them() {
    let mut sim = Sim::new(2);
    sim.put_service(spec("web", "    deploy:\n      replicas: 3\n"));
    sim.converge();
    sim.remove_service("web");
    sim.settle();
    assert!(sim.live("web").is_empty());
    sim.agents_run();
    sim.converge();
    assert!(sim.data().tasks.is_empty());
}

#[test]
fn history_keeps_five_tasks_per_slot() {
    let mut sim = Sim::new(1);
    sim.put_service(spec(
        "flaky",
        "    deploy:\n      restart_policy:\n        delay: 0s\n",
    ));
    sim.converge();
    for _ in 0..8 {
        let task = sim.live("flaky")[0].id.clone();
        sim.fail(&task);
        sim.converge();
    }
    assert_eq!(sim.data().tasks.len(), 5);
}

#[test]
fn a_stale_pass_is_refused_by_the_store() {
    let mut sim = Sim::new(1);
    sim.put_service(spec("web", ""));
    let stale = sim.data().tasks_version;
    sim.converge();
    let outcome = sim.apply(Command::WriteTasks {
        expected_version: stale,
        changes: Vec::new(),
    });
    assert!(matches!(outcome, Outcome::Rejected(_)), "{outcome:?}");
}

/// Dozens of nodes, thousands of tasks, a tenth of the nodes lost at once.
#[test]
fn thousands_of_tasks_survive_the_loss_of_nodes() {
    let mut sim = Sim::new(40);
    for s in 0..10 {
        sim.put_service(spec(
            &format!("svc{s}"),
            "    deploy:\n      replicas: 200\n",
        ));
    }
    sim.converge();
    for n in 0..4 {
        sim.set_status(&format!("n{n:02}"), NodeStatus::Down);
    }
    sim.converge();
    for s in 0..10 {
        let service = format!("svc{s}");
        let per_node = sim.running_per_node(&service);
        assert_eq!(per_node.values().sum::<usize>(), 200, "{service}");
        assert!((0..4).all(|n| !per_node.contains_key(&format!("n{n:02}"))));
        let (min, max) = (
            per_node.values().min().unwrap(),
            per_node.values().max().unwrap(),
        );
        assert!(max - min <= 1, "{service}: {per_node:?}");
    }
}

/// The store's per-node task index (what a node's assignments are read from) agrees with
/// the tasks themselves through creation, placement, moves, history trimming, removal and
/// a snapshot restore.
#[test]
fn the_per_node_task_index_follows_the_tasks() {
    use crate::raft::replica::StateMachine;
    let check = |store: &Store| {
        let nodes: std::collections::BTreeSet<&String> = store.data().nodes.keys().collect();
        for node in nodes {
            let mut indexed: Vec<&str> = store.tasks_on(node).map(|t| t.id.as_str()).collect();
            let mut scanned: Vec<&str> = store
                .data()
                .tasks
                .values()
                .filter(|t| t.node_id.as_deref() == Some(node.as_str()))
                .map(|t| t.id.as_str())
                .collect();
            indexed.sort();
            scanned.sort();
            assert_eq!(indexed, scanned, "node {node}");
        }
    };
    let mut sim = Sim::new(3);
    sim.put_service(spec("web", "    deploy:\n      replicas: 6\n"));
    sim.put_service(spec("agent", "    deploy:\n      mode: global\n"));
    sim.converge();
    check(&sim.store);
    sim.set_status("n00", NodeStatus::Down);
    sim.converge();
    check(&sim.store);
    for task in sim
        .live("web")
        .iter()
        .map(|t| t.id.clone())
        .collect::<Vec<_>>()
    {
        sim.fail(&task);
    }
    sim.converge();
    sim.remove_service("agent");
    sim.converge();
    check(&sim.store);
    let mut restored = Store::default();
    restored.restore(&sim.store.snapshot());
    check(&restored);
    assert_eq!(
        restored.tasks_on("n01").count(),
        sim.store.tasks_on("n01").count()
    );
}

/// `update_config.delay`: the next batch waits that long after the last replaced task runs.
#[test]
fn an_update_waits_its_delay_between_batches() {
    let mut sim = Sim::new(2);
    let web = |image: &str| {
        let mut spec = spec(
            "web",
            "    deploy:\n      replicas: 3\n      update_config:\n        parallelism: 1\n        delay: 10s\n",
        );
        spec.task.container.image = image.to_owned();
        spec
    };
    let updated = |sim: &Sim| {
        sim.live("web")
            .iter()
            .filter(|t| t.spec.container.image == "nginx:2")
            .count()
    };
    sim.put_service(web("nginx:1"));
    sim.converge();
    sim.put_service(web("nginx:2"));
    sim.converge();
    assert_eq!(updated(&sim), 1, "the first batch goes at once");
    sim.now += 9_000;
    sim.converge();
    assert_eq!(updated(&sim), 1, "9 s later the next batch still waits");
    sim.now += 1_000;
    sim.converge();
    assert_eq!(updated(&sim), 2, "after the delay, the next batch");
    sim.now += 10_000;
    sim.converge();
    assert_eq!(updated(&sim), 3);
    assert_eq!(sim.live("web").len(), 3);
}

/// A leader change in the middle of a rolling update: the new leader's store is a replica
/// restored from the log (a snapshot here), its first pass a full reconcile; the update
/// finishes, with every slot running once, no duplicates.
#[test]
fn a_new_leader_finishes_an_update_mid_way() {
    use crate::raft::replica::StateMachine;
    let mut sim = Sim::new(3);
    let web = |image: &str| {
        let mut spec = spec(
            "web",
            "    deploy:\n      replicas: 6\n      update_config:\n        parallelism: 2\n",
        );
        spec.task.container.image = image.to_owned();
        spec
    };
    sim.put_service(web("nginx:1"));
    sim.converge();
    sim.put_service(web("nginx:2"));
    sim.settle();
    sim.agents_run();
    sim.settle();
    let updated = |sim: &Sim| {
        sim.live("web")
            .iter()
            .filter(|t| t.spec.container.image == "nginx:2")
            .count()
    };
    let midway = updated(&sim);
    assert!(midway > 0 && midway < 6, "mid-way: {midway} of 6 updated");
    // The old leader is gone; another manager's replica of the same log leads.
    let mut successor = Store::default();
    successor.restore(&sim.store.snapshot());
    sim.store = successor;
    sim.converge();
    assert_eq!(updated(&sim), 6);
    let live = sim.live("web");
    assert_eq!(live.len(), 6, "{live:?}");
    let mut slots: Vec<u64> = live.iter().map(|t| t.slot.unwrap()).collect();
    slots.sort();
    assert_eq!(slots, [1, 2, 3, 4, 5, 6]);
}

/// An update whose new tasks fail stops where it is (`failure_action: pause`, the default),
/// or goes on when told to (`continue`).
#[test]
fn an_update_pauses_when_its_new_tasks_fail() {
    for (action, expected) in [("pause", 1), ("continue", 4)] {
        let mut sim = Sim::new(2);
        let web = |image: &str| {
            let mut spec = spec(
                "web",
                &format!(
                    "    deploy:\n      replicas: 4\n      restart_policy:\n        condition: none\n      update_config:\n        parallelism: 1\n        failure_action: {action}\n"
                ),
            );
            spec.task.container.image = image.to_owned();
            spec
        };
        sim.put_service(web("nginx:1"));
        sim.converge();
        sim.put_service(web("nginx:2"));
        // Every task of the new spec fails as soon as it runs.
        for _ in 0..10 {
            sim.settle();
            sim.agents_run();
            let failing: Vec<String> = sim
                .data()
                .tasks
                .values()
                .filter(|t| {
                    t.spec.container.image == "nginx:2" && t.status.state == TaskState::Running
                })
                .map(|t| t.id.clone())
                .collect();
            for id in failing {
                sim.fail(&id);
            }
        }
        let reached = sim
            .data()
            .tasks
            .values()
            .filter(|t| t.spec.container.image == "nginx:2")
            .filter_map(|t| t.slot)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        assert_eq!(reached, expected, "failure_action {action}");
        if action == "pause" {
            let old = sim
                .live("web")
                .iter()
                .filter(|t| t.spec.container.image == "nginx:1")
                .count();
            assert_eq!(old, 3, "the slots not reached keep running the old spec");
        }
    }
}

/// A service whose image is `image`, with the `deploy` YAML `deploy`.
fn versioned(name: &str, deploy: &str, image: &str) -> ServiceSpec {
    let mut spec = spec(name, &format!("    deploy:\n{deploy}"));
    spec.task.container.image = image.to_owned();
    spec
}

/// An update whose new tasks fail is paused (Docker's default failure action) and stays
/// paused — no more slots replaced — long after its failed tasks left the history, until
/// the spec changes again; that next update completes once its last task ran `monitor`.
#[test]
fn a_paused_update_stays_paused_until_the_spec_changes() {
    let mut sim = Sim::new(2);
    let deploy = "      replicas: 4\n      restart_policy:\n        delay: 1s\n      update_config:\n        parallelism: 1\n        monitor: 10s\n";
    sim.put_service(versioned("web", deploy, "nginx:1"));
    sim.converge();
    assert_eq!(sim.status("web"), None, "a created service has no update");
    sim.put_service(versioned("web", deploy, "nginx:2"));
    sim.run_failing("nginx:2", 3, 2_000);
    assert_eq!(sim.status("web"), Some(UpdateState::Paused));
    let id = sim.service("web").id.clone().unwrap();
    let message = &sim.data().update_status[&id].message;
    assert!(
        message.starts_with("update paused due to failure or early termination of task t"),
        "{message}"
    );
    // An hour of restarts of the failing slot: its failures leave the history; the other
    // slots keep the old spec.
    sim.run_failing("nginx:2", 40, 90_000);
    sim.agents_run();
    assert_eq!(sim.status("web"), Some(UpdateState::Paused));
    assert_eq!(sim.running_image("web", "nginx:1"), 3);
    // A new spec: a new update, which completes `monitor` after its last task runs.
    sim.put_service(versioned("web", deploy, "nginx:3"));
    sim.converge();
    assert_eq!(sim.running_image("web", "nginx:3"), 4);
    assert_eq!(sim.status("web"), Some(UpdateState::Updating));
    sim.now += 9_999;
    sim.settle();
    assert_eq!(
        sim.status("web"),
        Some(UpdateState::Updating),
        "within monitor"
    );
    sim.now += 1;
    sim.settle();
    assert_eq!(sim.status("web"), Some(UpdateState::Completed));
    let status = &sim.data().update_status[&id];
    assert_eq!(status.completed_at, Some(sim.now));
    assert_eq!(status.message, "update completed");
}

/// `monitor`: a new task that fails within it of starting fails the update; one that ran
/// longer does not (the update goes on to completion).
#[test]
fn only_failures_within_monitor_count() {
    for (ran_for, expected) in [
        (4_000, UpdateState::Paused),
        (6_000, UpdateState::Completed),
    ] {
        let mut sim = Sim::new(2);
        let deploy = "      replicas: 2\n      update_config:\n        parallelism: 1\n        monitor: 5s\n";
        sim.put_service(versioned("web", deploy, "nginx:1"));
        sim.converge();
        sim.put_service(versioned("web", deploy, "nginx:2"));
        sim.settle();
        sim.agents_run();
        sim.now += ran_for;
        sim.fail_running("nginx:2");
        for _ in 0..5 {
            sim.converge();
            sim.now += 5_000;
        }
        sim.settle();
        assert_eq!(
            sim.status("web"),
            Some(expected),
            "failed after {ran_for} ms"
        );
    }
}

/// `failure_action: rollback`: the service goes back to its previous spec by itself (the
/// failed one becomes the previous spec), rolled out with `rollback_config` (two slots at a
/// time here), and the rollback completes once its tasks ran the rollback `monitor`.
#[test]
fn a_failing_update_rolls_back_with_the_rollback_config() {
    let mut sim = Sim::new(2);
    let deploy = "      replicas: 4\n      restart_policy:\n        delay: 30s\n      update_config:\n        parallelism: 0\n        failure_action: rollback\n      rollback_config:\n        parallelism: 2\n        monitor: 3s\n";
    sim.put_service(versioned("web", deploy, "nginx:1"));
    sim.converge();
    sim.put_service(versioned("web", deploy, "nginx:2"));
    sim.settle();
    sim.agents_run();
    assert_eq!(sim.running_image("web", "nginx:2"), 4, "every slot at once");
    sim.now += 1_000;
    sim.fail_running("nginx:2");
    sim.settle();
    assert_eq!(sim.status("web"), Some(UpdateState::RollbackStarted));
    let service = sim.service("web");
    let id = service.id.clone().unwrap();
    assert_eq!(service.spec.task.container.image, "nginx:1");
    assert_eq!(
        sim.data().previous_specs[&id].task.container.image,
        "nginx:2"
    );
    let message = &sim.data().update_status[&id].message;
    assert!(
        message.starts_with("update rolled back due to failure or early termination of task t"),
        "{message}"
    );
    // The rollback's batches: two slots, then (once they run) the other two.
    let back = |sim: &Sim| {
        sim.live("web")
            .iter()
            .filter(|t| t.spec.container.image == "nginx:1")
            .count()
    };
    sim.settle();
    assert_eq!(back(&sim), 2, "rollback_config.parallelism");
    sim.agents_run();
    sim.settle();
    assert_eq!(back(&sim), 4);
    sim.converge();
    assert_eq!(sim.running_image("web", "nginx:1"), 4);
    assert_eq!(sim.status("web"), Some(UpdateState::RollbackStarted));
    sim.now += 3_000;
    sim.settle();
    assert_eq!(sim.status("web"), Some(UpdateState::RollbackCompleted));
    assert_eq!(sim.live("web").len(), 4);
}

/// A leader change in the middle of a rollback: a replica restored from the store goes on
/// with it, each slot once.
#[test]
fn a_new_leader_finishes_a_rollback() {
    use crate::raft::replica::StateMachine;
    let mut sim = Sim::new(3);
    let deploy = "      replicas: 6\n      restart_policy:\n        condition: none\n      update_config:\n        parallelism: 0\n        failure_action: rollback\n      rollback_config:\n        parallelism: 1\n        monitor: 1s\n";
    sim.put_service(versioned("web", deploy, "nginx:1"));
    sim.converge();
    sim.put_service(versioned("web", deploy, "nginx:2"));
    sim.settle();
    sim.agents_run();
    sim.fail_running("nginx:2");
    sim.settle();
    sim.agents_run();
    sim.settle();
    assert_eq!(sim.status("web"), Some(UpdateState::RollbackStarted));
    let mut successor = Store::default();
    successor.restore(&sim.store.snapshot());
    sim.store = successor;
    sim.converge();
    sim.now += 1_000;
    sim.settle();
    assert_eq!(sim.status("web"), Some(UpdateState::RollbackCompleted));
    let live = sim.live("web");
    assert!(live.iter().all(|t| t.spec.container.image == "nginx:1"));
    let mut slots: Vec<u64> = live.iter().map(|t| t.slot.unwrap()).collect();
    slots.sort();
    assert_eq!(slots, [1, 2, 3, 4, 5, 6]);
}

/// Global services follow the same rules over their nodes: `parallelism` nodes at a time,
/// and a failing update rolls back.
#[test]
fn global_updates_roll_out_by_parallelism_and_roll_back() {
    let mut sim = Sim::new(4);
    let deploy = "      mode: global\n      restart_policy:\n        condition: none\n      update_config:\n        parallelism: 2\n        monitor: 2s\n        failure_action: rollback\n      rollback_config:\n        parallelism: 0\n        monitor: 2s\n";
    sim.put_service(versioned("agent", deploy, "nginx:1"));
    sim.converge();
    assert_eq!(sim.running_image("agent", "nginx:1"), 4);
    // A good update: two nodes per batch, completed after the monitor.
    sim.put_service(versioned("agent", deploy, "nginx:2"));
    sim.settle();
    let updated = |sim: &Sim, image: &str| {
        sim.live("agent")
            .iter()
            .filter(|t| t.spec.container.image == image)
            .count()
    };
    assert_eq!(updated(&sim, "nginx:2"), 2, "parallelism 2");
    sim.converge();
    assert_eq!(sim.running_image("agent", "nginx:2"), 4);
    sim.now += 2_000;
    sim.settle();
    assert_eq!(sim.status("agent"), Some(UpdateState::Completed));
    // A failing update: rolled back, every node at once (rollback parallelism 0).
    sim.put_service(versioned("agent", deploy, "nginx:3"));
    sim.settle();
    assert_eq!(updated(&sim, "nginx:3"), 2);
    sim.agents_run();
    sim.fail_running("nginx:3");
    sim.settle();
    assert_eq!(sim.status("agent"), Some(UpdateState::RollbackStarted));
    assert_eq!(sim.service("agent").spec.task.container.image, "nginx:2");
    sim.settle();
    assert_eq!(updated(&sim, "nginx:2"), 4);
    sim.converge();
    sim.now += 2_000;
    sim.settle();
    assert_eq!(sim.status("agent"), Some(UpdateState::RollbackCompleted));
    assert_eq!(sim.running_per_node("agent").len(), 4);
    assert_eq!(sim.running_image("agent", "nginx:2"), 4);
}

/// A global service updated start-first: each node's old task keeps running until the
/// node's new task runs, then stops; with host-mode ports it is stop-first (one port each).
#[test]
fn global_start_first_updates_keep_each_node_served() {
    let mut sim = Sim::new(3);
    let deploy = "      mode: global\n      update_config:\n        parallelism: 0\n        order: start-first\n";
    sim.put_service(versioned("agent", deploy, "nginx:1"));
    sim.converge();
    sim.put_service(versioned("agent", deploy, "nginx:2"));
    sim.settle();
    // Both on every node: the new one assigned, the old one still wanted.
    assert_eq!(sim.live("agent").len(), 6);
    assert_eq!(sim.running_image("agent", "nginx:1"), 3);
    sim.agents_run();
    sim.settle();
    let images: Vec<&str> = sim
        .live("agent")
        .iter()
        .map(|t| t.spec.container.image.as_str())
        .collect();
    assert_eq!(
        images, ["nginx:2"; 3],
        "the old tasks stop once the new run"
    );
    sim.converge();
    assert_eq!(
        sim.running_per_node("agent").values().collect::<Vec<_>>(),
        [&1; 3]
    );

    let ports = "    ports:\n      - {target: 80, published: 8080, mode: host}\n";
    let mut with_ports = versioned("edge", deploy, "nginx:1");
    with_ports.endpoint = spec("edge", &format!("{ports}    deploy:\n{deploy}")).endpoint;
    sim.put_service(with_ports.clone());
    sim.converge();
    with_ports.task.container.image = "nginx:2".into();
    sim.put_service(with_ports);
    sim.settle();
    assert_eq!(
        sim.live("edge").len(),
        3,
        "stop-first: one task per node and port"
    );
}

/// `swarm service rollback`: the previous spec back, rolled out with `rollback_config` (all
/// slots at once here, where updates go one by one), `rollback_started` → `completed`.
#[test]
fn a_requested_rollback_rolls_out_with_the_rollback_config() {
    let mut sim = Sim::new(2);
    let deploy = "      replicas: 4\n      update_config:\n        parallelism: 1\n        monitor: 1s\n      rollback_config:\n        parallelism: 0\n        monitor: 1s\n";
    sim.put_service(versioned("web", deploy, "nginx:1"));
    sim.converge();
    sim.put_service(versioned("web", deploy, "nginx:2"));
    sim.converge();
    sim.now += 1_000;
    sim.settle();
    assert_eq!(sim.status("web"), Some(UpdateState::Completed));
    let service_id = sim.service("web").id.clone().unwrap();
    let expected_version = sim.data().objects.version;
    let outcome = sim.apply(Command::RollbackService {
        expected_version,
        service_id,
        at: sim.now,
    });
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    assert_eq!(sim.status("web"), Some(UpdateState::RollbackStarted));
    sim.settle();
    let back = sim
        .live("web")
        .iter()
        .filter(|t| t.spec.container.image == "nginx:1")
        .count();
    assert_eq!(back, 4, "rollback_config.parallelism 0: every slot at once");
    sim.converge();
    sim.now += 1_000;
    sim.settle();
    assert_eq!(sim.status("web"), Some(UpdateState::RollbackCompleted));
    assert_eq!(sim.running_image("web", "nginx:1"), 4);
}

/// A restart delay is a deadline the leader sleeps until, not a reason to poll.
#[test]
fn a_time_bound_decision_names_when_it_is_due() {
    let mut sim = Sim::new(1);
    sim.put_service(spec(
        "job",
        "    deploy:\n      replicas: 1\n      restart_policy:\n        condition: on-failure\n        delay: 10s\n",
    ));
    sim.converge();
    assert_eq!(sim.watch.view.next_wake(), None, "nothing waits for time");
    let task = sim.live("job")[0].id.clone();
    sim.fail(&task);
    let failed_at = sim.now;
    sim.converge();
    assert_eq!(sim.watch.view.next_wake(), Some(failed_at + 10_000));
    sim.now += 10_000;
    sim.converge();
    assert_ne!(sim.live("job")[0].id, task, "replaced when due");
    assert_eq!(sim.watch.view.next_wake(), None);
}

impl Sim {
    /// The agents report every running task of `service` exited 0.
    fn complete_running(&mut self, service: &str) {
        let running: Vec<(String, String)> = self
            .live(service)
            .iter()
            .filter(|t| t.status.state == TaskState::Running)
            .map(|t| (t.id.clone(), t.node_id.clone().expect("placed")))
            .collect();
        for (id, node_id) in running {
            let mut status = TaskStatus::new(TaskState::Complete, self.now);
            status.exit_code = Some(0);
            let updates = vec![TaskStatusUpdate { id, status }];
            self.apply(Command::TaskStatuses { node_id, updates });
        }
    }

    /// Every task of `service` ever made, in any state.
    fn all_tasks(&self, service: &str) -> Vec<&Task> {
        self.data()
            .tasks
            .values()
            .filter(|t| t.service_name == format!("s_{service}"))
            .collect()
    }

    fn count_live(&self, service: &str, state: TaskState) -> usize {
        self.live(service)
            .iter()
            .filter(|t| t.status.state == state)
            .count()
    }
}

fn replicated_job(max_concurrent: u64, total_completions: u64) -> ServiceSpec {
    let mut job = spec("job", "    deploy:\n      mode: replicated-job\n");
    job.mode = ServiceMode::ReplicatedJob {
        max_concurrent,
        total_completions,
    };
    job
}

#[test]
fn a_replicated_job_runs_its_completions_at_most_max_concurrent_at_once() {
    let mut sim = Sim::new(3);
    sim.put_service(replicated_job(2, 5));
    let mut most_at_once = 0;
    for _ in 0..10 {
        sim.converge();
        let running = sim.count_live("job", TaskState::Running);
        most_at_once = most_at_once.max(running);
        if running == 0 {
            break;
        }
        sim.complete_running("job");
    }
    assert_eq!(most_at_once, 2);
    assert_eq!(sim.count_live("job", TaskState::Complete), 5);
    assert_eq!(
        sim.all_tasks("job").len(),
        5,
        "a completed task is never restarted"
    );
    let mut slots: Vec<u64> = sim.live("job").iter().map(|t| t.slot.unwrap()).collect();
    slots.sort();
    assert_eq!(slots, [1, 2, 3, 4, 5]);
    sim.now += 3_600_000;
    assert_eq!(sim.pass(), 0, "a finished job needs no decision, ever");
}

#[test]
fn a_failed_job_task_is_restarted_in_its_slot_and_a_completed_one_is_not() {
    let mut sim = Sim::new(2);
    sim.put_service(replicated_job(2, 2));
    sim.converge();
    let mut running: Vec<(u64, String)> = sim
        .live("job")
        .iter()
        .map(|t| (t.slot.unwrap(), t.id.clone()))
        .collect();
    running.sort();
    let (done, failed) = (running[0].1.clone(), running[1].1.clone());
    let node = sim.data().tasks[&done].node_id.clone().unwrap();
    let status = TaskStatus::new(TaskState::Complete, sim.now);
    let updates = vec![TaskStatusUpdate {
        id: done.clone(),
        status,
    }];
    sim.apply(Command::TaskStatuses {
        node_id: node,
        updates,
    });
    sim.fail(&failed);
    sim.converge();
    assert_eq!(
        sim.all_tasks("job").len(),
        2,
        "the restart waits for its delay"
    );
    sim.now += 5_000;
    sim.converge();
    let live = sim.live("job");
    assert_eq!(live.len(), 2);
    assert!(
        live.iter().any(|t| t.id == done),
        "the completed task stays"
    );
    let retry = live.iter().find(|t| t.id != done).unwrap();
    assert_eq!(retry.slot, Some(2), "the failed slot is retried");
    assert_eq!(retry.status.state, TaskState::Running);
    assert_eq!(
        sim.service("job").spec.task.restart.condition,
        swarm_api::spec::RestartCondition::OnFailure,
        "a job's default restart condition, as Docker's"
    );
}

#[test]
fn a_job_task_the_policy_gives_up_on_is_not_replaced() {
    let mut sim = Sim::new(1);
    let mut job = replicated_job(1, 2);
    job.task.restart.condition = swarm_api::spec::RestartCondition::None;
    sim.put_service(job);
    sim.converge();
    let first = sim.live("job")[0].id.clone();
    sim.fail(&first);
    sim.converge();
    sim.now += 60_000;
    sim.converge();
    let tasks = sim.all_tasks("job");
    assert_eq!(
        tasks.len(),
        2,
        "the next slot runs; the failed one is not retried"
    );
    assert_eq!(sim.count_live("job", TaskState::Running), 1);
    assert_eq!(sim.count_live("job", TaskState::Failed), 1);
}

#[test]
fn a_changed_job_runs_again_and_its_earlier_tasks_stop() {
    let mut sim = Sim::new(2);
    sim.put_service(replicated_job(3, 3));
    sim.converge();
    let first: Vec<String> = sim.live("job").iter().map(|t| t.id.clone()).collect();
    let iteration = sim.live("job")[0].spec.job_iteration;
    assert!(iteration > 0);
    // One still running when the job is forced to run again: it is stopped.
    let ids = first.clone();
    for id in &ids[..2] {
        let node_id = sim.data().tasks[id].node_id.clone().unwrap();
        let updates = vec![TaskStatusUpdate {
            id: id.clone(),
            status: TaskStatus::new(TaskState::Complete, sim.now),
        }];
        sim.apply(Command::TaskStatuses { node_id, updates });
    }
    let mut forced = sim.service("job").spec.clone();
    forced.task.force_update += 1;
    sim.put_service(forced);
    sim.converge();
    let live = sim.live("job");
    assert_eq!(live.len(), 3);
    assert!(live.iter().all(|t| !first.contains(&t.id)), "all new tasks");
    assert!(live.iter().all(|t| t.spec.job_iteration > iteration));
    let earlier: Vec<&Task> = first.iter().map(|id| &sim.data().tasks[id]).collect();
    assert!(earlier.iter().all(|t| t.desired == DesiredState::Shutdown));
    assert_eq!(
        earlier
            .iter()
            .filter(|t| t.status.state == TaskState::Shutdown)
            .count(),
        1,
        "the running one stopped; the completed ones stay completed"
    );
    assert_eq!(sim.pass(), 0);
}

#[test]
fn a_global_job_completes_once_per_node_and_on_a_node_that_joins() {
    let mut sim = Sim::new(2);
    sim.put_service(spec("job", "    deploy:\n      mode: global-job\n"));
    sim.converge();
    assert_eq!(sim.count_live("job", TaskState::Running), 2);
    sim.complete_running("job");
    sim.converge();
    assert_eq!(sim.count_live("job", TaskState::Complete), 2);
    assert_eq!(sim.all_tasks("job").len(), 2);
    sim.add_node("n02");
    sim.converge();
    let on_new: Vec<&Task> = sim
        .live("job")
        .into_iter()
        .filter(|t| t.node_id.as_deref() == Some("n02"))
        .collect();
    assert_eq!(on_new.len(), 1);
    assert_eq!(on_new[0].status.state, TaskState::Running);
    sim.complete_running("job");
    sim.converge();
    assert_eq!(sim.count_live("job", TaskState::Complete), 3);
    assert_eq!(sim.all_tasks("job").len(), 3, "once per node");
    assert_eq!(sim.pass(), 0);
}

#[test]
fn a_global_job_task_that_fails_is_restarted_on_its_node() {
    let mut sim = Sim::new(2);
    sim.put_service(spec("job", "    deploy:\n      mode: global-job\n"));
    sim.converge();
    let failed = sim.live("job")[0].clone();
    sim.fail(&failed.id);
    sim.now += 5_000;
    sim.converge();
    let retry: Vec<&Task> = sim
        .live("job")
        .into_iter()
        .filter(|t| t.node_id == failed.node_id)
        .collect();
    assert_eq!(retry.len(), 1);
    assert_ne!(retry[0].id, failed.id);
    assert_eq!(retry[0].status.state, TaskState::Running);
}

/// A service that depends on a job (`service_started`) starts once the job's tasks
/// started, and still when they have completed: a completed task started.
#[test]
fn a_dependency_on_a_completed_job_is_met() {
    use swarm_api::spec::{Dependency, DependencyCondition};
    let mut sim = Sim::new(2);
    sim.put_service(replicated_job(2, 2));
    sim.converge();
    sim.complete_running("job");
    sim.converge();
    assert_eq!(sim.count_live("job", TaskState::Complete), 2);
    let mut web = spec("web", "");
    web.depends_on = vec![Dependency {
        service: "s_job".into(),
        condition: DependencyCondition::ServiceStarted,
    }];
    sim.put_service(web);
    sim.converge();
    assert_eq!(sim.count_live("web", TaskState::Running), 1);
}

/// A service that depends on a job with `service_completed_successfully` waits while the
/// job runs (its tasks pending, saying so) and starts once every completion is done.
#[test]
fn a_dependency_on_a_jobs_completion_waits_for_it() {
    use swarm_api::spec::{Dependency, DependencyCondition};
    let mut sim = Sim::new(2);
    sim.put_service(replicated_job(2, 2));
    let mut web = spec("web", "");
    web.depends_on = vec![Dependency {
        service: "s_job".into(),
        condition: DependencyCondition::ServiceCompletedSuccessfully,
    }];
    sim.put_service(web);
    sim.converge();
    assert_eq!(sim.count_live("job", TaskState::Running), 2);
    assert_eq!(
        sim.count_live("web", TaskState::Running),
        0,
        "the job still runs"
    );
    let pending = sim.live("web");
    assert!(
        pending
            .iter()
            .all(|t| t.status.message == "waiting for service s_job to complete"),
        "{pending:?}"
    );
    sim.complete_running("job");
    sim.converge();
    assert_eq!(sim.count_live("job", TaskState::Complete), 2);
    assert_eq!(sim.count_live("web", TaskState::Running), 1);
}
