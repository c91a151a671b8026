//! HTTP: health and readiness. (The GraphQL API mounts here in its own module.)

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub projections: projections::ProjectorHandle,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(not_found)
        .with_state(state)
}

/// The process is up.
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The service can do its work: the database answers and no projection has stopped.
async fn ready(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => {
            let projections = state.projections.status();
            let stopped = projections.iter().any(|p| p.failed.is_some());
            let body = Json(json!({
                "status": if stopped { "degraded" } else { "ready" },
                "database": state.store.backend().as_str(),
                "projections": projections,
            }));
            if stopped {
                (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
            } else {
                body.into_response()
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "database": "unreachable" })),
            )
                .into_response()
        }
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": { "code": "NOT_FOUND", "message": "no such route" } })),
    )
        .into_response()
}
