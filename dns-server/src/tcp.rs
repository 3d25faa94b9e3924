//! The TCP listener.
//!
//! hickory-server's TCP listener decodes every message into a `Message`,
//! sends each answer through a channel to a task of the connection, and
//! arms a timer per message; over TCP that machinery cost more than the
//! answer (docs/PERFORMANCE.md, "CPU per answered query").  Here each
//! connection is one task that reads length-prefixed messages (RFC 7766),
//! answers plain queries straight from the compiled zone (`crate::plain`,
//! as the UDP loops do), and writes the answers to everything it has read
//! with one write.  Everything else (malformed messages, EDNS options,
//! zone transfers, the query log) goes through the full path
//! ([`DnsHandler::answer_tcp`]), which writes through the same connection,
//! in order.
//!
//! Limits: a connection that sends no complete message for its idle limit
//! is closed; a client that does not read its answers for [`WRITE_LIMIT`]
//! is let go (a zone transfer to it ends, said in the log); at most
//! [`MAX_CONNECTIONS`] at once, and one more is closed at once, said in
//! the log (at most once every [`REFUSAL_LOG_EVERY`], with how many).

use crate::dns::DnsHandler;
use crate::metrics::Transport;
use crate::plain::PlainQuery;
use hickory_server::server::{ResponseHandler, ResponseInfo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Connections served at once; another is closed at once.  Each costs a
/// task, a read buffer and its socket's buffers (the send buffer is
/// 256 KiB, `crate::TCP_SEND_BUFFER`).
pub const MAX_CONNECTIONS: usize = 512;
/// How long a write may wait for a client that does not read.
pub const WRITE_LIMIT: Duration = Duration::from_secs(10);
/// Read buffer per connection: room for a few hundred pipelined queries.
const READ_BUFFER: usize = 16 * 1024;
/// Answers to pipelined queries are written together up to this much.
const WRITE_BATCH: usize = 64 * 1024;

/// The accepting task and, through it, every connection; all stop when
/// this is dropped.
pub struct TcpListener {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpListener {
    /// Serves `listener`; a connection that sends no complete message for
    /// `idle` is closed.
    pub fn start(
        listener: tokio::net::TcpListener,
        handler: Arc<DnsHandler>,
        idle: Duration,
    ) -> TcpListener {
        TcpListener { task: tokio::spawn(accept(listener, handler, idle)) }
    }
}

/// At most one warning this often about connections closed at the limit
/// (a flood of connections must not become a flood of log lines).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts events and says when to report them: the first at once, then at
/// most once every `every`, with how many there were since the last report.
struct Throttle {
    every: Duration,
    /// Counted since the last report.
    since: u64,
    reported: Option<std::time::Instant>,
}

impl Throttle {
    fn new(every: Duration) -> Throttle {
        Throttle { every, since: 0, reported: None }
    }

    /// Counts one event at `now`: the number to report, if it is time.
    fn count(&mut self, now: std::time::Instant) -> Option<u64> {
        self.since += 1;
        let due = self.reported.is_none_or(|at| now.saturating_duration_since(at) >= self.every);
        if !due {
            return None;
        }
        self.reported = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

async fn accept(listener: tokio::net::TcpListener, handler: Arc<DnsHandler>, idle: Duration) {
    // Dropped (aborting every connection) when this task is aborted.
    let mut connections = tokio::task::JoinSet::new();
    let mut refusals = Throttle::new(REFUSAL_LOG_EVERY);
    loop {
        let (stream, src) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: wait for some to go.
                tracing::warn!(%error, "could not accept a DNS TCP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            if let Some(refused) = refusals.count(std::time::Instant::now()) {
                tracing::warn!(
                    %src,
                    refused,
                    "{MAX_CONNECTIONS} DNS TCP connections are open: closed {refused} more \
                     since the last such warning (at most one every {REFUSAL_LOG_EVERY:?})"
                );
            }
            continue;
        }
        if !crate::udp::answerable(src) {
            continue;
        }
        connections.spawn(serve(stream, src, handler.clone(), idle));
    }
}

/// One connection: messages read, answered and written until the client
/// closes it, goes idle, or stops reading.
async fn serve(stream: TcpStream, src: SocketAddr, handler: Arc<DnsHandler>, idle: Duration) {
    // Answers go out as soon as they are written, not after a delayed ACK.
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let responder = TcpResponder { out: Arc::new(tokio::sync::Mutex::new(write)) };
    let mut reader = BufReader::with_capacity(READ_BUFFER, read);
    let mut message = Vec::new();
    let mut pending = Vec::with_capacity(4096);
    // Each plain answer is written here, then copied after its length.
    let mut reply = Vec::with_capacity(512);
    loop {
        let buffered = whole_message_buffered(reader.buffer());
        if !buffered {
            // Reading may wait: what is answered goes out first.
            if !pending.is_empty() {
                if responder.write(&pending).await.is_err() {
                    return;
                }
                pending.clear();
            }
            // One timer per wait for the network, not per message.
            match tokio::time::timeout(idle, read_message(&mut reader, &mut message)).await {
                Ok(Ok(true)) => {}
                // Closed, cut, or idle too long.
                _ => return,
            }
        } else if !matches!(read_message(&mut reader, &mut message).await, Ok(true)) {
            return;
        }
        // With the query log on, every query takes the full path, which logs.
        let plain =
            handler.state.query_log.is_none().then(|| PlainQuery::parse(&message)).flatten();
        let answered = plain.and_then(|plain| {
            crate::plain::answer_into(&handler.state.served(), &plain, Transport::Tcp, &mut reply)
        });
        if let Some(labels) = answered {
            handler.state.metrics.query(labels);
            // At most 65,535 bytes (`plain::answer` over TCP).
            pending.extend_from_slice(&(reply.len() as u16).to_be_bytes());
            pending.extend_from_slice(&reply);
            if pending.len() >= WRITE_BATCH {
                if responder.write(&pending).await.is_err() {
                    return;
                }
                pending.clear();
            }
            continue;
        }
        // The full path writes itself: what is answered goes out first.
        if !pending.is_empty() {
            if responder.write(&pending).await.is_err() {
                return;
            }
            pending.clear();
        }
        handler.answer_tcp(&message, src, responder.clone()).await;
    }
}

/// Whether `buffer` starts with a whole length-prefixed message, so that
/// reading it cannot wait.
fn whole_message_buffered(buffer: &[u8]) -> bool {
    match buffer {
        [high, low, rest @ ..] => rest.len() >= usize::from(u16::from_be_bytes([*high, *low])),
        _ => false,
    }
}

/// Reads one length-prefixed message into `message`; `false` when the
/// client closed the connection between messages.
async fn read_message(
    reader: &mut BufReader<OwnedReadHalf>,
    message: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mut length = [0u8; 2];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(error) => return Err(error),
    }
    message.resize(usize::from(u16::from_be_bytes(length)), 0);
    reader.read_exact(message).await?;
    Ok(true)
}

/// Writes to one connection: the connection's own answers, and the
/// messages the full path sends (a zone transfer's among them, from the
/// transfer thread), one whole message at a time.
#[derive(Clone)]
pub struct TcpResponder {
    out: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
}

impl TcpResponder {
    /// Writes `bytes` (whole length-prefixed messages), waiting at most
    /// [`WRITE_LIMIT`] for a client that does not read.
    async fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut out = self.out.lock().await;
        match tokio::time::timeout(WRITE_LIMIT, out.write_all(bytes)).await {
            Ok(written) => written,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing for {WRITE_LIMIT:?}"),
            )),
        }
    }
}

