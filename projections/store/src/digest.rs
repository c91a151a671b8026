//! The log digest: a running hash over every event in the readers' global order
//! ([`Store::read_after`] order), kept up to date in a one-row head and sealed into
//! immutable rows, periodically and on demand.
//!
//! Definition (what an auditor recomputes):
//!
//! ```text
//! D_0 = SHA-256("workflowops log digest v1" ‖ log_id)            log_id: 16 bytes
//! D_i = SHA-256(D_{i-1} ‖ u64_be(position_i) ‖ hash_i)
//! ```
//!
//! where events are taken in global order (PostgreSQL: `(tx_id, position)`;
//! SQLite: `position`), `position_i` is the event's global position and `hash_i` is
//! the chain hash stored in its metadata (`metadata.hash`, 64 lowercase hex digits,
//! taken as ASCII text; the empty string if absent or not a string). The chain hash
//! covers the event's aggregate, sequence, type, payload and metadata, so `D_n` fixes
//! the whole log up to the n-th event.
//!
//! The external form of a digest is `HEX@POSITION`: 32 hex digits of the log id, then
//! the 64 hex digits of `D_n`, then `@` and the position of the n-th event.
//!
//! Recomputing it in Python, from `SELECT position, metadata FROM events ORDER BY
//! tx_id, position` (PostgreSQL) or `ORDER BY position` (SQLite):
//!
//! ```text
//! d = sha256(b"workflowops log digest v1" + bytes.fromhex(log_id)).digest()
//! for position, metadata in rows:
//!     h = metadata.get("hash") if isinstance(metadata.get("hash"), str) else ""
//!     d = sha256(d + position.to_bytes(8, "big") + h.encode()).digest()
//! print(log_id + d.hex() + "@" + str(position))
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::log::LogCursor;
use super::{PgStore, SqliteStore, Store, StoreError};

/// Domain separation of the digest's first state.
pub const DIGEST_DOMAIN: &[u8] = b"workflowops log digest v1";
/// Events read per batch when digesting.
const BATCH: i64 = 1000;
/// Seals read per batch when verifying.
const SEAL_BATCH: i64 = 1000;

/// The random id of one database's log (created by its migration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogId(pub [u8; 16]);

impl LogId {
    pub fn from_hex(text: &str) -> Option<LogId> {
        if text.len() != 32 || !is_lower_hex(text) {
            return None;
        }
        let mut id = [0u8; 16];
        hex::decode_to_slice(text, &mut id).ok()?;
        Some(LogId(id))
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The digest over a prefix of the log: its value, how many events it covers and the
/// cursor of the last one ([`LogCursor::START`] for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningDigest {
    pub value: [u8; 32],
    pub events: u64,
    pub cursor: LogCursor,
}

impl RunningDigest {
    /// `D_0`: the digest of this log before its first event.
    pub fn genesis(log_id: &LogId) -> RunningDigest {
        let mut hasher = Sha256::new();
        hasher.update(DIGEST_DOMAIN);
        hasher.update(log_id.0);
        RunningDigest {
            value: hasher.finalize().into(),
            events: 0,
            cursor: LogCursor::START,
        }
    }

    /// Takes in the next event of the log: its cursor and its stored chain hash.
    pub fn push(&mut self, cursor: LogCursor, chain_hash: &str) {
        let mut hasher = Sha256::new();
        hasher.update(self.value);
        hasher.update((cursor.position as u64).to_be_bytes());
        hasher.update(chain_hash.as_bytes());
        self.value = hasher.finalize().into();
        self.events += 1;
        self.cursor = cursor;
    }

    /// The digest as 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.value)
    }
}

/// A digest in its external form `HEX@POSITION` (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalDigest {
    pub log_id: LogId,
    pub digest: [u8; 32],
    /// The position of the last event it covers (0: the empty log).
    pub position: i64,
}

impl ExternalDigest {
    /// The running hash as 64 lowercase hex digits.
    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest)
    }
}

impl fmt::Display for ExternalDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}@{}",
            self.log_id,
            hex::encode(self.digest),
            self.position
        )
    }
}

