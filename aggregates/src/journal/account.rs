//! A ledger account as an aggregate: opened once with its type and flags,
//! it keeps its own balances per asset, posted and pending, and enforces its
//! flags on every posting and reservation, whichever request or domain
//! makes it.
//!
//! A request that posts to a flagged account shared by several aggregates
//! (a processor's receivable, an escrow's held balance) names the account
//! among its targets, so the pipeline loads it and the append's version
//! check keeps it consistent under concurrent requests: its flags hold
//! across the tenant. Pending amounts count against the flags at once
//! (pessimistic): a reservation that could break a flag if it were posted
//! is refused when it is made.

use super::{AccountFlags, AccountType, Side};
use crate::decide::{handle_by_deciding, Decide, Rejection, RejectionKind};
use crate::ids::{EntryId, HoldId};
use crate::money::{Amount, AmountError, Asset, Total};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Aggregate type of ledger accounts; the aggregate id is the account code.
pub const ACCOUNT_AGGREGATE: &str = "account";

/// Longest account code, in characters.
pub const ACCOUNT_CODE_LENGTH_MAX: usize = 200;

/// An account's code: 1-200 of `A-Z a-z 0-9 _ . : @ / -` (`receivable:acme`,
/// `escrow_held:0190…`, `grant:0190…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountCode(String);

/// Why a text is not an account code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid account code {0:?}: 1-200 characters of A-Z, a-z, 0-9, _, ., :, @, / and -")]
pub struct InvalidAccountCode(pub String);

impl AccountCode {
    pub fn parse(text: &str) -> Result<Self, InvalidAccountCode> {
        let valid = (1..=ACCOUNT_CODE_LENGTH_MAX).contains(&text.len())
            && text.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '@' | '/' | '-')
            });
        if valid {
            Ok(Self(text.to_string()))
        } else {
            Err(InvalidAccountCode(text.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AccountCode {
    type Error = InvalidAccountCode;

    fn try_from(text: String) -> Result<Self, InvalidAccountCode> {
        Self::parse(&text)
    }
}

impl From<AccountCode> for String {
    fn from(code: AccountCode) -> Self {
        code.0
    }
}

impl fmt::Display for AccountCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an account is opened as; fixed for its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccountSpec {
    #[serde(rename = "type")]
    pub account_type: AccountType,
    #[serde(default)]
    pub flags: AccountFlags,
}

impl AccountSpec {
    pub fn new(account_type: AccountType) -> Self {
        Self {
            account_type,
            flags: AccountFlags::default(),
        }
    }

    /// Total debits never exceed posted credits.
    pub fn debits_must_not_exceed_credits(mut self) -> Self {
        self.flags.debits_must_not_exceed_credits = true;
        self
    }

    /// Total credits never exceed posted debits.
    pub fn credits_must_not_exceed_debits(mut self) -> Self {
        self.flags.credits_must_not_exceed_debits = true;
        self
    }
}

/// What an account holds in one asset. Pending amounts are reserved by
/// holds and become posted or are released when the hold resolves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountBalance {
    pub debits_posted: Total,
    pub credits_posted: Total,
    pub debits_pending: Total,
    pub credits_pending: Total,
}

impl AccountBalance {
    /// What the account can still give on its normal side
    /// ([`AccountType::available`]).
    pub fn available(&self, account_type: AccountType) -> i128 {
        let value = Total::value;
        account_type.available(
            value(self.debits_posted),
            value(self.credits_posted),
            value(self.debits_pending),
            value(self.credits_pending),
        )
    }
}

/// Amounts on one side or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    pub debit: Amount,
    pub credit: Amount,
}

impl Movement {
    /// `amount` on `side`.
    pub fn on(side: Side, amount: Amount) -> Self {
        match side {
            Side::Debit => Self {
                debit: amount,
                credit: Amount::ZERO,
            },
            Side::Credit => Self {
                debit: Amount::ZERO,
                credit: amount,
            },
        }
    }

    fn is_zero(&self) -> bool {
        self.debit.is_zero() && self.credit.is_zero()
    }
}

/// A ledger account's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerAccount {
    /// `None` before it is opened.
    pub spec: Option<AccountSpec>,
    pub balances: BTreeMap<Asset, AccountBalance>,
    /// What each open hold reserves here, in its asset.
    pub holds: BTreeMap<HoldId, (Asset, Movement)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccountCommand {
    /// Opens the account `code` (the aggregate's id); opening it again as
    /// the same is nothing.
    Open {
        code: AccountCode,
        spec: AccountSpec,
    },
    /// Posts an entry's amounts on this account.
    Post {
        entry_id: EntryId,
        asset: Asset,
        movement: Movement,
    },
    /// Reserves a hold's amounts (pending).
    Reserve {
        hold_id: HoldId,
        asset: Asset,
        movement: Movement,
    },
    /// Resolves a hold here: `posted` (at most what it reserved, side by
    /// side) becomes posted, the rest is released.
    Settle { hold_id: HoldId, posted: Movement },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    AccountOpened {
        spec: AccountSpec,
    },
    Posted {
        entry_id: EntryId,
        asset: Asset,
        movement: Movement,
    },
    Reserved {
        hold_id: HoldId,
        asset: Asset,
        movement: Movement,
    },
    HoldSettled {
        hold_id: HoldId,
        posted: Movement,
        released: Movement,
    },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AccountOpened { .. } => "AccountOpened",
            Self::Posted { .. } => "Posted",
            Self::Reserved { .. } => "Reserved",
            Self::HoldSettled { .. } => "HoldSettled",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("the account is not opened")]
    NotOpened,
    #[error("the account is opened as {opened:?}, not {asked:?}")]
    OpenedOtherwise {
        opened: AccountSpec,
        asked: AccountSpec,
    },
    #[error("account code {0} belongs to the quota domain")]
    ReservedCode(String),
    #[error("nothing to post: every amount is zero")]
    NothingToPost,
    /// `available`: what the account had available before the refused
    /// change.
    #[error(
        "{asset}: debits would exceed credits, which the account forbids (available {available})"
    )]
    DebitsExceedCredits { asset: String, available: i128 },
    #[error(
        "{asset}: credits would exceed debits, which the account forbids (available {available})"
    )]
    CreditsExceedDebits { asset: String, available: i128 },
    #[error("hold {0} already reserves on this account")]
    HoldExists(HoldId),
    #[error("hold {0} reserves nothing on this account")]
    UnknownHold(HoldId),
    #[error("hold {hold_id}: posting more than it reserves")]
    PostExceedsHold { hold_id: HoldId },
    #[error(transparent)]
    Amount(#[from] AmountError),
}

