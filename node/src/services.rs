//! Services on the control API: created, changed and removed as one-action plans (the same
//! `ApplyPlan` command GitOps uses), and read together with their tasks.

use std::collections::BTreeMap;

use swarm_api::auth::RegistryAuth;
use swarm_api::plan::{Action, Kind, ObjectSpec, Op};
use swarm_api::spec::{PublishMode, ServiceSpec};
use swarm_api::state::Object;
use swarm_api::store::Command;
use swarm_api::task::{ServiceLookupError, ServicesView};
use tonic::Status;

use super::{propose, raft_status};
use swarm_controller::raft::driver::RaftHandle;
use swarm_controller::store::Store;

fn parse_spec(json: &str) -> Result<ServiceSpec, Status> {
    let spec: ServiceSpec = serde_json::from_str(json)
        .map_err(|e| Status::invalid_argument(format!("invalid service spec: {e}")))?;
    if spec.name.is_empty() {
        return Err(Status::invalid_argument("a service needs a name (--name)"));
    }
    Ok(spec)
}

/// A service's registry credentials as the request carries them (JSON; empty for none).
fn parse_registry_auth(json: &str) -> Result<Option<RegistryAuth>, Status> {
    if json.is_empty() {
        return Ok(None);
    }
    // serde's message would quote the input, which holds passwords.
    let auth: RegistryAuth = serde_json::from_str(json).map_err(|_| {
        Status::invalid_argument(
            "invalid registry credentials: expected a map of registry to username and password",
        )
    })?;
    Ok(Some(auth))
}

/// The services and everything `service ls|ps` shows, read linearizably.
pub async fn view(raft: &RaftHandle<Store>) -> Result<ServicesView, Status> {
    raft.read(|store: &Store| {
        let data = store.data();
        ServicesView {
            version: data.objects.version,
            services: data.objects.services.clone(),
            tasks: data.tasks.values().cloned().collect(),
            nodes: data
                .nodes
                .values()
                .map(|n| (n.id.clone(), n.hostname.clone()))
                .collect(),
            update_status: data.update_status.clone(),
        }
    })
    .await
    .map_err(raft_status)
}

/// The service that `reference` names, or the error the CLI shows.
pub fn resolve<'a>(
    view: &'a ServicesView,
    reference: &str,
) -> Result<&'a Object<ServiceSpec>, Status> {
    view.service(reference).map_err(|error| match error {
        ServiceLookupError::NotFound(_) => Status::not_found(error.to_string()),
        ServiceLookupError::Ambiguous { .. } => Status::invalid_argument(error.to_string()),
    })
}

/// Published ports of `spec` that another service already publishes through the mesh.
fn port_conflicts(view: &ServicesView, spec: &ServiceSpec) -> Result<(), Status> {
    for port in spec
        .endpoint
        .ports
        .iter()
        .filter(|p| p.mode == PublishMode::Ingress)
    {
        let Some(published) = port.published else {
            continue;
        };
        let taken = view.services.iter().find(|other| {
            other.spec.name != spec.name
                && other.spec.endpoint.ports.iter().any(|p| {
                    p.mode == PublishMode::Ingress
                        && p.published == Some(published)
                        && p.protocol == port.protocol
                })
        });
        if let Some(other) = taken {
            return Err(Status::failed_precondition(format!(
                "port {published}/{} is already published by service {}: publish another port",
                port.protocol, other.spec.name
            )));
        }
    }
    Ok(())
}

pub async fn create(
    raft: &RaftHandle<Store>,
    spec_json: &str,
    registry_auth_json: &str,
) -> Result<String, Status> {
    let spec = parse_spec(spec_json)?;
    let auth = parse_registry_auth(registry_auth_json)?;
    let view = view(raft).await?;
    if view.services.iter().any(|s| s.spec.name == spec.name) {
        return Err(Status::already_exists(format!(
            "a service named {} already exists: choose another --name, or `swarm service update` it",
            spec.name
        )));
    }
    port_conflicts(&view, &spec)?;
    let name = spec.name.clone();
    let action = Action {
        op: Op::Create,
        kind: Kind::Service,
        name: name.clone(),
        origin: Default::default(),
        changes: Vec::new(),
        spec: Some(ObjectSpec::Service(Box::new(spec))),
    };
    apply(raft, Some(view.version), action, auth).await?;
    let view = self::view(raft).await?;
    let service = resolve(&view, &name)?;
    Ok(service.id.clone().unwrap_or_default())
}

