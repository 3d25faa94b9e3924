//! Client for the DNS server's config API, generated at build time from the
//! checked-in OpenAPI document.  The DNS data types are the shared ones from
//! `dns-types`, so a config read from the database is pushed as is.

progenitor::generate_api!(
    spec = "../openapi/dns-server.json",
    interface = Builder,
    replace = {
        ApplyHow = dns_types::apply_history::ApplyHow,
        HistoryEntry = dns_types::apply_history::HistoryEntry,
        ServerEvent = dns_types::apply_history::ServerEvent,
        ServerHistory = dns_types::apply_history::ServerHistory,
        ConfigDiff = dns_types::ConfigDiff,
        DnsConfig = dns_types::DnsConfig,
        DnsConfigZone = dns_types::DnsConfigZone,
        DnsRecord = dns_types::DnsRecord,
        NameChange = dns_types::NameChange,
        SrvRecord = dns_types::SrvRecord,
        ZoneChanges = dns_types::ZoneChanges,
    }
);
