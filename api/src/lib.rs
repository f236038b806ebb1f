//! Types shared by every part of swarm: the stack file format as users write it
//! (`stackfile`), the normalised specs the cluster runs (`spec`), the exported
//! cluster state (`state`), the endpoint table nodes carry networks by (`endpoints`), config
//! and secret contents (`files`), cluster events (`events`), plans (`plan`), image references (`image`), the GitOps
//! records (`gitops`), a node's volumes (`volume`), the units they are written in and the
//! templates a task's hostname, environment and mounts may hold (`template`).
//!
//! Only this crate defines serialised formats; everything else passes these types.

pub mod auth;
pub mod converge;
pub mod endpoints;
pub mod events;
pub mod files;
pub mod gitops;
pub mod image;
pub mod plan;
pub mod rollout;
pub mod spec;
pub mod stackfile;
pub mod state;
pub mod store;
pub mod task;
pub mod template;
pub mod units;
pub mod volume;

/// gRPC services and messages, generated from `proto/` (see `tests/protos_current.rs`).
pub mod grpc {
    pub mod control {
        include!("proto/swarm.control.v1.rs");
    }

    pub mod dispatcher {
        include!("proto/swarm.dispatcher.v1.rs");
    }

    pub mod join {
        include!("proto/swarm.join.v1.rs");
    }

    pub mod raft {
        include!("proto/swarm.raft.v1.rs");
    }
}
