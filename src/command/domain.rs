//! Application services: the per-aggregate entry points, and commands that span
//! more than one aggregate.
//!
//! Each keeps a cross-aggregate invariant with an ordering that stays correct if
//! the process dies between its steps:
//! - a mapping claims the (environment, canonical) link slot *before* it records
//!   `linked`; the link-slot reactor ([`crate::reactors::link_slot`]) releases it
//!   *after* a committed event that leaves `linked`;
//! - a drift report reserves the environment's active-incident slot
//!   ([`crate::workflows::incident_slot`]); the incident-slot reactor
//!   ([`crate::reactors::incident_slot`]) opens the reserved incident, and releases
//!   the slot after the incident is closed.
//!
//! The reactors run on [`crate::reactors::ReactorRuntime`]; [`Domain::reactors`] is
//! where callers wait for them.

use std::sync::Arc;

use aggregates::canonical::{CanonicalCommand, CanonicalWorkflow};
use aggregates::credentials::{CredentialMap, CredentialMapCommand};
use aggregates::deployment::{Deployment, DeploymentCommand};
use aggregates::environment::{Environment, EnvironmentCommand};
use aggregates::incident::{DriftIncident, IncidentCommand, IncidentEvent};
use aggregates::kernel::error::DomainError;
use aggregates::kernel::ids::LocalId;
use aggregates::mapping::{MappingCommand, MappingStatus, WorkflowMapping};
use aggregates::pipeline::{Pipeline, PipelineCommand};
use aggregates::policy::{DriftPolicy, DriftPolicyCommand, PolicyScope};
use aggregates::promotion::{Promotion, PromotionCommand};
use aggregates::reservation::{
    BoxFuture, LinkSlot, Reservation, ReservationCommand, ReservationKey, ReservationKind,
    Reservations, SlugClaim,
};
use aggregates::Actor;

use crate::command::bus::{CommandBus, CommandContext, CommandError, Committed};
use crate::reactors::{link_slot, Reactors};

/// Attempts for internal steps that may meet a concurrent write.
pub(crate) const RETRIES: usize = 5;
/// How long a link claim waits for the link-slot reactor to release a slot whose
/// holder has already left `linked`.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Clone)]
pub struct Domain {
    bus: CommandBus,
    reactors: Reactors,
}

impl Domain {
    /// The domain over `bus`, with a [`Reactors`] handle that no runtime publishes
    /// into yet: [`crate::reactors::ReactorRuntime::standard`] starts one on it.
    pub fn new(bus: CommandBus) -> Self {
        let reactors = Reactors::new(bus.store().clone());
        Domain { bus, reactors }
    }

    pub fn bus(&self) -> &CommandBus {
        &self.bus
    }

    /// The reactors that finish this domain's multi-aggregate steps: their status,
    /// and waits for their effects.
    pub fn reactors(&self) -> &Reactors {
        &self.reactors
    }

