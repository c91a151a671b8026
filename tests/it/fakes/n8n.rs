//! A fake n8n on loopback that speaks the public API's shapes (`/api/v1`):
//!
//! - `X-N8N-API-KEY`: 401 `{"message": "'X-N8N-API-KEY' header required"}` without it,
//!   401 `{"message": "unauthorized"}` with a wrong one;
//! - `GET /workflows?limit=&cursor=` → `{data, nextCursor}`: `limit` defaults to 100,
//!   above 250 is 400 (`request/query/limit must be <= 250`); opaque cursors; pages are
//!   also capped by [`FakeN8n::set_page_size_cap`];
//! - `GET`, `PUT`, `DELETE /workflows/{id}` (404 `{"message": "Not Found"}` for an
//!   unknown id), `POST /workflows`, `POST /workflows/{id}/activate|deactivate`
//!   (activation needs a trigger node, as in n8n);
//! - strict bodies on `POST` and `PUT`, as n8n 1.x's OpenAPI validator: `name`,
//!   `nodes`, `connections` and `settings` required; `staticData` allowed; read-only
//!   fields (`id`, `active`, `tags`, …) → 400 `request/body/{field} is read-only`;
//!   anything else → 400 `request/body must NOT have additional properties`; node
//!   properties likewise, and settings keys other than n8n 1.x's eight
//!   ([`ACCEPTED_SETTINGS`]) → 400 `request/body/settings must NOT have additional
//!   properties`, although a stored workflow's `GET` may carry more (`callerPolicy`
//!   saved by the editor);
//! - `POST` always creates the workflow inactive (activation is its own request);
//!   `PUT` has no optimistic locking (last write wins);
//! - credentials: `POST /credentials` and `DELETE /credentials/{id}` but no listing
//!   (`GET /credentials` → 405, as in 1.x); on every workflow write a node's
//!   credential reference is kept when its id exists with that type, otherwise
//!   replaced by the one credential of that name and type, otherwise kept dangling
//!   (n8n's own substitution, [`substitute_credentials`]);
//! - injectable faults for the next requests ([`Fault`]), and a log of every request.
//!
//! The server runs on the test's runtime and stops when the `FakeN8n` is dropped.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Map, Value};

/// n8n's largest page.
pub const MAX_LIMIT: usize = 250;
/// n8n's page size when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 100;

/// Settings keys n8n 1.x's `workflowSettings` schema accepts (1.82 tried: it refuses
/// `callerPolicy`, `callerIds`, `timeSavedPerExecution` and `availableInMCP`, which its
/// own `GET` may return). Kept apart from the client's list on purpose.
pub const ACCEPTED_SETTINGS: [&str; 8] = [
    "saveExecutionProgress",
    "saveManualExecutions",
    "saveDataErrorExecution",
    "saveDataSuccessExecution",
    "executionTimeout",
    "errorWorkflow",
    "timezone",
    "executionOrder",
];

const ACCEPTED_FIELDS: [&str; 5] = ["name", "nodes", "connections", "settings", "staticData"];
const REQUIRED_FIELDS: [&str; 4] = ["name", "nodes", "connections", "settings"];
const READ_ONLY_FIELDS: [&str; 10] = [
    "id",
    "active",
    "createdAt",
    "updatedAt",
    "isArchived",
    "versionId",
    "triggerCount",
    "tags",
    "meta",
    "shared",
];
const NODE_FIELDS: [&str; 18] = [
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

/// What the fake does to a request instead of (or on top of) answering it.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 429 `{"message": "Too Many Requests"}`, with `Retry-After` when given.
    RateLimited { retry_after: Option<String> },
    /// This status with `{"message": message}`; nothing else happens.
    Status { status: u16, message: String },
    /// This status and raw body (content type JSON); nothing else happens.
    Raw { status: u16, body: String },
    /// 200 with a truncated JSON body; nothing else happens.
    MalformedJson,
    /// The request is carried out (a delete deletes, a create creates), but the
    /// answer comes only after this delay.
    Slow(Duration),
    /// Someone edits workflow `workflow_id` in the n8n editor (its name becomes
    /// `name`, `updatedAt` moves) just before the request is carried out as usual:
    /// a hotfix landing in the middle of a promotion.
    EditFirst { workflow_id: String, name: String },
    /// Someone deletes workflow `workflow_id` just before the request is carried
    /// out as usual.
    DeleteFirst { workflow_id: String },
    /// n8n goes away: this request and every later one get what the reverse proxy
    /// in front of it answers then (502 with nginx's HTML page), until
    /// [`FakeN8n::come_back`].
    GoAway,
}

