//! Group commit: the appends of concurrent commands share one statement and one
//! commit.
//!
//! Every append goes to the store's committer, one task per store started with its
//! first append. The committer takes the next append and, without waiting, every
//! other one already queued (up to [`MAX_EVENTS`] events and [`MAX_BYTES`] of
//! payload and metadata), at most one per aggregate (a second append to the same
//! aggregate waits for the next group: it was decided on the same state, or on a
//! state this group is about to change). An append alone goes as it always did: one
//! autocommit statement. A group of several goes as one:
//!
//! - **PostgreSQL**: one autocommit statement. A first data-modifying `WITH` inserts
//!   each command's first event with `ON CONFLICT DO NOTHING`; the rest of a
//!   command's events are inserted only if its first one was. A sequence already
//!   taken therefore skips that whole command, which gets
//!   [`AppendError::Conflict`], while the others of the group commit. (A later event
//!   of a command cannot conflict when its first one did not: every writer appends
//!   its aggregate's next sequences in order, after the stored ones.)
//!   A group whose commands append one event each (the usual case) first goes as
//!   one plain `INSERT … SELECT FROM UNNEST` without `ON CONFLICT` or `WITH`
//!   ([`PG_SINGLES`]: a quarter less time per statement); if a sequence was taken,
//!   that statement fails whole and the group goes again as above.
//! - **SQLite**: one statement under the write turn ([`insert_sqlite`]: a multi-row
//!   `INSERT` of every event of the group, atomic on its own). A command whose
//!   predecessor is not stored as written contributes no row and is a conflict. If a
//!   sequence was taken, that statement undoes itself and the group goes command by
//!   command in one transaction (a command is one statement): a constraint
//!   violation undoes and refuses only its own command.
//!
//! Success is reported only after the commit (`fetch_all`, decision 3). If the group
//! statement fails for any other reason, each of its appends is retried alone, so one
//! bad append cannot fail the others. Per-command conflict detection is unchanged:
//! the unique `(aggregate_type, aggregate_id, sequence)` key decides, and a conflict
//! stores nothing of that command.
//!
//! The committer runs one group at a time; appends arriving meanwhile form the next
//! group. A lone append waits for nothing. On PostgreSQL it runs on a thread of its
//! own with its own two connections ([`on_own_thread`]): on the shared runtime the
//! group statement's answer waited for a worker to be free of request handlers.
//! If the caller stops waiting (a request deadline), its append still lands or is
//! refused as it would have been: the outcome of a command does not depend on
//! whether anyone is still listening.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::append::{classify, insert_sqlite, AppendError, NewEvent, Predecessor, SqliteCommand};
use crate::{LogCursor, PgStore, SqliteStore, Store, StoreError};

/// Most events in one group.
pub const MAX_EVENTS: usize = 512;
/// Most bytes of payload and metadata in one group.
pub const MAX_BYTES: usize = 4 << 20;
/// Appends that may wait for the committer before callers wait to enqueue.
const QUEUE: usize = 4096;

struct Request {
    events: Vec<NewEvent>,
    /// The stored event the first one must follow, when the command was decided
    /// without reading the stream.
    after: Option<Predecessor>,
    reply: oneshot::Sender<Result<LogCursor, AppendError>>,
}

impl Request {
    fn key(&self) -> (&str, &str) {
        let first = &self.events[0];
        (&first.aggregate_type, &first.aggregate_id)
    }

    fn bytes(&self) -> usize {
        self.events
            .iter()
            .map(|e| e.payload.len() + e.metadata.len())
            .sum()
    }
}

/// The store's committer, started on first use (an append runs inside a Tokio
/// runtime; building a store need not).
#[derive(Default, Clone)]
pub(crate) struct Committer {
    sender: Arc<OnceLock<mpsc::Sender<Request>>>,
    /// PostgreSQL: the committer's own connections, once started (closed with the
    /// store's pool).
    pool: Arc<OnceLock<sqlx::PgPool>>,
    counters: Arc<Counters>,
    recent: Arc<std::sync::Mutex<Vec<LogCursor>>>,
    aggregates: crate::cache::AggregateCache,
}

