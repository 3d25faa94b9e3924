//! Answering DNS queries: the full path.  hickory does the wire format here
//! (decoding, encoding, truncation to the client's UDP size, malformed
//! packets, which get FORMERR or are dropped); `crate::udp` receives UDP
//! queries and `crate::tcp` TCP messages, both answer plain ones
//! themselves (`crate::plain`, checked against this path) and hand the
//! rest to [`DnsHandler::answer_udp`] and [`DnsHandler::answer_tcp`]; this
//! handler decides what to answer from the config being served.

use crate::metrics::{QueryLabels, QueryType, Transport};
use crate::state::ServerState;
use crate::zone::{Answer, RecordRef, UndecodableRecord};
use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption, NSIDPayload};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use std::sync::Arc;

pub use crate::policy::MAX_UDP_PAYLOAD;
use crate::policy::{Disposition, RequestShape, UdpFit};

pub struct DnsHandler {
    pub state: Arc<ServerState>,
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let state = &self.state;
        let response_edns = request.edns.as_ref().map(|edns| {
            let mut ours = Edns::new();
            ours.set_max_payload(crate::policy::ADVERTISED_PAYLOAD);
            ours.set_version(0);
            // RFC 3225: the DO bit is echoed.
            ours.set_dnssec_ok(edns.flags().dnssec_ok);
            // RFC 5001: a client that asks who answers is told.
            if edns.options().get(EdnsCode::NSID).is_some()
                && let Ok(payload) = NSIDPayload::new(state.id.to_string())
            {
                ours.options_mut().insert(EdnsOption::NSID(payload));
            }
            ours
        });
        let udp_limit = crate::policy::udp_limit(request.edns.as_ref().map(|e| e.max_payload()));
        let builder = MessageResponseBuilder::new(&request.queries, response_edns.as_ref());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = false;
        // Not a validating server: CD is not echoed (as Knot and NSD).
        metadata.checking_disabled = false;

