//! Bad input gets the matching status, `extensions.code` and a message that says what
//! is wrong — never a panic, and never an appended event: malformed or oversized
//! requests, GraphQL validation and limits, bad tokens, missing roles, invalid
//! transitions, bad stream positions, and WebSocket connections without a valid token.

use std::time::Duration;
use workflowops::workflows::incident_slot::report_drift;

use aggregates::incident::{AffectedWorkflow, IncidentPolicy};
use aggregates::kernel::command::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use serde_json::{json, Value};
use workflowops::http::auth::{Auth, Claims};

use super::isolation::{event_total, last_position, ws_connect, ws_receive, ws_send, Received};
use super::{code, register_environment, Api, SECRET};
use crate::support::{both_backends, ctx, id, Kind};

const TENANT: &str = "acme";

/// A running service with some history, and the checks every case shares.
struct Probe {
    api: Api,
    admin: String,
    events: i64,
}

/// A raw response: status, headers and the body as JSON (`Null` if it is not JSON).
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Probe {
    async fn start(kind: Kind) -> Probe {
        let api = Api::start(kind).await;
        let admin = api.token(TENANT, "admin", "alice");
        register_environment(&api, &admin, "prod", "PRODUCTION").await;
        let events = event_total(&api).await;
        Probe { api, admin, events }
    }

    /// Opens an incident on `prod` as the drift job would; returns its id.
    async fn incident(&mut self) -> String {
        let (incident, committed) = report_drift(
            &self.api.domain,
            &ctx(TENANT, Role::System),
            &id("prod"),
            vec![AffectedWorkflow {
                workflow_id: "billing".into(),
                name: "Billing".into(),
            }],
            None,
            IncidentPolicy::default(),
        )
        .await
        .expect("drift opens an incident");
        self.events = event_total(&self.api).await;
        // read-your-writes for the cases that read it
        self.api
            .ok(
                &self.admin,
                "query($p: Int) { incidents(minPosition: $p) { nodes { id } } }",
                json!({ "p": committed.position }),
            )
            .await;
        incident.to_string()
    }

    /// POSTs `body` to `/graphql` as is.
    async fn raw(
        &self,
        authorization: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut request = self
            .api
            .http
            .post(format!("{}/graphql", self.api.base))
            .body(body);
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        if let Some(value) = content_type {
            request = request.header(CONTENT_TYPE, value);
        }
        let response = request.send().await.expect("POST /graphql");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("read the response");
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// A GraphQL request with a bearer token.
    async fn graphql(&self, token: &str, request: Value) -> Reply {
        self.raw(
            Some(&format!("Bearer {token}")),
            Some("application/json"),
            request.to_string().into_bytes(),
        )
        .await
    }

    /// `reply` is refused with `status` and `expected` code, its message mentions
    /// `hint`, and the log did not grow. Returns the error.
    async fn refused(
        &self,
        what: &str,
        reply: &Reply,
        status: u16,
        expected: &str,
        hint: &str,
    ) -> Value {
        assert_eq!(
            reply.status, status,
            "{what}: HTTP status (body {})",
            reply.body
        );
        let errors = reply.body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: a GraphQL-shaped error body, got {}", reply.body));
        assert!(
            !errors.is_empty(),
            "{what}: at least one error: {}",
            reply.body
        );
        let error = errors[0].clone();
        assert_eq!(
            code(&error),
            expected,
            "{what}: extensions.code: {}",
            reply.body
        );
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.to_lowercase().contains(&hint.to_lowercase()),
            "{what}: the message should say what is wrong (mention {hint:?}): {message:?}"
        );
        if status == 200 {
            assert!(
                reply.body["data"].is_null()
                    || reply.body["data"]
                        .as_object()
                        .is_some_and(|d| d.values().all(Value::is_null)),
                "{what}: no data with the error: {}",
                reply.body
            );
        }
        assert_eq!(
            event_total(&self.api).await,
            self.events,
            "{what}: a refused request appended events"
        );
        error
    }

    /// A GraphQL operation refused in the response (HTTP 200).
    async fn graphql_refused(
        &self,
        what: &str,
        token: &str,
        request: Value,
        expected: &str,
        hint: &str,
    ) -> Value {
        let reply = self.graphql(token, request).await;
        self.refused(what, &reply, 200, expected, hint).await
    }

    /// The service still answers (nothing above took it down).
    async fn still_serving(self) {
        let data = self
            .api
            .ok(&self.admin, "{ environments { id } }", json!({}))
            .await;
        assert_eq!(data["environments"][0]["id"], "prod", "{data}");
        let health = self
            .api
            .http
            .get(format!("{}/health", self.api.base))
            .send()
            .await
            .expect("GET /health");
        assert_eq!(
            health.status(),
            200,
            "the service is healthy after bad input"
        );
        assert_eq!(
            event_total(&self.api).await,
            self.events,
            "nothing was appended"
        );
        self.api.stop().await;
    }
}

