//! Incidents: each drift incident's current state, SLA and timestamps.

use crate::sql::QueryRows as _;
use aggregates::incident::{
    AffectedWorkflow, IncidentEvent, IncidentStatus, ResolutionType, Severity, SlaState,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Envelope;
use crate::query::{by_id, newest_first, Page, QueryError};
use crate::read_model_row;
use crate::runtime::ApplyError;
use crate::sql::{select, Dialect, Json, KeyedRow, Rows, Tx};
use eventstore::Store;

pub const NAME: &str = "incidents";

read_model_row! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct IncidentRow in "rm_incidents" {
        pub id: String,
        pub tenant: String,
        pub incident_id: String,
        pub environment_id: String,
        pub status: IncidentStatus,
        pub severity: Severity,
        pub sla_state: SlaState,
        pub sla_deadline: DateTime<Utc>,
        pub affected_count: i64,
        /// JSON list of `{workflow_id, name}`.
        pub affected_workflows: Json<Vec<AffectedWorkflow>>,
        pub detected_at: DateTime<Utc>,
        pub acknowledged_at: Option<DateTime<Utc>>,
        pub stabilized_at: Option<DateTime<Utc>>,
        pub reconciled_at: Option<DateTime<Utc>>,
        pub closed_at: Option<DateTime<Utc>>,
        pub owner_user_id: Option<String>,
        pub ticket_ref: Option<String>,
        pub expires_at: Option<DateTime<Utc>>,
        pub resolution_type: Option<ResolutionType>,
        pub resolution_details: Option<String>,
        /// The reason given with the latest transition.
        pub reason: Option<String>,
        /// The pending approval request (its event's payload), if one waits.
        pub pending_approval: Option<Json<serde_json::Value>>,
        /// Some transition of this incident was an admin override.
        pub admin_override: bool,
        pub payload_purged: bool,
        pub updated_at: DateTime<Utc>,
        /// SHA-256 of the drift snapshot taken at detection (its payload lives in
        /// `drift_snapshots` until retention purges it).
        pub snapshot_digest: Option<String>,
    }
}

impl KeyedRow for IncidentRow {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Default)]
pub struct Incidents {
    incidents: Rows<IncidentRow>,
}

impl Incidents {
    async fn fold(
        &mut self,
        tx: &mut Tx,
        event: &Envelope,
        e: &IncidentEvent,
    ) -> Result<(), ApplyError> {
        use IncidentEvent::*;
        let id = &event.stored.aggregate_id;
        let mut row = match (self.incidents.get(tx, id).await?, e) {
            (
                None,
                Detected {
                    environment_id,
                    severity,
                    affected_workflows,
                    detected_at,
                    sla_deadline,
                    snapshot_digest,
                    ..
                },
            ) => IncidentRow {
                id: id.clone(),
                tenant: event.tenant().to_string(),
                incident_id: event.local_id().to_string(),
                environment_id: environment_id.clone(),
                status: IncidentStatus::Detected,
                severity: *severity,
                sla_state: SlaState::OnTrack,
                sla_deadline: *sla_deadline,
                affected_count: affected_workflows.len() as i64,
                affected_workflows: Json(affected_workflows.clone()),
                detected_at: *detected_at,
                acknowledged_at: None,
                stabilized_at: None,
                reconciled_at: None,
                closed_at: None,
                owner_user_id: None,
                ticket_ref: None,
                expires_at: None,
                resolution_type: None,
                resolution_details: None,
                reason: None,
                pending_approval: None,
                admin_override: false,
                payload_purged: false,
                updated_at: event.at(),
                snapshot_digest: snapshot_digest.clone(),
            },
            (Some(row), _) => row,
            (None, _) => {
                return Err(ApplyError::Event(format!(
                    "incident {id} was never detected"
                )))
            }
        };
        match e {
            Detected { .. } => {}
            DriftUpdated {
                severity,
                affected_workflows,
            } => {
                row.severity = *severity;
                row.affected_count = affected_workflows.len() as i64;
                row.affected_workflows = Json(affected_workflows.clone());
            }
            ApprovalRequested { .. } => row.pending_approval = event.payload().cloned().map(Json),
            ApprovalGranted { .. } => row.pending_approval = None,
            ApprovalRejected { reason, .. } => {
                row.pending_approval = None;
                row.reason = Some(reason.clone());
            }
            Acknowledged {
                reason,
                owner_user_id,
                ticket_ref,
                expires_at,
                at,
                admin_override,
                ..
            } => {
                row.acknowledged_at = Some(*at);
                row.reason = reason.clone();
                row.owner_user_id = owner_user_id.clone();
                row.ticket_ref = ticket_ref.clone();
                row.expires_at = *expires_at;
                row.admin_override |= admin_override;
            }
            Stabilized {
                reason,
                at,
                admin_override,
                ..
            } => {
                row.stabilized_at = Some(*at);
                row.reason = reason.clone();
                row.admin_override |= admin_override;
            }
            Reconciled {
                resolution_type,
                resolution_details,
                at,
                admin_override,
                ..
            } => {
                row.reconciled_at = Some(*at);
                row.resolution_type = Some(*resolution_type);
                row.resolution_details = resolution_details.clone();
                row.admin_override |= admin_override;
            }
            Closed {
                reason,
                resolution_type,
                at,
                admin_override,
                ..
            } => {
                row.closed_at = Some(*at);
                row.reason = Some(reason.clone());
                row.resolution_type = Some(*resolution_type);
                row.admin_override |= admin_override;
            }
            TtlExtended {
                new_deadline,
                sla_state,
                reason,
                ..
            } => {
                row.sla_deadline = *new_deadline;
                row.sla_state = *sla_state;
                if reason.is_some() {
                    row.reason = reason.clone();
                }
            }
            SlaEscalated { to, .. } => row.sla_state = *to,
            SnapshotPayloadPurged { .. } => row.payload_purged = true,
        }
        if let Some((_, to)) = e.status_change() {
            row.status = to;
        }
        row.updated_at = event.at();
        self.incidents.put(row);
        Ok(())
    }
}

