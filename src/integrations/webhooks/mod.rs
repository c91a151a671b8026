//! Webhooks (issue 15): signed HTTP deliveries of a tenant's events to endpoints it
//! registers, at least once, in log order per endpoint, never lost.
//!
//! - **Endpoints** are `webhook` aggregates ([`aggregates::webhook`]); their signing
//!   secrets are sealed in the secret store (kind `webhook_secret`) and shown once,
//!   when created or rotated.
//! - **Routing** is a reactor on the reactor runtime ([`Dispatcher`],
//!   `webhook_dispatcher`, checkpointed, once across replicas): for every event it
//!   queues one delivery row per active endpoint of the event's tenant whose filters
//!   match and that existed before the event (`webhook_deliveries`, id
//!   `{tenant}:{webhook}:{position}`, an insert that a replay finds done), and
//!   writes a batch's rows in one statement when the runtime flushes it (a batched
//!   reactor: its checkpoint never passes a row not written yet). It learns
//!   the endpoints from the `webhook` events it reads in log order, so an endpoint
//!   created at position P gets exactly the events after P.
//! - **Sending** ([`Sender`]) runs in the process that holds the `webhook_sender`
//!   lock. Each endpoint is a queue in log order: the oldest undelivered
//!   delivery goes first, and nothing after it goes until it is delivered, so an
//!   endpoint sees its events in log order and a failing endpoint delays only
//!   itself. An attempt is a POST with the Standard Webhooks headers
//!   (`webhook-id` = the delivery's message id, the same on every attempt;
//!   `webhook-timestamp`; `webhook-signature` with the current secret and, for 24 h
//!   after a rotation, the previous one). 2xx delivers it; 410 disables the
//!   endpoint; anything else (a timeout, a refused connection, a redirect, which is
//!   never followed) is retried on the schedule (`Retry-After` when the receiver
//!   sends one), and a delivery that fails the whole schedule disables the endpoint.
//!   A disabled endpoint keeps its queue: enabling it resumes where it stopped.
//!   A process killed mid-delivery leaves the delivery undelivered: the next sender
//!   sends it again with the same `webhook-id`.

pub mod signing;
pub mod ssrf;

use super::notifications;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aggregates::kernel::ids::{aggregate_id, LocalId, TenantId};
use aggregates::webhook::{Webhook, WebhookCommand, WebhookConfig, WebhookStatus};
use chrono::Utc;
use futures::future::BoxFuture;
use projections::models::webhooks::{self as model, DeliveryRow, WebhookRow};
use serde_json::json;

use crate::command::bus::{CommandContext, CommandError, Committed};
use crate::reactors::{ReactError, Reaction, Reactor, ReactorOptions, ReactorRuntime, Trigger};
use crate::storage::secrets::{Secret, SecretKind};
use crate::AppContext;
use eventstore::sql::{Dialect, Sql};
use eventstore::StoredEvent;

/// The dispatcher's reactor name (its checkpoint row and advisory lock).
pub const DISPATCHER: &str = "webhook_dispatcher";
/// The sender's lock.
const SENDER_LOCK: &str = "workflowops.webhook_sender";
/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP: chrono::Duration = chrono::Duration::hours(24);
/// Most bytes of a receiver's answer kept (for the delivery's error).
const ANSWER_BYTES: usize = 1024;
/// Deliveries of one endpoint read at a time.
const QUEUE_BATCH: i64 = 50;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Every event type an endpoint may ask for.
pub const EVENT_TYPES: &[&str] = &[
    "canonical.created",
    "canonical.deleted",
    "canonical.git_version_recorded",
    "canonical.renamed",
    "credential_map.removed",
    "credential_map.set",
    "deployment.cancelled",
    "deployment.created",
    "deployment.finished",
    "deployment.gates_checked",
    "deployment.git_committed",
    "deployment.recovery_requested",
    "deployment.rollback_finished",
    "deployment.rollback_started",
    "deployment.snapshot_taken",
    "deployment.started",
    "deployment.verified",
    "deployment.workflow_restored",
    "deployment.workflow_result_recorded",
    "drift_policy.cleared",
    "drift_policy.set",
    "environment.credentials_observed",
    "environment.deactivated",
    "environment.drift_check_failed",
    "environment.drift_checked",
    "environment.incident_slot_released",
    "environment.incident_slot_reserved",
    "environment.pinned",
    "environment.promotion_slot_released",
    "environment.promotion_slot_reserved",
    "environment.reactivated",
    "environment.registered",
    "environment.sync_failed",
    "environment.sync_recorded",
    "environment.unpinned",
    "environment.updated",
    "incident.acknowledged",
    "incident.approval_granted",
    "incident.approval_rejected",
    "incident.approval_requested",
    "incident.closed",
    "incident.detected",
    "incident.drift_updated",
    "incident.payload_purged",
    "incident.reconciled",
    "incident.sla_escalated",
    "incident.stabilized",
    "incident.ttl_extended",
    "mapping.content_observed",
    "mapping.deleted",
    "mapping.disappeared",
    "mapping.discovered",
    "mapping.git_hash_observed",
    "mapping.ignored",
    "mapping.linked",
    "mapping.reappeared",
    "mapping.unignored",
    "mapping.unlinked",
    "pipeline.created",
    "pipeline.deactivated",
    "pipeline.reactivated",
    "pipeline.updated",
    "promotion.approved",
    "promotion.cancelled",
    "promotion.completed",
    "promotion.created",
    "promotion.failed",
    "promotion.gates_evaluated",
    "promotion.rejected",
    "promotion.rolled_back",
    "promotion.started",
    "reservation.claimed",
    "reservation.released",
    "webhook.created",
    "webhook.deleted",
    "webhook.disabled",
    "webhook.enabled",
    "webhook.secret_rotated",
    "webhook.updated",
];

