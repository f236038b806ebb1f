//! The routing mesh through real daemons on three test hosts: a published port answers on
//! every host's address, wherever its replicas run (a host where another process holds the
//! port says so, leaves it to that process and takes it once it is free; the other hosts
//! answer meanwhile); scaled out, answers come from several
//! replicas; a host-mode port answers only on the host that runs its task; a port given no
//! number gets one of 30000–32767 that every host answers; a PROXY protocol
//! port hands its task the client's address, through the task's host or another, a
//! process of another host included (even one that sets the mesh's mark); a UDP port
//! answers on every host (the test images' `udp-echo`); under a
//! bounded load loop, a rolling update and a drained node lose no request; a firewall
//! reload on a host is repaired within seconds; a killed host leaves the others answering.
//!
//! Needs root, runc, busybox, nft and docker-registry; skipped with a message otherwise,
//! except under CI=true.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

use common::*;
use swarm_testkit::Hosts;

const WAIT: Duration = Duration::from_secs(60);

/// `GET /` at `address` (bounded): the page, if it answered; why not is printed (shown
/// when the test fails).
fn get(address: SocketAddr) -> Option<String> {
    let fetched = (|| -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.write_all(b"GET / HTTP/1.0\r\nHost: mesh\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })();
    let page = match fetched {
        Ok(response) => response
            .split("\r\n\r\n")
            .nth(1)
            .map(|b| b.trim().to_owned())
            .filter(|b| !b.is_empty()),
        Err(error) => {
            eprintln!("GET {address}: {error}");
            return None;
        }
    };
    if page.is_none() {
        eprintln!("GET {address}: an empty answer");
    }
    page
}

/// The 28 bytes the `proxied` task dumps of what a connection to `target` brought it (a
/// PROXY v2 header), and the connection's own address; the connection's packets carry
/// `tos` if given.
fn dumped_header(target: SocketAddr, tos: Option<u32>) -> Option<(SocketAddrV4, Vec<u8>)> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    if let Some(tos) = tos {
        socket.set_tos_v4(tos).ok()?;
    }
    socket
        .connect_timeout(&target.into(), Duration::from_secs(2))
        .ok()?;
    let mut stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let SocketAddr::V4(client) = stream.local_addr().ok()? else {
        return None;
    };
    let mut dump = String::new();
    stream.read_to_string(&mut dump).ok()?;
    let bytes: Vec<u8> = dump
        .split_whitespace()
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect();
    (bytes.len() == 28).then_some((client, bytes))
}

/// One datagram to `target` from a new socket (bounded): the answer, if one came.
fn udp_ask(target: SocketAddr, datagram: &[u8]) -> Option<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    socket.send_to(datagram, target).ok()?;
    let mut answer = [0u8; 512];
    match socket.recv_from(&mut answer) {
        Ok((length, _)) => Some(String::from_utf8_lossy(&answer[..length]).into_owned()),
        Err(error) => {
            eprintln!("UDP {target}: {error}");
            None
        }
    }
}

fn at(hosts: &Hosts, i: usize, port: u16) -> SocketAddr {
    SocketAddr::from((hosts.address(i), port))
}

/// The pages `count` requests to `address` got.
fn pages(address: SocketAddr, count: usize) -> BTreeSet<String> {
    (0..count).filter_map(|_| get(address)).collect()
}

fn running(cluster: &Cluster, service: &str) -> Vec<serde_json::Value> {
    live_tasks(cluster, service)
        .into_iter()
        .filter(|t| t["status"]["state"] == "running")
        .collect()
}

/// The target is no failed request through an update or a drain. A few per
/// thousand were refused while another node's starting tasks could take forwarded
/// connections; since that was fixed, runs show none. The bound stays until full CI runs
/// show zero is stable under the whole suite's load, then it becomes zero.
fn few_failed(answered: usize, failures: usize) {
    let total = answered + failures;
    eprintln!("{failures} of {total} requests failed");
    assert!(
        failures * 500 <= total,
        "{failures} of {total} requests failed: more than 0.2 %"
    );
}

