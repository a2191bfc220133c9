//! The double-entry core: accounts, postings and journal entries that cannot
//! be unbalanced.
//!
//! Every quota movement is a journal entry in a quota asset: issuing a grant
//! credits the grant's account, consuming debits it, expiry and revocation
//! post the unused balance as breakage. Per asset, the debits of an entry
//! equal its credits; an entry that does not balance cannot be constructed
//! (nor deserialized).

pub mod account;
pub mod asset;
pub mod entry;
pub mod hold;
pub mod lots;
pub mod split;

use crate::money::{Amount, AmountError, Asset};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Most postings in one entry.
pub const POSTINGS_MAX: usize = 1_000;

/// What an account is, for reporting and sign conventions.
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
pub enum AccountType {
    Asset,
    Liability,
    Equity,
    Revenue,
    Expense,
}

impl AccountType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asset => "asset",
            Self::Liability => "liability",
            Self::Equity => "equity",
            Self::Revenue => "revenue",
            Self::Expense => "expense",
        }
    }

    /// The type `as_str` names.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Asset,
            Self::Liability,
            Self::Equity,
            Self::Revenue,
            Self::Expense,
        ]
        .into_iter()
        .find(|account_type| account_type.as_str() == text)
    }

    /// What an account of this type can still give on its normal side:
    /// for a debit-normal one (asset, expense) posted debits less posted
    /// and pending credits; for a credit-normal one (liability, equity,
    /// revenue) the mirror. Negative when overdrawn.
    pub fn available(
        self,
        debits_posted: i128,
        credits_posted: i128,
        debits_pending: i128,
        credits_pending: i128,
    ) -> i128 {
        match self {
            Self::Asset | Self::Expense => debits_posted - credits_posted - credits_pending,
            Self::Liability | Self::Equity | Self::Revenue => {
                credits_posted - debits_posted - debits_pending
            }
        }
    }
}

/// Rules an account enforces on its balance.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct AccountFlags {
    /// No overdraft: total debits (posted, and pending ones too, however
    /// they resolve) never exceed posted credits.
    #[serde(default)]
    pub debits_must_not_exceed_credits: bool,
    /// The mirror: total credits never exceed posted debits.
    #[serde(default, skip_serializing_if = "is_false")]
    pub credits_must_not_exceed_debits: bool,
}

fn is_false(flag: &bool) -> bool {
    !flag
}

/// An account of a tenant: a code, a type and flags.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Account {
    /// e.g. `grant:0190…`, `quota_consumed:credits`.
    pub code: String,
    #[serde(rename = "type")]
    pub account_type: AccountType,
    /// Omitted when all off.
    #[serde(default, skip_serializing_if = "is_default")]
    pub flags: AccountFlags,
}

fn is_default(flags: &AccountFlags) -> bool {
    *flags == AccountFlags::default()
}

impl Account {
    pub fn new(code: impl Into<String>, account_type: AccountType) -> Self {
        Self {
            code: code.into(),
            account_type,
            flags: AccountFlags::default(),
        }
    }

    /// The same account refusing overdraft.
    pub fn without_overdraft(mut self) -> Self {
        self.flags.debits_must_not_exceed_credits = true;
        self
    }
}

/// Debit or credit.
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
pub enum Side {
    Debit,
    Credit,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debit => "debit",
            Self::Credit => "credit",
        }
    }
}

/// One line of an entry: an amount debited or credited to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub account: Account,
    pub asset: Asset,
    pub side: Side,
    /// Positive.
    pub amount: Amount,
}

impl Posting {
    pub fn debit(account: Account, asset: Asset, amount: Amount) -> Self {
        Self {
            account,
            asset,
            side: Side::Debit,
            amount,
        }
    }

    pub fn credit(account: Account, asset: Asset, amount: Amount) -> Self {
        Self {
            account,
            asset,
            side: Side::Credit,
            amount,
        }
    }
}

/// Why postings do not make an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("an entry needs at least two postings")]
    TooFewPostings,
    #[error("an entry may have at most {POSTINGS_MAX} postings")]
    TooManyPostings,
    #[error("posting amounts must be positive")]
    ZeroPosting,
    #[error("debits ({debits}) and credits ({credits}) of {asset} do not balance")]
    Unbalanced {
        asset: String,
        debits: i64,
        credits: i64,
    },
    #[error("account {0} is posted with two different types or flags")]
    InconsistentAccount(String),
    #[error(transparent)]
    Amount(#[from] AmountError),
}