/// Malformed, mistyped and oversized requests are refused before any GraphQL runs.
async fn malformed_requests_are_refused_with_their_status(kind: Kind) {
    let probe = Probe::start(kind).await;
    let bearer = format!("Bearer {}", probe.admin);
    let auth = Some(bearer.as_str());

    let reply = probe
        .raw(
            auth,
            Some("application/json"),
            br#"{"query": "{ environments { id } }""#.to_vec(),
        )
        .await;
    probe
        .refused(
            "truncated JSON body",
            &reply,
            400,
            "VALIDATION",
            "malformed",
        )
        .await;
    let reply = probe
        .raw(
            auth,
            Some("application/json"),
            b"query=environments".to_vec(),
        )
        .await;
    probe
        .refused(
            "a body that is not JSON",
            &reply,
            400,
            "VALIDATION",
            "malformed",
        )
        .await;

    let valid = json!({ "query": "{ environments { id } }" })
        .to_string()
        .into_bytes();
    let reply = probe.raw(auth, Some("text/plain"), valid.clone()).await;
    probe
        .refused(
            "Content-Type text/plain",
            &reply,
            415,
            "VALIDATION",
            "application/json",
        )
        .await;
    let reply = probe
        .raw(
            auth,
            Some("application/x-www-form-urlencoded"),
            valid.clone(),
        )
        .await;
    probe
        .refused(
            "Content-Type form",
            &reply,
            415,
            "VALIDATION",
            "Content-Type",
        )
        .await;
    let reply = probe.raw(auth, None, valid.clone()).await;
    probe
        .refused("no Content-Type", &reply, 415, "VALIDATION", "Content-Type")
        .await;
    let reply = probe
        .raw(auth, Some("application/json; charset=utf-8"), valid)
        .await;
    assert_eq!(
        reply.status, 200,
        "a charset parameter is fine: {}",
        reply.body
    );

    // Valid JSON, just too big: 300 KiB of comment.
    let padded = |kib: usize| json!({ "query": format!("{{ environments {{ id }} }} # {}", "x".repeat(kib * 1024)) });
    let oversized = padded(300);
    let reply = probe
        .raw(
            auth,
            Some("application/json"),
            oversized.to_string().into_bytes(),
        )
        .await;
    probe
        .refused(
            "a body over 256 KiB",
            &reply,
            413,
            "VALIDATION",
            "larger than",
        )
        .await;
    // Just under the limit is served (the limit is the body, not the request).
    let under = padded(200);
    let reply = probe
        .raw(
            auth,
            Some("application/json"),
            under.to_string().into_bytes(),
        )
        .await;
    assert_eq!(
        reply.status, 200,
        "a 200 KiB body is accepted: {}",
        reply.body
    );
    assert!(reply.body.get("errors").is_none(), "{}", reply.body);

    let graphiql = probe
        .api
        .http
        .get(format!("{}/graphql", probe.api.base))
        .send()
        .await
        .expect("GET /graphql");
    assert_eq!(graphiql.status(), 200, "GET /graphql serves GraphiQL");
    let content_type = graphiql.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/html"),
        "GraphiQL is HTML: {content_type}"
    );
    let page = graphiql.text().await.unwrap();
    assert!(
        page.to_lowercase().contains("graphiql"),
        "the page loads GraphiQL"
    );
    assert!(
        page.contains("/graphql/ws"),
        "GraphiQL knows the subscription endpoint"
    );

    probe.still_serving().await;
}

