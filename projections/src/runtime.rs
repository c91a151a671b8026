//! The projector runtime: folds the global log into the read models, exactly once.
//!
//! - Each projection has a name and a checkpoint (a [`LogCursor`]) in
//!   `projection_checkpoints`. A batch's read-model changes and the projection's new
//!   checkpoint are written in **one transaction** (one per projection), so a crash
//!   at any point leaves either the whole batch or none of it.
//!   A projection with none of its aggregate types in a batch
//!   ([`Projection::aggregate_types`]) skips it without a transaction; its
//!   checkpoint moves in memory (in-process waiters see it at once) and is written
//!   with its next batch or within [`CHECKPOINT_FLUSH`] (other processes' waiters and
//!   a restart read the row; a restart replays at most those skipped events, which
//!   change nothing).
//! - One reader per process reads the log once for all the projections it runs,
//!   from the lowest of their checkpoints; each projection takes only the events past
//!   its own checkpoint. On PostgreSQL the projections apply a batch concurrently,
//!   each on its own connection, while the next batch is already being read.
//! - Inside the transaction the checkpoint row is read again (`FOR UPDATE` on
//!   PostgreSQL) and must still be what this runner last wrote (compare-and-set).
//!   With several service processes on one database, a PostgreSQL advisory lock per
//!   projection picks the one runner; the compare-and-set makes a double apply
//!   impossible even if two runners ever believed they held it.
//! - New events wake the reader ([`Store::wakeup`]: `LISTEN/NOTIFY`, or the append
//!   signal on SQLite); polling is the fallback. With nothing new to apply, the
//!   runner compares the stored checkpoints of the projections it runs with its own
//!   (one query): a live rebuild ([`crate::rebuild`]) swapped in elsewhere bumps a
//!   checkpoint's generation, and the runner reloads at once instead of at its next
//!   batch.
//! - A projection that meets an event it cannot apply stops there: its status names
//!   the position, the event and the error, the checkpoint stays before the event,
//!   and the other projections go on.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::BoxFuture;
use serde::Serialize;

use crate::event::Envelope;
use crate::sql::{fmt_time, Dialect, RecentRows, Sql, Tx};
use eventstore::locks::LockSession;
use eventstore::{LogCursor, PgStore, Store, StoreError};

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
    /// The aggregate types whose events this projection folds (`None`: every event).
    /// A batch with none of them costs the projection no transaction: its checkpoint
    /// moves in memory and is written with its next batch that has one, or within
    /// [`CHECKPOINT_FLUSH`]. Must name every type `apply` does anything with (an
    /// undecodable event of a named type included): events of other types never
    /// reach it.
    fn aggregate_types(&self) -> Option<&'static [&'static str]> {
        None
    }
    fn committed(&mut self);
    fn rolled_back(&mut self);
    /// Forget cached rows; `empty` says the tables are known to be empty.
    fn reset(&mut self, empty: bool);
    /// While on, `flush` may keep the rows a batch changed in memory instead of
    /// writing them ([`ProjectorOptions::defer_writes`]); turned off, the next flush
    /// writes every row still owed. Projections that only append ignore it.
    fn defer_writes(&mut self, _defer: bool) {}
    /// With deferred writes on PostgreSQL, `Some`: a projection that only appends
    /// may write each batch's rows behind, on a connection of `store`'s own, while
    /// the next batch is applied (the audit trail, decision 83). Its next flush
    /// waits for that write and fails with its error, and a batch rolled back after
    /// its rows were handed over fails the next flush: rows written behind cannot be
    /// taken back, which only a replay that is discarded when it stops can accept.
    /// `None` turns it off; the next flush still waits for the last write.
    fn write_behind(&mut self, _store: Option<&Store>) {}
    /// From now on, shares the rows each commit wrote with readers in this process:
    /// an `Arc<`[`RecentRows`]`<Row>>` of the projection's one table (decision 80).
    /// `None` (the default): it shares none, and read-backs query its tables.
    fn recent_rows(&mut self) -> Option<Arc<dyn Any + Send + Sync>> {
        None
    }
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
    /// How many rebuilds were swapped in (the checkpoint row's generation).
    pub generation: i64,
}

/// Tuning of a [`Projector`].
#[derive(Debug, Clone)]
pub struct ProjectorOptions {
    /// Events read per batch (one transaction per batch).
    pub batch_size: i64,
    /// Poll interval when no wake-up arrives (and lock retry interval).
    pub poll: Duration,
    /// Prefix of the PostgreSQL advisory lock each projection takes
    /// (`{lock_namespace}.{name}`). A live rebuild's projector replays into shadow
    /// tables under its own namespace while the service holds the default locks.
    pub lock_namespace: String,
    /// Batches commit their checkpoints, but projections keep the rows they rewrite
    /// in memory (up to their caches) instead of writing them every batch, until
    /// [`Projector::stop_deferring`]. Only for a replay nobody reads and that is
    /// discarded if it stops: a rebuild's shadow (decision 66). A projection that
    /// has to reload its checkpoint meanwhile stops the projector with an error.
    pub defer_writes: bool,
    /// Projections that can ([`Projection::recent_rows`]) share each commit's rows
    /// with readers in this process, so a read-back after a mutation is answered
    /// from memory ([`ProjectorHandle::recent_row`], decision 80). On for the live
    /// read models; off for a rebuild's shadow, which nobody reads.
    pub share_recent_rows: bool,
}

/// The advisory locks of the projectors that run the live read models.
pub const LIVE_LOCKS: &str = "workflowops.projection";

impl Default for ProjectorOptions {
    fn default() -> Self {
        ProjectorOptions {
            batch_size: 1000,
            poll: Duration::from_millis(500),
            lock_namespace: LIVE_LOCKS.to_string(),
            defer_writes: false,
            share_recent_rows: true,
        }
    }
}

/// Batches at least this large are freed on a blocking thread, not the projector's.
const OFFLOADED_DROP: usize = 10_000;

/// How soon the checkpoint of a projection that skipped batches (none of their
/// events was its concern: [`Projection::aggregate_types`]) is written: waiters in
/// other processes read the row, and a restart replays from it.
pub const CHECKPOINT_FLUSH: Duration = Duration::from_millis(100);

/// A catch-up's pause while events committed before it are held back from gap-safe
/// reads: 5 ms, doubling to 100 ms, and 5 ms again once it read something.
#[derive(Debug)]
pub struct HeldBackPause(Duration);

impl Default for HeldBackPause {
    fn default() -> Self {
        HeldBackPause(Self::FIRST)
    }
}

