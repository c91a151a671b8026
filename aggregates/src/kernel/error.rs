//! The errors a client can see when the domain refuses a command (DOMAIN.md §8).
//!
//! All aggregates share one error vocabulary: the codes are fixed by the API contract,
//! and per-aggregate enums would repeat the same variants six times. Each variant is
//! structured (no stringly-typed errors), and [`DomainError::code`] maps it to its code.

use serde::Serialize;

/// Error codes of the API contract (DOMAIN.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidTransition,
    Validation,
    NotFound,
    Conflict,
    Forbidden,
    Unauthenticated,
    Upstream,
    ApprovalRequired,
    GateBlocked,
    /// Not a refusal: the command could not be recorded. Clients see a generic message.
    Internal,
}

impl ErrorCode {
    /// The code as clients see it (`INVALID_TRANSITION`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidTransition => "INVALID_TRANSITION",
            ErrorCode::Validation => "VALIDATION",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Upstream => "UPSTREAM",
            ErrorCode::ApprovalRequired => "APPROVAL_REQUIRED",
            ErrorCode::GateBlocked => "GATE_BLOCKED",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command refused by the domain. Nothing is appended when a command returns one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The requested move is not in the machine's `VALID_TRANSITIONS` table.
    #[error("cannot move {machine} from {from} to {to}")]
    InvalidTransition {
        machine: &'static str,
        from: String,
        to: String,
        allowed: Vec<String>,
    },
    /// A field is missing or invalid.
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    /// The aggregate does not exist (or belongs to another tenant: ids are tenant-scoped).
    #[error("{kind} `{id}` not found")]
    NotFound { kind: &'static str, id: String },
    /// The actor's role does not allow this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Another command changed the same aggregate first; retrying is safe.
    #[error("concurrent write: {0}")]
    Conflict(String),
    /// A service the aggregate consulted failed (not a refusal by the domain).
    #[error("service unavailable: {0}")]
    Unavailable(String),
}

impl DomainError {
    /// Shorthand for a validation error naming its field.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for a required field that is absent or blank.
    pub fn required(field: &str) -> Self {
        Self::validation(field, "is required")
    }

    /// The client-visible code.
    pub fn code(&self) -> ErrorCode {
        match self {
            DomainError::InvalidTransition { .. } => ErrorCode::InvalidTransition,
            DomainError::Validation { .. } => ErrorCode::Validation,
            DomainError::NotFound { .. } => ErrorCode::NotFound,
            DomainError::Forbidden(_) => ErrorCode::Forbidden,
            DomainError::Conflict(_) => ErrorCode::Conflict,
            DomainError::Unavailable(_) => ErrorCode::Internal,
        }
    }

    /// Whether the same command may succeed when simply retried.
    pub fn retryable(&self) -> bool {
        matches!(self, DomainError::Conflict(_) | DomainError::Unavailable(_))
    }
}

/// Returns the trimmed text when present and non-blank.
pub fn non_blank(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// Requires a non-blank text field, returning it trimmed.
pub fn require_text(field: &str, value: Option<&str>) -> Result<String, DomainError> {
    non_blank(value)
        .map(str::to_string)
        .ok_or_else(|| DomainError::required(field))
}
