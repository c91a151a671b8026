//! Deployment (DOMAIN.md §2.4): the execution of one approved promotion, now
//! (`pending`) or at `scheduled_for` (`scheduled`), with a status per workflow that
//! rolls up into the deployment's own.

mod commands;
mod events;

pub use commands::*;
pub use events::*;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::kernel::command::Issued;
use crate::kernel::error::{non_blank, DomainError};
use crate::kernel::transitions::{self, Lifecycle, StateMachine};
use crate::promotion::GateResult;

/// A deployment running for longer than this is recovered and failed as stale
/// (the default of the stale sweep).
pub const STALE_AFTER: Duration = Duration::hours(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    #[default]
    Pending,
    Scheduled,
    Running,
    Success,
    Failed,
    Cancelled,
}

crate::state_names!(DeploymentStatus {
    Pending => "pending",
    Scheduled => "scheduled",
    Running => "running",
    Success => "success",
    Failed => "failed",
    Cancelled => "cancelled",
});

impl StateMachine for DeploymentStatus {
    const MACHINE: &'static str = "deployment";
    const ALL: &'static [Self] = {
        use DeploymentStatus::*;
        &[Pending, Scheduled, Running, Success, Failed, Cancelled]
    };
    const INITIAL: &'static [Self] = &[Self::Pending, Self::Scheduled];
    const VALID_TRANSITIONS: &'static [(Self, &'static [Self])] = {
        use DeploymentStatus::*;
        &[
            (Pending, &[Running, Cancelled]),
            (Scheduled, &[Running, Cancelled]),
            (Running, &[Success, Failed]),
            (Success, &[]),
            (Failed, &[]),
            (Cancelled, &[]),
        ]
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowDeployStatus {
    #[default]
    Pending,
    Success,
    Failed,
    Skipped,
    Unchanged,
}

crate::state_names!(WorkflowDeployStatus {
    Pending => "pending",
    Success => "success",
    Failed => "failed",
    Skipped => "skipped",
    Unchanged => "unchanged",
});

impl StateMachine for WorkflowDeployStatus {
    const MACHINE: &'static str = "deployment workflow";
    const ALL: &'static [Self] = {
        use WorkflowDeployStatus::*;
        &[Pending, Success, Failed, Skipped, Unchanged]
    };
    const INITIAL: &'static [Self] = &[Self::Pending];
    const VALID_TRANSITIONS: &'static [(Self, &'static [Self])] = {
        use WorkflowDeployStatus::*;
        &[
            (Pending, &[Success, Failed, Skipped, Unchanged]),
            (Success, &[]),
            (Failed, &[]),
            (Skipped, &[]),
            (Unchanged, &[]),
        ]
    };
}

/// Where a running deployment is (seed 002's phases). Progress, not a state of the
/// transition table: every phase begins with its own event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentPhase {
    /// Not started (pending or scheduled), or cancelled.
    #[default]
    Waiting,
    Gates,
    PreSnapshot,
    Pushing,
    Verifying,
    PostSnapshot,
    GitCommit,
    RollingBack,
    Done,
}

crate::state_names!(DeploymentPhase {
    Waiting => "waiting",
    Gates => "gates",
    PreSnapshot => "pre_snapshot",
    Pushing => "pushing",
    Verifying => "verifying",
    PostSnapshot => "post_snapshot",
    GitCommit => "git_commit",
    RollingBack => "rolling_back",
    Done => "done",
});

/// Which of a deployment's two snapshots of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    Pre,
    Post,
}

crate::state_names!(SnapshotKind {
    Pre => "pre",
    Post => "post",
});

/// What the rollback did to one workflow to bring it back to the pre-snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreAction {
    /// Written back as the pre-snapshot holds it.
    Updated,
    /// It had been deleted: created again from the pre-snapshot.
    Recreated,
    /// This deployment created it: deleted.
    Deleted,
    /// Already as the pre-snapshot holds it.
    Unchanged,
}

