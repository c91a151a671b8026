//! The aggregates this process loaded or committed lately, so that a load replays
//! only what was appended since (see [`crate::Store::load`]).
//!
//! Without it every command replayed its aggregate's whole stream: an environment
//! collects an event for every incident slot it reserves and releases and every
//! sync, so its commands grew slower with its history (measured: decoding the
//! environment's events was 38 % of the service's CPU under incident mutations).
//!
//! An entry is the state after the aggregate's last event as this process saw it,
//! that event's sequence and stored chain hash, and the hash before it. A load
//! reads the stream from that last event on (one indexed query, whatever the
//! history) and uses the entry only if the event is still stored with the same hash;
//! anything else (a stream rewritten or shortened under it) is a full replay, as
//! without the cache. Other processes' appends are simply the events after it. The
//! commit's checks are unchanged: the sequence key still detects a concurrent
//! writer, and the last event's hash is still checked against its content.
//!
//! Bounded by count ([`CAPACITY`], least recently used out); an aggregate's state
//! is small (its decision state, not its history).

use std::any::{Any, TypeId};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::append::Predecessor;

/// Most aggregates kept.
pub const CAPACITY: usize = 16_384;

/// An aggregate's state after its last event, as this process saw it.
#[derive(Clone)]
pub(crate) struct Cached<A> {
    pub state: A,
    pub sequence: i64,
    /// The last event's stored chain hash.
    pub last_hash: String,
    /// The hash the last event chains onto (its predecessor's, or genesis).
    pub previous_hash: String,
    /// The transaction that wrote the last event, when this process did: a
    /// command may then be decided on `state` without reading the stream, its
    /// append checking in the same statement that this event is still the row that
    /// transaction stored ([`crate::Store::load_for_command`]).
    pub written: Option<Predecessor>,
}

type Key = (TypeId, String);

#[derive(Clone)]
pub(crate) struct AggregateCache {
    entries: Arc<Mutex<LruCache<Key, Arc<dyn Any + Send + Sync>>>>,
}

impl Default for AggregateCache {
    fn default() -> Self {
        AggregateCache {
            entries: Arc::new(Mutex::new(LruCache::new(
                NonZeroUsize::new(CAPACITY).expect("non-zero capacity"),
            ))),
        }
    }
}

impl AggregateCache {
    pub fn get<A: Clone + Send + Sync + 'static>(&self, aggregate_id: &str) -> Option<Cached<A>> {
        let key = (TypeId::of::<A>(), aggregate_id.to_string());
        let entry = self.entries.lock().ok()?.get(&key).cloned()?;
        entry.downcast_ref::<Cached<A>>().cloned()
    }

    /// Whether an entry for the aggregate is kept (without touching its recency).
    pub fn contains<A: 'static>(&self, aggregate_id: &str) -> bool {
        self.entries
            .lock()
            .is_ok_and(|entries| entries.contains(&(TypeId::of::<A>(), aggregate_id.to_string())))
    }

    pub fn put<A: Clone + Send + Sync + 'static>(&self, aggregate_id: &str, mut cached: Cached<A>) {
        let key = (TypeId::of::<A>(), aggregate_id.to_string());
        if let Ok(mut entries) = self.entries.lock() {
            let kept = entries
                .peek(&key)
                .and_then(|e| e.downcast_ref::<Cached<A>>());
            // An older state never replaces a newer one (a slow load finishing after
            // a commit).
            if kept.is_some_and(|e| e.sequence > cached.sequence) {
                return;
            }
            // A load that read the same last event keeps which transaction of this
            // process wrote it (the append checks that row against the stored one anyway).
            if let Some(kept) =
                kept.filter(|e| e.sequence == cached.sequence && e.last_hash == cached.last_hash)
            {
                if cached.written.is_none() {
                    cached.written = kept.written.clone();
                }
            }
            entries.put(key, Arc::new(cached));
        }
    }

    pub fn forget<A: 'static>(&self, aggregate_id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.pop(&(TypeId::of::<A>(), aggregate_id.to_string()));
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }
}
