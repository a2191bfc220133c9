//! The payments reads, from the `payments` read tables (with `min_seq`,
//! read-your-writes): payments, disputes, gift cards, settlement batches,
//! breaks and payouts. Another tenant's id is 404.

use super::views::{
    state as state_of, BatchSummary, DisputeView, PaymentView, PayoutView, SettlementView,
};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{ApiPath, ApiQuery, PageLimit, Seq, Tenant};
use crate::http::read::{indexed_holder, next_after, tenant_read, ReadQuery};
use crate::http::AppState;
use crate::requests::payments::DISPUTE_ENTITY;
use aggregates::ids::{DisputeId, PaymentId};
use aggregates::payments::gift_card::GiftCard;
use aggregates::payments::payout::Payout;
use aggregates::payments::{accounts, Payment, PaymentStatus, PAYMENT_AGGREGATE};
use aggregates::text::Name;
use aggregates::TenantId;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use projections::accounts::AccountAssetBalance;
use projections::payment_breaks::{self, BreakView};
use projections::payments::{self as documents, PaymentDocument};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_payments))
        .routes(routes!(get_payment))
        .routes(routes!(get_dispute))
        .routes(routes!(get_gift_card))
        .routes(routes!(get_settlement))
        .routes(routes!(list_breaks))
        .routes(routes!(get_payout))
}

/// Reads with the payments projection's tables, once they have applied
/// `min_seq`.
async fn read<T, F>(
    state: &AppState,
    tenant_id: TenantId,
    min_seq: Option<Seq>,
    read: F,
) -> Result<(T, i64), ApiError>
where
    T: Send + 'static,
    F: for<'c> FnOnce(
            &'c mut PgConnection,
        ) -> futures_core::future::BoxFuture<'c, Result<T, sqlx::Error>>
        + Send
        + 'static,
{
    tenant_read(state, tenant_id, documents::NAME, min_seq, read).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PaymentsQuery {
    /// Only payments where they stand so.
    #[param(inline)]
    pub status: Option<PaymentStatus>,
    /// Payments after this id (from `next_after`).
    pub after: Option<PaymentId>,
    /// Page size, 1-1000 (default 100).
    #[param(inline)]
    pub limit: Option<PageLimit>,
    /// Wait until the read tables have applied this tenant_seq.
    #[param(inline)]
    pub min_seq: Option<Seq>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentsPage {
    pub payments: Vec<PaymentView>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next_after: Option<PaymentId>,
    pub projection_seq: i64,
}

/// The tenant's payments, by id, paged; `status` filters.
#[utoipa::path(
    get,
    path = "/v1/payments",
    tag = "payments",
    params(PaymentsQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The payments", body = PaymentsPage),
        (status = 400, description = "Invalid query, naming the parameter", body = ErrorBody),
    )
)]
async fn list_payments(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(query): ApiQuery<PaymentsQuery>,
) -> Result<Json<PaymentsPage>, ApiError> {
    let limit = PageLimit::or_default(query.limit);
    let status = query.status.map(|status| serde_json::to_value(status).ok());
    let status: Option<String> = status
        .flatten()
        .and_then(|value| value.as_str().map(str::to_string));
    let after = query.after.map(|after| after.to_string());
    let (found, projection_seq) = read(&state, tenant_id, query.min_seq, move |connection| {
        Box::pin(async move {
            documents::list(
                connection,
                tenant_id,
                "payment",
                status.as_deref(),
                after.as_deref(),
                limit,
            )
            .await
        })
    })
    .await?;
    let payments = found
        .iter()
        .map(PaymentView::of)
        .collect::<Result<Vec<_>, _>>()?;
    let next_after = next_after(&payments, limit, |payment| payment.payment_id);
    Ok(Json(PaymentsPage {
        payments,
        next_after,
        projection_seq,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OnePayment {
    #[serde(flatten)]
    pub payment: PaymentView,
    pub projection_seq: i64,
}

/// The document of `kind` `id`, or 404 saying so.
async fn document(
    state: &AppState,
    tenant_id: TenantId,
    kind: &'static str,
    id: String,
    min_seq: Option<Seq>,
) -> Result<(PaymentDocument, i64), ApiError> {
    let wanted = id.clone();
    let (found, projection_seq) = read(state, tenant_id, min_seq, move |connection| {
        Box::pin(async move { documents::get(connection, tenant_id, kind, &wanted).await })
    })
    .await?;
    let found = found.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no {} {id} (or the read tables have not applied it: pass min_seq)",
            kind.replace('_', " ")
        ))
    })?;
    Ok((found, projection_seq))
}

