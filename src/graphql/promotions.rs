//! Promotions and deployments (DOMAIN.md §2.3, §2.4, §5): comparing two
//! environments, starting a promotion (gates, approval), and its deployment.

use aggregates::deployment::DeploymentCommand;
use aggregates::promotion::PromotionCommand;
use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use projections::models::deployments::{self as deployments_model, DeploymentRow};
use projections::models::promotions::{self as model, PromotionRow};

use super::snapshots::Snapshot;
use super::types::{
    arg, connection, list, DeploymentPhase, DeploymentStatus, DeploymentWorkflow, GateResult,
    LocalIdArg, PromotionStatus, PromotionWorkflow, WorkflowOutcome,
};
use super::{app, caller, loaders, new_id, read_back_row, run, wait_for, ApiError};
use crate::workflows::promotion::{self, PromoteError, PromotionRequest, RestoreRequest};

pub struct Promotion(pub PromotionRow);

#[Object]
impl Promotion {
    async fn id(&self) -> ID {
        ID(self.0.promotion_id.clone())
    }
    async fn pipeline_id(&self) -> ID {
        ID(self.0.pipeline_id.clone())
    }
    async fn status(&self) -> PromotionStatus {
        self.0.status.into()
    }
    async fn source_environment_id(&self) -> ID {
        ID(self.0.source_environment_id.clone())
    }
    async fn target_environment_id(&self) -> ID {
        ID(self.0.target_environment_id.clone())
    }
    /// The gate checks, as evaluated when the promotion was created.
    async fn gate_results(&self) -> Vec<GateResult> {
        self.0
            .gate_results
            .as_deref()
            .map(|results| list(results))
            .unwrap_or_default()
    }
    async fn workflows(&self) -> Vec<PromotionWorkflow> {
        list(&self.0.workflows)
    }
    async fn requires_approval(&self) -> bool {
        self.0.requires_approval
    }
    /// An admin skipped the gates (never the state machine).
    async fn bypass_validation(&self) -> bool {
        self.0.bypass_validation
    }
    async fn created_by(&self) -> &str {
        &self.0.created_by
    }
    async fn approved_by(&self) -> Option<&str> {
        self.0.approved_by.as_deref()
    }
    async fn rejected_by(&self) -> Option<&str> {
        self.0.rejected_by.as_deref()
    }
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    async fn deployment_id(&self) -> Option<ID> {
        self.0.deployment_id.clone().map(ID)
    }
    /// A restore (`restoreSnapshot`): the snapshot its workflows come from (its
    /// source and target are the same environment). Null for a promotion.
    async fn source_snapshot_id(&self) -> Option<ID> {
        self.0.source_snapshot_id.clone().map(ID)
    }
    /// Per-workflow outcomes once the promotion ran.
    async fn result(&self) -> Vec<WorkflowOutcome> {
        self.0
            .result
            .as_deref()
            .map(|outcomes| list(outcomes))
            .unwrap_or_default()
    }
    /// What a failed rollback left inconsistent.
    async fn inconsistencies(&self) -> Vec<String> {
        self.0
            .inconsistencies
            .as_deref()
            .cloned()
            .unwrap_or_default()
    }
    async fn created_at(&self) -> Option<DateTime<Utc>> {
        Some(self.0.created_at)
    }
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
}

pub struct Deployment(pub DeploymentRow);

