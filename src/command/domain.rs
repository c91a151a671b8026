//! Application services: commands that span more than one aggregate.
//!
//! Each keeps a cross-aggregate invariant with an ordering that stays correct if
//! the process dies between its steps:
//! - a mapping claims the (environment, canonical) link slot *before* it records
//!   `linked`, and releases it *after* a committed event that leaves `linked`;
//! - drift reserves the environment's active-incident slot *before* the incident is
//!   opened, and closing the incident releases it afterwards. A slot left pointing at
//!   an incident that was never opened, or is already closed, is repaired by the next
//!   drift report.

use std::sync::Arc;

use aggregates::canonical::{CanonicalCommand, CanonicalWorkflow};
use aggregates::deployment::{Deployment, DeploymentCommand};
use aggregates::environment::{Environment, EnvironmentCommand};
use aggregates::incident::{
    AffectedWorkflow, DriftIncident, IncidentCommand, IncidentEvent, IncidentPolicy,
};
use aggregates::kernel::error::DomainError;
use aggregates::kernel::ids::{LocalId, Slug};
use aggregates::mapping::{MappingCommand, MappingEvent, WorkflowMapping};
use aggregates::pipeline::{Pipeline, PipelineCommand};
use aggregates::policy::{DriftPolicy, DriftPolicyCommand, PolicyScope};
use aggregates::promotion::{Promotion, PromotionCommand};
use aggregates::reservation::{
    BoxFuture, LinkSlot, Reservation, ReservationCommand, ReservationKind, Reservations, SlugClaim,
};
use aggregates::Actor;

use crate::command::bus::{CommandBus, CommandContext, CommandError, Committed};

/// Attempts for internal steps that may meet a concurrent write.
const RETRIES: usize = 5;

#[derive(Clone)]
pub struct Domain {
    bus: CommandBus,
}

impl Domain {
    pub fn new(bus: CommandBus) -> Self {
        Domain { bus }
    }

    pub fn bus(&self) -> &CommandBus {
        &self.bus
    }

    /// Reservations for `ctx`'s tenant, claimed as the system on the actor's behalf.
    pub fn reservations(&self, ctx: &CommandContext) -> Arc<dyn Reservations> {
        Arc::new(StoreReservations {
            bus: self.bus.clone(),
            ctx: system_ctx(ctx, "reservations"),
        })
    }

    pub async fn environment(
        &self,
        ctx: &CommandContext,
        environment_id: &LocalId,
        command: EnvironmentCommand,
    ) -> Result<Committed<Environment>, CommandError> {
        self.bus
            .execute::<Environment, _>(ctx, &[environment_id], command, false, &())
            .await
    }

    pub async fn canonical(
        &self,
        ctx: &CommandContext,
        canonical_id: &LocalId,
        command: CanonicalCommand,
    ) -> Result<Committed<CanonicalWorkflow>, CommandError> {
        let services = self.reservations(ctx);
        self.bus
            .execute::<CanonicalWorkflow, _>(ctx, &[canonical_id], command, false, &services)
            .await
    }

    /// A mapping command; a committed move out of `linked` frees the link slot.
    pub async fn mapping(
        &self,
        ctx: &CommandContext,
        environment_id: &LocalId,
        n8n_workflow_id: &LocalId,
        command: MappingCommand,
    ) -> Result<Committed<WorkflowMapping>, CommandError> {
        // A link must name a canonical workflow of this tenant that still exists (the
        // mapping aggregate cannot look it up; a sync's auto-link is resolved through
        // the hash registry, which only holds live ones).
        if let MappingCommand::Link { canonical_id } = &command {
            let aggregate = aggregates::kernel::ids::aggregate_id(&ctx.tenant, &[canonical_id]);
            let canonical = self
                .bus
                .load::<CanonicalWorkflow>(&aggregate)
                .await?
                .into_state();
            if !canonical.created
                || canonical.status == aggregates::canonical::CanonicalStatus::Deleted
            {
                return Err(DomainError::NotFound {
                    kind: "canonical workflow",
                    id: canonical_id.to_string(),
                }
                .into());
            }
        }
        let services = self.reservations(ctx);
        let committed = self
            .bus
            .execute::<WorkflowMapping, _>(
                ctx,
                &[environment_id, n8n_workflow_id],
                command,
                false,
                &services,
            )
            .await?;
        // The canonical id whose slot to free: `unlinked` names it; the other ways out
        // of `linked` (missing, ignored, deleted) keep it on the mapping.
        let released = committed
            .events
            .iter()
            .find(|(_, e)| e.leaves_linked())
            .and_then(|(_, e)| match e {
                MappingEvent::Unlinked { canonical_id, .. } => Some(canonical_id.clone()),
                _ => committed.state.canonical_id.clone(),
            });
        if let Some(canonical) = released {
            let canonical = LocalId::parse(canonical)?;
            let release = ReservationCommand::Release {
                holder: n8n_workflow_id.to_string(),
            };
            self.bus
                .execute_retrying::<Reservation<LinkSlot>, _>(
                    &system_ctx(ctx, "reservations"),
                    &[environment_id, &canonical],
                    release,
                    &(),
                    RETRIES,
                )
                .await?;
        }
        Ok(committed)
    }

