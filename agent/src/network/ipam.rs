//! The addresses of one node's tasks, leased from the node's subnet (which the managers
//! lease to the node from the cluster's pool, by default a /24 of 198.19.0.0/16). Pure: the
//! leases live in memory; after a daemon restart they are restored from the task
//! namespaces themselves (`task.rs` reads each one's address back), so no lease file can
//! disagree with what the kernel holds.
//!
//! In a subnet, the first address is the network's, the second the gateway (the node's
//! bridge) and the last the broadcast: tasks get the addresses in between.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("subnet {subnet} has host bits set: give the node the whole network {network}")]
    HostBitsSet { subnet: Ipv4Net, network: Ipv4Net },
    #[error(
        "subnet {0} has no room for a gateway and a task: give the node a /30 or larger subnet"
    )]
    TooSmall(Ipv4Net),
    #[error(
        "subnet {subnet} is exhausted: its {capacity} task addresses are all leased; \
         release a task's address or give the node a larger subnet"
    )]
    Exhausted { subnet: Ipv4Net, capacity: u32 },
    #[error("task {task} already holds address {address}: release it before leasing another")]
    TaskAlreadyLeased { task: String, address: Ipv4Addr },
    #[error("address {address} is leased to task {holder}: task {task} cannot have it too")]
    AddressTaken {
        address: Ipv4Addr,
        holder: String,
        task: String,
    },
    #[error(
        "address {address} of task {task} is not a task address of subnet {subnet} \
         (outside it, or its network, gateway or broadcast address)"
    )]
    NotATaskAddress {
        address: Ipv4Addr,
        task: String,
        subnet: Ipv4Net,
    },
}

/// The leases of one node's subnet.
#[derive(Debug, Clone)]
pub struct Ipam {
    subnet: Ipv4Net,
    by_address: BTreeMap<Ipv4Addr, String>,
    by_task: HashMap<String, Ipv4Addr>,
    /// The address leased last: the next search starts after it, so a released address is
    /// not handed out again at once (a peer's ARP cache may still map it to the old task).
    last: u32,
}

