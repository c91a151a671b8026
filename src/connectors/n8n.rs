//! The n8n connector: n8n's public REST API (`/api/v1`) over reqwest.
//!
//! - Authentication: the `X-N8N-API-KEY` header. The key lives only in that header
//!   value (marked sensitive); `Debug`, errors and traces never show it.
//! - Listing pages through `GET /api/v1/workflows?limit=&cursor=` (`{data, nextCursor}`)
//!   until `nextCursor` is null, absent or empty; a cursor seen twice ends the listing
//!   with [`UpstreamError::Malformed`] instead of looping.
//! - `POST` and `PUT` bodies are reduced by [`update_body`] to what n8n's schema accepts:
//!   n8n rejects any other property with 400 "request/body must NOT have additional
//!   properties", including settings keys that its own `GET` returns.
//! - Retries are the shared loop's ([`retry::run`]): every attempt has the policy's
//!   timeout. Timeouts, connection errors, 429 and 5xx (waiting `Retry-After` on 429
//!   and 503, capped at `max_delay`) are retried with [`RetryPolicy::backoff`]; other
//!   4xx never are.
//! - `create_workflow` is not idempotent: it is retried only when n8n cannot have
//!   created anything (the connection could not be made, or 429). After a timeout, a
//!   broken connection or a 5xx the workflow may exist: the error is returned at once
//!   and the caller must look before creating again.
//! - Redirects are not followed (the API key would travel to the redirect's target);
//!   a 3xx answer is [`UpstreamError::Malformed`] naming the status.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tracing::field::Empty;
use tracing::Instrument;

use super::retry::{self, LongWait};
use super::{RetryPolicy, UpstreamError};

/// The `service` of every error this client returns.
pub const SERVICE: &str = "n8n";

/// The header n8n reads the API key from.
pub const API_KEY_HEADER: &str = "X-N8N-API-KEY";

/// n8n's largest page (`limit` above it is answered with 400); also the default here.
pub const MAX_PAGE_SIZE: u32 = 250;

/// Top-level fields of a workflow that n8n's `POST /workflows` and
/// `PUT /workflows/{id}` accept (DOMAIN.md §5). Newer n8n versions accept a few more
/// (`description`, `pinData`, `nodeGroups`, `externalId`), older ones do not, so they
/// are never sent.
pub const BODY_FIELDS: [&str; 5] = ["name", "nodes", "connections", "settings", "staticData"];

/// Workflow settings keys sent to n8n: those every n8n 1.x public API accepts (its
/// `workflowSettings` schema has `additionalProperties: false`). n8n 1.82 refuses a
/// body with `callerPolicy`, `callerIds`, `timeSavedPerExecution` or `availableInMCP`
/// (400 `request/body/settings must NOT have additional properties`) although its own
/// `GET` returns them once the editor saved them; later versions accept them and
/// more (`redactionPolicy`, …). They are dropped, like every key a `GET` carries that
/// no schema accepts (`binaryMode`, `timeSavedMode`, …): a workflow is compared with
/// what its target holds through this same body (decision 35).
pub const SETTINGS_KEYS: [&str; 8] = [
    "saveExecutionProgress",
    "saveManualExecutions",
    "saveDataErrorExecution",
    "saveDataSuccessExecution",
    "executionTimeout",
    "errorWorkflow",
    "timezone",
    "executionOrder",
];

/// Node properties n8n's `node` schema accepts (`additionalProperties: false`); the
/// read-only `createdAt`/`updatedAt` and anything else a `GET` may carry are dropped.
pub const NODE_KEYS: [&str; 18] = [
    "id",
    "name",
    "webhookId",
    "disabled",
    "notesInFlow",
    "notes",
    "type",
    "typeVersion",
    "executeOnce",
    "alwaysOutputData",
    "retryOnFail",
    "maxTries",
    "waitBetweenTries",
    "continueOnFail",
    "onError",
    "position",
    "parameters",
    "credentials",
];

/// Longest n8n error message kept in [`UpstreamError::Rejected`].
const MAX_MESSAGE_CHARS: usize = 300;

