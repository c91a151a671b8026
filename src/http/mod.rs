//! HTTP: the GraphQL endpoint (`POST /graphql`, GraphiQL on `GET /graphql`,
//! subscriptions on `/graphql/ws`), the event stream as Server-Sent Events
//! (`GET /events`), `/health`, `/ready` and `/metrics`.
//!
//! Every request failure has a status and a GraphQL-shaped body
//! `{"errors":[{"message", "extensions":{"code"}}]}`: 401 without a valid token,
//! 415 for a body that is not JSON, 413 above [`MAX_BODY`], 400 for malformed JSON.

pub mod admission;
pub mod auth;
pub mod feed;
pub mod metrics;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use async_graphql::http::{GraphiQLSource, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::graphql::{ApiSchema, Caller, Loaders};
use crate::http::auth::{Auth, AuthError, Principal};
use crate::http::feed::Filter;
use crate::http::metrics::Metrics;
use crate::AppContext;

/// Largest request body accepted on `POST /graphql`.
pub const MAX_BODY: usize = 256 * 1024;

/// The router's state: the application context, and what only HTTP uses.
#[derive(Clone)]
pub struct HttpState {
    pub context: AppContext,
    /// For `POST /graphql` ([`crate::graphql::http_schema`]).
    pub schema: ApiSchema,
    /// For the WebSocket transport, with the guard ([`crate::graphql::schema`]).
    pub ws_schema: ApiSchema,
    pub auth: Auth,
    pub cache: std::sync::Arc<crate::graphql::response_cache::ResponseCache>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(crate::console::routes())
        .fallback(not_found)
        .with_state(state)
}

/// A request-level error in the GraphQL response shape.
fn request_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "errors": [{ "message": message.into(), "extensions": { "code": code } }] });
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// A refusal the client should retry after a second: the tenant's slots were
/// taken (429) or the deadline passed (503).
fn retry_later(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "errors": [{ "message": message.into(),
        "extensions": { "code": code, "retryable": true } }] });
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Code of a request refused because its tenant has too many in flight.
pub const RATE_LIMITED: &str = "RATE_LIMITED";
/// Code of a request refused because the whole process is at capacity.
pub const OVERLOADED: &str = "OVERLOADED";
/// Code of a request that did not finish within its deadline.
pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";

fn unauthenticated(error: AuthError) -> Response {
    request_error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        error.to_string(),
    )
}

fn authenticate(auth: &Auth, headers: &HeaderMap) -> Result<Principal, AuthError> {
    let header = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| AuthError::Malformed)?),
    };
    auth.verify_header(header)
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// GraphiQL. `?query=` fills its editor: the links in notifications open it on a
/// query for the object they are about.
async fn graphiql() -> Html<String> {
    let page = GraphiQLSource::build()
        .endpoint("/graphql")
        .subscription_endpoint("/graphql/ws")
        .title("workflowops")
        .finish();
    const PROPS: &str = "defaultEditorToolsVisibility: true,";
    debug_assert!(
        page.contains(PROPS),
        "async-graphql's GraphiQL page changed"
    );
    Html(page.replacen(
        PROPS,
        "defaultEditorToolsVisibility: true,          query: new URLSearchParams(window.location.search).get('query') || undefined,",
        1,
    ))
}

