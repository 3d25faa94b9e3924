//! Finding what to talk to: a Nexus, the database, the DNS servers, either
//! as given on the command line or through internal DNS, saying each
//! assumption as a `note:` on stderr.

use anyhow::{Context, bail};
use db_model::{Datastore, DatastoreOptions};
use dns_types::DnsGroup;
use internal_dns::{Resolver, ServiceName};
use std::net::SocketAddr;
use std::time::Duration;

/// Limit for one DNS query and one HTTP request: an unreachable or hung
/// service must turn into an error within seconds.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// The database omdb connects to when it finds the server through DNS.
const DEFAULT_DB: &str = "control_plane";
const DEFAULT_DB_USER: &str = "postgres";

pub struct Discovery {
    /// Set once the DNS server in use has been noted, so it is said once.
    noted_dns_server: std::sync::atomic::AtomicBool,
    /// Asked in order until one answers.
    dns_servers: Vec<SocketAddr>,
    /// Made once, for every lookup of this run.
    resolver: std::sync::OnceLock<Resolver>,
    nexus_url: Option<String>,
    db_url: Option<String>,
    /// The database URL once found (so DNS is asked, and it is said, once).
    found_db_url: tokio::sync::OnceCell<String>,
    pub zone: String,
}

pub fn note(message: impl AsRef<str>) {
    eprintln!("note: {}", message.as_ref());
}

impl Discovery {
    pub fn new(
        dns_servers: Vec<SocketAddr>,
        nexus_url: Option<String>,
        db_url: Option<String>,
        zone: String,
    ) -> Discovery {
        Discovery {
            noted_dns_server: Default::default(),
            dns_servers,
            resolver: Default::default(),
            nexus_url,
            db_url,
            found_db_url: Default::default(),
            zone,
        }
    }

    fn resolver(&self, wanted: &str, flag: &str) -> anyhow::Result<Resolver> {
        if self.dns_servers.is_empty() {
            bail!(
                "no {wanted} to talk to: pass {flag}, or --dns-server (OMDB_DNS_SERVER) to find one \
                 in internal DNS"
            );
        }
        if !self.noted_dns_server.swap(true, std::sync::atomic::Ordering::Relaxed) {
            let servers: Vec<String> = self.dns_servers.iter().map(|s| s.to_string()).collect();
            note(format!(
                "using DNS server{} {}",
                if servers.len() == 1 { "" } else { "s (in order)" },
                servers.join(", ")
            ));
            note("(if this is not right, use --dns-server to specify an alternate DNS server)");
        }
        Ok(self.resolver.get_or_init(|| Resolver::new(self.dns_servers.clone(), TIMEOUT)).clone())
    }

    /// Looks `service` up, saying which DNS servers did not answer before
    /// one did.
    async fn lookup(
        &self,
        resolver: &Resolver,
        service: ServiceName,
    ) -> anyhow::Result<internal_dns::ServiceAnswer> {
        let answer = resolver.lookup_service(service, &self.zone).await?;
        for (server, error) in &answer.unanswered {
            note(format!("DNS server {server} did not answer ({error}); {} did", answer.server));
        }
        Ok(answer)
    }

    /// The first DNS server everything is found through, if one was given.
    pub fn dns_server(&self) -> Option<SocketAddr> {
        self.dns_servers.first().copied()
    }