/// The body n8n's `PUT /workflows/{id}` (and `POST /workflows`) accepts, from a
/// workflow as n8n's `GET` returns it or as stored in Git: only [`BODY_FIELDS`];
/// `settings` reduced to [`SETTINGS_KEYS`] without null values (and `{}` when absent,
/// since n8n requires it); every node reduced to [`NODE_KEYS`]; `staticData` only
/// when not null. Everything else (`id`, `active`, `tags`, `versionId`, `createdAt`,
/// `updatedAt`, `pinData`, `meta`, `shared`, `activeVersion`, …) is dropped. A value
/// that is not an object gives `{"settings": {}}` (n8n then names what is missing).
pub fn update_body(workflow: &Value) -> Value {
    let mut body = Map::new();
    let Some(source) = workflow.as_object() else {
        body.insert("settings".into(), Value::Object(Map::new()));
        return Value::Object(body);
    };
    if let Some(name) = source.get("name") {
        body.insert("name".into(), name.clone());
    }
    if let Some(nodes) = source.get("nodes") {
        let nodes = match nodes {
            Value::Array(nodes) => Value::Array(nodes.iter().map(node_body).collect()),
            other => other.clone(),
        };
        body.insert("nodes".into(), nodes);
    }
    if let Some(connections) = source.get("connections") {
        body.insert("connections".into(), connections.clone());
    }
    let settings: Map<String, Value> = match source.get("settings") {
        Some(Value::Object(settings)) => settings
            .iter()
            .filter(|(key, value)| SETTINGS_KEYS.contains(&key.as_str()) && !value.is_null())
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        _ => Map::new(),
    };
    body.insert("settings".into(), Value::Object(settings));
    match source.get("staticData") {
        None | Some(Value::Null) => {}
        Some(data) => {
            body.insert("staticData".into(), data.clone());
        }
    }
    Value::Object(body)
}

/// Whether `target` (a workflow as the target n8n's `GET` returns it) already holds
/// what writing `workflow` would send: the same content hash of both reduced to
/// [`update_body`]. What the target may not be sent (settings keys only later
/// versions accept, instance fields) therefore never makes a workflow look changed
/// (decision 35).
pub fn holds_already(
    target: &Value,
    workflow: &Value,
) -> Result<bool, aggregates::content::ContentError> {
    use aggregates::content::content_hash;
    Ok(content_hash(&update_body(target))? == content_hash(&update_body(workflow))?)
}

fn node_body(node: &Value) -> Value {
    match node {
        Value::Object(node) => Value::Object(
            node.iter()
                .filter(|(key, _)| NODE_KEYS.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A client of one n8n instance's public API. Cheap to clone (the connection pool is
/// shared).
#[derive(Clone)]
pub struct N8nClient {
    http: reqwest::Client,
    /// `{base}/api/v1`, without credentials' display concerns (may hold userinfo,
    /// which reqwest sends as basic auth).
    api: Url,
    /// The base URL for messages: no credentials, no query.
    shown: String,
    key: HeaderValue,
    key_text: String,
    policy: RetryPolicy,
    page_size: u32,
    /// Counts every attempt of every call (see [`N8nClient::counting`]).
    attempts: Option<std::sync::Arc<std::sync::atomic::AtomicU32>>,
}

impl fmt::Debug for N8nClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("N8nClient")
            .field("base_url", &self.shown)
            .field("api_key", &"<redacted>")
            .field("policy", &self.policy)
            .field("page_size", &self.page_size)
            .finish()
    }
}

/// How a call may be retried.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Idempotence {
    /// GET, PUT, activate, deactivate: any transient failure is retried.
    Idempotent,
    /// DELETE: retried like the above; a 404 after an attempt that may have reached
    /// n8n means that attempt deleted it.
    Delete,
    /// POST create: retried only when nothing can have been created.
    Create,
}

struct Call<'a> {
    method: Method,
    url: Url,
    body: Option<&'a Value>,
    /// For `NotFound`.
    what: String,
    idempotence: Idempotence,
}

/// One failed attempt.
struct Failure {
    error: UpstreamError,
    /// Whether another attempt may help.
    transient: bool,
    /// Whether n8n may have acted on the request.
    may_have_acted: bool,
    /// The server's `Retry-After`, when it sent one.
    retry_after: Option<Duration>,
}

impl Failure {
    fn permanent(error: UpstreamError) -> Failure {
        Failure {
            error,
            transient: false,
            may_have_acted: false,
            retry_after: None,
        }
    }
}