        let refuse = |code: ResponseCode| {
            let mut metadata = metadata;
            metadata.response_code = code;
            metadata
        };
        let served = self.state.served();
        let served_generation = served.generation();
        let disposition = crate::policy::disposition(RequestShape {
            edns_version: request.edns.as_ref().map(|e| e.version()),
            is_response: request.metadata.message_type != MessageType::Query,
            op_code: request.metadata.op_code,
            questions: request.queries.queries().len(),
            query_type: request.queries.queries().first().map(|q| q.query_type()),
            udp: request.protocol() == Protocol::Udp,
        });
        let result = if disposition == Disposition::Drop {
            // Not answered (and not counted as a query).
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::FormErr;
            return ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() });
        } else if let Disposition::Refuse(code) = disposition {
            response_handle.send_response(builder.build_no_records(refuse(code))).await
        } else if disposition == Disposition::Transfer {
            let query = &request.queries.queries()[0];
            let allowed = state.transfer_allowed(request.src().ip());
            let udp = request.protocol() == Protocol::Udp;
            // Only the SOA here: the zone itself is walked on the transfer
            // thread, never on a thread that answers queries.
            match served.zone_soa(query.name()) {
                // IXFR over UDP: the current SOA alone tells the client to
                // come back over TCP (RFC 1995 section 4).
                Some(soa) if allowed && udp && query.query_type() == RecordType::IXFR => {
                    match soa.to_record() {
                        Ok(soa) => {
                            metadata.authoritative = true;
                            let none: [&Record; 0] = [];
                            let response = builder.build(metadata, [&soa], none, none, none);
                            response_handle.send_response(response).await
                        }
                        Err(error) => {
                            tracing::error!(%error, "SERVFAIL");
                            response_handle
                                .send_response(
                                    builder.build_no_records(refuse(ResponseCode::ServFail)),
                                )
                                .await
                        }
                    }
                }
                Some(_) if allowed && !udp => {
                    let busy_refusal = refuse(ResponseCode::Refused);
                    metadata.authoritative = true;
                    match spawn_transfer(
                        served.clone(),
                        query.name().clone(),
                        &request.queries,
                        response_edns.clone(),
                        metadata,
                        response_handle.clone(),
                        request.src(),
                    ) {
                        // Sent by its own task: this connection goes on
                        // writing what it queues, and the DNS threads do
                        // not build it.
                        Ok(()) => Ok(ResponseInfo::from(Header {
                            metadata,
                            counts: HeaderCounts::default(),
                        })),
                        Err(busy) => {
                            tracing::warn!(src = %request.src(), "{busy}");
                            response_handle
                                .send_response(builder.build_no_records(busy_refusal))
                                .await
                        }
                    }
                }
                // From a client not allowed, or for a zone we do not serve.
                _ => {
                    response_handle
                        .send_response(builder.build_no_records(refuse(ResponseCode::Refused)))
                        .await
                }
            }
        } else {
            let query = &request.queries.queries()[0];
            let none: [&Record; 0] = [];
            let identity = (query.query_class() == DNSClass::CH)
                .then(|| state.chaos_answer(query.name(), query.query_type()))
                .flatten();
            let answer =
                if let Some(record) = identity.clone() {
                    Ok(FullAnswer::Found { answers: vec![record], additionals: vec![] })
                } else if matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
                    // QCLASS ANY (RFC 1035 3.2.5) finds the class IN data we
                    // serve, as Knot and NSD answer it.
                    FullAnswer::of(served.lookup(
                        crate::zone::WireBuf::of(query.name()).as_bytes(),
                        query.query_type(),
                    ))
                } else {
                    // We are authoritative for class IN only.
                    Ok(FullAnswer::Refused)
                };
            let answer = answer.unwrap_or_else(|error| {
                tracing::error!(%error, name = %query.name(), "SERVFAIL");
                FullAnswer::ServFail
            });
            // RFC 8482: ANY gets one RRset of the name, not
            // every record, over UDP and TCP alike, as Knot answers: a
            // small question must not draw a large answer.
            let answer = match answer {
                FullAnswer::Found { mut answers, mut additionals }
                    if query.query_type() == RecordType::ANY && identity.is_none() =>
                {
                    // At the apex, the NS set (with its glue) rather than
                    // the synthesized SOA, when there is one.
                    let pick = answers
                        .iter()
                        .find(|r| r.record_type() != RecordType::SOA)
                        .or(answers.first())
                        .map(|r| (r.record_type(), r.name.clone()));
                    if let Some((rtype, owner)) = pick {
                        answers.retain(|r| r.record_type() == rtype && r.name == owner);
                        if !matches!(rtype, RecordType::NS | RecordType::SRV) {
                            additionals.clear();
                        }
                    }
                    FullAnswer::Found { answers, additionals }
                }
                other => other,
            };
            match answer {
                FullAnswer::Refused => {
                    response_handle
                        .send_response(builder.build_no_records(refuse(ResponseCode::Refused)))
                        .await
                }
                FullAnswer::ServFail => {
                    response_handle
                        .send_response(builder.build_no_records(refuse(ResponseCode::ServFail)))
                        .await
                }
                FullAnswer::Found { mut answers, mut additionals } => {
                    metadata.authoritative = crate::policy::authoritative(query.query_class());
                    let edns = response_edns.as_ref();
                    // Header, question, OPT with an NSID at most.
                    let fixed = 12 + query.name().len() + 1 + 4 + edns.map_or(0, |_| 11 + 4 + 36);
                    let answer_bytes = section_size(&answers, 0);
                    let additional_bytes = section_size(&additionals, answers.len());
                    let fit = if request.protocol() == Protocol::Udp {
                        Some(crate::policy::udp_fit(
                            fixed,
                            answer_bytes,
                            additional_bytes,
                            udp_limit,
                        ))
                    } else {
                        crate::policy::tcp_fit(fixed, answer_bytes, additional_bytes)
                    };
                    match fit {
                        Some(UdpFit::Truncated) => {
                            metadata.truncation = true;
                            answers.clear();
                            additionals.clear();
                        }
                        Some(UdpFit::WithoutAdditionals) => additionals.clear(),
                        Some(UdpFit::Whole) => {}
                        None => {
                            // Never a message cut short: SERVFAIL, said.
                            tracing::warn!(
                                name = %query.name(), bytes = fixed + answer_bytes,
                                "an answer too large for one TCP message: SERVFAIL"
                            );
                            metadata.authoritative = false;
                            metadata.response_code = ResponseCode::ServFail;
                            answers.clear();
                            additionals.clear();
                        }
                    }
                    // The owner names of the answers to the name asked keep
                    // the case it was asked in (as Knot and NSD answer,
                    // which resolvers using 0x20 randomization expect).
                    let asked = query.original().name();
                    if has_upper_case(asked) {
                        for record in answers.iter_mut().filter(|r| r.name == *asked) {
                            record.name = asked.clone();
                        }
                    }
                    let response =
                        builder.build(metadata, answers.iter(), none, none, additionals.iter());
                    response_handle.send_response(response).await
                }
                FullAnswer::NoData(soa) => {
                    metadata.authoritative = true;
                    let response = builder.build(metadata, none, none, [&soa], none);
                    response_handle.send_response(response).await
                }
                FullAnswer::NxDomain(soa) => {
                    metadata.authoritative = true;
                    metadata.response_code = ResponseCode::NXDomain;
                    let response = builder.build(metadata, none, none, [&soa], none);
                    response_handle.send_response(response).await
                }
            }
        };
        let info = match result {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, src = %request.src(), "could not send DNS response");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        };
        let query = request.queries.queries().first();
        self.state.metrics.query(labels(
            request.protocol(),
            query.map(|q| q.query_type()),
            info.response_code,
        ));
        if let Some(log) = &self.state.query_log
            && log.wants_next()
        {
            log.write(&crate::query_log::Entry {
                src: request.src(),
                transport: if request.protocol() == Protocol::Udp { "udp" } else { "tcp" },
                id: request.metadata.id,
                qname: query.map(|q| q.name().to_string()).unwrap_or_default(),
                qtype: query.map(|q| q.query_type().to_string()).unwrap_or_default(),
                qclass: query.map(|q| q.query_class().to_string()).unwrap_or_default(),
                rcode: match crate::metrics::Rcode::from(info.response_code) {
                    crate::metrics::Rcode::OTHER => u16::from(info.response_code).to_string(),
                    known => format!("{known:?}"),
                },
                answers: info.counts().answers,
                generation: served_generation,
            });
        }
        info
    }
}

