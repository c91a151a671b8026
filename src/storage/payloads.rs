//! Content-addressed payloads outside the event log (DOMAIN.md §2.2, §6): the drift
//! snapshots (`drift_snapshots`) and the deployments' snapshots of their targets
//! (`workflow_snapshots`, [`Payloads::workflow_snapshots`]), each in its own table.
//! Retention only ever looks at the drift snapshots: a deployment's snapshot is what
//! a rollback or a restore needs, and is kept.
//!
//! A drift check that opens an incident stores what it saw (the drifted workflows
//! and their diffs) here, under its SHA-256 digest; the incident's `detected` event
//! keeps only the digest. Retention (`scheduler::retention`, decided from the log)
//! deletes a payload once every incident that refers to it has been closed long
//! enough, and appends `incident.payload_purged`: the log is never edited, and its
//! hash chain stays verifiable.

use chrono::{DateTime, Utc};
use eventstore::sql::{fmt_time, Dialect, Sql};
use sha2::{Digest, Sha256};

use eventstore::Store;

/// One payload table.
#[derive(Clone)]
pub struct Payloads {
    store: Store,
    table: &'static str,
}

/// The hex SHA-256 of a payload: the digest its incident records.
pub fn digest(payload: &str) -> String {
    hex::encode(Sha256::digest(payload.as_bytes()))
}

impl Payloads {
    /// The drift snapshots.
    pub fn new(store: Store) -> Payloads {
        Payloads {
            store,
            table: "drift_snapshots",
        }
    }

    /// The deployments' snapshots of their targets (never purged by retention).
    pub fn workflow_snapshots(store: Store) -> Payloads {
        Payloads {
            store,
            table: "workflow_snapshots",
        }
    }

    /// Stores `payload` for `tenant` and returns its digest. Storing the same payload
    /// twice keeps the bytes (same digest) and makes the payload young again, so the
    /// grace period before an unreferenced payload is deleted starts over.
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
            "INSERT INTO {} (tenant, digest, payload, recorded_at) \
             VALUES ({}) ON CONFLICT (tenant, digest) DO UPDATE SET recorded_at = excluded.recorded_at",
            self.table,
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
            "SELECT payload FROM {} WHERE tenant = {t} AND digest = {d}",
            self.table
        ));
        let rows: Vec<(String,)> = sql.fetch_as(&self.store).await?;
        Ok(rows.into_iter().next().map(|(payload,)| payload))
    }

    /// Deletes the payload `digest` of `tenant`.
    pub async fn delete(&self, tenant: &str, digest: &str) -> Result<u64, sqlx::Error> {
        let mut sql = Sql::new(Dialect::of(&self.store));
        let (t, d) = (sql.arg(tenant), sql.arg(digest));
        sql.push(&format!(
            "DELETE FROM {} WHERE tenant = {t} AND digest = {d}",
            self.table
        ));
        sql.execute(&self.store).await
    }

    /// Deletes payloads stored before `before` for which `referenced(tenant, digest)`
    /// is false: a check whose drift updated an incident that was already open (that
    /// incident keeps its snapshot from detection), or a check whose incident
    /// command failed. The caller decides what is referenced (from the log).
    pub async fn delete_unreferenced(
        &self,
        before: DateTime<Utc>,
        referenced: impl Fn(&str, &str) -> bool,
    ) -> Result<u64, sqlx::Error> {
        let mut sql = Sql::new(Dialect::of(&self.store));
        let at = sql.arg(fmt_time(before));
        sql.push(&format!(
            "SELECT tenant, digest FROM {} WHERE recorded_at < {at}",
            self.table
        ));
        let old: Vec<(String, String)> = sql.fetch_as(&self.store).await?;
        let mut deleted = 0;
        for (tenant, digest) in old {
            if referenced(&tenant, &digest) {
                continue;
            }
            // still old: a payload stored again meanwhile is young, and kept
            let mut sql = Sql::new(Dialect::of(&self.store));
            let (t, d, at) = (
                sql.arg(tenant.as_str()),
                sql.arg(digest.as_str()),
                sql.arg(fmt_time(before)),
            );
            sql.push(&format!(
                "DELETE FROM {} WHERE tenant = {t} AND digest = {d} AND recorded_at < {at}",
                self.table
            ));
            deleted += sql.execute(&self.store).await?;
        }
        Ok(deleted)
    }
}