    /// Reservations for `ctx`'s tenant, claimed as the system on the actor's behalf.
    pub fn reservations(&self, ctx: &CommandContext) -> Arc<dyn Reservations> {
        Arc::new(StoreReservations {
            bus: self.bus.clone(),
            reactors: self.reactors.clone(),
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

    /// A mapping command. A committed move out of `linked` frees the link slot
    /// through the link-slot reactor.
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
        self.bus
            .execute::<WorkflowMapping, _>(
                ctx,
                &[environment_id, n8n_workflow_id],
                command,
                false,
                &services,
            )
            .await
    }

    /// An incident command. A committed close frees the environment's slot through
    /// the incident-slot reactor.
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
        let closed = committed
            .events
            .iter()
            .any(|(_, e)| matches!(e, IncidentEvent::Closed { .. }));
        if closed {
            self.release_incident_slot(ctx, &committed.state.environment_id, incident_id)
                .await;
        }
        Ok(committed)
    }

    /// Frees the environment's slot of a closed incident at once: the step the
    /// incident-slot reactor guarantees ([`crate::reactors::incident_slot`]), taken
    /// here so the next drift report finds the slot free. Idempotent; a failure is
    /// left to the reactor (the close has committed either way).
    pub(crate) async fn release_incident_slot(
        &self,
        ctx: &CommandContext,
        environment_id: &str,
        incident_id: &LocalId,
    ) {
        let released = match LocalId::parse(environment_id) {
            Ok(environment_id) => self
                .bus
                .execute_retrying::<Environment, _>(
                    &system_ctx(ctx, "incident-slot"),
                    &[&environment_id],
                    EnvironmentCommand::ReleaseIncidentSlot {
                        incident_id: incident_id.clone(),
                    },
                    &(),
                    RETRIES,
                )
                .await
                .map(|_| ()),
            Err(e) => Err(e.into()),
        };
        if let Err(error) = released {
            tracing::warn!(%incident_id, %error,
                "closed incident's slot not released yet; the incident-slot reactor will");
        }
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
    /// `NOT_FOUND` unless the caller's tenant has registered `environment_id`.
    async fn require_environment(
        &self,
        ctx: &CommandContext,
        environment_id: &LocalId,
    ) -> Result<(), CommandError> {
        let aggregate = aggregates::kernel::ids::aggregate_id(&ctx.tenant, &[environment_id]);
        if self
            .bus
            .load::<Environment>(&aggregate)
            .await?
            .into_state()
            .registered
        {
            Ok(())
        } else {
            Err(DomainError::NotFound {
                kind: "environment",
                id: environment_id.to_string(),
            }
            .into())
        }
    }

    /// A command on a webhook endpoint of the caller's tenant.
    pub async fn webhook(
        &self,
        ctx: &CommandContext,
        webhook_id: &LocalId,
        command: aggregates::webhook::WebhookCommand,
    ) -> Result<Committed<aggregates::webhook::Webhook>, CommandError> {
        self.bus
            .execute::<aggregates::webhook::Webhook, _>(ctx, &[webhook_id], command, false, &())
            .await
    }

    /// A credential-mapping command on the (source, target) pair. Both environments
    /// must be registered in the caller's tenant, and differ.
    pub async fn credential_map(
        &self,
        ctx: &CommandContext,
        source_environment_id: &LocalId,
        target_environment_id: &LocalId,
        command: CredentialMapCommand,
    ) -> Result<Committed<CredentialMap>, CommandError> {
        if source_environment_id == target_environment_id {
            return Err(DomainError::validation(
                "target_environment_id",
                "must differ from the source environment",
            )
            .into());
        }
        for environment_id in [source_environment_id, target_environment_id] {
            self.require_environment(ctx, environment_id).await?;
        }
        self.bus
            .execute::<CredentialMap, _>(
                ctx,
                &[source_environment_id, target_environment_id],
                command,
                false,
                &(),
            )
            .await
    }

    pub async fn drift_policy(
        &self,
        ctx: &CommandContext,
        scope: &PolicyScope,
        command: DriftPolicyCommand,
    ) -> Result<Committed<DriftPolicy>, CommandError> {
        if let Some(environment_id) = scope.environment_id() {
            self.require_environment(ctx, environment_id).await?;
        }
        self.bus
            .execute::<DriftPolicy, _>(ctx, &[&scope.local_id()], command, false, &())
            .await
    }
}

/// The same tenant and correlation, acting as a system job.
pub(crate) fn system_ctx(ctx: &CommandContext, job: &str) -> CommandContext {
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
    reactors: Reactors,
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

impl StoreReservations {
    /// The link slot of (`environment`, `canonical`) is held by a workflow that has
    /// already left `linked` (the link-slot reactor has not released it yet): waits,
    /// bounded, for the reactor to reach what is committed now. True when a claim is
    /// worth trying again.
    async fn release_pending(
        &self,
        environment: &LocalId,
        canonical: &LocalId,
    ) -> Result<bool, DomainError> {
        let unavailable = |e: CommandError| DomainError::Unavailable(e.to_string());
        let slot =
            aggregates::kernel::ids::aggregate_id(&self.ctx.tenant, &[environment, canonical]);
        let Some(holder) = self
            .bus
            .load::<Reservation<LinkSlot>>(&slot)
            .await
            .map_err(unavailable)?
            .into_state()
            .holder
        else {
            return Ok(true);
        };
        let holder = LocalId::parse(holder)?;
        let mapping =
            aggregates::kernel::ids::aggregate_id(&self.ctx.tenant, &[environment, &holder]);
        let mapping = self
            .bus
            .load::<WorkflowMapping>(&mapping)
            .await
            .map_err(unavailable)?
            .into_state();
        if mapping.status == MappingStatus::Linked
            && mapping.canonical_id.as_deref() == Some(canonical.as_str())
        {
            return Ok(false);
        }
        let head = self
            .bus
            .store()
            .last_position()
            .await
            .map_err(|e| DomainError::Unavailable(e.to_string()))?;
        match self
            .reactors
            .wait_for_reactor(link_slot::NAME, head, RELEASE_WAIT)
            .await
        {
            Ok(()) => Ok(true),
            Err(error) => {
                tracing::warn!(%error, %environment, %canonical, %holder,
                    "link slot held by a workflow that left `linked`; its release is pending");
                Ok(false)
            }
        }
    }
}

impl Reservations for StoreReservations {
    fn claim<'a>(
        &'a self,
        key: &'a ReservationKey,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<bool, DomainError>> {
        Box::pin(async move {
            match key {
                ReservationKey::LinkSlot {
                    environment,
                    canonical,
                } => {
                    let parts = [environment, canonical];
                    if self.claim_kind::<LinkSlot>(&parts, holder).await? {
                        return Ok(true);
                    }
                    if !self.release_pending(environment, canonical).await? {
                        return Ok(false);
                    }
                    self.claim_kind::<LinkSlot>(&parts, holder).await
                }
                ReservationKey::Slug(slug) => {
                    self.claim_kind::<SlugClaim>(&[&LocalId::parse(slug.as_str())?], holder)
                        .await
                }
            }
        })
    }
}
