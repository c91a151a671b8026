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

/// What the stream must still end with for an append whose command was decided
/// without reading it ([`crate::Store::load_for_command`]), checked in the same
/// statement as the append:
///
/// - [`Empty`](Predecessor::Empty): nothing at all. The command creates its
///   aggregate and was decided on the empty state because this process had nothing
///   kept for it (decision 77); any event of the aggregate, whatever its sequence,
///   makes it a conflict.
/// - [`Transaction`](Predecessor::Transaction) (**PostgreSQL**): the event this
///   process last wrote, as the very row version its transaction inserted: its
///   `tx_id` is that transaction's and its `xmin` (the transaction that wrote this
///   version of the row) too. Any `UPDATE` since, even one writing the same bytes,
///   and any row deleted and inserted again, leaves another `xmin` (decision 68).
/// - [`Row`](Predecessor::Row) (**SQLite**, no transaction ids): the event this
///   process last wrote, by its position, sequence, type, version, payload and
///   metadata (which holds the chain hash), byte for byte as written
///   ([`WrittenRow`]; decision 76).
///
/// So nothing is chained after an event altered since this process wrote it, nor
/// started over a stream it did not read. A mismatch stores nothing of that command
/// and is [`AppendError::Conflict`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Predecessor {
    Empty,
    /// The writing transaction's id (`pg_current_xact_id()`, as the cursor gives
    /// it; never 0). A SQLite append cannot check it and refuses the command as a
    /// conflict.
    Transaction(i64),
    Row(std::sync::Arc<WrittenRow>),
}

impl Predecessor {
    /// PostgreSQL's encoding of the check in the group statements' `gx` column:
    /// NULL none, 0 an empty stream, otherwise the writing transaction. A row kept
    /// for SQLite (never made on PostgreSQL) cannot be checked there: it stands for
    /// a transaction that never ran, so the command is a conflict.
    pub(crate) fn pg_guard(after: Option<&Predecessor>) -> Option<i64> {
        after.map(|after| match after {
            Predecessor::Empty => 0,
            Predecessor::Transaction(tx_id) => *tx_id,
            Predecessor::Row(_) => i64::MAX,
        })
    }
}

/// An event exactly as this process stored it on SQLite, kept to check that it is
/// still stored so ([`Predecessor`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct WrittenRow {
    pub position: i64,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
}

/// The largest row (payload and metadata) kept as a SQLite [`Predecessor`]; a
/// command after a larger one reads the stream.
pub(crate) const MAX_KEPT_ROW: usize = 4 << 10;

impl WrittenRow {
    /// `event` as stored at `position`.
    pub fn written(event: NewEvent, position: i64) -> WrittenRow {
        WrittenRow {
            position,
            sequence: event.sequence,
            event_type: event.event_type,
            event_version: event.event_version,
            payload: event.payload,
            metadata: event.metadata,
        }
    }
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

/// One command's events for [`insert_sqlite`], and the event they must follow.
pub(crate) struct SqliteCommand<'a> {
    pub events: &'a [NewEvent],
    pub after: Option<&'a Predecessor>,
}

