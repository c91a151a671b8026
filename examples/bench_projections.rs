//! Read-side benchmark (issue 3): rebuild rate, matrix read latency and projection lag.
//!
//!   cargo run --release --example bench_projections -- --backend postgres
//!   cargo run --release --example bench_projections -- --backend sqlite
//!   # smaller log, or only some of the measurements:
//!   cargo run --release --example bench_projections -- --backend postgres --events 100000
//!   cargo run --release --example bench_projections -- --backend sqlite --skip-rebuild --events 0
//!
//!   # populate once, then measure again and again on the same log:
//!   cargo run --release --example bench_projections -- --backend postgres --database wfo_bench_500k
//!
//! PostgreSQL: a fresh database is created on `--pg-url`'s server and dropped after
//! (kept with `--database`). SQLite: a file in a temporary directory (or `--database`). Progress goes to stderr; the last line of
//! stdout is one JSON object with every figure (a skipped measurement is `null`).
//!
//! **Population.** Everything goes through the real command path (`Domain` /
//! `CommandBus`: load, decide, append with chain hashes), so every event decodes as
//! the domain event the projections expect. Setup (`bench_api`'s and
//! `bench_console`'s, `examples/common/matrix_data.rs`): one tenant (`bench`), 10
//! environments, 1,000 canonical workflows (each with a Git version) and one linked
//! mapping per (environment, canonical workflow): 10,000 matrix cells. About one cell
//! in seven is deliberately drifted (discovered holding Git's content and auto-linked,
//! then observed with content of its own, as a sync finds a hotfix); the rest
//! match. Then `--clients` concurrent clients append the bulk of the history until the
//! log holds `--events` events (setup included): ~85% mapping observations with a new
//! `n8n_updated_at` (`mapping.content_observed`; drifted cells stay drifted, in-sync
//! cells stay in sync), ~1% mappings that disappear and reappear (status changes,
//! link-slot release and claim), ~13.5% drift-incident lifecycle steps, ~0.5%
//! environment drift checks. Each client owns its mappings and incidents, so there are
//! no write conflicts to retry.
//!
//! **1. rebuild** — `read_side::rebuild(&store, &[])`: every read model replayed from
//! position 0 into a shadow and swapped in (what `workflowops rebuild` does), in one
//! process. Reported as events/s (target ≥ 50,000), swap included.
//!
//! **2. matrix** — with the projections caught up: latency of `matrix_page` for the
//! first 100-row page, the last page reached through `after` cursors (rows 901–1000),
//! and a filtered page (3 environments + search `sync` + `only_drift`), each
//! `--iterations` times from one client after a warm-up. Before timing, the whole
//! matrix and the whole filtered list are paged through and checked against what the
//! population wrote (1,000 rows, 10,000 cells, the expected drifted rows); a mismatch
//! is printed as a `CHECK FAILED` line and counted in `matrix.check_failures`.
//! Target: p99 ≤ 20 ms on PostgreSQL. The pages are timed as the rebuild left the
//! tables (on PostgreSQL: dead row versions of the upserts, no planner statistics
//! until autovacuum comes by; `matrix.cells_dead_tuples`, `matrix.cells_analyzed`),
//! and on PostgreSQL once more after `VACUUM ANALYZE` (`matrix.after_vacuum_analyze`).
//!
//! **3. lag** — with a `Projector` running (as `serve` runs it), a ticker issues
//! `--rate` mapping observations per second for `--seconds`, each on its own task.
//! For each command: `lag` = from the command's commit (the append returned its
//! position) to `ProjectorHandle::wait_for(matrix, position, 5 s)` returning, i.e.
//! until the matrix read model includes the change (read-your-writes). Also reported:
//! the command latency and the achieved rate. Target: p99 lag ≤ 100 ms.
//!
//! **Smoke** (`--smoke`): every measurement and every check at a tiny size (3
//! environments × 150 canonical workflows, so the deep page is rows 101–150; a log of
//! 2,500 events, 20 iterations per page, 2 s of lag at 100 commands/s), for CI in a
//! debug build; sizes given with it win.
//!
//! **Fails** (non-zero exit, after the JSON, the problems on stderr and in
//! `problems`) when the workload did not produce what is measured: a population
//! command failed; the rebuild replayed no event or not the whole log; the matrix or
//! the filtered list is not what the population wrote (including a filtered list with
//! no row: no drift planted where the filter looks); a timed page answered other than
//! its expected rows; the lag phase has a failed command, a sample that timed out
//! (missing from the distribution), a failed projection, or no samples. A missed
//! target is reported (`meets_target`), not a failure.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::environment::{DriftCheckOutcome, DriftCounts, Environment, EnvironmentCommand};
use aggregates::incident::{AffectedWorkflow, IncidentCommand, IncidentPolicy, ResolutionType};
use aggregates::kernel::command::{Actor, Role};
use aggregates::kernel::ids::{LocalId, TenantId};
use aggregates::mapping::MappingCommand;
use anyhow::Context;
use clap::Parser;
use eventstore::{PgStore, Store};
use projections::models::matrix::{self, MatrixFilter};
use projections::{Projector, ProjectorOptions};
use serde_json::{json, Value};
use workflowops::command::bus::{CommandBus, CommandContext};
use workflowops::command::domain::Domain;

