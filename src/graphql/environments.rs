//! Environments: their drift status and counts (queries), registration and changes
//! (mutations).

use aggregates::environment::{EnvironmentCommand, GitTarget};
use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use projections::models::environments::{self as model, EnvironmentRow};

use super::incidents::Incident;
use super::types::{DriftStatus, EnvironmentClass, EnvironmentStatus, GitProvider, LocalIdArg};
use super::{app, caller, loaders, new_id, read_back, run, wait_for, ApiError};
use crate::command::bus::authorize;
use crate::storage::secrets::{Secret, SecretKind};

pub struct Environment(pub EnvironmentRow);

/// A credential an environment's n8n holds, learned from its workflows' references.
#[derive(SimpleObject)]
pub struct KnownCredential {
    /// The n8n credential type (`slackApi`, `postgres`, …).
    #[graphql(name = "type")]
    pub credential_type: String,
    pub id: String,
    pub name: String,
}

#[derive(SimpleObject)]
pub struct DriftCounts {
    pub in_sync: i64,
    pub with_drift: i64,
    pub not_in_git: i64,
}

#[Object]
impl Environment {
    async fn id(&self) -> ID {
        ID(self.0.environment_id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn class(&self) -> EnvironmentClass {
        self.0.class.into()
    }
    async fn status(&self) -> EnvironmentStatus {
        self.0.status.into()
    }
    async fn git_configured(&self) -> bool {
        self.0.git_configured
    }
    /// Whether the environment has a baseline: it has been synced and drift-checked
    /// at least once (until then its drift status is `NEW`).
    async fn onboarded(&self) -> bool {
        self.0.onboarded
    }
    /// DOMAIN.md §2.5.
    async fn drift_status(&self) -> DriftStatus {
        self.0.drift_status.into()
    }
    /// Since when the environment has been in its drift status.
    async fn drift_status_since(&self) -> Option<DateTime<Utc>> {
        Some(self.0.drift_status_since)
    }
    async fn counts(&self) -> DriftCounts {
        DriftCounts {
            in_sync: self.0.in_sync,
            with_drift: self.0.with_drift,
            not_in_git: self.0.not_in_git,
        }
    }
    async fn linked_mappings(&self) -> i64 {
        self.0.linked_mappings
    }
    /// The open incident of this environment (at most one).
    async fn active_incident(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Incident>> {
        let Some(id) = &self.0.active_incident_id else {
            return Ok(None);
        };
        Ok(loaders(ctx)?
            .incidents
            .load_one(id.clone())
            .await?
            .map(Incident))
    }
    async fn last_drift_check_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_drift_check_at
    }
    /// Why the last drift check failed (status `ERROR`).
    async fn last_drift_check_error(&self) -> Option<&str> {
        self.0.last_drift_check_error.as_deref()
    }
    async fn last_sync_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_sync_at
    }
    async fn last_repository_sync_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_repository_sync_at
    }
    /// Why the last environment sync could not read n8n (until one succeeds).
    async fn last_sync_error(&self) -> Option<&str> {
        self.0.last_sync_error.as_deref()
    }
    /// Why the last repository sync could not read Git (until one succeeds).
    async fn last_repository_sync_error(&self) -> Option<&str> {
        self.0.last_repository_sync_error.as_deref()
    }
    /// The credentials this environment's workflows reference, as its last sync saw
    /// them (n8n 1.x cannot list credentials): what a promotion to it can map
    /// credentials to by type and name.
    async fn known_credentials(&self) -> Vec<KnownCredential> {
        self.0
            .known_credentials
            .0
            .iter()
            .map(|c| KnownCredential {
                credential_type: c.kind.clone(),
                id: c.id.clone(),
                name: c.name.clone(),
            })
            .collect()
    }
    /// The deployment running a promotion to this environment (one at a time).
    async fn running_deployment_id(&self) -> Option<ID> {
        self.0.running_deployment_id.clone().map(ID)
    }
    async fn running_promotion_id(&self) -> Option<ID> {
        self.0.running_promotion_id.clone().map(ID)
    }
    /// Why scheduled deployments to this environment wait (a rollback pinned it;
    /// `unpinEnvironment` lets them start again). Null when not pinned.
    async fn pinned(&self) -> Option<&str> {
        self.0.pinned.as_deref()
    }
    async fn registered_at(&self) -> Option<DateTime<Utc>> {
        Some(self.0.registered_at)
    }
    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        Some(self.0.updated_at)
    }
}

