//! The UDP listener.
//!
//! hickory-server spawns a task for every UDP query, and decodes and
//! encodes each one; on two cores at tens of thousands of queries per second
//! that costs more than finding the answer.  Here one thread per core
//! receives queries, answers them and sends the answers, spawning nothing;
//! on Linux up to 32 datagrams each way per system call (`recvmmsg`,
//! `sendmmsg`, as Knot does), so that under load the calls cost little.
//! The threads block in `recvmmsg` itself (until one datagram is there,
//! then taking what else is), rather than waiting in the async runtime's
//! `epoll`: that is one system call per batch instead of two or three, and
//! the kernel wakes one waiting thread per datagram where readiness woke
//! every loop sharing the socket (measured in docs/PERFORMANCE.md).
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
//! so the same tests cover both paths; the loop runs it on the async
//! runtime and waits for it, as it waits for nothing else.

// recvmmsg/sendmmsg on arrays of iovecs and headers, and shutdown: each
// call with its SAFETY note.
#![allow(unsafe_code)]

use crate::dns::DnsHandler;
use crate::plain::PlainQuery;
use crate::zone::Served;
use prometheus_client::metrics::counter::Counter;
use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Encoded answers kept per loop (about 100 bytes each plus the query).
const CACHE_ENTRIES: usize = 8192;
/// Lookups per window of the hit-rate watch.
const WINDOW: u32 = 65_536;
/// Windows without a cache after one that did not pay.
const PAUSE_WINDOWS: u32 = 4;

/// The UDP receive buffer asked for.
const RECEIVE_BUFFER: usize = 4 << 20;

/// How long a loop blocks in one call before it looks whether it should
/// stop (stopping wakes it at once on Linux; this bounds it elsewhere), and
/// how long it waits to send a batch before dropping it.
const BLOCK_LIMIT: Duration = Duration::from_secs(1);

/// The loops; stopped (and their threads joined, so the port is free)
/// when dropped.
pub struct UdpListener {
    stop: Arc<AtomicBool>,
    socket: Option<UdpSocket>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for UdpListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(socket) = &self.socket {
            wake_receivers(socket);
        }
        for thread in &self.threads {
            thread.thread().unpark();
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a UDP loop panicked");
            }
        }
    }
}

/// Wakes the threads blocked receiving on `socket` (all its clones): on
/// Linux a shutdown of an unconnected UDP socket fails with ENOTCONN but
/// marks it shut for reading and wakes every waiter, whose call returns.
#[cfg(target_os = "linux")]
fn wake_receivers(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; shutdown has no other precondition.
    unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_RDWR) };
}

#[cfg(not(target_os = "linux"))]
fn wake_receivers(_socket: &UdpSocket) {}

/// Full batches in a row that make a loop wake its helper: one full batch
/// is common under a steady load one loop keeps up with (a client's burst),
/// several in a row mean the queue is growing.
const BACKLOG: u32 = 4;

/// How a loop waits for queries (also the `role` label of its metrics).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Role {
    /// Blocks in `recvmmsg` for the next datagram.  The first loop.
    Receiver,
    /// Parked until the loop before it takes [`BACKLOG`] full batches in a
    /// row (more is waiting than one loop keeps up with), then takes
    /// batches without blocking until one comes short.  Two loops both
    /// blocking on the socket split a stream of queries between them: in
    /// one dnsperf run here 4 datagrams per call and 232,000 context
    /// switches, against 8 and 72,000 for one loop alone, for the same
    /// queries (docs/PERFORMANCE.md).  A helper works only when one loop
    /// is behind.
    Helper,
}

impl prometheus_client::encoding::EncodeLabelValue for Role {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> std::fmt::Result {
        use std::fmt::Write;
        encoder.write_str(match self {
            Role::Receiver => "receiver",
            Role::Helper => "helper",
        })
    }
}