/// How many of this process's latest appends keep their cursor in memory.
const RECENT: usize = 4096;

#[derive(Default)]
struct Counters {
    groups: AtomicU64,
    appends: AtomicU64,
    shared: AtomicU64,
    retried: AtomicU64,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Committer")
    }
}

/// What a store's committer has done so far: `appends / groups` is the mean
/// group size (for benchmarks and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupStats {
    /// Statements (SQLite: transactions) the committer ran.
    pub groups: u64,
    /// Appends they carried.
    pub appends: u64,
    /// Groups of two appends or more.
    pub shared: u64,
    /// Of those, the ones whose first statement did not store them (a sequence was
    /// taken, or an error) and that went again.
    pub retried: u64,
}

impl Store {
    /// This store's group commits so far.
    pub fn group_stats(&self) -> GroupStats {
        let counters = &self.committer().counters;
        GroupStats {
            groups: counters.groups.load(Relaxed),
            appends: counters.appends.load(Relaxed),
            shared: counters.shared.load(Relaxed),
            retried: counters.retried.load(Relaxed),
        }
    }

    /// The aggregates this process loaded or committed lately ([`crate::cache`]).
    pub(crate) fn aggregate_cache(&self) -> &crate::cache::AggregateCache {
        &self.committer().aggregates
    }

    /// How many aggregates this process keeps replayed (tests and benchmarks).
    pub fn cached_aggregates(&self) -> usize {
        self.aggregate_cache().len()
    }

    /// Closes the PostgreSQL committer's connections, if it started.
    pub(crate) async fn close_committer(&self) {
        if let Some(pool) = self.committer().pool.get() {
            pool.close().await;
        }
    }

    fn committer(&self) -> &Committer {
        match self {
            Store::Postgres(pg) => &pg.committer,
            Store::Sqlite(sqlite) => &sqlite.committer,
        }
    }

    /// The cursor right after the event at `position` if this process appended it
    /// lately (the read-back of a mutation waits for it: no query needed).
    pub(crate) fn recent_cursor(&self, position: i64) -> Option<LogCursor> {
        let recent = self.committer().recent.lock().ok()?;
        recent
            .get(position.rem_euclid(RECENT as i64) as usize)
            .filter(|cursor| cursor.position == position)
            .copied()
    }

    fn remember(&self, cursor: LogCursor) {
        if let Ok(mut recent) = self.committer().recent.lock() {
            if recent.is_empty() {
                recent.resize(RECENT, LogCursor::START);
            }
            recent[cursor.position.rem_euclid(RECENT as i64) as usize] = cursor;
        }
    }

    /// Appends `events` (one command's, all of one aggregate) atomically through the
    /// committer, and returns the cursor of the last one. With `after`, the event
    /// before the first one must be stored exactly so, checked in the same statement
    /// ([`Predecessor`]); otherwise nothing is stored and it is a conflict.
    pub(crate) async fn append(
        &self,
        events: Vec<NewEvent>,
        after: Option<Predecessor>,
    ) -> Result<LogCursor, AppendError> {
        if events.is_empty() {
            return Err(AppendError::Store(StoreError::Config(
                "nothing to append".into(),
            )));
        }
        let committer = self.committer();
        let sender = committer.sender.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            // The task's copy of the store has a committer of its own that is never
            // started: holding this one's sender would keep the channel (and the
            // pool) alive after every other copy of the store is dropped.
            let mut detached = self.clone();
            match &mut detached {
                Store::Postgres(pg) => pg.committer = Committer::default(),
                Store::Sqlite(sqlite) => sqlite.committer = Committer::default(),
            }
            let counters = committer.counters.clone();
            match detached {
                Store::Postgres(pg) => {
                    if let Err(error) = on_own_thread(pg, counters, receiver, &committer.pool) {
                        // Cannot happen short of the OS refusing a thread: the
                        // appends are then refused (the channel is closed) and each
                        // goes alone, on the caller's task.
                        tracing::error!(%error, "cannot start the committer's thread");
                    }
                }
                sqlite @ Store::Sqlite(_) => {
                    tokio::spawn(run(sqlite, counters, receiver));
                }
            }
            sender
        });
        let (reply, answer) = oneshot::channel();
        if let Err(refused) = sender
            .send(Request {
                events,
                after,
                reply,
            })
            .await
        {
            // The committer is gone (its runtime shut down): append directly.
            return append_alone(self, &refused.0).await;
        }
        let cursor = answer.await.map_err(|_| {
            AppendError::Store(StoreError::Config(
                "the committer stopped before answering; the append may or may not have \
                 been stored (a retry of the command finds out)"
                    .into(),
            ))
        })??;
        self.remember(cursor);
        Ok(cursor)
    }
}

