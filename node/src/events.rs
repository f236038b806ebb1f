//! The cluster's events on a manager (`Control.Events`, what `swarm events` reads): one
//! task per manager follows its own replica's watch and derives the events
//! (`swarm_controller::store::events`), keeps the latest in a ring for `--since` and hands
//! each to the clients streaming. Every manager's store is a replica, so a follower's
//! events are the leader's, seen when the entry reaches it; each manager's ring begins when
//! it became a manager.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use swarm_api::events::{Event, EventFilter};
use swarm_api::grpc::control::events_message::Message;
use swarm_api::grpc::control::{EventsGap, EventsMessage, EventsRequest};
use swarm_controller::raft::driver::RaftHandle;
use swarm_controller::store::events::{EventHub, EventView, RepositorySeen};
use swarm_controller::store::{Changed, Store};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Messages the stream buffers for a slow client; beyond them, its task waits.
const BUFFERED: usize = 256;

pub type Stream = ReceiverStream<Result<EventsMessage, Status>>;

/// A manager's hub, recording from now on.
pub fn hub() -> EventHub {
    EventHub::new(now_nano())
}

/// When now is, in Unix nanoseconds: the time of the events seen now.
fn now_nano() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
}

/// Follows the replica's watch and publishes the events of each entry, until the replica
/// stops. A watch that fell behind (or a restored snapshot) starts again from a fresh view:
/// the events of the entries in between are not derived, and the hub's replays say so.
pub async fn record(raft: RaftHandle<Store>, hub: Arc<EventHub>) {
    loop {
        let Ok(subscription) = raft
            .local_read(|store: &Store| store.subscribe(EventView::of))
            .await
        else {
            return; // the replica stopped
        };
        let mut view = subscription.view;
        let mut changes = subscription.changes;
        let missed = loop {
            let entry = match changes.recv().await {
                Ok(entry) => entry,
                Err(missed) => break missed,
            };
            let names_repositories = entry
                .changed
                .iter()
                .any(|c| matches!(c, Changed::Repository { .. }));
            // A repository's record is not in the changes (it holds secrets): read as it
            // is now, at worst a later state than the entry's.
            let repositories = if names_repositories {
                let read = entry.clone();
                match raft
                    .local_read(move |store: &Store| RepositorySeen::named(store, &read))
                    .await
                {
                    Ok(repositories) => repositories,
                    Err(_) => return,
                }
            } else {
                BTreeMap::new()
            };
            hub.publish(view.derive(&entry, &repositories, now_nano()));
        };
        tracing::warn!(%missed, "events: following the store again; the events of the entries missed are lost");
        hub.lost_until(now_nano());
    }
}

/// A client's stream: the kept events it asked for (since `since_nano`, or all before
/// `until_nano` when only that is given), then each new one passing its filters, until
/// `until_nano` or until it goes.
pub fn follow(hub: &EventHub, request: EventsRequest) -> Result<Stream, Status> {
    let filter = EventFilter::parse(&request.filters)
        .map_err(|error| Status::invalid_argument(error.to_string()))?;
    let until = request.until_nano;
    // As Docker's: `--until` alone replays what is kept before it (all of it, no gap).
    let since = request.since_nano.or(until.map(|_| i64::MIN));
    let asked_since = request.since_nano.is_some();
    let (replay, mut live) = hub.subscribe(since, until);
    let (sender, receiver) = mpsc::channel(BUFFERED);
    let passes = move |event: &Event| filter.matches(event);
    tokio::spawn(async move {
        let send = |message: Message| {
            let sender = sender.clone();
            async move {
                sender
                    .send(Ok(EventsMessage {
                        message: Some(message),
                    }))
                    .await
                    .is_ok()
            }
        };
        let event = |event: &Event| {
            Message::Event(serde_json::to_string(event).expect("an event serialises"))
        };
        if let Some(replay) = replay {
            if let Some(kept_since_nano) = replay.complete_since_nano.filter(|_| asked_since) {
                let gap = EventsGap {
                    kept_since_nano: Some(kept_since_nano),
                    lost: 0,
                };
                if !send(Message::Gap(gap)).await {
                    return;
                }
            }
            for kept in replay.events.iter().filter(|e| passes(e)) {
                if !send(event(kept)).await {
                    return;
                }
            }
        }
        let until_passed = async {
            match until {
                Some(until) => {
                    let wait = u64::try_from(until.saturating_sub(now_nano())).unwrap_or(0);
                    tokio::time::sleep(Duration::from_nanos(wait)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(until_passed);
        loop {
            let next = tokio::select! {
                next = live.recv() => next,
                () = &mut until_passed => return,
                () = sender.closed() => return,
            };
            let sent = match next {
                Ok(new) if until.is_some_and(|until| new.time_nano > until) => return,
                Ok(new) if passes(&new) => send(event(&new)).await,
                Ok(_) => true,
                Err(broadcast::error::RecvError::Lagged(lost)) => {
                    let gap = EventsGap {
                        kept_since_nano: None,
                        lost,
                    };
                    send(Message::Gap(gap)).await
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if !sent {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(receiver))
}

#[cfg(test)]
mod tests {
    use swarm_api::events::EventType;
    use tokio_stream::StreamExt;

    use super::*;

    fn event(kind: EventType, name: &str, time_nano: i64) -> Event {
        Event {
            time_nano,
            kind,
            action: "create".into(),
            id: format!("{name}-id"),
            name: name.into(),
            attributes: BTreeMap::new(),
            index: 1,
        }
    }

    async fn next(stream: &mut Stream) -> Option<Message> {
        let message = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a message or the end within 5 s")?;
        message.unwrap().message
    }

    fn name(message: Option<Message>) -> String {
        match message {
            Some(Message::Event(json)) => serde_json::from_str::<Event>(&json).unwrap().name,
            other => panic!("an event: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stream_replays_what_is_kept_then_follows_filtered_until_its_end() {
        let hub = hub();
        let start = now_nano();
        hub.publish(vec![
            event(EventType::Service, "web", start + 1),
            event(EventType::Node, "host-a", start + 2),
        ]);
        let request = |since_nano, until_nano| EventsRequest {
            filters: vec!["type=service".into()],
            since_nano,
            until_nano,
        };
        let mut stream = follow(&hub, request(Some(start), None)).unwrap();
        assert_eq!(name(next(&mut stream).await), "web");
        hub.publish(vec![
            event(EventType::Node, "host-b", start + 3),
            event(EventType::Service, "db", start + 4),
        ]);
        assert_eq!(
            name(next(&mut stream).await),
            "db",
            "node events filtered out"
        );

        // From before the manager kept events: told so first.
        let mut stream =
            follow(&hub, request(Some(start - 1_000_000_000), Some(start + 2))).unwrap();
        let Some(Message::Gap(gap)) = next(&mut stream).await else {
            panic!("a gap first");
        };
        assert!(gap.kept_since_nano.is_some_and(|kept| kept <= start));
        assert_eq!(name(next(&mut stream).await), "web");
        assert!(next(&mut stream).await.is_none(), "ends at its until");

        // `until` alone: what is kept before it, and the end.
        let mut stream = follow(&hub, request(None, Some(start + 2))).unwrap();
        assert_eq!(name(next(&mut stream).await), "web");
        assert!(next(&mut stream).await.is_none());

        let bad = follow(
            &hub,
            EventsRequest {
                filters: vec!["colour=red".into()],
                ..Default::default()
            },
        );
        assert!(
            bad.unwrap_err()
                .message()
                .contains("unknown key \"colour\"")
        );
    }
}
