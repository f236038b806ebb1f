//! Services on the control API: created, changed and removed as one-action plans (the same
//! `ApplyPlan` command GitOps uses), and read together with their tasks.
//!
//! The store checks versions per object: a one-service command conflicts only with a
//! change to that service. When it does, the command is made again over the service as it
//! is now, here on the server (at most `ATTEMPTS` times): a rollback or a removal is an
//! intent the server holds; an update or a scale arrives as a whole spec the client built
//! from the one it read, so the client sends that one too (`base_spec_json`), and the
//! server makes the same field changes over the service's current spec (`rebase`).
//! Commands on one service that reach the same manager at once take turns (`Turns`), so
//! that they do not all decide against the same spec and conflict with each other: each
//! reads what the one before it wrote. Between managers, the retries remain.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;
use swarm_api::auth::RegistryAuth;
use swarm_api::plan::{Action, Kind, ObjectSpec, Op};
use swarm_api::spec::{PublishMode, ServiceSpec};
use swarm_api::state::Object;
use swarm_api::store::{Command, Conflict, ConflictSubject, StoreData};
use swarm_api::task::{ServiceLookupError, ServicesView, VirtualIp};
use tonic::Status;

use super::store_status;
use swarm_controller::store::Store;
use swarm_controller::store::client::{StoreClient, StoreError};

/// How many times a one-service command is made when its service keeps changing meanwhile.
const ATTEMPTS: u32 = 5;

/// A turn per service reference (as the command names it: the CLI sends the service's
/// id), for the one-service commands that reach this node at the same time.
#[derive(Default)]
pub struct Turns(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Turns {
    /// Waits for the turn of `service`; it passes on when the guard drops.
    pub async fn take(&self, service: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let turn = {
            let mut turns = self.0.lock().expect("not poisoned");
            // Turns nobody holds or waits for are forgotten.
            turns.retain(|_, turn| Arc::strong_count(turn) > 1);
            turns.entry(service.to_owned()).or_default().clone()
        };
        turn.lock_owned().await
    }
}

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
pub async fn view(store: &StoreClient) -> Result<ServicesView, Status> {
    store
        .read(|store: &Store| {
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
                virtual_ips: virtual_ips(data),
                assigned_ports: data.assigned_ports.clone(),
            }
        })
        .await
        .map_err(store_status)
}

/// The store's virtual IPs as `service inspect` shows them: with the network's id, and the
/// prefix length of its subnet.
fn virtual_ips(data: &StoreData) -> BTreeMap<String, Vec<VirtualIp>> {
    data.service_vips
        .iter()
        .map(|(service, vips)| {
            let shown = vips
                .iter()
                .map(|vip| {
                    let network_id = data
                        .objects
                        .networks
                        .iter()
                        .find(|n| n.spec.name == vip.network)
                        .and_then(|n| n.id.clone())
                        .unwrap_or_default();
                    let prefix = data
                        .network_allocations
                        .get(&vip.network)
                        .map_or(32, |a| a.subnet.prefix_len());
                    VirtualIp {
                        network_id,
                        network: vip.network.clone(),
                        addr: format!("{}/{prefix}", vip.address),
                    }
                })
                .collect();
            (service.clone(), shown)
        })
        .collect()
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
    store: &StoreClient,
    spec_json: &str,
    registry_auth_json: &str,
) -> Result<String, Status> {
    let spec = parse_spec(spec_json)?;
    let auth = parse_registry_auth(registry_auth_json)?;
    let view = view(store).await?;
    let taken = || {
        Status::already_exists(format!(
            "a service named {} already exists: choose another --name, or `swarm service update` it",
            spec.name
        ))
    };
    if view.services.iter().any(|s| s.spec.name == spec.name) {
        return Err(taken());
    }
    port_conflicts(&view, &spec)?;
    let name = spec.name.clone();
    let action = Action {
        op: Op::Create,
        kind: Kind::Service,
        name: name.clone(),
        origin: Default::default(),
        changes: Vec::new(),
        spec: Some(ObjectSpec::Service(Box::new(spec.clone()))),
    };
    match apply(store, Some(view.version), action, auth).await {
        Ok(()) => {}
        // Created by someone else since the view was read.
        Err(StoreError::Conflict(_)) => return Err(taken()),
        Err(error) => return Err(store_status(error)),
    }
    let view = self::view(store).await?;
    let service = resolve(&view, &name)?;
    Ok(service.id.clone().unwrap_or_default())
}

