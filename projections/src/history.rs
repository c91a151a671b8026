//! An aggregate's history, and its state as of a time or a global position, replayed
//! from its own events (the log is the truth; no read model is involved).

use aggregates::canonical::CanonicalWorkflow;
use aggregates::credentials::CredentialMap;
use aggregates::deployment::Deployment;
use aggregates::environment::Environment;
use aggregates::incident::DriftIncident;
use aggregates::mapping::WorkflowMapping;
use aggregates::pipeline::Pipeline;
use aggregates::policy::DriftPolicy;
use aggregates::promotion::Promotion;
use aggregates::reservation::{LinkSlot, Reservation, SlugClaim};
use aggregates::webhook::Webhook;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use serde::Serialize;
use serde_json::Value;

use crate::query::QueryError;
use eventstore::{Store, StoredEvent};

/// The aggregate types whose state can be replayed.
pub const AGGREGATE_TYPES: &[&str] = &[
    Environment::TYPE,
    CanonicalWorkflow::TYPE,
    WorkflowMapping::TYPE,
    DriftIncident::TYPE,
    Promotion::TYPE,
    Deployment::TYPE,
    Pipeline::TYPE,
    DriftPolicy::TYPE,
    CredentialMap::TYPE,
    Webhook::TYPE,
    <Reservation<LinkSlot> as Aggregate>::TYPE,
    <Reservation<SlugClaim> as Aggregate>::TYPE,
];

fn check_type(aggregate_type: &str) -> Result<(), QueryError> {
    if AGGREGATE_TYPES.contains(&aggregate_type) {
        Ok(())
    } else {
        Err(QueryError::validation(
            "aggregateType",
            format!("unknown aggregate type {aggregate_type:?}; one of {AGGREGATE_TYPES:?}"),
        ))
    }
}

/// The events of `tenant`'s aggregate, in order (empty if it does not exist, or is
/// another tenant's).
pub async fn event_history(
    store: &Store,
    tenant: &str,
    aggregate_type: &str,
    local_id: &str,
) -> Result<Vec<StoredEvent>, QueryError> {
    check_type(aggregate_type)?;
    Ok(store
        .aggregate_events(aggregate_type, &format!("{tenant}:{local_id}"))
        .await?)
}

/// Up to which point to replay.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsOf {
    /// Events recorded at or before this time.
    pub at: Option<DateTime<Utc>>,
    /// Events at or before this global position.
    pub position: Option<i64>,
}

/// An aggregate's state replayed up to a point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayedState {
    pub state: Value,
    /// The last event replayed (`None`: the aggregate did not exist yet).
    pub sequence: Option<i64>,
    pub position: Option<i64>,
    pub recorded_at: Option<DateTime<Utc>>,
}

fn replay<A: Aggregate + Serialize>(events: &[StoredEvent]) -> Result<Value, QueryError> {
    let mut state = A::default();
    for stored in events {
        let event: A::Event = serde_json::from_value(stored.payload.clone()).map_err(|e| {
            QueryError::Store(eventstore::StoreError::Corrupt {
                position: stored.position,
                message: format!("cannot replay: {e}"),
            })
        })?;
        state.apply(event);
    }
    serde_json::to_value(&state).map_err(|e| QueryError::validation("aggregateType", e.to_string()))
}

/// `tenant`'s aggregate as it was at `as_of` (both limits apply when both are given).
/// `None` when it has no events up to there.
pub async fn state_at(
    store: &Store,
    tenant: &str,
    aggregate_type: &str,
    local_id: &str,
    as_of: AsOf,
) -> Result<Option<ReplayedState>, QueryError> {
    let events: Vec<StoredEvent> = event_history(store, tenant, aggregate_type, local_id)
        .await?
        .into_iter()
        .take_while(|e| as_of.position.is_none_or(|p| e.position <= p))
        .take_while(|e| as_of.at.is_none_or(|at| e.recorded_at <= at))
        .collect();
    let Some(last) = events.last() else {
        return Ok(None);
    };
    let state = match aggregate_type {
        t if t == Environment::TYPE => replay::<Environment>(&events)?,
        t if t == CanonicalWorkflow::TYPE => replay::<CanonicalWorkflow>(&events)?,
        t if t == WorkflowMapping::TYPE => replay::<WorkflowMapping>(&events)?,
        t if t == DriftIncident::TYPE => replay::<DriftIncident>(&events)?,
        t if t == Promotion::TYPE => replay::<Promotion>(&events)?,
        t if t == Deployment::TYPE => replay::<Deployment>(&events)?,
        t if t == Pipeline::TYPE => replay::<Pipeline>(&events)?,
        t if t == DriftPolicy::TYPE => replay::<DriftPolicy>(&events)?,
        t if t == CredentialMap::TYPE => replay::<CredentialMap>(&events)?,
        t if t == Webhook::TYPE => replay::<Webhook>(&events)?,
        t if t == <Reservation<LinkSlot> as Aggregate>::TYPE => {
            replay::<Reservation<LinkSlot>>(&events)?
        }
        _ => replay::<Reservation<SlugClaim>>(&events)?,
    };
    Ok(Some(ReplayedState {
        state,
        sequence: Some(last.sequence),
        position: Some(last.position),
        recorded_at: Some(last.recorded_at),
    }))
}
