//! The node's bridge: one Linux bridge per node, named from the node id, holding the
//! gateway address of the node's subnet; the tasks' veths are its ports.
//!
//! Tasks reach the outside through the node, as Docker's bridge gives them: setup turns on
//! IPv4 forwarding in the node's namespace and inserts its iptables rules — ACCEPT in FORWARD
//! for traffic between the bridge's ports (when `br_netfilter` is loaded, as Docker leaves
//! it, bridged frames go through FORWARD, and a DROP policy there would silence tasks), out
//! of the bridge, back in for the connections it opened and for those the routing mesh
//! DNAT'ed to a task; MASQUERADE in POSTROUTING for
//! what leaves the subnet by another interface. Teardown removes them.

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use super::command::{delete_link, run};
use super::{NetworkError, every_part};

/// The node's bridge: `swb` and 8 hex digits of the node id's SHA-256 (11 characters,
/// within the kernel's 15).
pub fn bridge_name(node_id: &str) -> String {
    format!("swb{}", &hex_digest(node_id.as_bytes())[..8])
}

/// A locally administered unicast MAC address from the node id. Given explicitly, the
/// bridge keeps it; otherwise it takes the lowest MAC of its ports, so the gateway's
/// address would change under the tasks' ARP caches as tasks come and go.
fn bridge_mac(node_id: &str) -> String {
    let digest = hex_digest(format!("{node_id}\0bridge-mac").as_bytes());
    let octets: Vec<&str> = (0..5).map(|i| &digest[2 * i..2 * i + 2]).collect();
    format!("02:{}", octets.join(":"))
}

pub(crate) fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A node's bridge, set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    name: String,
    /// The gateway's address with the subnet's prefix length.
    gateway: Ipv4Net,
}

impl Bridge {
    /// Makes the bridge of `node_id` with `gateway` (address/prefix) on it, up, and lets
    /// its ports talk through FORWARD. Idempotent: a daemon restart finds it made.
    pub fn setup(node_id: &str, gateway: Ipv4Net) -> Result<Bridge, NetworkError> {
        let bridge = Bridge {
            name: bridge_name(node_id),
            gateway,
        };
        let name = bridge.name.as_str();
        match run(
            "ip",
            &[
                "link",
                "add",
                "name",
                name,
                "address",
                &bridge_mac(node_id),
                "type",
                "bridge",
            ],
            None,
        ) {
            Err(NetworkError::Command { stderr, .. }) if stderr.contains("File exists") => {}
            other => {
                other?;
            }
        }
        let script = format!("address replace {gateway} dev {name}\nlink set {name} up\n");
        run("ip", &["-batch", "-"], Some(&script))?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|source| {
            NetworkError::Io {
                action: "cannot turn on IPv4 forwarding in",
                path: "/proc/sys/net/ipv4/ip_forward".into(),
                source,
            }
        })?;
        for rule in bridge.rules() {
            rule.ensure()?;
        }
        tracing::info!(bridge = name, %gateway, "node bridge up");
        Ok(bridge)
    }

    /// Inserts again whichever of the bridge's rules are missing: after a firewall reload
    /// took them.
    pub fn restore_rules(&self) -> Result<(), NetworkError> {
        for rule in self.rules() {
            rule.ensure()?;
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The gateway's address with the subnet's prefix length.
    pub fn gateway(&self) -> Ipv4Net {
        self.gateway
    }

    /// Removes the bridge and its iptables rules, each tried whatever another's outcome
    /// (the first error is returned). Idempotent. Task veths still on it are left (detach
    /// the tasks first).
    pub fn teardown(&self) -> Result<(), NetworkError> {
        let link = delete_link(&self.name);
        let rules = self.rules().into_iter().map(|rule| rule.remove());
        every_part(std::iter::once(link).chain(rules))?;
        tracing::info!(bridge = self.name, "node bridge removed");
        Ok(())
    }

    /// The node's iptables rules (see the module's header).
    fn rules(&self) -> Vec<Rule> {
        let name = self.name.as_str();
        let subnet = self.gateway.trunc().to_string();
        vec![
            Rule::between_ports(name),
            Rule::filter_forward(&["-i", name, "!", "-o", name, "-j", "ACCEPT"]),
            Rule::filter_forward(&[
                "-o",
                name,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ]),
            // Connections the routing mesh sends to the node's tasks.
            Rule::filter_forward(&[
                "-o",
                name,
                "-m",
                "conntrack",
                "--ctstate",
                "DNAT",
                "-j",
                "ACCEPT",
            ]),
            Rule {
                table: "nat",
                chain: "POSTROUTING",
                spec: ["-s", &subnet, "!", "-o", name, "-j", "MASQUERADE"]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
            },
        ]
    }
}

/// Removes every iptables rule naming `bridge` (FORWARD and nat POSTROUTING), whatever made
/// it: for cleaning up after a node killed before it could tear its bridge down.
pub fn remove_bridge_rules(bridge: &str) {
    for (table, chain) in [("filter", "FORWARD"), ("nat", "POSTROUTING")] {
        let Ok(listing) = run("iptables", &["-w", "5", "-t", table, "-S", chain], None) else {
            continue;
        };
        for line in listing
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == bridge))
        {
            // `-A CHAIN spec…` deleted as `-D CHAIN spec…`; quoting is not used by our rules.
            let mut args = vec!["-w", "5", "-t", table];
            args.extend(
                line.split_whitespace()
                    .map(|w| if w == "-A" { "-D" } else { w }),
            );
            let _ = run("iptables", &args, None);
        }
    }
}

