//! The kernel side of the VIPs: `sysctl`, `ip -batch` and `nft -f` in the node's network
//! namespace. A reconcile sets everything the desired state needs (each line idempotent),
//! removes what the last one set and is no longer wanted, and replaces the ruleset in one
//! transaction; run again after a failure, it converges.

use std::collections::BTreeSet;

use super::{
    NodeSocketBalancer, NodeVips, RULE_PRIORITY, Rule, network_links, network_rules,
    node_table_block, render, stale_links, table_name,
};
use crate::network::command::{delete_table, run, unless_tool_missing};
use crate::network::overlay::overlay_bridge_name;
use crate::network::{NetworkError, every_part};
use swarm_api::endpoints::NetworkView;

/// A node's VIPs: what it has set, and the reconcile towards a desired state. Calls block
/// on short subprocesses (a few ms each): from async code, call them in `spawn_blocking`.
#[derive(Debug)]
pub struct Vips {
    node_id: String,
    current: NodeVips,
    /// The kernel holds nothing of this node's VIPs (an empty reconcile removed its table
    /// and rules): further empty ones cost nothing.
    clean: bool,
}

impl Vips {
    /// A node that has set nothing yet.
    pub fn new(node_id: impl Into<String>) -> Vips {
        Vips {
            node_id: node_id.into(),
            current: NodeVips::default(),
            clean: false,
        }
    }

    /// The state the kernel was last brought to.
    pub fn current(&self) -> &NodeVips {
        &self.current
    }

    /// Brings the node's VIPs to `desired`; whether every network of it was set. A network
    /// whose bridge does not exist (yet: the overlay makes it with the node's first task on
    /// it) gets its rules in the ruleset but no links, routes or policy rules, and the
    /// answer is `false`: a reconcile after the overlay's sets them. On an error the
    /// current state is kept and the next reconcile runs again.
    pub fn reconcile(&mut self, desired: NodeVips) -> Result<bool, NetworkError> {
        if desired.networks.is_empty() {
            if self.clean {
                return Ok(true);
            }
            // No VIP on the node: no table at all (an empty one would outlive a killed
            // daemon for nothing). What the last run set, if any, goes with it.
            return match self.teardown() {
                // Without nft there is no table to remove.
                Ok(()) | Err(NetworkError::Spawn { .. }) => {
                    self.current = NodeVips::default();
                    self.clean = true;
                    Ok(true)
                }
                Err(error) => Err(error),
            };
        }
        let node = self.node_id.as_str();
        let links = link_names()?;
        let present: Vec<(&String, &super::NetworkVips)> = desired
            .networks
            .iter()
            .filter(|(network, _)| links.contains(&overlay_bridge_name(node, network)))
            .collect();
        if !present.is_empty() {
            // Replies from a backend cross the bridge: only `br_netfilter` shows them to
            // conntrack, which puts the VIP back as their source.
            let mut settings = vec!["net.bridge.bridge-nf-call-iptables=1".to_owned()];
            settings.extend(present.iter().map(|(network, _)| {
                format!(
                    "net.ipv4.conf.{}.forwarding=1",
                    overlay_bridge_name(node, network)
                )
            }));
            let mut args = vec!["-q", "-w"];
            args.extend(settings.iter().map(String::as_str));
            run("sysctl", &args, None)?;
        }

        let mut stale = Vec::new();
        for (network, current) in &self.current.networks {
            if links.contains(&overlay_bridge_name(node, network)) {
                stale.extend(stale_links(
                    node,
                    network,
                    current,
                    desired.networks.get(network),
                ));
            }
        }
        let wanted: BTreeSet<Rule> = present
            .iter()
            .flat_map(|(network, vips)| network_rules(node, network, vips.subnet))
            .collect();
        let existing = node_rules(node)?;
        for rule in existing.difference(&wanted) {
            stale.push(format!("rule del {}", rule.args()));
        }
        if !stale.is_empty() {
            // Entries gone with their device (or a table already empty) fail harmlessly:
            // `-force` goes on past them.
            let script = stale.join("\n") + "\n";
            if let Err(error) = run("ip", &["-force", "-batch", "-"], Some(&script)) {
                tracing::debug!(node, %error, "stale VIP entries already gone");
            }
        }

        let mut lines: Vec<String> = present
            .iter()
            .flat_map(|(network, vips)| network_links(node, network, vips))
            .collect();
        lines.extend(
            wanted
                .difference(&existing)
                .map(|rule| format!("rule add {}", rule.args())),
        );
        if !lines.is_empty() {
            run("ip", &["-batch", "-"], Some(&(lines.join("\n") + "\n")))?;
        }
        run("nft", &["-f", "-"], Some(&render(node, &desired)))?;
        let complete = present.len() == desired.networks.len();
        tracing::debug!(
            node,
            networks = desired.networks.len(),
            complete,
            "virtual IPs reconciled"
        );
        self.clean = false;
        self.current = desired;
        Ok(complete)
    }

