//! API benchmark: the real service over HTTP and WebSocket, in-process on
//! 127.0.0.1:0, with concurrent clients.
//!
//!   cargo run --release --example bench_api -- --backend sqlite
//!   cargo run --release --example bench_api -- --backend postgres
//!   # populate once, then measure again on the same database:
//!   cargo run --release --example bench_api -- --backend postgres --database wfo_bench_api
//!   cargo run --release --example bench_api -- --backend sqlite --database /tmp/wfo_bench_api.db
//!
//! PostgreSQL: a fresh database is created on `--pg-url`'s server and dropped after
//! (kept with `--database`). SQLite: a file in a temporary directory (or `--database`).
//! The service is `Application::with_store` with the service's default pool sizes (16
//! on PostgreSQL, 4 on SQLite) and projector options; tokens are minted with a fixed
//! secret. Progress goes to stderr; the last line of stdout is one JSON object.
//!
//! **Population** (not timed), through `Domain` with `--clients` concurrent tasks, the
//! same data as `bench_projections`' setup (`examples/common/matrix_data.rs`): tenant
//! `bench`, 10 environments (`--environments`), 1,000 canonical workflows
//! (`--canonicals`) with a Git version, and one linked mapping per (environment,
//! canonical workflow) = 10,000 matrix cells, about one in seven drifted (discovered
//! holding Git's content and auto-linked, then observed with content of its own: n8n's
//! hash differs from Git), the rest in sync. Then it waits until every projection and
//! reactor has applied the whole log. With `--database` holding events already,
//! population is skipped (a log populated by `bench_projections` at the same size works
//! too).
//!
//! **1. matrix** — `--clients` concurrent HTTP clients (one connection pool each) POST
//! the `workflowMatrix` query with API.md's fields; latency is measured client-side,
//! from sending the request to having read the whole body. Three queries, each after a
//! warm-up: the first page (`first: --page`), a deep page (`after:` the cursor at row
//! `--deep-after`, 500) and a filtered page (3 environments + `search: "sync"` +
//! `onlyDrift: true`).
//! Every response is checked (HTTP 200, no errors, the expected number of rows, one
//! cell per environment, linked cells; a timed response byte-identical to the last
//! one a client checked passes as that one did); a response that fails counts in
//! `failures` by code. Before timing, the whole matrix is paged through over HTTP and compared with
//! what the population wrote (`check_failures`). Targets (issue 17): the first page
//! p99 ≤ 15 ms from the cache, ≤ 30 ms executed (`first_page_uncached`).
//! Identical queries are answered from the service's response cache while the read
//! models do not change (as a dashboard polling the first page is); `first_page_uncached`
//! makes every request's text unique, so each one executes (SQL, GraphQL, JSON).
//!
//! **2. mutations** — tenant `bench-ops` (so the matrix keeps its 10 columns), one
//! environment per incident (an environment holds one open incident at a time). Three
//! passes, each over `--lifecycles` fresh incidents opened first with
//! `workflows::incident_slot::report_drift` (untimed, not counted) and one more per
//! client for its untimed warm-up; `--clients` clients then drive each incident
//! through acknowledgeIncident → stabilizeIncident → reconcileIncident(REVERT) →
//! closeIncident:
//! - `read_back` (the top-level figures): each mutation selects
//!   `position incident { id status }`, so the payload waits until the incidents
//!   projection has applied the command;
//! - `no_read_back`: each selects `position` only;
//! - `bus`: the same four commands through `Domain` in process (no HTTP, no
//!   GraphQL), what `bench_commands` measures.
//!
//! Reported per pass: transitions/s over the pass's wall time, latency per transition,
//! errors by code, `cpu_us_per_transition` (CPU µs per transition of the whole
//! machine, of this process, elsewhere: the database server mostly; with the
//! hypervisor's steal: a figure far steadier than the rate for comparing builds); and `no_read_back_vs_bus`, the second pass's rate over the
//! third's. Targets (issue 17): ≥ 1,500 transitions/s with the read-back, p99 ≤ 20
//! ms; without it ≥ 0.6 × the bus.
//!
//! **3. delivery** — one `events` subscription over graphql-transport-ws and one SSE
//! stream (`GET /events`), both of tenant `bench` from the current head; then `--rate`
//! mapping observations per second through `Domain` for `--seconds`. Latency per event
//! = the subscriber's receive time minus the event's `recordedAt` (the server's clock,
//! the same machine; set when the command runs, before the append commits, so an upper
//! bound), and also minus the time the append returned to the appender. The events each
//! subscriber received are compared with the log (same events, same order, no gap, no
//! duplicate). Target: p99 ≤ 25 ms.
//!
//! **Smoke** (`--smoke`): every phase and every check at a tiny size (3 environments
//! × 80 canonical workflows, 4 clients, a hundred requests, 12 lifecycles, 2 s of
//! delivery at 50 commands/s), for CI in a debug build; sizes given with it win.
//!
//! **Fails** (non-zero exit, after the JSON, the problems on stderr and in
//! `problems`) when the workload did not produce what is measured: a population
//! command failed; the matrix over HTTP is not what the population wrote; the
//! filtered page has no row to find (the population planted no drift matching it);
//! any timed matrix answer has fewer (or other) rows than expected; a phase has no
//! samples; a lifecycle's mutation failed; a subscriber missed, repeated or reordered
//! an event, or received none. A missed target is reported in `targets`, not a
//! failure.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use workflowops::workflows::incident_slot::report_drift;

use aggregates::environment::EnvironmentClass;
use aggregates::incident::{AffectedWorkflow, IncidentCommand, IncidentPolicy, IncidentStatus};
use aggregates::kernel::command::Role;
use aggregates::kernel::ids::LocalId;
use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use workflowops::command::domain::Domain;

#[path = "common/bench_store.rs"]
mod bench_store;
#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/matrix_data.rs"]
mod matrix_data;
#[path = "common/outcome.rs"]
mod outcome;
use bench_store::BenchStore;
use matrix_data::*;
use outcome::{require, require_eq, require_some};

