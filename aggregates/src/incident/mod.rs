//! Drift incident (DOMAIN.md §2.2): detected → acknowledged → stabilized → reconciled
//! → closed, with admin override (never out of `closed`), approvals, and an SLA state
//! kept apart from the lifecycle status.

mod commands;
mod events;
impl Lifecycle for DriftIncident {
    fn check_step(before: &Self, after: &Self, admin_override: bool) -> Result<(), DomainError> {
        let status = |a: &Self| a.opened.then_some(a.status);
        let sla = |a: &Self| a.opened.then_some(a.sla_state);
        transitions::step(status(before), status(after), admin_override)?;
        transitions::step(sla(before), sla(after), admin_override)
    }
}

#[cfg(test)]
mod tests;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

pub use commands::{AffectedWorkflow, IncidentCommand, IncidentOpening};
pub use events::{IncidentEvent, PendingAction};

use crate::kernel::command::Issued;
use crate::kernel::error::{non_blank, DomainError};
use crate::kernel::transitions::{self, Lifecycle, StateMachine};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    #[default]
    Detected,
    Acknowledged,
    Stabilized,
    Reconciled,
    Closed,
}

crate::state_names!(IncidentStatus {
    Detected => "detected",
    Acknowledged => "acknowledged",
    Stabilized => "stabilized",
    Reconciled => "reconciled",
    Closed => "closed",
});

impl StateMachine for IncidentStatus {
    const MACHINE: &'static str = "incident";
    const ALL: &'static [Self] = &[
        Self::Detected,
        Self::Acknowledged,
        Self::Stabilized,
        Self::Reconciled,
        Self::Closed,
    ];
    const INITIAL: &'static [Self] = &[Self::Detected];
    const VALID_TRANSITIONS: &'static [(Self, &'static [Self])] = {
        use IncidentStatus::*;
        &[
            (Detected, &[Acknowledged, Closed]),
            (Acknowledged, &[Stabilized, Reconciled, Closed]),
            (Stabilized, &[Reconciled, Closed]),
            (Reconciled, &[Closed]),
            (Closed, &[]),
        ]
    };
}

/// SLA position of an open incident. Not a lifecycle status: it moves with time.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum SlaState {
    #[default]
    OnTrack,
    Escalated,
    CriticalOverdue,
    Expired,
}

crate::state_names!(SlaState {
    OnTrack => "on_track",
    Escalated => "escalated",
    CriticalOverdue => "critical_overdue",
    Expired => "expired",
});

impl StateMachine for SlaState {
    const MACHINE: &'static str = "incident SLA";
    const ALL: &'static [Self] = &[
        Self::OnTrack,
        Self::Escalated,
        Self::CriticalOverdue,
        Self::Expired,
    ];
    const INITIAL: &'static [Self] = &[Self::OnTrack];
    /// The TTL job moves one step at a time; `extend_ttl` recomputes the state from
    /// the new deadline instead (recorded in `ttl_extended`).
    const VALID_TRANSITIONS: &'static [(Self, &'static [Self])] = {
        use SlaState::*;
        &[
            (OnTrack, &[Escalated]),
            (Escalated, &[CriticalOverdue]),
            (CriticalOverdue, &[Expired]),
            (Expired, &[]),
        ]
    };
}

impl SlaState {
    /// The state for the elapsed share of the TTL: 25 % escalated, 75 % critical
    /// overdue, 100 % expired.
    pub fn at(detected_at: DateTime<Utc>, deadline: DateTime<Utc>, now: DateTime<Utc>) -> SlaState {
        let total = (deadline - detected_at).num_milliseconds().max(1) as f64;
        let elapsed = (now - detected_at).num_milliseconds() as f64;
        let share = elapsed / total;
        if share >= 1.0 {
            SlaState::Expired
        } else if share >= 0.75 {
            SlaState::CriticalOverdue
        } else if share >= 0.25 {
            SlaState::Escalated
        } else {
            SlaState::OnTrack
        }
    }

    fn next(self) -> Option<SlaState> {
        transitions::allowed_targets(self).first().copied()
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Low,
    Medium,
    High,
    Critical,
}

crate::state_names!(Severity {
    Low => "low",
    Medium => "medium",
    High => "high",
    Critical => "critical",
});

impl Severity {
    /// ≥10 affected workflows critical, ≥5 high, ≥2 medium, else low.
    pub fn from_affected(count: usize) -> Severity {
        match count {
            n if n >= 10 => Severity::Critical,
            n if n >= 5 => Severity::High,
            n if n >= 2 => Severity::Medium,
            _ => Severity::Low,
        }
    }

