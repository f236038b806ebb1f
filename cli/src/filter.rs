//! `--filter KEY=VALUE` on `service ls`, as Docker reads it: values of one key are
//! alternatives (any may match), different keys must all match.

use std::collections::BTreeMap;

use anyhow::bail;
use swarm_api::spec::{ServiceMode, ServiceSpec};
use swarm_api::state::Object;

/// The keys `service ls --filter` takes.
const SERVICE_KEYS: &[&str] = &["id", "label", "mode", "name"];

/// Parsed filters: each key with its values.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServiceFilter(BTreeMap<String, Vec<String>>);

impl ServiceFilter {
    pub fn parse(filters: &[String]) -> anyhow::Result<ServiceFilter> {
        let mut parsed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for filter in filters {
            let Some((key, value)) = filter.split_once('=') else {
                bail!(
                    "invalid --filter {filter:?}: expected KEY=VALUE (keys: {})",
                    SERVICE_KEYS.join(", ")
                );
            };
            if !SERVICE_KEYS.contains(&key) {
                bail!(
                    "invalid --filter {filter:?}: unknown key {key:?} (keys: {})",
                    SERVICE_KEYS.join(", ")
                );
            }
            let modes = ["replicated", "global", "replicated-job", "global-job"];
            if key == "mode" && !modes.contains(&value) {
                bail!(
                    "invalid --filter {filter:?}: mode is replicated-job, global-job, replicated or global"
                );
            }
            parsed
                .entry(key.to_owned())
                .or_default()
                .push(value.to_owned());
        }
        Ok(ServiceFilter(parsed))
    }

    /// Whether `service` passes: for every key given, one of its values matches. `name` and
    /// `id` match a prefix; `label` is `KEY` (present) or `KEY=VALUE`.
    pub fn matches(&self, service: &Object<ServiceSpec>) -> bool {
        let spec = &service.spec;
        self.0.iter().all(|(key, values)| {
            values.iter().any(|value| match key.as_str() {
                "name" => spec.name.starts_with(value.as_str()),
                "id" => service
                    .id
                    .as_deref()
                    .is_some_and(|id| id.starts_with(value.as_str())),
                "label" => match value.split_once('=') {
                    Some((label, wanted)) => spec.labels.get(label).is_some_and(|v| v == wanted),
                    None => spec.labels.contains_key(value),
                },
                "mode" => match spec.mode {
                    ServiceMode::Replicated { .. } => value == "replicated",
                    ServiceMode::Global => value == "global",
                    ServiceMode::ReplicatedJob { .. } => value == "replicated-job",
                    ServiceMode::GlobalJob => value == "global-job",
                },
                _ => unreachable!("keys are checked when parsed"),
            })
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
        let mut job = service("fff999", "batch", false, &[]);
        job.spec.mode = ServiceMode::GlobalJob;
        assert_eq!(names(&["mode=global-job"], &[job]), ["batch"]);
        assert_eq!(names(&["name=web", "label=team=b"], &services), ["web_api"]);
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
}
