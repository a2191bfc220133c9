//! `/v1/journal` commands: opening accounts, posting and reversing entries,
//! placing and resolving holds. (The journal's reads are in
//! [`super::journal`].)

use super::error::{outcome_response, ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, IdempotencyKeyHeader, PositiveAmount, Tenant};
use super::schema::Accepted;
use super::AppState;
use crate::pipeline::{derive_id, Refusal};
use crate::requests::journal::{
    reversible, AccountOpened, EntryAnswer, EntryLine, HoldAnswer, OpenAccount, PlaceHold,
    PostEntry, Resolve, ResolveHold, ReverseEntry, ENTRY_RECORDED_BY_DOMAIN,
};
use aggregates::journal::account::{AccountCode, AccountSpec};
use aggregates::journal::entry::{EntryEvent, ENTRY_AGGREGATE, ENTRY_REFERENCE_LENGTH_MAX};
use aggregates::journal::hold::{HoldEvent, PendingTransfer, HOLD_AGGREGATE};
use aggregates::journal::{AccountFlags, AccountType, Side};
use aggregates::money::Asset;
use aggregates::rules::Rules;
use aggregates::text::Text;
use aggregates::time::BoundedTime;
use aggregates::{EntryId, HoldId, TenantId};
use axum::extract::State;
use axum::response::Response;
use eventstore::{AggregateKey, IdempotencyKey};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(open_account))
        .routes(routes!(post_entry))
        .routes(routes!(reverse_entry))
        .routes(routes!(place_hold))
        .routes(routes!(post_hold))
        .routes(routes!(void_hold))
        .routes(routes!(expire_hold))
}

fn reference_schema() -> RefOr<Schema> {
    aggregates::schema::nullable(Text::<ENTRY_REFERENCE_LENGTH_MAX>::schema())
}

/// An account to open.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccountBody {
    pub code: AccountCode,
    #[serde(rename = "type")]
    pub account_type: AccountType,
    /// Both off when left out.
    #[serde(default)]
    #[schema(value_type = AccountFlags)]
    pub flags: FlagsObject,
}

/// An account's flags as a body gives them: an object only (a struct
/// would also read from an array).
#[derive(Debug, Default)]
pub struct FlagsObject(pub AccountFlags);

impl<'de> Deserialize<'de> for FlagsObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let object = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        serde_json::from_value(serde_json::Value::Object(object))
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// Opens an account with a type and flags fixed for its life
/// (`debits_must_not_exceed_credits`: no overdraft;
/// `credits_must_not_exceed_debits`: the mirror). Opening it again as the
/// same answers 200; as anything else, 422 `account_opened_otherwise`.
#[utoipa::path(
    post,
    path = "/v1/journal/accounts",
    tag = "journal",
    request_body = OpenAccountBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)")),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Opened", body = Accepted<AccountOpened>),
        (status = 200, description = "Open already, as the same", body = Accepted<AccountOpened>),
        (status = 422, description = "`account_opened_otherwise`: open already with another type or flags; `account_spec_reserved`: an account the ledger's domains post to (`revenue`, `refunds`, `cash`, `processing_fees`, `dispute_fees`, `dispute_losses`, `settlement_write_offs`, `bank:<name>`, `escrow_cash`, `payee_payable:<payee>`, `payer_refunds:<payer>`, `compensation_expense`) asked with another type or flags than the domain opens it with (details: code, type, flags); `account_code_reserved`: a code of the quota domain's own accounts, a commitment's held funds (`escrow_held:`), a payee's payable (`compensation_payable:`), or one payments own (`receivable:`, `processor_balance:`, `processor_payable:`, `gift_cards:`, `funds_in_dispute`, `settlement_suspense`); or key reused", body = ErrorBody),
    )
)]
async fn open_account(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<OpenAccountBody>,
) -> Result<Response, ApiError> {
    let request = OpenAccount {
        code: body.code,
        spec: AccountSpec {
            account_type: body.account_type,
            flags: body.flags.0,
        },
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// One line of an entry to post.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    pub account: AccountCode,
    pub asset: Asset,
    pub side: Side,
    pub amount: PositiveAmount,
}

/// An entry to post.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryBody {
    /// 2 to 1,000 lines; per asset, the debits equal the credits.
    #[schema(min_items = 2, max_items = 1000)]
    pub lines: Vec<LineBody>,
    /// When the entry takes effect; default now.
    #[serde(default)]
    #[schema(value_type = Option<BoundedTime>, inline)]
    pub effective_at: Option<BoundedTime>,
    /// An external reference: 1-200 characters, no control characters.
    #[serde(default)]
    #[schema(schema_with = reference_schema)]
    pub reference: Option<Text<ENTRY_REFERENCE_LENGTH_MAX>>,
}