/// Every aggregate type an endpoint may ask for.
pub const AGGREGATE_TYPES: &[&str] = &[
    "canonical_workflow",
    "credential_map",
    "deployment",
    "drift_policy",
    "environment",
    "incident",
    "link_slot",
    "pipeline",
    "promotion",
    "slug",
    "webhook",
    "workflow_mapping",
];

/// How deliveries are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The delay before each attempt (the first: after the event). A delivery that
    /// fails every attempt disables its endpoint.
    pub schedule: Vec<Duration>,
    /// One attempt's limit (connect, send, answer).
    pub timeout: Duration,
    pub allow: ssrf::Allow,
    /// The service's address as people reach it: notification links start with it.
    pub public_url: String,
}

/// Svix's schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub fn default_schedule() -> Vec<Duration> {
    [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            schedule: default_schedule(),
            timeout: Duration::from_secs(15),
            allow: ssrf::Allow::default(),
            public_url: "http://127.0.0.1:8080".to_string(),
        }
    }
}

/// Parses `0s,5s,5m,…` (humantime durations, comma-separated).
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    let schedule: Vec<Duration> = text
        .split(',')
        .map(|part| humantime::parse_duration(part.trim()).map_err(|e| format!("{part}: {e}")))
        .collect::<Result<_, _>>()?;
    if schedule.is_empty() || schedule.len() > 20 {
        return Err("between 1 and 20 attempts".into());
    }
    Ok(schedule)
}

fn validation(field: &str, message: impl Into<String>) -> CommandError {
    aggregates::kernel::error::DomainError::validation(field, message).into()
}

/// Checks a configuration's URL (scheme, SSRF) and types (known ones only).
pub fn check_config(config: &WebhookConfig, allow: ssrf::Allow) -> Result<(), CommandError> {
    ssrf::check_url(&config.url, allow).map_err(|reason| validation("url", reason))?;
    for t in &config.event_types {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(validation(
                "event_types",
                format!("unknown event type {t:?}"),
            ));
        }
    }
    for t in &config.aggregate_types {
        if !AGGREGATE_TYPES.contains(&t.as_str()) {
            return Err(validation(
                "aggregate_types",
                format!("unknown aggregate type {t:?}"),
            ));
        }
    }
    config.validate()?;
    Ok(())
}

/// `createWebhook`: stores a new signing secret, records the endpoint, and returns
/// the secret (shown this once).
pub async fn create(
    app: &AppContext,
    ctx: &CommandContext,
    webhook_id: &LocalId,
    config: WebhookConfig,
) -> Result<(Committed<Webhook>, String), CommandError> {
    crate::command::bus::authorize(ctx, &WebhookCommand::Enable)?;
    check_config(&config, app.webhooks.allow)?;
    register(app, ctx, webhook_id, config).await
}

/// A notification channel as a client describes it (the URL in clear).
#[derive(Debug, Clone)]
pub struct Channel {
    pub url: String,
    pub format: aggregates::webhook::ChannelFormat,
    pub kinds: Vec<aggregates::webhook::NotificationKind>,
    pub environment_id: Option<String>,
    pub severities: Vec<aggregates::incident::Severity>,
    pub description: Option<String>,
}

/// `createNotificationRule`: seals the channel's URL, then records the channel as an
/// endpoint with its rule; returns the signing secret (a generic JSON receiver may
/// verify the signatures; Slack ignores them).
pub async fn create_channel(
    app: &AppContext,
    ctx: &CommandContext,
    webhook_id: &LocalId,
    channel: Channel,
) -> Result<(Committed<Webhook>, String), CommandError> {
    crate::command::bus::authorize(ctx, &WebhookCommand::Enable)?;
    let config = seal_channel(app, ctx, channel, None).await?;
    let sealed = config
        .notification
        .as_ref()
        .map(|n| n.url_secret_id.clone());
    let created = register(app, ctx, webhook_id, config).await;
    if let (Err(_), Some(sealed)) = (&created, sealed) {
        forget(app, &ctx.tenant, &sealed).await;
    }
    created
}

/// `updateNotificationRule`: a new rule; a new URL when one is given (the old one's
/// sealed copy is deleted), else the current one.
pub async fn update_channel(
    app: &AppContext,
    ctx: &CommandContext,
    webhook_id: &LocalId,
    channel: Channel,
    keep_url: bool,
) -> Result<Committed<Webhook>, CommandError> {
    crate::command::bus::authorize(ctx, &WebhookCommand::Enable)?;
    let current = current(app, ctx, webhook_id).await?;
    let not_found = || -> CommandError {
        aggregates::kernel::error::DomainError::NotFound {
            kind: "notification rule",
            id: webhook_id.to_string(),
        }
        .into()
    };
    let Some(rule) = current.config.notification.as_ref() else {
        return Err(not_found());
    };
    if !current.created || current.status == WebhookStatus::Deleted {
        return Err(not_found());
    }
    let kept = keep_url.then(|| (current.config.url.clone(), rule.url_secret_id.clone()));
    let config = seal_channel(app, ctx, channel, kept).await?;
    let new_secret = config
        .notification
        .as_ref()
        .map(|n| n.url_secret_id.clone())
        .filter(|id| *id != rule.url_secret_id);
    let updated = app
        .domain
        .webhook(ctx, webhook_id, WebhookCommand::Update { config })
        .await;
    match (&updated, new_secret) {
        (Ok(_), Some(_)) => forget(app, &ctx.tenant, &rule.url_secret_id).await,
        (Err(_), Some(new)) => forget(app, &ctx.tenant, &new).await,
        _ => {}
    }
    updated
}

