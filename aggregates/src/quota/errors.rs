//! Why a quota command is refused, and how each refusal is classified.

use super::{QuotaAccount, QuotaType, OPEN_GRANTS_MAX, PRIORITY_MAX};
use crate::decide::{Rejection, RejectionKind};
use crate::ids::GrantId;
use crate::journal::{BalanceError, JournalError};
use crate::money::AmountError;
use serde_json::json;

/// Why a quota command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("not enough {quota}: requested {requested}, available {available}")]
    QuotaExceeded {
        quota: QuotaType,
        requested: i64,
        available: i64,
    },
    #[error("amount must be a positive integer")]
    AmountNotPositive,
    #[error("no grant {0}")]
    UnknownGrant(GrantId),
    #[error("grant {0} already exists")]
    GrantExists(GrantId),
    #[error("grant {grant_id} is {status} already")]
    GrantClosed {
        grant_id: GrantId,
        status: &'static str,
    },
    #[error("grant {0} comes with the subscription; change or cancel the plan instead")]
    SubscriptionGrant(GrantId),
    #[error("priority must be 0 to {PRIORITY_MAX}")]
    InvalidPriority,
    #[error("expires_at must be after effective_at")]
    ExpiryBeforeEffect,
    #[error("expires_at must be in the future")]
    ExpiryInThePast,
    #[error("seats are allocated and released, not consumed")]
    SeatsAreNotConsumed,
    #[error("only seats are allocated and released")]
    OnlySeatsAllocate,
    #[error("cannot release {requested} seats: {allocated} allocated")]
    ReleaseExceedsAllocated { requested: i64, allocated: i64 },
    #[error("this quota holds {expected}, not {requested}")]
    WrongQuota {
        expected: QuotaType,
        requested: QuotaType,
    },
    #[error("this quota belongs to {expected}, not {requested}")]
    WrongHolder { expected: String, requested: String },
    #[error("reference {0}")]
    InvalidReference(crate::text::TextError),
    #[error(transparent)]
    TimeOutOfRange(#[from] crate::time::TimeOutOfRange),
    #[error("a quota holds at most {OPEN_GRANTS_MAX} open grants")]
    TooManyGrants,
    #[error(
        "the amounts would pass the largest total a quota or journal account can hold ({})",
        i64::MAX
    )]
    Overflow,
    #[error("the journal entry would overdraw account {0}")]
    Overdraft(String),
}

impl From<AmountError> for QuotaError {
    fn from(_: AmountError) -> Self {
        Self::Overflow
    }
}

impl From<JournalError> for QuotaError {
    fn from(_: JournalError) -> Self {
        // Entries built here balance by construction; only overflow can fail.
        Self::Overflow
    }
}

impl From<BalanceError> for QuotaError {
    fn from(error: BalanceError) -> Self {
        match error {
            BalanceError::Amount(_) => Self::Overflow,
            // Draws never exceed a grant's balance, so this is a safety net:
            // refuse rather than record what verify would refuse.
            BalanceError::Overdraft { account, .. } => Self::Overdraft(account),
        }
    }
}

impl Rejection for QuotaError {
    fn kind(&self) -> RejectionKind {
        match self {
            Self::QuotaExceeded { .. } => RejectionKind::QuotaExceeded,
            Self::UnknownGrant(_) => RejectionKind::NotFound,
            Self::AmountNotPositive
            | Self::InvalidPriority
            | Self::SeatsAreNotConsumed
            | Self::OnlySeatsAllocate
            | Self::WrongQuota { .. }
            | Self::WrongHolder { .. }
            | Self::InvalidReference(_)
            | Self::TimeOutOfRange(_) => RejectionKind::Invalid,
            Self::GrantExists(_)
            | Self::ExpiryBeforeEffect
            | Self::GrantClosed { .. }
            | Self::SubscriptionGrant(_)
            | Self::ExpiryInThePast
            | Self::ReleaseExceedsAllocated { .. }
            | Self::TooManyGrants
            | Self::Overflow
            | Self::Overdraft(_) => RejectionKind::RuleBroken,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::AmountNotPositive => "invalid_amount",
            Self::UnknownGrant(_) => "grant_not_found",
            Self::GrantExists(_) => "grant_exists",
            Self::GrantClosed { .. } => "grant_closed",
            Self::SubscriptionGrant(_) => "subscription_grant",
            Self::InvalidPriority => "invalid_priority",
            Self::ExpiryBeforeEffect => "invalid_expiry",
            Self::ExpiryInThePast => "expiry_in_the_past",
            Self::SeatsAreNotConsumed => "seats_not_consumable",
            Self::OnlySeatsAllocate => "not_seats",
            Self::ReleaseExceedsAllocated { .. } => "release_exceeds_allocated",
            Self::WrongQuota { .. } => "wrong_quota",
            Self::WrongHolder { .. } => "wrong_holder",
            Self::InvalidReference(_) => "invalid_reference",
            Self::TimeOutOfRange(_) => "time_out_of_range",
            Self::TooManyGrants => "too_many_grants",
            Self::Overflow => "amount_overflow",
            Self::Overdraft(_) => "account_overdraft",
        }
    }

    fn details(&self) -> serde_json::Value {
        match self {
            Self::QuotaExceeded {
                quota,
                requested,
                available,
            } => {
                json!({"quota": quota, "requested": requested, "available": available})
            }
            Self::ReleaseExceedsAllocated {
                requested,
                allocated,
            } => {
                json!({"requested": requested, "allocated": allocated})
            }
            Self::UnknownGrant(grant_id)
            | Self::GrantExists(grant_id)
            | Self::SubscriptionGrant(grant_id) => {
                json!({"grant_id": grant_id})
            }
            Self::GrantClosed { grant_id, status } => {
                json!({"grant_id": grant_id, "status": status})
            }
            Self::Overflow => json!({"max": i64::MAX}),
            Self::Overdraft(account) => json!({"account": account}),
            Self::TimeOutOfRange(error) => json!({"field": error.field}),
            _ => serde_json::Value::Null,
        }
    }
}

/// A holder as refusals name it: its account, or "the tenant".
pub fn holder_name(holder: Option<&QuotaAccount>) -> String {
    holder.map_or_else(
        || "the tenant".to_string(),
        |account| account.as_str().to_string(),
    )
}
