CREATE INDEX IF NOT EXISTS dns_name_by_version_added
    ON dns_name (dns_zone_id, version_added);
