//! The payments routes: intents, tenders, captures and cancels (here),
//! refunds and disputes (`refunds`), gift cards, settlement imports, breaks
//! and payouts (`settlements`), and the reads (`reads`).
//!
//! Each route resolves what its request carries besides the client's body
//! (the payment's currency, its tenders' accounts, the payment a refund or
//! dispute belongs to) from the event store as it stands, never from a
//! read table that may lag, and submits it fingerprinted by what the client
//! asked: a retry under the same key gets the first answer. When the
//! payment moved between resolving and deciding, the request is resolved
//! again ([`submit`]).

mod gift_cards;
mod reads;
mod refunds;
mod settlement_file;
mod settlements;
pub(crate) mod views;

use super::error::{outcome_response, ApiError, ErrorBody};
use super::extract::{
    whole_number, ApiJson, ApiPath, IdempotencyKeyHeader, PositiveAmount, Tenant,
};
use super::schema::Accepted;
use super::AppState;
use crate::pipeline::load::current_one;
use crate::pipeline::{derive_id, PipelineError, Request};
use crate::requests::payments::{
    AddTender, CancelPayment, CaptureAnswer, CapturePayment, CreatePayment, PaymentAnswer,
    TenderAnswer,
};
use aggregates::ids::{CaptureId, PaymentId, TenderId};
use aggregates::money::Asset;
use aggregates::payments::AUTHORIZATION_TTL_SECONDS_MAX;
use aggregates::payments::{
    CaptureMode, IntentTerms, Payment, TenderMethod, TenderSource, PAYMENT_AGGREGATE,
};
use aggregates::schema::Currency;
use aggregates::text::{Name, Text};
use aggregates::TenantId;
use axum::extract::State;
use axum::response::Response;
use eventstore::IdempotencyKey;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::future::Future;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_payment))
        .routes(routes!(add_tender))
        .routes(routes!(capture))
        .routes(routes!(cancel))
        .merge(refunds::router())
        .merge(gift_cards::router())
        .merge(settlements::router())
        .merge(reads::router())
}

/// The OpenAPI tags of the payments routes.
pub fn tags() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "payments",
            "Payment intents, tenders, captures, refunds and disputes",
        ),
        (
            "gift cards",
            "Gift cards: issued, loaded, redeemed as tenders",
        ),
        (
            "settlements",
            "Processors' settlement batches, their breaks, and payouts to the bank",
        ),
    ]
}

/// A client's free text: 1-200 characters, no control characters.
pub(crate) type Note = Text<200>;

/// The schema of an optional [`Note`].
pub(crate) fn note_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::PartialSchema;
    aggregates::schema::nullable(Note::schema())
}

/// Times a request is resolved again when the payment moved between
/// resolving and deciding.
const STALE_RETRIES: u32 = 4;

/// The asset of `currency`, or 400 naming it.
pub(crate) fn asset_of(currency: &str) -> Result<Asset, ApiError> {
    aggregates::money::currency(currency).ok_or_else(|| ApiError::BadRequest {
        code: "invalid_currency",
        message: format!(
            "currency {currency:?} is not one of {}",
            aggregates::money::CURRENCIES
                .iter()
                .map(|(code, _)| *code)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        details: json!({ "currency": currency }),
    })
}

/// Submits the request `resolve` builds from the store as it stands,
/// fingerprinted by `asked` (what the client asked: the route's path
/// parameters and body); when what it was resolved with moved before it
/// was decided, resolves it again, a few times.
pub(crate) async fn submit<R, F, Fut>(
    state: &AppState,
    tenant_id: TenantId,
    key: IdempotencyKey,
    asked: Value,
    resolve: F,
) -> Result<Response, ApiError>
where
    R: Request,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<R, ApiError>>,
{
    let mut retries = 0;
    loop {
        let request = resolve().await?;
        let outcome = state
            .bus
            .execute_asked(tenant_id, key.clone(), &asked, request)
            .await;
        match outcome {
            Err(PipelineError::Stale(_)) if retries < STALE_RETRIES => retries += 1,
            outcome => return Ok(outcome_response(outcome?)),
        }
    }
}

/// The payment `payment_id` of the tenant as the store has it; 404 when
/// the tenant has none.
pub(crate) async fn payment(
    state: &AppState,
    tenant_id: TenantId,
    payment_id: PaymentId,
) -> Result<Payment, ApiError> {
    let payment: Payment = current_one(&state.store, tenant_id, &payment_id.to_string()).await?;
    if payment.intent.is_none() {
        return Err(ApiError::NotFound(format!("no payment {payment_id}")));
    }
    Ok(payment)
}

/// The payment holding `entity` `id` (a refund, a dispute), found through
/// the store's index; 404 when the tenant has none.
pub(crate) async fn holder(
    state: &AppState,
    tenant_id: TenantId,
    entity: &str,
    id: &str,
) -> Result<(PaymentId, Payment), ApiError> {
    let holder =
        super::read::indexed_holder(state, tenant_id, (entity, id), PAYMENT_AGGREGATE).await?;
    let payment_id: PaymentId = holder
        .parse()
        .map_err(|_| ApiError::Internal(format!("{entity} {id}: payment id {holder:?}")))?;
    Ok((payment_id, payment(state, tenant_id, payment_id).await?))
}

/// The payment's asset (a created payment has one).
pub(crate) fn asset(payment: &Payment) -> Result<Asset, ApiError> {
    payment
        .intent
        .as_ref()
        .map(|intent| intent.terms.asset.clone())
        .ok_or_else(|| ApiError::Internal("a payment without its intent".into()))
}

/// Who a payment is attributed to.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attribution {
    /// The payee credited with the sale (for commissions), created before
    /// the payment (since rules 8).
    pub payee: Name,
}