/// Why a text is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed digest: {0} (expected HEX@POSITION: 96 hex digits, `@`, a position)")]
pub struct MalformedDigest(pub String);

impl FromStr for ExternalDigest {
    type Err = MalformedDigest;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let Some((hex_part, position)) = text.split_once('@') else {
            return Err(MalformedDigest(
                "no `@` between the digest and its position".into(),
            ));
        };
        if hex_part.len() != 96 {
            return Err(MalformedDigest(format!(
                "the digest has {} characters, not 96 hex digits",
                hex_part.chars().count()
            )));
        }
        let hex_part = hex_part.to_ascii_lowercase();
        if !is_lower_hex(&hex_part) {
            return Err(MalformedDigest("the digest is not hexadecimal".into()));
        }
        let position = if !position.is_empty() && position.bytes().all(|b| b.is_ascii_digit()) {
            position.parse::<i64>().ok()
        } else {
            None
        };
        let Some(position) = position else {
            return Err(MalformedDigest(format!(
                "the position {position:?} is not a whole number from 0 to {}",
                i64::MAX
            )));
        };
        let log_id = LogId::from_hex(&hex_part[..32])
            .ok_or_else(|| MalformedDigest("the log id is not hexadecimal".into()))?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&hex_part[32..], &mut digest)
            .map_err(|_| MalformedDigest("the digest is not hexadecimal".into()))?;
        Ok(ExternalDigest {
            log_id,
            digest,
            position,
        })
    }
}

/// How a seal was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SealKind {
    Periodic,
    OnDemand,
}

impl SealKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SealKind::Periodic => "periodic",
            SealKind::OnDemand => "on_demand",
        }
    }
}

/// An immutable record of the digest at a cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seal {
    pub cursor: LogCursor,
    pub events: i64,
    /// 64 lowercase hex digits.
    pub digest: String,
    pub sealed_at: String,
    pub kind: String,
}

/// A seal of this log with its external form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedDigest {
    pub seal: Seal,
    pub log_id: LogId,
}

impl SealedDigest {
    /// `HEX@POSITION`, to keep outside the database.
    pub fn external(&self) -> String {
        format!(
            "{}{}@{}",
            self.log_id, self.seal.digest, self.seal.cursor.position
        )
    }

    pub fn sealed_at(&self) -> Option<DateTime<Utc>> {
        crate::sql::parse_time(&self.seal.sealed_at)
    }
}

/// The digest part of a verification report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestReport {
    pub ok: bool,
    /// This database's log id (`None` if its row is missing or malformed).
    pub log_id: Option<String>,
    /// Events digested, in global order.
    pub events: u64,
    /// Seals compared with the recomputed digest.
    pub seals_checked: u64,
    /// Whether the head (the running state) was compared.
    pub head_checked: bool,
    /// The highest position covered by a seal or the head that was checked.
    pub sealed_through: Option<i64>,
    /// Seals (and the head) that do not match.
    pub mismatches: u64,
    pub first_mismatch: Option<DigestMismatch>,
    /// The check against a digest given from outside (`verify --digest`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestMismatch {
    /// `seal`, `head`, `identity` or `external`.
    pub checkpoint: String,
    /// The position the checkpoint covers the log through.
    pub position: i64,
    pub sealed_at: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExternalCheck {
    pub digest: String,
    pub position: i64,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why `verify --digest` could not check the log against a digest (not tampering).
#[derive(Debug, thiserror::Error)]
pub enum DigestCheckError {
    #[error("the digest is from another database: its log id is {given}, this log's is {this}")]
    OtherLog { given: String, this: String },
    #[error(
        "no event at position {0} in this log: the digest's position is wrong (the log \
         itself verifies, seals and head included)"
    )]
    NoEvent(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One event as the digest sees it.
struct DigestRow {
    cursor: LogCursor,
    hash: String,
}

/// A seal or the head, compared with the recomputed digest at its cursor.
struct Checkpoint {
    kind: &'static str,
    cursor: LogCursor,
    events: i64,
    digest: Option<String>,
    sealed_at: Option<String>,
}

/// The digest head as stored: the running state through `cursor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestHead {
    pub cursor: LogCursor,
    pub events: i64,
    /// 64 lowercase hex digits; `None` before the first event.
    pub digest: Option<String>,
    /// When it last moved.
    pub updated_at: Option<String>,
}

