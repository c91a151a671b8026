-- A matrix row's `cells` text (3.4 KB for ten environments) is compressed by
-- PostgreSQL's TOAST; with pglz, decompressing the 50 rows of every executed page
-- was about a tenth of PostgreSQL's CPU for it. LZ4 decompresses several times
-- faster and compresses faster on every projector write (decision 71). Servers
-- built without LZ4 keep pglz. Existing rows are rewritten once so reads see LZ4
-- at once, not only after their next change.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE rm_matrix_rows ALTER COLUMN cells SET COMPRESSION lz4';
    EXECUTE 'UPDATE rm_matrix_rows SET cells = cells || '''' '
            'WHERE pg_column_compression(cells) IS DISTINCT FROM ''lz4'' '
            'AND pg_column_compression(cells) IS NOT NULL';
EXCEPTION WHEN feature_not_supported OR syntax_error OR undefined_function THEN
    RAISE NOTICE 'LZ4 compression is not available: matrix cells stay pglz';
END
$$;
