//! Drift detection (DOMAIN.md §4): what production runs against what Git holds.
//!
//! For a non-dev environment with Git configured: read n8n and the Git folder now,
//! match each runtime workflow to its Git file by canonical id through the mapping
//! (by name only when the workflow has no mapping), and count `in_sync`,
//! `with_drift` and `not_in_git`. The check is recorded on the environment; drift
//! opens or updates the environment's incident as the drift policy says. When n8n or
//! Git cannot be read, the check is recorded as failed with its cause (the last
//! counts stay) and the error goes back to the caller.

use std::collections::{BTreeSet, HashMap};

use aggregates::content::normalize;
use aggregates::environment::{
    DriftCheckOutcome, DriftCounts, EnvironmentClass, EnvironmentCommand,
};
use aggregates::incident::AffectedWorkflow;
use aggregates::kernel::error::DomainError;
use aggregates::kernel::ids::LocalId;
use aggregates::mapping::MappingStatus;
use serde::Serialize;
use serde_json::Value;

use crate::command::bus::CommandContext;
use crate::command::bus::{authorize, UseCase};
use crate::connectors::UpstreamError;
use crate::workflows::sync::{self, SyncError, SIDECAR_SUFFIX};
use crate::AppContext;

/// How one workflow differs from Git.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiffSummary {
    pub nodes_added: Vec<String>,
    pub nodes_removed: Vec<String>,
    pub nodes_modified: Vec<String>,
    pub connections_changed: bool,
    pub settings_changed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftedWorkflow {
    /// The canonical id when the workflow is mapped, else its n8n id.
    pub workflow_id: String,
    pub n8n_workflow_id: String,
    pub name: String,
    /// Matched to Git by name (the workflow has no mapping).
    pub matched_by_name: bool,
    pub diff: DiffSummary,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DriftReport {
    pub in_sync: u32,
    pub with_drift: u32,
    pub not_in_git: u32,
    pub drifted: Vec<DriftedWorkflow>,
    /// Runtime workflows with no Git counterpart (n8n ids).
    pub not_in_git_workflows: Vec<String>,
    /// Workflows left out of the comparison, with the cause: n8n answers in a shape
    /// n8n never produces, Git files that are not workflow JSON.
    pub rejected: Vec<String>,
    /// The incident opened or updated (none when there is no drift or the policy
    /// opens none).
    pub incident_id: Option<String>,
    pub position: Option<i64>,
}

/// The nodes of a normalised workflow by name.
fn nodes(normalized: &Value) -> HashMap<String, &Value> {
    normalized
        .get("nodes")
        .and_then(Value::as_array)
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| Some((n.get("name")?.as_str()?.to_string(), n)))
                .collect()
        })
        .unwrap_or_default()
}

/// What changed from `git` to `runtime` (both raw workflows).
pub fn diff(runtime: &Value, git: &Value) -> DiffSummary {
    let (Ok(runtime), Ok(git)) = (normalize(runtime), normalize(git)) else {
        return DiffSummary::default();
    };
    let (ours, theirs) = (nodes(&runtime), nodes(&git));
    let names: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    let mut summary = DiffSummary::default();
    for name in names {
        match (ours.get(name), theirs.get(name)) {
            (Some(_), None) => summary.nodes_added.push(name.clone()),
            (None, Some(_)) => summary.nodes_removed.push(name.clone()),
            (Some(a), Some(b)) if a != b => summary.nodes_modified.push(name.clone()),
            _ => {}
        }
    }
    summary.connections_changed = runtime.get("connections") != git.get("connections");
    summary.settings_changed = runtime.get("settings") != git.get("settings");
    summary
}

/// A workflow file of the Git folder: its hash, and where it is in the snapshot (it
/// is parsed only when a drifted workflow is compared with it).
#[derive(Clone)]
struct GitWorkflow {
    hash: aggregates::content::ContentHash,
    file: usize,
}