#[Object]
impl Deployment {
    async fn id(&self) -> ID {
        ID(self.0.deployment_id.clone())
    }
    async fn promotion_id(&self) -> ID {
        ID(self.0.promotion_id.clone())
    }
    async fn promotion(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Promotion>> {
        let id = self.0.promotion_id.clone();
        Ok(loaders(ctx)?.promotions.load_one(id).await?.map(Promotion))
    }
    async fn status(&self) -> DeploymentStatus {
        self.0.status.into()
    }
    async fn scheduled_for(&self) -> Option<DateTime<Utc>> {
        self.0.scheduled_for
    }
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    async fn workflows(&self) -> Vec<DeploymentWorkflow> {
        list(&self.0.workflows)
    }
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    async fn created_at(&self) -> Option<DateTime<Utc>> {
        Some(self.0.created_at)
    }
    /// Where the deployment is (seed 002's phases; each begins with an event).
    async fn phase(&self) -> DeploymentPhase {
        self.0.phase.into()
    }
    /// Workflows with a result (success, failed, skipped or unchanged).
    async fn done(&self) -> i32 {
        self.done_count()
    }
    async fn total(&self) -> i32 {
        self.0.workflows.len() as i32
    }
    /// `done` of `total`, in percent (100 once finished).
    async fn percent(&self) -> i32 {
        if self.0.phase == aggregates::deployment::DeploymentPhase::Done {
            return 100;
        }
        let total = self.0.workflows.len().max(1) as i32;
        self.done_count() * 100 / total
    }
    /// The gates checked against the target when it started (`credentials_exist`,
    /// `sub_workflows_resolved`, `source_unchanged`…); empty before.
    async fn gate_results(&self) -> Vec<GateResult> {
        self.0
            .progress
            .gate_results
            .as_deref()
            .map(list)
            .unwrap_or_default()
    }
    /// The target as it was before the deployment touched it.
    async fn pre_snapshot(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Snapshot>> {
        self.snapshot(ctx, self.0.progress.pre_snapshot.as_ref())
            .await
    }
    /// The target after the deployment succeeded.
    async fn post_snapshot(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Snapshot>> {
        self.snapshot(ctx, self.0.progress.post_snapshot.as_ref())
            .await
    }
    /// Workflows that did not hold what was written when re-read (null before the
    /// verification).
    async fn verification_mismatches(&self) -> Option<Vec<String>> {
        self.0.progress.verification.clone()
    }
    async fn rollback(&self) -> Option<DeploymentRollback> {
        self.0
            .progress
            .rollback
            .as_ref()
            .map(|r| DeploymentRollback {
                reason: r.reason.clone(),
                finished: r.inconsistencies.is_some(),
                inconsistencies: r.inconsistencies.clone().unwrap_or_default(),
            })
    }
    /// The commit to the target's Git folder after success.
    async fn git_commit(&self) -> Option<DeploymentGitCommit> {
        self.0.progress.git.as_ref().map(|g| DeploymentGitCommit {
            commit_sha: g.commit_sha.clone(),
            files: g.files as i32,
            error: g.error.clone(),
        })
    }
    /// Why a recovery was asked for (the stale sweep).
    async fn recovery_requested(&self) -> Option<&str> {
        self.0.progress.recovery_requested.as_deref()
    }
    /// After a failure, what can be done: a new promotion of the same workflows,
    /// restoring the pre-snapshot, unpinning the target.
    async fn recovery_options(&self) -> Vec<RecoveryOption> {
        use crate::workflows::deployment::{recovery_options, Recovery};
        recovery_options(&self.0)
            .into_iter()
            .map(|(kind, snapshot_id)| RecoveryOption {
                kind: match kind {
                    Recovery::RetryAsNewPromotion => RecoveryKind::RetryAsNewPromotion,
                    Recovery::RestoreSnapshot => RecoveryKind::RestoreSnapshot,
                    Recovery::UnpinEnvironment => RecoveryKind::UnpinEnvironment,
                },
                description: kind.description().into(),
                snapshot_id: snapshot_id.map(ID),
            })
            .collect()
    }
}

impl Deployment {
    fn done_count(&self) -> i32 {
        self.0
            .workflows
            .iter()
            .filter(|w| w.status != aggregates::deployment::WorkflowDeployStatus::Pending)
            .count() as i32
    }

    async fn snapshot(
        &self,
        ctx: &Context<'_>,
        taken: Option<&aggregates::deployment::SnapshotRef>,
    ) -> async_graphql::Result<Option<Snapshot>> {
        let Some(taken) = taken else {
            return Ok(None);
        };
        Ok(super::snapshots::load_snapshot(ctx, &taken.snapshot_id).await?)
    }
}

#[derive(SimpleObject)]
pub struct DeploymentRollback {
    pub reason: String,
    /// The target was re-read and compared with the pre-snapshot.
    pub finished: bool,
    /// What differs from the pre-snapshot after the restore (empty: restored
    /// exactly).
    pub inconsistencies: Vec<String>,
}

#[derive(SimpleObject)]
pub struct DeploymentGitCommit {
    /// Null: the target has no Git, nothing was committed, or the commit failed.
    pub commit_sha: Option<String>,
    /// Files the commit wrote or deleted (a workflow and its sidecar are two).
    pub files: i32,
    pub error: Option<String>,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryKind {
    RetryAsNewPromotion,
    RestoreSnapshot,
    UnpinEnvironment,
}

#[derive(SimpleObject)]
pub struct RecoveryOption {
    pub kind: RecoveryKind,
    pub description: String,
    /// The snapshot to restore (`RESTORE_SNAPSHOT`).
    pub snapshot_id: Option<ID>,
}

#[derive(Default)]
pub struct PromotionQuery;

#[Object]
impl PromotionQuery {
    /// Promotions of the caller's tenant, newest first.
    #[graphql(complexity = "super::list_cost(first, child_complexity)")]
    async fn promotions(
        &self,
        ctx: &Context<'_>,
        status: Option<PromotionStatus>,
        target_environment_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Connection<String, Promotion>> {
        wait_for(ctx, model::NAME, min_position).await?;
        let page = model::promotions(
            &app(ctx)?.store,
            caller(ctx)?.tenant(),
            status.map(Into::into),
            target_environment_id.as_ref().map(|id| id.as_str()),
            super::types::first(first),
            after.as_deref(),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, Promotion))
    }

    async fn promotion(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Option<Promotion>> {
        wait_for(ctx, model::NAME, min_position).await?;
        Ok(load_promotion(ctx, id.as_str()).await?)
    }

    /// Deployments of the caller's tenant, newest first.
    #[graphql(complexity = "super::list_cost(first, child_complexity)")]
    async fn deployments(
        &self,
        ctx: &Context<'_>,
        promotion_id: Option<ID>,
        status: Option<DeploymentStatus>,
        first: Option<i32>,
        after: Option<String>,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Connection<String, Deployment>> {
        wait_for(ctx, deployments_model::NAME, min_position).await?;
        let page = deployments_model::deployments(
            &app(ctx)?.store,
            caller(ctx)?.tenant(),
            promotion_id.as_ref().map(|id| id.as_str()),
            status.map(Into::into),
            super::types::first(first),
            after.as_deref(),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, Deployment))
    }

    async fn deployment(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Option<Deployment>> {
        wait_for(ctx, deployments_model::NAME, min_position).await?;
        Ok(load_deployment(ctx, id.as_str()).await?)
    }
}

async fn load_promotion(ctx: &Context<'_>, id: &str) -> Result<Option<Promotion>, ApiError> {
    let row = model::promotion(&app(ctx)?.store, caller(ctx)?.tenant(), id).await?;
    Ok(row.map(Promotion))
}

async fn load_deployment(ctx: &Context<'_>, id: &str) -> Result<Option<Deployment>, ApiError> {
    let row = deployments_model::deployment(&app(ctx)?.store, caller(ctx)?.tenant(), id).await?;
    Ok(row.map(Deployment))
}

pub struct PromotionPayload {
    id: String,
    position: Option<i64>,
}

impl PromotionPayload {
    pub fn new(id: String, position: Option<i64>) -> PromotionPayload {
        PromotionPayload { id, position }
    }
}

#[Object]
impl PromotionPayload {
    /// Global position of the last event appended (null when nothing changed).
    async fn position(&self) -> Option<i64> {
        self.position
    }
    async fn promotion(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Promotion>> {
        let row = read_back_row(ctx, model::NAME, self.position, &self.id).await?;
        Ok(row.map(Promotion))
    }
}

pub struct DeploymentPayload {
    id: String,
    position: Option<i64>,
}

#[Object]
impl DeploymentPayload {
    /// Global position of the last event appended (null when nothing changed).
    async fn position(&self) -> Option<i64> {
        self.position
    }
    async fn deployment(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Deployment>> {
        let row = read_back_row(ctx, deployments_model::NAME, self.position, &self.id).await?;
        Ok(row.map(Deployment))
    }
}

#[derive(Default)]
pub struct PromotionMutation;

async fn promotion_command(
    ctx: &Context<'_>,
    id: &LocalIdArg,
    command: PromotionCommand,
) -> async_graphql::Result<PromotionPayload> {
    let caller = caller(ctx)?;
    let name = aggregates::DomainCommand::name(&command);
    let committed = run(ctx, name, async {
        Ok(app(ctx)?
            .domain
            .promotion(&caller.command_context(), id, command)
            .await?)
    })
    .await?;
    Ok(PromotionPayload {
        id: id.to_string(),
        position: committed.position,
    })
}

#[Object]
impl PromotionMutation {
    /// pending_approval → approved (an admin other than the creator, unless the
    /// pipeline allows self-approval).
    async fn approve_promotion(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
    ) -> async_graphql::Result<PromotionPayload> {
        promotion_command(ctx, &id, PromotionCommand::Approve).await
    }

    /// pending_approval → rejected (admin; `reason` required).
    async fn reject_promotion(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        reason: Option<String>,
    ) -> async_graphql::Result<PromotionPayload> {
        promotion_command(ctx, &id, PromotionCommand::Reject { reason }).await
    }

    /// → cancelled, before it runs (admin).
    async fn cancel_promotion(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        reason: Option<String>,
    ) -> async_graphql::Result<PromotionPayload> {
        promotion_command(ctx, &id, PromotionCommand::Cancel { reason }).await
    }

    /// Deploys an approved promotion (admin): now, or at `scheduledFor` (`SCHEDULED`:
    /// the deployment scheduler starts it when due, unless a rollback pinned the
    /// target). Starting reserves the target (one running promotion per target: a
    /// `CONFLICT` names the one running) and moves the promotion to `RUNNING`; the
    /// deployment then runs its phases in the background (`deployment(id)` and the
    /// `events` subscription show its progress).
    async fn deploy_promotion(
        &self,
        ctx: &Context<'_>,
        promotion_id: LocalIdArg<arg::PromotionId>,
        scheduled_for: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<DeploymentPayload> {
        let caller = caller(ctx)?;
        let (id, committed) = run(ctx, "deployment.create", async {
            Ok(crate::workflows::deployment::deploy(
                app(ctx)?,
                &caller.command_context(),
                &promotion_id,
                scheduled_for,
            )
            .await?)
        })
        .await?;
        Ok(DeploymentPayload {
            id: id.to_string(),
            position: committed.position,
        })
    }

    /// pending/scheduled → cancelled (admin).
    async fn cancel_deployment(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        reason: Option<String>,
    ) -> async_graphql::Result<DeploymentPayload> {
        let caller = caller(ctx)?;
        let command = DeploymentCommand::Cancel { reason };
        let committed = run(ctx, "deployment.cancel", async {
            Ok(app(ctx)?
                .domain
                .deployment(&caller.command_context(), &id, command)
                .await?)
        })
        .await?;
        Ok(DeploymentPayload {
            id: id.to_string(),
            position: committed.position,
        })
    }
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "crate::workflows::promotion::Change")]
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

/// The mutations that start a promotion. Kept apart from [`PromotionMutation`]
/// only so that the merged schema lists its fields where it always has (after the
/// drift policies): `schema.graphql` stays as it is.
#[derive(Default)]
pub struct PromotionStartMutation;

#[Object]
impl PromotionStartMutation {
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
        let (source, target) = (
            source_environment_id.into_inner(),
            target_environment_id.into_inner(),
        );
        wait_for(ctx, projections::models::matrix::NAME, min_position).await?;
        let comparisons =
            promotion::comparison(app(ctx)?, &caller.command_context(), &source, &target)
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
                    change: c.change.into(),
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
            promotion::create(services, &caller.command_context(), request)
                .await
                .map_err(ApiError::from)
        })
        .await?;
        Ok(PromotionPayload::new(id, committed.position))
    }

    /// Brings an environment back to one of its snapshots (admin): a promotion
    /// whose source is the snapshot, with the gates and approval of the pipeline
    /// stage that promotes into the environment. Every workflow the snapshot holds
    /// is written back as it was, activation included; one it records as absent is
    /// deleted. Without an approval to wait for, it is deployed at once (the
    /// deployment is in the answer) and runs like any deployment: progress,
    /// verification, rollback on the first failure. With one, it waits in
    /// `PENDING_APPROVAL`; once approved, `deployPromotion` runs it. A snapshot of
    /// another environment is refused (`VALIDATION`), an unknown one is
    /// `NOT_FOUND`.
    async fn restore_snapshot(
        &self,
        ctx: &Context<'_>,
        id: Option<LocalIdArg>,
        environment_id: LocalIdArg<arg::EnvironmentId>,
        snapshot_id: LocalIdArg<arg::SnapshotId>,
    ) -> async_graphql::Result<RestorePayload> {
        let caller = caller(ctx)?;
        let command_ctx = caller.command_context();
        let request = RestoreRequest {
            promotion_id: match id {
                Some(id) => id.into_inner(),
                None => new_id()?,
            },
            environment_id: environment_id.into_inner(),
            snapshot_id: snapshot_id.to_string(),
        };
        let promotion_id = request.promotion_id.clone();
        let services = app(ctx)?;
        let (committed, deployment) = run(ctx, "promotion.restore", async {
            let committed = promotion::restore(services, &command_ctx, request)
                .await
                .map_err(ApiError::from)?;
            if committed.state.status != aggregates::promotion::PromotionStatus::Approved {
                return Ok((committed, None));
            }
            let (id, started) =
                crate::workflows::deployment::deploy(services, &command_ctx, &promotion_id, None)
                    .await?;
            Ok((committed, Some((id, started.position))))
        })
        .await?;
        let position = deployment
            .as_ref()
            .and_then(|(_, p)| *p)
            .or(committed.position);
        Ok(RestorePayload {
            position,
            promotion: PromotionPayload::new(promotion_id.to_string(), committed.position),
            deployment: deployment.map(|(id, position)| DeploymentPayload {
                id: id.to_string(),
                position,
            }),
        })
    }
}

/// What `restoreSnapshot` recorded.
pub struct RestorePayload {
    position: Option<i64>,
    promotion: PromotionPayload,
    deployment: Option<DeploymentPayload>,
}

#[Object]
impl RestorePayload {
    /// Global position of the last event appended.
    async fn position(&self) -> Option<i64> {
        self.position
    }
    /// The restore's promotion.
    async fn promotion(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Promotion>> {
        self.promotion.promotion(ctx).await
    }
    /// Its deployment, started at once (null: the restore waits for an approval).
    async fn deployment(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Deployment>> {
        match &self.deployment {
            Some(deployment) => deployment.deployment(ctx).await,
            None => Ok(None),
        }
    }
}

impl From<crate::workflows::deployment::StartError> for ApiError {
    fn from(e: crate::workflows::deployment::StartError) -> Self {
        use crate::workflows::deployment::StartError;
        match e {
            StartError::Command(e) => ApiError::Command(e),
            pinned @ StartError::Pinned { .. } => ApiError::Domain(
                aggregates::kernel::error::DomainError::Conflict(pinned.to_string()),
            ),
        }
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
