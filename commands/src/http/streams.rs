//! `/v1/streams`: the tenant's event streams (the stream index projection).

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, PageLimit, Seq, Tenant};
use super::read::tenant_read;
use super::AppState;
use aggregates::schema::text;
use aggregates::text::Text;
use axum::extract::State;
use axum::Json;
use projections::stream_index::{self, Stream};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_streams))
}

/// An aggregate type or id in a query: 1-200 characters, no control
/// characters (longer than any the ledger writes).
type StreamText = Text<200>;

/// Where a page of streams starts: after the stream `{aggregate_type}/{aggregate_id}`
/// (an aggregate type has no `/`), from `next` of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCursor {
    pub aggregate_type: String,
    pub aggregate_id: String,
}

/// The pattern of a cursor: a type without `/`, then `/` and an id, no
/// control characters.
const CURSOR_PATTERN: &str =
    r"^[^/\u0000-\u001F\u007F-\u009F]{1,200}/[^\u0000-\u001F\u007F-\u009F]{1,200}$";

impl StreamCursor {
    fn text(&self) -> String {
        format!("{}/{}", self.aggregate_type, self.aggregate_id)
    }
}

impl<'de> Deserialize<'de> for StreamCursor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let (aggregate_type, aggregate_id) = text.split_once('/').ok_or_else(|| {
            serde::de::Error::custom("expected {aggregate_type}/{aggregate_id}, from `next`")
        })?;
        let part = |part: &str| {
            StreamText::parse(part)
                .map(Text::into_string)
                .map_err(serde::de::Error::custom)
        };
        Ok(Self {
            aggregate_type: part(aggregate_type)?,
            aggregate_id: part(aggregate_id)?,
        })
    }
}

impl PartialSchema for StreamCursor {
    fn schema() -> RefOr<Schema> {
        text(401, CURSOR_PATTERN).into()
    }
}

impl ToSchema for StreamCursor {}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamsQuery {
    /// Only streams of this aggregate type.
    #[param(schema_with = StreamText::schema)]
    aggregate_type: Option<StreamText>,
    /// Continue after this stream: `next` of the previous page.
    #[param(inline)]
    after: Option<StreamCursor>,
    /// Page size, 1-1000 (default 100).
    #[param(inline)]
    limit: Option<PageLimit>,
    /// Wait until the projection has applied this tenant_seq (read-your-writes).
    #[param(inline)]
    min_seq: Option<Seq>,
}

/// A page of streams.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamsPage {
    pub streams: Vec<Stream>,
    /// Pass as `after` for the next page (`{aggregate_type}/{aggregate_id}`
    /// of the last stream); `null` on the last page.
    pub next: Option<String>,
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
    let limit = PageLimit::or_default(query.limit);
    let after = query.after;
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
                    .map(|cursor| (cursor.aggregate_type.as_str(), cursor.aggregate_id.as_str()));
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
        .map(|last| {
            StreamCursor {
                aggregate_type: last.aggregate_type.clone(),
                aggregate_id: last.aggregate_id.clone(),
            }
            .text()
        });
    Ok(Json(StreamsPage {
        streams,
        next,
        projection_seq,
    }))
}
