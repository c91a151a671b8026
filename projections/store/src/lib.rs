//! The event store: one API over two backends, and the only way to write events.
//!
//! Writers [`load`](Store::load) an aggregate and [`commit`](Store::commit) the
//! events it decided ([`write`]): the commit checks every status change against
//! its machine's `VALID_TRANSITIONS` table, chains each event's SHA-256 to the
//! previous event of its aggregate ([`chain`]) and appends in one statement. The raw
//! append is private to this crate. Aggregates are read through cqrs-es's
//! repositories, postgres-es (PostgreSQL) and sqlite-es (SQLite, the embedded
//! default), which read the same table; nothing writes through them.
//!
//! The database adds the global log on top of their table: a position, the time,
//! and on PostgreSQL the writing transaction, read gap-safe by [`Store::read_after`].
//! The log as a whole has a running digest, sealed periodically and on demand
//! ([`digest`]); [`Store::verify`] walks chains and digest. New events wake readers
//! at once ([`Wakeup`]). [`sql`] is the dialect-neutral SQL both sides build on.

mod append;
mod cache;
pub mod chain;
pub mod digest;
mod group;
pub mod locks;
mod log;
mod repo;
pub mod sql;
pub mod write;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use url::Url;

pub use group::GroupStats;
pub use log::{BrokenLink, EventHeader, LogCursor, RawEvent, RawMap, StoredEvent, VerifyReport};
pub use write::{CommitError, Committed, Envelope, Loaded};

/// File name of the embedded database inside the data directory.
pub const SQLITE_FILE: &str = "workflowops.db";

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored event at position {position} is unreadable: {message}")]
    Corrupt { position: i64, message: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A projector cannot go on without losing what it holds in memory.
    #[error("stopped: {0}")]
    Stopped(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A connection pool to one of the two backends. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// A PostgreSQL pool and this process's append signal.
///
/// Other processes learn of new events through `NOTIFY` on [`EVENTS_CHANNEL`], sent
/// by a notifier task *after* the append committed and outside its transaction: a
/// `NOTIFY` inside the appending transaction takes a database-wide lock at commit and
/// serializes every append (measured: 3.4k commits/s with 16 clients instead of
/// 10–11k). The task coalesces: appends that land while a `NOTIFY` is in flight are
/// announced by the next one. Readers in this process are woken by the signal itself.
#[derive(Debug, Clone)]
pub struct PgStore {
    pub pool: PgPool,
    pub(crate) appended: std::sync::Arc<tokio::sync::watch::Sender<i64>>,
    pub(crate) committer: group::Committer,
}

impl PgStore {
    pub fn new(pool: PgPool) -> PgStore {
        let (sender, receiver) = tokio::sync::watch::channel(0);
        tokio::spawn(notify_appends(pool.clone(), receiver));
        PgStore {
            pool,
            appended: std::sync::Arc::new(sender),
            committer: Default::default(),
        }
    }
}

/// Sends one `NOTIFY` per burst of appends; ends when the store is dropped.
async fn notify_appends(pool: PgPool, mut appended: tokio::sync::watch::Receiver<i64>) {
    while appended.changed().await.is_ok() {
        let position = *appended.borrow_and_update();
        if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(position.to_string())
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            // Other processes fall back to polling for this burst.
            tracing::warn!(%error, "could not notify other processes of new events");
        }
    }
}

/// SQLite allows one writer at a time. Writers of this process queue on an async
/// lock instead of meeting `SQLITE_BUSY` and sleeping in SQLite's busy handler
/// (which costs tens of milliseconds under contention); other processes still
/// serialize through the database lock and the busy timeout.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub pool: SqlitePool,
    pub(crate) writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The last position this process appended: readers of the log in this process
    /// wait on it instead of polling (SQLite has no `LISTEN`).
    pub(crate) appended: std::sync::Arc<tokio::sync::watch::Sender<i64>>,
    pub(crate) committer: group::Committer,
}

impl SqliteStore {
    /// A store over an open pool, with its own write turn and append signal.
    pub fn new(pool: SqlitePool) -> SqliteStore {
        SqliteStore {
            pool,
            writer: Default::default(),
            appended: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
            committer: Default::default(),
        }
    }

