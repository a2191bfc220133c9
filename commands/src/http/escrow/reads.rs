//! The escrow reads, from the `escrow` read table (with `min_seq`):
//! commitments (milestones with released, frozen and remaining amounts,
//! deposits with what is left of them, releases and refunds with lineage,
//! claims) and claims. Another tenant's id is 404.

use super::claim_holder;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{ApiPath, ApiQuery, PageLimit, Seq, Tenant};
use crate::http::payments::views::state;
use crate::http::read::{next_after, tenant_read, ReadQuery};
use crate::http::AppState;
use aggregates::escrow::{
    Allocation, Claim, Commitment, CommitmentStatus, Deposit, Direction, Milestone, Transfer,
};
use aggregates::ids::{ClaimId, CommitmentId};
use aggregates::money::{Amount, AmountError};
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use projections::documents::DocumentRow;
use projections::escrow as documents;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_commitments))
        .routes(routes!(get_commitment))
        .routes(routes!(get_claim))
}

/// A milestone and what is left of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MilestoneView {
    #[serde(flatten)]
    pub milestone: Milestone,
    /// Neither released, refunded nor frozen; nothing once the commitment
    /// is canceled or expired (its refund of what was left names no
    /// milestone).
    pub remaining: Amount,
}

/// A deposit and what is left of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DepositView {
    #[serde(flatten)]
    pub deposit: Deposit,
    pub remaining: Amount,
}

/// A commitment: its terms, where it stands, its money, and every
/// milestone, deposit, release, refund and claim.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommitmentView {
    pub commitment_id: CommitmentId,
    pub status: Option<CommitmentStatus>,
    pub payer: String,
    pub payee: String,
    pub currency: String,
    pub asset: String,
    pub allocation: Allocation,
    pub expires_at: Option<DateTime<Utc>>,
    pub total: Amount,
    /// Deposited.
    pub funded: Amount,
    /// Deposited less released and refunded.
    pub held: Amount,
    /// Frozen by open claims.
    pub frozen: Amount,
    pub released: Amount,
    pub refunded: Amount,
    pub created_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub expired_at: Option<DateTime<Utc>>,
    pub milestones: Vec<MilestoneView>,
    pub deposits: Vec<DepositView>,
    pub releases: Vec<Transfer>,
    pub refunds: Vec<Transfer>,
    pub claims: Vec<Claim>,
    pub created_seq: i64,
    pub last_tenant_seq: i64,
}

fn internal(error: AmountError) -> ApiError {
    ApiError::Internal(format!("a commitment's sums: {error}"))
}

