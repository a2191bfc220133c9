//! The compensation routes: plans and their versions, roles, payees,
//! assignments, work and adjustments (here), pay runs (`runs`) and the
//! reads (`reads`).
//!
//! What a request is resolved with (a payee's currency, the plan assigned
//! when the work was done, the payees a run goes through) is read from the
//! event store, not a read table that may lag, and resolved again when it
//! moved before the decision.

mod reads;
mod runs;
mod shapes;

use super::error::{outcome_response, ApiError, ErrorBody};
use super::extract::{
    ApiJson, ApiPath, IdempotencyKeyHeader, PositiveAmount, SignedAmount, Tenant,
};
use super::payments::{asset_of, note_schema, submit, Note};
use super::schema::Accepted;
use super::AppState;
use crate::pipeline::derive_id;
use crate::pipeline::load::current_one;
use crate::requests::compensation::{
    AddPlanVersion, AdjustLine, AssignPlan, CreatePayee, CreateRole, LineAnswer, PayeeAnswer,
    PlanAnswer, RecordWork,
};
use aggregates::compensation::ledger::QUANTITY_MAX;
use aggregates::compensation::rules::HOLDING_DAYS_MAX;
use aggregates::compensation::{Payee, Role, Rule, Work};
use aggregates::ids::LineId;
use aggregates::schema::Currency;
use aggregates::text::{Name, Text};
use aggregates::time::BoundedTime;
use aggregates::TenantId;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_plan))
        .routes(routes!(add_version))
        .routes(routes!(create_role))
        .routes(routes!(create_payee))
        .routes(routes!(assign))
        .routes(routes!(record_work))
        .routes(routes!(adjust))
        .merge(runs::router())
        .merge(reads::router())
}

/// The OpenAPI tags of the compensation routes.
pub fn tags() -> Vec<(&'static str, &'static str)> {
    vec![(
        "compensation",
        "Compensation: versioned payout plans, roles, payees, an immutable accrual ledger, commissions from payments, pay runs",
    )]
}

const KEY: &str = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)";

/// A count bounded to what one line values: 1 to 100000.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Quantity(pub u32);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = super::extract::whole_number(deserializer)?;
        match u32::try_from(value) {
            Ok(value) if (1..=QUANTITY_MAX).contains(&value) => Ok(Self(value)),
            _ => Err(serde::de::Error::custom(format!(
                "invalid value: {value}, expected 1 to {QUANTITY_MAX}"
            ))),
        }
    }
}

impl utoipa::PartialSchema for Quantity {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        aggregates::schema::integer(1)
            .maximum(Some(QUANTITY_MAX))
            .into()
    }
}

impl ToSchema for Quantity {}

/// A whole number from 0 to a bound, in a body.
macro_rules! bounded {
    ($(#[$meta:meta])* $name:ident, $max:expr, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Serialize)]
        pub struct $name(pub u32);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = super::extract::whole_number(deserializer)?;
                match u32::try_from(value) {
                    Ok(value) if value <= $max => Ok(Self(value)),
                    _ => Err(serde::de::Error::custom(format!(
                        "invalid value: {value}, expected 0 to {}", $max
                    ))),
                }
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                aggregates::schema::integer(0)
                    .maximum(Some($max))
                    .description(Some($what))
                    .into()
            }
        }

        impl ToSchema for $name {}
    };
}

bounded!(
    /// Basis points of a commission: 0 to 10000.
    BasisPoints,
    10_000,
    "Basis points, 0 to 10000"
);

bounded!(
    /// Days a commission is held before it is payable: 0 to 365.
    HoldingDays,
    HOLDING_DAYS_MAX,
    "Days, 0 to 365"
);

/// What a rule values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Hourly,
    PerUnit,
    Commission,
}

