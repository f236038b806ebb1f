//! The broker, on every manager: the nodes whose Logs stream is open to it, the
//! subscriptions sent down each, and the lines each node may publish.

use super::*;

/// The nodes whose Logs stream is open to this manager, and their open subscriptions.
#[derive(Default)]
pub struct LogBroker {
    links: Mutex<HashMap<String, Link>>,
    next: AtomicU64,
}

/// A node's Logs stream.
pub(super) struct Link {
    /// Tells a node's link from the one it replaced (a node that reconnected).
    session: u64,
    subscribe: mpsc::UnboundedSender<LogSubscription>,
    open: Arc<Mutex<HashMap<String, Open>>>,
}

/// A subscription open on a node: the tasks it may publish, and where their lines go.
pub(super) struct Open {
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
pub(super) struct Cancel {
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