    pub fn raised(self) -> Severity {
        match self {
            Severity::Low => Severity::Medium,
            Severity::Medium => Severity::High,
            Severity::High | Severity::Critical => Severity::Critical,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionType {
    Promote,
    Revert,
    Replace,
    Acknowledge,
}

crate::state_names!(ResolutionType {
    Promote => "promote",
    Revert => "revert",
    Replace => "replace",
    Acknowledge => "acknowledge",
});

/// TTL hours per severity (defaults: critical 24 h, high 48 h, medium 72 h, low 168 h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityTtls {
    pub critical_hours: u32,
    pub high_hours: u32,
    pub medium_hours: u32,
    pub low_hours: u32,
}

impl Default for SeverityTtls {
    fn default() -> Self {
        SeverityTtls {
            critical_hours: 24,
            high_hours: 48,
            medium_hours: 72,
            low_hours: 168,
        }
    }
}

impl SeverityTtls {
    pub fn ttl(&self, severity: Severity) -> Duration {
        let hours = match severity {
            Severity::Critical => self.critical_hours,
            Severity::High => self.high_hours,
            Severity::Medium => self.medium_hours,
            Severity::Low => self.low_hours,
        };
        Duration::hours(i64::from(hours.max(1)))
    }
}

/// Which incident actions wait for a second admin's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApprovalRequirements {
    #[serde(default)]
    pub acknowledge: bool,
    #[serde(default)]
    pub reconcile: bool,
    #[serde(default)]
    pub close: bool,
    #[serde(default)]
    pub extend_ttl: bool,
}

/// The drift policy an incident runs under, captured when it is detected so the
/// audit trail shows which rules applied (a later policy change affects new incidents).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IncidentPolicy {
    #[serde(default)]
    pub severity_ttls: SeverityTtls,
    /// Production incidents are one severity level higher.
    #[serde(default)]
    pub raise_production_severity: bool,
    #[serde(default)]
    pub approvals: ApprovalRequirements,
}

impl IncidentPolicy {
    fn severity(&self, production: bool, affected: usize) -> Severity {
        let base = Severity::from_affected(affected);
        if production && self.raise_production_severity {
            base.raised()
        } else {
            base
        }
    }