impl crate::decide::Rejection for JournalError {
    fn kind(&self) -> crate::decide::RejectionKind {
        match self {
            // What the lines say together (their balance, one account
            // named two ways) is a rule; what one line says is input.
            Self::Unbalanced { .. } | Self::InconsistentAccount(_) | Self::Amount(_) => {
                crate::decide::RejectionKind::RuleBroken
            }
            _ => crate::decide::RejectionKind::Invalid,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::TooFewPostings => "too_few_postings",
            Self::TooManyPostings => "too_many_postings",
            Self::ZeroPosting => "zero_posting",
            Self::Unbalanced { .. } => "unbalanced_entry",
            Self::InconsistentAccount(_) => "inconsistent_account",
            Self::Amount(_) => "amount_overflow",
        }
    }

    fn details(&self) -> serde_json::Value {
        match self {
            Self::Unbalanced {
                asset,
                debits,
                credits,
            } => serde_json::json!({"asset": asset, "debits": debits, "credits": credits}),
            _ => serde_json::Value::Null,
        }
    }
}

/// Two or more postings whose debits equal their credits in every asset.
/// Written as it is (`{"postings": [...]}`), read through `EntryParts`
/// so that an entry that does not balance is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "EntryParts")]
pub struct JournalEntry {
    postings: Vec<Posting>,
}

/// A journal entry as written, before it is checked.
#[derive(Deserialize)]
struct EntryParts {
    postings: Vec<Posting>,
}

impl TryFrom<EntryParts> for JournalEntry {
    type Error = JournalError;

    fn try_from(parts: EntryParts) -> Result<Self, JournalError> {
        Self::new(parts.postings)
    }
}

impl JournalEntry {
    /// An entry of `postings`, if they balance per asset.
    pub fn new(postings: Vec<Posting>) -> Result<Self, JournalError> {
        if postings.len() < 2 {
            return Err(JournalError::TooFewPostings);
        }
        if postings.len() > POSTINGS_MAX {
            return Err(JournalError::TooManyPostings);
        }
        let mut totals: BTreeMap<&Asset, (Amount, Amount)> = BTreeMap::new();
        let mut accounts: BTreeMap<&str, &Account> = BTreeMap::new();
        for posting in &postings {
            if posting.amount.is_zero() {
                return Err(JournalError::ZeroPosting);
            }
            if let Some(seen) = accounts.insert(&posting.account.code, &posting.account) {
                if seen != &posting.account {
                    return Err(JournalError::InconsistentAccount(
                        posting.account.code.clone(),
                    ));
                }
            }
            let (debits, credits) = totals
                .entry(&posting.asset)
                .or_insert((Amount::ZERO, Amount::ZERO));
            match posting.side {
                Side::Debit => *debits = debits.checked_add(posting.amount)?,
                Side::Credit => *credits = credits.checked_add(posting.amount)?,
            }
        }
        for (asset, (debits, credits)) in totals {
            if debits != credits {
                return Err(JournalError::Unbalanced {
                    asset: asset.to_string(),
                    debits: debits.value(),
                    credits: credits.value(),
                });
            }
        }
        Ok(Self { postings })
    }

    /// A two-posting entry: `amount` from `debit` to `credit`.
    pub fn transfer(
        debit: Account,
        credit: Account,
        asset: &Asset,
        amount: Amount,
    ) -> Result<Self, JournalError> {
        Self::new(vec![
            Posting::debit(debit, asset.clone(), amount),
            Posting::credit(credit, asset.clone(), amount),
        ])
    }

    pub fn postings(&self) -> &[Posting] {
        &self.postings
    }
}

impl fmt::Display for JournalEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, posting) in self.postings.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{} {} {} {}",
                posting.side.as_str(),
                posting.account.code,
                posting.amount,
                posting.asset
            )?;
        }
        Ok(())
    }
}

/// Running balances of accounts, enforcing their flags. A total stays
/// within 64 bits (what the quota domain decides by), unless the balances
/// are [`Balances::wide`]: a tenant's whole journal, whose accounts total
/// in 128 bits as the ledger's accounts do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    /// account code -> its type and, per asset, (debits, credits).
    accounts: BTreeMap<String, AccountTotals>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    wide: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AccountTotals {
    account_type: AccountType,
    assets: BTreeMap<String, (i128, i128)>,
}

/// A posting that would break an account's flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    #[error("posting would overdraw account {account} in {asset}")]
    Overdraft { account: String, asset: String },
    #[error(transparent)]
    Amount(#[from] AmountError),
}