impl N8nClient {
    /// A client for the n8n at `base_url` (for example `https://n8n.example.com`, or
    /// with a path prefix; a trailing `/api/v1` is accepted too). Fails with
    /// [`UpstreamError::Local`] when the URL is not an absolute http(s) URL or the key
    /// cannot be an HTTP header value; neither message repeats the URL or the key.
    pub fn new(
        base_url: &str,
        api_key: impl Into<String>,
        policy: RetryPolicy,
    ) -> Result<N8nClient, UpstreamError> {
        let local = |message: &str| UpstreamError::Local {
            service: SERVICE,
            message: message.to_string(),
        };
        let invalid_url = "invalid base URL (expected http(s)://host[:port][/path])";
        let mut api = Url::parse(base_url.trim()).map_err(|_| local(invalid_url))?;
        if !matches!(api.scheme(), "http" | "https") || api.cannot_be_a_base() {
            return Err(local(invalid_url));
        }
        if api.host_str().is_none_or(str::is_empty) {
            return Err(local(invalid_url));
        }
        api.set_query(None);
        api.set_fragment(None);
        let path = api.path().trim_end_matches('/').to_string();
        let base_path = path.strip_suffix("/api/v1").unwrap_or(&path).to_string();
        api.set_path(&format!("{base_path}/api/v1"));

        let mut shown = api.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_path(&base_path);
        let shown = shown.as_str().trim_end_matches('/').to_string();

        let key_text = api_key.into();
        let mut key = HeaderValue::from_str(&key_text)
            .map_err(|_| local("the API key has characters an HTTP header cannot carry"))?;
        key.set_sensitive(true);

        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(policy.timeout)
            .user_agent(concat!("workflowops/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| local("cannot build the HTTP client"))?;
        Ok(N8nClient {
            http,
            api,
            shown,
            key,
            key_text,
            policy,
            page_size: MAX_PAGE_SIZE,
            attempts: None,
        })
    }

    /// The same client, adding one to `attempts` for every request it sends
    /// (retries included): what a deployment reports as a workflow's attempts.
    pub fn counting(&self, attempts: std::sync::Arc<std::sync::atomic::AtomicU32>) -> N8nClient {
        N8nClient {
            attempts: Some(attempts),
            ..self.clone()
        }
    }

    /// The same client with another page size for [`list_workflows`](Self::list_workflows),
    /// clamped to `1..=250`.
    pub fn with_page_size(mut self, page_size: u32) -> N8nClient {
        self.page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        self
    }

    /// The base URL without credentials or query (as shown in messages).
    pub fn base_url(&self) -> &str {
        &self.shown
    }

    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// Every workflow (`GET /api/v1/workflows`, all pages), full objects as n8n lists
    /// them. A workflow listed twice (it moved between pages while paging) appears
    /// once, in its latest form.
    pub async fn list_workflows(&self) -> Result<Vec<Value>, UpstreamError> {
        self.list_workflows_with(|workflow| workflow).await
    }

    /// [`list_workflows`](Self::list_workflows), with `each` applied to every workflow
    /// page by page while the next page is already being fetched and parsed (a sync
    /// hashes page 1 while n8n sends page 2). `each` takes the workflow: what it does
    /// not keep is freed page by page, so a listing of 10,000 workflows need not hold
    /// them all. A workflow listed twice keeps what `each` made of its last listing.
    pub async fn list_workflows_with<T, F>(&self, mut each: F) -> Result<Vec<T>, UpstreamError>
    where
        F: FnMut(Value) -> T,
    {
        self.list_pages(value_page, |workflow| {
            (workflow_id(&workflow), each(workflow))
        })
        .await
    }

    /// [`list_workflows_with`](Self::list_workflows_with), with `each` given every
    /// workflow's JSON text as n8n sent it (a JSON object), not parsed: a caller that
    /// knows a text already (a sync that saw it unchanged) need not parse it again.
    /// `each` also answers the workflow's id (`None`: it has none), by which a
    /// workflow listed twice keeps only its last listing.
    pub async fn list_workflow_texts_with<T, F>(&self, each: F) -> Result<Vec<T>, UpstreamError>
    where
        F: FnMut(Box<RawValue>) -> (Option<String>, T),
    {
        self.list_pages(raw_page, each).await
    }

    /// Every page of the listing, each parsed by `parse` in the task that fetched it
    /// while the previous one goes through `each`.
    async fn list_pages<I, T, F>(
        &self,
        parse: fn(Bytes) -> Result<Page<I>, UpstreamError>,
        mut each: F,
    ) -> Result<Vec<T>, UpstreamError>
    where
        I: Send + 'static,
        F: FnMut(I) -> (Option<String>, T),
    {
        let mut workflows: Vec<T> = Vec::new();
        let mut position: HashMap<String, usize> = HashMap::new();
        let mut seen_cursors: HashSet<String> = HashSet::new();
        let mut fetching = self.fetch_page(None, parse);
        loop {
            let (items, next) = fetching.await.map_err(|e| UpstreamError::Local {
                service: SERVICE,
                message: format!("listing workflows stopped: {e}"),
            })??;
            let empty = items.is_empty();
            // ask for the next page before working on this one
            let more = match next {
                None => None,
                Some(next) => {
                    if empty {
                        return Err(malformed("an empty page of workflows with a next cursor"));
                    }
                    if !seen_cursors.insert(next.clone()) {
                        return Err(malformed("a pagination cursor it had already sent"));
                    }
                    Some(self.fetch_page(Some(next), parse))
                }
            };
            for item in items {
                let (id, value) = each(item);
                match id {
                    Some(id) => match position.get(&id) {
                        Some(&at) => workflows[at] = value,
                        None => {
                            position.insert(id, workflows.len());
                            workflows.push(value);
                        }
                    },
                    None => workflows.push(value),
                }
            }
            match more {
                None => return Ok(workflows),
                Some(more) => fetching = more,
            }
        }
    }

    /// One page of `GET /api/v1/workflows`, fetched and parsed by `parse` in a task
    /// of its own (aborted if the listing is dropped).
    fn fetch_page<I: Send + 'static>(
        &self,
        cursor: Option<String>,
        parse: fn(Bytes) -> Result<Page<I>, UpstreamError>,
    ) -> PageTask<I> {
        let client = self.clone();
        PageTask(tokio::spawn(async move {
            let mut url = client.url(&["workflows"]);
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("limit", &client.page_size.to_string());
                if let Some(cursor) = &cursor {
                    query.append_pair("cursor", cursor);
                }
            }
            let page = client
                .execute_bytes(Call {
                    method: Method::GET,
                    url,
                    body: None,
                    what: format!("the public API at {}/api/v1", client.shown),
                    idempotence: Idempotence::Idempotent,
                })
                .await?;
            parse(page.unwrap_or_default())
        }))
    }

