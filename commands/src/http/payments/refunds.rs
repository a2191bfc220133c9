//! Refunds and disputes of a payment: a refund drawn from its tenders
//! (the most recently captured first, or the one named), failed by its
//! processor; a dispute freezing part of a capture, answered with
//! evidence, closed won or lost.

use super::{asset, holder, payment, submit, EmptyBody, Note};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{
    ApiJson, ApiPath, IdempotencyKeyHeader, NonNegativeAmount, PositiveAmount, Tenant,
};
use crate::http::schema::Accepted;
use crate::http::AppState;
use crate::pipeline::derive_id;
use crate::requests::payments::{
    source_account, CloseDispute, DisputeAnswer, FailRefund, OpenDispute, RefundAnswer,
    RefundPayment, SubmitEvidence, DISPUTE_ENTITY, REFUND_ENTITY,
};
use aggregates::ids::{CaptureId, DisputeId, PaymentId, RefundId, TenderId};
use aggregates::journal::account::AccountCode;
use aggregates::money::Amount;
use aggregates::payments::accounts;
use aggregates::payments::{DisputeOutcome, Payment, TenderSource};
use aggregates::text::{Name, Text};
use aggregates::EntryId;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeSet;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<crate::http::AppState> {
    OpenApiRouter::new()
        .routes(routes!(refund))
        .routes(routes!(fail_refund))
        .routes(routes!(open_dispute))
        .routes(routes!(submit_evidence))
        .routes(routes!(close_dispute))
}

/// The account `source` posts to.
fn account_of(source: &TenderSource) -> Result<AccountCode, ApiError> {
    source_account(source)
        .map(|account| account.code)
        .map_err(|refusal| ApiError::Internal(format!("a tender's account: {refusal:?}")))
}

/// The accounts of every tender of `payment`, each once.
fn tender_accounts(payment: &Payment) -> Result<Vec<AccountCode>, ApiError> {
    let codes: BTreeSet<AccountCode> = payment
        .tenders
        .iter()
        .map(|tender| account_of(&tender.source))
        .collect::<Result<_, _>>()?;
    Ok(codes.into_iter().collect())
}

/// A refund.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    pub amount: PositiveAmount,
    /// The tender to refund; default the most recently captured first.
    #[serde(default)]
    pub tender_id: Option<TenderId>,
    /// The processor's reference for the refund (`re_1`), unique per
    /// processor; settlement lines name it. Required when the refund draws
    /// from a processor's tender (`refund_reference_required`).
    #[serde(default)]
    pub reference: Option<Name>,
    #[serde(default)]
    #[schema(schema_with = super::note_schema)]
    pub reason: Option<Note>,
}

/// Refunds part or all of what was captured and not refunded or disputed:
/// Dr `refunds` / Cr each tender's account it draws from (a gift card's
/// balance is given back). Pending until settled or failed. The refund's
/// id is derived from the Idempotency-Key.
#[utoipa::path(
    post,
    path = "/v1/payments/{payment_id}/refunds",
    tag = "payments",
    request_body = RefundBody,
    params(
        ("payment_id" = inline(PaymentId), Path, description = "The payment"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Refunded (pending)", body = Accepted<RefundAnswer>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 404, description = "No such payment, or `unknown_tender`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`refund_exceeds_captured` (details: refundable, asked), `refund_across_processors` (it would draw from tenders of several processors: refund each one's on its own, naming the tender; details: processors), `refund_reference_required` (it draws from a processor's tender: name the processor's reference, which its settlement line names), `too_many_refunds`, `reference_taken`; or key reused", body = ErrorBody),
    )
)]
async fn refund(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(payment_id): ApiPath<PaymentId>,
    ApiJson(body): ApiJson<RefundBody>,
) -> Result<Response, ApiError> {
    let refund_id = RefundId::from_uuid(derive_id(tenant_id, &key, "refund"));
    let asked = json!({"payment_id": payment_id, "body": &body});
    submit(&state, tenant_id, key, asked, || async {
        let payment = payment(&state, tenant_id, payment_id).await?;
        Ok(RefundPayment {
            payment_id,
            refund_id,
            amount: body.amount.0,
            tender_id: body.tender_id,
            reference: body.reference.as_ref().map(Name::to_string),
            reason: body.reason.as_ref().map(|reason| reason.to_string()),
            accounts: tender_accounts(&payment)?,
            asset: asset(&payment)?,
        })
    })
    .await
}

