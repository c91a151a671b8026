-- Restores of a snapshot (issue 14): a promotion whose source is a stored snapshot
-- of its target, not the source environment's n8n.
ALTER TABLE rm_promotions ADD COLUMN source_snapshot_id text;
