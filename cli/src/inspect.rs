//! `swarm service inspect`: services as JSON, each with its `UpdateStatus` and its
//! `Endpoint.VirtualIPs` (Docker's names), or with `--pretty` a summary for people as Docker
//! prints it.

use std::fmt::Write;

use serde::Serialize;
use swarm_api::spec::{PublishMode, ServiceMode, ServiceSpec, UpdatePolicy};
use swarm_api::state::Object;
use swarm_api::task::{DesiredState, ServicesView, TaskState};
use swarm_api::units::Millis;

/// The services as a JSON array, each object with its update status and its virtual IPs
/// when it has them.
pub fn json(view: &ServicesView, services: &[&Object<ServiceSpec>]) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&objects(view, services)?)
}

/// Each service as `json` shows it.
pub fn objects(
    view: &ServicesView,
    services: &[&Object<ServiceSpec>],
) -> serde_json::Result<Vec<serde_json::Value>> {
    services
        .iter()
        .map(|service| {
            let mut value = serde_json::to_value(service)?;
            let id = service.id.as_ref();
            let status = id.and_then(|id| view.update_status.get(id));
            if let (Some(status), Some(map)) = (status, value.as_object_mut()) {
                map.insert("UpdateStatus".to_owned(), serde_json::to_value(status)?);
            }
            let vips = id.and_then(|id| view.virtual_ips.get(id));
            let assigned = id.is_some_and(|id| view.assigned_ports.contains_key(id));
            let mut endpoint = serde_json::Map::new();
            if let Some(vips) = vips {
                endpoint.insert("VirtualIPs".to_owned(), serde_json::to_value(vips)?);
            }
            if assigned {
                // Docker's `Endpoint.Ports`: what is published, the cluster's numbers in.
                let ports = view.ports_of(service);
                endpoint.insert("Ports".to_owned(), serde_json::to_value(ports)?);
            }
            if let (false, Some(map)) = (endpoint.is_empty(), value.as_object_mut()) {
                map.insert("Endpoint".to_owned(), endpoint.into());
            }
            Ok(value)
        })
        .collect()
}

/// Docker's `--pretty` summary of each service, at `now`.
pub fn pretty(view: &ServicesView, services: &[&Object<ServiceSpec>]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis);
    services
        .iter()
        .map(|service| summary(view, service, now))
        .collect::<Vec<_>>()
        .join("\n")
}

fn summary(view: &ServicesView, service: &Object<ServiceSpec>, now: Millis) -> String {
    let spec = &service.spec;
    let id = service.id.as_deref().unwrap_or_default();
    let mut out = String::new();
    let mut line = |key: &str, value: &dyn std::fmt::Display| {
        let line = format!("{:<20}{value}", format!("{key}:"));
        let _ = writeln!(out, "{}", line.trim_end());
    };
    line("ID", &id);
    line("Name", &spec.name);
    let running = view
        .tasks
        .iter()
        .filter(|t| t.service_id == id && t.desired == DesiredState::Running)
        .filter(|t| t.status.state == TaskState::Running)
        .count();
    match spec.mode {
        ServiceMode::Replicated { replicas } => {
            line("Service Mode", &"Replicated");
            line(" Replicas", &format!("{replicas} ({running} running)"));
        }
        ServiceMode::Global => {
            line("Service Mode", &"Global");
            line(" Running", &running);
        }
        // Docker's spelling of the job modes' settings.
        ServiceMode::ReplicatedJob {
            max_concurrent,
            total_completions,
        } => {
            line("Service Mode", &"ReplicatedJob");
            line(" Max Concurrent", &max_concurrent);
            line(" Total Completions", &total_completions);
        }
        ServiceMode::GlobalJob => line("Service Mode", &"GlobalJob"),
    }
    if let Some(status) = view.update_status.get(id) {
        line("UpdateStatus", &"");
        line(" State", &status.state.as_str());
        let ago = |at: Millis| format!("{} ago", crate::output::ago(now.saturating_sub(at)));
        line(" Started", &ago(status.started_at));
        if let Some(completed) = status.completed_at {
            line(" Completed", &ago(completed));
        }
        line(" Message", &status.message);
    }
    let constraints: Vec<String> = spec
        .task
        .placement
        .constraints
        .iter()
        .map(|c| c.to_string())
        .collect();
    if !constraints.is_empty() {
        line("Placement", &"");
        line(" Constraints", &constraints.join(", "));
    }
    policy(&mut line, "UpdateConfig", &spec.update);
    policy(&mut line, "RollbackConfig", &spec.rollback);
    line("ContainerSpec", &"");
    line(" Image", &spec.task.container.image);
    if let Some(entrypoint) = &spec.task.container.entrypoint {
        line(" Entrypoint", &entrypoint.join(" "));
    }
    if let Some(command) = &spec.task.container.command {
        line(" Args", &command.join(" "));
    }
    if !spec.endpoint.ports.is_empty() {
        line("Ports", &"");
        for port in &view.ports_of(service) {
            // A host-mode port says so itself.
            let text = match port.mode {
                PublishMode::Ingress => format!("{port} (ingress)"),
                PublishMode::Host => port.to_string(),
            };
            line(" Port", &text);
        }
    }
    out
}

