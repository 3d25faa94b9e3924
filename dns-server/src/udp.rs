//! The UDP listener.
//!
//! hickory-server spawns a task for every UDP query, and decodes and
//! encodes each one; on two cores at tens of thousands of queries per second
//! that costs more than finding the answer.  Here one loop per worker thread
//! receives a query, answers it and sends the answer, spawning nothing.
//! Each loop also keeps the encoded answers to the queries it has seen for
//! the generation served: two queries with the same bytes after their ID
//! get the same answer but for the ID, so a repeated query costs a lookup
//! and a copy.  Only plain queries are kept (one question, no EDNS options,
//! not a zone transfer, no query log), and the cache is dropped whole when
//! the generation changes.  A cache that does not help (queries spread over
//! more names than it holds) costs more than it saves, so each loop
//! watches its hit rate: when fewer than a quarter of a window's lookups
//! hit a full cache, it drops it and answers without one for a few
//! windows before learning again.
//!
//! Everything else (decoding, the answer, EDNS, truncation, malformed
//! packets) is the same handler and hickory code as over TCP, so the same
//! tests cover both paths.

use crate::dns::DnsHandler;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
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
    /// Serves `socket` with `loops` loops.
    pub fn start(socket: UdpSocket, handler: Arc<DnsHandler>, loops: usize) -> UdpListener {
        // Room for bursts while both cores are busy (the kernel caps it at
        // net.core.rmem_max): a full buffer drops queries.
        let sock = socket2::SockRef::from(&socket);
        if let Err(error) = sock.set_recv_buffer_size(RECEIVE_BUFFER) {
            tracing::debug!(%error, "setting the UDP receive buffer size");
        }
        let socket = Arc::new(socket);
        let tasks = (0..loops.max(1))
            .map(|_| tokio::spawn(serve(socket.clone(), handler.clone())))
            .collect();
        UdpListener { tasks }
    }
}

async fn serve(socket: Arc<UdpSocket>, handler: Arc<DnsHandler>) {
    // The largest UDP payload there is: a longer query is never cut.
    let mut buffer = vec![0u8; 65_535];
    let mut cache = Cache::default();
    loop {
        let (len, src) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                // An ICMP error for an earlier answer, or a transient
                // failure: nothing to answer.  Yield so that a persistent
                // error cannot spin.
                tracing::debug!(%error, "receiving a DNS query over UDP");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let Some(reply) = answer(&handler, &mut cache, &buffer[..len], src).await else {
            continue;
        };
        if let Err(error) = socket.send_to(&reply, src).await {
            tracing::debug!(%error, %src, "sending a DNS answer over UDP");
        }
    }
}

async fn answer(
    handler: &DnsHandler,
    cache: &mut Cache,
    query: &[u8],
    src: SocketAddr,
) -> Option<Vec<u8>> {
    // Ports 0 cannot be answered (hickory-server drops them too).
    if src.port() == 0 {
        return None;
    }
    let cacheable = cache.in_use() && handler.state.query_log.is_none() && is_plain_query(query);
    if cacheable {
        let served = handler.state.served();
        if !cache.serves(&served) {
            cache.reset(&served);
        }
        if let Some(hit) = cache.lookup(&query[2..]) {
            hit.counter.inc();
            let mut reply = hit.reply.clone();
            reply[..2].copy_from_slice(&query[..2]);
            return Some(reply);
        }
    }
    let (reply, labels) = handler.answer_udp(query, src).await?;
    if cacheable && cache.entries.len() < CACHE_ENTRIES {
        let counter = handler.state.metrics.query_counter(labels);
        cache.entries.insert(query[2..].to_vec(), Cached { reply: reply.clone(), counter });
    }
    Some(reply)
}

#[derive(Default)]
struct Cache {
    /// The generation the entries were answered from (compared by
    /// pointer: a new config is a new `Served`).  Weak, so that an idle
    /// loop does not keep a replaced generation in memory.
    served: std::sync::Weak<crate::zone::Served>,
    /// Query bytes after the ID → the answer.
    entries: HashMap<Vec<u8>, Cached>,
    /// Lookups and hits in the current window.
    lookups: u32,
    hits: u32,
    /// Queries left to answer without the cache.
    paused: u32,
}

