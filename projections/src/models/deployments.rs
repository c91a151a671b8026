//! Deployments: each deployment's current state, schedule and per-workflow results.

use aggregates::deployment::{
    Deployment, DeploymentEvent, DeploymentPhase, DeploymentStatus, DeploymentWorkflow, GitResult,
    Rollback, SnapshotRef,
};
use aggregates::promotion::GateResult;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Envelope;
use crate::query::{by_id, newest_first, Page, QueryError};
use crate::read_model_row;
use crate::runtime::ApplyError;
use crate::sql::QueryRows as _;
use crate::sql::{fmt_time, select, Dialect, Json, KeyedRow, Rows, Tx};
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
        /// Each workflow's status, attempts, target id, error and restore.
        pub workflows: Json<Vec<DeploymentWorkflow>>,
        pub reason: Option<String>,
        pub phase: DeploymentPhase,
        /// What the phases recorded (gates, snapshots, verification, rollback, Git).
        pub progress: Json<DeploymentProgress>,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
    }
}

/// What a deployment's phases recorded, as [`Deployment`] folds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeploymentProgress {
    pub gate_results: Option<Vec<GateResult>>,
    pub pre_snapshot: Option<SnapshotRef>,
    pub post_snapshot: Option<SnapshotRef>,
    pub verification: Option<Vec<String>>,
    pub rollback: Option<Rollback>,
    pub git: Option<GitResult>,
    pub recovery_requested: Option<String>,
}

impl DeploymentProgress {
    fn of(deployment: &Deployment) -> DeploymentProgress {
        DeploymentProgress {
            gate_results: deployment.gate_results.clone(),
            pre_snapshot: deployment.pre_snapshot.clone(),
            post_snapshot: deployment.post_snapshot.clone(),
            verification: deployment.verification.clone(),
            rollback: deployment.rollback.clone(),
            git: deployment.git.clone(),
            recovery_requested: deployment.recovery_requested.clone(),
        }
    }

    /// The aggregate's state as far as the row holds it (to fold the next event
    /// with the aggregate's own `apply`).
    fn state(row: &DeploymentRow) -> Deployment {
        let p = &row.progress.0;
        Deployment {
            created: true,
            promotion_id: row.promotion_id.clone(),
            status: row.status,
            phase: row.phase,
            scheduled_for: row.scheduled_for,
            started_at: row.started_at,
            finished_at: row.finished_at,
            workflows: row.workflows.0.clone(),
            gate_results: p.gate_results.clone(),
            pre_snapshot: p.pre_snapshot.clone(),
            post_snapshot: p.post_snapshot.clone(),
            verification: p.verification.clone(),
            rollback: p.rollback.clone(),
            git: p.git.clone(),
            recovery_requested: p.recovery_requested.clone(),
            reason: row.reason.clone(),
        }
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
                phase: DeploymentPhase::Waiting,
                progress: Json(DeploymentProgress::default()),
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
        if let WorkflowResultRecorded { workflow_id, .. } | WorkflowRestored { workflow_id, .. } = e
        {
            if !row.workflows.iter().any(|w| &w.workflow_id == workflow_id) {
                return Err(ApplyError::Event(format!(
                    "deployment {id} has no workflow {workflow_id}"
                )));
            }
        }
        // The aggregate's own fold, so the row never disagrees with it.
        let mut state = DeploymentProgress::state(&row);
        cqrs_es::Aggregate::apply(&mut state, e.clone());
        row.status = state.status;
        row.phase = state.phase;
        row.started_at = state.started_at;
        row.finished_at = match e {
            Cancelled { .. } => Some(at),
            _ => state.finished_at,
        };
        row.reason = state.reason.clone();
        row.progress = Json(DeploymentProgress::of(&state));
        row.workflows = Json(state.workflows);
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

/// Scheduled deployments of every tenant due at `now`, the earliest first.
pub async fn due(store: &Store, now: DateTime<Utc>) -> Result<Vec<DeploymentRow>, QueryError> {
    let mut sql = select::<DeploymentRow>(Dialect::of(store));
    let (s, at) = (
        sql.arg(DeploymentStatus::Scheduled.as_str()),
        sql.arg(fmt_time(now)),
    );
    sql.push(&format!(
        " WHERE status = {s} AND scheduled_for <= {at} ORDER BY scheduled_for, id"
    ));
    Ok(sql.fetch(store).await?)
}

/// Deployments of every tenant running since before `before`.
pub async fn running_since(
    store: &Store,
    before: DateTime<Utc>,
) -> Result<Vec<DeploymentRow>, QueryError> {
    let mut sql = select::<DeploymentRow>(Dialect::of(store));
    let (s, at) = (
        sql.arg(DeploymentStatus::Running.as_str()),
        sql.arg(fmt_time(before)),
    );
    sql.push(&format!(
        " WHERE status = {s} AND started_at < {at} ORDER BY started_at, id"
    ));
    Ok(sql.fetch(store).await?)
}
