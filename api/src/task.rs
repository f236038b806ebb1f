//! Tasks: one container of a service on one node. Managers write what a task should be
//! (its spec, node and desired state); agents report what it is (its status). States move
//! forward only, in the order of [`TaskState`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::{ServiceSpec, TaskSpec};
use crate::state::Object;
use crate::units::Millis;

/// What `service ls|ps|inspect` and `node ps` show: the services, their tasks, and the
/// nodes' hostnames.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServicesView {
    /// The version of the services (`ClusterState::version`): an update made from this view
    /// names it, and is refused if the services moved meanwhile.
    pub version: u64,
    pub services: Vec<Object<ServiceSpec>>,
    pub tasks: Vec<Task>,
    /// Node id → hostname.
    pub nodes: BTreeMap<String, String>,
    /// Where each service's last update stands, by service id.
    #[serde(default)]
    pub update_status: BTreeMap<String, crate::rollout::UpdateStatus>,
    /// Each service's virtual IPs, by service id (`service inspect`'s `Endpoint.VirtualIPs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub virtual_ips: BTreeMap<String, Vec<VirtualIp>>,
    /// The ports the cluster gave each service's unnumbered ingress ports, by service id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub assigned_ports: BTreeMap<String, Vec<crate::spec::AssignedPort>>,
}

impl ServicesView {
    /// `service`'s ports as they are published (`EndpointSpec::published_ports`).
    pub fn ports_of(&self, service: &Object<ServiceSpec>) -> Vec<crate::spec::PortConfig> {
        let assigned = service
            .id
            .as_ref()
            .and_then(|id| self.assigned_ports.get(id))
            .map_or(&[][..], Vec::as_slice);
        service.spec.endpoint.published_ports(assigned)
    }
}

/// A service's virtual IP on one network, as Docker's `service inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VirtualIp {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The network's name (Docker shows only its id).
    pub network: String,
    /// The address with its subnet's prefix length (`10.0.0.2/20`), as Docker writes it.
    pub addr: String,
}

/// Why a service reference names no single service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceLookupError {
    #[error("service {0} not found: `swarm service ls` lists the services")]
    NotFound(String),
    #[error(
        "service {reference} is ambiguous ({matches} services have ids starting with it): give more of the id"
    )]
    Ambiguous { reference: String, matches: usize },
}

impl ServicesView {
    /// The service that `reference` names: an id, a name, or a unique id prefix.
    pub fn service(&self, reference: &str) -> Result<&Object<ServiceSpec>, ServiceLookupError> {
        if let Some(service) = self
            .services
            .iter()
            .find(|s| s.id.as_deref() == Some(reference) || s.spec.name == reference)
        {
            return Ok(service);
        }
        let matches: Vec<_> = self
            .services
            .iter()
            .filter(|s| s.id.as_deref().is_some_and(|id| id.starts_with(reference)))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(ServiceLookupError::NotFound(reference.to_owned())),
            _ => Err(ServiceLookupError::Ambiguous {
                reference: reference.to_owned(),
                matches: matches.len(),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub service_id: String,
    pub service_name: String,
    /// A replicated service's slot (1..=replicas); `None` for a global service's task, which
    /// its node identifies.
    pub slot: Option<u64>,
    /// The node it runs on, once scheduled (a global task is made for its node).
    pub node_id: Option<String>,
    /// The service's task spec when the task was made: a service update makes new tasks.
    pub spec: TaskSpec,
    pub desired: DesiredState,
    pub status: TaskStatus,
    pub created_at: Millis,
    /// When it first ran (the `since` of its first running status): an update watches a
    /// new task for `monitor` from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    /// The task's address on each network of its service, by network name, given by the
    /// store when the task is created: unique among the tasks that have not stopped (free
    /// again once it stopped, as Docker's allocator frees it; kept here to show).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAddress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAddress {
    pub network: String,
    pub address: std::net::Ipv4Addr,
}

impl Task {
    /// Whether the task is what its slot (or node) is meant to run now.
    pub fn is_live(&self) -> bool {
        self.desired == DesiredState::Running
    }

    /// The task's display name, as Docker prints it: `service.slot` or `service.node`.
    pub fn name(&self) -> String {
        match (self.slot, &self.node_id) {
            (Some(slot), _) => format!("{}.{slot}", self.service_name),
            (None, Some(node)) => format!("{}.{node}", self.service_name),
            (None, None) => self.service_name.clone(),
        }
    }
}

/// What the managers want of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    /// Stop it (replaced, scaled down, service removed); kept as history.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    /// When the state was entered.
    pub since: Millis,
    /// What is happening ("starting container", "no suitable node (…)").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Why the task failed, for `service ps`'s ERROR column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The task's address on its node's network, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
}

impl TaskStatus {
    pub fn new(state: TaskState, since: Millis) -> Self {
        TaskStatus {
            state,
            since,
            message: String::new(),
            error: None,
            exit_code: None,
            address: None,
        }
    }
}

/// Where a task is in its life, in order: a task never goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Made by the orchestrator, not scheduled yet.
    New,
    /// No node can take it now (the message says why).
    Pending,
    /// Given to a node.
    Assigned,
    /// The node's agent took it.
    Accepted,
    /// Pulling the image, setting up the network.
    Preparing,
    Starting,
    Running,
    /// Exited with code 0.
    Complete,
    /// Stopped because the managers asked.
    Shutdown,
    /// Exited with a non-zero code, or could not start.
    Failed,
    /// The agent refused it.
    Rejected,
    /// Its node went away: what became of it is unknown.
    Orphaned,
}

impl TaskState {
    /// A state the task never leaves.
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }

    /// Docker's spelling in `service ps`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Orphaned => "orphaned",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_ordered_and_terminal_ones_last() {
        assert!(TaskState::New < TaskState::Running);
        assert!(!TaskState::Running.is_terminal());
        for terminal in [
            TaskState::Complete,
            TaskState::Shutdown,
            TaskState::Failed,
            TaskState::Rejected,
            TaskState::Orphaned,
        ] {
            assert!(terminal.is_terminal(), "{terminal:?}");
        }
    }
}
