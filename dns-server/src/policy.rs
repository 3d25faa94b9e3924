//! The response policy, decided once: which requests are answered at all
//! and which are refused before any lookup, how large a UDP answer may be,
//! what the OPT record of a response says, when an answer is authoritative,
//! and what an answer that does not fit becomes.  Both answering paths ask
//! it: the full path (`crate::dns`, hickory's decoding and encoding) and
//! the direct one for plain UDP queries (`crate::plain`), so they cannot
//! decide differently.  Where Knot and NSD agree, we answer as they do.

use hickory_proto::op::{OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};

/// Largest UDP response we send with EDNS, and the size our OPT record
/// advertises: the DNS Flag Day 2020 default, so that answers are not
/// fragmented and one that does not fit goes over TCP.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// The payload size a response's OPT record carries: the server's own
/// (RFC 6891 section 6.2.3: the requestor's size is not echoed), as Knot
/// and NSD answer.
pub const ADVERTISED_PAYLOAD: u16 = MAX_UDP_PAYLOAD;

/// The largest UDP response `client_payload` (its OPT size, if it sent an
/// OPT record) can take: 512 without EDNS; with it, its size, at least 512
/// and at most ours.
pub fn udp_limit(client_payload: Option<u16>) -> usize {
    usize::from(client_payload.map_or(512, |p| p.clamp(512, MAX_UDP_PAYLOAD)))
}

/// What becomes of a request before anything is looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// No answer at all: it is itself a response (answering answers lets
    /// two servers bounce packets at each other), as Knot and NSD do.
    Drop,
    /// Answered with this code and no records.
    Refuse(ResponseCode),
    /// A zone transfer (AXFR over TCP, IXFR): who may have it is the
    /// transfer's to decide.
    Transfer,
    /// A question to answer from the zone (or CHAOS).
    Lookup,
}

/// What a request's header and question say, for [`disposition`].
#[derive(Clone, Copy, Debug)]
pub struct RequestShape {
    /// Its OPT record's version, if it sent one.
    pub edns_version: Option<u8>,
    /// QR set: a response, not a query.
    pub is_response: bool,
    pub op_code: OpCode,
    pub questions: usize,
    /// The first question's type, if there is one.
    pub query_type: Option<RecordType>,
    pub udp: bool,
}

pub fn disposition(r: RequestShape) -> Disposition {
    use ResponseCode::*;
    if r.is_response {
        return Disposition::Drop;
    }
    if r.edns_version.is_some_and(|v| v > 0) {
        return Disposition::Refuse(BADVERS);
    }
    match r.op_code {
        OpCode::Query => {}
        // Configs come from Nexus, never zones from a primary: not
        // authoritative for this (as Knot answers a NOTIFY it does not
        // expect).
        OpCode::Notify => return Disposition::Refuse(NotAuth),
        _ => return Disposition::Refuse(NotImp),
    }
    if r.questions != 1 {
        return Disposition::Refuse(FormErr);
    }
    match r.query_type {
        // AXFR is a TCP protocol (RFC 5936 section 4.2): over UDP, not
        // implemented, as Knot and NSD answer.
        Some(RecordType::AXFR) if r.udp => Disposition::Refuse(NotImp),
        Some(RecordType::AXFR | RecordType::IXFR) => Disposition::Transfer,
        _ => Disposition::Lookup,
    }
}

/// Whether an answer in `class` is authoritative: for the zones we serve
/// (class IN, or ANY answered from IN), yes; CHAOS answers about the
/// server itself (`id.server`, `hostname.bind`) are not zone data, and Knot
/// and NSD send them without AA.
pub fn authoritative(class: DNSClass) -> bool {
    class != DNSClass::CH
}

/// What a UDP answer of these sizes becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpFit {
    Whole,
    /// The additional records are left out (they are optional), no TC.
    WithoutAdditionals,
    /// TC and no records: whole RRsets or none (RFC 2181 section 9), and
    /// the client asks again over TCP; a small question cannot draw a
    /// partial large answer.
    Truncated,
}

