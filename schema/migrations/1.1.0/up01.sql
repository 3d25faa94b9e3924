-- 1.1.0: each generation keeps what its digest is computed from, so that a
-- change can update the digest in proportion to its size and Nexus can
-- check a config it derived from a difference (see dbinit.sql).
ALTER TABLE dns_version ADD COLUMN IF NOT EXISTS digest_state TEXT;
