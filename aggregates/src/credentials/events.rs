//! What the aggregate records: its events, their stored names and versions.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CredentialMapEvent {
    Set {
        credential_type: String,
        source_name: String,
        target_id: String,
        target_name: String,
    },
    Removed {
        credential_type: String,
        source_name: String,
    },
}

impl DomainEvent for CredentialMapEvent {
    fn event_type(&self) -> String {
        match self {
            CredentialMapEvent::Set { .. } => "credential_map.set",
            CredentialMapEvent::Removed { .. } => "credential_map.removed",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}
