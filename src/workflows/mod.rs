//! Use cases that span aggregates or reach outside the service: syncing with n8n
//! and Git ([`sync`]; Git reads shared by concurrent callers, [`git_reads`]; listed
//! n8n workflows summarised once per text, [`n8n_reads`]), drift
//! checks ([`drift`]), the incident a drift report opens
//! or updates ([`incident_slot`]), promotions ([`promotion`]) and the deployments
//! that run them ([`deployment`]).
//!
//! Each use case authorizes its caller first, through the same check as every
//! command ([`crate::command::bus::authorize`] with a
//! [`crate::command::bus::UseCase`]); resolvers never
//! check roles themselves.

pub mod deployment;
pub mod drift;
pub mod git_reads;
pub mod incident_slot;
pub mod n8n_reads;
pub mod promotion;
pub mod sync;
