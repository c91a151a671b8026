//! What the aggregate records: its events, their stored names and versions.

use super::*;
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DriftPolicyEvent {
    /// The full policy now in force for the scope.
    PolicySet {
        policy: DriftPolicySettings,
        set_by: String,
        reason: Option<String>,
    },
    PolicyCleared {
        cleared_by: String,
        reason: Option<String>,
    },
}

impl DomainEvent for DriftPolicyEvent {
    fn event_type(&self) -> String {
        match self {
            DriftPolicyEvent::PolicySet { .. } => "drift_policy.set",
            DriftPolicyEvent::PolicyCleared { .. } => "drift_policy.cleared",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}
