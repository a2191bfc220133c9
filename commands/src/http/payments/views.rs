//! The payments reads' views, built from the documents the `payments`
//! projection keeps (each the aggregate's state after its last event).

use crate::http::error::ApiError;
use aggregates::ids::PaymentId;
use aggregates::money::{Amount, AmountError, Total};
use aggregates::payments::payout::Payout;
use aggregates::payments::settlement::{BreakClass, Item, LineType, Outcome, Settlement};
use aggregates::payments::{Dispute, Intent, Payment, PaymentStatus, Refund, Tender};
use chrono::{DateTime, Utc};
use projections::payment_breaks::BreakView;
use projections::payments::{BatchSums, PaymentDocument};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// The aggregate state a document keeps.
pub fn state<A: DeserializeOwned>(document: &PaymentDocument) -> Result<A, ApiError> {
    serde_json::from_value(document.state.clone()).map_err(|error| {
        ApiError::Internal(format!("stored {} {}: {error}", document.kind, document.id))
    })
}

/// What a payment's money did, in minor units of its currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentAmounts {
    /// What its tenders authorized (cash and gift cards included). A
    /// tender may be taken for what a final capture released, so this and
    /// `released` may pass the payment's amount, and 64 bits (then they
    /// read as strings of digits).
    pub authorized: Total,
    pub captured: Amount,
    /// Authorized and released uncaptured (final captures, cancels,
    /// expiries).
    pub released: Total,
    /// Refunded, pending or settled (failed refunds given back).
    pub refunded: Amount,
    /// Frozen by open disputes.
    pub in_dispute: Amount,
    /// Lost to disputes.
    pub dispute_losses: Amount,
    /// Captured and neither refunded nor disputed.
    pub refundable: Amount,
}

fn sum<T>(
    items: &[T],
    amount: impl Fn(&T) -> Result<Amount, AmountError>,
) -> Result<Amount, ApiError> {
    items
        .iter()
        .try_fold(Amount::ZERO, |total, item| total.checked_add(amount(item)?))
        .map_err(|error| ApiError::Internal(format!("a payment's sums: {error}")))
}

/// `sum` past 64 bits.
fn total<T>(items: &[T], amount: impl Fn(&T) -> Amount) -> Result<Total, ApiError> {
    items
        .iter()
        .try_fold(Total::ZERO, |total, item| total.checked_add(amount(item)))
        .map_err(|error| ApiError::Internal(format!("a payment's sums: {error}")))
}

impl PaymentAmounts {
    fn of(payment: &Payment) -> Result<Self, ApiError> {
        let disputes = |open: bool| {
            sum(&payment.disputes, |dispute| {
                Ok(match (dispute.state.is_open(), dispute.state) {
                    (true, _) if open => dispute.amount,
                    (false, aggregates::payments::DisputeState::Lost) if !open => dispute.amount,
                    _ => Amount::ZERO,
                })
            })
        };
        Ok(Self {
            authorized: total(&payment.tenders, |tender| tender.amount)?,
            captured: sum(&payment.tenders, |tender| Ok(tender.captured))?,
            released: total(&payment.tenders, |tender| tender.released)?,
            refunded: sum(&payment.tenders, |tender| Ok(tender.refunded))?,
            in_dispute: disputes(true)?,
            dispute_losses: disputes(false)?,
            refundable: sum(&payment.tenders, Tender::refundable)?,
        })
    }
}

/// A payment: its terms, where it stands, its money, and every tender
/// (with its captures), refund and dispute.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub payment_id: PaymentId,
    pub status: Option<PaymentStatus>,
    /// The currency's code (`asset` is the code and its scale).
    pub currency: String,
    #[serde(flatten)]
    pub intent: Intent,
    pub canceled_at: Option<DateTime<Utc>>,
    pub amounts: PaymentAmounts,
    pub tenders: Vec<Tender>,
    pub refunds: Vec<Refund>,
    pub disputes: Vec<Dispute>,
    /// tenant_seq of its first and last events.
    pub created_seq: i64,
    pub last_tenant_seq: i64,
}

