//! `GET /environments`: each environment's drift status with time in state, counts,
//! active incident, last check and sync with their errors, pinned state and running
//! promotion, from the environments read model; for developers and up, buttons
//! that sync n8n, sync Git and check drift (`actions`), and a link to the
//! environment's snapshots.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::layout::{self, time};
use super::session;
use crate::http::HttpState;

pub async fn page(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let session = match session(&state, &headers) {
        Ok(session) => session,
        Err(page) => return *page,
    };
    let tenant = session.principal.tenant.as_str();
    let environments =
        match projections::models::environments::environments(&state.context.store, tenant).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "console: the environments cannot be read");
                return layout::error_page(
                    Some(&session),
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The environments cannot be read now",
                    "The database did not answer. Try again in a moment.",
                );
            }
        };
    let scheduled = match scheduled_by_target(&state, tenant).await {
        Ok(scheduled) => scheduled,
        Err(error) => return super::unavailable(&session, "The environments", error),
    };
    let body = html! {
        h1 { "Environments" }
        @if environments.is_empty() {
            p.empty { "No environment is registered yet. Register one with the "
                code { "registerEnvironment" } " mutation." }
        } @else {
            div.scroll { table {
                thead { tr {
                    th scope="col" { "Environment" }
                    th scope="col" { "Drift status" }
                    th scope="col" { "In sync / drift / not in Git" }
                    th scope="col" { "Active incident" }
                    th scope="col" { "Last drift check" }
                    th scope="col" { "Last sync" }
                    th scope="col" { "Promotion" }
                    th scope="col" { "Actions" }
                } }
                tbody {
                    @for env in &environments {
                        tr {
                            th scope="row" { (env.name) br; span.muted { (env.environment_id) " · " (env.class.as_str()) } }
                            td {
                                span class=(format!("state {}", env.drift_status.as_str())) { (env.drift_status.as_str()) }
                                br; span.muted { "since " (time(env.drift_status_since)) }
                            }
                            td { (env.in_sync) " / " (env.with_drift) " / " (env.not_in_git) }
                            td {
                                @match (&env.active_incident_id, env.active_incident_status) {
                                    (Some(id), Some(status)) => { (id) " (" (status.as_str()) ")" },
                                    (Some(id), None) => (id),
                                    _ => span.muted { "none" },
                                }
                            }
                            td {
                                @match env.last_drift_check_at { Some(at) => (time(at)), None => span.muted { "never" } }
                                @if let Some(error) = &env.last_drift_check_error { br; span.error { (error) } }
                            }
                            td {
                                @match env.last_sync_at { Some(at) => (time(at)), None => span.muted { "never" } }
                                @if let Some(error) = &env.last_sync_error { br; span.error { (error) } }
                            }
                            td {
                                @if let Some(promotion) = &env.running_promotion_id {
                                    "running: " a href=(format!("/promotions/{promotion}")) { (promotion) } br;
                                }
                                @for (deployment, at) in scheduled.iter().filter(|(t, _, _)| *t == env.environment_id).map(|(_, d, at)| (d, at)) {
                                    "scheduled: " a href=(format!("/deployments/{deployment}")) { (deployment) } " at " (time(*at)) br;
                                }
                                @if let Some(pin) = &env.pinned { span.error { "pinned: " (pin) } }
                                @if env.running_promotion_id.is_none() && env.pinned.is_none() && !scheduled.iter().any(|(t, _, _)| *t == env.environment_id) { span.muted { "none" } }
                            }
                            td {
                                (super::actions::buttons(&session, &env.environment_id,
                                    env.class != aggregates::environment::EnvironmentClass::Dev && env.git_configured, env.pinned.is_some()))
                                a href=(format!("/environments/{}/snapshots", env.environment_id)) { "Snapshots" }
                            }
                        }
                    }
                }
            } }
        }
    };
    (
        StatusCode::OK,
        layout::page(Some(&session), "Environments", body),
    )
        .into_response()
}

/// Scheduled deployments as (target environment, deployment, when), from the
/// deployments and promotions read models.
async fn scheduled_by_target(
    state: &HttpState,
    tenant: &str,
) -> Result<Vec<(String, String, chrono::DateTime<chrono::Utc>)>, projections::query::QueryError> {
    use projections::models::{deployments, promotions};
    let store = &state.context.store;
    let scheduled = deployments::deployments(
        store,
        tenant,
        None,
        Some(aggregates::deployment::DeploymentStatus::Scheduled),
        100,
        None,
    )
    .await?;
    let mut out = vec![];
    for d in scheduled.items {
        if let (Some(at), Some(p)) = (
            d.scheduled_for,
            promotions::promotion(store, tenant, &d.promotion_id).await?,
        ) {
            out.push((p.target_environment_id, d.deployment_id, at));
        }
    }
    Ok(out)
}