/// A payment: its terms, status and amounts, and every tender (with its
/// captures), refund and dispute.
#[utoipa::path(
    get,
    path = "/v1/payments/{payment_id}",
    tag = "payments",
    params(("payment_id" = inline(PaymentId), Path, description = "The payment"), ReadQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The payment", body = OnePayment),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "No such payment", body = ErrorBody),
    )
)]
async fn get_payment(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiPath(payment_id): ApiPath<PaymentId>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<OnePayment>, ApiError> {
    let (found, projection_seq) = document(
        &state,
        tenant_id,
        "payment",
        payment_id.to_string(),
        query.min_seq,
    )
    .await?;
    Ok(Json(OnePayment {
        payment: PaymentView::of(&found)?,
        projection_seq,
    }))
}

/// A dispute, with the payment it belongs to.
#[utoipa::path(
    get,
    path = "/v1/disputes/{dispute_id}",
    tag = "payments",
    params(("dispute_id" = inline(DisputeId), Path, description = "The dispute"), ReadQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The dispute", body = DisputeView),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "No such dispute", body = ErrorBody),
    )
)]
async fn get_dispute(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiPath(dispute_id): ApiPath<DisputeId>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<DisputeView>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no dispute {dispute_id}"));
    let dispute = dispute_id.to_string();
    let holder = indexed_holder(
        &state,
        tenant_id,
        (DISPUTE_ENTITY, &dispute),
        PAYMENT_AGGREGATE,
    )
    .await?;
    let (found, projection_seq) =
        document(&state, tenant_id, "payment", holder, query.min_seq).await?;
    let payment: Payment = state_of(&found)?;
    let dispute = payment.dispute(dispute_id).cloned().ok_or_else(not_found)?;
    Ok(Json(DisputeView {
        payment_id: found
            .id
            .parse()
            .map_err(|_| ApiError::Internal(format!("payment id {:?}", found.id)))?,
        currency: payment
            .intent
            .map(|intent| intent.terms.asset.code().to_string())
            .unwrap_or_default(),
        dispute,
        projection_seq,
    }))
}

/// A gift card: its currency, what was loaded onto it, and its balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct GiftCardView {
    pub code: String,
    pub currency: String,
    pub asset: String,
    pub issued_at: Option<DateTime<Utc>>,
    /// Sold and loaded onto it, in total.
    pub loaded: i64,
    /// What it holds now (`gift_cards:<code>` available), a decimal
    /// string of minor units.
    pub balance: String,
    /// The journal account's balances, posted and pending.
    pub account: Option<AccountAssetBalance>,
    /// The lower of the two read tables' seqs (payments, accounts).
    pub projection_seq: i64,
}

/// A gift card and its balance.
#[utoipa::path(
    get,
    path = "/v1/gift-cards/{code}",
    tag = "gift cards",
    params(("code" = inline(Name), Path, description = "The gift card's code"), ReadQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The gift card", body = GiftCardView),
        (status = 400, description = "Invalid code or query", body = ErrorBody),
        (status = 404, description = "No such gift card", body = ErrorBody),
    )
)]
async fn get_gift_card(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiPath(code): ApiPath<Name>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<GiftCardView>, ApiError> {
    let (found, documents_seq) = document(
        &state,
        tenant_id,
        "gift_card",
        code.to_string(),
        query.min_seq,
    )
    .await?;
    let card: GiftCard = state_of(&found)?;
    let account = accounts::gift_card(code.as_str())
        .map_err(|error| ApiError::Internal(error.to_string()))?
        .code
        .to_string();
    let (view, accounts_seq) = tenant_read(
        &state,
        tenant_id,
        projections::accounts::NAME,
        query.min_seq,
        move |connection| {
            Box::pin(async move {
                projections::accounts::account(connection, tenant_id, &account).await
            })
        },
    )
    .await?;
    let asset = card.asset.clone();
    let balance = view.and_then(|view| {
        view.balances
            .into_iter()
            .find(|balance| Some(&balance.asset) == asset.as_ref().map(|a| a.to_string()).as_ref())
    });
    Ok(Json(GiftCardView {
        code: found.id.clone(),
        currency: asset
            .as_ref()
            .map(|a| a.code().to_string())
            .unwrap_or_default(),
        asset: asset.map(|a| a.to_string()).unwrap_or_default(),
        issued_at: card.issued_at,
        loaded: card.loaded.value(),
        balance: balance
            .as_ref()
            .map_or_else(|| "0".to_string(), |balance| balance.available.clone()),
        account: balance,
        projection_seq: documents_seq.min(accounts_seq),
    }))
}

/// A settlement batch's id in a path: `<processor>:<batch_id>`.
pub struct SettlementIdParam;

impl utoipa::PartialSchema for SettlementIdParam {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        aggregates::schema::text(
            129,
            r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        )
        .into()
    }
}

impl ToSchema for SettlementIdParam {}

#[derive(Debug, Serialize, ToSchema)]
pub struct OneSettlement {
    #[serde(flatten)]
    pub settlement: SettlementView,
    pub projection_seq: i64,
}

/// Documents of `kind` and the breaks of the settlements among them.
async fn with_breaks(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    kind: &'static str,
    ids: Vec<String>,
) -> Result<Vec<(PaymentDocument, Vec<BreakView>)>, sqlx::Error> {
    let found = documents::get_many(connection, tenant_id, kind, &ids).await?;
    let mut out = Vec::with_capacity(found.len());
    for document in found {
        let breaks = payment_breaks::of_settlement(connection, tenant_id, &document.id).await?;
        out.push((document, breaks));
    }
    Ok(out)
}

