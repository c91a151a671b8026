//! Promotions, deployments and snapshots in the console: the list, a comparison of
//! source and target that starts a promotion, each promotion's gates and actions
//! (approve, reject, deploy now or later, cancel), each deployment's live progress
//! (its events over the SSE stream re-render the progress from the read model),
//! recovery after a failure, and each environment's snapshots with restore.
//!
//! Every action runs the same use case as the API's mutation (`promotion::create`,
//! `promotion::restore`, `deployment::deploy`, the bus for the rest), which checks
//! the role and the transition again. Only the actions `VALID_TRANSITIONS` allows
//! from the current status and the role may run are offered.

use aggregates::deployment::{DeploymentCommand, DeploymentStatus, WorkflowDeployStatus};
use aggregates::kernel::command::Role;
use aggregates::kernel::ids::LocalId;
use aggregates::kernel::transitions::{allowed_targets, StateMachine};
use aggregates::promotion::{GateResult, PromotionCommand, PromotionStatus};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{html, Markup, PreEscaped};
use projections::models::deployments::{self as deployments_model, DeploymentRow};
use projections::models::environments::{environments, EnvironmentRow};
use projections::models::pipelines::pipelines;
use projections::models::promotions::{self as model, PromotionRow};
use projections::models::snapshots::snapshots as snapshots_of;
use serde::Deserialize;

use super::layout::{self, time};
use super::{explain, form_session, session, unavailable, Session};
use crate::http::HttpState;
use crate::workflows::deployment::{self as deployment_flow, recovery_options, Recovery};
use crate::workflows::promotion::{self, Change, PromoteError, PromotionRequest, RestoreRequest};

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/promotions", get(list).post(create))
        .route("/promotions/new", get(new_promotion))
        .route("/promotions/{id}", get(detail))
        .route("/promotions/{id}/action", post(action))
        .route("/deployments/{id}", get(deployment))
        .route("/deployments/{id}/progress", get(progress_fragment))
        .route("/deployments/{id}/cancel", post(cancel_deployment))
        .route("/environments/{id}/snapshots", get(snapshots))
        .route(
            "/environments/{id}/snapshots/{snapshot}/restore",
            post(restore),
        )
}

/// Rows per page of the list.
const PAGE: i64 = 50;

fn page(session: &Session, status: StatusCode, title: &str, body: Markup) -> Response {
    (status, layout::page(Some(session), title, body)).into_response()
}

fn not_found(session: &Session, what: &str) -> Response {
    layout::error_page(
        Some(session),
        StatusCode::NOT_FOUND,
        &format!("No such {what}"),
        &format!("This {what} does not exist (or is not your tenant's)."),
    )
}

fn bad_request(session: &Session, message: &str) -> Response {
    layout::error_page(
        Some(session),
        StatusCode::BAD_REQUEST,
        "This request cannot be read",
        message,
    )
}

/// Environment names by id (ids stay visible for an environment not listed).
struct Names(Vec<EnvironmentRow>);

impl Names {
    async fn load(
        state: &HttpState,
        tenant: &str,
    ) -> Result<Names, projections::query::QueryError> {
        Ok(Names(environments(&state.context.store, tenant).await?))
    }
    fn of(&self, id: &str) -> String {
        self.0
            .iter()
            .find(|e| e.environment_id == id)
            .map(|e| e.name.clone())
            .unwrap_or_else(|| id.to_string())
    }
    fn link(&self, id: &str) -> Markup {
        html! { a href=(format!("/environments/{id}/snapshots")) title=(id) { (self.of(id)) } }
    }
}

fn state_badge(name: &str) -> Markup {
    html! { span class=(format!("state {}", name.to_uppercase())) { (name) } }
}

fn nonempty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    after: Option<String>,
}

