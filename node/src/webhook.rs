//! The push-webhook listener (`swarm daemon --webhook-addr`): `POST /hooks/git/NAME` from a
//! forge makes the leader fetch repository NAME now instead of at its next poll.
//!
//! Any manager answers: it checks the request's signature against the repository's webhook
//! secret (replicated, so every manager has it) and proposes `SyncRepository`, which the
//! leader's watcher follows. A bad signature is 401 and logged, and nothing is fetched; a
//! push to another branch, a tag or a ping is 200 and ignored. Plain HTTP: put a TLS proxy in
//! front of it when the forge is outside the network (the signature, not the channel,
//! decides whether a request is trusted).

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use swarm_api::gitops::Trigger;
use swarm_api::store::Command;
use swarm_controller::gitops::webhook::{self, Relevance, WebhookError};
use swarm_controller::store::Store;
use swarm_controller::store::client::StoreError;

use super::{Daemon, millis, propose};

/// The largest webhook body taken (GitHub's push payloads are capped at 25 MB, but those
/// carry commit lists a fetch does not need; the ref is near the start of every forge's).
pub const MAX_BODY: usize = 4 << 20;

/// What a hook needs from the cluster: the repository's branch and webhook secret, and a
/// way to ask the leader to fetch.
pub trait Repositories: Send + Sync + 'static {
    /// The branch `name` follows and its webhook secret (empty when none is set); `None`
    /// when there is no such repository.
    fn lookup(
        &self,
        name: &str,
    ) -> impl std::future::Future<Output = Result<Option<(String, String)>, Unavailable>> + Send;
    fn sync(&self, name: &str)
    -> impl std::future::Future<Output = Result<(), Unavailable>> + Send;
}

/// The node cannot act on a hook now: not a manager, no leader, the store refused.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl Repositories for Arc<Daemon> {
    async fn lookup(&self, name: &str) -> Result<Option<(String, String)>, Unavailable> {
        let (raft, _) = self.manager().await.map_err(|status| {
            Unavailable(format!("{}: send webhooks to a manager", status.message()))
        })?;
        let name = name.to_owned();
        raft.local_read(move |store: &Store| {
            store.data().repositories.get(&name).map(|record| {
                (
                    record.repository.branch.clone(),
                    record.secrets.webhook_secret.clone().unwrap_or_default(),
                )
            })
        })
        .await
        .map_err(|error| Unavailable(error.to_string()))
    }

    async fn sync(&self, name: &str) -> Result<(), Unavailable> {
        let (raft, _) = self
            .manager()
            .await
            .map_err(|status| Unavailable(status.message().to_owned()))?;
        let command = Command::SyncRepository {
            name: name.to_owned(),
            trigger: Trigger::Webhook,
            at: millis(SystemTime::now()),
        };
        propose(&raft, &command)
            .await
            .map(drop)
            .map_err(|error: StoreError| Unavailable(error.to_string()))
    }
}

/// The listener's routes over `repositories`.
pub fn router<R: Repositories>(repositories: R) -> Router {
    Router::new()
        .route("/hooks/git/{name}", post(hook::<R>))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Arc::new(repositories))
}

/// Serves the listener until the task is dropped (bound by the caller, so that a port
/// already taken is the daemon's start error).
pub async fn serve<R: Repositories>(
    listener: tokio::net::TcpListener,
    repositories: R,
) -> std::io::Result<()> {
    axum::serve(listener, router(repositories)).await
}

