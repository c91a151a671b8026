//! Mappings (DOMAIN.md §2.1): one n8n workflow in one environment, and the
//! mutations that link, unlink, ignore and delete it.

use aggregates::mapping::MappingCommand;
use async_graphql::{Context, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use projections::models::matrix as model;

use super::types::{arg, LocalIdArg, MappingStatus};
use super::{app, caller, read_back, run, ApiError};

/// One mapping: an n8n workflow in one environment.
#[derive(SimpleObject)]
pub struct WorkflowMapping {
    pub environment_id: ID,
    #[graphql(name = "n8nWorkflowId")]
    pub n8n_workflow_id: ID,
    pub canonical_id: Option<ID>,
    pub name: String,
    pub status: MappingStatus,
    pub env_content_hash: Option<String>,
    pub git_content_hash: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

pub struct WorkflowMappingPayload {
    environment_id: String,
    n8n_workflow_id: String,
    position: Option<i64>,
}

#[Object]
impl WorkflowMappingPayload {
    /// Global position of the last event appended (null when nothing changed).
    async fn position(&self) -> Option<i64> {
        self.position
    }
    async fn mapping(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<WorkflowMapping>> {
        let read = load_mapping(ctx, &self.environment_id, &self.n8n_workflow_id);
        Ok(read_back(ctx, model::NAME, self.position, read).await?)
    }
}

/// One mapping as its read model shows it.
pub(crate) async fn load_mapping(
    ctx: &Context<'_>,
    environment_id: &str,
    n8n_workflow_id: &str,
) -> Result<Option<WorkflowMapping>, ApiError> {
    let cell = model::mapping(
        &app(ctx)?.store,
        caller(ctx)?.tenant(),
        environment_id,
        n8n_workflow_id,
    )
    .await?;
    Ok(cell.map(|cell| WorkflowMapping {
        environment_id: ID(cell.environment_id),
        n8n_workflow_id: ID(cell.n8n_workflow_id),
        canonical_id: cell.canonical_id.map(ID),
        name: cell.name,
        status: cell.status.into(),
        env_content_hash: cell.env_content_hash,
        git_content_hash: cell.git_content_hash,
        since: Some(cell.status_since),
    }))
}

#[derive(Default)]
pub struct MappingMutation;

async fn mapping(
    ctx: &Context<'_>,
    environment: &LocalIdArg<arg::EnvironmentId>,
    workflow: &LocalIdArg<arg::N8nWorkflowId>,
    command: MappingCommand,
) -> async_graphql::Result<WorkflowMappingPayload> {
    let caller = caller(ctx)?;
    let name = aggregates::DomainCommand::name(&command);
    let committed = run(ctx, name, async {
        Ok(app(ctx)?
            .domain
            .mapping(&caller.command_context(), environment, workflow, command)
            .await?)
    })
    .await?;
    Ok(WorkflowMappingPayload {
        environment_id: environment.to_string(),
        n8n_workflow_id: workflow.to_string(),
        position: committed.position,
    })
}

#[Object]
impl MappingMutation {
    /// Links a workflow to a canonical workflow (developer). At most one linked
    /// mapping per (environment, canonical workflow).
    async fn link_workflow(
        &self,
        ctx: &Context<'_>,
        environment_id: LocalIdArg<arg::EnvironmentId>,
        #[graphql(name = "n8nWorkflowId")] n8n_workflow_id: LocalIdArg<arg::N8nWorkflowId>,
        canonical_id: LocalIdArg<arg::CanonicalId>,
    ) -> async_graphql::Result<WorkflowMappingPayload> {
        let command = MappingCommand::Link {
            canonical_id: canonical_id.into_inner(),
        };
        mapping(ctx, &environment_id, &n8n_workflow_id, command).await
    }

    async fn unlink_workflow(
        &self,
        ctx: &Context<'_>,
        environment_id: LocalIdArg<arg::EnvironmentId>,
        #[graphql(name = "n8nWorkflowId")] n8n_workflow_id: LocalIdArg<arg::N8nWorkflowId>,
        reason: Option<String>,
    ) -> async_graphql::Result<WorkflowMappingPayload> {
        let command = MappingCommand::Unlink { reason };
        mapping(ctx, &environment_id, &n8n_workflow_id, command).await
    }

    async fn ignore_workflow(
        &self,
        ctx: &Context<'_>,
        environment_id: LocalIdArg<arg::EnvironmentId>,
        #[graphql(name = "n8nWorkflowId")] n8n_workflow_id: LocalIdArg<arg::N8nWorkflowId>,
        reason: Option<String>,
    ) -> async_graphql::Result<WorkflowMappingPayload> {
        let command = MappingCommand::Ignore { reason };
        mapping(ctx, &environment_id, &n8n_workflow_id, command).await
    }

    /// Ends `ignored`; the status is recomputed from the latest observation.
    async fn unignore_workflow(
        &self,
        ctx: &Context<'_>,
        environment_id: LocalIdArg<arg::EnvironmentId>,
        #[graphql(name = "n8nWorkflowId")] n8n_workflow_id: LocalIdArg<arg::N8nWorkflowId>,
    ) -> async_graphql::Result<WorkflowMappingPayload> {
        mapping(
            ctx,
            &environment_id,
            &n8n_workflow_id,
            MappingCommand::Unignore,
        )
        .await
    }

    /// Marks the mapping deleted (terminal).
    async fn delete_workflow_mapping(
        &self,
        ctx: &Context<'_>,
        environment_id: LocalIdArg<arg::EnvironmentId>,
        #[graphql(name = "n8nWorkflowId")] n8n_workflow_id: LocalIdArg<arg::N8nWorkflowId>,
        reason: Option<String>,
    ) -> async_graphql::Result<WorkflowMappingPayload> {
        let command = MappingCommand::Delete { reason };
        mapping(ctx, &environment_id, &n8n_workflow_id, command).await
    }
}
