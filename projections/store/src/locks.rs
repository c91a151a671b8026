//! Who runs a singleton: PostgreSQL advisory locks, one helper for every runner.
//!
//! The projector runs each projection, the reactor runtime each reactor, and the
//! scheduler each job's tick in exactly one process of a cluster. All three take a
//! session-level advisory lock on a name (`hashtextextended(name, 0)`):
//!
//! - long-lived owners (projections, reactors) hold theirs on a dedicated
//!   connection, a [`LockSession`]: a lost connection loses every lock it held, so
//!   the session is checked and the owner stops running what it held;
//! - short-lived owners (a scheduler tick) take one from the pool, a [`PooledLock`],
//!   and give it back when done; a lock that could not be released closes its
//!   connection instead of returning it to the pool.
//!
//! SQLite is one process's database: every lock is granted at once there.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgPool};

use crate::{PgStore, Store, StoreError};

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended($1, 0))";

/// How often a live session's connection is pinged.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// A dedicated session holding named advisory locks for as long as it lives.
///
/// Each step of its owner calls [`check`](Self::check) (a lost session means every
/// lock it held is gone), then [`try_now`](Self::try_now) to learn whether the locks
/// it does not hold are worth trying again, then [`try_lock`](Self::try_lock) for
/// each. Dropping the session closes its connection and releases its locks.
pub struct LockSession {
    pool: Option<PgPool>,
    conn: Option<sqlx::PgConnection>,
    checked: Option<Instant>,
    tried: Option<Instant>,
    retry: Duration,
}

impl LockSession {
    /// A session for `store` that retries locks held elsewhere every `retry`.
    /// It connects on its first [`try_lock`](Self::try_lock).
    pub fn new(store: &Store, retry: Duration) -> LockSession {
        let pool = match store {
            Store::Postgres(PgStore { pool, .. }) => Some(pool.clone()),
            Store::Sqlite(_) => None,
        };
        LockSession {
            pool,
            conn: None,
            checked: None,
            tried: None,
            retry,
        }
    }

    /// Whether locks are real here (PostgreSQL) or always granted (SQLite).
    pub fn is_shared(&self) -> bool {
        self.pool.is_some()
    }

    /// Checks the session (a ping at most every 5 s). Returns `true` when the
    /// connection was lost, and with it every lock it held: the owner must stop
    /// running what it held. The next [`try_lock`](Self::try_lock) reconnects.
    pub async fn check(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        if self.checked.is_some_and(|at| at.elapsed() < CHECK_EVERY) {
            return false;
        }
        self.checked = Some(Instant::now());
        if conn.ping().await.is_ok() {
            return false;
        }
        self.conn = None;
        // everything must be tried again at once
        self.tried = None;
        true
    }

    /// Whether locks not held are tried in this step: once per retry interval, so a
    /// lock held elsewhere costs one query per interval, not one per step.
    pub fn try_now(&mut self) -> bool {
        if self.tried.is_some_and(|at| at.elapsed() < self.retry) {
            return false;
        }
        self.tried = Some(Instant::now());
        true
    }

    /// Tries to take the lock `name` without waiting. Always granted on SQLite.
    pub async fn try_lock(&mut self, name: &str) -> Result<bool, StoreError> {
        let Some(pool) = &self.pool else {
            return Ok(true);
        };
        if self.conn.is_none() {
            self.conn = Some(sqlx::PgConnection::connect_with(&pool.connect_options()).await?);
            self.checked = Some(Instant::now());
        }
        let conn = self.conn.as_mut().expect("connected above");
        Ok(sqlx::query_scalar::<_, bool>(TRY_LOCK)
            .bind(name)
            .fetch_one(conn)
            .await?)
    }
}

/// An advisory lock held on a pooled connection for one short piece of work.
///
/// [`release`](Self::release) unlocks and returns the connection to the pool.
/// Dropped without a successful release (the work was cancelled, or unlocking
/// failed), it closes the connection instead, and PostgreSQL releases the lock with
/// the session; a pooled connection never goes back still holding a lock.
pub struct PooledLock {
    name: String,
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

impl PooledLock {
    /// Tries to take `name` without waiting: `None` when another session holds it.
    /// Always granted on SQLite.
    pub async fn try_take(store: &Store, name: &str) -> Result<Option<PooledLock>, StoreError> {
        let pool = match store {
            Store::Postgres(PgStore { pool, .. }) => pool,
            Store::Sqlite(_) => {
                return Ok(Some(PooledLock {
                    name: name.to_string(),
                    conn: None,
                }))
            }
        };
        let mut conn = pool.acquire().await?;
        let got: bool = sqlx::query_scalar(TRY_LOCK)
            .bind(name)
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then(|| PooledLock {
            name: name.to_string(),
            conn: Some(conn),
        }))
    }

    /// Unlocks; the connection goes back to the pool only if that worked.
    pub async fn release(mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let unlocked = sqlx::query_scalar::<_, bool>(UNLOCK)
            .bind(&self.name)
            .fetch_one(&mut **conn)
            .await;
        if matches!(unlocked, Ok(true)) {
            drop(self.conn.take());
        }
    }
}

impl Drop for PooledLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}
