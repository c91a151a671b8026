-- Credentials of the environments (n8n API keys, Git tokens): never in events, logs
-- or responses. Each is sealed with ChaCha20-Poly1305 under the service's secret key;
-- the additional data binds a ciphertext to its tenant and id, so a row copied to
-- another tenant or id does not open. Events refer to a secret by its id only.
CREATE TABLE secrets
(
    id         text PRIMARY KEY,
    tenant     text NOT NULL,
    kind       text NOT NULL,
    nonce      blob NOT NULL,
    ciphertext blob NOT NULL,
    created_at text NOT NULL
);
