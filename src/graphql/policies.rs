//! Drift policies (DOMAIN.md §6): the policy in force for the tenant or an
//! environment, and the mutations that record or clear one.

use aggregates::policy::{DriftPolicyCommand, DriftPolicySettings, PolicyScope};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use projections::models::policies as model;

use super::{app, caller, read_back, run, wait_for, ApiError};

#[derive(SimpleObject, Clone, Copy)]
pub struct SeverityTtls {
    pub critical_hours: u32,
    pub high_hours: u32,
    pub medium_hours: u32,
    pub low_hours: u32,
}

#[derive(SimpleObject, Clone, Copy)]
pub struct ApprovalRequirements {
    pub acknowledge: bool,
    pub reconcile: bool,
    pub close: bool,
    pub extend_ttl: bool,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "projections::models::policies::PolicySource")]
pub enum PolicySourceKind {
    /// The environment's own override.
    Environment,
    /// The tenant's default.
    Tenant,
    /// Nothing recorded: the built-in defaults.
    Default,
}

/// The drift policy in force (DOMAIN.md §6).
#[derive(SimpleObject)]
pub struct DriftPolicy {
    pub source: PolicySourceKind,
    /// Where the policy is recorded: `tenant` or an environment id (null for the
    /// built-in defaults).
    pub scope: Option<String>,
    pub severity_ttls: SeverityTtls,
    pub enforce_ttl: bool,
    pub enforce_sla: bool,
    pub auto_create_incidents: bool,
    pub auto_create_for_production_only: bool,
    pub block_on_active_drift: bool,
    pub closed_incident_retention_days: u32,
    pub raise_production_severity: bool,
    pub approvals: ApprovalRequirements,
    pub updated_by: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A whole policy; omitted fields take the built-in defaults.
#[derive(InputObject, Default)]
pub struct DriftPolicyInput {
    pub critical_ttl_hours: Option<u32>,
    pub high_ttl_hours: Option<u32>,
    pub medium_ttl_hours: Option<u32>,
    pub low_ttl_hours: Option<u32>,
    pub enforce_ttl: Option<bool>,
    pub enforce_sla: Option<bool>,
    pub auto_create_incidents: Option<bool>,
    pub auto_create_for_production_only: Option<bool>,
    pub block_on_active_drift: Option<bool>,
    pub closed_incident_retention_days: Option<u32>,
    pub raise_production_severity: Option<bool>,
    pub approve_acknowledge: Option<bool>,
    pub approve_reconcile: Option<bool>,
    pub approve_close: Option<bool>,
    pub approve_extend_ttl: Option<bool>,
}

impl DriftPolicyInput {
    fn to_domain(&self) -> DriftPolicySettings {
        let mut p = DriftPolicySettings::default();
        let t = &mut p.severity_ttls;
        t.critical_hours = self.critical_ttl_hours.unwrap_or(t.critical_hours);
        t.high_hours = self.high_ttl_hours.unwrap_or(t.high_hours);
        t.medium_hours = self.medium_ttl_hours.unwrap_or(t.medium_hours);
        t.low_hours = self.low_ttl_hours.unwrap_or(t.low_hours);
        p.enforce_ttl = self.enforce_ttl.unwrap_or(p.enforce_ttl);
        p.enforce_sla = self.enforce_sla.unwrap_or(p.enforce_sla);
        p.auto_create_incidents = self
            .auto_create_incidents
            .unwrap_or(p.auto_create_incidents);
        p.auto_create_for_production_only = self
            .auto_create_for_production_only
            .unwrap_or(p.auto_create_for_production_only);
        p.block_on_active_drift = self
            .block_on_active_drift
            .unwrap_or(p.block_on_active_drift);
        p.closed_incident_retention_days = self
            .closed_incident_retention_days
            .unwrap_or(p.closed_incident_retention_days);
        p.raise_production_severity = self
            .raise_production_severity
            .unwrap_or(p.raise_production_severity);
        let a = &mut p.approvals;
        a.acknowledge = self.approve_acknowledge.unwrap_or(a.acknowledge);
        a.reconcile = self.approve_reconcile.unwrap_or(a.reconcile);
        a.close = self.approve_close.unwrap_or(a.close);
        a.extend_ttl = self.approve_extend_ttl.unwrap_or(a.extend_ttl);
        p
    }
}

async fn load_policy(
    ctx: &Context<'_>,
    environment_id: Option<&str>,
) -> Result<DriftPolicy, ApiError> {
    let effective =
        model::drift_policy(&app(ctx)?.store, caller(ctx)?.tenant(), environment_id).await?;
    let p = effective.policy;
    Ok(DriftPolicy {
        source: effective.source.into(),
        scope: effective.scope,
        severity_ttls: SeverityTtls {
            critical_hours: p.severity_ttls.critical_hours,
            high_hours: p.severity_ttls.high_hours,
            medium_hours: p.severity_ttls.medium_hours,
            low_hours: p.severity_ttls.low_hours,
        },
        enforce_ttl: p.enforce_ttl,
        enforce_sla: p.enforce_sla,
        auto_create_incidents: p.auto_create_incidents,
        auto_create_for_production_only: p.auto_create_for_production_only,
        block_on_active_drift: p.block_on_active_drift,
        closed_incident_retention_days: p.closed_incident_retention_days,
        raise_production_severity: p.raise_production_severity,
        approvals: ApprovalRequirements {
            acknowledge: p.approvals.acknowledge,
            reconcile: p.approvals.reconcile,
            close: p.approvals.close,
            extend_ttl: p.approvals.extend_ttl,
        },
        updated_by: effective.updated_by,
        updated_at: effective.updated_at,
    })
}

#[derive(Default)]
pub struct PolicyQuery;

#[Object]
impl PolicyQuery {
    /// The drift policy in force for the tenant, or for one environment (its
    /// override, else the tenant's, else the defaults).
    async fn drift_policy(
        &self,
        ctx: &Context<'_>,
        environment_id: Option<ID>,
        min_position: Option<i64>,
    ) -> async_graphql::Result<DriftPolicy> {
        wait_for(ctx, model::NAME, min_position).await?;
        Ok(load_policy(ctx, environment_id.as_ref().map(|id| id.as_str())).await?)
    }
}

pub struct DriftPolicyPayload {
    environment_id: Option<String>,
    position: Option<i64>,
}

#[Object]
impl DriftPolicyPayload {
    /// Global position of the last event appended (null when nothing changed).
    async fn position(&self) -> Option<i64> {
        self.position
    }
    /// The policy now in force for the scope that was set.
    async fn policy(&self, ctx: &Context<'_>) -> async_graphql::Result<DriftPolicy> {
        let read = load_policy(ctx, self.environment_id.as_deref());
        Ok(read_back(ctx, model::NAME, self.position, read).await?)
    }
}

#[derive(Default)]
pub struct PolicyMutation;

async fn policy_command(
    ctx: &Context<'_>,
    environment_id: Option<ID>,
    command: DriftPolicyCommand,
) -> async_graphql::Result<DriftPolicyPayload> {
    let scope = match &environment_id {
        Some(id) => PolicyScope::environment(id).map_err(ApiError::from)?,
        None => PolicyScope::Tenant,
    };
    let caller = caller(ctx)?;
    let name = aggregates::DomainCommand::name(&command);
    let committed = run(ctx, name, async {
        Ok(app(ctx)?
            .domain
            .drift_policy(&caller.command_context(), &scope, command)
            .await?)
    })
    .await?;
    Ok(DriftPolicyPayload {
        environment_id: environment_id.map(|id| id.0),
        position: committed.position,
    })
}

#[Object]
impl PolicyMutation {
    /// Records the whole drift policy (admin) of the tenant, or of one environment
    /// with `environmentId`. Omitted fields take the built-in defaults.
    async fn set_drift_policy(
        &self,
        ctx: &Context<'_>,
        environment_id: Option<ID>,
        #[graphql(default)] policy: DriftPolicyInput,
        reason: Option<String>,
    ) -> async_graphql::Result<DriftPolicyPayload> {
        let command = DriftPolicyCommand::Set {
            policy: policy.to_domain(),
            reason,
        };
        policy_command(ctx, environment_id, command).await
    }

    /// Removes a policy (admin): an environment falls back to the tenant's, the
    /// tenant to the built-in defaults.
    async fn clear_drift_policy(
        &self,
        ctx: &Context<'_>,
        environment_id: Option<ID>,
        reason: Option<String>,
    ) -> async_graphql::Result<DriftPolicyPayload> {
        policy_command(ctx, environment_id, DriftPolicyCommand::Clear { reason }).await
    }
}