/// One rule of a plan version: `hourly` takes `rate_per_hour` (`rate *
/// minutes / 60`, rounded half to even once per line); `per_unit` takes
/// `unit` and `amount_per_unit`; `commission` takes `basis_points` of each
/// attributed capture (rounded half to even once per line), optionally
/// `cap_per_period` (per payee and calendar month, UTC: the excess is
/// recorded, not payable) and `holding_days` (payable that long after the
/// capture). A field of another kind is refused.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    pub kind: RuleKind,
    #[serde(default)]
    pub rate_per_hour: Option<PositiveAmount>,
    #[serde(default)]
    pub unit: Option<Name>,
    #[serde(default)]
    pub amount_per_unit: Option<PositiveAmount>,
    #[serde(default)]
    pub basis_points: Option<BasisPoints>,
    #[serde(default)]
    pub cap_per_period: Option<PositiveAmount>,
    #[serde(default)]
    pub holding_days: Option<HoldingDays>,
}

/// 400 `invalid_rules` naming what rule `n` lacks or should not have.
fn invalid_rule(n: usize, message: String) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_rules",
        message: format!("rules[{n}]: {message}"),
        details: json!({"rule": n}),
    }
}

fn rules(bodies: Vec<RuleBody>) -> Result<Vec<Rule>, ApiError> {
    bodies
        .into_iter()
        .enumerate()
        .map(|(n, body)| {
            let given = [
                ("rate_per_hour", body.rate_per_hour.is_some()),
                ("unit", body.unit.is_some()),
                ("amount_per_unit", body.amount_per_unit.is_some()),
                ("basis_points", body.basis_points.is_some()),
                ("cap_per_period", body.cap_per_period.is_some()),
                ("holding_days", body.holding_days.is_some()),
            ];
            let allowed: &[&str] = match body.kind {
                RuleKind::Hourly => &["rate_per_hour"],
                RuleKind::PerUnit => &["unit", "amount_per_unit"],
                RuleKind::Commission => &["basis_points", "cap_per_period", "holding_days"],
            };
            if let Some((field, _)) = given
                .iter()
                .find(|(field, set)| *set && !allowed.contains(field))
            {
                let kind = serde_json::to_value(body.kind).unwrap_or_default();
                return Err(invalid_rule(
                    n,
                    format!("{field} is no field of a rule of kind {kind}"),
                ));
            }
            let missing = |field: &str| invalid_rule(n, format!("{field} is required"));
            Ok(match body.kind {
                RuleKind::Hourly => Rule::Hourly {
                    rate_per_hour: body
                        .rate_per_hour
                        .ok_or_else(|| missing("rate_per_hour"))?
                        .0,
                },
                RuleKind::PerUnit => Rule::PerUnit {
                    unit: body.unit.ok_or_else(|| missing("unit"))?.into_string(),
                    amount_per_unit: body
                        .amount_per_unit
                        .ok_or_else(|| missing("amount_per_unit"))?
                        .0,
                },
                RuleKind::Commission => Rule::Commission {
                    basis_points: body.basis_points.ok_or_else(|| missing("basis_points"))?.0,
                    cap_per_period: body.cap_per_period.map(|cap| cap.0),
                    holding_days: body.holding_days.map_or(0, |days| days.0),
                },
            })
        })
        .collect()
}

/// A plan with its first version.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    pub plan_id: Name,
    #[schema(value_type = Currency)]
    pub currency: String,
    #[schema(value_type = BoundedTime)]
    pub effective_from: BoundedTime,
    /// 1 to 20: at most one hourly and one commission rule, one per_unit
    /// rule per unit.
    #[schema(value_type = Vec<shapes::RuleShape>, min_items = 1, max_items = 20)]
    pub rules: Vec<RuleBody>,
}

