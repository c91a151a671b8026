//! Running one deployment to its end (DOMAIN.md §2.4, §5; seed 002's phases).
//!
//! [`run`] is idempotent and resumable: it reads the deployment's events and takes
//! the next step from where they end. A first run goes through every phase; a run
//! after a crash (the runner replays `deployment.started`) or after a stale sweep
//! (`deployment.recovery_requested`) finishes what the events show was started:
//!
//! - nothing touched yet (no pre-snapshot): the phases run from the start;
//! - the pushes were under way (a pre-snapshot, not verified): every promoted
//!   workflow is restored from the pre-snapshot (a push in flight when the process
//!   died may or may not have reached n8n, so all of them are compared), and the
//!   deployment fails with what could not be restored;
//! - the pushes were verified: the remaining steps (post-snapshot, mappings, Git)
//!   run and the deployment completes;
//! - a rollback was started: it is finished.
//!
//! Every write to n8n is preceded by a re-read of the workflow, compared with the
//! pre-snapshot: a workflow changed in the target meanwhile (a hotfix) fails the
//! deployment instead of being overwritten.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use aggregates::content::content_hash;
use aggregates::credentials::CredentialMap;
use aggregates::deployment::{
    Deployment, DeploymentCommand, DeploymentStatus, RestoreAction, SnapshotKind,
    WorkflowDeployStatus,
};
use aggregates::environment::{Environment, EnvironmentCommand};
use aggregates::kernel::ids::{aggregate_id, LocalId, TenantId};
use aggregates::mapping::{MappingCommand, MappingStatus};
use aggregates::pipeline::{Pipeline, StageGates};
use aggregates::promotion::plan::{push_order, target_credential};
use aggregates::promotion::rewrite::{
    rewrite, Problem, RewriteTargets, Rewritten, TargetCredential,
};
use aggregates::promotion::{
    Gate, GateResult, Promotion, PromotionCommand, PromotionStatus, SnapshotSource, WorkflowOutcome,
};
use aggregates::Actor;
use serde_json::Value;

use super::snapshot::{self, Snapshot, SnapshotError, SnapshotWorkflow};
use crate::command::bus::{CommandContext, CommandError, Committed};
use crate::connectors::n8n::{update_body, N8nClient};
use crate::connectors::UpstreamError;
use crate::storage::payloads::Payloads;
use crate::workflows::sync::{self, Sidecar, SyncError, SIDECAR_SUFFIX};
use crate::AppContext;

/// The actor of the runner's commands.
pub const RUNNER: &str = "deployments";

/// Attempts of one of the runner's commands that meets a concurrent write.
const COMMAND_ATTEMPTS: usize = 5;

/// Why a run stopped before the deployment ended. The deployment stays running and
/// the run is retried (by the runner's reactor, with backoff); nothing about n8n is
/// here: what n8n answers is recorded in the deployment.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Query(#[from] projections::query::QueryError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Permanent(String),
}

impl From<aggregates::kernel::error::DomainError> for RunError {
    fn from(e: aggregates::kernel::error::DomainError) -> Self {
        RunError::Command(e.into())
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The deployment was not running (never started, or already ended).
    NotRunning(DeploymentStatus),
    Succeeded,
    /// Failed before anything was touched (a gate, the slot, the source).
    Failed(String),
    /// Failed and the target was restored exactly.
    RolledBack(String),
    /// Failed and the rollback left these inconsistencies.
    Inconsistent(Vec<String>),
}

/// Everything one run works with.
struct Run<'a> {
    app: &'a AppContext,
    ctx: CommandContext,
    deployment_id: LocalId,
    deployment: Deployment,
    promotion_id: LocalId,
    promotion: Promotion,
    target_id: LocalId,
    target: Environment,
    gates: StageGates,
    /// A write to n8n whose result could not be recorded (a recovery was asked for
    /// meanwhile): the rollback compares every promoted workflow, not only the
    /// recorded ones.
    unrecorded_write: bool,
}

/// Runs (or resumes) the deployment `deployment_id` of `tenant` to its end.
pub async fn run(
    app: &AppContext,
    tenant: &TenantId,
    deployment_id: &LocalId,
    correlation_id: String,
    causation_id: Option<String>,
) -> Result<RunOutcome, RunError> {
    let ctx = CommandContext {
        tenant: tenant.clone(),
        actor: Actor::system(RUNNER),
        correlation_id,
        causation_id,
    };
    let bus = app.domain.bus();
    let deployment = bus
        .load::<Deployment>(&aggregate_id(tenant, &[deployment_id]))
        .await?
        .into_state();
    if !deployment.created {
        return Err(RunError::Permanent(format!(
            "deployment {deployment_id} does not exist"
        )));
    }
    if deployment.status != DeploymentStatus::Running {
        return Ok(RunOutcome::NotRunning(deployment.status));
    }
    // A deployment whose promotion cannot be found (recorded by hand, not through
    // `deployPromotion`) touches nothing: it fails, with the reason.
    let promotion_id = LocalId::parse(deployment.promotion_id.as_str());
    let promotion = match &promotion_id {
        Ok(id) => Some(
            bus.load::<Promotion>(&aggregate_id(tenant, &[id]))
                .await?
                .into_state(),
        ),
        Err(_) => None,
    };
    let target_id = promotion
        .as_ref()
        .filter(|p| p.created)
        .and_then(|p| LocalId::parse(p.target_environment_id.as_str()).ok());
    let (Ok(promotion_id), Some(promotion), Some(target_id)) = (promotion_id, promotion, target_id)
    else {
        let reason = format!(
            "promotion {:?} of this deployment does not exist",
            deployment.promotion_id
        );
        bus.execute_retrying::<Deployment, _>(
            &ctx,
            &[deployment_id],
            DeploymentCommand::Finish {
                outcome: DeploymentStatus::Failed,
                reason: Some(reason.clone()),
            },
            &(),
            COMMAND_ATTEMPTS,
        )
        .await?;
        return Ok(RunOutcome::Failed(reason));
    };
    let target = bus
        .load::<Environment>(&aggregate_id(tenant, &[&target_id]))
        .await?
        .into_state();
    let pipeline_id = LocalId::parse(promotion.pipeline_id.as_str())?;
    let pipeline = bus
        .load::<Pipeline>(&aggregate_id(tenant, &[&pipeline_id]))
        .await?
        .into_state();
    // a restore runs through the gates of the stage that promotes into its target
    let stage = match &promotion.source_snapshot {
        Some(_) => pipeline.stage_into(&promotion.target_environment_id),
        None => pipeline.stage(
            &promotion.source_environment_id,
            &promotion.target_environment_id,
        ),
    };
    let gates = stage.map(|s| s.gates).unwrap_or_default();
    let mut run = Run {
        app,
        ctx,
        deployment_id: deployment_id.clone(),
        deployment,
        promotion_id,
        promotion,
        target_id,
        target,
        gates,
        unrecorded_write: false,
    };
    run.drive().await
}

/// A workflow's update-body hash: what a write would send, the comparison every
/// step makes (decision 35).
fn body_hash(workflow: &Value) -> Option<String> {
    content_hash(&update_body(workflow))
        .ok()
        .map(|h| h.as_str().to_string())
}

fn is_active(workflow: &Value) -> bool {
    workflow.get("active").and_then(Value::as_bool) == Some(true)
}

/// The rewriting targets of one deployment: credentials from the explicit mapping
/// and the target's known credentials; sub-workflows through the canonical ids.
struct Targets<'a> {
    explicit: &'a CredentialMap,
    known: &'a [aggregates::environment::KnownCredential],
    /// source n8n id → target n8n id (a promoted workflow not created yet: a
    /// placeholder that stands for the id it will get)
    workflows: &'a HashMap<String, String>,
}

impl RewriteTargets for Targets<'_> {
    fn credential(&self, credential_type: &str, name: &str) -> Option<TargetCredential> {
        target_credential(self.explicit, self.known, credential_type, name)
    }
    fn workflow(&self, source_id: &str) -> Option<String> {
        self.workflows.get(source_id).cloned()
    }
}

/// A restore's rewriting targets: the credential references the snapshot holds
/// are the target's own and stay as they are; sub-workflow references go through
/// the canonical ids to the target's ids now (a workflow re-created since has a
/// new id).
struct Kept<'a> {
    /// (type, name) → id, as the workflow being written holds them
    credentials: HashMap<(String, String), String>,
    workflows: &'a HashMap<String, String>,
}

