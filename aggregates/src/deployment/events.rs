//! What the aggregate records: its events, their stored names and versions.

use super::*;
use crate::promotion::GateResult;
use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeploymentEvent {
    Created {
        promotion_id: String,
        status: DeploymentStatus,
        scheduled_for: Option<DateTime<Utc>>,
        workflows: Vec<DeploymentWorkflow>,
    },
    Started {
        from: DeploymentStatus,
        at: DateTime<Utc>,
    },
    GatesChecked {
        results: Vec<GateResult>,
        passed: bool,
    },
    SnapshotTaken {
        kind: SnapshotKind,
        environment_id: String,
        promotion_id: String,
        snapshot_id: String,
        /// SHA-256 of the snapshot's content (kept in the payload store).
        digest: String,
        workflows: u32,
    },
    WorkflowResultRecorded {
        workflow_id: String,
        status: WorkflowDeployStatus,
        error: Option<String>,
        #[serde(default)]
        attempts: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_id: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        created: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_hash: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        deleted: bool,
    },
    Verified {
        mismatches: Vec<String>,
    },
    RollbackStarted {
        reason: String,
    },
    WorkflowRestored {
        workflow_id: String,
        action: Option<RestoreAction>,
        attempts: u32,
        error: Option<String>,
    },
    RollbackFinished {
        inconsistencies: Vec<String>,
    },
    GitCommitted {
        commit_sha: Option<String>,
        files: u32,
        error: Option<String>,
    },
    RecoveryRequested {
        reason: String,
    },
    Finished {
        from: DeploymentStatus,
        to: DeploymentStatus,
        at: DateTime<Utc>,
        reason: Option<String>,
    },
    Cancelled {
        from: DeploymentStatus,
        reason: Option<String>,
    },
}

impl DeploymentEvent {
    pub fn status_change(&self) -> Option<(Option<DeploymentStatus>, DeploymentStatus)> {
        match self {
            DeploymentEvent::Created { status, .. } => Some((None, *status)),
            DeploymentEvent::Started { from, .. } => Some((Some(*from), DeploymentStatus::Running)),
            DeploymentEvent::Finished { from, to, .. } => Some((Some(*from), *to)),
            DeploymentEvent::Cancelled { from, .. } => {
                Some((Some(*from), DeploymentStatus::Cancelled))
            }
            _ => None,
        }
    }
}

impl DomainEvent for DeploymentEvent {
    fn event_type(&self) -> String {
        use DeploymentEvent::*;
        match self {
            Created { .. } => "deployment.created",
            Started { .. } => "deployment.started",
            GatesChecked { .. } => "deployment.gates_checked",
            SnapshotTaken { .. } => "deployment.snapshot_taken",
            WorkflowResultRecorded { .. } => "deployment.workflow_result_recorded",
            Verified { .. } => "deployment.verified",
            RollbackStarted { .. } => "deployment.rollback_started",
            WorkflowRestored { .. } => "deployment.workflow_restored",
            RollbackFinished { .. } => "deployment.rollback_finished",
            GitCommitted { .. } => "deployment.git_committed",
            RecoveryRequested { .. } => "deployment.recovery_requested",
            Finished { .. } => "deployment.finished",
            Cancelled { .. } => "deployment.cancelled",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}
