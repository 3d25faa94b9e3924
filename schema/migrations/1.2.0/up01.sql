-- 1.2.0: changes carry an idempotency key, so that a change retried after
-- its commit's outcome was lost (the connection cut during COMMIT, a
-- failover) is not applied twice (see dbinit.sql).
CREATE TABLE IF NOT EXISTS dns_change_key (
    dns_group TEXT NOT NULL REFERENCES dns_group (dns_group),
    idempotency_key TEXT NOT NULL,
    version INT8 NOT NULL,
    change_digest TEXT NOT NULL,
    time_created TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (dns_group, idempotency_key),
    FOREIGN KEY (dns_group, version) REFERENCES dns_version (dns_group, version)
);
