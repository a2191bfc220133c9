//! Compensation requests: plans and their versions, roles, payees and
//! their assignments (here), the lines of a payee's ledger (`lines`), pay
//! runs (`runs`), and the process manager accruing commissions from
//! payments (`commissions`). Money moves in the journal through `books`:
//!
//! - a line accrued: Dr `compensation_expense` / Cr
//!   `compensation_payable:<payee>` (a negative line the other way round),
//!   effective when it was earned;
//! - a pay run paid: Dr `compensation_payable:<payee>` / Cr `bank:payroll`
//!   per payee with a positive net.

pub mod commissions;
mod lines;
mod runs;

pub use lines::{
    AccrueCommission, AdjustLine, ClawBack, MakeLinePayable, RecordWork, ReverseClawBack,
};
pub use runs::{ApprovePayRun, CancelPayRun, CreatePayRun, PayPayRun, PayRunAnswer, ReopenPayRun};

use super::books;
use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use aggregates::compensation::accounts::{self, CompensationAccount};
use aggregates::compensation::plan::{Directory, DirectoryCommand, DIRECTORY};
use aggregates::compensation::{
    CompensationError, Line, Payee, PayeeCommand, PayeeEvent, Plan, PlanCommand, PlanVersion, Role,
    RoleCommand, Rule,
};
use aggregates::ids::LineId;
use aggregates::journal::entry::EntryRecord;
use aggregates::money::{Amount, Asset};
use aggregates::{EntryId, RejectionKind};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// Payee `payee_id`'s payable account, or a refusal naming the payee.
fn payable(payee_id: &str) -> Result<CompensationAccount, Refusal> {
    accounts::payable(payee_id).map_err(|_| Refusal::Rejected {
        kind: RejectionKind::Invalid,
        code: "invalid_payee".into(),
        message: format!("payee {payee_id:?} names no account"),
        details: json!({ "payee_id": payee_id }),
    })
}

/// The entry of line `line_id`.
fn line_entry(line_id: LineId) -> EntryId {
    EntryId::from_uuid(line_id.as_uuid())
}

/// The targets of a request accruing line `line_id` for `payee_id` in
/// `asset`: the payee, the expense and the payee's payable, the asset and
/// the line's entry.
fn line_targets(payee_id: &str, asset: &Asset, line_id: LineId) -> Vec<Target> {
    let mut targets = vec![Target::of::<Payee>(payee_id)];
    if let Ok(payable) = payable(payee_id) {
        targets.extend(books::money_targets(
            [&accounts::expense().code, &payable.code],
            [asset],
        ));
    }
    targets.push(Target::of::<EntryRecord>(line_entry(line_id).to_string()));
    targets
}

/// Posts what a line accrued: Dr expense / Cr payable (the other way for a
/// negative line), effective when it was earned; nothing for a line of 0.
fn book_line(
    decider: &mut Decider<'_>,
    payee_id: &str,
    asset: &Asset,
    line: &Line,
) -> Result<(), Refusal> {
    if line.amount == 0 {
        return Ok(());
    }
    let (expense, payable) = (accounts::expense(), payable(payee_id)?);
    for account in [&expense, &payable] {
        books::open(decider, &account.code, account.spec)?;
    }
    let amount = Amount::new(
        line.amount
            .unsigned_abs()
            .try_into()
            .map_err(|_| Refusal::from(aggregates::money::AmountError::Overflow))?,
    )?;
    let (debit, credit) = if line.amount > 0 {
        (&expense.code, &payable.code)
    } else {
        (&payable.code, &expense.code)
    };
    let lines = books::transfer_lines(debit, credit, asset, amount);
    let reference = Some(format!("payee:{payee_id}:line:{}", line.line_id));
    books::post(
        decider,
        line_entry(line.line_id),
        &lines,
        reference,
        line.accrued_at,
    )
}

/// A line as a request answers it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LineAnswer {
    pub payee_id: String,
    #[serde(flatten)]
    pub line: Line,
}

/// Decides `command` on payee `payee_id`, books the line it accrues and
/// answers it (201).
fn accrue(
    decider: &mut Decider<'_>,
    payee_id: &str,
    asset: &Asset,
    command: PayeeCommand,
) -> Result<Reply, Refusal> {
    let current = payee(decider, payee_id)?;
    if current.profile.as_ref().map(|profile| &profile.asset) != Some(asset) {
        return Err(Refusal::Stale(format!(
            "payee {payee_id} is paid in another currency than resolved"
        )));
    }
    books::use_assets(decider, [asset])?;
    let events = decider.execute::<Payee>(payee_id, command)?;
    let Some(PayeeEvent::LineAccrued(line)) = events.into_iter().next() else {
        return Err(Refusal::Internal("an accrual accrued no line".into()));
    };
    book_line(decider, payee_id, asset, &line)?;
    Reply::created(
        payee_id.to_string(),
        &LineAnswer {
            payee_id: payee_id.to_string(),
            line: *line,
        },
    )
}