    /// `GET /api/v1/workflows/{id}`.
    pub async fn get_workflow(&self, id: &str) -> Result<Value, UpstreamError> {
        let value = self
            .execute(self.workflow_call(Method::GET, id, &[], None, Idempotence::Idempotent))
            .await?;
        expect_object(value)
    }

    /// `POST /api/v1/workflows` with [`update_body`] of `workflow`; the created
    /// workflow (with its new `id`). See the module docs for when it is retried.
    pub async fn create_workflow(&self, workflow: &Value) -> Result<Value, UpstreamError> {
        let body = update_body(workflow);
        let value = self
            .execute(Call {
                method: Method::POST,
                url: self.url(&["workflows"]),
                body: Some(&body),
                what: format!("the public API at {}/api/v1", self.shown),
                idempotence: Idempotence::Create,
            })
            .await?;
        expect_object(value)
    }

    /// `PUT /api/v1/workflows/{id}` with [`update_body`] of `workflow`; the workflow
    /// as n8n stored it.
    pub async fn update_workflow(
        &self,
        id: &str,
        workflow: &Value,
    ) -> Result<Value, UpstreamError> {
        let body = update_body(workflow);
        let value = self
            .execute(self.workflow_call(Method::PUT, id, &[], Some(&body), Idempotence::Idempotent))
            .await?;
        expect_object(value)
    }

    /// `DELETE /api/v1/workflows/{id}`. A 404 is `NotFound`, except after an attempt
    /// that timed out or failed on n8n's side: that attempt deleted it.
    pub async fn delete_workflow(&self, id: &str) -> Result<(), UpstreamError> {
        self.execute(self.workflow_call(Method::DELETE, id, &[], None, Idempotence::Delete))
            .await
            .map(drop)
    }

    /// `POST /api/v1/workflows/{id}/activate`; the workflow.
    pub async fn activate(&self, id: &str) -> Result<Value, UpstreamError> {
        let value = self
            .execute(self.workflow_call(
                Method::POST,
                id,
                &["activate"],
                None,
                Idempotence::Idempotent,
            ))
            .await?;
        expect_object(value)
    }

