//! Push webhooks: is the request genuine (signed with the repository's webhook secret), and
//! does it name the branch the repository follows. Pure: the daemon's listener hands in the
//! headers and the body, and answers 401 on an error here.
//!
//! - GitHub: `X-Hub-Signature-256: sha256=HEX`, the HMAC-SHA256 of the body.
//! - Gitea and Forgejo: `X-Gitea-Signature` / `X-Forgejo-Signature: HEX`, the same HMAC.
//! - GitLab: `X-Gitlab-Token`, the secret itself.
//!
//! Every comparison is in constant time (hmac's `verify_slice`); a token is compared as the
//! HMAC of itself under the secret, so not even its length leaks.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const GITHUB_SIGNATURE: &str = "X-Hub-Signature-256";
pub const GITEA_SIGNATURE: &str = "X-Gitea-Signature";
pub const FORGEJO_SIGNATURE: &str = "X-Forgejo-Signature";
pub const GITLAB_TOKEN: &str = "X-Gitlab-Token";

/// Who signed the request, as its headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    Gitea,
    Forgejo,
    GitLab,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "repository {repo} has no webhook secret, so no webhook is trusted: give one with `swarm repo add --webhook-secret-file`"
    )]
    NoSecret { repo: String },
    #[error(
        "the webhook for {repo} carries no signature ({GITHUB_SIGNATURE}, {GITLAB_TOKEN}, {GITEA_SIGNATURE} or {FORGEJO_SIGNATURE}): set the secret in the forge's webhook settings"
    )]
    Unsigned { repo: String },
    #[error("the webhook for {repo} has a malformed {header}: {reason}")]
    Malformed {
        repo: String,
        header: &'static str,
        reason: &'static str,
    },
    #[error(
        "the {header} of the webhook for {repo} does not match: the forge's secret is not the repository's"
    )]
    Mismatch { repo: String, header: &'static str },
    #[error("the webhook body for {repo} is not a push event: {reason}")]
    Body { repo: String, reason: String },
}

/// Checks the request's signature against `secret`. `header` looks a header up by name
/// (case-insensitively, as HTTP header names are).
pub fn verify(
    repo: &str,
    secret: &[u8],
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
) -> Result<Forge, WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::NoSecret {
            repo: repo.to_owned(),
        });
    }
    let malformed = |header, reason| WebhookError::Malformed {
        repo: repo.to_owned(),
        header,
        reason,
    };
    let mismatch = |header| WebhookError::Mismatch {
        repo: repo.to_owned(),
        header,
    };
    if let Some(value) = header(GITHUB_SIGNATURE) {
        let hex = value
            .trim()
            .strip_prefix("sha256=")
            .ok_or_else(|| malformed(GITHUB_SIGNATURE, "it does not start with sha256="))?;
        let signature =
            decode_hex(hex).ok_or_else(|| malformed(GITHUB_SIGNATURE, "it is not hex"))?;
        return body_mac(secret, body)
            .verify_slice(&signature)
            .map(|()| Forge::GitHub)
            .map_err(|_| mismatch(GITHUB_SIGNATURE));
    }
    for (name, forge) in [
        (GITEA_SIGNATURE, Forge::Gitea),
        (FORGEJO_SIGNATURE, Forge::Forgejo),
    ] {
        if let Some(value) = header(name) {
            let signature =
                decode_hex(value.trim()).ok_or_else(|| malformed(name, "it is not hex"))?;
            return body_mac(secret, body)
                .verify_slice(&signature)
                .map(|()| forge)
                .map_err(|_| mismatch(name));
        }
    }
    if let Some(token) = header(GITLAB_TOKEN) {
        let expected = body_mac(secret, secret).finalize().into_bytes();
        return body_mac(secret, token.as_bytes())
            .verify_slice(&expected)
            .map(|()| Forge::GitLab)
            .map_err(|_| mismatch(GITLAB_TOKEN));
    }
    Err(WebhookError::Unsigned {
        repo: repo.to_owned(),
    })
}

/// What to do with a genuine webhook for a repository that follows `branch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relevance {
    Fetch,
    /// Nothing to fetch, and why (a push to another branch, a tag, a ping).
    Ignore(String),
}

/// Whether the push event in `body` (GitHub, GitLab, Gitea and Forgejo all name the pushed
/// ref as `ref`) moved `branch`. An event with no `ref` (GitHub's `ping`) is ignored.
pub fn relevance(repo: &str, body: &[u8], branch: &str) -> Result<Relevance, WebhookError> {
    #[derive(serde::Deserialize)]
    struct Push {
        #[serde(rename = "ref")]
        reference: Option<String>,
    }
    let push: Push = serde_json::from_slice(body).map_err(|e| WebhookError::Body {
        repo: repo.to_owned(),
        reason: e.to_string(),
    })?;
    let Some(reference) = push.reference else {
        return Ok(Relevance::Ignore("the event names no ref".to_owned()));
    };
    Ok(match reference.strip_prefix("refs/heads/") {
        Some(pushed) if pushed == branch => Relevance::Fetch,
        Some(pushed) => Relevance::Ignore(format!("a push to branch {pushed}, not {branch}")),
        None => Relevance::Ignore(format!("{reference} is not a branch")),
    })
}

