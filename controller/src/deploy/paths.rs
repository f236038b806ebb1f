//! Paths at a desired revision × a current side → a plan, or why there is none.

use std::path::{Path, PathBuf};

use swarm_api::plan::{Basis, Plan};
use swarm_api::state::ClusterState;

use super::DeployError;
use super::load::{Side, read_side};
use super::source::StackSource;
use crate::plan::{PlanError, Scope, check_externals, plan};
use crate::source::names_stack_file;
use crate::stack;

/// What the plan is made against.
pub enum Current<'s> {
    /// An empty cluster.
    Empty,
    /// A state export, or the cluster's state as a manager reads it.
    State(ClusterState),
    /// The same paths at another revision (`--base`): a file invalid there counts as
    /// absent, since it never reached a cluster.
    Source(&'s dyn StackSource),
}

/// Both sides as loaded, and what came of them.
#[derive(Debug)]
pub struct Outcome {
    /// The current side when it was read from a source.
    pub current: Option<Side>,
    pub desired: Side,
    /// The directories given where neither side has a stack file (nor the cluster an
    /// object from one): nothing there to plan.
    pub empty: Vec<PathBuf>,
    pub verdict: Verdict,
}

#[derive(Debug)]
pub enum Verdict {
    /// Paths that name nothing on the desired side and were not stacks on the current side
    /// (a deleted stack is planned as a removal instead).
    Missing(Vec<PathBuf>),
    /// This many desired stack files have errors (see the findings): nothing planned.
    Invalid(usize),
    /// The desired stacks cannot be planned together.
    Conflict(PlanError),
    /// The plan, with its basis (commits, state version).
    Planned(Plan),
}

/// Plans the stack files `paths` name at `desired` against `current`. The plan may remove
/// only what the desired stacks own or what stack files under `paths` declared.
pub fn plan_paths(
    paths: &[PathBuf],
    desired: &dyn StackSource,
    current: Current,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Outcome, DeployError> {
    let mut basis = Basis {
        head_commit: desired.commit(),
        ..Basis::default()
    };
    // The current side first: a path that exists only there is a deleted stack, not a typo.
    let state_known = matches!(current, Current::State(_));
    let (current_side, current_state) = match current {
        Current::Empty => (None, ClusterState::empty()),
        Current::State(state) => {
            basis.state_version = Some(state.version);
            (None, state)
        }
        Current::Source(source) => {
            let side = read_side(source, paths, env)?;
            basis.base_commit = side.commit.clone();
            let state = stack::as_state(&side.stacks);
            (Some(side), state)
        }
    };
    let desired_side = read_side(desired, paths, env)?;
    let empty: Vec<PathBuf> = desired_side
        .empty
        .iter()
        .filter(|dir| {
            let base_has = current_side
                .as_ref()
                .is_some_and(|side| side.files.iter().any(|f| names_stack_file(dir, &f.path)));
            let source = desired.source_name(dir);
            let cluster_has = current_state.services.iter().any(|object| {
                object
                    .origin
                    .source
                    .as_deref()
                    .is_some_and(|file| names_stack_file(Path::new(&source), Path::new(file)))
            });
            !base_has && !cluster_has
        })
        .cloned()
        .collect();
    let base_files = current_side.as_ref().map_or(&[][..], |s| &s.files[..]);
    let missing: Vec<PathBuf> = desired_side
        .missing
        .iter()
        .filter(|missing| {
            !base_files
                .iter()
                .any(|f| names_stack_file(missing, &f.path))
        })
        .cloned()
        .collect();
    let verdict = if !missing.is_empty() {
        Verdict::Missing(missing)
    } else if desired_side.invalid() > 0 {
        Verdict::Invalid(desired_side.invalid())
    } else {
        let scope = Scope {
            paths: paths.iter().map(|p| desired.source_name(p)).collect(),
        };
        // Only a real cluster's state (or its export) tells what exists outside the stacks.
        let externals = if state_known {
            check_externals(&desired_side.stacks, &current_state)
        } else {
            Ok(())
        };
        match externals.and_then(|()| plan(&desired_side.stacks, &current_state, &scope, basis)) {
            Ok(plan) => Verdict::Planned(plan),
            Err(conflict) => Verdict::Conflict(conflict),
        }
    };
    Ok(Outcome {
        current: current_side,
        desired: desired_side,
        empty,
        verdict,
    })
}
