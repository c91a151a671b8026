//! workflowops: a control plane for n8n workflows across environments, event-sourced
//! with CQRS projections. `main.rs` only boots; everything lives here so tests and
//! helper binaries reuse it.

pub mod app;
pub mod auth;
pub mod bus;
pub mod config;
pub mod http;
pub mod read_side;
pub use projections::store;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::store::Store;

/// The running service: a bound listener and its router.
pub struct Application {
    listener: TcpListener,
    store: Store,
    projections: projections::ProjectorHandle,
    projector: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Opens and migrates the store, then binds the listener (port 0 picks a free port).
    pub async fn build(config: &Config) -> anyhow::Result<Application> {
        let store = config.open_store().await?;
        store.migrate().await?;
        let options = projections::ProjectorOptions {
            batch_size: config.projector_batch,
            ..Default::default()
        };
        Self::with_options(store, config.listen, options).await
    }

    pub async fn with_store(store: Store, listen: SocketAddr) -> anyhow::Result<Application> {
        Self::with_options(store, listen, Default::default()).await
    }

    pub async fn with_options(
        store: Store,
        listen: SocketAddr,
        options: projections::ProjectorOptions,
    ) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(listen).await?;
        let (projections, projector) = read_side::start(&store, options);
        Ok(Application {
            listener,
            store,
            projections,
            projector,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The read models this process runs: status and read-your-writes waits.
    pub fn projections(&self) -> &projections::ProjectorHandle {
        &self.projections
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = http::router(http::AppState {
            store: self.store.clone(),
            projections: self.projections.clone(),
        });
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
        // An in-flight batch rolls back; the next start resumes from its checkpoint.
        self.projector.abort();
        served
    }
}
