//! Credentials of the environments (n8n API keys, Git tokens), sealed in their own
//! table (DOMAIN.md §1: never in events, logs, responses or error messages).
//!
//! Each value is encrypted with ChaCha20-Poly1305 under a key derived (SHA-256) from
//! the service's secret key — `WORKFLOWOPS_SECRET_KEY`, or `secret-key` in the data
//! directory, generated on first start. The additional authenticated data is
//! `tenant:id`, so a ciphertext moved to another row does not open. Events carry
//! only the secret's id (`n8n_secret_ref`, `git_secret_ref`).

use aggregates::kernel::ids::{LocalId, TenantId};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
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
}

impl SecretKind {
    fn as_str(self) -> &'static str {
        match self {
            SecretKind::N8nApiKey => "n8n_api_key",
            SecretKind::GitToken => "git_token",
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

/// The sealed-secrets table.
#[derive(Clone)]
pub struct SecretStore {
    store: Store,
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretStore { .. }")
    }
}

impl SecretStore {
    /// `key`: the service's secret key (any length; hashed to 256 bits).
    pub fn new(store: Store, key: &[u8]) -> SecretStore {
        let derived = Sha256::digest(key);
        SecretStore {
            store,
            cipher: ChaCha20Poly1305::new(Key::from_slice(&derived)),
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
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce)
            .map_err(|e| SecretError::Undecryptable(format!("no randomness: {e}")))?;
        let aad = Self::aad(tenant, &id);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.expose().as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Undecryptable(id.to_string()))?;
        let created_at = chrono::Utc::now().to_rfc3339();
        let sql = "INSERT INTO secrets (id, tenant, kind, nonce, ciphertext, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6)";
        match &self.store {
            Store::Postgres(PgStore { pool, .. }) => {
                sqlx::query(sql)
                    .bind(id.as_str())
                    .bind(tenant.as_str())
                    .bind(kind.as_str())
                    .bind(&nonce[..])
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
                    .bind(&nonce[..])
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
        if nonce.len() != 12 {
            return Err(SecretError::Undecryptable(id.into()));
        }
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Undecryptable(id.into()))?;
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
}