impl Balances {
    /// Balances whose totals may pass 64 bits (up to 128): a tenant's whole
    /// journal, as the ledger's accounts total.
    pub fn wide() -> Self {
        Self {
            accounts: BTreeMap::new(),
            wide: true,
        }
    }

    /// Applies an entry, refusing (and changing nothing) if an account flag
    /// would be broken, or a total would pass 64 bits (128 when wide).
    pub fn post(&mut self, entry: &JournalEntry) -> Result<(), BalanceError> {
        let most = if self.wide {
            i128::MAX
        } else {
            i128::from(i64::MAX)
        };
        let add = |total: i128, amount: Amount| {
            total
                .checked_add(i128::from(amount.value()))
                .filter(|sum| *sum <= most)
                .ok_or(AmountError::Overflow)
        };
        // Check every touched (account, asset) first, then apply: nothing
        // changes when a flag would break.
        let mut after: Vec<(&Account, &str, (i128, i128))> =
            Vec::with_capacity(entry.postings().len());
        for posting in entry.postings() {
            let asset = posting.asset.as_str();
            let position = after.iter().position(|(account, seen, _)| {
                account.code == posting.account.code && *seen == asset
            });
            let totals = match position {
                Some(position) => &mut after[position].2,
                None => {
                    let current = self.of(&posting.account.code, &posting.asset);
                    after.push((&posting.account, asset, current));
                    let last = after.len() - 1;
                    &mut after[last].2
                }
            };
            match posting.side {
                Side::Debit => totals.0 = add(totals.0, posting.amount)?,
                Side::Credit => totals.1 = add(totals.1, posting.amount)?,
            }
        }
        for (account, asset, (debits, credits)) in &after {
            let flags = account.flags;
            if (flags.debits_must_not_exceed_credits && debits > credits)
                || (flags.credits_must_not_exceed_debits && credits > debits)
            {
                return Err(BalanceError::Overdraft {
                    account: account.code.clone(),
                    asset: asset.to_string(),
                });
            }
        }
        for (account, asset, totals) in after {
            // Keys are cloned only for an account or asset new to the books.
            let assets = match self.accounts.get_mut(&account.code) {
                Some(known) => &mut known.assets,
                None => {
                    &mut self
                        .accounts
                        .entry(account.code.clone())
                        .or_insert_with(|| AccountTotals {
                            account_type: account.account_type,
                            assets: BTreeMap::new(),
                        })
                        .assets
                }
            };
            match assets.get_mut(asset) {
                Some(known) => *known = totals,
                None => {
                    assets.insert(asset.to_string(), totals);
                }
            }
        }
        Ok(())
    }

    /// (debits, credits) of an account in an asset.
    pub fn of(&self, account: &str, asset: &Asset) -> (i128, i128) {
        self.accounts
            .get(account)
            .and_then(|totals| totals.assets.get(asset.as_str()))
            .copied()
            .unwrap_or((0, 0))
    }

    /// Every (account, type, asset, debits, credits), by account then asset.
    pub fn entries(&self) -> impl Iterator<Item = (&str, AccountType, &str, i128, i128)> {
        self.accounts.iter().flat_map(|(code, totals)| {
            totals.assets.iter().map(move |(asset, (debits, credits))| {
                (
                    code.as_str(),
                    totals.account_type,
                    asset.as_str(),
                    *debits,
                    *credits,
                )
            })
        })
    }

