//! The reactor runtime: reads the log from each reactor's checkpoint, reacts, and
//! writes the checkpoint after the effects (see the [module docs](super)).
//!
//! One task runs every reactor of the process: one reader of the log (from the
//! lowest checkpoint of the reactors it may run now), one wake-up, one connection
//! holding the advisory locks on PostgreSQL. Within a batch the reactors react
//! concurrently, and each reactor's partitions ([`Reactor::partition`]) too, every
//! partition in log order. The checkpoint row is written
//! with a compare-and-set against the cursor this runner last read or wrote, so a
//! runner that lost its lock without noticing reloads instead of moving it back.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;

use super::{Reaction, Reactor, Trigger};
use eventstore::locks::LockSession;
use eventstore::sql::{fmt_time, Dialect, Sql};
use eventstore::{LogCursor, Store, StoreError, StoredEvent};

/// Tuning of a [`ReactorRuntime`].
#[derive(Debug, Clone)]
pub struct ReactorOptions {
    /// Events read per batch (the checkpoint is written after each).
    pub batch_size: i64,
    /// Poll interval when no wake-up arrives (and lock retry interval).
    pub poll: Duration,
    /// Prefix of each reactor's PostgreSQL advisory lock (`{namespace}.{name}`).
    pub lock_namespace: String,
    /// First retry delay of a failing event; doubles per attempt up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How often a checkpoint that moved only over events the reactor does not
    /// want is written while the log keeps growing (a batch with an effect is
    /// written at once): most of the log is of no concern to a reactor, and a replay
    /// of it costs nothing.
    pub checkpoint_every: Duration,
    /// How soon such a checkpoint is written once the log is caught up: waiters in
    /// other processes read the row. Not at once: commands issued one after another
    /// (a repository sync) would each cost every reactor a checkpoint write, which
    /// on SQLite queues behind the commands' own (measured: `syncRepository` of
    /// 1,000 files 27 % slower).
    pub caught_up_flush: Duration,
    /// How long a woken runner lets appends settle before it reads: one read per
    /// burst instead of one per command, and a caller that takes a reaction's step
    /// itself (a drift report opening the incident it reserved) is usually done
    /// before the reactor looks, so the two rarely collide. Reactions land this
    /// much later.
    pub settle: Duration,
    /// How long a trigger whose step its caller may be taking ([`Reactor::step`])
    /// is left alone: younger than this and not yet shown taken, the reactor stops
    /// before it and comes back once it is this old. The caller's own step then
    /// lands first, and the reactor skips the trigger without loading anything
    /// instead of taking the same step alongside it (each would load and write what
    /// the other does). Only repairs after a crash land this much later.
    pub grace: Duration,
}

/// The advisory locks of the service's reactors.
pub const LIVE_LOCKS: &str = "workflowops.reactor";

impl Default for ReactorOptions {
    fn default() -> Self {
        ReactorOptions {
            batch_size: 500,
            poll: Duration::from_millis(500),
            lock_namespace: LIVE_LOCKS.to_string(),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(60),
            checkpoint_every: Duration::from_secs(1),
            caught_up_flush: Duration::from_millis(100),
            settle: Duration::from_millis(20),
            grace: Duration::from_millis(250),
        }
    }
}

/// Where a reactor waits, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    /// The event whose effect has not happened yet.
    pub position: i64,
    pub event: String,
    pub error: String,
    /// A permanent error (someone has to look) rather than a transient one.
    pub permanent: bool,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// A reactor as this process sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReactorStatus {
    pub name: String,
    /// Handled through here (in this process: ahead of the stored row within a batch).
    pub checkpoint: LogCursor,
    pub events_handled: i64,
    pub events_skipped: i64,
    /// This process runs it (holds its lock).
    pub running_here: bool,
    pub blocked: Option<Blocked>,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read a batch of this many events and moved at least one checkpoint.
    Handled(usize),
    /// Nothing new to handle now (or every reactor with work is waiting to retry).
    Idle,
}

/// Why a wait for a reactor ended without it reaching the position.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("no event at position {0}")]
    UnknownPosition(i64),
    #[error("no reactor runtime in this process")]
    NotRunning,
    #[error("unknown reactor {0}")]
    UnknownReactor(String),
    #[error("reactor {reactor} has not handled position {position} within {waited:?}{}", .last_error.as_ref().map(|e| format!(" (retrying: {e})")).unwrap_or_default())]
    Timeout {
        reactor: String,
        position: i64,
        waited: Duration,
        last_error: Option<String>,
    },
    #[error("reactor {reactor} is stopped at position {} ({}): {}", .blocked.position, .blocked.event, .blocked.error)]
    Blocked { reactor: String, blocked: Blocked },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for WaitError {
    fn from(e: sqlx::Error) -> Self {
        WaitError::Store(StoreError::Database(e))
    }
}

