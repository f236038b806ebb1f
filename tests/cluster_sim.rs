//! A whole cluster in one process, in simulated time: 3 managers and 50 nodes.
//!
//! The managers are real Raft replicas (`Replica<Store>`, logs in memory) over an in-memory
//! network whose delivery order is a seeded shuffle, applying the real `Store`; the leader
//! runs the real orchestrator pass (with the real scheduler) and proposes its decisions as
//! the daemon does (`WriteTasks`, one pass in flight), judges nodes by their heartbeats as
//! the dispatcher's monitor does (`NodeStatuses`), and every manager serves each node the
//! assignments the dispatcher would (its tasks from that manager's store). The 50 nodes run
//! the real `Worker` on `FakeRuntime`, `FakeImages` and `FakeNetworking`, their status
//! reports proposed in batches (again after a lost leadership). Time is tokio's, paused:
//! one round is one Raft tick of 100 ms, and the workers' pulls, restarts and clocks follow
//! it. Elections have fixed, distinct timeouts and every choice is seeded, so a run replays
//! its decisions.
//!
//! Scenarios: a 100-replica service created, then rolled to a new spec (never more than its
//! parallelism down at once); ten nodes lost (Down, their tasks replaced on the others);
//! the leader lost in the middle of a rolling update (the next leader finishes it); jobs run
//! to completion (at most their concurrency at once, once per node) and again when forced.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use raft::prelude::Message;
use swarm_agent::exec::{Exit, ExitStatus, FakeRuntime, Runtime, Script};
use swarm_agent::image::FakeImages;
use swarm_agent::network::{FakeNetworking, Ipv4Net};
use swarm_agent::worker::{Worker, WorkerConfig, WorkerIo};
use swarm_api::endpoints::NetworkView;
use swarm_api::plan::{Action, Kind, ObjectSpec, Op};
use swarm_api::rollout::UpdateState;
use swarm_api::spec::ServiceSpec;
use swarm_api::state::Origin;
use swarm_api::store::{
    Availability, Cluster, Command, Node, NodeDescription, NodeRole, NodeStatus, Outcome,
    StoreData, TaskStatusUpdate,
};
use swarm_api::task::{DesiredState, Task, TaskState};
use swarm_controller::orchestrator;
use swarm_controller::raft::log::{DurableLog, Location};
use swarm_controller::raft::replica::{Config, ProposalId, Replica, StateMachine};
use swarm_controller::store::{Endpoints, Store};
use swarm_node::{Heard, judge_nodes};
use tokio::sync::mpsc;
use tokio::time::Instant;

const MANAGERS: u64 = 3;
const NODES: usize = 50;
const REPLICAS: usize = 100;
/// One round: a Raft tick, as the daemon's.
const TICK: Duration = Duration::from_millis(100);
/// Where simulated time starts (milliseconds since the Unix epoch).
const EPOCH_MS: u64 = 1_800_000_000_000;
/// Nodes beat every second; three missed beats make a node Down (the cluster's defaults).
const HEARTBEAT_ROUNDS: u64 = 10;
const HEARTBEAT_PERIOD_MS: u64 = 1000;
const MISSED_HEARTBEATS: u32 = 3;
/// The most task decisions in one entry, as the daemon's orchestrator.
const MAX_CHANGES_PER_ENTRY: usize = 1000;

/// SplitMix64: small, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Why a manager proposed something, to act on its fate.
#[derive(Debug)]
enum Purpose {
    /// The sim's own commands (cluster, nodes, services): waited for by `apply`.
    Client,
    Orchestrate,
    Monitor,
    /// A node's status reports: sent again if the leadership they went to is lost.
    Reports {
        agent: usize,
        updates: Vec<TaskStatusUpdate>,
    },
}

struct Outstanding {
    purpose: Purpose,
    /// The leader and term it was proposed to.
    leader: u64,
    term: u64,
}

/// A node: the real worker on fakes, while it runs.
struct Agent {
    node_id: String,
    running: Option<Running>,
    runtime: FakeRuntime,
    _dir: tempfile::TempDir,
}

struct Running {
    worker: Worker,
    reports: mpsc::UnboundedReceiver<TaskStatusUpdate>,
    /// Reports not yet taken by the store.
    pending: Vec<TaskStatusUpdate>,
    /// What the dispatcher last sent it.
    assigned: Option<(Vec<Task>, Option<Ipv4Net>, NetworkView)>,
}

struct Sim {
    rng: Rng,
    start: Instant,
    round: u64,
    replicas: BTreeMap<u64, Option<Replica<Store>>>,
    in_flight: Vec<Message>,
    sequence: u64,
    outstanding: BTreeMap<ProposalId, Outstanding>,
    outcomes: BTreeMap<ProposalId, Outcome>,
    leader_of_term: BTreeMap<u64, u64>,
    /// The leader the manager roles run on now: its id, term, and since when.
    leading: Option<(u64, u64, std::time::Instant)>,
    /// What the current leader last heard from each node, and when its monitor first saw
    /// each node.
    heard: HashMap<String, Heard>,
    first_seen: HashMap<String, std::time::Instant>,
    next_task: u64,
    agents: Vec<Agent>,
}

