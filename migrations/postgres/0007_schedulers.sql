-- Drift snapshot payloads (DOMAIN.md §2.2, §6), addressed by their SHA-256 digest.
-- The incident's events keep only the digest, so retention can delete a payload here
-- (and append incident.payload_purged) without ever editing the log.
CREATE TABLE drift_snapshots
(
    tenant      text COLLATE "C" NOT NULL,
    digest      text COLLATE "C" NOT NULL,
    payload     text NOT NULL,
    recorded_at text NOT NULL,
    PRIMARY KEY (tenant, digest)
);

-- The incident read model learns the snapshot digest. Its rows are emptied and its
-- checkpoint reset, so the projector replays the incidents with the new column.
ALTER TABLE rm_incidents ADD COLUMN snapshot_digest text;
DELETE FROM rm_incidents;
UPDATE projection_checkpoints
SET tx_id = 0, position = 0, events_applied = 0, updated_at = NULL,
    failed_position = NULL, failed_event = NULL, failed_error = NULL
WHERE name = 'incidents';

-- One row per scheduler tick that ran: (job, slot) is the primary key, so with
-- several service processes on one database each tick is claimed by exactly one.
CREATE TABLE scheduler_ticks
(
    job         text COLLATE "C" NOT NULL,
    slot        bigint NOT NULL,
    instance    text NOT NULL,
    started_at  text NOT NULL,
    finished_at text,
    outcome     text,
    PRIMARY KEY (job, slot)
);
