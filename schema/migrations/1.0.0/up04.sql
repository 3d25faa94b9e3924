CREATE TABLE IF NOT EXISTS dns_version (
    dns_group TEXT NOT NULL REFERENCES dns_group (dns_group),
    version INT8 NOT NULL CHECK (version >= 1),
    time_created TIMESTAMPTZ NOT NULL,
    creator TEXT NOT NULL,
    comment TEXT NOT NULL,
    PRIMARY KEY (dns_group, version)
);
