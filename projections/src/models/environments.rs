//! Environment status: each environment's drift status in the order of DOMAIN.md
//! §2.5, since when it has been in it, its counts, its active incident, and its last
//! drift check and syncs.
//!
//! The status is derived from facts this projection keeps (Git configured, last
//! check failed, onboarded: synced and drift-checked at least once, active
//! incident, linked mappings, counts) and recomputed
//! whenever one changes; `drift_status_since` moves only when the status does. All
//! times are event times, so a rebuild gives the same table.

use crate::sql::QueryRows as _;
use aggregates::environment::{
    EnvironmentClass, EnvironmentEvent, EnvironmentStatus, KnownCredential, SyncKind,
};
use aggregates::incident::{IncidentEvent, IncidentStatus};
use aggregates::mapping::{MappingEvent, MappingStatus};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::drift_status::{drift_status, DriftStatus, EnvironmentFacts};
use crate::event::{Decoded, Envelope};
use crate::query::QueryError;
use crate::read_model_row;
use crate::runtime::{ApplyError, Projection};
use crate::sql::{select, Dialect, Json, KeyedRow, Rows, Tx};
use eventstore::Store;

pub const NAME: &str = "environment_status";

/// The aggregates whose events this read model folds.
const AGGREGATE_TYPES: &[&str] = &["environment", "incident", "workflow_mapping"];

read_model_row! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct EnvironmentRow in "rm_environments" {
        /// The environment's aggregate id.
        pub id: String,
        pub tenant: String,
        pub environment_id: String,
        pub name: String,
        pub class: EnvironmentClass,
        pub status: EnvironmentStatus,
        pub git_configured: bool,
        pub onboarded: bool,
        pub drift_status: DriftStatus,
        pub drift_status_since: DateTime<Utc>,
        pub in_sync: i64,
        pub with_drift: i64,
        pub not_in_git: i64,
        pub linked_mappings: i64,
        pub last_drift_check_at: Option<DateTime<Utc>>,
        pub last_drift_check_error: Option<String>,
        pub last_sync_at: Option<DateTime<Utc>>,
        pub last_repository_sync_at: Option<DateTime<Utc>>,
        pub last_sync_error: Option<String>,
        pub last_repository_sync_error: Option<String>,
        pub active_incident_id: Option<String>,
        pub active_incident_status: Option<IncidentStatus>,
        /// What the last sync saw referenced (n8n 1.x cannot list credentials).
        pub known_credentials: Json<Vec<KnownCredential>>,
        /// The deployment running a promotion to this environment (its slot).
        pub running_deployment_id: Option<String>,
        pub running_promotion_id: Option<String>,
        /// Why scheduled deployments to it wait: a rollback pinned it.
        pub pinned: Option<String>,
        pub registered_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
    }
}

impl KeyedRow for EnvironmentRow {
    fn id(&self) -> &str {
        &self.id
    }
}

read_model_row! {
    /// Which environment an incident belongs to.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct IncidentEnvironment in "rm_environment_incidents" {
        pub id: String,
        pub environment_row: String,
    }
}

impl KeyedRow for IncidentEnvironment {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Default)]
pub struct EnvironmentStatusProjection {
    environments: Rows<EnvironmentRow>,
    incidents: Rows<IncidentEnvironment>,
}

fn recompute(row: &mut EnvironmentRow, at: DateTime<Utc>) {
    let status = drift_status(&EnvironmentFacts {
        git_configured: row.git_configured,
        last_check_failed: row.last_drift_check_error.is_some(),
        onboarded: row.onboarded,
        active_incident: row.active_incident_status,
        linked_mappings: row.linked_mappings.max(0) as u32,
        counts: aggregates::environment::DriftCounts {
            in_sync: row.in_sync as u32,
            with_drift: row.with_drift as u32,
            not_in_git: row.not_in_git as u32,
        },
    });
    if status != row.drift_status {
        row.drift_status = status;
        row.drift_status_since = at;
    }
}

