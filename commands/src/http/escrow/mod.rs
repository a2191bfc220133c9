//! The escrow routes: commitments, deposits, milestones (submit, accept,
//! release, reject), claims, cancel (here) and the reads (`reads`).
//!
//! A commitment's parties and currency never change: each route reads them
//! from the event store (not a read table that may lag) and resolves them
//! into its request.

mod reads;

use super::error::{outcome_response, ApiError, ErrorBody};
use super::extract::{
    whole_number, ApiJson, ApiPath, IdempotencyKeyHeader, PositiveAmount, Tenant,
};
use super::payments::{asset_of, note_schema, EmptyBody, Note};
use super::schema::Accepted;
use super::AppState;
use crate::pipeline::derive_id;
use crate::pipeline::load::current_one;
use crate::requests::escrow::{
    CancelCommitment, ClaimMilestone, CreateCommitment, DepositFunds, EscrowAnswer, Parties,
    ReleaseMilestone, ResolveClaim, SubmitMilestone, CLAIM_ENTITY,
};
use aggregates::escrow::{
    Allocation, ClaimOutcome, Commitment, CommitmentTerms, Direction, MilestoneTerms,
    COMMITMENT_AGGREGATE, INSPECTION_SECONDS_MAX,
};
use aggregates::ids::{ClaimId, CommitmentId, DepositId, TransferId};
use aggregates::schema::Currency;
use aggregates::text::{Name, Text};
use aggregates::time::BoundedTime;
use aggregates::TenantId;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(deposit))
        .routes(routes!(submit))
        .routes(routes!(accept))
        .routes(routes!(release))
        .routes(routes!(reject))
        .routes(routes!(claim))
        .routes(routes!(resolve))
        .routes(routes!(cancel))
        .merge(reads::router())
}

/// The OpenAPI tags of the escrow routes.
pub fn tags() -> Vec<(&'static str, &'static str)> {
    vec![(
        "escrow",
        "Secured settlements: commitments, deposits, milestones, releases with lineage, claims",
    )]
}

/// The parties of commitment `commitment_id`, from the store; 404 when the
/// tenant has none.
async fn parties(
    state: &AppState,
    tenant_id: TenantId,
    commitment_id: CommitmentId,
) -> Result<Parties, ApiError> {
    let commitment: Commitment =
        current_one(&state.store, tenant_id, &commitment_id.to_string()).await?;
    commitment
        .terms
        .as_ref()
        .map(Parties::of)
        .ok_or_else(|| ApiError::NotFound(format!("no commitment {commitment_id}")))
}

/// An inspection window's length in a body: whole seconds, 0 to 90 days.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct InspectionSeconds(pub i64);

impl<'de> Deserialize<'de> for InspectionSeconds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = whole_number(deserializer)?;
        if !(0..=INSPECTION_SECONDS_MAX).contains(&value) {
            return Err(serde::de::Error::custom(format!(
                "invalid value: {value}, expected 0 to {INSPECTION_SECONDS_MAX} seconds"
            )));
        }
        Ok(Self(value))
    }
}

impl utoipa::PartialSchema for InspectionSeconds {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        aggregates::schema::integer(0)
            .maximum(Some(INSPECTION_SECONDS_MAX))
            .description(Some("Whole seconds, 0 to 90 days"))
            .into()
    }
}

impl ToSchema for InspectionSeconds {}

/// A milestone as agreed.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MilestoneBody {
    pub milestone_id: Name,
    pub amount: PositiveAmount,
    /// When the payee is due to submit, on or before the commitment's
    /// `expires_at` (422 `invalid_terms` otherwise). The agreed date, shown
    /// beside each window's `submitted_at`; it moves no money by itself.
    #[serde(default)]
    #[schema(value_type = Option<BoundedTime>)]
    pub due_at: Option<BoundedTime>,
    /// How long the payer has to answer a submission; default 0.
    #[serde(default)]
    pub inspection_seconds: Option<InspectionSeconds>,
    /// What happens when the window ends unanswered; default `release`.
    #[serde(default)]
    pub on_timeout: Option<Direction>,
}

/// A commitment.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitmentBody {
    pub payer: Name,
    pub payee: Name,
    #[schema(value_type = Currency)]
    pub currency: String,
    /// The order deposits are drawn in; default `fifo`.
    #[serde(default)]
    pub allocation: Allocation,
    /// 1 to 50, their amounts the commitment's total.
    #[schema(min_items = 1, max_items = 50)]
    pub milestones: Vec<MilestoneBody>,
    #[serde(default)]
    #[schema(value_type = Option<BoundedTime>)]
    pub expires_at: Option<BoundedTime>,
}

