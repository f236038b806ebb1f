//! The agent side of a member, on every node: the worker that runs this node's tasks, fed by
//! the dispatcher's assignment stream from any manager, and its status reports sent back in
//! batches. A manager that goes away is replaced by the next one known.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use swarm_agent::exec::{RuncConfig, RuncRuntime, Runtime};
use swarm_agent::image::PullOptions;
use swarm_agent::network::{Ipv4Net, MeshPortKey as PortKey};
use swarm_agent::worker::{Worker, WorkerConfig, WorkerIo};
use swarm_api::auth::RegistryAuth;
use swarm_api::endpoints::NetworkView;
use swarm_api::files::FileContents;
use swarm_api::grpc::dispatcher::dispatcher_client::DispatcherClient;
use swarm_api::grpc::dispatcher::{AssignmentsRequest, ReportTaskStatusRequest};
use swarm_api::store::{NodeState, TaskStatusUpdate};
use swarm_api::task::Task;
use tokio::sync::{mpsc, watch};

use super::session::{candidates, manager_channel};
use super::{Daemon, dns, logs, millis};

/// How long to wait before trying the next manager.
const RETRY: Duration = Duration::from_millis(500);
/// The most status updates sent in one report.
const BATCH: usize = 512;

/// How long the tasks of a leaving node have to stop.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a leaving node waits, once its tasks are stopped, for what it set in the kernel
/// to go (dozens of commands, each killed after 20 s at worst, `network/command.rs`): a
/// budget of its own, not what the tasks' stop left of theirs.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The first wait before trying to start a worker again; it doubles at each failure, up to
/// `START_RETRY_MAX`: installing runc heals a node within that, with no daemon restart.
const START_RETRY: Duration = Duration::from_secs(1);
const START_RETRY_MAX: Duration = Duration::from_secs(10);

/// Names the runc program a node runs (a path, or a name looked up in `PATH`); `runc` by
/// default.
const RUNC_VARIABLE: &str = "SWARM_RUNC";

/// A member's agent: dropping the handle ends it and leaves the containers running (a
/// daemon that stops); `leave` stops its tasks first (a node that leaves its cluster).
pub(super) struct AgentHandle {
    leave: watch::Sender<bool>,
    worker_error: watch::Receiver<Option<String>>,
    ports_taken: watch::Receiver<BTreeSet<PortKey>>,
    task: tokio::task::JoinHandle<()>,
}

impl AgentHandle {
    pub(super) fn spawn(daemon: Arc<Daemon>, state: NodeState) -> Self {
        let (leave, leaving) = watch::channel(false);
        let (worker_state, worker_error) = watch::channel(None);
        let (taken, ports_taken) = watch::channel(BTreeSet::new());
        let task = tokio::spawn(run(daemon, state, leaving, worker_state, taken));
        AgentHandle {
            leave,
            worker_error,
            ports_taken,
            task,
        }
    }

    /// The published ports another process on this node holds (`8080/tcp`, sorted); the
    /// receiver sees each change from now on.
    pub(super) fn ports_taken(&self) -> watch::Receiver<BTreeSet<PortKey>> {
        let mut receiver = self.ports_taken.clone();
        receiver.mark_unchanged();
        receiver
    }

    /// Why this node's worker cannot run tasks, `None` while it runs (or is starting); the
    /// receiver sees each change from now on.
    pub(super) fn worker_error(&self) -> watch::Receiver<Option<String>> {
        let mut receiver = self.worker_error.clone();
        receiver.mark_unchanged();
        receiver
    }

    pub(super) async fn leave(self) {
        let _ = self.leave.send(true);
        if tokio::time::timeout(LEAVE_TIMEOUT + TEARDOWN_TIMEOUT, self.task)
            .await
            .is_err()
        {
            tracing::warn!(
                "the agent did not stop in time: the removal of what it set in the kernel goes \
                 on in the background"
            );
        }
    }
}