// The same allocator as the service binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(args_override_self = true)]
struct Args {
    // --backend, --smoke, --environments, --canonicals (shared: matrix_data.rs)
    #[command(flatten)]
    population: PopulationArgs,
    /// The deep page starts after this many rows (a multiple of `--page`).
    #[arg(long, default_value_t = 500)]
    deep_after: usize,
    /// Concurrent HTTP clients (matrix and mutations), and population tasks.
    #[arg(short = 'c', long, default_value_t = 16)]
    clients: usize,
    /// Timed requests of the matrix first page (all clients together).
    #[arg(short = 'n', long, default_value_t = 4000)]
    requests: usize,
    /// Timed requests of the deep and of the filtered page.
    #[arg(long, default_value_t = 1000)]
    other_requests: usize,
    /// Untimed warm-up requests before each matrix query.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Matrix page size (`first`).
    #[arg(long, default_value_t = 50)]
    page: usize,
    /// Incident lifecycles (4 timed transitions each) in each mutation pass. 2,000
    /// keeps the shortest pass (the bus) above a second, so one `ANALYZE` or
    /// vacuum of a read-model table inside it does not decide the ratio.
    #[arg(long, default_value_t = 2000)]
    lifecycles: usize,
    /// Commands per second appended during the delivery measurement.
    #[arg(long, default_value_t = 300)]
    rate: u32,
    /// Duration of the delivery measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long)]
    skip_matrix: bool,
    #[arg(long)]
    skip_mutations: bool,
    #[arg(long)]
    skip_delivery: bool,
    /// Connection pool size (default: as the service, 16 on PostgreSQL and 4 on SQLite).
    #[arg(long)]
    pool: Option<u32>,
    /// Keep the populated database for later runs: on PostgreSQL the name of a
    /// database on `--pg-url`'s server, on SQLite a file path. Reused as it is
    /// (population skipped) when it already holds events.
    #[arg(long)]
    database: Option<String>,
    /// Server to create the benchmark database on.
    #[arg(
        long,
        env = "WORKFLOWOPS_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_url: String,
}

/// `--smoke`: the sizes put before the arguments given.
const SMOKE: &[&str] = &[
    "--environments",
    "3",
    "--canonicals",
    "80",
    "--clients",
    "4",
    "--requests",
    "100",
    "--other-requests",
    "40",
    "--warmup",
    "8",
    "--deep-after",
    "50",
    "--lifecycles",
    "12",
    "--rate",
    "50",
    "--seconds",
    "2",
];

/// The signing secret of the benchmark's service.
const SECRET: &[u8] = b"bench-api-secret-0123456789abcdef-0123456789";
/// The mutation phase's tenant (its environments stay out of `bench`'s matrix).
const OPS_TENANT: &str = "bench-ops";
// Issue 17, items 1, 3 and 4.
const MATRIX_TARGET_MS: f64 = 15.0;
const MATRIX_UNCACHED_TARGET_MS: f64 = 30.0;
const DELIVERY_TARGET_MS: f64 = 25.0;
const MUTATIONS_TARGET_PER_SEC: f64 = 1500.0;
const MUTATIONS_TARGET_P99_MS: f64 = 20.0;
/// Mutations without the read-back over the same commands through the bus.
const MUTATIONS_TARGET_VS_BUS: f64 = 0.6;
/// Longest a subscriber may take to deliver the last appended event.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

const MATRIX_QUERY: &str = "query Matrix($first: Int, $after: String, $environmentIds: [ID!], $search: String, $onlyDrift: Boolean!) {
  workflowMatrix(first: $first, after: $after, environmentIds: $environmentIds, search: $search, onlyDrift: $onlyDrift) {
    edges { node { canonicalId slug name cells { environmentId mappingStatus syncState n8nWorkflowId envContentHash gitContentHash since } } }
    pageInfo { hasNextPage endCursor }
  }
}";

const EVENT_FIELDS: &str =
    "position aggregateType aggregateId sequence eventType eventVersion payload metadata recordedAt hash";

/// POSTs a GraphQL request; the time is from sending to having the whole body.
async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> (Duration, Result<Value, (String, String)>) {
    let (elapsed, answer) = post_bytes(http, url, token, body).await;
    (
        elapsed,
        answer.and_then(|(status, bytes)| answer_value(status, &bytes)),
    )
}

/// [`post`], the answer's status and body not parsed yet.
async fn post_bytes(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> (Duration, Result<(u16, bytes::Bytes), (String, String)>) {
    let started = Instant::now();
    let response = http.post(url).bearer_auth(token).json(body).send().await;
    let (status, bytes) = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.bytes().await)
        }
        Err(e) => return (started.elapsed(), Err(("TRANSPORT".into(), e.to_string()))),
    };
    let elapsed = started.elapsed();
    match bytes {
        Ok(bytes) => (elapsed, Ok((status, bytes))),
        Err(e) => (elapsed, Err(("TRANSPORT".into(), e.to_string()))),
    }
}

/// A GraphQL answer as a value, or its first error's code and the error.
fn answer_value(status: u16, bytes: &[u8]) -> Result<Value, (String, String)> {
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return Err(("BAD_JSON".into(), e.to_string())),
    };
    if let Some(error) = value.get("errors").and_then(|e| e.get(0)) {
        let code = error["extensions"]["code"]
            .as_str()
            .unwrap_or("<none>")
            .to_string();
        return Err((code, error.to_string()));
    }
    if status != 200 {
        return Err((format!("HTTP_{status}"), value.to_string()));
    }
    Ok(value)
}

// ----------------------------------------------------------------------------------
// 1. Matrix

/// One matrix query and what each of its responses must hold.
#[derive(Clone)]
struct MatrixRequest {
    body: Value,
    rows: usize,
    cells_per_row: usize,
    /// Every row has a cell that is not in sync (the `onlyDrift` filter).
    drift_in_every_row: bool,
    /// Make every request's text unique (a trailing comment), so the service's
    /// response cache never answers: the cost of executing the query.
    distinct: bool,
}

impl MatrixRequest {
    fn body(&self, n: usize) -> std::borrow::Cow<'_, Value> {
        if !self.distinct {
            return std::borrow::Cow::Borrowed(&self.body);
        }
        let mut body = self.body.clone();
        let query = format!(
            "{}\n# request {n}",
            body["query"].as_str().unwrap_or_default()
        );
        body["query"] = json!(query);
        std::borrow::Cow::Owned(body)
    }
}

fn matrix_body(
    first: usize,
    after: Option<&str>,
    environments: Option<Vec<String>>,
    search: Option<&str>,
    only_drift: bool,
) -> Value {
    json!({
        "query": MATRIX_QUERY,
        "operationName": "Matrix",
        "variables": {
            "first": first,
            "after": after,
            "environmentIds": environments,
            "search": search,
            "onlyDrift": only_drift,
        }
    })
}

/// What [`check_matrix_answer`] reads of a matrix answer, borrowed from its body:
/// the clients share the service's two cores, and parsing each 100 KB answer into a
/// `serde_json::Value` (a map per object) cost them about a fifth of the machine.
#[derive(serde::Deserialize)]
struct MatrixAnswer<'a> {
    #[serde(borrow)]
    data: Option<MatrixAnswerData<'a>>,
    errors: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct MatrixAnswerData<'a> {
    #[serde(rename = "workflowMatrix", borrow)]
    matrix: MatrixAnswerPage<'a>,
}

#[derive(serde::Deserialize)]
struct MatrixAnswerPage<'a> {
    #[serde(borrow)]
    edges: Vec<MatrixAnswerEdge<'a>>,
}

#[derive(serde::Deserialize)]
struct MatrixAnswerEdge<'a> {
    #[serde(borrow)]
    node: MatrixAnswerRow<'a>,
}

#[derive(serde::Deserialize)]
struct MatrixAnswerRow<'a> {
    #[serde(rename = "canonicalId", borrow)]
    canonical_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    cells: Vec<MatrixAnswerCell<'a>>,
}

