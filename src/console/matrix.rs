//! `GET /matrix`: canonical workflows × environments, as the `workflowMatrix` query
//! reads them (the same read model and filters).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped};
use projections::display::SyncState;
use projections::models::environments::EnvironmentRow;
use projections::models::matrix::{self as model, MatrixFilter, ShownCellView, ShownRowView};
use serde::Deserialize;

use super::layout::{self, time};
use super::session;
use crate::http::HttpState;

/// Rows per page.
const PAGE: i64 = 50;
/// Longest name search accepted.
const MAX_SEARCH: usize = 200;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    drift: Option<String>,
    #[serde(default)]
    untracked: Option<String>,
    #[serde(default)]
    after: Option<String>,
}

impl Params {
    fn env(&self) -> Option<&str> {
        self.env.as_deref().filter(|e| !e.is_empty())
    }
    fn search(&self) -> Option<&str> {
        self.q.as_deref().map(str::trim).filter(|q| !q.is_empty())
    }
    fn on(flag: &Option<String>) -> bool {
        flag.as_deref().is_some_and(|v| v == "1" || v == "on")
    }
    fn filter(&self) -> MatrixFilter {
        MatrixFilter {
            environment_ids: self.env().map(|e| vec![e.to_string()]),
            search: self.search().map(str::to_string),
            only_drift: Self::on(&self.drift),
            untracked_only: Self::on(&self.untracked),
            ..Default::default()
        }
    }
    /// This page's query string with one parameter changed (`None`: removed), and
    /// without the cursor (a filter change starts again from the first page).
    fn with(&self, key: &str, value: Option<&str>) -> String {
        let mut pairs: Vec<(&str, String)> = vec![];
        let mut set = |k: &'static str, v: Option<String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                pairs.push((k, v));
            }
        };
        let current = |k: &str, own: Option<String>| {
            if k == key {
                value.map(str::to_string)
            } else {
                own
            }
        };
        set("env", current("env", self.env().map(str::to_string)));
        set("q", current("q", self.search().map(str::to_string)));
        set(
            "drift",
            current("drift", Self::on(&self.drift).then(|| "1".into())),
        );
        set(
            "untracked",
            current("untracked", Self::on(&self.untracked).then(|| "1".into())),
        );
        if key == "after" {
            set("after", value.map(str::to_string));
        }
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        format!("/matrix?{query}")
    }
}

