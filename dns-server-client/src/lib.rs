//! Client for the DNS server's config API, generated at build time from the
//! checked-in OpenAPI document.  The DNS data types are the shared ones from
//! `dns-types`, so a config read from the database is pushed as is.

progenitor::generate_api!(
    spec = "../openapi/dns-server.json",
    interface = Builder,
    replace = {
        ConfigDiff = dns_types::ConfigDiff,
        DnsConfig = dns_types::DnsConfig,
        DnsConfigZone = dns_types::DnsConfigZone,
        DnsRecord = dns_types::DnsRecord,
        NameChange = dns_types::NameChange,
        SrvRecord = dns_types::SrvRecord,
        ZoneChanges = dns_types::ZoneChanges,
    }
);
