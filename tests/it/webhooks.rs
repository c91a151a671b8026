//! Webhooks (issue 15) through the API, against a receiver on loopback that
//! verifies signatures: delivery in log order through an outage, 410, Retry-After,
//! rotation, slow, huge and redirecting receivers, SSRF and bad input, tenants, a
//! crash mid-delivery. The tests' services allow loopback targets and retry fast
//! (`api::webhook_settings`).

use std::time::Duration;

use eventstore::sql::{Dialect, Sql};
use serde_json::{json, Value};

use crate::api::{code, Api};
use crate::fakes::receiver::{Answer, Receiver};
use crate::support::{both_backends, Kind};

both_backends!(
    deliveries_are_signed_in_log_order_through_an_outage,
    gone_disables_the_endpoint_and_enabling_resumes_it,
    retry_after_is_honoured_and_rotation_signs_with_both_secrets,
    slow_huge_and_redirecting_receivers_fail_cleanly,
    bad_input_and_internal_targets_are_refused,
    a_tenant_never_receives_another_tenants_events,
    a_delivery_cut_by_a_crash_is_sent_again_with_the_same_id,
);

const CREATE: &str = "mutation($url: String!, $types: [String!], $aggs: [String!]) {
    createWebhook(id: \"hook\", url: $url, eventTypes: $types, aggregateTypes: $aggs,
      description: \"tickets\") { position secret webhook { id url status eventTypes } } }";
const DELIVERIES: &str = "query { webhookDeliveries(webhookId: \"hook\", first: 100) {
    nodes { id position eventType messageId status attempts responseStatus error latencyMs
      attemptLog { at status latencyMs error } } } }";