/// A payment intent.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentBody {
    /// What the payment is for, in minor units of the currency.
    pub amount: PositiveAmount,
    #[schema(value_type = Currency)]
    pub currency: String,
    /// `automatic` (default): each tender is captured as it is
    /// authorized; `manual`: by explicit captures.
    #[serde(default)]
    pub capture: CaptureMode,
    #[serde(default)]
    #[schema(value_type = Option<Name>)]
    pub customer: Option<Name>,
    #[serde(default)]
    #[schema(schema_with = note_schema)]
    pub description: Option<Note>,
    /// How long an authorization stays capturable: 1 second to 90 days;
    /// default 7 days.
    #[serde(default)]
    pub authorization_ttl_seconds: Option<TtlSeconds>,
    #[serde(default)]
    pub attribution: Option<Attribution>,
}

/// An authorization's lifetime in a body: whole seconds, 1 to 90 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TtlSeconds(pub i64);

impl<'de> Deserialize<'de> for TtlSeconds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = whole_number(deserializer)?;
        if !(1..=AUTHORIZATION_TTL_SECONDS_MAX).contains(&value) {
            return Err(serde::de::Error::custom(format!(
                "invalid value: {value}, expected 1 to {AUTHORIZATION_TTL_SECONDS_MAX} seconds"
            )));
        }
        Ok(Self(value))
    }
}

impl utoipa::PartialSchema for TtlSeconds {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        aggregates::schema::integer(1)
            .maximum(Some(AUTHORIZATION_TTL_SECONDS_MAX))
            .description(Some("Whole seconds, 1 to 90 days"))
            .into()
    }
}

impl ToSchema for TtlSeconds {}

/// Default lifetime of an authorization: 7 days.
const AUTHORIZATION_TTL_SECONDS_DEFAULT: i64 = 7 * 86_400;

/// Creates a payment intent, to be paid by tenders. Its id is derived
/// from the Idempotency-Key.
#[utoipa::path(
    post,
    path = "/v1/payments",
    tag = "payments",
    request_body = PaymentBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)")),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created, `requires_tender`", body = Accepted<PaymentAnswer>),
        (status = 400, description = "Invalid input, naming the field (`invalid_currency`)", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`asset_scale_mismatch`: the currency is used with another scale in the tenant; `unknown_payee` (details.payee_id; since rules 8): the payee it is attributed to is not created yet; or key reused", body = ErrorBody),
    )
)]
async fn create_payment(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<PaymentBody>,
) -> Result<Response, ApiError> {
    let ttl = body
        .authorization_ttl_seconds
        .map_or(AUTHORIZATION_TTL_SECONDS_DEFAULT, |seconds| seconds.0);
    let request = CreatePayment {
        payment_id: PaymentId::from_uuid(derive_id(tenant_id, &key, "payment")),
        terms: IntentTerms {
            amount: body.amount.0,
            asset: asset_of(&body.currency)?,
            capture: body.capture,
            customer: body.customer.map(Name::into_string),
            description: body.description.map(Text::into_string),
            authorization_ttl_seconds: ttl,
            payee: body
                .attribution
                .map(|attribution| attribution.payee.into_string()),
        },
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// A tender: part or all of a payment, by its method.
#[derive(Debug, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum TenderBody {
    /// A card through a processor, known there by `reference` (`ch_1`,
    /// unique per processor).
    Card {
        amount: PositiveAmount,
        processor: Name,
        reference: Name,
    },
    /// A bank transfer through a processor, as a card.
    BankTransfer {
        amount: PositiveAmount,
        processor: Name,
        reference: Name,
    },
    /// Cash, taken at once.
    Cash { amount: PositiveAmount },
    /// Drawn from the gift card of code `gift_card`, at once.
    GiftCard {
        amount: PositiveAmount,
        gift_card: Name,
    },
}

impl utoipa::PartialSchema for TenderBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
        let variant = |method: &str, description: &str, fields: &[&str]| {
            let mut object = ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(description))
                .property(
                    "method",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([method])),
                )
                .required("method")
                .property("amount", PositiveAmount::schema())
                .required("amount")
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            for field in fields {
                object = object.property(*field, Name::schema()).required(*field);
            }
            object
        };
        OneOfBuilder::new()
            .item(variant(
                "card",
                "A card through a processor, known there by `reference` (unique per processor)",
                &["processor", "reference"],
            ))
            .item(variant(
                "bank_transfer",
                "A bank transfer through a processor, as a card",
                &["processor", "reference"],
            ))
            .item(variant("cash", "Cash, taken at once", &[]))
            .item(variant(
                "gift_card",
                "Drawn from the gift card of code `gift_card`, at once",
                &["gift_card"],
            ))
            .into()
    }
}