async fn list(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Response {
    let session = match session(&state, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    let tenant = session.principal.tenant.as_str();
    let status: Option<PromotionStatus> = nonempty(&params.status).and_then(|s| s.parse().ok());
    let target = nonempty(&params.target).filter(|t| t.len() <= 200);
    let names = match Names::load(&state, tenant).await {
        Ok(names) => names,
        Err(error) => return unavailable(&session, "Promotions", error),
    };
    let found = model::promotions(
        &state.context.store,
        tenant,
        status,
        target,
        PAGE,
        nonempty(&params.after),
    )
    .await;
    let found = match found {
        Ok(found) => found,
        Err(projections::query::QueryError::Store(error)) => {
            return unavailable(&session, "Promotions", error)
        }
        Err(error) => return bad_request(&session, &error.to_string()),
    };
    let next = found
        .end_cursor
        .as_ref()
        .filter(|_| found.has_next_page)
        .map(|cursor| {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            if let Some(s) = status {
                query.append_pair("status", s.as_str());
            }
            if let Some(t) = target {
                query.append_pair("target", t);
            }
            query.append_pair("after", cursor);
            format!("/promotions?{}", query.finish())
        });
    let body = html! {
        h1 { "Promotions" }
        p { a href="/promotions/new" { "Compare environments and start a promotion" } }
        form.filters method="get" action="/promotions" {
            label { "Status" select name="status" {
                option value="" { "any" }
                @for s in PromotionStatus::ALL {
                    option value=(s.as_str()) selected[status == Some(*s)] { (s.as_str()) }
                }
            } }
            label { "Target" select name="target" {
                option value="" { "any" }
                @for e in &names.0 {
                    option value=(e.environment_id) selected[target == Some(e.environment_id.as_str())] { (e.name) }
                }
            } }
            button type="submit" { "Filter" }
            a href="/promotions" { "Clear" }
        }
        @if found.items.is_empty() {
            p.empty { "No promotion matches. "
                @if names.0.len() < 2 { "Register at least two environments and a pipeline between them, then " }
                a href="/promotions/new" { "compare them to start one" } "." }
        } @else {
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Promotion" } th scope="col" { "From → to" }
                    th scope="col" { "Status" } th scope="col" { "Workflows" }
                    th scope="col" { "Created" } th scope="col" { "Deployment" }
                } }
                tbody { @for p in &found.items { tr {
                    th scope="row" { a href=(format!("/promotions/{}", p.promotion_id)) { (short(&p.promotion_id)) } }
                    td { (names.of(&p.source_environment_id)) " → " (names.of(&p.target_environment_id)) }
                    td { (state_badge(p.status.as_str())) }
                    td { (p.workflows.0.len()) }
                    td { (time(p.created_at)) br; span.muted { "by " (p.created_by) } }
                    td { @match &p.deployment_id {
                        Some(d) => a href=(format!("/deployments/{d}")) { (short(d)) },
                        None => span.muted { "none" },
                    } }
                } } }
            } }
            @if let Some(next) = next { p { a href=(next) rel="next" { "Next page →" } } }
        }
    };
    page(&session, StatusCode::OK, "Promotions", body)
}

/// The first 8 characters of an id (the whole id is in the link).
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[derive(Debug, Default, Deserialize)]
pub struct NewParams {
    /// `<pipeline id>/<source id>/<target id>`: a stage of a pipeline.
    #[serde(default)]
    stage: Option<String>,
}

/// The stages of the tenant's active pipelines, as (value, label).
async fn stages(
    state: &HttpState,
    tenant: &str,
    names: &Names,
) -> Result<Vec<(String, String)>, projections::query::QueryError> {
    let mut out = vec![];
    let mut after: Option<String> = None;
    loop {
        let found = pipelines(&state.context.store, tenant, 100, after.as_deref()).await?;
        for p in found.items.iter().filter(|p| p.active) {
            for stage in &p.stages.0 {
                out.push((
                    format!(
                        "{}/{}/{}",
                        p.pipeline_id, stage.source_environment_id, stage.target_environment_id
                    ),
                    format!(
                        "{}: {} → {}",
                        p.name,
                        names.of(&stage.source_environment_id),
                        names.of(&stage.target_environment_id)
                    ),
                ));
            }
        }
        if !found.has_next_page {
            return Ok(out);
        }
        after = found.end_cursor;
    }
}

fn parse_stage(value: &str) -> Option<(LocalId, LocalId, LocalId)> {
    let mut parts = value.split('/');
    let (p, s, t) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((
        LocalId::parse(p).ok()?,
        LocalId::parse(s).ok()?,
        LocalId::parse(t).ok()?,
    ))
}

