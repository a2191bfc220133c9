//! `/v1/grants`: issue, revoke, list and read grants.

use super::error::{outcome_response, ApiError, ErrorBody};
use super::extract::{
    quota_account, quota_type, ApiJson, ApiPath, ApiQuery, IdempotencyKeyHeader, PageLimit,
    PositiveAmount, Priority, QuotaName, Seq, Tenant,
};
use super::read::tenant_read;
use super::schema::Accepted;
use super::AppState;
use crate::requests::quota::{GrantIssued, GrantRevoked};
use crate::requests::quota::{IssueGrant, RevokeGrant, GRANT_ENTITY};
use aggregates::quota::{
    parse_quota_aggregate_id, GrantSource, QuotaAccount, QuotaType, PRIORITY_DEFAULT,
    QUOTA_AGGREGATE,
};
use aggregates::time::BoundedTime;
use aggregates::{GrantId, TenantId};
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use projections::quota::{self as quota_read, GrantRow};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(issue_grant, list_grants))
        .routes(routes!(get_grant))
        .routes(routes!(revoke_grant))
}

/// Where a grant comes from (subscription grants come with the plan).
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IssuedSource {
    Purchase,
    Promocode,
}

/// A field that must be present but may be `null`.
fn required_nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// `seats`, `runs` or `credits`.
    #[schema(value_type = QuotaName)]
    pub quota: String,
    /// Units granted, a positive integer; `null` for unlimited. Required.
    #[serde(default, deserialize_with = "required_nullable")]
    #[schema(value_type = Option<PositiveAmount>, inline, required = true)]
    pub amount: Option<Option<PositiveAmount>>,
    pub source: IssuedSource,
    /// 0 (burnt first) to 100 (last); default 50.
    #[serde(default)]
    #[schema(inline)]
    pub priority: Option<Priority>,
    /// When the grant becomes usable; default now. It does not change the
    /// grant's age in the burn-down order, which is issue order. RFC 3339,
    /// 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z.
    #[serde(default)]
    #[schema(value_type = Option<BoundedTime>, inline)]
    pub effective_at: Option<BoundedTime>,
    /// When it expires; default never. Same range as `effective_at`.
    #[serde(default)]
    #[schema(value_type = Option<BoundedTime>, inline)]
    pub expires_at: Option<BoundedTime>,
    /// A quota account of the tenant (an end user, a project); default the tenant itself.
    #[serde(default)]
    #[schema(value_type = Option<QuotaAccount>, inline)]
    pub account: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GrantsQuery {
    /// Only grants of this quota type.
    #[param(value_type = Option<QuotaName>, inline)]
    pub quota: Option<String>,
    /// Only grants of this quota account (default: every holder's, the
    /// tenant's own and its accounts').
    #[param(value_type = Option<QuotaAccount>, inline)]
    pub account: Option<String>,
    /// Continue after this grant (from `next`).
    #[param(value_type = Option<uuid::Uuid>)]
    pub after: Option<GrantId>,
    /// Page size, 1-1000 (default 100).
    #[param(inline)]
    pub limit: Option<PageLimit>,
    /// Wait until the projection has applied this tenant_seq.
    #[param(inline)]
    pub min_seq: Option<Seq>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GrantQuery {
    /// Wait until the projection has applied this tenant_seq.
    #[param(inline)]
    pub min_seq: Option<Seq>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GrantsPage {
    pub grants: Vec<GrantRow>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next: Option<uuid::Uuid>,
    pub projection_seq: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GrantView {
    #[serde(flatten)]
    pub grant: GrantRow,
    pub projection_seq: i64,
}

/// Issues a purchased or promotional grant.
#[utoipa::path(
    post,
    path = "/v1/grants",
    tag = "grants",
    request_body = GrantBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)")),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Issued", body = Accepted<GrantIssued>),
        (status = 400, description = "Invalid input (names the field)", body = ErrorBody),
        (status = 422, description = "`expiry_in_the_past`; `invalid_expiry`: expires_at not after effective_at; `amount_overflow`: the quota's open total would pass 64 bits; or key reused", body = ErrorBody),
    )
)]
async fn issue_grant(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<GrantBody>,
) -> Result<Response, ApiError> {
    let Some(amount) = body.amount else {
        return Err(ApiError::bad_request(
            "amount: required (a positive integer, or null for unlimited)",
        ));
    };
    let priority = body
        .priority
        .map_or(PRIORITY_DEFAULT, |priority| priority.0);
    let request = IssueGrant {
        quota: quota_type(&body.quota)?,
        account: quota_account(body.account.as_deref())?,
        source: match body.source {
            IssuedSource::Purchase => GrantSource::Purchase,
            IssuedSource::Promocode => GrantSource::Promocode,
        },
        amount: amount.map(|amount| amount.0),
        priority,
        effective_at: body.effective_at.map(BoundedTime::get),
        expires_at: body.expires_at.map(BoundedTime::get),
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// The tenant's grants with their balances.
#[utoipa::path(
    get,
    path = "/v1/grants",
    tag = "grants",
    params(GrantsQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "A page of grants", body = GrantsPage),
        (status = 400, description = "Invalid query", body = ErrorBody),
    )
)]
async fn list_grants(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(query): ApiQuery<GrantsQuery>,
) -> Result<Json<GrantsPage>, ApiError> {
    let quota = query.quota.as_deref().map(quota_type).transpose()?;
    let account = quota_account(query.account.as_deref())?;
    let limit = PageLimit::or_default(query.limit);
    let after = query.after;
    let (grants, projection_seq) = tenant_read(
        &state,
        tenant_id,
        quota_read::NAME,
        query.min_seq,
        move |connection| {
            Box::pin(async move {
                quota_read::list_grants(
                    connection,
                    tenant_id,
                    quota,
                    account.as_ref(),
                    after,
                    limit,
                )
                .await
            })
        },
    )
    .await?;
    let next = (grants.len() as i64 == limit)
        .then(|| grants.last().map(|grant| grant.grant_id))
        .flatten();
    Ok(Json(GrantsPage {
        grants,
        next,
        projection_seq,
    }))
}

