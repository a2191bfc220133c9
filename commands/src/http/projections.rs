//! `/v1/projections`: state and lag of every projection (admin token).

use super::error::{ApiError, ErrorBody};
use super::extract::Admin;
use super::AppState;
use axum::extract::State;
use axum::Json;
use projections::status::ProjectionStatus;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_projections))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionsList {
    #[schema(value_type = Vec<Object>)]
    pub projections: Vec<ProjectionStatus>,
    /// How far the replica the reads go to (`serve --read-database-url`)
    /// is behind in replaying the primary, in seconds; `null` when reads go
    /// to the primary, or when the replica cannot be asked
    /// (`replica_error`).
    pub replica_replay_lag_seconds: Option<f64>,
    /// Why the replica's lag could not be read (it is down or refuses the
    /// server's login); `null` when it was, or when reads go to the primary.
    pub replica_error: Option<String>,
}

/// Every projection: version, state (live, rebuilding, failed with its
/// error), checkpoint, events and seconds behind.
#[utoipa::path(
    get,
    path = "/v1/projections",
    tag = "operations",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Projection states", body = ProjectionsList),
        (status = 401, description = "Not the admin token", body = ErrorBody),
    )
)]
async fn list_projections(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<ProjectionsList>, ApiError> {
    let names = state.projection_names();
    let projections = projections::status::status(state.store.pool(), &names)
        .await
        .map_err(|error| match error {
            projections::ProjectionError::Store(store) => ApiError::from(store),
            other => ApiError::Internal(other.to_string()),
        })?;
    // The projections' own state is the primary's: a replica that cannot
    // be asked is named, not a failure of the whole list.
    let (replica_replay_lag_seconds, replica_error) = match state.replica_lag().await {
        Ok(lag) => (lag, None),
        Err(error) => (None, Some(error.to_string())),
    };
    Ok(Json(ProjectionsList {
        projections,
        replica_replay_lag_seconds,
        replica_error,
    }))
}
