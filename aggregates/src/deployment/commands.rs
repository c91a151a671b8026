//! What can be asked of the aggregate, and the role each command requires.

use super::*;
use crate::kernel::command::{DomainCommand, Role};
use crate::kernel::ids::LocalId;
use crate::promotion::GateResult;
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq)]
pub enum DeploymentCommand {
    Create {
        promotion_id: LocalId,
        scheduled_for: Option<DateTime<Utc>>,
        /// (workflow id, name) of each workflow the promotion deploys.
        workflows: Vec<(String, String)>,
    },
    Start,
    /// The gates checked against the target when the deployment starts
    /// (`credentials_exist`, sub-workflow references…). A failed blocking gate is
    /// followed by `Finish` failed: nothing was touched.
    RecordGates {
        results: Vec<GateResult>,
    },
    RecordSnapshot {
        kind: SnapshotKind,
        /// The environment snapshotted (the target).
        environment_id: String,
        promotion_id: String,
        snapshot_id: String,
        digest: String,
        workflows: u32,
    },
    RecordWorkflowResult {
        workflow_id: String,
        status: WorkflowDeployStatus,
        error: Option<String>,
        /// Writes tried (retries included).
        attempts: u32,
        /// The workflow's id in the target (after a create: the new one).
        target_id: Option<String>,
        /// This deployment created the workflow in the target.
        created: bool,
        /// Content hash of what the target holds now.
        content_hash: Option<String>,
        /// This deployment deleted the workflow `target_id` from the target (a
        /// restore of a snapshot that did not hold it).
        deleted: bool,
    },
    /// Several workflows found unchanged (the target already holds what would be
    /// written), recorded in one append: one `workflow_result_recorded` each.
    /// Workflows already recorded are skipped.
    RecordUnchanged {
        /// (workflow id, its id in the target, content hash)
        workflows: Vec<(String, String, Option<String>)>,
    },
    /// The target re-read after the pushes: the workflows that do not hold what was
    /// written (empty: verified).
    RecordVerification {
        mismatches: Vec<String>,
    },
    /// The first failure: every workflow touched so far is restored from the
    /// pre-snapshot.
    StartRollback {
        reason: String,
    },
    RecordRestore {
        workflow_id: String,
        action: Option<RestoreAction>,
        attempts: u32,
        error: Option<String>,
    },
    /// The target re-read after the restores: what does not match the pre-snapshot
    /// (empty: restored exactly).
    FinishRollback {
        inconsistencies: Vec<String>,
    },
    RecordGitCommit {
        commit_sha: Option<String>,
        files: u32,
        error: Option<String>,
    },
    /// Ends a running deployment: `Success` (every workflow done, none failed, no
    /// rollback) or `Failed`.
    Finish {
        outcome: DeploymentStatus,
        reason: Option<String>,
    },
    Cancel {
        reason: Option<String>,
    },
    /// Stale sweep: a deployment running for longer than `after` is to be recovered
    /// (its target restored from the pre-snapshot, then failed as stale).
    MarkStale {
        after: Duration,
    },
}

impl DomainCommand for DeploymentCommand {
    fn required_role(&self) -> Role {
        use DeploymentCommand::*;
        match self {
            Create { .. } | Start | Cancel { .. } => Role::Admin,
            RecordGates { .. }
            | RecordSnapshot { .. }
            | RecordWorkflowResult { .. }
            | RecordUnchanged { .. }
            | RecordVerification { .. }
            | StartRollback { .. }
            | RecordRestore { .. }
            | FinishRollback { .. }
            | RecordGitCommit { .. }
            | Finish { .. }
            | MarkStale { .. } => Role::System,
        }
    }
    fn reason(&self) -> Option<&str> {
        match self {
            DeploymentCommand::Cancel { reason } | DeploymentCommand::Finish { reason, .. } => {
                reason.as_deref()
            }
            DeploymentCommand::StartRollback { reason } => Some(reason),
            _ => None,
        }
    }
    fn creates(&self) -> bool {
        matches!(self, DeploymentCommand::Create { .. })
    }

    fn name(&self) -> &'static str {
        use DeploymentCommand::*;
        match self {
            Create { .. } => "deployment.create",
            Start => "deployment.start",
            RecordGates { .. } => "deployment.record_gates",
            RecordSnapshot { .. } => "deployment.record_snapshot",
            RecordWorkflowResult { .. } => "deployment.record_workflow_result",
            RecordUnchanged { .. } => "deployment.record_unchanged",
            RecordVerification { .. } => "deployment.record_verification",
            StartRollback { .. } => "deployment.start_rollback",
            RecordRestore { .. } => "deployment.record_restore",
            FinishRollback { .. } => "deployment.finish_rollback",
            RecordGitCommit { .. } => "deployment.record_git_commit",
            Finish { .. } => "deployment.finish",
            Cancel { .. } => "deployment.cancel",
            MarkStale { .. } => "deployment.mark_stale",
        }
    }
}