/// Missing, expired, foreign and malformed credentials: 401 with `WWW-Authenticate`.
async fn bad_credentials_are_unauthenticated(kind: Kind) {
    let probe = Probe::start(kind).await;
    let request = json!({ "query": "{ environments { id name } }" })
        .to_string()
        .into_bytes();

    let now = chrono::Utc::now().timestamp();
    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &Claims {
            sub: "alice".into(),
            tenant: TENANT.into(),
            role: "admin".into(),
            iat: now - 3600,
            exp: now - 60,
            ..Default::default()
        },
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let foreign = Auth::new(b"another-secret-of-at-least-32-bytes-long!")
        .mint(TENANT, "admin", "mallory", Duration::from_secs(3600))
        .unwrap();
    let unknown_role = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &Claims {
            sub: "alice".into(),
            tenant: TENANT.into(),
            role: "system".into(),
            iat: now,
            exp: now + 3600,
            ..Default::default()
        },
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no Authorization header", None, "missing bearer token"),
        (
            "an expired token",
            Some(format!("Bearer {expired}")),
            "expired",
        ),
        (
            "a token signed with another secret",
            Some(format!("Bearer {foreign}")),
            "signature",
        ),
        (
            "a token with the system role",
            Some(format!("Bearer {unknown_role}")),
            "role",
        ),
        (
            "a token that is not a JWT",
            Some("Bearer not-a-token".into()),
            "invalid token",
        ),
        (
            "Basic credentials",
            Some("Basic YWxpY2U6c2VjcmV0".into()),
            "malformed Authorization",
        ),
        (
            "`Bearer` without a token",
            Some("Bearer ".into()),
            "malformed Authorization",
        ),
        (
            "a bare token without `Bearer`",
            Some(probe.admin.clone()),
            "malformed Authorization",
        ),
    ];
    for (what, authorization, hint) in cases {
        let reply = probe
            .raw(
                authorization.as_deref(),
                Some("application/json"),
                request.clone(),
            )
            .await;
        probe
            .refused(what, &reply, 401, "UNAUTHENTICATED", hint)
            .await;
        assert_eq!(
            reply
                .headers
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer"),
            "{what}: 401 carries `WWW-Authenticate: Bearer`"
        );
        let message = reply.body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            !message.contains(&probe.admin)
                && !message.contains(&expired)
                && !message.contains(&foreign),
            "{what}: the message never echoes a token: {message}"
        );
    }
    // A mutation without a token does not run either.
    let reply = probe
        .raw(
            None,
            Some("application/json"),
            json!({ "query": "mutation { deactivateEnvironment(id: \"prod\") { position } }" })
                .to_string()
                .into_bytes(),
        )
        .await;
    probe
        .refused(
            "a mutation without a token",
            &reply,
            401,
            "UNAUTHENTICATED",
            "bearer",
        )
        .await;

    // The event stream wants a token too.
    let events = probe
        .api
        .http
        .get(format!("{}/events?from=0", probe.api.base))
        .send()
        .await
        .expect("GET /events");
    assert_eq!(events.status(), 401, "GET /events without a token");
    assert_eq!(
        events
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok()),
        Some("Bearer"),
        "GET /events: 401 carries `WWW-Authenticate: Bearer`"
    );
    let body: Value = events.json().await.unwrap_or(Value::Null);
    assert_eq!(code(&body["errors"][0]), "UNAUTHENTICATED", "{body}");
    probe.still_serving().await;
}

