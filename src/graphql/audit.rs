//! For auditors and integrations: the audit trail, an aggregate's events, its state
//! at a point in time, chain verification, and the live event stream.

use std::sync::Arc;

use async_graphql::connection::Connection;
use async_graphql::{Context, Json, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use projections::history::{self, AsOf};
use projections::models::audit::{self as model, AuditEntry as AuditRow, AuditFilter};

use super::types::connection;
use super::{app, caller, wait_for, ApiError};
use crate::http::feed::{local_id, Filter};
use eventstore::StoredEvent;

#[derive(SimpleObject)]
pub struct AuditEntry {
    pub position: i64,
    pub recorded_at: Option<DateTime<Utc>>,
    /// User id, or `system:<job>`.
    pub actor: String,
    pub actor_role: String,
    pub aggregate_type: String,
    pub aggregate_id: ID,
    pub sequence: i64,
    pub event_type: String,
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    pub reason: Option<String>,
    pub admin_override: bool,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        AuditEntry {
            position: row.position,
            recorded_at: Some(row.recorded_at),
            actor: row.actor,
            actor_role: row.actor_role,
            aggregate_type: row.aggregate_type,
            aggregate_id: ID(row.aggregate_id),
            sequence: row.sequence,
            event_type: row.event_type,
            from_status: row.from_status,
            to_status: row.to_status,
            reason: row.reason,
            admin_override: row.admin_override,
            correlation_id: row.correlation_id,
            causation_id: row.causation_id,
        }
    }
}

/// One stored event, as appended.
pub struct Event(pub Arc<StoredEvent>);

#[Object]
impl Event {
    /// Global position in the log (the SSE `id:`).
    async fn position(&self) -> i64 {
        self.0.position
    }
    async fn aggregate_type(&self) -> &str {
        &self.0.aggregate_type
    }
    /// The aggregate's id within the tenant.
    async fn aggregate_id(&self) -> ID {
        ID(local_id(&self.0.aggregate_id))
    }
    async fn sequence(&self) -> i64 {
        self.0.sequence
    }
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    async fn event_version(&self) -> &str {
        &self.0.event_version
    }
    async fn payload(&self) -> Json<&serde_json::Value> {
        Json(&self.0.payload)
    }
    /// Tenant, actor, role, time, correlation and causation, reason, override.
    async fn metadata(&self) -> Json<&serde_json::Map<String, serde_json::Value>> {
        Json(&self.0.metadata)
    }
    async fn recorded_at(&self) -> DateTime<Utc> {
        self.0.recorded_at
    }
    /// The event's link in its aggregate's hash chain.
    async fn hash(&self) -> Option<&str> {
        self.0.hash()
    }
}

/// An aggregate's state replayed from its events.
#[derive(SimpleObject)]
pub struct AggregateState {
    pub aggregate_type: String,
    pub aggregate_id: ID,
    pub state: Json<serde_json::Value>,
    /// The aggregate's sequence at that point.
    pub sequence: Option<i64>,
    /// Global position of the last event replayed.
    pub position: Option<i64>,
    pub recorded_at: Option<DateTime<Utc>>,
}

#[derive(SimpleObject)]
pub struct BrokenLink {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: ID,
    pub sequence: i64,
    pub reason: String,
}

