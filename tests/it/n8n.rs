//! The n8n connector against the fake n8n (`fakes::n8n`): paging, strict bodies,
//! error mapping, retries and timeouts, and that the API key never leaks.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use workflowops::connectors::n8n::{update_body, N8nClient};
use workflowops::connectors::{RetryPolicy, UpstreamError};

use crate::fakes::n8n::{sample_workflow, FakeN8n, Fault};

const KEY: &str = "n8n_api_4f9c2e7a1b3d5f80SECRET";

/// Generous timeout, fast backoff.
fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        timeout: Duration::from_secs(5),
        attempts,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(3),
    }
}

/// 200 ms per attempt, for the slow-answer tests.
fn short_timeout(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        timeout: Duration::from_millis(200),
        ..policy(attempts)
    }
}

async fn setup(policy: RetryPolicy) -> (FakeN8n, N8nClient) {
    let fake = FakeN8n::start(KEY).await;
    let client = N8nClient::new(&fake.base_url(), KEY, policy).expect("client");
    (fake, client)
}

fn ids(workflows: &[Value]) -> Vec<String> {
    workflows
        .iter()
        .map(|w| w["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn lists_every_workflow_in_pages_of_250() {
    let (fake, client) = setup(policy(3)).await;
    let seeded = fake.seed(620);

    let listed = client.list_workflows().await.expect("list");

    assert_eq!(listed.len(), 620);
    assert_eq!(ids(&listed), seeded);
    assert_eq!(
        listed[7],
        fake.workflow(&seeded[7]).unwrap(),
        "full objects"
    );
    let pages = fake.requests_to(Method::GET, "/workflows");
    assert_eq!(pages.len(), 3, "620 = 250 + 250 + 120");
    assert!(pages
        .iter()
        .all(|r| r.param("limit").as_deref() == Some("250")));
    assert_eq!(pages[0].param("cursor"), None);
    assert!(pages[1].param("cursor").is_some());
    assert_ne!(pages[1].param("cursor"), pages[2].param("cursor"));
    assert!(pages.iter().all(|r| r.authorized && r.status == 200));
}

#[tokio::test]
async fn follows_cursors_when_the_server_pages_smaller_and_never_asks_above_250() {
    let (fake, client) = setup(policy(3)).await;
    let seeded = fake.seed(620);
    fake.set_page_size_cap(100);

    let listed = client
        .clone()
        .with_page_size(1000)
        .list_workflows()
        .await
        .expect("list");

    assert_eq!(ids(&listed), seeded);
    let pages = fake.requests_to(Method::GET, "/workflows");
    assert_eq!(pages.len(), 7);
    assert!(pages
        .iter()
        .all(|r| r.param("limit").as_deref() == Some("250")));

    // An empty instance is one request and no workflows.
    let empty = FakeN8n::start(KEY).await;
    let client = N8nClient::new(&empty.base_url(), KEY, policy(3)).unwrap();
    assert_eq!(client.list_workflows().await.unwrap(), Vec::<Value>::new());
    assert_eq!(empty.request_count(), 1);
}

#[tokio::test]
async fn the_fake_refuses_a_limit_above_250_like_n8n() {
    let fake = FakeN8n::start(KEY).await;
    let answer = reqwest::Client::new()
        .get(format!("{}/api/v1/workflows?limit=251", fake.base_url()))
        .header("X-N8N-API-KEY", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["message"], "request/query/limit must be <= 250");
}

#[tokio::test]
async fn a_repeated_cursor_ends_the_listing_with_an_error() {
    let (fake, client) = setup(policy(3)).await;
    fake.seed(600);
    fake.repeat_cursors(true);

    let error = tokio::time::timeout(Duration::from_secs(10), client.list_workflows())
        .await
        .expect("no endless loop")
        .unwrap_err();

    assert!(
        matches!(error, UpstreamError::Malformed { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("cursor"), "{error}");
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn a_page_that_is_not_data_is_malformed() {
    let (fake, client) = setup(policy(3)).await;
    for body in [r#"{"items": []}"#, r#"[]"#, r#"{"data": {"id": "x"}}"#] {
        fake.clear_requests();
        fake.fault_next(
            1,
            Fault::Raw {
                status: 200,
                body: body.into(),
            },
        );
        let error = client.list_workflows().await.unwrap_err();
        assert!(
            matches!(error, UpstreamError::Malformed { .. }),
            "{body}: {error:?}"
        );
        assert_eq!(fake.request_count(), 1, "not retried");
    }
}

#[tokio::test]
async fn a_wrong_key_is_unauthorized_and_not_retried() {
    let fake = FakeN8n::start(KEY).await;
    let id = fake.insert(sample_workflow(1));
    let client = N8nClient::new(&fake.base_url(), "n8n_api_wrong_SECRET", policy(4)).unwrap();

    let error = client.get_workflow(&id).await.unwrap_err();
    assert_eq!(
        error,
        UpstreamError::Unauthorized {
            service: "n8n",
            status: 401
        }
    );
    assert!(!error.retryable());
    assert_eq!(fake.request_count(), 1);

    let error = client.list_workflows().await.unwrap_err();
    assert!(matches!(
        error,
        UpstreamError::Unauthorized { status: 401, .. }
    ));
    assert_eq!(fake.request_count(), 2);

    // 403 too.
    let good = N8nClient::new(&fake.base_url(), KEY, policy(4)).unwrap();
    fake.fault_next(
        1,
        Fault::Status {
            status: 403,
            message: "Forbidden".into(),
        },
    );
    let error = good.get_workflow(&id).await.unwrap_err();
    assert!(matches!(
        error,
        UpstreamError::Unauthorized { status: 403, .. }
    ));
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn the_fake_answers_401_without_a_key_like_n8n() {
    let fake = FakeN8n::start(KEY).await;
    let answer = reqwest::get(format!("{}/api/v1/workflows", fake.base_url()))
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["message"], "'X-N8N-API-KEY' header required");
    assert!(!fake.requests()[0].authorized);
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let (fake, client) = setup(policy(4)).await;
    let expected = UpstreamError::NotFound {
        service: "n8n",
        what: "workflow nope".into(),
    };
    assert_eq!(client.get_workflow("nope").await.unwrap_err(), expected);
    assert_eq!(
        client
            .update_workflow("nope", &sample_workflow(1))
            .await
            .unwrap_err(),
        expected
    );
    assert_eq!(client.delete_workflow("nope").await.unwrap_err(), expected);
    assert_eq!(client.activate("nope").await.unwrap_err(), expected);
    assert_eq!(client.deactivate("nope").await.unwrap_err(), expected);
    assert_eq!(fake.request_count(), 5, "404 is never retried");
}

/// A workflow as a recent n8n's GET returns it: settings and node properties that
/// its own PUT refuses.
fn as_recent_n8n_returns(n: usize) -> Value {
    let mut workflow = sample_workflow(n);
    let settings = workflow["settings"].as_object_mut().unwrap();
    settings.insert("binaryMode".into(), json!("separate"));
    settings.insert("timeSavedMode".into(), json!("fixed"));
    settings.insert("credentialResolverId".into(), json!(null));
    workflow["nodes"][0]["createdAt"] = json!("2025-02-03T11:05:17.362Z");
    workflow
}

#[tokio::test]
async fn put_sends_only_what_n8n_accepts() {
    let (fake, client) = setup(policy(3)).await;
    let id = fake.insert(as_recent_n8n_returns(4));
    let got = client.get_workflow(&id).await.expect("get");
    assert_eq!(got["settings"]["binaryMode"], "separate");

    // The raw GET body is refused by the strict PUT, at every level.
    let raw = reqwest::Client::new();
    let put = |body: Value| {
        raw.put(format!("{}/api/v1/workflows/{id}", fake.base_url()))
            .header("X-N8N-API-KEY", KEY)
            .json(&body)
            .send()
    };
    let answer = put(got.clone()).await.unwrap();
    assert_eq!(answer.status(), 400);
    let message = answer.json::<Value>().await.unwrap()["message"].clone();
    assert!(
        message.as_str().unwrap().starts_with("request/body"),
        "{message}"
    );

    let mut extra_top = update_body(&got);
    extra_top["pinData"] = json!({});
    let answer = put(extra_top).await.unwrap();
    assert_eq!(answer.status(), 400);
    assert_eq!(
        answer.json::<Value>().await.unwrap()["message"],
        "request/body must NOT have additional properties"
    );

    let mut extra_settings = update_body(&got);
    extra_settings["settings"]["binaryMode"] = json!("separate");
    let answer = put(extra_settings).await.unwrap();
    assert_eq!(answer.status(), 400);
    assert_eq!(
        answer.json::<Value>().await.unwrap()["message"],
        "request/body/settings must NOT have additional properties"
    );
    // n8n 1.82 refuses settings its own GET returns once the editor saved them
    for key in [
        "callerPolicy",
        "callerIds",
        "timeSavedPerExecution",
        "availableInMCP",
    ] {
        let mut editor_settings = update_body(&got);
        editor_settings["settings"][key] = json!("workflowsFromSameOwner");
        let answer = put(editor_settings).await.unwrap();
        assert_eq!(answer.status(), 400, "{key}");
    }
    assert_eq!(fake.workflow(&id).unwrap(), got, "nothing changed");

    // Through the client (update_body) the same GET body is accepted.
    let mut edited = got.clone();
    edited["name"] = json!("Daily Revenue Report (v2)");
    let updated = client.update_workflow(&id, &edited).await.expect("update");
    assert_eq!(updated["id"], json!(id));
    assert_eq!(updated["name"], "Daily Revenue Report (v2)");
    assert_ne!(updated["versionId"], got["versionId"]);
    assert_eq!(
        updated["settings"],
        json!({
            "executionOrder": "v1",
            "saveExecutionProgress": false,
            "executionTimeout": 300,
            "timezone": "Europe/Berlin",
            "errorWorkflow": "Ef3Gh5Ij7Kl9Mn1O"
        })
    );
    assert_eq!(updated["nodes"].as_array().unwrap().len(), 6);
    assert_eq!(fake.workflow(&id).unwrap(), updated);
}

#[tokio::test]
async fn other_4xx_are_rejected_with_n8ns_message_and_not_retried() {
    let (fake, client) = setup(policy(4)).await;

    let error = client
        .create_workflow(&json!({"nodes": [], "connections": {}}))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        UpstreamError::Rejected {
            service: "n8n",
            status: 400,
            message: "request/body must have required property 'name'".into()
        }
    );
    assert_eq!(fake.request_count(), 1);

    fake.fault_next(
        1,
        Fault::Status {
            status: 422,
            message: "é".repeat(1000),
        },
    );
    let id = fake.insert(sample_workflow(1));
    let error = client.get_workflow(&id).await.unwrap_err();
    let UpstreamError::Rejected {
        status: 422,
        message,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert!(message.chars().count() <= 301, "truncated");
    assert_eq!(fake.request_count(), 2);

    // Without a JSON message: the status's reason.
    fake.fault_next(
        1,
        Fault::Raw {
            status: 409,
            body: "<html>conflict</html>".into(),
        },
    );
    let error = client.get_workflow(&id).await.unwrap_err();
    assert!(
        matches!(&error, UpstreamError::Rejected { status: 409, message, .. } if message == "Conflict"),
        "{error:?}"
    );
}

#[tokio::test]
async fn rate_limited_waits_for_retry_after_then_succeeds() {
    let (fake, client) = setup(policy(3)).await;
    let id = fake.insert(sample_workflow(2));
    fake.rate_limit_next(1, 1);

    let started = Instant::now();
    let workflow = client.get_workflow(&id).await.expect("after the wait");

    assert_eq!(workflow["id"], json!(id));
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].status, 429);
    assert_eq!(requests[1].status, 200);
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn retry_after_is_capped_at_max_delay() {
    let policy = RetryPolicy {
        max_delay: Duration::from_millis(300),
        ..policy(3)
    };
    let (fake, client) = setup(policy).await;
    let id = fake.insert(sample_workflow(2));
    fake.rate_limit_next(1, 120);
    // An HTTP date works too.
    let later = (chrono::Utc::now() + chrono::Duration::seconds(90))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    fake.fault_next(
        1,
        Fault::RateLimited {
            retry_after: Some(later),
        },
    );

    let started = Instant::now();
    client
        .get_workflow(&id)
        .await
        .expect("after two short waits");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(550), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn persistent_rate_limiting_is_rate_limited_after_every_attempt() {
    let (fake, client) = setup(policy(3)).await;
    fake.rate_limit_next(10, 0);
    let error = client.list_workflows().await.unwrap_err();
    assert_eq!(error, UpstreamError::RateLimited { service: "n8n" });
    assert!(error.retryable());
    assert_eq!(fake.request_count(), 3);
}

#[tokio::test]
async fn a_500_is_retried_then_succeeds() {
    let (fake, client) = setup(policy(3)).await;
    let seeded = fake.seed(300);
    fake.fail_next(1, 500);
    let listed = client.list_workflows().await.expect("list after a retry");
    assert_eq!(ids(&listed), seeded);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 200, 200]);
}

#[tokio::test]
async fn a_persistent_500_is_unavailable_after_every_attempt() {
    let (fake, client) = setup(policy(3)).await;
    let id = fake.insert(sample_workflow(1));
    fake.fail_next(10, 500);
    let error = client.get_workflow(&id).await.unwrap_err();
    assert_eq!(
        error,
        UpstreamError::Unavailable {
            service: "n8n",
            status: 500
        }
    );
    assert!(error.retryable());
    assert_eq!(fake.request_count(), 3);

    // A PUT is idempotent: retried too.
    fake.clear_faults();
    fake.clear_requests();
    fake.fail_next(1, 503);
    client
        .update_workflow(&id, &sample_workflow(1))
        .await
        .expect("update after a retry");
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn a_slow_answer_times_out_after_every_attempt() {
    let (fake, client) = setup(short_timeout(2)).await;
    let id = fake.insert(sample_workflow(1));
    fake.slow_next(5, Duration::from_secs(2));

    let started = Instant::now();
    let error = client.get_workflow(&id).await.unwrap_err();

    assert_eq!(
        error,
        UpstreamError::Timeout {
            service: "n8n",
            timeout: Duration::from_millis(200)
        }
    );
    assert_eq!(fake.request_count(), 2);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn one_slow_answer_is_retried() {
    let (fake, client) = setup(short_timeout(3)).await;
    let id = fake.insert(sample_workflow(1));
    fake.slow_next(1, Duration::from_secs(1));
    client.get_workflow(&id).await.expect("second attempt");
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn create_is_not_retried_when_it_may_have_happened() {
    let (fake, client) = setup(short_timeout(3)).await;

    // A timeout: n8n created it, the answer came too late; no second copy.
    fake.slow_next(1, Duration::from_secs(1));
    let error = client
        .create_workflow(&sample_workflow(1))
        .await
        .unwrap_err();
    assert!(matches!(error, UpstreamError::Timeout { .. }), "{error:?}");
    assert_eq!(fake.request_count(), 1);
    assert_eq!(fake.len(), 1);

    // A 5xx: not retried either.
    fake.fail_next(1, 500);
    let error = client
        .create_workflow(&sample_workflow(2))
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        UpstreamError::Unavailable { status: 500, .. }
    ));
    assert_eq!(fake.request_count(), 2);

    // 429: nothing was created, so it is retried.
    fake.rate_limit_next(1, 0);
    let created = client
        .create_workflow(&sample_workflow(3))
        .await
        .expect("create");
    assert_eq!(fake.request_count(), 4);
    assert_eq!(fake.len(), 2);
    let new_id = created["id"].as_str().unwrap();
    assert_ne!(
        new_id,
        sample_workflow(3)["id"].as_str().unwrap(),
        "n8n assigns ids"
    );
    assert_eq!(created["active"], false);
    assert_eq!(created["name"], sample_workflow(3)["name"]);
    assert_eq!(fake.workflow(new_id).unwrap(), created);
}

#[tokio::test]
async fn a_delete_whose_answer_was_lost_is_done() {
    let (fake, client) = setup(short_timeout(3)).await;
    let id = fake.insert(sample_workflow(1));
    fake.slow_next(1, Duration::from_secs(1));

    client
        .delete_workflow(&id)
        .await
        .expect("deleted by the first attempt");

    assert!(fake.is_empty());
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 404]);
}

#[tokio::test]
async fn delete_activate_and_deactivate() {
    let (fake, client) = setup(policy(3)).await;
    let id = fake.insert(sample_workflow(1));

    let active = client.activate(&id).await.expect("activate");
    assert_eq!(active["active"], true);
    assert_eq!(fake.workflow(&id).unwrap()["active"], true);
    let inactive = client.deactivate(&id).await.expect("deactivate");
    assert_eq!(inactive["active"], false);

    // n8n refuses to activate a workflow without a trigger.
    let manual = fake.insert(json!({
        "name": "No trigger",
        "nodes": [{"id": "a", "name": "Set", "type": "n8n-nodes-base.set",
                   "typeVersion": 3.4, "position": [0, 0], "parameters": {}}],
        "connections": {}
    }));
    let error = client.activate(&manual).await.unwrap_err();
    assert!(
        matches!(&error, UpstreamError::Rejected { status: 400, message, .. } if message.contains("trigger")),
        "{error:?}"
    );

    client.delete_workflow(&id).await.expect("delete");
    assert!(fake.workflow(&id).is_none());
    assert_eq!(fake.len(), 1);
}

#[tokio::test]
async fn malformed_json_is_malformed_and_not_retried() {
    let (fake, client) = setup(policy(3)).await;
    let id = fake.insert(sample_workflow(1));
    fake.malformed_next(1);
    let error = client.get_workflow(&id).await.unwrap_err();
    assert!(
        matches!(error, UpstreamError::Malformed { .. }),
        "{error:?}"
    );
    assert!(!error.retryable());
    assert_eq!(fake.request_count(), 1);

    fake.malformed_next(1);
    let error = client.list_workflows().await.unwrap_err();
    assert!(
        matches!(error, UpstreamError::Malformed { .. }),
        "{error:?}"
    );
}

async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

#[tokio::test]
async fn a_closed_port_is_unreachable_without_credentials_in_the_message() {
    let port = closed_port().await;
    let client = N8nClient::new(
        &format!("http://ops:hunter2@127.0.0.1:{port}/?token=abc"),
        KEY,
        policy(2),
    )
    .unwrap();

    let error = client.list_workflows().await.unwrap_err();

    let UpstreamError::Unreachable { message, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    for secret in ["hunter2", "ops:", "token", "abc", KEY] {
        assert!(!message.contains(secret), "{secret} in {message}");
    }
    assert!(error.retryable());
}

/// Collects what `tracing` prints on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_key_appears_in_no_error_and_no_trace() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (fake, client) = setup(short_timeout(2)).await;
    let id = fake.insert(sample_workflow(1));
    let wrong = N8nClient::new(&fake.base_url(), format!("{KEY}-wrong"), policy(2)).unwrap();
    let unreachable = N8nClient::new(
        &format!("http://127.0.0.1:{}", closed_port().await),
        KEY,
        policy(1),
    )
    .unwrap();

    let mut errors = vec![
        wrong.get_workflow(&id).await.unwrap_err(),
        client.get_workflow("missing").await.unwrap_err(),
        client.create_workflow(&json!({})).await.unwrap_err(),
        unreachable.list_workflows().await.unwrap_err(),
    ];
    fake.rate_limit_next(2, 0);
    errors.push(client.get_workflow(&id).await.unwrap_err());
    fake.fail_next(2, 502);
    errors.push(client.get_workflow(&id).await.unwrap_err());
    fake.slow_next(2, Duration::from_secs(1));
    errors.push(client.get_workflow(&id).await.unwrap_err());
    fake.malformed_next(1);
    errors.push(client.get_workflow(&id).await.unwrap_err());
    // Even a server that echoes the key does not get it into an error.
    fake.fault_next(
        1,
        Fault::Status {
            status: 400,
            message: format!("invalid key {KEY}"),
        },
    );
    errors.push(client.get_workflow(&id).await.unwrap_err());
    client
        .get_workflow(&id)
        .await
        .expect("a success, traced too");

    assert_eq!(errors.len(), 9);
    for error in &errors {
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains(KEY), "key in {text}");
            assert!(!text.contains("SECRET"), "key in {text}");
        }
    }
    assert!(!format!("{client:?}").contains(KEY));
    assert!(!format!("{wrong:?}").contains("SECRET"));

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("n8n.request"), "{logs}");
    assert!(logs.contains("attempt=2"), "{logs}");
    assert!(logs.contains("status=429"), "{logs}");
    assert!(logs.contains("path=/api/v1/workflows"), "{logs}");
    assert!(!logs.contains("SECRET"), "key in the traces");
}

