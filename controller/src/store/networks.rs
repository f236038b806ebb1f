//! Networks' address space, decided in the store's apply so that every replica decides the
//! same: each network's subnet (its own, or the lowest free one of the networks' pool) and
//! each task's address on each network of its service (the lowest free one), and each
//! `vip`-mode service's virtual IP on each of its networks (never a task's, kept across
//! updates). Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use swarm_api::spec::{EndpointMode, NetworkSpec, ServiceSpec};
use swarm_api::state::{ClusterState, Object};
use swarm_api::store::{AddressPool, NetworkAllocation};
use swarm_api::task::{NetworkAddress, Task};

/// Drivers that exist in Docker but connect one node's containers only: a cluster network
/// spans nodes.
const NODE_LOCAL_DRIVERS: [&str; 3] = ["bridge", "host", "none"];

/// Why a network spec is not allowed by itself; empty when it is.
pub(super) fn spec_reasons(spec: &NetworkSpec) -> Vec<String> {
    let name = &spec.name;
    let mut reasons = Vec::new();
    if !crate::stack::convert::valid_name(name) {
        reasons.push(format!(
            "network {name:?}: invalid name: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        ));
    }
    let driver = spec.driver.as_str();
    if NODE_LOCAL_DRIVERS.contains(&driver) {
        reasons.push(format!(
            "network {name}: the {driver} driver is local to one node; cluster networks use the overlay driver"
        ));
    } else if driver != "overlay" {
        reasons.push(format!(
            "network {name}: unknown driver {driver:?}; cluster networks use the overlay driver"
        ));
    }
    reasons
}

/// The services (by name) that attach to network `network`.
pub(super) fn users<'a>(objects: &'a ClusterState, network: &str) -> Vec<&'a str> {
    objects
        .services
        .iter()
        .filter(|s| s.spec.task.networks.iter().any(|a| a.target == network))
        .map(|s| s.spec.name.as_str())
        .collect()
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The networks' allocations after a plan left `networks`: kept for networks that stay
/// with the same requested subnet and gateway, released for those gone, decided for new
/// ones, in name order, networks with their own subnet first (so that one taken from the
/// pool never takes a range a network of the same plan asks for). The nodes' pool is never
/// given out nor overlapped.
pub(super) fn allocate_subnets(
    networks: &[Object<NetworkSpec>],
    before: &BTreeMap<String, NetworkAllocation>,
    node_pool: &AddressPool,
    network_pool: &AddressPool,
) -> Result<BTreeMap<String, NetworkAllocation>, Vec<String>> {
    let mut after = BTreeMap::new();
    let mut pending = Vec::new();
    for network in networks {
        let spec = &network.spec;
        let requested = requested_subnet(spec);
        match before.get(&spec.name) {
            Some(kept)
                if requested.is_none_or(|subnet| subnet == kept.subnet)
                    && gateway_of(spec, kept.subnet) == Ok(kept.gateway) =>
            {
                after.insert(spec.name.clone(), *kept);
            }
            _ => pending.push((spec, requested)),
        }
    }
    pending.sort_by_key(|(spec, requested)| (requested.is_none(), spec.name.clone()));
    let mut reasons = Vec::new();
    for (spec, requested) in pending {
        let name = &spec.name;
        let subnet = match requested {
            Some(subnet) => {
                if overlaps(subnet, node_pool.base) {
                    reasons.push(format!(
                        "network {name}: subnet {subnet} overlaps the cluster's node address pool {}",
                        node_pool.base
                    ));
                    continue;
                }
                if let Some((other, taken)) = after
                    .iter()
                    .find(|(_, a): &(&String, &NetworkAllocation)| overlaps(subnet, a.subnet))
                {
                    reasons.push(format!(
                        "network {name}: subnet {subnet} overlaps subnet {} of network {other}",
                        taken.subnet
                    ));
                    continue;
                }
                subnet
            }
            None => {
                let taken: Vec<Ipv4Net> = after.values().map(|a| a.subnet).collect();
                match free_subnet(network_pool, node_pool.base, &taken) {
                    Some(subnet) => subnet,
                    None => {
                        reasons.push(format!(
                            "network {name}: the networks' address pool {} has no free /{} subnet left: remove networks, or give this one a --subnet",
                            network_pool.base, network_pool.subnet_size
                        ));
                        continue;
                    }
                }
            }
        };
        match gateway_of(spec, subnet) {
            Ok(gateway) => {
                after.insert(
                    name.clone(),
                    NetworkAllocation {
                        subnet,
                        gateway,
                        vni: 0,
                    },
                );
            }
            Err(reason) => reasons.push(reason),
        }
    }
    if reasons.is_empty() {
        give_vnis(&mut after);
        Ok(after)
    } else {
        Err(reasons)
    }
}

/// The first VXLAN identifier given to a network, Docker's: lower ones stay free for
/// whatever else a site runs over VXLAN.
const FIRST_VNI: u32 = 4096;

/// Gives each allocation without a VNI (a new network, or one allocated before VNIs were)
/// the lowest one no other network holds, in name order; kept ones keep theirs.
fn give_vnis(allocations: &mut BTreeMap<String, NetworkAllocation>) {
    let mut taken: BTreeSet<u32> = allocations.values().map(|a| a.vni).collect();
    let mut next = FIRST_VNI;
    for allocation in allocations.values_mut().filter(|a| a.vni == 0) {
        while taken.contains(&next) {
            next += 1;
        }
        allocation.vni = next;
        taken.insert(next);
    }
}

/// The first IPv4 subnet the spec asks for (the store's guard checked their syntax).
fn requested_subnet(spec: &NetworkSpec) -> Option<Ipv4Net> {
    spec.subnets
        .iter()
        .find_map(|s| s.parse::<Ipv4Net>().ok())
        .map(|s| s.trunc())
}

/// The spec's gateway, which must be a host address of `subnet`, or the subnet's first.
fn gateway_of(spec: &NetworkSpec, subnet: Ipv4Net) -> Result<Ipv4Addr, String> {
    let name = &spec.name;
    let first = || {
        subnet
            .hosts()
            .next()
            .ok_or_else(|| format!("network {name}: subnet {subnet} has no address for a gateway"))
    };
    let Some(text) = &spec.gateway else {
        return first();
    };
    let gateway: Ipv4Addr = text
        .parse()
        .map_err(|_| format!("network {name}: invalid gateway {text:?}"))?;
    if !subnet.contains(&gateway) || gateway == subnet.network() || gateway == subnet.broadcast() {
        return Err(format!(
            "network {name}: gateway {gateway} is not a host address of subnet {subnet}"
        ));
    }
    Ok(gateway)
}

/// The lowest subnet of `pool` that overlaps neither `reserved` nor any of `taken`.
pub(super) fn free_subnet(
    pool: &AddressPool,
    reserved: Ipv4Net,
    taken: &[Ipv4Net],
) -> Option<Ipv4Net> {
    pool.base
        .subnets(pool.subnet_size)
        .ok()?
        .find(|subnet| !overlaps(*subnet, reserved) && !taken.iter().any(|t| overlaps(*subnet, *t)))
}

/// The lowest host address of `allocation`'s subnet that is neither its gateway nor in
/// `taken`.
pub(super) fn free_address(
    allocation: &NetworkAllocation,
    taken: &BTreeSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    allocation
        .subnet
        .hosts()
        .find(|a| *a != allocation.gateway && !taken.contains(a))
}

/// The addresses taken on each network, by network name: those tasks hold (a task that
/// stopped holds none: its history would otherwise fill the subnet) and the services'
/// virtual IPs.
pub(super) fn addresses_in_use<'a>(
    tasks: impl Iterator<Item = &'a Task>,
    vips: &BTreeMap<String, Vec<NetworkAddress>>,
) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    let mut used: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    let held = tasks
        .filter(|t| !t.status.state.is_terminal())
        .flat_map(|t| &t.networks);
    for attachment in held.chain(vips.values().flatten()) {
        used.entry(attachment.network.clone())
            .or_default()
            .insert(attachment.address);
    }
    used
}

