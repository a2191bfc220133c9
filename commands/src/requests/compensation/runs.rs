//! Pay runs: created (claiming every payee's payable lines accrued by the
//! cutoff, once), approved, reopened before payment (released and claimed
//! again), and paid: Dr `compensation_payable:<payee>` / Cr `bank:payroll`
//! per payee with a positive net, a negative net carried forward.
//!
//! Since rules 10 a payee's runs are paid in turn: a payee with a share of
//! a run not yet paid is left out of a new one (answered as `waiting`).
//!
//! A run goes through every payee of the tenant's directory: the request
//! is resolved with the directory's list and refused as stale when a
//! payee joined in between, so a run never misses one; two runs decided
//! one after the other claim disjoint lines.

use super::{payable, payee};
use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use aggregates::compensation::accounts;
use aggregates::compensation::plan::{Directory, DIRECTORY};
use aggregates::compensation::{
    CompensationError, PayRun, PayRunCommand, Payee, PayeeCommand, PayeeEvent, RunPayee, RunStatus,
    RunTerms,
};
use aggregates::ids::PayRunId;
use aggregates::journal::entry::EntryRecord;
use aggregates::money::Asset;
use aggregates::EntryId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use utoipa::ToSchema;

/// A pay run as its requests answer it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PayRunAnswer {
    pub pay_run_id: PayRunId,
    pub status: Option<RunStatus>,
    #[serde(flatten)]
    pub terms: Option<RunTerms>,
    pub payees: Vec<RunPayee>,
    pub created_at: Option<DateTime<Utc>>,
    pub approved_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    /// In the answer to a run's creation or reopening only: the payees
    /// with lines payable by the cutoff that the run left out, since a run
    /// not yet paid holds a share of theirs (since rules 10 a payee's runs
    /// are paid in turn; their lines wait for a run created after those).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<WaitingPayee>,
}

/// A payee a run left out, and the unpaid runs it waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct WaitingPayee {
    pub payee_id: String,
    pub unpaid_runs: Vec<PayRunId>,
}

impl PayRunAnswer {
    pub fn of(pay_run_id: PayRunId, run: &PayRun) -> Self {
        Self {
            pay_run_id,
            status: run.status,
            terms: run.terms.clone(),
            payees: run.payees.clone(),
            created_at: run.created_at,
            approved_at: run.approved_at,
            paid_at: run.paid_at,
            waiting: Vec::new(),
        }
    }
}

fn answer(
    decider: &Decider<'_>,
    run_id: PayRunId,
    created: bool,
    waiting: Vec<WaitingPayee>,
) -> Result<Reply, Refusal> {
    let mut answer = PayRunAnswer::of(run_id, decider.state::<PayRun>(&run_id.to_string())?);
    answer.waiting = waiting;
    if created {
        Reply::created(run_id.to_string(), &answer)
    } else {
        Reply::ok(run_id.to_string(), &answer)
    }
}

/// The entry paying payee `payee_id` in run `run_id`.
pub fn pay_entry(run_id: PayRunId, payee_id: &str) -> EntryId {
    EntryId::from_uuid(crate::pipeline::hashed_id(&[
        b"ledger.pay-run-entry.v1",
        run_id.as_uuid().as_bytes(),
        payee_id.as_bytes(),
    ]))
}

/// The targets of a run going through `payees`: the run, the directory,
/// each payee.
fn run_targets(run_id: PayRunId, payees: &[String]) -> Vec<Target> {
    let mut targets = vec![
        Target::of::<PayRun>(run_id.to_string()),
        Target::of::<Directory>(DIRECTORY),
    ];
    targets.extend(payees.iter().cloned().map(Target::of::<Payee>));
    targets
}

/// Checks `payees` is the directory as it stands.
fn directory_is(decider: &Decider<'_>, payees: &[String]) -> Result<(), Refusal> {
    let listed = &decider.state::<Directory>(DIRECTORY)?.payees;
    if listed != &payees.iter().cloned().collect::<BTreeSet<_>>() {
        return Err(Refusal::Stale("the payee directory moved".into()));
    }
    Ok(())
}

