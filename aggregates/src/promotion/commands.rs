use serde::{Deserialize, Serialize};

use crate::kernel::command::{DomainCommand, Role};
use crate::kernel::ids::LocalId;

/// One workflow to promote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionWorkflow {
    pub canonical_id: String,
    pub name: String,
    /// Content hash of the source version being promoted.
    pub source_content_hash: Option<String>,
}

/// The source of a restore: a stored snapshot of the target environment, whose
/// content verifies against `digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSource {
    pub snapshot_id: String,
    pub digest: String,
}

/// A check a promotion passes before it may run (DOMAIN.md §5). Stored in events by
/// its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// The target is active and its last drift check succeeded.
    TargetEnvironmentHealthy,
    RequireCleanDrift,
    BlockOnActiveDrift,
    /// An expired incident in the target blocks.
    EnforceTtl,
    /// The target changed after its Git commit (a hotfix promoting would overwrite).
    AllowOverwritingHotfixes,
    AllowForcePromotionOnConflicts,
    AllowPlaceholderCredentials,
    RequireApproval,
    /// Every credential the workflows use exists in the target (checked on deploy).
    CredentialsExist,
    /// Every sub-workflow reference resolves in the target (or is promoted with it),
    /// and none is an expression (checked on deploy).
    SubWorkflowsResolved,
    /// The source still holds what the promotion recorded (checked on deploy): what
    /// was approved is what is deployed.
    SourceUnchanged,
}

crate::state_names!(Gate {
    TargetEnvironmentHealthy => "target_environment_healthy",
    RequireCleanDrift => "require_clean_drift",
    BlockOnActiveDrift => "block_on_active_drift",
    EnforceTtl => "enforce_ttl",
    AllowOverwritingHotfixes => "allow_overwriting_hotfixes",
    AllowForcePromotionOnConflicts => "allow_force_promotion_on_conflicts",
    AllowPlaceholderCredentials => "allow_placeholder_credentials",
    RequireApproval => "require_approval",
    CredentialsExist => "credentials_exist",
    SubWorkflowsResolved => "sub_workflows_resolved",
    SourceUnchanged => "source_unchanged",
});

/// The result of one gate check (kept in the event, so a refusal can be explained).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateResult {
    pub gate: Gate,
    pub passed: bool,
    /// A blocking gate that fails fails the promotion.
    pub blocking: bool,
    pub message: Option<String>,
}

/// What happened to one workflow when the promotion ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowOutcome {
    pub canonical_id: String,
    pub outcome: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PromotionCommand {
    Create {
        pipeline_id: LocalId,
        source_environment_id: LocalId,
        target_environment_id: LocalId,
        workflows: Vec<PromotionWorkflow>,
        requires_approval: bool,
        allow_self_approval: bool,
        /// Admin only: skip the gates (never the state machine). Recorded.
        bypass_validation: bool,
        /// A restore: the workflows come from this snapshot of the target (the
        /// source environment is the target), not from the source's n8n.
        source_snapshot: Option<SnapshotSource>,
    },
    RecordGateResults {
        results: Vec<GateResult>,
    },
    Approve,
    Reject {
        reason: Option<String>,
    },
    Cancel {
        reason: Option<String>,
    },
    Start {
        deployment_id: LocalId,
    },
    Complete {
        outcomes: Vec<WorkflowOutcome>,
    },
    RollBack {
        outcomes: Vec<WorkflowOutcome>,
        reason: Option<String>,
    },
    /// The rollback itself could not restore everything (or a running promotion is
    /// stuck): `inconsistencies` lists what is left to fix by hand.
    Fail {
        reason: Option<String>,
        inconsistencies: Vec<String>,
    },
}

impl DomainCommand for PromotionCommand {
    fn required_role(&self) -> Role {
        match self {
            PromotionCommand::RecordGateResults { .. } => Role::Developer,
            _ => Role::Admin,
        }
    }
    fn reason(&self) -> Option<&str> {
        match self {
            PromotionCommand::Reject { reason }
            | PromotionCommand::Cancel { reason }
            | PromotionCommand::RollBack { reason, .. }
            | PromotionCommand::Fail { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }
    fn creates(&self) -> bool {
        matches!(self, PromotionCommand::Create { .. })
    }

    fn name(&self) -> &'static str {
        use PromotionCommand::*;
        match self {
            Create { .. } => "promotion.create",
            RecordGateResults { .. } => "promotion.record_gate_results",
            Approve => "promotion.approve",
            Reject { .. } => "promotion.reject",
            Cancel { .. } => "promotion.cancel",
            Start { .. } => "promotion.start",
            Complete { .. } => "promotion.complete",
            RollBack { .. } => "promotion.roll_back",
            Fail { .. } => "promotion.fail",
        }
    }
}