/// Connections the PostgreSQL committer keeps: one runs the group statement, the
/// other is there for an append that goes alone after a failed group.
const COMMITTER_CONNECTIONS: u32 = 2;

/// Runs the PostgreSQL committer on a thread of its own, with a single-threaded
/// runtime and its own connections (same options as `pg`'s pool). On the shared
/// runtime the group statement's answer waited until a worker was free of request
/// handlers (measured: a third of the statement's time on two cores); here the
/// kernel wakes the committer as soon as the answer arrives. The thread ends when
/// every copy of the store is dropped (the channel closes).
fn on_own_thread(
    mut pg: PgStore,
    counters: Arc<Counters>,
    receiver: mpsc::Receiver<Request>,
    kept: &Arc<OnceLock<sqlx::PgPool>>,
) -> std::io::Result<()> {
    // A generic plan for every statement (decision 78): each of the committer's
    // statements has one plan shape whatever its arrays hold, but with arrays as
    // parameters PostgreSQL's estimate of a generic plan (a hundred rows per
    // `UNNEST`) stays above its custom plans', so it planned every group anew.
    let options = (*pg.pool.connect_options())
        .clone()
        .options([("plan_cache_mode", "force_generic_plan")]);
    let kept = kept.clone();
    std::thread::Builder::new()
        .name("workflowops-committer".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    // The receiver goes with this thread: every append then goes
                    // alone, on its caller's task.
                    tracing::error!(%error, "cannot start the committer's runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                // Created inside the runtime that drives its connections.
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(COMMITTER_CONNECTIONS)
                    .acquire_timeout(std::time::Duration::from_secs(10))
                    .connect_lazy_with(options);
                let _ = kept.set(pool.clone());
                pg.pool = pool;
                run(Store::Postgres(pg), counters, receiver).await
            })
        })?;
    Ok(())
}

async fn run(store: Store, counters: Arc<Counters>, mut receiver: mpsc::Receiver<Request>) {
    let mut carried: VecDeque<Request> = VecDeque::new();
    loop {
        let first = match carried.pop_front() {
            Some(request) => request,
            None => match receiver.recv().await {
                Some(request) => request,
                None => return,
            },
        };
        let mut group = Group::new(first);
        while let Some(request) = carried.pop_front() {
            group.consider(request);
        }
        while !group.full {
            match receiver.try_recv() {
                Ok(request) => group.consider(request),
                Err(_) => break,
            }
        }
        carried = std::mem::take(&mut group.deferred);
        counters.groups.fetch_add(1, Relaxed);
        counters
            .appends
            .fetch_add(group.requests.len() as u64, Relaxed);
        commit_group(&store, &counters, group.requests).await;
    }
}

/// The appends of one group, and those deferred to the next.
struct Group {
    requests: Vec<Request>,
    deferred: VecDeque<Request>,
    keys: HashSet<(String, String)>,
    events: usize,
    bytes: usize,
    full: bool,
}

impl Group {
    fn new(first: Request) -> Group {
        Group {
            keys: HashSet::from([owned(first.key())]),
            events: first.events.len(),
            bytes: first.bytes(),
            requests: vec![first],
            deferred: VecDeque::new(),
            full: false,
        }
    }

    /// Takes `request` into the group, or defers it: the group is full, or already
    /// appends to the same aggregate.
    fn consider(&mut self, request: Request) {
        let fits = self.events + request.events.len() <= MAX_EVENTS
            && self.bytes + request.bytes() <= MAX_BYTES;
        self.full |= !fits;
        if self.full || self.keys.contains(&owned(request.key())) {
            self.deferred.push_back(request);
            return;
        }
        self.events += request.events.len();
        self.bytes += request.bytes();
        self.keys.insert(owned(request.key()));
        self.requests.push(request);
    }
}

