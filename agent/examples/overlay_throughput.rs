//! Task → task TCP throughput over the overlay against host → host, on the same two test
//! hosts (root). `cargo run -p swarm-agent --example overlay_throughput [MiB] [runs]`.
//!
//! Two `swarm_testkit::Hosts`, one overlay network applied from a desired state in each
//! host's namespace, a task namespace on each host. One TCP stream per run sends `MiB`
//! MiB (64 KiB writes) from host 0 to host 1, then from task 0 to task 1; the receiver
//! reads to the end. The runs alternate, so both paths see the same machine load; the
//! medians are printed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use swarm_agent::network::{
    LocalEndpoint, NodeOverlays, Overlay, OverlayNetwork, RemoteEndpoint, VXLAN_PORT, Vtep,
};
use swarm_testkit::Hosts;

fn join(netns: &str) {
    let file = std::fs::File::open(netns).unwrap();
    // SAFETY: setns changes only the calling thread's network namespace; callers are
    // threads made for one namespace.
    let joined = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        joined,
        0,
        "setns {netns}: {}",
        std::io::Error::last_os_error()
    );
}

fn in_namespace<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                join(netns);
                f()
            })
            .join()
            .unwrap()
    })
}

/// Sends `bytes` from a thread in `from` to a listener in `to` at `address`; the time from
/// the connection to the receiver's end of stream, in seconds.
fn transfer(from: &str, to: &str, address: Ipv4Addr, bytes: usize) -> f64 {
    let target = SocketAddrV4::new(address, 5201);
    std::thread::scope(|scope| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let receiver = scope.spawn(move || {
            join(to);
            let listener = TcpListener::bind(target).unwrap();
            ready_tx.send(()).unwrap();
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut buffer = vec![0u8; 1 << 16];
            let mut received = 0;
            loop {
                let n = stream.read(&mut buffer).unwrap();
                if n == 0 {
                    break;
                }
                received += n;
            }
            (received, Instant::now())
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let started = scope
            .spawn(move || {
                join(from);
                let mut stream =
                    TcpStream::connect_timeout(&target.into(), Duration::from_secs(5)).unwrap();
                let started = Instant::now();
                let chunk = vec![0u8; 1 << 16];
                let mut sent = 0;
                while sent < bytes {
                    stream.write_all(&chunk).unwrap();
                    sent += chunk.len();
                }
                stream.shutdown(std::net::Shutdown::Write).unwrap();
                started
            })
            .join()
            .unwrap();
        let (received, ended) = receiver.join().unwrap();
        assert!(received >= bytes, "{received} of {bytes} bytes");
        ended.duration_since(started).as_secs_f64()
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(512, |a| a.parse().unwrap());
    let runs: usize = args.next().map_or(5, |a| a.parse().unwrap());
    let bytes = mib << 20;
    let hosts = Hosts::create("ovb", 2).unwrap();
    let tasks = [0, 1].map(|i| format!("swovb{}t{i}", std::process::id()));
    struct Namespaces<'a>(&'a [String; 2]);
    impl Drop for Namespaces<'_> {
        fn drop(&mut self) {
            for name in self.0 {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
    let _cleanup = Namespaces(&tasks);
    for name in &tasks {
        assert!(
            Command::new("ip")
                .args(["netns", "add", name])
                .status()
                .unwrap()
                .success()
        );
    }
    let task_netns = tasks.clone().map(|name| format!("/var/run/netns/{name}"));
    let host_netns = [0, 1].map(|i| format!("/var/run/netns/{}", hosts.namespace(i)));
    let addresses = [Ipv4Addr::new(10, 215, 0, 2), Ipv4Addr::new(10, 215, 0, 3)];
    let vteps = [0, 1].map(|i| Vtep {
        address: hosts.address(i),
        port: VXLAN_PORT,
    });
    let mut overlays = [Overlay::new("bench-0"), Overlay::new("bench-1")];
    for i in 0..2 {
        let state = NodeOverlays {
            networks: [(
                "bench".to_owned(),
                OverlayNetwork {
                    vni: 4097,
                    subnet: "10.215.0.0/24".parse().unwrap(),
                    vtep: vteps[i],
                    local: [(
                        format!("t{i}"),
                        LocalEndpoint {
                            address: addresses[i],
                            netns: PathBuf::from(&task_netns[i]),
                        },
                    )]
                    .into(),
                    remote: BTreeMap::from([(
                        addresses[1 - i],
                        RemoteEndpoint { vtep: vteps[1 - i] },
                    )]),
                },
            )]
            .into(),
        };
        in_namespace(&host_netns[i], || overlays[i].reconcile(state)).unwrap();
    }
    let (mut direct, mut overlay) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        direct.push(transfer(
            &host_netns[0],
            &host_netns[1],
            hosts.address(1),
            bytes,
        ));
        overlay.push(transfer(
            &task_netns[0],
            &task_netns[1],
            addresses[1],
            bytes,
        ));
    }
    // Evidence that the task traffic crossed the VXLAN device and not some other path.
    let vxlan = swarm_agent::network::vxlan_name("bench-0", "bench");
    let stats = Command::new("nsenter")
        .arg(format!("--net={}", host_netns[0]))
        .args(["ip", "-j", "-s", "link", "show", "dev", &vxlan])
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    let sent = stats[0]["stats64"]["tx"]["bytes"].as_u64().unwrap();
    // Bytes per packet: near 64 KiB when encapsulation keeps the senders' super-packets
    // (GSO), near the MTU when they are cut up on the way.
    let packets = stats[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .unwrap()
        .max(1);
    assert!(
        sent >= (bytes * runs) as u64,
        "{vxlan} sent {sent} bytes, less than the {} of the task runs",
        bytes * runs
    );
    let gbits = |seconds: f64| bytes as f64 * 8.0 / seconds / 1e9;
    let (direct, overlay) = (gbits(median(direct)), gbits(median(overlay)));
    println!(
        "{mib} MiB x {runs} runs, one TCP stream, medians: host→host {direct:.2} Gbit/s, \
         task→task over the overlay {overlay:.2} Gbit/s, ratio {:.2} ({vxlan} sent {} MiB, \
         {} bytes per packet)",
        overlay / direct,
        sent >> 20,
        sent / packets
    );
    for i in 0..2 {
        in_namespace(&host_netns[i], || {
            overlays[i].reconcile(NodeOverlays::default())
        })
        .unwrap();
    }
}
