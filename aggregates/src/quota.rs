//! The quota aggregate: one per (tenant, quota type, quota account), holding
//! its grants and deciding consumption, seat allocation, issue, revocation
//! and expiry.
//!
//! Burn-down order of usable grants: priority (0 first, 100 last), then
//! earliest expiry (grants without expiry last), then promotional before
//! paid, then oldest, then grant id. A consumption may span several grants
//! (one posting per grant) and never overdraws: when the usable total is
//! short of the request, nothing is consumed. Every decision first expires
//! the grants whose expiry has passed at the command's time, posting their
//! unused balance as breakage.

use crate::decide::{handle_by_deciding, Decide, Rejection, RejectionKind};
use crate::ids::GrantId;
use crate::journal::{Account, AccountType, JournalEntry, JournalError, Posting};
use crate::money::{Amount, AmountError, Asset};
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::fmt;

/// Aggregate type of quotas in the event store.
pub const QUOTA_AGGREGATE: &str = "quota";

/// Longest external reference on a consumption.
pub const REFERENCE_LENGTH_MAX: usize = 200;

/// Highest (last-burnt) grant priority.
pub const PRIORITY_MAX: u8 = 100;

/// Default grant priority.
pub const PRIORITY_DEFAULT: u8 = 50;

/// Most grants a quota holds open at once.
pub const OPEN_GRANTS_MAX: usize = 1_000;

/// What a quota measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaType {
    /// An allocation gauge: allocated and released.
    Seats,
    /// Consumable.
    Runs,
    /// Consumable.
    Credits,
}

/// A quota type name the ledger does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown quota type {0:?}; valid types: seats, runs, credits")]
pub struct UnknownQuota(pub String);

impl QuotaType {
    pub const ALL: [Self; 3] = [Self::Seats, Self::Runs, Self::Credits];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seats => "seats",
            Self::Runs => "runs",
            Self::Credits => "credits",
        }
    }

    pub fn parse(text: &str) -> Result<Self, UnknownQuota> {
        Self::ALL
            .into_iter()
            .find(|quota| quota.as_str() == text)
            .ok_or_else(|| UnknownQuota(text.to_string()))
    }

    /// The asset its journal entries are in: `SEATS/0`, `RUNS/0`, `CREDITS/0`.
    pub fn asset(self) -> Asset {
        let code = match self {
            Self::Seats => "SEATS",
            Self::Runs => "RUNS",
            Self::Credits => "CREDITS",
        };
        // Constant, valid codes.
        Asset::new(code, 0).unwrap_or_else(|_| unreachable!("quota assets are valid"))
    }

    /// Whether units are consumed (runs, credits) rather than allocated (seats).
    pub fn is_consumable(self) -> bool {
        self != Self::Seats
    }
}

impl fmt::Display for QuotaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who holds a quota inside a tenant: the tenant itself (`None`), or one of
/// its own accounts (an end user, a project): 1-64 of `A-Za-z0-9_.-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QuotaAccount(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quota account {0:?}: 1-64 characters of A-Z, a-z, 0-9, _, . and -")]
pub struct InvalidQuotaAccount(pub String);

impl QuotaAccount {
    pub fn parse(text: &str) -> Result<Self, InvalidQuotaAccount> {
        let valid = (1..=64).contains(&text.len())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if valid {
            Ok(Self(text.to_string()))
        } else {
            Err(InvalidQuotaAccount(text.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for QuotaAccount {
    type Error = InvalidQuotaAccount;

    fn try_from(text: String) -> Result<Self, InvalidQuotaAccount> {
        Self::parse(&text)
    }
}

impl From<QuotaAccount> for String {
    fn from(account: QuotaAccount) -> Self {
        account.0
    }
}

/// The aggregate id of a quota: `credits` for the tenant's own, or
/// `credits@<account>` for one of its accounts.
pub fn quota_aggregate_id(quota: QuotaType, account: Option<&QuotaAccount>) -> String {
    match account {
        None => quota.as_str().to_string(),
        Some(account) => format!("{}@{}", quota.as_str(), account.as_str()),
    }
}

/// The quota type and account of a quota aggregate id.
pub fn parse_quota_aggregate_id(id: &str) -> Option<(QuotaType, Option<QuotaAccount>)> {
    match id.split_once('@') {
        None => Some((QuotaType::parse(id).ok()?, None)),
        Some((quota, account)) => Some((
            QuotaType::parse(quota).ok()?,
            Some(QuotaAccount::parse(account).ok()?),
        )),
    }
}

/// Where a grant came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantSource {
    Subscription,
    Purchase,
    Promocode,
}

impl GrantSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscription => "subscription",
            Self::Purchase => "purchase",
            Self::Promocode => "promocode",
        }
    }
}

/// Whether a grant can still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    Active,
    Revoked,
    Expired,
}

impl GrantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// The terms a grant is issued with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantTerms {
    pub grant_id: GrantId,
    pub source: GrantSource,
    /// `None` is unlimited.
    pub amount: Option<Amount>,
    pub priority: u8,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A grant and how much of it is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub terms: GrantTerms,
    /// Consumed (runs, credits) or currently allocated (seats).
    pub used: Amount,
    pub status: GrantStatus,
}

impl Grant {
    /// Units left; `None` for an unlimited grant.
    pub fn remaining(&self) -> Option<Amount> {
        self.terms
            .amount
            .map(|amount| amount.checked_sub(self.used).unwrap_or(Amount::ZERO))
    }

    /// Active, in effect and not past its expiry at `at`.
    pub fn usable_at(&self, at: DateTime<Utc>) -> bool {
        self.status == GrantStatus::Active
            && self.terms.effective_at <= at
            && self.terms.expires_at.is_none_or(|expires| expires > at)
    }