/// Shared view of the reactors of this process: their status, and a signal on every
/// handled event (waits use it). Cheap to clone.
#[derive(Clone)]
pub struct Reactors {
    store: Store,
    status: Arc<Mutex<HashMap<String, ReactorStatus>>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Reactors {
    /// A handle with no reactors yet: a [`ReactorRuntime`] built on it registers
    /// its reactors and publishes into it.
    pub fn new(store: Store) -> Reactors {
        Reactors {
            store,
            status: Default::default(),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    /// Every registered reactor, by name.
    pub fn status(&self) -> Vec<ReactorStatus> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = status.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn publish(&self, statuses: impl IntoIterator<Item = ReactorStatus>) {
        {
            let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
            for s in statuses {
                status.insert(s.name.clone(), s);
            }
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits (at most `timeout`) until every registered reactor has handled the log
    /// up to the event at global `position`.
    pub async fn wait_for(&self, position: i64, timeout: Duration) -> Result<(), WaitError> {
        let names: Vec<String> = self.status().into_iter().map(|s| s.name).collect();
        if names.is_empty() {
            return Err(WaitError::NotRunning);
        }
        self.wait(&names, position, timeout).await
    }

    /// Waits (at most `timeout`) until reactor `name` has handled the log up to the
    /// event at global `position`, whichever process runs it: this process's
    /// progress wakes the wait; another's is read from its checkpoint row (polled).
    /// A reactor stopped on a permanent error before the position ends the wait at
    /// once; a transient one is waited out until the timeout.
    pub async fn wait_for_reactor(
        &self,
        name: &str,
        position: i64,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        let known = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name);
        if !known {
            return Err(if self.status().is_empty() {
                WaitError::NotRunning
            } else {
                WaitError::UnknownReactor(name.to_string())
            });
        }
        self.wait(&[name.to_string()], position, timeout).await
    }

    async fn wait(
        &self,
        names: &[String],
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
            let mut pending = None;
            for name in names {
                let local = self
                    .status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(name)
                    .filter(|s| s.running_here)
                    .map(|s| (s.checkpoint, s.blocked.clone()));
                let (checkpoint, blocked) = match local {
                    Some(local) => local,
                    None => stored_checkpoint(&self.store, name).await?,
                };
                if checkpoint >= target {
                    continue;
                }
                // The event it is stopped at comes right after its checkpoint, so
                // before (or at) the target.
                if let Some(blocked) = blocked.as_ref().filter(|b| b.permanent) {
                    return Err(WaitError::Blocked {
                        reactor: name.clone(),
                        blocked: blocked.clone(),
                    });
                }
                pending = Some((name, blocked));
                break;
            }
            let Some((name, blocked)) = pending else {
                return Ok(());
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(WaitError::Timeout {
                    reactor: name.clone(),
                    position,
                    waited: timeout,
                    last_error: blocked.map(|b| b.error),
                });
            }
            let pause = (deadline - now).min(Duration::from_millis(25));
            let _ = tokio::time::timeout(pause, changed.changed()).await;
        }
    }
}

/// A reactor's checkpoint row as stored (whichever process runs it); before its
/// first run, the start of the log.
async fn stored_checkpoint(
    store: &Store,
    name: &str,
) -> Result<(LogCursor, Option<Blocked>), WaitError> {
    let mut sql = Sql::new(Dialect::of(store));
    let n = sql.arg(name);
    sql.push(&format!(
        "SELECT tx_id, position, blocked_position, blocked_event, blocked_error, \
         blocked_permanent, blocked_attempts FROM reactor_checkpoints WHERE name = {n}"
    ));
    type Row = (
        i64,
        i64,
        Option<i64>,
        Option<String>,
        Option<String>,
        bool,
        i64,
    );
    let rows: Vec<Row> = sql.fetch_as(store).await?;
    Ok(match rows.into_iter().next() {
        None => (LogCursor::START, None),
        Some((tx_id, position, bp, be, berr, permanent, attempts)) => (
            LogCursor { tx_id, position },
            bp.map(|position| Blocked {
                position,
                event: be.unwrap_or_default(),
                error: berr.unwrap_or_default(),
                permanent,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            }),
        ),
    })
}

struct Slot {
    reactor: Arc<dyn Reactor>,
    /// Handled through here.
    checkpoint: LogCursor,
    /// The row's cursor as last read or written (the compare-and-set's expectation).
    stored: LogCursor,
    handled: i64,
    skipped: i64,
    owned: bool,
    /// Reload the row before reacting (newly owned, or the row moved elsewhere).
    reload: bool,
    blocked: Option<Blocked>,
    retry_at: Option<Instant>,
    /// Stopped before a young trigger ([`ReactorOptions::grace`]): until when, and
    /// the newest event seen then (a newer one may show its step taken).
    deferred: Option<(Instant, LogCursor)>,
    /// The blocked state changed, or an effect happened, since the row was written.
    dirty: bool,
    /// When the row was last written.
    persisted_at: Instant,
    /// On SQLite: this runtime's claim on the reactor for its database file.
    sqlite_claim: Option<String>,
}

impl Slot {
    fn status(&self) -> ReactorStatus {
        ReactorStatus {
            name: self.reactor.name().to_string(),
            checkpoint: self.checkpoint,
            events_handled: self.handled,
            events_skipped: self.skipped,
            running_here: self.owned,
            blocked: self.blocked.clone(),
        }
    }
}

/// Reactors claimed in this process per SQLite database file: SQLite has no
/// advisory locks, and two runtimes of one process on one file must not both run.
static SQLITE_CLAIMS: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn sqlite_claim(key: &str) -> bool {
    let mut claims = SQLITE_CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
    claims
        .get_or_insert_with(HashSet::new)
        .insert(key.to_string())
}

fn sqlite_unclaim(key: &str) {
    let mut claims = SQLITE_CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(claims) = claims.as_mut() {
        claims.remove(key);
    }
}

/// Runs a set of reactors over the global log.
pub struct ReactorRuntime {
    store: Store,
    slots: Vec<Slot>,
    options: ReactorOptions,
    /// Holds the advisory locks of the reactors this process runs (PostgreSQL).
    locks: LockSession,
    handle: Reactors,
    /// The event types any of the reactors looks at (`None`: every type).
    types: Option<Vec<&'static str>>,
}

fn describe(event: &StoredEvent) -> String {
    format!(
        "{} {} #{}",
        event.event_type, event.aggregate_id, event.sequence
    )
}

impl ReactorRuntime {
    /// A runtime for `reactors` that publishes into `handle` (and registers them
    /// there, so waits know them before the runtime takes their locks).
    pub fn new(
        store: Store,
        reactors: Vec<Arc<dyn Reactor>>,
        options: ReactorOptions,
        handle: Reactors,
    ) -> Self {
        let slots: Vec<Slot> = reactors
            .into_iter()
            .map(|reactor| Slot {
                reactor,
                checkpoint: LogCursor::START,
                stored: LogCursor::START,
                handled: 0,
                skipped: 0,
                owned: false,
                reload: false,
                blocked: None,
                retry_at: None,
                deferred: None,
                dirty: false,
                persisted_at: Instant::now(),
                sqlite_claim: None,
            })
            .collect();
        let mut names = HashSet::new();
        for slot in &slots {
            assert!(
                names.insert(slot.reactor.name()),
                "two reactors named {}",
                slot.reactor.name()
            );
        }
        let types = slots
            .iter()
            .map(|s| s.reactor.event_types())
            .collect::<Option<Vec<_>>>()
            .map(|lists| {
                let mut types: Vec<&'static str> = lists.concat();
                types.sort_unstable();
                types.dedup();
                types
            });
        let runtime = ReactorRuntime {
            types,
            locks: LockSession::new(&store, options.poll),
            store,
            slots,
            options,
            handle,
        };
        runtime.publish();
        runtime
    }

    /// The service's reactors ([`super::standard`]) over `domain`, publishing into
    /// the domain's handle ([`crate::command::domain::Domain::reactors`]).
    pub fn standard(domain: &crate::command::domain::Domain, options: ReactorOptions) -> Self {
        Self::new(
            domain.bus().store().clone(),
            super::standard(domain),
            options,
            domain.reactors().clone(),
        )
    }

    pub fn handle(&self) -> Reactors {
        self.handle.clone()
    }

    fn publish(&self) {
        self.handle.publish(self.slots.iter().map(Slot::status));
    }

    /// Takes the locks of reactors this process does not run yet and loads the
    /// checkpoints of those it takes (or must reload).
    async fn acquire(&mut self) -> Result<(), StoreError> {
        if self.locks.check().await {
            // A lost session lost its locks: stop running what it held.
            if self.slots.iter().any(|s| s.owned) {
                tracing::warn!("reactor lock connection lost; reacquiring");
            }
            for slot in &mut self.slots {
                slot.owned = false;
            }
            self.publish();
        }
        let try_locks = self.locks.try_now();
        let mut changed = false;
        for i in 0..self.slots.len() {
            let name = self.slots[i].reactor.name();
            if !self.slots[i].owned && try_locks {
                let got = if self.locks.is_shared() {
                    self.locks
                        .try_lock(&format!("{}.{name}", self.options.lock_namespace))
                        .await?
                } else {
                    // SQLite: one runtime per database file in this process
                    let Store::Sqlite(sqlite) = &self.store else {
                        unreachable!("locks are shared on PostgreSQL")
                    };
                    let file = sqlite.pool.connect_options().get_filename().to_owned();
                    let key = format!("{}#{}", file.display(), name);
                    let got = self.slots[i].sqlite_claim.is_some() || sqlite_claim(&key);
                    if got {
                        self.slots[i].sqlite_claim = Some(key);
                    }
                    got
                };
                if !got {
                    continue;
                }
                self.slots[i].owned = true;
                self.slots[i].reload = true;
                tracing::info!(reactor = name, "running reactor");
            }
            if self.slots[i].owned && self.slots[i].reload {
                changed = true;
                let (cursor, handled, skipped) = load_checkpoint(&self.store, name).await?;
                let slot = &mut self.slots[i];
                slot.checkpoint = cursor;
                slot.stored = cursor;
                slot.handled = handled;
                slot.skipped = skipped;
                // A stored failure is retried at once on start: the cause may be gone.
                slot.blocked = None;
                slot.retry_at = None;
                slot.deferred = None;
                slot.dirty = false;
                slot.reload = false;
            }
        }
        if changed {
            self.publish();
        }
        Ok(())
    }

    /// Reads one batch and lets every reactor this process may run now react to it.
    pub async fn step(&mut self) -> Result<Step, StoreError> {
        self.acquire().await?;
        let now = Instant::now();
        let due: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                let slot = &self.slots[i];
                slot.owned && slot.retry_at.is_none_or(|at| at <= now)
            })
            .collect();
        let Some(from) = due.iter().map(|&i| self.slots[i].checkpoint).min() else {
            return Ok(Step::Idle);
        };
        let (batch, scanned) = self
            .store
            .read_after_matching(from, self.options.batch_size, self.types.as_deref())
            .await?;
        if batch.is_empty() && scanned > from {
            // Nothing any reactor looks at: every slot moves over it.
            for &i in &due {
                let slot = &mut self.slots[i];
                slot.checkpoint = slot.checkpoint.max(scanned);
            }
            self.publish();
        }
        if batch.is_empty() {
            // Caught up: write the checkpoints that moved over unwanted events only,
            // at most once per `caught_up_flush` (the idle wait comes back for the rest).
            for &i in &due {
                let flush = self.slots[i].persisted_at.elapsed() >= self.caught_up_flush();
                self.persist(i, flush).await?;
            }
            return Ok(Step::Idle);
        }
        let before: Vec<LogCursor> = self.slots.iter().map(|s| s.checkpoint).collect();
        {
            let handle = &self.handle;
            let options = &self.options;
            let batch = &batch;
            let work = self
                .slots
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| due.contains(i))
                .map(|(_, slot)| react_to_batch(slot, batch, scanned, handle, options));
            futures::future::join_all(work).await;
        }
        let mut error = None;
        for &i in &due {
            let due_anyway = self.slots[i].persisted_at.elapsed() >= self.options.checkpoint_every;
            if let Err(e) = self.persist(i, due_anyway).await {
                error.get_or_insert(e);
            }
        }
        self.publish();
        if let Some(error) = error {
            return Err(error);
        }
        let moved = due.iter().any(|&i| self.slots[i].checkpoint != before[i]);
        Ok(if moved {
            Step::Handled(batch.len())
        } else {
            Step::Idle
        })
    }