/// What n8n 1.x does on writes, as the fake reproduces it: a create is always
/// inactive (`active` is read-only), credentials cannot be listed, and every write
/// substitutes credential references by n8n's own rule.
#[tokio::test]
async fn the_fake_writes_like_n8n_1x() {
    let (fake, client) = setup(policy(1)).await;
    let raw = reqwest::Client::new();
    let url = |path: &str| format!("{}/api/v1{path}", fake.base_url());

    let mut body = update_body(&sample_workflow(7));
    body["active"] = json!(true);
    let answer = raw
        .post(url("/workflows"))
        .header("X-N8N-API-KEY", KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert_eq!(
        answer.json::<Value>().await.unwrap()["message"],
        "request/body/active is read-only"
    );

    // no credential listing in 1.x; creating one works
    let answer = raw
        .get(url("/credentials"))
        .header("X-N8N-API-KEY", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 405);
    let created: Value = raw
        .post(url("/credentials"))
        .header("X-N8N-API-KEY", KEY)
        .json(&json!({ "name": "Slack Bot", "type": "slackApi", "data": { "accessToken": "x" } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let slack = created["id"].as_str().unwrap().to_string();
    assert!(
        created.get("data").is_none(),
        "secret data never comes back: {created}"
    );
    let db = fake.add_credential("Orders DB", "postgres");
    fake.add_credential("Twin", "httpHeaderAuth");
    fake.add_credential("Twin", "httpHeaderAuth");

    let workflow = json!({
        "name": "Credentials", "connections": {}, "settings": {},
        "nodes": [
            // unknown id, a unique credential of that name and type: substituted
            { "name": "a", "type": "n8n-nodes-base.slack", "typeVersion": 2, "position": [0, 0],
              "parameters": {}, "credentials": { "slackApi": { "id": "dev-3", "name": "Slack Bot" } } },
            // its id exists with that type: kept, whatever the name says
            { "name": "b", "type": "n8n-nodes-base.postgres", "typeVersion": 2, "position": [0, 0],
              "parameters": {}, "credentials": { "postgres": { "id": db, "name": "Old name" } } },
            // two of that name and type: kept dangling
            { "name": "c", "type": "n8n-nodes-base.httpRequest", "typeVersion": 4, "position": [0, 0],
              "parameters": {}, "credentials": { "httpHeaderAuth": { "id": "dev-9", "name": "Twin" } } },
            // nothing of that name: kept dangling
            { "name": "d", "type": "n8n-nodes-base.slack", "typeVersion": 2, "position": [0, 0],
              "parameters": {}, "credentials": { "slackApi": { "id": "dev-4", "name": "Nobody" } } },
        ]
    });
    let created = client.create_workflow(&workflow).await.expect("create");
    assert_eq!(created["active"], false, "created inactive");
    let credentials: Vec<Value> = created["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["credentials"].clone())
        .collect();
    assert_eq!(
        credentials,
        vec![
            json!({ "slackApi": { "id": slack, "name": "Slack Bot" } }),
            json!({ "postgres": { "id": db, "name": "Old name" } }),
            json!({ "httpHeaderAuth": { "id": "dev-9", "name": "Twin" } }),
            json!({ "slackApi": { "id": "dev-4", "name": "Nobody" } }),
        ]
    );
    // the same rule on an update
    let id = created["id"].as_str().unwrap().to_string();
    let mut edited = created.clone();
    edited["nodes"][3]["credentials"]["slackApi"] = json!({ "id": "dev-5", "name": "Slack Bot" });
    let updated = client.update_workflow(&id, &edited).await.expect("update");
    assert_eq!(
        updated["nodes"][3]["credentials"]["slackApi"]["id"],
        json!(slack)
    );
}
