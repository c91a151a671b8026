//! Drift policies: one row per recorded policy scope (the tenant default, or an
//! environment's override), and the effective policy of an environment resolved
//! from them: its override, else the tenant default, else the built-in defaults.

use crate::sql::QueryRows as _;
use aggregates::incident::IncidentPolicy;
use aggregates::kernel::error::DomainError;
use aggregates::policy::{DriftPolicyEvent, DriftPolicySettings, PolicyScope, TENANT_SCOPE};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Envelope;
use crate::query::QueryError;
use crate::read_model_row;
use crate::runtime::ApplyError;
use crate::sql::{select, Dialect, Json, KeyedRow, Rows, Tx};
use eventstore::Store;

pub const NAME: &str = "drift_policies";

read_model_row! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct DriftPolicyRow in "rm_drift_policies" {
        pub id: String,
        pub tenant: String,
        /// `tenant` for the tenant default, else the environment id.
        pub scope: String,
        /// JSON of the full policy (fields it lacks take their defaults).
        pub policy: Json<DriftPolicySettings>,
        pub updated_by: String,
        pub updated_at: DateTime<Utc>,
    }
}

impl KeyedRow for DriftPolicyRow {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Default)]
pub struct DriftPolicies {
    policies: Rows<DriftPolicyRow>,
}

impl DriftPolicies {
    async fn fold(
        &mut self,
        _tx: &mut Tx,
        event: &Envelope,
        e: &DriftPolicyEvent,
    ) -> Result<(), ApplyError> {
        let id = &event.stored.aggregate_id;
        match e {
            DriftPolicyEvent::PolicySet { policy, set_by, .. } => {
                self.policies.put(DriftPolicyRow {
                    id: id.clone(),
                    tenant: event.tenant().to_string(),
                    scope: event.local_id().to_string(),
                    policy: Json(*policy),
                    updated_by: set_by.clone(),
                    updated_at: event.at(),
                })
            }
            DriftPolicyEvent::PolicyCleared { .. } => self.policies.delete(id),
        }
        Ok(())
    }
}

crate::single_aggregate_projection!(
    DriftPolicies,
    NAME,
    "rm_drift_policies",
    policies,
    DriftPolicy,
    "drift_policy"
);

/// Where an effective policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicySource {
    /// The environment's own override.
    Environment,
    /// The tenant default.
    Tenant,
    /// Nothing recorded: the built-in defaults.
    Default,
}

/// The policy that applies, and which recorded policy it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectivePolicy {
    pub policy: DriftPolicySettings,
    pub source: PolicySource,
    /// The scope of the recorded policy (`tenant` or the environment id); `None` for
    /// the built-in defaults.
    pub scope: Option<String>,
    pub updated_by: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl EffectivePolicy {
    /// The subset an incident captures when it is detected.
    pub fn incident_policy(&self) -> IncidentPolicy {
        self.policy.incident_policy()
    }

    fn from_row(source: PolicySource, row: &DriftPolicyRow) -> Self {
        EffectivePolicy {
            policy: row.policy.0,
            source,
            scope: Some(row.scope.clone()),
            updated_by: Some(row.updated_by.clone()),
            updated_at: Some(row.updated_at),
        }
    }
}

/// The drift policy in force for `tenant`, or for one of its environments when
/// `environment_id` is given: the environment's override, else the tenant default,
/// else the built-in defaults. An id that cannot be an environment's (malformed, or
/// the reserved `tenant`) is `VALIDATION`; an unknown environment gets the tenant's.
pub async fn drift_policy(
    store: &Store,
    tenant: &str,
    environment_id: Option<&str>,
) -> Result<EffectivePolicy, QueryError> {
    let scope = environment_id
        .map(PolicyScope::environment)
        .transpose()
        .map_err(|e| match e {
            DomainError::Validation { message, .. } => {
                QueryError::validation("environmentId", message)
            }
            other => QueryError::validation("environmentId", other.to_string()),
        })?;
    let mut ids = vec![format!("{tenant}:{TENANT_SCOPE}")];
    if let Some(scope) = &scope {
        ids.push(format!("{tenant}:{scope}"));
    }
    let mut sql = select::<DriftPolicyRow>(Dialect::of(store));
    let list = sql.args(&ids);
    let t = sql.arg(tenant);
    sql.push(&format!(" WHERE id IN ({list}) AND tenant = {t}"));
    let rows: Vec<DriftPolicyRow> = sql.fetch(store).await?;
    let find = |scope: &str| rows.iter().find(|r| r.scope == scope);
    if let Some(row) = scope.as_ref().and_then(|s| find(s.as_str())) {
        return Ok(EffectivePolicy::from_row(PolicySource::Environment, row));
    }
    if let Some(row) = find(TENANT_SCOPE) {
        return Ok(EffectivePolicy::from_row(PolicySource::Tenant, row));
    }
    Ok(EffectivePolicy {
        policy: DriftPolicySettings::default(),
        source: PolicySource::Default,
        scope: None,
        updated_by: None,
        updated_at: None,
    })
}

/// Every recorded policy of `tenant`: the tenant default first, then the
/// environment overrides by environment id.
pub async fn drift_policies(
    store: &Store,
    tenant: &str,
) -> Result<Vec<DriftPolicyRow>, QueryError> {
    let mut sql = select::<DriftPolicyRow>(Dialect::of(store));
    let t = sql.arg(tenant);
    let default = sql.arg(TENANT_SCOPE);
    sql.push(&format!(
        " WHERE tenant = {t} ORDER BY CASE WHEN scope = {default} THEN 0 ELSE 1 END, scope"
    ));
    Ok(sql.fetch(store).await?)
}
