//! `/healthz`: whether the server can reach its database, and the read
//! replica its reads go to.

use super::error::{ApiError, ErrorBody};
use super::extract::ApiQuery;
use super::AppState;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How long the read replica has to answer before it counts as out of
/// reach: a probe answers well before a load balancer gives up on it.
const REPLICA_PROBE: Duration = Duration::from_secs(1);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
    /// Where reads of the read tables go: `primary`, or `replica`
    /// (`serve --read-database-url`).
    #[schema(example = "primary")]
    pub reads: &'static str,
    /// Why the read replica could not be reached (within a second); `null`
    /// when it answers or when reads go to the primary. Reads of the read
    /// tables answer 503 meanwhile; commands are unaffected.
    pub replica_error: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// `true`: answer 503 also when the read replica cannot be reached,
    /// for a load balancer routing reads (default `false`: 503 only when
    /// the primary cannot be, as a server that cannot read still takes
    /// commands).
    #[serde(default)]
    pub reads: bool,
}

/// Answers 200 when the database answers, 503 otherwise; with
/// `reads=true`, 503 also when the read replica does not.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    params(HealthQuery),
    responses(
        (status = 200, description = "Healthy; `replica_error` names a read replica out of reach", body = Health),
        (status = 400, description = "A query parameter that is not one (`reads` not `true` or `false`)", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: the database, or with `reads=true` the read replica, is unavailable", body = ErrorBody),
    )
)]
async fn healthz(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<HealthQuery>,
) -> Result<Json<Health>, ApiError> {
    state.store.ping().await?;
    let replica_error = if state.reads_replica {
        replica_error(&state).await
    } else {
        None
    };
    match replica_error {
        Some(error) if query.reads => Err(ApiError::Unavailable {
            code: "database_unavailable",
            message: format!("the read replica is unavailable: {error}"),
            details: Value::Null,
        }),
        replica_error => Ok(Json(Health {
            status: "ok",
            reads: if state.reads_replica {
                "replica"
            } else {
                "primary"
            },
            replica_error,
        })),
    }
}

/// Why the read replica does not answer, if it does not within
/// [`REPLICA_PROBE`].
async fn replica_error(state: &AppState) -> Option<String> {
    let probe = sqlx::query("SELECT 1").execute(&state.read_pool);
    match tokio::time::timeout(REPLICA_PROBE, probe).await {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some(format!("no answer within {} ms", REPLICA_PROBE.as_millis())),
    }
}
