use super::{DriftCheckOutcome, EnvironmentClass, GitTarget, KnownCredential, SyncKind};
use crate::incident::IncidentOpening;
use crate::kernel::command::{DomainCommand, Role};
use crate::kernel::ids::LocalId;

#[derive(Debug, Clone, PartialEq)]
pub enum EnvironmentCommand {
    Register {
        name: String,
        class: EnvironmentClass,
        n8n_base_url: String,
        git: Option<GitTarget>,
        n8n_secret_ref: Option<LocalId>,
        git_secret_ref: Option<LocalId>,
    },
    Update {
        name: Option<String>,
        n8n_base_url: Option<String>,
        /// `Some(None)` removes the Git configuration.
        git: Option<Option<GitTarget>>,
        n8n_secret_ref: Option<LocalId>,
        git_secret_ref: Option<LocalId>,
    },
    Deactivate {
        reason: Option<String>,
    },
    Reactivate,
    RecordSync {
        kind: SyncKind,
        workflows_seen: u32,
    },
    /// The credentials a sync saw referenced by the environment's workflows (the
    /// whole set; a no-op when it is the one already known).
    RecordCredentials {
        credentials: Vec<KnownCredential>,
    },
    /// A sync could not read n8n or Git; the cause is shown on the environment until
    /// a sync of that kind succeeds.
    RecordSyncFailure {
        kind: SyncKind,
        cause: String,
    },
    RecordDriftCheck {
        outcome: DriftCheckOutcome,
    },
    /// Reserves the active-incident slot for `incident_id`. `opening` is what the
    /// incident-slot reactor opens it with (a reservation without one is repaired
    /// by the next drift report instead).
    ReserveIncidentSlot {
        incident_id: LocalId,
        opening: Option<IncidentOpening>,
    },
    ReleaseIncidentSlot {
        incident_id: LocalId,
    },
    /// Reserves the promotion slot (one running promotion per target) for a
    /// deployment of `promotion_id`; refused while another deployment holds it.
    ReservePromotionSlot {
        promotion_id: LocalId,
        deployment_id: LocalId,
    },
    /// Releases the promotion slot if `deployment_id` holds it (else a no-op).
    ReleasePromotionSlot {
        deployment_id: LocalId,
    },
    /// A rollback pins the environment: scheduled deployments to it do not start
    /// until an admin unpins it.
    Pin {
        reason: String,
        deployment_id: Option<LocalId>,
    },
    Unpin {
        reason: Option<String>,
    },
}

impl DomainCommand for EnvironmentCommand {
    fn required_role(&self) -> Role {
        use EnvironmentCommand::*;
        match self {
            Register { .. } | Update { .. } | Deactivate { .. } | Reactivate => Role::Admin,
            RecordSync { .. }
            | RecordCredentials { .. }
            | RecordSyncFailure { .. }
            | RecordDriftCheck { .. } => Role::Developer,
            Unpin { .. } => Role::Admin,
            ReserveIncidentSlot { .. }
            | ReleaseIncidentSlot { .. }
            | ReservePromotionSlot { .. }
            | ReleasePromotionSlot { .. }
            | Pin { .. } => Role::System,
        }
    }
    fn reason(&self) -> Option<&str> {
        match self {
            EnvironmentCommand::Deactivate { reason } | EnvironmentCommand::Unpin { reason } => {
                reason.as_deref()
            }
            EnvironmentCommand::Pin { reason, .. } => Some(reason),
            _ => None,
        }
    }
    fn creates(&self) -> bool {
        matches!(self, EnvironmentCommand::Register { .. })
    }

    fn name(&self) -> &'static str {
        use EnvironmentCommand::*;
        match self {
            Register { .. } => "environment.register",
            Update { .. } => "environment.update",
            Deactivate { .. } => "environment.deactivate",
            Reactivate => "environment.reactivate",
            RecordSync { .. } => "environment.record_sync",
            RecordCredentials { .. } => "environment.record_credentials",
            RecordSyncFailure { .. } => "environment.record_sync_failure",
            RecordDriftCheck { .. } => "environment.record_drift_check",
            ReserveIncidentSlot { .. } => "environment.reserve_incident_slot",
            ReleaseIncidentSlot { .. } => "environment.release_incident_slot",
            ReservePromotionSlot { .. } => "environment.reserve_promotion_slot",
            ReleasePromotionSlot { .. } => "environment.release_promotion_slot",
            Pin { .. } => "environment.pin",
            Unpin { .. } => "environment.unpin",
        }
    }
}
