use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::{
    DriftCounts, EnvironmentClass, EnvironmentStatus, GitTarget, KnownCredential, SyncKind,
};
use crate::incident::IncidentOpening;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EnvironmentEvent {
    Registered {
        name: String,
        class: EnvironmentClass,
        n8n_base_url: String,
        git: Option<GitTarget>,
        n8n_secret_ref: Option<String>,
        git_secret_ref: Option<String>,
    },
    /// Only what changed. `git` is the new Git configuration; `git_removed` says the
    /// configuration was removed (a separate flag: a `null` `git` has always meant
    /// "unchanged", so it cannot also mean "removed").
    Updated {
        name: Option<String>,
        n8n_base_url: Option<String>,
        git: Option<GitTarget>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        git_removed: bool,
        n8n_secret_ref: Option<String>,
        git_secret_ref: Option<String>,
    },
    Deactivated {
        from: EnvironmentStatus,
        reason: Option<String>,
    },
    Reactivated {
        from: EnvironmentStatus,
    },
    SyncRecorded {
        kind: SyncKind,
        workflows_seen: u32,
        at: DateTime<Utc>,
    },
    SyncFailed {
        kind: SyncKind,
        cause: String,
        at: DateTime<Utc>,
    },
    DriftChecked {
        counts: DriftCounts,
        at: DateTime<Utc>,
    },
    DriftCheckFailed {
        cause: String,
        at: DateTime<Utc>,
    },
    IncidentSlotReserved {
        incident_id: String,
        /// What opening the reserved incident needs (absent in reservations recorded
        /// before the incident-slot reactor existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        opening: Option<IncidentOpening>,
    },
    IncidentSlotReleased {
        incident_id: String,
    },
    PromotionSlotReserved {
        promotion_id: String,
        deployment_id: String,
    },
    PromotionSlotReleased {
        deployment_id: String,
    },
    Pinned {
        reason: String,
        deployment_id: Option<String>,
        at: DateTime<Utc>,
    },
    Unpinned {
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    /// The credentials the environment's workflows reference changed (the whole
    /// set, sorted).
    CredentialsObserved {
        credentials: Vec<KnownCredential>,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for EnvironmentEvent {
    fn event_type(&self) -> String {
        use EnvironmentEvent::*;
        match self {
            Registered { .. } => "environment.registered",
            Updated { .. } => "environment.updated",
            Deactivated { .. } => "environment.deactivated",
            Reactivated { .. } => "environment.reactivated",
            SyncRecorded { .. } => "environment.sync_recorded",
            DriftChecked { .. } => "environment.drift_checked",
            DriftCheckFailed { .. } => "environment.drift_check_failed",
            SyncFailed { .. } => "environment.sync_failed",
            IncidentSlotReserved { .. } => "environment.incident_slot_reserved",
            IncidentSlotReleased { .. } => "environment.incident_slot_released",
            CredentialsObserved { .. } => "environment.credentials_observed",
            PromotionSlotReserved { .. } => "environment.promotion_slot_reserved",
            PromotionSlotReleased { .. } => "environment.promotion_slot_released",
            Pinned { .. } => "environment.pinned",
            Unpinned { .. } => "environment.unpinned",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}