/// A head row: tx_id, position, events, digest, updated_at.
type HeadTuple = (i64, i64, i64, Option<String>, Option<String>);
/// A seal row: tx_id, position, events, digest, sealed_at, kind.
type SealTuple = (i64, i64, i64, String, String, String);

const PG_ROWS: &str = "SELECT tx_id::text::bigint AS tx_id, position, \
       CASE WHEN json_typeof(metadata->'hash') = 'string' THEN metadata->>'hash' END AS hash \
     FROM events \
     WHERE (tx_id, position) > ($1::text::xid8, $2) \
       AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY tx_id, position LIMIT $3";
const SQLITE_ROWS: &str = "SELECT 0 AS tx_id, position, \
       CASE WHEN json_valid(metadata) THEN \
         CASE WHEN json_type(metadata, '$.hash') = 'text' THEN json_extract(metadata, '$.hash') END \
       END AS hash \
     FROM events WHERE position > ?1 ORDER BY position LIMIT ?2";

const SEAL_COLUMNS: &str = "tx_id, position, events, digest, sealed_at, kind";

/// Runs a statement on either backend with `$n` placeholders (rewritten to `?n`).
macro_rules! on_store {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            Store::Postgres(PgStore { pool: $pool, .. }) => $body,
            Store::Sqlite(SqliteStore { pool: $pool, .. }) => $body,
        }
    };
}

fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

impl Store {
    /// This database's log id; `None` if its row is missing or malformed.
    pub async fn log_id(&self) -> Result<Option<LogId>, StoreError> {
        let sql = "SELECT log_id FROM log_identity WHERE id = 1";
        let text: Option<String> = on_store!(self, |pool| {
            sqlx::query_scalar(sql).fetch_optional(pool).await?
        });
        Ok(text.as_deref().and_then(LogId::from_hex))
    }

    async fn require_log_id(&self) -> Result<LogId, StoreError> {
        self.log_id().await?.ok_or_else(|| StoreError::Corrupt {
            position: 0,
            message: "the log identity (log_identity) is missing or malformed".into(),
        })
    }

    /// Up to `limit` events after `after` in [`read_after`](Store::read_after) order,
    /// with only what the digest needs.
    async fn digest_rows_after(
        &self,
        after: LogCursor,
        limit: i64,
    ) -> Result<Vec<DigestRow>, StoreError> {
        let rows: Vec<(i64, i64, Option<String>)> = match self {
            Store::Postgres(PgStore { pool, .. }) => {
                sqlx::query_as(PG_ROWS)
                    .bind(after.tx_id.to_string())
                    .bind(after.position)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                sqlx::query_as(SQLITE_ROWS)
                    .bind(after.position)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(tx_id, position, hash)| DigestRow {
                cursor: LogCursor { tx_id, position },
                hash: hash.unwrap_or_default(),
            })
            .collect())
    }

    async fn head_row(&self) -> Result<Option<DigestHead>, StoreError> {
        let sql =
            "SELECT tx_id, position, events, digest, updated_at FROM log_digest_head WHERE id = 1";
        let row: Option<HeadTuple> = on_store!(self, |pool| sqlx::query_as(sql)
            .fetch_optional(pool)
            .await?);
        Ok(
            row.map(|(tx_id, position, events, digest, updated_at)| DigestHead {
                cursor: LogCursor { tx_id, position },
                events,
                digest,
                updated_at,
            }),
        )
    }

    /// The head as a running digest (errors if it is missing or malformed).
    async fn head_state(&self, log_id: &LogId) -> Result<RunningDigest, StoreError> {
        let corrupt = |message: &str| StoreError::Corrupt {
            position: 0,
            message: format!("the log digest head {message}"),
        };
        let head = self
            .head_row()
            .await?
            .ok_or_else(|| corrupt("is missing"))?;
        let mut state = RunningDigest::genesis(log_id);
        match head.digest {
            None if head.events == 0 && head.cursor == LogCursor::START => Ok(state),
            None => Err(corrupt("has no digest")),
            Some(digest) => {
                let mut value = [0u8; 32];
                if digest.len() != 64
                    || !is_lower_hex(&digest)
                    || hex::decode_to_slice(&digest, &mut value).is_err()
                    || head.events < 0
                {
                    return Err(corrupt("is malformed"));
                }
                state.value = value;
                state.events = head.events as u64;
                state.cursor = head.cursor;
                Ok(state)
            }
        }
    }

