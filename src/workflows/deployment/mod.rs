//! Deployments that run (DOMAIN.md §2.4, §5): starting one, the runner that takes
//! it through its phases ([`run`]), the snapshots it keeps ([`snapshot`]), and the
//! scheduler's sweep (due deployments, stale ones, orphaned slots).
//!
//! **Starting** (`deployPromotion` now, or the scheduler when one is due) reserves
//! the target environment's promotion slot (one running promotion per target, held
//! in the environment's stream like the incident slot, so it holds across replicas),
//! moves the deployment to `running` and the promotion with it. A slot held by
//! another deployment refuses the start with `CONFLICT` naming it; a scheduled
//! deployment then waits for the next sweep. A scheduled deployment to a pinned
//! environment (a rollback pinned it) does not start until an admin unpins it.
//!
//! **Running** happens on the reactor runtime: [`DeploymentRunner`] reacts to
//! `deployment.started` (and to `deployment.recovery_requested`) by running the
//! deployment to its end, once across replicas (the runtime's advisory lock), in
//! its own runtime so a long deployment never holds up the other reactors. A
//! process that dies mid-deployment leaves the triggering event unhandled: the next
//! runner replays it, and [`run::run`] resumes from what the deployment's events
//! show (see there).

pub mod run;
pub mod snapshot;

use std::sync::Arc;

use aggregates::deployment::{Deployment, DeploymentCommand, DeploymentStatus};
use aggregates::environment::{Environment, EnvironmentCommand};
use aggregates::kernel::error::DomainError;
use aggregates::kernel::ids::{aggregate_id, AggregateId, LocalId, TenantId};
use aggregates::promotion::{Promotion, PromotionCommand};
use aggregates::Actor;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

pub use run::{RunError, RunOutcome, RUNNER};

use crate::command::bus::{authorize, CommandContext, CommandError, Committed, UseCase};
use crate::reactors::{ReactError, Reaction, Reactor, ReactorOptions, ReactorRuntime, Trigger};
use crate::AppContext;
use eventstore::StoredEvent;

/// How long a deployment may run before the sweep recovers it (DOMAIN.md §2.4).
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// A deployment that has been pending this long while holding its target's slot
/// was never started (the process died between the two): the sweep frees the slot.
const ORPHANED_SLOT: chrono::Duration = chrono::Duration::minutes(1);

fn system(ctx: &CommandContext) -> CommandContext {
    CommandContext {
        tenant: ctx.tenant.clone(),
        actor: Actor::system(RUNNER),
        correlation_id: ctx.correlation_id.clone(),
        causation_id: ctx.causation_id.clone(),
    }
}

/// Why a deployment did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A rollback pinned the target: scheduled deployments wait for `unpinEnvironment`.
    #[error("environment {environment} is pinned ({reason}); an admin unpins it")]
    Pinned { environment: String, reason: String },
}

impl From<DomainError> for StartError {
    fn from(e: DomainError) -> Self {
        StartError::Command(e.into())
    }
}