/// `GET /promotions/new`: pick a pipeline stage; with one picked, what promoting
/// would do to each workflow, and (for admins) the form that creates it.
async fn new_promotion(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(params): Query<NewParams>,
) -> Response {
    let session = match session(&state, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    render_new(
        &state,
        &session,
        nonempty(&params.stage),
        StatusCode::OK,
        None,
    )
    .await
}

async fn render_new(
    state: &HttpState,
    session: &Session,
    stage: Option<&str>,
    status: StatusCode,
    problem: Option<Markup>,
) -> Response {
    let tenant = session.principal.tenant.as_str();
    let names = match Names::load(state, tenant).await {
        Ok(names) => names,
        Err(error) => return unavailable(session, "Pipelines", error),
    };
    let choices = match stages(state, tenant, &names).await {
        Ok(choices) => choices,
        Err(error) => return unavailable(session, "Pipelines", error),
    };
    let picked = stage.and_then(parse_stage);
    if stage.is_some() && picked.is_none() {
        return bad_request(
            session,
            "That is not a pipeline stage; pick one from the list.",
        );
    }
    let comparison = match &picked {
        Some((_, source, target)) if session.can_act() => {
            match promotion::comparison(&state.context, &session.command_context(), source, target)
                .await
            {
                Ok(rows) => Some(Ok(rows)),
                Err(PromoteError::Command(error)) => Some(Err(explain(&error).1)),
                Err(error) => Some(Err(format!("The comparison failed: {error}."))),
            }
        }
        _ => None,
    };
    let new_id = uuid::Uuid::new_v4().to_string();
    let body = html! {
        h1 { "New promotion" }
        @if let Some(problem) = problem { (problem) }
        @if choices.is_empty() {
            p.empty { "No pipeline has a stage yet. Create a pipeline (the "
                code { "createPipeline" } " mutation) with a stage from one environment to another." }
        } @else {
            form.filters method="get" action="/promotions/new" {
                label { "Pipeline stage" select name="stage" required {
                    @for (value, label) in &choices {
                        option value=(value) selected[stage == Some(value.as_str())] { (label) }
                    }
                } }
                button type="submit" { "Compare" }
            }
        }
        @if picked.is_some() && !session.can_act() {
            p.muted { "Comparing needs the developer role; starting a promotion needs the admin role." }
        }
        @match (&picked, comparison) {
            (Some((pipeline, source, target)), Some(Ok(rows))) => {
                h2 { (names.of(source.as_str())) " → " (names.of(target.as_str())) }
                @if rows.is_empty() {
                    p.empty { "Neither environment holds a workflow the matrix knows. Sync them first (Environments)." }
                } @else {
                    form method="post" action="/promotions" {
                        input type="hidden" name="csrf" value=(session.csrf);
                        input type="hidden" name="id" value=(new_id);
                        input type="hidden" name="pipeline" value=(pipeline.as_str());
                        input type="hidden" name="source" value=(source.as_str());
                        input type="hidden" name="target" value=(target.as_str());
                        div.scroll { table {
                            thead { tr {
                                th scope="col" { "Promote" } th scope="col" { "Workflow" } th scope="col" { "Change" }
                                th scope="col" { "Source hash" } th scope="col" { "Target hash" }
                            } }
                            tbody { @for (i, c) in rows.iter().enumerate() {
                                @let promotable = matches!(c.change, Change::New | Change::Changed);
                                @let box_id = format!("wf-{i}");
                                tr {
                                    td { @if promotable && session.is_admin() {
                                        input type="checkbox" id=(box_id) name="workflow" value=(c.canonical_id) checked;
                                    } }
                                    th scope="row" { label for=(box_id) { (c.name) }
                                        @if c.target_hotfix { br; span.error { "the target changed outside Git: promoting overwrites that hotfix" } } }
                                    td { (state_badge(change_name(c.change))) }
                                    td.hash { (c.source_content_hash.as_deref().map(|h| h.get(..12).unwrap_or(h)).unwrap_or("—")) }
                                    td.hash { (c.target_content_hash.as_deref().map(|h| h.get(..12).unwrap_or(h)).unwrap_or("—")) }
                                }
                            } }
                        } }
                        @if session.is_admin() {
                            p { label { input type="checkbox" name="bypass" value="1"; " Bypass the gates (recorded; the state machine still applies)" } }
                            button type="submit" { "Create promotion" }
                        } @else {
                            p.muted { "Starting a promotion needs the admin role." }
                        }
                    }
                }
            }
            (_, Some(Err(problem))) => { p.error role="alert" { (problem) } }
            _ => {}
        }
    };
    page(session, status, "New promotion", body)
}

fn change_name(change: Change) -> &'static str {
    match change {
        Change::New => "new",
        Change::Changed => "changed",
        Change::Unchanged => "unchanged",
        Change::NotInSource => "not_in_source",
    }
}

/// The create form: a field repeated per workflow, so read as pairs.
fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `POST /promotions`: creates the promotion the comparison form describes. The
/// form carries the new promotion's id, so a second submit finds it created.
async fn create(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let csrf = field(&pairs, "csrf").unwrap_or("");
    let session = match form_session(&state, &headers, csrf) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    let ids = (
        field(&pairs, "id").map(LocalId::parse),
        field(&pairs, "pipeline").map(LocalId::parse),
        field(&pairs, "source").map(LocalId::parse),
        field(&pairs, "target").map(LocalId::parse),
    );
    let (Some(Ok(id)), Some(Ok(pipeline)), Some(Ok(source)), Some(Ok(target))) = ids else {
        return bad_request(
            &session,
            "The form is incomplete; start again from the comparison.",
        );
    };
    let workflows: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "workflow")
        .map(|(_, v)| v.clone())
        .collect();
    let stage = format!("{pipeline}/{source}/{target}");
    if workflows.is_empty() {
        let problem = html! { p.error role="alert" { "Pick at least one workflow to promote." } };
        return render_new(
            &state,
            &session,
            Some(&stage),
            StatusCode::BAD_REQUEST,
            Some(problem),
        )
        .await;
    }
    let tenant = session.principal.tenant.as_str();
    // a double submit: the first one created it
    if let Ok(Some(_)) = model::promotion(&state.context.store, tenant, id.as_str()).await {
        return Redirect::to(&format!("/promotions/{id}")).into_response();
    }
    let request = PromotionRequest {
        promotion_id: id.clone(),
        pipeline_id: pipeline,
        source_environment_id: source,
        target_environment_id: target,
        workflow_ids: Some(workflows),
        bypass_validation: field(&pairs, "bypass") == Some("1"),
    };
    match promotion::create(&state.context, &session.command_context(), request).await {
        Ok(committed) => {
            settle(&state, model::NAME, committed.position).await;
            Redirect::to(&format!("/promotions/{id}")).into_response()
        }
        Err(PromoteError::GateBlocked {
            promotion_id,
            position,
            results,
        }) => {
            settle(&state, model::NAME, position).await;
            let problem = html! {
                div.error role="alert" {
                    p { strong { "GATE_BLOCKED: " } "a blocking gate failed, so the promotion was recorded as failed ("
                        a href=(format!("/promotions/{promotion_id}")) { "see it" } ")." }
                    (gates(&results))
                }
            };
            render_new(
                &state,
                &session,
                Some(&stage),
                StatusCode::CONFLICT,
                Some(problem),
            )
            .await
        }
        Err(PromoteError::Command(error)) => {
            let (status, message) = explain(&error);
            let problem = html! { p.error role="alert" { (message) } };
            render_new(&state, &session, Some(&stage), status, Some(problem)).await
        }
        Err(error) => {
            let problem = html! { p.error role="alert" { "The promotion could not be created: " (error.to_string()) } };
            render_new(
                &state,
                &session,
                Some(&stage),
                StatusCode::SERVICE_UNAVAILABLE,
                Some(problem),
            )
            .await
        }
    }
}

