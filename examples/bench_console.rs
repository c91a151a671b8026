//! Console benchmark: the web console's matrix page (`GET /matrix`, server-rendered
//! HTML) at 1,000 canonical workflows × 10 environments, with concurrent clients.
//!
//!   cargo run --release --example bench_console -- --backend sqlite
//!   cargo run --release --example bench_console -- --backend postgres
//!   # populate once, then measure again on the same database:
//!   cargo run --release --example bench_console -- --backend postgres --database wfo_bench_console
//!
//! The service, the database and the population are `bench_api`'s
//! (`examples/common/matrix_data.rs`): tenant `bench`, 10 environments, 1,000
//! canonical workflows, 10,000 linked cells, about one in seven drifted; then it
//! waits until every read model has applied the log. A database populated by
//! `bench_api` or `bench_projections` can be reused (`--database`).
//!
//! The console's session is the cookie `wfo_session=<bearer token>` (a viewer token
//! minted with the service's secret), sent with every request.
//!
//! **Checks before timing** (any failure stops the run with a non-zero exit): without
//! the cookie `/matrix` is the sign-in page (401); with it, each measured page is the
//! matrix: its rows (`<th scope="row">`) are the expected workflows in name order (the
//! first 50, the next 50 after the "Next page" link's `after` cursor, the first 50
//! with a drifted cell), 10 environment columns (`<th scope="col">` after "Workflow"),
//! 10 cells per row, a DRIFT cell in every row of the drift-only page, and the
//! "N workflows match" count. The page links one stylesheet, `/console.css?v=<hash>`,
//! and no script file; that URL is served as `text/css` with `Cache-Control: …
//! immutable` and a long `max-age`, and its `v` is the first 12 hex digits of the
//! SHA-256 of the body served (a content hash).
//!
//! **Timed phases**, each after a warm-up (`--warmup` requests, untimed): the first
//! page (`/matrix`), the drift-only page (`/matrix?drift=1`) and the second page (the
//! "Next page" link). `--clients` clients (one connection pool each) send
//! `--requests` requests per phase in all (10,000: several seconds, so a phase
//! always includes the moments the page's cache, which lives at most a second,
//! expires and the page is built again); latency is measured client-side from sending
//! the request to having read the whole body, and the requests over the target (30
//! ms) and over 100 ms are counted. Every timed response is checked as above (status
//! 200, the matrix page and not the sign-in page, the same rows, columns and cells);
//! any failure fails the run after the JSON is printed.
//!
//! **Breakdown** (after the phases, `--breakdown` iterations, 0 for none): with one
//! client, the median of the whole `GET` (mostly answered from the page's cache)
//! against the page's database reads done in-process the way the handler does them
//! on a cache miss (the environments, then side by side the page, the counts per
//! environment and four counts) and each kind of read alone. Then the first page's reads in-process from
//! `--clients` tasks at once, without HTTP or rendering: all of them, the page
//! without the counts, the counts without the page (p50/p99 and reads/s): what the
//! phases' latency is made of.
//!
//! The population makes a drifted cell as a sync would: discovered holding Git's
//! content and auto-linked, then observed with content of its own (an auto-link
//! takes the observed hash as the cell's Git hash).
//!
//! **Smoke** (`--smoke`): every phase and every check at a tiny size (3 environments
//! × 80 canonical workflows: a first page of 50 rows, a second of 30, a drift-only
//! page; 4 clients, 60 requests a phase, 3 breakdown iterations), for CI in a debug
//! build; sizes given with it win.
//!
//! **Fails** (non-zero exit, after the JSON, the problems on stderr and in
//! `problems`) when a check above fails, a population command failed, the data has no
//! second page or no drifted row, or a phase or the breakdown has no samples. A
//! missed target is reported in `targets`, not a failure.
//!
//! Target: the first page's p99 ≤ 30 ms with 16 clients. Progress goes to stderr;
//! the last line of stdout is one JSON object.

use std::time::{Duration, Instant};

use clap::Parser;
use projections::models::matrix::{self as model, MatrixFilter};
use serde_json::{json, Value};
use sha2::Digest;

