//! Desired stacks × current state → a [`Plan`]: the ordered actions that make the cluster
//! match the stacks. Pure: the same inputs always give the same plan.
//!
//! Both sides are normalised specs, so an unchanged service yields no action. A current
//! object is removed only when the plan owns it: it belongs to one of the desired stacks, or
//! it was declared by a stack file under one of the planned paths (its file is gone).
//! Objects created imperatively (no stack) are never removed.

mod diff;
pub mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;
use swarm_api::plan::{Action, Basis, Kind, ObjectSpec, Op, PLAN_FORMAT, Plan};
use swarm_api::spec::Named;
use swarm_api::state::{ClusterState, Object, Origin};

use crate::source::names_stack_file;
use crate::stack::Stack;

pub use diff::field_changes;

/// What the plan may remove: objects of the desired stacks, and objects whose stack file
/// lies under one of these paths (files, or directories holding stack files).
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub paths: Vec<String>,
}

impl Scope {
    fn owns(&self, origin: &Origin, desired_stacks: &BTreeSet<&str>) -> bool {
        let Some(stack) = origin.stack.as_deref() else {
            return false;
        };
        if desired_stacks.contains(stack) {
            return true;
        }
        origin.source.as_deref().is_some_and(|source| {
            self.paths
                .iter()
                .any(|path| names_stack_file(Path::new(path), Path::new(source)))
        })
    }
}

/// Why the desired stacks cannot be planned together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "stack `{stack}` is declared by both {first} and {second}: give one of them another `name:`"
    )]
    DuplicateStack {
        stack: String,
        first: String,
        second: String,
    },
    #[error("{kind} `{name}` is declared by both {first} and {second}")]
    DuplicateObject {
        kind: &'static str,
        name: String,
        first: String,
        second: String,
    },
    #[error(
        "{kind} `{name}` is declared `external: true` by {file} but does not exist in the cluster: create it first, or declare it in the stack without `external`"
    )]
    MissingExternal {
        kind: &'static str,
        name: String,
        file: String,
    },
    #[error(
        "port {port} is published by both service {first} and service {second}: every node listens on an ingress port once"
    )]
    PortConflict {
        port: String,
        first: String,
        second: String,
    },
}

/// Computes the plan from `current` to `desired`.
pub fn plan(
    desired: &[Stack],
    current: &ClusterState,
    scope: &Scope,
    basis: Basis,
) -> Result<Plan, PlanError> {
    check_unique(desired)?;
    check_published_ports(desired, current, scope)?;
    let desired_stacks: BTreeSet<&str> = desired.iter().map(|s| s.name.as_str()).collect();
    let mut planner = Planner {
        scope,
        desired_stacks: &desired_stacks,
        actions: Vec::new(),
    };
    planner.kind(
        Kind::Network,
        desired.iter().flat_map(|s| {
            s.networks
                .iter()
                .map(move |n| (n.name.clone(), s.origin(), n.clone()))
        }),
        &current.networks,
        ObjectSpec::Network,
    );
    planner.kind(
        Kind::Config,
        desired.iter().flat_map(|s| {
            s.configs
                .iter()
                .map(move |c| (c.name.clone(), s.origin(), c.clone()))
        }),
        &current.configs,
        ObjectSpec::File,
    );
    planner.kind(
        Kind::Secret,
        desired.iter().flat_map(|s| {
            s.secrets
                .iter()
                .map(move |c| (c.name.clone(), s.origin(), c.clone()))
        }),
        &current.secrets,
        ObjectSpec::File,
    );
    planner.kind(
        Kind::Service,
        desired.iter().flat_map(|s| {
            s.services
                .iter()
                .map(move |c| (c.name.clone(), s.origin(), c.clone()))
        }),
        &current.services,
        |spec| ObjectSpec::Service(Box::new(spec)),
    );
    let mut actions = planner.actions;
    actions.sort_by_key(|a| (apply_order(a), a.name.clone()));
    Ok(Plan {
        format: PLAN_FORMAT,
        basis,
        actions,
    })
}

