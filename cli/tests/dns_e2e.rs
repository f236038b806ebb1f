//! Service discovery end to end on three test hosts (issue 12, item 3): a stack's client
//! task on host 1 resolves, through its own /etc/resolv.conf (the node's DNS server on its
//! gateway), the stack's `back` (on host 2) by its short name, its full name and
//! `tasks.back` — every replica after a scale to 3 —, a `dnsrr` service's name to its tasks,
//! fetches a page from `back` by name, and cannot resolve the service of another stack's
//! network; a host killed, its task leaves `tasks.NAME` and the service's name keeps
//! answering from the task left. Names are asked with busybox `nslookup` inside the client's
//! container (`runc exec`: its namespaces and its files).
//!
//! The cluster's node pool is 198.18.210.0/23 (a /25 per node). Needs root, runc, busybox and
//! docker-registry; skipped with a message otherwise, except under CI=true.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// The addresses of the running tasks of `service` on `network`.
fn running_addresses(cluster: &Cluster, network: &str, service: &str) -> BTreeSet<String> {
    let json = ok(
        cluster,
        &["network", "inspect", network, "--format", "json"],
    );
    let view: Value = serde_json::from_str(&json).unwrap();
    view["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["service"] == service && t["state"] == "running")
        .filter_map(|t| t["address"].as_str().map(str::to_owned))
        .collect()
}

/// The addresses `nslookup NAME` finds inside task `task_id`'s container on node `n`
/// (empty when the name is not found); bounded by `timeout`.
fn lookup(cluster: &Cluster, n: usize, task_id: &str, name: &str) -> BTreeSet<String> {
    let out = Command::new("timeout")
        .arg("10")
        .arg("runc")
        .arg("--root")
        .arg(cluster.data(n).join("runc"))
        .args(["exec", task_id, "nslookup", name])
        .output()
        .expect("runc exec");
    let stdout = text(&out.stdout);
    // nslookup ran in the container, whatever it found: its server's lines come first
    // (the node's DNS server, from the container's resolv.conf); answers follow a
    // `Name:` line.
    assert!(
        stdout.starts_with("Server:"),
        "nslookup {name} in {task_id}: {stdout}{}",
        text(&out.stderr)
    );
    stdout
        .lines()
        .skip_while(|line| !line.starts_with("Name:"))
        .filter_map(|line| line.strip_prefix("Address:"))
        .map(|address| address.trim().to_owned())
        .collect()
}

/// `GET URL` by busybox `wget` inside task `task_id`'s container on node `n` (bounded):
/// the page, if it answered.
fn fetch(cluster: &Cluster, n: usize, task_id: &str, url: &str) -> Option<String> {
    // Bounded by `timeout`: Debian's busybox 1.35 wget crashes with `-T`.
    let out = Command::new("timeout")
        .arg("10")
        .arg("runc")
        .arg("--root")
        .arg(cluster.data(n).join("runc"))
        .args(["exec", task_id, "wget", "-q", "-O", "-", url])
        .output()
        .expect("runc exec");
    out.status.success().then(|| text(&out.stdout))
}

/// A stack of the test image's services: (key, its placement constraint, more `deploy:`
/// keys).
fn stack_file(registry: &str, services: &[(&str, &str, &str)]) -> String {
    let mut file = String::from("services:\n");
    for (name, constraint, deploy) in services {
        file.push_str(&format!(
            "  {name}:\n    image: {registry}/swarm/hello:1\n    stop_grace_period: 1s\n    deploy:\n{deploy}      placement:\n        constraints: [{constraint}]\n"
        ));
    }
    file
}

fn deploy(cluster: &Cluster, stack: &str, file: &str) {
    let path = cluster.nodes[0].0.join(format!("{stack}.yaml"));
    std::fs::write(&path, file).unwrap();
    ok(
        cluster,
        &["stack", "deploy", "-c", &path.to_string_lossy(), stack],
    );
}

#[test]
fn a_task_resolves_its_stacks_services_and_no_other_stacks() {
    let test = "a_task_resolves_its_stacks_services_and_no_other_stacks";
    if !hosts_can_run_containers(test, &[]) {
        return;
    }
    // A /25 task subnet per node: three in the test's /23.
    let pool = pool_args("198.18.210.0/23", "25", &[]);
    let (cluster, registry) = workers_on_hosts("dns", 3, &pool);
    let registry = registry.addr();
    let shop = [
        ("back", "node.hostname == node2", ""),
        ("client", "node.hostname == node1", ""),
        (
            "db",
            "node.hostname == node2",
            "      replicas: 2\n      endpoint_mode: dnsrr\n",
        ),
        // One task on each worker, for the killed host at the end.
        ("edge", "node.role == worker", "      mode: global\n"),
    ];
    deploy(&cluster, "shop", &stack_file(&registry, &shop));
    deploy(
        &cluster,
        "vault",
        &stack_file(&registry, &[("secret", "node.hostname == node2", "")]),
    );

    let client = wait_for("the client running on node1", WAIT, || {
        live_tasks(&cluster, "shop_client")
            .into_iter()
            .find(|t| t["status"]["state"] == "running")
            .and_then(|t| t["id"].as_str().map(str::to_owned))
    });
    let back = wait_for("back running", WAIT, || {
        let running = running_addresses(&cluster, "shop_default", "shop_back");
        (running.len() == 1).then_some(running)
    });
    wait_for("vault's secret running", WAIT, || {
        (running_addresses(&cluster, "vault_default", "vault_secret").len() == 1).then_some(())
    });

    // The short name and the full name: the VIP, or while the service has none, the
    // task's address.
    let short = wait_for("`back` resolved", WAIT, || {
        Some(lookup(&cluster, 0, &client, "back")).filter(|a| !a.is_empty())
    });
    assert_eq!(short.len(), 1, "{short:?}");
    let by_vip = short != back;
    assert_eq!(lookup(&cluster, 0, &client, "shop_back"), short);
    assert_eq!(lookup(&cluster, 0, &client, "SHOP_BACK."), short);
    assert_eq!(lookup(&cluster, 0, &client, "tasks.back"), back);
    assert_eq!(lookup(&cluster, 0, &client, "tasks.shop_back"), back);
    // A dnsrr service's name answers with its tasks' addresses.
    let db = wait_for("db's two tasks running", WAIT, || {
        let running = running_addresses(&cluster, "shop_default", "shop_db");
        (running.len() == 2).then_some(running)
    });
    wait_for(
        "db answered with its tasks",
        Duration::from_secs(10),
        || (lookup(&cluster, 0, &client, "db") == db).then_some(()),
    );
    assert_eq!(lookup(&cluster, 0, &client, "tasks.db"), db);

    // The client's own programs resolve through the C library too: `back` on host 2
    // answers by name (the test image's page ends with its version).
    let page = wait_for("back answering the client by name", WAIT, || {
        fetch(&cluster, 0, &client, "http://back/")
    });
    assert!(page.trim_end().ends_with(" v1"), "{page}");

    // Another stack's network is not the client's: its names are not found.
    for name in ["vault_secret", "secret", "tasks.vault_secret"] {
        assert_eq!(
            lookup(&cluster, 0, &client, name),
            BTreeSet::new(),
            "{name}"
        );
    }

    // Scaled to 3, tasks.back lists every replica (answers follow within a second of the
    // view; the tasks start first).
    ok(&cluster, &["service", "scale", "shop_back=3"]);
    let back = wait_for("three back tasks running", WAIT, || {
        let running = running_addresses(&cluster, "shop_default", "shop_back");
        (running.len() == 3).then_some(running)
    });
    wait_for(
        "tasks.back listing the three",
        Duration::from_secs(10),
        || (lookup(&cluster, 0, &client, "tasks.back") == back).then_some(()),
    );
    let service = if by_vip { short } else { back };
    assert_eq!(lookup(&cluster, 0, &client, "shop_back"), service);

    // Host 3 killed: once its node is Down, its edge task leaves `tasks.edge`, and `edge`
    // (its VIP, or its tasks' addresses) answers from host 2's task every time.
    let edges = wait_for("edge running on both workers", WAIT, || {
        let running = running_addresses(&cluster, "shop_default", "shop_edge");
        (running.len() == 2).then_some(running)
    });
    wait_for("tasks.edge listing both", Duration::from_secs(10), || {
        (lookup(&cluster, 0, &client, "tasks.edge") == edges).then_some(())
    });
    let hosts = cluster.hosts.as_ref().expect("test hosts");
    hosts.kill(2);
    let left = wait_for("tasks.edge without host 3's task", WAIT, || {
        let found = lookup(&cluster, 0, &client, "tasks.edge");
        (found.len() == 1).then_some(found)
    });
    assert!(left.is_subset(&edges), "{left:?} not among {edges:?}");
    let pages: Vec<Option<String>> = (0..10)
        .map(|_| fetch(&cluster, 0, &client, "http://edge/"))
        .collect();
    assert!(
        pages.iter().all(|page| page.is_some()),
        "edge answered {pages:?} after host 3 went"
    );
    let hostnames: BTreeSet<String> = pages
        .into_iter()
        .flatten()
        .map(|page| {
            page.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(hostnames.len(), 1, "one task left answers: {hostnames:?}");

    ok(&cluster, &["stack", "rm", "shop"]);
    ok(&cluster, &["stack", "rm", "vault"]);
}
