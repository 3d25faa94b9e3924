CREATE TABLE IF NOT EXISTS dns_zone (
    id UUID PRIMARY KEY,
    dns_group TEXT NOT NULL REFERENCES dns_group (dns_group),
    zone_name TEXT NOT NULL UNIQUE,
    ttl_seconds INT8 NOT NULL CHECK (ttl_seconds >= 0 AND ttl_seconds <= 2147483647),
    time_created TIMESTAMPTZ NOT NULL
);
