//! `/metrics`: Prometheus text exposition.
//!
//! A scrape never queries the database: the projection gauges (a query that
//! grows with the number of tenants) are refreshed by a timer,
//! [`run_projection_metrics`], and a scrape encodes what the process already
//! holds. `/metrics` is open unless the server has a metrics token.

use super::auth::MetricsReader;
use super::error::ErrorBody;
use super::AppState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use std::time::Duration;
use tokio::sync::watch;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How often the projection gauges are recomputed from the database.
pub const PROJECTION_METRICS_INTERVAL: Duration = Duration::from_secs(5);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Command counts and latencies, append batch sizes, conflicts, and per
/// projection its checkpoint, lag and state (as of the last refresh, every
/// 5 s). Needs `Authorization: Bearer <metrics token>` when the server has
/// one (`LEDGER_METRICS_TOKEN`); open otherwise.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security((), ("metrics_token" = [])),
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "The server has a metrics token and the request does not carry it", body = ErrorBody),
    )
)]
async fn metrics(State(state): State<AppState>, _: MetricsReader) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.encode(),
    )
}

/// Recomputes the projection gauges once (the timer's single step).
pub async fn refresh_projection_metrics(state: &AppState) {
    refresh_projection_statuses(state).await;
    refresh_replica_lag(state).await;
}

/// Recomputes the projections' gauges, from the primary.
pub async fn refresh_projection_statuses(state: &AppState) {
    let names = state.projection_names();
    match projections::status::status(state.store.pool(), &names).await {
        Ok(statuses) => state.metrics.set_projections(&statuses),
        // The gauges keep their last values; the command metrics are still
        // worth serving without the database.
        Err(error) => tracing::warn!(%error, "projection status unavailable for /metrics"),
    }
}

/// Recomputes the replica's replay lag gauge: up to a second watching it
/// catch up, up to a connection's timeout when it is out of reach.
pub async fn refresh_replica_lag(state: &AppState) {
    match state.replica_lag().await {
        Ok(lag) => state.metrics.set_replica_lag(lag),
        Err(error) => {
            // Not the last value: a replica out of reach is not current.
            state.metrics.set_replica_lag(Some(f64::NAN));
            tracing::warn!(%error, "replica lag unavailable for /metrics");
        }
    }
}

/// Recomputes the projection gauges every `interval` until `shutdown`.
pub async fn run_projection_metrics(
    state: AppState,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(interval) => {}
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            () = refresh_projection_metrics(&state) => {}
        }
    }
}
