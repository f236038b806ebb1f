//! The store's guard: what a plan leaves behind must hold the invariants the stack
//! converter establishes, whoever built the plan (the CLI, GitOps, or any client of the
//! control API). Pure: the same objects give the same reasons on every replica.

use std::collections::{BTreeMap, BTreeSet};

use swarm_api::plan::{Kind, Op};
use swarm_api::spec::{
    DependencyCondition, EndpointMode, MountKind, Protocol, PublishMode, ServiceMode, ServiceSpec,
    UpdatePolicy,
};
use swarm_api::state::ClusterState;

use swarm_api::image::ImageRef;

use crate::stack::convert::{MIN_MEMORY_LIMIT, depends, runtime, valid_cidr, valid_name};

/// Why the objects after a plan that touched `touched` (kind, name, op) are not allowed;
/// empty when they are. Every service the plan creates or changes is checked whole; the
/// references of every remaining service are checked when the plan removes what they
/// could reference; published ingress ports are unique across all services.
pub(super) fn plan_result(objects: &ClusterState, touched: &[(Kind, String, Op)]) -> Vec<String> {
    let mut reasons = Vec::new();
    let changed = |kind: Kind, name: &str| {
        touched
            .iter()
            .any(|(k, n, op)| *k == kind && n == name && *op != Op::Remove)
    };
    let removes_referenced = touched
        .iter()
        .any(|(kind, _, op)| *op == Op::Remove && *kind != Kind::Service);
    let names = |list: &mut dyn Iterator<Item = &str>| -> BTreeSet<String> {
        list.map(str::to_owned).collect()
    };
    let networks = names(&mut objects.networks.iter().map(|o| o.spec.name.as_str()));
    let configs = names(&mut objects.configs.iter().map(|o| o.spec.name.as_str()));
    let secrets = names(&mut objects.secrets.iter().map(|o| o.spec.name.as_str()));
    for (_, name, _) in touched
        .iter()
        .filter(|(kind, _, op)| *kind == Kind::Network && *op == Op::Remove)
    {
        let users = super::networks::users(objects, name);
        if !users.is_empty() {
            reasons.push(format!(
                "network {name} is in use by service {}: remove them, or detach them with `swarm service update --network-rm {name}`",
                users.join(", ")
            ));
        }
    }
    for (kind, name, _) in touched
        .iter()
        .filter(|(kind, _, op)| *op == Op::Remove && matches!(kind, Kind::Config | Kind::Secret))
    {
        let users = super::files::users(objects, *kind, name);
        if !users.is_empty() {
            let what = kind.as_str();
            reasons.push(format!(
                "{what} {name} is in use by service {}: remove them, or detach them with `swarm service update --{what}-rm {name}`",
                users.join(", ")
            ));
        }
    }
    for network in &objects.networks {
        if changed(Kind::Network, &network.spec.name) {
            reasons.extend(super::networks::spec_reasons(&network.spec));
            let name = &network.spec.name;
            for subnet in network.spec.subnets.iter().filter(|s| !valid_cidr(s)) {
                reasons.push(format!("network {name}: invalid subnet {subnet:?}"));
            }
        }
    }
    for service in &objects.services {
        let spec = &service.spec;
        if changed(Kind::Service, &spec.name) {
            reasons.extend(service_spec(spec));
        }
        if changed(Kind::Service, &spec.name) || removes_referenced {
            reasons.extend(references(spec, &networks, &configs, &secrets));
        }
    }
    reasons.extend(published_ports(objects, &|name| {
        changed(Kind::Service, name)
    }));
    let removes_service = touched
        .iter()
        .any(|(kind, _, op)| *kind == Kind::Service && *op == Op::Remove);
    reasons.extend(dependencies(objects, &|name| {
        removes_service || changed(Kind::Service, name)
    }));
    reasons
}

