//! The one application context: what every part of the service works with, built
//! once by [`Application`](crate::Application) and shared (cheaply cloned) by the
//! HTTP layer, the GraphQL resolvers, the workflows (sync, drift, promotion) and the
//! schedulers.
//!
//! Per-request data (the caller, the request id, the DataLoaders) is not here: it
//! goes into each request (`graphql::Caller`, `graphql::Loaders`).

use eventstore::Store;

use crate::command::domain::Domain;
use crate::connectors::RetryPolicy;
use crate::http::admission::Admission;
use crate::http::feed::EventFeed;
use crate::http::metrics::Metrics;
use crate::storage::payloads::Payloads;
use crate::storage::secrets::SecretStore;

#[derive(Clone)]
pub struct AppContext {
    /// The event store (and the read models' database).
    pub store: Store,
    /// The commands: every write goes through its bus.
    pub domain: Domain,
    /// The read models this process runs: their status and read-your-writes waits.
    pub projections: projections::ProjectorHandle,
    /// The live event stream (GraphQL subscriptions and Server-Sent Events).
    pub feed: EventFeed,
    /// Sealed credentials (n8n API keys, Git tokens).
    pub secrets: SecretStore,
    /// Drift snapshot payloads, outside the log.
    pub payloads: Payloads,
    pub metrics: Metrics,
    /// Per-tenant request slots and the request deadline.
    pub admission: Admission,
    /// Timeouts and retries of calls to n8n and Git.
    pub retry: RetryPolicy,
    /// The GitHub API root for GitHub repositories (`None`: api.github.com; GitHub
    /// Enterprise: `https://ghe.example.com/api/v3`).
    pub github_api_url: Option<String>,
    /// A deployment running longer than this is recovered by the deployment sweep
    /// (its target restored from the pre-snapshot, the deployment failed as stale).
    pub deployment_stale_after: std::time::Duration,
    /// How webhook deliveries are made (schedule, timeout, SSRF allowances).
    pub webhooks: crate::integrations::webhooks::WebhookSettings,
    /// Wakes the webhook sender when the dispatcher queued something.
    pub webhook_wake: std::sync::Arc<tokio::sync::Notify>,
    /// Git folder reads shared by concurrent syncs and drift checks, and workflow
    /// files hashed once by blob id.
    pub git_reads: std::sync::Arc<crate::workflows::git_reads::GitReads>,
    /// Listed n8n workflows summarised once per JSON text (what a sync records of
    /// each), shared by every sync.
    pub n8n_reads: std::sync::Arc<crate::workflows::n8n_reads::ListedWorkflows>,
}

impl AppContext {
    /// A context over `store` with the service's defaults: a fresh command bus, the
    /// given read models and event feed, credentials sealed with `secret_key`, no
    /// request limits beyond the defaults, the default retry policy, api.github.com.
    pub fn new(
        store: Store,
        projections: projections::ProjectorHandle,
        feed: EventFeed,
        secret_key: &[u8],
    ) -> AppContext {
        AppContext {
            domain: Domain::new(crate::command::bus::CommandBus::new(store.clone())),
            projections,
            feed,
            secrets: SecretStore::new(store.clone(), secret_key),
            payloads: Payloads::new(store.clone()),
            metrics: Metrics::new(),
            admission: Admission::new(Default::default()),
            retry: RetryPolicy::default(),
            github_api_url: None,
            deployment_stale_after: crate::workflows::deployment::STALE_AFTER,
            webhooks: Default::default(),
            webhook_wake: Default::default(),
            git_reads: Default::default(),
            n8n_reads: Default::default(),
            store,
        }
    }
}

/// How long a decision waits for the read models it reads to catch up.
pub const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(10);

impl AppContext {
    /// Waits (up to [`CATCH_UP`] each) until the named read models have applied every
    /// event committed so far: for decisions that read models and must not rest on a
    /// stale view (promotion gates, syncs choosing which commands to send, scheduled
    /// jobs choosing what to visit).
    pub async fn catch_up(&self, names: &[&str]) -> Result<(), projections::runtime::WaitError> {
        let last = self.store.last_position().await?;
        for name in names {
            self.projections.wait_for(name, last, CATCH_UP).await?;
        }
        Ok(())
    }
}