    /// Writes a slot's checkpoint (and blocked state), compared and set against the
    /// cursor this runner last read or wrote: at once after an effect or a change of
    /// its blocked state, otherwise when it moved and `moved_is_enough`.
    async fn persist(&mut self, i: usize, moved_is_enough: bool) -> Result<(), StoreError> {
        let slot = &mut self.slots[i];
        let moved = slot.checkpoint != slot.stored;
        if !(slot.dirty || (moved && moved_is_enough)) {
            return Ok(());
        }
        let mut sql = Sql::new(Dialect::of(&self.store));
        let blocked = slot.blocked.as_ref();
        let text = format!(
            "UPDATE reactor_checkpoints SET tx_id = {}, position = {}, events_handled = {}, \
             events_skipped = {}, updated_at = {}, blocked_position = {}, blocked_event = {}, \
             blocked_error = {}, blocked_permanent = {}, blocked_attempts = {} \
             WHERE name = {} AND tx_id = {} AND position = {}",
            sql.arg(slot.checkpoint.tx_id),
            sql.arg(slot.checkpoint.position),
            sql.arg(slot.handled),
            sql.arg(slot.skipped),
            sql.arg(fmt_time(Utc::now())),
            sql.arg(eventstore::sql::Bind::Int(blocked.map(|b| b.position))),
            sql.arg(blocked.map(|b| b.event.clone())),
            sql.arg(blocked.map(|b| b.error.clone())),
            sql.arg(blocked.is_some_and(|b| b.permanent)),
            sql.arg(blocked.map_or(0, |b| i64::from(b.attempts))),
            sql.arg(slot.reactor.name()),
            sql.arg(slot.stored.tx_id),
            sql.arg(slot.stored.position),
        );
        sql.push(&text);
        if sql.execute(&self.store).await? == 0 {
            // Another runner moved it (this one lost its lock without noticing):
            // what this one did since is replayed by whoever runs it, harmlessly.
            tracing::warn!(
                reactor = slot.reactor.name(),
                "checkpoint moved elsewhere; reloading"
            );
            slot.reload = true;
            return Ok(());
        }
        slot.stored = slot.checkpoint;
        slot.dirty = false;
        slot.persisted_at = Instant::now();
        Ok(())
    }

