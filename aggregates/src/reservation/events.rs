//! What the aggregate records: its events, their stored names and versions.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReservationEvent {
    Claimed { holder: String },
    Released { holder: String },
}

impl DomainEvent for ReservationEvent {
    fn event_type(&self) -> String {
        match self {
            ReservationEvent::Claimed { .. } => "reservation.claimed",
            ReservationEvent::Released { .. } => "reservation.released",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}
