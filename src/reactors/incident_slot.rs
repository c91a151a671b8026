//! The environment's active-incident slot (DOMAIN.md §2.2: at most one active
//! incident per environment; closing clears the slot).
//!
//! A drift report reserves the slot for a new incident id, and the reservation
//! carries what opening it needs ([`aggregates::incident::IncidentOpening`]). This
//! reactor does the rest:
//!
//! - `environment.incident_slot_reserved` → opens the reserved incident (the id the
//!   event names). Idempotent: opening an open incident of the same environment is a
//!   no-op. A replay after the slot moved on (the incident was closed and the slot
//!   released, or reserved again) is skipped: opening it then would make a second
//!   active incident. A reservation recorded before this reactor existed carries no
//!   opening; it is skipped here and the next drift report opens it
//!   ([`crate::workflows::incident_slot`]).
//! - `incident.closed` → releases the slot of the incident's environment. Idempotent:
//!   releasing a slot that does not hold the incident is a no-op (incident ids are
//!   never reused, so a slot holding a closed incident is always stale).
//!
//! The commands act as `system:drift` (opening: the audit trail names the drift job
//! as the one who detected it, as it always has) and `system:incident-slot`
//! (releasing), with the triggering event's correlation id.

use aggregates::environment::{Environment, EnvironmentCommand, EnvironmentEvent};
use aggregates::incident::DriftIncident;
use aggregates::kernel::ids::{aggregate_id, LocalId, TenantId};
use futures::future::BoxFuture;

use super::{ReactError, Reaction, Reactor, Trigger, COMMAND_ATTEMPTS};
use crate::command::bus::CommandBus;
use eventstore::StoredEvent;

pub const NAME: &str = "incident-slot";

const RESERVED: &str = "environment.incident_slot_reserved";
const CLOSED: &str = "incident.closed";
const OPENED: &str = "incident.detected";
const RELEASED: &str = "environment.incident_slot_released";

/// The aggregate id of the incident an environment's slot event names.
fn named_incident(event: &StoredEvent) -> Option<String> {
    let tenant = TenantId::parse(event.tenant()).ok()?;
    let incident = event.payload.get("incident_id")?.as_str()?;
    Some(aggregate_id(&tenant, &[&LocalId::parse(incident).ok()?]))
}

pub struct IncidentSlotReactor {
    bus: CommandBus,
}

impl IncidentSlotReactor {
    pub fn new(bus: CommandBus) -> Self {
        IncidentSlotReactor { bus }
    }

    /// Opens the incident a reservation names.
    async fn open(&self, trigger: &Trigger<'_>) -> Result<Reaction, ReactError> {
        let EnvironmentEvent::IncidentSlotReserved {
            incident_id,
            opening,
        } = trigger.decode()?
        else {
            return Err(ReactError::Permanent(format!(
                "{RESERVED} payload is another environment event"
            )));
        };
        let Some(opening) = opening else {
            return Ok(Reaction::Skipped(format!(
                "the reservation of incident {incident_id} carries no opening (recorded \
                 before reactors); the next drift report on the environment opens it"
            )));
        };
        let [environment_id] = <[LocalId; 1]>::try_from(trigger.local_ids()?).map_err(|_| {
            ReactError::Permanent(format!(
                "malformed environment id {}",
                trigger.event.aggregate_id
            ))
        })?;
        let incident_id = LocalId::parse(incident_id)?;
        // Usually the report that reserved the slot has opened it already: one load
        // tells (opening an open incident would change nothing either).
        let tenant = TenantId::parse(trigger.event.tenant()).map_err(ReactError::from)?;
        let incident = self
            .bus
            .load::<DriftIncident>(&aggregate_id(&tenant, &[&incident_id]))
            .await?
            .into_state();
        if incident.opened {
            return Ok(Reaction::Skipped(format!(
                "incident {incident_id} is already open"
            )));
        }
        let environment = self
            .bus
            .load::<Environment>(&trigger.event.aggregate_id)
            .await?
            .into_state();
        if environment.active_incident.as_deref() != Some(incident_id.as_str()) {
            return Ok(Reaction::Skipped(format!(
                "the slot no longer holds incident {incident_id}"
            )));
        }
        let opened = self
            .bus
            .execute_retrying::<DriftIncident, _>(
                &trigger.context("drift")?,
                &[&incident_id],
                opening.open(environment_id),
                &(),
                COMMAND_ATTEMPTS,
            )
            .await?;
        Ok(if opened.events.is_empty() {
            Reaction::Skipped(format!("incident {incident_id} is already open"))
        } else {
            Reaction::Done
        })
    }

    /// Releases the slot a closed incident held.
    async fn release(&self, trigger: &Trigger<'_>) -> Result<Reaction, ReactError> {
        let [incident_id] = <[LocalId; 1]>::try_from(trigger.local_ids()?).map_err(|_| {
            ReactError::Permanent(format!(
                "malformed incident id {}",
                trigger.event.aggregate_id
            ))
        })?;
        let incident = self
            .bus
            .load::<DriftIncident>(&trigger.event.aggregate_id)
            .await?
            .into_state();
        let environment_id = LocalId::parse(incident.environment_id)?;
        let released = self
            .bus
            .execute_retrying::<Environment, _>(
                &trigger.context("incident-slot")?,
                &[&environment_id],
                EnvironmentCommand::ReleaseIncidentSlot {
                    incident_id: incident_id.clone(),
                },
                &(),
                COMMAND_ATTEMPTS,
            )
            .await?;
        Ok(if released.events.is_empty() {
            Reaction::Skipped(format!(
                "the slot of environment {environment_id} does not hold incident {incident_id}"
            ))
        } else {
            Reaction::Done
        })
    }
}

impl Reactor for IncidentSlotReactor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wants(&self, event: &StoredEvent) -> bool {
        event.event_type == RESERVED || event.event_type == CLOSED
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[RESERVED, CLOSED, OPENED, RELEASED])
    }

    /// Per aggregate: a reservation's opening and a closed incident's release look
    /// at the current state of the slot, so different environments and incidents
    /// never wait for each other.
    fn partition<'e>(&self, event: &'e StoredEvent) -> &'e str {
        &event.aggregate_id
    }

    /// Opening the reserved incident, and releasing a closed incident's slot, keyed
    /// by the incident's aggregate id.
    fn step(&self, event: &StoredEvent) -> Option<String> {
        match event.event_type.as_str() {
            RESERVED => named_incident(event).map(|id| format!("open {id}")),
            CLOSED => Some(format!("release {}", event.aggregate_id)),
            _ => None,
        }
    }

    /// `incident.detected` shows the opening taken (the reporter opened it; an
    /// incident is opened once); `environment.incident_slot_released` shows the
    /// release taken (the close released it; incident ids are never reused, so the
    /// slot never holds that incident again).
    fn step_taken(&self, event: &StoredEvent) -> Option<String> {
        match event.event_type.as_str() {
            OPENED => Some(format!("open {}", event.aggregate_id)),
            RELEASED => named_incident(event).map(|id| format!("release {id}")),
            _ => None,
        }
    }

    fn react<'a>(
        &'a self,
        trigger: &'a Trigger<'a>,
    ) -> BoxFuture<'a, Result<Reaction, ReactError>> {
        Box::pin(async move {
            if trigger.event.event_type == RESERVED {
                self.open(trigger).await
            } else {
                self.release(trigger).await
            }
        })
    }
}