    /// Moves the head from `from` to `to` if no other process moved it first.
    async fn compare_and_set_head(
        &self,
        from: &RunningDigest,
        to: &RunningDigest,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE log_digest_head \
                   SET tx_id = $1, position = $2, events = $3, digest = $4, updated_at = $5 \
                   WHERE id = 1 AND tx_id = $6 AND position = $7 AND events = $8";
        let now = crate::sql::fmt_time(Utc::now());
        let updated = match self {
            Store::Postgres(PgStore { pool, .. }) => sqlx::query(sql)
                .bind(to.cursor.tx_id)
                .bind(to.cursor.position)
                .bind(to.events as i64)
                .bind(to.hex())
                .bind(now)
                .bind(from.cursor.tx_id)
                .bind(from.cursor.position)
                .bind(from.events as i64)
                .execute(pool)
                .await?
                .rows_affected(),
            Store::Sqlite(sqlite) => {
                let _turn = sqlite.write_turn().await;
                sqlx::query(&sqlite_sql(sql))
                    .bind(to.cursor.tx_id)
                    .bind(to.cursor.position)
                    .bind(to.events as i64)
                    .bind(to.hex())
                    .bind(now)
                    .bind(from.cursor.tx_id)
                    .bind(from.cursor.position)
                    .bind(from.events as i64)
                    .execute(&sqlite.pool)
                    .await?
                    .rows_affected()
            }
        };
        Ok(updated == 1)
    }

    /// Extends the digest head from its cursor to the end of the log (in batches,
    /// each written with compare-and-set on the old cursor: when another process
    /// moved the head first, this one re-reads it and goes on from there). Reads the
    /// log only; never locks appends. Returns the state it reached.
    pub async fn advance_digest(&self) -> Result<RunningDigest, StoreError> {
        let log_id = self.require_log_id().await?;
        let mut head = self.head_state(&log_id).await?;
        loop {
            let rows = self.digest_rows_after(head.cursor, BATCH).await?;
            if rows.is_empty() {
                return Ok(head);
            }
            let full = rows.len() as i64 == BATCH;
            let mut next = head;
            for row in &rows {
                next.push(row.cursor, &row.hash);
            }
            if self.compare_and_set_head(&head, &next).await? {
                head = next;
                if !full {
                    return Ok(head);
                }
            } else {
                // Another process moved the head: results are deterministic, go on
                // from where it is.
                head = self.head_state(&log_id).await?;
            }
        }
    }

    async fn insert_seal(&self, state: &RunningDigest, kind: SealKind) -> Result<(), StoreError> {
        let sql = "INSERT INTO log_seals (tx_id, position, events, digest, sealed_at, kind) \
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tx_id, position) DO NOTHING";
        let now = crate::sql::fmt_time(Utc::now());
        match self {
            Store::Postgres(PgStore { pool, .. }) => {
                sqlx::query(sql)
                    .bind(state.cursor.tx_id)
                    .bind(state.cursor.position)
                    .bind(state.events as i64)
                    .bind(state.hex())
                    .bind(now)
                    .bind(kind.as_str())
                    .execute(pool)
                    .await?;
            }
            Store::Sqlite(sqlite) => {
                let _turn = sqlite.write_turn().await;
                sqlx::query(&sqlite_sql(sql))
                    .bind(state.cursor.tx_id)
                    .bind(state.cursor.position)
                    .bind(state.events as i64)
                    .bind(state.hex())
                    .bind(now)
                    .bind(kind.as_str())
                    .execute(&sqlite.pool)
                    .await?;
            }
        }
        Ok(())
    }

