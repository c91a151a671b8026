//! Credentials of the environments (n8n API keys, Git tokens), sealed in their own
//! table (DOMAIN.md §1: never in events, logs, responses or error messages).
//!
//! Each value is encrypted with ChaCha20-Poly1305 under a key derived from the
//! service's secret key — `WORKFLOWOPS_SECRET_KEY`, or `secret-key` in the data
//! directory, generated on first start. The additional authenticated data is
//! `tenant:id`, so a ciphertext moved to another row does not open. Events carry
//! only the secret's id (`n8n_secret_ref`, `git_secret_ref`).
//!
//! The sealed format is versioned by the length of the `nonce` column, so rows
//! written before a change of key derivation stay readable without a migration:
//!
//! | version | `nonce` column | sealing key |
//! | --- | --- | --- |
//! | 1 (read only) | the 12-byte nonce | SHA-256(secret key) |
//! | 2 (every new seal) | `0x02` ‖ the 12-byte nonce | HKDF-SHA256(salt [`HKDF_SALT`], secret key, info [`HKDF_INFO`]) |

use aggregates::kernel::ids::{LocalId, TenantId};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use eventstore::{PgStore, SqliteStore, Store, StoreError};

/// A secret value: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that sends it (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What a secret is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    N8nApiKey,
    GitToken,
    /// A webhook endpoint's signing secret (`whsec_…`).
    WebhookSecret,
    /// A notification channel's URL (a Slack incoming webhook's URL is its key).
    ChannelUrl,
}

impl SecretKind {
    fn as_str(self) -> &'static str {
        match self {
            SecretKind::N8nApiKey => "n8n_api_key",
            SecretKind::GitToken => "git_token",
            SecretKind::WebhookSecret => "webhook_secret",
            SecretKind::ChannelUrl => "channel_url",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The row does not open with this key (another key, or the row was tampered with).
    #[error("secret {0} cannot be decrypted with the configured secret key")]
    Undecryptable(String),
}

impl From<sqlx::Error> for SecretError {
    fn from(e: sqlx::Error) -> Self {
        SecretError::Store(StoreError::Database(e))
    }
}

/// HKDF salt of the version 2 sealing key (fixed: changing it makes every sealed
/// secret unreadable).
pub const HKDF_SALT: &[u8] = b"workflowops secret store";
/// HKDF info of the version 2 sealing key: what the derived key is for.
pub const HKDF_INFO: &[u8] = b"workflowops secrets v2: ChaCha20-Poly1305 sealing key";

/// Version byte that starts the `nonce` column of a version 2 row.
const V2: u8 = 2;
const NONCE_LEN: usize = 12;

/// The sealing keys, one per sealed-format version.
#[derive(Clone)]
struct Sealer {
    /// Version 1: SHA-256 of the secret key. Only opens rows sealed before HKDF.
    v1: ChaCha20Poly1305,
    /// Version 2: HKDF-SHA256. Seals every new value.
    v2: ChaCha20Poly1305,
}

impl Sealer {
    fn new(key: &[u8]) -> Sealer {
        let v1 = Sha256::digest(key);
        let mut v2 = [0u8; 32];
        Hkdf::<Sha256>::new(Some(HKDF_SALT), key)
            .expand(HKDF_INFO, &mut v2)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Sealer {
            v1: ChaCha20Poly1305::new(Key::from_slice(&v1)),
            v2: ChaCha20Poly1305::new(Key::from_slice(&v2)),
        }
    }

    /// Seals `plain` (version 2): the `nonce` column and the ciphertext. `None` only
    /// if the system has no randomness or the cipher refuses.
    fn seal(&self, plain: &[u8], aad: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut header = [0u8; 1 + NONCE_LEN];
        header[0] = V2;
        getrandom::getrandom(&mut header[1..]).ok()?;
        let ciphertext = self
            .v2
            .encrypt(Nonce::from_slice(&header[1..]), Payload { msg: plain, aad })
            .ok()?;
        Some((header.to_vec(), ciphertext))
    }

    /// Opens a row of either version; `None` if it does not open (another key, a
    /// tampered row, an unknown version).
    fn open(&self, header: &[u8], ciphertext: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let (cipher, nonce) = match header {
            [V2, nonce @ ..] if nonce.len() == NONCE_LEN => (&self.v2, nonce),
            nonce if nonce.len() == NONCE_LEN => (&self.v1, nonce),
            _ => return None,
        };
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
    }
}

/// The sealed-secrets table.
#[derive(Clone)]
pub struct SecretStore {
    store: Store,
    sealer: Sealer,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretStore { .. }")
    }
}