/// The virtual IPs after a change of the services or networks, by service id: one per
/// network (with an allocation) of each `vip`-mode service, in the order the spec attaches
/// them. A service keeps the address it had on a network while it stays in `vip` mode on
/// it and the address is still a host of the network's subnet that nobody else holds;
/// the others get the lowest free one (neither the gateway, nor a task's in `tasks_used`,
/// nor another VIP), services in name order, so every replica decides the same. A service
/// gone, detached or turned `dnsrr` frees its addresses. Returns what could be given and,
/// for each network that had no address left, the reason naming the service and network.
pub(super) fn allocate_vips(
    services: &[Object<ServiceSpec>],
    allocations: &BTreeMap<String, NetworkAllocation>,
    before: &BTreeMap<String, Vec<NetworkAddress>>,
    tasks_used: &BTreeMap<String, BTreeSet<Ipv4Addr>>,
) -> (BTreeMap<String, Vec<NetworkAddress>>, Vec<String>) {
    let mut used = tasks_used.clone();
    let wanted: Vec<(&str, &str, Vec<&str>)> = services
        .iter()
        .filter(|s| s.spec.endpoint.mode == EndpointMode::Vip)
        .filter_map(|s| {
            let networks = s
                .spec
                .task
                .networks
                .iter()
                .map(|a| a.target.as_str())
                .filter(|n| allocations.contains_key(*n))
                .collect::<Vec<_>>();
            Some((s.id.as_deref()?, s.spec.name.as_str(), networks))
        })
        .collect();
    // Kept addresses first, so that a new one never takes an address a service keeps.
    let mut kept: BTreeMap<(&str, &str), Ipv4Addr> = BTreeMap::new();
    for (id, _, networks) in &wanted {
        for vip in before.get(*id).into_iter().flatten() {
            let network = vip.network.as_str();
            let Some(allocation) = allocations.get(network) else {
                continue;
            };
            let host = allocation.subnet.contains(&vip.address)
                && vip.address != allocation.subnet.network()
                && vip.address != allocation.subnet.broadcast()
                && vip.address != allocation.gateway;
            if networks.contains(&network)
                && host
                && used
                    .entry(vip.network.clone())
                    .or_default()
                    .insert(vip.address)
            {
                kept.insert((id, network), vip.address);
            }
        }
    }
    let mut sorted = wanted;
    sorted.sort_by_key(|(_, name, _)| *name);
    let empty = BTreeSet::new();
    let mut after = BTreeMap::new();
    let mut reasons = Vec::new();
    for (id, name, networks) in sorted {
        let mut vips = Vec::new();
        for network in networks {
            let address = match kept.get(&(id, network)) {
                Some(address) => *address,
                None => {
                    let allocation = &allocations[network];
                    let free = free_address(allocation, used.get(network).unwrap_or(&empty));
                    let Some(address) = free else {
                        reasons.push(format!(
                            "service {name}: network {network} ({}) has no free address left for its virtual IP",
                            allocation.subnet
                        ));
                        continue;
                    };
                    used.entry(network.to_owned()).or_default().insert(address);
                    address
                }
            };
            vips.push(NetworkAddress {
                network: network.to_owned(),
                address,
            });
        }
        if !vips.is_empty() {
            after.insert(id.to_owned(), vips);
        }
    }
    (after, reasons)
}

