//! Integrations benchmark (issue 15): webhooks to 10 endpoints and the NATS
//! JetStream feed, end to end through the real service.
//!
//!   cargo run --release --example bench_integrations -- --backend sqlite
//!   cargo run --release --example bench_integrations -- --backend postgres
//!
//! The service runs in-process on loopback (`examples/common/e2e.rs`) with loopback
//! webhook targets allowed and the feed on the NATS server at `--nats-url` (a stream
//! and subject prefix of this run alone, deleted at the end). `--endpoints` (10)
//! receivers on loopback each register one webhook endpoint for
//! `environment.registered`.
//!
//! 1. **Latency**: `--events` (300) `registerEnvironment` mutations one after
//!    another; for each event, the time from its `recordedAt` to its arrival at each
//!    receiver (wall clocks of one machine), and to its storage in the JetStream
//!    stream (the message's stream timestamp, read by an ordered consumer).
//!    Targets: p99 ≤ 100 ms for both.
//! 2. **Throughput**: `--burst` (1,000) mutations from 16 clients at once; the
//!    deliveries per second to all endpoints, from the first mutation sent to the
//!    last delivery received (report).
//!
//! Checked: every receiver got every event of the tenant once per id, in log order,
//! each signature verifying; the stream holds every event. The last line of stdout
//! is JSON.
//!
//! **Smoke** (`--smoke`): every phase and every check with 3 endpoints, 20 events and
//! a burst of 60, for CI in a debug build; sizes given with it win.
//!
//! **Fails** (non-zero exit, after the JSON, the problems on stderr and in
//! `problems`) when a check above fails, a mutation appended other than one event, a
//! latency has fewer samples than events × endpoints (or the stream than events),
//! the split into routing and sending has no sample, or the burst delivered nothing.
//! A missed target is reported in `targets`, not a failure.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use clap::Parser;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use workflowops::integrations::nats::NatsSettings;
use workflowops::integrations::webhooks::{ssrf::Allow, WebhookSettings};

#[path = "common/bench_store.rs"]
mod bench_store;
#[path = "common/e2e.rs"]
mod e2e;
// the shared end-to-end module refers to it; this benchmark does not use n8n (the
// file allows its own unused items)
#[path = "../tests/it/fakes/n8n.rs"]
mod fake_n8n;
use e2e::*;
#[path = "common/outcome.rs"]
mod outcome;
use outcome::{require, require_eq};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(args_override_self = true)]
struct Args {
    /// sqlite or postgres
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// Tiny sizes (every phase and check, a few seconds in a debug build); sizes given
    /// on the command line still win.
    #[arg(long)]
    smoke: bool,
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Events of the latency phase, one after another.
    #[arg(long, default_value_t = 300)]
    events: usize,
    /// Events of the throughput phase, from 16 clients.
    #[arg(long, default_value_t = 1000)]
    burst: usize,
    #[arg(
        long,
        env = "WORKFLOWOPS_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,
    #[arg(long)]
    pool: Option<u32>,
    #[arg(
        long,
        env = "WORKFLOWOPS_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_url: String,
}

/// `--smoke`: the sizes put before the arguments given.
const SMOKE: &[&str] = &["--endpoints", "3", "--events", "20", "--burst", "60"];

const TENANT: &str = "bench-integrations";
const LATENCY_TARGET_MS: f64 = 100.0;

/// One request a receiver got.
#[derive(Clone)]
struct Got {
    id: String,
    position: i64,
    at: SystemTime,
    verified: bool,
}

#[derive(Default)]
struct Inbox {
    secret: Vec<u8>,
    got: Vec<Got>,
}

async fn receive(
    State(inbox): State<Arc<Mutex<Inbox>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let at = SystemTime::now();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let position = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["event"]["position"].as_i64())
        .unwrap_or(-1);
    let mut inbox = inbox.lock().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&inbox.secret).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    let verified = signature.split(' ').any(|s| s == expected);
    inbox.got.push(Got {
        id,
        position,
        at,
        verified,
    });
    StatusCode::NO_CONTENT
}

