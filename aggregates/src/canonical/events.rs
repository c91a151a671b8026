//! What the aggregate records: its events, their stored names and versions.

use super::*;
use crate::content::ContentHash;
use crate::kernel::ids::Slug;
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CanonicalEvent {
    Created {
        name: String,
        slug: Slug,
        git_path: Option<String>,
    },
    Renamed {
        name: String,
    },
    GitVersionRecorded {
        git_content_hash: ContentHash,
        commit_sha: String,
        git_path: String,
    },
    Deleted {
        from: CanonicalStatus,
        reason: Option<String>,
    },
}

impl DomainEvent for CanonicalEvent {
    fn event_type(&self) -> String {
        match self {
            CanonicalEvent::Created { .. } => "canonical.created",
            CanonicalEvent::Renamed { .. } => "canonical.renamed",
            CanonicalEvent::GitVersionRecorded { .. } => "canonical.git_version_recorded",
            CanonicalEvent::Deleted { .. } => "canonical.deleted",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}