/// Gives `task` an address on each network its spec attaches to (a service names a
/// network once), marking them in `used`; or, when a network has none left, says which and
/// gives none. A network without an allocation (made before the store allocated them, until
/// a plan touches networks again) gives no address: its tasks keep their node's.
pub(super) fn address_task(
    task: &mut Task,
    allocations: &BTreeMap<String, NetworkAllocation>,
    used: &mut BTreeMap<String, BTreeSet<Ipv4Addr>>,
) -> Result<(), String> {
    let empty = BTreeSet::new();
    let mut given = Vec::new();
    for attachment in &task.spec.networks {
        let network = &attachment.target;
        let Some(allocation) = allocations.get(network) else {
            continue;
        };
        let address =
            free_address(allocation, used.get(network).unwrap_or(&empty)).ok_or_else(|| {
                format!(
                    "network {network} ({}) has no free address left",
                    allocation.subnet
                )
            })?;
        given.push(NetworkAddress {
            network: network.clone(),
            address,
        });
    }
    for NetworkAddress { network, address } in &given {
        used.entry(network.clone()).or_default().insert(*address);
    }
    task.networks = given;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(name: &str, subnet: Option<&str>) -> Object<NetworkSpec> {
        Object {
            id: Some(format!("id-{name}")),
            origin: Default::default(),
            spec: NetworkSpec {
                name: name.into(),
                driver: "overlay".into(),
                driver_opts: Default::default(),
                attachable: false,
                internal: false,
                labels: Default::default(),
                subnets: subnet.into_iter().map(str::to_owned).collect(),
                gateway: None,
            },
        }
    }

    fn pool(base: &str, size: u8) -> AddressPool {
        AddressPool {
            base: base.parse().unwrap(),
            subnet_size: size,
        }
    }

    #[test]
    fn subnets_come_from_the_pool_lowest_first_own_ones_first_and_skip_the_node_pool() {
        let nodes = pool("10.0.1.0/24", 24);
        let networks = [
            network("a", None),
            network("b", Some("10.0.0.0/24")),
            network("c", None),
        ];
        let after = allocate_subnets(
            &networks,
            &BTreeMap::new(),
            &AddressPool::default(),
            &pool("10.0.0.0/16", 24),
        )
        .unwrap();
        // b's own subnet is placed before a and c take theirs.
        assert_eq!(after["b"].subnet.to_string(), "10.0.0.0/24");
        assert_eq!(after["a"].subnet.to_string(), "10.0.1.0/24");
        assert_eq!(after["c"].subnet.to_string(), "10.0.2.0/24");
        assert_eq!(after["a"].gateway.to_string(), "10.0.1.1");
        // With the nodes' pool inside the networks' one, it is skipped.
        let after = allocate_subnets(
            &networks[..1],
            &BTreeMap::new(),
            &nodes,
            &pool("10.0.0.0/16", 24),
        )
        .unwrap();
        assert_eq!(after["a"].subnet.to_string(), "10.0.0.0/24");
        let after = allocate_subnets(
            &[network("x", Some("10.0.0.0/24")), network("a", None)],
            &BTreeMap::new(),
            &nodes,
            &pool("10.0.0.0/16", 24),
        )
        .unwrap();
        assert_eq!(after["a"].subnet.to_string(), "10.0.2.0/24");
    }

    #[test]
    fn overlaps_and_exhaustion_are_refused_naming_both_sides() {
        let networks = [network("a", Some("10.5.0.0/16"))];
        let before = allocate_subnets(
            &networks,
            &BTreeMap::new(),
            &AddressPool::default(),
            &AddressPool::networks(),
        )
        .unwrap();
        let reasons = allocate_subnets(
            &[networks[0].clone(), network("b", Some("10.5.3.0/24"))],
            &before,
            &AddressPool::default(),
            &AddressPool::networks(),
        )
        .unwrap_err();
        assert_eq!(
            reasons,
            ["network b: subnet 10.5.3.0/24 overlaps subnet 10.5.0.0/16 of network a"]
        );
        let reasons = allocate_subnets(
            &[network("c", Some("198.19.4.0/24"))],
            &BTreeMap::new(),
            &AddressPool::default(),
            &AddressPool::networks(),
        )
        .unwrap_err();
        assert_eq!(
            reasons,
            [
                "network c: subnet 198.19.4.0/24 overlaps the cluster's node address pool 198.19.0.0/16"
            ]
        );
        let small = pool("10.0.0.0/23", 24);
        let reasons = allocate_subnets(
            &[network("a", None), network("b", None), network("c", None)],
            &BTreeMap::new(),
            &AddressPool::default(),
            &small,
        )
        .unwrap_err();
        assert_eq!(reasons.len(), 1);
        assert!(
            reasons[0].starts_with(
                "network c: the networks' address pool 10.0.0.0/23 has no free /24 subnet left"
            ),
            "{reasons:?}"
        );
    }

    #[test]
    fn kept_networks_keep_their_subnet_and_removed_ones_free_it() {
        let small = pool("10.0.0.0/23", 24);
        let nodes = AddressPool::default();
        let first = allocate_subnets(
            &[network("a", None), network("b", None)],
            &BTreeMap::new(),
            &nodes,
            &small,
        )
        .unwrap();
        // "a" goes; "c" takes its subnet, "b" keeps its own.
        let second = allocate_subnets(
            &[network("b", None), network("c", None)],
            &first,
            &nodes,
            &small,
        )
        .unwrap();
        assert_eq!(second["b"], first["b"]);
        assert_eq!(second["c"].subnet, first["a"].subnet);
        assert!(!second.contains_key("a"));
        // VNIs: the lowest free from 4096, kept with the network, reused once freed.
        assert_eq!((first["a"].vni, first["b"].vni), (4096, 4097));
        assert_eq!((second["b"].vni, second["c"].vni), (4097, 4096));
        // An allocation recorded before VNIs were gets one, not a taken one.
        let mut old = second.clone();
        old.get_mut("c").unwrap().vni = 0;
        let third = allocate_subnets(
            &[network("b", None), network("c", None)],
            &old,
            &nodes,
            &small,
        )
        .unwrap();
        assert_eq!((third["b"].vni, third["c"].vni), (4097, 4096));
    }

    #[test]
    fn gateways_are_host_addresses_of_the_subnet() {
        let mut spec = network("g", Some("10.1.0.0/24")).spec;
        spec.gateway = Some("10.1.0.254".into());
        let subnet: Ipv4Net = "10.1.0.0/24".parse().unwrap();
        assert_eq!(gateway_of(&spec, subnet), Ok("10.1.0.254".parse().unwrap()));
        spec.gateway = Some("10.1.1.1".into());
        assert_eq!(
            gateway_of(&spec, subnet),
            Err("network g: gateway 10.1.1.1 is not a host address of subnet 10.1.0.0/24".into())
        );
    }

    #[test]
    fn addresses_are_the_lowest_free_host_but_the_gateway() {
        let allocation = NetworkAllocation {
            subnet: "10.1.0.0/30".parse().unwrap(),
            gateway: "10.1.0.1".parse().unwrap(),
            vni: 4096,
        };
        let mut taken = BTreeSet::new();
        assert_eq!(
            free_address(&allocation, &taken),
            Some("10.1.0.2".parse().unwrap())
        );
        taken.insert("10.1.0.2".parse().unwrap());
        // A /30 has two hosts: the gateway and one task.
        assert_eq!(free_address(&allocation, &taken), None);
    }

    #[test]
    fn drivers_other_than_overlay_are_refused_with_the_reason() {
        let mut spec = network("n", None).spec;
        assert!(spec_reasons(&spec).is_empty());
        spec.driver = "bridge".into();
        assert_eq!(
            spec_reasons(&spec),
            [
                "network n: the bridge driver is local to one node; cluster networks use the overlay driver"
            ]
        );
        spec.driver = "macvlan2".into();
        assert!(spec_reasons(&spec)[0].contains("unknown driver \"macvlan2\""));
        spec.driver = "overlay".into();
        spec.name = "-bad".into();
        assert!(spec_reasons(&spec)[0].contains("invalid name"));
    }

    fn service(name: &str, mode: EndpointMode, networks: &[&str]) -> Object<ServiceSpec> {
        let mut spec = crate::deploy::flags::load_service_document(
            name,
            serde_json::json!({ "image": "nginx" }),
        )
        .unwrap();
        spec.endpoint.mode = mode;
        spec.task.networks = networks
            .iter()
            .map(|n| swarm_api::spec::NetworkAttachment {
                target: (*n).into(),
                aliases: Vec::new(),
            })
            .collect();
        Object {
            id: Some(format!("id-{name}")),
            origin: Default::default(),
            spec,
        }
    }

    fn vips_of(
        after: &BTreeMap<String, Vec<NetworkAddress>>,
        service: &str,
    ) -> Vec<(String, String)> {
        after
            .get(&format!("id-{service}"))
            .into_iter()
            .flatten()
            .map(|v| (v.network.clone(), v.address.to_string()))
            .collect()
    }

    fn pair(network: &str, address: &str) -> (String, String) {
        (network.to_owned(), address.to_owned())
    }

    #[test]
    fn vips_skip_gateways_and_tasks_are_kept_and_freed_with_their_service() {
        let allocation = |subnet: &str| NetworkAllocation {
            subnet: subnet.parse().unwrap(),
            gateway: subnet.parse::<Ipv4Net>().unwrap().hosts().next().unwrap(),
            vni: 4096,
        };
        let allocations: BTreeMap<String, NetworkAllocation> = [
            ("n".to_owned(), allocation("10.1.0.0/24")),
            ("m".to_owned(), allocation("10.2.0.0/24")),
        ]
        .into();
        let tasks: BTreeMap<String, BTreeSet<Ipv4Addr>> =
            [("n".to_owned(), ["10.1.0.2".parse().unwrap()].into())].into();
        let services = [
            service("c", EndpointMode::Vip, &["n", "m"]),
            service("a", EndpointMode::Vip, &["n", "unallocated"]),
            service("b", EndpointMode::Dnsrr, &["n"]),
        ];
        let (first, reasons) = allocate_vips(&services, &allocations, &BTreeMap::new(), &tasks);
        assert!(reasons.is_empty(), "{reasons:?}");
        // Services in name order; the gateway (.1) and the task's .2 are skipped; a
        // dnsrr service and a network without an allocation get none.
        assert_eq!(vips_of(&first, "a"), [pair("n", "10.1.0.3")]);
        assert_eq!(
            vips_of(&first, "c"),
            [pair("n", "10.1.0.4"), pair("m", "10.2.0.2")]
        );
        assert!(!first.contains_key("id-b"));
        // "a" goes, "c" leaves n, "b" turns vip, a new "0" comes: "c" keeps its address on
        // m, the new ones take the lowest free ("a"'s, freed), kept ones are never taken.
        let services = [
            service("c", EndpointMode::Vip, &["m"]),
            service("b", EndpointMode::Vip, &["n"]),
            service("0", EndpointMode::Vip, &["m"]),
        ];
        let (second, reasons) = allocate_vips(&services, &allocations, &first, &tasks);
        assert!(reasons.is_empty(), "{reasons:?}");
        assert_eq!(vips_of(&second, "c"), [pair("m", "10.2.0.2")]);
        assert_eq!(vips_of(&second, "0"), [pair("m", "10.2.0.3")]);
        assert_eq!(vips_of(&second, "b"), [pair("n", "10.1.0.3")]);
        assert!(!second.contains_key("id-a"));
        // A network whose subnet changed under a kept VIP gives a new one; turned dnsrr,
        // a service holds none.
        let mut moved = allocations.clone();
        moved.insert("m".into(), allocation("10.3.0.0/24"));
        let services = [
            service("c", EndpointMode::Vip, &["m"]),
            service("0", EndpointMode::Dnsrr, &["m"]),
        ];
        let (third, _) = allocate_vips(&services, &moved, &second, &tasks);
        assert_eq!(vips_of(&third, "c"), [pair("m", "10.3.0.2")]);
        assert!(!third.contains_key("id-0"));
    }

    #[test]
    fn a_full_subnet_gives_no_vip_and_names_the_service_and_network() {
        let allocations: BTreeMap<String, NetworkAllocation> = [(
            "n".to_owned(),
            NetworkAllocation {
                subnet: "10.1.0.0/30".parse().unwrap(),
                gateway: "10.1.0.1".parse().unwrap(),
                vni: 4096,
            },
        )]
        .into();
        let tasks: BTreeMap<String, BTreeSet<Ipv4Addr>> =
            [("n".to_owned(), ["10.1.0.2".parse().unwrap()].into())].into();
        let services = [service("s", EndpointMode::Vip, &["n"])];
        let (after, reasons) = allocate_vips(&services, &allocations, &BTreeMap::new(), &tasks);
        assert!(after.is_empty());
        assert_eq!(
            reasons,
            ["service s: network n (10.1.0.0/30) has no free address left for its virtual IP"]
        );
        // Tasks skip VIPs too.
        let vips = [(
            "id-s".to_owned(),
            vec![NetworkAddress {
                network: "n".into(),
                address: "10.1.0.2".parse().unwrap(),
            }],
        )]
        .into();
        let used = addresses_in_use(std::iter::empty(), &vips);
        assert_eq!(free_address(&allocations["n"], &used["n"]), None);
    }
}