async fn hook<R: Repositories>(
    State(repositories): State<Arc<R>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let (branch, secret) = match repositories.lookup(&name).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                format!("no repository {name}: `swarm repo ls` lists them\n"),
            );
        }
        Err(Unavailable(why)) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    };
    let header = |wanted: &str| {
        headers
            .get(wanted)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let forge = match webhook::verify(&name, secret.as_bytes(), &header, &body) {
        Ok(forge) => forge,
        Err(error) => {
            tracing::warn!(repository = %name, %error, "webhook refused");
            return (StatusCode::UNAUTHORIZED, format!("{error}\n"));
        }
    };
    match webhook::relevance(&name, &body, &branch) {
        Ok(Relevance::Fetch) => {}
        Ok(Relevance::Ignore(why)) => {
            tracing::debug!(repository = %name, ?forge, %why, "webhook ignored");
            return (StatusCode::OK, format!("ignored: {why}\n"));
        }
        Err(error @ WebhookError::Body { .. }) => {
            return (StatusCode::BAD_REQUEST, format!("{error}\n"));
        }
        Err(error) => return (StatusCode::UNAUTHORIZED, format!("{error}\n")),
    }
    match repositories.sync(&name).await {
        Ok(()) => {
            tracing::info!(repository = %name, ?forge, "webhook: fetching");
            (
                StatusCode::ACCEPTED,
                format!("fetching {branch} of {name}\n"),
            )
        }
        Err(Unavailable(why)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::body::Body;
    use axum::http::Request;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;
    use tower::ServiceExt;

    use super::*;

    /// One repository `app` on `main` with secret `s3cret`; records the syncs asked for.
    #[derive(Default, Clone)]
    struct Fake {
        synced: Arc<Mutex<Vec<String>>>,
    }

    impl Repositories for Fake {
        async fn lookup(&self, name: &str) -> Result<Option<(String, String)>, Unavailable> {
            Ok((name == "app").then(|| ("main".to_owned(), "s3cret".to_owned())))
        }

        async fn sync(&self, name: &str) -> Result<(), Unavailable> {
            self.synced.lock().unwrap().push(name.to_owned());
            Ok(())
        }
    }

    fn github_signature(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        let bytes = mac.finalize().into_bytes();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }

    async fn post(
        fake: &Fake,
        repo: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (u16, String) {
        let mut request = Request::post(format!("/hooks/git/{repo}"));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = router(fake.clone())
            .oneshot(request.body(Body::from(body.to_vec())).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    const PUSH_MAIN: &[u8] = br#"{"ref":"refs/heads/main","after":"abc"}"#;

    #[tokio::test]
    async fn a_signed_push_to_the_branch_asks_for_a_fetch() {
        let fake = Fake::default();
        let signature = github_signature("s3cret", PUSH_MAIN);
        let (status, body) = post(
            &fake,
            "app",
            &[(webhook::GITHUB_SIGNATURE, signature)],
            PUSH_MAIN,
        )
        .await;
        assert_eq!((status, body.as_str()), (202, "fetching main of app\n"));
        assert_eq!(*fake.synced.lock().unwrap(), ["app"]);
        // GitLab sends the secret itself.
        let (status, _) = post(
            &fake,
            "app",
            &[(webhook::GITLAB_TOKEN, "s3cret".to_owned())],
            PUSH_MAIN,
        )
        .await;
        assert_eq!(status, 202);
        assert_eq!(fake.synced.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_bad_signature_is_refused_and_fetches_nothing() {
        let fake = Fake::default();
        let wrong = github_signature("guess", PUSH_MAIN);
        let (status, body) = post(
            &fake,
            "app",
            &[(webhook::GITHUB_SIGNATURE, wrong)],
            PUSH_MAIN,
        )
        .await;
        assert_eq!(status, 401);
        assert!(body.contains("does not match"), "{body}");
        let (status, body) = post(&fake, "app", &[], PUSH_MAIN).await;
        assert_eq!(status, 401);
        assert!(body.contains("carries no signature"), "{body}");
        assert!(fake.synced.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn other_branches_unknown_repositories_and_bad_bodies_are_told_apart() {
        let fake = Fake::default();
        let other = br#"{"ref":"refs/heads/dev"}"#;
        let signed =
            |body: &[u8]| vec![(webhook::GITHUB_SIGNATURE, github_signature("s3cret", body))];
        let (status, body) = post(&fake, "app", &signed(other), other).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "ignored: a push to branch dev, not main\n")
        );
        let (status, body) = post(&fake, "nope", &signed(PUSH_MAIN), PUSH_MAIN).await;
        assert_eq!(status, 404);
        assert!(body.contains("no repository nope"), "{body}");
        let (status, _) = post(&fake, "app", &signed(b"not json"), b"not json").await;
        assert_eq!(status, 400);
        let huge = vec![b' '; MAX_BODY + 1];
        let (status, _) = post(&fake, "app", &signed(&huge), &huge).await;
        assert_eq!(status, 413);
        assert!(fake.synced.lock().unwrap().is_empty());
    }
}
