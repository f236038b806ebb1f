//! Cluster events (`swarm events`): one record per change the managers' store applied, as
//! Docker's `docker events` shows swarm-scope events, and the filters a client narrows them
//! with (values of one key are alternatives, different keys must all match).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What kind of object an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Service,
    Node,
    Task,
    Network,
    Secret,
    Config,
    Deployment,
    Repository,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        EventType::Service,
        EventType::Node,
        EventType::Task,
        EventType::Network,
        EventType::Secret,
        EventType::Config,
        EventType::Deployment,
        EventType::Repository,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Service => "service",
            EventType::Node => "node",
            EventType::Task => "task",
            EventType::Network => "network",
            EventType::Secret => "secret",
            EventType::Config => "config",
            EventType::Deployment => "deployment",
            EventType::Repository => "repository",
        }
    }
}

/// One change: `action` is `create`, `update` or `remove`; for a task the state it reached
/// (`running`, `complete`, `failed`, …); for a node `ready`, `down`, `promote`, `demote`;
/// for a Deployment its outcome (`converged`, `failed`, …) after its `create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When the manager saw the change, in nanoseconds since the Unix epoch.
    pub time_nano: i64,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub action: String,
    pub id: String,
    pub name: String,
    /// What else identifies it: `service`, `node`, `image`, `commit`, `repository`…
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The store's version (Raft index) after the entry that made it.
    pub index: u64,
}

/// The keys `--filter` takes.
pub const FILTER_KEYS: &[&str] = &[
    "config",
    "event",
    "id",
    "name",
    "network",
    "node",
    "repository",
    "secret",
    "service",
    "type",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("invalid --filter {0:?}: expected KEY=VALUE (keys: {keys})", keys = FILTER_KEYS.join(", "))]
    NotKeyValue(String),
    #[error("invalid --filter {0:?}: unknown key {1:?} (keys: {keys})", keys = FILTER_KEYS.join(", "))]
    UnknownKey(String, String),
    #[error("invalid --filter {0:?}: type is one of {types}", types = type_names())]
    UnknownType(String),
}

fn type_names() -> String {
    EventType::ALL.map(EventType::as_str).join(", ")
}

/// Parsed filters: each key with its values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter(BTreeMap<String, Vec<String>>);

impl EventFilter {
    pub fn parse(filters: &[String]) -> Result<EventFilter, FilterError> {
        let mut parsed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for filter in filters {
            let Some((key, value)) = filter.split_once('=') else {
                return Err(FilterError::NotKeyValue(filter.clone()));
            };
            if !FILTER_KEYS.contains(&key) {
                return Err(FilterError::UnknownKey(filter.clone(), key.to_owned()));
            }
            if key == "type" && !EventType::ALL.iter().any(|t| t.as_str() == value) {
                return Err(FilterError::UnknownType(filter.clone()));
            }
            parsed
                .entry(key.to_owned())
                .or_default()
                .push(value.to_owned());
        }
        Ok(EventFilter(parsed))
    }

    /// Whether `event` passes: for every key given, one of its values matches. `type` and
    /// `event` (the action) match exactly, `id` and `name` the event's own; an object key
    /// (`service`, `node`, …) matches an event about that object (its name, or an id
    /// prefix) and an event naming it in its attributes (a task's `service` and `node`, a
    /// Deployment's `repository`).
    pub fn matches(&self, event: &Event) -> bool {
        self.0.iter().all(|(key, values)| {
            values.iter().any(|value| match key.as_str() {
                "type" => event.kind.as_str() == value,
                "event" => event.action == *value,
                "id" => event.id.starts_with(value.as_str()),
                "name" => event.name == *value,
                object => {
                    let own = event.kind.as_str() == object
                        && (event.name == *value || event.id.starts_with(value.as_str()));
                    let attribute = event.attributes.get(object) == Some(value)
                        || event
                            .attributes
                            .get(&format!("{object}.id"))
                            .is_some_and(|id| id.starts_with(value.as_str()));
                    own || attribute
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventType, action: &str, id: &str, name: &str, attrs: &[(&str, &str)]) -> Event {
        Event {
            time_nano: 1,
            kind,
            action: action.into(),
            id: id.into(),
            name: name.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            index: 1,
        }
    }

    fn passing(filters: &[&str], events: &[Event]) -> Vec<String> {
        let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
        let filter = EventFilter::parse(&filters).unwrap();
        events
            .iter()
            .filter(|e| filter.matches(e))
            .map(|e| format!("{} {} {}", e.kind.as_str(), e.action, e.name))
            .collect()
    }

    #[test]
    fn keys_combine_as_dockers() {
        let events = [
            event(EventType::Service, "create", "svc123", "web", &[]),
            event(
                EventType::Task,
                "running",
                "t1",
                "web.1",
                &[
                    ("service", "web"),
                    ("service.id", "svc123"),
                    ("node", "host-a"),
                    ("node.id", "nodea1"),
                ],
            ),
            event(EventType::Node, "down", "nodea1", "host-a", &[]),
            event(EventType::Service, "remove", "svc999", "db", &[]),
            event(
                EventType::Deployment,
                "converged",
                "app-7",
                "app-7",
                &[("repository", "app")],
            ),
        ];
        assert_eq!(passing(&[], &events).len(), 5);
        assert_eq!(
            passing(&["type=service"], &events),
            ["service create web", "service remove db"]
        );
        assert_eq!(
            passing(&["type=service", "type=node"], &events),
            [
                "service create web",
                "node down host-a",
                "service remove db"
            ]
        );
        assert_eq!(
            passing(&["service=web"], &events),
            ["service create web", "task running web.1"]
        );
        assert_eq!(
            passing(&["service=svc1"], &events),
            ["service create web", "task running web.1"],
            "an id prefix"
        );
        assert_eq!(
            passing(&["node=host-a"], &events),
            ["task running web.1", "node down host-a"]
        );
        assert_eq!(
            passing(&["node=nodea1", "type=task"], &events),
            ["task running web.1"]
        );
        assert_eq!(
            passing(&["event=remove", "event=down"], &events),
            ["node down host-a", "service remove db"]
        );
        assert_eq!(
            passing(&["repository=app"], &events),
            ["deployment converged app-7"]
        );
        assert!(passing(&["service=nothing"], &events).is_empty());
    }

    #[test]
    fn bad_filters_say_what_is_accepted() {
        let error = |filter: &str| {
            EventFilter::parse(&[filter.to_owned()])
                .unwrap_err()
                .to_string()
        };
        assert!(error("type").contains("expected KEY=VALUE (keys: config, event, id,"));
        assert!(error("colour=red").contains("unknown key \"colour\""));
        assert!(error("type=container").contains(
            "type is one of service, node, task, network, secret, config, deployment, repository"
        ));
    }
}