impl DnsHandler {
    /// One query received over UDP, answered as hickory-server's UDP
    /// listener answers it (see `crate::udp`): nothing for what is shorter
    /// than a header or is itself a response, FORMERR for what does not
    /// decode, else this handler's answer encoded within the client's UDP
    /// size.  Returns the bytes and the labels the answer was counted under.
    pub async fn answer_udp(
        &self,
        bytes: &[u8],
        src: std::net::SocketAddr,
    ) -> Option<(Vec<u8>, QueryLabels)> {
        self.answer_bytes(bytes, src, Protocol::Udp).await
    }

    /// One message received over a TCP connection, answered through
    /// `responder` (which writes to that connection; a zone transfer
    /// writes many messages through it, from the transfer thread).
    pub async fn answer_tcp<R: ResponseHandler>(
        &self,
        bytes: &[u8],
        src: std::net::SocketAddr,
        responder: R,
    ) {
        self.respond(bytes, src, Protocol::Tcp, responder, |_| ()).await;
    }

    /// One query as if received over `protocol` (UDP or TCP), answered by
    /// this handler and encoded as that transport encodes it: within the
    /// client's UDP size, or within one TCP message.  The UDP loops use it
    /// with UDP; the fuzz target drives both through it.  For a zone
    /// transfer, the last message sent.
    pub async fn answer_bytes(
        &self,
        bytes: &[u8],
        src: std::net::SocketAddr,
        protocol: Protocol,
    ) -> Option<(Vec<u8>, QueryLabels)> {
        let capture = Capture::default();
        let limit = capture.limit.clone();
        let qtype = self
            .respond(bytes, src, protocol, capture.clone(), move |to| {
                limit.store(to, std::sync::atomic::Ordering::Relaxed)
            })
            .await?;
        let (reply, rcode) = capture.take()?;
        Some((reply, labels(protocol, qtype, rcode)))
    }

