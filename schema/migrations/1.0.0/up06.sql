CREATE UNIQUE INDEX IF NOT EXISTS dns_name_live
    ON dns_name (dns_zone_id, name) WHERE version_removed IS NULL;
