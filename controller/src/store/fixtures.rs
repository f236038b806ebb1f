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

/// `actions` as a plan with nothing else: no version check, no file contents or registry
/// credentials, git-owned stacks not overridden.
pub(crate) fn plan_command(actions: Vec<swarm_api::plan::Action>) -> Command {
    Command::ApplyPlan {
        file_contents: Default::default(),
        expected_version: None,
        actions,
        registry_auth: Default::default(),
        override_git: false,
    }
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

/// The plan that creates stack `stack` as a stack file `STACK.yaml` holding `text` declares
/// it (its default network first), against an empty cluster.
pub(crate) fn stack_actions(stack: &str, text: &str) -> Vec<swarm_api::plan::Action> {
    let dir = tempfile::tempdir().unwrap();
    let file = format!("{stack}.yaml");
    let path = dir.path().join(&file);
    std::fs::write(&path, text).unwrap();
    let loaded = crate::stack::load(&crate::source::WorkTree, &path, &file, &|_| None);
    let stack = loaded
        .stack
        .unwrap_or_else(|| panic!("{:?}", loaded.diagnostics));
    crate::plan::plan(
        &[stack],
        &swarm_api::state::ClusterState::empty(),
        &Default::default(),
        Default::default(),
    )
    .unwrap()
    .actions
}

/// Stack `s` created with service `NAME` of `replicas` replicas (`Op::Create`: its default
/// network, then the service), or that service scaled or removed.
pub(crate) fn service_plan(name: &str, replicas: u64, op: swarm_api::plan::Op) -> Command {
    use swarm_api::plan::{Kind, Op};
    let text = format!(
        "services:\n  {name}:\n    image: nginx\n    deploy:\n      replicas: {replicas}\n"
    );
    let mut actions = stack_actions("s", &text);
    if op != Op::Create {
        actions.retain(|a| a.kind == Kind::Service);
        for action in &mut actions {
            action.op = op;
            if op == Op::Remove {
                action.spec = None;
            }
        }
    }
    plan_command(actions)
}