/// What nginx answers when the n8n behind it is down.
const BAD_GATEWAY: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// Without the query.
    pub path: String,
    pub query: Option<String>,
    /// Whether it carried the right `X-N8N-API-KEY`.
    pub authorized: bool,
    /// The status the fake answered (0 until it decided).
    pub status: u16,
    /// The fault applied to it, if any.
    pub fault: Option<Fault>,
    pub at: Instant,
}

impl Request {
    /// A query parameter's value (not percent-decoded; the fake's cursors need none).
    pub fn param(&self, name: &str) -> Option<String> {
        self.query
            .as_deref()
            .and_then(|query| query_param(query, name))
    }
}

/// A credential the fake holds (its secret data is never returned, as in n8n).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub id: String,
    pub name: String,
    /// The credential type (`slackApi`, `postgres`, …).
    pub kind: String,
}

struct Inner {
    api_key: String,
    credentials: Vec<Credential>,
    /// Insertion order = listing order.
    workflows: BTreeMap<u64, Value>,
    /// A listed workflow's JSON text, kept with the workflow it was written from and
    /// used while the workflow is still equal to it: a large listing costs the fake a
    /// comparison per workflow instead of a copy and a serialization (the fake shares
    /// the machine with the service it stands for in the benchmarks).
    listed: HashMap<u64, (Value, String)>,
    seq_of: HashMap<String, u64>,
    next_seq: u64,
    page_cap: usize,
    cursor_salt: u64,
    repeat_cursor: bool,
    /// (only requests with this method, only paths containing this, fault)
    faults: VecDeque<(Option<Method>, Option<String>, Fault)>,
    /// n8n went away ([`Fault::GoAway`]).
    gone: bool,
    log: Vec<Request>,
}