impl Sim {
    /// A cluster initialised with its 50 nodes (all Ready), each running its worker.
    async fn new(seed: u64) -> Sim {
        let mut sim = Sim {
            rng: Rng(seed),
            start: Instant::now(),
            round: 0,
            replicas: BTreeMap::new(),
            in_flight: Vec::new(),
            sequence: 0,
            outstanding: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            leader_of_term: BTreeMap::new(),
            leading: None,
            heard: HashMap::new(),
            first_seen: HashMap::new(),
            next_task: 0,
            agents: Vec::new(),
        };
        let voters: Vec<u64> = (1..=MANAGERS).collect();
        let empty = Store::default().snapshot();
        for id in &voters {
            let mut log = DurableLog::open(Location::Memory).unwrap();
            log.bootstrap(&voters, empty.clone()).unwrap();
            // Fixed, distinct election timeouts: elections never tie and every run replays.
            let min = 11 + 3 * *id as usize;
            let config = Config {
                min_election_tick: min,
                max_election_tick: min + 1,
                ..Config::new(*id)
            };
            let replica = Replica::open(&config, log, Store::default()).unwrap();
            sim.replicas.insert(*id, Some(replica));
        }
        sim.run_until("a first leader", 100, |sim| sim.leader().is_some())
            .await;
        let init = Command::InitCluster(Cluster {
            id: "sim".into(),
            created_at: EPOCH_MS,
            heartbeat_period_ms: HEARTBEAT_PERIOD_MS,
            missed_heartbeats_for_down: MISSED_HEARTBEATS,
            certificate_validity_ms: swarm_api::store::DEFAULT_CERTIFICATE_VALIDITY_MS,
            worker_token_secret: String::new(),
            manager_token_secret: String::new(),
            address_pool: Default::default(),
        });
        sim.apply(init).await;
        // The nodes join at once, as a fleet brought up together.
        let nodes: Vec<Command> = (1..=NODES)
            .map(|n| {
                Command::AddNode(Node {
                    id: format!("n{n:02}"),
                    hostname: format!("host{n:02}"),
                    role: NodeRole::Worker,
                    availability: Availability::Active,
                    status: NodeStatus::Ready,
                    status_since: EPOCH_MS,
                    labels: BTreeMap::new(),
                    address: format!("10.0.0.{n}:2377"),
                    raft_id: None,
                    description: NodeDescription {
                        os: "linux".into(),
                        arch: "x86_64".into(),
                        nano_cpus: 4_000_000_000,
                        memory_bytes: 8 << 30,
                        data_path_port: swarm_api::endpoints::VXLAN_PORT,
                        metrics_port: None,
                    },
                    subnet: None,
                    worker_error: None,
                    ports_taken: Vec::new(),
                })
            })
            .collect();
        for outcome in sim.apply_all(nodes).await {
            assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
        }
        for n in 1..=NODES {
            let agent = sim.start_agent(format!("n{n:02}")).await;
            sim.agents.push(agent);
        }
        sim
    }

    async fn start_agent(&self, node_id: String) -> Agent {
        // The worker writes each task's files (and fsyncs its image record): on tmpfs when
        // there is one, that costs nothing.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        // A job's step (`job-step` in its command) exits 0 after 2 s; the rest run until
        // stopped.
        let runtime = FakeRuntime::new(|config| Script {
            exit_after: config.args.iter().any(|a| a == "job-step").then_some((
                Duration::from_secs(2),
                ExitStatus {
                    exit: Exit::Code(0),
                    oom_killed: false,
                },
            )),
            ..Script::default()
        });
        let start = self.start;
        let io = WorkerIo {
            runtime: Arc::new(runtime.clone()),
            images: Arc::new(FakeImages::new(Duration::from_millis(300))),
            networking: Arc::new(FakeNetworking::default()),
            clock: Arc::new(move || EPOCH_MS + start.elapsed().as_millis() as u64),
        };
        let config = WorkerConfig {
            node_id: node_id.clone(),
            node_hostname: node_id.clone(),
            data_dir: dir.path().join("data"),
            run_dir: dir.path().join("run"),
        };
        let (worker, reports) = Worker::start(config, io).await.unwrap();
        Agent {
            node_id,
            running: Some(Running {
                worker,
                reports,
                pending: Vec::new(),
                assigned: None,
            }),
            runtime,
            _dir: dir,
        }
    }

    fn now(&self) -> u64 {
        EPOCH_MS + self.start.elapsed().as_millis() as u64
    }

