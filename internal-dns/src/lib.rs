//! Service discovery through internal DNS.
//!
//! Every component of the control plane is found through SRV records in the
//! internal zone ([`ServiceName`] has the names), whose targets are host names
//! `<uuid>.host.<zone>` carrying AAAA/A records.  [`Resolver`] asks a fixed
//! list of DNS servers (the bootstrap servers) directly, one after another,
//! through `hickory-resolver` configured with that one server each time: no
//! system configuration, no search domains, no hosts file, no cache, so
//! that what it reports is what that server serves right now, and which
//! server said it.  The exchange itself (random ids, replies matched to
//! their query and from the server asked, late or foreign replies ignored,
//! TCP when an answer is truncated) is hickory's.
//!
//! The DNS library is an implementation detail: nothing of it appears in
//! this crate's interface.

pub mod wire;

use dns_types::{DnsGroup, DnsRecord, NameRecords, SrvRecord};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

pub use dns_types::DEFAULT_INTERNAL_ZONE;

/// The services registered in internal DNS, each under its SRV name
/// (relative to the internal zone).  Every component that registers or
/// looks up a service names it with this type, so the SRV names are spelled
/// here and nowhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    /// Each internal DNS server's config HTTP API.
    InternalDns,
    /// Each external DNS server's config HTTP API.
    ExternalDns,
    /// Each Nexus's internal HTTP API.
    Nexus,
    /// The database (PostgreSQL wire protocol).
    Postgresql,
    /// Each internal DNS server's DNS address (where it answers queries),
    /// under the same host as its config API: a server that cannot say
    /// where it answers (hung, down) is still known by its DNS address.
    InternalDnsQueries,
    /// Each external DNS server's DNS address.
    ExternalDnsQueries,
}

impl ServiceName {
    pub const ALL: [ServiceName; 6] = [
        ServiceName::InternalDns,
        ServiceName::ExternalDns,
        ServiceName::Nexus,
        ServiceName::Postgresql,
        ServiceName::InternalDnsQueries,
        ServiceName::ExternalDnsQueries,
    ];