impl HeldBackPause {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_millis(100);

    /// Something was read: the next pause is the first again.
    pub fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Self::MAX);
    }
}

struct Slot {
    projection: Box<dyn Projection>,
    /// Where this process has applied to (ahead of `stored` after skipped batches).
    checkpoint: LogCursor,
    /// What the checkpoint row holds, as this runner last wrote or read it (the
    /// compare-and-set of the next write).
    stored: LogCursor,
    /// Since when `checkpoint` is ahead of `stored`, and by how many events.
    unwritten: Option<(std::time::Instant, i64)>,
    /// The checkpoint row's generation when loaded (bumped by each rebuild swap).
    generation: i64,
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
    /// Each sharing projection's [`RecentRows`], by name (see
    /// [`ProjectorOptions::share_recent_rows`]).
    recent: Arc<HashMap<&'static str, Arc<dyn Any + Send + Sync>>>,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read a batch of this many events from the log and applied it. `Applied(0)`:
    /// nothing new, but a checkpoint moved elsewhere (a rebuild was swapped in) and
    /// the next step reloads it.
    Applied(usize),
    /// Nothing new to apply (or nothing this process may run).
    Idle,
}

/// What applying one batch did to one projection.
enum Outcome {
    /// Committed; this many events of the batch were new to it.
    Applied(usize),
    /// Its checkpoint row moved (a rebuild swapped in elsewhere, a lost lock):
    /// reload before applying.
    Moved,
    /// It met an event it cannot apply: nothing of the batch was committed for it.
    Failed(Failure),
    /// The database failed: its transaction rolled back; the batch is retried.
    Error(sqlx::Error),
}

/// The next batch, read while the current one is applied.
struct ReadAhead {
    from: LogCursor,
    task: tokio::task::JoinHandle<Result<Vec<Envelope>, StoreError>>,
}

/// Runs a set of projections over the global log.
pub struct Projector {
    store: Store,
    slots: Vec<Slot>,
    options: ProjectorOptions,
    /// Holds the advisory locks of the projections this process runs.
    locks: LockSession,
    read_ahead: Option<ReadAhead>,
    handle: ProjectorHandle,
}

const CHECKPOINT_COLUMNS: &str =
    "tx_id, position, events_applied, failed_position, failed_event, failed_error, generation";

type CheckpointRow = (
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
);
type NamedCheckpointRow = (
    String,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
);

pub(crate) async fn ensure_checkpoint_row(store: &Store, name: &str) -> Result<(), sqlx::Error> {
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

/// Reads the batch after `from` and decodes its events.
async fn read_envelopes(
    store: &Store,
    from: LogCursor,
    limit: i64,
) -> Result<Vec<Envelope>, StoreError> {
    store.read_after_map(from, limit, Envelope::from_raw).await
}

/// Applies `batch` to one projection in its own transaction: its rows, then its
/// checkpoint, then commit. The caller settles the projection's cache by the outcome
/// (`committed` after `Applied`); every other outcome has already rolled it back.
async fn apply_slot(
    store: &Store,
    slot: &mut Slot,
    batch: &[Envelope],
    last: LogCursor,
) -> Outcome {
    let mut tx = match Tx::begin(store).await {
        Ok(tx) => tx,
        Err(e) => return Outcome::Error(e),
    };
    let outcome = match apply_in(&mut tx, slot, batch, last).await {
        Ok(Outcome::Applied(n)) => match tx.commit().await {
            Ok(()) => return Outcome::Applied(n),
            Err(e) => Outcome::Error(e),
        },
        Ok(outcome) => {
            let _ = tx.rollback().await;
            outcome
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Outcome::Error(e)
        }
    };
    slot.projection.rolled_back();
    outcome
}

async fn apply_in(
    tx: &mut Tx,
    slot: &mut Slot,
    batch: &[Envelope],
    last: LogCursor,
) -> Result<Outcome, sqlx::Error> {
    let name = slot.projection.name();
    let count = new_to(slot, batch);
    // The checkpoint moves first, compared and set in one statement against what
    // this runner last wrote (which also locks the row until the commit): no row
    // changed means it moved elsewhere. An event that cannot be applied rolls the
    // whole transaction back, this move included.
    if !claim_checkpoint(tx, slot, last, count).await? {
        tracing::info!(
            projection = name,
            "checkpoint moved elsewhere (rebuild?): reloading"
        );
        return Ok(Outcome::Moved);
    }
    apply_rows(tx, slot, batch, count).await
}

/// How many events of `batch` are past `slot`'s checkpoint (new to its projection).
fn new_to(slot: &Slot, batch: &[Envelope]) -> usize {
    batch
        .iter()
        .filter(|e| e.cursor() > slot.checkpoint)
        .count()
}

/// Applies the events of `batch` past `slot`'s checkpoint (`count` of them) to its
/// projection inside `tx`, and writes its rows.
async fn apply_rows(
    tx: &mut Tx,
    slot: &mut Slot,
    batch: &[Envelope],
    count: usize,
) -> Result<Outcome, sqlx::Error> {
    for event in batch.iter().filter(|e| e.cursor() > slot.checkpoint) {
        match slot.projection.apply(tx, event).await {
            Ok(()) => {}
            Err(ApplyError::Database(e)) => return Err(e),
            Err(ApplyError::Event(error)) => {
                return Ok(Outcome::Failed(Failure {
                    position: event.stored.position,
                    event: format!(
                        "{} {} #{}",
                        event.stored.event_type, event.stored.aggregate_id, event.stored.sequence
                    ),
                    error,
                }))
            }
        }
    }
    slot.projection.flush(tx).await?;
    Ok(Outcome::Applied(count))
}

/// Batches of at most this many events are applied to every projection concerned in
/// one transaction on PostgreSQL ([`apply_together`]); larger ones (a catch-up, a
/// rebuild) to each projection in its own, concurrently.
const TOGETHER_MAX: usize = 256;

/// The statement that moves several checkpoints at once: each to its new cursor if
/// it is still what this runner last wrote (as [`claim_checkpoint`] does for one);
/// returns the names it moved. Before anything else (an init plan, the plan's
/// one-time filter) it locks their rows in name order, as a rebuild's swap locks
/// them, so the two cannot deadlock. Like [`claim_checkpoint`] it also stops the
/// transaction from waiting for the WAL flush at commit.
const CLAIM_ALL: &str = "UPDATE projection_checkpoints c SET tx_id = v.ntx, position = v.npos, \
     events_applied = c.events_applied + v.added, updated_at = $8, \
     failed_position = NULL, failed_event = NULL, failed_error = NULL \
     FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
       $6::bigint[], $7::bigint[]) AS v(name, ntx, npos, added, otx, opos, gen) \
     WHERE c.name = v.name AND c.tx_id = v.otx AND c.position = v.opos \
       AND c.generation = v.gen \
       AND set_config('synchronous_commit', 'off', true) = 'off' \
       AND (SELECT count(*) FROM (SELECT 1 FROM projection_checkpoints l \
         WHERE l.name = ANY($1::text[]) ORDER BY l.name FOR UPDATE) AS locked) > 0 \
     RETURNING c.name";