    fn live_managers(&self) -> Vec<u64> {
        self.replicas
            .iter()
            .filter(|(_, r)| r.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    fn replica(&self, id: u64) -> &Replica<Store> {
        self.replicas[&id].as_ref().expect("a running replica")
    }

    fn leader(&self) -> Option<u64> {
        self.live_managers()
            .into_iter()
            .find(|id| self.replica(*id).is_leader())
    }

    /// The state as the leader has applied it (else as any manager has).
    fn state(&self) -> &StoreData {
        let id = self
            .leader()
            .or_else(|| self.live_managers().first().copied())
            .expect("a manager runs");
        self.replica(id).machine().data()
    }

    /// Proposes `command` to the leader; `None` without one.
    fn propose(&mut self, command: &Command, purpose: Purpose) -> Option<ProposalId> {
        let leader = self.leader()?;
        self.sequence += 1;
        let id = ProposalId {
            replica: leader,
            sequence: self.sequence,
        };
        let bytes = serde_json::to_vec(command).expect("commands serialise");
        let replica = self.replicas.get_mut(&leader)?.as_mut()?;
        let term = replica.term();
        replica.propose(id, bytes).ok()?;
        self.outstanding.insert(
            id,
            Outstanding {
                purpose,
                leader,
                term,
            },
        );
        Some(id)
    }

    /// Applies a command of the sim's own through the leader (see `apply_all`).
    async fn apply(&mut self, command: Command) -> Outcome {
        self.apply_all(vec![command]).await.remove(0)
    }

    /// Applies commands of the sim's own through the leader, all proposed at once and each
    /// proposed again if its leadership is lost first; returns what the store made of them.
    async fn apply_all(&mut self, commands: Vec<Command>) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; commands.len()];
        let mut proposed: Vec<Option<ProposalId>> = vec![None; commands.len()];
        for _ in 0..500 {
            for (i, command) in commands.iter().enumerate() {
                let lost = proposed[i].is_none_or(|id| !self.outstanding.contains_key(&id));
                if outcomes[i].is_none() && lost {
                    proposed[i] = self.propose(command, Purpose::Client);
                }
            }
            self.step().await;
            for (i, id) in proposed.iter().enumerate() {
                if let Some(outcome) = id.and_then(|id| self.outcomes.remove(&id)) {
                    outcomes[i] = Some(outcome);
                }
            }
            if outcomes.iter().all(Option::is_some) {
                return outcomes.into_iter().flatten().collect();
            }
        }
        panic!("{commands:?} were never all applied");
    }

    /// One round of 100 ms: the workers' time passes, the managers tick and talk, the
    /// leader orchestrates and judges the nodes, every node gets its assignments and sends
    /// its reports.
    async fn step(&mut self) {
        tokio::time::sleep(TICK).await;
        // The workers' tasks woken by this time run before the managers look.
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        self.round += 1;
        self.raft_round();
        self.follow_leadership();
        if self.round.is_multiple_of(HEARTBEAT_ROUNDS) {
            let now = Instant::now().into_std();
            for agent in self.agents.iter().filter(|a| a.running.is_some()) {
                self.heard
                    .insert(agent.node_id.clone(), Heard::new(now, None));
            }
        }
        self.monitor();
        self.orchestrate();
        self.dispatch().await;
        self.report();
    }

    fn raft_round(&mut self) {
        for replica in self.replicas.values_mut().flatten() {
            replica.tick();
        }
        let mut messages = std::mem::take(&mut self.in_flight);
        for i in (1..messages.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            messages.swap(i, j);
        }
        for message in messages {
            let (from, to) = (message.from, message.to);
            let delivered = match self.replicas.get_mut(&to) {
                Some(Some(replica)) => {
                    let _ = replica.step(message);
                    true
                }
                _ => false,
            };
            if !delivered && let Some(Some(sender)) = self.replicas.get_mut(&from) {
                sender.report_unreachable(to);
            }
        }
        for (id, slot) in self.replicas.iter_mut() {
            let Some(replica) = slot else { continue };
            let output = replica.advance().unwrap();
            self.in_flight.extend(output.messages);
            for applied in output.applied {
                let Some(proposal) = applied.proposal else {
                    continue;
                };
                let Some(outstanding) = self.outstanding.remove(&proposal) else {
                    continue;
                };
                if let Purpose::Client = outstanding.purpose {
                    let outcome = serde_json::from_slice(&applied.response).unwrap();
                    self.outcomes.insert(proposal, outcome);
                }
            }
            if replica.is_leader() {
                let term = replica.term();
                let first = *self.leader_of_term.entry(term).or_insert(*id);
                assert_eq!(first, *id, "two leaders in term {term}");
            }
        }
    }

    /// A new leader (or none): what was proposed to the old one is lost (raft drops
    /// proposals of a lost leadership; the daemon answers them `LeaderChanged`), reports
    /// go again, and the new leader hears every node afresh.
    fn follow_leadership(&mut self) {
        let now_leading = self
            .leader()
            .map(|id| (id, self.replica(id).term(), Instant::now().into_std()));
        let same = match (&self.leading, &now_leading) {
            (Some((a, ta, _)), Some((b, tb, _))) => a == b && ta == tb,
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        self.leading = now_leading;
        self.heard.clear();
        self.first_seen.clear();
        let current = now_leading.map(|(id, term, _)| (id, term));
        let lost: Vec<ProposalId> = self
            .outstanding
            .iter()
            .filter(|(_, o)| Some((o.leader, o.term)) != current)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            let outstanding = self.outstanding.remove(&id).expect("listed");
            if let Purpose::Reports { agent, updates } = outstanding.purpose
                && let Some(running) = self.agents[agent].running.as_mut()
            {
                running.pending.splice(0..0, updates);
            }
        }
    }

    fn in_flight(&self, purpose: fn(&Purpose) -> bool) -> bool {
        self.outstanding.values().any(|o| purpose(&o.purpose))
    }

