//! The projector runtime: folds the global log into the read models, exactly once.
//!
//! - Each projection has a name and a checkpoint (a [`LogCursor`]) in
//!   `projection_checkpoints`. A batch's read-model changes and the new checkpoint
//!   are written in **one transaction**, so a crash at any point leaves either the
//!   whole batch or none of it.
//! - One reader per process reads the log once for all the projections it runs,
//!   from the lowest of their checkpoints; each projection takes only the events past
//!   its own checkpoint.
//! - Inside the transaction the checkpoint row is read again (`FOR UPDATE` on
//!   PostgreSQL) and must still be what this runner last wrote (compare-and-set).
//!   With several service processes on one database, a PostgreSQL advisory lock per
//!   projection picks the one runner; the compare-and-set makes a double apply
//!   impossible even if two runners ever believed they held it.
//! - New events wake the reader ([`Store::wakeup`]: `LISTEN/NOTIFY`, or the append
//!   signal on SQLite); polling is the fallback.
//! - A projection that meets an event it cannot apply stops there: its status names
//!   the position, the event and the error, the checkpoint stays before the event,
//!   and the other projections go on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use serde::Serialize;
use sqlx::Connection;

use crate::event::Envelope;
use crate::sql::{fmt_time, Bind, Dialect, Sql, Tx};
use crate::store::{LogCursor, Store, StoreError};

/// Why a projection could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event itself cannot be applied (undecodable, or inconsistent with the read
    /// model): the projection stops before it.
    #[error("{0}")]
    Event(String),
    /// The database failed: the batch is rolled back and retried.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// A read model folded from the log.
///
/// `apply` folds one event into the projection's working set (rows are loaded on
/// demand inside `tx`); `flush` writes the batch's changes. The runtime then writes
/// the checkpoint and commits, and calls `committed` (or `rolled_back`).
pub trait Projection: Send + Sync {
    fn name(&self) -> &'static str;
    /// The tables the projection owns (emptied by a rebuild).
    fn tables(&self) -> &'static [&'static str];
    fn apply<'a>(
        &'a mut self,
        tx: &'a mut Tx,
        event: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), ApplyError>>;
    fn flush<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), sqlx::Error>>;
    fn committed(&mut self);
    fn rolled_back(&mut self);
    /// Forget cached rows; `empty` says the tables are known to be empty.
    fn reset(&mut self, empty: bool);
}

/// Where a projection stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub position: i64,
    pub event: String,
    pub error: String,
}

/// A projection as this process sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    pub checkpoint: LogCursor,
    pub events_applied: i64,
    /// This process runs it (holds its lock).
    pub running_here: bool,
    pub failed: Option<Failure>,
}

/// Tuning of a [`Projector`].
#[derive(Debug, Clone)]
pub struct ProjectorOptions {
    /// Events read per batch (one transaction per batch).
    pub batch_size: i64,
    /// Poll interval when no wake-up arrives (and lock retry interval).
    pub poll: Duration,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        ProjectorOptions {
            batch_size: 1000,
            poll: Duration::from_millis(500),
        }
    }
}

struct Slot {
    projection: Box<dyn Projection>,
    checkpoint: LogCursor,
    applied: i64,
    owned: bool,
    /// The checkpoint row changed under us (a rebuild): reload before applying.
    reload: bool,
    failed: Option<Failure>,
}

/// Shared view of the projections this process runs: status, and a signal on every
/// committed batch (read-your-writes waits on it).
#[derive(Clone)]
pub struct ProjectorHandle {
    store: Store,
    status: Arc<Mutex<HashMap<String, ProjectionStatus>>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read a batch of this many events from the log and applied it.
    Applied(usize),
    /// Nothing new to apply (or nothing this process may run).
    Idle,
}

/// Runs a set of projections over the global log.
pub struct Projector {
    store: Store,
    slots: Vec<Slot>,
    options: ProjectorOptions,
    lock_conn: Option<sqlx::PgConnection>,
    handle: ProjectorHandle,
}

const CHECKPOINT_COLUMNS: &str =
    "tx_id, position, events_applied, failed_position, failed_event, failed_error";

type CheckpointRow = (i64, i64, i64, Option<i64>, Option<String>, Option<String>);
type NamedCheckpointRow = (
    String,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
);

