//! A pay run: a period and a cutoff, the share of each payee whose
//! payable lines it claimed, then approved, then paid (or reopened before
//! that, to claim again, or canceled, its lines released for good).

use super::CompensationError;
use crate::decide::{handle_by_deciding, Decide};
use crate::ids::LineId;
use crate::money::{Amount, Asset};
use crate::rules::Rules;
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Aggregate type of pay runs; the id is the pay run id.
pub const PAY_RUN_AGGREGATE: &str = "pay_run";

/// A pay run's period and cutoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunTerms {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// Lines accrued up to it are claimed.
    pub cutoff: DateTime<Utc>,
}

/// One payee's part of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunPayee {
    pub payee_id: String,
    pub asset: Asset,
    pub lines: Vec<LineId>,
    pub gross: i64,
    pub carried_in: i64,
    pub net: i64,
    /// Once paid: what was paid (the net when positive) and carried out.
    pub paid: Option<Amount>,
    pub carried_out: Option<i64>,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Draft,
    Approved,
    Paid,
    /// Canceled before payment: its shares released, nothing in it.
    Canceled,
}

/// A pay run's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayRun {
    pub terms: Option<RunTerms>,
    pub status: Option<RunStatus>,
    pub payees: Vec<RunPayee>,
    pub created_at: Option<DateTime<Utc>>,
    pub approved_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    /// Times it was reopened.
    pub reopened: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canceled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PayRunCommand {
    Create {
        terms: RunTerms,
        rules: Rules,
        at: DateTime<Utc>,
    },
    /// Records a payee's share, as their claim gave it.
    Include {
        payee: RunPayee,
    },
    Approve {
        at: DateTime<Utc>,
    },
    /// Back to draft, every share released (to be claimed again).
    Reopen {
        at: DateTime<Utc>,
    },
    /// Paid, each payee's share as the payee paid it.
    Pay {
        paid: Vec<(String, Amount, i64)>,
        at: DateTime<Utc>,
    },
    /// Canceled before payment, every share released.
    Cancel {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayRunEvent {
    RunCreated {
        terms: RunTerms,
        at: DateTime<Utc>,
    },
    PayeeIncluded(RunPayee),
    RunApproved {
        at: DateTime<Utc>,
    },
    RunReopened {
        at: DateTime<Utc>,
    },
    RunPaid {
        paid: Vec<(String, Amount, i64)>,
        at: DateTime<Utc>,
    },
    RunCanceled {
        at: DateTime<Utc>,
    },
}

impl DomainEvent for PayRunEvent {
    fn event_type(&self) -> String {
        match self {
            Self::RunCreated { .. } => "RunCreated",
            Self::PayeeIncluded(_) => "PayeeIncluded",
            Self::RunApproved { .. } => "RunApproved",
            Self::RunReopened { .. } => "RunReopened",
            Self::RunPaid { .. } => "RunPaid",
            Self::RunCanceled { .. } => "RunCanceled",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Aggregate for PayRun {
    const TYPE: &'static str = PAY_RUN_AGGREGATE;
    type Command = PayRunCommand;
    type Event = PayRunEvent;
    type Error = CompensationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PayRunCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CompensationError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: PayRunEvent) {
        match event {
            PayRunEvent::RunCreated { terms, at } => {
                self.terms = Some(terms);
                self.status = Some(RunStatus::Draft);
                self.created_at = Some(at);
            }
            PayRunEvent::PayeeIncluded(payee) => self.payees.push(payee),
            PayRunEvent::RunApproved { at } => {
                self.status = Some(RunStatus::Approved);
                self.approved_at = Some(at);
            }
            PayRunEvent::RunReopened { .. } => {
                self.status = Some(RunStatus::Draft);
                self.approved_at = None;
                self.payees.clear();
                self.reopened = self.reopened.saturating_add(1);
            }
            PayRunEvent::RunPaid { paid, at } => {
                for (payee_id, amount, carried_out) in paid {
                    if let Some(payee) = self
                        .payees
                        .iter_mut()
                        .find(|payee| payee.payee_id == payee_id)
                    {
                        payee.paid = Some(amount);
                        payee.carried_out = Some(carried_out);
                    }
                }
                self.status = Some(RunStatus::Paid);
                self.paid_at = Some(at);
            }
            PayRunEvent::RunCanceled { at } => {
                self.status = Some(RunStatus::Canceled);
                self.approved_at = None;
                self.payees.clear();
                self.canceled_at = Some(at);
            }
        }
    }
}

impl RunTerms {
    /// What a claim of the run (at its reopening) goes up to since rules
    /// 11: its cutoff, no later than the period's end nor the run's
    /// creation (`created_at`), which a run created under older rules may
    /// have set its cutoff past.
    pub fn bounded_cutoff(&self, created_at: Option<DateTime<Utc>>) -> DateTime<Utc> {
        let bound = self.cutoff.min(self.period_end);
        created_at.map_or(bound, |created| bound.min(created))
    }

    /// Since rules 11: the cutoff within the period, and not after `at`
    /// (the run claims what has accrued by the cutoff when it is made).
    fn check_cutoff(&self, at: DateTime<Utc>) -> Result<(), CompensationError> {
        if self.cutoff < self.period_start || self.cutoff > self.period_end {
            return Err(CompensationError::CutoffOutsidePeriod {
                cutoff: self.cutoff,
                period_start: self.period_start,
                period_end: self.period_end,
            });
        }
        if self.cutoff > at {
            return Err(CompensationError::CutoffInFuture {
                cutoff: self.cutoff,
                at,
            });
        }
        Ok(())
    }
}

impl PayRun {
    fn unpaid(&self) -> Result<RunStatus, CompensationError> {
        match self.status {
            None => Err(CompensationError::UnknownPayRun),
            Some(RunStatus::Paid) => Err(CompensationError::PayRunPaid),
            Some(RunStatus::Canceled) => Err(CompensationError::PayRunCanceled),
            Some(status) => Ok(status),
        }
    }
}

impl Decide for PayRun {
    fn decide(&self, command: PayRunCommand) -> Result<Vec<PayRunEvent>, CompensationError> {
        match command {
            PayRunCommand::Create { terms, rules, at } => {
                if self.status.is_some() {
                    return Err(CompensationError::Exists);
                }
                if terms.period_start >= terms.period_end {
                    return Err(CompensationError::InvalidPeriod);
                }
                if rules.since(Rules::ELEVENTH) {
                    terms.check_cutoff(at)?;
                }
                Ok(vec![PayRunEvent::RunCreated { terms, at }])
            }
            PayRunCommand::Include { payee } => match self.unpaid()? {
                RunStatus::Draft => Ok(vec![PayRunEvent::PayeeIncluded(payee)]),
                _ => Err(CompensationError::PayRunApproved),
            },
            PayRunCommand::Approve { at } => match self.unpaid()? {
                RunStatus::Draft => Ok(vec![PayRunEvent::RunApproved { at }]),
                _ => Err(CompensationError::PayRunApproved),
            },
            PayRunCommand::Reopen { at } => {
                self.unpaid()?;
                Ok(vec![PayRunEvent::RunReopened { at }])
            }
            PayRunCommand::Pay { paid, at } => match self.unpaid()? {
                RunStatus::Approved => Ok(vec![PayRunEvent::RunPaid { paid, at }]),
                _ => Err(CompensationError::PayRunNotApproved),
            },
            PayRunCommand::Cancel { at } => {
                self.unpaid()?;
                Ok(vec![PayRunEvent::RunCanceled { at }])
            }
        }
    }
}