const KEY: &str = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)";

/// Creates a commitment between a payer and a payee: its milestones' amounts
/// make its total. Its id is derived from the Idempotency-Key.
#[utoipa::path(
    post,
    path = "/v1/commitments",
    tag = "escrow",
    request_body = CommitmentBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY)),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created, `awaiting_funding`", body = Accepted<EscrowAnswer>),
        (status = 400, description = "Invalid input, naming the field (an inspection window past 90 days among them)", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`invalid_terms` (no milestone or more than 50, milestone ids repeated, a milestone due after the commitment expires, and since rules 5 an `expires_at` not after now); `asset_scale_mismatch`; `amount_overflow`; or key reused", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<CommitmentBody>,
) -> Result<Response, ApiError> {
    let terms = CommitmentTerms {
        payer: body.payer.into_string(),
        payee: body.payee.into_string(),
        asset: asset_of(&body.currency)?,
        allocation: body.allocation,
        milestones: body
            .milestones
            .into_iter()
            .map(|milestone| MilestoneTerms {
                milestone_id: milestone.milestone_id.into_string(),
                amount: milestone.amount.0,
                due_at: milestone.due_at.map(BoundedTime::get),
                inspection_seconds: milestone.inspection_seconds.unwrap_or_default().0,
                on_timeout: milestone.on_timeout.unwrap_or(Direction::Release),
            })
            .collect(),
        expires_at: body.expires_at.map(BoundedTime::get),
    };
    let request = CreateCommitment {
        commitment_id: CommitmentId::from_uuid(derive_id(tenant_id, &key, "commitment")),
        terms,
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// A deposit.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepositBody {
    pub amount: PositiveAmount,
    /// The payer's reference for it (`wire-1`).
    #[serde(default)]
    pub reference: Option<Name>,
}

/// Deposits into a commitment: Dr `escrow_cash` / Cr
/// `escrow_held:<commitment>`, a lot its transfers draw from in the
/// commitment's order; `funded` once deposits reach the total. Its id is
/// derived from the Idempotency-Key.
#[utoipa::path(
    post,
    path = "/v1/commitments/{commitment_id}/deposits",
    tag = "escrow",
    request_body = DepositBody,
    params(
        ("commitment_id" = inline(CommitmentId), Path, description = "The commitment"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Deposited", body = Accepted<EscrowAnswer>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 404, description = "No such commitment", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`overfunded` (details: total, funded); `inspection_window_ended` (details: ends_at; a window of the commitment has ended and its timeout has not run yet: it decides first); `commitment_canceled`; `commitment_expired`; `too_many`; or key reused", body = ErrorBody),
    )
)]
async fn deposit(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(commitment_id): ApiPath<CommitmentId>,
    ApiJson(body): ApiJson<DepositBody>,
) -> Result<Response, ApiError> {
    let request = DepositFunds {
        commitment_id,
        deposit_id: DepositId::from_uuid(derive_id(tenant_id, &key, "deposit")),
        amount: body.amount.0,
        reference: body.reference.map(Name::into_string),
        parties: parties(&state, tenant_id, commitment_id).await?,
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// Submits a milestone: its inspection window opens (the scheduler applies
/// its `on_timeout` outcome when it ends unanswered).
#[utoipa::path(
    post,
    path = "/v1/commitments/{commitment_id}/milestones/{milestone_id}/submit",
    tag = "escrow",
    request_body = EmptyBody,
    params(
        ("commitment_id" = inline(CommitmentId), Path, description = "The commitment"),
        ("milestone_id" = inline(Name), Path, description = "The milestone"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Submitted", body = Accepted<EscrowAnswer>),
        (status = 400, description = "Invalid id or body", body = ErrorBody),
        (status = 404, description = "No such commitment, or `unknown_milestone`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`inspection_window_open` (details: ends_at); `inspection_window_ended` (details: ends_at; the milestone's window has ended and its timeout has not run yet: it decides first); `inspection_window_past_expiry` (details: ends_at, expires_at; the window would end at or after the commitment's expiry, which would refund the milestone before its timeout; since rules 6); `milestone_already_released`; `milestone_frozen` (details: milestone_id, frozen); `commitment_canceled`; `commitment_expired`; or key reused", body = ErrorBody),
    )
)]
async fn submit(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath((commitment_id, milestone_id)): ApiPath<(CommitmentId, Name)>,
    ApiJson(_): ApiJson<EmptyBody>,
) -> Result<Response, ApiError> {
    let request = SubmitMilestone {
        commitment_id,
        milestone_id: milestone_id.into_string(),
        parties: parties(&state, tenant_id, commitment_id).await?,
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// Part of a milestone, or all of it.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    /// Default: all that is open of it and held.
    #[serde(default)]
    pub amount: Option<PositiveAmount>,
}

/// An amount of a milestone.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    pub amount: PositiveAmount,
}

async fn release_milestone(
    state: AppState,
    tenant_id: TenantId,
    key: eventstore::IdempotencyKey,
    (commitment_id, milestone_id): (CommitmentId, Name),
    amount: Option<PositiveAmount>,
    accepted: bool,
) -> Result<Response, ApiError> {
    let request = ReleaseMilestone {
        commitment_id,
        milestone_id: milestone_id.into_string(),
        transfer_id: TransferId::from_uuid(derive_id(tenant_id, &key, "release")),
        amount: amount.map(|amount| amount.0),
        accepted,
        parties: parties(&state, tenant_id, commitment_id).await?,
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// Accepts a milestone (answering its inspection window): releases it, or
/// `amount` of it, to the payee with its lineage. Since rules 8 the window
/// closes once nothing of the milestone is left open: the rest of a partial
/// acceptance stays under the window (to answer, or to its timeout).
#[utoipa::path(
    post,
    path = "/v1/commitments/{commitment_id}/milestones/{milestone_id}/accept",
    tag = "escrow",
    request_body = AcceptBody,
    params(
        ("commitment_id" = inline(CommitmentId), Path, description = "The commitment"),
        ("milestone_id" = inline(Name), Path, description = "The milestone"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Accepted: the release and its lineage", body = Accepted<EscrowAnswer>),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such commitment, or `unknown_milestone`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`no_inspection_window` (the milestone awaits no answer: nothing submitted, or its window closed; since rules 8); `milestone_already_released`; `milestone_frozen` (details: milestone_id, frozen; what is left of it is frozen by an open claim); `release_exceeds_milestone`; `insufficient_unfrozen_funds` (details: unfrozen, asked; nothing held for it); `inspection_window_ended` (details: ends_at; this or another window of the commitment has ended: its timeout decides); `commitment_canceled`; `commitment_expired`; `too_many`; or key reused", body = ErrorBody),
    )
)]
async fn accept(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(path): ApiPath<(CommitmentId, Name)>,
    ApiJson(body): ApiJson<AcceptBody>,
) -> Result<Response, ApiError> {
    release_milestone(state, tenant_id, key, path, body.amount, true).await
}

/// Releases `amount` of a milestone to the payee: Dr
/// `escrow_held:<commitment>` / Cr `payee_payable:<payee>`, drawn from the
/// deposits in the commitment's order (its lineage in the answer). Its id
/// is derived from the Idempotency-Key.
#[utoipa::path(
    post,
    path = "/v1/commitments/{commitment_id}/milestones/{milestone_id}/release",
    tag = "escrow",
    request_body = ReleaseBody,
    params(
        ("commitment_id" = inline(CommitmentId), Path, description = "The commitment"),
        ("milestone_id" = inline(Name), Path, description = "The milestone"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Released: `transfers[0]` with its lineage", body = Accepted<EscrowAnswer>),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such commitment, or `unknown_milestone`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`milestone_already_released`; `milestone_frozen` (details: milestone_id, frozen; what is left of it is frozen by an open claim); `release_exceeds_milestone` (details: open, asked); `insufficient_unfrozen_funds` (details: unfrozen, asked); `inspection_window_ended` (details: ends_at; a window of the commitment has ended and its timeout has not run yet: it decides first); `commitment_canceled`; `commitment_expired`; `too_many`; or key reused", body = ErrorBody),
    )
)]
async fn release(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(path): ApiPath<(CommitmentId, Name)>,
    ApiJson(body): ApiJson<ReleaseBody>,
) -> Result<Response, ApiError> {
    release_milestone(state, tenant_id, key, path, Some(body.amount), false).await
}

