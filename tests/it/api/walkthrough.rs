//! Scenario 3 of the walkthroughs (drift detection and incident resolution) driven
//! through GraphQL from an open incident to `closed`, then checked in the audit
//! trail; and every invalid incident transition refused with its allowed targets.

use aggregates::incident::{AffectedWorkflow, IncidentPolicy};
use aggregates::kernel::command::Role;
use serde_json::{json, Value};
use workflowops::workflows::incident_slot::report_drift;

use super::{code, register_environment, Api};
use crate::support::{both_backends, ctx, id, Kind};

pub const TENANT: &str = "acme";

/// Drift found on `environment`: the domain opens an incident (as the drift job
/// does). Returns the incident id and the position of its last event.
pub async fn open_incident(api: &Api, tenant: &str, environment: &str) -> (String, i64) {
    let affected = vec![AffectedWorkflow {
        workflow_id: "payment_gateway".into(),
        name: "Payment Gateway".into(),
    }];
    let (incident, committed) = report_drift(
        &api.domain,
        &ctx(tenant, Role::System),
        &id(environment),
        affected,
        Some("9f".repeat(32)),
        IncidentPolicy::default(),
    )
    .await
    .expect("drift opens an incident");
    (incident.to_string(), committed.position.unwrap())
}

const INCIDENT_FIELDS: &str =
    "id environmentId status severity slaState affectedWorkflows { workflowId name }
    detectedAt acknowledgedAt stabilizedAt reconciledAt closedAt ownerUserId ticketRef expiresAt
    resolutionType reason";

async fn transition(api: &Api, token: &str, mutation: &str, args: &str, vars: Value) -> Value {
    let query = format!(
        "mutation($id: ID!) {{ {mutation}(id: $id{args}) {{ position incident {{ {INCIDENT_FIELDS} }} }} }}"
    );
    api.ok(token, &query, vars).await[mutation].clone()
}

