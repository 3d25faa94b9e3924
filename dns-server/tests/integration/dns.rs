//! DNS behaviour over real UDP and TCP sockets: records, negative answers,
//! truncation, EDNS, bad input.

use crate::common::*;
use dns_types::{DnsRecord, SrvRecord};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};

fn aaaa(s: &str) -> DnsRecord {
    DnsRecord::Aaaa(s.parse().unwrap())
}

fn srv(port: u16, target: &str) -> DnsRecord {
    DnsRecord::Srv(SrvRecord { prio: 0, weight: 0, port, target: target.into() })
}

async fn server_with_records() -> TestServer {
    let server = TestServer::start().await;
    let many: Vec<DnsRecord> = (1..=100).map(|i| aaaa(&format!("fd00::{i:x}"))).collect();
    server
        .put(&config(
            7,
            vec![
                ("@", vec![DnsRecord::Ns("ns1.control-plane.internal".into())]),
                ("ns1", vec![DnsRecord::A("192.0.2.53".parse().unwrap())]),
                ("abc.host", vec![aaaa("fd00::1"), DnsRecord::A("192.0.2.1".parse().unwrap())]),
                ("_nexus._tcp", vec![srv(12221, "abc.host.control-plane.internal")]),
                ("alias", vec![DnsRecord::Cname("abc.host.control-plane.internal".into())]),
                ("note", vec![DnsRecord::Txt("hello world".into())]),
                ("many", many),
            ],
        ))
        .await
        .unwrap();
    server
}

fn rdata(message: &Message) -> Vec<String> {
    message.answers.iter().map(|r| r.data.to_string()).collect()
}

fn soa_serial(message: &Message) -> u32 {
    let soa = message.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    });
    soa.unwrap_or_else(|| panic!("no SOA in the authority section: {message:?}"))
}

#[tokio::test]
async fn serves_every_record_type_over_udp_and_tcp() {
    let s = server_with_records().await;
    for transport in [Transport::Udp, Transport::Tcp] {
        let name = |n: &str| format!("{n}.{ZONE}.");
        let m = query(s.dns(), &name("abc.host"), RecordType::AAAA, transport).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative, "answers are authoritative");
        assert!(!m.metadata.recursion_available, "no recursion offered");
        assert_eq!(rdata(&m), vec!["fd00::1"]);
        assert_eq!(m.answers[0].ttl, 60);

        let m = query(s.dns(), &name("abc.host"), RecordType::A, transport).await;
        assert_eq!(rdata(&m), vec!["192.0.2.1"]);

        let m = query(s.dns(), &name("_nexus._tcp"), RecordType::SRV, transport).await;
        assert_eq!(rdata(&m), vec!["0 0 12221 abc.host.control-plane.internal."]);
        assert_eq!(m.additionals.len(), 2, "the SRV target's addresses come along");

        let m = query(s.dns(), &format!("{ZONE}."), RecordType::NS, transport).await;
        assert_eq!(rdata(&m), vec!["ns1.control-plane.internal."]);

        let m = query(s.dns(), &name("alias"), RecordType::AAAA, transport).await;
        assert_eq!(rdata(&m), vec!["abc.host.control-plane.internal.", "fd00::1"]);

        let m = query(s.dns(), &name("note"), RecordType::TXT, transport).await;
        assert_eq!(rdata(&m), vec!["hello world"]);

        // Names match case-insensitively.
        let m =
            query(s.dns(), "ABC.Host.Control-Plane.INTERNAL.", RecordType::AAAA, transport).await;
        assert_eq!(rdata(&m), vec!["fd00::1"]);

        // The apex SOA is synthesized with serial = generation.
        let m = query(s.dns(), &format!("{ZONE}."), RecordType::SOA, transport).await;
        let RData::SOA(soa) = &m.answers[0].data else { panic!("{m:?}") };
        assert_eq!(soa.serial, 7);
    }
}

