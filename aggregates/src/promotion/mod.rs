//! Promotion (DOMAIN.md §2.3 and §5): moving canonical workflows from a source
//! environment to a target, through gates, an optional approval, execution by a
//! deployment, and rollback.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::kernel::command::{DomainCommand, Issued, Role};
use crate::kernel::error::{non_blank, require_text, DomainError};
use crate::kernel::ids::LocalId;
use crate::kernel::transitions::{self, Lifecycle, StateMachine};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PromotionStatus {
    #[default]
    Pending,
    PendingApproval,
    Approved,
    Rejected,
    Running,
    Completed,
    RolledBack,
    Failed,
    Cancelled,
}

crate::state_names!(PromotionStatus {
    Pending => "pending",
    PendingApproval => "pending_approval",
    Approved => "approved",
    Rejected => "rejected",
    Running => "running",
    Completed => "completed",
    RolledBack => "rolled_back",
    Failed => "failed",
    Cancelled => "cancelled",
});

impl StateMachine for PromotionStatus {
    const MACHINE: &'static str = "promotion";
    const ALL: &'static [Self] = {
        use PromotionStatus::*;
        &[
            Pending,
            PendingApproval,
            Approved,
            Rejected,
            Running,
            Completed,
            RolledBack,
            Failed,
            Cancelled,
        ]
    };
    const INITIAL: &'static [Self] = &[Self::Pending];
    const VALID_TRANSITIONS: &'static [(Self, &'static [Self])] = {
        use PromotionStatus::*;
        &[
            (Pending, &[PendingApproval, Approved, Failed, Cancelled]),
            (PendingApproval, &[Approved, Rejected, Cancelled]),
            (Approved, &[Running, Cancelled]),
            (Running, &[Completed, RolledBack, Failed]),
            (Rejected, &[]),
            (Completed, &[]),
            (RolledBack, &[]),
            (Failed, &[]),
            (Cancelled, &[]),
        ]
    };
}

