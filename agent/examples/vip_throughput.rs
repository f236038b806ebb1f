//! HTTP requests per second through a virtual IP against the same client to the task's
//! address directly, on two test hosts (root). `cargo run -p swarm-agent --example
//! vip_throughput [seconds per run] [runs]`.
//!
//! Two `swarm_testkit::Hosts` carry one overlay network (`Overlay::reconcile`) and its
//! VIP (`Vips::reconcile`, the nftables DNAT; `SocketBalancer`, the eBPF connect hook
//! ahead of it) from a desired state. A client task on host 0; nginx (one process,
//! `return 200`) in a backend task on host 0 (local) and one on host 1 (remote). For each
//! backend, the VIP balances over that backend alone, so every path ends at the same
//! server: `wrk` (keep-alive) and `ab` (a new connection per request) run from the
//! client's namespace against the task's address, against the VIP through the DNAT (the
//! client not registered with the socket balancer), through the socket balancer, and
//! against the task's address again on another port (a control: what two identical paths
//! differ by on this machine), alternating run by run so all see the same machine load;
//! medians are printed. Then a
//! paced probe (1,000 new connections a second, timed in nanoseconds) gives the direct
//! and the socket-balanced paths' p50 and p99 latency.

mod support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use swarm_agent::network::{
    LocalEndpoint, NetworkVips, NodeOverlays, NodeVips, Overlay, OverlayNetwork, RemoteEndpoint,
    SocketBalancer, SocketVips, VXLAN_PORT, Vips, Vtep, netns_cookie,
};
use swarm_testkit::Hosts;

use support::{Tasks, ab, in_namespace, median, print_latency, wrk};

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(5, |a| a.parse().unwrap());
    let runs: usize = args.next().map_or(3, |a| a.parse().unwrap());
    let hosts = Hosts::create("vipb", 2).unwrap();
    let mut tasks = Tasks::new("swvipb");
    let netns = |i: usize| PathBuf::from(format!("/var/run/netns/{}", hosts.namespace(i)));
    let vteps = [0, 1].map(|i| Vtep {
        address: hosts.address(i),
        port: VXLAN_PORT,
    });
    let addr = |last: u8| Ipv4Addr::new(10, 216, 1, last);
    let (vip, client, local, remote) = (addr(2), addr(10), addr(20), addr(21));
    let subnet = "10.216.1.0/24".parse().unwrap();
    let (client_ns, local_ns, remote_ns) = (tasks.add("c"), tasks.add("l"), tasks.add("r"));
    let nodes = ["vipb-node-0", "vipb-node-1"];
    let mut overlays = nodes.map(Overlay::new);
    let mut vips = nodes.map(Vips::new);
    for (i, overlay) in overlays.iter_mut().enumerate() {
        let mut network = OverlayNetwork {
            vni: 4097,
            subnet,
            vtep: vteps[i],
            local: BTreeMap::new(),
            remote: BTreeMap::new(),
        };
        let endpoint = |address, netns: &Path| LocalEndpoint {
            address,
            netns: netns.to_owned(),
        };
        if i == 0 {
            network
                .local
                .insert("c".into(), endpoint(client, &client_ns));
            network.local.insert("l".into(), endpoint(local, &local_ns));
            network
                .remote
                .insert(remote, RemoteEndpoint { vtep: vteps[1] });
        } else {
            network
                .local
                .insert("r".into(), endpoint(remote, &remote_ns));
            for address in [client, local] {
                network
                    .remote
                    .insert(address, RemoteEndpoint { vtep: vteps[0] });
            }
        }
        let state = NodeOverlays {
            networks: [("net-b".to_owned(), network)].into(),
        };
        in_namespace(&netns(i), || overlay.reconcile(state)).unwrap();
    }
    tasks.serve(&local_ns, "local", local);
    tasks.serve(&remote_ns, "remote", remote);
    std::thread::sleep(std::time::Duration::from_millis(500));

    let mut balancer = SocketBalancer::attach().unwrap();
    let client_cookie = netns_cookie(&client_ns).unwrap();
    println!("{seconds} s per run, {runs} runs per path, medians (req/s)");
    println!(
        "| backend | client | direct | VIP, DNAT | VIP, socket | direct again | DNAT / direct | \
         socket / direct | again / direct |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, backend) in [("remote (host 1)", remote), ("local (host 0)", local)] {
        let desired = NodeVips {
            networks: [(
                "net-b".to_owned(),
                NetworkVips {
                    vni: 4097,
                    subnet,
                    vips: [(vip, vec![backend])].into(),
                    endpoints: [client, local, remote].into(),
                    local_tasks: Default::default(),
                },
            )]
            .into(),
        };
        for (i, vips) in vips.iter_mut().enumerate() {
            in_namespace(&netns(i), || vips.reconcile(desired.clone())).unwrap();
        }
        // The socket balancer with the client registered, or not (its connections then
        // take the DNAT).
        let mut balance = |sockets: bool| {
            let members = if sockets {
                [(client_cookie, 4097)].into()
            } else {
                Default::default()
            };
            balancer
                .reconcile(SocketVips {
                    services: [(vip, (4097, vec![backend]))].into(),
                    members,
                })
                .unwrap();
        };
        let direct_url = format!("http://{backend}:8080/");
        // Other ports than the direct runs': the server keeps TIME_WAIT sockets of the
        // direct connections, whose sequence numbers and timestamps the client chose for the
        // task's address; a SYN to the VIP reusing a client port, DNAT'ed to the same
        // 4-tuple, would be taken for an old duplicate (a 1 s retransmit). One client
        // talking to a server both ways at once is the benchmark's doing, not a service's.
        // The same between the DNAT's and the socket balancer's runs.
        let (dnat_url, socket_url, again_url) = (
            format!("http://{vip}:8081/"),
            format!("http://{vip}:8084/"),
            format!("http://{backend}:8085/"),
        );
        for (tool, measure) in [
            (
                "wrk -t1 -c32 (keep-alive)",
                wrk as fn(Option<&Path>, &str, u64) -> f64,
            ),
            ("ab -c32 (new connection)", ab),
        ] {
            let [mut direct, mut dnat, mut socket, mut again]: [Vec<f64>; 4] = Default::default();
            for _ in 0..runs {
                direct.push(measure(Some(&client_ns), &direct_url, seconds));
                balance(false);
                dnat.push(measure(Some(&client_ns), &dnat_url, seconds));
                balance(true);
                socket.push(measure(Some(&client_ns), &socket_url, seconds));
                again.push(measure(Some(&client_ns), &again_url, seconds));
            }
            let [d, n, s, a] = [direct, dnat, socket, again].map(median);
            println!(
                "| {name} | {tool} | {d:.0} | {n:.0} | {s:.0} | {a:.0} | {:.2} | {:.2} | {:.2} |",
                n / d,
                s / d,
                a / d
            );
        }
        print_latency(
            name,
            Some(&client_ns),
            [(backend, 8080).into(), (vip, 8084).into()],
            "VIP (socket)",
            seconds,
            runs,
        );
    }
    drop(balancer);
    for i in 0..2 {
        in_namespace(&netns(i), || vips[i].teardown()).unwrap();
        in_namespace(&netns(i), || overlays[i].teardown()).unwrap();
    }
}