crate::state_names!(RestoreAction {
    Updated => "updated",
    Recreated => "recreated",
    Deleted => "deleted",
    Unchanged => "unchanged",
});

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentWorkflow {
    pub workflow_id: String,
    pub name: String,
    pub status: WorkflowDeployStatus,
    pub error: Option<String>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub target_id: Option<String>,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub content_hash: Option<String>,
    /// This deployment deleted it from the target (`target_id`): a restore of a
    /// snapshot that did not hold it.
    #[serde(default)]
    pub deleted: bool,
    /// What the rollback did to it (`None`: not rolled back, or it failed).
    #[serde(default)]
    pub restored: Option<RestoreAction>,
    #[serde(default)]
    pub restore_error: Option<String>,
}

impl DeploymentWorkflow {
    pub fn new(workflow_id: String, name: String) -> DeploymentWorkflow {
        DeploymentWorkflow {
            workflow_id,
            name,
            status: WorkflowDeployStatus::Pending,
            error: None,
            attempts: 0,
            target_id: None,
            created: false,
            content_hash: None,
            deleted: false,
            restored: None,
            restore_error: None,
        }
    }
}

/// A snapshot a deployment took: its id and the digest of its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub snapshot_id: String,
    pub digest: String,
    pub workflows: u32,
}

/// What the Git phase did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitResult {
    /// The commit (`None`: the target has no Git, or the commit failed).
    pub commit_sha: Option<String>,
    pub files: u32,
    pub error: Option<String>,
}

/// The rollback of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    pub reason: String,
    /// `Some` once finished: what was left different from the pre-snapshot.
    pub inconsistencies: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub created: bool,
    pub promotion_id: String,
    pub status: DeploymentStatus,
    pub phase: DeploymentPhase,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub workflows: Vec<DeploymentWorkflow>,
    pub gate_results: Option<Vec<GateResult>>,
    pub pre_snapshot: Option<SnapshotRef>,
    pub post_snapshot: Option<SnapshotRef>,
    /// `Some` once verified: the workflows that did not hold what was written.
    pub verification: Option<Vec<String>>,
    pub rollback: Option<Rollback>,
    /// `Some` once the Git phase ran (a commit, nothing to commit, or an error).
    pub git: Option<GitResult>,
    /// A stale sweep asked for recovery: no more pushes, roll back and fail.
    pub recovery_requested: Option<String>,
    pub reason: Option<String>,
}

impl Deployment {
    /// Roll-up: any failed → failed; none pending and none failed → success.
    pub fn roll_up(workflows: &[DeploymentWorkflow]) -> Option<DeploymentStatus> {
        if workflows
            .iter()
            .any(|w| w.status == WorkflowDeployStatus::Failed)
        {
            Some(DeploymentStatus::Failed)
        } else if workflows
            .iter()
            .all(|w| w.status != WorkflowDeployStatus::Pending)
        {
            Some(DeploymentStatus::Success)
        } else {
            None
        }
    }

    /// Workflows with a status other than pending.
    pub fn done(&self) -> usize {
        self.workflows
            .iter()
            .filter(|w| w.status != WorkflowDeployStatus::Pending)
            .count()
    }

    fn workflow(&self, workflow_id: &str) -> Result<usize, DomainError> {
        self.workflows
            .iter()
            .position(|w| w.workflow_id == workflow_id)
            .ok_or_else(|| DomainError::NotFound {
                kind: "deployment workflow",
                id: workflow_id.to_string(),
            })
    }

    /// Refuses a progress record unless the deployment is running.
    fn running(&self) -> Result<(), DomainError> {
        if self.status != DeploymentStatus::Running {
            return Err(DomainError::validation(
                "status",
                format!("a {} deployment records no progress", self.status),
            ));
        }
        Ok(())
    }

    /// Refuses a push result once the rollback started or a recovery was asked for.
    fn pushing(&self) -> Result<(), DomainError> {
        self.running()?;
        if let Some(rollback) = &self.rollback {
            return Err(DomainError::Conflict(format!(
                "the deployment is rolling back ({}): no more pushes",
                rollback.reason
            )));
        }
        if let Some(reason) = &self.recovery_requested {
            return Err(DomainError::Conflict(format!(
                "recovery was requested ({reason}): no more pushes"
            )));
        }
        Ok(())
    }

