-- The credentials an environment's workflows reference, as its last sync saw them
-- (n8n 1.x cannot list credentials): a JSON list of {type, id, name}, sorted.
ALTER TABLE rm_environments ADD COLUMN known_credentials text NOT NULL DEFAULT '[]';

-- Credential mappings between two environments: one row per mapped source credential
-- (type and name) of a (source, target) pair. Listed by tenant, source and target.
CREATE TABLE rm_credential_mappings
(
    id                    text COLLATE "C" PRIMARY KEY,
    tenant                text COLLATE "C" NOT NULL,
    source_environment_id text COLLATE "C" NOT NULL,
    target_environment_id text COLLATE "C" NOT NULL,
    credential_type       text COLLATE "C" NOT NULL,
    source_name           text COLLATE "C" NOT NULL,
    target_id             text NOT NULL,
    target_name           text NOT NULL,
    updated_by            text NOT NULL,
    updated_at            text NOT NULL
);
CREATE INDEX rm_credential_mappings_pair
    ON rm_credential_mappings (tenant, source_environment_id, target_environment_id,
                               credential_type, source_name);
