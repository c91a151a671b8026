-- One row per reactor (process manager): how far it has handled the log. Unlike a
-- projection's, its effects (commands, deliveries) are not in this transaction: the
-- row is written after them, and a replay of what came after it is harmless because
-- every effect is idempotent (deterministic ids). `blocked_*` says at which event it
-- waits and why (it retries with backoff and never skips an event whose effect did
-- not happen); `events_skipped` counts events it judged already done.
CREATE TABLE reactor_checkpoints
(
    name              text PRIMARY KEY,
    tx_id             bigint  NOT NULL DEFAULT 0,
    position          bigint  NOT NULL DEFAULT 0,
    events_handled    bigint  NOT NULL DEFAULT 0,
    events_skipped    bigint  NOT NULL DEFAULT 0,
    updated_at        text,
    blocked_position  bigint,
    blocked_event     text,
    blocked_error     text,
    blocked_permanent boolean NOT NULL DEFAULT false,
    blocked_attempts  bigint  NOT NULL DEFAULT 0
);
