//! Sync mutations: read an environment's n8n (and, with the Git connectors, its
//! repository) and record what changed.

use async_graphql::{Context, Object, SimpleObject, ID};

use super::environments::{self, Environment};
use super::types::{arg, LocalIdArg};
use super::{app, caller, read_back, run, ApiError};
use crate::workflows::sync::{self, SyncError};

/// What `syncEnvironment` saw and recorded.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct EnvironmentSyncPayload {
    /// Global position of the last event appended (null when nothing changed).
    pub position: Option<i64>,
    #[graphql(skip)]
    pub environment_id: String,
    /// Workflows n8n returned.
    pub workflows_seen: i64,
    /// New mappings.
    pub discovered: i64,
    /// Mappings whose content or name changed (or that reappeared).
    pub changed: i64,
    /// Mappings linked to a canonical workflow by this sync (auto-link).
    pub linked: i64,
    /// Mappings gone from n8n.
    pub missing: i64,
    /// Content hashes several canonical workflows claim: never linked on.
    pub collisions: Vec<String>,
    /// Workflows n8n returned that could not be recorded, and why.
    pub rejected: Vec<String>,
    /// Events appended to the mappings, canonical workflows and the environment (0
    /// when nothing changed). The uniqueness reservations these commands claim (link
    /// slots, slugs) are events too and are not counted here.
    pub events: i64,
}

#[async_graphql::ComplexObject]
impl EnvironmentSyncPayload {
    async fn environment(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Environment>> {
        let read = environments::load(ctx, &self.environment_id);
        Ok(read_back(
            ctx,
            projections::models::environments::NAME,
            self.position,
            read,
        )
        .await?)
    }
}

/// What `syncRepository` read and recorded.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct RepositorySyncPayload {
    /// Global position of the last event appended (null when nothing changed).
    pub position: Option<i64>,
    #[graphql(skip)]
    pub environment_id: String,
    /// The commit the folder was read at.
    pub commit_sha: String,
    /// Workflow files (`{slug}.json`; sidecars not counted).
    pub files_seen: i64,
    /// Canonical workflows created from Git.
    pub created: i64,
    pub renamed: i64,
    /// Canonical workflows whose Git content changed.
    pub updated: i64,
    /// Linked mappings of this environment given the new Git hash.
    pub mappings_updated: i64,
    /// Files that could not be used, and why.
    pub rejected: Vec<String>,
    /// Events appended to the mappings, canonical workflows and the environment (0
    /// when nothing changed). The uniqueness reservations these commands claim (link
    /// slots, slugs) are events too and are not counted here.
    pub events: i64,
}

#[async_graphql::ComplexObject]
impl RepositorySyncPayload {
    async fn environment(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Environment>> {
        let read = environments::load(ctx, &self.environment_id);
        Ok(read_back(
            ctx,
            projections::models::environments::NAME,
            self.position,
            read,
        )
        .await?)
    }
}

#[derive(SimpleObject)]
pub struct DiffSummary {
    pub nodes_added: Vec<String>,
    pub nodes_removed: Vec<String>,
    pub nodes_modified: Vec<String>,
    pub connections_changed: bool,
    pub settings_changed: bool,
}

#[derive(SimpleObject)]
pub struct DriftedWorkflow {
    /// The canonical id when the workflow is mapped, else its n8n id.
    pub workflow_id: ID,
    #[graphql(name = "n8nWorkflowId")]
    pub n8n_workflow_id: ID,
    pub name: String,
    /// Matched to Git by name: the workflow has no mapping.
    pub matched_by_name: bool,
    pub diff: DiffSummary,
}

/// What `checkDrift` found and recorded.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct DriftCheckPayload {
    /// Global position of the last event appended.
    pub position: Option<i64>,
    #[graphql(skip)]
    pub environment_id: String,
    pub in_sync: i64,
    pub with_drift: i64,
    pub not_in_git: i64,
    pub drifted: Vec<DriftedWorkflow>,
    /// n8n ids of the runtime workflows with no Git counterpart.
    pub not_in_git_workflows: Vec<ID>,
    /// Workflows left out of the comparison, with the cause (n8n answers in a shape
    /// n8n never produces, Git files that are not workflow JSON).
    pub rejected: Vec<String>,
    /// The incident opened or updated, if the policy opens one.
    #[graphql(skip)]
    pub incident_id: Option<String>,
}