async fn graphql(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let request_id = new_request_id();
    let span = tracing::info_span!("graphql", request_id = %request_id);
    let mut response = execute(&state, &headers, body, &request_id, started)
        .instrument(span)
        .await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    state.context.metrics.request(
        "/graphql",
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn execute(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
    request_id: &str,
    started: Instant,
) -> Response {
    let principal = match authenticate(&state.auth, headers) {
        Ok(principal) => principal,
        Err(error) => return unauthenticated(error),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "VALIDATION",
            format!("Content-Type must be application/json (got {content_type:?})"),
        );
    }
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return request_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "VALIDATION",
                format!("request body larger than {MAX_BODY} bytes"),
            )
        }
    };
    let mut request: async_graphql::Request = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(e) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                "VALIDATION",
                format!("malformed GraphQL request: {e}"),
            )
        }
    };
    let tenant = principal.tenant.as_str().to_string();
    let version = state.context.projections.read_version();
    // Only cacheable requests are ever stored, and whether a request is cacheable
    // depends on its bytes alone: a stored answer needs no parse to be served.
    if let Some(version) = version {
        if let Some(body) = state.cache.get(&tenant, &bytes, version) {
            return json_body(body);
        }
    }
    // What the request may cost is decided before anything expensive runs; the
    // document it parses is the one executed (and the one the cache looks at).
    let cacheable;
    let checked = match crate::graphql::guard::check(
        &request.query,
        &request.variables,
        request.operation_name.as_deref(),
    ) {
        Ok((document, checked)) => {
            cacheable = version.is_some()
                && crate::graphql::response_cache::cacheable_document(&bytes, &request, &document);
            request.set_parsed_query(document);
            checked
        }
        Err(refusal) => {
            state.context.metrics.refused("cost");
            let mut response =
                async_graphql::Response::from_errors(vec![refusal.into_server_error()]);
            label_errors(&mut response.errors, request_id);
            return match serde_json::to_vec(&response) {
                Ok(body) => json_body(Bytes::from(body)),
                Err(_) => request_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "internal error",
                ),
            };
        }
    };
    let permit = match state
        .context
        .admission
        .admit(&tenant, checked.expensive)
        .await
    {
        Ok(permit) => permit,
        Err(busy @ crate::http::admission::Busy::Overloaded(_)) => {
            state.context.metrics.refused("overloaded");
            return retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                OVERLOADED,
                busy.to_string(),
            );
        }
        Err(busy) => {
            state.context.metrics.refused("tenant_concurrency");
            return retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                RATE_LIMITED,
                busy.to_string(),
            );
        }
    };
    let caller = Caller {
        principal,
        request_id: request_id.to_string(),
    };
    let mut request = request
        .data(caller)
        .data(Loaders::new(&state.context.store, &tenant))
        .data(crate::graphql::guard::Prechecked);
    if !checked.merges_keys {
        // lists may be written as text while they resolve (decisions 67 and 71)
        request = request.data(crate::graphql::WrittenRaw);
    }
    let deadline = state.context.admission.limits().deadline;
    let remaining = deadline.saturating_sub(started.elapsed());
    let schema = state.schema.clone();
    let task_request_id = request_id.to_string();
    // Its own task: a panic cannot take the connection down, and a query ends
    // with its request (dropped when the client goes away, or at the deadline).
    // The task also writes the answer: the response's values are built, written and
    // freed by one thread in one go (decision 64).
    let task = tokio::spawn(
        async move {
            let response = schema.execute(request).await;
            drop(permit);
            Answer::of(response, &task_request_id)
        }
        .in_current_span(),
    );
    let mutation = checked.kind == Some(async_graphql::parser::types::OperationType::Mutation);
    let outcome = if mutation {
        // never cut between a mutation's commands: it runs to its end
        tokio::time::timeout(remaining, task).await
    } else {
        let mut task = crate::http::admission::AbortOnDrop(task);
        tokio::time::timeout(remaining, &mut task.0).await
    };
    let answer = match outcome {
        Ok(Ok(Ok(answer))) => answer,
        Ok(Ok(Err(e))) => {
            tracing::error!(cause = %e, "cannot serialize a response");
            return request_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                format!("internal error (request id {request_id})"),
            );
        }
        Ok(Err(join_error)) => {
            tracing::error!(cause = %join_error, "request execution failed");
            return request_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                format!("internal error (request id {request_id})"),
            );
        }
        Err(_) => {
            state.context.metrics.refused("deadline");
            let message = if mutation {
                format!(
                    "the mutation did not finish within the request deadline ({} s); it is not \
                     cut short and goes on to its end (its events carry correlation id \
                     {request_id}): check its outcome before retrying",
                    deadline.as_secs_f64()
                )
            } else {
                format!(
                    "the request did not finish within its deadline ({} s) and was cancelled; \
                     retry later or ask for less",
                    deadline.as_secs_f64()
                )
            };
            return retry_later(StatusCode::SERVICE_UNAVAILABLE, DEADLINE_EXCEEDED, message);
        }
    };
    if answer.refused_for_cost {
        state.context.metrics.refused("cost");
    }
    let body = answer.body;
    // cache only what was computed entirely at one version of the read models
    if let (true, Some(version)) = (cacheable, version) {
        if answer.no_errors && state.context.projections.read_version() == Some(version) {
            state.cache.put(&tenant, bytes, version, body.clone());
        }
    }
    json_body(body)
}

/// An executed request's answer, written.
struct Answer {
    body: Bytes,
    /// The response has no errors (it may be cached).
    no_errors: bool,
    /// The request was refused for its size or depth.
    refused_for_cost: bool,
}

impl Answer {
    /// Labels `response`'s errors and writes it.
    fn of(mut response: async_graphql::Response, request_id: &str) -> serde_json::Result<Answer> {
        let refused_for_cost = response
            .errors
            .iter()
            .any(|e| e.message.contains("too complex") || e.message.contains("too deep"));
        crate::graphql::unwrap_id_errors(&mut response.errors);
        label_errors(&mut response.errors, request_id);
        Ok(Answer {
            body: Bytes::from(crate::graphql::write_response(&response)?),
            no_errors: response.errors.is_empty(),
            refused_for_cost,
        })
    }
}