#[path = "common/bench_store.rs"]
mod bench_store;
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
    /// Events in the log before the measurements (setup included; the setup alone
    /// writes about 33,000 at 10 × 1,000, so anything below that means "setup only").
    #[arg(long, default_value_t = 500_000)]
    events: usize,
    /// Skip measurement 1 (rebuild of every read model).
    #[arg(long)]
    skip_rebuild: bool,
    /// Skip measurement 2 (matrix page latency).
    #[arg(long)]
    skip_matrix: bool,
    /// Skip measurement 3 (projection lag under steady load).
    #[arg(long)]
    skip_lag: bool,
    /// Commands per second during the lag measurement.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Duration of the lag measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Timed iterations per matrix query.
    #[arg(long, default_value_t = 500)]
    iterations: usize,
    /// Concurrent clients populating the log.
    #[arg(short = 'c', long, default_value_t = 16)]
    clients: usize,
    /// Connection pool size (default: as the service, 16 on PostgreSQL and 4 on SQLite).
    #[arg(long)]
    pool: Option<u32>,
    /// Keep the populated log for later runs: on PostgreSQL the name of a database on
    /// `--pg-url`'s server, on SQLite a file path. Created and populated when missing
    /// or empty; reused as it is (population skipped) when it already holds events.
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
    "150",
    "--events",
    "2500",
    "--clients",
    "4",
    "--iterations",
    "20",
    "--rate",
    "100",
    "--seconds",
    "2",
];

const PAGE: i64 = 100;
const LAG_TIMEOUT: Duration = Duration::from_secs(5);

// ----------------------------------------------------------------------------------
// Deterministic data

const LIFECYCLE: usize = 5;

fn incident_command(step: usize, environment: &LocalId) -> IncidentCommand {
    match step {
        0 => IncidentCommand::Open {
            environment_id: environment.clone(),
            production: true,
            affected_workflows: (0..3)
                .map(|i| AffectedWorkflow {
                    workflow_id: format!("n8n-{i}"),
                    name: canonical_name(i),
                })
                .collect(),
            snapshot_digest: Some("ab".repeat(32)),
            policy: IncidentPolicy::default(),
        },
        1 => IncidentCommand::Acknowledge {
            reason: Some("investigating".into()),
            owner_user_id: Some("oncall".into()),
            ticket_ref: Some("OPS-1".into()),
            expires_at: None,
        },
        2 => IncidentCommand::Stabilize {
            reason: Some("traffic drained".into()),
        },
        3 => IncidentCommand::Reconcile {
            resolution_type: Some(ResolutionType::Revert),
            resolution_details: Some("restored from git".into()),
        },
        _ => IncidentCommand::Close {
            reason: Some("verified".into()),
            resolution_type: None,
        },
    }
}

fn ctx(role: Role) -> CommandContext {
    let who = match role {
        Role::Admin => "alice",
        Role::Developer => "dev",
        Role::Viewer => "viewer",
        Role::System => "system:bench",
    };
    CommandContext::new(
        TenantId::parse(TENANT).expect("valid tenant"),
        Actor::new(who, role),
    )
}

// ----------------------------------------------------------------------------------
// Figures

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn latency(mut samples: Vec<Duration>) -> Value {
    samples.sort_unstable();
    json!({
        "n": samples.len(),
        "p50_ms": round3(percentile(&samples, 50.0)),
        "p99_ms": round3(percentile(&samples, 99.0)),
        "max_ms": round3(percentile(&samples, 100.0)),
    })
}