#[path = "common/bench_store.rs"]
mod bench_store;
#[path = "common/matrix_data.rs"]
mod matrix_data;
#[path = "common/outcome.rs"]
mod outcome;
use bench_store::BenchStore;
use matrix_data::*;
use outcome::{require, require_eq};

// The same allocator as the service binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(args_override_self = true)]
struct Args {
    // --backend, --smoke, --environments, --canonicals (shared: matrix_data.rs)
    #[command(flatten)]
    population: PopulationArgs,
    /// Concurrent HTTP clients, and population tasks.
    #[arg(short = 'c', long, default_value_t = 16)]
    clients: usize,
    /// Timed requests per phase (all clients together). The page's cache lives at
    /// most a second: a phase should last several.
    #[arg(short = 'n', long, default_value_t = 10000)]
    requests: usize,
    /// Untimed warm-up requests before each phase.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Iterations of each measurement of the sequential breakdown (0: none).
    #[arg(long, default_value_t = 100)]
    breakdown: usize,
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
    "60",
    "--warmup",
    "8",
    "--breakdown",
    "3",
];

/// The signing secret of the benchmark's service.
const SECRET: &[u8] = b"bench-console-secret-0123456789abcdef-01234567";
/// Rows of a matrix page (the console's page size).
const PAGE_ROWS: usize = 50;
const TARGET_MS: f64 = 30.0;

// ----------------------------------------------------------------------------------
// Reading a page

/// One row of the matrix table.
#[derive(Debug)]
struct Row {
    name: String,
    cells: usize,
    drift: bool,
}

/// What a console page holds, read from its HTML (the markup of
/// `src/console/matrix.rs` and `layout.rs`).
#[derive(Debug, Default)]
struct Html {
    signin: bool,
    matrix: bool,
    rows: Vec<Row>,
    /// `<th scope="row">` anywhere in the page (the rows above are those in `tbody`).
    row_headers: usize,
    /// Environment column headers (after "Workflow").
    columns: Vec<String>,
    /// "N workflows match."
    matching: Option<usize>,
    /// The "Next page" link (`rel="next"`), unescaped.
    next: Option<String>,
    stylesheets: Vec<String>,
    script_files: usize,
    inline_script_bytes: usize,
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end])
}

