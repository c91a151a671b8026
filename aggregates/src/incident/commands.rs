use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{IncidentPolicy, ResolutionType};
use crate::kernel::command::{DomainCommand, Role};
use crate::kernel::ids::LocalId;

/// A workflow affected by drift, as the drift check saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffectedWorkflow {
    /// Canonical id when the runtime workflow is mapped, else the n8n id.
    pub workflow_id: String,
    pub name: String,
}

/// Everything opening a drift incident needs. The environment's slot reservation
/// carries it, so the incident-slot reactor can open the reserved incident on its
/// own (and again, harmlessly, after a crash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentOpening {
    pub production: bool,
    pub affected_workflows: Vec<AffectedWorkflow>,
    /// SHA-256 of the drift snapshot payload.
    pub snapshot_digest: Option<String>,
    pub policy: IncidentPolicy,
}

impl IncidentOpening {
    /// The command that opens the reserved incident on `environment_id`.
    pub fn open(&self, environment_id: LocalId) -> IncidentCommand {
        IncidentCommand::Open {
            environment_id,
            production: self.production,
            affected_workflows: self.affected_workflows.clone(),
            snapshot_digest: self.snapshot_digest.clone(),
            policy: self.policy,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum IncidentCommand {
    /// Opens the incident the environment reserved. Idempotent for the same environment.
    Open {
        environment_id: LocalId,
        production: bool,
        affected_workflows: Vec<AffectedWorkflow>,
        /// SHA-256 of the drift snapshot payload (the payload itself lives outside
        /// the log so that retention can purge it without breaking the chain).
        snapshot_digest: Option<String>,
        policy: IncidentPolicy,
    },
    /// New drift on the environment while this incident is open.
    UpdateDrift {
        affected_workflows: Vec<AffectedWorkflow>,
    },
    Acknowledge {
        reason: Option<String>,
        owner_user_id: Option<String>,
        ticket_ref: Option<String>,
        expires_at: Option<DateTime<Utc>>,
    },
    Stabilize {
        reason: Option<String>,
    },
    Reconcile {
        resolution_type: Option<ResolutionType>,
        resolution_details: Option<String>,
    },
    Close {
        reason: Option<String>,
        resolution_type: Option<ResolutionType>,
    },
    ExtendTtl {
        new_deadline: DateTime<Utc>,
        reason: Option<String>,
    },
    Approve {
        approval_id: u32,
    },
    Reject {
        approval_id: u32,
        reason: Option<String>,
    },
    /// TTL job: append one event per SLA step reached since the last evaluation.
    EvaluateSla,
    /// Retention job: the snapshot payload of an incident closed long enough ago.
    PurgeSnapshotPayload {
        retention_days: u32,
    },
}

impl DomainCommand for IncidentCommand {
    fn required_role(&self) -> Role {
        use IncidentCommand::*;
        match self {
            Open { .. } | UpdateDrift { .. } | EvaluateSla | PurgeSnapshotPayload { .. } => {
                Role::System
            }
            Acknowledge { .. } | Stabilize { .. } => Role::Developer,
            Reconcile { .. } | Close { .. } | ExtendTtl { .. } | Approve { .. } | Reject { .. } => {
                Role::Admin
            }
        }
    }

    fn reason(&self) -> Option<&str> {
        use IncidentCommand::*;
        match self {
            Acknowledge { reason, .. }
            | Stabilize { reason }
            | Close { reason, .. }
            | ExtendTtl { reason, .. }
            | Reject { reason, .. } => reason.as_deref(),
            Reconcile {
                resolution_details, ..
            } => resolution_details.as_deref(),
            _ => None,
        }
    }

    fn creates(&self) -> bool {
        matches!(self, IncidentCommand::Open { .. })
    }

    fn name(&self) -> &'static str {
        use IncidentCommand::*;
        match self {
            Open { .. } => "incident.open",
            UpdateDrift { .. } => "incident.update_drift",
            Acknowledge { .. } => "incident.acknowledge",
            Stabilize { .. } => "incident.stabilize",
            Reconcile { .. } => "incident.reconcile",
            Close { .. } => "incident.close",
            ExtendTtl { .. } => "incident.extend_ttl",
            Approve { .. } => "incident.approve",
            Reject { .. } => "incident.reject",
            EvaluateSla => "incident.evaluate_sla",
            PurgeSnapshotPayload { .. } => "incident.purge_snapshot_payload",
        }
    }
}