/// Each payee of `payees` with payable lines by `cutoff`: claimed by run
/// `run_id` and included in it; or, when another run not yet paid holds a
/// share of the payee's (since rules 10), left out, and answered as
/// waiting.
fn gather(
    decider: &mut Decider<'_>,
    run_id: PayRunId,
    payees: &[String],
    cutoff: DateTime<Utc>,
) -> Result<Vec<WaitingPayee>, Refusal> {
    let at = decider.at();
    let mut waiting = Vec::new();
    for payee_id in payees {
        let state = payee(decider, payee_id)?;
        let asset = state
            .profile
            .as_ref()
            .map(|profile| profile.asset.clone())
            .ok_or(CompensationError::UnknownPayee)?;
        // Left out (claiming nothing below) while a run not yet paid holds
        // a share: said when it had lines to claim. The run's own share
        // was released (a reopen) or is not there yet.
        let rules = decider.rules();
        let unpaid_runs: Vec<PayRunId> = state.unpaid_runs().map(|(run, _)| *run).collect();
        if rules.since(aggregates::rules::Rules::TENTH)
            && !unpaid_runs.is_empty()
            && state.payable_by(cutoff).next().is_some()
        {
            waiting.push(WaitingPayee {
                payee_id: payee_id.clone(),
                unpaid_runs,
            });
        }
        let claimed = decider.execute::<Payee>(
            payee_id,
            PayeeCommand::Claim {
                run_id,
                cutoff,
                rules,
                at,
            },
        )?;
        for event in claimed {
            if let PayeeEvent::LinesClaimed {
                lines,
                gross,
                carried_in,
                ..
            } = event
            {
                let net = gross
                    .checked_add(carried_in)
                    .ok_or(aggregates::money::AmountError::Overflow)?;
                let payee = RunPayee {
                    payee_id: payee_id.clone(),
                    asset: asset.clone(),
                    lines,
                    gross,
                    carried_in,
                    net,
                    paid: None,
                    carried_out: None,
                };
                decider.execute::<PayRun>(&run_id.to_string(), PayRunCommand::Include { payee })?;
            }
        }
    }
    Ok(waiting)
}

/// Runs `command` (a reopen or a cancel) on run `run_id` and releases
/// every share it held.
fn release_run(
    decider: &mut Decider<'_>,
    run_id: PayRunId,
    command: PayRunCommand,
) -> Result<(), Refusal> {
    let included: Vec<String> = decider
        .state::<PayRun>(&run_id.to_string())?
        .payees
        .iter()
        .map(|share| share.payee_id.clone())
        .collect();
    let at = decider.at();
    decider.execute::<PayRun>(&run_id.to_string(), command)?;
    for payee_id in &included {
        decider.execute::<Payee>(payee_id, PayeeCommand::Release { run_id, at })?;
    }
    Ok(())
}

/// Creates a pay run: every payable line accrued by the cutoff, of every
/// payee, claimed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePayRun {
    pub pay_run_id: PayRunId,
    pub terms: RunTerms,
    /// Resolved: the directory's payees.
    pub payees: Vec<String>,
}

impl Request for CreatePayRun {
    const KIND: &'static str = "create_pay_run";

    fn targets(&self) -> Vec<Target> {
        run_targets(self.pay_run_id, &self.payees)
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        directory_is(decider, &self.payees)?;
        let at = decider.at();
        decider.execute::<PayRun>(
            &self.pay_run_id.to_string(),
            PayRunCommand::Create {
                terms: self.terms.clone(),
                rules: decider.rules(),
                at,
            },
        )?;
        let waiting = gather(decider, self.pay_run_id, &self.payees, self.terms.cutoff)?;
        answer(decider, self.pay_run_id, true, waiting)
    }
}

/// Approves a draft run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovePayRun {
    pub pay_run_id: PayRunId,
}

impl Request for ApprovePayRun {
    const KIND: &'static str = "approve_pay_run";

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<PayRun>(self.pay_run_id.to_string())]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        decider.execute::<PayRun>(&self.pay_run_id.to_string(), PayRunCommand::Approve { at })?;
        answer(decider, self.pay_run_id, false, Vec::new())
    }
}

/// Reopens an unpaid run: back to draft, its lines released and every
/// payable line by its cutoff claimed again (one made payable since,
/// accrued by the cutoff, included); since rules 11 no further than the
/// period's end and the run's creation, whatever older rules let its
/// cutoff be.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReopenPayRun {
    pub pay_run_id: PayRunId,
    /// Resolved: the directory's payees.
    pub payees: Vec<String>,
}

impl Request for ReopenPayRun {
    const KIND: &'static str = "reopen_pay_run";

