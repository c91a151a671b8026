//! The audit trail: one row per event, in log order — who did what to which
//! aggregate, when, with which role and reason, and whether an admin overrode the
//! transition table (DOMAIN.md §1).

use crate::sql::QueryRows as _;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::event::{Decoded, Envelope};
use crate::query::{decode_cursor, page, page_size, Page, QueryError};
use crate::read_model_row;
use crate::runtime::{ApplyError, Projection};
use crate::sql::{select, write_rows, Dialect, Tx};
use eventstore::Store;

pub const NAME: &str = "audit_trail";

read_model_row! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct AuditEntry in "rm_audit" {
        pub position: i64,
        pub tenant: String,
        pub recorded_at: chrono::DateTime<chrono::Utc>,
        pub actor: String,
        pub actor_role: String,
        pub aggregate_type: String,
        pub aggregate_id: String,
        pub sequence: i64,
        pub event_type: String,
        pub from_status: Option<String>,
        pub to_status: Option<String>,
        pub reason: Option<String>,
        pub admin_override: bool,
        pub correlation_id: Option<String>,
        pub causation_id: Option<String>,
        /// The writing transaction (PostgreSQL; 0 on SQLite): log order is
        /// (tx_id, position).
        pub tx_id: i64,
    }
}

/// Append-only: a batch's entries are inserted with a plain `INSERT`, so applying an
/// event twice would fail on the primary key instead of passing unnoticed.
///
/// In a PostgreSQL rebuild's replay it writes behind ([`Projection::write_behind`],
/// decision 83): a batch's `COPY` runs on a connection of its own while the next
/// batch is applied, and the next flush waits for it. At 5,000,000 events that
/// `COPY` was the longest part of every batch.
#[derive(Default)]
pub struct AuditTrail {
    pending: Vec<AuditEntry>,
    /// Where batches are written behind, while that is on.
    behind: Option<Store>,
    /// The batch being written behind.
    writing: Option<Writing>,
    /// The batch in flight was handed over after the last commit.
    handed_over: bool,
    /// A write behind failed, or a batch was rolled back after its rows were
    /// handed over: every later flush fails.
    lost: bool,
}

/// A write behind; dropping it (a replay that stops) cancels it.
struct Writing(tokio::task::JoinHandle<Result<(), sqlx::Error>>);

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Writing {
    async fn finish(mut self) -> Result<(), sqlx::Error> {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(sqlx::Error::Protocol(format!(
                "the audit trail's write behind stopped: {error}"
            ))),
        }
    }
}

/// Writes `rows` in a transaction of their own: committed without waiting for the
/// WAL flush, which the replay's last, synchronous commit covers.
async fn write_behind(store: Store, rows: Vec<AuditEntry>) -> Result<(), sqlx::Error> {
    let mut tx = Tx::begin(&store).await?;
    if let Tx::Postgres(pg) = &mut tx {
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut **pg)
            .await?;
    }
    let refs: Vec<&AuditEntry> = rows.iter().collect();
    write_rows(&mut tx, &refs, false).await?;
    tx.commit().await
}

