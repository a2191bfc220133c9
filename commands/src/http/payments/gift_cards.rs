//! Gift cards: issued (sold) with a balance, loaded with more, redeemed
//! as tenders (`gift_card` method), never below zero.

use super::{asset_of, submit};
use crate::http::error::{outcome_response, ApiError, ErrorBody};
use crate::http::extract::{ApiJson, ApiPath, IdempotencyKeyHeader, PositiveAmount, Tenant};
use crate::http::schema::Accepted;
use crate::http::AppState;
use crate::pipeline::derive_id;
use crate::pipeline::load::current_one;
use crate::requests::payments::{GiftCardAnswer, IssueGiftCard, LoadGiftCard};
use aggregates::payments::gift_card::GiftCard;
use aggregates::schema::Currency;
use aggregates::text::Name;
use aggregates::EntryId;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(issue))
        .routes(routes!(load))
}

/// A gift card to issue.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    /// Its code, unique in the tenant (`GC-1`).
    pub code: Name,
    #[schema(value_type = Currency)]
    pub currency: String,
    /// Its first balance.
    pub amount: PositiveAmount,
}

/// Issues (sells) a gift card: Dr `cash` / Cr `gift_cards:<code>` (a
/// liability that never goes below zero).
#[utoipa::path(
    post,
    path = "/v1/gift-cards",
    tag = "gift cards",
    request_body = IssueBody,
    params(("Idempotency-Key" = inline(crate::http::extract::IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)")),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Issued", body = Accepted<GiftCardAnswer>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`gift_card_exists`; `asset_scale_mismatch`; or key reused", body = ErrorBody),
    )
)]
async fn issue(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<IssueBody>,
) -> Result<Response, ApiError> {
    let request = IssueGiftCard {
        code: body.code.into_string(),
        asset: asset_of(&body.currency)?,
        amount: body.amount.0,
        entry_id: EntryId::from_uuid(derive_id(tenant_id, &key, "entry")),
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// More for a gift card.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBody {
    pub amount: PositiveAmount,
}

/// Loads more onto a gift card, in its currency.
#[utoipa::path(
    post,
    path = "/v1/gift-cards/{code}/load",
    tag = "gift cards",
    request_body = LoadBody,
    params(
        ("code" = inline(Name), Path, description = "The gift card's code"),
        ("Idempotency-Key" = inline(crate::http::extract::IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Loaded; the new balance", body = Accepted<GiftCardAnswer>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 404, description = "No such gift card", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`amount_overflow`; or key reused", body = ErrorBody),
    )
)]
async fn load(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(code): ApiPath<Name>,
    ApiJson(body): ApiJson<LoadBody>,
) -> Result<Response, ApiError> {
    let entry_id = EntryId::from_uuid(derive_id(tenant_id, &key, "entry"));
    let asked = json!({"code": &code, "body": &body});
    submit(&state, tenant_id, key, asked, || async {
        let card: GiftCard = current_one(&state.store, tenant_id, code.as_str()).await?;
        let asset = card
            .asset
            .ok_or_else(|| ApiError::NotFound(format!("no gift card {code}")))?;
        Ok(LoadGiftCard {
            code: code.to_string(),
            asset,
            amount: body.amount.0,
            entry_id,
        })
    })
    .await
}
