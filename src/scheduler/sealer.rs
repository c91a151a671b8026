//! The log digest's keeper in `serve`: extends the digest head as events arrive and
//! seals it periodically (see `eventstore::digest`).
//!
//! Woken by new events (the store's wakeup: this process's appends, and `NOTIFY` on
//! PostgreSQL), at most every [`MIN_GAP`], with a [`POLL`] fallback. It only reads the
//! log and writes its own two tables, so appends never wait for it. Several service
//! processes on one PostgreSQL database each run one: the head moves by
//! compare-and-set on its cursor and the result is deterministic, so a process that
//! lost the race just re-reads the head and goes on.

use std::time::Duration;

use tokio::time::Instant;

use eventstore::Store;

/// Shortest time between two extensions of the head.
pub const MIN_GAP: Duration = Duration::from_millis(250);
/// Longest wait for new events before looking anyway.
pub const POLL: Duration = Duration::from_secs(1);
/// Wait after a failure (database away, corrupt head) before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// Starts the sealer; it runs until the returned handle is aborted. `seal_every`:
/// the seal interval (`None`: no periodic seals, the head is still kept).
pub fn start(store: Store, seal_every: Option<Duration>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(store, seal_every))
}

async fn run(store: Store, seal_every: Option<Duration>) {
    let mut wakeup = None;
    let mut next_seal = seal_every.map(|every| Instant::now() + every);
    let mut warned = false;
    loop {
        let started = Instant::now();
        if wakeup.is_none() {
            match store.wakeup().await {
                Ok(w) => wakeup = Some(w),
                Err(error) => tracing::warn!(%error, "log sealer: no wakeup; polling"),
            }
        }
        let mut failed = false;
        if let Err(error) = store.advance_digest().await {
            failed = true;
            if !warned {
                tracing::warn!(%error, "log sealer could not extend the digest; retrying");
            }
        }
        if let (Some(at), Some(every)) = (next_seal, seal_every) {
            if !failed && Instant::now() >= at {
                match store.seal_periodic().await {
                    Ok(sealed) => tracing::debug!(sealed, "log digest sealed"),
                    Err(error) => {
                        failed = true;
                        tracing::warn!(%error, "log sealer could not seal the digest");
                    }
                }
                next_seal = Some(Instant::now() + every);
            }
        }
        // One warning per failure streak, not one per second.
        warned = failed;
        if failed {
            wakeup = None;
            tokio::time::sleep(RETRY).await;
            continue;
        }
        let mut max = POLL;
        if let Some(at) = next_seal {
            max = max.min(at.saturating_duration_since(Instant::now()));
        }
        match wakeup.as_mut() {
            Some(w) => {
                w.wait(max).await;
            }
            None => tokio::time::sleep(max).await,
        }
        let elapsed = started.elapsed();
        if elapsed < MIN_GAP {
            tokio::time::sleep(MIN_GAP - elapsed).await;
        }
    }
}
