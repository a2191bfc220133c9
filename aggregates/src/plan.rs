//! The plan catalog: what each plan grants per period.
//!
//! Built-in defaults, replaceable by a JSON file. A subscription records the
//! terms of its plan in its events, so a later change of the catalog never
//! changes what replaying the ledger gives.

use crate::money::Amount;
use crate::quota::QuotaType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A per-period quota: a number of units, or unlimited (`null`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Limit(pub Option<Amount>);

impl Limit {
    pub const UNLIMITED: Self = Self(None);

    /// A finite limit; negative values (never in a catalog) count as zero.
    pub fn units(value: i64) -> Self {
        Self(Some(Amount::new(value).unwrap_or(Amount::ZERO)))
    }

    pub fn is_unlimited(self) -> bool {
        self.0.is_none()
    }

    /// The amount, when finite.
    pub fn amount(self) -> Option<Amount> {
        self.0
    }
}

/// The terms of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// e.g. `team_v4` (versioned by name).
    pub id: String,
    pub seats: Limit,
    pub runs: Limit,
    pub credits: Limit,
    /// Length of a period in months.
    #[serde(default = "one_month")]
    pub period_months: u32,
}

fn one_month() -> u32 {
    1
}

impl Plan {
    /// What the plan grants of `quota` per period.
    pub fn limit(&self, quota: QuotaType) -> Limit {
        match quota {
            QuotaType::Seats => self.seats,
            QuotaType::Runs => self.runs,
            QuotaType::Credits => self.credits,
        }
    }
}

/// The plans a tenant may subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanCatalog {
    plans: BTreeMap<String, Plan>,
}

/// A plan id the catalog does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plan {plan:?}; valid plans: {}", .valid.join(", "))]
pub struct UnknownPlan {
    pub plan: String,
    pub valid: Vec<String>,
}

/// Why a catalog file is not usable.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("plan catalog is not valid JSON of the expected shape: {0}")]
    Format(#[from] serde_json::Error),
    #[error("plan catalog defines {0:?} twice")]
    Duplicate(String),
    #[error("plan catalog is empty")]
    Empty,
    #[error("plan {0:?}: the period must be 1 to 120 months")]
    Period(String),
    #[error("plan id {id:?}: {error}")]
    InvalidId {
        id: String,
        error: crate::text::TextError,
    },
}

/// Longest plan id, in characters (ids are recorded in events).
pub const PLAN_ID_LENGTH_MAX: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    plans: Vec<Plan>,
}

impl PlanCatalog {
    /// The built-in plans (per period): `hobby_v3` 1 seat, 10,000 runs, 1,000
    /// credits; `team_v4` 10, 100,000, 20,000; `scale_v1` 50, 1,000,000,
    /// 100,000; `enterprise_v1` unlimited seats and runs, 500,000 credits.
    pub fn builtin() -> Self {
        let plan = |id: &str, seats: Limit, runs: Limit, credits: Limit| Plan {
            id: id.to_string(),
            seats,
            runs,
            credits,
            period_months: 1,
        };
        let plans = [
            plan(
                "hobby_v3",
                Limit::units(1),
                Limit::units(10_000),
                Limit::units(1_000),
            ),
            plan(
                "team_v4",
                Limit::units(10),
                Limit::units(100_000),
                Limit::units(20_000),
            ),
            plan(
                "scale_v1",
                Limit::units(50),
                Limit::units(1_000_000),
                Limit::units(100_000),
            ),
            plan(
                "enterprise_v1",
                Limit::UNLIMITED,
                Limit::UNLIMITED,
                Limit::units(500_000),
            ),
        ];
        Self {
            plans: plans
                .into_iter()
                .map(|plan| (plan.id.clone(), plan))
                .collect(),
        }
    }

