//! What the read models' rows look like to clients: the domain's enums (in
//! UPPER_CASE), the objects inside typed JSON columns, and Relay connections.

use std::borrow::Cow;
use std::marker::PhantomData;

use aggregates::kernel::error::{DomainError, ErrorCode};
use aggregates::kernel::ids::LocalId;
use async_graphql::connection::{Connection, Edge};
use async_graphql::registry::Registry;
use async_graphql::{
    Enum, InputType, InputValueError, InputValueResult, OutputType, SimpleObject, ID,
};

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

api_enum!(
    /// What a notification says happened.
    NotificationKind = "aggregates::webhook::NotificationKind" {
        /// A drift incident was opened (`incident.detected`).
        IncidentOpened,
        /// An incident's SLA escalated (`escalated`, `critical_overdue`).
        IncidentEscalated,
        /// An incident's SLA deadline passed (SLA state `expired`).
        IncidentExpired,
        IncidentClosed,
        /// The gates passed and the promotion waits for an admin's approval.
        PromotionPendingApproval,
        /// A blocking gate failed: nothing was deployed.
        PromotionBlocked,
        PromotionCompleted,
        /// A deployment failed and the target was restored from its pre-snapshot.
        PromotionRolledBack,
        /// The promotion failed (a failure before deploying, or a rollback that
        /// left the target inconsistent).
        PromotionFailed,
        DriftCheckFailed,
        /// An endpoint or channel was disabled (by an admin, or by the sender: a
        /// 410, or a delivery that failed every attempt).
        WebhookDisabled,
    }
);
api_enum!(
    /// How a notification channel wants its messages.
    ChannelFormat = "aggregates::webhook::ChannelFormat" {
        /// A Slack-compatible incoming webhook: `text` plus Block Kit `blocks`.
        Slack,
        /// A generic JSON document: kind, title, details, object, transition,
        /// environmentId, severity, actor, link, at, position, eventType.
        Json,
    }
);
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
api_enum!(
    /// Where a deployment is: `WAITING` (pending, scheduled or cancelled), then
    /// `GATES`, `PRE_SNAPSHOT`, `PUSHING`, `VERIFYING`, `POST_SNAPSHOT`,
    /// `GIT_COMMIT`, `DONE`; `ROLLING_BACK` after a failure.
    DeploymentPhase = "aggregates::deployment::DeploymentPhase" {
        Waiting,
        Gates,
        PreSnapshot,
        Pushing,
        Verifying,
        PostSnapshot,
        GitCommit,
        RollingBack,
        Done
    }
);
api_enum!(SnapshotKind = "aggregates::deployment::SnapshotKind" { Pre, Post });
api_enum!(
    /// What a rollback did to one workflow.
    RestoreAction = "aggregates::deployment::RestoreAction" {
        Updated,
        Recreated,
        Deleted,
        Unchanged
    }
);

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
    /// The canonical workflow.
    pub workflow_id: String,
    pub name: String,
    pub status: WorkflowDeployStatus,
    pub error: Option<String>,
    /// Requests sent to the target for it (retries included; 0 when unchanged).
    pub attempts: i32,
    /// Its id in the target (after a create, the new one).
    pub target_workflow_id: Option<String>,
    /// This deployment created it in the target.
    pub created: bool,
    /// This deployment deleted it from the target (a restore of a snapshot that
    /// did not hold it).
    pub deleted: bool,
    /// What the rollback did to it (null: not rolled back, or the restore failed).
    pub restored: Option<RestoreAction>,
    /// Why the rollback could not restore it.
    pub restore_error: Option<String>,
}

impl From<aggregates::deployment::DeploymentWorkflow> for DeploymentWorkflow {
    fn from(w: aggregates::deployment::DeploymentWorkflow) -> Self {
        DeploymentWorkflow {
            workflow_id: w.workflow_id,
            name: w.name,
            status: w.status.into(),
            error: w.error,
            attempts: i32::try_from(w.attempts).unwrap_or(i32::MAX),
            target_workflow_id: w.target_id,
            created: w.created,
            deleted: w.deleted,
            restored: w.restored.map(Into::into),
            restore_error: w.restore_error,
        }
    }
}

/// A typed list column as API objects.
pub fn list<T: Clone, U: From<T>>(items: &[T]) -> Vec<U> {
    items.iter().cloned().map(U::from).collect()
}

/// The name of an id argument, for the errors that name it (`field`).
pub trait ArgName: Send + Sync + 'static {
    const NAME: &'static str;
}

macro_rules! arg_names {
    ($($marker:ident => $name:literal),+ $(,)?) => {
        /// The id arguments of the API, by name.
        pub mod arg {
            $(
                #[doc = concat!("The `", $name, "` argument.")]
                pub struct $marker;
                impl super::ArgName for $marker {
                    const NAME: &'static str = $name;
                }
            )+
        }
    };
}