/// A claim on part of a milestone.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    pub amount: PositiveAmount,
    #[serde(default)]
    #[schema(schema_with = note_schema)]
    pub reason: Option<Note>,
}

/// A claim on part of a milestone, naming it.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    pub milestone_id: Name,
    pub amount: PositiveAmount,
    #[serde(default)]
    #[schema(schema_with = note_schema)]
    pub reason: Option<Note>,
}

async fn open_claim(
    state: AppState,
    tenant_id: TenantId,
    key: eventstore::IdempotencyKey,
    (commitment_id, milestone_id): (CommitmentId, Name),
    (amount, reason): (PositiveAmount, Option<Note>),
    rejection: bool,
) -> Result<Response, ApiError> {
    let request = ClaimMilestone {
        commitment_id,
        claim_id: ClaimId::from_uuid(derive_id(tenant_id, &key, "claim")),
        milestone_id: milestone_id.into_string(),
        amount: amount.0,
        reason: reason.map(Text::into_string),
        rejection,
        parties: parties(&state, tenant_id, commitment_id).await?,
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// Rejects a milestone (answering its inspection window): `amount` of it
/// is frozen by a claim (a hold on the commitment's held funds) until the
/// claim resolves. The claim's id is derived from the Idempotency-Key.
/// Since rules 8 the window closes once nothing of the milestone is left
/// open: the rest of a partial rejection stays under the window.
#[utoipa::path(
    post,
    path = "/v1/commitments/{commitment_id}/milestones/{milestone_id}/reject",
    tag = "escrow",
    request_body = RejectBody,
    params(
        ("commitment_id" = inline(CommitmentId), Path, description = "The commitment"),
        ("milestone_id" = inline(Name), Path, description = "The milestone"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Rejected: `claim_id`", body = Accepted<EscrowAnswer>),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such commitment, or `unknown_milestone`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`no_inspection_window` (the milestone awaits no answer: nothing submitted, or its window closed; since rules 8); `milestone_already_released`; `milestone_frozen` (details: milestone_id, frozen; what is left of it is frozen by an open claim); `release_exceeds_milestone`; `insufficient_unfrozen_funds`; `inspection_window_ended` (details: ends_at; a window of the commitment has ended and its timeout has not run yet: it decides first); `commitment_canceled`; `commitment_expired`; `too_many`; or key reused", body = ErrorBody),
    )
)]
async fn reject(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(path): ApiPath<(CommitmentId, Name)>,
    ApiJson(body): ApiJson<RejectBody>,
) -> Result<Response, ApiError> {
    open_claim(
        state,
        tenant_id,
        key,
        path,
        (body.amount, body.reason),
        true,
    )
    .await
}