    /// An incident command; a committed close frees the environment's slot.
    pub async fn incident(
        &self,
        ctx: &CommandContext,
        incident_id: &LocalId,
        command: IncidentCommand,
        admin_override: bool,
    ) -> Result<Committed<DriftIncident>, CommandError> {
        let committed = self
            .bus
            .execute::<DriftIncident, _>(ctx, &[incident_id], command, admin_override, &())
            .await?;
        if committed
            .events
            .iter()
            .any(|(_, e)| matches!(e, IncidentEvent::Closed { .. }))
        {
            self.release_incident_slot(ctx, &committed.state.environment_id, incident_id)
                .await?;
        }
        Ok(committed)
    }

    async fn release_incident_slot(
        &self,
        ctx: &CommandContext,
        environment_id: &str,
        incident_id: &LocalId,
    ) -> Result<(), CommandError> {
        let environment_id = LocalId::parse(environment_id)?;
        let release = EnvironmentCommand::ReleaseIncidentSlot {
            incident_id: incident_id.clone(),
        };
        self.bus
            .execute_retrying::<Environment, _>(
                &system_ctx(ctx, "incident-slot"),
                &[&environment_id],
                release,
                &(),
                RETRIES,
            )
            .await?;
        Ok(())
    }

    pub async fn promotion(
        &self,
        ctx: &CommandContext,
        promotion_id: &LocalId,
        command: PromotionCommand,
    ) -> Result<Committed<Promotion>, CommandError> {
        self.bus
            .execute::<Promotion, _>(ctx, &[promotion_id], command, false, &())
            .await
    }

    pub async fn deployment(
        &self,
        ctx: &CommandContext,
        deployment_id: &LocalId,
        command: DeploymentCommand,
    ) -> Result<Committed<Deployment>, CommandError> {
        self.bus
            .execute::<Deployment, _>(ctx, &[deployment_id], command, false, &())
            .await
    }

    pub async fn pipeline(
        &self,
        ctx: &CommandContext,
        pipeline_id: &LocalId,
        command: PipelineCommand,
    ) -> Result<Committed<Pipeline>, CommandError> {
        self.bus
            .execute::<Pipeline, _>(ctx, &[pipeline_id], command, false, &())
            .await
    }

    /// Sets or clears the drift policy of the tenant or of one environment.
    pub async fn drift_policy(
        &self,
        ctx: &CommandContext,
        scope: &PolicyScope,
        command: DriftPolicyCommand,
    ) -> Result<Committed<DriftPolicy>, CommandError> {
        if let Some(environment_id) = scope.environment_id() {
            let aggregate = aggregates::kernel::ids::aggregate_id(&ctx.tenant, &[environment_id]);
            if !self
                .bus
                .load::<Environment>(&aggregate)
                .await?
                .into_state()
                .registered
            {
                return Err(DomainError::NotFound {
                    kind: "environment",
                    id: environment_id.to_string(),
                }
                .into());
            }
        }
        self.bus
            .execute::<DriftPolicy, _>(ctx, &[&scope.local_id()], command, false, &())
            .await
    }