    /// Removes the node's table and policy rules (and their routes), whatever state it
    /// knows: for a node leaving (a restarted daemon does not: its first reconcile
    /// replaces the table, and open connections keep flowing meanwhile). Neighbour entries
    /// and the bridges' MACs go with the overlay's devices.
    /// The table and the rules are each tried whatever the other's outcome, every line of
    /// the rules' batch too (`-force`); the first error is returned.
    pub fn teardown(&mut self) -> Result<(), NetworkError> {
        let node = self.node_id.as_str();
        // Without nft there is no table to remove (the rules may still be there).
        let table = unless_tool_missing(delete_table(&table_name(node)));
        let rules = || {
            let rules = node_rules(node)?;
            let tables: BTreeSet<u32> = rules.iter().map(|r| r.table).collect();
            let mut lines: Vec<String> = rules
                .iter()
                .map(|rule| format!("rule del {}", rule.args()))
                .collect();
            lines.extend(tables.iter().map(|t| format!("route flush table {t}")));
            if lines.is_empty() {
                return Ok(());
            }
            run(
                "ip",
                &["-force", "-batch", "-"],
                Some(&(lines.join("\n") + "\n")),
            )
            .map(drop)
        };
        every_part(std::iter::once(table).chain(std::iter::once_with(rules)))?;
        self.current = NodeVips::default();
        self.clean = true;
        Ok(())
    }
}

/// How long the follower waits before it tries again after a failed or incomplete
/// reconcile (an overlay bridge not made yet): within the issue's 1 s for a change.
const RETRY: std::time::Duration = std::time::Duration::from_millis(500);
/// The longest wait between retries of the socket balancer alone.
const SOCKET_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(8);

