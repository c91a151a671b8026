//! Snapshots of a deployment's target: the full JSON of every target workflow the
//! promotion may touch, kept before (`pre`) and after (`post`) it runs.
//!
//! A snapshot is stored content-addressed in the `workflow_snapshots` payload table
//! (SHA-256 of its bytes); the deployment's `snapshot_taken` event keeps the digest.
//! Reading one back checks the bytes against the digest: a snapshot that does not
//! verify is never used to restore anything.

use aggregates::deployment::SnapshotKind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::storage::payloads::{digest, Payloads};

/// One promoted workflow as the target held it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotWorkflow {
    /// The canonical workflow the promotion deploys.
    pub canonical_id: String,
    /// Its name in the promotion.
    pub name: String,
    /// Its id in the target; `None`: the target did not have it.
    pub n8n_id: Option<String>,
    pub active: bool,
    /// Content hash of what a write would send ([`crate::connectors::n8n::update_body`]),
    /// the comparison every step makes.
    pub content_hash: Option<String>,
    /// The workflow as the target's `GET` returned it.
    pub workflow: Option<Value>,
}

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub snapshot_id: String,
    pub environment_id: String,
    pub deployment_id: String,
    pub kind: SnapshotKind,
    pub taken_at: DateTime<Utc>,
    pub workflows: Vec<SnapshotWorkflow>,
}

impl Snapshot {
    pub fn workflow(&self, canonical_id: &str) -> Option<&SnapshotWorkflow> {
        self.workflows
            .iter()
            .find(|w| w.canonical_id == canonical_id)
    }
}

/// Why a snapshot cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {0} is not in the payload store")]
    Missing(String),
    #[error("snapshot {0} does not verify against its digest")]
    Corrupt(String),
    #[error("snapshot {id} cannot be read: {reason}")]
    Unreadable { id: String, reason: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Stores `snapshot` for `tenant`; returns its digest.
pub async fn store(
    payloads: &Payloads,
    tenant: &str,
    snapshot: &Snapshot,
) -> Result<String, SnapshotError> {
    let text = serde_json::to_string(snapshot).map_err(|e| SnapshotError::Unreadable {
        id: snapshot.snapshot_id.clone(),
        reason: e.to_string(),
    })?;
    Ok(payloads.put(tenant, &text).await?)
}

/// The snapshot stored under `digest`, checked against it.
pub async fn load(
    payloads: &Payloads,
    tenant: &str,
    snapshot_id: &str,
    expected: &str,
) -> Result<Snapshot, SnapshotError> {
    let text = payloads
        .get(tenant, expected)
        .await?
        .ok_or_else(|| SnapshotError::Missing(snapshot_id.to_string()))?;
    if digest(&text) != expected {
        return Err(SnapshotError::Corrupt(snapshot_id.to_string()));
    }
    serde_json::from_str(&text).map_err(|e| SnapshotError::Unreadable {
        id: snapshot_id.to_string(),
        reason: e.to_string(),
    })
}
