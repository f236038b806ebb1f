//! HTTP requests per second through the routing mesh against the same client to the task
//! directly, and against HAProxy forwarding to the same task, on two test hosts (root).
//! `cargo run -p swarm-agent --example mesh_throughput [seconds per run] [runs]`.
//!
//! Two `swarm_testkit::Hosts`, each a node: its bridge (`Bridge::setup`) with one task
//! namespace running nginx (one process, `return 200`), and its mesh set by
//! `Mesh::reconcile` from a desired state, as a daemon sets it. The client is the machine
//! itself (the hosts' gateway), as a user outside the cluster: it reaches a task directly by
//! a route through its host, or through host 0's published port, which the mesh sends to
//! the task on host 0 (local) or through host 1 (remote). `wrk`
//! (keep-alive) and `ab` (a new connection per request) alternate between the paths run by
//! run so all see the same machine load; medians are printed. HAProxy 2.6 in TCP mode on
//! host 0 forwarding to host 1's task is the peer. Then a paced probe (1,000 new
//! connections a second, timed in nanoseconds) gives the added latency, and `ab -c 1000` the mesh under 1,000 concurrent short connections
//! (the same against the task directly, as a control of the tool and the machine), then
//! `wrk -t2 -c1000` with a new connection per request (two client threads: `ab` holds one
//! core, and at 1,000 sockets that core is the limit, with or without the mesh).
//! Last, a port with the PROXY protocol (the mesh's userspace path, `Proxies`, run in host
//! 0's namespace) against HAProxy with `send-proxy-v2`, both to host 1's task's nginx
//! taking the header.

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use swarm_agent::network::{Bridge, Ipv4Net, Mesh, MeshNodes, MeshPort, NodeMesh, Proxies};
use swarm_api::spec::{Protocol, PublishMode};
use swarm_testkit::Hosts;

use support::{Tasks, ab, ab_concurrent, in_namespace, median, print_latency, wrk, wrk_with};

const PUBLISHED: u16 = 8080;
const HAPROXY_PORT: u16 = 9000;
/// The published port with the PROXY protocol, and HAProxy's with `send-proxy-v2`.
const PROXIED: u16 = 8443;
const HAPROXY_PROXIED_PORT: u16 = 9443;

/// `ip -batch` of `script` in `netns`.
fn ip(netns: &Path, script: &str) {
    use std::io::Write;
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ip -batch: {script}");
}

/// Puts task namespace `task` on the bridge of node `node_id` in `host` at `address`.
fn attach(host: &Path, node_id: &str, task: &Path, address: Ipv4Addr, gateway: Ipv4Addr) {
    let name = task.file_name().unwrap().to_str().unwrap();
    let veth = format!("v{}", &name[name.len().saturating_sub(12)..]);
    let bridge = swarm_agent::network::bridge_name(node_id);
    ip(
        host,
        &format!(
            "link add {veth} type veth peer name eth0 netns {name}\n\
             link set {veth} master {bridge} up\n"
        ),
    );
    ip(
        task,
        &format!(
            "address add {address}/24 dev eth0\nlink set eth0 up\n\
             route add default via {gateway}\n"
        ),
    );
}

