//! Webhook endpoints and their deliveries (issue 15), admin only: an endpoint's URL
//! and filters say where a tenant's events go. The signing secret is in the answer
//! of `createWebhook`, `createNotificationRule` and `rotateWebhookSecret` only.
//!
//! A notification rule is an endpoint with a rule: it receives rendered
//! notifications (Slack or generic JSON) instead of events, with the same delivery,
//! retries, disabling and `webhookDeliveries`. Its URL is sealed like a secret; the
//! API shows only its origin.

use aggregates::webhook::{WebhookCommand, WebhookConfig};
use async_graphql::connection::Connection;
use async_graphql::{Context, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use projections::models::webhooks::{self as model, DeliveryRow, WebhookRow};

use super::types::{connection, ChannelFormat, LocalIdArg, NotificationKind, Severity};
use super::{app, caller, read_back_row, run, wait_for, ApiError};
use crate::integrations::webhooks;

/// Only admins see and change webhooks (their URLs may carry a receiver's token).
fn admin(ctx: &Context<'_>) -> Result<(), ApiError> {
    crate::command::bus::authorize(&caller(ctx)?.command_context(), &WebhookCommand::Enable)?;
    Ok(())
}

/// An endpoint.
pub struct Webhook(pub WebhookRow);

#[Object]
impl Webhook {
    async fn id(&self) -> ID {
        ID(self.0.webhook_id.clone())
    }
    async fn url(&self) -> &str {
        &self.0.url
    }
    /// Event types delivered (empty: every type).
    async fn event_types(&self) -> &[String] {
        &self.0.event_types.0
    }
    /// Aggregate types delivered (empty: every type).
    async fn aggregate_types(&self) -> &[String] {
        &self.0.aggregate_types.0
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// Set for a notification channel: which notifications it receives (it receives
    /// no events, and `url` shows only its origin: the URL itself is sealed).
    async fn notification_rule(&self) -> Option<NotificationRule> {
        self.0
            .notification
            .as_ref()
            .map(|n| NotificationRule(n.0.clone()))
    }
    /// `active` or `disabled` (by an admin, or by the sender: a 410, or a delivery
    /// that failed every attempt of the schedule).
    async fn status(&self) -> &str {
        &self.0.status
    }
    async fn disabled_reason(&self) -> Option<&str> {
        self.0.disabled_reason.as_deref()
    }
    /// Until when the previous secret also signs (after a rotation).
    async fn previous_secret_valid_until(&self) -> Option<DateTime<Utc>> {
        self.0
            .previous_valid_until
            .filter(|until| *until > Utc::now())
    }
    async fn created_by(&self) -> &str {
        &self.0.created_by
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Positions of the log this endpoint is behind: the newest event routed to it
    /// minus the newest delivered (0 when it is up to date).
    async fn lag(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        let store = &app(ctx)?.store;
        let delivered = model::delivered_through(store, &self.0.tenant, &self.0.webhook_id)
            .await
            .map_err(ApiError::from)?;
        let head = model::head(store, &self.0.tenant, &self.0.webhook_id)
            .await
            .map_err(ApiError::from)?;
        Ok(head.map_or(0, |h| (h.position - delivered).max(0)))
    }
}

/// Which notifications a channel receives.
pub struct NotificationRule(aggregates::webhook::NotificationRule);

#[Object]
impl NotificationRule {
    async fn format(&self) -> ChannelFormat {
        self.0.format.into()
    }
    /// The kinds it receives (empty: every kind).
    async fn kinds(&self) -> Vec<NotificationKind> {
        self.0.kinds.iter().map(|k| (*k).into()).collect()
    }
    /// Only notifications about this environment (and those about none).
    async fn environment_id(&self) -> Option<ID> {
        self.0.environment_id.clone().map(ID)
    }
    /// Only incidents of these severities (empty: any).
    async fn severities(&self) -> Vec<Severity> {
        self.0.severities.iter().map(|s| (*s).into()).collect()
    }
}

/// One attempt of a delivery.
#[derive(SimpleObject)]
pub struct DeliveryAttempt {
    pub at: Option<DateTime<Utc>>,
    /// The receiver's HTTP status (null: no answer).
    pub status: Option<i32>,
    pub latency_ms: Option<i64>,
    pub error: Option<String>,
}

/// One event routed to an endpoint.
pub struct Delivery(pub DeliveryRow);

#[Object]
impl Delivery {
    /// `{tenant}:{webhook}:{position}`, for `redeliver`.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn webhook_id(&self) -> ID {
        ID(self.0.webhook_id.clone())
    }
    /// The event's position in the log.
    async fn position(&self) -> i64 {
        self.0.position
    }
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    /// The `webhook-id` header: the same on every attempt (the receiver's
    /// idempotency key).
    async fn message_id(&self) -> &str {
        &self.0.message_id
    }
    /// `pending`, `failing` (retried on the schedule), `delivered`, or `exhausted`
    /// (every attempt failed, or 410: the endpoint was disabled; enabling it sends
    /// it again).
    async fn status(&self) -> &str {
        &self.0.status
    }
    async fn attempts(&self) -> i64 {
        self.0.attempts
    }
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.0.next_attempt_at
    }
    async fn last_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_attempt_at
    }
    async fn response_status(&self) -> Option<i64> {
        self.0.response_status
    }
    async fn latency_ms(&self) -> Option<i64> {
        self.0.latency_ms
    }
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    async fn delivered_at(&self) -> Option<DateTime<Utc>> {
        self.0.delivered_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Every attempt, oldest first.
    async fn attempt_log(&self) -> Vec<DeliveryAttempt> {
        self.0
            .attempt_log
            .0
            .iter()
            .map(|a| DeliveryAttempt {
                at: a["at"].as_str().and_then(|t| t.parse().ok()),
                status: a["status"].as_i64().map(|s| s as i32),
                latency_ms: a["latencyMs"].as_i64(),
                error: a["error"].as_str().map(str::to_string),
            })
            .collect()
    }
}

#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// The tenant's webhook endpoints (admin), oldest first; deleted ones are gone.
    async fn webhooks(
        &self,
        ctx: &Context<'_>,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Vec<Webhook>> {
        admin(ctx)?;
        wait_for(ctx, model::NAME, min_position).await?;
        let rows = model::webhooks(&app(ctx)?.store, caller(ctx)?.tenant())
            .await
            .map_err(ApiError::from)?;
        Ok(rows.into_iter().map(Webhook).collect())
    }

    /// One endpoint's deliveries (admin), newest first.
    #[graphql(complexity = "super::list_cost(first, child_complexity)")]
    async fn webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        webhook_id: LocalIdArg,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Delivery>> {
        admin(ctx)?;
        let page = model::deliveries(
            &app(ctx)?.store,
            caller(ctx)?.tenant(),
            webhook_id.as_str(),
            super::types::first(first),
            after.as_deref(),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, Delivery))
    }
}