#[tokio::test]
async fn negative_answers_carry_the_soa() {
    let s = server_with_records().await;
    for transport in [Transport::Udp, Transport::Tcp] {
        let m = query(s.dns(), &format!("missing.{ZONE}."), RecordType::A, transport).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.authoritative);
        assert!(m.answers.is_empty());
        assert_eq!(soa_serial(&m), 7);

        // NODATA: the name exists without records of that type.
        let m = query(s.dns(), &format!("note.{ZONE}."), RecordType::AAAA, transport).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(soa_serial(&m), 7);

        // An empty non-terminal exists too.
        let m = query(s.dns(), &format!("_tcp.{ZONE}."), RecordType::SRV, transport).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(soa_serial(&m), 7);

        // Outside our zones: refused, not answered.
        let m = query(s.dns(), "www.example.com.", RecordType::A, transport).await;
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.authoritative);
        let m = query(s.dns(), "internal.", RecordType::SOA, transport).await;
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);

        // Other classes: refused.
        let mut q = Question::new("abc.host.control-plane.internal.", RecordType::A);
        q.class = DNSClass::CH;
        assert_eq!(ask(s.dns(), &q, transport).await.metadata.response_code, ResponseCode::Refused);
    }
}

#[tokio::test]
async fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let s = server_with_records().await;
    let name = format!("many.{ZONE}.");
    // No EDNS: 512 bytes, far too small for 100 AAAA records.
    let m = query(s.dns(), &name, RecordType::AAAA, Transport::Udp).await;
    assert!(m.metadata.truncation, "TC must be set");
    assert!(m.answers.is_empty(), "whole RRsets or none: {} records", m.answers.len());
    // EDNS with a 4096-byte buffer: the server still sends at most 1232
    // bytes over UDP (DNS Flag Day 2020), so 100 AAAA records (about 2.8 kB)
    // are truncated there too.
    let mut q = Question::new(&name, RecordType::AAAA);
    q.edns = Some(4096);
    let reply = exchange_raw(s.dns(), &encode(&q, 7), Transport::Udp).await.unwrap();
    assert!(reply.len() <= 1232, "{} bytes over UDP", reply.len());
    let m = hickory_proto::op::Message::from_vec(&reply).unwrap();
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty(), "no partial RRset");
    assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232), "EDNS in, EDNS out");
    // TCP: always whole.
    let m = query(s.dns(), &name, RecordType::AAAA, Transport::Tcp).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
}

#[tokio::test]
async fn an_unconfigured_server_refuses_everything() {
    let s = TestServer::start().await;
    let m = query(s.dns(), &format!("abc.{ZONE}."), RecordType::A, Transport::Udp).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

/// How long to wait for a reply that should not come (loopback answers take
/// well under a millisecond).
const SILENCE: std::time::Duration = std::time::Duration::from_millis(300);

#[tokio::test]
async fn bad_packets_never_crash_hang_or_slow_the_server() {
    let s = server_with_records().await;
    let good = encode(&Question::new(&format!("abc.host.{ZONE}."), RecordType::AAAA), 77);

    let mut garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff],
        vec![0; 11],
        good[..good.len() - 3].to_vec(), // truncated question
        [&good[..], &[0xde, 0xad, 0xbe, 0xef][..]].concat(),
    ];
    // A header claiming 50 questions with none present.
    let mut lying = good.clone();
    lying[4..6].copy_from_slice(&50u16.to_be_bytes());
    garbage.push(lying);
    // A label pointer that loops onto itself.
    let mut looping = good[..12].to_vec();
    looping.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01]);
    garbage.push(looping);
    // Deterministic pseudo-random bytes.
    let mut x: u32 = 0x1234_5678;
    for len in [12usize, 40, 300, 1000] {
        garbage.push(
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect(),
        );
    }
    for packet in &garbage {
        if !packet.is_empty() {
            // UDP: any reply is fine, silence too; TCP must not hang the
            // server (the exchange itself may time out for junk framing).
            let _ = exchange_raw_within(s.dns(), packet, Transport::Udp, SILENCE).await;
        }
    }

    // Unknown opcode (STATUS = 2): NOTIMP.
    let mut status = good.clone();
    status[2] = (status[2] & 0b1000_0111) | (2 << 3);
    let reply =
        Message::from_vec(&exchange_raw(s.dns(), &status, Transport::Udp).await.unwrap()).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
    // A response sent to us is dropped, so that we cannot be used to
    // reflect traffic.
    let mut response = good.clone();
    response[2] |= 0x80;
    assert_eq!(exchange_raw_within(s.dns(), &response, Transport::Udp, SILENCE).await, None);

    // Garbage over TCP, then a connection that sends half a message and
    // stalls: neither blocks other clients.
    use tokio::io::AsyncWriteExt;
    let mut stalled = tokio::net::TcpStream::connect(s.dns()).await.unwrap();
    stalled.write_all(&[0x00, 0x40, 0x12]).await.unwrap();
    for packet in garbage.iter().filter(|p| !p.is_empty()) {
        let _ = exchange_raw_within(s.dns(), packet, Transport::Tcp, SILENCE).await;
    }

    // Still answering, over both transports (`query` fails after TIMEOUT).
    for transport in [Transport::Udp, Transport::Tcp] {
        let m = query(s.dns(), &format!("abc.host.{ZONE}."), RecordType::AAAA, transport).await;
        assert_eq!(rdata(&m), vec!["fd00::1"]);
    }
    drop(stalled);
}

