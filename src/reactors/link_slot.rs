//! The (environment, canonical workflow) link slot (DOMAIN.md §2.1: at most one
//! linked mapping per environment and canonical workflow).
//!
//! A mapping claims the slot *before* it records `linked` (inside the mapping's
//! decision, [`aggregates::mapping`]); this reactor releases it *after* a committed
//! event that takes the mapping out of `linked` (unlinked, missing, ignored,
//! deleted: [`MappingEvent::leaves_linked`]). The canonical id is the one the event
//! names (`unlinked`) or the one the mapping kept (the other ways out).
//!
//! Idempotent, including after later events: releasing a slot the workflow does not
//! hold is a no-op, and a mapping linked to the same canonical workflow again since
//! (re-linked, reappeared, unignored: its claim found the slot still held by itself)
//! holds the slot by right, so the event is skipped. A re-link that lands between
//! this reactor's look at the mapping and its release is caught by a second look,
//! which claims the slot back for it.

use aggregates::mapping::{MappingEvent, MappingStatus, WorkflowMapping};
use aggregates::reservation::{LinkSlot, Reservation, ReservationCommand};
use cqrs_es::Aggregate;
use futures::future::BoxFuture;

use super::{ReactError, Reaction, Reactor, Trigger, COMMAND_ATTEMPTS};
use crate::command::bus::CommandBus;
use aggregates::kernel::ids::LocalId;
use eventstore::StoredEvent;

pub const NAME: &str = "link-slot";

const MAPPING: &str = "workflow_mapping";
/// The mapping events that may take a mapping out of `linked` (decoded to tell).
const LEAVING: [&str; 5] = [
    "mapping.unlinked",
    "mapping.disappeared",
    "mapping.reappeared",
    "mapping.ignored",
    "mapping.deleted",
];

pub struct LinkSlotReactor {
    bus: CommandBus,
}

impl LinkSlotReactor {
    pub fn new(bus: CommandBus) -> Self {
        LinkSlotReactor { bus }
    }

    async fn release(&self, trigger: &Trigger<'_>) -> Result<Reaction, ReactError> {
        let event: MappingEvent = trigger.decode()?;
        let [environment_id, n8n_workflow_id] = <[LocalId; 2]>::try_from(trigger.local_ids()?)
            .map_err(|_| {
                ReactError::Permanent(format!(
                    "malformed mapping id {}",
                    trigger.event.aggregate_id
                ))
            })?;
        // The mapping as of the event (for the canonical link it kept) and now.
        let stream = self
            .bus
            .store()
            .aggregate_events(MAPPING, &trigger.event.aggregate_id)
            .await?;
        let mut then = WorkflowMapping::default();
        let mut now = WorkflowMapping::default();
        for stored in stream {
            let e: MappingEvent = serde_json::from_value(stored.payload).map_err(|e| {
                ReactError::Permanent(format!("undecodable {}: {e}", stored.event_type))
            })?;
            if stored.sequence <= trigger.event.sequence {
                then.apply(e.clone());
            }
            now.apply(e);
        }
        let canonical = match event {
            MappingEvent::Unlinked { canonical_id, .. } => Some(canonical_id),
            _ => then.canonical_id,
        };
        let Some(canonical) = canonical else {
            return Ok(Reaction::Skipped(
                "the mapping kept no canonical link".into(),
            ));
        };
        if holds(&now, &canonical) {
            return Ok(Reaction::Skipped(format!(
                "linked to {canonical} again since: the slot is held by right"
            )));
        }
        let canonical = LocalId::parse(canonical)?;
        let ctx = trigger.context("reservations")?;
        let parts = [&environment_id, &canonical];
        let holder = n8n_workflow_id.to_string();
        let released = self
            .bus
            .execute_retrying::<Reservation<LinkSlot>, _>(
                &ctx,
                &parts,
                ReservationCommand::Release {
                    holder: holder.clone(),
                },
                &(),
                COMMAND_ATTEMPTS,
            )
            .await?;
        if released.events.is_empty() {
            return Ok(Reaction::Skipped(format!(
                "the slot of {canonical} is not held by {holder}"
            )));
        }
        // A re-link of this workflow between the look above and the release found
        // the slot still its own (a no-op claim) and is linked now: claim it back.
        let now = self
            .bus
            .load::<WorkflowMapping>(&trigger.event.aggregate_id)
            .await?
            .into_state();
        if holds(&now, canonical.as_str()) {
            let claim = ReservationCommand::Claim {
                holder: holder.clone(),
            };
            if let Err(error) = self
                .bus
                .execute_retrying::<Reservation<LinkSlot>, _>(
                    &ctx,
                    &parts,
                    claim,
                    &(),
                    COMMAND_ATTEMPTS,
                )
                .await
            {
                tracing::error!(%error, environment = %environment_id, %canonical, %holder,
                    "a workflow re-linked while its link slot was released; the slot could \
                     not be claimed back for it");
            }
        }
        Ok(Reaction::Done)
    }
}

/// Whether `mapping` is linked to `canonical` (and so holds its slot by right).
fn holds(mapping: &WorkflowMapping, canonical: &str) -> bool {
    mapping.status == MappingStatus::Linked && mapping.canonical_id.as_deref() == Some(canonical)
}

impl Reactor for LinkSlotReactor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wants(&self, event: &StoredEvent) -> bool {
        if event.aggregate_type != MAPPING || !LEAVING.contains(&event.event_type.as_str()) {
            return false;
        }
        // An undecodable payload is the reaction's to report.
        serde_json::from_value::<MappingEvent>(event.payload.clone())
            .map_or(true, |e| e.leaves_linked())
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&LEAVING)
    }

    /// Per mapping: a release looks at the slot's current holder and the mapping's
    /// current state, so different mappings never wait for each other.
    fn partition<'e>(&self, event: &'e StoredEvent) -> &'e str {
        &event.aggregate_id
    }

    fn react<'a>(
        &'a self,
        trigger: &'a Trigger<'a>,
    ) -> BoxFuture<'a, Result<Reaction, ReactError>> {
        Box::pin(self.release(trigger))
    }
}
