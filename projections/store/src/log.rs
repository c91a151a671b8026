//! The global log: every event in commit-safe order, and chain verification.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;

use super::chain::{is_chain_hash, ChainedEvent, GENESIS, HASH_KEY};
use super::digest::{DigestCheckError, DigestReport, ExternalCheck, ExternalDigest};
use super::{PgStore, SqliteStore, Store, StoreError};

/// One stored event with its place in the global log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    pub position: i64,
    /// The writing transaction (PostgreSQL); `None` on SQLite.
    pub tx_id: Option<i64>,
    pub recorded_at: DateTime<Utc>,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Map<String, Value>,
}

impl StoredEvent {
    pub fn from_parts(header: EventHeader, payload: Value, metadata: Map<String, Value>) -> Self {
        let EventHeader {
            position,
            tx_id,
            recorded_at,
            aggregate_type,
            aggregate_id,
            sequence,
            event_type,
            event_version,
        } = header;
        StoredEvent {
            position,
            tx_id,
            recorded_at,
            aggregate_type,
            aggregate_id,
            sequence,
            event_type,
            event_version,
            payload,
            metadata,
        }
    }

    /// The header (the columns), the payload and the metadata.
    pub fn into_parts(self) -> (EventHeader, Value, Map<String, Value>) {
        let header = EventHeader {
            position: self.position,
            tx_id: self.tx_id,
            recorded_at: self.recorded_at,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            event_type: self.event_type,
            event_version: self.event_version,
        };
        (header, self.payload, self.metadata)
    }

    /// The event's chain hash.
    pub fn hash(&self) -> Option<&str> {
        self.metadata.get(HASH_KEY).and_then(Value::as_str)
    }

    /// The tenant that owns the event (aggregate ids are `tenant:…`).
    pub fn tenant(&self) -> &str {
        aggregates::kernel::ids::tenant_of(&self.aggregate_id)
    }

    pub fn cursor(&self) -> LogCursor {
        LogCursor {
            tx_id: self.tx_id.unwrap_or(0),
            position: self.position,
        }
    }
}

/// Where a reader of the global log stands. On PostgreSQL the order is
/// (transaction id, position); on SQLite it is the position alone (`tx_id` = 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct LogCursor {
    pub tx_id: i64,
    pub position: i64,
}

impl LogCursor {
    pub const START: LogCursor = LogCursor {
        tx_id: 0,
        position: 0,
    };
}

/// Outcome of walking every aggregate's hash chain and (for the whole log) the log
/// digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Every chain intact and, when checked, the digest matching every seal, the head
    /// and any digest given.
    pub ok: bool,
    pub checked_events: u64,
    /// The first event whose chain link is broken (the digest part names its own).
    pub first_broken_position: Option<i64>,
    /// The broken links found (at most [`MAX_REPORTED`]), in the order walked.
    pub broken: Vec<BrokenLink>,
    /// The log digest recomputed and compared (`None` for one tenant's chains).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<DigestReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub reason: String,
}

/// Broken links listed in a report; the count and first position stay exact.
pub const MAX_REPORTED: usize = 100;
const BATCH: i64 = 1000;

/// What a stored event says about itself besides its payload and metadata: the
/// columns of its row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventHeader {
    pub position: i64,
    /// The writing transaction (PostgreSQL); `None` on SQLite.
    pub tx_id: Option<i64>,
    pub recorded_at: DateTime<Utc>,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
}

impl EventHeader {
    pub fn cursor(&self) -> LogCursor {
        LogCursor {
            tx_id: self.tx_id.unwrap_or(0),
            position: self.position,
        }
    }

    /// The tenant that owns the event (aggregate ids are `tenant:…`).
    pub fn tenant(&self) -> &str {
        aggregates::kernel::ids::tenant_of(&self.aggregate_id)
    }

    /// The error for this event's payload or metadata not being what it must be.
    pub fn corrupt(&self, message: String) -> StoreError {
        StoreError::Corrupt {
            position: self.position,
            message,
        }
    }
}

/// A row as the database returns it, before its JSON is parsed (`T`: owned text, or
/// text borrowed from the row). A reader that needs only part of the JSON decodes
/// it from the text itself ([`Store::read_after_map`]); [`RawEvent::parse`] makes
/// the whole [`StoredEvent`].
pub struct RawEvent<T = String> {
    header: EventHeader,
    payload: T,
    metadata: T,
    /// A SQLite row whose metadata has no readable `recorded_at`: reported when the
    /// event is taken apart, so that chain verification can list it as broken.
    no_recorded_at: bool,
}

