//! `trial-balance`: per account and asset, the opening balance (what was
//! recorded before the period), the period's debits and credits, and the
//! closing balance; per asset the totals, which net to zero. Balances are
//! debits less credits. Tied out against the accounts' own balances (the
//! account aggregates' postings, read apart from the journal's entries)
//! for every account the journal opened, and each asset against zero.

use super::{Chart, Check, Kind, Report, ReportName, Scope, Section};
use serde_json::json;
use std::collections::BTreeMap;

/// What one account posted in one asset: before the period and in it,
/// (debits, credits) each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountTotals {
    pub account: String,
    pub account_type: String,
    pub asset: String,
    pub opening: (i128, i128),
    pub period: (i128, i128),
}

/// What the trial balance is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    /// From the journal's entries, as of the report's seq.
    pub totals: Vec<AccountTotals>,
    /// The accounts' own balances (debits less credits) as of the seq,
    /// by (account, asset), for the accounts the journal opened.
    pub ledger: BTreeMap<(String, String), i128>,
    /// What open holds reserve on those accounts as of the seq: (debits,
    /// credits) pending, by (account, asset).
    pub pending: BTreeMap<(String, String), (i128, i128)>,
    /// What the journal's own requests (`post_entry`, `reverse_entry`,
    /// `resolve_hold`) posted as of the seq, by (account, asset): (debits,
    /// credits). Part of the trial balance as every entry is; a domain's
    /// report leaves it out where it ties out on an account the journal
    /// may post to as well (`revenue`, `compensation_expense`,
    /// `payee_payable:`, ...). Read online for the payments, payroll and
    /// escrow reports only (empty for the trial balance).
    pub journal_own: BTreeMap<(String, String), (i128, i128)>,
}

impl Input {
    /// Per asset, the sums over the accounts whose code starts with
    /// `prefix` (or is `prefix`, when it has no colon): (debits, credits)
    /// posted as of the seq.
    pub fn posted(&self, prefix: &str) -> BTreeMap<String, (i128, i128)> {
        let mut sums: BTreeMap<String, (i128, i128)> = BTreeMap::new();
        for totals in self
            .totals
            .iter()
            .filter(|totals| matches(&totals.account, prefix))
        {
            let sum = sums.entry(totals.asset.clone()).or_default();
            sum.0 += totals.opening.0 + totals.period.0;
            sum.1 += totals.opening.1 + totals.period.1;
        }
        sums
    }

    /// [`Input::posted`] less what the journal's own requests posted
    /// ([`Input::journal_own`]): what the ledger's domains posted.
    pub fn posted_by_domains(&self, prefix: &str) -> BTreeMap<String, (i128, i128)> {
        let mut sums = self.posted(prefix);
        for ((account, asset), own) in &self.journal_own {
            if matches(account, prefix) {
                let sum = sums.entry(asset.clone()).or_default();
                sum.0 -= own.0;
                sum.1 -= own.1;
            }
        }
        sums
    }

    /// Per asset, what open holds reserve on the accounts of `prefix`:
    /// (debits, credits) pending.
    pub fn reserved(&self, prefix: &str) -> BTreeMap<String, (i128, i128)> {
        let mut sums: BTreeMap<String, (i128, i128)> = BTreeMap::new();
        for ((account, asset), pending) in &self.pending {
            if matches(account, prefix) {
                let sum = sums.entry(asset.clone()).or_default();
                sum.0 += pending.0;
                sum.1 += pending.1;
            }
        }
        sums
    }
}

/// Whether `account` is `prefix` (a fixed code) or one of its family
/// (`escrow_held:` covers `escrow_held:<commitment>`).
fn matches(account: &str, prefix: &str) -> bool {
    if prefix.ends_with(':') {
        account.starts_with(prefix)
    } else {
        account == prefix
    }
}

/// The trial balance of `input` for `scope`.
pub fn compute(scope: Scope, mut input: Input) -> Report {
    input
        .totals
        .sort_by(|a, b| (&a.account, &a.asset).cmp(&(&b.account, &b.asset)));
    let mut rows = Vec::with_capacity(input.totals.len());
    let mut per_asset: BTreeMap<String, [i128; 4]> = BTreeMap::new();
    let mut by_type: BTreeMap<(String, String), i128> = BTreeMap::new();
    let mut checks = Vec::new();
    for totals in &input.totals {
        let opening = totals.opening.0 - totals.opening.1;
        let closing = opening + totals.period.0 - totals.period.1;
        rows.push(vec![
            json!(totals.account),
            json!(totals.asset),
            json!(totals.account_type),
            super::number(opening),
            super::number(totals.period.0),
            super::number(totals.period.1),
            super::number(closing),
        ]);
        let sums = per_asset.entry(totals.asset.clone()).or_insert([0; 4]);
        sums[0] += opening;
        sums[1] += totals.period.0;
        sums[2] += totals.period.1;
        sums[3] += closing;
        *by_type
            .entry((totals.asset.clone(), totals.account_type.clone()))
            .or_default() += closing;
        let key = (totals.account.clone(), totals.asset.clone());
        if let Some(ledger) = input.ledger.remove(&key) {
            checks.push(Check::new(
                "account_balance",
                totals.account.clone(),
                totals.asset.clone(),
                closing,
                ledger,
            ));
        }
    }
    // An account whose own balance moved without a journal entry.
    for ((account, asset), ledger) in input.ledger {
        checks.push(Check::new("account_balance", account, asset, 0, ledger));
    }
    for (asset, sums) in &per_asset {
        checks.push(Check::new(
            "asset_nets_to_zero",
            asset.clone(),
            asset.clone(),
            sums[3],
            0,
        ));
    }
    let totals = super::per_asset_rows(&per_asset);
    let charts = per_asset
        .keys()
        .map(|asset| Chart {
            title: format!("Closing balances by account type, {asset}"),
            asset: asset.clone(),
            bars: by_type
                .iter()
                .filter(|((of, _), _)| of == asset)
                .map(|((_, account_type), closing)| (account_type.clone(), *closing))
                .collect(),
        })
        .collect();
    let amount = Kind::Amount;
    Report {
        name: ReportName::TrialBalance,
        scope,
        checks,
        sections: vec![
            Section {
                name: "accounts",
                title: "Accounts",
                columns: vec![
                    ("account", Kind::Text),
                    ("asset", Kind::Text),
                    ("type", Kind::Text),
                    ("opening", amount),
                    ("debits", amount),
                    ("credits", amount),
                    ("closing", amount),
                ],
                rows,
            },
            Section {
                name: "totals",
                title: "Totals per asset",
                columns: vec![
                    ("asset", Kind::Text),
                    ("opening", amount),
                    ("debits", amount),
                    ("credits", amount),
                    ("closing", amount),
                ],
                rows: totals,
            },
        ],
        charts,
        parameters: Vec::new(),
    }
}
