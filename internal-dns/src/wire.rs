//! One DNS question asked of one server over a chosen transport, with the
//! answer as plain data: response code, AA, the records (as
//! [`dns_types::DnsRecord`]s) and the zone's SOA serial when one came back.
//!
//! omdb uses it to see what a server actually answers on the wire, so that
//! it can compare that with what the server's config API claims; unlike
//! [`crate::Resolver`] it neither retries on another server nor falls back
//! from UDP to TCP, because the point is to see each path as it is.  The
//! exchange is hickory's client (`hickory-net`): a random id, the reply
//! matched to the query and to the server asked, late or foreign replies
//! ignored.

use dns_types::{DnsRecord, SrvRecord};
use hickory_net::client::Client;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::DnsHandle;
use hickory_proto::op::{DnsRequest, DnsRequestOptions, Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption, NSIDPayload};
use hickory_proto::rr::{Name, RData, RecordType};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// How a question travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        })
    }
}

/// One record of an answer, with its owner name (absolute, lower case, no
/// trailing dot).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    pub owner: String,
    pub record: DnsRecord,
}

/// What a server answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAnswer {
    /// `NOERROR`, `NXDOMAIN`, `REFUSED`, ...
    pub rcode: String,
    /// The AA flag.
    pub authoritative: bool,
    /// The TC flag.
    pub truncated: bool,
    /// Answer-section records of the types we serve.
    pub answers: Vec<WireRecord>,
    /// The serial of an SOA record in the answer or authority section.
    pub soa_serial: Option<u32>,
    /// Answer-section records of other types, as text.
    pub other_answers: Vec<String>,
    /// Who answered: the server's NSID (RFC 5001; our servers give their
    /// id), when it sent one.
    pub answered_by: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0:?} is not a valid DNS name")]
    InvalidName(String),
    #[error("{0:?} is not a record type")]
    InvalidType(String),
    #[error("no answer over {transport} within {timeout:?}")]
    Timeout { transport: Transport, timeout: Duration },
    #[error("over {transport}: {source}")]
    Io {
        transport: Transport,
        #[source]
        source: std::io::Error,
    },
    #[error("over {transport}: the reply is not a DNS message: {message}")]
    BadReply { transport: Transport, message: String },
}

/// Asks `server` for the `rtype` records of `name` over `transport`,
/// giving up after `timeout`.
pub async fn ask(
    server: SocketAddr,
    name: &str,
    rtype: &str,
    transport: Transport,
    timeout: Duration,
) -> Result<WireAnswer, WireError> {
    let absolute = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    let qname = Name::from_str(&absolute).map_err(|_| WireError::InvalidName(name.into()))?;
    let qtype = RecordType::from_str(&rtype.to_ascii_uppercase())
        .map_err(|_| WireError::InvalidType(rtype.into()))?;
    // A random id (hickory's); the client keeps it and matches the reply.
    let mut message = Message::query();
    message.metadata.recursion_desired = false;
    message.add_query(Query::query(qname, qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    // Ask who answers (an empty NSID option).
    if let Ok(payload) = NSIDPayload::new(Vec::new()) {
        edns.options_mut().insert(EdnsOption::NSID(payload));
    }
    message.set_edns(edns);
    let exchange = async {
        let provider = TokioRuntimeProvider::default();
        let client = match transport {
            Transport::Udp => {
                // One datagram, never sent again: what one question gets is
                // the evidence (hickory would otherwise resend it within the
                // timeout and hide a lossy path).  Its own limit is set past
                // ours, so that no answer in time is always our `Timeout`.
                let stream = UdpClientStream::builder(server, provider)
                    .with_timeout(Some(timeout + Duration::from_secs(1)))
                    .with_max_retries(0)
                    .build();
                let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
                tokio::spawn(background);
                client
            }
            Transport::Tcp => {
                let (connect, handle) = TcpClientStream::new(server, None, Some(timeout), provider);
                let stream = connect.await?;
                let (client, background) =
                    Client::<TokioRuntimeProvider>::with_timeout(stream, handle, timeout);
                tokio::spawn(background);
                client
            }
        };
        let mut options = DnsRequestOptions::default();
        options.use_edns = true;
        let mut responses = client.send(DnsRequest::new(message, options));
        use futures::StreamExt;
        match responses.next().await {
            Some(response) => Ok(response?.into_message()),
            None => Err(hickory_net::NetError::from("the connection closed without a reply")),
        }
    };
    let reply = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| WireError::Timeout { transport, timeout })?
        .map_err(|e| match e {
            hickory_net::NetError::Timeout => WireError::Timeout { transport, timeout },
            hickory_net::NetError::Io(source) => WireError::Io {
                transport,
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            other => WireError::BadReply { transport, message: other.to_string() },
        })?;
    let mut answer = WireAnswer {
        rcode: rcode_mnemonic(u16::from(reply.metadata.response_code)),
        authoritative: reply.metadata.authoritative,
        truncated: reply.metadata.truncation,
        answers: Vec::new(),
        soa_serial: None,
        other_answers: Vec::new(),
        answered_by: reply.edns.as_ref().and_then(|edns| {
            match edns.options().get(EdnsCode::NSID) {
                Some(EdnsOption::NSID(payload)) if !payload.as_ref().is_empty() => {
                    Some(String::from_utf8_lossy(payload.as_ref()).into_owned())
                }
                _ => None,
            }
        }),
    };
    for record in reply.answers.iter().chain(reply.authorities.iter()) {
        if let RData::SOA(soa) = &record.data {
            answer.soa_serial = Some(soa.serial);
        }
    }
    for record in &reply.answers {
        let owner = crate::canonical(&record.name);
        let converted = match &record.data {
            RData::A(a) => Some(DnsRecord::A(a.0)),
            RData::AAAA(a) => Some(DnsRecord::Aaaa(a.0)),
            RData::SRV(srv) => Some(DnsRecord::Srv(SrvRecord {
                prio: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: crate::canonical(&srv.target),
            })),
            RData::NS(ns) => Some(DnsRecord::Ns(crate::canonical(&ns.0))),
            RData::CNAME(c) => Some(DnsRecord::Cname(crate::canonical(&c.0))),
            RData::TXT(txt) => Some(DnsRecord::Txt(
                txt.txt_data.iter().map(|s| String::from_utf8_lossy(s)).collect(),
            )),
            _ => None,
        };
        match converted {
            Some(record) => answer.answers.push(WireRecord { owner, record }),
            None if matches!(record.data, RData::SOA(_)) => {}
            None => answer.other_answers.push(format!("{owner} {}", record.record_type())),
        }
    }
    Ok(answer)
}

/// The RFC 1035/6895 mnemonic of a response code, as dig prints it.
pub fn rcode_mnemonic(code: u16) -> String {
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        9 => "NOTAUTH".into(),
        16 => "BADVERS".into(),
        other => format!("RCODE{other}"),
    }
}
