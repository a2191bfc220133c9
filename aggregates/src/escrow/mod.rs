//! A secured settlement (escrow): a **commitment** between a payer and a
//! payee in one currency, with milestones summing to its total, funded by
//! deposits (lots drawn in the commitment's order), released to the payee
//! or refunded to the payer with the **allocation lineage** of every
//! transfer, and claims freezing part of a milestone until they resolve,
//! once. Submitting a milestone opens its inspection window; the payer
//! accepts or rejects it, or its `on_timeout` outcome applies when the
//! window ends (the scheduler submits it then).

pub mod accounts;
mod decide;
mod errors;
mod types;

#[cfg(test)]
mod tests;

pub use decide::split;
pub use errors::EscrowError;
pub use types::*;

use crate::decide::handle_by_deciding;
use crate::ids::{ClaimId, DepositId, HoldId, TransferId};
use crate::money::{Amount, AmountError};
use crate::rules::Rules;
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// Aggregate type of commitments; the aggregate id is the commitment id.
pub const COMMITMENT_AGGREGATE: &str = "commitment";

/// A commitment's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commitment {
    /// `None` before it is created.
    pub terms: Option<CommitmentTerms>,
    pub created_at: Option<DateTime<Utc>>,
    pub milestones: Vec<Milestone>,
    pub deposits: Vec<Deposit>,
    pub transfers: Vec<Transfer>,
    pub claims: Vec<Claim>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub expired_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CommitmentCommand {
    /// Creates the commitment under `rules` (since version 2 its expiry
    /// times out the windows that ended before it first).
    Create {
        terms: CommitmentTerms,
        rules: Rules,
        at: DateTime<Utc>,
    },
    /// Deposits `amount` (under `rules`: since version 3 refused while a
    /// window has ended untimed-out).
    Deposit {
        deposit_id: DepositId,
        amount: Amount,
        reference: Option<String>,
        rules: Rules,
        at: DateTime<Utc>,
    },
    /// Opens the milestone's inspection window.
    Submit {
        milestone_id: String,
        /// Since version 6, refused when the window would end at or after
        /// the commitment's expiry.
        rules: Rules,
        at: DateTime<Utc>,
    },
    /// Releases `amount` of the milestone (all that is open when `None`)
    /// to the payee; `accepted` when the payer accepts it (which answers
    /// its inspection window: closes it before rules 8; since, closes it
    /// when accepted whole or nothing is left open, and needs one open).
    /// Under `rules` since version 3, refused while any window has ended
    /// untimed-out.
    Release {
        transfer_id: TransferId,
        milestone_id: String,
        amount: Option<Amount>,
        accepted: bool,
        rules: Rules,
        at: DateTime<Utc>,
    },
    /// Freezes `amount` of the milestone until the claim resolves;
    /// `rejection` when the payer rejects the milestone (which answers its
    /// inspection window: closes it before rules 8; since, closes it when
    /// nothing is left open, and needs one open). Under `rules` since
    /// version 3, refused while any window has ended untimed-out.
    Claim {
        claim_id: ClaimId,
        milestone_id: String,
        amount: Amount,
        reason: Option<String>,
        rejection: bool,
        hold_id: HoldId,
        rules: Rules,
        at: DateTime<Utc>,
    },
    /// Resolves a claim, once: its payee side is released (`release_id`),
    /// its payer side refunded (`refund_id`).
    ResolveClaim {
        claim_id: ClaimId,
        outcome: ClaimOutcome,
        release_id: TransferId,
        refund_id: TransferId,
        rules: Rules,
        at: DateTime<Utc>,
    },
    /// Applies the milestone's `on_timeout` outcome once its window
    /// `window` has ended unanswered.
    TimeOut {
        milestone_id: String,
        window: u32,
        transfer_id: TransferId,
        rules: Rules,
        at: DateTime<Utc>,
    },
    /// Refunds every unfrozen held amount and ends the commitment. Under
    /// `rules` since version 5, refused while an inspection window is open
    /// (the payee's submission awaits its answer or its timeout) and once
    /// the commitment is completed.
    Cancel {
        transfer_id: TransferId,
        rules: Rules,
        at: DateTime<Utc>,
    },
    /// At its expiry: times out every window that ended before it and
    /// has not timed out yet (each milestone's by its transfer in
    /// `timeouts`: a milestone has one window open at a time), then
    /// refunds every unfrozen held amount and ends it.
    Expire {
        transfer_id: TransferId,
        timeouts: Vec<(String, TransferId)>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitmentEvent {
    CommitmentCreated {
        terms: CommitmentTerms,
        /// Its expiry first times out every window that ended before it
        /// (created under rules 2 or later; the scheduler's expiry names
        /// the transfers to).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        expiry_times_out: bool,
        at: DateTime<Utc>,
    },
    Deposited {
        deposit_id: DepositId,
        amount: Amount,
        reference: Option<String>,
        at: DateTime<Utc>,
    },
    /// The milestone's window `window` opened, until `ends_at`; with the
    /// commitment's parties, so that the timeout it schedules can name the
    /// accounts it moves money on.
    MilestoneSubmitted {
        milestone_id: String,
        window: u32,
        ends_at: DateTime<Utc>,
        payer: String,
        payee: String,
        asset: crate::money::Asset,
        at: DateTime<Utc>,
    },
    /// The milestone's inspection window `window` closed: answered, timed
    /// out, ended with the commitment, or (since rules 8) nothing of the
    /// milestone left open.
    InspectionClosed {
        milestone_id: String,
        window: u32,
        at: DateTime<Utc>,
    },
    /// Money left the held funds: to the payee or back to the payer.
    Transferred(Transfer),
    ClaimOpened {
        claim_id: ClaimId,
        milestone_id: String,
        amount: Amount,
        reason: Option<String>,
        rejection: bool,
        hold_id: HoldId,
        at: DateTime<Utc>,
    },
    ClaimResolved {
        claim_id: ClaimId,
        resolution: Resolution,
    },
    CommitmentCanceled {
        at: DateTime<Utc>,
    },
    CommitmentExpired {
        at: DateTime<Utc>,
    },
    /// Nothing of the commitment is left to move: every milestone released
    /// or refunded whole, nothing frozen. Recorded, since rules 9, by the
    /// decision that completed it (a release, a claim's resolution, a
    /// timeout), after its transfers; it settles the commitment's expiry.
    CommitmentCompleted {
        at: DateTime<Utc>,
    },
}

impl DomainEvent for CommitmentEvent {
    fn event_type(&self) -> String {
        match self {
            Self::CommitmentCreated { .. } => "CommitmentCreated",
            Self::Deposited { .. } => "Deposited",
            Self::MilestoneSubmitted { .. } => "MilestoneSubmitted",
            Self::InspectionClosed { .. } => "InspectionClosed",
            Self::Transferred(_) => "Transferred",
            Self::ClaimOpened { .. } => "ClaimOpened",
            Self::ClaimResolved { .. } => "ClaimResolved",
            Self::CommitmentCanceled { .. } => "CommitmentCanceled",
            Self::CommitmentExpired { .. } => "CommitmentExpired",
            Self::CommitmentCompleted { .. } => "CommitmentCompleted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Commitment {
    fn sum<T>(items: &[T], amount: impl Fn(&T) -> Amount) -> Result<Amount, AmountError> {
        items
            .iter()
            .try_fold(Amount::ZERO, |sum, item| sum.checked_add(amount(item)))
    }

    /// Deposited in all.
    pub fn funded(&self) -> Result<Amount, AmountError> {
        Self::sum(&self.deposits, |deposit| deposit.amount)
    }

    /// What the deposits still hold: deposited less released and refunded.
    pub fn held(&self) -> Result<Amount, AmountError> {
        self.deposits.iter().try_fold(Amount::ZERO, |sum, deposit| {
            sum.checked_add(deposit.remaining()?)
        })
    }

    /// Frozen by open claims.
    pub fn frozen(&self) -> Result<Amount, AmountError> {
        Self::sum(&self.milestones, |milestone| milestone.frozen)
    }

    /// Held and not frozen: what a release or refund may take.
    pub fn unfrozen(&self) -> Result<Amount, AmountError> {
        self.held()?.checked_sub(self.frozen()?)
    }

    /// Transferred in `direction`, in all.
    pub fn transferred(&self, direction: Direction) -> Result<Amount, AmountError> {
        self.transfers
            .iter()
            .filter(|transfer| transfer.direction == direction)
            .try_fold(Amount::ZERO, |sum, transfer| {
                sum.checked_add(transfer.amount)
            })
    }

    pub fn milestone(&self, milestone_id: &str) -> Option<&Milestone> {
        self.milestones
            .iter()
            .find(|milestone| milestone.terms.milestone_id == milestone_id)
    }

    fn milestone_mut(&mut self, milestone_id: &str) -> Option<&mut Milestone> {
        self.milestones
            .iter_mut()
            .find(|milestone| milestone.terms.milestone_id == milestone_id)
    }

    pub fn claim(&self, claim_id: ClaimId) -> Option<&Claim> {
        self.claims.iter().find(|claim| claim.claim_id == claim_id)
    }

    /// Where the commitment stands; `None` before it is created.
    pub fn status(&self) -> Option<CommitmentStatus> {
        let terms = self.terms.as_ref()?;
        if self.canceled_at.is_some() {
            return Some(CommitmentStatus::Canceled);
        }
        if self.expired_at.is_some() {
            return Some(CommitmentStatus::Expired);
        }
        let settled = self
            .milestones
            .iter()
            .all(|milestone| milestone.open().is_ok_and(|open| open.is_zero()))
            && self.frozen().is_ok_and(|frozen| frozen.is_zero());
        if settled {
            return Some(CommitmentStatus::Completed);
        }
        Some(if self.funded().ok()? >= terms.total().ok()? {
            CommitmentStatus::Funded
        } else {
            CommitmentStatus::AwaitingFunding
        })
    }
}

impl Aggregate for Commitment {
    const TYPE: &'static str = COMMITMENT_AGGREGATE;
    type Command = CommitmentCommand;
    type Event = CommitmentEvent;
    type Error = EscrowError;
    type Services = ();

    async fn handle(
        &mut self,
        command: CommitmentCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), EscrowError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: CommitmentEvent) {
        match event {
            CommitmentEvent::CommitmentCreated { terms, at, .. } => {
                self.milestones = terms
                    .milestones
                    .iter()
                    .map(|terms| Milestone {
                        terms: terms.clone(),
                        released: Amount::ZERO,
                        refunded: Amount::ZERO,
                        frozen: Amount::ZERO,
                        window: None,
                    })
                    .collect();
                self.terms = Some(terms);
                self.created_at = Some(at);
            }
            CommitmentEvent::Deposited {
                deposit_id,
                amount,
                reference,
                at,
            } => self.deposits.push(Deposit {
                deposit_id,
                amount,
                reference,
                at,
                drawn: Amount::ZERO,
            }),
            CommitmentEvent::MilestoneSubmitted {
                milestone_id,
                window,
                ends_at,
                at,
                ..
            } => {
                if let Some(milestone) = self.milestone_mut(&milestone_id) {
                    milestone.window = Some(Window {
                        number: window,
                        submitted_at: at,
                        ends_at,
                        closed: false,
                    });
                }
            }
            CommitmentEvent::InspectionClosed { milestone_id, .. } => {
                if let Some(window) = self
                    .milestone_mut(&milestone_id)
                    .and_then(|milestone| milestone.window.as_mut())
                {
                    window.closed = true;
                }
            }
            CommitmentEvent::Transferred(transfer) => self.apply_transfer(transfer),
            CommitmentEvent::ClaimOpened {
                claim_id,
                milestone_id,
                amount,
                reason,
                rejection,
                hold_id,
                at,
            } => {
                if let Some(milestone) = self.milestone_mut(&milestone_id) {
                    add(&mut milestone.frozen, amount);
                }
                self.claims.push(Claim {
                    claim_id,
                    milestone_id,
                    amount,
                    reason,
                    rejection,
                    hold_id,
                    opened_at: at,
                    resolution: None,
                });
            }
            CommitmentEvent::ClaimResolved {
                claim_id,
                resolution,
            } => {
                if let Some(claim) = self
                    .claims
                    .iter_mut()
                    .find(|claim| claim.claim_id == claim_id)
                {
                    claim.resolution = Some(resolution);
                }
            }
            CommitmentEvent::CommitmentCanceled { at } => self.canceled_at = Some(at),
            CommitmentEvent::CommitmentExpired { at } => self.expired_at = Some(at),
            // Its status says as much already: the milestones moved.
            CommitmentEvent::CommitmentCompleted { .. } => {}
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

impl Commitment {
    /// A release or refund: drawn from its deposits, off its milestone's
    /// frozen amount when a claim resolved it.
    fn apply_transfer(&mut self, transfer: Transfer) {
        for draw in &transfer.lineage {
            if let Some(deposit) = self
                .deposits
                .iter_mut()
                .find(|deposit| deposit.deposit_id == draw.deposit_id)
            {
                add(&mut deposit.drawn, draw.amount);
            }
        }
        let claimed = matches!(transfer.cause, Cause::Claim { .. });
        if let Some(milestone_id) = &transfer.milestone_id {
            if let Some(milestone) = self.milestone_mut(milestone_id) {
                if claimed {
                    sub(&mut milestone.frozen, transfer.amount);
                }
                match transfer.direction {
                    Direction::Release => add(&mut milestone.released, transfer.amount),
                    Direction::Refund => add(&mut milestone.refunded, transfer.amount),
                }
            }
        }
        self.transfers.push(transfer);
    }
}
