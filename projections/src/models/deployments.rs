//! Deployments: each deployment's current state, schedule and per-workflow results.

use aggregates::deployment::{DeploymentEvent, DeploymentWorkflow};
use serde::{Deserialize, Serialize};

use crate::event::{json_text, name, Envelope};
use crate::query::{by_id, newest_first, Page, QueryError};
use crate::read_model_row;
use crate::runtime::ApplyError;
use crate::sql::{fmt_time, KeyedRow, Rows, Tx};
use eventstore::Store;

pub const NAME: &str = "deployments";

read_model_row! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct DeploymentRow in "rm_deployments" {
        pub id: String,
        pub tenant: String,
        pub deployment_id: String,
        pub promotion_id: String,
        pub status: String,
        pub scheduled_for: Option<String>,
        pub started_at: Option<String>,
        pub finished_at: Option<String>,
        /// JSON list of `{workflow_id, name, status, error}`.
        pub workflows: String,
        pub reason: Option<String>,
        pub created_at: String,
        pub updated_at: String,
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
                status: String::new(),
                scheduled_for: scheduled_for.map(fmt_time),
                started_at: None,
                finished_at: None,
                workflows: json_text(workflows),
                reason: None,
                created_at: at.clone(),
                updated_at: at.clone(),
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
            Started { at: started, .. } => row.started_at = Some(fmt_time(*started)),
            WorkflowResultRecorded {
                workflow_id,
                status,
                error,
            } => {
                let mut workflows: Vec<DeploymentWorkflow> =
                    serde_json::from_str(&row.workflows)
                        .map_err(|e| ApplyError::Event(format!("stored workflows of {id}: {e}")))?;
                let Some(workflow) = workflows.iter_mut().find(|w| &w.workflow_id == workflow_id)
                else {
                    return Err(ApplyError::Event(format!(
                        "deployment {id} has no workflow {workflow_id}"
                    )));
                };
                workflow.status = *status;
                workflow.error = error.clone();
                row.workflows = json_text(&workflows);
            }
            Finished {
                at: done, reason, ..
            } => {
                row.finished_at = Some(fmt_time(*done));
                row.reason = reason.clone();
            }
            Cancelled { reason, .. } => {
                row.finished_at = Some(at.clone());
                row.reason = reason.clone();
            }
        }
        if let Some((_, to)) = e.status_change() {
            row.status = name(&to);
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
    status: Option<&str>,
    first: i64,
    after: Option<&str>,
) -> Result<Page<DeploymentRow>, QueryError> {
    let filters = [
        ("promotion_id", promotion_id.map(str::to_string)),
        ("status", status.map(str::to_string)),
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
