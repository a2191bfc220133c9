//! Why a compensation command is refused.

use crate::decide::{Rejection, RejectionKind};
use crate::ids::{LineId, PayRunId};
use crate::money::AmountError;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompensationError {
    #[error("it exists already")]
    Exists,
    #[error("no such plan")]
    UnknownPlan,
    #[error("no such role")]
    UnknownRole,
    #[error("no such payee")]
    UnknownPayee,
    #[error("no such pay run")]
    UnknownPayRun,
    #[error("invalid rules: {0}")]
    InvalidRules(String),
    #[error("a version is effective from {last} or later, not {asked}")]
    VersionBeforeLast {
        last: DateTime<Utc>,
        asked: DateTime<Utc>,
    },
    #[error("no plan is assigned to the payee at {at}")]
    NoAssignment { at: DateTime<Utc> },
    #[error("plan {plan_id} has no version in effect at {at}")]
    NoVersion { plan_id: String, at: DateTime<Utc> },
    #[error("the plan in effect has no {rule} rule")]
    NoRule { rule: String },
    #[error("the plan is in {plan}, the payee is paid in {payee}")]
    CurrencyMismatch { plan: String, payee: String },
    #[error("the sale is in {sale}, the payee is paid in {payee}")]
    SaleCurrency { sale: String, payee: String },
    #[error("the line {0} is taken")]
    LineTaken(LineId),
    #[error("no line {0}")]
    UnknownLine(LineId),
    #[error("the line is not held")]
    NotHeld,
    #[error("the line is held until {payable_at}")]
    StillHeld { payable_at: DateTime<Utc> },
    #[error("an adjustment is a non-zero amount")]
    ZeroAdjustment,
    #[error("work is 1 to 100000 minutes or units")]
    InvalidQuantity,
    #[error("work is recorded once it is done: it is dated {worked_at}, after now")]
    WorkInFuture { worked_at: DateTime<Utc> },
    #[error("a pay period starts before it ends")]
    InvalidPeriod,
    #[error("the cutoff {cutoff} is outside the period {period_start} to {period_end}")]
    CutoffOutsidePeriod {
        cutoff: DateTime<Utc>,
        period_start: DateTime<Utc>,
        period_end: DateTime<Utc>,
    },
    #[error("the cutoff {cutoff} is after now ({at}): a run claims what has accrued by its cutoff when it is created")]
    CutoffInFuture {
        cutoff: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    #[error("the pay run is paid")]
    PayRunPaid,
    #[error("the pay run is canceled")]
    PayRunCanceled,
    #[error("the pay run is approved already")]
    PayRunApproved,
    #[error("the pay run is not approved")]
    PayRunNotApproved,
    #[error("the payee has no claim in pay run {0}")]
    NotInRun(PayRunId),
    #[error("{origin} accrued already")]
    AccruedAlready { origin: String },
    #[error(
        "line {line_id} has {left} left (as corrected, less what was clawed back of it); a correction takes it to nothing at most, not past it"
    )]
    CorrectionExceedsLine { line_id: LineId, left: i64 },
    #[error(
        "line {line_id} is not corrected by an adjustment: a clawback is corrected by its reversal or by correcting its commission, and a refused line has nothing to correct"
    )]
    NotCorrectable { line_id: LineId },
    #[error(transparent)]
    Amount(#[from] AmountError),
}

impl Rejection for CompensationError {
    fn kind(&self) -> RejectionKind {
        match self {
            Self::UnknownPlan
            | Self::UnknownRole
            | Self::UnknownPayee
            | Self::UnknownPayRun
            | Self::UnknownLine(_) => RejectionKind::NotFound,
            // What no schema can say (one hourly rule, a period's order,
            // an amount that is not zero) breaks a rule: 422.
            Self::InvalidQuantity => RejectionKind::Invalid,
            _ => RejectionKind::RuleBroken,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Exists => "already_exists",
            Self::UnknownPlan => "unknown_plan",
            Self::UnknownRole => "unknown_role",
            Self::UnknownPayee => "unknown_payee",
            Self::UnknownPayRun => "unknown_pay_run",
            Self::InvalidRules(_) => "invalid_rules",
            Self::VersionBeforeLast { .. } => "version_before_last",
            Self::NoAssignment { .. } => "no_plan_assigned",
            Self::NoVersion { .. } => "no_plan_version",
            Self::NoRule { .. } => "no_matching_rule",
            Self::CurrencyMismatch { .. } | Self::SaleCurrency { .. } => "currency_mismatch",
            Self::LineTaken(_) => "line_taken",
            Self::UnknownLine(_) => "unknown_line",
            Self::NotHeld => "line_not_held",
            Self::StillHeld { .. } => "line_still_held",
            Self::ZeroAdjustment => "invalid_amount",
            Self::InvalidQuantity => "invalid_quantity",
            Self::WorkInFuture { .. } => "work_in_future",
            Self::InvalidPeriod => "invalid_period",
            Self::CutoffOutsidePeriod { .. } => "cutoff_outside_period",
            Self::CutoffInFuture { .. } => "cutoff_in_future",
            Self::PayRunPaid => "pay_run_paid",
            Self::PayRunCanceled => "pay_run_canceled",
            Self::PayRunApproved => "pay_run_approved",
            Self::PayRunNotApproved => "pay_run_not_approved",
            Self::NotInRun(_) => "not_in_pay_run",
            Self::AccruedAlready { .. } => "accrued_already",
            Self::CorrectionExceedsLine { .. } => "correction_exceeds_line",
            Self::NotCorrectable { .. } => "line_not_correctable",
            Self::Amount(_) => "amount_overflow",
        }
    }

    fn details(&self) -> Value {
        match self {
            Self::VersionBeforeLast { last, asked } => json!({"last": last, "asked": asked}),
            Self::NoAssignment { at } => json!({"at": at}),
            Self::StillHeld { payable_at } => json!({"payable_at": payable_at}),
            Self::WorkInFuture { worked_at } => json!({"worked_at": worked_at}),
            Self::CutoffOutsidePeriod {
                cutoff,
                period_start,
                period_end,
            } => json!({"cutoff": cutoff, "period_start": period_start, "period_end": period_end}),
            Self::CutoffInFuture { cutoff, at } => json!({"cutoff": cutoff, "at": at}),
            Self::NoVersion { plan_id, at } => json!({"plan_id": plan_id, "at": at}),
            Self::NoRule { rule } => json!({"rule": rule}),
            Self::CurrencyMismatch { plan, payee } => json!({"plan": plan, "payee": payee}),
            Self::SaleCurrency { sale, payee } => json!({"sale": sale, "payee": payee}),
            Self::LineTaken(line) | Self::UnknownLine(line) => json!({"line_id": line}),
            Self::AccruedAlready { origin } => json!({"source": origin}),
            Self::CorrectionExceedsLine { line_id, left } => {
                json!({"line_id": line_id, "left": left})
            }
            Self::NotCorrectable { line_id } => json!({"line_id": line_id}),
            _ => Value::Null,
        }
    }
}