    pub fn decide(
        &self,
        issued: Issued<DeploymentCommand>,
    ) -> Result<Vec<DeploymentEvent>, DomainError> {
        use DeploymentCommand::*;
        let at = issued.at;
        if let Create {
            promotion_id,
            scheduled_for,
            workflows,
        } = issued.command
        {
            if self.created {
                return Err(DomainError::validation("deployment_id", "already exists"));
            }
            if workflows.is_empty() {
                return Err(DomainError::validation(
                    "workflows",
                    "at least one workflow is required",
                ));
            }
            let status = match scheduled_for {
                Some(when) if when > at => DeploymentStatus::Scheduled,
                Some(_) => {
                    return Err(DomainError::validation(
                        "scheduled_for",
                        "must be in the future",
                    ))
                }
                None => DeploymentStatus::Pending,
            };
            transitions::check_initial(status)?;
            let workflows = workflows
                .into_iter()
                .map(|(workflow_id, name)| DeploymentWorkflow::new(workflow_id, name))
                .collect();
            return Ok(vec![DeploymentEvent::Created {
                promotion_id: promotion_id.into(),
                status,
                scheduled_for,
                workflows,
            }]);
        }
        if !self.created {
            return Err(DomainError::NotFound {
                kind: "deployment",
                id: String::new(),
            });
        }
        let from = self.status;
        match issued.command {
            Create { .. } => unreachable!("handled above"),
            Start => {
                transitions::check(from, DeploymentStatus::Running, false)?;
                if let (DeploymentStatus::Scheduled, Some(when)) = (from, self.scheduled_for) {
                    if at < when {
                        return Err(DomainError::validation(
                            "scheduled_for",
                            format!("not due until {when}"),
                        ));
                    }
                }
                Ok(vec![DeploymentEvent::Started { from, at }])
            }
            Cancel { reason } => {
                transitions::check(from, DeploymentStatus::Cancelled, false)?;
                Ok(vec![DeploymentEvent::Cancelled {
                    from,
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                }])
            }
            RecordGates { results } => {
                self.running()?;
                if self.gate_results.is_some() {
                    return Ok(vec![]);
                }
                let passed = results.iter().all(|r| r.passed || !r.blocking);
                Ok(vec![DeploymentEvent::GatesChecked { results, passed }])
            }
            RecordSnapshot {
                kind,
                environment_id,
                promotion_id,
                snapshot_id,
                digest,
                workflows,
            } => {
                self.running()?;
                let taken = match kind {
                    SnapshotKind::Pre => &self.pre_snapshot,
                    SnapshotKind::Post => &self.post_snapshot,
                };
                if let Some(taken) = taken {
                    if taken.snapshot_id == snapshot_id {
                        return Ok(vec![]);
                    }
                    return Err(DomainError::Conflict(format!(
                        "the {kind}-snapshot was taken already ({})",
                        taken.snapshot_id
                    )));
                }
                if kind == SnapshotKind::Post && self.rollback.is_some() {
                    return Err(DomainError::validation(
                        "kind",
                        "a rolled back deployment takes no post-snapshot",
                    ));
                }
                Ok(vec![DeploymentEvent::SnapshotTaken {
                    kind,
                    environment_id,
                    promotion_id,
                    snapshot_id,
                    digest,
                    workflows,
                }])
            }
            RecordWorkflowResult {
                workflow_id,
                status,
                error,
                attempts,
                target_id,
                created,
                content_hash,
                deleted,
            } => {
                self.pushing()?;
                let index = self.workflow(&workflow_id)?;
                let current = self.workflows[index].status;
                if current == status {
                    return Ok(vec![]);
                }
                transitions::check(current, status, false)?;
                Ok(vec![DeploymentEvent::WorkflowResultRecorded {
                    workflow_id,
                    status,
                    error,
                    attempts,
                    target_id,
                    created,
                    content_hash,
                    deleted,
                }])
            }
            RecordUnchanged { workflows } => {
                self.pushing()?;
                let mut events = Vec::with_capacity(workflows.len());
                for (workflow_id, target_id, content_hash) in workflows {
                    let current = self.workflows[self.workflow(&workflow_id)?].status;
                    if current != WorkflowDeployStatus::Pending {
                        continue;
                    }
                    transitions::check(current, WorkflowDeployStatus::Unchanged, false)?;
                    events.push(DeploymentEvent::WorkflowResultRecorded {
                        workflow_id,
                        status: WorkflowDeployStatus::Unchanged,
                        error: None,
                        attempts: 0,
                        target_id: Some(target_id),
                        created: false,
                        content_hash,
                        deleted: false,
                    });
                }
                Ok(events)
            }
            RecordVerification { mismatches } => {
                self.pushing()?;
                if self.verification.is_some() {
                    return Ok(vec![]);
                }
                Ok(vec![DeploymentEvent::Verified { mismatches }])
            }
            StartRollback { reason } => {
                self.running()?;
                if self.rollback.is_some() {
                    return Ok(vec![]);
                }
                Ok(vec![DeploymentEvent::RollbackStarted { reason }])
            }
            RecordRestore {
                workflow_id,
                action,
                attempts,
                error,
            } => {
                self.running()?;
                match &self.rollback {
                    Some(Rollback {
                        inconsistencies: None,
                        ..
                    }) => {}
                    Some(_) => {
                        return Err(DomainError::validation(
                            "rollback",
                            "the rollback has finished",
                        ))
                    }
                    None => {
                        return Err(DomainError::validation(
                            "rollback",
                            "no rollback was started",
                        ))
                    }
                }
                self.workflow(&workflow_id)?;
                Ok(vec![DeploymentEvent::WorkflowRestored {
                    workflow_id,
                    action,
                    attempts,
                    error,
                }])
            }
            FinishRollback { inconsistencies } => {
                self.running()?;
                match &self.rollback {
                    Some(Rollback {
                        inconsistencies: None,
                        ..
                    }) => Ok(vec![DeploymentEvent::RollbackFinished { inconsistencies }]),
                    Some(_) => Ok(vec![]),
                    None => Err(DomainError::validation(
                        "rollback",
                        "no rollback was started",
                    )),
                }
            }
            RecordGitCommit {
                commit_sha,
                files,
                error,
            } => {
                self.pushing()?;
                if self.git.is_some() {
                    return Ok(vec![]);
                }
                Ok(vec![DeploymentEvent::GitCommitted {
                    commit_sha,
                    files,
                    error,
                }])
            }
            Finish { outcome, reason } => {
                transitions::check(from, outcome, false)?;
                if outcome == DeploymentStatus::Success {
                    if self.rollback.is_some() || self.recovery_requested.is_some() {
                        return Err(DomainError::validation(
                            "outcome",
                            "a rolled back deployment did not succeed",
                        ));
                    }
                    if Self::roll_up(&self.workflows) != Some(DeploymentStatus::Success) {
                        return Err(DomainError::validation(
                            "outcome",
                            format!(
                                "{} of {} workflows done, or one failed",
                                self.done(),
                                self.workflows.len()
                            ),
                        ));
                    }
                }
                Ok(vec![DeploymentEvent::Finished {
                    from,
                    to: outcome,
                    at,
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                }])
            }
            MarkStale { after } => {
                let started = self.started_at.unwrap_or(at);
                if from != DeploymentStatus::Running
                    || at - started < after
                    || self.recovery_requested.is_some()
                {
                    return Ok(vec![]);
                }
                Ok(vec![DeploymentEvent::RecoveryRequested {
                    reason: format!(
                        "stale: running since {} (longer than {} min)",
                        started.format("%Y-%m-%d %H:%M:%S UTC"),
                        after.num_minutes()
                    ),
                }])
            }
        }
    }
}