/// Over UDP, additional records that do not fit are left out without TC
/// (they are optional); the answer itself stays whole.  Over TCP they come.
#[tokio::test]
async fn additionals_that_do_not_fit_are_dropped_not_truncated() {
    let s = TestServer::start().await;
    let mut names: Vec<(String, Vec<DnsRecord>)> = Vec::new();
    let mut targets = Vec::new();
    for t in 0..10 {
        let host = format!("t{t}.host");
        names.push((host.clone(), (0..20).map(|i| aaaa(&format!("fd00::{t:x}:{i:x}"))).collect()));
        targets.push(srv(80, &format!("{host}.{ZONE}")));
    }
    names.push(("_wide._tcp".into(), targets));
    let config = config(1, names.iter().map(|(n, r)| (n.as_str(), r.clone())).collect());
    s.put(&config).await.unwrap();
    let name = format!("_wide._tcp.{ZONE}.");
    let mut q = Question::new(&name, RecordType::SRV);
    q.edns = Some(1232);
    let m = ask(s.dns(), &q, Transport::Udp).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 10, "the whole SRV RRset");
    assert!(
        m.additionals.iter().all(|r| r.record_type() != RecordType::AAAA),
        "additionals left out"
    );
    let m = ask(s.dns(), &q, Transport::Tcp).await;
    assert_eq!(m.additionals.iter().filter(|r| r.record_type() == RecordType::AAAA).count(), 200);
}

/// The UDP loops keep encoded answers: a repeated query gets exactly the
/// same bytes, with its own ID, the message the full path gives over TCP,
/// and a new generation's answer as soon
/// as it is served; queries with EDNS options are answered each on their
/// own.
#[tokio::test]
async fn repeated_udp_queries_get_the_same_answer_with_their_own_id() {
    let s = server_with_records().await;
    let name = format!("_nexus._tcp.{ZONE}.");
    let question = Question { edns: Some(1232), ..Question::new(&name, RecordType::SRV) };
    let first = exchange_raw(s.dns(), &encode(&question, 1), Transport::Udp).await.unwrap();
    let second = exchange_raw(s.dns(), &encode(&question, 0xbeef), Transport::Udp).await.unwrap();
    assert_eq!(&second[..2], &[0xbe, 0xef]);
    assert_eq!(first[2..], second[2..], "the same answer but for the ID");
    // The message the full path gives (the UDP loops write plain answers
    // themselves, compressing names their own way).
    let over_tcp = exchange_raw(s.dns(), &encode(&question, 1), Transport::Tcp).await.unwrap();
    assert_eq!(Message::from_vec(&first).unwrap(), Message::from_vec(&over_tcp).unwrap());

    // A new generation: the next answer is from it.
    s.put(&config(8, vec![("_nexus._tcp", vec![srv(7777, &format!("abc.host.{ZONE}"))])]))
        .await
        .unwrap();
    let third = exchange_raw(s.dns(), &encode(&question, 2), Transport::Udp).await.unwrap();
    let message = Message::from_vec(&third).unwrap();
    assert!(rdata(&message).iter().any(|r| r.contains("7777")), "{:?}", rdata(&message));

    // NSID asked: answered with it every time.
    for id in [3, 4] {
        let mut query = Message::from_vec(&encode(&question, id)).unwrap();
        let mut edns = query.edns.clone().unwrap();
        edns.options_mut().insert(hickory_proto::rr::rdata::opt::EdnsOption::NSID(
            hickory_proto::rr::rdata::opt::NSIDPayload::new(Vec::<u8>::new()).unwrap(),
        ));
        query.set_edns(edns);
        let reply = exchange_raw(s.dns(), &query.to_vec().unwrap(), Transport::Udp).await.unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.id, id);
        let options = reply.edns.unwrap();
        assert!(options.options().get(hickory_proto::rr::rdata::opt::EdnsCode::NSID).is_some());
    }
}

