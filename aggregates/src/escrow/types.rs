//! What a commitment is made of: its terms and milestones, its deposits
//! (lots, drawn in the commitment's order), its transfers (releases to the
//! payee, refunds to the payer) with their allocation lineage, and its
//! claims.

use crate::ids::{ClaimId, DepositId, HoldId, TransferId};
use crate::money::{Amount, AmountError, Asset};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most milestones one commitment has.
pub const MILESTONES_MAX: usize = 50;

/// Most deposits, transfers or claims one commitment takes, each.
pub const ENTRIES_MAX: usize = 500;

/// Longest inspection window: 90 days.
pub const INSPECTION_SECONDS_MAX: i64 = 90 * 86_400;

/// The order deposits are drawn in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = AllocationOrder)]
pub enum Allocation {
    /// Oldest first.
    #[default]
    Fifo,
    /// Newest first.
    Lifo,
}

/// Which way money goes: to the payee (a release) or back to the payer
/// (a refund).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Release,
    Refund,
}

/// A milestone as agreed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MilestoneTerms {
    pub milestone_id: String,
    pub amount: Amount,
    /// When the payee is due to submit the milestone's work, on or before
    /// the commitment's `expires_at`. It is the agreed date, shown to both
    /// sides and compared with each window's `submitted_at`; it moves no
    /// money by itself: a late submission is still inspected, and
    /// `expires_at` is what ends the commitment.
    pub due_at: Option<DateTime<Utc>>,
    /// How long the payer has to answer once the milestone is submitted.
    pub inspection_seconds: i64,
    /// What happens when the window ends unanswered.
    pub on_timeout: Direction,
}

/// A commitment as agreed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommitmentTerms {
    pub payer: String,
    pub payee: String,
    pub asset: Asset,
    pub allocation: Allocation,
    pub milestones: Vec<MilestoneTerms>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl CommitmentTerms {
    /// What the milestones add up to.
    pub fn total(&self) -> Result<Amount, AmountError> {
        self.milestones
            .iter()
            .try_fold(Amount::ZERO, |sum, milestone| {
                sum.checked_add(milestone.amount)
            })
    }
}

/// How much of one deposit a transfer drew.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Draw {
    pub deposit_id: DepositId,
    pub amount: Amount,
}

/// One deposit: a lot of the held funds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Deposit {
    pub deposit_id: DepositId,
    pub amount: Amount,
    pub reference: Option<String>,
    pub at: DateTime<Utc>,
    /// Drawn by transfers so far.
    pub drawn: Amount,
}

impl Deposit {
    /// What is left of it.
    pub fn remaining(&self) -> Result<Amount, AmountError> {
        self.amount.checked_sub(self.drawn)
    }
}

/// An inspection window of a submitted milestone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Window {
    /// Its place among the milestone's windows, from 1 (a milestone
    /// released in part may be submitted again).
    pub number: u32,
    pub submitted_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Answered (accepted, rejected; since rules 8, whole, or nothing of
    /// the milestone left open by whatever moved it), timed out, or ended
    /// with the commitment.
    pub closed: bool,
}

/// A milestone and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Milestone {
    #[serde(flatten)]
    pub terms: MilestoneTerms,
    pub released: Amount,
    pub refunded: Amount,
    /// Frozen by open claims.
    pub frozen: Amount,
    /// Its last inspection window.
    pub window: Option<Window>,
}

impl Milestone {
    /// What is neither released, refunded nor frozen.
    pub fn open(&self) -> Result<Amount, AmountError> {
        self.terms
            .amount
            .checked_sub(self.released)?
            .checked_sub(self.refunded)?
            .checked_sub(self.frozen)
    }

    /// Whether its inspection window is open (submitted, unanswered).
    pub fn in_inspection(&self) -> bool {
        self.window.as_ref().is_some_and(|window| !window.closed)
    }
}

/// Why money moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "cause")]
pub enum Cause {
    /// Released by hand.
    Released,
    /// The payer accepted the milestone.
    Accepted,
    /// Its inspection window ended unanswered.
    TimedOut,
    /// A claim resolved.
    Claim { claim_id: ClaimId },
    /// The commitment was canceled.
    Canceled,
    /// The commitment expired.
    Expired,
}

/// A release to the payee or a refund to the payer, with the deposits it
/// drew from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Transfer {
    pub transfer_id: TransferId,
    pub direction: Direction,
    /// The milestone it settles (none for a cancel's or an expiry's refund).
    pub milestone_id: Option<String>,
    pub amount: Amount,
    pub lineage: Vec<Draw>,
    #[serde(flatten)]
    pub cause: Cause,
    pub at: DateTime<Utc>,
}

/// How a claim is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ClaimOutcome {
    /// All to the payee.
    Release,
    /// All back to the payer.
    Refund,
    /// `payee_bps` basis points to the payee, the rest to the payer.
    Split { payee_bps: u16 },
}

/// What a claim resolved into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = ClaimResolution)]
pub struct Resolution {
    #[serde(flatten)]
    pub outcome: ClaimOutcome,
    pub to_payee: Amount,
    pub to_payer: Amount,
    pub at: DateTime<Utc>,
}

/// A claim freezing part of a milestone until it resolves, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Claim {
    pub claim_id: ClaimId,
    pub milestone_id: String,
    pub amount: Amount,
    pub reason: Option<String>,
    /// Opened by rejecting the milestone.
    pub rejection: bool,
    /// The journal hold freezing it on the commitment's held account.
    pub hold_id: HoldId,
    pub opened_at: DateTime<Utc>,
    pub resolution: Option<Resolution>,
}

/// Where a commitment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommitmentStatus {
    /// Deposits are below the total.
    AwaitingFunding,
    /// Deposits reached the total.
    Funded,
    /// Every milestone released or refunded in full, nothing frozen.
    Completed,
    Canceled,
    Expired,
}
