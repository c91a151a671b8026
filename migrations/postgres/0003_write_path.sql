-- Appends are announced on 'workflowops_events' by the application after they have
-- committed (a notifier task per process; see PgStore). A NOTIFY inside the appending
-- transaction takes a database-wide lock at commit and serialized every append.
DROP TRIGGER IF EXISTS events_notify ON events;
DROP FUNCTION IF EXISTS workflowops_notify_events();

-- Read-model rows that are updated again and again keep room on their page, so an
-- update that changes no indexed column stays on the page (a HOT update) and the
-- page is pruned without waiting for vacuum.
ALTER TABLE rm_matrix_cells SET (fillfactor = 50);
ALTER TABLE rm_matrix_rows SET (fillfactor = 70);
ALTER TABLE rm_environments SET (fillfactor = 50);
ALTER TABLE rm_incidents SET (fillfactor = 70);

-- Read-model keys compare byte by byte (COLLATE "C"), as SQLite's do: pages come in
-- the same order on both backends, and index maintenance skips locale-aware string
-- comparison (a measurable share of a rebuild's cost).
ALTER TABLE rm_matrix_rows
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN tenant TYPE text COLLATE "C",
    ALTER COLUMN sort_key TYPE text COLLATE "C";
ALTER TABLE rm_matrix_cells
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN tenant TYPE text COLLATE "C",
    ALTER COLUMN row_id TYPE text COLLATE "C",
    ALTER COLUMN environment_id TYPE text COLLATE "C";
ALTER TABLE rm_environments
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN tenant TYPE text COLLATE "C",
    ALTER COLUMN name TYPE text COLLATE "C";
ALTER TABLE rm_environment_incidents
    ALTER COLUMN id TYPE text COLLATE "C";
ALTER TABLE rm_incidents
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN tenant TYPE text COLLATE "C",
    ALTER COLUMN detected_at TYPE text COLLATE "C";
ALTER TABLE rm_promotions
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN tenant TYPE text COLLATE "C",
    ALTER COLUMN created_at TYPE text COLLATE "C";
ALTER TABLE rm_deployments
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN tenant TYPE text COLLATE "C",
    ALTER COLUMN created_at TYPE text COLLATE "C";
ALTER TABLE rm_audit
    ALTER COLUMN tenant TYPE text COLLATE "C",
    ALTER COLUMN actor TYPE text COLLATE "C",
    ALTER COLUMN aggregate_type TYPE text COLLATE "C",
    ALTER COLUMN aggregate_id TYPE text COLLATE "C";