/// SQLite: the events of `commands` in one `INSERT` (atomic on its own, or inside
/// the caller's transaction). Positions follow the highest stored, in the given
/// order: the materialized `base` is read once, inside the statement, which holds
/// SQLite's write lock from its start (one writer at a time, so positions stay
/// commit order and contiguous). A command whose stream does not end as its
/// [`Predecessor`] says contributes no row and gets
/// [`AppendError::Conflict`]; `ROW_NUMBER` numbers the rows kept, so positions
/// have no gaps. `Ok(None)` when a sequence was already taken: the statement undid
/// itself (SQLite's `ABORT`) and stored nothing; a caller with several commands
/// then goes command by command to tell the conflicting ones apart.
pub(crate) async fn insert_sqlite(
    connection: &mut sqlx::SqliteConnection,
    commands: &[SqliteCommand<'_>],
) -> Result<Option<Vec<Result<LogCursor, AppendError>>>, sqlx::Error> {
    if commands.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let rows: usize = commands.iter().map(|c| c.events.len()).sum();
    if commands.iter().any(|c| c.events.is_empty()) {
        // No caller passes one (an empty append is refused before the committer);
        // an empty `VALUES` would not even parse.
        return Err(sqlx::Error::Protocol(
            "a command with nothing to append".into(),
        ));
    }
    let mut sql = String::with_capacity(700 + rows * 48);
    sql.push_str(
        "WITH base AS MATERIALIZED (SELECT COALESCE(MAX(position), 0) AS b FROM events), \
         input(t, i, s, et, ev, p, m, k, ps, pp, pet, pev, ppl, pm) AS (VALUES ",
    );
    for k in 0..rows {
        sql.push_str(if k == 0 { "(" } else { ", (" });
        sql.push_str("?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    }
    sql.push_str(
        ") INSERT INTO events \
         (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, position) \
         SELECT t, i, s, et, ev, p, m, b + ROW_NUMBER() OVER (ORDER BY k) FROM base, input u \
         WHERE u.ps IS NULL \
           OR (u.ps = 0 AND NOT EXISTS (SELECT 1 FROM events e \
             WHERE e.aggregate_type = u.t AND e.aggregate_id = u.i)) \
           OR EXISTS (SELECT 1 FROM events e \
             WHERE e.aggregate_type = u.t AND e.aggregate_id = u.i AND e.sequence = u.ps \
               AND e.position = u.pp AND e.event_type = u.pet AND e.event_version = u.pev \
               AND e.payload = u.ppl AND e.metadata = u.pm) \
         ORDER BY k \
         RETURNING aggregate_type, aggregate_id, position",
    );
    let mut query = sqlx::query_as::<_, (String, String, i64)>(&sql);
    let mut k = 0_i64;
    for command in commands {
        let row = match command.after {
            Some(Predecessor::Row(row)) => Some(&**row),
            _ => None,
        };
        // The predecessor's sequence: 0 for an empty stream (never stored; the
        // statement checks that no event of the aggregate is); -1 for one this
        // store cannot check (a transaction id: never stored, so a conflict).
        let sequence = match command.after {
            None => None,
            Some(Predecessor::Empty) => Some(0),
            Some(Predecessor::Transaction(_)) => Some(-1),
            Some(Predecessor::Row(row)) => Some(row.sequence),
        };
        for event in command.events {
            k += 1;
            query = query
                .bind(event.aggregate_type.as_str())
                .bind(event.aggregate_id.as_str())
                .bind(event.sequence)
                .bind(event.event_type.as_str())
                .bind(event.event_version.as_str())
                .bind(event.payload.as_str())
                .bind(event.metadata.as_str())
                .bind(k)
                .bind(sequence)
                .bind(row.map(|r| r.position))
                .bind(row.map(|r| r.event_type.as_str()))
                .bind(row.map(|r| r.event_version.as_str()))
                .bind(row.map(|r| r.payload.as_str()))
                .bind(row.map(|r| r.metadata.as_str()));
        }
    }
    let stored = match query.fetch_all(&mut *connection).await {
        Ok(stored) => stored,
        // SQLITE_CONSTRAINT_PRIMARYKEY / _UNIQUE, as `classify` reads them.
        Err(sqlx::Error::Database(db)) if matches!(db.code().as_deref(), Some("1555" | "2067")) => {
            return Ok(None)
        }
        Err(error) => return Err(error),
    };
    let mut last: std::collections::HashMap<(&str, &str), i64> =
        std::collections::HashMap::with_capacity(commands.len());
    for (t, i, position) in &stored {
        let entry = last.entry((t.as_str(), i.as_str())).or_default();
        *entry = (*entry).max(*position);
    }
    Ok(Some(
        commands
            .iter()
            .map(|command| {
                let first = &command.events[0];
                last.get(&(first.aggregate_type.as_str(), first.aggregate_id.as_str()))
                    .map(|&position| LogCursor { tx_id: 0, position })
                    // No row: its predecessor is not stored as written.
                    .ok_or(AppendError::Conflict)
            })
            .collect(),
    ))
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
        let _turn = sqlite.write_turn().await;
        let mut connection = sqlite.pool.acquire().await.map_err(classify)?;
        // One statement is its own transaction, committed when it completes
        // (`fetch_all` reads all of it).
        let command = SqliteCommand {
            events,
            after: None,
        };
        match insert_sqlite(&mut connection, std::slice::from_ref(&command))
            .await
            .map_err(classify)?
        {
            Some(mut results) => results
                .pop()
                .unwrap_or(Err(AppendError::Conflict))
                .map(|c| c.position),
            None => Err(AppendError::Conflict),
        }
    }
}
