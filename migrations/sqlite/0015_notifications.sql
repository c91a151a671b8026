-- Notification channels (issue 15): a webhook endpoint with a notification rule
-- receives rendered notifications instead of events. The rule as JSON (kinds,
-- environment, severities, format, the sealed URL's id); NULL for a plain endpoint.
ALTER TABLE rm_webhooks ADD COLUMN notification text;

-- A delivery's place in the log's read order: (tx_id, position) on PostgreSQL,
-- where a transaction that began earlier can hold a higher position; 0 on SQLite
-- (position order). An endpoint's queue goes in this order.
ALTER TABLE webhook_deliveries ADD COLUMN tx_id integer NOT NULL DEFAULT 0;
CREATE INDEX webhook_deliveries_log_order ON webhook_deliveries (tenant, webhook_id, tx_id, position);
