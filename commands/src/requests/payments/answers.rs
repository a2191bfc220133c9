//! What the payment requests answer (beside what the pipeline adds: the
//! aggregate, the events and the tenant_seq), typed so that the API
//! document states each one.

use aggregates::ids::{CaptureId, DisputeId, PaymentId, RefundId, TenderId};
use aggregates::money::{Amount, Asset};
use aggregates::payments::settlement::{BreakClass, Resolution};
use aggregates::payments::{DisputeState, PaymentStatus, RefundState};
use aggregates::EntryId;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// A payment and where it stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentAnswer {
    pub payment_id: PaymentId,
    /// `null` only for a payment that does not exist (never answered).
    pub status: Option<PaymentStatus>,
}

/// A tender added.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenderAnswer {
    pub payment_id: PaymentId,
    pub tender_id: TenderId,
    /// `authorized`, or `captured` when captured as it was taken (cash, a
    /// gift card, or any tender of an automatic-capture payment).
    pub status: &'static str,
    /// The capture made as it was taken (its id is the tender's).
    pub capture_id: Option<CaptureId>,
    pub payment_status: Option<PaymentStatus>,
}

/// A capture made.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CaptureAnswer {
    pub payment_id: PaymentId,
    pub tender_id: TenderId,
    pub capture_id: CaptureId,
    pub amount: Amount,
    /// The uncaptured rest released with it (a final capture's).
    pub released: Amount,
    pub status: Option<PaymentStatus>,
}

/// A refund made, or failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RefundAnswer {
    pub payment_id: PaymentId,
    pub refund_id: RefundId,
    pub refund_status: RefundState,
    /// The entry reversing a failed refund's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reversal_id: Option<EntryId>,
    pub status: Option<PaymentStatus>,
}

/// A dispute opened, answered or closed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DisputeAnswer {
    pub payment_id: PaymentId,
    pub dispute_id: DisputeId,
    pub dispute_status: DisputeState,
}

/// A gift card and its balance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GiftCardAnswer {
    pub code: String,
    pub asset: Asset,
    /// What it holds now, in minor units.
    pub balance: i64,
}

/// A break as an import answers it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BreakAnswer {
    pub break_id: Uuid,
    pub class: BreakClass,
    pub reference: String,
    /// The ledger's gross, when it has one.
    pub expected: Option<i64>,
    /// The processor's gross.
    pub actual: i64,
}

/// A settlement batch imported.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SettlementAnswer {
    /// `<processor>:<batch_id>`.
    pub settlement_id: String,
    /// Lines matched to what the ledger expected.
    pub matched: usize,
    pub breaks: Vec<BreakAnswer>,
}

/// A break resolved.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BreakResolvedAnswer {
    pub break_id: Uuid,
    pub resolution: Resolution,
    /// What it left in `settlement_suspense`, cleared.
    pub amount: i64,
}

/// A payout created, paid or failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PayoutAnswer {
    pub payout_id: Uuid,
    /// `pending`, `paid` or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
    /// The settlement batches it pays out (`<processor>:<batch_id>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batches: Option<Vec<String>>,
    /// The entry reversing a failed payout's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reversal_id: Option<EntryId>,
}
