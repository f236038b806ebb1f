//! Consensus among managers with raft-rs: the durable log (`log`), and the Ready loop that
//! drives a replica (`replica`). The network transport (tonic over mTLS) is separate, so the
//! same replica runs in the deterministic simulation and in the daemon.

pub mod crypt;
pub mod driver;
pub mod grpc;
pub mod log;
mod recent;
pub mod replica;