pub async fn page(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    let session = match session(&state, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    if params.q.as_deref().is_some_and(|q| q.len() > MAX_SEARCH) {
        return layout::error_page(
            Some(&session),
            StatusCode::BAD_REQUEST,
            "Search too long",
            &format!("A name search is at most {MAX_SEARCH} characters."),
        );
    }
    let tenant = session.principal.tenant.as_str();
    // The page's content depends on the tenant, the query and the read models
    // only: it is cached while the read models do not change, as the API's
    // answers are (`response_cache`), and framed per session.
    let key = axum::body::Bytes::from(format!(
        "console:{}",
        params.with("after", params.after.as_deref())
    ));
    let version = state.context.projections.read_version();
    if let Some(cached) = version.and_then(|v| state.cache.get(tenant, &key, v)) {
        let body = PreEscaped(String::from_utf8_lossy(&cached).into_owned());
        return framed(&session, body);
    }
    let body = match content(&state, tenant, &params).await {
        Ok(body) => body,
        Err(page) => return page(&session),
    };
    if let Some(version) = version {
        if state.context.projections.read_version() == Some(version) {
            let bytes = axum::body::Bytes::from(body.0.clone());
            state.cache.put(tenant, key, version, bytes);
        }
    }
    framed(&session, body)
}

fn framed(session: &super::Session, body: Markup) -> Response {
    (
        StatusCode::OK,
        layout::page(Some(session), "Workflow matrix", body),
    )
        .into_response()
}

/// Why the content could not be built: the page that says so, for a session.
type Failed = Box<dyn FnOnce(&super::Session) -> Response + Send>;

/// The page's content: filters with their counts, the rows, the next page's link.
async fn content(state: &HttpState, tenant: &str, params: &Params) -> Result<Markup, Failed> {
    let store = &state.context.store;
    let filter = params.filter();
    let loaded = async {
        let environments = projections::models::environments::environments(store, tenant).await?;
        // the counts each filter shows: the rows it would select, the others as set
        let count = |f: MatrixFilter| async move { model::matrix_count(store, tenant, &f).await };
        let (page, env_counts, all_envs, drift, untracked, matching) = tokio::try_join!(
            model::shown_page(store, tenant, &filter, PAGE, params.after.as_deref()),
            model::matrix_counts_by_environment(store, tenant, &filter),
            count(MatrixFilter {
                environment_ids: None,
                ..filter.clone()
            }),
            count(MatrixFilter {
                only_drift: true,
                ..filter.clone()
            }),
            count(MatrixFilter {
                untracked_only: true,
                ..filter.clone()
            }),
            count(filter.clone()),
        )?;
        Ok::<_, projections::query::QueryError>((
            environments,
            page,
            env_counts,
            (all_envs, drift, untracked, matching),
        ))
    };
    let (environments, page, env_counts, (all_envs, drift, untracked, matching)) =
        match loaded.await {
            Ok(loaded) => loaded,
            Err(projections::query::QueryError::Validation { message, .. }) => {
                return Err(Box::new(move |session| {
                    layout::error_page(
                        Some(session),
                        StatusCode::BAD_REQUEST,
                        "This page cannot be shown",
                        &format!("{message}. Start again from the first page."),
                    )
                }))
            }
            Err(error) => {
                tracing::warn!(%error, "console: the matrix cannot be read");
                return Err(Box::new(|session| {
                    layout::error_page(
                        Some(session),
                        StatusCode::SERVICE_UNAVAILABLE,
                        "The matrix cannot be read now",
                        "The database did not answer. Try again in a moment.",
                    )
                }));
            }
        };
    let columns: Vec<&EnvironmentRow> = environments
        .iter()
        .filter(|e| params.env().is_none_or(|id| id == e.environment_id))
        .collect();
    let body = html! {
        h1 { "Workflow matrix" }
        @if environments.is_empty() {
            p.empty { "No environment is registered yet. Register one (the "
                code { "registerEnvironment" } " mutation), sync it, and its workflows appear here." }
        } @else {
            form.filters method="get" action="/matrix" {
                label { "Environment"
                    select name="env" {
                        option value="" selected[params.env().is_none()] {
                            "All (" (all_envs) ")" }
                        @for env in &environments {
                            @let n = env_counts.iter().find(|(id, _)| *id == env.environment_id).map_or(0, |(_, n)| *n);
                            option value=(env.environment_id)
                                selected[params.env() == Some(env.environment_id.as_str())] {
                                (env.name) " (" (n) ")" }
                        }
                    }
                }
                label { "Name contains"
                    input type="search" name="q" maxlength=(MAX_SEARCH)
                        value=(params.search().unwrap_or_default());
                }
                label { span { input type="checkbox" name="drift" value="1"
                        checked[Params::on(&params.drift)];
                    " Drift only (" (drift) ")" } }
                label { span { input type="checkbox" name="untracked" value="1"
                        checked[Params::on(&params.untracked)];
                    " Untracked only (" (untracked) ")" } }
                button type="submit" { "Filter" }
                a href="/matrix" { "Clear" }
            }
            p.muted { (matching) @if matching == 1 { " workflow matches." } @else { " workflows match." } }
            @if page.items.is_empty() {
                p.empty { "No workflow matches these filters. "
                    a href="/matrix" { "Show all" } }
            } @else {
                div.scroll {
                    table {
                        caption.muted { "Each cell: mapping status, sync state, short content hash, since when." }
                        thead { tr {
                            th scope="col" { "Workflow" }
                            @for env in &columns { th scope="col" { (env.name) } }
                        } }
                        tbody {
                            @for row in &page.items { (row_markup(row, &columns)) }
                        }
                    }
                }
                @if page.has_next_page {
                    @if let Some(cursor) = &page.end_cursor {
                        p { a href=(params.with("after", Some(cursor))) rel="next" { "Next page →" } }
                    }
                }
            }
        }
    };
    Ok(body)
}

fn row_markup(row: &ShownRowView, columns: &[&EnvironmentRow]) -> Markup {
    html! {
        tr {
            th scope="row" {
                (row.row.name)
                @if row.row.kind == model::RowKind::Untracked { " " span.muted { "(untracked)" } }
            }
            @for env in columns {
                td {
                    @match row.cells.iter().find(|c| c.cell.environment_id() == env.environment_id) {
                        Some(cell) => (cell_markup(cell)),
                        None => span.muted { "—" },
                    }
                }
            }
        }
    }
}

fn sync_name(state: SyncState) -> &'static str {
    match state {
        SyncState::InSync => "IN_SYNC",
        SyncState::Drift => "DRIFT",
        SyncState::OutOfDate => "OUT_OF_DATE",
        SyncState::None => "NONE",
    }
}

fn cell_markup(cell: &ShownCellView) -> Markup {
    let sync = sync_name(cell.sync_state);
    let hash = cell
        .cell
        .env_content_hash()
        .map(|h| h.get().chars().take(8).collect::<String>());
    // the workflow's history in this environment: its mapping's events
    let history = super::audit::history_url(
        "workflow_mapping",
        &format!(
            "{}:{}",
            cell.cell.environment_id(),
            cell.cell.n8n_workflow_id()
        ),
    );
    html! {
        a href=(history) title="this workflow's history in this environment" { (cell.cell.status.as_str()) }
        @if cell.sync_state != SyncState::None {
            " " span class=(format!("state {sync}")) { (sync) }
        }
        @if let Some(hash) = hash { br; span.hash title="content hash" { (hash) } }
        br; span.muted { "since " (time(cell.cell.status_since)) }
    }
}