    /// Steps until nothing is left to handle now. Returns the events read.
    ///
    /// Nothing left means: every reactor not waiting to retry is past every event
    /// committed when this was called (on PostgreSQL a step may read nothing while
    /// an older transaction anywhere in the cluster holds such events back; it then
    /// pauses briefly and reads again).
    pub async fn catch_up(&mut self) -> Result<u64, StoreError> {
        let target = self.store.committed_head().await?;
        let mut total = 0;
        let mut pause = projections::runtime::HeldBackPause::default();
        loop {
            match self.step().await? {
                Step::Handled(n) => {
                    total += n as u64;
                    pause.reset();
                }
                Step::Idle => {
                    let behind = self.slots.iter().any(|s| {
                        s.owned
                            && s.retry_at.is_none()
                            && s.deferred.is_none()
                            && s.checkpoint < target
                    });
                    if !behind {
                        return Ok(total);
                    }
                    pause.wait().await;
                }
            }
        }
    }

    /// How soon a checkpoint that moved is written once caught up: at once-ish where
    /// other processes may wait on the row (PostgreSQL), else with the periodic
    /// write (SQLite runs reactors in one process, whose waiters see the in-memory
    /// status; the row only shortens a replay after a crash).
    fn caught_up_flush(&self) -> Duration {
        if self.locks.is_shared() {
            self.options.caught_up_flush
        } else {
            self.options.checkpoint_every
        }
    }

