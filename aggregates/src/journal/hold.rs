//! A hold: a pending transfer that reserves its amount and resolves at most
//! once, by posting it (all or part, the rest released), voiding it, or
//! expiring at its expiry time. Every time is the command's own (the time
//! the request is decided at), never a clock read during a replay.
//!
//! The hold is its own aggregate (its id the hold id); the accounts it
//! reserves on keep the pending amounts against their flags
//! ([`super::account`]), and a request resolving the hold settles them in
//! the same append.

use super::account::AccountCode;
use crate::decide::{handle_by_deciding, Decide, Rejection, RejectionKind};
use crate::ids::EntryId;
use crate::money::{Amount, AmountError, Asset};
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// Aggregate type of holds; the aggregate id is the hold id.
pub const HOLD_AGGREGATE: &str = "hold";

/// What a hold would move: `amount` of `asset` from `credit` to `debit`
/// (debiting one account, crediting the other).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTransfer {
    pub debit: AccountCode,
    pub credit: AccountCode,
    pub asset: Asset,
    pub amount: Amount,
}

impl PendingTransfer {
    /// Its two accounts, each with the side the transfer moves on it.
    pub fn sides(&self) -> [(&AccountCode, super::Side); 2] {
        [
            (&self.debit, super::Side::Debit),
            (&self.credit, super::Side::Credit),
        ]
    }
}

/// A placed hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    pub transfer: PendingTransfer,
    /// `None`: it never expires (it is posted or voided).
    pub expires_at: Option<DateTime<Utc>>,
    pub placed_at: DateTime<Utc>,
}

/// How a hold resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "resolution")]
pub enum Resolution {
    Posted {
        entry_id: EntryId,
        amount: Amount,
        at: DateTime<Utc>,
    },
    Voided {
        at: DateTime<Utc>,
    },
    Expired {
        at: DateTime<Utc>,
    },
}