impl SecretStore {
    /// `key`: the service's secret key (any length; see the module documentation
    /// for the key derivations).
    pub fn new(store: Store, key: &[u8]) -> SecretStore {
        SecretStore {
            store,
            sealer: Sealer::new(key),
        }
    }

    fn aad(tenant: &TenantId, id: &LocalId) -> String {
        format!("{}:{}", tenant.as_str(), id.as_str())
    }

    /// Seals and stores `value`; returns its new id.
    pub async fn put(
        &self,
        tenant: &TenantId,
        kind: SecretKind,
        value: &Secret,
    ) -> Result<LocalId, SecretError> {
        let id = LocalId::parse(format!("secret-{}", uuid::Uuid::new_v4().simple()))
            .map_err(|e| SecretError::Undecryptable(e.to_string()))?;
        let aad = Self::aad(tenant, &id);
        let (nonce, ciphertext) = self
            .sealer
            .seal(value.expose().as_bytes(), aad.as_bytes())
            .ok_or_else(|| SecretError::Undecryptable(id.to_string()))?;
        let created_at = chrono::Utc::now().to_rfc3339();
        let sql = "INSERT INTO secrets (id, tenant, kind, nonce, ciphertext, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6)";
        match &self.store {
            Store::Postgres(PgStore { pool, .. }) => {
                sqlx::query(sql)
                    .bind(id.as_str())
                    .bind(tenant.as_str())
                    .bind(kind.as_str())
                    .bind(&nonce)
                    .bind(&ciphertext)
                    .bind(&created_at)
                    .execute(pool)
                    .await?;
            }
            Store::Sqlite(sqlite @ SqliteStore { pool, .. }) => {
                let _turn = sqlite.write_turn().await;
                sqlx::query(&sql.replace('$', "?"))
                    .bind(id.as_str())
                    .bind(tenant.as_str())
                    .bind(kind.as_str())
                    .bind(&nonce)
                    .bind(&ciphertext)
                    .bind(&created_at)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(id)
    }

    /// The secret `id` of `tenant` (`None` if it is not the tenant's).
    pub async fn get(&self, tenant: &TenantId, id: &str) -> Result<Option<Secret>, SecretError> {
        let sql = "SELECT nonce, ciphertext FROM secrets WHERE id = $1 AND tenant = $2";
        let row: Option<(Vec<u8>, Vec<u8>)> = match &self.store {
            Store::Postgres(PgStore { pool, .. }) => {
                sqlx::query_as(sql)
                    .bind(id)
                    .bind(tenant.as_str())
                    .fetch_optional(pool)
                    .await?
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                sqlx::query_as(&sql.replace('$', "?"))
                    .bind(id)
                    .bind(tenant.as_str())
                    .fetch_optional(pool)
                    .await?
            }
        };
        let Some((nonce, ciphertext)) = row else {
            return Ok(None);
        };
        let local = LocalId::parse(id).map_err(|_| SecretError::Undecryptable(id.into()))?;
        let aad = Self::aad(tenant, &local);
        let plain = self
            .sealer
            .open(&nonce, &ciphertext, aad.as_bytes())
            .ok_or_else(|| SecretError::Undecryptable(id.into()))?;
        let value = String::from_utf8(plain).map_err(|_| SecretError::Undecryptable(id.into()))?;
        Ok(Some(Secret(value)))
    }

    /// Removes a secret (one that no event refers to: a registration that failed).
    pub async fn delete(&self, tenant: &TenantId, id: &LocalId) -> Result<(), SecretError> {
        let sql = "DELETE FROM secrets WHERE id = $1 AND tenant = $2";
        match &self.store {
            Store::Postgres(PgStore { pool, .. }) => {
                sqlx::query(sql)
                    .bind(id.as_str())
                    .bind(tenant.as_str())
                    .execute(pool)
                    .await?;
            }
            Store::Sqlite(sqlite @ SqliteStore { pool, .. }) => {
                let _turn = sqlite.write_turn().await;
                sqlx::query(&sql.replace('$', "?"))
                    .bind(id.as_str())
                    .bind(tenant.as_str())
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("n8n_api_0123456789");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }

    const KEY: &[u8] = b"the service secret key";
    const VALUE: &str = "n8n_api_0123456789";

    /// A row as the store wrote it before HKDF: a bare 12-byte nonce and the
    /// SHA-256 of the secret key as the sealing key.
    fn sealed_v1(key: &[u8], aad: &str) -> (Vec<u8>, Vec<u8>) {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&Sha256::digest(key)));
        let nonce = [7u8; 12];
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: VALUE.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .unwrap();
        (nonce.to_vec(), ciphertext)
    }

    #[test]
    fn old_seals_open_and_new_seals_use_hkdf() {
        let sealer = Sealer::new(KEY);
        let (nonce, ciphertext) = sealed_v1(KEY, "acme:secret-1");
        assert_eq!(
            sealer.open(&nonce, &ciphertext, b"acme:secret-1").unwrap(),
            VALUE.as_bytes()
        );
        assert!(sealer.open(&nonce, &ciphertext, b"acme:secret-2").is_none());

        let (header, ciphertext) = sealer.seal(VALUE.as_bytes(), b"acme:secret-1").unwrap();
        assert_eq!((header.len(), header[0]), (13, V2));
        // Sealed under HKDF-SHA256(salt, key, info), computed here independently…
        let mut okm = [0u8; 32];
        Hkdf::<Sha256>::new(Some(b"workflowops secret store"), KEY)
            .expand(
                b"workflowops secrets v2: ChaCha20-Poly1305 sealing key",
                &mut okm,
            )
            .unwrap();
        let hkdf = ChaCha20Poly1305::new(Key::from_slice(&okm));
        let payload = Payload {
            msg: &ciphertext[..],
            aad: &b"acme:secret-1"[..],
        };
        assert_eq!(
            hkdf.decrypt(Nonce::from_slice(&header[1..]), payload)
                .unwrap(),
            VALUE.as_bytes()
        );
        // …and not under the old SHA-256 derivation.
        let old = ChaCha20Poly1305::new(Key::from_slice(&Sha256::digest(KEY)));
        let payload = Payload {
            msg: &ciphertext[..],
            aad: &b"acme:secret-1"[..],
        };
        assert!(old
            .decrypt(Nonce::from_slice(&header[1..]), payload)
            .is_err());
        assert_eq!(
            sealer.open(&header, &ciphertext, b"acme:secret-1").unwrap(),
            VALUE.as_bytes()
        );
        // Another key, another row, an unknown version or a cut header: no.
        assert!(Sealer::new(b"other key")
            .open(&header, &ciphertext, b"acme:secret-1")
            .is_none());
        assert!(sealer
            .open(&header, &ciphertext, b"acme:secret-2")
            .is_none());
        let mut v3 = header.clone();
        v3[0] = 3;
        assert!(sealer.open(&v3, &ciphertext, b"acme:secret-1").is_none());
        assert!(sealer
            .open(&header[..12], &ciphertext, b"acme:secret-1")
            .is_none());
    }

    #[tokio::test]
    async fn the_store_reads_rows_sealed_before_hkdf() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("secrets.db"))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let secrets = SecretStore::new(store.clone(), KEY);
        let tenant = TenantId::parse("acme").unwrap();
        let Store::Sqlite(SqliteStore { pool, .. }) = &store else {
            unreachable!()
        };
        let (nonce, ciphertext) = sealed_v1(KEY, "acme:secret-old");
        sqlx::query(
            "INSERT INTO secrets (id, tenant, kind, nonce, ciphertext, created_at) \
             VALUES ('secret-old', 'acme', 'n8n_api_key', ?, ?, '2025-01-01T00:00:00Z')",
        )
        .bind(&nonce)
        .bind(&ciphertext)
        .execute(pool)
        .await
        .unwrap();
        let old = secrets.get(&tenant, "secret-old").await.unwrap().unwrap();
        assert_eq!(old.expose(), VALUE);

        let id = secrets
            .put(&tenant, SecretKind::GitToken, &Secret::new(VALUE))
            .await
            .unwrap();
        let (nonce,): (Vec<u8>,) = sqlx::query_as("SELECT nonce FROM secrets WHERE id = ?")
            .bind(id.as_str())
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!((nonce.len(), nonce[0]), (13, V2));
        let new = secrets.get(&tenant, id.as_str()).await.unwrap().unwrap();
        assert_eq!(new.expose(), VALUE);

        // The wrong key: a typed error that names the row, never the value.
        let other = SecretStore::new(store.clone(), b"another key");
        let err = other.get(&tenant, id.as_str()).await.unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(
            shown.contains(id.as_str()) && !shown.contains(VALUE),
            "{shown}"
        );
        store.close().await;
    }
}
