//! The environments page's buttons (developer and up): sync with n8n, sync the
//! Git folder, check drift. Each runs the same use case as the API's mutation
//! (`syncEnvironment`, `syncRepository`, `checkDrift`; `unpinEnvironment` for an
//! admin when a rollback pinned it), which checks the role again,
//! and answers with what it saw and recorded, in words.

use aggregates::kernel::ids::LocalId;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout;
use super::{explain, form_session, Session};
use crate::http::HttpState;
use crate::workflows::sync::{self, SyncError};

pub fn routes() -> Router<HttpState> {
    Router::new().route("/environments/{id}/run", post(run))
}

#[derive(Debug, Deserialize)]
pub struct RunForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: Option<String>,
}

/// The buttons of one environment's row, for a session that may use them.
pub fn buttons(session: &Session, environment_id: &str, drift_check: bool, pinned: bool) -> Markup {
    if !session.can_act() {
        return html! {};
    }
    let action = format!("/environments/{environment_id}/run");
    let button = |value: &str, label: &str| {
        html! {
            form.inline method="post" action=(action) {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="action" value=(value);
                button type="submit" aria-label=(format!("{label}: {environment_id}")) { (label) }
            }
        }
    };
    html! {
        div.actions {
            (button("sync", "Sync n8n"))
            (button("sync_repository", "Sync Git"))
            @if drift_check { (button("check_drift", "Check drift")) }
            @if pinned && session.is_admin() {
                form.inline method="post" action=(action) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="action" value="unpin";
                    label { "Reason" input name="reason" required; }
                    button type="submit" aria-label=(format!("Unpin {environment_id}")) { "Unpin" }
                }
            }
        }
    }
}

fn result_page(session: &Session, status: StatusCode, title: &str, body: Markup) -> Response {
    let body = html! {
        h1 { (title) }
        (body)
        p { a href="/environments" { "Back to the environments" } }
    };
    (status, layout::page(Some(session), title, body)).into_response()
}

fn refused(session: &Session, title: &str, error: SyncError) -> Response {
    let (status, message) = match &error {
        SyncError::Command(e) => explain(e),
        SyncError::Upstream(e) => (
            StatusCode::BAD_GATEWAY,
            format!("It could not be read: {e}. Nothing else changed; try again later."),
        ),
        SyncError::Query(projections::query::QueryError::Validation { .. }) => {
            (StatusCode::BAD_REQUEST, format!("Refused: {error}."))
        }
        _ => {
            tracing::warn!(%error, "console: an environment action failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "It could not run now; nothing changed. Try again in a moment.".to_string(),
            )
        }
    };
    result_page(
        session,
        status,
        title,
        html! { p.error role="alert" { (message) } },
    )
}

fn list(title: &str, items: &[String]) -> Markup {
    html! {
        @if !items.is_empty() {
            h2 { (title) " (" (items.len()) ")" }
            ul { @for item in items { li { (item) } } }
        }
    }
}

async fn run(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<RunForm>,
) -> Response {
    let session = match form_session(&state, &headers, &form.csrf) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    let Ok(environment_id) = LocalId::parse(id.as_str()) else {
        return layout::error_page(
            Some(&session),
            StatusCode::NOT_FOUND,
            "No such environment",
            "This environment does not exist (or is not your tenant's).",
        );
    };
    let ctx = session.command_context();
    let services = &state.context;
    match form.action.as_str() {
        "sync" => {
            let title = format!("Sync of {id} with n8n");
            match sync::sync_environment(services, &ctx, &environment_id).await {
                Ok(r) => result_page(
                    &session,
                    StatusCode::OK,
                    &title,
                    html! {
                        p role="status" { "Saw " (r.workflows_seen) " workflows: " (r.discovered) " new, "
                            (r.changed) " changed, " (r.linked) " linked, " (r.missing) " gone from n8n ("
                            (r.events) " events recorded)." }
                        (list("Name collisions", &r.collisions))
                        (list("Left out", &r.rejected))
                    },
                ),
                Err(error) => refused(&session, &title, error),
            }
        }
        "sync_repository" => {
            let title = format!("Sync of {id}'s Git folder");
            match sync::sync_repository(services, &ctx, &environment_id).await {
                Ok(r) => result_page(
                    &session,
                    StatusCode::OK,
                    &title,
                    html! {
                        p role="status" { "Read " (r.files_seen) " workflow files at commit "
                            span.hash { (r.commit_sha.get(..12).unwrap_or(&r.commit_sha)) } ": "
                            (r.created) " new, " (r.renamed) " renamed, " (r.updated) " changed; "
                            (r.mappings_updated) " mappings given the new Git version ("
                            (r.events) " events recorded)." }
                        (list("Files left out", &r.rejected))
                    },
                ),
                Err(error) => refused(&session, &title, error),
            }
        }
        "check_drift" => {
            let title = format!("Drift check of {id}");
            match crate::workflows::drift::check_drift(services, &ctx, &environment_id).await {
                Ok(r) => result_page(
                    &session,
                    StatusCode::OK,
                    &title,
                    html! {
                        p role="status" { (r.in_sync) " in sync, " (r.with_drift) " drifted, "
                            (r.not_in_git) " not in Git." }
                        @if !r.drifted.is_empty() {
                            h2 { "Drifted" }
                            ul { @for w in &r.drifted { li { (w.name) } } }
                        }
                        @if let Some(incident) = &r.incident_id {
                            p { "The drift is tracked by incident "
                                a href=(format!("/incidents/{incident}")) { (incident) } "." }
                        }
                        (list("Left out", &r.rejected))
                    },
                ),
                Err(error) => refused(&session, &title, error),
            }
        }
        "unpin" => {
            let title = format!("Unpin {id}");
            let reason = form
                .reason
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty());
            let command = aggregates::environment::EnvironmentCommand::Unpin { reason };
            match services
                .domain
                .environment(&ctx, &environment_id, command)
                .await
            {
                Ok(committed) => {
                    if let Some(position) = committed.position {
                        let _ = services
                            .projections
                            .wait_for(
                                projections::models::environments::NAME,
                                position,
                                std::time::Duration::from_secs(5),
                            )
                            .await;
                    }
                    result_page(
                        &session,
                        StatusCode::OK,
                        &title,
                        html! { p role="status" { "Unpinned: scheduled deployments to " (id) " may start again." } },
                    )
                }
                Err(error) => refused(&session, &title, SyncError::Command(error)),
            }
        }
        other => result_page(
            &session,
            StatusCode::BAD_REQUEST,
            "Unknown action",
            html! { p.error role="alert" { (format!("{other:?} is not an action on an environment: sync, sync_repository, check_drift or unpin.")) } },
        ),
    }
}
