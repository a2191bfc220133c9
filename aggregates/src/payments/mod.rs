//! A payment (SPEC 4.5): an intent for an amount, paid by one or more
//! tenders, each authorized and captured (in part or whole, at most 50
//! captures), refunded and disputed, canceled before anything is captured,
//! expired when no authorization was captured in time.
//!
//! The aggregate (its id the payment id) decides what may happen and keeps
//! the amounts; the money moves in the journal (SPEC 4.1): the requests turn
//! its events into holds and entries on the journal's accounts, whose flags
//! hold across every domain. Every time is the command's own.

pub mod accounts;
mod decide;
mod errors;
mod events;
pub mod gift_card;
pub mod payout;
pub mod reference;
pub mod settlement;
mod types;

#[cfg(test)]
mod tests;

pub use decide::AUTHORIZATION_TTL_SECONDS_MAX;
pub use errors::PaymentError;
pub use events::{IntentTerms, PaymentCommand, PaymentEvent};
pub use types::*;

use crate::decide::{handle_by_deciding, Decide};
use crate::ids::{CaptureId, DisputeId, HoldId, RefundId, TenderId};
use crate::money::{Amount, AmountError};
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

/// Aggregate type of payments; the aggregate id is the payment id.
pub const PAYMENT_AGGREGATE: &str = "payment";

/// A payment's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// `None` before it is created.
    pub intent: Option<Intent>,
    pub tenders: Vec<Tender>,
    pub refunds: Vec<Refund>,
    pub disputes: Vec<Dispute>,
    pub canceled_at: Option<DateTime<Utc>>,
    /// Captures made so far, for the capture order of tenders.
    pub captures_made: u64,
}

impl Payment {
    /// The sum of `amount` over `items`.
    fn sum<T>(items: &[T], amount: impl Fn(&T) -> Amount) -> Result<Amount, AmountError> {
        items
            .iter()
            .try_fold(Amount::ZERO, |sum, item| sum.checked_add(amount(item)))
    }

    /// Captured over every tender.
    pub fn captured(&self) -> Result<Amount, AmountError> {
        Self::sum(&self.tenders, |tender| tender.captured)
    }

    /// Refunded over every tender (pending and settled refunds).
    pub fn refunded(&self) -> Result<Amount, AmountError> {
        Self::sum(&self.tenders, |tender| tender.refunded)
    }

    /// Authorized and not released, over every tender: what the tenders
    /// cover.
    pub fn tendered(&self) -> Result<Amount, AmountError> {
        self.tenders.iter().try_fold(Amount::ZERO, |sum, tender| {
            sum.checked_add(tender.amount.checked_sub(tender.released)?)
        })
    }

    /// What the payment still expects to capture in all: its amount less
    /// what its tenders released uncaptured (a final capture's rest), none
    /// once they released as much (a tender taken for a released rest and
    /// finally captured short releases its own rest too). In 128 bits: the
    /// releases of up to 20 tenders may pass 64.
    fn expected(&self, amount: Amount) -> i128 {
        let released: i128 = self
            .tenders
            .iter()
            .map(|tender| i128::from(tender.released.value()))
            .sum();
        (i128::from(amount.value()) - released).max(0)
    }

    /// Whether an authorization is open with something left to capture.
    fn capture_open(&self) -> bool {
        self.tenders.iter().any(|tender| {
            tender.state == AuthorizationState::Open
                && tender.uncaptured().is_ok_and(|rest| !rest.is_zero())
        })
    }

    /// Whether every authorization expired with nothing captured.
    pub fn expired(&self) -> bool {
        !self.tenders.is_empty()
            && self.tenders.iter().all(|tender| {
                tender.state == AuthorizationState::Expired && tender.captured.is_zero()
            })
    }

    /// Where the payment stands; `None` before it is created.
    pub fn status(&self) -> Option<PaymentStatus> {
        let intent = self.intent.as_ref()?;
        if self.canceled_at.is_some() {
            return Some(PaymentStatus::Canceled);
        }
        if self.expired() {
            return Some(PaymentStatus::Expired);
        }
        let captured = self.captured().ok()?;
        if captured.is_zero() {
            let tendered = self.tendered().ok()?;
            return Some(if tendered.is_zero() {
                PaymentStatus::RequiresTender
            } else if tendered < intent.terms.amount {
                PaymentStatus::PartiallyAuthorized
            } else {
                PaymentStatus::Authorized
            });
        }
        // While an authorization is open the payment is still being
        // captured, whatever has been refunded of what was.
        if self.capture_open() {
            return Some(PaymentStatus::PartiallyCaptured);
        }
        let refunded = self.refunded().ok()?;
        Some(if refunded == captured {
            PaymentStatus::Refunded
        } else if !refunded.is_zero() {
            PaymentStatus::PartiallyRefunded
        } else if i128::from(captured.value()) >= self.expected(intent.terms.amount) {
            PaymentStatus::Captured
        } else {
            PaymentStatus::PartiallyCaptured
        })
    }