/// Why a refund or payout failed.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureBody {
    #[serde(default)]
    #[schema(schema_with = super::note_schema)]
    pub reason: Option<Note>,
}

/// Fails a pending refund (its processor could not pay it): its entry is
/// reversed, and what it drew is refundable again.
#[utoipa::path(
    post,
    path = "/v1/refunds/{refund_id}/fail",
    tag = "payments",
    request_body = FailureBody,
    params(
        ("refund_id" = inline(RefundId), Path, description = "The refund"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Failed; its entry reversed", body = Accepted<RefundAnswer>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 404, description = "No such refund", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`refund_not_pending` (details: state); or key reused", body = ErrorBody),
    )
)]
async fn fail_refund(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(refund_id): ApiPath<RefundId>,
    ApiJson(body): ApiJson<FailureBody>,
) -> Result<Response, ApiError> {
    let reversal_id = EntryId::from_uuid(derive_id(tenant_id, &key, "reversal"));
    let asked = json!({"refund_id": refund_id, "body": &body});
    submit(&state, tenant_id, key, asked, || async {
        let (payment_id, payment) =
            holder(&state, tenant_id, REFUND_ENTITY, &refund_id.to_string()).await?;
        let mut codes = BTreeSet::from([accounts::refunds().code]);
        for part in payment.refund(refund_id).map_or(&[][..], |r| &r.parts) {
            if let Some(tender) = payment.tender(part.tender_id) {
                codes.insert(account_of(&tender.source)?);
            }
        }
        Ok(FailRefund {
            payment_id,
            refund_id,
            reversal_id,
            reason: body.reason.as_ref().map(Text::to_string),
            accounts: codes.into_iter().collect(),
            asset: asset(&payment)?,
        })
    })
    .await
}

/// A dispute of a capture (a chargeback).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisputeBody {
    pub capture_id: CaptureId,
    /// What the dispute takes, frozen until it closes.
    pub amount: PositiveAmount,
    /// The processor's dispute fee, booked as it opens; default 0.
    #[serde(default)]
    pub fee: Option<NonNegativeAmount>,
    /// The processor's reference for the dispute (`dp_1`), which its
    /// settlement line names; required (`dispute_reference_required`).
    #[serde(default)]
    pub reference: Option<Name>,
    #[serde(default)]
    #[schema(schema_with = super::note_schema)]
    pub reason: Option<Note>,
}

/// Opens a dispute of a capture: its amount moves from the tender's
/// receivable to `funds_in_dispute` (frozen: neither refundable nor
/// disputable again) and its fee to `dispute_fees`. The dispute's id is
/// derived from the Idempotency-Key.
#[utoipa::path(
    post,
    path = "/v1/payments/{payment_id}/disputes",
    tag = "payments",
    request_body = DisputeBody,
    params(
        ("payment_id" = inline(PaymentId), Path, description = "The payment"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Opened, `needs_response`", body = Accepted<DisputeAnswer>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 404, description = "No such payment, or `unknown_capture`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`dispute_exceeds_captured` (details: disputable, asked), `dispute_requires_processor` (a cash or gift-card capture), `dispute_reference_required` (name the processor's reference for the dispute, which its settlement line names), `too_many_disputes`, `reference_taken`; or key reused", body = ErrorBody),
    )
)]
async fn open_dispute(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(payment_id): ApiPath<PaymentId>,
    ApiJson(body): ApiJson<DisputeBody>,
) -> Result<Response, ApiError> {
    let dispute_id = DisputeId::from_uuid(derive_id(tenant_id, &key, "dispute"));
    let asked = json!({"payment_id": payment_id, "body": &body});
    submit(&state, tenant_id, key, asked, || async {
        let payment = payment(&state, tenant_id, payment_id).await?;
        // A capture the payment does not have is refused by the payment;
        // any account will do until then.
        let account = match payment.capture(body.capture_id) {
            Some((tender, _)) => account_of(&tender.source)?,
            None => accounts::funds_in_dispute().code,
        };
        Ok(OpenDispute {
            payment_id,
            dispute_id,
            capture_id: body.capture_id,
            amount: body.amount.0,
            fee: body.fee.map_or(Amount::ZERO, |fee| fee.0),
            reference: body.reference.as_ref().map(Name::to_string),
            reason: body.reason.as_ref().map(Text::to_string),
            account,
            asset: asset(&payment)?,
        })
    })
    .await
}