impl<T: AsRef<str>> RawEvent<T> {
    /// The header, the payload's text and the metadata's text.
    pub fn into_parts(self) -> Result<(EventHeader, T, T), StoreError> {
        if self.no_recorded_at {
            return Err(self.header.corrupt("recorded_at missing".into()));
        }
        Ok((self.header, self.payload, self.metadata))
    }

    pub fn parse(self) -> Result<StoredEvent, StoreError> {
        let (header, payload, metadata) = self.into_parts()?;
        let payload: Value = serde_json::from_str(payload.as_ref())
            .map_err(|e| header.corrupt(format!("payload: {e}")))?;
        let metadata: Map<String, Value> = serde_json::from_str(metadata.as_ref())
            .map_err(|e| header.corrupt(format!("metadata: {e}")))?;
        Ok(StoredEvent::from_parts(header, payload, metadata))
    }
}

const PG_COLUMNS: &str =
    "position, tx_id::text::bigint AS tx_id, recorded_at, aggregate_type, aggregate_id, sequence, \
     event_type, event_version, payload::text AS payload, metadata::text AS metadata";
const SQLITE_COLUMNS: &str =
    "position, recorded_at, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata";

/// A row of `PG_COLUMNS`, by position; the JSON text stays borrowed from the row
/// until it is parsed.
fn pg_row<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    row: &'r sqlx::postgres::PgRow,
) -> Result<RawEvent<T>, StoreError> {
    Ok(RawEvent {
        header: EventHeader {
            position: row.try_get(0)?,
            tx_id: Some(row.try_get(1)?),
            recorded_at: row.try_get(2)?,
            aggregate_type: row.try_get(3)?,
            aggregate_id: row.try_get(4)?,
            sequence: row.try_get(5)?,
            event_type: row.try_get(6)?,
            event_version: row.try_get(7)?,
        },
        payload: row.try_get(8)?,
        metadata: row.try_get(9)?,
        no_recorded_at: false,
    })
}

/// A row of `SQLITE_COLUMNS`. Its `recorded_at` is generated from the metadata's.
fn sqlite_row<'r, T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>>(
    row: &'r sqlx::sqlite::SqliteRow,
) -> Result<RawEvent<T>, StoreError> {
    let recorded_at: Option<&str> = row.try_get("recorded_at")?;
    let recorded_at = recorded_at
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    Ok(RawEvent {
        no_recorded_at: recorded_at.is_none(),
        header: EventHeader {
            position: row.try_get("position")?,
            tx_id: None,
            recorded_at: recorded_at.unwrap_or_default(),
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
        },
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
    })
}

/// Batches at least this large are parsed in two halves at once (PostgreSQL).
const PARALLEL_PARSE: usize = 10_000;

/// What [`Store::read_after_map`] makes of each row.
pub type RawMap<T> = fn(RawEvent<&str>) -> Result<T, StoreError>;

/// Parses rows of `PG_COLUMNS` with `map`, into a vector with room for `capacity`.
fn parse_pg_rows<T>(
    rows: &[sqlx::postgres::PgRow],
    map: RawMap<T>,
    capacity: usize,
) -> Result<Vec<T>, StoreError> {
    let mut parsed = Vec::with_capacity(capacity.max(rows.len()));
    for row in rows {
        parsed.push(map(pg_row::<&str>(row)?)?);
    }
    Ok(parsed)
}

/// Runs `SELECT <columns> FROM events <tail>` on either backend and returns the raw
/// rows. `tail` is written once with `$n` placeholders (rewritten to `?n` for SQLite).
macro_rules! select_events {
    ($store:expr, $tail:expr $(, $bind:expr)* $(,)?) => {
        match $store {
            Store::Postgres(PgStore { pool, .. }) => {
                let sql = format!("SELECT {PG_COLUMNS} FROM events {}", $tail);
                let rows = sqlx::query(&sql)$(.bind($bind))*.fetch_all(pool).await?;
                rows.iter().map(pg_row::<String>).collect::<Result<Vec<_>, _>>()?
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                let sql = format!("SELECT {SQLITE_COLUMNS} FROM events {}", $tail.replace('$', "?"));
                let rows = sqlx::query(&sql)$(.bind($bind))*.fetch_all(pool).await?;
                rows.iter().map(sqlite_row::<String>).collect::<Result<Vec<_>, _>>()?
            }
        }
    };
}