/// HAProxy (TCP mode, one process) in `host` on `listen:HAPROXY_PORT` → `server:8080`, and
/// with `send-proxy-v2` → `server:8083` (not the mesh's 8082: both connect from host 0's
/// address, and a task's TIME_WAIT socket of one would meet the other's reused port).
fn haproxy(host: &Path, dir: &Path, listen: Ipv4Addr, server: Ipv4Addr) -> Child {
    let config = dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n  maxconn 8000\n  nbthread 1\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend f\n  bind {listen}:{HAPROXY_PORT}\n  default_backend b\n\
             backend b\n  server s1 {server}:8080\n\
             frontend fp\n  bind {listen}:{HAPROXY_PROXIED_PORT}\n  default_backend bp\n\
             backend bp\n  server s1 {server}:8083 send-proxy-v2\n"
        ),
    )
    .unwrap();
    Command::new("nsenter")
        .arg(format!("--net={}", host.display()))
        .args(["haproxy", "-db", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// A port's backends for clients and for what other nodes send.
type Backends = (Vec<(Ipv4Addr, u16)>, Vec<(Ipv4Addr, u16)>);

/// The mesh of one node: `PUBLISHED` to `backends` (`local` for what other nodes send),
/// and `PROXIED` (the userspace path) to `proxied` and `proxied_local`.
fn ports((backends, local): Backends, (proxied, proxied_local): Backends) -> NodeMesh {
    let port = |published, backends, local, proxy_protocol| {
        (
            (Protocol::Tcp, published),
            MeshPort {
                service: "bench".into(),
                mode: PublishMode::Ingress,
                backends,
                local,
                proxy_protocol,
                taken: false,
            },
        )
    };
    NodeMesh {
        nodes: None,
        ports: [
            port(PUBLISHED, backends, local, false),
            port(PROXIED, proxied, proxied_local, true),
        ]
        .into(),
    }
}

/// The userspace path of host `netns`, run on a thread of that namespace (its sockets,
/// listening and connecting, are the namespace's): each map sent sets its listeners.
fn proxies_in(netns: PathBuf) -> mpsc::Sender<BTreeMap<u16, Vec<SocketAddrV4>>> {
    let (sender, receiver) = mpsc::channel::<BTreeMap<u16, Vec<SocketAddrV4>>>();
    std::thread::spawn(move || {
        in_namespace(&netns, move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut proxies = Proxies::default();
                let (changes, mut desired) = tokio::sync::mpsc::unbounded_channel();
                std::thread::spawn(move || {
                    while let Ok(map) = receiver.recv() {
                        if changes.send(map).is_err() {
                            return;
                        }
                    }
                });
                while let Some(map) = desired.recv().await {
                    let failed = proxies.set(&map);
                    assert!(failed.is_empty(), "{failed:?}");
                }
            });
        });
    });
    sender
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(5, |a| a.parse().unwrap());
    let runs: usize = args.next().map_or(3, |a| a.parse().unwrap());
    let hosts = Hosts::create("meshb", 2).unwrap();
    let mut tasks = Tasks::new("swmeshb");
    let netns = |i: usize| PathBuf::from(format!("/var/run/netns/{}", hosts.namespace(i)));
    let nodes = ["meshb-node-0", "meshb-node-1"];
    let subnet = |i: u8| -> Ipv4Net { format!("10.217.{i}.0/24").parse().unwrap() };
    let gateway = |i: u8| Ipv4Addr::new(10, 217, i, 1);
    let (local, remote) = (Ipv4Addr::new(10, 217, 0, 20), Ipv4Addr::new(10, 217, 1, 20));
    let (local_ns, remote_ns) = (tasks.add("l"), tasks.add("r"));
    let mut bridges = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let gw = Ipv4Net::new(gateway(i as u8), 24).unwrap();
        bridges.push(in_namespace(&netns(i), || Bridge::setup(node, gw)).unwrap());
    }
    attach(&netns(0), nodes[0], &local_ns, local, gateway(0));
    attach(&netns(1), nodes[1], &remote_ns, remote, gateway(1));
    tasks.serve(&local_ns, "local", local);
    tasks.serve(&remote_ns, "remote", remote);
    // The client reaches each task directly through its host; host 0 reaches host 1's
    // task (for HAProxy) through host 1.
    for i in 0..2u8 {
        let via = hosts.address(i.into()).to_string();
        let to = subnet(i).to_string();
        let status = Command::new("ip")
            .args(["route", "replace", &to, "via", &via])
            .status()
            .unwrap();
        assert!(status.success());
    }
    ip(
        &netns(0),
        &format!("route replace {} via {}\n", subnet(1), hosts.address(1)),
    );
    let mesh_nodes = |i: usize| MeshNodes {
        own: hosts.address(i),
        others: [hosts.address(1 - i)].into(),
    };
    let mut meshes = nodes.map(Mesh::new);
    // Host 1 answers what host 0 sends with its own task, on the second port (see below),
    // and the PROXY port's connections with nginx's port that takes the header.
    let mut on_1 = ports(
        (vec![(remote, 8081)], vec![(remote, 8081)]),
        (vec![(remote, 8082)], vec![(remote, 8082)]),
    );
    on_1.nodes = Some(mesh_nodes(1));
    let proxies = proxies_in(netns(0));
    in_namespace(&netns(1), || meshes[1].reconcile(on_1)).unwrap();
    let haproxy_dir = tempfile::tempdir().unwrap();
    let mut proxy = haproxy(&netns(0), haproxy_dir.path(), hosts.address(0), remote);
    std::thread::sleep(std::time::Duration::from_millis(500));

    let published = format!("http://{}:{PUBLISHED}/", hosts.address(0));
    println!("{seconds} s per run, {runs} runs per path, medians (req/s)");
    println!("| task | client | direct | through the mesh | ratio | HAProxy | mesh / HAProxy |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (name, backend) in [("local (host 0)", local), ("remote (host 1)", remote)] {
        // The mesh sends to the task's second port: the task keeps TIME_WAIT sockets of the
        // direct runs' connections, which a DNAT'ed SYN reusing a client port would hit.
        let mut on_0 = if backend == local {
            ports(
                (vec![(local, 8081)], vec![(local, 8081)]),
                (vec![(local, 8082)], vec![(local, 8082)]),
            )
        } else {
            ports(
                (vec![(hosts.address(1), PUBLISHED)], Vec::new()),
                (vec![(hosts.address(1), PROXIED)], Vec::new()),
            )
        };
        on_0.nodes = Some(mesh_nodes(0));
        proxies.send(on_0.proxied()).unwrap();
        in_namespace(&netns(0), || meshes[0].reconcile(on_0)).unwrap();
        let direct_url = format!("http://{backend}:8080/");
        let proxy_url = format!("http://{}:{HAPROXY_PORT}/", hosts.address(0));
        for (tool, measure) in [
            (
                "wrk -t1 -c32 (keep-alive)",
                wrk as fn(Option<&Path>, &str, u64) -> f64,
            ),
            ("ab -c32 (new connection)", ab),
        ] {
            let (mut direct, mut through, mut proxied) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                direct.push(measure(None, &direct_url, seconds));
                through.push(measure(None, &published, seconds));
                if backend == remote {
                    proxied.push(measure(None, &proxy_url, seconds));
                }
            }
            let (d, m) = (median(direct), median(through));
            if proxied.is_empty() {
                println!("| {name} | {tool} | {d:.0} | {m:.0} | {:.2} | | |", m / d);
            } else {
                let h = median(proxied);
                println!(
                    "| {name} | {tool} | {d:.0} | {m:.0} | {:.2} | {h:.0} | {:.2} |",
                    m / d,
                    m / h
                );
            }
        }
        print_latency(
            name,
            None,
            [(backend, 8080).into(), (hosts.address(0), PUBLISHED).into()],
            "mesh",
            seconds,
            runs,
        );
        if backend == local {
            // Each tool at 32 and at 1,000 connections, through the mesh and straight to the
            // task: how far the tool and the machine fall at 1,000 without the mesh. `ab`
            // is one thread; `wrk -t2` (Connection: close) is not the limit.
            let ab_at = |url: &str, connections| ab_concurrent(None, url, connections, seconds);
            let wrk_at =
                |url: &str, connections| wrk_with(None, url, 2, connections, seconds, true);
            for (tool, measure) in [
                ("ab", &ab_at as &dyn Fn(&str, usize) -> f64),
                ("wrk -t2 (Connection: close)", &wrk_at),
            ] {
                let [mut peak, mut crowd, mut direct_peak, mut direct_crowd]: [Vec<f64>; 4] =
                    Default::default();
                for _ in 0..runs {
                    peak.push(measure(&published, 32));
                    crowd.push(measure(&published, 1000));
                    direct_peak.push(measure(&direct_url, 32));
                    direct_crowd.push(measure(&direct_url, 1000));
                }
                let [p, c, dp, dc] = [peak, crowd, direct_peak, direct_crowd].map(median);
                println!(
                    "1,000 concurrent new connections through the mesh ({tool} -c1000): {c:.0} \
                     req/s, {:.2}× the mesh at -c32 ({p:.0} req/s); straight to the task: \
                     {dc:.0} req/s, {:.2}× its -c32 ({dp:.0} req/s)",
                    c / p,
                    dc / dp
                );
            }
        }
        if backend == remote {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let proxied_url = format!("http://{}:{PROXIED}/", hosts.address(0));
            let haproxy_url = format!("http://{}:{HAPROXY_PROXIED_PORT}/", hosts.address(0));
            for (tool, measure) in [
                (
                    "wrk -t1 -c32 (keep-alive)",
                    wrk as fn(Option<&Path>, &str, u64) -> f64,
                ),
                ("ab -c32 (new connection)", ab),
            ] {
                let (mut mesh, mut peer) = (Vec::new(), Vec::new());
                for _ in 0..runs {
                    mesh.push(measure(None, &proxied_url, seconds));
                    peer.push(measure(None, &haproxy_url, seconds));
                }
                let (m, h) = (median(mesh), median(peer));
                println!(
                    "PROXY protocol v2, {name}, {tool}: mesh {m:.0} req/s, HAProxy send-proxy-v2 \
                     {h:.0} req/s, {:.2}×",
                    m / h
                );
            }
        }
    }
    let _ = proxy.kill();
    let _ = proxy.wait();
    for i in 0..2u8 {
        let _ = Command::new("ip")
            .args(["route", "del", &subnet(i).to_string()])
            .status();
        in_namespace(&netns(i.into()), || meshes[usize::from(i)].teardown()).unwrap();
    }
    drop(tasks);
    for (i, bridge) in bridges.iter().enumerate() {
        in_namespace(&netns(i), || bridge.teardown()).unwrap();
    }
}