/// A burst of queries sent without waiting (the loops read and answer
/// them in batches): every one is answered once, with its own ID and the
/// answer to its own question, plain or not; the malformed ones in the
/// burst get FORMERR and take nothing else down.
#[tokio::test]
async fn a_burst_of_queries_is_answered_one_by_one() {
    let s = server_with_records().await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(s.dns()).await.unwrap();
    let names = ["abc.host", "_nexus._tcp", "note", "missing", "alias"];
    let types = [RecordType::AAAA, RecordType::SRV, RecordType::TXT, RecordType::A, RecordType::A];
    // Bursts of 100: more would overflow the client's own receive buffer
    // before it reads (the kernel's default limit).
    for burst in 0..6u16 {
        let mut expected = std::collections::HashMap::new();
        for id in burst * 100..(burst + 1) * 100 {
            let i = usize::from(id) % names.len();
            let name = format!("{}.{ZONE}.", names[i]);
            let question = Question { edns: Some(1232), ..Question::new(&name, types[i]) };
            let mut bytes = encode(&question, id);
            let malformed = id % 37 == 0;
            if malformed {
                // A question cut in the middle of its name.
                bytes.truncate(20);
            }
            socket.send(&bytes).await.unwrap();
            expected.insert(id, (name, types[i], malformed));
        }
        let mut buffer = vec![0u8; 65_535];
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !expected.is_empty() {
            let len = tokio::time::timeout_at(deadline, socket.recv(&mut buffer))
                .await
                .unwrap_or_else(|_| panic!("{} queries unanswered", expected.len()))
                .unwrap();
            let reply = Message::from_vec(&buffer[..len]).unwrap();
            let (name, rtype, malformed) =
                expected.remove(&reply.metadata.id).expect("one answer per query, with its ID");
            if malformed {
                assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
                continue;
            }
            assert_eq!(reply.queries[0].name().to_string(), name);
            assert_eq!(reply.queries[0].query_type(), rtype);
            let want = if name.starts_with("missing") {
                ResponseCode::NXDomain
            } else {
                ResponseCode::NoError
            };
            assert_eq!(reply.metadata.response_code, want, "{name}");
            if want == ResponseCode::NoError {
                assert!(!reply.answers.is_empty(), "{name} {rtype}");
            }
        }
    }
}