/// Checks a channel and turns it into an endpoint configuration: the URL sealed
/// (or `kept`: the current display URL and sealed id), only its origin in the
/// configuration.
async fn seal_channel(
    app: &AppContext,
    ctx: &CommandContext,
    channel: Channel,
    kept: Option<(String, String)>,
) -> Result<WebhookConfig, CommandError> {
    if let Some(env) = &channel.environment_id {
        let id = LocalId::parse(env.as_str())
            .map_err(|_| validation("environment_id", format!("unknown environment {env:?}")))?;
        let state = app
            .domain
            .bus()
            .load::<aggregates::environment::Environment>(&aggregate_id(&ctx.tenant, &[&id]))
            .await?
            .into_state();
        if !state.registered {
            return Err(validation(
                "environment_id",
                format!("unknown environment {env:?}"),
            ));
        }
    }
    let mut rule = aggregates::webhook::NotificationRule {
        format: channel.format,
        kinds: channel.kinds,
        environment_id: channel.environment_id,
        severities: channel.severities,
        url_secret_id: String::new(),
    };
    rule.kinds.sort();
    rule.kinds.dedup();
    rule.severities.sort();
    rule.severities.dedup();
    let mut config = WebhookConfig {
        url: String::new(),
        event_types: vec![],
        aggregate_types: vec![],
        description: channel.description,
        notification: None,
    };
    let url = channel.url.trim();
    match kept {
        Some((display, sealed)) if url.is_empty() => {
            config.url = display;
            rule.url_secret_id = sealed;
            config.notification = Some(rule);
            check_config(&config, app.webhooks.allow)?;
        }
        _ => {
            let parsed = ssrf::check_url(url, app.webhooks.allow)
                .map_err(|reason| validation("url", reason))?;
            config.url = format!(
                "{}://{}/…",
                parsed.scheme(),
                match parsed.port() {
                    Some(port) => format!("{}:{port}", parsed.host_str().unwrap_or_default()),
                    None => parsed.host_str().unwrap_or_default().to_string(),
                }
            );
            rule.url_secret_id = "pending".into();
            config.notification = Some(rule);
            check_config(&config, app.webhooks.allow)?;
            if url.chars().count() > aggregates::webhook::MAX_URL {
                return Err(validation("url", "too long"));
            }
            let sealed = app
                .secrets
                .put(&ctx.tenant, SecretKind::ChannelUrl, &Secret::new(url))
                .await
                .map_err(|e| {
                    aggregates::kernel::error::DomainError::Unavailable(format!(
                        "the channel's URL cannot be stored: {e}"
                    ))
                })?;
            if let Some(rule) = config.notification.as_mut() {
                rule.url_secret_id = sealed.to_string();
            }
        }
    }
    Ok(config)
}

async fn forget(app: &AppContext, tenant: &TenantId, secret_id: &str) {
    if let Ok(id) = LocalId::parse(secret_id) {
        let _ = app.secrets.delete(tenant, &id).await;
    }
}

/// Records a new endpoint with a new signing secret (deleted again if the endpoint
/// is refused: nothing half-created).
async fn register(
    app: &AppContext,
    ctx: &CommandContext,
    webhook_id: &LocalId,
    config: WebhookConfig,
) -> Result<(Committed<Webhook>, String), CommandError> {
    let existing = current(app, ctx, webhook_id).await?;
    if existing.created {
        return Err(validation(
            "id",
            format!("webhook {webhook_id} already exists"),
        ));
    }
    let secret = signing::new_secret();
    let secret_id = store_secret(app, &ctx.tenant, &secret).await?;
    let command = WebhookCommand::Create {
        config,
        secret_id: secret_id.to_string(),
    };
    match app.domain.webhook(ctx, webhook_id, command).await {
        Ok(committed) => Ok((committed, secret)),
        Err(error) => {
            // nothing half-created: the secret goes with the refused endpoint
            let _ = app.secrets.delete(&ctx.tenant, &secret_id).await;
            Err(error)
        }
    }
}

async fn store_secret(
    app: &AppContext,
    tenant: &TenantId,
    secret: &str,
) -> Result<LocalId, CommandError> {
    app.secrets
        .put(tenant, SecretKind::WebhookSecret, &Secret::new(secret))
        .await
        .map_err(|e| {
            aggregates::kernel::error::DomainError::Unavailable(format!(
                "the secret cannot be stored: {e}"
            ))
            .into()
        })
}

/// The endpoint as its events leave it (not created: `created` is false).
async fn current(
    app: &AppContext,
    ctx: &CommandContext,
    webhook_id: &LocalId,
) -> Result<Webhook, CommandError> {
    Ok(app
        .domain
        .bus()
        .load::<Webhook>(&aggregate_id(&ctx.tenant, &[webhook_id]))
        .await?
        .into_state())
}

