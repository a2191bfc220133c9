//! Payout plans: versions effective from a date, each with its rules, and
//! how a rule values work (rounded once per line, half to even).

use super::CompensationError;
use crate::money::{Amount, AmountError, Asset};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most rules one plan version has.
pub const RULES_MAX: usize = 20;

/// Longest holding period: a year.
pub const HOLDING_DAYS_MAX: u32 = 365;

/// One rule of a plan version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// Time, at a rate per hour.
    Hourly { rate_per_hour: Amount },
    /// Units of a named kind of work, at an amount each.
    PerUnit {
        unit: String,
        amount_per_unit: Amount,
    },
    /// Basis points of attributed captures, at most `cap_per_period` per
    /// payee and calendar month (UTC), payable `holding_days` after the
    /// capture.
    Commission {
        basis_points: u32,
        cap_per_period: Option<Amount>,
        holding_days: u32,
    },
}

/// One version of a plan, immutable once added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlanVersion {
    pub version: u32,
    pub effective_from: DateTime<Utc>,
    pub rules: Vec<Rule>,
    pub added_at: DateTime<Utc>,
}

/// The plan version a line was valued by, as carried into a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlanInEffect {
    pub plan_id: String,
    pub asset: Asset,
    pub version: PlanVersion,
}

impl PlanInEffect {
    pub fn hourly(&self) -> Option<Amount> {
        self.version.rules.iter().find_map(|rule| match rule {
            Rule::Hourly { rate_per_hour } => Some(*rate_per_hour),
            _ => None,
        })
    }

    pub fn per_unit(&self, unit: &str) -> Option<Amount> {
        self.version.rules.iter().find_map(|rule| match rule {
            Rule::PerUnit {
                unit: named,
                amount_per_unit,
            } if named == unit => Some(*amount_per_unit),
            _ => None,
        })
    }

    /// The commission rule: basis points, cap per period, holding days.
    pub fn commission(&self) -> Option<(u32, Option<Amount>, u32)> {
        self.version.rules.iter().find_map(|rule| match rule {
            Rule::Commission {
                basis_points,
                cap_per_period,
                holding_days,
            } => Some((*basis_points, *cap_per_period, *holding_days)),
            _ => None,
        })
    }
}

/// Checks a version's rules: 1 to 20, at most one hourly and one
/// commission rule, one per-unit rule per unit, rates positive, basis
/// points 0 to 10000, holding 0 to 365 days.
pub fn check_rules(rules: &[Rule]) -> Result<(), CompensationError> {
    let invalid = |why: &str| Err(CompensationError::InvalidRules(why.to_string()));
    if rules.is_empty() || rules.len() > RULES_MAX {
        return invalid("a plan version has 1 to 20 rules");
    }
    let (mut hourly, mut commission) = (0, 0);
    let mut units = std::collections::BTreeSet::new();
    for rule in rules {
        match rule {
            Rule::Hourly { rate_per_hour } => {
                hourly += 1;
                if rate_per_hour.is_zero() {
                    return invalid("an hourly rate is positive");
                }
            }
            Rule::PerUnit {
                unit,
                amount_per_unit,
            } => {
                if !units.insert(unit.as_str()) {
                    return invalid("one per_unit rule per unit");
                }
                if amount_per_unit.is_zero() || crate::text::Name::parse(unit.as_str()).is_err() {
                    return invalid("a per_unit rule names its unit and a positive amount");
                }
            }
            Rule::Commission {
                basis_points,
                cap_per_period,
                holding_days,
            } => {
                commission += 1;
                if *basis_points > 10_000 || *holding_days > HOLDING_DAYS_MAX {
                    return invalid("a commission is 0 to 10000 basis points held 0 to 365 days");
                }
                if cap_per_period.is_some_and(Amount::is_zero) {
                    return invalid("a commission cap is positive");
                }
            }
        }
    }
    if hourly > 1 || commission > 1 {
        return invalid("at most one hourly and one commission rule");
    }
    Ok(())
}

/// `numerator / denominator` rounded half to even (both non-negative,
/// the denominator positive).
pub fn div_half_even(numerator: i128, denominator: i128) -> Result<i64, AmountError> {
    if numerator < 0 || denominator <= 0 {
        return Err(AmountError::Overflow);
    }
    let (quotient, remainder) = (numerator / denominator, numerator % denominator);
    let twice = remainder * 2;
    let rounded = if twice > denominator || (twice == denominator && quotient % 2 == 1) {
        quotient + 1
    } else {
        quotient
    };
    i64::try_from(rounded).map_err(|_| AmountError::Overflow)
}

/// `rate` per hour for `minutes`, rounded half to even.
pub fn hourly_amount(rate: Amount, minutes: u32) -> Result<Amount, AmountError> {
    Amount::new(div_half_even(
        i128::from(rate.value()) * i128::from(minutes),
        60,
    )?)
}

/// `basis_points` of `basis`, rounded half to even.
pub fn basis_points_of(basis: Amount, basis_points: u32) -> Result<Amount, AmountError> {
    Amount::new(div_half_even(
        i128::from(basis.value()) * i128::from(basis_points),
        10_000,
    )?)
}
