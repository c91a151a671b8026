//! Uniqueness under concurrency, as aggregates.
//!
//! A projection's unique index is written after the append, so it cannot stop two
//! concurrent commands. Instead each unique key (a slug in a tenant; a canonical
//! workflow's link in an environment) is its own tiny aggregate: two concurrent claims
//! append to the same stream, optimistic concurrency lets exactly one win, and the
//! loser retries and finds the key held.

mod commands;
mod events;

pub use commands::*;
pub use events::*;

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Mutex;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::kernel::command::Issued;
use crate::kernel::error::DomainError;
use crate::kernel::ids::{LocalId, Slug};
use crate::kernel::transitions::{self, Lifecycle, StateMachine};

/// What is being reserved: gives the aggregate its type name and error field.
pub trait ReservationKind: Default + Send + Sync + 'static {
    const TYPE: &'static str;
    /// Field named in the validation error when the key is taken.
    const FIELD: &'static str;
}

/// One linked mapping per (environment, canonical workflow). Key `{env}:{canonical}`,
/// holder = n8n workflow id.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkSlot;
impl ReservationKind for LinkSlot {
    const TYPE: &'static str = "link_slot";
    const FIELD: &'static str = "canonical_id";
}

/// Slugs unique per tenant. Key = slug, holder = canonical id. Never released, so a
/// deleted workflow's slug is not silently reused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SlugClaim;
impl ReservationKind for SlugClaim {
    const TYPE: &'static str = "slug";
    const FIELD: &'static str = "slug";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    #[default]
    Free,
    Held,
}

crate::state_names!(ReservationStatus { Free => "free", Held => "held" });

impl StateMachine for ReservationStatus {
    const MACHINE: &'static str = "reservation";
    const ALL: &'static [Self] = &[Self::Free, Self::Held];
    const INITIAL: &'static [Self] = &[Self::Free];
    const VALID_TRANSITIONS: &'static [(Self, &'static [Self])] =
        &[(Self::Free, &[Self::Held]), (Self::Held, &[Self::Free])];
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Reservation<K: ReservationKind> {
    pub holder: Option<String>,
    #[serde(skip)]
    kind: PhantomData<K>,
}

impl<K: ReservationKind> Clone for Reservation<K> {
    fn clone(&self) -> Self {
        Reservation {
            holder: self.holder.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: ReservationKind> Reservation<K> {
    pub fn status(&self) -> ReservationStatus {
        if self.holder.is_some() {
            ReservationStatus::Held
        } else {
            ReservationStatus::Free
        }
    }

    pub fn decide(
        &self,
        command: ReservationCommand,
    ) -> Result<Vec<ReservationEvent>, DomainError> {
        match command {
            ReservationCommand::Claim { holder } => match &self.holder {
                Some(current) if *current == holder => Ok(vec![]),
                Some(current) => Err(DomainError::validation(
                    K::FIELD,
                    format!("already held by `{current}`"),
                )),
                None => {
                    transitions::check(self.status(), ReservationStatus::Held, false)?;
                    Ok(vec![ReservationEvent::Claimed { holder }])
                }
            },
            // Releasing what one does not hold is a no-op, so compensations are idempotent.
            ReservationCommand::Release { holder } => match &self.holder {
                Some(current) if *current == holder => {
                    transitions::check(self.status(), ReservationStatus::Free, false)?;
                    Ok(vec![ReservationEvent::Released { holder }])
                }
                _ => Ok(vec![]),
            },
        }
    }
}

impl<K: ReservationKind> Aggregate for Reservation<K> {
    const TYPE: &'static str = K::TYPE;
    type Command = Issued<ReservationCommand>;
    type Event = ReservationEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        issued: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        for event in self.decide(issued.command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: ReservationEvent) {
        match event {
            ReservationEvent::Claimed { holder } => self.holder = Some(holder),
            ReservationEvent::Released { .. } => self.holder = None,
        }
    }
}

/// A boxed future, so [`Reservations`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A unique key an aggregate reserves while deciding a command (tenant-scoped: the
/// tenant is the command's).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReservationKey {
    /// A canonical workflow's link in an environment ([`LinkSlot`]).
    LinkSlot {
        environment: LocalId,
        canonical: LocalId,
    },
    /// A slug in the tenant ([`SlugClaim`]).
    Slug(Slug),
}

impl ReservationKey {
    /// The reservation aggregate's type.
    pub fn kind(&self) -> &'static str {
        match self {
            ReservationKey::LinkSlot { .. } => LinkSlot::TYPE,
            ReservationKey::Slug(_) => SlugClaim::TYPE,
        }
    }
}

impl std::fmt::Display for ReservationKey {
    /// `{environment}:{canonical}` or the slug: the reservation's local id.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReservationKey::LinkSlot {
                environment,
                canonical,
            } => write!(f, "{environment}:{canonical}"),
            ReservationKey::Slug(slug) => f.write_str(slug.as_str()),
        }
    }
}

/// Claims a unique key on behalf of an aggregate deciding a command. Implemented by
/// the service over the event store (tenant-scoped); in memory for tests.
pub trait Reservations: Send + Sync {
    /// `Ok(true)` when `holder` now holds `key` (or already did), `Ok(false)` when
    /// someone else holds it.
    fn claim<'a>(
        &'a self,
        key: &'a ReservationKey,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<bool, DomainError>>;
}

/// In-memory [`Reservations`] for tests and examples.
#[derive(Debug, Default)]
pub struct InMemoryReservations {
    held: Mutex<HashMap<ReservationKey, String>>,
}

impl InMemoryReservations {
    pub fn holder(&self, key: &ReservationKey) -> Option<String> {
        self.held.lock().ok()?.get(key).cloned()
    }
}

impl Reservations for InMemoryReservations {
    fn claim<'a>(
        &'a self,
        key: &'a ReservationKey,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<bool, DomainError>> {
        Box::pin(async move {
            let mut held = self
                .held
                .lock()
                .map_err(|_| DomainError::Unavailable("poisoned".into()))?;
            let current = held
                .entry(key.clone())
                .or_insert_with(|| holder.to_string());
            Ok(current == holder)
        })
    }
}

impl<K: ReservationKind> Lifecycle for Reservation<K> {
    fn check_step(before: &Self, after: &Self, admin_override: bool) -> Result<(), DomainError> {
        // A reservation exists from the start, free.
        transitions::step(Some(before.status()), Some(after.status()), admin_override)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::transitions::table_tests;

    #[test]
    fn claim_release_and_refusal() {
        table_tests::assert_well_formed::<ReservationStatus>();
        table_tests::assert_check_matches_table::<ReservationStatus>();
        let mut r = Reservation::<SlugClaim>::default();
        let claim = |h: &str| ReservationCommand::Claim { holder: h.into() };
        let events = r.decide(claim("a")).unwrap();
        assert_eq!(
            events,
            vec![ReservationEvent::Claimed { holder: "a".into() }]
        );
        events.into_iter().for_each(|e| r.apply(e));
        assert_eq!(
            r.decide(claim("a")).unwrap(),
            vec![],
            "idempotent for the holder"
        );
        assert_eq!(
            r.decide(claim("b")),
            Err(DomainError::validation("slug", "already held by `a`"))
        );
        assert_eq!(
            r.decide(ReservationCommand::Release { holder: "b".into() })
                .unwrap(),
            vec![]
        );
        let released = r
            .decide(ReservationCommand::Release { holder: "a".into() })
            .unwrap();
        released.into_iter().for_each(|e| r.apply(e));
        assert_eq!(r.decide(claim("b")).unwrap().len(), 1);
    }
}
