//! The names a node's DNS server answers, pure: built from the node's [`NetworkView`] and
//! the addresses its tasks ask from, rebuilt whole at every change of either (a few
//! milliseconds for thousands of tasks), so a lookup is a hash probe per network.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use swarm_agent::worker::Asker as TaskAsker;

use swarm_api::endpoints::{NetworkEndpoints, NetworkView, ServiceEndpoint};
use swarm_api::spec::EndpointMode;

/// What a question asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    A,
    Aaaa,
    Ptr,
    /// Any other type: a known name has no record of it.
    Other,
}

/// The table's answer to one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The addresses of a known name, sorted; empty for a service none of whose tasks
    /// serves (the name exists, it has no address now).
    Addresses(Vec<Ipv4Addr>),
    /// The name of a known address (a reverse lookup).
    Name(String),
    /// A known name asked for a type it has no record of (AAAA: tasks have IPv4 only).
    NoData,
    /// Not a name (or address) of the asker's networks: the node's resolvers may know it.
    Forward,
    /// The asker is no task of this node.
    Refused,
}

/// The answers of one node, by the task asking.
#[derive(Debug, Default)]
pub struct Table {
    networks: Vec<NetworkNames>,
    /// By the address a task asks from (its `eth0`).
    askers: HashMap<Ipv4Addr, Asker>,
}

#[derive(Debug, Default)]
struct Asker {
    /// Indexes into `Table::networks`.
    networks: Vec<usize>,
    /// The stack of the asker's service, when it is in one.
    stack: Option<Arc<str>>,
    /// Its service's nameservers, for the names the table does not know; empty: the
    /// node's.
    forwarders: Vec<IpAddr>,
}

/// One network's names, lower-case, without a trailing dot.
#[derive(Debug, Default)]
struct NetworkNames {
    forward: HashMap<String, Vec<Entry>>,
    reverse: HashMap<Ipv4Addr, String>,
}

/// What one object (a service, its tasks, a task) gives a name on a network.
#[derive(Debug)]
struct Entry {
    /// The stack of the service the name belongs to.
    stack: Option<Arc<str>>,
    addresses: Vec<Ipv4Addr>,
}

impl Table {
    /// The table of `view`, for the tasks asking from `askers` (a task's `eth0` address →
    /// the task). A task asks about the networks the view lists it on.
    pub fn new(view: &NetworkView, askers: &BTreeMap<Ipv4Addr, TaskAsker>) -> Table {
        let mut networks = Vec::with_capacity(view.networks.len());
        let mut by_task: HashMap<&str, Asker> = HashMap::new();
        for (index, network) in view.networks.values().enumerate() {
            networks.push(NetworkNames::new(network));
            for (task_id, task) in &network.tasks {
                let asker = by_task.entry(task_id.as_str()).or_default();
                asker.networks.push(index);
                if asker.stack.is_none() {
                    asker.stack = network.services.get(&task.service_id).and_then(stack_of);
                }
            }
        }
        let askers = askers
            .iter()
            .map(|(address, task)| {
                let mut asker = by_task.remove(task.task_id.as_str()).unwrap_or_default();
                asker.forwarders = task.nameservers.clone();
                (*address, asker)
            })
            .collect();
        Table { networks, askers }
    }

    /// Where the questions of the task at `source` that the table does not answer go: its
    /// service's nameservers; empty for the node's resolvers.
    pub fn forwarders(&self, source: Ipv4Addr) -> &[IpAddr] {
        self.askers
            .get(&source)
            .map_or(&[], |asker| asker.forwarders.as_slice())
    }

    /// The answer to the task at `source` asking `name` (any case, with or without the
    /// trailing dot) for `kind`.
    pub fn answer(&self, source: Ipv4Addr, name: &str, kind: Kind) -> Answer {
        let Some(asker) = self.askers.get(&source) else {
            return Answer::Refused;
        };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if kind == Kind::Ptr
            && let Some(address) = reverse_address(&name)
        {
            return asker
                .networks
                .iter()
                .find_map(|&n| self.networks[n].reverse.get(&address))
                .map_or(Answer::Forward, |name| Answer::Name(name.clone()));
        }
        let entries: Vec<&Entry> = asker
            .networks
            .iter()
            .filter_map(|&n| self.networks[n].forward.get(&name))
            .flatten()
            .collect();
        if entries.is_empty() {
            return Answer::Forward;
        }
        if kind != Kind::A {
            return Answer::NoData;
        }
        // A name several services answer to on the asker's networks (a short name on a
        // network that two stacks share) means the asker's own stack's service first.
        let own_stack = entries
            .iter()
            .any(|e| e.stack.is_some() && e.stack == asker.stack);
        let mut addresses: Vec<Ipv4Addr> = entries
            .iter()
            .filter(|e| !own_stack || e.stack == asker.stack)
            .flat_map(|e| e.addresses.iter().copied())
            .collect();
        addresses.sort();
        addresses.dedup();
        Answer::Addresses(addresses)
    }
}