/// The fake n8n server (see the module docs).
pub struct FakeN8n {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeN8n {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeN8n {
    /// Starts an empty fake on `127.0.0.1` (a free port) that accepts `api_key`.
    pub async fn start(api_key: &str) -> FakeN8n {
        let inner = Arc::new(Mutex::new(Inner {
            api_key: api_key.to_string(),
            credentials: Vec::new(),
            workflows: BTreeMap::new(),
            listed: HashMap::new(),
            seq_of: HashMap::new(),
            next_seq: 1,
            page_cap: MAX_LIMIT,
            cursor_salt: rand::random::<u64>() | 1,
            repeat_cursor: false,
            faults: VecDeque::new(),
            gone: false,
            log: Vec::new(),
        }));
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake n8n");
        let addr = listener.local_addr().expect("fake n8n address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeN8n { addr, inner, task }
    }

    /// `http://127.0.0.1:{port}` (the API is under `/api/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn api_key(&self) -> String {
        self.lock().api_key.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ---- the store ----

    /// Stores a workflow as n8n would hold it and returns its id: missing `id`,
    /// `active`, `isArchived`, `createdAt`, `updatedAt`, `versionId`, `triggerCount`,
    /// `settings`, `staticData`, `meta`, `pinData` and `tags` are filled in; an
    /// existing id is replaced in place.
    pub fn insert(&self, workflow: Value) -> String {
        let mut workflow = workflow;
        complete(&mut workflow);
        let id = workflow["id"].as_str().expect("completed").to_string();
        let mut inner = self.lock();
        let seq = match inner.seq_of.get(&id) {
            Some(&seq) => seq,
            None => {
                let seq = inner.next_seq;
                inner.next_seq += 1;
                inner.seq_of.insert(id.clone(), seq);
                seq
            }
        };
        inner.workflows.insert(seq, workflow);
        id
    }

    pub fn insert_many(&self, workflows: impl IntoIterator<Item = Value>) -> Vec<String> {
        workflows.into_iter().map(|w| self.insert(w)).collect()
    }

    /// Inserts `count` realistic workflows ([`sample_workflow`]`(0..count)`).
    pub fn seed(&self, count: usize) -> Vec<String> {
        self.insert_many((0..count).map(sample_workflow))
    }

    /// One workflow as `GET /workflows/{id}` would return it.
    pub fn workflow(&self, id: &str) -> Option<Value> {
        let inner = self.lock();
        let seq = inner.seq_of.get(id)?;
        inner.workflows.get(seq).cloned()
    }

    /// Every workflow, in listing order.
    pub fn workflows(&self) -> Vec<Value> {
        self.lock().workflows.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().workflows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn remove(&self, id: &str) -> Option<Value> {
        let mut inner = self.lock();
        let seq = inner.seq_of.remove(id)?;
        inner.workflows.remove(&seq)
    }

    /// Edits a stored workflow in place, as someone in n8n's editor would (bumps
    /// `updatedAt` and `versionId`).
    pub fn modify(&self, id: &str, edit: impl FnOnce(&mut Value)) -> bool {
        let mut inner = self.lock();
        let Some(&seq) = inner.seq_of.get(id) else {
            return false;
        };
        let workflow = inner.workflows.get_mut(&seq).expect("indexed");
        edit(workflow);
        touch(workflow);
        true
    }

    /// Adds a credential as someone in n8n's UI would; returns its id.
    pub fn add_credential(&self, name: &str, kind: &str) -> String {
        let id = new_id();
        self.lock().credentials.push(Credential {
            id: id.clone(),
            name: name.to_string(),
            kind: kind.to_string(),
        });
        id
    }

    /// The credentials the fake holds (what no 1.x API call can list).
    pub fn credentials(&self) -> Vec<Credential> {
        self.lock().credentials.clone()
    }

    // ---- behaviour ----

    /// At most this many workflows per page, whatever `limit` says (n8n caps at 250).
    pub fn set_page_size_cap(&self, cap: usize) {
        self.lock().page_cap = cap.max(1);
    }

    /// A broken server: every page's `nextCursor` is the same cursor.
    pub fn repeat_cursors(&self, on: bool) {
        self.lock().repeat_cursor = on;
    }

    /// The next `count` requests (of any kind) get `fault`, after those already queued.
    pub fn fault_next(&self, count: usize, fault: Fault) {
        let mut inner = self.lock();
        for _ in 0..count {
            inner.faults.push_back((None, None, fault.clone()));
        }
    }

    /// The next `count` requests with this method whose path ends with `path`
    /// (`/workflows/{id}`; `/api/v1/workflows` is the create alone) get `fault`.
    pub fn fault_next_on(&self, method: Method, path: &str, count: usize, fault: Fault) {
        let mut inner = self.lock();
        for _ in 0..count {
            inner
                .faults
                .push_back((Some(method.clone()), Some(path.to_string()), fault.clone()));
        }
    }

    /// The next `count` requests with this method get `fault`.
    pub fn fault_next_for(&self, method: Method, count: usize, fault: Fault) {
        let mut inner = self.lock();
        for _ in 0..count {
            inner
                .faults
                .push_back((Some(method.clone()), None, fault.clone()));
        }
    }

    /// 429 with `Retry-After: {seconds}` for the next `count` requests.
    pub fn rate_limit_next(&self, count: usize, retry_after_seconds: u64) {
        self.fault_next(
            count,
            Fault::RateLimited {
                retry_after: Some(retry_after_seconds.to_string()),
            },
        );
    }

    /// This status (e.g. 500, 503) for the next `count` requests.
    pub fn fail_next(&self, count: usize, status: u16) {
        let message = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error")
            .to_string();
        self.fault_next(count, Fault::Status { status, message });
    }

    /// The next `count` answers come after `delay` (the requests still take effect).
    pub fn slow_next(&self, count: usize, delay: Duration) {
        self.fault_next(count, Fault::Slow(delay));
    }

    /// The next `count` answers are 200 with a body that is not JSON.
    pub fn malformed_next(&self, count: usize) {
        self.fault_next(count, Fault::MalformedJson);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// n8n is back after a [`Fault::GoAway`].
    pub fn come_back(&self) {
        self.lock().gone = false;
    }

    // ---- the request log ----

    pub fn requests(&self) -> Vec<Request> {
        self.lock().log.clone()
    }

    pub fn request_count(&self) -> usize {
        self.lock().log.len()
    }

    /// Requests with this method whose path starts with `/api/v1{path_prefix}`.
    pub fn requests_to(&self, method: Method, path_prefix: &str) -> Vec<Request> {
        let prefix = format!("/api/v1{path_prefix}");
        self.lock()
            .log
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(&prefix))
            .cloned()
            .collect()
    }

    pub fn clear_requests(&self) {
        self.lock().log.clear();
    }
}

/// A realistic n8n workflow as `GET` returns it (from `aggregates/testdata`), with a
/// unique id (`wf` + 14 digits) and name for `n`.
pub fn sample_workflow(n: usize) -> Value {
    const SOURCES: [&str; 2] = [
        include_str!("../../../aggregates/testdata/daily_report.json"),
        include_str!("../../../aggregates/testdata/order_sync.json"),
    ];
    let mut workflow: Value =
        serde_json::from_str(SOURCES[n % SOURCES.len()]).expect("testdata is JSON");
    let name = format!("{} {n:04}", workflow["name"].as_str().unwrap_or("Workflow"));
    workflow["id"] = json!(format!("wf{n:014}"));
    workflow["name"] = json!(name);
    workflow
}

// ---- the server ----

type Shared = Arc<Mutex<Inner>>;

struct Answer {
    status: StatusCode,
    body: String,
    retry_after: Option<String>,
    delay: Option<Duration>,
}

impl Answer {
    fn bad_gateway() -> Answer {
        Answer {
            status: StatusCode::BAD_GATEWAY,
            body: BAD_GATEWAY.to_string(),
            retry_after: None,
            delay: None,
        }
    }

    fn json(status: StatusCode, value: Value) -> Answer {
        Answer {
            status,
            body: value.to_string(),
            retry_after: None,
            delay: None,
        }
    }

    fn message(status: StatusCode, message: &str) -> Answer {
        Answer::json(status, json!({ "message": message }))
    }
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = {
        let mut inner = shared.lock().unwrap_or_else(|p| p.into_inner());
        let authorized = headers
            .get("x-n8n-api-key")
            .is_some_and(|key| key.as_bytes() == inner.api_key.as_bytes());
        let index = inner.log.len();
        inner.log.push(Request {
            method: method.clone(),
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            authorized,
            status: 0,
            fault: None,
            at: Instant::now(),
        });
        let fault = inner
            .faults
            .iter()
            .position(|(only, on, _)| {
                only.as_ref().is_none_or(|m| *m == method)
                    && on.as_ref().is_none_or(|p| uri.path().ends_with(p.as_str()))
            })
            .and_then(|at| inner.faults.remove(at))
            .map(|(_, _, fault)| fault);
        inner.log[index].fault = fault.clone();
        if matches!(fault, Some(Fault::GoAway)) {
            inner.gone = true;
        }
        let answer = match fault {
            _ if inner.gone => Answer::bad_gateway(),
            Some(Fault::GoAway) => Answer::bad_gateway(),
            Some(Fault::RateLimited { retry_after }) => Answer {
                retry_after,
                ..Answer::message(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
            },
            Some(Fault::Status { status, message }) => {
                Answer::message(status_code(status), &message)
            }
            Some(Fault::Raw { status, body }) => Answer {
                status: status_code(status),
                body,
                retry_after: None,
                delay: None,
            },
            Some(Fault::MalformedJson) => Answer {
                status: StatusCode::OK,
                body: r#"{"data": [{"id": "wf1", "name": "trunc"#.to_string(),
                retry_after: None,
                delay: None,
            },
            Some(Fault::Slow(delay)) => Answer {
                delay: Some(delay),
                ..respond(&mut inner, &method, &uri, &headers, &body)
            },
            Some(Fault::EditFirst { workflow_id, name }) => {
                if let Some(&seq) = inner.seq_of.get(&workflow_id) {
                    if let Some(workflow) = inner.workflows.get_mut(&seq) {
                        workflow["name"] = json!(name);
                        touch(workflow);
                    }
                }
                respond(&mut inner, &method, &uri, &headers, &body)
            }
            Some(Fault::DeleteFirst { workflow_id }) => {
                if let Some(seq) = inner.seq_of.remove(&workflow_id) {
                    inner.workflows.remove(&seq);
                }
                respond(&mut inner, &method, &uri, &headers, &body)
            }
            None => respond(&mut inner, &method, &uri, &headers, &body),
        };
        inner.log[index].status = answer.status.as_u16();
        answer
    };
    if let Some(delay) = answer.delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Some(value) = answer
        .retry_after
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn respond(
    inner: &mut Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    let Some(rest) = uri.path().strip_prefix("/api/v1/") else {
        return Answer::message(StatusCode::NOT_FOUND, "not found");
    };
    match headers.get("x-n8n-api-key") {
        None => {
            return Answer::message(StatusCode::UNAUTHORIZED, "'X-N8N-API-KEY' header required")
        }
        Some(key) if key.as_bytes() != inner.api_key.as_bytes() => {
            return Answer::message(StatusCode::UNAUTHORIZED, "unauthorized")
        }
        Some(_) => {}
    }
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["workflows"]) => list(inner, uri.query().unwrap_or("")),
        (Method::POST, ["workflows"]) => match parse_body(body) {
            Ok(body) => create(inner, body),
            Err(answer) => answer,
        },
        (Method::GET, ["workflows", id]) => match find(inner, id) {
            Some(seq) => Answer::json(StatusCode::OK, inner.workflows[&seq].clone()),
            None => not_found(),
        },
        (Method::PUT, ["workflows", id]) => {
            let Some(seq) = find(inner, id) else {
                return not_found();
            };
            match parse_body(body) {
                Ok(body) => update(inner, seq, body),
                Err(answer) => answer,
            }
        }
        (Method::DELETE, ["workflows", id]) => match find(inner, id) {
            Some(seq) => {
                inner.seq_of.remove(*id);
                let workflow = inner.workflows.remove(&seq).expect("indexed");
                Answer::json(StatusCode::OK, workflow)
            }
            None => not_found(),
        },
        (Method::POST, ["credentials"]) => create_credential(inner, body),
        (Method::DELETE, ["credentials", id]) => {
            match inner.credentials.iter().position(|c| c.id == *id) {
                Some(at) => {
                    let credential = inner.credentials.remove(at);
                    Answer::json(StatusCode::OK, credential_json(&credential))
                }
                None => not_found(),
            }
        }
        (method, ["credentials"]) => Answer::message(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} method not allowed"),
        ),
        (Method::POST, ["workflows", id, action @ ("activate" | "deactivate")]) => {
            let Some(seq) = find(inner, id) else {
                return not_found();
            };
            let workflow = inner.workflows.get_mut(&seq).expect("indexed");
            let activate = *action == "activate";
            if activate && !has_trigger(workflow) {
                return Answer::message(
                    StatusCode::BAD_REQUEST,
                    "Workflow has no node to start the workflow - at least one trigger, poller or webhook node is required",
                );
            }
            workflow["active"] = json!(activate);
            workflow["updatedAt"] = json!(now());
            Answer::json(StatusCode::OK, workflow.clone())
        }
        (_, ["workflows"] | ["workflows", _] | ["workflows", _, _]) => {
            Answer::message(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => Answer::message(StatusCode::NOT_FOUND, "not found"),
    }
}

fn not_found() -> Answer {
    Answer::message(StatusCode::NOT_FOUND, "Not Found")
}

fn find(inner: &Inner, id: &str) -> Option<u64> {
    inner.seq_of.get(id).copied()
}

fn list(inner: &mut Inner, query: &str) -> Answer {
    let limit = match query_param(query, "limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<f64>() {
            Err(_) => {
                return Answer::message(
                    StatusCode::BAD_REQUEST,
                    "request/query/limit must be number",
                )
            }
            Ok(limit) if limit > MAX_LIMIT as f64 => {
                return Answer::message(
                    StatusCode::BAD_REQUEST,
                    "request/query/limit must be <= 250",
                )
            }
            Ok(limit) if limit < 1.0 => {
                return Answer::message(StatusCode::BAD_REQUEST, "request/query/limit must be >= 1")
            }
            Ok(limit) => limit as usize,
        },
    };
    let start = match query_param(query, "cursor") {
        None => 0,
        Some(cursor) => match decode_cursor(inner.cursor_salt, &cursor) {
            Some(start) => start,
            None => return Answer::message(StatusCode::BAD_REQUEST, "Invalid cursor"),
        },
    };
    let take = limit.min(inner.page_cap);
    let Inner {
        workflows,
        listed,
        repeat_cursor,
        cursor_salt,
        ..
    } = inner;
    let mut page = workflows.range(start..);
    let mut body = String::from("{\"data\":[");
    for (i, (seq, workflow)) in page.by_ref().take(take).enumerate() {
        if i > 0 {
            body.push(',');
        }
        match listed.get(seq) {
            Some((written, text)) if written == workflow => body.push_str(text),
            _ => {
                let text = workflow.to_string();
                body.push_str(&text);
                listed.insert(*seq, (workflow.clone(), text));
            }
        }
    }
    let next = match page.next() {
        Some(_) if *repeat_cursor && start > 0 => Some(encode_cursor(*cursor_salt, start)),
        Some((&seq, _)) => Some(encode_cursor(*cursor_salt, seq)),
        None => None,
    };
    body.push_str("],\"nextCursor\":");
    body.push_str(&json!(next).to_string());
    body.push('}');
    Answer {
        status: StatusCode::OK,
        body,
        retry_after: None,
        delay: None,
    }
}

/// Opaque to clients: the first sequence number of the next page, scrambled.
fn encode_cursor(salt: u64, seq: u64) -> String {
    format!("{:016x}", seq ^ salt)
}

fn decode_cursor(salt: u64, cursor: &str) -> Option<u64> {
    if cursor.len() != 16 {
        return None;
    }
    u64::from_str_radix(cursor, 16).ok().map(|v| v ^ salt)
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| value.to_string())
    })
}

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, Answer> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| Answer::message(StatusCode::BAD_REQUEST, "request/body must be object"))?;
    validate(&value)
        .map_err(|Invalid(message)| Answer::message(StatusCode::BAD_REQUEST, &message))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => unreachable!("validated"),
    }
}

