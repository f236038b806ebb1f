//! How long a node takes to program 1,000 services × 3 tasks into the kernel: the overlay's
//! forwarding entries (`Overlay::reconcile`), the VIPs' ruleset, routes and neighbour
//! entries (`Vips::reconcile`) and the socket balancer's maps (`SocketBalancer`), on one
//! test host (root). `cargo run --release -p
//! swarm-agent --example vip_programming [services] [runs]`.
//!
//! One overlay network (a /16) with one local task; the other `3 × services` tasks run on
//! another node (their VTEP is an address the host does not have: the entries are
//! programmed, nothing is sent). Each run starts from nothing (both torn down) and times
//! the overlay's reconcile, then the VIPs', then the socket balancer's; then one service's
//! tasks change and the VIPs and the balancer are reconciled again (what each later task
//! change costs). Medians are printed, with the
//! number of VIPs the node's nftables table holds as evidence.

// Shared with the throughput benchmarks, which use the rest of it.
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use swarm_agent::network::{
    LocalEndpoint, NetworkVips, NodeOverlays, NodeVips, Overlay, OverlayNetwork, RemoteEndpoint,
    SocketBalancer, SocketVips, VXLAN_PORT, Vips, Vtep, netns_cookie,
};
use swarm_testkit::Hosts;

use support::{Tasks, in_namespace, median};

/// The `n`th address of 10.218.0.0/16 past the network's first 256.
fn address(n: usize) -> Ipv4Addr {
    let n = 256 + n as u32;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 218, 0, 0)) | n)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let services: usize = args.next().map_or(1000, |a| a.parse().unwrap());
    let runs: usize = args.next().map_or(5, |a| a.parse().unwrap());
    let hosts = Hosts::create("vipp", 1).unwrap();
    let mut tasks = Tasks::new("swvipp");
    let netns = PathBuf::from(format!("/var/run/netns/{}", hosts.namespace(0)));
    let subnet = "10.218.0.0/16".parse().unwrap();
    let local = Ipv4Addr::new(10, 218, 0, 10);
    let local_ns = tasks.add("l");
    let vtep = Vtep {
        address: hosts.address(0),
        port: VXLAN_PORT,
    };
    let peer = Vtep {
        address: Ipv4Addr::new(198, 18, 99, 9),
        port: VXLAN_PORT,
    };
    // Service s has VIP address(4s) and tasks address(4s + 1..=3).
    let backends = |s: usize| (1..=3).map(|t| address(4 * s + t)).collect::<Vec<_>>();
    let overlay_state = NodeOverlays {
        networks: [(
            "net-p".to_owned(),
            OverlayNetwork {
                vni: 4098,
                subnet,
                vtep,
                local: [(
                    "l".to_owned(),
                    LocalEndpoint {
                        address: local,
                        netns: local_ns.clone(),
                    },
                )]
                .into(),
                remote: (0..services)
                    .flat_map(backends)
                    .map(|a| (a, RemoteEndpoint { vtep: peer }))
                    .collect::<BTreeMap<_, _>>(),
            },
        )]
        .into(),
    };
    let vip_state = |moved: Option<usize>| {
        let vips = (0..services)
            .map(|s| {
                let mut tasks = backends(s);
                if moved == Some(s) {
                    tasks.pop();
                }
                (address(4 * s), tasks)
            })
            .collect();
        let mut endpoints: std::collections::BTreeSet<Ipv4Addr> =
            (0..services).flat_map(backends).collect();
        endpoints.insert(local);
        NodeVips {
            networks: [(
                "net-p".to_owned(),
                NetworkVips {
                    vni: 4098,
                    subnet,
                    vips,
                    endpoints,
                    local_tasks: ["l".to_owned()].into(),
                },
            )]
            .into(),
        }
    };
    let node = "vipp-node-0";
    let (mut overlay_ms, mut vips_ms, mut change_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sockets_ms, mut socket_change_ms) = (Vec::new(), Vec::new());
    let cookie = netns_cookie(&local_ns).unwrap();
    let socket_state = |desired: &NodeVips| {
        let (state, complete) = SocketVips::of(desired, |_| Some(cookie));
        assert!(complete);
        state
    };
    let mut programmed = 0;
    for _ in 0..runs {
        in_namespace(&netns, || {
            let (mut overlay, mut vips) = (Overlay::new(node), Vips::new(node));
            let started = Instant::now();
            overlay.reconcile(overlay_state.clone()).unwrap();
            overlay_ms.push(started.elapsed().as_secs_f64() * 1e3);
            let started = Instant::now();
            assert!(vips.reconcile(vip_state(None)).unwrap());
            vips_ms.push(started.elapsed().as_secs_f64() * 1e3);
            let mut balancer = SocketBalancer::attach().unwrap();
            let started = Instant::now();
            balancer.reconcile(socket_state(&vip_state(None))).unwrap();
            sockets_ms.push(started.elapsed().as_secs_f64() * 1e3);
            let started = Instant::now();
            assert!(vips.reconcile(vip_state(Some(services / 2))).unwrap());
            change_ms.push(started.elapsed().as_secs_f64() * 1e3);
            let started = Instant::now();
            balancer
                .reconcile(socket_state(&vip_state(Some(services / 2))))
                .unwrap();
            socket_change_ms.push(started.elapsed().as_secs_f64() * 1e3);
            let table = Command::new("nft")
                .args([
                    "list",
                    "table",
                    "ip",
                    &swarm_agent::network::vip_table_name(node),
                ])
                .output()
                .unwrap();
            let table = String::from_utf8_lossy(&table.stdout);
            programmed = (0..services)
                .filter(|s| table.contains(&format!("{} ", address(4 * s))))
                .count();
            vips.teardown().unwrap();
            overlay.teardown().unwrap();
        });
    }
    assert_eq!(programmed, services, "VIPs in the node's table");
    let (overlay, vips, change) = (median(overlay_ms), median(vips_ms), median(change_ms));
    let (sockets, socket_change) = (median(sockets_ms), median(socket_change_ms));
    println!(
        "{services} services x 3 tasks, {runs} runs, medians: overlay entries {overlay:.0} ms, \
         VIP ruleset, routes and neighbours {vips:.0} ms, socket balancer {sockets:.1} ms \
         (together {:.0} ms); one service's tasks changed: {change:.0} ms, socket balancer \
         {socket_change:.2} ms ({programmed} VIPs in the table)",
        overlay + vips + sockets
    );
}
