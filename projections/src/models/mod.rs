//! The read models, one file each: the rows a projection keeps, how it folds events
//! into them, and the queries the API runs on them.

pub mod audit;
pub mod credential_mappings;
pub mod deployments;
pub mod environments;
pub mod incidents;
pub mod matrix;
pub mod pipelines;
pub mod policies;
pub mod promotions;
pub mod snapshots;
pub mod webhooks;
