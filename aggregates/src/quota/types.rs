//! The quota's vocabulary: quota types and accounts, aggregate ids, grants
//! (terms, source, status, what is left) and the journal accounts a quota
//! posts to.

use crate::ids::GrantId;
use crate::journal::{Account, AccountType};
use crate::money::{Amount, Asset};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a quota measures.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
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
        Some(account) => [quota.as_str(), "@", account.as_str()].concat(),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

    /// The grant's own account: credited on issue, debited when used.
    /// Finite grants refuse overdraft.
    pub fn account(&self) -> Account {
        grant_account(&self.terms)
    }
}

/// The journal account of a grant.
/// Whether `code` names one of the quota domain's own accounts (a grant's,
/// a quota's totals, the seats gauge): those are posted by their quota
/// only, and no journal account may take their code.
pub fn is_quota_account(code: &str) -> bool {
    const PREFIXES: [&str; 6] = [
        "grant:",
        "quota_issued:",
        "quota_consumed:",
        "quota_breakage:",
        "seats_allocated",
        "seats_unbacked",
    ];
    PREFIXES.iter().any(|prefix| code.starts_with(prefix))
}

pub fn grant_account(terms: &GrantTerms) -> Account {
    let account = Account::new(format!("grant:{}", terms.grant_id), AccountType::Liability);
    if terms.amount.is_some() {
        account.without_overdraft()
    } else {
        account
    }
}

/// `<prefix>`, then `@<account>` for a quota account's quota (nothing for
/// the tenant's own), in one allocation.
fn held_code(prefix: &[&str], holder: Option<&QuotaAccount>) -> String {
    let suffix: &[&str] = match holder {
        Some(account) => &["@", account.as_str()],
        None => &[],
    };
    let mut code = String::with_capacity(prefix.iter().chain(suffix).map(|part| part.len()).sum());
    for part in prefix.iter().chain(suffix) {
        code.push_str(part);
    }
    code
}

/// Debited by every finite grant issued.
pub fn issued_account(quota: QuotaType, holder: Option<&QuotaAccount>) -> Account {
    Account::new(
        held_code(&["quota_issued:", quota.as_str()], holder),
        AccountType::Equity,
    )
}

/// Credited by every consumption.
pub fn consumed_account(quota: QuotaType, holder: Option<&QuotaAccount>) -> Account {
    Account::new(
        held_code(&["quota_consumed:", quota.as_str()], holder),
        AccountType::Revenue,
    )
}

/// Credited with the unused balance of every grant that closes.
pub fn breakage_account(quota: QuotaType, holder: Option<&QuotaAccount>) -> Account {
    Account::new(
        held_code(&["quota_breakage:", quota.as_str()], holder),
        AccountType::Revenue,
    )
}

/// Credited with every seat allocated, debited with every seat released.
pub fn allocated_account(holder: Option<&QuotaAccount>) -> Account {
    Account::new(
        held_code(&["seats_allocated"], holder),
        AccountType::Liability,
    )
}

/// Debited with seats allocated beyond every open grant's room
/// (over-allocation), credited when a grant takes them or they are released.
pub fn unbacked_account(holder: Option<&QuotaAccount>) -> Account {
    Account::new(held_code(&["seats_unbacked"], holder), AccountType::Asset)
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
