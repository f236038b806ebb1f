//! The server on loopback, asked by a real UDP (and TCP) client.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, RecordType};
use swarm_api::endpoints::{NetworkEndpoints, NetworkView, ServiceEndpoint, TaskEndpoint};
use swarm_api::spec::EndpointMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;

use super::*;

/// Every wait of these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(5);
const CLIENT: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// `web` (vip 10.0.0.2) with tasks at 10.0.0.11.. (`serving` of them serving), and the
/// asking client's task.
fn view(serving: u8) -> NetworkView {
    let mut tasks: BTreeMap<String, TaskEndpoint> = (1..=3u8)
        .map(|i| {
            let task = TaskEndpoint {
                service_id: "s-web".into(),
                node_id: "n1".into(),
                vtep: None,
                address: Ipv4Addr::new(10, 0, 0, 10 + i),
                name: format!("shop_web.{i}"),
                serving: i <= serving,
            };
            (format!("t-web{i}"), task)
        })
        .collect();
    tasks.insert(
        "t-client".into(),
        TaskEndpoint {
            service_id: "s-client".into(),
            node_id: "n1".into(),
            vtep: None,
            address: Ipv4Addr::new(10, 0, 0, 30),
            name: "shop_client.1".into(),
            serving: true,
        },
    );
    let services = [
        ("s-web", "shop_web", "web", Some(Ipv4Addr::new(10, 0, 0, 2))),
        ("s-client", "shop_client", "client", None),
    ]
    .into_iter()
    .map(|(id, name, alias, vip)| {
        let service = ServiceEndpoint {
            name: name.into(),
            aliases: vec![alias.into()],
            mode: EndpointMode::Vip,
            vip,
        };
        (id.to_owned(), service)
    })
    .collect();
    let network = NetworkEndpoints {
        id: "n".into(),
        vni: 4096,
        subnet: "10.0.0.0/24".parse().unwrap(),
        gateway: Ipv4Addr::new(10, 0, 0, 1),
        internal: false,
        services,
        tasks,
    };
    NetworkView {
        networks: [("shop_default".to_owned(), network)].into_iter().collect(),
        mesh: Default::default(),
    }
}

fn askers() -> BTreeMap<Ipv4Addr, swarm_agent::worker::Asker> {
    [(CLIENT, table::asker("t-client"))].into_iter().collect()
}

fn start(upstream: Vec<SocketAddr>) -> DnsServer {
    DnsServer::start((Ipv4Addr::LOCALHOST, 0).into(), upstream, DNS_PORT).unwrap()
}

fn query(id: u16, name: &str, kind: RecordType) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    message.to_vec().unwrap()
}

async fn ask_udp(server: SocketAddr, name: &str, kind: RecordType) -> Message {
    ask_udp_from(CLIENT, server, name, kind).await
}

/// Asks from `source`, as the task with that address.
async fn ask_udp_from(
    source: Ipv4Addr,
    server: SocketAddr,
    name: &str,
    kind: RecordType,
) -> Message {
    let client = UdpSocket::bind((source, 0)).await.unwrap();
    client
        .send_to(&query(77, name, kind), server)
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let length = tokio::time::timeout(WAIT, client.recv(&mut buffer))
        .await
        .expect("an answer in time")
        .unwrap();
    let answer = Message::from_vec(&buffer[..length]).unwrap();
    assert_eq!(answer.metadata.id, 77);
    answer
}