    fn requires_approval(&self, action: &PendingAction) -> bool {
        match action {
            PendingAction::Acknowledge { .. } => self.approvals.acknowledge,
            PendingAction::Reconcile { .. } => self.approvals.reconcile,
            PendingAction::Close { .. } => self.approvals.close,
            PendingAction::ExtendTtl { .. } => self.approvals.extend_ttl,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingApproval {
    pub approval_id: u32,
    pub requested_by: String,
    pub action: PendingAction,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftIncident {
    pub opened: bool,
    pub environment_id: String,
    pub production: bool,
    pub status: IncidentStatus,
    pub severity: Severity,
    pub sla_state: SlaState,
    pub policy: IncidentPolicy,
    pub affected_workflows: Vec<AffectedWorkflow>,
    pub snapshot_digest: Option<String>,
    pub snapshot_purged: bool,
    pub detected_at: Option<DateTime<Utc>>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub stabilized_at: Option<DateTime<Utc>>,
    pub reconciled_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub sla_deadline: Option<DateTime<Utc>>,
    pub owner_user_id: Option<String>,
    pub ticket_ref: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub resolution_type: Option<ResolutionType>,
    pub resolution_details: Option<String>,
    pub reason: Option<String>,
    pub pending_approval: Option<PendingApproval>,
    pub approvals_requested: u32,
}

impl Aggregate for DriftIncident {
    const TYPE: &'static str = "incident";
    type Command = Issued<IncidentCommand>;
    type Event = IncidentEvent;
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

    fn apply(&mut self, event: IncidentEvent) {
        use IncidentEvent::*;
        match event {
            Detected {
                environment_id,
                severity,
                affected_workflows,
                snapshot_digest,
                policy,
                production,
                detected_at,
                sla_deadline,
            } => {
                self.opened = true;
                self.production = production;
                self.environment_id = environment_id;
                self.status = IncidentStatus::Detected;
                self.severity = severity;
                self.affected_workflows = affected_workflows;
                self.snapshot_digest = snapshot_digest;
                self.policy = policy;
                self.detected_at = Some(detected_at);
                self.sla_deadline = Some(sla_deadline);
            }
            DriftUpdated {
                severity,
                affected_workflows,
            } => {
                self.severity = severity;
                self.affected_workflows = affected_workflows;
            }
            ApprovalRequested {
                approval_id,
                requested_by,
                action,
            } => {
                self.approvals_requested = approval_id;
                self.pending_approval = Some(PendingApproval {
                    approval_id,
                    requested_by,
                    action,
                });
            }
            ApprovalGranted { .. } | ApprovalRejected { .. } => self.pending_approval = None,
            Acknowledged {
                reason,
                owner_user_id,
                ticket_ref,
                expires_at,
                at,
                ..
            } => {
                self.status = IncidentStatus::Acknowledged;
                self.reason = reason;
                self.owner_user_id = owner_user_id;
                self.ticket_ref = ticket_ref;
                self.expires_at = expires_at;
                self.acknowledged_at = Some(at);
            }
            Stabilized { reason, at, .. } => {
                self.status = IncidentStatus::Stabilized;
                if reason.is_some() {
                    self.reason = reason;
                }
                self.stabilized_at = Some(at);
            }
            Reconciled {
                resolution_type,
                resolution_details,
                at,
                ..
            } => {
                self.status = IncidentStatus::Reconciled;
                self.resolution_type = Some(resolution_type);
                self.resolution_details = resolution_details;
                self.reconciled_at = Some(at);
            }
            Closed {
                reason,
                resolution_type,
                at,
                ..
            } => {
                self.status = IncidentStatus::Closed;
                self.reason = Some(reason);
                self.resolution_type = Some(resolution_type);
                self.closed_at = Some(at);
                self.pending_approval = None;
            }
            TtlExtended {
                new_deadline,
                sla_state,
                ..
            } => {
                self.sla_deadline = Some(new_deadline);
                self.sla_state = sla_state;
            }
            SlaEscalated { to, .. } => self.sla_state = to,
            SnapshotPayloadPurged { .. } => self.snapshot_purged = true,
        }
    }
}

impl DriftIncident {
    /// Decides which events a command produces. Pure: time and actor come in `issued`.
    pub fn decide(
        &self,
        issued: Issued<IncidentCommand>,
    ) -> Result<Vec<IncidentEvent>, DomainError> {
        let admin_override = issued.admin_override()?;
        let at = issued.at;
        let actor = issued.actor.id.clone();
        match issued.command {
            IncidentCommand::Open {
                environment_id,
                production,
                affected_workflows,
                snapshot_digest,
                policy,
            } => {
                if self.opened {
                    // A reactor may replay the open; same environment means same incident.
                    return if self.environment_id == environment_id.as_str() {
                        Ok(vec![])
                    } else {
                        Err(DomainError::validation(
                            "incident_id",
                            "already used by another environment",
                        ))
                    };
                }
                transitions::check_initial(IncidentStatus::Detected)?;
                validate_digest(snapshot_digest.as_deref())?;
                let severity = policy.severity(production, affected_workflows.len());
                Ok(vec![IncidentEvent::Detected {
                    environment_id: environment_id.to_string(),
                    severity,
                    affected_workflows,
                    snapshot_digest,
                    policy,
                    production,
                    detected_at: at,
                    sla_deadline: sla_deadline(&policy, severity, at)?,
                }])
            }
            IncidentCommand::UpdateDrift { affected_workflows } => {
                self.require_open()?;
                if self.status == IncidentStatus::Closed {
                    return Err(DomainError::validation(
                        "status",
                        "incident is closed; recurring drift opens a new incident",
                    ));
                }
                let severity = self
                    .policy
                    .severity(self.production, affected_workflows.len());
                if affected_workflows == self.affected_workflows && severity == self.severity {
                    return Ok(vec![]);
                }
                Ok(vec![IncidentEvent::DriftUpdated {
                    severity,
                    affected_workflows,
                }])
            }
            IncidentCommand::Acknowledge {
                reason,
                owner_user_id,
                ticket_ref,
                expires_at,
            } => {
                let action = PendingAction::Acknowledge {
                    reason,
                    owner_user_id,
                    ticket_ref,
                    expires_at,
                };
                self.request(action, &actor, at, admin_override)
            }
            IncidentCommand::Stabilize { reason } => {
                self.require_open()?;
                let allowed =
                    transitions::check(self.status, IncidentStatus::Stabilized, admin_override)?;
                Ok(vec![IncidentEvent::Stabilized {
                    from: self.status,
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                    at,
                    admin_override: allowed.is_override(),
                }])
            }
            IncidentCommand::Reconcile {
                resolution_type,
                resolution_details,
            } => {
                self.require_open()?;
                let resolution_type =
                    resolution_type.ok_or_else(|| DomainError::required("resolution_type"))?;
                let action = PendingAction::Reconcile {
                    resolution_type,
                    resolution_details,
                };
                self.request(action, &actor, at, admin_override)
            }
            IncidentCommand::Close {
                reason,
                resolution_type,
            } => {
                self.require_open()?;
                let reason = crate::kernel::error::require_text("reason", reason.as_deref())?;
                let action = PendingAction::Close {
                    reason,
                    resolution_type,
                };
                self.request(action, &actor, at, admin_override)
            }
            IncidentCommand::ExtendTtl {
                new_deadline,
                reason,
            } => {
                issued.actor.require_admin("extending an incident's TTL")?;
                let action = PendingAction::ExtendTtl {
                    new_deadline,
                    reason,
                };
                self.request(action, &actor, at, admin_override)
            }
            IncidentCommand::Approve { approval_id } => {
                issued.actor.require_admin("approving")?;
                let pending = self.pending(approval_id)?;
                if pending.requested_by == actor {
                    return Err(DomainError::Forbidden(
                        "the approver must be a different admin than the requester".to_string(),
                    ));
                }
                let mut events = vec![IncidentEvent::ApprovalGranted {
                    approval_id,
                    approved_by: actor,
                }];
                events.extend(self.perform(pending.action.clone(), at, false, false)?);
                Ok(events)
            }
            IncidentCommand::Reject {
                approval_id,
                reason,
            } => {
                issued.actor.require_admin("rejecting")?;
                self.pending(approval_id)?;
                let reason = crate::kernel::error::require_text("reason", reason.as_deref())?;
                Ok(vec![IncidentEvent::ApprovalRejected {
                    approval_id,
                    rejected_by: actor,
                    reason,
                }])
            }
            IncidentCommand::EvaluateSla => {
                self.require_open()?;
                let (Some(detected), Some(deadline)) = (self.detected_at, self.sla_deadline) else {
                    return Ok(vec![]);
                };
                if self.status == IncidentStatus::Closed {
                    return Ok(vec![]);
                }
                let target = SlaState::at(detected, deadline, at);
                let mut events = vec![];
                let mut current = self.sla_state;
                while current < target {
                    let Some(next) = current.next() else { break };
                    transitions::check(current, next, false)?;
                    events.push(IncidentEvent::SlaEscalated {
                        from: current,
                        to: next,
                    });
                    current = next;
                }
                Ok(events)
            }
            IncidentCommand::PurgeSnapshotPayload { retention_days } => {
                self.require_open()?;
                let (Some(closed_at), Some(digest)) =
                    (self.closed_at, self.snapshot_digest.clone())
                else {
                    return Err(DomainError::validation(
                        "status",
                        "only closed incidents with a snapshot are purged",
                    ));
                };
                if self.snapshot_purged {
                    return Ok(vec![]);
                }
                // a retention too long to represent is never reached
                let eligible_from =
                    closed_at.checked_add_signed(Duration::days(i64::from(retention_days)));
                if eligible_from.is_none_or(|from| at < from) {
                    return Err(DomainError::validation(
                        "retention_days",
                        "incident not closed long enough",
                    ));
                }
                Ok(vec![IncidentEvent::SnapshotPayloadPurged {
                    snapshot_digest: digest,
                }])
            }
        }
    }

    fn require_open(&self) -> Result<(), DomainError> {
        if self.opened {
            Ok(())
        } else {
            Err(DomainError::NotFound {
                kind: "incident",
                id: String::new(),
            })
        }
    }

    fn pending(&self, approval_id: u32) -> Result<&PendingApproval, DomainError> {
        self.require_open()?;
        self.pending_approval
            .as_ref()
            .filter(|p| p.approval_id == approval_id)
            .ok_or(DomainError::NotFound {
                kind: "approval",
                id: approval_id.to_string(),
            })
    }

    /// An action that may need approval: validated now, then either performed or
    /// recorded as a pending approval. An admin override bypasses the approval.
    fn request(
        &self,
        action: PendingAction,
        actor: &str,
        at: DateTime<Utc>,
        admin_override: bool,
    ) -> Result<Vec<IncidentEvent>, DomainError> {
        self.require_open()?;
        // Validate fully before recording anything, so a request that could never be
        // performed is refused now rather than at approval time.
        self.perform(action.clone(), at, admin_override, false)?;
        let needs_approval = self.policy.requires_approval(&action);
        if needs_approval && !admin_override {
            if let Some(p) = &self.pending_approval {
                return Err(DomainError::validation(
                    "approval",
                    format!(
                        "approval {} is already pending for this incident",
                        p.approval_id
                    ),
                ));
            }
            return Ok(vec![IncidentEvent::ApprovalRequested {
                approval_id: self.approvals_requested + 1,
                requested_by: actor.to_string(),
                action,
            }]);
        }
        self.perform(action, at, admin_override, needs_approval)
    }

    fn perform(
        &self,
        action: PendingAction,
        at: DateTime<Utc>,
        admin_override: bool,
        approval_bypassed: bool,
    ) -> Result<Vec<IncidentEvent>, DomainError> {
        let from = self.status;
        let event = match action {
            PendingAction::Acknowledge {
                reason,
                owner_user_id,
                ticket_ref,
                expires_at,
            } => {
                let allowed =
                    transitions::check(from, IncidentStatus::Acknowledged, admin_override)?;
                if let Some(expiry) = expires_at {
                    if expiry <= at {
                        return Err(DomainError::validation(
                            "expires_at",
                            "must be in the future",
                        ));
                    }
                }
                IncidentEvent::Acknowledged {
                    from,
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                    owner_user_id: non_blank(owner_user_id.as_deref()).map(str::to_string),
                    ticket_ref: non_blank(ticket_ref.as_deref()).map(str::to_string),
                    expires_at,
                    at,
                    admin_override: allowed.is_override(),
                    approval_bypassed,
                }
            }
            PendingAction::Reconcile {
                resolution_type,
                resolution_details,
            } => {
                let allowed = transitions::check(from, IncidentStatus::Reconciled, admin_override)?;
                IncidentEvent::Reconciled {
                    from,
                    resolution_type,
                    resolution_details: non_blank(resolution_details.as_deref())
                        .map(str::to_string),
                    at,
                    admin_override: allowed.is_override(),
                    approval_bypassed,
                }
            }
            PendingAction::Close {
                reason,
                resolution_type,
            } => {
                let allowed = transitions::check(from, IncidentStatus::Closed, admin_override)?;
                let resolution_type = match (resolution_type, from, self.resolution_type) {
                    (Some(given), _, _) => given,
                    (None, IncidentStatus::Reconciled, Some(earlier)) => earlier,
                    (None, _, _) => return Err(DomainError::required("resolution_type")),
                };
                IncidentEvent::Closed {
                    from,
                    reason,
                    resolution_type,
                    at,
                    admin_override: allowed.is_override(),
                    approval_bypassed,
                }
            }
            PendingAction::ExtendTtl {
                new_deadline,
                reason,
            } => {
                if from == IncidentStatus::Closed {
                    return Err(transitions::refusal(from, from));
                }
                let previous = self.sla_deadline.unwrap_or(at);
                if new_deadline <= previous {
                    return Err(DomainError::validation(
                        "new_deadline",
                        "must be later than the current deadline",
                    ));
                }
                let detected = self.detected_at.unwrap_or(at);
                IncidentEvent::TtlExtended {
                    previous_deadline: previous,
                    new_deadline,
                    sla_state: SlaState::at(detected, new_deadline, at),
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                    approval_bypassed,
                }
            }
        };
        Ok(vec![event])
    }
}

impl IncidentOpening {
    /// Refuses what opening the incident would refuse, so that a slot reservation
    /// never carries an opening the incident-slot reactor cannot perform.
    pub fn check(&self, at: DateTime<Utc>) -> Result<(), DomainError> {
        validate_digest(self.snapshot_digest.as_deref())?;
        let severity = self
            .policy
            .severity(self.production, self.affected_workflows.len());
        sla_deadline(&self.policy, severity, at).map(|_| ())
    }
}

fn sla_deadline(
    policy: &IncidentPolicy,
    severity: Severity,
    at: DateTime<Utc>,
) -> Result<DateTime<Utc>, DomainError> {
    at.checked_add_signed(policy.severity_ttls.ttl(severity))
        .ok_or_else(|| DomainError::validation("policy.severity_ttls", "deadline out of range"))
}

fn validate_digest(digest: Option<&str>) -> Result<(), DomainError> {
    match digest {
        Some(d)
            if d.len() != 64
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Err(DomainError::validation(
                "snapshot_digest",
                "must be a lowercase hex SHA-256",
            ))
        }
        _ => Ok(()),
    }
}