/// The dependencies of the services `judged` says: services that exist, in no cycle.
fn dependencies(objects: &ClusterState, judged: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut reasons = Vec::new();
    let modes: BTreeMap<&str, ServiceMode> = objects
        .services
        .iter()
        .map(|s| (s.spec.name.as_str(), s.spec.mode))
        .collect();
    for spec in objects.services.iter().map(|s| &s.spec) {
        if !judged(&spec.name) {
            continue;
        }
        for dependency in &spec.depends_on {
            match modes.get(dependency.service.as_str()) {
                None => reasons.push(format!(
                    "service {:?}: depends on service {:?}, which does not exist",
                    spec.name, dependency.service
                )),
                // Only a job's tasks complete.
                Some(mode)
                    if dependency.condition
                        == DependencyCondition::ServiceCompletedSuccessfully
                        && !mode.is_job() =>
                {
                    reasons.push(format!(
                        "service {:?}: waits for service {:?} to complete, which is not a job: its tasks never complete",
                        spec.name, dependency.service
                    ))
                }
                Some(_) => {}
            }
        }
    }
    let edges: BTreeMap<String, Vec<String>> = objects
        .services
        .iter()
        .map(|s| {
            let targets = s.spec.depends_on.iter().map(|d| d.service.clone());
            (s.spec.name.clone(), targets.collect())
        })
        .collect();
    for cycle in depends::cycles(&edges) {
        if cycle.iter().any(|name| judged(name)) {
            reasons.push(format!("depends_on cycle: {}", cycle.join(" → ")));
        }
    }
    reasons
}

/// What a service spec must hold by itself: the converter's rules, on the spec.
pub fn service_spec(spec: &ServiceSpec) -> Vec<String> {
    let name = &spec.name;
    let mut reasons = Vec::new();
    let mut fail = |reason: String| reasons.push(format!("service {name:?}: {reason}"));
    if !valid_name(name) {
        fail(
            "invalid name: use letters, digits, '_', '.' and '-', starting with a letter or digit"
                .to_owned(),
        );
    } else if name.len() > 63 {
        fail("the name is longer than 63 characters".to_owned());
    }
    let container = &spec.task.container;
    if let Err(reason) = ImageRef::parse(&container.image) {
        fail(format!(
            "invalid image reference {:?}: {reason}",
            container.image
        ));
    }
    for reason in runtime::refusals(&container.runtime) {
        fail(reason);
    }
    let files = container.configs.iter().chain(&container.secrets);
    for problem in files.filter_map(|r| r.target_problem()) {
        fail(problem);
    }
    for clash in swarm_api::spec::mount_target_clashes(container) {
        fail(clash);
    }
    if matches!(spec.mode, ServiceMode::Global | ServiceMode::GlobalJob)
        && spec.task.placement.max_replicas_per_node > 0
    {
        fail("max_replicas_per_node cannot be used with a global service".to_owned());
    }
    if let ServiceMode::ReplicatedJob {
        max_concurrent: 0,
        total_completions,
    } = spec.mode
        && total_completions > 0
    {
        fail(format!(
            "a replicated job of {total_completions} completions with max_concurrent 0 never runs"
        ));
    }
    if spec.is_job()
        && (spec.update != UpdatePolicy::default() || spec.rollback != UpdatePolicy::default())
    {
        fail("update and rollback configuration is not supported for jobs".to_owned());
    }
    if spec.task.job_iteration != 0 {
        fail("job_iteration is the orchestrator's to set, on tasks".to_owned());
    }
    for mount in &container.mounts {
        if !mount.target.starts_with('/') {
            fail(format!(
                "the mount target {:?} is not an absolute path",
                mount.target
            ));
        }
        if mount.kind == MountKind::Bind {
            match &mount.source {
                None => fail(format!(
                    "the bind mount on {} needs a source path",
                    mount.target
                )),
                Some(source) if !source.starts_with('/') => fail(format!(
                    "the bind source {source:?} is not an absolute path"
                )),
                Some(_) => {}
            }
        }
        let misplaced = [
            ("no_copy", mount.no_copy, MountKind::Volume),
            ("propagation", mount.propagation.is_some(), MountKind::Bind),
            ("tmpfs", mount.tmpfs.is_some(), MountKind::Tmpfs),
        ];
        for (option, given, kind) in misplaced {
            if given && mount.kind != kind {
                fail(format!(
                    "the {} mount on {} has the {option} option of {} mounts",
                    mount.kind.as_str(),
                    mount.target,
                    kind.as_str()
                ));
            }
        }
        if mount.kind == MountKind::Tmpfs && mount.source.is_some() {
            fail(format!(
                "the tmpfs mount on {} takes no source",
                mount.target
            ));
        }
        if let Some(mode) = mount.tmpfs.and_then(|t| t.mode)
            && mode > 0o7777
        {
            fail(format!(
                "tmpfs mode {mode:o} of {} is not a file mode",
                mount.target
            ));
        }
        if mount.kind == MountKind::Volume
            && let Some(source) = &mount.source
            && (source.contains('/') || source == "." || source == "..")
        {
            fail(format!(
                "the volume name {source:?} of the mount on {} is not a valid volume name",
                mount.target
            ));
        }
    }
    let targets = container
        .mounts
        .iter()
        .map(|m| &m.target)
        .chain(container.configs.iter().map(|c| &c.target))
        .chain(container.secrets.iter().map(|s| &s.target));
    let mut seen = BTreeSet::new();
    for target in targets {
        if !seen.insert(target) {
            fail(format!("two mounts target {target}"));
        }
    }
    for file in container.configs.iter().chain(&container.secrets) {
        if file.mode > 0o777 {
            fail(format!(
                "file mode {:o} of {} is more than 0777",
                file.mode, file.target
            ));
        }
    }
    let resources = &spec.task.resources;
    if resources.limits.cpus.is_some_and(|c| c.0 == 0) {
        fail("a CPU limit of 0 would stop the task from running".to_owned());
    }
    if let Some(memory) = resources.limits.memory.filter(|m| m.0 < MIN_MEMORY_LIMIT) {
        fail(format!(
            "a memory limit of {memory} is below the minimum of 6MiB"
        ));
    }
    let over = |limit: Option<u64>, reservation: Option<u64>| matches!((limit, reservation), (Some(l), Some(r)) if r > l);
    if over(
        resources.limits.cpus.map(|c| c.0),
        resources.reservations.cpus.map(|c| c.0),
    ) {
        fail("the CPU reservation is more than the CPU limit".to_owned());
    }
    if over(
        resources.limits.memory.map(|m| m.0),
        resources.reservations.memory.map(|m| m.0),
    ) {
        fail("the memory reservation is more than the memory limit".to_owned());
    }
    let mut published = BTreeSet::new();
    for port in &spec.endpoint.ports {
        if port.target == 0 {
            fail("a port's target cannot be 0".to_owned());
        }
        if port.published == Some(0) {
            fail("a published port cannot be 0".to_owned());
        }
        if let Some(problem) = port.proxy_protocol_problem() {
            fail(format!("port {port}: {problem}"));
        }
        if port.mode == PublishMode::Ingress && spec.endpoint.mode == EndpointMode::Dnsrr {
            fail(format!(
                "port {port}: a port published in ingress mode cannot be used with endpoint mode dnsrr"
            ));
        }
        if let Some(number) = port.published
            && !published.insert((number, port.protocol, port.mode))
        {
            fail(format!(
                "port {number}/{} is published twice",
                port.protocol
            ));
        }
    }
    reasons
}

