//! The quota aggregate: one per (tenant, quota type, quota account), holding
//! its grants and deciding consumption, seat allocation, issue, revocation
//! and expiry.
//!
//! Burn-down order of usable grants: priority (0 first, 100 last), then
//! earliest expiry (grants without expiry last), then promotional before
//! paid, then oldest by issue (the order the grants were issued in, never the
//! client-given `effective_at`), then grant id. A consumption may span several
//! grants (one posting per grant) and never overdraws: when the usable total
//! is short of the request, nothing is consumed. Every decision first expires
//! the grants whose expiry has passed at the command's time, posting their
//! unused balance as breakage.
//!
//! Seats are a gauge. When a seat grant closes (revoked, expired, a plan
//! change or renewal) with seats allocated on it, those seats move to the
//! open grants with room, in burn-down order, in the same decision; what no
//! grant has room for is over-allocated (`unbacked`). A grant issued later
//! takes unbacked seats first, a release gives them back first, and no seat
//! is allocated while any is unbacked.
//!
//! Every account this quota posts to belongs to it alone (grant accounts,
//! and `quota_issued:<quota>`, `quota_consumed:<quota>`,
//! `quota_breakage:<quota>`, `seats_allocated`, `seats_unbacked`, suffixed
//! `@<account>` for a quota account's quota). The aggregate keeps their
//! totals, so a decision refuses any entry that verify or replay would refuse
//! later (an overdraft, a total past 64 bits).

use crate::decide::{handle_by_deciding, Decide, Rejection, RejectionKind};
use crate::ids::GrantId;
use crate::journal::{
    Account, AccountType, BalanceError, Balances, JournalEntry, JournalError, Posting,
};
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

/// Sort key of the burn-down order: priority, expiry (none last), promotional
/// before paid, issue order, id.
type BurnOrder = (u8, bool, Option<DateTime<Utc>>, bool, usize, GrantId);

impl Grant {
    /// Units left; `None` for an unlimited grant. Never negative: seats
    /// beyond a grant's amount are held as unbacked, not on the grant.
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

