//! No request can starve the service: the cost of a query is bounded before
//! async-graphql validates it, fields that walk the log are limited per request,
//! each tenant has its own slots, every request has a deadline, and text
//! PostgreSQL cannot hold is refused in every argument of every operation.

use std::time::Duration;

use serde_json::{json, Value};
use workflowops::http::admission::Limits;

use super::{code, Api};
use crate::fakes::n8n::FakeN8n;
use crate::support::{both_backends, Kind};

/// `workflowops_requests_refused_total{reason=…}` from `/metrics`.
async fn refused(api: &Api, reason: &str) -> u64 {
    let text = api.metrics().await;
    let prefix = format!("workflowops_requests_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Each fragment spreads the next one twice: 2^levels copies of the innermost
/// selection once expanded, in about 60 bytes per level.
fn doubling(levels: usize) -> String {
    let mut query = String::from("query Doubling { ...F0 }\n");
    for level in 0..levels {
        query.push_str(&format!(
            "fragment F{level} on QueryRoot {{ ...F{next} ...F{next} }}\n",
            next = level + 1
        ));
    }
    query.push_str(&format!(
        "fragment F{levels} on QueryRoot {{ environments {{ id name }} }}\n"
    ));
    query
}

async fn cost_is_bounded_before_validation(kind: Kind) {
    let api = Api::start(kind).await;
    let viewer = api.token("acme", "viewer", "vera");
    let events = api.event_count().await;

    // 20, 22 and 30 levels took 0.5 s, 2 s and CPU-minutes of validation before
    // "too complex"; now each is refused by counting, before validation.
    for levels in [20, 22, 30, 60] {
        let query = doubling(levels);
        let error = api.err(&viewer, &query, json!({})).await;
        assert_eq!(code(&error), "VALIDATION", "{levels} levels: {error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("once its fragments are expanded"),
            "{error}"
        );
    }
    // the same document at a harmless depth is served
    let data = api.ok(&viewer, &doubling(3), json!({})).await;
    assert_eq!(data["environments"], json!([]));

    // 1,000 aliases of a field that walks the tenant's log
    let aliases: String = (0..1000)
        .map(|n| format!(" v{n}: verifyEventLog {{ ok checkedEvents }}"))
        .collect();
    let error = api
        .err(&viewer, &format!("{{{aliases} }}"), json!({}))
        .await;
    assert_eq!(code(&error), "VALIDATION", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("at most 1"),
        "{error}"
    );
    // two of them through a fragment spread twice
    let twice = "{ ...V ...W } fragment V on QueryRoot { a: verifyEventLog { ok } } \
                 fragment W on QueryRoot { b: verifyEventLog { ok } }";
    assert_eq!(
        code(&api.err(&viewer, twice, json!({})).await),
        "VALIDATION"
    );
    // one is fine
    let one = api
        .ok(
            &viewer,
            "{ verifyEventLog { ok checkedEvents } }",
            json!({}),
        )
        .await;
    assert_eq!(one["verifyEventLog"]["ok"], true);
    // eleven history replays are too many, ten are not
    let replays = |n: usize| -> String {
        let fields: String = (0..n)
            .map(|i| format!(" h{i}: eventHistory(aggregateType: \"incident\", aggregateId: \"i{i}\") {{ position }}"))
            .collect();
        format!("{{{fields} }}")
    };
    let error = api.err(&viewer, &replays(11), json!({})).await;
    assert!(
        error["message"].as_str().unwrap().contains("at most 10"),
        "{error}"
    );
    api.ok(&viewer, &replays(10), json!({})).await;

    // tokens and bracket nesting are counted before the parser runs
    let many = format!("{{ {} }}", "a ".repeat(25_000));
    let error = api.err(&viewer, &many, json!({})).await;
    assert!(
        error["message"].as_str().unwrap().contains("tokens"),
        "{error}"
    );
    let nested = format!("{}{}", "{ a ".repeat(30_000), "}".repeat(30_000));
    let error = api.err(&viewer, &nested, json!({})).await;
    assert!(
        error["message"].as_str().unwrap().contains("recursion"),
        "{error}"
    );

    assert!(
        refused(&api, "cost").await >= 9,
        "refusals are counted in /metrics"
    );
    assert_eq!(api.event_count().await, events, "nothing was appended");
    api.stop().await;
}

/// One introspected argument of a root field.
struct Argument {
    operation: &'static str,
    field: String,
    name: String,
}

/// Every argument of every root field of the served schema.
async fn every_argument(api: &Api, token: &str) -> Vec<Argument> {
    let data = api
        .ok(
            token,
            "{ __schema {
                queryType { fields { name args { name } } }
                mutationType { fields { name args { name } } }
                subscriptionType { fields { name args { name } } } } }",
            json!({}),
        )
        .await;
    let mut arguments = Vec::new();
    for (root, operation) in [
        ("queryType", "query"),
        ("mutationType", "mutation"),
        ("subscriptionType", "subscription"),
    ] {
        for field in data["__schema"][root]["fields"].as_array().unwrap() {
            for arg in field["args"].as_array().unwrap() {
                arguments.push(Argument {
                    operation,
                    field: field["name"].as_str().unwrap().to_string(),
                    name: arg["name"].as_str().unwrap().to_string(),
                });
            }
        }
    }
    arguments
}