fn owned((t, i): (&str, &str)) -> (String, String) {
    (t.to_string(), i.to_string())
}

/// One append in a statement of its own (with its predecessor's check, if any).
async fn append_alone(store: &Store, request: &Request) -> Result<LogCursor, AppendError> {
    match (&request.after, store) {
        (None, _) => store.append_one(&request.events).await,
        (Some(_), Store::Postgres(pg)) => append_group_pg(pg, std::slice::from_ref(request))
            .await
            .map_err(classify)?
            .0
            .pop()
            .unwrap_or(Err(AppendError::Conflict)),
        (Some(_), Store::Sqlite(sqlite)) => {
            append_group_sqlite(sqlite, std::slice::from_ref(request))
                .await
                .map_err(classify)?
                .0
                .pop()
                .unwrap_or(Err(AppendError::Conflict))
        }
    }
}

async fn commit_group(store: &Store, counters: &Counters, group: Vec<Request>) {
    if group.len() == 1 {
        for request in group {
            let result = append_alone(store, &request).await;
            if let Ok(cursor) = result {
                store.appended(cursor.position);
            }
            let _ = request.reply.send(result);
        }
        return;
    }
    counters.shared.fetch_add(1, Relaxed);
    let outcome = match store {
        Store::Postgres(pg) => append_group_pg(pg, &group).await,
        Store::Sqlite(sqlite) => append_group_sqlite(sqlite, &group).await,
    };
    if !matches!(outcome, Ok((_, false))) {
        counters.retried.fetch_add(1, Relaxed);
    }
    match outcome {
        Ok((results, _)) => {
            if let Some(last) = results.iter().filter_map(|r| r.as_ref().ok()).max() {
                store.appended(last.position);
            }
            for (request, result) in group.into_iter().zip(results) {
                let _ = request.reply.send(result);
            }
        }
        Err(error) => {
            // Nothing of the group was stored: each append alone, so one bad append
            // fails only itself.
            tracing::debug!(%error, size = group.len(), "group append failed; appending one by one");
            for request in group {
                let result = append_alone(store, &request).await;
                if let Ok(cursor) = result {
                    store.appended(cursor.position);
                }
                let _ = request.reply.send(result);
            }
        }
    }
}

/// `k` numbers a command's events from 0. A first event whose command was decided
/// without reading the stream carries its [`Predecessor`] (`gx`,
/// [`Predecessor::pg_guard`]) and goes in only if the stream still ends so: for 0,
/// no event of the aggregate is stored (a probe of the key's prefix); otherwise the
/// event before it is still the row that transaction inserted: the same `tx_id`,
/// and an `xmin` (the transaction that wrote this version of the row: the low 32
/// bits of an `xid8`) that is still that transaction's. Both checks are scalar
/// subqueries, as in [`PG_SINGLES`]: one primary-key probe per row whatever plan
/// the committer's generic plans (decision 78) estimate.
const PG_GROUP: &str = "WITH input AS ( \
      SELECT * FROM UNNEST($1::int[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
        $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::bigint[]) \
        AS u(k, t, i, s, et, ev, p, m, r, gx) \
    ), \
    heads AS ( \
      INSERT INTO events \
        (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at) \
      SELECT t, i, s, et, ev, p::json, m::json, r FROM input u WHERE k = 0 \
        AND (u.gx IS NULL \
          OR (u.gx = 0 AND (SELECT 1 FROM events e \
            WHERE e.aggregate_type = u.t AND e.aggregate_id = u.i LIMIT 1) IS NULL) \
          OR ( \
          SELECT e.tx_id FROM events e WHERE e.aggregate_type = u.t AND e.aggregate_id = u.i \
            AND e.sequence = u.s - 1 AND e.xmin = (u.gx % 4294967296)::text::xid \
          ) = u.gx::text::xid8) \
      ORDER BY t, i \
      ON CONFLICT DO NOTHING \
      RETURNING aggregate_type, aggregate_id, position, tx_id::text::bigint AS tx_id \
    ), \
    tails AS ( \
      INSERT INTO events \
        (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at) \
      SELECT u.t, u.i, u.s, u.et, u.ev, u.p::json, u.m::json, u.r \
      FROM input u JOIN heads h ON h.aggregate_type = u.t AND h.aggregate_id = u.i \
      WHERE u.k > 0 ORDER BY u.t, u.i, u.s \
      RETURNING aggregate_type, aggregate_id, position, tx_id::text::bigint AS tx_id \
    ) \
    SELECT aggregate_type, aggregate_id, MAX(position), MAX(tx_id) FROM ( \
      SELECT * FROM heads UNION ALL SELECT * FROM tails \
    ) AS stored GROUP BY aggregate_type, aggregate_id";

