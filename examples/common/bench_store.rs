//! The benchmarks' database: a SQLite file (in `temp`, or the `--database` path) or a
//! PostgreSQL database on `pg_url` (a fresh one, dropped by [`BenchStore::finish`],
//! or the `--database` name, created if missing and kept).
//!
//! Included by each benchmark with `#[path = "common/bench_store.rs"] mod bench_store;`.

use std::path::Path;

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