#[derive(Default)]
pub struct EnvironmentQuery;

#[Object]
impl EnvironmentQuery {
    /// Every environment of the caller's tenant, by name.
    async fn environments(
        &self,
        ctx: &Context<'_>,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Vec<Environment>> {
        wait_for(ctx, model::NAME, min_position).await?;
        let rows = model::environments(&app(ctx)?.store, caller(ctx)?.tenant())
            .await
            .map_err(ApiError::from)?;
        Ok(rows.into_iter().map(Environment).collect())
    }

    async fn environment(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Option<Environment>> {
        wait_for(ctx, model::NAME, min_position).await?;
        Ok(load(ctx, id.as_str()).await?)
    }
}

pub(crate) async fn load(ctx: &Context<'_>, id: &str) -> Result<Option<Environment>, ApiError> {
    let row = model::environment(&app(ctx)?.store, caller(ctx)?.tenant(), id).await?;
    Ok(row.map(Environment))
}

/// Where an environment's workflows live in Git.
#[derive(InputObject)]
pub struct GitInput {
    pub provider: GitProvider,
    /// `owner/name` on GitHub, or the path of a local working copy.
    pub repository: String,
    pub branch: String,
    /// The folder holding `{slug}.json` and `{slug}.wfo.json`.
    pub folder: String,
}

impl GitInput {
    fn to_domain(&self) -> GitTarget {
        GitTarget {
            provider: self.provider.into(),
            repository: self.repository.clone(),
            branch: self.branch.clone(),
            folder: self.folder.clone(),
        }
    }
}

/// The environment a mutation changed, and the position of its last event.
pub struct EnvironmentPayload {
    id: String,
    position: Option<i64>,
}

#[Object]
impl EnvironmentPayload {
    /// Global position of the last event appended (null when nothing changed).
    async fn position(&self) -> Option<i64> {
        self.position
    }
    async fn environment(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Environment>> {
        Ok(read_back(ctx, model::NAME, self.position, load(ctx, &self.id)).await?)
    }
}

#[derive(Default)]
pub struct EnvironmentMutation;

impl EnvironmentMutation {
    async fn execute(
        ctx: &Context<'_>,
        id: &aggregates::kernel::ids::LocalId,
        command: EnvironmentCommand,
    ) -> async_graphql::Result<EnvironmentPayload> {
        Self::execute_with_secrets(ctx, id, command, None, None).await
    }