fn addresses(message: &Message) -> Vec<Ipv4Addr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(address)) => Some(*address),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_task_resolves_names_over_udp_and_tcp() {
    let server = start(vec![]);
    server.set_table(Table::new(&view(2), &askers()));
    let address = server.local_addr();

    let web = ask_udp(address, "web.", RecordType::A).await;
    assert_eq!(web.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&web), [Ipv4Addr::new(10, 0, 0, 2)]);
    let tasks = ask_udp(address, "tasks.shop_web.", RecordType::A).await;
    assert_eq!(
        addresses(&tasks),
        [Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 12)]
    );

    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(address))
        .await
        .unwrap()
        .unwrap();
    // Two questions on one connection.
    for id in [1u16, 2] {
        let query = query(id, "tasks.web.", RecordType::A);
        stream
            .write_all(&(query.len() as u16).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&query).await.unwrap();
        let mut length = [0u8; 2];
        tokio::time::timeout(WAIT, stream.read_exact(&mut length))
            .await
            .unwrap()
            .unwrap();
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
        stream.read_exact(&mut answer).await.unwrap();
        let answer = Message::from_vec(&answer).unwrap();
        assert_eq!(answer.metadata.id, id);
        assert_eq!(addresses(&answer).len(), 2);
    }
}

#[tokio::test]
async fn answers_follow_the_view_and_the_askers() {
    let server = start(vec![]);
    let (view_tx, view_rx) = watch::channel(view(1));
    let (askers_tx, askers_rx) = watch::channel(BTreeMap::new());
    let address = server.local_addr();
    let following = async {
        // Not a task of the node yet: refused.
        let refused = ask_udp(address, "web.", RecordType::A).await;
        assert_eq!(refused.metadata.response_code, ResponseCode::Refused);

        askers_tx.send_replace(askers());
        let one = eventually(address, |m| addresses(m).len() == 1).await;
        assert_eq!(addresses(&one), [Ipv4Addr::new(10, 0, 0, 11)]);

        view_tx.send_replace(view(3));
        let three = eventually(address, |m| addresses(m).len() == 3).await;
        assert_eq!(addresses(&three)[2], Ipv4Addr::new(10, 0, 0, 13));
    };
    tokio::select! {
        _ = follow(&server, view_rx, askers_rx) => panic!("follow ended while its senders live"),
        _ = following => {}
    }
}

/// Asks `tasks.web` until `done` holds of the answer (each change applies within 1 s).
async fn eventually(address: SocketAddr, done: impl Fn(&Message) -> bool) -> Message {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let answer = ask_udp(address, "tasks.web.", RecordType::A).await;
        if done(&answer) {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "last answer {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A resolver on `resolver` that answers every question with `address`.
fn answer_every_question(resolver: UdpSocket, address: Ipv4Addr) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 4096];
        loop {
            let (length, peer) = resolver.recv_from(&mut buffer).await.unwrap();
            let question = Message::from_vec(&buffer[..length]).unwrap();
            let mut answer = Message::response(question.metadata.id, question.metadata.op_code);
            let name = question.queries[0].name().clone();
            answer.add_queries(question.queries.clone());
            answer.add_answer(hickory_proto::rr::Record::from_rdata(
                name,
                60,
                RData::A(A(address)),
            ));
            resolver
                .send_to(&answer.to_vec().unwrap(), peer)
                .await
                .unwrap();
        }
    })
}

#[tokio::test]
async fn unknown_names_go_to_the_nodes_resolvers() {
    let resolver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let resolver_address = resolver.local_addr().unwrap();
    let answering = answer_every_question(resolver, Ipv4Addr::new(192, 0, 2, 7));
    // The first resolver refuses (nothing listens there), the second answers.
    let closed = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let closed_address = closed.local_addr().unwrap();
    drop(closed);
    let server = start(vec![closed_address, resolver_address]);
    server.set_table(Table::new(&view(1), &askers()));
    let forwarded = ask_udp(server.local_addr(), "example.com.", RecordType::A).await;
    assert_eq!(addresses(&forwarded), [Ipv4Addr::new(192, 0, 2, 7)]);
    assert_eq!(forwarded.queries[0].name().to_ascii(), "example.com.");
    answering.abort();
}

#[tokio::test]
async fn a_node_without_resolvers_answers_servfail_at_once() {
    let server = start(vec![]);
    server.set_table(Table::new(&view(1), &askers()));
    let started = std::time::Instant::now();
    let failed = ask_udp(server.local_addr(), "example.com.", RecordType::A).await;
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_nodes_resolvers_come_from_its_resolv_conf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    std::fs::write(
        &path,
        "nameserver 127.0.0.53\nnameserver 2001:db8::1\nsearch x\n",
    )
    .unwrap();
    let resolvers: Vec<String> = node_resolvers(&path)
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(resolvers, ["127.0.0.53:53", "[2001:db8::1]:53"]);
    assert!(node_resolvers(&dir.path().join("missing")).is_empty());
}

