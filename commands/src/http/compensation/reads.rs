//! The compensation reads, from the `compensation` read table (with
//! `min_seq`): a plan with every version, a payee with its totals, a
//! payee's ledger (every line: kind, source, amount, status, run), a pay
//! run. Another tenant's id is 404.

use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{ApiPath, ApiQuery, Tenant};
use crate::http::payments::views::state;
use crate::http::read::{tenant_read, ReadQuery};
use crate::http::AppState;
use crate::requests::compensation::PayRunAnswer;
use aggregates::compensation::{
    Assignment, Line, LineStatus, PayRun, Payee, Plan, PlanVersion, Profile,
};
use aggregates::ids::PayRunId;
use aggregates::text::Name;
use aggregates::TenantId;
use axum::extract::State;
use axum::Json;
use projections::compensation as documents;
use projections::documents::DocumentRow;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_plan))
        .routes(routes!(get_payee))
        .routes(routes!(get_ledger))
        .routes(routes!(get_pay_run))
}

/// Document `kind` `id` of the tenant, once the read table has applied
/// `query.min_seq`; 404 naming `what` when there is none.
async fn document(
    app: &AppState,
    tenant_id: TenantId,
    (kind, id): (&'static str, String),
    query: ReadQuery,
    what: &str,
) -> Result<(DocumentRow, i64), ApiError> {
    let key = id.clone();
    let (found, projection_seq) = tenant_read(
        app,
        tenant_id,
        documents::NAME,
        query.min_seq,
        move |connection| {
            Box::pin(async move { documents::get(connection, tenant_id, kind, &key).await })
        },
    )
    .await?;
    let found = found.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no {what} {id} (or the read table has not applied it: pass min_seq)"
        ))
    })?;
    Ok((found, projection_seq))
}

/// A plan and every version.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    pub plan_id: String,
    pub currency: String,
    pub versions: Vec<PlanVersion>,
    pub projection_seq: i64,
}

/// A payout plan with every version, oldest first.
#[utoipa::path(
    get,
    path = "/v1/compensation/plans/{plan_id}",
    tag = "compensation",
    params(("plan_id" = inline(Name), Path, description = "The plan"), ReadQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The plan", body = PlanView),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "No such plan", body = ErrorBody),
    )
)]
async fn get_plan(
    State(app): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiPath(plan_id): ApiPath<Name>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<PlanView>, ApiError> {
    let id = plan_id.into_string();
    let (found, projection_seq) = document(
        &app,
        tenant_id,
        (documents::PLAN, id.clone()),
        query,
        "plan",
    )
    .await?;
    let plan: Plan = state(&found)?;
    Ok(Json(PlanView {
        plan_id: id,
        currency: plan
            .asset
            .map(|asset| asset.code().to_string())
            .unwrap_or_default(),
        versions: plan.versions,
        projection_seq,
    }))
}

/// A payee's money, in minor units of its currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct PayeeTotals {
    /// Every line but refused ones.
    pub accrued: i64,
    /// Accrued, in a holding period.
    pub held: i64,
    /// Payable, in no run.
    pub payable: i64,
    /// Claimed by a run not yet paid.
    pub in_run: i64,
    /// Of lines paid by runs (with what they carried).
    pub paid_lines: i64,
    /// Paid out by runs.
    pub paid: i64,
    /// A negative balance not yet recovered (<= 0): carried forward by a
    /// paid run, or taken in by a run not yet paid.
    pub carried: i64,
    /// Commission over the monthly cap: recorded, not payable.
    pub capped: i64,
}

/// A payee: who, in which currency, under which plans from when, and their
/// money.
#[derive(Debug, Serialize, ToSchema)]
pub struct PayeeView {
    pub payee_id: String,
    #[serde(flatten)]
    pub profile: Profile,
    pub currency: String,
    pub assignments: Vec<Assignment>,
    pub totals: PayeeTotals,
    pub created_seq: i64,
    pub last_tenant_seq: i64,
    pub projection_seq: i64,
}

fn checked_sum(
    mut amounts: impl Iterator<Item = aggregates::money::Amount>,
) -> Result<i64, ApiError> {
    amounts
        .try_fold(0i64, |sum, amount| sum.checked_add(amount.value()))
        .ok_or_else(|| ApiError::Internal("a payee's sums overflow".into()))
}

