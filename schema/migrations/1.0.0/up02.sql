CREATE TABLE IF NOT EXISTS dns_group (
    dns_group TEXT PRIMARY KEY CHECK (dns_group IN ('internal', 'external')),
    latest_version INT8 NOT NULL CHECK (latest_version >= 1)
);
