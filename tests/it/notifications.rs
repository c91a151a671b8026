//! Notifications (issue 15 point 5): the texts of every kind word for word on
//! fixtures, then channels through the API: a Slack channel and a generic JSON
//! channel receive the promotion, incident, drift-check and endpoint notifications
//! of a real flow, signed, with a link whose query the API answers, and the
//! channel's URL (a credential) never leaves the secret store.

use std::time::{Duration, Instant};

use aggregates::deployment::{Deployment, DeploymentWorkflow, RestoreAction, WorkflowDeployStatus};
use aggregates::environment::EnvironmentEvent;
use aggregates::incident::{
    AffectedWorkflow, DriftIncident, IncidentEvent, IncidentStatus, ResolutionType, Severity,
    SlaState,
};
use aggregates::promotion::{
    Gate, GateResult, Promotion, PromotionEvent, PromotionStatus, PromotionWorkflow,
    WorkflowOutcome,
};
use aggregates::webhook::{ChannelFormat, NotificationKind, WebhookEvent, WebhookStatus};
use axum::http::Method;
use chrono::{TimeZone, Utc};
use eventstore::StoredEvent;
use serde_json::{json, Value};
use workflowops::integrations::notifications::{describe, render, Lookup, Notification};

use crate::api::Api;
use crate::deployments::Setup;
use crate::fakes::n8n::Fault;
use crate::fakes::receiver::{Received, Receiver};
use crate::support::{both_backends, Kind};

both_backends!(
    promotions_reach_a_slack_and_a_json_channel,
    incidents_drift_checks_and_endpoints_are_notified,
);

const PUBLIC: &str = "https://wfo.example.com";

fn event(aggregate_type: &str, id: &str, payload: Value, actor: &str) -> StoredEvent {
    let event_type = format!(
        "{aggregate_type}.{}",
        payload["type"].as_str().expect("a tagged event")
    );
    let mut metadata = serde_json::Map::new();
    metadata.insert("actor".into(), json!(actor));
    StoredEvent {
        position: 42,
        tx_id: None,
        recorded_at: Utc.with_ymd_and_hms(2026, 12, 4, 9, 30, 0).unwrap(),
        aggregate_type: aggregate_type.to_string(),
        aggregate_id: format!("acme:{id}"),
        sequence: 3,
        event_type,
        event_version: "1".into(),
        payload,
        metadata,
    }
}

fn environments() -> Vec<(String, String)> {
    vec![
        ("dev".into(), "Development".into()),
        ("prod".into(), "Production".into()),
    ]
}

fn incident() -> DriftIncident {
    DriftIncident {
        opened: true,
        environment_id: "prod".into(),
        production: true,
        status: IncidentStatus::Acknowledged,
        severity: Severity::High,
        sla_state: SlaState::Escalated,
        affected_workflows: ["Order Sync", "Daily Report"]
            .iter()
            .map(|n| AffectedWorkflow {
                workflow_id: n.to_lowercase().replace(' ', "-"),
                name: n.to_string(),
            })
            .collect(),
        sla_deadline: Some(Utc.with_ymd_and_hms(2026, 12, 4, 13, 0, 0).unwrap()),
        ..Default::default()
    }
}

fn promotion() -> Promotion {
    Promotion {
        created: true,
        status: PromotionStatus::Running,
        pipeline_id: "main".into(),
        source_environment_id: "dev".into(),
        target_environment_id: "prod".into(),
        workflows: ["Enrich Order", "Order Sync", "Daily Report"]
            .iter()
            .enumerate()
            .map(|(i, n)| PromotionWorkflow {
                canonical_id: format!("wf-{i}"),
                name: n.to_string(),
                source_content_hash: None,
            })
            .collect(),
        requires_approval: true,
        created_by: "alice".into(),
        approved_by: Some("bob".into()),
        deployment_id: Some("d1".into()),
        ..Default::default()
    }
}