fn totals(payee: &Payee) -> Result<PayeeTotals, ApiError> {
    let internal = |error| ApiError::Internal(format!("a payee's sums: {error}"));
    let of = |status: LineStatus| payee.sum(|line| line.status == status).map_err(internal);
    Ok(PayeeTotals {
        accrued: payee
            .sum(|line| line.status != LineStatus::Refused)
            .map_err(internal)?,
        held: of(LineStatus::Held)?,
        payable: of(LineStatus::Accrued)?,
        in_run: of(LineStatus::InRun)?,
        paid_lines: of(LineStatus::Paid)?,
        paid: checked_sum(payee.runs.values().filter_map(|share| share.paid))?,
        carried: payee.unrecovered().map_err(internal)?,
        capped: checked_sum(payee.lines.iter().map(|line| line.capped))?,
    })
}

async fn payee(
    app: &AppState,
    tenant_id: TenantId,
    payee_id: Name,
    query: ReadQuery,
) -> Result<(String, Payee, DocumentRow, i64), ApiError> {
    let id = payee_id.into_string();
    let (found, projection_seq) = document(
        app,
        tenant_id,
        (documents::PAYEE, id.clone()),
        query,
        "payee",
    )
    .await?;
    Ok((id, state(&found)?, found, projection_seq))
}

/// A payee with their assignments and totals.
#[utoipa::path(
    get,
    path = "/v1/payees/{payee_id}",
    tag = "compensation",
    params(("payee_id" = inline(Name), Path, description = "The payee"), ReadQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The payee", body = PayeeView),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "No such payee", body = ErrorBody),
    )
)]
async fn get_payee(
    State(app): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiPath(payee_id): ApiPath<Name>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<PayeeView>, ApiError> {
    let (id, payee, found, projection_seq) = payee(&app, tenant_id, payee_id, query).await?;
    let profile = payee
        .profile
        .clone()
        .ok_or_else(|| ApiError::Internal(format!("payee {id} has no profile")))?;
    Ok(Json(PayeeView {
        payee_id: id,
        currency: profile.asset.code().to_string(),
        profile,
        assignments: payee.assignments.clone(),
        totals: totals(&payee)?,
        created_seq: found.created_seq,
        last_tenant_seq: found.last_tenant_seq,
        projection_seq,
    }))
}

/// A payee's ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerView {
    pub payee_id: String,
    pub currency: String,
    /// Every line, in the order accrued.
    pub lines: Vec<Line>,
    pub totals: PayeeTotals,
    pub projection_seq: i64,
}

/// A payee's compensation ledger: every line (kind, source, amount,
/// status `held`/`accrued`/`in_run`/`paid`/`refused`, run), in order.
#[utoipa::path(
    get,
    path = "/v1/payees/{payee_id}/ledger",
    tag = "compensation",
    params(("payee_id" = inline(Name), Path, description = "The payee"), ReadQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The ledger", body = LedgerView),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "No such payee", body = ErrorBody),
    )
)]
async fn get_ledger(
    State(app): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiPath(payee_id): ApiPath<Name>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<LedgerView>, ApiError> {
    let (id, payee, _, projection_seq) = payee(&app, tenant_id, payee_id, query).await?;
    Ok(Json(LedgerView {
        payee_id: id,
        currency: payee
            .profile
            .as_ref()
            .map(|profile| profile.asset.code().to_string())
            .unwrap_or_default(),
        totals: totals(&payee)?,
        lines: payee.lines,
        projection_seq,
    }))
}

/// A pay run as read.
#[derive(Debug, Serialize, ToSchema)]
pub struct PayRunView {
    #[serde(flatten)]
    pub run: PayRunAnswer,
    pub projection_seq: i64,
}

/// A pay run: its period, status, and per payee the lines it claimed,
/// gross, carried in, net and, once paid, paid and carried out.
#[utoipa::path(
    get,
    path = "/v1/pay-runs/{pay_run_id}",
    tag = "compensation",
    params(("pay_run_id" = inline(PayRunId), Path, description = "The pay run"), ReadQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The pay run", body = PayRunView),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "No such pay run", body = ErrorBody),
    )
)]
async fn get_pay_run(
    State(app): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiPath(pay_run_id): ApiPath<PayRunId>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<PayRunView>, ApiError> {
    let (found, projection_seq) = document(
        &app,
        tenant_id,
        (documents::PAY_RUN, pay_run_id.to_string()),
        query,
        "pay run",
    )
    .await?;
    let run: PayRun = state(&found)?;
    Ok(Json(PayRunView {
        run: PayRunAnswer::of(pay_run_id, &run),
        projection_seq,
    }))
}
