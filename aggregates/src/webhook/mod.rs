//! Webhook endpoints (issue 15): where a tenant wants its events delivered, signed
//! as the Standard Webhooks specification says.
//!
//! One aggregate per endpoint (`{tenant}:{webhook_id}`). Its events hold the URL and
//! the filters, and only the *ids* of its signing secrets: the secrets themselves are
//! sealed in the secret store, never in an event. Rotating the secret keeps the
//! previous one signing alongside until `previous_valid_until` (24 h), so receivers
//! can switch without losing a delivery.
//!
//! Status: `active → disabled` (an admin, or the sender after the retry schedule is
//! exhausted or a 410), `disabled → active` (an admin), either `→ deleted`.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::kernel::command::{DomainCommand, Issued, Role};
use crate::kernel::error::DomainError;
use crate::kernel::transitions::{self, Lifecycle, StateMachine};

#[cfg(test)]
mod tests;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    #[default]
    Active,
    Disabled,
    Deleted,
}

crate::state_names!(WebhookStatus {
    Active => "active",
    Disabled => "disabled",
    Deleted => "deleted",
});

impl StateMachine for WebhookStatus {
    const MACHINE: &'static str = "webhook";
    const ALL: &'static [Self] = &[Self::Active, Self::Disabled, Self::Deleted];
    const INITIAL: &'static [Self] = &[Self::Active];
    const VALID_TRANSITIONS: &'static [(Self, &'static [Self])] = &[
        (Self::Active, &[Self::Disabled, Self::Deleted]),
        (Self::Disabled, &[Self::Active, Self::Deleted]),
        (Self::Deleted, &[]),
    ];
}

/// Longest URL and description accepted.
pub const MAX_URL: usize = 2000;
pub const MAX_DESCRIPTION: usize = 500;
/// Most event and aggregate types one endpoint may filter on.
pub const MAX_TYPES: usize = 100;

/// The endpoint's configuration (a command's and an event's fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookConfig {
    pub url: String,
    /// Event types delivered (`incident.detected`); empty: every type.
    pub event_types: Vec<String>,
    /// Aggregate types delivered (`incident`); empty: every type.
    pub aggregate_types: Vec<String>,
    pub description: Option<String>,
    /// Set: the endpoint is a notification channel. It receives rendered
    /// notifications of the kinds its rule selects, never raw events, and `url` holds
    /// only the channel's origin for display (the URL itself, a credential for a
    /// Slack incoming webhook, is sealed in the secret store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<NotificationRule>,
}

/// What a notification says happened (issue 15 point 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    IncidentOpened,
    IncidentEscalated,
    IncidentExpired,
    IncidentClosed,
    PromotionPendingApproval,
    PromotionBlocked,
    PromotionCompleted,
    PromotionRolledBack,
    PromotionFailed,
    DriftCheckFailed,
    WebhookDisabled,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 11] = [
        Self::IncidentOpened,
        Self::IncidentEscalated,
        Self::IncidentExpired,
        Self::IncidentClosed,
        Self::PromotionPendingApproval,
        Self::PromotionBlocked,
        Self::PromotionCompleted,
        Self::PromotionRolledBack,
        Self::PromotionFailed,
        Self::DriftCheckFailed,
        Self::WebhookDisabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::IncidentOpened => "incident_opened",
            Self::IncidentEscalated => "incident_escalated",
            Self::IncidentExpired => "incident_expired",
            Self::IncidentClosed => "incident_closed",
            Self::PromotionPendingApproval => "promotion_pending_approval",
            Self::PromotionBlocked => "promotion_blocked",
            Self::PromotionCompleted => "promotion_completed",
            Self::PromotionRolledBack => "promotion_rolled_back",
            Self::PromotionFailed => "promotion_failed",
            Self::DriftCheckFailed => "drift_check_failed",
            Self::WebhookDisabled => "webhook_disabled",
        }
    }
}

/// How a notification channel wants its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelFormat {
    /// A Slack-compatible incoming webhook: `text` plus Block Kit `blocks`.
    Slack,
    /// A generic JSON document (the notification's fields).
    Json,
}

/// A notification rule: which notifications go to the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRule {
    pub format: ChannelFormat,
    /// Empty: every kind.
    #[serde(default)]
    pub kinds: Vec<NotificationKind>,
    /// Only notifications about this environment (those about no environment, a
    /// webhook endpoint's, still come).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
    /// Only incidents of these severities (empty: any); notifications without a
    /// severity (promotions, drift checks, endpoints) are not filtered by it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub severities: Vec<crate::incident::Severity>,
    /// The sealed channel URL's id in the secret store.
    pub url_secret_id: String,
}