/// The networks, configs and secrets a service names must exist.
fn references(
    spec: &ServiceSpec,
    networks: &BTreeSet<String>,
    configs: &BTreeSet<String>,
    secrets: &BTreeSet<String>,
) -> Vec<String> {
    let name = &spec.name;
    let mut reasons = Vec::new();
    let missing = |what: &str, target: &str, known: &BTreeSet<String>| {
        (!known.contains(target))
            .then(|| format!("service {name:?}: {what} {target} does not exist in the cluster"))
    };
    for attachment in &spec.task.networks {
        reasons.extend(missing("network", &attachment.target, networks));
    }
    for config in &spec.task.container.configs {
        reasons.extend(missing("config", &config.source, configs));
    }
    for secret in &spec.task.container.secrets {
        reasons.extend(missing("secret", &secret.source, secrets));
    }
    reasons
}

/// Every node listens on an ingress port once: two services cannot publish it. Reported for
/// the pairs where the plan changed one of the two services.
fn published_ports(objects: &ClusterState, changed: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut owners: BTreeMap<(u16, Protocol), Vec<&str>> = BTreeMap::new();
    for service in &objects.services {
        let spec = &service.spec;
        let ports: BTreeSet<(u16, Protocol)> = spec
            .endpoint
            .ports
            .iter()
            .filter(|p| p.mode == PublishMode::Ingress)
            .filter_map(|p| Some((p.published?, p.protocol)))
            .collect();
        for port in ports {
            owners.entry(port).or_default().push(&spec.name);
        }
    }
    let mut reasons = Vec::new();
    for ((number, protocol), services) in owners {
        if services.len() > 1 && services.iter().any(|s| changed(s)) {
            reasons.push(format!(
                "port {number}/{protocol} is published by more than one service ({}): every node listens on an ingress port once; publish another port",
                services.join(", ")
            ));
        }
    }
    reasons
}