impl Rejection for AccountError {
    fn kind(&self) -> RejectionKind {
        match self {
            Self::NotOpened | Self::UnknownHold(_) => RejectionKind::NotFound,
            Self::NothingToPost => RejectionKind::Invalid,
            _ => RejectionKind::RuleBroken,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NotOpened => "account_not_opened",
            Self::OpenedOtherwise { .. } => "account_opened_otherwise",
            Self::NothingToPost => "nothing_to_post",
            Self::ReservedCode(_) => "account_code_reserved",
            Self::DebitsExceedCredits { .. } => "debits_exceed_credits",
            Self::CreditsExceedDebits { .. } => "credits_exceed_debits",
            Self::HoldExists(_) => "hold_exists",
            Self::UnknownHold(_) => "unknown_hold",
            Self::PostExceedsHold { .. } => "post_exceeds_hold",
            Self::Amount(_) => "amount_overflow",
        }
    }

    fn details(&self) -> serde_json::Value {
        match self {
            Self::DebitsExceedCredits { asset, available }
            | Self::CreditsExceedDebits { asset, available } => {
                serde_json::json!({"asset": asset, "available": available.to_string()})
            }
            _ => serde_json::Value::Null,
        }
    }
}

impl LedgerAccount {
    fn opened(&self) -> Result<AccountSpec, AccountError> {
        self.spec.ok_or(AccountError::NotOpened)
    }

    /// The balance in `asset` (zero when never posted).
    pub fn balance(&self, asset: &Asset) -> AccountBalance {
        self.balances.get(asset).copied().unwrap_or_default()
    }

    /// `balance` after `change`, refused when it breaks a flag.
    fn checked(
        &self,
        asset: &Asset,
        change: impl FnOnce(&mut AccountBalance) -> Result<(), AmountError>,
    ) -> Result<AccountBalance, AccountError> {
        let spec = self.opened()?;
        let mut balance = self.balance(asset);
        // What was available before the change, for the refusal.
        let available = balance.available(spec.account_type);
        change(&mut balance)?;
        let debits = balance.debits_posted.plus(balance.debits_pending)?;
        let credits = balance.credits_posted.plus(balance.credits_pending)?;
        if spec.flags.debits_must_not_exceed_credits && debits > balance.credits_posted {
            return Err(AccountError::DebitsExceedCredits {
                asset: asset.to_string(),
                available,
            });
        }
        if spec.flags.credits_must_not_exceed_debits && credits > balance.debits_posted {
            return Err(AccountError::CreditsExceedDebits {
                asset: asset.to_string(),
                available,
            });
        }
        Ok(balance)
    }

    fn decide_open(
        &self,
        code: &AccountCode,
        spec: AccountSpec,
    ) -> Result<Vec<AccountEvent>, AccountError> {
        if crate::quota::is_quota_account(code.as_str()) {
            return Err(AccountError::ReservedCode(code.to_string()));
        }
        match self.spec {
            None => Ok(vec![AccountEvent::AccountOpened { spec }]),
            Some(opened) if opened == spec => Ok(Vec::new()),
            Some(opened) => Err(AccountError::OpenedOtherwise {
                opened,
                asked: spec,
            }),
        }
    }