/// `fixed`: header, question and OPT; then the answer and additional
/// sections' sizes; `limit`: [`udp_limit`].
pub fn udp_fit(fixed: usize, answers: usize, additionals: usize, limit: usize) -> UdpFit {
    if fixed + answers > limit {
        UdpFit::Truncated
    } else if fixed + answers + additionals > limit {
        UdpFit::WithoutAdditionals
    } else {
        UdpFit::Whole
    }
}

/// The largest DNS message over TCP (its two-byte length prefix).
pub const MAX_TCP_MESSAGE: usize = 65_535;

/// What a TCP answer of these sizes becomes: over TCP an answer is whole,
/// never truncated; additional records are left out if they do not fit,
/// and an answer that cannot fit at all is a SERVFAIL (the bound on a
/// name's records keeps that from happening to a valid config).
pub fn tcp_fit(fixed: usize, answers: usize, additionals: usize) -> Option<UdpFit> {
    match udp_fit(fixed, answers, additionals, MAX_TCP_MESSAGE) {
        UdpFit::Truncated => None,
        fit => Some(fit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(query_type: RecordType) -> RequestShape {
        RequestShape {
            edns_version: Some(0),
            is_response: false,
            op_code: OpCode::Query,
            questions: 1,
            query_type: Some(query_type),
            udp: true,
        }
    }

    #[test]
    fn what_each_request_gets_before_any_lookup() {
        let cases = [
            (query(RecordType::A), Disposition::Lookup),
            (RequestShape { is_response: true, ..query(RecordType::A) }, Disposition::Drop),
            (
                RequestShape { is_response: true, edns_version: Some(1), ..query(RecordType::A) },
                Disposition::Drop,
            ),
            (
                RequestShape { edns_version: Some(1), ..query(RecordType::A) },
                Disposition::Refuse(ResponseCode::BADVERS),
            ),
            (
                RequestShape { op_code: OpCode::Notify, ..query(RecordType::SOA) },
                Disposition::Refuse(ResponseCode::NotAuth),
            ),
            (
                RequestShape { op_code: OpCode::Update, ..query(RecordType::SOA) },
                Disposition::Refuse(ResponseCode::NotImp),
            ),
            (
                RequestShape { questions: 2, ..query(RecordType::A) },
                Disposition::Refuse(ResponseCode::FormErr),
            ),
            (
                RequestShape { questions: 0, query_type: None, ..query(RecordType::A) },
                Disposition::Refuse(ResponseCode::FormErr),
            ),
            (query(RecordType::AXFR), Disposition::Refuse(ResponseCode::NotImp)),
            (RequestShape { udp: false, ..query(RecordType::AXFR) }, Disposition::Transfer),
            (query(RecordType::IXFR), Disposition::Transfer),
            (RequestShape { udp: false, ..query(RecordType::IXFR) }, Disposition::Transfer),
        ];
        for (shape, expected) in cases {
            assert_eq!(disposition(shape), expected, "{shape:?}");
        }
    }

    #[test]
    fn udp_sizes_and_what_does_not_fit() {
        assert_eq!(udp_limit(None), 512);
        assert_eq!(udp_limit(Some(100)), 512, "an OPT size below 512 counts as 512");
        assert_eq!(udp_limit(Some(4096)), 1232, "never more than ours");
        assert_eq!(udp_limit(Some(1000)), 1000);
        assert_eq!(udp_fit(40, 400, 50, 512), UdpFit::Whole);
        assert_eq!(udp_fit(40, 400, 100, 512), UdpFit::WithoutAdditionals);
        assert_eq!(udp_fit(40, 500, 0, 512), UdpFit::Truncated);
        assert!(authoritative(DNSClass::IN) && !authoritative(DNSClass::CH));
        assert_eq!(tcp_fit(40, 60_000, 100), Some(UdpFit::Whole));
        assert_eq!(tcp_fit(40, 60_000, 10_000), Some(UdpFit::WithoutAdditionals));
        assert_eq!(tcp_fit(40, 70_000, 0), None, "never a message cut short: SERVFAIL");
    }
}
