//! Plain queries answered straight from the compiled zone, over UDP and TCP.
//!
//! Nearly every query a DNS server of a control plane gets is plain: one
//! question of class IN for an ordinary type, at most an OPT record
//! without options.  For those the UDP loops and the TCP connections skip
//! hickory's decoding and encoding, which cost more than finding the answer: the name is looked
//! up by the question's own bytes (lower-cased), and the response is
//! written byte by byte, with the question copied from the query (so its
//! case is kept, as Knot and NSD keep it) and the answers' owner a pointer
//! to it.
//!
//! Anything else returns `None` and takes the full path
//! ([`crate::dns::DnsHandler::answer_bytes`]): other classes and types,
//! CNAME chains, refusals, answers that do not fit the client's UDP size
//! (or, over TCP, one message).  The
//! full path is the reference: tests and the `dns_message` fuzz target
//! check that both give the same answer.

use crate::metrics::{QueryLabels, QueryType, Transport};
use crate::zone::{Answer, RecordRef, Served, suffix_at, wire_name_len};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// Where the question starts.
const HEADER: usize = 12;
/// A compression pointer to the question's name.
const TO_QNAME: [u8; 2] = [0xc0, HEADER as u8];

/// A query whose answer depends on nothing but its bytes after the ID and
/// the generation served: a standard query (QR 0, opcode QUERY) with one
/// question, no answer or authority records, at most an OPT record without
/// options, not a zone transfer, and nothing after it.
pub struct PlainQuery<'a> {
    bytes: &'a [u8],
    /// Where the question's name ends (after its root label).
    name_end: usize,
    qtype: u16,
    qclass: u16,
    edns: Option<Edns>,
}

/// What the client's OPT record says.
struct Edns {
    payload: u16,
    version: u8,
    dnssec_ok: bool,
}

impl<'a> PlainQuery<'a> {
    pub fn parse(query: &'a [u8]) -> Option<PlainQuery<'a>> {
        let word = |at: usize| -> Option<u16> {
            Some(u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]))
        };
        let flags = *query.get(2)?;
        if flags & 0x80 != 0 || (flags >> 3) & 0x0f != 0 {
            return None;
        }
        if word(4)? != 1 || word(6)? != 0 || word(8)? != 0 || word(10)? > 1 {
            return None;
        }
        let mut at = HEADER;
        loop {
            let length = *query.get(at)?;
            at += 1;
            match length {
                0 => break,
                1..=63 => at += usize::from(length),
                // Compression or extended labels: not in a plain question.
                _ => return None,
            }
        }
        // Longer names do not decode (the full path answers FORMERR).
        if at - HEADER > 255 {
            return None;
        }
        let name_end = at;
        let (qtype, qclass) = (word(at)?, word(at + 2)?);
        // AXFR and IXFR depend on who asks.
        if qtype == 251 || qtype == 252 {
            return None;
        }
        at += 4;
        let edns = if word(10)? == 1 {
            // OPT: root owner, type 41, class (size), TTL (extended RCODE,
            // version, flags), RDLENGTH 0.
            if query.len() != at + 11 || query[at] != 0 || word(at + 1)? != 41 || word(at + 9)? != 0
            {
                return None;
            }
            Some(Edns {
                payload: word(at + 3)?,
                version: query[at + 6],
                dnssec_ok: query[at + 7] & 0x80 != 0,
            })
        } else if at == query.len() {
            None
        } else {
            return None;
        };
        Some(PlainQuery { bytes: query, name_end, qtype, qclass, edns })
    }

    /// The bytes whose answer is the same for every query that has them:
    /// everything after the ID.
    pub fn key(&self) -> &'a [u8] {
        &self.bytes[2..]
    }
}

/// The response to `query` from `served` over `transport` (UDP or TCP),
/// and the labels to count it under, or `None` when the full path must
/// answer it.
pub fn answer(
    served: &Served,
    query: &PlainQuery<'_>,
    transport: Transport,
) -> Option<(Vec<u8>, QueryLabels)> {
    let mut out = Vec::with_capacity(256);
    let labels = answer_into(served, query, transport, &mut out)?;
    Some((out, labels))
}