/// Runs one drift check of `environment_id` and records it.
pub async fn check_drift(
    services: &AppContext,
    ctx: &CommandContext,
    environment_id: &LocalId,
) -> Result<DriftReport, SyncError> {
    authorize(ctx, &UseCase::CheckDrift)?;
    let environment = sync::environment(services, ctx, environment_id).await?;
    if environment.class == EnvironmentClass::Dev || environment.git.is_none() {
        return Err(DomainError::validation(
            "environment_id",
            "drift detection runs on non-dev environments with Git configured",
        )
        .into());
    }
    let read = async {
        let client = sync::n8n_client(services, ctx, &environment).await?;
        let (workflows, snapshot) = tokio::try_join!(
            async {
                Ok::<_, SyncError>(
                    client
                        .list_workflows_with(|workflow| {
                            let seen = sync::seen(&workflow);
                            (workflow, seen)
                        })
                        .await?,
                )
            },
            async {
                Ok::<_, SyncError>(sync::read_git_folder(services, ctx, &environment).await??)
            }
        )?;
        Ok::<_, SyncError>((workflows, snapshot))
    };
    // the environment's cells, read while n8n and Git are
    let cells = async {
        services
            .catch_up(&[projections::models::matrix::NAME])
            .await?;
        Ok::<_, SyncError>(
            projections::models::matrix::environment_cells(
                &services.store,
                ctx.tenant.as_str(),
                environment_id.as_str(),
            )
            .await?,
        )
    };
    let (read, cells) = tokio::join!(read, cells);
    let (workflows, snapshot) = match read {
        Ok(read) => read,
        Err(SyncError::Upstream(error)) => {
            record(services, ctx, environment_id, failed(&error)).await?;
            return Err(SyncError::Upstream(error));
        }
        Err(other) => return Err(other),
    };

    let mut report = DriftReport::default();
    // Git's workflows (path, content hash, JSON) by canonical id and by name
    let mut by_canonical: HashMap<String, GitWorkflow> = HashMap::new();
    let mut by_name: HashMap<String, GitWorkflow> = HashMap::new();
    let files: HashMap<&str, &[u8]> = snapshot
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.content.as_slice()))
        .collect();
    for (index, file) in snapshot.files.iter().enumerate() {
        let Some(stem) = file
            .path
            .strip_suffix(".json")
            .filter(|_| !file.path.ends_with(SIDECAR_SUFFIX))
        else {
            continue;
        };
        let hashed = match services.git_reads.hashed(file) {
            Ok(hashed) => hashed,
            Err(reason) => {
                report.rejected.push(reason.to_string());
                continue;
            }
        };
        let git = GitWorkflow {
            hash: hashed.hash.clone(),
            file: index,
        };
        let slug = stem.rsplit('/').next().unwrap_or(stem);
        let canonical = files
            .get(format!("{stem}{SIDECAR_SUFFIX}").as_str())
            .and_then(|bytes| serde_json::from_slice::<sync::Sidecar>(bytes).ok())
            .map_or_else(|| slug.to_string(), |s| s.canonical_id);
        if let Some(name) = &hashed.name {
            by_name.insert(name.clone(), git.clone());
        }
        by_canonical.insert(canonical, git);
    }
    let cells = cells?;
    let mapped: HashMap<String, projections::models::matrix::MatrixCell> = cells
        .into_iter()
        .filter(|c| !matches!(c.status, MappingStatus::Ignored | MappingStatus::Deleted))
        .map(|c| (c.n8n_workflow_id.clone(), c))
        .collect();

    for (workflow, seen) in &workflows {
        let seen = match seen {
            Ok(seen) => seen,
            Err(reason) => {
                report.rejected.push(reason.to_string());
                continue;
            }
        };
        let n8n_id = seen.id.to_string();
        let name = seen.observation.name.clone();
        let cell = mapped.get(&n8n_id);
        if cell.is_some_and(|c| c.status == MappingStatus::Ignored) {
            continue;
        }
        let canonical = cell.and_then(|c| c.canonical_id.clone());
        let (git, by_name_only) = match &canonical {
            Some(canonical) => (by_canonical.get(canonical), false),
            None => (by_name.get(&name), true),
        };
        let Some(git) = git else {
            report.not_in_git += 1;
            report.not_in_git_workflows.push(n8n_id);
            continue;
        };
        if seen.observation.content_hash == git.hash {
            report.in_sync += 1;
        } else {
            report.with_drift += 1;
            report.drifted.push(DriftedWorkflow {
                workflow_id: canonical.unwrap_or_else(|| n8n_id.clone()),
                n8n_workflow_id: n8n_id,
                name,
                matched_by_name: by_name_only,
                // it hashed, so it parses
                diff: diff(
                    workflow,
                    &serde_json::from_slice(&snapshot.files[git.file].content).unwrap_or_default(),
                ),
            });
        }
    }
    let counts = DriftCounts {
        in_sync: report.in_sync,
        with_drift: report.with_drift,
        not_in_git: report.not_in_git,
    };
    report.position = record(
        services,
        ctx,
        environment_id,
        DriftCheckOutcome::Checked { counts },
    )
    .await?;

    if report.with_drift > 0 {
        let policy = projections::models::policies::drift_policy(
            &services.store,
            ctx.tenant.as_str(),
            Some(environment_id.as_str()),
        )
        .await?
        .policy;
        let production = environment.class == EnvironmentClass::Production;
        if policy.opens_incident(production) {
            let affected: Vec<AffectedWorkflow> = report
                .drifted
                .iter()
                .map(|w| AffectedWorkflow {
                    workflow_id: w.workflow_id.clone(),
                    name: w.name.clone(),
                })
                .collect();
            // the snapshot: what drifted and how, kept outside the log so that
            // retention can purge it; the incident's event keeps its digest
            let snapshot = serde_json::json!({
                "environment_id": environment_id.as_str(),
                "taken_at": services.domain.bus().clock().now(),
                "in_sync": report.in_sync,
                "with_drift": report.with_drift,
                "not_in_git": report.not_in_git,
                "drifted": report.drifted,
                "not_in_git_workflows": report.not_in_git_workflows,
            })
            .to_string();
            let digest = services
                .payloads
                .put(ctx.tenant.as_str(), &snapshot)
                .await
                .map_err(projections::query::QueryError::from)?;
            let (incident, committed) = super::incident_slot::report_drift(
                &services.domain,
                ctx,
                environment_id,
                affected,
                Some(digest),
                policy.incident_policy(),
            )
            .await?;
            report.incident_id = Some(incident.to_string());
            report.position = report.position.max(committed.position);
        }
    }
    Ok(report)
}

fn failed(error: &UpstreamError) -> DriftCheckOutcome {
    DriftCheckOutcome::Failed {
        cause: error.to_string(),
    }
}

async fn record(
    services: &AppContext,
    ctx: &CommandContext,
    environment_id: &LocalId,
    outcome: DriftCheckOutcome,
) -> Result<Option<i64>, SyncError> {
    let committed = services
        .domain
        .environment(
            ctx,
            environment_id,
            EnvironmentCommand::RecordDriftCheck { outcome },
        )
        .await?;
    Ok(committed.position)
}
