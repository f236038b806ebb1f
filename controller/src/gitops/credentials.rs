//! What a fetch answers when a remote asks who it is: a token or basic credentials over
//! https, a key file over ssh. The choice is a pure function of what the remote allows and
//! what was already offered, so it is tested without a server; `mirror` turns it into
//! git2's `Cred`.

use std::fmt;
use std::path::{Path, PathBuf};

use git2::CredentialType;

/// The username a token is sent with: GitHub and Gitea read only the password, GitLab
/// accepts any username with a personal or project access token.
pub const TOKEN_USERNAME: &str = "x-access-token";

/// The username for ssh when the URL names none (`ssh://host/repo`): every forge's.
pub const SSH_USERNAME: &str = "git";

/// How a mirror authenticates to its remote. `Debug` never shows a secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    /// Public repositories, local paths, file:// URLs.
    #[default]
    Anonymous,
    /// An access token, sent as the password of https basic authentication.
    Token(String),
    /// https basic authentication.
    Basic { username: String, password: String },
    /// An ssh private key file (OpenSSH or PEM), with its passphrase if it has one.
    SshKey {
        key: PathBuf,
        passphrase: Option<String>,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &format_args!("<redacted>"))
                .finish(),
            Credentials::SshKey { key, passphrase } => f
                .debug_struct("SshKey")
                .field("key", key)
                .field(
                    "passphrase",
                    &format_args!(
                        "{}",
                        if passphrase.is_some() {
                            "<redacted>"
                        } else {
                            "none"
                        }
                    ),
                )
                .finish(),
        }
    }
}

/// What to answer one credential request with.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<'c> {
    UserPass {
        username: &'c str,
        password: &'c str,
    },
    SshKey {
        username: &'c str,
        key: &'c Path,
        passphrase: Option<&'c str>,
    },
    /// ssh asks for the username alone before it asks for a key.
    Username(&'c str),
    /// No answer: the fetch stops with this.
    Refuse(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The credentials were offered and the remote asked again: it refused them.
    Rejected,
    /// The remote wants a kind of credentials these are not (or there are none).
    Unsuitable { wanted: String, have: &'static str },
}

/// The answer to the remote's request for credentials of the kinds `allowed`, for the URL's
/// own username if it has one. `offered` says whether credentials were already sent during
/// this fetch: libgit2 asks again after a refusal, and would loop forever.
pub fn answer<'c>(
    credentials: &'c Credentials,
    url_username: Option<&'c str>,
    allowed: CredentialType,
    offered: bool,
) -> Answer<'c> {
    if offered {
        return Answer::Refuse(Refusal::Rejected);
    }
    let unsuitable = |have| {
        Answer::Refuse(Refusal::Unsuitable {
            wanted: describe(allowed),
            have,
        })
    };
    match credentials {
        Credentials::Token(token) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
            Answer::UserPass {
                username: url_username.unwrap_or(TOKEN_USERNAME),
                password: token,
            }
        }
        Credentials::Basic { username, password }
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
        {
            Answer::UserPass { username, password }
        }
        Credentials::SshKey { key, passphrase } => {
            let username = url_username.unwrap_or(SSH_USERNAME);
            if allowed.contains(CredentialType::SSH_KEY) {
                Answer::SshKey {
                    username,
                    key,
                    passphrase: passphrase.as_deref(),
                }
            } else if allowed.contains(CredentialType::USERNAME) {
                Answer::Username(username)
            } else {
                unsuitable("an ssh key")
            }
        }
        Credentials::Anonymous => unsuitable("none"),
        Credentials::Token(_) => unsuitable("a token"),
        Credentials::Basic { .. } => unsuitable("a username and password"),
    }
}

/// Whether an answer sends a secret (a later request then means it was refused).
pub fn offers_secret(answer: &Answer<'_>) -> bool {
    matches!(answer, Answer::UserPass { .. } | Answer::SshKey { .. })
}

fn describe(allowed: CredentialType) -> String {
    let mut kinds = Vec::new();
    if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
        kinds.push("a username and password or token");
    }
    if allowed.intersects(CredentialType::SSH_KEY | CredentialType::SSH_MEMORY) {
        kinds.push("an ssh key");
    }
    if kinds.is_empty() {
        kinds.push("a kind of credentials swarm does not support");
    }
    kinds.join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Credentials {
        Credentials::Token("t0ps3cret".into())
    }

    fn key() -> Credentials {
        Credentials::SshKey {
            key: PathBuf::from("/keys/id_ed25519"),
            passphrase: Some("k3y-pass".into()),
        }
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let basic = Credentials::Basic {
            username: "ci".into(),
            password: "hunter2".into(),
        };
        for credentials in [token(), basic, key()] {
            let shown = format!("{credentials:?}");
            for secret in ["t0ps3cret", "hunter2", "k3y-pass"] {
                assert!(!shown.contains(secret), "{shown}");
            }
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        assert!(format!("{:?}", key()).contains("/keys/id_ed25519"));
    }

    #[test]
    fn answers_by_what_the_remote_allows() {
        let userpass = CredentialType::USER_PASS_PLAINTEXT;
        let ssh = CredentialType::SSH_KEY;
        let basic = Credentials::Basic {
            username: "ci".into(),
            password: "hunter2".into(),
        };
        let key = key();
        let token = token();
        let cases: Vec<(&Credentials, Option<&str>, CredentialType, Answer)> = vec![
            (
                &token,
                None,
                userpass,
                Answer::UserPass {
                    username: TOKEN_USERNAME,
                    password: "t0ps3cret",
                },
            ),
            (
                &token,
                Some("oauth2"),
                userpass,
                Answer::UserPass {
                    username: "oauth2",
                    password: "t0ps3cret",
                },
            ),
            (
                &basic,
                None,
                userpass,
                Answer::UserPass {
                    username: "ci",
                    password: "hunter2",
                },
            ),
            (
                &key,
                Some("deploy"),
                ssh,
                Answer::SshKey {
                    username: "deploy",
                    key: Path::new("/keys/id_ed25519"),
                    passphrase: Some("k3y-pass"),
                },
            ),
            (
                &key,
                None,
                CredentialType::USERNAME,
                Answer::Username(SSH_USERNAME),
            ),
            (
                &token,
                None,
                ssh,
                Answer::Refuse(Refusal::Unsuitable {
                    wanted: "an ssh key".into(),
                    have: "a token",
                }),
            ),
            (
                &key,
                None,
                userpass,
                Answer::Refuse(Refusal::Unsuitable {
                    wanted: "a username and password or token".into(),
                    have: "an ssh key",
                }),
            ),
            (
                &Credentials::Anonymous,
                None,
                userpass,
                Answer::Refuse(Refusal::Unsuitable {
                    wanted: "a username and password or token".into(),
                    have: "none",
                }),
            ),
        ];
        for (credentials, url_username, allowed, want) in cases {
            assert_eq!(
                answer(credentials, url_username, allowed, false),
                want,
                "{credentials:?} asked for {allowed:?}"
            );
        }
    }

    #[test]
    fn a_second_request_after_a_secret_means_refused() {
        let token = token();
        let first = answer(&token, None, CredentialType::USER_PASS_PLAINTEXT, false);
        assert!(offers_secret(&first));
        assert_eq!(
            answer(&token, None, CredentialType::USER_PASS_PLAINTEXT, true),
            Answer::Refuse(Refusal::Rejected)
        );
        // The username step of ssh sends no secret: the key request that follows is answered.
        let key = key();
        assert!(!offers_secret(&answer(
            &key,
            None,
            CredentialType::USERNAME,
            false
        )));
    }
}