impl PaymentView {
    pub fn of(document: &PaymentDocument) -> Result<Self, ApiError> {
        let payment: Payment = state(document)?;
        let intent = payment
            .intent
            .clone()
            .ok_or_else(|| ApiError::Internal(format!("payment {} has no intent", document.id)))?;
        Ok(Self {
            payment_id: document
                .id
                .parse()
                .map_err(|_| ApiError::Internal(format!("payment id {:?}", document.id)))?,
            status: payment.status(),
            currency: intent.terms.asset.code().to_string(),
            intent,
            canceled_at: payment.canceled_at,
            amounts: PaymentAmounts::of(&payment)?,
            tenders: payment.tenders,
            refunds: payment.refunds,
            disputes: payment.disputes,
            created_seq: document.created_seq,
            last_tenant_seq: document.last_tenant_seq,
        })
    }
}

/// A dispute, with the payment it belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisputeView {
    pub payment_id: PaymentId,
    pub currency: String,
    #[serde(flatten)]
    pub dispute: Dispute,
    pub projection_seq: i64,
}

/// One line of a settlement batch and what it matched.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineView {
    /// Its place in the batch, from 1.
    pub line: usize,
    #[serde(rename = "type")]
    pub line_type: LineType,
    pub reference: String,
    pub gross: i64,
    pub fee: i64,
    pub net: i64,
    /// `matched`, `processor` (a fee or adjustment of the processor's own)
    /// or `break`.
    pub outcome: &'static str,
    /// The payment and item it settles, when matched.
    pub payment_id: Option<PaymentId>,
    pub item: Option<Item>,
    /// The break it opened, with its class and the ledger's gross.
    pub break_id: Option<Uuid>,
    pub class: Option<BreakClass>,
    pub expected: Option<i64>,
}

/// A batch's totals as the processor reported them.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct LineTotals {
    pub gross: i64,
    pub fee: i64,
    pub net: i64,
}

impl LineTotals {
    /// The sums of `settlement`'s lines (batch `id`'s).
    fn of(settlement: &Settlement, id: &str) -> Result<Self, ApiError> {
        let overflow = || ApiError::Internal(format!("settlement {id} totals"));
        let mut totals = Self::default();
        for settled in &settlement.lines {
            let line = &settled.line;
            totals.gross = totals.gross.checked_add(line.gross).ok_or_else(overflow)?;
            totals.fee = totals.fee.checked_add(line.fee).ok_or_else(overflow)?;
            totals.net = totals.net.checked_add(line.net).ok_or_else(overflow)?;
        }
        Ok(totals)
    }
}

/// A settlement batch: its lines, what each matched, and its breaks.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettlementView {
    /// `<processor>:<batch_id>`.
    pub settlement_id: String,
    pub processor: String,
    pub batch_id: String,
    pub currency: String,
    pub asset: String,
    pub settled_at: Option<DateTime<Utc>>,
    /// `imported`, or `paid_out`.
    pub status: String,
    /// The payout that paid it out.
    pub paid_out_by: Option<Uuid>,
    pub matched: usize,
    pub totals: LineTotals,
    pub lines: Vec<LineView>,
    pub breaks: Vec<BreakView>,
    pub created_seq: i64,
    pub last_tenant_seq: i64,
}

impl SettlementView {
    pub fn of(document: &PaymentDocument, breaks: Vec<BreakView>) -> Result<Self, ApiError> {
        let settlement: Settlement = state(document)?;
        let totals = LineTotals::of(&settlement, &document.id)?;
        let mut lines = Vec::with_capacity(settlement.lines.len());
        for (index, settled) in settlement.lines.iter().enumerate() {
            let line = &settled.line;
            let mut view = LineView {
                line: index + 1,
                line_type: line.line_type,
                reference: line.reference.clone(),
                gross: line.gross,
                fee: line.fee,
                net: line.net,
                outcome: "processor",
                payment_id: None,
                item: None,
                break_id: None,
                class: None,
                expected: None,
            };
            match &settled.outcome {
                Outcome::Matched { payment_id, item } => {
                    view.outcome = "matched";
                    view.payment_id = Some(*payment_id);
                    view.item = Some(*item);
                }
                Outcome::Processor => {}
                Outcome::Break {
                    break_id,
                    class,
                    expected,
                } => {
                    view.outcome = "break";
                    view.break_id = Some(*break_id);
                    view.class = Some(*class);
                    view.expected = *expected;
                }
            }
            lines.push(view);
        }
        let asset = settlement.asset.clone();
        Ok(Self {
            settlement_id: document.id.clone(),
            processor: settlement.processor.clone().unwrap_or_default(),
            batch_id: settlement.batch_id.clone(),
            currency: asset
                .as_ref()
                .map(|asset| asset.code().to_string())
                .unwrap_or_default(),
            asset: asset.map(|asset| asset.to_string()).unwrap_or_default(),
            settled_at: settlement.settled_at,
            status: document.status.clone(),
            paid_out_by: settlement.paid_out,
            matched: lines
                .iter()
                .filter(|line| line.outcome == "matched")
                .count(),
            totals,
            lines,
            breaks,
            created_seq: document.created_seq,
            last_tenant_seq: document.last_tenant_seq,
        })
    }
}

