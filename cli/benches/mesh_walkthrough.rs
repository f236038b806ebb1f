//! The Swarm walkthrough's routing-mesh benchmark on three test hosts running real daemons
//! (root): `ab -n 3000 -c 150` against a host's published port with the service at 1
//! replica — asking the host that runs it, then a host that does not (the mesh routes the
//! request on, as in the walkthrough when the node asked runs no replica) — then at 5 over
//! the three hosts, asking host 1. `cargo bench -p swarm-cli --bench mesh_walkthrough
//! [runs]` (release: the daemons are the benchmark's `swarm`).
//!
//! The image answers with its hostname from busybox httpd (a process per request), as the
//! walkthrough's does from nginx. Figures: requests per second (median of the runs) and
//! failed requests (all runs).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn running(cluster: &Cluster, service: &str) -> usize {
    live_tasks(cluster, service)
        .iter()
        .filter(|t| t["status"]["state"] == "running")
        .count()
}

/// One `ab -n 3000 -c 150` run: (requests per second, failed requests).
fn ab(url: &str) -> (f64, u64) {
    let output = Command::new("ab")
        .args(["-q", "-n", "3000", "-c", "150", "-s", "10", url])
        .output()
        .expect("ab (apache2-utils)");
    let text = String::from_utf8_lossy(&output.stdout);
    let figure = |label: &str| -> f64 {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} in\n{text}"))
    };
    (
        figure("Requests per second:"),
        figure("Failed requests:") as u64,
    )
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map_or(3, |a| a.parse().expect("a number of runs"));
    let (cluster, registry) = workers_on_hosts("walk", 3, &init_args("198.18.216.0/22", &[]));
    let hosts = cluster.hosts.as_ref().expect("test hosts");
    let image = format!("{}/swarm/hello:1", registry.addr());
    ok(
        &cluster,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--publish",
            "8080:80",
            &image,
        ],
    );
    let url = |host: usize| format!("http://{}:8080/", hosts.address(host));
    println!("ab -n 3000 -c 150 http://HOST:8080/, {runs} runs per line");
    println!("| replicas | host asked | req/s (median) | failed (all runs) |");
    println!("|---:|---|---:|---:|");
    for replicas in [1, 5] {
        ok(&cluster, &["service", "scale", &format!("web={replicas}")]);
        wait_for("the replicas running", Duration::from_secs(120), || {
            (running(&cluster, "web") == replicas).then_some(())
        });
        let asked: Vec<(usize, &str)> = if replicas == 1 {
            let node = live_tasks(&cluster, "web")[0]["node_id"]
                .as_str()
                .expect("the replica's node")
                .to_owned();
            let own = (0..hosts.len())
                .find(|&i| cluster.node_id(i).as_deref() == Some(node.as_str()))
                .expect("the replica's host");
            vec![
                (own, "the one running it"),
                ((own + 1) % hosts.len(), "another (routed on)"),
            ]
        } else {
            vec![(0, "host 1")]
        };
        for (host, label) in asked {
            let url = url(host);
            wait_for("the mesh answering", Duration::from_secs(30), || {
                let out = Command::new("curl")
                    .args(["-sf", "-m", "2", &url])
                    .output()
                    .ok()?;
                out.status.success().then_some(())
            });
            let mut rates = Vec::new();
            let mut failed = 0;
            for _ in 0..runs {
                let (rate, failures) = ab(&url);
                rates.push(rate);
                failed += failures;
            }
            rates.sort_by(f64::total_cmp);
            println!(
                "| {replicas} | {label} | {:.0} | {failed} |",
                rates[rates.len() / 2]
            );
        }
    }
    ok(&cluster, &["service", "rm", "web"]);
}