fn unescape(attribute: &str) -> String {
    attribute
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn read_html(html: &str) -> Html {
    let mut page = Html {
        signin: html.contains("action=\"/signin\""),
        matrix: html.contains("<h1>Workflow matrix</h1>"),
        row_headers: html.matches("<th scope=\"row\">").count(),
        ..Default::default()
    };
    if let Some(head) = between(html, "<thead>", "</thead>") {
        page.columns = head
            .split("<th scope=\"col\">")
            .skip(2) // before the first header, and "Workflow"
            .map(|h| h.split('<').next().unwrap_or_default().to_string())
            .collect();
    }
    if let Some(body) = between(html, "<tbody>", "</tbody>") {
        for tr in body.split("<tr>").filter(|s| !s.is_empty()) {
            let name = tr
                .strip_prefix("<th scope=\"row\">")
                .map(|r| r.split('<').next().unwrap_or_default().trim().to_string())
                .unwrap_or_default();
            page.rows.push(Row {
                name,
                cells: tr.matches("<td>").count(),
                drift: tr.contains("class=\"state DRIFT\""),
            });
        }
    }
    for (suffix, _) in html.match_indices(" workflows match.") {
        let before = &html[..suffix];
        let digits = &before[before.rfind('>').map_or(0, |i| i + 1)..];
        page.matching = digits.parse().ok();
    }
    if page.matching.is_none() && html.contains(">1 workflow matches.") {
        page.matching = Some(1);
    }
    if let Some(at) = html.find("\" rel=\"next\"") {
        let before = &html[..at];
        if let Some(href) = before.rfind("href=\"") {
            page.next = Some(unescape(&before[href + 6..]));
        }
    }
    for (at, _) in html.match_indices("<link rel=\"stylesheet\" href=\"") {
        let rest = &html[at + "<link rel=\"stylesheet\" href=\"".len()..];
        if let Some(end) = rest.find('"') {
            page.stylesheets.push(unescape(&rest[..end]));
        }
    }
    page.script_files = html.matches("<script src").count();
    for (at, _) in html.match_indices("<script>") {
        let rest = &html[at + "<script>".len()..];
        page.inline_script_bytes += rest.find("</script>").unwrap_or(0);
    }
    page
}

/// What every response of a phase must hold.
struct Expect {
    /// The row names, in order.
    rows: Vec<String>,
    columns: usize,
    /// Every row has a DRIFT cell.
    drift: bool,
    /// The "N workflows match" count.
    matching: usize,
}

/// Checks a response; returns a failure code and a description.
fn check(status: u16, body: &str, expect: &Expect) -> Result<Html, (String, String)> {
    let page = read_html(body);
    let fail = |code: &str, detail: String| Err((code.to_string(), detail));
    if page.signin {
        return fail("SIGN_IN_PAGE", format!("HTTP {status}: the sign-in page"));
    }
    if status != 200 {
        return fail(&format!("HTTP_{status}"), format!("HTTP {status}"));
    }
    if !page.matrix {
        return fail("NOT_MATRIX", "not the matrix page".into());
    }
    if page.rows.len() != expect.rows.len() || page.row_headers != expect.rows.len() {
        return fail(
            "ROWS",
            format!(
                "{} rows ({} row headers), expected {}",
                page.rows.len(),
                page.row_headers,
                expect.rows.len()
            ),
        );
    }
    if page.columns.len() != expect.columns {
        return fail(
            "COLUMNS",
            format!(
                "{} environment columns, expected {}",
                page.columns.len(),
                expect.columns
            ),
        );
    }
    for (row, name) in page.rows.iter().zip(&expect.rows) {
        if &row.name != name {
            return fail(
                "ROWS",
                format!("row {:?} where {name:?} was expected", row.name),
            );
        }
        if row.cells != expect.columns {
            return fail(
                "CELLS",
                format!(
                    "row {name} has {} cells, expected {}",
                    row.cells, expect.columns
                ),
            );
        }
        if expect.drift && !row.drift {
            return fail("NO_DRIFT", format!("row {name} has no DRIFT cell"));
        }
    }
    if page.matching != Some(expect.matching) {
        return fail(
            "COUNT",
            format!(
                "{:?} workflows match, expected {}",
                page.matching, expect.matching
            ),
        );
    }
    Ok(page)
}

// ----------------------------------------------------------------------------------
// Requests

/// GETs `path` with the session cookie (if any); the time is from sending to having
/// the whole body.
async fn get(
    http: &reqwest::Client,
    url: &str,
    cookie: Option<&str>,
) -> (
    Duration,
    Result<(u16, reqwest::header::HeaderMap, String), String>,
) {
    let started = Instant::now();
    let mut request = http.get(url);
    if let Some(cookie) = cookie {
        request = request.header(reqwest::header::COOKIE, cookie);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return (started.elapsed(), Err(e.to_string())),
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await;
    let elapsed = started.elapsed();
    match body {
        Ok(body) => (elapsed, Ok((status, headers, body))),
        Err(e) => (elapsed, Err(e.to_string())),
    }
}

/// One timed phase: `clients` clients send `warmup` then `total` GETs of `path`
/// (shared counters); every timed response is checked against `expect`.
async fn load(
    base: &str,
    cookie: &str,
    path: &str,
    expect: Expect,
    clients: usize,
    warmup: usize,
    total: usize,
) -> anyhow::Result<(Value, usize)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let url = format!("{base}{path}");
    let expect = Arc::new(expect);
    let warm = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, cookie, expect) = (url.clone(), cookie.to_string(), expect.clone());
            let (warm, next, barrier) = (warm.clone(), next.clone(), barrier.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut failures = Failures::default();
                while warm.fetch_add(1, Ordering::Relaxed) < warmup {
                    let _ = get(&http, &url, Some(&cookie)).await;
                }
                barrier.wait().await;
                let mut samples = vec![];
                let mut bytes = 0usize;
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let (elapsed, result) = get(&http, &url, Some(&cookie)).await;
                    samples.push(ms(elapsed));
                    match result {
                        Ok((status, _, body)) => {
                            bytes = bytes.max(body.len());
                            if let Err((code, detail)) = check(status, &body, &expect) {
                                failures.add(code, &detail);
                            }
                        }
                        Err(e) => failures.add("TRANSPORT", &e),
                    }
                }
                (samples, failures, bytes)
            })
        })
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    let mut samples = Vec::with_capacity(total);
    let mut failures = Failures::default();
    let mut bytes = 0;
    for task in tasks {
        let (s, f, b) = task.await?;
        samples.extend(s);
        failures.merge(f);
        bytes = bytes.max(b);
    }
    let seconds = started.elapsed().as_secs_f64();
    let over_target = samples.iter().filter(|&&ms| ms > TARGET_MS).count();
    let over_100 = samples.iter().filter(|&&ms| ms > 100.0).count();
    let mut v = latency(samples);
    v["over_target"] = json!(over_target);
    v["over_100_ms"] = json!(over_100);
    v["requests_per_sec"] = json!((total as f64 / seconds).round());
    v["seconds"] = json!(round3(seconds));
    v["path"] = json!(path);
    v["rows"] = json!(expect.rows.len());
    v["columns"] = json!(expect.columns);
    v["page_bytes"] = json!(bytes);
    v["failures"] = json!(failures.total());
    v["failures_by_code"] = failures.json();
    Ok((v, failures.total()))
}