    async fn seal_at(&self, cursor: LogCursor) -> Result<Option<Seal>, StoreError> {
        let sql =
            format!("SELECT {SEAL_COLUMNS} FROM log_seals WHERE tx_id = $1 AND position = $2");
        let row: Option<SealTuple> = match self {
            Store::Postgres(PgStore { pool, .. }) => {
                sqlx::query_as(&sql)
                    .bind(cursor.tx_id)
                    .bind(cursor.position)
                    .fetch_optional(pool)
                    .await?
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                sqlx::query_as(&sqlite_sql(&sql))
                    .bind(cursor.tx_id)
                    .bind(cursor.position)
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(row.map(seal_from))
    }

    /// Seals on demand: extends the head to the current end of the log and records
    /// an `on_demand` seal there (idempotent: a seal already at that cursor, of any
    /// kind, is returned as it is). An empty log records nothing and returns `D_0`
    /// at position 0.
    pub async fn seal(&self) -> Result<SealedDigest, StoreError> {
        let log_id = self.require_log_id().await?;
        let state = self.advance_digest().await?;
        if state.events == 0 {
            // Nothing to seal: the empty log's digest is D_0, at position 0.
            let seal = Seal {
                cursor: LogCursor::START,
                events: 0,
                digest: state.hex(),
                sealed_at: crate::sql::fmt_time(Utc::now()),
                kind: SealKind::OnDemand.as_str().to_string(),
            };
            return Ok(SealedDigest { seal, log_id });
        }
        self.insert_seal(&state, SealKind::OnDemand).await?;
        let seal = self
            .seal_at(state.cursor)
            .await?
            .ok_or_else(|| StoreError::Corrupt {
                position: state.cursor.position,
                message: "the seal just written is missing".into(),
            })?;
        Ok(SealedDigest { seal, log_id })
    }

    /// A periodic seal at the head (after extending it); nothing when the log is
    /// empty or the head is already sealed. Returns whether a seal was written.
    pub async fn seal_periodic(&self) -> Result<bool, StoreError> {
        let state = self.advance_digest().await?;
        if state.events == 0 || self.seal_at(state.cursor).await?.is_some() {
            return Ok(false);
        }
        self.insert_seal(&state, SealKind::Periodic).await?;
        Ok(true)
    }

    /// The seals, oldest cursor first (`limit` at most, after `after`).
    pub async fn seals(&self, after: LogCursor, limit: i64) -> Result<Vec<Seal>, StoreError> {
        let sql = format!(
            "SELECT {SEAL_COLUMNS} FROM log_seals WHERE (tx_id, position) > ($1, $2) \
             ORDER BY tx_id, position LIMIT $3"
        );
        let rows: Vec<SealTuple> = match self {
            Store::Postgres(PgStore { pool, .. }) => {
                sqlx::query_as(&sql)
                    .bind(after.tx_id)
                    .bind(after.position)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            }
            Store::Sqlite(SqliteStore { pool, .. }) => {
                sqlx::query_as(&sqlite_sql(&sql))
                    .bind(after.tx_id)
                    .bind(after.position)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            }
        };
        Ok(rows.into_iter().map(seal_from).collect())
    }

    /// The digest head as stored (`None` if its row was removed).
    pub async fn digest_head(&self) -> Result<Option<DigestHead>, StoreError> {
        self.head_row().await
    }

    /// Recomputes the digest over the whole log in global order (in batches) and
    /// compares it with every seal and the head. With `target`, also returns the
    /// digest right after the event at that cursor.
    pub(crate) async fn verify_digest(
        &self,
        target: Option<LogCursor>,
    ) -> Result<(DigestReport, Option<RunningDigest>), StoreError> {
        let mut report = DigestReport {
            ok: true,
            log_id: None,
            events: 0,
            seals_checked: 0,
            head_checked: false,
            sealed_through: None,
            mismatches: 0,
            first_mismatch: None,
            external: None,
        };
        let Some(log_id) = self.log_id().await? else {
            report.mismatch(DigestMismatch {
                checkpoint: "identity".into(),
                position: 0,
                sealed_at: None,
                reason: "the log identity (log_identity) is missing or malformed; the digest \
                         cannot be recomputed"
                    .into(),
            });
            return Ok((report, None));
        };
        report.log_id = Some(log_id.to_string());

        // The checkpoints are read before the log, so every legitimate one lies within
        // what the walk will read: one beyond its end means events were removed.
        let head = self.head_row().await?;
        let last_seal: Option<LogCursor> = on_store!(self, |pool| {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT tx_id, position FROM log_seals ORDER BY tx_id DESC, position DESC LIMIT 1",
            )
            .fetch_optional(pool)
            .await?
        })
        .map(|(tx_id, position)| LogCursor { tx_id, position });
        let end = self.head().await?;
        let mut head = match head {
            Some(h) => Some(Checkpoint {
                kind: "head",
                cursor: h.cursor,
                events: h.events,
                digest: h.digest,
                sealed_at: h.updated_at,
            }),
            None => {
                report.mismatch(DigestMismatch {
                    checkpoint: "head".into(),
                    position: 0,
                    sealed_at: None,
                    reason: "the digest head row (log_digest_head) is missing".into(),
                });
                None
            }
        };
        let mut seals = SealPages {
            after: LogCursor::START,
            through: last_seal,
            page: VecDeque::new(),
            done: last_seal.is_none(),
        };

        let mut state = RunningDigest::genesis(&log_id);
        let mut captured = (target == Some(LogCursor::START)).then_some(state);
        let mut last_match: Option<i64> = None;
        'walk: loop {
            let rows = self.digest_rows_after(state.cursor, BATCH).await?;
            let full = rows.len() as i64 == BATCH;
            for row in rows {
                if row.cursor > end {
                    break 'walk;
                }
                // every checkpoint before this event covers exactly the state so far
                while let Some(checkpoint) = self.next_checkpoint(&mut seals, &mut head).await? {
                    if checkpoint.cursor < row.cursor {
                        report.check(&checkpoint, &state, &mut last_match);
                    } else {
                        seals.put_back(checkpoint, &mut head);
                        break;
                    }
                }
                state.push(row.cursor, &row.hash);
                if Some(row.cursor) == target {
                    captured = Some(state);
                }
            }
            if !full {
                break;
            }
        }
        // checkpoints at or beyond the log's last event
        while let Some(checkpoint) = self.next_checkpoint(&mut seals, &mut head).await? {
            report.check(&checkpoint, &state, &mut last_match);
        }
        report.events = state.events;
        Ok((report, captured))
    }

