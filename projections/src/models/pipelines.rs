//! Pipelines: each pipeline's name, description, stages (with their gates) and
//! whether it is active. Listed in name order, like environments.

use crate::sql::QueryRows as _;
use aggregates::pipeline::{PipelineEvent, PipelineStage};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Envelope;
use crate::query::{by_id, decode_cursor, page, page_size, Page, QueryError};
use crate::read_model_row;
use crate::runtime::ApplyError;
use crate::sql::{select, Dialect, Json, KeyedRow, Rows, Tx};
use eventstore::Store;

pub const NAME: &str = "pipelines";

read_model_row! {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct PipelineRow in "rm_pipelines" {
        pub id: String,
        pub tenant: String,
        pub pipeline_id: String,
        pub name: String,
        /// The name lowercased in Rust (the same on both backends): the list order.
        pub sort_key: String,
        pub description: Option<String>,
        /// JSON list of the stages, each `{source_environment_id,
        /// target_environment_id, gates: {…}}`, in pipeline order.
        pub stages: Json<Vec<PipelineStage>>,
        pub active: bool,
        pub created_by: String,
        pub created_at: DateTime<Utc>,
        pub updated_at: DateTime<Utc>,
    }
}

impl KeyedRow for PipelineRow {
    fn id(&self) -> &str {
        &self.id
    }
}

fn sort_key(name: &str) -> String {
    name.to_lowercase()
}

#[derive(Default)]
pub struct Pipelines {
    pipelines: Rows<PipelineRow>,
}

impl Pipelines {
    async fn fold(
        &mut self,
        tx: &mut Tx,
        event: &Envelope,
        e: &PipelineEvent,
    ) -> Result<(), ApplyError> {
        let id = &event.stored.aggregate_id;
        let at = event.at();
        let mut row = match (self.pipelines.get(tx, id).await?, e) {
            (
                None,
                PipelineEvent::Created {
                    name,
                    description,
                    stages,
                    created_by,
                },
            ) => PipelineRow {
                id: id.clone(),
                tenant: event.tenant().to_string(),
                pipeline_id: event.local_id().to_string(),
                name: name.clone(),
                sort_key: sort_key(name),
                description: description.clone(),
                stages: Json(stages.clone()),
                active: true,
                created_by: created_by.clone(),
                created_at: at,
                updated_at: at,
            },
            (Some(row), _) => row,
            (None, _) => {
                return Err(ApplyError::Event(format!(
                    "pipeline {id} was never created"
                )))
            }
        };
        match e {
            PipelineEvent::Created { .. } => {}
            PipelineEvent::Updated {
                name,
                description,
                stages,
            } => {
                if let Some(name) = name {
                    row.name = name.clone();
                    row.sort_key = sort_key(name);
                }
                if let Some(description) = description {
                    row.description = description.clone();
                }
                if let Some(stages) = stages {
                    row.stages = Json(stages.clone());
                }
            }
            PipelineEvent::Deactivated { .. } => row.active = false,
            PipelineEvent::Reactivated { .. } => row.active = true,
        }
        row.updated_at = at;
        self.pipelines.put(row);
        Ok(())
    }
}

crate::single_aggregate_projection!(
    Pipelines,
    NAME,
    "rm_pipelines",
    pipelines,
    Pipeline,
    "pipeline"
);

/// Pipelines of `tenant` (active and deactivated), in name order (case-insensitive,
/// then id).
pub async fn pipelines(
    store: &Store,
    tenant: &str,
    first: i64,
    after: Option<&str>,
) -> Result<Page<PipelineRow>, QueryError> {
    let limit = page_size(first)?;
    let mut sql = select::<PipelineRow>(Dialect::of(store));
    let t = sql.arg(tenant);
    sql.push(&format!(" WHERE tenant = {t}"));
    if let Some(after) = after {
        let (key, id): (String, String) = decode_cursor(after)?;
        let (k, i) = (sql.arg(key), sql.arg(id));
        sql.push(&format!(" AND (sort_key, id) > ({k}, {i})"));
    }
    let l = sql.arg(limit + 1);
    sql.push(&format!(" ORDER BY sort_key, id LIMIT {l}"));
    let rows: Vec<PipelineRow> = sql.fetch(store).await?;
    Ok(page(rows, limit, |r| (r.sort_key.clone(), r.id.clone())))
}

/// One pipeline of `tenant` (`None` if it is not the tenant's).
pub async fn pipeline(
    store: &Store,
    tenant: &str,
    pipeline_id: &str,
) -> Result<Option<PipelineRow>, QueryError> {
    by_id(store, tenant, pipeline_id).await
}
