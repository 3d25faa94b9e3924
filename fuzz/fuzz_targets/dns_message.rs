//! A DNS message from the network, as the server's UDP loops take it
//! (`DnsHandler::answer_udp`: decoded as hickory-server decodes it, answered
//! by the server's own handler, encoded within the client's size), from a
//! small zone.  Nothing may panic; every response must decode again and
//! fit the size the client allowed; a plain query's direct answer
//! (`dns_server::plain`) must be the same message.

#![no_main]

use dns_server::dns::DnsHandler;
use dns_server::plain::PlainQuery;
use dns_server::state::ServerState;
use hickory_proto::op::Message;
use hickory_proto::serialize::binary::BinDecodable;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};

/// A server state with a small zone, built once.
static STATE: LazyLock<(Arc<ServerState>, tempfile::TempDir)> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let storage = dns_server::storage::Storage::open(&dir.path().join("storage")).unwrap();
    let token = api_auth::ApiToken::generate();
    let state = Arc::new(ServerState::load(uuid::Uuid::nil(), storage, vec![], token).unwrap());
    let config: dns_types::DnsConfig = serde_json::from_str(include_str!("../zone.json")).unwrap();
    // Applying a config uses a blocking thread: it needs a runtime.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(state.update(config, None)).unwrap();
    (state, dir)
});

fuzz_target!(|data: &[u8]| {
    let (state, _) = &*STATE;
    let handler = DnsHandler { state: state.clone() };
    let src = "127.0.0.1:5353".parse().unwrap();
    // Exactly what the UDP loops do with a datagram (no answer is fine:
    // shorter than a header, or itself a response).
    let Some((reply, _)) = futures::executor::block_on(handler.answer_udp(data, src)) else {
        return;
    };
    let message = Message::from_bytes(&reply).expect("our response decodes");
    // A plain query the loops answer themselves gets the same message.
    if let Some(plain) = PlainQuery::parse(data)
        && let Some((direct, _)) = dns_server::plain::answer(&state.served(), &plain)
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
