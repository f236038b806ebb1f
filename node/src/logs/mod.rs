//! Service logs (`swarm service logs`), after swarmkit's log broker. Workers listen on no
//! port, so the lines travel on streams the nodes open themselves:
//!
//! - every node's agent opens `Dispatcher.Logs` to the manager it takes assignments from
//!   ([`serve`]); that manager sends subscriptions down it, the agent answers with chunks
//!   of lines, and a close marker unless it follows;
//! - every manager keeps a [`LogBroker`]: which nodes have a Logs stream open to it, and
//!   the subscriptions open on each;
//! - `Control.ServiceLogs` ([`gather`]) subscribes on the nodes connected to the manager
//!   that answers, asks every other manager for the nodes connected to it
//!   (`Dispatcher.SubscribeLogs`, managers only), and merges the streams; a node that no
//!   manager serves is named in a warning.
//!
//! Architecture invariant: a line is taken from a node only for a task of the subscription
//! that the store assigns to that node; a node cannot publish another node's lines.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use swarm_agent::worker::logs::{
    Selection, Stream, TaskFollower, TaskLine, TaskLogError, TaskLogs,
};
use swarm_api::grpc::control::{ServiceLogLine, ServiceLogsMessage};
use swarm_api::grpc::dispatcher::dispatcher_client::DispatcherClient;
use swarm_api::grpc::dispatcher::{
    LogPublish, LogRecord, LogStream, LogSubscription, NodeTasks, SubscribeLogsRequest,
};
use swarm_api::task::{ServiceLookupError, ServicesView, Task, TaskState};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::Status;
use tonic::transport::Channel;

use swarm_controller::raft::driver::RaftHandle;
use swarm_controller::store::Store;

/// The most lines in one chunk, and about the most bytes (a chunk closes once over).
pub(super) const CHUNK_LINES: usize = 256;
pub(super) const CHUNK_BYTES: usize = 64 << 10;
/// A longer line is cut: any chunk must fit in a gRPC message (4 MiB by default).
pub(super) const MAX_LINE_BYTES: usize = 256 << 10;
/// Chunks waiting per stream: a slow reader slows its writers instead of filling memory.
pub(super) const BUFFER: usize = 16;
/// How long another manager has to say which nodes it serves before theirs are reported
/// unavailable.
pub(super) const REMOTE_ANSWER: Duration = Duration::from_secs(5);

/// Aborts its tasks when dropped: what a subscription started ends with it.
#[derive(Default)]
pub(super) struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

pub(super) fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What a subscription selects of the lines already written.
pub(super) fn selection(subscription: &LogSubscription) -> Selection {
    Selection {
        tail: usize::try_from(subscription.tail).ok(),
        since: (subscription.since_ns > 0)
            .then(|| UNIX_EPOCH + Duration::from_nanos(subscription.since_ns)),
    }
}

pub(super) fn record(task_id: &str, line: TaskLine) -> LogRecord {
    let mut data = line.text.into_bytes();
    data.truncate(MAX_LINE_BYTES);
    LogRecord {
        task_id: task_id.to_owned(),
        stream: match line.stream {
            Stream::Stdout => LogStream::Stdout,
            Stream::Stderr => LogStream::Stderr,
        } as i32,
        time_ns: nanos(line.time),
        data,
    }
}

/// Gathers a subscription's lines into chunks of bounded size.
pub(super) struct Chunker {
    subscription: String,
    records: Vec<LogRecord>,
    bytes: usize,
}

impl Chunker {
    fn new(subscription: &str) -> Self {
        Chunker {
            subscription: subscription.to_owned(),
            records: Vec::new(),
            bytes: 0,
        }
    }

    fn push(&mut self, record: LogRecord) {
        self.bytes += record.data.len();
        self.records.push(record);
    }

    fn is_full(&self) -> bool {
        self.records.len() >= CHUNK_LINES || self.bytes >= CHUNK_BYTES
    }

    fn take(&mut self) -> LogPublish {
        self.bytes = 0;
        LogPublish {
            subscription_id: self.subscription.clone(),
            records: std::mem::take(&mut self.records),
            ..LogPublish::default()
        }
    }
}

mod broker;
mod gather;
mod node;

pub use broker::*;
pub use gather::*;
pub(super) use node::serve;

#[cfg(test)]
mod tests;