/// The allocations as the store makes them in its apply.
#[cfg(test)]
mod store_tests {
    use super::super::Store;
    use super::super::fixtures::{apply_plan, cluster, stack_actions};
    use swarm_api::plan::{Action, Kind, ObjectSpec, Op};
    use swarm_api::store::{Command, Outcome, TaskChange};
    use swarm_api::task::{DesiredState, Task, TaskState, TaskStatus};

    /// The plan of a stack `web` whose service `site` (endpoint mode `mode`, with `image`)
    /// attaches to network `web_back` (`subnet` when given).
    fn stack_plan(subnet: Option<&str>, mode: &str, image: &str) -> Vec<Action> {
        let ipam = subnet
            .map(|s| format!("\n    ipam:\n      config:\n        - subnet: {s}"))
            .unwrap_or_default();
        let text = format!(
            "services:\n  site:\n    image: {image}\n    deploy: {{endpoint_mode: {mode}}}\n    networks: [back]\nnetworks:\n  back:{}\n",
            if ipam.is_empty() {
                " {}".to_owned()
            } else {
                ipam
            }
        );
        stack_actions("web", &text)
    }

    fn task(store: &Store, id: &str) -> Task {
        let service = &store.data().objects.services[0];
        Task {
            id: id.into(),
            service_id: service.id.clone().unwrap(),
            service_name: service.spec.name.clone(),
            slot: Some(1),
            node_id: None,
            spec: service.spec.task.clone(),
            desired: DesiredState::Running,
            status: TaskStatus::new(TaskState::New, 1),
            created_at: 1,
            started_at: None,
            networks: Vec::new(),
        }
    }