#[async_graphql::ComplexObject]
impl DriftCheckPayload {
    async fn environment(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Environment>> {
        let read = environments::load(ctx, &self.environment_id);
        Ok(read_back(
            ctx,
            projections::models::environments::NAME,
            self.position,
            read,
        )
        .await?)
    }

    async fn incident(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<super::incidents::Incident>> {
        let Some(id) = self.incident_id.clone() else {
            return Ok(None);
        };
        let read = super::incidents::load(ctx, &id);
        Ok(read_back(
            ctx,
            projections::models::incidents::NAME,
            self.position,
            read,
        )
        .await?)
    }
}

/// What `onboardWorkflow` did.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct OnboardWorkflowPayload {
    /// Global position of the last event appended.
    pub position: Option<i64>,
    pub canonical_id: ID,
    pub slug: String,
    /// The workflow's file in Git (its sidecar is next to it).
    pub git_path: String,
    pub commit_sha: String,
    #[graphql(skip)]
    pub environment_id: String,
    #[graphql(skip)]
    pub n8n_workflow_id: String,
}

#[async_graphql::ComplexObject]
impl OnboardWorkflowPayload {
    /// The mapping, now linked to the new canonical workflow.
    async fn mapping(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<super::mappings::WorkflowMapping>> {
        let read = super::mappings::load_mapping(ctx, &self.environment_id, &self.n8n_workflow_id);
        Ok(read_back(ctx, projections::models::matrix::NAME, self.position, read).await?)
    }
}

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Command(e) => ApiError::Command(e),
            SyncError::Upstream(e) => ApiError::Upstream(e),
            SyncError::Query(e) => ApiError::Query(e),
            SyncError::Wait(e) => ApiError::Wait(e),
            SyncError::Secret(e) => ApiError::Secret(e),
        }
    }
}

#[derive(Default)]
pub struct SyncMutation;

#[Object]
impl SyncMutation {
    /// Reads every workflow of the environment's n8n (developer) and records what
    /// changed: new workflows (auto-linked through the hash registry), changed ones,
    /// and those gone from n8n. Finding nothing new appends nothing. n8n failures are
    /// `UPSTREAM` (retryable when transient).
    async fn sync_environment(
        &self,
        ctx: &Context<'_>,
        environment_id: LocalIdArg<arg::EnvironmentId>,
    ) -> async_graphql::Result<EnvironmentSyncPayload> {
        let id = environment_id;
        let caller = caller(ctx)?;
        let services = app(ctx)?;
        let report = run(ctx, "environment.sync", async {
            sync::sync_environment(services, &caller.command_context(), &id)
                .await
                .map_err(ApiError::from)
        })
        .await?;
        Ok(EnvironmentSyncPayload {
            position: report.position,
            environment_id: id.to_string(),
            workflows_seen: report.workflows_seen.into(),
            discovered: report.discovered.into(),
            changed: report.changed.into(),
            linked: report.linked.into(),
            missing: report.missing.into(),
            collisions: report.collisions,
            rejected: report.rejected,
            events: report.events.into(),
        })
    }

