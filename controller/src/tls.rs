//! TLS for node traffic: every connection is mutual TLS with certificates from the cluster
//! CA. Servers ask for a client certificate but do not require one at the handshake, so the
//! join service can answer a node that has none yet; every other service checks the peer's
//! certificate itself (see `raft::grpc::authorize_manager`).

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::ca::Role;

/// A node's credentials: the cluster CA, its certificate and its key, in PEM.
#[derive(Clone)]
pub struct NodeCredentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl NodeCredentials {
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(true)
    }

    /// For connections to a node of `role`: its certificate must carry the role's name.
    pub fn client(&self, role: Role) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(role.unit())
    }
}