    /// The next seal or head in cursor order, taken out of the sources.
    async fn next_checkpoint(
        &self,
        seals: &mut SealPages,
        head: &mut Option<Checkpoint>,
    ) -> Result<Option<Checkpoint>, StoreError> {
        if seals.page.is_empty() && !seals.done {
            let page = self.seals(seals.after, SEAL_BATCH).await?;
            if (page.len() as i64) < SEAL_BATCH {
                seals.done = true;
            }
            if let Some(last) = page.last() {
                seals.after = last.cursor;
            }
            for seal in page {
                if seals.through.is_some_and(|through| seal.cursor > through) {
                    // sealed after this verification started
                    seals.done = true;
                    break;
                }
                seals.page.push_back(Checkpoint {
                    kind: "seal",
                    cursor: seal.cursor,
                    events: seal.events,
                    digest: Some(seal.digest),
                    sealed_at: Some(seal.sealed_at),
                });
            }
        }
        let head_first = match (seals.page.front(), head.as_ref()) {
            (_, None) => false,
            (None, Some(_)) => true,
            // at the same cursor the seal goes first: both are compared anyway
            (Some(seal), Some(h)) => h.cursor < seal.cursor,
        };
        Ok(if head_first {
            head.take()
        } else {
            seals.page.pop_front()
        })
    }
}

struct SealPages {
    after: LogCursor,
    /// The last seal that existed when the verification started.
    through: Option<LogCursor>,
    page: VecDeque<Checkpoint>,
    done: bool,
}

impl SealPages {
    fn put_back(&mut self, checkpoint: Checkpoint, head: &mut Option<Checkpoint>) {
        if checkpoint.kind == "head" {
            *head = Some(checkpoint);
        } else {
            self.page.push_front(checkpoint);
        }
    }
}