async fn ensure_checkpoint_row(store: &Store, name: &str) -> Result<(), sqlx::Error> {
    let mut sql = Sql::new(Dialect::of(store));
    let n = sql.arg(name);
    sql.push(&format!(
        "INSERT INTO projection_checkpoints (name) VALUES ({n}) ON CONFLICT (name) DO NOTHING"
    ));
    run_on_pool(store, &sql).await
}

async fn run_on_pool(store: &Store, sql: &Sql) -> Result<(), sqlx::Error> {
    match store {
        Store::Postgres(_) => {
            let mut tx = Tx::begin(store).await?;
            tx.run(sql).await?;
            tx.commit().await
        }
        Store::Sqlite(sqlite) => {
            let _turn = sqlite.write_turn().await;
            let mut tx = Tx::begin(store).await?;
            tx.run(sql).await?;
            tx.commit().await
        }
    }
}

/// Every projection's stored checkpoint (whichever process runs it).
pub async fn stored_checkpoints(
    store: &Store,
) -> Result<HashMap<String, (LogCursor, i64, Option<Failure>)>, sqlx::Error> {
    let sql = format!("SELECT name, {CHECKPOINT_COLUMNS} FROM projection_checkpoints");
    let rows: Vec<NamedCheckpointRow> = match store {
        Store::Postgres(pool) => sqlx::query_as(&sql).fetch_all(pool).await?,
        Store::Sqlite(s) => sqlx::query_as(&sql).fetch_all(&s.pool).await?,
    };
    Ok(rows
        .into_iter()
        .map(|(name, tx_id, position, applied, fp, fe, ferr)| {
            let failed = fp.map(|position| Failure {
                position,
                event: fe.unwrap_or_default(),
                error: ferr.unwrap_or_default(),
            });
            (name, (LogCursor { tx_id, position }, applied, failed))
        })
        .collect())
}

async fn read_checkpoint(
    tx: &mut Tx,
    name: &str,
    lock: bool,
) -> Result<CheckpointRow, sqlx::Error> {
    let for_update = if lock && tx.backend() == Dialect::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    let placeholder = match tx.backend() {
        Dialect::Postgres => "$1",
        Dialect::Sqlite => "?1",
    };
    let sql = format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM projection_checkpoints WHERE name = {placeholder}{for_update}"
    );
    match tx {
        Tx::Postgres(tx) => sqlx::query_as(&sql).bind(name).fetch_one(&mut **tx).await,
        Tx::Sqlite(tx) => sqlx::query_as(&sql).bind(name).fetch_one(&mut **tx).await,
    }
}

impl Projector {
    pub fn new(
        store: Store,
        projections: Vec<Box<dyn Projection>>,
        options: ProjectorOptions,
    ) -> Self {
        let handle = ProjectorHandle {
            store: store.clone(),
            status: Default::default(),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        };
        let slots = projections
            .into_iter()
            .map(|projection| Slot {
                projection,
                checkpoint: LogCursor::START,
                applied: 0,
                owned: false,
                reload: false,
                failed: None,
            })
            .collect();
        let projector = Projector {
            store,
            slots,
            options,
            lock_conn: None,
            handle,
        };
        projector.publish();
        projector
    }

    pub fn handle(&self) -> ProjectorHandle {
        self.handle.clone()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.slots.iter().map(|s| s.projection.name()).collect()
    }

    fn publish(&self) {
        {
            let mut status = self.handle.status.lock().unwrap_or_else(|e| e.into_inner());
            for slot in &self.slots {
                status.insert(
                    slot.projection.name().to_string(),
                    ProjectionStatus {
                        name: slot.projection.name().to_string(),
                        checkpoint: slot.checkpoint,
                        events_applied: slot.applied,
                        running_here: slot.owned,
                        failed: slot.failed.clone(),
                    },
                );
            }
        }
        self.handle.changed.send_modify(|n| *n += 1);
    }