crate::single_aggregate_projection!(
    Incidents,
    NAME,
    "rm_incidents",
    incidents,
    Incident,
    "incident"
);

/// Incidents of `tenant`, newest first, optionally of one environment and status.
pub async fn incidents(
    store: &Store,
    tenant: &str,
    environment_id: Option<&str>,
    status: Option<IncidentStatus>,
    first: i64,
    after: Option<&str>,
) -> Result<Page<IncidentRow>, QueryError> {
    let filters = [
        ("environment_id", environment_id.map(str::to_string)),
        ("status", status.map(|s| s.as_str().to_string())),
    ];
    newest_first(store, tenant, "detected_at", &filters, first, after).await
}

/// What the console's incident list filters on (each `None`: any).
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub environment_id: Option<String>,
    pub status: Option<IncidentStatus>,
    pub severity: Option<aggregates::incident::Severity>,
    pub sla_state: Option<SlaState>,
}

/// `tenant`'s incidents that `filter` selects, newest first.
pub async fn incidents_where(
    store: &Store,
    tenant: &str,
    filter: &IncidentFilter,
    first: i64,
    after: Option<&str>,
) -> Result<Page<IncidentRow>, QueryError> {
    let filters = [
        ("environment_id", filter.environment_id.clone()),
        ("status", filter.status.map(|s| s.as_str().to_string())),
        ("severity", filter.severity.map(|s| s.as_str().to_string())),
        (
            "sla_state",
            filter.sla_state.map(|s| s.as_str().to_string()),
        ),
    ];
    newest_first(store, tenant, "detected_at", &filters, first, after).await
}

pub async fn incident(
    store: &Store,
    tenant: &str,
    incident_id: &str,
) -> Result<Option<IncidentRow>, QueryError> {
    by_id(store, tenant, incident_id).await
}

/// Open incidents (any tenant) whose SLA state can still move: the TTL job's work.
pub async fn sla_candidates(store: &Store) -> Result<Vec<IncidentRow>, QueryError> {
    let mut sql = select::<IncidentRow>(Dialect::of(store));
    sql.push(" WHERE status <> 'closed' AND sla_state <> 'expired' ORDER BY tenant, id");
    Ok(sql.fetch(store).await?)
}
