-- Notification channels (issue 15): a webhook endpoint with a notification rule
-- receives rendered notifications instead of events. The rule as JSON (kinds,
-- environment, severities, format, the sealed URL's id); NULL for a plain endpoint.
ALTER TABLE rm_webhooks ADD COLUMN notification text;