/// Creates a payout plan with its first version (immutable).
#[utoipa::path(
    post,
    path = "/v1/compensation/plans",
    tag = "compensation",
    request_body = PlanBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY)),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created, `version` 1", body = Accepted<PlanAnswer>),
        (status = 400, description = "Invalid input, naming the field; `invalid_rules` (a field of another kind of rule, or one missing)", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`invalid_rules` (no rule or more than 20, more than one hourly or commission rule, two per_unit rules of one unit); `already_exists`; `asset_scale_mismatch`; or key reused", body = ErrorBody),
    )
)]
async fn create_plan(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<PlanBody>,
) -> Result<Response, ApiError> {
    let request = AddPlanVersion {
        plan_id: body.plan_id.into_string(),
        asset: Some(asset_of(&body.currency)?),
        effective_from: body.effective_from.get(),
        rules: rules(body.rules)?,
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// A new version of a plan.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionBody {
    /// On or after the last version's.
    #[schema(value_type = BoundedTime)]
    pub effective_from: BoundedTime,
    #[schema(value_type = Vec<shapes::RuleShape>, min_items = 1, max_items = 20)]
    pub rules: Vec<RuleBody>,
}

/// Adds a version to a plan, effective on or after the last one's; work
/// is valued by the version in effect when it was done.
#[utoipa::path(
    post,
    path = "/v1/compensation/plans/{plan_id}/versions",
    tag = "compensation",
    request_body = VersionBody,
    params(
        ("plan_id" = inline(Name), Path, description = "The plan"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Added, `version` n+1", body = Accepted<PlanAnswer>),
        (status = 400, description = "Invalid input, naming the field; `invalid_rules` (a field of another kind of rule, or one missing)", body = ErrorBody),
        (status = 404, description = "`unknown_plan`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`invalid_rules` (no rule or more than 20, more than one hourly or commission rule, two per_unit rules of one unit); `version_before_last` (details: last, asked); or key reused", body = ErrorBody),
    )
)]
async fn add_version(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(plan_id): ApiPath<Name>,
    ApiJson(body): ApiJson<VersionBody>,
) -> Result<Response, ApiError> {
    let request = AddPlanVersion {
        plan_id: plan_id.into_string(),
        asset: None,
        effective_from: body.effective_from.get(),
        rules: rules(body.rules)?,
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// A role template.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    pub role_id: Name,
    pub name: Text<200>,
    /// The default plan of its payees' assignments.
    #[serde(default)]
    pub plan_id: Option<Name>,
}

/// Creates a role template: a name and the default plan of an assignment
/// (never an implicit assignment).
#[utoipa::path(
    post,
    path = "/v1/compensation/roles",
    tag = "compensation",
    request_body = RoleBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY)),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created", body = Accepted<serde_json::Value>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 404, description = "`unknown_plan`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`already_exists`; or key reused", body = ErrorBody),
    )
)]
async fn create_role(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<RoleBody>,
) -> Result<Response, ApiError> {
    let request = CreateRole {
        role_id: body.role_id.into_string(),
        name: body.name.into_string(),
        plan_id: body.plan_id.map(Name::into_string),
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// A payee.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayeeBody {
    pub payee_id: Name,
    pub name: Text<200>,
    #[schema(value_type = Currency)]
    pub currency: String,
    #[serde(default)]
    pub role_id: Option<Name>,
}

/// Creates a payee, paid in one currency; a role is optional.
#[utoipa::path(
    post,
    path = "/v1/payees",
    tag = "compensation",
    request_body = PayeeBody,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY)),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Created", body = Accepted<PayeeAnswer>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 404, description = "`unknown_role`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`already_exists`; `asset_scale_mismatch`; or key reused", body = ErrorBody),
    )
)]
async fn create_payee(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(body): ApiJson<PayeeBody>,
) -> Result<Response, ApiError> {
    let request = CreatePayee {
        payee_id: body.payee_id.into_string(),
        name: body.name.into_string(),
        asset: asset_of(&body.currency)?,
        role_id: body.role_id.map(Name::into_string),
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// Payee `payee_id` as the store has it; 404 when the tenant has none.
async fn existing_payee(
    state: &AppState,
    tenant_id: TenantId,
    payee_id: &str,
) -> Result<Payee, ApiError> {
    let payee: Payee = current_one(&state.store, tenant_id, payee_id).await?;
    if payee.profile.is_none() {
        return Err(ApiError::NotFound(format!("no payee {payee_id}")));
    }
    Ok(payee)
}

/// A plan assigned from a date.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignmentBody {
    /// Default: the payee's role's plan.
    #[serde(default)]
    pub plan_id: Option<Name>,
    #[schema(value_type = BoundedTime)]
    pub from: BoundedTime,
}

/// Assigns a plan to a payee from a date: work done from then is valued
/// by it (the assignment from the latest date on or before the work).
#[utoipa::path(
    post,
    path = "/v1/payees/{payee_id}/assignment",
    tag = "compensation",
    request_body = AssignmentBody,
    params(
        ("payee_id" = inline(Name), Path, description = "The payee"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Assigned", body = Accepted<PayeeAnswer>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 404, description = "No such payee; `unknown_plan`", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`plan_required` (no plan named and no role default); `currency_mismatch`; or key reused", body = ErrorBody),
    )
)]
async fn assign(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(payee_id): ApiPath<Name>,
    ApiJson(body): ApiJson<AssignmentBody>,
) -> Result<Response, ApiError> {
    let payee = existing_payee(&state, tenant_id, payee_id.as_str()).await?;
    let plan_id = match body.plan_id {
        Some(plan_id) => plan_id.into_string(),
        None => {
            let role = match payee.profile.as_ref().and_then(|p| p.role_id.clone()) {
                Some(role_id) => {
                    current_one::<Role>(&state.store, tenant_id, &role_id)
                        .await?
                        .plan_id
                }
                None => None,
            };
            role.ok_or_else(|| ApiError::Unprocessable {
                code: "plan_required",
                message: "name a plan_id: the payee's role has no default plan".into(),
                details: json!({"payee_id": payee_id.as_str()}),
            })?
        }
    };
    let request = AssignPlan {
        payee_id: payee_id.into_string(),
        plan_id,
        from: body.from.get(),
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}

/// What work is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    Time,
    Units,
}