fn deployment() -> Deployment {
    let workflow =
        |i: usize, name: &str, status, error: Option<&str>, restored| DeploymentWorkflow {
            workflow_id: format!("wf-{i}"),
            name: name.into(),
            status,
            error: error.map(str::to_string),
            attempts: 1,
            target_id: None,
            created: false,
            content_hash: None,
            deleted: false,
            restored,
            restore_error: None,
        };
    Deployment {
        created: true,
        promotion_id: "p1".into(),
        workflows: vec![
            workflow(
                0,
                "Enrich Order",
                WorkflowDeployStatus::Success,
                None,
                Some(RestoreAction::Updated),
            ),
            workflow(
                1,
                "Order Sync",
                WorkflowDeployStatus::Failed,
                Some("n8n answered 400: request/body/nodes/1 must have required property 'type'"),
                None,
            ),
            workflow(2, "Daily Report", WorkflowDeployStatus::Pending, None, None),
        ],
        ..Default::default()
    }
}

fn lookup() -> Lookup {
    Lookup {
        environments: environments(),
        incident: Some(incident()),
        promotion: Some(promotion()),
        deployment: Some(deployment()),
    }
}

fn notify(event: &StoredEvent) -> Notification {
    describe(event, &lookup(), PUBLIC)
        .unwrap()
        .unwrap_or_else(|| panic!("{} makes a notification", event.event_type))
}

fn text(n: &Notification) -> Vec<String> {
    let mut lines = vec![n.title.clone()];
    lines.extend(n.details.iter().cloned());
    lines
}

fn gate(gate: Gate, passed: bool, message: Option<&str>) -> GateResult {
    GateResult {
        gate,
        passed,
        blocking: true,
        message: message.map(str::to_string),
    }
}

