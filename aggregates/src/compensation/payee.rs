//! A payee: who is paid, in which currency, under which plan from when,
//! and the compensation ledger of every line accrued for them, with the
//! share of each pay run that claimed their lines.

use super::ledger::{Line, LineStatus};
use crate::decide::handle_by_deciding;
use crate::ids::{LineId, PayRunId};
use crate::money::{Amount, AmountError, Asset};
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

pub use super::payee_decide::PayeeCommand;

/// Aggregate type of payees; the id is the payee id.
pub const PAYEE_AGGREGATE: &str = "payee";

/// Who a payee is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Profile {
    pub name: String,
    pub asset: Asset,
    pub role_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A plan assigned from a date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Assignment {
    pub plan_id: String,
    pub from: DateTime<Utc>,
    pub assigned_at: DateTime<Utc>,
}

/// A pay run's share of the payee: what it claimed and, once paid, what
/// it paid and carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunShare {
    pub lines: Vec<LineId>,
    pub gross: i64,
    /// The negative balance the run took over from earlier runs (<= 0).
    pub carried_in: i64,
    pub paid: Option<Amount>,
    /// What the run left to recover from later ones (<= 0).
    pub carried_out: i64,
}

impl RunShare {
    /// Gross plus what was carried in.
    pub fn net(&self) -> Result<i64, AmountError> {
        self.gross
            .checked_add(self.carried_in)
            .ok_or(AmountError::Overflow)
    }
}