impl CommitmentView {
    fn of(document: &DocumentRow) -> Result<Self, ApiError> {
        let commitment: Commitment = state(document)?;
        let terms = commitment.terms.clone().ok_or_else(|| {
            ApiError::Internal(format!("commitment {} has no terms", document.id))
        })?;
        let transfers = |direction| {
            commitment
                .transfers
                .iter()
                .filter(|transfer| transfer.direction == direction)
                .cloned()
                .collect()
        };
        Ok(Self {
            commitment_id: document
                .id
                .parse()
                .map_err(|_| ApiError::Internal(format!("commitment id {:?}", document.id)))?,
            status: commitment.status(),
            payer: terms.payer.clone(),
            payee: terms.payee.clone(),
            currency: terms.asset.code().to_string(),
            asset: terms.asset.to_string(),
            allocation: terms.allocation,
            expires_at: terms.expires_at,
            total: terms.total().map_err(internal)?,
            funded: commitment.funded().map_err(internal)?,
            held: commitment.held().map_err(internal)?,
            frozen: commitment.frozen().map_err(internal)?,
            released: commitment
                .transferred(Direction::Release)
                .map_err(internal)?,
            refunded: commitment
                .transferred(Direction::Refund)
                .map_err(internal)?,
            created_at: commitment.created_at,
            canceled_at: commitment.canceled_at,
            expired_at: commitment.expired_at,
            milestones: commitment
                .milestones
                .iter()
                .map(|milestone| {
                    let ended = commitment.canceled_at.is_some() || commitment.expired_at.is_some();
                    Ok(MilestoneView {
                        remaining: if ended {
                            Amount::ZERO
                        } else {
                            milestone.open().map_err(internal)?
                        },
                        milestone: milestone.clone(),
                    })
                })
                .collect::<Result<_, ApiError>>()?,
            deposits: commitment
                .deposits
                .iter()
                .map(|deposit| {
                    Ok(DepositView {
                        remaining: deposit.remaining().map_err(internal)?,
                        deposit: deposit.clone(),
                    })
                })
                .collect::<Result<_, ApiError>>()?,
            releases: transfers(Direction::Release),
            refunds: transfers(Direction::Refund),
            claims: commitment.claims.clone(),
            created_seq: document.created_seq,
            last_tenant_seq: document.last_tenant_seq,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CommitmentsQuery {
    /// Only commitments where they stand so.
    #[param(inline)]
    pub status: Option<CommitmentStatus>,
    /// Commitments after this id (from `next_after`).
    pub after: Option<CommitmentId>,
    /// Page size, 1-1000 (default 100).
    #[param(inline)]
    pub limit: Option<PageLimit>,
    /// Wait until the read table has applied this tenant_seq.
    #[param(inline)]
    pub min_seq: Option<Seq>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommitmentsPage {
    pub commitments: Vec<CommitmentView>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next_after: Option<CommitmentId>,
    pub projection_seq: i64,
}

/// The tenant's commitments, by id, paged; `status` filters.
#[utoipa::path(
    get,
    path = "/v1/commitments",
    tag = "escrow",
    params(CommitmentsQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The commitments", body = CommitmentsPage),
        (status = 400, description = "Invalid query, naming the parameter", body = ErrorBody),
    )
)]
async fn list_commitments(
    State(app): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiQuery(query): ApiQuery<CommitmentsQuery>,
) -> Result<Json<CommitmentsPage>, ApiError> {
    let limit = PageLimit::or_default(query.limit);
    let status = query
        .status
        .and_then(|status| serde_json::to_value(status).ok())
        .and_then(|status| status.as_str().map(str::to_string));
    let after = query.after.map(|after| after.to_string());
    let (found, projection_seq) = tenant_read(
        &app,
        tenant_id,
        documents::NAME,
        query.min_seq,
        move |connection| {
            Box::pin(async move {
                documents::list(
                    connection,
                    tenant_id,
                    status.as_deref(),
                    after.as_deref(),
                    limit,
                )
                .await
            })
        },
    )
    .await?;
    let commitments = found
        .iter()
        .map(CommitmentView::of)
        .collect::<Result<Vec<_>, _>>()?;
    let next_after = next_after(&commitments, limit, |commitment| commitment.commitment_id);
    Ok(Json(CommitmentsPage {
        commitments,
        next_after,
        projection_seq,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OneCommitment {
    #[serde(flatten)]
    pub commitment: CommitmentView,
    pub projection_seq: i64,
}

async fn commitment(
    app: &AppState,
    tenant_id: aggregates::TenantId,
    commitment_id: CommitmentId,
    min_seq: Option<Seq>,
) -> Result<(CommitmentView, i64), ApiError> {
    let id = commitment_id.to_string();
    let (found, projection_seq) = tenant_read(
        app,
        tenant_id,
        documents::NAME,
        min_seq,
        move |connection| Box::pin(async move { documents::get(connection, tenant_id, &id).await }),
    )
    .await?;
    let found = found.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no commitment {commitment_id} (or the read table has not applied it: pass min_seq)"
        ))
    })?;
    Ok((CommitmentView::of(&found)?, projection_seq))
}

/// A commitment: milestones with released, frozen and remaining amounts,
/// deposits with what is left of them, releases and refunds with their
/// lineage, and claims.
#[utoipa::path(
    get,
    path = "/v1/commitments/{commitment_id}",
    tag = "escrow",
    params(("commitment_id" = inline(CommitmentId), Path, description = "The commitment"), ReadQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The commitment", body = OneCommitment),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "No such commitment", body = ErrorBody),
    )
)]
async fn get_commitment(
    State(app): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiPath(commitment_id): ApiPath<CommitmentId>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<OneCommitment>, ApiError> {
    let (commitment, projection_seq) =
        commitment(&app, tenant_id, commitment_id, query.min_seq).await?;
    Ok(Json(OneCommitment {
        commitment,
        projection_seq,
    }))
}

/// A claim, with its commitment and the transfers that resolved it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimView {
    pub commitment_id: CommitmentId,
    #[serde(flatten)]
    pub claim: Claim,
    /// The release and the refund that resolved it, with their lineage.
    pub transfers: Vec<Transfer>,
    pub projection_seq: i64,
}

/// A claim: what it froze, of which milestone, and how it resolved.
#[utoipa::path(
    get,
    path = "/v1/claims/{claim_id}",
    tag = "escrow",
    params(("claim_id" = inline(ClaimId), Path, description = "The claim"), ReadQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The claim", body = ClaimView),
        (status = 400, description = "Invalid id or query", body = ErrorBody),
        (status = 404, description = "No such claim", body = ErrorBody),
    )
)]
async fn get_claim(
    State(app): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiPath(claim_id): ApiPath<ClaimId>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<ClaimView>, ApiError> {
    let commitment_id = claim_holder(&app, tenant_id, claim_id).await?;
    let (view, projection_seq) = commitment(&app, tenant_id, commitment_id, query.min_seq).await?;
    let claim = view
        .claims
        .iter()
        .find(|claim| claim.claim_id == claim_id)
        .cloned()
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no claim {claim_id} (or the read table has not applied it: pass min_seq)"
            ))
        })?;
    let transfers = view
        .releases
        .iter()
        .chain(&view.refunds)
        .filter(|transfer| transfer.cause == aggregates::escrow::Cause::Claim { claim_id })
        .cloned()
        .collect();
    Ok(Json(ClaimView {
        commitment_id,
        claim,
        transfers,
        projection_seq,
    }))
}
