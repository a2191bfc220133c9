//! `/metrics`: Prometheus text exposition.

use super::AppState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Command counts and latencies, append batch sizes, conflicts, and per
/// projection its checkpoint, lag and state.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let names = state.projection_names();
    match projections::status::status(state.store.pool(), &names).await {
        Ok(statuses) => state.metrics.set_projections(&statuses),
        // The command metrics are still worth serving without the database.
        Err(error) => tracing::warn!(%error, "projection status unavailable for /metrics"),
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.encode(),
    )
}
