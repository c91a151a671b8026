//! workflowops: a control plane for n8n workflows across environments, event-sourced
//! with CQRS projections. `main.rs` only boots; everything lives here so tests and
//! helper binaries reuse it.

pub mod command;
pub mod config;
pub mod connectors;
pub mod console;
pub mod context;
pub mod graphql;
pub mod http;
pub mod integrations;
pub mod reactors;
pub mod read_side;
pub mod scheduler;
pub mod storage;
pub mod telemetry;
pub mod workflows;

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::Config;
pub use crate::context::AppContext;
use eventstore::Store;

/// How long stopping the service waits for a scheduler tick in progress.
const SCHEDULER_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// How often the log digest is sealed unless configured.
pub const DEFAULT_SEAL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// The running service: a bound listener, the application context its router and
/// schedulers share, and its background tasks.
pub struct Application {
    listener: TcpListener,
    auth: http::auth::Auth,
    context: AppContext,
    projector: tokio::task::JoinHandle<()>,
    /// The process managers (incident slot, link slot), started with the projector.
    reactor_runtime: tokio::task::JoinHandle<()>,
    tail: tokio::task::JoinHandle<()>,
    intervals: scheduler::Intervals,
    /// How often the log digest is sealed (`None`: never; the head is kept anyway).
    seal_interval: Option<std::time::Duration>,
    /// Built on first use, from the context as it is by then.
    scheduler: std::sync::OnceLock<scheduler::Scheduler>,
    /// The NATS JetStream feed (`None`: off).
    nats: Option<integrations::nats::NatsSettings>,
}

impl Application {
    /// Opens and migrates the store, then binds the listener (port 0 picks a free port).
    pub async fn build(config: &Config, auth: http::auth::Auth) -> anyhow::Result<Application> {
        let store = config.open_store().await?;
        store.migrate().await?;
        let options = projections::ProjectorOptions {
            batch_size: config.projector_batch,
            ..Default::default()
        };
        let mut app = Self::with_options(store, config.listen, auth, options).await?;
        app.set_secret_key(&config.secret_key()?);
        app.set_github_api_url(config.github_api_url.clone());
        app.intervals = config.intervals();
        app.set_deployment_stale_after(config.deployment_stale_after);
        app.set_limits(config.limits());
        app.seal_interval = config.seal_interval.0;
        app.nats = config.nats();
        app.set_webhooks(config.webhooks()?);
        Ok(app)
    }

    /// The key that seals stored credentials. Until it is set, a random one (fine
    /// for tests; credentials stored with it cannot be read by another process).
    pub fn set_secret_key(&mut self, key: &[u8]) {
        self.context.secrets = storage::secrets::SecretStore::new(self.context.store.clone(), key);
        self.scheduler = Default::default();
    }

    /// How often the schedulers run once the service runs (all off unless set; the
    /// service's configuration sets them).
    pub fn set_scheduler_intervals(&mut self, intervals: scheduler::Intervals) {
        self.intervals = intervals;
    }

    /// How long a deployment may run before the deployment sweep recovers it
    /// (default 1 hour).
    pub fn set_deployment_stale_after(&mut self, after: std::time::Duration) {
        self.context.deployment_stale_after = after;
        self.scheduler = Default::default();
    }

    /// How webhook deliveries are made (schedule, timeout, which internal targets
    /// are allowed).
    pub fn set_webhooks(&mut self, settings: integrations::webhooks::WebhookSettings) {
        self.context.webhooks = settings;
        self.scheduler = Default::default();
    }

    /// Publishes every event to NATS JetStream once the service runs (`None`: off,
    /// the default).
    pub fn set_nats(&mut self, nats: Option<integrations::nats::NatsSettings>) {
        self.nats = nats;
    }

    /// How often the log digest is sealed once the service runs (default 1 minute;
    /// `None`: only on demand).
    pub fn set_seal_interval(&mut self, every: Option<std::time::Duration>) {
        self.seal_interval = every;
    }

    /// The schedulers of this process (the ones `run_until_stopped` starts), to read
    /// their counts or run a tick or a job by hand.
    pub fn scheduler(&self) -> scheduler::Scheduler {
        self.scheduler
            .get_or_init(|| scheduler::Scheduler::new(self.context.clone()))
            .clone()
    }

    /// What the service's parts share (tests drive workflows and schedulers with it).
    pub fn context(&self) -> &AppContext {
        &self.context
    }

    pub fn secrets(&self) -> &storage::secrets::SecretStore {
        &self.context.secrets
    }