/// The contents `plan` needs beside its actions: those of the configs and secrets it
/// creates or changes, from the stacks that declare them.
pub fn contents(plan: &Plan, stacks: &[Stack]) -> swarm_api::files::FileContents {
    plan.actions
        .iter()
        .filter(|a| matches!(a.kind, Kind::Config | Kind::Secret) && a.op != Op::Remove)
        .filter_map(|a| match &a.spec {
            Some(ObjectSpec::File(spec)) => Some(spec.digest.as_str()),
            _ => None,
        })
        .filter_map(|digest| {
            let content = stacks.iter().find_map(|s| s.contents.get(digest))?;
            Some((digest.to_owned(), content.clone()))
        })
        .collect()
}

/// Dependencies first: what services use is created before them and removed after them.
fn apply_order(action: &Action) -> (u8, u8) {
    let kind_rank = match action.kind {
        Kind::Network => 0,
        Kind::Config => 1,
        Kind::Secret => 2,
        Kind::Service => 3,
    };
    match (action.op, action.kind) {
        (Op::Create | Op::Update | Op::Scale, Kind::Service) => (1, 0),
        (Op::Create | Op::Update | Op::Scale, _) => (0, kind_rank),
        (Op::Remove, Kind::Service) => (2, 0),
        (Op::Remove, _) => (3, 3 - kind_rank),
    }
}

struct Planner<'a> {
    scope: &'a Scope,
    desired_stacks: &'a BTreeSet<&'a str>,
    actions: Vec<Action>,
}

impl Planner<'_> {
    fn kind<S: Serialize + PartialEq + Named>(
        &mut self,
        kind: Kind,
        desired: impl Iterator<Item = (String, Origin, S)>,
        current: &[Object<S>],
        wrap: impl Fn(S) -> ObjectSpec,
    ) {
        let current_by_name: BTreeMap<&str, &Object<S>> = current
            .iter()
            .map(|object| (object.spec.name(), object))
            .collect();
        let mut desired_names = BTreeSet::new();
        for (name, origin, spec) in desired {
            desired_names.insert(name.clone());
            match current_by_name.get(name.as_str()) {
                None => self.actions.push(Action {
                    op: Op::Create,
                    kind,
                    name,
                    origin,
                    changes: Vec::new(),
                    spec: Some(wrap(spec)),
                }),
                Some(existing) => {
                    let mut changes = Vec::new();
                    if existing.spec != spec {
                        changes = field_changes(&existing.spec, &spec);
                    }
                    // Taking over an object of another stack (or an imperative one) is a change too.
                    if existing.origin.stack != origin.stack {
                        changes.push(diff::origin_change(
                            "stack",
                            &existing.origin.stack,
                            &origin.stack,
                        ));
                    }
                    if changes.is_empty() {
                        continue;
                    }
                    let op = if changes.len() == 1 && changes[0].path == "replicas" {
                        Op::Scale
                    } else {
                        Op::Update
                    };
                    self.actions.push(Action {
                        op,
                        kind,
                        name,
                        origin,
                        changes,
                        spec: Some(wrap(spec)),
                    });
                }
            }
        }
        for object in current {
            let name = object.spec.name();
            if desired_names.contains(name) || !self.scope.owns(&object.origin, self.desired_stacks)
            {
                continue;
            }
            self.actions.push(Action {
                op: Op::Remove,
                kind,
                name: name.to_owned(),
                origin: object.origin.clone(),
                changes: Vec::new(),
                spec: None,
            });
        }
    }
}