/// [`PG_GROUP`] for a group whose commands append one event each: one plain
/// `INSERT`, no `ON CONFLICT` (its speculative insertion and the `WITH`'s
/// bookkeeping cost PostgreSQL about a quarter of the statement). A sequence already
/// taken fails the whole statement with a unique violation, and the group then goes
/// through [`PG_GROUP`], which tells the conflicting commands from the others. The
/// predecessor's check is a scalar subquery (one primary-key probe per row; unlike
/// `EXISTS`, it cannot be planned as a hashed scan of the log), and the rows go in
/// key order, as [`PG_GROUP`]'s do, so concurrent groups take row locks in one order.
const PG_SINGLES: &str = "INSERT INTO events \
      (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at) \
    SELECT t, i, s, et, ev, p::json, m::json, r \
    FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], \
      $7::text[], $8::timestamptz[], $9::bigint[]) AS u(t, i, s, et, ev, p, m, r, gx) \
    WHERE u.gx IS NULL \
      OR (u.gx = 0 AND (SELECT 1 FROM events e \
        WHERE e.aggregate_type = u.t AND e.aggregate_id = u.i LIMIT 1) IS NULL) \
      OR ( \
      SELECT e.tx_id FROM events e WHERE e.aggregate_type = u.t AND e.aggregate_id = u.i \
        AND e.sequence = u.s - 1 AND e.xmin = (u.gx % 4294967296)::text::xid \
    ) = u.gx::text::xid8 \
    ORDER BY t, i \
    RETURNING aggregate_type, aggregate_id, position, tx_id::text::bigint";

/// Per append of the group its last position or a conflict, and whether the group
/// went again after its first statement (one-event commands whose `PG_SINGLES` met
/// a taken sequence).
async fn append_group_pg(
    pg: &PgStore,
    group: &[Request],
) -> Result<(Vec<Result<LogCursor, AppendError>>, bool), sqlx::Error> {
    let mut again = false;
    if group.iter().all(|r| r.events.len() == 1) {
        match append_singles_pg(pg, group).await {
            // A sequence was taken: nothing of the group is stored; find out which.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => again = true,
            other => return other.map(|results| (results, false)),
        }
    }
    let rows = group.iter().flat_map(|r| r.events.iter().enumerate());
    let column = |f: fn(&NewEvent) -> String| rows.clone().map(|(_, e)| f(e)).collect::<Vec<_>>();
    // The predecessor's transaction on each command's first row, NULL elsewhere.
    let guard: Vec<Option<i64>> = group
        .iter()
        .flat_map(|r| {
            std::iter::once(Predecessor::pg_guard(r.after.as_ref()))
                .chain(std::iter::repeat_n(None, r.events.len() - 1))
        })
        .collect();
    let stored: Vec<(String, String, i64, i64)> = sqlx::query_as(PG_GROUP)
        .bind(rows.clone().map(|(k, _)| k as i32).collect::<Vec<i32>>())
        .bind(column(|e| e.aggregate_type.clone()))
        .bind(column(|e| e.aggregate_id.clone()))
        .bind(rows.clone().map(|(_, e)| e.sequence).collect::<Vec<i64>>())
        .bind(column(|e| e.event_type.clone()))
        .bind(column(|e| e.event_version.clone()))
        .bind(column(|e| e.payload.clone()))
        .bind(column(|e| e.metadata.clone()))
        .bind(
            rows.clone()
                .map(|(_, e)| e.recorded_at)
                .collect::<Vec<DateTime<Utc>>>(),
        )
        .bind(guard)
        // `fetch_all`: success means committed (decision 3).
        .fetch_all(&pg.pool)
        .await?;
    Ok((per_request(group, stored), again))
}