/// What [`apply_together`] did.
enum Together {
    /// Every projection applied the batch and it committed.
    Applied(Vec<(usize, LogCursor, Outcome)>),
    /// A checkpoint had moved or a projection cannot apply an event of the batch:
    /// rolled back; to be applied to each projection on its own, which tells them
    /// apart.
    Apart,
    /// The database failed: rolled back; the batch is retried.
    Failed(sqlx::Error),
}

/// Applies `batch` to the projections `which` (each with its checkpoint moved to
/// `lasts[k]`) in one PostgreSQL transaction: `BEGIN`, every checkpoint claimed in
/// one statement ([`CLAIM_ALL`]), each projection's rows, one commit: 3 + n round
/// trips where a transaction each takes 4 n. Each projection writes the rows
/// its own transaction would have written; they commit together.
///
/// Anything short of every projection applying the batch rolls it all back, the
/// projections' caches included (decision 73).
async fn apply_together(
    store: &Store,
    slots: &mut [Slot],
    which: &[usize],
    batch: &[Envelope],
    lasts: &[LogCursor],
) -> Together {
    let counts: Vec<usize> = which.iter().map(|&i| new_to(&slots[i], batch)).collect();
    let mut tx = match Tx::begin(store).await {
        Ok(tx) => tx,
        Err(e) => return Together::Failed(e),
    };
    let outcome = claim_and_apply(&mut tx, slots, which, batch, lasts, &counts).await;
    let outcome = match outcome {
        Ok(true) => match tx.commit().await {
            Ok(()) => {
                return Together::Applied(
                    which
                        .iter()
                        .enumerate()
                        .map(|(k, &i)| (i, lasts[k], Outcome::Applied(counts[k])))
                        .collect(),
                )
            }
            Err(e) => Together::Failed(e),
        },
        Ok(false) => {
            let _ = tx.rollback().await;
            Together::Apart
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Together::Failed(e)
        }
    };
    for &i in which {
        slots[i].projection.rolled_back();
    }
    outcome
}

