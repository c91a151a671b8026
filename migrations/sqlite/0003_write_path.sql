-- Keeps the numbering of the PostgreSQL migrations (there, 0003 drops the NOTIFY
-- trigger and sets fillfactors). SQLite readers in the process are woken by the
-- append signal, and SQLite has no fillfactor: nothing to do.
SELECT 1;
