//! The clock commands are issued by.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// The time commands are issued at: the server's clock, plus an offset that only
/// tests move (to reach SLA steps and retention ages without waiting for them).
#[derive(Clone, Default)]
pub struct Clock {
    offset_micros: Arc<std::sync::atomic::AtomicI64>,
}

impl Clock {
    /// Now, at the microsecond precision both backends keep.
    pub fn now(&self) -> DateTime<Utc> {
        let offset = self
            .offset_micros
            .load(std::sync::atomic::Ordering::Relaxed);
        let now = Utc::now().timestamp_micros().saturating_add(offset);
        DateTime::from_timestamp_micros(now).unwrap_or_else(Utc::now)
    }

    /// Moves this clock (and every clone of it) forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        let micros = by.num_microseconds().unwrap_or(i64::MAX);
        self.offset_micros
            .fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
    }
}