async fn count_events(store: &Store) -> anyhow::Result<i64> {
    let sql = "SELECT count(*) FROM events";
    Ok(match store {
        Store::Postgres(PgStore { pool, .. }) => sqlx::query_scalar(sql).fetch_one(pool).await?,
        Store::Sqlite(s) => sqlx::query_scalar(sql).fetch_one(&s.pool).await?,
    })
}

/// Prints `label: n/total (rate/s)` to stderr every 5 s until dropped.
struct Progress(tokio::task::JoinHandle<()>);

impl Progress {
    fn start(label: &'static str, counter: Arc<AtomicUsize>, total: usize) -> Progress {
        let started = Instant::now();
        Progress(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = counter.load(Ordering::Relaxed);
                eprintln!(
                    "  {label}: {n}/{total} ({:.0}/s, {:.0} s)",
                    n as f64 / started.elapsed().as_secs_f64(),
                    started.elapsed().as_secs_f64()
                );
            }
        }))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ----------------------------------------------------------------------------------
// Population

#[derive(Default)]
struct Tally {
    commands: usize,
    errors: usize,
}

impl Tally {
    fn record<T, E: std::fmt::Display>(&mut self, what: &str, result: Result<T, E>) -> Option<T> {
        self.commands += 1;
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                if self.errors < 5 {
                    eprintln!("  {what} failed: {e}");
                }
                self.errors += 1;
                None
            }
        }
    }
}

/// Runs `work(client)` on `clients` tasks and sums their tallies.
async fn on_clients<F, Fut>(clients: usize, work: F) -> anyhow::Result<Tally>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Tally> + Send + 'static,
{
    let tasks: Vec<_> = (0..clients).map(|c| tokio::spawn(work(c))).collect();
    let mut total = Tally::default();
    for task in tasks {
        let t = task.await?;
        total.commands += t.commands;
        total.errors += t.errors;
    }
    Ok(total)
}

/// One client's share of the bulk history, until the log holds `target` events.
async fn bulk_client(
    domain: Domain,
    client: usize,
    clients: usize,
    appended: Arc<AtomicUsize>,
    target: usize,
) -> Tally {
    let bus = domain.bus().clone();
    let mut tally = Tally::default();
    // This client's mappings: m ≡ client (mod clients).
    let mine: Vec<usize> = (client..mappings()).step_by(clients).collect();
    let mut next_mapping = 0usize;
    let mut missing: Option<usize> = None;
    let mut version = 1u64;
    let environment = env_id(client % environments());
    let (mut incident, mut step) = (0usize, 0usize);
    let mut op = client as u64;
    let add = |n: usize| appended.fetch_add(n, Ordering::Relaxed) + n;

    while appended.load(Ordering::Relaxed) < target {
        op += 1;
        let roll = mix(op ^ ((client as u64) << 40)) % 1000;
        if let Some(m) = missing.take() {
            // It comes back (Reappeared, linked again: the slot is claimed again).
            let (e, c) = mapping_parts(m);
            let r = domain
                .mapping(
                    &ctx(Role::Developer),
                    &env_id(e),
                    &n8n_id(e, c),
                    observe(e, c, version, true),
                )
                .await;
            if let Some(committed) = tally.record("mapping.observe (reappear)", r) {
                add(committed.events.len());
            }
        } else if roll < 860 {
            let m = mine[next_mapping % mine.len()];
            next_mapping += 1;
            version += 1;
            let (e, c) = mapping_parts(m);
            let command = if roll < 10 {
                missing = Some(m);
                MappingCommand::ObserveMissing
            } else {
                observe(e, c, version, false)
            };
            let r = domain
                .mapping(&ctx(Role::Developer), &env_id(e), &n8n_id(e, c), command)
                .await;
            if let Some(committed) = tally.record("mapping command", r) {
                add(committed.events.len());
            }
        } else if roll < 995 {
            let incident_id = id(format!("inc-{client}-{incident}"));
            let role = if step == 0 { Role::System } else { Role::Admin };
            // through the domain, as the service does (a close frees the slot)
            let r = domain
                .incident(
                    &ctx(role),
                    &incident_id,
                    incident_command(step, &environment),
                    false,
                )
                .await;
            if let Some(committed) = tally.record("incident command", r) {
                add(committed.events.len());
            }
            step += 1;
            if step == LIFECYCLE {
                step = 0;
                incident += 1;
            }
        } else {
            let with_drift = (0..canonicals())
                .filter(|&c| drifted(client % environments(), c))
                .count() as u32;
            let check = EnvironmentCommand::RecordDriftCheck {
                outcome: DriftCheckOutcome::Checked {
                    counts: DriftCounts {
                        in_sync: canonicals() as u32 - with_drift,
                        with_drift,
                        not_in_git: 0,
                    },
                },
            };
            // Clients share environments: retry a concurrent write as the scheduler does.
            let r = bus
                .execute_retrying::<Environment, _>(
                    &ctx(Role::Developer),
                    &[&environment],
                    check,
                    &(),
                    5,
                )
                .await;
            if let Some(committed) = tally.record("environment.record_drift_check", r) {
                add(committed.events.len());
            }
        }
    }
    // Leave every mapping present and linked for the matrix checks.
    if let Some(m) = missing.take() {
        let (e, c) = mapping_parts(m);
        let r = domain
            .mapping(
                &ctx(Role::Developer),
                &env_id(e),
                &n8n_id(e, c),
                observe(e, c, version, true),
            )
            .await;
        if let Some(committed) = tally.record("mapping.observe (reappear)", r) {
            add(committed.events.len());
        }
    }
    tally
}