impl Kept<'_> {
    fn new<'a>(workflow: &Value, workflows: &'a HashMap<String, String>) -> Kept<'a> {
        let mut credentials = HashMap::new();
        let nodes = workflow.get("nodes").and_then(Value::as_array);
        for node in nodes.into_iter().flatten() {
            let Some(held) = node.get("credentials").and_then(Value::as_object) else {
                continue;
            };
            for (credential_type, reference) in held {
                let field = |f: &str| reference.get(f).and_then(Value::as_str);
                if let (Some(id), Some(name)) = (field("id"), field("name")) {
                    credentials.insert((credential_type.clone(), name.to_string()), id.to_string());
                }
            }
        }
        Kept {
            credentials,
            workflows,
        }
    }
}

impl RewriteTargets for Kept<'_> {
    fn credential(&self, credential_type: &str, name: &str) -> Option<TargetCredential> {
        self.credentials
            .get(&(credential_type.to_string(), name.to_string()))
            .map(|id| TargetCredential {
                id: id.clone(),
                name: name.to_string(),
            })
    }
    fn workflow(&self, source_id: &str) -> Option<String> {
        self.workflows.get(source_id).cloned()
    }
}

/// What the source holds for each promoted workflow.
struct Source {
    /// canonical id → (source n8n id, workflow); a restore: (the id the snapshot
    /// recorded, the workflow as the snapshot holds it)
    workflows: BTreeMap<String, (String, Value)>,
    /// source n8n id → target n8n id, for every linked canonical workflow the
    /// target has (a restore: also every id the target has now, to itself)
    target_ids: HashMap<String, String>,
    /// The source n8n ids of promoted workflows the target does not have yet.
    promoted_new: Vec<String>,
    /// canonical id → the target's n8n id now, for every linked canonical workflow
    /// the target has
    in_target: HashMap<String, String>,
    /// A restore: what else the snapshot says.
    restore: Option<Restore>,
}

/// What a restore takes from its snapshot besides the workflows.
struct Restore {
    /// source (snapshot) n8n id → active in the snapshot
    active: HashMap<String, bool>,
    /// The promoted canonical workflows the snapshot records as absent: deleted
    /// from the target.
    remove: Vec<String>,
}

