//! Service logs (`swarm service logs`), after swarmkit's log broker. Workers listen on no
//! port, so the lines travel on streams the nodes open themselves:
//!
//! - every node's agent opens `Dispatcher.Logs` to the manager it takes assignments from
//!   ([`serve`]); that manager sends subscriptions down it, the agent answers with chunks
//!   of lines, and a close marker unless it follows;
//! - every manager keeps a [`LogBroker`]: which nodes have a Logs stream open to it, and
//!   the subscriptions open on each;
//! - `Control.ServiceLogs` ([`gather`]) subscribes on the nodes connected to the manager
//!   that answers, asks every other manager for the nodes connected to it
//!   (`Dispatcher.SubscribeLogs`, managers only), and merges the streams; a node that no
//!   manager serves is named in a warning.
//!
//! Architecture invariant: a line is taken from a node only for a task of the subscription
//! that the store assigns to that node; a node cannot publish another node's lines.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use swarm_agent::worker::logs::{
    Selection, Stream, TaskFollower, TaskLine, TaskLogError, TaskLogs,
};
use swarm_api::grpc::control::{ServiceLogLine, ServiceLogsMessage};
use swarm_api::grpc::dispatcher::dispatcher_client::DispatcherClient;
use swarm_api::grpc::dispatcher::{
    LogPublish, LogRecord, LogStream, LogSubscription, NodeTasks, SubscribeLogsRequest,
};
use swarm_api::task::{ServiceLookupError, ServicesView, Task, TaskState};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::Status;
use tonic::transport::Channel;

use crate::raft::driver::RaftHandle;
use crate::store::Store;

/// The most lines in one chunk, and about the most bytes (a chunk closes once over).
const CHUNK_LINES: usize = 256;
const CHUNK_BYTES: usize = 64 << 10;
/// A longer line is cut: any chunk must fit in a gRPC message (4 MiB by default).
const MAX_LINE_BYTES: usize = 256 << 10;
/// Chunks waiting per stream: a slow reader slows its writers instead of filling memory.
const BUFFER: usize = 16;
/// How long another manager has to say which nodes it serves before theirs are reported
/// unavailable.
const REMOTE_ANSWER: Duration = Duration::from_secs(5);

/// Aborts its tasks when dropped: what a subscription started ends with it.
#[derive(Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What a subscription selects of the lines already written.
fn selection(subscription: &LogSubscription) -> Selection {
    Selection {
        tail: usize::try_from(subscription.tail).ok(),
        since: (subscription.since_ns > 0)
            .then(|| UNIX_EPOCH + Duration::from_nanos(subscription.since_ns)),
    }
}

fn record(task_id: &str, line: TaskLine) -> LogRecord {
    let mut data = line.text.into_bytes();
    data.truncate(MAX_LINE_BYTES);
    LogRecord {
        task_id: task_id.to_owned(),
        stream: match line.stream {
            Stream::Stdout => LogStream::Stdout,
            Stream::Stderr => LogStream::Stderr,
        } as i32,
        time_ns: nanos(line.time),
        data,
    }
}

/// Gathers a subscription's lines into chunks of bounded size.
struct Chunker {
    subscription: String,
    records: Vec<LogRecord>,
    bytes: usize,
}

impl Chunker {
    fn new(subscription: &str) -> Self {
        Chunker {
            subscription: subscription.to_owned(),
            records: Vec::new(),
            bytes: 0,
        }
    }

    fn push(&mut self, record: LogRecord) {
        self.bytes += record.data.len();
        self.records.push(record);
    }

    fn is_full(&self) -> bool {
        self.records.len() >= CHUNK_LINES || self.bytes >= CHUNK_BYTES
    }

    fn take(&mut self) -> LogPublish {
        self.bytes = 0;
        LogPublish {
            subscription_id: self.subscription.clone(),
            records: std::mem::take(&mut self.records),
            ..LogPublish::default()
        }
    }
}

// ---------------------------------------------------------------------------------------
// The agent side, on every node.

/// Answers the subscriptions of the manager at the other end of `channel` from the task
/// logs under `data_dir`, until the stream ends; dropping it stops every subscription.
pub(super) async fn serve(channel: Channel, data_dir: PathBuf) -> Result<(), Status> {
    let (publish, outbound) = mpsc::channel::<LogPublish>(BUFFER);
    let mut subscriptions = DispatcherClient::new(channel)
        .logs(ReceiverStream::new(outbound))
        .await?
        .into_inner();
    let mut running: HashMap<String, Tasks> = HashMap::new();
    while let Some(subscription) = subscriptions.message().await? {
        running.retain(|_, tasks| tasks.0.iter().any(|t| !t.is_finished()));
        if subscription.cancel {
            running.remove(&subscription.id);
            continue;
        }
        let id = subscription.id.clone();
        let answer = tokio::spawn(answer(subscription, data_dir.clone(), publish.clone()));
        running.insert(id, Tasks(vec![answer]));
    }
    Ok(())
}

