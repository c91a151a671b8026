//! Promotions: each promotion's current state, gates, approvals and result.

use aggregates::promotion::{
    GateResult, PromotionEvent, PromotionStatus, PromotionWorkflow, WorkflowOutcome,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Envelope;
use crate::query::{by_id, newest_first, Page, QueryError};
use crate::read_model_row;
use crate::runtime::ApplyError;
use crate::sql::{Json, KeyedRow, Rows, Tx};
use eventstore::Store;

pub const NAME: &str = "promotions";

read_model_row! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct PromotionRow in "rm_promotions" {
        pub id: String,
        pub tenant: String,
        pub promotion_id: String,
        pub pipeline_id: String,
        pub source_environment_id: String,
        pub target_environment_id: String,
        pub status: PromotionStatus,
        /// JSON list of the workflows to promote.
        pub workflows: Json<Vec<PromotionWorkflow>>,
        /// JSON list of the gate results.
        pub gate_results: Option<Json<Vec<GateResult>>>,
        pub requires_approval: bool,
        pub bypass_validation: bool,
        pub created_by: String,
        pub approved_by: Option<String>,
        pub rejected_by: Option<String>,
        pub reason: Option<String>,
        pub deployment_id: Option<String>,
        /// JSON list of per-workflow outcomes.
        pub result: Option<Json<Vec<WorkflowOutcome>>>,
        /// JSON list of what a failed rollback left inconsistent.
        pub inconsistencies: Option<Json<Vec<String>>>,
        /// A restore: the snapshot the workflows come from.
        pub source_snapshot_id: Option<String>,
        pub created_at: DateTime<Utc>,
        pub started_at: Option<DateTime<Utc>>,
        pub finished_at: Option<DateTime<Utc>>,
        pub updated_at: DateTime<Utc>,
    }
}

impl KeyedRow for PromotionRow {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Default)]
pub struct Promotions {
    promotions: Rows<PromotionRow>,
}

impl Promotions {
    async fn fold(
        &mut self,
        tx: &mut Tx,
        event: &Envelope,
        e: &PromotionEvent,
    ) -> Result<(), ApplyError> {
        use PromotionEvent::*;
        let id = &event.stored.aggregate_id;
        let at = event.at();
        let mut row = match (self.promotions.get(tx, id).await?, e) {
            (
                None,
                Created {
                    pipeline_id,
                    source_environment_id,
                    target_environment_id,
                    workflows,
                    requires_approval,
                    bypass_validation,
                    created_by,
                    source_snapshot,
                    ..
                },
            ) => PromotionRow {
                id: id.clone(),
                tenant: event.tenant().to_string(),
                promotion_id: event.local_id().to_string(),
                pipeline_id: pipeline_id.clone(),
                source_environment_id: source_environment_id.clone(),
                target_environment_id: target_environment_id.clone(),
                // set from the event's status change below
                status: PromotionStatus::Pending,
                workflows: Json(workflows.clone()),
                gate_results: None,
                requires_approval: *requires_approval,
                bypass_validation: *bypass_validation,
                created_by: created_by.clone(),
                approved_by: None,
                rejected_by: None,
                reason: None,
                deployment_id: None,
                result: None,
                inconsistencies: None,
                source_snapshot_id: source_snapshot.as_ref().map(|s| s.snapshot_id.clone()),
                created_at: at,
                started_at: None,
                finished_at: None,
                updated_at: at,
            },
            (Some(row), _) => row,
            (None, _) => {
                return Err(ApplyError::Event(format!(
                    "promotion {id} was never created"
                )))
            }
        };
        match e {
            Created { .. } => {}
            GatesEvaluated { results, .. } => row.gate_results = Some(Json(results.clone())),
            Approved { approved_by, .. } => row.approved_by = Some(approved_by.clone()),
            Rejected {
                rejected_by,
                reason,
                ..
            } => {
                row.rejected_by = Some(rejected_by.clone());
                row.reason = Some(reason.clone());
                row.finished_at = Some(at);
            }
            Cancelled { reason, .. } => {
                row.reason = reason.clone();
                row.finished_at = Some(at);
            }
            Started {
                deployment_id,
                at: started,
                ..
            } => {
                row.deployment_id = Some(deployment_id.clone());
                row.started_at = Some(*started);
            }
            Completed {
                outcomes, at: done, ..
            } => {
                row.result = Some(Json(outcomes.clone()));
                row.finished_at = Some(*done);
            }
            RolledBack {
                outcomes,
                reason,
                at: done,
                ..
            } => {
                row.result = Some(Json(outcomes.clone()));
                row.reason = reason.clone();
                row.finished_at = Some(*done);
            }
            Failed {
                reason,
                inconsistencies,
                at: done,
                ..
            } => {
                row.reason = reason.clone();
                row.inconsistencies = Some(Json(inconsistencies.clone()));
                row.finished_at = Some(*done);
            }
        }
        if let Some((_, to)) = e.status_change() {
            row.status = to;
        }
        row.updated_at = at;
        self.promotions.put(row);
        Ok(())
    }
}

crate::single_aggregate_projection!(
    Promotions,
    NAME,
    "rm_promotions",
    promotions,
    Promotion,
    "promotion"
);

/// Promotions of `tenant`, newest first, optionally by status or target environment.
pub async fn promotions(
    store: &Store,
    tenant: &str,
    status: Option<PromotionStatus>,
    target_environment_id: Option<&str>,
    first: i64,
    after: Option<&str>,
) -> Result<Page<PromotionRow>, QueryError> {
    let filters = [
        ("status", status.map(|s| s.as_str().to_string())),
        (
            "target_environment_id",
            target_environment_id.map(str::to_string),
        ),
    ];
    newest_first(store, tenant, "created_at", &filters, first, after).await
}

pub async fn promotion(
    store: &Store,
    tenant: &str,
    promotion_id: &str,
) -> Result<Option<PromotionRow>, QueryError> {
    by_id(store, tenant, promotion_id).await
}
