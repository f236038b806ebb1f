//! What the node crate's unit tests start from: a service spec as the stack loader makes
//! it, and the plan that creates, updates or removes it.

use swarm_api::plan::{Action, Kind, ObjectSpec, Op};
use swarm_api::spec::ServiceSpec;
use swarm_api::store::Command;

/// Service `name` as `image: nginx` in a stack file makes it, on no network.
pub(crate) fn spec(name: &str) -> ServiceSpec {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.yaml");
    std::fs::write(&path, format!("services:\n  {name}:\n    image: nginx\n")).unwrap();
    let loaded = swarm_controller::stack::load(
        &swarm_controller::source::WorkTree,
        &path,
        "s.yaml",
        &|_| None,
    );
    let mut spec = loaded.stack.unwrap().services.remove(0);
    // Attached to no network: the store refuses a service naming one it does not have.
    spec.task.networks.clear();
    spec
}

/// A plan of one action on service `spec`.
pub(crate) fn plan(op: Op, spec: ServiceSpec) -> Command {
    Command::ApplyPlan {
        file_contents: Default::default(),
        expected_version: None,
        actions: vec![Action {
            op,
            kind: Kind::Service,
            name: spec.name.clone(),
            origin: Default::default(),
            changes: Vec::new(),
            spec: (op != Op::Remove).then(|| ObjectSpec::Service(Box::new(spec))),
        }],
        registry_auth: Default::default(),
        override_git: false,
    }
}
