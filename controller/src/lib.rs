//! The manager role as a library: from stack files to the cluster's desired state, and the
//! replicated store, consensus and CA that keep it. The node process (`swarm-node`) runs it.
//!
//! Pure cores (`stack`, `plan`) over data; IO at the edges (`source`, `gitops`); `deploy`
//! is the workflow that joins them (stack files at a revision → findings → plan).

pub mod ca;
pub mod deploy;
pub mod gitops;
pub mod orchestrator;
pub mod plan;
pub mod raft;
pub mod scheduler;
pub mod source;
pub mod stack;
pub mod store;
pub mod tls;
