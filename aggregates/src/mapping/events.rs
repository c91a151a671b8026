//! What the aggregate records: its events, their stored names and versions.

use super::*;
use crate::content::ContentHash;
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MappingEvent {
    Discovered {
        environment_id: String,
        n8n_workflow_id: String,
        #[serde(flatten)]
        observation: Observation,
        canonical_id: Option<String>,
        status: MappingStatus,
        auto_linked: bool,
    },
    ContentObserved {
        #[serde(flatten)]
        observation: Observation,
    },
    GitHashObserved {
        git_content_hash: ContentHash,
    },
    Disappeared {
        from: MappingStatus,
        to: MappingStatus,
    },
    Reappeared {
        from: MappingStatus,
        to: MappingStatus,
        #[serde(flatten)]
        observation: Observation,
        canonical_id: Option<String>,
    },
    Linked {
        from: MappingStatus,
        canonical_id: String,
        auto: bool,
    },
    Unlinked {
        from: MappingStatus,
        canonical_id: String,
        reason: Option<String>,
    },
    Ignored {
        from: MappingStatus,
        reason: Option<String>,
    },
    Unignored {
        to: MappingStatus,
        canonical_id: Option<String>,
    },
    Deleted {
        from: MappingStatus,
        reason: Option<String>,
    },
}

impl MappingEvent {
    /// `(from, to)` when the event changes the status (`from` is `None` at creation).
    pub fn status_change(&self) -> Option<(Option<MappingStatus>, MappingStatus)> {
        use MappingEvent::*;
        let (from, to) = match self {
            Discovered { status, .. } => return Some((None, *status)),
            Disappeared { from, to } | Reappeared { from, to, .. } => (*from, *to),
            Linked { from, .. } => (*from, MappingStatus::Linked),
            Unlinked { from, .. } => (*from, MappingStatus::Untracked),
            Ignored { from, .. } => (*from, MappingStatus::Ignored),
            Unignored { to, .. } => (MappingStatus::Ignored, *to),
            Deleted { from, .. } => (*from, MappingStatus::Deleted),
            ContentObserved { .. } | GitHashObserved { .. } => return None,
        };
        (from != to).then_some((Some(from), to))
    }

    /// True when the event takes the mapping out of `linked`: its link slot must be
    /// released once the event is committed.
    pub fn leaves_linked(&self) -> bool {
        matches!(self.status_change(), Some((Some(MappingStatus::Linked), to)) if to != MappingStatus::Linked)
    }
}

impl DomainEvent for MappingEvent {
    fn event_type(&self) -> String {
        use MappingEvent::*;
        match self {
            Discovered { .. } => "mapping.discovered",
            ContentObserved { .. } => "mapping.content_observed",
            GitHashObserved { .. } => "mapping.git_hash_observed",
            Disappeared { .. } => "mapping.disappeared",
            Reappeared { .. } => "mapping.reappeared",
            Linked { .. } => "mapping.linked",
            Unlinked { .. } => "mapping.unlinked",
            Ignored { .. } => "mapping.ignored",
            Unignored { .. } => "mapping.unignored",
            Deleted { .. } => "mapping.deleted",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}
