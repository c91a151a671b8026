-- Read models of configuration: pipelines and drift policies. Same conventions as
-- 0002/0003: times are RFC 3339 text, JSON columns are text, and the text keys that
-- are compared or sorted are COLLATE "C" (byte order, as on SQLite).
--
-- No fillfactor: 0003 sets one on rows that are updated again and again (every sync
-- or drift check). A pipeline or a policy changes when an admin edits it, so a full
-- page costs nothing worth reserving room for.
CREATE TABLE rm_pipelines
(
    id          text COLLATE "C" PRIMARY KEY,
    tenant      text COLLATE "C" NOT NULL,
    pipeline_id text NOT NULL,
    name        text NOT NULL,
    sort_key    text COLLATE "C" NOT NULL,
    description text,
    stages      text NOT NULL,
    active      boolean NOT NULL,
    created_by  text NOT NULL,
    created_at  text NOT NULL,
    updated_at  text NOT NULL
);
CREATE INDEX rm_pipelines_page ON rm_pipelines (tenant, sort_key, id);

-- One row per recorded policy: scope `tenant` (the tenant default) or an environment
-- id (its override). Lookups are by primary key (`{tenant}:{scope}`).
CREATE TABLE rm_drift_policies
(
    id         text COLLATE "C" PRIMARY KEY,
    tenant     text COLLATE "C" NOT NULL,
    scope      text COLLATE "C" NOT NULL,
    policy     text NOT NULL,
    updated_by text NOT NULL,
    updated_at text NOT NULL
);
CREATE INDEX rm_drift_policies_tenant ON rm_drift_policies (tenant, scope);
