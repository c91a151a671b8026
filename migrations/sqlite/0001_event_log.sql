-- The event log. The first seven columns are sqlite-es's own (its repository reads
-- and writes them unchanged); position and recorded_at form the global log.
CREATE TABLE events
(
    aggregate_type text                          NOT NULL,
    aggregate_id   text                          NOT NULL,
    sequence       integer CHECK (sequence >= 0) NOT NULL,
    event_type     text                          NOT NULL,
    event_version  text                          NOT NULL,
    payload        text                          NOT NULL,
    metadata       text                          NOT NULL,
    -- MAX(position) + 1, assigned inside the writing transaction (by the service's
    -- insert, or by the trigger below for other writers such as sqlite-es). SQLite
    -- has one writer at a time, so position order is commit order.
    position       integer UNIQUE,
    recorded_at    text GENERATED ALWAYS AS (json_extract(metadata, '$.recorded_at')) VIRTUAL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
) STRICT;

-- An explicit column, not the rowid: VACUUM may renumber the rowids of a table
-- without an INTEGER PRIMARY KEY, and positions are forever.
CREATE TRIGGER events_position AFTER INSERT ON events
    WHEN NEW.position IS NULL
BEGIN
    UPDATE events SET position = (SELECT COALESCE(MAX(position), 0) + 1 FROM events)
    WHERE rowid = NEW.rowid;
END;

CREATE TABLE snapshots
(
    aggregate_type   text                                  NOT NULL,
    aggregate_id     text                                  NOT NULL,
    last_sequence    integer CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot integer CHECK (current_snapshot >= 0) NOT NULL,
    payload          text                                  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
) STRICT;