    fn write(store: &mut Store, index: u64, changes: Vec<TaskChange>) {
        let expected_version = store.data().tasks_version;
        let outcome = store.apply_command(
            index,
            Command::WriteTasks {
                expected_version,
                changes,
            },
        );
        assert_eq!(outcome, Outcome::Applied { version: index });
    }

    fn address(store: &Store, id: &str) -> Option<String> {
        let task = &store.data().tasks[id];
        assert!(task.networks.iter().all(|n| n.network == "web_back"));
        task.networks.first().map(|n| n.address.to_string())
    }

    #[test]
    fn tasks_get_unique_addresses_freed_when_they_are_removed_and_none_when_exhausted() {
        let mut store = Store::default();
        store.apply_command(1, cluster());
        // A /29: gateway .1, hosts .2 to .6.
        let outcome = apply_plan(
            &mut store,
            2,
            stack_plan(Some("10.20.0.0/29"), "dnsrr", "nginx"),
        );
        assert_eq!(outcome, Outcome::Applied { version: 2 });
        let allocation = store.data().network_allocations["web_back"];
        assert_eq!(allocation.subnet.to_string(), "10.20.0.0/29");
        assert_eq!(allocation.gateway.to_string(), "10.20.0.1");
        let creates = |store: &Store, ids: &[&str]| {
            ids.iter()
                .map(|id| TaskChange::Create(Box::new(task(store, id))))
                .collect::<Vec<_>>()
        };
        let changes = creates(&store, &["t1", "t2"]);
        write(&mut store, 3, changes);
        assert_eq!(address(&store, "t1").as_deref(), Some("10.20.0.2"));
        assert_eq!(address(&store, "t2").as_deref(), Some("10.20.0.3"));
        let changes = creates(&store, &["t3", "t4", "t5", "t6"]);
        write(&mut store, 4, changes);
        assert_eq!(address(&store, "t5").as_deref(), Some("10.20.0.6"));
        // The subnet is full: the sixth task fails, saying why.
        let t6 = &store.data().tasks["t6"];
        assert_eq!(t6.status.state, TaskState::Rejected);
        assert_eq!(
            t6.status.error.as_deref(),
            Some("network web_back (10.20.0.0/29) has no free address left")
        );
        assert!(t6.networks.is_empty());
        // Stopped, t2's address is given again (and t6 held none).
        let changes = vec![
            TaskChange::Status {
                id: "t2".into(),
                status: TaskStatus::new(TaskState::Failed, 2),
            },
            TaskChange::Remove { id: "t6".into() },
        ];
        write(&mut store, 5, changes);
        let changes = creates(&store, &["t7"]);
        write(&mut store, 6, changes);
        assert_eq!(address(&store, "t7").as_deref(), Some("10.20.0.3"));
        // Removed from the store, t4's is given again too; replicas decide the same: a store restored from a snapshot gives the same next
        // address as the one that applied the log.
        let mut replica = Store::default();
        super::super::StateMachine::restore(
            &mut replica,
            &super::super::StateMachine::snapshot(&store),
        );
        write(&mut store, 7, vec![TaskChange::Remove { id: "t4".into() }]);
        write(
            &mut replica,
            7,
            vec![TaskChange::Remove { id: "t4".into() }],
        );
        let changes = creates(&store, &["t8"]);
        write(&mut store, 8, changes.clone());
        write(&mut replica, 8, changes);
        assert_eq!(address(&store, "t8").as_deref(), Some("10.20.0.5"));
        assert_eq!(store.data().tasks, replica.data().tasks);
    }