async fn scenario_3_incident_walkthrough(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    let oncall = api.token(TENANT, "developer", "user-oncall-5");
    let viewer = api.token(TENANT, "viewer", "auditor-1");
    register_environment(&api, &admin, "production", "PRODUCTION").await;

    // 1–4: a hotfix in production; the drift check opens an incident
    let (incident, opened_at) = open_incident(&api, TENANT, "production").await;
    let data = api
        .ok(
            &viewer,
            &format!(
                "query($p: Int) {{ incidents(environmentId: \"production\", minPosition: $p) {{
                   edges {{ cursor node {{ {INCIDENT_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }}
                   environment(id: \"production\", minPosition: $p) {{ activeIncident {{ id status }} }} }}"
            ),
            json!({ "p": opened_at }),
        )
        .await;
    let edges = data["incidents"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{data}");
    let node = &edges[0]["node"];
    assert_eq!(node["id"], incident.as_str());
    assert_eq!(node["status"], "DETECTED");
    assert_eq!(node["severity"], "LOW");
    assert_eq!(node["slaState"], "ON_TRACK");
    assert_eq!(node["affectedWorkflows"][0]["name"], "Payment Gateway");
    assert!(node["detectedAt"].is_string());
    assert_eq!(data["incidents"]["pageInfo"]["hasNextPage"], false);
    assert_eq!(
        data["environment"]["activeIncident"],
        json!({ "id": incident, "status": "DETECTED" })
    );

    // 5: the on-call developer acknowledges
    let vars = json!({ "id": incident });
    let ack = transition(
        &api,
        &oncall,
        "acknowledgeIncident",
        ", reason: \"Reviewing hotfix, will coordinate with team\", ownerUserId: \"user-oncall-5\", ticketRef: \"OPS-42\"",
        vars.clone(),
    )
    .await;
    assert_eq!(ack["incident"]["status"], "ACKNOWLEDGED");
    assert_eq!(ack["incident"]["ownerUserId"], "user-oncall-5");
    assert_eq!(ack["incident"]["ticketRef"], "OPS-42");
    assert!(ack["incident"]["acknowledgedAt"].is_string());
    let ack_position = ack["position"].as_i64().unwrap();
    assert!(ack_position > opened_at);

    // a developer cannot reconcile: admins only (DOMAIN.md §7)
    let refused = api
        .err(
            &oncall,
            "mutation($id: ID!) { reconcileIncident(id: $id, resolutionType: ACKNOWLEDGE) { position } }",
            vars.clone(),
        )
        .await;
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");

    // 6: the hotfix is committed to Git; the incident is stabilized
    let stabilized = transition(
        &api,
        &oncall,
        "stabilizeIncident",
        ", reason: \"Hotfix committed to Git, change documented\"",
        vars.clone(),
    )
    .await;
    assert_eq!(stabilized["incident"]["status"], "STABILIZED");
    assert!(stabilized["incident"]["stabilizedAt"].is_string());

    // reconcile needs a resolution type
    let refused = api
        .err(
            &admin,
            "mutation($id: ID!) { reconcileIncident(id: $id) { position } }",
            vars.clone(),
        )
        .await;
    assert_eq!(code(&refused), "VALIDATION", "{refused}");
    assert_eq!(refused["extensions"]["field"], "resolutionType");

    // 8: reconciled (Git now holds the runtime change)
    let reconciled = transition(
        &api,
        &admin,
        "reconcileIncident",
        ", resolutionType: ACKNOWLEDGE, resolutionDetails: \"Git synchronized with production hotfix\"",
        vars.clone(),
    )
    .await;
    assert_eq!(reconciled["incident"]["status"], "RECONCILED");
    assert_eq!(reconciled["incident"]["resolutionType"], "ACKNOWLEDGE");

    // 9: closed
    let closed = transition(
        &api,
        &admin,
        "closeIncident",
        ", reason: \"Drift resolved, all environments synchronized\"",
        vars.clone(),
    )
    .await;
    assert_eq!(closed["incident"]["status"], "CLOSED");
    assert!(closed["incident"]["closedAt"].is_string());
    let closed_at = closed["position"].as_i64().unwrap();

    // closing freed the environment's incident slot
    let data = api
        .ok(
            &viewer,
            "query($p: Int) { environment(id: \"production\", minPosition: $p) { activeIncident { id } } }",
            json!({ "p": closed_at }),
        )
        .await;
    assert_eq!(data["environment"]["activeIncident"], Value::Null);

    // the audit trail: every transition, in order, with who, why and from/to
    let data = api
        .ok(
            &viewer,
            "query($id: ID!, $p: Int) { auditTrail(aggregateType: \"incident\", aggregateId: $id, minPosition: $p) {
               edges { node { position actor actorRole eventType fromStatus toStatus reason adminOverride correlationId } } } }",
            json!({ "id": incident, "p": closed_at }),
        )
        .await;
    let entries: Vec<&Value> = data["auditTrail"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"])
        .collect();
    let summary: Vec<(String, String, Value, Value, Value)> = entries
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["eventType"].as_str().unwrap().to_string(),
                e["fromStatus"].clone(),
                e["toStatus"].clone(),
                e["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "system:drift".into(),
                "incident.detected".into(),
                Value::Null,
                json!("detected"),
                Value::Null
            ),
            (
                "user-oncall-5".into(),
                "incident.acknowledged".into(),
                json!("detected"),
                json!("acknowledged"),
                json!("Reviewing hotfix, will coordinate with team"),
            ),
            (
                "user-oncall-5".into(),
                "incident.stabilized".into(),
                json!("acknowledged"),
                json!("stabilized"),
                json!("Hotfix committed to Git, change documented"),
            ),
            (
                "admin-1".into(),
                "incident.reconciled".into(),
                json!("stabilized"),
                json!("reconciled"),
                json!("Git synchronized with production hotfix"),
            ),
            (
                "admin-1".into(),
                "incident.closed".into(),
                json!("reconciled"),
                json!("closed"),
                json!("Drift resolved, all environments synchronized"),
            ),
        ],
        "{data}"
    );
    let positions: Vec<i64> = entries
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert_eq!(*positions.last().unwrap(), closed_at);
    assert!(entries.iter().all(|e| e["adminOverride"] == false));
    assert_eq!(entries[1]["actorRole"], "developer");
    assert_eq!(entries[4]["actorRole"], "admin");
    // one correlation id per request: each transition came from its own request
    let correlations: std::collections::HashSet<&str> = entries
        .iter()
        .map(|e| e["correlationId"].as_str().unwrap())
        .collect();
    assert_eq!(correlations.len(), entries.len());

    // history, replay and the hash chain
    let data = api
        .ok(
            &viewer,
            "query($id: ID!, $p: Int) {
               eventHistory(aggregateType: \"incident\", aggregateId: $id) { position sequence eventType hash metadata }
               aggregateAt(aggregateType: \"incident\", aggregateId: $id, position: $p) { sequence state }
               verifyEventLog { ok checkedEvents firstBrokenPosition } }",
            json!({ "id": incident, "p": ack_position }),
        )
        .await;
    let history = data["eventHistory"].as_array().unwrap();
    assert_eq!(history.len(), 5);
    assert!(history
        .iter()
        .all(|e| e["hash"].as_str().is_some_and(|h| h.len() == 64)));
    assert_eq!(history[1]["metadata"]["actor"], "user-oncall-5");
    assert_eq!(data["aggregateAt"]["sequence"], 2);
    assert_eq!(data["aggregateAt"]["state"]["status"], "acknowledged");
    assert_eq!(data["verifyEventLog"]["ok"], true);
    assert_eq!(data["verifyEventLog"]["firstBrokenPosition"], Value::Null);
    assert_eq!(
        data["verifyEventLog"]["checkedEvents"].as_i64().unwrap(),
        api.event_count().await,
        "one tenant: every event is checked"
    );

    // closed is terminal, even for an admin override
    let refused = api
        .err(
            &admin,
            "mutation($id: ID!) { acknowledgeIncident(id: $id, adminOverride: true) { position } }",
            vars,
        )
        .await;
    assert_eq!(code(&refused), "INVALID_TRANSITION", "{refused}");
    assert_eq!(refused["extensions"]["from"], "closed");
    assert_eq!(refused["extensions"]["allowed"], json!([]));
    api.stop().await;
}

/// The incident table of DOMAIN.md §2.2.
const VALID: &[(&str, &[&str])] = &[
    ("detected", &["acknowledged", "closed"]),
    ("acknowledged", &["stabilized", "reconciled", "closed"]),
    ("stabilized", &["reconciled", "closed"]),
    ("reconciled", &["closed"]),
    ("closed", &[]),
];

/// (target state, mutation, arguments that satisfy its validation)
const MOVES: &[(&str, &str, &str)] = &[
    ("acknowledged", "acknowledgeIncident", ""),
    ("stabilized", "stabilizeIncident", ""),
    (
        "reconciled",
        "reconcileIncident",
        ", resolutionType: REVERT",
    ),
    (
        "closed",
        "closeIncident",
        ", reason: \"done\", resolutionType: REVERT",
    ),
];

/// The moves from `detected` that reach `state`.
fn path_to(state: &str) -> &'static [&'static str] {
    match state {
        "detected" => &[],
        "acknowledged" => &["acknowledged"],
        "stabilized" => &["acknowledged", "stabilized"],
        "reconciled" => &["acknowledged", "reconciled"],
        _ => &["closed"],
    }
}

async fn every_invalid_incident_transition_is_refused_with_allowed_targets(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    let mut refused_pairs = 0;
    for (from, allowed) in VALID {
        // one environment per starting state: each holds one open incident
        let environment = format!("env-{from}");
        register_environment(&api, &admin, &environment, "STAGING").await;
        let (incident, _) = open_incident(&api, TENANT, &environment).await;
        for step in path_to(from) {
            let (_, mutation, args) = MOVES.iter().find(|(to, _, _)| to == step).unwrap();
            transition(&api, &admin, mutation, args, json!({ "id": incident })).await;
        }
        let before = api.settled_event_count().await;
        for (to, mutation, args) in MOVES {
            if allowed.contains(to) {
                continue;
            }
            let query =
                format!("mutation($id: ID!) {{ {mutation}(id: $id{args}) {{ position }} }}");
            let body = api.gql(&admin, &query, json!({ "id": incident })).await;
            let error = &body["errors"][0];
            assert_eq!(code(error), "INVALID_TRANSITION", "{from} → {to}: {body}");
            assert_eq!(error["extensions"]["from"], *from);
            assert_eq!(error["extensions"]["to"], *to);
            assert_eq!(
                error["extensions"]["allowed"],
                json!(allowed),
                "{from} → {to}"
            );
            assert_eq!(error["extensions"]["retryable"], false);
            assert_eq!(
                error["message"],
                format!("cannot move incident from {from} to {to}")
            );
            assert_eq!(
                body["data"],
                Value::Null,
                "a refused mutation returns no payload"
            );
            refused_pairs += 1;
        }
        assert_eq!(
            api.settled_event_count().await,
            before,
            "refusals append nothing ({from})"
        );
    }
    // 4 targets × 5 states, minus the 8 allowed moves
    assert_eq!(refused_pairs, 4 * 5 - 8);
    api.stop().await;
}

both_backends!(
    scenario_3_incident_walkthrough,
    every_invalid_incident_transition_is_refused_with_allowed_targets
);