/// Work done: `time` takes `minutes`; `units` takes `unit` (a per_unit
/// rule's) and `count`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkBody {
    pub kind: WorkKind,
    #[serde(default)]
    pub minutes: Option<Quantity>,
    #[serde(default)]
    pub unit: Option<Name>,
    #[serde(default)]
    pub count: Option<Quantity>,
    #[schema(value_type = BoundedTime)]
    pub worked_at: BoundedTime,
    /// The timesheet's or delivery's reference (`shift-1`).
    #[serde(default)]
    pub reference: Option<Name>,
}

impl WorkBody {
    fn work(&self) -> Result<Work, ApiError> {
        let invalid = |message: &str| ApiError::BadRequest {
            code: "invalid_request",
            message: message.to_string(),
            details: json!({"kind": self.kind}),
        };
        match (self.kind, &self.minutes, &self.unit, &self.count) {
            (WorkKind::Time, Some(minutes), None, None) => Ok(Work::Time { minutes: minutes.0 }),
            (WorkKind::Units, None, Some(unit), Some(count)) => Ok(Work::Units {
                unit: unit.as_str().to_string(),
                count: count.0,
            }),
            (WorkKind::Time, ..) => Err(invalid("time work takes minutes, and no unit or count")),
            (WorkKind::Units, ..) => {
                Err(invalid("units work takes unit and count, and no minutes"))
            }
        }
    }
}

