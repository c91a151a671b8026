//! The read side of workflowops: the projector runtime that folds the event store's
//! global log into read models exactly once ([`runtime`]), the read models themselves
//! (one file each), the queries the API runs on them, and aggregate history replayed
//! from the log ([`history`]). The event store itself is its own crate
//! (`projections/store`, `eventstore`), shared with the write side.

pub mod display;
pub mod drift_status;
pub mod event;
pub mod history;
pub mod json_str;
pub mod models;
pub mod query;
pub mod rebuild;
pub mod runtime;
pub mod sql;

pub use runtime::{Projection, ProjectionStatus, Projector, ProjectorHandle, ProjectorOptions};

/// The names of every read model, in the order they are applied.
pub const NAMES: &[&str] = &[
    models::matrix::NAME,
    models::environments::NAME,
    models::incidents::NAME,
    models::promotions::NAME,
    models::deployments::NAME,
    models::pipelines::NAME,
    models::policies::NAME,
    models::credential_mappings::NAME,
    models::snapshots::NAME,
    models::webhooks::NAME,
    models::audit::NAME,
];

/// A fresh instance of the named projection.
pub fn projection(name: &str) -> Option<Box<dyn Projection>> {
    Some(match name {
        models::matrix::NAME => Box::<models::matrix::WorkflowMatrix>::default(),
        models::environments::NAME => {
            Box::<models::environments::EnvironmentStatusProjection>::default()
        }
        models::incidents::NAME => Box::<models::incidents::Incidents>::default(),
        models::promotions::NAME => Box::<models::promotions::Promotions>::default(),
        models::deployments::NAME => Box::<models::deployments::Deployments>::default(),
        models::pipelines::NAME => Box::<models::pipelines::Pipelines>::default(),
        models::policies::NAME => Box::<models::policies::DriftPolicies>::default(),
        models::credential_mappings::NAME => {
            Box::<models::credential_mappings::CredentialMappings>::default()
        }
        models::snapshots::NAME => Box::<models::snapshots::Snapshots>::default(),
        models::webhooks::NAME => Box::<models::webhooks::Webhooks>::default(),
        models::audit::NAME => Box::<models::audit::AuditTrail>::default(),
        _ => return None,
    })
}

/// Every read model.
pub fn all() -> Vec<Box<dyn Projection>> {
    NAMES.iter().filter_map(|n| projection(n)).collect()
}
