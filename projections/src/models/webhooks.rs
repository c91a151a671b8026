//! Webhook endpoints: one row per endpoint, as `webhook` events leave it. The row
//! holds the ids of its signing secrets (sealed in the secret store), never a secret.

use aggregates::webhook::{WebhookEvent, WebhookStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Envelope;
use crate::query::{by_id, QueryError};
use crate::read_model_row;
use crate::runtime::ApplyError;
use crate::sql::{select, Dialect, Json, KeyedRow, QueryRows as _, Rows, Tx};
use eventstore::Store;

pub const NAME: &str = "webhooks";

read_model_row! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct WebhookRow in "rm_webhooks" {
        /// `{tenant}:{webhook id}`
        pub id: String,
        pub tenant: String,
        pub webhook_id: String,
        pub url: String,
        pub event_types: Json<Vec<String>>,
        pub aggregate_types: Json<Vec<String>>,
        pub description: Option<String>,
        /// A notification channel's rule (`None`: an endpoint that receives events).
        pub notification: Option<Json<aggregates::webhook::NotificationRule>>,
        /// `active`, `disabled` or `deleted`
        pub status: String,
        pub disabled_reason: Option<String>,
        pub disabled_automatically: bool,
        pub secret_id: String,
        pub previous_secret_id: Option<String>,
        pub previous_valid_until: Option<DateTime<Utc>>,
        /// The endpoint receives the events after this position (its creation).
        pub created_position: i64,
        pub created_by: String,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
    }
}

impl KeyedRow for WebhookRow {
    fn id(&self) -> &str {
        &self.id
    }
}

impl WebhookRow {
    pub fn config(&self) -> aggregates::webhook::WebhookConfig {
        aggregates::webhook::WebhookConfig {
            url: self.url.clone(),
            event_types: self.event_types.0.clone(),
            aggregate_types: self.aggregate_types.0.clone(),
            description: self.description.clone(),
            notification: self.notification.as_ref().map(|n| n.0.clone()),
        }
    }
}

#[derive(Default)]
pub struct Webhooks {
    webhooks: Rows<WebhookRow>,
}

impl Webhooks {
    async fn fold(
        &mut self,
        tx: &mut Tx,
        event: &Envelope,
        e: &WebhookEvent,
    ) -> Result<(), ApplyError> {
        let id = event.stored.aggregate_id.clone();
        let at = event.at();
        let mut row = match (self.webhooks.get(tx, &id).await?, e) {
            (
                None,
                WebhookEvent::Created {
                    config,
                    secret_id,
                    created_by,
                },
            ) => WebhookRow {
                id: id.clone(),
                tenant: event.tenant().to_string(),
                webhook_id: event.local_id().to_string(),
                url: config.url.clone(),
                event_types: Json(config.event_types.clone()),
                aggregate_types: Json(config.aggregate_types.clone()),
                description: config.description.clone(),
                notification: config.notification.clone().map(Json),
                status: WebhookStatus::Active.as_str().to_string(),
                disabled_reason: None,
                disabled_automatically: false,
                secret_id: secret_id.clone(),
                previous_secret_id: None,
                previous_valid_until: None,
                created_position: event.stored.position,
                created_by: created_by.clone(),
                created_at: at,
                updated_at: at,
            },
            (Some(row), _) => row,
            (None, _) => return Err(ApplyError::Event(format!("webhook {id} was never created"))),
        };
        match e {
            WebhookEvent::Created { .. } => {}
            WebhookEvent::Updated { config } => {
                row.url = config.url.clone();
                row.event_types = Json(config.event_types.clone());
                row.aggregate_types = Json(config.aggregate_types.clone());
                row.description = config.description.clone();
                row.notification = config.notification.clone().map(Json);
            }
            WebhookEvent::SecretRotated {
                secret_id,
                previous_secret_id,
                previous_valid_until,
            } => {
                row.secret_id = secret_id.clone();
                row.previous_secret_id = Some(previous_secret_id.clone());
                row.previous_valid_until = Some(*previous_valid_until);
            }
            WebhookEvent::Disabled {
                reason, automatic, ..
            } => {
                row.status = WebhookStatus::Disabled.as_str().to_string();
                row.disabled_reason = Some(reason.clone());
                row.disabled_automatically = *automatic;
            }
            WebhookEvent::Enabled { .. } => {
                row.status = WebhookStatus::Active.as_str().to_string();
                row.disabled_reason = None;
                row.disabled_automatically = false;
            }
            WebhookEvent::Deleted { .. } => {
                row.status = WebhookStatus::Deleted.as_str().to_string();
            }
        }
        row.updated_at = at;
        self.webhooks.put(row);
        Ok(())
    }
}