impl Run<'_> {
    fn bus(&self) -> &crate::command::bus::CommandBus {
        self.app.domain.bus()
    }

    async fn deployment_command(
        &mut self,
        command: DeploymentCommand,
    ) -> Result<Committed<Deployment>, CommandError> {
        let committed = self
            .bus()
            .execute_retrying::<Deployment, _>(
                &self.ctx,
                &[&self.deployment_id],
                command,
                &(),
                COMMAND_ATTEMPTS,
            )
            .await?;
        self.deployment = committed.state.clone();
        Ok(committed)
    }

    async fn promotion_command(&self, command: PromotionCommand) -> Result<(), CommandError> {
        self.bus()
            .execute_retrying::<Promotion, _>(
                &self.ctx,
                &[&self.promotion_id],
                command,
                &(),
                COMMAND_ATTEMPTS,
            )
            .await
            .map(drop)
    }

    async fn environment_command(&self, command: EnvironmentCommand) -> Result<(), CommandError> {
        self.bus()
            .execute_retrying::<Environment, _>(
                &self.ctx,
                &[&self.target_id],
                command,
                &(),
                COMMAND_ATTEMPTS,
            )
            .await
            .map(drop)
    }

    async fn drive(&mut self) -> Result<RunOutcome, RunError> {
        // The promotion runs while its deployment does (a start that stopped
        // between the two is completed here).
        if self.promotion.status == PromotionStatus::Approved {
            self.promotion_command(PromotionCommand::Start {
                deployment_id: self.deployment_id.clone(),
            })
            .await?;
        }
        if let Some(rollback) = self.deployment.rollback.clone() {
            return self.roll_back(rollback.reason, false).await;
        }
        // One running promotion per target: the start reserved the slot; a run
        // that finds another deployment holding it touches nothing.
        let reserve = self
            .environment_command(EnvironmentCommand::ReservePromotionSlot {
                promotion_id: self.promotion_id.clone(),
                deployment_id: self.deployment_id.clone(),
            })
            .await;
        if let Err(CommandError::Refused(refusal)) = reserve {
            return self.fail_untouched(refusal.to_string()).await;
        }
        reserve?;
        let interrupted =
            self.deployment.pre_snapshot.is_some() && self.deployment.verification.is_none();
        if let Some(reason) = self.deployment.recovery_requested.clone() {
            if self.deployment.pre_snapshot.is_none() {
                return self.fail_untouched(reason).await;
            }
            return self.roll_back(reason, true).await;
        }
        if interrupted {
            return self
                .roll_back(
                    "interrupted: the service stopped while pushing; the target is restored"
                        .to_string(),
                    true,
                )
                .await;
        }
        if self
            .deployment
            .verification
            .as_ref()
            .is_some_and(Vec::is_empty)
        {
            // pushed and verified before an interruption: finish the remaining steps
            let source = self.read_source().await;
            let Ok(source) = source else {
                // the after-steps need no source beyond the names
                return self.complete(None).await;
            };
            return self.complete(Some(&source)).await;
        }

        let client = match self.client().await {
            Ok(client) => client,
            Err(reason) => return self.fail_untouched(reason).await,
        };
        let source = match self.read_source().await {
            Ok(source) => source,
            Err(reason) => return self.fail_untouched(reason).await,
        };

        // Gates that need n8n.
        let credentials = self.credential_map().await?;
        let mut results = self.gates(&source, &credentials);
        if self.promotion.bypass_validation {
            // an admin asked to skip the gates (recorded): they inform, never block
            for result in &mut results {
                result.blocking = false;
            }
        }
        let passed = results.iter().all(|r| r.passed || !r.blocking);
        self.deployment_command(DeploymentCommand::RecordGates {
            results: results.clone(),
        })
        .await?;
        if !passed {
            let failed: Vec<String> = results
                .iter()
                .filter(|r| r.blocking && !r.passed)
                .map(|r| {
                    format!(
                        "{}: {}",
                        r.gate.as_str(),
                        r.message.as_deref().unwrap_or("failed")
                    )
                })
                .collect();
            return self
                .fail_untouched(format!("a blocking gate failed: {}", failed.join("; ")))
                .await;
        }

        // Pre-snapshot.
        let pre = match self.deployment.pre_snapshot.clone() {
            Some(taken) => self.load_snapshot(&taken.snapshot_id, &taken.digest).await,
            None => {
                self.take_snapshot(&client, &source, SnapshotKind::Pre)
                    .await
            }
        };
        let pre = match pre {
            Ok(pre) => pre,
            Err(reason) => return self.fail_untouched(reason).await,
        };

        // Push.
        if let Err(reason) = self.push(&client, &source, &credentials, &pre).await? {
            return self.roll_back(reason, false).await;
        }

        // Verify.
        let pushed: Vec<_> = self
            .deployment
            .workflows
            .iter()
            .filter(|w| w.status == WorkflowDeployStatus::Success && w.target_id.is_some())
            .cloned()
            .collect();
        let read = read_all(
            &client,
            pushed.iter().map(|w| w.target_id.clone()).collect(),
        )
        .await;
        let mut mismatches = vec![];
        for (w, read) in pushed.iter().zip(read) {
            match read {
                Ok(None) if w.deleted => {}
                Ok(Some(_)) if w.deleted => {
                    mismatches.push(format!("{}: deleted, but still there", w.name))
                }
                Ok(Some(now)) if body_hash(&now) == w.content_hash => {}
                Ok(Some(_)) => mismatches.push(format!(
                    "{}: the target does not hold what was written",
                    w.name
                )),
                Ok(None) => mismatches.push(format!("{}: no longer in the target", w.name)),
                Err(e) => mismatches.push(format!("{}: cannot be read back: {e}", w.name)),
            }
        }
        let verified = mismatches.is_empty();
        let recorded = self
            .deployment_command(DeploymentCommand::RecordVerification {
                mismatches: mismatches.clone(),
            })
            .await;
        if let Err(CommandError::Refused(refusal)) = &recorded {
            return self.roll_back(refusal.to_string(), false).await;
        }
        recorded?;
        if !verified {
            return self
                .roll_back(
                    format!("verification failed: {}", mismatches.join("; ")),
                    false,
                )
                .await;
        }
        self.complete(Some(&source)).await
    }

    /// The target's n8n client, or why there is none.
    async fn client(&self) -> Result<N8nClient, String> {
        sync::n8n_client(self.app, &self.ctx, &self.target)
            .await
            .map_err(|e| format!("the target's n8n cannot be reached: {e}"))
    }

    async fn credential_map(&self) -> Result<CredentialMap, RunError> {
        let source = LocalId::parse(self.promotion.source_environment_id.as_str())?;
        Ok(self
            .bus()
            .load::<CredentialMap>(&aggregate_id(&self.ctx.tenant, &[&source, &self.target_id]))
            .await?
            .into_state())
    }

    /// Reads every promoted workflow from the source n8n (a restore: from its
    /// snapshot, checked against the digest).
    async fn read_source(&self) -> Result<Source, String> {
        if let Some(source) = &self.promotion.source_snapshot {
            return self.read_snapshot(source).await;
        }
        let tenant = self.ctx.tenant.as_str();
        let store = &self.app.store;
        let source_id = LocalId::parse(self.promotion.source_environment_id.as_str())
            .map_err(|e| e.to_string())?;
        let source_env = self
            .bus()
            .load::<Environment>(&aggregate_id(&self.ctx.tenant, &[&source_id]))
            .await
            .map_err(|e| e.to_string())?
            .into_state();
        let linked = |cells: Vec<projections::models::matrix::MatrixCell>| {
            cells
                .into_iter()
                .filter(|c| c.status == MappingStatus::Linked)
                .filter_map(|c| c.canonical_id.clone().map(|id| (id, c.n8n_workflow_id)))
                .collect::<HashMap<String, String>>()
        };
        let cells = |env: String| async move {
            projections::models::matrix::environment_cells(store, tenant, &env)
                .await
                .map_err(|e| e.to_string())
        };
        let source_cells = linked(cells(self.promotion.source_environment_id.clone()).await?);
        let target_cells = linked(cells(self.promotion.target_environment_id.clone()).await?);
        let client = sync::n8n_client(self.app, &self.ctx, &source_env)
            .await
            .map_err(|e| format!("the source's n8n cannot be reached: {e}"))?;
        let mut ids = Vec::with_capacity(self.promotion.workflows.len());
        for w in &self.promotion.workflows {
            let Some(source_n8n) = source_cells.get(&w.canonical_id) else {
                return Err(format!(
                    "{} is no longer linked in {}",
                    w.name, self.promotion.source_environment_id
                ));
            };
            ids.push(Some(source_n8n.clone()));
        }
        let read = read_all(&client, ids.clone()).await;
        let mut workflows = BTreeMap::new();
        for ((w, id), workflow) in self.promotion.workflows.iter().zip(ids).zip(read) {
            let workflow = workflow
                .map_err(|e| format!("{} cannot be read from the source: {e}", w.name))?
                .ok_or_else(|| format!("{} is no longer in the source's n8n", w.name))?;
            workflows.insert(w.canonical_id.clone(), (id.unwrap_or_default(), workflow));
        }
        let mut target_ids = HashMap::new();
        for (canonical, source_n8n) in &source_cells {
            if let Some(target_n8n) = target_cells.get(canonical) {
                target_ids.insert(source_n8n.clone(), target_n8n.clone());
            }
        }
        let promoted_new = workflows
            .values()
            .map(|(id, _)| id.clone())
            .filter(|id| !target_ids.contains_key(id))
            .collect();
        Ok(Source {
            workflows,
            target_ids,
            promoted_new,
            in_target: target_cells,
            restore: None,
        })
    }

    /// The target's cells now: every one (n8n id), and the linked ones by canonical id.
    async fn target_cells(&self) -> Result<(Vec<String>, HashMap<String, String>), String> {
        let cells = projections::models::matrix::environment_cells(
            &self.app.store,
            self.ctx.tenant.as_str(),
            &self.promotion.target_environment_id,
        )
        .await
        .map_err(|e| e.to_string())?;
        let all = cells.iter().map(|c| c.n8n_workflow_id.clone()).collect();
        let linked = cells
            .into_iter()
            .filter(|c| c.status == MappingStatus::Linked)
            .filter_map(|c| c.canonical_id.clone().map(|id| (id, c.n8n_workflow_id)))
            .collect();
        Ok((all, linked))
    }

    /// A restore's source: the snapshot's workflows, the ids they referenced mapped
    /// to the target's ids now, and what the snapshot records as absent.
    async fn read_snapshot(&self, source: &SnapshotSource) -> Result<Source, String> {
        let snapshot = self
            .load_snapshot(&source.snapshot_id, &source.digest)
            .await?;
        if snapshot.environment_id != self.promotion.target_environment_id {
            return Err(format!(
                "snapshot {} is of environment {}, not {}",
                snapshot.snapshot_id, snapshot.environment_id, self.promotion.target_environment_id
            ));
        }
        let (all, in_target) = self.target_cells().await?;
        let mut target_ids: HashMap<String, String> =
            all.into_iter().map(|id| (id.clone(), id)).collect();
        let (mut workflows, mut active, mut remove) = (BTreeMap::new(), HashMap::new(), vec![]);
        for w in &self.promotion.workflows {
            let held = snapshot.workflow(&w.canonical_id);
            match held.and_then(|h| h.workflow.clone().zip(h.n8n_id.clone())) {
                Some((workflow, id)) => {
                    match in_target.get(&w.canonical_id) {
                        Some(now) => target_ids.insert(id.clone(), now.clone()),
                        None => target_ids.remove(&id),
                    };
                    active.insert(id.clone(), held.is_some_and(|h| h.active));
                    workflows.insert(w.canonical_id.clone(), (id, workflow));
                }
                None => remove.push(w.canonical_id.clone()),
            }
        }
        let promoted_new = workflows
            .iter()
            .filter(|(canonical, _)| !in_target.contains_key(*canonical))
            .map(|(_, (id, _))| id.clone())
            .collect();
        Ok(Source {
            workflows,
            target_ids,
            promoted_new,
            in_target,
            restore: Some(Restore { active, remove }),
        })
    }

    /// `workflow` rewritten for the target: a promotion maps credentials and
    /// sub-workflows; a restore keeps its credentials and maps sub-workflows only.
    fn rewrite_for_target(
        &self,
        source: &Source,
        workflow: &Value,
        credentials: &CredentialMap,
        ids: &HashMap<String, String>,
    ) -> Result<Rewritten, Vec<Problem>> {
        if source.restore.is_some() {
            return rewrite(workflow, &Kept::new(workflow, ids), true);
        }
        let targets = Targets {
            explicit: credentials,
            known: &self.target.known_credentials,
            workflows: ids,
        };
        rewrite(workflow, &targets, self.gates.allow_placeholder_credentials)
    }

    /// `source_unchanged`, `credentials_exist`, `allow_placeholder_credentials` and
    /// `sub_workflows_resolved`, from rewriting every workflow for the target.
    fn gates(&self, source: &Source, credentials: &CredentialMap) -> Vec<GateResult> {
        let mut changed = vec![];
        for w in &self.promotion.workflows {
            let Some((_, workflow)) = source.workflows.get(&w.canonical_id) else {
                continue;
            };
            let now = content_hash(workflow).ok().map(|h| h.as_str().to_string());
            if w.source_content_hash.is_some() && now != w.source_content_hash {
                changed.push(w.name.clone());
            }
        }
        // a promoted workflow the target does not have yet will be created first
        let mut ids = source.target_ids.clone();
        for id in &source.promoted_new {
            ids.insert(id.clone(), format!("(new:{id})"));
        }
        let allow = self.gates.allow_placeholder_credentials;
        let (mut unmapped, mut unresolved, mut placeholders) = (vec![], vec![], vec![]);
        for w in &self.promotion.workflows {
            let Some((_, workflow)) = source.workflows.get(&w.canonical_id) else {
                continue;
            };
            match self.rewrite_for_target(source, workflow, credentials, &ids) {
                Ok(done) => placeholders.extend(
                    done.placeholders
                        .iter()
                        .map(|p| format!("{}: {} ({})", w.name, p.name, p.credential_type)),
                ),
                Err(problems) => {
                    for problem in problems {
                        let line = format!("{}: {problem}", w.name);
                        match problem {
                            Problem::UnmappedCredential { .. } => unmapped.push(line),
                            _ => unresolved.push(line),
                        }
                    }
                }
            }
        }
        let result = |gate, passed: bool, ok: &str, lines: &[String]| GateResult {
            gate,
            passed,
            blocking: true,
            message: Some(if lines.is_empty() {
                ok.to_string()
            } else {
                lines.join("; ")
            }),
        };
        let mut results = vec![
            result(
                Gate::SourceUnchanged,
                changed.is_empty(),
                if source.restore.is_some() {
                    "the snapshot verifies against its digest"
                } else {
                    "the source holds what the promotion recorded"
                },
                &changed
                    .iter()
                    .map(|n| format!("{n} changed in the source since the promotion was created"))
                    .collect::<Vec<_>>(),
            ),
            result(
                Gate::CredentialsExist,
                unmapped.is_empty(),
                if source.restore.is_some() {
                    "the snapshot's credential references are the target's own, kept as they are"
                } else {
                    "every credential has a target credential"
                },
                &unmapped,
            ),
            result(
                Gate::SubWorkflowsResolved,
                unresolved.is_empty(),
                "every sub-workflow reference resolves in the target",
                &unresolved,
            ),
        ];
        if allow && source.restore.is_none() {
            results.push(GateResult {
                gate: Gate::AllowPlaceholderCredentials,
                passed: true,
                blocking: false,
                message: Some(if placeholders.is_empty() {
                    "no credential written by name only".to_string()
                } else {
                    format!("written by name only: {}", placeholders.join("; "))
                }),
            });
        }
        results
    }

    fn snapshot_id(&self, kind: SnapshotKind) -> String {
        format!("{}.{}", self.deployment_id, kind.as_str())
    }

    /// Reads every promoted workflow from the target as it is now and stores the
    /// snapshot; records it in the deployment.
    async fn take_snapshot(
        &mut self,
        client: &N8nClient,
        source: &Source,
        kind: SnapshotKind,
    ) -> Result<Snapshot, String> {
        let ids: Vec<Option<String>> = self
            .promotion
            .workflows
            .iter()
            .map(|w| match kind {
                // after the pushes: where each one went
                SnapshotKind::Post => self
                    .deployment
                    .workflows
                    .iter()
                    .find(|d| d.workflow_id == w.canonical_id)
                    .and_then(|d| d.target_id.clone()),
                SnapshotKind::Pre => source.in_target.get(&w.canonical_id).cloned(),
            })
            .collect();
        let read = read_all(client, ids.clone()).await;
        let mut workflows = Vec::with_capacity(self.promotion.workflows.len());
        for ((w, n8n_id), workflow) in self.promotion.workflows.iter().zip(ids).zip(read) {
            // a workflow the mapping names that n8n no longer has: absent
            let workflow =
                workflow.map_err(|e| format!("{} cannot be read from the target: {e}", w.name))?;
            workflows.push(SnapshotWorkflow {
                canonical_id: w.canonical_id.clone(),
                name: w.name.clone(),
                n8n_id: workflow.as_ref().and(n8n_id),
                active: workflow.as_ref().is_some_and(is_active),
                content_hash: workflow.as_ref().and_then(body_hash),
                workflow,
            });
        }
        let snapshot = Snapshot {
            snapshot_id: self.snapshot_id(kind),
            environment_id: self.target_id.to_string(),
            deployment_id: self.deployment_id.to_string(),
            kind,
            taken_at: self.bus().clock().now(),
            workflows,
        };
        self.record_snapshot(snapshot).await
    }

    async fn record_snapshot(&mut self, snapshot: Snapshot) -> Result<Snapshot, String> {
        let payloads = Payloads::workflow_snapshots(self.app.store.clone());
        let digest = snapshot::store(&payloads, self.ctx.tenant.as_str(), &snapshot)
            .await
            .map_err(|e| format!("the snapshot cannot be stored: {e}"))?;
        self.deployment_command(DeploymentCommand::RecordSnapshot {
            kind: snapshot.kind,
            environment_id: self.target_id.to_string(),
            promotion_id: self.promotion_id.to_string(),
            snapshot_id: snapshot.snapshot_id.clone(),
            digest,
            workflows: snapshot.workflows.len() as u32,
        })
        .await
        .map_err(|e| format!("the snapshot cannot be recorded: {e}"))?;
        Ok(snapshot)
    }

    async fn load_snapshot(&self, snapshot_id: &str, digest: &str) -> Result<Snapshot, String> {
        let payloads = Payloads::workflow_snapshots(self.app.store.clone());
        snapshot::load(&payloads, self.ctx.tenant.as_str(), snapshot_id, digest)
            .await
            .map_err(|e: SnapshotError| e.to_string())
    }

    /// Pushes every promoted workflow, referenced ones first. `Ok(Err(reason))`:
    /// one failed (recorded), and the target must be rolled back.
    async fn push(
        &mut self,
        client: &N8nClient,
        source: &Source,
        credentials: &CredentialMap,
        pre: &Snapshot,
    ) -> Result<Result<(), String>, RunError> {
        let by_source_id: BTreeMap<String, Value> = source
            .workflows
            .values()
            .map(|(id, w)| (id.clone(), w.clone()))
            .collect();
        let canonical_of: HashMap<String, String> = source
            .workflows
            .iter()
            .map(|(canonical, (id, _))| (id.clone(), canonical.clone()))
            .collect();
        let mut ids = source.target_ids.clone();
        // where earlier runs of this deployment already went
        for w in &self.deployment.workflows {
            if let (Some(target), Some((source_id, _))) =
                (&w.target_id, source.workflows.get(&w.workflow_id))
            {
                ids.insert(source_id.clone(), target.clone());
            }
        }
        let order = push_order(&by_source_id).order;
        // new workflows created before the ids they reference existed (themselves,
        // or a cycle): written again once every promoted workflow has its id
        let mut deferred: Vec<Deferred> = vec![];
        let unrecorded_before = self.unrecorded_write;
        // unchanged workflows, recorded together before the next write
        let mut unchanged: Vec<(String, String, Option<String>)> = vec![];
        for source_id in order {
            let canonical = &canonical_of[&source_id];
            let Some(entry) = self
                .deployment
                .workflows
                .iter()
                .find(|w| &w.workflow_id == canonical)
                .cloned()
            else {
                continue;
            };
            if entry.status != WorkflowDeployStatus::Pending {
                continue;
            }
            let before = pre.workflow(canonical);
            // a restore brings back the snapshot's activation; a promotion keeps the
            // target's
            let wanted_active = source
                .restore
                .as_ref()
                .and_then(|r| r.active.get(&source_id).copied());
            let existing = before.and_then(|b| b.n8n_id.clone().map(|id| (id, b)));
            let rewritten =
                match self.rewrite_for_target(source, &by_source_id[&source_id], credentials, &ids)
                {
                    Ok(done) => done.workflow,
                    Err(problems)
                        if existing.is_none()
                            && awaits_creation(&problems, &source.promoted_new) =>
                    {
                        if let Err(reason) = self.record_unchanged(&mut unchanged).await? {
                            return Ok(Err(reason));
                        }
                        let activate = wanted_active.unwrap_or(self.gates.activate_new_workflows);
                        match self
                            .create_deferred(
                                client,
                                source,
                                &by_source_id[&source_id],
                                credentials,
                                &ids,
                                &problems,
                            )
                            .await
                        {
                            Ok((id, attempts)) => {
                                ids.insert(source_id.clone(), id.clone());
                                self.unrecorded_write = true;
                                deferred.push(Deferred {
                                    source_id: source_id.clone(),
                                    canonical: canonical.clone(),
                                    target_id: id,
                                    activate,
                                    attempts,
                                });
                                continue;
                            }
                            Err((error, attempts)) => {
                                let reason = self
                                    .fail_push(canonical, &entry.name, error, attempts, None)
                                    .await?;
                                return Ok(Err(reason));
                            }
                        }
                    }
                    Err(problems) => {
                        let reason = problems
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ");
                        let _recorded = self.record_unchanged(&mut unchanged).await?;
                        let _failed = self
                            .record_push(
                                canonical,
                                WorkflowDeployStatus::Failed,
                                Some(reason.clone()),
                                0,
                                None,
                            )
                            .await?;
                        return Ok(Err(format!("{} cannot be rewritten: {reason}", entry.name)));
                    }
                };
            let wanted = body_hash(&rewritten);
            if let Some((id, b)) = &existing {
                if b.content_hash.is_some()
                    && b.content_hash == wanted
                    && wanted_active.is_none_or(|active| active == b.active)
                {
                    ids.insert(source_id.clone(), id.clone());
                    unchanged.push((canonical.clone(), id.clone(), wanted.clone()));
                    continue;
                }
            }
            if let Err(reason) = self.record_unchanged(&mut unchanged).await? {
                return Ok(Err(reason));
            }
            let attempts = Arc::new(AtomicU32::new(0));
            let counting = client.counting(attempts.clone());
            let outcome = match &existing {
                Some((id, b)) => {
                    let active = wanted_active.unwrap_or(b.active);
                    self.update(&counting, id, b, &rewritten, active).await
                }
                None => {
                    let activate = wanted_active.unwrap_or(self.gates.activate_new_workflows);
                    self.create(&counting, &rewritten, activate).await
                }
            };
            let attempts = attempts.load(Ordering::Relaxed);
            match outcome {
                Ok((id, stored_hash)) => {
                    ids.insert(source_id.clone(), id.clone());
                    let created = existing.is_none();
                    match self
                        .record_push(
                            canonical,
                            WorkflowDeployStatus::Success,
                            None,
                            attempts,
                            Some((id, created, stored_hash)),
                        )
                        .await?
                    {
                        Ok(()) => {}
                        Err(reason) => return Ok(Err(reason)),
                    }
                }
                Err((error, written)) => {
                    // a workflow written before the failure is restored by the rollback
                    let result = written.map(|id| (id, existing.is_none(), None));
                    let reason = self
                        .fail_push(canonical, &entry.name, error, attempts, result)
                        .await?;
                    return Ok(Err(reason));
                }
            }
        }
        if let Err(reason) = self.record_unchanged(&mut unchanged).await? {
            return Ok(Err(reason));
        }
        for d in deferred {
            if let Err(reason) = self
                .complete_deferred(
                    client,
                    source,
                    &by_source_id[&d.source_id],
                    credentials,
                    &ids,
                    d,
                )
                .await?
            {
                return Ok(Err(reason));
            }
        }
        self.unrecorded_write = unrecorded_before;
        let remove = source.restore.as_ref().map(|r| r.remove.as_slice());
        for canonical in remove.unwrap_or_default() {
            if let Err(reason) = self.remove(client, canonical, pre).await? {
                return Ok(Err(reason));
            }
        }
        Ok(Ok(()))
    }

    /// Creates a new workflow whose references to promoted workflows without an id
    /// yet (itself, or a cycle) are left as they are for now: inactive, written
    /// again by [`Run::complete_deferred`]. Its id and the requests made, or the
    /// error (nothing created).
    async fn create_deferred(
        &self,
        client: &N8nClient,
        source: &Source,
        workflow: &Value,
        credentials: &CredentialMap,
        ids: &HashMap<String, String>,
        problems: &[Problem],
    ) -> Result<(String, u32), (String, u32)> {
        let mut interim = ids.clone();
        for problem in problems {
            if let Problem::UnknownSubWorkflow { workflow_id, .. } = problem {
                interim.insert(workflow_id.clone(), workflow_id.clone());
            }
        }
        let rewritten = self
            .rewrite_for_target(source, workflow, credentials, &interim)
            .map_err(|problems| {
                let reasons: Vec<String> = problems.iter().map(ToString::to_string).collect();
                (reasons.join("; "), 0)
            })?;
        let attempts = Arc::new(AtomicU32::new(0));
        let counting = client.counting(attempts.clone());
        let created = self.create(&counting, &rewritten.workflow, false).await;
        let attempts = attempts.load(Ordering::Relaxed);
        match created {
            Ok((id, _)) => Ok((id, attempts)),
            Err((error, _)) => Err((error, attempts)),
        }
    }

    /// Writes a deferred workflow again with every reference rewritten, activates it
    /// when it should be, and records it. `Ok(Err(reason))`: it failed (recorded
    /// with its id, so the rollback deletes it).
    async fn complete_deferred(
        &mut self,
        client: &N8nClient,
        source: &Source,
        workflow: &Value,
        credentials: &CredentialMap,
        ids: &HashMap<String, String>,
        d: Deferred,
    ) -> Result<Result<(), String>, RunError> {
        let attempts = Arc::new(AtomicU32::new(0));
        let counting = client.counting(attempts.clone());
        let written = match self.rewrite_for_target(source, workflow, credentials, ids) {
            Ok(done) => match counting.update_workflow(&d.target_id, &done.workflow).await {
                Ok(stored) if d.activate => match counting.activate(&d.target_id).await {
                    Ok(_) => Ok(body_hash(&stored)),
                    Err(e) => Err(format!("created, but not activated: {e}")),
                },
                Ok(stored) => Ok(body_hash(&stored)),
                Err(e) => Err(format!("created, but its references not written: {e}")),
            },
            Err(problems) => Err(problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")),
        };
        let attempts = d.attempts + attempts.load(Ordering::Relaxed);
        let (status, error, hash) = match written {
            Ok(hash) => (WorkflowDeployStatus::Success, None, hash),
            Err(error) => (WorkflowDeployStatus::Failed, Some(error), None),
        };
        let result = Some((d.target_id.clone(), true, hash));
        let recorded = self
            .record_push(&d.canonical, status, error, attempts, result)
            .await?;
        Ok(recorded.map_err(|reason| {
            let name = self
                .deployment
                .workflows
                .iter()
                .find(|w| w.workflow_id == d.canonical)
                .map_or(d.canonical.clone(), |w| w.name.clone());
            format!("{name} failed: {reason}")
        }))
    }

    /// A restore deletes a workflow its snapshot records as absent (after re-reading
    /// it: one changed since the pre-snapshot is not deleted).
    async fn remove(
        &mut self,
        client: &N8nClient,
        canonical: &str,
        pre: &Snapshot,
    ) -> Result<Result<(), String>, RunError> {
        let Some(entry) = self
            .deployment
            .workflows
            .iter()
            .find(|w| w.workflow_id == canonical)
            .cloned()
        else {
            return Ok(Ok(()));
        };
        if entry.status != WorkflowDeployStatus::Pending {
            return Ok(Ok(()));
        }
        let held = pre
            .workflow(canonical)
            .and_then(|b| b.n8n_id.clone().map(|id| (id, b)));
        let Some((id, before)) = held else {
            // the target does not have it either
            return self
                .record_push(canonical, WorkflowDeployStatus::Unchanged, None, 0, None)
                .await;
        };
        let attempts = Arc::new(AtomicU32::new(0));
        let counting = client.counting(attempts.clone());
        let deleted = match counting.get_workflow(&id).await {
            Err(UpstreamError::NotFound { .. }) => Ok(false),
            Err(e) => Err(format!("cannot be re-read before deleting: {e}")),
            Ok(now)
                if body_hash(&now) != before.content_hash || is_active(&now) != before.active =>
            {
                Err("changed in the target since the pre-snapshot (a hotfix?); not deleted".into())
            }
            Ok(_) => match counting.delete_workflow(&id).await {
                Ok(()) | Err(UpstreamError::NotFound { .. }) => Ok(true),
                Err(e) => Err(e.to_string()),
            },
        };
        let attempts = attempts.load(Ordering::Relaxed);
        match deleted {
            Ok(false) => {
                self.record_push(canonical, WorkflowDeployStatus::Unchanged, None, 0, None)
                    .await
            }
            Ok(true) => {
                let recorded = self
                    .deployment_command(DeploymentCommand::RecordWorkflowResult {
                        workflow_id: canonical.to_string(),
                        status: WorkflowDeployStatus::Success,
                        error: None,
                        attempts,
                        target_id: Some(id),
                        created: false,
                        content_hash: None,
                        deleted: true,
                    })
                    .await;
                match recorded {
                    Ok(_) => Ok(Ok(())),
                    Err(CommandError::Refused(refusal)) => {
                        self.unrecorded_write = true;
                        Ok(Err(refusal.to_string()))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(error) => {
                let reason = self
                    .fail_push(canonical, &entry.name, error, attempts, None)
                    .await?;
                Ok(Err(reason))
            }
        }
    }

    /// Records the unchanged workflows found so far in one append, and empties
    /// `batch`. `Ok(Err(reason))`: the deployment no longer takes pushes.
    async fn record_unchanged(
        &mut self,
        batch: &mut Vec<(String, String, Option<String>)>,
    ) -> Result<Result<(), String>, RunError> {
        if batch.is_empty() {
            return Ok(Ok(()));
        }
        let workflows = std::mem::take(batch);
        match self
            .deployment_command(DeploymentCommand::RecordUnchanged { workflows })
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(CommandError::Refused(refusal)) => Ok(Err(refusal.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Records a workflow's failed push; returns why the deployment rolls back.
    async fn fail_push(
        &mut self,
        canonical: &str,
        name: &str,
        error: String,
        attempts: u32,
        result: Option<(String, bool, Option<String>)>,
    ) -> Result<String, RunError> {
        let _failed = self
            .record_push(
                canonical,
                WorkflowDeployStatus::Failed,
                Some(error.clone()),
                attempts,
                result,
            )
            .await?;
        Ok(format!("{name} failed: {error}"))
    }

    /// Records one workflow's push result. `Ok(Err(reason))`: the deployment no
    /// longer takes pushes (a recovery was requested), roll back.
    async fn record_push(
        &mut self,
        canonical: &str,
        status: WorkflowDeployStatus,
        error: Option<String>,
        attempts: u32,
        result: Option<(String, bool, Option<String>)>,
    ) -> Result<Result<(), String>, RunError> {
        let (target_id, created, content_hash) = match result {
            Some((id, created, hash)) => (Some(id), created, hash),
            None => (None, false, None),
        };
        let failed = status == WorkflowDeployStatus::Failed;
        let recorded = self
            .deployment_command(DeploymentCommand::RecordWorkflowResult {
                workflow_id: canonical.to_string(),
                status,
                error: error.clone(),
                attempts,
                target_id,
                created,
                content_hash,
                deleted: false,
            })
            .await;
        match recorded {
            Ok(_) if failed => Ok(Err(error.unwrap_or_else(|| "push failed".into()))),
            Ok(_) => Ok(Ok(())),
            Err(CommandError::Refused(refusal)) => {
                // what was written cannot be recorded any more: the rollback must
                // look at everything
                self.unrecorded_write |= status == WorkflowDeployStatus::Success;
                Ok(Err(refusal.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Updates `id` after checking that it still is what the pre-snapshot holds,
    /// and leaves it `active` or not (a promotion: as it was; a restore: as the
    /// snapshot holds it). The new id and hash, or the error (and no created id).
    async fn update(
        &self,
        client: &N8nClient,
        id: &str,
        before: &SnapshotWorkflow,
        workflow: &Value,
        active: bool,
    ) -> Result<(String, Option<String>), (String, Option<String>)> {
        let fail = |e: String| (e, None);
        let now = match client.get_workflow(id).await {
            Ok(now) => now,
            Err(UpstreamError::NotFound { .. }) => {
                return Err(fail(
                    "deleted in the target during the promotion; not re-created".into(),
                ))
            }
            Err(e) => return Err(fail(format!("cannot be re-read before writing: {e}"))),
        };
        if body_hash(&now) != before.content_hash || is_active(&now) != before.active {
            return Err(fail(
                "changed in the target since the pre-snapshot (a hotfix?); not overwritten".into(),
            ));
        }
        let stored = client
            .update_workflow(id, workflow)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if active != is_active(&stored) {
            let switched = if active {
                client.activate(id).await
            } else {
                client.deactivate(id).await
            };
            switched.map_err(|e| {
                // written: the rollback restores it
                (
                    format!("updated, but its activation not restored: {e}"),
                    Some(id.to_string()),
                )
            })?;
        }
        Ok((id.to_string(), body_hash(&stored)))
    }

    /// Creates the workflow (inactive, as n8n does), activated when the stage says
    /// so. On an activation failure the created id is returned with the error, so
    /// the rollback deletes it.
    async fn create(
        &self,
        client: &N8nClient,
        workflow: &Value,
        activate: bool,
    ) -> Result<(String, Option<String>), (String, Option<String>)> {
        let stored = client
            .create_workflow(workflow)
            .await
            .map_err(|e| (e.to_string(), None))?;
        let Some(id) = sync::listed_id(&stored) else {
            return Err(("n8n created the workflow without an id".into(), None));
        };
        if activate {
            if let Err(e) = client.activate(&id).await {
                return Err((format!("created, but not activated: {e}"), Some(id)));
            }
        }
        Ok((id, body_hash(&stored)))
    }

    /// Ends a deployment that touched nothing: failed, the promotion failed, the
    /// slot released.
    async fn fail_untouched(&mut self, reason: String) -> Result<RunOutcome, RunError> {
        self.deployment_command(DeploymentCommand::Finish {
            outcome: DeploymentStatus::Failed,
            reason: Some(reason.clone()),
        })
        .await?;
        self.end_promotion(PromotionCommand::Fail {
            reason: Some(reason.clone()),
            inconsistencies: vec![],
        })
        .await?;
        self.release().await?;
        Ok(RunOutcome::Failed(reason))
    }

    async fn end_promotion(&self, command: PromotionCommand) -> Result<(), RunError> {
        let promotion = self
            .bus()
            .load::<Promotion>(&aggregate_id(&self.ctx.tenant, &[&self.promotion_id]))
            .await?
            .into_state();
        if promotion.status == PromotionStatus::Running {
            self.promotion_command(command).await?;
        }
        Ok(())
    }

    /// Frees the target's promotion slot (a target that does not exist has none).
    async fn release(&self) -> Result<(), RunError> {
        let released = self
            .environment_command(EnvironmentCommand::ReleasePromotionSlot {
                deployment_id: self.deployment_id.clone(),
            })
            .await;
        match released {
            Ok(()) | Err(CommandError::Refused(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn outcomes(&self) -> Vec<WorkflowOutcome> {
        self.deployment
            .workflows
            .iter()
            .map(|w| WorkflowOutcome {
                canonical_id: w.workflow_id.clone(),
                outcome: match w.restored {
                    Some(action) => format!("{}, restored: {}", w.status, action),
                    None => w.status.as_str().to_string(),
                },
                detail: w.error.clone().or(w.restore_error.clone()),
            })
            .collect()
    }

    /// After verified pushes: the post-snapshot, the target's mappings, the Git
    /// commit, then success.
    async fn complete(&mut self, source: Option<&Source>) -> Result<RunOutcome, RunError> {
        let client = self.client().await.ok();
        let mut post = None;
        if let (Some(client), Some(source)) = (&client, source) {
            match self.deployment.post_snapshot.clone() {
                Some(taken) => {
                    post = self
                        .load_snapshot(&taken.snapshot_id, &taken.digest)
                        .await
                        .ok()
                }
                None => match self.take_snapshot(client, source, SnapshotKind::Post).await {
                    Ok(snapshot) => post = Some(snapshot),
                    Err(error) => {
                        tracing::warn!(deployment = %self.deployment_id, %error,
                            "post-snapshot not taken");
                    }
                },
            }
        }
        if let Some(post) = &post {
            self.observe(post).await;
            if self.deployment.git.is_none() {
                let git = self.commit_to_git(post).await;
                self.deployment_command(git).await?;
            }
        }
        self.deployment_command(DeploymentCommand::Finish {
            outcome: DeploymentStatus::Success,
            reason: None,
        })
        .await?;
        let outcomes = self.outcomes();
        self.end_promotion(PromotionCommand::Complete { outcomes })
            .await?;
        self.release().await?;
        Ok(RunOutcome::Succeeded)
    }

    /// The target's mappings learn what they now hold, linked to their canonical
    /// workflows (as a sync of the target would record it).
    async fn observe(&self, post: &Snapshot) {
        let mut commands = vec![];
        for w in self.deployment.workflows.iter().filter(|w| w.deleted) {
            if let Some(Ok(n8n_id)) = w.target_id.as_deref().map(LocalId::parse) {
                commands.push((n8n_id, MappingCommand::ObserveMissing));
            }
        }
        for w in &post.workflows {
            let (Some(id), Some(workflow)) = (&w.n8n_id, &w.workflow) else {
                continue;
            };
            let Ok(seen) = sync::seen(workflow) else {
                continue;
            };
            let (Ok(n8n_id), Ok(canonical)) = (
                LocalId::parse(id.as_str()),
                LocalId::parse(w.canonical_id.as_str()),
            ) else {
                continue;
            };
            let command = MappingCommand::Observe {
                environment_id: self.target_id.clone(),
                n8n_workflow_id: n8n_id.clone(),
                observation: seen.observation,
                auto_link: Some(canonical),
            };
            commands.push((n8n_id, command));
        }
        self.mapping_commands(commands).await;
    }

    /// Runs these commands on the target's mappings, [`READ_CONCURRENCY`] at a
    /// time (each on its own aggregate). One that fails is logged: the next sync of
    /// the target records the same.
    async fn mapping_commands(&self, commands: Vec<(LocalId, MappingCommand)>) {
        use futures::StreamExt;
        futures::stream::iter(commands)
            .for_each_concurrent(READ_CONCURRENCY, |(n8n_id, command)| async move {
                let name = aggregates::DomainCommand::name(&command);
                if let Err(error) = self
                    .app
                    .domain
                    .mapping(&self.ctx, &self.target_id, &n8n_id, command)
                    .await
                {
                    tracing::warn!(deployment = %self.deployment_id, workflow = %n8n_id,
                        command = name, %error, "a target mapping could not record the deployment");
                }
            })
            .await;
    }

    /// Commits the promoted workflows and their sidecars to the target's Git folder
    /// in one commit (when it has Git), and records the Git hash on the mappings.
    async fn commit_to_git(&self, post: &Snapshot) -> DeploymentCommand {
        let skipped = |error: Option<String>| DeploymentCommand::RecordGitCommit {
            commit_sha: None,
            files: 0,
            error,
        };
        if self.target.git.is_none() {
            return skipped(None);
        }
        let (repository, git) = match sync::git_repository(self.app, &self.ctx, &self.target).await
        {
            Ok(found) => found,
            Err(e) => return skipped(Some(e.to_string())),
        };
        let folder = git.folder.trim_matches('/');
        let prefix = if folder.is_empty() {
            String::new()
        } else {
            format!("{folder}/")
        };
        let mut files = vec![];
        let mut hashes = vec![];
        // a restore removes what it deleted from the folder too
        let mut deletes = vec![];
        for w in self.deployment.workflows.iter().filter(|w| w.deleted) {
            match self.slug(&w.workflow_id).await {
                Ok(Some(slug)) => deletes.extend([
                    format!("{prefix}{slug}.json"),
                    format!("{prefix}{slug}{SIDECAR_SUFFIX}"),
                ]),
                Ok(None) => {}
                Err(e) => return skipped(Some(e)),
            }
        }
        for w in &post.workflows {
            let (Some(id), Some(workflow)) = (&w.n8n_id, &w.workflow) else {
                continue;
            };
            let slug = match self.slug(&w.canonical_id).await {
                Ok(Some(slug)) => slug,
                Ok(None) => continue,
                Err(e) => return skipped(Some(e)),
            };
            let mut exported = workflow.clone();
            if let Some(object) = exported.as_object_mut() {
                for field in sync::INSTANCE_FIELDS {
                    object.remove(*field);
                }
            }
            let sidecar = Sidecar {
                canonical_id: w.canonical_id.clone(),
                canonical_slug: Some(slug.clone()),
                tags: vec![],
            };
            files.push((format!("{prefix}{slug}.json"), sync::pretty(&exported)));
            files.push((
                format!("{prefix}{slug}{SIDECAR_SUFFIX}"),
                sync::pretty(&sidecar),
            ));
            if let Ok(hash) = content_hash(&exported) {
                hashes.push((id.clone(), hash));
            }
        }
        if files.is_empty() && deletes.is_empty() {
            return skipped(None);
        }
        let message = match &self.promotion.source_snapshot {
            Some(snapshot) => format!(
                "Restore {} workflow(s) from snapshot {} (promotion {}, deployment {})",
                (files.len() + deletes.len()) / 2,
                snapshot.snapshot_id,
                self.promotion_id,
                self.deployment_id
            ),
            None => format!(
                "Promote {} workflow(s) from {} (promotion {}, deployment {})",
                files.len() / 2,
                self.promotion.source_environment_id,
                self.promotion_id,
                self.deployment_id
            ),
        };
        match repository.commit_changes(&files, &deletes, &message).await {
            Ok(sha) => {
                let commands = hashes
                    .into_iter()
                    .filter_map(|(id, hash)| {
                        let n8n_id = LocalId::parse(id.as_str()).ok()?;
                        let command = MappingCommand::ObserveGitHash {
                            git_content_hash: hash,
                        };
                        Some((n8n_id, command))
                    })
                    .collect();
                self.mapping_commands(commands).await;
                DeploymentCommand::RecordGitCommit {
                    commit_sha: Some(sha),
                    files: (files.len() + deletes.len()) as u32,
                    error: None,
                }
            }
            Err(e) => skipped(Some(format!("the Git commit failed: {e}"))),
        }
    }

    /// The Git slug of canonical workflow `canonical_id` (`None`: it has none, or
    /// the id is not a canonical id).
    async fn slug(&self, canonical_id: &str) -> Result<Option<String>, String> {
        let Ok(id) = LocalId::parse(canonical_id) else {
            return Ok(None);
        };
        let canonical = self
            .bus()
            .load::<aggregates::canonical::CanonicalWorkflow>(&aggregate_id(
                &self.ctx.tenant,
                &[&id],
            ))
            .await
            .map_err(|e| e.to_string())?
            .into_state();
        Ok(canonical.slug.map(|s| s.as_str().to_string()))
    }

    /// Restores every promoted workflow from the pre-snapshot, checks the target
    /// against it, and ends the deployment: `rolled_back` when the target matches,
    /// `failed` with the inconsistencies otherwise. `sweep`: also delete workflows
    /// this deployment may have created without recording them (a create in flight
    /// when the process died): those named as a promoted workflow that the
    /// pre-snapshot does not know.
    async fn roll_back(&mut self, reason: String, sweep: bool) -> Result<RunOutcome, RunError> {
        let sweep = sweep || self.unrecorded_write;
        self.deployment_command(DeploymentCommand::StartRollback {
            reason: reason.clone(),
        })
        .await?;
        let finished = self
            .deployment
            .rollback
            .as_ref()
            .and_then(|r| r.inconsistencies.clone());
        if let Some(inconsistencies) = finished {
            // restored and checked before an interruption: only the end is left
            return self.end_rollback(reason, inconsistencies).await;
        }
        let mut inconsistencies = vec![];
        let pre = match self.deployment.pre_snapshot.clone() {
            Some(taken) => match self.load_snapshot(&taken.snapshot_id, &taken.digest).await {
                Ok(pre) => Some(pre),
                Err(e) => {
                    inconsistencies.push(format!("nothing could be restored: {e}"));
                    None
                }
            },
            None => None,
        };
        let client = match self.client().await {
            Ok(client) => Some(client),
            Err(e) => {
                inconsistencies.push(format!("nothing could be restored: {e}"));
                None
            }
        };
        if let (Some(pre), Some(client)) = (&pre, &client) {
            let known: Vec<String> = pre
                .workflows
                .iter()
                .filter_map(|w| w.n8n_id.clone())
                .collect();
            let listed = if sweep {
                client.list_workflows().await.ok()
            } else {
                None
            };
            // last pushed first
            for w in self.deployment.workflows.clone().into_iter().rev() {
                if w.restored.is_some() || !(sweep || touched(&w)) {
                    continue;
                }
                let Some(before) = pre.workflow(&w.workflow_id) else {
                    continue;
                };
                let attempts = Arc::new(AtomicU32::new(0));
                let counting = client.counting(attempts.clone());
                let mut stray: Vec<String> =
                    w.target_id.iter().filter(|_| w.created).cloned().collect();
                if let Some(listed) = &listed {
                    stray.extend(
                        listed
                            .iter()
                            .filter(|l| l.get("name").and_then(Value::as_str) == Some(&w.name))
                            .filter_map(sync::listed_id)
                            .filter(|id| !known.contains(id)),
                    );
                }
                let result = self.restore(&counting, before, &stray).await;
                let attempts = attempts.load(Ordering::Relaxed);
                let (action, error) = match result {
                    Ok(action) => (Some(action), None),
                    Err(e) => (None, Some(e)),
                };
                self.deployment_command(DeploymentCommand::RecordRestore {
                    workflow_id: w.workflow_id.clone(),
                    action,
                    attempts,
                    error,
                })
                .await?;
            }
            // the target as the pre-snapshot holds it? (what this deployment did not
            // touch is not its to judge: a hotfix it refused to overwrite stays)
            for w in self.deployment.workflows.clone() {
                if !(sweep || touched(&w)) {
                    continue;
                }
                let Some(before) = pre.workflow(&w.workflow_id) else {
                    continue;
                };
                if let Some(problem) = self.check_restored(client, before, &w).await {
                    inconsistencies.push(format!("{}: {problem}", w.name));
                }
            }
        }
        self.deployment_command(DeploymentCommand::FinishRollback {
            inconsistencies: inconsistencies.clone(),
        })
        .await?;
        self.end_rollback(reason, inconsistencies).await
    }

    /// After a finished rollback: the deployment fails, the promotion is rolled
    /// back (or failed, with the inconsistencies), the target is pinned and its slot
    /// released.
    async fn end_rollback(
        &mut self,
        reason: String,
        inconsistencies: Vec<String>,
    ) -> Result<RunOutcome, RunError> {
        self.deployment_command(DeploymentCommand::Finish {
            outcome: DeploymentStatus::Failed,
            reason: Some(reason.clone()),
        })
        .await?;
        let outcomes = self.outcomes();
        if inconsistencies.is_empty() {
            self.end_promotion(PromotionCommand::RollBack {
                outcomes,
                reason: Some(reason.clone()),
            })
            .await?;
        } else {
            self.end_promotion(PromotionCommand::Fail {
                reason: Some(reason.clone()),
                inconsistencies: inconsistencies.clone(),
            })
            .await?;
        }
        // What was rolled back is not deployed again by the automation until an
        // admin says so.
        let pinned = self
            .environment_command(EnvironmentCommand::Pin {
                reason: format!("deployment {} rolled back: {reason}", self.deployment_id),
                deployment_id: Some(self.deployment_id.clone()),
            })
            .await;
        if let Err(error) = pinned {
            if !matches!(error, CommandError::Refused(_)) {
                return Err(error.into());
            }
            tracing::warn!(deployment = %self.deployment_id, %error, "the target was not pinned");
        }
        self.release().await?;
        Ok(if inconsistencies.is_empty() {
            RunOutcome::RolledBack(reason)
        } else {
            RunOutcome::Inconsistent(inconsistencies)
        })
    }

    /// Brings one workflow back to `before`: deletes what this deployment created
    /// (`created`), updates or re-creates what the target had, and restores its
    /// activation.
    async fn restore(
        &self,
        client: &N8nClient,
        before: &SnapshotWorkflow,
        created: &[String],
    ) -> Result<RestoreAction, String> {
        let mut action = RestoreAction::Unchanged;
        for id in created {
            match client.delete_workflow(id).await {
                Ok(()) | Err(UpstreamError::NotFound { .. }) => action = RestoreAction::Deleted,
                Err(e) => return Err(format!("the created workflow {id} cannot be deleted: {e}")),
            }
        }
        let (Some(id), Some(workflow)) = (&before.n8n_id, &before.workflow) else {
            return Ok(action);
        };
        let now = match client.get_workflow(id).await {
            Ok(now) => Some(now),
            Err(UpstreamError::NotFound { .. }) => None,
            Err(e) => return Err(format!("cannot be read: {e}")),
        };
        let (id, now) = match now {
            Some(now) if body_hash(&now) == before.content_hash => (id.clone(), now),
            Some(_) => {
                let stored = client
                    .update_workflow(id, workflow)
                    .await
                    .map_err(|e| format!("cannot be written back: {e}"))?;
                action = RestoreAction::Updated;
                (id.clone(), stored)
            }
            None => {
                let stored = client
                    .create_workflow(workflow)
                    .await
                    .map_err(|e| format!("was deleted and cannot be re-created: {e}"))?;
                action = RestoreAction::Recreated;
                let new_id = sync::listed_id(&stored)
                    .ok_or_else(|| "re-created without an id".to_string())?;
                (new_id, stored)
            }
        };
        if is_active(&now) != before.active {
            let switched = if before.active {
                client.activate(&id).await
            } else {
                client.deactivate(&id).await
            };
            switched.map_err(|e| format!("its activation cannot be restored: {e}"))?;
            if action == RestoreAction::Unchanged {
                action = RestoreAction::Updated;
            }
        }
        Ok(action)
    }

    /// What differs between the target and `before` after the restore (`None`:
    /// nothing).
    async fn check_restored(
        &self,
        client: &N8nClient,
        before: &SnapshotWorkflow,
        w: &aggregates::deployment::DeploymentWorkflow,
    ) -> Option<String> {
        if let Some(error) = &w.restore_error {
            return Some(error.clone());
        }
        if w.created {
            if let Some(id) = &w.target_id {
                match client.get_workflow(id).await {
                    Err(UpstreamError::NotFound { .. }) => {}
                    Ok(_) => return Some(format!("created as {id} and still there")),
                    Err(e) => return Some(format!("cannot be checked: {e}")),
                }
            }
        }
        let Some(id) = &before.n8n_id else {
            return None;
        };
        if w.restored == Some(RestoreAction::Recreated) {
            // a new id: checked by the restore's own write
            return None;
        }
        match client.get_workflow(id).await {
            Ok(now)
                if body_hash(&now) == before.content_hash && is_active(&now) == before.active =>
            {
                None
            }
            Ok(now) if body_hash(&now) != before.content_hash => {
                Some("differs from the pre-snapshot".into())
            }
            Ok(_) => Some("its activation differs from the pre-snapshot".into()),
            Err(e) => Some(format!("cannot be checked: {e}")),
        }
    }
}

/// Workflows read from one n8n at a time.
const READ_CONCURRENCY: usize = 8;

/// Reads the workflows `ids` names, [`READ_CONCURRENCY`] at a time, in order:
/// each one, or `None` (no id, or n8n does not have it).
async fn read_all(
    client: &N8nClient,
    ids: Vec<Option<String>>,
) -> Vec<Result<Option<Value>, UpstreamError>> {
    use futures::StreamExt;
    let reads = ids.into_iter().map(|id| {
        let client = client.clone();
        async move {
            let Some(id) = id else {
                return Ok(None);
            };
            match client.get_workflow(&id).await {
                Ok(workflow) => Ok(Some(workflow)),
                Err(UpstreamError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }
    });
    futures::stream::iter(reads)
        .buffered(READ_CONCURRENCY)
        .collect()
        .await
}

/// A new workflow created before the ids it references existed.
struct Deferred {
    source_id: String,
    canonical: String,
    target_id: String,
    activate: bool,
    /// Requests its creation took.
    attempts: u32,
}

/// Whether every problem is a reference to a promoted workflow the target does not
/// have yet (it will, once created): the workflow can be created first and its
/// references written afterwards.
fn awaits_creation(problems: &[Problem], promoted_new: &[String]) -> bool {
    problems.iter().all(|p| {
        matches!(p, Problem::UnknownSubWorkflow { workflow_id, .. } if promoted_new.contains(workflow_id))
    })
}

/// Whether the deployment wrote to the target for this workflow: pushed, or
/// failed after a write (a create or an update whose activation failed).
fn touched(w: &aggregates::deployment::DeploymentWorkflow) -> bool {
    match w.status {
        WorkflowDeployStatus::Success => true,
        WorkflowDeployStatus::Failed => w.target_id.is_some(),
        _ => false,
    }
}

/// Why a deployment cannot be run here (for the sync error conversions).
impl From<SyncError> for RunError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Command(e) => RunError::Command(e),
            SyncError::Query(e) => RunError::Query(e),
            other => RunError::Permanent(other.to_string()),
        }
    }
}
