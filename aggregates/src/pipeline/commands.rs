//! What can be asked of the aggregate, and the role each command requires.

use super::*;
use crate::kernel::command::{DomainCommand, Role};

#[derive(Debug, Clone, PartialEq)]
pub enum PipelineCommand {
    Create {
        name: String,
        description: Option<String>,
        stages: Vec<PipelineStage>,
    },
    /// `None` leaves a field as it is. A blank `description` removes it; `stages`
    /// replaces the whole list.
    Update {
        name: Option<String>,
        description: Option<String>,
        stages: Option<Vec<PipelineStage>>,
    },
    Deactivate {
        reason: Option<String>,
    },
    Reactivate,
}

impl DomainCommand for PipelineCommand {
    /// Pipelines are admin configuration (DOMAIN.md §7).
    fn required_role(&self) -> Role {
        Role::Admin
    }
    fn reason(&self) -> Option<&str> {
        match self {
            PipelineCommand::Deactivate { reason } => reason.as_deref(),
            _ => None,
        }
    }
    fn creates(&self) -> bool {
        matches!(self, PipelineCommand::Create { .. })
    }

    fn name(&self) -> &'static str {
        match self {
            PipelineCommand::Create { .. } => "pipeline.create",
            PipelineCommand::Update { .. } => "pipeline.update",
            PipelineCommand::Deactivate { .. } => "pipeline.deactivate",
            PipelineCommand::Reactivate => "pipeline.reactivate",
        }
    }
}