/// [`PG_SINGLES`]: every request of `group` appends exactly one event.
async fn append_singles_pg(
    pg: &PgStore,
    group: &[Request],
) -> Result<Vec<Result<LogCursor, AppendError>>, sqlx::Error> {
    let column = |f: fn(&NewEvent) -> String| {
        group
            .iter()
            .map(|r| f(&r.events[0]))
            .collect::<Vec<String>>()
    };
    let stored: Vec<(String, String, i64, i64)> = sqlx::query_as(PG_SINGLES)
        .bind(column(|e| e.aggregate_type.clone()))
        .bind(column(|e| e.aggregate_id.clone()))
        .bind(
            group
                .iter()
                .map(|r| r.events[0].sequence)
                .collect::<Vec<i64>>(),
        )
        .bind(column(|e| e.event_type.clone()))
        .bind(column(|e| e.event_version.clone()))
        .bind(column(|e| e.payload.clone()))
        .bind(column(|e| e.metadata.clone()))
        .bind(
            group
                .iter()
                .map(|r| r.events[0].recorded_at)
                .collect::<Vec<DateTime<Utc>>>(),
        )
        .bind(
            group
                .iter()
                .map(|r| Predecessor::pg_guard(r.after.as_ref()))
                .collect::<Vec<Option<i64>>>(),
        )
        // `fetch_all`: success means committed (decision 3).
        .fetch_all(&pg.pool)
        .await?;
    Ok(per_request(group, stored))
}

/// Each request's stored cursor from the rows a statement returned (aggregate type
/// and id, position, transaction); a request with none stored nothing: a conflict.
fn per_request(
    group: &[Request],
    stored: Vec<(String, String, i64, i64)>,
) -> Vec<Result<LogCursor, AppendError>> {
    let positions: std::collections::HashMap<(String, String), LogCursor> = stored
        .into_iter()
        .map(|(t, i, position, tx_id)| ((t, i), LogCursor { tx_id, position }))
        .collect();
    group
        .iter()
        .map(|request| {
            positions
                .get(&owned(request.key()))
                .copied()
                .ok_or(AppendError::Conflict)
        })
        .collect()
}

/// The group in one statement ([`insert_sqlite`]: atomic on its own, no `BEGIN` or
/// `COMMIT` to send); per append its last position or a conflict, and whether the
/// group went command by command after its first statement (a sequence was taken).
async fn append_group_sqlite(
    sqlite: &SqliteStore,
    group: &[Request],
) -> Result<(Vec<Result<LogCursor, AppendError>>, bool), sqlx::Error> {
    let commands: Vec<SqliteCommand<'_>> = group
        .iter()
        .map(|r| SqliteCommand {
            events: &r.events,
            after: r.after.as_ref(),
        })
        .collect();
    let _turn = sqlite.write_turn().await;
    let mut connection = sqlite.pool.acquire().await?;
    if let Some(results) = insert_sqlite(&mut connection, &commands).await? {
        return Ok((results, false));
    }
    if let [_] = group {
        return Ok((vec![Err(AppendError::Conflict)], false));
    }
    // One statement per command in one transaction: a taken sequence undoes only
    // its own statement (and command, which is one statement), and refuses only it.
    let mut tx = sqlx::Connection::begin(&mut *connection).await?;
    let mut results = Vec::with_capacity(group.len());
    for command in &commands {
        match insert_sqlite(&mut tx, std::slice::from_ref(command)).await {
            Ok(Some(mut one)) => results.push(one.pop().unwrap_or(Err(AppendError::Conflict))),
            Ok(None) => results.push(Err(AppendError::Conflict)),
            Err(error) => {
                // Not a conflict: the transaction is not to be trusted; roll back
                // and let each append go alone.
                let _ = tx.rollback().await;
                return Err(error);
            }
        }
    }
    tx.commit().await?;
    Ok((results, true))
}
