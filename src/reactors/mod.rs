//! Reactors: process managers that turn committed events into commands or side
//! effects, on one runtime ([`runtime`]).
//!
//! A reactor has a **name** and a **checkpoint** (a row in `reactor_checkpoints`).
//! The runtime reads the global log in batches from the checkpoint
//! ([`eventstore::Store::read_after`], gap-safe), hands every event the reactor
//! [`wants`](Reactor::wants) to [`react`](Reactor::react), and writes the checkpoint
//! after the batch. New events wake it ([`eventstore::Store::wakeup`]; it lets a
//! burst settle for [`ReactorOptions::settle`] before reading); polling is only the
//! fallback. On PostgreSQL each reactor runs in exactly one
//! process across all replicas (an advisory lock per reactor, on a dedicated
//! connection, as the projector does); on SQLite it runs in one process (and once
//! per database within it).
//!
//! **Effects happen before the checkpoint is written**, so a crash between the two
//! replays the end of a batch. Every effect must therefore be idempotent: a command
//! targets a deterministic id and is a no-op when its effect is already there; a
//! side effect carries a stable id ([`Trigger::effect_id`]) that the receiver
//! deduplicates on (webhook-id, Nats-Msg-Id). Nothing is lost: the checkpoint never
//! moves past an event before its effect happened.
//!
//! **Failures** (see [`ReactError`]): a reactor never silently advances past an event
//! whose effect did not happen. A transient error (a concurrent write, the database
//! away, an upstream timeout) and a permanent one (a refusal the reactor does not
//! read as "already done", an undecodable event) both stop the reactor at that
//! event; it is retried with exponential backoff (100 ms doubling to 1 min) for as
//! long as it fails. The status ([`Reactors::status`], `GET /ready`, `GET /metrics`
//! as `reactor_blocked`, `reactor_attempts`) and the logs (warn for transient, error
//! for permanent) name the position, the event and the error. Other reactors go on.
//! A refusal that *means* the effect is already there is not a failure: the reactor
//! returns [`Reaction::Skipped`] with the reason, which is logged and counted, and
//! moves on.
//!
//! Commands run through the [`CommandBus`](crate::command::bus::CommandBus) like
//! every other command, as a system actor ([`Trigger::context`]): the tenant is the
//! event's, the correlation id is the triggering event's (so the audit trail ties
//! the effect to the request that caused it) and the causation id is the triggering
//! event's global position.
//!
//! A caller that needs a reactor's effect before it answers either takes the same
//! idempotent step itself (a drift report opens the incident it reserved; a close
//! releases the slot), the reactor then finding it done (without a load when the
//! step's event is in the same batch, [`Reactor::step`]; a young trigger is left to
//! its caller for [`ReactorOptions::grace`]), or waits for it, bounded:
//! [`Reactors::wait_for_reactor`] returns once the reactor has handled the log up to
//! a position, wherever it runs.
//!
//! # Adding a reactor
//!
//! 1. **Name it.** A new file in this folder with a `pub const NAME`; the name keys
//!    its checkpoint row and its advisory lock, so it never changes once deployed
//!    (a new name starts from position 0 and replays the whole log, harmlessly).
//! 2. **Say which events.** [`Reactor::wants`] picks them by `event_type` (and, when
//!    the type is not enough, by decoding the payload). It must be cheap: it sees
//!    every event of the log, unless [`Reactor::event_types`] names the types it
//!    (and [`Reactor::step_taken`]) looks at; then only those are read. Say which may run concurrently
//!    ([`Reactor::partition`]): by default every event waits for the one before.
//! 3. **Use deterministic ids.** Everything the reaction creates or changes is
//!    addressed by an id derived from the event: the id the event names (the
//!    reserved incident), or [`Trigger::effect_id`] (`{reactor}:{position}`) for a
//!    new aggregate or a side effect (webhook-id, Nats-Msg-Id).
//! 4. **Make it idempotent.** Running the reaction twice, or after later events,
//!    must change nothing the first run did not. Prefer commands whose decision is a
//!    no-op when the effect is there (`Open` on an open incident, `Release` of a slot
//!    one does not hold); when the world moved on since the event (the slot was taken
//!    again), check the current state and return [`Reaction::Skipped`] with why.
//!    Return [`ReactError`] for anything that did not happen; `From<CommandError>`
//!    sorts command errors into transient and permanent.
//!    When callers take the reaction's step themselves, say so: [`Reactor::step`]
//!    and [`Reactor::step_taken`] let the runtime skip a trigger whose step is in
//!    the log already, and leave a young one to its caller for
//!    [`ReactorOptions::grace`].
//! 5. **Register it** in [`standard`], which [`crate::Application`] starts (with the
//!    projector) and the tests' `TestStore::domain` starts too.
//! 6. **Test it** (`tests/it/reactors.rs`, both backends): the effect happens; a
//!    replay of an already handled batch changes nothing (reset the checkpoint row
//!    and run [`runtime::ReactorRuntime::catch_up`] again); the crash it repairs
//!    (commit only the triggering event, then start the runtime). The runtime's own
//!    guarantees (checkpoint across restarts, once across replicas, blocking and
//!    retry) are tested there once for every reactor.