// ----------------------------------------------------------------------------------
// Measurements

/// `iterations` timed runs of `query` (after a warm-up), each of which must answer
/// `rows` rows.
async fn timed<F, Fut>(
    name: &str,
    iterations: usize,
    rows: usize,
    mut query: F,
) -> anyhow::Result<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    for _ in 0..(iterations / 10).clamp(5, 50) {
        query().await?;
    }
    let mut samples = Vec::with_capacity(iterations);
    let mut wrong = vec![];
    for _ in 0..iterations {
        let t = Instant::now();
        let got = query().await?;
        samples.push(t.elapsed());
        if got != rows {
            wrong.push(got);
        }
    }
    require(rows > 0, || format!("{name}: the data has no row for it"));
    require(wrong.is_empty(), || {
        format!(
            "{name}: {} of {iterations} answers had other than the expected {rows} rows (e.g. {})",
            wrong.len(),
            wrong[0]
        )
    });
    require_some(samples.len(), &format!("{name}: samples"));
    Ok(samples)
}

/// Every page of the matrix under `filter`: its rows, and the end cursor of each page
/// that has a next one.
async fn walk(
    store: &Store,
    filter: &MatrixFilter,
) -> anyhow::Result<(Vec<matrix::MatrixRowView>, Vec<String>)> {
    let mut rows = vec![];
    let mut cursors = vec![];
    let mut after: Option<String> = None;
    loop {
        let page = matrix::matrix_page(store, TENANT, filter, PAGE, after.as_deref()).await?;
        rows.extend(page.items);
        match (page.has_next_page, page.end_cursor) {
            (true, Some(cursor)) => {
                cursors.push(cursor.clone());
                after = Some(cursor);
            }
            _ => break,
        }
    }
    Ok((rows, cursors))
}

fn check(failures: &mut usize, ok: bool, what: String) {
    if !require(ok, || what) {
        *failures += 1;
    }
}

