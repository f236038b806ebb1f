//! The manager role: from stack files to the cluster's desired state.
//!
//! Pure cores (`stack`, `plan`) over data; IO at the edges (`source`, `gitops`).

pub mod ca;
pub mod daemon;
pub mod gitops;
pub mod orchestrator;
pub mod plan;
pub mod raft;
pub mod scheduler;
pub mod source;
pub mod stack;
pub mod store;
pub mod tls;