/// A payee's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payee {
    pub profile: Option<Profile>,
    pub assignments: Vec<Assignment>,
    pub lines: Vec<Line>,
    /// The negative balance left by paid runs, in no run yet (<= 0).
    pub carried: i64,
    pub runs: BTreeMap<PayRunId, RunShare>,
    /// Commission accrued (payable) per cap period.
    pub cap_used: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayeeEvent {
    PayeeCreated {
        name: String,
        asset: Asset,
        role_id: Option<String>,
        at: DateTime<Utc>,
    },
    PlanAssigned {
        plan_id: String,
        from: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    LineAccrued(Box<Line>),
    LinePayable {
        line_id: LineId,
        at: DateTime<Utc>,
    },
    LinesClaimed {
        run_id: PayRunId,
        lines: Vec<LineId>,
        gross: i64,
        carried_in: i64,
        at: DateTime<Utc>,
    },
    LinesReleased {
        run_id: PayRunId,
        at: DateTime<Utc>,
    },
    RunPaid {
        run_id: PayRunId,
        paid: Amount,
        carried_out: i64,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for PayeeEvent {
    fn event_type(&self) -> String {
        match self {
            Self::PayeeCreated { .. } => "PayeeCreated",
            Self::PlanAssigned { .. } => "PlanAssigned",
            Self::LineAccrued(_) => "LineAccrued",
            Self::LinePayable { .. } => "LinePayable",
            Self::LinesClaimed { .. } => "LinesClaimed",
            Self::LinesReleased { .. } => "LinesReleased",
            Self::RunPaid { .. } => "RunPaid",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Payee {
    /// The assignment in effect at `at`: the one from the latest date on
    /// or before it (of two from one date, the later made).
    pub fn assignment_at(&self, at: DateTime<Utc>) -> Option<&Assignment> {
        self.assignments
            .iter()
            .filter(|assignment| assignment.from <= at)
            .fold(None, |best: Option<&Assignment>, assignment| match best {
                Some(best) if best.from > assignment.from => Some(best),
                _ => Some(assignment),
            })
    }

    /// The runs not yet paid that hold a share of the payee's, with it.
    pub fn unpaid_runs(&self) -> impl Iterator<Item = (&PayRunId, &RunShare)> {
        self.runs.iter().filter(|(_, share)| share.paid.is_none())
    }

    /// The payable lines in no run accrued by `cutoff`: what a run claims.
    pub fn payable_by(&self, cutoff: DateTime<Utc>) -> impl Iterator<Item = &Line> {
        self.lines
            .iter()
            .filter(move |line| line.status == LineStatus::Accrued && line.accrued_at <= cutoff)
    }

    /// The negative balance not yet recovered (<= 0): what paid runs
    /// carried forward, and what runs not yet paid took in (until they are
    /// paid, no run has recovered it).
    pub fn unrecovered(&self) -> Result<i64, AmountError> {
        self.unpaid_runs()
            .try_fold(self.carried, |sum, (_, share)| {
                sum.checked_add(share.carried_in)
            })
            .ok_or(AmountError::Overflow)
    }

    pub fn line(&self, line_id: LineId) -> Option<&Line> {
        self.lines.iter().find(|line| line.line_id == line_id)
    }

    /// Whether a line accrued from `source` (a capture, a refund, a work
    /// reference): each accrues once.
    pub fn has_line_from(&self, source: &str) -> bool {
        self.lines
            .iter()
            .any(|line| line.source.as_deref() == Some(source))
    }

    fn line_mut(&mut self, line_id: LineId) -> Option<&mut Line> {
        self.lines.iter_mut().find(|line| line.line_id == line_id)
    }

    /// The sum of the amounts of the lines `keep` selects.
    pub fn sum(&self, keep: impl Fn(&Line) -> bool) -> Result<i64, AmountError> {
        self.lines
            .iter()
            .filter(|line| keep(line))
            .try_fold(0i64, |sum, line| {
                sum.checked_add(line.amount).ok_or(AmountError::Overflow)
            })
    }

    /// Payable lines in no run: what the next run would claim.
    pub fn unpaid_payable(&self) -> Result<i64, AmountError> {
        self.sum(|line| line.status == LineStatus::Accrued)
    }

    /// The cap period `line` counts in, when it records no `cap_shares`
    /// (every line before rules 3): a commission's own month; a
    /// clawback's (and its reversal's) the month of the first commission it
    /// claws from, so what is clawed back frees room under the cap.
    fn cap_period_of(&self, line: &Line) -> Option<String> {
        use super::ledger::{cap_period, LineKind};
        if line.status == LineStatus::Refused {
            return None;
        }
        match line.kind {
            LineKind::Commission => Some(cap_period(line.accrued_at)),
            LineKind::Clawback => self
                .counted_in(line)
                .map(|commission| cap_period(commission.accrued_at)),
            _ => None,
        }
    }

    /// The commission a clawback `line` without `cap_shares` (or its
    /// reversal) counts in under the cap: the first it claws from.
    pub(super) fn counted_in(&self, line: &Line) -> Option<&Line> {
        self.lines.iter().find(|commission| {
            commission.kind == super::ledger::LineKind::Commission
                && commission.source.as_ref() == line.clawed_from.first()
        })
    }

    /// What the cap `cap` leaves of the month of `at`: the cap less what
    /// the month has accrued, never below nothing and, for a month clawed
    /// back below nothing, never more than the cap itself.
    pub(super) fn cap_room(&self, cap: Amount, at: DateTime<Utc>) -> i64 {
        self.cap_room_in(cap, &super::ledger::cap_period(at))
    }

    /// What the cap `cap` leaves of month `period` (`YYYY-MM`).
    pub(super) fn cap_room_in(&self, cap: Amount, period: &str) -> i64 {
        let used = self.cap_used.get(period).copied().unwrap_or(0);
        cap.value().saturating_sub(used.max(0)).max(0)
    }

    fn set_status(&mut self, lines: &[LineId], status: LineStatus, run: Option<PayRunId>) {
        for line_id in lines {
            if let Some(line) = self.line_mut(*line_id) {
                line.status = status;
                line.run = run;
            }
        }
    }
}

impl Aggregate for Payee {
    const TYPE: &'static str = PAYEE_AGGREGATE;
    type Command = PayeeCommand;
    type Event = PayeeEvent;
    type Error = super::CompensationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PayeeCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), super::CompensationError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: PayeeEvent) {
        // Amounts were checked when the event was decided; a stored event
        // that overflows leaves the sum as it was.
        let add = |to: &mut i64, amount: i64| *to = to.checked_add(amount).unwrap_or(*to);
        match event {
            PayeeEvent::PayeeCreated {
                name,
                asset,
                role_id,
                at,
            } => {
                self.profile = Some(Profile {
                    name,
                    asset,
                    role_id,
                    created_at: at,
                })
            }
            PayeeEvent::PlanAssigned { plan_id, from, at } => self.assignments.push(Assignment {
                plan_id,
                from,
                assigned_at: at,
            }),
            PayeeEvent::LineAccrued(line) => {
                if line.cap_shares.is_empty() {
                    if let Some(period) = self.cap_period_of(&line) {
                        add(self.cap_used.entry(period).or_default(), line.amount);
                    }
                } else if line.status != LineStatus::Refused {
                    for share in &line.cap_shares {
                        let used = self.cap_used.entry(share.period.clone()).or_default();
                        add(used, share.amount);
                    }
                }
                self.lines.push(*line);
            }
            PayeeEvent::LinePayable { line_id, .. } => {
                if let Some(line) = self.line_mut(line_id) {
                    line.status = LineStatus::Accrued;
                }
            }
            PayeeEvent::LinesClaimed {
                run_id,
                lines,
                gross,
                carried_in,
                ..
            } => {
                self.set_status(&lines, LineStatus::InRun, Some(run_id));
                add(&mut self.carried, -carried_in);
                self.runs.insert(
                    run_id,
                    RunShare {
                        lines,
                        gross,
                        carried_in,
                        paid: None,
                        carried_out: 0,
                    },
                );
            }
            PayeeEvent::LinesReleased { run_id, .. } => {
                if let Some(share) = self.runs.remove(&run_id) {
                    self.set_status(&share.lines, LineStatus::Accrued, None);
                    add(&mut self.carried, share.carried_in);
                }
            }
            PayeeEvent::RunPaid {
                run_id,
                paid,
                carried_out,
                ..
            } => {
                let lines = match self.runs.get_mut(&run_id) {
                    Some(share) => {
                        share.paid = Some(paid);
                        share.carried_out = carried_out;
                        share.lines.clone()
                    }
                    None => Vec::new(),
                };
                self.set_status(&lines, LineStatus::Paid, Some(run_id));
                add(&mut self.carried, carried_out);
            }
        }
    }
}
