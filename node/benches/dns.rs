//! The node's DNS server against dnsmasq (Debian's dnsmasq-base, answering the same names
//! from an addn-hosts file), on loopback, in the same run:
//!
//! - building the table of 1,000 services × 3 tasks (what a change of the view costs);
//! - a service name asked at 5,000 questions/s, open loop (sent on a fixed schedule,
//!   whatever the answers do): p50, p99, p99.9 and max from send to answer;
//! - the most questions/s with 32 in flight (closed loop), for 3 s.
//!
//! Both servers run at once and take turns, round by round (3 rounds), so a loaded
//! machine weighs on both alike. One client thread sends, one receives, on one UDP
//! socket. The peer is skipped with a
//! message when dnsmasq is not installed (`apt-get install -y dnsmasq-base`).
//!
//!     cargo bench -p swarm-node --bench dns
//!
//! Target (issue 12): p99 ≤ 1 ms for a service name at 5,000 questions/s; 1,000 services
//! × 3 tasks programmed within 1 s.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, RecordType};
use swarm_api::endpoints::{NetworkEndpoints, NetworkView, ServiceEndpoint, TaskEndpoint};
use swarm_api::spec::EndpointMode;
use swarm_node::dns::{DNS_PORT, DnsServer, Table};

const SERVICES: u32 = 1_000;
const TASKS_PER_SERVICE: u32 = 3;
const RATE: u64 = 5_000;
const OPEN_LOOP_QUESTIONS: usize = 25_000;
const IN_FLIGHT: usize = 32;
const CLOSED_LOOP_TIME: Duration = Duration::from_secs(3);
/// An answer later than this after the last question is counted lost.
const LATE: Duration = Duration::from_secs(1);
const TABLE_BUILDS: usize = 20;
/// The service asked for, in the middle of the table.
const ASKED: u32 = 500;
const ROUNDS: usize = 3;

fn main() {
    let view = view();
    let client = swarm_agent::worker::Asker {
        task_id: "t-client".to_owned(),
        nameservers: Vec::new(),
    };
    let askers: BTreeMap<Ipv4Addr, _> = [(Ipv4Addr::LOCALHOST, client)].into_iter().collect();
    let mut builds: Vec<Duration> = (0..TABLE_BUILDS)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(Table::new(&view, &askers));
            started.elapsed()
        })
        .collect();
    builds.sort();
    println!(
        "table of {SERVICES} services x {TASKS_PER_SERVICE} tasks: built in {:.2} ms (median of {TABLE_BUILDS}), max {:.2} ms",
        ms(builds[TABLE_BUILDS / 2]),
        ms(builds[TABLE_BUILDS - 1])
    );

    // The daemon's runtime: tokio's multi-thread scheduler, one worker per core.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = {
        let _entered = runtime.enter();
        DnsServer::start((Ipv4Addr::LOCALHOST, 0).into(), vec![], DNS_PORT).unwrap()
    };
    server.set_table(Table::new(&view, &askers));
    let dnsmasq = Dnsmasq::start();
    let mut peers = vec![("swarm", server.local_addr())];
    match &dnsmasq {
        Some(dnsmasq) => peers.push(("dnsmasq", dnsmasq.address)),
        None => eprintln!("SKIPPED the dnsmasq peer: install dnsmasq-base"),
    }
    for (peer, address) in &peers {
        assert_eq!(
            ask_once(*address),
            Some(vec![vip(ASKED)]),
            "{peer} answers svc{ASKED} with its VIP"
        );
    }
    for round in 1..=ROUNDS {
        println!("round {round}");
        for (peer, address) in &peers {
            open_loop(peer, *address);
        }
        for (peer, address) in &peers {
            closed_loop(peer, *address);
        }
    }
}

fn vip(service: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 0)) + service)
}

fn task_address(service: u32, task: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 65, 0, 0)) + service * TASKS_PER_SERVICE + task)
}

/// One network: `bench_svcN` (alias `svcN`, a VIP) with 3 serving tasks each, and the
/// asking client.
fn view() -> NetworkView {
    let mut services = BTreeMap::new();
    let mut tasks = BTreeMap::new();
    for s in 0..SERVICES {
        services.insert(
            format!("s{s}"),
            ServiceEndpoint {
                name: format!("bench_svc{s}"),
                aliases: vec![format!("svc{s}")],
                mode: EndpointMode::Vip,
                vip: Some(vip(s)),
            },
        );
        for t in 0..TASKS_PER_SERVICE {
            tasks.insert(
                format!("t{s}-{t}"),
                TaskEndpoint {
                    service_id: format!("s{s}"),
                    node_id: "n1".into(),
                    vtep: None,
                    address: task_address(s, t),
                    name: format!("bench_svc{s}.{}", t + 1),
                    serving: true,
                },
            );
        }
    }
    services.insert(
        "s-client".into(),
        ServiceEndpoint {
            name: "bench_client".into(),
            aliases: vec!["client".into()],
            mode: EndpointMode::Vip,
            vip: Some(Ipv4Addr::new(10, 66, 0, 2)),
        },
    );
    tasks.insert(
        "t-client".into(),
        TaskEndpoint {
            service_id: "s-client".into(),
            node_id: "n1".into(),
            vtep: None,
            address: Ipv4Addr::new(10, 66, 0, 3),
            name: "bench_client.1".into(),
            serving: true,
        },
    );
    let network = NetworkEndpoints {
        id: "net".into(),
        vni: 4096,
        subnet: "10.64.0.0/10".parse().unwrap(),
        gateway: Ipv4Addr::new(10, 64, 0, 1),
        internal: false,
        services,
        tasks,
    };
    NetworkView {
        networks: [("bench_default".to_owned(), network)]
            .into_iter()
            .collect(),
        mesh: Default::default(),
    }
}