/// Keeps the node's VIPs on its endpoint table: a reconcile of the DNAT and of the socket
/// balancer (its tasks' namespaces under `netns_dir`) from the latest view at every
/// change, again after `RETRY` while one failed or a network's bridge was not made yet
/// (the socket balancer alone while a local task's namespace is not made yet).
/// At each change of `reloads` (a firewall reload took the node's rules) everything is set
/// again. The first reconcile waits for a view not seen yet (`views` marked changed, or its
/// next change): a restarted daemon's worker has none before its first assignment, and
/// the VIPs the last process set stay until it comes. Returns when `stop` completes or the
/// view's sender goes (the worker stopped), leaving the kernel as it is, once a reconcile
/// under way is done: the tasks outlive a daemon restart, and so do their VIPs, until the
/// next daemon's first reconcile replaces them.
pub async fn follow(
    node_id: String,
    netns_dir: std::path::PathBuf,
    mut views: tokio::sync::watch::Receiver<NetworkView>,
    mut reloads: tokio::sync::watch::Receiver<u64>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    if !crate::network::first_view(&mut views, &mut stop).await {
        return;
    }
    let mut vips = Vips::new(node_id.clone());
    // Attached while this follows (it detaches when dropped: new connections then take
    // the DNAT, which stays set across a daemon restart).
    let mut sockets = NodeSocketBalancer::new(&node_id, netns_dir);
    // Said once, not at every retry.
    let mut last_error = None;
    // Whether the last full reconcile set everything; a retry of the socket balancer
    // alone (a task's namespace not made yet) leaves the kernel's rules as they are.
    let mut settled = false;
    let mut full = true;
    // The socket balancer's own retry, doubled while a task's namespace stays missing (one
    // preparing, or draining with its namespace gone): its start takes the view through a
    // change anyway, which reconciles everything.
    let mut socket_retry = RETRY;
    loop {
        // A retry of the socket balancer alone leaves the view's change, if one came,
        // marked unseen: the full reconcile it needs comes next.
        let desired = if full {
            socket_retry = RETRY;
            NodeVips::from_view(&views.borrow_and_update(), &node_id)
        } else {
            socket_retry = (socket_retry * 2).min(SOCKET_RETRY_MAX);
            NodeVips::from_view(&views.borrow(), &node_id)
        };
        let (back, outcome, balanced) = tokio::task::spawn_blocking(move || {
            let balanced = sockets.reconcile(&desired);
            let outcome = full.then(|| vips.reconcile(desired));
            ((vips, sockets), outcome, balanced)
        })
        .await
        .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
        (vips, sockets) = back;
        match outcome {
            Some(Ok(complete)) => {
                last_error = None;
                settled = complete;
            }
            Some(Err(error)) => {
                let message = error.to_string();
                if last_error.as_ref() != Some(&message) {
                    tracing::warn!(node = vips.node_id, %message, "cannot set the virtual IPs");
                }
                last_error = Some(message);
                settled = false;
            }
            None => {}
        }
        full = tokio::select! {
            changed = views.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
            Ok(()) = reloads.changed() => true,
            _ = tokio::time::sleep(RETRY), if !settled => true,
            _ = tokio::time::sleep(socket_retry), if settled && !balanced => false,
            () = &mut stop => return,
        };
    }
}

/// The names of the namespace's links.
fn link_names() -> Result<BTreeSet<String>, NetworkError> {
    let output = run("ip", &["-o", "link", "show"], None)?;
    Ok(output
        .lines()
        .filter_map(|line| {
            let name = line.split(": ").nth(1)?;
            Some(name.split('@').next().unwrap_or(name).to_owned())
        })
        .collect())
}

/// The node's policy rules: those of its priority that look up a table of its block.
fn node_rules(node_id: &str) -> Result<BTreeSet<Rule>, NetworkError> {
    let output = run("ip", &["-json", "rule", "show"], None)?;
    Ok(parse_rules(&output, node_table_block(node_id)))
}

/// The rules of `ip -json rule show` at the node's priority whose table is in `block`.
fn parse_rules(json: &str, block: u32) -> BTreeSet<Rule> {
    let rules: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    rules
        .iter()
        .filter(|rule| rule["priority"].as_u64() == Some(u64::from(RULE_PRIORITY)))
        .filter_map(|rule| {
            let table: u32 = rule["table"].as_str()?.parse().ok()?;
            if table & 0xffff_0000 != block {
                return None;
            }
            let to = match (rule["dst"].as_str(), rule["dstlen"].as_u64()) {
                (Some(dst), Some(len)) => Some(format!("{dst}/{len}").parse().ok()?),
                _ => None,
            };
            Some(Rule {
                iif: rule["iif"].as_str()?.to_owned(),
                to,
                table,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_finds_its_own_rules_in_ip_json_output() {
        let block = node_table_block("n1");
        let mine = super::super::routing_table("n1", "net");
        let json = format!(
            r#"[{{"priority":0,"src":"all","table":"local"}},
            {{"priority":1000,"src":"all","iif":"swoabc","table":"{mine}"}},
            {{"priority":1000,"src":"all","dst":"10.0.0.0","dstlen":24,"iif":"lo","table":"{mine}"}},
            {{"priority":1000,"src":"all","iif":"swoother","table":"{}"}},
            {{"priority":32766,"src":"all","table":"main"}}]"#,
            node_table_block("n2") + 1
        );
        let rules: Vec<String> = parse_rules(&json, block).iter().map(Rule::args).collect();
        assert_eq!(
            rules,
            [
                format!("priority 1000 iif lo to 10.0.0.0/24 lookup {mine}"),
                format!("priority 1000 iif swoabc lookup {mine}"),
            ]
        );
    }
}