/// Payee `payee_id`, existing.
fn payee<'a>(decider: &'a Decider<'_>, payee_id: &str) -> Result<&'a Payee, Refusal> {
    let payee = decider.state::<Payee>(payee_id)?;
    if payee.profile.is_none() {
        return Err(CompensationError::UnknownPayee.into());
    }
    Ok(payee)
}

/// A plan as its requests answer it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanAnswer {
    pub plan_id: String,
    #[schema(value_type = String)]
    pub currency: Asset,
    /// The version the request added.
    pub version: u32,
    pub versions: Vec<PlanVersion>,
}

/// Creates a plan with its first version, or adds one (`asset` only when
/// creating).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddPlanVersion {
    pub plan_id: String,
    pub asset: Option<Asset>,
    pub effective_from: DateTime<Utc>,
    pub rules: Vec<Rule>,
}

impl Request for AddPlanVersion {
    const KIND: &'static str = "add_plan_version";

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Plan>(self.plan_id.clone())]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        decider.execute::<Plan>(
            &self.plan_id,
            PlanCommand::AddVersion {
                asset: self.asset.clone(),
                effective_from: self.effective_from,
                rules: self.rules.clone(),
                at,
            },
        )?;
        let plan = decider.state::<Plan>(&self.plan_id)?;
        let answer = PlanAnswer {
            plan_id: self.plan_id.clone(),
            currency: plan.asset.clone().ok_or(CompensationError::UnknownPlan)?,
            version: plan.versions.last().map_or(0, |version| version.version),
            versions: plan.versions.clone(),
        };
        Reply::created(self.plan_id.clone(), &answer)
    }
}

/// Creates a role template, its default plan (if any) existing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    pub role_id: String,
    pub name: String,
    pub plan_id: Option<String>,
}

impl Request for CreateRole {
    const KIND: &'static str = "create_role";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![Target::of::<Role>(self.role_id.clone())];
        targets.extend(self.plan_id.clone().map(Target::of::<Plan>));
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        if let Some(plan_id) = &self.plan_id {
            if decider.state::<Plan>(plan_id)?.asset.is_none() {
                return Err(CompensationError::UnknownPlan.into());
            }
        }
        let at = decider.at();
        decider.execute::<Role>(
            &self.role_id,
            RoleCommand::Create {
                name: self.name.clone(),
                plan_id: self.plan_id.clone(),
                at,
            },
        )?;
        Reply::created(
            self.role_id.clone(),
            &json!({"role_id": self.role_id, "name": self.name, "plan_id": self.plan_id, "created_at": at}),
        )
    }
}

/// A payee as its requests answer it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PayeeAnswer {
    pub payee_id: String,
    #[serde(flatten)]
    pub profile: aggregates::compensation::Profile,
    pub assignments: Vec<aggregates::compensation::Assignment>,
}

fn payee_answer(decider: &Decider<'_>, payee_id: &str) -> Result<PayeeAnswer, Refusal> {
    let payee = payee(decider, payee_id)?;
    Ok(PayeeAnswer {
        payee_id: payee_id.to_string(),
        profile: payee
            .profile
            .clone()
            .ok_or(CompensationError::UnknownPayee)?,
        assignments: payee.assignments.clone(),
    })
}

/// Creates a payee (listed in the tenant's directory), its role (if any)
/// existing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePayee {
    pub payee_id: String,
    pub name: String,
    pub asset: Asset,
    pub role_id: Option<String>,
}

impl Request for CreatePayee {
    const KIND: &'static str = "create_payee";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![
            Target::of::<Payee>(self.payee_id.clone()),
            Target::of::<Directory>(DIRECTORY),
        ];
        targets.extend(self.role_id.clone().map(Target::of::<Role>));
        targets.extend(books::money_targets([], [&self.asset]));
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        if let Some(role_id) = &self.role_id {
            if decider.state::<Role>(role_id)?.name.is_none() {
                return Err(CompensationError::UnknownRole.into());
            }
        }
        payable(&self.payee_id)?;
        let at = decider.at();
        books::use_assets(decider, [&self.asset])?;
        decider.execute::<Payee>(
            &self.payee_id,
            PayeeCommand::Create {
                name: self.name.clone(),
                asset: self.asset.clone(),
                role_id: self.role_id.clone(),
                at,
            },
        )?;
        decider.execute::<Directory>(
            DIRECTORY,
            DirectoryCommand::List {
                payee_id: self.payee_id.clone(),
            },
        )?;
        Reply::created(
            self.payee_id.clone(),
            &payee_answer(decider, &self.payee_id)?,
        )
    }
}

/// Assigns a plan (existing, in the payee's currency) to a payee from a
/// date.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignPlan {
    pub payee_id: String,
    pub plan_id: String,
    pub from: DateTime<Utc>,
}

impl Request for AssignPlan {
    const KIND: &'static str = "assign_plan";

