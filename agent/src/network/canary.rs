//! A firewall reload takes the node's rules with everyone's: `nft flush ruleset` (what
//! Debian's `nftables.service` runs at every start and reload), a firewall manager that
//! replaces the whole ruleset. The node keeps an empty nftables table of its own, its
//! canary, and looks for it every [`CHECK`]: gone, it plants it again and counts a reload
//! on a watch, and the node's rules are set again whole — the mesh's and the VIPs' tables
//! by their followers, the node bridge's and the overlays' iptables rules by the worker's
//! networks (`TaskNetworks::restore_rules`). kube-proxy watches canary chains of its own
//! the same way.

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

/// Whether the node's canary is in the kernel.
fn canary_present(node_id: &str) -> Result<bool, NetworkError> {
    match run("nft", &["list", "table", "ip", &canary_name(node_id)], None) {
        Ok(_) => Ok(true),
        Err(NetworkError::Command { stderr, .. }) if stderr.contains("No such file") => Ok(false),
        Err(error) => Err(error),
    }
}

fn plant_canary(node_id: &str) -> Result<(), NetworkError> {
    run("nft", &["add", "table", "ip", &canary_name(node_id)], None).map(drop)
}

/// Removes the node's canary: for a node leaving.
pub fn remove_canary(node_id: &str) -> Result<(), NetworkError> {
    let table = canary_name(node_id);
    let script = format!("table ip {table} {{}}\ndelete table ip {table}\n");
    run("nft", &["-f", "-"], Some(&script)).map(drop)
}

/// Plants the node's canary, then looks for it every [`CHECK`]; each time it is found gone,
/// plants it again and adds one to `reloads` (whose receivers set their rules again).
/// Runs until aborted; a failed look is said once and tried again.
pub async fn watch_canary(node_id: String, reloads: tokio::sync::watch::Sender<u64>) {
    let mut last_error = None;
    let mut planted = false;
    loop {
        let node = node_id.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            if planted && canary_present(&node)? {
                return Ok(false);
            }
            plant_canary(&node).map(|()| true)
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