pub mod incident_slot;
pub mod link_slot;
pub mod runtime;

use std::sync::Arc;

use aggregates::kernel::command::Actor;
use aggregates::kernel::ids::{AggregateId, LocalId, TenantId};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use crate::command::bus::{CommandContext, CommandError};
use crate::command::domain::Domain;
use eventstore::StoredEvent;

pub use runtime::{
    Blocked, ReactorOptions, ReactorRuntime, ReactorStatus, Reactors, Step, WaitError,
};

/// A process manager on the reactor runtime.
pub trait Reactor: Send + Sync + 'static {
    /// Stable name: the checkpoint row and the advisory lock (never renamed).
    fn name(&self) -> &'static str;
    /// Whether `event` needs this reactor. Sees every event of the log (of
    /// [`event_types`](Reactor::event_types), when it names them): keep it cheap.
    fn wants(&self, event: &StoredEvent) -> bool;
    /// Every event type [`wants`](Reactor::wants) or
    /// [`step_taken`](Reactor::step_taken) may look at (`None`: every type). When
    /// every reactor of a runtime names its types, the runtime reads only those
    /// from the log (on SQLite the others never leave the database): most of the
    /// log is no reactor's concern. Events of other types never reach the reactor.
    fn event_types(&self) -> Option<&'static [&'static str]> {
        None
    }
    /// Makes the event's effect happen, idempotently (see the module docs). May run
    /// more than once for one event, and after later events.
    fn react<'a>(&'a self, trigger: &'a Trigger<'a>)
        -> BoxFuture<'a, Result<Reaction, ReactError>>;
    /// Which events must be reacted to one after another: those with the same key
    /// are, in log order; events with different keys may be reacted to
    /// concurrently (within a batch). The default puts every event under one key:
    /// strictly in log order. A reactor whose effects on different keys never depend
    /// on each other (its reactions check the current state anyway) returns the
    /// event's aggregate, so a slow reaction delays only its own aggregate's next.
    fn partition<'e>(&self, event: &'e StoredEvent) -> &'e str {
        let _ = event;
        ""
    }
    /// The step a reaction to `event` would take, as a key that a later event can
    /// show taken ([`Reactor::step_taken`]). When an event later in the same batch
    /// shows it, the runtime skips the trigger without reacting: a caller that took
    /// the reactor's step itself (a close releasing its slot) then costs the reactor
    /// no load. A trigger with a step is also left alone while it is younger than
    /// [`ReactorOptions::grace`] (its caller is probably taking the step). Only for
    /// steps whose later evidence means the effect is there for good. Default: none
    /// (every wanted event is reacted to as soon as it is read).
    fn step(&self, event: &StoredEvent) -> Option<String> {
        let _ = event;
        None
    }
    /// The step `event` shows taken, as the key [`Reactor::step`] gives its
    /// trigger. Sees every event of the log: keep it cheap (look at the type first).
    fn step_taken(&self, event: &StoredEvent) -> Option<String> {
        let _ = event;
        None
    }
    /// Whether the reactor batches its effects: its reactions may leave them
    /// pending until [`flush`](Reactor::flush), which the runtime calls once it
    /// has reacted to a batch (after any reaction, an effect or a skip), before the
    /// checkpoint (in memory or in its row) passes any of those events. A flush
    /// that fails fails the batch at its first effect (or first reaction), which is
    /// replayed (reactions are idempotent). One write for a batch
    /// instead of one per event: what keeps routing ahead of the commands on
    /// SQLite's single write turn.
    fn batched(&self) -> bool {
        false
    }
    /// Makes the pending effects of the reactions since the last flush happen (a
    /// batched reactor's; see [`batched`](Reactor::batched)).
    fn flush(&self) -> BoxFuture<'_, Result<(), ReactError>> {
        Box::pin(async { Ok(()) })
    }
}