/// A node's running worker, and what it needs to leave.
struct Started {
    worker: Worker,
    reports: mpsc::UnboundedReceiver<TaskStatusUpdate>,
    runc: RuncRuntime,
}

/// Runs until the handle says leave (then stops every task) or is dropped. Until its worker
/// starts (no runc), the node refuses its tasks with the reason, which its heartbeats carry
/// to the managers, and tries again.
async fn run(
    daemon: Arc<Daemon>,
    state: NodeState,
    mut leaving: watch::Receiver<bool>,
    worker_error: watch::Sender<Option<String>>,
    ports_taken: watch::Sender<BTreeSet<PortKey>>,
) {
    let (refusals, refused) = mpsc::unbounded_channel();
    let refusing = Refusing {
        reason: worker_error.subscribe(),
        reports: refusals,
    };
    let started = tokio::select! {
        started = start(&daemon, &state, &worker_error) => started,
        // A node whose worker never started has no task to stop; what an earlier process
        // of it set in the kernel goes, by name.
        changed = leaving.changed() => {
            if changed.is_ok() {
                tear_down(&state.node_id).await;
            }
            return;
        }
        _ = assignments(&daemon, &refusing) => return,
        _ = report(&daemon, refused) => return,
    };
    let Started {
        worker,
        reports,
        runc,
    } = started;
    // A firewall reload takes the node's rules: its canary says so, and the VIPs, the mesh
    // and the worker's bridge and overlay rules are set again.
    let (reloads, reloaded) = watch::channel(0u64);
    let (vip_reloads, mesh_reloads) = (reloads.subscribe(), reloads.subscribe());
    // The canary and the followers below are stopped (not aborted) when the node leaves,
    // once its tasks are stopped: what a planting or a reconcile under way sets must be in
    // the kernel before the node's teardown, not come back after it.
    let (stop, stopped) = watch::channel(false);
    let stopping = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stopped| *stopped).await;
        }
    };
    let mut canary = tokio::spawn(swarm_agent::network::watch_canary(
        state.node_id.clone(),
        reloads,
        stopping(),
    ));
    // The node's VIPs follow its view of the overlay networks.
    let mut vips = tokio::spawn(swarm_agent::network::follow_vips(
        state.node_id.clone(),
        worker.netns_dir(),
        worker.network_view(),
        vip_reloads,
        stopping(),
    ));
    let relayed = swarm_agent::network::RelayedBytes::default();
    daemon
        .metrics
        .mesh_of(&state.node_id, worker.network_view(), relayed.clone());
    // The node's published ports follow the mesh part of its view and its tasks' addresses.
    let mut mesh = tokio::spawn(swarm_agent::network::follow_mesh(
        state.node_id.clone(),
        worker.network_view(),
        worker.task_addresses(),
        |asker: &swarm_agent::worker::Asker| asker.task_id.as_str(),
        ports_taken,
        relayed,
        mesh_reloads,
        stopping(),
    ));
    let restore = async {
        let mut reloaded = reloaded;
        while reloaded.changed().await.is_ok() {
            // Tried again (the xtables lock may be busy) until it holds or another reload
            // comes.
            let mut wait = START_RETRY;
            while let Err(error) = worker.restore_network_rules().await {
                tracing::warn!(%error, "cannot set this node's bridge and overlay rules again; trying again in {wait:?}");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    Ok(()) = reloaded.changed() => {}
                }
                wait = (wait * 2).min(START_RETRY_MAX);
            }
        }
        std::future::pending::<()>().await
    };
    // The node's DNS server for its tasks, stopped with the agent.
    let dns = async {
        let (subnet, view, askers) = (
            worker.subnet(),
            worker.network_view(),
            worker.task_addresses(),
        );
        dns::serve_node(subnet, dns::DNS_PORT, view, askers).await;
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = dns => {}
        changed = leaving.changed() => {
            if changed.is_ok() {
                worker.leave(LEAVE_TIMEOUT).await;
                let _ = stop.send(true);
                for follower in [&mut canary, &mut vips, &mut mesh] {
                    let _ = follower.await;
                }
                tear_down(&state.node_id).await;
                // The node's cgroup parent outlives its containers, for a restarted daemon
                // to adopt them; a node that leaves has no more use for it.
                if let Err(error) = runc.remove_node_cgroups() {
                    tracing::warn!(%error, "cannot remove this node's cgroups");
                }
            }
        }
        _ = assignments(&daemon, &worker) => {}
        _ = report(&daemon, reports) => {}
        _ = restore => {}
    }
    canary.abort();
    vips.abort();
    mesh.abort();
}