/// The payment holding dispute `dispute_id`, and the account its tender
/// posts to.
async fn dispute_holder(
    state: &AppState,
    tenant_id: aggregates::TenantId,
    dispute_id: DisputeId,
) -> Result<(PaymentId, Payment, AccountCode), ApiError> {
    let (payment_id, payment) =
        holder(state, tenant_id, DISPUTE_ENTITY, &dispute_id.to_string()).await?;
    let account = match payment
        .dispute(dispute_id)
        .and_then(|dispute| payment.tender(dispute.tender_id))
    {
        Some(tender) => account_of(&tender.source)?,
        None => return Err(ApiError::NotFound(format!("no dispute {dispute_id}"))),
    };
    Ok((payment_id, payment, account))
}

/// Submits the evidence of a dispute: it goes `under_review`.
#[utoipa::path(
    post,
    path = "/v1/disputes/{dispute_id}/evidence",
    tag = "payments",
    request_body = EmptyBody,
    params(
        ("dispute_id" = inline(DisputeId), Path, description = "The dispute"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Under review", body = Accepted<DisputeAnswer>),
        (status = 400, description = "Invalid id or body (no fields)", body = ErrorBody),
        (status = 404, description = "No such dispute", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`evidence_already_submitted`, `dispute_closed`; or key reused", body = ErrorBody),
    )
)]
async fn submit_evidence(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(dispute_id): ApiPath<DisputeId>,
    ApiJson(body): ApiJson<EmptyBody>,
) -> Result<Response, ApiError> {
    let asked = json!({"dispute_id": dispute_id, "body": &body});
    submit(&state, tenant_id, key, asked, || async {
        let (payment_id, _, _) = dispute_holder(&state, tenant_id, dispute_id).await?;
        Ok(SubmitEvidence {
            payment_id,
            dispute_id,
        })
    })
    .await
}

/// How a dispute closes.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseDisputeBody {
    pub outcome: DisputeOutcome,
}

/// Closes a dispute, once: `won` gives the frozen amount back to the
/// receivable; `lost` moves it to `dispute_losses`. The fee stays booked
/// either way.
#[utoipa::path(
    post,
    path = "/v1/disputes/{dispute_id}/close",
    tag = "payments",
    request_body = CloseDisputeBody,
    params(
        ("dispute_id" = inline(DisputeId), Path, description = "The dispute"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Closed, `won` or `lost`", body = Accepted<DisputeAnswer>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 404, description = "No such dispute", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`dispute_closed`; or key reused", body = ErrorBody),
    )
)]
async fn close_dispute(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(dispute_id): ApiPath<DisputeId>,
    ApiJson(body): ApiJson<CloseDisputeBody>,
) -> Result<Response, ApiError> {
    let entry_id = EntryId::from_uuid(derive_id(tenant_id, &key, "entry"));
    let asked = json!({"dispute_id": dispute_id, "body": &body});
    submit(&state, tenant_id, key, asked, || async {
        let (payment_id, payment, account) = dispute_holder(&state, tenant_id, dispute_id).await?;
        Ok(CloseDispute {
            payment_id,
            dispute_id,
            outcome: body.outcome,
            entry_id,
            account,
            asset: asset(&payment)?,
        })
    })
    .await
}
