//! The UDP listener.
//!
//! hickory-server spawns a task for every UDP query, and decodes and
//! encodes each one; on two cores at tens of thousands of queries per second
//! that costs more than finding the answer.  Here one loop per worker thread
//! receives queries, answers them and sends the answers, spawning nothing;
//! on Linux up to 32 datagrams each way per system call (`recvmmsg`,
//! `sendmmsg`, as Knot does), so that under load the calls cost little.
//!
//! A plain query (one question of class IN, no EDNS options; see
//! `crate::plain`) is answered straight from the compiled zone.  Each loop
//! also keeps the encoded answers to the plain queries it has seen for the
//! generation served: two queries with the same bytes after their ID get
//! the same answer but for the ID, so a repeated query costs a lookup and
//! a copy.  The cache is dropped whole when the generation changes.  A
//! cache that does not help (queries spread over more names than it
//! holds) costs more than it saves, so each loop watches its hit rate:
//! when fewer than a quarter of a window's lookups hit a full cache, it
//! drops it and answers without one for a few windows before learning
//! again.
//!
//! Everything else (decoding, EDNS options, truncation, malformed packets,
//! the query log) goes through the same handler and hickory code as TCP,
//! so the same tests cover both paths.

// recvmmsg/sendmmsg on arrays of iovecs and headers: each call with its
// SAFETY note.
#![allow(unsafe_code)]

use crate::dns::DnsHandler;
use crate::plain::PlainQuery;
use crate::zone::Served;
use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use tokio::net::UdpSocket;

/// Encoded answers kept per loop (about 100 bytes each plus the query).
const CACHE_ENTRIES: usize = 8192;
/// Lookups per window of the hit-rate watch.
const WINDOW: u32 = 65_536;
/// Windows without a cache after one that did not pay.
const PAUSE_WINDOWS: u32 = 4;

/// The UDP receive buffer asked for.
const RECEIVE_BUFFER: usize = 4 << 20;

/// The loops; stopped when dropped.
pub struct UdpListener {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for UdpListener {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl UdpListener {
    /// Serves `sockets` (from [`bind`]), one loop each.
    pub fn start(
        sockets: Vec<std::net::UdpSocket>,
        handler: Arc<DnsHandler>,
    ) -> std::io::Result<UdpListener> {
        let mut tasks = Vec::with_capacity(sockets.len());
        for socket in sockets {
            let socket = Arc::new(UdpSocket::from_std(socket)?);
            tasks.push(tokio::spawn(serve(socket, handler.clone())));
        }
        Ok(UdpListener { tasks })
    }
}

/// The UDP socket bound to `address`, once for each of `loops` loops.  One
/// socket shared keeps the loops evenly loaded whatever the clients' ports
/// (with a socket per loop and SO_REUSEPORT the kernel hashes each client
/// to one loop; no faster here, measured, and a port picked by the kernel
/// could then be shared with another process).
pub fn bind(address: SocketAddr, loops: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(error) = socket.set_recv_buffer_size(RECEIVE_BUFFER) {
        tracing::debug!(%error, "setting the UDP receive buffer size");
    }
    socket.bind(&address.into())?;
    socket.set_nonblocking(true)?;
    let socket: std::net::UdpSocket = socket.into();
    (0..loops.max(1)).map(|_| socket.try_clone()).collect()
}

async fn serve(socket: Arc<UdpSocket>, handler: Arc<DnsHandler>) {
    let mut batch = Batch::new();
    let mut cache = Cache::default();
    // What is served, as of which version (see
    // `ServerState::served_version`); weakly, so that a replaced
    // generation is freed by whoever replaced it, not by an idle loop.
    let mut held: Option<(u64, Weak<Served>)> = None;
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
    loop {
        let received = match batch.receive(&socket) {
            Ok(received) => received,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                if let Err(error) = socket.readable().await {
                    tracing::debug!(%error, "waiting for DNS queries over UDP");
                    tokio::task::yield_now().await;
                }
                continue;
            }
            Err(error) => {
                // An ICMP error for an earlier answer, or a transient
                // failure: nothing to answer.  Yield so that a persistent
                // error cannot spin.
                tracing::debug!(%error, "receiving DNS queries over UDP");
                tokio::task::yield_now().await;
                continue;
            }
        };
        // One atomic read per batch while the config stays, rather than
        // the lock and a reference count both cores share per query.
        let version = handler.state.served_version();
        let kept =
            held.as_ref().filter(|(seen, _)| *seen == version).and_then(|(_, w)| w.upgrade());
        let served = kept.unwrap_or_else(|| {
            let served = handler.state.served();
            held = Some((version, Arc::downgrade(&served)));
            served
        });
        for (query, src) in batch.queries(received) {
            if let Some(reply) = answer(&handler, &served, &mut cache, query, src).await {
                replies.push((reply, src));
            }
        }
        // Replaced during the batch: freeing it is not this loop's work.
        if Arc::strong_count(&served) == 1 {
            crate::state::retire(served);
        }
        send_all(&socket, &replies).await;
        replies.clear();
    }
}

/// Sends `replies`, waiting while the socket's buffer is full; an answer
/// that cannot be sent is dropped (the client asks again).
async fn send_all(socket: &UdpSocket, replies: &[(Vec<u8>, SocketAddr)]) {
    let mut sent = 0;
    while sent < replies.len() {
        match send_batch(socket, &replies[sent..]) {
            Ok(count) => sent += count.max(1),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                if let Err(error) = socket.writable().await {
                    tracing::debug!(%error, "waiting to send DNS answers over UDP");
                    return;
                }
            }
            Err(error) => {
                tracing::debug!(%error, src = %replies[sent].1, "sending a DNS answer over UDP");
                sent += 1;
            }
        }
    }
}

