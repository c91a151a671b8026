//! The workflowops domain: aggregates, commands, events, the `VALID_TRANSITIONS`
//! tables and workflow content identity.
//!
//! Pure by design: no I/O, no clock, no database. Time and actor arrive in the
//! command envelope ([`kernel::command::Issued`]); facts that need a lookup arrive through an
//! aggregate's `Services` trait, implemented by the service crate.

pub mod canonical_json;
pub mod content;
pub mod kernel;

pub mod canonical;
pub mod credentials;
pub mod deployment;
pub mod environment;
pub mod incident;
pub mod mapping;
pub mod pipeline;
pub mod policy;
pub mod promotion;
pub mod reservation;
pub mod webhook;

pub use kernel::command::{Actor, DomainCommand, Issued, Role};
pub use kernel::error::{DomainError, ErrorCode};