#[derive(serde::Deserialize)]
struct MatrixAnswerCell<'a> {
    #[serde(rename = "mappingStatus", borrow)]
    mapping_status: std::borrow::Cow<'a, str>,
    #[serde(rename = "syncState", borrow)]
    sync_state: std::borrow::Cow<'a, str>,
}

/// [`check_matrix`] on an answer's body, read into [`MatrixAnswer`]; an answer that
/// does not read so (an error, another shape) is read as a value and checked as
/// before, so it fails with the same code and description.
fn check_matrix_answer(
    request: &MatrixRequest,
    status: u16,
    bytes: &[u8],
) -> Result<(), (String, String)> {
    let answer = match serde_json::from_slice::<MatrixAnswer>(bytes) {
        Ok(MatrixAnswer {
            data: Some(data),
            errors: None,
        }) if status == 200 => data.matrix,
        _ => return check_matrix(request, &answer_value(status, bytes)?),
    };
    let shape = |detail: String| Err(("SHAPE".to_string(), detail));
    if answer.edges.len() != request.rows {
        return shape(format!(
            "{} rows, expected {}",
            answer.edges.len(),
            request.rows
        ));
    }
    for MatrixAnswerEdge { node: row } in &answer.edges {
        let id = row.canonical_id.as_deref().unwrap_or("null");
        if row.cells.len() != request.cells_per_row {
            return shape(format!(
                "row {id} has {} cells, expected {}",
                row.cells.len(),
                request.cells_per_row
            ));
        }
        if row.cells.iter().any(|c| c.mapping_status != "LINKED") {
            return shape(format!("row {id} has a cell that is not linked"));
        }
        if request.drift_in_every_row && row.cells.iter().all(|c| c.sync_state == "IN_SYNC") {
            return shape(format!("row {id} is in sync everywhere"));
        }
    }
    Ok(())
}

/// Checks one response; returns the failure code and a description.
fn check_matrix(request: &MatrixRequest, data: &Value) -> Result<(), (String, String)> {
    let edges = data["data"]["workflowMatrix"]["edges"]
        .as_array()
        .ok_or_else(|| ("SHAPE".to_string(), "no edges".to_string()))?;
    if edges.len() != request.rows {
        return Err((
            "SHAPE".into(),
            format!("{} rows, expected {}", edges.len(), request.rows),
        ));
    }
    for edge in edges {
        let cells = edge["node"]["cells"].as_array().map_or(&[][..], |c| c);
        if cells.len() != request.cells_per_row {
            return Err((
                "SHAPE".into(),
                format!(
                    "row {} has {} cells, expected {}",
                    edge["node"]["canonicalId"],
                    cells.len(),
                    request.cells_per_row
                ),
            ));
        }
        if cells.iter().any(|c| c["mappingStatus"] != "LINKED") {
            return Err((
                "SHAPE".into(),
                format!(
                    "row {} has a cell that is not linked",
                    edge["node"]["canonicalId"]
                ),
            ));
        }
        if request.drift_in_every_row && cells.iter().all(|c| c["syncState"] == "IN_SYNC") {
            return Err((
                "SHAPE".into(),
                format!("row {} is in sync everywhere", edge["node"]["canonicalId"]),
            ));
        }
    }
    Ok(())
}

/// `clients` clients send `warmup` then `total` requests (shared counters); returns
/// latency figures, throughput and failures.
async fn load_matrix(
    base: &str,
    token: &str,
    request: MatrixRequest,
    clients: usize,
    warmup: usize,
    total: usize,
) -> anyhow::Result<(Value, f64, usize)> {
    let url = format!("{base}/graphql");
    let request = Arc::new(request);
    let warm = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, token, request) = (url.clone(), token.to_string(), request.clone());
            let (warm, next, barrier) = (warm.clone(), next.clone(), barrier.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut failures = Failures::default();
                loop {
                    let n = warm.fetch_add(1, Ordering::Relaxed);
                    if n >= warmup {
                        break;
                    }
                    let _ = post(&http, &url, &token, &request.body(n)).await;
                }
                barrier.wait().await;
                let mut samples = vec![];
                // The last answer that passed the checks: an answer equal to it byte for
                // byte passes them as well, and comparing costs the clients far less of
                // the machine they share with the service than reading 150 KB again.
                let mut verified: Option<bytes::Bytes> = None;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let body = request.body(warmup + n);
                    let (elapsed, result) = post_bytes(&http, &url, &token, &body).await;
                    samples.push(ms(elapsed));
                    let checked = result.and_then(|(status, bytes)| {
                        if status == 200 && verified.as_ref() == Some(&bytes) {
                            return Ok(());
                        }
                        check_matrix_answer(&request, status, &bytes)?;
                        verified = Some(bytes);
                        Ok(())
                    });
                    if let Err((code, detail)) = checked {
                        failures.add(code, &detail);
                    }
                }
                (samples, failures)
            })
        })
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    let mut samples = Vec::with_capacity(total);
    let mut failures = Failures::default();
    for task in tasks {
        let (s, f) = task.await?;
        samples.extend(s);
        failures.merge(f);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut v = latency(samples);
    let p99 = v["p99_ms"].as_f64().unwrap_or(f64::MAX);
    v["requests_per_sec"] = json!((total as f64 / seconds).round());
    v["seconds"] = json!(round3(seconds));
    v["rows"] = json!(request.rows);
    v["cells_per_row"] = json!(request.cells_per_row);
    v["failures"] = json!(failures.total());
    v["failures_by_code"] = failures.json();
    Ok((v, p99, failures.total()))
}

