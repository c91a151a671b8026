//! Configuration and the start of a promotion: pipelines and their stage gates,
//! drift policies, `comparePromotion` and `createPromotion`.

use aggregates::pipeline::{PipelineCommand, PipelineStage, StageGates};
use aggregates::policy::{DriftPolicyCommand, DriftPolicySettings, PolicyScope};
use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use projections::models::pipelines::{self as model, PipelineRow};
use projections::models::policies::{self as policies_model, PolicySource};

use super::promotions::PromotionPayload;
use super::types::connection;
use super::types::{arg, LocalIdArg};
use super::{app, caller, new_id, read_back, run, wait_for, ApiError};
use crate::workflows::promotion::{self, Change, PromoteError, PromotionRequest};

/// DOMAIN.md §5's gates of one stage.
#[derive(SimpleObject, Clone, Copy)]
pub struct Gates {
    pub require_clean_drift: bool,
    pub block_on_active_drift: bool,
    pub enforce_ttl: bool,
    pub allow_overwriting_hotfixes: bool,
    pub allow_force_promotion_on_conflicts: bool,
    pub allow_placeholder_credentials: bool,
    pub require_approval: bool,
    /// The promotion's creator may approve it.
    pub allow_self_approval: bool,
}

impl From<StageGates> for Gates {
    fn from(g: StageGates) -> Self {
        Gates {
            require_clean_drift: g.require_clean_drift,
            block_on_active_drift: g.block_on_active_drift,
            enforce_ttl: g.enforce_ttl,
            allow_overwriting_hotfixes: g.allow_overwriting_hotfixes,
            allow_force_promotion_on_conflicts: g.allow_force_promotion_on_conflicts,
            allow_placeholder_credentials: g.allow_placeholder_credentials,
            require_approval: g.require_approval,
            allow_self_approval: g.allow_self_approval,
        }
    }
}

/// Gates of a stage; omitted ones take their defaults (only `requireCleanDrift` on).
#[derive(InputObject, Default)]
pub struct GatesInput {
    pub require_clean_drift: Option<bool>,
    pub block_on_active_drift: Option<bool>,
    pub enforce_ttl: Option<bool>,
    pub allow_overwriting_hotfixes: Option<bool>,
    pub allow_force_promotion_on_conflicts: Option<bool>,
    pub allow_placeholder_credentials: Option<bool>,
    pub require_approval: Option<bool>,
    pub allow_self_approval: Option<bool>,
}

impl GatesInput {
    fn to_domain(&self) -> StageGates {
        let d = StageGates::default();
        StageGates {
            require_clean_drift: self.require_clean_drift.unwrap_or(d.require_clean_drift),
            block_on_active_drift: self
                .block_on_active_drift
                .unwrap_or(d.block_on_active_drift),
            enforce_ttl: self.enforce_ttl.unwrap_or(d.enforce_ttl),
            allow_overwriting_hotfixes: self
                .allow_overwriting_hotfixes
                .unwrap_or(d.allow_overwriting_hotfixes),
            allow_force_promotion_on_conflicts: self
                .allow_force_promotion_on_conflicts
                .unwrap_or(d.allow_force_promotion_on_conflicts),
            allow_placeholder_credentials: self
                .allow_placeholder_credentials
                .unwrap_or(d.allow_placeholder_credentials),
            require_approval: self.require_approval.unwrap_or(d.require_approval),
            allow_self_approval: self.allow_self_approval.unwrap_or(d.allow_self_approval),
        }
    }
}

#[derive(SimpleObject)]
pub struct Stage {
    pub source_environment_id: ID,
    pub target_environment_id: ID,
    pub gates: Gates,
}

#[derive(InputObject)]
pub struct StageInput {
    pub source_environment_id: ID,
    pub target_environment_id: ID,
    #[graphql(default)]
    pub gates: GatesInput,
}

fn stages(input: &[StageInput]) -> Vec<PipelineStage> {
    input
        .iter()
        .map(|s| {
            PipelineStage::new(
                &s.source_environment_id,
                &s.target_environment_id,
                s.gates.to_domain(),
            )
        })
        .collect()
}

pub struct Pipeline(pub PipelineRow);

