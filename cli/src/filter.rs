//! `--filter KEY=VALUE` on the listings, as Docker reads it: values of one key are
//! alternatives (any may match) but labels, which must all match (moby's `MatchKVList`),
//! and different keys must all match. Names and ids match a
//! prefix (as swarmkit's name and id prefixes); `label` is `KEY` (present) or `KEY=VALUE`.

use std::collections::BTreeMap;

use anyhow::bail;
use swarm_api::grpc::control::{Node, Role};
use swarm_api::spec::{ServiceMode, ServiceSpec};
use swarm_api::state::Object;
use swarm_api::task::{DesiredState, Task};

/// The filters given, checked against the keys a listing takes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    fn parse(keys: &[&str], filters: &[String]) -> anyhow::Result<Filters> {
        let mut parsed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for filter in filters {
            let Some((key, value)) = filter.split_once('=') else {
                bail!(
                    "invalid --filter {filter:?}: expected KEY=VALUE (keys: {})",
                    keys.join(", ")
                );
            };
            if !keys.contains(&key) {
                bail!(
                    "invalid --filter {filter:?}: unknown key {key:?} (keys: {})",
                    keys.join(", ")
                );
            }
            parsed
                .entry(key.to_owned())
                .or_default()
                .push(value.to_owned());
        }
        Ok(Filters(parsed))
    }

    /// Each value of `key`, to check them.
    fn values(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0.get(key).into_iter().flatten().map(String::as_str)
    }

    /// Whether for every key given one of its values passes `matches(key, value)` (every
    /// one, for a label key).
    fn pass(&self, matches: impl Fn(&str, &str) -> bool) -> bool {
        self.0.iter().all(|(key, values)| {
            let mut values = values.iter();
            if matches!(key.as_str(), "label" | "node.label") {
                values.all(|value| matches(key, value))
            } else {
                values.any(|value| matches(key, value))
            }
        })
    }
}

fn label_matches<'a>(
    mut labels: impl Iterator<Item = (&'a String, &'a String)>,
    value: &str,
) -> bool {
    match value.split_once('=') {
        Some((label, wanted)) => labels.any(|(k, v)| k == label && v == wanted),
        None => labels.any(|(k, _)| k == value),
    }
}

/// The keys `service ls --filter` takes.
const SERVICE_KEYS: &[&str] = &["id", "label", "mode", "name"];

/// The label Docker puts on a stack's services; here a stack's services record their stack
/// in their origin instead, which `label=com.docker.stack.namespace[=STACK]` matches, so
/// that scripts written for Docker find them (a label of that key the service's own spec
/// sets is overridden by it, as Docker's deploy overwrites it).
const STACK_NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// `service ls --filter` and `stack services --filter`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServiceFilter(Filters);

impl ServiceFilter {
    pub fn parse(filters: &[String]) -> anyhow::Result<ServiceFilter> {
        let parsed = Filters::parse(SERVICE_KEYS, filters)?;
        if let Some(mode) = parsed.values("mode").find(|mode| {
            !matches!(
                *mode,
                "replicated" | "global" | "replicated-job" | "global-job"
            )
        }) {
            bail!(
                "invalid --filter \"mode={mode}\": mode is replicated-job, global-job, replicated or global"
            );
        }
        Ok(ServiceFilter(parsed))
    }

    /// Whether `service` passes.
    pub fn matches(&self, service: &Object<ServiceSpec>) -> bool {
        let spec = &service.spec;
        self.0.pass(|key, value| match key {
            "name" => spec.name.starts_with(value),
            "id" => service
                .id
                .as_deref()
                .is_some_and(|id| id.starts_with(value)),
            "label" => {
                let namespace = service
                    .origin
                    .stack
                    .as_ref()
                    .map(|stack| (STACK_NAMESPACE_LABEL.to_owned(), stack.clone()));
                let own = spec
                    .labels
                    .iter()
                    .filter(|(key, _)| namespace.is_none() || *key != STACK_NAMESPACE_LABEL);
                label_matches(own.chain(namespace.iter().map(|(k, v)| (k, v))), value)
            }
            "mode" => match spec.mode {
                ServiceMode::Replicated { .. } => value == "replicated",
                ServiceMode::Global => value == "global",
                ServiceMode::ReplicatedJob { .. } => value == "replicated-job",
                ServiceMode::GlobalJob => value == "global-job",
            },
            _ => unreachable!("keys are checked when parsed"),
        })
    }
}