async fn measure_matrix(service: &Service, args: &Args) -> anyhow::Result<Value> {
    let token = service.token(TENANT, "viewer", "bench-reader")?;
    let http = reqwest::Client::new();
    let url = format!("{}/graphql", service.base);
    let page = args.page;
    let mut check_failures = 0;
    let mut check = |ok: bool, what: String| {
        if !require(ok, || what) {
            check_failures += 1;
        }
    };

    // The whole matrix over HTTP, page by page.
    let (mut rows, mut cells, mut drift_cells, mut linked) = (0usize, 0usize, 0usize, 0usize);
    let mut deep_cursor = None;
    let mut after: Option<String> = None;
    loop {
        let body = matrix_body(page, after.as_deref(), None, None, false);
        let (_, result) = post(&http, &url, &token, &body).await;
        let data = result.map_err(|(code, detail)| anyhow::anyhow!("{code}: {detail}"))?;
        let connection = &data["data"]["workflowMatrix"];
        for edge in connection["edges"].as_array().context("edges")? {
            rows += 1;
            for cell in edge["node"]["cells"].as_array().context("cells")? {
                cells += 1;
                linked += usize::from(cell["mappingStatus"] == "LINKED");
                drift_cells += usize::from(cell["syncState"] == "DRIFT");
            }
            if rows == args.deep_after {
                deep_cursor = Some(connection["pageInfo"]["endCursor"].clone());
            }
        }
        match (
            connection["pageInfo"]["hasNextPage"].as_bool(),
            connection["pageInfo"]["endCursor"].as_str(),
        ) {
            (Some(true), Some(cursor)) => after = Some(cursor.to_string()),
            _ => break,
        }
    }
    let (canonicals, mappings) = (canonicals(), mappings());
    let expected_drift = drifted_cells();
    check(
        rows == canonicals,
        format!("{rows} matrix rows, expected {canonicals}"),
    );
    check(
        cells == mappings,
        format!("{cells} matrix cells, expected {mappings}"),
    );
    check(
        linked == mappings,
        format!("{linked} linked cells, expected {mappings}"),
    );
    check(
        drift_cells == expected_drift,
        format!(
            "{drift_cells} DRIFT cells, expected {expected_drift} (a reused --database must hold \
             this population at this size)"
        ),
    );
    eprintln!(
        "  matrix over HTTP: {rows} rows, {cells} cells ({drift_cells} DRIFT, {} IN_SYNC expected)",
        mappings - expected_drift
    );
    // The deep page: `after` the cursor that ends row `--deep-after` (a multiple of
    // the page size).
    let deep_cursor = deep_cursor
        .and_then(|c| c.as_str().map(str::to_string))
        .with_context(|| {
            format!(
                "the matrix has {rows} rows: no cursor after row {} for the deep page",
                args.deep_after
            )
        })?;
    let filter_envs: Vec<String> = (0..FILTER_ENVIRONMENTS)
        .map(|e| env_id(e).to_string())
        .collect();
    // The population must have planted drift the filtered page finds, else the page
    // measures an empty answer.
    let filtered_rows = filtered_canonicals().len();
    check(
        filtered_rows > 0,
        format!(
            "the population has no drifted cell in the first {FILTER_ENVIRONMENTS} environments \
             of a workflow named *{FILTER_SEARCH}*: the filtered page would be empty"
        ),
    );

    let queries = [
        (
            "first_page",
            MatrixRequest {
                body: matrix_body(page, None, None, None, false),
                rows: page.min(canonicals),
                cells_per_row: environments(),
                drift_in_every_row: false,
                distinct: false,
            },
            args.requests,
        ),
        (
            "first_page_uncached",
            MatrixRequest {
                body: matrix_body(page, None, None, None, false),
                rows: page.min(canonicals),
                cells_per_row: environments(),
                drift_in_every_row: false,
                distinct: true,
            },
            args.other_requests,
        ),
        (
            "deep_page",
            MatrixRequest {
                body: matrix_body(page, Some(&deep_cursor), None, None, false),
                rows: page.min(canonicals.saturating_sub(args.deep_after)),
                cells_per_row: environments(),
                drift_in_every_row: false,
                distinct: false,
            },
            args.other_requests,
        ),
        (
            "filtered_page",
            MatrixRequest {
                body: matrix_body(
                    page,
                    None,
                    Some(filter_envs.clone()),
                    Some(FILTER_SEARCH),
                    true,
                ),
                rows: page.min(filtered_rows),
                cells_per_row: FILTER_ENVIRONMENTS,
                drift_in_every_row: true,
                distinct: false,
            },
            args.other_requests,
        ),
    ];
    let mut out = json!({
        "page_size": page,
        "clients": args.clients,
        "warmup": args.warmup,
        "rows": rows,
        "cells": cells,
        "drift_cells": drift_cells,
        "in_sync_cells": cells - drift_cells,
    });
    let mut first_p99 = f64::MAX;
    let mut failures = 0;
    for (name, request, total) in queries {
        if total == 0 {
            out[name] = Value::Null;
            continue;
        }
        let rows = request.rows;
        require(rows > 0, || {
            format!("{name}: the data has no row for it (0 rows expected)")
        });
        eprintln!(
            "  {name}: {total} requests from {} clients, {rows} rows each",
            args.clients
        );
        let (mut v, p99, f) = load_matrix(
            &service.base,
            &token,
            request,
            args.clients,
            args.warmup,
            total,
        )
        .await?;
        eprintln!(
            "    p50 {} ms, p90 {} ms, p99 {} ms, max {} ms, {} requests/s, {f} failures",
            v["p50_ms"], v["p90_ms"], v["p99_ms"], v["max_ms"], v["requests_per_sec"]
        );
        require_eq(
            v["n"].as_u64().unwrap_or(0),
            total as u64,
            &format!("{name}: samples"),
        );
        require(f == 0, || {
            format!(
                "{name}: {f} of {total} answers failed their checks ({}; every answer must have \
                 the expected {rows} rows)",
                v["failures_by_code"]
            )
        });
        if name == "first_page" {
            first_p99 = p99;
        }
        if name == "deep_page" {
            v["after_rows"] = json!(args.deep_after);
        }
        if name == "filtered_page" {
            v["environments"] = json!(FILTER_ENVIRONMENTS);
            v["search"] = json!(FILTER_SEARCH);
            v["only_drift"] = json!(true);
        }
        failures += f;
        out[name] = v;
    }
    out["check_failures"] = json!(check_failures);
    out["failures"] = json!(failures);
    out["first_page_p99_ms"] = json!(round3(first_p99));
    Ok(out)
}

// ----------------------------------------------------------------------------------
// 2. Mutations

const STEPS: [(&str, &str, &str); 4] = [
    (
        "acknowledgeIncident",
        ", reason: \"investigating\", ownerUserId: \"oncall\", ticketRef: \"OPS-1\"",
        "ACKNOWLEDGED",
    ),
    (
        "stabilizeIncident",
        ", reason: \"traffic drained\"",
        "STABILIZED",
    ),
    (
        "reconcileIncident",
        ", resolutionType: REVERT, resolutionDetails: \"restored from git\"",
        "RECONCILED",
    ),
    ("closeIncident", ", reason: \"verified\"", "CLOSED"),
];

fn ops_env(i: usize) -> LocalId {
    id(format!("ops-{i:04}"))
}

/// How a pass of the mutation phase drives the four transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Drive {
    /// GraphQL mutations selecting `position incident { id status }`.
    ReadBack,
    /// GraphQL mutations selecting `position` only.
    PositionOnly,
    /// The same commands through the command bus, in process (no HTTP, no GraphQL):
    /// what `bench_commands` measures, side by side.
    Bus,
}

impl Drive {
    fn name(self) -> &'static str {
        match self {
            Drive::ReadBack => "read_back",
            Drive::PositionOnly => "no_read_back",
            Drive::Bus => "bus",
        }
    }
}

