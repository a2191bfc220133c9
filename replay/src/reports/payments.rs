//! `payments`: per currency the waterfall (authorized; released by
//! partial-capture reversals, voids and expiries; captured; refunded and
//! failed refunds; disputed open, won and lost with their fees; settled
//! gross, fees and net; paid out and in transit), the unsettled items
//! (processor captures and refunds in no settlement batch, each with its
//! age in days as of the report), and the breaks (class, reference,
//! expected and actual, age bucket, status, resolution), an unsettled item
//! past the settlement window being a break of class
//! `missing_in_settlement`. Tied out per currency against the journal.

use super::trial_balance::Input as Journal;
use super::{spelled, Chart, Check, Kind, Report, ReportName, Scope, Section};
use aggregates::payments::payout::{Payout, PayoutStatus};
use aggregates::payments::settlement::{
    BreakClass, Item, LineType, Outcome, Resolution, SettledLine, Settlement,
};
use aggregates::payments::{AuthorizationState, DisputeState, Payment, RefundState, TenderSource};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Days after which an item in no batch is a break (`--settlement-window-days`).
pub const SETTLEMENT_WINDOW_DAYS: i64 = 3;

/// The waterfall's stages, in order.
const STAGES: [&str; 16] = [
    "authorized",
    "partial_capture_reversals",
    "voided",
    "expired",
    "captured",
    "refunded",
    "failed_refunds",
    "disputed_open",
    "disputes_won",
    "disputes_lost",
    "dispute_fees",
    "settled_gross",
    "processing_fees",
    "settled_net",
    "paid_out",
    "in_transit",
];

fn at(stage: &str) -> usize {
    STAGES.iter().position(|name| *name == stage).unwrap_or(0)
}

/// The age bucket of `days`.
fn bucket(days: i64) -> &'static str {
    match days {
        ..=1 => "0-1",
        2..=3 => "2-3",
        4..=7 => "4-7",
        8..=30 => "8-30",
        _ => ">30",
    }
}

