//! The mesh's userspace path, for the ports whose tasks take a PROXY protocol v2 header
//! (HAProxy's `send-proxy-v2`): the node listens on the published port itself, picks the
//! backend with the fewest open connections (ties in turn), tries another when a connect
//! fails (before the client sees an error), writes the header carrying the client's
//! address and the address it reached, then relays both ways. A backend on another node is
//! that node's address and the published port: the connection's socket carries
//! [`PROXY_SOCKET_MARK`], so this node's rules mark it as the mesh's on its way, and the
//! other node's kernel rules hand it to one of its own tasks, header and all. Each port
//! holds at most [`MAX_CONNECTIONS`] connections: past that, new ones wait in the listen
//! backlog, so a slow or silent client cannot exhaust the node. The bytes relayed are
//! counted per port as they go ([`RelayedBytes`], for `/metrics`): the kernel's counters
//! do not see this path.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::PROXY_SOCKET_MARK;

/// Open connections per port at most.
pub const MAX_CONNECTIONS: usize = 8192;
/// Backends tried for one connection at most.
const ATTEMPTS: usize = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this much of what a client sent before its backend answered rides with the
/// header.
const EARLY_BYTES: usize = 4096;

/// The 12 bytes that open every PROXY protocol v2 header.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The PROXY protocol v2 header of a TCP over IPv4 connection from `client` to `reached`.
pub fn header_v2(client: SocketAddrV4, reached: SocketAddrV4) -> [u8; 28] {
    let mut header = [0u8; 28];
    header[..12].copy_from_slice(&SIGNATURE);
    header[12] = 0x21; // version 2, command PROXY
    header[13] = 0x11; // AF_INET, STREAM
    header[14..16].copy_from_slice(&12u16.to_be_bytes());
    header[16..20].copy_from_slice(&client.ip().octets());
    header[20..24].copy_from_slice(&reached.ip().octets());
    header[24..26].copy_from_slice(&client.port().to_be_bytes());
    header[26..28].copy_from_slice(&reached.port().to_be_bytes());
    header
}

/// The bytes the node's userspace path relayed, by published port, since the daemon
/// started: shared by the proxies that count and the metrics that read. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RelayedBytes {
    ports: Arc<Mutex<BTreeMap<u16, Arc<Relayed>>>>,
}

/// One port's bytes: to its tasks (from the clients), and back.
#[derive(Debug, Default)]
struct Relayed {
    to_tasks: AtomicU64,
    to_clients: AtomicU64,
}

impl RelayedBytes {
    fn port(&self, port: u16) -> Arc<Relayed> {
        self.ports
            .lock()
            .expect("not poisoned")
            .entry(port)
            .or_default()
            .clone()
    }

    /// Each port's bytes so far: (to its tasks, to the clients).
    pub fn snapshot(&self) -> BTreeMap<u16, (u64, u64)> {
        self.ports
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(port, relayed)| {
                let to_tasks = relayed.to_tasks.load(Ordering::Relaxed);
                (
                    *port,
                    (to_tasks, relayed.to_clients.load(Ordering::Relaxed)),
                )
            })
            .collect()
    }
}

/// A task's end of a relayed connection, counting what is written to it and read from it.
struct Counted {
    server: TcpStream,
    relayed: Arc<Relayed>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.server).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.relayed.to_clients.fetch_add(read, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.server).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            self.relayed
                .to_tasks
                .fetch_add(written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.server).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.server).poll_shutdown(cx)
    }
}

/// The node's userspace listeners, by published port.
#[derive(Debug, Default)]
pub struct Proxies {
    ports: BTreeMap<u16, Listener>,
    bytes: RelayedBytes,
}

#[derive(Debug)]
struct Listener {
    backends: watch::Sender<Vec<SocketAddrV4>>,
    accept: JoinHandle<()>,
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for listener in self.ports.values() {
            listener.accept.abort();
        }
    }
}

impl Proxies {
    /// Listeners that count what they relay into `bytes`.
    pub fn counting_into(bytes: RelayedBytes) -> Proxies {
        Proxies {
            ports: BTreeMap::new(),
            bytes,
        }
    }

