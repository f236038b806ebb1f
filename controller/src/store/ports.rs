//! Ports the cluster publishes for ingress ports a spec gives no number (`ports: ["80"]`,
//! `--publish 80`), as Docker does: each gets a free port of 30000–32767, kept across
//! changes of the service while it keeps that port (same target and protocol), freed when it
//! goes. Decided in the deterministic apply, so every replica decides the same.

use std::collections::{BTreeMap, BTreeSet};

use swarm_api::spec::{AssignedPort, Protocol, PublishMode, ServiceSpec};
use swarm_api::state::Object;
use swarm_api::store::Node;

/// A port by number (or target) and protocol.
type PortKey = (u16, Protocol);

/// The ports the nodes use themselves: each node's cluster port (TCP), data path port
/// (UDP, VXLAN) and metrics port (TCP).
pub(super) fn reserved(nodes: &BTreeMap<String, Node>) -> BTreeSet<PortKey> {
    let mut reserved = BTreeSet::new();
    for node in nodes.values() {
        if let Some(port) = node
            .address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
        {
            reserved.insert((port, Protocol::Tcp));
        }
        if node.description.data_path_port != 0 {
            reserved.insert((node.description.data_path_port, Protocol::Udp));
        }
        if let Some(port) = node.description.metrics_port {
            reserved.insert((port, Protocol::Tcp));
        }
    }
    reserved
}

/// The assignments once `services` replace the store's (`previous` are the store's now),
/// and why a service could not have one. `reserved` are ports that no service may take (the
/// nodes' own).
pub(super) fn assign(
    services: &[Object<ServiceSpec>],
    previous: &BTreeMap<String, Vec<AssignedPort>>,
    reserved: &BTreeSet<PortKey>,
) -> (BTreeMap<String, Vec<AssignedPort>>, Vec<String>) {
    let mut reasons = Vec::new();
    // Ports written in specs come first: an assignment never takes one.
    let mut taken: BTreeMap<PortKey, &str> = BTreeMap::new();
    for service in services {
        for port in &service.spec.endpoint.ports {
            if let (Some(number), PublishMode::Ingress) = (port.published, port.mode) {
                taken.insert((number, port.protocol), &service.spec.name);
            }
        }
    }
    let mut assigned: BTreeMap<String, Vec<AssignedPort>> = BTreeMap::new();
    // Kept assignments first (in name order), so that a new service never takes the port
    // of one that had it.
    let mut wanting: Vec<(&Object<ServiceSpec>, Vec<PortKey>)> = Vec::new();
    let mut by_name: Vec<&Object<ServiceSpec>> = services.iter().collect();
    by_name.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    for service in by_name {
        let Some(id) = &service.id else { continue };
        let mut kept_before: Vec<AssignedPort> = previous.get(id).cloned().unwrap_or_default();
        let mut kept = Vec::new();
        let mut missing = Vec::new();
        for port in service.spec.endpoint.unnumbered() {
            let at = kept_before
                .iter()
                .position(|a| a.target == port.target && a.protocol == port.protocol);
            match at.map(|at| kept_before.remove(at)) {
                Some(old) => match taken.get(&(old.published, old.protocol)) {
                    Some(other) => reasons.push(format!(
                        "port {}/{} is published by service {} (the cluster gave it to {:?}'s port {}): publish another port",
                        old.published, old.protocol, other, service.spec.name, port.target
                    )),
                    None => {
                        taken.insert((old.published, old.protocol), &service.spec.name);
                        kept.push(old);
                    }
                },
                None => missing.push((port.target, port.protocol)),
            }
        }
        if !kept.is_empty() {
            assigned.insert(id.clone(), kept);
        }
        if !missing.is_empty() {
            wanting.push((service, missing));
        }
    }
    for (service, missing) in wanting {
        let id = service
            .id
            .clone()
            .expect("services without ids were skipped");
        for (target, protocol) in missing {
            let free = (AssignedPort::FIRST..=AssignedPort::LAST).find(|number| {
                !taken.contains_key(&(*number, protocol))
                    && !reserved.contains(&(*number, protocol))
            });
            let Some(published) = free else {
                reasons.push(format!(
                    "service {:?}: no free port left in {}–{} for its port {target}/{protocol}: publish a port of your choice",
                    service.spec.name,
                    AssignedPort::FIRST,
                    AssignedPort::LAST
                ));
                continue;
            };
            taken.insert((published, protocol), &service.spec.name);
            assigned.entry(id.clone()).or_default().push(AssignedPort {
                target,
                protocol,
                published,
            });
        }
    }
    (assigned, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_api::spec::PortConfig;

    fn port(published: Option<u16>, target: u16) -> PortConfig {
        PortConfig {
            published,
            target,
            protocol: Protocol::Tcp,
            mode: PublishMode::Ingress,
            proxy_protocol: None,
        }
    }

    fn service(name: &str, ports: Vec<PortConfig>) -> Object<ServiceSpec> {
        let mut spec = crate::deploy::flags::load_service_document(
            name,
            serde_json::json!({ "image": "nginx" }),
        )
        .unwrap();
        spec.endpoint.ports = ports;
        Object {
            id: Some(format!("id-{name}")),
            origin: Default::default(),
            spec,
        }
    }

    fn numbers(assigned: &BTreeMap<String, Vec<AssignedPort>>, id: &str) -> Vec<u16> {
        assigned[&format!("id-{id}")]
            .iter()
            .map(|a| a.published)
            .collect()
    }

    #[test]
    fn unnumbered_ingress_ports_get_the_lowest_free_ports_and_keep_them() {
        let reserved = BTreeSet::from([(30001, Protocol::Tcp)]);
        let services = [
            service("web", vec![port(None, 80), port(None, 443)]),
            service("api", vec![port(Some(30000), 80)]),
            service("host", {
                let mut p = port(None, 8080);
                p.mode = PublishMode::Host;
                vec![p]
            }),
        ];
        let (first, reasons) = assign(&services, &BTreeMap::new(), &reserved);
        assert!(reasons.is_empty(), "{reasons:?}");
        // 30000 is written in api's spec, 30001 is reserved; host mode gets none.
        assert_eq!(numbers(&first, "web"), [30002, 30003]);
        assert_eq!(first.len(), 1);
        let web = &services[0].spec.endpoint;
        let shown: Vec<String> = web
            .published_ports(&first["id-web"])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["*:30002->80/tcp", "*:30003->443/tcp"]);

        // A new service before it in name order does not take web's ports; web dropping
        // 443 frees it.
        let services = [
            service("aaa", vec![port(None, 80)]),
            service("web", vec![port(None, 80)]),
        ];
        let (second, reasons) = assign(&services, &first, &reserved);
        assert!(reasons.is_empty(), "{reasons:?}");
        assert_eq!(numbers(&second, "web"), [30002]);
        assert_eq!(numbers(&second, "aaa"), [30000]);
        let (third, _) = assign(&services[..1], &second, &reserved);
        assert_eq!(third.len(), 1, "web's assignment goes with it");
    }

    #[test]
    fn a_port_written_over_an_assigned_one_is_refused_and_a_full_range_says_so() {
        let web = service("web", vec![port(None, 80)]);
        let (first, _) = assign(
            std::slice::from_ref(&web),
            &BTreeMap::new(),
            &BTreeSet::new(),
        );
        let clash = service("api", vec![port(Some(30000), 8080)]);
        let (_, reasons) = assign(&[web.clone(), clash], &first, &BTreeSet::new());
        assert_eq!(
            reasons,
            [
                "port 30000/tcp is published by service api (the cluster gave it to \"web\"'s port 80): publish another port"
            ]
        );
        let reserved: BTreeSet<(u16, Protocol)> = (AssignedPort::FIRST..=AssignedPort::LAST)
            .map(|n| (n, Protocol::Tcp))
            .collect();
        let (_, reasons) = assign(&[web], &BTreeMap::new(), &reserved);
        assert_eq!(
            reasons,
            [
                "service \"web\": no free port left in 30000–32767 for its port 80/tcp: publish a port of your choice"
            ]
        );
    }
}