impl NetworkNames {
    fn new(network: &NetworkEndpoints) -> NetworkNames {
        let mut names = NetworkNames::default();
        for (service_id, service) in &network.services {
            let stack = stack_of(service);
            let tasks = network.serving_addresses(service_id);
            let addresses = match (service.mode, service.vip) {
                (EndpointMode::Vip, Some(vip)) => {
                    names.reverse.insert(vip, service.name.clone());
                    vec![vip]
                }
                // A `vip` service whose address the store has not given yet answers as
                // `dnsrr` meanwhile: reachable by name, unbalanced.
                (EndpointMode::Vip, None) | (EndpointMode::Dnsrr, _) => tasks.clone(),
            };
            for name in std::iter::once(&service.name).chain(&service.aliases) {
                let name = name.to_ascii_lowercase();
                names.add(format!("tasks.{name}"), &stack, tasks.clone());
                names.add(name, &stack, addresses.clone());
            }
        }
        for task in network.tasks.values() {
            let stack = network.services.get(&task.service_id).and_then(stack_of);
            names.add(task.name.to_ascii_lowercase(), &stack, vec![task.address]);
            names.reverse.insert(task.address, task.name.clone());
        }
        names
    }

    fn add(&mut self, name: String, stack: &Option<Arc<str>>, addresses: Vec<Ipv4Addr>) {
        self.forward.entry(name).or_default().push(Entry {
            stack: stack.clone(),
            addresses,
        });
    }
}

/// A stack's service is named `<stack>_<short name>` and answers to its short name on the
/// stack's networks (an alias of its attachment), which names the stack.
fn stack_of(service: &ServiceEndpoint) -> Option<Arc<str>> {
    service.aliases.iter().find_map(|alias| {
        let stack = service
            .name
            .strip_suffix(alias.as_str())?
            .strip_suffix('_')?;
        (!stack.is_empty()).then(|| Arc::from(stack))
    })
}

