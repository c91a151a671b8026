//! What the aggregate records: its events, their stored names and versions.

use super::*;
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
    WorkflowResultRecorded {
        workflow_id: String,
        status: WorkflowDeployStatus,
        error: Option<String>,
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
            DeploymentEvent::WorkflowResultRecorded { .. } => None,
        }
    }
}

impl DomainEvent for DeploymentEvent {
    fn event_type(&self) -> String {
        match self {
            DeploymentEvent::Created { .. } => "deployment.created",
            DeploymentEvent::Started { .. } => "deployment.started",
            DeploymentEvent::WorkflowResultRecorded { .. } => "deployment.workflow_result_recorded",
            DeploymentEvent::Finished { .. } => "deployment.finished",
            DeploymentEvent::Cancelled { .. } => "deployment.cancelled",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}
