//! The benchmarks' database: a SQLite file (in `temp`, or the `--database` path) or a
//! PostgreSQL database on `pg_url` (a fresh one, dropped by [`BenchStore::finish`],
//! or the `--database` name, created if missing and kept).
//!
//! Included by each benchmark with `#[path = "common/bench_store.rs"] mod bench_store;`.

use std::path::Path;
use std::time::{Duration, Instant};

use eventstore::{PgStore, Store};

pub struct BenchStore {
    pub store: Store,
    /// The admin connection and the database to drop afterwards.
    cleanup: Option<(Store, String)>,
}

impl BenchStore {
    pub async fn open(
        backend: &str,
        database: Option<&str>,
        pool: Option<u32>,
        pg_url: &str,
        temp: &Path,
    ) -> anyhow::Result<BenchStore> {
        match backend {
            "sqlite" => {
                let path = match database {
                    Some(path) => std::path::PathBuf::from(path),
                    None => temp.join("bench.db"),
                };
                let url = format!("sqlite://{}", path.display());
                Ok(BenchStore {
                    store: Store::connect(&url, pool.unwrap_or(4)).await?,
                    cleanup: None,
                })
            }
            "postgres" => {
                let name = match database {
                    Some(name) => name.to_string(),
                    None => format!("wfo_bench_{}", uuid::Uuid::new_v4().simple()),
                };
                let admin = Store::connect(pg_url, 1).await?;
                if let Store::Postgres(PgStore { pool, .. }) = &admin {
                    let exists: bool = sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                    )
                    .bind(&name)
                    .fetch_one(pool)
                    .await?;
                    if !exists {
                        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                            .execute(pool)
                            .await?;
                    }
                }
                let url = eventstore::with_database(pg_url, &name);
                let keep = database.is_some();
                match Store::connect(&url, pool.unwrap_or(16)).await {
                    Ok(store) => Ok(BenchStore {
                        store,
                        cleanup: (!keep).then_some((admin, name)),
                    }),
                    Err(e) => {
                        if !keep {
                            drop_database(&admin, &name).await;
                        }
                        Err(e.into())
                    }
                }
            }
            other => anyhow::bail!("unknown backend {other} (sqlite or postgres)"),
        }
    }

    /// Closes the store and drops the database it created (whether or not the run
    /// succeeded).
    pub async fn finish(self) {
        self.store.close().await;
        if let Some((admin, database)) = &self.cleanup {
            drop_database(admin, database).await;
        }
    }
}

async fn drop_database(admin: &Store, database: &str) {
    if let Store::Postgres(PgStore { pool, .. }) = admin {
        if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .execute(pool)
            .await
        {
            eprintln!("could not drop {database}: {e}");
        }
    }
}

/// Waits until the log's readers see every committed event, and returns the last
/// position. On PostgreSQL a reader holds back the events of transactions newer than
/// the oldest transaction still open on the server, whichever database it is in
/// (`pg_snapshot_xmin`): a long transaction elsewhere (another process's tests) hides
/// the latest events from the projections, the subscribers and `read_after`, and a
/// benchmark that went on would measure read models still catching up. Fails after
/// `timeout`, saying so.
#[allow(dead_code)] // not every benchmark reads the log
pub async fn settle_log(store: &Store, timeout: Duration) -> anyhow::Result<i64> {
    if let Store::Postgres(PgStore { pool, .. }) = store {
        let started = Instant::now();
        let mut told = false;
        loop {
            let held: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM events WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())",
            )
            .fetch_one(pool)
            .await?;
            if held == 0 {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "{held} events are still held back from the log's readers after {} s: a \
                 transaction older than them is open elsewhere on the PostgreSQL server",
                timeout.as_secs()
            );
            if !told && started.elapsed() > Duration::from_secs(1) {
                eprintln!(
                    "  {held} events held back from the log's readers by a transaction open \
                     elsewhere on the server; waiting (at most {} s)",
                    timeout.as_secs()
                );
                told = true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(store.last_position().await?)
}

/// Waits until `tables` are as the service's projector keeps them (decisions 61 and
/// 65: it analyzes a table that changed more than autovacuum's default threshold
/// since its last `ANALYZE`, and vacuums one with more dead rows than its threshold
/// when autovacuum does not, once PostgreSQL's activity counters show it, within
/// seconds). A benchmark that went on at once would time the plans of tables the
/// planner knows nothing of yet, or time the projector's own upkeep of the
/// population's last changes: an `ANALYZE` costs about 80 ms of a core at 1,000 ×
/// 10, with every cached plan made again after it, and landed in the timed
/// executed-page phase of about one fresh run in three, taking its p99 from about 29
/// to 40 ms (decision 64). Settled means both: the planner's row count (`reltuples`)
/// is within that threshold of the table's real count, and the projector's own test
/// finds nothing due ([`projections::runtime::upkeep_due`]). The counters lag: a
/// server connection reports its changes at most once a second, so the test starts
/// two seconds after the call. PostgreSQL only; fails after `timeout`.
#[allow(dead_code)] // not every benchmark pages the read models
pub async fn settle_statistics(
    store: &Store,
    tables: &[&str],
    timeout: Duration,
) -> anyhow::Result<()> {
    let Store::Postgres(PgStore { pool, .. }) = store else {
        return Ok(());
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    loop {
        let mut stale = vec![];
        for table in tables {
            let (rows, planned): (i64, f32) = sqlx::query_as(&format!(
                "SELECT (SELECT COUNT(*) FROM {table}), \
                 (SELECT reltuples FROM pg_class WHERE oid = to_regclass('{table}'))"
            ))
            .fetch_one(pool)
            .await?;
            let planned = f64::from(planned.max(0.0));
            if rows > 50 && (rows as f64 - planned).abs() > 50.0 + 0.1 * rows as f64 {
                stale.push(format!(
                    "{table} ({rows} rows, the planner thinks {planned})"
                ));
            }
        }
        for due in projections::runtime::upkeep_due(store, tables).await? {
            let what = if due.vacuum {
                "dead rows to vacuum"
            } else {
                "rows changed since its last ANALYZE"
            };
            stale.push(format!("{} ({what})", due.table));
        }
        if stale.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "the planner statistics are not current after {} s: {}",
            timeout.as_secs(),
            stale.join(", ")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
