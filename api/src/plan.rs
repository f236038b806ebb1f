//! Plans: the ordered actions that take the cluster from its current state to the desired
//! one. `swarm plan --format json` prints a [`Plan`] and `--out` saves one; the JSON Schema is
//! committed in `schemas/plan.schema.json`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::{FileObjectSpec, NetworkSpec, ServiceSpec};
use crate::state::Origin;

/// The version of the plan format; readers refuse a format they do not know.
pub const PLAN_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Always [`PLAN_FORMAT`].
    pub format: u32,
    /// What the plan was computed against; applying it to anything else is refused.
    pub basis: Basis,
    /// In the order they are applied: creations of networks, configs and secrets; creations,
    /// updates and scalings of services; removals of services; removals of the rest.
    pub actions: Vec<Action>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        !self.actions.is_empty()
    }
}

/// The two sides of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Basis {
    /// The commit of the current side, when it was read from git (`--base`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_commit: Option<String>,
    /// The store version of the current side, when it was a state export (`--state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_version: Option<u64>,
    /// The commit of the desired side, when it was read from git (`--head`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_commit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
// No deny_unknown_fields: serde does not support it beside `flatten`.
pub struct Action {
    pub op: Op,
    /// The object's kind.
    pub kind: Kind,
    /// The full name of the object in the cluster.
    pub name: String,
    #[serde(flatten)]
    pub origin: Origin,
    /// The fields that change, for updates and scalings; each names its path in the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// The desired spec, for creations and updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ObjectSpec>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Create,
    Update,
    /// An update of a replicated service that changes only its number of replicas.
    Scale,
    Remove,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Scale => "scale",
            Op::Remove => "remove",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Network,
    Config,
    Secret,
    Service,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Network => "network",
            Kind::Config => "config",
            Kind::Secret => "secret",
            Kind::Service => "service",
        }
    }
}

/// A spec of any kind of object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ObjectSpec {
    Service(Box<ServiceSpec>),
    Network(NetworkSpec),
    /// A config or a secret (the action's kind tells which).
    File(FileObjectSpec),
}

/// One changed field: its dotted path in the spec (`task.container.image`,
/// `task.container.env.LOG_LEVEL`) and its value before and after; absent means unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldChange {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
}