    /// The GitHub API root GitHub repositories are read through (GitHub
    /// Enterprise, or a test server); api.github.com when unset.
    pub fn set_github_api_url(&mut self, url: Option<String>) {
        self.context.github_api_url = url;
        self.scheduler = Default::default();
    }

    pub async fn with_store(
        store: Store,
        listen: SocketAddr,
        auth: http::auth::Auth,
    ) -> anyhow::Result<Application> {
        Self::with_options(store, listen, auth, Default::default()).await
    }

    pub async fn with_options(
        store: Store,
        listen: SocketAddr,
        auth: http::auth::Auth,
        options: projections::ProjectorOptions,
    ) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(listen).await?;
        let (projections, projector) = read_side::start(&store, options);
        let (feed, tail) = http::feed::EventFeed::start(store.clone());
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key)?;
        let context = AppContext::new(store, projections, feed, &key);
        let (_, reactor_runtime) =
            reactors::ReactorRuntime::standard(&context.domain, Default::default()).spawn();
        Ok(Application {
            listener,
            auth,
            context,
            projector,
            reactor_runtime,
            tail,
            intervals: scheduler::Intervals::off(),
            seal_interval: Some(DEFAULT_SEAL_INTERVAL),
            scheduler: Default::default(),
            nats: None,
        })
    }

    /// Per-tenant request slots and the request deadline (defaults: see
    /// [`http::admission::Limits`]).
    pub fn set_limits(&mut self, limits: http::admission::Limits) {
        self.context.admission = http::admission::Admission::new(limits);
        self.scheduler = Default::default();
    }

    /// The commands this process runs (tests drive the domain directly with it).
    pub fn domain(&self) -> &command::domain::Domain {
        &self.context.domain
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn store(&self) -> &Store {
        &self.context.store
    }

    /// The read models this process runs: status and read-your-writes waits.
    pub fn projections(&self) -> &projections::ProjectorHandle {
        &self.context.projections
    }

    /// The reactors this process runs (or waits for): status and waits.
    pub fn reactors(&self) -> &reactors::Reactors {
        self.context.domain.reactors()
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let schedulers = self.scheduler().start(self.intervals);
        // Deployments run here, on their own reactor runtime, over the context as
        // it is now (keys, connectors' settings).
        let deployments = workflows::deployment::spawn_runner(&self.context);
        // Webhooks: the dispatcher on its own reactor runtime, and the sender.
        let (webhook_dispatcher, webhook_sender) = integrations::webhooks::spawn(&self.context);
        // The NATS feed, on its own runtime: a NATS that is down delays nothing else.
        let nats = match &self.nats {
            Some(settings) => Some(
                integrations::nats::spawn(
                    &self.context.store,
                    settings.clone(),
                    self.context.domain.reactors(),
                )
                .await
                .map_err(std::io::Error::other)?,
            ),
            None => None,
        };
        let sealer = scheduler::sealer::start(self.context.store.clone(), self.seal_interval);
        let router = http::router(http::HttpState {
            context: self.context.clone(),
            schema: graphql::http_schema(self.context.clone()),
            ws_schema: graphql::schema(Some(self.context.clone())),
            auth: self.auth.clone(),
            cache: Default::default(),
        });
        let feed = self.context.feed.clone();
        // Without TCP_NODELAY a small write (an event on a stream, a short answer)
        // that follows one not yet acknowledged waits for the client's delayed ACK:
        // up to 40 ms on Linux, which was the whole of the event stream's p99.
        let listener = axum::serve::ListenerExt::tap_io(self.listener, |stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
            }
        });
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                // open event streams would hold their connections forever
                feed.close();
            })
            .await;
        // a tick in progress finishes first (it may wait for the read models)
        schedulers.stop(SCHEDULER_GRACE).await;
        // An in-flight batch rolls back; the next start resumes from its checkpoint.
        self.projector.abort();
        // A reaction in flight is replayed by the next runner: reactions are idempotent.
        self.reactor_runtime.abort();
        // A deployment in flight is resumed by the next runner from its events.
        deployments.abort();
        // An event published but not checkpointed is published again: JetStream
        // drops the duplicate.
        if let Some(nats) = nats {
            nats.abort();
        }
        // A delivery in flight is sent again (same webhook-id) by the next sender.
        webhook_dispatcher.abort();
        webhook_sender.abort();
        self.tail.abort();
        // Its writes are single statements: stopping it anywhere leaves the head whole.
        sealer.abort();
        served
    }
}
