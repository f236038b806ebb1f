//! A node's session with the managers, on every member of a cluster (managers included):
//! a heartbeat every period to the leader, found through any manager; the managers'
//! addresses kept for failover; a new certificate before the current one expires, or when
//! the cluster changed the node's role (`swarm node promote|demote`); and leaving by itself
//! when the cluster removed it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use swarm_api::grpc::dispatcher::dispatcher_client::DispatcherClient;
use swarm_api::grpc::dispatcher::{HeartbeatRequest, RenewCertificateRequest};
use swarm_api::store::{NodeRole, NodeState};
use tokio::sync::watch;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use super::dispatcher::REMOVED_HEADER;
use super::{Daemon, Membership, internal};
use swarm_controller::ca::{NodeKey, Role, identity_of_pem, validity_of};
use swarm_controller::tls::NodeCredentials;

/// How long one heartbeat may take before the next manager is tried.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a certificate request may take (promotion waits for a Raft conf change).
const RENEW_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs until `stop`'s sender is dropped (the node left, or the daemon stops). A change of
/// the worker's state is sent at once, without waiting for the period.
pub(super) async fn run(daemon: Arc<Daemon>, mut stop: watch::Receiver<()>) {
    let mut session = Session::default();
    loop {
        let Some((state, credentials, mut worker_error, mut ports_taken)) =
            daemon.session_view_with_worker().await
        else {
            return;
        };
        let report = AgentReport {
            worker_error: worker_error.borrow_and_update().clone(),
            ports_taken: ports_taken
                .borrow_and_update()
                .iter()
                .map(|(protocol, port)| format!("{port}/{protocol}"))
                .collect(),
        };
        if session.beat(&daemon, &state, &credentials, report).await == Beat::Removed {
            return;
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(session.period) => {}
            // An agent that ended says nothing more: the period goes on.
            Ok(()) = worker_error.changed() => {}
            Ok(()) = ports_taken.changed() => {}
        }
    }
}

/// What a heartbeat says of the node's agent.
struct AgentReport {
    worker_error: Option<String>,
    /// `8080/tcp`, sorted.
    ports_taken: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum Beat {
    Done,
    Removed,
}

struct Session {
    period: Duration,
    /// The leader's address, once a manager named it.
    leader: Option<String>,
    /// Which manager to try next when the leader is unknown.
    rotation: usize,
    channels: HashMap<String, Channel>,
    /// The certificate the cached channels present.
    cert_pem: String,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            period: Duration::from_secs(1),
            leader: None,
            rotation: 0,
            channels: HashMap::new(),
            cert_pem: String::new(),
        }
    }
}

impl Session {
    fn channel(&mut self, address: &str, credentials: &NodeCredentials) -> Channel {
        if credentials.cert_pem != self.cert_pem {
            self.channels.clear();
            self.cert_pem = credentials.cert_pem.clone();
        }
        self.channels
            .entry(address.to_owned())
            .or_insert_with(|| manager_channel(address, credentials))
            .clone()
    }

