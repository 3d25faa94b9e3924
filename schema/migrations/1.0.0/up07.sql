CREATE INDEX IF NOT EXISTS dns_name_by_version_removed
    ON dns_name (dns_zone_id, version_removed) WHERE version_removed IS NOT NULL;
