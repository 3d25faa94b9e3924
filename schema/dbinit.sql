-- The complete current schema of the control-plane database.
--
-- A new database is created by running this file; an existing one is brought
-- here by the steps under migrations/ (a test checks that both give the same
-- schema).  It must run unchanged on PostgreSQL and CockroachDB: plain DDL,
-- no extensions, no stored procedures.

-- Which schema version this database holds.  Nexus refuses to start when
-- this differs from the version it was built for.
CREATE TABLE IF NOT EXISTS db_metadata (
    singleton BOOL PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version TEXT NOT NULL,
    time_modified TIMESTAMPTZ NOT NULL
);

-- One row per DNS group.  Every change updates this row first, which makes
-- concurrent writers of one group conflict right away (SQLSTATE 40001) and
-- retry, instead of racing to create the same generation.
CREATE TABLE IF NOT EXISTS dns_group (
    dns_group TEXT PRIMARY KEY CHECK (dns_group IN ('internal', 'external')),
    latest_version INT8 NOT NULL CHECK (latest_version >= 1)
);

-- The zones served by each group.
CREATE TABLE IF NOT EXISTS dns_zone (
    id UUID PRIMARY KEY,
    dns_group TEXT NOT NULL REFERENCES dns_group (dns_group),
    zone_name TEXT NOT NULL UNIQUE,
    ttl_seconds INT8 NOT NULL CHECK (ttl_seconds >= 0 AND ttl_seconds <= 2147483647),
    time_created TIMESTAMPTZ NOT NULL
);

-- One row per generation of a group: when, by whom and why.
-- Reading the latest generation is a reverse scan of this primary key that
-- stops at the first row.
-- digest_state: what the generation's digest is computed from (per zone:
-- name, TTL, name count and the sum of its names' hashes; JSON, see
-- dns_types::digest), kept up to date by each change in proportion to its
-- size.  Nexus checks a config it derived from a difference against it.
-- NULL for generations written before schema 1.1.0.
CREATE TABLE IF NOT EXISTS dns_version (
    dns_group TEXT NOT NULL REFERENCES dns_group (dns_group),
    version INT8 NOT NULL CHECK (version >= 1),
    time_created TIMESTAMPTZ NOT NULL,
    creator TEXT NOT NULL,
    comment TEXT NOT NULL,
    digest_state TEXT,
    PRIMARY KEY (dns_group, version)
);

-- A change's idempotency key (optional, chosen by the caller) and the
-- generation it created.  A change whose commit outcome the caller never
-- learned (the connection was cut during COMMIT, the database failed over)
-- is sent again with the same key; finding the key, the database answers
-- with that generation instead of applying the change a second time.
-- change_digest: a hash of the change, so that a key reused for another
-- change is refused rather than answered with the wrong generation.
CREATE TABLE IF NOT EXISTS dns_change_key (
    dns_group TEXT NOT NULL REFERENCES dns_group (dns_group),
    idempotency_key TEXT NOT NULL,
    version INT8 NOT NULL,
    change_digest TEXT NOT NULL,
    time_created TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (dns_group, idempotency_key),
    FOREIGN KEY (dns_group, version) REFERENCES dns_version (dns_group, version)
);

-- One row per name per stretch of generations during which its records did
-- not change.  A name with records R is alive at generation G when
-- version_added <= G and (version_removed IS NULL or version_removed > G).
-- Changing a name's records closes its row and opens a new one, so a commit
-- writes rows only for the names it touches.
CREATE TABLE IF NOT EXISTS dns_name (
    dns_zone_id UUID NOT NULL REFERENCES dns_zone (id),
    name TEXT NOT NULL,
    version_added INT8 NOT NULL,
    version_removed INT8,
    records JSONB NOT NULL,
    PRIMARY KEY (dns_zone_id, name, version_added),
    CHECK (version_removed IS NULL OR version_removed > version_added)
);

-- The names alive now: at most one row per name.  Serves reads of the latest
-- config and the lookups a commit makes.
CREATE UNIQUE INDEX IF NOT EXISTS dns_name_live
    ON dns_name (dns_zone_id, name) WHERE version_removed IS NULL;

-- Names removed after a given generation: with dns_name_live, reading an old
-- generation touches only what was alive then (plus what changed since).
CREATE INDEX IF NOT EXISTS dns_name_by_version_removed
    ON dns_name (dns_zone_id, version_removed) WHERE version_removed IS NOT NULL;

-- Names added in a range of generations: diffs cost what changed.
CREATE INDEX IF NOT EXISTS dns_name_by_version_added
    ON dns_name (dns_zone_id, version_added);

INSERT INTO db_metadata (singleton, version, time_modified)
    VALUES (TRUE, '1.2.0', now())
    ON CONFLICT (singleton) DO NOTHING;