#[derive(SimpleObject)]
pub struct EventLogVerification {
    pub ok: bool,
    pub checked_events: i64,
    pub first_broken_position: Option<i64>,
    pub broken: Vec<BrokenLink>,
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// Every recorded change of the caller's tenant, in log order (the order of
    /// commits), filtered by aggregate, actor or time (`from` inclusive, `to`
    /// exclusive).
    #[graphql(complexity = "super::list_cost(first, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn audit_trail(
        &self,
        ctx: &Context<'_>,
        aggregate_type: Option<String>,
        aggregate_id: Option<ID>,
        actor: Option<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        first: Option<i32>,
        after: Option<String>,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Connection<String, AuditEntry>> {
        wait_for(ctx, model::NAME, min_position).await?;
        let filter = AuditFilter {
            aggregate_type,
            aggregate_id: aggregate_id.map(|id| id.0),
            actor,
            from,
            to,
        };
        let page = model::audit_trail(
            &app(ctx)?.store,
            caller(ctx)?.tenant(),
            &filter,
            super::types::first(first),
            after.as_deref(),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, AuditEntry::from))
    }

    /// One aggregate's events in sequence order, straight from the log. Replays
    /// history: at most 10 such fields (with `aggregateAt`) per request.
    #[graphql(complexity = "super::guard::Expensive::Replay.complexity() + child_complexity")]
    async fn event_history(
        &self,
        ctx: &Context<'_>,
        aggregate_type: String,
        aggregate_id: ID,
    ) -> async_graphql::Result<Vec<Event>> {
        let events = history::event_history(
            &app(ctx)?.store,
            caller(ctx)?.tenant(),
            &aggregate_type,
            &aggregate_id,
        )
        .await
        .map_err(ApiError::from)?;
        Ok(events.into_iter().map(|e| Event(Arc::new(e))).collect())
    }

    /// An aggregate's state replayed up to a time (`at`) and/or a global position;
    /// null if it had no events by then. At most 10 such fields (with
    /// `eventHistory`) per request.
    #[graphql(complexity = "super::guard::Expensive::Replay.complexity() + child_complexity")]
    async fn aggregate_at(
        &self,
        ctx: &Context<'_>,
        aggregate_type: String,
        aggregate_id: ID,
        at: Option<DateTime<Utc>>,
        position: Option<i64>,
    ) -> async_graphql::Result<Option<AggregateState>> {
        let replayed = history::state_at(
            &app(ctx)?.store,
            caller(ctx)?.tenant(),
            &aggregate_type,
            &aggregate_id,
            AsOf { at, position },
        )
        .await
        .map_err(ApiError::from)?;
        Ok(replayed.map(|r| AggregateState {
            aggregate_type,
            aggregate_id,
            state: Json(r.state),
            sequence: r.sequence,
            position: r.position,
            recorded_at: r.recorded_at,
        }))
    }

    /// Walks the hash chain of every aggregate of the caller's tenant. Walks the
    /// log: one such field per request, one such request per tenant at a time.
    #[graphql(complexity = "super::guard::Expensive::LogWalk.complexity() + child_complexity")]
    async fn verify_event_log(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<EventLogVerification> {
        let report = app(ctx)?
            .store
            .verify_tenant(caller(ctx)?.tenant())
            .await
            .map_err(ApiError::from)?;
        Ok(EventLogVerification {
            ok: report.ok,
            checked_events: report.checked_events as i64,
            first_broken_position: report.first_broken_position,
            broken: report
                .broken
                .into_iter()
                .map(|b| BrokenLink {
                    position: b.position,
                    aggregate_type: b.aggregate_type,
                    aggregate_id: ID(local_id(&b.aggregate_id)),
                    sequence: b.sequence,
                    reason: b.reason,
                })
                .collect(),
        })
    }
}

pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Every event of the caller's tenant in global order, after `fromPosition`
    /// (exclusive; 0 or absent = from the beginning), then live. Reconnecting with
    /// the last position seen misses nothing and repeats nothing.
    async fn events(
        &self,
        ctx: &Context<'_>,
        from_position: Option<i64>,
        aggregate_types: Option<Vec<String>>,
        aggregate_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Event>>> {
        let caller = caller(ctx)?;
        let services = app(ctx)?;
        let from = services
            .feed
            .cursor_after(from_position.unwrap_or(0).max(0))
            .await
            .map_err(ApiError::from)?;
        let filter = Filter {
            tenant: caller.principal.tenant.clone(),
            aggregate_types,
            aggregate_id: aggregate_id.map(|id| id.0),
        };
        let metrics = services.metrics.clone();
        metrics.subscriber(1);
        let guard = SubscriberGuard(metrics);
        Ok(services.feed.subscribe(from, filter).map(move |item| {
            let _ = &guard;
            item.map(Event).map_err(|e| ApiError::from(e).into())
        }))
    }
}

/// Counts open subscriptions for `/metrics`.
struct SubscriberGuard(crate::http::metrics::Metrics);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.subscriber(-1);
    }
}
