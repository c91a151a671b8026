//! The workflow matrix (which workflow runs where, in which state) and untracked
//! workflows (queries; the mapping mutations are in `mappings`).

use async_graphql::connection::Connection;
use async_graphql::connection::PageInfo;
use async_graphql::parser::types::Field;
use async_graphql::{Context, ContextSelectionSet, Object, Positioned, SimpleObject, ID};
use chrono::{DateTime, Utc};
use projections::json_str::{JsonStr, OwnedJsonStr};
use projections::models::matrix::{
    self as model, MatrixFilter, RowKind, RowStatus, ShownCellView, ShownRowView,
};

use super::inline::{InlineList, PlainFields};
use super::types::{connection, MappingStatus, SyncState};
use super::{app, caller, wait_for, ApiError};

/// A canonical workflow (or an untracked n8n workflow) and its state in each
/// environment.
pub struct MatrixRow {
    row: model::ShownRow,
    /// One per environment column, `ABSENT` where the workflow does not exist, in
    /// environment order.
    cells: Vec<MatrixCell>,
}

impl MatrixRow {
    /// The row of `view` with one cell per environment of `columns`.
    fn new(view: ShownRowView, columns: &[String]) -> MatrixRow {
        let mut cells = Vec::with_capacity(columns.len().max(view.cells.len()));
        cells.extend(view.cells.into_iter().map(MatrixCell::Shown));
        let in_order =
            |cells: &[MatrixCell]| cells.is_sorted_by(|a, b| a.environment() <= b.environment());
        // stored in environment order (decision 63): sorted already
        if !in_order(&cells) {
            cells.sort_by(|a, b| a.environment().cmp(&b.environment()));
        }
        let shown = cells.len();
        for column in columns {
            let found = cells[..shown]
                .binary_search_by(|c| c.environment().get().as_ref().cmp(column.as_str()))
                .is_ok();
            if !found {
                cells.push(MatrixCell::absent(column));
            }
        }
        if !in_order(&cells) {
            cells.sort_by(|a, b| a.environment().cmp(&b.environment()));
        }
        MatrixRow {
            row: view.row,
            cells,
        }
    }
}

/// A workflow's state in one environment: its mapping's cell as the page read it
/// (its strings still in the row's stored text, decision 69), or `ABSENT`.
pub enum MatrixCell {
    Shown(ShownCellView),
    Absent(OwnedJsonStr),
}

impl MatrixCell {
    fn absent(environment_id: &str) -> MatrixCell {
        MatrixCell::Absent(OwnedJsonStr::new(environment_id))
    }

    fn environment(&self) -> JsonStr<'_> {
        match self {
            MatrixCell::Shown(view) => view.cell.environment_id(),
            MatrixCell::Absent(id) => id.as_json_str(),
        }
    }

    fn shown(&self) -> Option<&ShownCellView> {
        match self {
            MatrixCell::Shown(view) => Some(view),
            MatrixCell::Absent(_) => None,
        }
    }
}

/// What the value path gives for a string.
fn owned(text: Option<JsonStr<'_>>) -> Option<String> {
    text.map(|t| t.get().into_owned())
}

#[Object]
impl MatrixCell {
    async fn environment_id(&self) -> ID {
        ID(self.environment().get().into_owned())
    }
    async fn mapping_status(&self) -> MappingStatus {
        self.shown()
            .map_or(MappingStatus::Absent, |v| v.cell.status.into())
    }
    async fn sync_state(&self) -> SyncState {
        self.shown()
            .map_or(SyncState::None, |v| v.sync_state.into())
    }
    #[graphql(name = "n8nWorkflowId")]
    async fn n8n_workflow_id(&self) -> Option<String> {
        owned(self.shown().map(|v| v.cell.n8n_workflow_id()))
    }
    /// The workflow's name in that environment.
    async fn name(&self) -> Option<String> {
        owned(self.shown().map(|v| v.cell.name()))
    }
    async fn env_content_hash(&self) -> Option<String> {
        owned(self.shown().and_then(|v| v.cell.env_content_hash()))
    }
    /// The Git hash the environment is compared with.
    async fn git_content_hash(&self) -> Option<String> {
        owned(
            self.shown()
                .and_then(ShownCellView::effective_git_content_hash),
        )
    }
    /// Since when the mapping has had its status.
    async fn since(&self) -> Option<DateTime<Utc>> {
        self.shown().map(|v| v.cell.status_since)
    }
    /// When n8n last changed the workflow.
    async fn env_changed_at(&self) -> Option<DateTime<Utc>> {
        self.shown().and_then(|v| v.cell.env_changed_at)
    }
}