/// One workflow to promote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionWorkflow {
    pub canonical_id: String,
    pub name: String,
    /// Content hash of the source version being promoted.
    pub source_content_hash: Option<String>,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PromotionEvent {
    Created {
        pipeline_id: String,
        source_environment_id: String,
        target_environment_id: String,
        workflows: Vec<PromotionWorkflow>,
        requires_approval: bool,
        allow_self_approval: bool,
        bypass_validation: bool,
        created_by: String,
    },
    GatesEvaluated {
        from: PromotionStatus,
        to: PromotionStatus,
        results: Vec<GateResult>,
        bypassed: bool,
    },
    Approved {
        from: PromotionStatus,
        approved_by: String,
    },
    Rejected {
        from: PromotionStatus,
        rejected_by: String,
        reason: String,
    },
    Cancelled {
        from: PromotionStatus,
        reason: Option<String>,
    },
    Started {
        from: PromotionStatus,
        deployment_id: String,
        at: DateTime<Utc>,
    },
    Completed {
        from: PromotionStatus,
        outcomes: Vec<WorkflowOutcome>,
        at: DateTime<Utc>,
    },
    RolledBack {
        from: PromotionStatus,
        outcomes: Vec<WorkflowOutcome>,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    Failed {
        from: PromotionStatus,
        reason: Option<String>,
        inconsistencies: Vec<String>,
        at: DateTime<Utc>,
    },
}

impl PromotionEvent {
    /// `(from, to)` when the event moves the status.
    pub fn status_change(&self) -> Option<(Option<PromotionStatus>, PromotionStatus)> {
        use PromotionEvent::*;
        use PromotionStatus as S;
        Some(match self {
            Created { .. } => (None, S::Pending),
            GatesEvaluated { from, to, .. } => (Some(*from), *to),
            Approved { from, .. } => (Some(*from), S::Approved),
            Rejected { from, .. } => (Some(*from), S::Rejected),
            Cancelled { from, .. } => (Some(*from), S::Cancelled),
            Started { from, .. } => (Some(*from), S::Running),
            Completed { from, .. } => (Some(*from), S::Completed),
            RolledBack { from, .. } => (Some(*from), S::RolledBack),
            Failed { from, .. } => (Some(*from), S::Failed),
        })
    }
}

impl DomainEvent for PromotionEvent {
    fn event_type(&self) -> String {
        use PromotionEvent::*;
        match self {
            Created { .. } => "promotion.created",
            GatesEvaluated { .. } => "promotion.gates_evaluated",
            Approved { .. } => "promotion.approved",
            Rejected { .. } => "promotion.rejected",
            Cancelled { .. } => "promotion.cancelled",
            Started { .. } => "promotion.started",
            Completed { .. } => "promotion.completed",
            RolledBack { .. } => "promotion.rolled_back",
            Failed { .. } => "promotion.failed",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    pub created: bool,
    pub status: PromotionStatus,
    pub pipeline_id: String,
    pub source_environment_id: String,
    pub target_environment_id: String,
    pub workflows: Vec<PromotionWorkflow>,
    pub requires_approval: bool,
    pub allow_self_approval: bool,
    pub bypass_validation: bool,
    pub created_by: String,
    pub approved_by: Option<String>,
    pub gate_results: Vec<GateResult>,
    pub deployment_id: Option<String>,
    pub outcomes: Vec<WorkflowOutcome>,
    pub inconsistencies: Vec<String>,
}

impl Promotion {
    pub fn decide(
        &self,
        issued: Issued<PromotionCommand>,
    ) -> Result<Vec<PromotionEvent>, DomainError> {
        use PromotionCommand::*;
        if issued.admin_override {
            // Promotion transitions drive real changes in n8n; forcing one outside the
            // table (say, cancelling a running promotion) would skip its rollback.
            return Err(DomainError::validation(
                "admin_override",
                "promotions take no admin override",
            ));
        }
        let actor = issued.actor.clone();
        let at = issued.at;
        if let Create {
            pipeline_id,
            source_environment_id,
            target_environment_id,
            workflows,
            requires_approval,
            allow_self_approval,
            bypass_validation,
        } = issued.command
        {
            if self.created {
                return Err(DomainError::validation("promotion_id", "already exists"));
            }
            transitions::check_initial(PromotionStatus::Pending)?;
            if source_environment_id == target_environment_id {
                return Err(DomainError::validation(
                    "target_environment_id",
                    "must differ from the source",
                ));
            }
            if workflows.is_empty() {
                return Err(DomainError::validation(
                    "workflows",
                    "at least one workflow is required",
                ));
            }
            if bypass_validation {
                actor.require_admin("bypass_validation")?;
            }
            return Ok(vec![PromotionEvent::Created {
                pipeline_id: pipeline_id.into(),
                source_environment_id: source_environment_id.into(),
                target_environment_id: target_environment_id.into(),
                workflows,
                requires_approval,
                allow_self_approval,
                bypass_validation,
                created_by: actor.id,
            }]);
        }
        if !self.created {
            return Err(DomainError::NotFound {
                kind: "promotion",
                id: String::new(),
            });
        }
        let from = self.status;
        let event = match issued.command {
            Create { .. } => unreachable!("handled above"),
            RecordGateResults { results } => {
                let blocked =
                    !self.bypass_validation && results.iter().any(|r| r.blocking && !r.passed);
                let target = if blocked {
                    PromotionStatus::Failed
                } else if self.requires_approval {
                    PromotionStatus::PendingApproval
                } else {
                    PromotionStatus::Approved
                };
                let to = target;
                if from != PromotionStatus::Pending {
                    return Err(DomainError::validation(
                        "status",
                        format!("gates are evaluated while pending, not {from}"),
                    ));
                }
                transitions::check(from, to, false)?;
                PromotionEvent::GatesEvaluated {
                    from,
                    to,
                    results,
                    bypassed: self.bypass_validation,
                }
            }
            Approve => {
                transitions::check(from, PromotionStatus::Approved, false)?;
                if from == PromotionStatus::Pending {
                    return Err(DomainError::validation(
                        "status",
                        "gates have not been evaluated yet",
                    ));
                }
                actor.require_admin("approving a promotion")?;
                if actor.id == self.created_by && !self.allow_self_approval {
                    return Err(DomainError::Forbidden(
                        "the approver must not be the promotion's creator".into(),
                    ));
                }
                PromotionEvent::Approved {
                    from,
                    approved_by: actor.id,
                }
            }
            Reject { reason } => {
                transitions::check(from, PromotionStatus::Rejected, false)?;
                actor.require_admin("rejecting a promotion")?;
                PromotionEvent::Rejected {
                    from,
                    rejected_by: actor.id,
                    reason: require_text("reason", reason.as_deref())?,
                }
            }
            Cancel { reason } => {
                transitions::check(from, PromotionStatus::Cancelled, false)?;
                PromotionEvent::Cancelled {
                    from,
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                }
            }
            Start { deployment_id } => {
                transitions::check(from, PromotionStatus::Running, false)?;
                PromotionEvent::Started {
                    from,
                    deployment_id: deployment_id.into(),
                    at,
                }
            }
            Complete { outcomes } => {
                transitions::check(from, PromotionStatus::Completed, false)?;
                PromotionEvent::Completed { from, outcomes, at }
            }
            RollBack { outcomes, reason } => {
                transitions::check(from, PromotionStatus::RolledBack, false)?;
                PromotionEvent::RolledBack {
                    from,
                    outcomes,
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                    at,
                }
            }
            Fail {
                reason,
                inconsistencies,
            } => {
                transitions::check(from, PromotionStatus::Failed, false)?;
                PromotionEvent::Failed {
                    from,
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                    inconsistencies,
                    at,
                }
            }
        };
        Ok(vec![event])
    }
}

impl Aggregate for Promotion {
    const TYPE: &'static str = "promotion";
    type Command = Issued<PromotionCommand>;
    type Event = PromotionEvent;
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

    fn apply(&mut self, event: PromotionEvent) {
        if let Some((_, to)) = event.status_change() {
            self.status = to;
        }
        use PromotionEvent::*;
        match event {
            Created {
                pipeline_id,
                source_environment_id,
                target_environment_id,
                workflows,
                requires_approval,
                allow_self_approval,
                bypass_validation,
                created_by,
            } => {
                self.created = true;
                self.pipeline_id = pipeline_id;
                self.source_environment_id = source_environment_id;
                self.target_environment_id = target_environment_id;
                self.workflows = workflows;
                self.requires_approval = requires_approval;
                self.allow_self_approval = allow_self_approval;
                self.bypass_validation = bypass_validation;
                self.created_by = created_by;
            }
            GatesEvaluated { results, .. } => self.gate_results = results,
            Approved { approved_by, .. } => self.approved_by = Some(approved_by),
            Started { deployment_id, .. } => self.deployment_id = Some(deployment_id),
            Completed { outcomes, .. } | RolledBack { outcomes, .. } => self.outcomes = outcomes,
            Failed {
                inconsistencies, ..
            } => self.inconsistencies = inconsistencies,
            Rejected { .. } | Cancelled { .. } => {}
        }
    }
}

impl Lifecycle for Promotion {
    fn check_step(before: &Self, after: &Self, admin_override: bool) -> Result<(), DomainError> {
        let status = |a: &Self| a.created.then_some(a.status);
        transitions::step(status(before), status(after), admin_override)
    }
}

#[cfg(test)]
mod tests;