async fn nul_is_refused_in_every_argument(kind: Kind) {
    let api = Api::start(kind).await;
    let admin = api.token("acme", "admin", "ada");
    super::register_environment(&api, &admin, "prod", "PRODUCTION").await;
    let events = api.event_count().await;

    let arguments = every_argument(&api, &admin).await;
    // guard: the walk covers the schema (the queries of the issue are among them)
    assert!(arguments.len() > 100, "{} arguments", arguments.len());
    for (field, arg) in [
        ("eventHistory", "aggregateId"),
        ("aggregateAt", "aggregateType"),
        ("auditTrail", "actor"),
        ("incidents", "environmentId"),
        ("untrackedWorkflows", "environmentId"),
        ("workflowMatrix", "search"),
        ("workflowMatrix", "environmentIds"),
        ("promotions", "status"),
        ("deployments", "promotionId"),
    ] {
        assert!(
            arguments.iter().any(|a| a.field == field && a.name == arg),
            "{field}({arg}) is in the schema"
        );
    }
    for argument in &arguments {
        // literal NUL, whatever the argument's type: the check runs before validation
        let query = format!(
            "{} {{ {}({}: \"bad\\u0000text\") {{ __typename }} }}",
            argument.operation, argument.field, argument.name
        );
        let error = api.err(&admin, &query, json!({})).await;
        assert_eq!(
            code(&error),
            "VALIDATION",
            "{}({}): {error}",
            argument.field,
            argument.name
        );
        assert_eq!(
            error["extensions"]["field"],
            argument.name.as_str(),
            "{error}"
        );
        // the same through a variable
        let query = format!(
            "{}($v: String) {{ {}({}: $v) {{ __typename }} }}",
            argument.operation, argument.field, argument.name
        );
        let error = api
            .err(&admin, &query, json!({ "v": "bad\u{0}text" }))
            .await;
        assert_eq!(code(&error), "VALIDATION", "{error}");
        assert_eq!(error["extensions"]["field"], "$v", "{error}");
    }
    // nested in a list and in an input object
    let error = api
        .err(
            &admin,
            "{ workflowMatrix(environmentIds: [\"prod\", \"p\\u0000\"]) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&error), "VALIDATION", "{error}");
    let error = api
        .err(
            &admin,
            "mutation($git: GitInput) { updateEnvironment(id: \"prod\", git: $git) { position } }",
            json!({ "git": { "provider": "LOCAL", "repository": "/tmp/r\u{0}", "branch": "main", "folder": "w" } }),
        )
        .await;
    assert_eq!(code(&error), "VALIDATION", "{error}");
    assert_eq!(error["extensions"]["field"], "$git.repository", "{error}");
    // a clean value of the same query is served
    let data = api
        .ok(
            &admin,
            "{ workflowMatrix(search: \"bad text\") { nodes { canonicalId } } }",
            json!({}),
        )
        .await;
    assert_eq!(data["workflowMatrix"]["nodes"], json!([]));
    assert_eq!(api.event_count().await, events, "nothing was appended");
    api.stop().await;
}

const API_KEY: &str = "n8n_api_key_hardening_0123456789";

/// Registers `prod` with the fake n8n; a sync then reads it.
async fn with_n8n(api: &Api, admin: &str) -> FakeN8n {
    let n8n = FakeN8n::start(API_KEY).await;
    n8n.seed(3);
    let registered = api
        .gql(
            admin,
            "mutation($url: String!, $key: String!) {
               registerEnvironment(id: \"prod\", name: \"Prod\", class: PRODUCTION,
                 n8nBaseUrl: $url, n8nApiKey: $key) { position } }",
            json!({ "url": n8n.base_url(), "key": API_KEY }),
        )
        .await;
    assert!(registered.get("errors").is_none(), "{registered}");
    n8n
}

