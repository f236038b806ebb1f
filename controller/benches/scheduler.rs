//! The scheduler's pure core at scale. Targets (issue: services): 100,000 tasks onto 1,000
//! nodes in ≤ 1 s; with 5 constraints in ≤ 2 s (swarmkit's published benchmark: 22.6 s for
//! 100k tasks on 1k nodes).
//!
//!     cargo bench -p swarm-controller --bench scheduler
//!
//! What is timed: `scheduler::schedule` from empty loads (cloned inside the run) to every
//! assignment, for 100 services of 1,000 tasks each (a group per service) and for one
//! service of 100,000 tasks; the constrained case adds 5 label constraints that 1 node in 2
//! satisfies, and a placement preference over 10 racks.

#[path = "support/harness.rs"]
mod harness;

use std::collections::BTreeMap;

use harness::{measure, report};
use swarm_api::spec::{Placement, SpreadOver};
use swarm_api::store::{Availability, NodeRole, NodeStatus};
use swarm_controller::scheduler::{Candidate, Group, Load, Resources, schedule};

const NODES: usize = 1_000;
const TASKS: usize = 100_000;

fn nodes() -> Vec<Candidate> {
    (0..NODES)
        .map(|i| {
            let mut labels = BTreeMap::new();
            // Labels l0..l4 = "yes" on even nodes: 5 constraints keep 1 node in 2.
            for l in 0..5 {
                let value = if i % 2 == 0 { "yes" } else { "no" };
                labels.insert(format!("l{l}"), value.to_owned());
            }
            labels.insert("rack".to_owned(), format!("r{}", i % 10));
            Candidate {
                ip: None,
                id: format!("node-{i:04}"),
                hostname: format!("host-{i:04}"),
                role: NodeRole::Worker,
                availability: Availability::Active,
                status: NodeStatus::Ready,
                labels,
                os: "linux".to_owned(),
                arch: "x86_64".to_owned(),
                capacity: Some(Resources {
                    nano_cpus: 64_000_000_000,
                    memory_bytes: 256 << 30,
                }),
                worker_error: None,
            }
        })
        .collect()
}

fn run(nodes: &[Candidate], services: &[String], placement: &Placement, per_service: usize) {
    let tasks: Vec<Vec<String>> = services
        .iter()
        .map(|s| (0..per_service).map(|t| format!("{s}.{t}")).collect())
        .collect();
    let groups: Vec<Group<'_>> = services
        .iter()
        .zip(tasks)
        .map(|(service, tasks)| Group {
            service_id: service,
            tasks,
            placement,
            reservations: Resources {
                nano_cpus: 10_000_000,
                memory_bytes: 16 << 20,
            },
            host_ports: Vec::new(),
        })
        .collect();
    let mut loads = vec![Load::default(); nodes.len()];
    let decisions = schedule(nodes, &mut loads, &groups);
    assert_eq!(decisions.assignments.len(), TASKS);
    assert!(decisions.unschedulable.is_empty());
}

fn main() {
    let nodes = nodes();
    let plain = Placement::default();
    let constrained = Placement {
        constraints: (0..5)
            .map(|l| format!("node.labels.l{l}==yes").parse().unwrap())
            .collect(),
        preferences: vec![SpreadOver {
            spread: "node.labels.rack".to_owned(),
        }],
        max_replicas_per_node: 0,
    };
    let hundred: Vec<String> = (0..100).map(|s| format!("svc{s}")).collect();
    let one = vec!["svc".to_owned()];
    let cases: [(&str, &[String], &Placement, usize, f64); 4] = [
        (
            "100k_tasks_100_services_1k_nodes",
            &hundred,
            &plain,
            1_000,
            1000.0,
        ),
        ("100k_tasks_1_service_1k_nodes", &one, &plain, TASKS, 1000.0),
        (
            "100k_tasks_5_constraints_spread",
            &hundred,
            &constrained,
            1_000,
            2000.0,
        ),
        (
            "100k_tasks_1_service_5_constraints",
            &one,
            &constrained,
            TASKS,
            2000.0,
        ),
    ];
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    for (name, services, placement, per_service, target) in cases {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let timing = measure(11, 1, || run(&nodes, services, placement, per_service));
        report(name, Some(target), &timing);
    }
}
