//! A cluster of three daemons on three network-namespace test hosts (one address, hostname
//! and network stack each, joined by a bridge): managers join over the hosts' addresses,
//! a service's tasks run on every host and answer there, and when a host dies (its daemon
//! killed, its link cut) its task is replaced on the others.
//!
//! Needs root, runc, busybox and docker-registry; skipped with a message otherwise, except
//! under CI=true.

mod common;

use std::time::Duration;

use common::*;
use swarm_testkit::{Hosts, Registry};

/// Whether the test image's server at `address` answers from inside host `n` (a task's
/// address is on its node's bridge, in the host's own network): its page is the task's
/// hostname and the image's version.
fn answers_on_host(hosts: &Hosts, n: usize, address: &str) -> bool {
    let url = format!("http://{address}/");
    // Bounded by `timeout`: Debian's busybox 1.35 wget crashes with `-T`.
    hosts
        .output(
            n,
            "timeout",
            &["2", "busybox", "wget", "-q", "-O", "-", &url],
        )
        .is_ok_and(|out| out.status.success() && text(&out.stdout).trim_end().ends_with(" v1"))
}

/// The running tasks of `web`: each one's node (its index in `node_ids`) and address.
fn running_tasks(cluster: &Cluster, node_ids: &[String]) -> Vec<(usize, String)> {
    live_tasks(cluster, "web")
        .iter()
        .filter(|t| t["status"]["state"] == "running")
        .filter_map(|t| {
            let node = node_ids.iter().position(|id| t["node_id"] == **id)?;
            Some((node, t["status"]["address"].as_str()?.to_owned()))
        })
        .collect()
}

#[test]
fn a_service_spreads_over_three_hosts_and_heals_when_one_dies() {
    let test = "a_service_spreads_over_three_hosts_and_heals_when_one_dies";
    if !hosts_can_run_containers(test, &[]) {
        return;
    }
    let hosts = Hosts::create("node", 3).expect("three test hosts");
    // On the hosts' bridge, where every host reaches it.
    let registry = Registry::start_on(hosts.gateway().into()).expect("a registry");
    registry.push_test_images().expect("the test images");
    let pool = "198.18.216.0/22";
    let cluster = cluster_on_hosts(hosts, &registry.addr(), &init_args(pool, &[]));
    cluster.join(1, "manager", 0);
    cluster.join(2, "manager", 0);
    let listing = wait_for("three Ready managers", Duration::from_secs(20), || {
        let listing = cluster.listing(0);
        (listing.matches("Ready").count() == 3).then_some(listing)
    });
    for name in ["node1", "node2", "node3"] {
        assert!(node_line(&listing, name).is_some(), "{listing}");
    }

    let image = format!("{}/swarm/hello:1", registry.addr());
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "3",
            "--stop-grace-period",
            "1s",
            &image,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let hosts = cluster.hosts.as_ref().unwrap();
    let node_ids: Vec<String> = (0..3).map(|n| cluster.node_id(n).unwrap()).collect();
    // One task per host (the scheduler spreads them), each answering on its host.
    let placed = wait_for(
        "a running task on each host",
        Duration::from_secs(60),
        || {
            let running = running_tasks(&cluster, &node_ids);
            let mut nodes: Vec<usize> = running.iter().map(|(n, _)| *n).collect();
            nodes.sort();
            (nodes == [0, 1, 2]).then_some(running)
        },
    );
    for (n, address) in &placed {
        wait_for(
            "the task answering on its host",
            Duration::from_secs(20),
            || answers_on_host(hosts, *n, address).then_some(()),
        );
    }

    // Host 3 dies: its daemon killed, its link cut.
    kill_hard(cluster.daemons[2].as_ref().unwrap());
    hosts.set_link(2, false).unwrap();
    let listing = wait_for("node3 Down", Duration::from_secs(30), || {
        let listing = cluster.listing(0);
        node_line(&listing, "node3")
            .is_some_and(|line| line.contains("Down"))
            .then_some(listing)
    });
    assert_eq!(listing.matches("Ready").count(), 2, "{listing}");
    let healed = wait_for(
        "three running tasks on the live hosts",
        Duration::from_secs(60),
        || {
            let running: Vec<(usize, String)> = running_tasks(&cluster, &node_ids)
                .into_iter()
                .filter(|(n, _)| *n != 2)
                .collect();
            (running.len() == 3).then_some(running)
        },
    );
    for (n, address) in &healed {
        wait_for(
            "a replacement answering on its host",
            Duration::from_secs(20),
            || answers_on_host(hosts, *n, address).then_some(()),
        );
    }
    let out = swarm(&cluster.socket(0), &["service", "rm", "web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