/// A batch a payout pays out, in sum: its lines and breaks are the
/// batch's own read (`GET /v1/settlements/{settlement_id}`), so that a
/// payout of many large batches reads as little as a small one.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchSummary {
    /// `<processor>:<batch_id>`.
    pub settlement_id: String,
    pub batch_id: String,
    pub settled_at: Option<DateTime<Utc>>,
    /// `imported`, or `paid_out`.
    pub status: String,
    /// How many lines it has, how many matched an item of the ledger, and
    /// how many opened a break (resolved since or not: the batch's read
    /// and `GET /v1/breaks` tell).
    pub lines: usize,
    pub matched: usize,
    pub breaks: usize,
    pub totals: LineTotals,
}

impl BatchSummary {
    pub fn of(sums: BatchSums) -> Result<Self, ApiError> {
        let total = |text: &str| {
            text.parse::<i64>()
                .map_err(|_| ApiError::Internal(format!("settlement {} totals", sums.id)))
        };
        let count = |count: i64| usize::try_from(count).unwrap_or_default();
        Ok(Self {
            totals: LineTotals {
                gross: total(&sums.gross)?,
                fee: total(&sums.fee)?,
                net: total(&sums.net)?,
            },
            lines: count(sums.lines),
            matched: count(sums.matched),
            breaks: count(sums.breaks),
            settlement_id: sums.id,
            batch_id: sums.batch_id,
            settled_at: sums.settled_at,
            status: sums.status,
        })
    }
}

/// A payout, with every batch it pays out in sum.
#[derive(Debug, Serialize, ToSchema)]
pub struct PayoutView {
    pub payout_id: Uuid,
    /// `pending`, `paid` or `failed`.
    pub status: String,
    pub processor: String,
    pub currency: String,
    pub asset: String,
    pub amount: Amount,
    pub bank_account: String,
    pub created_at: Option<DateTime<Utc>>,
    /// When it was marked paid: kept when it failed after (the bank
    /// returned it, since rules 10).
    pub paid_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub reason: Option<String>,
    pub batches: Vec<BatchSummary>,
    pub created_seq: i64,
    pub last_tenant_seq: i64,
    pub projection_seq: i64,
}

impl PayoutView {
    pub fn of(
        document: &PaymentDocument,
        batches: Vec<BatchSummary>,
        projection_seq: i64,
    ) -> Result<Self, ApiError> {
        let payout: Payout = state(document)?;
        let terms = payout
            .terms
            .ok_or_else(|| ApiError::Internal(format!("payout {} has no terms", document.id)))?;
        Ok(Self {
            payout_id: document
                .id
                .parse()
                .map_err(|_| ApiError::Internal(format!("payout id {:?}", document.id)))?,
            status: document.status.clone(),
            processor: terms.processor,
            currency: terms.asset.code().to_string(),
            asset: terms.asset.to_string(),
            amount: terms.amount,
            bank_account: terms.bank_account,
            created_at: payout.created_at,
            paid_at: payout.paid_at,
            failed_at: payout.failed_at,
            reason: payout.reason,
            batches,
            created_seq: document.created_seq,
            last_tenant_seq: document.last_tenant_seq,
            projection_seq,
        })
    }
}
