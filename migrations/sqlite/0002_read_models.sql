-- See the PostgreSQL migration for comments; SQLite wakes readers in process.
-- One row per projection: how far it has applied the log, written in the same
-- transaction as its read-model changes. `failed_*` says where it stopped and why.
CREATE TABLE projection_checkpoints
(
    name            text PRIMARY KEY,
    tx_id           integer NOT NULL DEFAULT 0,
    position        integer NOT NULL DEFAULT 0,
    events_applied  integer NOT NULL DEFAULT 0,
    updated_at      text,
    failed_position integer,
    failed_event    text,
    failed_error    text
) STRICT;

-- Read models. Times are RFC 3339 text with microseconds (fixed width, so they sort
-- as times), the same on both backends; JSON columns are text.
CREATE TABLE rm_matrix_rows
(
    id              text PRIMARY KEY,
    tenant          text NOT NULL,
    kind            text NOT NULL,
    canonical_id    text,
    environment_id  text,
    n8n_workflow_id text,
    name            text NOT NULL,
    sort_key        text NOT NULL,
    slug            text,
    status          text NOT NULL,
    git_path        text,
    git_content_hash text,
    git_commit_sha  text,
    git_changed_at  text,
    created_at      text NOT NULL,
    updated_at      text NOT NULL
) STRICT;
CREATE INDEX rm_matrix_rows_page ON rm_matrix_rows (tenant, sort_key, id);

CREATE TABLE rm_matrix_cells
(
    id               text PRIMARY KEY,
    tenant           text NOT NULL,
    row_id           text NOT NULL,
    environment_id   text NOT NULL,
    n8n_workflow_id  text NOT NULL,
    canonical_id     text,
    name             text NOT NULL,
    status           text NOT NULL,
    env_content_hash text,
    git_content_hash text,
    env_changed_at   text,
    status_since     text NOT NULL,
    updated_at       text NOT NULL
) STRICT;
CREATE INDEX rm_matrix_cells_row ON rm_matrix_cells (row_id, environment_id);
CREATE INDEX rm_matrix_cells_env ON rm_matrix_cells (tenant, environment_id);

CREATE TABLE rm_environments
(
    id                     text PRIMARY KEY,
    tenant                 text NOT NULL,
    environment_id         text NOT NULL,
    name                   text NOT NULL,
    class                  text NOT NULL,
    status                 text NOT NULL,
    git_configured         integer NOT NULL,
    onboarded              integer NOT NULL,
    drift_status           text NOT NULL,
    drift_status_since     text NOT NULL,
    in_sync                integer NOT NULL,
    with_drift             integer NOT NULL,
    not_in_git             integer NOT NULL,
    linked_mappings        integer NOT NULL,
    last_drift_check_at    text,
    last_drift_check_error text,
    last_sync_at           text,
    last_repository_sync_at text,
    active_incident_id     text,
    active_incident_status text,
    registered_at          text NOT NULL,
    updated_at             text NOT NULL
) STRICT;
CREATE INDEX rm_environments_tenant ON rm_environments (tenant, name, id);

-- Which environment an incident belongs to (incident events after the first do not
-- carry it); part of the environment-status projection.
CREATE TABLE rm_environment_incidents
(
    id             text PRIMARY KEY,
    environment_row text NOT NULL
) STRICT;

CREATE TABLE rm_incidents
(
    id                 text PRIMARY KEY,
    tenant             text NOT NULL,
    incident_id        text NOT NULL,
    environment_id     text NOT NULL,
    status             text NOT NULL,
    severity           text NOT NULL,
    sla_state          text NOT NULL,
    sla_deadline       text NOT NULL,
    affected_count     integer NOT NULL,
    affected_workflows text NOT NULL,
    detected_at        text NOT NULL,
    acknowledged_at    text,
    stabilized_at      text,
    reconciled_at      text,
    closed_at          text,
    owner_user_id      text,
    ticket_ref         text,
    expires_at         text,
    resolution_type    text,
    resolution_details text,
    reason             text,
    pending_approval   text,
    admin_override     integer NOT NULL,
    payload_purged     integer NOT NULL,
    updated_at         text NOT NULL
) STRICT;
CREATE INDEX rm_incidents_page ON rm_incidents (tenant, detected_at, id);

CREATE TABLE rm_promotions
(
    id                    text PRIMARY KEY,
    tenant                text NOT NULL,
    promotion_id          text NOT NULL,
    pipeline_id           text NOT NULL,
    source_environment_id text NOT NULL,
    target_environment_id text NOT NULL,
    status                text NOT NULL,
    workflows             text NOT NULL,
    gate_results          text,
    requires_approval     integer NOT NULL,
    bypass_validation     integer NOT NULL,
    created_by            text NOT NULL,
    approved_by           text,
    rejected_by           text,
    reason                text,
    deployment_id         text,
    result                text,
    inconsistencies       text,
    created_at            text NOT NULL,
    started_at            text,
    finished_at           text,
    updated_at            text NOT NULL
) STRICT;
CREATE INDEX rm_promotions_page ON rm_promotions (tenant, created_at, id);

CREATE TABLE rm_deployments
(
    id            text PRIMARY KEY,
    tenant        text NOT NULL,
    deployment_id text NOT NULL,
    promotion_id  text NOT NULL,
    status        text NOT NULL,
    scheduled_for text,
    started_at    text,
    finished_at   text,
    workflows     text NOT NULL,
    reason        text,
    created_at    text NOT NULL,
    updated_at    text NOT NULL
) STRICT;
CREATE INDEX rm_deployments_page ON rm_deployments (tenant, created_at, id);

CREATE TABLE rm_audit
(
    position       integer PRIMARY KEY,
    tenant         text NOT NULL,
    recorded_at    text NOT NULL,
    actor          text NOT NULL,
    actor_role     text NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       integer NOT NULL,
    event_type     text NOT NULL,
    from_status    text,
    to_status      text,
    reason         text,
    admin_override integer NOT NULL,
    correlation_id text,
    causation_id   text,
    tx_id          integer NOT NULL
) STRICT;
CREATE INDEX rm_audit_log ON rm_audit (tenant, tx_id, position);
CREATE INDEX rm_audit_aggregate ON rm_audit (tenant, aggregate_type, aggregate_id, tx_id, position);
CREATE INDEX rm_audit_actor ON rm_audit (tenant, actor, tx_id, position);
