//! `/incidents`: the list (status, severity and SLA filters) and each incident's
//! page: its drift, SLA deadline, timeline from the audit trail, and only the
//! transitions `VALID_TRANSITIONS` allows from its status, each with the fields it
//! requires. Actions go through the same bus as the API's mutations, which checks
//! the role and the transition again.

use aggregates::incident::{IncidentCommand, IncidentStatus, ResolutionType, Severity, SlaState};
use aggregates::kernel::command::{DomainCommand, Role};
use aggregates::kernel::ids::LocalId;
use aggregates::kernel::transitions::{allowed_targets, StateMachine};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use projections::models::audit::{audit_trail, AuditFilter};
use projections::models::incidents::{self as model, IncidentRow};
use serde::Deserialize;

use super::layout::{self, time};
use super::{explain, form_session, session, Session};
use crate::http::HttpState;

#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    sla: Option<String>,
}

fn parse<S: std::str::FromStr>(value: &Option<String>) -> Option<S> {
    value.as_deref().filter(|v| !v.is_empty())?.parse().ok()
}

const SEVERITIES: [Severity; 4] = [
    Severity::Low,
    Severity::Medium,
    Severity::High,
    Severity::Critical,
];

pub async fn list(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Response {
    let session = match session(&state, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    let status: Option<IncidentStatus> = parse(&params.status);
    let severity: Option<Severity> = parse(&params.severity);
    let sla: Option<SlaState> = parse(&params.sla);
    let tenant = session.principal.tenant.as_str();
    let filter = model::IncidentFilter {
        status,
        severity,
        sla_state: sla,
        ..Default::default()
    };
    let page = match model::incidents_where(&state.context.store, tenant, &filter, 100, None).await
    {
        Ok(page) => page,
        Err(error) => return unavailable(&session, error),
    };
    let option = |value: &str, current: Option<&str>| {
        html! { option value=(value) selected[current == Some(value)] { (value) } }
    };
    let body = html! {
        h1 { "Incidents" }
        form.filters method="get" action="/incidents" {
            label { "Status" select name="status" {
                option value="" { "any" }
                @for s in IncidentStatus::ALL { (option(s.as_str(), status.map(|s| s.as_str()))) }
            } }
            label { "Severity" select name="severity" {
                option value="" { "any" }
                @for s in SEVERITIES { (option(s.as_str(), severity.map(|s| s.as_str()))) }
            } }
            label { "SLA" select name="sla" {
                option value="" { "any" }
                @for s in SlaState::ALL { (option(s.as_str(), sla.map(|s| s.as_str()))) }
            } }
            button type="submit" { "Filter" }
            a href="/incidents" { "Clear" }
        }
        @if page.items.is_empty() {
            p.empty { "No incident matches. Incidents open when a drift check finds an environment drifted from Git." }
        } @else {
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Incident" } th scope="col" { "Environment" }
                    th scope="col" { "Status" } th scope="col" { "Severity" }
                    th scope="col" { "SLA" } th scope="col" { "Detected" }
                } }
                tbody { @for i in &page.items { tr {
                    th scope="row" { a href=(format!("/incidents/{}", i.incident_id)) { (i.incident_id) } }
                    td { (i.environment_id) }
                    td { (i.status.as_str()) }
                    td { (i.severity.as_str()) }
                    td { (i.sla_state.as_str()) br; span.muted { "deadline " (time(i.sla_deadline)) } }
                    td { (time(i.detected_at)) }
                } } }
            } }
        }
    };
    (
        StatusCode::OK,
        layout::page(Some(&session), "Incidents", body),
    )
        .into_response()
}

fn no_such_incident(session: &Session) -> Response {
    layout::error_page(
        Some(session),
        StatusCode::NOT_FOUND,
        "No such incident",
        "This incident does not exist (or is not your tenant's).",
    )
}

fn unavailable(session: &Session, error: impl std::fmt::Display) -> Response {
    super::unavailable(session, "Incidents", error)
}

/// The command a transition to `to` runs, and the role it needs.
fn transition_role(to: IncidentStatus) -> Role {
    let command = match to {
        IncidentStatus::Acknowledged => IncidentCommand::Acknowledge {
            reason: None,
            owner_user_id: None,
            ticket_ref: None,
            expires_at: None,
        },
        IncidentStatus::Stabilized => IncidentCommand::Stabilize { reason: None },
        IncidentStatus::Reconciled => IncidentCommand::Reconcile {
            resolution_type: None,
            resolution_details: None,
        },
        _ => IncidentCommand::Close {
            reason: None,
            resolution_type: None,
        },
    };
    command.required_role()
}

