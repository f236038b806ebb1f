//! The cluster's certificate authority: a root CA made at `swarm init` (its key stays on the
//! managers), node certificates issued from a joiner's CSR, and join tokens (`token`).
//!
//! A node certificate's subject says who the node is, as in Docker: CN = node id,
//! OU = `swarm-manager` or `swarm-worker`, O = cluster id. Its DNS names are the node id and
//! the role, so a client can verify "any manager of this cluster" by the name
//! `swarm-manager`. Time is an input: callers pass `now`.

pub mod token;

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// How long node certificates are valid unless configured otherwise (Docker's default).
pub const DEFAULT_NODE_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// How long the root CA is valid.
pub const ROOT_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Manager,
    Worker,
    /// An operator's certificate, for the control API over the cluster port
    /// (`swarm --host tcp://…`); it is not a node.
    Admin,
}

impl Role {
    /// The organisational unit (and DNS name) of the role in certificates.
    pub fn unit(self) -> &'static str {
        match self {
            Role::Manager => "swarm-manager",
            Role::Worker => "swarm-worker",
            Role::Admin => "swarm-admin",
        }
    }
}

/// Who a certificate says a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node_id: String,
    pub role: Role,
    pub cluster_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid certificate signing request: {0}")]
    Csr(rcgen::Error),
    #[error("invalid node certificate: {0}")]
    Certificate(String),
}

pub struct RootCa {
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
    cert_der: Vec<u8>,
    cert_pem: String,
}

/// Certificates are valid from a little before they are issued, for clocks that are a
/// little behind the issuer's.
const CLOCK_SLACK: Duration = Duration::from_secs(60);

fn validity(params: &mut CertificateParams, now: SystemTime, length: Duration) {
    params.not_before = (now - CLOCK_SLACK).into();
    params.not_after = (now + length).into();
}

impl RootCa {
    /// A new root CA for `cluster_id`, valid from `now` for [`ROOT_VALIDITY`].
    pub fn generate(cluster_id: &str, now: SystemTime) -> Result<RootCa, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "swarm-ca");
        name.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, now, ROOT_VALIDITY);
        let cert = params.self_signed(&key)?;
        Ok(RootCa {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA as stored on a manager: its certificate and key in PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<RootCa, CaError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(RootCa {
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            key_pem: key_pem.to_owned(),
            cert_der: pem_to_der(cert_pem)?,
            cert_pem: cert_pem.to_owned(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA's private key in PEM: secret material, for the managers' data dirs only.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Signs a node certificate for `identity` over the public key of `csr_pem`. Whatever
    /// names the CSR asks for are ignored: the CA decides who the node is.
    pub fn issue(
        &self,
        csr_pem: &str,
        identity: &NodeIdentity,
        now: SystemTime,
        length: Duration,
    ) -> Result<String, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::Csr)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, identity.node_id.as_str());
        name.push(DnType::OrganizationalUnitName, identity.role.unit());
        name.push(DnType::OrganizationName, identity.cluster_id.as_str());
        params.distinguished_name = name;
        params.subject_alt_names = vec![
            SanType::DnsName(identity.node_id.clone().try_into()?),
            SanType::DnsName(identity.role.unit().try_into()?),
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut params, now, length);
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(cert.pem())
    }
}

/// When a certificate (PEM) stops being valid, and the lifetime it was issued for.
pub fn validity_of(cert_pem: &str) -> Result<(SystemTime, Duration), CaError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = pem_to_der(cert_pem)?;
    let (_, cert) =
        X509Certificate::from_der(&der).map_err(|e| CaError::Certificate(e.to_string()))?;
    let validity = cert.validity();
    let seconds = |t: i64| Duration::from_secs(t.max(0) as u64);
    let not_before = seconds(validity.not_before.timestamp());
    let not_after = seconds(validity.not_after.timestamp());
    Ok((
        SystemTime::UNIX_EPOCH + not_after,
        not_after
            .saturating_sub(not_before)
            .saturating_sub(CLOCK_SLACK),
    ))
}

/// Who a certificate in PEM says a node is.
pub fn identity_of_pem(cert_pem: &str) -> Result<NodeIdentity, CaError> {
    identity_of(&pem_to_der(cert_pem)?)
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, CaError> {
    let parsed = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| CaError::Certificate(e.to_string()))?
        .1;
    Ok(parsed.contents)
}

/// A node's own key and the request for its certificate; the key never leaves the node.
pub struct NodeKey {
    key: KeyPair,
}

impl NodeKey {
    pub fn generate() -> Result<NodeKey, CaError> {
        Ok(NodeKey {
            key: KeyPair::generate()?,
        })
    }