/// Waits (briefly) until `projection` holds `position`, so the next page shows it.
async fn settle(state: &HttpState, projection: &str, position: Option<i64>) {
    if let Some(position) = position {
        let _ = state
            .context
            .projections
            .wait_for(projection, position, std::time::Duration::from_secs(5))
            .await;
    }
}

fn gates(results: &[GateResult]) -> Markup {
    html! {
        @if results.is_empty() {
            p.muted { "No gate was checked." }
        } @else {
            div.scroll { table {
                thead { tr { th scope="col" { "Gate" } th scope="col" { "Result" } th scope="col" { "Blocking" } th scope="col" { "Message" } } }
                tbody { @for r in results { tr {
                    th scope="row" { (r.gate.as_str()) }
                    td { @if r.passed { span.state.IN_SYNC { "passed" } } @else { span.state.DRIFT { "failed" } } }
                    td { @if r.blocking { "yes" } @else { "no" } }
                    td { (r.message.as_deref().unwrap_or("")) }
                } } }
            } }
        }
    }
}

async fn detail(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = match session(&state, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    render_detail(&state, &session, &id, StatusCode::OK, None).await
}

async fn render_detail(
    state: &HttpState,
    session: &Session,
    id: &str,
    status: StatusCode,
    problem: Option<String>,
) -> Response {
    let tenant = session.principal.tenant.as_str();
    let promotion = match model::promotion(&state.context.store, tenant, id).await {
        Ok(Some(row)) => row,
        Ok(None) | Err(projections::query::QueryError::Validation { .. }) => {
            return not_found(session, "promotion")
        }
        Err(error) => return unavailable(session, "Promotions", error),
    };
    let names = match Names::load(state, tenant).await {
        Ok(names) => names,
        Err(error) => return unavailable(session, "Promotions", error),
    };
    let outcomes = promotion
        .result
        .as_ref()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let body = html! {
        h1 { "Promotion " (short(&promotion.promotion_id)) }
        @if let Some(problem) = &problem { p.error role="alert" { (problem) } }
        dl {
            dt { "Id" } dd.hash { (promotion.promotion_id) }
            dt { "From → to" } dd { (names.link(&promotion.source_environment_id)) " → " (names.link(&promotion.target_environment_id)) }
            @if let Some(snapshot) = &promotion.source_snapshot_id { dt { "Restores snapshot" } dd.hash { (snapshot) } }
            dt { "Status" } dd { (state_badge(promotion.status.as_str())) }
            dt { "Created" } dd { (time(promotion.created_at)) " by " (promotion.created_by)
                @if promotion.bypass_validation { " " strong { "(gates bypassed)" } } }
            @if promotion.requires_approval { dt { "Approval" } dd {
                @match (&promotion.approved_by, &promotion.rejected_by) {
                    (Some(by), _) => { "approved by " (by) },
                    (_, Some(by)) => { "rejected by " (by) },
                    _ => { "required" },
                }
            } }
            @if let Some(reason) = &promotion.reason { dt { "Reason" } dd { (reason) } }
            @if let Some(d) = &promotion.deployment_id { dt { "Deployment" } dd { a href=(format!("/deployments/{d}")) { (d) } } }
            @if let Some(at) = promotion.finished_at { dt { "Finished" } dd { (time(at)) } }
        }
        h2 { "Actions" }
        (actions(session, &promotion))
        h2 { "Gates" }
        (gates(promotion.gate_results.as_ref().map(|g| g.0.as_slice()).unwrap_or(&[])))
        h2 { "Workflows (" (promotion.workflows.0.len()) ")" }
        div.scroll { table {
            thead { tr { th scope="col" { "Workflow" } th scope="col" { "Source hash" } th scope="col" { "Outcome" } } }
            tbody { @for w in &promotion.workflows.0 {
                @let outcome = outcomes.iter().find(|o| o.canonical_id == w.canonical_id);
                tr {
                    th scope="row" { (w.name) }
                    td.hash { (w.source_content_hash.as_deref().map(|h| h.get(..12).unwrap_or(h)).unwrap_or("—")) }
                    td { @match outcome {
                        Some(o) => { (o.outcome) @if let Some(d) = &o.detail { br; span.muted { (d) } } },
                        None => span.muted { "not run" },
                    } }
                }
            } }
        } }
        @if let Some(inconsistencies) = promotion.inconsistencies.as_ref().filter(|i| !i.0.is_empty()) {
            h2 { "Inconsistencies" }
            ul { @for i in &inconsistencies.0 { li { (i) } } }
        }
    };
    page(session, status, &format!("Promotion {}", short(id)), body)
}

/// The forms of the moves the table allows from the promotion's status (every
/// promotion command needs the admin role).
fn actions(session: &Session, promotion: &PromotionRow) -> Markup {
    let targets = allowed_targets(promotion.status);
    let action = format!("/promotions/{}/action", promotion.promotion_id);
    let csrf = html! { input type="hidden" name="csrf" value=(session.csrf); };
    if targets.is_empty() {
        return html! { p.muted { "This promotion is " (promotion.status.as_str()) ": no action is left." } };
    }
    if session.principal.role != Role::Admin {
        return html! { p.muted { "Approving, deploying and cancelling need the admin role." } };
    }
    html! {
        @for to in targets {
            @match to {
                PromotionStatus::Approved if promotion.status == PromotionStatus::PendingApproval => {
                    form.filters method="post" action=(action) {
                        (csrf) input type="hidden" name="to" value="approve";
                        button type="submit" { "Approve" }
                    }
                }
                PromotionStatus::Rejected => {
                    form.filters method="post" action=(action) {
                        (csrf) input type="hidden" name="to" value="reject";
                        label { "Reason" input name="reason" required; }
                        button type="submit" { "Reject" }
                    }
                }
                PromotionStatus::Running => {
                    form.filters method="post" action=(action) {
                        (csrf) input type="hidden" name="to" value="deploy";
                        button type="submit" { "Deploy now" }
                    }
                    form.filters method="post" action=(action) {
                        (csrf) input type="hidden" name="to" value="deploy";
                        label { "Deploy at (UTC)" input type="datetime-local" name="scheduled_for" required; }
                        button type="submit" { "Schedule" }
                    }
                }
                PromotionStatus::Cancelled => {
                    form.filters method="post" action=(action) {
                        (csrf) input type="hidden" name="to" value="cancel";
                        label { "Reason" input name="reason"; }
                        button type="submit" { "Cancel promotion" }
                    }
                }
                _ => {}
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    scheduled_for: Option<String>,
}

/// A `datetime-local` value (UTC) or an RFC 3339 time.
fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
                .map(|t| t.and_utc())
        })
}

async fn action(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let session = match form_session(&state, &headers, &form.csrf) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    let Ok(promotion_id) = LocalId::parse(id.as_str()) else {
        return not_found(&session, "promotion");
    };
    let ctx = session.command_context();
    let reason = nonempty(&form.reason).map(str::to_string);
    let command = match form.to.as_str() {
        "approve" => PromotionCommand::Approve,
        "reject" => PromotionCommand::Reject { reason },
        "cancel" => PromotionCommand::Cancel { reason },
        "deploy" => {
            let scheduled_for = match nonempty(&form.scheduled_for) {
                None => None,
                Some(value) => match parse_time(value) {
                    Some(at) => Some(at),
                    None => {
                        let problem = format!("{value:?} is not a time (use the picker, in UTC).");
                        return render_detail(
                            &state,
                            &session,
                            &id,
                            StatusCode::BAD_REQUEST,
                            Some(problem),
                        )
                        .await;
                    }
                },
            };
            return match deployment_flow::deploy(&state.context, &ctx, &promotion_id, scheduled_for)
                .await
            {
                Ok((deployment_id, committed)) => {
                    settle(&state, deployments_model::NAME, committed.position).await;
                    Redirect::to(&format!("/deployments/{deployment_id}")).into_response()
                }
                Err(deployment_flow::StartError::Command(error)) => {
                    let (status, problem) = explain(&error);
                    render_detail(&state, &session, &id, status, Some(problem)).await
                }
                Err(pinned) => {
                    let problem = format!("Refused: {pinned}.");
                    render_detail(&state, &session, &id, StatusCode::CONFLICT, Some(problem)).await
                }
            };
        }
        other => {
            let problem = format!("{other:?} is not an action on a promotion.");
            return render_detail(
                &state,
                &session,
                &id,
                StatusCode::BAD_REQUEST,
                Some(problem),
            )
            .await;
        }
    };
    match state
        .context
        .domain
        .promotion(&ctx, &promotion_id, command)
        .await
    {
        Ok(committed) => {
            settle(&state, model::NAME, committed.position).await;
            Redirect::to(&format!("/promotions/{id}")).into_response()
        }
        Err(error) => {
            let (status, problem) = explain(&error);
            render_detail(&state, &session, &id, status, Some(problem)).await
        }
    }
}

/// A deployment and its promotion (whose target it deploys to).
async fn load_deployment(
    state: &HttpState,
    session: &Session,
    id: &str,
) -> Result<(DeploymentRow, Option<PromotionRow>), Response> {
    let tenant = session.principal.tenant.as_str();
    let store = &state.context.store;
    let row = match deployments_model::deployment(store, tenant, id).await {
        Ok(Some(row)) => row,
        Ok(None) | Err(projections::query::QueryError::Validation { .. }) => {
            return Err(not_found(session, "deployment"))
        }
        Err(error) => return Err(unavailable(session, "Deployments", error)),
    };
    match model::promotion(store, tenant, &row.promotion_id).await {
        Ok(promotion) => Ok((row, promotion)),
        Err(error) => Err(unavailable(session, "Deployments", error)),
    }
}

/// `GET /deployments/{id}`: the deployment, its live progress and its recovery.
async fn deployment(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = match session(&state, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    render_deployment(&state, &session, &id, StatusCode::OK, None).await
}

async fn render_deployment(
    state: &HttpState,
    session: &Session,
    id: &str,
    status: StatusCode,
    problem: Option<String>,
) -> Response {
    let (row, promotion) = match load_deployment(state, session, id).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let head = state.context.store.last_position().await.unwrap_or(0);
    let live = !matches!(
        row.status,
        DeploymentStatus::Success | DeploymentStatus::Failed | DeploymentStatus::Cancelled
    );
    let body = html! {
        h1 { "Deployment " (short(&row.deployment_id)) }
        @if let Some(problem) = &problem { p.error role="alert" { (problem) } }
        p { "Promotion " a href=(format!("/promotions/{}", row.promotion_id)) { (short(&row.promotion_id)) }
            @if let Some(p) = &promotion { " · target " a href=(format!("/environments/{}/snapshots", p.target_environment_id)) { "snapshots of the target" } } }
        div #progress data-deployment=(row.deployment_id) data-from=(head) data-live=(live) aria-live="polite" {
            (progress(session, &row, promotion.as_ref()))
        }
        @if live { p.muted #live-status { "Following its progress live…" } }
        script { (PreEscaped(LIVE_PROGRESS)) }
    };
    page(session, status, &format!("Deployment {}", short(id)), body)
}

/// Follows the deployment's events on the SSE stream; each one re-renders the
/// progress from the read model (the fragment waits until it holds the event).
/// Without JavaScript the page is the same, as of its loading.
const LIVE_PROGRESS: &str = r#"(function(){
var box=document.getElementById('progress');if(!box||box.dataset.live!=='true'||!window.EventSource){return;}
var id=box.dataset.deployment,status=document.getElementById('live-status');
var es=new EventSource('/events?aggregateTypes=deployment&aggregateId='+encodeURIComponent(id)+'&from='+box.dataset.from);
var busy=false,again=0;
function refresh(position){if(busy){again=Math.max(again,position);return;}busy=true;
fetch('/deployments/'+encodeURIComponent(id)+'/progress?min='+position,{credentials:'same-origin'}).then(function(r){return r.ok?r.text():null;}).then(function(html){
busy=false;if(html!==null){box.innerHTML=html;var done=box.querySelector('[data-done="true"]');if(done){es.close();if(status){status.textContent='Finished.';}return;}}
if(again){var p=again;again=0;refresh(p);}}).catch(function(){busy=false;});}
es.onmessage=function(m){refresh(parseInt(m.lastEventId||'0',10));if(status){status.textContent='Following its progress live…';}};
es.onerror=function(){if(status){status.textContent='Reconnecting…';}};
})();"#;

