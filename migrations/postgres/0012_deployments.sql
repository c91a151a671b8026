-- Deployments that run (issue 14).
--
-- The full JSON of the target workflows a deployment may touch, before and after,
-- addressed by SHA-256 like the drift snapshots; the deployment's events keep the
-- digest. Retention never purges these: rollbacks and restores read them.
CREATE TABLE workflow_snapshots
(
    tenant      text COLLATE "C" NOT NULL,
    digest      text COLLATE "C" NOT NULL,
    payload     text NOT NULL,
    recorded_at text NOT NULL,
    PRIMARY KEY (tenant, digest)
);

-- The snapshots, listed by environment.
CREATE TABLE rm_snapshots
(
    id             text COLLATE "C" PRIMARY KEY,
    tenant         text COLLATE "C" NOT NULL,
    snapshot_id    text COLLATE "C" NOT NULL,
    environment_id text COLLATE "C" NOT NULL,
    deployment_id  text NOT NULL,
    promotion_id   text NOT NULL,
    kind           text NOT NULL,
    digest         text NOT NULL,
    workflows      bigint NOT NULL,
    taken_at       text NOT NULL
);
CREATE INDEX rm_snapshots_environment ON rm_snapshots (tenant, environment_id, taken_at, id);

-- A deployment's phase and progress (gates, snapshots, verification, rollback, Git),
-- and its target. Replayed: the deployments read model starts over.
ALTER TABLE rm_deployments ADD COLUMN phase text NOT NULL DEFAULT 'waiting';
ALTER TABLE rm_deployments ADD COLUMN progress text NOT NULL DEFAULT '{}';
DELETE FROM rm_deployments;
UPDATE projection_checkpoints
SET tx_id = 0, position = 0, events_applied = 0, updated_at = NULL,
    failed_position = NULL, failed_event = NULL, failed_error = NULL
WHERE name = 'deployments';

-- The environment's promotion slot (the running deployment) and pin.
ALTER TABLE rm_environments ADD COLUMN running_deployment_id text;
ALTER TABLE rm_environments ADD COLUMN running_promotion_id text;
ALTER TABLE rm_environments ADD COLUMN pinned text;

-- The deployment scheduler's sweep: due scheduled deployments, long-running ones.
CREATE INDEX rm_deployments_status ON rm_deployments (status, scheduled_for, started_at);