    /// The Nexus to ask: the one given, or the first found in DNS.
    pub async fn nexus_url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.nexus_url {
            return Ok(url.clone());
        }
        note("Nexus URL not specified.  Will pick one from DNS.");
        let urls = self.nexus_urls_from_dns().await?;
        let url = urls.into_iter().next().expect("nexus_urls_from_dns never returns an empty list");
        note(format!("using Nexus URL {url}"));
        Ok(url)
    }

    /// Every Nexus registered in DNS (or just the one given, if no DNS
    /// server was given).
    pub async fn all_nexus_urls(&self) -> anyhow::Result<Vec<String>> {
        if self.dns_servers.is_empty()
            && let Some(url) = &self.nexus_url
        {
            note("no DNS server given: showing only the Nexus given with --nexus-internal-url");
            return Ok(vec![url.clone()]);
        }
        let urls = self.nexus_urls_from_dns().await?;
        note(format!("found {} in DNS", nexus_types::count(urls.len() as u64, "Nexus instance")));
        Ok(urls)
    }

    async fn nexus_urls_from_dns(&self) -> anyhow::Result<Vec<String>> {
        let mut addresses = self
            .registered(ServiceName::Nexus, "Nexus", "--nexus-internal-url (OMDB_NEXUS_URL)")
            .await?;
        // By address, whatever order DNS answered in: every command lists
        // them the same way, run after run.
        addresses.sort();
        Ok(addresses.iter().map(|addr| format!("http://{addr}")).collect())
    }

    /// The database, as given or found through `_postgresql._tcp`.  omdb
    /// only reads it: when a replicated database has no node that accepts
    /// writes (a failover under way), the standby furthest along is read
    /// instead, and a note says so; what omdb shows of the database then
    /// says that writes cannot commit.
    pub async fn datastore(&self) -> anyhow::Result<Datastore> {
        let url = self.db_url().await?;
        let datastore = self.datastore_at(&url)?;
        match datastore.check_schema_version().await {
            Ok(()) => Ok(datastore),
            Err(error) => {
                let error = anyhow::Error::new(error)
                    .context(format!("checking the database at {}", datastore.address()));
                match self.standby(&url, datastore.address()).await {
                    Some(standby) => Ok(standby),
                    None => Err(error),
                }
            }
        }
    }

    /// The standby furthest along of a replicated database none of whose
    /// nodes is primary, if one answers.
    async fn standby(&self, url: &str, address: &str) -> Option<Datastore> {
        if db_model::cluster::host_count(url) < 2 {
            return None;
        }
        let nodes = db_model::cluster::node_statuses(url, TIMEOUT).await.ok()?;
        if db_model::cluster::primary(&nodes).is_some() {
            return None;
        }
        let node = db_model::cluster::furthest_standby(&nodes)?;
        let node_url = db_model::cluster::node_url(url, &node.address)?;
        let options = DatastoreOptions { standby_reads: true, ..self.options() };
        let datastore = Datastore::new(&node_url, options).ok()?;
        datastore.check_schema_version().await.ok()?;
        note(format!(
            "no node of the database at {address} accepts writes: reading standby {} (of the \
             nodes that answer, the one that has replayed the most)",
            node.address
        ));
        Some(datastore)
    }

    /// A pool for `url`, not yet connected.
    pub fn datastore_at(&self, url: &str) -> anyhow::Result<Datastore> {
        Ok(Datastore::new(url, self.options())?)
    }

    fn options(&self) -> DatastoreOptions {
        DatastoreOptions {
            max_connections: 4,
            connect_timeout: TIMEOUT,
            transaction_timeout: TIMEOUT * 2,
            max_attempts: 5,
            standby_reads: false,
        }
    }

    /// The addresses registered under `service` in internal DNS; none is
    /// an error naming the SRV name, the DNS server asked and `flag`.
    async fn registered(
        &self,
        service: ServiceName,
        wanted: &str,
        flag: &str,
    ) -> anyhow::Result<Vec<SocketAddr>> {
        let resolver = self.resolver(wanted, flag)?;
        let answer = self.lookup(&resolver, service).await?;
        let addresses: Vec<SocketAddr> =
            answer.instances.iter().filter_map(|i| i.socket_addr()).collect();
        if addresses.is_empty() {
            bail!(
                "no {wanted} registered in DNS ({} has no SRV records at {}); pass {flag}",
                service.srv_name(&self.zone),
                answer.server
            );
        }
        Ok(addresses)
    }

    /// The database URL, as given or built from `_postgresql._tcp`: with
    /// several nodes registered (a replicated database), a multi-host URL
    /// that connects to whichever accepts writes.
    pub async fn db_url(&self) -> anyhow::Result<String> {
        self.found_db_url.get_or_try_init(|| self.find_db_url()).await.cloned()
    }

    async fn find_db_url(&self) -> anyhow::Result<String> {
        Ok(match &self.db_url {
            Some(url) => url.clone(),
            None => {
                note("database URL not specified.  Will search DNS.");
                let nodes: Vec<String> = self
                    .registered(ServiceName::Postgresql, "database", "--db-url (OMDB_DB_URL)")
                    .await?
                    .iter()
                    .map(|a| a.to_string())
                    .collect();
                let url = match nodes.len() {
                    1 => format!(
                        "postgresql://{DEFAULT_DB_USER}@{}/{DEFAULT_DB}?sslmode=disable",
                        nodes[0]
                    ),
                    _ => format!(
                        "postgresql://{DEFAULT_DB_USER}@{}/{DEFAULT_DB}?sslmode=disable\
                         &target_session_attrs=read-write",
                        nodes.join(",")
                    ),
                };
                note(format!("using database URL {url}"));
                url
            }
        })
    }

    /// The config API addresses of `group`'s DNS servers, from DNS.
    pub async fn dns_servers(&self, group: DnsGroup) -> anyhow::Result<Vec<(SocketAddr, String)>> {
        let resolver = self.resolver("DNS servers", "--dns-server")?;
        let service = ServiceName::dns_servers_of(group);
        let answer = self.lookup(&resolver, service).await?;
        answer
            .instances
            .iter()
            .map(|i| {
                let addr = i
                    .socket_addr()
                    .with_context(|| format!("SRV target {} has no address", i.target))?;
                Ok((addr, i.target.clone()))
            })
            .collect()
    }
}

/// An HTTP client whose every request gives up after [`TIMEOUT`].
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .build()
        .expect("an HTTP client with timeouts builds")
}