/// A published port the nodes use themselves: every node answers an ingress port (and a
/// host-mode one where the service's task runs), which would take their cluster port (TCP),
/// metrics port (TCP, `--metrics-addr`) or data path port (UDP, VXLAN) from them. Checked
/// for the services the plan changed.
pub(super) fn node_ports(
    objects: &ClusterState,
    nodes: &BTreeMap<String, swarm_api::store::Node>,
    changed: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let mut taken: BTreeMap<(u16, Protocol), (&str, &str)> = BTreeMap::new();
    for node in nodes.values() {
        let cluster_port = node
            .address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok());
        if let Some(port) = cluster_port {
            taken.insert((port, Protocol::Tcp), (&node.hostname, "cluster port"));
        }
        if let Some(port) = node.description.metrics_port {
            taken.insert((port, Protocol::Tcp), (&node.hostname, "metrics port"));
        }
        let data_path = node.description.data_path_port;
        if data_path != 0 {
            taken.insert(
                (data_path, Protocol::Udp),
                (&node.hostname, "data path port"),
            );
        }
    }
    let mut reasons = Vec::new();
    for spec in objects.services.iter().map(|s| &s.spec) {
        if !changed(&spec.name) {
            continue;
        }
        for port in &spec.endpoint.ports {
            let Some(number) = port.published else {
                continue;
            };
            if let Some((node, what)) = taken.get(&(number, port.protocol)) {
                reasons.push(format!(
                    "service {:?}: port {number}/{} is the {what} of node {node}: the nodes answer published ports themselves; publish another port",
                    spec.name, port.protocol
                ));
            }
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_api::spec::{FileObjectSpec, NetworkSpec, PortConfig};
    use swarm_api::state::Object;

    /// A spec as the converter makes it from `image: nginx:1`, without networks.
    fn service(name: &str) -> ServiceSpec {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, "services:\n  x:\n    image: nginx:1\n").unwrap();
        let stack = crate::stack::load(&crate::source::WorkTree, &path, "s.yaml", &|_| None)
            .stack
            .unwrap();
        let mut spec = stack.services[0].clone();
        spec.name = name.to_owned();
        spec.task.networks.clear();
        spec
    }

    fn object<S>(spec: S) -> Object<S> {
        Object {
            id: Some("id".into()),
            origin: Default::default(),
            spec,
        }
    }

    fn state(services: Vec<ServiceSpec>) -> ClusterState {
        ClusterState {
            services: services.into_iter().map(object).collect(),
            ..ClusterState::empty()
        }
    }

    fn created(name: &str) -> (Kind, String, Op) {
        (Kind::Service, name.to_owned(), Op::Create)
    }

    fn ingress(published: u16) -> PortConfig {
        PortConfig {
            published: Some(published),
            target: 80,
            protocol: Protocol::Tcp,
            mode: PublishMode::Ingress,
            proxy_protocol: None,
        }
    }

    #[test]
    fn a_well_formed_service_passes() {
        let objects = state(vec![service("web")]);
        assert_eq!(
            plan_result(&objects, &[created("web")]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_malformed_spec_is_refused_with_every_reason() {
        let mut spec = service("bad name");
        spec.task.container.image = "Nginx:latest".into();
        spec.task.resources.limits.memory = Some(swarm_api::units::ByteSize(1024));
        spec.task.container.mounts.push(swarm_api::spec::Mount {
            kind: MountKind::Bind,
            source: Some("relative/dir".into()),
            target: "data".into(),
            read_only: false,
            volume: None,
            no_copy: false,
            propagation: None,
            tmpfs: None,
        });
        spec.endpoint.ports = vec![ingress(0)];
        let secret = |target: &str| swarm_api::spec::FileReference {
            source: "token".into(),
            target: target.into(),
            uid: "0".into(),
            gid: "0".into(),
            mode: 0o444,
            digest: None,
        };
        spec.task.container.secrets = vec![secret("/run/secrets/../../etc/shadow"), secret("data")];
        let reasons = plan_result(&state(vec![spec]), &[created("bad name")]);
        let all = reasons.join("\n");
        for expected in [
            "invalid name",
            "must be lower-case",
            "below the minimum of 6MiB",
            "is not an absolute path",
            "bind source \"relative/dir\"",
            "published port cannot be 0",
            "has a '..' component",
            "target data is also a mount's target",
        ] {
            assert!(all.contains(expected), "{expected:?} missing from {all}");
        }
    }

    #[test]
    fn a_job_is_checked_as_the_loader_and_flags_check_it() {
        let mut job = service("job");
        job.mode = ServiceMode::ReplicatedJob {
            max_concurrent: 0,
            total_completions: 3,
        };
        job.update.parallelism = 2;
        job.task.job_iteration = 7;
        let mut global = service("global");
        global.mode = ServiceMode::GlobalJob;
        global.task.placement.max_replicas_per_node = 1;
        assert_eq!(
            service_spec(&job),
            [
                "service \"job\": a replicated job of 3 completions with max_concurrent 0 never runs",
                "service \"job\": update and rollback configuration is not supported for jobs",
                "service \"job\": job_iteration is the orchestrator's to set, on tasks",
            ]
        );
        assert_eq!(
            service_spec(&global),
            ["service \"global\": max_replicas_per_node cannot be used with a global service"]
        );
        let mut fine = service("fine");
        fine.mode = ServiceMode::ReplicatedJob {
            max_concurrent: 2,
            total_completions: 5,
        };
        assert!(service_spec(&fine).is_empty());
    }

    #[test]
    fn runtime_options_are_checked_as_the_loader_checks_them() {
        let mut spec = service("web");
        let runtime = &mut spec.task.container.runtime;
        runtime.capability_add = vec!["CAP_NOPE".into(), "net_admin".into()];
        runtime.sysctls.insert("kernel.hostname".into(), "x".into());
        runtime.ulimits.insert(
            "nofile".into(),
            swarm_api::spec::Ulimit { soft: 10, hard: 5 },
        );
        runtime.log_driver = Some(swarm_api::spec::LogDriver {
            name: "json-file".into(),
            options: [("max-file".to_owned(), "0".to_owned())].into(),
        });
        runtime.extra_hosts.push(swarm_api::spec::ExtraHost {
            name: "db\n10.0.0.1 evil".into(),
            address: "10.0.0.5".parse().unwrap(),
        });
        runtime.dns.search.push("bad domain".into());
        runtime
            .dns
            .options
            .push("ndots:1\nnameserver 1.2.3.4".into());
        runtime.oom_score_adj = -1001;
        let reasons = plan_result(&state(vec![spec]), &[created("web")]);
        let all = reasons.join("\n");
        for expected in [
            "cap_add: unknown capability \"CAP_NOPE\"",
            "cap_add: capability \"net_admin\" is not written CAP_NET_ADMIN",
            "sysctls: sysctl \"kernel.hostname\" is not allowed",
            "ulimits: ulimit nofile: the soft limit 10 is above the hard limit 5",
            "logging: max-file \"0\"",
            "extra_hosts: invalid host name",
            "dns_search: invalid search domain \"bad domain\"",
            "dns_opt: invalid resolver option",
            "oom_score_adj: -1001 is outside the kernel's range, -1000..1000",
        ] {
            assert!(all.contains(expected), "{expected:?} missing from {all}");
        }
        assert_eq!(reasons.len(), 9, "{all}");
    }

    #[test]
    fn dependencies_must_exist_and_make_no_cycle() {
        use swarm_api::spec::{Dependency, DependencyCondition};
        let on = |name: &str| Dependency {
            service: name.to_owned(),
            condition: DependencyCondition::ServiceStarted,
        };
        let mut a = service("a");
        a.depends_on = vec![on("b")];
        let mut b = service("b");
        b.depends_on = vec![on("a"), on("gone")];
        let mut c = service("c");
        c.depends_on = vec![Dependency {
            service: "a".to_owned(),
            condition: DependencyCondition::ServiceCompletedSuccessfully,
        }];
        let objects = state(vec![a, b, c]);
        let reasons = plan_result(&objects, &[created("b")]);
        assert_eq!(
            reasons,
            [
                "service \"b\": depends on service \"gone\", which does not exist",
                "depends_on cycle: a → b → a",
            ]
        );
        assert_eq!(
            plan_result(&objects, &[created("c")]),
            [
                "service \"c\": waits for service \"a\" to complete, which is not a job: its tasks never complete"
            ]
        );
        // A plan that touches none of them is not judged by them.
        let objects = state(vec![service("d")]);
        assert!(plan_result(&objects, &[created("d")]).is_empty());
    }

    #[test]
    fn references_must_exist_in_the_resulting_state() {
        let mut spec = service("web");
        spec.task.networks.push(swarm_api::spec::NetworkAttachment {
            target: "front".into(),
            aliases: vec![],
        });
        spec.task
            .container
            .secrets
            .push(swarm_api::spec::FileReference {
                digest: None,
                source: "key".into(),
                target: "/run/secrets/key".into(),
                uid: "0".into(),
                gid: "0".into(),
                mode: 0o400,
            });
        let mut objects = state(vec![spec]);
        let reasons = plan_result(&objects, &[created("web")]);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("network front does not exist"));
        assert!(reasons[1].contains("secret key does not exist"));
        objects.networks.push(object(NetworkSpec {
            name: "front".into(),
            driver: "overlay".into(),
            driver_opts: Default::default(),
            attachable: false,
            internal: false,
            labels: Default::default(),
            subnets: vec![],
            gateway: None,
        }));
        objects.secrets.push(object(FileObjectSpec {
            name: "key".into(),
            labels: Default::default(),
            digest: "sha256:00".into(),
        }));
        assert!(plan_result(&objects, &[created("web")]).is_empty());
        // Removing a network a remaining service uses is refused, though the service
        // itself is not touched.
        objects.networks.clear();
        let removal = [(Kind::Network, "front".to_owned(), Op::Remove)];
        let reasons = plan_result(&objects, &removal);
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("network front does not exist")),
            "{reasons:?}"
        );
    }

    #[test]
    fn a_port_the_nodes_use_cannot_be_published() {
        let mut objects = ClusterState::default();
        let mut web = service("web");
        web.endpoint.ports = vec![ingress(2377), ingress(8080), ingress(9323)];
        let mut udp = ingress(4789);
        udp.protocol = Protocol::Udp;
        web.endpoint.ports.push(udp);
        objects.services.push(Object {
            id: Some("web-id".into()),
            origin: Default::default(),
            spec: web,
        });
        let swarm_api::store::Command::AddNode(mut node) =
            crate::store::fixtures::node("1", swarm_api::store::NodeRole::Manager)
        else {
            unreachable!("a node joining")
        };
        node.description.data_path_port = 4789;
        node.description.metrics_port = Some(9323);
        let nodes = [("1".to_owned(), node)].into();
        let reasons = node_ports(&objects, &nodes, &|_| true);
        assert_eq!(
            reasons,
            [
                "service \"web\": port 2377/tcp is the cluster port of node host-1: the nodes answer published ports themselves; publish another port",
                "service \"web\": port 9323/tcp is the metrics port of node host-1: the nodes answer published ports themselves; publish another port",
                "service \"web\": port 4789/udp is the data path port of node host-1: the nodes answer published ports themselves; publish another port",
            ]
        );
        assert!(
            node_ports(&objects, &nodes, &|_| false).is_empty(),
            "unchanged"
        );
    }

    #[test]
    fn an_ingress_port_is_published_by_one_service() {
        let mut a = service("a");
        a.endpoint.ports = vec![ingress(8080)];
        let mut b = service("b");
        b.endpoint.ports = vec![ingress(8080)];
        let objects = state(vec![a, b.clone()]);
        let reasons = plan_result(&objects, &[created("b")]);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains("port 8080/tcp is published by more than one service (a, b)"));
        // Host-mode ports bind only where a task runs: two services may share one.
        let mut host = ingress(8080);
        host.mode = PublishMode::Host;
        let mut a = service("a");
        a.endpoint.ports = vec![host.clone()];
        b.endpoint.ports = vec![host];
        assert!(plan_result(&state(vec![a, b]), &[created("b")]).is_empty());
    }

    #[test]
    fn services_the_plan_does_not_touch_are_not_judged() {
        // A service stored before the guard existed does not block other changes.
        let mut old = service("old");
        old.task.container.image = "Bad Image".into();
        let objects = state(vec![old, service("new")]);
        assert!(plan_result(&objects, &[created("new")]).is_empty());
    }
}