    fn targets(&self) -> Vec<Target> {
        vec![
            Target::of::<Payee>(self.payee_id.clone()),
            Target::of::<Plan>(self.plan_id.clone()),
        ]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let profile = payee(decider, &self.payee_id)?
            .profile
            .clone()
            .ok_or(CompensationError::UnknownPayee)?;
        let plan = decider
            .state::<Plan>(&self.plan_id)?
            .asset
            .clone()
            .ok_or(CompensationError::UnknownPlan)?;
        if plan != profile.asset {
            return Err(CompensationError::CurrencyMismatch {
                plan: plan.code().to_string(),
                payee: profile.asset.code().to_string(),
            }
            .into());
        }
        let at = decider.at();
        decider.execute::<Payee>(
            &self.payee_id,
            PayeeCommand::Assign {
                plan_id: self.plan_id.clone(),
                from: self.from,
                at,
            },
        )?;
        Reply::ok(
            self.payee_id.clone(),
            &payee_answer(decider, &self.payee_id)?,
        )
    }
}

/// The scheduled work of line `line_id`'s holding period.
pub fn holding(payee_id: &str, line_id: LineId) -> String {
    format!("payee:{payee_id}:line:{line_id}:hold")
}

/// What a payee event schedules: a held line becoming payable at the end
/// of its holding period (settled once it is).
fn schedule(
    event: &eventstore::StoredEvent,
) -> Result<Vec<projections::scheduled::ScheduleChange>, projections::ApplyError> {
    use crate::scheduler::{due, settled};
    use aggregates::compensation::LineStatus;
    let payee_id = event.aggregate_id.clone();
    Ok(match projections::decode::decode::<Payee>(event)? {
        PayeeEvent::LineAccrued(line) if line.status == LineStatus::Held => {
            let Some(payable_at) = line.payable_at else {
                return Ok(Vec::new());
            };
            vec![due(
                holding(&payee_id, line.line_id),
                payable_at,
                &MakeLinePayable {
                    payee_id: payee_id.clone(),
                    line_id: line.line_id,
                    due_at: Some(payable_at),
                },
            )?]
        }
        PayeeEvent::LinePayable { line_id, .. } => vec![settled(holding(&payee_id, line_id))],
        _ => Vec::new(),
    })
}

/// A payee as a replay reports it.
fn report(payee_id: &str, payee: &Payee) -> serde_json::Value {
    let Some(profile) = &payee.profile else {
        return serde_json::Value::Null;
    };
    let status = |status| move |line: &Line| line.status == status;
    use aggregates::compensation::LineStatus;
    json!({
        "payee_id": payee_id,
        "asset": profile.asset,
        "lines": payee.lines.len(),
        "accrued": payee.sum(|line| line.status != LineStatus::Refused).ok(),
        "held": payee.sum(status(LineStatus::Held)).ok(),
        "unpaid_payable": payee.unpaid_payable().ok(),
        "in_run": payee.sum(status(LineStatus::InRun)).ok(),
        "paid_lines": payee.sum(status(LineStatus::Paid)).ok(),
        "carried": payee.unrecovered().ok(),
    })
}

/// The compensation domain: plans, roles, payees and their ledgers, pay
/// runs, and the commission process manager.
pub fn domain() -> crate::domains::Domain {
    use crate::domains::{Domain, RequestKind, Section};
    use crate::pipeline::AggregateKind;
    use aggregates::compensation::PayRun;
    Domain {
        name: "compensation",
        aggregates: vec![
            AggregateKind::of::<Plan>(),
            AggregateKind::of::<Role>(),
            AggregateKind::of::<Directory>(),
            AggregateKind::of::<Payee>(),
            AggregateKind::of::<PayRun>(),
        ],
        requests: vec![
            RequestKind::of::<AddPlanVersion>(),
            RequestKind::of::<CreateRole>(),
            RequestKind::of::<CreatePayee>(),
            RequestKind::of::<AssignPlan>(),
            RequestKind::of::<RecordWork>(),
            RequestKind::of::<AdjustLine>(),
            RequestKind::of::<AccrueCommission>(),
            RequestKind::of::<ClawBack>(),
            RequestKind::of::<ReverseClawBack>(),
            RequestKind::of::<MakeLinePayable>(),
            RequestKind::of::<CreatePayRun>(),
            RequestKind::of::<ApprovePayRun>(),
            RequestKind::of::<ReopenPayRun>(),
            RequestKind::of::<CancelPayRun>(),
            RequestKind::of::<PayPayRun>(),
        ],
        projections: vec![std::sync::Arc::new(projections::compensation::Compensation)],
        process_managers: vec![commissions::process_manager],
        reactions: vec![commissions::REACTIONS],
        schedules: vec![projections::scheduled::ScheduleReader {
            aggregate_type: aggregates::compensation::PAYEE_AGGREGATE,
            events: &["LineAccrued", "LinePayable"],
            read: schedule,
        }],
        routes: crate::http::compensation::router,
        tags: crate::http::compensation::tags(),
        sections: vec![Section {
            name: "payees",
            aggregate_type: aggregates::compensation::PAYEE_AGGREGATE,
            one: false,
            report: |payee_id, state, _| match state.as_any().downcast_ref::<Payee>() {
                Some(payee) => report(payee_id, payee),
                None => serde_json::Value::Null,
            },
        }],
    }
}
