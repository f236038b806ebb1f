use swarm_api::spec::ServiceSpec;
use swarm_api::state::Object;
use swarm_api::task::{DesiredState, TaskStatus};

use super::node::answer;
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
    let stack = swarm_controller::stack::load(
        &swarm_controller::source::WorkTree,
        &path,
        "s.yaml",
        &|_| None,
    );
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
        networks: Vec::new(),
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