fn time(at: DateTime<Utc>) -> Value {
    json!(at.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// What the payments report is computed from (each by id, as of the
/// report's seq).
pub struct Input<'a> {
    pub payments: &'a BTreeMap<String, Payment>,
    pub settlements: &'a BTreeMap<String, Settlement>,
    pub payouts: &'a BTreeMap<String, Payout>,
    pub window_days: i64,
}

type Waterfall = BTreeMap<String, [i128; 16]>;

/// Per currency, what the settlements moved that the waterfall does not
/// show as such: the fees the journal books (processing and dispute fees
/// together) and what resolving breaks by adjustment booked to revenue.
#[derive(Default)]
struct Booked {
    fees: BTreeMap<String, i128>,
    adjusted_revenue: BTreeMap<String, i128>,
}

/// An item in no settlement batch: asset, kind, payment, reference,
/// amount, since when.
type Unsettled = (
    String,
    &'static str,
    String,
    Option<String>,
    i64,
    DateTime<Utc>,
);

/// What the report gathers from the payments, settlements and payouts.
#[derive(Default)]
struct Figures {
    waterfall: Waterfall,
    booked: Booked,
    unsettled: Vec<Unsettled>,
    breaks: Vec<Vec<Value>>,
    /// The fee each dispute booked when it opened, by id, and by its
    /// processor and reference.
    dispute_fees: BTreeMap<String, i64>,
    dispute_fees_by_reference: BTreeMap<(String, String), i64>,
}

impl Figures {
    fn stages(&mut self, asset: &str) -> &mut [i128; 16] {
        self.waterfall.entry(asset.to_string()).or_insert([0; 16])
    }

    /// A payment's tenders, refunds and disputes.
    fn add_payment(&mut self, payment_id: &str, payment: &Payment) {
        let Some(intent) = &payment.intent else {
            return;
        };
        let asset = String::from(intent.terms.asset.clone());
        let mut processor_tenders = Vec::new();
        for tender in &payment.tenders {
            let released = match tender.state {
                AuthorizationState::Voided => "voided",
                AuthorizationState::Expired => "expired",
                _ => "partial_capture_reversals",
            };
            let stages = self.stages(&asset);
            stages[at("authorized")] += i128::from(tender.amount.value());
            stages[at("captured")] += i128::from(tender.captured.value());
            stages[at(released)] += i128::from(tender.released.value());
            if let TenderSource::Processor {
                reference: charge, ..
            } = &tender.source
            {
                processor_tenders.push(tender.tender_id);
                for capture in tender.captures.iter().filter(|c| c.settled_in.is_none()) {
                    // A capture taken with its authorization goes by the
                    // charge's reference.
                    let reference = capture.reference.clone().or_else(|| Some(charge.clone()));
                    let item = ("capture", payment_id.to_string(), reference);
                    self.unsettled.push((
                        asset.clone(),
                        item.0,
                        item.1,
                        item.2,
                        capture.amount.value(),
                        capture.at,
                    ));
                }
            }
        }
        for refund in &payment.refunds {
            let stage = match refund.state {
                RefundState::Failed => "failed_refunds",
                _ => "refunded",
            };
            self.stages(&asset)[at(stage)] += i128::from(refund.amount.value());
            // What the processor is to settle of it: the parts drawn from
            // its tenders (a refund never crosses processors), not those
            // paid back in cash or to a gift card.
            let owed = refund
                .parts
                .iter()
                .filter(|part| processor_tenders.contains(&part.tender_id))
                .try_fold(0_i64, |owed, part| owed.checked_add(part.amount.value()))
                .unwrap_or(refund.amount.value());
            if owed > 0 && refund.state == RefundState::Pending && refund.settled_in.is_none() {
                let item = ("refund", payment_id.to_string(), refund.reference.clone());
                self.unsettled
                    .push((asset.clone(), item.0, item.1, item.2, owed, refund.at));
            }
        }
        for dispute in &payment.disputes {
            let stage = match dispute.state {
                DisputeState::Won => "disputes_won",
                DisputeState::Lost => "disputes_lost",
                _ => "disputed_open",
            };
            let stages = self.stages(&asset);
            stages[at(stage)] += i128::from(dispute.amount.value());
            stages[at("dispute_fees")] += i128::from(dispute.fee.value());
            *self.booked.fees.entry(asset.clone()).or_default() += i128::from(dispute.fee.value());
            self.dispute_fees
                .insert(dispute.dispute_id.to_string(), dispute.fee.value());
            let processor = payment
                .tender(dispute.tender_id)
                .and_then(|tender| tender.source.processor());
            if let (Some(processor), Some(reference)) = (processor, &dispute.reference) {
                self.dispute_fees_by_reference.insert(
                    (processor.to_string(), reference.clone()),
                    dispute.fee.value(),
                );
            }
        }
    }

    /// A settlement batch's lines and breaks, aged as of `now`.
    fn add_settlement(&mut self, settlement_id: &str, settlement: &Settlement, now: DateTime<Utc>) {
        let Some(asset) = settlement.asset.clone().map(String::from) else {
            return;
        };
        let settled_at = settlement.settled_at.unwrap_or(DateTime::UNIX_EPOCH);
        for (index, settled) in settlement.lines.iter().enumerate() {
            let gross = i128::from(settled.line.gross);
            let fee = self.settled_fee(settlement, settled);
            let stages = self.stages(&asset);
            stages[at("settled_gross")] += gross;
            stages[at("processing_fees")] += i128::from(settled.line.fee);
            stages[at("settled_net")] += i128::from(settled.line.net);
            *self.booked.fees.entry(asset.clone()).or_default() += fee;
            let Outcome::Break {
                break_id,
                class,
                expected,
            } = &settled.outcome
            else {
                continue;
            };
            let resolved = settlement.resolved.iter().find(|(id, _)| id == break_id);
            if let Some((_, Resolution::Adjust)) = resolved {
                // What the break suspended, booked to revenue.
                let suspended = match (class, expected) {
                    (BreakClass::AmountMismatch, Some(expected)) => gross - i128::from(*expected),
                    _ => gross,
                };
                *self
                    .booked
                    .adjusted_revenue
                    .entry(asset.clone())
                    .or_default() += suspended;
            }
            let resolution = resolved.map(|(_, resolution)| spelled(resolution));
            let days = (now - settled_at).num_days().max(0);
            self.breaks.push(vec![
                json!(asset),
                spelled(class),
                json!(settled.line.reference),
                json!(format!("{settlement_id}#{}", index + 1)),
                expected.map_or(Value::Null, |expected| json!(expected)),
                json!(settled.line.gross),
                json!(days),
                json!(bucket(days)),
                json!(if resolution.is_some() {
                    "resolved"
                } else {
                    "open"
                }),
                resolution.unwrap_or(Value::Null),
            ]);
        }
    }

    /// A payout: paid out, or in transit while pending.
    fn add_payout(&mut self, payout: &Payout) {
        let (Some(terms), Some(status)) = (&payout.terms, payout.status) else {
            return;
        };
        let stage = match status {
            PayoutStatus::Paid => "paid_out",
            PayoutStatus::Pending => "in_transit",
            PayoutStatus::Failed => return,
        };
        self.stages(&String::from(terms.asset.clone()))[at(stage)] +=
            i128::from(terms.amount.value());
    }

    /// What of line `settled` of `settlement` the journal books as fees:
    /// the processor's own line, its gross and fee; a line settling a
    /// dispute (matched, a break later matched to it, or an amount
    /// mismatch, which settles it all the same), the fee beyond what the
    /// dispute booked when it opened; any other, its fee.
    fn settled_fee(&self, settlement: &Settlement, settled: &SettledLine) -> i128 {
        let fee = i128::from(settled.line.fee);
        let booked = |fee_of: Option<i64>| fee - i128::from(fee_of.unwrap_or(0));
        let by_id = |dispute_id: &aggregates::ids::DisputeId| {
            booked(self.dispute_fees.get(&dispute_id.to_string()).copied())
        };
        match &settled.outcome {
            Outcome::Processor => fee - i128::from(settled.line.gross),
            Outcome::Matched {
                item: Item::Dispute { dispute_id },
                ..
            } => by_id(dispute_id),
            Outcome::Break {
                break_id, class, ..
            } => {
                let matched = settlement.matched.iter().find(|(id, _)| id == break_id);
                match (matched, class) {
                    (Some((_, Item::Dispute { dispute_id })), _) => by_id(dispute_id),
                    (None, BreakClass::AmountMismatch)
                        if settled.line.line_type == LineType::Dispute =>
                    {
                        let processor = settlement.processor.clone().unwrap_or_default();
                        let key = (processor, settled.line.reference.clone());
                        booked(self.dispute_fees_by_reference.get(&key).copied())
                    }
                    _ => fee,
                }
            }
            _ => fee,
        }
    }

    /// The unsettled items as rows, aged as of `now`; those in no batch
    /// for longer than `window_days` (to the microsecond, not in whole
    /// days) added to the breaks as `missing_in_settlement`.
    fn age_unsettled(&mut self, now: DateTime<Utc>, window_days: i64) -> Vec<Vec<Value>> {
        self.unsettled
            .sort_by(|a, b| (&a.0, a.5, a.1, &a.2).cmp(&(&b.0, b.5, b.1, &b.2)));
        // A window longer than any time span flags nothing.
        let window = Duration::try_days(window_days);
        let mut rows = Vec::new();
        for (asset, kind, payment_id, reference, amount, since) in &self.unsettled {
            let days = (now - *since).num_days().max(0);
            let past_window = window.is_some_and(|window| now - *since > window);
            rows.push(vec![
                json!(asset),
                json!(kind),
                json!(payment_id),
                json!(reference),
                json!(amount),
                time(*since),
                json!(days),
            ]);
            if past_window {
                self.breaks.push(vec![
                    json!(asset),
                    json!("missing_in_settlement"),
                    json!(reference),
                    json!(format!("{kind}:{payment_id}")),
                    json!(amount),
                    Value::Null,
                    json!(days),
                    json!(bucket(days)),
                    json!("open"),
                    Value::Null,
                ]);
            }
        }
        rows
    }
}

/// The payments report. Ages are counted to the end of the period or the
/// time the report is asked as of (`--to`, `--as-of`), else to the time of
/// its last event: either way the same on any later day.
pub fn compute(scope: Scope, journal: &Journal, input: Input<'_>) -> Report {
    let scope = scope.cumulative();
    let aged_as_of = scope.to.or(scope.at);
    let now = aged_as_of.unwrap_or(DateTime::UNIX_EPOCH);
    let mut figures = Figures::default();
    for (payment_id, payment) in input.payments {
        figures.add_payment(payment_id, payment);
    }
    for (settlement_id, settlement) in input.settlements {
        figures.add_settlement(settlement_id, settlement, now);
    }
    for payout in input.payouts.values() {
        figures.add_payout(payout);
    }
    let unsettled = figures.age_unsettled(now, input.window_days);
    let Figures {
        waterfall,
        booked,
        breaks,
        ..
    } = figures;
    let mut report = finish(scope, (journal, &booked), waterfall, unsettled, breaks);
    report.parameters = vec![
        ("settlement_window_days", json!(input.window_days)),
        ("aged_as_of", json!(aged_as_of)),
    ];
    report
}

/// The sections, charts and tie-out of the computed figures.
fn finish(
    scope: Scope,
    (journal, booked): (&Journal, &Booked),
    waterfall: Waterfall,
    unsettled: Vec<Vec<Value>>,
    breaks: Vec<Vec<Value>>,
) -> Report {
    let checks = tie_out(journal, booked, &waterfall);
    let mut charts = super::per_asset_charts("Waterfall", &waterfall, &STAGES);
    // The aging chart counts the breaks still open.
    let mut aging: BTreeMap<(String, &str), i128> = BTreeMap::new();
    for row in breaks.iter().filter(|row| row[8] == json!("open")) {
        let asset = row[0].as_str().unwrap_or_default().to_string();
        let bucket = match row[7].as_str() {
            Some("0-1") => "0-1",
            Some("2-3") => "2-3",
            Some("4-7") => "4-7",
            Some("8-30") => "8-30",
            _ => ">30",
        };
        *aging.entry((asset, bucket)).or_default() += 1;
    }
    for asset in waterfall.keys() {
        charts.push(Chart {
            title: format!("Open breaks by age in days (count), {asset}"),
            asset: String::new(),
            bars: ["0-1", "2-3", "4-7", "8-30", ">30"]
                .iter()
                .map(|bucket| {
                    let count = aging.get(&(asset.clone(), *bucket)).copied().unwrap_or(0);
                    (bucket.to_string(), count)
                })
                .collect(),
        });
    }
    let rows = super::per_asset_rows(&waterfall);
    let mut columns = vec![("asset", Kind::Text)];
    columns.extend(STAGES.map(|stage| (stage, Kind::Amount)));
    Report {
        name: ReportName::Payments,
        scope,
        checks,
        sections: vec![
            Section {
                name: "waterfall",
                title: "Waterfall",
                columns,
                rows,
            },
            Section {
                name: "unsettled",
                title: "Unsettled items",
                columns: vec![
                    ("asset", Kind::Text),
                    ("kind", Kind::Text),
                    ("payment_id", Kind::Text),
                    ("reference", Kind::Text),
                    ("amount", Kind::Amount),
                    ("at", Kind::Text),
                    ("age_days", Kind::Number),
                ],
                rows: unsettled,
            },
            Section {
                name: "breaks",
                title: "Breaks",
                columns: vec![
                    ("asset", Kind::Text),
                    ("class", Kind::Text),
                    ("reference", Kind::Text),
                    ("item", Kind::Text),
                    ("expected", Kind::Amount),
                    ("actual", Kind::Amount),
                    ("age_days", Kind::Number),
                    ("age_bucket", Kind::Text),
                    ("status", Kind::Text),
                    ("resolution", Kind::Text),
                ],
                rows: breaks,
            },
        ],
        charts,
        parameters: Vec::new(),
    }
}

/// Per currency: the payments' figures beside the journal's.
fn tie_out(journal: &Journal, booked: &Booked, waterfall: &Waterfall) -> Vec<Check> {
    let accounts = [
        "revenue",
        "refunds",
        "dispute_losses",
        "processing_fees",
        "dispute_fees",
        "processor_balance:",
        "processor_payable:",
    ]
    // What the payments' own requests posted: an entry of the journal's
    // own (an invoice paid outside payments, credited to revenue) is no
    // payment's.
    .map(|prefix| journal.posted_by_domains(prefix));
    super::checks_per_asset(waterfall.keys(), |asset| {
        let stage = |name: &str| waterfall.get(asset).map_or(0, |stages| stages[at(name)]);
        let of_booked = |map: &BTreeMap<String, i128>| map.get(asset).copied().unwrap_or(0);
        // Debits less credits of the accounts at `index` of `accounts`.
        let balance = |index: usize| {
            let (debits, credits) = super::posted_of(&accounts[index], asset);
            debits - credits
        };
        let processor_balance = stage("settled_net") - stage("paid_out") - stage("in_transit");
        // Revenue is credit-normal: its credits less debits.
        let revenue = -balance(0) - of_booked(&booked.adjusted_revenue);
        [
            (
                "captured",
                "revenue balance less breaks adjusted to it",
                stage("captured"),
                revenue,
            ),
            ("refunded", "refunds balance", stage("refunded"), balance(1)),
            (
                "disputes_lost",
                "dispute_losses balance",
                stage("disputes_lost"),
                balance(2),
            ),
            (
                "fees",
                "processing_fees and dispute_fees balances",
                of_booked(&booked.fees),
                balance(3) + balance(4),
            ),
            // What a processor holds less what is owed to it (a
            // shortfall of a batch, since rules 4): the payable is
            // credit-normal, so its debits less credits subtract it.
            (
                "settled_not_paid_out",
                "processor_balance: balance less processor_payable:",
                processor_balance,
                balance(5) + balance(6),
            ),
        ]
    })
}