    /// The dispatcher's monitor on the leader (`judge_nodes`, the daemon's): Down after
    /// the missed periods, Ready when heard again.
    fn monitor(&mut self) {
        let Some((leader, _, since)) = self.leading else {
            return;
        };
        if self.in_flight(|p| matches!(p, Purpose::Monitor)) {
            return;
        }
        let nodes: Vec<swarm_node::StoredNode> = self
            .replica(leader)
            .machine()
            .data()
            .nodes
            .values()
            .map(|n| {
                let taken = n.ports_taken.clone();
                (n.id.clone(), n.status, n.worker_error.clone(), taken)
            })
            .collect();
        let grace = Duration::from_millis(HEARTBEAT_PERIOD_MS * u64::from(MISSED_HEARTBEATS));
        let now = Instant::now().into_std();
        let changes = judge_nodes(&nodes, &self.heard, &mut self.first_seen, since, grace, now);
        if !changes.is_empty() {
            let command = Command::NodeStatuses {
                at: self.now(),
                changes,
            };
            self.propose(&command, Purpose::Monitor);
        }
    }

    /// The leader's orchestrator: one pass over its state, its decisions in one entry
    /// checked against the tasks' version; one pass in flight at a time.
    fn orchestrate(&mut self) {
        let Some((leader, _, _)) = self.leading else {
            return;
        };
        if self.in_flight(|p| matches!(p, Purpose::Orchestrate)) {
            return;
        }
        let now = self.now();
        let mut next_task = self.next_task;
        let mut new_id = || {
            next_task += 1;
            format!("task{next_task:021}")
        };
        let data = self.replica(leader).machine().data();
        let mut changes = orchestrator::pass(now, data, &mut new_id);
        let expected_version = data.tasks_version;
        self.next_task = next_task;
        if changes.is_empty() {
            return;
        }
        changes.truncate(MAX_CHANGES_PER_ENTRY);
        let command = Command::WriteTasks {
            expected_version,
            changes,
        };
        self.propose(&command, Purpose::Orchestrate);
    }

    /// Each running node gets its assignments from the manager it is connected to (one of
    /// the live ones, by its number), as the dispatcher computes them: its tasks that
    /// should run, and those to stop that have not stopped, with its subnet and its
    /// network view.
    async fn dispatch(&mut self) {
        let managers = self.live_managers();
        // Each manager's endpoint table, built once per round.
        let mut tables: HashMap<u64, Endpoints> = HashMap::new();
        for index in 0..self.agents.len() {
            let manager = managers[index % managers.len()];
            let data = self.replicas[&manager]
                .as_ref()
                .expect("a live manager")
                .machine();
            let agent = &self.agents[index];
            let Some(running) = &agent.running else {
                continue;
            };
            let tasks: Vec<Task> = data
                .tasks_on(&agent.node_id)
                .filter(|t| t.desired == DesiredState::Running || !t.status.state.is_terminal())
                .cloned()
                .collect();
            let subnet = data.data().nodes.get(&agent.node_id).and_then(|n| n.subnet);
            let view = tables
                .entry(manager)
                .or_insert_with(|| Endpoints::of(data))
                .of_node(&agent.node_id);
            let assigned = Some((tasks, subnet, view));
            if running.assigned == assigned {
                continue;
            }
            let (tasks, subnet, view) = assigned.clone().expect("just made");
            let running = self.agents[index].running.as_mut().expect("checked");
            running
                .worker
                .assign(tasks, subnet, BTreeMap::new(), view, Default::default())
                .await;
            running.assigned = assigned;
        }
    }

    /// Each running node's reports, batched, proposed to the leader.
    fn report(&mut self) {
        if self.leading.is_none() {
            return;
        }
        for index in 0..self.agents.len() {
            let Some(running) = self.agents[index].running.as_mut() else {
                continue;
            };
            while let Ok(update) = running.reports.try_recv() {
                running.pending.push(update);
            }
            if running.pending.is_empty() {
                continue;
            }
            let updates = std::mem::take(&mut running.pending);
            let command = Command::TaskStatuses {
                node_id: self.agents[index].node_id.clone(),
                updates: updates.clone(),
            };
            if self
                .propose(
                    &command,
                    Purpose::Reports {
                        agent: index,
                        updates: updates.clone(),
                    },
                )
                .is_none()
                && let Some(running) = self.agents[index].running.as_mut()
            {
                running.pending = updates;
            }
        }
    }

    async fn run_until(&mut self, what: &str, rounds: u64, done: impl Fn(&Sim) -> bool) {
        for _ in 0..rounds {
            if done(self) {
                return;
            }
            self.step().await;
        }
        panic!(
            "{what}: not within {rounds} rounds ({} s simulated); {}",
            rounds / 10,
            self.summary()
        );
    }

    /// A node stops, as a machine that is switched off: no more heartbeats, assignments or
    /// reports; its containers are left as they were.
    fn stop_agent(&mut self, index: usize) {
        self.agents[index].running = None;
    }

    fn crash_manager(&mut self, id: u64) {
        self.replicas.insert(id, None);
    }

    fn service_id(&self, name: &str) -> String {
        let service = self
            .state()
            .objects
            .services
            .iter()
            .find(|s| s.spec.name == name)
            .unwrap_or_else(|| panic!("service {name}"));
        service.id.clone().expect("a stored service has an id")
    }