    /// How long an idle runner may sleep: the poll interval, or less when a
    /// reactor's retry is due sooner, or a checkpoint that moved is due to be
    /// written (`caught_up_flush`).
    fn idle_wait(&self) -> Duration {
        let now = Instant::now();
        self.slots
            .iter()
            .filter(|s| s.owned)
            .filter_map(|s| {
                // a checkpoint still to write once caught up
                let flush =
                    (s.checkpoint != s.stored).then(|| s.persisted_at + self.caught_up_flush());
                [s.retry_at, flush, s.deferred.map(|(until, _)| until)]
                    .into_iter()
                    .flatten()
                    .min()
            })
            .map(|at| at.saturating_duration_since(now))
            .fold(self.options.poll, Duration::min)
    }

    /// Runs until the task is aborted (a reaction in flight is then replayed by the
    /// next runner, harmlessly). Store errors are logged and retried with backoff.
    pub async fn run(mut self) {
        let mut wakeup: Option<eventstore::Wakeup> = None;
        let mut backoff = Duration::from_millis(50);
        // whether a step handled anything since the last wait
        let mut handled = false;
        loop {
            if wakeup.is_none() {
                match self.store.wakeup().await {
                    Ok(w) => wakeup = Some(w),
                    Err(error) => tracing::warn!(%error, "reactors: no event wake-ups; polling"),
                }
            }
            match self.step().await {
                // A partial batch on SQLite read everything committed: what comes
                // after it wakes the wait (PostgreSQL may have held events back).
                Ok(Step::Handled(n))
                    if !self.locks.is_shared() && (n as i64) < self.options.batch_size =>
                {
                    handled = false;
                    backoff = Duration::from_millis(50);
                    self.wait_for_more(&mut wakeup).await;
                }
                Ok(Step::Handled(_)) => {
                    handled = true;
                    backoff = Duration::from_millis(50);
                    tokio::task::yield_now().await;
                }
                Ok(Step::Idle) => {
                    if !std::mem::take(&mut handled) {
                        if let Some(w) = wakeup.as_mut() {
                            w.nothing_read();
                        }
                    }
                    self.wait_for_more(&mut wakeup).await;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "reactor batch failed; retrying");
                    // The listener holds a pooled connection: give it back (a closing
                    // pool waits for it) and listen afresh once the store answers.
                    wakeup = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Waits for a wake-up (or the idle wait), then lets a burst settle.
    async fn wait_for_more(&self, wakeup: &mut Option<eventstore::Wakeup>) {
        let wait = self.idle_wait();
        match wakeup.as_mut() {
            Some(w) => {
                if w.wait(wait).await && !self.options.settle.is_zero() {
                    // let a burst of appends land, then read it at once
                    tokio::time::sleep(self.options.settle).await;
                    w.discard_announcements();
                }
            }
            None => tokio::time::sleep(wait).await,
        }
    }

    /// Starts [`ReactorRuntime::run`]; the task stops when aborted.
    pub fn spawn(self) -> (Reactors, tokio::task::JoinHandle<()>) {
        let handle = self.handle();
        (handle, tokio::spawn(self.run()))
    }
}

impl Drop for ReactorRuntime {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if let Some(key) = slot.sqlite_claim.take() {
                sqlite_unclaim(&key);
            }
        }
        // PostgreSQL: the lock connection closes with it, and its locks with it.
    }
}

/// The reactor's checkpoint row (created at the start of the log if missing):
/// cursor, events handled, events skipped.
async fn load_checkpoint(store: &Store, name: &str) -> Result<(LogCursor, i64, i64), StoreError> {
    let mut insert = Sql::new(Dialect::of(store));
    let n = insert.arg(name);
    insert.push(&format!(
        "INSERT INTO reactor_checkpoints (name) VALUES ({n}) ON CONFLICT (name) DO NOTHING"
    ));
    insert.execute(store).await?;
    let mut select = Sql::new(Dialect::of(store));
    let n = select.arg(name);
    select.push(&format!(
        "SELECT tx_id, position, events_handled, events_skipped \
         FROM reactor_checkpoints WHERE name = {n}"
    ));
    let rows: Vec<(i64, i64, i64, i64)> = select.fetch_as(store).await?;
    let (tx_id, position, handled, skipped) = rows.into_iter().next().unwrap_or_default();
    Ok((LogCursor { tx_id, position }, handled, skipped))
}

/// Retry delay after `attempts` failures: `retry_min` doubling, capped at `retry_max`.
fn backoff(options: &ReactorOptions, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
    options
        .retry_min
        .saturating_mul(factor)
        .min(options.retry_max)
}

/// Partitions of one batch a reactor reacts to at once, at most.
const CONCURRENT_PARTITIONS: usize = 16;

/// Where one event of a batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dealt {
    Pending,
    Unwanted,
    Handled,
    Skipped,
}