/// Opens a claim freezing `amount` of a milestone (a hold on the
/// commitment's held funds: frozen funds are neither released nor
/// refunded) until it resolves. Its id is derived from the Idempotency-Key.
#[utoipa::path(
    post,
    path = "/v1/commitments/{commitment_id}/claims",
    tag = "escrow",
    request_body = ClaimBody,
    params(
        ("commitment_id" = inline(CommitmentId), Path, description = "The commitment"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Opened: `claim_id`", body = Accepted<EscrowAnswer>),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such commitment, or `unknown_milestone`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`milestone_already_released`; `milestone_frozen` (details: milestone_id, frozen; what is left of it is frozen by an open claim); `release_exceeds_milestone`; `insufficient_unfrozen_funds`; `inspection_window_ended` (details: ends_at; a window of the commitment has ended and its timeout has not run yet: it decides first); `commitment_canceled`; `commitment_expired`; `too_many`; or key reused", body = ErrorBody),
    )
)]
async fn claim(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(commitment_id): ApiPath<CommitmentId>,
    ApiJson(body): ApiJson<ClaimBody>,
) -> Result<Response, ApiError> {
    let path = (commitment_id, body.milestone_id);
    open_claim(
        state,
        tenant_id,
        key,
        path,
        (body.amount, body.reason),
        false,
    )
    .await
}

/// How a claim resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeName {
    Release,
    Refund,
    Split,
}

/// Basis points of a split, 0 to 10000, read as a whole number.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Bps(pub u16);

impl<'de> Deserialize<'de> for Bps {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = whole_number(deserializer)?;
        u16::try_from(value)
            .ok()
            .filter(|bps| *bps <= 10_000)
            .map(Self)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("invalid value: {value}, expected 0 to 10000"))
            })
    }
}

impl utoipa::PartialSchema for Bps {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        aggregates::schema::integer(0)
            .maximum(Some(10_000))
            .description(Some("Basis points to the payee, 0 to 10000"))
            .into()
    }
}

impl ToSchema for Bps {}

/// A claim's resolution.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveClaimBody {
    pub outcome: OutcomeName,
    /// A split's share to the payee (the rest to the payer): exact minor
    /// units, the unit left over to the side with the larger remainder.
    #[serde(default)]
    pub payee_bps: Option<Bps>,
}