    fn decide_post(
        &self,
        entry_id: EntryId,
        asset: Asset,
        movement: Movement,
    ) -> Result<Vec<AccountEvent>, AccountError> {
        if movement.is_zero() {
            return Err(AccountError::NothingToPost);
        }
        self.checked(&asset, |balance| {
            balance.debits_posted = balance.debits_posted.checked_add(movement.debit)?;
            balance.credits_posted = balance.credits_posted.checked_add(movement.credit)?;
            Ok(())
        })?;
        Ok(vec![AccountEvent::Posted {
            entry_id,
            asset,
            movement,
        }])
    }

    fn decide_reserve(
        &self,
        hold_id: HoldId,
        asset: Asset,
        movement: Movement,
    ) -> Result<Vec<AccountEvent>, AccountError> {
        if movement.is_zero() {
            return Err(AccountError::NothingToPost);
        }
        if self.holds.contains_key(&hold_id) {
            return Err(AccountError::HoldExists(hold_id));
        }
        self.checked(&asset, |balance| {
            balance.debits_pending = balance.debits_pending.checked_add(movement.debit)?;
            balance.credits_pending = balance.credits_pending.checked_add(movement.credit)?;
            Ok(())
        })?;
        Ok(vec![AccountEvent::Reserved {
            hold_id,
            asset,
            movement,
        }])
    }

    fn decide_settle(
        &self,
        hold_id: HoldId,
        posted: Movement,
    ) -> Result<Vec<AccountEvent>, AccountError> {
        let (asset, reserved) = self
            .holds
            .get(&hold_id)
            .ok_or(AccountError::UnknownHold(hold_id))?;
        if posted.debit > reserved.debit || posted.credit > reserved.credit {
            return Err(AccountError::PostExceedsHold { hold_id });
        }
        let released = Movement {
            debit: reserved.debit.checked_sub(posted.debit)?,
            credit: reserved.credit.checked_sub(posted.credit)?,
        };
        // Moving a reservation to posted, or releasing it, never breaks a
        // flag that held with the reservation counted; checked all the same.
        self.checked(asset, |balance| settle(balance, posted, released))?;
        Ok(vec![AccountEvent::HoldSettled {
            hold_id,
            posted,
            released,
        }])
    }
}

/// `posted` of a reservation becomes posted, `posted + released` leaves
/// pending.
fn settle(
    balance: &mut AccountBalance,
    posted: Movement,
    released: Movement,
) -> Result<(), AmountError> {
    balance.debits_pending = balance
        .debits_pending
        .checked_sub(posted.debit)?
        .checked_sub(released.debit)?;
    balance.credits_pending = balance
        .credits_pending
        .checked_sub(posted.credit)?
        .checked_sub(released.credit)?;
    balance.debits_posted = balance.debits_posted.checked_add(posted.debit)?;
    balance.credits_posted = balance.credits_posted.checked_add(posted.credit)?;
    Ok(())
}

impl Aggregate for LedgerAccount {
    const TYPE: &'static str = ACCOUNT_AGGREGATE;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: AccountCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AccountError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: AccountEvent) {
        // Events were decided against this state, so the arithmetic holds;
        // a defect saturates rather than panics.
        match event {
            AccountEvent::AccountOpened { spec } => self.spec = Some(spec),
            AccountEvent::Posted {
                asset, movement, ..
            } => {
                let balance = self.balances.entry(asset).or_default();
                balance.debits_posted = add(balance.debits_posted, movement.debit);
                balance.credits_posted = add(balance.credits_posted, movement.credit);
            }
            AccountEvent::Reserved {
                hold_id,
                asset,
                movement,
            } => {
                let balance = self.balances.entry(asset.clone()).or_default();
                balance.debits_pending = add(balance.debits_pending, movement.debit);
                balance.credits_pending = add(balance.credits_pending, movement.credit);
                self.holds.insert(hold_id, (asset, movement));
            }
            AccountEvent::HoldSettled {
                hold_id,
                posted,
                released,
            } => {
                if let Some((asset, _)) = self.holds.remove(&hold_id) {
                    let balance = self.balances.entry(asset).or_default();
                    let mut next = *balance;
                    if settle(&mut next, posted, released).is_ok() {
                        *balance = next;
                    }
                }
            }
        }
    }
}

fn add(a: Total, b: Amount) -> Total {
    a.checked_add(b).unwrap_or(a)
}

impl Decide for LedgerAccount {
    fn decide(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open { code, spec } => self.decide_open(&code, spec),
            AccountCommand::Post {
                entry_id,
                asset,
                movement,
            } => self.decide_post(entry_id, asset, movement),
            AccountCommand::Reserve {
                hold_id,
                asset,
                movement,
            } => self.decide_reserve(hold_id, asset, movement),
            AccountCommand::Settle { hold_id, posted } => self.decide_settle(hold_id, posted),
        }
    }
}

#[cfg(test)]
mod tests;