impl Ipam {
    pub fn new(subnet: Ipv4Net) -> Result<Self, IpamError> {
        if subnet.trunc() != subnet {
            return Err(IpamError::HostBitsSet {
                subnet,
                network: subnet.trunc(),
            });
        }
        if subnet.prefix_len() > 30 {
            return Err(IpamError::TooSmall(subnet));
        }
        Ok(Ipam {
            subnet,
            by_address: BTreeMap::new(),
            by_task: HashMap::new(),
            last: u32::from(subnet.network()) + 1,
        })
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The bridge's address: the first after the network's.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + 1)
    }

    /// How many tasks the subnet can hold.
    pub fn capacity(&self) -> u32 {
        self.last_task_address() - self.first_task_address() + 1
    }

    /// The address held by `task`, if any.
    pub fn leased(&self, task: &str) -> Option<Ipv4Addr> {
        self.by_task.get(task).copied()
    }

    /// A free address for `task`, which must not hold one already.
    pub fn lease(&mut self, task: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(&address) = self.by_task.get(task) {
            return Err(IpamError::TaskAlreadyLeased {
                task: task.to_owned(),
                address,
            });
        }
        let capacity = self.capacity();
        if self.by_task.len() >= capacity as usize {
            return Err(IpamError::Exhausted {
                subnet: self.subnet,
                capacity,
            });
        }
        let (first, last) = (self.first_task_address(), self.last_task_address());
        // Not full, so the walk meets a free address within `capacity` steps.
        let mut candidate = self.last;
        let address = loop {
            candidate = if candidate >= last || candidate < first {
                first
            } else {
                candidate + 1
            };
            let address = Ipv4Addr::from(candidate);
            if !self.by_address.contains_key(&address) {
                break address;
            }
        };
        self.last = candidate;
        self.insert(task, address);
        Ok(address)
    }

    /// Records that `task` holds `address` (found in its namespace after a restart).
    /// Restoring the same lease twice is harmless; any other double lease is refused.
    pub fn restore(&mut self, task: &str, address: Ipv4Addr) -> Result<(), IpamError> {
        let value = u32::from(address);
        if !(self.first_task_address()..=self.last_task_address()).contains(&value) {
            return Err(IpamError::NotATaskAddress {
                address,
                task: task.to_owned(),
                subnet: self.subnet,
            });
        }
        match (self.by_task.get(task), self.by_address.get(&address)) {
            (Some(&held), _) if held == address => Ok(()),
            (Some(&held), _) => Err(IpamError::TaskAlreadyLeased {
                task: task.to_owned(),
                address: held,
            }),
            (None, Some(holder)) => Err(IpamError::AddressTaken {
                address,
                holder: holder.clone(),
                task: task.to_owned(),
            }),
            (None, None) => {
                self.insert(task, address);
                Ok(())
            }
        }
    }

    /// Frees the address of `task`; `None` when it held none.
    pub fn release(&mut self, task: &str) -> Option<Ipv4Addr> {
        let address = self.by_task.remove(task)?;
        self.by_address.remove(&address);
        Some(address)
    }

    fn insert(&mut self, task: &str, address: Ipv4Addr) {
        self.by_task.insert(task.to_owned(), address);
        self.by_address.insert(address, task.to_owned());
    }

    fn first_task_address(&self) -> u32 {
        u32::from(self.subnet.network()) + 2
    }

    fn last_task_address(&self) -> u32 {
        u32::from(self.subnet.broadcast()) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn subnets_are_checked() {
        // Each subnet, and its gateway and capacity or the refusal.
        type Case = (&'static str, Result<(&'static str, u32), IpamError>);
        let cases: &[Case] = &[
            ("198.19.3.0/24", Ok(("198.19.3.1", 253))),
            ("10.0.0.0/8", Ok(("10.0.0.1", (1 << 24) - 3))),
            ("198.19.3.4/30", Ok(("198.19.3.5", 1))),
            (
                "198.19.3.1/24",
                Err(IpamError::HostBitsSet {
                    subnet: net("198.19.3.1/24"),
                    network: net("198.19.3.0/24"),
                }),
            ),
            (
                "198.19.3.0/31",
                Err(IpamError::TooSmall(net("198.19.3.0/31"))),
            ),
            (
                "198.19.3.0/32",
                Err(IpamError::TooSmall(net("198.19.3.0/32"))),
            ),
        ];
        for (subnet, expected) in cases {
            let got = Ipam::new(net(subnet)).map(|ipam| (ipam.gateway(), ipam.capacity()));
            let expected = expected.clone().map(|(gw, capacity)| (ip(gw), capacity));
            assert_eq!(got, expected, "{subnet}");
        }
    }

    /// One step of a lease history and what it must answer.
    enum Step {
        Lease(&'static str, Result<&'static str, &'static str>),
        Release(&'static str, Option<&'static str>),
        Restore(&'static str, &'static str, Result<(), &'static str>),
    }

    #[test]
    fn lease_histories() {
        use Step::*;
        let cases: &[(&str, &str, &[Step])] = &[
            (
                "addresses in order, from the one after the gateway",
                "198.19.3.0/24",
                &[Lease("a", Ok("198.19.3.2")), Lease("b", Ok("198.19.3.3"))],
            ),
            (
                "a released address is not reused at once",
                "198.19.3.0/24",
                &[
                    Lease("a", Ok("198.19.3.2")),
                    Release("a", Some("198.19.3.2")),
                    Lease("b", Ok("198.19.3.3")),
                    Release("b", Some("198.19.3.3")),
                    Release("b", None),
                ],
            ),
            (
                "the search wraps around to free addresses",
                "198.19.3.0/29",
                &[
                    Lease("a", Ok("198.19.3.2")),
                    Lease("b", Ok("198.19.3.3")),
                    Lease("c", Ok("198.19.3.4")),
                    Lease("d", Ok("198.19.3.5")),
                    Lease("e", Ok("198.19.3.6")),
                    Lease(
                        "f",
                        Err(
                            "subnet 198.19.3.0/29 is exhausted: its 5 task addresses are all leased; release a task's address or give the node a larger subnet",
                        ),
                    ),
                    Release("c", Some("198.19.3.4")),
                    Lease("f", Ok("198.19.3.4")),
                ],
            ),
            (
                "a /30 holds one task",
                "198.19.3.4/30",
                &[
                    Lease("a", Ok("198.19.3.6")),
                    Lease(
                        "b",
                        Err(
                            "subnet 198.19.3.4/30 is exhausted: its 1 task addresses are all leased; release a task's address or give the node a larger subnet",
                        ),
                    ),
                ],
            ),
            (
                "a task leases once",
                "198.19.3.0/24",
                &[
                    Lease("a", Ok("198.19.3.2")),
                    Lease(
                        "a",
                        Err(
                            "task a already holds address 198.19.3.2: release it before leasing another",
                        ),
                    ),
                ],
            ),
            (
                "restored leases are kept and skipped by new leases",
                "198.19.3.0/24",
                &[
                    Restore("a", "198.19.3.2", Ok(())),
                    Restore("a", "198.19.3.2", Ok(())),
                    Restore("b", "198.19.3.4", Ok(())),
                    Lease("c", Ok("198.19.3.3")),
                    Lease("d", Ok("198.19.3.5")),
                ],
            ),
            (
                "double leases are refused on restore",
                "198.19.3.0/24",
                &[
                    Restore("a", "198.19.3.9", Ok(())),
                    Restore(
                        "b",
                        "198.19.3.9",
                        Err("address 198.19.3.9 is leased to task a: task b cannot have it too"),
                    ),
                    Restore(
                        "a",
                        "198.19.3.10",
                        Err(
                            "task a already holds address 198.19.3.9: release it before leasing another",
                        ),
                    ),
                ],
            ),
            (
                "restore refuses what is not a task address",
                "198.19.3.0/24",
                &[
                    Restore(
                        "a",
                        "198.19.4.2",
                        Err(
                            "address 198.19.4.2 of task a is not a task address of subnet 198.19.3.0/24 (outside it, or its network, gateway or broadcast address)",
                        ),
                    ),
                    Restore(
                        "a",
                        "198.19.3.0",
                        Err(
                            "address 198.19.3.0 of task a is not a task address of subnet 198.19.3.0/24 (outside it, or its network, gateway or broadcast address)",
                        ),
                    ),
                    Restore(
                        "a",
                        "198.19.3.1",
                        Err(
                            "address 198.19.3.1 of task a is not a task address of subnet 198.19.3.0/24 (outside it, or its network, gateway or broadcast address)",
                        ),
                    ),
                    Restore(
                        "a",
                        "198.19.3.255",
                        Err(
                            "address 198.19.3.255 of task a is not a task address of subnet 198.19.3.0/24 (outside it, or its network, gateway or broadcast address)",
                        ),
                    ),
                    Restore("a", "198.19.3.254", Ok(())),
                    Lease("b", Ok("198.19.3.2")),
                ],
            ),
        ];
        for (name, subnet, steps) in cases {
            let mut ipam = Ipam::new(net(subnet)).unwrap();
            for (index, step) in steps.iter().enumerate() {
                let context = format!("{name}, step {index}");
                match step {
                    Lease(task, expected) => {
                        let got = ipam.lease(task).map_err(|e| e.to_string());
                        let expected = expected.map(ip).map_err(str::to_owned);
                        assert_eq!(got, expected, "{context}");
                    }
                    Release(task, expected) => {
                        assert_eq!(ipam.release(task), expected.map(ip), "{context}");
                    }
                    Restore(task, address, expected) => {
                        let got = ipam.restore(task, ip(address)).map_err(|e| e.to_string());
                        assert_eq!(got, expected.map_err(str::to_owned), "{context}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_address_is_leased_once_until_exhaustion() {
        let mut ipam = Ipam::new(net("198.19.7.0/24")).unwrap();
        let mut seen = std::collections::HashSet::new();
        for n in 0..ipam.capacity() {
            let address = ipam.lease(&format!("t{n}")).unwrap();
            assert!(seen.insert(address), "{address} leased twice");
            assert_eq!(ipam.leased(&format!("t{n}")), Some(address));
        }
        assert!(matches!(
            ipam.lease("one-more"),
            Err(IpamError::Exhausted { capacity: 253, .. })
        ));
    }
}
