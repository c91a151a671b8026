use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::{GateResult, PromotionStatus, PromotionWorkflow, SnapshotSource, WorkflowOutcome};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PromotionEvent {
    Created {
        pipeline_id: String,
        source_environment_id: String,
        target_environment_id: String,
        workflows: Vec<PromotionWorkflow>,
        requires_approval: bool,
        allow_self_approval: bool,
        bypass_validation: bool,
        created_by: String,
        /// A restore: the snapshot the workflows come from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source_snapshot: Option<SnapshotSource>,
    },
    GatesEvaluated {
        from: PromotionStatus,
        to: PromotionStatus,
        results: Vec<GateResult>,
        bypassed: bool,
    },
    Approved {
        from: PromotionStatus,
        approved_by: String,
    },
    Rejected {
        from: PromotionStatus,
        rejected_by: String,
        reason: String,
    },
    Cancelled {
        from: PromotionStatus,
        reason: Option<String>,
    },
    Started {
        from: PromotionStatus,
        deployment_id: String,
        at: DateTime<Utc>,
    },
    Completed {
        from: PromotionStatus,
        outcomes: Vec<WorkflowOutcome>,
        at: DateTime<Utc>,
    },
    RolledBack {
        from: PromotionStatus,
        outcomes: Vec<WorkflowOutcome>,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    Failed {
        from: PromotionStatus,
        reason: Option<String>,
        inconsistencies: Vec<String>,
        at: DateTime<Utc>,
    },
}

impl PromotionEvent {
    /// `(from, to)` when the event moves the status.
    pub fn status_change(&self) -> Option<(Option<PromotionStatus>, PromotionStatus)> {
        use PromotionEvent::*;
        use PromotionStatus as S;
        Some(match self {
            Created { .. } => (None, S::Pending),
            GatesEvaluated { from, to, .. } => (Some(*from), *to),
            Approved { from, .. } => (Some(*from), S::Approved),
            Rejected { from, .. } => (Some(*from), S::Rejected),
            Cancelled { from, .. } => (Some(*from), S::Cancelled),
            Started { from, .. } => (Some(*from), S::Running),
            Completed { from, .. } => (Some(*from), S::Completed),
            RolledBack { from, .. } => (Some(*from), S::RolledBack),
            Failed { from, .. } => (Some(*from), S::Failed),
        })
    }
}

impl DomainEvent for PromotionEvent {
    fn event_type(&self) -> String {
        use PromotionEvent::*;
        match self {
            Created { .. } => "promotion.created",
            GatesEvaluated { .. } => "promotion.gates_evaluated",
            Approved { .. } => "promotion.approved",
            Rejected { .. } => "promotion.rejected",
            Cancelled { .. } => "promotion.cancelled",
            Started { .. } => "promotion.started",
            Completed { .. } => "promotion.completed",
            RolledBack { .. } => "promotion.rolled_back",
            Failed { .. } => "promotion.failed",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}