#[cfg(test)]
mod store_tests {
    use super::super::Store;
    use super::super::fixtures::{apply_plan as apply, cluster, stack_actions};
    use swarm_api::plan::{Action, Kind, Op};
    use swarm_api::store::Outcome;

    /// The plan creating stack `web` from `services` (a stack file's `services:` body).
    fn plan(services: &str) -> Vec<Action> {
        stack_actions("web", &format!("services:\n{services}"))
    }

    /// The plan's service actions (without the stack's default network).
    fn services_only(mut actions: Vec<Action>) -> Vec<Action> {
        actions.retain(|a| a.kind == Kind::Service);
        actions
    }

    fn assigned(store: &Store, service: &str) -> Vec<u16> {
        let data = store.data();
        let id = data
            .objects
            .services
            .iter()
            .find(|s| s.spec.name == service)
            .and_then(|s| s.id.clone())
            .unwrap();
        data.assigned_ports
            .get(&id)
            .map(|ports| ports.iter().map(|p| p.published).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_plan_gives_unnumbered_ports_a_number_keeps_it_and_refuses_a_clash() {
        let mut store = Store::default();
        store.apply_command(1, cluster());
        let site = "  site:\n    image: nginx\n    ports: [\"80\", \"8080:81\"]\n";
        assert_eq!(
            apply(&mut store, 2, plan(site)),
            Outcome::Applied { version: 2 }
        );
        assert_eq!(assigned(&store, "web_site"), [30000]);
        // An update of the image keeps the number.
        let mut update = services_only(plan(&site.replace("nginx", "nginx:2")));
        update[0].op = Op::Update;
        assert_eq!(
            apply(&mut store, 3, update),
            Outcome::Applied { version: 3 }
        );
        assert_eq!(assigned(&store, "web_site"), [30000]);
        // Another service writing 30000 itself is refused, nothing changes.
        let clash = "  api:\n    image: nginx\n    ports: [\"30000:80\"]\n";
        let Outcome::Rejected(rejection) = apply(&mut store, 4, services_only(plan(clash))) else {
            panic!("a written port over an assigned one was accepted")
        };
        assert!(
            rejection
                .to_string()
                .contains("port 30000/tcp is published by service web_api"),
            "{rejection}"
        );
        assert_eq!(store.data().objects.services.len(), 1);
        // Removed, the service frees it.
        let mut remove = services_only(plan(site));
        remove[0].op = Op::Remove;
        remove[0].spec = None;
        assert_eq!(
            apply(&mut store, 5, remove),
            Outcome::Applied { version: 5 }
        );
        assert!(store.data().assigned_ports.is_empty());
    }
}