/// Replaces service `reference`'s spec with `spec_json`, made by the client from
/// `base_spec_json` as it read it at state `version`. If the service changed since, the
/// same change is made over its spec as it is now (see the module's words).
pub async fn update(
    store: &StoreClient,
    turns: &Turns,
    reference: &str,
    spec_json: &str,
    version: u64,
    base_spec_json: &str,
    registry_auth_json: &str,
) -> Result<(), Status> {
    let mut wanted = parse_spec(spec_json)?;
    let mut base = if base_spec_json.is_empty() {
        None
    } else {
        Some(parse_spec(base_spec_json)?)
    };
    let auth = parse_registry_auth(registry_auth_json)?;
    let mut basis = version;
    // After a conflict: the spec `wanted` was made from, to make the change again over the
    // service as the next read finds it.
    let mut moved_from: Option<ServiceSpec> = None;
    let _turn = turns.take(reference).await;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let view = view(store).await?;
        let service = resolve(&view, reference)?;
        if let Some(from) = moved_from.take() {
            wanted = rebase(&from, &wanted, &service.spec).map_err(|reason| {
                Status::aborted(format!(
                    "service {} changed while this update was applied, and the change cannot be made again over it ({reason}); run the command again",
                    service.spec.name
                ))
            })?;
            base = Some(service.spec.clone());
            basis = view.version;
        }
        if wanted.name != service.spec.name {
            return Err(Status::invalid_argument(format!(
                "a service cannot be renamed ({} → {})",
                service.spec.name, wanted.name
            )));
        }
        port_conflicts(&view, &wanted)?;
        let same_but_replicas = ServiceSpec {
            mode: service.spec.mode,
            ..wanted.clone()
        } == service.spec;
        let op = if same_but_replicas {
            Op::Scale
        } else {
            Op::Update
        };
        let action = Action {
            op,
            kind: Kind::Service,
            name: wanted.name.clone(),
            // An imperative change keeps the service's origin: a git-managed service
            // changed by hand is drift, which the next plan shows.
            origin: service.origin.clone(),
            changes: Vec::new(),
            spec: Some(ObjectSpec::Service(Box::new(wanted.clone()))),
        };
        let conflict = match apply(store, Some(basis), action, auth.clone()).await {
            Ok(()) => return Ok(()),
            Err(StoreError::Conflict(conflict)) => conflict,
            Err(error) => return Err(store_status(error)),
        };
        tracing::debug!(%conflict, attempt, "a service update met a change to its service");
        moved_from = base.take().filter(|_| attempt < ATTEMPTS);
        if moved_from.is_none() {
            return Err(changed_meanwhile(&conflict, "update"));
        }
    }
}

/// Puts a service back to the spec it had before its last change, rolled out with its
/// `rollback_config`; a rollback is a change too, so rolling back twice goes forward again
/// (as Docker does). The store refuses it if the service has no previous spec.
pub async fn rollback(store: &StoreClient, turns: &Turns, reference: &str) -> Result<(), Status> {
    let _turn = turns.take(reference).await;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let view = view(store).await?;
        let service = resolve(&view, reference)?;
        let command = Command::RollbackService {
            expected_version: view.version,
            service_id: service.id.clone().unwrap_or_default(),
            at: super::millis(std::time::SystemTime::now()),
        };
        match store.propose(&command).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict(conflict)) if attempt >= ATTEMPTS => {
                return Err(changed_meanwhile(&conflict, "rollback"));
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(error) => return Err(store_status(error)),
        }
    }
}

pub async fn remove(
    store: &StoreClient,
    turns: &Turns,
    references: &[String],
) -> Result<Vec<String>, Status> {
    // In one order, so that two removals of the same services cannot wait for each other.
    let mut ordered: Vec<&String> = references.iter().collect();
    ordered.sort();
    ordered.dedup();
    let mut held = Vec::with_capacity(ordered.len());
    for reference in ordered {
        held.push(turns.take(reference).await);
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let view = view(store).await?;
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
        let command = Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: Some(view.version),
            actions,
            registry_auth: BTreeMap::new(),
            override_git: true,
        };
        match store.propose(&command).await {
            Ok(_) => return Ok(removed),
            Err(StoreError::Conflict(conflict)) if attempt >= ATTEMPTS => {
                return Err(changed_meanwhile(&conflict, "removal"));
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(error) => return Err(store_status(error)),
        }
    }
}