    /// Drift found on an environment: updates its active incident, or reserves the
    /// slot and opens a new one. Returns the incident's id and what was appended to it.
    pub async fn report_drift(
        &self,
        ctx: &CommandContext,
        environment_id: &LocalId,
        affected_workflows: Vec<AffectedWorkflow>,
        snapshot_digest: Option<String>,
        policy: IncidentPolicy,
    ) -> Result<(LocalId, Committed<DriftIncident>), CommandError> {
        let env_aggregate = aggregates::kernel::ids::aggregate_id(&ctx.tenant, &[environment_id]);
        let mut last_error = None;
        for _ in 0..RETRIES {
            let environment = self
                .bus
                .load::<Environment>(&env_aggregate)
                .await?
                .into_state();
            if !environment.registered {
                return Err(DomainError::NotFound {
                    kind: "environment",
                    id: environment_id.to_string(),
                }
                .into());
            }
            let open = IncidentCommand::Open {
                environment_id: environment_id.clone(),
                production: environment.class
                    == aggregates::environment::EnvironmentClass::Production,
                affected_workflows: affected_workflows.clone(),
                snapshot_digest: snapshot_digest.clone(),
                policy,
            };
            let incident_id = match &environment.active_incident {
                Some(active) => {
                    let active = LocalId::parse(active.as_str())?;
                    let update = IncidentCommand::UpdateDrift {
                        affected_workflows: affected_workflows.clone(),
                    };
                    match self
                        .incident(&system_ctx(ctx, "drift"), &active, update, false)
                        .await
                    {
                        Ok(committed) => return Ok((active, committed)),
                        // reserved but never opened (a crash between the two steps): open it now
                        Err(CommandError::Refused(DomainError::NotFound {
                            kind: "incident",
                            ..
                        })) => active,
                        // closed but the slot was not released yet: release and start over
                        Err(CommandError::Refused(DomainError::Validation {
                            ref field, ..
                        })) if field == "status" => {
                            self.release_incident_slot(ctx, environment_id.as_str(), &active)
                                .await?;
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                None => {
                    let new_id = LocalId::parse(uuid::Uuid::new_v4().to_string())?;
                    let reserve = EnvironmentCommand::ReserveIncidentSlot {
                        incident_id: new_id.clone(),
                    };
                    match self
                        .bus
                        .execute::<Environment, _>(
                            &system_ctx(ctx, "incident-slot"),
                            &[environment_id],
                            reserve,
                            false,
                            &(),
                        )
                        .await
                    {
                        Ok(_) => new_id,
                        // someone else reserved first: reload and update theirs
                        Err(
                            e @ (CommandError::Conflict { .. }
                            | CommandError::Refused(DomainError::Validation { .. })),
                        ) => {
                            last_error = Some(e);
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            let committed = self
                .incident(&system_ctx(ctx, "drift"), &incident_id, open, false)
                .await?;
            return Ok((incident_id, committed));
        }
        Err(last_error.unwrap_or_else(|| CommandError::Conflict {
            aggregate_id: env_aggregate,
        }))
    }
}

/// The same tenant and correlation, acting as a system job.
fn system_ctx(ctx: &CommandContext, job: &str) -> CommandContext {
    CommandContext {
        tenant: ctx.tenant.clone(),
        actor: Actor::system(job),
        correlation_id: ctx.correlation_id.clone(),
        causation_id: ctx.causation_id.clone(),
    }
}

/// [`Reservations`] over the event store: each key is a `Reservation` aggregate.
struct StoreReservations {
    bus: CommandBus,
    ctx: CommandContext,
}

impl StoreReservations {
    async fn claim_kind<K: ReservationKind>(
        &self,
        parts: &[&LocalId],
        holder: &str,
    ) -> Result<bool, DomainError> {
        let claim = ReservationCommand::Claim {
            holder: holder.to_string(),
        };
        match self
            .bus
            .execute_retrying::<Reservation<K>, _>(&self.ctx, parts, claim, &(), RETRIES)
            .await
        {
            Ok(_) => Ok(true),
            Err(CommandError::Refused(DomainError::Validation { .. })) => Ok(false),
            Err(CommandError::Refused(other)) => Err(other),
            Err(CommandError::Conflict { aggregate_id }) => {
                Err(DomainError::Conflict(aggregate_id))
            }
            Err(other) => Err(DomainError::Unavailable(other.to_string())),
        }
    }
}

impl Reservations for StoreReservations {
    fn claim<'a>(
        &'a self,
        kind: &'static str,
        key: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<bool, DomainError>> {
        Box::pin(async move {
            match kind {
                LinkSlot::TYPE => {
                    let (environment, canonical) = key.split_once(':').ok_or_else(|| {
                        DomainError::validation("canonical_id", "malformed link slot key")
                    })?;
                    let (environment, canonical) =
                        (LocalId::parse(environment)?, LocalId::parse(canonical)?);
                    self.claim_kind::<LinkSlot>(&[&environment, &canonical], holder)
                        .await
                }
                SlugClaim::TYPE => {
                    let slug = Slug::parse(key)?;
                    self.claim_kind::<SlugClaim>(&[&LocalId::parse(slug.as_str())?], holder)
                        .await
                }
                other => Err(DomainError::Unavailable(format!(
                    "unknown reservation kind {other}"
                ))),
            }
        })
    }
}
