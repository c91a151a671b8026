//! Errors as clients see them (DOMAIN.md §8): a message and `extensions.code`, plus
//! `from`, `to` and `allowed` for `INVALID_TRANSITION`, `field` for `VALIDATION` and
//! `retryable` always. Internal failures are logged with their cause; the client gets
//! a generic message, and the HTTP layer adds the request id to it.

use aggregates::kernel::error::{DomainError, ErrorCode};
use async_graphql::ErrorExtensions;

use crate::command::bus::CommandError;
use crate::http::feed::FeedError;
use eventstore::StoreError;
use projections::query::QueryError;
use projections::runtime::WaitError;

pub type ApiResult<T> = Result<T, ApiError>;

/// The message an internal error shows (the HTTP layer appends the request id).
pub const INTERNAL_MESSAGE: &str = "internal error";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Wait(#[from] WaitError),
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Unauthenticated(String),
    #[error(transparent)]
    Secret(#[from] crate::storage::secrets::SecretError),
    /// n8n or Git failed.
    #[error(transparent)]
    Upstream(#[from] crate::connectors::UpstreamError),
    /// The schema was built without the application context (only the SDL printer
    /// does that).
    #[error("the schema has no application context")]
    NoContext,
    /// The promotion was recorded as failed: a blocking gate did not pass.
    #[error("promotion {promotion_id} blocked by: {}", blocked(.results))]
    GateBlocked {
        promotion_id: String,
        position: Option<i64>,
        results: Vec<aggregates::promotion::GateResult>,
    },
}

fn blocked(results: &[aggregates::promotion::GateResult]) -> String {
    results
        .iter()
        .filter(|r| r.blocking && !r.passed)
        .map(|r| r.gate.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl ApiError {
    pub fn validation(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Domain(DomainError::validation(field, message))
    }

    pub fn not_found(kind: &'static str, id: impl Into<String>) -> ApiError {
        ApiError::Domain(DomainError::NotFound {
            kind,
            id: id.into(),
        })
    }

    /// The domain refusal inside, if any.
    fn refusal(&self) -> Option<&DomainError> {
        match self {
            ApiError::Command(CommandError::Refused(e)) | ApiError::Domain(e) => Some(e),
            _ => None,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Command(e) => e.code(),
            ApiError::Domain(e) => e.code(),
            ApiError::Query(QueryError::Validation { .. }) => ErrorCode::Validation,
            ApiError::Wait(WaitError::UnknownPosition(_))
            | ApiError::Feed(FeedError::UnknownPosition(_)) => ErrorCode::Validation,
            ApiError::Wait(WaitError::Timeout { .. }) => ErrorCode::Conflict,
            ApiError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            ApiError::GateBlocked { .. } => ErrorCode::GateBlocked,
            ApiError::Upstream(_) => ErrorCode::Upstream,
            ApiError::Query(QueryError::Store(_))
            | ApiError::Wait(_)
            | ApiError::Feed(FeedError::Store(_))
            | ApiError::Store(_)
            | ApiError::Secret(_)
            | ApiError::NoContext => ErrorCode::Internal,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            ApiError::Command(e) => e.retryable(),
            ApiError::Domain(e) => e.retryable(),
            // the read model is behind: the same query succeeds a little later
            ApiError::Wait(WaitError::Timeout { .. }) => true,
            ApiError::Upstream(e) => e.retryable(),
            _ => false,
        }
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        let code = error.code();
        if code == ErrorCode::Internal {
            tracing::error!(cause = %error, "request failed");
            return async_graphql::Error::new(INTERNAL_MESSAGE).extend_with(|_, e| {
                e.set("code", code.as_str());
                e.set("retryable", false);
            });
        }
        let message = match &error {
            ApiError::Wait(WaitError::UnknownPosition(p))
            | ApiError::Feed(FeedError::UnknownPosition(p)) => {
                format!("no event at position {p}")
            }
            ApiError::Query(QueryError::Validation { field, message }) => {
                format!("{}: {message}", camel(field))
            }
            ApiError::Domain(DomainError::Validation { field, message })
            | ApiError::Command(CommandError::Refused(DomainError::Validation {
                field,
                message,
            })) => format!("{}: {message}", camel(field)),
            other => other.to_string(),
        };
        let retryable = error.retryable();
        let refusal = error.refusal().cloned();
        let gate_blocked = match &error {
            ApiError::GateBlocked {
                promotion_id,
                position,
                results,
            } => Some((
                promotion_id.clone(),
                *position,
                serde_json::to_value(results).unwrap_or_default(),
            )),
            _ => None,
        };
        let query_field = match &error {
            ApiError::Query(QueryError::Validation { field, .. }) => Some(camel(field)),
            _ => None,
        };
        async_graphql::Error::new(message).extend_with(move |_, e| {
            e.set("code", code.as_str());
            e.set("retryable", retryable);
            match &refusal {
                Some(DomainError::InvalidTransition {
                    machine,
                    from,
                    to,
                    allowed,
                }) => {
                    e.set("machine", *machine);
                    e.set("from", from.as_str());
                    e.set("to", to.as_str());
                    e.set("allowed", allowed.clone());
                }
                Some(DomainError::Validation { field, .. }) => e.set("field", camel(field)),
                Some(DomainError::NotFound { kind, id }) => {
                    e.set("kind", *kind);
                    e.set("id", id.as_str());
                }
                _ => {}
            }
            if let Some((promotion_id, position, results)) = &gate_blocked {
                e.set("promotionId", promotion_id.as_str());
                e.set("position", *position);
                if let Ok(results) = async_graphql::Value::from_json(results.clone()) {
                    e.set("gateResults", results);
                }
            }
            if let Some(field) = &query_field {
                e.set("field", field.as_str());
            }
        })
    }
}

/// `resolution_type` → `resolutionType`: fields named as the API names them.
fn camel(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_transition_carries_from_to_allowed() {
        let error: async_graphql::Error = ApiError::Domain(DomainError::InvalidTransition {
            machine: "incident",
            from: "stabilized".into(),
            to: "acknowledged".into(),
            allowed: vec!["reconciled".into(), "closed".into()],
        })
        .into();
        let ext = serde_json::to_value(error.extensions.unwrap()).unwrap();
        assert_eq!(ext["code"], "INVALID_TRANSITION");
        assert_eq!(ext["from"], "stabilized");
        assert_eq!(ext["to"], "acknowledged");
        assert_eq!(ext["allowed"], serde_json::json!(["reconciled", "closed"]));
        assert_eq!(ext["retryable"], false);
        assert_eq!(
            error.message,
            "cannot move incident from stabilized to acknowledged"
        );
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let error: async_graphql::Error = ApiError::Store(StoreError::Corrupt {
            position: 7,
            message: "secret detail".into(),
        })
        .into();
        assert_eq!(error.message, INTERNAL_MESSAGE);
        let ext = serde_json::to_value(error.extensions.unwrap()).unwrap();
        assert_eq!(ext["code"], "INTERNAL");
    }

    #[test]
    fn validation_names_the_api_field() {
        let error: async_graphql::Error =
            ApiError::validation("resolution_type", "is required").into();
        assert_eq!(error.message, "resolutionType: is required");
        let ext = serde_json::to_value(error.extensions.unwrap()).unwrap();
        assert_eq!(ext["code"], "VALIDATION");
        assert_eq!(ext["field"], "resolutionType");
    }
}
