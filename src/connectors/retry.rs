//! The one retry loop of every outbound call (n8n and GitHub).
//!
//! Each attempt gets [`RetryPolicy::timeout`]; there are at most
//! [`RetryPolicy::attempts`]. The connector says what one failed attempt means (a
//! [`Failure`]): whether another attempt may help and whether the server asked for a
//! wait. The rules both connectors follow for HTTP are here too
//! ([`retryable_status`], [`asked_wait`]): timeouts, 429 (waiting `Retry-After`, in
//! seconds or as an HTTP date) and 5xx are retried, with exponential backoff and full
//! jitter when the server names no wait; no other 4xx ever is. A wait longer than
//! [`RetryPolicy::max_delay`] is capped or fails the call, as the connector chooses
//! ([`LongWait`]).
//!
//! A small loop of our own rather than a crate such as `backon`: what is needed is
//! full jitter, a server-chosen wait per attempt, a per-attempt timeout and a
//! per-attempt decision that depends on what earlier attempts may have done (an n8n
//! create is not repeated once it may have reached n8n); `backon` only adds jitter
//! on top of the delay and leaves the rest to the caller.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, SystemTime};

/// Timeouts and retries of every outbound call.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubled each retry, with full jitter.
    pub base_delay: Duration,
    /// Longest wait between attempts. A `Retry-After` within it is honoured; n8n's
    /// longer ones are capped at it, while GitHub's longer ones fail the call at once
    /// (`RateLimited`, retryable later): GitHub penalizes retrying before its reset.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            timeout: Duration::from_secs(10),
            attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): exponential with full jitter
    /// (uniform between zero and `base_delay · 2^(retry-1)`, capped at `max_delay`).
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let cap = exp.min(self.max_delay);
        let jitter = rand::random::<f64>();
        cap.mul_f64(jitter)
    }
}

/// What to do when the server asks for a wait longer than `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongWait {
    /// Wait `max_delay`, then retry.
    Cap,
    /// Fail the call now with the attempt's error.
    Fail,
}

/// One failed attempt.
#[derive(Debug)]
pub struct Failure<E> {
    pub error: E,
    /// Whether another attempt may help.
    pub retry: bool,
    /// The wait the server asked for (`Retry-After`, a rate limit's reset).
    pub asked_wait: Option<Duration>,
}

impl<E> Failure<E> {
    /// A failure that no retry can mend.
    pub fn permanent(error: E) -> Failure<E> {
        Failure {
            error,
            retry: false,
            asked_wait: None,
        }
    }

    /// A failure that may pass, after `asked_wait` if the server named one.
    pub fn transient(error: E, asked_wait: Option<Duration>) -> Failure<E> {
        Failure {
            error,
            retry: true,
            asked_wait,
        }
    }
}