/// One grant; another tenant's grant is not found.
#[utoipa::path(
    get,
    path = "/v1/grants/{grant_id}",
    tag = "grants",
    params(("grant_id" = uuid::Uuid, Path, description = "The grant"), GrantQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The grant", body = GrantView),
        (status = 400, description = "grant_id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such grant for this tenant", body = ErrorBody),
    )
)]
async fn get_grant(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiPath(grant_id): ApiPath<GrantId>,
    ApiQuery(query): ApiQuery<GrantQuery>,
) -> Result<Json<GrantView>, ApiError> {
    let (grant, projection_seq) = tenant_read(
        &state,
        tenant_id,
        quota_read::NAME,
        query.min_seq,
        move |connection| Box::pin(quota_read::get_grant(connection, tenant_id, grant_id)),
    )
    .await?;
    let grant = grant.ok_or_else(|| ApiError::NotFound(format!("no grant {grant_id}")))?;
    Ok(Json(GrantView {
        grant,
        projection_seq,
    }))
}

/// Revokes a purchased or promotional grant; its unused balance is posted as
/// breakage. Another tenant's grant is not found.
#[utoipa::path(
    post,
    path = "/v1/grants/{grant_id}/revoke",
    tag = "grants",
    params(
        ("grant_id" = uuid::Uuid, Path, description = "The grant"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Revoked", body = Accepted<GrantRevoked>),
        (status = 400, description = "grant_id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such grant for this tenant", body = ErrorBody),
        (status = 422, description = "Already closed, a subscription grant, or key reused", body = ErrorBody),
    )
)]
async fn revoke_grant(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(grant_id): ApiPath<GrantId>,
) -> Result<Response, ApiError> {
    let (quota, account) = grant_holder(&state, tenant_id, grant_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no grant {grant_id}")))?;
    let request = RevokeGrant {
        grant_id,
        quota,
        account,
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// Which quota (type and holder) holds `grant_id`, if the tenant has it.
async fn grant_holder(
    state: &AppState,
    tenant_id: TenantId,
    grant_id: GrantId,
) -> Result<Option<(QuotaType, Option<QuotaAccount>)>, ApiError> {
    let holder = state
        .store
        .find_indexed(tenant_id, GRANT_ENTITY, &grant_id.to_string())
        .await?;
    match holder {
        None => Ok(None),
        Some(key) if key.aggregate_type != QUOTA_AGGREGATE => Err(ApiError::Internal(format!(
            "grant {grant_id} is held by a {} aggregate, not a quota",
            key.aggregate_type
        ))),
        Some(key) => parse_quota_aggregate_id(&key.aggregate_id)
            .map(Some)
            .ok_or_else(|| {
                ApiError::Internal(format!(
                    "grant {grant_id} is held by {:?}, not a quota aggregate id",
                    key.aggregate_id
                ))
            }),
    }
}
