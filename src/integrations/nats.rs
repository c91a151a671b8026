//! The NATS JetStream feed (issue 15): every event of the log, once, in log order,
//! on a durable stream that consumers replay at their own pace.
//!
//! [`NatsPublisher`] is a reactor (`nats_publisher`) on its own runtime. For each
//! event it publishes the event's JSON (the fields of the GraphQL `Event`, as the SSE
//! stream sends them) to `{prefix}.{tenant}.{aggregate_type}.{event}` (`event`: the
//! event type after its first dot: `incident.detected` → `detected`,
//! `mapping.linked` on a `workflow_mapping` → `linked`), with
//! `Nats-Msg-Id` = `{aggregate id}/{sequence}`, which never changes for an event. It
//! waits for JetStream's acknowledgement before the next event, so the checkpoint
//! never passes an event the stream does not hold. A replay after a crash publishes
//! the end of a batch again: JetStream drops those as duplicates of the same
//! `Nats-Msg-Id` (within the stream's duplicate window, 2 minutes unless the stream
//! says otherwise), and the duplicate acknowledgement counts as published.
//!
//! The connection is made in the background: a NATS server that is down when the
//! service starts does not stop it. The publisher then stops at the first event,
//! listed as blocked with the cause in `/ready` and `/metrics` (`reactor_blocked`,
//! `reactor_lag_positions` with `reactor="nats_publisher"`), retries with backoff,
//! and catches up from its checkpoint once NATS answers. The stream is created on
//! first use when it does not exist; an existing one must take the subjects
//! (`{prefix}.>`), or every publish fails with the reason.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use crate::reactors::{ReactError, Reaction, Reactor, ReactorOptions, ReactorRuntime, Trigger};
use eventstore::{Store, StoredEvent};

/// The publisher's reactor name (its checkpoint row and advisory lock).
pub const NAME: &str = "nats_publisher";

/// How long one publish waits for JetStream's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the feed goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// `nats://host:port` (several, comma-separated).
    pub url: String,
    /// The JetStream stream (created when missing).
    pub stream: String,
    /// The first token of every subject; the stream takes `{prefix}.>`.
    pub subject_prefix: String,
}

impl NatsSettings {
    pub fn new(url: impl Into<String>) -> NatsSettings {
        NatsSettings {
            url: url.into(),
            stream: "WORKFLOWOPS".into(),
            subject_prefix: "workflowops".into(),
        }
    }

    /// The subject of `event`.
    pub fn subject(&self, event: &StoredEvent) -> String {
        let name = event
            .event_type
            .split_once('.')
            .map_or(event.event_type.as_str(), |(_, name)| name);
        format!(
            "{}.{}.{}.{}",
            self.subject_prefix,
            token(event.tenant()),
            token(&event.aggregate_type),
            token(name)
        )
    }
}

/// A subject token: NATS separates tokens with `.` and gives `*`, `>` and
/// whitespace meaning; anything else is kept.
fn token(part: &str) -> String {
    part.chars()
        .map(|c| match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() => '_',
            c => c,
        })
        .collect()
}

/// The `Nats-Msg-Id` of `event`: stable for the event, different for every event.
pub fn message_id(event: &StoredEvent) -> String {
    format!("{}/{}", event.aggregate_id, event.sequence)
}

/// The publisher reactor.
pub struct NatsPublisher {
    settings: NatsSettings,
    jetstream: jetstream::Context,
    /// The stream was created or found (checked once per process).
    stream: OnceCell<()>,
}

impl NatsPublisher {
    /// Connects in the background (a server that is down now is retried) and
    /// returns at once.
    pub async fn connect(settings: NatsSettings) -> anyhow::Result<NatsPublisher> {
        let client = async_nats::ConnectOptions::new()
            .name("workflowops")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(settings.url.as_str())
            .await?;
        let mut jetstream = jetstream::new(client);
        jetstream.set_timeout(ACK_TIMEOUT);
        Ok(NatsPublisher {
            settings,
            jetstream,
            stream: OnceCell::new(),
        })
    }

    /// Creates the stream when it does not exist; checks that it takes our
    /// subjects when it does.
    async fn ensure_stream(&self) -> Result<(), ReactError> {
        self.stream
            .get_or_try_init(|| async {
                let subjects = format!("{}.>", self.settings.subject_prefix);
                let stream = self
                    .jetstream
                    .get_or_create_stream(jetstream::stream::Config {
                        name: self.settings.stream.clone(),
                        subjects: vec![subjects.clone()],
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| {
                        ReactError::Transient(format!(
                            "JetStream stream {}: {e}",
                            self.settings.stream
                        ))
                    })?;
                let config = &stream.cached_info().config;
                if !config.subjects.iter().any(|s| s == &subjects || s == ">") {
                    return Err(ReactError::Permanent(format!(
                        "JetStream stream {} takes {:?}, not {subjects}",
                        self.settings.stream, config.subjects
                    )));
                }
                Ok(())
            })
            .await
            .map(drop)
    }
}

impl Reactor for NatsPublisher {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wants(&self, _event: &StoredEvent) -> bool {
        true
    }

    fn react<'a>(
        &'a self,
        trigger: &'a Trigger<'a>,
    ) -> BoxFuture<'a, Result<Reaction, ReactError>> {
        Box::pin(async move {
            self.ensure_stream().await?;
            let event = trigger.event;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                message_id(event).as_str(),
            );
            headers.insert("Workflowops-Position", event.position.to_string().as_str());
            let body = crate::http::feed::event_json(event).to_string();
            let sent = self
                .jetstream
                .publish_with_headers(self.settings.subject(event), headers, body.into())
                .await
                .map_err(|e| ReactError::Transient(format!("NATS publish: {e}")))?;
            let ack = sent
                .await
                .map_err(|e| ReactError::Transient(format!("JetStream acknowledgement: {e}")))?;
            if ack.duplicate {
                return Ok(Reaction::Skipped(format!(
                    "already in stream {} (sequence {})",
                    ack.stream, ack.sequence
                )));
            }
            Ok(Reaction::Done)
        })
    }
}

/// Starts the publisher on its own reactor runtime (its status with the other
/// reactors'); the task runs until aborted.
pub async fn spawn(
    store: &Store,
    settings: NatsSettings,
    reactors: &crate::reactors::Reactors,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let publisher = NatsPublisher::connect(settings).await?;
    let runtime = ReactorRuntime::new(
        store.clone(),
        vec![Arc::new(publisher)],
        ReactorOptions::default(),
        reactors.clone(),
    );
    Ok(runtime.spawn().1)
}