    #[test]
    fn networks_get_pool_subnets_released_with_them_and_removal_in_use_is_refused() {
        let mut store = Store::default();
        store.apply_command(1, cluster());
        assert_eq!(
            apply_plan(&mut store, 2, stack_plan(None, "vip", "nginx")),
            Outcome::Applied { version: 2 }
        );
        let subnet = store.data().network_allocations["web_back"].subnet;
        assert_eq!(subnet.to_string(), "10.0.0.0/20");
        let remove = |kind: Kind, name: &str| Action {
            op: Op::Remove,
            kind,
            name: name.into(),
            origin: Default::default(),
            changes: Vec::new(),
            spec: None,
        };
        let Outcome::Rejected(rejection) =
            apply_plan(&mut store, 3, vec![remove(Kind::Network, "web_back")])
        else {
            panic!("removed while in use")
        };
        assert!(
            rejection
                .to_string()
                .contains("network web_back is in use by service web_site"),
            "{rejection}"
        );
        let outcome = apply_plan(
            &mut store,
            4,
            vec![
                remove(Kind::Service, "web_site"),
                remove(Kind::Network, "web_back"),
            ],
        );
        assert_eq!(outcome, Outcome::Applied { version: 4 });
        assert!(store.data().network_allocations.is_empty());
        // A network with its own subnet overlapping the nodes' pool is refused, naming both.
        let mut plan = stack_plan(Some("10.9.2.0/24"), "vip", "nginx");
        plan.retain(|a| a.kind == Kind::Network);
        let Outcome::Rejected(rejection) = apply_plan(&mut store, 5, plan) else {
            panic!("overlap accepted")
        };
        assert!(
            rejection.to_string().contains(
                "network web_back: subnet 10.9.2.0/24 overlaps the cluster's node address pool 10.9.0.0/22"
            ),
            "{rejection}"
        );
        // A bridge network is refused with the reason.
        let mut plan = stack_plan(None, "vip", "nginx");
        plan.retain(|a| a.kind == Kind::Network);
        if let Some(ObjectSpec::Network(spec)) = &mut plan[0].spec {
            spec.driver = "bridge".into();
        }
        let Outcome::Rejected(rejection) = apply_plan(&mut store, 6, plan) else {
            panic!("bridge accepted")
        };
        assert!(
            rejection
                .to_string()
                .contains("the bridge driver is local to one node"),
            "{rejection}"
        );
    }