impl ToSchema for TenderBody {}

/// A tender's fields as a body may give them, before its method says
/// which it needs (read flat: an amount is read from its text, which a
/// tagged enum's buffering cannot do).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenderFields {
    method: TenderMethod,
    amount: PositiveAmount,
    #[serde(default)]
    processor: Option<Name>,
    #[serde(default)]
    reference: Option<Name>,
    #[serde(default)]
    gift_card: Option<Name>,
}

impl<'de> Deserialize<'de> for TenderBody {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = TenderFields::deserialize(deserializer)?;
        let TenderFields {
            method,
            amount,
            processor,
            reference,
            gift_card,
        } = fields;
        let refused = |needs: &str| {
            serde::de::Error::custom(format!(
                "a {} tender takes {needs}",
                serde_json::to_value(method)
                    .ok()
                    .and_then(|method| method.as_str().map(str::to_string))
                    .unwrap_or_default()
            ))
        };
        match (method, processor, reference, gift_card) {
            (TenderMethod::Card, Some(processor), Some(reference), None) => Ok(Self::Card {
                amount,
                processor,
                reference,
            }),
            (TenderMethod::BankTransfer, Some(processor), Some(reference), None) => {
                Ok(Self::BankTransfer {
                    amount,
                    processor,
                    reference,
                })
            }
            (TenderMethod::Cash, None, None, None) => Ok(Self::Cash { amount }),
            (TenderMethod::GiftCard, None, None, Some(gift_card)) => {
                Ok(Self::GiftCard { amount, gift_card })
            }
            (TenderMethod::Card | TenderMethod::BankTransfer, ..) => {
                Err(refused("processor and reference, and no gift_card"))
            }
            (TenderMethod::Cash, ..) => Err(refused("no processor, reference or gift_card")),
            (TenderMethod::GiftCard, ..) => {
                Err(refused("gift_card, and no processor or reference"))
            }
        }
    }
}

impl TenderBody {
    /// The method, where the money comes from, and the amount.
    fn parts(&self) -> (TenderMethod, TenderSource, PositiveAmount) {
        let through = |processor: &Name, reference: &Name| TenderSource::Processor {
            processor: processor.to_string(),
            reference: reference.to_string(),
        };
        match self {
            Self::Card {
                amount,
                processor,
                reference,
            } => (TenderMethod::Card, through(processor, reference), *amount),
            Self::BankTransfer {
                amount,
                processor,
                reference,
            } => (
                TenderMethod::BankTransfer,
                through(processor, reference),
                *amount,
            ),
            Self::Cash { amount } => (TenderMethod::Cash, TenderSource::Cash, *amount),
            Self::GiftCard { amount, gift_card } => (
                TenderMethod::GiftCard,
                TenderSource::GiftCard {
                    code: gift_card.to_string(),
                },
                *amount,
            ),
        }
    }
}

/// Tenders part or all of a payment: a card or bank transfer is
/// authorized (reserved on `receivable:<processor>` until captured; an
/// automatic-capture payment captures it at once); cash and gift cards
/// are captured as they are taken. The tender's id is derived from the
/// Idempotency-Key.
#[utoipa::path(
    post,
    path = "/v1/payments/{payment_id}/tenders",
    tag = "payments",
    request_body = TenderBody,
    params(
        ("payment_id" = inline(PaymentId), Path, description = "The payment"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Tendered: `authorized`, or `captured`", body = Accepted<TenderAnswer>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 404, description = "No such payment, or `unknown_gift_card`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`tender_exceeds_amount` (details: amount, tendered), `payment_canceled`, `payment_expired`, `too_many_tenders`, `reference_taken` (the processor's reference names another charge), `gift_card_insufficient`, `gift_card_currency_mismatch`; or key reused", body = ErrorBody),
    )
)]
async fn add_tender(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(payment_id): ApiPath<PaymentId>,
    ApiJson(body): ApiJson<TenderBody>,
) -> Result<Response, ApiError> {
    let (method, source, amount) = body.parts();
    let tender_id = TenderId::from_uuid(derive_id(tenant_id, &key, "tender"));
    let asked = json!({"payment_id": payment_id, "body": &body});
    submit(&state, tenant_id, key, asked, || async {
        let payment = payment(&state, tenant_id, payment_id).await?;
        Ok(AddTender {
            payment_id,
            tender_id,
            method,
            source: source.clone(),
            amount: amount.0,
            asset: asset(&payment)?,
        })
    })
    .await
}