/// `updateWebhook`: a new configuration (checked as on creation).
pub async fn update(
    app: &AppContext,
    ctx: &CommandContext,
    webhook_id: &LocalId,
    config: WebhookConfig,
) -> Result<Committed<Webhook>, CommandError> {
    crate::command::bus::authorize(ctx, &WebhookCommand::Enable)?;
    check_config(&config, app.webhooks.allow)?;
    let current = current(app, ctx, webhook_id).await?;
    if current.config.notification.is_some() {
        return Err(validation(
            "id",
            format!("{webhook_id} is a notification rule: updateNotificationRule changes it"),
        ));
    }
    app.domain
        .webhook(ctx, webhook_id, WebhookCommand::Update { config })
        .await
}

/// `rotateWebhookSecret`: a new secret; the previous one keeps signing for 24 h.
pub async fn rotate(
    app: &AppContext,
    ctx: &CommandContext,
    webhook_id: &LocalId,
) -> Result<(Committed<Webhook>, String), CommandError> {
    crate::command::bus::authorize(ctx, &WebhookCommand::Enable)?;
    let current = current(app, ctx, webhook_id).await?;
    if !current.created || current.status == WebhookStatus::Deleted {
        return Err(aggregates::kernel::error::DomainError::NotFound {
            kind: "webhook",
            id: webhook_id.to_string(),
        }
        .into());
    }
    let secret = signing::new_secret();
    let secret_id = store_secret(app, &ctx.tenant, &secret).await?;
    let command = WebhookCommand::RotateSecret {
        secret_id: secret_id.to_string(),
        previous_valid_until: app.domain.bus().clock().now() + ROTATION_OVERLAP,
    };
    match app.domain.webhook(ctx, webhook_id, command).await {
        Ok(committed) => Ok((committed, secret)),
        Err(error) => {
            let _ = app.secrets.delete(&ctx.tenant, &secret_id).await;
            Err(error)
        }
    }
}

/// `deleteWebhook`: nothing more is delivered to the endpoint, and its sealed
/// secrets (signing secrets, a channel's URL) are deleted from the secret store.
pub async fn delete(
    app: &AppContext,
    ctx: &CommandContext,
    webhook_id: &LocalId,
) -> Result<Committed<Webhook>, CommandError> {
    let committed = app
        .domain
        .webhook(ctx, webhook_id, WebhookCommand::Delete)
        .await?;
    let state = &committed.state;
    let mut sealed = vec![state.secret_id.clone()];
    sealed.extend(state.previous_secret.as_ref().map(|(id, _)| id.clone()));
    sealed.extend(
        state
            .config
            .notification
            .as_ref()
            .map(|n| n.url_secret_id.clone()),
    );
    for id in sealed {
        forget(app, &ctx.tenant, &id).await;
    }
    Ok(committed)
}

/// Enabling resumes the endpoint's queue from where it stopped: deliveries that
/// exhausted the schedule start it again.
pub async fn enable(
    app: &AppContext,
    ctx: &CommandContext,
    webhook_id: &LocalId,
) -> Result<Committed<Webhook>, CommandError> {
    let committed = app
        .domain
        .webhook(ctx, webhook_id, WebhookCommand::Enable)
        .await?;
    let mut sql = Sql::new(Dialect::of(&app.store));
    let (t, w) = (sql.arg(ctx.tenant.as_str()), sql.arg(webhook_id.as_str()));
    sql.push(&format!(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = NULL \
         WHERE tenant = {t} AND webhook_id = {w} AND status = 'exhausted'"
    ));
    sql.execute(&app.store)
        .await
        .map_err(|e| CommandError::Store(eventstore::StoreError::from(e)))?;
    app.webhook_wake.notify_one();
    Ok(committed)
}

/// `redeliver`: sends a delivery again (same `webhook-id`), as the next of its
/// endpoint's queue once the deliveries before it are through.
pub async fn redeliver(
    app: &AppContext,
    ctx: &CommandContext,
    delivery_id: &str,
) -> Result<DeliveryRow, CommandError> {
    crate::command::bus::authorize(ctx, &WebhookCommand::Enable)?;
    let not_found = || -> CommandError {
        aggregates::kernel::error::DomainError::NotFound {
            kind: "delivery",
            id: delivery_id.to_string(),
        }
        .into()
    };
    let row = model::delivery(&app.store, ctx.tenant.as_str(), delivery_id)
        .await
        .map_err(|e| aggregates::kernel::error::DomainError::Unavailable(e.to_string()))?
        .ok_or_else(not_found)?;
    let mut sql = Sql::new(Dialect::of(&app.store));
    let (id, t) = (sql.arg(row.id.as_str()), sql.arg(ctx.tenant.as_str()));
    sql.push(&format!(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = NULL, \
         delivered_at = NULL WHERE id = {id} AND tenant = {t}"
    ));
    sql.execute(&app.store)
        .await
        .map_err(|e| CommandError::Store(eventstore::StoreError::from(e)))?;
    app.webhook_wake.notify_one();
    model::delivery(&app.store, ctx.tenant.as_str(), delivery_id)
        .await
        .map_err(|e| aggregates::kernel::error::DomainError::Unavailable(e.to_string()).into())
        .and_then(|row| row.ok_or_else(not_found))
}

// ---------------------------------------------------------------------------------
// Routing

