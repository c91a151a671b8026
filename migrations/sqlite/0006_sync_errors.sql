-- Why the last environment or repository sync of an environment failed (cleared by
-- the next one that succeeds).
ALTER TABLE rm_environments ADD COLUMN last_sync_error text;
ALTER TABLE rm_environments ADD COLUMN last_repository_sync_error text;
