-- The event log. The first seven columns are postgres-es's own (its repository reads
-- and writes them unchanged); the rest is the global log kept by the database.
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    -- global position: unique, but allocated before commit, so NOT commit order
    position       bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    -- the writing transaction: readers go in (tx_id, position) order and only below
    -- the oldest running transaction, so a late commit is never skipped
    tx_id          xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    -- the service writes the metadata's (hashed) recorded_at here; other writers get now()
    recorded_at    timestamptz                  NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE INDEX events_global_order ON events (tx_id, position);

-- cqrs-es snapshots (postgres-es's shape), for aggregates with long histories.
CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);
