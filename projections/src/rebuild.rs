//! Live rebuilds: replaying read models from position 0 while services query them.
//!
//! A rebuild never empties the read models the services read. It replays the log into
//! a *shadow* — a PostgreSQL schema, or a SQLite database file next to the live one —
//! with the unchanged projector runtime and projections, through a second [`Store`]
//! whose connections resolve the rebuilt tables and `projection_checkpoints` to the
//! shadow while `events` still resolves to the live log (`search_path = shadow, live`
//! on PostgreSQL; on SQLite the shadow file is `main` and the live database is
//! attached as `live`, and unqualified names look in `main` first). No projection
//! reads another projection's table (each reads only its own rows), so nothing a
//! replay reads falls through to a live read model. Then one transaction on the live
//! database swaps the result in:
//!
//! 1. lock the live checkpoint rows of the rebuilt projections (`FOR UPDATE`; `BEGIN
//!    IMMEDIATE` on SQLite): a serving projector's next batch waits for the swap;
//! 2. if a live checkpoint is ahead of the shadow's (the service applied newer events
//!    meanwhile): on PostgreSQL, the shadow catches up to the locked live checkpoints
//!    while the serving projectors wait (at most 2 s; under a steady stream of appends
//!    the live projectors are always a little ahead of a shadow that comes to swap);
//!    if it still is behind, or on SQLite, roll back, let the shadow catch up and
//!    try again (bounded);
//! 3. PostgreSQL: per table, drop the live table and move the shadow's into the live
//!    schema (`SET SCHEMA`), which does not grow with the rows. The shadow's tables
//!    are logged, have the live primary key's name, and before the swap, outside its
//!    lock, were given the live tables' other indexes (same names and definitions)
//!    and statistics. The move takes each table's exclusive lock: it waits for the
//!    queries reading it to finish, and queries that arrive meanwhile wait until the
//!    commit; a query holding a table longer than [`SWAP_LOCK_TIMEOUT`] makes the
//!    swap let go and try again.
//!    Prepared statements re-resolve the tables by name after the move.
//!    SQLite: per table, delete the live rows that differ from the shadow's and insert
//!    the shadow's rows that differ from the live ones (`EXCEPT`, so a rebuild that
//!    changes nothing writes nothing); readers see the old rows until the commit (WAL)
//!    and are never blocked;
//! 4. set the live checkpoints to the shadow's, clear recorded failures, bump the
//!    generation, commit.
//!
//! The serving projectors see the new generation the next time they are idle (woken
//! at once by `pg_notify` on PostgreSQL, by their poll on SQLite) and reload. Since
//! the swap only happens when the shadow is at least as far as the live checkpoint, a
//! serving projector's own checkpoint is never ahead of what its tables hold, so a
//! read-your-writes wait cannot answer early.
//!
//! `projection_rebuilds` (one row per projection being rebuilt) holds the progress and
//! a heartbeat, and is the claim: a second rebuild of a projection is refused while
//! the first one's heartbeat is recent; a stale row is a crashed rebuild, whose shadow
//! is dropped and whose rows are taken over.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::BoxFuture;
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::runtime::{
    analyze, ensure_checkpoint_row, Failure, Projection, ProjectionStatus, Projector,
    ProjectorOptions, Step,
};
use crate::sql::{fmt_time, parse_time, Dialect, Sql, Tx};
use eventstore::{PgStore, SqliteStore, Store, StoreError, EVENTS_CHANNEL};

/// A rebuild whose heartbeat is older than this has stopped (crashed): the next
/// rebuild of its projections takes over.
pub const STALE_AFTER: Duration = Duration::from_secs(30);
/// How often a running rebuild writes its heartbeat (also with its progress).
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A rebuild records its progress after its first batch, then after the first batch
/// at least this long after the last record: writing every projection's row after
/// each of 100 batches took 1–4 s of a 5,000,000-event replay (decision 83).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Swap attempts before giving up when the live projectors keep moving ahead.
const SWAP_ATTEMPTS: u32 = 20;
/// How long a shadow projector waits for a lock a crashed rebuild may still hold.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// The advisory-lock namespace of the shadow projectors (the service holds
/// [`crate::runtime::LIVE_LOCKS`]).
pub const REBUILD_LOCKS: &str = "workflowops.rebuild";
const PG_SHADOW_PREFIX: &str = "workflowops_rebuild_";
const SQLITE_SHADOW_INFIX: &str = ".rebuild-";
const CHECKPOINTS: &str = "projection_checkpoints";

/// One projection being rebuilt, as `projection_rebuilds` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebuildProgress {
    pub projection: String,
    pub started_at: String,
    /// The last heartbeat.
    pub updated_at: String,
    /// The global position the shadow has reached.
    pub position: i64,
    /// The last position of the log when last looked (the rebuild ends past it).
    pub target: i64,
    /// Events replayed so far.
    pub events: i64,
    /// No heartbeat for [`STALE_AFTER`]: the rebuild stopped without cleaning up
    /// (the next rebuild of the projection takes over).
    pub stale: bool,
}

/// Called with the progress of each projection after the first replayed batch, then
/// after a batch at most every half second ([`PROGRESS_EVERY`]).
pub type ProgressHook = Arc<dyn Fn(Vec<RebuildProgress>) -> BoxFuture<'static, ()> + Send + Sync>;

