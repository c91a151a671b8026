//! The global reader never lets a checkpoint skip a late-committing transaction.

use std::time::{Duration, Instant};

use eventstore::{LogCursor, PgStore, Store, StoredEvent};
use sqlx::{PgPool, Postgres, Transaction};

use crate::support::TestStore;

async fn insert(tx: &mut Transaction<'_, Postgres>, aggregate_id: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('probe', $1, 1, 'probe.written', '1', '{}', '{\"recorded_at\":\"2026-01-01T00:00:00Z\"}') \
         RETURNING position",
    )
    .bind(aggregate_id)
    .fetch_one(&mut **tx)
    .await
    .unwrap()
}

fn pool(store: &Store) -> &PgPool {
    match store {
        Store::Postgres(PgStore { pool, .. }) => pool,
        Store::Sqlite(_) => unreachable!("PostgreSQL test"),
    }
}

/// Reads until `expected` events are visible (other tests' open transactions on the
/// same server may hold the horizon back for a moment).
async fn read_until(store: &Store, expected: usize) -> Vec<StoredEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = store.read_after(LogCursor::START, 100).await.unwrap();
        if events.len() >= expected || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn late_commit(commit_first: bool) {
    let t = TestStore::postgres().await;
    let pool = pool(&t.store);
    let mut tx1 = pool.begin().await.unwrap();
    let p1 = insert(&mut tx1, "late").await;
    let mut tx2 = pool.begin().await.unwrap();
    let p2 = insert(&mut tx2, "early").await;
    tx2.commit().await.unwrap();
    assert!(p1 < p2, "transaction 1 took the lower position");

    // A naive reader (position > checkpoint) sees transaction 2 now and moves its
    // checkpoint past transaction 1's position: that is the gap this reader avoids.
    let naive: Vec<i64> =
        sqlx::query_scalar("SELECT position FROM events WHERE position > 0 ORDER BY position")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(naive, vec![p2]);

    let visible = t.store.read_after(LogCursor::START, 100).await.unwrap();
    assert!(
        visible.iter().all(|e| e.position != p2),
        "transaction 2's event must wait while transaction 1 is open: {visible:?}"
    );

    if commit_first {
        tx1.commit().await.unwrap();
        let events = read_until(&t.store, 2).await;
        let positions: Vec<i64> = events.iter().map(|e| e.position).collect();
        assert_eq!(positions, vec![p1, p2], "both, transaction 1 first");
        // and a checkpoint after the first continues with the second
        let rest = t.store.read_after(events[0].cursor(), 100).await.unwrap();
        assert_eq!(
            rest.iter().map(|e| e.position).collect::<Vec<_>>(),
            vec![p2]
        );
    } else {
        tx1.rollback().await.unwrap();
        let events = read_until(&t.store, 1).await;
        assert_eq!(
            events.iter().map(|e| e.position).collect::<Vec<_>>(),
            vec![p2]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_waits_for_a_late_commit_then_returns_both() {
    late_commit(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_waits_for_a_rollback_then_returns_the_committed_one() {
    late_commit(false).await;
}