fn allowed(role: Role, needed: Role) -> bool {
    match needed {
        Role::Viewer => true,
        Role::Developer => matches!(role, Role::Developer | Role::Admin),
        Role::Admin => role == Role::Admin,
        Role::System => false,
    }
}

pub async fn detail(
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
    let store = &state.context.store;
    let incident = match model::incident(store, tenant, id).await {
        Ok(Some(incident)) => incident,
        Ok(None) => return no_such_incident(session),
        Err(error) => return unavailable(session, error),
    };
    let filter = AuditFilter {
        aggregate_type: Some("incident".into()),
        aggregate_id: Some(id.to_string()),
        ..Default::default()
    };
    let timeline = match audit_trail(store, tenant, &filter, 200, None).await {
        Ok(page) => page.items,
        Err(error) => return unavailable(session, error),
    };
    let drift = super::drift::snapshot(state, &incident).await;
    let body = html! {
        h1 { "Incident " (incident.incident_id) }
        @if let Some(problem) = &problem { p.error role="alert" { (problem) } }
        (summary(&incident))
        h2 { "Drift at detection" }
        (drift)
        h2 { "Actions" }
        (actions(session, &incident))
        h2 #timeline { "Timeline" }
        // (focusable: a keyboard can scroll it when it is wider than the screen)
        div.scroll tabindex="0" role="region" aria-labelledby="timeline" { table {
            thead { tr { th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "Transition" }
                th scope="col" { "Actor" } th scope="col" { "Reason" } } }
            tbody { @for e in &timeline { tr {
                td { (time(e.recorded_at)) }
                td { (e.event_type) }
                td { @if let Some(to) = &e.to_status { (e.from_status.as_deref().unwrap_or("—")) " → " (to) } }
                td { (e.actor) " (" (e.actor_role) ")" @if e.admin_override { " " strong { "admin override" } } }
                td { (e.reason.as_deref().unwrap_or("")) }
            } } }
        } }
    };
    (
        status,
        layout::page(Some(session), &format!("Incident {id}"), body),
    )
        .into_response()
}

fn summary(incident: &IncidentRow) -> Markup {
    html! {
        dl {
            dt { "Environment" } dd { (incident.environment_id) }
            dt { "Status" } dd { (incident.status.as_str()) }
            dt { "Severity" } dd { (incident.severity.as_str()) }
            dt { "SLA" } dd { (incident.sla_state.as_str()) ", deadline " (time(incident.sla_deadline)) }
            dt { "Drifted workflows (" (incident.affected_count) ")" }
            dd { ul { @for w in &incident.affected_workflows.0 { li { (w.name) } } } }
            @if let Some(owner) = &incident.owner_user_id { dt { "Owner" } dd { (owner) } }
            @if let Some(ticket) = &incident.ticket_ref { dt { "Ticket" } dd { (ticket) } }
        }
    }
}