/// Creates endpoint `hook` for the receiver; returns its secret.
async fn create(api: &Api, token: &str, receiver: &Receiver, types: Value) -> String {
    let data = api
        .ok(
            token,
            CREATE,
            json!({ "url": receiver.url(), "types": types, "aggs": null }),
        )
        .await;
    let payload = &data["createWebhook"];
    assert_eq!(payload["webhook"]["status"], "active", "{data}");
    let secret = payload["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    secret
}

/// Registers `n` environments `{prefix}{i}`: one `environment.registered` each.
async fn register(api: &Api, token: &str, prefix: &str, n: usize) {
    for i in 0..n {
        api.ok(
            token,
            "mutation($id: ID!) { registerEnvironment(id: $id, name: $id, class: STAGING,
               n8nBaseUrl: \"https://n8n.example.com\") { position } }",
            json!({ "id": format!("{prefix}{i}") }),
        )
        .await;
    }
}

/// The tenant's `environment.registered` positions, in log order.
async fn registered(api: &Api, tenant: &str) -> Vec<i64> {
    let total = api.event_count().await as usize;
    crate::conformance::read_all(&api.store.store, total)
        .await
        .into_iter()
        .filter(|e| e.tenant() == tenant && e.event_type == "environment.registered")
        .map(|e| e.position)
        .collect()
}

async fn deliveries(api: &Api, token: &str) -> Vec<Value> {
    api.ok(token, DELIVERIES, json!({})).await["webhookDeliveries"]["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

async fn webhook(api: &Api, token: &str) -> Value {
    let data = api
        .ok(
            token,
            "{ webhooks { id status disabledReason lag previousSecretValidUntil } }",
            json!({}),
        )
        .await;
    data["webhooks"][0].clone()
}

/// The receiver is down (503) for the first attempts: every event still arrives,
/// signed, once per id among the accepted requests, in log order; a retried one
/// carries the same `webhook-id`.
async fn deliveries_are_signed_in_log_order_through_an_outage(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token("acme", "admin", "admin-1");
    let receiver = Receiver::start().await;
    let secret = create(&api, &admin, &receiver, json!(["environment.registered"])).await;
    receiver.answer([
        Answer::Status(503),
        Answer::Status(503),
        Answer::Status(500),
    ]);
    register(&api, &admin, "env", 12).await;
    let expected = registered(&api, "acme").await;
    let accepted = receiver.wait_accepted(expected.len()).await;
    let positions: Vec<i64> = accepted.iter().map(|r| r.position()).collect();
    assert_eq!(positions, expected, "each once, in log order");
    for r in receiver.received() {
        assert!(r.signed_by(&secret), "signature of {}", r.id);
        assert_eq!(r.id, format!("msg_{}", r.position()));
        assert_eq!(r.event()["type"], "environment.registered");
        assert_eq!(r.event()["tenant"], "acme");
    }
    // the first event was tried four times with one id
    let first = receiver
        .received()
        .iter()
        .filter(|r| r.position() == expected[0])
        .count();
    assert_eq!(first, 4);
    let listed = deliveries(&api, &admin).await;
    assert_eq!(listed.len(), expected.len());
    let oldest = listed.last().unwrap();
    assert_eq!(oldest["status"], "delivered", "{oldest}");
    assert_eq!(oldest["attempts"], 4);
    let log = oldest["attemptLog"].as_array().unwrap();
    assert_eq!(
        log.iter().map(|a| a["status"].clone()).collect::<Vec<_>>(),
        vec![json!(503), json!(503), json!(500), json!(204)]
    );
    assert_eq!(webhook(&api, &admin).await["lag"], 0);
    // the attempts and deliveries are counted for /metrics; nothing is behind
    let metrics = metrics(&api).await;
    for line in [
        "webhook_attempts_total{outcome=\"failed\"} 3",
        "webhook_deliveries_total{outcome=\"delivered\"} 12",
        "webhook_endpoints{status=\"active\"} 1",
    ] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }
    assert!(
        !metrics.contains("webhook_endpoint_lag_positions{"),
        "{metrics}"
    );
    api.stop().await;
}

/// 410 disables the endpoint at once, with an event saying why; nothing more is
/// sent; enabling it resumes with the same delivery (same id) and the rest.
async fn gone_disables_the_endpoint_and_enabling_resumes_it(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token("acme", "admin", "admin-1");
    let receiver = Receiver::start().await;
    create(&api, &admin, &receiver, json!(["environment.registered"])).await;
    receiver.answer([Answer::Status(410)]);
    register(&api, &admin, "env", 3).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let disabled = loop {
        let hook = webhook(&api, &admin).await;
        if hook["status"] == "disabled" {
            break hook;
        }
        assert!(std::time::Instant::now() < deadline, "not disabled: {hook}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        disabled["disabledReason"], "the receiver answered 410 Gone",
        "{disabled}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1, "nothing more after the 410");
    // /metrics: the disabled endpoint, its exhausted delivery, how far it is behind
    let text = metrics(&api).await;
    for line in [
        "webhook_endpoints{status=\"disabled\"} 1",
        "webhook_deliveries_total{outcome=\"exhausted\"} 1",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    let lag = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("workflowops_webhook_endpoint_lag_positions{webhook=\"acme:hook\"} ")
        })
        .unwrap_or_else(|| panic!("the endpoint's lag: {text}"));
    assert!(
        lag.parse::<i64>().unwrap() >= 3,
        "three events behind at least: {lag}"
    );
    let trail = api
        .ok(
            &admin,
            "{ auditTrail(aggregateType: \"webhook\") { nodes { eventType actor reason } } }",
            json!({}),
        )
        .await;
    let events: Vec<&Value> = trail["auditTrail"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["eventType"] == "webhook.disabled" && e["actor"] == "system:webhooks"),
        "{trail}"
    );

    api.ok(
        &admin,
        "mutation { enableWebhook(id: \"hook\") { webhook { status } } }",
        json!({}),
    )
    .await;
    // What was routed before the disable is delivered now, in order; an event
    // recorded after it (the sender can be faster than the mutations) was never
    // routed to the disabled endpoint.
    let total = api.event_count().await as usize;
    let disabled_at = crate::conformance::read_all(&api.store.store, total)
        .await
        .into_iter()
        .find(|e| e.event_type == "webhook.disabled")
        .expect("the disable is in the log")
        .position;
    let expected: Vec<i64> = registered(&api, "acme")
        .await
        .into_iter()
        .filter(|p| *p < disabled_at)
        .collect();
    assert!(!expected.is_empty());
    let accepted = receiver.wait_accepted(expected.len()).await;
    let positions: Vec<i64> = accepted.iter().map(|r| r.position()).collect();
    assert_eq!(positions, expected);
    assert_eq!(
        receiver.received()[0].id,
        accepted[0].id,
        "the same id again"
    );

    // retention: a delivery made longer ago than the history kept goes; the rest stay
    let listed = deliveries(&api, &admin).await;
    let oldest = listed.last().unwrap()["id"].as_str().unwrap().to_string();
    let mut sql = Sql::new(Dialect::of(&api.store.store));
    let (at, id) = (
        sql.arg(eventstore::sql::fmt_time(
            chrono::Utc::now() - chrono::Duration::days(31),
        )),
        sql.arg(oldest.as_str()),
    );
    sql.push(&format!(
        "UPDATE webhook_deliveries SET delivered_at = {at} WHERE id = {id}"
    ));
    sql.execute(&api.store.store).await.unwrap();
    let scheduler = workflowops::scheduler::Scheduler::new(api.context.clone());
    let report = scheduler
        .run(workflowops::scheduler::Job::Retention)
        .await
        .unwrap();
    assert_eq!(report.deliveries_deleted, 1, "{report:?}");
    let left = deliveries(&api, &admin).await;
    assert_eq!(left.len(), listed.len() - 1, "{listed:#?} {left:#?}");
    assert!(left.iter().all(|d| d["id"] != oldest.as_str()));
    api.stop().await;
}

/// A 429 with `Retry-After: 1` holds the next attempt back a second (the schedule
/// alone would retry after 50 ms). After a rotation both secrets sign.
async fn retry_after_is_honoured_and_rotation_signs_with_both_secrets(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token("acme", "admin", "admin-1");
    let receiver = Receiver::start().await;
    let old = create(&api, &admin, &receiver, json!([])).await;
    receiver.answer([Answer::RetryAfter(1)]);
    register(&api, &admin, "env", 1).await;
    receiver.wait_accepted(1).await;
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    let waited = received[1].at - received[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );

    let rotated = api
        .ok(
            &admin,
            "mutation { rotateWebhookSecret(id: \"hook\") { secret webhook { previousSecretValidUntil } } }",
            json!({}),
        )
        .await;
    let new = rotated["rotateWebhookSecret"]["secret"].as_str().unwrap();
    assert_ne!(new, old);
    assert!(rotated["rotateWebhookSecret"]["webhook"]["previousSecretValidUntil"].is_string());
    register(&api, &admin, "more", 1).await;
    let accepted = receiver.wait_accepted(3).await;
    let last = accepted.last().unwrap();
    assert!(
        last.signed_by(new) && last.signed_by(&old),
        "{}",
        last.signature
    );
    assert_eq!(last.signature.split(' ').count(), 2);
    // the secret is never shown again, nor in events
    let listed = api.ok(&admin, "{ webhooks { id url } }", json!({})).await;
    assert!(!listed.to_string().contains("whsec_"));
    let history = api
        .ok(
            &admin,
            "{ eventHistory(aggregateType: \"webhook\", aggregateId: \"hook\") { payload } }",
            json!({}),
        )
        .await;
    assert_eq!(history["eventHistory"].as_array().unwrap().len(), 2);
    assert!(!history
        .to_string()
        .contains(new.trim_start_matches("whsec_")));
    api.stop().await;
}

/// A receiver slower than the attempt's limit, one answering 500 with 5 MB, and one
/// answering a redirect: each attempt fails with a clear error (the huge answer
/// not read, the redirect not followed), and the next attempt delivers.
async fn slow_huge_and_redirecting_receivers_fail_cleanly(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token("acme", "admin", "admin-1");
    let receiver = Receiver::start().await;
    let elsewhere = Receiver::start().await;
    create(&api, &admin, &receiver, json!([])).await;
    receiver.answer([
        Answer::Slow(Duration::from_secs(3)),
        Answer::Huge(5_000_000),
        Answer::Redirect(elsewhere.url()),
    ]);
    register(&api, &admin, "env", 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let delivery = loop {
        let listed = deliveries(&api, &admin).await;
        if listed.first().is_some_and(|d| d["status"] == "delivered") {
            break listed[0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "{listed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = delivery["attemptLog"].as_array().unwrap();
    assert_eq!(log.len(), 4, "{delivery}");
    assert!(
        log[0]["error"].as_str().unwrap().contains("timed out"),
        "{delivery}"
    );
    let huge = log[1]["error"].as_str().unwrap();
    assert!(
        huge.starts_with("HTTP 500: xxx") && huge.len() < 1100,
        "{huge}"
    );
    assert_eq!(log[2]["status"], 302);
    assert!(log[2]["error"]
        .as_str()
        .unwrap()
        .contains("redirect (not followed)"));
    assert!(
        elsewhere.received().is_empty(),
        "the redirect was not followed"
    );
    api.stop().await;
}

/// A URL that is not http(s), internal targets, unknown types, another role: each
/// a clear error and nothing created (no endpoint, no event, no secret).
async fn bad_input_and_internal_targets_are_refused(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token("acme", "admin", "admin-1");
    let before = api.event_count().await;
    for (url, types, field) in [
        ("ftp://hooks.example.com/x", json!([]), "url"),
        ("http://169.254.169.254/latest/meta-data", json!([]), "url"),
        ("http://10.0.0.7:8080/hook", json!([]), "url"),
        ("http://[fd00::1]/hook", json!([]), "url"),
        ("https://user:pw@hooks.example.com/", json!([]), "url"),
        ("not a url", json!([]), "url"),
        (
            "https://hooks.example.com/x",
            json!(["incident.exploded"]),
            "eventTypes",
        ),
    ] {
        let error = api
            .err(
                &admin,
                CREATE,
                json!({ "url": url, "types": types, "aggs": null }),
            )
            .await;
        assert_eq!(code(&error), "VALIDATION", "{url}: {error}");
        assert_eq!(error["extensions"]["field"], field, "{url}: {error}");
    }
    let error = api
        .err(
            &admin,
            CREATE,
            json!({ "url": "https://hooks.example.com/x", "types": null, "aggs": ["nothing"] }),
        )
        .await;
    assert_eq!(error["extensions"]["field"], "aggregateTypes", "{error}");
    let developer = api.token("acme", "developer", "dev-1");
    let error = api
        .err(
            &developer,
            CREATE,
            json!({ "url": "https://hooks.example.com/x", "types": null, "aggs": null }),
        )
        .await;
    assert_eq!(code(&error), "FORBIDDEN", "{error}");
    let error = api.err(&developer, "{ webhooks { id } }", json!({})).await;
    assert_eq!(code(&error), "FORBIDDEN", "{error}");
    assert_eq!(api.event_count().await, before, "nothing recorded");
    let listed = api.ok(&admin, "{ webhooks { id } }", json!({})).await;
    assert_eq!(listed["webhooks"], json!([]));
    // unknown ids
    for query in [
        "mutation { deleteWebhook(id: \"nope\") { position } }",
        "mutation { rotateWebhookSecret(id: \"nope\") { secret } }",
        "mutation { redeliver(deliveryId: \"acme:nope:1\") { delivery { id } } }",
    ] {
        let error = api.err(&admin, query, json!({})).await;
        assert_eq!(code(&error), "NOT_FOUND", "{query}: {error}");
    }
    api.stop().await;
}

/// Each tenant's endpoint gets its own tenant's events only, and sees only its
/// own endpoints.
async fn a_tenant_never_receives_another_tenants_events(kind: Kind) {
    let api = Api::start(kind).await;
    let acme = api.token("acme", "admin", "admin-1");
    let globex = api.token("globex", "admin", "admin-9");
    let (acme_receiver, globex_receiver) = (Receiver::start().await, Receiver::start().await);
    let types = json!(["environment.registered"]);
    create(&api, &acme, &acme_receiver, types.clone()).await;
    create(&api, &globex, &globex_receiver, types).await;
    register(&api, &acme, "a", 3).await;
    register(&api, &globex, "g", 2).await;
    let acme_expected = registered(&api, "acme").await;
    let globex_expected = registered(&api, "globex").await;
    let acme_got = acme_receiver.wait_accepted(acme_expected.len()).await;
    let globex_got = globex_receiver.wait_accepted(globex_expected.len()).await;
    assert!(acme_got.iter().all(|r| r.event()["tenant"] == "acme"));
    assert!(globex_got.iter().all(|r| r.event()["tenant"] == "globex"));
    let positions: Vec<i64> = globex_got.iter().map(|r| r.position()).collect();
    assert_eq!(positions, globex_expected);
    // each sees one endpoint, its own; the other's deliveries are invisible
    let listed = api.ok(&globex, "{ webhooks { id url } }", json!({})).await;
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1);
    assert_eq!(listed["webhooks"][0]["url"], globex_receiver.url().as_str());
    let acme_deliveries = deliveries(&api, &acme).await;
    let error = api
        .err(
            &globex,
            "mutation($id: ID!) { redeliver(deliveryId: $id) { delivery { id } } }",
            json!({ "id": acme_deliveries[0]["id"] }),
        )
        .await;
    assert_eq!(code(&error), "NOT_FOUND", "{error}");
    api.stop().await;
}

/// The service stops while a receiver is still answering: the next service sends
/// the delivery again with the same `webhook-id`, and nothing is skipped.
async fn a_delivery_cut_by_a_crash_is_sent_again_with_the_same_id(kind: Kind) {
    let mut api = Api::start(kind).await;
    let admin = api.token("acme", "admin", "admin-1");
    let receiver = Receiver::start().await;
    create(&api, &admin, &receiver, json!([])).await;
    receiver.answer([Answer::Slow(Duration::from_secs(10))]);
    register(&api, &admin, "env", 2).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while receiver.received().is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the first delivery is in flight: the process goes
    api.restart().await;
    let expected = registered(&api, "acme").await;
    let accepted = receiver.wait_accepted(expected.len() + 1).await;
    let first = &receiver.received()[0];
    assert_eq!(accepted[1].id, first.id, "sent again with the same id");
    let mut ids: Vec<i64> = accepted[1..].iter().map(|r| r.position()).collect();
    ids.dedup();
    assert_eq!(ids, expected, "nothing skipped, in order");
    api.stop().await;
}

async fn metrics(api: &Api) -> String {
    api.metrics().await
}