async fn measure_matrix(store: &Store, iterations: usize) -> anyhow::Result<Value> {
    let mut failures = 0;
    // The whole matrix, paged: every canonical row with its ten linked cells.
    let all = MatrixFilter::default();
    let (rows, cursors) = walk(store, &all).await?;
    let cells: usize = rows.iter().map(|r| r.cells.len()).sum();
    let drifted_cells = rows
        .iter()
        .flat_map(|r| &r.cells)
        .filter(|c| c.cell.env_content_hash != c.effective_git_content_hash)
        .count();
    let (canonicals, mappings) = (canonicals(), mappings());
    let expected_drifted = matrix_data::drifted_cells();
    check(
        &mut failures,
        rows.len() == canonicals,
        format!("{} matrix rows, expected {canonicals}", rows.len()),
    );
    check(
        &mut failures,
        cells == mappings,
        format!("{cells} matrix cells, expected {mappings}"),
    );
    let linked = rows
        .iter()
        .flat_map(|r| &r.cells)
        .filter(|c| c.cell.status == aggregates::mapping::MappingStatus::Linked)
        .count();
    check(
        &mut failures,
        linked == mappings,
        format!("{linked} linked cells, expected {mappings}"),
    );
    check(
        &mut failures,
        drifted_cells == expected_drifted,
        format!(
            "{drifted_cells} cells differ from Git, expected {expected_drifted} (a reused \
             --database must hold this population at this size)"
        ),
    );
    let sorted = rows
        .windows(2)
        .all(|w| (&w[0].row.sort_key, &w[0].row.id) < (&w[1].row.sort_key, &w[1].row.id));
    check(
        &mut failures,
        sorted,
        "matrix rows out of (sort_key, id) order".into(),
    );

    // The filtered list.
    let environments: Vec<String> = (0..FILTER_ENVIRONMENTS)
        .map(|e| env_id(e).to_string())
        .collect();
    let filter = MatrixFilter {
        environment_ids: Some(environments.clone()),
        search: Some(FILTER_SEARCH.into()),
        only_drift: true,
        ..MatrixFilter::default()
    };
    let (filtered, _) = walk(store, &filter).await?;
    let expected: HashSet<String> = filtered_canonicals()
        .into_iter()
        .map(|c| format!("{TENANT}:{}", canonical_id(c)))
        .collect();
    check(
        &mut failures,
        !expected.is_empty(),
        format!(
            "the population has no drifted cell in the first {FILTER_ENVIRONMENTS} environments \
             of a workflow named *{FILTER_SEARCH}*: the filtered page would be empty"
        ),
    );
    let got: HashSet<String> = filtered.iter().map(|r| r.row.id.clone()).collect();
    check(
        &mut failures,
        got == expected,
        format!(
            "filtered list has {} rows, expected {} ({} missing, {} extra)",
            got.len(),
            expected.len(),
            expected.difference(&got).count(),
            got.difference(&expected).count()
        ),
    );
    let cells_in_filter = filtered
        .iter()
        .flat_map(|r| &r.cells)
        .all(|c| environments.contains(&c.cell.environment_id));
    check(
        &mut failures,
        cells_in_filter,
        "filtered page shows cells of other environments".into(),
    );
    eprintln!(
        "  matrix: {} rows, {cells} cells ({drifted_cells} differ from Git); filtered list: {} rows",
        rows.len(),
        filtered.len()
    );

    let deep = cursors.last().cloned();
    check(
        &mut failures,
        deep.is_some(),
        format!(
            "the matrix has {} rows, one page of {PAGE}: the deep page would be the first",
            rows.len()
        ),
    );
    let deep_rows = rows.len().saturating_sub(cursors.len() * PAGE as usize);
    let pages = Pages {
        all,
        filter,
        deep,
        rows: PAGE.min(rows.len() as i64) as usize,
        deep_rows,
        after_rows: cursors.len() * PAGE as usize,
        filtered_rows: filtered.len().min(PAGE as usize),
    };

    // As the rebuild (or catch-up) left the tables: on PostgreSQL that is before
    // autovacuum has run, with the upserts' dead row versions and no statistics.
    let (dead_before, analyzed_before) = matrix_table_stats(store).await?;
    let (first, deep_v, filt) = pages.time(store, iterations).await?;
    let worst = [&first, &deep_v, &filt]
        .iter()
        .map(|v| v["p99_ms"].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max);

    // PostgreSQL again once VACUUM ANALYZE has run (what autovacuum eventually does).
    let after_vacuum = match store {
        Store::Postgres(PgStore { pool, .. }) => {
            eprintln!(
                "  p99 ms as rebuilt: first {} / deep {} / filtered {}; VACUUM ANALYZE and again",
                first["p99_ms"], deep_v["p99_ms"], filt["p99_ms"]
            );
            sqlx::query("VACUUM ANALYZE rm_matrix_rows, rm_matrix_cells")
                .execute(pool)
                .await?;
            let (f, d, x) = pages.time(store, iterations).await?;
            json!({"first_page": f, "deep_page": d, "filtered_page": x})
        }
        Store::Sqlite(_) => Value::Null,
    };
    Ok(json!({
        "rows": rows.len(),
        "cells": cells,
        "iterations": iterations,
        "page_size": PAGE,
        "first_page": first,
        "deep_page": deep_v,
        "filtered_page": filt,
        "cells_dead_tuples": dead_before,
        "cells_analyzed": analyzed_before,
        "after_vacuum_analyze": after_vacuum,
        "check_failures": failures,
        "target_p99_ms": 20,
        "meets_target": worst <= 20.0 && failures == 0,
    }))
}

/// The three timed matrix queries.
struct Pages {
    all: MatrixFilter,
    filter: MatrixFilter,
    deep: Option<String>,
    rows: usize,
    deep_rows: usize,
    after_rows: usize,
    filtered_rows: usize,
}