    /// `POST /api/v1/workflows/{id}/deactivate`; the workflow.
    pub async fn deactivate(&self, id: &str) -> Result<Value, UpstreamError> {
        let value = self
            .execute(self.workflow_call(
                Method::POST,
                id,
                &["deactivate"],
                None,
                Idempotence::Idempotent,
            ))
            .await?;
        expect_object(value)
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.api.clone();
        url.path_segments_mut()
            .expect("checked in new: the base URL can be a base")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn workflow_call<'a>(
        &self,
        method: Method,
        id: &str,
        suffix: &[&str],
        body: Option<&'a Value>,
        idempotence: Idempotence,
    ) -> Call<'a> {
        let mut segments = vec!["workflows", id];
        segments.extend_from_slice(suffix);
        Call {
            method,
            url: self.url(&segments),
            body,
            what: format!("workflow {id}"),
            idempotence,
        }
    }

    /// Runs one call with retries; `Ok(None)` only for a DELETE whose earlier attempt
    /// did the work.
    async fn execute(&self, call: Call<'_>) -> Result<Option<Value>, UpstreamError> {
        let delete = call.method == Method::DELETE;
        match self.execute_bytes(call).await? {
            None => Ok(None),
            Some(_) if delete => Ok(Some(Value::Null)),
            Some(body) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| invalid_json(&e)),
        }
    }

    /// [`execute`](Self::execute), answering the body of a success as n8n sent it
    /// (empty for a DELETE).
    async fn execute_bytes(&self, call: Call<'_>) -> Result<Option<Bytes>, UpstreamError> {
        let span = tracing::info_span!(
            "n8n.request",
            method = %call.method,
            path = %call.url.path(),
            status = Empty,
            attempt = Empty,
        );
        // Whether an earlier attempt may have reached n8n (a DELETE's 404 after it
        // means that attempt deleted it).
        let acted_before = AtomicBool::new(false);
        let (call, span_ref, acted) = (&call, &span, &acted_before);
        let create = call.idempotence == Idempotence::Create;
        let outcome = retry::run(
            &self.policy,
            LongWait::Cap,
            |_| {
                // A timed-out request may have arrived.
                acted.store(true, Ordering::Relaxed);
                let error = self.timeout().error;
                if create {
                    retry::Failure::permanent(error)
                } else {
                    retry::Failure::transient(error, None)
                }
            },
            move |attempt| async move {
                span_ref.record("attempt", attempt);
                if let Some(attempts) = &self.attempts {
                    attempts.fetch_add(1, Ordering::Relaxed);
                }
                let failure = match self.attempt(call, span_ref).await {
                    Ok(body) => return Ok(Some(body)),
                    Err(failure) => failure,
                };
                if call.idempotence == Idempotence::Delete
                    && acted.load(Ordering::Relaxed)
                    && matches!(failure.error, UpstreamError::NotFound { .. })
                {
                    tracing::debug!("already deleted by an earlier attempt");
                    return Ok(None);
                }
                if failure.may_have_acted {
                    acted.store(true, Ordering::Relaxed);
                }
                Err(retry::Failure {
                    error: failure.error,
                    retry: failure.transient && !(create && failure.may_have_acted),
                    asked_wait: failure.retry_after,
                })
            },
        );
        outcome.instrument(span.clone()).await
    }

    async fn attempt(&self, call: &Call<'_>, span: &tracing::Span) -> Result<Bytes, Failure> {
        let mut request = self
            .http
            .request(call.method.clone(), call.url.clone())
            .header(API_KEY_HEADER, self.key.clone())
            .header(ACCEPT, "application/json");
        if let Some(body) = call.body {
            request = request.json(body);
        }
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        };
        // The attempt's timeout is the retry loop's (`retry::run`).
        let (status, headers, body) = exchange.await.map_err(|error| self.transport(error))?;
        span.record("status", status.as_u16());

        if status.is_success() {
            return Ok(body);
        }
        let code = status.as_u16();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(Failure::permanent(UpstreamError::Unauthorized {
                    service: SERVICE,
                    status: code,
                }))
            }
            StatusCode::NOT_FOUND => Err(Failure::permanent(UpstreamError::NotFound {
                service: SERVICE,
                what: call.what.clone(),
            })),
            StatusCode::TOO_MANY_REQUESTS => Err(Failure {
                error: UpstreamError::RateLimited { service: SERVICE },
                transient: true,
                may_have_acted: false,
                retry_after: retry::asked_wait(code, retry_after(&headers)),
            }),
            _ if status.is_server_error() => Err(Failure {
                error: UpstreamError::Unavailable {
                    service: SERVICE,
                    status: code,
                },
                transient: true,
                may_have_acted: true,
                retry_after: retry::asked_wait(code, retry_after(&headers)),
            }),
            _ if status.is_client_error() => Err(Failure::permanent(UpstreamError::Rejected {
                service: SERVICE,
                status: code,
                message: self.rejection_message(status, &body),
            })),
            _ => Err(Failure::permanent(malformed(&format!(
                "status {code} (redirects are not followed: is the base URL the final one?)"
            )))),
        }
    }

    fn timeout(&self) -> Failure {
        Failure {
            error: UpstreamError::Timeout {
                service: SERVICE,
                timeout: self.policy.timeout,
            },
            transient: true,
            may_have_acted: true,
            retry_after: None,
        }
    }

    /// A reqwest error as an `UpstreamError`, without the URL.
    fn transport(&self, error: reqwest::Error) -> Failure {
        if error.is_timeout() {
            return self.timeout();
        }
        let connect = error.is_connect();
        let error = error.without_url();
        let mut chain = Vec::new();
        let mut source: Option<&dyn std::error::Error> = Some(&error);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !text.is_empty() && !chain.iter().any(|known: &String| known.contains(&text)) {
                chain.push(text);
            }
            source = cause.source();
        }
        let message = self.redact(&format!("{}: {}", self.shown, chain.join(": ")));
        Failure {
            error: UpstreamError::Unreachable {
                service: SERVICE,
                message,
            },
            transient: true,
            // Not connected: nothing was sent. Otherwise the request may have arrived.
            may_have_acted: !connect,
            retry_after: None,
        }
    }

    fn rejection_message(&self, status: StatusCode, body: &[u8]) -> String {
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|value| {
                value
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .filter(|message| !message.trim().is_empty())
            .unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_string()
            });
        truncate(&self.redact(&message), MAX_MESSAGE_CHARS)
    }

    /// Defence in depth: should a server ever echo the key, it does not travel on.
    fn redact(&self, text: &str) -> String {
        if self.key_text.len() >= 4 && text.contains(&self.key_text) {
            text.replace(&self.key_text, "<redacted>")
        } else {
            text.to_string()
        }
    }
}

