use super::*;
use swarm_api::spec::SpreadOver;

const GIB: u64 = 1 << 30;

fn node(name: &str) -> Candidate {
    Candidate {
        ip: None,
        id: format!("id-{name}"),
        hostname: name.to_owned(),
        role: NodeRole::Worker,
        availability: Availability::Active,
        status: NodeStatus::Ready,
        labels: BTreeMap::new(),
        os: "linux".to_owned(),
        arch: "x86_64".to_owned(),
        capacity: Some(Resources {
            nano_cpus: 2_000_000_000,
            memory_bytes: 4 * GIB,
        }),
        worker_error: None,
    }
}

fn labelled(name: &str, key: &str, value: &str) -> Candidate {
    let mut node = node(name);
    node.labels.insert(key.to_owned(), value.to_owned());
    node
}

fn tasks(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("t{i}")).collect()
}

fn group<'a>(placement: &'a Placement, n: usize) -> Group<'a> {
    Group {
        service_id: "web",
        tasks: tasks(n),
        placement,
        reservations: Resources::default(),
        host_ports: Vec::new(),
    }
}

fn run(nodes: &[Candidate], groups: &[Group<'_>]) -> (Decisions, Vec<Load>) {
    let mut loads = vec![Load::default(); nodes.len()];
    let decisions = schedule(nodes, &mut loads, groups);
    (decisions, loads)
}

/// Tasks per hostname.
fn spread_of(nodes: &[Candidate], decisions: &Decisions) -> BTreeMap<String, usize> {
    let mut spread = BTreeMap::new();
    for (_, id) in &decisions.assignments {
        let node = nodes.iter().find(|n| n.id == *id).unwrap();
        *spread.entry(node.hostname.clone()).or_default() += 1;
    }
    spread
}

#[test]
fn tasks_spread_over_the_least_loaded_nodes() {
    let nodes = [node("a"), node("b"), node("c")];
    let placement = Placement::default();
    let mut loads = vec![Load::default(); 3];
    // Node a already runs two tasks of another service.
    loads[0].tasks = 2;
    loads[0].tasks_by_service.insert("db".to_owned(), 2);
    let decisions = schedule(&nodes, &mut loads, &[group(&placement, 4)]);
    let spread = spread_of(&nodes, &decisions);
    assert_eq!(spread["b"], 2);
    assert_eq!(spread["c"], 1);
    assert_eq!(
        spread["a"], 1,
        "fewest tasks of this service first, then fewest overall"
    );
    assert_eq!(loads[0].tasks, 3);
    assert!(decisions.unschedulable.is_empty());
}

#[test]
fn down_drained_and_paused_nodes_take_nothing() {
    let mut nodes = [node("a"), node("b"), node("c"), node("d")];
    nodes[0].status = NodeStatus::Down;
    nodes[1].availability = Availability::Drain;
    nodes[2].availability = Availability::Pause;
    let placement = Placement::default();
    let (decisions, _) = run(&nodes, &[group(&placement, 2)]);
    assert_eq!(spread_of(&nodes, &decisions)["d"], 2);

    nodes[3].availability = Availability::Drain;
    let (decisions, _) = run(&nodes, &[group(&placement, 2)]);
    assert!(decisions.assignments.is_empty());
    assert_eq!(
        decisions.unschedulable,
        vec![
            (
                "t1".to_owned(),
                "no suitable node (1 node down; 2 nodes drained; 1 node paused)".to_owned()
            ),
            (
                "t2".to_owned(),
                "no suitable node (1 node down; 2 nodes drained; 1 node paused)".to_owned()
            ),
        ]
    );
}

#[test]
fn nodes_whose_worker_is_not_running_take_nothing_and_say_why() {
    let mut nodes = [node("a"), node("b"), node("c"), node("d")];
    nodes[0].worker_error = Some("runc not found in PATH".to_owned());
    let placement = Placement::default();
    let (decisions, _) = run(&nodes, &[group(&placement, 6)]);
    let spread = spread_of(&nodes, &decisions);
    assert!(!spread.contains_key("a"), "{spread:?}");
    assert_eq!(spread.values().sum::<usize>(), 6);

    nodes[1].worker_error = Some("runc not found in PATH".to_owned());
    nodes[2].worker_error = Some("cannot open the image store: disk full".to_owned());
    nodes[3].status = NodeStatus::Down;
    let (decisions, _) = run(&nodes, &[group(&placement, 1)]);
    assert!(decisions.assignments.is_empty());
    assert_eq!(
        decisions.unschedulable,
        vec![(
            "t1".to_owned(),
            "no suitable node (1 node's worker is not running: cannot open the image store: \
             disk full; 2 nodes' workers are not running: runc not found in PATH; 1 node down)"
                .to_owned()
        )]
    );

    // The worker runs again (runc installed): the node takes tasks at once.
    for node in &mut nodes {
        node.worker_error = None;
    }
    let (decisions, _) = run(&nodes, &[group(&placement, 3)]);
    assert_eq!(decisions.assignments.len(), 3);
    assert!(decisions.unschedulable.is_empty());
}

#[test]
fn constraints_select_nodes_and_explain_the_others() {
    let nodes = [
        labelled("a", "zone", "eu"),
        labelled("b", "zone", "us"),
        node("c"),
    ];
    let placement = Placement {
        constraints: vec!["node.labels.zone==EU".parse().unwrap()],
        ..Placement::default()
    };
    let (decisions, _) = run(&nodes, &[group(&placement, 3)]);
    assert_eq!(
        spread_of(&nodes, &decisions)["a"],
        3,
        "case-insensitive, like Docker"
    );

    let placement = Placement {
        // Sorted, as normalised specs hold them; each node counts under the first it fails.
        constraints: vec![
            "node.hostname!=c".parse().unwrap(),
            "node.role==manager".parse().unwrap(),
        ],
        ..Placement::default()
    };
    let (decisions, _) = run(&nodes, &[group(&placement, 1)]);
    assert_eq!(
        decisions.unschedulable[0].1,
        "no suitable node (1 node does not satisfy node.hostname != c; 2 nodes do not satisfy node.role == manager)"
    );
}

#[test]
fn reservations_fill_nodes_then_explain_what_is_missing() {
    let mut nodes = [node("a"), node("b"), node("c")];
    nodes[2].availability = Availability::Drain;
    let placement = Placement::default();
    let mut web = group(&placement, 10);
    web.reservations.memory_bytes = GIB;
    let (decisions, loads) = run(&nodes, &[web]);
    assert_eq!(
        decisions.assignments.len(),
        8,
        "4 GiB nodes take 4 tasks of 1 GiB each"
    );
    assert_eq!(loads[0].reserved.memory_bytes, 4 * GIB);
    assert_eq!(decisions.unschedulable.len(), 2);
    assert_eq!(
        decisions.unschedulable[0].1,
        "no suitable node (2 nodes lack 1GiB of memory; 1 node drained)"
    );

    let mut cpu = group(&placement, 5);
    cpu.reservations.nano_cpus = 1_500_000_000;
    let (decisions, _) = run(&nodes[..1], &[cpu]);
    assert_eq!(decisions.assignments.len(), 1);
    assert_eq!(
        decisions.unschedulable[0].1,
        "no suitable node (1 node lacks 1.5 CPUs)"
    );
}

#[test]
fn nodes_without_reported_resources_take_only_tasks_that_reserve_nothing() {
    let mut nodes = [node("a")];
    nodes[0].capacity = None;
    let placement = Placement::default();
    let (decisions, _) = run(&nodes, &[group(&placement, 1)]);
    assert_eq!(decisions.assignments.len(), 1);
    let mut reserving = group(&placement, 1);
    reserving.reservations.memory_bytes = 1;
    let (decisions, _) = run(&nodes, &[reserving]);
    assert_eq!(
        decisions.unschedulable[0].1,
        "no suitable node (1 node reported no resources)"
    );
}

#[test]
fn max_replicas_per_node_and_host_ports_limit_each_node() {
    let nodes = [node("a"), node("b")];
    let placement = Placement {
        max_replicas_per_node: 1,
        ..Placement::default()
    };
    let (decisions, _) = run(&nodes, &[group(&placement, 3)]);
    assert_eq!(decisions.assignments.len(), 2);
    assert_eq!(
        decisions.unschedulable[0].1,
        "no suitable node (2 nodes already run the maximum of 1 per node)"
    );

    let placement = Placement::default();
    let mut published = group(&placement, 3);
    published.host_ports = vec![(Protocol::Tcp, 80)];
    let mut loads = vec![Load::default(); 2];
    loads[1].host_ports.insert((Protocol::Tcp, 80));
    let decisions = schedule(&nodes, &mut loads, &[published]);
    assert_eq!(spread_of(&nodes, &decisions)["a"], 1);
    assert_eq!(
        decisions.unschedulable[0].1,
        "no suitable node (2 nodes have host port 80/tcp in use)"
    );
}

#[test]
fn placement_preferences_spread_over_label_values_first() {
    // Two nodes in zone a, one in zone b, one without a zone.
    let nodes = [
        labelled("a1", "zone", "a"),
        labelled("a2", "zone", "a"),
        labelled("b1", "zone", "b"),
        node("x"),
    ];
    let placement = Placement {
        preferences: vec![SpreadOver {
            spread: "node.labels.zone".to_owned(),
        }],
        ..Placement::default()
    };
    let (decisions, _) = run(&nodes, &[group(&placement, 6)]);
    let spread = spread_of(&nodes, &decisions);
    // Three branches (a, b, none) get two tasks each; zone a's two split over its nodes.
    assert_eq!(spread["a1"] + spread["a2"], 2);
    assert_eq!(spread["a1"], 1);
    assert_eq!(spread["b1"], 2);
    assert_eq!(spread["x"], 2);
}

#[test]
fn a_spread_over_no_label_is_skipped_and_label_prefixes_match_in_any_case() {
    let nodes = [
        labelled("a1", "zone", "a"),
        labelled("a2", "zone", "a"),
        labelled("b1", "zone", "b"),
        node("x"),
    ];
    let placement = |spreads: &[&str]| Placement {
        preferences: spreads
            .iter()
            .map(|spread| SpreadOver {
                spread: (*spread).to_owned(),
            })
            .collect(),
        ..Placement::default()
    };
    let (written, _) = run(&nodes, &[group(&placement(&["node.labels.zone"]), 6)]);
    let (docker_style, _) = run(
        &nodes,
        &[group(&placement(&["node.id", "Node.Labels.zone"]), 6)],
    );
    assert_eq!(written, docker_style);
}

#[test]
fn the_same_input_gives_the_same_decisions() {
    let nodes: Vec<Candidate> = (0..20)
        .map(|i| labelled(&format!("n{i}"), "rack", &(i % 3).to_string()))
        .collect();
    let placement = Placement {
        preferences: vec![SpreadOver {
            spread: "node.labels.rack".to_owned(),
        }],
        ..Placement::default()
    };
    let (first, _) = run(&nodes, &[group(&placement, 50)]);
    let (second, _) = run(&nodes, &[group(&placement, 50)]);
    assert_eq!(first, second);
    let spread = spread_of(&nodes, &first);
    let (min, max) = (
        spread.values().min().unwrap(),
        spread.values().max().unwrap(),
    );
    assert!(max - min <= 1, "{spread:?}");
}

#[test]
fn an_empty_cluster_says_so() {
    let placement = Placement::default();
    let (decisions, _) = run(&[], &[group(&placement, 1)]);
    assert_eq!(
        decisions.unschedulable[0].1,
        "no suitable node (the cluster has no nodes)"
    );
}

/// Constraints as swarmkit reads them: attribute names in any case, `node.ip` with an
/// address or a range (the host part of the node's address), the platform the node reported.
#[test]
fn constraints_read_like_swarmkit() {
    let mut manager = node("a");
    manager.role = NodeRole::Manager;
    manager.ip = host_ip("10.0.1.5:4242");
    manager.arch = "aarch64".to_owned();
    manager.labels.insert("Zone".to_owned(), "eu".to_owned());
    let mut worker = node("b");
    worker.ip = host_ip("[fd00::7]:4242");
    let named = node("c");
    let holds = |text: &str, candidate: &Candidate| {
        let constraint: Constraint = text.parse().unwrap();
        satisfies(candidate, &constraint)
    };
    assert!(holds("Node.Role == Manager", &manager));
    assert!(!holds("NODE.ROLE==manager", &worker));
    assert!(holds("NODE.LABELS.Zone == EU", &manager));
    assert!(
        !holds("node.labels.zone == eu", &manager),
        "a label's name keeps its case"
    );
    assert!(holds("node.ip == 10.0.1.5", &manager));
    assert!(holds("node.ip == 10.0.0.0/16", &manager));
    assert!(holds("node.ip != 10.0.0.0/16", &worker));
    assert!(holds("node.ip == fd00::/64", &worker));
    assert!(
        !holds("node.ip == 10.0.0.0/8", &named),
        "a node without an address"
    );
    assert!(holds("node.ip != 10.0.0.0/8", &named));
    assert!(holds("node.platform.arch == aarch64", &manager));
    assert!(holds("node.platform.os == Linux", &worker));
    assert_eq!(host_ip("node-3:4242"), None);
}
