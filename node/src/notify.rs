//! Deployment notifications (`repo add --notify URL`): while this manager leads, each state a
//! Deployment reaches is POSTed as JSON ([`Notification`]) to its repository's URL, in
//! order per repository, with bounded retries.
//!
//! It follows the store's watch: a changed repository record is compared with what was
//! already sent. A new leader sends only what changes after it took over (what its
//! predecessor was sending when it died may be lost: notifications are a courtesy, the
//! Deployment history in the store is the record).

use std::collections::HashMap;
use std::time::Duration;

use swarm_api::gitops::{Notification, RepositoryRecord};
use swarm_controller::raft::driver::RaftHandle;
use swarm_controller::store::{Changed, Store};
use tokio::sync::mpsc;

/// Attempts per notification, and the wait after the first failure (doubled each time).
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Per request: a receiver that does not answer within it counts as a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Notifications queued per repository before new ones are dropped (and logged).
const QUEUE: usize = 256;

/// What was last sent for each Deployment (by id): its outcome's state.
type Sent = HashMap<String, &'static str>;

pub async fn run(raft: RaftHandle<Store>, own_raft_id: u64) {
    let client = match http_client() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "notifications: no HTTP client; none will be sent");
            return;
        }
    };
    let mut applied = raft.applied();
    loop {
        let Ok(subscription) = raft
            .local_read(|store: &Store| store.subscribe(|_| ()))
            .await
        else {
            return;
        };
        let mut changes = subscription.changes;
        let mut sent: HashMap<String, Sent> = HashMap::new();
        let mut senders: HashMap<String, mpsc::Sender<(String, Notification)>> = HashMap::new();
        let mut leading = false;
        // Whether to ask who leads before the next wait: at the start, when the applied
        // index moved while following (this manager may lead now), after each entry while
        // following. A leader does not ask for entries that change no repository (each
        // would cost a round trip to the Raft loop, on every task status): it asks before
        // it acts on one.
        let mut ask = true;
        let missed = loop {
            if ask {
                let Some(now) =
                    leadership(&raft, own_raft_id, leading, &mut sent, &mut senders).await
                else {
                    return;
                };
                leading = now;
            }
            let woke = tokio::select! {
                entry = changes.recv() => Some(entry),
                changed = applied.changed(), if !leading => {
                    if changed.is_err() {
                        return;
                    }
                    None
                }
            };
            let Some(entry) = woke else {
                ask = true;
                continue;
            };
            let entry = match entry {
                Ok(entry) => entry,
                Err(missed) => break missed,
            };
            let repositories = entry
                .changed
                .iter()
                .any(|c| matches!(c, Changed::Repository { .. }));
            if repositories && leading {
                let Some(now) =
                    leadership(&raft, own_raft_id, leading, &mut sent, &mut senders).await
                else {
                    return;
                };
                leading = now;
            }
            ask = !leading;
            if !leading || !repositories {
                continue;
            }
            for change in &entry.changed {
                let Changed::Repository { name } = change else {
                    continue;
                };
                let record = {
                    let name = name.clone();
                    raft.local_read(move |store: &Store| {
                        store.data().repositories.get(&name).cloned()
                    })
                    .await
                };
                let Ok(record) = record else { return };
                let Some(record) = record else {
                    sent.remove(name);
                    senders.remove(name);
                    continue;
                };
                let previous = sent.entry(name.clone()).or_default();
                let due = due(previous, &record);
                *previous = outcomes(&record);
                let Some(url) = record.repository.notify.clone() else {
                    continue;
                };
                let sender = senders
                    .entry(name.clone())
                    .or_insert_with(|| spawn_sender(client.clone(), name.clone()));
                for notification in due {
                    if sender.try_send((url.clone(), notification)).is_err() {
                        tracing::warn!(repository = %name, "notifications: queue full, one dropped");
                    }
                }
            }
        };
        tracing::debug!(%missed, "notifications: subscribing again");
    }
}

/// Whether this manager leads now, as its replica says; `None` once the replica stopped.
/// Taking over, what the Deployments are now counts as sent (what happened before this
/// manager led is not sent again); losing it, the senders go (their tasks end once their
/// queues are drained).
async fn leadership(
    raft: &RaftHandle<Store>,
    own_raft_id: u64,
    leading: bool,
    sent: &mut HashMap<String, Sent>,
    senders: &mut HashMap<String, mpsc::Sender<(String, Notification)>>,
) -> Option<bool> {
    let now_leading = raft.status().await.ok()?.leader == own_raft_id;
    if now_leading && !leading {
        let records = raft
            .local_read(|store: &Store| store.data().repositories.clone())
            .await
            .ok()?;
        *sent = records
            .iter()
            .map(|(name, record)| (name.clone(), outcomes(record)))
            .collect();
    }
    if !now_leading {
        senders.clear();
    }
    Some(now_leading)
}

fn http_client() -> reqwest::Result<reqwest::Client> {
    // rustls (under reqwest) is built without a default crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("swarm/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn outcomes(record: &RepositoryRecord) -> Sent {
    record
        .deployments
        .iter()
        .map(|d| (d.id.clone(), d.outcome.as_str()))
        .collect()
}