arg_names!(
    Id => "id",
    EnvironmentId => "environmentId",
    N8nWorkflowId => "n8nWorkflowId",
    CanonicalId => "canonicalId",
    PipelineId => "pipelineId",
    PromotionId => "promotionId",
    SourceEnvironmentId => "sourceEnvironmentId",
    TargetEnvironmentId => "targetEnvironmentId",
    SnapshotId => "snapshotId",
);

/// An id argument, parsed into a [`LocalId`](aggregates::kernel::ids::LocalId) by
/// input coercion: a resolver that takes one never sees a malformed id.
///
/// The SDL still says `ID` (the schema only grows by addition), so the type borrows
/// `ID`'s registration; what changes is that an id with a character a local id may
/// not hold is refused before the resolver runs, with the error the API has always
/// given (`VALIDATION`, `field` = the argument's name, message `{field}: …`). `A`
/// names the argument.
pub struct LocalIdArg<A: ArgName = arg::Id>(LocalId, PhantomData<fn() -> A>);

impl<A: ArgName> LocalIdArg<A> {
    pub fn into_inner(self) -> LocalId {
        self.0
    }
}

impl<A: ArgName> std::ops::Deref for LocalIdArg<A> {
    type Target = LocalId;
    fn deref(&self) -> &LocalId {
        &self.0
    }
}

impl<A: ArgName> std::fmt::Debug for LocalIdArg<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LocalIdArg").field(&self.0).finish()
    }
}

/// The start async-graphql gives every input coercion error; [`unwrap_id_errors`]
/// takes it off again for ids, so their messages stay what they were.
const COERCION_PREFIX: &str = "Failed to parse \"ID\": ";

impl<A: ArgName> InputType for LocalIdArg<A> {
    type RawValueType = LocalId;

    fn type_name() -> Cow<'static, str> {
        <ID as InputType>::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <ID as InputType>::create_type_info(registry)
    }

    fn parse(value: Option<async_graphql::Value>) -> InputValueResult<Self> {
        let id = <ID as InputType>::parse(value).map_err(InputValueError::propagate)?;
        LocalId::parse(id.0)
            .map(|id| LocalIdArg(id, PhantomData))
            .map_err(|error| {
                let message = match error {
                    DomainError::Validation { message, .. } => message,
                    other => other.to_string(),
                };
                InputValueError::custom(format!("{}: {message}", A::NAME))
                    .with_extension("code", ErrorCode::Validation.as_str())
                    .with_extension("retryable", false)
                    .with_extension("field", A::NAME)
            })
    }

    fn to_value(&self) -> async_graphql::Value {
        async_graphql::Value::String(self.0.to_string())
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.0)
    }
}

/// Gives id coercion errors the message resolvers gave them (`id: invalid
/// character ' '`), without async-graphql's `Failed to parse "ID": ` in front.
pub fn unwrap_id_errors(errors: &mut [async_graphql::ServerError]) {
    for error in errors {
        let Some(field) = error
            .extensions
            .as_ref()
            .and_then(|e| e.get("field"))
            .and_then(|f| match f {
                async_graphql::Value::String(f) => Some(f.clone()),
                _ => None,
            })
        else {
            continue;
        };
        if let Some(rest) = error.message.strip_prefix(COERCION_PREFIX) {
            if rest.starts_with(&format!("{field}: ")) {
                error.message = rest.to_string();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// A malformed id is refused by input coercion, before any resolver runs, with
    /// the code, field and message the resolvers used to give.
    #[tokio::test]
    async fn malformed_ids_are_refused_naming_their_argument() {
        let schema = crate::graphql::schema(None);
        for (query, field, message) in [
            ("{ incident(id: \"a b\") { id } }", "id", "id: invalid character ' '"),
            ("{ promotion(id: \"\") { id } }", "id", "id: is required"),
            (
                "mutation { deployPromotion(promotionId: \"no/such\") { position } }",
                "promotionId",
                "promotionId: invalid character '/'",
            ),
            (
                "mutation { ignoreWorkflow(environmentId: \"prod\", n8nWorkflowId: \"x:y\") { position } }",
                "n8nWorkflowId",
                "n8nWorkflowId: invalid character ':'",
            ),
        ] {
            let response = schema.execute(query).await;
            let error = &response.errors[0];
            assert_eq!(error.message, message, "{query}");
            let extensions = serde_json::to_value(error.extensions.as_ref().unwrap()).unwrap();
            assert_eq!(extensions["code"], "VALIDATION", "{query}");
            assert_eq!(extensions["field"], field, "{query}");
            assert_eq!(extensions["retryable"], false, "{query}");
        }
        // an id given as a number is an ID like any other
        let response = schema.execute("{ incident(id: 42) { id } }").await;
        assert!(
            response.errors.iter().all(|e| !e.message.contains("parse")),
            "{:?}",
            response.errors
        );
    }
}