/// The forms of the transitions the table allows from the incident's status that
/// the signed-in role may run, and the pending approval's decision.
fn actions(session: &Session, incident: &IncidentRow) -> Markup {
    let role = session.principal.role;
    let targets: Vec<IncidentStatus> = allowed_targets(incident.status)
        .iter()
        .copied()
        .filter(|to| allowed(role, transition_role(*to)))
        .collect();
    let action = format!("/incidents/{}/transition", incident.incident_id);
    let csrf = html! { input type="hidden" name="csrf" value=(session.csrf); };
    let resolution = |required: bool| {
        html! {
            label { "Resolution type" select name="resolution_type" required[required] {
                @if !required { option value="" { "(none)" } }
                @for r in [ResolutionType::Promote, ResolutionType::Revert, ResolutionType::Replace, ResolutionType::Acknowledge] {
                    option value=(r.as_str()) { (r.as_str()) }
                }
            } }
        }
    };
    html! {
        @if let Some(pending) = &incident.pending_approval {
            section {
                h3 { "Waiting for approval" }
                p { (pending.0.get("action").and_then(|a| a.as_str()).unwrap_or("an action"))
                    " requested by " (pending.0.get("requested_by").and_then(|a| a.as_str()).unwrap_or("someone")) }
                @if role == Role::Admin {
                    form method="post" action=(action) {
                        (csrf) input type="hidden" name="to" value="approve";
                        button type="submit" { "Approve" }
                    }
                    form method="post" action=(action) {
                        (csrf) input type="hidden" name="to" value="reject";
                        label { "Reason" input name="reason" required; }
                        button type="submit" { "Reject" }
                    }
                }
            }
        }
        @if targets.is_empty() {
            p.muted { @if incident.status == IncidentStatus::Closed { "Closed: no transition is left." }
                @else { "Your role may not move this incident." } }
        }
        @for to in targets {
            form.filters method="post" action=(action) {
                (csrf)
                input type="hidden" name="to" value=(to.as_str());
                @match to {
                    IncidentStatus::Acknowledged => {
                        label { "Reason" input name="reason"; }
                        label { "Owner" input name="owner_user_id"; }
                        label { "Ticket" input name="ticket_ref"; }
                    }
                    IncidentStatus::Stabilized => { label { "Reason" input name="reason"; } }
                    IncidentStatus::Reconciled => {
                        (resolution(true))
                        label { "Details" input name="resolution_details"; }
                    }
                    _ => {
                        label { "Reason" input name="reason" required; }
                        (resolution(incident.status != IncidentStatus::Reconciled))
                    }
                }
                button type="submit" { "Move to " (to.as_str()) }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct TransitionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    owner_user_id: Option<String>,
    #[serde(default)]
    ticket_ref: Option<String>,
    #[serde(default)]
    resolution_type: Option<String>,
    #[serde(default)]
    resolution_details: Option<String>,
}

fn text(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

pub async fn transition(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<TransitionForm>,
) -> Response {
    let session = match form_session(&state, &headers, &form.csrf) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    let Ok(incident_id) = LocalId::parse(id.as_str()) else {
        return no_such_incident(&session);
    };
    let resolution = match text(form.resolution_type) {
        None => None,
        Some(r) => match r.parse::<ResolutionType>() {
            Ok(t) => Some(t),
            Err(_) => {
                let problem = format!("Unknown resolution type {r:?}.");
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
    let command = match form.to.as_str() {
        "acknowledged" => IncidentCommand::Acknowledge {
            reason: text(form.reason),
            owner_user_id: text(form.owner_user_id),
            ticket_ref: text(form.ticket_ref),
            expires_at: None,
        },
        "stabilized" => IncidentCommand::Stabilize {
            reason: text(form.reason),
        },
        "reconciled" => IncidentCommand::Reconcile {
            resolution_type: resolution,
            resolution_details: text(form.resolution_details),
        },
        "closed" => IncidentCommand::Close {
            reason: text(form.reason),
            resolution_type: resolution,
        },
        "approve" | "reject" => {
            let pending =
                match model::incident(&state.context.store, session.principal.tenant.as_str(), &id)
                    .await
                {
                    Ok(row) => row.and_then(|r| r.pending_approval),
                    Err(error) => return unavailable(&session, error),
                };
            let Some(approval_id) = pending
                .and_then(|p| p.0.get("approval_id").and_then(|v| v.as_u64()))
                .and_then(|v| u32::try_from(v).ok())
            else {
                let problem = "No approval is waiting any more.".to_string();
                return render_detail(&state, &session, &id, StatusCode::CONFLICT, Some(problem))
                    .await;
            };
            if form.to == "approve" {
                IncidentCommand::Approve { approval_id }
            } else {
                IncidentCommand::Reject {
                    approval_id,
                    reason: text(form.reason),
                }
            }
        }
        other => {
            let problem = format!("{other:?} is not a transition of an incident.");
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
    let ctx = session.command_context();
    match state
        .context
        .domain
        .incident(&ctx, &incident_id, command, false)
        .await
    {
        Ok(committed) => {
            // the page shows the read model once it holds the change
            if let Some(position) = committed.position {
                let _ = state
                    .context
                    .projections
                    .wait_for(model::NAME, position, std::time::Duration::from_secs(5))
                    .await;
            }
            Redirect::to(&format!("/incidents/{id}")).into_response()
        }
        Err(error) => {
            let (status, problem) = explain(&error);
            render_detail(&state, &session, &id, status, Some(problem)).await
        }
    }
}