fn policy(line: &mut dyn FnMut(&str, &dyn std::fmt::Display), title: &str, policy: &UpdatePolicy) {
    line(title, &"");
    line(" Parallelism", &policy.parallelism);
    line(" Delay", &policy.delay);
    line(" On failure", &word(&policy.failure_action));
    line(" Monitoring Period", &policy.monitor);
    line(" Max failure ratio", &policy.max_failure_ratio);
    line(" Order", &word(&policy.order));
}

/// An enum as the specs spell it (`stop-first`, `rollback`).
fn word(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(word)) => word,
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use swarm_api::rollout::{UpdateState, UpdateStatus};
    use swarm_api::task::VirtualIp;

    use super::*;

    fn view() -> ServicesView {
        let spec = swarm_controller::deploy::flags::load_service_document(
            "s_web",
            serde_json::json!({
                "image": "nginx:1",
                "ports": ["8080:80", "443"],
                "deploy": {
                    "replicas": 2,
                    "update_config": { "failure_action": "rollback", "monitor": "2s" },
                },
            }),
        )
        .unwrap();
        ServicesView {
            version: 1,
            services: vec![Object {
                id: Some("s1".into()),
                origin: Default::default(),
                spec,
            }],
            tasks: Vec::new(),
            nodes: Default::default(),
            update_status: [(
                "s1".to_owned(),
                UpdateStatus {
                    state: UpdateState::RollbackCompleted,
                    started_at: 1_000,
                    completed_at: Some(61_000),
                    message: "rollback completed".into(),
                },
            )]
            .into(),
            virtual_ips: [(
                "s1".to_owned(),
                vec![VirtualIp {
                    network_id: "n1".into(),
                    network: "back".into(),
                    addr: "10.0.0.2/20".into(),
                }],
            )]
            .into(),
            assigned_ports: [(
                "s1".to_owned(),
                vec![swarm_api::spec::AssignedPort {
                    target: 443,
                    protocol: swarm_api::spec::Protocol::Tcp,
                    published: 30000,
                }],
            )]
            .into(),
        }
    }

    #[test]
    fn json_carries_the_update_status_as_docker_names_it() {
        let view = view();
        let json: serde_json::Value =
            serde_json::from_str(&json(&view, &[&view.services[0]]).unwrap()).unwrap();
        assert_eq!(json[0]["id"], "s1");
        assert_eq!(json[0]["UpdateStatus"]["State"], "rollback_completed");
        assert_eq!(json[0]["UpdateStatus"]["CompletedAt"], 61_000);
        assert_eq!(
            json[0]["Endpoint"]["VirtualIPs"],
            serde_json::json!([{"NetworkID": "n1", "Network": "back", "Addr": "10.0.0.2/20"}])
        );
        // The port given no number shows the one the cluster published.
        let published: Vec<_> = json[0]["Endpoint"]["Ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["published"].clone(), p["target"].clone()))
            .collect();
        assert_eq!(
            published,
            [(30000.into(), 443.into()), (8080.into(), 80.into())]
        );
        // The spec stays as written.
        let written = &json[0]["spec"]["endpoint"]["ports"][0];
        assert_eq!(
            (written["target"].clone(), written.get("published")),
            (443.into(), None)
        );
    }

    #[test]
    fn pretty_summarises_a_service() {
        let view = view();
        let text = summary(&view, &view.services[0], 121_000);
        for expected in [
            "ID:                 s1\n",
            "Name:               s_web\n",
            "Service Mode:       Replicated\n",
            " Replicas:          2 (0 running)\n",
            " State:             rollback_completed\n",
            " Started:           2 minutes ago\n",
            " Completed:         About a minute ago\n",
            "UpdateConfig:",
            " On failure:        rollback\n",
            " Monitoring Period: 2s\n",
            "RollbackConfig:",
            " Image:             nginx:1\n",
            " Port:              *:8080->80/tcp (ingress)\n",
            " Port:              *:30000->443/tcp (ingress)\n",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
    }
}