    /// The SRV name relative to the internal zone, e.g. `_nexus._tcp`.
    pub fn label(self) -> &'static str {
        match self {
            ServiceName::InternalDns => "_nameservice._tcp",
            ServiceName::ExternalDns => "_external-dns._tcp",
            ServiceName::Nexus => "_nexus._tcp",
            ServiceName::Postgresql => "_postgresql._tcp",
            ServiceName::InternalDnsQueries => "_dns-internal._udp",
            ServiceName::ExternalDnsQueries => "_dns-external._udp",
        }
    }

    /// The absolute SRV name in `zone`.
    pub fn srv_name(self, zone: &str) -> String {
        format!("{}.{zone}", self.label())
    }

    /// The service under which `group`'s DNS servers register their config
    /// APIs.
    pub fn dns_servers_of(group: DnsGroup) -> ServiceName {
        match group {
            DnsGroup::Internal => ServiceName::InternalDns,
            DnsGroup::External => ServiceName::ExternalDns,
        }
    }

    /// The service under which `group`'s DNS servers register their DNS
    /// addresses.
    pub fn dns_queries_of(group: DnsGroup) -> ServiceName {
        match group {
            DnsGroup::Internal => ServiceName::InternalDnsQueries,
            DnsGroup::External => ServiceName::ExternalDnsQueries,
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The host name (relative to the internal zone) that carries the addresses
/// of the component with this id.
pub fn host_name(id: uuid::Uuid) -> String {
    format!("{id}.host")
}

/// The records that register one component: its host name with its address,
/// and an SRV record under its service pointing at that host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub host: NameRecords,
    pub srv: NameRecords,
}

impl Registration {
    /// `<id>.host` → `address.ip()`, and `<service>` → SRV `address.port()`
    /// `<id>.host.<zone>`.
    pub fn new(service: ServiceName, id: uuid::Uuid, address: SocketAddr, zone: &str) -> Self {
        let host = host_name(id);
        let address_record = match address.ip() {
            IpAddr::V4(ip) => DnsRecord::A(ip),
            IpAddr::V6(ip) => DnsRecord::Aaaa(ip),
        };
        let srv_record = DnsRecord::Srv(SrvRecord {
            prio: 0,
            weight: 0,
            port: address.port(),
            target: format!("{host}.{zone}"),
        });
        Registration {
            host: NameRecords { name: host, records: vec![address_record] },
            srv: NameRecords { name: service.label().to_string(), records: vec![srv_record] },
        }
    }

    /// Both names, for a [`dns_types::DnsChange`]'s `add`.
    pub fn into_records(self) -> [NameRecords; 2] {
        [self.host, self.srv]
    }

    /// Everything that registers one DNS server of `group`, the one place
    /// that builds it: its host name with the address(es) of its config API
    /// and DNS address, an SRV record for the config API
    /// ([`ServiceName::dns_servers_of`]) and one for the DNS address
    /// ([`ServiceName::dns_queries_of`]), both pointing at that host.
    pub fn dns_server(
        group: DnsGroup,
        id: uuid::Uuid,
        config_api: SocketAddr,
        dns: SocketAddr,
        zone: &str,
    ) -> Vec<NameRecords> {
        let api = Registration::new(ServiceName::dns_servers_of(group), id, config_api, zone);
        let queries = Registration::new(ServiceName::dns_queries_of(group), id, dns, zone);
        let mut host = api.host;
        for record in queries.host.records {
            if !host.records.contains(&record) {
                host.records.push(record);
            }
        }
        vec![host, api.srv, queries.srv]
    }
}

/// The DNS addresses `group`'s servers registered, by the config API
/// address registered under the same host (read from an internal config,
/// as [`registered_instances`]): every address of the host with the port
/// of its DNS SRV record.
pub fn registered_dns_addresses(
    config: &dns_types::DnsConfig,
    zone: &str,
    group: DnsGroup,
) -> BTreeMap<SocketAddr, Vec<SocketAddr>> {
    let queries = registered_instances(config, zone, ServiceName::dns_queries_of(group));
    let mut found = BTreeMap::new();
    for api in registered_instances(config, zone, ServiceName::dns_servers_of(group)) {
        let Some(api_address) = api.socket_addr() else { continue };
        let dns: Vec<SocketAddr> = queries
            .iter()
            .filter(|q| q.target == api.target)
            .flat_map(|q| q.addresses.iter().map(|ip| SocketAddr::new(*ip, q.port)))
            .collect();
        if !dns.is_empty() {
            found.insert(api_address, dns);
        }
    }
    found
}

/// The instances of `service` that a config of the internal group
/// registers, read from the config itself (no DNS query): SRV targets in
/// `zone` resolved through the same config's A/AAAA records.  What the
/// database says should be there, to compare with what DNS answers and what
/// Nexus found.
pub fn registered_instances(
    config: &dns_types::DnsConfig,
    zone: &str,
    service: ServiceName,
) -> Vec<ServiceInstance> {
    let Some(names) = config.zones.iter().find(|z| z.zone_name == zone).map(|z| &z.names) else {
        return Vec::new();
    };
    let mut instances: Vec<ServiceInstance> = names
        .get(service.label())
        .into_iter()
        .flatten()
        .filter_map(|record| match record {
            DnsRecord::Srv(srv) => Some(srv),
            _ => None,
        })
        .map(|srv| {
            let relative = srv.target.strip_suffix(&format!(".{zone}"));
            let mut addresses: Vec<IpAddr> = relative
                .and_then(|host| names.get(host))
                .into_iter()
                .flatten()
                .filter_map(|r| match r {
                    DnsRecord::Aaaa(ip) => Some(IpAddr::V6(*ip)),
                    DnsRecord::A(ip) => Some(IpAddr::V4(*ip)),
                    _ => None,
                })
                .collect();
            addresses.sort_by_key(|ip| ip.is_ipv4());
            ServiceInstance { target: srv.target.clone(), port: srv.port, addresses }
        })
        .collect();
    instances.sort();
    instances
}

/// One instance of a service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceInstance {
    /// The SRV target (absolute, lower case, no trailing dot).
    pub target: String,
    pub port: u16,
    /// The target's addresses (AAAA first, then A).
    pub addresses: Vec<IpAddr>,
}

