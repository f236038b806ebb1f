//! Overlay networks on real test hosts (root): network-namespace hosts on a bridge
//! (`swarm_testkit::Hosts`), the overlay applied from a desired state by code running in
//! each host's namespace, tasks as plain network namespaces with busybox in them. Hosts,
//! task namespaces and servers are removed by guards even when a test fails.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use swarm_agent::network::{
    LocalEndpoint, NodeOverlays, Overlay, OverlayNetwork, RemoteEndpoint, Vtep, endpoint_mac,
    overlay_bridge_name, overlay_veth_name, task_interface_name, vxlan_name,
};
use swarm_testkit::Hosts;

fn prerequisites(test: &str) -> bool {
    let programs = [
        "ip", "bridge", "iptables", "nsenter", "unshare", "busybox", "timeout",
    ];
    swarm_testkit::require(
        test,
        swarm_testkit::is_root() && programs.iter().all(|p| swarm_testkit::has_program(p)),
        "root and ip/bridge (iproute2), iptables, nsenter and unshare (util-linux), busybox, timeout",
    )
}

/// Runs `f` on a thread that has joined `netns`: the `ip` and `bridge` commands it starts
/// run in that namespace, as the node's daemon would in its own.
fn in_namespace<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    swarm_agent::network::in_namespace(std::path::Path::new(netns), f)
        .unwrap_or_else(|error| panic!("setns {netns}: {error}"))
}

fn host_netns(hosts: &Hosts, i: usize) -> String {
    format!("/var/run/netns/{}", hosts.namespace(i))
}

/// Task namespaces (`ip netns add`) and the servers started in them; removed on drop.
struct Tasks {
    names: Vec<String>,
    servers: Vec<Child>,
    _www: tempfile::TempDir,
}

impl Tasks {
    fn new() -> Tasks {
        let www = tempfile::tempdir().unwrap();
        std::fs::write(www.path().join("index.html"), "hello over the overlay\n").unwrap();
        Tasks {
            names: Vec::new(),
            servers: Vec::new(),
            _www: www,
        }
    }

    /// A new empty network namespace for a task; returns its path.
    fn add(&mut self, task: &str) -> PathBuf {
        let name = format!("swovl{}{task}", std::process::id());
        run("ip", &["netns", "add", &name]);
        self.names.push(name.clone());
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        PathBuf::from(format!("/var/run/netns/{name}"))
    }

