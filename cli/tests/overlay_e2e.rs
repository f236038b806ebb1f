//! Overlay networks across three test hosts: a client task on host 1 reaches a service's
//! task on host 2 at its address on their network (VXLAN between the hosts, programmed from
//! the managers' endpoint table); a task of another network, on the same host as the
//! client, cannot; an `--internal` network's tasks reach each other and nothing outside;
//! scaling adds the new task to the peers, a task on host 3 makes host 3
//! carry the network only while it runs, and removing a service takes its tasks off.
//!
//! Needs root, runc, busybox and docker-registry; skipped with a message otherwise, except
//! under CI=true.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use swarm_testkit::Hosts;

const WAIT: Duration = Duration::from_secs(60);

/// The running tasks of `service` on `network`: (task id, address, node hostname).
fn running_on(cluster: &Cluster, network: &str, service: &str) -> Vec<(String, String, String)> {
    let json = ok(
        cluster,
        &["network", "inspect", network, "--format", "json"],
    );
    let view: Value = serde_json::from_str(&json).unwrap();
    let field = |task: &Value, name: &str| task[name].as_str().unwrap_or_default().to_owned();
    view["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["service"] == service && t["state"] == "running")
        .map(|t| (field(t, "id"), field(t, "address"), field(t, "node")))
        .collect()
}

/// Waits for `count` running tasks of `service` on `network`.
fn wait_running(
    cluster: &Cluster,
    network: &str,
    service: &str,
    count: usize,
) -> Vec<(String, String, String)> {
    wait_for(
        &format!("{count} running tasks of {service} on {network}"),
        WAIT,
        || {
            let tasks = running_on(cluster, network, service);
            (tasks.len() == count).then_some(tasks)
        },
    )
}

/// Whether host `n` has an overlay VXLAN device (a node's are named `swx…`).
fn carries_an_overlay(hosts: &Hosts, n: usize) -> bool {
    let out = hosts.output(n, "ip", &["-o", "link", "show"]).unwrap();
    text(&out.stdout).lines().any(|line| {
        line.split(": ")
            .nth(1)
            .is_some_and(|name| name.starts_with("swx"))
    })
}

/// A service on `network`, placed on `hostname`, of the test image; `script`, if any,
/// replaces its server.
fn create(
    cluster: &Cluster,
    image: &str,
    name: &str,
    network: &str,
    hostname: &str,
    script: Option<&str>,
) {
    let constraint = format!("node.hostname=={hostname}");
    let mut args = vec![
        "service",
        "create",
        "--name",
        name,
        "--network",
        network,
        "--constraint",
        &constraint,
        "--stop-grace-period",
        "1s",
    ];
    if script.is_some() {
        args.extend(["--entrypoint", "sh -c"]);
    }
    args.push(image);
    args.extend(script);
    ok(cluster, &args);
}

#[test]
fn tasks_on_one_network_reach_each_other_across_hosts_and_no_other_network_does() {
    let test = "tasks_on_one_network_reach_each_other_across_hosts_and_no_other_network_does";
    if !hosts_can_run_containers(test, &[]) {
        return;
    }
    let (cluster, registry) = workers_on_hosts("ovl", 3, &init_args("198.18.220.0/22", &[]));
    let hosts = cluster.hosts.as_ref().unwrap();
    let image = format!("{}/swarm/hello:1", registry.addr());
    ok(
        &cluster,
        &["network", "create", "--subnet", "10.79.0.0/24", "front"],
    );
    ok(
        &cluster,
        &["network", "create", "--subnet", "10.79.1.0/24", "other"],
    );

    create(&cluster, &image, "back", "front", "node2", None);
    let back = wait_running(&cluster, "front", "back", 1);
    let (_, back_address, back_node) = &back[0];
    assert_eq!(back_node, "node2");
    // The client's own process fetches in a loop and logs what it got.
    let script = format!(
        "while true; do timeout 5 wget -q -O- http://{back_address}/ || echo unreachable; sleep 1; done"
    );
    create(&cluster, &image, "client", "front", "node1", Some(&script));
    let client = wait_running(&cluster, "front", "client", 1);
    let client_id = &client[0].0;
    let reached = wait_for("the client task reaching back", WAIT, || {
        let out = swarm(&cluster.socket(0), &["service", "logs", "client"]);
        let logs = text(&out.stdout);
        logs.lines()
            .find(|line| line.trim_end().ends_with(" v1"))
            .map(str::to_owned)
    });
    assert!(!reached.contains("unreachable"), "{reached}");
    assert!(
        !carries_an_overlay(hosts, 2),
        "host 3 runs no task on front"
    );

    // A task of another network, on the client's host, cannot reach back.
    create(&cluster, &image, "outsider", "other", "node1", None);
    let outsider = wait_running(&cluster, "other", "outsider", 1);
    let outsider_id = &outsider[0].0;
    for _ in 0..3 {
        assert_eq!(
            fetch_from_task(&cluster, 0, outsider_id, back_address),
            None,
            "isolated networks"
        );
    }
    assert!(
        fetch_from_task(&cluster, 0, client_id, back_address).is_some_and(|p| p.ends_with(" v1"))
    );

    // An --internal network: its tasks reach each other across hosts, and nothing outside
    // the node (the registry, at the hosts' gateway), where a task of front does.
    ok(
        &cluster,
        &[
            "network",
            "create",
            "--internal",
            "--subnet",
            "10.79.2.0/24",
            "vault",
        ],
    );
    create(&cluster, &image, "keeper", "vault", "node2", None);
    create(&cluster, &image, "sealed", "vault", "node1", None);
    let keeper = wait_running(&cluster, "vault", "keeper", 1);
    let sealed = wait_running(&cluster, "vault", "sealed", 1);
    let sealed_id = &sealed[0].0;
    wait_for("the sealed task reaching its peer", WAIT, || {
        fetch_from_task(&cluster, 0, sealed_id, &keeper[0].1).filter(|p| p.ends_with(" v1"))
    });
    let outside = registry.addr();
    wait_for("a task of front reaching the registry", WAIT, || {
        fetch_from_task(&cluster, 0, client_id, &format!("{outside}/v2")).map(drop)
    });
    assert_eq!(
        fetch_from_task(&cluster, 0, sealed_id, &format!("{outside}/v2")),
        None,
        "an internal network has no way out"
    );
    ok(&cluster, &["service", "rm", "keeper", "sealed"]);

    // Scaled, the new task is reached too.
    ok(&cluster, &["service", "scale", "back=2"]);
    let back = wait_running(&cluster, "front", "back", 2);
    for (_, address, node) in &back {
        assert_eq!(node, "node2");
        wait_for("the client reaching each back task", WAIT, || {
            fetch_from_task(&cluster, 0, client_id, address).filter(|p| p.ends_with(" v1"))
        });
    }

    // A task on host 3: host 3 carries front while it runs, and is reached from host 1.
    create(&cluster, &image, "third", "front", "node3", None);
    let third = wait_running(&cluster, "front", "third", 1);
    let third_address = &third[0].1;
    assert!(carries_an_overlay(hosts, 2));
    wait_for("the client reaching the task on host 3", WAIT, || {
        fetch_from_task(&cluster, 0, client_id, third_address).filter(|p| p.ends_with(" v1"))
    });
    ok(&cluster, &["service", "rm", "third"]);
    wait_for("host 3 carrying front no longer", WAIT, || {
        (!carries_an_overlay(hosts, 2)).then_some(())
    });
    assert_eq!(fetch_from_task(&cluster, 0, client_id, third_address), None);

    // Removed, back is reached no longer.
    ok(&cluster, &["service", "rm", "back"]);
    for (_, address, _) in &back {
        wait_for("back gone from the client's network", WAIT, || {
            fetch_from_task(&cluster, 0, client_id, address)
                .is_none()
                .then_some(())
        });
    }
    ok(&cluster, &["service", "rm", "client", "outsider"]);
    wait_for("host 1 carrying no overlay", WAIT, || {
        (!carries_an_overlay(hosts, 0)).then_some(())
    });
}

/// Two daemons on loopback (one network namespace): each takes its own data path port, so
/// their VXLAN devices for one network coexist and reach each other at 127.0.0.1; a
/// restarted daemon makes its overlay again for the task it adopts.
#[test]
fn nodes_sharing_a_namespace_carry_one_network_on_their_own_ports() {
    let test = "nodes_sharing_a_namespace_carry_one_network_on_their_own_ports";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(2, &init_args("198.18.224.0/23", &[]));
    cluster.join(1, "worker", 0);
    wait_for("two Ready nodes", Duration::from_secs(20), || {
        (cluster.listing(0).matches("Ready").count() == 2).then_some(())
    });
    ok(
        &cluster,
        &["network", "create", "--subnet", "10.79.8.0/24", "front"],
    );
    create(&cluster, &image, "back", "front", "node2", None);
    create(&cluster, &image, "client", "front", "node1", None);
    let back = wait_running(&cluster, "front", "back", 1);
    let client = wait_running(&cluster, "front", "client", 1);
    let page = wait_for("the client reaching back on the other node", WAIT, || {
        fetch_from_task(&cluster, 0, &client[0].0, &back[0].1)
    });
    assert!(page.ends_with(" v1"), "{page}");
    let page = wait_for("back reaching the client", WAIT, || {
        fetch_from_task(&cluster, 1, &back[0].0, &client[0].1)
    });
    assert!(page.ends_with(" v1"), "{page}");

    // Node 2's daemon dies and comes back: it adopts back's container and makes its
    // overlay again (what the earlier run made is torn down first), on the same port.
    let daemon = cluster.daemons[1].as_ref().unwrap();
    kill_hard(daemon);
    wait_for("node 2's daemon gone", Duration::from_secs(10), || {
        (!is_alive(daemon)).then_some(())
    });
    let (dir, port) = &cluster.nodes[1];
    let _restarted = start(dir, *port);
    wait_for("back's container adopted", WAIT, || {
        cluster
            .log(1)
            .contains("adopted a running container")
            .then_some(())
    });
    let page = wait_for("the client reaching back after the restart", WAIT, || {
        fetch_from_task(&cluster, 0, &client[0].0, &back[0].1)
    });
    assert!(page.ends_with(" v1"), "{page}");
    assert_eq!(
        running_on(&cluster, "front", "back"),
        back,
        "the same task, adopted"
    );
    // The adopted task reaches the client's virtual IP: the restarted node's VIPs are set
    // on the overlay it made again, not on the earlier run's, which it tore down.
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["service", "inspect", "client"]))
            .expect("service inspect is JSON");
    let vip = inspect[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
        .as_str()
        .and_then(|addr| addr.split('/').next())
        .expect("the client's virtual IP")
        .to_owned();
    let page = wait_for(
        "back reaching the client's VIP after the restart",
        WAIT,
        || fetch_from_task(&cluster, 1, &back[0].0, &vip),
    );
    assert!(page.ends_with(" v1"), "{page}");
    ok(&cluster, &["service", "rm", "back", "client"]);
}