    pub fn tender(&self, tender_id: TenderId) -> Option<&Tender> {
        self.tenders
            .iter()
            .find(|tender| tender.tender_id == tender_id)
    }

    fn tender_mut(&mut self, tender_id: TenderId) -> Option<&mut Tender> {
        self.tenders
            .iter_mut()
            .find(|tender| tender.tender_id == tender_id)
    }

    /// The capture `capture_id` and its tender.
    pub fn capture(&self, capture_id: CaptureId) -> Option<(&Tender, &Capture)> {
        self.tenders.iter().find_map(|tender| {
            tender
                .captures
                .iter()
                .find(|capture| capture.capture_id == capture_id)
                .map(|capture| (tender, capture))
        })
    }

    fn capture_mut(&mut self, capture_id: CaptureId) -> Option<&mut Capture> {
        self.tenders
            .iter_mut()
            .flat_map(|tender| tender.captures.iter_mut())
            .find(|capture| capture.capture_id == capture_id)
    }

    pub fn refund(&self, refund_id: RefundId) -> Option<&Refund> {
        self.refunds
            .iter()
            .find(|refund| refund.refund_id == refund_id)
    }

    pub fn dispute(&self, dispute_id: DisputeId) -> Option<&Dispute> {
        self.disputes
            .iter()
            .find(|dispute| dispute.dispute_id == dispute_id)
    }
}

impl Aggregate for Payment {
    const TYPE: &'static str = PAYMENT_AGGREGATE;
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PaymentCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), PaymentError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: PaymentEvent) {
        match event {
            PaymentEvent::PaymentCreated { terms, at } => {
                self.intent = Some(Intent {
                    terms,
                    created_at: at,
                })
            }
            PaymentEvent::TenderAuthorized {
                tender_id,
                method,
                source,
                amount,
                expires_at,
                hold_id,
                at,
            } => self.tenders.push(Tender {
                tender_id,
                method,
                source,
                amount,
                authorized_at: at,
                expires_at,
                state: AuthorizationState::Open,
                hold_id,
                captures: Vec::new(),
                captured: Amount::ZERO,
                released: Amount::ZERO,
                refunded: Amount::ZERO,
                last_captured: 0,
            }),
            PaymentEvent::Captured {
                tender_id,
                capture_id,
                amount,
                reference,
                released,
                next_hold_id,
                at,
                ..
            } => {
                let capture = Capture {
                    capture_id,
                    amount,
                    reference,
                    at,
                    disputed: Amount::ZERO,
                    settled_in: None,
                };
                self.apply_capture(tender_id, capture, released, next_hold_id);
            }
            PaymentEvent::PaymentCanceled { released, at } => {
                for (tender_id, amount) in released {
                    if let Some(tender) = self.tender_mut(tender_id) {
                        add(&mut tender.released, amount);
                        tender.state = AuthorizationState::Voided;
                        tender.hold_id = None;
                    }
                }
                self.canceled_at = Some(at);
            }
            PaymentEvent::AuthorizationExpired {
                tender_id,
                released,
                ..
            } => {
                if let Some(tender) = self.tender_mut(tender_id) {
                    add(&mut tender.released, released);
                    tender.state = AuthorizationState::Expired;
                    tender.hold_id = None;
                }
            }
            PaymentEvent::Refunded {
                refund_id,
                amount,
                parts,
                reference,
                reason,
                at,
            } => self.apply_refund(Refund {
                refund_id,
                amount,
                parts,
                reference,
                reason,
                state: RefundState::Pending,
                at,
                settled_in: None,
            }),
            PaymentEvent::RefundFailed { refund_id, .. } => self.apply_refund_failed(refund_id),
            PaymentEvent::DisputeOpened {
                dispute_id,
                tender_id,
                capture_id,
                amount,
                fee,
                reference,
                reason,
                at,
            } => self.apply_dispute(Dispute {
                dispute_id,
                tender_id,
                capture_id,
                amount,
                fee,
                reference,
                reason,
                state: DisputeState::NeedsResponse,
                opened_at: at,
                settled_in: None,
                reversal_settled_in: None,
            }),
            PaymentEvent::EvidenceSubmitted { dispute_id, .. } => {
                if let Some(dispute) = self.dispute_mut(dispute_id) {
                    dispute.state = DisputeState::UnderReview;
                }
            }
            PaymentEvent::DisputeClosed {
                dispute_id,
                outcome,
                ..
            } => self.apply_dispute_closed(dispute_id, outcome),
            PaymentEvent::ItemSettled { item, batch, .. } => self.settle(item, batch),
        }
    }
}

