-- Webhooks (issue 15).
--
-- The endpoints, as `webhook` events leave them (ids of their sealed secrets only).
CREATE TABLE rm_webhooks
(
    id                     text PRIMARY KEY,
    tenant                 text NOT NULL,
    webhook_id             text NOT NULL,
    url                    text NOT NULL,
    event_types            text NOT NULL,
    aggregate_types        text NOT NULL,
    description            text,
    status                 text NOT NULL,
    disabled_reason        text,
    disabled_automatically integer NOT NULL,
    secret_id              text NOT NULL,
    previous_secret_id     text,
    previous_valid_until   text,
    created_position       integer NOT NULL,
    created_by             text NOT NULL,
    created_at             text NOT NULL,
    updated_at             text NOT NULL
);
CREATE INDEX rm_webhooks_tenant ON rm_webhooks (tenant, created_position);

-- One row per (endpoint, event) the dispatcher routed to it: the sender's queue and
-- its record (attempts, last status, latency, error). Operational state, not
-- events: the log records what happened to the endpoints, not every HTTP attempt.
CREATE TABLE webhook_deliveries
(
    id              text PRIMARY KEY,
    tenant          text NOT NULL,
    webhook_id      text NOT NULL,
    position        integer NOT NULL,
    event_type      text NOT NULL,
    aggregate_type  text NOT NULL,
    message_id      text NOT NULL,
    body            text NOT NULL,
    status          text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at text,
    last_attempt_at text,
    response_status integer,
    error           text,
    latency_ms      integer,
    attempt_log     text NOT NULL DEFAULT '[]',
    created_at      text NOT NULL,
    delivered_at    text
);
CREATE INDEX webhook_deliveries_queue ON webhook_deliveries (tenant, webhook_id, position);
-- What is due: the sender's pass reads only undelivered rows.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
