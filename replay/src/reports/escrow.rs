//! `escrow`: per commitment its total, funded, released, refunded, frozen
//! and held, each release and refund with its lineage, and totals per
//! currency; tied out per currency against the commitments' `escrow_held:`
//! accounts, which only commitments post to: funded against their credits,
//! released and refunded together against their debits, frozen against
//! what their holds reserve, held against their balances. (Which way a
//! transfer went is not tied out: the accounts on the other side take the
//! journal's own entries too.)

use super::trial_balance::Input as Journal;
use super::{number, spelled, Check, Kind, Report, ReportName, Scope, Section};
use aggregates::escrow::{Commitment, Direction};
use chrono::SecondsFormat;
use serde_json::json;
use std::collections::BTreeMap;

/// The escrow report of `commitments` (by id, as of the scope's seq) and
/// the journal's figures.
pub fn compute(
    scope: Scope,
    journal: &Journal,
    commitments: &BTreeMap<String, Commitment>,
) -> Report {
    let (mut rows, mut transfers, mut lineage) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_asset: BTreeMap<String, [i128; 6]> = BTreeMap::new();
    for (id, commitment) in commitments {
        let Some(terms) = &commitment.terms else {
            continue;
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
        let sums = per_asset.entry(asset.clone()).or_insert([0; 6]);
        for (sum, figure) in sums.iter_mut().zip(figures) {
            *sum += figure;
        }
        let mut row = vec![json!(id), json!(asset), spelled(&commitment.status())];
        row.extend(figures.iter().map(|figure| number(*figure)));
        rows.push(row);
        for transfer in &commitment.transfers {
            transfers.push(vec![
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
                lineage.push(vec![
                    json!(transfer.transfer_id.to_string()),
                    json!(draw.deposit_id.to_string()),
                    json!(asset),
                    json!(draw.amount.value()),
                ]);
            }
        }
    }
    let checks = tie_out(journal, &per_asset);
    let totals = super::per_asset_rows(&per_asset);
    let charts = super::per_asset_charts(
        "Escrow",
        &per_asset,
        &["total", "funded", "released", "refunded", "frozen", "held"],
    );
    let figures = || {
        ["total", "funded", "released", "refunded", "frozen", "held"]
            .map(|name| (name, Kind::Amount))
            .to_vec()
    };
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
                rows,
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
                rows: transfers,
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
                rows: lineage,
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

/// Per currency: the commitments' figures beside the journal's, on the
/// `escrow_held:` accounts only. Only a commitment posts to its held
/// account (the journal's own routes refuse the code): a deposit is its
/// one credit, a release or refund (a claim's included) its debits. The
/// accounts on the other side (`escrow_cash`, `payee_payable:`,
/// `payer_refunds:`) take entries of the journal's own too (paying a payee
/// out, and that payment's reversal), which would tie a correct escrow out
/// wrong, or hide a missing posting.
fn tie_out(journal: &Journal, per_asset: &BTreeMap<String, [i128; 6]>) -> Vec<Check> {
    let held = journal.posted("escrow_held:");
    let frozen = journal.reserved("escrow_held:");
    super::checks_per_asset(per_asset.keys().chain(held.keys()), |asset| {
        let sums = per_asset.get(asset).copied().unwrap_or([0; 6]);
        let of = |posted| super::posted_of(posted, asset);
        let (held_debits, held_credits) = of(&held);
        [
            ("funded", "escrow_held: credits", sums[1], held_credits),
            (
                "released_and_refunded",
                "escrow_held: debits",
                sums[2] + sums[3],
                held_debits,
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