/// A settlement batch: every line and what it matched, its totals, and
/// its breaks with their resolutions.
#[utoipa::path(
    get,
    path = "/v1/settlements/{settlement_id}",
    tag = "settlements",
    params(("settlement_id" = inline(SettlementIdParam), Path, description = "The batch, `<processor>:<batch_id>`"), ReadQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The batch", body = OneSettlement),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "No such batch", body = ErrorBody),
    )
)]
async fn get_settlement(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiPath(settlement_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<OneSettlement>, ApiError> {
    let named = settlement_id
        .split_once(':')
        .is_some_and(|(processor, batch)| {
            Name::parse(processor).is_ok() && Name::parse(batch).is_ok()
        });
    if !named {
        return Err(ApiError::BadRequest {
            code: "invalid_path_parameter",
            message: format!(
                "settlement_id: {settlement_id:?} is not <processor>:<batch_id> (each 1-64 of A-Za-z0-9_.-)"
            ),
            details: serde_json::json!({"parameter": "settlement_id"}),
        });
    }
    let wanted = vec![settlement_id.clone()];
    let (mut found, projection_seq) = read(&state, tenant_id, query.min_seq, move |connection| {
        Box::pin(async move { with_breaks(connection, tenant_id, "settlement", wanted).await })
    })
    .await?;
    let (found, breaks) = found
        .pop()
        .ok_or_else(|| ApiError::NotFound(format!("no settlement {settlement_id}")))?;
    Ok(Json(OneSettlement {
        settlement: SettlementView::of(&found, breaks)?,
        projection_seq,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BreaksQuery {
    /// `open` or `resolved`; default both.
    #[param(inline)]
    pub status: Option<BreakStatus>,
    /// Breaks after this id (from `next_after`).
    pub after: Option<Uuid>,
    /// Page size, 1-1000 (default 100).
    #[param(inline)]
    pub limit: Option<PageLimit>,
    /// Wait until the read tables have applied this tenant_seq.
    #[param(inline)]
    pub min_seq: Option<Seq>,
}

/// Where a break stands.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakStatus {
    Open,
    Resolved,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BreaksPage {
    pub breaks: Vec<BreakView>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next_after: Option<Uuid>,
    pub projection_seq: i64,
}

/// The tenant's settlement breaks, by id, paged; `status=open` for those
/// still to resolve.
#[utoipa::path(
    get,
    path = "/v1/breaks",
    tag = "settlements",
    params(BreaksQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The breaks", body = BreaksPage),
        (status = 400, description = "Invalid query, naming the parameter", body = ErrorBody),
    )
)]
async fn list_breaks(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(query): ApiQuery<BreaksQuery>,
) -> Result<Json<BreaksPage>, ApiError> {
    let limit = PageLimit::or_default(query.limit);
    let status = query.status.map(|status| match status {
        BreakStatus::Open => "open",
        BreakStatus::Resolved => "resolved",
    });
    let after = query.after;
    let (breaks, projection_seq) = read(&state, tenant_id, query.min_seq, move |connection| {
        Box::pin(
            async move { payment_breaks::list(connection, tenant_id, status, after, limit).await },
        )
    })
    .await?;
    let next_after = next_after(&breaks, limit, |found| found.break_id);
    Ok(Json(BreaksPage {
        breaks,
        next_after,
        projection_seq,
    }))
}

/// A payout: what it pays, where it stands, and every batch it pays out,
/// in sum (each batch's lines and breaks are its own read).
#[utoipa::path(
    get,
    path = "/v1/payouts/{payout_id}",
    tag = "settlements",
    params(("payout_id" = Uuid, Path, description = "The payout"), ReadQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The payout", body = PayoutView),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "No such payout", body = ErrorBody),
    )
)]
async fn get_payout(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiPath(payout_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<PayoutView>, ApiError> {
    let id = payout_id.to_string();
    let ((payout, batches), projection_seq) =
        read(&state, tenant_id, query.min_seq, move |connection| {
            Box::pin(async move {
                let Some(payout) = documents::get(connection, tenant_id, "payout", &id).await?
                else {
                    return Ok((None, Vec::new()));
                };
                let terms: Option<Vec<String>> =
                    serde_json::from_value::<Payout>(payout.state.clone())
                        .ok()
                        .and_then(|payout| payout.terms)
                        .map(|terms| terms.batches);
                // Summed by the database: up to 100 batches of up to
                // 10,000 lines each.
                let batches =
                    documents::batch_sums(connection, tenant_id, &terms.unwrap_or_default())
                        .await?;
                Ok((Some(payout), batches))
            })
        })
        .await?;
    let payout = payout.ok_or_else(|| ApiError::NotFound(format!("no payout {payout_id}")))?;
    let batches = batches
        .into_iter()
        .map(BatchSummary::of)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(PayoutView::of(&payout, batches, projection_seq)?))
}