    /// Seals the credentials given, runs the command with their ids, and removes
    /// them again if the command is refused (nothing refers to them then).
    async fn execute_with_secrets(
        ctx: &Context<'_>,
        id: &aggregates::kernel::ids::LocalId,
        mut command: EnvironmentCommand,
        n8n_api_key: Option<String>,
        git_token: Option<String>,
    ) -> async_graphql::Result<EnvironmentPayload> {
        let name = aggregates::DomainCommand::name(&command);
        let caller = caller(ctx)?;
        let services = app(ctx)?;
        let tenant = &caller.principal.tenant;
        // The command's own role check, before a credential is sealed for it (the
        // bus checks it again when it runs the command).
        authorize(&caller.command_context(), &command).map_err(ApiError::from)?;
        let mut sealed = Vec::new();
        for (kind, value) in [
            (SecretKind::N8nApiKey, n8n_api_key),
            (SecretKind::GitToken, git_token),
        ] {
            let Some(value) = value else { continue };
            if value.trim().is_empty() {
                let field = match kind {
                    SecretKind::N8nApiKey => "n8nApiKey",
                    _ => "gitToken",
                };
                return Err(ApiError::validation(field, "must not be blank").into());
            }
            let secret_id = services
                .secrets
                .put(tenant, kind, &Secret::new(value))
                .await
                .map_err(ApiError::from)?;
            if let EnvironmentCommand::Register {
                n8n_secret_ref,
                git_secret_ref,
                ..
            }
            | EnvironmentCommand::Update {
                n8n_secret_ref,
                git_secret_ref,
                ..
            } = &mut command
            {
                match kind {
                    SecretKind::N8nApiKey => *n8n_secret_ref = Some(secret_id.clone()),
                    _ => *git_secret_ref = Some(secret_id.clone()),
                }
            }
            sealed.push(secret_id);
        }
        let result = run(ctx, name, async {
            Ok(services
                .domain
                .environment(&caller.command_context(), id, command)
                .await?)
        })
        .await;
        let committed = match result {
            Ok(committed) => committed,
            Err(error) => {
                for secret_id in &sealed {
                    if let Err(e) = services.secrets.delete(tenant, secret_id).await {
                        tracing::warn!(error = %e, "cannot remove an unused credential");
                    }
                }
                return Err(error.into());
            }
        };
        Ok(EnvironmentPayload {
            id: id.to_string(),
            position: committed.position,
        })
    }
}

#[Object]
impl EnvironmentMutation {
    /// Registers an n8n instance (admin). `id` defaults to a new UUID. The n8n API key
    /// and the Git token are sealed in their own table; no answer shows them again.
    #[allow(clippy::too_many_arguments)]
    async fn register_environment(
        &self,
        ctx: &Context<'_>,
        id: Option<LocalIdArg>,
        name: String,
        class: EnvironmentClass,
        #[graphql(name = "n8nBaseUrl")] n8n_base_url: String,
        git: Option<GitInput>,
        #[graphql(name = "n8nApiKey", secret)] n8n_api_key: Option<String>,
        #[graphql(secret)] git_token: Option<String>,
    ) -> async_graphql::Result<EnvironmentPayload> {
        let id = match id {
            Some(id) => id.into_inner(),
            None => new_id()?,
        };
        let command = EnvironmentCommand::Register {
            name,
            class: class.into(),
            n8n_base_url,
            git: git.as_ref().map(GitInput::to_domain),
            n8n_secret_ref: None,
            git_secret_ref: None,
        };
        Self::execute_with_secrets(ctx, &id, command, n8n_api_key, git_token).await
    }

    #[allow(clippy::too_many_arguments)]
    /// Changes an environment (admin). `removeGit: true` removes its Git configuration;
    /// a new `n8nApiKey` or `gitToken` replaces the stored one.
    async fn update_environment(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        name: Option<String>,
        #[graphql(name = "n8nBaseUrl")] n8n_base_url: Option<String>,
        git: Option<GitInput>,
        #[graphql(default)] remove_git: bool,
        #[graphql(name = "n8nApiKey", secret)] n8n_api_key: Option<String>,
        #[graphql(secret)] git_token: Option<String>,
    ) -> async_graphql::Result<EnvironmentPayload> {
        if remove_git && git.is_some() {
            return Err(ApiError::validation("removeGit", "cannot be combined with git").into());
        }
        let git = match (&git, remove_git) {
            (Some(git), _) => Some(Some(git.to_domain())),
            (None, true) => Some(None),
            (None, false) => None,
        };
        let command = EnvironmentCommand::Update {
            name,
            n8n_base_url,
            git,
            n8n_secret_ref: None,
            git_secret_ref: None,
        };
        Self::execute_with_secrets(ctx, &id, command, n8n_api_key, git_token).await
    }

    /// Takes an environment out of service (admin); its history stays.
    async fn deactivate_environment(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        reason: Option<String>,
    ) -> async_graphql::Result<EnvironmentPayload> {
        Self::execute(ctx, &id, EnvironmentCommand::Deactivate { reason }).await
    }

    /// Lets scheduled deployments to a pinned environment start again (admin). A
    /// rollback pins its target so that automation does not deploy again what was
    /// just rolled back.
    async fn unpin_environment(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        reason: Option<String>,
    ) -> async_graphql::Result<EnvironmentPayload> {
        Self::execute(ctx, &id, EnvironmentCommand::Unpin { reason }).await
    }

    /// Puts a deactivated environment back into service (admin).
    async fn reactivate_environment(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
    ) -> async_graphql::Result<EnvironmentPayload> {
        Self::execute(ctx, &id, EnvironmentCommand::Reactivate).await
    }
}