impl NotificationRule {
    /// Whether a notification of `kind` about `environment`, of `severity`, goes to
    /// the channel.
    pub fn matches(
        &self,
        kind: NotificationKind,
        environment: Option<&str>,
        severity: Option<crate::incident::Severity>,
    ) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && match (&self.environment_id, environment) {
                (Some(wanted), Some(env)) => wanted == env,
                _ => true,
            }
            && match severity {
                Some(s) => self.severities.is_empty() || self.severities.contains(&s),
                None => true,
            }
    }
}

impl WebhookConfig {
    /// Whether an event of `event_type` on an `aggregate_type` aggregate goes here
    /// (never, to a notification channel: it receives notifications).
    pub fn matches(&self, event_type: &str, aggregate_type: &str) -> bool {
        self.notification.is_none()
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && (self.aggregate_types.is_empty()
                || self.aggregate_types.iter().any(|t| t == aggregate_type))
    }

    /// Checks the lengths and counts (the URL's scheme and target, and the types'
    /// existence, are the service's to check).
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.url.trim().is_empty() {
            return Err(DomainError::required("url"));
        }
        if self.url.chars().count() > MAX_URL {
            return Err(DomainError::validation(
                "url",
                format!("must be at most {MAX_URL} characters"),
            ));
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
        {
            return Err(DomainError::validation(
                "description",
                format!("must be at most {MAX_DESCRIPTION} characters"),
            ));
        }
        if let Some(rule) = &self.notification {
            if !self.event_types.is_empty() || !self.aggregate_types.is_empty() {
                return Err(DomainError::validation(
                    "event_types",
                    "a notification channel selects notification kinds, not event types",
                ));
            }
            if rule.url_secret_id.is_empty() {
                return Err(DomainError::required("url"));
            }
        }
        for (field, types) in [
            ("event_types", &self.event_types),
            ("aggregate_types", &self.aggregate_types),
        ] {
            if types.len() > MAX_TYPES {
                return Err(DomainError::validation(
                    field,
                    format!("at most {MAX_TYPES} types"),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum WebhookCommand {
    /// `secret_id`: the sealed signing secret the service stored for it.
    Create {
        config: WebhookConfig,
        secret_id: String,
    },
    Update {
        config: WebhookConfig,
    },
    /// A new signing secret; the current one keeps signing until `previous_valid_until`.
    RotateSecret {
        secret_id: String,
        previous_valid_until: DateTime<Utc>,
    },
    /// `automatic`: the sender gave up (schedule exhausted, 410).
    Disable {
        reason: String,
        automatic: bool,
    },
    Enable,
    Delete,
}

impl DomainCommand for WebhookCommand {
    fn required_role(&self) -> Role {
        match self {
            WebhookCommand::Disable {
                automatic: true, ..
            } => Role::System,
            _ => Role::Admin,
        }
    }
    fn reason(&self) -> Option<&str> {
        match self {
            WebhookCommand::Disable { reason, .. } => Some(reason),
            _ => None,
        }
    }
    fn creates(&self) -> bool {
        matches!(self, WebhookCommand::Create { .. })
    }

    fn name(&self) -> &'static str {
        match self {
            WebhookCommand::Create { .. } => "webhook.create",
            WebhookCommand::Update { .. } => "webhook.update",
            WebhookCommand::RotateSecret { .. } => "webhook.rotate_secret",
            WebhookCommand::Disable { .. } => "webhook.disable",
            WebhookCommand::Enable => "webhook.enable",
            WebhookCommand::Delete => "webhook.delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WebhookEvent {
    Created {
        #[serde(flatten)]
        config: WebhookConfig,
        secret_id: String,
        created_by: String,
    },
    Updated {
        #[serde(flatten)]
        config: WebhookConfig,
    },
    SecretRotated {
        secret_id: String,
        previous_secret_id: String,
        previous_valid_until: DateTime<Utc>,
    },
    Disabled {
        from: WebhookStatus,
        reason: String,
        automatic: bool,
    },
    Enabled {
        from: WebhookStatus,
    },
    Deleted {
        from: WebhookStatus,
    },
}

impl DomainEvent for WebhookEvent {
    fn event_type(&self) -> String {
        match self {
            WebhookEvent::Created { .. } => "webhook.created",
            WebhookEvent::Updated { .. } => "webhook.updated",
            WebhookEvent::SecretRotated { .. } => "webhook.secret_rotated",
            WebhookEvent::Disabled { .. } => "webhook.disabled",
            WebhookEvent::Enabled { .. } => "webhook.enabled",
            WebhookEvent::Deleted { .. } => "webhook.deleted",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl WebhookEvent {
    /// The status change the event records, if any (`None` before: created).
    pub fn status_change(&self) -> Option<(Option<WebhookStatus>, WebhookStatus)> {
        match self {
            WebhookEvent::Created { .. } => Some((None, WebhookStatus::Active)),
            WebhookEvent::Disabled { from, .. } => Some((Some(*from), WebhookStatus::Disabled)),
            WebhookEvent::Enabled { from } => Some((Some(*from), WebhookStatus::Active)),
            WebhookEvent::Deleted { from } => Some((Some(*from), WebhookStatus::Deleted)),
            _ => None,
        }
    }
}

/// The endpoint as its events leave it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub created: bool,
    pub status: WebhookStatus,
    pub config: WebhookConfig,
    pub secret_id: String,
    /// The previous secret and until when it signs too.
    pub previous_secret: Option<(String, DateTime<Utc>)>,
    pub disabled_reason: Option<String>,
}

impl Lifecycle for Webhook {
    fn check_step(before: &Self, after: &Self, admin_override: bool) -> Result<(), DomainError> {
        let status = |a: &Self| a.created.then_some(a.status);
        transitions::step(status(before), status(after), admin_override)
    }
}

impl Webhook {
    pub fn decide(&self, issued: Issued<WebhookCommand>) -> Result<Vec<WebhookEvent>, DomainError> {
        use WebhookCommand::*;
        let from = self.status;
        if let Create { config, secret_id } = issued.command {
            if self.created {
                return Err(DomainError::validation("id", "already exists"));
            }
            transitions::check_initial(WebhookStatus::Active)?;
            config.validate()?;
            return Ok(vec![WebhookEvent::Created {
                config,
                secret_id,
                created_by: issued.actor.id,
            }]);
        }
        if !self.created || from == WebhookStatus::Deleted {
            return Err(DomainError::NotFound {
                kind: "webhook",
                id: String::new(),
            });
        }
        Ok(match issued.command {
            Create { .. } => unreachable!("handled above"),
            Update { config } => {
                config.validate()?;
                if config == self.config {
                    return Ok(vec![]);
                }
                vec![WebhookEvent::Updated { config }]
            }
            RotateSecret {
                secret_id,
                previous_valid_until,
            } => vec![WebhookEvent::SecretRotated {
                secret_id,
                previous_secret_id: self.secret_id.clone(),
                previous_valid_until,
            }],
            Disable { reason, automatic } => {
                if from == WebhookStatus::Disabled {
                    return Ok(vec![]);
                }
                transitions::check(from, WebhookStatus::Disabled, false)?;
                vec![WebhookEvent::Disabled {
                    from,
                    reason,
                    automatic,
                }]
            }
            Enable => {
                if from == WebhookStatus::Active {
                    return Ok(vec![]);
                }
                transitions::check(from, WebhookStatus::Active, false)?;
                vec![WebhookEvent::Enabled { from }]
            }
            Delete => {
                transitions::check(from, WebhookStatus::Deleted, false)?;
                vec![WebhookEvent::Deleted { from }]
            }
        })
    }
}

impl Aggregate for Webhook {
    const TYPE: &'static str = "webhook";
    type Command = Issued<WebhookCommand>;
    type Event = WebhookEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        issued: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        for event in self.decide(issued)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: WebhookEvent) {
        match event {
            WebhookEvent::Created {
                config, secret_id, ..
            } => {
                self.created = true;
                self.status = WebhookStatus::Active;
                self.config = config;
                self.secret_id = secret_id;
            }
            WebhookEvent::Updated { config } => self.config = config,
            WebhookEvent::SecretRotated {
                secret_id,
                previous_secret_id,
                previous_valid_until,
            } => {
                self.previous_secret = Some((previous_secret_id, previous_valid_until));
                self.secret_id = secret_id;
            }
            WebhookEvent::Disabled { reason, .. } => {
                self.status = WebhookStatus::Disabled;
                self.disabled_reason = Some(reason);
            }
            WebhookEvent::Enabled { .. } => {
                self.status = WebhookStatus::Active;
                self.disabled_reason = None;
            }
            WebhookEvent::Deleted { .. } => self.status = WebhookStatus::Deleted,
        }
    }
}
