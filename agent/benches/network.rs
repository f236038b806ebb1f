//! Task networking: attach + detach of one task network, against the standard CNI plugins
//! (`bridge` with `host-local` IPAM, Debian's containernetworking-plugins, the way podman
//! and containerd wire a container) doing the same job on the same machine in the same
//! run. Needs root; the peer is skipped when the plugins are not installed.
//!
//!     cargo bench -p swarm-agent --bench network
//!
//! Target (issue 4): the runtime's budget is 20 tasks running in ≤ 2 s, so the network step
//! must stay well under 50 ms per task.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use swarm_agent::network::{NodeNetwork, NodeNetworkConfig};

const RUNS: usize = 50;
const WARMUP: usize = 3;
const PARALLEL_TASKS: usize = 20;
const CNI_DIR: &str = "/usr/lib/cni";

fn main() {
    if !swarm_testkit::is_root() {
        eprintln!("SKIPPED network bench: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    swarm(dir.path());
    if ["bridge", "host-local"]
        .iter()
        .all(|plugin| Path::new(CNI_DIR).join(plugin).is_file())
    {
        cni(dir.path());
    } else {
        eprintln!("SKIPPED the CNI peer: install containernetworking-plugins");
    }
}

fn swarm(dir: &Path) {
    let network = NodeNetwork::setup(NodeNetworkConfig {
        node_id: format!("bench-{}", std::process::id()),
        subnet: "198.18.110.0/24".parse().unwrap(),
        netns_dir: dir.join("netns"),
    })
    .unwrap();
    let (mut attach, mut detach) = (Vec::new(), Vec::new());
    for run in 0..WARMUP + RUNS {
        let task = format!("task-{run}");
        let started = Instant::now();
        network.attach(&task).unwrap();
        let attached = Instant::now();
        network.detach(&task).unwrap();
        if run >= WARMUP {
            attach.push(attached - started);
            detach.push(attached.elapsed());
        }
    }
    let total: Vec<Duration> = attach.iter().zip(&detach).map(|(a, d)| *a + *d).collect();
    report("swarm attach", &attach);
    report("swarm detach", &detach);
    report("swarm attach + detach", &total);

    // The runtime's case: 20 tasks starting at once, from 20 threads.
    let started = Instant::now();
    std::thread::scope(|scope| {
        for n in 0..PARALLEL_TASKS {
            let network = &network;
            scope.spawn(move || network.attach(&format!("parallel-{n}")).unwrap());
        }
    });
    let attached = started.elapsed();
    for n in 0..PARALLEL_TASKS {
        network.detach(&format!("parallel-{n}")).unwrap();
    }
    println!(
        "swarm {PARALLEL_TASKS} attaches from {PARALLEL_TASKS} threads: {:.1} ms wall",
        ms(attached)
    );
    network.teardown().unwrap();
}

fn cni(dir: &Path) {
    let bridge = format!("swbcni{}", std::process::id() % 100_000);
    let config = format!(
        r#"{{"cniVersion": "1.0.0", "name": "swarm-bench", "type": "bridge",
            "bridge": "{bridge}", "isGateway": true, "ipMasq": false,
            "ipam": {{"type": "host-local", "subnet": "198.18.111.0/24",
                      "dataDir": "{}"}}}}"#,
        dir.join("cni-ipam").display()
    );
    let (mut attach, mut detach) = (Vec::new(), Vec::new());
    for run in 0..WARMUP + RUNS {
        let netns = format!("swbench-{}-{run}", std::process::id());
        let started = Instant::now();
        run_ok("ip", &["netns", "add", &netns]);
        cni_call("ADD", &netns, &config);
        let attached = Instant::now();
        cni_call("DEL", &netns, &config);
        run_ok("ip", &["netns", "del", &netns]);
        if run >= WARMUP {
            attach.push(attached - started);
            detach.push(attached.elapsed());
        }
    }
    let total: Vec<Duration> = attach.iter().zip(&detach).map(|(a, d)| *a + *d).collect();
    report("CNI ip netns add + bridge ADD", &attach);
    report("CNI bridge DEL + ip netns del", &detach);
    report("CNI attach + detach", &total);
    run_ok("ip", &["link", "del", "dev", &bridge]);
}

fn cni_call(command: &str, netns: &str, config: &str) {
    let mut child = Command::new(Path::new(CNI_DIR).join("bridge"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", netns)
        .env("CNI_NETNS", format!("/run/netns/{netns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "CNI {command}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run_ok(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn report(name: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| ms(sorted[((sorted.len() - 1) as f64 * q).round() as usize]);
    println!(
        "{name}: median {:.1} ms, p10 {:.1} ms, p90 {:.1} ms ({} runs)",
        at(0.5),
        at(0.1),
        at(0.9),
        sorted.len()
    );
}
