//! The published ports of the kernel path, held by the node with a bound socket (as
//! kube-proxy holds its NodePorts): the kernel rules DNAT every connection before it could
//! reach the socket, but while the node holds the port no other process on it can take it.
//! A port another process holds already is left to that process: the node reports it, its
//! clients' connections get no rule here (the other nodes answer them still), and it is
//! tried again at the next pass.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;

use swarm_api::spec::Protocol;

/// A published port: protocol and number.
pub type PortKey = (Protocol, u16);

/// The sockets holding the node's ports: kept open, never read. A TCP one listens: a
/// socket bound with SO_REUSEADDR (most servers set it) would take a port from a socket that
/// is only bound.
#[derive(Debug, Default)]
pub struct Held {
    sockets: BTreeMap<PortKey, OwnedFd>,
}

impl Held {
    /// Holds every port of `wanted` (TCP and UDP; an SCTP port is not held) and releases
    /// the others. Returns the ports another process holds, tried again at the next call.
    pub fn set(&mut self, wanted: &BTreeSet<PortKey>) -> BTreeSet<PortKey> {
        self.sockets.retain(|port, _| wanted.contains(port));
        let mut taken = BTreeSet::new();
        for &(protocol, number) in wanted {
            if self.sockets.contains_key(&(protocol, number)) {
                continue;
            }
            let address = (Ipv4Addr::UNSPECIFIED, number);
            let bound = match protocol {
                Protocol::Tcp => TcpListener::bind(address).map(OwnedFd::from),
                Protocol::Udp => UdpSocket::bind(address).map(OwnedFd::from),
                Protocol::Sctp => continue,
            };
            match bound {
                Ok(socket) => {
                    self.sockets.insert((protocol, number), socket);
                }
                Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                    taken.insert((protocol, number));
                }
                // Not another process's (no permission, say): the rules go on without it.
                Err(error) => {
                    tracing::warn!(port = number, %protocol, %error, "cannot hold a published port");
                }
            }
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_another_socket_holds_is_reported_until_it_is_free() {
        // A port some other socket holds, on every address as the node's would be.
        let other = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = other.local_addr().unwrap().port();
        let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let udp_port = udp.local_addr().unwrap().port();
        let wanted: BTreeSet<PortKey> = [(Protocol::Tcp, port), (Protocol::Udp, udp_port)].into();
        let mut held = Held::default();
        assert_eq!(held.set(&wanted), wanted, "both taken");
        drop((other, udp));
        assert!(held.set(&wanted).is_empty(), "both free, now held");
        assert!(held.sockets.contains_key(&(Protocol::Tcp, port)));
        assert!(
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_err(),
            "no other process can take it"
        );
        assert!(UdpSocket::bind((Ipv4Addr::UNSPECIFIED, udp_port)).is_err());
        held.set(&BTreeSet::new());
        assert!(held.sockets.is_empty());
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("released with its service");
    }
}
