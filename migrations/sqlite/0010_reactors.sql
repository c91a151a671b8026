-- One row per reactor (process manager): how far it has handled the log. Unlike a
-- projection's, its effects (commands, deliveries) are not in this transaction: the
-- row is written after them, and a replay of what came after it is harmless because
-- every effect is idempotent (deterministic ids). `blocked_*` says at which event it
-- waits and why (it retries with backoff and never skips an event whose effect did
-- not happen); `events_skipped` counts events it judged already done.
CREATE TABLE reactor_checkpoints
(
    name              text PRIMARY KEY,
    tx_id             integer NOT NULL DEFAULT 0,
    position          integer NOT NULL DEFAULT 0,
    events_handled    integer NOT NULL DEFAULT 0,
    events_skipped    integer NOT NULL DEFAULT 0,
    updated_at        text,
    blocked_position  integer,
    blocked_event     text,
    blocked_error     text,
    blocked_permanent integer NOT NULL DEFAULT 0,
    blocked_attempts  integer NOT NULL DEFAULT 0
) STRICT;