/// An endpoint as the dispatcher knows it.
#[derive(Debug, Clone)]
struct Route {
    webhook_id: String,
    config: WebhookConfig,
    active: bool,
    created_position: i64,
}

/// The reactor that routes events to endpoints (see the module docs).
pub struct Dispatcher {
    app: AppContext,
    /// tenant → endpoints (`None`: not loaded yet)
    routes: tokio::sync::Mutex<Option<HashMap<String, Vec<Route>>>>,
    /// The routes as of the last flush: a failed flush replays its batch from
    /// them, not from what the batch's own `webhook` events taught since.
    flushed_routes: tokio::sync::Mutex<Option<HashMap<String, Vec<Route>>>>,
    /// The delivery rows of the batch's events, inserted at the flush.
    queued: Mutex<Vec<Delivery>>,
}

/// A delivery row to insert.
struct Delivery {
    id: String,
    tenant: String,
    webhook_id: String,
    position: i64,
    event_type: String,
    aggregate_type: String,
    body: Arc<String>,
    tx_id: i64,
}

/// Rows per INSERT (10 parameters each, well under SQLite's and PostgreSQL's limits).
const INSERT_ROWS: usize = 1000;

impl Dispatcher {
    pub fn new(app: AppContext) -> Dispatcher {
        Dispatcher {
            app,
            routes: tokio::sync::Mutex::new(None),
            flushed_routes: tokio::sync::Mutex::new(None),
            queued: Mutex::new(vec![]),
        }
    }

    /// Inserts the queued rows, one statement per `INSERT_ROWS` (an insert a
    /// replay finds done is a no-op).
    async fn insert(&self, rows: &[Delivery]) -> Result<(), ReactError> {
        let now = eventstore::sql::fmt_time(Utc::now());
        for chunk in rows.chunks(INSERT_ROWS) {
            let mut sql = Sql::new(Dialect::of(&self.app.store));
            let mut values = Vec::with_capacity(chunk.len());
            for row in chunk {
                let args = [
                    sql.arg(row.id.as_str()),
                    sql.arg(row.tenant.as_str()),
                    sql.arg(row.webhook_id.as_str()),
                    sql.arg(row.position),
                    sql.arg(row.event_type.as_str()),
                    sql.arg(row.aggregate_type.as_str()),
                    sql.arg(format!("msg_{}", row.position)),
                    sql.arg(row.body.as_str()),
                    sql.arg(now.as_str()),
                    sql.arg(row.tx_id),
                ];
                values.push(format!("({}, 'pending')", args.join(", ")));
            }
            sql.push(&format!(
                "INSERT INTO webhook_deliveries (id, tenant, webhook_id, position, event_type, \
                 aggregate_type, message_id, body, created_at, tx_id, status) VALUES {} \
                 ON CONFLICT (id) DO NOTHING",
                values.join(", ")
            ));
            sql.execute(&self.app.store)
                .await
                .map_err(|e| ReactError::Transient(format!("queueing deliveries: {e}")))?;
        }
        Ok(())
    }

    /// Every endpoint, from the read model once it has caught up (at start).
    async fn load(&self) -> Result<HashMap<String, Vec<Route>>, ReactError> {
        self.app
            .catch_up(&[model::NAME])
            .await
            .map_err(|e| ReactError::Transient(e.to_string()))?;
        let rows = model::live(&self.app.store)
            .await
            .map_err(|e| ReactError::Transient(e.to_string()))?;
        let mut routes: HashMap<String, Vec<Route>> = HashMap::new();
        for row in rows {
            routes
                .entry(row.tenant.clone())
                .or_default()
                .push(route(&row));
        }
        Ok(routes)
    }

    /// A `webhook` event: the endpoint as the event leaves it (not as it is now:
    /// a dispatcher that lags must route the events before a later disable).
    fn learn(
        &self,
        routes: &mut HashMap<String, Vec<Route>>,
        event: &StoredEvent,
    ) -> Result<(), ReactError> {
        use aggregates::webhook::WebhookEvent;
        let id = aggregates::kernel::ids::AggregateId::parse(event.aggregate_id.as_str())?;
        let webhook_id = id.local().to_string();
        let decoded: WebhookEvent = serde_json::from_value(event.payload.clone())
            .map_err(|e| ReactError::Permanent(format!("undecodable {}: {e}", event.event_type)))?;
        let tenant = routes.entry(event.tenant().to_string()).or_default();
        let known = tenant.iter().position(|r| r.webhook_id == webhook_id);
        match (decoded, known) {
            (WebhookEvent::Created { config, .. }, None) => tenant.push(Route {
                webhook_id,
                config,
                active: true,
                created_position: event.position,
            }),
            // loaded from the read model already (created before it was loaded)
            (WebhookEvent::Created { .. }, Some(_)) => {}
            (WebhookEvent::Updated { config }, Some(i)) => tenant[i].config = config,
            (WebhookEvent::Disabled { .. }, Some(i)) => tenant[i].active = false,
            (WebhookEvent::Enabled { .. }, Some(i)) => tenant[i].active = true,
            (WebhookEvent::Deleted { .. }, Some(i)) => {
                tenant.remove(i);
            }
            // a rotation changes no route; an endpoint deleted before the load
            _ => {}
        }
        Ok(())
    }
}

fn route(row: &WebhookRow) -> Route {
    Route {
        webhook_id: row.webhook_id.clone(),
        config: row.config(),
        active: row.status == WebhookStatus::Active.as_str(),
        created_position: row.created_position,
    }
}

