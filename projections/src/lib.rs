//! The read side of workflowops: the event store's global log ([`store`]), the
//! projector runtime that folds it into read models exactly once ([`runtime`]), the
//! read models themselves (one file each), the queries the API runs on them, and
//! aggregate history replayed from the log ([`history`]).
//!
//! The event store lives here rather than in the service crate because the runtime
//! shares its pools, its SQLite write turn and its log reader; the service re-exports
//! it as `workflowops::store`.

pub mod audit;
pub mod deployments;
pub mod display;
pub mod drift_status;
pub mod environments;
pub mod event;
pub mod history;
pub mod incidents;
pub mod matrix;
pub mod pipelines;
pub mod policies;
pub mod promotions;
pub mod query;
pub mod rebuild;
pub mod runtime;
pub mod sql;
pub mod store;

pub use runtime::{Projection, ProjectionStatus, Projector, ProjectorHandle, ProjectorOptions};

/// The names of every read model, in the order they are applied.
pub const NAMES: &[&str] = &[
    matrix::NAME,
    environments::NAME,
    incidents::NAME,
    promotions::NAME,
    deployments::NAME,
    pipelines::NAME,
    policies::NAME,
    audit::NAME,
];

/// A fresh instance of the named projection.
pub fn projection(name: &str) -> Option<Box<dyn Projection>> {
    Some(match name {
        matrix::NAME => Box::<matrix::WorkflowMatrix>::default(),
        environments::NAME => Box::<environments::EnvironmentStatusProjection>::default(),
        incidents::NAME => Box::<incidents::Incidents>::default(),
        promotions::NAME => Box::<promotions::Promotions>::default(),
        deployments::NAME => Box::<deployments::Deployments>::default(),
        pipelines::NAME => Box::<pipelines::Pipelines>::default(),
        policies::NAME => Box::<policies::DriftPolicies>::default(),
        audit::NAME => Box::<audit::AuditTrail>::default(),
        _ => return None,
    })
}

/// Every read model.
pub fn all() -> Vec<Box<dyn Projection>> {
    NAMES.iter().filter_map(|n| projection(n)).collect()
}
