//! TLS for node traffic: every connection is TLS with certificates from the cluster CA.
//! Servers present their certificate followed by the CA's, and ask for a client certificate
//! without requiring one at the handshake, so the join service can answer a node that has
//! none yet; every other service checks the peer's certificate itself (see
//! `raft::grpc::authorize_manager`). A joiner trusts a manager by pinning the CA that the
//! manager presents to the digest in its join token ([`connect_pinned`]).

use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig, Uri,
};

use crate::ca::token::JoinToken;
use crate::ca::{NodeIdentity, Role, identity_of};

/// A node's credentials: the cluster CA, its certificate and its key, in PEM.
#[derive(Clone)]
pub struct NodeCredentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl NodeCredentials {
    pub fn server(&self) -> ServerTlsConfig {
        // The CA follows the node's certificate, so that joiners can pin it.
        let chain = format!("{}\n{}", self.cert_pem.trim_end(), self.ca_pem);
        ServerTlsConfig::new()
            .identity(Identity::from_pem(chain, &self.key_pem))
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

/// Accepts a server whose chain holds the CA the token pins, and whose certificate that CA
/// signed for a manager; remembers why it refused, for the joiner's error message.
#[derive(Debug)]
struct PinnedCa {
    token: JoinToken,
    provider: Arc<rustls::crypto::CryptoProvider>,
    refusal: Arc<Mutex<Option<String>>>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refuse = |reason: String| {
            *self.refusal.lock().expect("not poisoned") = Some(reason.clone());
            rustls::Error::General(reason)
        };
        let Some(ca) = intermediates
            .iter()
            .find(|c| self.token.verify_ca(c).is_ok())
        else {
            let presented = intermediates
                .first()
                .map(|c| c.as_ref())
                .unwrap_or_default();
            let reason = match self.token.verify_ca(presented) {
                Err(e) => e.to_string(),
                Ok(()) => "the manager presented no CA certificate".to_owned(),
            };
            return Err(refuse(reason));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone())
            .map_err(|e| refuse(format!("the pinned CA is unusable: {e}")))?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| refuse(e.to_string()))?;
        verifier
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
            .map_err(|e| {
                refuse(format!(
                    "the manager's certificate is not from the pinned CA: {e}"
                ))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A channel to the manager at `address` (`host:port`) that trusts only the CA `token` pins.
/// No client certificate: the joiner has none yet. On failure, the error says why the
/// manager was not trusted when that was the reason.
pub async fn connect_pinned(address: &str, token: &JoinToken) -> Result<Channel, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let refusal = Arc::new(Mutex::new(None));
    let verifier = PinnedCa {
        token: token.clone(),
        provider: provider.clone(),
        refusal: refusal.clone(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let target = address.to_owned();
    let endpoint = Endpoint::from_shared(format!("http://{address}")).map_err(|e| e.to_string())?;
    let connected = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let target = target.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&target).await?;
                let name = ServerName::try_from(Role::Manager.unit()).expect("a valid DNS name");
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await;
    connected.map_err(|e| match refusal.lock().expect("not poisoned").take() {
        Some(reason) => reason,
        None => format!("cannot reach the manager at {address}: {e}"),
    })
}

/// Who the peer of a request is, by its client certificate, which must be of `cluster_id`.
pub fn peer_identity<T>(
    request: &tonic::Request<T>,
    cluster_id: &str,
) -> Result<NodeIdentity, tonic::Status> {
    let required = || tonic::Status::unauthenticated("a cluster certificate is required");
    let certificates = request.peer_certs().ok_or_else(required)?;
    let leaf = certificates.first().ok_or_else(required)?;
    let identity = identity_of(leaf).map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
    if identity.cluster_id != cluster_id {
        return Err(tonic::Status::permission_denied(format!(
            "node {} belongs to cluster {}, not {cluster_id}",
            identity.node_id, identity.cluster_id
        )));
    }
    Ok(identity)
}