impl Pages {
    async fn time(
        &self,
        store: &Store,
        iterations: usize,
    ) -> anyhow::Result<(Value, Value, Value)> {
        let first_page = timed("first page", iterations, self.rows, || async {
            let page = matrix::matrix_page(store, TENANT, &self.all, PAGE, None).await?;
            Ok(page.items.len())
        })
        .await?;
        let deep_page = timed("deep page", iterations, self.deep_rows, || async {
            let after = self.deep.as_deref();
            let page = matrix::matrix_page(store, TENANT, &self.all, PAGE, after).await?;
            Ok(page.items.len())
        })
        .await?;
        let filtered_page = timed("filtered page", iterations, self.filtered_rows, || async {
            let page = matrix::matrix_page(store, TENANT, &self.filter, PAGE, None).await?;
            Ok(page.items.len())
        })
        .await?;
        let mut first = latency(first_page);
        first["rows"] = json!(self.rows);
        let mut deep = latency(deep_page);
        deep["rows"] = json!(self.deep_rows);
        deep["after_rows"] = json!(self.after_rows);
        let mut filtered = latency(filtered_page);
        filtered["rows"] = json!(self.filtered_rows);
        filtered["environments"] = json!(FILTER_ENVIRONMENTS);
        filtered["search"] = json!(FILTER_SEARCH);
        filtered["only_drift"] = json!(true);
        Ok((first, deep, filtered))
    }
}

/// PostgreSQL's view of `rm_matrix_cells`: dead row versions, and whether it has
/// statistics yet (`null` on SQLite).
async fn matrix_table_stats(store: &Store) -> anyhow::Result<(Value, Value)> {
    let Store::Postgres(PgStore { pool, .. }) = store else {
        return Ok((Value::Null, Value::Null));
    };
    let (dead, analyzed): (i64, bool) = sqlx::query_as(
        "SELECT n_dead_tup, (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL) \
         FROM pg_stat_user_tables WHERE relname = 'rm_matrix_cells'",
    )
    .fetch_one(pool)
    .await?;
    Ok((json!(dead), json!(analyzed)))
}

async fn measure_lag(
    store: &Store,
    domain: &Domain,
    rate: u32,
    seconds: u64,
) -> anyhow::Result<Value> {
    let (handle, projector) = Projector::new(
        store.clone(),
        projections::all(),
        ProjectorOptions::default(),
    )
    .spawn();
    let result = async {
        // Warm-up: the projector takes its locks and catches up; one command round trip.
        let warm = domain
            .mapping(
                &ctx(Role::Developer),
                &env_id(0),
                &n8n_id(0, 0),
                observe(0, 0, u64::MAX - 1, false),
            )
            .await?;
        handle
            .wait_for(
                matrix::NAME,
                warm.position.unwrap_or(0),
                Duration::from_secs(120),
            )
            .await
            .context("projector warm-up")?;
        eprintln!(
            "  projector running: {:?}",
            handle
                .status()
                .iter()
                .map(|s| (&s.name, s.running_here))
                .collect::<Vec<_>>()
        );

        let total = (rate as u64 * seconds) as usize;
        let period = Duration::from_secs_f64(1.0 / rate as f64);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let issued = Arc::new(AtomicUsize::new(0));
        let progress = Progress::start("lag commands", issued.clone(), total);
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(total);
        for i in 0..total {
            ticker.tick().await;
            issued.fetch_add(1, Ordering::Relaxed);
            let (domain, handle) = (domain.clone(), handle.clone());
            tasks.push(tokio::spawn(async move {
                // A different cell each time within a run (10,000 of them).
                let (e, c) = mapping_parts(i % mappings());
                let t0 = Instant::now();
                let committed = domain
                    .mapping(
                        &ctx(Role::Developer),
                        &env_id(e),
                        &n8n_id(e, c),
                        observe(e, c, u64::MAX / 2 + i as u64, false),
                    )
                    .await;
                let t1 = Instant::now();
                let committed = match committed {
                    Ok(c) => c,
                    Err(e) => return Err(format!("command: {e}")),
                };
                // A command that appended nothing has no lag to measure.
                let Some(position) = committed.position else {
                    return Err("command: appended no event".to_string());
                };
                match handle.wait_for(matrix::NAME, position, LAG_TIMEOUT).await {
                    Ok(()) => Ok((t1 - t0, t1.elapsed())),
                    Err(e) => Err(format!("wait_for: {e}")),
                }
            }));
        }
        let issuing = started.elapsed();
        let mut command = Vec::with_capacity(total);
        let mut lag = Vec::with_capacity(total);
        let (mut errors, mut timeouts) = (0usize, 0usize);
        for task in tasks {
            match task.await? {
                Ok((c, l)) => {
                    command.push(c);
                    lag.push(l);
                }
                Err(e) => {
                    if e.contains("has not reached") {
                        timeouts += 1;
                    } else {
                        errors += 1;
                    }
                    if errors + timeouts <= 5 {
                        eprintln!("  lag sample failed: {e}");
                    }
                }
            }
        }
        drop(progress);
        let failed: Vec<_> = handle
            .status()
            .into_iter()
            .filter_map(|s| s.failed.map(|f| (s.name, f)))
            .collect();
        if !failed.is_empty() {
            eprintln!("  projections failed: {failed:?}");
        }
        let mut lag_v = latency(lag);
        let p99 = lag_v["p99_ms"].as_f64().unwrap_or(f64::MAX);
        lag_v["command"] = latency(command);
        lag_v["rate_target"] = json!(rate);
        lag_v["rate_achieved"] = json!((total as f64 / issuing.as_secs_f64()).round());
        lag_v["seconds"] = json!(round3(issuing.as_secs_f64()));
        lag_v["errors"] = json!(errors);
        lag_v["timeouts"] = json!(timeouts);
        lag_v["failed_projections"] = json!(failed.len());
        lag_v["target_p99_ms"] = json!(100);
        lag_v["meets_target"] = json!(p99 <= 100.0 && errors + timeouts == 0 && failed.is_empty());
        require(errors == 0, || {
            format!("lag: {errors} of {total} commands failed or appended nothing")
        });
        require(timeouts == 0, || {
            format!(
                "lag: {timeouts} of {total} changes were not in the matrix within {} s (missing \
                 from the distribution)",
                LAG_TIMEOUT.as_secs()
            )
        });
        require(failed.is_empty(), || {
            format!("lag: projections failed: {failed:?}")
        });
        require_eq(
            lag_v["n"].as_u64().unwrap_or(0),
            total as u64,
            "lag: samples",
        );
        anyhow::Ok(lag_v)
    }
    .await;
    projector.abort();
    let _ = projector.await;
    result
}