/// One subscription: the selected lines of each task, then (following) the new ones.
async fn answer(
    subscription: LogSubscription,
    data_dir: PathBuf,
    publish: mpsc::Sender<LogPublish>,
) {
    let selection = selection(&subscription);
    let task_ids = subscription.task_ids.clone();
    // Reading a log back is file IO of up to tens of MiB: off the async threads.
    let read = tokio::task::spawn_blocking(move || {
        task_ids
            .into_iter()
            .map(|id| {
                let read = TaskLogs::of(&data_dir, &id).and_then(|logs| logs.read(selection));
                (id, read)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let Ok(read) = read else {
        return;
    };
    let mut chunker = Chunker::new(&subscription.id);
    let mut errors = Vec::new();
    let mut followers: Vec<(String, TaskFollower)> = Vec::new();
    for (task_id, result) in read {
        match result {
            Ok((lines, follower)) => {
                for line in lines {
                    chunker.push(record(&task_id, line));
                    if chunker.is_full() && publish.send(chunker.take()).await.is_err() {
                        return;
                    }
                }
                followers.push((task_id, follower));
            }
            // A task that never ran here (no image, never started) has no lines: nothing
            // to say.
            Err(TaskLogError::Missing(_)) => {}
            Err(error) => errors.push(format!("task {task_id}: {error}")),
        }
    }
    let mut last = chunker.take();
    last.errors = errors;
    last.close = !subscription.follow;
    if publish.send(last).await.is_err() || !subscription.follow {
        return;
    }
    let (lines, mut received) = mpsc::channel::<LogRecord>(CHUNK_LINES);
    let _followers = Tasks(
        followers
            .into_iter()
            .map(|(task_id, mut follower)| {
                let lines = lines.clone();
                tokio::spawn(async move {
                    while let Ok(line) = follower.next_line().await {
                        if lines.send(record(&task_id, line)).await.is_err() {
                            return;
                        }
                    }
                })
            })
            .collect(),
    );
    drop(lines);
    while let Some(first) = received.recv().await {
        chunker.push(first);
        while !chunker.is_full() {
            match received.try_recv() {
                Ok(more) => chunker.push(more),
                Err(_) => break,
            }
        }
        if publish.send(chunker.take()).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The broker, on every manager.

/// The nodes whose Logs stream is open to this manager, and their open subscriptions.
#[derive(Default)]
pub struct LogBroker {
    links: Mutex<HashMap<String, Link>>,
    next: AtomicU64,
}

/// A node's Logs stream.
struct Link {
    /// Tells a node's link from the one it replaced (a node that reconnected).
    session: u64,
    subscribe: mpsc::UnboundedSender<LogSubscription>,
    open: Arc<Mutex<HashMap<String, Open>>>,
}

/// A subscription open on a node: the tasks it may publish, and where their lines go.
struct Open {
    tasks: HashSet<String>,
    lines: mpsc::Sender<(String, LogPublish)>,
}

/// The manager's end of one node's Logs stream.
pub struct NodeLink {
    broker: Arc<LogBroker>,
    node_id: String,
    session: u64,
    open: Arc<Mutex<HashMap<String, Open>>>,
}

/// What the dispatcher sends down a node's Logs stream.
pub type SubscriptionStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<LogSubscription, Status>> + Send>>;

impl LogBroker {
    /// Node `node_id` opened its Logs stream: it replaces any earlier one of the node.
    pub fn connect(self: &Arc<Self>, node_id: &str) -> (NodeLink, SubscriptionStream) {
        let session = self.next.fetch_add(1, Ordering::Relaxed);
        let (subscribe, subscriptions) = mpsc::unbounded_channel();
        let open = Arc::new(Mutex::new(HashMap::new()));
        let link = Link {
            session,
            subscribe,
            open: open.clone(),
        };
        self.links
            .lock()
            .expect("not poisoned")
            .insert(node_id.to_owned(), link);
        let stream = UnboundedReceiverStream::new(subscriptions).map(Ok);
        let node = NodeLink {
            broker: self.clone(),
            node_id: node_id.to_owned(),
            session,
            open,
        };
        (node, Box::pin(stream))
    }

    /// Opens a subscription on every node of `nodes` connected here; `template` says what
    /// to select (its id and tasks are set per node).
    pub fn subscribe(
        self: &Arc<Self>,
        template: &LogSubscription,
        nodes: &[NodeTasks],
    ) -> Subscription {
        let id = format!("s{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (sender, lines) = mpsc::channel(BUFFER);
        let mut served = Vec::new();
        let links = self.links.lock().expect("not poisoned");
        for node in nodes {
            let Some(link) = links.get(&node.node_id) else {
                continue;
            };
            let subscription = LogSubscription {
                id: id.clone(),
                task_ids: node.task_ids.clone(),
                cancel: false,
                ..template.clone()
            };
            link.open.lock().expect("not poisoned").insert(
                id.clone(),
                Open {
                    tasks: node.task_ids.iter().cloned().collect(),
                    lines: sender.clone(),
                },
            );
            if link.subscribe.send(subscription).is_ok() {
                served.push((node.node_id.clone(), link.session));
            } else {
                link.open.lock().expect("not poisoned").remove(&id);
            }
        }
        Subscription {
            served: served.iter().map(|(node, _)| node.clone()).collect(),
            closed: HashSet::new(),
            lines,
            _cancel: Cancel {
                broker: self.clone(),
                id,
                nodes: served,
            },
        }
    }
}

impl NodeLink {
    /// A chunk from the node: passed on to its subscription, without the lines of tasks
    /// the subscription did not ask this node for.
    pub async fn publish(&self, mut publish: LogPublish) {
        let lines = {
            let mut open = self.open.lock().expect("not poisoned");
            let Some(entry) = open.get(&publish.subscription_id) else {
                return; // cancelled meanwhile
            };
            let before = publish.records.len();
            publish.records.retain(|r| entry.tasks.contains(&r.task_id));
            if publish.records.len() < before {
                tracing::warn!(node = %self.node_id, "dropped log lines of tasks not assigned to the node");
            }
            let lines = entry.lines.clone();
            if publish.close {
                open.remove(&publish.subscription_id);
            }
            lines
        };
        let _ = lines.send((self.node_id.clone(), publish)).await;
    }

    /// The node's stream ended: its open subscriptions end with a word of why.
    pub async fn disconnect(self) {
        {
            let mut links = self.broker.links.lock().expect("not poisoned");
            if links
                .get(&self.node_id)
                .is_some_and(|link| link.session == self.session)
            {
                links.remove(&self.node_id);
            }
        }
        let open: Vec<(String, Open)> = self.open.lock().expect("not poisoned").drain().collect();
        for (id, entry) in open {
            let publish = LogPublish {
                subscription_id: id,
                close: true,
                errors: vec![format!(
                    "logs of node {} interrupted: its agent disconnected",
                    self.node_id
                )],
                ..LogPublish::default()
            };
            let _ = entry.lines.send((self.node_id.clone(), publish)).await;
        }
    }
}

/// Cancels a subscription on the nodes that still serve it, when dropped.
struct Cancel {
    broker: Arc<LogBroker>,
    id: String,
    nodes: Vec<(String, u64)>,
}

impl Drop for Cancel {
    fn drop(&mut self) {
        let links = self.broker.links.lock().expect("not poisoned");
        for (node, session) in &self.nodes {
            let Some(link) = links.get(node).filter(|l| l.session == *session) else {
                continue;
            };
            let still_open = link
                .open
                .lock()
                .expect("not poisoned")
                .remove(&self.id)
                .is_some();
            if still_open {
                let _ = link.subscribe.send(LogSubscription {
                    id: self.id.clone(),
                    cancel: true,
                    ..LogSubscription::default()
                });
            }
        }
    }
}

/// A subscription open on the nodes connected to this manager; dropping it cancels it.
pub struct Subscription {
    /// The nodes that serve it.
    pub served: Vec<String>,
    closed: HashSet<String>,
    lines: mpsc::Receiver<(String, LogPublish)>,
    _cancel: Cancel,
}

impl Subscription {
    /// The next chunk and its node; `None` once every serving node closed.
    pub async fn next(&mut self) -> Option<(String, LogPublish)> {
        if self.closed.len() == self.served.len() {
            return None;
        }
        let (node, publish) = self.lines.recv().await?;
        if publish.close {
            self.closed.insert(node.clone());
        }
        Some((node, publish))
    }
}

// ---------------------------------------------------------------------------------------
// ServiceLogs, on the manager the CLI asks.

/// Whether a task may have logs: it went to a node, which got as far as starting it (its
/// log files are made just before).
fn may_have_logs(task: &Task) -> bool {
    task.node_id.is_some() && task.status.state >= TaskState::Starting
}

/// The tasks whose logs `target` (a service, or one task, by id or unique prefix) names:
/// those that may have logs.
pub fn target_tasks<'a>(view: &'a ServicesView, target: &str) -> Result<Vec<&'a Task>, Status> {
    let placed = |t: &&Task| may_have_logs(t);
    match view.service(target) {
        Ok(service) => {
            return Ok(view
                .tasks
                .iter()
                .filter(|t| Some(&t.service_id) == service.id.as_ref())
                .filter(placed)
                .collect());
        }
        Err(error @ ServiceLookupError::Ambiguous { .. }) => {
            return Err(Status::invalid_argument(error.to_string()));
        }
        Err(ServiceLookupError::NotFound(_)) => {}
    }
    let tasks: Vec<&Task> = match view.tasks.iter().find(|t| t.id == target) {
        Some(task) => vec![task],
        None => view
            .tasks
            .iter()
            .filter(|t| t.id.starts_with(target))
            .collect(),
    };
    match tasks.as_slice() {
        [task] => Ok(std::iter::once(*task).filter(placed).collect()),
        [] => Err(Status::not_found(format!(
            "no service or task {target:?}: `swarm service ls` lists the services, `swarm service ps SERVICE` their tasks"
        ))),
        _ => Err(Status::invalid_argument(format!(
            "{target:?} names {} tasks: give more of the id",
            tasks.len()
        ))),
    }
}

/// The tasks by node, as subscriptions ask for them.
pub fn by_node(tasks: &[&Task]) -> Vec<NodeTasks> {
    let mut nodes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for task in tasks {
        if let Some(node) = &task.node_id {
            nodes.entry(node).or_default().push(task.id.clone());
        }
    }
    nodes
        .into_iter()
        .map(|(node_id, task_ids)| NodeTasks {
            node_id: node_id.to_owned(),
            task_ids,
        })
        .collect()
}

/// Where a subscription's lines come from: this manager's broker, or another manager.
enum Event {
    /// Source `source` serves these nodes (each source says it once, first).
    Served {
        source: usize,
        nodes: Vec<String>,
    },
    Published {
        source: usize,
        publish: LogPublish,
    },
    Ended,
}

/// Which source serves which node: the first to say it does (a node reconnecting to
/// another manager may briefly be connected to two).
#[derive(Debug, Default)]
struct Claims {
    by_node: HashMap<String, usize>,
    answered: usize,
}

impl Claims {
    fn served(&mut self, source: usize, nodes: Vec<String>) {
        for node in nodes {
            self.by_node.entry(node).or_insert(source);
        }
        self.answered += 1;
    }

    fn claims(&self, source: usize, node: &str) -> bool {
        self.by_node.get(node) == Some(&source)
    }

    /// The nodes no source serves.
    fn unserved<'a>(&self, nodes: &'a [NodeTasks]) -> Vec<&'a str> {
        nodes
            .iter()
            .map(|n| n.node_id.as_str())
            .filter(|node| !self.by_node.contains_key(*node))
            .collect()
    }
}

/// The lines of a chunk from `source` that it may give, for the CLI.
fn lines_of(
    claims: &Claims,
    source: usize,
    task_nodes: &HashMap<String, String>,
    records: Vec<LogRecord>,
) -> Vec<ServiceLogLine> {
    records
        .into_iter()
        .filter_map(|record| {
            let node = task_nodes.get(&record.task_id)?;
            claims.claims(source, node).then(|| ServiceLogLine {
                stderr: record.stream == LogStream::Stderr as i32,
                task_id: record.task_id,
                node_id: node.clone(),
                time_ns: record.time_ns,
                data: record.data,
            })
        })
        .collect()
}

/// What `gather` needs to ask the other managers.
#[derive(Clone)]
pub struct Remote {
    pub address: String,
    pub channel: Channel,
}

/// ServiceLogs: subscribes on this manager's nodes and through every other manager, and
/// sends the merged lines to `out` until every source ended (not following) or `out`'s
/// reader went away; whatever it opened is cancelled when it returns.
pub async fn gather(
    broker: Arc<LogBroker>,
    remotes: Vec<Remote>,
    template: LogSubscription,
    nodes: Vec<NodeTasks>,
    hostnames: BTreeMap<String, String>,
    out: mpsc::Sender<Result<ServiceLogsMessage, Status>>,
) {
    if nodes.is_empty() {
        return;
    }
    let task_nodes: HashMap<String, String> = nodes
        .iter()
        .flat_map(|n| n.task_ids.iter().map(|t| (t.clone(), n.node_id.clone())))
        .collect();
    let (events, mut received) = mpsc::channel::<Event>(BUFFER);
    let sources = 1 + remotes.len();
    let mut local = broker.subscribe(&template, &nodes);
    let _ = events.try_send(Event::Served {
        source: 0,
        nodes: local.served.clone(),
    });
    let mut tasks = Tasks::default();
    let local_events = events.clone();
    tasks.0.push(tokio::spawn(async move {
        while let Some((_, publish)) = local.next().await {
            let event = Event::Published { source: 0, publish };
            if local_events.send(event).await.is_err() {
                return;
            }
        }
        let _ = local_events.send(Event::Ended).await;
    }));
    for (index, remote) in remotes.into_iter().enumerate() {
        let request = SubscribeLogsRequest {
            subscription: Some(template.clone()),
            nodes: nodes.clone(),
        };
        tasks.0.push(tokio::spawn(ask_manager(
            index + 1,
            remote,
            request,
            events.clone(),
        )));
    }
    drop(events);
    let mut claims = Claims::default();
    let mut ended = 0;
    let hostname = |node: &str| {
        hostnames
            .get(node)
            .cloned()
            .unwrap_or_else(|| node.to_owned())
    };
    loop {
        let event = tokio::select! {
            event = received.recv() => event,
            // Following, no line may come for long: the reader's going is noticed here.
            _ = out.closed() => return,
        };
        let message = match event {
            None => return,
            Some(Event::Ended) => {
                ended += 1;
                if ended == sources {
                    return;
                }
                continue;
            }
            Some(Event::Served {
                source,
                nodes: served,
            }) => {
                claims.served(source, served);
                if claims.answered < sources {
                    continue;
                }
                let warnings: Vec<String> = claims
                    .unserved(&nodes)
                    .into_iter()
                    .map(|node| {
                        format!("logs of node {} unavailable: not connected", hostname(node))
                    })
                    .collect();
                if warnings.is_empty() {
                    continue;
                }
                ServiceLogsMessage {
                    lines: Vec::new(),
                    warnings,
                }
            }
            Some(Event::Published { source, publish }) => ServiceLogsMessage {
                lines: lines_of(&claims, source, &task_nodes, publish.records),
                warnings: publish.errors,
            },
        };
        if message.lines.is_empty() && message.warnings.is_empty() {
            continue;
        }
        if out.send(Ok(message)).await.is_err() {
            return;
        }
    }
}

/// How long a follower of a service waits after a store change before looking for new
/// tasks: a rollout changes the store many times in a row.
const NEW_TASKS_SETTLE: Duration = Duration::from_millis(200);

/// Following a service: every task of `service_id` that starts after the first look (not
/// in `known`) is gathered too, all its lines, into the same `out`, until `out`'s reader
/// goes away.
pub async fn follow_new_tasks(
    raft: RaftHandle<Store>,
    broker: Arc<LogBroker>,
    remotes: Vec<Remote>,
    service_id: String,
    mut known: HashSet<String>,
    template: LogSubscription,
    out: mpsc::Sender<Result<ServiceLogsMessage, Status>>,
) {
    let mut applied = raft.applied();
    let template = LogSubscription {
        tail: -1,
        ..template
    };
    loop {
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = out.closed() => return,
        }
        tokio::time::sleep(NEW_TASKS_SETTLE).await;
        let service = service_id.clone();
        let Ok((tasks, hostnames)) = raft
            .local_read(move |store: &Store| {
                let data = store.data();
                let tasks: Vec<Task> = data
                    .tasks
                    .values()
                    .filter(|t| t.service_id == service && may_have_logs(t))
                    .cloned()
                    .collect();
                let hostnames: BTreeMap<String, String> = data
                    .nodes
                    .values()
                    .map(|n| (n.id.clone(), n.hostname.clone()))
                    .collect();
                (tasks, hostnames)
            })
            .await
        else {
            return;
        };
        let new: Vec<&Task> = tasks.iter().filter(|t| !known.contains(&t.id)).collect();
        if new.is_empty() {
            continue;
        }
        known.extend(new.iter().map(|t| t.id.clone()));
        tokio::spawn(gather(
            broker.clone(),
            remotes.clone(),
            template.clone(),
            by_node(&new),
            hostnames,
            out.clone(),
        ));
    }
}

/// The lines another manager serves: which nodes first, then their chunks.
async fn ask_manager(
    source: usize,
    remote: Remote,
    request: SubscribeLogsRequest,
    events: mpsc::Sender<Event>,
) {
    let mut client = DispatcherClient::new(remote.channel);
    let opened = tokio::time::timeout(REMOTE_ANSWER, async {
        let mut stream = client.subscribe_logs(request).await?.into_inner();
        let first = stream.message().await?.unwrap_or_default();
        Ok::<_, Status>((stream, first.serving_nodes))
    })
    .await;
    let (mut stream, served) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(status)) => {
            tracing::debug!(manager = %remote.address, reason = status.message(), "no logs from this manager");
            let _ = events
                .send(Event::Served {
                    source,
                    nodes: Vec::new(),
                })
                .await;
            let _ = events.send(Event::Ended).await;
            return;
        }
        Err(_) => {
            tracing::debug!(manager = %remote.address, "no answer about logs in time");
            let _ = events
                .send(Event::Served {
                    source,
                    nodes: Vec::new(),
                })
                .await;
            let _ = events.send(Event::Ended).await;
            return;
        }
    };
    if events
        .send(Event::Served {
            source,
            nodes: served,
        })
        .await
        .is_err()
    {
        return;
    }
    while let Ok(Some(publish)) = stream.message().await {
        if events
            .send(Event::Published { source, publish })
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = events.send(Event::Ended).await;
}

/// SubscribeLogs, for another manager: which of the nodes asked this manager serves, then
/// their chunks, until they all closed or the asking manager went away.
pub fn serve_manager(
    broker: &Arc<LogBroker>,
    request: SubscribeLogsRequest,
) -> Result<ReceiverStream<Result<LogPublish, Status>>, Status> {
    let template = request
        .subscription
        .ok_or_else(|| Status::invalid_argument("a log subscription is required"))?;
    let mut subscription = broker.subscribe(&template, &request.nodes);
    let (sender, receiver) = mpsc::channel(BUFFER);
    let first = LogPublish {
        serving_nodes: subscription.served.clone(),
        ..LogPublish::default()
    };
    sender
        .try_send(Ok(first))
        .expect("an empty channel takes one message");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                next = subscription.next() => match next {
                    Some((_, publish)) => if sender.send(Ok(publish)).await.is_err() { return },
                    None => return,
                },
                _ = sender.closed() => return,
            }
        }
    });
    Ok(ReceiverStream::new(receiver))
}