    /// Takes this process's write turn. Every writer of the database (appends and
    /// projections) goes through it.
    pub async fn write_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writer.lock().await
    }
}

/// Wakes a reader of the global log when new events may be there: this process's
/// append signal (both backends) and, on PostgreSQL, `LISTEN` on the channel every
/// process notifies after its appends. A reader still polls as a fallback (another
/// process writing the same SQLite file, a lost listener connection).
///
/// On PostgreSQL a reader may be woken for events it cannot read yet: the gap-safe
/// read ([`Store::read_after`]) stops below the oldest transaction still running
/// anywhere in the cluster, and that transaction may not be an append at all (a
/// long query in another database). Such events are announced once. A reader that
/// read nothing after a wake-up says so ([`nothing_read`](Self::nothing_read));
/// its next [`wait`](Self::wait) then asks whether committed events are held back
/// (one probe of the `(tx_id, position)` index) and, if so, waits for the next
/// announcement or a short pause (5 ms, doubling to 250 ms), whichever comes first,
/// instead of until the next announcement or poll. A probe that finds nothing
/// held back sends the reader to read once more (the blocker may have ended between
/// its empty read and the probe, and nobody announces that). Only then: a probe before every
/// wait doubled the queries of a steady command load (measured: `syncRepository`
/// twice as slow on PostgreSQL).
pub struct Wakeup {
    local: tokio::sync::watch::Receiver<i64>,
    listener: Option<Box<sqlx::postgres::PgListener>>,
    /// PostgreSQL: where to ask whether events are held back.
    pool: Option<PgPool>,
    /// The last pause while events were held back (`None`: none are).
    held_pause: Option<Duration>,
    /// The last wait ended in a wake-up (or a pause while events were held back).
    woken: bool,
    /// The reader read nothing after that: the next wait probes.
    probe: bool,
    /// A probe found nothing held back and sent the reader to read once more (reset
    /// by the next wake-up).
    rechecked: bool,
}

/// The PostgreSQL channel appends are announced on (payload: the last position).
pub const EVENTS_CHANNEL: &str = "workflowops_events";

const HELD_PAUSE_FIRST: Duration = Duration::from_millis(5);
const HELD_PAUSE_MAX: Duration = Duration::from_millis(250);