/// [`apply_together`]'s work inside its transaction: whether every checkpoint was
/// claimed and every projection applied the batch.
async fn claim_and_apply(
    tx: &mut Tx,
    slots: &mut [Slot],
    which: &[usize],
    batch: &[Envelope],
    lasts: &[LogCursor],
    counts: &[usize],
) -> Result<bool, sqlx::Error> {
    let Tx::Postgres(pg) = tx else {
        return Ok(false);
    };
    let column = |f: &dyn Fn(usize, &Slot) -> i64| -> Vec<i64> {
        which
            .iter()
            .enumerate()
            .map(|(k, &i)| f(k, &slots[i]))
            .collect()
    };
    let claimed: Vec<String> = sqlx::query_scalar(CLAIM_ALL)
        .bind(
            which
                .iter()
                .map(|&i| slots[i].projection.name())
                .collect::<Vec<_>>(),
        )
        .bind(column(&|k, _| lasts[k].tx_id))
        .bind(column(&|k, _| lasts[k].position))
        .bind(column(&|k, s| {
            counts[k] as i64 + s.unwritten.map_or(0, |(_, n)| n)
        }))
        .bind(column(&|_, s| s.stored.tx_id))
        .bind(column(&|_, s| s.stored.position))
        .bind(column(&|_, s| s.generation))
        .bind(fmt_time(Utc::now()))
        .fetch_all(&mut **pg)
        .await?;
    if claimed.len() != which.len() {
        return Ok(false);
    }
    for (k, &i) in which.iter().enumerate() {
        match apply_rows(tx, &mut slots[i], batch, counts[k]).await? {
            Outcome::Applied(_) => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// Moves `slot`'s stored checkpoint to `last` if it is still what this runner last
/// wrote (cursor and generation); returns whether it was. On PostgreSQL the
/// transaction also stops waiting for the WAL flush at commit: read models are
/// derived, so a crash may lose their last batches (rows and checkpoint together,
/// which are then replayed) but never corrupts them (set in the same statement, to
/// save the round trip of a separate `SET LOCAL`).
async fn claim_checkpoint(
    tx: &mut Tx,
    slot: &Slot,
    last: LogCursor,
    count: usize,
) -> Result<bool, sqlx::Error> {
    let mut sql = Sql::new(tx.backend());
    let no_flush_wait = if tx.backend() == Dialect::Postgres {
        " AND set_config('synchronous_commit', 'off', true) = 'off'"
    } else {
        ""
    };
    let text = format!(
        "UPDATE projection_checkpoints SET tx_id = {}, position = {}, \
         events_applied = events_applied + {}, updated_at = {}, \
         failed_position = NULL, failed_event = NULL, failed_error = NULL \
         WHERE name = {} AND tx_id = {} AND position = {} AND generation = {}{no_flush_wait}",
        sql.arg(last.tx_id),
        sql.arg(last.position),
        sql.arg(count as i64 + slot.unwritten.map_or(0, |(_, n)| n)),
        sql.arg(fmt_time(Utc::now())),
        sql.arg(slot.projection.name()),
        sql.arg(slot.stored.tx_id),
        sql.arg(slot.stored.position),
        sql.arg(slot.generation),
    );
    sql.push(&text);
    Ok(tx.run(&sql).await? == 1)
}

/// Stores where a projection stopped, for other processes and restarts.
async fn record_failure(store: &Store, name: &str, failure: &Failure) {
    let mut sql = Sql::new(Dialect::of(store));
    let text = format!(
        "UPDATE projection_checkpoints SET failed_position = {}, failed_event = {}, \
         failed_error = {} WHERE name = {}",
        sql.arg(failure.position),
        sql.arg(failure.event.clone()),
        sql.arg(failure.error.clone()),
        sql.arg(name),
    );
    sql.push(&text);
    if let Err(error) = run_on_pool(store, &sql).await {
        tracing::warn!(%error, "could not record a projection failure");
    }
}

/// Every projection's stored checkpoint (whichever process runs it).
pub async fn stored_checkpoints(
    store: &Store,
) -> Result<HashMap<String, (LogCursor, i64, Option<Failure>)>, sqlx::Error> {
    let sql = format!("SELECT name, {CHECKPOINT_COLUMNS} FROM projection_checkpoints");
    let rows: Vec<NamedCheckpointRow> = match store {
        Store::Postgres(PgStore { pool, .. }) => sqlx::query_as(&sql).fetch_all(pool).await?,
        Store::Sqlite(s) => sqlx::query_as(&sql).fetch_all(&s.pool).await?,
    };
    Ok(rows
        .into_iter()
        .map(|(name, tx_id, position, applied, fp, fe, ferr, _)| {
            let failed = fp.map(|position| Failure {
                position,
                event: fe.unwrap_or_default(),
                error: ferr.unwrap_or_default(),
            });
            (name, (LogCursor { tx_id, position }, applied, failed))
        })
        .collect())
}

async fn read_checkpoint(tx: &mut Tx, name: &str) -> Result<CheckpointRow, sqlx::Error> {
    let placeholder = match tx.backend() {
        Dialect::Postgres => "$1",
        Dialect::Sqlite => "?1",
    };
    let sql = format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM projection_checkpoints WHERE name = {placeholder}"
    );
    match tx {
        Tx::Postgres(tx) => sqlx::query_as(&sql).bind(name).fetch_one(&mut **tx).await,
        Tx::Sqlite(tx) => sqlx::query_as(&sql).bind(name).fetch_one(&mut **tx).await,
    }
}

impl Projector {
    pub fn new(
        store: Store,
        mut projections: Vec<Box<dyn Projection>>,
        options: ProjectorOptions,
    ) -> Self {
        let mut recent = HashMap::new();
        if options.share_recent_rows {
            for projection in &mut projections {
                if let Some(rows) = projection.recent_rows() {
                    recent.insert(projection.name(), rows);
                }
            }
        }
        let handle = ProjectorHandle {
            store: store.clone(),
            status: Default::default(),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
            recent: Arc::new(recent),
        };
        let slots = projections
            .into_iter()
            .map(|mut projection| Slot {
                projection: {
                    projection.defer_writes(options.defer_writes);
                    if options.defer_writes && Dialect::of(&store) == Dialect::Postgres {
                        projection.write_behind(Some(&store));
                    }
                    projection
                },
                checkpoint: LogCursor::START,
                stored: LogCursor::START,
                unwritten: None,
                generation: 0,
                applied: 0,
                owned: false,
                reload: false,
                failed: None,
            })
            .collect();
        let projector = Projector {
            locks: LockSession::new(&store, options.poll),
            store,
            slots,
            options,
            read_ahead: None,
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
                        generation: slot.generation,
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
        if self.locks.check().await {
            // A lost session lost its locks: stop running everything it held.
            for slot in &mut self.slots {
                slot.owned = false;
            }
            self.publish();
        }
        // Locks held elsewhere are tried again once per poll interval, not per batch.
        let try_locks = self.locks.try_now();
        let mut changed = false;
        for i in 0..self.slots.len() {
            let name = self.slots[i].projection.name();
            if !self.slots[i].owned && try_locks {
                let got = self
                    .locks
                    .try_lock(&format!("{}.{name}", self.options.lock_namespace))
                    .await?;
                if !got {
                    continue;
                }
                self.slots[i].owned = true;
                self.slots[i].reload = true;
                tracing::info!(projection = name, "running projection");
            }
            if self.slots[i].owned && self.slots[i].reload {
                if self.options.defer_writes && self.slots[i].checkpoint != LogCursor::START {
                    // Its checkpoint is ahead of the rows it wrote: reloading would
                    // lose the rows it still owes.
                    return Err(StoreError::Stopped(format!(
                        "projection {name} lost its lock or its checkpoint moved while it \
                         deferred its writes"
                    )));
                }
                changed = true;
                ensure_checkpoint_row(&self.store, name).await?;
                let mut tx = Tx::begin(&self.store).await?;
                let (tx_id, position, applied, fp, fe, ferr, generation) =
                    read_checkpoint(&mut tx, name).await?;
                tx.rollback().await?;
                let slot = &mut self.slots[i];
                slot.checkpoint = LogCursor { tx_id, position };
                slot.stored = slot.checkpoint;
                slot.unwritten = None;
                slot.generation = generation;
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
        if changed {
            self.publish();
        }
        Ok(())
    }

    /// Nothing to apply: checks whether a projection this process runs was moved
    /// elsewhere (a rebuild swapped in, whose checkpoint may equal ours: hence the
    /// generation). One query over the checkpoint rows; a moved projection is
    /// reloaded by the next step, which also publishes it (its status, and a new
    /// [`ProjectorHandle::read_version`]).
    async fn idle(&mut self) -> Result<Step, StoreError> {
        if !self.slots.iter().any(|s| s.owned) {
            return Ok(Step::Idle);
        }
        self.flush_checkpoints(false).await?;
        let sql = "SELECT name, tx_id, position, generation FROM projection_checkpoints";
        let rows: Vec<(String, i64, i64, i64)> = match &self.store {
            Store::Postgres(PgStore { pool, .. }) => sqlx::query_as(sql).fetch_all(pool).await?,
            Store::Sqlite(s) => sqlx::query_as(sql).fetch_all(&s.pool).await?,
        };
        let mut moved = false;
        for (name, tx_id, position, generation) in rows {
            let Some(slot) = self
                .slots
                .iter_mut()
                .find(|s| s.owned && s.projection.name() == name)
            else {
                continue;
            };
            if (LogCursor { tx_id, position }) != slot.stored || generation != slot.generation {
                tracing::info!(
                    projection = slot.projection.name(),
                    "checkpoint moved elsewhere (rebuild?): reloading"
                );
                slot.reload = true;
                moved = true;
            }
        }
        Ok(if moved { Step::Applied(0) } else { Step::Idle })
    }

    /// The batch after `from`: the one read ahead if it starts there, else read now.
    async fn read_batch(&mut self, from: LogCursor) -> Result<Vec<Envelope>, StoreError> {
        if let Some(ahead) = self.read_ahead.take() {
            if ahead.from == from {
                match ahead.task.await {
                    Ok(Ok(batch)) if !batch.is_empty() => return Ok(batch),
                    // Empty (it may be stale by now), failed or cancelled: read again.
                    _ => {}
                }
            } else {
                ahead.task.abort();
            }
        }
        read_envelopes(&self.store, from, self.options.batch_size).await
    }

    /// Reads one batch and applies it to every projection this process runs.
    pub async fn step(&mut self) -> Result<Step, StoreError> {
        self.acquire().await?;
        let active: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].owned && self.slots[i].failed.is_none())
            .collect();
        let Some(from) = active.iter().map(|&i| self.slots[i].checkpoint).min() else {
            return self.idle().await;
        };
        let batch = Arc::new(self.read_batch(from).await?);
        let Some(last) = batch.last().map(Envelope::cursor) else {
            return self.idle().await;
        };
        if batch.len() as i64 >= self.options.batch_size {
            // More is waiting: read it while this batch is applied.
            let store = self.store.clone();
            let limit = self.options.batch_size;
            self.read_ahead = Some(ReadAhead {
                from: last,
                task: tokio::spawn(async move { read_envelopes(&store, last, limit).await }),
            });
        }

        // A projection with nothing of its concern in the batch skips it without a
        // transaction (unless its unwritten checkpoint is due anyway).
        let now = std::time::Instant::now();
        let mut active = active;
        active.retain(|&i| {
            let slot = &mut self.slots[i];
            let types = slot.projection.aggregate_types();
            let concerns = |e: &&Envelope| {
                types.is_none_or(|types| types.contains(&e.stored.aggregate_type.as_str()))
            };
            let past = |e: &&Envelope| e.cursor() > slot.checkpoint;
            if batch.iter().filter(past).any(|e| concerns(&e)) {
                return true;
            }
            // (a projection ahead of this batch, whose checkpoint is past it, stays)
            if last > slot.checkpoint {
                let skipped = batch.iter().filter(past).count() as i64;
                let (since, before) = slot.unwritten.unwrap_or((now, 0));
                slot.unwritten = Some((since, before + skipped));
                slot.applied += skipped;
                slot.checkpoint = last;
            }
            false
        });
        let error = self.apply_to(&active, &batch, |_| last).await;
        let applied = batch.len();
        if applied >= OFFLOADED_DROP {
            // Freeing a rebuild's batch (50,000 events: their JSON trees) took 5 % of
            // the projector's thread; another thread does it while the next batch
            // is applied.
            tokio::task::spawn_blocking(move || drop(batch));
        }
        self.publish();
        if let Some(error) = error {
            if let Some(ahead) = self.read_ahead.take() {
                ahead.task.abort();
            }
            return Err(StoreError::Database(error));
        }
        self.flush_checkpoints(false).await?;
        Ok(Step::Applied(applied))
    }

    /// Applies `batch` to the projections `slots` (each in its own transaction,
    /// with its checkpoint moved to `last(slot)`), and settles each by its outcome.
    /// Returns the first database error.
    async fn apply_to(
        &mut self,
        slots: &[usize],
        batch: &Arc<Vec<Envelope>>,
        last: impl Fn(&Slot) -> LogCursor,
    ) -> Option<sqlx::Error> {
        let store = self.store.clone();
        let outcomes: Vec<(usize, LogCursor, Outcome)> = match &store {
            Store::Sqlite(sqlite) => {
                // One writer at a time: the projections take their turns.
                let _turn = sqlite.write_turn().await;
                let mut outcomes = Vec::with_capacity(slots.len());
                for &i in slots {
                    let last = last(&self.slots[i]);
                    let outcome = apply_slot(&store, &mut self.slots[i], batch, last).await;
                    outcomes.push((i, last, outcome));
                }
                outcomes
            }
            Store::Postgres(_)
                if slots.len() > 1
                    && !batch.is_empty()
                    && batch.len() <= TOGETHER_MAX
                    && !self.options.defer_writes =>
            {
                let lasts: Vec<LogCursor> = slots.iter().map(|&i| last(&self.slots[i])).collect();
                match apply_together(&store, &mut self.slots, slots, batch, &lasts).await {
                    Together::Applied(outcomes) => outcomes,
                    Together::Apart => self.apply_apart(slots, batch, &last).await,
                    Together::Failed(error) => return Some(error),
                }
            }
            Store::Postgres(_) => self.apply_apart(slots, batch, &last).await,
        };

        let mut error = None;
        for (i, last, outcome) in outcomes {
            let slot = &mut self.slots[i];
            match outcome {
                Outcome::Applied(n) => {
                    slot.projection.committed();
                    slot.checkpoint = last;
                    slot.stored = last;
                    slot.unwritten = None;
                    slot.applied += n as i64;
                }
                Outcome::Moved => slot.reload = true,
                Outcome::Failed(failure) => {
                    tracing::error!(projection = slot.projection.name(),
                        position = failure.position, event = %failure.event,
                        error = %failure.error, "projection stopped: cannot apply event");
                    record_failure(&self.store, slot.projection.name(), &failure).await;
                    slot.failed = Some(failure);
                }
                Outcome::Error(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        error
    }

    /// Applies `batch` to each of the PostgreSQL projections `slots` in its own
    /// transaction, each on a task of its own (decision 83): one projection's
    /// folding runs on one core while another's runs on the other or waits for its
    /// `COPY`, instead of all of them taking turns on the projector's thread.
    async fn apply_apart(
        &mut self,
        slots: &[usize],
        batch: &Arc<Vec<Envelope>>,
        last: &impl Fn(&Slot) -> LogCursor,
    ) -> Vec<(usize, LogCursor, Outcome)> {
        if slots.len() == 1 {
            let i = slots[0];
            let last = last(&self.slots[i]);
            let outcome = apply_slot(&self.store, &mut self.slots[i], batch, last).await;
            return vec![(i, last, outcome)];
        }
        // Each task owns its slot while it runs; every slot that comes back is put
        // back in its place before a task's panic is passed on.
        let mut taken: Vec<Option<Slot>> = std::mem::take(&mut self.slots)
            .into_iter()
            .map(Some)
            .collect();
        let mut tasks = Vec::with_capacity(slots.len());
        for &i in slots {
            let Some(mut slot) = taken[i].take() else {
                continue;
            };
            let last = last(&slot);
            let (store, batch) = (self.store.clone(), Arc::clone(batch));
            tasks.push(tokio::spawn(async move {
                let outcome = apply_slot(&store, &mut slot, &batch, last).await;
                (i, slot, last, outcome)
            }));
        }
        let mut outcomes = Vec::with_capacity(tasks.len());
        let mut panic = None;
        for joined in futures::future::join_all(tasks).await {
            match joined {
                Ok((i, slot, last, outcome)) => {
                    taken[i] = Some(slot);
                    outcomes.push((i, last, outcome));
                }
                Err(error) if error.is_panic() => {
                    panic.get_or_insert(error.into_panic());
                }
                // Never aborted: only a runtime shutting down cancels them. The
                // projector cannot go on without that slot.
                Err(error) => {
                    panic.get_or_insert(Box::new(format!("a projection's task stopped: {error}")));
                }
            }
        }
        self.slots = taken.into_iter().flatten().collect();
        if let Some(panic) = panic {
            std::panic::resume_unwind(panic);
        }
        outcomes
    }

    /// Turns [`ProjectorOptions::defer_writes`] off and writes every row the
    /// projections still owe: one transaction per projection, with its checkpoint.
    /// Does nothing when writes were not deferred.
    pub async fn stop_deferring(&mut self) -> Result<(), StoreError> {
        if !std::mem::take(&mut self.options.defer_writes) {
            return Ok(());
        }
        for slot in &mut self.slots {
            slot.projection.defer_writes(false);
            slot.projection.write_behind(None);
        }
        let slots: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].owned && self.slots[i].failed.is_none())
            .collect();
        let error = self
            .apply_to(&slots, &Arc::new(Vec::new()), |slot| slot.checkpoint)
            .await;
        self.publish();
        if let Some(error) = error {
            return Err(StoreError::Database(error));
        }
        match slots.iter().find(|&&i| self.slots[i].reload) {
            Some(&i) => Err(StoreError::Stopped(format!(
                "the checkpoint of projection {} moved while it deferred its writes",
                self.slots[i].projection.name()
            ))),
            None => Ok(()),
        }
    }

    /// Writes the checkpoints that skipped batches left behind: those unwritten for
    /// [`CHECKPOINT_FLUSH`], or every one (`all`), in one transaction (each
    /// compared and set against what this runner last wrote: one that moved
    /// elsewhere, a rebuild swapped in, is reloaded instead).
    pub async fn flush_checkpoints(&mut self, all: bool) -> Result<(), StoreError> {
        let now = std::time::Instant::now();
        let due: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                let slot = &self.slots[i];
                slot.owned
                    && slot.failed.is_none()
                    && slot.unwritten.is_some_and(|(since, _)| {
                        all || now.duration_since(since) >= CHECKPOINT_FLUSH
                    })
            })
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        // rows locked in name order, as a rebuild's swap locks them (no deadlock)
        let mut due = due;
        due.sort_by_key(|&i| self.slots[i].projection.name());
        let _turn = match &self.store {
            Store::Sqlite(sqlite) => Some(sqlite.write_turn().await),
            Store::Postgres(_) => None,
        };
        let mut tx = Tx::begin(&self.store).await?;
        let mut moved = vec![];
        for &i in &due {
            let slot = &self.slots[i];
            let mut sql = Sql::new(tx.backend());
            let text = format!(
                "UPDATE projection_checkpoints SET tx_id = {}, position = {}, \
                 events_applied = events_applied + {}, updated_at = {} \
                 WHERE name = {} AND tx_id = {} AND position = {} AND generation = {}",
                sql.arg(slot.checkpoint.tx_id),
                sql.arg(slot.checkpoint.position),
                sql.arg(slot.unwritten.map_or(0, |(_, n)| n)),
                sql.arg(fmt_time(Utc::now())),
                sql.arg(slot.projection.name()),
                sql.arg(slot.stored.tx_id),
                sql.arg(slot.stored.position),
                sql.arg(slot.generation),
            );
            sql.push(&text);
            if tx.run(&sql).await? == 0 {
                moved.push(i);
            }
        }
        tx.commit().await?;
        for &i in &due {
            let slot = &mut self.slots[i];
            if moved.contains(&i) {
                tracing::info!(
                    projection = slot.projection.name(),
                    "checkpoint moved elsewhere (rebuild?): reloading"
                );
                slot.reload = true;
            } else {
                slot.stored = slot.checkpoint;
                slot.unwritten = None;
            }
        }
        self.publish();
        Ok(())
    }

    /// How long until an unwritten checkpoint is due ([`Self::flush_checkpoints`]).
    fn next_flush(&self) -> Option<Duration> {
        self.slots
            .iter()
            .filter_map(|s| s.unwritten.filter(|_| s.owned))
            .map(|(since, _)| CHECKPOINT_FLUSH.saturating_sub(since.elapsed()))
            .min()
    }

    /// Applies batches until nothing is left to apply, and writes every
    /// checkpoint. Returns the events applied.
    ///
    /// Caught up means past every event committed when it was called. On
    /// PostgreSQL a step may read nothing while such events exist (an older
    /// transaction anywhere in the cluster holds gap-safe reads back): it then waits
    /// briefly and reads again.
    pub async fn catch_up(&mut self) -> Result<u64, StoreError> {
        let target = self.store.committed_head().await?;
        let mut total = 0;
        let mut pause = HeldBackPause::default();
        loop {
            match self.step().await? {
                Step::Applied(n) => {
                    total += n as u64;
                    pause.reset();
                }
                Step::Idle => {
                    let behind = self
                        .slots
                        .iter()
                        .any(|s| s.owned && s.failed.is_none() && s.checkpoint < target);
                    if !behind {
                        break;
                    }
                    pause.wait().await;
                }
            }
        }
        self.flush_checkpoints(true).await?;
        Ok(total)
    }

    /// Runs until the task is dropped or aborted (a transaction in flight then rolls
    /// back, which is safe). Errors are logged and retried with backoff.
    pub async fn run(mut self) {
        let tables: Vec<&'static str> = self
            .slots
            .iter()
            .flat_map(|slot| slot.projection.tables().iter().copied())
            .collect();
        let caught_up = Arc::new(tokio::sync::Notify::new());
        let _upkeep = Background(tokio::spawn(keep_tables(
            self.store.clone(),
            tables,
            caught_up.clone(),
        )));
        let mut wakeup: Option<eventstore::Wakeup> = None;
        let mut backoff = Duration::from_millis(50);
        // whether a step applied anything since the last wait
        let mut applied = false;
        loop {
            if wakeup.is_none() {
                match self.store.wakeup().await {
                    Ok(w) => wakeup = Some(w),
                    Err(error) => tracing::warn!(%error, "no event wake-ups; polling"),
                }
            }
            match self.step().await {
                Ok(Step::Applied(_)) => {
                    applied = true;
                    backoff = Duration::from_millis(50);
                    tokio::task::yield_now().await;
                }
                Ok(Step::Idle) => {
                    if applied {
                        caught_up.notify_one();
                    }
                    // Checkpoints left behind by skipped batches are written soon
                    // after the log goes quiet.
                    let wait = self
                        .next_flush()
                        .map_or(self.options.poll, |due| due.min(self.options.poll));
                    match wakeup.as_mut() {
                        Some(w) => {
                            if !std::mem::take(&mut applied) {
                                w.nothing_read();
                            }
                            w.wait(wait).await;
                        }
                        None => tokio::time::sleep(wait).await,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "projector batch failed; retrying");
                    // The listener holds a pooled connection: give it back (a closing
                    // pool waits for it) and listen afresh once the store answers.
                    wakeup = None;
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
    /// The row `id` of `projection`'s table as this process's projector last
    /// committed it (`Some(None)`: it deleted the row), when the projection runs
    /// here and shares its rows and the row is still kept; `None`: query the table.
    ///
    /// Call it after [`ProjectorHandle::wait_for`] returned for the position the
    /// reader needs: a kept row is the table's as of a checkpoint at least that far
    /// (a commit's rows are shared before its checkpoint is published, and every
    /// later change of the row replaces them), so the answer is the one the table
    /// would give at that checkpoint.
    pub fn recent_row<R: crate::sql::Row>(&self, projection: &str, id: &str) -> Option<Option<R>> {
        let recent = self
            .recent
            .get(projection)?
            .downcast_ref::<RecentRows<R>>()?;
        let running = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(projection)
            .is_some_and(|s| s.running_here && s.failed.is_none());
        if running {
            recent.get(id)
        } else {
            None
        }
    }

    pub fn status(&self) -> Vec<ProjectionStatus> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = status.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// A number that changes whenever a read model of this process may have
    /// changed (it moves after every batch's commits), or `None` when this process
    /// cannot tell: some projection runs in another process or has stopped. A
    /// response cache keyed by it never serves data older than the version.
    pub fn read_version(&self) -> Option<u64> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let complete = status.len() >= crate::NAMES.len()
            && status
                .values()
                .all(|s| s.running_here && s.failed.is_none());
        complete.then(|| *self.changed.borrow())
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

/// How often a running projector looks at its tables' planner statistics, at the
/// latest; it also looks when it has caught up after applying events, at most once
/// per [`STATISTICS_SPACING`].
const STATISTICS_CHECK: Duration = Duration::from_secs(5);
const STATISTICS_SPACING: Duration = Duration::from_secs(1);

/// What the tables given (as the connection's `search_path` resolves them) are due,
/// by autovacuum's default thresholds: an `ANALYZE` when more than 50 rows plus a
/// tenth of the table changed since the last one; a `VACUUM` when more than 50 rows
/// plus a fifth of the table are dead row versions and autovacuum does not look
/// after the table (off for the server, or `autovacuum_enabled = false` for the
/// table).
const UPKEEP_DUE: &str = "SELECT t, \
      s.n_mod_since_analyze > 50 + 0.1 * GREATEST(s.n_live_tup, 0), \
      s.n_dead_tup > 50 + 0.2 * GREATEST(s.n_live_tup, 0) \
        AND NOT (current_setting('autovacuum')::boolean AND NOT EXISTS ( \
          SELECT 1 FROM pg_options_to_table(c.reloptions) o \
          WHERE o.option_name = 'autovacuum_enabled' \
            AND lower(o.option_value) IN ('false', 'off', 'no', '0', 'f', 'n'))) \
    FROM unnest($1::text[]) AS t \
    JOIN pg_stat_user_tables s ON s.relid = to_regclass(t) \
    JOIN pg_class c ON c.oid = s.relid ORDER BY t";

/// A table's upkeep as [`upkeep_due`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upkeep {
    pub table: String,
    /// Changed more than autovacuum's analyze threshold since its last `ANALYZE`.
    pub analyze: bool,
    /// More dead row versions than autovacuum's vacuum threshold, and autovacuum
    /// does not look after it.
    pub vacuum: bool,
}

/// What `tables` are due on PostgreSQL (decisions 61 and 65): the tables a running
/// projector would analyze or vacuum now. Benchmarks wait until nothing is due
/// before timing. Empty on SQLite.
pub async fn upkeep_due(store: &Store, tables: &[&str]) -> Result<Vec<Upkeep>, StoreError> {
    let Store::Postgres(PgStore { pool, .. }) = store else {
        return Ok(vec![]);
    };
    let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    let rows: Vec<(String, bool, bool)> = sqlx::query_as(UPKEEP_DUE)
        .bind(&names)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .filter(|(_, analyze, vacuum)| *analyze || *vacuum)
        .map(|(table, analyze, vacuum)| Upkeep {
            table,
            analyze,
            vacuum,
        })
        .collect())
}

/// A task aborted when this is dropped (it lives as long as its owner's future).
struct Background(tokio::task::JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps a running projector's tables in shape on PostgreSQL, whether or not
/// autovacuum runs there: when the projector has caught up (`caught_up`), and every
/// [`STATISTICS_CHECK`], it analyzes the tables that changed as much as autovacuum's
/// default threshold asks (decision 61), and vacuums those with as many dead row
/// versions as its threshold asks if autovacuum does not look after them (decision
/// 65). Without statistics the planner guesses: the matrix's cells of one page were
/// read with a sequential scan of every cell, and its rows sorted from the whole
/// tenant. Without vacuum every rewritten row leaves a dead version behind for
/// good: the first page's index scan visited twice the pages at 10,000 canonical
/// workflows, and the tables only grow. One table is kept per look, and the upkeep
/// then rests for [`UPKEEP_REST`] times what it took (decisions 72, 73). SQLite
/// needs none of this for these queries (its planner takes the indexes without
/// statistics, and it reuses freed pages).
async fn keep_tables(store: Store, tables: Vec<&'static str>, caught_up: Arc<tokio::sync::Notify>) {
    let Store::Postgres(PgStore { pool, .. }) = &store else {
        return;
    };
    let mut tick = tokio::time::interval(STATISTICS_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rest = UpkeepRest::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = caught_up.notified() => {}
        }
        // A projector that keeps catching up (a steady stream of appends) asks for
        // a look after every batch: one look per spacing at most.
        tokio::time::sleep(STATISTICS_SPACING).await;
        if !rest.ready(Instant::now()) {
            continue;
        }
        let due = match upkeep_due(&store, &tables).await {
            Ok(due) => due,
            Err(error) => {
                tracing::debug!(%error, "could not read the read models' table statistics");
                continue;
            }
        };
        // Only names of our own tables reach the statements (they came from `tables`),
        // one table per look so that its time sets the rest.
        let Some((table, upkeep)) = rest.next(&tables, &due) else {
            continue;
        };
        // A table with that many dead rows changed enough to be analyzed too:
        // `VACUUM (ANALYZE)` does both. It cannot run in a transaction, so it goes
        // as a simple query of its own.
        let (statement, what) = if upkeep.vacuum {
            (format!("VACUUM (ANALYZE) {table}"), "vacuum")
        } else {
            (format!("ANALYZE {table}"), "analyze")
        };
        let started = Instant::now();
        if let Err(error) = sqlx::raw_sql(&statement).execute(pool).await {
            tracing::warn!(%error, table, "could not {what} a read-model table");
        }
        rest.ran(table, started.elapsed());
    }
}

/// How long a projector's table upkeep waits after each statement: [`UPKEEP_REST`]
/// times what that one took, so analyzing and vacuuming take at most about 1/50 of
/// the time, whatever the number of tables (an `ANALYZE` of a large table samples
/// 30,000 rows: about 0.3 s of a core here, which tables growing steadily would
/// otherwise pay every few seconds, each). Small tables take milliseconds and are
/// held back by little more than [`STATISTICS_SPACING`].
const UPKEEP_REST: u32 = 49;

/// When the upkeep may run next, and when each table was last kept: of the tables
/// due, the one kept longest ago goes first (one that never was, before any), so a
/// table always due cannot hold the others back.
#[derive(Default)]
struct UpkeepRest {
    until: Option<Instant>,
    kept: HashMap<&'static str, Instant>,
}

impl UpkeepRest {
    fn ready(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| now >= until)
    }

    /// The table of `tables` to keep next, of those `due`.
    fn next<'u>(
        &self,
        tables: &[&'static str],
        due: &'u [Upkeep],
    ) -> Option<(&'static str, &'u Upkeep)> {
        tables
            .iter()
            .filter_map(|&t| due.iter().find(|u| u.table == t).map(|u| (t, u)))
            // (`None`, never kept, orders before any time)
            .min_by_key(|(t, _)| self.kept.get(t).copied())
    }

    fn ran(&mut self, table: &'static str, took: Duration) {
        let now = Instant::now();
        self.kept.insert(table, now);
        self.until = Some(now + took.saturating_mul(UPKEEP_REST));
    }
}

/// Refreshes the planner statistics of a projection's tables (after a rebuild, the
/// tables changed completely and autovacuum has not looked at them yet).
pub async fn analyze(store: &Store, tables: &[&str]) -> Result<(), StoreError> {
    match store {
        Store::Postgres(PgStore { pool, .. }) => {
            sqlx::query(&format!("ANALYZE {}", tables.join(", ")))
                .execute(pool)
                .await?;
        }
        Store::Sqlite(sqlite) => {
            let _turn = sqlite.write_turn().await;
            for table in tables {
                sqlx::query(&format!("ANALYZE {table}"))
                    .execute(&sqlite.pool)
                    .await?;
            }
        }
    }
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
        fn defer_writes(&mut self, defer: bool) {
            $(self.$field.defer_writes(defer);)+
        }
    };
}

/// Implements [`Projection`] for a list view of one aggregate type: events decoded as
/// `Decoded::$variant` go to the type's `fold(tx, event, e)`; an undecodable payload
/// of that aggregate type stops the projection; every other event is not its concern.
#[macro_export]
macro_rules! single_aggregate_projection {
    ($projection:ty, $name:expr, $table:literal, $rows:ident, $variant:ident, $aggregate:literal) => {
        impl $crate::runtime::Projection for $projection {
            fn name(&self) -> &'static str {
                $name
            }

            fn tables(&self) -> &'static [&'static str] {
                &[$table]
            }

            fn aggregate_types(&self) -> Option<&'static [&'static str]> {
                Some(&[$aggregate])
            }

            fn apply<'a>(
                &'a mut self,
                tx: &'a mut $crate::sql::Tx,
                event: &'a $crate::event::Envelope,
            ) -> futures::future::BoxFuture<'a, Result<(), $crate::runtime::ApplyError>> {
                Box::pin(async move {
                    match &event.event {
                        $crate::event::Decoded::$variant(e) => self.fold(tx, event, e).await,
                        $crate::event::Decoded::Undecodable(error)
                            if event.stored.aggregate_type == $aggregate =>
                        {
                            Err($crate::runtime::ApplyError::Event(format!(
                                "undecodable payload: {error}"
                            )))
                        }
                        _ => Ok(()),
                    }
                })
            }

            $crate::row_tables!($rows);

            fn recent_rows(&mut self) -> Option<std::sync::Arc<dyn std::any::Any + Send + Sync>> {
                let rows: std::sync::Arc<dyn std::any::Any + Send + Sync> = self.$rows.recent();
                Some(rows)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upkeep_rests_for_a_multiple_of_what_it_took_and_goes_round_the_tables() {
        let due = |tables: &[&str]| -> Vec<Upkeep> {
            tables
                .iter()
                .map(|t| Upkeep {
                    table: t.to_string(),
                    analyze: true,
                    vacuum: false,
                })
                .collect()
        };
        let tables = ["rm_audit", "rm_environments", "rm_incidents"];
        let mut rest = UpkeepRest::default();
        assert!(rest.ready(Instant::now()), "never kept: ready");
        let all = due(&tables);
        assert_eq!(rest.next(&tables, &all).unwrap().0, "rm_audit");
        rest.ran("rm_audit", Duration::from_millis(300));
        // every table rests after any one (the bound is on the upkeep as a whole)
        let after = Instant::now();
        assert!(!rest.ready(after));
        assert!(!rest.ready(after + Duration::from_secs(14)));
        assert!(rest.ready(after + Duration::from_millis(300 * 49)));
        // next, the tables never kept, in order; then the one kept longest ago
        assert_eq!(rest.next(&tables, &all).unwrap().0, "rm_environments");
        rest.ran("rm_environments", Duration::ZERO);
        assert!(rest.ready(Instant::now()));
        assert_eq!(rest.next(&tables, &all).unwrap().0, "rm_incidents");
        rest.ran("rm_incidents", Duration::ZERO);
        assert_eq!(rest.next(&tables, &all).unwrap().0, "rm_audit");
        // only due tables, and only ours
        let some = due(&["rm_incidents", "elsewhere"]);
        assert_eq!(rest.next(&tables, &some).unwrap().0, "rm_incidents");
        assert!(rest.next(&tables, &due(&["elsewhere"])).is_none());
    }
}
