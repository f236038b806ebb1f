//! The simulated cluster the store benchmarks start from: its creation, and nodes as a
//! big worker reports itself.

use std::collections::BTreeMap;

use swarm_api::store::{
    AddressPool, Availability, Cluster, Command, Node, NodeDescription, NodeRole, NodeStatus,
};

/// The cluster's creation, its nodes' subnets (/24s) taken from `pool`.
pub fn init(pool: &str) -> Command {
    Command::InitCluster(Cluster {
        id: "bench".into(),
        created_at: 0,
        heartbeat_period_ms: 1000,
        missed_heartbeats_for_down: 3,
        certificate_validity_ms: swarm_api::store::DEFAULT_CERTIFICATE_VALIDITY_MS,
        worker_token_secret: String::new(),
        manager_token_secret: String::new(),
        address_pool: AddressPool {
            base: pool.parse().unwrap(),
            subnet_size: 24,
        },
    })
}

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