    /// Sort key of the burn-down order; `issue` is the grant's place in
    /// issue order (its index in [`Quota::grants`]).
    fn burn_order(&self, issue: usize) -> BurnOrder {
        (
            self.terms.priority,
            self.terms.expires_at.is_none(),
            self.terms.expires_at,
            self.terms.source != GrantSource::Promocode,
            issue,
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

/// `@<account>` for a quota account's quota, empty for the tenant's own.
fn holder_suffix(holder: Option<&QuotaAccount>) -> String {
    holder.map_or_else(String::new, |account| format!("@{}", account.as_str()))
}

/// Debited by every finite grant issued.
pub fn issued_account(quota: QuotaType, holder: Option<&QuotaAccount>) -> Account {
    Account::new(
        format!("quota_issued:{quota}{}", holder_suffix(holder)),
        AccountType::Equity,
    )
}

/// Credited by every consumption.
pub fn consumed_account(quota: QuotaType, holder: Option<&QuotaAccount>) -> Account {
    Account::new(
        format!("quota_consumed:{quota}{}", holder_suffix(holder)),
        AccountType::Revenue,
    )
}

/// Credited with the unused balance of every grant that closes.
pub fn breakage_account(quota: QuotaType, holder: Option<&QuotaAccount>) -> Account {
    Account::new(
        format!("quota_breakage:{quota}{}", holder_suffix(holder)),
        AccountType::Revenue,
    )
}

/// Credited with every seat allocated, debited with every seat released.
pub fn allocated_account(holder: Option<&QuotaAccount>) -> Account {
    Account::new(
        format!("seats_allocated{}", holder_suffix(holder)),
        AccountType::Liability,
    )
}

/// Debited with seats allocated beyond every open grant's room
/// (over-allocation), credited when a grant takes them or they are released.
pub fn unbacked_account(holder: Option<&QuotaAccount>) -> Account {
    Account::new(
        format!("seats_unbacked{}", holder_suffix(holder)),
        AccountType::Asset,
    )
}

fn is_zero(amount: &Amount) -> bool {
    amount.is_zero()
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
        /// The holder: `None` for the tenant's own quota. Names the quota's
        /// journal accounts; must match the holder of its earlier grants.
        account: Option<QuotaAccount>,
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
        /// The holder (a quota account); absent for the tenant's own quota.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<QuotaAccount>,
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
        /// Released from grants.
        allocations: Vec<Allocation>,
        /// Released from the unbacked (over-allocated) seats, first.
        #[serde(default, skip_serializing_if = "is_zero")]
        unbacked: Amount,
        entry: JournalEntry,
    },
    /// Allocated seats moved: off a grant about to close (`from`), or from
    /// the unbacked seats (`from` absent) onto grants with room.
    SeatsMoved {
        from: Option<GrantId>,
        amount: Amount,
        /// The grants that took them, in burn-down order.
        allocations: Vec<Allocation>,
        /// The part no open grant had room for: over-allocated from now on.
        unbacked: Amount,
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
            | Self::SeatsReleased { entry, .. }
            | Self::SeatsMoved { entry, .. } => Some(entry),
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
            Self::SeatsMoved { .. } => "SeatsMoved",
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
            | Self::ExpiryBeforeEffect
            | Self::SeatsAreNotConsumed
            | Self::OnlySeatsAllocate
            | Self::WrongQuota { .. }
            | Self::WrongHolder { .. }
            | Self::InvalidReference(_)
            | Self::TimeOutOfRange(_) => RejectionKind::Invalid,
            Self::GrantExists(_)
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

/// A quota of one type for one holder, with its grants.
///
/// New fields have no serde default on purpose: a snapshot taken before them
/// fails to deserialize and is replayed from events instead of restoring a
/// state with wrong totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Set by the first grant.
    pub quota: Option<QuotaType>,
    /// The holder, set by the first grant: `None` for the tenant's own.
    pub account: Option<QuotaAccount>,
    /// Every grant, in issue order.
    pub grants: Vec<Grant>,
    /// Seats allocated that no open grant has room for (over-allocation).
    pub unbacked: Amount,
    /// Totals of every journal account this quota posts to (it alone does).
    pub balances: Balances,
}

/// A decision in progress: the state with the events decided so far applied,
/// and those events. Every entry is posted to the working balances as it is
/// recorded, so the decision refuses what verify and replay would refuse.
struct Decision {
    state: Quota,
    events: Vec<QuotaEvent>,
}

impl Decision {
    fn new(quota: &Quota) -> Self {
        Self {
            state: quota.clone(),
            events: Vec::new(),
        }
    }

    fn record(&mut self, event: QuotaEvent) -> Result<(), QuotaError> {
        if let Some(entry) = event.entry() {
            self.state.balances.post(entry)?;
        }
        self.state.fold(event.clone());
        self.events.push(event);
        Ok(())
    }

    fn holder(&self) -> Option<&QuotaAccount> {
        self.state.account.as_ref()
    }

    /// Expires the grants past their expiry at `at`. Seats on them move to
    /// grants with room that are not in `closing`.
    fn expire_due(
        &mut self,
        quota: QuotaType,
        at: DateTime<Utc>,
        closing: &[GrantId],
    ) -> Result<(), QuotaError> {
        let due: Vec<GrantId> = self
            .state
            .grants
            .iter()
            .filter(|grant| {
                grant.status == GrantStatus::Active
                    && grant.terms.expires_at.is_some_and(|expires| expires <= at)
            })
            .map(|grant| grant.terms.grant_id)
            .collect();
        let mut excluded = due.clone();
        excluded.extend_from_slice(closing);
        for grant_id in due {
            self.close(quota, grant_id, &excluded, Ending::Expired, at)?;
        }
        Ok(())
    }

    /// Closes one active grant: its allocated seats move first (to grants
    /// not in `excluded`), then its unused balance is posted as breakage.
    fn close(
        &mut self,
        quota: QuotaType,
        grant_id: GrantId,
        excluded: &[GrantId],
        ending: Ending,
        at: DateTime<Utc>,
    ) -> Result<(), QuotaError> {
        let used = self
            .state
            .grant(grant_id)
            .ok_or(QuotaError::UnknownGrant(grant_id))?
            .used;
        if quota == QuotaType::Seats && !used.is_zero() {
            self.move_seats(Some(grant_id), used, excluded, at)?;
        }
        let grant = self
            .state
            .grant(grant_id)
            .ok_or(QuotaError::UnknownGrant(grant_id))?;
        let breakage = grant.remaining().unwrap_or(Amount::ZERO);
        let entry = if breakage.is_zero() {
            None
        } else {
            Some(JournalEntry::transfer(
                grant.account(),
                breakage_account(quota, self.holder()),
                &quota.asset(),
                breakage,
            )?)
        };
        self.record(match ending {
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
        })
    }

    /// Moves `amount` allocated seats from grant `from` (or from the unbacked
    /// seats) onto usable grants with room, in burn-down order. Seats off a
    /// grant that no grant has room for become unbacked; unbacked seats only
    /// move as far as there is room.
    fn move_seats(
        &mut self,
        from: Option<GrantId>,
        amount: Amount,
        excluded: &[GrantId],
        at: DateTime<Utc>,
    ) -> Result<(), QuotaError> {
        let asset = QuotaType::Seats.asset();
        let mut left = amount;
        let mut allocations = Vec::new();
        let mut postings = Vec::new();
        for grant in self.state.usable(at) {
            if left.is_zero() {
                break;
            }
            let grant_id = grant.terms.grant_id;
            if Some(grant_id) == from || excluded.contains(&grant_id) {
                continue;
            }
            let take = grant.remaining().map_or(left, |room| room.min(left));
            if take.is_zero() {
                continue;
            }
            grant.used.checked_add(take)?;
            postings.push(Posting::debit(grant.account(), asset.clone(), take));
            allocations.push(Allocation {
                grant_id,
                amount: take,
            });
            left = left.checked_sub(take)?;
        }
        let (moved, unbacked) = match from {
            Some(_) => (amount, left),
            None => (amount.checked_sub(left)?, Amount::ZERO),
        };
        if moved.is_zero() {
            return Ok(());
        }
        if !unbacked.is_zero() {
            postings.push(Posting::debit(
                unbacked_account(self.holder()),
                asset.clone(),
                unbacked,
            ));
        }
        let source = match from {
            Some(grant_id) => self
                .state
                .grant(grant_id)
                .ok_or(QuotaError::UnknownGrant(grant_id))?
                .account(),
            None => unbacked_account(self.holder()),
        };
        postings.push(Posting::credit(source, asset, moved));
        self.record(QuotaEvent::SeatsMoved {
            from,
            amount: moved,
            allocations,
            unbacked,
            entry: JournalEntry::new(postings)?,
        })
    }

    /// Unbacked seats move onto usable grants that have room.
    fn absorb_unbacked(&mut self, at: DateTime<Utc>) -> Result<(), QuotaError> {
        let unbacked = self.state.unbacked;
        if unbacked.is_zero() {
            return Ok(());
        }
        self.move_seats(None, unbacked, &[], at)
    }
}

impl Quota {
    pub fn grant(&self, grant_id: GrantId) -> Option<&Grant> {
        self.grants
            .iter()
            .find(|grant| grant.terms.grant_id == grant_id)
    }

    /// Usable grants at `at`, in burn-down order.
    fn usable(&self, at: DateTime<Utc>) -> Vec<&Grant> {
        let mut usable: Vec<(BurnOrder, &Grant)> = self
            .grants
            .iter()
            .enumerate()
            .filter(|(_, grant)| grant.usable_at(at))
            .map(|(issue, grant)| (grant.burn_order(issue), grant))
            .collect();
        usable.sort_by_key(|(order, _)| *order);
        usable.into_iter().map(|(_, grant)| grant).collect()
    }

    /// What can be drawn at `at`. Unbacked seats use up room first.
    pub fn available(&self, at: DateTime<Utc>) -> Result<Available, QuotaError> {
        let mut total = Amount::ZERO;
        for grant in self.usable(at) {
            match grant.remaining() {
                None => return Ok(Available::Unlimited),
                Some(remaining) => total = total.checked_add(remaining)?,
            }
        }
        Ok(Available::Units(
            total.checked_sub(self.unbacked).unwrap_or(Amount::ZERO),
        ))
    }

    /// Seats allocated now: on open grants, and unbacked.
    pub fn allocated(&self) -> Result<Amount, QuotaError> {
        self.grants
            .iter()
            .filter(|grant| grant.status == GrantStatus::Active)
            .try_fold(self.unbacked, |total, grant| total.checked_add(grant.used))
            .map_err(QuotaError::from)
    }

    /// Units the open finite grants can still give: what they have left, or
    /// for seats (which come back when released) their whole amounts. Kept
    /// within 64 bits so that `available` never overflows.
    fn open_units(&self, quota: QuotaType) -> Result<Amount, QuotaError> {
        let mut total = Amount::ZERO;
        for grant in &self.grants {
            if grant.status != GrantStatus::Active {
                continue;
            }
            let units = if quota == QuotaType::Seats {
                grant.terms.amount
            } else {
                grant.remaining()
            };
            if let Some(units) = units {
                total = total.checked_add(units)?;
            }
        }
        Ok(total)
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
            // An unlimited grant still counts what it gave, within 64 bits.
            grant.used.checked_add(take)?;
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
        account: Option<QuotaAccount>,
        terms: GrantTerms,
        at: DateTime<Utc>,
    ) -> Result<Vec<QuotaEvent>, QuotaError> {
        self.check_quota(quota)?;
        if self.quota.is_some() && self.account != account {
            return Err(QuotaError::WrongHolder {
                expected: holder_name(self.account.as_ref()),
                requested: holder_name(account.as_ref()),
            });
        }
        if terms.priority > PRIORITY_MAX {
            return Err(QuotaError::InvalidPriority);
        }
        if terms.amount.is_some_and(Amount::is_zero) {
            return Err(QuotaError::AmountNotPositive);
        }
        crate::time::check("effective_at", terms.effective_at)?;
        if let Some(expires) = terms.expires_at {
            crate::time::check("expires_at", expires)?;
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
        let mut decision = Decision::new(self);
        decision.expire_due(quota, at, &[])?;
        let open = decision
            .state
            .grants
            .iter()
            .filter(|grant| grant.status == GrantStatus::Active)
            .count();
        if open >= OPEN_GRANTS_MAX {
            return Err(QuotaError::TooManyGrants);
        }
        let entry = match terms.amount {
            Some(amount) => {
                decision.state.open_units(quota)?.checked_add(amount)?;
                Some(JournalEntry::transfer(
                    issued_account(quota, account.as_ref()),
                    grant_account(&terms),
                    &quota.asset(),
                    amount,
                )?)
            }
            None => None,
        };
        decision.record(QuotaEvent::GrantIssued {
            quota,
            account,
            terms,
            entry,
        })?;
        if quota == QuotaType::Seats {
            decision.absorb_unbacked(at)?;
        }
        Ok(decision.events)
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
        // A grant exists, so the quota type is known.
        let quota = self.quota.unwrap_or(QuotaType::Credits);
        let mut decision = Decision::new(self);
        decision.expire_due(quota, at, &[grant_id])?;
        let status = decision
            .state
            .grant(grant_id)
            .map_or(GrantStatus::Active, |grant| grant.status);
        if status != GrantStatus::Active {
            return Err(QuotaError::GrantClosed {
                grant_id,
                status: status.as_str(),
            });
        }
        decision.close(quota, grant_id, &[], Ending::Revoked, at)?;
        Ok(decision.events)
    }

    fn decide_end_subscription_grants(
        &self,
        quota: QuotaType,
        ending: Ending,
        at: DateTime<Utc>,
    ) -> Result<Vec<QuotaEvent>, QuotaError> {
        self.check_quota(quota)?;
        let subscription: Vec<GrantId> = self
            .grants
            .iter()
            .filter(|grant| {
                grant.status == GrantStatus::Active
                    && grant.terms.source == GrantSource::Subscription
            })
            .map(|grant| grant.terms.grant_id)
            .collect();
        let mut decision = Decision::new(self);
        decision.expire_due(quota, at, &subscription)?;
        for grant_id in &subscription {
            let still_open = decision
                .state
                .grant(*grant_id)
                .is_some_and(|grant| grant.status == GrantStatus::Active);
            if still_open {
                decision.close(quota, *grant_id, &subscription, ending, at)?;
            }
        }
        Ok(decision.events)
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
        if let Some(reference) = &reference {
            crate::text::check_storable(reference, REFERENCE_LENGTH_MAX)
                .map_err(QuotaError::InvalidReference)?;
        }
        let mut decision = Decision::new(self);
        decision.expire_due(quota, at, &[])?;
        let draws = decision.state.draw(quota, amount, at)?;
        let mut postings: Vec<Posting> = draws
            .iter()
            .map(|(allocation, account)| {
                Posting::debit(account.clone(), quota.asset(), allocation.amount)
            })
            .collect();
        postings.push(Posting::credit(
            consumed_account(quota, decision.holder()),
            quota.asset(),
            amount,
        ));
        decision.record(QuotaEvent::QuotaConsumed {
            amount,
            reference,
            allocations: draws
                .into_iter()
                .map(|(allocation, _)| allocation)
                .collect(),
            entry: JournalEntry::new(postings)?,
        })?;
        Ok(decision.events)
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
        let mut decision = Decision::new(self);
        decision.expire_due(QuotaType::Seats, at, &[])?;
        // Grants that came into effect since take unbacked seats first; any
        // still unbacked leave no room, so nothing is allocated.
        decision.absorb_unbacked(at)?;
        if !decision.state.unbacked.is_zero() {
            return Err(QuotaError::QuotaExceeded {
                quota: QuotaType::Seats,
                requested: amount.value(),
                available: 0,
            });
        }
        let draws = decision.state.draw(QuotaType::Seats, amount, at)?;
        let mut postings: Vec<Posting> = draws
            .iter()
            .map(|(allocation, account)| {
                Posting::debit(account.clone(), QuotaType::Seats.asset(), allocation.amount)
            })
            .collect();
        postings.push(Posting::credit(
            allocated_account(decision.holder()),
            QuotaType::Seats.asset(),
            amount,
        ));
        decision.record(QuotaEvent::SeatsAllocated {
            amount,
            allocations: draws
                .into_iter()
                .map(|(allocation, _)| allocation)
                .collect(),
            entry: JournalEntry::new(postings)?,
        })?;
        Ok(decision.events)
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
        let mut decision = Decision::new(self);
        decision.expire_due(QuotaType::Seats, at, &[])?;
        let asset = QuotaType::Seats.asset();
        let holder = decision.holder().cloned();
        // Unbacked seats go first (they are the over-allocation), then seats
        // return to the grants burnt last first.
        let unbacked = decision.state.unbacked.min(amount);
        let mut left = amount.checked_sub(unbacked)?;
        let mut postings = vec![Posting::debit(
            allocated_account(holder.as_ref()),
            asset.clone(),
            amount,
        )];
        if !unbacked.is_zero() {
            postings.push(Posting::credit(
                unbacked_account(holder.as_ref()),
                asset.clone(),
                unbacked,
            ));
        }
        let mut holders: Vec<(BurnOrder, &Grant)> = decision
            .state
            .grants
            .iter()
            .enumerate()
            .filter(|(_, grant)| grant.status == GrantStatus::Active && !grant.used.is_zero())
            .map(|(issue, grant)| (grant.burn_order(issue), grant))
            .collect();
        holders.sort_by_key(|(order, _)| std::cmp::Reverse(*order));
        let mut allocations = Vec::new();
        for (_, grant) in holders {
            if left.is_zero() {
                break;
            }
            let take = grant.used.min(left);
            allocations.push(Allocation {
                grant_id: grant.terms.grant_id,
                amount: take,
            });
            postings.push(Posting::credit(grant.account(), asset.clone(), take));
            left = left.checked_sub(take)?;
        }
        if !left.is_zero() {
            // Moves keep the allocated total, so this cannot happen.
            return Err(QuotaError::ReleaseExceedsAllocated {
                requested: amount.value(),
                allocated: allocated.value(),
            });
        }
        decision.record(QuotaEvent::SeatsReleased {
            amount,
            allocations,
            unbacked,
            entry: JournalEntry::new(postings)?,
        })?;
        Ok(decision.events)
    }

    fn grant_mut(&mut self, grant_id: GrantId) -> Option<&mut Grant> {
        self.grants
            .iter_mut()
            .find(|grant| grant.terms.grant_id == grant_id)
    }

    /// Adds (or with `release`, takes) each allocation to its grant's `used`.
    /// Decisions check these sums, so the fallbacks are never taken.
    fn use_allocations(&mut self, allocations: &[Allocation], release: bool) {
        for allocation in allocations {
            if let Some(grant) = self.grant_mut(allocation.grant_id) {
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

    /// Folds an event into the grants (everything but the journal totals).
    fn fold(&mut self, event: QuotaEvent) {
        match event {
            QuotaEvent::GrantIssued {
                quota,
                account,
                terms,
                ..
            } => {
                if self.grants.is_empty() {
                    self.account = account;
                }
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
            QuotaEvent::SeatsReleased {
                allocations,
                unbacked,
                ..
            } => {
                self.use_allocations(&allocations, true);
                self.unbacked = self.unbacked.checked_sub(unbacked).unwrap_or(Amount::ZERO);
            }
            QuotaEvent::SeatsMoved {
                from,
                amount,
                allocations,
                unbacked,
                ..
            } => {
                match from {
                    Some(grant_id) => {
                        self.use_allocations(&[Allocation { grant_id, amount }], true)
                    }
                    None => {
                        self.unbacked = self.unbacked.checked_sub(amount).unwrap_or(Amount::ZERO)
                    }
                }
                self.use_allocations(&allocations, false);
                self.unbacked = self.unbacked.checked_add(unbacked).unwrap_or(self.unbacked);
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
        if let Some(entry) = event.entry() {
            // Decisions post every entry before recording it, so a stored
            // entry is accepted here; one that is not (a history the domain
            // never decided) is what verify and replay report.
            let _ = self.balances.post(entry);
        }
        self.fold(event);
    }
}

impl Decide for Quota {
    fn journal_entry(event: &QuotaEvent) -> Option<&JournalEntry> {
        event.entry()
    }

    fn decide(&self, command: QuotaCommand) -> Result<Vec<QuotaEvent>, QuotaError> {
        match command {
            QuotaCommand::IssueGrant {
                quota,
                account,
                terms,
                at,
            } => self.decide_issue(quota, account, terms, at),
            QuotaCommand::RevokeGrant { grant_id, at } => self.decide_revoke(grant_id, at),
            QuotaCommand::EndSubscriptionGrants { quota, ending, at } => {
                self.decide_end_subscription_grants(quota, ending, at)
            }
            QuotaCommand::ExpireGrants { quota, at } => {
                self.check_quota(quota)?;
                let mut decision = Decision::new(self);
                decision.expire_due(quota, at, &[])?;
                Ok(decision.events)
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
                issued_account(quota, None),
                grant_account(&terms),
                &quota.asset(),
                amount,
            )
            .unwrap()
        });
        QuotaEvent::GrantIssued {
            quota,
            account: None,
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
            consumed_account(quota, None),
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
                account: None,
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
                account: None,
                quota: QuotaType::Runs,
                terms: grant.clone(),
                at: at(1),
            })
            .then_expect_events(vec![QuotaEvent::GrantIssued {
                quota: QuotaType::Runs,
                account: None,
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
                account: None,
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
                account: None,
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
                account: None,
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
                account: None,
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
                account: None,
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
                account: None,
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
    fn a_lower_priority_number_burns_first_even_against_an_earlier_expiry() {
        // Priority is the first key: it beats expiry.
        let mut first = terms(1, GrantSource::Purchase, Some(5));
        first.priority = 10;
        let mut expiring = terms(2, GrantSource::Purchase, Some(5));
        expiring.expires_at = Some(at(10));
        Given::with(())
            .given(vec![
                issued(QuotaType::Credits, expiring.clone()),
                issued(QuotaType::Credits, first.clone()),
            ])
            .when(consume(6, 1))
            .then_expect_events(vec![consumed(
                QuotaType::Credits,
                &[(&first, 5), (&expiring, 1)],
                None,
            )]);
    }

    #[test]
    fn an_earlier_expiry_burns_first_even_when_the_other_grant_is_promotional() {
        // Expiry is the second key: it beats promotional before paid.
        let mut paid = terms(1, GrantSource::Purchase, Some(5));
        paid.expires_at = Some(at(10));
        let mut promo = terms(2, GrantSource::Promocode, Some(5));
        promo.expires_at = Some(at(20));
        Given::with(())
            .given(vec![
                issued(QuotaType::Credits, promo.clone()),
                issued(QuotaType::Credits, paid.clone()),
            ])
            .when(consume(6, 1))
            .then_expect_events(vec![consumed(
                QuotaType::Credits,
                &[(&paid, 5), (&promo, 1)],
                None,
            )]);
    }

    #[test]
    fn a_promotional_grant_burns_before_an_older_paid_one() {
        // Promotional before paid is the third key: it beats age.
        let paid = terms(1, GrantSource::Subscription, Some(5));
        let promo = terms(2, GrantSource::Promocode, Some(5));
        Given::with(())
            .given(vec![
                issued(QuotaType::Credits, paid.clone()),
                issued(QuotaType::Credits, promo.clone()),
            ])
            .when(consume(6, 1))
            .then_expect_events(vec![consumed(
                QuotaType::Credits,
                &[(&promo, 5), (&paid, 1)],
                None,
            )]);
    }

    #[test]
    fn the_grant_issued_first_burns_first_whatever_its_id_or_backdated_effective_time() {
        // Age is issue order, the fourth key: it beats the id, and a later
        // grant backdating its effective time does not make it older.
        let mut older = terms(9, GrantSource::Purchase, Some(5));
        older.effective_at = at(1);
        let mut backdated = terms(1, GrantSource::Purchase, Some(5));
        backdated.effective_at = at(0);
        Given::with(())
            .given(vec![
                issued(QuotaType::Credits, older.clone()),
                issued(QuotaType::Credits, backdated.clone()),
            ])
            .when(consume(6, 2))
            .then_expect_events(vec![consumed(
                QuotaType::Credits,
                &[(&older, 5), (&backdated, 1)],
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
            breakage_account(QuotaType::Credits, None),
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
            breakage_account(QuotaType::Credits, None),
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
            .then_expect_error(QuotaError::InvalidReference(
                crate::text::TextError::TooLong {
                    max_chars: REFERENCE_LENGTH_MAX,
                },
            ));
    }

    #[test]
    fn references_with_nul_are_rejected_and_consume_nothing() {
        // Other control characters are refused at the edge; the decision
        // keeps to what storage needs, so earlier history re-decides alike.
        let grant = terms(1, GrantSource::Purchase, Some(5));
        for (reference, code_point, index) in [("run\u{0}1", 0, 3), ("\u{0}", 0, 0)] {
            Given::with(())
                .given(vec![issued(QuotaType::Credits, grant.clone())])
                .when(QuotaCommand::Consume {
                    quota: QuotaType::Credits,
                    amount: units(1),
                    reference: Some(reference.to_string()),
                    at: at(1),
                })
                .then_expect_error(QuotaError::InvalidReference(
                    crate::text::TextError::ControlCharacter { code_point, index },
                ));
        }
    }

    #[test]
    fn grant_times_outside_the_storable_range_are_rejected_naming_the_field() {
        let ancient: DateTime<Utc> = "-5000-01-01T00:00:00Z".parse().unwrap();
        let mut early = terms(1, GrantSource::Purchase, Some(5));
        early.effective_at = ancient;
        Given::with(())
            .given_no_previous_events()
            .when(QuotaCommand::IssueGrant {
                quota: QuotaType::Credits,
                account: None,
                terms: early,
                at: at(1),
            })
            .then_expect_error(QuotaError::TimeOutOfRange(crate::time::TimeOutOfRange {
                field: "effective_at",
            }));
        let mut late = terms(1, GrantSource::Purchase, Some(5));
        late.expires_at = Some(ancient);
        Given::with(())
            .given_no_previous_events()
            .when(QuotaCommand::IssueGrant {
                quota: QuotaType::Credits,
                account: None,
                terms: late,
                at: at(1),
            })
            .then_expect_error(QuotaError::TimeOutOfRange(crate::time::TimeOutOfRange {
                field: "expires_at",
            }));
        // What storage holds, the decision accepts (the edge is stricter):
        // history from before the edge's bounds re-decides alike.
        let mut old = terms(1, GrantSource::Purchase, Some(5));
        old.effective_at = "1900-01-01T00:00:00Z".parse().unwrap();
        old.expires_at = Some(crate::time::TIME_MAX);
        assert_eq!(
            Quota::default()
                .decide(QuotaCommand::IssueGrant {
                    quota: QuotaType::Credits,
                    account: None,
                    terms: old,
                    at: at(1),
                })
                .map(|events| events.len()),
            Ok(1)
        );
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
            allocated_account(None),
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
            allocated_account(None),
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
                unbacked: Amount::ZERO,
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
            breakage_account(QuotaType::Credits, None),
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
            breakage_account(QuotaType::Credits, None),
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

    fn max() -> Amount {
        units(i64::MAX)
    }

    fn revoked(quota: QuotaType, grant: &GrantTerms, breakage: i64, hour: u32) -> QuotaEvent {
        QuotaEvent::GrantRevoked {
            grant_id: grant.grant_id,
            revoked_at: at(hour),
            breakage: units(breakage),
            entry: (breakage > 0).then(|| {
                JournalEntry::transfer(
                    grant_account(grant),
                    breakage_account(quota, None),
                    &quota.asset(),
                    units(breakage),
                )
                .unwrap()
            }),
        }
    }

    fn seats_allocated(draws: &[(&GrantTerms, i64)]) -> QuotaEvent {
        let total: i64 = draws.iter().map(|(_, amount)| amount).sum();
        let mut postings: Vec<Posting> = draws
            .iter()
            .map(|(terms, amount)| {
                Posting::debit(
                    grant_account(terms),
                    QuotaType::Seats.asset(),
                    units(*amount),
                )
            })
            .collect();
        postings.push(Posting::credit(
            allocated_account(None),
            QuotaType::Seats.asset(),
            units(total),
        ));
        QuotaEvent::SeatsAllocated {
            amount: units(total),
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

    /// Seats moved off `from` (or out of the unbacked seats) onto `to`, the
    /// rest unbacked; postings in the order the decision writes them.
    fn seats_moved(
        from: Option<&GrantTerms>,
        to: &[(&GrantTerms, i64)],
        unbacked: i64,
    ) -> QuotaEvent {
        let asset = QuotaType::Seats.asset();
        let placed: i64 = to.iter().map(|(_, amount)| amount).sum();
        let mut postings: Vec<Posting> = to
            .iter()
            .map(|(terms, amount)| {
                Posting::debit(grant_account(terms), asset.clone(), units(*amount))
            })
            .collect();
        if unbacked > 0 {
            postings.push(Posting::debit(
                unbacked_account(None),
                asset.clone(),
                units(unbacked),
            ));
        }
        let source = from.map_or_else(|| unbacked_account(None), grant_account);
        postings.push(Posting::credit(source, asset, units(placed + unbacked)));
        QuotaEvent::SeatsMoved {
            from: from.map(|terms| terms.grant_id),
            amount: units(placed + unbacked),
            allocations: to
                .iter()
                .map(|(terms, amount)| Allocation {
                    grant_id: terms.grant_id,
                    amount: units(*amount),
                })
                .collect(),
            unbacked: units(unbacked),
            entry: JournalEntry::new(postings).unwrap(),
        }
    }

    fn end_subscription(quota: QuotaType, ending: Ending, hour: u32) -> QuotaCommand {
        QuotaCommand::EndSubscriptionGrants {
            quota,
            ending,
            at: at(hour),
        }
    }

    fn issue(quota: QuotaType, terms: GrantTerms, hour: u32) -> QuotaCommand {
        QuotaCommand::IssueGrant {
            quota,
            account: None,
            terms,
            at: at(hour),
        }
    }

    #[test]
    fn a_grant_that_would_take_the_open_total_past_64_bits_is_rejected_with_overflow() {
        let full = terms(1, GrantSource::Purchase, Some(i64::MAX));
        Given::with(())
            .given(vec![issued(QuotaType::Credits, full)])
            .when(issue(
                QuotaType::Credits,
                terms(2, GrantSource::Purchase, Some(1)),
                1,
            ))
            .then_expect_error(QuotaError::Overflow);
    }

    #[test]
    fn seat_grants_count_their_whole_amount_towards_the_64_bit_limit() {
        // Seats come back when released, so a seat grant's amount counts
        // even while its seats are allocated.
        let full = terms(1, GrantSource::Purchase, Some(i64::MAX));
        Given::with(())
            .given(vec![
                issued(QuotaType::Seats, full.clone()),
                seats_allocated(&[(&full, i64::MAX)]),
            ])
            .when(issue(
                QuotaType::Seats,
                terms(2, GrantSource::Purchase, Some(1)),
                1,
            ))
            .then_expect_error(QuotaError::Overflow);
    }

    #[test]
    fn a_grant_that_would_take_the_issued_accounts_debits_past_64_bits_is_rejected() {
        // Nothing is open, but quota_issued:credits already has i64::MAX
        // debits: verify would refuse the entry, so the decision does.
        let full = terms(1, GrantSource::Purchase, Some(i64::MAX));
        Given::with(())
            .given(vec![
                issued(QuotaType::Credits, full.clone()),
                revoked(QuotaType::Credits, &full, i64::MAX, 1),
            ])
            .when(issue(
                QuotaType::Credits,
                terms(2, GrantSource::Purchase, Some(1)),
                2,
            ))
            .then_expect_error(QuotaError::Overflow);
    }

    #[test]
    fn consuming_past_64_bits_from_an_unlimited_grant_is_rejected_with_overflow() {
        let unlimited = terms(1, GrantSource::Purchase, None);
        let mut events = vec![issued(QuotaType::Credits, unlimited.clone())];
        events.push(QuotaEvent::QuotaConsumed {
            amount: max(),
            reference: None,
            allocations: vec![Allocation {
                grant_id: id(1),
                amount: max(),
            }],
            entry: JournalEntry::transfer(
                grant_account(&unlimited),
                consumed_account(QuotaType::Credits, None),
                &QuotaType::Credits.asset(),
                max(),
            )
            .unwrap(),
        });
        Given::with(())
            .given(events)
            .when(consume(1, 1))
            .then_expect_error(QuotaError::Overflow);
    }

    #[test]
    fn consuming_when_the_consumed_account_would_pass_64_bits_is_rejected() {
        // Two unlimited grants each within 64 bits; their consumption account
        // is shared and would overflow.
        let first = terms(1, GrantSource::Purchase, None);
        let mut second = terms(2, GrantSource::Purchase, None);
        second.priority = 60;
        let consumed_max = QuotaEvent::QuotaConsumed {
            amount: max(),
            reference: None,
            allocations: vec![Allocation {
                grant_id: id(1),
                amount: max(),
            }],
            entry: JournalEntry::transfer(
                grant_account(&first),
                consumed_account(QuotaType::Credits, None),
                &QuotaType::Credits.asset(),
                max(),
            )
            .unwrap(),
        };
        Given::with(())
            .given(vec![
                issued(QuotaType::Credits, first.clone()),
                consumed_max,
                revoked(QuotaType::Credits, &first, 0, 1),
                issued(QuotaType::Credits, second),
            ])
            .when(consume(1, 2))
            .then_expect_error(QuotaError::Overflow);
    }

    #[test]
    fn a_quota_holding_the_most_open_grants_refuses_another() {
        let events: Vec<QuotaEvent> = (0..OPEN_GRANTS_MAX as u128)
            .map(|n| {
                issued(
                    QuotaType::Runs,
                    terms(n + 1, GrantSource::Purchase, Some(1)),
                )
            })
            .collect();
        Given::with(())
            .given(events)
            .when(issue(
                QuotaType::Runs,
                terms(5_000, GrantSource::Purchase, Some(1)),
                1,
            ))
            .then_expect_error(QuotaError::TooManyGrants);
    }

    #[test]
    fn a_grant_expiring_in_the_same_command_makes_room_for_another() {
        let mut events: Vec<QuotaEvent> = (1..OPEN_GRANTS_MAX as u128)
            .map(|n| {
                issued(
                    QuotaType::Runs,
                    terms(n + 1, GrantSource::Purchase, Some(1)),
                )
            })
            .collect();
        let mut expiring = terms(1, GrantSource::Purchase, Some(1));
        expiring.expires_at = Some(at(3));
        events.push(issued(QuotaType::Runs, expiring.clone()));
        let next = terms(5_000, GrantSource::Purchase, Some(1));
        let breakage = JournalEntry::transfer(
            grant_account(&expiring),
            breakage_account(QuotaType::Runs, None),
            &QuotaType::Runs.asset(),
            units(1),
        )
        .unwrap();
        Given::with(())
            .given(events)
            .when(issue(QuotaType::Runs, next.clone(), 3))
            .then_expect_events(vec![
                QuotaEvent::GrantExpired {
                    grant_id: id(1),
                    expired_at: at(3),
                    breakage: units(1),
                    entry: Some(breakage),
                },
                issued(QuotaType::Runs, next),
            ]);
    }

    #[test]
    fn revoking_a_grant_that_expires_in_the_same_command_is_rejected_as_expired() {
        let mut expiring = terms(1, GrantSource::Purchase, Some(4));
        expiring.expires_at = Some(at(5));
        Given::with(())
            .given(vec![issued(QuotaType::Credits, expiring)])
            .when(QuotaCommand::RevokeGrant {
                grant_id: id(1),
                at: at(5),
            })
            .then_expect_error(QuotaError::GrantClosed {
                grant_id: id(1),
                status: "expired",
            });
    }

    #[test]
    fn ending_subscription_grants_as_expired_records_expiry_with_breakage() {
        let subscription = terms(1, GrantSource::Subscription, Some(10));
        let breakage = JournalEntry::transfer(
            grant_account(&subscription),
            breakage_account(QuotaType::Runs, None),
            &QuotaType::Runs.asset(),
            units(7),
        )
        .unwrap();
        Given::with(())
            .given(vec![
                issued(QuotaType::Runs, subscription.clone()),
                consumed(QuotaType::Runs, &[(&subscription, 3)], None),
            ])
            .when(end_subscription(QuotaType::Runs, Ending::Expired, 4))
            .then_expect_events(vec![QuotaEvent::GrantExpired {
                grant_id: id(1),
                expired_at: at(4),
                breakage: units(7),
                entry: Some(breakage),
            }]);
    }

    #[test]
    fn a_quota_accounts_grants_post_to_that_accounts_own_journal_accounts() {
        let holder = QuotaAccount::parse("user-42").unwrap();
        let grant = terms(1, GrantSource::Purchase, Some(5));
        let entry = JournalEntry::transfer(
            issued_account(QuotaType::Credits, Some(&holder)),
            grant_account(&grant),
            &QuotaType::Credits.asset(),
            units(5),
        )
        .unwrap();
        assert_eq!(
            entry.postings()[0].account.code,
            "quota_issued:credits@user-42"
        );
        Given::with(())
            .given_no_previous_events()
            .when(QuotaCommand::IssueGrant {
                quota: QuotaType::Credits,
                account: Some(holder.clone()),
                terms: grant.clone(),
                at: at(1),
            })
            .then_expect_events(vec![QuotaEvent::GrantIssued {
                quota: QuotaType::Credits,
                account: Some(holder),
                terms: grant,
                entry: Some(entry),
            }]);
    }

    #[test]
    fn a_grant_for_another_holder_of_the_quota_is_rejected() {
        Given::with(())
            .given(vec![issued(
                QuotaType::Credits,
                terms(1, GrantSource::Purchase, Some(5)),
            )])
            .when(QuotaCommand::IssueGrant {
                quota: QuotaType::Credits,
                account: Some(QuotaAccount::parse("user-42").unwrap()),
                terms: terms(2, GrantSource::Purchase, Some(5)),
                at: at(1),
            })
            .then_expect_error(QuotaError::WrongHolder {
                expected: "the tenant".into(),
                requested: "user-42".into(),
            });
        let user = QuotaAccount::parse("user-42").unwrap();
        assert_eq!(
            (holder_name(None), holder_name(Some(&user))),
            ("the tenant".to_string(), "user-42".to_string())
        );
    }

    #[test]
    fn closing_a_seat_grant_moves_its_allocated_seats_to_an_open_grant_with_room() {
        let plan = terms(1, GrantSource::Subscription, Some(1));
        let mut bought = terms(2, GrantSource::Purchase, Some(10));
        bought.priority = 90;
        Given::with(())
            .given(vec![
                issued(QuotaType::Seats, plan.clone()),
                issued(QuotaType::Seats, bought.clone()),
                seats_allocated(&[(&plan, 1)]),
            ])
            .when(end_subscription(QuotaType::Seats, Ending::Revoked, 2))
            .then_expect_events(vec![
                seats_moved(Some(&plan), &[(&bought, 1)], 0),
                revoked(QuotaType::Seats, &plan, 1, 2),
            ]);
    }

    #[test]
    fn seats_of_a_closed_grant_with_no_room_elsewhere_are_unbacked_until_a_new_grant_takes_them() {
        // hobby (1 seat, allocated) -> team (10): the seat ends up on the
        // team grant, which has 9 left, not 10.
        let hobby = terms(1, GrantSource::Subscription, Some(1));
        let team = terms(2, GrantSource::Subscription, Some(10));
        let before = vec![
            issued(QuotaType::Seats, hobby.clone()),
            seats_allocated(&[(&hobby, 1)]),
        ];
        Given::with(())
            .given(before.clone())
            .when(end_subscription(QuotaType::Seats, Ending::Revoked, 2))
            .then_expect_events(vec![
                seats_moved(Some(&hobby), &[], 1),
                revoked(QuotaType::Seats, &hobby, 1, 2),
            ]);
        let mut ended = before;
        ended.push(seats_moved(Some(&hobby), &[], 1));
        ended.push(revoked(QuotaType::Seats, &hobby, 1, 2));
        Given::with(())
            .given(ended.clone())
            .when(issue(QuotaType::Seats, team.clone(), 2))
            .then_expect_events(vec![
                issued(QuotaType::Seats, team.clone()),
                seats_moved(None, &[(&team, 1)], 0),
            ]);
        let mut quota = Quota::default();
        for event in ended.clone() {
            quota.apply(event);
        }
        assert_eq!(quota.allocated(), Ok(units(1)));
        assert_eq!(quota.available(at(2)), Ok(Available::Units(Amount::ZERO)));
        quota.apply(issued(QuotaType::Seats, team.clone()));
        quota.apply(seats_moved(None, &[(&team, 1)], 0));
        assert_eq!(quota.allocated(), Ok(units(1)));
        assert_eq!(quota.available(at(2)), Ok(Available::Units(units(9))));
        let mut changed = ended;
        changed.push(issued(QuotaType::Seats, team.clone()));
        changed.push(seats_moved(None, &[(&team, 1)], 0));
        Given::with(())
            .given(changed.clone())
            .when(QuotaCommand::AllocateSeats {
                amount: units(10),
                at: at(3),
            })
            .then_expect_error(QuotaError::QuotaExceeded {
                quota: QuotaType::Seats,
                requested: 10,
                available: 9,
            });
        // Releasing after the change credits the team grant, never the
        // closed hobby grant.
        let release = JournalEntry::new(vec![
            Posting::debit(allocated_account(None), QuotaType::Seats.asset(), units(1)),
            Posting::credit(grant_account(&team), QuotaType::Seats.asset(), units(1)),
        ])
        .unwrap();
        Given::with(())
            .given(changed)
            .when(QuotaCommand::ReleaseSeats {
                amount: units(1),
                at: at(3),
            })
            .then_expect_events(vec![QuotaEvent::SeatsReleased {
                amount: units(1),
                allocations: vec![Allocation {
                    grant_id: id(2),
                    amount: units(1),
                }],
                unbacked: Amount::ZERO,
                entry: release,
            }]);
    }

    #[test]
    fn an_over_allocated_quota_refuses_allocation_and_releases_unbacked_seats_first() {
        // team (10 seats, all allocated) -> hobby (1): 9 seats are unbacked.
        let team = terms(1, GrantSource::Subscription, Some(10));
        let hobby = terms(2, GrantSource::Subscription, Some(1));
        let history = vec![
            issued(QuotaType::Seats, team.clone()),
            seats_allocated(&[(&team, 10)]),
            seats_moved(Some(&team), &[], 10),
            revoked(QuotaType::Seats, &team, 10, 2),
            issued(QuotaType::Seats, hobby.clone()),
            seats_moved(None, &[(&hobby, 1)], 0),
        ];
        let mut quota = Quota::default();
        for event in history.clone() {
            quota.apply(event);
        }
        assert_eq!(quota.unbacked, units(9));
        assert_eq!(quota.allocated(), Ok(units(10)));
        assert_eq!(quota.available(at(3)), Ok(Available::Units(Amount::ZERO)));
        Given::with(())
            .given(history.clone())
            .when(QuotaCommand::AllocateSeats {
                amount: units(1),
                at: at(3),
            })
            .then_expect_error(QuotaError::QuotaExceeded {
                quota: QuotaType::Seats,
                requested: 1,
                available: 0,
            });
        let release = JournalEntry::new(vec![
            Posting::debit(allocated_account(None), QuotaType::Seats.asset(), units(10)),
            Posting::credit(unbacked_account(None), QuotaType::Seats.asset(), units(9)),
            Posting::credit(grant_account(&hobby), QuotaType::Seats.asset(), units(1)),
        ])
        .unwrap();
        Given::with(())
            .given(history.clone())
            .when(QuotaCommand::ReleaseSeats {
                amount: units(10),
                at: at(3),
            })
            .then_expect_events(vec![QuotaEvent::SeatsReleased {
                amount: units(10),
                allocations: vec![Allocation {
                    grant_id: id(2),
                    amount: units(1),
                }],
                unbacked: units(9),
                entry: release,
            }]);
        Given::with(())
            .given(history)
            .when(QuotaCommand::ReleaseSeats {
                amount: units(11),
                at: at(3),
            })
            .then_expect_error(QuotaError::ReleaseExceedsAllocated {
                requested: 11,
                allocated: 10,
            });
    }

    #[test]
    fn a_seat_grant_coming_into_effect_takes_unbacked_seats_before_any_allocation() {
        let plan = terms(1, GrantSource::Subscription, Some(2));
        let mut later = terms(2, GrantSource::Purchase, Some(5));
        later.effective_at = at(5);
        let history = vec![
            issued(QuotaType::Seats, plan.clone()),
            seats_allocated(&[(&plan, 2)]),
            issued(QuotaType::Seats, later.clone()),
            seats_moved(Some(&plan), &[], 2),
            revoked(QuotaType::Seats, &plan, 2, 2),
        ];
        Given::with(())
            .given(history)
            .when(QuotaCommand::AllocateSeats {
                amount: units(3),
                at: at(6),
            })
            .then_expect_events(vec![
                seats_moved(None, &[(&later, 2)], 0),
                seats_allocated(&[(&later, 3)]),
            ]);
    }
}
