//! Appending rows: one statement per command, or one per group of concurrent
//! commands ([`crate::group`]). Private to the store: every write comes through
//! [`Store::commit`](crate::Store::commit), which builds the rows.
//!
//! The command path is load + append. postgres-es's own `persist` takes three round
//! trips (BEGIN, INSERT, COMMIT) and returns no global position, which a mutation
//! must report; measured on this project's 2-core target, that path plus a position
//! lookup reached about half of the throughput target. This append is a single
//! autocommit statement (atomic for any number of rows) that returns the positions.
//! It writes the same table, so postgres-es and sqlite-es still load what it wrote.

use chrono::{DateTime, Utc};

use super::{LogCursor, PgStore, SqliteStore, Store, StoreError};

/// An event ready to append: everything but its global position.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// JSON text.
    pub payload: String,
    /// JSON text (includes the chain hash).
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
}

/// The stored event an append must follow, when its command was decided on a state
/// this process kept from its own last commit instead of reading the stream
/// ([`crate::Store::load_for_command`]): the transaction that wrote it. The append
/// checks in the same statement (PostgreSQL) that the event before its first one is
/// still the very row version that transaction inserted: its `tx_id` is that
/// transaction's and its `xmin` (the transaction that wrote this version of the
/// row) too. Any `UPDATE` since, even one writing the same bytes, and any row
/// deleted and inserted again, leaves another `xmin`, so nothing is chained after
/// an event altered since this process wrote it (decision 68). A mismatch stores
/// nothing and is [`AppendError::Conflict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Predecessor {
    /// The writing transaction's id (`pg_current_xact_id()`, as the cursor gives it).
    pub tx_id: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended the same sequence first.
    #[error("concurrent write")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) fn classify(error: sqlx::Error) -> AppendError {
    if let sqlx::Error::Database(db) = &error {
        // PostgreSQL unique_violation; SQLite SQLITE_CONSTRAINT_PRIMARYKEY / _UNIQUE
        if matches!(db.code().as_deref(), Some("23505" | "1555" | "2067")) {
            return AppendError::Conflict;
        }
    }
    AppendError::Store(StoreError::Database(error))
}

const PG_ONE: &str = "INSERT INTO events \
    (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at) \
    VALUES ($1, $2, $3, $4, $5, $6::json, $7::json, $8) RETURNING position, tx_id::text::bigint";

const PG_MANY: &str = "INSERT INTO events \
    (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at) \
    SELECT t, i, s, et, ev, p::json, m::json, r \
    FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[]) \
      AS u(t, i, s, et, ev, p, m, r) \
    RETURNING position, tx_id::text::bigint";

const SQLITE_ONE: &str = "INSERT INTO events \
    (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, position) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, (SELECT COALESCE(MAX(position), 0) + 1 FROM events)) RETURNING position";

/// The SQLite insert of one event (its position: one more than the highest).
pub(crate) fn sqlite_insert(
    event: &NewEvent,
) -> sqlx::query::QueryScalar<'static, sqlx::Sqlite, i64, sqlx::sqlite::SqliteArguments<'static>> {
    sqlx::query_scalar(SQLITE_ONE)
        .bind(event.aggregate_type.clone())
        .bind(event.aggregate_id.clone())
        .bind(event.sequence)
        .bind(event.event_type.clone())
        .bind(event.event_version.clone())
        .bind(event.payload.clone())
        .bind(event.metadata.clone())
}

impl Store {
    /// Appends `events` atomically (all or none) in one statement of its own and
    /// returns the last one's position. A sequence already taken is
    /// [`AppendError::Conflict`] and appends nothing. The committer
    /// ([`crate::group`]) calls it for an append that goes alone.
    pub(crate) async fn append_one(&self, events: &[NewEvent]) -> Result<LogCursor, AppendError> {
        let Some(first) = events.first() else {
            return Err(AppendError::Store(StoreError::Config(
                "nothing to append".into(),
            )));
        };
        let last = match self {
            Store::Postgres(PgStore { pool, .. }) => {
                // `fetch_all`, never `fetch_one`: the implicit transaction commits at the
                // protocol's Sync, after the RETURNING row has been sent. `fetch_one`
                // returns on that row, before the commit; `fetch_all` reads through
                // ReadyForQuery, so success here means committed.
                let positions: Vec<(i64, i64)> = if events.len() == 1 {
                    sqlx::query_as(PG_ONE)
                        .bind(&first.aggregate_type)
                        .bind(&first.aggregate_id)
                        .bind(first.sequence)
                        .bind(&first.event_type)
                        .bind(&first.event_version)
                        .bind(&first.payload)
                        .bind(&first.metadata)
                        .bind(first.recorded_at)
                        .fetch_all(pool)
                        .await
                        .map_err(classify)?
                } else {
                    let column =
                        |f: fn(&NewEvent) -> String| events.iter().map(f).collect::<Vec<String>>();
                    sqlx::query_as(PG_MANY)
                        .bind(column(|e| e.aggregate_type.clone()))
                        .bind(column(|e| e.aggregate_id.clone()))
                        .bind(events.iter().map(|e| e.sequence).collect::<Vec<i64>>())
                        .bind(column(|e| e.event_type.clone()))
                        .bind(column(|e| e.event_version.clone()))
                        .bind(column(|e| e.payload.clone()))
                        .bind(column(|e| e.metadata.clone()))
                        .bind(
                            events
                                .iter()
                                .map(|e| e.recorded_at)
                                .collect::<Vec<DateTime<Utc>>>(),
                        )
                        .fetch_all(pool)
                        .await
                        .map_err(classify)?
                };
                let (position, tx_id) = positions.into_iter().max().unwrap_or_default();
                LogCursor { tx_id, position }
            }
            Store::Sqlite(sqlite) => LogCursor {
                tx_id: 0,
                position: Self::append_sqlite(sqlite, events).await?,
            },
        };
        Ok(last)
    }

    async fn append_sqlite(sqlite: &SqliteStore, events: &[NewEvent]) -> Result<i64, AppendError> {
        let pool = &sqlite.pool;
        let _turn = sqlite.write_turn().await;
        let insert = sqlite_insert;
        if let [only] = events {
            // A single statement is its own transaction, committed when the
            // statement completes: read all of it (see above).
            let positions: Vec<i64> = insert(only).fetch_all(pool).await.map_err(classify)?;
            return positions.into_iter().max().ok_or_else(|| {
                AppendError::Store(StoreError::Config("insert returned no position".into()))
            });
        }
        let mut tx = pool.begin().await.map_err(classify)?;
        let mut last = 0;
        for event in events {
            last = insert(event)
                .fetch_all(&mut *tx)
                .await
                .map_err(classify)?
                .into_iter()
                .max()
                .unwrap_or_default();
        }
        tx.commit().await.map_err(classify)?;
        Ok(last)
    }
}