/// How one reaction of a batch ended.
enum Outcome {
    Reacted(Reaction),
    Failed(super::ReactError),
}

/// Which events of a batch have been dealt with, for the waiters: the checkpoint
/// a waiter may see is the end of the longest dealt-with prefix.
struct Progress {
    /// Per event after the checkpoint: whether it has been dealt with, and how.
    done: Vec<Dealt>,
    /// Events at the front known done.
    prefix: usize,
    status: ReactorStatus,
}

/// One reactor over the part of `batch` after its checkpoint. Events with the same
/// [`Reactor::partition`] key are reacted to in log order, one after another;
/// partitions run concurrently. A failure stops its partition; the checkpoint
/// stops before the earliest failed event (what other partitions did after it is
/// replayed on retry, harmlessly: reactions are idempotent).
fn dealt(reaction: &Reaction) -> Dealt {
    match reaction {
        Reaction::Done => Dealt::Handled,
        Reaction::Skipped(_) => Dealt::Skipped,
    }
}

/// A batched reactor's flush after its reactions to a batch: once it succeeds, the
/// reactions count as dealt with (in order, up to a failed one); if it fails, the
/// batch fails at its first effect (the reactions before it only skipped), or at its
/// first reaction when it had no effect.
async fn flush_batch(
    reactor: &Arc<dyn Reactor>,
    outcomes: &mut Vec<(usize, Outcome)>,
    finished: &(impl Fn(usize, Dealt) + ?Sized),
) {
    // Flushed after any reaction, an effect or a skip: a reactor may keep state its
    // reactions built (the dispatcher's routes) as of its last flush.
    let flushed = if outcomes
        .iter()
        .any(|(_, o)| matches!(o, Outcome::Reacted(_)))
    {
        reactor.flush().await
    } else {
        Ok(())
    };
    if let Err(error) = flushed {
        let first = outcomes
            .iter()
            .position(|(_, o)| matches!(o, Outcome::Reacted(Reaction::Done)))
            .or_else(|| {
                outcomes
                    .iter()
                    .position(|(_, o)| matches!(o, Outcome::Reacted(_)))
            });
        if let Some(first) = first {
            outcomes.truncate(first + 1);
            outcomes[first].1 = Outcome::Failed(error);
        }
    }
    for (i, outcome) in outcomes.iter() {
        match outcome {
            Outcome::Reacted(reaction) => finished(*i, dealt(reaction)),
            Outcome::Failed(_) => break,
        }
    }
}

