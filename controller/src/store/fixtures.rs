//! What the store's tests start from: a cluster, and nodes joining it.

use swarm_api::store::{
    AddressPool, Availability, Cluster, Command, DEFAULT_CERTIFICATE_VALIDITY_MS, Node, NodeRole,
    NodeStatus,
};

/// A cluster whose address pool holds four /24 subnets: four nodes.
pub(crate) fn cluster() -> Command {
    Command::InitCluster(Cluster {
        id: "c1".into(),
        created_at: 1,
        heartbeat_period_ms: 1000,
        missed_heartbeats_for_down: 3,
        certificate_validity_ms: DEFAULT_CERTIFICATE_VALIDITY_MS,
        worker_token_secret: "w".into(),
        manager_token_secret: "m".into(),
        address_pool: AddressPool {
            base: "10.9.0.0/22".parse().unwrap(),
            subnet_size: 24,
        },
    })
}

/// Node `id` joining, Ready and active.
pub(crate) fn node(id: &str, role: NodeRole) -> Command {
    Command::AddNode(Node {
        id: id.into(),
        hostname: format!("host-{id}"),
        role,
        availability: Availability::Active,
        status: NodeStatus::Ready,
        status_since: 1,
        labels: Default::default(),
        address: "127.0.0.1:2377".into(),
        raft_id: None,
        description: Default::default(),
        subnet: None,
        worker_error: None,
        ports_taken: Vec::new(),
    })
}

/// `actions` applied as a plan at `index` (no version check, git-owned stacks overridden).
pub(crate) fn apply_plan(
    store: &mut super::Store,
    index: u64,
    actions: Vec<swarm_api::plan::Action>,
) -> swarm_api::store::Outcome {
    store.apply_command(
        index,
        Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: None,
            actions,
            registry_auth: Default::default(),
            override_git: true,
        },
    )
}
