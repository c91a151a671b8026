-- The log digest (tamper evidence for the log as a whole; see projections'
-- store/digest.rs for the definition an auditor recomputes):
--   D_0 = SHA-256("workflowops log digest v1" || log_id bytes)
--   D_i = SHA-256(D_{i-1} || position_i as u64 big-endian || chain hash_i as hex text)
-- over every event in the readers' global order.

-- This database's log: a random id, so a digest taken from another database is told
-- apart from tampering. One row.
CREATE TABLE log_identity
(
    id     integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    log_id text NOT NULL CHECK (length(log_id) = 32 AND log_id NOT GLOB '*[^0-9a-f]*')
);
INSERT INTO log_identity (log_id) VALUES (lower(hex(randomblob(16))));

-- The running state, kept up to date by the service (compare-and-set on the cursor):
-- the digest over every event up to and including position. One row; digest NULL =
-- nothing digested yet (D_0). tx_id is always 0 on SQLite.
CREATE TABLE log_digest_head
(
    id         integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    tx_id      integer NOT NULL DEFAULT 0,
    position   integer NOT NULL DEFAULT 0,
    events     integer NOT NULL DEFAULT 0,
    digest     text,
    updated_at text
);
INSERT INTO log_digest_head DEFAULT VALUES;

-- Seals: the digest at a cursor, periodically and on demand. Never updated or
-- deleted (the triggers below refuse it; an attacker who can drop them is what a
-- digest kept outside the database is for).
CREATE TABLE log_seals
(
    tx_id     integer NOT NULL,
    position  integer NOT NULL,
    events    integer NOT NULL,
    digest    text NOT NULL,
    sealed_at text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('periodic', 'on_demand')),
    PRIMARY KEY (tx_id, position)
);

CREATE TRIGGER log_seals_no_update BEFORE UPDATE ON log_seals
BEGIN
    SELECT RAISE(ABORT, 'log seals are immutable');
END;
CREATE TRIGGER log_seals_no_delete BEFORE DELETE ON log_seals
BEGIN
    SELECT RAISE(ABORT, 'log seals are immutable');
END;
