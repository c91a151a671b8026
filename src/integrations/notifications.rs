//! Notifications (issue 15 point 5): messages that say what happened, to which
//! object, why, who did it, and where to look.
//!
//! A notification channel is a webhook endpoint with a notification rule
//! ([`aggregates::webhook::NotificationRule`]): the webhook dispatcher asks
//! [`derive`] whether an event is one of the [`NotificationKind`]s, renders it in the
//! channel's format ([`render`]: Slack's `text` plus Block Kit `blocks`, or a generic
//! JSON document) and queues it like any delivery, so a channel gets the same
//! at-least-once delivery, retries, `webhook-id` and disabling as an endpoint.
//!
//! [`derive`] reads what the event does not say (an environment's name, a
//! promotion's workflows, a deployment's per-workflow results) from the aggregates
//! as they stand when the dispatcher routes the event; [`describe`] turns that into
//! the words, and is pure, so the texts are tested word for word.

use aggregates::deployment::{Deployment, WorkflowDeployStatus};
use aggregates::environment::{Environment, EnvironmentEvent};
use aggregates::incident::{DriftIncident, IncidentEvent, Severity, SlaState};
use aggregates::kernel::ids::{aggregate_id, AggregateId, LocalId, TenantId};
use aggregates::promotion::{Promotion, PromotionEvent, PromotionStatus};
use aggregates::webhook::{ChannelFormat, NotificationKind, WebhookEvent};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use eventstore::StoredEvent;
use serde_json::{json, Value};

use crate::reactors::ReactError;
use crate::AppContext;

/// The event types a notification can come from (the dispatcher derives nothing
/// for the others).
pub const SOURCES: &[&str] = &[
    "incident.detected",
    "incident.sla_escalated",
    "incident.closed",
    "promotion.gates_evaluated",
    "promotion.completed",
    "promotion.rolled_back",
    "promotion.failed",
    "environment.drift_check_failed",
    "webhook.disabled",
];

/// Most workflow names a message lists before "and N more".
const MAX_NAMES: usize = 10;
/// Slack's limits: a header's text, a section's text.
const SLACK_HEADER: usize = 150;
const SLACK_SECTION: usize = 3000;

/// One notification, before a channel's format.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub kind: NotificationKind,
    /// The environment it is about (a rule may select one).
    pub environment_id: Option<String>,
    /// An incident's severity (a rule may select some).
    pub severity: Option<Severity>,
    /// The object: its aggregate type and id.
    pub object_type: &'static str,
    pub object_id: String,
    /// The transition: the state before (none: created) and after.
    pub from: Option<String>,
    pub to: String,
    /// One line: what happened to which object.
    pub title: String,
    /// Why, and what it means: one sentence each.
    pub details: Vec<String>,
    pub actor: String,
    /// Where to look: the API's GraphiQL, opened on a query for the object.
    pub link: String,
    pub at: DateTime<Utc>,
    pub position: i64,
    pub event_type: String,
}

/// What [`describe`] needs beyond the event: the aggregates it names, as they stand.
#[derive(Debug, Default, Clone)]
pub struct Lookup {
    /// Environment id → name.
    pub environments: Vec<(String, String)>,
    pub incident: Option<DriftIncident>,
    pub promotion: Option<Promotion>,
    pub deployment: Option<Deployment>,
}

impl Lookup {
    fn environment(&self, id: &str) -> String {
        self.environments
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, name)| {
                if name == id {
                    name.clone()
                } else {
                    format!("{name} ({id})")
                }
            })
            .unwrap_or_else(|| id.to_string())
    }
}