impl Store {
    /// Up to `limit` events after `after`, in an order no checkpoint can skip.
    ///
    /// PostgreSQL allocates positions before commit, so a plain `position > n` cursor
    /// would skip a transaction that commits after a later one. Reading in
    /// (transaction id, position) order and only below the oldest transaction still
    /// running (`pg_snapshot_xmin`) returns an event only once nothing before it can
    /// still appear. SQLite has one writer at a time: its position order is commit order.
    pub async fn read_after(
        &self,
        after: LogCursor,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read_after_map(after, limit, |raw| raw.parse()).await
    }

    /// [`read_after`](Store::read_after), with each row made into a `T` by `map`
    /// straight from its text: the projector decodes what it needs without building
    /// the JSON trees of a [`StoredEvent`] (decision 84). On PostgreSQL a large batch
    /// is mapped in two halves at once, the second on a blocking thread: parsing a
    /// rebuild's 50,000-event batches was the replay's slowest stage once the audit
    /// trail wrote behind (decision 83).
    pub async fn read_after_map<T: Send + 'static>(
        &self,
        after: LogCursor,
        limit: i64,
        map: RawMap<T>,
    ) -> Result<Vec<T>, StoreError> {
        match self {
            Store::Postgres(PgStore { pool, .. }) => {
                // The parameters go through sub-`SELECT`s (decision 79): a custom
                // plan then knows no more than the generic one, which PostgreSQL
                // keeps after five executions instead of planning every read anew
                // (the same index scan either way).
                let sql = format!(
                    "SELECT {PG_COLUMNS} FROM events \
                     WHERE (tx_id, position) > ((SELECT $1::text::xid8), (SELECT $2::bigint)) \
                       AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
                     ORDER BY events.tx_id, events.position LIMIT (SELECT $3::bigint)"
                );
                let mut rows = sqlx::query(&sql)
                    .bind(after.tx_id.to_string())
                    .bind(after.position)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?;
                if rows.len() < PARALLEL_PARSE {
                    return parse_pg_rows(&rows, map, 0);
                }
                // (the first half's vector has room for the second: no copy to join them)
                let total = rows.len();
                let second = rows.split_off(total / 2);
                let second = tokio::task::spawn_blocking(move || parse_pg_rows(&second, map, 0));
                let events = parse_pg_rows(&rows, map, total);
                let second = match second.await {
                    Ok(parsed) => parsed,
                    Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                    Err(error) => return Err(StoreError::Stopped(error.to_string())),
                };
                let mut first = events?;
                first.extend(second?);
                Ok(first)
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                let sql = format!("SELECT {SQLITE_COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2");
                let rows = sqlx::query(&sql)
                    .bind(after.position)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?;
                rows.iter()
                    .map(|row| map(sqlite_row::<&str>(row)?))
                    .collect()
            }
        }
    }

    /// [`read_after`](Store::read_after) for a reader that looks only at some event
    /// types: the events of those types among the next ones, and how far the log
    /// was read (a cursor at or after the last event returned; the reader moves its
    /// checkpoint there). `None` reads every type.
    ///
    /// On SQLite the filter runs in the database, so the other events never cross
    /// to the reader: it reads up to the head as it is now (fewer than `limit`
    /// events returned: everything committed was read). On PostgreSQL the gap-safe
    /// batch is read as usual and filtered here.
    pub async fn read_after_matching(
        &self,
        after: LogCursor,
        limit: i64,
        types: Option<&[&str]>,
    ) -> Result<(Vec<StoredEvent>, LogCursor), StoreError> {
        let (Some(types), Store::Sqlite(SqliteStore { pool, .. })) = (types, self) else {
            let batch = self.read_after(after, limit).await?;
            let scanned = batch.last().map_or(after, StoredEvent::cursor);
            let batch = match types {
                Some(types) => batch
                    .into_iter()
                    .filter(|e| types.contains(&e.event_type.as_str()))
                    .collect(),
                None => batch,
            };
            return Ok((batch, scanned));
        };
        // One writer at a time: every position up to the head is committed.
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
            .fetch_one(pool)
            .await?;
        if head <= after.position || types.is_empty() {
            let scanned = LogCursor {
                tx_id: 0,
                position: head.max(after.position),
            };
            return Ok((vec![], scanned));
        }
        let placeholders: Vec<String> = (0..types.len()).map(|i| format!("?{}", i + 4)).collect();
        let sql = format!(
            "SELECT {SQLITE_COLUMNS} FROM events WHERE position > ?1 AND position <= ?2 \
             AND event_type IN ({}) ORDER BY position LIMIT ?3",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql)
            .bind(after.position)
            .bind(head)
            .bind(limit);
        for t in types {
            query = query.bind(*t);
        }
        let rows = query.fetch_all(pool).await?;
        let batch = rows
            .iter()
            .map(|row| sqlite_row::<&str>(row)?.parse())
            .collect::<Result<Vec<_>, _>>()?;
        let scanned = match batch.last() {
            Some(last) if batch.len() as i64 >= limit => last.cursor(),
            _ => LogCursor {
                tx_id: 0,
                position: head,
            },
        };
        Ok((batch, scanned))
    }

    /// The highest position of a committed event (0 for an empty log). Unlike
    /// [`head`](Store::head) it does not wait for older transactions still running:
    /// it is what "everything committed so far" means to a read-your-writes wait.
    pub async fn last_position(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COALESCE(MAX(position), 0) FROM events";
        Ok(match self {
            Store::Postgres(PgStore { pool, .. }) => {
                sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await?
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await?
            }
        })
    }

    /// How many events the log holds (committed ones).
    pub async fn event_count(&self) -> Result<i64, StoreError> {
        Ok(match self {
            Store::Postgres(PgStore { pool, .. }) => {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events")
                    .fetch_one(pool)
                    .await?
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events")
                    .fetch_one(pool)
                    .await?
            }
        })
    }

    /// The cursor of the last event a reader can see now (in [`read_after`] order):
    /// reading after it returns only events appended from here on.
    ///
    /// [`read_after`]: Store::read_after
    pub async fn head(&self) -> Result<LogCursor, StoreError> {
        Ok(match self {
            Store::Postgres(PgStore { pool, .. }) => {
                last_cursor(
                    pool,
                    "WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())",
                )
                .await?
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(position) FROM events")
                    .fetch_one(pool)
                    .await?
                    .map_or(LogCursor::START, |position| LogCursor {
                        tx_id: 0,
                        position,
                    })
            }
        })
    }

    /// The cursor of the last event committed now, in [`read_after`] order, whether
    /// or not a gap-safe read can return it yet (on PostgreSQL an older transaction
    /// anywhere in the cluster holds such reads back). A reader whose checkpoint is
    /// at or past it has read everything committed before the call: this is what
    /// "caught up" means to a catch-up.
    ///
    /// [`read_after`]: Store::read_after
    pub async fn committed_head(&self) -> Result<LogCursor, StoreError> {
        match self {
            Store::Postgres(PgStore { pool, .. }) => Ok(last_cursor(pool, "").await?),
            // one writer at a time: the head is committed and readable
            Store::Sqlite(_) => self.head().await,
        }
    }

    /// The cursor that resumes right after the event at `position`, if it exists.
    pub async fn cursor_after_position(
        &self,
        position: i64,
    ) -> Result<Option<LogCursor>, StoreError> {
        if position <= 0 {
            return Ok(Some(LogCursor::START));
        }
        if let Some(cursor) = self.recent_cursor(position) {
            return Ok(Some(cursor));
        }
        Ok(match self {
            Store::Postgres(PgStore { pool, .. }) => sqlx::query_scalar::<_, i64>(
                "SELECT tx_id::text::bigint FROM events WHERE position = $1",
            )
            .bind(position)
            .fetch_optional(pool)
            .await?
            .map(|tx_id| LogCursor { tx_id, position }),
            Store::Sqlite(SqliteStore { pool, .. }) => {
                sqlx::query_scalar::<_, i64>("SELECT position FROM events WHERE position = ?1")
                    .bind(position)
                    .fetch_optional(pool)
                    .await?
                    .map(|position| LogCursor { tx_id: 0, position })
            }
        })
    }

    /// The ids of every `aggregate_type` stream that holds no `event_type` event
    /// (read from the log itself: write-side decisions such as retention never
    /// depend on a read model).
    pub async fn streams_without(
        &self,
        aggregate_type: &str,
        event_type: &str,
    ) -> Result<Vec<String>, StoreError> {
        const SQL: &str = "SELECT aggregate_id FROM events WHERE aggregate_type = $1 \
            GROUP BY aggregate_id \
            HAVING SUM(CASE WHEN event_type = $2 THEN 1 ELSE 0 END) = 0 ORDER BY aggregate_id";
        Ok(match self {
            Store::Postgres(PgStore { pool, .. }) => {
                sqlx::query_scalar::<_, String>(SQL)
                    .bind(aggregate_type)
                    .bind(event_type)
                    .fetch_all(pool)
                    .await?
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                sqlx::query_scalar::<_, String>(SQL)
                    .bind(aggregate_type)
                    .bind(event_type)
                    .fetch_all(pool)
                    .await?
            }
        })
    }

    /// One aggregate's events in sequence order.
    pub async fn aggregate_events(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let raw = select_events!(
            self,
            "WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
            aggregate_type,
            aggregate_id,
        );
        raw.into_iter().map(RawEvent::parse).collect()
    }

    /// Keyset page of raw rows in (aggregate_type, aggregate_id, sequence) order.
    /// With `tenant`, only that tenant's aggregates (ids `tenant:…`).
    async fn chain_page(
        &self,
        after: &(String, String, i64),
        tenant: Option<&str>,
    ) -> Result<Vec<RawEvent>, StoreError> {
        Ok(match tenant {
            None => select_events!(
                self,
                "WHERE (aggregate_type, aggregate_id, sequence) > ($1, $2, $3) \
                 ORDER BY aggregate_type, aggregate_id, sequence LIMIT $4",
                &after.0,
                &after.1,
                after.2,
                BATCH,
            ),
            Some(tenant) => {
                // tenants are `[a-z0-9_-]`: escape `_` for LIKE
                let prefix = format!("{}:%", tenant.replace('_', "\\_"));
                select_events!(
                    self,
                    "WHERE (aggregate_type, aggregate_id, sequence) > ($1, $2, $3) \
                     AND aggregate_id LIKE $5 ESCAPE '\\' \
                     ORDER BY aggregate_type, aggregate_id, sequence LIMIT $4",
                    &after.0,
                    &after.1,
                    after.2,
                    BATCH,
                    prefix,
                )
            }
        })
    }

    /// Walks every aggregate's chain in bounded batches and reports broken links:
    /// a hash that does not match the event's content, a missing hash, a sequence gap,
    /// or a row whose JSON no longer parses. Then recomputes the log digest in global
    /// order and compares it with every seal and the head (see [`super::digest`]):
    /// that catches what the chains cannot (a removed tail or stream, an inserted or
    /// moved event, hashes recomputed after an edit).
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        let mut report = self.verify_chains(None).await?;
        let (digest, _) = self.verify_digest(None).await?;
        report.ok &= digest.ok;
        report.digest = Some(digest);
        Ok(report)
    }

    /// [`verify`](Store::verify), and proof that the log up to the digest's position
    /// is the one `external` was taken from: the recomputed digest there equals it.
    /// A digest of another database, or a position with no event in a log that
    /// otherwise verifies, is an error (the input is wrong); a digest of this log that
    /// does not match is tampering (`ok` false).
    pub async fn verify_with_digest(
        &self,
        external: &ExternalDigest,
    ) -> Result<VerifyReport, DigestCheckError> {
        if let Some(this) = self.log_id().await? {
            if this != external.log_id {
                return Err(DigestCheckError::OtherLog {
                    given: external.log_id.to_string(),
                    this: this.to_string(),
                });
            }
        }
        let target = self.cursor_after_position(external.position).await?;
        let mut report = self.verify_chains(None).await?;
        let (mut digest, captured) = self.verify_digest(target).await?;
        let check = match (target, captured) {
            (None, _) => {
                if report.ok && digest.ok {
                    return Err(DigestCheckError::NoEvent(external.position));
                }
                ExternalCheck {
                    digest: external.to_string(),
                    position: external.position,
                    ok: false,
                    reason: Some(format!(
                        "no event at position {}: the log was altered (see the other findings)",
                        external.position
                    )),
                }
            }
            (Some(_), None) => ExternalCheck {
                digest: external.to_string(),
                position: external.position,
                ok: false,
                reason: Some(format!(
                    "the event at position {} is not in the readable log",
                    external.position
                )),
            },
            (Some(_), Some(state)) if state.value == external.digest => ExternalCheck {
                digest: external.to_string(),
                position: external.position,
                ok: true,
                reason: None,
            },
            (Some(_), Some(state)) => ExternalCheck {
                digest: external.to_string(),
                position: external.position,
                ok: false,
                reason: Some(format!(
                    "the log up to position {} is not the one the digest was taken from \
                     (recomputed over {} events: {})",
                    external.position,
                    state.events,
                    state.hex()
                )),
            },
        };
        digest.ok &= check.ok;
        digest.external = Some(check);
        report.ok &= digest.ok;
        report.digest = Some(digest);
        Ok(report)
    }

    /// [`verify`](Store::verify) restricted to one tenant's aggregates.
    pub async fn verify_tenant(&self, tenant: &str) -> Result<VerifyReport, StoreError> {
        self.verify_chains(Some(tenant)).await
    }

    async fn verify_chains(&self, tenant: Option<&str>) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport {
            ok: true,
            checked_events: 0,
            first_broken_position: None,
            broken: vec![],
            digest: None,
        };
        let mut after = (String::new(), String::new(), 0_i64);
        // (aggregate_type, aggregate_id, sequence, stored hash) of the previous row
        let mut previous: Option<(String, String, i64, String)> = None;
        loop {
            let page = self.chain_page(&after, tenant).await?;
            let Some(last) = page.last() else { break };
            after = (
                last.header.aggregate_type.clone(),
                last.header.aggregate_id.clone(),
                last.header.sequence,
            );
            for raw in page {
                report.checked_events += 1;
                let (position, aggregate_type, aggregate_id, sequence) = (
                    raw.header.position,
                    raw.header.aggregate_type.clone(),
                    raw.header.aggregate_id.clone(),
                    raw.header.sequence,
                );
                let same_aggregate = previous
                    .as_ref()
                    .is_some_and(|(t, id, _, _)| *t == aggregate_type && *id == aggregate_id);
                let (expected_sequence, previous_hash) = match (&previous, same_aggregate) {
                    (Some((_, _, seq, hash)), true) => (seq + 1, hash.clone()),
                    _ => (1, GENESIS.to_string()),
                };
                let mut problem = None;
                if sequence != expected_sequence {
                    problem = Some(format!(
                        "sequence {sequence} where {expected_sequence} was expected"
                    ));
                }
                let stored_hash = match raw.parse() {
                    Ok(event) if !is_chain_hash(&previous_hash) => {
                        problem.get_or_insert_with(|| {
                            "previous event has no valid chain hash; cannot chain".to_string()
                        });
                        event.hash().unwrap_or_default().to_string()
                    }
                    Ok(event) => {
                        let stored = event.hash().unwrap_or_default().to_string();
                        let computed = ChainedEvent {
                            aggregate_type: &event.aggregate_type,
                            aggregate_id: &event.aggregate_id,
                            sequence: event.sequence,
                            event_type: &event.event_type,
                            event_version: &event.event_version,
                            payload: &event.payload,
                            metadata: &event.metadata,
                        }
                        .hash(&previous_hash);
                        if stored.is_empty() {
                            problem.get_or_insert_with(|| "no hash in metadata".to_string());
                        } else if !is_chain_hash(&stored) {
                            problem.get_or_insert_with(|| {
                                "hash is not 64 lowercase hex digits".to_string()
                            });
                        } else if stored != computed {
                            problem.get_or_insert_with(|| {
                                "hash does not match the event's content".to_string()
                            });
                        }
                        stored
                    }
                    Err(e) => {
                        problem.get_or_insert_with(|| e.to_string());
                        String::new()
                    }
                };
                if let Some(reason) = problem {
                    report.ok = false;
                    report.first_broken_position = Some(
                        report
                            .first_broken_position
                            .map_or(position, |p| p.min(position)),
                    );
                    if report.broken.len() < MAX_REPORTED {
                        report.broken.push(BrokenLink {
                            position,
                            aggregate_type: aggregate_type.clone(),
                            aggregate_id: aggregate_id.clone(),
                            sequence,
                            reason,
                        });
                    }
                }
                previous = Some((aggregate_type, aggregate_id, sequence, stored_hash));
            }
        }
        Ok(report)
    }
}

/// PostgreSQL: the cursor of the last event in read order among those `filter` (a
/// `WHERE` clause, or nothing) keeps; the start of the log when there is none.
async fn last_cursor(pool: &sqlx::PgPool, filter: &str) -> Result<LogCursor, sqlx::Error> {
    let sql = format!(
        "SELECT tx_id::text::bigint, position FROM events {filter} \
         ORDER BY tx_id DESC, position DESC LIMIT 1"
    );
    Ok(sqlx::query_as::<_, (i64, i64)>(&sql)
        .fetch_optional(pool)
        .await?
        .map_or(LogCursor::START, |(tx_id, position)| LogCursor {
            tx_id,
            position,
        }))
}
