//! A DNS message from the network, as the server's UDP loops take it
//! (`DnsHandler::answer_udp`: decoded as hickory-server decodes it, answered
//! by the server's own handler, encoded within the client's size) and as
//! its TCP connections do (`answer_bytes` with TCP: one message of at most
//! 65,535 bytes), from a small zone with one name too large for UDP.
//! Nothing may panic; a response (QR=1) is never answered; every answer
//! must decode again and fit the size the client allowed; over TCP it is
//! never truncated; a plain query's direct answer (`dns_server::plain`),
//! over either transport, must be the same message.

#![no_main]

use dns_server::dns::DnsHandler;
use dns_server::metrics::Transport;
use dns_server::plain::PlainQuery;
use dns_server::state::ServerState;
use hickory_server::net::xfer::Protocol;
use hickory_proto::op::Message;
use hickory_proto::serialize::binary::BinDecodable;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};

/// A server state with a small zone, built once.  Its storage directory is
/// removed as soon as the zone is applied: answering queries reads nothing
/// from it, and libFuzzer ends the process without running destructors,
/// so a directory kept in this static was left behind in /tmp by every run.
static STATE: LazyLock<Arc<ServerState>> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let storage = dns_server::storage::Storage::open(&dir.path().join("storage")).unwrap();
    let token = api_auth::ApiToken::generate();
    let state = Arc::new(ServerState::load(uuid::Uuid::nil(), storage, vec![], token).unwrap());
    let config: dns_types::DnsConfig = serde_json::from_str(include_str!("../zone.json")).unwrap();
    // Applying a config uses a blocking thread: it needs a runtime.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(state.update(config, None)).unwrap();
    drop(dir);
    state
});

fuzz_target!(|data: &[u8]| {
    let state = &*STATE;
    let handler = DnsHandler { state: state.clone() };
    let src = "127.0.0.1:5353".parse().unwrap();
    // The QR bit: a response, never answered on either transport.
    let response = data.len() >= 12 && data[2] & 0x80 != 0;
    if response {
        assert!(PlainQuery::parse(data).is_none(), "the direct path took a response");
    }
    let tcp = futures::executor::block_on(handler.answer_bytes(data, src, Protocol::Tcp));
    if let Some((reply, _)) = &tcp {
        assert!(!response, "a response was answered over TCP");
        let message = Message::from_bytes(reply).expect("our TCP response decodes");
        assert!(!message.metadata.truncation, "TC over TCP");
        if let Some(plain) = PlainQuery::parse(data)
            && let Some((direct, _)) = dns_server::plain::answer(&state.served(), &plain, Transport::Tcp)
        {
            assert_eq!(Message::from_bytes(&direct).expect("a direct TCP answer decodes"), message);
        }
    }
    // Exactly what the UDP loops do with a datagram (no answer is fine:
    // shorter than a header, or itself a response).
    let Some((reply, _)) = futures::executor::block_on(handler.answer_udp(data, src)) else {
        return;
    };
    assert!(!response, "a response was answered over UDP");
    let message = Message::from_bytes(&reply).expect("our response decodes");
    // A plain query the loops answer themselves gets the same message.
    if let Some(plain) = PlainQuery::parse(data)
        && let Some((direct, _)) = dns_server::plain::answer(&state.served(), &plain, Transport::Udp)
    {
        assert_eq!(Message::from_bytes(&direct).expect("a direct answer decodes"), message);
        assert!(direct.len() <= reply.len(), "{} bytes, {} on the full path", direct.len(), reply.len());
    }
    // Never more than the largest UDP size we allow, and beyond 512 bytes
    // only for a query that offered as much with EDNS.
    assert!(reply.len() <= 1232, "{} bytes over UDP", reply.len());
    if reply.len() > 512
        && let Ok(query) = Message::from_bytes(data)
    {
        let offered = query.edns.as_ref().map_or(512, |e| usize::from(e.max_payload()));
        assert!(reply.len() <= offered, "{} bytes over UDP, offered {offered}", reply.len());
    }
});