/// Tuning of a rebuild.
#[derive(Clone)]
pub struct RebuildOptions {
    /// Events per batch of the shadow projector.
    pub batch_size: i64,
    pub on_progress: Option<ProgressHook>,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        RebuildOptions {
            batch_size: 50_000,
            on_progress: None,
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildOutcome {
    /// Events read from the log and applied to the shadow.
    pub events: u64,
    /// The replay into the shadow (creating it included).
    pub replay_seconds: f64,
    /// The swap transaction that committed (the live checkpoint rows were locked
    /// this long).
    pub swap_seconds: f64,
    pub swap_attempts: u32,
    /// Live rows deleted plus rows inserted by the swap (SQLite: 0 when the rebuilt
    /// read models equal the live ones; PostgreSQL moves tables instead: 0).
    pub rows_copied: u64,
    /// Tables the swap moved into place (PostgreSQL: every rebuilt table).
    pub tables_moved: u32,
    /// Readying the shadow's tables to be moved (PostgreSQL: their secondary
    /// indexes built, analyzed), between the replay and the swap.
    pub prepare_seconds: f64,
    /// SQLite: `ANALYZE` of the tables the swap changed.
    pub maintenance_seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(
        "a rebuild of {projection} is already running since {since} (last heartbeat \
         {heartbeat}); a rebuild silent for {}s is taken over",
        STALE_AFTER.as_secs()
    )]
    AlreadyRunning {
        projection: String,
        since: String,
        heartbeat: String,
    },
    #[error(
        "an in-memory SQLite database cannot be rebuilt live (no other connection can \
         attach it); rebuild a database file"
    )]
    InMemory,
    #[error(
        "projection {projection} stopped at position {} ({}): {}; the live read model \
         was left as it was", .failure.position, .failure.event, .failure.error
    )]
    Failed {
        projection: String,
        failure: Failure,
    },
    #[error(
        "projection {0} is being replayed by another rebuild process (its rebuild lock \
         is held); the live read model was left as it was"
    )]
    Locked(String),
    #[error(
        "the live read models kept moving ahead of the rebuild, or queries kept holding \
         their tables ({0} attempts to swap it in); the live read models were left as \
         they were"
    )]
    KeptMoving(u32),
    #[error("cannot prepare the rebuild: {0}")]
    Schema(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RebuildError {
    fn from(e: sqlx::Error) -> Self {
        RebuildError::Store(StoreError::Database(e))
    }
}

/// Where the live read models are.
enum Live {
    /// The schema the live connections resolve the tables in.
    Postgres { schema: String },
    /// The live database file.
    Sqlite { path: PathBuf },
}

impl Live {
    async fn inspect(store: &Store) -> Result<Live, RebuildError> {
        match store {
            Store::Postgres(PgStore { pool, .. }) => {
                let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()")
                    .fetch_one(pool)
                    .await?;
                let schema = schema.ok_or_else(|| {
                    RebuildError::Schema("the connection's search_path names no schema".into())
                })?;
                Ok(Live::Postgres { schema })
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                let file: String =
                    sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                        .fetch_one(pool)
                        .await?;
                if file.is_empty() {
                    return Err(RebuildError::InMemory);
                }
                Ok(Live::Sqlite {
                    path: PathBuf::from(file),
                })
            }
        }
    }

    /// The shadow of run `run`: a schema name or a file path.
    fn shadow_name(&self, run: &str) -> String {
        match self {
            Live::Postgres { .. } => format!("{PG_SHADOW_PREFIX}{run}"),
            Live::Sqlite { path } => format!("{}{SQLITE_SHADOW_INFIX}{run}", path.display()),
        }
    }

    /// Whether `shadow` (read back from `projection_rebuilds`) is a shadow this code
    /// creates: nothing else is ever dropped.
    fn owns(&self, shadow: &str) -> bool {
        let run_ok = |run: &str| !run.is_empty() && run.chars().all(|c| c.is_ascii_alphanumeric());
        match self {
            Live::Postgres { .. } => shadow.strip_prefix(PG_SHADOW_PREFIX).is_some_and(run_ok),
            Live::Sqlite { path } => shadow
                .strip_prefix(&format!("{}{SQLITE_SHADOW_INFIX}", path.display()))
                .is_some_and(run_ok),
        }
    }
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Every rebuild recorded in `projection_rebuilds` (running, or stale: stopped
/// without cleaning up), by projection name.
pub async fn rebuild_progress(store: &Store) -> Result<Vec<RebuildProgress>, StoreError> {
    let sql = "SELECT name, started_at, updated_at, position, target, events \
               FROM projection_rebuilds ORDER BY name";
    let rows: Vec<(String, String, String, i64, i64, i64)> = match store {
        Store::Postgres(PgStore { pool, .. }) => sqlx::query_as(sql).fetch_all(pool).await?,
        Store::Sqlite(SqliteStore { pool, .. }) => sqlx::query_as(sql).fetch_all(pool).await?,
    };
    let now = Utc::now();
    Ok(rows
        .into_iter()
        .map(
            |(projection, started_at, updated_at, position, target, events)| RebuildProgress {
                stale: is_stale(&updated_at, now),
                projection,
                started_at,
                updated_at,
                position,
                target,
                events,
            },
        )
        .collect())
}

fn is_stale(heartbeat: &str, now: chrono::DateTime<Utc>) -> bool {
    parse_time(heartbeat).is_none_or(|at| {
        now.signed_duration_since(at)
            .to_std()
            .is_ok_and(|age| age > STALE_AFTER)
    })
}

/// Rebuilds `projections` into a shadow and swaps the result in (see the module
/// documentation). The live read models stay complete and queryable throughout; if
/// anything fails they are left exactly as they were.
pub async fn rebuild(
    store: &Store,
    projections: Vec<Box<dyn Projection>>,
    options: RebuildOptions,
) -> Result<RebuildOutcome, RebuildError> {
    if projections.is_empty() {
        return Ok(RebuildOutcome::default());
    }
    let names: Vec<&'static str> = projections.iter().map(|p| p.name()).collect();
    let tables: Vec<&'static str> = projections
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect();
    let live = Live::inspect(store).await?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    let shadow = live.shadow_name(&run);
    for name in &names {
        ensure_checkpoint_row(store, name).await?;
    }
    let target = store.last_position().await?;
    let stale = claim(store, &names, &run, &shadow, target).await?;
    let heartbeat = Heartbeat::start(store.clone(), run.clone());

    let mut result = Ok(());
    for old in &stale {
        if let Err(e) = drop_shadow(store, &live, old).await {
            result = Err(e);
            break;
        }
    }
    let result = match result {
        Ok(()) => {
            let job = Job {
                store,
                live: &live,
                shadow: &shadow,
                names: &names,
                tables: &tables,
                run: &run,
                options: &options,
            };
            job.run(projections).await
        }
        Err(e) => Err(e),
    };
    drop(heartbeat);
    if let Err(error) = drop_shadow(store, &live, &shadow).await {
        tracing::warn!(%error, shadow, "could not drop the rebuild's shadow (the next rebuild drops it)");
    }
    if let Err(error) = release(store, &run).await {
        tracing::warn!(%error, "could not delete the rebuild's progress rows (they go stale)");
    }
    let (mut outcome, swapped) = result?;

    // SQLite: the tables changed under the planner's statistics. (PostgreSQL's moved
    // tables were analyzed before the swap, and nothing is left to vacuum.)
    let started = Instant::now();
    let changed: Vec<&str> = swapped
        .iter()
        .filter(|t| t.deleted + t.inserted > 0)
        .map(|t| t.table)
        .collect();
    if !changed.is_empty() {
        if let Err(error) = analyze(store, &changed).await {
            tracing::warn!(%error, "could not analyze the rebuilt tables");
        }
    }
    outcome.maintenance_seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// Claims `names` for run `run` in `projection_rebuilds`, in one transaction. Returns
/// the shadows of crashed rebuilds it took over.
async fn claim(
    store: &Store,
    names: &[&str],
    run: &str,
    shadow: &str,
    target: i64,
) -> Result<Vec<String>, RebuildError> {
    let _turn = write_turn(store).await;
    let mut tx = Tx::begin_immediate(store).await?;
    if tx.backend() == Dialect::Postgres {
        // Claims queue here; progress readers do not.
        tx.execute("LOCK TABLE projection_rebuilds IN SHARE ROW EXCLUSIVE MODE")
            .await?;
    }
    let mut sql = Sql::new(tx.backend());
    let list = sql.args(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
    sql.push(&format!(
        "SELECT name, run, shadow, started_at, updated_at FROM projection_rebuilds \
         WHERE name IN ({list}) ORDER BY name"
    ));
    let rows: Vec<(String, String, String, String, String)> = tx.fetch_as(&sql).await?;
    let now = Utc::now();
    let mut stale_runs: Vec<String> = Vec::new();
    let mut stale_shadows: Vec<String> = Vec::new();
    for (name, old_run, old_shadow, started_at, heartbeat) in rows {
        if !is_stale(&heartbeat, now) {
            tx.rollback().await?;
            return Err(RebuildError::AlreadyRunning {
                projection: name,
                since: started_at,
                heartbeat,
            });
        }
        tracing::warn!(
            projection = name,
            since = started_at,
            heartbeat,
            "taking over a rebuild that stopped without cleaning up"
        );
        if !stale_runs.contains(&old_run) {
            stale_runs.push(old_run);
            stale_shadows.push(old_shadow);
        }
    }
    if !stale_runs.is_empty() {
        // Every row of a crashed run goes: its shadow is dropped below.
        let mut sql = Sql::new(tx.backend());
        let list = sql.args(&stale_runs);
        sql.push(&format!(
            "DELETE FROM projection_rebuilds WHERE run IN ({list})"
        ));
        tx.run(&sql).await?;
    }
    let now = fmt_time(now);
    for name in names {
        let mut sql = Sql::new(tx.backend());
        let text = format!(
            "INSERT INTO projection_rebuilds \
             (name, run, shadow, started_at, updated_at, position, target, events) \
             VALUES ({}, {}, {}, {}, {}, 0, {}, 0)",
            sql.arg(*name),
            sql.arg(run),
            sql.arg(shadow),
            sql.arg(now.clone()),
            sql.arg(now.clone()),
            sql.arg(target),
        );
        sql.push(&text);
        tx.run(&sql).await?;
    }
    tx.commit().await?;
    Ok(stale_shadows)
}

/// Deletes run `run`'s progress rows (its end, success or failure).
async fn release(store: &Store, run: &str) -> Result<(), sqlx::Error> {
    let mut sql = Sql::new(Dialect::of(store));
    let text = format!(
        "DELETE FROM projection_rebuilds WHERE run = {}",
        sql.arg(run)
    );
    sql.push(&text);
    sql.execute(store).await.map(|_| ())
}

async fn write_turn(store: &Store) -> Option<tokio::sync::MutexGuard<'_, ()>> {
    match store {
        Store::Sqlite(sqlite) => Some(sqlite.write_turn().await),
        Store::Postgres(_) => None,
    }
}

/// Writes the run's heartbeat every [`HEARTBEAT`] until dropped (a long batch or a
/// long swap must not look like a crash).
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(store: Store, run: String) -> Heartbeat {
        Heartbeat(tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let mut sql = Sql::new(Dialect::of(&store));
                let text = format!(
                    "UPDATE projection_rebuilds SET updated_at = {} WHERE run = {}",
                    sql.arg(fmt_time(Utc::now())),
                    sql.arg(run.clone()),
                );
                sql.push(&text);
                if let Err(error) = sql.execute(&store).await {
                    tracing::warn!(%error, "could not write the rebuild's heartbeat");
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Drops a shadow (a crashed run's, or this run's at its end). Idempotent.
async fn drop_shadow(store: &Store, live: &Live, shadow: &str) -> Result<(), RebuildError> {
    if !live.owns(shadow) {
        tracing::warn!(shadow, "not a rebuild shadow: left alone");
        return Ok(());
    }
    match store {
        Store::Postgres(PgStore { pool, .. }) => {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", quote(shadow)))
                .execute(pool)
                .await?;
        }
        Store::Sqlite(_) => {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                match std::fs::remove_file(format!("{shadow}{suffix}")) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(RebuildError::Schema(format!(
                            "cannot remove the shadow file {shadow}{suffix}: {e}"
                        )))
                    }
                }
            }
        }
    }
    Ok(())
}

/// The name and definition (`PRIMARY KEY (…)`) of `schema.table`'s primary-key
/// constraint (PostgreSQL).
async fn pg_primary_key(
    conn: &mut sqlx::PgConnection,
    schema: &str,
    table: &str,
) -> Result<(String, String), RebuildError> {
    let key: Option<(String, String)> = sqlx::query_as(
        "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE conrelid = to_regclass($1) AND contype = 'p'",
    )
    .bind(format!("{}.{}", quote(schema), quote(table)))
    .fetch_optional(conn)
    .await?;
    key.ok_or_else(|| {
        RebuildError::Schema(format!(
            "table {schema}.{table} is missing or has no primary key"
        ))
    })
}

/// Refuses a live table that something else depends on (a foreign key, a view, a
/// trigger, a constraint other than its key and checks), which moving the shadow's
/// table into its place would break (PostgreSQL).
async fn pg_check_movable(
    conn: &mut sqlx::PgConnection,
    schema: &str,
    table: &str,
) -> Result<(), RebuildError> {
    let (dependents,): (i64,) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_constraint \
                 WHERE (conrelid = to_regclass($1) AND contype NOT IN ('p', 'c', 'n')) \
                    OR confrelid = to_regclass($1)) \
              + (SELECT count(*) FROM pg_trigger \
                 WHERE tgrelid = to_regclass($1) AND NOT tgisinternal) \
              + (SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
                 WHERE d.refobjid = to_regclass($1) AND r.ev_class <> to_regclass($1))",
    )
    .bind(format!("{}.{}", quote(schema), quote(table)))
    .fetch_one(conn)
    .await?;
    if dependents > 0 {
        return Err(RebuildError::Schema(format!(
            "{schema}.{table} has a foreign key, view, trigger or unique constraint that \
             moving the rebuilt table into its place would break"
        )));
    }
    Ok(())
}

/// The statements that give the shadow's `table` every secondary index the live one
/// has, with the same names and definitions (PostgreSQL).
async fn pg_index_statements(
    conn: &mut sqlx::PgConnection,
    schema: &str,
    shadow: &str,
    table: &str,
) -> Result<Vec<String>, RebuildError> {
    let indexes: Vec<(String, bool, String)> = sqlx::query_as(
        "SELECT c.relname::text, i.indisunique, pg_get_indexdef(i.indexrelid) \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = to_regclass($1) AND NOT i.indisprimary ORDER BY c.relname",
    )
    .bind(format!("{}.{}", quote(schema), quote(table)))
    .fetch_all(&mut *conn)
    .await?;
    indexes
        .into_iter()
        .map(|(name, unique, definition)| {
            // `CREATE [UNIQUE] INDEX name ON schema.table USING method (…) [WHERE …]`
            let Some(at) = definition.find(" USING ") else {
                return Err(RebuildError::Schema(format!(
                    "cannot read the definition of index {name}: {definition}"
                )));
            };
            Ok(format!(
                "CREATE {}INDEX {} ON {}.{table}{}",
                if unique { "UNIQUE " } else { "" },
                quote(&name),
                quote(shadow),
                &definition[at..]
            ))
        })
        .collect()
}

/// Makes the shadow's tables ready to be moved into the live schema (PostgreSQL),
/// before the swap and outside its lock: with every index the live table has, and
/// analyzed.
async fn prepare_move(
    pool: &sqlx::PgPool,
    schema: &str,
    shadow: &str,
    tables: &[&str],
) -> Result<(), RebuildError> {
    let mut work = Vec::new();
    {
        let mut conn = pool.acquire().await?;
        for table in tables {
            let statements = pg_index_statements(&mut conn, schema, shadow, table).await?;
            work.push((table, statements));
        }
    }
    // Built once from the filled table: maintaining them through the replay made a
    // rebuild of 5,000,000 events take 111 s instead of 77. Each on a connection of
    // its own, at the same time: at 5,000,000 events the audit trail's three took
    // 13.6–14.1 s so against 14.1–17.3 s one after the other (decision 66). Each
    // table is analyzed as soon as its own indexes are there (`ANALYZE` waits for
    // a table's index builds), while the audit trail's are still being built
    // (decision 83).
    futures::future::try_join_all(work.iter().map(|(table, statements)| async move {
        futures::future::try_join_all(
            statements
                .iter()
                .map(|statement| async move { sqlx::query(statement).execute(pool).await }),
        )
        .await?;
        sqlx::query(&format!("ANALYZE {}.{table}", quote(shadow)))
            .execute(pool)
            .await
    }))
    .await?;
    Ok(())
}

/// The primary-key columns of a table of the shadow (SQLite, on a shadow connection).
async fn sqlite_primary_key(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
) -> Result<Vec<String>, RebuildError> {
    let key: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM pragma_table_info(?1, 'main') WHERE pk > 0 ORDER BY pk",
    )
    .bind(table)
    .fetch_all(conn)
    .await?;
    if key.is_empty() {
        return Err(RebuildError::Schema(format!(
            "table {table} is missing or has no primary key"
        )));
    }
    Ok(key.iter().map(|c| quote(c)).collect())
}

/// Creates the shadow's tables (each read model's, and `projection_checkpoints`) and
/// returns a store whose connections resolve them there and `events` in the live
/// database.
async fn create_shadow(
    store: &Store,
    live: &Live,
    shadow: &str,
    tables: &[&str],
) -> Result<Store, RebuildError> {
    let all: Vec<&str> = tables.iter().copied().chain([CHECKPOINTS]).collect();
    match (store, live) {
        (Store::Postgres(PgStore { pool, .. }), Live::Postgres { schema }) => {
            let (s, l) = (quote(shadow), quote(schema));
            let mut tx = pool.begin().await?;
            sqlx::query(&format!("CREATE SCHEMA {s}"))
                .execute(&mut *tx)
                .await?;
            for table in &all {
                // With its primary key only: the projections upsert and look up by
                // key, and nothing queries the shadow, so the other indexes would
                // only cost while it fills (they are built before the swap). Logged:
                // the tables are moved into place, and making an unlogged table
                // logged rewrites it. (The checkpoints are not moved: unlogged.)
                if *table != CHECKPOINTS {
                    pg_check_movable(&mut tx, schema, table).await?;
                }
                let (key_name, key) = pg_primary_key(&mut tx, schema, table).await?;
                let unlogged = if *table == CHECKPOINTS {
                    "UNLOGGED "
                } else {
                    ""
                };
                sqlx::query(&format!(
                    "CREATE {unlogged}TABLE {s}.{table} \
                     (LIKE {l}.{table} INCLUDING ALL EXCLUDING INDEXES)"
                ))
                .execute(&mut *tx)
                .await?;
                // Named as the live key: the table may be moved into place (the swap).
                sqlx::query(&format!(
                    "ALTER TABLE {s}.{table} ADD CONSTRAINT {} {key}",
                    quote(&key_name),
                ))
                .execute(&mut *tx)
                .await?;
                // LIKE does not copy storage parameters: the fillfactor keeps the
                // rebuild's repeated upserts on their page (HOT) as it does live.
                let options: Option<String> = sqlx::query_scalar(
                    "SELECT array_to_string(c.reloptions, ', ') FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relname = $2",
                )
                .bind(schema)
                .bind(table)
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
                if let Some(options) = options.filter(|o| !o.is_empty()) {
                    sqlx::query(&format!("ALTER TABLE {s}.{table} SET ({options})"))
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            let search_path = format!("SET search_path TO {s}, {l}");
            let options = (*pool.connect_options()).clone();
            let shadow_pool = PgPoolOptions::new()
                .test_before_acquire(false)
                .max_connections(pool.options().get_max_connections().max(10))
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(move |conn, _| {
                    let search_path = search_path.clone();
                    Box::pin(async move {
                        sqlx::query(&search_path).execute(&mut *conn).await?;
                        Ok(())
                    })
                })
                .connect_with(options)
                .await?;
            Ok(Store::Postgres(PgStore::new(shadow_pool)))
        }
        (Store::Sqlite(_), Live::Sqlite { path }) => {
            let live_file = path.to_string_lossy().into_owned();
            // Thrown away after a crash: no fsync.
            let options = SqliteConnectOptions::new()
                .filename(shadow)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Off)
                .busy_timeout(Duration::from_secs(10))
                .pragma("cache_size", "-32768");
            let shadow_pool = SqlitePoolOptions::new()
                .test_before_acquire(false)
                .max_connections(4)
                .after_connect(move |conn, _| {
                    let live_file = live_file.clone();
                    Box::pin(async move {
                        sqlx::query("ATTACH DATABASE ?1 AS live")
                            .bind(live_file)
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                })
                .connect_with(options)
                .await?;
            let mut sql = Sql::new(Dialect::Sqlite);
            let list = sql.args(&all.iter().map(|t| t.to_string()).collect::<Vec<_>>());
            sql.push(&format!(
                "SELECT name, sql FROM live.sqlite_master WHERE type = 'table' AND name IN ({list})"
            ));
            let shadow_store = Store::Sqlite(SqliteStore::new(shadow_pool));
            let mut tx = Tx::begin(&shadow_store).await?;
            let ddl: Vec<(String, String)> = tx.fetch_as(&sql).await?;
            for table in &all {
                // The live table's own definition (its primary key included); its
                // other indexes are left out, as on PostgreSQL.
                let Some((_, create)) = ddl.iter().find(|(name, _)| name == table) else {
                    return Err(RebuildError::Schema(format!("no table {table}")));
                };
                tx.execute(create).await?;
            }
            tx.commit().await?;
            Ok(shadow_store)
        }
        _ => Err(RebuildError::Schema(
            "store and live database disagree".into(),
        )),
    }
}

/// What the swap did to one table.
struct Swapped {
    table: &'static str,
    deleted: u64,
    inserted: u64,
    /// The shadow's table was moved into place (PostgreSQL).
    moved: bool,
}

enum SwapAttempt {
    Done(Vec<Swapped>),
    /// These live checkpoints are ahead of the shadow's.
    Behind(Vec<String>),
    /// A query held a live table longer than [`SWAP_LOCK_TIMEOUT`].
    Busy,
}

/// How long the swap waits for the queries that read a live table it moves.
const SWAP_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// The projections whose live checkpoint is ahead of the shadow's.
fn behind(
    live: &[(String, i64, i64)],
    shadow: &[(String, i64, i64)],
) -> Result<Vec<String>, RebuildError> {
    let mut ahead = Vec::new();
    for (name, tx_id, position) in live {
        let Some((_, s_tx, s_pos)) = shadow.iter().find(|(n, ..)| n == name) else {
            return Err(RebuildError::Schema(format!(
                "no shadow checkpoint of {name}"
            )));
        };
        if (*tx_id, *position) > (*s_tx, *s_pos) {
            ahead.push(name.clone());
        }
    }
    Ok(ahead)
}

/// Longest a swap holds the live checkpoints while the shadow catches up to them
/// (PostgreSQL); then it lets go, and the shadow catches up without the lock.
const CATCH_UP_UNDER_LOCK: Duration = Duration::from_secs(2);

/// One rebuild run, once claimed.
struct Job<'a> {
    store: &'a Store,
    live: &'a Live,
    shadow: &'a str,
    names: &'a [&'static str],
    tables: &'a [&'static str],
    run: &'a str,
    options: &'a RebuildOptions,
}

impl Job<'_> {
    async fn run(
        &self,
        projections: Vec<Box<dyn Projection>>,
    ) -> Result<(RebuildOutcome, Vec<Swapped>), RebuildError> {
        let started = Instant::now();
        let shadow_store = create_shadow(self.store, self.live, self.shadow, self.tables).await?;
        let result = self
            .replay_and_swap(&shadow_store, projections, started)
            .await;
        shadow_store.close().await;
        result
    }

    async fn replay_and_swap(
        &self,
        shadow_store: &Store,
        projections: Vec<Box<dyn Projection>>,
        started: Instant,
    ) -> Result<(RebuildOutcome, Vec<Swapped>), RebuildError> {
        for name in self.names {
            ensure_checkpoint_row(shadow_store, name).await?;
        }
        let options = ProjectorOptions {
            batch_size: self.options.batch_size,
            lock_namespace: REBUILD_LOCKS.to_string(),
            // Nobody reads the shadow, and a rebuild that stops is discarded.
            defer_writes: true,
            share_recent_rows: false,
            ..ProjectorOptions::default()
        };
        let mut projector = Projector::new(shadow_store.clone(), projections, options);
        let mut outcome = RebuildOutcome::default();
        self.replay(&mut projector, &mut outcome.events).await?;
        outcome.replay_seconds = started.elapsed().as_secs_f64();
        if let (Store::Postgres(PgStore { pool, .. }), Live::Postgres { schema }) =
            (self.store, self.live)
        {
            let prepare = Instant::now();
            prepare_move(pool, schema, self.shadow, self.tables).await?;
            outcome.prepare_seconds = prepare.elapsed().as_secs_f64();
        }
        loop {
            outcome.swap_attempts += 1;
            let attempt = Instant::now();
            match self
                .swap(shadow_store, &mut projector, &mut outcome.events)
                .await?
            {
                SwapAttempt::Done(swapped) => {
                    outcome.swap_seconds = attempt.elapsed().as_secs_f64();
                    outcome.rows_copied = swapped.iter().map(|t| t.deleted + t.inserted).sum();
                    outcome.tables_moved = swapped.iter().filter(|t| t.moved).count() as u32;
                    return Ok((outcome, swapped));
                }
                retry => {
                    if outcome.swap_attempts >= SWAP_ATTEMPTS {
                        return Err(RebuildError::KeptMoving(outcome.swap_attempts));
                    }
                    if let SwapAttempt::Behind(ahead) = retry {
                        tracing::info!(
                            ?ahead,
                            "the live projectors moved on: catching up the shadow"
                        );
                    }
                    self.replay(&mut projector, &mut outcome.events).await?;
                }
            }
        }
    }

    /// Applies batches to the shadow until it has every event committed so far.
    async fn replay(
        &self,
        projector: &mut Projector,
        events: &mut u64,
    ) -> Result<(), RebuildError> {
        let mut target = self.store.last_position().await?;
        // PostgreSQL: where this call ends even if appends never pause, the log's end
        // when it began. Waiting for a read that finds nothing new never ended under a
        // steady stream of appends faster than the shadow's batches; the swap catches
        // the shadow up to the live projectors under its lock. (SQLite's appends and
        // the shadow take turns at the one writer: a read finds nothing new soon.)
        let goal = (Dialect::of(self.store) == Dialect::Postgres).then_some(target);
        // A crashed rebuild's connection may hold a shadow lock a little longer
        // (until the server notices it is gone): the runtime tries again each poll.
        let lock_deadline = Instant::now() + LOCK_WAIT;
        let mut reported: Option<Instant> = None;
        loop {
            match projector.step().await? {
                Step::Applied(n) => {
                    *events += n as u64;
                    if n > 0 && reported.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY) {
                        reported = Some(Instant::now());
                        target = target.max(self.store.last_position().await?);
                        self.progress(&projector.handle().status(), target, *events)
                            .await;
                    }
                    if let Some(goal) = goal {
                        let status = projector.handle().status();
                        let reached = status.iter().all(|s| {
                            s.running_here && (s.failed.is_some() || s.checkpoint.position >= goal)
                        });
                        if n > 0 && reached {
                            break;
                        }
                    }
                }
                Step::Idle => {
                    let status = projector.handle().status();
                    let Some(locked) = status.iter().find(|s| !s.running_here) else {
                        break;
                    };
                    if Instant::now() >= lock_deadline {
                        return Err(RebuildError::Locked(locked.name.clone()));
                    }
                    tokio::time::sleep(ProjectorOptions::default().poll).await;
                }
            }
        }
        projector.stop_deferring().await?;
        projector.flush_checkpoints(true).await?;
        for status in projector.handle().status() {
            if let Some(failure) = status.failed {
                return Err(RebuildError::Failed {
                    projection: status.name,
                    failure,
                });
            }
        }
        Ok(())
    }

    /// Records the progress of each projection (and the heartbeat), then tells the
    /// caller.
    async fn progress(&self, status: &[ProjectionStatus], target: i64, events: u64) {
        let now = fmt_time(Utc::now());
        let mut report = Vec::with_capacity(status.len());
        for s in status {
            let mut sql = Sql::new(Dialect::of(self.store));
            let text = format!(
                "UPDATE projection_rebuilds SET updated_at = {}, position = {}, target = {}, \
                 events = {} WHERE name = {} AND run = {}",
                sql.arg(now.clone()),
                sql.arg(s.checkpoint.position),
                sql.arg(target),
                sql.arg(events as i64),
                sql.arg(s.name.clone()),
                sql.arg(self.run),
            );
            sql.push(&text);
            if let Err(error) = sql.execute(self.store).await {
                tracing::warn!(%error, "could not record the rebuild's progress");
            }
            report.push(RebuildProgress {
                projection: s.name.clone(),
                started_at: String::new(),
                updated_at: now.clone(),
                position: s.checkpoint.position,
                target,
                events: events as i64,
                stale: false,
            });
        }
        if let Some(hook) = &self.options.on_progress {
            hook(report).await;
        }
    }

    /// One attempt at the swap transaction (see the module documentation).
    async fn swap(
        &self,
        shadow_store: &Store,
        projector: &mut Projector,
        events: &mut u64,
    ) -> Result<SwapAttempt, RebuildError> {
        // PostgreSQL: on a live connection, the shadow qualified by its schema.
        // SQLite: on a shadow connection, where the live database is `live`.
        let (on, l, s) = match self.live {
            Live::Postgres { schema } => (self.store, quote(schema), quote(self.shadow)),
            Live::Sqlite { .. } => (shadow_store, "live".to_string(), "main".to_string()),
        };
        let _live_turn = write_turn(self.store).await;
        let _shadow_turn = write_turn(shadow_store).await;
        let mut tx = Tx::begin_immediate(on).await?;
        let pg = tx.backend() == Dialect::Postgres;
        let names: Vec<String> = self.names.iter().map(|n| n.to_string()).collect();
        let checkpoints = |schema: &str, lock: bool| {
            let mut sql = Sql::new(tx.backend());
            let list = sql.args(&names);
            sql.push(&format!(
                "SELECT name, tx_id, position FROM {schema}.{CHECKPOINTS} \
                 WHERE name IN ({list}) ORDER BY name{}",
                if lock && pg { " FOR UPDATE" } else { "" }
            ));
            sql
        };
        let live_sql = checkpoints(&l, true);
        let shadow_sql = checkpoints(&s, false);
        let live_rows: Vec<(String, i64, i64)> = tx.fetch_as(&live_sql).await?;
        let mut shadow_rows: Vec<(String, i64, i64)> = tx.fetch_as(&shadow_sql).await?;
        let mut ahead = behind(&live_rows, &shadow_rows)?;
        if !ahead.is_empty() && pg {
            // The live checkpoint rows are locked: the serving projectors cannot move
            // on. Under a steady stream of appends they are always a little ahead of
            // a shadow that replays and then comes to swap, so the shadow catches up
            // to them here, while they wait (its own connections, its own tables),
            // then the cursors are compared again.
            let deadline = Instant::now() + CATCH_UP_UNDER_LOCK;
            while !ahead.is_empty() && Instant::now() < deadline {
                match projector.step().await? {
                    Step::Applied(n) => *events += n as u64,
                    // the events may not be readable yet (an append still committing)
                    Step::Idle => tokio::time::sleep(Duration::from_millis(5)).await,
                }
                projector.flush_checkpoints(true).await?;
                shadow_rows = tx.fetch_as(&shadow_sql).await?;
                ahead = behind(&live_rows, &shadow_rows)?;
            }
        }
        if !ahead.is_empty() {
            tx.rollback().await?;
            return Ok(SwapAttempt::Behind(ahead));
        }
        if pg {
            // The move waits for the queries reading the live tables, and queries
            // arriving meanwhile wait behind it: if one runs long, let go and retry.
            // (Only for the move: the checkpoint rows above wait for a serving
            // projector's batch as long as it takes.)
            tx.execute(&format!(
                "SET LOCAL lock_timeout = '{}ms'",
                SWAP_LOCK_TIMEOUT.as_millis()
            ))
            .await?;
        }
        let mut swapped = Vec::with_capacity(self.tables.len());
        for table in self.tables {
            if pg {
                // The live table goes and the shadow's takes its place, indexes,
                // statistics and all: the move does not grow with the rows.
                let moved = async {
                    tx.execute(&format!("DROP TABLE {l}.{table}")).await?;
                    tx.execute(&format!("ALTER TABLE {s}.{table} SET SCHEMA {l}"))
                        .await
                }
                .await;
                match moved {
                    Ok(_) => {}
                    Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
                        tracing::info!(table, "a query held the live table: swapping again");
                        tx.rollback().await?;
                        return Ok(SwapAttempt::Busy);
                    }
                    Err(e) => return Err(e.into()),
                }
                swapped.push(Swapped {
                    table,
                    deleted: 0,
                    inserted: 0,
                    moved: true,
                });
                continue;
            }
            // SQLite (PostgreSQL moved its tables above).
            let Tx::Sqlite(conn) = &mut tx else {
                unreachable!("the swap runs on the live backend")
            };
            let key = sqlite_primary_key(conn, table).await?.join(", ");
            // An empty live table (a first build, or one emptied by hand) takes the
            // shadow's rows as they are: no difference to compute.
            let mut probe = Sql::new(tx.backend());
            probe.push(&format!(
                "SELECT COUNT(*) FROM (SELECT 1 FROM {l}.{table} LIMIT 1) AS any_row"
            ));
            let (live_rows,): (i64,) = tx
                .fetch_as::<(i64,)>(&probe)
                .await?
                .into_iter()
                .next()
                .unwrap_or((0,));
            let (deleted, inserted) = if live_rows == 0 {
                let inserted = tx
                    .execute(&format!(
                        "INSERT INTO {l}.{table} SELECT * FROM {s}.{table}"
                    ))
                    .await?;
                (0, inserted)
            } else {
                let deleted = tx
                    .execute(&format!(
                        "DELETE FROM {l}.{table} WHERE ({key}) IN (SELECT {key} FROM \
                         (SELECT * FROM {l}.{table} EXCEPT SELECT * FROM {s}.{table}) AS d)"
                    ))
                    .await?;
                let inserted = tx
                    .execute(&format!(
                        "INSERT INTO {l}.{table} \
                         SELECT * FROM {s}.{table} EXCEPT SELECT * FROM {l}.{table}"
                    ))
                    .await?;
                (deleted, inserted)
            };
            swapped.push(Swapped {
                table,
                deleted,
                inserted,
                moved: false,
            });
        }
        let mut sql = Sql::new(tx.backend());
        let now = sql.arg(fmt_time(Utc::now()));
        let list = sql.args(&names);
        sql.push(&format!(
            "UPDATE {l}.{CHECKPOINTS} AS c SET tx_id = s.tx_id, position = s.position, \
             events_applied = s.events_applied, updated_at = {now}, failed_position = NULL, \
             failed_event = NULL, failed_error = NULL, generation = c.generation + 1 \
             FROM {s}.{CHECKPOINTS} AS s WHERE c.name = s.name AND s.name IN ({list})"
        ));
        tx.run(&sql).await?;
        tx.commit().await?;
        // Wake the serving projectors: they compare their checkpoints when idle.
        let position = self.store.last_position().await.unwrap_or(0);
        match self.store {
            Store::Postgres(PgStore { pool, .. }) => {
                if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(EVENTS_CHANNEL)
                    .bind(position.to_string())
                    .execute(pool)
                    .await
                {
                    tracing::warn!(%error, "could not notify the services of the rebuild");
                }
            }
            Store::Sqlite(_) => self.store.appended(position),
        }
        Ok(SwapAttempt::Done(swapped))
    }
}
