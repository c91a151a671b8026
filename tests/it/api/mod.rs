//! The API end to end: the real service on port 0 over HTTP and WebSocket, with a
//! fresh database per test.

mod bad_input;
mod credentials;
mod hardening;
mod isolation;
mod promotions;
mod service;
mod streams;
mod walkthrough;

use std::time::Duration;

use serde_json::{json, Value};
use workflowops::command::domain::Domain;
use workflowops::http::auth::Auth;
use workflowops::Application;

use crate::support::{Kind, TestStore};

/// The signing secret of every test service.
pub const SECRET: &[u8] = b"api-tests-secret-0123456789abcdef-0123456789";
/// The key that seals stored credentials in every test service (so that a second
/// process on the same database can read them).
pub const SECRET_KEY: &[u8] = b"api-tests-credentials-key-0123456789abcdef";

/// Webhooks in tests: loopback receivers allowed, fast retries (5 attempts over
/// 750 ms), 2 s per attempt.
pub fn webhook_settings() -> workflowops::integrations::webhooks::WebhookSettings {
    use workflowops::integrations::webhooks::{ssrf::Allow, WebhookSettings};
    WebhookSettings {
        schedule: [0, 50, 100, 200, 400]
            .into_iter()
            .map(Duration::from_millis)
            .collect(),
        timeout: Duration::from_secs(2),
        allow: Allow {
            private: false,
            loopback: true,
        },
        public_url: "https://workflowops.example.com".to_string(),
    }
}

/// A running service and a client for it.
pub struct Api {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub auth: Auth,
    pub domain: Domain,
    pub store: TestStore,
    /// The service's read models (for driving `workflowops::workflows::sync` in process).
    pub projections: projections::ProjectorHandle,
    /// The service's application context (for driving workflows and schedulers in
    /// process with the same store, read models and credentials).
    pub context: workflowops::AppContext,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Api {
    pub async fn start(kind: Kind) -> Api {
        Self::start_with_github(kind, None).await
    }

    /// Like [`Api::start`], with GitHub repositories read through this API root (a
    /// fake GitHub on loopback) instead of api.github.com.
    pub async fn start_with_github(kind: Kind, github_api_url: Option<String>) -> Api {
        Self::start_with(kind, github_api_url, None, None).await
    }

    /// Like [`Api::start`], publishing every event to NATS JetStream.
    pub async fn start_with_nats(
        kind: Kind,
        nats: workflowops::integrations::nats::NatsSettings,
    ) -> Api {
        Self::start_with(kind, None, None, Some(nats)).await
    }

    /// Like [`Api::start`], with these admission limits (per-tenant slots, deadline).
    pub async fn start_with_limits(
        kind: Kind,
        limits: workflowops::http::admission::Limits,
    ) -> Api {
        Self::start_with(kind, None, Some(limits), None).await
    }

    async fn start_with(
        kind: Kind,
        github_api_url: Option<String>,
        limits: Option<workflowops::http::admission::Limits>,
        nats: Option<workflowops::integrations::nats::NatsSettings>,
    ) -> Api {
        let store = TestStore::new(kind).await;
        let auth = Auth::new(SECRET);
        let mut app = Application::with_store(
            store.store.clone(),
            "127.0.0.1:0".parse().unwrap(),
            auth.clone(),
        )
        .await
        .expect("start the service");
        app.set_github_api_url(github_api_url);
        app.set_secret_key(SECRET_KEY);
        if let Some(limits) = limits {
            app.set_limits(limits);
        }
        app.set_nats(nats);
        app.set_webhooks(webhook_settings());
        let addr = app.local_addr().unwrap();
        let domain = app.domain().clone();
        // fixtures that build through the store use the service's domain and reactors
        store.adopt_domain(domain.clone());
        let projections = app.projections().clone();
        let context = app.context().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Api {
            base: format!("http://{addr}"),
            addr,
            auth,
            domain,
            store,
            projections,
            context,
            http: reqwest::Client::new(),
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// A token of `tenant` with `role` for `sub`.
    pub fn token(&self, tenant: &str, role: &str, sub: &str) -> String {
        self.auth
            .mint(tenant, role, sub, Duration::from_secs(3600))
            .unwrap()
    }

    /// POSTs a GraphQL request; returns (HTTP status, body).
    pub async fn post(&self, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.http.post(format!("{}/graphql", self.base)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST /graphql");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Runs a GraphQL operation and returns the whole response body (data and
    /// errors); the HTTP status must be 200.
    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> Value {
        let (status, body) = self
            .post(
                Some(token),
                json!({ "query": query, "variables": variables }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Runs an operation that must succeed; returns its `data`.
    pub async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Runs an operation that must fail; returns its first error.
    pub async fn err(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        body["errors"][0].clone()
    }

    /// `GET /metrics`: the service's metrics as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The total number of events in the log.
    pub async fn event_count(&self) -> i64 {
        self.store.store.event_count().await.unwrap()
    }

    /// The number of events once the reactors have reacted to everything so far
    /// (their effects, such as a slot released after a close, land just after the
    /// command that caused them).
    pub async fn settled_event_count(&self) -> i64 {
        let last = self.store.store.last_position().await.unwrap();
        self.domain
            .reactors()
            .wait_for(last, std::time::Duration::from_secs(30))
            .await
            .unwrap();
        self.event_count().await
    }

    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    /// Starts the service again on the same database (after [`Api::shutdown`], or
    /// after another process that used it was killed), with the same secrets.
    pub async fn restart(&mut self) {
        self.shutdown().await;
        let mut app = Application::with_store(
            self.store.store.clone(),
            "127.0.0.1:0".parse().unwrap(),
            self.auth.clone(),
        )
        .await
        .expect("start the service again");
        app.set_secret_key(SECRET_KEY);
        app.set_webhooks(webhook_settings());
        self.addr = app.local_addr().unwrap();
        self.base = format!("http://{}", self.addr);
        self.domain = app.domain().clone();
        self.projections = app.projections().clone();
        self.context = app.context().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.server = Some(tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        })));
        self.stop = Some(stop);
    }

    /// Stops the service (its projector included) and keeps the database, for
    /// inspecting it afterwards.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("the service stops within 10 s")
                .unwrap()
                .unwrap();
        }
    }
}

/// The error code of a GraphQL error.
pub fn code(error: &Value) -> &str {
    error["extensions"]["code"].as_str().unwrap_or("<none>")
}

/// Registers an environment through the API; returns the position of its event.
pub async fn register_environment(api: &Api, token: &str, id: &str, class: &str) -> i64 {
    let data = api
        .ok(
            token,
            "mutation($id: ID!, $class: EnvironmentClass!) {
               registerEnvironment(id: $id, name: $id, class: $class,
                 n8nBaseUrl: \"http://n8n.invalid\",
                 git: { provider: GITHUB, repository: \"acme/workflows\", branch: \"main\", folder: \"workflows\" }) {
                 position environment { id name class }
               } }",
            json!({ "id": id, "class": class }),
        )
        .await;
    assert_eq!(data["registerEnvironment"]["environment"]["id"], id);
    data["registerEnvironment"]["position"].as_i64().unwrap()
}