impl Reactor for Dispatcher {
    fn name(&self) -> &'static str {
        DISPATCHER
    }

    fn wants(&self, _event: &StoredEvent) -> bool {
        true
    }

    fn react<'a>(
        &'a self,
        trigger: &'a Trigger<'a>,
    ) -> BoxFuture<'a, Result<Reaction, ReactError>> {
        Box::pin(async move {
            let event = trigger.event;
            let mut guard = self.routes.lock().await;
            if guard.is_none() {
                *guard = Some(self.load().await?);
            }
            let routes = guard.as_mut().expect("loaded above");
            if event.aggregate_type == "webhook" {
                self.learn(routes, event)?;
            }
            let live = |r: &&Route| r.active && r.created_position < event.position;
            let tenant_routes = routes.get(event.tenant()).map(Vec::as_slice).unwrap_or(&[]);
            // (route, event type recorded, body)
            let mut targets: Vec<(&Route, String, Arc<String>)> = vec![];
            let wanted: Vec<&Route> = tenant_routes
                .iter()
                .filter(live)
                .filter(|r| r.config.matches(&event.event_type, &event.aggregate_type))
                .collect();
            if !wanted.is_empty() {
                let raw = Arc::new(
                    json!({
                        "type": event.event_type,
                        "tenant": event.tenant(),
                        "event": crate::http::feed::event_json(event),
                    })
                    .to_string(),
                );
                for route in wanted {
                    targets.push((route, event.event_type.clone(), raw.clone()));
                }
            }
            let channels: Vec<&Route> = tenant_routes
                .iter()
                .filter(live)
                .filter(|r| r.config.notification.is_some())
                .collect();
            if !channels.is_empty() {
                // A notification that cannot be made (an event it cannot read) is
                // logged and left out: it must not stop every endpoint's routing.
                let derived = match notifications::derive(&self.app, event).await {
                    Err(error) if error.is_permanent() => {
                        tracing::error!(position = event.position, %error,
                            "no notification for this event");
                        None
                    }
                    other => other?,
                };
                if let Some(n) = derived {
                    for route in channels {
                        let rule = route.config.notification.as_ref().expect("filtered above");
                        if rule.matches(n.kind, n.environment_id.as_deref(), n.severity) {
                            let body = notifications::render(&n, rule.format);
                            targets.push((
                                route,
                                format!("notification.{}", n.kind.as_str()),
                                Arc::new(body),
                            ));
                        }
                    }
                }
            }
            if targets.is_empty() {
                return Ok(Reaction::Skipped("no endpoint wants it".into()));
            }
            // queued for the flush at the end of the batch: one write for all
            let mut queued = self.queued.lock().expect("not poisoned");
            for (route, event_type, body) in targets {
                queued.push(Delivery {
                    id: format!("{}:{}:{}", event.tenant(), route.webhook_id, event.position),
                    tenant: event.tenant().to_string(),
                    webhook_id: route.webhook_id.clone(),
                    position: event.position,
                    event_type,
                    aggregate_type: event.aggregate_type.clone(),
                    body,
                    tx_id: event.tx_id.unwrap_or(0),
                });
            }
            Ok(Reaction::Done)
        })
    }

    fn batched(&self) -> bool {
        true
    }

    /// Inserts the batch's rows in one statement and wakes the sender; on failure
    /// the routes go back to where the last flush left them (the runtime replays
    /// the batch, whose `webhook` events teach them again in order).
    fn flush(&self) -> BoxFuture<'_, Result<(), ReactError>> {
        Box::pin(async move {
            let rows = std::mem::take(&mut *self.queued.lock().expect("not poisoned"));
            let mut routes = self.routes.lock().await;
            match self.insert(&rows).await {
                Ok(()) => {
                    *self.flushed_routes.lock().await = routes.clone();
                    if !rows.is_empty() {
                        self.app.webhook_wake.notify_one();
                    }
                    Ok(())
                }
                Err(error) => {
                    *routes = self.flushed_routes.lock().await.clone();
                    Err(error)
                }
            }
        })
    }
}

// ---------------------------------------------------------------------------------
// Sending

/// The outcome of one attempt.
#[derive(Debug)]
struct Attempt {
    status: Option<u16>,
    latency: Duration,
    error: Option<String>,
    retry_after: Option<Duration>,
}

