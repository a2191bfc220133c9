//! Why a commitment refuses a command: each late or repeated action has its
//! own code.

use crate::decide::{Rejection, RejectionKind};
use crate::ids::ClaimId;
use crate::money::{Amount, AmountError};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscrowError {
    #[error("the commitment exists already")]
    Exists,
    #[error("no such commitment")]
    Unknown,
    #[error("invalid terms: {0}")]
    InvalidTerms(String),
    #[error("amounts are positive")]
    NonPositive,
    #[error("the commitment was canceled")]
    Canceled,
    #[error("the commitment expired")]
    Expired,
    #[error("the commitment expires at {expires_at}, not before")]
    NotExpired { expires_at: DateTime<Utc> },
    #[error("deposits would reach {funded}, beyond the commitment's {total}")]
    Overfunded { total: Amount, funded: Amount },
    #[error("no milestone {0}")]
    UnknownMilestone(String),
    #[error("milestone {0} is released or refunded in full")]
    MilestoneSettled(String),
    #[error("what is left of milestone {milestone_id} ({frozen}) is frozen by an open claim")]
    MilestoneFrozen {
        milestone_id: String,
        frozen: Amount,
    },
    #[error(
        "the inspection window would end at {ends_at}, not before the commitment expires at {expires_at}"
    )]
    WindowPastExpiry {
        ends_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    #[error("{open} of the milestone is open: {asked} cannot be")]
    ExceedsMilestone { open: Amount, asked: Amount },
    #[error("{unfrozen} is held and not frozen: {asked} cannot be")]
    InsufficientUnfrozen { unfrozen: Amount, asked: Amount },
    #[error("the milestone's inspection window is open until {ends_at}")]
    InspectionWindowOpen { ends_at: DateTime<Utc> },
    #[error("the milestone has no open inspection window")]
    NoInspectionWindow,
    #[error("the milestone's inspection window ended at {ends_at}: its timeout decides")]
    InspectionWindowEnded { ends_at: DateTime<Utc> },
    #[error("the commitment is completed: nothing is left to expire")]
    Completed,
    #[error("no claim {0}")]
    UnknownClaim(ClaimId),
    #[error("the claim is resolved already")]
    ClaimResolved,
    #[error("a split gives the payee 0 to 10000 basis points")]
    InvalidSplit,
    #[error("the id is taken")]
    IdTaken,
    #[error("the commitment has {max} of them already")]
    TooMany { max: usize },
    #[error(transparent)]
    Amount(#[from] AmountError),
}

impl Rejection for EscrowError {
    fn kind(&self) -> RejectionKind {
        match self {
            Self::Unknown | Self::UnknownMilestone(_) | Self::UnknownClaim(_) => {
                RejectionKind::NotFound
            }
            // Terms no schema states (unique milestone ids, due dates
            // before the expiry) break a rule: 422.
            Self::NonPositive | Self::InvalidSplit => RejectionKind::Invalid,
            _ => RejectionKind::RuleBroken,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Exists => "commitment_exists",
            Self::Unknown => "unknown_commitment",
            Self::InvalidTerms(_) => "invalid_terms",
            Self::NonPositive => "invalid_amount",
            Self::Canceled => "commitment_canceled",
            Self::Expired => "commitment_expired",
            Self::NotExpired { .. } => "commitment_not_expired",
            Self::Overfunded { .. } => "overfunded",
            Self::UnknownMilestone(_) => "unknown_milestone",
            Self::MilestoneSettled(_) => "milestone_already_released",
            Self::MilestoneFrozen { .. } => "milestone_frozen",
            Self::WindowPastExpiry { .. } => "inspection_window_past_expiry",
            Self::ExceedsMilestone { .. } => "release_exceeds_milestone",
            Self::InsufficientUnfrozen { .. } => "insufficient_unfrozen_funds",
            Self::InspectionWindowOpen { .. } => "inspection_window_open",
            Self::NoInspectionWindow => "no_inspection_window",
            Self::InspectionWindowEnded { .. } => "inspection_window_ended",
            Self::Completed => "commitment_completed",
            Self::UnknownClaim(_) => "unknown_claim",
            Self::ClaimResolved => "claim_already_resolved",
            Self::InvalidSplit => "invalid_split",
            Self::IdTaken => "id_taken",
            Self::TooMany { .. } => "too_many",
            Self::Amount(_) => "amount_overflow",
        }
    }

    fn details(&self) -> Value {
        match self {
            Self::Overfunded { total, funded } => json!({"total": total, "funded": funded}),
            Self::ExceedsMilestone { open, asked } => json!({"open": open, "asked": asked}),
            Self::InsufficientUnfrozen { unfrozen, asked } => {
                json!({"unfrozen": unfrozen, "asked": asked})
            }
            Self::InspectionWindowOpen { ends_at } | Self::InspectionWindowEnded { ends_at } => {
                json!({"ends_at": ends_at})
            }
            Self::NotExpired { expires_at } => json!({"expires_at": expires_at}),
            Self::TooMany { max } => json!({"max": max}),
            Self::UnknownMilestone(milestone) => json!({"milestone_id": milestone}),
            Self::MilestoneSettled(milestone) => json!({"milestone_id": milestone}),
            Self::MilestoneFrozen {
                milestone_id,
                frozen,
            } => json!({"milestone_id": milestone_id, "frozen": frozen}),
            Self::WindowPastExpiry {
                ends_at,
                expires_at,
            } => json!({"ends_at": ends_at, "expires_at": expires_at}),
            _ => Value::Null,
        }
    }
}
