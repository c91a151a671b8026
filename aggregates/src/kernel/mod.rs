//! What every aggregate shares: the command envelope and roles ([`command`]), ids
//! ([`ids`]), the typed refusals and their error codes ([`error`]), and the
//! `VALID_TRANSITIONS` machinery ([`transitions`]) that both the aggregates and the
//! store's commit check.

pub mod command;
pub mod error;
pub mod ids;
pub mod transitions;
