//! Settlement batches (imported as JSON or CSV, each line matched by its
//! reference or opened as a break), breaks resolved once, and payouts of
//! settled batches to the bank.

use super::{asset_of, submit, EmptyBody, Note};
use crate::http::error::{outcome_response, ApiError, ErrorBody};
use crate::http::extract::{
    ApiJson, ApiPath, ApiQuery, IdempotencyKeyHeader, PositiveAmount, Tenant,
};
use crate::http::read::indexed_holder;
use crate::http::schema::Accepted;
use crate::http::AppState;
use crate::pipeline::derive_id;
use crate::pipeline::load::{current, current_one};
use crate::requests::payments::{
    reference_kind, settlement_id, BreakResolvedAnswer, CreatePayout, ImportSettlement,
    MarkPayoutFailed, MarkPayoutPaid, PayoutAnswer, ResolveBreak, SettlementAnswer, BREAK_ENTITY,
};
use aggregates::payments::payout::{Payout, PayoutTerms};
use aggregates::payments::reference::{reference_id, ProcessorReference};
use aggregates::payments::settlement::{Line, Resolution, Settlement, SETTLEMENT_AGGREGATE};
use aggregates::schema::Currency;
use aggregates::text::{Name, Text};
use aggregates::time::BoundedTime;
use aggregates::{EntryId, TenantId};
use axum::extract::{FromRequest, Request, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeSet;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::settlement_file::{self as file, SettlementCsv, SettlementLine, Totals};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(import))
        .routes(routes!(resolve_break))
        .routes(routes!(create_payout))
        .routes(routes!(payout_paid))
        .routes(routes!(payout_failed))
}

/// A settlement batch as JSON.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettlementBody {
    pub processor: Name,
    /// The processor's batch id, unique per processor.
    pub batch_id: Name,
    #[schema(value_type = BoundedTime, inline)]
    pub settled_at: BoundedTime,
    #[schema(value_type = Currency)]
    pub currency: String,
    /// 1 to 10,000 lines.
    #[schema(min_items = 1, max_items = 10000)]
    pub lines: Vec<SettlementLine>,
    /// The file's totals, when it states them: the lines must add up to
    /// them.
    #[serde(default)]
    pub total: Option<Totals>,
}

/// What a CSV batch says in its query (a JSON batch says it in its body,
/// and its query is not read).
#[derive(Debug, Default, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SettlementQuery {
    /// The processor (CSV bodies only).
    #[param(value_type = Option<Name>, inline)]
    pub processor: Option<Name>,
    /// The processor's batch id (CSV bodies only).
    #[param(value_type = Option<Name>, inline)]
    pub batch_id: Option<Name>,
    /// When the processor settled the batch, RFC 3339 (CSV bodies only).
    #[param(value_type = Option<BoundedTime>, inline)]
    pub settled_at: Option<BoundedTime>,
    /// The batch's currency (CSV bodies only).
    #[param(value_type = Option<Currency>, inline)]
    pub currency: Option<String>,
}

/// Imports a processor's settlement batch, as JSON, or as `text/csv` with
/// the header `type,reference,gross,fee,net` (an optional last row of type
/// `total` gives the file's totals) and `processor`, `batch_id`,
/// `settled_at` and `currency` as query parameters. Amounts are signed as
/// the processor signs them (refunds and disputes negative gross); every
/// line must satisfy `gross - fee = net`, else the whole file is 400
/// naming the line. Each line is matched by its reference to the capture,
/// refund or dispute the ledger has under it, or opened as a break
/// (`unknown_reference`, `amount_mismatch`, `currency_mismatch`,
/// `duplicate`); one entry books the batch: the net to
/// `processor_balance:<processor>`, the fees to `processing_fees`, what
/// broke to `settlement_suspense`. A batch taking more from the balance
/// than it holds (refunds and disputes after a payout) owes the shortfall
/// to the processor (`processor_payable:<processor>`), and later batches
/// pay that down first.
#[utoipa::path(
    post,
    path = "/v1/settlements",
    tag = "settlements",
    request_body(content(
        (SettlementBody = "application/json"),
        (SettlementCsv = "text/csv"),
    )),
    params(
        SettlementQuery,
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Imported: lines matched, and the breaks", body = Accepted<SettlementAnswer>),
        (status = 400, description = "Invalid input, naming the line or field: `settlement_line_does_not_add_up` (a line whose `gross - fee` is not its `net`), `settlement_total_mismatch` (lines that do not add up to the stated total), `invalid_settlement_file` (a malformed CSV), `settlement_query_missing` (a CSV batch without its query parameters)", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 422, description = "`settlement_already_imported`: the processor's batch is imported already; `amount_overflow`: the lines add up past 64 bits; `asset_scale_mismatch`; `account_opened_otherwise`: an account the batch books to (`processor_payable:<processor>`) was opened through the journal, under rules before version 4, with another type or flags; or key reused", body = ErrorBody),
    )
)]
async fn import(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiQuery(query): ApiQuery<SettlementQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    // A JSON batch says everything in its body; the query is a CSV
    // batch's only.
    let (body, rows) = if file::is_csv(request.headers()) {
        let text = file::text(request, &state).await?;
        let (body, rows) = file::from_csv(&text, query)?;
        (body, Some(rows))
    } else {
        let body = ApiJson::<SettlementBody>::from_request(request, &state).await?;
        (body.0, None)
    };
    let asset = asset_of(&body.currency)?;
    let lines = file::checked(&body.lines, body.total.as_ref(), rows.as_deref())?;
    let entry_id = EntryId::from_uuid(derive_id(tenant_id, &key, "entry"));
    let asked = json!({"processor": &body.processor, "batch_id": &body.batch_id,
                       "settled_at": body.settled_at, "currency": &body.currency,
                       "lines": &body.lines, "total": &body.total});
    let processor = body.processor.to_string();
    submit(&state, tenant_id, key, asked, || async {
        Ok(ImportSettlement {
            processor: processor.clone(),
            batch_id: body.batch_id.to_string(),
            asset: asset.clone(),
            settled_at: body.settled_at.get(),
            payments: claimants(&state, tenant_id, &processor, &lines).await?,
            lines: lines.clone(),
            entry_id,
        })
    })
    .await
}

