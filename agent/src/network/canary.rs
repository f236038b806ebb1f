//! A firewall reload takes the node's rules with everyone's: `nft flush ruleset` (what
//! Debian's `nftables.service` runs at every start and reload), a firewall manager that
//! replaces the whole ruleset, or an `iptables-restore` of the filter or nat table
//! (`netfilter-persistent`, firewalld's iptables backend, ufw with `MANAGE_BUILTINS=yes`):
//! that one leaves nftables tables of their own alone but takes the node bridge's and
//! overlays' iptables rules. So the node keeps a canary in each place: an empty nftables
//! table of its own and an empty iptables chain in the filter and in the nat table. It
//! looks for them every [`CHECK`]: one gone, it counts a reload on a watch once it has
//! planted it again, and the node's rules are set again whole — the mesh's and the VIPs'
//! tables by their followers, the node bridge's and the overlays' iptables rules by the
//! worker's networks (`TaskNetworks::restore_rules`). kube-proxy watches canary chains of
//! its own the same way.

use std::future::Future;
use std::time::Duration;

use super::bridge::hex_digest;
use super::command::{delete_table, run};
use super::{NetworkError, every_part};

/// How often the node looks for its canaries: a reload is repaired within this (and the
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

/// One place a reload empties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Canary {
    /// The nftables table.
    Table,
    /// The chain in an iptables table.
    Chain(&'static str),
}

const CANARIES: [Canary; 3] = [Canary::Table, Canary::Chain("filter"), Canary::Chain("nat")];

impl Canary {
    fn present(self, node_id: &str) -> Result<bool, NetworkError> {
        match self {
            Canary::Table => {
                match run("nft", &["list", "table", "ip", &canary_name(node_id)], None) {
                    Ok(_) => Ok(true),
                    Err(NetworkError::Command { stderr, .. })
                        if stderr.contains("No such file") =>
                    {
                        Ok(false)
                    }
                    Err(error) => Err(error),
                }
            }
            Canary::Chain(table) => chain_declared(table, &canary_chain(node_id)),
        }
    }

    fn plant(self, node_id: &str) -> Result<(), NetworkError> {
        match self {
            Canary::Table => {
                run("nft", &["add", "table", "ip", &canary_name(node_id)], None).map(drop)
            }
            Canary::Chain(table) => {
                let chain = canary_chain(node_id);
                match run("iptables", &["-w", "5", "-t", table, "-N", &chain], None) {
                    Ok(_) => Ok(()),
                    Err(NetworkError::Command { stderr, .. })
                        if stderr.contains("already exists") =>
                    {
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            }
        }
    }

    fn remove(self, node_id: &str) -> Result<(), NetworkError> {
        match self {
            Canary::Table => delete_table(&canary_name(node_id)),
            Canary::Chain(table) => {
                let chain = canary_chain(node_id);
                if chain_declared(table, &chain)? {
                    run("iptables", &["-w", "5", "-t", table, "-X", &chain], None)?;
                }
                Ok(())
            }
        }
    }
}

/// Whether iptables table `table` declares chain `chain`. The whole table is listed: asked
/// for by name, a missing chain is an error whose text differs between iptables-nft and
/// iptables-legacy.
fn chain_declared(table: &str, chain: &str) -> Result<bool, NetworkError> {
    let declared = format!("-N {chain}");
    let listing = run("iptables", &["-w", "5", "-t", table, "-S"], None)?;
    Ok(listing.lines().any(|line| line.trim_end() == declared))
}

/// Removes the node's canaries: for a node leaving. Each is tried; the first error is
/// returned.
pub fn remove_canary(node_id: &str) -> Result<(), NetworkError> {
    every_part(CANARIES.into_iter().map(|canary| canary.remove(node_id)))
}

/// What one round did with one canary.
struct Round {
    /// Found gone (it had been planted).
    missing: bool,
    /// Planted (again) in this round.
    planted: bool,
    /// Looking, or planting, failed.
    error: Option<NetworkError>,
}

/// Plants the node's canaries, then looks for them every [`CHECK`] until `stop` completes.
/// Each canary is watched from its first planting on (one that cannot be planted, an
/// iptables table written in nft syntax say, leaves the others watched); one found gone is
/// planted again, and once every one found gone is back, one is added to `reloads` (whose
/// receivers set their rules again). A failed look or planting is said once and tried
/// again at the next round.
pub async fn watch_canary(
    node_id: String,
    reloads: tokio::sync::watch::Sender<u64>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut watched = [false; CANARIES.len()];
    // Found gone and not planted again yet.
    let mut awaited = [false; CANARIES.len()];
    // A reload was seen and not counted yet.
    let mut pending = false;
    let mut last_error = None;
    loop {
        let node = node_id.clone();
        let rounds = tokio::task::spawn_blocking(move || {
            CANARIES
                .iter()
                .zip(watched)
                .map(|(canary, watched)| {
                    let missing = match watched.then(|| canary.present(&node)) {
                        Some(Ok(true)) => false,
                        Some(Ok(false)) => true,
                        Some(Err(error)) => {
                            return Round {
                                missing: false,
                                planted: false,
                                error: Some(error),
                            };
                        }
                        None => false,
                    };
                    if watched && !missing {
                        return Round {
                            missing,
                            planted: false,
                            error: None,
                        };
                    }
                    let planted = canary.plant(&node);
                    Round {
                        missing,
                        planted: planted.is_ok(),
                        error: planted.err(),
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
        if !pending && rounds.iter().any(|round| round.missing) {
            tracing::warn!(
                node = node_id,
                "this node's firewall rules were removed (a firewall reload?): setting them again"
            );
            pending = true;
        }
        let mut errors = Vec::new();
        for (i, round) in rounds.into_iter().enumerate() {
            awaited[i] = (awaited[i] || round.missing) && !round.planted;
            watched[i] |= round.planted;
            if let Some(error) = round.error {
                errors.push(error.to_string());
            }
        }
        if pending && !awaited.contains(&true) {
            reloads.send_modify(|count| *count += 1);
            pending = false;
        }
        let message = (!errors.is_empty()).then(|| errors.join("; "));
        if message.is_some() && message != last_error {
            tracing::warn!(
                node = node_id,
                message = message.as_deref(),
                "cannot look for or plant this node's canaries"
            );
        }
        last_error = message;
        tokio::select! {
            () = tokio::time::sleep(CHECK) => {}
            () = &mut stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canaries_are_named_from_the_node_and_fit_iptables() {
        let (table, chain) = (canary_name("node-a"), canary_chain("node-a"));
        assert_eq!(table.len(), "swcanary".len() + 10);
        assert_eq!(chain, format!("SWCANARY-{}", &table[8..]));
        assert!(chain.len() <= 28, "{chain}");
        assert_ne!(canary_name("node-b"), table);
    }
}
