-- Live rebuilds (`workflowops rebuild` while a service runs): a rebuild replays into
-- shadow tables and swaps them in with one transaction.
--
-- Every swap bumps the projection's generation, so a serving projector notices it was
-- rebuilt (reloads its checkpoint and forgets its cached rows) even when the rebuilt
-- checkpoint is the one it already had.
ALTER TABLE projection_checkpoints ADD COLUMN generation integer NOT NULL DEFAULT 0;

-- One row per projection being rebuilt, written by the rebuild as it goes and deleted
-- when it ends: progress for `/ready`, and a claim (a second rebuild of a projection
-- whose row has a recent heartbeat is refused; a stale row is a crashed rebuild, whose
-- shadow is dropped and whose rows are taken over). Times are RFC 3339 text.
CREATE TABLE projection_rebuilds
(
    name       text PRIMARY KEY,
    run        text   NOT NULL,
    -- the run's shadow: a database file next to this one
    shadow     text   NOT NULL,
    started_at text   NOT NULL,
    updated_at text   NOT NULL,
    position   integer NOT NULL DEFAULT 0,
    target     integer NOT NULL DEFAULT 0,
    events     integer NOT NULL DEFAULT 0
) STRICT;
