-- Every key of the audit trail's three secondary indexes ends with `position`, which
-- is unique: B-tree deduplication can never merge two of their entries, yet
-- building an index checked each entry against the one before it on every key
-- column. Building them is most of a PostgreSQL rebuild's "prepare" step; without
-- deduplication the three took 15.4 s instead of 16.7 s at 5,000,000 rows
-- (decision 83). A rebuild's shadow copies these definitions, options included.
ALTER INDEX rm_audit_log SET (deduplicate_items = off);
ALTER INDEX rm_audit_aggregate SET (deduplicate_items = off);
ALTER INDEX rm_audit_actor SET (deduplicate_items = off);
