//! Git: stack files at a revision, and what the leader's watcher drives — mirrors of remote
//! repositories fetched one at a time per URL, the commits in them as stack sources with
//! their metadata, and the verification of push webhooks.
//!
//! The flow, one file a step:
//! - `credentials`: what a fetch answers when the remote asks who it is (pure).
//! - `flight`: one fetch at a time per mirror, shared by the callers that asked meanwhile.
//! - `mirror`: a bare mirror per remote URL, fetched with git2 within bounds ([`Mirrors`]).
//! - `revision`: a commit's tree as a `StackSource` ([`Repo`], [`GitRevision`]), in a work
//!   tree's repository or in a bare mirror.
//! - `commit`: the commit's metadata for a Deployment ([`CommitInfo`]).
//! - `cache`: stack files loaded at a commit kept by content, so an unchanged file at the
//!   next commit is not parsed again ([`LoadCache`], [`CachedRevision`]).
//! - `deploy`: a commit planned against the stacks its repository owns, as the Deployment the
//!   watcher proposes; the applied commit planned again gives the drift and its heal
//!   ([`decide`], [`Decision`]).
//! - `outcome`: whether an applied Deployment converged or failed ([`judge`]).
//! - `webhook`: is a push webhook genuine, and which branch does it name (pure).

mod cache;
mod commit;
mod credentials;
mod deploy;
mod flight;
mod mirror;
mod outcome;
mod revision;
#[cfg(test)]
mod tests;
pub mod webhook;

pub use cache::{CachedRevision, LoadCache};
pub use commit::CommitInfo;
pub use credentials::{Answer, Credentials, Refusal, answer, offers_secret};
pub use deploy::{Decision, DeployDecisionError, Target, decide, owned_objects};
pub use mirror::{
    FETCH_DEADLINE, Fetch, FetchError, Git2Fetch, Heads, MAX_FETCH_BYTES, Mirror, Mirrors,
    normalise_url, redact_url,
};
pub use outcome::judge;
pub use revision::{GitError, GitRevision, Repo};