pub async fn update(
    raft: &RaftHandle<Store>,
    reference: &str,
    spec_json: &str,
    version: u64,
    registry_auth_json: &str,
) -> Result<(), Status> {
    let spec = parse_spec(spec_json)?;
    let auth = parse_registry_auth(registry_auth_json)?;
    let view = view(raft).await?;
    let service = resolve(&view, reference)?;
    if spec.name != service.spec.name {
        return Err(Status::invalid_argument(format!(
            "a service cannot be renamed ({} → {})",
            service.spec.name, spec.name
        )));
    }
    port_conflicts(&view, &spec)?;
    let same_but_replicas = ServiceSpec {
        mode: service.spec.mode,
        ..spec.clone()
    } == service.spec;
    let op = if same_but_replicas {
        Op::Scale
    } else {
        Op::Update
    };
    let action = Action {
        op,
        kind: Kind::Service,
        name: spec.name.clone(),
        // An imperative change keeps the service's origin: a git-managed service changed
        // by hand is drift, which the next plan shows.
        origin: service.origin.clone(),
        changes: Vec::new(),
        spec: Some(ObjectSpec::Service(Box::new(spec))),
    };
    apply(raft, Some(version), action, auth).await
}

/// Puts a service back to the spec it had before its last change, rolled out with its
/// `rollback_config`; a rollback is a change too, so rolling back twice goes forward again
/// (as Docker does). The store refuses it if the service has no previous spec.
pub async fn rollback(raft: &RaftHandle<Store>, reference: &str) -> Result<(), Status> {
    let view = view(raft).await?;
    let service = resolve(&view, reference)?;
    propose(
        raft,
        &Command::RollbackService {
            expected_version: view.version,
            service_id: service.id.clone().unwrap_or_default(),
            at: super::millis(std::time::SystemTime::now()),
        },
    )
    .await
}

pub async fn remove(
    raft: &RaftHandle<Store>,
    references: &[String],
) -> Result<Vec<String>, Status> {
    let view = view(raft).await?;
    let mut actions = Vec::new();
    for reference in references {
        let service = resolve(&view, reference)?;
        actions.push(Action {
            op: Op::Remove,
            kind: Kind::Service,
            name: service.spec.name.clone(),
            origin: service.origin.clone(),
            changes: Vec::new(),
            spec: None,
        });
    }
    let removed = actions.iter().map(|a| a.name.clone()).collect();
    propose(
        raft,
        &Command::ApplyPlan {
            expected_version: Some(view.version),
            actions,
            registry_auth: BTreeMap::new(),
        },
    )
    .await?;
    Ok(removed)
}

/// Applies a whole plan as one entry, checked against the state version it was made from,
/// with the registry credentials it brings for its services (by name).
pub async fn apply_plan(
    raft: &RaftHandle<Store>,
    plan_json: &str,
    registry_auth_json: &str,
) -> Result<(), Status> {
    let plan: swarm_api::plan::Plan = serde_json::from_str(plan_json)
        .map_err(|e| Status::invalid_argument(format!("invalid plan: {e}")))?;
    let registry_auth: BTreeMap<String, RegistryAuth> = if registry_auth_json.is_empty() {
        BTreeMap::new()
    } else {
        serde_json::from_str(registry_auth_json).map_err(|_| {
            Status::invalid_argument(
                "invalid registry credentials: expected a map of service name to registry credentials",
            )
        })?
    };
    let Some(version) = plan.basis.state_version else {
        return Err(Status::invalid_argument(
            "the plan was not computed against this cluster's state (no state version): plan it against the cluster",
        ));
    };
    propose(
        raft,
        &Command::ApplyPlan {
            expected_version: Some(version),
            actions: plan.actions,
            registry_auth,
        },
    )
    .await
}

async fn apply(
    raft: &RaftHandle<Store>,
    version: Option<u64>,
    action: Action,
    auth: Option<RegistryAuth>,
) -> Result<(), Status> {
    let registry_auth = auth
        .map(|auth| BTreeMap::from([(action.name.clone(), auth)]))
        .unwrap_or_default();
    propose(
        raft,
        &Command::ApplyPlan {
            expected_version: version,
            actions: vec![action],
            registry_auth,
        },
    )
    .await
}