impl PlainFields for MatrixCell {
    fn plain_field(&self, name: &str) -> Option<async_graphql::Value> {
        use async_graphql::resolver_utils::enum_value;
        use async_graphql::{ScalarType, Value};
        fn opt<T: ScalarType>(value: Option<T>) -> Value {
            value.as_ref().map_or(Value::Null, ScalarType::to_value)
        }
        let shown = self.shown();
        Some(match name {
            "environmentId" => Value::String(self.environment().get().into_owned()),
            "mappingStatus" => {
                enum_value(shown.map_or(MappingStatus::Absent, |v| v.cell.status.into()))
            }
            "syncState" => enum_value(shown.map_or(SyncState::None, |v| v.sync_state.into())),
            "n8nWorkflowId" => opt(owned(shown.map(|v| v.cell.n8n_workflow_id()))),
            "name" => opt(owned(shown.map(|v| v.cell.name()))),
            "envContentHash" => opt(owned(shown.and_then(|v| v.cell.env_content_hash()))),
            "gitContentHash" => opt(owned(
                shown.and_then(ShownCellView::effective_git_content_hash),
            )),
            "since" => opt(shown.map(|v| v.cell.status_since)),
            "envChangedAt" => opt(shown.and_then(|v| v.cell.env_changed_at)),
            _ => return None,
        })
    }

    fn write_plain_field(&self, name: &str, out: &mut Vec<u8>) -> bool {
        use super::inline::{write_enum, write_json_str, write_time};
        fn text(value: Option<JsonStr<'_>>, out: &mut Vec<u8>) {
            match value {
                Some(text) => write_json_str(text, out),
                None => out.extend_from_slice(b"null"),
            }
        }
        fn time(value: Option<DateTime<Utc>>, out: &mut Vec<u8>) {
            match value {
                Some(at) => write_time(at, out),
                None => out.extend_from_slice(b"null"),
            }
        }
        let shown = self.shown();
        match name {
            "environmentId" => write_json_str(self.environment(), out),
            "mappingStatus" => write_enum(
                shown.map_or(MappingStatus::Absent, |v| v.cell.status.into()),
                out,
            ),
            "syncState" => write_enum(shown.map_or(SyncState::None, |v| v.sync_state.into()), out),
            "n8nWorkflowId" => text(shown.map(|v| v.cell.n8n_workflow_id()), out),
            "name" => text(shown.map(|v| v.cell.name()), out),
            "envContentHash" => text(shown.and_then(|v| v.cell.env_content_hash()), out),
            "gitContentHash" => text(
                shown.and_then(ShownCellView::effective_git_content_hash),
                out,
            ),
            "since" => time(shown.map(|v| v.cell.status_since), out),
            "envChangedAt" => time(shown.and_then(|v| v.cell.env_changed_at), out),
            _ => return false,
        }
        true
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

impl PlainFields for MatrixRow {
    fn plain_field(&self, name: &str) -> Option<async_graphql::Value> {
        use async_graphql::Value;
        fn text(value: Option<&str>) -> Value {
            value.map_or(Value::Null, |t| Value::String(t.to_string()))
        }
        let row = &self.row;
        Some(match name {
            "canonicalId" => text(row.canonical_id.as_deref()),
            "slug" => text(row.slug.as_deref()),
            "name" => Value::String(row.name.clone()),
            "untracked" => Value::Boolean(row.kind == RowKind::Untracked),
            "gitPath" => text(row.git_path.as_deref()),
            "gitContentHash" => text(row.git_content_hash.as_deref()),
            "gitCommitSha" => text(row.git_commit_sha.as_deref()),
            _ => return None,
        })
    }

    fn write_plain_field(&self, name: &str, out: &mut Vec<u8>) -> bool {
        use super::inline::write_str;
        fn text(value: Option<&str>, out: &mut Vec<u8>) {
            match value {
                Some(text) => write_str(text, out),
                None => out.extend_from_slice(b"null"),
            }
        }
        let row = &self.row;
        match name {
            "canonicalId" => text(row.canonical_id.as_deref(), out),
            "slug" => text(row.slug.as_deref(), out),
            "name" => write_str(&row.name, out),
            "untracked" => out.extend_from_slice(match row.kind {
                RowKind::Untracked => b"true",
                RowKind::Canonical => b"false",
            }),
            "gitPath" => text(row.git_path.as_deref(), out),
            "gitContentHash" => text(row.git_content_hash.as_deref(), out),
            "gitCommitSha" => text(row.git_commit_sha.as_deref(), out),
            _ => return false,
        }
        true
    }

    fn write_selected_field(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
        out: &mut Vec<u8>,
    ) -> bool {
        field.node.name.node == "cells"
            && super::inline::write_selected_list(ctx, &self.cells, field, out)
    }
}

/// The matrix's page as a Relay connection: the `MatrixRowConnection` that
/// async-graphql's `Connection<String, MatrixRow>` gives (the same fields,
/// descriptions and values), with its edges resolved as one [`InlineList`] and so
/// written as JSON text in one pass, rows and cells, when the request allows it
/// (decision 71).
pub struct MatrixRowConnection {
    edges: Vec<MatrixRowEdge>,
    has_next_page: bool,
}

impl MatrixRowConnection {
    fn new(page: projections::query::Page<ShownRowView>, columns: &[String]) -> Self {
        let edges = page
            .cursors
            .into_iter()
            .zip(page.items)
            .map(|(cursor, view)| MatrixRowEdge {
                cursor,
                node: MatrixRow::new(view, columns),
            })
            .collect();
        MatrixRowConnection {
            edges,
            has_next_page: page.has_next_page,
        }
    }
}

#[Object]
impl MatrixRowConnection {
    /// Information to aid in pagination.
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_previous_page: false,
            has_next_page: self.has_next_page,
            start_cursor: self.edges.first().map(|e| e.cursor.clone()),
            end_cursor: self.edges.last().map(|e| e.cursor.clone()),
        }
    }
    /// A list of edges.
    async fn edges(&self) -> InlineList<'_, MatrixRowEdge> {
        InlineList(&self.edges)
    }
    /// A list of nodes.
    async fn nodes(&self) -> Vec<&MatrixRow> {
        self.edges.iter().map(|e| &e.node).collect()
    }
}