impl Aggregate for Deployment {
    const TYPE: &'static str = "deployment";
    type Command = Issued<DeploymentCommand>;
    type Event = DeploymentEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        issued: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        for event in self.decide(issued)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: DeploymentEvent) {
        use DeploymentEvent::*;
        if let Some((_, to)) = event.status_change() {
            self.status = to;
        }
        match event {
            Created {
                promotion_id,
                scheduled_for,
                workflows,
                ..
            } => {
                self.created = true;
                self.promotion_id = promotion_id;
                self.scheduled_for = scheduled_for;
                self.workflows = workflows;
            }
            Started { at, .. } => {
                self.started_at = Some(at);
                self.phase = DeploymentPhase::Gates;
            }
            GatesChecked { results, .. } => {
                self.gate_results = Some(results);
                self.phase = DeploymentPhase::PreSnapshot;
            }
            SnapshotTaken {
                kind,
                snapshot_id,
                digest,
                workflows,
                ..
            } => {
                let taken = Some(SnapshotRef {
                    snapshot_id,
                    digest,
                    workflows,
                });
                match kind {
                    SnapshotKind::Pre => {
                        self.pre_snapshot = taken;
                        self.phase = DeploymentPhase::Pushing;
                    }
                    SnapshotKind::Post => {
                        self.post_snapshot = taken;
                        self.phase = DeploymentPhase::GitCommit;
                    }
                }
            }
            WorkflowResultRecorded {
                workflow_id,
                status,
                error,
                attempts,
                target_id,
                created,
                content_hash,
                deleted,
            } => {
                if let Some(w) = self
                    .workflows
                    .iter_mut()
                    .find(|w| w.workflow_id == workflow_id)
                {
                    w.status = status;
                    w.error = error;
                    w.attempts = attempts;
                    w.target_id = target_id.or(w.target_id.take());
                    w.created = created;
                    w.content_hash = content_hash;
                    w.deleted = deleted;
                }
                self.phase = DeploymentPhase::Pushing;
            }
            Verified { mismatches } => {
                self.verification = Some(mismatches);
                self.phase = DeploymentPhase::PostSnapshot;
            }
            RollbackStarted { reason } => {
                self.rollback = Some(Rollback {
                    reason,
                    inconsistencies: None,
                });
                self.phase = DeploymentPhase::RollingBack;
            }
            WorkflowRestored {
                workflow_id,
                action,
                error,
                ..
            } => {
                if let Some(w) = self
                    .workflows
                    .iter_mut()
                    .find(|w| w.workflow_id == workflow_id)
                {
                    w.restored = action;
                    w.restore_error = error;
                }
            }
            RollbackFinished { inconsistencies } => {
                if let Some(rollback) = self.rollback.as_mut() {
                    rollback.inconsistencies = Some(inconsistencies);
                }
            }
            GitCommitted {
                commit_sha,
                files,
                error,
            } => {
                self.git = Some(GitResult {
                    commit_sha,
                    files,
                    error,
                });
            }
            RecoveryRequested { reason } => self.recovery_requested = Some(reason),
            Finished { at, reason, .. } => {
                self.finished_at = Some(at);
                self.reason = reason;
                self.phase = DeploymentPhase::Done;
            }
            Cancelled { reason, .. } => self.reason = reason,
        }
    }
}

impl Lifecycle for Deployment {
    /// The deployment's status, and each workflow's (a workflow that appears is
    /// created; one may not disappear).
    fn check_step(before: &Self, after: &Self, admin_override: bool) -> Result<(), DomainError> {
        let status = |a: &Self| a.created.then_some(a.status);
        transitions::step(status(before), status(after), admin_override)?;
        let of = |a: &Self, id: &str| {
            a.workflows
                .iter()
                .find(|w| w.workflow_id == id)
                .map(|w| w.status)
        };
        for workflow in &after.workflows {
            transitions::step(
                of(before, &workflow.workflow_id),
                Some(workflow.status),
                admin_override,
            )?;
        }
        for workflow in &before.workflows {
            if of(after, &workflow.workflow_id).is_none() {
                transitions::step(Some(workflow.status), None, admin_override)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