impl UdpListener {
    /// Serves `sockets` (from [`bind`]), one loop (thread) each: the first
    /// receives, each further one helps the one before it when that one
    /// falls behind (see [`Role`]).  The full path runs on the current
    /// async runtime.
    pub fn start(
        sockets: Vec<UdpSocket>,
        handler: Arc<DnsHandler>,
    ) -> std::io::Result<UdpListener> {
        let runtime = tokio::runtime::Handle::current();
        let stop = Arc::new(AtomicBool::new(false));
        let waker = sockets.first().map(UdpSocket::try_clone).transpose()?;
        let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::with_capacity(sockets.len());
        // The last first, so that each loop knows the one it wakes.
        for (index, socket) in sockets.into_iter().enumerate().rev() {
            let role = if index == 0 { Role::Receiver } else { Role::Helper };
            let next = threads.last().map(|t| t.thread().clone());
            let (handler, runtime, halt) = (handler.clone(), runtime.clone(), stop.clone());
            let thread =
                std::thread::Builder::new().name(format!("dns-udp-{index}")).spawn(move || {
                    // Freeing a replaced generation is handed to the
                    // runtime's blocking pool (`state::retire`).
                    let _runtime = runtime.enter();
                    let counters = handler.state.metrics.udp_loop(role);
                    let mut lp =
                        Loop { socket, role, next, handler: &handler, runtime: &runtime, counters };
                    lp.serve(&halt)
                });
            match thread {
                Ok(thread) => threads.push(thread),
                Err(error) => {
                    // Stops those already started.
                    drop(UdpListener { stop, socket: waker, threads });
                    return Err(error);
                }
            }
        }
        Ok(UdpListener { stop, socket: waker, threads })
    }
}

/// The UDP socket bound to `address`, once for each of `loops` loops.  One
/// socket shared keeps the loops evenly loaded whatever the clients' ports
/// (with a socket per loop and SO_REUSEPORT the kernel hashes each client
/// to one loop; no faster here, measured, and a port picked by the kernel
/// could then be shared with another process).  Blocking, with time
/// limits: the loops block in their calls.
pub fn bind(address: SocketAddr, loops: usize) -> std::io::Result<Vec<UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(error) = socket.set_recv_buffer_size(RECEIVE_BUFFER) {
        tracing::debug!(%error, "setting the UDP receive buffer size");
    }
    socket.bind(&address.into())?;
    socket.set_read_timeout(Some(BLOCK_LIMIT))?;
    socket.set_write_timeout(Some(BLOCK_LIMIT))?;
    let socket: UdpSocket = socket.into();
    (0..loops.max(1)).map(|_| socket.try_clone()).collect()
}

/// One loop's thread.
struct Loop<'a> {
    socket: UdpSocket,
    role: Role,
    /// The helper to wake when a batch comes full.
    next: Option<std::thread::Thread>,
    handler: &'a DnsHandler,
    runtime: &'a tokio::runtime::Handle,
    counters: crate::metrics::UdpLoopCounters,
}

impl Loop<'_> {
    fn serve(&mut self, stop: &AtomicBool) {
        let mut batch = Batch::new();
        let mut cache = Cache::default();
        // What is served, as of which version (see
        // `ServerState::served_version`); weakly, so that a replaced
        // generation is freed by whoever replaced it, not by an idle loop.
        let mut held: Option<(u64, Weak<Served>)> = None;
        let mut replies = Replies::default();
        let handler = self.handler;
        let mut full_in_a_row = 0;
        while !stop.load(Ordering::Relaxed) {
            let blocking = self.role == Role::Receiver;
            let received = match batch.receive(&self.socket, blocking) {
                Ok(received) => received,
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    if !blocking {
                        std::thread::park_timeout(BLOCK_LIMIT);
                    }
                    continue;
                }
                Err(error) => {
                    // An ICMP error for an earlier answer, or a transient
                    // failure: nothing to answer.  Pause so that a
                    // persistent error cannot spin.
                    tracing::debug!(%error, "receiving DNS queries over UDP");
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            };
            if stop.load(Ordering::Relaxed) {
                // Woken by `wake_receivers`: what was "received" is nothing.
                break;
            }
            self.counters.batches.inc();
            self.counters.datagrams.inc_by(received as u64);
            // A backlog: more is waiting than this loop takes in time.
            full_in_a_row = if received == BATCH { full_in_a_row + 1 } else { 0 };
            if full_in_a_row >= BACKLOG
                && let Some(next) = &self.next
            {
                if full_in_a_row == BACKLOG {
                    self.counters.backlogs.inc();
                }
                next.unpark();
            }
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
                answer(handler, &served, &mut cache, query, src, self.runtime, &mut replies);
            }
            // Replaced during the batch: freeing it is not this loop's work.
            if Arc::strong_count(&served) == 1 {
                crate::state::retire(served);
            }
            send_all(&self.socket, &replies, &self.counters.dropped);
            replies.clear();
            if !blocking && received < BATCH {
                // Caught up: back to waiting to be woken.
                std::thread::park_timeout(BLOCK_LIMIT);
            }
        }
    }
}

/// The answers of a batch, back to back in one buffer (no allocation per
/// answer), each with where it ends and where it goes.
#[derive(Default)]
struct Replies {
    bytes: Vec<u8>,
    each: Vec<(usize, SocketAddr)>,
    /// Where a plain answer is built before it is kept in the cache and
    /// copied here.
    scratch: Vec<u8>,
}