/// Posts an entry to opened accounts, each keeping its flags against every
/// posting and pending hold of the tenant. The entry's id is derived from
/// the Idempotency-Key.
#[utoipa::path(
    post,
    path = "/v1/journal/entries",
    tag = "journal",
    request_body = EntryBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)")),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Posted", body = Accepted<EntryAnswer>),
        (status = 404, description = "`account_not_opened`", body = ErrorBody),
        (status = 422, description = "`unbalanced_entry` (details: asset, debits, credits); `debits_exceed_credits` or `credits_exceed_debits`: an account's flag (details: asset, available); `asset_scale_mismatch`: another scale than the code has in the tenant, or (since rules 7) a currency at another than its ISO 4217 minor unit (details: code, scale, asked); `amount_overflow`: the entry's lines in one asset add up past 64 bits (an account's totals are kept in 128); `account_code_reserved`: a commitment's held funds, a payee's payable or an account payments own; or key reused", body = ErrorBody),
    )
)]
async fn post_entry(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<EntryBody>,
) -> Result<Response, ApiError> {
    let request = PostEntry {
        entry_id: EntryId::from_uuid(derive_id(tenant_id, &key, "entry")),
        lines: body
            .lines
            .into_iter()
            .map(|line| EntryLine {
                account: line.account,
                asset: line.asset,
                side: line.side,
                amount: line.amount.0,
            })
            .collect(),
        effective_at: body.effective_at.map(BoundedTime::get),
        reference: body.reference.map(Text::into_string),
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// The first event of aggregate `aggregate_type` `aggregate_id`, decoded;
/// `None` when the tenant has no such aggregate.
async fn first_event<E: DeserializeOwned>(
    state: &AppState,
    tenant_id: TenantId,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Option<(E, Option<String>)>, ApiError> {
    let key = AggregateKey::new(aggregate_type, aggregate_id);
    let events = state.store.load_events_page(tenant_id, &key, 0, 1).await?;
    events
        .into_iter()
        .next()
        .map(|event| {
            let kind = event
                .metadata
                .get("command")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string);
            serde_json::from_value(event.payload)
                .map(|payload| (payload, kind))
                .map_err(|error| {
                    ApiError::Internal(format!("{aggregate_type} {aggregate_id}: {error}"))
                })
        })
        .transpose()
}

/// A reversal.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReverseBody {
    /// An external reference for the reversing entry.
    #[serde(default)]
    #[schema(schema_with = reference_schema)]
    pub reference: Option<Text<ENTRY_REFERENCE_LENGTH_MAX>>,
}

/// Reverses an entry, at most once: a new entry, its exact mirror, effective
/// now, naming the entry it reverses. The accounts' flags hold for it too.
#[utoipa::path(
    post,
    path = "/v1/journal/entries/{entry_id}/reverse",
    tag = "journal",
    request_body = ReverseBody,
    params(
        ("entry_id" = uuid::Uuid, Path, description = "The entry to reverse"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Reversed", body = Accepted<EntryAnswer>),
        (status = 404, description = "No such entry", body = ErrorBody),
        (status = 422, description = "`entry_already_reversed` (details.reversed_by); an account's flag; `entry_recorded_by_domain` (since rules 7): an entry a domain's request recorded (a cash tender's capture, a cash refund, any other domain's entry; details: entry_id, recorded_by, the request's kind), reversed by its own domain only (a failed refund, a failed payout); `account_code_reserved`: an entry of the journal's own on a commitment's held funds, a payee's payable or an account payments own (posted from a hold older rules let the journal place there); or key reused", body = ErrorBody),
    )
)]
async fn reverse_entry(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(entry_id): ApiPath<uuid::Uuid>,
    ApiJson(body): ApiJson<ReverseBody>,
) -> Result<Response, ApiError> {
    let entry_id = EntryId::from_uuid(entry_id);
    let recorded = match first_event(&state, tenant_id, ENTRY_AGGREGATE, &entry_id.to_string())
        .await?
    {
        Some((EntryEvent::EntryRecorded(recorded), kind)) => {
            // Whenever it was recorded: entries before rules 7 do not
            // name their request, their first event's metadata does.
            if state.bus.rules().since(Rules::SEVENTH) && state.unanswered(tenant_id, &key).await? {
                if let Err(Refusal::Rejected {
                    message, details, ..
                }) = reversible(entry_id, kind.as_deref())
                {
                    return Err(ApiError::Unprocessable {
                        code: ENTRY_RECORDED_BY_DOMAIN,
                        message,
                        details,
                    });
                }
            }
            recorded
        }
        _ => return Err(ApiError::NotFound(format!("no entry {entry_id}"))),
    };
    let request = ReverseEntry {
        entry_id,
        reversal_id: EntryId::from_uuid(derive_id(tenant_id, &key, "reversal")),
        lines: crate::requests::journal::lines_of(&recorded.entry),
        reference: body.reference.map(Text::into_string),
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// A hold to place.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    /// The account debited when the hold is posted.
    pub debit: AccountCode,
    /// The account credited when the hold is posted.
    pub credit: AccountCode,
    pub asset: Asset,
    pub amount: PositiveAmount,
    /// When it expires (then it can only be expired); default never.
    #[serde(default)]
    #[schema(value_type = Option<BoundedTime>, inline)]
    pub expires_at: Option<BoundedTime>,
}

/// Places a hold: the amount is reserved on both accounts (pending), and
/// counts against their flags at once, until the hold is posted, voided or
/// expires. The hold's id is derived from the Idempotency-Key.
#[utoipa::path(
    post,
    path = "/v1/journal/holds",
    tag = "journal",
    request_body = HoldBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)")),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Placed", body = Accepted<HoldAnswer>),
        (status = 404, description = "`account_not_opened`", body = ErrorBody),
        (status = 422, description = "`invalid_hold`: the same account on both sides; `invalid_hold_expiry`: not after now; an account's flag; `asset_scale_mismatch`: another scale than the code has in the tenant, or (since rules 7) a currency at another than its ISO 4217 minor unit (details: code, scale, asked); `amount_overflow`; `account_code_reserved`: a commitment's held funds, a payee's payable or an account payments own; or key reused", body = ErrorBody),
    )
)]
async fn place_hold(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<HoldBody>,
) -> Result<Response, ApiError> {
    let request = PlaceHold {
        hold_id: HoldId::from_uuid(derive_id(tenant_id, &key, "hold")),
        transfer: PendingTransfer {
            debit: body.debit,
            credit: body.credit,
            asset: body.asset,
            amount: body.amount.0,
        },
        expires_at: body.expires_at.map(BoundedTime::get),
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// Resolves hold `hold_id` as `resolve`, 404 when the tenant has none.
async fn resolve_hold(
    state: AppState,
    tenant_id: TenantId,
    key: IdempotencyKey,
    hold_id: uuid::Uuid,
    resolve: Resolve,
) -> Result<Response, ApiError> {
    let hold_id = HoldId::from_uuid(hold_id);
    let transfer =
        match first_event(&state, tenant_id, HOLD_AGGREGATE, &hold_id.to_string()).await? {
            Some((HoldEvent::HoldPlaced { transfer, .. }, _)) => transfer,
            _ => return Err(ApiError::NotFound(format!("no hold {hold_id}"))),
        };
    let request = ResolveHold {
        hold_id,
        transfer,
        resolve,
        due_at: None,
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// How much of a hold to post.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostHoldBody {
    /// At most what the hold reserves; default all of it. The rest is
    /// released.
    #[serde(default)]
    #[schema(value_type = Option<PositiveAmount>, inline)]
    pub amount: Option<PositiveAmount>,
}

/// Posts a hold, all or part (the rest released), once, before it expires:
/// a journal entry (its id derived from the Idempotency-Key).
#[utoipa::path(
    post,
    path = "/v1/journal/holds/{hold_id}/post",
    tag = "journal",
    request_body = PostHoldBody,
    params(
        ("hold_id" = uuid::Uuid, Path, description = "The hold"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Posted", body = Accepted<HoldAnswer>),
        (status = 404, description = "No such hold", body = ErrorBody),
        (status = 422, description = "`hold_already_posted`, `hold_already_voided`, `hold_expired` (details.expires_at), `post_exceeds_hold`; `account_code_reserved`: a hold placed under older rules on an account payments own (void it instead); or key reused", body = ErrorBody),
    )
)]
async fn post_hold(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(hold_id): ApiPath<uuid::Uuid>,
    ApiJson(body): ApiJson<PostHoldBody>,
) -> Result<Response, ApiError> {
    let resolve = Resolve::Post {
        amount: body.amount.map(|amount| amount.0),
        entry_id: EntryId::from_uuid(derive_id(tenant_id, &key, "entry")),
    };
    resolve_hold(state, tenant_id, key, hold_id, resolve).await
}

/// Voids a hold, once, before it expires: everything it reserved is
/// released.
#[utoipa::path(
    post,
    path = "/v1/journal/holds/{hold_id}/void",
    tag = "journal",
    params(
        ("hold_id" = uuid::Uuid, Path, description = "The hold"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Voided", body = Accepted<HoldAnswer>),
        (status = 404, description = "No such hold", body = ErrorBody),
        (status = 422, description = "`hold_already_posted`, `hold_already_voided`, `hold_expired`; or key reused", body = ErrorBody),
    )
)]
async fn void_hold(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(hold_id): ApiPath<uuid::Uuid>,
) -> Result<Response, ApiError> {
    resolve_hold(state, tenant_id, key, hold_id, Resolve::Void).await
}

/// Expires a hold once its expiry time has come: everything it reserved is
/// released.
#[utoipa::path(
    post,
    path = "/v1/journal/holds/{hold_id}/expire",
    tag = "journal",
    params(
        ("hold_id" = uuid::Uuid, Path, description = "The hold"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Expired", body = Accepted<HoldAnswer>),
        (status = 404, description = "No such hold", body = ErrorBody),
        (status = 422, description = "`hold_not_expired` (details.expires_at), `hold_never_expires`, `hold_already_posted`, `hold_already_voided`, `hold_expired`; or key reused", body = ErrorBody),
    )
)]
async fn expire_hold(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(hold_id): ApiPath<uuid::Uuid>,
) -> Result<Response, ApiError> {
    resolve_hold(state, tenant_id, key, hold_id, Resolve::Expire).await
}