fn invalid_json(error: &serde_json::Error) -> UpstreamError {
    malformed(&format!("invalid JSON ({error})"))
}

fn malformed(message: &str) -> UpstreamError {
    UpstreamError::Malformed {
        service: SERVICE,
        message: message.to_string(),
    }
}

fn expect_object(value: Option<Value>) -> Result<Value, UpstreamError> {
    match value {
        Some(value @ Value::Object(_)) => Ok(value),
        _ => Err(malformed("a workflow that is not a JSON object")),
    }
}

/// One page of workflows and the cursor of the next.
type Page<I> = (Vec<I>, Option<String>);

/// A page being fetched; dropping it aborts the fetch.
struct PageTask<I>(tokio::task::JoinHandle<Result<Page<I>, UpstreamError>>);

impl<I> std::future::Future for PageTask<I> {
    type Output = Result<Result<Page<I>, UpstreamError>, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<I> Drop for PageTask<I> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A page's body parsed into values ([`parse_page`]).
fn value_page(body: Bytes) -> Result<Page<Value>, UpstreamError> {
    parse_page(serde_json::from_slice(&body).map_err(|e| invalid_json(&e))?)
}

/// A page's body with each workflow's JSON text kept as sent. A page of any other
/// shape is parsed again into values by [`parse_page`], which names what is wrong
/// with it, exactly as a listing into values does.
fn raw_page(body: Bytes) -> Result<Page<Box<RawValue>>, UpstreamError> {
    #[derive(serde::Deserialize)]
    struct Shape {
        data: Vec<Box<RawValue>>,
        #[serde(rename = "nextCursor", default)]
        next_cursor: Option<String>,
    }
    match serde_json::from_slice::<Shape>(&body) {
        Ok(page) if page.data.iter().all(|item| item.get().starts_with('{')) => Ok((
            page.data,
            page.next_cursor.filter(|cursor| !cursor.is_empty()),
        )),
        _ => {
            let (items, next) = value_page(body)?;
            let items = items
                .iter()
                .map(serde_json::value::to_raw_value)
                .collect::<Result<_, _>>()
                .map_err(|e| invalid_json(&e))?;
            Ok((items, next))
        }
    }
}

/// `{ "data": [...], "nextCursor": "…" | null }` → the items and the next cursor
/// (`None` when null, absent or empty).
fn parse_page(page: Value) -> Result<Page<Value>, UpstreamError> {
    let Value::Object(mut page) = page else {
        return Err(malformed("a workflow page that is not a JSON object"));
    };
    let items = match page.remove("data") {
        Some(Value::Array(items)) => items,
        _ => return Err(malformed("a workflow page without a `data` array")),
    };
    if items.iter().any(|item| !item.is_object()) {
        return Err(malformed(
            "a workflow page with an entry that is not an object",
        ));
    }
    let next = match page.remove("nextCursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(cursor)) if cursor.is_empty() => None,
        Some(Value::String(cursor)) => Some(cursor),
        Some(_) => return Err(malformed("a `nextCursor` that is not a string")),
    };
    Ok((items, next))
}

/// n8n ids are strings; very old instances used numbers.
fn workflow_id(workflow: &Value) -> Option<String> {
    match workflow.get("id")? {
        Value::String(id) => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

/// The `Retry-After` header's text (read by [`retry::asked_wait`]).
fn retry_after(headers: &HeaderMap) -> Option<&str> {
    headers.get(RETRY_AFTER)?.to_str().ok()
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn as_n8n_get_returns() -> Value {
        json!({
            "id": "Rp7Dw3Kx5Ny1Tq9Z",
            "name": "Daily Revenue Report",
            "active": true,
            "isArchived": false,
            "createdAt": "2024-01-15T07:30:44.210Z",
            "updatedAt": "2025-02-03T11:05:17.362Z",
            "versionId": "3f1c2a9e-8b7d-4c6e-a5f4-1d2e3c4b5a69",
            "activeVersionId": "3f1c2a9e-8b7d-4c6e-a5f4-1d2e3c4b5a69",
            "versionCounter": 7,
            "triggerCount": 1,
            "nodes": [{
                "id": "2b9e4f17-a6c3-4d80-9e51-c7f3a0b8d264",
                "name": "Schedule Trigger",
                "type": "n8n-nodes-base.scheduleTrigger",
                "typeVersion": 1.2,
                "position": [0, 0],
                "parameters": {"rule": {"interval": [{"field": "hours"}]}},
                "createdAt": "2024-01-15T07:30:44.210Z",
                "extendsCredential": "x"
            }],
            "connections": {},
            "settings": {
                "executionOrder": "v1",
                "timezone": "Europe/Berlin",
                "errorWorkflow": null,
                "binaryMode": "separate",
                "timeSavedMode": "fixed",
                "credentialResolverId": "abc",
                "callerPolicy": "workflowsFromSameOwner",
                "availableInMCP": false
            },
            "staticData": {"node:Schedule Trigger": {"recurrenceRules": []}},
            "meta": {"templateCredsSetupCompleted": true},
            "pinData": {},
            "tags": [{"id": "1", "name": "finance"}],
            "shared": [],
            "nodeGroups": [],
            "activeVersion": {"versionId": "3f1c"}
        })
    }

    #[test]
    fn update_body_keeps_only_what_n8n_accepts() {
        let body = update_body(&as_n8n_get_returns());
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys = keys;
        keys.sort();
        assert_eq!(
            keys,
            ["connections", "name", "nodes", "settings", "staticData"]
        );
        assert_eq!(
            body["settings"],
            json!({"executionOrder": "v1", "timezone": "Europe/Berlin"}),
            "n8n 1.x refuses callerPolicy and availableInMCP"
        );
        let node = body["nodes"][0].as_object().unwrap();
        assert!(!node.contains_key("createdAt"));
        assert!(!node.contains_key("extendsCredential"));
        assert_eq!(node["name"], "Schedule Trigger");
        assert_eq!(node["id"], "2b9e4f17-a6c3-4d80-9e51-c7f3a0b8d264");
        assert_eq!(node["parameters"]["rule"]["interval"][0]["field"], "hours");
        assert_eq!(body["staticData"], as_n8n_get_returns()["staticData"]);
    }

    #[test]
    fn update_body_adds_the_required_settings_and_skips_null_static_data() {
        let body = update_body(&json!({
            "name": "x", "nodes": [], "connections": {}, "staticData": null, "id": "1"
        }));
        assert_eq!(
            body,
            json!({"name": "x", "nodes": [], "connections": {}, "settings": {}})
        );
        assert_eq!(update_body(&json!([1, 2])), json!({"settings": {}}));
        // Every accepted settings key survives.
        let all: Map<String, Value> = SETTINGS_KEYS
            .iter()
            .map(|key| (key.to_string(), json!(1)))
            .collect();
        let body = update_body(&json!({"settings": all.clone()}));
        assert_eq!(body["settings"], Value::Object(all));
    }

    #[test]
    fn a_target_holds_what_would_be_sent_whatever_it_cannot_be_sent() {
        let target = as_n8n_get_returns();
        // what a promotion would write: the same workflow, without what 1.x refuses
        let mut sent = update_body(&target);
        assert!(holds_already(&target, &sent).unwrap());
        // instance fields and canvas positions do not count either
        sent["nodes"][0]["position"] = json!([400, 300]);
        sent["id"] = json!("another-instance-id");
        assert!(holds_already(&target, &sent).unwrap());
        // an accepted setting or a parameter does
        let mut timezone = sent.clone();
        timezone["settings"]["timezone"] = json!("UTC");
        assert!(!holds_already(&target, &timezone).unwrap());
        let mut parameter = sent.clone();
        parameter["nodes"][0]["parameters"]["rule"] = json!({});
        assert!(!holds_already(&target, &parameter).unwrap());
    }

    #[test]
    fn update_body_is_idempotent() {
        let once = update_body(&as_n8n_get_returns());
        assert_eq!(update_body(&once), once);
    }

    #[test]
    fn debug_never_shows_the_key_and_base_url_hides_credentials() {
        let client = N8nClient::new(
            "https://ops:hunter2@n8n.example.com/base/?token=abc#x",
            "n8n_api_supersecret",
            RetryPolicy::default(),
        )
        .unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("supersecret"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert_eq!(client.base_url(), "https://n8n.example.com/base");
        assert_eq!(
            client.url(&["workflows", "a/b c"]).path(),
            "/base/api/v1/workflows/a%2Fb%20c"
        );
        let same = N8nClient::new(
            "https://n8n.example.com/api/v1/",
            "k",
            RetryPolicy::default(),
        )
        .unwrap();
        assert_eq!(
            same.url(&["workflows"]).as_str(),
            "https://n8n.example.com/api/v1/workflows"
        );
        assert_eq!(same.base_url(), "https://n8n.example.com");
    }

    #[test]
    fn bad_configuration_is_refused_without_echoing_it() {
        for url in ["n8n.example.com", "ftp://x", "mailto:a@b", "http://"] {
            let error = N8nClient::new(url, "k", RetryPolicy::default()).unwrap_err();
            assert!(
                matches!(error, UpstreamError::Local { .. }),
                "{url}: {error:?}"
            );
        }
        let error = N8nClient::new(
            "https://n8n.example.com",
            "bad\nkey",
            RetryPolicy::default(),
        )
        .unwrap_err();
        assert!(!format!("{error:?}").contains("bad\nkey"));
    }

    #[test]
    fn page_size_is_clamped() {
        let client = N8nClient::new("http://127.0.0.1:1", "k", RetryPolicy::default()).unwrap();
        assert_eq!(client.page_size(), 250);
        assert_eq!(client.clone().with_page_size(1000).page_size(), 250);
        assert_eq!(client.with_page_size(0).page_size(), 1);
    }

    #[test]
    fn retry_after_is_read_on_429_and_503() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some("7"));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let wait = retry::asked_wait(429, retry_after(&headers)).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(retry::asked_wait(503, retry_after(&headers)).is_some());
        assert_eq!(retry::asked_wait(500, retry_after(&headers)), None);
    }

    #[test]
    fn pages_are_checked() {
        // both parsers: into values, and keeping each workflow's text
        let pages = |page: &Value| {
            let body = Bytes::from(serde_json::to_vec(page).unwrap());
            let values = value_page(body.clone());
            let texts = raw_page(body).map(|(items, next)| {
                let items: Vec<Value> = items
                    .iter()
                    .map(|item| serde_json::from_str(item.get()).unwrap())
                    .collect();
                (items, next)
            });
            (values, texts)
        };
        for (page, expected) in [
            (
                json!({"data": [{"id": "a"}, {"id": "b", "x": [1, "\u{e9}\n"]}], "nextCursor": "abc"}),
                Some("abc"),
            ),
            (json!({"data": []}), None),
            (json!({"data": [], "nextCursor": ""}), None),
            (
                json!({"data": [], "nextCursor": null, "other": {"k": 1}}),
                None,
            ),
        ] {
            let (values, texts) = pages(&page);
            let (items, next) = values.unwrap();
            assert_eq!(next.as_deref(), expected);
            assert_eq!(
                items.as_slice(),
                page["data"].as_array().unwrap().as_slice()
            );
            assert_eq!(texts.unwrap(), (items, next));
        }
        for bad in [
            json!([]),
            json!({"items": []}),
            json!({"data": {}}),
            json!({"data": [1]}),
            json!({"data": [{"id": "a"}, "b"]}),
            json!({"data": [], "nextCursor": 5}),
        ] {
            let (values, texts) = pages(&bad);
            let (
                Err(UpstreamError::Malformed { message: a, .. }),
                Err(UpstreamError::Malformed { message: b, .. }),
            ) = (values, texts)
            else {
                panic!("{bad} was accepted");
            };
            assert_eq!(a, b, "{bad}: both parsers say the same");
        }
        // a text is kept exactly as sent, escapes and all
        let escaped = Bytes::from_static(b"{\"data\": [ {\"id\": \"a\\u00e9\"} ]}");
        let (items, _) = raw_page(escaped).unwrap();
        assert_eq!(items[0].get(), "{\"id\": \"a\\u00e9\"}");
        for body in [
            &b"{\"data\": [{\"id\": 1},"[..],
            b"",
            b"{\"data\": [{\"id\": 1}, {\"id\": 1}]} x",
        ] {
            let body = Bytes::from_static(body);
            assert!(matches!(
                value_page(body.clone()),
                Err(UpstreamError::Malformed { .. })
            ));
            assert!(matches!(
                raw_page(body),
                Err(UpstreamError::Malformed { .. })
            ));
        }
    }

    #[test]
    fn messages_are_truncated_on_char_boundaries() {
        let long = "é".repeat(400);
        let cut = truncate(&long, 300);
        assert_eq!(cut.chars().count(), 301);
        assert_eq!(truncate("short", 300), "short");
    }
}