fn json_body(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Every error gets a code: resolver errors carry theirs; errors from parsing,
/// validation, variables or limits have none and are `VALIDATION`. Internal errors
/// say which request id to quote.
fn label_errors(errors: &mut [async_graphql::ServerError], request_id: &str) {
    for error in errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", "VALIDATION");
        }
        if extensions.get("code") == Some(&async_graphql::Value::from("INTERNAL")) {
            extensions.set("requestId", request_id);
            error.message = format!(
                "{} (request id {request_id})",
                crate::graphql::error::INTERNAL_MESSAGE
            );
        }
    }
}

/// graphql-transport-ws (and the legacy graphql-ws). The token goes in the
/// `connection_init` payload (`{"Authorization": "Bearer …"}`) or, for clients that
/// can set headers, on the upgrade request itself.
async fn graphql_ws(
    State(state): State<HttpState>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let header_principal = authenticate(&state.auth, &headers).ok();
    state.context.metrics.request("/graphql/ws", 101, 0.0);
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let auth = state.auth.clone();
            let store = state.context.store.clone();
            let (sink, stream) = futures::StreamExt::split(socket);
            let sink = futures::SinkExt::with(sink, |message| {
                futures::future::ready(Ok::<_, axum::Error>(protocol_close_codes(message)))
            });
            GraphQLWebSocket::new_with_pair(sink, stream, state.ws_schema.clone(), protocol)
                .on_connection_init(move |payload| async move {
                    let principal = match connection_token(&payload) {
                        Some(token) => auth.verify_header(Some(&token)),
                        None => header_principal.ok_or(AuthError::Missing),
                    }
                    .map_err(|e| async_graphql::Error::new(format!("{FORBIDDEN}{e}")))?;
                    let mut data = Data::default();
                    let tenant = principal.tenant.as_str().to_string();
                    data.insert(Caller {
                        principal,
                        request_id: new_request_id(),
                    });
                    data.insert(Loaders::new(&store, &tenant));
                    Ok(data)
                })
                .keepalive_timeout(Duration::from_secs(30))
                .serve()
        })
}

/// Marks a refused `connection_init` so its close code can be set.
const FORBIDDEN: &str = "Forbidden: ";

/// graphql-transport-ws close codes where async-graphql uses generic ones: 4401 for
/// a `subscribe` before the connection was acknowledged (it sends 1011), 4403 for a
/// refused `connection_init` (it sends 1002).
fn protocol_close_codes(message: axum::extract::ws::Message) -> axum::extract::ws::Message {
    use axum::extract::ws::{CloseFrame, Message};
    match message {
        Message::Close(Some(frame)) if frame.code == 1011 => Message::Close(Some(CloseFrame {
            code: 4401,
            reason: "Unauthorized".into(),
        })),
        Message::Close(Some(frame))
            if frame.code == 1002 && frame.reason.as_str().starts_with(FORBIDDEN) =>
        {
            Message::Close(Some(CloseFrame {
                code: 4403,
                reason: frame.reason,
            }))
        }
        other => other,
    }
}