impl EnvironmentStatusProjection {
    async fn apply_environment(
        &mut self,
        tx: &mut Tx,
        event: &Envelope,
        e: &EnvironmentEvent,
    ) -> Result<Option<EnvironmentRow>, ApplyError> {
        let id = &event.stored.aggregate_id;
        let at = event.at();
        let mut row = match (self.environments.get(tx, id).await?, e) {
            (
                None,
                EnvironmentEvent::Registered {
                    name: env_name,
                    class,
                    git,
                    ..
                },
            ) => EnvironmentRow {
                id: id.clone(),
                tenant: event.tenant().to_string(),
                environment_id: event.local_id().to_string(),
                name: env_name.clone(),
                class: *class,
                status: EnvironmentStatus::Active,
                git_configured: git.is_some(),
                onboarded: false,
                drift_status: DriftStatus::Unknown,
                drift_status_since: at,
                in_sync: 0,
                with_drift: 0,
                not_in_git: 0,
                linked_mappings: 0,
                last_drift_check_at: None,
                last_drift_check_error: None,
                last_sync_at: None,
                last_repository_sync_at: None,
                last_sync_error: None,
                last_repository_sync_error: None,
                active_incident_id: None,
                active_incident_status: None,
                known_credentials: Json(vec![]),
                running_deployment_id: None,
                running_promotion_id: None,
                pinned: None,
                registered_at: at,
                updated_at: at,
            },
            (Some(row), _) => row,
            (None, _) => {
                return Err(ApplyError::Event(format!(
                    "environment {id} was never registered"
                )))
            }
        };
        match e {
            EnvironmentEvent::Registered { .. } => {}
            EnvironmentEvent::Updated {
                name,
                git,
                git_removed,
                ..
            } => {
                if let Some(name) = name {
                    row.name = name.clone();
                }
                if *git_removed {
                    row.git_configured = false;
                } else if git.is_some() {
                    row.git_configured = true;
                }
            }
            EnvironmentEvent::Deactivated { .. } => row.status = EnvironmentStatus::Deactivated,
            EnvironmentEvent::Reactivated { .. } => row.status = EnvironmentStatus::Active,
            EnvironmentEvent::SyncRecorded { kind, at, .. } => match kind {
                SyncKind::Environment => {
                    row.last_sync_at = Some(*at);
                    row.last_sync_error = None;
                    // a baseline: synced and compared with Git at least once
                    row.onboarded |= row.last_drift_check_at.is_some();
                }
                SyncKind::Repository => {
                    row.last_repository_sync_at = Some(*at);
                    row.last_repository_sync_error = None;
                }
            },
            EnvironmentEvent::SyncFailed { kind, cause, .. } => match kind {
                SyncKind::Environment => row.last_sync_error = Some(cause.clone()),
                SyncKind::Repository => row.last_repository_sync_error = Some(cause.clone()),
            },
            EnvironmentEvent::DriftChecked { counts, at } => {
                row.in_sync = counts.in_sync.into();
                row.with_drift = counts.with_drift.into();
                row.not_in_git = counts.not_in_git.into();
                row.last_drift_check_at = Some(*at);
                row.last_drift_check_error = None;
                row.onboarded |= row.last_sync_at.is_some();
            }
            EnvironmentEvent::DriftCheckFailed { cause, at } => {
                row.last_drift_check_at = Some(*at);
                row.last_drift_check_error = Some(cause.clone());
                // (ERROR while the last check fails; the next one that succeeds
                // is the baseline)
                row.onboarded |= row.last_sync_at.is_some();
            }
            // The incident becomes active when it is opened (incident.detected);
            // a reserved slot whose incident was never opened shows nothing.
            EnvironmentEvent::IncidentSlotReserved { .. } => {}
            EnvironmentEvent::CredentialsObserved { credentials, .. } => {
                row.known_credentials = Json(credentials.clone());
            }
            EnvironmentEvent::PromotionSlotReserved {
                promotion_id,
                deployment_id,
            } => {
                row.running_deployment_id = Some(deployment_id.clone());
                row.running_promotion_id = Some(promotion_id.clone());
            }
            EnvironmentEvent::PromotionSlotReleased { .. } => {
                row.running_deployment_id = None;
                row.running_promotion_id = None;
            }
            EnvironmentEvent::Pinned { reason, .. } => row.pinned = Some(reason.clone()),
            EnvironmentEvent::Unpinned { .. } => row.pinned = None,
            EnvironmentEvent::IncidentSlotReleased { incident_id } => {
                if row.active_incident_id.as_deref() == Some(incident_id) {
                    row.active_incident_id = None;
                    row.active_incident_status = None;
                }
            }
        }
        Ok(Some(row))
    }

