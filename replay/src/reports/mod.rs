//! Finance reports: what a report is (its header, its tie-out, its
//! sections of rows), the reports there are, and how each is computed from
//! one set of inputs whichever path read them: the read tables (`online`)
//! or an export file folded with the domains' own code (`offline`). So the
//! two paths give byte-identical JSON for one tenant and seq, and their
//! agreement is a tie-out of its own.
//!
//! Every report names the tenant_seq it is as of and the chain hash at that
//! seq, its period (by the time events were recorded: a period once closed
//! never changes), and a tie-out: each figure it shows beside an
//! independent one (the journal's postings beside the accounts' own
//! balances, a domain's figures beside the journal), and whether they
//! agree.

pub mod escrow;
pub mod http;
pub mod offline;
pub mod online;
pub mod payments;
pub mod payroll;
pub mod render;
pub mod trial_balance;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The reports there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReportName {
    TrialBalance,
    Payments,
    Payroll,
    Escrow,
}

impl ReportName {
    /// The read tables the report reads, which must have reached its seq:
    /// the journal's, the accounts', and its domain's.
    pub fn projections(self) -> Vec<&'static str> {
        let mut names = vec![projections::journal::NAME, projections::accounts::NAME];
        names.extend(match self {
            Self::TrialBalance => None,
            Self::Payments => Some(projections::payments::NAME),
            Self::Payroll => Some(projections::compensation::NAME),
            Self::Escrow => Some(projections::escrow::NAME),
        });
        names
    }

    pub const ALL: [Self; 4] = [
        Self::TrialBalance,
        Self::Payments,
        Self::Payroll,
        Self::Escrow,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|report| report.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TrialBalance => "trial-balance",
            Self::Payments => "payments",
            Self::Payroll => "payroll",
            Self::Escrow => "escrow",
        }
    }
}

/// What a report covers: whose, as of which seq (and its chain hash), and
/// which period of recorded time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scope {
    pub tenant_id: String,
    pub as_of_seq: i64,
    /// The chain hash at `as_of_seq` (hex), `None` before the first event.
    pub chain_hash: Option<String>,
    /// Events recorded from `from` (opening balances are what came before).
    pub from: Option<DateTime<Utc>>,
    /// Events recorded up to `to` (`as_of_seq` is the last of them):
    /// including those recorded at `to` for an `as_of`, not for a period,
    /// whose end the next period starts at (`to_included`).
    pub to: Option<DateTime<Utc>>,
    pub to_included: bool,
    /// When the event at `as_of_seq` was recorded: what ages are counted
    /// to when the report names no `to`.
    pub at: Option<DateTime<Utc>>,
}

impl Scope {
    /// The scope of a domain report (payments, payroll, escrow): its
    /// figures are cumulative to the end of the period, so it covers
    /// everything from the first event whatever `from` was asked (only the
    /// trial balance splits its figures at `from`), and says so.
    pub fn cumulative(self) -> Self {
        Self { from: None, ..self }
    }
}

use commands::http::read::rfc3339;
/// How long after a time a report may be taken as of it: past the longest
/// a request's append may take its head after its stamp
/// (`eventstore::APPEND_WITHIN`), with a margin for the clocks.
pub use commands::http::read::CLOSED_AFTER;

