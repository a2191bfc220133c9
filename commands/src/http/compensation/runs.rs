//! The pay run routes: create (claiming every payee's payable lines by the
//! cutoff), approve, reopen (before payment) and pay.

use super::KEY;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{ApiJson, ApiPath, IdempotencyKeyHeader, Tenant};
use crate::http::payments::{submit, EmptyBody};
use crate::http::schema::Accepted;
use crate::http::AppState;
use crate::pipeline::derive_id;
use crate::pipeline::load::current_one;
use crate::requests::compensation::{
    ApprovePayRun, CancelPayRun, CreatePayRun, PayPayRun, PayRunAnswer, ReopenPayRun,
};
use aggregates::compensation::plan::{Directory, DIRECTORY};
use aggregates::compensation::{PayRun, RunTerms};
use aggregates::ids::PayRunId;
use aggregates::time::BoundedTime;
use aggregates::TenantId;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(approve))
        .routes(routes!(reopen))
        .routes(routes!(cancel))
        .routes(routes!(pay))
}

/// The tenant's payees, as the directory stands.
async fn directory(state: &AppState, tenant_id: TenantId) -> Result<Vec<String>, ApiError> {
    let directory: Directory = current_one(&state.store, tenant_id, DIRECTORY).await?;
    Ok(directory.payees.into_iter().collect())
}

/// Pay run `pay_run_id` as the store has it; 404 when the tenant has none.
async fn existing_run(
    state: &AppState,
    tenant_id: TenantId,
    pay_run_id: PayRunId,
) -> Result<PayRun, ApiError> {
    let run: PayRun = current_one(&state.store, tenant_id, &pay_run_id.to_string()).await?;
    if run.status.is_none() {
        return Err(ApiError::NotFound(format!("no pay run {pay_run_id}")));
    }
    Ok(run)
}

/// A pay period and its cutoff.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayRunBody {
    #[schema(value_type = BoundedTime)]
    pub period_start: BoundedTime,
    /// After `period_start`.
    #[schema(value_type = BoundedTime)]
    pub period_end: BoundedTime,
    /// Every payable line accrued up to it, in no other run, is claimed (of
    /// the payees with no share of a run not yet paid, since rules 10).
    /// Since rules 11 within the period (its ends included) and not after
    /// the run is created.
    #[schema(value_type = BoundedTime)]
    pub cutoff: BoundedTime,
}

/// Creates a pay run: claims every payable line of every payee accrued up
/// to the cutoff and in no other run (a line is in at most one run); per
/// payee, the lines, gross, what was carried in and the net. Since
/// version 10 of the rules a payee's runs are paid in turn: a payee with a
/// share of a run not yet paid is left out, and listed in `waiting` with
/// those runs when it had lines payable. Its id is derived from the
/// Idempotency-Key.
#[utoipa::path(
    post,
    path = "/v1/pay-runs",
    tag = "compensation",
    request_body = PayRunBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY)),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created, `draft`", body = Accepted<PayRunAnswer>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`invalid_period` (the period ends before it starts); `cutoff_outside_period` (details `cutoff`, `period_start`, `period_end`) or `cutoff_in_future` (details `cutoff`, `at`), since rules 11; `amount_overflow`; or key reused", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<PayRunBody>,
) -> Result<Response, ApiError> {
    let asked = serde_json::to_value(&body).unwrap_or_default();
    let terms = RunTerms {
        period_start: body.period_start.get(),
        period_end: body.period_end.get(),
        cutoff: body.cutoff.get(),
    };
    let pay_run_id = PayRunId::from_uuid(derive_id(tenant_id, &key, "pay_run"));
    submit(&state, tenant_id, key, asked, || async {
        Ok(CreatePayRun {
            pay_run_id,
            terms: terms.clone(),
            payees: directory(&state, tenant_id).await?,
        })
    })
    .await
}

/// Approves a draft pay run.
#[utoipa::path(
    post,
    path = "/v1/pay-runs/{pay_run_id}/approve",
    tag = "compensation",
    request_body = EmptyBody,
    params(
        ("pay_run_id" = inline(PayRunId), Path, description = "The pay run"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Approved", body = Accepted<PayRunAnswer>),
        (status = 400, description = "Invalid id or body", body = ErrorBody),
        (status = 404, description = "`unknown_pay_run`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`pay_run_approved`; `pay_run_paid`; `pay_run_canceled`; or key reused", body = ErrorBody),
    )
)]
async fn approve(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(pay_run_id): ApiPath<PayRunId>,
    ApiJson(_): ApiJson<EmptyBody>,
) -> Result<Response, ApiError> {
    submit(
        &state,
        tenant_id,
        key,
        json!({"pay_run_id": pay_run_id}),
        || async { Ok(ApprovePayRun { pay_run_id }) },
    )
    .await
}

