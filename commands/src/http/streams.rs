//! `/v1/streams`: the tenant's event streams (the stream index projection).

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, Tenant};
use super::read::tenant_read;
use super::AppState;
use aggregates::text::Text;

/// An aggregate type or id in a query: 1-200 characters, no control
/// characters (longer than any the ledger writes).
type StreamText = Text<200>;
use axum::extract::State;
use axum::Json;
use projections::stream_index::{self, Stream};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_streams))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamsQuery {
    /// Only streams of this aggregate type.
    #[param(value_type = Option<String>, min_length = 1, max_length = 200)]
    aggregate_type: Option<StreamText>,
    /// Continue after this stream (with `after_id`), from `next` of the previous page.
    #[param(value_type = Option<String>, min_length = 1, max_length = 200)]
    after_type: Option<StreamText>,
    #[param(value_type = Option<String>, min_length = 1, max_length = 200)]
    after_id: Option<StreamText>,
    /// Page size, 1-1000 (default 100).
    limit: Option<i64>,
    /// Wait until the projection has applied this tenant_seq (read-your-writes).
    min_seq: Option<i64>,
}

/// Where the next page starts.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamCursor {
    pub after_type: String,
    pub after_id: String,
}

/// A page of streams.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamsPage {
    pub streams: Vec<Stream>,
    /// `null` on the last page.
    pub next: Option<StreamCursor>,
    /// tenant_seq the projection had applied when read.
    pub projection_seq: i64,
}

/// Lists the tenant's streams: aggregate type and id, version, last seq.
#[utoipa::path(
    get,
    path = "/v1/streams",
    tag = "streams",
    params(StreamsQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "A page of streams", body = StreamsPage),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 503, description = "The projection did not reach min_seq in time", body = ErrorBody),
    )
)]
async fn list_streams(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(query): ApiQuery<StreamsQuery>,
) -> Result<Json<StreamsPage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=stream_index::PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {}",
            stream_index::PAGE_MAX
        )));
    }
    let after = match (query.after_type, query.after_id) {
        (Some(after_type), Some(after_id)) => {
            Some((after_type.into_string(), after_id.into_string()))
        }
        (None, None) => None,
        _ => return Err(ApiError::bad_request("after_type and after_id go together")),
    };
    let aggregate_type = query.aggregate_type.map(Text::into_string);
    let (streams, projection_seq) = tenant_read(
        &state,
        tenant_id,
        stream_index::NAME,
        query.min_seq,
        move |connection| {
            Box::pin(async move {
                let after = after
                    .as_ref()
                    .map(|(after_type, after_id)| (after_type.as_str(), after_id.as_str()));
                stream_index::list(
                    connection,
                    tenant_id,
                    aggregate_type.as_deref(),
                    after,
                    limit,
                )
                .await
            })
        },
    )
    .await?;
    let next = (streams.len() as i64 == limit)
        .then(|| streams.last())
        .flatten()
        .map(|last| StreamCursor {
            after_type: last.aggregate_type.clone(),
            after_id: last.aggregate_id.clone(),
        });
    Ok(Json(StreamsPage {
        streams,
        next,
        projection_seq,
    }))
}