    fn targets(&self) -> Vec<Target> {
        run_targets(self.pay_run_id, &self.payees)
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        directory_is(decider, &self.payees)?;
        let bounded = decider.rules().since(aggregates::rules::Rules::ELEVENTH);
        let run = decider.state::<PayRun>(&self.pay_run_id.to_string())?;
        // Since rules 11 a run created under older rules with its cutoff
        // past its period or its creation claims no further than those.
        let cutoff = run
            .terms
            .as_ref()
            .map(|terms| {
                if bounded {
                    terms.bounded_cutoff(run.created_at)
                } else {
                    terms.cutoff
                }
            })
            .ok_or(CompensationError::UnknownPayRun)?;
        let at = decider.at();
        release_run(decider, self.pay_run_id, PayRunCommand::Reopen { at })?;
        let waiting = gather(decider, self.pay_run_id, &self.payees, cutoff)?;
        answer(decider, self.pay_run_id, false, waiting)
    }
}

/// Cancels an unpaid run: every share released (the payees' lines payable
/// again, what a payee's share carried in back to the payee), nothing in
/// it; a payee it held back from later runs is free to be claimed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelPayRun {
    pub pay_run_id: PayRunId,
    /// Resolved: the directory's payees (those in the run among them).
    pub payees: Vec<String>,
}

impl Request for CancelPayRun {
    const KIND: &'static str = "cancel_pay_run";

    fn targets(&self) -> Vec<Target> {
        run_targets(self.pay_run_id, &self.payees)
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        directory_is(decider, &self.payees)?;
        let at = decider.at();
        release_run(decider, self.pay_run_id, PayRunCommand::Cancel { at })?;
        answer(decider, self.pay_run_id, false, Vec::new())
    }
}

/// Pays an approved run: each payee's positive net from `bank:payroll`,
/// a negative one carried forward.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayPayRun {
    pub pay_run_id: PayRunId,
    /// Resolved: the payees in the run and their currencies.
    pub payees: Vec<(String, Asset)>,
}

impl Request for PayPayRun {
    const KIND: &'static str = "pay_pay_run";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![Target::of::<PayRun>(self.pay_run_id.to_string())];
        let bank = accounts::payroll_bank();
        let payables: Vec<_> = self
            .payees
            .iter()
            .filter_map(|(payee_id, _)| payable(payee_id).ok())
            .collect();
        targets.extend(books_targets(&bank, &payables, &self.payees));
        for (payee_id, _) in &self.payees {
            targets.push(Target::of::<Payee>(payee_id.clone()));
            targets.push(Target::of::<EntryRecord>(
                pay_entry(self.pay_run_id, payee_id).to_string(),
            ));
        }
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let run_key = self.pay_run_id.to_string();
        let included: Vec<(String, Asset)> = decider
            .state::<PayRun>(&run_key)?
            .payees
            .iter()
            .map(|payee| (payee.payee_id.clone(), payee.asset.clone()))
            .collect();
        if included != self.payees {
            return Err(Refusal::Stale("the run's payees moved".into()));
        }
        let at = decider.at();
        let mut paid = Vec::with_capacity(self.payees.len());
        for (payee_id, asset) in &self.payees {
            let events = decider.execute::<Payee>(
                payee_id,
                PayeeCommand::Pay {
                    run_id: self.pay_run_id,
                    at,
                },
            )?;
            for event in events {
                if let PayeeEvent::RunPaid {
                    paid: amount,
                    carried_out,
                    ..
                } = event
                {
                    if !amount.is_zero() {
                        pay(decider, self.pay_run_id, payee_id, asset, amount)?;
                    }
                    paid.push((payee_id.clone(), amount, carried_out));
                }
            }
        }
        decider.execute::<PayRun>(&run_key, PayRunCommand::Pay { paid, at })?;
        answer(decider, self.pay_run_id, false, Vec::new())
    }
}

fn books_targets(
    bank: &accounts::CompensationAccount,
    payables: &[accounts::CompensationAccount],
    payees: &[(String, Asset)],
) -> Vec<Target> {
    super::books::money_targets(
        std::iter::once(&bank.code).chain(payables.iter().map(|account| &account.code)),
        payees.iter().map(|(_, asset)| asset),
    )
}

/// Dr the payee's payable / Cr `bank:payroll`, `amount`.
fn pay(
    decider: &mut Decider<'_>,
    run_id: PayRunId,
    payee_id: &str,
    asset: &Asset,
    amount: aggregates::money::Amount,
) -> Result<(), Refusal> {
    let (bank, payable) = (accounts::payroll_bank(), payable(payee_id)?);
    for account in [&bank, &payable] {
        super::books::open(decider, &account.code, account.spec)?;
    }
    let lines = super::books::transfer_lines(&payable.code, &bank.code, asset, amount);
    let at = decider.at();
    super::books::post(
        decider,
        pay_entry(run_id, payee_id),
        &lines,
        Some(format!("pay_run:{run_id}")),
        at,
    )
}