    /// Takes the locks of projections this process does not run yet (PostgreSQL
    /// advisory locks on a dedicated connection; SQLite runs everything in process),
    /// and loads the checkpoints of those it takes or must reload.
    async fn acquire(&mut self) -> Result<(), StoreError> {
        if let Store::Postgres(pool) = &self.store {
            let alive = match self.lock_conn.as_mut() {
                Some(conn) => conn.ping().await.is_ok(),
                None => false,
            };
            if !alive {
                // A lost connection lost its locks: stop running everything it held.
                for slot in &mut self.slots {
                    slot.owned = false;
                }
                self.lock_conn =
                    Some(sqlx::PgConnection::connect_with(&pool.connect_options()).await?);
            }
        }
        for i in 0..self.slots.len() {
            let name = self.slots[i].projection.name();
            if !self.slots[i].owned {
                let got = match (&self.store, self.lock_conn.as_mut()) {
                    (Store::Postgres(_), Some(conn)) => {
                        sqlx::query_scalar::<_, bool>(
                            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                        )
                        .bind(format!("workflowops.projection.{name}"))
                        .fetch_one(&mut *conn)
                        .await?
                    }
                    _ => true,
                };
                if !got {
                    continue;
                }
                self.slots[i].owned = true;
                self.slots[i].reload = true;
                tracing::info!(projection = name, "running projection");
            }
            if self.slots[i].reload {
                ensure_checkpoint_row(&self.store, name).await?;
                let mut tx = Tx::begin(&self.store).await?;
                let (tx_id, position, applied, fp, fe, ferr) =
                    read_checkpoint(&mut tx, name, false).await?;
                tx.rollback().await?;
                let slot = &mut self.slots[i];
                slot.checkpoint = LogCursor { tx_id, position };
                slot.applied = applied;
                // A stored failure is retried once per start: the cause may be fixed.
                slot.failed = None;
                if let Some(position) = fp {
                    tracing::info!(projection = name, position, event = ?fe, error = ?ferr,
                        "retrying after a recorded failure");
                }
                slot.projection.reset(slot.checkpoint == LogCursor::START);
                slot.reload = false;
            }
        }
        self.publish();
        Ok(())
    }