/// GraphQL that does not validate: unknown names, wrong types, limits.
async fn invalid_graphql_is_a_validation_error(kind: Kind) {
    let probe = Probe::start(kind).await;
    let admin = probe.admin.clone();
    let two = "query One { environments { id } } query Two { verifyEventLog { ok } }";
    probe
        .graphql_refused(
            "an operationName not in the document",
            &admin,
            json!({ "query": two, "operationName": "Three" }),
            "VALIDATION",
            "Three",
        )
        .await;
    probe
        .graphql_refused(
            "an unknown field",
            &admin,
            json!({ "query": "{ environments { id nope } }" }),
            "VALIDATION",
            "nope",
        )
        .await;
    probe
        .graphql_refused(
            "an unknown root field",
            &admin,
            json!({ "query": "{ tenants { id } }" }),
            "VALIDATION",
            "tenants",
        )
        .await;
    probe
        .graphql_refused(
            "an unknown mutation",
            &admin,
            json!({ "query": "mutation { dropTenant(id: \"acme\") { position } }" }),
            "VALIDATION",
            "dropTenant",
        )
        .await;
    probe
        .graphql_refused(
            "a query that does not parse",
            &admin,
            json!({ "query": "{ environments { id " }),
            "VALIDATION",
            "expected",
        )
        .await;
    probe
        .graphql_refused(
            "a variable of the wrong type",
            &admin,
            json!({ "query": "query($n: Int) { incidents(first: $n) { nodes { id } } }",
                    "variables": { "n": "ten" } }),
            "VALIDATION",
            "Int",
        )
        .await;
    probe
        .graphql_refused(
            "an inline argument of the wrong type",
            &admin,
            json!({ "query": "{ incidents(first: \"ten\") { nodes { id } } }" }),
            "VALIDATION",
            "first",
        )
        .await;
    probe
        .graphql_refused(
            "a missing required argument",
            &admin,
            json!({ "query": "{ environment { id } }" }),
            "VALIDATION",
            "id",
        )
        .await;
    probe
        .graphql_refused(
            "an unknown enum value",
            &admin,
            json!({ "query": "{ incidents(status: OPEN) { nodes { id } } }" }),
            "VALIDATION",
            "OPEN",
        )
        .await;

    // Too deep: environment ⇄ activeIncident past MAX_DEPTH (and, much deeper, past
    // the parser's recursion limit).
    let deep = |pairs: usize| {
        let mut query = String::from("{ environments { ");
        query.push_str(&"activeIncident { environment { ".repeat(pairs));
        query.push_str("id");
        query.push_str(&" } }".repeat(pairs));
        query.push_str(" } }");
        query
    };
    let pairs = workflowops::graphql::MAX_DEPTH / 2 + 1;
    probe
        .graphql_refused(
            "a query nested too deep",
            &admin,
            json!({ "query": deep(pairs) }),
            "VALIDATION",
            "too deep",
        )
        .await;
    probe
        .graphql_refused(
            "a query nested beyond the parser's limit",
            &admin,
            json!({ "query": deep(100) }),
            "VALIDATION",
            "recursion",
        )
        .await;
    // Just within the limit is served.
    let within = deep((workflowops::graphql::MAX_DEPTH - 3) / 2);
    probe.api.ok(&admin, &within, json!({})).await;
    // Too complex: shallow, but many full pages.
    let mut wide = String::from("{");
    for n in 0..20 {
        wide.push_str(&format!(
            " p{n}: incidents(first: 200) {{ nodes {{ id environmentId status severity slaState detectedAt reason ticketRef }} }}"
        ));
    }
    wide.push('}');
    probe
        .graphql_refused(
            "a query that is too complex",
            &admin,
            json!({ "query": wide }),
            "VALIDATION",
            "too complex",
        )
        .await;

    // Page sizes, cursors and ids.
    for list in [
        "workflowMatrix",
        "untrackedWorkflows(environmentId: \"prod\", ",
        "incidents",
        "promotions",
        "deployments",
        "auditTrail",
    ] {
        let (name, open) = match list.split_once('(') {
            Some((name, args)) => (name, format!("{name}({args}")),
            None => (list, format!("{list}(")),
        };
        for (args, field, hint) in [
            ("first: 201", "first", "200"),
            ("first: 0", "first", "between"),
            ("after: \"zz\"", "after", "cursor"),
            ("after: \"7b7d\"", "after", "cursor"),
        ] {
            let query = format!("{{ {open}{args}) {{ pageInfo {{ hasNextPage }} }} }}");
            let error = probe
                .graphql_refused(
                    &format!("{name}({args})"),
                    &admin,
                    json!({ "query": query }),
                    "VALIDATION",
                    hint,
                )
                .await;
            assert_eq!(
                error["extensions"]["field"], field,
                "{name}({args}): the error names the argument: {error}"
            );
            assert!(
                error["message"].as_str().unwrap().starts_with(field),
                "{name}({args}): the message starts with the argument: {error}"
            );
        }
    }
    for (query, field) in [
        ("{ incident(id: \"a b\") { id } }", "id"),
        ("{ environment(id: \"../etc\") { id } }", "id"),
        ("{ promotion(id: \"\") { id } }", "id"),
        ("mutation { acknowledgeIncident(id: \"a b\") { position } }", "id"),
        (
            "mutation { ignoreWorkflow(environmentId: \"prod\", n8nWorkflowId: \"x y\") { position } }",
            "n8nWorkflowId",
        ),
        ("mutation { deployPromotion(promotionId: \"no/such\") { position } }", "promotionId"),
    ] {
        let error = probe
            .graphql_refused(&format!("invalid id in {query}"), &admin, json!({ "query": query }), "VALIDATION", field)
            .await;
        assert_eq!(error["extensions"]["field"], field, "{query}: {error}");
    }

    // minPosition: an event that does not exist, and a negative one.
    let beyond = last_position(&probe.api).await + 1000;
    for (value, hint) in [(beyond, "no event at position"), (-1, "negative")] {
        for field in [
            "environments",
            "incidents { nodes { id } }",
            "auditTrail { nodes { position } }",
        ] {
            let (name, selection) = field.split_once(' ').unwrap_or((field, "{ id }"));
            let query = format!("query($p: Int) {{ {name}(minPosition: $p) {selection} }}");
            probe
                .graphql_refused(
                    &format!("{name}(minPosition: {value})"),
                    &admin,
                    json!({ "query": query, "variables": { "p": value } }),
                    "VALIDATION",
                    hint,
                )
                .await;
        }
    }
    probe.still_serving().await;
}