    /// The live tasks of `service` (those that should run).
    fn live_tasks<'a>(&'a self, service_id: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.state()
            .tasks
            .values()
            .filter(move |t| t.service_id == service_id && t.desired == DesiredState::Running)
    }

    /// How many live tasks of `service` run, in the store, with `spec`'s image.
    fn running(&self, service_id: &str, image: &str) -> usize {
        self.live_tasks(service_id)
            .filter(|t| t.status.state == TaskState::Running && t.spec.container.image == image)
            .count()
    }

    /// The containers that run on the running nodes, as their runtimes say.
    async fn containers(&self) -> BTreeSet<String> {
        let mut running = BTreeSet::new();
        for agent in self.agents.iter().filter(|a| a.running.is_some()) {
            for container in agent.runtime.list().await.unwrap() {
                if container.status == swarm_agent::exec::Status::Running {
                    running.insert(container.id);
                }
            }
        }
        running
    }

    fn summary(&self) -> String {
        let data = self.state();
        let mut states: BTreeMap<(String, &str), usize> = BTreeMap::new();
        for task in data
            .tasks
            .values()
            .filter(|t| t.desired == DesiredState::Running)
        {
            let key = (
                task.spec.container.image.clone(),
                task.status.state.as_str(),
            );
            *states.entry(key).or_default() += 1;
        }
        format!(
            "leader {:?}, live tasks by image and state {states:?}, update status {:?}",
            self.leader(),
            data.update_status
        )
    }
}

/// The service `s_web`: `replicas` tasks of `image`, rolled out 10 at a time.
fn web(image: &str, replicas: usize) -> ServiceSpec {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.yaml");
    let yaml = format!(
        "services:\n  web:\n    image: {image}\n    deploy:\n      replicas: {replicas}\n      \
         update_config:\n        parallelism: 10\n        delay: 0s\n        monitor: 1s\n"
    );
    std::fs::write(&path, yaml).unwrap();
    let loaded = swarm_controller::stack::load(
        &swarm_controller::source::WorkTree,
        &path,
        "s.yaml",
        &|_| None,
    );
    let mut stack = loaded
        .stack
        .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics));
    let mut spec = stack.services.remove(0);
    // On no network: the simulation plans services alone, and the store refuses a service
    // naming a network it does not have.
    spec.task.networks.clear();
    spec
}

fn put(spec: ServiceSpec, op: Op) -> Command {
    Command::ApplyPlan {
        file_contents: Default::default(),
        expected_version: None,
        actions: vec![Action {
            op,
            kind: Kind::Service,
            name: spec.name.clone(),
            origin: Origin::default(),
            changes: Vec::new(),
            spec: Some(ObjectSpec::Service(Box::new(spec))),
        }],
        registry_auth: BTreeMap::new(),
        override_git: false,
    }
}

/// A cluster running the 100 replicas of `web:1`, every one of them a container on its
/// node.
async fn cluster_running_web(seed: u64) -> (Sim, String) {
    let mut sim = Sim::new(seed).await;
    let outcome = sim.apply(put(web("web:1", REPLICAS), Op::Create)).await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    let service = sim.service_id("s_web");
    sim.run_until("100 replicas running", 300, |sim| {
        sim.running(&service, "web:1") == REPLICAS
    })
    .await;
    let live: BTreeSet<String> = sim.live_tasks(&service).map(|t| t.id.clone()).collect();
    assert_eq!(
        sim.containers().await,
        live,
        "the store and the nodes agree"
    );
    // Spread: 100 tasks over 50 nodes, two each.
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for task in sim.live_tasks(&service) {
        *per_node
            .entry(task.node_id.as_deref().expect("placed"))
            .or_default() += 1;
    }
    assert_eq!(
        per_node.len(),
        NODES,
        "{per_node:?} {:?}",
        sim.state()
            .tasks
            .values()
            .filter(|t| t.node_id.as_deref() == Some("n50") || t.node_id.is_none())
            .collect::<Vec<_>>()
    );
    assert!(per_node.values().all(|n| *n == 2), "{per_node:?}");
    (sim, service)
}

/// Rolls `web` to `image` and runs until the update completes (see `roll_out`).
async fn roll_to(sim: &mut Sim, service: &str, image: &str, rounds: u64) {
    let outcome = sim.apply(put(web(image, REPLICAS), Op::Update)).await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    roll_out(sim, service, image, rounds).await;
}

/// Runs until the update to `image` completes, checking at every round that no more than
/// the parallelism (10) of the service's tasks are down.
async fn roll_out(sim: &mut Sim, service: &str, image: &str, rounds: u64) {
    for _ in 0..rounds {
        let running = sim
            .live_tasks(service)
            .filter(|t| t.status.state == TaskState::Running)
            .count();
        let stopping = sim
            .state()
            .tasks
            .values()
            .filter(|t| {
                t.service_id == service
                    && t.desired == DesiredState::Shutdown
                    && t.status.state == TaskState::Running
            })
            .count();
        assert!(
            running + stopping >= REPLICAS - 10,
            "{running} running and {stopping} stopping: more than the parallelism down; {}",
            sim.summary()
        );
        let completed = sim
            .state()
            .update_status
            .get(service)
            .is_some_and(|s| s.state == UpdateState::Completed);
        if completed && sim.running(service, image) == REPLICAS {
            return;
        }
        sim.step().await;
    }
    panic!("the update to {image} did not complete: {}", sim.summary());
}