/// Whether committed events exist that a gap-safe read cannot return yet (an older
/// transaction is still running): whether the newest event's transaction is at or
/// above the horizon. One step of a backward scan of the `(tx_id, position)` index,
/// whatever the table's statistics say (an `EXISTS` over `tx_id >= horizon` was
/// planned as a sequential scan of the whole log on a young database, and made a
/// steady command load twice as slow). An error counts as "no" (the reader then
/// polls as usual).
async fn held_back(pool: &PgPool) -> bool {
    sqlx::query_scalar::<_, Option<bool>>(
        "SELECT (SELECT tx_id FROM events ORDER BY tx_id DESC, position DESC LIMIT 1) \
         >= pg_snapshot_xmin(pg_current_snapshot())",
    )
    .fetch_one(pool)
    .await
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Most announcements one wake-up drains (the rest wake the next wait).
const DRAIN_MAX: usize = 100_000;

/// Takes every announcement that has already arrived, without waiting. A reader
/// busy with a long batch (a catch-up, a population) finds thousands of them
/// queued on its connection; taken one per wait, each would cost an empty read of
/// the log (measured: a thousand queries a second for a minute after 12,000
/// commands, a fifth of the matrix's cached throughput).
fn drain_announcements(listener: &mut sqlx::postgres::PgListener) {
    use futures::FutureExt;
    for _ in 0..DRAIN_MAX {
        // polled once: what the connection has already received, nothing more
        match listener.try_recv().now_or_never() {
            Some(Ok(Some(_))) => continue,
            _ => break,
        }
    }
}

impl Wakeup {
    /// Waits until new events may have been appended, or `max` has passed. Returns
    /// whether it was woken (false on timeout).
    pub async fn wait(&mut self, max: Duration) -> bool {
        self.let_go_if_closed();
        let mut max = max;
        let mut held = false;
        let probe = std::mem::take(&mut self.probe);
        if let (Some(pool), true) = (&self.pool, probe) {
            if held_back(pool).await {
                // Wake-ups still count (the append holding them back announces its
                // commit); the pause covers a blocker that announces nothing.
                let pause = self
                    .held_pause
                    .map_or(HELD_PAUSE_FIRST, |p| (p * 2).min(HELD_PAUSE_MAX));
                self.held_pause = Some(pause);
                max = max.min(pause);
                held = true;
            } else {
                self.held_pause = None;
                if !self.rechecked {
                    // Nothing is held back now, but the reader's empty read came
                    // before this probe: a blocker that ended in between released
                    // events nobody will announce again. Read once more (once per
                    // wake-up: an empty re-read waits as usual).
                    self.rechecked = true;
                    self.woken = true;
                    return true;
                }
            }
        }
        let local = &mut self.local;
        let woken = match self.listener.as_mut() {
            None => matches!(tokio::time::timeout(max, local.changed()).await, Ok(Ok(()))),
            Some(listener) => {
                let closed = self.pool.as_ref().map(|pool| pool.close_event());
                tokio::select! {
                    changed = local.changed() => changed.is_ok(),
                    () = async {
                        match closed {
                            Some(closed) => closed.await,
                            None => std::future::pending().await,
                        }
                    } => false,
                    received = tokio::time::timeout(max, listener.recv()) => match received {
                        Ok(Ok(_)) => true,
                        Ok(Err(error)) => {
                            // The listener reconnects on the next call; poll meanwhile.
                            tracing::warn!(%error, "event listener lost its connection");
                            tokio::time::sleep(max.min(Duration::from_millis(200))).await;
                            true
                        }
                        Err(_) => false,
                    },
                }
            }
        };
        if woken || held {
            self.rechecked = false;
        }
        // Several appends may have signalled: one read of the log covers them all.
        local.borrow_and_update();
        self.let_go_if_closed();
        if let Some(listener) = self.listener.as_mut() {
            drain_announcements(listener);
        }
        self.woken = woken || held;
        self.woken
    }

    /// Gives the listener's connection back once the pool is closing: `Pool::close`
    /// waits for every checked-out connection, and a reader that only waits would
    /// otherwise hold it for good (the wake-ups from this process still come).
    fn let_go_if_closed(&mut self) {
        if self.pool.as_ref().is_some_and(|pool| pool.is_closed()) {
            self.listener = None;
        }
    }

    /// Forgets the announcements received so far, without waiting: for a reader
    /// about to read the log anyway (which covers them).
    pub fn discard_announcements(&mut self) {
        self.local.borrow_and_update();
        if let Some(listener) = self.listener.as_mut() {
            drain_announcements(listener);
        }
    }

    /// The reader's read after the last wake-up returned nothing: if events were
    /// announced that it cannot read yet, the next [`wait`](Self::wait) comes back
    /// for them soon instead of at the next announcement or poll (PostgreSQL).
    pub fn nothing_read(&mut self) {
        self.probe = self.woken;
    }
}

impl Store {
    /// Connects to `postgres://…` or `sqlite:…` (`sqlite://path` or `sqlite::memory:`).
    pub async fn connect(database_url: &str, max_connections: u32) -> Result<Store, StoreError> {
        if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
            // The read models are small and hot: index reads cost about what sequential
            // ones do, and the default planner cost (4) chose full scans of the matrix
            // cells for a 50-row page (5.9 ms against 3.0 ms with the index).
            let mut options = PgConnectOptions::from_str(database_url)?
                .application_name("workflowops")
                .options([("random_page_cost", "1.1")]);
            if tls_needless(
                database_url,
                options.get_host(),
                std::env::var_os("PGSSLMODE"),
            ) {
                options = options.ssl_mode(PgSslMode::Disable);
            }
            // No ping before every acquire: that is an extra round trip per query (a
            // broken connection still fails the query, which the caller sees).
            let pool = PgPoolOptions::new()
                .test_before_acquire(false)
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            Ok(Store::Postgres(PgStore::new(pool)))
        } else if database_url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(database_url)?;
            Self::open_sqlite_with(options, max_connections).await
        } else {
            Err(StoreError::Config(format!(
                "unsupported database URL scheme (expected postgres:// or sqlite:): {}",
                redact_url(database_url)
            )))
        }
    }

    /// Opens (creating if needed) the embedded database file. Four connections: each
    /// is a thread, and on two cores more of them measured slower, not faster.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        Self::open_sqlite_with(SqliteConnectOptions::new().filename(path), 4).await
    }

    async fn open_sqlite_with(
        options: SqliteConnectOptions,
        max_connections: u32,
    ) -> Result<Store, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // 32 MiB of page cache per connection (the default is 2 MiB) and reads
            // through a memory map: fewer copies through the kernel's page cache.
            .pragma("cache_size", "-32768")
            .pragma("mmap_size", "268435456");
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(max_connections.max(1))
            .connect_with(options)
            .await?;
        Ok(Store::Sqlite(SqliteStore::new(pool)))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Store::Postgres(_) => Backend::Postgres,
            Store::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Applies the backend's migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(PgStore { pool, .. }) => PG_MIGRATIONS.run(pool).await?,
            Store::Sqlite(SqliteStore { pool, .. }) => SQLITE_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// The cqrs-es repository over this store (postgres-es or sqlite-es), for
    /// loading only: every write goes through [`Store::commit`].
    pub(crate) fn repository(&self) -> repo::AnyRepository {
        match self {
            Store::Postgres(PgStore { pool, .. }) => repo::AnyRepository::Postgres(
                postgres_es::PostgresEventRepository::new(pool.clone()),
            ),
            Store::Sqlite(SqliteStore { pool, .. }) => {
                repo::AnyRepository::Sqlite(sqlite_es::SqliteEventRepository::new(pool.clone()))
            }
        }
    }

    /// A waiter for new events (see [`Wakeup`]).
    pub async fn wakeup(&self) -> Result<Wakeup, StoreError> {
        match self {
            Store::Postgres(pg) => {
                let local = pg.appended.subscribe();
                let mut listener = sqlx::postgres::PgListener::connect_with(&pg.pool).await?;
                listener.listen(EVENTS_CHANNEL).await?;
                Ok(Wakeup {
                    local,
                    listener: Some(Box::new(listener)),
                    pool: Some(pg.pool.clone()),
                    held_pause: None,
                    // a new reader's first read may meet announced events
                    woken: true,
                    probe: false,
                    rechecked: false,
                })
            }
            Store::Sqlite(sqlite) => Ok(Wakeup {
                local: sqlite.appended.subscribe(),
                listener: None,
                pool: None,
                held_pause: None,
                woken: true,
                probe: false,
                rechecked: false,
            }),
        }
    }

    /// Announces that this process appended up to `position`.
    pub fn appended(&self, position: i64) {
        match self {
            Store::Postgres(pg) => pg.appended.send_replace(position),
            Store::Sqlite(sqlite) => sqlite.appended.send_replace(position),
        };
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(PgStore { pool, .. }) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.close_committer().await;
        match self {
            Store::Postgres(PgStore { pool, .. }) => pool.close().await,
            Store::Sqlite(SqliteStore { pool, .. }) => pool.close().await,
        }
    }
}