/// Roles and the state machine: FORBIDDEN and INVALID_TRANSITION, nothing appended.
async fn refused_commands_say_why(kind: Kind) {
    let mut probe = Probe::start(kind).await;
    let incident = probe.incident().await;
    let viewer = probe.api.token(TENANT, "viewer", "victor");
    let developer = probe.api.token(TENANT, "developer", "dana");
    let register = json!({ "query": "mutation { registerEnvironment(id: \"qa\", name: \"QA\", class: STAGING,
        n8nBaseUrl: \"https://qa.n8n.example\") { position } }" });

    let error = probe
        .graphql_refused(
            "a viewer registers an environment",
            &viewer,
            register.clone(),
            "FORBIDDEN",
            "admin",
        )
        .await;
    assert_eq!(error["extensions"]["retryable"], false, "{error}");
    probe
        .graphql_refused(
            "a viewer acknowledges an incident",
            &viewer,
            json!({ "query": "mutation($id: ID!) { acknowledgeIncident(id: $id) { position } }",
                    "variables": { "id": incident } }),
            "FORBIDDEN",
            "developer",
        )
        .await;
    probe
        .graphql_refused(
            "a viewer ignores a workflow",
            &viewer,
            json!({ "query": "mutation { ignoreWorkflow(environmentId: \"prod\", n8nWorkflowId: \"w1\") { position } }" }),
            "FORBIDDEN",
            "developer",
        )
        .await;
    probe
        .graphql_refused(
            "a developer registers an environment",
            &developer,
            register,
            "FORBIDDEN",
            "admin",
        )
        .await;
    probe
        .graphql_refused(
            "a developer deactivates an environment",
            &developer,
            json!({ "query": "mutation { deactivateEnvironment(id: \"prod\") { position } }" }),
            "FORBIDDEN",
            "admin",
        )
        .await;
    probe
        .graphql_refused(
            "a developer closes an incident",
            &developer,
            json!({ "query": "mutation($id: ID!) { closeIncident(id: $id, reason: \"done\", resolutionType: ACKNOWLEDGE) { position } }",
                    "variables": { "id": incident } }),
            "FORBIDDEN",
            "admin",
        )
        .await;
    probe
        .graphql_refused(
            "a developer deploys a promotion",
            &developer,
            json!({ "query": "mutation { deployPromotion(promotionId: \"p1\") { position } }" }),
            "FORBIDDEN",
            "admin",
        )
        .await;
    probe
        .graphql_refused(
            "a developer with adminOverride: true",
            &developer,
            json!({ "query": "mutation($id: ID!) { stabilizeIncident(id: $id, reason: \"force\", adminOverride: true) { position } }",
                    "variables": { "id": incident } }),
            "FORBIDDEN",
            "admin",
        )
        .await;
    probe
        .graphql_refused(
            "a developer acknowledging with adminOverride: true",
            &developer,
            json!({ "query": "mutation($id: ID!) { acknowledgeIncident(id: $id, adminOverride: true) { position } }",
                    "variables": { "id": incident } }),
            "FORBIDDEN",
            "admin",
        )
        .await;

    // Stabilizing a detected incident skips `acknowledged`.
    let error = probe
        .graphql_refused(
            "stabilizing a detected incident",
            &probe.admin,
            json!({ "query": "mutation($id: ID!) { stabilizeIncident(id: $id, reason: \"fixed\") { position } }",
                    "variables": { "id": incident } }),
            "INVALID_TRANSITION",
            "detected",
        )
        .await;
    assert_eq!(error["extensions"]["from"], "detected", "{error}");
    assert_eq!(error["extensions"]["to"], "stabilized", "{error}");
    assert_eq!(
        error["extensions"]["allowed"],
        json!(["acknowledged", "closed"]),
        "{error}"
    );
    assert_eq!(error["extensions"]["retryable"], false, "{error}");

    // Closing an incident that is already closed.
    let data = probe
        .api
        .ok(
            &probe.admin,
            "mutation($id: ID!) { closeIncident(id: $id, reason: \"false alarm\", resolutionType: ACKNOWLEDGE) {
               position incident { status } } }",
            json!({ "id": incident }),
        )
        .await;
    assert_eq!(
        data["closeIncident"]["incident"]["status"], "CLOSED",
        "{data}"
    );
    probe.events = event_total(&probe.api).await;
    let error = probe
        .graphql_refused(
            "closing a closed incident",
            &probe.admin,
            json!({ "query": "mutation($id: ID!) { closeIncident(id: $id, reason: \"again\", resolutionType: ACKNOWLEDGE) { position } }",
                    "variables": { "id": incident } }),
            "INVALID_TRANSITION",
            "closed",
        )
        .await;
    assert_eq!(error["extensions"]["from"], "closed", "{error}");
    assert_eq!(error["extensions"]["to"], "closed", "{error}");
    assert_eq!(error["extensions"]["allowed"], json!([]), "{error}");
    let error = probe
        .graphql_refused(
            "acknowledging a closed incident, even with adminOverride",
            &probe.admin,
            json!({ "query": "mutation($id: ID!) { acknowledgeIncident(id: $id, adminOverride: true) { position } }",
                    "variables": { "id": incident } }),
            "INVALID_TRANSITION",
            "closed",
        )
        .await;
    assert_eq!(error["extensions"]["from"], "closed", "{error}");
    assert_eq!(error["extensions"]["allowed"], json!([]), "{error}");
    probe.still_serving().await;
}