#[cfg(test)]
mod tests {
    use swarm_api::spec::ServiceSpec;
    use swarm_api::state::Object;
    use swarm_api::task::{DesiredState, TaskStatus};

    use super::*;

    fn record(task_id: &str, text: &str) -> LogRecord {
        LogRecord {
            task_id: task_id.to_owned(),
            stream: LogStream::Stdout as i32,
            time_ns: 1,
            data: text.as_bytes().to_vec(),
        }
    }

    fn node(node_id: &str, tasks: &[&str]) -> NodeTasks {
        NodeTasks {
            node_id: node_id.to_owned(),
            task_ids: tasks.iter().map(|t| t.to_string()).collect(),
        }
    }

    async fn next_subscription(stream: &mut SubscriptionStream) -> LogSubscription {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a subscription within 5 s")
            .expect("the stream goes on")
            .unwrap()
    }

    #[tokio::test]
    async fn a_node_publishes_only_its_subscribed_tasks_and_cancels_reach_it() {
        let broker = Arc::new(LogBroker::default());
        let (n1, mut to_n1) = broker.connect("n1");
        let (_n2, mut to_n2) = broker.connect("n2");
        let template = LogSubscription {
            follow: true,
            tail: 5,
            ..LogSubscription::default()
        };
        let nodes = [
            node("n1", &["t1"]),
            node("n2", &["t2"]),
            node("n3", &["t3"]),
        ];
        let mut subscription = broker.subscribe(&template, &nodes);
        assert_eq!(subscription.served, ["n1", "n2"], "n3 is not connected");
        let asked = next_subscription(&mut to_n1).await;
        assert_eq!(
            (asked.task_ids.as_slice(), asked.tail, asked.follow),
            (&["t1".to_owned()][..], 5, true)
        );
        assert_eq!(next_subscription(&mut to_n2).await.task_ids, ["t2"]);

        // n1 tries to publish n2's task along with its own: only its own gets through.
        n1.publish(LogPublish {
            subscription_id: asked.id.clone(),
            records: vec![record("t1", "mine"), record("t2", "not mine")],
            ..LogPublish::default()
        })
        .await;
        let (from, publish) = subscription.next().await.unwrap();
        assert_eq!(from, "n1");
        let texts: Vec<&[u8]> = publish.records.iter().map(|r| r.data.as_slice()).collect();
        assert_eq!(texts, [b"mine".as_slice()]);

        // Dropped, the subscription is cancelled on both nodes.
        drop(subscription);
        for stream in [&mut to_n1, &mut to_n2] {
            let cancel = next_subscription(stream).await;
            assert_eq!(
                (cancel.id.as_str(), cancel.cancel),
                (asked.id.as_str(), true)
            );
        }
        // A late chunk of a cancelled subscription goes nowhere.
        n1.publish(LogPublish {
            subscription_id: asked.id,
            records: vec![record("t1", "late")],
            ..LogPublish::default()
        })
        .await;
    }

