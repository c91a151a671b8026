//! Drift snapshot payloads (DOMAIN.md §2.2, §6), outside the event log.
//!
//! A drift check that opens an incident stores what it saw (the drifted workflows
//! and their diffs) here, under its SHA-256 digest; the incident's `detected` event
//! keeps only the digest. Retention deletes a payload once every incident that
//! refers to it has been closed long enough, and appends `incident.payload_purged`:
//! the log is never edited, and its hash chain stays verifiable.

use chrono::{DateTime, Utc};
use eventstore::sql::{fmt_time, Dialect, Sql};
use sha2::{Digest, Sha256};

use eventstore::Store;

/// The payload store.
#[derive(Clone)]
pub struct Snapshots {
    store: Store,
}

/// The hex SHA-256 of a payload: the digest its incident records.
pub fn digest(payload: &str) -> String {
    hex::encode(Sha256::digest(payload.as_bytes()))
}

impl Snapshots {
    pub fn new(store: Store) -> Snapshots {
        Snapshots { store }
    }

    /// Stores `payload` for `tenant` and returns its digest. Storing the same payload
    /// twice keeps the first (same digest, same bytes).
    pub async fn put(&self, tenant: &str, payload: &str) -> Result<String, sqlx::Error> {
        let digest = digest(payload);
        let mut sql = Sql::new(Dialect::of(&self.store));
        let args = [
            sql.arg(tenant),
            sql.arg(digest.as_str()),
            sql.arg(payload),
            sql.arg(fmt_time(Utc::now())),
        ];
        sql.push(&format!(
            "INSERT INTO drift_snapshots (tenant, digest, payload, recorded_at) \
             VALUES ({}) ON CONFLICT (tenant, digest) DO NOTHING",
            args.join(", ")
        ));
        sql.execute(&self.store).await?;
        Ok(digest)
    }

    /// The payload `digest` of `tenant`; `None` once purged (or never stored).
    pub async fn get(&self, tenant: &str, digest: &str) -> Result<Option<String>, sqlx::Error> {
        let mut sql = Sql::new(Dialect::of(&self.store));
        let (t, d) = (sql.arg(tenant), sql.arg(digest));
        sql.push(&format!(
            "SELECT payload FROM drift_snapshots WHERE tenant = {t} AND digest = {d}"
        ));
        let rows: Vec<(String,)> = sql.fetch_as(&self.store).await?;
        Ok(rows.into_iter().next().map(|(payload,)| payload))
    }

    /// Deletes the payload `digest` of `tenant`.
    pub async fn delete(&self, tenant: &str, digest: &str) -> Result<u64, sqlx::Error> {
        let mut sql = Sql::new(Dialect::of(&self.store));
        let (t, d) = (sql.arg(tenant), sql.arg(digest));
        sql.push(&format!(
            "DELETE FROM drift_snapshots WHERE tenant = {t} AND digest = {d}"
        ));
        sql.execute(&self.store).await
    }

    /// Deletes payloads stored before `before` that no unpurged incident refers to:
    /// a check whose drift updated an incident that was already open (that incident
    /// keeps its snapshot from detection), or a check whose incident command failed.
    pub async fn delete_unreferenced(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        let mut sql = Sql::new(Dialect::of(&self.store));
        let (at, purged) = (sql.arg(fmt_time(before)), sql.arg(false));
        sql.push(&format!(
            "DELETE FROM drift_snapshots WHERE recorded_at < {at} AND NOT EXISTS \
             (SELECT 1 FROM rm_incidents i WHERE i.tenant = drift_snapshots.tenant \
              AND i.snapshot_digest = drift_snapshots.digest AND i.payload_purged = {purged})"
        ));
        sql.execute(&self.store).await
    }
}