/// Starts `deployment_id` now: reserves the target's promotion slot, then moves
/// the deployment and its promotion to `running`; the runner takes it from there.
/// `scheduled`: started by the scheduler (a pinned target refuses it).
pub async fn start(
    app: &AppContext,
    ctx: &CommandContext,
    deployment_id: &LocalId,
    scheduled: bool,
) -> Result<Committed<Deployment>, StartError> {
    let bus = app.domain.bus();
    authorize(ctx, &DeploymentCommand::Start)?;
    let deployment = bus
        .load::<Deployment>(&aggregate_id(&ctx.tenant, &[deployment_id]))
        .await?
        .into_state();
    if !deployment.created {
        return Err(CommandError::from(DomainError::NotFound {
            kind: "deployment",
            id: deployment_id.to_string(),
        })
        .into());
    }
    let promotion_id =
        LocalId::parse(deployment.promotion_id.as_str()).map_err(CommandError::from)?;
    let promotion = bus
        .load::<Promotion>(&aggregate_id(&ctx.tenant, &[&promotion_id]))
        .await?
        .into_state();
    let target_id =
        LocalId::parse(promotion.target_environment_id.as_str()).map_err(CommandError::from)?;
    let target = bus
        .load::<Environment>(&aggregate_id(&ctx.tenant, &[&target_id]))
        .await?
        .into_state();
    if let (true, Some(reason)) = (scheduled, &target.pinned) {
        return Err(StartError::Pinned {
            environment: target_id.to_string(),
            reason: reason.clone(),
        });
    }
    // the deployment must be startable before it takes the slot
    aggregates::kernel::transitions::check(deployment.status, DeploymentStatus::Running, false)
        .map_err(CommandError::from)?;
    let sys = system(ctx);
    app.domain
        .environment(
            &sys,
            &target_id,
            EnvironmentCommand::ReservePromotionSlot {
                promotion_id: promotion_id.clone(),
                deployment_id: deployment_id.clone(),
            },
        )
        .await?;
    let started = match app
        .domain
        .deployment(ctx, deployment_id, DeploymentCommand::Start)
        .await
    {
        Ok(started) => started,
        Err(error) => {
            let release = EnvironmentCommand::ReleasePromotionSlot {
                deployment_id: deployment_id.clone(),
            };
            if let Err(e) = app.domain.environment(&sys, &target_id, release).await {
                tracing::warn!(deployment = %deployment_id, error = %e,
                    "the promotion slot of a deployment that did not start stays reserved \
                     until the sweep frees it");
            }
            return Err(error.into());
        }
    };
    // The promotion runs with it (the runner repairs this step if it is lost).
    if let Err(error) = app
        .domain
        .promotion(
            &sys,
            &promotion_id,
            PromotionCommand::Start {
                deployment_id: deployment_id.clone(),
            },
        )
        .await
    {
        tracing::warn!(deployment = %deployment_id, %error,
            "the promotion was not moved to running; the runner will");
    }
    Ok(started)
}