impl Attempt {
    fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Sends the queued deliveries (see the module docs).
#[derive(Clone)]
pub struct Sender {
    app: AppContext,
    http: reqwest::Client,
    /// Endpoints with a task working their queue, and whether a pass found work
    /// for one while its task ran (the task then asks for another pass when it
    /// ends, so nothing queued meanwhile waits for the next tick).
    busy: Arc<Mutex<HashMap<String, bool>>>,
}

impl Sender {
    pub fn new(app: AppContext) -> Sender {
        let settings = app.webhooks.clone();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .dns_resolver(ssrf::GuardedResolver::arc(settings.allow))
            .user_agent(concat!("workflowops-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS backend is compiled in");
        Sender {
            app,
            http,
            busy: Default::default(),
        }
    }

    /// Runs until aborted: one pass over the endpoints whenever the dispatcher
    /// queues something, and every 500 ms (for retries that came due).
    pub async fn run(self) {
        let mut lock = eventstore::locks::LockSession::new(&self.app.store, Duration::from_secs(5));
        let mut held = false;
        loop {
            if lock.check().await {
                held = false;
            }
            if !held && lock.try_now() {
                held = lock.try_lock(SENDER_LOCK).await.unwrap_or(false);
            }
            if held {
                if let Err(error) = self.pass().await {
                    tracing::warn!(%error, "webhook sender: a pass failed; retrying");
                }
            }
            let _ =
                tokio::time::timeout(Duration::from_millis(500), self.app.webhook_wake.notified())
                    .await;
        }
    }

    /// Starts a task for every active endpoint with a delivery due and no task yet.
    async fn pass(&self) -> Result<(), projections::query::QueryError> {
        let due = model::due_endpoints(&self.app.store, Utc::now()).await?;
        if due.is_empty() {
            return Ok(());
        }
        let due: std::collections::HashSet<(String, String)> = due.into_iter().collect();
        for endpoint in model::live(&self.app.store).await? {
            if endpoint.status != WebhookStatus::Active.as_str()
                || !due.contains(&(endpoint.tenant.clone(), endpoint.webhook_id.clone()))
            {
                continue;
            }
            let key = endpoint.id.clone();
            {
                let mut busy = self.busy.lock().expect("not poisoned");
                if let Some(again) = busy.get_mut(&key) {
                    *again = true;
                    continue;
                }
                busy.insert(key.clone(), false);
            }
            let sender = self.clone();
            tokio::spawn(async move {
                if let Err(error) = sender.work(&endpoint).await {
                    tracing::warn!(webhook = %endpoint.id, %error, "webhook sender: the queue stopped");
                }
                let again = sender.busy.lock().expect("not poisoned").remove(&key);
                if again == Some(true) {
                    // something was queued while this task ran: another pass now
                    sender.app.webhook_wake.notify_one();
                }
            });
        }
        Ok(())
    }

    /// Delivers one endpoint's due deliveries in order, a batch of its queue at a
    /// time; returns when its head is not due yet (or it has none, or a delivery
    /// failed and waits for its next attempt). The endpoint as `pass` read it, and
    /// its keys, serve the whole run: a run is short, and a rotation, an update or a
    /// disable is seen by the next.
    async fn work(&self, endpoint: &WebhookRow) -> Result<(), String> {
        let store = &self.app.store;
        let keys = match self.keys(endpoint).await {
            Ok(keys) => self.target(endpoint).await.map(|url| (keys, url)),
            Err(error) => Err(error),
        };
        loop {
            let queue = model::queue(store, &endpoint.tenant, &endpoint.webhook_id, QUEUE_BATCH)
                .await
                .map_err(|e| e.to_string())?;
            if queue.is_empty() {
                return Ok(());
            }
            for delivery in &queue {
                if delivery.status == "exhausted"
                    || delivery.next_attempt_at.is_some_and(|at| at > Utc::now())
                {
                    return Ok(());
                }
                let attempt = match &keys {
                    Ok((keys, url)) => self.attempt(url, delivery, keys).await,
                    Err(error) => Attempt {
                        status: None,
                        latency: Duration::ZERO,
                        error: Some(error.clone()),
                        retry_after: None,
                    },
                };
                let delivered = attempt.delivered();
                self.record(endpoint, delivery, attempt).await?;
                if !delivered {
                    return Ok(());
                }
            }
        }
    }

    /// The keys that sign now: the current secret, and the previous one during its
    /// overlap.
    async fn keys(&self, endpoint: &WebhookRow) -> Result<Vec<Vec<u8>>, String> {
        let tenant = TenantId::parse(endpoint.tenant.as_str()).map_err(|e| e.to_string())?;
        let mut ids = vec![endpoint.secret_id.clone()];
        if let (Some(previous), Some(until)) =
            (&endpoint.previous_secret_id, endpoint.previous_valid_until)
        {
            if until > Utc::now() {
                ids.push(previous.clone());
            }
        }
        let mut keys = vec![];
        for id in ids {
            let secret = self
                .app
                .secrets
                .get(&tenant, &id)
                .await
                .map_err(|e| format!("the signing secret cannot be read: {e}"))?
                .ok_or_else(|| "the signing secret is missing".to_string())?;
            keys.push(signing::key(secret.expose())?);
        }
        Ok(keys)
    }

    /// Where the endpoint's deliveries go: its URL, or a channel's sealed one.
    async fn target(&self, endpoint: &WebhookRow) -> Result<String, String> {
        let Some(rule) = &endpoint.notification else {
            return Ok(endpoint.url.clone());
        };
        let tenant = TenantId::parse(endpoint.tenant.as_str()).map_err(|e| e.to_string())?;
        let url = self
            .app
            .secrets
            .get(&tenant, &rule.0.url_secret_id)
            .await
            .map_err(|e| format!("the channel's URL cannot be read: {e}"))?
            .ok_or_else(|| "the channel's URL is missing".to_string())?;
        Ok(url.expose().to_string())
    }

    async fn attempt(&self, url: &str, delivery: &DeliveryRow, keys: &[Vec<u8>]) -> Attempt {
        let failed = |error: String| Attempt {
            status: None,
            latency: Duration::ZERO,
            error: Some(error),
            retry_after: None,
        };
        if let Err(reason) = ssrf::check_url(url, self.app.webhooks.allow) {
            return failed(format!("refused URL: {reason}"));
        }
        let timestamp = Utc::now().timestamp();
        let signature = signing::signature_header(
            keys,
            &delivery.message_id,
            timestamp,
            delivery.body.as_bytes(),
        );
        let started = Instant::now();
        let sent = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.body.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => {
                // a channel's URL is a credential: never in a delivery's error
                let mut attempt = failed(describe(&e).replace(url, "<the endpoint's URL>"));
                attempt.latency = started.elapsed();
                return attempt;
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // at most ANSWER_BYTES of the answer: a huge one is not read
        let mut answer = Vec::new();
        while answer.len() < ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                _ => break,
            }
        }
        answer.truncate(ANSWER_BYTES);
        let latency = started.elapsed();
        let error = (!(200..300).contains(&status)).then(|| {
            let text = String::from_utf8_lossy(&answer).trim().to_string();
            let what = if (300..400).contains(&status) {
                "a redirect (not followed)".to_string()
            } else {
                format!("HTTP {status}")
            };
            if text.is_empty() {
                what
            } else {
                format!("{what}: {text}")
            }
        });
        Attempt {
            status: Some(status),
            latency,
            error,
            retry_after,
        }
    }