/// A hold's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub placed: Option<Placed>,
    pub resolution: Option<Resolution>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HoldCommand {
    Place {
        transfer: PendingTransfer,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    /// Posts `amount` (all when `None`) as the entry `entry_id`; the rest
    /// is released.
    Post {
        amount: Option<Amount>,
        entry_id: EntryId,
        at: DateTime<Utc>,
    },
    Void {
        at: DateTime<Utc>,
    },
    /// Expires the hold; refused before its expiry time.
    Expire {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldEvent {
    HoldPlaced {
        transfer: PendingTransfer,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    HoldPosted {
        entry_id: EntryId,
        amount: Amount,
        /// What was reserved and is released unposted.
        released: Amount,
        at: DateTime<Utc>,
    },
    HoldVoided {
        released: Amount,
        at: DateTime<Utc>,
    },
    HoldExpired {
        released: Amount,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for HoldEvent {
    fn event_type(&self) -> String {
        match self {
            Self::HoldPlaced { .. } => "HoldPlaced",
            Self::HoldPosted { .. } => "HoldPosted",
            Self::HoldVoided { .. } => "HoldVoided",
            Self::HoldExpired { .. } => "HoldExpired",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    #[error("the hold exists already")]
    Exists,
    #[error("no such hold")]
    Unknown,
    #[error("a hold moves a positive amount between two different accounts")]
    Malformed,
    #[error("the hold's expiry must be after it is placed")]
    ExpiryNotAfterPlacement,
    #[error("the hold was posted already ({amount} of it)")]
    AlreadyPosted { amount: Amount },
    #[error("the hold was voided already")]
    AlreadyVoided,
    #[error("the hold expired at {expires_at}")]
    Expired { expires_at: DateTime<Utc> },
    #[error("cannot post {asked}: the hold reserves {held}")]
    PostExceedsHold { held: Amount, asked: Amount },
    #[error("a hold is posted for a positive amount")]
    NothingToPost,
    #[error("the hold expires at {expires_at}, not before")]
    NotYetExpired { expires_at: DateTime<Utc> },
    #[error("the hold has no expiry")]
    NeverExpires,
    #[error(transparent)]
    TimeOutOfRange(#[from] crate::time::TimeOutOfRange),
    #[error(transparent)]
    Amount(#[from] AmountError),
}

impl Rejection for HoldError {
    fn kind(&self) -> RejectionKind {
        match self {
            Self::Unknown => RejectionKind::NotFound,
            Self::NothingToPost | Self::TimeOutOfRange(_) => RejectionKind::Invalid,
            _ => RejectionKind::RuleBroken,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Exists => "hold_exists",
            Self::Unknown => "unknown_hold",
            Self::Malformed => "invalid_hold",
            Self::ExpiryNotAfterPlacement => "invalid_hold_expiry",
            Self::AlreadyPosted { .. } => "hold_already_posted",
            Self::AlreadyVoided => "hold_already_voided",
            Self::Expired { .. } => "hold_expired",
            Self::PostExceedsHold { .. } => "post_exceeds_hold",
            Self::NothingToPost => "nothing_to_post",
            Self::NotYetExpired { .. } => "hold_not_expired",
            Self::NeverExpires => "hold_never_expires",
            Self::TimeOutOfRange(_) => "time_out_of_range",
            Self::Amount(_) => "amount_overflow",
        }
    }

    fn details(&self) -> serde_json::Value {
        match self {
            Self::AlreadyPosted { amount } => serde_json::json!({ "posted": amount }),
            Self::Expired { expires_at } | Self::NotYetExpired { expires_at } => {
                serde_json::json!({ "expires_at": expires_at })
            }
            Self::PostExceedsHold { held, asked } => {
                serde_json::json!({ "held": held, "asked": asked })
            }
            _ => serde_json::Value::Null,
        }
    }
}

impl Hold {
    /// Nothing when the hold has not resolved; else how it resolved, as the
    /// error every later action answers (whatever the time).
    fn unresolved(&self, placed: &Placed, at: DateTime<Utc>) -> Result<(), HoldError> {
        match &self.resolution {
            Some(Resolution::Posted { amount, .. }) => {
                Err(HoldError::AlreadyPosted { amount: *amount })
            }
            Some(Resolution::Voided { .. }) => Err(HoldError::AlreadyVoided),
            Some(Resolution::Expired { .. }) => Err(HoldError::Expired {
                expires_at: placed.expires_at.unwrap_or(at),
            }),
            None => Ok(()),
        }
    }

    /// The placed hold, if it is still open at `at`: a typed error for each
    /// way it is not.
    fn open_at(&self, at: DateTime<Utc>) -> Result<&Placed, HoldError> {
        let placed = self.placed.as_ref().ok_or(HoldError::Unknown)?;
        self.unresolved(placed, at)?;
        match placed.expires_at {
            Some(expires_at) if at >= expires_at => Err(HoldError::Expired { expires_at }),
            _ => Ok(placed),
        }
    }

    fn decide_place(
        &self,
        transfer: PendingTransfer,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Result<Vec<HoldEvent>, HoldError> {
        if self.placed.is_some() {
            return Err(HoldError::Exists);
        }
        if transfer.amount.is_zero() || transfer.debit == transfer.credit {
            return Err(HoldError::Malformed);
        }
        if let Some(expires_at) = expires_at {
            crate::time::check("expires_at", expires_at)?;
        }
        if expires_at.is_some_and(|expires_at| expires_at <= at) {
            return Err(HoldError::ExpiryNotAfterPlacement);
        }
        Ok(vec![HoldEvent::HoldPlaced {
            transfer,
            expires_at,
            at,
        }])
    }

    fn decide_post(
        &self,
        amount: Option<Amount>,
        entry_id: EntryId,
        at: DateTime<Utc>,
    ) -> Result<Vec<HoldEvent>, HoldError> {
        let held = self.open_at(at)?.transfer.amount;
        let amount = amount.unwrap_or(held);
        if amount.is_zero() {
            return Err(HoldError::NothingToPost);
        }
        if amount > held {
            return Err(HoldError::PostExceedsHold {
                held,
                asked: amount,
            });
        }
        Ok(vec![HoldEvent::HoldPosted {
            entry_id,
            amount,
            released: held.checked_sub(amount)?,
            at,
        }])
    }

    fn decide_void(&self, at: DateTime<Utc>) -> Result<Vec<HoldEvent>, HoldError> {
        let released = self.open_at(at)?.transfer.amount;
        Ok(vec![HoldEvent::HoldVoided { released, at }])
    }

    fn decide_expire(&self, at: DateTime<Utc>) -> Result<Vec<HoldEvent>, HoldError> {
        let placed = self.placed.as_ref().ok_or(HoldError::Unknown)?;
        self.unresolved(placed, at)?;
        let expires_at = placed.expires_at.ok_or(HoldError::NeverExpires)?;
        if at < expires_at {
            return Err(HoldError::NotYetExpired { expires_at });
        }
        Ok(vec![HoldEvent::HoldExpired {
            released: placed.transfer.amount,
            at,
        }])
    }
}

impl Aggregate for Hold {
    const TYPE: &'static str = HOLD_AGGREGATE;
    type Command = HoldCommand;
    type Event = HoldEvent;
    type Error = HoldError;
    type Services = ();

    async fn handle(
        &mut self,
        command: HoldCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), HoldError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: HoldEvent) {
        match event {
            HoldEvent::HoldPlaced {
                transfer,
                expires_at,
                at,
            } => {
                self.placed = Some(Placed {
                    transfer,
                    expires_at,
                    placed_at: at,
                })
            }
            HoldEvent::HoldPosted {
                entry_id,
                amount,
                at,
                ..
            } => {
                self.resolution = Some(Resolution::Posted {
                    entry_id,
                    amount,
                    at,
                })
            }
            HoldEvent::HoldVoided { at, .. } => self.resolution = Some(Resolution::Voided { at }),
            HoldEvent::HoldExpired { at, .. } => self.resolution = Some(Resolution::Expired { at }),
        }
    }
}

impl Decide for Hold {
    fn decide(&self, command: HoldCommand) -> Result<Vec<HoldEvent>, HoldError> {
        match command {
            HoldCommand::Place {
                transfer,
                expires_at,
                at,
            } => self.decide_place(transfer, expires_at, at),
            HoldCommand::Post {
                amount,
                entry_id,
                at,
            } => self.decide_post(amount, entry_id, at),
            HoldCommand::Void { at } => self.decide_void(at),
            HoldCommand::Expire { at } => self.decide_expire(at),
        }
    }
}

#[cfg(test)]
mod tests;