fn decoded_query(link: &str) -> String {
    let query = link.split_once("?query=").expect("a GraphiQL link").1;
    url::form_urlencoded::parse(format!("q={query}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned()
}

#[test]
fn every_kind_says_what_and_why_word_for_word() {
    let at = |h| Utc.with_ymd_and_hms(2026, 12, 4, h, 0, 0).unwrap();
    // incident opened
    let opened = event(
        "incident",
        "inc-1",
        to_json(&IncidentEvent::Detected {
            environment_id: "prod".into(),
            severity: Severity::High,
            affected_workflows: incident().affected_workflows,
            snapshot_digest: None,
            policy: Default::default(),
            production: true,
            detected_at: at(9),
            sla_deadline: at(13),
        }),
        "system:drift",
    );
    let n = notify(&opened);
    assert_eq!(n.kind, NotificationKind::IncidentOpened);
    assert_eq!(
        text(&n),
        [
            "Incident opened on Production (prod): 2 workflows drifted, severity high",
            "2 workflows drifted from Git: Order Sync, Daily Report.",
            "Severity high (production); SLA deadline 2026-12-04 13:00 UTC.",
        ]
    );
    assert_eq!(
        (n.environment_id.as_deref(), n.severity),
        (Some("prod"), Some(Severity::High))
    );
    assert_eq!((n.from.as_deref(), n.to.as_str()), (None, "detected"));
    assert_eq!(n.actor, "system:drift");
    assert_eq!(
        decoded_query(&n.link),
        "{ incident(id: \"inc-1\") { id status severity slaState slaDeadline environmentId } }"
    );
    assert!(n.link.starts_with("https://wfo.example.com/graphql?query="));

    // escalated, expired
    let escalated = event(
        "incident",
        "inc-1",
        to_json(&IncidentEvent::SlaEscalated {
            from: SlaState::OnTrack,
            to: SlaState::Escalated,
        }),
        "system:ttl",
    );
    assert_eq!(
        text(&notify(&escalated)),
        [
            "Incident on Production (prod) escalated: SLA on_track → escalated",
            "2 workflows drifted from Git: Order Sync, Daily Report.",
            "Severity high; status acknowledged; SLA deadline 2026-12-04 13:00 UTC.",
        ]
    );
    let expired = event(
        "incident",
        "inc-1",
        to_json(&IncidentEvent::SlaEscalated {
            from: SlaState::CriticalOverdue,
            to: SlaState::Expired,
        }),
        "system:ttl",
    );
    let n = notify(&expired);
    assert_eq!(n.kind, NotificationKind::IncidentExpired);
    assert_eq!(
        text(&n),
        [
            "Incident on Production (prod) expired: its SLA deadline 2026-12-04 13:00 UTC has passed",
            "2 workflows drifted from Git: Order Sync, Daily Report.",
            "Severity high; status acknowledged; SLA deadline 2026-12-04 13:00 UTC.",
        ]
    );
    // closed
    let closed = event(
        "incident",
        "inc-1",
        to_json(&IncidentEvent::Closed {
            from: IncidentStatus::Acknowledged,
            reason: "hotfix committed to Git".into(),
            resolution_type: ResolutionType::Acknowledge,
            at: at(10),
            admin_override: true,
            approval_bypassed: false,
        }),
        "carol",
    );
    let n = notify(&closed);
    assert_eq!(
        text(&n),
        [
            "Incident on Production (prod) closed (acknowledge)",
            "Reason: hotfix committed to Git",
            "Closed from acknowledged by an admin override.",
        ]
    );
    assert_eq!(
        (n.kind, n.actor.as_str()),
        (NotificationKind::IncidentClosed, "carol")
    );

    // promotion waiting for approval, blocked
    let results = vec![
        gate(Gate::TargetEnvironmentHealthy, true, None),
        gate(Gate::RequireCleanDrift, true, None),
    ];
    let pending = event(
        "promotion",
        "p1",
        to_json(&PromotionEvent::GatesEvaluated {
            from: PromotionStatus::Pending,
            to: PromotionStatus::PendingApproval,
            results,
            bypassed: false,
        }),
        "alice",
    );
    let n = notify(&pending);
    assert_eq!(n.kind, NotificationKind::PromotionPendingApproval);
    assert_eq!(
        text(&n),
        [
            "Promotion Development (dev) → Production (prod) waits for approval (3 workflows)",
            "Requested by alice; gates passed: target_environment_healthy, require_clean_drift.",
            "An admin other than alice approves or rejects it.",
        ]
    );
    assert_eq!(n.environment_id.as_deref(), Some("prod"));
    assert_eq!(
        (n.from.as_deref(), n.to.as_str()),
        (Some("pending"), "pending_approval")
    );
    let blocked = event(
        "promotion",
        "p1",
        to_json(&PromotionEvent::GatesEvaluated {
            from: PromotionStatus::Pending,
            to: PromotionStatus::Failed,
            results: vec![
                gate(Gate::TargetEnvironmentHealthy, true, None),
                gate(
                    Gate::BlockOnActiveDrift,
                    false,
                    Some("incident inc-1 is open on prod"),
                ),
            ],
            bypassed: false,
        }),
        "alice",
    );
    let n = notify(&blocked);
    assert_eq!(n.kind, NotificationKind::PromotionBlocked);
    assert_eq!(
        text(&n),
        [
            "Promotion Development (dev) → Production (prod) blocked by its gates (3 workflows)",
            "Gate block_on_active_drift failed: incident inc-1 is open on prod",
            "Nothing was deployed.",
        ]
    );
    // completed
    let outcome = |i: usize, outcome: &str| WorkflowOutcome {
        canonical_id: format!("wf-{i}"),
        outcome: outcome.into(),
        detail: None,
    };
    let completed = event(
        "promotion",
        "p1",
        to_json(&PromotionEvent::Completed {
            from: PromotionStatus::Running,
            outcomes: vec![
                outcome(0, "success"),
                outcome(1, "success"),
                outcome(2, "unchanged"),
            ],
            at: at(10),
        }),
        "system:deployments",
    );
    assert_eq!(
        text(&notify(&completed)),
        [
            "Promotion Development (dev) → Production (prod) completed (3 workflows)",
            "Results: 2 success, 1 unchanged.",
            "Requested by alice, approved by bob.",
        ]
    );
    // rolled back: which workflow failed with n8n's message, what was restored
    let rolled_back = event(
        "promotion",
        "p1",
        to_json(&PromotionEvent::RolledBack {
            from: PromotionStatus::Running,
            outcomes: vec![],
            reason: Some("Order Sync could not be written".into()),
            at: at(10),
        }),
        "system:deployments",
    );
    let n = notify(&rolled_back);
    assert_eq!(n.kind, NotificationKind::PromotionRolledBack);
    assert_eq!(
        text(&n),
        [
            "Promotion Development (dev) → Production (prod) rolled back (3 workflows)",
            "Cause: Order Sync could not be written",
            "Failed: Order Sync: n8n answered 400: request/body/nodes/1 must have required property 'type'",
            "Restored from the pre-deployment snapshot: Enrich Order (updated).",
            "The target is pinned: the automation does not deploy to it until an admin unpins it.",
        ]
    );
    // failed
    let failed = event(
        "promotion",
        "p1",
        to_json(&PromotionEvent::Failed {
            from: PromotionStatus::Running,
            reason: Some("Order Sync could not be written".into()),
            inconsistencies: vec!["Enrich Order: still holds the promoted version".into()],
            at: at(10),
        }),
        "system:deployments",
    );
    assert_eq!(
        text(&notify(&failed)),
        [
            "Promotion Development (dev) → Production (prod) failed (3 workflows)",
            "Cause: Order Sync could not be written",
            "Not as before after the rollback: Enrich Order: still holds the promoted version",
        ]
    );
    // drift check failed
    let check = event(
        "environment",
        "prod",
        to_json(&EnvironmentEvent::DriftCheckFailed {
            cause: "n8n answered 503: Service Unavailable".into(),
            at: at(9),
        }),
        "system:drift",
    );
    let n = notify(&check);
    assert_eq!(n.kind, NotificationKind::DriftCheckFailed);
    assert_eq!(
        text(&n),
        [
            "Drift check failed on Production (prod)",
            "Cause: n8n answered 503: Service Unavailable",
            "Drift is not known for this environment until a check succeeds.",
        ]
    );
    // endpoint disabled, by the sender
    let disabled = event(
        "webhook",
        "hook",
        to_json(&WebhookEvent::Disabled {
            from: WebhookStatus::Active,
            reason: "the receiver answered 410 Gone".into(),
            automatic: true,
        }),
        "system:webhooks",
    );
    let n = notify(&disabled);
    assert_eq!(n.kind, NotificationKind::WebhookDisabled);
    assert_eq!(
        text(&n),
        [
            "Webhook endpoint hook disabled",
            "Cause: the receiver answered 410 Gone",
            "Disabled by the sender. Its undelivered events wait in its queue; enabling it delivers them in order.",
        ]
    );
    assert_eq!((n.environment_id.as_deref(), n.severity), (None, None));

    // the two formats, whole
    let n = notify(&check);
    let slack: Value = serde_json::from_str(&render(&n, ChannelFormat::Slack)).unwrap();
    assert_eq!(
        slack,
        json!({
            "text": "Drift check failed on Production (prod)\nCause: n8n answered 503: Service Unavailable\nDrift is not known for this environment until a check succeeds.",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "Drift check failed on Production (prod)"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "Cause: n8n answered 503: Service Unavailable\nDrift is not known for this environment until a check succeeds."}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": format!(
                    "drift_check_failed · drift_check_failed · by system:drift · <{}|Open in workflowops>", n.link)}]},
            ]
        })
    );
    let generic: Value = serde_json::from_str(&render(&n, ChannelFormat::Json)).unwrap();
    assert_eq!(
        generic,
        json!({
            "kind": "drift_check_failed",
            "title": "Drift check failed on Production (prod)",
            "details": ["Cause: n8n answered 503: Service Unavailable",
                        "Drift is not known for this environment until a check succeeds."],
            "object": {"type": "environment", "id": "prod"},
            "transition": {"from": null, "to": "drift_check_failed"},
            "environmentId": "prod",
            "severity": null,
            "actor": "system:drift",
            "link": n.link,
            "at": "2026-12-04T09:30:00Z",
            "position": 42,
            "eventType": "environment.drift_check_failed",
        })
    );
    // a long list is cut: "and N more"
    let mut many = lookup();
    many.incident.as_mut().unwrap().affected_workflows = (0..13)
        .map(|i| AffectedWorkflow {
            workflow_id: format!("w{i}"),
            name: format!("W{i}"),
        })
        .collect();
    let n = describe(&escalated, &many, PUBLIC).unwrap().unwrap();
    assert_eq!(
        n.details[0],
        "13 workflows drifted from Git: W0, W1, W2, W3, W4, W5, W6, W7, W8, W9 and 3 more."
    );
    // events that are no notification
    let enabled = event(
        "webhook",
        "hook",
        to_json(&WebhookEvent::Enabled {
            from: WebhookStatus::Disabled,
        }),
        "x",
    );
    assert!(describe(&enabled, &lookup(), PUBLIC).unwrap().is_none());
}

