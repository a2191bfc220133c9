//! A payee's compensation ledger: immutable lines (time, units,
//! commission, clawback, adjustment), each valued once, and where each
//! stands (held, accrued, in a run, paid; or refused, for a commission the
//! payee could not be paid).

use super::rules::PlanInEffect;
use crate::ids::{LineId, PayRunId};
use crate::money::Amount;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Time,
    Units,
    Commission,
    Clawback,
    Adjustment,
}

/// Where a line stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineStatus {
    /// Accrued, payable from `payable_at` (the scheduler flips it).
    Held,
    /// Accrued and payable, in no run.
    Accrued,
    InRun,
    Paid,
    /// A commission that could not accrue (`reason` says why): recorded,
    /// for nothing.
    Refused,
}

/// The work a line values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    Time { minutes: u32 },
    Units { unit: String, count: u32 },
}

/// Most minutes or units one line values.
pub const QUANTITY_MAX: u32 = 100_000;

/// One line of the ledger. Never changed but for where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Line {
    pub line_id: LineId,
    pub kind: LineKind,
    /// What it comes from: the work's reference, `capture:<id>`,
    /// `refund:<id>`, `dispute:<id>`.
    pub source: Option<String>,
    /// In the payee's minor units; negative for clawbacks and negative
    /// adjustments.
    pub amount: i64,
    /// A commission's excess over the period's cap (a reversal's, over
    /// the room the cap left): recorded, not payable.
    pub capped: Amount,
    /// The cap per period a commission was valued under: what a reversal
    /// of a clawback of it gives back stays under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<Amount>,
    pub accrued_at: DateTime<Utc>,
    /// When a held line becomes payable.
    pub payable_at: Option<DateTime<Utc>>,
    pub status: LineStatus,
    pub run: Option<PayRunId>,
    /// The line an adjustment corrects.
    pub corrects: Option<LineId>,
    pub reason: Option<String>,
    /// The plan and version that valued it.
    pub plan_id: Option<String>,
    pub plan_version: Option<u32>,
    pub work: Option<Work>,
    /// A commission's or clawback's payment, and what of it the line is
    /// on (the capture, or the amount refunded or lost).
    pub payment_id: Option<String>,
    pub basis: Option<Amount>,
    /// A clawback's captures: the sources (`capture:<id>`) of the
    /// commission lines it takes its share of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clawed_from: Vec<String>,
    /// A clawback's (or its reversal's) part in each month's cap, by the
    /// months of the commissions it claws from (since rules version 3):
    /// what it frees of each month's cap, or takes back of it; and a
    /// correction's of a commission, in the commission's month (since
    /// version 6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_shares: Vec<CapShare>,
    pub recorded_at: DateTime<Utc>,
}

/// A line's part of one month's cap (`YYYY-MM`): negative for what a
/// clawback (or a correction down) frees, positive for what a reversal (or
/// a correction up) takes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CapShare {
    pub period: String,
    pub amount: i64,
}

impl Line {
    /// A line of `kind` for `amount`, accrued at `accrued_at`.
    pub fn new(
        line_id: LineId,
        kind: LineKind,
        amount: i64,
        accrued_at: DateTime<Utc>,
        recorded_at: DateTime<Utc>,
    ) -> Self {
        Self {
            line_id,
            kind,
            source: None,
            amount,
            capped: Amount::ZERO,
            cap: None,
            accrued_at,
            payable_at: None,
            status: LineStatus::Accrued,
            run: None,
            corrects: None,
            reason: None,
            plan_id: None,
            plan_version: None,
            work: None,
            payment_id: None,
            basis: None,
            clawed_from: Vec::new(),
            cap_shares: Vec::new(),
            recorded_at,
        }
    }

    /// The same line, valued by `plan`.
    pub fn valued_by(mut self, plan: &PlanInEffect) -> Self {
        self.plan_id = Some(plan.plan_id.clone());
        self.plan_version = Some(plan.version.version);
        self
    }
}

/// The calendar month (UTC) of `at`, the period a commission cap counts
/// in: `2026-12`.
pub fn cap_period(at: DateTime<Utc>) -> String {
    at.format("%Y-%m").to_string()
}