/// Records work: a line valued once by the rule of the plan version
/// assigned to the payee when it was done (Dr `compensation_expense` / Cr
/// `compensation_payable:<payee>`, effective then). Its id is derived from
/// the Idempotency-Key.
#[utoipa::path(
    post,
    path = "/v1/payees/{payee_id}/work",
    tag = "compensation",
    request_body = shapes::WorkShape,
    params(
        ("payee_id" = inline(Name), Path, description = "The payee"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Accrued: `line_id`, `amount`", body = Accepted<LineAnswer>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 404, description = "No such payee", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`no_plan_assigned` (details: at); `no_plan_version` (details: plan_id, at); `no_matching_rule` (details: rule); `work_in_future` (worked_at after now: work is recorded once it is done; details: worked_at); `accrued_already` (the reference was accrued for the payee already; details: source; since rules 5); `currency_mismatch`; `amount_overflow`; `account_opened_otherwise` (the journal opened the account otherwise first); or key reused", body = ErrorBody),
    )
)]
async fn record_work(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(payee_id): ApiPath<Name>,
    ApiJson(body): ApiJson<WorkBody>,
) -> Result<Response, ApiError> {
    let asked = json!({"payee_id": payee_id.as_str(), "work": &body});
    let work = body.work()?;
    let (worked_at, reference) = (body.worked_at, body.reference);
    let line_id = LineId::from_uuid(derive_id(tenant_id, &key, "line"));
    let worked_at = worked_at.get();
    submit(&state, tenant_id, key, asked, || async {
        let payee = existing_payee(&state, tenant_id, payee_id.as_str()).await?;
        Ok(RecordWork {
            payee_id: payee_id.as_str().to_string(),
            line_id,
            work: work.clone(),
            worked_at,
            reference: reference.clone().map(Name::into_string),
            asset: payee_asset(&payee)?,
            plan_id: payee
                .assignment_at(worked_at)
                .map(|assignment| assignment.plan_id.clone()),
        })
    })
    .await
}

fn payee_asset(payee: &Payee) -> Result<aggregates::money::Asset, ApiError> {
    payee
        .profile
        .as_ref()
        .map(|profile| profile.asset.clone())
        .ok_or_else(|| ApiError::Internal("a payee without a profile".into()))
}

/// A correction.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentBody {
    /// Non-zero, in the payee's minor units; negative to take back.
    pub amount: SignedAmount,
    #[serde(default)]
    #[schema(schema_with = note_schema)]
    pub reason: Option<Note>,
    /// The line it corrects (a paid line never changes: it is corrected
    /// by a line paid in a later run). Since rules 6 what is left of the
    /// line stays on its side of nothing, a clawback or a refused line is
    /// not corrected this way, and clawbacks count the line as corrected.
    #[serde(default)]
    pub corrects: Option<LineId>,
}

/// Records an adjustment line, payable in the next run. Its id is derived
/// from the Idempotency-Key.
#[utoipa::path(
    post,
    path = "/v1/payees/{payee_id}/adjustments",
    tag = "compensation",
    request_body = AdjustmentBody,
    params(
        ("payee_id" = inline(Name), Path, description = "The payee"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = KEY),
    ),
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Accrued: `line_id`", body = Accepted<LineAnswer>),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 404, description = "No such payee; `unknown_line` (corrects)", body = ErrorBody),
        (status = 409, description = "Conflicting concurrent changes; retry", body = ErrorBody),
        (status = 422, description = "`invalid_amount` (zero); `correction_exceeds_line` (details: line_id, left; the correction would take what is left of the line it corrects, as corrected and less what was clawed back of it, past nothing; since rules 6); `line_not_correctable` (details: line_id; a clawback, its reversal or a refused line; since rules 6); `amount_overflow`; `account_opened_otherwise`; or key reused", body = ErrorBody),
    )
)]
async fn adjust(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiPath(payee_id): ApiPath<Name>,
    ApiJson(body): ApiJson<AdjustmentBody>,
) -> Result<Response, ApiError> {
    let payee = existing_payee(&state, tenant_id, payee_id.as_str()).await?;
    let request = AdjustLine {
        payee_id: payee_id.into_string(),
        line_id: LineId::from_uuid(derive_id(tenant_id, &key, "line")),
        amount: body.amount.0,
        reason: body.reason.map(Text::into_string),
        corrects: body.corrects,
        asset: payee_asset(&payee)?,
    };
    Ok(outcome_response(
        state.bus.execute(tenant_id, key, request).await?,
    ))
}