/// The payment each line's reference is claimed by, as the store has it
/// (`None`: unclaimed, or a line of the processor's own).
async fn claimants(
    state: &AppState,
    tenant_id: TenantId,
    processor: &str,
    lines: &[Line],
) -> Result<Vec<Option<aggregates::ids::PaymentId>>, ApiError> {
    let id_of = |line: &Line| {
        reference_kind(line.line_type).map(|kind| reference_id(kind, processor, &line.reference))
    };
    let ids: BTreeSet<String> = lines.iter().filter_map(id_of).collect();
    let ids: Vec<String> = ids.into_iter().collect();
    let claims = current::<ProcessorReference>(&state.store, tenant_id, &ids).await?;
    Ok(lines
        .iter()
        .map(|line| {
            let claim = claims.get(&id_of(line)?)?;
            claim.owner.as_ref().map(|owner| owner.payment_id)
        })
        .collect())
}

/// How a break is resolved.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// `write_off`: the difference to `settlement_write_offs`; `adjust`:
    /// to `revenue`, taking the processor's figure; `match`: the line
    /// settles the item its reference names after all (the item came to be
    /// after the batch was imported, or came to owe the line's amount, as
    /// a dispute won), to the receivable.
    pub resolution: Resolution,
    /// Why: required for `write_off` and `adjust` (since rules 7; 400
    /// without it), optional for `match`.
    #[serde(default)]
    pub reason: Option<Note>,
}

/// The body as the schema states it: one form per resolution, a
/// write-off or an adjustment naming its reason.
impl utoipa::PartialSchema for ResolveBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
        let form = |resolutions: &[&str], description: &str, reason_required: bool| {
            let object = ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(description))
                .property(
                    "resolution",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(resolutions.iter().copied())),
                )
                .required("resolution")
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            if reason_required {
                object.property("reason", Note::schema()).required("reason")
            } else {
                object.property("reason", super::note_schema())
            }
        };
        OneOfBuilder::new()
            .item(form(
                &["write_off", "adjust"],
                "`write_off`: the difference to `settlement_write_offs`; `adjust`: to `revenue`, \
                 taking the processor's figure. Either names its `reason`",
                true,
            ))
            .item(form(
                &["match"],
                "The line settles the item its reference names after all (the item came to be \
                 after the batch was imported, or came to owe the line's amount, as a dispute \
                 won), to the receivable",
                false,
            ))
            .into()
    }
}

impl ToSchema for ResolveBody {}