/// The notification an event makes, if it makes one: reads the aggregates the
/// message names, then [`describe`]s it.
pub async fn derive(
    app: &AppContext,
    event: &StoredEvent,
) -> Result<Option<Notification>, ReactError> {
    if !SOURCES.contains(&event.event_type.as_str()) {
        return Ok(None);
    }
    let id = AggregateId::parse(event.aggregate_id.as_str())?;
    let tenant = id.tenant_id();
    let local = LocalId::parse(id.local())?;
    let mut lookup = Lookup::default();
    let mut environments: Vec<String> = vec![];
    match event.aggregate_type.as_str() {
        "incident" => {
            let incident: DriftIncident = load(app, &tenant, &local).await?;
            environments.push(incident.environment_id.clone());
            lookup.incident = Some(incident);
        }
        "promotion" => {
            let promotion: Promotion = load(app, &tenant, &local).await?;
            environments.push(promotion.source_environment_id.clone());
            environments.push(promotion.target_environment_id.clone());
            if let Some(deployment) = &promotion.deployment_id {
                let deployment = LocalId::parse(deployment.as_str())?;
                lookup.deployment = Some(load(app, &tenant, &deployment).await?);
            }
            lookup.promotion = Some(promotion);
        }
        "environment" => environments.push(local.to_string()),
        _ => {}
    }
    for env in environments {
        let Ok(env_id) = LocalId::parse(env.as_str()) else {
            continue;
        };
        let state: Environment = load(app, &tenant, &env_id).await?;
        if state.registered {
            lookup.environments.push((env, state.name));
        }
    }
    describe(event, &lookup, &app.webhooks.public_url)
}

async fn load<A: Aggregate + Clone + 'static>(
    app: &AppContext,
    tenant: &TenantId,
    id: &LocalId,
) -> Result<A, ReactError> {
    Ok(app
        .domain
        .bus()
        .load::<A>(&aggregate_id(tenant, &[id]))
        .await
        .map_err(|e| ReactError::Transient(format!("reading {}: {e}", A::TYPE)))?
        .into_state())
}

fn undecodable(event: &StoredEvent, e: serde_json::Error) -> ReactError {
    ReactError::Permanent(format!("undecodable {}: {e}", event.event_type))
}