/// The keys `node ls --filter` takes.
const NODE_KEYS: &[&str] = &["id", "label", "membership", "name", "node.label", "role"];

/// `node ls --filter`. Nodes have no engine labels here (Docker's `label`): `label` and
/// `node.label` both match the node's labels; every node is `membership=accepted`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NodeFilter(Filters);

impl NodeFilter {
    pub fn parse(filters: &[String]) -> anyhow::Result<NodeFilter> {
        let parsed = Filters::parse(NODE_KEYS, filters)?;
        if let Some(role) = parsed
            .values("role")
            .find(|role| !matches!(*role, "manager" | "worker"))
        {
            bail!("invalid --filter \"role={role}\": role is manager or worker");
        }
        if let Some(membership) = parsed
            .values("membership")
            .find(|m| !matches!(*m, "accepted" | "pending"))
        {
            bail!(
                "invalid --filter \"membership={membership}\": membership is accepted or pending"
            );
        }
        Ok(NodeFilter(parsed))
    }

    pub fn matches(&self, node: &Node) -> bool {
        self.0.pass(|key, value| match key {
            "id" => node.id.starts_with(value),
            "name" => node.hostname.starts_with(value),
            "label" | "node.label" => label_matches(node.labels.iter(), value),
            "role" => match node.role() {
                Role::Manager => value == "manager",
                Role::Worker | Role::Unspecified => value == "worker",
            },
            "membership" => value == "accepted",
            _ => unreachable!("keys are checked when parsed"),
        })
    }
}

/// The keys the task listings' `--filter` takes.
const TASK_KEYS: &[&str] = &["desired-state", "id", "name", "node"];

/// `service ps`, `node ps`, `stack ps --filter`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TaskFilter(Filters);

impl TaskFilter {
    pub fn parse(filters: &[String]) -> anyhow::Result<TaskFilter> {
        let parsed = Filters::parse(TASK_KEYS, filters)?;
        if let Some(state) = parsed
            .values("desired-state")
            .find(|s| !matches!(*s, "running" | "shutdown" | "accepted"))
        {
            bail!(
                "invalid --filter \"desired-state={state}\": desired-state is running, shutdown or accepted"
            );
        }
        Ok(TaskFilter(parsed))
    }

    /// Whether `task` passes; `hostname` is its node's.
    pub fn matches(&self, task: &Task, hostname: Option<&str>) -> bool {
        self.0.pass(|key, value| match key {
            "id" => task.id.starts_with(value),
            "name" => task.name().starts_with(value),
            "node" => {
                task.node_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with(value))
                    || hostname == Some(value)
            }
            // Docker's `accepted` is a task the managers want running.
            "desired-state" => match task.desired {
                DesiredState::Running => value == "running" || value == "accepted",
                DesiredState::Shutdown => value == "shutdown",
            },
            _ => unreachable!("keys are checked when parsed"),
        })
    }
}

/// `network ls`, `secret ls` and `config ls --filter`: id, name, label, and for networks
/// driver.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ObjectFilter(Filters);

/// The keys `network ls --filter` takes.
pub const NETWORK_KEYS: &[&str] = &["driver", "id", "label", "name"];
/// The keys `secret ls` and `config ls --filter` take.
pub const FILE_OBJECT_KEYS: &[&str] = &["id", "label", "name"];

impl ObjectFilter {
    pub fn parse(keys: &[&str], filters: &[String]) -> anyhow::Result<ObjectFilter> {
        Filters::parse(keys, filters).map(ObjectFilter)
    }

