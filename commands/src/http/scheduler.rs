//! `/v1/scheduler/work`: what falls due for the tenant (the scheduled_work
//! projection) and what the scheduler did with it.

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, PageLimit, Seq, Tenant};
use super::read::tenant_read;
use super::AppState;
use aggregates::text::Text;
use axum::extract::State;
use axum::Json;
use projections::scheduled::{self, ScheduledRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_work))
}

/// A piece of work's name in a query: 1-200 characters, no control
/// characters.
type WorkName = Text<200>;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WorkQuery {
    /// Only the open work: neither settled by an event nor answered.
    open: Option<bool>,
    /// Continue after the work of this name: `next` of the previous page.
    #[param(schema_with = WorkName::schema)]
    after: Option<WorkName>,
    /// Page size, 1-1000 (default 100).
    #[param(inline)]
    limit: Option<PageLimit>,
    /// Wait until the projection has applied this tenant_seq (read-your-writes).
    #[param(inline)]
    min_seq: Option<Seq>,
}

/// A page of scheduled work, by due time.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkPage {
    pub work: Vec<ScheduledRow>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next: Option<String>,
    /// tenant_seq the projection had applied when read.
    pub projection_seq: i64,
}

/// Lists the tenant's scheduled work by due time: period renewals, grant
/// and hold expiries, each with the request the scheduler submits (carrying
/// its due time), the key it submits it under, and its outcome (`accepted`,
/// or `refused` with the error code: final).
#[utoipa::path(
    get,
    path = "/v1/scheduler/work",
    tag = "scheduler",
    params(WorkQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "A page of scheduled work", body = WorkPage),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 503, description = "The projection did not reach min_seq in time", body = ErrorBody),
    )
)]
async fn list_work(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(query): ApiQuery<WorkQuery>,
) -> Result<Json<WorkPage>, ApiError> {
    let limit = PageLimit::or_default(query.limit);
    let open = query.open.unwrap_or(false);
    let after = query.after.map(Text::into_string);
    let (work, projection_seq) = tenant_read(
        &state,
        tenant_id,
        scheduled::NAME,
        query.min_seq,
        move |connection| {
            Box::pin(async move {
                scheduled::list(connection, tenant_id, open, after.as_deref(), limit).await
            })
        },
    )
    .await?;
    let next = (work.len() as i64 == limit)
        .then(|| work.last())
        .flatten()
        .map(|last| last.work.clone());
    Ok(Json(WorkPage {
        work,
        next,
        projection_seq,
    }))
}
