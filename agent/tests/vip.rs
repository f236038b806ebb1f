//! Virtual IPs on real test hosts (root): two network-namespace hosts (`swarm_testkit::Hosts`)
//! carry one overlay network; a client task on host 0 connects to the VIP, backends on
//! host 0 and host 1 answer with their name. Tasks are plain network namespaces; servers
//! and clients are sockets this test opens inside them. Everything is removed by guards,
//! even when the test fails.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use swarm_agent::network::{
    LocalEndpoint, NetworkVips, NodeOverlays, NodeVips, Overlay, OverlayNetwork, RemoteEndpoint,
    SocketBalancer, SocketVips, Vips, Vtep, netns_cookie, task_interface_name, vip_bridge_mac,
    vip_table_name,
};
use swarm_testkit::Hosts;

fn prerequisites(test: &str) -> bool {
    let programs = ["ip", "bridge", "iptables", "nft", "sysctl", "nsenter"];
    swarm_testkit::require(
        test,
        swarm_testkit::is_root() && programs.iter().all(|p| swarm_testkit::has_program(p)),
        "root and ip/bridge (iproute2), iptables, nft, sysctl, nsenter",
    )
}

/// Runs `f` on a thread that has joined `netns`: the commands it starts and the sockets
/// it opens are in that namespace.
fn in_namespace<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> T {
    swarm_agent::network::in_namespace(netns, f)
        .unwrap_or_else(|error| panic!("setns {netns:?}: {error}"))
}

/// Task namespaces (`ip netns add`); removed on drop.
struct Tasks {
    names: Vec<String>,
}

impl Tasks {
    fn add(&mut self, task: &str) -> PathBuf {
        let name = format!("swvip{}{task}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns add {name}");
        self.names.push(name.clone());
        let status = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(status.success());
        PathBuf::from(format!("/var/run/netns/{name}"))
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// A server in a task's namespace on `address:PORT`: for each line a client sends, it
/// answers its own name. Its threads end with the process.
fn serve(netns: &Path, name: &'static str, address: Ipv4Addr) {
    let listener = in_namespace(netns, || TcpListener::bind((address, PORT)).unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                for line in BufReader::new(stream).lines() {
                    if line.is_err() || writeln!(writer, "{name}").is_err() {
                        break;
                    }
                }
            });
        }
    });
}

const PORT: u16 = 9000;

/// A connection from the client's namespace to `to:PORT`, bounded.
fn connect(client: &Path, to: Ipv4Addr) -> std::io::Result<Connection> {
    connect_within(client, to, Duration::from_secs(2))
}