// ----------------------------------------------------------------------------------

async fn run(args: &Args, store: &Store) -> anyhow::Result<Value> {
    store.migrate().await?;
    let domain = Domain::new(CommandBus::new(store.clone()));
    // The reactors run as in the service (they release the link slots of mappings
    // that go missing); aborted when the run ends.
    let (_, reactors) =
        workflowops::reactors::ReactorRuntime::standard(&domain, Default::default()).spawn();
    let _reactors = AbortOnDrop(reactors);

    // Population
    let existing = count_events(store).await?;
    if existing > 0 {
        eprintln!("reusing a populated log: {existing} events (population skipped)");
        return measure(
            args,
            store,
            &domain,
            json!({ "events": existing, "reused": true }),
        )
        .await;
    }
    eprintln!(
        "populating: setup ({} environments, {} canonical workflows, {} mappings)",
        environments(),
        canonicals(),
        mappings()
    );
    let started = Instant::now();
    let setup = populate(&domain, args.clients).await?;
    let setup_tally = Tally {
        commands: setup["commands"].as_u64().unwrap_or(0) as usize,
        errors: setup["errors"].as_u64().unwrap_or(0) as usize,
    };
    let setup_seconds = started.elapsed().as_secs_f64();
    let after_setup = count_events(store).await? as usize;
    eprintln!(
        "  setup: {} commands, {after_setup} events in {setup_seconds:.1} s ({} errors)",
        setup_tally.commands, setup_tally.errors
    );
    let appended = Arc::new(AtomicUsize::new(after_setup));
    let bulk_started = Instant::now();
    let mut bulk = Tally::default();
    if after_setup < args.events {
        eprintln!(
            "populating: bulk history up to {} events with {} clients",
            args.events, args.clients
        );
        let progress = Progress::start("events", appended.clone(), args.events);
        bulk = on_clients(args.clients, |client| {
            bulk_client(
                domain.clone(),
                client,
                args.clients,
                appended.clone(),
                args.events,
            )
        })
        .await?;
        drop(progress);
    }
    let bulk_seconds = bulk_started.elapsed().as_secs_f64();
    let events = count_events(store).await?;
    let population_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "  populated: {events} events, {} commands in {population_seconds:.1} s ({:.0} events/s; bulk {bulk_seconds:.1} s, {} errors)",
        setup_tally.commands + bulk.commands,
        events as f64 / population_seconds,
        setup_tally.errors + bulk.errors,
    );
    let errors = setup_tally.errors + bulk.errors;
    require(events as usize >= args.events, || {
        format!(
            "population: the log holds {events} events, --events asked for {}",
            args.events
        )
    });
    require(errors == 0, || {
        format!(
            "population: {errors} of {} commands failed",
            setup_tally.commands + bulk.commands
        )
    });
    let population = json!({
        "events": events,
        "environments": environments(),
        "canonical_workflows": canonicals(),
        "mappings": mappings(),
        "commands": setup_tally.commands + bulk.commands,
        "errors": errors,
        "clients": args.clients,
        "seconds": round3(population_seconds),
        "setup_seconds": round3(setup_seconds),
        "events_per_sec": (events as f64 / population_seconds).round(),
    });
    measure(args, store, &domain, population).await
}

