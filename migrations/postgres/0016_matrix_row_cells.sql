-- Each matrix row carries its cells (decision 63): JSON, one array per cell in the
-- cell table's column order, ordered by environment then mapping id. A page of the
-- matrix is then one read of its rows instead of a second read of scattered cell
-- rows; `rm_matrix_cells` keeps the cells one by one for filters and per-environment
-- reads. Existing rows have no cells yet, so the matrix is projected again from the
-- log: its tables are emptied and its checkpoint reset, and the service's projector
-- replays it when it starts.
ALTER TABLE rm_matrix_rows ADD COLUMN cells text NOT NULL DEFAULT '[]';
DELETE FROM rm_matrix_cells;
DELETE FROM rm_matrix_rows;
UPDATE projection_checkpoints
SET tx_id = 0, position = 0, events_applied = 0, updated_at = NULL,
    failed_position = NULL, failed_event = NULL, failed_error = NULL
WHERE name = 'workflow_matrix';
