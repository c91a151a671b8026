//! The read side of workflowops: what users look at, folded from the event log.
//!
//! This crate will hold the projector runtime and the read models (workflow matrix,
//! environment status, audit trail). For now it holds the derivations those read
//! models share, which DOMAIN.md says are computed at query time and never stored:
//! a mapping's display state (§2.1) and an environment's drift status (§2.5).

pub mod display;
pub mod drift_status;