async fn measure(
    args: &Args,
    store: &Store,
    domain: &Domain,
    population: Value,
) -> anyhow::Result<Value> {
    // Every committed event visible to the log's readers (the rebuild, the projector).
    bench_store::settle_log(store, Duration::from_secs(600)).await?;

    // 1. Rebuild
    let mut caught_up = false;
    let rebuild = if args.skip_rebuild {
        Value::Null
    } else {
        eprintln!("rebuild: every read model from position 0");
        let in_log = count_events(store).await?;
        let report = workflowops::read_side::rebuild(store, &[]).await?;
        caught_up = true;
        eprintln!(
            "  rebuilt {} events in {:.2} s (prepare {:.2} s, swap {:.3} s, {} tables moved, \
             {} rows copied): {:.0} events/s",
            report.events,
            report.seconds,
            report.prepare_seconds,
            report.swap_seconds,
            report.tables_moved,
            report.rows_copied,
            report.events_per_second
        );
        require_some(report.events as usize, "rebuild: events replayed");
        // (the reactors may append a little meanwhile: at least the log as it was)
        require(report.events as i64 >= in_log, || {
            format!(
                "rebuild: replayed {} events, the log holds {in_log}",
                report.events
            )
        });
        json!({
            "events": report.events,
            "seconds": round3(report.seconds),
            "prepare_seconds": round3(report.prepare_seconds),
            "swap_seconds": round3(report.swap_seconds),
            "tables_moved": report.tables_moved,
            "rows_copied": report.rows_copied,
            "events_per_sec": report.events_per_second.round(),
            "projections": report.projections,
            "target_events_per_sec": 50_000,
            "meets_target": report.events_per_second >= 50_000.0,
        })
    };

    // 2. Matrix
    let matrix = if args.skip_matrix {
        Value::Null
    } else {
        if !caught_up {
            eprintln!("catching up the projections");
            let t = Instant::now();
            let mut projector = Projector::new(
                store.clone(),
                projections::all(),
                ProjectorOptions::default(),
            );
            let n = projector.catch_up().await?;
            eprintln!("  applied {n} events in {:.2} s", t.elapsed().as_secs_f64());
        }
        eprintln!("matrix: {} iterations per query", args.iterations);
        let m = measure_matrix(store, args.iterations).await?;
        let last = match &m["after_vacuum_analyze"] {
            Value::Null => &m,
            after => after,
        };
        eprintln!(
            "  p99 ms: first {} / deep {} / filtered {}",
            last["first_page"]["p99_ms"],
            last["deep_page"]["p99_ms"],
            last["filtered_page"]["p99_ms"]
        );
        m
    };

    // 3. Lag
    let lag = if args.skip_lag {
        Value::Null
    } else {
        eprintln!("lag: {} commands/s for {} s", args.rate, args.seconds);
        let l = measure_lag(store, domain, args.rate, args.seconds).await?;
        eprintln!("  lag p50 {} ms, p99 {} ms", l["p50_ms"], l["p99_ms"]);
        l
    };

    Ok(json!({
        "benchmark": "projections",
        "backend": args.population.backend,
        "population": population,
        "rebuild": rebuild,
        "matrix": matrix,
        "lag": lag,
    }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse_from(outcome::args_with_smoke(SMOKE));
    let report = bench(&args).await;
    outcome::conclude("projections", args.population.smoke, report)
}

async fn bench(args: &Args) -> anyhow::Result<Value> {
    anyhow::ensure!(
        args.clients > 0 && args.rate > 0,
        "--clients and --rate must be positive"
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
    let report = run(args, &store).await;
    // the database goes whether or not the run succeeded
    bench.finish().await;
    report
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