/// A capture of a tender's authorization.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureBody {
    pub tender_id: TenderId,
    pub amount: PositiveAmount,
    /// The processor's reference for the capture (`cap_1`), unique per
    /// processor; settlement lines name it. Default: for a tender through
    /// a processor captured for the first time, its charge's reference
    /// (the processor knows a single capture by it); else none.
    #[serde(default)]
    pub reference: Option<Name>,
    /// The last capture of the tender: what is left of the authorization
    /// is released. Default false.
    #[serde(default)]
    pub r#final: bool,
}

/// Captures part or all of a tender's authorization: Dr
/// `receivable:<processor>` / Cr `revenue`, settling the reservation and
/// keeping the rest reserved (a final capture releases it). At most 50
/// captures per tender. The capture's id is derived from the
/// Idempotency-Key.
#[utoipa::path(
    post,
    path = "/v1/payments/{payment_id}/captures",
    tag = "payments",
    request_body = CaptureBody,
    params(
        ("payment_id" = inline(PaymentId), Path, description = "The payment"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Captured", body = Accepted<CaptureAnswer>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 404, description = "No such payment, or `unknown_tender`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`capture_exceeds_authorized` (details: authorized, captured, asked), `authorization_expired`, `authorization_closed`, `authorization_voided`, `tender_not_capturable` (captured as it was taken), `too_many_captures`, `capture_reference_required` (a further capture of a processor's tender names its reference), `payment_canceled`, `reference_taken` (the reference names another capture, or another tender's charge); or key reused", body = ErrorBody),
    )
)]
async fn capture(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(payment_id): ApiPath<PaymentId>,
    ApiJson(body): ApiJson<CaptureBody>,
) -> Result<Response, ApiError> {
    let capture_id = CaptureId::from_uuid(derive_id(tenant_id, &key, "capture"));
    let asked = json!({"payment_id": payment_id, "body": &body});
    submit(&state, tenant_id, key, asked, || async {
        let payment = payment(&state, tenant_id, payment_id).await?;
        let tender = payment.tender(body.tender_id);
        let processor = tender
            .and_then(|tender| tender.source.processor())
            .unwrap_or_default()
            .to_string();
        // Without a reference of its own, a first capture is known by the
        // charge's: else its settlement line could never be matched.
        let charge = tender
            .filter(|tender| tender.captures.is_empty())
            .and_then(|tender| match &tender.source {
                TenderSource::Processor { reference, .. } => Some(reference.clone()),
                _ => None,
            });
        Ok(CapturePayment {
            payment_id,
            tender_id: body.tender_id,
            capture_id,
            amount: body.amount.0,
            reference: body.reference.as_ref().map(Name::to_string).or(charge),
            last: body.r#final,
            processor,
            asset: asset(&payment)?,
        })
    })
    .await
}

/// A cancellation (no fields).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

/// Cancels a payment before anything of it is captured: every open
/// authorization is voided and its reservation released.
#[utoipa::path(
    post,
    path = "/v1/payments/{payment_id}/cancel",
    tag = "payments",
    request_body = EmptyBody,
    params(
        ("payment_id" = inline(PaymentId), Path, description = "The payment"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Canceled", body = Accepted<PaymentAnswer>),
        (status = 400, description = "Invalid id or body (no fields)", body = ErrorBody),
        (status = 404, description = "No such payment", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`payment_captured`: something was captured (refund it instead), `payment_canceled`, `payment_expired`; or key reused", body = ErrorBody),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(payment_id): ApiPath<PaymentId>,
    ApiJson(body): ApiJson<EmptyBody>,
) -> Result<Response, ApiError> {
    let asked = json!({"payment_id": payment_id, "body": &body});
    submit(&state, tenant_id, key, asked, || async {
        let payment = payment(&state, tenant_id, payment_id).await?;
        let processors: BTreeSet<String> = payment
            .tenders
            .iter()
            .filter_map(|tender| tender.source.processor())
            .map(str::to_string)
            .collect();
        Ok(CancelPayment {
            payment_id,
            processors: processors.into_iter().collect(),
        })
    })
    .await
}
