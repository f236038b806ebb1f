//! Task networking in memory for simulation tests: addresses leased by the real `Ipam` from
//! the node's subnet, namespaces that are only paths, no links, no subprocess.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use super::ipam::{Ipam, IpamError};
use super::{NetworkError, Networking, NodeNetworkConfig, NodeOverlays, TaskNetwork, TaskNetworks};

/// Makes fake node networks. Cheap to clone; clones share the networks they made.
#[derive(Clone, Default)]
pub struct FakeNetworking {
    made: Arc<Mutex<Vec<Arc<FakeTaskNetworks>>>>,
}

impl FakeNetworking {
    /// The tasks attached now, over every network this made.
    pub fn attached(&self) -> BTreeSet<String> {
        let made = self.made.lock().expect("not poisoned");
        made.iter()
            .flat_map(|network| network.attached.lock().expect("not poisoned").clone())
            .collect()
    }

    /// The attached tasks with no route out of the node (on `--internal` networks only).
    pub fn closed(&self) -> BTreeSet<String> {
        let made = self.made.lock().expect("not poisoned");
        made.iter()
            .flat_map(|network| network.closed.lock().expect("not poisoned").clone())
            .collect()
    }

    /// The overlays the last network made was last brought to.
    pub fn overlays(&self) -> NodeOverlays {
        let made = self.made.lock().expect("not poisoned");
        made.last()
            .map(|network| network.overlays.lock().expect("not poisoned").clone())
            .unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl Networking for FakeNetworking {
    async fn setup(
        &self,
        config: NodeNetworkConfig,
    ) -> Result<Arc<dyn TaskNetworks>, NetworkError> {
        let network = Arc::new(FakeTaskNetworks {
            config: config.clone(),
            ipam: Mutex::new(Ipam::new(config.subnet)?),
            attached: Mutex::default(),
            closed: Mutex::default(),
            overlays: Mutex::default(),
        });
        self.made
            .lock()
            .expect("not poisoned")
            .push(network.clone());
        Ok(network)
    }
}

struct FakeTaskNetworks {
    config: NodeNetworkConfig,
    ipam: Mutex<Ipam>,
    attached: Mutex<BTreeSet<String>>,
    /// The attached tasks whose route out was closed.
    closed: Mutex<BTreeSet<String>>,
    overlays: Mutex<NodeOverlays>,
}

impl FakeTaskNetworks {
    fn network(&self, task_id: &str, address: std::net::Ipv4Addr) -> TaskNetwork {
        let ipam = self.ipam.lock().expect("not poisoned");
        TaskNetwork {
            task_id: task_id.to_owned(),
            netns_path: self.config.netns_dir.join(task_id),
            address: ipnet::Ipv4Net::new(address, self.config.subnet.prefix_len())
                .expect("the prefix comes from a valid subnet"),
            gateway: ipam.gateway(),
            host_veth: super::host_veth_name(&self.config.node_id, task_id),
        }
    }
}

#[async_trait::async_trait]
impl TaskNetworks for FakeTaskNetworks {
    async fn attach(&self, task_id: &str) -> Result<TaskNetwork, NetworkError> {
        let address = self
            .ipam
            .lock()
            .expect("not poisoned")
            .lease(task_id)
            .map_err(|error| match error {
                IpamError::TaskAlreadyLeased { task, address } => NetworkError::AlreadyAttached {
                    address: ipnet::Ipv4Net::new(address, self.config.subnet.prefix_len())
                        .expect("the prefix comes from a valid subnet"),
                    task,
                },
                other => other.into(),
            })?;
        self.attached
            .lock()
            .expect("not poisoned")
            .insert(task_id.to_owned());
        Ok(self.network(task_id, address))
    }

    async fn close_route_out(&self, task_id: &str) -> Result<(), NetworkError> {
        self.closed
            .lock()
            .expect("not poisoned")
            .insert(task_id.to_owned());
        Ok(())
    }

    async fn detach(&self, task_id: &str) -> Result<(), NetworkError> {
        self.closed.lock().expect("not poisoned").remove(task_id);
        self.ipam.lock().expect("not poisoned").release(task_id);
        self.attached.lock().expect("not poisoned").remove(task_id);
        Ok(())
    }

    async fn adopt(&self, task_id: &str) -> Result<TaskNetwork, NetworkError> {
        let leased = self.ipam.lock().expect("not poisoned").leased(task_id);
        leased
            .map(|address| self.network(task_id, address))
            .ok_or_else(|| NetworkError::Incomplete {
                task: task_id.to_owned(),
                path: self.config.netns_dir.join(task_id),
                what: "no address is leased to it".to_owned(),
            })
    }

    async fn sweep(&self, owned: HashSet<String>) -> Result<Vec<String>, NetworkError> {
        let attached = self.attached.lock().expect("not poisoned").clone();
        let mut removed = Vec::new();
        for task in attached.into_iter().filter(|task| !owned.contains(task)) {
            self.detach(&task).await?;
            removed.push(task);
        }
        Ok(removed)
    }

    async fn reconcile_overlay(&self, desired: NodeOverlays) -> Result<(), NetworkError> {
        *self.overlays.lock().expect("not poisoned") = desired;
        Ok(())
    }

    /// In memory there is no firewall to reload: nothing to restore.
    async fn restore_rules(&self) -> Result<(), NetworkError> {
        Ok(())
    }

    async fn teardown(&self) -> Result<(), NetworkError> {
        *self.overlays.lock().expect("not poisoned") = NodeOverlays::default();
        self.sweep(HashSet::new()).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_lease_addresses_of_the_subnet_and_give_them_back() {
        let networking = FakeNetworking::default();
        let network = networking
            .setup(NodeNetworkConfig {
                node_id: "n1".to_owned(),
                subnet: "10.0.3.0/30".parse().unwrap(),
                netns_dir: "/run/fake/netns".into(),
            })
            .await
            .unwrap();
        let a = network.attach("a").await.unwrap();
        assert_eq!(a.address.to_string(), "10.0.3.2/30");
        assert_eq!(a.gateway.to_string(), "10.0.3.1");
        assert_eq!(a.netns_path, std::path::Path::new("/run/fake/netns/a"));
        assert!(matches!(
            network.attach("a").await,
            Err(NetworkError::AlreadyAttached { .. })
        ));
        // A /30 holds one task besides the gateway.
        assert!(network.attach("b").await.is_err());
        assert_eq!(network.adopt("a").await.unwrap(), a);
        assert_eq!(networking.attached(), BTreeSet::from(["a".to_owned()]));
        assert_eq!(network.sweep(HashSet::new()).await.unwrap(), vec!["a"]);
        assert!(networking.attached().is_empty());
        assert_eq!(network.attach("b").await.unwrap().address, a.address);
    }
}
