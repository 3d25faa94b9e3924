//! Helpers for the DNS server's integration tests: a real server on real
//! sockets, a generated HTTP client, and DNS queries over UDP and TCP built
//! with hickory-proto.

#![allow(dead_code)]

use chrono::Utc;
use dns_server::{Config, RunningServer};
use dns_types::{DnsConfig, DnsConfigZone, DnsRecord};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;
use test_support::TokenDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ZONE: &str = "control-plane.internal";
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub server: RunningServer,
    /// Holds the storage directory and the API token file.
    pub dir: TokenDir,
    /// Sends the token.
    pub client: dns_server_client::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = TokenDir::new();
        let config = Config::loopback(dir.path().join("storage"), dir.token_file());
        let server = RunningServer::start(&config).await.unwrap();
        let client = client(&dir, server.http_address());
        TestServer { server, dir, client }
    }

    pub fn storage_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("storage")
    }

    pub fn dns(&self) -> SocketAddr {
        self.server.dns_address()
    }

    pub async fn put(&self, config: &DnsConfig) -> Result<(), (u16, String, String)> {
        put(&self.client, config).await
    }
}

/// The text of the server's `GET /metrics` at `http`.
pub async fn scrape(http: SocketAddr) -> String {
    let client = reqwest::Client::builder().timeout(TIMEOUT).build().unwrap();
    let response = client.get(format!("http://{http}/metrics")).send().await.unwrap();
    response.text().await.unwrap()
}

/// The value of one series (its name and labels as the text shows them,
/// e.g. `dns_server_udp_datagrams_total{role="receiver"}`) in a scrape,
/// if the scrape has it.
pub fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A client of the server at `http` that sends the token in `dir`.
pub fn client(dir: &TokenDir, http: SocketAddr) -> dns_server_client::Client {
    let http_client = dir.http_client(TIMEOUT * 6);
    dns_server_client::Client::new_with_client(&format!("http://{http}"), http_client)
}

/// PUTs a config; on error returns (status, error code, message).
pub async fn put(
    client: &dns_server_client::Client,
    config: &DnsConfig,
) -> Result<(), (u16, String, String)> {
    match client.config_put().body(config.clone()).send().await {
        Ok(_) => Ok(()),
        Err(dns_server_client::Error::ErrorResponse(response)) => Err((
            response.status().as_u16(),
            response.error_code.clone().unwrap_or_default(),
            response.message.clone(),
        )),
        Err(other) => panic!("PUT /config failed unexpectedly: {other}"),
    }
}

/// A config of one zone with the given names.
pub fn config(generation: u64, names: Vec<(&str, Vec<DnsRecord>)>) -> DnsConfig {
    let names: BTreeMap<String, Vec<DnsRecord>> =
        names.into_iter().map(|(n, r)| (n.to_string(), r)).collect();
    DnsConfig {
        generation,
        time_created: Utc::now(),
        creator: "test".into(),
        comment: format!("generation {generation}"),
        zones: vec![DnsConfigZone { zone_name: ZONE.into(), ttl_seconds: 60, names }],
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transport {
    Udp,
    Tcp,
}

pub struct Question<'a> {
    pub name: &'a str,
    pub rtype: RecordType,
    pub class: DNSClass,
    /// EDNS UDP payload size to advertise, if any.
    pub edns: Option<u16>,
}

impl<'a> Question<'a> {
    pub fn new(name: &'a str, rtype: RecordType) -> Question<'a> {
        Question { name, rtype, class: DNSClass::IN, edns: None }
    }
}

pub fn encode(question: &Question<'_>, id: u16) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    let mut query = Query::query(Name::from_str(question.name).unwrap(), question.rtype);
    query.set_query_class(question.class);
    message.add_query(query);
    if let Some(size) = question.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(size);
        message.set_edns(edns);
    }
    message.to_vec().unwrap()
}

/// Sends raw bytes and returns the raw reply (`None` on timeout or when
/// the server closes the connection or sends nothing).  Raw on purpose:
/// these tests hand the server malformed and hand-made messages that no
/// client library would send; everything else asks through hickory
/// (`internal_dns`).
pub async fn exchange_raw(
    server: SocketAddr,
    bytes: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    exchange_raw_within(server, bytes, transport, TIMEOUT).await
}

pub async fn exchange_raw_within(
    server: SocketAddr,
    bytes: &[u8],
    transport: Transport,
    timeout: Duration,
) -> Option<Vec<u8>> {
    let work = async {
        match transport {
            Transport::Udp => {
                let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
                socket.send_to(bytes, server).await.ok()?;
                let mut buf = vec![0u8; 65535];
                let (len, _) = socket.recv_from(&mut buf).await.ok()?;
                buf.truncate(len);
                Some(buf)
            }
            Transport::Tcp => {
                let mut stream = tokio::net::TcpStream::connect(server).await.ok()?;
                stream.write_all(&(bytes.len() as u16).to_be_bytes()).await.ok()?;
                stream.write_all(bytes).await.ok()?;
                let len = stream.read_u16().await.ok()?;
                let mut buf = vec![0u8; len as usize];
                stream.read_exact(&mut buf).await.ok()?;
                Some(buf)
            }
        }
    };
    tokio::time::timeout(timeout, work).await.ok().flatten()
}

/// Asks one question and decodes the answer.
pub async fn ask(server: SocketAddr, question: &Question<'_>, transport: Transport) -> Message {
    // A random id (hickory's), checked below.
    let id = Message::query().metadata.id;
    let reply = exchange_raw(server, &encode(question, id), transport)
        .await
        .unwrap_or_else(|| panic!("no answer from {server} over {transport:?} within {TIMEOUT:?}"));
    let message = Message::from_vec(&reply).unwrap();
    assert_eq!(message.metadata.id, id);
    message
}

pub async fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    transport: Transport,
) -> Message {
    ask(server, &Question::new(name, rtype), transport).await
}

/// The difference that leads from `from` to `to`.
pub fn diff(from: &DnsConfig, to: &DnsConfig) -> dns_types::ConfigDiff {
    dns_types::ConfigDiff::between(from, to)
}

/// PUTs a difference; on error returns (status, error code, message).
pub async fn put_diff(
    client: &dns_server_client::Client,
    diff: &dns_types::ConfigDiff,
) -> Result<(), (u16, String, String)> {
    match client.config_diff_put().body(diff.clone()).send().await {
        Ok(_) => Ok(()),
        Err(dns_server_client::Error::ErrorResponse(response)) => Err((
            response.status().as_u16(),
            response.error_code.clone().unwrap_or_default(),
            response.message.clone(),
        )),
        Err(other) => Err((0, String::new(), other.to_string())),
    }
}

/// The generation an answer for the tests' `alias` name comes from, where
/// each generation G marks its answer twice: a CNAME to `genG.<zone>` and
/// that name's address `192.0.2.(G % 250)`.  Panics if the two marks
/// disagree: the answer would mix two generations.
pub fn answer_generation(message: &Message) -> u64 {
    use hickory_proto::rr::RData;
    let target = message.answers.iter().find_map(|r| match &r.data {
        RData::CNAME(c) => Some(c.0.to_string()),
        _ => None,
    });
    let mark = message.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(u64::from(a.0.octets()[3])),
        _ => None,
    });
    let (Some(target), Some(mark)) = (target, mark) else {
        panic!("no CNAME and address in {message:?}")
    };
    let generation: u64 = target
        .strip_prefix("gen")
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected CNAME target {target}"));
    assert_eq!(
        generation % 250,
        mark,
        "answer mixes generations: {target} with address mark {mark}"
    );
    generation
}
