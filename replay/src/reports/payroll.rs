//! `payroll`: per pay run and payee, what the run claimed by kind (time,
//! units, commission, clawbacks, adjustments), the negative balance it
//! carried in, its net, what it paid and carried out; per payee what is
//! accrued, held, payable and in no run, paid and carried; totals per
//! currency. Tied out per currency against the journal: the lines against
//! `compensation_expense`, what is owed against the payees'
//! `compensation_payable:`, what was paid against `bank:payroll`.

use super::trial_balance::Input as Journal;
use super::{number, spelled, Check, Kind, Report, ReportName, Scope, Section};
use aggregates::compensation::{LineKind, LineStatus, PayRun, Payee};
use serde_json::{json, Value};
use std::collections::BTreeMap;

const KINDS: [(LineKind, &str); 5] = [
    (LineKind::Time, "time"),
    (LineKind::Units, "units"),
    (LineKind::Commission, "commission"),
    (LineKind::Clawback, "clawbacks"),
    (LineKind::Adjustment, "adjustments"),
];

const FIGURES: [&str; 7] = [
    "accrued", "held", "payable", "in_run", "paid", "carried", "capped",
];

/// One row per run and payee, runs in the order they were created.
fn run_rows(runs: &BTreeMap<String, PayRun>, payees: &BTreeMap<String, Payee>) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    let mut ordered: Vec<(&String, &PayRun)> = runs.iter().collect();
    ordered.sort_by_key(|(id, run)| (run.created_at, *id));
    for (run_id, run) in ordered {
        for share in &run.payees {
            let asset = String::from(share.asset.clone());
            let mut by_kind = [0i128; 5];
            if let Some(payee) = payees.get(&share.payee_id) {
                for line in share.lines.iter().filter_map(|id| payee.line(*id)) {
                    if let Some(at) = KINDS.iter().position(|(kind, _)| *kind == line.kind) {
                        by_kind[at] += i128::from(line.amount);
                    }
                }
            }
            let mut row = vec![
                json!(run_id),
                spelled(&run.status),
                json!(share.payee_id),
                json!(asset),
            ];
            row.extend(by_kind.iter().map(|sum| number(*sum)));
            row.extend([
                number(share.carried_in.into()),
                number(share.net.into()),
                share.paid.map_or(Value::Null, |paid| json!(paid.value())),
                share.carried_out.map_or(Value::Null, |out| json!(out)),
            ]);
            rows.push(row);
        }
    }
    rows
}

/// A payee's [`FIGURES`]: accrued, held, payable, in a run, paid,
/// carried, capped.
fn figures(payee: &Payee) -> [i128; 7] {
    let sum = |keep: &dyn Fn(LineStatus) -> bool| -> i128 {
        payee
            .lines
            .iter()
            .filter(|line| keep(line.status))
            .map(|line| i128::from(line.amount))
            .sum()
    };
    [
        sum(&|status| status != LineStatus::Refused),
        sum(&|status| status == LineStatus::Held),
        sum(&|status| status == LineStatus::Accrued),
        sum(&|status| status == LineStatus::InRun),
        payee
            .runs
            .values()
            .filter_map(|share| share.paid)
            .map(|paid| i128::from(paid.value()))
            .sum(),
        i128::from(payee.unrecovered().unwrap_or_default()),
        payee
            .lines
            .iter()
            .map(|line| i128::from(line.capped.value()))
            .sum(),
    ]
}

/// The payroll report of `runs` and `payees` (by id, as of the scope's
/// seq) and the journal's figures.
pub fn compute(
    scope: Scope,
    journal: &Journal,
    runs: &BTreeMap<String, PayRun>,
    payees: &BTreeMap<String, Payee>,
) -> Report {
    // Per payee, and per currency.
    let mut payee_rows = Vec::new();
    let mut per_asset: BTreeMap<String, [i128; 7]> = BTreeMap::new();
    for (payee_id, payee) in payees {
        let Some(profile) = &payee.profile else {
            continue;
        };
        let asset = String::from(profile.asset.clone());
        let figures = figures(payee);
        let sums = per_asset.entry(asset.clone()).or_insert([0; 7]);
        for (sum, figure) in sums.iter_mut().zip(figures) {
            *sum += figure;
        }
        let mut row = vec![json!(payee_id), json!(asset)];
        row.extend(figures.iter().map(|figure| number(*figure)));
        payee_rows.push(row);
    }
    let checks = tie_out(journal, &per_asset);
    let totals = super::per_asset_rows(&per_asset);
    let charts = super::per_asset_charts("Payroll", &per_asset, &FIGURES);
    let mut run_columns = vec![
        ("pay_run_id", Kind::Text),
        ("status", Kind::Text),
        ("payee_id", Kind::Text),
        ("asset", Kind::Text),
    ];
    run_columns.extend(KINDS.map(|(_, name)| (name, Kind::Amount)));
    run_columns.extend([
        ("carried_in", Kind::Amount),
        ("net", Kind::Amount),
        ("paid", Kind::Amount),
        ("carried_out", Kind::Amount),
    ]);
    let figures = || FIGURES.map(|name| (name, Kind::Amount)).to_vec();
    let mut payee_columns = vec![("payee_id", Kind::Text), ("asset", Kind::Text)];
    payee_columns.extend(figures());
    let mut total_columns = vec![("asset", Kind::Text)];
    total_columns.extend(figures());
    Report {
        name: ReportName::Payroll,
        scope: scope.cumulative(),
        checks,
        sections: vec![
            Section {
                name: "runs",
                title: "Pay runs, per payee",
                columns: run_columns,
                rows: run_rows(runs, payees),
            },
            Section {
                name: "payees",
                title: "Payees",
                columns: payee_columns,
                rows: payee_rows,
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

/// Per currency: the ledgers' figures beside the journal's.
fn tie_out(journal: &Journal, per_asset: &BTreeMap<String, [i128; 7]>) -> Vec<Check> {
    // What compensation's own requests posted: an entry of the journal's
    // own (a bonus accrued by hand, a transfer out of the payroll bank) is
    // no pay run's.
    let expense = journal.posted_by_domains("compensation_expense");
    let payable = journal.posted_by_domains("compensation_payable:");
    let bank = journal.posted_by_domains("bank:payroll");
    super::checks_per_asset(per_asset.keys().chain(payable.keys()), |asset| {
        let sums = per_asset.get(asset).copied().unwrap_or([0; 7]);
        let of = |posted| super::posted_of(posted, asset);
        let ((expense_debits, expense_credits), (payable_debits, payable_credits)) =
            (of(&expense), of(&payable));
        [
            (
                "accrued",
                "compensation_expense balance",
                sums[0],
                expense_debits - expense_credits,
            ),
            (
                "owed",
                "compensation_payable: balance",
                sums[0] - sums[4],
                payable_credits - payable_debits,
            ),
            ("paid", "bank:payroll credits", sums[4], of(&bank).1),
        ]
    })
}
