//! Networks on the control API: created and removed as one-action plans (the same
//! `ApplyPlan` command services and GitOps use: the store decides the subnet and checks the
//! rules), and read with the addresses the store gave their tasks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use swarm_api::plan::{Action, Kind, ObjectSpec, Op};
use swarm_api::spec::NetworkSpec;
use swarm_api::state::{Object, Origin};
use swarm_api::store::{Command, StoreData};
use tonic::Status;

use super::store_status;
use swarm_controller::store::Store;
use swarm_controller::store::client::{StoreClient, StoreError};

/// What `network ls|inspect` show of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// Always `swarm`: every network spans the cluster.
    pub scope: String,
    pub attachable: bool,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    /// The stack that declares it, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// Absent until the store allocated it (networks made before it did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The tasks that have not stopped and hold an address on it, by task name.
    #[serde(default)]
    pub tasks: Vec<NetworkTask>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkTask {
    pub id: String,
    pub name: String,
    pub service: String,
    pub address: String,
    /// The node's hostname; empty while the task is not scheduled.
    pub node: String,
    pub state: String,
}

fn view_of(data: &StoreData, object: &Object<NetworkSpec>) -> NetworkView {
    let spec = &object.spec;
    let allocation = data.network_allocations.get(&spec.name);
    let mut tasks: Vec<NetworkTask> = data
        .tasks
        .values()
        .filter(|t| !t.status.state.is_terminal())
        .filter_map(|task| {
            let held = task.networks.iter().find(|n| n.network == spec.name)?;
            let node = task.node_id.as_ref().map(|id| {
                data.nodes
                    .get(id)
                    .map_or_else(|| id.clone(), |n| n.hostname.clone())
            });
            Some(NetworkTask {
                id: task.id.clone(),
                name: task.name(),
                service: task.service_name.clone(),
                address: held.address.to_string(),
                node: node.unwrap_or_default(),
                state: task.status.state.as_str().to_owned(),
            })
        })
        .collect();
    tasks.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    NetworkView {
        id: object.id.clone().unwrap_or_default(),
        name: spec.name.clone(),
        driver: spec.driver.clone(),
        scope: "swarm".to_owned(),
        attachable: spec.attachable,
        internal: spec.internal,
        labels: spec.labels.clone(),
        stack: object.origin.stack.clone(),
        subnet: allocation.map(|a| a.subnet.to_string()),
        gateway: allocation.map(|a| a.gateway.to_string()),
        tasks,
    }
}

/// The network `reference` names (a name, an id or a unique id prefix), or why none.
fn find<'a>(
    networks: &'a [Object<NetworkSpec>],
    reference: &str,
) -> Result<&'a Object<NetworkSpec>, Status> {
    if let Some(network) = networks
        .iter()
        .find(|n| n.spec.name == reference || n.id.as_deref() == Some(reference))
    {
        return Ok(network);
    }
    let matches: Vec<_> = networks
        .iter()
        .filter(|n| n.id.as_deref().is_some_and(|id| id.starts_with(reference)))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(Status::not_found(format!(
            "network {reference} not found: `swarm network ls` lists the networks"
        ))),
        _ => Err(Status::invalid_argument(format!(
            "network {reference} is ambiguous ({} networks have ids starting with it): give more of the id",
            matches.len()
        ))),
    }
}

/// Every network, by name.
pub async fn list(store: &StoreClient) -> Result<Vec<NetworkView>, Status> {
    store
        .read(|store: &Store| {
            let data = store.data();
            data.objects
                .networks
                .iter()
                .map(|n| view_of(data, n))
                .collect()
        })
        .await
        .map_err(store_status)
}

pub async fn inspect(store: &StoreClient, reference: &str) -> Result<NetworkView, Status> {
    let reference = reference.to_owned();
    store
        .read(move |store: &Store| {
            let data = store.data();
            find(&data.objects.networks, &reference).map(|n| view_of(data, n))
        })
        .await
        .map_err(store_status)?
}

