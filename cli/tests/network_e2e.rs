//! Networks as cluster objects, end to end on one daemon (issue 12, items 1 and 6):
//! `swarm network create|ls|inspect|rm`, the store's refusals (overlapping subnets, the
//! nodes' pool, node-local drivers, a name taken, a network in use, an unknown network in a
//! service), and a service's task given an address in its network's subnet, which
//! `network inspect` shows with the task's node.
//!
//! The cluster's node pool is 198.18.202.0/23; the cluster, dropped, removes containers,
//! mounts and bridges even when a test fails.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// How long a task may take to be created and started (a pull; tests in parallel).
const WAIT: Duration = Duration::from_secs(60);

/// The error `swarm args` fails with.
fn refused(cluster: &Cluster, args: &[&str]) -> String {
    let out = swarm(&cluster.socket(0), args);
    assert!(!out.status.success(), "swarm {args:?} succeeded");
    text(&out.stderr)
}

fn inspect(cluster: &Cluster, network: &str) -> Value {
    let json = ok(
        cluster,
        &["network", "inspect", network, "--format", "json"],
    );
    serde_json::from_str(&json).unwrap()
}

#[test]
fn networks_are_created_listed_inspected_refused_and_removed() {
    let cluster = cluster(1, &init_args("198.18.202.0/23", &[]));
    let id = ok(&cluster, &["network", "create", "back"]);
    assert_eq!(id.trim().len(), 25, "{id}");
    ok(
        &cluster,
        &[
            "network",
            "create",
            "--subnet",
            "10.77.0.0/24",
            "--gateway",
            "10.77.0.254",
            "--label",
            "team=a",
            "--internal",
            "front",
        ],
    );
    let listing = ok(&cluster, &["network", "ls"]);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 3, "{listing}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "NAME", "DRIVER", "SCOPE", "SUBNET"]
    );
    assert!(
        lines[1].ends_with("back    overlay   swarm   10.0.0.0/20"),
        "{listing}"
    );
    assert!(
        lines[2].ends_with("front   overlay   swarm   10.77.0.0/24"),
        "{listing}"
    );
    let front = inspect(&cluster, "front");
    assert_eq!(front["gateway"], "10.77.0.254");
    assert_eq!(front["internal"], true);
    assert_eq!(front["labels"]["team"], "a");
    // By id prefix too, as a table.
    let table = ok(&cluster, &["network", "inspect", &id.trim()[..8]]);
    assert!(table.contains("Name:       back\n"), "{table}");
    assert!(table.contains("Subnet:     10.0.0.0/20\n"), "{table}");

    let error = refused(
        &cluster,
        &["network", "create", "--subnet", "10.77.0.128/25", "clash"],
    );
    assert!(
        error.contains(
            "network clash: subnet 10.77.0.128/25 overlaps subnet 10.77.0.0/24 of network front"
        ),
        "{error}"
    );
    let error = refused(
        &cluster,
        &["network", "create", "--subnet", "198.18.203.0/24", "nodes"],
    );
    assert!(
        error.contains("overlaps the cluster's node address pool 198.18.202.0/23"),
        "{error}"
    );
    let error = refused(&cluster, &["network", "create", "-d", "bridge", "local"]);
    assert!(
        error.contains("network local: the bridge driver is local to one node"),
        "{error}"
    );
    let error = refused(&cluster, &["network", "create", "back"]);
    assert!(error.contains("network back already exists"), "{error}");
    let error = refused(&cluster, &["network", "rm", "nope"]);
    assert!(error.contains("network nope not found"), "{error}");
    // Nothing of the refused ones was stored.
    assert_eq!(ok(&cluster, &["network", "ls", "-q"]), "back\nfront\n");

    // A stack's network is the stack's: its name is taken, and it goes with the stack.
    let file = cluster.nodes[0].0.join("web.yaml");
    std::fs::write(&file, "services:\n  site:\n    image: busybox\n").unwrap();
    let file = file.to_str().unwrap();
    ok(
        &cluster,
        &["stack", "deploy", "--detach", "-c", file, "web"],
    );
    let error = refused(&cluster, &["network", "create", "web_default"]);
    assert!(
        error.contains("network web_default already exists: it is a network of stack web"),
        "{error}"
    );
    let error = refused(&cluster, &["network", "rm", "web_default"]);
    assert!(
        error.contains("network web_default belongs to stack web"),
        "{error}"
    );
    ok(&cluster, &["stack", "rm", "web"]);

    ok(&cluster, &["network", "rm", "back"]);
    assert_eq!(ok(&cluster, &["network", "ls", "-q"]), "front\n");
    // Its subnet is free again.
    ok(&cluster, &["network", "create", "again"]);
    assert_eq!(inspect(&cluster, "again")["subnet"], "10.0.0.0/20");
}

#[test]
fn a_services_task_gets_an_address_in_its_network_and_the_network_stays_while_used() {
    let test = "a_services_task_gets_an_address_in_its_network_and_the_network_stays_while_used";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(1, &init_args("198.18.204.0/23", &[]));
    ok(
        &cluster,
        &["network", "create", "--subnet", "10.78.0.0/24", "back"],
    );
    let error = refused(
        &cluster,
        &[
            "service",
            "create",
            "--name",
            "lost",
            "--network",
            "nope",
            &image,
        ],
    );
    assert!(
        error.contains("network nope does not exist in the cluster"),
        "{error}"
    );
    ok(
        &cluster,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--network",
            "name=back,alias=www",
            &image,
        ],
    );
    let tasks = wait_for("two running tasks on back", WAIT, || {
        let network = inspect(&cluster, "back");
        let tasks = network["tasks"].as_array()?.clone();
        (tasks.len() == 2 && tasks.iter().all(|t| t["state"] == "running")).then_some(tasks)
    });
    let mut addresses: Vec<&str> = tasks
        .iter()
        .map(|t| t["address"].as_str().unwrap())
        .collect();
    addresses.sort();
    // The lowest hosts of the subnet but its gateway (.1) and the service's virtual IP
    // (.2, given when the service was made), one per task.
    let inspected: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["service", "inspect", "web"])).unwrap();
    assert_eq!(
        inspected[0]["Endpoint"]["VirtualIPs"][0]["Addr"], "10.78.0.2/24",
        "{inspected}"
    );
    assert_eq!(addresses, ["10.78.0.3", "10.78.0.4"]);
    assert!(tasks.iter().all(|t| t["node"] == "node1"), "{tasks:?}");
    let table = ok(&cluster, &["network", "inspect", "back"]);
    assert!(table.contains("web.1   10.78.0."), "{table}");

    let error = refused(&cluster, &["network", "rm", "back"]);
    assert!(
        error.contains("network back is in use by service web"),
        "{error}"
    );
    // Detached by an update, the service's new tasks hold no address on it.
    ok(
        &cluster,
        &["service", "update", "--network-rm", "back", "web"],
    );
    wait_for("the tasks to leave back", WAIT, || {
        inspect(&cluster, "back")["tasks"]
            .as_array()
            .is_some_and(|t| t.is_empty())
            .then_some(())
    });
    ok(&cluster, &["network", "rm", "back"]);
    ok(&cluster, &["service", "rm", "web"]);
}
