//! What the read models' rows look like to clients: enums in UPPER_CASE, times as
//! `DateTime`, JSON columns as typed lists, and Relay connections.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Enum, OutputType, SimpleObject};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::ApiError;
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

/// A stored time (RFC 3339) as a `DateTime`.
pub fn time(text: &str) -> Option<DateTime<Utc>> {
    projections::sql::parse_time(text)
}

pub fn opt_time(text: &Option<String>) -> Option<DateTime<Utc>> {
    text.as_deref().and_then(time)
}

/// A stored state name (`pending_approval`) as its API enum (`PENDING_APPROVAL`).
pub fn state<T: DeserializeOwned>(name: &str) -> Result<T, ApiError> {
    serde_json::from_value(Value::String(name.to_string())).map_err(|_| {
        ApiError::Store(eventstore::StoreError::Corrupt {
            position: 0,
            message: format!("unknown state name {name:?} in a read model"),
        })
    })
}

/// A JSON column as a typed list (an unreadable column reads as empty).
pub fn json_list<T: DeserializeOwned>(text: &str) -> Vec<T> {
    serde_json::from_str(text).unwrap_or_default()
}

macro_rules! api_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }
    };
}

api_enum!(EnvironmentClass {
    Dev,
    Staging,
    Production
});
api_enum!(EnvironmentStatus {
    Active,
    Deactivated
});
api_enum!(GitProvider { Github, Local });
api_enum!(
    /// DOMAIN.md §2.5, evaluated in this order.
    DriftStatus {
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
    /// A mapping's status; `ABSENT` = no workflow of this row in that environment.
    MappingStatus {
        Linked,
        Untracked,
        Missing,
        Ignored,
        Deleted,
        Absent,
    }
);
api_enum!(
    /// Computed at query time: `DRIFT` = linked and the environment differs from
    /// Git; `OUT_OF_DATE` = linked and Git changed after the environment.
    SyncState { InSync, Drift, OutOfDate, None }
);
api_enum!(IncidentStatus {
    Detected,
    Acknowledged,
    Stabilized,
    Reconciled,
    Closed
});
api_enum!(Severity {
    Low,
    Medium,
    High,
    Critical
});
api_enum!(SlaState {
    OnTrack,
    Escalated,
    CriticalOverdue,
    Expired
});
api_enum!(ResolutionType {
    Promote,
    Revert,
    Replace,
    Acknowledge
});
api_enum!(PromotionStatus {
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
api_enum!(DeploymentStatus {
    Pending,
    Scheduled,
    Running,
    Success,
    Failed,
    Cancelled
});
api_enum!(WorkflowDeployStatus {
    Pending,
    Success,
    Failed,
    Skipped,
    Unchanged
});

impl DriftStatus {
    pub fn from_model(status: projections::drift_status::DriftStatus) -> DriftStatus {
        use projections::drift_status::DriftStatus as M;
        match status {
            M::Unknown => DriftStatus::Unknown,
            M::Error => DriftStatus::Error,
            M::New => DriftStatus::New,
            M::DriftIncidentAcknowledged => DriftStatus::DriftIncidentAcknowledged,
            M::DriftIncidentActive => DriftStatus::DriftIncidentActive,
            M::Untracked => DriftStatus::Untracked,
            M::DriftDetected => DriftStatus::DriftDetected,
            M::InSync => DriftStatus::InSync,
        }
    }
}

impl SyncState {
    pub fn from_model(state: projections::display::SyncState) -> SyncState {
        use projections::display::SyncState as M;
        match state {
            M::InSync => SyncState::InSync,
            M::Drift => SyncState::Drift,
            M::OutOfDate => SyncState::OutOfDate,
            M::None => SyncState::None,
        }
    }
}

impl ResolutionType {
    pub fn to_domain(self) -> aggregates::incident::ResolutionType {
        use aggregates::incident::ResolutionType as D;
        match self {
            ResolutionType::Promote => D::Promote,
            ResolutionType::Revert => D::Revert,
            ResolutionType::Replace => D::Replace,
            ResolutionType::Acknowledge => D::Acknowledge,
        }
    }
}

impl EnvironmentClass {
    pub fn to_domain(self) -> aggregates::environment::EnvironmentClass {
        use aggregates::environment::EnvironmentClass as D;
        match self {
            EnvironmentClass::Dev => D::Dev,
            EnvironmentClass::Staging => D::Staging,
            EnvironmentClass::Production => D::Production,
        }
    }
}

impl GitProvider {
    pub fn to_domain(self) -> aggregates::environment::GitProvider {
        match self {
            GitProvider::Github => aggregates::environment::GitProvider::Github,
            GitProvider::Local => aggregates::environment::GitProvider::Local,
        }
    }
}

/// A workflow named in an incident, a promotion or a deployment.
#[derive(SimpleObject, Debug, Clone, Deserialize)]
pub struct AffectedWorkflow {
    /// Canonical id when the runtime workflow is mapped, else the n8n id.
    pub workflow_id: String,
    pub name: String,
}

#[derive(SimpleObject, Debug, Clone, Deserialize)]
pub struct GateResult {
    pub gate: String,
    pub passed: bool,
    pub blocking: bool,
    pub message: Option<String>,
}

#[derive(SimpleObject, Debug, Clone, Deserialize)]
pub struct PromotionWorkflow {
    pub canonical_id: String,
    pub name: String,
    pub source_content_hash: Option<String>,
}

#[derive(SimpleObject, Debug, Clone, Deserialize)]
pub struct WorkflowOutcome {
    pub canonical_id: String,
    pub outcome: String,
    pub detail: Option<String>,
}

#[derive(SimpleObject, Debug, Clone, Deserialize)]
pub struct DeploymentWorkflow {
    pub workflow_id: String,
    pub name: String,
    pub status: WorkflowDeployStatus,
    pub error: Option<String>,
}