    pub fn from_pem(pem: &str) -> Result<NodeKey, CaError> {
        Ok(NodeKey {
            key: KeyPair::from_pem(pem)?,
        })
    }

    pub fn pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn csr_pem(&self) -> Result<String, CaError> {
        let params = CertificateParams::new(Vec::<String>::new())?;
        Ok(params.serialize_request(&self.key)?.pem()?)
    }
}

/// Reads who a node certificate (DER) names, checking that it has the shape the CA issues.
/// (Whether it chains to the CA and is in date is the TLS layer's job.)
pub fn identity_of(cert_der: &[u8]) -> Result<NodeIdentity, CaError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let bad = |what: &str| CaError::Certificate(what.to_owned());
    let (_, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| CaError::Certificate(e.to_string()))?;
    let subject = cert.subject();
    let one = |values: Vec<&str>, what: &str| -> Result<String, CaError> {
        match values.as_slice() {
            [value] => Ok((*value).to_owned()),
            _ => Err(bad(&format!("expected one {what} in the subject"))),
        }
    };
    let node_id = one(
        subject
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .collect(),
        "common name",
    )?;
    let unit = one(
        subject
            .iter_organizational_unit()
            .filter_map(|a| a.as_str().ok())
            .collect(),
        "organisational unit",
    )?;
    let cluster_id = one(
        subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .collect(),
        "organisation",
    )?;
    let role = match unit.as_str() {
        "swarm-manager" => Role::Manager,
        "swarm-worker" => Role::Worker,
        "swarm-admin" => Role::Admin,
        other => return Err(bad(&format!("unknown role {other:?}"))),
    };
    Ok(NodeIdentity {
        node_id,
        role,
        cluster_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(role: Role) -> NodeIdentity {
        NodeIdentity {
            node_id: "n1a2b3c4d5".to_owned(),
            role,
            cluster_id: "c9f8e7d6".to_owned(),
        }
    }

    fn der_of(pem: &str) -> Vec<u8> {
        pem_to_der(pem).unwrap()
    }

    #[test]
    fn issues_node_certificates_that_name_the_node() {
        let now = SystemTime::now();
        let ca = RootCa::generate("c9f8e7d6", now).unwrap();
        let node = NodeKey::generate().unwrap();
        let cert = ca
            .issue(
                &node.csr_pem().unwrap(),
                &identity(Role::Manager),
                now,
                DEFAULT_NODE_VALIDITY,
            )
            .unwrap();
        assert_eq!(
            identity_of(&der_of(&cert)).unwrap(),
            identity(Role::Manager)
        );

        use x509_parser::prelude::{FromDer, X509Certificate};
        let der = der_of(&cert);
        let (_, parsed) = X509Certificate::from_der(&der).unwrap();
        let (_, root) = X509Certificate::from_der(ca.cert_der()).unwrap();
        parsed
            .verify_signature(Some(root.public_key()))
            .expect("signed by the root CA");
        let lifetime =
            parsed.validity().not_after.timestamp() - parsed.validity().not_before.timestamp();
        assert_eq!(lifetime, 90 * 24 * 3600 + 60);
        let (not_after, issued_for) = validity_of(&cert).unwrap();
        assert_eq!(
            issued_for, DEFAULT_NODE_VALIDITY,
            "the slack is not lifetime"
        );
        assert_eq!(
            not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
            parsed.validity().not_after.timestamp()
        );
    }

    #[test]
    fn the_ca_survives_a_round_trip_through_pem() {
        let now = SystemTime::now();
        let ca = RootCa::generate("cluster", now).unwrap();
        let restored = RootCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(restored.cert_der(), ca.cert_der());
        let node = NodeKey::from_pem(&NodeKey::generate().unwrap().pem()).unwrap();
        let cert = restored
            .issue(
                &node.csr_pem().unwrap(),
                &identity(Role::Worker),
                now,
                DEFAULT_NODE_VALIDITY,
            )
            .unwrap();
        assert_eq!(identity_of(&der_of(&cert)).unwrap().role, Role::Worker);
    }

    #[test]
    fn garbage_requests_and_certificates_are_refused() {
        let ca = RootCa::generate("cluster", SystemTime::now()).unwrap();
        let err = ca
            .issue(
                "not a csr",
                &identity(Role::Worker),
                SystemTime::now(),
                DEFAULT_NODE_VALIDITY,
            )
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("invalid certificate signing request"),
            "{err}"
        );
        // The CA's own certificate is not a node certificate.
        assert!(identity_of(ca.cert_der()).is_err());
        assert!(identity_of(b"junk").is_err());
    }
}