#[tokio::test(start_paused = true)]
async fn a_rolling_update_of_100_replicas_over_50_nodes() {
    let (mut sim, service) = cluster_running_web(1).await;
    roll_to(&mut sim, &service, "web:2", 600).await;
    let live: BTreeSet<String> = sim.live_tasks(&service).map(|t| t.id.clone()).collect();
    // The old containers are stopped and deleted once their tasks shut down.
    for _ in 0..20 {
        sim.step().await;
    }
    assert_eq!(sim.containers().await, live);
    let old = sim
        .state()
        .tasks
        .values()
        .filter(|t| t.spec.container.image == "web:1")
        .filter(|t| t.status.state != TaskState::Shutdown)
        .count();
    assert_eq!(old, 0, "every old task shut down: {}", sim.summary());
}

#[tokio::test(start_paused = true)]
async fn ten_nodes_lost_their_tasks_run_elsewhere() {
    let (mut sim, service) = cluster_running_web(2).await;
    let lost: BTreeSet<String> = (0..10).map(|i| sim.agents[i].node_id.clone()).collect();
    for index in 0..10 {
        sim.stop_agent(index);
    }
    sim.run_until("the lost nodes Down", 100, |sim| {
        lost.iter()
            .all(|id| sim.state().nodes[id].status == NodeStatus::Down)
    })
    .await;
    sim.run_until("100 replicas running on the other nodes", 300, |sim| {
        sim.running(&service, "web:1") == REPLICAS
            && sim
                .live_tasks(&service)
                .all(|t| !lost.contains(t.node_id.as_deref().unwrap_or_default()))
    })
    .await;
    let live: BTreeSet<String> = sim.live_tasks(&service).map(|t| t.id.clone()).collect();
    assert_eq!(sim.containers().await, live);
    let ready = sim
        .state()
        .nodes
        .values()
        .filter(|n| n.status == NodeStatus::Ready)
        .count();
    assert_eq!(ready, NODES - 10);
    // The lost nodes' tasks are orphaned, not left "running".
    let orphaned = sim
        .state()
        .tasks
        .values()
        .filter(|t| lost.contains(t.node_id.as_deref().unwrap_or_default()))
        .filter(|t| t.status.state == TaskState::Orphaned)
        .count();
    assert_eq!(orphaned, 20, "{}", sim.summary());
}

#[tokio::test(start_paused = true)]
async fn the_next_leader_finishes_a_rolling_update() {
    let (mut sim, service) = cluster_running_web(3).await;
    let outcome = sim.apply(put(web("web:2", REPLICAS), Op::Update)).await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    sim.run_until("a third of the update done", 300, |sim| {
        sim.running(&service, "web:2") >= REPLICAS / 3
    })
    .await;
    let old_leader = sim.leader().expect("a leader");
    let old_term = sim.replica(old_leader).term();
    let done = sim.running(&service, "web:2");
    assert!(done < REPLICAS, "the update is under way, not over");
    sim.crash_manager(old_leader);
    sim.run_until("a new leader", 100, |sim| sim.leader().is_some())
        .await;
    let new_leader = sim.leader().expect("a leader");
    assert_ne!(new_leader, old_leader);
    assert!(sim.replica(new_leader).term() > old_term);
    roll_out(&mut sim, &service, "web:2", 600).await;
    let live: BTreeSet<String> = sim.live_tasks(&service).map(|t| t.id.clone()).collect();
    for _ in 0..30 {
        sim.step().await;
    }
    assert_eq!(sim.containers().await, live, "{}", sim.summary());
}

/// The same seed gives the same run: the same rounds, the same Raft log length, the same
/// state (tasks, their nodes, their statuses and times).
#[tokio::test(start_paused = true)]
async fn a_seed_replays_exactly() {
    let (first, _) = cluster_running_web(7).await;
    let (second, _) = cluster_running_web(7).await;
    assert_eq!(first.round, second.round);
    assert!(first.state() == second.state(), "the runs diverged");
}

/// Every manager's store gives each task that has not stopped and each service's virtual IP
/// an address of its own on network `s_back`, within the network's subnet: checked on
/// every live replica.
fn check_addresses(sim: &Sim) {
    for id in sim.live_managers() {
        let data = sim.replica(id).machine().data();
        let Some(allocation) = data.network_allocations.get("s_back") else {
            continue;
        };
        let mut seen = BTreeMap::new();
        let vips = data.service_vips.iter().flat_map(|(service, vips)| {
            vips.iter()
                .map(move |vip| (vip, format!("the virtual IP of {service}")))
        });
        let tasks = data
            .tasks
            .values()
            .filter(|t| !t.status.state.is_terminal())
            .flat_map(|task| {
                task.networks
                    .iter()
                    .map(|held| (held, format!("task {}", task.id)))
            });
        for (held, holder) in tasks.chain(vips) {
            if held.network != "s_back" {
                continue;
            }
            assert!(allocation.subnet.contains(&held.address), "{held:?}");
            assert_ne!(held.address, allocation.gateway);
            if let Some(other) = seen.insert(held.address, holder.clone()) {
                panic!(
                    "manager {id}: {} held by {other} and {holder}",
                    held.address
                );
            }
        }
    }
}