/// A message that is itself a response is never answered, over UDP or
/// TCP, decodable or not: answering answers lets two servers bounce
/// packets at each other (Knot and NSD drop them too).  The server still
/// answers the next query.
#[tokio::test]
async fn responses_are_never_answered() {
    let s = server_with_records().await;
    let short = std::time::Duration::from_millis(300);
    // QR set, one question announced, none present: does not decode.
    let undecodable = [0x12, 0x34, 0x80, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let mut decodable = encode(&Question::new(&format!("abc.host.{ZONE}."), RecordType::A), 0x4242);
    decodable[2] |= 0x80;
    for transport in [Transport::Udp, Transport::Tcp] {
        for bytes in [&undecodable[..], &decodable] {
            let reply = exchange_raw_within(s.dns(), bytes, transport, short).await;
            assert_eq!(reply, None, "a response over {transport:?} was answered: {bytes:02x?}");
        }
        let m = query(s.dns(), &format!("abc.host.{ZONE}."), RecordType::AAAA, transport).await;
        assert_eq!(m.answers.len(), 1, "the next query is answered over {transport:?}");
    }
}

/// Over one TCP connection, queries sent without waiting (plain ones,
/// answered straight from the zone, and ones the full path answers: with
/// an EDNS option, malformed) are each answered once, in order, with their
/// own ID; a client that stops in the middle of a message is let go after
/// the idle limit (10 s), and one that never reads does not hold up others.
#[tokio::test]
async fn tcp_connections_answer_pipelined_queries_and_let_go_of_stalled_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server_with_records().await;
    let mut stream = tokio::net::TcpStream::connect(s.dns()).await.unwrap();
    let names = ["abc.host", "_nexus._tcp", "missing", "alias", "note"];
    let mut sent = Vec::new();
    let mut expected = Vec::new();
    for id in 0..200u16 {
        let i = usize::from(id) % names.len();
        let name = format!("{}.{ZONE}.", names[i]);
        let mut bytes = encode(&Question::new(&name, RecordType::ANY), id);
        let kind = match id % 10 {
            // A question cut in the middle of its name: FORMERR.
            3 => {
                bytes.truncate(20);
                "malformed"
            }
            // ANY: the full path.
            7 => "full",
            _ => {
                bytes = encode(
                    &Question { edns: Some(1232), ..Question::new(&name, RecordType::A) },
                    id,
                );
                "plain"
            }
        };
        sent.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        sent.extend_from_slice(&bytes);
        expected.push((id, name, kind));
    }
    stream.write_all(&sent).await.unwrap();
    for (id, name, kind) in expected {
        let read = async {
            let length = stream.read_u16().await?;
            let mut reply = vec![0; usize::from(length)];
            stream.read_exact(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        let reply = tokio::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .unwrap_or_else(|_| panic!("no answer to query {id}"))
            .unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.id, id, "answers in the order asked");
        if kind == "malformed" {
            assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
            continue;
        }
        assert_eq!(reply.queries[0].name().to_string(), name, "{kind}");
        let want = if name.starts_with("missing") {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        };
        assert_eq!(reply.metadata.response_code, want, "{name} {kind}");
    }

    // A client that never reads, its answers piling up, and one that stops
    // half-way through a message: others are answered meanwhile.
    let mut hoarder = tokio::net::TcpStream::connect(s.dns()).await.unwrap();
    let one = encode(&Question::new(&format!("many.{ZONE}."), RecordType::AAAA), 1);
    let mut many = Vec::new();
    for _ in 0..2000 {
        many.extend_from_slice(&(one.len() as u16).to_be_bytes());
        many.extend_from_slice(&one);
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), hoarder.write_all(&many)).await;
    let mut stalled = tokio::net::TcpStream::connect(s.dns()).await.unwrap();
    stalled.write_all(&[0, 40, 0x12]).await.unwrap();
    let started = std::time::Instant::now();
    let m = query(s.dns(), &format!("abc.host.{ZONE}."), RecordType::AAAA, Transport::Tcp).await;
    assert_eq!(m.answers.len(), 1, "answered beside the stalled clients");
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(std::time::Duration::from_secs(20), stalled.read_to_end(&mut rest))
            .await
            .expect("the stalled client was not let go");
    assert!(closed.is_ok() && rest.is_empty(), "{closed:?} {rest:?}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(9),
        "let go only after the idle limit"
    );
    drop(hoarder);
}

