//! The IO shell: a UDP loop and a TCP listener on one address, answering from the table
//! of the moment (swapped whole, lock-free, at every change), forwarding the rest to the
//! asking task's service's nameservers, or the node's own resolvers.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::DnsError;
use super::message::{self, Reply, Transport};
use super::table::Table;

/// How long a forwarded question may take, over every resolver of the node: a task's own
/// resolver gives up after 5 s (glibc's default), so it gets SERVFAIL first.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded questions awaiting an answer at once; past that, SERVFAIL at once: a task
/// flooding unknown names cannot pile up sockets on the node.
const FORWARDS_IN_FLIGHT: usize = 256;
/// TCP connections served at once, and how long one may stay idle.
const TCP_CONNECTIONS: usize = 256;
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The largest DNS message (over TCP; a UDP datagram is smaller).
const MAX_MESSAGE: usize = 65_535;

/// A node's DNS server: stops when dropped.
pub struct DnsServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    loops: Vec<JoinHandle<()>>,
}

struct Shared {
    /// Where the server listens: never a resolver it asks (it would ask itself forever).
    address: SocketAddr,
    table: ArcSwap<Table>,
    /// The node's resolvers, for names the table does not know.
    upstream: Vec<SocketAddr>,
    /// The port of the nameservers a service names.
    task_resolver_port: u16,
    forwards: Arc<Semaphore>,
    connections: Arc<Semaphore>,
}

impl DnsServer {
    /// Listens on `address` over UDP and TCP, on the same port (port 0: one the system
    /// picks). The address need not be the host's yet (the node's bridge may come up
    /// later): the sockets are bound freely and take traffic once it is. Answers from an
    /// empty table (every asker refused) until [`DnsServer::set_table`]. Forwards to
    /// `upstream`, or to the asker's service's nameservers at `task_resolver_port` (53 but
    /// in tests). Must be called within a tokio runtime.
    pub fn start(
        address: SocketAddr,
        upstream: Vec<SocketAddr>,
        task_resolver_port: u16,
    ) -> Result<DnsServer, DnsError> {
        let bind_error = |source| DnsError::Bind { address, source };
        let (udp, tcp) = bind_both(address).map_err(bind_error)?;
        let address = udp.local_addr().map_err(bind_error)?;
        let shared = Arc::new(Shared {
            address,
            table: ArcSwap::from_pointee(Table::default()),
            upstream: upstream.into_iter().filter(|u| *u != address).collect(),
            task_resolver_port,
            forwards: Arc::new(Semaphore::new(FORWARDS_IN_FLIGHT)),
            connections: Arc::new(Semaphore::new(TCP_CONNECTIONS)),
        });
        let loops = vec![
            tokio::spawn(serve_udp(Arc::new(udp), shared.clone())),
            tokio::spawn(serve_tcp(tcp, shared.clone())),
        ];
        tracing::info!(%address, "dns server listening");
        Ok(DnsServer {
            address,
            shared,
            loops,
        })
    }

    /// Where it listens (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Answers from `table` from now on.
    pub fn set_table(&self, table: Table) {
        self.shared.table.store(Arc::new(table));
    }
}

impl Shared {
    /// The reply to the task at `source` asking `query`, with the resolvers to forward it
    /// to when the reply is to forward. The table is read once, and its guard dropped
    /// before the caller awaits anything (a guard is meant to be short-lived).
    fn reply(
        &self,
        source: Ipv4Addr,
        query: &[u8],
        transport: Transport,
    ) -> (Reply, Vec<SocketAddr>) {
        let table = self.table.load();
        let reply = message::reply(&table, source, query, transport);
        let upstream = match reply {
            Reply::Forward => self.upstream_of(&table, source),
            _ => Vec::new(),
        };
        (reply, upstream)
    }

    /// The resolvers a question of the task at `source` goes to when `table` does not
    /// answer it: its service's nameservers, or the node's.
    fn upstream_of(&self, table: &Table, source: Ipv4Addr) -> Vec<SocketAddr> {
        let own = table.forwarders(source);
        if own.is_empty() {
            return self.upstream.clone();
        }
        own.iter()
            .map(|server| SocketAddr::new(*server, self.task_resolver_port))
            .filter(|server| *server != self.address)
            .collect()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.loops {
            task.abort();
        }
    }
}

/// How many ports the system picks before giving up on one free for TCP as well.
const PICKED_PORT_TRIES: usize = 16;

