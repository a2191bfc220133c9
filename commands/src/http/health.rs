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

/// How long the read replica has to answer (a connection of the probe's
/// own, made and asked) before it counts as out of reach: a probe answers
/// well before a load balancer gives up on it.
const REPLICA_PROBE: Duration = Duration::from_secs(1);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
    /// Where reads of the read tables go: `primary`, or `replica` (the
    /// database `serve --read-database-url` names).
    #[schema(example = "primary")]
    pub reads: &'static str,
    /// Whether the read replica answered (within a second): asked with
    /// `reads=true` only, `null` otherwise and when reads go to the
    /// primary.
    pub replica_answered: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// `true`: ask the read replica too (on a connection of its own), and
    /// answer 503 when it does not answer within a second, for a load
    /// balancer routing reads. Default `false`: the primary only (a server
    /// that cannot read still takes commands). Other parameters are
    /// ignored.
    #[serde(default)]
    pub reads: bool,
}

/// Answers 200 when the database answers, 503 otherwise; with
/// `reads=true`, 503 also when the read replica does not (within a
/// second).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    params(HealthQuery),
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 400, description = "A query parameter that is not one (`reads` not `true` or `false`)", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: the database, or with `reads=true` the read replica, is unavailable", body = ErrorBody),
    )
)]
async fn healthz(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<HealthQuery>,
) -> Result<Json<Health>, ApiError> {
    state.store.ping().await?;
    let replica_answered = if state.reads_replica && query.reads {
        if let Some(error) = replica_error(&state).await {
            return Err(ApiError::Unavailable {
                code: "database_unavailable",
                message: format!("the read replica is unavailable: {error}"),
                details: Value::Null,
            });
        }
        Some(true)
    } else {
        None
    };
    Ok(Json(Health {
        status: "ok",
        reads: if state.reads_replica {
            "replica"
        } else {
            "primary"
        },
        replica_answered,
    }))
}

/// Why the read replica does not answer, if it does not within
/// [`REPLICA_PROBE`]: asked on a connection of the probe's own, so that it
/// never waits behind the reads for one of the pool's.
async fn replica_error(state: &AppState) -> Option<String> {
    let options = state.read_pool.connect_options();
    let probe = async move {
        let mut connection = sqlx::ConnectOptions::connect(options.as_ref()).await?;
        sqlx::query("SELECT 1").execute(&mut connection).await?;
        sqlx::Connection::close(connection).await
    };
    match tokio::time::timeout(REPLICA_PROBE, probe).await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some(format!("no answer within {} ms", REPLICA_PROBE.as_millis())),
    }
}
