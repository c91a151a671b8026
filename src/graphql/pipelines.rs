//! Pipelines: promotion paths as stages from a source to a target environment,
//! each with its gates (DOMAIN.md §5).

use aggregates::pipeline::{PipelineCommand, PipelineStage, StageGates};
use async_graphql::connection::Connection;
use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use projections::models::pipelines::{self as model, PipelineRow};

use super::types::{connection, LocalIdArg};
use super::{app, caller, new_id, read_back_row, run, wait_for, ApiError};

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
    /// Workflows a deployment creates in the target are activated (otherwise they
    /// stay inactive, as n8n creates them; existing ones keep their state).
    pub activate_new_workflows: bool,
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
            activate_new_workflows: g.activate_new_workflows,
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
    pub activate_new_workflows: Option<bool>,
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
            activate_new_workflows: self
                .activate_new_workflows
                .unwrap_or(d.activate_new_workflows),
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
        let row = read_back_row(ctx, model::NAME, self.position, &self.id).await?;
        Ok(row.map(Pipeline))
    }
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
}