    #[tokio::test]
    async fn a_subscription_ends_when_its_nodes_closed_or_went_away() {
        let broker = Arc::new(LogBroker::default());
        let (n1, mut to_n1) = broker.connect("n1");
        let (n2, _to_n2) = broker.connect("n2");
        let nodes = [node("n1", &["t1"]), node("n2", &["t2"])];
        let mut subscription = broker.subscribe(&LogSubscription::default(), &nodes);
        let id = next_subscription(&mut to_n1).await.id;
        n1.publish(LogPublish {
            subscription_id: id,
            records: vec![record("t1", "last")],
            close: true,
            ..LogPublish::default()
        })
        .await;
        let (_, publish) = subscription.next().await.unwrap();
        assert!(publish.close);
        // n2's agent disconnects: its part ends with why, and so does the subscription.
        n2.disconnect().await;
        let (from, publish) = subscription.next().await.unwrap();
        assert_eq!(from, "n2");
        assert!(publish.close);
        assert_eq!(
            publish.errors,
            ["logs of node n2 interrupted: its agent disconnected"]
        );
        assert!(subscription.next().await.is_none());
        // A closed subscription sends no cancel when dropped.
        drop(subscription);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), to_n1.next())
                .await
                .is_err()
        );
        // n2 is no longer served.
        let again = broker.subscribe(&LogSubscription::default(), &nodes);
        assert_eq!(again.served, ["n1"]);
    }

    #[test]
    fn a_reconnected_node_keeps_its_new_link() {
        let broker = Arc::new(LogBroker::default());
        let (old, _old_stream) = broker.connect("n1");
        let (_new, _new_stream) = broker.connect("n1");
        // The old stream ends after the new one opened: the new one stays.
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(old.disconnect());
        let subscription = broker.subscribe(&LogSubscription::default(), &[node("n1", &["t1"])]);
        assert_eq!(subscription.served, ["n1"]);
    }

    #[test]
    fn the_first_source_to_serve_a_node_claims_its_lines() {
        let mut claims = Claims::default();
        claims.served(0, vec!["n1".into()]);
        claims.served(1, vec!["n1".into(), "n2".into()]);
        let nodes = [
            node("n1", &["t1"]),
            node("n2", &["t2"]),
            node("n3", &["t3"]),
        ];
        assert_eq!(claims.unserved(&nodes), ["n3"]);
        let task_nodes: HashMap<String, String> = [("t1", "n1"), ("t2", "n2")]
            .map(|(t, n)| (t.into(), n.into()))
            .into();
        let records = || {
            vec![
                record("t1", "a"),
                record("t2", "b"),
                record("t9", "unknown"),
            ]
        };
        let from = |source| -> Vec<(String, String)> {
            lines_of(&claims, source, &task_nodes, records())
                .into_iter()
                .map(|l| (l.task_id, l.node_id))
                .collect()
        };
        assert_eq!(from(0), [("t1".into(), "n1".into())]);
        assert_eq!(from(1), [("t2".into(), "n2".into())]);
    }

    #[test]
    fn chunks_are_bounded_by_lines_and_bytes() {
        let mut chunker = Chunker::new("s1");
        for _ in 0..CHUNK_LINES - 1 {
            chunker.push(record("t", "x"));
        }
        assert!(!chunker.is_full());
        chunker.push(record("t", "x"));
        assert!(chunker.is_full());
        assert_eq!(chunker.take().records.len(), CHUNK_LINES);
        assert!(!chunker.is_full(), "empty again");
        chunker.push(record("t", &"y".repeat(CHUNK_BYTES)));
        assert!(chunker.is_full());
        let long = TaskLine {
            stream: Stream::Stderr,
            time: UNIX_EPOCH + Duration::from_secs(2),
            text: "z".repeat(MAX_LINE_BYTES + 10),
        };
        let cut = super::record("t", long);
        assert_eq!(cut.data.len(), MAX_LINE_BYTES);
        assert_eq!(
            (cut.stream, cut.time_ns),
            (LogStream::Stderr as i32, 2_000_000_000)
        );
    }

    #[tokio::test]
    async fn gathered_lines_carry_their_node_and_a_gone_reader_cancels_the_nodes() {
        let broker = Arc::new(LogBroker::default());
        let (n1, mut to_n1) = broker.connect("n1");
        let template = LogSubscription {
            follow: true,
            ..LogSubscription::default()
        };
        let nodes = vec![node("n1", &["t1"]), node("n2", &["t2"])];
        let hostnames = [("n1", "host1"), ("n2", "host2")].map(|(n, h)| (n.into(), h.into()));
        let (out, mut received) = mpsc::channel(4);
        let gathering = tokio::spawn(gather(
            broker.clone(),
            Vec::new(),
            template,
            nodes,
            hostnames.into(),
            out,
        ));
        let warned = next_message(&mut received).await;
        assert_eq!(
            warned.warnings,
            ["logs of node host2 unavailable: not connected"]
        );
        let subscription = next_subscription(&mut to_n1).await;
        n1.publish(LogPublish {
            subscription_id: subscription.id.clone(),
            records: vec![record("t1", "hello")],
            ..LogPublish::default()
        })
        .await;
        let lines = next_message(&mut received).await.lines;
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (lines[0].node_id.as_str(), lines[0].data.as_slice()),
            ("n1", b"hello".as_slice())
        );
        // The CLI goes away while following: the node is told to stop.
        drop(received);
        let cancel = next_subscription(&mut to_n1).await;
        assert_eq!((cancel.id, cancel.cancel), (subscription.id, true));
        tokio::time::timeout(Duration::from_secs(5), gathering)
            .await
            .expect("gather ends")
            .unwrap();
    }

    #[tokio::test]
    async fn an_agent_answers_with_the_selected_lines_then_follows() {
        let dir = tempfile::tempdir().unwrap();
        let (stdout, stderr) = swarm_agent::worker::logs::log_paths(&dir.path().join("tasks/t1"));
        let append = |path: &std::path::Path, text: &str| {
            use std::io::Write;
            swarm_agent::exec::logs::open_for_append(path)
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        };
        append(&stdout, "one\ntwo\nthree\n");
        append(&stderr, "");
        let (publish, mut published) = mpsc::channel(BUFFER);
        let subscription = |follow| LogSubscription {
            id: "s1".into(),
            task_ids: vec!["t1".into(), "gone".into(), "../x".into()],
            follow,
            tail: 2,
            ..LogSubscription::default()
        };
        answer(
            subscription(false),
            dir.path().to_path_buf(),
            publish.clone(),
        )
        .await;
        let chunk = published.recv().await.unwrap();
        let texts: Vec<&[u8]> = chunk.records.iter().map(|r| r.data.as_slice()).collect();
        assert_eq!(texts, [b"two".as_slice(), b"three"]);
        assert!(chunk.close);
        // A task without logs here says nothing; an id that is not one is refused.
        assert_eq!(chunk.errors.len(), 1, "{:?}", chunk.errors);
        assert!(
            chunk.errors[0].starts_with("task ../x: "),
            "{:?}",
            chunk.errors
        );

        let following = tokio::spawn(answer(
            subscription(true),
            dir.path().to_path_buf(),
            publish,
        ));
        let first = published.recv().await.unwrap();
        assert!(!first.close);
        append(&stderr, "four\n");
        let next = tokio::time::timeout(Duration::from_secs(5), published.recv())
            .await
            .expect("a followed line within 5 s")
            .unwrap();
        assert_eq!(next.records.len(), 1);
        assert_eq!(
            (next.records[0].data.as_slice(), next.records[0].stream),
            (b"four".as_slice(), LogStream::Stderr as i32)
        );
        // Cancelled (the agent aborts it), its followers stop: nothing holds the sender.
        following.abort();
        let _ = following.await;
        assert!(
            tokio::time::timeout(Duration::from_secs(5), published.recv())
                .await
                .expect("the channel closes")
                .is_none()
        );
    }

    async fn next_message(
        received: &mut mpsc::Receiver<Result<ServiceLogsMessage, Status>>,
    ) -> ServiceLogsMessage {
        tokio::time::timeout(Duration::from_secs(5), received.recv())
            .await
            .expect("a message within 5 s")
            .expect("the stream goes on")
            .unwrap()
    }

    /// A service spec named `name`, as a stack file gives it.
    fn service_spec(name: &str) -> ServiceSpec {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, format!("services:\n  {name}:\n    image: busybox\n")).unwrap();
        let stack = crate::stack::load(&crate::source::WorkTree, &path, "s.yaml", &|_| None);
        let mut stack = stack
            .stack
            .unwrap_or_else(|| panic!("{:?}", stack.diagnostics));
        stack.services.remove(0)
    }

    fn task(id: &str, service: &Object<ServiceSpec>, node: Option<&str>, state: TaskState) -> Task {
        Task {
            id: id.to_owned(),
            service_id: service.id.clone().unwrap(),
            service_name: service.spec.name.clone(),
            slot: Some(1),
            node_id: node.map(str::to_owned),
            spec: service.spec.task.clone(),
            desired: DesiredState::Running,
            status: TaskStatus::new(state, 0),
            created_at: 0,
            started_at: None,
        }
    }

    #[test]
    fn a_target_is_a_service_or_a_task() {
        let service = |id: &str, name: &str| Object {
            id: Some(id.to_owned()),
            origin: Default::default(),
            spec: service_spec(name),
        };
        let (web, api) = (service("w1", "web"), service("a1", "api"));
        let view = ServicesView {
            tasks: vec![
                task("t1abc", &web, Some("n1"), TaskState::Running),
                task("t2abc", &web, Some("n2"), TaskState::Shutdown),
                task("t3abc", &web, None, TaskState::Pending),
                task("t5abc", &web, Some("n2"), TaskState::Preparing),
                task("t4abc", &api, Some("n1"), TaskState::Running),
            ],
            services: vec![web.clone(), api.clone()],
            ..ServicesView::default()
        };
        let ids = |target: &str| -> Result<Vec<&str>, String> {
            target_tasks(&view, target)
                .map(|tasks| tasks.iter().map(|t| t.id.as_str()).collect())
                .map_err(|status| status.message().to_owned())
        };
        let cases: [(&str, Result<Vec<&str>, String>); 8] = [
            ("s_web", Ok(vec!["t1abc", "t2abc"])),
            ("w1", Ok(vec!["t1abc", "t2abc"])),
            ("t4abc", Ok(vec!["t4abc"])),
            ("t4", Ok(vec!["t4abc"])),
            ("t3", Ok(vec![])),
            ("t5", Ok(vec![])),
            ("t", Err("\"t\" names 5 tasks: give more of the id".to_owned())),
            (
                "nope",
                Err("no service or task \"nope\": `swarm service ls` lists the services, `swarm service ps SERVICE` their tasks".to_owned()),
            ),
        ];
        for (target, expected) in cases {
            assert_eq!(ids(target), expected, "{target}");
        }
        let nodes = by_node(&target_tasks(&view, "s_web").unwrap());
        assert_eq!(nodes, [node("n1", &["t1abc"]), node("n2", &["t2abc"])]);
    }
}
