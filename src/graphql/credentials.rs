//! Credential mappings between environments (DOMAIN.md §5): which credential of the
//! target a promotion writes for a credential of the source. An explicit mapping
//! comes before matching by type and name among the target's known credentials
//! (`Environment.knownCredentials`).

use aggregates::credentials::CredentialMapCommand;
use async_graphql::{Context, Object, SimpleObject};
use chrono::{DateTime, Utc};
use projections::models::credential_mappings::{self as model, CredentialMappingRow};

use super::types::{arg, LocalIdArg};
use super::{app, caller, read_back, run, wait_for, ApiError};

/// One mapping: the source's credential of a type and name, and the target's.
#[derive(SimpleObject)]
pub struct CredentialMapping {
    pub source_environment_id: String,
    pub target_environment_id: String,
    /// The n8n credential type (`slackApi`, `postgres`, …).
    #[graphql(name = "type")]
    pub credential_type: String,
    pub source_name: String,
    pub target_id: String,
    pub target_name: String,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

impl From<CredentialMappingRow> for CredentialMapping {
    fn from(row: CredentialMappingRow) -> Self {
        CredentialMapping {
            source_environment_id: row.source_environment_id,
            target_environment_id: row.target_environment_id,
            credential_type: row.credential_type,
            source_name: row.source_name,
            target_id: row.target_id,
            target_name: row.target_name,
            updated_by: row.updated_by,
            updated_at: row.updated_at,
        }
    }
}

async fn load(
    ctx: &Context<'_>,
    source: Option<&str>,
    target: Option<&str>,
) -> Result<Vec<CredentialMapping>, ApiError> {
    let rows =
        model::credential_mappings(&app(ctx)?.store, caller(ctx)?.tenant(), source, target).await?;
    Ok(rows.into_iter().map(CredentialMapping::from).collect())
}

#[derive(Default)]
pub struct CredentialQuery;

#[Object]
impl CredentialQuery {
    /// The tenant's credential mappings, optionally of one source and/or one target
    /// environment, by source, target, type and source name.
    async fn credential_mappings(
        &self,
        ctx: &Context<'_>,
        source_environment_id: Option<LocalIdArg<arg::SourceEnvironmentId>>,
        target_environment_id: Option<LocalIdArg<arg::TargetEnvironmentId>>,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Vec<CredentialMapping>> {
        wait_for(ctx, model::NAME, min_position).await?;
        Ok(load(
            ctx,
            source_environment_id.as_deref().map(|id| id.as_str()),
            target_environment_id.as_deref().map(|id| id.as_str()),
        )
        .await?)
    }
}

pub struct CredentialMappingPayload {
    source: String,
    target: String,
    credential_type: String,
    source_name: String,
    position: Option<i64>,
}

#[Object]
impl CredentialMappingPayload {
    /// Global position of the event appended (null when nothing changed).
    async fn position(&self) -> Option<i64> {
        self.position
    }
    /// The mapping as it now stands (null once deleted).
    async fn mapping(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<CredentialMapping>> {
        let read = async {
            let all = load(ctx, Some(&self.source), Some(&self.target)).await?;
            Ok(all.into_iter().find(|m| {
                m.credential_type == self.credential_type && m.source_name == self.source_name
            }))
        };
        Ok(read_back(ctx, model::NAME, self.position, read).await?)
    }
}

async fn mapping_command(
    ctx: &Context<'_>,
    source: LocalIdArg<arg::SourceEnvironmentId>,
    target: LocalIdArg<arg::TargetEnvironmentId>,
    command: CredentialMapCommand,
) -> async_graphql::Result<CredentialMappingPayload> {
    let (credential_type, source_name) = match &command {
        CredentialMapCommand::Set {
            credential_type,
            source_name,
            ..
        }
        | CredentialMapCommand::Remove {
            credential_type,
            source_name,
        } => (
            credential_type.trim().to_string(),
            source_name.trim().to_string(),
        ),
    };
    let caller = caller(ctx)?;
    let name = aggregates::DomainCommand::name(&command);
    let committed = run(ctx, name, async {
        Ok(app(ctx)?
            .domain
            .credential_map(&caller.command_context(), &source, &target, command)
            .await?)
    })
    .await?;
    Ok(CredentialMappingPayload {
        source: source.into_inner().to_string(),
        target: target.into_inner().to_string(),
        credential_type,
        source_name,
        position: committed.position,
    })
}

#[derive(Default)]
pub struct CredentialMutation;

#[Object]
impl CredentialMutation {
    /// Maps a credential of the source environment (by type and name) to one of the
    /// target (admin): promotions from the source to the target write `targetId`
    /// (`targetName`) where a workflow references the source credential. Both
    /// environments must exist. The same mapping again changes nothing.
    #[allow(clippy::too_many_arguments)]
    async fn set_credential_mapping(
        &self,
        ctx: &Context<'_>,
        source_environment_id: LocalIdArg<arg::SourceEnvironmentId>,
        target_environment_id: LocalIdArg<arg::TargetEnvironmentId>,
        #[graphql(name = "type")] credential_type: String,
        source_name: String,
        target_id: String,
        target_name: String,
    ) -> async_graphql::Result<CredentialMappingPayload> {
        let command = CredentialMapCommand::Set {
            credential_type,
            source_name,
            target_id,
            target_name,
        };
        mapping_command(ctx, source_environment_id, target_environment_id, command).await
    }

    /// Removes a credential mapping (admin); `NOT_FOUND` when there is none.
    async fn delete_credential_mapping(
        &self,
        ctx: &Context<'_>,
        source_environment_id: LocalIdArg<arg::SourceEnvironmentId>,
        target_environment_id: LocalIdArg<arg::TargetEnvironmentId>,
        #[graphql(name = "type")] credential_type: String,
        source_name: String,
    ) -> async_graphql::Result<CredentialMappingPayload> {
        let command = CredentialMapCommand::Remove {
            credential_type,
            source_name,
        };
        mapping_command(ctx, source_environment_id, target_environment_id, command).await
    }
}