async fn receiver() -> anyhow::Result<(SocketAddr, Arc<Mutex<Inbox>>)> {
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().fallback(receive).with_state(inbox.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, inbox))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    round1(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn summary(mut samples: Vec<f64>) -> Value {
    samples.sort_unstable_by(f64::total_cmp);
    json!({
        "n": samples.len(),
        "p50": percentile(&samples, 50.0),
        "p99": percentile(&samples, 99.0),
        "max": samples.last().map(|m| round1(*m)),
    })
}

const REGISTER_ENV: &str = "mutation($id: ID!) { registerEnvironment(id: $id, name: $id,
    class: STAGING, n8nBaseUrl: \"https://n8n.example.com\") { position } }";

/// Every event of the tenant: (position, recorded at).
async fn tenant_events(
    store: &eventstore::Store,
    after: i64,
) -> anyhow::Result<Vec<(i64, DateTime<Utc>)>> {
    let mut cursor = store
        .cursor_after_position(after)
        .await?
        .unwrap_or_default();
    let mut out = vec![];
    loop {
        let events = store.read_after(cursor, 1000).await?;
        let Some(last) = events.last() else { break };
        cursor = last.cursor();
        out.extend(
            events
                .iter()
                .filter(|e| e.tenant() == TENANT)
                .map(|e| (e.position, e.recorded_at)),
        );
    }
    Ok(out)
}

/// Waits until every inbox holds `n` requests.
async fn wait_all(inboxes: &[Arc<Mutex<Inbox>>], n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let least = inboxes
            .iter()
            .map(|i| i.lock().unwrap().got.len())
            .min()
            .unwrap_or(0);
        if least >= n {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "receivers got {least} of {n}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Checks each inbox got exactly `events`, in order, each once, signed.
fn check(inboxes: &[Arc<Mutex<Inbox>>], events: &[(i64, DateTime<Utc>)]) -> anyhow::Result<()> {
    let expected: Vec<i64> = events.iter().map(|e| e.0).collect();
    for (i, inbox) in inboxes.iter().enumerate() {
        let inbox = inbox.lock().unwrap();
        let positions: Vec<i64> = inbox.got.iter().map(|g| g.position).collect();
        anyhow::ensure!(
            positions == expected,
            "receiver {i}: {} requests, not the {} events in log order",
            positions.len(),
            expected.len()
        );
        anyhow::ensure!(
            inbox
                .got
                .iter()
                .all(|g| g.verified && g.id == format!("msg_{}", g.position)),
            "receiver {i}: a signature or id does not verify"
        );
    }
    Ok(())
}

async fn run(args: &Args, service: &Service, nats: &NatsSettings) -> anyhow::Result<Value> {
    let client = service.client(TENANT)?;
    let mut inboxes = vec![];
    for n in 0..args.endpoints {
        let (addr, inbox) = receiver().await?;
        let (_, data) = client
            .gql(
                "mutation($id: ID!, $url: String!) { createWebhook(id: $id, url: $url,
                   eventTypes: [\"environment.registered\"]) { secret } }",
                json!({ "id": format!("hook-{n}"), "url": format!("http://{addr}/hook") }),
            )
            .await?;
        let secret = data["createWebhook"]["secret"]
            .as_str()
            .context("a secret")?;
        inbox.lock().unwrap().secret = base64::engine::general_purpose::STANDARD
            .decode(secret.trim_start_matches("whsec_"))?;
        inboxes.push(inbox);
    }
    let start = service.store.last_position().await?;

    // 1. latency
    eprintln!(
        "1. latency: {} events, {} endpoints",
        args.events, args.endpoints
    );
    for i in 0..args.events {
        client
            .gql(REGISTER_ENV, json!({ "id": format!("lat-{i}") }))
            .await?;
    }
    bench_store::settle_log(&service.store, Duration::from_secs(120)).await?;
    let events = tenant_events(&service.store, start).await?;
    anyhow::ensure!(
        events.len() == args.events,
        "{} events appended",
        events.len()
    );
    wait_all(&inboxes, events.len()).await?;
    check(&inboxes, &events)?;
    let recorded: HashMap<i64, DateTime<Utc>> = events.iter().copied().collect();
    let mut webhook_ms = vec![];
    for inbox in &inboxes {
        for got in &inbox.lock().unwrap().got {
            let at: DateTime<Utc> = got.at.into();
            webhook_ms.push(
                (at - recorded[&got.position])
                    .num_microseconds()
                    .unwrap_or(0) as f64
                    / 1000.0,
            );
        }
    }

    // where a webhook's time goes, from one endpoint's deliveries: event → queued
    // (the dispatcher) → delivered (the sender)
    let (_, data) = client
        .gql(
            "query { webhookDeliveries(webhookId: \"hook-0\", first: 200) {
               nodes { position createdAt deliveredAt } } }",
            json!({}),
        )
        .await?;
    let (mut queued_ms, mut sent_ms) = (vec![], vec![]);
    for node in data["webhookDeliveries"]["nodes"]
        .as_array()
        .context("nodes")?
    {
        let position = node["position"].as_i64().unwrap_or(-1);
        let (Some(at), Ok(created), Ok(delivered)) = (
            recorded.get(&position),
            node["createdAt"]
                .as_str()
                .unwrap_or("")
                .parse::<DateTime<Utc>>(),
            node["deliveredAt"]
                .as_str()
                .unwrap_or("")
                .parse::<DateTime<Utc>>(),
        ) else {
            continue;
        };
        let ms = |d: chrono::Duration| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
        queued_ms.push(ms(created - *at));
        sent_ms.push(ms(delivered - created));
    }
    require_eq(
        webhook_ms.len(),
        events.len() * args.endpoints,
        "latency: webhook deliveries timed",
    );
    require_eq(
        queued_ms.len(),
        events.len().min(200),
        "latency: hook-0's deliveries split into routing and sending",
    );

    // the stream: every event, once, in log order; stored when
    let js = async_nats::jetstream::new(async_nats::connect(nats.url.as_str()).await?);
    let mut stream = js.get_stream(&nats.stream).await?;
    let total = service.store.event_count().await? as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stream.info().await?.state.messages < total {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the stream did not get every event"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await?;
    let mut messages = consumer.messages().await?;
    let mut nats_ms = vec![];
    let mut last = 0;
    for _ in 0..total {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await?
            .context("the stream ended")??;
        let event: Value = serde_json::from_slice(&message.payload)?;
        let position = event["position"].as_i64().unwrap_or(-1);
        anyhow::ensure!(position > last, "the stream is not in log order");
        last = position;
        if let Some(at) = recorded.get(&position) {
            let stored = message
                .info()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .published;
            let stored: DateTime<Utc> =
                DateTime::from_timestamp(stored.unix_timestamp(), stored.nanosecond())
                    .context("a time")?;
            nats_ms.push((stored - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    anyhow::ensure!(nats_ms.len() == events.len(), "the stream misses events");
    require(!nats_ms.is_empty(), || {
        "latency: the stream holds no event of the phase".into()
    });

    // 2. throughput
    eprintln!("2. throughput: {} events from 16 clients", args.burst);
    let before = service.store.last_position().await?;
    let already = events.len();
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = vec![];
    for _ in 0..16 {
        let (client, next, burst) = (client.clone(), next.clone(), args.burst);
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= burst {
                    return Ok::<_, anyhow::Error>(());
                }
                client
                    .gql(REGISTER_ENV, json!({ "id": format!("burst-{i}") }))
                    .await?;
            }
        }));
    }
    for c in clients {
        c.await??;
    }
    bench_store::settle_log(&service.store, Duration::from_secs(120)).await?;
    let burst_events = tenant_events(&service.store, before).await?;
    require_eq(
        burst_events.len(),
        args.burst,
        "throughput: events appended by the burst's mutations",
    );
    wait_all(&inboxes, already + burst_events.len()).await?;
    let elapsed = started.elapsed();
    let all = tenant_events(&service.store, start).await?;
    check(&inboxes, &all)?;
    let deliveries = burst_events.len() * args.endpoints;
    let per_second = deliveries as f64 / elapsed.as_secs_f64();
    require(deliveries > 0, || "throughput: nothing delivered".into());

    let webhook = summary(webhook_ms);
    let nats_summary = summary(nats_ms);
    let met = |s: &Value| s["p99"].as_f64().is_some_and(|p| p <= LATENCY_TARGET_MS);
    Ok(json!({
        "benchmark": "integrations",
        "backend": args.backend,
        "endpoints": args.endpoints,
        "webhook_latency_ms": webhook,
        "webhook_queued_ms": summary(queued_ms),
        "webhook_queued_to_delivered_ms": summary(sent_ms),
        "nats_latency_ms": nats_summary,
        "throughput": {
            "events": burst_events.len(),
            "deliveries": deliveries,
            "seconds": round1(elapsed.as_secs_f64()),
            "deliveries_per_sec": round1(per_second),
        },
        "targets": {
            "webhook_p99_ms": { "target": LATENCY_TARGET_MS, "value": webhook["p99"], "met": met(&webhook) },
            "nats_p99_ms": { "target": LATENCY_TARGET_MS, "value": nats_summary["p99"], "met": met(&nats_summary) },
        },
    }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse_from(outcome::args_with_smoke(SMOKE));
    let report = bench(&args).await;
    outcome::conclude("integrations", args.smoke, report)
}

async fn bench(args: &Args) -> anyhow::Result<Value> {
    anyhow::ensure!(
        args.endpoints > 0 && args.events > 0 && args.burst > 0,
        "--endpoints, --events and --burst > 0"
    );
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let nats = NatsSettings {
        url: args.nats_url.clone(),
        stream: format!("WFOBENCH_{unique}"),
        subject_prefix: format!("wfobench_{unique}"),
    };
    let settings = nats.clone();
    let bench = Bench::start(&args.backend, args.pool, &args.pg_url, move |app| {
        app.set_webhooks(WebhookSettings {
            allow: Allow {
                loopback: true,
                private: false,
            },
            ..Default::default()
        });
        app.set_nats(Some(settings));
    })
    .await?;
    let report = run(args, &bench.service, &nats).await;
    let report = bench.finish(report).await;
    if let Ok(client) = async_nats::connect(nats.url.as_str()).await {
        let _ = async_nats::jetstream::new(client)
            .delete_stream(&nats.stream)
            .await;
    }
    report
}