/// One iptables rule a node keeps: inserted once, removed with every copy.
pub(crate) struct Rule {
    table: &'static str,
    chain: &'static str,
    spec: Vec<String>,
}

impl Rule {
    /// The FORWARD rule letting a bridge's ports talk to each other (br_netfilter sends
    /// bridged frames through FORWARD, whose policy is DROP where Docker's engine ran).
    pub(crate) fn between_ports(bridge: &str) -> Rule {
        Rule::filter_forward(&["-i", bridge, "-o", bridge, "-j", "ACCEPT"])
    }

    pub(crate) fn filter_forward(spec: &[&str]) -> Rule {
        Rule {
            table: "filter",
            chain: "FORWARD",
            spec: spec.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Inserts the rule unless it is there.
    pub(crate) fn ensure(&self) -> Result<(), NetworkError> {
        if !self.present()? {
            self.run("-I")?;
        }
        Ok(())
    }

    /// Removes every copy: concurrent or retried setups may each have inserted one.
    pub(crate) fn remove(&self) -> Result<(), NetworkError> {
        while self.present()? {
            self.run("-D")?;
        }
        Ok(())
    }

    fn present(&self) -> Result<bool, NetworkError> {
        match self.run("-C") {
            Ok(_) => Ok(true),
            // iptables -C answers "no such rule" with status 1 and a message naming it.
            Err(NetworkError::Command { stderr, .. })
                if stderr.contains("does a matching rule exist")
                    || stderr.contains("No chain/target/match") =>
            {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// Runs `iptables` with `action` (-I, -D, -C) on the rule.
    fn run(&self, action: &str) -> Result<String, NetworkError> {
        // -w: wait for the xtables lock (bounded) rather than fail beside another writer.
        let mut args = vec!["-w", "5", "-t", self.table, action, self.chain];
        args.extend(self.spec.iter().map(String::as_str));
        run("iptables", &args, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_stable_and_distinct() {
        let a = bridge_name("node-a");
        assert_eq!(a, bridge_name("node-a"));
        assert_ne!(a, bridge_name("node-b"));
        assert!(a.starts_with("swb") && a.len() == 11, "{a}");
        let long = bridge_name(&"n".repeat(500));
        assert!(long.len() <= 15, "{long}");
    }

    #[test]
    fn bridge_macs_are_local_unicast() {
        let mac = bridge_mac("node-a");
        assert_eq!(mac.len(), 17, "{mac}");
        assert!(mac.starts_with("02:"), "{mac}");
        assert_ne!(mac, bridge_mac("node-b"));
    }
}
