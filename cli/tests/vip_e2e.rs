//! Virtual IPs through real daemons on two test hosts: `service inspect` shows a service's
//! VIP on its network, a client task reaches the service at its VIP and its connections
//! land on tasks on both hosts; scaled down to the task on host 2, new connections go there
//! only; a client looping on the VIP through a start-first update sees no failure.
//!
//! Needs root, runc, busybox, nft and docker-registry; skipped with a message otherwise,
//! except under CI=true.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// The running tasks of `service` on `network`: (task id, node hostname).
fn running_on(cluster: &Cluster, network: &str, service: &str) -> Vec<(String, String)> {
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
        .map(|t| (field(t, "id"), field(t, "node")))
        .collect()
}

/// The pages `count` fetches of the VIP got (each `<task hostname> v1`).
fn pages(cluster: &Cluster, client: &str, vip: &str, count: usize) -> BTreeSet<String> {
    (0..count)
        .filter_map(|_| fetch_from_task(cluster, 0, client, vip))
        .collect()
}

#[test]
fn a_client_task_reaches_a_service_at_its_vip_balanced_over_hosts() {
    let test = "a_client_task_reaches_a_service_at_its_vip_balanced_over_hosts";
    if !hosts_can_run_containers(test, &["nft"]) {
        return;
    }
    let (cluster, registry) = workers_on_hosts("vipe", 2, &init_args("198.18.228.0/23", &[]));
    let image = format!("{}/swarm/hello:1", registry.addr());
    ok(
        &cluster,
        &["network", "create", "--subnet", "10.78.0.0/24", "front"],
    );
    // One task of back on each host.
    ok(
        &cluster,
        &[
            "service",
            "create",
            "--name",
            "back",
            "--network",
            "front",
            "--mode",
            "global",
            "--stop-grace-period",
            "1s",
            &image,
        ],
    );
    let inspect: Value = serde_json::from_str(&ok(&cluster, &["service", "inspect", "back"]))
        .expect("service inspect is JSON");
    let vips = &inspect[0]["Endpoint"]["VirtualIPs"];
    assert_eq!(vips.as_array().map(Vec::len), Some(1), "{inspect}");
    assert_eq!(vips[0]["Network"], "front");
    let addr = vips[0]["Addr"].as_str().expect("an address");
    let vip = addr.strip_suffix("/24").expect("the network's prefix");
    assert!(vip.starts_with("10.78.0."), "{addr}");
    let back = wait_for("back running on both hosts", WAIT, || {
        let tasks = running_on(&cluster, "front", "back");
        (tasks.len() == 2).then_some(tasks)
    });
    let hosts_of_back: BTreeSet<&str> = back.iter().map(|(_, node)| node.as_str()).collect();
    assert_eq!(hosts_of_back, ["node1", "node2"].into());

    let constraint = "node.hostname==node1";
    ok(
        &cluster,
        &[
            "service",
            "create",
            "--name",
            "client",
            "--network",
            "front",
            "--constraint",
            constraint,
            "--stop-grace-period",
            "1s",
            &image,
        ],
    );
    let client = wait_for("the client running", WAIT, || {
        running_on(&cluster, "front", "client").pop()
    });
    // Both backs answer at the VIP: one beside the client, one across the overlay.
    let seen = wait_for("both back tasks answering at the VIP", WAIT, || {
        let seen = pages(&cluster, &client.0, vip, 12);
        (seen.len() == 2).then_some(seen)
    });
    assert!(seen.iter().all(|page| page.ends_with(" v1")), "{seen:?}");
    // The node's socket balancer sends the client's connection straight to a back task:
    // its socket runs to the task's address, not to the VIP (as through the DNAT), while
    // the client is told its peer is the VIP.
    let (peer, route) =
        peer_and_route_from_task(&cluster, 0, &client.0, vip).expect("a connection to the VIP");
    assert_eq!(peer.to_string(), vip);
    assert_ne!(route, vip, "the connection went through the DNAT");
    assert!(route.starts_with("10.78.0."), "{route}");

    // Only host 2's task left serving (host 1 drained): new connections go there only.
    ok(
        &cluster,
        &[
            "service",
            "update",
            "--constraint-add",
            "node.hostname==node2",
            "back",
        ],
    );
    let remaining = wait_for("back on host 2 only", WAIT, || {
        let tasks = running_on(&cluster, "front", "back");
        (tasks.len() == 1 && tasks[0].1 == "node2").then_some(tasks)
    });
    assert_eq!(remaining.len(), 1);
    let only = wait_for("the VIP answering from host 2's task only", WAIT, || {
        let seen = pages(&cluster, &client.0, vip, 8);
        (seen.len() == 1).then_some(seen)
    });
    assert!(only.iter().all(|page| page.ends_with(" v1")), "{only:?}");

    // The client looping on the VIP while back rolls to v2 (start-first): no request fails.
    let v2 = format!("{}/swarm/hello:2", registry.addr());
    let (answers, failures) = load_while(
        || fetch_from_task(&cluster, 0, &client.0, vip),
        || {
            let update = [
                "service",
                "update",
                "--image",
                &v2,
                "--update-order",
                "start-first",
                "back",
            ];
            ok(&cluster, &update);
        },
    );
    assert!(
        answers.last().is_some_and(|p| p.ends_with(" v2")),
        "rolled to v2"
    );
    let total = answers.len() + failures;
    assert_eq!(failures, 0, "{failures} of {total} requests failed");
    ok(&cluster, &["service", "rm", "client", "back"]);
}