/// `deployPromotion`: creates the deployment of an approved promotion and, when
/// `scheduled_for` is not given, starts it. A target whose slot another deployment
/// holds refuses an immediate deployment with `CONFLICT` (the created deployment is
/// cancelled, so the promotion can be deployed again).
pub async fn deploy(
    app: &AppContext,
    ctx: &CommandContext,
    promotion_id: &LocalId,
    scheduled_for: Option<DateTime<Utc>>,
) -> Result<(LocalId, Committed<Deployment>), StartError> {
    authorize(ctx, &UseCase::DeployPromotion)?;
    if scheduled_for.is_none() {
        // refuse before creating anything when the answer is already known
        let promotion = app
            .domain
            .bus()
            .load::<Promotion>(&aggregate_id(&ctx.tenant, &[promotion_id]))
            .await?
            .into_state();
        if let Ok(target_id) = LocalId::parse(promotion.target_environment_id.as_str()) {
            let target = app
                .domain
                .bus()
                .load::<Environment>(&aggregate_id(&ctx.tenant, &[&target_id]))
                .await?
                .into_state();
            if let Some((promotion, deployment)) = &target.promotion_slot {
                return Err(CommandError::from(DomainError::Conflict(format!(
                    "promotion {promotion} (deployment {deployment}) is running on \
                     {target_id}; one promotion at a time"
                )))
                .into());
            }
        }
    }
    let (id, created) =
        crate::workflows::promotion::deploy(&app.domain, ctx, promotion_id, scheduled_for).await?;
    if scheduled_for.is_some() {
        return Ok((id, created));
    }
    match start(app, ctx, &id, false).await {
        Ok(started) => Ok((id, started)),
        Err(error) => {
            let cancel = DeploymentCommand::Cancel {
                reason: Some(format!("not started: {error}")),
            };
            if let Err(e) = app.domain.deployment(&system(ctx), &id, cancel).await {
                tracing::warn!(deployment = %id, error = %e, "could not cancel a deployment that did not start");
            }
            Err(error)
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub started: u32,
    /// Due, but the target was pinned or its slot held.
    pub waiting: u32,
    pub stale: u32,
    pub slots_freed: u32,
    pub failed: u32,
}

/// The deployment scheduler's work: starts every due scheduled deployment (once
/// across replicas: the scheduler's tick runs once), asks for the recovery of every
/// deployment running longer than `stale_after`, and frees promotion slots held by
/// deployments that are no longer running.
pub async fn sweep(
    app: &AppContext,
    correlation_id: &str,
    stale_after: chrono::Duration,
) -> Result<SweepReport, projections::query::QueryError> {
    use projections::models::deployments as model;
    let now = app.domain.bus().clock().now();
    let mut report = SweepReport::default();
    let ctx_of = |tenant: &str| -> Option<CommandContext> {
        let tenant = TenantId::parse(tenant).ok()?;
        let mut ctx = CommandContext::new(tenant, Actor::system("deployments"));
        ctx.correlation_id = correlation_id.to_string();
        Some(ctx)
    };
    for row in model::due(&app.store, now).await? {
        let (Some(ctx), Ok(id)) = (
            ctx_of(&row.tenant),
            LocalId::parse(row.deployment_id.as_str()),
        ) else {
            continue;
        };
        match start(app, &ctx, &id, true).await {
            Ok(_) => report.started += 1,
            Err(StartError::Pinned { .. })
            | Err(StartError::Command(CommandError::Refused(DomainError::Conflict(_)))) => {
                report.waiting += 1
            }
            Err(error) => {
                report.failed += 1;
                tracing::warn!(deployment = %id, %error, "a due deployment did not start");
            }
        }
    }
    for row in model::running_since(&app.store, now - stale_after).await? {
        let (Some(ctx), Ok(id)) = (
            ctx_of(&row.tenant),
            LocalId::parse(row.deployment_id.as_str()),
        ) else {
            continue;
        };
        let command = DeploymentCommand::MarkStale { after: stale_after };
        match app.domain.deployment(&ctx, &id, command).await {
            Ok(committed) if committed.position.is_some() => report.stale += 1,
            Ok(_) => {}
            Err(error) => {
                report.failed += 1;
                tracing::warn!(deployment = %id, %error, "a stale deployment was not marked");
            }
        }
    }
    for env in projections::models::environments::with_running_deployment(&app.store).await? {
        let (Some(ctx), Some(deployment_id)) = (ctx_of(&env.tenant), env.running_deployment_id)
        else {
            continue;
        };
        let (Ok(id), Ok(environment_id)) = (
            LocalId::parse(deployment_id.as_str()),
            LocalId::parse(env.environment_id.as_str()),
        ) else {
            continue;
        };
        let deployment = match app
            .domain
            .bus()
            .load::<Deployment>(&aggregate_id(&ctx.tenant, &[&id]))
            .await
        {
            Ok(loaded) => loaded.into_state(),
            Err(_) => continue,
        };
        let orphaned = match deployment.status {
            DeploymentStatus::Running => false,
            DeploymentStatus::Pending | DeploymentStatus::Scheduled => {
                model::deployment(&app.store, ctx.tenant.as_str(), id.as_str())
                    .await?
                    .is_none_or(|row| row.updated_at < now - ORPHANED_SLOT)
            }
            _ => true,
        };
        if !orphaned {
            continue;
        }
        let release = EnvironmentCommand::ReleasePromotionSlot { deployment_id: id };
        match app
            .domain
            .environment(&system(&ctx), &environment_id, release)
            .await
        {
            Ok(committed) if committed.position.is_some() => report.slots_freed += 1,
            Ok(_) => {}
            Err(error) => {
                report.failed += 1;
                tracing::warn!(environment = %environment_id, %error, "an orphaned promotion slot was not freed");
            }
        }
    }
    Ok(report)
}

/// The reactor that runs deployments.
pub struct DeploymentRunner {
    app: AppContext,
}

/// The runner's reactor name (its checkpoint row and advisory lock).
pub const NAME: &str = "deployment_runner";

impl DeploymentRunner {
    pub fn new(app: AppContext) -> DeploymentRunner {
        DeploymentRunner { app }
    }
}

impl Reactor for DeploymentRunner {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wants(&self, event: &StoredEvent) -> bool {
        matches!(
            event.event_type.as_str(),
            "deployment.started" | "deployment.recovery_requested"
        )
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&["deployment.started", "deployment.recovery_requested"])
    }

    fn partition<'e>(&self, event: &'e StoredEvent) -> &'e str {
        event.aggregate_id.as_str()
    }

    fn react<'a>(
        &'a self,
        trigger: &'a Trigger<'a>,
    ) -> BoxFuture<'a, Result<Reaction, ReactError>> {
        Box::pin(async move {
            let id = AggregateId::parse(trigger.event.aggregate_id.as_str())?;
            let deployment_id = LocalId::parse(id.local())?;
            let ctx = trigger.context(RUNNER)?;
            let outcome = run::run(
                &self.app,
                &ctx.tenant,
                &deployment_id,
                ctx.correlation_id.clone(),
                ctx.causation_id.clone(),
            )
            .await;
            match outcome {
                Ok(RunOutcome::NotRunning(status)) => Ok(Reaction::Skipped(format!(
                    "deployment {deployment_id} is {status}"
                ))),
                Ok(outcome) => {
                    tracing::info!(deployment = %deployment_id, ?outcome, "deployment ended");
                    Ok(Reaction::Done)
                }
                Err(RunError::Command(e)) => Err(e.into()),
                Err(RunError::Permanent(e)) => Err(ReactError::Permanent(e)),
                Err(e @ (RunError::Query(_) | RunError::Database(_))) => {
                    Err(ReactError::Transient(e.to_string()))
                }
            }
        })
    }
}