/// Cancels a pay run before it is paid: its lines released (payable
/// again, for a later run), nothing in it, and no way back; a payee it
/// held back from later runs (since rules 10: a payee's runs are paid in
/// turn) is claimed by the next.
#[utoipa::path(
    post,
    path = "/v1/pay-runs/{pay_run_id}/cancel",
    tag = "compensation",
    request_body = EmptyBody,
    params(
        ("pay_run_id" = inline(PayRunId), Path, description = "The pay run"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Canceled", body = Accepted<PayRunAnswer>),
        (status = 400, description = "Invalid id or body", body = ErrorBody),
        (status = 404, description = "No such pay run", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`pay_run_paid`, `pay_run_canceled`; or key reused", body = ErrorBody),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(pay_run_id): ApiPath<PayRunId>,
    ApiJson(_): ApiJson<EmptyBody>,
) -> Result<Response, ApiError> {
    over_directory(&state, tenant_id, key, pay_run_id, |payees| CancelPayRun {
        pay_run_id,
        payees,
    })
    .await
}

/// Reopens a pay run before it is paid: back to `draft`, its lines
/// released and every payable line by its cutoff claimed again (one made
/// payable since, accrued by the cutoff, included); since rules 11 no
/// further than the period's end and the run's creation, whatever older
/// rules let its cutoff be.
#[utoipa::path(
    post,
    path = "/v1/pay-runs/{pay_run_id}/reopen",
    tag = "compensation",
    request_body = EmptyBody,
    params(
        ("pay_run_id" = inline(PayRunId), Path, description = "The pay run"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Reopened, `draft`", body = Accepted<PayRunAnswer>),
        (status = 400, description = "Invalid id or body", body = ErrorBody),
        (status = 404, description = "No such pay run", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`pay_run_paid`, `pay_run_canceled`; or key reused", body = ErrorBody),
    )
)]
async fn reopen(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(pay_run_id): ApiPath<PayRunId>,
    ApiJson(_): ApiJson<EmptyBody>,
) -> Result<Response, ApiError> {
    over_directory(&state, tenant_id, key, pay_run_id, |payees| ReopenPayRun {
        pay_run_id,
        payees,
    })
    .await
}

/// Submits the request `build` makes of the directory's payees, on an
/// existing run (404 else): a reopen or a cancel.
async fn over_directory<R: crate::pipeline::Request>(
    state: &AppState,
    tenant_id: TenantId,
    key: eventstore::IdempotencyKey,
    pay_run_id: PayRunId,
    build: impl Fn(Vec<String>) -> R,
) -> Result<Response, ApiError> {
    existing_run(state, tenant_id, pay_run_id).await?;
    let build = &build;
    submit(
        state,
        tenant_id,
        key,
        json!({"pay_run_id": pay_run_id}),
        || async move { Ok(build(directory(state, tenant_id).await?)) },
    )
    .await
}

/// Pays an approved pay run: Dr `compensation_payable:<payee>` / Cr
/// `bank:payroll` per payee with a positive net; a negative net pays
/// nothing and is carried forward, recovered first in the next run. Paid
/// lines never change.
#[utoipa::path(
    post,
    path = "/v1/pay-runs/{pay_run_id}/pay",
    tag = "compensation",
    request_body = EmptyBody,
    params(
        ("pay_run_id" = inline(PayRunId), Path, description = "The pay run"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Paid: per payee `paid` and `carried_out`", body = Accepted<PayRunAnswer>),
        (status = 400, description = "Invalid id or body", body = ErrorBody),
        (status = 404, description = "No such pay run", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`pay_run_not_approved`; `pay_run_paid`; `pay_run_canceled`; `account_opened_otherwise` or `credits_exceed_debits` (the journal opened `bank:payroll` otherwise first); or key reused", body = ErrorBody),
    )
)]
async fn pay(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(pay_run_id): ApiPath<PayRunId>,
    ApiJson(_): ApiJson<EmptyBody>,
) -> Result<Response, ApiError> {
    submit(
        &state,
        tenant_id,
        key,
        json!({"pay_run_id": pay_run_id}),
        || async {
            let run = existing_run(&state, tenant_id, pay_run_id).await?;
            Ok(PayPayRun {
                pay_run_id,
                payees: run
                    .payees
                    .iter()
                    .map(|payee| (payee.payee_id.clone(), payee.asset.clone()))
                    .collect(),
            })
        },
    )
    .await
}