#[Object]
impl Pipeline {
    async fn id(&self) -> ID {
        ID(self.0.pipeline_id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// The stages in promotion order.
    async fn stages(&self) -> Vec<Stage> {
        self.0
            .stages
            .iter()
            .map(|s| Stage {
                source_environment_id: ID(s.source_environment_id.clone()),
                target_environment_id: ID(s.target_environment_id.clone()),
                gates: s.gates.into(),
            })
            .collect()
    }
    async fn active(&self) -> bool {
        self.0.active
    }
    async fn created_by(&self) -> &str {
        &self.0.created_by
    }
    async fn created_at(&self) -> Option<DateTime<Utc>> {
        Some(self.0.created_at)
    }
    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        Some(self.0.updated_at)
    }
}

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
        policies_model::drift_policy(&app(ctx)?.store, caller(ctx)?.tenant(), environment_id)
            .await?;
    let p = effective.policy;
    Ok(DriftPolicy {
        source: match effective.source {
            PolicySource::Environment => PolicySourceKind::Environment,
            PolicySource::Tenant => PolicySourceKind::Tenant,
            PolicySource::Default => PolicySourceKind::Default,
        },
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

async fn load_pipeline(ctx: &Context<'_>, id: &str) -> Result<Option<Pipeline>, ApiError> {
    let row = model::pipeline(&app(ctx)?.store, caller(ctx)?.tenant(), id).await?;
    Ok(row.map(Pipeline))
}

#[derive(Default)]
pub struct PipelineQuery;

#[Object]
impl PipelineQuery {
    /// Pipelines of the caller's tenant, by name.
    #[graphql(complexity = "super::list_cost(first, child_complexity)")]
    async fn pipelines(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Connection<String, Pipeline>> {
        wait_for(ctx, model::NAME, min_position).await?;
        let page = model::pipelines(
            &app(ctx)?.store,
            caller(ctx)?.tenant(),
            super::types::first(first),
            after.as_deref(),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, Pipeline))
    }

    async fn pipeline(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Option<Pipeline>> {
        wait_for(ctx, model::NAME, min_position).await?;
        Ok(load_pipeline(ctx, id.as_str()).await?)
    }

    /// The drift policy in force for the tenant, or for one environment (its
    /// override, else the tenant's, else the defaults).
    async fn drift_policy(
        &self,
        ctx: &Context<'_>,
        environment_id: Option<ID>,
        min_position: Option<i64>,
    ) -> async_graphql::Result<DriftPolicy> {
        wait_for(ctx, policies_model::NAME, min_position).await?;
        Ok(load_policy(ctx, environment_id.as_ref().map(|id| id.as_str())).await?)
    }
}

pub struct PipelinePayload {
    id: String,
    position: Option<i64>,
}

#[Object]
impl PipelinePayload {
    /// Global position of the last event appended (null when nothing changed).
    async fn position(&self) -> Option<i64> {
        self.position
    }
    async fn pipeline(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Pipeline>> {
        Ok(read_back(
            ctx,
            model::NAME,
            self.position,
            load_pipeline(ctx, &self.id),
        )
        .await?)
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
        Ok(read_back(ctx, policies_model::NAME, self.position, read).await?)
    }
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowChange {
    New,
    Changed,
    Unchanged,
    NotInSource,
}

#[derive(SimpleObject)]
pub struct WorkflowComparison {
    pub canonical_id: ID,
    pub name: String,
    pub change: WorkflowChange,
    pub source_content_hash: Option<String>,
    pub target_content_hash: Option<String>,
    /// The target changed outside Git: promoting would overwrite a hotfix.
    pub target_hotfix: bool,
}

#[derive(SimpleObject)]
pub struct ComparePromotionPayload {
    /// Always null: comparing records nothing.
    pub position: Option<i64>,
    pub source_environment_id: ID,
    pub target_environment_id: ID,
    pub workflows: Vec<WorkflowComparison>,
}

#[derive(Default)]
pub struct PipelineMutation;

async fn pipeline_command(
    ctx: &Context<'_>,
    id: &aggregates::kernel::ids::LocalId,
    command: PipelineCommand,
) -> async_graphql::Result<PipelinePayload> {
    let caller = caller(ctx)?;
    let name = aggregates::DomainCommand::name(&command);
    let committed = run(ctx, name, async {
        Ok(app(ctx)?
            .domain
            .pipeline(&caller.command_context(), id, command)
            .await?)
    })
    .await?;
    Ok(PipelinePayload {
        id: id.to_string(),
        position: committed.position,
    })
}

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
impl PipelineMutation {
    /// A promotion path (admin): stages from a source to a target environment, each
    /// with its gates. `id` defaults to a new UUID.
    async fn create_pipeline(
        &self,
        ctx: &Context<'_>,
        id: Option<LocalIdArg>,
        name: String,
        description: Option<String>,
        stages: Vec<StageInput>,
    ) -> async_graphql::Result<PipelinePayload> {
        let id = match id {
            Some(id) => id.into_inner(),
            None => new_id()?,
        };
        let command = PipelineCommand::Create {
            name,
            description,
            stages: self::stages(&stages),
        };
        pipeline_command(ctx, &id, command).await
    }

    /// Changes what is given (admin); `stages` replaces the whole list, a blank
    /// `description` removes it.
    async fn update_pipeline(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        name: Option<String>,
        description: Option<String>,
        stages: Option<Vec<StageInput>>,
    ) -> async_graphql::Result<PipelinePayload> {
        let command = PipelineCommand::Update {
            name,
            description,
            stages: stages.as_deref().map(self::stages),
        };
        pipeline_command(ctx, &id, command).await
    }

    /// Takes a pipeline out of use (admin): no new promotions on it.
    async fn deactivate_pipeline(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        reason: Option<String>,
    ) -> async_graphql::Result<PipelinePayload> {
        pipeline_command(ctx, &id, PipelineCommand::Deactivate { reason }).await
    }

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

    /// What a promotion from `sourceEnvironmentId` to `targetEnvironmentId` would do
    /// to each canonical workflow (developer). Records nothing.
    async fn compare_promotion(
        &self,
        ctx: &Context<'_>,
        source_environment_id: LocalIdArg<arg::SourceEnvironmentId>,
        target_environment_id: LocalIdArg<arg::TargetEnvironmentId>,
        min_position: Option<i64>,
    ) -> async_graphql::Result<ComparePromotionPayload> {
        let caller = caller(ctx)?;
        if !caller.principal.role.satisfies(aggregates::Role::Developer) {
            return Err(ApiError::forbidden("comparing requires the developer role").into());
        }
        let (source, target) = (
            source_environment_id.into_inner(),
            target_environment_id.into_inner(),
        );
        wait_for(ctx, projections::models::matrix::NAME, min_position).await?;
        let store = &app(ctx)?.store;
        promotion::catch_up(store, &app(ctx)?.projections)
            .await
            .map_err(ApiError::from)?;
        for environment in [&source, &target] {
            if projections::models::environments::environment(
                store,
                caller.tenant(),
                environment.as_str(),
            )
            .await
            .map_err(ApiError::from)?
            .is_none()
            {
                return Err(ApiError::not_found("environment", environment.as_str()).into());
            }
        }
        let comparisons =
            promotion::compare(store, caller.tenant(), source.as_str(), target.as_str())
                .await
                .map_err(ApiError::from)?;
        Ok(ComparePromotionPayload {
            position: None,
            source_environment_id: ID(source.to_string()),
            target_environment_id: ID(target.to_string()),
            workflows: comparisons
                .into_iter()
                .map(|c| WorkflowComparison {
                    canonical_id: ID(c.canonical_id),
                    name: c.name,
                    change: match c.change {
                        Change::New => WorkflowChange::New,
                        Change::Changed => WorkflowChange::Changed,
                        Change::Unchanged => WorkflowChange::Unchanged,
                        Change::NotInSource => WorkflowChange::NotInSource,
                    },
                    source_content_hash: c.source_content_hash,
                    target_content_hash: c.target_content_hash,
                    target_hotfix: c.target_hotfix,
                })
                .collect(),
        })
    }

    /// Starts a promotion along a pipeline stage (admin): the workflows given (or
    /// every NEW or CHANGED one), gate checks recorded, then `PENDING_APPROVAL` or
    /// `APPROVED`. A failed blocking gate records the promotion as `FAILED` and
    /// answers `GATE_BLOCKED` with the gate results. `bypassValidation` (admin)
    /// skips the gates, never the state machine.
    #[allow(clippy::too_many_arguments)]
    async fn create_promotion(
        &self,
        ctx: &Context<'_>,
        id: Option<LocalIdArg>,
        pipeline_id: LocalIdArg<arg::PipelineId>,
        source_environment_id: LocalIdArg<arg::SourceEnvironmentId>,
        target_environment_id: LocalIdArg<arg::TargetEnvironmentId>,
        workflow_ids: Option<Vec<ID>>,
        #[graphql(default)] bypass_validation: bool,
    ) -> async_graphql::Result<PromotionPayload> {
        let caller = caller(ctx)?;
        let request = PromotionRequest {
            promotion_id: match id {
                Some(id) => id.into_inner(),
                None => new_id()?,
            },
            pipeline_id: pipeline_id.into_inner(),
            source_environment_id: source_environment_id.into_inner(),
            target_environment_id: target_environment_id.into_inner(),
            workflow_ids: workflow_ids.map(|ids| ids.into_iter().map(|id| id.0).collect()),
            bypass_validation,
        };
        let id = request.promotion_id.to_string();
        let services = app(ctx)?;
        let committed = run(ctx, "promotion.create", async {
            promotion::create(
                &services.domain,
                &services.store,
                &services.projections,
                &caller.command_context(),
                request,
            )
            .await
            .map_err(ApiError::from)
        })
        .await?;
        Ok(PromotionPayload::new(id, committed.position))
    }
}

impl From<PromoteError> for ApiError {
    fn from(e: PromoteError) -> Self {
        match e {
            PromoteError::Command(e) => ApiError::Command(e),
            PromoteError::Query(e) => ApiError::Query(e),
            PromoteError::Wait(e) => ApiError::Wait(e),
            PromoteError::GateBlocked {
                promotion_id,
                position,
                results,
            } => ApiError::GateBlocked {
                promotion_id: promotion_id.to_string(),
                position,
                results,
            },
        }
    }
}