    /// One heartbeat, to the leader if known, else to each manager in turn until one
    /// answers or names the leader.
    async fn beat(
        &mut self,
        daemon: &Arc<Daemon>,
        state: &NodeState,
        credentials: &NodeCredentials,
        report: AgentReport,
    ) -> Beat {
        let candidates = candidates(state);
        if candidates.is_empty() {
            tracing::warn!("no manager address is known: this node cannot reach its cluster");
            return Beat::Done;
        }
        let mut address = self
            .leader
            .clone()
            .unwrap_or_else(|| candidates[self.rotation % candidates.len()].clone());
        for _ in 0..candidates.len() + 2 {
            let channel = self.channel(&address, credentials);
            let mut client = DispatcherClient::new(channel.clone());
            let call = client.heartbeat(HeartbeatRequest {
                worker_error: report.worker_error.clone().unwrap_or_default(),
                ports_taken: report.ports_taken.clone(),
            });
            match tokio::time::timeout(HEARTBEAT_TIMEOUT, call).await {
                Ok(Ok(response)) => {
                    let response = response.into_inner();
                    self.period = Duration::from_millis(response.period_ms.max(50));
                    if response.accepted {
                        self.leader = Some(address);
                        daemon.remember_managers(response.managers).await;
                        if needs_certificate(state, credentials, response.manager)
                            && let Err(error) = daemon.renew_certificate(channel).await
                        {
                            tracing::warn!(%error, "cannot renew this node's certificate");
                        }
                        return Beat::Done;
                    }
                    if response.leader_addr.is_empty() || response.leader_addr == address {
                        // No leader right now: the next period will tell.
                        self.leader = None;
                        return Beat::Done;
                    }
                    address = response.leader_addr;
                    continue;
                }
                Ok(Err(status)) if status.metadata().get(REMOVED_HEADER).is_some() => {
                    tracing::warn!(
                        reason = status.message(),
                        "this node was removed from its cluster: leaving"
                    );
                    daemon.leave_removed().await;
                    return Beat::Removed;
                }
                Ok(Err(status)) => {
                    tracing::debug!(manager = %address, reason = status.message(), "heartbeat refused");
                }
                Err(_) => tracing::debug!(manager = %address, "heartbeat timed out"),
            }
            self.leader = None;
            self.rotation += 1;
            address = candidates[self.rotation % candidates.len()].clone();
        }
        tracing::warn!("no manager answered this period's heartbeat");
        Beat::Done
    }
}

/// A lazily connected channel to the manager at `address`, with this node's certificate.
pub(super) fn manager_channel(address: &str, credentials: &NodeCredentials) -> Channel {
    Endpoint::from_shared(format!("https://{address}"))
        .and_then(|e| e.tls_config(credentials.client(Role::Manager)))
        .map(|e| {
            e.connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .connect_lazy()
        })
        .unwrap_or_else(|_| {
            // An address that is not one: calls on this channel fail, and the caller moves
            // on to the next manager.
            Endpoint::from_static("https://invalid.invalid").connect_lazy()
        })
}

/// Where to look for the leader: a manager asks itself first.
pub(super) fn candidates(state: &NodeState) -> Vec<String> {
    let mut candidates = Vec::new();
    if state.role == NodeRole::Manager {
        candidates.push(state.advertise_addr.clone());
    }
    for manager in &state.managers {
        if !candidates.contains(manager) {
            candidates.push(manager.clone());
        }
    }
    candidates
}

/// Whether the node needs a new certificate: its role changed, or less than 40 % of its
/// certificate's lifetime remains.
fn needs_certificate(state: &NodeState, credentials: &NodeCredentials, manager: bool) -> bool {
    if manager != (state.role == NodeRole::Manager) {
        return true;
    }
    let certified_manager =
        identity_of_pem(&credentials.cert_pem).is_ok_and(|i| i.role == Role::Manager);
    if certified_manager != manager {
        return true;
    }
    match validity_of(&credentials.cert_pem) {
        Ok((not_after, lifetime)) => {
            let remaining = not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            remaining < lifetime.mul_f64(0.4)
        }
        Err(_) => true,
    }
}

impl Daemon {
    /// The node's identity and credentials, while it is a member.
    pub(super) async fn session_view(&self) -> Option<(NodeState, NodeCredentials)> {
        let membership = self.membership.lock().await;
        let Membership::Member(member) = &*membership else {
            return None;
        };
        match self.credentials() {
            Ok(credentials) => Some((member.state.clone(), credentials)),
            Err(error) => {
                tracing::error!(%error, "cannot read this node's credentials");
                None
            }
        }
    }

    /// The session's view, and what the node's worker says of itself and the published
    /// ports another process holds on the node.
    async fn session_view_with_worker(
        &self,
    ) -> Option<(
        NodeState,
        NodeCredentials,
        watch::Receiver<Option<String>>,
        watch::Receiver<std::collections::BTreeSet<swarm_agent::network::MeshPortKey>>,
    )> {
        let (worker_error, ports_taken) = match &*self.membership.lock().await {
            Membership::Member(member) => (member.agent.worker_error(), member.agent.ports_taken()),
            Membership::Outside | Membership::Locked(_) => return None,
        };
        let (state, credentials) = self.session_view().await?;
        Some((state, credentials, worker_error, ports_taken))
    }