fn seal_from((tx_id, position, events, digest, sealed_at, kind): SealTuple) -> Seal {
    Seal {
        cursor: LogCursor { tx_id, position },
        events,
        digest,
        sealed_at,
        kind,
    }
}

impl DigestReport {
    fn mismatch(&mut self, mismatch: DigestMismatch) {
        self.ok = false;
        self.mismatches += 1;
        self.first_mismatch.get_or_insert(mismatch);
    }

    /// Compares a checkpoint with the digest recomputed through its cursor.
    fn check(
        &mut self,
        checkpoint: &Checkpoint,
        state: &RunningDigest,
        last_match: &mut Option<i64>,
    ) {
        let position = checkpoint.cursor.position;
        match checkpoint.kind {
            "head" => self.head_checked = true,
            _ => self.seals_checked += 1,
        }
        self.sealed_through = Some(self.sealed_through.map_or(position, |p| p.max(position)));
        let expected = if checkpoint.cursor == LogCursor::START && checkpoint.events == 0 {
            // the head before the first event stores no digest
            checkpoint.digest.clone().or_else(|| Some(state.hex()))
        } else {
            checkpoint.digest.clone()
        };
        let since = match last_match {
            Some(p) => format!("after position {p} (the last matching checkpoint)"),
            None => "from the start of the log".to_string(),
        };
        let what = match checkpoint.kind {
            "head" => "the digest head".to_string(),
            _ => format!("the seal through position {position}"),
        };
        let reason = if checkpoint.events != state.events as i64 {
            Some(format!(
                "{what} covers {} events, the log now has {} up to there: events were removed \
                 or inserted {since}",
                checkpoint.events, state.events
            ))
        } else if expected.as_deref() != Some(state.hex().as_str()) {
            Some(format!(
                "{what} does not match the recomputed digest: an event was changed, replaced \
                 or moved {since}"
            ))
        } else {
            None
        };
        match reason {
            None => *last_match = Some(position),
            Some(reason) => self.mismatch(DigestMismatch {
                checkpoint: checkpoint.kind.to_string(),
                position,
                sealed_at: checkpoint.sealed_at.clone(),
                reason,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_matches_a_plain_recomputation() {
        let log_id = LogId::from_hex("00112233445566778899aabbccddeeff").unwrap();
        let mut d = RunningDigest::genesis(&log_id);
        let mut expected = Sha256::new();
        expected.update(b"workflowops log digest v1");
        expected.update(hex::decode("00112233445566778899aabbccddeeff").unwrap());
        let mut value: [u8; 32] = expected.finalize().into();
        assert_eq!(d.value, value);
        for (position, hash) in [(1i64, "ab".repeat(32)), (7, String::new())] {
            d.push(LogCursor { tx_id: 9, position }, &hash);
            let mut h = Sha256::new();
            h.update(value);
            h.update((position as u64).to_be_bytes());
            h.update(hash.as_bytes());
            value = h.finalize().into();
        }
        assert_eq!(d.value, value);
        assert_eq!(d.events, 2);
        assert_eq!(d.cursor.position, 7);
    }

    #[test]
    fn external_form_round_trips_and_bad_input_is_named() {
        let text = format!("{}{}@42", "0a".repeat(16), "ff".repeat(32));
        let parsed: ExternalDigest = text.parse().unwrap();
        assert_eq!(parsed.position, 42);
        assert_eq!(parsed.to_string(), text);
        assert_eq!(
            format!("{}{}@42", "0A".repeat(16), "FF".repeat(32))
                .parse::<ExternalDigest>()
                .unwrap(),
            parsed,
            "upper case is accepted"
        );
        for (bad, says) in [
            ("nothing", "no `@`"),
            (&format!("{}@1", "ab".repeat(47)), "94 characters"),
            (&format!("{}@1", "zz".repeat(48)), "not hexadecimal"),
            (&format!("{}@-1", "ab".repeat(48)), "position"),
            (&format!("{}@", "ab".repeat(48)), "position"),
            (
                &format!("{}@99999999999999999999", "ab".repeat(48)),
                "position",
            ),
            (&format!("{}@1@2", "ab".repeat(48)), "position"),
        ] {
            let error = bad.parse::<ExternalDigest>().unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