/// Where a report is taken and over what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Everything recorded.
    Head,
    /// Everything up to this tenant_seq.
    Seq(i64),
    /// Everything recorded by this time.
    Time(DateTime<Utc>),
    /// What was recorded from `from` up to, not including, `to` (opening
    /// balances are what came before `from`; the next period starts at
    /// `to`).
    Period {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

impl Point {
    /// The start of the period, if the point has one.
    pub fn from(self) -> Option<DateTime<Utc>> {
        match self {
            Self::Period { from, .. } => Some(from),
            _ => None,
        }
    }

    /// Whether what was recorded at [`to`](Self::to) is in: for an
    /// `as_of`, not for a period.
    pub fn to_included(self) -> bool {
        matches!(self, Self::Time(_))
    }

    /// The end of the period, if the point is a time.
    pub fn to(self) -> Option<DateTime<Utc>> {
        match self {
            Self::Time(to) | Self::Period { to, .. } => Some(to),
            _ => None,
        }
    }

    /// Refuses a time point not yet closed at `now`: a period ending, or
    /// an `as_of`, later than [`CLOSED_AFTER`] before `now`. A request is
    /// stamped when it is decided and commits a moment later; once a time
    /// is that far past, every event recorded at or before it has
    /// committed or is in an append the report waits out
    /// (`EventStore::settle`), so the report is the same on any later day.
    pub fn closed(self, now: DateTime<Utc>) -> Result<Self, ReportError> {
        let open = self
            .to()
            .and_then(|to| Some((to, commands::http::read::closes_at(to, now)?)));
        match open {
            Some((to, closes_at)) => Err(ReportError::Open { to, closes_at }),
            None => Ok(self),
        }
    }

    /// Refuses a period that ends before it starts, or a negative seq.
    pub fn check(self) -> Result<Self, ReportError> {
        match self {
            Self::Period { from, to } if from > to => Err(ReportError::Invalid(format!(
                "the period starts at {from}, after its end {to}"
            ))),
            Self::Seq(seq) if seq < 0 => {
                Err(ReportError::Invalid(format!("as_of_seq {seq} is negative")))
            }
            point => Ok(point),
        }
    }
}

/// How a figure is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// Minor units of the asset named by the row's `asset` column.
    Amount,
    /// A count or a seq.
    Number,
    Flag,
}

/// One table of a report: named columns and rows of values (JSON: text,
/// integers, booleans, null).
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub name: &'static str,
    pub title: &'static str,
    pub columns: Vec<(&'static str, Kind)>,
    pub rows: Vec<Vec<Value>>,
}

impl Section {
    /// The rows as JSON objects.
    fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|row| {
                    let object: Map<String, Value> = self
                        .columns
                        .iter()
                        .map(|(name, _)| name.to_string())
                        .zip(row.iter().cloned())
                        .collect();
                    Value::Object(object)
                })
                .collect(),
        )
    }
}

/// One comparison of a figure the report shows with an independent one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What is compared (`asset_nets_to_zero`, `account_balance`).
    pub check: &'static str,
    /// What it is about (an account, an asset).
    pub subject: String,
    pub asset: String,
    /// The report's figure.
    pub report: i128,
    /// The independent figure.
    pub ledger: i128,
    pub agrees: bool,
}

impl Check {
    pub fn new(
        check: &'static str,
        subject: String,
        asset: String,
        report: i128,
        ledger: i128,
    ) -> Self {
        Self {
            check,
            subject,
            asset,
            report,
            ledger,
            agrees: report == ledger,
        }
    }
}

/// A report, as computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub name: ReportName,
    pub scope: Scope,
    pub checks: Vec<Check>,
    pub sections: Vec<Section>,
    /// Charts of the HTML page: a title and bars (label, value, asset).
    pub charts: Vec<Chart>,
    /// What the report was asked with besides its point (the payments'
    /// `settlement_window_days`), shown in its header.
    pub parameters: Vec<(&'static str, Value)>,
}

/// What a report is asked with besides its point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Days after which a capture or refund in no settlement batch is a
    /// break (`missing_in_settlement`); 0 to 365.
    pub settlement_window_days: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            settlement_window_days: payments::SETTLEMENT_WINDOW_DAYS,
        }
    }
}

/// Most days a settlement window is.
pub const SETTLEMENT_WINDOW_DAYS_MAX: i64 = 365;

/// A bar chart of the HTML page.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub asset: String,
    pub bars: Vec<(String, i128)>,
}

impl Report {
    /// Whether every check agrees.
    pub fn ties_out(&self) -> bool {
        self.checks.iter().all(|check| check.agrees)
    }