/// Every external object the desired stacks use exists in `current` (a cluster's state or
/// its export) or is made by one of the stacks, as `docker stack deploy` checks.
pub fn check_externals(desired: &[Stack], current: &ClusterState) -> Result<(), PlanError> {
    fn has<S: Named>(objects: &[Object<S>], name: &str) -> bool {
        objects.iter().any(|o| o.spec.name() == name)
    }
    let made = |kind: Kind, name: &str| {
        desired.iter().any(|stack| match kind {
            Kind::Network => stack.networks.iter().any(|n| n.name == name),
            Kind::Config => stack.configs.iter().any(|c| c.name == name),
            Kind::Secret => stack.secrets.iter().any(|s| s.name == name),
            Kind::Service => stack.services.iter().any(|s| s.name == name),
        })
    };
    for stack in desired {
        for (kind, name) in &stack.externals {
            let exists = match kind {
                Kind::Network => has(&current.networks, name),
                Kind::Config => has(&current.configs, name),
                Kind::Secret => has(&current.secrets, name),
                Kind::Service => has(&current.services, name),
            };
            if !exists && !made(*kind, name) {
                return Err(PlanError::MissingExternal {
                    kind: kind.as_str(),
                    name: name.clone(),
                    file: stack.source.clone(),
                });
            }
        }
    }
    Ok(())
}

fn check_unique(desired: &[Stack]) -> Result<(), PlanError> {
    let mut stacks: BTreeMap<&str, &str> = BTreeMap::new();
    let mut objects: BTreeMap<(&'static str, &str), &str> = BTreeMap::new();
    for stack in desired {
        if let Some(first) = stacks.insert(&stack.name, &stack.source) {
            return Err(PlanError::DuplicateStack {
                stack: stack.name.clone(),
                first: first.to_owned(),
                second: stack.source.clone(),
            });
        }
        let names = stack
            .networks
            .iter()
            .map(|n| ("network", n.name.as_str()))
            .chain(stack.configs.iter().map(|c| ("config", c.name.as_str())))
            .chain(stack.secrets.iter().map(|s| ("secret", s.name.as_str())))
            .chain(stack.services.iter().map(|s| ("service", s.name.as_str())));
        for (kind, name) in names {
            if let Some(first) = objects.insert((kind, name), &stack.source) {
                return Err(PlanError::DuplicateObject {
                    kind,
                    name: name.to_owned(),
                    first: first.to_owned(),
                    second: stack.source.clone(),
                });
            }
        }
    }
    Ok(())
}

/// An ingress port is published once in the cluster: across all desired stacks, and against
/// current services that the plan keeps.
fn check_published_ports(
    desired: &[Stack],
    current: &ClusterState,
    scope: &Scope,
) -> Result<(), PlanError> {
    use swarm_api::spec::{PublishMode, ServiceSpec};
    let desired_stacks: BTreeSet<&str> = desired.iter().map(|s| s.name.as_str()).collect();
    let desired_names: BTreeSet<&str> = desired
        .iter()
        .flat_map(|s| &s.services)
        .map(|s| s.name.as_str())
        .collect();
    let kept = current
        .services
        .iter()
        .filter(|o| {
            !desired_names.contains(o.spec.name.as_str()) && !scope.owns(&o.origin, &desired_stacks)
        })
        .map(|o| &o.spec);
    let all: Vec<&ServiceSpec> = desired
        .iter()
        .flat_map(|s| &s.services)
        .chain(kept)
        .collect();
    let mut owners: BTreeMap<(u16, swarm_api::spec::Protocol), &str> = BTreeMap::new();
    for service in all {
        for port in &service.endpoint.ports {
            let Some(published) = port.published.filter(|_| port.mode == PublishMode::Ingress)
            else {
                continue;
            };
            match owners.insert((published, port.protocol), &service.name) {
                Some(first) if first != service.name => {
                    return Err(PlanError::PortConflict {
                        port: format!("{published}/{}", port.protocol),
                        first: first.to_owned(),
                        second: service.name.clone(),
                    });
                }
                _ => {}
            }
        }
    }
    Ok(())
}
