//! The workflow matrix (which workflow runs where, in which state) and untracked
//! workflows (queries; the mapping mutations are in `mappings`).

use async_graphql::connection::Connection;
use async_graphql::{Context, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use projections::models::matrix::{
    self as model, CellView, MatrixFilter, MatrixRowView, RowKind, RowStatus,
};

use super::inline::InlineList;
use super::types::{connection, MappingStatus, SyncState};
use super::{app, caller, wait_for, ApiError};

/// A canonical workflow (or an untracked n8n workflow) and its state in each
/// environment.
pub struct MatrixRow {
    row: model::MatrixRow,
    /// One per environment column, `ABSENT` where the workflow does not exist, in
    /// environment order.
    cells: Vec<MatrixCell>,
}

impl MatrixRow {
    /// The row of `view` with one cell per environment of `columns`.
    fn new(view: MatrixRowView, columns: &[String]) -> MatrixRow {
        let mut cells = Vec::with_capacity(columns.len().max(view.cells.len()));
        cells.extend(view.cells.into_iter().map(MatrixCell::from_view));
        for column in columns {
            // a handful of environments: a scan beats hashing copies of their ids
            if !cells[..]
                .iter()
                .any(|c| c.environment_id.as_str() == column)
            {
                cells.push(MatrixCell::absent(column));
            }
        }
        cells.sort_by(|a, b| a.environment_id.cmp(&b.environment_id));
        MatrixRow {
            row: view.row,
            cells,
        }
    }
}

#[derive(SimpleObject)]
pub struct MatrixCell {
    pub environment_id: ID,
    pub mapping_status: MappingStatus,
    pub sync_state: SyncState,
    #[graphql(name = "n8nWorkflowId")]
    pub n8n_workflow_id: Option<String>,
    /// The workflow's name in that environment.
    pub name: Option<String>,
    pub env_content_hash: Option<String>,
    /// The Git hash the environment is compared with.
    pub git_content_hash: Option<String>,
    /// Since when the mapping has had its status.
    pub since: Option<DateTime<Utc>>,
    /// When n8n last changed the workflow.
    pub env_changed_at: Option<DateTime<Utc>>,
}

impl MatrixCell {
    fn from_view(view: CellView) -> MatrixCell {
        MatrixCell {
            environment_id: ID(view.cell.environment_id),
            mapping_status: view.cell.status.into(),
            sync_state: view.sync_state.into(),
            n8n_workflow_id: Some(view.cell.n8n_workflow_id),
            name: Some(view.cell.name),
            env_content_hash: view.cell.env_content_hash,
            git_content_hash: view.effective_git_content_hash,
            since: Some(view.cell.status_since),
            env_changed_at: view.cell.env_changed_at,
        }
    }

    fn absent(environment_id: &str) -> MatrixCell {
        MatrixCell {
            environment_id: ID(environment_id.to_string()),
            mapping_status: MappingStatus::Absent,
            sync_state: SyncState::None,
            n8n_workflow_id: None,
            name: None,
            env_content_hash: None,
            git_content_hash: None,
            since: None,
            env_changed_at: None,
        }
    }
}

#[Object]
impl MatrixRow {
    /// Null for an untracked workflow (no canonical link).
    async fn canonical_id(&self) -> Option<ID> {
        self.row.canonical_id.clone().map(ID)
    }
    async fn slug(&self) -> Option<&str> {
        self.row.slug.as_deref()
    }
    async fn name(&self) -> &str {
        &self.row.name
    }
    /// Whether the row is a canonical workflow or an untracked n8n workflow.
    async fn untracked(&self) -> bool {
        self.row.kind == RowKind::Untracked
    }
    async fn git_path(&self) -> Option<&str> {
        self.row.git_path.as_deref()
    }
    async fn git_content_hash(&self) -> Option<&str> {
        self.row.git_content_hash.as_deref()
    }
    async fn git_commit_sha(&self) -> Option<&str> {
        self.row.git_commit_sha.as_deref()
    }
    /// One cell per environment column; `ABSENT` where the workflow does not exist.
    async fn cells(&self) -> InlineList<'_, MatrixCell> {
        InlineList(&self.cells)
    }
}

/// A workflow present in n8n with no canonical link.
#[derive(SimpleObject)]
pub struct UntrackedWorkflow {
    pub environment_id: ID,
    #[graphql(name = "n8nWorkflowId")]
    pub n8n_workflow_id: ID,
    pub name: String,
    pub env_content_hash: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub env_changed_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct MatrixQuery;

#[Object]
impl MatrixQuery {
    /// The workflow matrix of the caller's tenant in name order: one row per
    /// canonical workflow (and per untracked workflow), one cell per environment.
    #[graphql(complexity = "super::list_cost(first, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn workflow_matrix(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        environment_ids: Option<Vec<ID>>,
        search: Option<String>,
        #[graphql(default)] only_drift: bool,
        #[graphql(default)] include_untracked: Option<bool>,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Connection<String, MatrixRow>> {
        wait_for(ctx, model::NAME, min_position).await?;
        let tenant = caller(ctx)?.tenant();
        let store = &app(ctx)?.store;
        let environment_ids: Option<Vec<String>> =
            environment_ids.map(|ids| ids.into_iter().map(|id| id.0).collect());
        let filter = MatrixFilter {
            environment_ids: environment_ids.clone(),
            search,
            only_drift,
            canonical_only: include_untracked == Some(false),
            ..Default::default()
        };
        let (page, environments) = tokio::try_join!(
            model::matrix_page(
                store,
                tenant,
                &filter,
                super::types::first(first),
                after.as_deref()
            ),
            projections::models::environments::environments(store, tenant),
        )
        .map_err(ApiError::from)?;
        let columns: Vec<String> = environments
            .into_iter()
            .map(|e| e.environment_id)
            .filter(|id| environment_ids.as_ref().is_none_or(|ids| ids.contains(id)))
            .collect();
        Ok(connection(page, |view| MatrixRow::new(view, &columns)))
    }

    /// Workflows of one environment that n8n runs with no canonical link.
    #[graphql(complexity = "super::list_cost(first, child_complexity)")]
    async fn untracked_workflows(
        &self,
        ctx: &Context<'_>,
        environment_id: ID,
        first: Option<i32>,
        after: Option<String>,
        min_position: Option<i64>,
    ) -> async_graphql::Result<Connection<String, UntrackedWorkflow>> {
        wait_for(ctx, model::NAME, min_position).await?;
        let filter = MatrixFilter {
            environment_ids: Some(vec![environment_id.0.clone()]),
            untracked_only: true,
            row_status: Some(RowStatus::Untracked),
            ..Default::default()
        };
        let page = model::matrix_page(
            &app(ctx)?.store,
            caller(ctx)?.tenant(),
            &filter,
            super::types::first(first),
            after.as_deref(),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(connection(page, |view| {
            let cell = view.cells.into_iter().next().map(|c| c.cell);
            UntrackedWorkflow {
                environment_id: environment_id.clone(),
                n8n_workflow_id: ID(view.row.n8n_workflow_id.unwrap_or_default()),
                name: view.row.name,
                env_content_hash: cell.as_ref().and_then(|c| c.env_content_hash.clone()),
                since: cell.as_ref().map(|c| c.status_since),
                env_changed_at: cell.as_ref().and_then(|c| c.env_changed_at),
            }
        }))
    }
}