/// Removes what node `node_id` set in the kernel beside its worker's tasks, for a node
/// leaving: its VIPs, its mesh (`route_localnet` set back on the data path device its
/// ruleset recorded), its canaries, and its bridge and overlays by name (the worker tore
/// down those it knew; after a restart with no task it knows none). Every part is tried
/// but after a network tool that hung (the next would wait for the same kernel lock); what
/// fails is said.
async fn tear_down(node_id: &str) {
    let node = node_id.to_owned();
    let failed = tokio::task::spawn_blocking(move || {
        use swarm_agent::network::{Mesh, NetworkError, Vips, remove_canary, remove_node_links};
        type Part<'a> = Box<dyn FnOnce() -> Result<(), NetworkError> + 'a>;
        let parts: [(&str, Part); 4] = [
            (
                "virtual IPs",
                Box::new(|| Vips::new(node.clone()).teardown()),
            ),
            (
                "routing mesh",
                Box::new(|| Mesh::new(node.clone()).teardown()),
            ),
            ("canaries", Box::new(|| remove_canary(&node))),
            ("bridge and overlays", Box::new(|| remove_node_links(&node))),
        ];
        let mut failed = Vec::new();
        for (what, part) in parts {
            if let Err(error) = part() {
                let hung = matches!(error, NetworkError::TimedOut { .. });
                failed.push((what, error));
                if hung {
                    break;
                }
            }
        }
        failed
    })
    .await
    .unwrap_or_default();
    for (what, error) in failed {
        tracing::warn!(%error, "cannot remove this node's {what}");
    }
}

