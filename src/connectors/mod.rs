//! The outside world: n8n instances and Git repositories, over HTTP (or a local
//! working copy). Every failure is an [`UpstreamError`] that says what failed and
//! whether retrying may help, and never carries a secret (API keys and tokens stay
//! inside the clients; URLs in messages are shown without credentials or query).

pub mod git;
pub mod n8n;
pub mod retry;

use std::time::Duration;

pub use retry::RetryPolicy;

/// Why a call to n8n or Git failed (`UPSTREAM` for clients).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The credentials were refused (401/403).
    #[error("{service} refused the credentials ({status})")]
    Unauthorized { service: &'static str, status: u16 },
    /// The object does not exist there (404).
    #[error("{service}: {what} not found")]
    NotFound { service: &'static str, what: String },
    /// The service rejected the request (another 4xx): not retried.
    #[error("{service} rejected the request ({status}): {message}")]
    Rejected {
        service: &'static str,
        status: u16,
        message: String,
    },
    /// Rate limited (429) and still limited after the retries.
    #[error("{service} is rate limiting requests (429)")]
    RateLimited { service: &'static str },
    /// A 5xx, still failing after the retries.
    #[error("{service} failed ({status})")]
    Unavailable { service: &'static str, status: u16 },
    /// No answer within the timeout, after the retries.
    #[error("{service} did not answer within {timeout:?}")]
    Timeout {
        service: &'static str,
        timeout: Duration,
    },
    /// Could not connect (refused, DNS, TLS).
    #[error("{service} is unreachable: {message}")]
    Unreachable {
        service: &'static str,
        message: String,
    },
    /// The answer was not what the API documents (malformed JSON, missing fields).
    #[error("{service} sent an unexpected answer: {message}")]
    Malformed {
        service: &'static str,
        message: String,
    },
    /// A local operation failed (the Git working copy).
    #[error("{service}: {message}")]
    Local {
        service: &'static str,
        message: String,
    },
}

impl UpstreamError {
    /// Whether the same call may succeed later (DOMAIN.md §8: `UPSTREAM` is
    /// retryable when transient).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            UpstreamError::RateLimited { .. }
                | UpstreamError::Unavailable { .. }
                | UpstreamError::Timeout { .. }
                | UpstreamError::Unreachable { .. }
        )
    }
}