/// GETs one page and checks it (before timing).
async fn fetch_page(
    http: &reqwest::Client,
    base: &str,
    cookie: &str,
    path: &str,
    expect: &Expect,
) -> anyhow::Result<(Html, usize)> {
    let (_, r) = get(http, &format!("{base}{path}"), Some(cookie)).await;
    let (status, _, body) = r.map_err(anyhow::Error::msg)?;
    let page = check(status, &body, expect)
        .map_err(|(code, detail)| anyhow::anyhow!("{path}: {code}: {detail}"))?;
    Ok((page, body.len()))
}

/// The median of `n` runs of `f`, in milliseconds.
async fn median_ms<F, Fut, T>(n: usize, mut f: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        f().await?;
        samples.push(ms(started.elapsed()));
    }
    samples.sort_unstable_by(f64::total_cmp);
    Ok(round3(percentile(&samples, 50.0)))
}

/// Which of a page's reads [`page_reads`] does.
#[derive(Clone, Copy, PartialEq)]
enum Reads {
    /// All of them, as the handler does them.
    All,
    /// The environments and the page of rows and cells (no counts).
    Page,
    /// The environments and the counts (no page).
    Counts,
}

/// The reads of one matrix page as the handler (`src/console/matrix.rs`) does them
/// when its cache cannot answer: the environments, then side by side the page, the
/// counts per environment (one grouped query) and four counts (all, drift,
/// untracked, matching).
async fn page_reads(
    store: &eventstore::Store,
    filter: &MatrixFilter,
    after: Option<&str>,
    reads: Reads,
) -> anyhow::Result<()> {
    projections::models::environments::environments(store, TENANT).await?;
    let page = async {
        if reads == Reads::Counts {
            return Ok(None);
        }
        model::matrix_page(store, TENANT, filter, PAGE_ROWS as i64, after)
            .await
            .map(Some)
    };
    let by_environment = async {
        if reads == Reads::Page {
            return Ok(vec![]);
        }
        model::matrix_counts_by_environment(store, TENANT, filter).await
    };
    let count = |f: MatrixFilter| async move {
        if reads == Reads::Page {
            return Ok(0);
        }
        model::matrix_count(store, TENANT, &f).await
    };
    tokio::try_join!(
        page,
        by_environment,
        count(MatrixFilter {
            environment_ids: None,
            ..filter.clone()
        }),
        count(MatrixFilter {
            only_drift: true,
            ..filter.clone()
        }),
        count(MatrixFilter {
            untracked_only: true,
            ..filter.clone()
        }),
        count(filter.clone()),
    )?;
    Ok(())
}

