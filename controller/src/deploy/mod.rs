//! The deploy workflow as a library: stack files at a revision → loaded stacks and their
//! findings, as data → a plan against a given current state, scoped to the stacks in play.
//! `swarm plan`, `swarm stack deploy|rm` (and later the GitOps watcher) call it and decide
//! themselves what to print; nothing here writes to a terminal.
//!
//! The flow, one file a step:
//! - `source`: where a side's files are read from and how they are named ([`StackSource`]:
//!   the working tree, a git revision, later a fetched commit).
//! - `load`: the stack files under some paths at a source → a [`Side`] (stacks, findings,
//!   missing paths).
//! - `paths`: two sides (or a side and a state) → an [`Outcome`] whose [`Verdict`] is a plan
//!   or why there is none (deleted stacks are planned as removals, not taken for typos).
//! - `stack`: one named stack from explicit files (`stack deploy -c … NAME`), and the
//!   removal of whole stacks (`stack rm`), against the cluster's state.
//! - `flags`: one service from `service create|update` flags, through the same loader.

pub mod flags;
mod load;
mod paths;
mod source;
mod stack;
#[cfg(test)]
mod tests;

use std::io;

pub use load::{Side, StackFile, read_side};
pub use paths::{Current, Outcome, Verdict, plan_paths};
pub use source::{StackSource, WorkingCopy};
pub use stack::{load_stack, plan_removal, plan_stack, state_basis};

use crate::plan::PlanError;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Listing or reading the source failed (not a missing file: that is data).
    #[error(transparent)]
    Read(#[from] io::Error),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("nothing found in stack {stack}: `swarm stack ls` lists the stacks")]
    StackNotFound { stack: String },
}