/// The notifications `record` owes beyond `sent`: each Deployment that is new or whose
/// outcome changed, oldest first.
fn due(sent: &Sent, record: &RepositoryRecord) -> Vec<Notification> {
    record
        .deployments
        .iter()
        .filter(|d| sent.get(&d.id) != Some(&d.outcome.as_str()))
        .map(Notification::of)
        .collect()
}

/// One task per repository sends its notifications in order.
fn spawn_sender(
    client: reqwest::Client,
    repository: String,
) -> mpsc::Sender<(String, Notification)> {
    let (sender, mut queue) = mpsc::channel::<(String, Notification)>(QUEUE);
    tokio::spawn(async move {
        while let Some((url, notification)) = queue.recv().await {
            deliver(&client, &repository, &url, &notification).await;
        }
    });
    sender
}

async fn deliver(
    client: &reqwest::Client,
    repository: &str,
    url: &str,
    notification: &Notification,
) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let result = client.post(url).json(notification).send().await;
        let failure = match result {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => format!("the receiver answered {}", response.status()),
            Err(error) => error.to_string(),
        };
        if attempt == ATTEMPTS {
            tracing::warn!(%repository, deployment = %notification.deployment, %failure, "notification not delivered after {ATTEMPTS} attempts");
            return;
        }
        tracing::debug!(%repository, %failure, attempt, "notification failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}

#[cfg(test)]
mod tests {
    use swarm_api::gitops::{
        Commit, Deployment, DeploymentOutcome, Repository, RepositorySecrets, RepositoryStatus,
        Trigger,
    };
    use swarm_api::plan::{Basis, PLAN_FORMAT, Plan};

    use super::*;

    fn record(outcomes: &[DeploymentOutcome]) -> RepositoryRecord {
        RepositoryRecord {
            repository: Repository {
                name: "app".into(),
                url: "/srv/app.git".into(),
                branch: "main".into(),
                path: String::new(),
                interval_ms: 15_000,
                self_heal: false,
                prune: false,
                notify: Some("http://127.0.0.1:9/hook".into()),
                created_at: 1,
            },
            secrets: RepositorySecrets::default(),
            status: RepositoryStatus::default(),
            deployments: outcomes
                .iter()
                .enumerate()
                .map(|(n, outcome)| Deployment {
                    id: format!("app-{n}"),
                    repository: "app".into(),
                    commit: Commit {
                        id: format!("c{n}"),
                        author_name: "Ada".into(),
                        author_email: "ada@example.com".into(),
                        summary: "change".into(),
                        time: 1,
                    },
                    trigger: Trigger::Poll,
                    created_at: 1,
                    updated_at: 1,
                    plan: Plan {
                        format: PLAN_FORMAT,
                        basis: Basis::default(),
                        actions: Vec::new(),
                    },
                    outcome: outcome.clone(),
                })
                .collect(),
        }
    }

    #[test]
    fn each_new_state_of_a_deployment_is_due_once() {
        let applied = record(&[DeploymentOutcome::Applied]);
        let due_now = due(&Sent::new(), &applied);
        assert_eq!(due_now.len(), 1);
        assert_eq!(due_now[0].outcome, DeploymentOutcome::Applied);
        let sent = outcomes(&applied);
        assert!(due(&sent, &applied).is_empty());
        let converged = record(&[DeploymentOutcome::Converged, DeploymentOutcome::NoOp]);
        let due_now: Vec<_> = due(&sent, &converged)
            .into_iter()
            .map(|n| (n.deployment, n.outcome.as_str()))
            .collect();
        assert_eq!(
            due_now,
            [
                ("app-0".to_owned(), "converged"),
                ("app-1".to_owned(), "no-op")
            ]
        );
    }

    #[tokio::test]
    async fn a_notification_is_posted_and_retried_until_the_receiver_takes_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        // The receiver fails the first request, takes the second.
        let receiver = tokio::spawn(async move {
            let mut bodies = Vec::new();
            for status in ["500 Internal Server Error", "204 No Content"] {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                let body = loop {
                    let n = stream.read(&mut buffer).await.unwrap();
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap();
                        if body.len() >= length {
                            break body.to_owned();
                        }
                    }
                };
                stream
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await
                    .unwrap();
                bodies.push(body);
            }
            bodies
        });
        let client = http_client().unwrap();
        let notification = Notification::of(&record(&[DeploymentOutcome::Applied]).deployments[0]);
        tokio::time::timeout(
            Duration::from_secs(10),
            deliver(&client, "app", &url, &notification),
        )
        .await
        .expect("delivered within the bound");
        let bodies = tokio::time::timeout(Duration::from_secs(5), receiver)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bodies.len(), 2);
        let received: Notification = serde_json::from_str(&bodies[1]).unwrap();
        assert_eq!(received, notification);
        assert_eq!(received.outcome.as_str(), "applied");
    }
}