    /// Brings the listeners to `desired` (published port → backends): new ports bound,
    /// backends swapped in place (open connections stay where they are), ports gone closed
    /// (their open connections drain). Returns the ports that could not be bound (taken by
    /// something else on the node), each tried again at the next call. Call it inside a
    /// tokio runtime.
    pub fn set(
        &mut self,
        desired: &BTreeMap<u16, Vec<SocketAddrV4>>,
    ) -> Vec<(u16, std::io::Error)> {
        self.ports.retain(|port, listener| {
            let keep = desired.contains_key(port);
            if !keep {
                listener.accept.abort();
                tracing::info!(port, "mesh proxy closed");
            }
            keep
        });
        let mut failed = Vec::new();
        for (port, backends) in desired {
            if let Some(listener) = self.ports.get(port) {
                listener.backends.send_if_modified(|now| {
                    let changed = now != backends;
                    now.clone_from(backends);
                    changed
                });
                continue;
            }
            match bind(*port) {
                Ok(socket) => {
                    let (sender, receiver) = watch::channel(backends.clone());
                    let accept = tokio::spawn(serve(socket, receiver, self.bytes.port(*port)));
                    tracing::info!(port, "mesh proxy listening");
                    self.ports.insert(
                        *port,
                        Listener {
                            backends: sender,
                            accept,
                        },
                    );
                }
                Err(error) => failed.push((*port, error)),
            }
        }
        failed
    }
}

fn bind(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
    socket.listen(1024)
}

/// Open connections per backend: the least loaded takes the next one.
#[derive(Debug, Default)]
struct Load {
    open: HashMap<SocketAddrV4, usize>,
    turn: usize,
}

impl Load {
    /// The backend of `backends` not in `tried` with the fewest open connections, ties
    /// taken in turn; counted open.
    fn pick(&mut self, backends: &[SocketAddrV4], tried: &[SocketAddrV4]) -> Option<SocketAddrV4> {
        self.turn = self.turn.wrapping_add(1);
        let count = backends.len();
        let chosen = (0..count)
            .map(|i| backends[(self.turn + i) % count])
            .filter(|b| !tried.contains(b))
            .min_by_key(|b| self.open.get(b).copied().unwrap_or(0))?;
        *self.open.entry(chosen).or_default() += 1;
        Some(chosen)
    }

    fn done(&mut self, backend: SocketAddrV4) {
        if let Some(open) = self.open.get_mut(&backend) {
            *open -= 1;
            if *open == 0 {
                self.open.remove(&backend);
            }
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    backends: watch::Receiver<Vec<SocketAddrV4>>,
    relayed: Arc<Relayed>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let load = Arc::new(Mutex::new(Load::default()));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (client, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(%error, "mesh proxy cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let backends = backends.borrow().clone();
        let load = load.clone();
        let relayed = relayed.clone();
        tokio::spawn(async move {
            relay(client, &backends, &load, relayed).await;
            drop(permit);
        });
    }
}

/// A connection to `backend` from a socket marked as the mesh's.
async fn connect(backend: SocketAddrV4) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    // Needs CAP_NET_ADMIN, as the rest of the mesh does. Refused, the connection goes
    // unmarked: a local task takes it as well, another node as a client's.
    if let Err(error) = socket2::SockRef::from(&socket).set_mark(PROXY_SOCKET_MARK) {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(%error, "mesh proxy: cannot mark its connections to other nodes");
        });
    }
    socket.connect(SocketAddr::V4(backend)).await
}