/// As [`answer`], writing the response into `out` (cleared first): the
/// UDP loops and TCP connections keep one buffer for every answer rather
/// than allocating one per query.  What `out` holds after `None` is
/// meaningless.
pub fn answer_into(
    served: &Served,
    query: &PlainQuery<'_>,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Option<QueryLabels> {
    out.clear();
    if query.qclass != 1 || query.edns.as_ref().is_some_and(|e| e.version != 0) {
        return None;
    }
    let qtype = RecordType::from(query.qtype);
    // The types we serve and the usual questions; meta types, ANY and the
    // obsolete ones are answered by the full path.
    if !matches!(
        qtype,
        RecordType::A
            | RecordType::NS
            | RecordType::CNAME
            | RecordType::SOA
            | RecordType::PTR
            | RecordType::MX
            | RecordType::TXT
            | RecordType::AAAA
            | RecordType::SRV
    ) {
        return None;
    }
    let question = &query.bytes[HEADER..query.name_end];
    let mut lower = [0u8; 255];
    let qname = &mut lower[..question.len()];
    for (to, from) in qname.iter_mut().zip(question) {
        *to = from.to_ascii_lowercase();
    }
    let qname = &*qname;
    let limit = match transport {
        Transport::Udp => crate::policy::udp_limit(query.edns.as_ref().map(|e| e.payload)),
        _ => crate::policy::MAX_TCP_MESSAGE,
    };

    out.extend_from_slice(&query.bytes[..2]);
    // QR, AA, RD as asked; RA, AD, CD clear; opcode QUERY.
    out.push(0x84 | (query.bytes[2] & 0x01));
    let rcode = match served.lookup(qname, qtype) {
        Answer::Refused => return None,
        Answer::Found { answers, additionals } => {
            // A CNAME in an answer to another type means a chain: records
            // whose owner is not the question's name.
            if qtype != RecordType::CNAME && answers.iter().any(|r| r.rtype == RecordType::CNAME) {
                return None;
            }
            out.push(0);
            counts(out, answers.len(), 0, additionals.len(), query);
            out.extend_from_slice(&query.bytes[HEADER..query.name_end + 4]);
            // Where each SRV or NS target was written, so that its address
            // records point to it.
            let mut targets: Vec<(&[u8], u16)> = Vec::new();
            for record in &answers {
                out.extend_from_slice(&TO_QNAME);
                let target = record_after_owner(out, record, qname)?;
                if let Some((name, at)) = target {
                    targets.push((name, at));
                }
            }
            for record in &additionals {
                match targets.iter().find(|(name, _)| *name == record.owner) {
                    Some((_, at)) => out.extend_from_slice(&(0xc000 | at).to_be_bytes()),
                    None => compressed(out, record.owner, qname),
                }
                record_after_owner(out, record, qname)?;
            }
            ResponseCode::NoError
        }
        Answer::NoData { soa } => negative(out, query, qname, soa, ResponseCode::NoError)?,
        Answer::NxDomain { soa } => negative(out, query, qname, soa, ResponseCode::NXDomain)?,
    };
    if let Some(edns) = &query.edns {
        // OPT: root, type 41, our size, extended RCODE 0, version 0, DO as
        // asked (RFC 3225), no options.
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&crate::policy::ADVERTISED_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, if edns.dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    }
    if out.len() > limit {
        // What does not fit is the full path's to decide (`policy::udp_fit`,
        // `policy::tcp_fit`).
        return None;
    }
    Some(QueryLabels { transport, qtype: QueryType::from(qtype), rcode: rcode.into() })
}

/// The rest of a negative answer after the ID and the first flags byte:
/// the zone's SOA in the authority section (RFC 2308).
fn negative(
    out: &mut Vec<u8>,
    query: &PlainQuery<'_>,
    qname: &[u8],
    soa: RecordRef<'_>,
    rcode: ResponseCode,
) -> Option<ResponseCode> {
    out.push(rcode.low());
    counts(out, 0, 1, 0, query);
    out.extend_from_slice(&query.bytes[HEADER..query.name_end + 4]);
    // The SOA's owner is the zone's apex: the end of the question's name.
    compressed(out, soa.owner, qname);
    record_after_owner(out, &soa, qname)?;
    Some(rcode)
}

