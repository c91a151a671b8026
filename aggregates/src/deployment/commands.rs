//! What can be asked of the aggregate, and the role each command requires.

use super::*;
use crate::kernel::command::{DomainCommand, Role};
use crate::kernel::ids::LocalId;
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq)]
pub enum DeploymentCommand {
    Create {
        promotion_id: LocalId,
        scheduled_for: Option<DateTime<Utc>>,
        /// (workflow id, name) of each workflow the promotion deploys.
        workflows: Vec<(String, String)>,
    },
    Start,
    RecordWorkflowResult {
        workflow_id: String,
        status: WorkflowDeployStatus,
        error: Option<String>,
    },
    Cancel {
        reason: Option<String>,
    },
    /// Start-up sweep: a deployment still running after [`STALE_AFTER`] failed.
    MarkStale,
}

impl DomainCommand for DeploymentCommand {
    fn required_role(&self) -> Role {
        match self {
            DeploymentCommand::RecordWorkflowResult { .. } | DeploymentCommand::MarkStale => {
                Role::System
            }
            _ => Role::Admin,
        }
    }
    fn reason(&self) -> Option<&str> {
        match self {
            DeploymentCommand::Cancel { reason } => reason.as_deref(),
            _ => None,
        }
    }
    fn name(&self) -> &'static str {
        match self {
            DeploymentCommand::Create { .. } => "deployment.create",
            DeploymentCommand::Start => "deployment.start",
            DeploymentCommand::RecordWorkflowResult { .. } => "deployment.record_workflow_result",
            DeploymentCommand::Cancel { .. } => "deployment.cancel",
            DeploymentCommand::MarkStale => "deployment.mark_stale",
        }
    }
}