    async fn apply_incident(
        &mut self,
        tx: &mut Tx,
        event: &Envelope,
        e: &IncidentEvent,
    ) -> Result<Option<EnvironmentRow>, ApplyError> {
        let incident = &event.stored.aggregate_id;
        let env_row = match e {
            IncidentEvent::Detected { environment_id, .. } => {
                let env_row = format!("{}:{environment_id}", event.tenant());
                self.incidents.put(IncidentEnvironment {
                    id: incident.clone(),
                    environment_row: env_row.clone(),
                });
                env_row
            }
            _ => match self.incidents.get(tx, incident).await? {
                Some(index) => index.environment_row,
                None => return Ok(None),
            },
        };
        let Some((_, to)) = e.status_change() else {
            return Ok(None);
        };
        let Some(mut row) = self.environments.get(tx, &env_row).await? else {
            return Ok(None);
        };
        let local = event.local_id().to_string();
        if to == IncidentStatus::Detected {
            row.active_incident_id = Some(local);
            row.active_incident_status = Some(to);
        } else if row.active_incident_id.as_deref() == Some(local.as_str()) {
            if to == IncidentStatus::Closed {
                row.active_incident_id = None;
                row.active_incident_status = None;
            } else {
                row.active_incident_status = Some(to);
            }
        } else {
            return Ok(None);
        }
        Ok(Some(row))
    }

    async fn apply_mapping(
        &mut self,
        tx: &mut Tx,
        event: &Envelope,
        e: &MappingEvent,
    ) -> Result<Option<EnvironmentRow>, ApplyError> {
        let Some((from, to)) = e.status_change() else {
            return Ok(None);
        };
        let delta =
            i64::from(to == MappingStatus::Linked) - i64::from(from == Some(MappingStatus::Linked));
        if delta == 0 {
            return Ok(None);
        }
        // A mapping belongs to its environment (`tenant:environment:n8n id`).
        let Some(env_row) = event.id().and_then(|id| id.parent()) else {
            return Ok(None);
        };
        let Some(mut row) = self.environments.get(tx, env_row.as_str()).await? else {
            return Ok(None);
        };
        row.linked_mappings += delta;
        Ok(Some(row))
    }
}

impl Projection for EnvironmentStatusProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_environments", "rm_environment_incidents"]
    }

    fn aggregate_types(&self) -> Option<&'static [&'static str]> {
        Some(AGGREGATE_TYPES)
    }

    fn apply<'a>(
        &'a mut self,
        tx: &'a mut Tx,
        event: &'a Envelope,
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        Box::pin(async move {
            let changed = match &event.event {
                Decoded::Environment(e) => self.apply_environment(tx, event, e).await?,
                Decoded::Incident(e) => self.apply_incident(tx, event, e).await?,
                Decoded::Mapping(e) => self.apply_mapping(tx, event, e).await?,
                Decoded::Undecodable(error)
                    if AGGREGATE_TYPES.contains(&event.stored.aggregate_type.as_str()) =>
                {
                    return Err(ApplyError::Event(format!("undecodable payload: {error}")))
                }
                _ => None,
            };
            if let Some(mut row) = changed {
                let at = event.at();
                recompute(&mut row, at);
                row.updated_at = at;
                self.environments.put(row);
            }
            Ok(())
        })
    }

    crate::row_tables!(environments, incidents);
}

/// Every environment of `tenant`, by name.
pub async fn environments(store: &Store, tenant: &str) -> Result<Vec<EnvironmentRow>, QueryError> {
    let mut sql = select::<EnvironmentRow>(Dialect::of(store));
    let t = sql.arg(tenant);
    sql.push(&format!(" WHERE tenant = {t} ORDER BY name, id"));
    Ok(sql.fetch(store).await?)
}

/// One environment of `tenant` (`None` if it is not the tenant's).
pub async fn environment(
    store: &Store,
    tenant: &str,
    environment_id: &str,
) -> Result<Option<EnvironmentRow>, QueryError> {
    let mut sql = select::<EnvironmentRow>(Dialect::of(store));
    let id = sql.arg(format!("{tenant}:{environment_id}"));
    let t = sql.arg(tenant);
    sql.push(&format!(" WHERE id = {id} AND tenant = {t}"));
    Ok(sql.fetch(store).await?.into_iter().next())
}

/// Active environments of every tenant, by tenant and name: what the schedulers
/// visit (each job then picks the ones it applies to).
pub async fn active_environments(store: &Store) -> Result<Vec<EnvironmentRow>, QueryError> {
    let mut sql = select::<EnvironmentRow>(Dialect::of(store));
    sql.push(" WHERE status = 'active' ORDER BY tenant, name, id");
    Ok(sql.fetch(store).await?)
}

/// Environments of every tenant whose promotion slot a deployment holds.
pub async fn with_running_deployment(store: &Store) -> Result<Vec<EnvironmentRow>, QueryError> {
    let mut sql = select::<EnvironmentRow>(Dialect::of(store));
    sql.push(" WHERE running_deployment_id IS NOT NULL ORDER BY id");
    Ok(sql.fetch(store).await?)
}