#[async_trait::async_trait]
impl ResponseHandler for TcpResponder {
    async fn send_response<'a>(
        &mut self,
        response: hickory_server::zone_handler::MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let (bytes, info) = crate::dns::encode(response, crate::policy::MAX_TCP_MESSAGE)?;
        let mut framed = Vec::with_capacity(2 + bytes.len());
        // `encode` keeps within one TCP message.
        framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(&bytes);
        self.write(&framed).await?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_whole_when_its_length_and_bytes_are_there() {
        assert!(!whole_message_buffered(&[]));
        assert!(!whole_message_buffered(&[0]));
        assert!(whole_message_buffered(&[0, 0]));
        assert!(!whole_message_buffered(&[0, 3, 1, 2]));
        assert!(whole_message_buffered(&[0, 3, 1, 2, 3]));
        assert!(whole_message_buffered(&[0, 1, 1, 0, 9]));
    }

    /// A flood of refused connections is one warning per period, each
    /// with the count since the last, none lost.
    #[test]
    fn refusals_are_reported_at_most_once_a_period_with_their_count() {
        let every = Duration::from_secs(10);
        let start = std::time::Instant::now();
        let mut throttle = Throttle::new(every);
        assert_eq!(throttle.count(start), Some(1), "the first at once");
        for i in 1..100 {
            assert_eq!(throttle.count(start + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(throttle.count(start + every), Some(100), "the 99 held back and this one");
        assert_eq!(throttle.count(start + every + Duration::from_secs(1)), None);
        assert_eq!(throttle.count(start + every * 3), Some(2), "after a quiet spell");
    }
}