/// Starts the deployment runner on its own reactor runtime (publishing its status
/// with the other reactors'); the task runs until aborted.
pub fn spawn_runner(app: &AppContext) -> tokio::task::JoinHandle<()> {
    let runtime = ReactorRuntime::new(
        app.store.clone(),
        vec![Arc::new(DeploymentRunner::new(app.clone()))],
        ReactorOptions::default(),
        app.domain.reactors().clone(),
    );
    runtime.spawn().1
}

/// What can be done after a deployment failed (empty for any other status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// A new promotion of the same workflows, deployed again.
    RetryAsNewPromotion,
    /// Bring the target back to what it held before this deployment.
    RestoreSnapshot,
    /// The rollback pinned the target: scheduled deployments to it wait.
    UnpinEnvironment,
}

impl Recovery {
    pub fn description(self) -> &'static str {
        match self {
            Recovery::RetryAsNewPromotion => {
                "create a new promotion of the same workflows (createPromotion) and deploy it"
            }
            Recovery::RestoreSnapshot => {
                "bring the target back to what it held before this deployment (restoreSnapshot)"
            }
            Recovery::UnpinEnvironment => {
                "the rollback pinned the target: scheduled deployments to it wait until \
                 unpinEnvironment"
            }
        }
    }
}

/// The recovery options of a deployment as its read model holds it, each with the
/// snapshot it would restore (the API's `recoveryOptions` and the console's page).
pub fn recovery_options(
    row: &projections::models::deployments::DeploymentRow,
) -> Vec<(Recovery, Option<String>)> {
    if row.status != DeploymentStatus::Failed {
        return vec![];
    }
    let progress = &row.progress.0;
    let mut options = vec![(Recovery::RetryAsNewPromotion, None)];
    if let Some(pre) = &progress.pre_snapshot {
        let restored = progress
            .rollback
            .as_ref()
            .and_then(|r| r.inconsistencies.as_ref())
            .is_some_and(Vec::is_empty);
        if !restored {
            options.push((Recovery::RestoreSnapshot, Some(pre.snapshot_id.clone())));
        }
    }
    if progress.rollback.is_some() {
        options.push((Recovery::UnpinEnvironment, None));
    }
    options
}