/// Starts the node's worker, trying again (with a growing wait) until it starts; meanwhile
/// `worker_error` says why it cannot.
async fn start(
    daemon: &Daemon,
    state: &NodeState,
    worker_error: &watch::Sender<Option<String>>,
) -> Started {
    let mut wait = START_RETRY;
    loop {
        match try_start(daemon, state).await {
            Ok(started) => {
                if worker_error.send_replace(None).is_some() {
                    tracing::info!("this node's worker started: it runs tasks again");
                }
                return started;
            }
            Err(error) => {
                let first = worker_error.borrow().as_ref() != Some(&error);
                if first {
                    tracing::error!(
                        %error,
                        "cannot start this node's worker (is runc installed?): its tasks are refused; trying again every {}s at most",
                        START_RETRY_MAX.as_secs()
                    );
                }
                worker_error.send_replace(Some(error));
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(START_RETRY_MAX);
    }
}

async fn try_start(daemon: &Daemon, state: &NodeState) -> Result<Started, String> {
    let data_dir = daemon.config.data_dir.clone();
    let mut runc_config = RuncConfig::new(&state.node_id, &data_dir);
    if let Some(runc) = std::env::var_os(RUNC_VARIABLE) {
        runc_config.runc = runc.into();
    }
    runc_config.installed_runc().map_err(|e| e.to_string())?;
    let runc = RuncRuntime::new(runc_config).map_err(|e| e.to_string())?;
    let config = WorkerConfig {
        node_id: state.node_id.clone(),
        node_hostname: daemon.config.hostname.clone(),
        data_dir,
        run_dir: daemon.config.run_dir.join(&state.node_id),
    };
    let runtime = Arc::new(runc.clone()) as Arc<dyn Runtime>;
    let pull = PullOptions {
        insecure_registries: daemon.config.insecure_registries.clone(),
        ..PullOptions::default()
    };
    let io = WorkerIo::host(runtime, &config, pull).map_err(|e| e.to_string())?;
    let (worker, reports) = Worker::start(config, io).await.map_err(|e| e.to_string())?;
    Ok(Started {
        worker,
        reports,
        runc,
    })
}

/// What takes a node's assignment sets: its worker, or while it has none, a refusal.
trait Assignee {
    async fn assign(
        &self,
        tasks: Vec<Task>,
        subnet: Option<Ipv4Net>,
        registry_auth: BTreeMap<String, RegistryAuth>,
        network_view: NetworkView,
        file_contents: FileContents,
    );
}

impl Assignee for Worker {
    async fn assign(
        &self,
        tasks: Vec<Task>,
        subnet: Option<Ipv4Net>,
        registry_auth: BTreeMap<String, RegistryAuth>,
        network_view: NetworkView,
        file_contents: FileContents,
    ) {
        Worker::assign(
            self,
            tasks,
            subnet,
            registry_auth,
            network_view,
            file_contents,
        )
        .await;
    }
}

/// A node whose worker has not started: every task it is given is refused with the reason.
struct Refusing {
    reason: watch::Receiver<Option<String>>,
    reports: mpsc::UnboundedSender<TaskStatusUpdate>,
}

impl Assignee for Refusing {
    async fn assign(
        &self,
        tasks: Vec<Task>,
        _: Option<Ipv4Net>,
        _: BTreeMap<String, RegistryAuth>,
        _: NetworkView,
        _: FileContents,
    ) {
        // Not known yet while the first start is under way: wait for it (a worker that
        // starts ends the refusals).
        let mut reason = self.reason.clone();
        let known = reason.wait_for(Option::is_some).await;
        let Some(reason) = known.ok().and_then(|reason| reason.clone()) else {
            return;
        };
        for update in swarm_agent::worker::refuse(&tasks, &reason, millis(SystemTime::now())) {
            let _ = self.reports.send(update);
        }
    }
}

/// The managers to try, in turn, with this node's credentials.
async fn managers(
    daemon: &Daemon,
) -> Option<(Vec<String>, swarm_controller::tls::NodeCredentials)> {
    let (state, credentials) = daemon.session_view().await?;
    let managers = candidates(&state);
    (!managers.is_empty()).then_some((managers, credentials))
}

/// Keeps an assignment stream open to some manager and hands each set to the worker.
async fn assignments(daemon: &Daemon, worker: &impl Assignee) {
    let mut turn = 0usize;
    loop {
        if let Some((managers, credentials)) = managers(daemon).await {
            let address = &managers[turn % managers.len()];
            turn += 1;
            // A node's whole task set comes in one message: more than tonic's 4 MiB default
            // for a node with thousands of tasks.
            let mut client = DispatcherClient::new(manager_channel(address, &credentials))
                .max_decoding_message_size(swarm_controller::raft::grpc::MAX_MESSAGE_BYTES);
            // The node's logs go through the manager it takes assignments from, for as
            // long as the assignment stream lasts.
            tokio::select! {
                _ = follow_assignments(&mut client, worker, address) => {}
                _ = serve_logs(manager_channel(address, &credentials), &daemon.config.data_dir) => {}
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Hands each assignment set of an open stream to the worker, until the stream ends.
async fn follow_assignments(
    client: &mut DispatcherClient<tonic::transport::Channel>,
    worker: &impl Assignee,
    address: &str,
) {
    let mut stream = match client.assignments(AssignmentsRequest {}).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            tracing::debug!(manager = %address, reason = status.message(), "no assignment stream");
            return;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(set)) => {
                let tasks: Vec<Task> = match serde_json::from_str(&set.tasks_json) {
                    Ok(tasks) => tasks,
                    Err(error) => {
                        tracing::error!(%error, "undecodable assignments");
                        return;
                    }
                };
                let subnet = set.subnet.parse::<Ipv4Net>().ok();
                // Empty from a manager that predates credentials. No serde message: it
                // would quote the credentials.
                let auth = match set.registry_auth_json.as_str() {
                    "" => Ok(Default::default()),
                    json => serde_json::from_str(json),
                };
                let Ok(auth) = auth else {
                    tracing::error!("undecodable registry credentials in the assignments");
                    return;
                };
                // Empty from a manager that predates the endpoint table.
                let network_view = match set.network_view_json.as_str() {
                    "" => Ok(NetworkView::default()),
                    json => serde_json::from_str(json),
                };
                let network_view = match network_view {
                    Ok(view) => view,
                    Err(error) => {
                        tracing::error!(%error, "undecodable network view in the assignments");
                        return;
                    }
                };
                // No serde message: it could quote a content.
                let contents = match set.file_contents_json.as_str() {
                    "" => Ok(FileContents::new()),
                    json => serde_json::from_str(json),
                };
                let Ok(contents) = contents else {
                    tracing::error!("undecodable config and secret contents in the assignments");
                    return;
                };
                worker
                    .assign(tasks, subnet, auth, network_view, contents)
                    .await;
            }
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(manager = %address, reason = status.message(), "assignment stream ended");
                return;
            }
        }
    }
}

/// Serves this node's logs to the manager at the other end of `channel`, opening the
/// stream again whenever it ends; never returns (dropped with the assignment stream).
async fn serve_logs(channel: tonic::transport::Channel, data_dir: &std::path::Path) {
    loop {
        if let Err(status) = logs::serve(channel.clone(), data_dir.to_path_buf()).await {
            tracing::debug!(reason = status.message(), "log stream ended");
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Sends the worker's status updates, batched; what a manager does not take is sent again
/// to the next one. The channel to a manager is kept between batches (a task sends three
/// reports as it starts: a TLS handshake each would cost more than the report), and made
/// again when the manager or the node's certificate changes, or a report fails.
async fn report(daemon: &Daemon, mut reports: mpsc::UnboundedReceiver<TaskStatusUpdate>) {
    let mut pending: Vec<TaskStatusUpdate> = Vec::new();
    let mut turn = 0usize;
    // (manager address, the certificate it was opened with, the client)
    let mut open: Option<(String, String, DispatcherClient<tonic::transport::Channel>)> = None;
    loop {
        // Each status is counted in the node's metrics as the worker reports it, whether
        // or not a manager hears it yet.
        if pending.is_empty() {
            match reports.recv().await {
                Some(update) => {
                    daemon.metrics.own_task(&update.id, update.status.state);
                    pending.push(update);
                }
                None => return,
            }
        }
        while pending.len() < BATCH {
            match reports.try_recv() {
                Ok(update) => {
                    daemon.metrics.own_task(&update.id, update.status.state);
                    pending.push(update);
                }
                Err(_) => break,
            }
        }
        let Some((managers, credentials)) = managers(daemon).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let address = &managers[turn % managers.len()];
        let client = match &mut open {
            Some((open_address, cert, client))
                if open_address == address && *cert == credentials.cert_pem =>
            {
                client
            }
            _ => {
                let client = DispatcherClient::new(manager_channel(address, &credentials));
                let (_, _, client) =
                    open.insert((address.clone(), credentials.cert_pem.clone(), client));
                client
            }
        };
        let request = ReportTaskStatusRequest {
            updates_json: serde_json::to_string(&pending).expect("statuses serialise"),
        };
        match client.report_task_status(request).await {
            Ok(_) => pending.clear(),
            Err(status) => {
                tracing::debug!(manager = %address, reason = status.message(), "status report refused");
                open = None;
                turn += 1;
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
