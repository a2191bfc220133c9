//! A payment's commands and events. Every time is the command's own.

use super::settlement::Item;
use super::types::{CaptureMode, DisputeOutcome, RefundPart, TenderMethod, TenderSource};
use crate::ids::{CaptureId, DisputeId, HoldId, RefundId, TenderId};
use crate::money::{Amount, Asset};
use crate::rules::Rules;
use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

/// The terms a payment is created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IntentTerms {
    pub amount: Amount,
    pub asset: Asset,
    pub capture: CaptureMode,
    pub customer: Option<String>,
    pub description: Option<String>,
    pub authorization_ttl_seconds: i64,
    pub payee: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PaymentCommand {
    Create {
        terms: IntentTerms,
        at: DateTime<Utc>,
    },
    /// Adds a tender: authorized (card, bank transfer) or captured at once
    /// (cash, gift card; and any tender of an automatic-capture payment).
    Tender {
        tender_id: TenderId,
        method: TenderMethod,
        source: TenderSource,
        amount: Amount,
        /// The capture made at once, when the tender is captured as it is
        /// authorized.
        capture_id: CaptureId,
        /// The reservation (journal hold) of its authorization, when it is
        /// not captured at once.
        hold_id: HoldId,
        at: DateTime<Utc>,
    },
    Capture {
        tender_id: TenderId,
        capture_id: CaptureId,
        amount: Amount,
        reference: Option<String>,
        /// The last capture: the uncaptured rest is released.
        last: bool,
        /// The reservation of what is left to capture, when something is.
        next_hold_id: HoldId,
        /// The rules it is decided under (a further capture of a
        /// processor's tender names its reference since version 2).
        rules: Rules,
        at: DateTime<Utc>,
    },
    /// Voids every authorization; refused once anything was captured.
    Cancel { at: DateTime<Utc> },
    /// Expires the tender's authorization at its expiry (the scheduler's).
    ExpireAuthorization {
        tender_id: TenderId,
        at: DateTime<Utc>,
    },
    /// Refunds `amount` from the tender named, or from the most recently
    /// captured first (under `rules`: since version 3, one drawn from a
    /// processor's tender names its reference).
    Refund {
        refund_id: RefundId,
        amount: Amount,
        tender_id: Option<TenderId>,
        reference: Option<String>,
        reason: Option<String>,
        rules: Rules,
        at: DateTime<Utc>,
    },
    FailRefund {
        refund_id: RefundId,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    /// Opens a dispute of a capture (under `rules`: since version 3, naming
    /// the processor's reference for it).
    OpenDispute {
        dispute_id: DisputeId,
        capture_id: CaptureId,
        amount: Amount,
        fee: Amount,
        reference: Option<String>,
        reason: Option<String>,
        rules: Rules,
        at: DateTime<Utc>,
    },
    SubmitEvidence {
        dispute_id: DisputeId,
        at: DateTime<Utc>,
    },
    CloseDispute {
        dispute_id: DisputeId,
        outcome: DisputeOutcome,
        at: DateTime<Utc>,
    },
    /// Marks `item` settled by batch `batch` (`<processor>:<batch_id>`),
    /// once.
    Settle {
        item: Item,
        batch: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentEvent {
    PaymentCreated {
        terms: IntentTerms,
        at: DateTime<Utc>,
    },
    TenderAuthorized {
        tender_id: TenderId,
        method: TenderMethod,
        source: TenderSource,
        amount: Amount,
        expires_at: DateTime<Utc>,
        /// The reservation of the authorization; `None` when the tender is
        /// captured as it is taken.
        hold_id: Option<HoldId>,
        at: DateTime<Utc>,
    },
    Captured {
        tender_id: TenderId,
        capture_id: CaptureId,
        amount: Amount,
        reference: Option<String>,
        /// The uncaptured rest released with it (a last capture's).
        released: Amount,
        /// The reservation it settled (`None`: captured as taken).
        settled_hold_id: Option<HoldId>,
        /// The reservation of what is left to capture; `None` when nothing
        /// is (the authorization closes).
        next_hold_id: Option<HoldId>,
        at: DateTime<Utc>,
    },
    /// Every open authorization voided: what each released.
    PaymentCanceled {
        released: Vec<(TenderId, Amount)>,
        at: DateTime<Utc>,
    },
    AuthorizationExpired {
        tender_id: TenderId,
        released: Amount,
        at: DateTime<Utc>,
    },
    Refunded {
        refund_id: RefundId,
        amount: Amount,
        parts: Vec<RefundPart>,
        reference: Option<String>,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    RefundFailed {
        refund_id: RefundId,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    DisputeOpened {
        dispute_id: DisputeId,
        tender_id: TenderId,
        capture_id: CaptureId,
        amount: Amount,
        fee: Amount,
        reference: Option<String>,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    EvidenceSubmitted {
        dispute_id: DisputeId,
        at: DateTime<Utc>,
    },
    DisputeClosed {
        dispute_id: DisputeId,
        outcome: DisputeOutcome,
        at: DateTime<Utc>,
    },
    ItemSettled {
        item: Item,
        batch: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        match self {
            Self::PaymentCreated { .. } => "PaymentCreated",
            Self::TenderAuthorized { .. } => "TenderAuthorized",
            Self::Captured { .. } => "Captured",
            Self::PaymentCanceled { .. } => "PaymentCanceled",
            Self::AuthorizationExpired { .. } => "AuthorizationExpired",
            Self::Refunded { .. } => "Refunded",
            Self::RefundFailed { .. } => "RefundFailed",
            Self::DisputeOpened { .. } => "DisputeOpened",
            Self::EvidenceSubmitted { .. } => "EvidenceSubmitted",
            Self::DisputeClosed { .. } => "DisputeClosed",
            Self::ItemSettled { .. } => "ItemSettled",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