/// The bus command of transition `step` (the mutation's arguments).
fn step_command(step: usize) -> IncidentCommand {
    match step {
        0 => IncidentCommand::Acknowledge {
            reason: Some("investigating".into()),
            owner_user_id: Some("oncall".into()),
            ticket_ref: Some("OPS-1".into()),
            expires_at: None,
        },
        1 => IncidentCommand::Stabilize {
            reason: Some("traffic drained".into()),
        },
        2 => IncidentCommand::Reconcile {
            resolution_type: Some(aggregates::incident::ResolutionType::Revert),
            resolution_details: Some("restored from git".into()),
        },
        _ => IncidentCommand::Close {
            reason: Some("verified".into()),
            resolution_type: None,
        },
    }
}

/// Three passes over fresh incidents: with the read-back (the target), without it,
/// and the same commands through the bus; the second's rate over the third's is
/// the "≥ 0.6 × the commands" ratio, measured in the same run.
async fn measure_mutations(service: &Service, args: &Args) -> anyhow::Result<Value> {
    let domain = &service.domain;
    // One environment per incident of a pass (one open incident per environment),
    // plus one per client for its warm-up; kept when the database is reused.
    let environments = args.lifecycles + args.clients;
    let registered = futures::stream::iter(0..environments)
        .map(|i| async move {
            let r = domain
                .environment(
                    &ctx(OPS_TENANT, Role::Admin),
                    &ops_env(i),
                    register(i, format!("Ops {i:04}"), EnvironmentClass::Production),
                )
                .await;
            match r {
                Err(e) if !e.to_string().contains("already") => Err(e),
                _ => Ok(()),
            }
        })
        .buffer_unordered(args.clients)
        .collect::<Vec<_>>()
        .await;
    if let Some(Err(e)) = registered.into_iter().find(Result::is_err) {
        anyhow::bail!("mutations: registering the environments: {e}");
    }
    let mut out = mutation_pass(service, args, Drive::ReadBack).await?;
    let mut rates = HashMap::new();
    for drive in [Drive::PositionOnly, Drive::Bus] {
        let pass = mutation_pass(service, args, drive).await?;
        rates.insert(drive, pass["transitions_per_sec"].as_f64().unwrap_or(0.0));
        out[drive.name()] = pass;
    }
    let ratio = rates[&Drive::PositionOnly] / rates[&Drive::Bus].max(1.0);
    out["no_read_back_vs_bus"] = json!((ratio * 100.0).round() / 100.0);
    eprintln!("  without the read-back ÷ the bus: {ratio:.2}");
    Ok(out)
}

/// Opens one incident per environment (untimed, through `Domain`), then `--clients`
/// clients drive each through acknowledge → stabilize → reconcile → close.
async fn mutation_pass(service: &Service, args: &Args, drive: Drive) -> anyhow::Result<Value> {
    let domain = &service.domain;
    let token = service.token(OPS_TENANT, "admin", "bench-admin")?;
    let environments = args.lifecycles + args.clients;
    eprintln!(
        "mutations ({}): opening {environments} incidents (untimed)",
        drive.name()
    );
    let opened = futures::stream::iter(0..environments)
        .map(|i| async move {
            let environment = ops_env(i);
            loop {
                let opened = report_drift(
                    domain,
                    &ctx(OPS_TENANT, Role::System),
                    &environment,
                    vec![AffectedWorkflow {
                        workflow_id: format!("wf-{i}"),
                        name: format!("Workflow {i}"),
                    }],
                    Some("ab".repeat(32)),
                    IncidentPolicy::default(),
                )
                .await;
                match opened {
                    Ok((incident, committed))
                        if committed.state.status == IncidentStatus::Detected =>
                    {
                        return Ok(incident)
                    }
                    // A leftover open incident (an earlier aborted run): close it.
                    Ok((incident, _)) => close_leftover(domain, &incident).await,
                    Err(e) => return Err(e),
                }
            }
        })
        .buffered(args.clients)
        .collect::<Vec<_>>()
        .await;
    let mut incidents = Vec::with_capacity(environments);
    for opened in opened {
        incidents.push(opened.map_err(|e| anyhow::anyhow!("mutations: opening: {e}"))?);
    }
    let incidents = Arc::new(incidents);

    let queries: Vec<String> = STEPS
        .iter()
        .map(|(mutation, arguments, _)| {
            let selection = if drive == Drive::ReadBack {
                "position incident { id status }"
            } else {
                "position"
            };
            format!("mutation($id: ID!) {{ {mutation}(id: $id{arguments}) {{ {selection} }} }}")
        })
        .collect();
    let queries = Arc::new(queries);
    let url = format!("{}/graphql", service.base);
    let next = Arc::new(AtomicUsize::new(args.clients));
    let done = Arc::new(AtomicUsize::new(0));
    let total = args.lifecycles;
    let barrier = Arc::new(tokio::sync::Barrier::new(args.clients + 1));
    let tasks: Vec<_> = (0..args.clients)
        .map(|c| {
            let (domain, queries, url, token) =
                (domain.clone(), queries.clone(), url.clone(), token.clone());
            let (next, done, barrier, incidents) = (
                next.clone(),
                done.clone(),
                barrier.clone(),
                incidents.clone(),
            );
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut per_step: Vec<Vec<f64>> = vec![vec![]; STEPS.len()];
                let mut failures = Failures::default();
                let mut transitions = 0usize;
                // Each client's first incident is untimed (connections, caches).
                let mut first = Some(c);
                barrier.wait().await;
                loop {
                    let (warm, index) = match first.take() {
                        Some(index) => (true, index),
                        None => match next.fetch_add(1, Ordering::Relaxed) {
                            index if index < incidents.len() => (false, index),
                            _ => break,
                        },
                    };
                    let incident = &incidents[index];
                    let variables = json!({ "id": incident.as_str() });
                    for (i, (mutation, _, expected)) in STEPS.iter().enumerate() {
                        let (elapsed, result) = match drive {
                            Drive::Bus => {
                                let t = Instant::now();
                                let result = domain
                                    .incident(
                                        &ctx(OPS_TENANT, Role::Admin),
                                        incident,
                                        step_command(i),
                                        false,
                                    )
                                    .await;
                                let elapsed = t.elapsed();
                                let result = match result {
                                    Ok(committed)
                                        if format!("{:?}", committed.state.status)
                                            .eq_ignore_ascii_case(expected) =>
                                    {
                                        Ok(())
                                    }
                                    Ok(committed) => Err((
                                        "SHAPE".to_string(),
                                        format!(
                                            "expected {expected}: {:?}",
                                            committed.state.status
                                        ),
                                    )),
                                    Err(e) => Err((format!("{:?}", e.code()), e.to_string())),
                                };
                                (elapsed, result)
                            }
                            _ => {
                                let body = json!({ "query": queries[i], "variables": variables });
                                let (elapsed, result) = post(&http, &url, &token, &body).await;
                                let result = result.and_then(|data| {
                                    let payload = &data["data"][mutation];
                                    if payload["position"].as_i64().is_none() {
                                        Err(("SHAPE".into(), format!("no position: {data}")))
                                    } else if drive == Drive::ReadBack
                                        && payload["incident"]["status"] != *expected
                                    {
                                        Err((
                                            "SHAPE".into(),
                                            format!("expected {expected}: {data}"),
                                        ))
                                    } else {
                                        Ok(())
                                    }
                                });
                                (elapsed, result)
                            }
                        };
                        if warm {
                            if result.is_err() {
                                eprintln!("  warm-up {mutation} failed: {result:?}");
                            }
                            continue;
                        }
                        per_step[i].push(ms(elapsed));
                        match result {
                            Ok(()) => transitions += 1,
                            Err((code, detail)) => {
                                failures.add(code, &format!("{mutation}: {detail}"));
                                close_leftover(&domain, incident).await;
                                break;
                            }
                        }
                    }
                    if !warm {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (per_step, transitions, failures)
            })
        })
        .collect();
    let progress = Progress::start("incident lifecycles", done.clone(), total);
    barrier.wait().await;
    let started = Instant::now();
    let cpu = cpu::CpuMeter::start();
    let mut per_step: Vec<Vec<f64>> = vec![vec![]; STEPS.len()];
    let mut transitions = 0;
    let mut failures = Failures::default();
    for task in tasks {
        let (s, t, f) = task.await?;
        for (all, mine) in per_step.iter_mut().zip(s) {
            all.extend(mine);
        }
        transitions += t;
        failures.merge(f);
    }
    // Includes each client's warm-up lifecycle: a slight underestimate of the rate.
    let seconds = started.elapsed().as_secs_f64();
    drop(progress);
    let all: Vec<f64> = per_step.iter().flatten().copied().collect();
    let mut out = json!({
        "clients": args.clients,
        "lifecycles": total,
        "drive": drive.name(),
        "read_back": drive == Drive::ReadBack,
        "transitions": transitions,
        "seconds": round3(seconds),
        "transitions_per_sec": (transitions as f64 / seconds).round(),
        "all_mutations": latency(all),
        "cpu_us_per_transition": cpu.per_unit(transitions),
        "errors": failures.total(),
        "errors_by_code": failures.json(),
    });
    for (i, (mutation, _, _)) in STEPS.iter().enumerate() {
        out[*mutation] = latency(std::mem::take(&mut per_step[i]));
    }
    eprintln!(
        "  {}: {transitions} transitions in {seconds:.1} s: {} /s; p50 {} ms, p99 {} ms; {} errors",
        drive.name(),
        out["transitions_per_sec"],
        out["all_mutations"]["p50_ms"],
        out["all_mutations"]["p99_ms"],
        failures.total()
    );
    let name = drive.name();
    require(failures.total() == 0, || {
        format!(
            "mutations ({name}): {} lifecycles failed ({})",
            failures.total(),
            failures.json()
        )
    });
    require_eq(
        transitions,
        total * STEPS.len(),
        &format!("mutations ({name}): transitions"),
    );
    require_eq(
        out["all_mutations"]["n"].as_u64().unwrap_or(0),
        (total * STEPS.len()) as u64,
        &format!("mutations ({name}): timed mutations"),
    );
    Ok(out)
}

