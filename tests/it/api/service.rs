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
