//! A firewall reload takes the node's rules with everyone's: `nft flush ruleset` (what
//! Debian's `nftables.service` runs at every start and reload), a firewall manager that
//! replaces the whole ruleset, or an `iptables-restore` of the filter or nat table (ufw,
//! `netfilter-persistent`, firewalld's iptables backend): that one leaves nftables tables
//! of their own alone but takes the node bridge's and overlays' iptables rules. So the node
//! keeps a canary in each place: an empty nftables table of its own and an empty iptables
//! chain in the filter and in the nat table. It looks for them every [`CHECK`]: one gone,
//! it plants them again and counts a reload on a watch, and the node's rules are set again
//! whole — the mesh's and the VIPs' tables by their followers, the node bridge's and the
//! overlays' iptables rules by the worker's networks (`TaskNetworks::restore_rules`).
//! kube-proxy watches canary chains of its own the same way.

use std::time::Duration;

use super::NetworkError;
use super::bridge::hex_digest;
use super::command::run;

/// How often the node looks for its canary: a reload is repaired within this (and the
/// rules' own reconcile).
pub const CHECK: Duration = Duration::from_secs(5);

/// The node's canary table: `swcanary` and 10 hex digits of a SHA-256 of its id.
pub fn canary_name(node_id: &str) -> String {
    format!(
        "swcanary{}",
        &hex_digest(format!("{node_id}\0canary").as_bytes())[..10]
    )
}

/// The node's canary chain in the iptables filter and nat tables: `SWCANARY-` and the same
/// 10 hex digits (iptables names have at most 28 characters).
pub fn canary_chain(node_id: &str) -> String {
    format!("SWCANARY-{}", &canary_name(node_id)["swcanary".len()..])
}

/// The iptables tables whose restore takes the node's rules.
const IPTABLES_TABLES: [&str; 2] = ["filter", "nat"];

/// Whether all of the node's canaries are in the kernel.
fn canaries_present(node_id: &str) -> Result<bool, NetworkError> {
    match run("nft", &["list", "table", "ip", &canary_name(node_id)], None) {
        Ok(_) => {}
        Err(NetworkError::Command { stderr, .. }) if stderr.contains("No such file") => {
            return Ok(false);
        }
        Err(error) => return Err(error),
    }
    let declared = format!("-N {}", canary_chain(node_id));
    for table in IPTABLES_TABLES {
        // The whole table: asked for by name, a missing chain is an error whose text
        // differs between iptables-nft and iptables-legacy.
        let listing = run("iptables", &["-w", "5", "-t", table, "-S"], None)?;
        if !listing.lines().any(|line| line.trim_end() == declared) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Plants whichever canary is missing.
fn plant_canaries(node_id: &str) -> Result<(), NetworkError> {
    run("nft", &["add", "table", "ip", &canary_name(node_id)], None)?;
    let chain = canary_chain(node_id);
    for table in IPTABLES_TABLES {
        match run("iptables", &["-w", "5", "-t", table, "-N", &chain], None) {
            Ok(_) => {}
            Err(NetworkError::Command { stderr, .. }) if stderr.contains("already exists") => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Removes the node's canaries: for a node leaving.
pub fn remove_canary(node_id: &str) -> Result<(), NetworkError> {
    let table = canary_name(node_id);
    let script = format!("table ip {table} {{}}\ndelete table ip {table}\n");
    run("nft", &["-f", "-"], Some(&script))?;
    let chain = canary_chain(node_id);
    let declared = format!("-N {chain}");
    for table in IPTABLES_TABLES {
        let listing = run("iptables", &["-w", "5", "-t", table, "-S"], None)?;
        if listing.lines().any(|line| line.trim_end() == declared) {
            run("iptables", &["-w", "5", "-t", table, "-X", &chain], None)?;
        }
    }
    Ok(())
}

/// Plants the node's canaries, then looks for them every [`CHECK`]; each time one is found
/// gone, plants them again and adds one to `reloads` (whose receivers set their rules again).
/// Runs until aborted; a failed look is said once and tried again.
pub async fn watch_canary(node_id: String, reloads: tokio::sync::watch::Sender<u64>) {
    let mut last_error = None;
    let mut planted = false;
    loop {
        let node = node_id.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            if planted && canaries_present(&node)? {
                return Ok(false);
            }
            plant_canaries(&node).map(|()| true)
        })
        .await
        .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
        match outcome {
            Ok(replanted) => {
                last_error = None;
                if replanted && planted {
                    tracing::warn!(
                        node = node_id,
                        "this node's firewall rules were removed (a firewall reload?): setting them again"
                    );
                    reloads.send_modify(|count| *count += 1);
                }
                planted = true;
            }
            Err(error) => {
                let message = error.to_string();
                if last_error.as_ref() != Some(&message) {
                    tracing::warn!(node = node_id, %message, "cannot look for this node's canary table");
                }
                last_error = Some(message);
            }
        }
        tokio::time::sleep(CHECK).await;
    }
}
