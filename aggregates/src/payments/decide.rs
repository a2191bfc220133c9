//! The payment's decisions, one function per command.

use super::settlement::Item;
use super::types::*;
use super::{IntentTerms, Payment, PaymentCommand, PaymentError, PaymentEvent};
use crate::ids::{CaptureId, DisputeId, HoldId, RefundId, TenderId};
use crate::journal::lots::{draw, DrawError, Lot, LotOrder};
use crate::money::Amount;
use crate::rules::Rules;
use chrono::{DateTime, Utc};

/// Longest an authorization may stay capturable: 90 days.
pub const AUTHORIZATION_TTL_SECONDS_MAX: i64 = 90 * 86_400;

type Decided = Result<Vec<PaymentEvent>, PaymentError>;

pub(super) fn decide(payment: &Payment, command: PaymentCommand) -> Decided {
    match command {
        PaymentCommand::Create { terms, at } => create(payment, terms, at),
        PaymentCommand::Tender {
            tender_id,
            method,
            source,
            amount,
            capture_id,
            hold_id,
            at,
        } => tender(
            payment,
            Tendered {
                tender_id,
                method,
                source,
                amount,
                capture_id,
                hold_id,
            },
            at,
        ),
        PaymentCommand::Capture {
            tender_id,
            capture_id,
            amount,
            reference,
            last,
            next_hold_id,
            rules,
            at,
        } => capture(
            payment,
            Capturing {
                tender_id,
                capture_id,
                amount,
                reference,
                last,
                next_hold_id,
                rules,
            },
            at,
        ),
        PaymentCommand::Cancel { at } => cancel(payment, at),
        PaymentCommand::ExpireAuthorization { tender_id, at } => expire(payment, tender_id, at),
        PaymentCommand::Refund {
            refund_id,
            amount,
            tender_id,
            reference,
            reason,
            rules,
            at,
        } => refund(
            payment,
            (refund_id, amount, tender_id),
            (reference, reason),
            (rules, at),
        ),
        PaymentCommand::FailRefund {
            refund_id,
            reason,
            at,
        } => fail_refund(payment, refund_id, reason, at),
        PaymentCommand::OpenDispute {
            dispute_id,
            capture_id,
            amount,
            fee,
            reference,
            reason,
            rules,
            at,
        } => open_dispute(
            payment,
            (dispute_id, capture_id, amount, fee),
            (reference, reason),
            (rules, at),
        ),
        PaymentCommand::SubmitEvidence { dispute_id, at } => {
            let dispute = open(payment, dispute_id)?;
            if dispute.state == DisputeState::UnderReview {
                return Err(PaymentError::EvidenceAlreadySubmitted);
            }
            Ok(vec![PaymentEvent::EvidenceSubmitted { dispute_id, at }])
        }
        PaymentCommand::Settle { item, batch, at } => {
            payment.intent.as_ref().ok_or(PaymentError::Unknown)?;
            if let Some(batch) = settled_in(payment, item)? {
                return Err(PaymentError::AlreadySettled { batch });
            }
            Ok(vec![PaymentEvent::ItemSettled { item, batch, at }])
        }
        PaymentCommand::CloseDispute {
            dispute_id,
            outcome,
            at,
        } => {
            open(payment, dispute_id)?;
            Ok(vec![PaymentEvent::DisputeClosed {
                dispute_id,
                outcome,
                at,
            }])
        }
    }
}

fn create(payment: &Payment, terms: IntentTerms, at: DateTime<Utc>) -> Decided {
    if payment.intent.is_some() {
        return Err(PaymentError::Exists);
    }
    if terms.amount.is_zero() {
        return Err(PaymentError::NonPositiveAmount);
    }
    if !(1..=AUTHORIZATION_TTL_SECONDS_MAX).contains(&terms.authorization_ttl_seconds) {
        return Err(PaymentError::InvalidTtl);
    }
    Ok(vec![PaymentEvent::PaymentCreated { terms, at }])
}

/// The intent of a payment that can still take tenders and captures.
fn live(payment: &Payment) -> Result<&Intent, PaymentError> {
    let intent = payment.intent.as_ref().ok_or(PaymentError::Unknown)?;
    if payment.canceled_at.is_some() {
        return Err(PaymentError::Canceled);
    }
    if payment.expired() {
        return Err(PaymentError::Expired);
    }
    Ok(intent)
}

