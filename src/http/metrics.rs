//! `GET /metrics`: Prometheus text (OpenMetrics) for requests, command outcomes by
//! error code, open event streams, projection and reactor lag, scheduler ticks, and
//! webhook deliveries, attempts, endpoints by status and endpoint lag.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TickLabels {
    job: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabels {
    projection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReactorLabels {
    reactor: String,
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    commands: Family<CommandLabels, Counter>,
    subscribers: Gauge,
    head: Gauge,
    checkpoints: Family<ProjectionLabels, Gauge>,
    lag: Family<ProjectionLabels, Gauge>,
    failed: Family<ProjectionLabels, Gauge>,
    reactor_checkpoints: Family<ReactorLabels, Gauge>,
    reactor_lag: Family<ReactorLabels, Gauge>,
    reactor_handled: Family<ReactorLabels, Gauge>,
    reactor_skipped: Family<ReactorLabels, Gauge>,
    reactor_blocked: Family<ReactorLabels, Gauge>,
    reactor_attempts: Family<ReactorLabels, Gauge>,
    ticks: Family<TickLabels, Counter>,
    refused: Family<RefusalLabels, Counter>,
    read_backs: Family<SourceLabels, Counter>,
    webhook_attempts: Family<OutcomeLabels, Counter>,
    webhook_deliveries: Family<OutcomeLabels, Counter>,
    webhook_endpoints: Family<StatusLabels, Gauge>,
    webhook_lag: Family<WebhookLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Cheap to clone; every clone records into the same registry.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("workflowops");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            durations.clone(),
        );
        let commands = Family::<CommandLabels, Counter>::default();
        registry.register(
            "commands",
            "Commands executed, by command and outcome (OK or the error code)",
            commands.clone(),
        );
        let subscribers = Gauge::default();
        registry.register(
            "event_streams",
            "Open event streams (GraphQL subscriptions and SSE)",
            subscribers.clone(),
        );
        let head = Gauge::default();
        registry.register(
            "log_head_position",
            "Global position of the last event readers can see",
            head.clone(),
        );
        let checkpoints = Family::<ProjectionLabels, Gauge>::default();
        registry.register(
            "projection_checkpoint_position",
            "Global position of the last event each projection applied",
            checkpoints.clone(),
        );
        let lag = Family::<ProjectionLabels, Gauge>::default();
        registry.register(
            "projection_lag_positions",
            "Log head position minus the projection's checkpoint position",
            lag.clone(),
        );
        let failed = Family::<ProjectionLabels, Gauge>::default();
        registry.register(
            "projection_failed",
            "1 when the projection stopped on an event it cannot apply",
            failed.clone(),
        );
        let reactor_gauge = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<ReactorLabels, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        };
        let reactor_checkpoints = reactor_gauge(
            &mut registry,
            "reactor_checkpoint_position",
            "Global position of the last event each reactor handled (in this process)",
        );
        let reactor_lag = reactor_gauge(
            &mut registry,
            "reactor_lag_positions",
            "Log head position minus the reactor's checkpoint position",
        );
        let reactor_handled = reactor_gauge(
            &mut registry,
            "reactor_events_handled",
            "Events whose effect the reactor made happen (since its checkpoint row began)",
        );
        let reactor_skipped = reactor_gauge(
            &mut registry,
            "reactor_events_skipped",
            "Events the reactor skipped as already done or no longer applicable",
        );
        let reactor_blocked = reactor_gauge(
            &mut registry,
            "reactor_blocked",
            "0 running; 1 retrying an event after a transient error; 2 stopped at an \
             event on a permanent error (retried with backoff, someone has to look)",
        );
        let reactor_attempts = reactor_gauge(
            &mut registry,
            "reactor_attempts",
            "Failed attempts at the event the reactor is blocked on (0 when running)",
        );
        let ticks = Family::<TickLabels, Counter>::default();
        registry.register(
            "scheduler_ticks",
            "Scheduler tick attempts by job and outcome (ok, partial, error, busy: \
             another process runs the job, already_run: another process ran the slot)",
            ticks.clone(),
        );
        let refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "requests_refused",
            "GraphQL requests refused before or during execution, by reason (cost: over a \
             limit on size, expansion or expensive fields; tenant_concurrency: the tenant's \
             requests in flight; overloaded: the process's requests in flight; deadline: not \
             finished within the request deadline)",
            refused.clone(),
        );
        let read_backs = Family::<SourceLabels, Counter>::default();
        registry.register(
            "read_backs",
            "Rows a mutation's payload read back after its projection applied the \
             mutation, by source (memory: the rows the projector running in this process \
             shared after its commit; table: a query of the read model)",
            read_backs.clone(),
        );
        let webhook_attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by outcome (delivered: a 2xx; failed: anything else, \
             retried on the schedule); the dispatcher's lag is reactor_lag_positions \
             {reactor=\"webhook_dispatcher\"}",
            webhook_attempts.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook and notification deliveries ended, by outcome (delivered: a 2xx; \
             exhausted: every attempt of the schedule failed, or a 410: the endpoint was \
             disabled)",
            webhook_deliveries.clone(),
        );
        let webhook_endpoints = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "webhook_endpoints",
            "Webhook endpoints and notification channels by status (active, disabled, deleted)",
            webhook_endpoints.clone(),
        );
        let webhook_lag = Family::<WebhookLabels, Gauge>::default();
        registry.register(
            "webhook_endpoint_lag_positions",
            "Log head position minus the position of the endpoint's oldest undelivered \
             delivery (endpoints with none are not listed); the NATS publisher's lag is \
             reactor_lag_positions{reactor=\"nats_publisher\"}",
            webhook_lag.clone(),
        );
        Metrics(Arc::new(Inner {
            registry,
            requests,
            durations,
            commands,
            subscribers,
            head,
            checkpoints,
            lag,
            failed,
            reactor_checkpoints,
            reactor_lag,
            reactor_handled,
            reactor_skipped,
            reactor_blocked,
            reactor_attempts,
            ticks,
            refused,
            read_backs,
            webhook_attempts,
            webhook_deliveries,
            webhook_endpoints,
            webhook_lag,
        }))
    }

    pub fn request(&self, route: &'static str, status: u16, seconds: f64) {
        self.0
            .requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.0
            .durations
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }

    pub fn command(&self, command: &'static str, code: &'static str) {
        self.0
            .commands
            .get_or_create(&CommandLabels { command, code })
            .inc();
    }

    /// One webhook delivery attempt, `delivered` or `failed`.
    pub fn webhook_attempt(&self, outcome: &'static str) {
        self.0
            .webhook_attempts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A delivery ended: `delivered` or `exhausted`.
    pub fn webhook_delivery(&self, outcome: &'static str) {
        self.0
            .webhook_deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn scheduler_tick(&self, job: &'static str, outcome: &'static str) {
        self.0
            .ticks
            .get_or_create(&TickLabels { job, outcome })
            .inc();
    }

    /// A request refused for `reason` (`cost`, `tenant_concurrency`, `overloaded`,
    /// `deadline`).
    pub fn refused(&self, reason: &'static str) {
        self.0
            .refused
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    /// A mutation's read-back answered from `source` (`memory` or `table`).
    pub fn read_back(&self, source: &'static str) {
        self.0
            .read_backs
            .get_or_create(&SourceLabels { source })
            .inc();
    }

    pub fn subscriber(&self, delta: i64) {
        self.0.subscribers.inc_by(delta);
    }

    /// Refreshes the projection and reactor gauges and renders every metric.
    pub fn render(
        &self,
        head: i64,
        projections: &[projections::ProjectionStatus],
        reactors: &[crate::reactors::ReactorStatus],
        webhooks: Option<&projections::models::webhooks::EndpointStats>,
    ) -> Result<String, std::fmt::Error> {
        self.0.head.set(head);
        if let Some(stats) = webhooks {
            self.0.webhook_endpoints.clear();
            for (status, n) in &stats.by_status {
                self.0
                    .webhook_endpoints
                    .get_or_create(&StatusLabels {
                        status: status.clone(),
                    })
                    .set(*n);
            }
            self.0.webhook_lag.clear();
            for (webhook, oldest) in &stats.oldest_undelivered {
                self.0
                    .webhook_lag
                    .get_or_create(&WebhookLabels {
                        webhook: webhook.clone(),
                    })
                    .set((head - oldest + 1).max(0));
            }
        }
        for p in projections {
            let labels = ProjectionLabels {
                projection: p.name.clone(),
            };
            self.0
                .checkpoints
                .get_or_create(&labels)
                .set(p.checkpoint.position);
            self.0
                .lag
                .get_or_create(&labels)
                .set((head - p.checkpoint.position).max(0));
            self.0
                .failed
                .get_or_create(&labels)
                .set(i64::from(p.failed.is_some()));
        }
        for r in reactors.iter().filter(|r| r.running_here) {
            let labels = ReactorLabels {
                reactor: r.name.clone(),
            };
            let inner = &self.0;
            inner
                .reactor_checkpoints
                .get_or_create(&labels)
                .set(r.checkpoint.position);
            inner
                .reactor_lag
                .get_or_create(&labels)
                .set((head - r.checkpoint.position).max(0));
            inner
                .reactor_handled
                .get_or_create(&labels)
                .set(r.events_handled);
            inner
                .reactor_skipped
                .get_or_create(&labels)
                .set(r.events_skipped);
            let (blocked, attempts) = match &r.blocked {
                None => (0, 0),
                Some(b) => (if b.permanent { 2 } else { 1 }, i64::from(b.attempts)),
            };
            inner.reactor_blocked.get_or_create(&labels).set(blocked);
            inner.reactor_attempts.get_or_create(&labels).set(attempts);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.0.registry)?;
        Ok(text)
    }
}
