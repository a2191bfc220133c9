//! `escrow`: per commitment its total, funded, released, refunded, frozen
//! and held, each release and refund with its lineage, and totals per
//! currency; tied out per currency against the commitments' `escrow_held:`
//! accounts, which only commitments post to: funded against their credits,
//! released and refunded together against their debits, frozen against
//! what their holds reserve, held against their balances; and which way
//! the money went, against what the ledger's domains posted on the other
//! side (the journal's own entries there left out): funded against
//! `escrow_cash` debits, released against `payee_payable:` credits,
//! refunded against `payer_refunds:` credits.

use super::trial_balance::Input as Journal;
use super::{number, spelled, Check, Kind, Report, ReportName, Scope, Section};
use aggregates::escrow::{Commitment, Direction};
use chrono::SecondsFormat;
use serde_json::json;
use std::collections::BTreeMap;

/// The report's rows: per commitment, per transfer, per draw of a
/// deposit; and the figures summed per currency.
#[derive(Default)]
struct Rows {
    commitments: Vec<Vec<serde_json::Value>>,
    transfers: Vec<Vec<serde_json::Value>>,
    lineage: Vec<Vec<serde_json::Value>>,
    per_asset: BTreeMap<String, [i128; 6]>,
}

const FIGURES: [&str; 6] = ["total", "funded", "released", "refunded", "frozen", "held"];

impl Rows {
    fn add(&mut self, id: &str, commitment: &Commitment) {
        let Some(terms) = &commitment.terms else {
            return;
        };
        let asset = String::from(terms.asset.clone());
        let figures = [
            terms.total().map(|amount| amount.value()),
            commitment.funded().map(|amount| amount.value()),
            commitment
                .transferred(Direction::Release)
                .map(|a| a.value()),
            commitment.transferred(Direction::Refund).map(|a| a.value()),
            commitment.frozen().map(|amount| amount.value()),
            commitment.held().map(|amount| amount.value()),
        ]
        .map(|figure| i128::from(figure.unwrap_or_default()));
        let sums = self.per_asset.entry(asset.clone()).or_insert([0; 6]);
        for (sum, figure) in sums.iter_mut().zip(figures) {
            *sum += figure;
        }
        let mut row = vec![json!(id), json!(asset), spelled(&commitment.status())];
        row.extend(figures.iter().map(|figure| number(*figure)));
        self.commitments.push(row);
        for transfer in &commitment.transfers {
            self.transfers.push(vec![
                json!(id),
                json!(transfer.transfer_id.to_string()),
                spelled(&transfer.direction),
                json!(transfer.milestone_id),
                spelled(&transfer.cause),
                json!(asset),
                json!(transfer.amount.value()),
                json!(transfer.at.to_rfc3339_opts(SecondsFormat::Micros, true)),
            ]);
            for draw in &transfer.lineage {
                self.lineage.push(vec![
                    json!(transfer.transfer_id.to_string()),
                    json!(draw.deposit_id.to_string()),
                    json!(asset),
                    json!(draw.amount.value()),
                ]);
            }
        }
    }
}

/// The escrow report of `commitments` (by id, as of the scope's seq) and
/// the journal's figures.
pub fn compute(
    scope: Scope,
    journal: &Journal,
    commitments: &BTreeMap<String, Commitment>,
) -> Report {
    let mut rows = Rows::default();
    for (id, commitment) in commitments {
        rows.add(id, commitment);
    }
    let checks = tie_out(journal, &rows.per_asset);
    let totals = super::per_asset_rows(&rows.per_asset);
    let charts = super::per_asset_charts("Escrow", &rows.per_asset, &FIGURES);
    let figures = || FIGURES.map(|name| (name, Kind::Amount)).to_vec();
    let mut commitment_columns = vec![
        ("commitment_id", Kind::Text),
        ("asset", Kind::Text),
        ("status", Kind::Text),
    ];
    commitment_columns.extend(figures());
    let mut total_columns = vec![("asset", Kind::Text)];
    total_columns.extend(figures());
    Report {
        name: ReportName::Escrow,
        scope: scope.cumulative(),
        checks,
        sections: vec![
            Section {
                name: "commitments",
                title: "Commitments",
                columns: commitment_columns,
                rows: rows.commitments,
            },
            Section {
                name: "transfers",
                title: "Releases and refunds",
                columns: vec![
                    ("commitment_id", Kind::Text),
                    ("transfer_id", Kind::Text),
                    ("direction", Kind::Text),
                    ("milestone_id", Kind::Text),
                    ("cause", Kind::Text),
                    ("asset", Kind::Text),
                    ("amount", Kind::Amount),
                    ("at", Kind::Text),
                ],
                rows: rows.transfers,
            },
            Section {
                name: "lineage",
                title: "Lineage",
                columns: vec![
                    ("transfer_id", Kind::Text),
                    ("deposit_id", Kind::Text),
                    ("asset", Kind::Text),
                    ("amount", Kind::Amount),
                ],
                rows: rows.lineage,
            },
            Section {
                name: "totals",
                title: "Totals per currency",
                columns: total_columns,
                rows: totals,
            },
        ],
        charts,
        parameters: Vec::new(),
    }
}