async fn react_to_batch(
    slot: &mut Slot,
    batch: &[StoredEvent],
    scanned: LogCursor,
    handle: &Reactors,
    options: &ReactorOptions,
) {
    let name = slot.reactor.name();
    let from = slot.checkpoint;
    let newest = batch.last().map(StoredEvent::cursor);
    if let Some((until, seen)) = slot.deferred {
        if Instant::now() < until && newest <= Some(seen) {
            return; // still young, and nothing new that could show its step taken
        }
        slot.deferred = None;
    }
    let mut pending: Vec<&StoredEvent> = batch.iter().filter(|e| e.cursor() > from).collect();
    let reactor = slot.reactor.clone();
    // What each event asks of the reactor: nothing (unwanted), or a reaction with
    // the key of its step when the reactor names one.
    let asks: Vec<Option<Option<String>>> = pending
        .iter()
        .map(|event| reactor.wants(event).then(|| reactor.step(event)))
        .collect();
    // The steps events of the batch show taken: the last event showing each.
    let taken: HashMap<String, usize> = pending
        .iter()
        .enumerate()
        .filter_map(|(i, event)| reactor.step_taken(event).map(|key| (key, i)))
        .collect();
    // Where a later event of the batch shows a trigger's step taken.
    let shown_at: Vec<Option<i64>> = asks
        .iter()
        .enumerate()
        .map(|(i, ask)| {
            let key = ask.as_ref()?.as_ref()?;
            let j = taken.get(key).copied().filter(|&j| j > i)?;
            Some(pending[j].position)
        })
        .collect();
    // A young trigger whose step is not shown taken yet: its caller is probably
    // taking it now. Stop before it, and come back when it is `grace` old.
    let now = Utc::now();
    let young = (0..pending.len()).find(|&i| {
        matches!(asks[i], Some(Some(_)))
            && shown_at[i].is_none()
            && pending[i].recorded_at > now - options.grace
    });
    if let Some(i) = young {
        let wait = (pending[i].recorded_at + options.grace - now)
            .to_std()
            .unwrap_or_default()
            .min(options.grace);
        if let Some(newest) = newest {
            slot.deferred = Some((Instant::now() + wait, newest));
        }
        pending.truncate(i);
    }
    // Where the checkpoint goes once every pending event is dealt with: through
    // what the read scanned (events of types no reactor looks at were not
    // returned), unless a young trigger stopped it before that.
    let end = match (young, pending.last()) {
        (None, Some(last)) => last.cursor().max(scanned),
        (Some(_), Some(last)) => last.cursor(),
        (_, None) => return,
    };
    let mut partitions: Vec<Vec<usize>> = vec![];
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    let mut done = vec![Dealt::Unwanted; pending.len()];
    let mut taken_already = None;
    for (i, event) in pending.iter().enumerate() {
        if asks[i].is_none() {
            continue;
        }
        if let Some(taken_at) = shown_at[i] {
            tracing::debug!(reactor = name, position = event.position,
                event = %describe(event), taken_at,
                "reactor skipped an event: its step is already in the log");
            done[i] = Dealt::Skipped;
            taken_already.get_or_insert(i);
            continue;
        }
        done[i] = Dealt::Pending;
        let next = partitions.len();
        let p = *by_key.entry(reactor.partition(event)).or_insert(next);
        if p == next {
            partitions.push(vec![]);
        }
        partitions[p].push(i);
    }
    if partitions.is_empty() && taken_already.is_none() {
        slot.checkpoint = end;
        return;
    }
    let progress = Mutex::new(Progress {
        done,
        prefix: 0,
        status: slot.status(),
    });
    // A reaction's effect is visible to waiters in this process as soon as every
    // event before it has been dealt with too.
    let finished = |i: usize, dealt: Dealt| {
        let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
        p.done[i] = dealt;
        let before = p.prefix;
        while let Some(&dealt) = p.done.get(p.prefix) {
            match dealt {
                Dealt::Pending => break,
                Dealt::Unwanted => {}
                Dealt::Handled => p.status.events_handled += 1,
                Dealt::Skipped => p.status.events_skipped += 1,
            }
            p.prefix += 1;
        }
        if p.prefix > before {
            let checkpoint = pending[p.prefix - 1].cursor();
            p.status.checkpoint = checkpoint;
            // the event it was blocked at is behind it now
            if p.status
                .blocked
                .as_ref()
                .is_some_and(|b| b.position <= checkpoint.position)
            {
                p.status.blocked = None;
            }
            handle.publish([p.status.clone()]);
        }
    };
    if let Some(i) = taken_already {
        // counts the skipped events at the front, and lets waiters pass them
        finished(i, Dealt::Skipped);
    }
    // A batched reactor's effects happen at its flush: nothing is passed before.
    let batched = reactor.batched();
    let run_partition = |events: Vec<usize>| {
        let (reactor, pending, finished) = (&reactor, &pending, &finished);
        async move {
            let mut outcomes = Vec::with_capacity(events.len());
            for i in events {
                let trigger = Trigger {
                    event: pending[i],
                    reactor: name,
                };
                match reactor.react(&trigger).await {
                    Ok(reaction) => {
                        if !batched {
                            finished(i, dealt(&reaction));
                        }
                        outcomes.push((i, Outcome::Reacted(reaction)));
                    }
                    Err(error) => {
                        outcomes.push((i, Outcome::Failed(error)));
                        break;
                    }
                }
            }
            outcomes
        }
    };
    let mut outcomes: Vec<(usize, Outcome)> = futures::stream::iter(partitions)
        .map(run_partition)
        .buffer_unordered(CONCURRENT_PARTITIONS)
        .flat_map(futures::stream::iter)
        .collect()
        .await;
    outcomes.sort_by_key(|(i, _)| *i);
    if batched {
        flush_batch(&reactor, &mut outcomes, &finished).await;
    }

    let failed_at = outcomes
        .iter()
        .find(|(_, o)| matches!(o, Outcome::Failed(_)))
        .map(|(i, _)| *i);
    // counted as the prefix passed them (what came after a failure is replayed)
    let counted = progress
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .status;
    slot.handled = counted.events_handled;
    slot.skipped = counted.events_skipped;
    for (i, outcome) in outcomes {
        let event = pending[i];
        match outcome {
            Outcome::Reacted(_) if failed_at.is_some_and(|f| i > f) => {}
            // An effect is written down at once (waiters in other processes read
            // the row). A skip is not: nothing happened, and a replay judges it
            // again; the moved checkpoint is written with the next flush.
            Outcome::Reacted(Reaction::Done) => slot.dirty = true,
            Outcome::Reacted(Reaction::Skipped(reason)) => {
                tracing::info!(reactor = name, position = event.position,
                    event = %describe(event), %reason, "reactor skipped an event");
            }
            Outcome::Failed(error) => {
                let attempts = match &slot.blocked {
                    Some(b) if b.position == event.position => b.attempts.saturating_add(1),
                    _ => 1,
                };
                let retry_in = backoff(options, attempts);
                let permanent = error.is_permanent();
                if permanent {
                    tracing::error!(reactor = name, position = event.position,
                        event = %describe(event), %error, attempts, ?retry_in,
                        "reactor stopped: the event's effect was refused");
                } else {
                    tracing::warn!(reactor = name, position = event.position,
                        event = %describe(event), %error, attempts, ?retry_in,
                        "reactor retrying an event");
                }
                if let Some(blocked) = slot
                    .blocked
                    .as_ref()
                    .filter(|b| b.position != event.position)
                {
                    tracing::info!(
                        reactor = name,
                        position = blocked.position,
                        attempts = blocked.attempts,
                        "reactor recovered"
                    );
                }
                slot.blocked = Some(Blocked {
                    position: event.position,
                    event: describe(event),
                    error: error.to_string(),
                    permanent,
                    attempts,
                });
                slot.retry_at = Some(Instant::now() + retry_in);
                slot.dirty = true;
                slot.checkpoint = match i {
                    0 => from,
                    _ => pending[i - 1].cursor(),
                };
                return;
            }
        }
    }
    if let Some(blocked) = slot.blocked.take() {
        tracing::info!(
            reactor = name,
            position = blocked.position,
            attempts = blocked.attempts,
            "reactor recovered"
        );
        slot.retry_at = None;
        slot.dirty = true;
    }
    slot.checkpoint = end;
}