/// Applies a whole plan as one entry, all or nothing, refused if an object it touches
/// changed since the state version it was made from; with the registry credentials it
/// brings for its services (by name). `force` lets it change stacks a repository owns
/// (`swarm apply --force`), which then drift from git.
pub async fn apply_plan(
    store: &StoreClient,
    plan_json: &str,
    registry_auth_json: &str,
    file_contents: BTreeMap<String, Vec<u8>>,
    force: bool,
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
    let command = Command::ApplyPlan {
        file_contents: file_contents
            .into_iter()
            .map(|(digest, bytes)| (digest, swarm_api::files::FileContent::new(bytes)))
            .collect(),
        expected_version: Some(version),
        actions: plan.actions,
        registry_auth,
        override_git: force,
    };
    match store.propose(&command).await {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict(Conflict {
            subject: ConflictSubject::Object { kind, name },
            expected,
            actual,
        })) => Err(Status::aborted(format!(
            "the cluster changed since this plan was made ({} {name} changed at version {actual}, after the plan's version {expected}); plan again",
            kind.as_str()
        ))),
        Err(error) => Err(store_status(error)),
    }
}

/// What the user reads when their one-service command kept meeting changes to the service.
fn changed_meanwhile(conflict: &Conflict, what: &str) -> Status {
    let subject = match &conflict.subject {
        ConflictSubject::Object { kind, name } => format!("{} {name}", kind.as_str()),
        ConflictSubject::Tasks => "the tasks".to_owned(),
    };
    Status::aborted(format!(
        "{subject} changed while this {what} was applied (version {}, now {}); run the command again",
        conflict.expected, conflict.actual
    ))
}

/// The spec `wanted` was made from `base` by changing some fields: the same fields changed
/// over `current` (the service's spec now), every other field as it is now. Maps (env,
/// labels, the spec's structs) merge key by key; a list or a value changed is replaced
/// whole (a `--constraint-add` racing another on the same service keeps the last one's
/// list, as re-running the command would not).
fn rebase(
    base: &ServiceSpec,
    wanted: &ServiceSpec,
    current: &ServiceSpec,
) -> Result<ServiceSpec, String> {
    let json = |spec: &ServiceSpec| serde_json::to_value(spec).expect("specs serialise");
    let mut merged = json(current);
    rebase_value(&json(base), &json(wanted), &mut merged);
    serde_json::from_value(merged).map_err(|e| e.to_string())
}

fn rebase_value(base: &Value, wanted: &Value, current: &mut Value) {
    if base == wanted {
        return;
    }
    match (base, wanted, current) {
        (Value::Object(base), Value::Object(wanted), Value::Object(current)) => {
            let keys: std::collections::BTreeSet<&String> =
                base.keys().chain(wanted.keys()).collect();
            for key in keys {
                match (base.get(key), wanted.get(key)) {
                    (before, after) if before == after => {}
                    (_, None) => {
                        current.remove(key);
                    }
                    (Some(before), Some(after)) if current.contains_key(key) => {
                        let here = current.get_mut(key).expect("checked");
                        rebase_value(before, after, here);
                    }
                    (_, Some(after)) => {
                        current.insert(key.clone(), after.clone());
                    }
                }
            }
        }
        (_, wanted, current) => *current = wanted.clone(),
    }
}

