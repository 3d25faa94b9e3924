//! A DNS message from the network, through the server's own handler
//! (hickory-server decodes it exactly as the UDP and TCP listeners do),
//! answered from a small zone.  Nothing may panic; every response must
//! decode again and, over UDP, fit the size the client allowed.

#![no_main]

use dns_server::dns::DnsHandler;
use dns_server::state::ServerState;
use hickory_proto::op::Message;
use hickory_proto::serialize::binary::{BinDecodable, BinEncoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::net::runtime::TokioTime;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock, Mutex};

/// A server state with a small zone, built once.
static STATE: LazyLock<(Arc<ServerState>, tempfile::TempDir)> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let storage = dns_server::storage::Storage::open(&dir.path().join("storage")).unwrap();
    let token = api_auth::ApiToken::generate();
    let state = Arc::new(ServerState::load(uuid::Uuid::nil(), storage, vec![], token).unwrap());
    let config: dns_types::DnsConfig = serde_json::from_str(include_str!("../zone.json")).unwrap();
    // Applying a config uses a blocking thread: it needs a runtime.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(state.update(config)).unwrap();
    (state, dir)
});

/// Keeps what the handler sent.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<(Vec<u8>, u16)>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        // As hickory-server's UDP path: the client's EDNS size, else 512.
        let limit = response.edns().map(|e| e.max_payload().max(512)).unwrap_or(512);
        let mut bytes = Vec::new();
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(limit);
        let info = response.destructive_emit(&mut encoder)?;
        *self.0.lock().unwrap() = Some((bytes, limit));
        Ok(info)
    }
}

fuzz_target!(|data: &[u8]| {
    let (state, _) = &*STATE;
    let Ok(request) = Request::from_bytes(data.to_vec(), "127.0.0.1:5353".parse().unwrap(), Protocol::Udp)
    else {
        return;
    };
    let handler = DnsHandler { state: state.clone() };
    let capture = Capture::default();
    futures::executor::block_on(handler.handle_request::<_, TokioTime>(&request, capture.clone()));
    if let Some((bytes, limit)) = capture.0.lock().unwrap().take() {
        assert!(bytes.len() <= usize::from(limit), "{} bytes over UDP, limit {limit}", bytes.len());
        Message::from_bytes(&bytes).expect("our response decodes");
    }
});