    /// Sort key of the burn-down order.
    fn burn_order(
        &self,
    ) -> (
        u8,
        bool,
        Option<DateTime<Utc>>,
        bool,
        DateTime<Utc>,
        GrantId,
    ) {
        (
            self.terms.priority,
            self.terms.expires_at.is_none(),
            self.terms.expires_at,
            self.terms.source != GrantSource::Promocode,
            self.terms.effective_at,
            self.terms.grant_id,
        )
    }

    /// The grant's own account: credited on issue, debited when used.
    /// Finite grants refuse overdraft.
    pub fn account(&self) -> Account {
        grant_account(&self.terms)
    }
}

/// The journal account of a grant.
pub fn grant_account(terms: &GrantTerms) -> Account {
    let account = Account::new(format!("grant:{}", terms.grant_id), AccountType::Liability);
    if terms.amount.is_some() {
        account.without_overdraft()
    } else {
        account
    }
}

fn issued_account(quota: QuotaType) -> Account {
    Account::new(format!("quota_issued:{quota}"), AccountType::Equity)
}

fn consumed_account(quota: QuotaType) -> Account {
    Account::new(format!("quota_consumed:{quota}"), AccountType::Revenue)
}

fn breakage_account(quota: QuotaType) -> Account {
    Account::new(format!("quota_breakage:{quota}"), AccountType::Revenue)
}

fn allocated_account() -> Account {
    Account::new("seats_allocated", AccountType::Liability)
}

/// Part of a consumption or allocation drawn from one grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub grant_id: GrantId,
    pub amount: Amount,
}

/// How much can be drawn now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Available {
    Units(Amount),
    Unlimited,
}

impl Available {
    /// The units, or `None` when unlimited.
    pub fn units(self) -> Option<i64> {
        match self {
            Self::Units(amount) => Some(amount.value()),
            Self::Unlimited => None,
        }
    }
}

/// What a subscription-grant ending records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The plan changed or the subscription was cancelled.
    Revoked,
    /// The period ended.
    Expired,
}

/// Commands of a quota. Every command carries its time, stamped by the
/// pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum QuotaCommand {
    IssueGrant {
        quota: QuotaType,
        terms: GrantTerms,
        at: DateTime<Utc>,
    },
    RevokeGrant {
        grant_id: GrantId,
        at: DateTime<Utc>,
    },
    /// Ends every open subscription grant (plan change, cancellation, renewal).
    EndSubscriptionGrants {
        quota: QuotaType,
        ending: Ending,
        at: DateTime<Utc>,
    },
    /// Expires the grants past their expiry at `at`.
    ExpireGrants {
        quota: QuotaType,
        at: DateTime<Utc>,
    },
    Consume {
        quota: QuotaType,
        amount: Amount,
        reference: Option<String>,
        at: DateTime<Utc>,
    },
    AllocateSeats {
        amount: Amount,
        at: DateTime<Utc>,
    },
    ReleaseSeats {
        amount: Amount,
        at: DateTime<Utc>,
    },
}

/// Events of a quota. Each movement of units carries its balanced journal
/// entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaEvent {
    GrantIssued {
        quota: QuotaType,
        terms: GrantTerms,
        /// `None` for an unlimited grant (no finite amount to post).
        entry: Option<JournalEntry>,
    },
    GrantRevoked {
        grant_id: GrantId,
        revoked_at: DateTime<Utc>,
        breakage: Amount,
        entry: Option<JournalEntry>,
    },
    GrantExpired {
        grant_id: GrantId,
        expired_at: DateTime<Utc>,
        breakage: Amount,
        entry: Option<JournalEntry>,
    },
    QuotaConsumed {
        amount: Amount,
        reference: Option<String>,
        allocations: Vec<Allocation>,
        entry: JournalEntry,
    },
    SeatsAllocated {
        amount: Amount,
        allocations: Vec<Allocation>,
        entry: JournalEntry,
    },
    SeatsReleased {
        amount: Amount,
        allocations: Vec<Allocation>,
        entry: JournalEntry,
    },
}

impl QuotaEvent {
    /// The journal entry the event posts, if any.
    pub fn entry(&self) -> Option<&JournalEntry> {
        match self {
            Self::GrantIssued { entry, .. }
            | Self::GrantRevoked { entry, .. }
            | Self::GrantExpired { entry, .. } => entry.as_ref(),
            Self::QuotaConsumed { entry, .. }
            | Self::SeatsAllocated { entry, .. }
            | Self::SeatsReleased { entry, .. } => Some(entry),
        }
    }
}