crate::single_aggregate_projection!(Webhooks, NAME, "rm_webhooks", webhooks, Webhook, "webhook");

/// `tenant`'s endpoints that are not deleted, oldest first.
pub async fn webhooks(store: &Store, tenant: &str) -> Result<Vec<WebhookRow>, QueryError> {
    let mut sql = select::<WebhookRow>(Dialect::of(store));
    let t = sql.arg(tenant);
    sql.push(&format!(
        " WHERE tenant = {t} AND status <> 'deleted' ORDER BY created_position"
    ));
    Ok(sql.fetch(store).await?)
}

/// One endpoint of `tenant` (deleted ones too).
pub async fn webhook(
    store: &Store,
    tenant: &str,
    webhook_id: &str,
) -> Result<Option<WebhookRow>, QueryError> {
    by_id(store, tenant, webhook_id).await
}

/// Every endpoint of every tenant that is not deleted (the sender's list).
pub async fn live(store: &Store) -> Result<Vec<WebhookRow>, QueryError> {
    let mut sql = select::<WebhookRow>(Dialect::of(store));
    sql.push(" WHERE status <> 'deleted' ORDER BY created_position");
    Ok(sql.fetch(store).await?)
}

read_model_row! {
    /// One (endpoint, event) the dispatcher routed: the sender's queue and record.
    /// Not a projection's row: the dispatcher inserts it, the sender updates it.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct DeliveryRow in "webhook_deliveries" {
        /// `{tenant}:{webhook id}:{position}`
        pub id: String,
        pub tenant: String,
        pub webhook_id: String,
        pub position: i64,
        pub event_type: String,
        pub aggregate_type: String,
        /// The `webhook-id` header: the same on every attempt.
        pub message_id: String,
        pub body: String,
        /// `pending`, `failing`, `delivered` or `exhausted`
        pub status: String,
        pub attempts: i64,
        pub next_attempt_at: Option<DateTime<Utc>>,
        pub last_attempt_at: Option<DateTime<Utc>>,
        pub response_status: Option<i64>,
        pub error: Option<String>,
        pub latency_ms: Option<i64>,
        pub attempt_log: Json<Vec<serde_json::Value>>,
        pub created_at: DateTime<Utc>,
        pub delivered_at: Option<DateTime<Utc>>,
        /// The event's transaction (PostgreSQL; 0 on SQLite): the queue goes in the
        /// log's read order, `(tx_id, position)`.
        pub tx_id: i64,
    }
}

impl KeyedRow for DeliveryRow {
    fn id(&self) -> &str {
        &self.id
    }
}

/// The deliveries of one endpoint, newest event first (its log position: the
/// rows one batch of events queued share their `created_at`).
pub async fn deliveries(
    store: &Store,
    tenant: &str,
    webhook_id: &str,
    first: i64,
    after: Option<&str>,
) -> Result<crate::query::Page<DeliveryRow>, QueryError> {
    let limit = crate::query::page_size(first)?;
    let mut sql = select::<DeliveryRow>(Dialect::of(store));
    let (t, w) = (sql.arg(tenant), sql.arg(webhook_id));
    sql.push(&format!(" WHERE tenant = {t} AND webhook_id = {w}"));
    if let Some(after) = after {
        let position: i64 = crate::query::decode_cursor(after)?;
        let p = sql.arg(position);
        sql.push(&format!(" AND position < {p}"));
    }
    let l = sql.arg(limit + 1);
    sql.push(&format!(" ORDER BY position DESC LIMIT {l}"));
    let rows: Vec<DeliveryRow> = sql.fetch(store).await?;
    Ok(crate::query::page(rows, limit, |row| row.position))
}

/// One delivery of `tenant`.
pub async fn delivery(
    store: &Store,
    tenant: &str,
    delivery_id: &str,
) -> Result<Option<DeliveryRow>, QueryError> {
    let mut sql = select::<DeliveryRow>(Dialect::of(store));
    let (id, t) = (sql.arg(delivery_id), sql.arg(tenant));
    sql.push(&format!(" WHERE id = {id} AND tenant = {t}"));
    Ok(sql.fetch(store).await?.into_iter().next())
}