/// Whether an HTTP status may be retried: 429 and 5xx; never another 4xx.
pub fn retryable_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// The wait a server asks for with `Retry-After` on a 429 or a 503 (RFC 6585 §4,
/// RFC 9110 §10.2.3); `None` for other statuses or a value that does not parse.
pub fn asked_wait(status: u16, retry_after: Option<&str>) -> Option<Duration> {
    match status {
        429 | 503 => parse_retry_after(retry_after?, SystemTime::now()),
        _ => None,
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (IMF-fixdate, RFC 850 or asctime);
/// a date before `now` is no wait.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Runs `attempt` (given the attempt number, from 1) until it succeeds, fails for
/// good or the attempts run out; returns the last error. An attempt that takes
/// longer than the policy's timeout is dropped and counts as `timed_out`'s failure.
/// Waits between attempts: the server's wait if it asked for one (handled per
/// `long_wait` when above `max_delay`), else [`RetryPolicy::backoff`].
pub async fn run<T, E, F, Fut>(
    policy: &RetryPolicy,
    long_wait: LongWait,
    mut timed_out: impl FnMut(u32) -> Failure<E>,
    mut attempt: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    let attempts = policy.attempts.max(1);
    let mut number = 1;
    loop {
        let failure = match tokio::time::timeout(policy.timeout, attempt(number)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(failure)) => failure,
            Err(_) => timed_out(number),
        };
        if !failure.retry || number >= attempts {
            tracing::debug!(attempt = number, error = %failure.error, "call failed");
            return Err(failure.error);
        }
        let wait = match failure.asked_wait {
            Some(wait) if wait > policy.max_delay => match long_wait {
                LongWait::Cap => policy.max_delay,
                LongWait::Fail => {
                    tracing::debug!(
                        attempt = number,
                        error = %failure.error,
                        wait_ms = wait.as_millis() as u64,
                        "asked to wait longer than max_delay; giving up"
                    );
                    return Err(failure.error);
                }
            },
            Some(wait) => wait,
            None => policy.backoff(number),
        };
        tracing::debug!(
            attempt = number,
            error = %failure.error,
            wait_ms = wait.as_millis() as u64,
            "call failed; retrying"
        );
        tokio::time::sleep(wait).await;
        number += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// What a test's upstream said when it failed.
    #[derive(Debug, PartialEq, Eq, thiserror::Error)]
    #[error("{0}")]
    struct Said(String);

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            timeout: Duration::from_millis(200),
            attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(50),
        }
    }

    #[test]
    fn statuses() {
        assert!(retryable_status(429) && retryable_status(500) && retryable_status(503));
        assert!(retryable_status(599));
        for status in [200, 301, 400, 401, 403, 404, 409, 422, 600] {
            assert!(!retryable_status(status), "{status}");
        }
        assert_eq!(asked_wait(429, Some("7")), Some(Duration::from_secs(7)));
        assert_eq!(asked_wait(503, Some(" 2 ")), Some(Duration::from_secs(2)));
        assert_eq!(asked_wait(500, Some("7")), None);
        assert_eq!(asked_wait(429, None), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_every_http_date_form() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:00 GMT").unwrap();
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(date, now),
                Some(Duration::from_secs(37)),
                "{date}"
            );
        }
        let later = now + Duration::from_secs(3600);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", later),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn backoff_is_full_jitter_under_the_cap() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        for retry in 1..40 {
            let cap = Duration::from_millis(100 << (retry - 1).min(4)).min(policy.max_delay);
            let wait = policy.backoff(retry);
            assert!(wait <= cap, "retry {retry}: {wait:?} > {cap:?}");
        }
        // Full jitter: over many draws some are well below half the cap.
        assert!((0..200).any(|_| policy.backoff(1) < Duration::from_millis(40)));
    }

    #[tokio::test]
    async fn retries_transient_failures_until_success() {
        let calls = AtomicU32::new(0);
        let result: Result<u32, Said> = run(
            &policy(4),
            LongWait::Fail,
            |_| Failure::transient(Said("timeout".to_string()), None),
            |n| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 3 {
                        Err(Failure::transient(Said(format!("503 #{n}")), None))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(result, Ok(3));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn stops_at_a_permanent_failure_and_after_the_last_attempt() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Said> = run(
            &policy(4),
            LongWait::Fail,
            |_| Failure::transient(Said("timeout".to_string()), None),
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Failure::permanent(Said("404".to_string()))) }
            },
        )
        .await;
        assert_eq!(result, Err(Said("404".to_string())));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let result: Result<(), Said> = run(
            &policy(3),
            LongWait::Fail,
            |_| Failure::transient(Said("timeout".to_string()), None),
            |n| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { Err(Failure::transient(Said(format!("500 #{n}")), None)) }
            },
        )
        .await;
        assert_eq!(result, Err(Said("500 #3".to_string())));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn times_out_each_attempt() {
        let started = std::time::Instant::now();
        let result: Result<(), Said> = run(
            &policy(2),
            LongWait::Fail,
            |n| Failure::transient(Said(format!("timeout #{n}")), None),
            |_| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            },
        )
        .await;
        assert_eq!(result, Err(Said("timeout #2".to_string())));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn long_waits_are_capped_or_fail() {
        let long = Some(Duration::from_secs(3600));
        let calls = AtomicU32::new(0);
        let result: Result<(), Said> = run(
            &policy(2),
            LongWait::Fail,
            |_| Failure::transient(Said("timeout".to_string()), None),
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { Err(Failure::transient(Said("429".to_string()), long)) }
            },
        )
        .await;
        assert_eq!(result, Err(Said("429".to_string())));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "failed without sleeping");

        let started = std::time::Instant::now();
        let result: Result<u32, Said> = run(
            &policy(2),
            LongWait::Cap,
            |_| Failure::transient(Said("timeout".to_string()), None),
            |n| async move {
                if n == 1 {
                    Err(Failure::transient(Said("429".to_string()), long))
                } else {
                    Ok(n)
                }
            },
        )
        .await;
        assert_eq!(result, Ok(2));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
    }
}