/// Whether `source` is what `method` pays from.
fn source_matches(method: TenderMethod, source: &TenderSource) -> Result<(), PaymentError> {
    let (matches, method_name, needs) = match method {
        TenderMethod::Card => (
            matches!(source, TenderSource::Processor { .. }),
            "card",
            "a processor and its reference",
        ),
        TenderMethod::BankTransfer => (
            matches!(source, TenderSource::Processor { .. }),
            "bank_transfer",
            "a processor and its reference",
        ),
        TenderMethod::Cash => (matches!(source, TenderSource::Cash), "cash", "nothing else"),
        TenderMethod::GiftCard => (
            matches!(source, TenderSource::GiftCard { .. }),
            "gift_card",
            "a gift card code",
        ),
    };
    if matches {
        Ok(())
    } else {
        Err(PaymentError::TenderSourceMismatch {
            method: method_name,
            needs,
        })
    }
}

/// A tender as commanded.
struct Tendered {
    tender_id: TenderId,
    method: TenderMethod,
    source: TenderSource,
    amount: Amount,
    capture_id: CaptureId,
    hold_id: HoldId,
}

fn tender(payment: &Payment, tendered: Tendered, at: DateTime<Utc>) -> Decided {
    let Tendered {
        tender_id,
        method,
        source,
        amount,
        capture_id,
        hold_id,
    } = tendered;
    let intent = live(payment)?;
    source_matches(method, &source)?;
    if amount.is_zero() {
        return Err(PaymentError::NonPositive);
    }
    if payment.tender(tender_id).is_some() {
        return Err(PaymentError::TenderExists);
    }
    if payment.tenders.len() >= TENDERS_MAX {
        return Err(PaymentError::TooManyTenders { max: TENDERS_MAX });
    }
    let tendered = payment.tendered()?.checked_add(amount)?;
    if tendered > intent.terms.amount {
        return Err(PaymentError::TenderExceedsAmount {
            amount: intent.terms.amount,
            tendered,
        });
    }
    let expires_at = at
        .checked_add_signed(chrono::Duration::seconds(
            intent.terms.authorization_ttl_seconds,
        ))
        .unwrap_or(crate::time::TIME_MAX);
    crate::time::check("expires_at", expires_at)?;
    // Cash and gift cards settle at once; so does every tender of an
    // automatic-capture payment. The others are reserved until captured.
    let at_once = !method.through_processor() || intent.terms.capture == CaptureMode::Automatic;
    let mut events = vec![PaymentEvent::TenderAuthorized {
        tender_id,
        method,
        source,
        amount,
        expires_at,
        hold_id: (!at_once).then_some(hold_id),
        at,
    }];
    if at_once {
        events.push(PaymentEvent::Captured {
            tender_id,
            capture_id,
            amount,
            reference: None,
            released: Amount::ZERO,
            settled_hold_id: None,
            next_hold_id: None,
            at,
        });
    }
    Ok(events)
}

/// The tender's authorization if it is still capturable at `at`: a typed
/// error for each way it is not.
fn capturable(tender: &Tender, at: DateTime<Utc>) -> Result<(), PaymentError> {
    match tender.state {
        AuthorizationState::Voided => Err(PaymentError::AuthorizationVoided),
        AuthorizationState::Expired => Err(PaymentError::AuthorizationExpired {
            expires_at: tender.expires_at,
        }),
        AuthorizationState::Closed if !tender.method.through_processor() => {
            Err(PaymentError::NotCapturable)
        }
        AuthorizationState::Closed => Err(PaymentError::AuthorizationClosed),
        AuthorizationState::Open if at >= tender.expires_at => {
            Err(PaymentError::AuthorizationExpired {
                expires_at: tender.expires_at,
            })
        }
        AuthorizationState::Open => Ok(()),
    }
}

/// A capture as commanded.
struct Capturing {
    tender_id: TenderId,
    capture_id: CaptureId,
    amount: Amount,
    reference: Option<String>,
    last: bool,
    next_hold_id: HoldId,
    rules: Rules,
}