/// `GET /events` with a bad position, and WebSocket connections without a valid token.
async fn streams_refuse_bad_positions_and_tokens(kind: Kind) {
    let probe = Probe::start(kind).await;
    let events = |last_event_id: Option<&str>, query: &str| {
        let mut request = probe
            .api
            .http
            .get(format!("{}/events{query}", probe.api.base))
            .bearer_auth(&probe.admin);
        if let Some(value) = last_event_id {
            request = request.header("Last-Event-ID", value);
        }
        request.send()
    };
    let head = last_position(&probe.api).await;
    let beyond = (head + 1000).to_string();
    for (what, last_event_id, query, hint) in [
        (
            "Last-Event-ID that is not a position",
            Some("abc"),
            "",
            "Last-Event-ID",
        ),
        (
            "Last-Event-ID with a fraction",
            Some("1.5"),
            "?from=0",
            "Last-Event-ID",
        ),
        ("from that is not a number", None, "?from=abc", "from"),
        (
            "Last-Event-ID beyond the log",
            Some(beyond.as_str()),
            "",
            "no event at position",
        ),
    ] {
        let response = events(last_event_id, query).await.expect("GET /events");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let reply = Reply {
            status,
            headers: HeaderMap::new(),
            body,
        };
        probe
            .refused(
                &format!("GET /events: {what}"),
                &reply,
                400,
                "VALIDATION",
                hint,
            )
            .await;
    }
    let fine = events(Some(&head.to_string()), "")
        .await
        .expect("GET /events");
    assert_eq!(fine.status(), 200, "GET /events from the head is served");
    drop(fine);

    let subscribe = |id: &str, from: i64| {
        json!({ "id": id, "type": "subscribe", "payload": {
            "query": "subscription($p: Int) { events(fromPosition: $p) { position } }",
            "variables": { "p": from } } })
    };

    // connection_init without a token or with a bad one: the server closes the socket
    // and no event flows, even to a subscribe sent right after.
    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &Claims {
            sub: "alice".into(),
            tenant: TENANT.into(),
            role: "admin".into(),
            iat: chrono::Utc::now().timestamp() - 120,
            exp: chrono::Utc::now().timestamp() - 60,
            ..Default::default()
        },
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let cases = [
        (
            "connection_init without a payload",
            json!({ "type": "connection_init" }),
            "missing",
        ),
        (
            "connection_init without a token",
            json!({ "type": "connection_init", "payload": {} }),
            "missing",
        ),
        (
            "connection_init with a malformed Authorization",
            json!({ "type": "connection_init", "payload": { "Authorization": "Basic abc" } }),
            "malformed",
        ),
        (
            "connection_init with an expired token",
            json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {expired}") } }),
            "expired",
        ),
        (
            "connection_init with a forged token",
            json!({ "type": "connection_init", "payload": { "token": "not-a-token" } }),
            "invalid token",
        ),
    ];
    for (what, init, hint) in cases {
        let mut socket = ws_connect(&probe.api).await;
        ws_send(&mut socket, init).await;
        // The client may still manage to send a subscribe before it sees the close.
        let _ = futures::SinkExt::send(
            &mut socket,
            tokio_tungstenite::tungstenite::Message::text(subscribe("1", 0).to_string()),
        )
        .await;
        let (close_code, reason) = closed_without_data(what, &mut socket).await;
        assert!(
            matches!(close_code, 4400..=4499 | 1002 | 1008),
            "{what}: closed with a client-error code (4403 recommended), got {close_code} {reason:?}"
        );
        assert!(
            reason.to_lowercase().contains(hint),
            "{what}: the close reason says why (mention {hint:?}): {close_code} {reason:?}"
        );
    }

    // A valid connection with an unknown position: an error for that subscription.
    let mut socket = ws_connect(&probe.api).await;
    ws_send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {}", probe.admin) } }),
    )
    .await;
    match ws_receive(&mut socket, Duration::from_secs(5)).await {
        Received::Json(ack) if ack["type"] == "connection_ack" => {}
        other => panic!("a valid token is acknowledged, got {other:?}"),
    }
    ws_send(&mut socket, subscribe("beyond", head + 1000)).await;
    match ws_receive(&mut socket, Duration::from_secs(5)).await {
        Received::Json(message) => {
            assert!(
                message["type"] == "error" || message["payload"]["errors"].is_array(),
                "an unknown fromPosition is an error: {message}"
            );
            let errors = if message["type"] == "error" {
                message["payload"].clone()
            } else {
                message["payload"]["errors"].clone()
            };
            assert_eq!(code(&errors[0]), "VALIDATION", "{message}");
            assert!(
                errors[0]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("no event at position"),
                "{message}"
            );
        }
        other => panic!("an unknown fromPosition is reported, got {other:?}"),
    }
    let _ = socket.close(None).await;
    probe.still_serving().await;
}

