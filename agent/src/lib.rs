//! The worker role: runs the tasks the managers assign to this node.
//!
//! - `image`: OCI registry pulls, a content store by digest, layers unpacked per image and
//!   mounted per task with overlayfs.
//! - `network`: the node bridge, a network namespace and an address per task.
//! - `volume`: a task's volume, bind and tmpfs mounts (named volumes under `DATA_DIR/volumes`).
//! - `exec`: the container runtime (`Runtime` trait, runc and a fake) and the per-task
//!   state machine.

pub mod exec;
pub mod image;
pub mod network;
pub mod volume;
pub mod worker;