    /// Reads the environment's Git folder (developer): `{slug}.json` with its sidecar
    /// `{slug}.wfo.json` (`canonical_id`, `canonical_slug`, tags). Creates the
    /// canonical workflows it does not know, records new Git versions and renames,
    /// and gives this environment's linked mappings their Git hash. Files that cannot
    /// be used are listed in `rejected`; the rest proceeds. Git failures are
    /// `UPSTREAM`.
    async fn sync_repository(
        &self,
        ctx: &Context<'_>,
        environment_id: LocalIdArg<arg::EnvironmentId>,
    ) -> async_graphql::Result<RepositorySyncPayload> {
        let id = environment_id;
        let caller = caller(ctx)?;
        let services = app(ctx)?;
        let report = run(ctx, "repository.sync", async {
            sync::sync_repository(services, &caller.command_context(), &id)
                .await
                .map_err(ApiError::from)
        })
        .await?;
        Ok(RepositorySyncPayload {
            position: report.position,
            environment_id: id.to_string(),
            commit_sha: report.commit_sha,
            files_seen: report.files_seen.into(),
            created: report.created.into(),
            renamed: report.renamed.into(),
            updated: report.updated.into(),
            mappings_updated: report.mappings_updated.into(),
            rejected: report.rejected,
            events: report.events.into(),
        })
    }

    /// Compares what the environment's n8n runs with its Git folder now (developer;
    /// non-dev environments with Git): counts in sync, drifted and not in Git, with a
    /// per-workflow diff. The check is recorded on the environment and drift opens or
    /// updates its incident per the drift policy. When n8n or Git cannot be read the
    /// check is recorded as failed (status `ERROR`, the last counts kept) and the
    /// answer is `UPSTREAM`.
    async fn check_drift(
        &self,
        ctx: &Context<'_>,
        environment_id: LocalIdArg<arg::EnvironmentId>,
    ) -> async_graphql::Result<DriftCheckPayload> {
        let id = environment_id;
        let caller = caller(ctx)?;
        let services = app(ctx)?;
        let report = run(ctx, "environment.check_drift", async {
            crate::workflows::drift::check_drift(services, &caller.command_context(), &id)
                .await
                .map_err(ApiError::from)
        })
        .await?;
        Ok(DriftCheckPayload {
            position: report.position,
            environment_id: id.to_string(),
            in_sync: report.in_sync.into(),
            with_drift: report.with_drift.into(),
            not_in_git: report.not_in_git.into(),
            drifted: report
                .drifted
                .into_iter()
                .map(|w| DriftedWorkflow {
                    workflow_id: ID(w.workflow_id),
                    n8n_workflow_id: ID(w.n8n_workflow_id),
                    name: w.name,
                    matched_by_name: w.matched_by_name,
                    diff: DiffSummary {
                        nodes_added: w.diff.nodes_added,
                        nodes_removed: w.diff.nodes_removed,
                        nodes_modified: w.diff.nodes_modified,
                        connections_changed: w.diff.connections_changed,
                        settings_changed: w.diff.settings_changed,
                    },
                })
                .collect(),
            not_in_git_workflows: report.not_in_git_workflows.into_iter().map(ID).collect(),
            rejected: report.rejected,
            incident_id: report.incident_id,
        })
    }

    /// Onboards an untracked workflow (developer; Scenario 4): a canonical workflow
    /// is created (slug from the name, a suffix on a collision), the workflow's JSON
    /// and its sidecar are committed to the environment's Git folder in one commit,
    /// and the mapping is linked. Repeating it after a failure resumes where it
    /// stopped.
    async fn onboard_workflow(
        &self,
        ctx: &Context<'_>,
        environment_id: LocalIdArg<arg::EnvironmentId>,
        #[graphql(name = "n8nWorkflowId")] n8n_workflow_id: LocalIdArg<arg::N8nWorkflowId>,
    ) -> async_graphql::Result<OnboardWorkflowPayload> {
        let (environment, workflow) = (environment_id, n8n_workflow_id);
        let caller = caller(ctx)?;
        let services = app(ctx)?;
        let report = run(ctx, "workflow.onboard", async {
            sync::onboard_workflow(services, &caller.command_context(), &environment, &workflow)
                .await
                .map_err(ApiError::from)
        })
        .await?;
        Ok(OnboardWorkflowPayload {
            position: report.position,
            canonical_id: ID(report.canonical_id),
            slug: report.slug,
            git_path: report.git_path,
            commit_sha: report.commit_sha,
            environment_id: environment.to_string(),
            n8n_workflow_id: workflow.to_string(),
        })
    }
}