impl Replies {
    /// Ends the answer written to `bytes` since the last one: it goes to
    /// `to`.
    fn push(&mut self, to: SocketAddr) {
        self.each.push((self.bytes.len(), to));
    }

    fn len(&self) -> usize {
        self.each.len()
    }

    /// The `index`th answer and where it goes.
    fn get(&self, index: usize) -> (&[u8], SocketAddr) {
        let start = index.checked_sub(1).map_or(0, |before| self.each[before].0);
        let (end, to) = self.each[index];
        (&self.bytes[start..end], to)
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.each.clear();
    }
}

/// Sends `replies`, waiting while the socket's buffer is full; an answer
/// that cannot be sent is dropped (the client asks again).  When the buffer
/// stays full for [`BLOCK_LIMIT`] the rest of the batch is dropped too,
/// rather than waiting that long again for each answer.  Each answer
/// dropped is counted in `dropped`.
fn send_all(socket: &UdpSocket, replies: &Replies, dropped: &Counter) {
    use std::io::ErrorKind;
    let mut sent = 0;
    while sent < replies.len() {
        match send_batch(socket, replies, sent) {
            Ok(count) => sent += count.max(1),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let rest = replies.len() - sent;
                dropped.inc_by(rest as u64);
                tracing::debug!(
                    dropped = rest,
                    "the UDP send buffer stayed full: DNS answers dropped"
                );
                return;
            }
            Err(error) => {
                dropped.inc();
                tracing::debug!(%error, src = %replies.get(sent).1, "sending a DNS answer over UDP");
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

    /// Receives up to [`BATCH`] datagrams: what is waiting, and if
    /// `blocking` and nothing is, the next one (`WouldBlock` when none comes
    /// within [`BLOCK_LIMIT`]).
    #[cfg(target_os = "linux")]
    fn receive(&mut self, socket: &UdpSocket, blocking: bool) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        let Batch { buffers, received } = self;
        let mut addresses: [socket2::SockAddrStorage; BATCH] =
            std::array::from_fn(|_| socket2::SockAddrStorage::zeroed());
        // SAFETY: all-zero is a valid value of these C structs.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for ((header, iovec), (buffer, address)) in
            headers.iter_mut().zip(&mut iovecs).zip(buffers.iter_mut().zip(&mut addresses))
        {
            *iovec = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: buffer.len() };
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
                if blocking { libc::MSG_WAITFORONE } else { libc::MSG_DONTWAIT },
                std::ptr::null_mut(),
            )
        };
        if count < 0 {
            return Err(std::io::Error::last_os_error());
        }
        received.clear();
        for (header, address) in headers.iter().zip(addresses).take(count as usize) {
            // SAFETY: the kernel wrote a socket address of this length.
            let address = unsafe { socket2::SockAddr::new(address, header.msg_hdr.msg_namelen) };
            // A source that is not an IP address (impossible on an IP
            // socket) reads as port 0, which is never answered.
            let src = address.as_socket().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            received.push((header.msg_len as usize, src));
        }
        Ok(count as usize)
    }

    #[cfg(not(target_os = "linux"))]
    fn receive(&mut self, socket: &UdpSocket, _blocking: bool) -> std::io::Result<usize> {
        // Helpers block too here (the descriptors share one blocking mode).
        let (len, src) = socket.recv_from(&mut self.buffers[0])?;
        self.received.clear();
        self.received.push((len, src));
        Ok(1)
    }
}

/// Sends the first it can of `replies` from the one at `from`, up to
/// [`BATCH`]: how many.
#[cfg(target_os = "linux")]
fn send_batch(socket: &UdpSocket, replies: &Replies, from: usize) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let replies: Vec<(&[u8], socket2::SockAddr)> = (from..replies.len().min(from + BATCH))
        .map(|index| {
            let (reply, to) = replies.get(index);
            (reply, to.into())
        })
        .collect();
    // SAFETY: all-zero is a valid value of these C structs.
    let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for ((header, iovec), (reply, address)) in headers.iter_mut().zip(&mut iovecs).zip(&replies) {
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
    let count = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), replies.len() as u32, 0) };
    if count < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(count as usize)
}

#[cfg(not(target_os = "linux"))]
fn send_batch(socket: &UdpSocket, replies: &Replies, from: usize) -> std::io::Result<usize> {
    let (reply, to) = replies.get(from);
    socket.send_to(reply, to).map(|_| 1)
}