    /// Decodes `bytes` as hickory-server's listeners decode a message and
    /// answers it through `responder`: nothing for what is shorter than a
    /// header or is itself a response (`None`), FORMERR for what does not
    /// decode, else this handler's answer, after telling `limit_to` the
    /// most bytes the answer may take (the client's UDP size, or one TCP
    /// message).  Returns the question's type, if it had one.
    async fn respond<R: ResponseHandler>(
        &self,
        bytes: &[u8],
        src: std::net::SocketAddr,
        protocol: Protocol,
        responder: R,
        limit_to: impl FnOnce(usize),
    ) -> Option<Option<RecordType>> {
        use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
        match Request::from_bytes(bytes.to_vec(), src, protocol) {
            Ok(request) => {
                if request.metadata.message_type == MessageType::Response {
                    // Never answer answers (reflection).
                    return None;
                }
                limit_to(match protocol {
                    Protocol::Udp => {
                        crate::policy::udp_limit(request.edns.as_ref().map(|e| e.max_payload()))
                    }
                    _ => crate::policy::MAX_TCP_MESSAGE,
                });
                self.handle_request::<_, hickory_server::net::runtime::TokioTime>(
                    &request, responder,
                )
                .await;
                Some(request.queries.queries().first().map(|q| q.query_type()))
            }
            Err(error) => {
                // Without a header, no answer; a response that does not
                // decode is still a response, never answered; else FORMERR.
                let header = Header::read(&mut BinDecoder::new(bytes)).ok()?;
                if header.metadata.message_type == MessageType::Response {
                    return None;
                }
                tracing::debug!(%error, %src, "malformed DNS query");
                // No questions (what hickory-server answers too).
                let queries =
                    hickory_server::zone_handler::Queries::read(&mut BinDecoder::new(&[]), 0)
                        .ok()?;
                let response = MessageResponseBuilder::new(&queries, None)
                    .error_msg(&header.metadata, ResponseCode::FormErr);
                let mut responder = responder;
                responder.send_response(response).await.ok()?;
                self.state.metrics.query(labels(protocol, None, ResponseCode::FormErr));
                Some(None)
            }
        }
    }
}

fn labels(protocol: Protocol, qtype: Option<RecordType>, rcode: ResponseCode) -> QueryLabels {
    QueryLabels {
        transport: match protocol {
            Protocol::Udp => Transport::Udp,
            Protocol::Tcp => Transport::Tcp,
            _ => Transport::Other,
        },
        qtype: qtype.map_or(QueryType::OTHER, QueryType::from),
        rcode: rcode.into(),
    }
}

/// Keeps the encoded response instead of sending it, encoded as
/// hickory-server's listeners encode it: within `limit` (the client's UDP
/// size, `policy::udp_limit`, or one TCP message); SERVFAIL if it cannot
/// be encoded.
#[derive(Clone)]
struct Capture {
    slot: Arc<std::sync::Mutex<Option<Encoded>>>,
    /// Set once the request is decoded (its UDP size).
    limit: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for Capture {
    fn default() -> Self {
        Capture { slot: Arc::default(), limit: Arc::new(512.into()) }
    }
}

/// A response as sent, with its code.
type Encoded = (Vec<u8>, ResponseCode);

impl Capture {
    fn take(&self) -> Option<Encoded> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: hickory_server::zone_handler::MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let limit = self.limit.load(std::sync::atomic::Ordering::Relaxed);
        let (bytes, info) = encode(response, limit)?;
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some((bytes, info.response_code));
        Ok(info)
    }
}