/// The same names as an addn-hosts file: each VIP with the service's names, each task's
/// address with `tasks.` names and its display name.
fn hosts_file() -> String {
    let mut hosts = String::new();
    for s in 0..SERVICES {
        hosts.push_str(&format!("{} bench_svc{s} svc{s}\n", vip(s)));
        for t in 0..TASKS_PER_SERVICE {
            hosts.push_str(&format!(
                "{} tasks.bench_svc{s} tasks.svc{s} bench_svc{s}.{}\n",
                task_address(s, t),
                t + 1
            ));
        }
    }
    hosts
}

struct Dnsmasq {
    child: Child,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    fn start() -> Option<Dnsmasq> {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, hosts_file()).unwrap();
        let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--pid-file=",
                "--user=root",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let dnsmasq = Dnsmasq {
            child,
            address: (Ipv4Addr::LOCALHOST, port).into(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while ask_once(dnsmasq.address).is_none() {
            assert!(Instant::now() < deadline, "dnsmasq did not answer in 5 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(dnsmasq)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The question, with its id in its first two bytes.
fn question() -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 0;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(
        Name::from_ascii(format!("svc{ASKED}.")).unwrap(),
        RecordType::A,
    ));
    message.to_vec().unwrap()
}

fn with_id(question: &[u8], id: u16) -> Vec<u8> {
    let mut question = question.to_vec();
    question[..2].copy_from_slice(&id.to_be_bytes());
    question
}

/// One question and its answer's addresses, `None` without an answer in 200 ms.
fn ask_once(server: SocketAddr) -> Option<Vec<Ipv4Addr>> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    socket.send_to(&with_id(&question(), 1), server).ok()?;
    let mut buffer = [0u8; 1500];
    let length = socket.recv(&mut buffer).ok()?;
    let answer = Message::from_vec(&buffer[..length]).ok()?;
    (answer.metadata.response_code == ResponseCode::NoError).then(|| {
        answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(A(address)) => Some(*address),
                _ => None,
            })
            .collect()
    })
}

fn open_loop(peer: &str, server: SocketAddr) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket.connect(server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let receiver = socket.try_clone().unwrap();
    let question = question();
    let start = Instant::now();
    // When each question left, in ns since `start` (0: not yet).
    let sent: Arc<Vec<AtomicU64>> = Arc::new(
        (0..OPEN_LOOP_QUESTIONS)
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let period = Duration::from_nanos(1_000_000_000 / RATE);
    let sender = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            for i in 0..OPEN_LOOP_QUESTIONS {
                let due = start + period * i as u32;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let bytes = with_id(&question, i as u16);
                sent[i].store(start.elapsed().as_nanos() as u64, Ordering::Release);
                socket.send(&bytes).unwrap();
            }
            start.elapsed()
        })
    };
    let mut latencies = Vec::with_capacity(OPEN_LOOP_QUESTIONS);
    let mut buffer = [0u8; 1500];
    let mut last_answer = Instant::now();
    while latencies.len() < OPEN_LOOP_QUESTIONS {
        match receiver.recv(&mut buffer) {
            Ok(length) if length >= 2 => {
                let received = start.elapsed().as_nanos() as u64;
                let id = usize::from(u16::from_be_bytes([buffer[0], buffer[1]]));
                let sent_at = sent[id].load(Ordering::Acquire);
                latencies.push(Duration::from_nanos(received - sent_at));
                last_answer = Instant::now();
            }
            _ => {
                if sender.is_finished() && last_answer.elapsed() > LATE {
                    break;
                }
            }
        }
    }
    let sending = sender.join().unwrap();
    let lost = OPEN_LOOP_QUESTIONS - latencies.len();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{peer:8} open loop: {OPEN_LOOP_QUESTIONS} questions at {:.0}/s, {lost} lost; p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        OPEN_LOOP_QUESTIONS as f64 / sending.as_secs_f64(),
        ms(at(0.50)),
        ms(at(0.99)),
        ms(at(0.999)),
        ms(latencies[latencies.len() - 1]),
    );
}

fn closed_loop(peer: &str, server: SocketAddr) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket.connect(server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let question = question();
    let mut id = 0u16;
    let mut send = |socket: &UdpSocket| {
        id = id.wrapping_add(1);
        socket.send(&with_id(&question, id)).unwrap();
    };
    for _ in 0..IN_FLIGHT {
        send(&socket);
    }
    let (mut answered, mut lost) = (0u64, 0u64);
    let mut buffer = [0u8; 1500];
    let start = Instant::now();
    while start.elapsed() < CLOSED_LOOP_TIME {
        match socket.recv(&mut buffer) {
            Ok(_) => answered += 1,
            // A question lost: put another in flight in its place.
            Err(_) => lost += 1,
        }
        send(&socket);
    }
    let rate = answered as f64 / start.elapsed().as_secs_f64();
    println!(
        "{peer:8} closed loop, {IN_FLIGHT} in flight: {rate:.0} questions/s ({lost} timeouts)"
    );
    std::io::stdout().flush().unwrap();
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