/// An edge in a connection.
pub struct MatrixRowEdge {
    cursor: String,
    node: MatrixRow,
}

/// An edge in a connection.
#[Object]
impl MatrixRowEdge {
    /// The item at the end of the edge
    async fn node(&self) -> &MatrixRow {
        &self.node
    }
    /// A cursor for use in pagination
    async fn cursor(&self) -> &str {
        &self.cursor
    }
}

impl PlainFields for MatrixRowEdge {
    fn plain_field(&self, name: &str) -> Option<async_graphql::Value> {
        (name == "cursor").then(|| async_graphql::Value::String(self.cursor.clone()))
    }

    fn write_plain_field(&self, name: &str, out: &mut Vec<u8>) -> bool {
        let cursor = name == "cursor";
        if cursor {
            super::inline::write_str(&self.cursor, out);
        }
        cursor
    }

    fn write_selected_field(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
        out: &mut Vec<u8>,
    ) -> bool {
        field.node.name.node == "node"
            && super::inline::write_selected_object(ctx, &self.node, field, out)
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
    ) -> async_graphql::Result<MatrixRowConnection> {
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
            model::shown_page(
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
        Ok(MatrixRowConnection::new(page, &columns))
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
        let page = model::shown_page(
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
                env_content_hash: owned(cell.as_ref().and_then(|c| c.env_content_hash())),
                since: cell.as_ref().map(|c| c.status_since),
                env_changed_at: cell.as_ref().and_then(|c| c.env_changed_at),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
    use chrono::TimeZone;

    use super::*;
    use crate::graphql::WrittenRaw;

    struct Cells(Vec<MatrixCell>);

    #[Object]
    impl Cells {
        /// async-graphql's own resolution, field future by field future.
        async fn resolved(&self) -> &[MatrixCell] {
            &self.0
        }
        async fn inline(&self) -> InlineList<'_, MatrixCell> {
            InlineList(&self.0)
        }
    }

    /// A row as a page reads it: cells stored as the projection stores them, read
    /// back as shown cells; one with its own Git hash, one compared with the row's,
    /// one whose strings need escapes (a fourth column, `staging`, has none).
    fn shown_row(id: &str, name: &str, untracked: bool) -> ShownRowView {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let stored = |environment: &str, name: &str, git: Option<String>| model::MatrixCell {
            id: format!("m-{environment}"),
            tenant: "t".into(),
            row_id: format!("t:{id}"),
            environment_id: environment.into(),
            n8n_workflow_id: format!("n8n-{environment}"),
            canonical_id: Some(id.into()),
            name: name.into(),
            status: aggregates::mapping::MappingStatus::Linked,
            env_content_hash: Some("a".repeat(64)),
            git_content_hash: git,
            env_changed_at: Some(at),
            status_since: at + chrono::Duration::microseconds(123_456),
            updated_at: at,
        };
        let text = serde_json::to_string(&model::RowCells(vec![
            stored("dev", "tab\there é", None),
            stored("prod", "Orders \"daily\"", Some("b".repeat(64))),
            stored("qa", name, Some("a".repeat(64))),
        ]))
        .unwrap();
        let row = model::ShownRow {
            id: format!("t:{id}"),
            kind: if untracked {
                RowKind::Untracked
            } else {
                RowKind::Canonical
            },
            canonical_id: (!untracked).then(|| id.into()),
            n8n_workflow_id: untracked.then(|| "n8n-x".into()),
            name: name.into(),
            sort_key: name.to_lowercase(),
            slug: (!untracked).then(|| format!("slug-{id}")),
            status: RowStatus::Active,
            git_path: (!untracked).then(|| format!("workflows/{id}.json")),
            git_content_hash: Some("c".repeat(64)),
            git_commit_sha: None,
            git_changed_at: Some(at - chrono::Duration::hours(1)),
            cells: model::ShownCells::read(&text).unwrap(),
        };
        ShownRowView::new(row, &MatrixFilter::default())
    }

    const COLUMNS: [&str; 4] = ["dev", "prod", "qa", "staging"];

    #[tokio::test]
    async fn plain_cell_fields_are_what_their_resolvers_give() {
        let view = shown_row("wf", "Orders", false);
        let cells = MatrixRow::new(view, &COLUMNS.map(String::from)).cells;
        let schema = Schema::new(Cells(cells), EmptyMutation, EmptySubscription);
        // every field of the type, plainly, aliased and repeated, and through a
        // fragment
        let introspected = schema
            .execute(r#"{ __type(name: "MatrixCell") { fields { name } } }"#)
            .await
            .data
            .into_json()
            .unwrap();
        let fields: Vec<String> = introspected["__type"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(fields.len(), 9, "{fields:?}");
        let all = fields.join(" ");
        let query = |list: &str| {
            format!(
                "{{ {list} {{ {all} __typename again: name ...F }} }} \
                 fragment F on MatrixCell {{ since }}"
            )
        };
        let resolved = schema.execute(query("resolved")).await;
        let inline = schema.execute(query("inline")).await;
        assert!(resolved.errors.is_empty(), "{:?}", resolved.errors);
        assert!(inline.errors.is_empty(), "{:?}", inline.errors);
        let resolved = resolved.data.into_json().unwrap();
        let inline = inline.data.into_json().unwrap();
        assert_eq!(resolved["resolved"], inline["inline"]);
        let expected = serde_json::json!([
            ["dev", "LINKED", "DRIFT", "tab\there é", "c".repeat(64)],
            [
                "prod",
                "LINKED",
                "DRIFT",
                "Orders \"daily\"",
                "b".repeat(64)
            ],
            ["qa", "LINKED", "IN_SYNC", "Orders", "a".repeat(64)],
            ["staging", "ABSENT", "NONE", null, null],
        ]);
        let got: Vec<serde_json::Value> = inline["inline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                serde_json::json!([
                    c["environmentId"],
                    c["mappingStatus"],
                    c["syncState"],
                    c["name"],
                    c["gitContentHash"]
                ])
            })
            .collect();
        assert_eq!(serde_json::Value::Array(got), expected);
        assert_eq!(inline["inline"][3]["since"], serde_json::Value::Null);
        for field in &fields {
            assert!(
                MatrixCell::absent("x").plain_field(field).is_some(),
                "{field} is resolved, not given plainly"
            );
        }

        // Written as text while resolved (the HTTP handler's way): the same JSON as
        // async-graphql's own resolution, written by serde.
        let written = |query: String, raw: bool| {
            let schema = &schema;
            async move {
                let mut request = async_graphql::Request::new(query);
                if raw {
                    request = request.data(WrittenRaw);
                }
                let response = schema.execute(request).await;
                assert!(response.errors.is_empty(), "{:?}", response.errors);
                let text = crate::graphql::write_response(&response).unwrap();
                let binary = |v: &async_graphql::Value| match v {
                    async_graphql::Value::Object(o) => o
                        .values()
                        .any(|v| matches!(v, async_graphql::Value::Binary(_))),
                    _ => false,
                };
                (
                    serde_json::from_slice::<serde_json::Value>(&text).unwrap(),
                    binary(&response.data),
                )
            }
        };
        let plain = format!(
            "{{ resolved {{ {all} __typename again: name ...F }} \
             inline {{ {all} __typename again: name ...F }} }} \
             fragment F on MatrixCell {{ n: name }}"
        );
        let (json, raw) = written(plain.clone(), true).await;
        assert!(raw, "every field is plain: the list is written as text");
        assert_eq!(json["data"]["resolved"], json["data"]["inline"]);
        assert_eq!(
            json["data"]["inline"][0]["since"],
            "2026-03-01T12:00:00.123456+00:00"
        );
        assert_eq!(json["data"]["inline"][1]["name"], "Orders \"daily\"");
        assert_eq!(
            json["data"]["inline"][0]["envChangedAt"],
            "2026-03-01T12:00:00+00:00"
        );
        assert_eq!(json["data"]["inline"][3]["__typename"], "MatrixCell");
        // without the handler's data, and with a repeated key, values as before
        let (plain_json, raw) = written(plain, false).await;
        assert!(!raw);
        assert_eq!(plain_json, json);
        let (repeated, raw) = written(query("inline"), true).await;
        assert!(!raw, "a repeated key merges through values");
        assert_eq!(repeated["data"]["inline"], inline["inline"]);
    }

    struct Rows(MatrixRowConnection);

    #[Object]
    impl Rows {
        async fn page(&self) -> &MatrixRowConnection {
            &self.0
        }
    }

    /// The written page (decision 71): rows, edges and cells in one text, the same
    /// JSON as the values async-graphql resolves field by field; the value path
    /// wherever a selection cannot be written (a repeated key at any depth, an
    /// argument), and the text only with `WrittenRaw`.
    #[tokio::test]
    async fn a_written_page_is_what_resolving_it_gives() {
        let page = projections::query::Page {
            items: vec![
                shown_row("wf-1", "Orders", false),
                shown_row("wf-2", "Odd \"one\"", true),
            ],
            cursors: vec!["c1".into(), "c\"2".into()],
            has_next_page: true,
            end_cursor: Some("c\"2".into()),
        };
        let connection = MatrixRowConnection::new(page, &COLUMNS.map(String::from));
        let schema = Schema::new(Rows(connection), EmptyMutation, EmptySubscription);
        let cell_fields = "environmentId mappingStatus syncState n8nWorkflowId name \
                           envContentHash gitContentHash since envChangedAt __typename";
        let row_fields = format!(
            "canonicalId slug name untracked gitPath gitContentHash gitCommitSha \
             __typename cells {{ {cell_fields} }}"
        );
        // as the HTTP handler does: `WrittenRaw` unless a key may be merged
        let merges = |query: &str| {
            crate::graphql::guard::merges_keys(&async_graphql::parser::parse_query(query).unwrap())
        };
        let answer = |query: String, raw: bool| {
            let schema = &schema;
            async move {
                let raw = raw && !merges(&query);
                let mut request = async_graphql::Request::new(query);
                if raw {
                    request = request.data(WrittenRaw);
                }
                let response = schema.execute(request).await;
                assert!(response.errors.is_empty(), "{:?}", response.errors);
                let written = crate::graphql::write_response(&response).unwrap();
                let edges_written = matches!(
                    &response.data,
                    async_graphql::Value::Object(o) if matches!(
                        &o["page"],
                        async_graphql::Value::Object(p) if p.get("edges").is_some_and(|e| matches!(e, async_graphql::Value::Binary(_)))
                    )
                );
                (
                    serde_json::from_slice::<serde_json::Value>(&written).unwrap(),
                    edges_written,
                )
            }
        };
        let full = format!(
            "{{ page {{ pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} \
             edges {{ cursor __typename node {{ {row_fields} }} }} \
             nodes {{ name cells {{ environmentId }} }} }} }}"
        );
        let (written, raw) = answer(full.clone(), true).await;
        assert!(raw, "every field is written: the edges are one text");
        let (resolved, raw) = answer(full, false).await;
        assert!(!raw);
        assert_eq!(written, resolved);
        let edges = &written["data"]["page"]["edges"];
        assert_eq!(edges[1]["cursor"], "c\"2");
        assert_eq!(edges[1]["node"]["untracked"], true);
        assert_eq!(edges[1]["node"]["canonicalId"], serde_json::Value::Null);
        assert_eq!(edges[0]["node"]["slug"], "slug-wf-1");
        assert_eq!(edges[0]["node"]["cells"][1]["name"], "Orders \"daily\"");
        assert_eq!(edges[0]["node"]["cells"][3]["mappingStatus"], "ABSENT");
        assert_eq!(written["data"]["page"]["pageInfo"]["endCursor"], "c\"2");
        // fragments and aliases at every depth are written too
        let fragments = "{ page { edges { ...E } } } \
                         fragment E on MatrixRowEdge { c: cursor node { ... on MatrixRow { n: name cells { ...C } } } } \
                         fragment C on MatrixCell { e: environmentId s: syncState }"
            .to_string();
        let (written, raw) = answer(fragments.clone(), true).await;
        assert!(raw);
        assert_eq!(written, answer(fragments, false).await.0);
        assert_eq!(
            written["data"]["page"]["edges"][0]["node"]["cells"][0]["s"],
            "DRIFT"
        );
        // a key repeated in a row or a cell, directly or through a fragment: values
        // (async-graphql merges them; a list written as text could not take part)
        for query in [
            "{ page { edges { node { name name cells { name } } } } }",
            "{ page { edges { node { name cells { name } cells { since } } } } }",
            "{ page { edges { node { cells { name name } } } } }",
            "{ page { edges { node { cells { name } ...R } } } } \
             fragment R on MatrixRow { cells { since } }",
            "{ page { edges { node { cells { n: name ... on MatrixCell { n: name } } } } } }",
        ] {
            assert!(merges(query), "{query}");
            let (written, raw) = answer(query.to_string(), true).await;
            assert!(!raw, "{query}");
            assert_eq!(written, answer(query.to_string(), false).await.0, "{query}");
            assert!(
                written["data"]["page"]["edges"][0]["node"]["cells"][0]
                    .as_object()
                    .is_some(),
                "{query}"
            );
        }
        // a directive on a field leaves that list to the value path
        let directive = "{ page { edges { cursor node { name @include(if: true) } } } }";
        assert!(!merges(directive));
        let (written, _) = answer(directive.to_string(), true).await;
        assert_eq!(written, answer(directive.to_string(), false).await.0);
    }

    #[test]
    fn a_written_response_is_what_serde_writes() {
        use async_graphql::{Name, Number, ServerError, Value};
        let mut object = async_graphql::indexmap::IndexMap::new();
        object.insert(Name::new("t\"ext"), Value::String("a\nb\u{1}é".into()));
        object.insert(Name::new("n"), Value::Number(Number::from(-3)));
        object.insert(
            Name::new("f"),
            Value::Number(Number::from_f64(1.5).unwrap()),
        );
        object.insert(Name::new("e"), Value::Enum(Name::new("LINKED")));
        object.insert(Name::new("b"), Value::Boolean(false));
        object.insert(Name::new("bytes"), Value::Binary(vec![1u8, 2].into()));
        object.insert(
            Name::new("l"),
            Value::List(vec![Value::Null, Value::Boolean(true), Value::List(vec![])]),
        );
        let mut response = async_graphql::Response::new(Value::Object(object));
        response
            .extensions
            .insert("x".into(), Value::String("y".into()));
        response
            .errors
            .push(ServerError::new("bad \"input\"", None));
        // times as the scalar gives them: every fraction width, the edges of the
        // years written plainly, and what falls back to chrono
        let base = Utc.with_ymd_and_hms(2026, 12, 6, 23, 59, 58).unwrap();
        let mut times = vec![
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
            chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
                .unwrap()
                .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
                .unwrap()
                .and_utc(),
        ];
        for nanos in [
            0,
            1,
            7_000_000,
            120_000_000,
            123_456_000,
            100_000,
            999_999_999,
            50,
        ] {
            times.push(base + chrono::Duration::nanoseconds(nanos));
        }
        for at in times {
            let mut out = Vec::new();
            crate::graphql::inline::write_time(at, &mut out);
            let expected = serde_json::to_vec(&at.to_rfc3339()).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
        for text in ["", "plain", "q\"b\\s/", "\u{0}\u{1f}\u{7f}\t\r", "é ∑ 😀"] {
            let mut out = Vec::new();
            crate::graphql::inline::write_str(text, &mut out);
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
        for response in [response, async_graphql::Response::default()] {
            assert_eq!(
                String::from_utf8(crate::graphql::write_response(&response).unwrap()).unwrap(),
                serde_json::to_string(&response).unwrap()
            );
        }
    }
}
