-- The log digest (tamper evidence for the log as a whole; see projections'
-- store/digest.rs for the definition an auditor recomputes):
--   D_0 = SHA-256("workflowops log digest v1" || log_id bytes)
--   D_i = SHA-256(D_{i-1} || position_i as u64 big-endian || chain hash_i as hex text)
-- over every event in the readers' global order.

-- This database's log: a random id, so a digest taken from another database is told
-- apart from tampering. One row.
CREATE TABLE log_identity
(
    id     smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    log_id text COLLATE "C" NOT NULL CHECK (log_id ~ '^[0-9a-f]{32}$')
);
INSERT INTO log_identity (log_id) VALUES (replace(gen_random_uuid()::text, '-', ''));

-- The running state, kept up to date by the service (compare-and-set on the cursor):
-- the digest over every event up to and including (tx_id, position). One row;
-- digest NULL = nothing digested yet (D_0).
CREATE TABLE log_digest_head
(
    id         smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    tx_id      bigint NOT NULL DEFAULT 0,
    position   bigint NOT NULL DEFAULT 0,
    events     bigint NOT NULL DEFAULT 0,
    digest     text COLLATE "C",
    updated_at text
);
INSERT INTO log_digest_head DEFAULT VALUES;

-- Seals: the digest at a cursor, periodically and on demand. Never updated or
-- deleted (the triggers below refuse it; an attacker with DDL rights can drop them,
-- which is what a digest kept outside the database is for).
CREATE TABLE log_seals
(
    tx_id     bigint NOT NULL,
    position  bigint NOT NULL,
    events    bigint NOT NULL,
    digest    text COLLATE "C" NOT NULL,
    sealed_at text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('periodic', 'on_demand')),
    PRIMARY KEY (tx_id, position)
);

CREATE FUNCTION workflowops_seals_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'log seals are immutable';
END
$$;
CREATE TRIGGER log_seals_immutable BEFORE UPDATE OR DELETE ON log_seals
    FOR EACH ROW EXECUTE FUNCTION workflowops_seals_immutable();
CREATE TRIGGER log_seals_no_truncate BEFORE TRUNCATE ON log_seals
    FOR EACH STATEMENT EXECUTE FUNCTION workflowops_seals_immutable();
