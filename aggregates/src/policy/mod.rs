//! Drift policy (DOMAIN.md §6): per tenant, optionally overridden per environment.
//!
//! One aggregate per scope. Its aggregate id is `{tenant}:{scope}`, where the scope
//! is [`TENANT_SCOPE`] (`"tenant"`) for the tenant-wide default or an environment id
//! for that environment's override; [`PolicyScope`] builds it. An environment
//! therefore cannot have the id `tenant` and an override: [`PolicyScope::environment`]
//! refuses it rather than let the override silently replace the tenant default.
//!
//! The effective policy of an environment is its override, else the tenant default,
//! else [`DriftPolicySettings::default`] (resolved by the read side:
//! `projections::policies::drift_policy`). An override is a full policy, not a patch
//! of the tenant default, so what applies to an environment is always one recorded
//! policy.

mod commands;
mod events;

pub use commands::*;
pub use events::*;

use std::fmt;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::incident::{ApprovalRequirements, IncidentPolicy, SeverityTtls};
use crate::kernel::command::Issued;
use crate::kernel::error::{non_blank, DomainError};
use crate::kernel::ids::LocalId;

/// The scope (aggregate id part) of the tenant-wide default policy.
pub const TENANT_SCOPE: &str = "tenant";

/// Longest TTL accepted for one severity: ten years. An incident's deadline is its
/// detection time plus the TTL, and it must stay a representable time.
pub const MAX_TTL_HOURS: u32 = 24 * 365 * 10;

/// Retention of closed incidents' snapshot payloads when no policy says otherwise.
/// The seeds name the setting but give no default; 90 days keeps a quarter of
/// history for post-incident reviews.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;

/// What a drift policy applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PolicyScope {
    /// The tenant-wide default.
    Tenant,
    /// One environment's override.
    Environment(LocalId),
}

impl PolicyScope {
    /// An environment's override scope. Refuses ids that are not valid ids, and
    /// [`TENANT_SCOPE`], which is the tenant default's.
    pub fn environment(environment_id: &str) -> Result<PolicyScope, DomainError> {
        let id = LocalId::parse(environment_id).map_err(|e| match e {
            DomainError::Validation { message, .. } => {
                DomainError::validation("environment_id", message)
            }
            other => other,
        })?;
        if id.as_str() == TENANT_SCOPE {
            return Err(DomainError::validation(
                "environment_id",
                format!("`{TENANT_SCOPE}` is reserved for the tenant-wide policy"),
            ));
        }
        Ok(PolicyScope::Environment(id))
    }

    /// The scope of a stored aggregate id's local part (`tenant` or an environment id).
    pub fn from_local_id(local_id: &LocalId) -> PolicyScope {
        if local_id.as_str() == TENANT_SCOPE {
            PolicyScope::Tenant
        } else {
            PolicyScope::Environment(local_id.clone())
        }
    }

    /// The aggregate id part: `bus.execute::<DriftPolicy, _>(ctx, &[&scope.local_id()], …)`.
    pub fn local_id(&self) -> LocalId {
        match self {
            PolicyScope::Tenant => LocalId::parse(TENANT_SCOPE).expect("a valid id"),
            PolicyScope::Environment(id) => id.clone(),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            PolicyScope::Tenant => TENANT_SCOPE,
            PolicyScope::Environment(id) => id.as_str(),
        }
    }

    /// The environment id of an override.
    pub fn environment_id(&self) -> Option<&LocalId> {
        match self {
            PolicyScope::Tenant => None,
            PolicyScope::Environment(id) => Some(id),
        }
    }
}

impl fmt::Display for PolicyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rules of a drift policy (DOMAIN.md §6). Missing fields take their defaults
/// when deserialized, so a field added later does not break stored events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DriftPolicySettings {
    /// TTL per severity (24 / 48 / 72 / 168 h by default).
    pub severity_ttls: SeverityTtls,
    /// An expired incident in a promotion's target blocks the promotion.
    pub enforce_ttl: bool,
    /// The TTL job escalates open incidents' SLA state.
    pub enforce_sla: bool,
    /// Drift detection opens an incident.
    pub auto_create_incidents: bool,
    /// … only for production environments.
    pub auto_create_for_production_only: bool,
    /// An active incident in a promotion's target blocks the promotion.
    pub block_on_active_drift: bool,
    /// Days after closing before an incident's snapshot payload is purged.
    pub closed_incident_retention_days: u32,
    /// Production incidents are one severity level higher.
    pub raise_production_severity: bool,
    /// Incident actions that wait for a second admin's approval.
    pub approvals: ApprovalRequirements,
}

