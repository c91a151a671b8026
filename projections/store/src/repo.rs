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