#[derive(Debug, Default, Deserialize)]
pub struct ProgressParams {
    #[serde(default)]
    min: Option<i64>,
}

/// `GET /deployments/{id}/progress?min=<position>`: the progress part of the page,
/// once the read model holds `min` (the live page fetches it per event).
async fn progress_fragment(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<ProgressParams>,
) -> Response {
    let session = match session(&state, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    settle(
        &state,
        deployments_model::NAME,
        params.min.filter(|m| *m > 0),
    )
    .await;
    match load_deployment(&state, &session, &id).await {
        Ok((row, promotion)) => {
            (StatusCode::OK, progress(&session, &row, promotion.as_ref())).into_response()
        }
        Err(page) => page,
    }
}

/// Phase, per-workflow status and attempts, the phases' results and recovery.
fn progress(session: &Session, row: &DeploymentRow, promotion: Option<&PromotionRow>) -> Markup {
    let p = &row.progress.0;
    let total = row.workflows.0.len();
    let done = row
        .workflows
        .0
        .iter()
        .filter(|w| w.status != WorkflowDeployStatus::Pending)
        .count();
    let finished = matches!(
        row.status,
        DeploymentStatus::Success | DeploymentStatus::Failed | DeploymentStatus::Cancelled
    );
    let csrf = html! { input type="hidden" name="csrf" value=(session.csrf); };
    html! {
        dl data-done=(finished) {
            dt { "Status" } dd #deployment-status { (state_badge(row.status.as_str())) }
            dt { "Phase" } dd #deployment-phase { (row.phase.as_str()) }
            dt { "Workflows done" } dd { (done) " of " (total) " "
                progress max=(total.max(1)) value=(done) aria-label="workflows done" {} }
            @if let Some(at) = row.scheduled_for { dt { "Scheduled for" } dd { (time(at)) } }
            @if let Some(at) = row.started_at { dt { "Started" } dd { (time(at)) } }
            @if let Some(at) = row.finished_at { dt { "Finished" } dd { (time(at)) } }
            @if let Some(reason) = &row.reason { dt { "Reason" } dd { (reason) } }
        }
        @if matches!(row.status, DeploymentStatus::Pending | DeploymentStatus::Scheduled) && session.is_admin() {
            form.filters method="post" action=(format!("/deployments/{}/cancel", row.deployment_id)) {
                (csrf) label { "Reason" input name="reason"; }
                button type="submit" { "Cancel deployment" }
            }
        }
        h2 { "Workflows" }
        @if row.workflows.0.is_empty() { p.muted { "None yet." } } @else {
            div.scroll { table #deployment-workflows {
                thead { tr { th scope="col" { "Workflow" } th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { "Target id" } th scope="col" { "Error" } } }
                tbody { @for w in &row.workflows.0 { tr {
                    th scope="row" { (w.name) }
                    td { (state_badge(w.status.as_str())) @if w.deleted { " (deleted)" } @else if w.created { " (created)" } }
                    td { (w.attempts) }
                    td.hash { (w.target_id.as_deref().unwrap_or("—")) }
                    td { (w.error.as_deref().unwrap_or("")) }
                } } }
            } }
        }
        @if let Some(results) = &p.gate_results { h2 { "Gates at deploy time" } (gates(results)) }
        h2 { "Snapshots" }
        ul {
            li { "Before: " @match &p.pre_snapshot {
                Some(s) => { span.hash { (s.snapshot_id) } " (" (s.workflows) " workflows)" },
                None => span.muted { "not taken" },
            } }
            li { "After: " @match &p.post_snapshot {
                Some(s) => { span.hash { (s.snapshot_id) } " (" (s.workflows) " workflows)" },
                None => span.muted { "not taken" },
            } }
        }
        @if let Some(mismatches) = p.verification.as_ref().filter(|v| !v.is_empty()) {
            h2 { "Verification mismatches" } ul { @for m in mismatches { li { (m) } } }
        }
        @if let Some(git) = &p.git {
            h2 { "Git" }
            p { @match &git.commit_sha { Some(sha) => { "Committed " span.hash { (sha) } " (" (git.files) " files)" }, None => { "Nothing committed." } }
                @if let Some(error) = &git.error { br; span.error { (error) } } }
        }
        @if let Some(rollback) = &p.rollback {
            h2 { "Rollback" }
            p { (rollback.reason) }
            @match &rollback.inconsistencies {
                None => p { "Rolling back…" },
                Some(list) if list.is_empty() => p { "The target holds exactly what it held before." },
                Some(list) => ul { @for i in list { li.error { (i) } } },
            }
        }
        @if let Some(why) = &p.recovery_requested { p.error { "Recovery requested: " (why) } }
        @let options = recovery_options(row);
        @if !options.is_empty() {
            h2 { "Recovery" }
            ul #recovery { @for (kind, snapshot) in &options { li {
                (kind.description())
                @match (kind, snapshot) {
                    (Recovery::RestoreSnapshot, Some(snapshot)) => { @if let Some(p) = promotion {
                        " " a href=(format!("/environments/{}/snapshots#s-{snapshot}", p.target_environment_id)) { "restore it" }
                    } }
                    (Recovery::UnpinEnvironment, _) => { @if let Some(p) = promotion {
                        " " a href=(format!("/environments#{}", p.target_environment_id)) { "(the environment)" }
                    } }
                    (Recovery::RetryAsNewPromotion, _) if session.is_admin() => {
                        " " a href=(format!("/promotions/{}", row.promotion_id)) { "(the promotion)" }
                    }
                    _ => {}
                }
            } } }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ReasonForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn cancel_deployment(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ReasonForm>,
) -> Response {
    let session = match form_session(&state, &headers, &form.csrf) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    let Ok(deployment_id) = LocalId::parse(id.as_str()) else {
        return not_found(&session, "deployment");
    };
    let command = DeploymentCommand::Cancel {
        reason: nonempty(&form.reason).map(str::to_string),
    };
    match state
        .context
        .domain
        .deployment(&session.command_context(), &deployment_id, command)
        .await
    {
        Ok(committed) => {
            settle(&state, deployments_model::NAME, committed.position).await;
            Redirect::to(&format!("/deployments/{id}")).into_response()
        }
        Err(error) => {
            let (status, problem) = explain(&error);
            render_deployment(&state, &session, &id, status, Some(problem)).await
        }
    }
}

