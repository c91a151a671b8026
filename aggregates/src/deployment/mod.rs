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

/// A running deployment older than this at start-up is marked failed (stale).
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentWorkflow {
    pub workflow_id: String,
    pub name: String,
    pub status: WorkflowDeployStatus,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub created: bool,
    pub promotion_id: String,
    pub status: DeploymentStatus,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub workflows: Vec<DeploymentWorkflow>,
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
                .map(|(workflow_id, name)| DeploymentWorkflow {
                    workflow_id,
                    name,
                    status: WorkflowDeployStatus::Pending,
                    error: None,
                })
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
            RecordWorkflowResult {
                workflow_id,
                status,
                error,
            } => {
                if from != DeploymentStatus::Running {
                    return Err(DomainError::validation(
                        "status",
                        format!("a {from} deployment records no results"),
                    ));
                }
                let Some(index) = self
                    .workflows
                    .iter()
                    .position(|w| w.workflow_id == workflow_id)
                else {
                    return Err(DomainError::NotFound {
                        kind: "deployment workflow",
                        id: workflow_id,
                    });
                };
                let current = self.workflows[index].status;
                if current == status {
                    return Ok(vec![]);
                }
                transitions::check(current, status, false)?;
                let mut workflows = self.workflows.clone();
                workflows[index].status = status;
                let mut events = vec![DeploymentEvent::WorkflowResultRecorded {
                    workflow_id,
                    status,
                    error,
                }];
                if let Some(to) = Self::roll_up(&workflows) {
                    transitions::check(from, to, false)?;
                    events.push(DeploymentEvent::Finished {
                        from,
                        to,
                        at,
                        reason: None,
                    });
                }
                Ok(events)
            }
            MarkStale => {
                let started = self.started_at.unwrap_or(at);
                if from != DeploymentStatus::Running || at - started < STALE_AFTER {
                    return Ok(vec![]);
                }
                transitions::check(from, DeploymentStatus::Failed, false)?;
                Ok(vec![DeploymentEvent::Finished {
                    from,
                    to: DeploymentStatus::Failed,
                    at,
                    reason: Some("stale".into()),
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
        if let Some((_, to)) = event.status_change() {
            self.status = to;
        }
        match event {
            DeploymentEvent::Created {
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
            DeploymentEvent::Started { at, .. } => self.started_at = Some(at),
            DeploymentEvent::WorkflowResultRecorded {
                workflow_id,
                status,
                error,
            } => {
                if let Some(w) = self
                    .workflows
                    .iter_mut()
                    .find(|w| w.workflow_id == workflow_id)
                {
                    w.status = status;
                    w.error = error;
                }
            }
            DeploymentEvent::Finished { at, .. } => self.finished_at = Some(at),
            DeploymentEvent::Cancelled { .. } => {}
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
