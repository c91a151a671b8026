//! What the aggregate records: its events, their stored names and versions.

use super::*;
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PipelineEvent {
    Created {
        name: String,
        description: Option<String>,
        stages: Vec<PipelineStage>,
        created_by: String,
    },
    /// Only what changed. `description: Some(None)` removed the description; it is
    /// stored as `null`, and an absent field means unchanged.
    Updated {
        name: Option<String>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "present"
        )]
        description: Option<Option<String>>,
        stages: Option<Vec<PipelineStage>>,
    },
    Deactivated {
        from: PipelineStatus,
        reason: Option<String>,
    },
    Reactivated {
        from: PipelineStatus,
    },
}

impl PipelineEvent {
    pub fn status_change(&self) -> Option<(Option<PipelineStatus>, PipelineStatus)> {
        match self {
            PipelineEvent::Created { .. } => Some((None, PipelineStatus::Active)),
            PipelineEvent::Deactivated { from, .. } => {
                Some((Some(*from), PipelineStatus::Deactivated))
            }
            PipelineEvent::Reactivated { from } => Some((Some(*from), PipelineStatus::Active)),
            PipelineEvent::Updated { .. } => None,
        }
    }
}

impl DomainEvent for PipelineEvent {
    fn event_type(&self) -> String {
        match self {
            PipelineEvent::Created { .. } => "pipeline.created",
            PipelineEvent::Updated { .. } => "pipeline.updated",
            PipelineEvent::Deactivated { .. } => "pipeline.deactivated",
            PipelineEvent::Reactivated { .. } => "pipeline.reactivated",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}