#[tokio::test]
async fn the_server_binds_an_address_the_host_does_not_have_yet() {
    // A documentation address (TEST-NET-3) no interface carries: the node's bridge
    // address before the bridge is up.
    let server =
        DnsServer::start((Ipv4Addr::new(203, 0, 113, 53), 0).into(), vec![], DNS_PORT).unwrap();
    assert_eq!(server.local_addr().ip(), Ipv4Addr::new(203, 0, 113, 53));
}

#[tokio::test]
async fn a_node_serves_on_its_gateway_once_its_subnet_is_known() {
    let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (subnet_tx, subnet_rx) = watch::channel(None);
    let (_view_tx, view_rx) = watch::channel(view(2));
    let (_askers_tx, askers_rx) = watch::channel(askers());
    let serving = tokio::spawn(serve_node(subnet_rx, port, view_rx, askers_rx));
    // 127.0.0.0/8's gateway is 127.0.0.1, an address loopback has.
    subnet_tx.send_replace(Some("127.0.0.0/8".parse().unwrap()));
    let address: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
    // Asked again every 100 ms: a question sent before the server binds is lost.
    let client = UdpSocket::bind((CLIENT, 0)).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    let answer = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer on the gateway"
        );
        client
            .send_to(&query(9, "web.", RecordType::A), address)
            .await
            .unwrap();
        let received = tokio::time::timeout(Duration::from_millis(100), client.recv(&mut buffer));
        if let Ok(Ok(length)) = received.await {
            break Message::from_vec(&buffer[..length]).unwrap();
        }
    };
    assert_eq!(addresses(&answer), [Ipv4Addr::new(10, 0, 0, 2)]);
    serving.abort();
}

#[tokio::test]
async fn a_silent_resolver_is_given_up_on_after_the_forward_timeout() {
    // Takes questions, never answers.
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let server = start(vec![silent.local_addr().unwrap()]);
    server.set_table(Table::new(&view(1), &askers()));
    let started = std::time::Instant::now();
    let failed = ask_udp(server.local_addr(), "example.com.", RecordType::A).await;
    let waited = started.elapsed();
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
    assert!(
        waited >= FORWARD_TIMEOUT - Duration::from_millis(50) && waited < FORWARD_TIMEOUT * 2,
        "{waited:?}"
    );
    // The question did reach it.
    let mut buffer = [0u8; 512];
    assert!(silent.try_recv(&mut buffer).is_ok());
}

#[tokio::test]
async fn a_question_over_tcp_is_forwarded_over_tcp() {
    let resolver = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let resolver_address = resolver.local_addr().unwrap();
    let answering = tokio::spawn(async move {
        let (mut stream, _) = resolver.accept().await.unwrap();
        let mut length = [0u8; 2];
        stream.read_exact(&mut length).await.unwrap();
        let mut question = vec![0u8; usize::from(u16::from_be_bytes(length))];
        stream.read_exact(&mut question).await.unwrap();
        let question = Message::from_vec(&question).unwrap();
        let mut answer = Message::response(question.metadata.id, question.metadata.op_code);
        answer.add_queries(question.queries.clone());
        answer.add_answer(hickory_proto::rr::Record::from_rdata(
            question.queries[0].name().clone(),
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 8))),
        ));
        let answer = answer.to_vec().unwrap();
        stream
            .write_all(&(answer.len() as u16).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&answer).await.unwrap();
    });
    let server = start(vec![resolver_address]);
    server.set_table(Table::new(&view(1), &askers()));
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let question = query(5, "example.org.", RecordType::A);
    stream
        .write_all(&(question.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&question).await.unwrap();
    let mut length = [0u8; 2];
    tokio::time::timeout(WAIT, stream.read_exact(&mut length))
        .await
        .unwrap()
        .unwrap();
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut answer).await.unwrap();
    let answer = Message::from_vec(&answer).unwrap();
    assert_eq!(answer.metadata.id, 5);
    assert_eq!(addresses(&answer), [Ipv4Addr::new(192, 0, 2, 8)]);
    answering.await.unwrap();
}

