//! One stack by name, against the cluster's state: `stack deploy -c FILE… NAME` and
//! `stack rm NAME…`. The stack owns what bears its name; nothing else is touched.

use std::path::{Path, PathBuf};

use swarm_api::plan::{Basis, Kind, Op, Plan};
use swarm_api::state::ClusterState;

use super::DeployError;
use super::source::StackSource;
use crate::plan::{PlanError, Scope, check_externals, plan};
use crate::stack::{self, Loaded, Stack};

/// Loads `files` (merged, each overriding those before it) as the stack `name`.
pub fn load_stack(
    source: &dyn StackSource,
    files: &[PathBuf],
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Loaded {
    let displays: Vec<String> = files.iter().map(|file| source.display(file)).collect();
    let named: Vec<(&Path, &str)> = files
        .iter()
        .zip(&displays)
        .map(|(file, display)| (file.as_path(), display.as_str()))
        .collect();
    stack::load_files(source, &named, env, Some(name))
}

/// What a plan made against the cluster's `current` state was computed against.
pub fn state_basis(current: &ClusterState) -> Basis {
    Basis {
        state_version: Some(current.version),
        ..Basis::default()
    }
}

/// The plan that deploys `desired` over `current`. Services the stack no longer declares
/// stay unless `prune` (as `docker stack deploy`); its other objects go.
pub fn plan_stack(desired: &Stack, current: &ClusterState, prune: bool) -> Result<Plan, PlanError> {
    let scope = Scope { paths: Vec::new() };
    check_externals(std::slice::from_ref(desired), current)?;
    let mut plan = plan(
        std::slice::from_ref(desired),
        current,
        &scope,
        state_basis(current),
    )?;
    if !prune {
        plan.actions
            .retain(|a| !(a.op == Op::Remove && a.kind == Kind::Service));
    }
    Ok(plan)
}

/// The plan that removes every object of the stacks `names`, in order; a name that owns
/// nothing is refused.
pub fn plan_removal(names: &[String], current: &ClusterState) -> Result<Plan, DeployError> {
    // Each stack as declaring nothing: the planner removes all it owns.
    let empty: Vec<Stack> = names
        .iter()
        .map(|name| Stack {
            name: name.clone(),
            source: String::new(),
            services: Vec::new(),
            networks: Vec::new(),
            configs: Vec::new(),
            secrets: Vec::new(),
            externals: Vec::new(),
            contents: Default::default(),
        })
        .collect();
    let plan = plan(
        &empty,
        current,
        &Scope { paths: Vec::new() },
        state_basis(current),
    )?;
    if let Some(name) = names.iter().find(|name| {
        !plan
            .actions
            .iter()
            .any(|a| a.origin.stack.as_deref() == Some(name.as_str()))
    }) {
        return Err(DeployError::StackNotFound {
            stack: name.clone(),
        });
    }
    Ok(plan)
}