/// The network `s_back` (a /24 of its own) created by a one-action plan.
fn back_network() -> Command {
    let spec = swarm_api::spec::NetworkSpec {
        name: "s_back".into(),
        driver: "overlay".into(),
        driver_opts: BTreeMap::new(),
        attachable: false,
        internal: false,
        labels: BTreeMap::new(),
        subnets: vec!["10.40.0.0/24".into()],
        gateway: None,
    };
    Command::ApplyPlan {
        file_contents: Default::default(),
        expected_version: None,
        actions: vec![Action {
            op: Op::Create,
            kind: Kind::Network,
            name: spec.name.clone(),
            origin: Origin::default(),
            changes: Vec::new(),
            spec: Some(ObjectSpec::Network(spec)),
        }],
        registry_auth: BTreeMap::new(),
        override_git: false,
    }
}

fn web_on_back(image: &str) -> ServiceSpec {
    let mut spec = web(image, REPLICAS);
    spec.task.networks = vec![swarm_api::spec::NetworkAttachment {
        target: "s_back".into(),
        aliases: vec!["web".into()],
    }];
    spec
}

/// Task addresses are decided in the store's apply: through a rolling update whose leader
/// is lost half way (a new leader's passes, stale passes refused), the tasks that have not
/// stopped hold distinct addresses of the network on every manager, and those of the
/// stopped tasks are given again (a /24 holds 253 tasks: 100 replicas rolled twice need
/// reuse).
#[tokio::test(start_paused = true)]
async fn task_addresses_stay_unique_across_a_leader_change() {
    let mut sim = Sim::new(5).await;
    let outcome = sim.apply(back_network()).await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    let outcome = sim.apply(put(web_on_back("web:1"), Op::Create)).await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    let service = sim.service_id("s_web");
    sim.run_until("100 replicas running", 300, |sim| {
        check_addresses(sim);
        sim.running(&service, "web:1") == REPLICAS
    })
    .await;
    let outcome = sim.apply(put(web_on_back("web:2"), Op::Update)).await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    sim.run_until("a third of the update done", 300, |sim| {
        check_addresses(sim);
        sim.running(&service, "web:2") >= REPLICAS / 3
    })
    .await;
    let old_leader = sim.leader().expect("a leader");
    sim.crash_manager(old_leader);
    sim.run_until("web:2 everywhere under a new leader", 900, |sim| {
        check_addresses(sim);
        sim.leader().is_some_and(|l| l != old_leader) && sim.running(&service, "web:2") == REPLICAS
    })
    .await;
    let outcome = sim.apply(put(web_on_back("web:3"), Op::Update)).await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    sim.run_until("web:3 everywhere", 900, |sim| {
        check_addresses(sim);
        sim.running(&service, "web:3") == REPLICAS
    })
    .await;
    let live: Vec<&Task> = sim.live_tasks(&service).collect();
    assert!(
        live.iter().all(|t| t.networks.len() == 1),
        "every live task holds an address"
    );
}

/// Virtual IPs are decided in the store's apply too: a service keeps its VIP through a
/// rolling update whose leader is lost half way, and a service created under the next
/// leader gets one that no task and no other service holds, the same on every manager.
#[tokio::test(start_paused = true)]
async fn virtual_ips_stay_unique_and_kept_across_a_leader_change() {
    let mut sim = Sim::new(11).await;
    let outcome = sim.apply(back_network()).await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    let outcome = sim.apply(put(web_on_back("web:1"), Op::Create)).await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    let site = sim.service_id("s_web");
    let web_vip = sim.state().service_vips[&site].clone();
    assert_eq!(web_vip.len(), 1, "one VIP on its one network");
    sim.run_until("100 replicas running", 300, |sim| {
        check_addresses(sim);
        sim.running(&site, "web:1") == REPLICAS
    })
    .await;
    let outcome = sim.apply(put(web_on_back("web:2"), Op::Update)).await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    sim.run_until("a third of the update done", 300, |sim| {
        check_addresses(sim);
        sim.running(&site, "web:2") >= REPLICAS / 3
    })
    .await;
    let old_leader = sim.leader().expect("a leader");
    sim.crash_manager(old_leader);
    sim.run_until("a new leader", 100, |sim| {
        sim.leader().is_some_and(|l| l != old_leader)
    })
    .await;
    let mut api = web("api:1", 4);
    api.name = "s_api".into();
    api.task.networks = web_on_back("api:1").task.networks;
    let outcome = sim.apply(put(api, Op::Create)).await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    let api = sim.service_id("s_api");
    sim.run_until("web:2 everywhere and the api running", 900, |sim| {
        check_addresses(sim);
        sim.running(&site, "web:2") == REPLICAS && sim.running(&api, "api:1") == 4
    })
    .await;
    for id in sim.live_managers() {
        let vips = &sim.replica(id).machine().data().service_vips;
        assert_eq!(vips[&site], web_vip, "manager {id} kept the VIP of s_web");
        assert_ne!(vips[&api], web_vip, "manager {id}");
    }
}

/// The services of a stack file's `yaml` (stack `s`), on no network.
fn stack_services(yaml: &str) -> Vec<ServiceSpec> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.yaml");
    std::fs::write(&path, yaml).unwrap();
    let loaded = swarm_controller::stack::load(
        &swarm_controller::source::WorkTree,
        &path,
        "s.yaml",
        &|_| None,
    );
    let stack = loaded
        .stack
        .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics));
    let mut services = stack.services;
    for spec in &mut services {
        spec.task.networks.clear();
    }
    services
}