    /// Records an attempt: delivered, or scheduled again, or (schedule exhausted,
    /// 410) the endpoint disabled.
    async fn record(
        &self,
        endpoint: &WebhookRow,
        delivery: &DeliveryRow,
        attempt: Attempt,
    ) -> Result<(), String> {
        let now = Utc::now();
        let attempts = delivery.attempts + 1;
        let mut log = delivery.attempt_log.0.clone();
        log.push(json!({
            "at": now,
            "status": attempt.status,
            "latencyMs": attempt.latency.as_millis() as i64,
            "error": attempt.error,
        }));
        self.app.metrics.webhook_attempt(if attempt.delivered() {
            "delivered"
        } else {
            "failed"
        });
        let schedule = &self.app.webhooks.schedule;
        let gone = attempt.status == Some(410);
        let (status, next) = if attempt.delivered() {
            ("delivered", None)
        } else if gone || attempts as usize >= schedule.len() {
            ("exhausted", None)
        } else {
            let wait = attempt
                .retry_after
                .unwrap_or(schedule[attempts as usize])
                .min(MAX_RETRY_AFTER);
            let next = now + chrono::Duration::from_std(wait).unwrap_or_default();
            ("failing", Some(next))
        };
        if status != "failing" {
            self.app.metrics.webhook_delivery(status);
        }
        let mut sql = Sql::new(Dialect::of(&self.app.store));
        let fmt = eventstore::sql::fmt_time;
        let args = [
            sql.arg(status),
            sql.arg(attempts),
            sql.arg(next.map(fmt)),
            sql.arg(fmt(now)),
            sql.arg(attempt.status.map(i64::from)),
            sql.arg(attempt.error.clone()),
            sql.arg(attempt.latency.as_millis() as i64),
            sql.arg(serde_json::to_string(&log).unwrap_or_else(|_| "[]".into())),
            sql.arg(attempt.delivered().then(|| fmt(now))),
            sql.arg(delivery.id.as_str()),
        ];
        sql.push(&format!(
            "UPDATE webhook_deliveries SET status = {}, attempts = {}, next_attempt_at = {}, \
             last_attempt_at = {}, response_status = {}, error = {}, latency_ms = {}, \
             attempt_log = {}, delivered_at = {} WHERE id = {}",
            args[0],
            args[1],
            args[2],
            args[3],
            args[4],
            args[5],
            args[6],
            args[7],
            args[8],
            args[9]
        ));
        sql.execute(&self.app.store)
            .await
            .map_err(|e| e.to_string())?;
        if status == "exhausted" {
            let reason = if gone {
                "the receiver answered 410 Gone".to_string()
            } else {
                format!(
                    "delivery {} failed {attempts} attempts: {}",
                    delivery.id,
                    attempt.error.as_deref().unwrap_or("unknown error")
                )
            };
            self.disable(endpoint, reason).await?;
        }
        Ok(())
    }

    async fn disable(&self, endpoint: &WebhookRow, reason: String) -> Result<(), String> {
        let tenant = TenantId::parse(endpoint.tenant.as_str()).map_err(|e| e.to_string())?;
        let id = LocalId::parse(endpoint.webhook_id.as_str()).map_err(|e| e.to_string())?;
        let ctx = CommandContext {
            tenant,
            actor: aggregates::Actor::system("webhooks"),
            correlation_id: format!("webhook-sender:{}", endpoint.id),
            causation_id: None,
        };
        tracing::warn!(webhook = %endpoint.id, %reason, "webhook endpoint disabled");
        self.app
            .domain
            .webhook(
                &ctx,
                &id,
                WebhookCommand::Disable {
                    reason,
                    automatic: true,
                },
            )
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// A transport error in a sentence (reqwest's own stops at "error sending request").
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "cannot connect".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Starts the dispatcher (on its own reactor runtime) and the sender; both run
/// until aborted.
pub fn spawn(app: &AppContext) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    let runtime = ReactorRuntime::new(
        app.store.clone(),
        vec![Arc::new(Dispatcher::new(app.clone()))],
        ReactorOptions::default(),
        app.domain.reactors().clone(),
    );
    let dispatcher = runtime.spawn().1;
    let sender = tokio::spawn(Sender::new(app.clone()).run());
    (dispatcher, sender)
}