    /// A catalog from JSON: `{"plans": [{"id": "team_v4", "seats": 10,
    /// "runs": 100000, "credits": null, "period_months": 1}, ...]}` (`null`
    /// is unlimited).
    pub fn from_json(text: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = serde_json::from_str(text)?;
        if file.plans.is_empty() {
            return Err(CatalogError::Empty);
        }
        let mut plans = BTreeMap::new();
        for plan in file.plans {
            if let Err(error) = crate::text::check(&plan.id, PLAN_ID_LENGTH_MAX) {
                return Err(CatalogError::InvalidId { id: plan.id, error });
            }
            if !(1..=120).contains(&plan.period_months) {
                return Err(CatalogError::Period(plan.id));
            }
            if let Some(previous) = plans.insert(plan.id.clone(), plan) {
                return Err(CatalogError::Duplicate(previous.id));
            }
        }
        Ok(Self { plans })
    }

    /// The plan `id`, or the list of valid ones.
    pub fn get(&self, id: &str) -> Result<&Plan, UnknownPlan> {
        self.plans.get(id).ok_or_else(|| UnknownPlan {
            plan: id.to_string(),
            valid: self.ids(),
        })
    }

    /// Every plan id, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.plans.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_has_the_four_plans_with_their_quotas() {
        let catalog = PlanCatalog::builtin();
        assert_eq!(
            catalog.ids(),
            ["enterprise_v1", "hobby_v3", "scale_v1", "team_v4"]
        );
        let team = catalog.get("team_v4").unwrap();
        assert_eq!(
            (team.seats, team.runs, team.credits),
            (
                Limit::units(10),
                Limit::units(100_000),
                Limit::units(20_000)
            )
        );
        let enterprise = catalog.get("enterprise_v1").unwrap();
        assert!(enterprise.seats.is_unlimited() && enterprise.runs.is_unlimited());
        assert_eq!(enterprise.credits, Limit::units(500_000));
    }

    #[test]
    fn an_unknown_plan_names_the_valid_ones() {
        let error = PlanCatalog::builtin().get("gold").unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown plan \"gold\"; valid plans: enterprise_v1, hobby_v3, scale_v1, team_v4"
        );
    }

    #[test]
    fn a_catalog_file_replaces_the_defaults_and_is_checked() {
        let catalog = PlanCatalog::from_json(
            r#"{"plans": [{"id": "solo_v1", "seats": 1, "runs": null, "credits": 5}]}"#,
        )
        .unwrap();
        assert_eq!(catalog.ids(), ["solo_v1"]);
        assert!(catalog.get("solo_v1").unwrap().runs.is_unlimited());
        assert!(matches!(
            PlanCatalog::from_json(r#"{"plans": []}"#),
            Err(CatalogError::Empty)
        ));
        assert!(matches!(
            PlanCatalog::from_json(r#"{"plans": [{"id": "a", "seats": 1, "runs": 1, "credits": 1}, {"id": "a", "seats": 1, "runs": 1, "credits": 1}]}"#),
            Err(CatalogError::Duplicate(id)) if id == "a"
        ));
        assert!(matches!(
            PlanCatalog::from_json(
                r#"{"plans": [{"id": "a", "seats": -1, "runs": 1, "credits": 1}]}"#
            ),
            Err(CatalogError::Format(_))
        ));
        assert!(matches!(
            PlanCatalog::from_json(
                r#"{"plans": [{"id": "a\u0000b", "seats": 1, "runs": 1, "credits": 1}]}"#
            ),
            Err(CatalogError::InvalidId { id, error: crate::text::TextError::ControlCharacter { code_point: 0, index: 1 } }) if id == "a\u{0}b"
        ));
        assert!(matches!(
            PlanCatalog::from_json(&format!(
                r#"{{"plans": [{{"id": "{}", "seats": 1, "runs": 1, "credits": 1}}]}}"#,
                "p".repeat(PLAN_ID_LENGTH_MAX + 1)
            )),
            Err(CatalogError::InvalidId {
                error: crate::text::TextError::TooLong {
                    max_chars: PLAN_ID_LENGTH_MAX
                },
                ..
            })
        ));
    }
}