async fn apply(
    store: &StoreClient,
    version: Option<u64>,
    action: Action,
    auth: Option<RegistryAuth>,
) -> Result<(), StoreError> {
    let registry_auth = auth
        .map(|auth| BTreeMap::from([(action.name.clone(), auth)]))
        .unwrap_or_default();
    store
        .propose(&Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: version,
            actions: vec![action],
            registry_auth,
            override_git: true,
        })
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_api::spec::ServiceMode;

    /// A spec as the stack converter makes it.
    fn spec() -> ServiceSpec {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(
            &path,
            "services:\n  web:\n    image: nginx:1\n    environment:\n      A: '1'\n",
        )
        .unwrap();
        let stack = swarm_controller::stack::load(
            &swarm_controller::source::WorkTree,
            &path,
            "s.yaml",
            &|_| None,
        )
        .stack
        .unwrap();
        stack.services[0].clone()
    }

    fn scaled(spec: &ServiceSpec, replicas: u64) -> ServiceSpec {
        ServiceSpec {
            mode: ServiceMode::Replicated { replicas },
            ..spec.clone()
        }
    }

    #[test]
    fn a_change_is_made_again_over_what_changed_meanwhile() {
        let base = spec();
        // This command scales; meanwhile another added a variable and changed the image.
        let wanted = scaled(&base, 7);
        let mut current = base.clone();
        current.task.container.env.insert("B".into(), "2".into());
        current.task.container.image = "nginx:2".into();
        let rebased = rebase(&base, &wanted, &current).unwrap();
        let mut expected = scaled(&current, 7);
        expected.task.container.env.insert("B".into(), "2".into());
        assert_eq!(rebased, expected);
        // Variables merge key by key: one added here, one removed there, both kept.
        let mut wanted = base.clone();
        wanted.task.container.env.insert("C".into(), "3".into());
        let mut current = base.clone();
        current.task.container.env.remove("A");
        let rebased = rebase(&base, &wanted, &current).unwrap();
        assert_eq!(
            rebased.task.container.env,
            BTreeMap::from([("C".to_owned(), "3".to_owned())])
        );
    }

    #[test]
    fn the_last_writer_of_a_field_wins_as_a_command_run_again_would() {
        let base = spec();
        let current = scaled(&base, 3);
        let rebased = rebase(&base, &scaled(&base, 5), &current).unwrap();
        assert_eq!(rebased, scaled(&base, 5));
        // A command that changes nothing changes nothing of what changed meanwhile.
        assert_eq!(rebase(&base, &base, &current).unwrap(), current);
    }

    /// A plan for stack `stack` (service `<stack>_site`, `replicas`), made against `state`.
    fn plan_of(
        stack: &str,
        replicas: u64,
        state: &swarm_api::state::ClusterState,
    ) -> swarm_api::plan::Plan {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{stack}.yaml"));
        std::fs::write(
            &path,
            format!(
                "services:\n  site:\n    image: nginx:1\n    deploy:\n      replicas: {replicas}\n"
            ),
        )
        .unwrap();
        let stack = swarm_controller::stack::load(
            &swarm_controller::source::WorkTree,
            &path,
            &format!("stacks/{stack}.yaml"),
            &|_| None,
        )
        .stack
        .unwrap();
        let basis = swarm_api::plan::Basis {
            state_version: Some(state.version),
            ..Default::default()
        };
        swarm_controller::plan::plan(&[stack], state, &Default::default(), basis).unwrap()
    }

    /// A single voter sends nothing.
    struct Alone;

    impl swarm_controller::raft::driver::Transport for Alone {
        fn send(
            &mut self,
            _: raft::prelude::Message,
        ) -> Result<(), swarm_controller::raft::driver::Unreachable> {
            Err(swarm_controller::raft::driver::Unreachable)
        }
    }

    /// A one-manager cluster over an in-memory Raft log, once it leads.
    async fn one_manager() -> (StoreClient, swarm_controller::raft::driver::DriverTask) {
        use swarm_controller::raft::driver::{DriverConfig, spawn};
        use swarm_controller::raft::log::{DurableLog, Location};
        use swarm_controller::raft::replica::{Config, Replica, StateMachine};
        let mut log = DurableLog::open(Location::Memory).unwrap();
        log.bootstrap(&[1], Store::default().snapshot()).unwrap();
        let replica = Replica::open(&Config::new(1), log, Store::default()).unwrap();
        let config = DriverConfig {
            tick: std::time::Duration::from_millis(10),
            ..DriverConfig::default()
        };
        let (raft, driver) = spawn(replica, |_| Alone, config);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while raft.status().await.unwrap().leader != 1 {
            assert!(tokio::time::Instant::now() < deadline, "no leader");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let store = StoreClient::new(raft);
        let cluster = Command::InitCluster(swarm_api::store::Cluster {
            id: "c".into(),
            created_at: 0,
            heartbeat_period_ms: 1000,
            missed_heartbeats_for_down: 3,
            certificate_validity_ms: 1,
            worker_token_secret: String::new(),
            manager_token_secret: String::new(),
            address_pool: Default::default(),
        });
        store.propose(&cluster).await.unwrap();
        (store, driver)
    }

    async fn export(store: &StoreClient) -> swarm_api::state::ClusterState {
        store
            .raft()
            .read(|store: &Store| store.export())
            .await
            .unwrap()
    }

    /// `swarm apply` at the API edge: a saved plan whose service changed since is refused
    /// with the message the CLI prints; a stack a repository owns is refused naming it,
    /// unless forced.
    #[tokio::test]
    async fn apply_plan_refuses_a_moved_state_and_a_repository_s_stack_unless_forced() {
        let (store, driver) = one_manager().await;
        let json = |plan: &swarm_api::plan::Plan| serde_json::to_string(plan).unwrap();

        let empty = export(&store).await;
        apply_plan(
            &store,
            &json(&plan_of("web", 1, &empty)),
            "",
            BTreeMap::new(),
            false,
        )
        .await
        .unwrap();
        let deployed = export(&store).await;
        let saved = plan_of("web", 2, &deployed);
        apply_plan(
            &store,
            &json(&plan_of("web", 3, &deployed)),
            "",
            BTreeMap::new(),
            false,
        )
        .await
        .unwrap();
        let status = apply_plan(&store, &json(&saved), "", BTreeMap::new(), false)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Aborted);
        let expected = format!(
            "the cluster changed since this plan was made (service web_site changed at version {}, after the plan's version {}); plan again",
            export(&store).await.version,
            deployed.version
        );
        assert_eq!(status.message(), expected);
        assert_eq!(export(&store).await.services[0].spec.replicas(), Some(3));

        // A repository deploys stack api with a commit of its own: it owns it from then on.
        let repository = swarm_api::gitops::Repository {
            name: "app".into(),
            url: "/srv/git/app.git".into(),
            branch: "main".into(),
            path: "stacks".into(),
            interval_ms: 15_000,
            self_heal: false,
            prune: false,
            notify: None,
            created_at: 1,
        };
        store
            .propose(&Command::AddRepository {
                repository,
                secrets: Default::default(),
            })
            .await
            .unwrap();
        let current = export(&store).await;
        let deployment = swarm_api::gitops::Deployment {
            id: String::new(),
            repository: "app".into(),
            commit: swarm_api::gitops::Commit {
                id: "c1".into(),
                author_name: "Ada".into(),
                author_email: "ada@example.com".into(),
                summary: "four".into(),
                time: 1,
            },
            trigger: swarm_api::gitops::Trigger::Poll,
            created_at: 2,
            updated_at: 2,
            plan: plan_of("api", 4, &current),
            outcome: swarm_api::gitops::DeploymentOutcome::Applied,
        };
        store
            .propose(&Command::Deploy {
                file_contents: Default::default(),
                expected_version: current.version,
                deployment: Box::new(deployment),
                stacks: ["api".to_owned()].into(),
            })
            .await
            .unwrap();
        let api = |state: &swarm_api::state::ClusterState| {
            let service = state.services.iter().find(|s| s.spec.name == "api_site");
            service.and_then(|s| s.spec.replicas())
        };
        assert_eq!(api(&export(&store).await), Some(4));

        let by_hand = plan_of("api", 5, &export(&store).await);
        let status = apply_plan(&store, &json(&by_hand), "", BTreeMap::new(), false)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(
            status
                .message()
                .contains("stack api is managed by repository app"),
            "{status:?}"
        );
        assert_eq!(api(&export(&store).await), Some(4));
        apply_plan(&store, &json(&by_hand), "", BTreeMap::new(), true)
            .await
            .unwrap();
        assert_eq!(api(&export(&store).await), Some(5));
        driver.abort();
    }

    #[test]
    fn virtual_ips_show_the_network_id_and_the_subnet_prefix() {
        let mut data = StoreData::default();
        data.objects.networks.push(Object {
            id: Some("net1".into()),
            origin: Default::default(),
            spec: swarm_api::spec::NetworkSpec {
                name: "back".into(),
                driver: "overlay".into(),
                driver_opts: Default::default(),
                attachable: false,
                internal: false,
                labels: Default::default(),
                subnets: Vec::new(),
                gateway: None,
            },
        });
        data.network_allocations.insert(
            "back".into(),
            swarm_api::store::NetworkAllocation {
                subnet: "10.0.16.0/20".parse().unwrap(),
                gateway: "10.0.16.1".parse().unwrap(),
                vni: 4096,
            },
        );
        data.service_vips.insert(
            "s1".into(),
            vec![swarm_api::task::NetworkAddress {
                network: "back".into(),
                address: "10.0.16.2".parse().unwrap(),
            }],
        );
        assert_eq!(
            virtual_ips(&data)["s1"],
            [VirtualIp {
                network_id: "net1".into(),
                network: "back".into(),
                addr: "10.0.16.2/20".into(),
            }]
        );
    }
}
