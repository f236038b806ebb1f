//! `Control.ServiceLogs`, on the manager the CLI asks: the target's tasks by node, its own
//! nodes subscribed, the other managers asked for theirs, the streams merged.

use super::*;

/// Whether a task may have logs: it went to a node, which got as far as starting it (its
/// log files are made just before).
pub(super) fn may_have_logs(task: &Task) -> bool {
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
pub(super) enum Event {
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
pub(super) struct Claims {
    by_node: HashMap<String, usize>,
    answered: usize,
}

impl Claims {
    pub(super) fn served(&mut self, source: usize, nodes: Vec<String>) {
        for node in nodes {
            self.by_node.entry(node).or_insert(source);
        }
        self.answered += 1;
    }

    fn claims(&self, source: usize, node: &str) -> bool {
        self.by_node.get(node) == Some(&source)
    }

    /// The nodes no source serves.
    pub(super) fn unserved<'a>(&self, nodes: &'a [NodeTasks]) -> Vec<&'a str> {
        nodes
            .iter()
            .map(|n| n.node_id.as_str())
            .filter(|node| !self.by_node.contains_key(*node))
            .collect()
    }
}

/// The lines of a chunk from `source` that it may give, for the CLI.
pub(super) fn lines_of(
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
pub(super) const NEW_TASKS_SETTLE: Duration = Duration::from_millis(200);

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
pub(super) async fn ask_manager(
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
        failed => {
            match failed {
                Ok(Err(status)) => {
                    tracing::debug!(manager = %remote.address, reason = status.message(), "no logs from this manager");
                }
                _ => tracing::debug!(manager = %remote.address, "no answer about logs in time"),
            }
            // It serves no node: theirs are reported unavailable unless another does.
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
