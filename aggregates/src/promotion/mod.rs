//! Promotion (DOMAIN.md §2.3 and §5): moving canonical workflows from a source
//! environment to a target, through gates, an optional approval, execution by a
//! deployment, and rollback.

mod commands;
mod events;
pub mod plan;
pub mod rewrite;

pub use commands::*;
pub use events::*;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::kernel::command::Issued;
use crate::kernel::error::{non_blank, require_text, DomainError};
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
    /// A restore: the snapshot the workflows come from.
    pub source_snapshot: Option<SnapshotSource>,
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
            source_snapshot,
        } = issued.command
        {
            if self.created {
                return Err(DomainError::validation("promotion_id", "already exists"));
            }
            transitions::check_initial(PromotionStatus::Pending)?;
            match &source_snapshot {
                None if source_environment_id == target_environment_id => {
                    return Err(DomainError::validation(
                        "target_environment_id",
                        "must differ from the source",
                    ));
                }
                Some(_) if source_environment_id != target_environment_id => {
                    return Err(DomainError::validation(
                        "source_environment_id",
                        "a restore's source is a snapshot of the target itself",
                    ));
                }
                Some(snapshot) => {
                    require_text("source_snapshot.snapshot_id", Some(&snapshot.snapshot_id))?;
                    require_text("source_snapshot.digest", Some(&snapshot.digest))?;
                }
                None => {}
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
                source_snapshot,
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
                source_snapshot,
            } => {
                self.created = true;
                self.source_snapshot = source_snapshot;
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
