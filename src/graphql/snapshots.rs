//! Snapshots (DOMAIN.md §5): the target workflows a deployment kept before and after
//! it ran. Their content is read from the payload store and checked against the
//! digest the deployment's event recorded.

use async_graphql::connection::Connection;
use async_graphql::{Context, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use projections::models::snapshots::{self as model, SnapshotRow};

use super::types::{arg, connection, LocalIdArg, SnapshotKind};
use super::{app, caller, wait_for, ApiError};
use crate::storage::payloads::Payloads;
use crate::workflows::deployment::snapshot;

pub struct Snapshot(pub SnapshotRow);

/// One workflow as the snapshot holds it.
#[derive(SimpleObject)]
pub struct SnapshotWorkflow {
    pub canonical_id: String,
    pub name: String,
    /// Its id in the environment; null: the environment did not have it.
    #[graphql(name = "n8nWorkflowId")]
    pub n8n_workflow_id: Option<String>,
    pub active: bool,
    pub content_hash: Option<String>,
    /// The workflow as the environment's n8n returned it.
    pub workflow: Option<async_graphql::Json<serde_json::Value>>,
}

#[Object]
impl Snapshot {
    async fn id(&self) -> ID {
        ID(self.0.snapshot_id.clone())
    }
    async fn environment_id(&self) -> ID {
        ID(self.0.environment_id.clone())
    }
    async fn deployment_id(&self) -> ID {
        ID(self.0.deployment_id.clone())
    }
    async fn promotion_id(&self) -> ID {
        ID(self.0.promotion_id.clone())
    }
    /// `PRE`: before the deployment touched anything; `POST`: after it succeeded.
    async fn kind(&self) -> SnapshotKind {
        self.0.kind.into()
    }
    /// SHA-256 of the content (recorded in the deployment's event).
    async fn digest(&self) -> &str {
        &self.0.digest
    }
    async fn workflow_count(&self) -> i64 {
        self.0.workflows
    }
    async fn taken_at(&self) -> DateTime<Utc> {
        self.0.taken_at
    }
    /// The workflows it holds, read from the payload store and checked against the
    /// digest (a snapshot that does not verify is an error, never shown).
    async fn workflows(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SnapshotWorkflow>> {
        let payloads = Payloads::workflow_snapshots(app(ctx)?.store.clone());
        let content = snapshot::load(
            &payloads,
            &self.0.tenant,
            &self.0.snapshot_id,
            &self.0.digest,
        )
        .await
        .map_err(|e| {
            ApiError::Domain(aggregates::kernel::error::DomainError::Unavailable(
                e.to_string(),
            ))
        })?;
        Ok(content
            .workflows
            .into_iter()
            .map(|w| SnapshotWorkflow {
                canonical_id: w.canonical_id,
                name: w.name,
                n8n_workflow_id: w.n8n_id,
                active: w.active,
                content_hash: w.content_hash,
                workflow: w.workflow.map(async_graphql::Json),
            })
            .collect())
    }
}

pub async fn load_snapshot(ctx: &Context<'_>, id: &str) -> Result<Option<Snapshot>, ApiError> {
    let row = model::snapshot(&app(ctx)?.store, caller(ctx)?.tenant(), id).await?;
    Ok(row.map(Snapshot))
}

#[derive(Default)]
pub struct SnapshotQuery;

#[Object]
impl SnapshotQuery {
    /// Snapshots of one environment, newest first.
    #[graphql(complexity = "super::list_cost(first, child_complexity)")]
    async fn snapshots(
        &self,
        ctx: &Context<'_>,
        environment_id: LocalIdArg<arg::EnvironmentId>,
        first: Option<i32>,
        after: Option<String>,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Connection<String, Snapshot>> {
        wait_for(ctx, model::NAME, min_position).await?;
        let page = model::snapshots(
            &app(ctx)?.store,
            caller(ctx)?.tenant(),
            environment_id.as_str(),
            super::types::first(first),
            after.as_deref(),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, Snapshot))
    }

    async fn snapshot(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Option<Snapshot>> {
        wait_for(ctx, model::NAME, min_position).await?;
        Ok(load_snapshot(ctx, id.as_str()).await?)
    }
}
