//! `GET /v1/replay`: the calling tenant's state as of a seq or a time,
//! folded from its events (not from read tables).

use crate::as_of::{replay_tenant, AsOf};
use aggregates::TenantId;
use axum::extract::State;
use axum::Json;
use commands::http::error::{ApiError, ErrorBody};
use commands::http::extract::{ApiQuery, AsOfPoint, Tenant};
use commands::http::read::settled_as_of;
use commands::http::{AppState, REPLAY_TIMEOUT};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(replay))
        .merge(crate::reports::http::router())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    /// The point to replay to: a tenant_seq (the state after it), or a time
    /// (RFC 3339, 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z: the
    /// state of the events recorded at or before it). Default: the head.
    #[param(inline)]
    pub as_of: Option<AsOfPoint>,
}

/// The tenant's subscription, quotas with grants and availability, account
/// balances and trial balance as of a tenant_seq or a time; the same answer
/// at any later time.
#[utoipa::path(
    get,
    path = "/v1/replay",
    tag = "journal",
    params(ReplayQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The state as of the point asked", body = Object),
        (status = 400, description = "`as_of` neither a tenant_seq nor a time in range", body = ErrorBody),
        (status = 422, description = "`history_does_not_verify`: an event up to the point (or the one right after it) fails the chain or the domain; `details.finding` names it; `as_of_open`: a time less than 5 s past (or in the future), which later requests could still be recorded at or before (details: as_of, closes_at); `as_of_seq_ahead`: a tenant_seq beyond the tenant's last (details: as_of_seq, tenant_seq)", body = ErrorBody),
        (status = 503, description = "`replay_timeout`: the replay did not finish within 25 s; or `database_unavailable`", body = ErrorBody),
    )
)]
async fn replay(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(query): ApiQuery<ReplayQuery>,
) -> Result<Json<Value>, ApiError> {
    let as_of = match query.as_of {
        Some(AsOfPoint::Seq(seq)) => AsOf::Seq(seq),
        Some(AsOfPoint::Time(time)) => {
            AsOf::Time(settled_as_of(&state, tenant_id, time.get()).await?)
        }
        None => AsOf::Head,
    };
    let replaying = state.replays.try_acquire(tenant_id)?;
    let pool = state.replay_pool.clone();
    // A task of its own, so a client going away cannot cancel it
    // mid-transaction; bounded in all, so it cannot hold its places long
    // after its client has gone.
    let task = tokio::spawn(async move {
        let _replaying = replaying;
        tokio::time::timeout(REPLAY_TIMEOUT, replay_in_snapshot(&pool, tenant_id, as_of)).await
    });
    let report = task
        .await
        .map_err(|error| ApiError::Internal(format!("replay task failed: {error}")))?
        .map_err(|_| ApiError::Unavailable {
            code: "replay_timeout",
            message: format!(
                "the replay did not finish within {} s; replay from the command line (`ledger replay`) or as of an earlier point",
                REPLAY_TIMEOUT.as_secs()
            ),
            details: serde_json::json!({"timeout_s": REPLAY_TIMEOUT.as_secs()}),
        })?
        .map_err(|error| match error {
            crate::verify::VerifyError::Store(store) => ApiError::from(store),
            crate::verify::VerifyError::SeqOutOfRange { asked, head } => ApiError::Unprocessable {
                code: "as_of_seq_ahead",
                message: format!(
                    "tenant_seq {asked} is beyond the tenant's last, {head}: a replay as of it would change as the tenant goes on"
                ),
                details: serde_json::json!({"as_of_seq": asked, "tenant_seq": head}),
            },
            crate::verify::VerifyError::Refused(finding) => ApiError::Unprocessable {
                code: "history_does_not_verify",
                message: format!("the history does not verify: {finding}"),
                details: serde_json::json!({ "finding": finding }),
            },
            other => ApiError::Internal(other.to_string()),
        })?;
    Ok(Json(report))
}

async fn replay_in_snapshot(
    pool: &sqlx::PgPool,
    tenant_id: TenantId,
    as_of: AsOf,
) -> Result<Value, crate::verify::VerifyError> {
    let mut transaction = projections::read::begin_tenant_read(pool, tenant_id).await?;
    let report = replay_tenant(&mut transaction, tenant_id, as_of).await?;
    transaction.commit().await?;
    Ok(report)
}