/// An event as the store holds it.
fn to_json<T: serde::Serialize>(event: &T) -> Value {
    serde_json::to_value(event).unwrap()
}

const CREATE: &str = "mutation($id: ID!, $url: String!, $format: ChannelFormat!,
    $kinds: [NotificationKind!], $env: ID) {
    createNotificationRule(id: $id, url: $url, format: $format, kinds: $kinds,
      environmentId: $env, description: \"ops\") {
      position secret webhook { id url status notificationRule { format kinds environmentId } } } }";

/// A Slack-like URL whose path is the credential.
fn channel_url(receiver: &Receiver) -> String {
    receiver
        .url()
        .replace("/hooks/workflowops", "/services/T0001/B0001/s3cr3tT0k3n")
}

async fn channel(
    api: &Api,
    token: &str,
    id: &str,
    receiver: &Receiver,
    format: &str,
    kinds: Value,
    env: Value,
) -> String {
    let data = api
        .ok(
            token,
            CREATE,
            json!({ "id": id, "url": channel_url(receiver), "format": format, "kinds": kinds, "env": env }),
        )
        .await;
    let hook = &data["createNotificationRule"]["webhook"];
    assert_eq!(hook["status"], "active", "{data}");
    // only the origin is shown: the path is the credential
    assert!(hook["url"].as_str().unwrap().ends_with("/…"), "{data}");
    assert!(!data.to_string().contains("s3cr3tT0k3n"), "{data}");
    data["createNotificationRule"]["secret"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits until the receiver accepted a message whose title starts with `title`.
async fn message(receiver: &Receiver, title: &str) -> Received {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = receiver.accepted().into_iter().find(|r| {
            let body = r.event();
            body["title"]
                .as_str()
                .or(body["blocks"][0]["text"]["text"].as_str())
                .is_some_and(|t| t.starts_with(title))
        }) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no message {title:?}; received {:?}",
            receiver
                .received()
                .iter()
                .map(|r| r.body.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn titles(receiver: &Receiver) -> Vec<String> {
    receiver
        .accepted()
        .iter()
        .map(|r| {
            let body = r.event();
            body["title"]
                .as_str()
                .or(body["blocks"][0]["text"]["text"].as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The link's query, run as the admin: the object it names is there.
async fn follow(api: &Api, token: &str, link: &str) -> Value {
    assert!(
        link.starts_with("https://workflowops.example.com/graphql?query="),
        "{link}"
    );
    api.ok(token, &decoded_query(link), json!({})).await
}

async fn promotions_reach_a_slack_and_a_json_channel(kind: Kind) {
    let s = Setup::new(kind).await;
    let slack = Receiver::start().await;
    let generic = Receiver::start().await;
    let slack_secret = channel(
        &s.api,
        &s.admin,
        "slack",
        &slack,
        "SLACK",
        json!([
            "PROMOTION_PENDING_APPROVAL",
            "PROMOTION_COMPLETED",
            "PROMOTION_ROLLED_BACK"
        ]),
        json!("staging"),
    )
    .await;
    channel(
        &s.api,
        &s.admin,
        "generic",
        &generic,
        "JSON",
        json!(null),
        json!(null),
    )
    .await;

    s.approved("p1").await;
    assert_eq!(s.deploy_now("p1").await["status"], "SUCCESS");
    let pending = message(&slack, "Promotion dev → staging waits for approval").await;
    assert!(pending.signed_by(&slack_secret));
    let body = pending.event();
    assert_eq!(
        body["text"],
        "Promotion dev → staging waits for approval (3 workflows)\nRequested by admin-1; gates passed: target_environment_healthy, require_clean_drift, allow_overwriting_hotfixes.\nAn admin other than admin-1 approves or rejects it."
    );
    let context = body["blocks"][2]["elements"][0]["text"].as_str().unwrap();
    assert!(
        context.starts_with("promotion_pending_approval · pending → pending_approval · by admin-1 · <https://workflowops.example.com/graphql?query="),
        "{context}"
    );
    let completed = message(&slack, "Promotion dev → staging completed")
        .await
        .event();
    assert_eq!(
        completed["text"],
        "Promotion dev → staging completed (3 workflows)\nResults: 3 success.\nRequested by admin-1, approved by admin-2."
    );

    // the second promotion fails at Order Sync and is rolled back
    for (i, url) in [
        (0, "https://crm.example.com/v2"),
        (1, "https://slack.example.com/v2"),
    ] {
        s.change_in_dev(i, url).await;
    }
    s.approved("p2").await;
    s.refuse_next_update("Order Sync");
    assert_eq!(s.deploy_now("p2").await["status"], "FAILED");
    let rolled = message(&generic, "Promotion dev → staging rolled back").await;
    let body = rolled.event();
    assert_eq!(body["kind"], "promotion_rolled_back");
    assert_eq!(body["object"], json!({"type": "promotion", "id": "p2"}));
    assert_eq!(
        body["transition"],
        json!({"from": "running", "to": "rolled_back"})
    );
    assert_eq!(body["environmentId"], "staging");
    assert_eq!(body["eventType"], "promotion.rolled_back");
    let details: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(details[0].starts_with("Cause: "), "{details:?}");
    assert!(
        details.iter().any(|d| d.starts_with("Failed: Order Sync: ")
            && d.ends_with("request/body/nodes/1 must have required property 'type'")),
        "which workflow failed, with n8n's message: {details:?}"
    );
    assert!(
        details.iter().any(
            |d| d.starts_with("Restored from the pre-deployment snapshot: ")
                && d.contains("Enrich Order (updated)")
        ),
        "what was restored: {details:?}"
    );
    assert_eq!(
        details.last().unwrap(),
        &"The target is pinned: the automation does not deploy to it until an admin unpins it."
    );
    let followed = follow(&s.api, &s.admin, body["link"].as_str().unwrap()).await;
    assert_eq!(
        followed["promotion"]["targetEnvironmentId"], "staging",
        "{followed}"
    );
    message(&slack, "Promotion dev → staging rolled back").await;

    // the Slack channel got exactly its kinds, in log order; the JSON one all of them
    let slack_titles = titles(&slack);
    assert_eq!(slack_titles.len(), 4, "{slack_titles:?}");
    assert!(slack_titles[0].contains("waits for approval"));
    assert!(slack_titles[1].contains("completed"));
    assert!(slack_titles[2].contains("waits for approval"));
    assert!(slack_titles[3].contains("rolled back"));
    let generic_kinds: Vec<String> = generic
        .accepted()
        .iter()
        .map(|r| r.event()["kind"].as_str().unwrap().to_string())
        .collect();
    for kind in [
        "promotion_pending_approval",
        "promotion_completed",
        "promotion_rolled_back",
    ] {
        assert!(generic_kinds.iter().any(|k| k == kind), "{generic_kinds:?}");
    }
    // the deliveries are listed like a webhook's, by kind
    let deliveries = s
        .api
        .ok(
            &s.admin,
            "{ webhookDeliveries(webhookId: \"slack\", first: 10) { nodes { eventType status } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        deliveries["webhookDeliveries"]["nodes"][0]["eventType"],
        "notification.promotion_rolled_back",
        "{deliveries}"
    );
    // the channel's URL is nowhere in the log, and the API shows its origin only
    let total = s.api.event_count().await as usize;
    for e in crate::conformance::read_all(&s.api.store.store, total).await {
        assert!(!e.payload.to_string().contains("s3cr3tT0k3n"), "{e:?}");
    }
    let listed = s
        .api
        .ok(
            &s.admin,
            "{ webhooks { id url notificationRule { format kinds environmentId severities } } }",
            json!({}),
        )
        .await;
    assert!(!listed.to_string().contains("s3cr3tT0k3n"), "{listed}");
    assert_eq!(
        listed["webhooks"][0]["notificationRule"],
        json!({"format": "SLACK", "environmentId": "staging", "severities": [],
               "kinds": ["PROMOTION_PENDING_APPROVAL", "PROMOTION_COMPLETED", "PROMOTION_ROLLED_BACK"]})
    );
}

async fn incidents_drift_checks_and_endpoints_are_notified(kind: Kind) {
    let s = Setup::new(kind).await;
    let receiver = Receiver::start().await;
    channel(
        &s.api,
        &s.admin,
        "ops",
        &receiver,
        "JSON",
        json!(null),
        json!(null),
    )
    .await;
    // a channel for another environment only: it gets no staging notification
    let dev_only = Receiver::start().await;
    channel(
        &s.api,
        &s.admin,
        "dev-only",
        &dev_only,
        "JSON",
        json!(null),
        json!("dev"),
    )
    .await;
    // bad input: unknown environment, internal target, updating a channel as a webhook
    let refused = s
        .api
        .err(
            &s.admin,
            CREATE,
            json!({ "id": "x", "url": channel_url(&receiver), "format": "SLACK", "kinds": null, "env": "nowhere" }),
        )
        .await;
    assert_eq!(crate::api::code(&refused), "VALIDATION", "{refused}");
    let refused = s
        .api
        .err(
            &s.admin,
            CREATE,
            json!({ "id": "x", "url": "http://10.0.0.1/hook", "format": "SLACK", "kinds": null, "env": null }),
        )
        .await;
    assert_eq!(crate::api::code(&refused), "VALIDATION", "{refused}");
    let refused = s
        .api
        .err(
            &s.admin,
            "mutation { updateWebhook(id: \"ops\", url: \"https://example.com/x\") { position } }",
            json!({}),
        )
        .await;
    assert_eq!(crate::api::code(&refused), "VALIDATION", "{refused}");

    // promoted, then hotfixed in staging: the drift check opens an incident
    let incident = s.drift_incident_on_staging().await;
    let opened = message(
        &receiver,
        "Incident opened on staging: 1 workflow drifted, severity",
    )
    .await;
    let body = opened.event();
    assert_eq!(body["kind"], "incident_opened");
    assert_eq!(body["object"], json!({"type": "incident", "id": incident}));
    assert_eq!(
        body["details"][0],
        "1 workflow drifted from Git: Daily Report."
    );
    assert!(
        body["details"][1]
            .as_str()
            .unwrap()
            .contains("; SLA deadline "),
        "{body}"
    );
    let followed = follow(&s.api, &s.admin, body["link"].as_str().unwrap()).await;
    assert_eq!(
        followed["incident"]["environmentId"], "staging",
        "{followed}"
    );

    s.api
        .ok(
            &s.admin,
            "mutation($id: ID!) { closeIncident(id: $id, reason: \"accepted as is\",
               resolutionType: ACKNOWLEDGE, adminOverride: true) { position } }",
            json!({ "id": incident }),
        )
        .await;
    let closed = message(&receiver, "Incident on staging closed")
        .await
        .event();
    assert_eq!(closed["details"][0], "Reason: accepted as is");
    assert_eq!(closed["actor"], "admin-1");

    // staging's n8n fails: the drift check fails, and says why
    s.staging.fault_next_on(
        Method::GET,
        "/workflows",
        20,
        Fault::Status {
            status: 503,
            message: "Service Unavailable".into(),
        },
    );
    let _ = s
        .api
        .gql(
            &s.admin,
            "mutation { checkDrift(environmentId: \"staging\") { position } }",
            json!({}),
        )
        .await;
    let failed = message(&receiver, "Drift check failed on staging")
        .await
        .event();
    assert!(
        failed["details"][0]
            .as_str()
            .unwrap()
            .starts_with("Cause: "),
        "{failed}"
    );
    assert!(
        failed["details"][0].as_str().unwrap().contains("503"),
        "{failed}"
    );
    let followed = follow(&s.api, &s.admin, failed["link"].as_str().unwrap()).await;
    // (the link names the object; the read model may not hold the failure yet)
    assert_eq!(followed["environment"]["id"], "staging", "{followed}");

    // an endpoint disabled by an admin
    let plain = Receiver::start().await;
    s.api
        .ok(
            &s.admin,
            "mutation($url: String!) { createWebhook(id: \"tickets\", url: $url) { position } }",
            json!({ "url": plain.url() }),
        )
        .await;
    s.api
        .ok(
            &s.admin,
            "mutation { disableWebhook(id: \"tickets\", reason: \"moving to the new ticketing system\") { position } }",
            json!({}),
        )
        .await;
    let disabled = message(&receiver, "Webhook endpoint tickets disabled")
        .await
        .event();
    assert_eq!(
        disabled["details"],
        json!([
            "Cause: moving to the new ticketing system",
            "Its undelivered events wait in its queue; enabling it delivers them in order."
        ])
    );
    assert_eq!(disabled["actor"], "admin-1");
    assert_eq!(
        disabled["transition"],
        json!({"from": "active", "to": "disabled"})
    );
    let followed = follow(&s.api, &s.admin, disabled["link"].as_str().unwrap()).await;
    assert!(
        followed["webhookDeliveries"]["nodes"].is_array(),
        "{followed}"
    );

    // the dev-only channel heard about no staging object, only the endpoint
    let heard: Vec<String> = dev_only
        .accepted()
        .iter()
        .map(|r| r.event()["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(heard.iter().all(|k| k == "webhook_disabled"), "{heard:?}");
    // a channel is updated (kinds only; the sealed URL stays) and deleted
    s.api
        .ok(
            &s.admin,
            "mutation { updateNotificationRule(id: \"dev-only\", format: SLACK, kinds: [INCIDENT_OPENED],
               severities: [CRITICAL]) { webhook { url notificationRule { format kinds severities environmentId } } } }",
            json!({}),
        )
        .await;
    let rules = s
        .api
        .ok(
            &s.admin,
            "{ webhooks { id notificationRule { format kinds severities } } }",
            json!({}),
        )
        .await;
    let dev_rule = rules["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "dev-only")
        .unwrap()
        .clone();
    assert_eq!(
        dev_rule["notificationRule"],
        json!({"format": "SLACK", "kinds": ["INCIDENT_OPENED"], "severities": ["CRITICAL"]})
    );
    s.api
        .ok(
            &s.admin,
            "mutation { deleteWebhook(id: \"dev-only\") { position } }",
            json!({}),
        )
        .await;
}
