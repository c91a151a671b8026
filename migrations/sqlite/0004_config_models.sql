-- See the PostgreSQL migration for comments (SQLite compares text byte by byte
-- already, and has no fillfactor).
CREATE TABLE rm_pipelines
(
    id          text PRIMARY KEY,
    tenant      text NOT NULL,
    pipeline_id text NOT NULL,
    name        text NOT NULL,
    sort_key    text NOT NULL,
    description text,
    stages      text NOT NULL,
    active      integer NOT NULL,
    created_by  text NOT NULL,
    created_at  text NOT NULL,
    updated_at  text NOT NULL
) STRICT;
CREATE INDEX rm_pipelines_page ON rm_pipelines (tenant, sort_key, id);

CREATE TABLE rm_drift_policies
(
    id         text PRIMARY KEY,
    tenant     text NOT NULL,
    scope      text NOT NULL,
    policy     text NOT NULL,
    updated_by text NOT NULL,
    updated_at text NOT NULL
) STRICT;
CREATE INDEX rm_drift_policies_tenant ON rm_drift_policies (tenant, scope);