/// `Authorization` (any case) or `token` from a `connection_init` payload, as a
/// header value.
fn connection_token(payload: &Value) -> Option<String> {
    let object = payload.as_object()?;
    for (key, value) in object {
        if key.eq_ignore_ascii_case("authorization") {
            return value.as_str().map(str::to_string);
        }
    }
    object
        .get("token")
        .and_then(Value::as_str)
        .map(|t| format!("Bearer {t}"))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsParams {
    /// Resume after this position (exclusive). `Last-Event-ID` takes precedence.
    from: Option<i64>,
    /// Comma-separated aggregate types.
    aggregate_types: Option<String>,
    aggregate_id: Option<String>,
}

/// The event stream as Server-Sent Events: `id:` is the global position, `data:`
/// the event as JSON. A reconnecting client sends `Last-Event-ID` and resumes right
/// after it.
async fn events(
    State(state): State<HttpState>,
    headers: HeaderMap,
    params: Result<Query<EventsParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    // The console's pages follow the stream with the session cookie (EventSource
    // cannot send a header); a cross-site page never gets it (SameSite=Strict).
    let principal = match headers.get(header::AUTHORIZATION) {
        None if crate::console::has_session_cookie(&headers) => {
            match crate::console::cookie_principal(&state.auth, &headers) {
                Ok(principal) => principal,
                Err(error) => return unauthenticated(error),
            }
        }
        _ => match authenticate(&state.auth, &headers) {
            Ok(principal) => principal,
            Err(error) => return unauthenticated(error),
        },
    };
    let Query(params) = match params {
        Ok(params) => params,
        Err(e) => return request_error(StatusCode::BAD_REQUEST, "VALIDATION", e.body_text()),
    };
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
        {
            Some(position) => Some(position),
            None => {
                return request_error(
                    StatusCode::BAD_REQUEST,
                    "VALIDATION",
                    "Last-Event-ID must be an event position",
                )
            }
        },
    };
    let from = last_event_id.or(params.from).unwrap_or(0).max(0);
    let cursor = match state.context.feed.cursor_after(from).await {
        Ok(cursor) => cursor,
        Err(crate::http::feed::FeedError::UnknownPosition(p)) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                "VALIDATION",
                format!("no event at position {p}"),
            )
        }
        Err(e) => {
            let request_id = new_request_id();
            tracing::error!(cause = %e, %request_id, "cannot start an event stream");
            return request_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                format!("internal error (request id {request_id})"),
            );
        }
    };
    let filter = Filter {
        tenant: principal.tenant,
        aggregate_types: params.aggregate_types.map(|types| {
            types
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect()
        }),
        aggregate_id: params.aggregate_id,
    };
    state.context.metrics.request("/events", 200, 0.0);
    state.context.metrics.subscriber(1);
    let guard = StreamGuard(state.context.metrics.clone());
    let stream = state
        .context
        .feed
        .subscribe(cursor, filter)
        .map(move |item| {
            let _ = &guard;
            Ok::<_, Infallible>(match item {
                Ok(event) => SseEvent::default()
                    .id(event.position.to_string())
                    .data(sse_data(&event)),
                Err(error) => {
                    tracing::error!(cause = %error, "event stream failed");
                    SseEvent::default()
                        .event("error")
                        .data(json!({ "code": "INTERNAL", "message": "the event stream failed; reconnect with Last-Event-ID" }).to_string())
                }
            })
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The same fields as the GraphQL `Event`.
fn sse_data(event: &eventstore::StoredEvent) -> String {
    crate::http::feed::event_json(event).to_string()
}

struct StreamGuard(Metrics);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.subscriber(-1);
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let head = match state.context.store.head().await {
        Ok(head) => head.position,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the log head");
            0
        }
    };
    let webhooks = projections::models::webhooks::endpoint_stats(&state.context.store)
        .await
        .map_err(|e| tracing::warn!(error = %e, "metrics: cannot read the webhook endpoints"))
        .ok();
    match state.context.metrics.render(
        head,
        &state.context.projections.status(),
        &state.context.domain.reactors().status(),
        webhooks.as_ref(),
    ) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The process is up.
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The service can do its work: the database answers, no projection has stopped and
/// no reactor is stopped on a permanent error (one retrying a transient error is
/// listed with its error, and the service stays ready).
/// Rebuilds in progress are listed with their progress (`rebuilding`); they do not
/// make the service unready, since queries keep reading the complete old read
/// models until the rebuilt ones are swapped in.
async fn ready(State(state): State<HttpState>) -> Response {
    match state.context.store.ping().await {
        Ok(()) => {
            let projections = state.context.projections.status();
            let reactors = state.context.domain.reactors().status();
            let stopped = projections.iter().any(|p| p.failed.is_some())
                || reactors
                    .iter()
                    .any(|r| r.blocked.as_ref().is_some_and(|b| b.permanent));
            let rebuilding =
                match projections::rebuild::rebuild_progress(&state.context.store).await {
                    Ok(rebuilds) => rebuilds
                        .into_iter()
                        .map(|r| {
                            let progress = if r.target > 0 {
                                (r.position as f64 / r.target as f64).clamp(0.0, 1.0)
                            } else {
                                0.0
                            };
                            json!({
                                "projection": r.projection,
                                "startedAt": r.started_at,
                                "updatedAt": r.updated_at,
                                "position": r.position,
                                "target": r.target,
                                "events": r.events,
                                "progress": (progress * 1000.0).round() / 1000.0,
                                "stale": r.stale,
                            })
                        })
                        .collect::<Vec<_>>(),
                    Err(e) => {
                        tracing::warn!(error = %e, "readiness: cannot read rebuild progress");
                        vec![]
                    }
                };
            let body = Json(json!({
                "status": if stopped { "degraded" } else { "ready" },
                "database": state.context.store.backend().as_str(),
                "projections": projections,
                "reactors": reactors,
                "rebuilding": rebuilding,
            }));
            if stopped {
                (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
            } else {
                body.into_response()
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "database": "unreachable" })),
            )
                .into_response()
        }
    }
}

async fn not_found(headers: HeaderMap) -> Response {
    if let Some(page) = crate::console::not_found_page(&headers) {
        return page;
    }
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": { "code": "NOT_FOUND", "message": "no such route" } })),
    )
        .into_response()
}