    /// Per asset, debits minus credits over every account: zero in a sound ledger.
    pub fn trial_balance(&self) -> BTreeMap<String, i128> {
        let mut sums: BTreeMap<String, i128> = BTreeMap::new();
        for (_, _, asset, debits, credits) in self.entries() {
            let sum = sums.entry(asset.to_string()).or_insert(0);
            *sum = sum.saturating_add(debits).saturating_sub(credits);
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credits() -> Asset {
        Asset::new("CREDITS", 0).unwrap()
    }

    fn amount(value: i64) -> Amount {
        Amount::new(value).unwrap()
    }

    fn grant() -> Account {
        Account::new("grant:g1", AccountType::Liability).without_overdraft()
    }

    fn issued() -> Account {
        Account::new("quota_issued:credits", AccountType::Equity)
    }

    #[test]
    fn an_entry_whose_debits_and_credits_differ_cannot_be_built() {
        let error = JournalEntry::new(vec![
            Posting::debit(issued(), credits(), amount(5)),
            Posting::credit(grant(), credits(), amount(4)),
        ]);
        assert_eq!(
            error,
            Err(JournalError::Unbalanced {
                asset: "CREDITS/0".into(),
                debits: 5,
                credits: 4
            })
        );
    }

    #[test]
    fn balancing_in_one_asset_does_not_cover_another() {
        let runs = Asset::new("RUNS", 0).unwrap();
        let error = JournalEntry::new(vec![
            Posting::debit(issued(), credits(), amount(5)),
            Posting::credit(grant(), runs, amount(5)),
        ]);
        assert_eq!(
            error,
            Err(JournalError::Unbalanced {
                asset: "CREDITS/0".into(),
                debits: 5,
                credits: 0
            })
        );
    }

    #[test]
    fn an_entry_needs_two_positive_postings() {
        assert_eq!(
            JournalEntry::new(vec![Posting::debit(issued(), credits(), amount(1))]),
            Err(JournalError::TooFewPostings)
        );
        assert_eq!(
            JournalEntry::transfer(issued(), grant(), &credits(), Amount::ZERO),
            Err(JournalError::ZeroPosting)
        );
    }

    #[test]
    fn an_unbalanced_entry_cannot_be_deserialized_either() {
        let text = r#"{"postings": [
            {"account": {"code": "a", "type": "equity"}, "asset": "CREDITS/0", "side": "debit", "amount": 5},
            {"account": {"code": "b", "type": "liability"}, "asset": "CREDITS/0", "side": "credit", "amount": 6}]}"#;
        let error = serde_json::from_str::<JournalEntry>(text).unwrap_err();
        assert!(error.to_string().contains("do not balance"), "{error}");
    }

    #[test]
    fn an_entry_is_written_as_its_postings_and_reads_back_the_same() {
        let entry = JournalEntry::transfer(issued(), grant(), &credits(), amount(3)).unwrap();
        let text = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            text,
            r#"{"postings":[{"account":{"code":"quota_issued:credits","type":"equity"},"asset":"CREDITS/0","side":"debit","amount":3},{"account":{"code":"grant:g1","type":"liability","flags":{"debits_must_not_exceed_credits":true}},"asset":"CREDITS/0","side":"credit","amount":3}]}"#
        );
        assert_eq!(serde_json::from_str::<JournalEntry>(&text).unwrap(), entry);
    }

    #[test]
    fn a_tenants_wide_balances_pass_64_bits_where_narrow_ones_refuse() {
        // Three entries of 4e18 wei: the third takes the totals past
        // i64::MAX. A tenant's whole journal (wide) keeps them, as the
        // ledger's 128-bit accounts do; narrow balances (the quota
        // domain's) refuse the third and keep the two before.
        let eth = Asset::new("ETH", 18).unwrap();
        let cash = Account::new("cash", AccountType::Asset);
        let held = Account::new("held", AccountType::Liability).without_overdraft();
        let entry =
            JournalEntry::transfer(cash, held, &eth, amount(4_000_000_000_000_000_000)).unwrap();
        let mut wide = Balances::wide();
        let mut narrow = Balances::default();
        for _ in 0..2 {
            wide.post(&entry).unwrap();
            narrow.post(&entry).unwrap();
        }
        wide.post(&entry).unwrap();
        assert_eq!(
            narrow.post(&entry),
            Err(BalanceError::Amount(AmountError::Overflow))
        );
        assert_eq!(wide.of("held", &eth), (0, 12_000_000_000_000_000_000));
        assert_eq!(narrow.of("held", &eth), (0, 8_000_000_000_000_000_000));
        assert_eq!(wide.trial_balance().get("ETH/18"), Some(&0));
        // Narrow balances serialize as before (no `wide` member).
        assert!(!serde_json::to_string(&narrow).unwrap().contains("wide"));
    }

    #[test]
    fn postings_breaking_no_overdraft_are_refused_and_change_nothing() {
        let mut balances = Balances::default();
        balances
            .post(&JournalEntry::transfer(issued(), grant(), &credits(), amount(10)).unwrap())
            .unwrap();
        let consumed = Account::new("quota_consumed:credits", AccountType::Revenue);
        let overdraw =
            JournalEntry::transfer(grant(), consumed.clone(), &credits(), amount(11)).unwrap();
        assert_eq!(
            balances.post(&overdraw),
            Err(BalanceError::Overdraft {
                account: "grant:g1".into(),
                asset: "CREDITS/0".into()
            })
        );
        assert_eq!(balances.of("grant:g1", &credits()), (0, 10));
        balances
            .post(&JournalEntry::transfer(grant(), consumed, &credits(), amount(10)).unwrap())
            .unwrap();
        assert_eq!(balances.of("grant:g1", &credits()), (10, 10));
        assert_eq!(balances.trial_balance().get("CREDITS/0"), Some(&0));
    }
}