/// A UDP socket and a TCP listener on `address`'s port. For port 0 the system picks the
/// UDP port, which another process may hold for TCP: another port is picked then.
fn bind_both(address: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut tries = 0;
    loop {
        let udp = udp_socket(address)?;
        let picked = udp.local_addr()?;
        match tcp_listener(picked) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error)
                if address.port() == 0
                    && error.kind() == std::io::ErrorKind::AddrInUse
                    && tries + 1 < PICKED_PORT_TRIES =>
            {
                tries += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

fn udp_socket(address: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    bind_freely(&socket, address)?;
    UdpSocket::from_std(socket.into())
}

fn tcp_listener(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // A restarted node takes its port back while the last run's connections linger.
    socket.set_reuse_address(true)?;
    bind_freely(&socket, address)?;
    socket.listen(128)?;
    TcpListener::from_std(socket.into())
}

fn bind_freely(socket: &Socket, address: SocketAddr) -> std::io::Result<()> {
    match address {
        SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
        SocketAddr::V6(_) => socket.set_freebind_v6(true)?,
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())
}

/// The source of a question as a task's address (tasks have IPv4 only).
fn asker(peer: SocketAddr) -> Option<Ipv4Addr> {
    match peer {
        SocketAddr::V4(peer) => Some(*peer.ip()),
        SocketAddr::V6(peer) => peer.ip().to_ipv4_mapped(),
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buffer = vec![0u8; MAX_MESSAGE];
    loop {
        let (length, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                tracing::debug!(%error, "dns: cannot receive");
                continue;
            }
        };
        let Some(source) = asker(peer) else { continue };
        let query = &buffer[..length];
        let (reply, upstream) = shared.reply(source, query, Transport::Udp);
        match reply {
            Reply::Send(bytes) => {
                let _ = socket.send_to(&bytes, peer).await;
            }
            Reply::Drop => {}
            Reply::Forward => {
                let Ok(permit) = shared.forwards.clone().try_acquire_owned() else {
                    if let Reply::Send(bytes) = message::servfail(query) {
                        let _ = socket.send_to(&bytes, peer).await;
                    }
                    continue;
                };
                let (socket, query) = (socket.clone(), query.to_vec());
                tokio::spawn(async move {
                    let answer = forward(&upstream, &query, Transport::Udp).await;
                    drop(permit);
                    if let Reply::Send(bytes) =
                        answer.map_or_else(|| message::servfail(&query), Reply::Send)
                    {
                        let _ = socket.send_to(&bytes, peer).await;
                    }
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "dns: cannot accept");
                // Out of file descriptors, say: give the node a moment.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(source) = asker(peer) else { continue };
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = serve_connection(stream, source, &shared).await;
            drop(permit);
        });
    }
}

/// Questions on one TCP connection, each a 2-byte length then the message, until the
/// client closes or idles.
async fn serve_connection(
    mut stream: TcpStream,
    source: Ipv4Addr,
    shared: &Shared,
) -> std::io::Result<()> {
    let mut query = vec![0u8; MAX_MESSAGE];
    loop {
        let mut length = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut length)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return Ok(()),
        }
        let query = &mut query[..usize::from(u16::from_be_bytes(length))];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(query))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        let (reply, upstream) = shared.reply(source, query, Transport::Tcp);
        let reply = match reply {
            Reply::Forward => match forward(&upstream, query, Transport::Tcp).await {
                Some(answer) => Reply::Send(answer),
                None => message::servfail(query),
            },
            reply => reply,
        };
        let Reply::Send(bytes) = reply else {
            return Ok(());
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
    }
}

/// Asks the resolvers in turn, each given its share of what remains of
/// [`FORWARD_TIMEOUT`]; `None` when none answered (none configured, unreachable, silent).
async fn forward(upstream: &[SocketAddr], query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let deadline = Instant::now() + FORWARD_TIMEOUT;
    for (index, server) in upstream.iter().enumerate() {
        let share =
            deadline.saturating_duration_since(Instant::now()) / (upstream.len() - index) as u32;
        let attempt = async {
            match transport {
                Transport::Udp => ask_udp(*server, query).await,
                Transport::Tcp => ask_tcp(*server, query).await,
            }
        };
        match tokio::time::timeout(share, attempt).await {
            Ok(Ok(answer)) => return Some(answer),
            Ok(Err(error)) => tracing::debug!(%server, %error, "dns: resolver failed"),
            Err(_) => tracing::debug!(%server, "dns: resolver timed out"),
        }
    }
    None
}

async fn ask_udp(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buffer = vec![0u8; MAX_MESSAGE];
    loop {
        let length = socket.recv(&mut buffer).await?;
        // A stray datagram is not the answer: only one with the question's id is.
        if length >= 2 && buffer[..2] == query[..2] {
            buffer.truncate(length);
            return Ok(buffer);
        }
    }
}

async fn ask_tcp(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}
