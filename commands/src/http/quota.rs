//! `/v1/quota`: consume runs and credits, allocate and release seats, expire
//! grants, read quotas.

use super::error::{outcome_response, ApiError, ErrorBody};
use super::extract::{
    quota_account, quota_type, ApiJson, ApiPath, ApiQuery, ConsumableQuotaName,
    IdempotencyKeyHeader, PositiveAmount, QuotaName, Seq, Tenant,
};
use super::read::tenant_read;
use super::schema::Accepted;
use super::AppState;
use crate::requests::quota::{ChangeSeats, ConsumeQuota, ExpireGrants};
use crate::requests::quota::{Consumed, GrantsExpired, SeatsChanged};
use aggregates::quota::{QuotaAccount, QuotaType, REFERENCE_LENGTH_MAX};
use aggregates::text::Text;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use projections::quota::{self as quota_read, QuotaView};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_quotas))
        .routes(routes!(get_quota))
        .routes(routes!(consume))
        .routes(routes!(allocate_seats))
        .routes(routes!(release_seats))
        .routes(routes!(expire_grants))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeBody {
    /// Units to consume, a positive integer.
    pub amount: PositiveAmount,
    /// An external reference (a run id): 1-200 characters, no control
    /// characters.
    #[serde(default)]
    #[schema(schema_with = reference_schema)]
    pub reference: Option<Text<REFERENCE_LENGTH_MAX>>,
    /// A quota account of the tenant; default the tenant itself.
    #[serde(default)]
    #[schema(value_type = Option<QuotaAccount>, inline)]
    pub account: Option<String>,
}