/// At most `MAX_CONNECTIONS` TCP connections are served at once: one more
/// is closed at once (the client reads the end of the stream), the ones
/// held are still answered, and once one of them ends a new one is served.
#[tokio::test]
async fn tcp_connections_beyond_the_limit_are_closed_at_once_and_the_others_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server_with_records().await;
    let question = encode(&Question::new(&format!("abc.host.{ZONE}."), RecordType::AAAA), 7);
    let mut framed = (question.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&question);
    // Asks on `stream` and reads the answer (none: the stream ended).
    let ask = |mut stream: tokio::net::TcpStream| {
        let framed = framed.clone();
        async move {
            let answered = async {
                stream.write_all(&framed).await?;
                let length = stream.read_u16().await?;
                let mut reply = vec![0; usize::from(length)];
                stream.read_exact(&mut reply).await?;
                Ok::<_, std::io::Error>(reply)
            };
            let reply = tokio::time::timeout(std::time::Duration::from_secs(5), answered)
                .await
                .expect("neither an answer nor the end of the stream within 5 s");
            (stream, reply.ok())
        }
    };
    // Every connection held open, each answered once (so each is being
    // served, not just accepted by the kernel).
    let mut held = Vec::new();
    for _ in 0..dns_server::tcp::MAX_CONNECTIONS {
        let stream = tokio::net::TcpStream::connect(s.dns()).await.unwrap();
        let (stream, reply) = ask(stream).await;
        assert!(reply.is_some(), "connection {} not served", held.len() + 1);
        held.push(stream);
    }
    let one_more = tokio::net::TcpStream::connect(s.dns()).await.unwrap();
    let (_, reply) = ask(one_more).await;
    assert_eq!(reply, None, "a connection beyond the limit is closed, not served");
    // The held ones are still served.
    let (stream, reply) = ask(held.pop().unwrap()).await;
    assert!(reply.is_some());
    // One ends: a new one is served in its place.
    drop(stream);
    let mut served = false;
    for _ in 0..50 {
        let stream = tokio::net::TcpStream::connect(s.dns()).await.unwrap();
        if ask(stream).await.1.is_some() {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served, "no connection served after one of the held ones ended");
}

/// The UDP loops are threads blocked in the kernel: stopping the server
/// must wake them and close their socket, or a restart on the same port
/// would fail until they noticed.
#[tokio::test]
async fn a_stopped_server_frees_its_udp_port_at_once() {
    let s = server_with_records().await;
    let address = s.dns();
    let TestServer { server, dir, .. } = s;
    server.shutdown().await.unwrap();
    // Bound again at once, with no retry: the port is free.
    std::net::UdpSocket::bind(address)
        .unwrap_or_else(|e| panic!("binding {address} right after the server stopped: {e}"));
    drop(dir);
}

/// Many queries in flight at once, well beyond one batch (and beyond what
/// one loop takes before more arrive), from several sockets: every query is
/// answered, each with its own ID and question.  Each socket keeps at most
/// `WINDOW` queries unanswered, so that the burst fits the kernel's default
/// socket buffers (a drop there would be the kernel's, not the server's).
#[tokio::test]
async fn many_udp_queries_in_flight_are_all_answered() {
    const SOCKETS: usize = 4;
    const PER_SOCKET: u16 = 250;
    const WINDOW: u16 = 50;
    let s = server_with_records().await;
    let server = s.dns();
    let names = ["abc.host", "alias", "note", "missing"];
    let question = move |id: u16| format!("{}.{ZONE}.", names[usize::from(id) % names.len()]);
    let mut clients = Vec::new();
    for _ in 0..SOCKETS {
        clients.push(tokio::spawn(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let send = |id: u16| {
                let bytes = encode(&Question::new(&question(id), RecordType::AAAA), id);
                let socket = &socket;
                async move { socket.send_to(&bytes, server).await.unwrap() }
            };
            let mut sent = 0;
            while sent < WINDOW {
                send(sent).await;
                sent += 1;
            }
            let mut answered = std::collections::BTreeSet::new();
            let mut buf = vec![0u8; 65_535];
            while answered.len() < usize::from(PER_SOCKET) {
                let Ok(Ok(len)) = tokio::time::timeout(TIMEOUT, socket.recv(&mut buf)).await else {
                    break;
                };
                let m = Message::from_vec(&buf[..len]).unwrap();
                let id = m.metadata.id;
                assert_eq!(m.queries[0].name().to_string(), question(id));
                let rcode = if question(id).starts_with("missing") {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                };
                assert_eq!(m.metadata.response_code, rcode, "{m:?}");
                assert!(answered.insert(id), "answered twice: {id}");
                if sent < PER_SOCKET {
                    send(sent).await;
                    sent += 1;
                }
            }
            answered.len()
        }));
    }
    for client in clients {
        let answered = client.await.unwrap();
        assert_eq!(answered, usize::from(PER_SOCKET), "answers to one socket's queries");
    }
}

