//! Snapshots: the target workflows each deployment kept before and after it ran
//! (their content lives in the `workflow_snapshots` payload table under the digest).

use aggregates::deployment::{DeploymentEvent, SnapshotKind};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Envelope;
use crate::query::{by_id, newest_first, Page, QueryError};
use crate::read_model_row;
use crate::runtime::ApplyError;
use crate::sql::{KeyedRow, Rows, Tx};
use eventstore::Store;

pub const NAME: &str = "snapshots";

read_model_row! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct SnapshotRow in "rm_snapshots" {
        /// `{tenant}:{snapshot id}`.
        pub id: String,
        pub tenant: String,
        pub snapshot_id: String,
        pub environment_id: String,
        pub deployment_id: String,
        pub promotion_id: String,
        pub kind: SnapshotKind,
        /// SHA-256 of the content.
        pub digest: String,
        pub workflows: i64,
        pub taken_at: DateTime<Utc>,
    }
}

impl KeyedRow for SnapshotRow {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Default)]
pub struct Snapshots {
    snapshots: Rows<SnapshotRow>,
}

impl Snapshots {
    async fn fold(
        &mut self,
        _tx: &mut Tx,
        event: &Envelope,
        e: &DeploymentEvent,
    ) -> Result<(), ApplyError> {
        if let DeploymentEvent::SnapshotTaken {
            kind,
            environment_id,
            promotion_id,
            snapshot_id,
            digest,
            workflows,
        } = e
        {
            let tenant = event.tenant().to_string();
            self.snapshots.put(SnapshotRow {
                id: format!("{tenant}:{snapshot_id}"),
                tenant,
                snapshot_id: snapshot_id.clone(),
                environment_id: environment_id.clone(),
                deployment_id: event.local_id().to_string(),
                promotion_id: promotion_id.clone(),
                kind: *kind,
                digest: digest.clone(),
                workflows: i64::from(*workflows),
                taken_at: event.at(),
            });
        }
        Ok(())
    }
}

crate::single_aggregate_projection!(
    Snapshots,
    NAME,
    "rm_snapshots",
    snapshots,
    Deployment,
    "deployment"
);

/// Snapshots of one environment of `tenant`, newest first.
pub async fn snapshots(
    store: &Store,
    tenant: &str,
    environment_id: &str,
    first: i64,
    after: Option<&str>,
) -> Result<Page<SnapshotRow>, QueryError> {
    let filters = [("environment_id", Some(environment_id.to_string()))];
    newest_first(store, tenant, "taken_at", &filters, first, after).await
}

pub async fn snapshot(
    store: &Store,
    tenant: &str,
    snapshot_id: &str,
) -> Result<Option<SnapshotRow>, QueryError> {
    by_id(store, tenant, snapshot_id).await
}
