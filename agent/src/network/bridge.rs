//! The node's bridge: one Linux bridge per node, named from the node id, holding the
//! gateway address of the node's subnet; the tasks' veths are its ports.
//!
//! When `br_netfilter` is loaded (`net.bridge.bridge-nf-call-iptables=1`, as Docker leaves
//! it) bridged frames go through iptables' FORWARD chain, and a DROP policy there silences
//! traffic between tasks. Setup inserts one ACCEPT rule for traffic from the bridge to the
//! bridge; teardown removes it.

use ipnet::Ipv4Net;
use sha2::{Digest, Sha256};

use super::NetworkError;
use super::command::run;

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
        if !bridge.forward_rule_present()? {
            run("iptables", &bridge.forward_rule("-I"), None)?;
        }
        tracing::info!(bridge = name, %gateway, "node bridge up");
        Ok(bridge)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The gateway's address with the subnet's prefix length.
    pub fn gateway(&self) -> Ipv4Net {
        self.gateway
    }

    /// Removes the bridge and its FORWARD rule. Idempotent. Task veths still on it are
    /// left (detach the tasks first).
    pub fn teardown(&self) -> Result<(), NetworkError> {
        match run("ip", &["link", "del", "dev", &self.name], None) {
            Err(error) if error.is_missing_link() => {}
            other => {
                other?;
            }
        }
        // Removes every copy: concurrent setups of one node may each have inserted it.
        while self.forward_rule_present()? {
            run("iptables", &self.forward_rule("-D"), None)?;
        }
        tracing::info!(bridge = self.name, "node bridge removed");
        Ok(())
    }

    /// `iptables` arguments for `action` (-I, -D, -C) on the rule accepting traffic
    /// between the bridge's ports.
    fn forward_rule<'a>(&'a self, action: &'a str) -> [&'a str; 10] {
        let name = self.name.as_str();
        // -w: wait for the xtables lock (bounded) rather than fail beside another writer.
        [
            "-w", "5", action, "FORWARD", "-i", name, "-o", name, "-j", "ACCEPT",
        ]
    }

    fn forward_rule_present(&self) -> Result<bool, NetworkError> {
        match run("iptables", &self.forward_rule("-C"), None) {
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