fn capture(payment: &Payment, capturing: Capturing, at: DateTime<Utc>) -> Decided {
    let Capturing {
        tender_id,
        capture_id,
        amount,
        reference,
        last,
        next_hold_id,
        rules,
    } = capturing;
    live(payment)?;
    let tender = payment
        .tender(tender_id)
        .ok_or(PaymentError::UnknownTender(tender_id))?;
    capturable(tender, at)?;
    if amount.is_zero() {
        return Err(PaymentError::NonPositive);
    }
    if payment.capture(capture_id).is_some() {
        return Err(PaymentError::CaptureExists);
    }
    if tender.captures.len() >= CAPTURES_PER_TENDER_MAX {
        return Err(PaymentError::TooManyCaptures {
            max: CAPTURES_PER_TENDER_MAX,
        });
    }
    // A processor knows a tender's single capture by its charge's
    // reference; each further one by a reference of its own, which its
    // settlement line names: without it, the capture could never settle.
    let processor = tender.source.processor().is_some();
    let required = rules.since(Rules::SECOND);
    if required && processor && reference.is_none() && !tender.captures.is_empty() {
        return Err(PaymentError::CaptureReferenceRequired);
    }
    let uncaptured = tender.uncaptured()?;
    if amount > uncaptured {
        return Err(PaymentError::CaptureExceedsAuthorized {
            authorized: tender.amount,
            captured: tender.captured,
            asked: amount,
        });
    }
    let left = uncaptured.checked_sub(amount)?;
    let released = if last { left } else { Amount::ZERO };
    // Captured in full, or the last capture: the authorization closes.
    let closes = last || left.is_zero();
    Ok(vec![PaymentEvent::Captured {
        tender_id,
        capture_id,
        amount,
        reference,
        released,
        settled_hold_id: tender.hold_id,
        next_hold_id: (!closes).then_some(next_hold_id),
        at,
    }])
}

fn cancel(payment: &Payment, at: DateTime<Utc>) -> Decided {
    live(payment)?;
    if !payment.captured()?.is_zero() {
        return Err(PaymentError::AlreadyCaptured);
    }
    let released = payment
        .tenders
        .iter()
        .filter(|tender| tender.state == AuthorizationState::Open)
        .map(|tender| Ok((tender.tender_id, tender.uncaptured()?)))
        .collect::<Result<Vec<_>, PaymentError>>()?;
    Ok(vec![PaymentEvent::PaymentCanceled { released, at }])
}

fn expire(payment: &Payment, tender_id: TenderId, at: DateTime<Utc>) -> Decided {
    payment.intent.as_ref().ok_or(PaymentError::Unknown)?;
    let tender = payment
        .tender(tender_id)
        .ok_or(PaymentError::UnknownTender(tender_id))?;
    match tender.state {
        AuthorizationState::Open if at < tender.expires_at => {
            Err(PaymentError::AuthorizationNotExpired {
                expires_at: tender.expires_at,
            })
        }
        AuthorizationState::Open => Ok(vec![PaymentEvent::AuthorizationExpired {
            tender_id,
            released: tender.uncaptured()?,
            at,
        }]),
        AuthorizationState::Closed => Err(PaymentError::AuthorizationClosed),
        AuthorizationState::Voided => Err(PaymentError::AuthorizationVoided),
        AuthorizationState::Expired => Err(PaymentError::AuthorizationExpired {
            expires_at: tender.expires_at,
        }),
    }
}

fn refund(
    payment: &Payment,
    (refund_id, amount, tender_id): (RefundId, Amount, Option<TenderId>),
    (reference, reason): (Option<String>, Option<String>),
    (rules, at): (Rules, DateTime<Utc>),
) -> Decided {
    payment.intent.as_ref().ok_or(PaymentError::Unknown)?;
    if amount.is_zero() {
        return Err(PaymentError::NonPositive);
    }
    if payment.refund(refund_id).is_some() {
        return Err(PaymentError::RefundExists);
    }
    if payment.refunds.len() >= REFUNDS_MAX {
        return Err(PaymentError::TooManyRefunds { max: REFUNDS_MAX });
    }
    let tenders: Vec<&Tender> = match tender_id {
        Some(tender_id) => vec![payment
            .tender(tender_id)
            .ok_or(PaymentError::UnknownTender(tender_id))?],
        None => payment.tenders.iter().collect(),
    };
    let lots = tenders
        .iter()
        .map(|tender| {
            Ok(Lot {
                id: tender.tender_id,
                opened: tender.last_captured,
                available: Some(tender.refundable()?),
            })
        })
        .collect::<Result<Vec<_>, PaymentError>>()?;
    // The most recently captured tender first.
    let parts: Vec<RefundPart> = match draw(&lots, amount, LotOrder::Lifo) {
        Ok(draws) => draws
            .into_iter()
            .map(|draw| RefundPart {
                tender_id: draw.lot,
                amount: draw.amount,
            })
            .collect(),
        Err(DrawError::Insufficient { available, .. }) => {
            return Err(PaymentError::RefundExceedsCaptured {
                refundable: Amount::new(available)?,
                asked: amount,
            })
        }
        Err(DrawError::Amount(error)) => return Err(error.into()),
    };
    // One refund, one processor: each processor settles its refunds whole
    // (its batch's line settles the refund), so a refund crossing two
    // would leave one side's receivable open for good.
    let processors: std::collections::BTreeSet<&str> = parts
        .iter()
        .filter_map(|part| payment.tender(part.tender_id)?.source.processor())
        .collect();
    if processors.len() > 1 {
        return Err(PaymentError::RefundAcrossProcessors {
            processors: processors.into_iter().map(str::to_string).collect(),
        });
    }
    // The processor's batch settles the refund by its reference: without
    // one, its line could never match it and the receivable would stay
    // open.
    if rules.since(Rules::THIRD) && !processors.is_empty() && reference.is_none() {
        return Err(PaymentError::RefundReferenceRequired);
    }
    Ok(vec![PaymentEvent::Refunded {
        refund_id,
        amount,
        parts,
        reference,
        reason,
        at,
    }])
}