/// A task whose service names nameservers has its unknown names forwarded to them, over
/// UDP and TCP; another task on the node keeps the node's resolvers; a silent one is given
/// up on after the same timeout as the node's.
#[tokio::test]
async fn a_tasks_own_nameservers_answer_its_unknown_names() {
    let node_resolver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let node_resolver_address = node_resolver.local_addr().unwrap();
    let node_answers = answer_every_question(node_resolver, Ipv4Addr::new(192, 0, 2, 7));
    // The service's nameserver, on another loopback address at a port of its own, which
    // the server is told is the port of services' nameservers (53 on a node).
    let own_resolver = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 2), 0))
        .await
        .unwrap();
    let port = own_resolver.local_addr().unwrap().port();
    let own_answers = answer_every_question(own_resolver, Ipv4Addr::new(198, 51, 100, 9));
    let own_tcp = tokio::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), port))
        .await
        .unwrap();
    // Another service's nameserver takes questions and never answers.
    let _silent_resolver = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 5), port))
        .await
        .unwrap();

    let server = DnsServer::start(
        (Ipv4Addr::LOCALHOST, 0).into(),
        vec![node_resolver_address],
        port,
    )
    .unwrap();
    // The client's service names the nameserver; another task's does not.
    let plain = Ipv4Addr::new(127, 0, 0, 3);
    let silent = Ipv4Addr::new(127, 0, 0, 4);
    let mut askers = askers();
    for (address, task, nameservers) in [
        (CLIENT, "t-client", vec![Ipv4Addr::new(127, 0, 0, 2).into()]),
        (plain, "t-plain", vec![]),
        (silent, "t-silent", vec![Ipv4Addr::new(127, 0, 0, 5).into()]),
    ] {
        let asker = swarm_agent::worker::Asker {
            task_id: task.into(),
            nameservers,
        };
        askers.insert(address, asker);
    }
    server.set_table(Table::new(&view(1), &askers));
    let address = server.local_addr();

    let own = ask_udp(address, "example.com.", RecordType::A).await;
    assert_eq!(addresses(&own), [Ipv4Addr::new(198, 51, 100, 9)]);
    let node = ask_udp_from(plain, address, "example.com.", RecordType::A).await;
    assert_eq!(addresses(&node), [Ipv4Addr::new(192, 0, 2, 7)]);
    // The cluster's names are still the node's server's to answer.
    let web = ask_udp(address, "web.", RecordType::A).await;
    assert_eq!(addresses(&web), [Ipv4Addr::new(10, 0, 0, 2)]);

    // Over TCP the question goes to the service's nameserver over TCP.
    let accepted = tokio::spawn(async move {
        let (stream, peer) = own_tcp.accept().await.unwrap();
        drop(stream);
        peer
    });
    let client = tokio::net::TcpSocket::new_v4().unwrap();
    client.bind((CLIENT, 0).into()).unwrap();
    let mut stream = client.connect(address).await.unwrap();
    let question = query(6, "example.org.", RecordType::A);
    stream
        .write_all(&(question.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&question).await.unwrap();
    let peer = tokio::time::timeout(WAIT, accepted).await.unwrap().unwrap();
    assert!(peer.ip().is_loopback(), "{peer}");

    let started = std::time::Instant::now();
    let failed = ask_udp_from(silent, address, "example.com.", RecordType::A).await;
    let waited = started.elapsed();
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
    assert!(
        waited >= FORWARD_TIMEOUT - Duration::from_millis(50) && waited < FORWARD_TIMEOUT * 2,
        "{waited:?}"
    );
    node_answers.abort();
    own_answers.abort();
}
