//! Deployments: each deployment's current state, schedule and per-workflow results.

use aggregates::deployment::{DeploymentEvent, DeploymentStatus, DeploymentWorkflow};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Envelope;
use crate::query::{by_id, newest_first, Page, QueryError};
use crate::read_model_row;
use crate::runtime::ApplyError;
use crate::sql::{Json, KeyedRow, Rows, Tx};
use eventstore::Store;

pub const NAME: &str = "deployments";

read_model_row! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct DeploymentRow in "rm_deployments" {
        pub id: String,
        pub tenant: String,
        pub deployment_id: String,
        pub promotion_id: String,
        pub status: DeploymentStatus,
        pub scheduled_for: Option<DateTime<Utc>>,
        pub started_at: Option<DateTime<Utc>>,
        pub finished_at: Option<DateTime<Utc>>,
        /// JSON list of `{workflow_id, name, status, error}`.
        pub workflows: Json<Vec<DeploymentWorkflow>>,
        pub reason: Option<String>,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
    }
}

impl KeyedRow for DeploymentRow {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Default)]
pub struct Deployments {
    deployments: Rows<DeploymentRow>,
}

impl Deployments {
    async fn fold(
        &mut self,
        tx: &mut Tx,
        event: &Envelope,
        e: &DeploymentEvent,
    ) -> Result<(), ApplyError> {
        use DeploymentEvent::*;
        let id = &event.stored.aggregate_id;
        let at = event.at();
        let mut row = match (self.deployments.get(tx, id).await?, e) {
            (
                None,
                Created {
                    promotion_id,
                    scheduled_for,
                    workflows,
                    ..
                },
            ) => DeploymentRow {
                id: id.clone(),
                tenant: event.tenant().to_string(),
                deployment_id: event.local_id().to_string(),
                promotion_id: promotion_id.clone(),
                // set from the event's status change below
                status: DeploymentStatus::Pending,
                scheduled_for: *scheduled_for,
                started_at: None,
                finished_at: None,
                workflows: Json(workflows.clone()),
                reason: None,
                created_at: at,
                updated_at: at,
            },
            (Some(row), _) => row,
            (None, _) => {
                return Err(ApplyError::Event(format!(
                    "deployment {id} was never created"
                )))
            }
        };
        match e {
            Created { .. } => {}
            Started { at: started, .. } => row.started_at = Some(*started),
            WorkflowResultRecorded {
                workflow_id,
                status,
                error,
            } => {
                let Some(workflow) = row
                    .workflows
                    .iter_mut()
                    .find(|w| &w.workflow_id == workflow_id)
                else {
                    return Err(ApplyError::Event(format!(
                        "deployment {id} has no workflow {workflow_id}"
                    )));
                };
                workflow.status = *status;
                workflow.error = error.clone();
            }
            Finished {
                at: done, reason, ..
            } => {
                row.finished_at = Some(*done);
                row.reason = reason.clone();
            }
            Cancelled { reason, .. } => {
                row.finished_at = Some(at);
                row.reason = reason.clone();
            }
        }
        if let Some((_, to)) = e.status_change() {
            row.status = to;
        }
        row.updated_at = at;
        self.deployments.put(row);
        Ok(())
    }
}

crate::single_aggregate_projection!(
    Deployments,
    NAME,
    "rm_deployments",
    deployments,
    Deployment,
    "deployment"
);

/// Deployments of `tenant`, newest first, optionally of one promotion or status.
pub async fn deployments(
    store: &Store,
    tenant: &str,
    promotion_id: Option<&str>,
    status: Option<DeploymentStatus>,
    first: i64,
    after: Option<&str>,
) -> Result<Page<DeploymentRow>, QueryError> {
    let filters = [
        ("promotion_id", promotion_id.map(str::to_string)),
        ("status", status.map(|s| s.as_str().to_string())),
    ];
    newest_first(store, tenant, "created_at", &filters, first, after).await
}

pub async fn deployment(
    store: &Store,
    tenant: &str,
    deployment_id: &str,
) -> Result<Option<DeploymentRow>, QueryError> {
    by_id(store, tenant, deployment_id).await
}
