//! The live event stream behind the `events` subscription and `GET /events`.
//!
//! One tail task per process follows the global log (woken by appends and, on
//! PostgreSQL, by `NOTIFY` from other processes) while at least one stream is open,
//! and broadcasts each batch it reads together with the cursor the batch follows.
//! With no stream open it reads nothing and listens to nothing, and starts again from
//! the head (announcing it with an empty batch there). A subscriber first catches up
//! from the store from its own cursor, then takes broadcast batches that continue
//! exactly where it stands. A batch that starts beyond its cursor (it lagged, or raced the tail)
//! sends it back to the store, so a stream never has a gap; events at or before its
//! cursor are skipped, so it never repeats one. The order is the log's commit-safe
//! order ([`Store::read_after`]), the same the projector uses.

use std::sync::Arc;
use std::time::Duration;

use aggregates::kernel::ids::{AggregateId, TenantId};
use futures::Stream;
use tokio::sync::{broadcast, mpsc};

use eventstore::{LogCursor, Store, StoreError, StoredEvent};

/// Events read from the store per query.
const READ_BATCH: i64 = 500;
/// Broadcast batches a subscriber may fall behind before it reads from the store.
const LIVE_CAPACITY: usize = 1024;
/// Events buffered per subscriber before its reader waits for the client.
const SUBSCRIBER_BUFFER: usize = 256;
/// Longest a tail waits without a wake-up before it polls the log.
const POLL: Duration = Duration::from_millis(500);

/// Events that directly follow `after` in log order.
struct Batch {
    after: LogCursor,
    events: Vec<Arc<StoredEvent>>,
}

/// Which events a subscriber wants. The tenant is the verified token's.
#[derive(Debug, Clone)]
pub struct Filter {
    pub tenant: TenantId,
    pub aggregate_types: Option<Vec<String>>,
    /// The local id (without the tenant prefix).
    pub aggregate_id: Option<String>,
}

impl Filter {
    fn matches(&self, event: &StoredEvent) -> bool {
        event.tenant() == self.tenant.as_str()
            && self
                .aggregate_types
                .as_ref()
                .is_none_or(|types| types.contains(&event.aggregate_type))
            && self
                .aggregate_id
                .as_ref()
                .is_none_or(|id| local_id(&event.aggregate_id) == *id)
    }
}

/// A stored aggregate id as clients see it: without its tenant. An id that does not
/// parse is shown as stored (a damaged event is still listed, never hidden).
pub fn local_id(aggregate_id: &str) -> String {
    match AggregateId::parse(aggregate_id) {
        Ok(id) => id.local().to_string(),
        Err(_) => aggregate_id.to_string(),
    }
}

