//! How commands reach a daemon: the local one over its unix socket (the default), or the
//! one `--host` / `SWARM_HOST` names.

use std::path::PathBuf;

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use swarm_api::grpc::control::control_client::ControlClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// The daemon's socket when nothing else is said.
pub const DEFAULT_SOCKET: &str = "/run/swarm/swarm.sock";

/// Connects to the daemon at `host`: `unix:///path/to/socket` (remote managers over mTLS come
/// with joining).
pub async fn connect(host: &str) -> anyhow::Result<ControlClient<Channel>> {
    let Some(path) = host.strip_prefix("unix://") else {
        bail!("unsupported --host {host:?}: use unix:///path/to/swarm.sock");
    };
    let path = PathBuf::from(path);
    let socket = path.clone();
    // The URI is a placeholder: the connector below ignores it and dials the socket.
    let channel = Endpoint::from_static("http://swarm.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .with_context(|| {
            format!(
                "cannot reach the swarm daemon at {}: is `swarm daemon` running?",
                path.display()
            )
        })?;
    Ok(ControlClient::new(channel))
}

/// A gRPC error as a user reads it: the daemon's message, without the transport's wrapping.
pub fn explain(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}