/// A response encoded as hickory-server's listeners encode one: within
/// `limit` bytes; SERVFAIL if it cannot be encoded.
pub fn encode<'a>(
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    limit: usize,
) -> Result<(Vec<u8>, ResponseInfo), hickory_server::net::NetError> {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
    let request = *response.metadata();
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(u16::try_from(limit).unwrap_or(u16::MAX));
    let info = match response.destructive_emit(&mut encoder) {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(%error, "encoding a DNS response failed; SERVFAIL instead");
            let mut failed = request;
            failed.response_code = ResponseCode::ServFail;
            failed.authoritative = false;
            failed.truncation = false;
            let header = Header { metadata: failed, counts: HeaderCounts::default() };
            bytes.clear();
            header.emit(&mut BinEncoder::new(&mut bytes))?;
            ResponseInfo::from(header)
        }
    };
    Ok((bytes, info))
}

/// An answer with records of hickory's own, as the full path builds
/// responses from them.
enum FullAnswer {
    Refused,
    /// A served record did not decode ([`UndecodableRecord`]).
    ServFail,
    Found {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    NoData(Record),
    NxDomain(Record),
}

impl FullAnswer {
    fn of(answer: Answer<'_>) -> Result<FullAnswer, UndecodableRecord> {
        let all = |records: Vec<RecordRef<'_>>| {
            records.iter().map(RecordRef::to_record).collect::<Result<Vec<_>, _>>()
        };
        Ok(match answer {
            Answer::Refused => FullAnswer::Refused,
            Answer::Found { answers, additionals } => {
                FullAnswer::Found { answers: all(answers)?, additionals: all(additionals)? }
            }
            Answer::NoData { soa } => FullAnswer::NoData(soa.to_record()?),
            Answer::NxDomain { soa } => FullAnswer::NxDomain(soa.to_record()?),
        })
    }
}

/// Whether a name has an upper-case letter.
fn has_upper_case(name: &hickory_proto::rr::Name) -> bool {
    name.iter().any(|label| label.iter().any(u8::is_ascii_uppercase))
}

/// An upper bound of the size of `records` in a response, the first after
/// `before` names already written: as the encoder writes them, each owner
/// compressed to a pointer while the encoder still compresses names
/// (`dns_types::limits::COMPRESSED_OWNERS`), in full after that.
fn section_size(records: &[Record], before: usize) -> usize {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let owner = if before + i < dns_types::limits::COMPRESSED_OWNERS {
                0
            } else {
                r.name.len() + 1 - 2
            };
            wire_size(r) + owner
        })
        .sum()
}

/// An upper bound of `record`'s size in a response: its owner compressed
/// to a pointer (it is the question's name or a name already in the
/// message), the fixed fields, and its data uncompressed.
fn wire_size(record: &Record) -> usize {
    let name = |n: &hickory_proto::rr::Name| n.len() + 1;
    2 + 10
        + match &record.data {
            RData::A(_) => 4,
            RData::AAAA(_) => 16,
            RData::SRV(srv) => 6 + name(&srv.target),
            RData::NS(ns) => name(&ns.0),
            RData::CNAME(cname) => name(&cname.0),
            RData::TXT(txt) => txt.txt_data.iter().map(|s| s.len() + 1).sum(),
            RData::SOA(soa) => name(&soa.mname) + name(&soa.rname) + 20,
            RData::HINFO(hinfo) => hinfo.cpu.len() + hinfo.os.len() + 2,
            // Anything else we never serve; count it generously.
            _ => 512,
        }
}

/// Zone transfers in progress at most; another is refused meanwhile.
const MAX_TRANSFERS: usize = 64;

/// Where zone transfers run: a thread of their own with its own runtime,
/// so that building and sending a large zone (and waiting on a slow
/// reader) never takes the threads that answer queries.
fn transfer_runtime() -> &'static (tokio::runtime::Handle, Arc<tokio::sync::Semaphore>) {
    static RUNTIME: std::sync::OnceLock<(tokio::runtime::Handle, Arc<tokio::sync::Semaphore>)> =
        std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("zone-transfers".into())
            .spawn(move || {
                lower_priority();
                runtime.block_on(std::future::pending::<()>())
            })
            .expect("starting the zone transfer thread");
        (handle, Arc::new(tokio::sync::Semaphore::new(MAX_TRANSFERS)))
    })
}

