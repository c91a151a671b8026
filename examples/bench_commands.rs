//! Command throughput and latency through the aggregates and the event store.
//!
//! Each client drives whole drift-incident lifecycles (open, acknowledge, stabilize,
//! reconcile, close: five commands, each a load + decide + append through the
//! command bus, as a mutation does) until N commands have run in total. Prints
//! progress to stderr and one JSON line with the figures to stdout.
//!
//! **Smoke** (`--smoke`): 300 commands from 4 clients, for CI in a debug build; sizes
//! given with it win. **Fails** (non-zero exit, after the JSON, the problems on
//! stderr and in `problems`) when a command failed, fewer commands ran than asked, or
//! the log does not verify or holds fewer events than commands succeeded.
//!
//!   cargo run --release --example bench_commands -- --backend postgres -n 20000 -c 16
//!   cargo run --release --example bench_commands -- --backend sqlite -n 20000 -c 1
//!
//! PostgreSQL: a fresh database is created on `--pg-url`'s server and dropped after.
//!
//! `--compare-pgbench` (PostgreSQL) then runs pgbench on the same database for as
//! long as the commands ran, with the same number of clients, executing one
//! command's SQL shape without group commit (examples/common/pgbench.rs): the
//! peer, side by side in the same run. The JSON gets `pgbench_tps` and
//! `vs_pgbench` (commands/s divided by pgbench's transactions/s).
//!
//! The store commits concurrent commands in groups (one statement on PostgreSQL,
//! one transaction on SQLite): `groups` and `mean_group` report how many and how
//! large, `groups_retried` how many went again after their first statement (a
//! sequence was taken, or an error).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregates::incident::{
    AffectedWorkflow, DriftIncident, IncidentCommand, IncidentPolicy, ResolutionType,
};
use aggregates::kernel::command::{Actor, Role};
use aggregates::kernel::ids::{LocalId, TenantId};
use clap::Parser;
use eventstore::{PgStore, Store};
use workflowops::command::bus::{CommandBus, CommandContext};

#[path = "common/outcome.rs"]
mod outcome;
use outcome::{require, require_eq};

// The same allocator as the service binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(args_override_self = true)]
struct Args {
    /// sqlite or postgres
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// Tiny sizes (a few seconds in a debug build); sizes given on the command line
    /// still win.
    #[arg(long)]
    smoke: bool,
    /// Total commands.
    #[arg(short = 'n', long, default_value_t = 20_000)]
    commands: usize,
    /// Concurrent clients.
    #[arg(short = 'c', long, default_value_t = 16)]
    clients: usize,
    /// Connection pool size (default: clients + 2 on PostgreSQL, 4 on SQLite as the service).
    #[arg(long)]
    pool: Option<u32>,
    /// Server to create the benchmark database on.
    #[arg(
        long,
        env = "WORKFLOWOPS_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_url: String,
    /// PostgreSQL: run pgbench with one command's SQL shape afterwards, for as long
    /// and with as many clients, on the same database.
    #[arg(long)]
    compare_pgbench: bool,
}

#[path = "common/pgbench.rs"]
mod pgbench;

const LIFECYCLE: usize = 5;