/// A backlog over UDP is taken in full batches, wakes the helper loop, and
/// shows in the metrics: with the server frozen (SIGSTOP), 200 queries wait
/// in its socket; thawed, the receiving loop takes 32 at a time, so at
/// least four full batches in a row, which wakes the next loop (on a
/// machine with more than one core).  Every query is answered once, and
/// the datagrams counted by loop add up to the queries sent.
#[tokio::test]
async fn a_udp_backlog_wakes_the_helper_and_is_counted() {
    const SOCKETS: usize = 4;
    const PER_SOCKET: u16 = 50;
    let dir = test_support::TokenDir::new();
    let dns_server = test_support::process::binary("dns-server").unwrap();
    let server =
        test_support::process::DnsServerProcess::start_in(&dns_server, &dir, &[]).await.unwrap();
    put(&client(&dir, server.http_address), &config(1, vec![("www", vec![aaaa("fd00::1")])]))
        .await
        .unwrap();
    let sockets: Vec<std::net::UdpSocket> = (0..SOCKETS)
        .map(|_| {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_read_timeout(Some(TIMEOUT)).unwrap();
            socket
        })
        .collect();
    let query = |id: u16| encode(&Question::new(&format!("www.{ZONE}."), RecordType::AAAA), id);
    server.process.freeze().unwrap();
    for socket in &sockets {
        for id in 0..PER_SOCKET {
            socket.send_to(&query(id), server.dns_address).unwrap();
        }
    }
    server.process.thaw().unwrap();
    let answered = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 65_535];
        sockets
            .iter()
            .map(|socket| {
                let mut ids = std::collections::BTreeSet::new();
                while ids.len() < usize::from(PER_SOCKET) {
                    let Ok(len) = socket.recv(&mut buf) else { break };
                    let m = Message::from_vec(&buf[..len]).unwrap();
                    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
                    assert!(ids.insert(m.metadata.id), "answered twice: {}", m.metadata.id);
                }
                ids.len()
            })
            .sum::<usize>()
    })
    .await
    .unwrap();
    let sent = SOCKETS * usize::from(PER_SOCKET);
    assert_eq!(answered, sent, "answers to the queries that waited");
    let metrics = scrape(server.http_address).await;
    let value = |series: &str| {
        sample(&metrics, series).unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
    };
    // A helper loop, and its series, exist only with more than one core.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let receiver =
        |metric: &str| value(&format!("dns_server_udp_{metric}_total{{role=\"receiver\"}}"));
    let helper = |metric: &str| {
        let series = format!("dns_server_udp_{metric}_total{{role=\"helper\"}}");
        if cores > 1 { value(&series) } else { 0 }
    };
    assert_eq!(
        receiver("datagrams") + helper("datagrams"),
        sent as u64,
        "every datagram counted once, by the loop that took it:\n{metrics}"
    );
    assert!(receiver("batches") >= 4, "the backlog came in full batches:\n{metrics}");
    assert!(
        receiver("batches") + helper("batches") <= sent as u64 / 4,
        "batches, not one call per query:\n{metrics}"
    );
    let backlogs = receiver("backlogs");
    if cores > 1 {
        assert!(backlogs >= 1, "the receiver woke its helper:\n{metrics}");
    } else {
        assert_eq!(backlogs, 0, "one loop has no helper to wake:\n{metrics}");
    }
    assert_eq!(value("dns_server_udp_answers_dropped_total"), 0, "{metrics}");
}