const SYNC: &str = "mutation { syncEnvironment(environmentId: \"prod\") { position discovered } }";

/// POSTs and returns (status, Retry-After, x-request-id, body).
async fn post(api: &Api, token: &str, query: &str) -> (u16, Option<String>, String, Value) {
    let response = api
        .http
        .post(format!("{}/graphql", api.base))
        .bearer_auth(token)
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let retry_after = header("retry-after");
    let request_id = header("x-request-id").unwrap_or_default();
    let status = response.status().as_u16();
    (
        status,
        retry_after,
        request_id,
        response.json().await.unwrap(),
    )
}

async fn a_busy_tenant_waits_alone(kind: Kind) {
    let api = Api::start_with_limits(
        kind,
        Limits {
            per_tenant: 1,
            per_tenant_expensive: 1,
            queue_wait: Duration::from_millis(200),
            deadline: Duration::from_secs(30),
            ..Limits::default()
        },
    )
    .await;
    let acme = api.token("acme", "admin", "ada");
    let other = api.token("globex", "viewer", "gus");
    let n8n = with_n8n(&api, &acme).await;
    // acme's one slot is taken by a sync whose n8n answers slowly
    n8n.slow_next(1, Duration::from_millis(2500));
    let sync = {
        let (api_base, http, acme) = (api.base.clone(), api.http.clone(), acme.clone());
        tokio::spawn(async move {
            http.post(format!("{api_base}/graphql"))
                .bearer_auth(acme)
                .json(&json!({ "query": SYNC }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // wait until n8n has been asked (the sync holds acme's slot)
    for _ in 0..200 {
        if n8n.request_count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(n8n.request_count() > 0, "the sync reached n8n");
    let (status, retry_after, _, body) = post(&api, &acme, "{ environments { id } }").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{body}"
    );
    assert_eq!(body["errors"][0]["extensions"]["retryable"], true, "{body}");
    // another tenant is served meanwhile
    let data = api.ok(&other, "{ environments { id } }", json!({})).await;
    assert_eq!(data["environments"], json!([]));
    // the sync completes, and acme is served again
    let synced = sync.await.unwrap();
    assert!(synced.get("errors").is_none(), "{synced}");
    assert_eq!(synced["data"]["syncEnvironment"]["discovered"], 3);
    let data = api.ok(&acme, "{ environments { id } }", json!({})).await;
    assert_eq!(data["environments"][0]["id"], "prod");
    assert!(refused(&api, "tenant_concurrency").await >= 1);
    api.stop().await;
}

async fn a_mutation_past_its_deadline_runs_to_its_end(kind: Kind) {
    let api = Api::start_with_limits(
        kind,
        Limits {
            deadline: Duration::from_millis(400),
            ..Limits::default()
        },
    )
    .await;
    let admin = api.token("acme", "admin", "ada");
    let n8n = with_n8n(&api, &admin).await;
    n8n.slow_next(1, Duration::from_millis(1500));
    let (status, retry_after, request_id, body) = post(&api, &admin, SYNC).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["code"], "DEADLINE_EXCEEDED", "{body}");
    assert_eq!(error["extensions"]["retryable"], true, "{body}");
    assert!(
        error["message"].as_str().unwrap().contains(&request_id),
        "the answer names the correlation id: {body}"
    );
    // the sync was not cut short: its events arrive, all with that correlation id
    let mut linked = Vec::new();
    for _ in 0..100 {
        // (this service's deadline is 0.4 s for every request: under load a read
        // may miss it too, and is asked again)
        let (status, body) = api
            .post(
                Some(&admin),
                json!({ "query": "{ auditTrail(first: 200) { nodes { correlationId eventType } } }" }),
            )
            .await;
        if status != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let data = &body["data"];
        linked = data["auditTrail"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["correlationId"] == request_id.as_str())
            .cloned()
            .collect();
        if linked
            .iter()
            .any(|n| n["eventType"] == "environment.sync_recorded")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        linked
            .iter()
            .filter(|n| n["eventType"] == "mapping.discovered")
            .count()
            == 3
            && linked
                .iter()
                .any(|n| n["eventType"] == "environment.sync_recorded"),
        "the whole sync was recorded: {linked:?}"
    );
    assert!(refused(&api, "deadline").await >= 1);
    api.stop().await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message that is not a ping or a `complete`.
async fn ws_next(socket: &mut Socket) -> Value {
    use futures::StreamExt;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an answer within 10 s")
            .expect("the socket is open")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            // "complete" closes an operation already answered
            if value["type"] != "ping" && value["type"] != "complete" {
                return value;
            }
        }
    }
}

/// Operations over the WebSocket pass the same checks before validation.
async fn websocket_operations_are_checked_too(kind: Kind) {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let api = Api::start(kind).await;
    let viewer = api.token("acme", "viewer", "vera");
    let mut request = format!("ws://{}/graphql/ws", api.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init = json!({ "type": "connection_init",
        "payload": { "Authorization": format!("Bearer {viewer}") } });
    socket.send(Message::text(init.to_string())).await.unwrap();
    assert_eq!(ws_next(&mut socket).await["type"], "connection_ack");
    let cases = [
        (doubling(30), json!({}), "once its fragments are expanded"),
        (
            "query($s: String) { workflowMatrix(search: $s) { nodes { canonicalId } } }"
                .to_string(),
            json!({ "s": "a\u{0}b" }),
            "NUL",
        ),
    ];
    for (n, (query, variables, hint)) in cases.into_iter().enumerate() {
        let subscribe = json!({ "id": n.to_string(), "type": "subscribe",
            "payload": { "query": query, "variables": variables } });
        socket
            .send(Message::text(subscribe.to_string()))
            .await
            .unwrap();
        let answer = ws_next(&mut socket).await;
        let errors = match answer["type"].as_str() {
            Some("error") => answer["payload"].clone(),
            Some("next") => answer["payload"]["errors"].clone(),
            _ => panic!("unexpected {answer}"),
        };
        assert!(errors.to_string().contains(hint), "{hint}: {answer}");
        assert!(errors.to_string().contains("VALIDATION"), "{answer}");
    }
    // a plain query is answered
    let subscribe = json!({ "id": "ok", "type": "subscribe",
        "payload": { "query": "{ environments { id } }" } });
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    let answer = ws_next(&mut socket).await;
    assert_eq!(answer["type"], "next", "{answer}");
    assert_eq!(
        answer["payload"]["data"]["environments"],
        json!([]),
        "{answer}"
    );
    let _ = socket.close(None).await;
    api.stop().await;
}

both_backends!(
    cost_is_bounded_before_validation,
    nul_is_refused_in_every_argument,
    a_busy_tenant_waits_alone,
    a_mutation_past_its_deadline_runs_to_its_end,
    past_capacity_is_refused_early_and_recovers_at_once,
    websocket_operations_are_checked_too,
);

/// PostgreSQL can hold a query deterministically (a table lock): a query past its
/// deadline is cancelled and frees its slot, and so is one whose client went away.
mod postgres_only {
    use super::*;

    async fn lock(api: &Api, table: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let eventstore::Store::Postgres(pg) = &api.store.store else {
            panic!("PostgreSQL only")
        };
        let mut tx = pg.pool.begin().await.unwrap();
        sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            .execute(&mut *tx)
            .await
            .unwrap();
        tx
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_past_their_deadline_or_abandoned_are_cancelled() {
        let api = Api::start_with_limits(
            Kind::Postgres,
            Limits {
                per_tenant: 4,
                per_tenant_expensive: 1,
                queue_wait: Duration::from_millis(300),
                deadline: Duration::from_millis(1500),
                ..Limits::default()
            },
        )
        .await;
        let admin = api.token("acme", "admin", "ada");
        super::super::register_environment(&api, &admin, "prod", "PRODUCTION").await;
        api.ok(&admin, "{ environments { id } }", json!({})).await;

        // a query held by a lock past its deadline: cancelled, retryable
        let held = lock(&api, "rm_environments").await;
        let (status, _, _, body) = post(&api, &admin, "{ environments { id } }").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "DEADLINE_EXCEEDED");
        held.rollback().await.unwrap();
        // its slot is free again: the same query is served
        let data = api.ok(&admin, "{ environments { id } }", json!({})).await;
        assert_eq!(data["environments"][0]["id"], "prod");

        // an expensive query whose client goes away frees the tenant's expensive
        // slot: the next one is admitted (it would be RATE_LIMITED otherwise)
        let held = lock(&api, "events").await;
        let impatient = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let gone = impatient
            .post(format!("{}/graphql", api.base))
            .bearer_auth(&admin)
            .json(&json!({ "query": "{ verifyEventLog { ok } }" }))
            .send()
            .await;
        assert!(gone.is_err(), "the client gave up");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let next = {
            let (base, http, admin) = (api.base.clone(), api.http.clone(), admin.clone());
            tokio::spawn(async move {
                let response = http
                    .post(format!("{base}/graphql"))
                    .bearer_auth(admin)
                    .json(&json!({ "query": "{ verifyEventLog { ok checkedEvents } }" }))
                    .send()
                    .await
                    .unwrap();
                (
                    response.status().as_u16(),
                    response.json::<Value>().await.unwrap(),
                )
            })
        };
        // longer than the queue wait: a refusal would have come by now
        tokio::time::sleep(Duration::from_millis(700)).await;
        held.rollback().await.unwrap();
        let (status, body) = next.await.unwrap();
        assert_eq!(status, 200, "admitted, not refused: {body}");
        assert_eq!(body["data"]["verifyEventLog"]["ok"], true, "{body}");
        assert!(refused(&api, "deadline").await >= 1);
        api.stop().await;
    }
}

/// Driven past its capacity for a few seconds (64 clients of three tenants against
/// two requests in flight, no queueing), the service refuses early and clearly (503 `OVERLOADED`,
/// retryable, `Retry-After`) instead of queueing without end; every client is still
/// served now and then (none is starved), and the first request after the storm is
/// answered as if nothing had happened.
async fn past_capacity_is_refused_early_and_recovers_at_once(kind: Kind) {
    let api = Api::start_with_limits(
        kind,
        Limits {
            in_flight: 2,
            // the tenants' own bounds out of the way: only the process's applies
            per_tenant: 64,
            // No wait for a slot: a request that finds both taken is refused at
            // once, so the storm is past capacity whatever the machine's speed (with
            // 10 ms, a fast machine answered every request within the wait, cached
            // answers take well under a millisecond, and nothing was refused).
            queue_wait: Duration::ZERO,
            deadline: Duration::from_secs(10),
            ..Limits::default()
        },
    )
    .await;
    let tokens: Vec<String> = ["acme", "globex", "initech"]
        .iter()
        .map(|tenant| api.token(tenant, "admin", "ada"))
        .collect();
    for token in &tokens {
        let data = api
            .ok(
                token,
                "mutation { registerEnvironment(id: \"prod\", name: \"Production\", \
                 class: PRODUCTION, n8nBaseUrl: \"https://n8n.example.com\") { position } }",
                json!({}),
            )
            .await;
        let position = data["registerEnvironment"]["position"].as_i64().unwrap();
        let seen = api
            .ok(
                token,
                "query($p: Int) { environments(minPosition: $p) { id } }",
                json!({ "p": position }),
            )
            .await;
        assert_eq!(seen["environments"][0]["id"], "prod", "{seen}");
    }
    let query = "{ environments { id name driftStatus } incidents(first: 20) { nodes { id } } }";
    let storm = Duration::from_secs(3);
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..64)
        .map(|client| {
            let (http, base) = (api.http.clone(), api.base.clone());
            let token = tokens[client % tokens.len()].clone();
            tokio::spawn(async move {
                let (mut served, mut refused, mut other) = (0, 0, vec![]);
                while started.elapsed() < storm {
                    let response = http
                        .post(format!("{base}/graphql"))
                        .bearer_auth(&token)
                        .json(&json!({ "query": query }))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let body: Value = response.json().await.unwrap();
                    match status {
                        200 if body.get("errors").is_none() => {
                            assert_eq!(body["data"]["environments"][0]["id"], "prod", "{body}");
                            served += 1;
                        }
                        503 => {
                            let error = &body["errors"][0];
                            assert_eq!(error["extensions"]["code"], "OVERLOADED", "{body}");
                            assert_eq!(error["extensions"]["retryable"], true, "{body}");
                            assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
                            refused += 1;
                        }
                        _ => other.push(format!("{status} {body}")),
                    }
                }
                (served, refused, other)
            })
        })
        .collect();
    let (mut served, mut refused_total) = (0, 0);
    for client in clients {
        let (s, r, other) = client.await.unwrap();
        assert!(other.is_empty(), "only answers or refusals: {other:?}");
        assert!(
            s > 0,
            "no client is starved: one got {s} answers and {r} refusals"
        );
        served += s;
        refused_total += r;
    }
    assert!(
        served > 0 && refused_total > 0,
        "{served} served, {refused_total} refused"
    );
    assert!(refused(&api, "overloaded").await >= refused_total);
    // at once afterwards: every tenant is answered, first time
    for token in &tokens {
        let (status, retry_after, _, body) = post(&api, token, query).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            retry_after.is_none() && body.get("errors").is_none(),
            "{body}"
        );
    }
    api.stop().await;
}
