//! The service around the API: the committed schema file, `/metrics`, GraphiQL.

use serde_json::json;

use super::walkthrough::{open_incident, TENANT};
use super::{register_environment, Api};
use crate::support::Kind;

#[test]
fn committed_schema_matches_the_served_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let committed = std::fs::read_to_string(path).expect("schema.graphql is committed");
    let served = workflowops::graphql::sdl();
    assert!(
        committed == served,
        "schema.graphql differs from the served schema; regenerate it with \
         `cargo run -q -- schema > schema.graphql` and review the diff"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_command_outcomes_and_projection_lag() {
    let api = Api::start(Kind::Sqlite).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    let developer = api.token(TENANT, "developer", "dev-1");
    register_environment(&api, &admin, "production", "PRODUCTION").await;
    let (incident, _) = open_incident(&api, TENANT, "production").await;
    let ack = "mutation($id: ID!) { acknowledgeIncident(id: $id) { position } }";
    api.ok(&developer, ack, json!({ "id": incident })).await;
    let refused = api.err(&developer, ack, json!({ "id": incident })).await;
    assert_eq!(super::code(&refused), "INVALID_TRANSITION");
    let (status, _) = api
        .post(None, json!({ "query": "{ environments { id } }" }))
        .await;
    assert_eq!(status, 401);

    let response = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = response.text().await.unwrap();
    for expected in [
        "workflowops_commands_total{command=\"environment.register\",code=\"OK\"} 1",
        "workflowops_commands_total{command=\"incident.acknowledge\",code=\"OK\"} 1",
        "workflowops_commands_total{command=\"incident.acknowledge\",code=\"INVALID_TRANSITION\"} 1",
        "workflowops_http_requests_total{route=\"/graphql\",status=\"200\"} 3",
        "workflowops_http_requests_total{route=\"/graphql\",status=\"401\"} 1",
        "workflowops_projection_lag_positions{projection=\"incidents\"}",
        "workflowops_projection_checkpoint_position{projection=\"audit_trail\"}",
        "workflowops_log_head_position",
        "workflowops_event_streams 0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_is_served_on_get() {
    let api = Api::start(Kind::Sqlite).await;
    let response = api
        .http
        .get(format!("{}/graphql", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = response.text().await.unwrap();
    assert!(html.contains("graphiql") && html.contains("/graphql/ws"));
    // `?query=` fills the editor (the links in notifications rely on it)
    assert!(
        html.contains("query: new URLSearchParams(window.location.search).get('query')"),
        "{html}"
    );
    api.stop().await;
}

/// A cached answer is never served once the read models moved: a plain query asked
/// again after a change (seen through `minPosition`) returns the new state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_follow_the_read_models() {
    let api = Api::start(Kind::Sqlite).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    let query = "{ environments { id } }";
    let ids = |data: &serde_json::Value| -> Vec<String> {
        data["environments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let position = register_environment(&api, &admin, "dev", "DEV").await;
    api.ok(
        &admin,
        "query($p: Int) { environments(minPosition: $p) { id } }",
        json!({ "p": position }),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(ids(&api.ok(&admin, query, json!({})).await), ["dev"]);
    }
    let position = register_environment(&api, &admin, "staging", "STAGING").await;
    api.ok(
        &admin,
        "query($p: Int) { environments(minPosition: $p) { id } }",
        json!({ "p": position }),
    )
    .await;
    assert_eq!(
        ids(&api.ok(&admin, query, json!({})).await),
        ["dev", "staging"]
    );
    // another tenant asking the same question gets its own answer
    let other = api.token("globex", "viewer", "v");
    assert!(ids(&api.ok(&other, query, json!({})).await).is_empty());
    api.stop().await;
}

/// A mutation's payload takes its row from what the projector running in this
/// process shared after its commit (decision 80), counted in `/metrics`: the same
/// answer a query of the read model gives afterwards, a time sent with nanoseconds
/// included (the table keeps microseconds).
async fn read_backs_come_from_memory_and_equal_the_table(kind: Kind) {
    const FIELDS: &str = "id environmentId status severity slaState slaDeadline
        affectedWorkflows { workflowId name } detectedAt acknowledgedAt ownerUserId
        ticketRef expiresAt reason adminOverride updatedAt snapshotDigest";
    let api = Api::start(kind).await;
    let admin = api.token(TENANT, "admin", "admin-1");
    let developer = api.token(TENANT, "developer", "dev-1");
    register_environment(&api, &admin, "production", "PRODUCTION").await;
    let (incident, _) = open_incident(&api, TENANT, "production").await;
    let ack = api
        .ok(
            &developer,
            &format!(
                "mutation($id: ID!) {{ acknowledgeIncident(id: $id, reason: \"on it\",
                   ownerUserId: \"dev-1\", ticketRef: \"OPS-1\",
                   expiresAt: \"2030-01-02T03:04:05.123456789Z\") {{ position incident {{ {FIELDS} }} }} }}"
            ),
            json!({ "id": incident }),
        )
        .await["acknowledgeIncident"]
        .clone();
    assert_eq!(ack["incident"]["status"], "ACKNOWLEDGED", "{ack}");
    assert_eq!(ack["incident"]["ticketRef"], "OPS-1");
    let stabilized = api
        .ok(
            &developer,
            &format!(
                "mutation($id: ID!) {{ stabilizeIncident(id: $id, reason: \"fixed\") {{
                   position incident {{ {FIELDS} }} }} }}"
            ),
            json!({ "id": incident }),
        )
        .await["stabilizeIncident"]
        .clone();
    assert_eq!(
        stabilized["incident"]["status"], "STABILIZED",
        "{stabilized}"
    );
    assert_eq!(stabilized["incident"]["reason"], "fixed");

    for payload in [&ack, &stabilized] {
        let queried = api
            .ok(
                &developer,
                &format!(
                    "query($id: ID!, $p: Int) {{ incident(id: $id, minPosition: $p) {{ {FIELDS} }} }}"
                ),
                json!({ "id": incident, "p": payload["position"] }),
            )
            .await["incident"]
            .clone();
        if payload["position"] == stabilized["position"] {
            assert_eq!(payload["incident"], queried, "the table's answer");
        } else {
            // (the query after the later mutation sees the later state)
            assert_eq!(queried["status"], "STABILIZED");
            assert_eq!(payload["incident"]["expiresAt"], queried["expiresAt"]);
        }
    }
    assert_eq!(
        ack["incident"]["expiresAt"].as_str().unwrap(),
        "2030-01-02T03:04:05.123456+00:00",
        "microseconds, as the table keeps them"
    );

    let text = api.metrics().await;
    assert!(
        text.contains("workflowops_read_backs_total{source=\"memory\"} 2"),
        "{text}"
    );
    assert!(
        !text.contains("workflowops_read_backs_total{source=\"table\"}"),
        "{text}"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_backs_come_from_memory_and_equal_the_table_sqlite() {
    read_backs_come_from_memory_and_equal_the_table(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_backs_come_from_memory_and_equal_the_table_postgres() {
    read_backs_come_from_memory_and_equal_the_table(Kind::Postgres).await;
}