/// Datagrams per system call, each way (recvmmsg and sendmmsg on Linux,
/// as Knot does): under load the cost of a call is spread over many
/// queries; when idle a batch is one query.
const BATCH: usize = 32;

/// Buffers for a batch of queries.
struct Batch {
    /// Each as large as a UDP payload can be: a query is never cut.
    buffers: Vec<Box<[u8]>>,
    received: Vec<(usize, SocketAddr)>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            buffers: (0..BATCH).map(|_| vec![0u8; 65_535].into_boxed_slice()).collect(),
            received: Vec::with_capacity(BATCH),
        }
    }

    /// The queries of the last `receive`.
    fn queries(&self, count: usize) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.received[..count]
            .iter()
            .zip(&self.buffers)
            .map(|((len, src), buffer)| (&buffer[..*len], *src))
    }

    /// Receives what is waiting, up to [`BATCH`] datagrams; `WouldBlock`
    /// when nothing is.
    #[cfg(target_os = "linux")]
    fn receive(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        let Batch { buffers, received } = self;
        socket.try_io(tokio::io::Interest::READABLE, || {
            let mut addresses: [socket2::SockAddrStorage; BATCH] =
                std::array::from_fn(|_| socket2::SockAddrStorage::zeroed());
            // SAFETY: all-zero is a valid value of these C structs.
            let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for ((header, iovec), (buffer, address)) in
                headers.iter_mut().zip(&mut iovecs).zip(buffers.iter_mut().zip(&mut addresses))
            {
                *iovec =
                    libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: buffer.len() };
                header.msg_hdr.msg_namelen = address.size_of();
                header.msg_hdr.msg_name = (address as *mut socket2::SockAddrStorage).cast();
                header.msg_hdr.msg_iov = iovec;
                header.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: each header points to a live buffer of the length
            // given and to room for any socket address; the kernel writes
            // no further.
            let count = unsafe {
                libc::recvmmsg(
                    fd,
                    headers.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if count < 0 {
                return Err(std::io::Error::last_os_error());
            }
            received.clear();
            for (header, address) in headers.iter().zip(addresses).take(count as usize) {
                // SAFETY: the kernel wrote a socket address of this length.
                let address =
                    unsafe { socket2::SockAddr::new(address, header.msg_hdr.msg_namelen) };
                // A source that is not an IP address (impossible on an IP
                // socket) reads as port 0, which is never answered.
                let src =
                    address.as_socket().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                received.push((header.msg_len as usize, src));
            }
            Ok(count as usize)
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn receive(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        let (len, src) = socket.try_recv_from(&mut self.buffers[0])?;
        self.received.clear();
        self.received.push((len, src));
        Ok(1)
    }
}

/// Sends the first of `replies` it can, up to [`BATCH`]: how many.
#[cfg(target_os = "linux")]
fn send_batch(socket: &UdpSocket, replies: &[(Vec<u8>, SocketAddr)]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let replies = &replies[..replies.len().min(BATCH)];
    let addresses: Vec<socket2::SockAddr> = replies.iter().map(|(_, to)| (*to).into()).collect();
    socket.try_io(tokio::io::Interest::WRITABLE, || {
        // SAFETY: all-zero is a valid value of these C structs.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for ((header, iovec), ((reply, _), address)) in
            headers.iter_mut().zip(&mut iovecs).zip(replies.iter().zip(&addresses))
        {
            // The kernel only reads through these pointers.
            *iovec =
                libc::iovec { iov_base: reply.as_ptr() as *mut libc::c_void, iov_len: reply.len() };
            header.msg_hdr.msg_name = address.as_ptr() as *mut libc::c_void;
            header.msg_hdr.msg_namelen = address.len();
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: each header points to a live reply and address of the
        // lengths given, for the first `replies.len()` headers.
        let count = unsafe {
            libc::sendmmsg(fd, headers.as_mut_ptr(), replies.len() as u32, libc::MSG_DONTWAIT)
        };
        if count < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(count as usize)
    })
}

#[cfg(not(target_os = "linux"))]
fn send_batch(socket: &UdpSocket, replies: &[(Vec<u8>, SocketAddr)]) -> std::io::Result<usize> {
    let (reply, to) = &replies[0];
    socket.try_send_to(reply, *to).map(|_| 1)
}

async fn answer(
    handler: &DnsHandler,
    served: &Arc<Served>,
    cache: &mut Cache,
    query: &[u8],
    src: SocketAddr,
) -> Option<Vec<u8>> {
    if !answerable(src) {
        return None;
    }
    // With the query log on, every query takes the full path, which logs.
    let plain = handler.state.query_log.is_none().then(|| PlainQuery::parse(query)).flatten();
    let cached = plain.as_ref().filter(|_| cache.in_use());
    if let Some(plain) = &plain {
        if cached.is_some() {
            if !cache.serves(served) {
                cache.reset(served);
            }
            if let Some(hit) = cache.lookup(plain.key()) {
                hit.counter.inc();
                let mut reply = hit.reply.clone();
                reply[..2].copy_from_slice(&query[..2]);
                return Some(reply);
            }
        }
        if let Some((reply, labels)) =
            crate::plain::answer(served, plain, crate::metrics::Transport::Udp)
        {
            let counter = handler.state.metrics.query_counter(labels);
            counter.inc();
            if cached.is_some() {
                cache.keep(plain.key(), &reply, counter);
            }
            return Some(reply);
        }
    }
    let (reply, labels) = handler.answer_udp(query, src).await?;
    if let Some(plain) = cached {
        cache.keep(plain.key(), &reply, handler.state.metrics.query_counter(labels));
    }
    Some(reply)
}

/// Whether an answer can go to `src`: not to port 0, an unspecified
/// address or an IPv4 broadcast address (as hickory-server's own UDP
/// listener drops them): a forged source must not turn an answer into
/// traffic for a whole network.
pub(crate) fn answerable(src: SocketAddr) -> bool {
    let broadcast = match src.ip() {
        std::net::IpAddr::V4(ip) => ip.is_broadcast(),
        std::net::IpAddr::V6(_) => false,
    };
    src.port() != 0 && !src.ip().is_unspecified() && !broadcast
}

#[derive(Default)]
struct Cache {
    /// The generation the entries were answered from (compared by
    /// pointer: a new config is a new `Served`).  Weak, so that an idle
    /// loop does not keep a replaced generation in memory.
    served: Weak<Served>,
    /// Query bytes after the ID → the answer.
    entries: HashMap<Vec<u8>, Cached>,
    /// Lookups and hits in the current window.
    lookups: u32,
    hits: u32,
    /// Queries left to answer without the cache.
    paused: u32,
}

impl Cache {
    fn serves(&self, served: &Arc<Served>) -> bool {
        std::ptr::eq(self.served.as_ptr(), Arc::as_ptr(served))
    }

    fn reset(&mut self, served: &Arc<Served>) {
        self.entries.clear();
        self.served = Arc::downgrade(served);
    }

    /// Whether to use the cache for this query (counts down a pause).
    fn in_use(&mut self) -> bool {
        if self.paused == 0 {
            return true;
        }
        self.paused -= 1;
        false
    }

    /// Keeps `reply` as the answer to queries with `key`, while there is
    /// room.
    fn keep(&mut self, key: &[u8], reply: &[u8], counter: Counter) {
        if self.entries.len() < CACHE_ENTRIES {
            self.entries.insert(key.to_vec(), Cached { reply: reply.to_vec(), counter });
        }
    }

    fn lookup(&mut self, key: &[u8]) -> Option<&Cached> {
        self.lookups += 1;
        if self.lookups >= WINDOW {
            let full = self.entries.len() >= CACHE_ENTRIES;
            if full && self.hits < self.lookups / 4 {
                self.entries.clear();
                self.paused = PAUSE_WINDOWS * WINDOW;
            }
            self.lookups = 0;
            self.hits = 0;
        }
        let hit = self.entries.get(key);
        if hit.is_some() {
            self.hits += 1;
        }
        hit
    }
}

struct Cached {
    reply: Vec<u8>,
    /// `dns_server_queries_total` for this answer's labels.
    counter: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full cache that rarely hits is dropped and the loop answers
    /// without one for a while; one that hits stays.
    #[test]
    fn a_cache_that_does_not_pay_is_paused() {
        let mut cache = Cache::default();
        for i in 0..CACHE_ENTRIES as u32 {
            let counter = Counter::default();
            cache.entries.insert(i.to_be_bytes().to_vec(), Cached { reply: vec![0; 12], counter });
        }
        // A window of lookups, one in ten a hit.
        for i in 0..WINDOW {
            let key = if i % 10 == 0 { 1u32 } else { u32::MAX - i };
            cache.lookup(&key.to_be_bytes());
        }
        assert!(cache.entries.is_empty(), "dropped");
        assert!(!cache.in_use(), "paused");
        assert_eq!(cache.paused, PAUSE_WINDOWS * WINDOW - 1);

        let mut cache = Cache::default();
        for i in 0..CACHE_ENTRIES as u32 {
            let counter = Counter::default();
            cache.entries.insert(i.to_be_bytes().to_vec(), Cached { reply: vec![0; 12], counter });
        }
        for i in 0..WINDOW {
            cache.lookup(&(i % 100).to_be_bytes());
        }
        assert_eq!(cache.entries.len(), CACHE_ENTRIES, "a cache that hits stays");
        assert!(cache.in_use());
    }

    #[test]
    fn no_answers_to_sources_that_cannot_be_answered() {
        assert!(answerable("127.0.0.1:5353".parse().unwrap()));
        assert!(answerable("[::1]:5353".parse().unwrap()));
        assert!(!answerable("127.0.0.1:0".parse().unwrap()));
        assert!(!answerable("0.0.0.0:5353".parse().unwrap()));
        assert!(!answerable("[::]:5353".parse().unwrap()));
        assert!(!answerable("255.255.255.255:5353".parse().unwrap()));
    }
}