/// What a reaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction {
    /// The effect happened (or was found already there by an idempotent command).
    Done,
    /// Nothing to do, and why: the effect is already there or no longer applies.
    /// Logged and counted; the reactor moves on.
    Skipped(String),
}

/// Why a reaction did not happen. Either way the reactor stops at the event and
/// retries it with backoff (see the module docs); the kind sets how loudly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReactError {
    /// May succeed when simply retried (a concurrent write, the store away).
    #[error("{0}")]
    Transient(String),
    /// Will not succeed by retrying as is (a refusal that does not mean "already
    /// done", an undecodable event): someone has to look.
    #[error("{0}")]
    Permanent(String),
}

impl ReactError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, ReactError::Permanent(_))
    }
}

impl From<CommandError> for ReactError {
    fn from(error: CommandError) -> Self {
        use aggregates::kernel::error::DomainError;
        match &error {
            CommandError::Conflict { .. }
            | CommandError::Store(_)
            | CommandError::Refused(DomainError::Conflict(_) | DomainError::Unavailable(_)) => {
                ReactError::Transient(error.to_string())
            }
            CommandError::Refused(_) | CommandError::Damaged(_) => {
                ReactError::Permanent(error.to_string())
            }
        }
    }
}

impl From<aggregates::kernel::error::DomainError> for ReactError {
    fn from(error: aggregates::kernel::error::DomainError) -> Self {
        CommandError::Refused(error).into()
    }
}

impl From<eventstore::StoreError> for ReactError {
    fn from(error: eventstore::StoreError) -> Self {
        CommandError::Store(error).into()
    }
}

/// The event a reactor reacts to, with what its commands need.
pub struct Trigger<'a> {
    pub event: &'a StoredEvent,
    /// The reacting reactor's name.
    pub reactor: &'static str,
}

impl Trigger<'_> {
    /// The context of a command caused by the event, acting as `system:{job}`: the
    /// event's tenant, its correlation id, and its position as the causation.
    pub fn context(&self, job: &str) -> Result<CommandContext, ReactError> {
        let tenant = TenantId::parse(self.event.tenant())
            .map_err(|e| ReactError::Permanent(format!("event has no valid tenant ({e})")))?;
        let correlation_id = self
            .event
            .metadata
            .get("correlation_id")
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| format!("event:{}", self.event.position), str::to_string);
        Ok(CommandContext {
            tenant,
            actor: Actor::system(job),
            correlation_id,
            causation_id: Some(self.event.position.to_string()),
        })
    }

    /// A stable id for a side effect of this reaction (`{reactor}:{position}`): the
    /// same on every replay, different for every event and reactor.
    pub fn effect_id(&self) -> String {
        format!("{}:{}", self.reactor, self.event.position)
    }

    /// The event's payload as `E`; an undecodable payload is a permanent error.
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, ReactError> {
        serde_json::from_value(self.event.payload.clone()).map_err(|e| {
            ReactError::Permanent(format!("undecodable {}: {e}", self.event.event_type))
        })
    }

    /// The parts of the event's aggregate id after the tenant.
    pub fn local_ids(&self) -> Result<Vec<LocalId>, ReactError> {
        let id = AggregateId::parse(self.event.aggregate_id.as_str())?;
        id.parts()
            .map(|part| LocalId::parse(part).map_err(ReactError::from))
            .collect()
    }
}

/// The reactors the service runs, over `domain`'s command bus.
pub fn standard(domain: &Domain) -> Vec<Arc<dyn Reactor>> {
    vec![
        Arc::new(incident_slot::IncidentSlotReactor::new(
            domain.bus().clone(),
        )),
        Arc::new(link_slot::LinkSlotReactor::new(domain.bus().clone())),
    ]
}

/// Attempts for one command of a reaction that may meet a concurrent write (then
/// the whole reaction is retried with backoff).
pub(crate) const COMMAND_ATTEMPTS: usize = 5;