fn body_mac(secret: &[u8], body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    mac
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example: the secret, the payload and its signature.
    const GITHUB_SECRET: &[u8] = b"It's a Secret to Everybody";
    const GITHUB_BODY: &[u8] = b"Hello, World!";
    /// `printf '%s' 'Hello, World!' | openssl dgst -sha256 -hmac "It's a Secret to Everybody"`
    const GITHUB_HEX: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    /// A push body, and `openssl dgst -sha256 -hmac "It's a Secret to Everybody"` of it.
    const PUSH_BODY: &[u8] = br#"{"ref":"refs/heads/main","after":"0123"}"#;
    const PUSH_HEX: &str = "dac497b60582d9f9e06c4a7ad28ce15bf5c57da92102f4e734495307a2f86341";

    fn headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name.to_ascii_lowercase())
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn signatures_of_each_forge_are_checked() {
        let github = format!("sha256={GITHUB_HEX}");
        let upper = format!("sha256={}", GITHUB_HEX.to_ascii_uppercase());
        type Case<'a> = (&'a [u8], Vec<(&'a str, &'a str)>, Result<Forge, &'a str>);
        let cases: Vec<Case> = vec![
            (
                GITHUB_BODY,
                vec![(GITHUB_SIGNATURE, &github)],
                Ok(Forge::GitHub),
            ),
            (
                PUSH_BODY,
                vec![("x-gitea-signature", PUSH_HEX)],
                Ok(Forge::Gitea),
            ),
            (
                PUSH_BODY,
                vec![(FORGEJO_SIGNATURE, PUSH_HEX)],
                Ok(Forge::Forgejo),
            ),
            (
                PUSH_BODY,
                vec![(GITLAB_TOKEN, "It's a Secret to Everybody")],
                Ok(Forge::GitLab),
            ),
            // The body was changed after signing.
            (
                PUSH_BODY,
                vec![(GITHUB_SIGNATURE, &github)],
                Err("mismatch"),
            ),
            (
                GITHUB_BODY,
                vec![(GITEA_SIGNATURE, PUSH_HEX)],
                Err("mismatch"),
            ),
            (
                PUSH_BODY,
                vec![(GITLAB_TOKEN, "It's a secret to everybody")],
                Err("mismatch"),
            ),
            (
                PUSH_BODY,
                vec![(GITLAB_TOKEN, "It's a Secret")],
                Err("mismatch"),
            ),
            // Uppercase hex is hex; a truncated signature does not match.
            (
                GITHUB_BODY,
                vec![(GITHUB_SIGNATURE, &upper)],
                Ok(Forge::GitHub),
            ),
            (
                GITHUB_BODY,
                vec![(GITHUB_SIGNATURE, &github[..39])],
                Err("mismatch"),
            ),
            (
                GITHUB_BODY,
                vec![(GITHUB_SIGNATURE, GITHUB_HEX)],
                Err("malformed"),
            ),
            (
                GITHUB_BODY,
                vec![(GITHUB_SIGNATURE, "sha256=xyz0")],
                Err("malformed"),
            ),
            (
                GITHUB_BODY,
                vec![("X-GitHub-Event", "push")],
                Err("unsigned"),
            ),
        ];
        for (body, pairs, want) in cases {
            let got = verify("web", GITHUB_SECRET, &headers(&pairs), body);
            let got = got.map_err(|e| match e {
                WebhookError::Mismatch { .. } => "mismatch",
                WebhookError::Malformed { .. } => "malformed",
                WebhookError::Unsigned { .. } => "unsigned",
                other => panic!("{other}"),
            });
            assert_eq!(got, want, "{pairs:?}");
        }
    }

    #[test]
    fn no_secret_trusts_no_webhook() {
        let signature = format!("sha256={GITHUB_HEX}");
        let err = verify(
            "web",
            b"",
            &headers(&[(GITHUB_SIGNATURE, &signature)]),
            GITHUB_BODY,
        )
        .unwrap_err();
        assert_eq!(err, WebhookError::NoSecret { repo: "web".into() });
        assert!(err.to_string().contains("--webhook-secret-file"), "{err}");
    }

    #[test]
    fn a_mismatch_names_the_header_and_the_repository() {
        let err = verify(
            "web",
            b"other secret",
            &headers(&[(GITEA_SIGNATURE, PUSH_HEX)]),
            PUSH_BODY,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the X-Gitea-Signature of the webhook for web does not match: the forge's secret is not the repository's"
        );
    }

    #[test]
    fn only_a_push_to_the_followed_branch_fetches() {
        let cases: &[(&str, Relevance)] = &[
            (r#"{"ref":"refs/heads/main"}"#, Relevance::Fetch),
            (
                r#"{"ref":"refs/heads/feature/x","object_kind":"push"}"#,
                Relevance::Ignore("a push to branch feature/x, not main".into()),
            ),
            (
                r#"{"ref":"refs/tags/v1.0"}"#,
                Relevance::Ignore("refs/tags/v1.0 is not a branch".into()),
            ),
            (
                r#"{"zen":"Keep it simple.","hook_id":1}"#,
                Relevance::Ignore("the event names no ref".into()),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                &relevance("web", body.as_bytes(), "main").unwrap(),
                want,
                "{body}"
            );
        }
        assert!(matches!(
            relevance("web", b"not json", "main"),
            Err(WebhookError::Body { .. })
        ));
    }
}