impl ServiceInstance {
    /// The first address with the port, if the target has any address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.addresses.first().map(|ip| SocketAddr::new(*ip, self.port))
    }
}

/// The answer to a service lookup, with the server that gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAnswer {
    pub server: SocketAddr,
    /// Servers asked before it that gave no answer, with why (a server
    /// down or hung costs one timeout, and is named).
    pub unanswered: Vec<(SocketAddr, String)>,
    /// Sorted; empty if the name does not exist or has no SRV records.
    pub instances: Vec<ServiceInstance>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no DNS servers to ask")]
    NoServers,
    #[error("invalid DNS name {0:?}")]
    InvalidName(String),
    #[error("no DNS server answered for {name} (tried: {})", describe(.attempts))]
    AllFailed { name: String, attempts: Vec<(SocketAddr, String)> },
}

fn describe(attempts: &[(SocketAddr, String)]) -> String {
    attempts
        .iter()
        .map(|(server, error)| format!("{server}: {error}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Asks a fixed list of DNS servers, in order, until one answers.
#[derive(Clone)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    /// One hickory resolver per server, made on first use and kept (it
    /// caches no answer: `cache_size` 0), so that a long-lived resolver
    /// does not set one up for every question.
    hickory: std::sync::Arc<std::sync::Mutex<BTreeMap<SocketAddr, HickoryResolver>>>,
}

type HickoryResolver = hickory_resolver::Resolver<TokioRuntimeProvider>;

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("servers", &self.servers)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Resolver {
    /// `timeout` bounds each query to each server.
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Resolver {
        Resolver { servers, timeout, hickory: Default::default() }
    }

    /// The hickory resolver that asks `server` alone.
    fn for_server(&self, server: SocketAddr) -> Result<HickoryResolver, QueryError> {
        let mut resolvers = self.hickory.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(resolver) = resolvers.get(&server) {
            return Ok(resolver.clone());
        }
        let resolver = one_server(server, self.timeout)?;
        resolvers.insert(server, resolver.clone());
        Ok(resolver)
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Looks up `service` in `zone`.
    pub async fn lookup_service(
        &self,
        service: ServiceName,
        zone: &str,
    ) -> Result<ServiceAnswer, ResolveError> {
        self.lookup_srv(&service.srv_name(zone)).await
    }

    /// Looks up the SRV records of `name` and the addresses of their targets.
    pub async fn lookup_srv(&self, name: &str) -> Result<ServiceAnswer, ResolveError> {
        if self.servers.is_empty() {
            return Err(ResolveError::NoServers);
        }
        let mut attempts = Vec::new();
        for server in &self.servers {
            match self.lookup_srv_at(*server, name).await {
                Ok(instances) => {
                    return Ok(ServiceAnswer { server: *server, unanswered: attempts, instances });
                }
                Err(QueryError::InvalidName) => return Err(ResolveError::InvalidName(name.into())),
                Err(e) => attempts.push((*server, e.to_string())),
            }
        }
        Err(ResolveError::AllFailed { name: name.into(), attempts })
    }

    /// Looks up the AAAA and A records of `name` (absolute); an empty list
    /// when the name does not exist or has no addresses.
    pub async fn lookup_addresses(
        &self,
        name: &str,
    ) -> Result<(SocketAddr, Vec<IpAddr>), ResolveError> {
        if self.servers.is_empty() {
            return Err(ResolveError::NoServers);
        }
        let target = name.trim_end_matches('.').to_ascii_lowercase();
        let mut attempts = Vec::new();
        'servers: for server in &self.servers {
            let mut found = Vec::new();
            for rtype in [RecordType::AAAA, RecordType::A] {
                match self.query(*server, name, rtype).await {
                    Ok(reply) => {
                        found.extend(addresses_in(&reply).remove(&target).unwrap_or_default())
                    }
                    Err(QueryError::InvalidName) => {
                        return Err(ResolveError::InvalidName(name.into()));
                    }
                    Err(e) => {
                        attempts.push((*server, e.to_string()));
                        continue 'servers;
                    }
                }
            }
            return Ok((*server, found));
        }
        Err(ResolveError::AllFailed { name: name.into(), attempts })
    }

    async fn lookup_srv_at(
        &self,
        server: SocketAddr,
        name: &str,
    ) -> Result<Vec<ServiceInstance>, QueryError> {
        let reply = self.query(server, name, RecordType::SRV).await?;
        let mut addresses = addresses_in(&reply);
        let mut instances = Vec::new();
        for record in &reply {
            let RData::SRV(srv) = &record.data else { continue };
            let target = canonical(&srv.target);
            if !addresses.contains_key(&target) {
                // Not in the additional section: ask for it.
                let mut found = Vec::new();
                for rtype in [RecordType::AAAA, RecordType::A] {
                    let reply = self.query(server, &target, rtype).await?;
                    found.extend(addresses_in(&reply).remove(&target).unwrap_or_default());
                }
                addresses.insert(target.clone(), found);
            }
            instances.push(ServiceInstance {
                addresses: addresses[&target].clone(),
                target,
                port: srv.port,
            });
        }
        instances.sort();
        Ok(instances)
    }

    /// One question to one server, through hickory-resolver set up for
    /// that server alone: UDP first, TCP when the answer is truncated.
    /// NXDOMAIN and NODATA are answers (no records); anything else that is
    /// not NOERROR is an error.  The records of the answer and additional
    /// sections.
    async fn query(
        &self,
        server: SocketAddr,
        name: &str,
        rtype: RecordType,
    ) -> Result<Vec<Record>, QueryError> {
        let absolute = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
        let qname = Name::from_str(&absolute).map_err(|_| QueryError::InvalidName)?;
        let resolver = self.for_server(server)?;
        match resolver.lookup(qname, rtype).await {
            Ok(lookup) => {
                Ok(lookup.answers().iter().chain(lookup.additionals()).cloned().collect())
            }
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(QueryError::Failed(e.to_string())),
        }
    }
}

/// hickory-resolver asking `server` only: one attempt bounded by
/// `timeout`, over UDP and then TCP when truncated; nothing from the
/// system's configuration, no search domains, no hosts file, no cache (a
/// lookup must see what the server serves now).
fn one_server(server: SocketAddr, timeout: Duration) -> Result<HickoryResolver, QueryError> {
    let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
    for connection in &mut name_server.connections {
        connection.port = server.port();
    }
    let config = ResolverConfig::from_parts(None, Vec::new(), vec![name_server]);
    let mut options = ResolverOpts::default();
    options.timeout = timeout;
    options.attempts = 1;
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    options.ndots = 0;
    options.recursion_desired = false;
    options.edns0 = true;
    options.edns_payload_len = 1232;
    options.try_tcp_on_error = false;
    hickory_resolver::Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options)
        .build()
        .map_err(|e| QueryError::Failed(format!("setting up the resolver: {e}")))
}

#[derive(Debug, thiserror::Error)]
enum QueryError {
    #[error("invalid name")]
    InvalidName,
    #[error("{0}")]
    Failed(String),
}

fn canonical(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// AAAA and A records among `records`, by owner name.
fn addresses_in(records: &[Record]) -> BTreeMap<String, Vec<IpAddr>> {
    let mut addresses: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    let records = records.iter();
    // AAAA before A, so that the first address is the IPv6 one when both exist.
    let mut sorted: Vec<_> = records.collect();
    sorted.sort_by_key(|r| r.record_type() != RecordType::AAAA);
    for record in sorted {
        let ip = match &record.data {
            RData::AAAA(a) => IpAddr::V6(a.0),
            RData::A(a) => IpAddr::V4(a.0),
            _ => continue,
        };
        addresses.entry(canonical(&record.name)).or_default().push(ip);
    }
    addresses
}