    pub fn matches(
        &self,
        id: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        driver: Option<&str>,
    ) -> bool {
        self.0.pass(|key, value| match key {
            "id" => id.starts_with(value),
            "name" => name.starts_with(value),
            "label" => label_matches(labels.iter(), value),
            "driver" => driver == Some(value),
            _ => unreachable!("keys are checked when parsed"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(id: &str, name: &str, global: bool, labels: &[(&str, &str)]) -> Object<ServiceSpec> {
        let mut spec = swarm_controller::deploy::flags::CreateFlags {
            name: name.to_owned(),
            mode: "replicated".to_owned(),
            image: "nginx".to_owned(),
            ..Default::default()
        }
        .spec()
        .unwrap();
        spec.mode = if global {
            ServiceMode::Global
        } else {
            ServiceMode::Replicated { replicas: 1 }
        };
        spec.labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Object {
            id: Some(id.to_owned()),
            origin: Default::default(),
            spec,
        }
    }

    fn names(filters: &[&str], services: &[Object<ServiceSpec>]) -> Vec<String> {
        let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
        let filter = ServiceFilter::parse(&filters).unwrap();
        services
            .iter()
            .filter(|s| filter.matches(s))
            .map(|s| s.spec.name.clone())
            .collect()
    }

    #[test]
    fn keys_combine_as_dockers() {
        let services = [
            service("abc123", "web_site", false, &[("team", "a")]),
            service(
                "abd456",
                "web_api",
                false,
                &[("team", "b"), ("tier", "back")],
            ),
            service("fff000", "agent", true, &[]),
        ];
        assert_eq!(names(&[], &services), ["web_site", "web_api", "agent"]);
        assert_eq!(names(&["name=web"], &services), ["web_site", "web_api"]);
        assert_eq!(
            names(&["name=web_a", "name=agent"], &services),
            ["web_api", "agent"]
        );
        assert_eq!(names(&["id=abd"], &services), ["web_api"]);
        assert_eq!(names(&["label=tier"], &services), ["web_api"]);
        assert_eq!(names(&["label=team=a"], &services), ["web_site"]);
        assert_eq!(names(&["mode=global"], &services), ["agent"]);
        assert_eq!(names(&["name=web", "label=team=b"], &services), ["web_api"]);
    }

    /// A stack's services answer Docker's stack label, from their origin.
    #[test]
    fn the_stack_label_matches_a_stacks_services() {
        let mut in_stack = service("abc123", "web_site", false, &[]);
        in_stack.origin.stack = Some("web".to_owned());
        let services = [in_stack, service("fff000", "agent", true, &[])];
        assert_eq!(
            names(&["label=com.docker.stack.namespace=web"], &services),
            ["web_site"]
        );
        assert_eq!(
            names(&["label=com.docker.stack.namespace"], &services),
            ["web_site"]
        );
        assert!(names(&["label=com.docker.stack.namespace=db"], &services).is_empty());
        // The stack's own label wins over one the spec sets; labels must all match.
        let mut relabelled = service(
            "abc124",
            "web_api",
            false,
            &[("com.docker.stack.namespace", "legacy"), ("tier", "back")],
        );
        relabelled.origin.stack = Some("web".to_owned());
        let services = [relabelled];
        assert!(names(&["label=com.docker.stack.namespace=legacy"], &services).is_empty());
        assert_eq!(
            names(
                &["label=com.docker.stack.namespace=web", "label=tier=back"],
                &services
            ),
            ["web_api"]
        );
        assert!(
            names(
                &["label=com.docker.stack.namespace=web", "label=tier=front"],
                &services
            )
            .is_empty()
        );
    }

    #[test]
    fn bad_filters_say_what_is_accepted() {
        let error = |filter: &str| {
            ServiceFilter::parse(&[filter.to_owned()])
                .unwrap_err()
                .to_string()
        };
        assert!(error("name").contains("expected KEY=VALUE (keys: id, label, mode, name)"));
        assert!(error("node=x").contains("unknown key \"node\""));
        assert!(error("mode=job").contains("replicated or global"));
    }

    fn strings(filters: &[&str]) -> Vec<String> {
        filters.iter().map(|f| (*f).to_owned()).collect()
    }

    #[test]
    fn nodes_filter_by_id_name_role_and_label() {
        let node = |id: &str, hostname: &str, role: Role, labels: &[(&str, &str)]| Node {
            id: id.into(),
            hostname: hostname.into(),
            role: role as i32,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Node::default()
        };
        let nodes = [
            node("m1abc", "manager-1", Role::Manager, &[("zone", "a")]),
            node(
                "w1def",
                "worker-1",
                Role::Worker,
                &[("zone", "b"), ("gpu", "")],
            ),
        ];
        let names = |filters: &[&str]| -> Vec<String> {
            let filter = NodeFilter::parse(&strings(filters)).unwrap();
            nodes
                .iter()
                .filter(|n| filter.matches(n))
                .map(|n| n.hostname.clone())
                .collect()
        };
        assert_eq!(names(&[]), ["manager-1", "worker-1"]);
        assert_eq!(names(&["role=worker"]), ["worker-1"]);
        assert_eq!(names(&["id=m1"]), ["manager-1"]);
        assert_eq!(names(&["name=worker"]), ["worker-1"]);
        // Labels must all match, as in Docker.
        assert!(names(&["node.label=zone=a", "node.label=gpu"]).is_empty());
        assert_eq!(
            names(&["node.label=zone=b", "node.label=gpu"]),
            ["worker-1"]
        );
        assert_eq!(
            names(&["label=zone=b", "role=manager"]),
            Vec::<String>::new()
        );
        assert_eq!(names(&["membership=accepted"]).len(), 2);
        let error = NodeFilter::parse(&strings(&["role=boss"])).unwrap_err();
        assert!(error.to_string().contains("role is manager or worker"));
    }

    #[test]
    fn tasks_filter_by_id_name_node_and_desired_state() {
        let spec = swarm_controller::deploy::flags::CreateFlags {
            name: "web".to_owned(),
            mode: "replicated".to_owned(),
            image: "nginx".to_owned(),
            ..Default::default()
        }
        .spec()
        .unwrap();
        let task = |id: &str, slot: u64, node: &str, desired: DesiredState| Task {
            id: id.into(),
            service_id: "s1".into(),
            service_name: "web".into(),
            slot: Some(slot),
            node_id: Some(node.into()),
            spec: spec.task.clone(),
            desired,
            status: swarm_api::task::TaskStatus::new(swarm_api::task::TaskState::Running, 1),
            created_at: 1,
            started_at: None,
            networks: Vec::new(),
        };
        let tasks = [
            task("t1aaa", 1, "n1", DesiredState::Running),
            task("t2bbb", 2, "n2", DesiredState::Running),
            task("t3ccc", 2, "n2", DesiredState::Shutdown),
        ];
        let hostname = |t: &Task| match t.node_id.as_deref() {
            Some("n1") => Some("host-1"),
            _ => Some("host-2"),
        };
        let ids = |filters: &[&str]| -> Vec<String> {
            let filter = TaskFilter::parse(&strings(filters)).unwrap();
            tasks
                .iter()
                .filter(|t| filter.matches(t, hostname(t)))
                .map(|t| t.id.clone())
                .collect()
        };
        assert_eq!(ids(&["desired-state=running"]), ["t1aaa", "t2bbb"]);
        assert_eq!(ids(&["desired-state=shutdown"]), ["t3ccc"]);
        assert_eq!(ids(&["name=web.2"]), ["t2bbb", "t3ccc"]);
        assert_eq!(ids(&["node=host-1", "node=n2"]).len(), 3);
        assert_eq!(ids(&["node=host-2", "desired-state=running"]), ["t2bbb"]);
        assert_eq!(ids(&["id=t3"]), ["t3ccc"]);
        let error = TaskFilter::parse(&strings(&["desired-state=gone"])).unwrap_err();
        assert!(error.to_string().contains("running, shutdown or accepted"));
        let error = TaskFilter::parse(&strings(&["colour=red"])).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("keys: desired-state, id, name, node")
        );
    }

    #[test]
    fn networks_and_file_objects_filter_by_id_name_label_and_driver() {
        let labels: BTreeMap<String, String> = [("team".to_owned(), "a".to_owned())].into();
        let none = BTreeMap::new();
        let filter =
            |keys: &[&str], filters: &[&str]| ObjectFilter::parse(keys, &strings(filters)).unwrap();
        let by_driver = filter(NETWORK_KEYS, &["driver=overlay"]);
        assert!(by_driver.matches("n1", "back", &none, Some("overlay")));
        assert!(!by_driver.matches("n1", "back", &none, Some("bridge")));
        let by_label = filter(FILE_OBJECT_KEYS, &["label=team=a", "name=db"]);
        assert!(by_label.matches("c1", "db_password", &labels, None));
        assert!(!by_label.matches("c1", "db_password", &none, None));
        assert!(!by_label.matches("c1", "web_key", &labels, None));
        assert!(ObjectFilter::parse(FILE_OBJECT_KEYS, &strings(&["driver=x"])).is_err());
    }
}