/// The oldest delivery of an endpoint that is not delivered: what it gets next.
pub async fn head(
    store: &Store,
    tenant: &str,
    webhook_id: &str,
) -> Result<Option<DeliveryRow>, QueryError> {
    let mut sql = select::<DeliveryRow>(Dialect::of(store));
    let (t, w) = (sql.arg(tenant), sql.arg(webhook_id));
    sql.push(&format!(
        " WHERE tenant = {t} AND webhook_id = {w} AND status <> 'delivered' \
         ORDER BY position LIMIT 1"
    ));
    Ok(sql.fetch(store).await?.into_iter().next())
}

/// The endpoints (tenant, webhook id) with a delivery due by `now`: what the sender
/// works on (others have nothing to send, or wait for a retry).
pub async fn due_endpoints(
    store: &Store,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String)>, QueryError> {
    let mut sql = eventstore::sql::Sql::new(Dialect::of(store));
    let at = sql.arg(eventstore::sql::fmt_time(now));
    sql.push(&format!(
        "SELECT DISTINCT tenant, webhook_id FROM webhook_deliveries \
         WHERE status IN ('pending', 'failing') \
         AND (next_attempt_at IS NULL OR next_attempt_at <= {at})"
    ));
    Ok(sql.fetch_as(store).await?)
}

/// The next `limit` deliveries of an endpoint that are not delivered, in position
/// order: its queue.
pub async fn queue(
    store: &Store,
    tenant: &str,
    webhook_id: &str,
    limit: i64,
) -> Result<Vec<DeliveryRow>, QueryError> {
    let mut sql = select::<DeliveryRow>(Dialect::of(store));
    let (t, w, l) = (sql.arg(tenant), sql.arg(webhook_id), sql.arg(limit));
    sql.push(&format!(
        " WHERE tenant = {t} AND webhook_id = {w} AND status <> 'delivered' \
         ORDER BY tx_id, position LIMIT {l}"
    ));
    Ok(sql.fetch(store).await?)
}

/// The position of the last event delivered to an endpoint (0: none), for its lag.
pub async fn delivered_through(
    store: &Store,
    tenant: &str,
    webhook_id: &str,
) -> Result<i64, QueryError> {
    let mut sql = eventstore::sql::Sql::new(Dialect::of(store));
    let (t, w) = (sql.arg(tenant), sql.arg(webhook_id));
    sql.push(&format!(
        "SELECT COALESCE(MAX(position), 0) FROM webhook_deliveries \
         WHERE tenant = {t} AND webhook_id = {w} AND status = 'delivered'"
    ));
    let rows: Vec<(i64,)> = sql.fetch_as(store).await?;
    Ok(rows.first().map_or(0, |r| r.0))
}

/// What `/metrics` shows of the endpoints: how many per status, and for each live
/// endpoint with undelivered deliveries, the position of the oldest (the endpoint
/// is behind the log from there).
#[derive(Debug, Clone, Default)]
pub struct EndpointStats {
    /// `(status, endpoints)`
    pub by_status: Vec<(String, i64)>,
    /// `(tenant:webhook, oldest undelivered position)`
    pub oldest_undelivered: Vec<(String, i64)>,
}

pub async fn endpoint_stats(store: &Store) -> Result<EndpointStats, QueryError> {
    let mut sql = eventstore::sql::Sql::new(Dialect::of(store));
    sql.push("SELECT status, COUNT(*) FROM rm_webhooks GROUP BY status");
    let by_status: Vec<(String, i64)> = sql.fetch_as(store).await?;
    let mut sql = eventstore::sql::Sql::new(Dialect::of(store));
    sql.push(
        "SELECT d.tenant, d.webhook_id, MIN(d.position) FROM webhook_deliveries d \
         JOIN rm_webhooks w ON w.tenant = d.tenant AND w.webhook_id = d.webhook_id \
         WHERE d.status <> 'delivered' AND w.status <> 'deleted' \
         GROUP BY d.tenant, d.webhook_id",
    );
    let rows: Vec<(String, String, i64)> = sql.fetch_as(store).await?;
    Ok(EndpointStats {
        by_status,
        oldest_undelivered: rows
            .into_iter()
            .map(|(t, w, p)| (format!("{t}:{w}"), p))
            .collect(),
    })
}