impl Projection for AuditTrail {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_audit"]
    }

    fn apply<'a>(
        &'a mut self,
        _tx: &'a mut Tx,
        event: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(async move {
            if let Decoded::Undecodable(error) = &event.event {
                return Err(ApplyError::Event(format!("undecodable payload: {error}")));
            }
            let stored = &event.stored;
            let change = event.status_change();
            // The override flag is in the metadata; incident events also carry it.
            let meta = &event.meta;
            let admin_override = meta.admin_override
                || event
                    .payload()
                    .and_then(|payload| payload.get("admin_override"))
                    .and_then(|v| v.as_bool())
                    == Some(true);
            self.pending.push(AuditEntry {
                position: stored.position,
                tenant: event.tenant().to_string(),
                recorded_at: event.at(),
                actor: meta.actor.clone().unwrap_or_default(),
                actor_role: meta.actor_role.clone().unwrap_or_default(),
                aggregate_type: stored.aggregate_type.clone(),
                aggregate_id: event.local_id().to_string(),
                sequence: stored.sequence,
                event_type: stored.event_type.clone(),
                from_status: change.as_ref().and_then(|(from, _)| from.clone()),
                to_status: change.map(|(_, to)| to),
                reason: meta.reason.clone(),
                admin_override,
                correlation_id: meta.correlation_id.clone(),
                causation_id: meta.causation_id.clone(),
                tx_id: stored.tx_id.unwrap_or(0),
            });
            Ok(())
        })
    }

    fn flush<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            if let Some(writing) = self.writing.take() {
                if let Err(error) = writing.finish().await {
                    self.lost = true;
                    return Err(error);
                }
            }
            if self.lost {
                return Err(sqlx::Error::Protocol(
                    "rows of the audit trail written behind were lost (a failed write, or a \
                     batch rolled back after its rows were handed over): this replay cannot \
                     go on"
                        .into(),
                ));
            }
            match &self.behind {
                Some(store) if !self.pending.is_empty() => {
                    let rows = std::mem::take(&mut self.pending);
                    let task = tokio::spawn(write_behind(store.clone(), rows));
                    self.writing = Some(Writing(task));
                    self.handed_over = true;
                    Ok(())
                }
                _ => {
                    let rows: Vec<&AuditEntry> = self.pending.iter().collect();
                    write_rows(tx, &rows, false).await
                }
            }
        })
    }

    fn committed(&mut self) {
        self.pending.clear();
        self.handed_over = false;
    }

    fn rolled_back(&mut self) {
        self.pending.clear();
        if std::mem::take(&mut self.handed_over) {
            self.lost = true;
        }
    }

    fn reset(&mut self, _empty: bool) {
        self.pending.clear();
    }

    fn write_behind(&mut self, store: Option<&Store>) {
        self.behind = store.cloned();
    }
}

/// What part of the trail to read. Times are RFC 3339; `to` is exclusive.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub aggregate_type: Option<String>,
    /// The aggregate's id without the tenant.
    pub aggregate_id: Option<String>,
    pub actor: Option<String>,
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    pub to: Option<chrono::DateTime<chrono::Utc>>,
}

/// `SELECT … WHERE` the rows of `tenant` that `filter` selects.
fn filtered(store: &Store, tenant: &str, filter: &AuditFilter) -> crate::sql::Sql {
    let mut sql = select::<AuditEntry>(Dialect::of(store));
    let t = sql.arg(tenant);
    sql.push(&format!(" WHERE tenant = {t}"));
    let text_filters = [
        ("aggregate_type", &filter.aggregate_type),
        ("aggregate_id", &filter.aggregate_id),
        ("actor", &filter.actor),
    ];
    for (column, value) in text_filters {
        if let Some(value) = value {
            let v = sql.arg(value.clone());
            sql.push(&format!(" AND {column} = {v}"));
        }
    }
    if let Some(from) = filter.from {
        let v = sql.arg(crate::sql::fmt_time(from));
        sql.push(&format!(" AND recorded_at >= {v}"));
    }
    if let Some(to) = filter.to {
        let v = sql.arg(crate::sql::fmt_time(to));
        sql.push(&format!(" AND recorded_at < {v}"));
    }
    sql
}

/// A page of `tenant`'s audit trail in log order.
pub async fn audit_trail(
    store: &Store,
    tenant: &str,
    filter: &AuditFilter,
    first: i64,
    after: Option<&str>,
) -> Result<Page<AuditEntry>, QueryError> {
    let limit = page_size(first)?;
    let mut sql = filtered(store, tenant, filter);
    if let Some(after) = after {
        let (tx_id, position): (i64, i64) = decode_cursor(after)?;
        let (a, b) = (sql.arg(tx_id), sql.arg(position));
        sql.push(&format!(" AND (tx_id, position) > ({a}, {b})"));
    }
    let l = sql.arg(limit + 1);
    sql.push(&format!(" ORDER BY tx_id, position LIMIT {l}"));
    let rows: Vec<AuditEntry> = sql.fetch(store).await?;
    Ok(page(rows, limit, |e| (e.tx_id, e.position)))
}

/// The newest `first` entries of `tenant`'s trail that `filter` selects, newest
/// first (the reverse of [`audit_trail`]'s log order): the console's live feed.
pub async fn latest(
    store: &Store,
    tenant: &str,
    filter: &AuditFilter,
    first: i64,
) -> Result<Vec<AuditEntry>, QueryError> {
    let limit = page_size(first)?;
    let mut sql = filtered(store, tenant, filter);
    let l = sql.arg(limit);
    sql.push(&format!(" ORDER BY tx_id DESC, position DESC LIMIT {l}"));
    Ok(sql.fetch(store).await?)
}