/// Why a stream could not start or continue.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("no event at position {0}")]
    UnknownPosition(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct EventFeed {
    store: Store,
    live: broadcast::Sender<Arc<Batch>>,
    /// Set on shutdown: every stream ends, so connections can drain.
    closing: tokio::sync::watch::Sender<bool>,
    /// Wakes an idle tail when a stream starts.
    subscribed: Arc<tokio::sync::Notify>,
}

impl EventFeed {
    /// Starts the tail task; it stops when the returned handle is aborted.
    pub fn start(store: Store) -> (EventFeed, tokio::task::JoinHandle<()>) {
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let (closing, _) = tokio::sync::watch::channel(false);
        let feed = EventFeed {
            store,
            live,
            closing,
            subscribed: Default::default(),
        };
        let tail = tokio::spawn(feed.clone().tail());
        (feed, tail)
    }

    async fn tail(self) {
        let mut wakeup = None;
        let mut cursor = None;
        loop {
            if let Err(error) = self.tail_step(&mut wakeup, &mut cursor).await {
                tracing::warn!(%error, "event feed could not read the log; retrying");
                wakeup = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn tail_step(
        &self,
        wakeup: &mut Option<eventstore::Wakeup>,
        cursor: &mut Option<LogCursor>,
    ) -> Result<(), StoreError> {
        if self.live.receiver_count() == 0 {
            // Nobody follows: reading the log would serve nobody (it was a read of
            // every event after every append). A stream that starts catches up from
            // the store, and meets the tail where it reads again, from the head.
            *cursor = None;
            // Nor does the idle tail hold a listener: on PostgreSQL that is a pool
            // connection taken for good, and `Store::close` waits for it.
            *wakeup = None;
            let _ = tokio::time::timeout(POLL, self.subscribed.notified()).await;
            return Ok(());
        }
        if wakeup.is_none() {
            // (before the head is read: an append after that read wakes the tail)
            *wakeup = Some(self.store.wakeup().await?);
        }
        let after = match *cursor {
            Some(cursor) => cursor,
            None => {
                // Starting again from the head: a stream that caught up to an earlier
                // cursor would otherwise wait for a batch after the head, and miss
                // what was appended in between until the next append. An empty batch
                // at the head sends it back to the store for that stretch.
                let head = *cursor.insert(self.store.head().await?);
                let _ = self.live.send(Arc::new(Batch {
                    after: head,
                    events: Vec::new(),
                }));
                head
            }
        };
        let events = self.store.read_after(after, READ_BATCH).await?;
        match events.last() {
            Some(last) => {
                *cursor = Some(last.cursor());
                let full = events.len() as i64 == READ_BATCH;
                let events = events.into_iter().map(Arc::new).collect();
                // No receiver is fine: nobody is subscribed right now.
                let _ = self.live.send(Arc::new(Batch { after, events }));
                if !full {
                    wait(wakeup).await;
                }
            }
            None => {
                if let Some(w) = wakeup.as_mut() {
                    w.nothing_read();
                }
                wait(wakeup).await
            }
        }
        Ok(())
    }

    /// Ends every open stream (the service is shutting down).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// The cursor right after the event at global `position` (0 = the beginning).
    pub async fn cursor_after(&self, position: i64) -> Result<LogCursor, FeedError> {
        self.store
            .cursor_after_position(position)
            .await?
            .ok_or(FeedError::UnknownPosition(position))
    }

    /// Every event matching `filter` after `from`, in log order, then live. The
    /// stream ends with an error item if the store fails.
    pub fn subscribe(
        &self,
        from: LogCursor,
        filter: Filter,
    ) -> impl Stream<Item = Result<Arc<StoredEvent>, FeedError>> + Send + 'static {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let live = self.live.subscribe();
        self.subscribed.notify_one();
        let store = self.store.clone();
        let mut closing = self.closing.subscribe();
        tokio::spawn(async move {
            let closed = tx.clone();
            tokio::select! {
                result = follow(store, live, from, &filter, &tx) => {
                    if let Err(error) = result {
                        let _ = tx.send(Err(error)).await;
                    }
                }
                () = closed.closed() => {}
                () = async { let _ = closing.wait_for(|closing| *closing).await; } => {}
            }
        });
        tokio_stream_from(rx)
    }
}

async fn wait(wakeup: &mut Option<eventstore::Wakeup>) {
    if let Some(wakeup) = wakeup.as_mut() {
        wakeup.wait(POLL).await;
    }
}

type Sink = mpsc::Sender<Result<Arc<StoredEvent>, FeedError>>;

/// Catch up from the store, then follow the broadcast; back to the store on any gap.
/// Returns `Ok` when the subscriber went away.
async fn follow(
    store: Store,
    mut live: broadcast::Receiver<Arc<Batch>>,
    mut cursor: LogCursor,
    filter: &Filter,
    tx: &Sink,
) -> Result<(), FeedError> {
    loop {
        // catch up: the receiver already exists, so nothing broadcast from here is missed
        loop {
            let events = store.read_after(cursor, READ_BATCH).await?;
            let Some(last) = events.last() else { break };
            cursor = last.cursor();
            for event in events {
                if filter.matches(&event) && tx.send(Ok(Arc::new(event))).await.is_err() {
                    return Ok(());
                }
            }
        }
        // live: batches that continue at (or before) the cursor
        loop {
            let batch = match live.recv().await {
                Ok(batch) => batch,
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            };
            if batch.after > cursor {
                break; // a gap: read it from the store
            }
            for event in &batch.events {
                let at = event.cursor();
                if at <= cursor {
                    continue;
                }
                cursor = at;
                if filter.matches(event) && tx.send(Ok(event.clone())).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    })
}

/// An event as integrations receive it (the SSE stream, NATS, webhooks): the same
/// fields as the GraphQL `Event`, the aggregate id without the tenant.
pub fn event_json(event: &eventstore::StoredEvent) -> serde_json::Value {
    serde_json::json!({
        "position": event.position,
        "aggregateType": event.aggregate_type,
        "aggregateId": local_id(&event.aggregate_id),
        "sequence": event.sequence,
        "eventType": event.event_type,
        "eventVersion": event.event_version,
        "payload": event.payload,
        "metadata": event.metadata,
        "recordedAt": event.recorded_at,
        "hash": event.hash(),
    })
}
