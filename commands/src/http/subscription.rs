//! `/v1/subscription`: subscribe, read, change plan, cancel, renew.

use super::error::{outcome_response, ApiError, ErrorBody};
use super::extract::{ApiJson, ApiQuery, IdempotencyKeyHeader, Tenant};
use super::read::{tenant_read, ReadQuery};
use super::schema::Accepted;
use super::AppState;
use crate::requests::subscription::SubscriptionAnswer;
use crate::requests::subscription::{CancelSubscription, ChangePlan, RenewSubscription, Subscribe};
use aggregates::plan::{Plan, PLAN_ID_LENGTH_MAX};
use aggregates::schema::{text, TEXT_PATTERN};
use aggregates::subscription::CancelAt;
use aggregates::text::Text;
use aggregates::time::BoundedTime;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use projections::subscriptions::{self, SubscriptionRow};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(subscribe, get_subscription))
        .routes(routes!(change_plan))
        .routes(routes!(cancel))
        .routes(routes!(renew))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeBody {
    /// A plan of the served catalog (`hobby_v3`, `team_v4`, `scale_v1`,
    /// `enterprise_v1` by default; the document lists them).
    #[schema(value_type = PlanId)]
    pub plan: Text<PLAN_ID_LENGTH_MAX>,
    /// End of a trial, if any; must be in the future (RFC 3339, at most
    /// 9999-12-31T23:59:59.999999Z).
    #[serde(default)]
    #[schema(value_type = Option<BoundedTime>, inline)]
    pub trial_ends_at: Option<BoundedTime>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePlanBody {
    /// A plan of the served catalog.
    #[schema(value_type = PlanId)]
    pub plan: Text<PLAN_ID_LENGTH_MAX>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// `now` (grants revoked) or `period_end` (grants run out with the period).
    #[schema(inline)]
    pub at: CancelAt,
}

/// The subscription as read.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    #[serde(flatten)]
    pub subscription: SubscriptionRow,
    /// Whether the trial is still running now.
    pub trialing: bool,
    /// tenant_seq the projection had applied.
    pub projection_seq: i64,
}

/// A plan id of the served catalog: the served document lists them (see
/// [`super::openapi::Document::serialize`]).
pub struct PlanId;

impl PartialSchema for PlanId {
    fn schema() -> RefOr<Schema> {
        text(PLAN_ID_LENGTH_MAX, TEXT_PATTERN).into()
    }
}

impl ToSchema for PlanId {}

fn plan(state: &AppState, id: &str) -> Result<Plan, ApiError> {
    state
        .plans
        .get(id)
        .cloned()
        .map_err(|error| ApiError::BadRequest {
            code: "unknown_plan",
            message: error.to_string(),
            details: json!({"plans": error.valid}),
        })
}

/// Subscribes the tenant to a plan. The plan's grants (seats, runs,
/// credits) are issued in the same atomic append: they are usable when this
/// answers.
#[utoipa::path(
    post,
    path = "/v1/subscription",
    tag = "subscription",
    request_body = SubscribeBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)")),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Subscribed; grants issued", body = Accepted<SubscriptionAnswer>),
        (status = 400, description = "Invalid input or unknown plan (details.plans lists the valid ones)", body = ErrorBody),
        (status = 422, description = "Already subscribed; `invalid_trial_end`: the trial ends in the past; or key reused", body = ErrorBody),
    )
)]
async fn subscribe(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<SubscribeBody>,
) -> Result<Response, ApiError> {
    let trial_ends_at = body.trial_ends_at.map(BoundedTime::get);
    let asked = json!({"plan": body.plan.as_str(), "trial_ends_at": trial_ends_at});
    let request = plan(&state, body.plan.as_str()).map(|plan| Subscribe {
        plan,
        trial_ends_at,
    });
    super::submit_resolved(&state, tenant_id, key, &asked, request).await
}

/// The tenant's subscription.
#[utoipa::path(
    get,
    path = "/v1/subscription",
    tag = "subscription",
    params(ReadQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionView),
        (status = 404, description = "The tenant never subscribed", body = ErrorBody),
        (status = 503, description = "The projection did not reach min_seq in time", body = ErrorBody),
    )
)]
async fn get_subscription(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let (row, projection_seq) = tenant_read(
        &state,
        tenant_id,
        subscriptions::NAME,
        query.min_seq,
        move |connection| Box::pin(subscriptions::get(connection, tenant_id)),
    )
    .await?;
    let subscription =
        row.ok_or_else(|| ApiError::NotFound("the tenant has no subscription".into()))?;
    let trialing = subscription.status == "active"
        && subscription
            .trial_ends_at
            .is_some_and(|trial_end| trial_end > state.bus.now());
    Ok(Json(SubscriptionView {
        subscription,
        trialing,
        projection_seq,
    }))
}

/// Moves to another plan: the old plan's subscription grants are revoked
/// (unused balance to breakage) and the new plan's issued, atomically, for
/// the rest of the period: its seats whole, its runs and credits less what
/// the period has consumed on its subscription grants (a quota used up
/// gets no grant; since rules 5, whole amounts before).
#[utoipa::path(
    post,
    path = "/v1/subscription/change-plan",
    tag = "subscription",
    request_body = ChangePlanBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Plan changed; grants revoked and issued", body = Accepted<SubscriptionAnswer>),
        (status = 400, description = "Unknown plan", body = ErrorBody),
        (status = 404, description = "No active subscription", body = ErrorBody),
        (status = 422, description = "Already on that plan, the period has ended (`period_ended`: renew first), or key reused", body = ErrorBody),
    )
)]
async fn change_plan(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<ChangePlanBody>,
) -> Result<Response, ApiError> {
    let asked = json!({"plan": body.plan.as_str()});
    let request = plan(&state, body.plan.as_str()).map(|plan| ChangePlan { plan });
    super::submit_resolved(&state, tenant_id, key, &asked, request).await
}

/// Cancels now or at the end of the period.
#[utoipa::path(
    post,
    path = "/v1/subscription/cancel",
    tag = "subscription",
    request_body = CancelBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Cancelled or scheduled", body = Accepted<SubscriptionAnswer>),
        (status = 404, description = "No active subscription", body = ErrorBody),
        (status = 422, description = "Already scheduled; `period_ended` (details.period_end): cancelling at the period end once the period has ended and awaits its renewal (cancel now instead); or key reused", body = ErrorBody),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<CancelBody>,
) -> Result<Response, ApiError> {
    let request = CancelSubscription { at: body.at };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// Starts the next period once the current one has ended: the ending
/// period's grants expire (unused balance to breakage) and the plan's grants
/// are issued again, the next period starting where the last ended; a
/// subscription scheduled to cancel at the period end ends instead. Before
/// the period end: 422 `period_not_ended` with `details.period_end`. Takes
/// no body.
#[utoipa::path(
    post,
    path = "/v1/subscription/renew",
    tag = "subscription",
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Renewed (or ended)", body = Accepted<SubscriptionAnswer>),
        (status = 404, description = "No active subscription", body = ErrorBody),
        (status = 422, description = "The period has not ended (`period_not_ended`, details.period_end), or key reused", body = ErrorBody),
    )
)]
async fn renew(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
) -> Result<Response, ApiError> {
    Ok(outcome_response(
        state
            .bus
            .execute(tenant_id, key, RenewSubscription::default())
            .await?,
    ))
}
