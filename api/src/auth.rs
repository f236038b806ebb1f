//! Registry credentials that travel with services (`--with-registry-auth`): from the CLI to
//! the managers, kept per service in the replicated store beside (never inside) the
//! service's spec, and handed to a node only with the assignments of that service's tasks.
//!
//! They are secret material: no plan, diff, export or log shows them, so their `Debug`
//! redacts the password.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Basic credentials for one registry.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RegistryCredential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryCredential({}, <redacted>)", self.username)
    }
}

/// A service's credentials by registry host (`host[:port]` as image references name it,
/// `docker.io` for Docker Hub).
pub type RegistryAuth = BTreeMap<String, RegistryCredential>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let auth = RegistryAuth::from([(
            "127.0.0.1:5000".to_owned(),
            RegistryCredential {
                username: "ci".into(),
                password: "hunter2".into(),
            },
        )]);
        let shown = format!("{auth:?} {auth:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("ci") && shown.contains("127.0.0.1:5000"),
            "{shown}"
        );
    }
}