/// Resolves a break, once: what it left in `settlement_suspense` is
/// written off or adjusted.
#[utoipa::path(
    post,
    path = "/v1/breaks/{break_id}/resolve",
    tag = "settlements",
    request_body = ResolveBody,
    params(
        ("break_id" = Uuid, Path, description = "The break"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Resolved", body = Accepted<BreakResolvedAnswer>),
        (status = 400, description = "Invalid input, naming the field; `invalid_request` for a `write_off` or `adjust` without a `reason` (since rules 7; details: field, resolution)", body = ErrorBody),
        (status = 404, description = "No such break", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`break_already_resolved`; `break_not_matched` (a match whose line's reference names nothing, or an item expecting another amount, or settled already; details: expected, actual); `break_matchable` (a write-off or adjustment of a break whose line the item it names now expects exactly: match it instead; details: expected); `break_awaits_dispute` (since rules 7: a write-off or adjustment of a dispute reversal's break while its dispute is open: once won, the line matches; details: dispute_id); or key reused", body = ErrorBody),
    )
)]
async fn resolve_break(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(break_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Response, ApiError> {
    if body.resolution != Resolution::Match
        && body.reason.is_none()
        && state.bus.rules().since(aggregates::rules::Rules::SEVENTH)
        && state.unanswered(tenant_id, &key).await?
    {
        return Err(ApiError::BadRequest {
            code: "invalid_request",
            message: "reason: a write-off or an adjustment names its reason".into(),
            details: json!({"field": "reason", "resolution": body.resolution}),
        });
    }
    let entry_id = EntryId::from_uuid(derive_id(tenant_id, &key, "entry"));
    let asked = json!({"break_id": break_id, "body": &body});
    submit(&state, tenant_id, key, asked, || async {
        let settlement = batch_of(&state, tenant_id, break_id).await?;
        let (Some(processor), Some(asset)) =
            (settlement.processor.clone(), settlement.asset.clone())
        else {
            return Err(ApiError::NotFound(format!("no break {break_id}")));
        };
        // The claim of the line's reference: what a match settles, and what
        // a write-off or an adjustment is checked not to leave unsettled.
        let claim = claim_of(&state, tenant_id, &settlement, break_id).await?;
        Ok(ResolveBreak {
            processor,
            batch_id: settlement.batch_id,
            break_id,
            resolution: body.resolution,
            reason: body.reason.as_ref().map(Text::to_string),
            asset,
            entry_id,
            claim,
        })
    })
    .await
}

/// The batch holding break `break_id`.
async fn batch_of(
    state: &AppState,
    tenant_id: TenantId,
    break_id: Uuid,
) -> Result<Settlement, ApiError> {
    let batch = (BREAK_ENTITY, break_id.to_string());
    let id = indexed_holder(state, tenant_id, (batch.0, &batch.1), SETTLEMENT_AGGREGATE).await?;
    Ok(current_one(&state.store, tenant_id, &id).await?)
}

/// The claim of the reference break `break_id`'s line names, and the
/// payment holding it (`None` while unclaimed), as the store has it.
async fn claim_of(
    state: &AppState,
    tenant_id: TenantId,
    settlement: &Settlement,
    break_id: Uuid,
) -> Result<Option<(String, Option<aggregates::ids::PaymentId>)>, ApiError> {
    let (Some(processor), Some(settled)) = (&settlement.processor, settlement.find_break(break_id))
    else {
        return Ok(None);
    };
    let Some(kind) = reference_kind(settled.line.line_type) else {
        return Ok(None);
    };
    let claim = reference_id(kind, processor, &settled.line.reference);
    let claims =
        current::<ProcessorReference>(&state.store, tenant_id, std::slice::from_ref(&claim))
            .await?;
    let payment_id = claims
        .get(&claim)
        .and_then(|reference| reference.owner.as_ref())
        .map(|owner| owner.payment_id);
    Ok(Some((claim, payment_id)))
}

/// 1 to 100 batch ids, each once.
fn batch_ids_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::PartialSchema;
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(Name::schema())
        .min_items(Some(1))
        .max_items(Some(100))
        .unique_items(true)
        .into()
}

/// A payout of settled batches to the bank.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutBody {
    pub processor: Name,
    #[schema(value_type = Currency)]
    pub currency: String,
    /// Exactly the net of the batches it pays out.
    pub amount: PositiveAmount,
    /// The bank account it lands in (`bank:<bank_account>`).
    pub bank_account: Name,
    /// The batch ids it pays out, each once (1 to 100).
    #[schema(schema_with = batch_ids_schema)]
    pub settlements: Vec<Name>,
}

