//! The documented shapes of the compensation bodies that are read flat
//! (a rule, a piece of work: one `kind` and the fields of that kind), so
//! `/openapi.json` states exactly which fields each kind takes. Never
//! deserialized: the routes read [`super::RuleBody`] and
//! [`super::WorkBody`] and refuse a field of another kind.
#![allow(dead_code)]

use super::{BasisPoints, HoldingDays, PositiveAmount, Quantity};
use aggregates::text::Name;
use aggregates::time::BoundedTime;
use utoipa::ToSchema;

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HourlyKind {
    Hourly,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PerUnitKind {
    PerUnit,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommissionKind {
    Commission,
}

/// Time, at a rate per hour.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HourlyRule {
    kind: HourlyKind,
    rate_per_hour: PositiveAmount,
}

/// Units of a named kind of work, at an amount each.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PerUnitRule {
    kind: PerUnitKind,
    unit: Name,
    amount_per_unit: PositiveAmount,
}

/// Basis points of each attributed capture, capped per calendar month
/// (optional), held some days (default 0).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommissionRule {
    kind: CommissionKind,
    basis_points: BasisPoints,
    cap_per_period: Option<PositiveAmount>,
    holding_days: Option<HoldingDays>,
}

/// One rule of a plan version.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum RuleShape {
    Hourly(HourlyRule),
    PerUnit(PerUnitRule),
    Commission(CommissionRule),
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeKind {
    Time,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnitsKind {
    Units,
}

/// Time worked, in minutes.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeWork {
    kind: TimeKind,
    minutes: Quantity,
    worked_at: BoundedTime,
    reference: Option<Name>,
}

/// A count of units of a per_unit rule's kind.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitsWork {
    kind: UnitsKind,
    unit: Name,
    count: Quantity,
    worked_at: BoundedTime,
    reference: Option<Name>,
}

/// Work done: time in minutes, or a count of units.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum WorkShape {
    Time(TimeWork),
    Units(UnitsWork),
}
