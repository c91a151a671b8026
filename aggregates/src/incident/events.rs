use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::{
    commands::AffectedWorkflow, IncidentPolicy, IncidentStatus, ResolutionType, Severity, SlaState,
};

/// An action that may wait for approval, with the parameters it will run with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PendingAction {
    Acknowledge {
        reason: Option<String>,
        owner_user_id: Option<String>,
        ticket_ref: Option<String>,
        expires_at: Option<DateTime<Utc>>,
    },
    Reconcile {
        resolution_type: ResolutionType,
        resolution_details: Option<String>,
    },
    Close {
        reason: String,
        resolution_type: Option<ResolutionType>,
    },
    ExtendTtl {
        new_deadline: DateTime<Utc>,
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum IncidentEvent {
    Detected {
        environment_id: String,
        severity: Severity,
        affected_workflows: Vec<AffectedWorkflow>,
        snapshot_digest: Option<String>,
        policy: IncidentPolicy,
        #[serde(default)]
        production: bool,
        detected_at: DateTime<Utc>,
        sla_deadline: DateTime<Utc>,
    },
    DriftUpdated {
        severity: Severity,
        affected_workflows: Vec<AffectedWorkflow>,
    },
    ApprovalRequested {
        approval_id: u32,
        requested_by: String,
        #[serde(flatten)]
        action: PendingAction,
    },
    ApprovalGranted {
        approval_id: u32,
        approved_by: String,
    },
    ApprovalRejected {
        approval_id: u32,
        rejected_by: String,
        reason: String,
    },
    Acknowledged {
        from: IncidentStatus,
        reason: Option<String>,
        owner_user_id: Option<String>,
        ticket_ref: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
        #[serde(default)]
        admin_override: bool,
        #[serde(default)]
        approval_bypassed: bool,
    },
    Stabilized {
        from: IncidentStatus,
        reason: Option<String>,
        at: DateTime<Utc>,
        #[serde(default)]
        admin_override: bool,
    },
    Reconciled {
        from: IncidentStatus,
        resolution_type: ResolutionType,
        resolution_details: Option<String>,
        at: DateTime<Utc>,
        #[serde(default)]
        admin_override: bool,
        #[serde(default)]
        approval_bypassed: bool,
    },
    Closed {
        from: IncidentStatus,
        reason: String,
        resolution_type: ResolutionType,
        at: DateTime<Utc>,
        #[serde(default)]
        admin_override: bool,
        #[serde(default)]
        approval_bypassed: bool,
    },
    TtlExtended {
        previous_deadline: DateTime<Utc>,
        new_deadline: DateTime<Utc>,
        sla_state: SlaState,
        reason: Option<String>,
        #[serde(default)]
        approval_bypassed: bool,
    },
    SlaEscalated {
        from: SlaState,
        to: SlaState,
    },
    SnapshotPayloadPurged {
        snapshot_digest: String,
    },
}

impl IncidentEvent {
    /// `(from, to)` when the event moves the lifecycle status.
    pub fn status_change(&self) -> Option<(Option<IncidentStatus>, IncidentStatus)> {
        use IncidentEvent::*;
        match self {
            Detected { .. } => Some((None, IncidentStatus::Detected)),
            Acknowledged { from, .. } => Some((Some(*from), IncidentStatus::Acknowledged)),
            Stabilized { from, .. } => Some((Some(*from), IncidentStatus::Stabilized)),
            Reconciled { from, .. } => Some((Some(*from), IncidentStatus::Reconciled)),
            Closed { from, .. } => Some((Some(*from), IncidentStatus::Closed)),
            _ => None,
        }
    }
}

impl DomainEvent for IncidentEvent {
    fn event_type(&self) -> String {
        use IncidentEvent::*;
        match self {
            Detected { .. } => "incident.detected",
            DriftUpdated { .. } => "incident.drift_updated",
            ApprovalRequested { .. } => "incident.approval_requested",
            ApprovalGranted { .. } => "incident.approval_granted",
            ApprovalRejected { .. } => "incident.approval_rejected",
            Acknowledged { .. } => "incident.acknowledged",
            Stabilized { .. } => "incident.stabilized",
            Reconciled { .. } => "incident.reconciled",
            Closed { .. } => "incident.closed",
            TtlExtended { .. } => "incident.ttl_extended",
            SlaEscalated { .. } => "incident.sla_escalated",
            SnapshotPayloadPurged { .. } => "incident.payload_purged",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