/// What a webhook mutation recorded.
pub struct WebhookPayload {
    id: String,
    position: Option<i64>,
    secret: Option<String>,
}

impl WebhookPayload {
    fn new(id: &str, position: Option<i64>, secret: Option<String>) -> Self {
        WebhookPayload {
            id: id.to_string(),
            position,
            secret,
        }
    }
}

#[Object]
impl WebhookPayload {
    /// Global position of the last event appended (null when nothing changed).
    async fn position(&self) -> Option<i64> {
        self.position
    }
    /// The signing secret (`whsec_…`), in the answers of `createWebhook` and
    /// `rotateWebhookSecret` only: it is never shown again.
    async fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }
    /// The endpoint as it now stands (null once deleted).
    async fn webhook(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Webhook>> {
        let row: Option<model::WebhookRow> =
            read_back_row(ctx, model::NAME, self.position, &self.id).await?;
        Ok(row.filter(|r| r.status != "deleted").map(Webhook))
    }
}

fn config(
    url: String,
    event_types: Option<Vec<String>>,
    aggregate_types: Option<Vec<String>>,
    description: Option<String>,
) -> WebhookConfig {
    WebhookConfig {
        url: url.trim().to_string(),
        event_types: event_types.unwrap_or_default(),
        aggregate_types: aggregate_types.unwrap_or_default(),
        description: description
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty()),
        notification: None,
    }
}