    #[test]
    fn vips_are_kept_across_updates_freed_by_dnsrr_skipped_by_tasks_and_refused_when_full() {
        let mut store = Store::default();
        store.apply_command(1, cluster());
        let outcome = apply_plan(
            &mut store,
            2,
            stack_plan(Some("10.20.0.0/29"), "vip", "nginx"),
        );
        assert_eq!(outcome, Outcome::Applied { version: 2 });
        // The service's action of the stack's plan, as an update of the one created.
        let update = |mode: &str| {
            let mut plan = stack_plan(Some("10.20.0.0/29"), mode, "nginx:2");
            plan.retain(|a| a.kind == Kind::Service);
            plan[0].op = Op::Update;
            plan
        };
        let vip = |store: &Store| {
            let id = store.data().objects.services[0].id.clone().unwrap();
            store.data().service_vips.get(&id).map(|vips| {
                assert!(vips.iter().all(|v| v.network == "web_back"));
                vips.iter()
                    .map(|v| v.address.to_string())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(vip(&store), Some(vec!["10.20.0.2".to_owned()]));
        // Tasks take the hosts after it.
        let changes = (1..=4)
            .map(|i| TaskChange::Create(Box::new(task(&store, &format!("t{i}")))))
            .collect();
        write(&mut store, 3, changes);
        assert_eq!(address(&store, "t1").as_deref(), Some("10.20.0.3"));
        assert_eq!(address(&store, "t4").as_deref(), Some("10.20.0.6"));
        // An update keeps it.
        let outcome = apply_plan(&mut store, 4, update("vip"));
        assert_eq!(outcome, Outcome::Applied { version: 4 });
        assert_eq!(vip(&store), Some(vec!["10.20.0.2".to_owned()]));
        // Turned dnsrr, the service frees it; back to vip, with every host taken by
        // tasks, the plan is refused naming the service and the network.
        let outcome = apply_plan(&mut store, 5, update("dnsrr"));
        assert_eq!(outcome, Outcome::Applied { version: 5 });
        assert_eq!(vip(&store), None);
        let changes = vec![TaskChange::Create(Box::new(task(&store, "t5")))];
        write(&mut store, 6, changes);
        assert_eq!(address(&store, "t5").as_deref(), Some("10.20.0.2"));
        let Outcome::Rejected(rejection) = apply_plan(&mut store, 7, update("vip")) else {
            panic!("a VIP given in a full subnet")
        };
        assert!(
            rejection.to_string().contains(
                "service web_site: network web_back (10.20.0.0/29) has no free address left for its virtual IP"
            ),
            "{rejection}"
        );
        assert_eq!(vip(&store), None);
        // Removed, a service leaves no VIP behind.
        let outcome = apply_plan(
            &mut store,
            8,
            update("vip")
                .into_iter()
                .map(|mut a| {
                    a.op = Op::Remove;
                    a.spec = None;
                    a
                })
                .collect(),
        );
        assert_eq!(outcome, Outcome::Applied { version: 8 });
        assert!(store.data().service_vips.is_empty());
    }
}