/// The address of a reverse name, `4.3.2.1.in-addr.arpa` → 1.2.3.4.
fn reverse_address(name: &str) -> Option<Ipv4Addr> {
    let digits = name.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let mut parts = digits.split('.');
    for octet in octets.iter_mut().rev() {
        *octet = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// A task that asks with no nameservers of its service, for tests.
#[cfg(test)]
pub(super) fn asker(task_id: &str) -> TaskAsker {
    TaskAsker {
        task_id: task_id.to_owned(),
        nameservers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_api::endpoints::TaskEndpoint;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn service(
        name: &str,
        aliases: &[&str],
        mode: EndpointMode,
        vip: Option<&str>,
    ) -> ServiceEndpoint {
        ServiceEndpoint {
            name: name.to_owned(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            mode,
            vip: vip.map(ip),
        }
    }

    fn task(service_id: &str, name: &str, address: &str, serving: bool) -> TaskEndpoint {
        TaskEndpoint {
            service_id: service_id.to_owned(),
            node_id: "n1".to_owned(),
            vtep: None,
            address: ip(address),
            name: name.to_owned(),
            serving,
        }
    }

    fn network(
        id: &str,
        subnet: &str,
        services: Vec<(&str, ServiceEndpoint)>,
        tasks: Vec<(&str, TaskEndpoint)>,
    ) -> NetworkEndpoints {
        let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
        NetworkEndpoints {
            id: id.to_owned(),
            vni: 4096,
            gateway: subnet.hosts().next().unwrap(),
            subnet,
            internal: false,
            services: services
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            tasks: tasks.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    /// Two stacks: `vote` (back in vip mode with 2 serving tasks and a stopping one, db in
    /// dnsrr mode, a client) on `vote_default`, and `shop` (its own `back`) on
    /// `shop_default`; `vote_back` and `shop_web` also share the external `public`.
    fn view() -> NetworkView {
        let vote = network(
            "nv",
            "10.10.0.0/24",
            vec![
                (
                    "s-back",
                    service("vote_back", &["back"], EndpointMode::Vip, Some("10.10.0.2")),
                ),
                (
                    "s-db",
                    service("vote_db", &["db", "database"], EndpointMode::Dnsrr, None),
                ),
                (
                    "s-client",
                    service(
                        "vote_client",
                        &["client"],
                        EndpointMode::Vip,
                        Some("10.10.0.3"),
                    ),
                ),
            ],
            vec![
                ("t-back1", task("s-back", "vote_back.1", "10.10.0.11", true)),
                ("t-back2", task("s-back", "vote_back.2", "10.10.0.12", true)),
                (
                    "t-back3",
                    task("s-back", "vote_back.3", "10.10.0.13", false),
                ),
                ("t-db1", task("s-db", "vote_db.1", "10.10.0.21", true)),
                ("t-db2", task("s-db", "vote_db.2", "10.10.0.22", true)),
                (
                    "t-client",
                    task("s-client", "vote_client.1", "10.10.0.31", true),
                ),
            ],
        );
        let shop = network(
            "ns",
            "10.20.0.0/24",
            vec![
                (
                    "s-sback",
                    service("shop_back", &["back"], EndpointMode::Vip, Some("10.20.0.2")),
                ),
                (
                    "s-web",
                    service("shop_web", &["web"], EndpointMode::Vip, Some("10.20.0.3")),
                ),
            ],
            vec![
                (
                    "t-sback",
                    task("s-sback", "shop_back.1", "10.20.0.11", true),
                ),
                ("t-web", task("s-web", "shop_web.1", "10.20.0.21", true)),
            ],
        );
        // On an external network the stacks' services carry no short-name alias of their
        // stack, except where the stack file gives one.
        let public = network(
            "np",
            "10.30.0.0/24",
            vec![
                (
                    "s-back",
                    service("vote_back", &["back"], EndpointMode::Vip, Some("10.30.0.2")),
                ),
                (
                    "s-web",
                    service(
                        "shop_web",
                        &["web", "back"],
                        EndpointMode::Vip,
                        Some("10.30.0.3"),
                    ),
                ),
            ],
            vec![
                ("t-back1", task("s-back", "vote_back.1", "10.30.0.11", true)),
                ("t-back2", task("s-back", "vote_back.2", "10.30.0.12", true)),
                ("t-web", task("s-web", "shop_web.1", "10.30.0.21", true)),
            ],
        );
        NetworkView {
            networks: [
                ("vote_default", vote),
                ("shop_default", shop),
                ("public", public),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            mesh: Default::default(),
        }
    }

    const CLIENT: &str = "172.16.0.2";
    const SHOP_WEB: &str = "172.16.0.3";
    const LONER: &str = "172.16.0.4";

    fn table() -> Table {
        let askers = [
            (ip(CLIENT), "t-client"),
            (ip(SHOP_WEB), "t-web"),
            (ip(LONER), "t-on-no-network"),
        ]
        .into_iter()
        .map(|(a, t)| (a, asker(t)))
        .collect();
        Table::new(&view(), &askers)
    }

    fn addresses(list: &[&str]) -> Answer {
        Answer::Addresses(list.iter().map(|a| ip(a)).collect())
    }

    #[test]
    fn names_answer_by_the_askers_networks() {
        let table = table();
        let cases: &[(&str, &str, Kind, Answer)] = &[
            // vip mode: the VIP; the full name and the short name alike, any case and dot.
            (CLIENT, "back", Kind::A, addresses(&["10.10.0.2"])),
            (CLIENT, "vote_back", Kind::A, addresses(&["10.10.0.2"])),
            (CLIENT, "Vote_Back.", Kind::A, addresses(&["10.10.0.2"])),
            // tasks.NAME: the serving tasks only (back.3 is stopping).
            (
                CLIENT,
                "tasks.back",
                Kind::A,
                addresses(&["10.10.0.11", "10.10.0.12"]),
            ),
            (
                CLIENT,
                "tasks.vote_back",
                Kind::A,
                addresses(&["10.10.0.11", "10.10.0.12"]),
            ),
            // dnsrr: the serving tasks; an alias too.
            (
                CLIENT,
                "db",
                Kind::A,
                addresses(&["10.10.0.21", "10.10.0.22"]),
            ),
            (
                CLIENT,
                "database",
                Kind::A,
                addresses(&["10.10.0.21", "10.10.0.22"]),
            ),
            // A task's display name, serving or not.
            (CLIENT, "vote_back.3", Kind::A, addresses(&["10.10.0.13"])),
            // Another stack's network: not the asker's names.
            (CLIENT, "shop_back", Kind::A, Answer::Forward),
            (CLIENT, "web", Kind::A, Answer::Forward),
            (CLIENT, "example.com", Kind::A, Answer::Forward),
            // AAAA and other types of a known name: no data, not "no such name".
            (CLIENT, "back", Kind::Aaaa, Answer::NoData),
            (CLIENT, "tasks.db", Kind::Other, Answer::NoData),
            (CLIENT, "example.com", Kind::Aaaa, Answer::Forward),
            // Reverse: tasks and VIPs of shared networks.
            (
                CLIENT,
                "11.0.10.10.in-addr.arpa",
                Kind::Ptr,
                Answer::Name("vote_back.1".into()),
            ),
            (
                CLIENT,
                "2.0.10.10.IN-ADDR.ARPA.",
                Kind::Ptr,
                Answer::Name("vote_back".into()),
            ),
            (
                CLIENT,
                "11.0.20.10.in-addr.arpa",
                Kind::Ptr,
                Answer::Forward,
            ),
            (CLIENT, "1.0.0.127.in-addr.arpa", Kind::Ptr, Answer::Forward),
            (CLIENT, "back", Kind::Ptr, Answer::NoData),
            // A task on no overlay network: everything goes to the node's resolvers.
            (LONER, "back", Kind::A, Answer::Forward),
            // Not a task of this node.
            ("172.16.0.99", "back", Kind::A, Answer::Refused),
        ];
        for (source, name, kind, expected) in cases {
            assert_eq!(
                &table.answer(ip(source), name, *kind),
                expected,
                "{source} {name} {kind:?}"
            );
        }
    }

    #[test]
    fn a_name_two_stacks_share_means_the_askers_own_stack_first() {
        let table = table();
        // shop_web is on shop_default (shop's `back`) and public (vote's `back`, and its
        // own alias `back` there): shop's services win.
        assert_eq!(
            table.answer(ip(SHOP_WEB), "back", Kind::A),
            addresses(&["10.20.0.2", "10.30.0.3"])
        );
        // A name of another stack only: still answered (a shared network's name).
        assert_eq!(
            table.answer(ip(SHOP_WEB), "vote_back", Kind::A),
            addresses(&["10.30.0.2"])
        );
        assert_eq!(
            table.answer(ip(SHOP_WEB), "tasks.vote_back", Kind::A),
            addresses(&["10.30.0.11", "10.30.0.12"])
        );
    }

    #[test]
    fn a_service_without_serving_tasks_is_known_but_empty() {
        let mut view = view();
        let vote = view.networks.get_mut("vote_default").unwrap();
        for task in vote.tasks.values_mut().filter(|t| t.service_id == "s-db") {
            task.serving = false;
        }
        // Its VIP is not given yet: dnsrr's answer meanwhile.
        vote.services.get_mut("s-back").unwrap().vip = None;
        let askers = [(ip(CLIENT), asker("t-client"))].into_iter().collect();
        let table = Table::new(&view, &askers);
        assert_eq!(table.answer(ip(CLIENT), "db", Kind::A), addresses(&[]));
        assert_eq!(
            table.answer(ip(CLIENT), "tasks.db", Kind::A),
            addresses(&[])
        );
        assert_eq!(
            table.answer(ip(CLIENT), "back", Kind::A),
            addresses(&["10.10.0.11", "10.10.0.12"])
        );
    }

    #[test]
    fn stacks_and_reverse_names_are_read_as_docker_writes_them() {
        let cases: &[(&str, &[&str], Option<&str>)] = &[
            ("vote_redis", &["redis"], Some("vote")),
            ("vote_redis", &["cache", "redis"], Some("vote")),
            ("my_app_web", &["web"], Some("my_app")),
            ("redis", &["redis"], None),
            ("_redis", &["redis"], None),
            ("voteredis", &["redis"], None),
            ("web", &[], None),
        ];
        for (name, aliases, stack) in cases {
            let got = stack_of(&service(name, aliases, EndpointMode::Vip, None));
            assert_eq!(got.as_deref(), *stack, "{name} {aliases:?}");
        }
        assert_eq!(reverse_address("4.3.2.1.in-addr.arpa"), Some(ip("1.2.3.4")));
        for bad in [
            "3.2.1.in-addr.arpa",
            "5.4.3.2.1.in-addr.arpa",
            "x.3.2.1.in-addr.arpa",
            "256.3.2.1.in-addr.arpa",
            "4.3.2.1.ip6.arpa",
        ] {
            assert_eq!(reverse_address(bad), None, "{bad}");
        }
    }
}
