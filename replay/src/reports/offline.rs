//! Reports from an export file alone, with no database: the file folded
//! with the domains' own code (every request decided again, the chain
//! checked), its journal entries and its accounts summed as the read
//! tables sum them. For one tenant and seq the JSON is byte-identical to
//! the online report's.

use super::{trial_balance, Point, Report, ReportError, ReportName, Scope};
use crate::as_of::AsOf;
use crate::state::TenantState;
use aggregates::journal::account::{LedgerAccount, ACCOUNT_AGGREGATE};
use aggregates::journal::Side;
use std::path::Path;

/// Report `name` of the tenant exported to `path`, at `point`, with
/// `options`.
pub fn report(
    path: &Path,
    name: ReportName,
    (point, options): (Point, super::Options),
) -> Result<Report, ReportError> {
    let as_of = match point {
        Point::Head => AsOf::Head,
        // Between requests, as the online report is taken.
        Point::Seq(seq) => AsOf::Seq(crate::export::request_end(path, seq)?),
        Point::Time(to) => AsOf::Time(to),
        // A period is from `from` up to, not including, `to`.
        Point::Period { to, .. } => AsOf::Before(to),
    };
    let (header, state) = crate::export::fold_file(path, as_of)?;
    if let Point::Seq(asked) = point {
        if asked > header.head_seq {
            return Err(ReportError::Ahead {
                asked,
                head: header.head_seq,
            });
        }
    }
    let scope = Scope {
        tenant_id: header.tenant_id.to_string(),
        as_of_seq: state.last_seq(),
        chain_hash: state.last_hash().map(|hash| hash.to_hex()),
        from: point.from(),
        to: point.to(),
        to_included: point.to_included(),
        at: state.last_recorded_at(),
    };
    let journal = trial_balance_input(&state, &scope);
    match name {
        ReportName::TrialBalance => Ok(trial_balance::compute(scope, journal)),
        ReportName::Escrow => {
            let commitments = states_of::<aggregates::escrow::Commitment>(&state);
            Ok(super::escrow::compute(scope, &journal, &commitments))
        }
        ReportName::Payments => {
            use aggregates::payments::{payout::Payout, settlement::Settlement, Payment};
            let payments = states_of::<Payment>(&state);
            let settlements = states_of::<Settlement>(&state);
            let payouts = states_of::<Payout>(&state);
            let input = super::payments::Input {
                payments: &payments,
                settlements: &settlements,
                payouts: &payouts,
                window_days: options.settlement_window_days,
            };
            Ok(super::payments::compute(scope, &journal, input))
        }
        ReportName::Payroll => {
            let runs = states_of::<aggregates::compensation::PayRun>(&state);
            let payees = states_of::<aggregates::compensation::Payee>(&state);
            Ok(super::payroll::compute(scope, &journal, &runs, &payees))
        }
    }
}

/// The folded states of the aggregates `A`, by id.
fn states_of<A>(state: &TenantState) -> std::collections::BTreeMap<String, A>
where
    A: aggregates::Decide + 'static,
    A::Error: aggregates::Rejection,
{
    let mut states = std::collections::BTreeMap::new();
    if let Some(fold) = state.fold() {
        for (key, aggregate) in fold.states() {
            if key.aggregate_type != A::TYPE {
                continue;
            }
            if let Some(found) = aggregate.as_any().downcast_ref::<A>() {
                states.insert(key.aggregate_id.clone(), found.clone());
            }
        }
    }
    states
}

fn text<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// Adds `posting` to `sums`: (debits, credits).
fn add(sums: &mut (i128, i128), posting: &aggregates::journal::Posting) {
    let amount = i128::from(posting.amount.value());
    match posting.side {
        Side::Debit => sums.0 += amount,
        Side::Credit => sums.1 += amount,
    }
}

/// The trial balance's inputs from the folded state: its journal entries
/// summed per account and asset before the period and in it, and its
/// accounts' own posted balances.
fn trial_balance_input(state: &TenantState, scope: &Scope) -> trial_balance::Input {
    use std::collections::BTreeMap;
    let mut totals: BTreeMap<(String, String), trial_balance::AccountTotals> = BTreeMap::new();
    for (recorded_at, entry) in state.entries() {
        let opening = scope.from.is_some_and(|from| *recorded_at < from);
        for posting in entry.postings() {
            let asset = text(&posting.asset);
            let row = totals
                .entry((posting.account.code.clone(), asset.clone()))
                .or_insert_with(|| trial_balance::AccountTotals {
                    account: posting.account.code.clone(),
                    account_type: text(&posting.account.account_type),
                    asset,
                    opening: (0, 0),
                    period: (0, 0),
                });
            add(
                if opening {
                    &mut row.opening
                } else {
                    &mut row.period
                },
                posting,
            );
        }
    }
    let mut journal_own: BTreeMap<(String, String), (i128, i128)> = BTreeMap::new();
    for entry in state.journal_own() {
        for posting in entry.postings() {
            let key = (posting.account.code.clone(), text(&posting.asset));
            add(journal_own.entry(key).or_default(), posting);
        }
    }
    let mut input = trial_balance::Input {
        totals: totals.into_values().collect(),
        ledger: BTreeMap::new(),
        pending: BTreeMap::new(),
        journal_own,
    };
    if let Some(fold) = state.fold() {
        for (key, aggregate) in fold.states() {
            if key.aggregate_type != ACCOUNT_AGGREGATE {
                continue;
            }
            let Some(account) = aggregate.as_any().downcast_ref::<LedgerAccount>() else {
                continue;
            };
            for (asset, balance) in &account.balances {
                let posted = balance.debits_posted.value() - balance.credits_posted.value();
                let at = (key.aggregate_id.clone(), text(asset));
                input.ledger.insert(at.clone(), posted);
                let pending = (
                    balance.debits_pending.value(),
                    balance.credits_pending.value(),
                );
                if pending != (0, 0) {
                    input.pending.insert(at, pending);
                }
            }
        }
    }
    input
}
