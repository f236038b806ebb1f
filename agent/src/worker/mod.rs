//! The worker: runs the tasks the managers assign to this node. Each assigned task gets a
//! controller (a tokio task) that drives its `Lifecycle` — pull the image, make the network
//! and the root filesystem, start the container, watch its exit and its healthcheck, stop
//! it when the managers say so, clean up — and reports every change of state. After a
//! daemon restart, containers that still run are adopted instead of started again, and
//! whatever no assigned task owns is removed.

mod container;
mod gc;
mod health;
pub mod logs;
pub mod secrets;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use swarm_api::auth::RegistryAuth;
use swarm_api::endpoints::NetworkView;
use swarm_api::files::FileContents;
use swarm_api::store::TaskStatusUpdate;
use swarm_api::task::{DesiredState, Task, TaskState, TaskStatus};
use tokio::sync::{mpsc, watch};

use crate::exec::Runtime;
use crate::exec::lifecycle::{Action, Event, Lifecycle};
use crate::image::{ImageSource, ImageStore, PullOptions};
use crate::network::{
    HostNetworking, LocalTask, NetworkError, Networking, NodeNetworkConfig, NodeOverlays,
    TaskNetworks, node_overlays,
};

pub use container::Prepared;

/// A task as the node's DNS server knows the questions from its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asker {
    pub task_id: String,
    /// Where the server forwards the task's questions it does not answer: its service's
    /// nameservers (`dns`); empty, the node's.
    pub nameservers: Vec<std::net::IpAddr>,
}

/// How long a task that other nodes send connections to keeps serving after its stop
/// order, before its stop signal: the time every node takes to replace its rules
/// (milliseconds), with room for a loaded one.
const ENDPOINT_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Where a node keeps what its tasks need.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub node_id: String,
    /// For `{{.Node.Hostname}}` in task templates (`api::template`).
    pub node_hostname: String,
    /// The node's data dir: `images/`, and `tasks/<id>/` (root filesystem, files, logs).
    pub data_dir: PathBuf,
    /// The node's run dir (emptied by a reboot, as the namespaces are): `netns/`.
    pub run_dir: PathBuf,
}

impl WorkerConfig {
    /// Where the node's task namespaces are: `DIR/TASK`.
    pub fn netns_dir(&self) -> PathBuf {
        self.run_dir.join("netns")
    }
}

/// What a worker does its IO through: containers, images, task networks, and the clock its
/// reports are dated by. `host` gives the real ones; a simulation gives `FakeRuntime`,
/// `FakeImages`, `FakeNetworking` and its own clock.
#[derive(Clone)]
pub struct WorkerIo {
    pub runtime: Arc<dyn Runtime>,
    pub images: Arc<dyn ImageSource>,
    pub networking: Arc<dyn Networking>,
    pub clock: Clock,
}

/// Milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system's clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