    /// Keeps the managers' addresses, on disk too, so that a restarted worker finds its
    /// cluster even if the manager it joined through is gone.
    async fn remember_managers(&self, mut managers: Vec<String>) {
        managers.sort();
        if managers.is_empty() {
            return;
        }
        let mut membership = self.membership.lock().await;
        let Membership::Member(member) = &mut *membership else {
            return;
        };
        if member.state.managers != managers {
            member.state.managers = managers;
            if let Err(error) = self.save_state(&member.state) {
                tracing::warn!(%error, "cannot record the managers' addresses");
            }
        }
    }

    /// Trades a CSR for a certificate in the role the cluster records, and changes role if
    /// it differs from the node's.
    async fn renew_certificate(self: &Arc<Self>, channel: Channel) -> Result<(), Status> {
        let mut membership = self.membership.lock().await;
        let Membership::Member(member) = &mut *membership else {
            return Ok(());
        };
        // The key stays: only the certificate file changes, in one atomic rename.
        let key = NodeKey::from_pem(&self.read_file("certs/node-key.pem").map_err(internal)?)
            .map_err(internal)?;
        let request = RenewCertificateRequest {
            csr_pem: key.csr_pem().map_err(internal)?,
        };
        let response = tokio::time::timeout(
            RENEW_TIMEOUT,
            DispatcherClient::new(channel).renew_certificate(request),
        )
        .await
        .map_err(|_| Status::deadline_exceeded("the manager did not issue a certificate"))??
        .into_inner();
        let was_manager = member.state.role == NodeRole::Manager;
        if response.manager {
            // Before the certificate: a manager certificate without the CA key is no manager.
            self.write_file("certs/ca-key.pem", response.ca_key_pem.as_bytes(), true)
                .map_err(internal)?;
        }
        self.write_file("certs/node.pem", response.cert_pem.as_bytes(), false)
            .map_err(internal)?;
        let peers: HashMap<u64, String> = response
            .replicas
            .into_iter()
            .map(|r| (r.raft_id, r.address))
            .collect();
        match (was_manager, response.manager) {
            (false, true) => {
                tracing::info!(raft_id = response.raft_id, "promoted: starting the manager");
                // An empty log: the leader sends a snapshot that names this replica.
                let _ = std::fs::remove_file(self.path("raft.redb"));
                let mut state = member.state.clone();
                state.role = NodeRole::Manager;
                state.raft_id = Some(response.raft_id);
                self.save_state(&state).map_err(internal)?;
                member.manager = Some(self.start_manager(&state, peers).await.map_err(internal)?);
                member.state = state;
            }
            (true, false) => {
                tracing::info!("demoted: stopping the manager");
                if let Some(manager) = member.manager.take() {
                    manager.stop().await;
                }
                let mut state = member.state.clone();
                state.role = NodeRole::Worker;
                state.raft_id = None;
                self.save_state(&state).map_err(internal)?;
                member.state = state;
                let _ = std::fs::remove_file(self.path("raft.redb"));
                let _ = std::fs::remove_file(self.path("certs/ca-key.pem"));
            }
            (true, true) => {
                // The cluster port presents the node's certificate: restart it with the new.
                tracing::info!("certificate renewed: restarting the manager's services");
                if let Some(manager) = member.manager.take() {
                    manager.stop().await;
                }
                member.manager = Some(
                    self.start_manager(&member.state, peers)
                        .await
                        .map_err(internal)?,
                );
            }
            (false, false) => tracing::info!("certificate renewed"),
        }
        Ok(())
    }

    /// The cluster removed this node: it forgets the cluster, as `swarm leave` would.
    async fn leave_removed(&self) {
        let mut membership = self.membership.lock().await;
        let previous = std::mem::replace(&mut *membership, Membership::Outside);
        if let Membership::Member(member) = previous {
            // Its tasks stop and its network goes: the node is no longer the cluster's.
            member.agent.leave().await;
            if let Some(manager) = member.manager {
                manager.stop().await;
            }
        }
        if let Err(error) = self.forget_cluster() {
            tracing::error!(%error, "cannot forget the cluster");
        }
    }
}
