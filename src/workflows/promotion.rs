//! Creating a promotion (DOMAIN.md §5, up to the approval): compare the source and
//! target environments, pick the workflows, check the pipeline stage's gates, and
//! record the promotion and its gate results.
//!
//! Comparison and gates read the read models (the matrix, the environment status,
//! the incidents): they describe the situation the promotion was created in, and the
//! results are kept in the promotion's events, so the decision stays explainable.
//! The gates that need n8n (`credentials_exist`, `allow_placeholder_credentials`) are
//! checked when the promotion runs, by the deployment.

use aggregates::deployment::{Deployment, DeploymentCommand, DeploymentStatus};
use aggregates::environment::EnvironmentStatus;
use aggregates::incident::SlaState;
use aggregates::kernel::error::DomainError;
use aggregates::kernel::ids::LocalId;
use aggregates::kernel::transitions;
use aggregates::mapping::MappingStatus;
use aggregates::pipeline::{Pipeline, StageGates};
use aggregates::promotion::{
    Gate, GateResult, Promotion, PromotionCommand, PromotionStatus, PromotionWorkflow,
    SnapshotSource,
};
use projections::display::SyncState;
use projections::models::matrix::RowStatus;
use projections::models::matrix::{matrix_page, MatrixFilter};
use projections::query::MAX_PAGE;

use crate::command::bus::{authorize, UseCase};
use crate::command::bus::{CommandContext, CommandError, Committed};
use crate::command::domain::Domain;
use crate::AppContext;
use eventstore::Store;

/// How a canonical workflow differs between the source and the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Change {
    /// In the source, not in the target: promoting creates it.
    New,
    /// In both, with different content: promoting updates the target.
    Changed,
    /// The same content in both: nothing to push.
    Unchanged,
    /// No linked workflow in the source: nothing to promote.
    NotInSource,
}

#[derive(Debug, Clone)]
pub struct Comparison {
    pub canonical_id: String,
    pub name: String,
    pub change: Change,
    pub source_content_hash: Option<String>,
    pub target_content_hash: Option<String>,
    /// The target differs from Git and changed after it: a hotfix promoting would
    /// overwrite.
    pub target_hotfix: bool,
}

/// The read models the comparison and the gates read: caught up before either, so a
/// decision never rests on a stale view (an incident opened a moment ago blocks a
/// promotion created now).
const READS: [&str; 4] = [
    projections::models::matrix::NAME,
    projections::models::environments::NAME,
    projections::models::incidents::NAME,
    projections::models::policies::NAME,
];

/// Every canonical workflow of the tenant, compared between `source` and `target`
/// (linked mappings only), in name order.
pub async fn compare(
    store: &Store,
    tenant: &str,
    source: &str,
    target: &str,
) -> Result<Vec<Comparison>, projections::query::QueryError> {
    let filter = MatrixFilter {
        environment_ids: Some(vec![source.to_string(), target.to_string()]),
        canonical_only: true,
        row_status: Some(RowStatus::Active),
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = matrix_page(store, tenant, &filter, MAX_PAGE, after.as_deref()).await?;
        for view in page.items {
            let linked = |environment: &str| {
                view.cells.iter().find(|c| {
                    c.cell.environment_id == environment && c.cell.status == MappingStatus::Linked
                })
            };
            let (source_cell, target_cell) = (linked(source), linked(target));
            let source_hash = source_cell.and_then(|c| c.cell.env_content_hash.clone());
            let target_hash = target_cell.and_then(|c| c.cell.env_content_hash.clone());
            let change = match (&source_cell, &target_cell) {
                (None, _) => Change::NotInSource,
                (Some(_), None) => Change::New,
                (Some(_), Some(_)) if source_hash == target_hash => Change::Unchanged,
                (Some(_), Some(_)) => Change::Changed,
            };
            out.push(Comparison {
                canonical_id: view.row.canonical_id.clone().unwrap_or_default(),
                name: view.row.name.clone(),
                change,
                source_content_hash: source_hash,
                target_content_hash: target_hash,
                target_hotfix: target_cell.is_some_and(|c| c.sync_state == SyncState::Drift),
            });
        }
        if !page.has_next_page {
            return Ok(out);
        }
        after = page.end_cursor;
    }
}