/// One client's connection: a backend connected (trying another on failure), the header,
/// then bytes both ways until either side closes.
async fn relay(
    mut client: TcpStream,
    backends: &[SocketAddrV4],
    load: &Mutex<Load>,
    relayed: Arc<Relayed>,
) {
    let (Ok(SocketAddr::V4(from)), Ok(SocketAddr::V4(reached))) =
        (client.peer_addr(), client.local_addr())
    else {
        return;
    };
    let mut tried = Vec::new();
    while tried.len() < ATTEMPTS {
        let Some(backend) = load.lock().expect("not poisoned").pick(backends, &tried) else {
            break;
        };
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(backend)).await;
        match connected {
            Ok(Ok(mut server)) => {
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                // The header and what the client sent meanwhile (its request, usually) go
                // in one write: one packet fewer per connection than the header alone. A
                // client that waits for the server first gets the header alone.
                let mut first = header_v2(from, reached).to_vec();
                let mut early = [0u8; EARLY_BYTES];
                let early = match client.try_read(&mut early) {
                    Ok(read) => &early[..read],
                    Err(_) => &[][..],
                };
                first.extend_from_slice(early);
                if server.write_all(&first).await.is_ok() {
                    relayed
                        .to_tasks
                        .fetch_add(early.len() as u64, Ordering::Relaxed);
                    let mut server = Counted { server, relayed };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
                load.lock().expect("not poisoned").done(backend);
                return;
            }
            _ => {
                load.lock().expect("not poisoned").done(backend);
                tracing::debug!(%backend, "mesh proxy: connect failed, trying another");
                tried.push(backend);
            }
        }
    }
    tracing::debug!(client = %from, "mesh proxy: no backend answered");
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[test]
    fn the_header_is_haproxys_v2_for_tcp_over_ipv4() {
        let header = header_v2(
            "192.0.2.7:51000".parse().unwrap(),
            "198.51.100.1:8443".parse().unwrap(),
        );
        assert_eq!(&header[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(header[12..16], [0x21, 0x11, 0, 12]);
        assert_eq!(header[16..20], [192, 0, 2, 7]);
        assert_eq!(header[20..24], [198, 51, 100, 1]);
        assert_eq!(u16::from_be_bytes([header[24], header[25]]), 51000);
        assert_eq!(u16::from_be_bytes([header[26], header[27]]), 8443);
    }

    #[test]
    fn the_least_loaded_backend_is_picked_in_turn_and_a_tried_one_skipped() {
        let (a, b) = (
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        );
        let mut load = Load::default();
        let first = load.pick(&[a, b], &[]).unwrap();
        let second = load.pick(&[a, b], &[]).unwrap();
        assert_ne!(first, second, "the other one has fewer open");
        load.done(first);
        assert_eq!(load.pick(&[a, b], &[]), Some(first));
        assert_eq!(load.pick(&[a, b], &[a, b]), None);
        assert_eq!(load.pick(&[a, b], &[a]), Some(b));
    }

    /// Through a real listener on loopback: a dead backend is skipped, the live one gets
    /// the header with the client's address, then the client's bytes, and answers.
    #[tokio::test]
    async fn a_connection_reaches_a_live_backend_after_the_header() {
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let SocketAddr::V4(live) = backend.local_addr().unwrap() else {
            unreachable!()
        };
        // A port nothing listens on: its connect is refused.
        let dead = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let SocketAddr::V4(dead) = listener.local_addr().unwrap() else {
                unreachable!()
            };
            dead
        };
        let port = {
            let probe = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let bytes = RelayedBytes::default();
        let mut proxies = Proxies::counting_into(bytes.clone());
        for _ in 0..2 {
            let failed = proxies.set(&[(port, vec![dead, live])].into());
            assert!(failed.is_empty(), "{failed:?}");
        }
        let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let SocketAddr::V4(client_address) = client.local_addr().unwrap() else {
            unreachable!()
        };
        client.write_all(b"ping").await.unwrap();
        let (mut server, _) = backend.accept().await.unwrap();
        let mut received = [0u8; 32];
        server.read_exact(&mut received).await.unwrap();
        let reached = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        assert_eq!(received[..28], header_v2(client_address, reached));
        assert_eq!(&received[28..], b"ping");
        server.write_all(b"pong").await.unwrap();
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"pong");
        assert_eq!(
            bytes.snapshot()[&port],
            (4, 4),
            "the client's bytes and the answer's, not the header"
        );

        proxies.set(&BTreeMap::new());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "closed with its port"
        );
    }
}