impl Default for DriftPolicySettings {
    fn default() -> Self {
        DriftPolicySettings {
            severity_ttls: SeverityTtls::default(),
            enforce_ttl: false,
            enforce_sla: true,
            auto_create_incidents: true,
            auto_create_for_production_only: false,
            block_on_active_drift: false,
            closed_incident_retention_days: DEFAULT_RETENTION_DAYS,
            raise_production_severity: false,
            approvals: ApprovalRequirements::default(),
        }
    }
}

impl DriftPolicySettings {
    /// The subset an incident captures when it is detected.
    pub fn incident_policy(&self) -> IncidentPolicy {
        IncidentPolicy {
            severity_ttls: self.severity_ttls,
            raise_production_severity: self.raise_production_severity,
            approvals: self.approvals,
        }
    }

    /// Whether drift detected on an environment opens an incident
    /// (`auto_create_incidents`, `auto_create_for_production_only`).
    pub fn opens_incident(&self, production: bool) -> bool {
        self.auto_create_incidents && (production || !self.auto_create_for_production_only)
    }

    pub fn validate(&self) -> Result<(), DomainError> {
        let ttls = self.severity_ttls;
        for (field, hours) in [
            ("severity_ttls.critical_hours", ttls.critical_hours),
            ("severity_ttls.high_hours", ttls.high_hours),
            ("severity_ttls.medium_hours", ttls.medium_hours),
            ("severity_ttls.low_hours", ttls.low_hours),
        ] {
            if !(1..=MAX_TTL_HOURS).contains(&hours) {
                return Err(DomainError::validation(
                    field,
                    format!("must be between 1 and {MAX_TTL_HOURS} hours"),
                ));
            }
        }
        if self.closed_incident_retention_days < 1 {
            return Err(DomainError::validation(
                "closed_incident_retention_days",
                "must be at least 1 day",
            ));
        }
        Ok(())
    }
}

/// The policy recorded for one scope. `set` is false before the first `Set` and
/// after a `Clear`; `policy` then holds the built-in defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftPolicy {
    pub set: bool,
    pub policy: DriftPolicySettings,
    pub updated_by: Option<String>,
}

impl DriftPolicy {
    /// The policy recorded for this scope, if any (no fallback).
    pub fn recorded(&self) -> Option<&DriftPolicySettings> {
        self.set.then_some(&self.policy)
    }

    /// The subset an incident captures (from the defaults when nothing is recorded).
    pub fn incident_policy(&self) -> IncidentPolicy {
        self.policy.incident_policy()
    }

    pub fn decide(
        &self,
        issued: Issued<DriftPolicyCommand>,
    ) -> Result<Vec<DriftPolicyEvent>, DomainError> {
        let actor = issued.actor.id;
        match issued.command {
            DriftPolicyCommand::Set { policy, reason } => {
                policy.validate()?;
                if self.set && self.policy == policy {
                    return Ok(vec![]);
                }
                Ok(vec![DriftPolicyEvent::PolicySet {
                    policy,
                    set_by: actor,
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                }])
            }
            DriftPolicyCommand::Clear { reason } => {
                if !self.set {
                    return Ok(vec![]);
                }
                Ok(vec![DriftPolicyEvent::PolicyCleared {
                    cleared_by: actor,
                    reason: non_blank(reason.as_deref()).map(str::to_string),
                }])
            }
        }
    }
}

impl Aggregate for DriftPolicy {
    const TYPE: &'static str = "drift_policy";
    type Command = Issued<DriftPolicyCommand>;
    type Event = DriftPolicyEvent;
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

    fn apply(&mut self, event: DriftPolicyEvent) {
        match event {
            DriftPolicyEvent::PolicySet { policy, set_by, .. } => {
                self.set = true;
                self.policy = policy;
                self.updated_by = Some(set_by);
            }
            DriftPolicyEvent::PolicyCleared { cleared_by, .. } => {
                self.set = false;
                self.policy = DriftPolicySettings::default();
                self.updated_by = Some(cleared_by);
            }
        }
    }
}

impl crate::kernel::transitions::Lifecycle for DriftPolicy {
    /// A drift policy has no lifecycle: it is set and cleared, any time.
    fn check_step(_: &Self, _: &Self, _: bool) -> Result<(), DomainError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