    /// Reads one batch and applies it to every projection this process runs.
    pub async fn step(&mut self) -> Result<Step, StoreError> {
        self.acquire().await?;
        let active: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].owned && self.slots[i].failed.is_none())
            .collect();
        let Some(from) = active.iter().map(|&i| self.slots[i].checkpoint).min() else {
            return Ok(Step::Idle);
        };
        let batch = self.store.read_after(from, self.options.batch_size).await?;
        if batch.is_empty() {
            return Ok(Step::Idle);
        }
        let read = batch.len();
        let batch: Vec<Envelope> = batch.into_iter().map(Envelope::new).collect();
        let last = batch.last().map(Envelope::cursor).unwrap_or(from);

        let store = self.store.clone();
        let turn = match &store {
            Store::Sqlite(sqlite) => Some(sqlite.write_turn().await),
            Store::Postgres(_) => None,
        };
        let mut tx = Tx::begin(&store).await?;
        let outcome = self.apply_batch(&mut tx, &active, &batch, last).await;
        let result = match outcome {
            Ok(applied) => match tx.commit().await {
                Ok(()) => Ok(applied),
                Err(e) => Err(e),
            },
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e)
            }
        };
        drop(turn);
        match result {
            Ok(applied) => {
                for (i, n) in applied {
                    let slot = &mut self.slots[i];
                    slot.projection.committed();
                    slot.checkpoint = last;
                    slot.applied += n as i64;
                }
                self.record_failures().await;
                self.publish();
                Ok(Step::Applied(read))
            }
            Err(error) => {
                for &i in &active {
                    self.slots[i].projection.rolled_back();
                    // Failures found in a batch that did not commit are found again.
                    self.slots[i].failed = None;
                }
                Err(StoreError::Database(error))
            }
        }
    }

    /// Applies `batch` inside `tx`. Returns the slots that applied it (with how many
    /// events were new to them); marks slots that met an unappliable event as failed.
    async fn apply_batch(
        &mut self,
        tx: &mut Tx,
        active: &[usize],
        batch: &[Envelope],
        last: LogCursor,
    ) -> Result<Vec<(usize, usize)>, sqlx::Error> {
        let mut applied = Vec::new();
        for &i in active {
            let slot = &mut self.slots[i];
            let name = slot.projection.name();
            let (tx_id, position, ..) = read_checkpoint(tx, name, true).await?;
            if (LogCursor { tx_id, position }) != slot.checkpoint {
                tracing::info!(
                    projection = name,
                    "checkpoint moved elsewhere (rebuild?): reloading"
                );
                slot.reload = true;
                continue;
            }
            let mut count = 0;
            let mut failure = None;
            for event in batch.iter().filter(|e| e.cursor() > slot.checkpoint) {
                match slot.projection.apply(tx, event).await {
                    Ok(()) => count += 1,
                    Err(ApplyError::Database(e)) => return Err(e),
                    Err(ApplyError::Event(error)) => {
                        failure = Some(Failure {
                            position: event.stored.position,
                            event: format!(
                                "{} {} #{}",
                                event.stored.event_type,
                                event.stored.aggregate_id,
                                event.stored.sequence
                            ),
                            error,
                        });
                        break;
                    }
                }
            }
            if let Some(failure) = failure {
                tracing::error!(projection = name, position = failure.position,
                    event = %failure.event, error = %failure.error,
                    "projection stopped: cannot apply event");
                slot.projection.rolled_back();
                slot.failed = Some(failure);
                continue;
            }
            slot.projection.flush(tx).await?;
            let mut sql = Sql::new(tx.backend());
            let text = format!(
                "UPDATE projection_checkpoints SET tx_id = {}, position = {}, \
                 events_applied = events_applied + {}, updated_at = {}, \
                 failed_position = NULL, failed_event = NULL, failed_error = NULL WHERE name = {}",
                sql.arg(last.tx_id),
                sql.arg(last.position),
                sql.arg(count as i64),
                sql.arg(fmt_time(Utc::now())),
                sql.arg(name),
            );
            sql.push(&text);
            tx.run(&sql).await?;
            applied.push((i, count));
        }
        Ok(applied)
    }

    /// Stores where failed projections stopped, for other processes and restarts.
    async fn record_failures(&mut self) {
        for slot in &self.slots {
            let Some(failure) = &slot.failed else {
                continue;
            };
            let mut sql = Sql::new(Dialect::of(&self.store));
            let text = format!(
                "UPDATE projection_checkpoints SET failed_position = {}, failed_event = {}, \
                 failed_error = {} WHERE name = {}",
                sql.arg(failure.position),
                sql.arg(failure.event.clone()),
                sql.arg(failure.error.clone()),
                sql.arg(slot.projection.name()),
            );
            sql.push(&text);
            if let Err(error) = run_on_pool(&self.store, &sql).await {
                tracing::warn!(%error, "could not record a projection failure");
            }
        }
    }

    /// Applies batches until nothing is left to apply. Returns the events applied.
    pub async fn catch_up(&mut self) -> Result<u64, StoreError> {
        let mut total = 0;
        while let Step::Applied(n) = self.step().await? {
            total += n as u64;
        }
        Ok(total)
    }

    /// Runs until the task is dropped or aborted (a transaction in flight then rolls
    /// back, which is safe). Errors are logged and retried with backoff.
    pub async fn run(mut self) {
        let mut wakeup = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            if wakeup.is_none() {
                match self.store.wakeup().await {
                    Ok(w) => wakeup = Some(w),
                    Err(error) => tracing::warn!(%error, "no event wake-ups; polling"),
                }
            }
            match self.step().await {
                Ok(Step::Applied(_)) => {
                    backoff = Duration::from_millis(50);
                    tokio::task::yield_now().await;
                }
                Ok(Step::Idle) => match wakeup.as_mut() {
                    Some(w) => {
                        w.wait(self.options.poll).await;
                    }
                    None => tokio::time::sleep(self.options.poll).await,
                },
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "projector batch failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Starts [`Projector::run`] on the runtime; the task stops when aborted.
    pub fn spawn(self) -> (ProjectorHandle, tokio::task::JoinHandle<()>) {
        let handle = self.handle();
        (handle, tokio::spawn(self.run()))
    }
}

/// Why a read could not wait for its position.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("no event at position {0}")]
    UnknownPosition(i64),
    #[error("projection {projection} has not reached position {position} within {waited:?}")]
    Timeout {
        projection: String,
        position: i64,
        waited: Duration,
    },
    #[error("projection {projection} stopped at position {} ({}): {}", .failure.position, .failure.event, .failure.error)]
    Failed {
        projection: String,
        failure: Failure,
    },
    #[error("unknown projection {0}")]
    UnknownProjection(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for WaitError {
    fn from(e: sqlx::Error) -> Self {
        WaitError::Store(StoreError::Database(e))
    }
}

impl ProjectorHandle {
    pub fn status(&self) -> Vec<ProjectionStatus> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = status.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Waits (at most `timeout`) until `projection` has applied the event at global
    /// `position` — read-your-writes for a client that just got that position from
    /// a mutation. Works whichever process runs the projection: it reads the stored
    /// checkpoint, woken by this process's batches and polling otherwise.
    pub async fn wait_for(
        &self,
        projection: &str,
        position: i64,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        if position <= 0 {
            return Ok(());
        }
        let target = self
            .store
            .cursor_after_position(position)
            .await?
            .ok_or(WaitError::UnknownPosition(position))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.subscribe();
        loop {
            let local = self
                .status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(projection)
                .map(|s| (s.checkpoint, s.running_here, s.failed.clone()));
            let known = local.is_some();
            let (checkpoint, failed) = match local {
                Some((checkpoint, true, failed)) => (checkpoint, failed),
                _ => {
                    if !crate::NAMES.contains(&projection) && !known {
                        return Err(WaitError::UnknownProjection(projection.to_string()));
                    }
                    // No row yet: the projection has not started anywhere.
                    let stored = stored_checkpoints(&self.store).await?;
                    let (checkpoint, _, failed) =
                        stored
                            .get(projection)
                            .cloned()
                            .unwrap_or((LogCursor::START, 0, None));
                    (checkpoint, failed)
                }
            };
            if checkpoint >= target {
                return Ok(());
            }
            if let Some(failure) = failed {
                return Err(WaitError::Failed {
                    projection: projection.to_string(),
                    failure,
                });
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(WaitError::Timeout {
                    projection: projection.to_string(),
                    position,
                    waited: timeout,
                });
            }
            let pause = (deadline - now).min(Duration::from_millis(25));
            let _ = tokio::time::timeout(pause, changed.changed()).await;
        }
    }
}

/// Empties a projection's tables and moves its checkpoint back to the start, in one
/// transaction. Whoever runs the projection notices (its checkpoint moved) and
/// replays it from position 0.
pub async fn reset(store: &Store, projection: &dyn Projection) -> Result<(), StoreError> {
    ensure_checkpoint_row(store, projection.name()).await?;
    let turn = match store {
        Store::Sqlite(sqlite) => Some(sqlite.write_turn().await),
        Store::Postgres(_) => None,
    };
    let mut tx = Tx::begin(store).await?;
    for table in projection.tables() {
        tx.execute(&format!("DELETE FROM {table}")).await?;
    }
    let mut sql = Sql::new(tx.backend());
    let text = format!(
        "UPDATE projection_checkpoints SET tx_id = 0, position = 0, events_applied = 0, \
         updated_at = {}, failed_position = NULL, failed_event = NULL, failed_error = NULL \
         WHERE name = {}",
        sql.arg(Bind::Text(Some(fmt_time(Utc::now())))),
        sql.arg(projection.name()),
    );
    sql.push(&text);
    tx.run(&sql).await?;
    tx.commit().await?;
    drop(turn);
    Ok(())
}

/// Implements the bookkeeping half of [`Projection`] (flush, commit, rollback, reset)
/// for a projection whose working set is the listed [`crate::sql::Rows`] fields.
#[macro_export]
macro_rules! row_tables {
    ($($field:ident),+ $(,)?) => {
        fn flush<'a>(
            &'a mut self,
            tx: &'a mut $crate::sql::Tx,
        ) -> futures::future::BoxFuture<'a, Result<(), sqlx::Error>> {
            Box::pin(async move {
                $(self.$field.flush(tx).await?;)+
                Ok(())
            })
        }
        fn committed(&mut self) {
            $(self.$field.committed();)+
        }
        fn rolled_back(&mut self) {
            $(self.$field.rolled_back();)+
        }
        fn reset(&mut self, empty: bool) {
            $(self.$field.reset(empty);)+
        }
    };
}