/// What n8n's OpenAPI validation says of a body it refuses.
#[derive(Debug)]
struct Invalid(String);

impl From<&str> for Invalid {
    fn from(message: &str) -> Self {
        Invalid(message.to_string())
    }
}

impl From<String> for Invalid {
    fn from(message: String) -> Self {
        Invalid(message)
    }
}

/// n8n's OpenAPI validation of a workflow body, with its messages.
fn validate(body: &Value) -> Result<(), Invalid> {
    let Some(body) = body.as_object() else {
        return Err("request/body must be object".into());
    };
    for key in body.keys() {
        if READ_ONLY_FIELDS.contains(&key.as_str()) {
            return Err(Invalid(format!("request/body/{key} is read-only")));
        }
        if !ACCEPTED_FIELDS.contains(&key.as_str()) {
            return Err("request/body must NOT have additional properties".into());
        }
    }
    for key in REQUIRED_FIELDS {
        if !body.contains_key(key) {
            return Err(Invalid(format!(
                "request/body must have required property '{key}'"
            )));
        }
    }
    if !body["name"].is_string() {
        return Err("request/body/name must be string".into());
    }
    let Some(nodes) = body["nodes"].as_array() else {
        return Err("request/body/nodes must be array".into());
    };
    for (i, node) in nodes.iter().enumerate() {
        let Some(node) = node.as_object() else {
            return Err(Invalid(format!("request/body/nodes/{i} must be object")));
        };
        if node.keys().any(|k| !NODE_FIELDS.contains(&k.as_str())) {
            return Err(Invalid(format!(
                "request/body/nodes/{i} must NOT have additional properties"
            )));
        }
    }
    if !body["connections"].is_object() {
        return Err("request/body/connections must be object".into());
    }
    let Some(settings) = body["settings"].as_object() else {
        return Err("request/body/settings must be object".into());
    };
    if settings
        .keys()
        .any(|k| !ACCEPTED_SETTINGS.contains(&k.as_str()))
    {
        return Err("request/body/settings must NOT have additional properties".into());
    }
    Ok(())
}

