//! What the read models' rows look like to clients: the domain's enums (in
//! UPPER_CASE), the objects inside typed JSON columns, and Relay connections.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Enum, OutputType, SimpleObject};

use projections::query::Page;

/// A page as a Relay connection (forward pagination: no previous page).
pub fn connection<T, N: OutputType>(page: Page<T>, node: impl Fn(T) -> N) -> Connection<String, N> {
    let mut connection = Connection::new(false, page.has_next_page);
    connection.edges = page
        .cursors
        .into_iter()
        .zip(page.items)
        .map(|(cursor, item)| Edge::new(cursor, node(item)))
        .collect();
    connection
}

/// Page size argument: default 50; the query refuses more than the cap.
pub fn first(first: Option<i32>) -> i64 {
    first.map_or(50, i64::from)
}

/// The API's enums are the domain's (and the read side's), derived with
/// `#[graphql(remote)]`: the conversions both ways are generated with exhaustive
/// matches, so a variant added on one side and not the other does not compile.
/// The variants keep the names clients see (`PENDING_APPROVAL`, …).
macro_rules! api_enum {
    ($(#[$meta:meta])* $name:ident = $remote:literal { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
        #[graphql(remote = $remote)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }
    };
}

api_enum!(EnvironmentClass = "aggregates::environment::EnvironmentClass" {
    Dev,
    Staging,
    Production
});
api_enum!(EnvironmentStatus = "aggregates::environment::EnvironmentStatus" {
    Active,
    Deactivated
});
api_enum!(GitProvider = "aggregates::environment::GitProvider" { Github, Local });
api_enum!(
    /// DOMAIN.md §2.5, evaluated in this order.
    DriftStatus = "projections::drift_status::DriftStatus" {
        Unknown,
        Error,
        New,
        DriftIncidentAcknowledged,
        DriftIncidentActive,
        Untracked,
        DriftDetected,
        InSync,
    }
);
api_enum!(
    /// Computed at query time: `DRIFT` = linked and the environment differs from
    /// Git; `OUT_OF_DATE` = linked and Git changed after the environment.
    SyncState = "projections::display::SyncState" { InSync, Drift, OutOfDate, None }
);
api_enum!(IncidentStatus = "aggregates::incident::IncidentStatus" {
    Detected,
    Acknowledged,
    Stabilized,
    Reconciled,
    Closed
});
api_enum!(Severity = "aggregates::incident::Severity" {
    Low,
    Medium,
    High,
    Critical
});
api_enum!(SlaState = "aggregates::incident::SlaState" {
    OnTrack,
    Escalated,
    CriticalOverdue,
    Expired
});
api_enum!(ResolutionType = "aggregates::incident::ResolutionType" {
    Promote,
    Revert,
    Replace,
    Acknowledge
});
api_enum!(PromotionStatus = "aggregates::promotion::PromotionStatus" {
    Pending,
    PendingApproval,
    Approved,
    Rejected,
    Running,
    Completed,
    RolledBack,
    Failed,
    Cancelled,
});
api_enum!(DeploymentStatus = "aggregates::deployment::DeploymentStatus" {
    Pending,
    Scheduled,
    Running,
    Success,
    Failed,
    Cancelled
});
api_enum!(WorkflowDeployStatus = "aggregates::deployment::WorkflowDeployStatus" {
    Pending,
    Success,
    Failed,
    Skipped,
    Unchanged
});

// The one API enum that is not a domain enum: `ABSENT` is a cell the matrix shows
// where no mapping exists, so it has no mapping status to derive from.
/// A mapping's status; `ABSENT` = no workflow of this row in that environment.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingStatus {
    Linked,
    Untracked,
    Missing,
    Ignored,
    Deleted,
    Absent,
}

impl From<aggregates::mapping::MappingStatus> for MappingStatus {
    fn from(status: aggregates::mapping::MappingStatus) -> Self {
        use aggregates::mapping::MappingStatus as D;
        match status {
            D::Linked => MappingStatus::Linked,
            D::Untracked => MappingStatus::Untracked,
            D::Missing => MappingStatus::Missing,
            D::Ignored => MappingStatus::Ignored,
            D::Deleted => MappingStatus::Deleted,
        }
    }
}

/// A workflow named in an incident, a promotion or a deployment.
#[derive(SimpleObject, Debug, Clone)]
pub struct AffectedWorkflow {
    /// Canonical id when the runtime workflow is mapped, else the n8n id.
    pub workflow_id: String,
    pub name: String,
}

impl From<aggregates::incident::AffectedWorkflow> for AffectedWorkflow {
    fn from(w: aggregates::incident::AffectedWorkflow) -> Self {
        AffectedWorkflow {
            workflow_id: w.workflow_id,
            name: w.name,
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct GateResult {
    // the gate's name (`require_clean_drift`, …; DOMAIN.md §5)
    pub gate: String,
    pub passed: bool,
    pub blocking: bool,
    pub message: Option<String>,
}

impl From<aggregates::promotion::GateResult> for GateResult {
    fn from(r: aggregates::promotion::GateResult) -> Self {
        GateResult {
            gate: r.gate.as_str().to_string(),
            passed: r.passed,
            blocking: r.blocking,
            message: r.message,
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct PromotionWorkflow {
    pub canonical_id: String,
    pub name: String,
    pub source_content_hash: Option<String>,
}

impl From<aggregates::promotion::PromotionWorkflow> for PromotionWorkflow {
    fn from(w: aggregates::promotion::PromotionWorkflow) -> Self {
        PromotionWorkflow {
            canonical_id: w.canonical_id,
            name: w.name,
            source_content_hash: w.source_content_hash,
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct WorkflowOutcome {
    pub canonical_id: String,
    pub outcome: String,
    pub detail: Option<String>,
}

impl From<aggregates::promotion::WorkflowOutcome> for WorkflowOutcome {
    fn from(o: aggregates::promotion::WorkflowOutcome) -> Self {
        WorkflowOutcome {
            canonical_id: o.canonical_id,
            outcome: o.outcome,
            detail: o.detail,
        }
    }
}

#[derive(SimpleObject, Debug, Clone)]
pub struct DeploymentWorkflow {
    pub workflow_id: String,
    pub name: String,
    pub status: WorkflowDeployStatus,
    pub error: Option<String>,
}

impl From<aggregates::deployment::DeploymentWorkflow> for DeploymentWorkflow {
    fn from(w: aggregates::deployment::DeploymentWorkflow) -> Self {
        DeploymentWorkflow {
            workflow_id: w.workflow_id,
            name: w.name,
            status: w.status.into(),
            error: w.error,
        }
    }
}

/// A typed list column as API objects.
pub fn list<T: Clone, U: From<T>>(items: &[T]) -> Vec<U> {
    items.iter().cloned().map(U::from).collect()
}
