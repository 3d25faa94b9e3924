//! Answering DNS queries: hickory-server does TCP and the wire format
//! (including truncation to the client's UDP size and malformed packets,
//! which get FORMERR or are dropped); `crate::udp` receives UDP queries,
//! answers plain ones itself (`crate::plain`, checked against this path)
//! and hands the rest to [`DnsHandler::answer_udp`]; this handler decides
//! what to answer from the config being served.

use crate::metrics::{QueryLabels, QueryType, Transport};
use crate::state::ServerState;
use crate::zone::Answer;
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
            match served.transfer(query.name()) {
                // IXFR over UDP: the current SOA alone tells the client to
                // come back over TCP (RFC 1995 section 4).
                Some(records) if allowed && udp && query.query_type() == RecordType::IXFR => {
                    metadata.authoritative = true;
                    let none: [&Record; 0] = [];
                    let response =
                        builder.build(metadata, records[..1].iter().copied(), none, none, none);
                    response_handle.send_response(response).await
                }
                Some(records) if allowed && !udp => {
                    metadata.authoritative = true;
                    let edns = response_edns.as_ref();
                    send_transfer(&mut response_handle, &request.queries, edns, metadata, &records)
                        .await
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
            let answer = if let Some(record) = &identity {
                Answer::Found { answers: vec![record], additionals: vec![] }
            } else if matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
                // QCLASS ANY (RFC 1035 3.2.5) finds the class IN data we
                // serve, as Knot and NSD answer it.
                served.lookup(crate::zone::WireBuf::of(query.name()).as_bytes(), query.query_type())
            } else {
                // We are authoritative for class IN only.
                Answer::Refused
            };
            // RFC 8482: ANY gets one RRset of the name, not
            // every record, over UDP and TCP alike, as Knot answers: a
            // small question must not draw a large answer.
            let answer = match answer {
                Answer::Found { mut answers, mut additionals }
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
                    Answer::Found { answers, additionals }
                }
                other => other,
            };
            match answer {
                Answer::Refused => {
                    response_handle
                        .send_response(builder.build_no_records(refuse(ResponseCode::Refused)))
                        .await
                }
                Answer::Found { mut answers, mut additionals } => {
                    metadata.authoritative = crate::policy::authoritative(query.query_class());
                    if request.protocol() == Protocol::Udp {
                        let edns = response_edns.as_ref();
                        // Header, question, OPT with an NSID at most.
                        let fixed =
                            12 + query.name().len() + 1 + 4 + edns.map_or(0, |_| 11 + 4 + 36);
                        let answer_bytes: usize = answers.iter().map(|r| wire_size(r)).sum();
                        let additional_bytes: usize =
                            additionals.iter().map(|r| wire_size(r)).sum();
                        match crate::policy::udp_fit(
                            fixed,
                            answer_bytes,
                            additional_bytes,
                            udp_limit,
                        ) {
                            UdpFit::Truncated => {
                                metadata.truncation = true;
                                answers.clear();
                                additionals.clear();
                            }
                            UdpFit::WithoutAdditionals => additionals.clear(),
                            UdpFit::Whole => {}
                        }
                    }
                    // The owner names of the answers to the name asked keep
                    // the case it was asked in (as Knot and NSD answer,
                    // which resolvers using 0x20 randomization expect).
                    let asked = query.original().name();
                    let renamed: Vec<Record>;
                    let answers: Vec<&Record> = if has_upper_case(asked) {
                        renamed = answers
                            .iter()
                            .map(|r| {
                                let mut r = (*r).clone();
                                if r.name == *asked {
                                    r.name = asked.clone();
                                }
                                r
                            })
                            .collect();
                        renamed.iter().collect()
                    } else {
                        answers
                    };
                    let response = builder.build(metadata, answers, none, none, additionals);
                    response_handle.send_response(response).await
                }
                Answer::NoData { soa } => {
                    metadata.authoritative = true;
                    let response = builder.build(metadata, none, none, [soa], none);
                    response_handle.send_response(response).await
                }
                Answer::NxDomain { soa } => {
                    metadata.authoritative = true;
                    metadata.response_code = ResponseCode::NXDomain;
                    let response = builder.build(metadata, none, none, [soa], none);
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
        self.state.metrics.query(QueryLabels {
            transport: match request.protocol() {
                Protocol::Udp => Transport::Udp,
                Protocol::Tcp => Transport::Tcp,
                _ => Transport::Other,
            },
            qtype: query.map_or(QueryType::OTHER, |q| q.query_type().into()),
            rcode: info.response_code.into(),
        });
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
        use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
        let mut capture = Capture::default();
        let qtype = match Request::from_bytes(bytes.to_vec(), src, Protocol::Udp) {
            Ok(request) => {
                if request.metadata.message_type == MessageType::Response {
                    // Never answer answers (reflection).
                    return None;
                }
                capture.limit =
                    crate::policy::udp_limit(request.edns.as_ref().map(|e| e.max_payload()));
                self.handle_request::<_, hickory_server::net::runtime::TokioTime>(
                    &request,
                    capture.clone(),
                )
                .await;
                request.queries.queries().first().map(|q| q.query_type())
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
                capture.clone().send_response(response).await.ok()?;
                self.state.metrics.query(udp_labels(None, ResponseCode::FormErr));
                None
            }
        };
        let (reply, rcode) = capture.take()?;
        Some((reply, udp_labels(qtype, rcode)))
    }
}