/// The requests a killed replica may fail: those in flight on it, which the loop (one
/// request at a time, a few hundred a second) sends it from its death until its node's
/// rules drop it: one at the kill, and those of the window between (the worker sees the
/// exit at once through a pidfd; the ruleset changes at the next `nft` run, tens of
/// milliseconds on this machine under load). Other nodes that still send it connections
/// for a moment are covered: its node sends them on to a live task. 0 to 9 were seen in
/// twelve runs at a load average of 7 to 10 on 2 cores; the bound leaves room for a
/// slower machine, and is still far below the thousands of requests of the loop.
const KILLED_IN_FLIGHT: usize = 20;

#[test]
fn published_ports_answer_on_every_host_through_the_mesh() {
    let test = "published_ports_answer_on_every_host_through_the_mesh";
    if !hosts_can_run_containers(test, &["nft", "curl"]) {
        return;
    }
    let (cluster, registry) = workers_on_hosts("mesh", 3, &init_args("198.18.216.0/22", &[]));
    let hosts = cluster.hosts.as_ref().expect("test hosts");
    let image = format!("{}/swarm/hello:1", registry.addr());

    // Another process holds port 8080 on host 2 before the service publishes it.
    let mut squatter = hosts
        .command(1, "busybox", &["nc", "-l", "-p", "8080"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("a listener on host 2");
    // Looked for, not connected to: `nc -l` ends after its first connection.
    wait_for("the listener on host 2", WAIT, || {
        let sockets = hosts.output(1, "ss", &["-ltnH"]).ok()?;
        String::from_utf8_lossy(&sockets.stdout)
            .contains(":8080 ")
            .then_some(())
    });

    // One replica, on host 3: every host answers.
    ok(
        &cluster,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--publish",
            "8080:80",
            "--constraint",
            "node.hostname==node3",
            "--stop-grace-period",
            "1s",
            // Serving once it answers, not once its process starts: a new replica's
            // server may not listen yet when the mesh first sends it a connection (the
            // zero-failure loops below need it, as Docker and Kubernetes need theirs).
            "--health-cmd",
            "wget -q -O /dev/null http://127.0.0.1/",
            "--health-interval",
            "500ms",
            &image,
        ],
    );
    wait_for("web running", WAIT, || {
        (running(&cluster, "web").len() == 1).then_some(())
    });
    // Host 2 says its port is taken; hosts 1 and 3 answer.
    let taken = "port 8080/tcp taken by another process on node node2";
    wait_for("service ps showing the taken port", WAIT, || {
        ok(&cluster, &["service", "ps", "web"])
            .contains(taken)
            .then_some(())
    });
    assert!(
        ok(&cluster, &["node", "ps", "node2"]).contains(taken),
        "node ps shows it too"
    );
    assert!(
        ok(&cluster, &["node", "ls"])
            .contains("port 8080/tcp taken by another process on this node"),
        "and node ls, as node2's message"
    );
    for i in [0, 2] {
        wait_for("hosts 1 and 3 answering 8080", WAIT, || {
            get(at(hosts, i, 8080))
        });
    }
    // The process goes: host 2 takes the port, and says nothing more of it.
    squatter.kill().expect("the listener killed");
    squatter.wait().expect("the listener ended");
    wait_for("the message cleared", WAIT, || {
        (!ok(&cluster, &["service", "ps", "web"]).contains("taken")).then_some(())
    });
    let page = wait_for("every host answering 8080", WAIT, || {
        let answers: Vec<String> = (0..3).filter_map(|i| get(at(hosts, i, 8080))).collect();
        (answers.len() == 3).then_some(answers)
    });
    assert!(
        page.iter().all(|p| p == &page[0] && p.ends_with(" v1")),
        "one replica answers everywhere: {page:?}"
    );
    // A client on host 1 itself, by a loopback address: its connection leaves for host 3
    // from the loopback address (rewritten to host 1's on the way out), and its answer
    // comes back to it.
    let local = hosts
        .output(0, "curl", &["-s", "-m", "5", "http://127.0.0.1:8080/"])
        .expect("curl on host 1");
    assert_eq!(
        String::from_utf8_lossy(&local.stdout).trim(),
        page[0].trim(),
        "host 1's own client reaches host 3's replica: {local:?}"
    );

    // Five replicas over the three hosts: answers come from several of them, on any host.
    ok(
        &cluster,
        &[
            "service",
            "update",
            "--constraint-rm",
            "node.hostname==node3",
            "--replicas",
            "5",
            "web",
        ],
    );
    wait_for("five replicas running", WAIT, || {
        (running(&cluster, "web").len() == 5).then_some(())
    });
    for i in 0..3 {
        let seen = wait_for("several replicas answering", WAIT, || {
            let seen = pages(at(hosts, i, 8080), 20);
            (seen.len() >= 3).then_some(seen)
        });
        assert!(seen.iter().all(|p| p.ends_with(" v1")), "{seen:?}");
    }

    // A replica's container on host 3 killed under a bounded load loop through host 1: host
    // 3 drops it from its rules as soon as its worker sees the exit, the other hosts once
    // the managers' view says it stopped; the service heals back to five.
    let node3 = cluster.node_id(2).expect("node 3's id");
    let victim = running(&cluster, "web")
        .into_iter()
        .find(|t| t["node_id"] == node3.as_str())
        .expect("a replica on host 3")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let entry = at(hosts, 0, 8080);
    let (answers, failures) = load_while(
        || get(entry),
        || {
            let killed = std::time::Instant::now();
            let status = std::process::Command::new("runc")
                .arg("--root")
                .arg(cluster.data(2).join("runc"))
                .args(["kill", &victim, "KILL"])
                .status()
                .expect("runc kill");
            assert!(status.success(), "runc kill {victim}");
            wait_for("the killed replica no longer running", WAIT, || {
                (!running(&cluster, "web")
                    .iter()
                    .any(|t| t["id"] == victim.as_str()))
                .then_some(())
            });
            eprintln!(
                "the killed replica left the managers' view {:?} after its kill",
                killed.elapsed()
            );
            wait_for("five replicas running again", WAIT, || {
                (running(&cluster, "web").len() == 5).then_some(())
            });
        },
    );
    eprintln!(
        "a killed replica: {failures} of {} requests failed",
        answers.len() + failures
    );
    assert!(
        failures <= KILLED_IN_FLIGHT,
        "{failures} requests failed: more than those in flight on the killed replica"
    );

    // Host mode: only where its task runs.
    ok(
        &cluster,
        &[
            "service",
            "create",
            "--name",
            "direct",
            "--publish",
            "mode=host,published=9090,target=80",
            "--constraint",
            "node.hostname==node2",
            "--stop-grace-period",
            "1s",
            &image,
        ],
    );
    wait_for("host 2 answering 9090", WAIT, || get(at(hosts, 1, 9090)));
    assert_eq!(get(at(hosts, 0, 9090)), None, "host 1 runs no task of it");
    assert_eq!(get(at(hosts, 2, 9090)), None, "host 3 runs no task of it");

    // A port given no number: the cluster publishes one of 30000–32767, which `service
    // inspect` shows, and every host answers it.
    ok(
        &cluster,
        &[
            "service",
            "create",
            "--name",
            "auto",
            "--publish",
            "80",
            "--stop-grace-period",
            "1s",
            &image,
        ],
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["service", "inspect", "auto"])).unwrap();
    let published = inspect[0]["Endpoint"]["Ports"][0]["published"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no published port in {inspect}"));
    assert!((30000..=32767).contains(&published), "{inspect}");
    assert!(
        ok(&cluster, &["service", "ls"]).contains(&format!("*:{published}->80/tcp")),
        "service ls shows the port"
    );
    wait_for("every host answering the cluster's port", WAIT, || {
        (0..3)
            .all(|i| get(at(hosts, i, published)).is_some())
            .then_some(())
    });

    // PROXY protocol v2: the task (on host 3) reads the header the node wrote, with the
    // client's own address, whether the client came through host 1 or host 3.
    ok(
        &cluster,
        &[
            "service",
            "create",
            "--name",
            "proxied",
            "--publish",
            "published=8443,target=80,proxy-protocol=v2",
            "--constraint",
            "node.hostname==node3",
            "--stop-grace-period",
            "1s",
            "--entrypoint",
            "sh -c",
            &image,
            "nc -ll -p 80 -e sh -c 'od -An -tx1 -N 28 -v'",
        ],
    );
    for i in [0, 2] {
        let (client, header) = wait_for("the task's dump of a PROXY header", WAIT, || {
            dumped_header(at(hosts, i, 8443), None)
        });
        assert_eq!(&header[..12], b"\r\n\r\n\0\r\nQUIT\n", "{header:?}");
        assert_eq!(header[12..14], [0x21, 0x11], "v2 PROXY, TCP over IPv4");
        assert_eq!(
            header[16..20],
            client.ip().octets(),
            "the client's own address"
        );
        assert_eq!(header[24..26], client.port().to_be_bytes());
        assert_eq!(
            header[20..24],
            hosts.address(i).octets(),
            "the address it reached"
        );
        assert_eq!(header[26..28], 8443u16.to_be_bytes());
    }
    // A process of host 2, by host 2's own address, is a client like any other: host 1
    // writes its header. So is one that sets the mesh's DSCP itself to pass for the mesh
    // (and write its own header): host 2 clears it on the way.
    let mesh_tos = u32::from(swarm_agent::network::MESH_DSCP) << 2;
    for tos in [None, Some(mesh_tos)] {
        let (client, header) = hosts
            .run_in(1, || {
                wait_for("host 1's PROXY header for host 2's client", WAIT, || {
                    dumped_header(at(hosts, 0, 8443), tos)
                })
            })
            .expect("host 2's namespace");
        assert_eq!(*client.ip(), hosts.address(1), "tos {tos:?}");
        assert_eq!(header[16..20], client.ip().octets(), "tos {tos:?}");
        assert_eq!(header[24..26], client.port().to_be_bytes(), "tos {tos:?}");
        assert_eq!(header[20..24], hosts.address(0).octets(), "tos {tos:?}");
    }

    // UDP: a datagram to 5353 on any host, sent from host 1's namespace, reaches the task on
    // host 3 (through the mesh from hosts 1 and 2) and its answer comes back.
    ok(
        &cluster,
        &[
            "service",
            "create",
            "--name",
            "echo",
            "--publish",
            "5353:53/udp",
            "--constraint",
            "node.hostname==node3",
            "--stop-grace-period",
            "1s",
            "--entrypoint",
            "udp-echo",
            &image,
            "53",
        ],
    );
    for i in 0..3 {
        let target = at(hosts, i, 5353);
        let answer = wait_for("a UDP answer through the mesh", WAIT, || {
            hosts
                .run_in(0, || udp_ask(target, b"ping"))
                .expect("host 1's namespace")
        });
        assert!(
            answer.ends_with(" ping") && answer.len() > " ping".len(),
            "the task's hostname and the datagram, from host {}: {answer:?}",
            i + 1
        );
    }

    // A bounded load loop through host 1 while the service rolls to v2 (start-first): the
    // answers move to v2, and (almost) no request fails — see `few_failed`.
    let entry = at(hosts, 0, 8080);
    let v2 = format!("{}/swarm/hello:2", registry.addr());
    let (answers, failures) = load_while(
        || get(entry),
        || {
            ok(
                &cluster,
                &[
                    "service",
                    "update",
                    "--image",
                    &v2,
                    "--update-order",
                    "start-first",
                    "--update-parallelism",
                    "2",
                    "web",
                ],
            );
        },
    );
    assert!(
        answers.last().is_some_and(|p| p.ends_with(" v2")),
        "rolled to v2"
    );
    few_failed(answers.len(), failures);

    // The same while host 3 is drained.
    let node3 = cluster.node_id(2).expect("node 3's id");
    let (answers, failures) = load_while(
        || get(entry),
        || {
            ok(
                &cluster,
                &["node", "update", "--availability", "drain", &node3],
            );
            wait_for("no replica on host 3", WAIT, || {
                let tasks = running(&cluster, "web");
                (tasks.len() == 5 && tasks.iter().all(|t| t["node_id"] != node3.as_str()))
                    .then_some(())
            });
        },
    );
    few_failed(answers.len(), failures);
    assert!(
        get(at(hosts, 2, 8080)).is_some(),
        "a drained node still answers"
    );

    // A firewall reload on host 3 (`nft flush ruleset`, as Debian's nftables.service runs
    // it) takes its rules with everyone's: its canary says so within seconds, and its mesh
    // answers again, its bridge's and its mesh's iptables rules back.
    let flushed = hosts
        .output(2, "nft", &["flush", "ruleset"])
        .expect("nft on host 3");
    assert!(flushed.status.success(), "{flushed:?}");
    let bridge = swarm_agent::network::bridge_name(&node3);
    let mesh_table = swarm_agent::network::mesh_table_name(&node3);
    let rules_back = || {
        let iptables = |args: &[&str]| {
            let output = hosts.output(2, "iptables", args).ok()?;
            Some(String::from_utf8_lossy(&output.stdout).into_owned())
        };
        let nat = iptables(&["-w", "5", "-t", "nat", "-S", "POSTROUTING"])?;
        let forward = iptables(&["-w", "5", "-S", "FORWARD"])?;
        (nat.contains(&format!("! -o {bridge} -j MASQUERADE"))
            && forward.contains(&mesh_table)
            && get(at(hosts, 2, 8080)).is_some())
        .then_some(())
    };
    wait_for(
        "host 3's rules back after a firewall reload",
        WAIT,
        rules_back,
    );
    // An iptables reload (netfilter-persistent: `iptables-restore` of the filter and
    // nat tables) takes the iptables rules only: the canary chains say so.
    let script = std::env::temp_dir().join(format!("swarm-restore-{}", std::process::id()));
    std::fs::write(&script, "*filter\nCOMMIT\n*nat\nCOMMIT\n").unwrap();
    let restored = hosts
        .output(2, "iptables-restore", &[script.to_str().unwrap()])
        .expect("iptables-restore on host 3");
    let _ = std::fs::remove_file(&script);
    assert!(restored.status.success(), "{restored:?}");
    wait_for(
        "host 3's rules back after an iptables reload",
        WAIT,
        rules_back,
    );

    eprintln!("host 2 killed");
    // Host 2 killed: host 1 keeps answering (its replicas come back on hosts 1 and 3).
    hosts.kill(1);
    wait_for("host 1 answering without host 2", WAIT, || {
        let seen = pages(at(hosts, 0, 8080), 10);
        (seen.len() >= 2 && (0..10).all(|_| get(at(hosts, 0, 8080)).is_some())).then_some(())
    });

    // Host 3's daemon killed and its host cut off; started again, it cannot reach the
    // managers: what its last process set stays (its published ports' table), not
    // replaced by an empty view before its first assignment. Back on the network, it
    // answers again.
    hosts.kill(2);
    std::fs::remove_file(cluster.socket(2)).unwrap();
    let _restarted = daemon_on_host(hosts, 2, &cluster.nodes[2].0, &registry.addr());
    std::thread::sleep(Duration::from_secs(3));
    let tables = hosts.output(2, "nft", &["list", "tables"]).expect("nft");
    let tables = String::from_utf8_lossy(&tables.stdout).into_owned();
    assert!(
        tables.contains(&mesh_table),
        "host 3's mesh kept across its restart: {tables}"
    );
    hosts.set_link(2, true).unwrap();
    wait_for("host 3 answering again after its restart", WAIT, || {
        get(at(hosts, 2, 8080))
    });

    // Host 3 leaves with its ports published: its mesh goes, and `route_localnet` on its
    // data path device is set back (left on, a neighbour could reach its loopback
    // services).
    let localnet = |host: usize| {
        let output = hosts
            .output(host, "sysctl", &["-n", "net.ipv4.conf.eth0.route_localnet"])
            .expect("sysctl");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(localnet(2), "1", "opened by host 3's mesh");
    let left = swarm(&cluster.socket(2), &["leave"]);
    assert!(left.status.success(), "{}", text(&left.stderr));
    wait_for(
        "host 3's mesh gone and route_localnet set back",
        WAIT,
        || {
            let tables = hosts.output(2, "nft", &["list", "tables"]).ok()?;
            let tables = String::from_utf8_lossy(&tables.stdout).into_owned();
            let done = localnet(2) == "0" && !tables.contains("swmesh");
            if !done {
                eprintln!(
                    "host 3 after leaving: route_localnet {}, {tables}",
                    localnet(2)
                );
            }
            done.then_some(())
        },
    );
    ok(
        &cluster,
        &["service", "rm", "web", "direct", "proxied", "auto", "echo"],
    );
    // No port published any more: host 1's mesh goes, and with it `route_localnet` on its
    // node bridge (a task could otherwise reach the node's loopback services through its
    // gateway) and its data path device.
    let bridge1 = swarm_agent::network::bridge_name(&cluster.node_id(0).expect("node 1's id"));
    wait_for("host 1's mesh gone, route_localnet shut", WAIT, || {
        let setting = |device: &str| {
            let key = format!("net.ipv4.conf.{device}.route_localnet");
            let output = hosts.output(0, "sysctl", &["-n", &key]).ok()?;
            Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        };
        (setting(&bridge1)? == "0" && setting("eth0")? == "0").then_some(())
    });
}