/// `depends_on` over the real store, orchestrator, workers and their healthchecks: a stack
/// deployed whole in one entry (as `stack deploy` or a GitOps commit proposes it) places no
/// task of `web` until every task of `db` passed its healthcheck; meanwhile `web`'s tasks
/// say what they wait for; then they all run.
#[tokio::test(start_paused = true)]
async fn a_stack_starts_its_services_in_dependency_order() {
    let mut sim = Sim::new(11).await;
    let services = stack_services(
        "services:\n  db:\n    image: db:1\n    healthcheck:\n      test: [CMD, ready]\n      \
         interval: 3s\n    deploy:\n      replicas: 3\n  web:\n    image: web:1\n    \
         depends_on:\n      db:\n        condition: service_healthy\n    deploy:\n      \
         replicas: 20\n",
    );
    let actions = services
        .into_iter()
        .map(|spec| Action {
            op: Op::Create,
            kind: Kind::Service,
            name: spec.name.clone(),
            origin: Origin::default(),
            changes: Vec::new(),
            spec: Some(ObjectSpec::Service(Box::new(spec))),
        })
        .collect();
    let outcome = sim
        .apply(Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: None,
            actions,
            registry_auth: BTreeMap::new(),
            override_git: false,
        })
        .await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    let (db, web) = (sim.service_id("s_db"), sim.service_id("s_web"));
    let mut waited = 0;
    for _ in 0..600 {
        let db_healthy = {
            let tasks: Vec<&Task> = sim.live_tasks(&db).collect();
            tasks.len() == 3 && tasks.iter().all(|t| t.status.state == TaskState::Running)
        };
        let web_tasks: Vec<&Task> = sim.live_tasks(&web).collect();
        if web_tasks.iter().any(|t| t.node_id.is_some()) {
            assert!(
                db_healthy,
                "web placed before db is healthy: {}",
                sim.summary()
            );
        } else if web_tasks.iter().any(|t| {
            t.status.state == TaskState::Pending
                && t.status.message == "waiting for service s_db to be healthy"
        }) {
            waited += 1;
        }
        if sim.running(&web, "web:1") == 20 {
            break;
        }
        sim.step().await;
    }
    assert_eq!(sim.running(&web, "web:1"), 20, "{}", sim.summary());
    // db's healthcheck passes after its first interval: web waited for it, seconds.
    assert!(waited >= 10, "web waited {waited} rounds");
}

/// Jobs over the real store, orchestrator and workers: a replicated job of 30 completions,
/// 10 at once, and a global job over the 50 nodes, each task exiting 0 after 2 s, complete
/// with exactly one task per completion (none restarted), never more than 10 of the first
/// running at once; forced, the replicated job runs its 30 again.
#[tokio::test(start_paused = true)]
async fn jobs_run_to_completion_and_again_when_forced() {
    let mut sim = Sim::new(13).await;
    let services = stack_services(
        "services:\n  batch:\n    image: job:1\n    command: [job-step]\n    deploy:\n      \
         mode: replicated-job\n      replicas: 30\n  warm:\n    image: job:1\n    \
         command: [job-step]\n    deploy:\n      mode: global-job\n",
    );
    let mut batch_spec = services[0].clone();
    batch_spec.mode = swarm_api::spec::ServiceMode::ReplicatedJob {
        max_concurrent: 10,
        total_completions: 30,
    };
    for spec in [batch_spec.clone(), services[1].clone()] {
        let outcome = sim.apply(put(spec, Op::Create)).await;
        assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    }
    let (batch, warm) = (sim.service_id("s_batch"), sim.service_id("s_warm"));
    let completed = |sim: &Sim, id: &str| {
        sim.live_tasks(id)
            .filter(|t| t.status.state == TaskState::Complete)
            .count()
    };
    let made = |sim: &Sim, id: &str| {
        sim.state()
            .tasks
            .values()
            .filter(|t| t.service_id == id)
            .count()
    };
    let mut most_at_once = 0;
    for _ in 0..600 {
        most_at_once = most_at_once.max(sim.running(&batch, "job:1"));
        if completed(&sim, &batch) == 30 && completed(&sim, &warm) == 50 {
            break;
        }
        sim.step().await;
    }
    assert_eq!(completed(&sim, &batch), 30, "{}", sim.summary());
    assert_eq!(completed(&sim, &warm), 50, "{}", sim.summary());
    assert_eq!(most_at_once, 10);
    assert_eq!(made(&sim, &batch), 30, "none restarted");
    assert_eq!(made(&sim, &warm), 50, "once per node");
    // Nothing more happens to finished jobs.
    for _ in 0..50 {
        sim.step().await;
    }
    assert_eq!((made(&sim, &batch), made(&sim, &warm)), (30, 50));

    let first_iteration = sim
        .live_tasks(&batch)
        .map(|t| t.spec.job_iteration)
        .max()
        .unwrap();
    batch_spec.task.force_update += 1;
    let outcome = sim.apply(put(batch_spec, Op::Update)).await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    for _ in 0..600 {
        if completed(&sim, &batch) == 30 && made(&sim, &batch) == 60 {
            break;
        }
        sim.step().await;
    }
    assert_eq!(completed(&sim, &batch), 30, "{}", sim.summary());
    assert_eq!(made(&sim, &batch), 60, "30 more, for the new iteration");
    assert!(
        sim.live_tasks(&batch)
            .all(|t| t.spec.job_iteration > first_iteration),
        "the live tasks are the new iteration's"
    );
}