/// The objects' version and what a network named `name` would clash with.
async fn existing(store: &StoreClient, name: &str) -> Result<(u64, Option<Origin>), Status> {
    let name = name.to_owned();
    store
        .read(move |store: &Store| {
            let objects = &store.data().objects;
            let clash = objects
                .networks
                .iter()
                .find(|n| n.spec.name == name)
                .map(|n| n.origin.clone());
            (objects.version, clash)
        })
        .await
        .map_err(store_status)
}

fn taken(name: &str, origin: &Origin) -> Status {
    Status::already_exists(match &origin.stack {
        Some(stack) => {
            format!("network {name} already exists: it is a network of stack {stack}")
        }
        None => format!("network {name} already exists: choose another name"),
    })
}

/// Creates the network `spec_json` (a `NetworkSpec`); its id.
pub async fn create(store: &StoreClient, spec_json: &str) -> Result<String, Status> {
    let spec: NetworkSpec = serde_json::from_str(spec_json)
        .map_err(|e| Status::invalid_argument(format!("invalid network spec: {e}")))?;
    if spec.name.is_empty() {
        return Err(Status::invalid_argument("a network needs a name"));
    }
    let name = spec.name.clone();
    let (version, clash) = existing(store, &name).await?;
    if let Some(origin) = clash {
        return Err(taken(&name, &origin));
    }
    let action = Action {
        op: Op::Create,
        kind: Kind::Network,
        name: name.clone(),
        origin: Origin::default(),
        changes: Vec::new(),
        spec: Some(ObjectSpec::Network(spec)),
    };
    match propose(store, version, action).await {
        Ok(()) => {}
        // Created by someone else since it was read.
        Err(StoreError::Conflict(_)) => {
            let (_, clash) = existing(store, &name).await?;
            return Err(taken(&name, &clash.unwrap_or_default()));
        }
        Err(error) => return Err(store_status(error)),
    }
    Ok(inspect(store, &name).await?.id)
}

/// Removes network `reference`; the store refuses while a service uses it. A stack's network
/// goes with its stack.
pub async fn remove(store: &StoreClient, reference: &str) -> Result<(), Status> {
    let reference = reference.to_owned();
    let (version, network) = store
        .read(move |store: &Store| {
            let objects = &store.data().objects;
            find(&objects.networks, &reference).map(|n| (objects.version, n.clone()))
        })
        .await
        .map_err(store_status)??;
    let name = network.spec.name;
    if let Some(stack) = network.origin.stack {
        return Err(Status::failed_precondition(format!(
            "network {name} belongs to stack {stack}: it goes with `swarm stack rm {stack}`"
        )));
    }
    let action = Action {
        op: Op::Remove,
        kind: Kind::Network,
        name,
        origin: Origin::default(),
        changes: Vec::new(),
        spec: None,
    };
    propose(store, version, action).await.map_err(store_status)
}

async fn propose(store: &StoreClient, version: u64, action: Action) -> Result<(), StoreError> {
    store
        .propose(&Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: Some(version),
            actions: vec![action],
            registry_auth: Default::default(),
            override_git: false,
        })
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(name: &str, id: &str) -> Object<NetworkSpec> {
        Object {
            id: Some(id.into()),
            origin: Origin::default(),
            spec: NetworkSpec {
                name: name.into(),
                driver: "overlay".into(),
                driver_opts: Default::default(),
                attachable: false,
                internal: false,
                labels: Default::default(),
                subnets: Vec::new(),
                gateway: None,
            },
        }
    }

    #[test]
    fn networks_are_found_by_name_id_or_unique_prefix() {
        let networks = [network("front", "abc1"), network("back", "abd2")];
        assert_eq!(find(&networks, "back").unwrap().spec.name, "back");
        assert_eq!(find(&networks, "abc1").unwrap().spec.name, "front");
        assert_eq!(find(&networks, "abd").unwrap().spec.name, "back");
        let error = find(&networks, "ab").unwrap_err();
        assert!(error.message().contains("ambiguous"), "{error:?}");
        let error = find(&networks, "db").unwrap_err();
        assert_eq!(
            error.message(),
            "network db not found: `swarm network ls` lists the networks"
        );
    }
}
