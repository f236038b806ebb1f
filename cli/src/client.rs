//! How commands reach a daemon: the local one over its unix socket (the default), or the
//! one `--host` / `SWARM_HOST` names: another socket, or a manager over mutual TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use swarm_api::grpc::control::ListServicesRequest;
use swarm_api::grpc::control::control_client::ControlClient;
use swarm_api::task::ServicesView;
use swarm_controller::ca::Role;
use swarm_controller::tls::NodeCredentials;
use tonic::transport::{Channel, Endpoint, Uri};

/// The daemon's socket when nothing else is said.
pub const DEFAULT_SOCKET: &str = "/run/swarm/swarm.sock";

/// Which daemon a command talks to.
#[derive(Debug, Clone)]
pub struct Host {
    /// `unix:///path/to/swarm.sock` or `tcp://MANAGER:PORT`.
    pub uri: String,
    /// For `tcp://`: where `ca.pem`, `cert.pem` and `key.pem` are (`swarm client-cert`).
    pub tls_dir: PathBuf,
}

/// Connects to the daemon at `host`: the local one over its unix socket, or a manager over
/// mutual TLS with an admin certificate of its cluster.
pub async fn connect(host: &Host) -> anyhow::Result<ControlClient<Channel>> {
    if let Some(address) = host.uri.strip_prefix("tcp://") {
        return connect_tcp(address, &host.tls_dir).await;
    }
    let Some(path) = host.uri.strip_prefix("unix://") else {
        bail!(
            "unsupported --host {:?}: use unix:///path/to/swarm.sock or tcp://MANAGER:2377",
            host.uri
        );
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

async fn connect_tcp(address: &str, tls_dir: &Path) -> anyhow::Result<ControlClient<Channel>> {
    let read = |name: &str| {
        let path = tls_dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}: a remote manager needs a client certificate; make one with `swarm client-cert --out {}` on a manager, or point --tls-dir / SWARM_TLS_DIR at one",
                path.display(),
                tls_dir.display()
            )
        })
    };
    let credentials = NodeCredentials {
        ca_pem: read("ca.pem")?,
        cert_pem: read("cert.pem")?,
        key_pem: read("key.pem")?,
    };
    let channel = Endpoint::from_shared(format!("https://{address}"))
        .with_context(|| format!("invalid --host tcp://{address}"))?
        .tls_config(credentials.client(Role::Manager))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            let mut cause: &dyn std::error::Error = &e;
            while let Some(source) = cause.source() {
                cause = source;
            }
            anyhow::anyhow!("cannot reach the manager at {address} over TLS: {cause}")
        })?;
    Ok(ControlClient::new(channel))
}

/// A gRPC error as a user reads it: the daemon's message, without the transport's wrapping.
pub fn explain(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

/// The services, their tasks and the nodes' names, as the daemon sees them now.
pub async fn view(host: &Host) -> anyhow::Result<ServicesView> {
    let mut client = connect(host).await?;
    let json = client
        .list_services(ListServicesRequest {})
        .await
        .map_err(explain)?
        .into_inner()
        .json;
    serde_json::from_str(&json).context("the daemon's answer is not a services view")
}
