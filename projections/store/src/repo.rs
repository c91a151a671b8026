//! One cqrs-es repository type over both backends, private to the store and used
//! only to load (`persist` is never called: [`crate::Store::commit`] writes).

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlite_es::SqliteEventRepository;

/// postgres-es or sqlite-es, chosen by the configured database URL.
pub(crate) enum AnyRepository {
    Postgres(PostgresEventRepository),
    Sqlite(SqliteEventRepository),
}

impl PersistedEventRepository for AnyRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            AnyRepository::Postgres(r) => r.get_events::<A>(aggregate_id).await,
            AnyRepository::Sqlite(r) => r.get_events::<A>(aggregate_id).await,
        }
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            AnyRepository::Postgres(r) => r.get_last_events::<A>(aggregate_id, last_sequence).await,
            AnyRepository::Sqlite(r) => r.get_last_events::<A>(aggregate_id, last_sequence).await,
        }
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        match self {
            AnyRepository::Postgres(r) => r.get_snapshot::<A>(aggregate_id).await,
            AnyRepository::Sqlite(r) => r.get_snapshot::<A>(aggregate_id).await,
        }
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        match self {
            AnyRepository::Postgres(r) => r.persist::<A>(events, snapshot_update).await,
            AnyRepository::Sqlite(r) => r.persist::<A>(events, snapshot_update).await,
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        match self {
            AnyRepository::Postgres(r) => r.stream_events::<A>(aggregate_id).await,
            AnyRepository::Sqlite(r) => r.stream_events::<A>(aggregate_id).await,
        }
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        match self {
            AnyRepository::Postgres(r) => r.stream_all_events::<A>().await,
            AnyRepository::Sqlite(r) => r.stream_all_events::<A>().await,
        }
    }
}

const FROM_SEQUENCE_PG: &str = "SELECT aggregate_type, aggregate_id, sequence, event_type, \
    event_version, payload, metadata FROM events \
    WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence >= $3 ORDER BY sequence";
const FROM_SEQUENCE_SQLITE: &str = "SELECT aggregate_type, aggregate_id, sequence, event_type, \
    event_version, payload, metadata FROM events \
    WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND sequence >= ?3 ORDER BY sequence";

/// One stored event as cqrs-es's repositories hand it out.
fn serialized<'r, R>(row: &'r R) -> Result<SerializedEvent, sqlx::Error>
where
    R: sqlx::Row,
    &'r str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Value: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(SerializedEvent::new(
        row.try_get("aggregate_id")?,
        row.try_get::<i64, _>("sequence")? as usize,
        row.try_get("aggregate_type")?,
        row.try_get("event_type")?,
        row.try_get("event_version")?,
        row.try_get("payload")?,
        row.try_get("metadata")?,
    ))
}

impl crate::Store {
    /// The events of one aggregate from sequence `from` on, in order. One statement
    /// text whatever `from` is (cqrs-es's `get_last_events` writes the sequence into
    /// the SQL, so every length of stream would be a statement of its own to
    /// prepare).
    pub(crate) async fn events_from(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from: i64,
    ) -> Result<Vec<SerializedEvent>, sqlx::Error> {
        match self {
            crate::Store::Postgres(crate::PgStore { pool, .. }) => {
                let rows = sqlx::query(FROM_SEQUENCE_PG)
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(from)
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(serialized).collect()
            }
            crate::Store::Sqlite(crate::SqliteStore { pool, .. }) => {
                let rows = sqlx::query(FROM_SEQUENCE_SQLITE)
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(from)
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(serialized).collect()
            }
        }
    }
}