fn connect_within(client: &Path, to: Ipv4Addr, limit: Duration) -> std::io::Result<Connection> {
    let stream = in_namespace(client, || {
        TcpStream::connect_timeout(&SocketAddr::from((to, PORT)), limit)
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(Connection {
        reader: BufReader::new(stream.try_clone()?),
        stream,
    })
}

struct Connection {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Connection {
    /// The peer the task is told (`getpeername`): the VIP, whichever path it took.
    fn peer(&self) -> Ipv4Addr {
        match self.stream.peer_addr().unwrap().ip() {
            std::net::IpAddr::V4(address) => address,
            other => panic!("an IPv6 peer {other}"),
        }
    }

    /// The address the kernel's socket runs to (`ss`, in the client's namespace `netns`):
    /// the VIP through the DNAT, a task's own through the socket balancer.
    fn route(&self, netns: &Path) -> Ipv4Addr {
        let local = self.stream.local_addr().unwrap();
        match swarm_testkit::established_peer(netns, local) {
            Some(std::net::IpAddr::V4(address)) => address,
            other => panic!("the socket from {local}: {other:?}"),
        }
    }

    /// Who answers a line.
    fn ask(&mut self) -> String {
        writeln!(self.stream, "who").unwrap();
        let mut answer = String::new();
        self.reader.read_line(&mut answer).unwrap();
        answer.trim().to_owned()
    }
}

/// Who answers `count` new connections to `vip`.
fn answers(client: &Path, vip: Ipv4Addr, count: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..count {
        let answer = connect(client, vip).expect("connect to the VIP").ask();
        *seen.entry(answer).or_default() += 1;
    }
    seen
}

fn host_netns(hosts: &Hosts, i: usize) -> PathBuf {
    PathBuf::from(format!("/var/run/netns/{}", hosts.namespace(i)))
}

#[test]
fn connections_to_a_vip_are_balanced_over_serving_tasks_across_hosts_and_drain() {
    let test = "connections_to_a_vip_are_balanced_over_serving_tasks_across_hosts_and_drain";
    if !prerequisites(test) {
        return;
    }
    let hosts = Hosts::create("vip", 2).unwrap();
    let mut tasks = Tasks { names: Vec::new() };
    let vteps = [0, 1].map(|i| Vtep {
        address: hosts.address(i),
        port: swarm_agent::network::VXLAN_PORT,
    });
    let addr = |last: u8| Ipv4Addr::new(10, 215, 1, last);
    let (vip, client, b0, b1) = (addr(2), addr(10), addr(20), addr(21));
    let subnet = "10.215.1.0/24".parse().unwrap();
    let (client_ns, b0_ns, b1_ns) = (tasks.add("c"), tasks.add("b0"), tasks.add("b1"));
    // Another network on host 0, with a task and a VIP of its own.
    let (other_subnet, other_vip, other) = (
        "10.215.2.0/24".parse().unwrap(),
        Ipv4Addr::new(10, 215, 2, 2),
        Ipv4Addr::new(10, 215, 2, 10),
    );
    let other_ns = tasks.add("o");
    let nodes = ["vip-node-0", "vip-node-1"];

    // The overlay: the client and b0 on host 0, b1 on host 1.
    let overlay = |i: usize| {
        let mut network = OverlayNetwork {
            vni: 4097,
            subnet,
            vtep: vteps[i],
            local: BTreeMap::new(),
            remote: BTreeMap::new(),
        };
        let local = |address, netns: &Path| LocalEndpoint {
            address,
            netns: netns.to_owned(),
        };
        if i == 0 {
            network.local.insert("c".into(), local(client, &client_ns));
            network.local.insert("b0".into(), local(b0, &b0_ns));
            network.remote.insert(b1, RemoteEndpoint { vtep: vteps[1] });
        } else {
            network.local.insert("b1".into(), local(b1, &b1_ns));
            for address in [client, b0] {
                network
                    .remote
                    .insert(address, RemoteEndpoint { vtep: vteps[0] });
            }
        }
        let mut networks: BTreeMap<String, OverlayNetwork> = [("net-v".to_owned(), network)].into();
        if i == 0 {
            let mut network = OverlayNetwork {
                vni: 4098,
                subnet: other_subnet,
                vtep: vteps[0],
                local: BTreeMap::new(),
                remote: BTreeMap::new(),
            };
            network.local.insert("o".into(), local(other, &other_ns));
            networks.insert("net-o".to_owned(), network);
        }
        NodeOverlays { networks }
    };
    let mut overlays = nodes.map(Overlay::new);
    let mut vips = nodes.map(Vips::new);
    // Removes every node's devices, rules and tables, even when an assertion fails.
    struct Teardown<'a> {
        hosts: &'a Hosts,
        overlays: &'a mut [Overlay; 2],
        vips: &'a mut [Vips; 2],
    }
    impl Drop for Teardown<'_> {
        fn drop(&mut self) {
            for i in 0..2 {
                let netns = host_netns(self.hosts, i);
                let _ = in_namespace(&netns, || self.vips[i].teardown());
                let _ = in_namespace(&netns, || self.overlays[i].teardown());
            }
        }
    }
    let guard = Teardown {
        hosts: &hosts,
        overlays: &mut overlays,
        vips: &mut vips,
    };
    let desired = |backends: &[Ipv4Addr]| NodeVips {
        networks: [
            (
                "net-v".to_owned(),
                NetworkVips {
                    vni: 4097,
                    subnet,
                    vips: [(vip, backends.to_vec())].into(),
                    endpoints: [client, b0, b1].into(),
                    local_tasks: Default::default(),
                },
            ),
            (
                "net-o".to_owned(),
                NetworkVips {
                    vni: 4098,
                    subnet: other_subnet,
                    vips: [(other_vip, vec![other])].into(),
                    endpoints: [other].into(),
                    local_tasks: Default::default(),
                },
            ),
        ]
        .into(),
    };
    let reconcile = |guard: &mut Teardown, backends: &[Ipv4Addr]| {
        for i in 0..2 {
            let netns = host_netns(guard.hosts, i);
            let complete =
                in_namespace(&netns, || guard.vips[i].reconcile(desired(backends))).unwrap();
            // Host 1 does not carry the other network: its bridge is not there to set.
            assert_eq!(complete, i == 0, "host {i}");
        }
    };
    for i in 0..2 {
        let netns = host_netns(&hosts, i);
        in_namespace(&netns, || guard.overlays[i].reconcile(overlay(i))).unwrap();
    }
    let mut guard = guard;
    reconcile(&mut guard, &[b0, b1]);
    // Applying the same state again changes nothing and fails nothing.
    reconcile(&mut guard, &[b0, b1]);

    serve(&b0_ns, "b0", b0);
    serve(&b1_ns, "b1", b1);
    // The overlay itself first: the client reaches b1 on host 1 directly.
    let direct = (0..20).find_map(|_| {
        let answer = connect(&client_ns, b1).ok().map(|mut c| c.ask());
        if answer.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        answer
    });
    assert_eq!(direct.as_deref(), Some("b1"));

    // Through the VIP, new connections land on both backends, here and across hosts,
    // through the DNAT: the connection runs to the VIP.
    let connection = connect(&client_ns, vip).unwrap();
    assert_eq!(connection.route(&client_ns), vip);
    assert_eq!(connection.peer(), vip);
    let seen = answers(&client_ns, vip, 30);
    assert_eq!(
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        ["b0", "b1"],
        "{seen:?}"
    );

    // Networks stay apart: the other network's task, with a forged route to this one's
    // subnet and neighbours pointing at its own bridge (the way its VIP is reached),
    // reaches neither this network's VIP nor its tasks through the node: the VIP's DNAT
    // takes only its own bridge's traffic, and its bridge's routing table holds only its
    // own subnet.
    let other_link = task_interface_name("net-o");
    let other_bridge_mac = vip_bridge_mac(nodes[0], "net-o");
    let forge = |args: &[&str]| {
        let status = Command::new("nsenter")
            .arg(format!("--net={}", other_ns.display()))
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "{args:?}");
    };
    forge(&["ip", "route", "add", "10.215.1.0/24", "dev", &other_link]);
    for target in [vip, b0, b1] {
        let target = target.to_string();
        forge(&[
            "ip",
            "neigh",
            "replace",
            &target,
            "lladdr",
            &other_bridge_mac,
            "dev",
            &other_link,
        ]);
    }
    for target in [vip, b0, b1] {
        let reached = connect_within(&other_ns, target, Duration::from_millis(500));
        assert!(reached.is_err(), "the other network reached {target}");
    }

    // An open connection to b1; then b1 stops serving.
    let mut open = (0..50)
        .map(|_| connect(&client_ns, vip).unwrap())
        .find_map(|mut c| (c.ask() == "b1").then_some(c))
        .expect("a connection to b1 among 50");
    reconcile(&mut guard, &[b0]);
    let seen = answers(&client_ns, vip, 20);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["b0"], "{seen:?}");
    // The open one drains: it still reaches b1.
    assert_eq!(open.ask(), "b1");

    // No serving task: a connection is refused at once, not left to time out, and the
    // open one still drains.
    reconcile(&mut guard, &[]);
    assert_eq!(open.ask(), "b1", "draining with no serving task");
    let started = std::time::Instant::now();
    let refused = connect(&client_ns, vip).err().map(|e| e.kind());
    assert_eq!(refused, Some(ErrorKind::ConnectionRefused));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(open.ask(), "b1", "still draining");

    // Serving again: new connections are balanced again.
    reconcile(&mut guard, &[b0, b1]);
    let seen = answers(&client_ns, vip, 30);
    assert_eq!(seen.len(), 2, "{seen:?}");
    drop(open);

    // The socket balancer ahead of the DNAT, as host 0's node sets it for its client task:
    // each connection runs straight to a serving task, here or across hosts (the kernel's
    // socket is the task's), while the task is told its peer is the VIP.
    let mut balancer = SocketBalancer::attach().expect(
        "the socket balancer attaches (root, a cgroup v2 mount and a kernel from 5.14 are \
         what it needs)",
    );
    let client_cookie = netns_cookie(&client_ns).unwrap();
    let balanced = |backends: &[Ipv4Addr]| SocketVips {
        services: if backends.is_empty() {
            BTreeMap::new()
        } else {
            [(vip, (4097, backends.to_vec()))].into()
        },
        members: [(client_cookie, 4097)].into(),
    };
    balancer.reconcile(balanced(&[b0, b1])).unwrap();
    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..30 {
        let mut connection = connect(&client_ns, vip).unwrap();
        let route = connection.route(&client_ns);
        assert_eq!(connection.peer(), vip);
        let answer = connection.ask();
        assert_eq!(route, if answer == "b0" { b0 } else { b1 }, "{answer}");
        *seen.entry(answer).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // A task of another network, with the same forged routes: not a member of this one,
    // its connections are left to the DNAT path, which refuses them. Were they rewritten,
    // they would reach a server of its own holding b0's address.
    forge(&["ip", "addr", "add", &format!("{b0}/32"), "dev", "lo"]);
    serve(&other_ns, "impostor", b0);
    assert_eq!(connect(&other_ns, b0).unwrap().ask(), "impostor");
    for _ in 0..10 {
        assert!(connect_within(&other_ns, vip, Duration::from_millis(300)).is_err());
    }
    // b1 stops serving: new connections go to b0 alone; one open to b1 drains.
    let mut open = (0..50)
        .map(|_| connect(&client_ns, vip).unwrap())
        .find_map(|mut c| (c.ask() == "b1").then_some(c))
        .expect("a connection to b1 among 50");
    balancer.reconcile(balanced(&[b0])).unwrap();
    reconcile(&mut guard, &[b0]);
    for _ in 0..20 {
        let connection = connect(&client_ns, vip).unwrap();
        assert_eq!(connection.route(&client_ns), b0);
    }
    assert_eq!(open.ask(), "b1");
    // No serving task: the balancer leaves the VIP to the DNAT, which refuses at once.
    balancer.reconcile(balanced(&[])).unwrap();
    reconcile(&mut guard, &[]);
    let refused = connect(&client_ns, vip).err().map(|e| e.kind());
    assert_eq!(refused, Some(ErrorKind::ConnectionRefused));
    assert_eq!(open.ask(), "b1", "still draining");
    // Detached (its daemon gone): connections go through the DNAT again.
    balancer.reconcile(balanced(&[b0, b1])).unwrap();
    reconcile(&mut guard, &[b0, b1]);
    assert_ne!(connect(&client_ns, vip).unwrap().route(&client_ns), vip);
    drop(balancer);
    assert_eq!(connect(&client_ns, vip).unwrap().route(&client_ns), vip);

    // No VIP left on a node: it has no table and no rule (nothing a killed daemon could
    // leave behind); teardown the same.
    let output = |i: usize, program: &str, args: &[&str]| {
        let output = in_namespace(&host_netns(&hosts, i), || {
            Command::new(program).args(args).output().unwrap()
        });
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    in_namespace(&host_netns(&hosts, 1), || {
        guard.vips[1].reconcile(NodeVips::default())
    })
    .unwrap();
    in_namespace(&host_netns(&hosts, 0), || guard.vips[0].teardown()).unwrap();
    for (i, node) in nodes.iter().enumerate() {
        let tables = output(i, "nft", &["list", "tables"]);
        assert!(!tables.contains(&vip_table_name(node)), "{tables}");
        let rules = output(i, "ip", &["rule", "show"]);
        assert!(!rules.contains("1000:"), "{rules}");
    }
    drop(guard);
}

/// The node's follower reconciles from its endpoint table at every change: the nftables
/// table follows the serving tasks, comes back after a firewall reload flushed the ruleset
/// (the node's canary tells), and stays when the worker goes.
#[test]
fn the_follower_keeps_the_vips_on_the_endpoint_table() {
    let test = "the_follower_keeps_the_vips_on_the_endpoint_table";
    if !prerequisites(test) {
        return;
    }
    use swarm_api::endpoints::{NetworkEndpoints, NetworkView, ServiceEndpoint, TaskEndpoint};
    use swarm_api::spec::EndpointMode;

    let hosts = Hosts::create("vipf", 1).unwrap();
    let mut tasks = Tasks { names: Vec::new() };
    let netns = host_netns(&hosts, 0);
    let node = "vipf-node-0";
    let addr = |last: u8| Ipv4Addr::new(10, 217, 1, last);
    let subnet = "10.217.1.0/24".parse().unwrap();
    let task_ns = tasks.add("t");
    let mut overlay = Overlay::new(node);
    let mut network = OverlayNetwork {
        vni: 4097,
        subnet,
        vtep: Vtep {
            address: hosts.address(0),
            port: swarm_agent::network::VXLAN_PORT,
        },
        local: BTreeMap::new(),
        remote: BTreeMap::new(),
    };
    network.local.insert(
        "t".into(),
        LocalEndpoint {
            address: addr(10),
            netns: task_ns.clone(),
        },
    );
    let overlays = NodeOverlays {
        networks: [("net-f".to_owned(), network)].into(),
    };
    in_namespace(&netns, || overlay.reconcile(overlays)).unwrap();
    let view = |serving: bool| {
        let task = |address, serving| TaskEndpoint {
            service_id: "s".into(),
            node_id: node.into(),
            vtep: None,
            address,
            name: "s.1".into(),
            serving,
        };
        let network = NetworkEndpoints {
            id: "net-f".into(),
            vni: 4097,
            subnet,
            gateway: addr(1),
            internal: false,
            services: [(
                "s".to_owned(),
                ServiceEndpoint {
                    name: "s".into(),
                    aliases: Vec::new(),
                    mode: EndpointMode::Vip,
                    vip: Some(addr(2)),
                },
            )]
            .into(),
            tasks: [
                ("t".to_owned(), task(addr(10), true)),
                ("u".to_owned(), task(addr(11), serving)),
            ]
            .into(),
        };
        NetworkView {
            networks: [("f".to_owned(), network)].into(),
            mesh: Default::default(),
        }
    };
    let ruleset = || {
        let output = in_namespace(&netns, || {
            Command::new("nft")
                .args(["list", "ruleset"])
                .output()
                .unwrap()
        });
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let until_within = |limit: Duration, what: &str, done: &dyn Fn(&str) -> bool| {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if done(&ruleset()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{what}: {}", ruleset());
    };
    let until = |what: &str, done: &dyn Fn(&str) -> bool| {
        until_within(Duration::from_millis(2500), what, done)
    };
    // The node's canary chain, in iptables' `table` (looked for with iptables, whichever
    // its backend).
    let chain = swarm_agent::network::canary_chain(node);
    let declared = |table: &str| {
        let listing = hosts
            .output(0, "iptables", &["-w", "5", "-t", table, "-S"])
            .unwrap();
        String::from_utf8_lossy(&listing.stdout)
            .lines()
            .any(|line| line.trim_end() == format!("-N {chain}"))
    };
    let chains_planted = || declared("filter") && declared("nat");
    // The node's namespace directory, where the follower finds its tasks' namespaces by
    // task id (a link to the test's).
    let netns_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&task_ns, netns_dir.path().join("t")).unwrap();
    serve(&task_ns, "t", addr(10));
    let (sender, mut views) = tokio::sync::watch::channel(view(true));
    // A view not seen yet, as the worker's once an assignment brought one.
    views.mark_changed();
    let (reloads, reloaded) = tokio::sync::watch::channel(0);
    let counted = reloads.subscribe();
    let follower = std::thread::scope(|scope| {
        // Owned here, so that a failed wait below drops it and the follower returns.
        let sender = sender;
        let follower = scope.spawn(|| {
            in_namespace(&netns, || {
                let both = async {
                    tokio::select! {
                        () = swarm_agent::network::follow_vips(node.into(), netns_dir.path().to_owned(), views, reloaded, std::future::pending()) => {}
                        () = swarm_agent::network::watch_canary(node.into(), reloads, std::future::pending()) => {}
                    }
                };
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(both)
            })
        });
        until("both tasks balanced", &|rules| {
            rules.contains("map { 0 : 10.217.1.10, 1 : 10.217.1.11 }")
        });
        sender.send(view(false)).unwrap();
        until("the task that stopped serving left", &|rules| {
            rules.contains("map { 0 : 10.217.1.10 }")
        });
        // The socket balancer follows too: task t's connection to the VIP runs straight
        // to the one serving task, itself (its namespace found under the node's directory;
        // u's is not there, which leaves t's alone).
        let start = std::time::Instant::now();
        loop {
            // Through the DNAT meanwhile, t's connection to itself may not be made.
            let peer = connect_within(&task_ns, addr(2), Duration::from_millis(300))
                .map(|c| c.route(&task_ns));
            if peer.as_ref().ok() == Some(&addr(10)) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(3), "{peer:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        until("the canary planted", &|rules| {
            rules.contains(&swarm_agent::network::canary_name(node))
        });
        let flushed = in_namespace(&netns, || {
            Command::new("nft")
                .args(["flush", "ruleset"])
                .status()
                .unwrap()
        });
        assert!(flushed.success());
        until_within(
            swarm_agent::network::CANARY_CHECK * 2,
            "the table back after the reload",
            &|rules| {
                rules.contains("map { 0 : 10.217.1.10 }")
                    && rules.contains(&swarm_agent::network::canary_name(node))
            },
        );
        assert_eq!(*counted.borrow(), 1, "one reload counted");
        // An `iptables-restore` of the filter and nat tables (netfilter-persistent,
        // firewalld's iptables backend) leaves nftables tables alone and takes iptables
        // chains: the canary chains tell. Looked for with iptables, whichever its backend.
        until("the canary chains planted", &|_| chains_planted());
        let script = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(script.path(), "*filter\nCOMMIT\n*nat\nCOMMIT\n").unwrap();
        let restored = hosts
            .output(0, "iptables-restore", &[script.path().to_str().unwrap()])
            .unwrap()
            .status;
        assert!(restored.success());
        until_within(
            swarm_agent::network::CANARY_CHECK * 2,
            "the canary chains back after the restore, counted as a reload",
            &|_| chains_planted() && *counted.borrow() == 2,
        );
        drop(sender);
        follower.join()
    });
    assert!(
        follower.is_ok(),
        "the follower returns when the worker goes"
    );
    assert!(ruleset().contains(&vip_table_name(node)), "left as it is");
    let mut vips = Vips::new(node);
    in_namespace(&netns, || vips.teardown()).unwrap();
    in_namespace(&netns, || overlay.teardown()).unwrap();
    in_namespace(&netns, || swarm_agent::network::remove_canary(node)).unwrap();
    let ruleset = ruleset();
    assert!(!ruleset.contains(&vip_table_name(node)), "{ruleset}");
    assert!(!ruleset.contains("swcanary"), "{ruleset}");
    assert!(
        !declared("filter") && !declared("nat"),
        "the canary chains removed"
    );
}

/// A canary that cannot be looked for (an iptables table written in nft syntax, which
/// iptables-nft will not list) leaves the others watched: a flushed canary table is still
/// seen and counted as a reload.
#[test]
fn a_canary_that_cannot_be_looked_for_leaves_the_others_watched() {
    let test = "a_canary_that_cannot_be_looked_for_leaves_the_others_watched";
    if !prerequisites(test) {
        return;
    }
    let hosts = Hosts::create("canx", 1).unwrap();
    let netns = host_netns(&hosts, 0);
    let node = "canx-node-0";
    let nft = |script: &str| {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), script).unwrap();
        let output = hosts
            .output(0, "nft", &["-f", file.path().to_str().unwrap()])
            .unwrap();
        assert!(output.status.success(), "nft -f: {script}: {output:?}");
    };
    // A set-and-concatenation match iptables-nft cannot show: its `-S` of nat fails.
    nft(
        "table ip nat {\n chain POSTROUTING {\n  type nat hook postrouting priority srcnat; policy accept;\n  meta l4proto . th dport { tcp . 80 } masquerade\n }\n}\n",
    );
    let table = swarm_agent::network::canary_name(node);
    let table_planted = || {
        let listed = hosts.output(0, "nft", &["list", "table", "ip", &table]);
        listed.unwrap().status.success()
    };
    let (reloads, _) = tokio::sync::watch::channel(0u64);
    let counted = reloads.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            in_namespace(&netns, || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(swarm_agent::network::watch_canary(
                        node.into(),
                        reloads,
                        async move {
                            let _ = stopped.await;
                        },
                    ))
            })
        });
        // Dropped however this ends: the watcher stops.
        let _stop = stop;
        let within = |limit: Duration, what: &str, done: &dyn Fn() -> bool| {
            let start = std::time::Instant::now();
            while !done() {
                assert!(start.elapsed() < limit, "{what}");
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        within(Duration::from_secs(5), "the canary table planted", &|| {
            table_planted()
        });
        // Past the watcher's first look at the nat table, which fails.
        std::thread::sleep(swarm_agent::network::CANARY_CHECK + Duration::from_millis(500));
        nft(&format!("delete table ip {table}\n"));
        within(
            swarm_agent::network::CANARY_CHECK * 2,
            "the flushed canary table seen, planted again and counted",
            &|| table_planted() && *counted.borrow() == 1,
        );
    });
    in_namespace(&netns, || {
        // The nat canary cannot be looked for, so its removal errs; the others go.
        let _ = swarm_agent::network::remove_canary(node);
    });
    assert!(!table_planted(), "the canary table removed");
}