/// "1 workflow", "3 workflows".
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// "a, b and 3 more".
fn names<'a>(all: impl IntoIterator<Item = &'a str>) -> String {
    let all: Vec<&str> = all.into_iter().collect();
    let shown = all.iter().take(MAX_NAMES).copied().collect::<Vec<_>>();
    let mut text = shown.join(", ");
    if all.len() > shown.len() {
        text.push_str(&format!(" and {} more", all.len() - shown.len()));
    }
    text
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The GraphiQL page opened on a query for the object (`?query=` fills its editor).
fn link(public_url: &str, query: &str) -> String {
    let mut url = format!("{}/graphql?query=", public_url.trim_end_matches('/'));
    url.extend(url::form_urlencoded::byte_serialize(query.as_bytes()));
    url
}

fn object_link(public_url: &str, object_type: &str, id: &str) -> String {
    let query = match object_type {
        "incident" => format!(
            "{{ incident(id: \"{id}\") {{ id status severity slaState slaDeadline environmentId }} }}"
        ),
        "promotion" => format!(
            "{{ promotion(id: \"{id}\") {{ id status sourceEnvironmentId targetEnvironmentId }} }}"
        ),
        "environment" => format!(
            "{{ environment(id: \"{id}\") {{ id name driftStatus lastDriftCheckAt lastDriftCheckError }} }}"
        ),
        _ => format!(
            "{{ webhookDeliveries(webhookId: \"{id}\", first: 10) {{ nodes {{ id status error }} }} }}"
        ),
    };
    link(public_url, &query)
}

/// The notification `event` makes, in words (`None`: it makes none).
pub fn describe(
    event: &StoredEvent,
    lookup: &Lookup,
    public_url: &str,
) -> Result<Option<Notification>, ReactError> {
    let local = AggregateId::parse(event.aggregate_id.as_str())?
        .local()
        .to_string();
    let actor = event
        .metadata
        .get("actor")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let base = |kind: NotificationKind,
                object_type: &'static str,
                from: Option<String>,
                to: &str| Notification {
        kind,
        environment_id: None,
        severity: None,
        object_type,
        object_id: local.clone(),
        from,
        to: to.to_string(),
        title: String::new(),
        details: vec![],
        actor: actor.clone(),
        link: object_link(public_url, object_type, &local),
        at: event.recorded_at,
        position: event.position,
        event_type: event.event_type.clone(),
    };
    let notification = match event.aggregate_type.as_str() {
        "incident" => {
            let decoded: IncidentEvent =
                serde_json::from_value(event.payload.clone()).map_err(|e| undecodable(event, e))?;
            let Some(incident) = &lookup.incident else {
                return Ok(None);
            };
            incident_notification(&decoded, incident, lookup, &base)
        }
        "promotion" => {
            let decoded: PromotionEvent =
                serde_json::from_value(event.payload.clone()).map_err(|e| undecodable(event, e))?;
            let Some(promotion) = &lookup.promotion else {
                return Ok(None);
            };
            promotion_notification(&decoded, promotion, lookup, &base)
        }
        "environment" => {
            let decoded: EnvironmentEvent =
                serde_json::from_value(event.payload.clone()).map_err(|e| undecodable(event, e))?;
            match decoded {
                EnvironmentEvent::DriftCheckFailed { cause, .. } => {
                    let env = lookup.environment(&local);
                    let mut n = base(
                        NotificationKind::DriftCheckFailed,
                        "environment",
                        None,
                        "drift_check_failed",
                    );
                    n.environment_id = Some(local.clone());
                    n.title = format!("Drift check failed on {env}");
                    n.details = vec![
                        format!("Cause: {cause}"),
                        "Drift is not known for this environment until a check succeeds."
                            .to_string(),
                    ];
                    Some(n)
                }
                _ => None,
            }
        }
        "webhook" => {
            let decoded: WebhookEvent =
                serde_json::from_value(event.payload.clone()).map_err(|e| undecodable(event, e))?;
            match decoded {
                WebhookEvent::Disabled {
                    from,
                    reason,
                    automatic,
                } => {
                    let mut n = base(
                        NotificationKind::WebhookDisabled,
                        "webhook",
                        Some(from.as_str().to_string()),
                        "disabled",
                    );
                    n.title = format!("Webhook endpoint {local} disabled");
                    n.details = vec![format!("Cause: {reason}")];
                    n.details.push(if automatic {
                        "Disabled by the sender. Its undelivered events wait in its queue; enabling it delivers them in order.".to_string()
                    } else {
                        "Its undelivered events wait in its queue; enabling it delivers them in order.".to_string()
                    });
                    Some(n)
                }
                _ => None,
            }
        }
        _ => None,
    };
    Ok(notification)
}

type Base<'a> = &'a dyn Fn(NotificationKind, &'static str, Option<String>, &str) -> Notification;

fn incident_notification(
    decoded: &IncidentEvent,
    incident: &DriftIncident,
    lookup: &Lookup,
    base: Base<'_>,
) -> Option<Notification> {
    let env = lookup.environment(&incident.environment_id);
    let drifted = |workflows: &[aggregates::incident::AffectedWorkflow]| {
        format!(
            "{} drifted from Git: {}.",
            count(workflows.len(), "workflow"),
            names(workflows.iter().map(|w| w.name.as_str()))
        )
    };
    let mut n = match decoded {
        IncidentEvent::Detected {
            severity,
            affected_workflows,
            sla_deadline,
            production,
            ..
        } => {
            let mut n = base(
                NotificationKind::IncidentOpened,
                "incident",
                None,
                "detected",
            );
            n.severity = Some(*severity);
            n.title = format!(
                "Incident opened on {env}: {} drifted, severity {severity}",
                count(affected_workflows.len(), "workflow")
            );
            n.details = vec![
                drifted(affected_workflows),
                format!(
                    "Severity {severity}{}; SLA deadline {}.",
                    if *production { " (production)" } else { "" },
                    time(*sla_deadline)
                ),
            ];
            n
        }
        IncidentEvent::SlaEscalated { from, to } => {
            let kind = if *to == SlaState::Expired {
                NotificationKind::IncidentExpired
            } else {
                NotificationKind::IncidentEscalated
            };
            let mut n = base(
                kind,
                "incident",
                Some(from.as_str().to_string()),
                to.as_str(),
            );
            n.severity = Some(incident.severity);
            let deadline = incident.sla_deadline.map(time).unwrap_or_default();
            n.title = if kind == NotificationKind::IncidentExpired {
                format!("Incident on {env} expired: its SLA deadline {deadline} has passed")
            } else {
                format!("Incident on {env} escalated: SLA {from} → {to}")
            };
            n.details = vec![
                drifted(&incident.affected_workflows),
                format!(
                    "Severity {}; status {}; SLA deadline {deadline}.",
                    incident.severity, incident.status
                ),
            ];
            n
        }
        IncidentEvent::Closed {
            from,
            reason,
            resolution_type,
            admin_override,
            ..
        } => {
            let mut n = base(
                NotificationKind::IncidentClosed,
                "incident",
                Some(from.as_str().to_string()),
                "closed",
            );
            n.severity = Some(incident.severity);
            n.title = format!("Incident on {env} closed ({resolution_type})");
            n.details = vec![
                format!("Reason: {reason}"),
                format!(
                    "Closed from {from}{}.",
                    if *admin_override {
                        " by an admin override"
                    } else {
                        ""
                    }
                ),
            ];
            n
        }
        _ => return None,
    };
    n.environment_id = Some(incident.environment_id.clone());
    Some(n)
}

fn promotion_notification(
    decoded: &PromotionEvent,
    promotion: &Promotion,
    lookup: &Lookup,
    base: Base<'_>,
) -> Option<Notification> {
    let route = format!(
        "{} → {}",
        lookup.environment(&promotion.source_environment_id),
        lookup.environment(&promotion.target_environment_id)
    );
    let what = if promotion.source_snapshot.is_some() {
        "Restore"
    } else {
        "Promotion"
    };
    let workflows = count(promotion.workflows.len(), "workflow");
    let name_of = |id: &str| -> String {
        promotion
            .workflows
            .iter()
            .find(|w| w.canonical_id == id)
            .map(|w| w.name.clone())
            .or_else(|| {
                lookup.deployment.as_ref().and_then(|d| {
                    d.workflows
                        .iter()
                        .find(|w| w.workflow_id == id)
                        .map(|w| w.name.clone())
                })
            })
            .unwrap_or_else(|| id.to_string())
    };
    let mut n = match decoded {
        PromotionEvent::GatesEvaluated {
            from, to, results, ..
        } => match to {
            PromotionStatus::PendingApproval => {
                let mut n = base(
                    NotificationKind::PromotionPendingApproval,
                    "promotion",
                    Some(from.as_str().to_string()),
                    to.as_str(),
                );
                n.title = format!("{what} {route} waits for approval ({workflows})");
                n.details = vec![
                    format!(
                        "Requested by {}; {}.",
                        promotion.created_by,
                        passed_gates(results)
                    ),
                    if promotion.allow_self_approval {
                        "An admin approves or rejects it.".to_string()
                    } else {
                        format!(
                            "An admin other than {} approves or rejects it.",
                            promotion.created_by
                        )
                    },
                ];
                n
            }
            PromotionStatus::Failed => {
                let mut n = base(
                    NotificationKind::PromotionBlocked,
                    "promotion",
                    Some(from.as_str().to_string()),
                    to.as_str(),
                );
                n.title = format!("{what} {route} blocked by its gates ({workflows})");
                n.details = results
                    .iter()
                    .filter(|r| r.blocking && !r.passed)
                    .map(|r| {
                        format!(
                            "Gate {} failed: {}",
                            r.gate,
                            r.message.as_deref().unwrap_or("no reason given")
                        )
                    })
                    .collect();
                n.details.push("Nothing was deployed.".to_string());
                n
            }
            _ => return None,
        },
        PromotionEvent::Completed { from, outcomes, .. } => {
            let mut n = base(
                NotificationKind::PromotionCompleted,
                "promotion",
                Some(from.as_str().to_string()),
                "completed",
            );
            n.title = format!("{what} {route} completed ({workflows})");
            let mut tally: Vec<(String, usize)> = vec![];
            for o in outcomes {
                match tally.iter_mut().find(|(k, _)| *k == o.outcome) {
                    Some((_, c)) => *c += 1,
                    None => tally.push((o.outcome.clone(), 1)),
                }
            }
            let tally = tally
                .iter()
                .map(|(k, c)| format!("{c} {k}"))
                .collect::<Vec<_>>()
                .join(", ");
            n.details = vec![format!("Results: {tally}.")];
            if let Some(approver) = &promotion.approved_by {
                n.details.push(format!(
                    "Requested by {}, approved by {approver}.",
                    promotion.created_by
                ));
            }
            n
        }
        PromotionEvent::RolledBack {
            from,
            reason,
            outcomes,
            ..
        } => {
            let mut n = base(
                NotificationKind::PromotionRolledBack,
                "promotion",
                Some(from.as_str().to_string()),
                "rolled_back",
            );
            n.title = format!("{what} {route} rolled back ({workflows})");
            n.details = vec![format!(
                "Cause: {}",
                reason.as_deref().unwrap_or("no reason recorded")
            )];
            match &lookup.deployment {
                Some(deployment) => {
                    for w in deployment
                        .workflows
                        .iter()
                        .filter(|w| w.status == WorkflowDeployStatus::Failed)
                    {
                        n.details.push(format!(
                            "Failed: {}: {}",
                            w.name,
                            w.error.as_deref().unwrap_or("no message")
                        ));
                    }
                    let restored: Vec<String> = deployment
                        .workflows
                        .iter()
                        .filter_map(|w| w.restored.map(|a| format!("{} ({a})", w.name)))
                        .collect();
                    if !restored.is_empty() {
                        n.details.push(format!(
                            "Restored from the pre-deployment snapshot: {}.",
                            names(restored.iter().map(String::as_str))
                        ));
                    }
                }
                None => {
                    for o in outcomes.iter().filter(|o| o.detail.is_some()) {
                        n.details.push(format!(
                            "{}: {}: {}",
                            name_of(&o.canonical_id),
                            o.outcome,
                            o.detail.as_deref().unwrap_or_default()
                        ));
                    }
                }
            }
            n.details.push(
                "The target is pinned: the automation does not deploy to it until an admin unpins it."
                    .to_string(),
            );
            n
        }
        PromotionEvent::Failed {
            from,
            reason,
            inconsistencies,
            ..
        } => {
            let mut n = base(
                NotificationKind::PromotionFailed,
                "promotion",
                Some(from.as_str().to_string()),
                "failed",
            );
            n.title = format!("{what} {route} failed ({workflows})");
            n.details = vec![format!(
                "Cause: {}",
                reason.as_deref().unwrap_or("no reason recorded")
            )];
            for problem in inconsistencies {
                n.details
                    .push(format!("Not as before after the rollback: {problem}"));
            }
            n
        }
        _ => return None,
    };
    n.environment_id = Some(promotion.target_environment_id.clone());
    Some(n)
}

fn passed_gates(results: &[aggregates::promotion::GateResult]) -> String {
    let passed: Vec<&str> = results
        .iter()
        .filter(|r| r.passed)
        .map(|r| r.gate.as_str())
        .collect();
    if passed.is_empty() {
        "no gate was checked".to_string()
    } else {
        format!("gates passed: {}", passed.join(", "))
    }
}

/// Cuts `text` to at most `max` characters (an ellipsis marks the cut).
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// The delivery body for a channel of `format`.
pub fn render(n: &Notification, format: ChannelFormat) -> String {
    match format {
        ChannelFormat::Slack => {
            let context = format!(
                "{} · {} · by {} · <{}|Open in workflowops>",
                n.kind.as_str(),
                match &n.from {
                    Some(from) => format!("{from} → {}", n.to),
                    None => n.to.clone(),
                },
                n.actor,
                n.link
            );
            json!({
                "text": format!("{}\n{}", n.title, n.details.join("\n")),
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": cut(&n.title, SLACK_HEADER)}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": cut(&n.details.join("\n"), SLACK_SECTION)}},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
                ],
            })
        }
        ChannelFormat::Json => json!({
            "kind": n.kind.as_str(),
            "title": n.title,
            "details": n.details,
            "object": {"type": n.object_type, "id": n.object_id},
            "transition": {"from": n.from, "to": n.to},
            "environmentId": n.environment_id,
            "severity": n.severity.map(|s| s.as_str()),
            "actor": n.actor,
            "link": n.link,
            "at": n.at,
            "position": n.position,
            "eventType": n.event_type,
        }),
    }
    .to_string()
}