fn command(step: usize, environment: &LocalId) -> IncidentCommand {
    match step {
        0 => IncidentCommand::Open {
            environment_id: environment.clone(),
            production: true,
            affected_workflows: (0..3)
                .map(|i| AffectedWorkflow {
                    workflow_id: format!("wf-{i}"),
                    name: format!("Workflow {i}"),
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

/// `--smoke`: the sizes put before the arguments given.
const SMOKE: &[&str] = &["--commands", "300", "--clients", "4"];

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse_from(outcome::args_with_smoke(SMOKE));
    let smoke = args.smoke;
    let report = bench(args).await;
    outcome::conclude("commands", smoke, report)
}

async fn bench(args: Args) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        args.commands > 0 && args.clients > 0,
        "--commands and --clients must be positive"
    );
    let temp = tempfile::tempdir()?;
    let (store, cleanup) = match args.backend.as_str() {
        "sqlite" => {
            let path = temp.path().join("bench.db");
            (
                Store::connect(
                    &format!("sqlite://{}", path.display()),
                    args.pool.unwrap_or(4),
                )
                .await?,
                None,
            )
        }
        "postgres" => {
            let database = format!("wfo_bench_{}", uuid::Uuid::new_v4().simple());
            let admin = Store::connect(&args.pg_url, 1).await?;
            if let Store::Postgres(PgStore { pool, .. }) = &admin {
                sqlx::query(&format!("CREATE DATABASE {database}"))
                    .execute(pool)
                    .await?;
            }
            let pool_size = args.pool.unwrap_or(args.clients as u32 + 2);
            let url = eventstore::with_database(&args.pg_url, &database);
            (
                Store::connect(&url, pool_size).await?,
                Some((admin, database)),
            )
        }
        other => anyhow::bail!("unknown backend {other} (sqlite or postgres)"),
    };
    store.migrate().await?;
    let bus = CommandBus::new(store.clone());
    let tenant = TenantId::parse("bench").map_err(|e| anyhow::anyhow!("{e}"))?;
    let environment = LocalId::parse("prod").map_err(|e| anyhow::anyhow!("{e}"))?;

    let issued = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = vec![];
    for client in 0..args.clients {
        let (bus, tenant, environment, issued) = (
            bus.clone(),
            tenant.clone(),
            environment.clone(),
            issued.clone(),
        );
        let total = args.commands;
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total / args.clients + LIFECYCLE);
            let mut errors = 0usize;
            let mut incident = 0usize;
            'outer: loop {
                let id = LocalId::parse(format!("c{client}-i{incident}")).expect("valid id");
                incident += 1;
                for step in 0..LIFECYCLE {
                    if issued.fetch_add(1, Ordering::Relaxed) >= total {
                        break 'outer;
                    }
                    let role = if step == 0 { Role::System } else { Role::Admin };
                    let ctx = CommandContext::new(tenant.clone(), Actor::new("bench", role));
                    let t = Instant::now();
                    let result = bus
                        .execute::<DriftIncident, _>(
                            &ctx,
                            &[&id],
                            command(step, &environment),
                            false,
                            &(),
                        )
                        .await;
                    latencies.push(t.elapsed());
                    if let Err(e) = result {
                        if errors < 3 {
                            eprintln!("  command failed: {e}");
                        }
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = vec![];
    let mut errors = 0;
    for client in clients {
        let (l, e) = client.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let stats = store.group_stats();
    let mut report = serde_json::json!({
        "benchmark": "commands",
        "backend": args.backend,
        "commands": latencies.len(),
        "clients": args.clients,
        "errors": errors,
        "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "commands_per_sec": (latencies.len() as f64 / elapsed.as_secs_f64()).round(),
        "p50_ms": (percentile(&latencies, 50.0) * 1000.0).round() / 1000.0,
        "p99_ms": (percentile(&latencies, 99.0) * 1000.0).round() / 1000.0,
        "max_ms": (percentile(&latencies, 100.0) * 1000.0).round() / 1000.0,
        "groups": stats.groups,
        "mean_group": (stats.appends as f64 / stats.groups.max(1) as f64 * 100.0).round() / 100.0,
        "groups_retried": stats.retried,
    });
    if args.compare_pgbench {
        let Some((_, database)) = &cleanup else {
            anyhow::bail!("--compare-pgbench needs --backend postgres");
        };
        let seconds = elapsed.as_secs().max(5);
        eprintln!(
            "pgbench: one command's SQL shape, {} clients, {seconds} s",
            args.clients
        );
        let url = eventstore::with_database(&args.pg_url, database);
        let peer = pgbench::run(
            &store,
            &url,
            args.clients,
            seconds,
            args.commands / LIFECYCLE,
        )
        .await?;
        if peer.transactions == 0 || peer.failed > 0 {
            anyhow::bail!(
                "pgbench ran {} transactions ({} failed): nothing to compare with",
                peer.transactions,
                peer.failed
            );
        }
        let commands_per_sec = latencies.len() as f64 / elapsed.as_secs_f64();
        report["pgbench_tps"] = serde_json::json!(peer.tps.round());
        report["pgbench_seconds"] = serde_json::json!(peer.seconds);
        report["vs_pgbench"] =
            serde_json::json!((commands_per_sec / peer.tps * 100.0).round() / 100.0);
        eprintln!(
            "commands {commands_per_sec:.0}/s against pgbench {:.0}/s: {:.2}x",
            peer.tps,
            commands_per_sec / peer.tps
        );
    }
    let verified = store.verify().await?;
    eprintln!(
        "log verifies: {} ({} events)",
        verified.ok, verified.checked_events
    );
    store.close().await;
    if let Some((Store::Postgres(PgStore { pool, .. }), database)) = &cleanup {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .execute(pool)
            .await?;
    }
    require(errors == 0, || {
        format!("{errors} of {} commands failed", latencies.len())
    });
    require_eq(latencies.len(), args.commands, "commands run");
    require(verified.ok, || "the log does not verify".to_string());
    let succeeded = latencies.len() - errors;
    require(verified.checked_events as usize >= succeeded, || {
        format!(
            "the log holds {} events for {succeeded} commands that succeeded",
            verified.checked_events
        )
    });
    Ok(report)
}
