//! Use cases that span aggregates or reach outside the service: syncing with n8n
//! and Git ([`sync`]), drift checks ([`drift`]) and promotions ([`promotion`]).

pub mod drift;
pub mod promotion;
pub mod sync;