/// The same server URL pointing at another database, keeping any `?options`. A
/// URL that does not parse comes back unchanged (sqlx cannot connect with it
/// either, as it parses URLs the same way).
pub fn with_database(url: &str, database: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_path(&format!("/{database}"));
            parsed.into()
        }
        Err(_) => url.to_string(),
    }
}

/// Whether a PostgreSQL connection of `url` to `host` skips TLS (decision 70): the
/// host is this machine (a loopback address or `localhost`) and no TLS mode was
/// asked for, neither in the URL (`sslmode`) nor in `PGSSLMODE` (`pg_sslmode`).
/// Left unasked, the mode is `prefer`, which takes TLS when the server offers it
/// but verifies nothing, so it guards against no one; between two processes of one
/// machine it only costs (measured in decision 70).
/// Any mode asked for is kept as asked.
fn tls_needless(url: &str, host: &str, pg_sslmode: Option<std::ffi::OsString>) -> bool {
    let asked = pg_sslmode.is_some()
        || Url::parse(url).map_or(true, |u| {
            u.query_pairs()
                .any(|(key, _)| key == "sslmode" || key == "ssl-mode")
        });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback && !asked
}

/// A database URL with any password replaced, for messages and logs: the one in
/// the user information and a `password` query option. A URL that does not parse
/// loses everything between `://` and its last `@` instead.
pub fn redact_url(url: &str) -> String {
    const HIDDEN: &str = "***";
    let Ok(mut parsed) = Url::parse(url) else {
        return match (url.find("://"), url.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                format!("{}{HIDDEN}{}", &url[..scheme_end + 3], &url[at..])
            }
            _ => url.to_string(),
        };
    };
    let password_option = |key: &str| key.eq_ignore_ascii_case("password");
    let in_query = parsed.query_pairs().any(|(key, _)| password_option(&key));
    if parsed.password().is_none() && !in_query {
        // Nothing to hide: keep the text exactly as given.
        return url.to_string();
    }
    if parsed.password().is_some() && parsed.set_password(Some(HIDDEN)).is_err() {
        return format!("{}://{HIDDEN}", parsed.scheme());
    }
    if in_query {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let value = if password_option(&key) {
                    HIDDEN.to_string()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tls_is_skipped_only_to_this_machine_and_only_when_not_asked_for() {
        use super::tls_needless;
        let needless = |url: &str, host: &str| tls_needless(url, host, None);
        for (url, host) in [
            ("postgres://u@127.0.0.1:5432/db", "127.0.0.1"),
            ("postgres://u@127.0.0.2/db", "127.0.0.2"),
            ("postgres://u@localhost/db", "localhost"),
            ("postgresql://u@[::1]:5432/db?application_name=x", "[::1]"),
            ("postgres://u@LOCALHOST/db", "LOCALHOST"),
        ] {
            assert!(needless(url, host), "{url}");
        }
        for (url, host) in [
            ("postgres://u@db.internal/db", "db.internal"),
            ("postgres://u@10.0.0.5/db", "10.0.0.5"),
            ("postgres://u@127.0.0.1/db?sslmode=prefer", "127.0.0.1"),
            ("postgres://u@127.0.0.1/db?sslmode=require", "127.0.0.1"),
            (
                "postgres://u@localhost/db?ssl-mode=verify-full",
                "localhost",
            ),
        ] {
            assert!(!needless(url, host), "{url}");
        }
        // PGSSLMODE asks too
        assert!(!tls_needless(
            "postgres://u@127.0.0.1/db",
            "127.0.0.1",
            Some("prefer".into())
        ));
    }

    #[test]
    fn database_swap_keeps_options() {
        use super::with_database;
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres", "x"),
            "postgres://u@h/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            super::redact_url("postgres://u@h:5432/db?sslmode=disable"),
            "postgres://u@h:5432/db?sslmode=disable"
        );
        assert_eq!(super::redact_url("sqlite:data.db"), "sqlite:data.db");
        // Percent-encoded passwords, and passwords given as an option.
        assert_eq!(
            super::redact_url("postgres://u:p%40ss%2Fw@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            super::redact_url("postgres://u@h/db?sslmode=require&password=secret"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
        // URLs that do not parse still lose everything before the last `@`.
        for (url, shown) in [
            ("postgres://u:pa/ss@h/db", "postgres://***@h/db"),
            (
                "postgres://u:secret@h:99999/db",
                "postgres://***@h:99999/db",
            ),
            ("postgres://u:s@cr@t@[::1/db", "postgres://***@[::1/db"),
        ] {
            assert_eq!(super::redact_url(url), shown, "{url}");
        }
        for url in [
            "postgres://u:secret@h:5432/db",
            "postgres://u:secret@h/db?password=secret",
            "postgres://u:secret@h:99999/db",
            "postgres://u:se@cret@h/db",
            "mysql://u:secret@h/db",
        ] {
            assert!(!super::redact_url(url).contains("secret"), "{url}");
        }
    }

    #[test]
    fn database_swap_never_touches_credentials() {
        assert_eq!(
            super::with_database("postgres://u:p%40ss@h:5432/postgres", "wf_test_1"),
            "postgres://u:p%40ss@h:5432/wf_test_1"
        );
        assert_eq!(
            super::with_database("postgresql://u@h", "x"),
            "postgresql://u@h/x"
        );
        assert_eq!(super::with_database("not a url", "x"), "not a url");
    }
}