fn channel(
    url: String,
    format: ChannelFormat,
    kinds: Option<Vec<NotificationKind>>,
    environment_id: Option<LocalIdArg>,
    severities: Option<Vec<Severity>>,
    description: Option<String>,
) -> webhooks::Channel {
    webhooks::Channel {
        url,
        format: format.into(),
        kinds: kinds
            .unwrap_or_default()
            .into_iter()
            .map(Into::into)
            .collect(),
        environment_id: environment_id.map(|e| e.as_str().to_string()),
        severities: severities
            .unwrap_or_default()
            .into_iter()
            .map(Into::into)
            .collect(),
        description: description
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty()),
    }
}

#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// Registers an endpoint (admin) for the tenant's events of `eventTypes` and
    /// `aggregateTypes` (each empty or absent: every type) that happen from now on.
    /// The answer holds the signing secret (Standard Webhooks, `whsec_…`) this once.
    /// The URL must be http(s) and not an internal address (`VALIDATION`).
    async fn create_webhook(
        &self,
        ctx: &Context<'_>,
        id: Option<LocalIdArg>,
        url: String,
        event_types: Option<Vec<String>>,
        aggregate_types: Option<Vec<String>>,
        description: Option<String>,
    ) -> async_graphql::Result<WebhookPayload> {
        let caller = caller(ctx)?;
        let id = match id {
            Some(id) => id.into_inner(),
            None => super::new_id()?,
        };
        let config = config(url, event_types, aggregate_types, description);
        let (committed, secret) = run(ctx, "webhook.create", async {
            Ok(webhooks::create(app(ctx)?, &caller.command_context(), &id, config).await?)
        })
        .await?;
        Ok(WebhookPayload::new(
            id.as_str(),
            committed.position,
            Some(secret),
        ))
    }

    /// Changes an endpoint's URL, filters and description (admin), checked as on
    /// creation.
    async fn update_webhook(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        url: String,
        event_types: Option<Vec<String>>,
        aggregate_types: Option<Vec<String>>,
        description: Option<String>,
    ) -> async_graphql::Result<WebhookPayload> {
        let caller = caller(ctx)?;
        let config = config(url, event_types, aggregate_types, description);
        let committed = run(ctx, "webhook.update", async {
            Ok(webhooks::update(app(ctx)?, &caller.command_context(), &id, config).await?)
        })
        .await?;
        Ok(WebhookPayload::new(id.as_str(), committed.position, None))
    }

    /// Registers a notification channel (admin): a Slack-compatible incoming webhook
    /// or a generic JSON webhook, receiving the notifications of `kinds` (empty or
    /// absent: every kind) about `environmentId` (absent: any) and, for incidents,
    /// of `severities` (empty or absent: any). The URL is sealed and never shown
    /// again (only its origin); it must be http(s) and not an internal address
    /// (`VALIDATION`). Deliveries are signed like a webhook's (the secret is in the
    /// answer this once) and managed with the webhook operations (`webhooks`,
    /// `webhookDeliveries`, `disableWebhook`, `enableWebhook`, `deleteWebhook`,
    /// `redeliver`).
    #[allow(clippy::too_many_arguments)]
    async fn create_notification_rule(
        &self,
        ctx: &Context<'_>,
        id: Option<LocalIdArg>,
        url: String,
        format: ChannelFormat,
        kinds: Option<Vec<NotificationKind>>,
        environment_id: Option<LocalIdArg>,
        severities: Option<Vec<Severity>>,
        description: Option<String>,
    ) -> async_graphql::Result<WebhookPayload> {
        let caller = caller(ctx)?;
        let id = match id {
            Some(id) => id.into_inner(),
            None => super::new_id()?,
        };
        let channel = channel(url, format, kinds, environment_id, severities, description);
        let (committed, secret) = run(ctx, "webhook.create", async {
            Ok(
                webhooks::create_channel(app(ctx)?, &caller.command_context(), &id, channel)
                    .await?,
            )
        })
        .await?;
        Ok(WebhookPayload::new(
            id.as_str(),
            committed.position,
            Some(secret),
        ))
    }

    /// Changes a notification channel's rule (admin), checked as on creation; the
    /// URL only when one is given (absent: the sealed one stays).
    #[allow(clippy::too_many_arguments)]
    async fn update_notification_rule(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        url: Option<String>,
        format: ChannelFormat,
        kinds: Option<Vec<NotificationKind>>,
        environment_id: Option<LocalIdArg>,
        severities: Option<Vec<Severity>>,
        description: Option<String>,
    ) -> async_graphql::Result<WebhookPayload> {
        let caller = caller(ctx)?;
        let keep = url.is_none();
        let channel = channel(
            url.unwrap_or_default(),
            format,
            kinds,
            environment_id,
            severities,
            description,
        );
        let committed = run(ctx, "webhook.update", async {
            Ok(
                webhooks::update_channel(app(ctx)?, &caller.command_context(), &id, channel, keep)
                    .await?,
            )
        })
        .await?;
        Ok(WebhookPayload::new(id.as_str(), committed.position, None))
    }

    /// A new signing secret (admin), in the answer this once; the previous one
    /// keeps signing alongside for 24 hours.
    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
    ) -> async_graphql::Result<WebhookPayload> {
        let caller = caller(ctx)?;
        let (committed, secret) = run(ctx, "webhook.rotate_secret", async {
            Ok(webhooks::rotate(app(ctx)?, &caller.command_context(), &id).await?)
        })
        .await?;
        Ok(WebhookPayload::new(
            id.as_str(),
            committed.position,
            Some(secret),
        ))
    }

    /// Stops deliveries to an endpoint (admin); its queue is kept.
    async fn disable_webhook(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
        reason: String,
    ) -> async_graphql::Result<WebhookPayload> {
        let command = WebhookCommand::Disable {
            reason,
            automatic: false,
        };
        webhook_command(ctx, id, command).await
    }

    /// Resumes deliveries to an endpoint (admin), from where they stopped.
    async fn enable_webhook(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
    ) -> async_graphql::Result<WebhookPayload> {
        let caller = caller(ctx)?;
        let committed = run(ctx, "webhook.enable", async {
            Ok(webhooks::enable(app(ctx)?, &caller.command_context(), &id).await?)
        })
        .await?;
        Ok(WebhookPayload::new(id.as_str(), committed.position, None))
    }

    /// Deletes an endpoint or notification channel (admin): nothing more is
    /// delivered to it, and its secrets and sealed URL are deleted.
    async fn delete_webhook(
        &self,
        ctx: &Context<'_>,
        id: LocalIdArg,
    ) -> async_graphql::Result<WebhookPayload> {
        let caller = caller(ctx)?;
        let committed = run(ctx, "webhook.delete", async {
            Ok(webhooks::delete(app(ctx)?, &caller.command_context(), &id).await?)
        })
        .await?;
        Ok(WebhookPayload::new(id.as_str(), committed.position, None))
    }

    /// Sends a delivery again (admin), with the same `webhook-id`, once the
    /// deliveries before it in its endpoint's queue are through.
    async fn redeliver(
        &self,
        ctx: &Context<'_>,
        delivery_id: ID,
    ) -> async_graphql::Result<DeliveryPayload> {
        let caller = caller(ctx)?;
        if delivery_id.len() > 400 {
            return Err(ApiError::validation("deliveryId", "too long").into());
        }
        let row = run(ctx, "webhook.redeliver", async {
            Ok(webhooks::redeliver(app(ctx)?, &caller.command_context(), &delivery_id).await?)
        })
        .await?;
        Ok(DeliveryPayload {
            delivery: Delivery(row),
        })
    }
}

/// What `redeliver` queued.
#[derive(SimpleObject)]
pub struct DeliveryPayload {
    pub delivery: Delivery,
}

async fn webhook_command(
    ctx: &Context<'_>,
    id: LocalIdArg,
    command: WebhookCommand,
) -> async_graphql::Result<WebhookPayload> {
    let caller = caller(ctx)?;
    let name = aggregates::DomainCommand::name(&command);
    let committed = run(ctx, name, async {
        Ok(app(ctx)?
            .domain
            .webhook(&caller.command_context(), &id, command)
            .await?)
    })
    .await?;
    Ok(WebhookPayload::new(id.as_str(), committed.position, None))
}