/// Closes an incident left open by a failed lifecycle (admin override), so the
/// environment's slot is free for the next one.
async fn close_leftover(domain: &Domain, incident: &LocalId) {
    let close = IncidentCommand::Close {
        reason: Some("benchmark cleanup".into()),
        resolution_type: Some(aggregates::incident::ResolutionType::Revert),
    };
    if let Err(e) = domain
        .incident(&ctx(OPS_TENANT, Role::Admin), incident, close, true)
        .await
    {
        eprintln!("  could not close {incident}: {e}");
    }
}

// ----------------------------------------------------------------------------------
// 3. Delivery

/// What a subscriber received: (position, recordedAt, when it arrived).
type Received = Vec<(i64, DateTime<Utc>, DateTime<Utc>)>;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_ws(service: &Service, token: &str, from: i64) -> anyhow::Result<Socket> {
    let mut request = format!("ws://{}/graphql/ws", service.addr).into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    socket.send(Message::text(init.to_string())).await?;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .context("connection_ack")?
            .context("socket closed")??;
        if let Message::Text(text) = message {
            let v: Value = serde_json::from_str(text.as_str())?;
            anyhow::ensure!(
                v["type"] == "connection_ack",
                "expected connection_ack: {v}"
            );
            break;
        }
    }
    let query =
        format!("subscription($from: Int) {{ events(fromPosition: $from) {{ {EVENT_FIELDS} }} }}");
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": { "from": from } } });
    socket.send(Message::text(subscribe.to_string())).await?;
    Ok(socket)
}

fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Reads the subscription until `stop`; records each event with its arrival time.
async fn follow_ws(
    mut socket: Socket,
    last: Arc<AtomicI64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Received, Vec<String>) {
    let mut received = vec![];
    let mut problems = vec![];
    loop {
        let message = tokio::select! {
            m = socket.next() => m,
            _ = stop.wait_for(|s| *s) => break,
        };
        let at = Utc::now();
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                problems.push("the socket closed".into());
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                problems.push(format!("socket error: {e}"));
                break;
            }
        };
        let v: Value = match serde_json::from_str(text.as_str()) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("bad JSON: {e}"));
                continue;
            }
        };
        match v["type"].as_str() {
            Some("next") => {
                let event = &v["payload"]["data"]["events"];
                match (event["position"].as_i64(), parse_time(&event["recordedAt"])) {
                    (Some(position), Some(recorded)) => {
                        received.push((position, recorded, at));
                        last.store(position, Ordering::Relaxed);
                    }
                    _ => problems.push(format!("unexpected payload {v}")),
                }
            }
            Some("ping") => {
                let pong = json!({ "type": "pong" }).to_string();
                let _ = socket.send(Message::text(pong)).await;
            }
            Some("pong") => {}
            _ => {
                problems.push(format!("unexpected message {v}"));
                break;
            }
        }
    }
    let _ = socket.close(None).await;
    (received, problems)
}

type SseBody = std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>;

async fn open_sse(service: &Service, token: &str, from: i64) -> anyhow::Result<SseBody> {
    let response = reqwest::Client::new()
        .get(format!("{}/events?from={from}", service.base))
        .bearer_auth(token)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 200,
        "GET /events: {}",
        response.status()
    );
    Ok(Box::pin(
        response
            .bytes_stream()
            .map(|chunk| chunk.map(|b| b.to_vec())),
    ))
}

async fn follow_sse(
    mut body: SseBody,
    last: Arc<AtomicI64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Received, Vec<String>) {
    let mut received = vec![];
    let mut problems = vec![];
    let mut buffer = String::new();
    loop {
        let chunk = tokio::select! {
            c = body.next() => c,
            _ = stop.wait_for(|s| *s) => break,
        };
        let at = Utc::now();
        match chunk {
            Some(Ok(bytes)) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
            Some(Err(e)) => {
                problems.push(format!("stream error: {e}"));
                break;
            }
            None => {
                problems.push("the stream ended".into());
                break;
            }
        }
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut data = String::new();
            let mut kind = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = Some(v.trim().to_string());
                }
            }
            if data.is_empty() {
                continue; // a keep-alive comment
            }
            if let Some(kind) = kind {
                problems.push(format!("event {kind}: {data}"));
                continue;
            }
            match serde_json::from_str::<Value>(&data) {
                Ok(event) => match (event["position"].as_i64(), parse_time(&event["recordedAt"])) {
                    (Some(position), Some(recorded)) => {
                        received.push((position, recorded, at));
                        last.store(position, Ordering::Relaxed);
                    }
                    _ => problems.push(format!("unexpected data {data}")),
                },
                Err(e) => problems.push(format!("bad JSON: {e}")),
            }
        }
    }
    (received, problems)
}