/// Lowers the calling thread's scheduling priority (nice 10): transfers
/// take the CPU the query threads leave, so that answers to queries are no
/// slower while a large zone is being sent.
#[allow(unsafe_code)] // setpriority on this thread: see the SAFETY note
fn lower_priority() {
    // SAFETY: a system call given this thread's own id and plain integers;
    // no memory is passed.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        tracing::debug!(%error, "could not lower the zone transfer thread's priority");
    }
}

/// Sends the zone at `apex` as a transfer on the transfer thread; `Err`
/// when too many transfers are in progress.
fn spawn_transfer<R: ResponseHandler>(
    served: Arc<crate::zone::Served>,
    apex: hickory_proto::rr::LowerName,
    queries: &hickory_server::zone_handler::Queries,
    edns: Option<Edns>,
    metadata: Metadata,
    mut handle: R,
    src: std::net::SocketAddr,
) -> Result<(), String> {
    use hickory_proto::serialize::binary::BinDecoder;
    let (runtime, slots) = transfer_runtime();
    let slot = slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| format!("{MAX_TRANSFERS} zone transfers are in progress; refused another"))?;
    let question = queries.as_bytes().to_vec();
    let count = queries.len();
    runtime.spawn(async move {
        let _slot = slot;
        let Ok(queries) =
            hickory_server::zone_handler::Queries::read(&mut BinDecoder::new(&question), count)
        else {
            return;
        };
        let Some(transfer) = served.transfer(&apex) else { return };
        let started = std::time::Instant::now();
        let mut sent = 0;
        match send_transfer(
            &mut handle,
            &queries,
            edns.as_ref(),
            metadata,
            transfer.records(),
            &mut sent,
        )
        .await
        {
            Ok(_) => {
                tracing::debug!(%src, records = sent, took = ?started.elapsed(), "zone transferred")
            }
            // The client went away or was too slow for the connection's
            // idle limit: it has an incomplete transfer (no closing SOA),
            // which it can tell.
            Err(error) => tracing::warn!(
                %src, %error, records = sent, took = ?started.elapsed(),
                "zone transfer cut short"
            ),
        }
    });
    Ok(())
}

/// Largest zone-transfer message we build: 16 KiB, as Knot builds them.
/// Smaller messages bound what is built ahead of a reader that is slow.
const MAX_TRANSFER_MESSAGE: usize = 16 * 1024;

/// A zone transfer over TCP: `records` (SOA ... SOA) in as many messages as
/// it takes, each whole records only (RFC 5936 section 2.2), counted in
/// `sent` as they go.  Each message's records are decoded into hickory's
/// form as it is built, so a large zone is never held in that form whole.
/// Each message waits until the connection takes it (a reader that stops
/// reading is let go by the connection's write limit, `crate::tcp`), and
/// then yields to the other transfers, so that one reader's transfer never
/// waits for another's.
async fn send_transfer<R: ResponseHandler>(
    handle: &mut R,
    queries: &hickory_server::zone_handler::Queries,
    edns: Option<&Edns>,
    metadata: Metadata,
    records: impl Iterator<Item = RecordRef<'_>>,
    sent: &mut usize,
) -> Result<ResponseInfo, hickory_server::net::NetError> {
    let none: [&Record; 0] = [];
    let mut records = records.peekable();
    let mut last = None;
    let mut message = Vec::new();
    while records.peek().is_some() {
        message.clear();
        let mut bytes = 0;
        while let Some(record) = records.peek() {
            // An upper bound without encoding: nothing compressed.
            let size = record.wire_len();
            if !message.is_empty() && bytes + size > MAX_TRANSFER_MESSAGE {
                break;
            }
            bytes += size;
            message.push(record.to_record().map_err(|e| e.to_string())?);
            records.next();
        }
        let response = MessageResponseBuilder::new(queries, edns).build(
            metadata,
            message.iter(),
            none,
            none,
            none,
        );
        last = Some(handle.send_response(response).await.map_err(|error| {
            hickory_server::net::NetError::from(format!("{error} ({sent} records sent)"))
        })?);
        *sent += message.len();
        tokio::task::yield_now().await;
    }
    Ok(last.expect("a transfer has at least the SOA"))
}