    fn serve(&mut self, netns: &Path, address: Ipv4Addr) {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args([
                "busybox",
                "httpd",
                "-f",
                "-p",
                &format!("{address}:8080"),
                "-h",
            ])
            .arg(self._www.path())
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

fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `program args` inside `netns`.
fn inside(netns: &Path, program: &str, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg(program)
        .args(args)
        .output()
        .unwrap()
}

fn pings(from: &Path, to: Ipv4Addr) -> bool {
    inside(from, "busybox", &["ping", "-c1", "-W1", &to.to_string()])
        .status
        .success()
}

/// The first ping may wait on nothing learnt (entries are static) but a link coming up:
/// a few tries, bounded.
fn pings_eventually(from: &Path, to: Ipv4Addr) -> bool {
    (0..5).any(|_| pings(from, to))
}

fn fetch(from: &Path, address: Ipv4Addr) -> String {
    // Bounded by `timeout`: Debian's busybox 1.35 wget crashes with `-T`.
    let url = format!("http://{address}:8080/");
    let output = inside(
        from,
        "timeout",
        &["2", "busybox", "wget", "-q", "-O", "-", &url],
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn links(netns: &str) -> String {
    let output = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["ip", "-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn network(vni: u32, subnet: &str, vtep: Vtep) -> OverlayNetwork {
    OverlayNetwork {
        vni,
        subnet: subnet.parse().unwrap(),
        vtep,
        local: BTreeMap::new(),
        remote: BTreeMap::new(),
    }
}

fn local(address: Ipv4Addr, netns: &Path) -> LocalEndpoint {
    LocalEndpoint {
        address,
        netns: netns.to_owned(),
    }
}

#[test]
fn tasks_on_one_overlay_reach_each_other_across_hosts_and_not_from_another() {
    let test = "tasks_on_one_overlay_reach_each_other_across_hosts_and_not_from_another";
    if !prerequisites(test) {
        return;
    }
    let hosts = Hosts::create("ovl", 2).unwrap();
    let mut tasks = Tasks::new();
    let vteps = [0, 1].map(|i| Vtep {
        address: hosts.address(i),
        port: swarm_agent::network::VXLAN_PORT,
    });
    // Network A: task a0 on host 0, a1 on host 1; network B: b0 on host 0, b1 on host 1.
    let addr = |net: u8, last: u8| Ipv4Addr::new(10, 213, net, last);
    let (a0, a1, b0, b1) = (addr(1, 2), addr(1, 3), addr(2, 2), addr(2, 3));
    let netns = [
        ("a0", tasks.add("a0")),
        ("a1", tasks.add("a1")),
        ("b0", tasks.add("b0")),
        ("b1", tasks.add("b1")),
    ];
    let path = |task: &str| netns.iter().find(|(t, _)| *t == task).unwrap().1.clone();

    let desired = |i: usize| {
        let (me, peer) = (vteps[i], vteps[1 - i]);
        let mut net_a = network(4097, "10.213.1.0/24", me);
        let mut net_b = network(4098, "10.213.2.0/24", me);
        let (a_mine, a_theirs, b_mine, b_theirs) = if i == 0 {
            (("a0", a0), a1, ("b0", b0), b1)
        } else {
            (("a1", a1), a0, ("b1", b1), b0)
        };
        net_a
            .local
            .insert(a_mine.0.into(), local(a_mine.1, &path(a_mine.0)));
        net_a.remote.insert(a_theirs, RemoteEndpoint { vtep: peer });
        net_b
            .local
            .insert(b_mine.0.into(), local(b_mine.1, &path(b_mine.0)));
        net_b.remote.insert(b_theirs, RemoteEndpoint { vtep: peer });
        NodeOverlays {
            networks: [("net-a".to_owned(), net_a), ("net-b".to_owned(), net_b)].into(),
        }
    };
    let mut overlays = [Overlay::new("ovl-node-0"), Overlay::new("ovl-node-1")];
    for (i, overlay) in overlays.iter_mut().enumerate() {
        let state = desired(i);
        in_namespace(&host_netns(&hosts, i), || overlay.reconcile(state)).unwrap();
    }
    // Applying the same state again changes nothing and fails nothing.
    for (i, overlay) in overlays.iter_mut().enumerate() {
        let state = desired(i);
        in_namespace(&host_netns(&hosts, i), || overlay.reconcile(state)).unwrap();
    }

    let rules = |i: usize| {
        let output = Command::new("nsenter")
            .arg(format!("--net={}", host_netns(&hosts, i)))
            .args(["iptables", "-S", "FORWARD"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let bridge_a0 = overlay_bridge_name("ovl-node-0", "net-a");
    assert!(
        rules(0).contains(&format!("-i {bridge_a0} -o {bridge_a0} -j ACCEPT")),
        "{}",
        rules(0)
    );

    // Across the hosts, on each network.
    assert!(pings_eventually(&path("a0"), a1), "a0 → a1 over network A");
    assert!(pings_eventually(&path("b1"), b0), "b1 → b0 over network B");
    tasks.serve(&path("a1"), a1);
    let mut page = String::new();
    for _ in 0..20 {
        page = fetch(&path("a0"), a1);
        if !page.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(page, "hello over the overlay");

    // From network B, not even a forged route and neighbour entry for a1 reach it: the
    // frames carry B's VNI, and host 1 delivers them to B's bridge, where a1 is not.
    let b0_link = task_interface_name("net-b");
    let a1_mac = endpoint_mac(a1);
    let forged = [
        vec!["ip", "route", "add", "10.213.1.0/24", "dev", &b0_link],
        vec![
            "ip",
            "neigh",
            "add",
            "10.213.1.3",
            "lladdr",
            &a1_mac,
            "dev",
            &b0_link,
        ],
    ];
    for command in &forged {
        let output = inside(&path("b0"), command[0], &command[1..]);
        assert!(output.status.success(), "{command:?}: {output:?}");
    }
    assert!(
        !pings(&path("b0"), a1),
        "b0 (network B) reached a1 (network A)"
    );
    assert_eq!(fetch(&path("b0"), a1), "");
    // Network A still works beside it.
    assert!(pings(&path("a0"), a1));

    // A task leaving: its link goes, the rest stays.
    let mut without_a0 = desired(0);
    without_a0.networks.get_mut("net-a").unwrap().local.clear();
    in_namespace(&host_netns(&hosts, 0), || overlays[0].reconcile(without_a0)).unwrap();
    let a0_links =
        String::from_utf8_lossy(&inside(&path("a0"), "ip", &["-o", "link"]).stdout).into_owned();
    assert!(
        !a0_links.contains(&task_interface_name("net-a")),
        "{a0_links}"
    );
    assert!(pings(&path("b1"), b0), "network B is untouched");

    // A remote endpoint going: its forwarding and neighbour entries go (the neighbour
    // entry already removed by hand: not an error), the network's others stay; back, they
    // are back.
    let entries = |program: &str, args: &[&str]| {
        let output = Command::new("nsenter")
            .arg(format!("--net={}", host_netns(&hosts, 0)))
            .arg(program)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let vxlan_b = vxlan_name("ovl-node-0", "net-b");
    let b1_mac = endpoint_mac(b1);
    let (fdb, neigh) = (
        ["fdb", "show", "dev", &vxlan_b],
        ["neigh", "show", "dev", &vxlan_b],
    );
    // The VXLAN device's own entry for b1 (`dst` its node); the bridge may keep one it
    // learned.
    let sent_to_node = |entries: &str| {
        entries
            .lines()
            .any(|l| l.contains(&b1_mac) && l.contains(" dst "))
    };
    assert!(sent_to_node(&entries("bridge", &fdb)));
    assert!(entries("ip", &neigh).contains(&b1.to_string()));
    let status = Command::new("nsenter")
        .arg(format!("--net={}", host_netns(&hosts, 0)))
        .args(["ip", "neigh", "del", &b1.to_string(), "dev", &vxlan_b])
        .status()
        .unwrap();
    assert!(status.success());
    let mut without_b1 = desired(0);
    without_b1.networks.get_mut("net-a").unwrap().local.clear();
    without_b1.networks.get_mut("net-b").unwrap().remote.clear();
    in_namespace(&host_netns(&hosts, 0), || overlays[0].reconcile(without_b1)).unwrap();
    let left = entries("bridge", &fdb);
    assert!(!sent_to_node(&left), "{left}");
    assert!(!entries("ip", &neigh).contains(&b1.to_string()));
    let mut back = desired(0);
    back.networks.get_mut("net-a").unwrap().local.clear();
    in_namespace(&host_netns(&hosts, 0), || overlays[0].reconcile(back)).unwrap();
    assert!(sent_to_node(&entries("bridge", &fdb)));
    assert!(pings_eventually(&path("b0"), b1), "b0 → b1 once b1 is back");

    // Nothing desired: every device goes, on both hosts.
    for (i, overlay) in overlays.iter_mut().enumerate() {
        in_namespace(&host_netns(&hosts, i), || {
            overlay.reconcile(NodeOverlays::default())
        })
        .unwrap();
        let left = links(&host_netns(&hosts, i));
        for prefix in ["swo", "swx", "swy"] {
            assert!(!left.contains(&format!(": {prefix}")), "host {i}: {left}");
        }
        assert!(!rules(i).contains("swo"), "host {i}: {}", rules(i));
    }
    for (task, netns) in &netns {
        let left =
            String::from_utf8_lossy(&inside(netns, "ip", &["-o", "link"]).stdout).into_owned();
        assert!(!left.contains(": ov"), "task {task}: {left}");
    }
}

#[test]
fn nodes_sharing_one_namespace_use_their_own_ports() {
    let test = "nodes_sharing_one_namespace_use_their_own_ports";
    if !prerequisites(test) {
        return;
    }
    // Two nodes of one cluster in one namespace (as on a loopback cluster): one VTEP
    // address, a port each.
    let hosts = Hosts::create("ovs", 1).unwrap();
    let mut tasks = Tasks::new();
    let host = host_netns(&hosts, 0);
    let vtep = |port| Vtep {
        address: hosts.address(0),
        port,
    };
    let (t0, t1) = (Ipv4Addr::new(10, 214, 1, 2), Ipv4Addr::new(10, 214, 1, 3));
    let (ns0, ns1) = (tasks.add("t0"), tasks.add("t1"));
    let state = |me: Vtep, mine: (&str, Ipv4Addr, &Path), theirs: (Ipv4Addr, Vtep)| {
        let mut net = network(4097, "10.214.1.0/24", me);
        net.local.insert(mine.0.into(), local(mine.1, mine.2));
        net.remote
            .insert(theirs.0, RemoteEndpoint { vtep: theirs.1 });
        NodeOverlays {
            networks: [("net-a".to_owned(), net)].into(),
        }
    };
    let mut node0 = Overlay::new("node-0");
    let mut node1 = Overlay::new("node-1");
    in_namespace(&host, || {
        node0.reconcile(state(vtep(4789), ("t0", t0, &ns0), (t1, vtep(4790))))?;
        node1.reconcile(state(vtep(4790), ("t1", t1, &ns1), (t0, vtep(4789))))
    })
    .unwrap();
    assert!(pings_eventually(&ns0, t1), "t0 (node 0) → t1 (node 1)");
    assert!(pings_eventually(&ns1, t0), "t1 (node 1) → t0 (node 0)");

    // The same VNI on the same port in the same namespace is what the kernel refuses.
    let mut clash = Overlay::new("node-2");
    let refused = in_namespace(&host, || {
        clash.reconcile(NodeOverlays {
            networks: [(
                "net-a".to_owned(),
                network(4097, "10.214.1.0/24", vtep(4789)),
            )]
            .into(),
        })
    });
    let error = refused.expect_err("a second VXLAN device on VNI 4097 port 4789");
    assert!(error.to_string().contains("VNI"), "{error}");
    in_namespace(&host, || clash.reconcile(NodeOverlays::default())).unwrap();

    // Node 0's daemon restarts: a new `Overlay` knows nothing, its teardown removes every
    // link and rule of node 0 and none of node 1's, and a reconcile makes node 0 afresh.
    let mut restarted = Overlay::new("node-0");
    in_namespace(&host, || restarted.teardown()).unwrap();
    let left = links(&host);
    assert!(
        !left.contains(&format!(": {}", overlay_bridge_name("node-0", "net-a")))
            && !left.contains(&format!(": {}", vxlan_name("node-0", "net-a")))
            && !left.contains(&format!(": {}", overlay_veth_name("node-0", "net-a", "t0"))),
        "{left}"
    );
    assert!(
        left.contains(&format!(": {}", vxlan_name("node-1", "net-a"))),
        "{left}"
    );
    let t0_links =
        String::from_utf8_lossy(&inside(&ns0, "ip", &["-o", "link"]).stdout).into_owned();
    assert!(!t0_links.contains(": ov"), "{t0_links}");
    assert!(!pings(&ns1, t0), "node 0 is down");
    in_namespace(&host, || {
        restarted.reconcile(state(vtep(4789), ("t0", t0, &ns0), (t1, vtep(4790))))
    })
    .unwrap();
    assert!(pings_eventually(&ns1, t0), "node 0 is back");

    in_namespace(&host, || {
        restarted.reconcile(NodeOverlays::default())?;
        node1.reconcile(NodeOverlays::default())
    })
    .unwrap();
    let left = links(&host);
    assert!(!left.contains(": swo") && !left.contains(": swx"), "{left}");
}