/// `GET /environments/{id}/snapshots`: the environment's snapshots, newest first,
/// each with restore (admin).
async fn snapshots(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = match session(&state, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    render_snapshots(&state, &session, &id, StatusCode::OK, None).await
}

async fn render_snapshots(
    state: &HttpState,
    session: &Session,
    id: &str,
    status: StatusCode,
    problem: Option<String>,
) -> Response {
    let tenant = session.principal.tenant.as_str();
    let names = match Names::load(state, tenant).await {
        Ok(names) => names,
        Err(error) => return unavailable(session, "Snapshots", error),
    };
    let Some(environment) = names.0.iter().find(|e| e.environment_id == id) else {
        return not_found(session, "environment");
    };
    let found = match snapshots_of(&state.context.store, tenant, id, 100, None).await {
        Ok(found) => found,
        Err(error) => return unavailable(session, "Snapshots", error),
    };
    let body = html! {
        h1 { "Snapshots of " (environment.name) }
        @if let Some(problem) = &problem { p.error role="alert" { (problem) } }
        @if found.items.is_empty() {
            p.empty { "No snapshot yet: each deployment into this environment takes one before and one after it runs. "
                a href="/promotions/new" { "Start a promotion" } "." }
        } @else {
            p.muted { "Restoring brings every workflow back as the snapshot holds it (one it records as absent is deleted), through the gates and approval of the pipeline stage into this environment." }
            div.scroll { table {
                thead { tr { th scope="col" { "Snapshot" } th scope="col" { "Taken" } th scope="col" { "Kind" }
                    th scope="col" { "Workflows" } th scope="col" { "Deployment" } th scope="col" { "Restore" } } }
                tbody { @for s in &found.items { tr id=(format!("s-{}", s.snapshot_id)) {
                    th scope="row" { span.hash { (short(&s.snapshot_id)) } }
                    td { (time(s.taken_at)) }
                    td { (s.kind.as_str()) }
                    td { (s.workflows) }
                    td { a href=(format!("/deployments/{}", s.deployment_id)) { (short(&s.deployment_id)) } }
                    td { @if session.is_admin() {
                        form method="post" action=(format!("/environments/{id}/snapshots/{}/restore", s.snapshot_id)) {
                            input type="hidden" name="csrf" value=(session.csrf);
                            input type="hidden" name="id" value=(uuid::Uuid::new_v4().to_string());
                            button type="submit" aria-label=(format!("Restore snapshot {}", short(&s.snapshot_id))) { "Restore" }
                        }
                    } @else { span.muted { "admin only" } } }
                } } }
            } }
        }
    };
    page(
        session,
        status,
        &format!("Snapshots of {}", environment.name),
        body,
    )
}

#[derive(Debug, Deserialize)]
pub struct RestoreForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
}