fn udp_labels(qtype: Option<RecordType>, rcode: ResponseCode) -> QueryLabels {
    QueryLabels {
        transport: Transport::Udp,
        qtype: qtype.map_or(QueryType::OTHER, QueryType::from),
        rcode: rcode.into(),
    }
}

/// Keeps the encoded response instead of sending it, encoded as
/// hickory-server's UDP path encodes it: within the client's size
/// (`policy::udp_limit`); SERVFAIL if it cannot be encoded.
#[derive(Clone)]
struct Capture {
    slot: Arc<std::sync::Mutex<Option<Encoded>>>,
    limit: usize,
}

impl Default for Capture {
    fn default() -> Self {
        Capture { slot: Arc::default(), limit: 512 }
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
        use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
        let limit = self.limit as u16;
        let request = *response.metadata();
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(limit);
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
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some((bytes, info.response_code));
        Ok(info)
    }
}

/// Whether a name has an upper-case letter.
fn has_upper_case(name: &hickory_proto::rr::Name) -> bool {
    name.iter().any(|label| label.iter().any(u8::is_ascii_uppercase))
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

/// Largest zone-transfer message we build (under the 65,535-byte TCP
/// limit, with room for the header and question).
const MAX_TRANSFER_MESSAGE: usize = 60_000;

/// A zone transfer over TCP: `records` (SOA ... SOA) in as many messages as
/// it takes, each whole records only (RFC 5936 section 2.2).
async fn send_transfer<R: ResponseHandler>(
    handle: &mut R,
    queries: &hickory_server::zone_handler::Queries,
    edns: Option<&Edns>,
    metadata: Metadata,
    records: &[&Record],
) -> Result<ResponseInfo, hickory_server::net::NetError> {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
    let none: [&Record; 0] = [];
    let mut start = 0;
    let mut last = None;
    while start < records.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < records.len() {
            let mut buffer = Vec::new();
            let size =
                records[end].emit(&mut BinEncoder::new(&mut buffer)).map_or(512, |()| buffer.len());
            if end > start && bytes + size > MAX_TRANSFER_MESSAGE {
                break;
            }
            bytes += size;
            end += 1;
        }
        let response = MessageResponseBuilder::new(queries, edns).build(
            metadata,
            records[start..end].iter().copied(),
            none,
            none,
            none,
        );
        last = Some(handle.send_response(response).await?);
        start = end;
    }
    Ok(last.expect("a transfer has at least the SOA"))
}