/// Per currency: the commitments' figures beside the journal's. Only a
/// commitment posts to its held account (the journal's own routes refuse
/// the code): a deposit is its one credit, a release or refund (a claim's
/// included) its debits. The accounts on the other side (`escrow_cash`,
/// `payee_payable:`, `payer_refunds:`) take entries of the journal's own
/// too (paying a payee out, and that payment's reversal), so they are
/// tied out on what the domains posted there: an entry of the journal's
/// own is left out (by the request that recorded it), and a release
/// credited to the payer's side, or a deposit to another cash account,
/// shows as a break.
fn tie_out(journal: &Journal, per_asset: &BTreeMap<String, [i128; 6]>) -> Vec<Check> {
    let held = journal.posted("escrow_held:");
    let frozen = journal.reserved("escrow_held:");
    let cash = journal.posted_by_domains("escrow_cash");
    let payable = journal.posted_by_domains("payee_payable:");
    let refunds = journal.posted_by_domains("payer_refunds:");
    super::checks_per_asset(per_asset.keys().chain(held.keys()), |asset| {
        let sums = per_asset.get(asset).copied().unwrap_or([0; 6]);
        let of = |posted| super::posted_of(posted, asset);
        let (held_debits, held_credits) = of(&held);
        [
            ("funded", "escrow_held: credits", sums[1], held_credits),
            ("deposited", "escrow_cash debits", sums[1], of(&cash).0),
            (
                "released_and_refunded",
                "escrow_held: debits",
                sums[2] + sums[3],
                held_debits,
            ),
            (
                "released",
                "payee_payable: credits",
                sums[2],
                of(&payable).1,
            ),
            (
                "refunded",
                "payer_refunds: credits",
                sums[3],
                of(&refunds).1,
            ),
            (
                "frozen",
                "escrow_held: pending debits",
                sums[4],
                of(&frozen).0,
            ),
            (
                "held",
                "escrow_held: balance",
                sums[5],
                held_credits - held_debits,
            ),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::trial_balance::AccountTotals;

    fn posted(account: &str, debits: i128, credits: i128) -> AccountTotals {
        AccountTotals {
            account: account.into(),
            account_type: "liability".into(),
            asset: "USD/2".into(),
            opening: (0, 0),
            period: (debits, credits),
        }
    }

    fn disagreeing(journal: &Journal, sums: [i128; 6]) -> Vec<&'static str> {
        let per_asset = BTreeMap::from([("USD/2".to_string(), sums)]);
        tie_out(journal, &per_asset)
            .into_iter()
            .filter(|check| !check.agrees)
            .map(|check| check.check)
            .collect()
    }

    #[test]
    fn a_transfer_booked_to_the_wrong_side_breaks_the_direction_checks_only() {
        // Funded 100, released 60; the journal's own entry moved 5 of it
        // on to the payee's bank and is left out.
        let mut journal = Journal {
            totals: vec![
                posted("escrow_cash", 100, 0),
                posted("escrow_held:c1", 60, 100),
                posted("payee_payable:p1", 5, 60),
                posted("bank:main", 0, 5),
            ],
            ..Journal::default()
        };
        journal
            .journal_own
            .insert(("payee_payable:p1".into(), "USD/2".into()), (5, 0));
        let sums = [100, 100, 60, 0, 0, 40];
        assert_eq!(disagreeing(&journal, sums), Vec::<&str>::new());
        // The same release credited to the payer's side: escrow_held: ties
        // out, the direction does not.
        journal.totals[2] = posted("payee_payable:p1", 5, 0);
        journal.totals.push(posted("payer_refunds:b1", 0, 60));
        assert_eq!(disagreeing(&journal, sums), ["released", "refunded"]);
        // A deposit taken from another cash account.
        journal.totals[0] = posted("bank:main", 100, 0);
        journal.totals[2] = posted("payee_payable:p1", 5, 60);
        journal.totals.pop();
        assert_eq!(disagreeing(&journal, sums), ["deposited"]);
    }
}
