//! HTTP requests per second through a virtual IP against the same client to the task's
//! address directly, on two test hosts (root). `cargo run -p swarm-agent --example
//! vip_throughput [seconds per run] [runs]`.
//!
//! Two `swarm_testkit::Hosts` carry one overlay network (`Overlay::reconcile`) and its
//! VIP (`Vips::reconcile`) from a desired state. A client task on host 0; nginx (one
//! process, `return 200`) in a backend task on host 0 (local) and one on host 1 (remote).
//! For each backend, the VIP balances over that backend alone, so both paths end at the
//! same server: `wrk` (keep-alive) and `ab` (a new connection per request) run from the
//! client's namespace against the task's address and against the VIP, alternating run by
//! run so both see the same machine load; medians are printed. Then `hey` at a moderate
//! fixed rate gives the p99 latency of each path.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use swarm_agent::network::{
    LocalEndpoint, NetworkVips, NodeOverlays, NodeVips, Overlay, OverlayNetwork, RemoteEndpoint,
    VXLAN_PORT, Vips, Vtep,
};
use swarm_testkit::Hosts;

fn in_namespace<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(netns).unwrap();
                // SAFETY: setns changes only this thread's network namespace; the thread
                // ends with the scope.
                let joined = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    joined,
                    0,
                    "setns {netns:?}: {}",
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .unwrap()
    })
}

/// Task namespaces and the servers in them; removed on drop.
struct Tasks {
    names: Vec<String>,
    servers: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Tasks {
    fn add(&mut self, task: &str) -> PathBuf {
        let name = format!("swvipb{}{task}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(status.success());
        self.names.push(name.clone());
        let status = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(status.success());
        PathBuf::from(format!("/var/run/netns/{name}"))
    }

    /// nginx in `netns` on `address:8080` and `:8081`, one process, no logs.
    fn serve(&mut self, netns: &Path, name: &str, address: Ipv4Addr) {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "master_process off; daemon off; worker_processes 1;\n\
             pid {dir}/nginx.pid; error_log {dir}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off;\n\
               client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};\n\
               uwsgi_temp_path {dir}; scgi_temp_path {dir};\n\
               keepalive_requests 1000000;\n\
               server {{ listen {address}:8080 backlog=4096; listen {address}:8081 backlog=4096;\n\
                 location / {{ return 200 \"{name}\\n\"; }} }} }}\n",
            dir = dir.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(&dir)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(child);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Runs `program args` in `netns`; its stdout.
fn inside(netns: &Path, program: &str, args: &[&str]) -> String {
    let output = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg(program)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The number after `label` on the line that has it.
fn figure(output: &str, label: &str) -> f64 {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} in\n{output}"))
}

fn wrk(client: &Path, url: &str, seconds: u64) -> f64 {
    let duration = format!("{seconds}s");
    let output = inside(client, "wrk", &["-t1", "-c32", "-d", &duration, url]);
    assert!(
        !output.contains("Non-2xx") && !output.contains("Socket errors"),
        "{output}"
    );
    figure(&output, "Requests/sec:")
}

fn ab(client: &Path, url: &str, seconds: u64) -> f64 {
    let limit = seconds.to_string();
    let output = inside(
        client,
        "ab",
        &[
            "-q", "-c", "32", "-t", &limit, "-n", "1000000", "-s", "5", url,
        ],
    );
    assert!(output.contains("Failed requests:        0"), "{output}");
    figure(&output, "Requests per second:")
}

/// p50 and p99 latency in µs at a fixed, moderate rate (4 workers × 250 req/s).
fn hey(client: &Path, url: &str, seconds: u64) -> (f64, f64) {
    let duration = format!("{seconds}s");
    let output = inside(
        client,
        "hey",
        &[
            "-z",
            &duration,
            "-c",
            "4",
            "-q",
            "250",
            "-disable-keepalive",
            url,
        ],
    );
    let micros = |label| figure(&output, label) * 1e6;
    (micros("50% in"), micros("99% in"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(5, |a| a.parse().unwrap());
    let runs: usize = args.next().map_or(3, |a| a.parse().unwrap());
    let hosts = Hosts::create("vipb", 2).unwrap();
    let mut tasks = Tasks {
        names: Vec::new(),
        servers: Vec::new(),
        dir: tempfile::tempdir().unwrap(),
    };
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

    println!("{seconds} s per run, {runs} runs per path, medians (req/s)");
    println!("| backend | client | direct | through the VIP | ratio |");
    println!("|---|---|---:|---:|---:|");
    for (name, backend) in [("remote (host 1)", remote), ("local (host 0)", local)] {
        let desired = NodeVips {
            networks: [(
                "net-b".to_owned(),
                NetworkVips {
                    subnet,
                    vips: [(vip, vec![backend])].into(),
                    endpoints: [client, local, remote].into(),
                },
            )]
            .into(),
        };
        for (i, vips) in vips.iter_mut().enumerate() {
            in_namespace(&netns(i), || vips.reconcile(desired.clone())).unwrap();
        }
        let direct_url = format!("http://{backend}:8080/");
        // Another port than the direct runs': the server keeps TIME_WAIT sockets of the
        // direct connections, whose sequence numbers and timestamps the client chose for the
        // task's address; a SYN to the VIP reusing a client port, DNAT'ed to the same
        // 4-tuple, would be taken for an old duplicate (a 1 s retransmit). One client
        // talking to a server both ways at once is the benchmark's doing, not a service's.
        let vip_url = format!("http://{vip}:8081/");
        for (tool, measure) in [
            (
                "wrk -t1 -c32 (keep-alive)",
                wrk as fn(&Path, &str, u64) -> f64,
            ),
            ("ab -c32 (new connection)", ab),
        ] {
            let (mut direct, mut through) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                direct.push(measure(&client_ns, &direct_url, seconds));
                through.push(measure(&client_ns, &vip_url, seconds));
            }
            let (d, v) = (median(direct), median(through));
            println!("| {name} | {tool} | {d:.0} | {v:.0} | {:.2} |", v / d);
        }
        if backend == remote {
            let (d50, d99) = hey(&client_ns, &direct_url, seconds);
            let (v50, v99) = hey(&client_ns, &vip_url, seconds);
            println!(
                "latency at 1,000 req/s (hey -c4 -q250, new connections), {name}: \
                 direct p50 {d50:.0} µs p99 {d99:.0} µs; VIP p50 {v50:.0} µs p99 {v99:.0} µs; \
                 added p99 {:.0} µs",
                v99 - d99
            );
        }
    }
    for i in 0..2 {
        in_namespace(&netns(i), || vips[i].teardown()).unwrap();
        in_namespace(&netns(i), || overlays[i].teardown()).unwrap();
    }
}