/// Resolves a claim, once: its frozen amount to the payee (`release`), back
/// to the payer (`refund`), or split by `payee_bps`; each side with its
/// lineage.
#[utoipa::path(
    post,
    path = "/v1/claims/{claim_id}/resolve",
    tag = "escrow",
    request_body = ResolveClaimBody,
    params(
        ("claim_id" = inline(ClaimId), Path, description = "The claim"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Resolved: the transfers of each side with their lineage", body = Accepted<EscrowAnswer>),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such claim", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`claim_already_resolved`; `split_needs_payee_bps`; `payee_bps_without_split` (a release or refund names no share); `id_taken`; or key reused", body = ErrorBody),
    )
)]
async fn resolve(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(claim_id): ApiPath<ClaimId>,
    ApiJson(body): ApiJson<ResolveClaimBody>,
) -> Result<Response, ApiError> {
    // A share named with a release or refund is refused (it would be
    // dropped from the request). Keys answered before this check get their
    // answers; a key answered for another body is refused as reused (the
    // request is fingerprinted by the body asked).
    if body.outcome != OutcomeName::Split
        && body.payee_bps.is_some()
        && state.unanswered(tenant_id, &key).await?
    {
        return Err(ApiError::Unprocessable {
            code: "payee_bps_without_split",
            message: "only a split names payee_bps".into(),
            details: serde_json::Value::Null,
        });
    }
    let outcome = match (body.outcome, body.payee_bps) {
        (OutcomeName::Release, _) => ClaimOutcome::Release,
        (OutcomeName::Refund, _) => ClaimOutcome::Refund,
        (OutcomeName::Split, Some(bps)) => ClaimOutcome::Split { payee_bps: bps.0 },
        (OutcomeName::Split, None) => {
            return Err(ApiError::Unprocessable {
                code: "split_needs_payee_bps",
                message: "a split names payee_bps, the payee's share".into(),
                details: serde_json::Value::Null,
            })
        }
    };
    let asked = serde_json::json!({"claim_id": claim_id, "body": &body});
    let resolved = async {
        let commitment_id = claim_holder(&state, tenant_id, claim_id).await?;
        Ok(ResolveClaim {
            commitment_id,
            claim_id,
            outcome,
            release_id: TransferId::from_uuid(derive_id(tenant_id, &key, "release")),
            refund_id: TransferId::from_uuid(derive_id(tenant_id, &key, "refund")),
            parties: parties(&state, tenant_id, commitment_id).await?,
        })
    }
    .await;
    crate::http::submit_resolved(&state, tenant_id, key, &asked, resolved).await
}

/// The commitment holding claim `claim_id`, from the store's index; 404
/// when the tenant has none.
pub(crate) async fn claim_holder(
    state: &AppState,
    tenant_id: TenantId,
    claim_id: ClaimId,
) -> Result<CommitmentId, ApiError> {
    let claim = claim_id.to_string();
    let holder = super::read::indexed_holder(
        state,
        tenant_id,
        (CLAIM_ENTITY, &claim),
        COMMITMENT_AGGREGATE,
    )
    .await?;
    holder
        .parse()
        .map_err(|_| ApiError::Internal(format!("claim {claim_id}: commitment {holder:?}")))
}

/// Cancels a commitment: every unreleased, unfrozen balance back to the
/// payer (Dr `escrow_held:<commitment>` / Cr `payer_refunds:<payer>`) with
/// its lineage; open claims still resolve.
#[utoipa::path(
    post,
    path = "/v1/commitments/{commitment_id}/cancel",
    tag = "escrow",
    request_body = EmptyBody,
    params(
        ("commitment_id" = inline(CommitmentId), Path, description = "The commitment"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Canceled: the refund and its lineage", body = Accepted<EscrowAnswer>),
        (status = 400, description = "Invalid id or body", body = ErrorBody),
        (status = 404, description = "No such commitment", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`inspection_window_ended` (details: ends_at; a window has ended and its timeout has not run yet: it decides first); `inspection_window_open` (details: ends_at; a submission awaits its answer or its timeout; since rules 5); `commitment_completed` (since rules 5); `commitment_canceled`; `commitment_expired`; or key reused", body = ErrorBody),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(commitment_id): ApiPath<CommitmentId>,
    ApiJson(_): ApiJson<EmptyBody>,
) -> Result<Response, ApiError> {
    let request = CancelCommitment {
        commitment_id,
        transfer_id: TransferId::from_uuid(derive_id(tenant_id, &key, "refund")),
        parties: parties(&state, tenant_id, commitment_id).await?,
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}