impl Cache {
    fn serves(&self, served: &Arc<crate::zone::Served>) -> bool {
        std::ptr::eq(self.served.as_ptr(), Arc::as_ptr(served))
    }

    fn reset(&mut self, served: &Arc<crate::zone::Served>) {
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
    counter: prometheus_client::metrics::counter::Counter,
}

/// A query whose answer depends on nothing but its bytes after the ID and
/// the generation served: a standard query (QR 0, opcode QUERY) with one
/// question, no answer or authority records, at most an OPT record without
/// options, not a zone transfer, and nothing after it.
fn is_plain_query(query: &[u8]) -> bool {
    if query.len() < 12 {
        return false;
    }
    let count = |at: usize| u16::from_be_bytes([query[at], query[at + 1]]);
    let flags = query[2];
    if flags & 0x80 != 0 || (flags >> 3) & 0x0f != 0 {
        return false;
    }
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return false;
    }
    let mut at = 12;
    loop {
        let Some(&length) = query.get(at) else { return false };
        at += 1;
        match length {
            0 => break,
            1..=63 => at += usize::from(length),
            // Compression or extended labels: not in a plain question.
            _ => return false,
        }
    }
    if at + 4 > query.len() {
        return false;
    }
    let qtype = count(at);
    // AXFR and IXFR depend on who asks.
    if qtype == 251 || qtype == 252 {
        return false;
    }
    at += 4;
    if count(10) == 1 {
        // OPT: root owner, type 41, class (size), TTL (flags), RDLENGTH 0.
        if query.len() != at + 11 || query[at] != 0 || count(at + 1) != 41 {
            return false;
        }
        return count(at + 9) == 0;
    }
    at == query.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, edns: Option<&[u8]>) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        if let Some(rdata) = edns {
            q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
            q.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            q.extend_from_slice(rdata);
        }
        q
    }

    /// A full cache that rarely hits is dropped and the loop answers
    /// without one for a while; one that hits stays.
    #[test]
    fn a_cache_that_does_not_pay_is_paused() {
        let mut cache = Cache::default();
        for i in 0..CACHE_ENTRIES as u32 {
            let counter = prometheus_client::metrics::counter::Counter::default();
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
            let counter = prometheus_client::metrics::counter::Counter::default();
            cache.entries.insert(i.to_be_bytes().to_vec(), Cached { reply: vec![0; 12], counter });
        }
        for i in 0..WINDOW {
            cache.lookup(&(i % 100).to_be_bytes());
        }
        assert_eq!(cache.entries.len(), CACHE_ENTRIES, "a cache that hits stays");
        assert!(cache.in_use());
    }

    #[test]
    fn only_plain_queries_are_cached() {
        assert!(is_plain_query(&query("www.example.test", None)));
        assert!(is_plain_query(&query("www.example.test", Some(&[]))));
        // EDNS options (NSID, cookies) make each answer its own.
        assert!(!is_plain_query(&query("www.example.test", Some(&[0, 3, 0, 0]))));
        let mut response = query("www.example.test", None);
        response[2] |= 0x80;
        assert!(!is_plain_query(&response));
        let mut notify = query("www.example.test", None);
        notify[2] |= 4 << 3;
        assert!(!is_plain_query(&notify));
        let mut axfr = query("example.test", None);
        let at = axfr.len() - 4;
        axfr[at..at + 2].copy_from_slice(&252u16.to_be_bytes());
        assert!(!is_plain_query(&axfr));
        let mut trailing = query("www.example.test", None);
        trailing.push(0);
        assert!(!is_plain_query(&trailing));
        assert!(!is_plain_query(&query("www.example.test", None)[..20]));
        assert!(!is_plain_query(&[0; 11]));
    }
}