fn create(inner: &mut Inner, body: Map<String, Value>) -> Answer {
    let mut workflow = Value::Object(body);
    substitute_credentials(&inner.credentials, &mut workflow);
    complete(&mut workflow);
    let id = workflow["id"].as_str().expect("completed").to_string();
    let seq = inner.next_seq;
    inner.next_seq += 1;
    inner.seq_of.insert(id, seq);
    inner.workflows.insert(seq, workflow.clone());
    Answer::json(StatusCode::OK, workflow)
}

fn update(inner: &mut Inner, seq: u64, body: Map<String, Value>) -> Answer {
    let mut body = Value::Object(body);
    substitute_credentials(&inner.credentials, &mut body);
    let workflow = inner.workflows.get_mut(&seq).expect("indexed");
    for (key, value) in body.as_object_mut().expect("object").iter_mut() {
        workflow[key.as_str()] = value.take();
    }
    touch(workflow);
    workflow["triggerCount"] = json!(trigger_count(workflow));
    Answer::json(StatusCode::OK, workflow.clone())
}

/// n8n's rule on every workflow write: a node's credential reference
/// (`credentials.{type}: {id, name}`) is kept when a credential with that id and type
/// exists; otherwise the one credential with that name and type takes its place (id
/// and name); when there is none (or several), the reference is kept as sent.
pub fn substitute_credentials(credentials: &[Credential], workflow: &mut Value) {
    let Some(nodes) = workflow.get_mut("nodes").and_then(Value::as_array_mut) else {
        return;
    };
    for node in nodes {
        let Some(references) = node.get_mut("credentials").and_then(Value::as_object_mut) else {
            continue;
        };
        for (kind, reference) in references.iter_mut() {
            let id = reference.get("id").and_then(Value::as_str);
            if id.is_some_and(|id| credentials.iter().any(|c| c.id == id && c.kind == *kind)) {
                continue;
            }
            let name = reference.get("name").and_then(Value::as_str);
            let mut same = credentials
                .iter()
                .filter(|c| c.kind == *kind && Some(c.name.as_str()) == name);
            if let (Some(only), None) = (same.next(), same.next()) {
                *reference = json!({ "id": only.id, "name": only.name });
            }
        }
    }
}

