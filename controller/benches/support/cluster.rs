//! The simulated cluster the store benchmarks start from: nodes as a big worker reports
//! itself.

use std::collections::BTreeMap;

use swarm_api::store::{Availability, Node, NodeDescription, NodeRole, NodeStatus};

/// Worker `n`, Ready and active, with room for every task the benchmarks place.
pub fn node(n: usize) -> Node {
    Node {
        id: format!("node-{n:04}"),
        hostname: format!("host-{n:04}"),
        role: NodeRole::Worker,
        availability: Availability::Active,
        status: NodeStatus::Ready,
        status_since: 0,
        labels: BTreeMap::new(),
        address: String::new(),
        raft_id: None,
        description: NodeDescription {
            os: "linux".into(),
            arch: "x86_64".into(),
            nano_cpus: 64_000_000_000,
            memory_bytes: 256 << 30,
            data_path_port: swarm_api::endpoints::VXLAN_PORT,
            metrics_port: None,
        },
        subnet: None,
        worker_error: None,
        ports_taken: Vec::new(),
    }
}