/// Waits until every subscriber's last event is at least `position`.
async fn wait_delivered(lasts: &[Arc<AtomicI64>], position: i64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if lasts.iter().all(|l| l.load(Ordering::Relaxed) >= position) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Compares what a subscriber received after the warm-up with the log's events.
fn delivery_figures(
    received: Received,
    problems: Vec<String>,
    warm_position: i64,
    expected: &[i64],
    acked: &HashMap<i64, DateTime<Utc>>,
) -> Value {
    // Only what arrived after the warm-up event.
    let window: Received = match received.iter().position(|(p, _, _)| *p == warm_position) {
        Some(i) => received.into_iter().skip(i + 1).collect(),
        None => received,
    };
    let positions: Vec<i64> = window.iter().map(|(p, _, _)| *p).collect();
    let got: HashSet<i64> = positions.iter().copied().collect();
    let want: HashSet<i64> = expected.iter().copied().collect();
    let duplicates = positions.len() - got.len();
    let missing = want.difference(&got).count();
    let extra = got.difference(&want).count();
    let in_log_order = positions == expected;
    let from_recorded: Vec<f64> = window
        .iter()
        .map(|(_, recorded, at)| {
            (*at - *recorded).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
        })
        .collect();
    let from_ack: Vec<f64> = window
        .iter()
        .filter_map(|(p, _, at)| {
            acked
                .get(p)
                .map(|ack| (*at - *ack).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0)
        })
        .collect();
    let mut v = latency(from_recorded);
    v["received"] = json!(positions.len());
    v["expected"] = json!(expected.len());
    v["missing"] = json!(missing);
    v["duplicates"] = json!(duplicates);
    v["unexpected"] = json!(extra);
    v["in_log_order"] = json!(in_log_order);
    v["from_commit_ack"] = latency(from_ack);
    v["problems"] = json!(problems.iter().take(5).collect::<Vec<_>>());
    v["ok"] =
        json!(missing == 0 && duplicates == 0 && extra == 0 && in_log_order && problems.is_empty());
    v
}

async fn measure_delivery(service: &Service, args: &Args) -> anyhow::Result<Value> {
    let store = &service.store;
    let domain = &service.domain;
    let token = service.token(TENANT, "viewer", "bench-subscriber")?;
    let head = store.head().await?.position;
    let socket = open_ws(service, &token, head).await?;
    let sse = open_sse(service, &token, head).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let ws_last = Arc::new(AtomicI64::new(0));
    let sse_last = Arc::new(AtomicI64::new(0));
    let ws_task = tokio::spawn(follow_ws(socket, ws_last.clone(), stopped.clone()));
    let sse_task = tokio::spawn(follow_sse(sse, sse_last.clone(), stopped));
    let lasts = [ws_last, sse_last];

    // Warm-up: one event, delivered to both.
    let warm = domain
        .mapping(
            &ctx(TENANT, Role::Developer),
            &env_id(0),
            &n8n_id(0, 0),
            observe(0, 0, u64::MAX - 7, false),
        )
        .await?;
    let warm_position = warm.position.context("the warm-up appended nothing")?;
    anyhow::ensure!(
        wait_delivered(&lasts, warm_position, Duration::from_secs(10)).await,
        "the subscribers did not receive the warm-up event"
    );
    let warm_cursor = store
        .cursor_after_position(warm_position)
        .await?
        .context("warm-up cursor")?;

    // Steady appends.
    let total = (args.rate as u64 * args.seconds) as usize;
    let period = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let acked = Arc::new(Mutex::new(HashMap::<i64, DateTime<Utc>>::new()));
    let errors = Arc::new(AtomicUsize::new(0));
    let issued = Arc::new(AtomicUsize::new(0));
    let progress = Progress::start("appends", issued.clone(), total);
    let base = mix(Utc::now().timestamp_micros() as u64) % (u64::MAX / 4);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        ticker.tick().await;
        issued.fetch_add(1, Ordering::Relaxed);
        let (domain, acked, errors) = (domain.clone(), acked.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            // A different cell each time (10,000 of them), skipping the warm-up's.
            let (e, c) = mapping_parts(1 + i % (mappings() - 1));
            let r = domain
                .mapping(
                    &ctx(TENANT, Role::Developer),
                    &env_id(e),
                    &n8n_id(e, c),
                    observe(e, c, base + i as u64, false),
                )
                .await;
            let at = Utc::now();
            match r {
                Ok(committed) => {
                    // Single-event commands: the position is the event's.
                    if let (Some(p), 1) = (committed.position, committed.events.len()) {
                        acked.lock().unwrap().insert(p, at);
                    }
                }
                Err(e) => {
                    if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("  append failed: {e}");
                    }
                }
            }
        }));
    }
    let issuing = started.elapsed();
    for task in tasks {
        task.await?;
    }
    drop(progress);

    // What the log holds for the tenant after the warm-up, in delivery order (once the
    // log's readers see every committed event).
    bench_store::settle_log(store, DRAIN_TIMEOUT).await?;
    let mut expected = vec![];
    let mut cursor = warm_cursor;
    loop {
        let events = store.read_after(cursor, 1000).await?;
        let Some(last) = events.last() else { break };
        cursor = last.cursor();
        expected.extend(
            events
                .iter()
                .filter(|e| e.tenant() == TENANT)
                .map(|e| e.position),
        );
    }
    let last_expected = expected.iter().copied().max().unwrap_or(warm_position);
    let drained_in_time = wait_delivered(&lasts, last_expected, DRAIN_TIMEOUT).await;
    // A moment for anything unexpected (duplicates) to arrive too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop.send(true);
    let (ws_received, ws_problems) = ws_task.await?;
    let (sse_received, sse_problems) = sse_task.await?;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let websocket = delivery_figures(ws_received, ws_problems, warm_position, &expected, &acked);
    let sse = delivery_figures(sse_received, sse_problems, warm_position, &expected, &acked);
    let command_errors = errors.load(Ordering::Relaxed);
    require(command_errors == 0, || {
        format!("delivery: {command_errors} of {total} appends failed")
    });
    require(expected.len() >= total, || {
        format!(
            "delivery: the log holds {} events of the tenant after the warm-up, expected at least {total}",
            expected.len()
        )
    });
    require(drained_in_time, || {
        format!(
            "delivery: the subscribers had not received position {last_expected} {} s after the appends",
            DRAIN_TIMEOUT.as_secs()
        )
    });
    for (name, v) in [("websocket", &websocket), ("sse", &sse)] {
        require_some(
            v["received"].as_u64().unwrap_or(0) as usize,
            &format!("delivery: events the {name} subscriber received"),
        );
        require(v["ok"] == true, || {
            format!(
                "delivery: the {name} subscriber received {} of {} events ({} missing, {} \
                 duplicates, {} unexpected, in log order: {}; problems {})",
                v["received"],
                v["expected"],
                v["missing"],
                v["duplicates"],
                v["unexpected"],
                v["in_log_order"],
                v["problems"]
            )
        });
        eprintln!(
            "  {name}: {}/{} events, p50 {} ms, p99 {} ms, max {} ms (from commit ack: p50 {} ms, p99 {} ms); ok {}",
            v["received"],
            v["expected"],
            v["p50_ms"],
            v["p99_ms"],
            v["max_ms"],
            v["from_commit_ack"]["p50_ms"],
            v["from_commit_ack"]["p99_ms"],
            v["ok"]
        );
    }
    Ok(json!({
        "rate_target": args.rate,
        "rate_achieved": (total as f64 / issuing.as_secs_f64()).round(),
        "seconds": round3(issuing.as_secs_f64()),
        "commands": total,
        "command_errors": command_errors,
        "events_appended": expected.len(),
        "drained_in_time": drained_in_time,
        "websocket": websocket,
        "sse": sse,
    }))
}

