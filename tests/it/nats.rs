//! The NATS JetStream feed against a real NATS server with JetStream: the one at
//! 127.0.0.1:4222 (`WORKFLOWOPS_TEST_NATS_URL` overrides it), and, for a NATS that
//! is down when the service starts, a `nats-server -js` this test starts itself
//! once the service runs. Each test uses its own stream and subject prefix, and
//! deletes the stream at the end.
//!
//! What a consumer of the stream sees is read with an ordered consumer, as a
//! consumer would read it.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use eventstore::sql::{Dialect, Sql};
use futures::StreamExt;
use serde_json::Value;
use workflowops::integrations::nats::{message_id, NatsPublisher, NatsSettings};
use workflowops::reactors::{ReactorOptions, ReactorRuntime, Reactors};

use crate::api::Api;
use crate::conformance::{read_all, register};
use crate::support::{admin, both_backends, id, Kind, TestStore};

both_backends!(the_feed_holds_every_event_once_in_log_order_across_crashes);

fn url() -> String {
    std::env::var("WORKFLOWOPS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A stream and a subject prefix of this test alone.
fn settings(url: String) -> NatsSettings {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    NatsSettings {
        url,
        stream: format!("WFOTEST_{unique}"),
        subject_prefix: format!("wfotest_{unique}"),
    }
}

async fn jetstream(url: &str) -> jetstream::Context {
    jetstream::new(
        async_nats::connect(url)
            .await
            .expect("NATS at the test URL"),
    )
}

/// One message as a consumer reads it.
#[derive(Debug)]
struct Received {
    subject: String,
    message_id: String,
    event: Value,
}

/// Every message of the stream, read from the start with an ordered consumer;
/// waits until it holds `expected`, then checks it holds no more.
async fn consume(settings: &NatsSettings, expected: usize) -> Vec<Received> {
    let js = jetstream(&settings.url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        if let Ok(mut stream) = js.get_stream(&settings.stream).await {
            if stream.info().await.unwrap().state.messages >= expected as u64 {
                break stream;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the stream did not reach {expected} messages"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        expected as u64,
        "the stream holds each event once"
    );
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut received = Vec::with_capacity(expected);
    while received.len() < expected {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the consumer reads every message")
            .unwrap()
            .unwrap();
        let headers = message.headers.clone().unwrap_or_default();
        received.push(Received {
            subject: message.subject.to_string(),
            message_id: headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.to_string())
                .unwrap_or_default(),
            event: serde_json::from_slice(&message.payload).unwrap(),
        });
    }
    received
}

/// The stream holds exactly the log, in log order: subjects, ids and bodies.
fn assert_is_the_log(
    settings: &NatsSettings,
    log: &[eventstore::StoredEvent],
    received: &[Received],
) {
    assert_eq!(received.len(), log.len());
    let mut ids = HashSet::new();
    for (event, message) in log.iter().zip(received) {
        assert_eq!(message.message_id, message_id(event));
        assert!(ids.insert(message.message_id.clone()), "one id per event");
        assert_eq!(message.subject, settings.subject(event));
        assert_eq!(message.event["position"], event.position);
        assert_eq!(message.event["eventType"], event.event_type.as_str());
        assert_eq!(message.event["payload"], event.payload);
    }
}

async fn delete_stream(settings: &NatsSettings) {
    let _ = jetstream(&settings.url)
        .await
        .delete_stream(&settings.stream)
        .await;
}

fn runtime(store: &eventstore::Store, publisher: NatsPublisher) -> ReactorRuntime {
    ReactorRuntime::new(
        store.clone(),
        vec![Arc::new(publisher)],
        ReactorOptions {
            batch_size: 20,
            poll: Duration::from_millis(50),
            retry_min: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
            ..Default::default()
        },
        Reactors::new(store.clone()),
    )
}

/// Events of two tenants; the publisher killed after its first batches and
/// restarted, then its checkpoint lost altogether and everything replayed: a
/// consumer still sees every event once, in log order, under its tenant's subject.
async fn the_feed_holds_every_event_once_in_log_order_across_crashes(kind: Kind) {
    let t = TestStore::new(kind).await;
    let domain = t.domain_without_reactors();
    for i in 0..40 {
        let tenant = if i % 4 == 0 { "globex" } else { "acme" };
        domain
            .environment(&admin(tenant), &id(&format!("env{i}")), register("Env"))
            .await
            .unwrap();
    }
    let total = t.store.event_count().await.unwrap() as usize;
    let log = read_all(&t.store, total).await;
    let settings = settings(url());

    // killed after at least one batch of 20, before the end
    let publisher = NatsPublisher::connect(settings.clone()).await.unwrap();
    let (_, task) = runtime(&t.store, publisher).spawn();
    let js = jetstream(&settings.url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut stream) = js.get_stream(&settings.stream).await {
            if stream.info().await.unwrap().state.messages >= 25 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the publisher published nothing");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    task.abort();
    let _ = task.await;

    // restarted: it resumes from its checkpoint, publishing part of a batch again
    let publisher = NatsPublisher::connect(settings.clone()).await.unwrap();
    let mut restarted = runtime(&t.store, publisher);
    restarted.catch_up().await.unwrap();
    let received = consume(&settings, total).await;
    assert_is_the_log(&settings, &log, &received);
    assert!(received.iter().any(|m| m
        .subject
        .starts_with(&format!("{}.globex.environment.", settings.subject_prefix))));
    assert!(received
        .iter()
        .all(|m| m.subject.ends_with(".registered") || !m.subject.contains(".environment.")));

    // the checkpoint lost: everything published again, all of it dropped as
    // duplicates
    let mut sql = Sql::new(Dialect::of(&t.store));
    sql.push("UPDATE reactor_checkpoints SET tx_id = 0, position = 0");
    sql.execute(&t.store).await.unwrap();
    let publisher = NatsPublisher::connect(settings.clone()).await.unwrap();
    let mut again = runtime(&t.store, publisher);
    again.catch_up().await.unwrap();
    let received = consume(&settings, total).await;
    assert_is_the_log(&settings, &log, &received);
    delete_stream(&settings).await;
}

/// `nats-server -js` on `port`, storing in `dir`; killed when dropped.
struct NatsServer(Child);

impl NatsServer {
    fn start(port: u16, dir: &std::path::Path) -> NatsServer {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (Debian's nats-server package) on the PATH");
        NatsServer(child)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// NATS is down when the service starts: the service starts and serves, `/ready`
/// lists the publisher as blocked with the cause, and once NATS is up the feed
/// catches up with everything, losing nothing.
#[tokio::test]
async fn a_nats_down_at_start_is_caught_up_when_it_returns() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = settings(format!("nats://127.0.0.1:{port}"));
    let api = Api::start_with_nats(Kind::Sqlite, settings.clone()).await;
    let admin_token = api.token("acme", "admin", "admin-1");
    api.ok(
        &admin_token,
        "mutation { registerEnvironment(id: \"prod\", name: \"Production\", class: PRODUCTION,
           n8nBaseUrl: \"https://n8n.example.com\") { position } }",
        serde_json::json!({}),
    )
    .await;

    // ready, with the publisher listed as blocked on the first event
    let deadline = Instant::now() + Duration::from_secs(30);
    let blocked = loop {
        let response = api
            .http
            .get(format!("{}/ready", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "the service is ready without NATS");
        let body: Value = response.json().await.unwrap();
        let publisher = body["reactors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "nats_publisher")
            .cloned();
        if let Some(blocked) = publisher.and_then(|p| p.get("blocked").cloned()) {
            if !blocked.is_null() {
                break blocked;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the publisher is not reported: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(blocked["permanent"], false, "{blocked}");

    let dir = tempfile::tempdir().unwrap();
    let _server = NatsServer::start(port, dir.path());
    let total = api.settled_event_count().await as usize;
    let log = read_all(&api.store.store, total).await;
    let received = consume(&settings, total).await;
    assert_is_the_log(&settings, &log, &received);
    api.stop().await;
}