fn fail_refund(
    payment: &Payment,
    refund_id: RefundId,
    reason: Option<String>,
    at: DateTime<Utc>,
) -> Decided {
    let refund = payment
        .refund(refund_id)
        .ok_or(PaymentError::UnknownRefund(refund_id))?;
    match refund.state {
        RefundState::Pending => Ok(vec![PaymentEvent::RefundFailed {
            refund_id,
            reason,
            at,
        }]),
        RefundState::Settled => Err(PaymentError::RefundNotPending { state: "settled" }),
        RefundState::Failed => Err(PaymentError::RefundNotPending { state: "failed" }),
    }
}

fn open_dispute(
    payment: &Payment,
    (dispute_id, capture_id, amount, fee): (DisputeId, CaptureId, Amount, Amount),
    (reference, reason): (Option<String>, Option<String>),
    (rules, at): (Rules, DateTime<Utc>),
) -> Decided {
    let (tender, capture) = payment
        .capture(capture_id)
        .ok_or(PaymentError::UnknownCapture(capture_id))?;
    // A chargeback comes through a processor; cash and gift cards have
    // none to take the money back.
    if !tender.method.through_processor() {
        return Err(PaymentError::DisputeNeedsProcessor);
    }
    // Its settlement line (the processor taking the amount and its fee
    // back) is matched by the reference.
    if rules.since(Rules::THIRD) && reference.is_none() {
        return Err(PaymentError::DisputeReferenceRequired);
    }
    if amount.is_zero() {
        return Err(PaymentError::NonPositive);
    }
    if payment.dispute(dispute_id).is_some() {
        return Err(PaymentError::DisputeExists);
    }
    if payment.disputes.len() >= REFUNDS_MAX {
        return Err(PaymentError::TooManyDisputes { max: REFUNDS_MAX });
    }
    // At most what is left of the capture, and of its tender once refunds
    // are taken out.
    let disputable = capture
        .amount
        .checked_sub(capture.disputed)?
        .min(tender.refundable()?);
    if amount > disputable {
        return Err(PaymentError::DisputeExceedsCaptured {
            disputable,
            asked: amount,
        });
    }
    Ok(vec![PaymentEvent::DisputeOpened {
        dispute_id,
        tender_id: tender.tender_id,
        capture_id,
        amount,
        fee,
        reference,
        reason,
        at,
    }])
}

/// The dispute `dispute_id`, if it is still open.
fn open(payment: &Payment, dispute_id: DisputeId) -> Result<&Dispute, PaymentError> {
    let dispute = payment
        .dispute(dispute_id)
        .ok_or(PaymentError::UnknownDispute(dispute_id))?;
    if !dispute.state.is_open() {
        return Err(PaymentError::DisputeClosed);
    }
    Ok(dispute)
}

/// The batch that settled `item` already, if one did; unknown items and a
/// reversal of a dispute not won are refused.
fn settled_in(payment: &Payment, item: Item) -> Result<Option<String>, PaymentError> {
    Ok(match item {
        Item::Capture { capture_id } => payment
            .capture(capture_id)
            .ok_or(PaymentError::UnknownCapture(capture_id))?
            .1
            .settled_in
            .clone(),
        Item::Refund { refund_id } => {
            let refund = payment
                .refund(refund_id)
                .ok_or(PaymentError::UnknownRefund(refund_id))?;
            if refund.state == RefundState::Failed {
                return Err(PaymentError::RefundNotPending { state: "failed" });
            }
            refund.settled_in.clone()
        }
        Item::Dispute { dispute_id } => payment
            .dispute(dispute_id)
            .ok_or(PaymentError::UnknownDispute(dispute_id))?
            .settled_in
            .clone(),
        Item::DisputeReversal { dispute_id } => {
            let dispute = payment
                .dispute(dispute_id)
                .ok_or(PaymentError::UnknownDispute(dispute_id))?;
            if dispute.state != DisputeState::Won {
                return Err(PaymentError::DisputeNotWon);
            }
            dispute.reversal_settled_in.clone()
        }
    })
}