// ----------------------------------------------------------------------------------

async fn run(args: &Args, service: &Service) -> anyhow::Result<Value> {
    let population = populate_and_settle(service, args.clients).await?;

    let matrix = if args.skip_matrix {
        Value::Null
    } else {
        eprintln!("matrix: {} clients", args.clients);
        bench_store::settle_statistics(
            &service.store,
            &["rm_matrix_rows", "rm_matrix_cells", "rm_environments"],
            Duration::from_secs(60),
        )
        .await?;
        measure_matrix(service, args).await?
    };
    let mutations = if args.skip_mutations {
        Value::Null
    } else {
        eprintln!(
            "mutations: {} incident lifecycles from {} clients",
            args.lifecycles, args.clients
        );
        measure_mutations(service, args).await?
    };
    let delivery = if args.skip_delivery {
        Value::Null
    } else {
        eprintln!(
            "delivery: {} commands/s for {} s, one WebSocket and one SSE subscriber",
            args.rate, args.seconds
        );
        measure_delivery(service, args).await?
    };

    let matrix_p99 = matrix["first_page"]["p99_ms"].as_f64();
    let uncached_p99 = matrix["first_page_uncached"]["p99_ms"].as_f64();
    let mutation_rate = mutations["transitions_per_sec"].as_f64();
    let mutation_p99 = mutations["all_mutations"]["p99_ms"].as_f64();
    let mutations_ok = mutations["errors"] == 0
        && mutations["no_read_back"]["errors"] == 0
        && mutations["bus"]["errors"] == 0;
    let vs_bus = mutations["no_read_back_vs_bus"].as_f64();
    let matrix_ok = matrix["failures"] == 0 && matrix["check_failures"] == 0;
    let ws_p99 = delivery["websocket"]["p99_ms"].as_f64();
    let sse_p99 = delivery["sse"]["p99_ms"].as_f64();
    let delivery_ok = !delivery.is_null()
        && delivery["websocket"]["ok"] == true
        && delivery["sse"]["ok"] == true
        && delivery["command_errors"] == 0
        && delivery["drained_in_time"] == true;
    let delivery_p99 = match (ws_p99, sse_p99) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    };
    Ok(json!({
        "benchmark": "api",
        "backend": args.population.backend,
        "clients": args.clients,
        "population": population,
        "matrix": matrix,
        "mutations": mutations,
        "delivery": delivery,
        "targets": {
            "matrix_first_page_p99_ms": {
                "target": MATRIX_TARGET_MS,
                "value": matrix_p99,
                "failures": matrix["failures"].as_u64().map(|f| f + matrix["check_failures"].as_u64().unwrap_or(0)),
                "met": matrix_p99.map(|p| p <= MATRIX_TARGET_MS && matrix_ok),
            },
            "matrix_first_page_uncached_p99_ms": {
                "target": MATRIX_UNCACHED_TARGET_MS,
                "value": uncached_p99,
                "met": uncached_p99.map(|p| p <= MATRIX_UNCACHED_TARGET_MS && matrix_ok),
            },
            "mutations": {
                "target_per_sec": MUTATIONS_TARGET_PER_SEC,
                "target_p99_ms": MUTATIONS_TARGET_P99_MS,
                "per_sec": mutation_rate,
                "p99_ms": mutation_p99,
                "read_back": mutations["read_back"],
                "met": mutation_rate.zip(mutation_p99).map(|(rate, p99)| {
                    rate >= MUTATIONS_TARGET_PER_SEC && p99 <= MUTATIONS_TARGET_P99_MS && mutations_ok
                }),
            },
            "mutations_without_read_back_vs_bus": {
                "target": MUTATIONS_TARGET_VS_BUS,
                "value": vs_bus,
                "no_read_back_per_sec": mutations["no_read_back"]["transitions_per_sec"],
                "bus_per_sec": mutations["bus"]["transitions_per_sec"],
                "met": vs_bus.map(|r| r >= MUTATIONS_TARGET_VS_BUS && mutations_ok),
            },
            "delivery_p99_ms": {
                "target": DELIVERY_TARGET_MS,
                "websocket": ws_p99,
                "sse": sse_p99,
                "complete": (!delivery.is_null()).then_some(delivery_ok),
                "met": delivery_p99.map(|p| p <= DELIVERY_TARGET_MS && delivery_ok),
            },
        },
    }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse_from(outcome::args_with_smoke(SMOKE));
    let report = bench(&args).await;
    outcome::conclude("api", args.population.smoke, report)
}

async fn bench(args: &Args) -> anyhow::Result<Value> {
    anyhow::ensure!(
        args.clients > 0 && args.rate > 0 && args.page > 0 && args.page <= 200,
        "--clients and --rate must be positive, --page within 1..=200"
    );
    anyhow::ensure!(
        args.deep_after > 0 && args.deep_after % args.page == 0,
        "--deep-after must be a positive multiple of --page"
    );
    args.population.set_size()?;
    let temp = tempfile::tempdir()?;
    let bench = BenchStore::open(
        &args.population.backend,
        args.database.as_deref(),
        args.pool,
        &args.pg_url,
        temp.path(),
    )
    .await?;
    let store = bench.store.clone();
    let report = async {
        store.migrate().await?;
        let service = Service::start(store.clone(), SECRET).await?;
        eprintln!("service on {}", service.base);
        let report = run(args, &service).await;
        service.stop().await;
        report
    }
    .await;
    // the database goes whether or not the run succeeded
    bench.finish().await;
    report
}