impl DomainEvent for QuotaEvent {
    fn event_type(&self) -> String {
        match self {
            Self::GrantIssued { .. } => "GrantIssued",
            Self::GrantRevoked { .. } => "GrantRevoked",
            Self::GrantExpired { .. } => "GrantExpired",
            Self::QuotaConsumed { .. } => "QuotaConsumed",
            Self::SeatsAllocated { .. } => "SeatsAllocated",
            Self::SeatsReleased { .. } => "SeatsReleased",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

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
    #[error("reference must be at most {REFERENCE_LENGTH_MAX} characters")]
    ReferenceTooLong,
    #[error("a quota holds at most {OPEN_GRANTS_MAX} open grants")]
    TooManyGrants,
    #[error("amounts overflow")]
    Overflow,
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

impl Rejection for QuotaError {
    fn kind(&self) -> RejectionKind {
        match self {
            Self::QuotaExceeded { .. } => RejectionKind::QuotaExceeded,
            Self::UnknownGrant(_) => RejectionKind::NotFound,
            Self::AmountNotPositive
            | Self::InvalidPriority
            | Self::ExpiryBeforeEffect
            | Self::SeatsAreNotConsumed
            | Self::OnlySeatsAllocate
            | Self::WrongQuota { .. }
            | Self::ReferenceTooLong => RejectionKind::Invalid,
            Self::GrantExists(_)
            | Self::GrantClosed { .. }
            | Self::SubscriptionGrant(_)
            | Self::ExpiryInThePast
            | Self::ReleaseExceedsAllocated { .. }
            | Self::TooManyGrants
            | Self::Overflow => RejectionKind::RuleBroken,
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
            Self::ReferenceTooLong => "invalid_reference",
            Self::TooManyGrants => "too_many_grants",
            Self::Overflow => "amount_overflow",
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
            _ => serde_json::Value::Null,
        }
    }
}

/// A quota of one type for one holder, with its grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Set by the first grant.
    pub quota: Option<QuotaType>,
    /// Every grant, in issue order.
    pub grants: Vec<Grant>,
}

impl Quota {
    pub fn grant(&self, grant_id: GrantId) -> Option<&Grant> {
        self.grants
            .iter()
            .find(|grant| grant.terms.grant_id == grant_id)
    }

    /// Usable grants at `at`, in burn-down order.
    fn usable(&self, at: DateTime<Utc>) -> Vec<&Grant> {
        let mut usable: Vec<&Grant> = self
            .grants
            .iter()
            .filter(|grant| grant.usable_at(at))
            .collect();
        usable.sort_by_key(|grant| grant.burn_order());
        usable
    }

    /// What can be drawn at `at`.
    pub fn available(&self, at: DateTime<Utc>) -> Result<Available, QuotaError> {
        let mut total = Amount::ZERO;
        for grant in self.usable(at) {
            match grant.remaining() {
                None => return Ok(Available::Unlimited),
                Some(remaining) => total = total.checked_add(remaining)?,
            }
        }
        Ok(Available::Units(total))
    }

    /// Seats allocated now, over every grant.
    pub fn allocated(&self) -> Result<Amount, QuotaError> {
        self.grants
            .iter()
            .try_fold(Amount::ZERO, |total, grant| total.checked_add(grant.used))
            .map_err(QuotaError::from)
    }

    fn check_quota(&self, requested: QuotaType) -> Result<(), QuotaError> {
        match self.quota {
            Some(expected) if expected != requested => Err(QuotaError::WrongQuota {
                expected,
                requested,
            }),
            _ => Ok(()),
        }
    }

    /// The quota type, for decisions that need one before any grant exists.
    fn quota_or(&self, fallback: QuotaType) -> QuotaType {
        self.quota.unwrap_or(fallback)
    }

    /// Closing events (expiry or revocation) with breakage postings for the
    /// grants selected by `select`.
    fn close(
        &self,
        quota: QuotaType,
        select: impl Fn(&Grant) -> bool,
        ending: Ending,
        at: DateTime<Utc>,
    ) -> Result<Vec<QuotaEvent>, QuotaError> {
        let mut events = Vec::new();
        for grant in self
            .grants
            .iter()
            .filter(|grant| grant.status == GrantStatus::Active && select(grant))
        {
            let breakage = grant.remaining().unwrap_or(Amount::ZERO);
            let entry = if breakage.is_zero() {
                None
            } else {
                Some(JournalEntry::transfer(
                    grant.account(),
                    breakage_account(quota),
                    &quota.asset(),
                    breakage,
                )?)
            };
            let grant_id = grant.terms.grant_id;
            events.push(match ending {
                Ending::Revoked => QuotaEvent::GrantRevoked {
                    grant_id,
                    revoked_at: at,
                    breakage,
                    entry,
                },
                Ending::Expired => QuotaEvent::GrantExpired {
                    grant_id,
                    expired_at: at,
                    breakage,
                    entry,
                },
            });
        }
        Ok(events)
    }

    /// Expiry events for grants whose expiry has passed at `at`.
    fn due_expiries(
        &self,
        quota: QuotaType,
        at: DateTime<Utc>,
    ) -> Result<Vec<QuotaEvent>, QuotaError> {
        self.close(
            quota,
            |grant| grant.terms.expires_at.is_some_and(|expires| expires <= at),
            Ending::Expired,
            at,
        )
    }

    /// Draws `amount` from the usable grants in burn-down order.
    fn draw(
        &self,
        quota: QuotaType,
        amount: Amount,
        at: DateTime<Utc>,
    ) -> Result<Vec<(Allocation, Account)>, QuotaError> {
        let mut left = amount;
        let mut draws = Vec::new();
        for grant in self.usable(at) {
            if left.is_zero() {
                break;
            }
            let take = match grant.remaining() {
                None => left,
                Some(remaining) => remaining.min(left),
            };
            if take.is_zero() {
                continue;
            }
            draws.push((
                Allocation {
                    grant_id: grant.terms.grant_id,
                    amount: take,
                },
                grant.account(),
            ));
            left = left.checked_sub(take)?;
        }
        if !left.is_zero() {
            let available = amount.checked_sub(left)?;
            return Err(QuotaError::QuotaExceeded {
                quota,
                requested: amount.value(),
                available: available.value(),
            });
        }
        Ok(draws)
    }

    fn decide_issue(
        &self,
        quota: QuotaType,
        terms: GrantTerms,
        at: DateTime<Utc>,
    ) -> Result<Vec<QuotaEvent>, QuotaError> {
        self.check_quota(quota)?;
        if terms.priority > PRIORITY_MAX {
            return Err(QuotaError::InvalidPriority);
        }
        if terms.amount.is_some_and(Amount::is_zero) {
            return Err(QuotaError::AmountNotPositive);
        }
        if let Some(expires) = terms.expires_at {
            if expires <= terms.effective_at {
                return Err(QuotaError::ExpiryBeforeEffect);
            }
            if expires <= at {
                return Err(QuotaError::ExpiryInThePast);
            }
        }
        if self.grant(terms.grant_id).is_some() {
            return Err(QuotaError::GrantExists(terms.grant_id));
        }
        let mut events = self.due_expiries(quota, at)?;
        let open = self
            .grants
            .iter()
            .filter(|grant| grant.status == GrantStatus::Active)
            .count();
        if open - events.len() >= OPEN_GRANTS_MAX {
            return Err(QuotaError::TooManyGrants);
        }
        let entry = match terms.amount {
            Some(amount) => Some(JournalEntry::transfer(
                issued_account(quota),
                grant_account(&terms),
                &quota.asset(),
                amount,
            )?),
            None => None,
        };
        events.push(QuotaEvent::GrantIssued {
            quota,
            terms,
            entry,
        });
        Ok(events)
    }

    fn decide_revoke(
        &self,
        grant_id: GrantId,
        at: DateTime<Utc>,
    ) -> Result<Vec<QuotaEvent>, QuotaError> {
        let grant = self
            .grant(grant_id)
            .ok_or(QuotaError::UnknownGrant(grant_id))?;
        if grant.terms.source == GrantSource::Subscription {
            return Err(QuotaError::SubscriptionGrant(grant_id));
        }
        let quota = self.quota_or(QuotaType::Credits);
        let mut events = self.due_expiries(quota, at)?;
        let expired_now = events.iter().any(|event| matches!(event, QuotaEvent::GrantExpired { grant_id: id, .. } if *id == grant_id));
        if grant.status != GrantStatus::Active || expired_now {
            let status = if expired_now {
                GrantStatus::Expired
            } else {
                grant.status
            };
            return Err(QuotaError::GrantClosed {
                grant_id,
                status: status.as_str(),
            });
        }
        events.extend(self.close(
            quota,
            |candidate| candidate.terms.grant_id == grant_id,
            Ending::Revoked,
            at,
        )?);
        Ok(events)
    }

    fn decide_consume(
        &self,
        quota: QuotaType,
        amount: Amount,
        reference: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<Vec<QuotaEvent>, QuotaError> {
        self.check_quota(quota)?;
        if !quota.is_consumable() {
            return Err(QuotaError::SeatsAreNotConsumed);
        }
        if amount.is_zero() {
            return Err(QuotaError::AmountNotPositive);
        }
        if reference
            .as_ref()
            .is_some_and(|reference| reference.chars().count() > REFERENCE_LENGTH_MAX)
        {
            return Err(QuotaError::ReferenceTooLong);
        }
        let expiries = self.due_expiries(quota, at)?;
        let draws = self.draw(quota, amount, at)?;
        let mut postings: Vec<Posting> = draws
            .iter()
            .map(|(allocation, account)| {
                Posting::debit(account.clone(), quota.asset(), allocation.amount)
            })
            .collect();
        postings.push(Posting::credit(
            consumed_account(quota),
            quota.asset(),
            amount,
        ));
        let mut events = expiries;
        events.push(QuotaEvent::QuotaConsumed {
            amount,
            reference,
            allocations: draws
                .into_iter()
                .map(|(allocation, _)| allocation)
                .collect(),
            entry: JournalEntry::new(postings)?,
        });
        Ok(events)
    }

    fn decide_allocate(
        &self,
        amount: Amount,
        at: DateTime<Utc>,
    ) -> Result<Vec<QuotaEvent>, QuotaError> {
        self.check_quota(QuotaType::Seats)?;
        if amount.is_zero() {
            return Err(QuotaError::AmountNotPositive);
        }
        let expiries = self.due_expiries(QuotaType::Seats, at)?;
        let draws = self.draw(QuotaType::Seats, amount, at)?;
        let mut postings: Vec<Posting> = draws
            .iter()
            .map(|(allocation, account)| {
                Posting::debit(account.clone(), QuotaType::Seats.asset(), allocation.amount)
            })
            .collect();
        postings.push(Posting::credit(
            allocated_account(),
            QuotaType::Seats.asset(),
            amount,
        ));
        let mut events = expiries;
        events.push(QuotaEvent::SeatsAllocated {
            amount,
            allocations: draws
                .into_iter()
                .map(|(allocation, _)| allocation)
                .collect(),
            entry: JournalEntry::new(postings)?,
        });
        Ok(events)
    }

    fn decide_release(
        &self,
        amount: Amount,
        at: DateTime<Utc>,
    ) -> Result<Vec<QuotaEvent>, QuotaError> {
        self.check_quota(QuotaType::Seats)?;
        if amount.is_zero() {
            return Err(QuotaError::AmountNotPositive);
        }
        let allocated = self.allocated()?;
        if amount > allocated {
            return Err(QuotaError::ReleaseExceedsAllocated {
                requested: amount.value(),
                allocated: allocated.value(),
            });
        }
        let expiries = self.due_expiries(QuotaType::Seats, at)?;
        // Seats return to the grants burnt last first.
        let mut holders: Vec<&Grant> = self
            .grants
            .iter()
            .filter(|grant| !grant.used.is_zero())
            .collect();
        holders.sort_by_key(|grant| std::cmp::Reverse(grant.burn_order()));
        let mut left = amount;
        let mut allocations = Vec::new();
        let mut postings = vec![Posting::debit(
            allocated_account(),
            QuotaType::Seats.asset(),
            amount,
        )];
        for grant in holders {
            if left.is_zero() {
                break;
            }
            let take = grant.used.min(left);
            allocations.push(Allocation {
                grant_id: grant.terms.grant_id,
                amount: take,
            });
            postings.push(Posting::credit(
                grant.account(),
                QuotaType::Seats.asset(),
                take,
            ));
            left = left.checked_sub(take)?;
        }
        let mut events = expiries;
        events.push(QuotaEvent::SeatsReleased {
            amount,
            allocations,
            entry: JournalEntry::new(postings)?,
        });
        Ok(events)
    }

    fn grant_mut(&mut self, grant_id: GrantId) -> Option<&mut Grant> {
        self.grants
            .iter_mut()
            .find(|grant| grant.terms.grant_id == grant_id)
    }

    fn use_allocations(&mut self, allocations: &[Allocation], release: bool) {
        for allocation in allocations {
            if let Some(grant) = self.grant_mut(allocation.grant_id) {
                // Decisions never draw more than a grant holds, nor release
                // more than it has allocated.
                grant.used = if release {
                    grant
                        .used
                        .checked_sub(allocation.amount)
                        .unwrap_or(Amount::ZERO)
                } else {
                    grant
                        .used
                        .checked_add(allocation.amount)
                        .unwrap_or(grant.used)
                };
            }
        }
    }
}

impl Aggregate for Quota {
    const TYPE: &'static str = QUOTA_AGGREGATE;
    type Command = QuotaCommand;
    type Event = QuotaEvent;
    type Error = QuotaError;
    type Services = ();

    async fn handle(
        &mut self,
        command: QuotaCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), QuotaError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: QuotaEvent) {
        match event {
            QuotaEvent::GrantIssued { quota, terms, .. } => {
                self.quota = Some(quota);
                self.grants.push(Grant {
                    terms,
                    used: Amount::ZERO,
                    status: GrantStatus::Active,
                });
            }
            QuotaEvent::GrantRevoked { grant_id, .. } => {
                if let Some(grant) = self.grant_mut(grant_id) {
                    grant.status = GrantStatus::Revoked;
                }
            }
            QuotaEvent::GrantExpired { grant_id, .. } => {
                if let Some(grant) = self.grant_mut(grant_id) {
                    grant.status = GrantStatus::Expired;
                }
            }
            QuotaEvent::QuotaConsumed { allocations, .. }
            | QuotaEvent::SeatsAllocated { allocations, .. } => {
                self.use_allocations(&allocations, false);
            }
            QuotaEvent::SeatsReleased { allocations, .. } => {
                self.use_allocations(&allocations, true)
            }
        }
    }
}

impl Decide for Quota {
    fn decide(&self, command: QuotaCommand) -> Result<Vec<QuotaEvent>, QuotaError> {
        match command {
            QuotaCommand::IssueGrant { quota, terms, at } => self.decide_issue(quota, terms, at),
            QuotaCommand::RevokeGrant { grant_id, at } => self.decide_revoke(grant_id, at),
            QuotaCommand::EndSubscriptionGrants { quota, ending, at } => {
                self.check_quota(quota)?;
                let mut events = self.due_expiries(quota, at)?;
                let expiring: Vec<GrantId> = events
                    .iter()
                    .filter_map(|event| match event {
                        QuotaEvent::GrantExpired { grant_id, .. } => Some(*grant_id),
                        _ => None,
                    })
                    .collect();
                events.extend(self.close(
                    quota,
                    |grant| {
                        grant.terms.source == GrantSource::Subscription
                            && !expiring.contains(&grant.terms.grant_id)
                    },
                    ending,
                    at,
                )?);
                Ok(events)
            }
            QuotaCommand::ExpireGrants { quota, at } => {
                self.check_quota(quota)?;
                self.due_expiries(quota, at)
            }
            QuotaCommand::Consume {
                quota,
                amount,
                reference,
                at,
            } => self.decide_consume(quota, amount, reference, at),
            QuotaCommand::AllocateSeats { amount, at } => self.decide_allocate(amount, at),
            QuotaCommand::ReleaseSeats { amount, at } => self.decide_release(amount, at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<Quota>;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, hour, 0, 0).unwrap()
    }

    fn id(n: u128) -> GrantId {
        GrantId::from_uuid(uuid::Uuid::from_u128(n))
    }

    fn units(value: i64) -> Amount {
        Amount::new(value).unwrap()
    }

    fn terms(n: u128, source: GrantSource, amount: Option<i64>) -> GrantTerms {
        GrantTerms {
            grant_id: id(n),
            source,
            amount: amount.map(units),
            priority: PRIORITY_DEFAULT,
            effective_at: at(0),
            expires_at: None,
        }
    }

    fn issued(quota: QuotaType, terms: GrantTerms) -> QuotaEvent {
        let entry = terms.amount.map(|amount| {
            JournalEntry::transfer(
                issued_account(quota),
                grant_account(&terms),
                &quota.asset(),
                amount,
            )
            .unwrap()
        });
        QuotaEvent::GrantIssued {
            quota,
            terms,
            entry,
        }
    }

    fn consumed(
        quota: QuotaType,
        draws: &[(&GrantTerms, i64)],
        reference: Option<&str>,
    ) -> QuotaEvent {
        let total: i64 = draws.iter().map(|(_, amount)| amount).sum();
        let mut postings: Vec<Posting> = draws
            .iter()
            .map(|(terms, amount)| {
                Posting::debit(grant_account(terms), quota.asset(), units(*amount))
            })
            .collect();
        postings.push(Posting::credit(
            consumed_account(quota),
            quota.asset(),
            units(total),
        ));
        QuotaEvent::QuotaConsumed {
            amount: units(total),
            reference: reference.map(str::to_string),
            allocations: draws
                .iter()
                .map(|(terms, amount)| Allocation {
                    grant_id: terms.grant_id,
                    amount: units(*amount),
                })
                .collect(),
            entry: JournalEntry::new(postings).unwrap(),
        }
    }

    fn consume(amount: i64, hour: u32) -> QuotaCommand {
        QuotaCommand::Consume {
            quota: QuotaType::Credits,
            amount: units(amount),
            reference: None,
            at: at(hour),
        }
    }

    #[test]
    fn issuing_a_grant_credits_the_grant_account_from_issuance() {
        let grant = terms(1, GrantSource::Purchase, Some(500));
        Given::with(())
            .given_no_previous_events()
            .when(QuotaCommand::IssueGrant {
                quota: QuotaType::Credits,
                terms: grant.clone(),
                at: at(1),
            })
            .then_expect_events(vec![issued(QuotaType::Credits, grant)]);
    }

    #[test]
    fn issuing_an_unlimited_grant_posts_no_entry() {
        let grant = terms(1, GrantSource::Promocode, None);
        Given::with(())
            .given_no_previous_events()
            .when(QuotaCommand::IssueGrant {
                quota: QuotaType::Runs,
                terms: grant.clone(),
                at: at(1),
            })
            .then_expect_events(vec![QuotaEvent::GrantIssued {
                quota: QuotaType::Runs,
                terms: grant,
                entry: None,
            }]);
    }

    #[test]
    fn issuing_a_grant_id_twice_is_rejected() {
        let grant = terms(1, GrantSource::Purchase, Some(5));
        Given::with(())
            .given(vec![issued(QuotaType::Credits, grant.clone())])
            .when(QuotaCommand::IssueGrant {
                quota: QuotaType::Credits,
                terms: grant,
                at: at(1),
            })
            .then_expect_error(QuotaError::GrantExists(id(1)));
    }

    #[test]
    fn a_priority_above_100_is_rejected() {
        let mut grant = terms(1, GrantSource::Purchase, Some(5));
        grant.priority = 101;
        Given::with(())
            .given_no_previous_events()
            .when(QuotaCommand::IssueGrant {
                quota: QuotaType::Credits,
                terms: grant,
                at: at(1),
            })
            .then_expect_error(QuotaError::InvalidPriority);
    }

    #[test]
    fn a_zero_amount_grant_is_rejected() {
        Given::with(())
            .given_no_previous_events()
            .when(QuotaCommand::IssueGrant {
                quota: QuotaType::Credits,
                terms: terms(1, GrantSource::Purchase, Some(0)),
                at: at(1),
            })
            .then_expect_error(QuotaError::AmountNotPositive);
    }

    #[test]
    fn an_expiry_not_after_the_start_or_already_past_is_rejected() {
        let mut backwards = terms(1, GrantSource::Purchase, Some(5));
        backwards.effective_at = at(5);
        backwards.expires_at = Some(at(5));
        Given::with(())
            .given_no_previous_events()
            .when(QuotaCommand::IssueGrant {
                quota: QuotaType::Credits,
                terms: backwards,
                at: at(1),
            })
            .then_expect_error(QuotaError::ExpiryBeforeEffect);
        let mut past = terms(1, GrantSource::Purchase, Some(5));
        past.expires_at = Some(at(2));
        Given::with(())
            .given_no_previous_events()
            .when(QuotaCommand::IssueGrant {
                quota: QuotaType::Credits,
                terms: past,
                at: at(3),
            })
            .then_expect_error(QuotaError::ExpiryInThePast);
    }

    #[test]
    fn a_grant_of_another_quota_type_is_rejected() {
        Given::with(())
            .given(vec![issued(
                QuotaType::Credits,
                terms(1, GrantSource::Purchase, Some(5)),
            )])
            .when(QuotaCommand::IssueGrant {
                quota: QuotaType::Runs,
                terms: terms(2, GrantSource::Purchase, Some(5)),
                at: at(1),
            })
            .then_expect_error(QuotaError::WrongQuota {
                expected: QuotaType::Credits,
                requested: QuotaType::Runs,
            });
    }

    #[test]
    fn consuming_within_the_balance_debits_the_grant_and_credits_consumption() {
        let grant = terms(1, GrantSource::Purchase, Some(10));
        Given::with(())
            .given(vec![issued(QuotaType::Credits, grant.clone())])
            .when(QuotaCommand::Consume {
                quota: QuotaType::Credits,
                amount: units(4),
                reference: Some("run-1".into()),
                at: at(1),
            })
            .then_expect_events(vec![consumed(
                QuotaType::Credits,
                &[(&grant, 4)],
                Some("run-1"),
            )]);
    }

    #[test]
    fn consumption_burns_lower_priority_numbers_first_and_spans_grants() {
        let mut later = terms(1, GrantSource::Purchase, Some(10));
        later.priority = 60;
        let mut first = terms(2, GrantSource::Purchase, Some(3));
        first.priority = 10;
        Given::with(())
            .given(vec![
                issued(QuotaType::Credits, later.clone()),
                issued(QuotaType::Credits, first.clone()),
            ])
            .when(consume(5, 1))
            .then_expect_events(vec![consumed(
                QuotaType::Credits,
                &[(&first, 3), (&later, 2)],
                None,
            )]);
    }

    #[test]
    fn at_equal_priority_the_earliest_expiry_burns_first_and_no_expiry_last() {
        let never = terms(1, GrantSource::Purchase, Some(5));
        let mut late = terms(2, GrantSource::Purchase, Some(5));
        late.expires_at = Some(at(20));
        let mut soon = terms(3, GrantSource::Purchase, Some(5));
        soon.expires_at = Some(at(10));
        Given::with(())
            .given(vec![
                issued(QuotaType::Credits, never.clone()),
                issued(QuotaType::Credits, late.clone()),
                issued(QuotaType::Credits, soon.clone()),
            ])
            .when(consume(12, 1))
            .then_expect_events(vec![consumed(
                QuotaType::Credits,
                &[(&soon, 5), (&late, 5), (&never, 2)],
                None,
            )]);
    }

    #[test]
    fn then_promotional_before_paid_then_oldest_then_id() {
        let mut old_paid = terms(1, GrantSource::Purchase, Some(1));
        old_paid.effective_at = at(0);
        let mut new_paid = terms(2, GrantSource::Subscription, Some(1));
        new_paid.effective_at = at(1);
        let mut promo = terms(9, GrantSource::Promocode, Some(1));
        promo.effective_at = at(2);
        let mut same_age = terms(3, GrantSource::Purchase, Some(1));
        same_age.effective_at = at(1);
        Given::with(())
            .given(vec![
                issued(QuotaType::Credits, old_paid.clone()),
                issued(QuotaType::Credits, new_paid.clone()),
                issued(QuotaType::Credits, promo.clone()),
                issued(QuotaType::Credits, same_age.clone()),
            ])
            .when(consume(4, 3))
            .then_expect_events(vec![consumed(
                QuotaType::Credits,
                &[(&promo, 1), (&old_paid, 1), (&new_paid, 1), (&same_age, 1)],
                None,
            )]);
    }

    #[test]
    fn consuming_more_than_available_is_rejected_and_consumes_nothing() {
        let grant = terms(1, GrantSource::Purchase, Some(3));
        let mut events = vec![issued(QuotaType::Credits, grant.clone())];
        events.push(consumed(QuotaType::Credits, &[(&grant, 1)], None));
        Given::with(())
            .given(events)
            .when(consume(3, 1))
            .then_expect_error(QuotaError::QuotaExceeded {
                quota: QuotaType::Credits,
                requested: 3,
                available: 2,
            });
    }

    #[test]
    fn consumption_against_an_unlimited_grant_always_succeeds() {
        let small = terms(1, GrantSource::Purchase, Some(2));
        let mut unlimited = terms(2, GrantSource::Purchase, None);
        unlimited.priority = 90;
        Given::with(())
            .given(vec![
                issued(QuotaType::Credits, small.clone()),
                issued(QuotaType::Credits, unlimited.clone()),
            ])
            .when(consume(1_000_000, 1))
            .then_expect_events(vec![consumed(
                QuotaType::Credits,
                &[(&small, 2), (&unlimited, 999_998)],
                None,
            )]);
    }

    #[test]
    fn a_grant_past_its_expiry_is_expired_with_breakage_and_not_used() {
        let mut expiring = terms(1, GrantSource::Purchase, Some(10));
        expiring.expires_at = Some(at(5));
        let other = terms(2, GrantSource::Purchase, Some(10));
        let breakage = JournalEntry::transfer(
            grant_account(&expiring),
            breakage_account(QuotaType::Credits),
            &QuotaType::Credits.asset(),
            units(10),
        )
        .unwrap();
        Given::with(())
            .given(vec![
                issued(QuotaType::Credits, expiring.clone()),
                issued(QuotaType::Credits, other.clone()),
            ])
            .when(consume(3, 5))
            .then_expect_events(vec![
                QuotaEvent::GrantExpired {
                    grant_id: id(1),
                    expired_at: at(5),
                    breakage: units(10),
                    entry: Some(breakage),
                },
                consumed(QuotaType::Credits, &[(&other, 3)], None),
            ]);
    }

    #[test]
    fn a_grant_not_yet_in_effect_is_not_used() {
        let mut future = terms(1, GrantSource::Purchase, Some(10));
        future.effective_at = at(8);
        Given::with(())
            .given(vec![issued(QuotaType::Credits, future)])
            .when(consume(1, 2))
            .then_expect_error(QuotaError::QuotaExceeded {
                quota: QuotaType::Credits,
                requested: 1,
                available: 0,
            });
    }

    #[test]
    fn expiring_as_of_a_time_closes_only_the_grants_past_expiry() {
        let mut expiring = terms(1, GrantSource::Purchase, Some(4));
        expiring.expires_at = Some(at(5));
        let breakage = JournalEntry::transfer(
            grant_account(&expiring),
            breakage_account(QuotaType::Credits),
            &QuotaType::Credits.asset(),
            units(4),
        )
        .unwrap();
        Given::with(())
            .given(vec![
                issued(QuotaType::Credits, expiring.clone()),
                issued(QuotaType::Credits, terms(2, GrantSource::Purchase, Some(1))),
            ])
            .when(QuotaCommand::ExpireGrants {
                quota: QuotaType::Credits,
                at: at(6),
            })
            .then_expect_events(vec![QuotaEvent::GrantExpired {
                grant_id: id(1),
                expired_at: at(6),
                breakage: units(4),
                entry: Some(breakage),
            }]);
        Given::with(())
            .given(vec![issued(QuotaType::Credits, expiring)])
            .when(QuotaCommand::ExpireGrants {
                quota: QuotaType::Credits,
                at: at(4),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn zero_amounts_and_long_references_are_rejected() {
        let grant = terms(1, GrantSource::Purchase, Some(5));
        Given::with(())
            .given(vec![issued(QuotaType::Credits, grant.clone())])
            .when(consume(0, 1))
            .then_expect_error(QuotaError::AmountNotPositive);
        Given::with(())
            .given(vec![issued(QuotaType::Credits, grant)])
            .when(QuotaCommand::Consume {
                quota: QuotaType::Credits,
                amount: units(1),
                reference: Some("r".repeat(201)),
                at: at(1),
            })
            .then_expect_error(QuotaError::ReferenceTooLong);
    }

    #[test]
    fn seats_are_allocated_and_released_not_consumed() {
        let seats = terms(1, GrantSource::Subscription, Some(3));
        Given::with(())
            .given(vec![issued(QuotaType::Seats, seats.clone())])
            .when(QuotaCommand::Consume {
                quota: QuotaType::Seats,
                amount: units(1),
                reference: None,
                at: at(1),
            })
            .then_expect_error(QuotaError::SeatsAreNotConsumed);
        let allocation = JournalEntry::transfer(
            grant_account(&seats),
            allocated_account(),
            &QuotaType::Seats.asset(),
            units(2),
        )
        .unwrap();
        let allocated = QuotaEvent::SeatsAllocated {
            amount: units(2),
            allocations: vec![Allocation {
                grant_id: id(1),
                amount: units(2),
            }],
            entry: allocation,
        };
        Given::with(())
            .given(vec![issued(QuotaType::Seats, seats.clone())])
            .when(QuotaCommand::AllocateSeats {
                amount: units(2),
                at: at(1),
            })
            .then_expect_events(vec![allocated.clone()]);
        let release = JournalEntry::transfer(
            allocated_account(),
            grant_account(&seats),
            &QuotaType::Seats.asset(),
            units(1),
        )
        .unwrap();
        Given::with(())
            .given(vec![
                issued(QuotaType::Seats, seats.clone()),
                allocated.clone(),
            ])
            .when(QuotaCommand::ReleaseSeats {
                amount: units(1),
                at: at(2),
            })
            .then_expect_events(vec![QuotaEvent::SeatsReleased {
                amount: units(1),
                allocations: vec![Allocation {
                    grant_id: id(1),
                    amount: units(1),
                }],
                entry: release,
            }]);
        Given::with(())
            .given(vec![
                issued(QuotaType::Seats, seats.clone()),
                allocated.clone(),
            ])
            .when(QuotaCommand::AllocateSeats {
                amount: units(2),
                at: at(2),
            })
            .then_expect_error(QuotaError::QuotaExceeded {
                quota: QuotaType::Seats,
                requested: 2,
                available: 1,
            });
        Given::with(())
            .given(vec![issued(QuotaType::Seats, seats), allocated])
            .when(QuotaCommand::ReleaseSeats {
                amount: units(3),
                at: at(2),
            })
            .then_expect_error(QuotaError::ReleaseExceedsAllocated {
                requested: 3,
                allocated: 2,
            });
    }

    #[test]
    fn only_seats_are_allocated() {
        Given::with(())
            .given(vec![issued(
                QuotaType::Credits,
                terms(1, GrantSource::Purchase, Some(3)),
            )])
            .when(QuotaCommand::AllocateSeats {
                amount: units(1),
                at: at(1),
            })
            .then_expect_error(QuotaError::WrongQuota {
                expected: QuotaType::Credits,
                requested: QuotaType::Seats,
            });
    }

    #[test]
    fn revoking_a_purchased_grant_posts_its_unused_balance_as_breakage() {
        let grant = terms(1, GrantSource::Purchase, Some(10));
        let breakage = JournalEntry::transfer(
            grant_account(&grant),
            breakage_account(QuotaType::Credits),
            &QuotaType::Credits.asset(),
            units(6),
        )
        .unwrap();
        Given::with(())
            .given(vec![
                issued(QuotaType::Credits, grant.clone()),
                consumed(QuotaType::Credits, &[(&grant, 4)], None),
            ])
            .when(QuotaCommand::RevokeGrant {
                grant_id: id(1),
                at: at(2),
            })
            .then_expect_events(vec![QuotaEvent::GrantRevoked {
                grant_id: id(1),
                revoked_at: at(2),
                breakage: units(6),
                entry: Some(breakage),
            }]);
    }

    #[test]
    fn revoking_an_unknown_closed_or_subscription_grant_is_rejected() {
        Given::with(())
            .given_no_previous_events()
            .when(QuotaCommand::RevokeGrant {
                grant_id: id(7),
                at: at(1),
            })
            .then_expect_error(QuotaError::UnknownGrant(id(7)));
        let grant = terms(1, GrantSource::Purchase, Some(10));
        let revoked = QuotaEvent::GrantRevoked {
            grant_id: id(1),
            revoked_at: at(1),
            breakage: units(10),
            entry: None,
        };
        Given::with(())
            .given(vec![issued(QuotaType::Credits, grant), revoked])
            .when(QuotaCommand::RevokeGrant {
                grant_id: id(1),
                at: at(2),
            })
            .then_expect_error(QuotaError::GrantClosed {
                grant_id: id(1),
                status: "revoked",
            });
        Given::with(())
            .given(vec![issued(
                QuotaType::Credits,
                terms(2, GrantSource::Subscription, Some(10)),
            )])
            .when(QuotaCommand::RevokeGrant {
                grant_id: id(2),
                at: at(2),
            })
            .then_expect_error(QuotaError::SubscriptionGrant(id(2)));
    }

    #[test]
    fn ending_subscription_grants_leaves_purchases_alone() {
        let subscription = terms(1, GrantSource::Subscription, Some(10));
        let purchase = terms(2, GrantSource::Purchase, Some(10));
        let breakage = JournalEntry::transfer(
            grant_account(&subscription),
            breakage_account(QuotaType::Credits),
            &QuotaType::Credits.asset(),
            units(10),
        )
        .unwrap();
        Given::with(())
            .given(vec![
                issued(QuotaType::Credits, subscription),
                issued(QuotaType::Credits, purchase),
            ])
            .when(QuotaCommand::EndSubscriptionGrants {
                quota: QuotaType::Credits,
                ending: Ending::Revoked,
                at: at(3),
            })
            .then_expect_events(vec![QuotaEvent::GrantRevoked {
                grant_id: id(1),
                revoked_at: at(3),
                breakage: units(10),
                entry: Some(breakage),
            }]);
    }

    #[test]
    fn available_units_follow_consumption_and_unlimited_grants() {
        let mut quota = Quota::default();
        let grant = terms(1, GrantSource::Purchase, Some(10));
        quota.apply(issued(QuotaType::Credits, grant.clone()));
        quota.apply(consumed(QuotaType::Credits, &[(&grant, 4)], None));
        assert_eq!(quota.available(at(1)), Ok(Available::Units(units(6))));
        quota.apply(issued(
            QuotaType::Credits,
            terms(2, GrantSource::Promocode, None),
        ));
        assert_eq!(quota.available(at(1)), Ok(Available::Unlimited));
    }

    #[test]
    fn quota_aggregate_ids_round_trip() {
        let account = QuotaAccount::parse("user-42").unwrap();
        assert_eq!(quota_aggregate_id(QuotaType::Credits, None), "credits");
        assert_eq!(
            quota_aggregate_id(QuotaType::Runs, Some(&account)),
            "runs@user-42"
        );
        assert_eq!(
            parse_quota_aggregate_id("runs@user-42"),
            Some((QuotaType::Runs, Some(account)))
        );
        assert_eq!(parse_quota_aggregate_id("gold"), None);
        assert!(QuotaAccount::parse("a b").is_err());
        assert_eq!(
            QuotaType::parse("tokens"),
            Err(UnknownQuota("tokens".into()))
        );
    }
}