/// Answers `query` from `src`, adding the answer (if any) to `replies`.
fn answer(
    handler: &DnsHandler,
    served: &Arc<Served>,
    cache: &mut Cache,
    query: &[u8],
    src: SocketAddr,
    runtime: &tokio::runtime::Handle,
    replies: &mut Replies,
) {
    if !answerable(src) {
        return;
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
                let start = replies.bytes.len();
                replies.bytes.extend_from_slice(hit.reply());
                replies.bytes[start..start + 2].copy_from_slice(&query[..2]);
                replies.push(src);
                return;
            }
        }
        let udp = crate::metrics::Transport::Udp;
        if let Some(labels) = crate::plain::answer_into(served, plain, udp, &mut replies.scratch) {
            let counter = handler.state.metrics.query_counter(labels);
            counter.inc();
            if cached.is_some() {
                cache.keep(plain.key(), &replies.scratch, counter);
            }
            replies.bytes.extend_from_slice(&replies.scratch);
            replies.push(src);
            return;
        }
    }
    let Some((reply, labels)) = runtime.block_on(handler.answer_udp(query, src)) else {
        return;
    };
    if let Some(plain) = cached {
        cache.keep(plain.key(), &reply, handler.state.metrics.query_counter(labels));
    }
    replies.bytes.extend_from_slice(&reply);
    replies.push(src);
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
    /// The answers kept, found by the query's bytes after the ID.  Those
    /// bytes come from the network: the hash is keyed with a random seed
    /// (foldhash, not the standard SipHash, which cost more than the rest
    /// of a hit's lookup), so that nobody can pick queries that collide.
    entries: HashSet<Cached, foldhash::fast::RandomState>,
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
            self.entries.insert(Cached::new(key, reply, counter));
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

/// A kept answer: the query's bytes after the ID, then the answer, in one
/// allocation (a hit reads one place for both, and copies the answer
/// out); hashed and compared by the query's bytes.
struct Cached {
    bytes: Box<[u8]>,
    key_len: usize,
    /// `dns_server_queries_total` for this answer's labels.
    counter: Counter,
}

impl Cached {
    fn new(key: &[u8], reply: &[u8], counter: Counter) -> Cached {
        let mut bytes = Vec::with_capacity(key.len() + reply.len());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(reply);
        Cached { bytes: bytes.into_boxed_slice(), key_len: key.len(), counter }
    }

    fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len]
    }

    fn reply(&self) -> &[u8] {
        &self.bytes[self.key_len..]
    }
}

impl PartialEq for Cached {
    fn eq(&self, other: &Cached) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Cached {}

impl std::hash::Hash for Cached {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As the key's bytes hash, so that a lookup by `&[u8]` finds it.
        self.key().hash(state)
    }
}

impl std::borrow::Borrow<[u8]> for Cached {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers written back to back come out one by one, each whole and
    /// with its own destination.
    #[test]
    fn replies_in_one_buffer_come_out_as_written() {
        let mut replies = Replies::default();
        let to = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        for (reply, port) in [(&b"first"[..], 1), (b"", 2), (b"the third", 3)] {
            replies.bytes.extend_from_slice(reply);
            replies.push(to(port));
        }
        assert_eq!(replies.len(), 3);
        assert_eq!(replies.get(0), (&b"first"[..], to(1)));
        assert_eq!(replies.get(1), (&b""[..], to(2)));
        assert_eq!(replies.get(2), (&b"the third"[..], to(3)));
        replies.clear();
        assert_eq!(replies.len(), 0);
        assert!(replies.bytes.is_empty());
    }

    /// A kept answer is found by its query's bytes alone and gives back
    /// exactly the answer.
    #[test]
    fn a_kept_answer_is_found_by_its_query() {
        let mut cache = Cache::default();
        cache.keep(b"query one", b"answer one", Counter::default());
        cache.keep(b"query two", b"the second answer", Counter::default());
        assert_eq!(cache.lookup(b"query one").map(Cached::reply), Some(&b"answer one"[..]));
        assert_eq!(cache.lookup(b"query two").map(Cached::reply), Some(&b"the second answer"[..]));
        assert!(cache.lookup(b"query").is_none(), "a prefix of a key is not the key");
        assert!(cache.lookup(b"query one answer one").is_none());
    }

    /// A full cache that rarely hits is dropped and the loop answers
    /// without one for a while; one that hits stays.
    #[test]
    fn a_cache_that_does_not_pay_is_paused() {
        let mut cache = Cache::default();
        for i in 0..CACHE_ENTRIES as u32 {
            let counter = Counter::default();
            cache.entries.insert(Cached::new(&i.to_be_bytes(), &[0; 12], counter));
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
            cache.entries.insert(Cached::new(&i.to_be_bytes(), &[0; 12], counter));
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