/// What a promotion from `source` to `target` would do to each canonical workflow,
/// for a caller who may compare (records nothing): both environments must exist,
/// and the read models have caught up first.
pub async fn comparison(
    services: &AppContext,
    ctx: &CommandContext,
    source: &LocalId,
    target: &LocalId,
) -> Result<Vec<Comparison>, PromoteError> {
    authorize(ctx, &UseCase::ComparePromotion)?;
    let store = &services.store;
    let tenant = ctx.tenant.as_str();
    services
        .catch_up(&READS)
        .await
        .map_err(PromoteError::Wait)?;
    for environment in [source, target] {
        if projections::models::environments::environment(store, tenant, environment.as_str())
            .await?
            .is_none()
        {
            return Err(DomainError::NotFound {
                kind: "environment",
                id: environment.to_string(),
            }
            .into());
        }
    }
    Ok(compare(store, tenant, source.as_str(), target.as_str()).await?)
}

/// What a client asks for.
pub struct PromotionRequest {
    pub promotion_id: LocalId,
    pub pipeline_id: LocalId,
    pub source_environment_id: LocalId,
    pub target_environment_id: LocalId,
    /// Canonical ids to promote; `None` = every NEW or CHANGED workflow.
    pub workflow_ids: Option<Vec<String>>,
    pub bypass_validation: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Query(#[from] projections::query::QueryError),
    #[error(transparent)]
    Wait(projections::runtime::WaitError),
    /// Recorded as failed: a blocking gate did not pass.
    #[error("a blocking gate failed: {}", .results.iter().filter(|r| r.blocking && !r.passed).map(|r| r.gate.as_str()).collect::<Vec<_>>().join(", "))]
    GateBlocked {
        promotion_id: LocalId,
        position: Option<i64>,
        results: Vec<GateResult>,
    },
}

impl From<DomainError> for PromoteError {
    fn from(e: DomainError) -> Self {
        PromoteError::Command(e.into())
    }
}

/// Creates a promotion and records its gate results. Returns the last commit (the
/// gate results), or `GateBlocked` when the promotion was recorded as failed.
pub async fn create(
    services: &AppContext,
    ctx: &CommandContext,
    request: PromotionRequest,
) -> Result<Committed<aggregates::promotion::Promotion>, PromoteError> {
    authorize(ctx, &UseCase::CreatePromotion)?;
    let (store, domain) = (&services.store, &services.domain);
    let tenant = ctx.tenant.as_str();
    let pipeline_aggregate =
        aggregates::kernel::ids::aggregate_id(&ctx.tenant, &[&request.pipeline_id]);
    let pipeline = domain
        .bus()
        .load::<Pipeline>(&pipeline_aggregate)
        .await?
        .into_state();
    if !pipeline.created {
        return Err(DomainError::NotFound {
            kind: "pipeline",
            id: request.pipeline_id.to_string(),
        }
        .into());
    }
    if !pipeline.is_active() {
        return Err(DomainError::validation("pipeline_id", "the pipeline is deactivated").into());
    }
    let (source, target) = (
        request.source_environment_id.as_str(),
        request.target_environment_id.as_str(),
    );
    let stage = pipeline.stage(source, target).ok_or_else(|| {
        DomainError::validation(
            "target_environment_id",
            format!("the pipeline has no stage from {source} to {target}"),
        )
    })?;
    let gates = stage.gates;
    for environment in [source, target] {
        if projections::models::environments::environment(store, tenant, environment)
            .await?
            .is_none()
        {
            return Err(DomainError::NotFound {
                kind: "environment",
                id: environment.to_string(),
            }
            .into());
        }
    }
    services
        .catch_up(&READS)
        .await
        .map_err(PromoteError::Wait)?;
    let comparisons = compare(store, tenant, source, target).await?;
    let selected: Vec<&Comparison> = match &request.workflow_ids {
        Some(ids) => {
            let mut selected = Vec::with_capacity(ids.len());
            for id in ids {
                match comparisons.iter().find(|c| c.canonical_id == *id) {
                    Some(c) if c.change != Change::NotInSource => selected.push(c),
                    _ => {
                        return Err(DomainError::validation(
                            "workflow_ids",
                            format!("{id} has no linked workflow in {source}"),
                        )
                        .into())
                    }
                }
            }
            selected
        }
        None => comparisons
            .iter()
            .filter(|c| matches!(c.change, Change::New | Change::Changed))
            .collect(),
    };
    if selected.is_empty() {
        return Err(DomainError::validation(
            "workflow_ids",
            format!("nothing to promote: {target} already runs what {source} runs"),
        )
        .into());
    }
    let workflows = selected
        .iter()
        .map(|c| PromotionWorkflow {
            canonical_id: c.canonical_id.clone(),
            name: c.name.clone(),
            source_content_hash: c.source_content_hash.clone(),
        })
        .collect();
    let results = evaluate_gates(store, tenant, &gates, target, &selected).await?;
    let create = PromotionCommand::Create {
        pipeline_id: request.pipeline_id.clone(),
        source_environment_id: request.source_environment_id.clone(),
        target_environment_id: request.target_environment_id.clone(),
        workflows,
        requires_approval: gates.require_approval,
        allow_self_approval: gates.allow_self_approval,
        bypass_validation: request.bypass_validation,
        source_snapshot: None,
    };
    record(domain, ctx, &request.promotion_id, create, results).await
}

/// Records a new promotion and its gate results: the last commit, or `GateBlocked`
/// when a blocking gate failed it.
async fn record(
    domain: &Domain,
    ctx: &CommandContext,
    promotion_id: &LocalId,
    create: PromotionCommand,
    results: Vec<GateResult>,
) -> Result<Committed<Promotion>, PromoteError> {
    domain.promotion(ctx, promotion_id, create).await?;
    let committed = domain
        .promotion(
            ctx,
            promotion_id,
            PromotionCommand::RecordGateResults {
                results: results.clone(),
            },
        )
        .await?;
    if committed.state.status == PromotionStatus::Failed {
        return Err(PromoteError::GateBlocked {
            promotion_id: promotion_id.clone(),
            position: committed.position,
            results,
        });
    }
    Ok(committed)
}

/// What a client asks to restore.
pub struct RestoreRequest {
    pub promotion_id: LocalId,
    pub environment_id: LocalId,
    pub snapshot_id: String,
}

/// `restoreSnapshot`: a promotion whose source is a snapshot of the environment
/// (decision 39). It holds every workflow the snapshot holds: those the snapshot
/// has are written back as they were (activation included), those it records as
/// absent are deleted. It goes through the gates of the pipeline stage that
/// promotes into the environment (the pipeline of the promotion that took the
/// snapshot), its approval, and, when it runs, the same deployment phases and
/// rollback as any promotion.
pub async fn restore(
    services: &AppContext,
    ctx: &CommandContext,
    request: RestoreRequest,
) -> Result<Committed<Promotion>, PromoteError> {
    authorize(ctx, &UseCase::RestoreSnapshot)?;
    let (store, domain) = (&services.store, &services.domain);
    let tenant = ctx.tenant.as_str();
    let environment = request.environment_id.as_str();
    services
        .catch_up(&[
            READS[0],
            READS[1],
            READS[2],
            READS[3],
            projections::models::snapshots::NAME,
        ])
        .await
        .map_err(PromoteError::Wait)?;
    if projections::models::environments::environment(store, tenant, environment)
        .await?
        .is_none()
    {
        return Err(DomainError::NotFound {
            kind: "environment",
            id: environment.to_string(),
        }
        .into());
    }
    let row = projections::models::snapshots::snapshot(store, tenant, &request.snapshot_id)
        .await?
        .ok_or_else(|| DomainError::NotFound {
            kind: "snapshot",
            id: request.snapshot_id.clone(),
        })?;
    if row.environment_id != environment {
        return Err(DomainError::validation(
            "snapshot_id",
            format!(
                "snapshot {} is of environment {}, not {environment}",
                row.snapshot_id, row.environment_id
            ),
        )
        .into());
    }
    let payloads = crate::storage::payloads::Payloads::workflow_snapshots(store.clone());
    let content = crate::workflows::deployment::snapshot::load(
        &payloads,
        tenant,
        &row.snapshot_id,
        &row.digest,
    )
    .await
    .map_err(|e| DomainError::Unavailable(e.to_string()))?;
    // the gates of the stage that promotes into the environment, on the pipeline
    // of the promotion that took the snapshot
    let taken_by = LocalId::parse(row.promotion_id.as_str())?;
    let taken_by = domain
        .bus()
        .load::<Promotion>(&aggregates::kernel::ids::aggregate_id(
            &ctx.tenant,
            &[&taken_by],
        ))
        .await?
        .into_state();
    let pipeline_id = LocalId::parse(taken_by.pipeline_id.as_str())?;
    let pipeline = domain
        .bus()
        .load::<Pipeline>(&aggregates::kernel::ids::aggregate_id(
            &ctx.tenant,
            &[&pipeline_id],
        ))
        .await?
        .into_state();
    let gates = pipeline
        .stage_into(environment)
        .map(|s| s.gates)
        .ok_or_else(|| {
            DomainError::validation(
                "snapshot_id",
                format!("pipeline {pipeline_id} no longer promotes into {environment}"),
            )
        })?;
    let workflows: Vec<PromotionWorkflow> = content
        .workflows
        .iter()
        .map(|w| PromotionWorkflow {
            canonical_id: w.canonical_id.clone(),
            name: w.name.clone(),
            source_content_hash: w
                .workflow
                .as_ref()
                .and_then(|w| aggregates::content::content_hash(w).ok())
                .map(|h| h.as_str().to_string()),
        })
        .collect();
    // the target's own state decides the hotfix gate: compared with itself
    let comparisons = compare(store, tenant, environment, environment).await?;
    let selected: Vec<Comparison> = workflows
        .iter()
        .map(|w| {
            comparisons
                .iter()
                .find(|c| c.canonical_id == w.canonical_id)
                .cloned()
                .unwrap_or_else(|| Comparison {
                    canonical_id: w.canonical_id.clone(),
                    name: w.name.clone(),
                    change: Change::New,
                    source_content_hash: w.source_content_hash.clone(),
                    target_content_hash: None,
                    target_hotfix: false,
                })
        })
        .collect();
    let selected: Vec<&Comparison> = selected.iter().collect();
    let results = evaluate_gates(store, tenant, &gates, environment, &selected).await?;
    let create = PromotionCommand::Create {
        pipeline_id,
        source_environment_id: request.environment_id.clone(),
        target_environment_id: request.environment_id.clone(),
        workflows,
        requires_approval: gates.require_approval,
        allow_self_approval: gates.allow_self_approval,
        bypass_validation: false,
        source_snapshot: Some(SnapshotSource {
            snapshot_id: row.snapshot_id.clone(),
            digest: row.digest.clone(),
        }),
    };
    record(domain, ctx, &request.promotion_id, create, results).await
}

fn gate(gate: Gate, passed: bool, message: impl Into<String>) -> GateResult {
    GateResult {
        gate,
        passed,
        blocking: true,
        message: Some(message.into()),
    }
}

/// The stage's gates that the recorded state can answer, plus the tenant's drift
/// policy (`block_on_active_drift`, `enforce_ttl` apply when either asks for them).
async fn evaluate_gates(
    store: &Store,
    tenant: &str,
    gates: &StageGates,
    target: &str,
    selected: &[&Comparison],
) -> Result<Vec<GateResult>, projections::query::QueryError> {
    let policy = projections::models::policies::drift_policy(store, tenant, Some(target))
        .await?
        .policy;
    let environment = projections::models::environments::environment(store, tenant, target).await?;
    let Some(environment) = environment else {
        return Ok(vec![gate(
            Gate::TargetEnvironmentHealthy,
            false,
            "unknown environment",
        )]);
    };
    let mut results = Vec::new();
    let healthy = environment.status == EnvironmentStatus::Active
        && environment.drift_status != projections::drift_status::DriftStatus::Error;
    results.push(gate(
        Gate::TargetEnvironmentHealthy,
        healthy,
        if healthy {
            "active, last drift check succeeded".to_string()
        } else if environment.status != EnvironmentStatus::Active {
            format!("{target} is {}", environment.status)
        } else {
            format!(
                "the last drift check failed: {}",
                environment
                    .last_drift_check_error
                    .as_deref()
                    .unwrap_or("unknown cause")
            )
        },
    ));
    if gates.require_clean_drift {
        let clean = environment.with_drift == 0 && environment.not_in_git == 0;
        results.push(gate(
            Gate::RequireCleanDrift,
            clean,
            format!(
                "{} with drift, {} not in Git",
                environment.with_drift, environment.not_in_git
            ),
        ));
    }
    let incident = match &environment.active_incident_id {
        Some(id) => projections::models::incidents::incident(store, tenant, id).await?,
        None => None,
    };
    if gates.block_on_active_drift || policy.block_on_active_drift {
        results.push(gate(
            Gate::BlockOnActiveDrift,
            incident.is_none(),
            match &incident {
                Some(i) => format!("incident {} is {}", i.incident_id, i.status),
                None => "no active incident".to_string(),
            },
        ));
    }
    if gates.enforce_ttl || policy.enforce_ttl {
        let expired = incident
            .as_ref()
            .is_some_and(|i| i.sla_state == SlaState::Expired);
        results.push(gate(
            Gate::EnforceTtl,
            !expired,
            if expired {
                "the target's incident is past its TTL".to_string()
            } else {
                "no expired incident".to_string()
            },
        ));
    }
    let hotfixes: Vec<&str> = selected
        .iter()
        .filter(|c| c.target_hotfix)
        .map(|c| c.name.as_str())
        .collect();
    results.push(GateResult {
        gate: Gate::AllowOverwritingHotfixes,
        passed: gates.allow_overwriting_hotfixes || hotfixes.is_empty(),
        blocking: !gates.allow_overwriting_hotfixes,
        message: Some(if hotfixes.is_empty() {
            "no target workflow changed outside Git".to_string()
        } else {
            format!("changed in {target} outside Git: {}", hotfixes.join(", "))
        }),
    });
    Ok(results)
}

/// Deployments one promotion may have (all but the last cancelled).
const MAX_DEPLOYMENTS: u32 = 20;

/// Creates the deployment of an approved promotion, now or at `scheduled_for`.
///
/// Deployment ids are `{promotion}.{n}`: the first one whose stream is empty,
/// after every earlier one was cancelled. Two concurrent calls race for the same
/// id and the event store lets only one of them append, so a promotion never has
/// two live deployments.
pub async fn deploy(
    domain: &Domain,
    ctx: &CommandContext,
    promotion_id: &LocalId,
    scheduled_for: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(LocalId, Committed<Deployment>), CommandError> {
    authorize(ctx, &UseCase::DeployPromotion)?;
    let promotion_aggregate = aggregates::kernel::ids::aggregate_id(&ctx.tenant, &[promotion_id]);
    let promotion = domain
        .bus()
        .load::<Promotion>(&promotion_aggregate)
        .await?
        .into_state();
    if !promotion.created {
        return Err(DomainError::NotFound {
            kind: "promotion",
            id: promotion_id.to_string(),
        }
        .into());
    }
    // Deploying moves the promotion to running when the deployment starts.
    transitions::check(promotion.status, PromotionStatus::Running, false)?;
    let workflows: Vec<(String, String)> = promotion
        .workflows
        .iter()
        .map(|w| (w.canonical_id.clone(), w.name.clone()))
        .collect();
    for n in 1..=MAX_DEPLOYMENTS {
        let id = LocalId::parse(format!("{promotion_id}.{n}"))?;
        let aggregate = aggregates::kernel::ids::aggregate_id(&ctx.tenant, &[&id]);
        let existing = domain
            .bus()
            .load::<Deployment>(&aggregate)
            .await?
            .into_state();
        if existing.created {
            if existing.status == DeploymentStatus::Cancelled {
                continue;
            }
            return Err(DomainError::Conflict(format!(
                "promotion {promotion_id} already has deployment {id} ({})",
                existing.status
            ))
            .into());
        }
        let create = DeploymentCommand::Create {
            promotion_id: promotion_id.clone(),
            scheduled_for,
            workflows: workflows.clone(),
        };
        let committed = domain.deployment(ctx, &id, create).await?;
        return Ok((id, committed));
    }
    Err(DomainError::validation(
        "promotion_id",
        format!("{MAX_DEPLOYMENTS} deployments of this promotion were cancelled; create a new promotion"),
    )
    .into())
}
