//! The worker role: runs the tasks the managers assign to this node.
//!
//! - `image`: OCI registry pulls, a content store by digest, layers unpacked per image and
//!   mounted per task with overlayfs.
//! - `network`: the node bridge, a network namespace and an address per task.
//! - `exec`: the container runtime (`Runtime` trait, runc and a fake) and the per-task
//!   state machine.

pub mod exec;
pub mod image;
pub mod network;
pub mod worker;