/// Pays out settled batches of a processor: Dr `bank:<bank_account>` / Cr
/// `processor_balance:<processor>`, for exactly their net; each batch is
/// paid out once. Pending until marked paid or failed. The payout's id is
/// derived from the Idempotency-Key.
#[utoipa::path(
    post,
    path = "/v1/payouts",
    tag = "settlements",
    request_body = PayoutBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)")),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created, `pending`", body = Accepted<PayoutAnswer>),
        (status = 400, description = "Invalid input, naming the field (a batch named twice)", body = ErrorBody),
        (status = 404, description = "`unknown_settlement`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`payout_amount_mismatch`: not the batches' net; `settlement_already_paid_out`; `payout_batch_mismatch`: a batch of another currency; `credits_exceed_debits`: more than the processor's balance holds (a batch whose net paid down a shortfall an earlier batch left owed is paid out together with that batch); `bank_account_reserved`: `payroll` (what pay runs pay from); or key reused", body = ErrorBody),
    )
)]
async fn create_payout(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<PayoutBody>,
) -> Result<Response, ApiError> {
    if body.settlements.is_empty() || body.settlements.len() > 100 {
        return Err(ApiError::bad_request("settlements: 1 to 100 batch ids"));
    }
    // A check added after keys were answered without it: a retry of such a
    // key gets its recorded answer (the domain's refusal).
    let distinct: std::collections::BTreeSet<&Name> = body.settlements.iter().collect();
    if distinct.len() != body.settlements.len() && state.unanswered(tenant_id, &key).await? {
        return Err(ApiError::bad_request("settlements: each batch id once"));
    }
    let payout_id = derive_id(tenant_id, &key, "payout");
    let processor = body.processor.to_string();
    let request = CreatePayout {
        payout_id,
        terms: PayoutTerms {
            asset: asset_of(&body.currency)?,
            amount: body.amount.0,
            bank_account: body.bank_account.to_string(),
            batches: body
                .settlements
                .iter()
                .map(|batch| settlement_id(&processor, batch.as_str()))
                .collect(),
            processor,
        },
        // A payout's entry has the payout's id: a failure finds it there.
        entry_id: EntryId::from_uuid(payout_id),
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// Marks a pending payout paid: it reached the bank.
#[utoipa::path(
    post,
    path = "/v1/payouts/{payout_id}/paid",
    tag = "settlements",
    request_body = EmptyBody,
    params(
        ("payout_id" = Uuid, Path, description = "The payout"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Paid", body = Accepted<PayoutAnswer>),
        (status = 400, description = "Invalid id or body (no fields)", body = ErrorBody),
        (status = 404, description = "`unknown_payout`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`payout_not_pending`; or key reused", body = ErrorBody),
    )
)]
async fn payout_paid(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(payout_id): ApiPath<Uuid>,
    ApiJson(_): ApiJson<EmptyBody>,
) -> Result<Response, ApiError> {
    Ok(outcome_response(
        state
            .bus
            .execute(tenant_id, key, MarkPayoutPaid { payout_id })
            .await?,
    ))
}

/// Marks a pending payout failed, or a paid one returned by the bank
/// (since version 10 of the rules): its entry is reversed (the money is
/// back at the processor) and its batches may be paid out again. Since
/// version 4 of the rules, what the tenant owes the processor
/// (`processor_payable:<processor>`, a batch's shortfall) is paid down at
/// once from the money back, as far as it goes (an entry of its own, id
/// derived from the key); the batches are then paid out together with the
/// batch that left the shortfall, as the balance no longer covers them
/// alone (`credits_exceed_debits`).
#[utoipa::path(
    post,
    path = "/v1/payouts/{payout_id}/failed",
    tag = "settlements",
    request_body = super::refunds::FailureBody,
    params(
        ("payout_id" = Uuid, Path, description = "The payout"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Failed; its entry reversed", body = Accepted<PayoutAnswer>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 404, description = "No such payout", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`payout_not_pending` (failed already; paid, under rules before 10); or key reused", body = ErrorBody),
    )
)]
async fn payout_failed(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(payout_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<super::refunds::FailureBody>,
) -> Result<Response, ApiError> {
    let reversal_id = EntryId::from_uuid(derive_id(tenant_id, &key, "reversal"));
    let netting_id = EntryId::from_uuid(derive_id(tenant_id, &key, "netting"));
    let asked = json!({"payout_id": payout_id, "body": &body});
    submit(&state, tenant_id, key, asked, || async {
        let payout: Payout = current_one(&state.store, tenant_id, &payout_id.to_string()).await?;
        let terms = payout
            .terms
            .ok_or_else(|| ApiError::NotFound(format!("no payout {payout_id}")))?;
        Ok(MarkPayoutFailed {
            payout_id,
            reason: body.reason.as_ref().map(Text::to_string),
            batches: terms.batches,
            entry_id: EntryId::from_uuid(payout_id),
            reversal_id,
            processor: terms.processor,
            bank_account: terms.bank_account,
            asset: terms.asset,
            // A field the fourth rules brought: left out under older
            // ones, so that an older build reads the request back.
            netting_id: state
                .bus
                .rules()
                .since(aggregates::rules::Rules::FOURTH)
                .then_some(netting_id),
        })
    })
    .await
}
