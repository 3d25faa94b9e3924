CREATE TABLE IF NOT EXISTS dns_name (
    dns_zone_id UUID NOT NULL REFERENCES dns_zone (id),
    name TEXT NOT NULL,
    version_added INT8 NOT NULL,
    version_removed INT8,
    records JSONB NOT NULL,
    PRIMARY KEY (dns_zone_id, name, version_added),
    CHECK (version_removed IS NULL OR version_removed > version_added)
);