    /// The report as JSON: its header, its tie-out, each section by name.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("report".into(), json!(self.name.as_str()));
        object.insert("tenant_id".into(), json!(self.scope.tenant_id));
        object.insert("as_of_seq".into(), json!(self.scope.as_of_seq));
        object.insert("chain_hash".into(), json!(self.scope.chain_hash));
        object.insert("as_of_time".into(), json!(self.scope.at));
        object.insert(
            "period".into(),
            json!({"from": self.scope.from, "to": self.scope.to,
                   "to_included": self.scope.to.map(|_| self.scope.to_included)}),
        );
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|check| {
                json!({
                    "check": check.check,
                    "subject": check.subject,
                    "asset": check.asset,
                    "report": number(check.report),
                    "ledger": number(check.ledger),
                    "agrees": check.agrees,
                })
            })
            .collect();
        object.insert(
            "tie_out".into(),
            json!({"agrees": self.ties_out(), "checks": checks}),
        );
        for (name, value) in &self.parameters {
            object.insert(name.to_string(), value.clone());
        }
        for section in &self.sections {
            object.insert(section.name.into(), section.to_json());
        }
        Value::Object(object)
    }

    /// The JSON as canonical text (keys sorted, no spaces): byte-identical
    /// for one tenant and seq whichever path computed it.
    pub fn to_json_text(&self) -> String {
        eventstore::canonical::to_canonical_string(&self.to_json())
            .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
    }
}

/// The checks of each asset of `assets` (once each, in order): the
/// comparisons `rows` gives for it, (check, subject, the report's figure,
/// the journal's).
pub fn checks_per_asset<'a, const N: usize>(
    assets: impl IntoIterator<Item = &'a String>,
    rows: impl Fn(&str) -> [(&'static str, &'static str, i128, i128); N],
) -> Vec<Check> {
    let assets: std::collections::BTreeSet<&String> = assets.into_iter().collect();
    assets
        .into_iter()
        .flat_map(|asset| {
            rows(asset).map(|(check, subject, report, ledger)| {
                Check::new(check, subject.to_string(), asset.clone(), report, ledger)
            })
        })
        .collect()
}

/// A journal figure per asset: (debits, credits).
pub type Posted = BTreeMap<String, (i128, i128)>;

/// `posted`'s figure of `asset`, (0, 0) when it has none.
pub fn posted_of(posted: &Posted, asset: &str) -> (i128, i128) {
    posted.get(asset).copied().unwrap_or((0, 0))
}

/// One row per asset: the asset, then its sums.
pub fn per_asset_rows<const N: usize>(per_asset: &BTreeMap<String, [i128; N]>) -> Vec<Vec<Value>> {
    per_asset
        .iter()
        .map(|(asset, sums)| {
            let mut row = vec![json!(asset)];
            row.extend(sums.iter().map(|sum| number(*sum)));
            row
        })
        .collect()
}

/// One chart per asset titled `title` and the asset, a bar per label
/// (`labels[i]` for `sums[i]`).
pub fn per_asset_charts<const N: usize>(
    title: &str,
    per_asset: &BTreeMap<String, [i128; N]>,
    labels: &[&str],
) -> Vec<Chart> {
    per_asset
        .iter()
        .map(|(asset, sums)| Chart {
            title: format!("{title}, {asset}"),
            asset: asset.clone(),
            bars: labels
                .iter()
                .zip(sums)
                .map(|(label, sum)| (label.to_string(), *sum))
                .collect(),
        })
        .collect()
}

/// A status, a direction, a class or a cause as the API spells it: the
/// serde name of a plain variant, the tag of an internally tagged one.
pub fn spelled<T: serde::Serialize>(value: &T) -> Value {
    match serde_json::to_value(value) {
        Ok(Value::Object(object)) => object.values().next().cloned().unwrap_or(Value::Null),
        Ok(other) => other,
        Err(_) => Value::Null,
    }
}

/// An amount as JSON: an integer (a sum past 64 bits is text).
pub fn number(value: i128) -> Value {
    match i64::try_from(value) {
        Ok(value) => json!(value),
        Err(_) => json!(value.to_string()),
    }
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no report {0:?}: one of trial-balance, payments, payroll, escrow")]
    UnknownReport(String),
    #[error("{0}")]
    Invalid(String),
    /// What is stored does not read back (a defect, not the asker's).
    #[error("{0}")]
    Corrupt(String),
    #[error("tenant_seq {asked} is beyond the tenant's last, {head}")]
    Ahead { asked: i64, head: i64 },
    #[error("{} is not closed yet: a report is taken as of a time once it is {} s past (from {}), so that it is the same on any later day; take it as of a seq, or of the head", rfc3339(.to), CLOSED_AFTER.num_seconds(), rfc3339(.closes_at))]
    Open {
        to: DateTime<Utc>,
        closes_at: DateTime<Utc>,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    File(#[from] crate::verify::VerifyError),
}
