//! What a payment is made of: its intent, its tenders with their
//! authorizations and captures, its refunds and its disputes.

use crate::ids::{CaptureId, DisputeId, HoldId, RefundId, TenderId};
use crate::money::{Amount, AmountError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most captures one tender takes.
pub const CAPTURES_PER_TENDER_MAX: usize = 50;

/// Most tenders one payment takes.
pub const TENDERS_MAX: usize = 20;

/// Most refunds, and most disputes, one payment takes.
pub const REFUNDS_MAX: usize = 100;

/// How an authorized tender is captured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// Captured in full as it is authorized.
    #[default]
    Automatic,
    /// Captured by explicit captures, in part or whole.
    Manual,
}

/// How a tender pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenderMethod {
    Card,
    BankTransfer,
    Cash,
    GiftCard,
}

impl TenderMethod {
    /// Whether the method goes through a processor (with its reference)
    /// and is authorized before it is captured.
    pub fn through_processor(self) -> bool {
        matches!(self, Self::Card | Self::BankTransfer)
    }
}

/// Where a tender's money comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum TenderSource {
    /// A card or bank transfer through `processor`, known there as
    /// `reference`.
    Processor {
        processor: String,
        reference: String,
    },
    /// Cash taken at once.
    Cash,
    /// Drawn from gift card `code`.
    GiftCard { code: String },
}

impl TenderSource {
    /// The processor a card or bank transfer goes through; none for cash
    /// and gift cards.
    pub fn processor(&self) -> Option<&str> {
        match self {
            Self::Processor { processor, .. } => Some(processor),
            _ => None,
        }
    }
}

/// The payment's terms, as created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Intent {
    #[serde(flatten)]
    pub terms: super::IntentTerms,
    pub created_at: DateTime<Utc>,
}

/// Where a tender's authorization stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationState {
    /// Capturable: part of it may still be captured.
    Open,
    /// Closed by a final capture, or captured in full.
    Closed,
    /// Voided by a cancellation.
    Voided,
    /// Its time ran out.
    Expired,
}

/// One capture of a tender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Capture {
    pub capture_id: CaptureId,
    pub amount: Amount,
    pub reference: Option<String>,
    pub at: DateTime<Utc>,
    /// What disputes have frozen of it (open or lost).
    pub disputed: Amount,
    /// The settlement batch that settled it.
    #[serde(default)]
    pub settled_in: Option<String>,
}

/// One tender of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tender {
    pub tender_id: TenderId,
    pub method: TenderMethod,
    pub source: TenderSource,
    /// What it authorized.
    pub amount: Amount,
    pub authorized_at: DateTime<Utc>,
    /// When its authorization stops being capturable.
    pub expires_at: DateTime<Utc>,
    pub state: AuthorizationState,
    /// The journal hold reserving what is left to capture, while the
    /// authorization is open.
    pub hold_id: Option<HoldId>,
    pub captures: Vec<Capture>,
    /// Captured, in total.
    pub captured: Amount,
    /// Released uncaptured (final capture, void or expiry).
    pub released: Amount,
    /// Refunded from it (pending and settled refunds; failed ones given
    /// back).
    pub refunded: Amount,
    /// Order of its last capture among the payment's, for refunds drawn
    /// from the most recently captured first.
    pub last_captured: u64,
}

impl Tender {
    /// What is authorized and neither captured nor released.
    pub fn uncaptured(&self) -> Result<Amount, AmountError> {
        self.amount
            .checked_sub(self.captured)?
            .checked_sub(self.released)
    }

    /// What is captured and neither refunded nor disputed.
    pub fn refundable(&self) -> Result<Amount, AmountError> {
        let disputed = self
            .captures
            .iter()
            .try_fold(Amount::ZERO, |sum, capture| {
                sum.checked_add(capture.disputed)
            })?;
        self.captured
            .checked_sub(self.refunded)?
            .checked_sub(disputed)
    }
}

/// Where a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundState {
    Pending,
    Settled,
    Failed,
}

/// The part of a refund taken from one tender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RefundPart {
    pub tender_id: TenderId,
    pub amount: Amount,
}

/// One refund of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Refund {
    pub refund_id: RefundId,
    pub amount: Amount,
    pub parts: Vec<RefundPart>,
    pub reference: Option<String>,
    pub reason: Option<String>,
    pub state: RefundState,
    pub at: DateTime<Utc>,
    /// The settlement batch that settled it.
    #[serde(default)]
    pub settled_in: Option<String>,
}

/// Where a dispute stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisputeState {
    NeedsResponse,
    UnderReview,
    Won,
    Lost,
}

impl DisputeState {
    pub fn is_open(self) -> bool {
        matches!(self, Self::NeedsResponse | Self::UnderReview)
    }
}

/// How a dispute closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisputeOutcome {
    /// Decided for the merchant: the frozen amount is reinstated.
    Won,
    /// Decided for the customer: the frozen amount is lost.
    Lost,
}

/// One dispute of a capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Dispute {
    pub dispute_id: DisputeId,
    pub tender_id: TenderId,
    pub capture_id: CaptureId,
    pub amount: Amount,
    pub fee: Amount,
    pub reference: Option<String>,
    pub reason: Option<String>,
    pub state: DisputeState,
    pub opened_at: DateTime<Utc>,
    /// The settlement batches that settled what it took, and what a won
    /// dispute gave back.
    #[serde(default)]
    pub settled_in: Option<String>,
    #[serde(default)]
    pub reversal_settled_in: Option<String>,
}

/// Where a payment stands, as its reads show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    RequiresTender,
    PartiallyAuthorized,
    Authorized,
    PartiallyCaptured,
    Captured,
    PartiallyRefunded,
    Refunded,
    Canceled,
    Expired,
}