fn credential_json(credential: &Credential) -> Value {
    let at = now();
    json!({
        "id": credential.id,
        "name": credential.name,
        "type": credential.kind,
        "createdAt": at,
        "updatedAt": at,
    })
}

/// `POST /credentials`: `name`, `type` and `data` required (the data is kept nowhere).
fn create_credential(inner: &mut Inner, body: &[u8]) -> Answer {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return Answer::message(StatusCode::BAD_REQUEST, "request/body must be object");
    };
    for key in ["name", "type", "data"] {
        if !body.contains_key(key) {
            return Answer::message(
                StatusCode::BAD_REQUEST,
                &format!("request/body must have required property '{key}'"),
            );
        }
    }
    let (Some(name), Some(kind)) = (body["name"].as_str(), body["type"].as_str()) else {
        return Answer::message(StatusCode::BAD_REQUEST, "request/body/name must be string");
    };
    let credential = Credential {
        id: new_id(),
        name: name.to_string(),
        kind: kind.to_string(),
    };
    inner.credentials.push(credential.clone());
    Answer::json(StatusCode::OK, credential_json(&credential))
}

fn has_trigger(workflow: &Value) -> bool {
    trigger_count(workflow) > 0
}

fn trigger_count(workflow: &Value) -> usize {
    workflow["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter(|node| {
                    let kind = node["type"].as_str().unwrap_or("").to_ascii_lowercase();
                    kind.ends_with("trigger")
                        || kind.ends_with(".webhook")
                        || kind.ends_with(".cron")
                })
                .count()
        })
        .unwrap_or(0)
}

fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn new_id() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

fn touch(workflow: &mut Value) {
    workflow["updatedAt"] = json!(now());
    workflow["versionId"] = json!(uuid::Uuid::new_v4().to_string());
}

/// Fills in what n8n adds to every stored workflow.
fn complete(workflow: &mut Value) {
    if !workflow.is_object() {
        *workflow = json!({});
    }
    let created = now();
    let triggers = trigger_count(workflow);
    let object = workflow.as_object_mut().expect("object");
    let mut default = |key: &str, value: Value| {
        let missing = match object.get(key) {
            None => true,
            Some(id) if key == "id" => id.as_str().is_none_or(str::is_empty),
            Some(_) => false,
        };
        if missing {
            object.insert(key.to_string(), value);
        }
    };
    default("id", json!(new_id()));
    default("name", json!("My workflow"));
    default("active", json!(false));
    default("isArchived", json!(false));
    default("createdAt", json!(created.clone()));
    default("updatedAt", json!(created));
    default("versionId", json!(uuid::Uuid::new_v4().to_string()));
    default("triggerCount", json!(triggers));
    default("nodes", json!([]));
    default("connections", json!({}));
    default("settings", json!({ "executionOrder": "v1" }));
    default("staticData", Value::Null);
    default("meta", Value::Null);
    default("pinData", json!({}));
    default("tags", json!([]));
}