/// Reads until the server closes `socket`: nothing may arrive before the close
/// frame. Returns its code and reason.
async fn closed_without_data(what: &str, socket: &mut super::isolation::Socket) -> (u16, String) {
    let mut received = vec![];
    let closed = loop {
        match ws_receive(socket, Duration::from_secs(5)).await {
            Received::Json(message) => received.push(message),
            Received::Closed(frame) => break frame,
            Received::Nothing => {
                panic!("{what}: the server keeps the socket open; got {received:?}")
            }
        }
    };
    assert!(
        received.is_empty(),
        "{what}: nothing flows before the close (no ack, no event): {received:?}"
    );
    closed.unwrap_or_else(|| panic!("{what}: the server closes with a close frame"))
}

/// graphql-transport-ws: "If the server receives a `Subscribe` message before
/// `ConnectionAck`, it must close the socket with `4401: Unauthorized`."
async fn websocket_subscribe_before_ack_is_unauthorized(kind: Kind) {
    let probe = Probe::start(kind).await;
    let mut socket = ws_connect(&probe.api).await;
    ws_send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": {
            "query": "subscription { events(fromPosition: 0) { position } }" } }),
    )
    .await;
    let what = "subscribe without connection_init";
    let (close_code, reason) = closed_without_data(what, &mut socket).await;
    assert_eq!(
        close_code, 4401,
        "{what}: the protocol requires close code 4401 Unauthorized, got {close_code} {reason:?}"
    );
    probe.still_serving().await;
}

both_backends!(
    malformed_requests_are_refused_with_their_status,
    bad_credentials_are_unauthenticated,
    invalid_graphql_is_a_validation_error,
    refused_commands_say_why,
    streams_refuse_bad_positions_and_tokens,
    websocket_subscribe_before_ack_is_unauthorized,
);