/// `POST …/restore`: the restore's promotion, deployed at once unless it waits for
/// an approval (as `restoreSnapshot`).
async fn restore(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path((id, snapshot)): Path<(String, String)>,
    Form(form): Form<RestoreForm>,
) -> Response {
    let session = match form_session(&state, &headers, &form.csrf) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    let (Ok(environment_id), Ok(promotion_id)) = (
        LocalId::parse(id.as_str()),
        LocalId::parse(form.id.as_str()),
    ) else {
        return bad_request(
            &session,
            "The form is incomplete; reload the page and try again.",
        );
    };
    let tenant = session.principal.tenant.as_str();
    if let Ok(Some(_)) = model::promotion(&state.context.store, tenant, promotion_id.as_str()).await
    {
        // a double submit: the first one started it
        return Redirect::to(&format!("/promotions/{promotion_id}")).into_response();
    }
    let ctx = session.command_context();
    let request = RestoreRequest {
        promotion_id: promotion_id.clone(),
        environment_id,
        snapshot_id: snapshot,
    };
    let committed = match promotion::restore(&state.context, &ctx, request).await {
        Ok(committed) => committed,
        Err(error) => {
            let problem = match &error {
                PromoteError::Command(e) => explain(e),
                PromoteError::GateBlocked { .. } => {
                    (StatusCode::CONFLICT, format!("GATE_BLOCKED: {error}."))
                }
                _ => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("The restore could not start: {error}."),
                ),
            };
            return render_snapshots(&state, &session, &id, problem.0, Some(problem.1)).await;
        }
    };
    if committed.state.status != PromotionStatus::Approved {
        settle(&state, model::NAME, committed.position).await;
        return Redirect::to(&format!("/promotions/{promotion_id}")).into_response();
    }
    match deployment_flow::deploy(&state.context, &ctx, &promotion_id, None).await {
        Ok((deployment_id, started)) => {
            settle(&state, deployments_model::NAME, started.position).await;
            Redirect::to(&format!("/deployments/{deployment_id}")).into_response()
        }
        Err(error) => {
            let problem = match &error {
                deployment_flow::StartError::Command(e) => explain(e).1,
                other => format!("Refused: {other}."),
            };
            render_detail(
                &state,
                &session,
                promotion_id.as_str(),
                StatusCode::CONFLICT,
                Some(problem),
            )
            .await
        }
    }
}
