//! Credential mappings: one row per mapped source credential of a (source
//! environment, target environment) pair, as `credential_map` events leave them.

use crate::sql::QueryRows as _;
use aggregates::credentials::CredentialMapEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Envelope;
use crate::query::QueryError;
use crate::read_model_row;
use crate::runtime::ApplyError;
use crate::sql::{select, Dialect, KeyedRow, Rows, Tx};
use eventstore::Store;

pub const NAME: &str = "credential_mappings";

read_model_row! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct CredentialMappingRow in "rm_credential_mappings" {
        /// `["{aggregate id}", "{type}", "{source name}"]` as JSON: unambiguous
        /// whatever the names hold.
        pub id: String,
        pub tenant: String,
        pub source_environment_id: String,
        pub target_environment_id: String,
        pub credential_type: String,
        pub source_name: String,
        pub target_id: String,
        pub target_name: String,
        pub updated_by: String,
        pub updated_at: DateTime<Utc>,
    }
}

impl KeyedRow for CredentialMappingRow {
    fn id(&self) -> &str {
        &self.id
    }
}

fn row_id(aggregate_id: &str, credential_type: &str, source_name: &str) -> String {
    serde_json::json!([aggregate_id, credential_type, source_name]).to_string()
}

#[derive(Default)]
pub struct CredentialMappings {
    mappings: Rows<CredentialMappingRow>,
}

impl CredentialMappings {
    async fn fold(
        &mut self,
        _tx: &mut Tx,
        event: &Envelope,
        e: &CredentialMapEvent,
    ) -> Result<(), ApplyError> {
        let aggregate_id = &event.stored.aggregate_id;
        let mut parts = event.id().into_iter().flat_map(|id| id.parts());
        let (Some(source), Some(target), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ApplyError::Event(format!(
                "credential map id {aggregate_id} is not source:target"
            )));
        };
        match e {
            CredentialMapEvent::Set {
                credential_type,
                source_name,
                target_id,
                target_name,
            } => self.mappings.put(CredentialMappingRow {
                id: row_id(aggregate_id, credential_type, source_name),
                tenant: event.tenant().to_string(),
                source_environment_id: source.to_string(),
                target_environment_id: target.to_string(),
                credential_type: credential_type.clone(),
                source_name: source_name.clone(),
                target_id: target_id.clone(),
                target_name: target_name.clone(),
                updated_by: event.meta.actor.clone().unwrap_or_default(),
                updated_at: event.at(),
            }),
            CredentialMapEvent::Removed {
                credential_type,
                source_name,
            } => self
                .mappings
                .delete(&row_id(aggregate_id, credential_type, source_name)),
        }
        Ok(())
    }
}

crate::single_aggregate_projection!(
    CredentialMappings,
    NAME,
    "rm_credential_mappings",
    mappings,
    CredentialMap,
    "credential_map"
);

/// `tenant`'s credential mappings, optionally of one source and/or one target
/// environment, by source, target, type and source name.
pub async fn credential_mappings(
    store: &Store,
    tenant: &str,
    source_environment_id: Option<&str>,
    target_environment_id: Option<&str>,
) -> Result<Vec<CredentialMappingRow>, QueryError> {
    let mut sql = select::<CredentialMappingRow>(Dialect::of(store));
    let t = sql.arg(tenant);
    let mut filter = format!(" WHERE tenant = {t}");
    if let Some(source) = source_environment_id {
        let s = sql.arg(source);
        filter.push_str(&format!(" AND source_environment_id = {s}"));
    }
    if let Some(target) = target_environment_id {
        let g = sql.arg(target);
        filter.push_str(&format!(" AND target_environment_id = {g}"));
    }
    sql.push(&filter);
    sql.push(
        " ORDER BY source_environment_id, target_environment_id, credential_type, source_name",
    );
    Ok(sql.fetch(store).await?)
}