/// The section counts after the flags.
fn counts(
    out: &mut Vec<u8>,
    answers: usize,
    authority: usize,
    additionals: usize,
    query: &PlainQuery<'_>,
) {
    let additionals = additionals + usize::from(query.edns.is_some());
    for count in [1, answers, authority, additionals] {
        out.extend_from_slice(&(count as u16).to_be_bytes());
    }
}

/// A name in record data: its labels until the rest is a suffix of the
/// question's name (`qname`, wire form, lower case), then a pointer to it
/// there (RFC 1035 section 4.1.4).
fn compressed(out: &mut Vec<u8>, bytes: &[u8], qname: &[u8]) {
    let mut from = 0;
    while let Some(&len) = bytes.get(from).filter(|len| **len > 0) {
        if let Some(at) = suffix_at(qname, &bytes[from..]) {
            out.extend_from_slice(&(0xc000 | (HEADER + at) as u16).to_be_bytes());
            return;
        }
        let next = from + 1 + usize::from(len);
        out.extend_from_slice(&bytes[from..next]);
        from = next;
    }
    out.push(0);
}

/// A record after its owner: type, class, TTL, data.  Returns, for an SRV
/// or NS record, its target and where it was written; `None` for data that
/// does not read as its type says.  Names in NS, CNAME and SOA data are
/// compressed against the question's name `qname`; SRV targets never are
/// (RFC 2782).
fn record_after_owner<'r>(
    out: &mut Vec<u8>,
    record: &RecordRef<'r>,
    qname: &[u8],
) -> Option<Option<(&'r [u8], u16)>> {
    out.extend_from_slice(&u16::from(record.rtype).to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&record.ttl.to_be_bytes());
    let length_at = out.len();
    out.extend_from_slice(&[0, 0]);
    let data = record.data;
    let mut target = None;
    match record.rtype {
        RecordType::SRV => {
            let name = data.get(6..)?;
            out.extend_from_slice(&data[..6]);
            target = Some((name, u16::try_from(out.len()).ok()?));
            out.extend_from_slice(name);
        }
        RecordType::NS => {
            target = Some((data, u16::try_from(out.len()).ok()?));
            compressed(out, data, qname);
        }
        RecordType::CNAME => compressed(out, data, qname),
        RecordType::SOA => {
            let mname = wire_name_len(data)?;
            let rname = wire_name_len(&data[mname..])?;
            compressed(out, &data[..mname], qname);
            compressed(out, &data[mname..mname + rname], qname);
            out.extend_from_slice(data.get(mname + rname..)?);
        }
        // A, AAAA, TXT: as stored.
        _ => out.extend_from_slice(data),
    }
    let length = u16::try_from(out.len() - length_at - 2).ok()?;
    out[length_at..length_at + 2].copy_from_slice(&length.to_be_bytes());
    // Pointers reach 14 bits: a target written further is not pointed to.
    Some(target.filter(|(_, at)| *at < 0x4000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::DnsHandler;
    use crate::state::ServerState;
    use hickory_proto::op::Message;
    use hickory_server::net::xfer::Protocol;
    use std::sync::Arc;

    /// A server state serving a zone with every kind of record we serve
    /// (the storage directory lives as long as the state).
    async fn handler() -> (DnsHandler, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::storage::Storage::open(&dir.path().join("storage")).unwrap();
        let token = api_auth::ApiToken::generate();
        let state = Arc::new(ServerState::load(uuid::Uuid::nil(), storage, vec![], token).unwrap());
        let config: dns_types::DnsConfig = serde_json::from_value(serde_json::json!({
            "generation": 7, "time_created": "2026-01-01T00:00:00Z", "creator": "t", "comment": "t",
            "zones": [
                {"zone_name": "control-plane.internal", "ttl_seconds": 60, "names": {
                    "@": [{"type": "NS", "data": "ns1.control-plane.internal"}],
                    "ns1": [{"type": "A", "data": "192.0.2.53"}],
                    "www": [{"type": "A", "data": "192.0.2.1"}, {"type": "AAAA", "data": "fd00::1"},
                            {"type": "AAAA", "data": "fd00::2"}],
                    "alias": [{"type": "CNAME", "data": "www.control-plane.internal"}],
                    "out": [{"type": "CNAME", "data": "www.example.com"}],
                    "_nexus._tcp": [
                        {"type": "SRV", "data": {"prio": 0, "weight": 5, "port": 12221, "target": "www.control-plane.internal"}},
                        {"type": "SRV", "data": {"prio": 1, "weight": 0, "port": 12222, "target": "ns1.control-plane.internal"}},
                        {"type": "SRV", "data": {"prio": 2, "weight": 0, "port": 1, "target": "gone.control-plane.internal"}}],
                    "txt": [{"type": "TXT", "data": "hello world"}],
                    "long": [{"type": "TXT", "data": "x".repeat(700)}],
                    "a.deep.tree": [{"type": "A", "data": "192.0.2.9"}]
                }},
                {"zone_name": "example.test", "ttl_seconds": 300, "names": {
                    "api": [{"type": "A", "data": "192.0.2.10"}]
                }}
            ]
        }))
        .unwrap();
        state.update(config, None).await.unwrap();
        (DnsHandler { state }, dir)
    }

    /// A query for `name` and `qtype` (class IN), with an OPT record of
    /// that payload size and DO bit when `edns` is given.
    fn query(id: u16, rd: bool, name: &str, qtype: u16, edns: Option<(u16, bool)>) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[u8::from(rd), 0, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        if let Some((size, dnssec_ok)) = edns {
            q.extend_from_slice(&[0, 0, 41]);
            q.extend_from_slice(&size.to_be_bytes());
            q.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
        }
        q
    }

    /// What this path answers over `transport`, if anything, and what the
    /// full path answers.
    async fn both_over(
        handler: &DnsHandler,
        query: &[u8],
        transport: Transport,
    ) -> (Option<Vec<u8>>, Vec<u8>) {
        let served = handler.state.served();
        let fast =
            PlainQuery::parse(query).and_then(|p| answer(&served, &p, transport)).map(|(r, _)| r);
        let src = "127.0.0.1:5353".parse().unwrap();
        let protocol = match transport {
            Transport::Udp => Protocol::Udp,
            _ => Protocol::Tcp,
        };
        let (full, _) = handler.answer_bytes(query, src, protocol).await.unwrap();
        (fast, full)
    }

    async fn both(handler: &DnsHandler, query: &[u8]) -> (Option<Vec<u8>>, Vec<u8>) {
        both_over(handler, query, Transport::Udp).await
    }

    /// Every plain question about our zones gets from this path the
    /// message the full path gives (decoded: names compressed differently
    /// are the same names), and the ordinary ones are answered here.
    #[tokio::test]
    async fn answers_as_the_full_path_does() {
        let (handler, _dir) = handler().await;
        let names = [
            "www.control-plane.internal",
            "WwW.Control-Plane.internal",
            "_nexus._tcp.control-plane.internal",
            "ns1.control-plane.internal",
            "control-plane.internal",
            "CONTROL-PLANE.INTERNAL",
            "alias.control-plane.internal",
            "out.control-plane.internal",
            "txt.control-plane.internal",
            "long.control-plane.internal",
            "deep.tree.control-plane.internal",
            "tree.control-plane.internal",
            "a.deep.tree.control-plane.internal",
            "missing.control-plane.internal",
            "x.missing.control-plane.internal",
            "api.example.test",
            "nothing.example.test",
            "elsewhere.org",
            "internal",
        ];
        let types = [1, 2, 5, 6, 12, 15, 16, 28, 33, 255, 0, 41, 99];
        let edns =
            [None, Some((512, false)), Some((1232, true)), Some((4096, false)), Some((100, false))];
        let (mut answered_here, mut over_tcp) = (0, 0);
        for name in names {
            for qtype in types {
                for edns in edns {
                    for (rd, transport) in [false, true]
                        .into_iter()
                        .flat_map(|rd| [(rd, Transport::Udp), (rd, Transport::Tcp)])
                    {
                        let q = query(0x1234, rd, name, qtype, edns);
                        let (fast, full) = both_over(&handler, &q, transport).await;
                        let Some(fast) = fast else { continue };
                        answered_here += 1;
                        over_tcp += usize::from(transport == Transport::Tcp);
                        let what =
                            format!("{name} type {qtype} EDNS {edns:?} RD {rd} {transport:?}");
                        let fast_message = Message::from_vec(&fast).expect(&what);
                        assert_eq!(fast_message, Message::from_vec(&full).unwrap(), "{what}");
                        // The question as asked, case included.
                        assert_eq!(
                            fast[12..12 + name.len() + 6],
                            q[12..12 + name.len() + 6],
                            "{what}"
                        );
                        assert!(
                            fast.len() <= full.len(),
                            "{what}: {} > {}",
                            fast.len(),
                            full.len()
                        );
                    }
                }
            }
        }
        assert!(answered_here > 1000, "only {answered_here} answered here");
        assert!(over_tcp > 500, "only {over_tcp} answered here over TCP");
        // The ordinary questions are: found, NODATA, NXDOMAIN, with and
        // without EDNS.
        for (name, qtype) in [
            ("www.control-plane.internal", 28),
            ("_nexus._tcp.control-plane.internal", 33),
            ("www.control-plane.internal", 33),
            ("missing.control-plane.internal", 1),
            ("deep.tree.control-plane.internal", 1),
            ("control-plane.internal", 6),
        ] {
            for edns in [None, Some((1232, false))] {
                let (fast, _) = both(&handler, &query(7, false, name, qtype, edns)).await;
                assert!(fast.is_some(), "{name} {qtype} {edns:?} takes the full path");
            }
        }
    }

    /// Which queries are plain (answered here and cached by the loops):
    /// EDNS options, responses, other opcodes, transfers, trailing bytes
    /// and cut packets are not.
    #[test]
    fn which_queries_are_plain() {
        let plain = |q: &[u8]| PlainQuery::parse(q).is_some();
        let q = |edns| query(1, true, "www.example.test", 1, edns);
        assert!(plain(&q(None)));
        assert!(plain(&q(Some((1232, true)))));
        // EDNS options (NSID, cookies) make each answer its own.
        let mut nsid = q(Some((1232, false)));
        let at = nsid.len() - 2;
        nsid[at..].copy_from_slice(&4u16.to_be_bytes());
        nsid.extend_from_slice(&[0, 3, 0, 0]);
        assert!(!plain(&nsid));
        let mut response = q(None);
        response[2] |= 0x80;
        assert!(!plain(&response));
        let mut notify = q(None);
        notify[2] |= 4 << 3;
        assert!(!plain(&notify));
        assert!(!plain(&query(1, false, "example.test", 252, None)));
        assert!(!plain(&query(1, false, "example.test", 251, None)));
        let mut trailing = q(None);
        trailing.push(0);
        assert!(!plain(&trailing));
        assert!(!plain(&q(None)[..20]));
        assert!(!plain(&[0; 11]));
    }

    /// What this path leaves to the full one.
    #[tokio::test]
    async fn leaves_the_rest_to_the_full_path() {
        let (handler, _dir) = handler().await;
        let served = handler.state.served();
        let fast =
            |q: &[u8]| PlainQuery::parse(q).and_then(|p| answer(&served, &p, Transport::Udp));
        // CNAME chains, refusals, ANY, meta types.
        assert!(fast(&query(1, false, "alias.control-plane.internal", 1, None)).is_none());
        assert!(fast(&query(1, false, "elsewhere.org", 1, None)).is_none());
        assert!(fast(&query(1, false, "www.control-plane.internal", 255, None)).is_none());
        assert!(fast(&query(1, false, "www.control-plane.internal", 41, None)).is_none());
        // Too large for 512 bytes: the full path truncates.
        assert!(fast(&query(1, false, "long.control-plane.internal", 16, None)).is_none());
        assert!(
            fast(&query(1, false, "long.control-plane.internal", 16, Some((1232, false))))
                .is_some()
        );
        // Class CH (the server's identity), EDNS version 1 (BADVERS).
        let mut chaos = query(1, false, "id.server", 16, None);
        let at = chaos.len() - 2;
        chaos[at..].copy_from_slice(&3u16.to_be_bytes());
        assert!(fast(&chaos).is_none());
        let mut v1 = query(1, false, "www.control-plane.internal", 1, Some((1232, false)));
        let at = v1.len() - 5;
        v1[at] = 1;
        assert!(PlainQuery::parse(&v1).is_some() && fast(&v1).is_none());
    }
}