/// `clients` tasks run `f` `total` times in all (in-process, no HTTP): latency
/// figures and throughput.
async fn concurrent<F, Fut>(clients: usize, total: usize, f: F) -> anyhow::Result<Value>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (f, next) = (f.clone(), next.clone());
            tokio::spawn(async move {
                let mut samples = vec![];
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let t = Instant::now();
                    f().await?;
                    samples.push(ms(t.elapsed()));
                }
                Ok::<_, anyhow::Error>(samples)
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(total);
    for task in tasks {
        samples.extend(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut v = latency(samples);
    v["per_sec"] = json!((total as f64 / seconds).round());
    Ok(v)
}

/// One client, sequential: the whole GET against its database reads.
async fn breakdown(
    service: &Service,
    cookie: &str,
    second_cursor: &str,
    n: usize,
    clients: usize,
) -> anyhow::Result<Value> {
    let store = &service.store;
    let http = reqwest::Client::new();
    let all = MatrixFilter::default();
    let drift = MatrixFilter {
        only_drift: true,
        ..Default::default()
    };
    let mut out = json!({ "iterations": n });
    for (name, path, filter, after) in [
        ("first_page", "/matrix".to_string(), &all, None),
        ("drift_page", "/matrix?drift=1".to_string(), &drift, None),
        (
            "second_page",
            format!("/matrix?after={second_cursor}"),
            &all,
            Some(second_cursor),
        ),
    ] {
        let url = format!("{}{path}", service.base);
        let get_ms = median_ms(n, || async {
            let (_, r) = get(&http, &url, Some(cookie)).await;
            r.map_err(anyhow::Error::msg)
        })
        .await?;
        let reads_ms = median_ms(n, || page_reads(store, filter, after, Reads::All)).await?;
        let rows_ms = median_ms(n, || async {
            Ok(model::matrix_page(store, TENANT, filter, PAGE_ROWS as i64, after).await?)
        })
        .await?;
        let count_ms = median_ms(n, || async {
            Ok(model::matrix_count(store, TENANT, filter).await?)
        })
        .await?;
        let by_environment_ms = median_ms(n, || async {
            Ok(model::matrix_counts_by_environment(store, TENANT, filter).await?)
        })
        .await?;
        let environments_ms = median_ms(n, || async {
            Ok(projections::models::environments::environments(store, TENANT).await?)
        })
        .await?;
        eprintln!(
            "  {name}: GET {get_ms} ms; its reads {reads_ms} ms (page {rows_ms}, a count {count_ms}, \
             the counts per environment {by_environment_ms}, environments {environments_ms})"
        );
        out[name] = json!({
            "get_ms": get_ms,
            "reads_ms": reads_ms,
            "page_query_ms": rows_ms,
            "count_ms": count_ms,
            "counts_by_environment_ms": by_environment_ms,
            "environments_ms": environments_ms,
        });
    }
    // The first page's reads alone, in-process, from as many clients as the phases:
    // all of them, the page without the counts, the counts without the page.
    let total = (n * 4).max(clients);
    for (name, reads) in [
        ("reads_concurrent", Reads::All),
        ("page_only_concurrent", Reads::Page),
        ("counts_only_concurrent", Reads::Counts),
    ] {
        let store = store.clone();
        let v = concurrent(clients, total, move || {
            let store = store.clone();
            async move { page_reads(&store, &MatrixFilter::default(), None, reads).await }
        })
        .await?;
        eprintln!(
            "  first page, {name} ({clients} clients): p50 {} ms, p99 {} ms, {} per s",
            v["p50_ms"], v["p99_ms"], v["per_sec"]
        );
        require_eq(
            v["n"].as_u64().unwrap_or(0),
            total as u64,
            &format!("breakdown: {name} samples"),
        );
        out[name] = v;
    }
    Ok(out)
}

// ----------------------------------------------------------------------------------

/// The rows of the expected matrix in the page's order (name, then id).
fn expected_rows(filter: impl Fn(usize) -> bool) -> Vec<String> {
    let mut rows: Vec<(String, String, String)> = (0..canonicals())
        .filter(|&c| filter(c))
        .map(|c| {
            let name = canonical_name(c);
            (name.to_lowercase(), canonical_id(c).to_string(), name)
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, _, name)| name).collect()
}

async fn run(args: &Args, service: &Service) -> anyhow::Result<Value> {
    let population = populate_and_settle(service, args.clients).await?;
    let token = service.token(TENANT, "viewer", "bench-console")?;
    let cookie = format!("wfo_session={token}");
    let http = reqwest::Client::new();
    let base = &service.base;

    // Checks before timing.
    eprintln!("checking the pages");
    let (_, r) = get(&http, &format!("{base}/matrix"), None).await;
    let (status, _, body) = r.map_err(anyhow::Error::msg)?;
    let signin = read_html(&body);
    anyhow::ensure!(
        status == 401 && signin.signin && !signin.matrix,
        "without the session cookie /matrix should be the sign-in page (401), got HTTP {status}"
    );

    let all = expected_rows(|_| true);
    let drifting = expected_rows(|c| (0..environments()).any(|e| drifted(e, c)));
    anyhow::ensure!(
        all.len() > PAGE_ROWS && !drifting.is_empty(),
        "the data has {} rows, {} of them drifted: a second page needs more than {PAGE_ROWS} \
         rows, the drift-only page a drifted one",
        all.len(),
        drifting.len()
    );
    let columns = environments();
    let first_expect = Expect {
        rows: all[..PAGE_ROWS].to_vec(),
        columns,
        drift: false,
        matching: all.len(),
    };
    let drift_expect = Expect {
        rows: drifting[..PAGE_ROWS.min(drifting.len())].to_vec(),
        columns,
        drift: true,
        matching: drifting.len(),
    };
    let second_expect = Expect {
        rows: all[PAGE_ROWS..(2 * PAGE_ROWS).min(all.len())].to_vec(),
        columns,
        drift: false,
        matching: all.len(),
    };
    let (first, first_bytes) = fetch_page(&http, base, &cookie, "/matrix", &first_expect).await?;
    let (drift_page, drift_bytes) =
        fetch_page(&http, base, &cookie, "/matrix?drift=1", &drift_expect).await?;
    let second_path = first
        .next
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the first page has no \"Next page\" link"))?;
    let second_cursor = second_path
        .strip_prefix("/matrix?after=")
        .filter(|c| !c.contains('&'))
        .ok_or_else(|| anyhow::anyhow!("unexpected \"Next page\" link {second_path:?}"))?
        .to_string();
    let (second, second_bytes) =
        fetch_page(&http, base, &cookie, &second_path, &second_expect).await?;
    anyhow::ensure!(
        first
            .rows
            .iter()
            .all(|r| !second_expect.rows.contains(&r.name)),
        "the second page repeats rows of the first"
    );
    eprintln!(
        "  /matrix: {} rows × {} columns, {first_bytes} bytes; /matrix?drift=1: {} rows, \
         {} match, {drift_bytes} bytes; {second_path}: {} rows, {second_bytes} bytes",
        first.rows.len(),
        first.columns.len(),
        drift_page.rows.len(),
        drift_expect.matching,
        second.rows.len()
    );

    // The stylesheet: one, content-hashed, cached for good; no script file.
    for page in [&first, &drift_page, &second] {
        anyhow::ensure!(
            page.stylesheets.len() == 1 && page.script_files == 0,
            "a matrix page should link one stylesheet and no script file: {:?}, {} script files",
            page.stylesheets,
            page.script_files
        );
        anyhow::ensure!(
            page.stylesheets == first.stylesheets,
            "the pages link different stylesheets"
        );
    }
    let css_path = first.stylesheets[0].clone();
    let css_hash = css_path
        .strip_prefix("/console.css?v=")
        .ok_or_else(|| anyhow::anyhow!("the stylesheet is {css_path:?}, not /console.css?v=…"))?
        .to_string();
    let (_, r) = get(&http, &format!("{base}{css_path}"), None).await;
    let (status, headers, css) = r.map_err(anyhow::Error::msg)?;
    let header = |name: reqwest::header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let cache_control = header(reqwest::header::CACHE_CONTROL);
    let content_type = header(reqwest::header::CONTENT_TYPE);
    let max_age: u64 = cache_control
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|v| v.parse().ok())
        .unwrap_or(0);
    let body_hash = hex::encode(sha2::Sha256::digest(css.as_bytes()));
    anyhow::ensure!(status == 200, "{css_path}: HTTP {status}");
    anyhow::ensure!(
        content_type.starts_with("text/css"),
        "{css_path}: Content-Type {content_type:?}"
    );
    anyhow::ensure!(
        cache_control.contains("immutable") && max_age >= 30 * 24 * 3600,
        "{css_path}: Cache-Control {cache_control:?} (expected immutable and a long max-age)"
    );
    anyhow::ensure!(
        css_hash.len() >= 8 && body_hash.starts_with(&css_hash),
        "{css_path}: v={css_hash} is not the start of the body's SHA-256 {body_hash}"
    );
    eprintln!(
        "  {css_path}: {} bytes, Cache-Control: {cache_control}",
        css.len()
    );

    // Timed phases.
    let mut out = json!({
        "benchmark": "console",
        "backend": args.population.backend,
        "clients": args.clients,
        "requests": args.requests,
        "warmup": args.warmup,
        "population": population,
        "page": {
            "first_page_bytes": first_bytes,
            "drift_page_bytes": drift_bytes,
            "second_page_bytes": second_bytes,
            "drift_page_matching": drift_expect.matching,
            "inline_script_bytes": first.inline_script_bytes,
            "script_files": first.script_files,
            "stylesheets": first.stylesheets.len(),
            "css_url": css_path,
            "css_bytes": css.len(),
            "css_cache_control": cache_control,
            "css_content_hashed": true,
        },
    });
    for (name, path, expect) in [
        ("first_page", "/matrix".to_string(), first_expect),
        ("drift_page", "/matrix?drift=1".to_string(), drift_expect),
        ("second_page", second_path.clone(), second_expect),
    ] {
        eprintln!(
            "{name}: {} requests from {} clients ({path})",
            args.requests, args.clients
        );
        let (v, failures) = load(
            base,
            &cookie,
            &path,
            expect,
            args.clients,
            args.warmup,
            args.requests,
        )
        .await?;
        eprintln!(
            "  p50 {} ms, p90 {} ms, p99 {} ms, max {} ms, {} requests/s, {} over {TARGET_MS} ms \
             ({} over 100 ms), {failures} failures",
            v["p50_ms"],
            v["p90_ms"],
            v["p99_ms"],
            v["max_ms"],
            v["requests_per_sec"],
            v["over_target"],
            v["over_100_ms"]
        );
        require_eq(
            v["n"].as_u64().unwrap_or(0),
            args.requests as u64,
            &format!("{name}: samples"),
        );
        require(failures == 0, || {
            format!(
                "{name}: {failures} of {} responses failed the checks ({})",
                args.requests, v["failures_by_code"]
            )
        });
        out[name] = v;
    }

    out["breakdown"] = if args.breakdown > 0 {
        eprintln!("breakdown: one client, median of {}", args.breakdown);
        breakdown(
            service,
            &cookie,
            &second_cursor,
            args.breakdown,
            args.clients,
        )
        .await?
    } else {
        Value::Null
    };

    let p99 = out["first_page"]["p99_ms"].as_f64();
    let worst = ["first_page", "drift_page", "second_page"]
        .iter()
        .filter_map(|p| out[p]["p99_ms"].as_f64())
        .fold(0.0, f64::max);
    let problems = outcome::problems();
    out["failures"] = json!(problems.len());
    out["targets"] = json!({
        "first_page_p99_ms": {
            "target": TARGET_MS,
            "value": p99,
            "met": p99.map(|p| p <= TARGET_MS && problems.is_empty()),
        },
        "every_page_p99_ms": {
            "target": TARGET_MS,
            "value": round3(worst),
            "met": worst <= TARGET_MS && problems.is_empty(),
        },
    });
    Ok(out)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse_from(outcome::args_with_smoke(SMOKE));
    let report = bench(&args).await;
    outcome::conclude("console", args.population.smoke, report)
}

async fn bench(args: &Args) -> anyhow::Result<Value> {
    anyhow::ensure!(
        args.clients > 0 && args.requests > 0,
        "--clients and --requests must be positive"
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
