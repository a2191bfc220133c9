//! Every way a payment command is refused, each with its own code.

use crate::decide::{Rejection, RejectionKind};
use crate::ids::{CaptureId, DisputeId, RefundId, TenderId};
use crate::money::{Amount, AmountError};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("the payment exists already")]
    Exists,
    #[error("no such payment")]
    Unknown,
    #[error("a payment is for a positive amount")]
    NonPositiveAmount,
    #[error("the authorization lifetime must be 1 second to 90 days")]
    InvalidTtl,
    #[error("the payment was canceled")]
    Canceled,
    #[error("the payment expired: no authorization was captured in time")]
    Expired,
    #[error("tenders would cover {tendered}, more than the payment's {amount}")]
    TenderExceedsAmount { amount: Amount, tendered: Amount },
    #[error("a {method} tender needs {needs}")]
    TenderSourceMismatch {
        method: &'static str,
        needs: &'static str,
    },
    #[error("the payment has {max} tenders already")]
    TooManyTenders { max: usize },
    #[error("the tender id is taken")]
    TenderExists,
    #[error("no tender {0}")]
    UnknownTender(TenderId),
    #[error("{captured} captured of {authorized} authorized: {asked} more cannot be")]
    CaptureExceedsAuthorized {
        authorized: Amount,
        captured: Amount,
        asked: Amount,
    },
    #[error("the authorization expired at {expires_at}")]
    AuthorizationExpired { expires_at: DateTime<Utc> },
    #[error("the authorization is closed: nothing more can be captured")]
    AuthorizationClosed,
    #[error("the authorization was voided")]
    AuthorizationVoided,
    #[error("the authorization expires at {expires_at}, not before")]
    AuthorizationNotExpired { expires_at: DateTime<Utc> },
    #[error("the tender was captured as it was taken: nothing is left to capture")]
    NotCapturable,
    #[error("a tender takes at most {max} captures")]
    TooManyCaptures { max: usize },
    #[error("the tender was captured before: a further capture names the processor's reference for it (its settlement line names that)")]
    CaptureReferenceRequired,
    #[error("the capture id is taken")]
    CaptureExists,
    #[error("something was captured already: refund it instead")]
    AlreadyCaptured,
    #[error("the refund draws from a processor's tender: it names the processor's reference for it (its settlement line names that)")]
    RefundReferenceRequired,
    #[error("a dispute comes through a processor: it names the processor's reference for it (its settlement line names that)")]
    DisputeReferenceRequired,
    #[error("{refundable} is refundable: {asked} cannot be refunded")]
    RefundExceedsCaptured { refundable: Amount, asked: Amount },
    #[error("the refund would draw from tenders of several processors ({}): refund each processor's tenders on their own, naming the tender", processors.join(", "))]
    RefundAcrossProcessors { processors: Vec<String> },
    #[error("the payment has {max} refunds already")]
    TooManyRefunds { max: usize },
    #[error("the refund id is taken")]
    RefundExists,
    #[error("no refund {0}")]
    UnknownRefund(RefundId),
    #[error("the refund is {state}, not pending")]
    RefundNotPending { state: &'static str },
    #[error("no capture {0}")]
    UnknownCapture(CaptureId),
    #[error("{disputable} of the capture can be disputed: {asked} cannot be")]
    DisputeExceedsCaptured { disputable: Amount, asked: Amount },
    #[error("only a capture through a processor (card, bank transfer) can be disputed")]
    DisputeNeedsProcessor,
    #[error("the payment has {max} disputes already")]
    TooManyDisputes { max: usize },
    #[error("the dispute id is taken")]
    DisputeExists,
    #[error("no dispute {0}")]
    UnknownDispute(DisputeId),
    #[error("the dispute is closed")]
    DisputeClosed,
    #[error("evidence was submitted already")]
    EvidenceAlreadySubmitted,
    #[error("settled already, by batch {batch}")]
    AlreadySettled { batch: String },
    #[error("the dispute was not won: nothing was given back to settle")]
    DisputeNotWon,
    #[error("an amount is positive")]
    NonPositive,
    #[error(transparent)]
    TimeOutOfRange(#[from] crate::time::TimeOutOfRange),
    #[error(transparent)]
    Amount(#[from] AmountError),
}

impl Rejection for PaymentError {
    fn kind(&self) -> RejectionKind {
        match self {
            Self::Unknown
            | Self::UnknownTender(_)
            | Self::UnknownRefund(_)
            | Self::UnknownCapture(_)
            | Self::UnknownDispute(_) => RejectionKind::NotFound,
            Self::NonPositiveAmount
            | Self::NonPositive
            | Self::InvalidTtl
            | Self::TenderSourceMismatch { .. }
            | Self::TimeOutOfRange(_) => RejectionKind::Invalid,
            _ => RejectionKind::RuleBroken,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Exists => "payment_exists",
            Self::Unknown => "unknown_payment",
            Self::NonPositiveAmount | Self::NonPositive => "invalid_amount",
            Self::InvalidTtl => "invalid_authorization_ttl",
            Self::Canceled => "payment_canceled",
            Self::Expired => "payment_expired",
            Self::TenderExceedsAmount { .. } => "tender_exceeds_amount",
            Self::TenderSourceMismatch { .. } => "invalid_tender",
            Self::TooManyTenders { .. } => "too_many_tenders",
            Self::TenderExists => "tender_exists",
            Self::UnknownTender(_) => "unknown_tender",
            Self::CaptureExceedsAuthorized { .. } => "capture_exceeds_authorized",
            Self::AuthorizationExpired { .. } => "authorization_expired",
            Self::AuthorizationClosed => "authorization_closed",
            Self::AuthorizationVoided => "authorization_voided",
            Self::AuthorizationNotExpired { .. } => "authorization_not_expired",
            Self::NotCapturable => "tender_not_capturable",
            Self::TooManyCaptures { .. } => "too_many_captures",
            Self::CaptureReferenceRequired => "capture_reference_required",
            Self::CaptureExists => "capture_exists",
            Self::AlreadyCaptured => "payment_captured",
            Self::RefundExceedsCaptured { .. } => "refund_exceeds_captured",
            Self::RefundAcrossProcessors { .. } => "refund_across_processors",
            Self::RefundReferenceRequired => "refund_reference_required",
            Self::DisputeReferenceRequired => "dispute_reference_required",
            Self::TooManyRefunds { .. } => "too_many_refunds",
            Self::RefundExists => "refund_exists",
            Self::UnknownRefund(_) => "unknown_refund",
            Self::RefundNotPending { .. } => "refund_not_pending",
            Self::UnknownCapture(_) => "unknown_capture",
            Self::DisputeExceedsCaptured { .. } => "dispute_exceeds_captured",
            Self::DisputeNeedsProcessor => "dispute_requires_processor",
            Self::TooManyDisputes { .. } => "too_many_disputes",
            Self::DisputeExists => "dispute_exists",
            Self::UnknownDispute(_) => "unknown_dispute",
            Self::DisputeClosed => "dispute_closed",
            Self::EvidenceAlreadySubmitted => "evidence_already_submitted",
            Self::AlreadySettled { .. } => "already_settled",
            Self::DisputeNotWon => "dispute_not_won",
            Self::TimeOutOfRange(_) => "time_out_of_range",
            Self::Amount(_) => "amount_overflow",
        }
    }

    fn details(&self) -> Value {
        match self {
            Self::TenderExceedsAmount { amount, tendered } => {
                json!({"amount": amount, "tendered": tendered})
            }
            Self::CaptureExceedsAuthorized {
                authorized,
                captured,
                asked,
            } => json!({"authorized": authorized, "captured": captured, "asked": asked}),
            Self::AuthorizationExpired { expires_at }
            | Self::AuthorizationNotExpired { expires_at } => json!({"expires_at": expires_at}),
            Self::RefundExceedsCaptured { refundable, asked } => {
                json!({"refundable": refundable, "asked": asked})
            }
            Self::DisputeExceedsCaptured { disputable, asked } => {
                json!({"disputable": disputable, "asked": asked})
            }
            Self::RefundNotPending { state } => json!({"state": state}),
            Self::RefundAcrossProcessors { processors } => json!({"processors": processors}),
            Self::AlreadySettled { batch } => json!({"batch": batch}),
            Self::TooManyTenders { max }
            | Self::TooManyCaptures { max }
            | Self::TooManyRefunds { max }
            | Self::TooManyDisputes { max } => json!({"max": max}),
            _ => Value::Null,
        }
    }
}