// The amounts were checked when the event was decided; a stored event that
// overflows leaves the amount as it was.
fn add(to: &mut Amount, amount: Amount) {
    *to = to.checked_add(amount).unwrap_or(*to);
}

fn sub(from: &mut Amount, amount: Amount) {
    *from = from.checked_sub(amount).unwrap_or(*from);
}

/// The events' effects, one concern each.
impl Payment {
    fn apply_capture(
        &mut self,
        tender_id: TenderId,
        capture: Capture,
        released: Amount,
        next_hold_id: Option<HoldId>,
    ) {
        self.captures_made += 1;
        let order = self.captures_made;
        if let Some(tender) = self.tender_mut(tender_id) {
            add(&mut tender.captured, capture.amount);
            tender.captures.push(capture);
            add(&mut tender.released, released);
            tender.last_captured = order;
            tender.hold_id = next_hold_id;
            if tender.uncaptured().is_ok_and(|left| left.is_zero()) {
                tender.state = AuthorizationState::Closed;
            }
        }
    }

    fn apply_refund(&mut self, refund: Refund) {
        for part in &refund.parts {
            if let Some(tender) = self.tender_mut(part.tender_id) {
                add(&mut tender.refunded, part.amount);
            }
        }
        self.refunds.push(refund);
    }

    fn apply_refund_failed(&mut self, refund_id: RefundId) {
        let parts = match self
            .refunds
            .iter_mut()
            .find(|refund| refund.refund_id == refund_id)
        {
            Some(refund) => {
                refund.state = RefundState::Failed;
                refund.parts.clone()
            }
            None => Vec::new(),
        };
        for part in parts {
            if let Some(tender) = self.tender_mut(part.tender_id) {
                sub(&mut tender.refunded, part.amount);
            }
        }
    }

    fn apply_dispute(&mut self, dispute: Dispute) {
        if let Some(capture) = self.capture_mut(dispute.capture_id) {
            add(&mut capture.disputed, dispute.amount);
        }
        self.disputes.push(dispute);
    }

    fn apply_dispute_closed(&mut self, dispute_id: DisputeId, outcome: DisputeOutcome) {
        let Some(dispute) = self.dispute_mut(dispute_id) else {
            return;
        };
        dispute.state = match outcome {
            DisputeOutcome::Won => DisputeState::Won,
            DisputeOutcome::Lost => DisputeState::Lost,
        };
        let (capture_id, amount) = (dispute.capture_id, dispute.amount);
        // Won: the frozen amount is reinstated; lost, it stays out.
        if outcome == DisputeOutcome::Won {
            if let Some(capture) = self.capture_mut(capture_id) {
                sub(&mut capture.disputed, amount);
            }
        }
    }
}

impl Payment {
    /// Records `item` settled by `batch`.
    fn settle(&mut self, item: settlement::Item, batch: String) {
        use settlement::Item;
        match item {
            Item::Capture { capture_id } => {
                if let Some(capture) = self.capture_mut(capture_id) {
                    capture.settled_in = Some(batch);
                }
            }
            Item::Refund { refund_id } => {
                if let Some(refund) = self
                    .refunds
                    .iter_mut()
                    .find(|refund| refund.refund_id == refund_id)
                {
                    refund.state = RefundState::Settled;
                    refund.settled_in = Some(batch);
                }
            }
            Item::Dispute { dispute_id } => {
                if let Some(dispute) = self.dispute_mut(dispute_id) {
                    dispute.settled_in = Some(batch);
                }
            }
            Item::DisputeReversal { dispute_id } => {
                if let Some(dispute) = self.dispute_mut(dispute_id) {
                    dispute.reversal_settled_in = Some(batch);
                }
            }
        }
    }

    fn dispute_mut(&mut self, dispute_id: DisputeId) -> Option<&mut Dispute> {
        self.disputes
            .iter_mut()
            .find(|dispute| dispute.dispute_id == dispute_id)
    }
}

impl Decide for Payment {
    fn decide(&self, command: PaymentCommand) -> Result<Vec<PaymentEvent>, PaymentError> {
        decide::decide(self, command)
    }
}