impl WorkerIo {
    /// The node's own: `runtime`, the image store under `DATA_DIR/images` (pulling as `pull`
    /// says), and the host's task networks.
    pub fn host(
        runtime: Arc<dyn Runtime>,
        config: &WorkerConfig,
        pull: PullOptions,
    ) -> Result<Self, WorkerError> {
        let images = ImageStore::open(&config.data_dir.join("images"), pull)?;
        Ok(WorkerIo {
            runtime,
            images: Arc::new(images),
            networking: Arc::new(HostNetworking),
            clock: system_clock(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot open the image store: {0}")]
    Images(#[from] crate::image::ImageError),
    #[error("cannot list this node's containers: {0}")]
    Runtime(#[from] crate::exec::RuntimeError),
}

/// The worker of a node. Dropping it leaves containers running (a restarted daemon adopts
/// them); controllers end with the tokio runtime.
pub struct Worker {
    shared: Arc<Shared>,
}

/// A task's controller: how to tell it what the managers want, and its tokio task.
struct Controller {
    desired: watch::Sender<DesiredState>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    config: WorkerConfig,
    runtime: Arc<dyn Runtime>,
    images: Arc<dyn ImageSource>,
    networking: Arc<dyn Networking>,
    clock: Clock,
    /// Set up at the first assignment that names the node's subnet.
    network: Mutex<Option<Arc<dyn TaskNetworks>>>,
    /// One set-up at a time: a set-up clears the node's overlays of an earlier run, which
    /// must not happen after a task of this run was put on them.
    network_setup: tokio::sync::Mutex<()>,
    /// The controllers of the tasks this worker runs, by task id.
    controllers: Mutex<HashMap<String, Controller>>,
    /// The subnet the managers leased to this node; its network is set up when a task
    /// first needs it.
    subnet: watch::Sender<Option<Ipv4Net>>,
    /// Containers found at start (a daemon restart), not yet adopted or removed.
    found: Mutex<Option<HashSet<String>>>,
    /// Which images the tasks use, and when each image was last used: what garbage
    /// collection keeps.
    image_use: Mutex<gc::ImageUse>,
    /// The registry credentials of the assigned tasks' services, by service id, as the
    /// last assignment set brought them: a task's pull uses its service's.
    registry_auth: Mutex<BTreeMap<String, RegistryAuth>>,
    /// The node's share of the endpoint table, as the last assignment set brought it.
    network_view: watch::Sender<NetworkView>,
    /// An assignment set brought a view: until then the view is a placeholder, which the
    /// followers of the view do not act on.
    view_assigned: std::sync::atomic::AtomicBool,
    /// The contents of the configs and secrets the assigned tasks mount, by digest, as the
    /// last assignment set brought them.
    file_contents: Mutex<FileContents>,
    /// The tasks on overlay networks whose namespaces are made, by task id: with the view,
    /// what the node's overlays are reconciled to.
    overlay_tasks: Mutex<BTreeMap<String, LocalTask>>,
    /// One overlay reconcile at a time, each from the latest view and tasks.
    overlay_turn: tokio::sync::Mutex<()>,
    reports: mpsc::UnboundedSender<TaskStatusUpdate>,
    /// The task each address of the node's subnet belongs to, from its attach until it
    /// ends: how the node's DNS server knows who asks.
    addresses: watch::Sender<BTreeMap<Ipv4Addr, Asker>>,
    /// swarm-init's path in the data dir, once the first task that wants it wrote it.
    init: Mutex<Option<PathBuf>>,
}

impl Worker {
    /// A worker, and where its status reports come out.
    pub async fn start(
        config: WorkerConfig,
        io: WorkerIo,
    ) -> Result<(Worker, mpsc::UnboundedReceiver<TaskStatusUpdate>), WorkerError> {
        let found = io.runtime.list().await?.into_iter().map(|c| c.id).collect();
        let (reports, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            config,
            runtime: io.runtime,
            images: io.images,
            networking: io.networking,
            clock: io.clock,
            network: Mutex::new(None),
            network_setup: tokio::sync::Mutex::new(()),
            controllers: Mutex::new(HashMap::new()),
            subnet: watch::Sender::new(None),
            found: Mutex::new(Some(found)),
            image_use: Mutex::new(gc::ImageUse::default()),
            registry_auth: Mutex::new(BTreeMap::new()),
            network_view: watch::channel(NetworkView::default()).0,
            view_assigned: std::sync::atomic::AtomicBool::new(false),
            file_contents: Mutex::new(FileContents::new()),
            overlay_tasks: Mutex::new(BTreeMap::new()),
            overlay_turn: tokio::sync::Mutex::new(()),
            reports,
            addresses: watch::Sender::new(BTreeMap::new()),
            init: Mutex::new(None),
        });
        tokio::spawn(gc::run(Arc::downgrade(&shared)));
        Ok((Worker { shared }, receiver))
    }

    /// The node's share of the endpoint table as the managers last sent it, and its changes
    /// to come: what the node's DNS answers and virtual IPs follow. Marked changed once an
    /// assignment brought one (before, it holds an empty placeholder, seen).
    pub fn network_view(&self) -> watch::Receiver<NetworkView> {
        let mut view = self.shared.network_view.subscribe();
        if self
            .shared
            .view_assigned
            .load(std::sync::atomic::Ordering::Acquire)
        {
            view.mark_changed();
        }
        view
    }

    /// The whole set of tasks the managers assign to this node now, with the registry
    /// credentials of their services (by service id), the overlay networks they are on and
    /// the contents of the configs and secrets they mount.
    pub async fn assign(
        &self,
        tasks: Vec<Task>,
        subnet: Option<Ipv4Net>,
        registry_auth: BTreeMap<String, RegistryAuth>,
        network_view: NetworkView,
        file_contents: FileContents,
    ) {
        let shared = &self.shared;
        if subnet.is_some() {
            shared
                .subnet
                .send_if_modified(|known| std::mem::replace(known, subnet) != subnet);
        }
        *shared.registry_auth.lock().expect("not poisoned") = registry_auth;
        *shared.file_contents.lock().expect("not poisoned") = file_contents;
        // The first view is news even when empty: the followers wait for it.
        let view_changed = !shared
            .view_assigned
            .load(std::sync::atomic::Ordering::Acquire)
            || *shared.network_view.borrow() != network_view;
        let found = shared.found.lock().expect("not poisoned").take();
        let assigned: HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        // The running containers of an earlier run that assigned tasks own, and their
        // addresses (none when their network could not be adopted).
        let mut adopted: HashMap<String, Option<Ipv4Addr>> = HashMap::new();
        if let Some(found) = found.as_ref().filter(|f| !f.is_empty()) {
            // Only a task still going owns a container of an earlier run: one whose task is
            // over (the daemon died between reporting the end and deleting the container)
            // or gone is removed.
            let going: HashSet<&str> = tasks
                .iter()
                .filter(|t| !t.status.state.is_terminal())
                .map(|t| t.id.as_str())
                .collect();
            for id in found.iter().filter(|id| !going.contains(id.as_str())) {
                tokio::spawn(shared.clone().clean_up(id.clone()));
            }
            if let Err(error) = shared.ensure_network().await {
                tracing::error!(%error, "cannot set up this node's task network");
            }
            shared.sweep_networks(&going).await;
            // Adopted tasks take their addresses back before new tasks lease any.
            for task in tasks
                .iter()
                .filter(|t| found.contains(&t.id) && going.contains(t.id.as_str()))
            {
                let address = shared.adopt_network(task).await;
                adopted.insert(task.id.clone(), address);
            }
        }
        // Sent once an earlier run's overlays are torn down (`ensure_network`, above): the
        // VIP follower configures the bridges this run makes, not those about to go. Marked
        // assigned under the view's lock, so that a receiver made meanwhile sees it news.
        if view_changed {
            shared.network_view.send_modify(|view| {
                *view = network_view;
                shared
                    .view_assigned
                    .store(true, std::sync::atomic::Ordering::Release);
            });
        }
        if view_changed || found.as_ref().is_some_and(|f| !f.is_empty()) {
            let shared = shared.clone();
            tokio::spawn(async move {
                if let Err(error) = shared.reconcile_overlays().await {
                    tracing::warn!(%error, "cannot bring the overlay networks up to date");
                }
            });
        }
        let mut controllers = shared.controllers.lock().expect("not poisoned");
        // Tasks no longer assigned: removed by the managers; stop them.
        for (id, controller) in controllers.iter() {
            if !assigned.contains(id.as_str()) {
                let _ = controller.desired.send(DesiredState::Shutdown);
            }
        }
        controllers.retain(|id, c| assigned.contains(id.as_str()) && !c.task.is_finished());
        for task in tasks {
            if let Some(controller) = controllers.get(&task.id) {
                controller
                    .desired
                    .send_if_modified(|d| std::mem::replace(d, task.desired) != task.desired);
                continue;
            }
            if task.status.state.is_terminal() {
                continue;
            }
            let origin = match adopted.remove(&task.id) {
                Some(address) => Origin::Adopted { address },
                None => Origin::Assigned,
            };
            if task.desired == DesiredState::Shutdown && origin == Origin::Assigned {
                // Never started here (or long gone): say so, so the managers stop asking.
                let mut lifecycle = Lifecycle::new();
                lifecycle.on(Event::Desired(DesiredState::Shutdown));
                shared.report(&task, &lifecycle, None);
                continue;
            }
            let (desired, receiver) = watch::channel(task.desired);
            let id = task.id.clone();
            let task = tokio::spawn(shared.clone().control(task, receiver, origin));
            controllers.insert(id, Controller { desired, task });
        }
    }

    /// Inserts again whichever iptables rules of the node's bridge and overlays are
    /// missing (a firewall reload took them); nothing while the node's network is not set
    /// up.
    pub async fn restore_network_rules(&self) -> Result<(), NetworkError> {
        match self.shared.network() {
            Ok(network) => network.restore_rules().await,
            Err(_) => Ok(()),
        }
    }

    /// Where the node's task namespaces are: `DIR/TASK`.
    pub fn netns_dir(&self) -> PathBuf {
        self.shared.config.netns_dir()
    }

    /// The subnet the managers leased to this node (its bridge holds the gateway), once
    /// an assignment named it; the receiver sees it change.
    pub fn subnet(&self) -> watch::Receiver<Option<Ipv4Net>> {
        self.shared.subnet.subscribe()
    }

    /// The address each task of this node asks from (its `eth0`) → the task, for the tasks
    /// attached and not ended; the receiver sees every change.
    pub fn task_addresses(&self) -> watch::Receiver<BTreeMap<Ipv4Addr, Asker>> {
        self.shared.addresses.subscribe()
    }

    /// The node leaves its cluster: every task stops (within `timeout`), then the node's
    /// network goes.
    pub async fn leave(&self, timeout: Duration) {
        let controllers: Vec<Controller> = self
            .shared
            .controllers
            .lock()
            .expect("not poisoned")
            .drain()
            .map(|(_, c)| c)
            .collect();
        for controller in &controllers {
            let _ = controller.desired.send(DesiredState::Shutdown);
        }
        let all = futures_join(controllers.into_iter().map(|c| c.task));
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("some tasks did not stop in time; leaving anyway");
        }
        let network = self.shared.network.lock().expect("not poisoned").take();
        if let Some(network) = network
            && let Err(error) = network.teardown().await
        {
            tracing::warn!(%error, "cannot tear the node's network down");
        }
    }
}

/// What a node whose worker cannot start answers to its assignments, so that no task waits
/// on it: a task that should run is rejected with `reason` (failed, if it had started before
/// a daemon restart: what became of its container is unknown), one that should stop is shut
/// down. Tasks already over get nothing.
pub fn refuse(tasks: &[Task], reason: &str, now_ms: u64) -> Vec<TaskStatusUpdate> {
    tasks
        .iter()
        .filter(|task| !task.status.state.is_terminal())
        .map(|task| {
            let (state, message) = match task.desired {
                DesiredState::Shutdown => (TaskState::Shutdown, "shut down"),
                DesiredState::Running if task.status.state < TaskState::Starting => {
                    (TaskState::Rejected, "rejected")
                }
                DesiredState::Running => (TaskState::Failed, "failed"),
            };
            let mut status = TaskStatus::new(state, now_ms);
            status.message = message.to_owned();
            if task.desired == DesiredState::Running {
                status.error = Some(format!("worker not running: {reason}"));
            }
            TaskStatusUpdate {
                id: task.id.clone(),
                status,
            }
        })
        .collect()
}

/// How a task's controller begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Assigned to this node: its container is still to be made.
    Assigned,
    /// Its container was found running after a daemon restart, at this address.
    Adopted { address: Option<Ipv4Addr> },
}

/// Waits for every task.
async fn futures_join(tasks: impl Iterator<Item = tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

impl Shared {
    /// The node's network, set up on first use.
    async fn ensure_network(&self) -> Result<Arc<dyn TaskNetworks>, String> {
        let _setup = self.network_setup.lock().await;
        if let Some(network) = self.network.lock().expect("not poisoned").clone() {
            return Ok(network);
        }
        let subnet = self.subnet.borrow().ok_or_else(|| {
            "this node has no task subnet yet (its managers have not sent it)".to_owned()
        })?;
        let config = NodeNetworkConfig {
            node_id: self.config.node_id.clone(),
            subnet,
            netns_dir: self.config.netns_dir(),
        };
        let network = self
            .networking
            .setup(config)
            .await
            .map_err(|e| format!("cannot set up the node's task network: {e}"))?;
        *self.network.lock().expect("not poisoned") = Some(network.clone());
        Ok(network)
    }

    fn network(&self) -> Result<Arc<dyn TaskNetworks>, String> {
        self.network
            .lock()
            .expect("not poisoned")
            .clone()
            .ok_or_else(|| {
                "this node has no task subnet yet (its managers have not sent it)".to_owned()
            })
    }

    /// Removes the task namespaces of an earlier run that no assigned task owns.
    async fn sweep_networks(&self, assigned: &HashSet<&str>) {
        let Ok(network) = self.network() else {
            return;
        };
        let owned: HashSet<String> = assigned.iter().map(|s| s.to_string()).collect();
        if let Err(error) = network.sweep(owned).await {
            tracing::warn!(%error, "cannot sweep task networks");
        }
    }

    /// Takes back the network of a container found running (its overlay endpoints are made
    /// again by the next reconcile); returns its address.
    async fn adopt_network(&self, task: &Task) -> Option<Ipv4Addr> {
        let network = self.network().ok()?;
        match network.adopt(&task.id).await {
            Ok(adopted) => {
                self.add_overlay_task(task, adopted.netns_path);
                Some(adopted.address.addr())
            }
            Err(error) => {
                tracing::warn!(task = %task.id, %error, "cannot adopt the task's network");
                None
            }
        }
    }

    /// Puts a task whose namespace is made on its overlay networks at the next reconcile.
    fn add_overlay_task(&self, task: &Task, netns: PathBuf) {
        if task.networks.is_empty() {
            return;
        }
        let addresses = task
            .networks
            .iter()
            .map(|n| (n.network.clone(), n.address))
            .collect();
        self.overlay_tasks
            .lock()
            .expect("not poisoned")
            .insert(task.id.clone(), LocalTask { netns, addresses });
    }

    /// Brings the node's overlays to what the latest view and its made tasks say; returns
    /// what they were brought to.
    async fn reconcile_overlays(&self) -> Result<NodeOverlays, String> {
        let _turn = self.overlay_turn.lock().await;
        let Ok(network) = self.network() else {
            return Ok(NodeOverlays::default()); // no task made yet: nothing to carry
        };
        let desired = {
            let tasks = self.overlay_tasks.lock().expect("not poisoned");
            node_overlays(&self.network_view.borrow(), &self.config.node_id, &tasks)
        };
        network
            .reconcile_overlay(desired.clone())
            .await
            .map_err(|e| format!("cannot set up the overlay networks: {e}"))?;
        Ok(desired)
    }

    /// Whether other nodes may send `task` connections: its service publishes ports (the
    /// mesh), or it has an address on an overlay network (virtual IPs, names).
    fn has_endpoints(&self, task: &Task) -> bool {
        let view = self.network_view.borrow();
        view.mesh.services.contains_key(&task.service_id)
            || view
                .networks
                .values()
                .any(|n| n.tasks.contains_key(&task.id))
    }

    /// Puts a task whose namespace was just made on its overlay networks, before its
    /// process starts (it may connect at once).
    async fn attach_overlays(&self, task: &Task, netns: PathBuf) -> Result<(), String> {
        if task.networks.is_empty() {
            return Ok(());
        }
        self.add_overlay_task(task, netns);
        let carried = self.reconcile_overlays().await?;
        let view = self.network_view.borrow().clone();
        for attachment in &task.networks {
            let name = &attachment.network;
            let Some(network) = view.networks.get(name) else {
                return Err(format!(
                    "network {name} of task {} is not in this node's network view",
                    task.id
                ));
            };
            let attached = carried
                .networks
                .get(&network.id)
                .is_some_and(|n| n.local.contains_key(&task.id));
            if !attached {
                return Err(format!(
                    "network {name}: this node's VTEP is unknown to the managers (its address does not resolve to IPv4)"
                ));
            }
        }
        Ok(())
    }

    fn task_dir(&self, id: &str) -> PathBuf {
        self.config.data_dir.join("tasks").join(id)
    }

    /// The stored image an adopted task runs: the one its pull recorded, or for a task of
    /// an earlier version that recorded none, the one its reference names by digest.
    fn adopted_image(&self, task: &Task) -> Option<crate::image::Image> {
        let reference = &task.spec.container.image;
        let found = match container::recorded_image(&self.task_dir(&task.id)) {
            Some(digest) => self.images.stored_by_digest(reference, &digest),
            None => self.images.stored_image(reference),
        };
        match found {
            Ok(image) => {
                self.image_use
                    .lock()
                    .expect("not poisoned")
                    .used(&task.id, &image.digest);
                Some(image)
            }
            Err(error) => {
                tracing::warn!(task = %task.id, %error, "the adopted task's image config is unknown");
                None
            }
        }
    }

    fn report(&self, task: &Task, lifecycle: &Lifecycle, address: Option<std::net::Ipv4Addr>) {
        let id = &task.id;
        let ended = lifecycle.state().is_terminal();
        self.addresses.send_if_modified(|addresses| match address {
            Some(address) if !ended => {
                let asker = Asker {
                    task_id: id.clone(),
                    nameservers: task.spec.container.runtime.dns.nameservers.clone(),
                };
                addresses.insert(address, asker.clone()) != Some(asker)
            }
            _ => {
                let before = addresses.len();
                addresses.retain(|_, asker| asker.task_id != *id);
                addresses.len() != before
            }
        });
        let mut status = TaskStatus::new(lifecycle.state(), (self.clock)());
        status.address = address;
        status.message = lifecycle.message().to_owned();
        status.error = lifecycle.error().map(str::to_owned);
        status.exit_code = lifecycle.exit_code();
        let _ = self.reports.send(TaskStatusUpdate {
            id: id.to_owned(),
            status,
        });
    }

    /// Drives one task from assignment to its end.
    async fn control(
        self: Arc<Self>,
        task: Task,
        mut desired: watch::Receiver<DesiredState>,
        origin: Origin,
    ) {
        let id = task.id.clone();
        let mut prepared: Option<Prepared> = None;
        let mut health = None;
        // The image's stop signal, once its config is known.
        let mut image_stop_signal = None;
        let (mut lifecycle, adopted_address) = match origin {
            Origin::Adopted { address } => {
                tracing::info!(task = %id, "adopted a running container");
                // The container is watched as before the restart: its healthcheck goes on,
                // the image's too, from the image recorded at its pull (no pull here: the
                // registry may be unreachable).
                let image = self.adopted_image(&task);
                health = health::check_of(
                    &task.spec.container.healthcheck,
                    image.as_ref().and_then(|i| i.config.healthcheck.as_ref()),
                )
                .map(health::Health::new);
                image_stop_signal = image.and_then(|i| i.config.stop_signal);
                (Lifecycle::adopted(), address)
            }
            Origin::Assigned => (Lifecycle::new(), None),
        };
        // A report replaces the task's whole status: an adopted task keeps saying where it
        // is.
        let address =
            |prepared: &Option<Prepared>| prepared.as_ref().map(|p| p.address).or(adopted_address);
        let mut shown = (lifecycle.state(), lifecycle.message());
        if matches!(origin, Origin::Adopted { .. }) {
            self.report(&task, &lifecycle, adopted_address);
        }
        let mut action = lifecycle.on(Event::Desired(*desired.borrow_and_update()));
        loop {
            if (lifecycle.state(), lifecycle.message()) != shown {
                shown = (lifecycle.state(), lifecycle.message());
                self.report(&task, &lifecycle, address(&prepared));
            }
            let event = match action {
                Action::Prepare => match container::prepare(&self, &task).await {
                    Ok(ready) => {
                        health = health::check_of(
                            &task.spec.container.healthcheck,
                            ready.image_healthcheck.as_ref(),
                        )
                        .map(health::Health::new);
                        image_stop_signal = ready.image_stop_signal.clone();
                        prepared = Some(ready);
                        Event::Prepared {
                            healthcheck: health.is_some(),
                        }
                    }
                    Err(error) => Event::Failed(error),
                },
                Action::Start => {
                    let config = &prepared.as_ref().expect("prepared before started").config;
                    match self.runtime.start(config).await {
                        Ok(()) => Event::Started,
                        Err(error) => Event::Failed(error.to_string()),
                    }
                }
                Action::Stop => {
                    if self.has_endpoints(&task) {
                        // Every node stops sending it new connections when its view
                        // changes, a few milliseconds after this stop order: it serves on
                        // meanwhile instead of refusing them (moby#38841).
                        tokio::time::sleep(ENDPOINT_DRAIN).await;
                    }
                    let (signal, grace) =
                        container::stop_signal(&task, image_stop_signal.as_deref());
                    match self.runtime.stop(&id, signal, grace).await {
                        Ok(exit) => Event::Exited {
                            code: exit.code(),
                            oom_killed: exit.oom_killed,
                        },
                        Err(error) => {
                            tracing::warn!(task = %id, %error, "cannot stop the container");
                            Event::Exited {
                                code: None,
                                oom_killed: false,
                            }
                        }
                    }
                }
                Action::CleanUp => break,
                Action::Nothing if lifecycle.is_over() => break,
                Action::Nothing => {
                    let started = lifecycle.state() >= swarm_api::task::TaskState::Starting;
                    tokio::select! {
                        exit = self.runtime.wait(&id), if started => match exit {
                            Ok(exit) => Event::Exited { code: exit.code(), oom_killed: exit.oom_killed },
                            Err(error) => Event::Failed(error.to_string()),
                        },
                        changed = desired.changed() => match changed {
                            Ok(()) => Event::Desired(*desired.borrow_and_update()),
                            // The worker is gone (the daemon stops): the container stays
                            // for the next run to adopt.
                            Err(_) => return,
                        },
                        verdict = health::next(&mut health, &self.runtime, &id), if started => verdict,
                    }
                }
            };
            action = lifecycle.on(event);
        }
        if (lifecycle.state(), lifecycle.message()) != shown {
            self.report(&task, &lifecycle, address(&prepared));
        }
        self.clone().clean_up(id).await;
    }

    /// Removes everything made for a task but its logs: the container, the root
    /// filesystem, the network files and the network. Idempotent.
    async fn clean_up(self: Arc<Self>, id: String) {
        self.image_use
            .lock()
            .expect("not poisoned")
            .released(&id, tokio::time::Instant::now());
        if let Err(error) = self.runtime.delete(&id).await {
            tracing::warn!(task = %id, %error, "cannot delete the container");
        }
        let dir = self.task_dir(&id);
        if let Err(error) = self.images.release_rootfs(&dir.join("fs")) {
            tracing::warn!(task = %id, %error, "cannot release the root filesystem");
        }
        let _ = std::fs::remove_dir_all(dir.join("etc"));
        if let Err(error) = secrets::release(&dir) {
            tracing::warn!(task = %id, %error, "cannot remove the task's secrets and configs");
        }
        let _ = std::fs::remove_file(container::recorded_image_path(&dir));
        let on_overlays = self
            .overlay_tasks
            .lock()
            .expect("not poisoned")
            .remove(&id)
            .is_some();
        if on_overlays && let Err(error) = self.reconcile_overlays().await {
            tracing::warn!(task = %id, %error, "cannot take the task off its overlay networks");
        }
        if let Ok(network) = self.network()
            && let Err(error) = network.detach(&id).await
        {
            tracing::warn!(%error, "cannot detach the task network");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_api::spec::TaskSpec;

    fn task(id: &str, desired: DesiredState, state: TaskState) -> Task {
        let spec: TaskSpec = serde_json::from_value(serde_json::json!({
            "container": {
                "image": "busybox", "env": {}, "labels": {}, "stop_grace_period": "10s",
                "mounts": [], "configs": [], "secrets": [],
            },
            "resources": { "limits": {}, "reservations": {} },
            "restart": { "condition": "any", "delay": "5s", "max_attempts": 0, "window": "0s" },
            "placement": { "constraints": [], "preferences": [], "max_replicas_per_node": 0 },
            "networks": [],
        }))
        .expect("a task spec");
        Task {
            id: id.to_owned(),
            service_id: "s".to_owned(),
            service_name: "web".to_owned(),
            slot: Some(1),
            node_id: Some("n".to_owned()),
            spec,
            desired,
            status: TaskStatus::new(state, 1),
            created_at: 1,
            started_at: None,
            networks: Vec::new(),
        }
    }

    /// A task's `tty`, `extra_hosts` and `dns` reach its container: swarm-init (which holds
    /// a terminal, `init` or not) written into the data dir and named in the process
    /// options, the hosts line and the resolver settings in the files bound at /etc (a task
    /// on no overlay network has the service's nameservers in its resolv.conf), the
    /// nameservers beside the task's address for the node's DNS server.
    #[tokio::test(start_paused = true)]
    async fn a_tasks_init_hosts_and_dns_reach_its_container() {
        let dir = tempfile::tempdir().unwrap();
        let seen: Arc<Mutex<Option<crate::exec::ContainerConfig>>> = Arc::default();
        let runtime = crate::exec::FakeRuntime::new({
            let seen = seen.clone();
            move |config| {
                *seen.lock().unwrap() = Some(config.clone());
                crate::exec::Script::default()
            }
        });
        let io = WorkerIo {
            runtime: Arc::new(runtime.clone()),
            images: Arc::new(crate::image::FakeImages::new(Duration::from_millis(10))),
            networking: Arc::new(crate::network::FakeNetworking::default()),
            clock: system_clock(),
        };
        let data_dir = dir.path().join("data");
        let config = WorkerConfig {
            node_id: "n1".to_owned(),
            node_hostname: "host1".to_owned(),
            data_dir: data_dir.clone(),
            run_dir: dir.path().join("run"),
        };
        let (worker, mut reports) = Worker::start(config, io).await.unwrap();
        let mut task = task("t1", DesiredState::Running, TaskState::Assigned);
        let runtime_options = &mut task.spec.container.runtime;
        runtime_options.tty = true;
        runtime_options.extra_hosts = vec![
            swarm_api::spec::ExtraHost {
                name: "db".into(),
                address: "10.0.0.5".parse().unwrap(),
            },
            swarm_api::spec::ExtraHost {
                name: "host.docker.internal".into(),
                address: "host-gateway".parse().unwrap(),
            },
        ];
        runtime_options.dns = swarm_api::spec::DnsConfig {
            nameservers: vec!["192.0.2.53".parse().unwrap()],
            search: vec!["lab.example".into()],
            options: Vec::new(),
        };
        worker
            .assign(
                vec![task],
                Some("10.1.0.0/24".parse().unwrap()),
                BTreeMap::new(),
                NetworkView::default(),
                FileContents::new(),
            )
            .await;
        while reports.recv().await.unwrap().status.state != TaskState::Running {}
        let config = seen.lock().unwrap().clone().expect("started");
        assert!(config.options.tty);
        let init = config.options.init.expect("a tty brings the init");
        assert_eq!(init, data_dir.join("swarm-init"));
        assert!(init.is_file());
        let file = |destination: &str| {
            let mount = config.files.iter().find(|f| f.destination == destination);
            std::fs::read_to_string(&mount.expect("bound").source).unwrap()
        };
        assert!(
            file("/etc/hosts")
                .ends_with("10.1.0.2\tt1 web\n10.0.0.5\tdb\n10.1.0.1\thost.docker.internal\n"),
            "{}",
            file("/etc/hosts")
        );
        let resolv = file("/etc/resolv.conf");
        assert!(resolv.starts_with("nameserver 192.0.2.53\n"), "{resolv}");
        assert!(resolv.ends_with("search lab.example\n"), "{resolv}");
        let asker = worker.task_addresses().borrow()[&"10.1.0.2".parse().unwrap()].clone();
        assert_eq!(
            asker.nameservers,
            ["192.0.2.53".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    /// The worker over the fakes: a task assigned runs (pulled, attached, started) and is
    /// reported so; shut down, it stops and its container, network and rootfs go.
    #[tokio::test(start_paused = true)]
    async fn a_worker_on_fakes_runs_and_stops_a_task() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = crate::exec::FakeRuntime::default();
        let images = Arc::new(crate::image::FakeImages::new(Duration::from_millis(300)));
        let networking = crate::network::FakeNetworking::default();
        let config = WorkerConfig {
            node_id: "n1".to_owned(),
            node_hostname: "host1".to_owned(),
            data_dir: dir.path().join("data"),
            run_dir: dir.path().join("run"),
        };
        let io = WorkerIo {
            runtime: Arc::new(runtime.clone()),
            images: images.clone(),
            networking: Arc::new(networking.clone()),
            clock: system_clock(),
        };
        let (worker, mut reports) = Worker::start(config, io).await.unwrap();
        let subnet = Some("10.1.0.0/24".parse().unwrap());
        let mut task = task("t1", DesiredState::Running, TaskState::Assigned);
        worker
            .assign(
                vec![task.clone()],
                subnet,
                BTreeMap::new(),
                NetworkView::default(),
                FileContents::new(),
            )
            .await;
        let mut states = Vec::new();
        while states.last() != Some(&TaskState::Running) {
            let update = reports.recv().await.unwrap();
            assert_eq!(update.id, "t1");
            states.push(update.status.state);
            if update.status.state == TaskState::Running {
                assert_eq!(update.status.address, Some("10.1.0.2".parse().unwrap()));
            }
        }
        let addresses = worker.task_addresses();
        let asker = Asker {
            task_id: "t1".to_owned(),
            nameservers: Vec::new(),
        };
        assert_eq!(
            *addresses.borrow(),
            BTreeMap::from([("10.1.0.2".parse().unwrap(), asker)])
        );
        assert_eq!(
            states,
            [
                TaskState::Preparing,
                TaskState::Starting,
                TaskState::Running
            ]
        );
        assert_eq!(runtime.started(), ["t1"]);
        assert_eq!(images.pulls(), ["busybox"]);
        assert_eq!(
            networking.attached(),
            std::collections::BTreeSet::from(["t1".to_owned()])
        );

        task.desired = DesiredState::Shutdown;
        worker
            .assign(
                vec![task],
                subnet,
                BTreeMap::new(),
                NetworkView::default(),
                FileContents::new(),
            )
            .await;
        let mut update = reports.recv().await.unwrap();
        // "stopping", still running, then shut down.
        while update.status.state == TaskState::Running {
            update = reports.recv().await.unwrap();
        }
        assert_eq!(update.status.state, TaskState::Shutdown);
        assert!(addresses.borrow().is_empty(), "an ended task asks no more");
        // The clean-up follows the report.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(networking.attached().is_empty());
        assert!(
            runtime.state("t1").await.is_err(),
            "the container is deleted"
        );
        assert!(!dir.path().join("data/tasks/t1/fs").exists());
    }

    /// A task on an overlay network is put on it before it starts, with the other nodes'
    /// tasks as remote endpoints; the view is exposed; once the task is gone the node
    /// carries the network no longer.
    #[tokio::test(start_paused = true)]
    async fn a_task_joins_its_overlay_networks_before_it_starts_and_leaves_them() {
        use swarm_api::endpoints::{NetworkEndpoints, TaskEndpoint, Vtep};
        let dir = tempfile::tempdir().unwrap();
        let runtime = crate::exec::FakeRuntime::default();
        let networking = crate::network::FakeNetworking::default();
        let config = WorkerConfig {
            node_id: "n1".to_owned(),
            node_hostname: "host1".to_owned(),
            data_dir: dir.path().join("data"),
            run_dir: dir.path().join("run"),
        };
        let io = WorkerIo {
            runtime: Arc::new(runtime.clone()),
            images: Arc::new(crate::image::FakeImages::new(Duration::from_millis(10))),
            networking: Arc::new(networking.clone()),
            clock: system_clock(),
        };
        let (worker, mut reports) = Worker::start(config, io).await.unwrap();
        let mut task = task("t1", DesiredState::Running, TaskState::Assigned);
        let address = |last: u8| Ipv4Addr::new(10, 0, 1, last);
        task.networks = vec![swarm_api::task::NetworkAddress {
            network: "front".to_owned(),
            address: address(3),
        }];
        let endpoint = |node: &str, last: u8| TaskEndpoint {
            service_id: "s".to_owned(),
            node_id: node.to_owned(),
            vtep: Some(Vtep {
                address: Ipv4Addr::new(198, 18, 0, last),
                port: 4789,
            }),
            address: address(last),
            name: format!("web.{last}"),
            serving: false,
        };
        let view = NetworkView {
            networks: BTreeMap::from([(
                "front".to_owned(),
                NetworkEndpoints {
                    id: "front-id".to_owned(),
                    vni: 4096,
                    subnet: "10.0.1.0/24".parse().unwrap(),
                    gateway: address(1),
                    internal: false,
                    services: BTreeMap::new(),
                    tasks: BTreeMap::from([
                        ("t1".to_owned(), endpoint("n1", 3)),
                        ("t2".to_owned(), endpoint("n2", 4)),
                    ]),
                },
            )]),
            mesh: Default::default(),
        };
        let subnet = Some("10.1.0.0/24".parse().unwrap());
        let exposed = worker.network_view();
        worker
            .assign(
                vec![task.clone()],
                subnet,
                BTreeMap::new(),
                view.clone(),
                FileContents::new(),
            )
            .await;
        assert_eq!(*exposed.borrow(), view);
        let started = loop {
            let update = reports.recv().await.unwrap();
            if update.status.state == TaskState::Starting {
                // Prepared, not started yet: the overlay is made already.
                break networking.overlays();
            }
        };
        let front = &started.networks["front-id"];
        assert_eq!(front.local["t1"].address, address(3));
        assert_eq!(front.local["t1"].netns, dir.path().join("run/netns/t1"));
        assert_eq!(front.remote.keys().collect::<Vec<_>>(), [&address(4)]);
        assert_eq!(front.vtep.address, Ipv4Addr::new(198, 18, 0, 3));
        assert!(networking.closed().is_empty(), "front is not internal");

        task.desired = DesiredState::Shutdown;
        worker
            .assign(
                vec![task.clone()],
                subnet,
                BTreeMap::new(),
                view.clone(),
                FileContents::new(),
            )
            .await;
        while reports.recv().await.unwrap().status.state != TaskState::Shutdown {}
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(networking.attached().is_empty());
        assert_eq!(networking.overlays(), NodeOverlays::default());

        // A task whose only network is internal loses its route out before it starts.
        let mut sealed = task.clone();
        sealed.id = "t3".to_owned();
        sealed.desired = DesiredState::Running;
        sealed.status.state = TaskState::Assigned;
        let mut internal = view.clone();
        let front = internal.networks.get_mut("front").unwrap();
        front.internal = true;
        front.tasks = BTreeMap::from([("t3".to_owned(), endpoint("n1", 3))]);
        worker
            .assign(
                vec![sealed],
                subnet,
                BTreeMap::new(),
                internal,
                FileContents::new(),
            )
            .await;
        while reports.recv().await.unwrap().status.state != TaskState::Starting {}
        assert_eq!(
            networking.closed(),
            std::collections::BTreeSet::from(["t3".to_owned()])
        );
    }

    #[test]
    fn a_node_without_a_worker_refuses_its_tasks_with_the_reason() {
        use DesiredState as D;
        use TaskState::*;
        let tasks = [
            task("new", D::Running, Assigned),
            task("stopped", D::Shutdown, Assigned),
            task("was-running", D::Running, Running),
            task("over", D::Running, Failed),
        ];
        let answers: Vec<(String, TaskState, Option<String>)> = refuse(&tasks, "runc not found", 7)
            .into_iter()
            .map(|u| {
                assert_eq!(u.status.since, 7);
                (u.id, u.status.state, u.status.error)
            })
            .collect();
        let error = Some("worker not running: runc not found".to_owned());
        assert_eq!(
            answers,
            vec![
                ("new".to_owned(), Rejected, error.clone()),
                ("stopped".to_owned(), Shutdown, None),
                ("was-running".to_owned(), Failed, error),
            ]
        );
    }
}