fn reference_schema() -> RefOr<Schema> {
    aggregates::schema::nullable(Text::<REFERENCE_LENGTH_MAX>::schema())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeatsBody {
    /// Seats, a positive integer.
    pub amount: PositiveAmount,
    /// A quota account of the tenant; default the tenant itself.
    #[serde(default)]
    #[schema(value_type = Option<QuotaAccount>, inline)]
    pub account: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpireBody {
    /// A quota account of the tenant; default the tenant itself.
    #[serde(default)]
    #[schema(value_type = Option<QuotaAccount>, inline)]
    pub account: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QuotaQuery {
    /// A quota account of the tenant; default the tenant itself.
    #[param(value_type = Option<QuotaAccount>, inline)]
    pub account: Option<String>,
    /// Wait until the projection has applied this tenant_seq.
    #[param(inline)]
    pub min_seq: Option<Seq>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotasView {
    pub quotas: Vec<QuotaView>,
    pub projection_seq: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OneQuotaView {
    #[serde(flatten)]
    pub quota: QuotaView,
    pub projection_seq: i64,
}

async fn read_quotas(
    state: &AppState,
    tenant_id: aggregates::TenantId,
    quota: Option<QuotaType>,
    account: Option<QuotaAccount>,
    min_seq: Option<Seq>,
) -> Result<(Vec<QuotaView>, i64), ApiError> {
    let now = state.bus.now();
    tenant_read(
        state,
        tenant_id,
        quota_read::NAME,
        min_seq,
        move |connection| {
            Box::pin(async move {
                quota_read::quota_views(connection, tenant_id, quota, account.as_ref(), now).await
            })
        },
    )
    .await
}

/// Every quota type of the tenant (or of one of its accounts): available
/// now, consumed, allocated, unlimited, and the active grants with balances.
#[utoipa::path(
    get,
    path = "/v1/quota",
    tag = "quota",
    params(QuotaQuery),
    security(("api_key" = [])),
    responses((status = 200, description = "The quotas", body = QuotasView))
)]
async fn list_quotas(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(query): ApiQuery<QuotaQuery>,
) -> Result<Json<QuotasView>, ApiError> {
    let account = quota_account(query.account.as_deref())?;
    let (quotas, projection_seq) =
        read_quotas(&state, tenant_id, None, account, query.min_seq).await?;
    Ok(Json(QuotasView {
        quotas,
        projection_seq,
    }))
}

/// One quota type.
#[utoipa::path(
    get,
    path = "/v1/quota/{quota}",
    tag = "quota",
    params(("quota" = QuotaName, Path, description = "seats, runs or credits"), QuotaQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The quota", body = OneQuotaView),
        (status = 400, description = "Unknown quota type", body = ErrorBody),
    )
)]
async fn get_quota(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiPath(quota): ApiPath<String>,
    ApiQuery(query): ApiQuery<QuotaQuery>,
) -> Result<Json<OneQuotaView>, ApiError> {
    let quota = quota_type(&quota)?;
    let account = quota_account(query.account.as_deref())?;
    let (mut quotas, projection_seq) =
        read_quotas(&state, tenant_id, Some(quota), account, query.min_seq).await?;
    let quota = quotas
        .pop()
        .ok_or_else(|| ApiError::Internal("a quota view is always returned".into()))?;
    Ok(Json(OneQuotaView {
        quota,
        projection_seq,
    }))
}

/// Consumes runs or credits. Grants burn down by priority, earliest expiry,
/// promotional before paid, oldest by issue, id; one consumption may span
/// several.
/// Not enough available: 429 `quota_exceeded` with `details.available`, and
/// nothing is consumed.
#[utoipa::path(
    post,
    path = "/v1/quota/{quota}/consume",
    tag = "quota",
    request_body = ConsumeBody,
    params(
        ("quota" = inline(ConsumableQuotaName), Path, description = "runs or credits (seats are allocated, not consumed)"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Consumed", body = Accepted<Consumed>),
        (status = 400, description = "Invalid input (names the field) or not consumable", body = ErrorBody),
        (status = 422, description = "A count would pass 64 bits (`amount_overflow`), or key reused", body = ErrorBody),
        (status = 429, description = "Not enough quota; details.available", body = ErrorBody),
    )
)]
async fn consume(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(quota): ApiPath<String>,
    ApiJson(body): ApiJson<ConsumeBody>,
) -> Result<Response, ApiError> {
    let quota = quota_type(&quota)?;
    if !quota.is_consumable() {
        return Err(ApiError::bad_request(
            "seats are allocated and released, not consumed",
        ));
    }
    let request = ConsumeQuota {
        quota,
        account: quota_account(body.account.as_deref())?,
        amount: body.amount.0,
        reference: body.reference.map(Text::into_string),
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

async fn change_seats(
    state: AppState,
    tenant_id: aggregates::TenantId,
    key: eventstore::IdempotencyKey,
    body: SeatsBody,
    release: bool,
) -> Result<Response, ApiError> {
    let request = ChangeSeats {
        account: quota_account(body.account.as_deref())?,
        amount: body.amount.0,
        release,
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// Allocates seats (an allocation gauge: released seats can be allocated again).
#[utoipa::path(
    post,
    path = "/v1/quota/seats/allocate",
    tag = "quota",
    request_body = SeatsBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Allocated", body = Accepted<SeatsChanged>),
        (status = 429, description = "Not enough seats (0 while seats are over-allocated after a downgrade, or while seats on a grant past its expiry have no room on the grants in effect); details.available", body = ErrorBody),
    )
)]
async fn allocate_seats(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<SeatsBody>,
) -> Result<Response, ApiError> {
    change_seats(state, tenant_id, key, body, false).await
}

/// Releases allocated seats.
#[utoipa::path(
    post,
    path = "/v1/quota/seats/release",
    tag = "quota",
    request_body = SeatsBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Released", body = Accepted<SeatsChanged>),
        (status = 422, description = "More than allocated", body = ErrorBody),
    )
)]
async fn release_seats(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<SeatsBody>,
) -> Result<Response, ApiError> {
    change_seats(state, tenant_id, key, body, true).await
}

/// Expires the grants whose expiry has passed, posting their unused balance
/// as breakage. (Every other quota command does this first anyway.)
#[utoipa::path(
    post,
    path = "/v1/quota/{quota}/expire",
    tag = "quota",
    request_body = ExpireBody,
    params(
        ("quota" = QuotaName, Path, description = "seats, runs or credits"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses((status = 200, description = "Expired (possibly none)", body = Accepted<GrantsExpired>))
)]
async fn expire_grants(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(quota): ApiPath<String>,
    ApiJson(body): ApiJson<ExpireBody>,
) -> Result<Response, ApiError> {
    let request = ExpireGrants {
        quota: quota_type(&quota)?,
        account: quota_account(body.account.as_deref())?,
        due_at: None,
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}
