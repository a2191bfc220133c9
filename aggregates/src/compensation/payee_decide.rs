//! How a payee decides: work valued by the plan version in effect,
//! commissions and their clawbacks (refused ones recorded as lines),
//! adjustments, holding periods, and pay runs claiming, releasing and
//! paying the payable lines.

use super::corrections::Corrections;
use super::ledger::{cap_period, CapShare, Line, LineKind, LineStatus, Work, QUANTITY_MAX};
use super::payee::{Payee, PayeeEvent};
use super::rules::{basis_points_of, div_half_even, hourly_amount, PlanInEffect};
use super::CompensationError;
use crate::decide::Decide;
use crate::ids::{LineId, PayRunId};
use crate::journal::split::split_by_weights;
use crate::money::{Amount, AmountError, Asset};
use crate::rules::Rules;
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;

type Decided = Result<Vec<PayeeEvent>, CompensationError>;

#[derive(Debug, Clone, PartialEq)]
pub enum PayeeCommand {
    Create {
        name: String,
        asset: Asset,
        role_id: Option<String>,
        at: DateTime<Utc>,
    },
    Assign {
        plan_id: String,
        from: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// Values `work` by `plan`, the version in effect at `worked_at` of the
    /// plan assigned then (`None`: that plan has no version then).
    RecordWork {
        line_id: LineId,
        work: Work,
        worked_at: DateTime<Utc>,
        reference: Option<String>,
        plan: Option<PlanInEffect>,
        /// Since version 3, work dated after it is recorded is refused.
        rules: Rules,
        at: DateTime<Utc>,
    },
    /// A commission on capture `source` of `basis` in `asset`, captured at
    /// `captured_at`, by `plan` (the version in effect then, if any).
    AccrueCommission {
        line_id: LineId,
        payment_id: String,
        source: String,
        basis: Amount,
        asset: Asset,
        plan: Option<PlanInEffect>,
        captured_at: DateTime<Utc>,
        /// The rules it is decided under (the line records its cap since
        /// version 2).
        rules: Rules,
        at: DateTime<Utc>,
    },
    /// Claws back the share of the commission on `captures` (their
    /// sources, `capture:<id>`) that `amount` (refunded or lost of them)
    /// is of what they captured.
    ClawBack {
        line_id: LineId,
        payment_id: String,
        source: String,
        captures: Vec<String>,
        amount: Amount,
        /// Since version 3, the clawback records its part of each month's
        /// cap by the commissions it claws from.
        rules: Rules,
        at: DateTime<Utc>,
    },
    /// Gives back clawback `clawback_source` (its refund failed): a line
    /// of the opposite amount, `source`.
    ReverseClawBack {
        line_id: LineId,
        clawback_source: String,
        source: String,
        /// The rules it is decided under (the cap bounds what is given back
        /// since version 2).
        rules: Rules,
        at: DateTime<Utc>,
    },
    Adjust {
        line_id: LineId,
        amount: i64,
        reason: Option<String>,
        corrects: Option<LineId>,
        /// Since version 6 a correction is bounded by the line it corrects.
        rules: Rules,
        at: DateTime<Utc>,
    },
    /// A held line's holding period is over (the scheduler's).
    MakePayable {
        line_id: LineId,
        at: DateTime<Utc>,
    },
    /// Pay run `run_id` claims every payable line accrued by `cutoff`.
    Claim {
        run_id: PayRunId,
        cutoff: DateTime<Utc>,
        /// The rules it is decided under (since 10 nothing is claimed
        /// while another run holds a share of the payee's not yet paid).
        rules: Rules,
        at: DateTime<Utc>,
    },
    Release {
        run_id: PayRunId,
        at: DateTime<Utc>,
    },
    Pay {
        run_id: PayRunId,
        at: DateTime<Utc>,
    },
}

fn add(left: i64, right: i64) -> Result<i64, AmountError> {
    left.checked_add(right).ok_or(AmountError::Overflow)
}

impl Payee {
    fn existing(&self) -> Result<&super::payee::Profile, CompensationError> {
        self.profile.as_ref().ok_or(CompensationError::UnknownPayee)
    }

    fn fresh_line(&self, line_id: LineId) -> Result<(), CompensationError> {
        self.existing()?;
        match self.line(line_id) {
            Some(_) => Err(CompensationError::LineTaken(line_id)),
            None => Ok(()),
        }
    }

    fn sourced(&self, source: &str) -> Result<(), CompensationError> {
        if self.has_line_from(source) {
            return Err(CompensationError::AccruedAlready {
                origin: source.to_string(),
            });
        }
        Ok(())
    }

    /// The plan version a line of `worked_at` is valued by.
    fn plan_at<'a>(
        &self,
        plan: Option<&'a PlanInEffect>,
        worked_at: DateTime<Utc>,
    ) -> Result<&'a PlanInEffect, CompensationError> {
        let assignment = self
            .assignment_at(worked_at)
            .ok_or(CompensationError::NoAssignment { at: worked_at })?;
        plan.ok_or_else(|| CompensationError::NoVersion {
            plan_id: assignment.plan_id.clone(),
            at: worked_at,
        })
    }

    fn record_work(
        &self,
        line_id: LineId,
        (work, worked_at, reference): (Work, DateTime<Utc>, Option<String>),
        plan: Option<PlanInEffect>,
        (at, rules): (DateTime<Utc>, Rules),
    ) -> Decided {
        self.fresh_line(line_id)?;
        let profile = self.existing()?;
        // Since rules 5 a work reference accrues once for the payee (the
        // same shift sent under two idempotency keys is a double booking),
        // as a commission's source does.
        if let (Some(reference), true) = (&reference, rules.since(Rules::FIFTH)) {
            self.sourced(reference)?;
        }
        // Work accrues payable as it is recorded: recorded before it is
        // done, a pay run could pay it first. Compared in microseconds,
        // what the ledger keeps of a time.
        if rules.since(Rules::THIRD) && worked_at.timestamp_micros() > at.timestamp_micros() {
            return Err(CompensationError::WorkInFuture { worked_at });
        }
        let plan = self.plan_at(plan.as_ref(), worked_at)?;
        if plan.asset != profile.asset {
            return Err(CompensationError::CurrencyMismatch {
                plan: plan.asset.code().to_string(),
                payee: profile.asset.code().to_string(),
            });
        }
        let (kind, amount) = match &work {
            Work::Time { minutes } | Work::Units { count: minutes, .. }
                if *minutes == 0 || *minutes > QUANTITY_MAX =>
            {
                return Err(CompensationError::InvalidQuantity)
            }
            Work::Time { minutes } => {
                let rate = plan.hourly().ok_or(CompensationError::NoRule {
                    rule: "hourly".into(),
                })?;
                (LineKind::Time, hourly_amount(rate, *minutes)?)
            }
            Work::Units { unit, count } => {
                let each = plan.per_unit(unit).ok_or(CompensationError::NoRule {
                    rule: format!("per_unit {unit}"),
                })?;
                let amount = each
                    .value()
                    .checked_mul(i64::from(*count))
                    .ok_or(AmountError::Overflow)?;
                (LineKind::Units, Amount::new(amount)?)
            }
        };
        let mut line = Line::new(line_id, kind, amount.value(), worked_at, at).valued_by(plan);
        line.source = reference;
        line.work = Some(work);
        line.payable_at = Some(worked_at);
        Ok(vec![PayeeEvent::LineAccrued(Box::new(line))])
    }

    #[allow(clippy::too_many_arguments)]
    fn accrue_commission(
        &self,
        line_id: LineId,
        payment_id: String,
        source: String,
        basis: Amount,
        asset: Asset,
        plan: Option<PlanInEffect>,
        captured_at: DateTime<Utc>,
        (at, rules): (DateTime<Utc>, Rules),
    ) -> Decided {
        self.fresh_line(line_id)?;
        self.sourced(&source)?;
        let profile = self.existing()?;
        let mut line = Line::new(line_id, LineKind::Commission, 0, captured_at, at);
        line.source = Some(source);
        line.payment_id = Some(payment_id);
        line.basis = Some(basis);
        let refused = |mut line: Line, error: CompensationError| {
            line.status = LineStatus::Refused;
            line.reason = Some(format!(
                "{}: {error}",
                crate::decide::Rejection::code(&error)
            ));
            Ok(vec![PayeeEvent::LineAccrued(Box::new(line))])
        };
        if asset != profile.asset {
            let error = CompensationError::SaleCurrency {
                sale: asset.code().to_string(),
                payee: profile.asset.code().to_string(),
            };
            return refused(line, error);
        }
        let plan = match self.plan_at(plan.as_ref(), captured_at) {
            Ok(plan) => plan,
            Err(error) => return refused(line, error),
        };
        line = line.valued_by(plan);
        let Some((basis_points, cap, holding_days)) = plan.commission() else {
            let error = CompensationError::NoRule {
                rule: "commission".into(),
            };
            return refused(line, error);
        };
        let earned = basis_points_of(basis, basis_points)?.value();
        let payable = match cap {
            Some(cap) => earned.min(self.cap_room(cap, captured_at)),
            None => earned,
        };
        line.amount = payable;
        line.capped = Amount::new(earned - payable)?;
        line.cap = cap.filter(|_| rules.since(Rules::SECOND));
        let payable_at = captured_at
            .checked_add_signed(Duration::days(i64::from(holding_days)))
            .ok_or(AmountError::Overflow)?;
        line.payable_at = Some(payable_at);
        if holding_days > 0 {
            line.status = LineStatus::Held;
        }
        Ok(vec![PayeeEvent::LineAccrued(Box::new(line))])
    }

    /// The commission lines of `captures` (refused ones included: their
    /// captures count in the basis with nothing accrued).
    pub(super) fn commissions_of<'a>(
        &'a self,
        captures: &'a [String],
    ) -> impl Iterator<Item = &'a Line> {
        self.lines.iter().filter(move |line| {
            line.kind == LineKind::Commission
                && line
                    .source
                    .as_ref()
                    .is_some_and(|source| captures.contains(source))
        })
    }

    /// The clawbacks and reversals that moved money (not refused).
    pub(super) fn standing_clawbacks(&self) -> impl Iterator<Item = &Line> {
        self.lines
            .iter()
            .filter(|line| line.kind == LineKind::Clawback && line.status != LineStatus::Refused)
    }

    /// What was refunded or lost of `captures` so far and what was clawed
    /// back for it: the net amount taken (reversals given back) and the
    /// net clawed (<= 0). Since rules 5 a refund whose share rounded to
    /// nothing (a refused clawback) counts in what was taken too, and its
    /// failure (a refused reversal) takes it off again: ten refunds of 5
    /// on a capture of 50 add up to the whole. Before, each was forgotten.
    fn clawed_of(
        &self,
        captures: &[String],
        (rules, corrections): (Rules, &Corrections),
    ) -> Result<(i64, i64), AmountError> {
        let counted = |line: &&Line| {
            line.kind == LineKind::Clawback
                && (line.status != LineStatus::Refused
                    || (rules.since(Rules::FIFTH) && !self.failed_unlinked(line)))
                && line.clawed_from.as_slice() == captures
        };
        let mut taken = 0i64;
        let mut clawed = 0i64;
        for line in self.lines.iter().filter(counted) {
            let basis = line.basis.map_or(0, Amount::value);
            let reversal = if rules.since(Rules::FIFTH) {
                line.corrects.is_some()
            } else {
                line.amount >= 0
            };
            taken = add(taken, if reversal { -basis } else { basis })?;
            clawed = add(clawed, corrections.of(line)?)?;
        }
        Ok((taken, clawed))
    }

    /// Whether refused clawback `line` failed under rules before version 5,
    /// whose reversal, finding no clawback, was recorded refused without
    /// naming it (only its reason says which): what it took off the
    /// refunded total was never counted, nor is its failure.
    fn failed_unlinked(&self, line: &Line) -> bool {
        let Some(source) = line.source.as_deref() else {
            return false;
        };
        let reason = nothing_clawed_back(source);
        line.corrects.is_none()
            && self.lines.iter().any(|other| {
                other.kind == LineKind::Clawback
                    && other.status == LineStatus::Refused
                    && other.corrects.is_none()
                    && other.reason.as_deref() == Some(reason.as_str())
            })
    }

    /// What is left to claw back of `captures` and of every capture a
    /// clawback shares with them (followed from clawback to clawback): what
    /// their commissions accrued, less every clawback of any of them (a
    /// reversal gives its clawback back); each line as corrected since
    /// rules 6.
    pub(super) fn left_to_claw(
        &self,
        captures: &[String],
        corrections: &Corrections,
    ) -> Result<i64, AmountError> {
        let clawbacks: Vec<&Line> = self.standing_clawbacks().collect();
        let mut linked: std::collections::BTreeSet<&str> =
            captures.iter().map(String::as_str).collect();
        loop {
            let before = linked.len();
            for line in &clawbacks {
                if line.clawed_from.iter().any(|c| linked.contains(c.as_str())) {
                    linked.extend(line.clawed_from.iter().map(String::as_str));
                }
            }
            if linked.len() == before {
                break;
            }
        }
        let mut left = 0i64;
        for line in self.lines.iter().filter(|line| {
            line.kind == LineKind::Commission
                && line
                    .source
                    .as_deref()
                    .is_some_and(|source| linked.contains(source))
        }) {
            left = add(left, corrections.of(line)?)?;
        }
        for line in clawbacks {
            if line.clawed_from.iter().any(|c| linked.contains(c.as_str())) {
                left = add(left, corrections.of(line)?)?;
            }
        }
        Ok(left)
    }

    /// When what `captures` earned becomes payable, if any of it is still
    /// held: a clawback of it is held as long.
    fn held_until(&self, captures: &[String]) -> Option<DateTime<Utc>> {
        self.commissions_of(captures)
            .filter(|line| line.status == LineStatus::Held)
            .filter_map(|line| line.payable_at)
            .max()
    }

    fn claw_back(
        &self,
        line_id: LineId,
        (payment_id, source): (String, String),
        mut captures: Vec<String>,
        amount: Amount,
        (at, rules): (DateTime<Utc>, Rules),
    ) -> Decided {
        self.fresh_line(line_id)?;
        self.sourced(&source)?;
        captures.sort();
        captures.dedup();
        let corrections = self.corrections(rules)?;
        let (mut basis, mut accrued) = (0i64, 0i64);
        for line in self.commissions_of(&captures) {
            basis = add(basis, line.basis.map_or(0, Amount::value))?;
            accrued = add(accrued, corrections.of(line)?)?;
        }
        let (taken, clawed) = self.clawed_of(&captures, (rules, &corrections))?;
        let mut line = Line::new(line_id, LineKind::Clawback, 0, at, at);
        line.source = Some(source);
        line.payment_id = Some(payment_id);
        line.basis = Some(amount);
        line.payable_at = Some(at);
        // The share of everything taken so far, rounded once, less what was
        // clawed back already: partial refunds add up to the whole.
        let share = if basis > 0 && accrued > 0 {
            let taken = add(taken, amount.value())?.min(basis);
            div_half_even(i128::from(accrued) * i128::from(taken), i128::from(basis))?
        } else {
            0
        };
        // Never more than is left of what was accrued on every capture a
        // clawback of these captures shares (a refund names all of a
        // tender's captures, a dispute one: each sees the other here).
        let due = add(share, clawed)?.min(self.left_to_claw(&captures, &corrections)?);
        if due <= 0 {
            line.status = LineStatus::Refused;
            line.reason = Some("no_commission: nothing of the capture is left to claw back".into());
            line.clawed_from = captures;
            return Ok(vec![PayeeEvent::LineAccrued(Box::new(line))]);
        }
        line.amount = -due;
        if let Some(payable_at) = self.held_until(&captures) {
            line.status = LineStatus::Held;
            line.payable_at = Some(payable_at);
        }
        if rules.since(Rules::THIRD) {
            line.cap_shares = self.cap_shares_of(&captures, due, &corrections)?;
        }
        line.clawed_from = captures;
        Ok(vec![PayeeEvent::LineAccrued(Box::new(line))])
    }

    /// What a clawback of `due` frees of each month's cap: split over the
    /// months of the commissions of `captures` in proportion to what is
    /// left of each month's commissions (what they accrued, less what
    /// earlier clawbacks sharing a capture with these freed there, and
    /// plus what their reversals gave back; by what they accrued when
    /// nothing is left by that count), in exact minor units by the
    /// journal's largest-remainder split.
    fn cap_shares_of(
        &self,
        captures: &[String],
        due: i64,
        corrections: &Corrections,
    ) -> Result<Vec<CapShare>, AmountError> {
        let mut accrued: BTreeMap<String, i64> = BTreeMap::new();
        for line in self.commissions_of(captures) {
            let month = accrued.entry(cap_period(line.accrued_at)).or_default();
            *month = add(*month, corrections.in_cap(line)?.max(0))?;
        }
        let mut left: BTreeMap<&str, i128> = accrued
            .iter()
            .map(|(period, amount)| (period.as_str(), i128::from(*amount)))
            .collect();
        let earlier = self.standing_clawbacks().filter(|line| {
            line.clawed_from
                .iter()
                .any(|capture| captures.contains(capture))
        });
        for share in earlier.flat_map(|line| &line.cap_shares) {
            if let Some(month) = left.get_mut(share.period.as_str()) {
                *month += i128::from(share.amount);
            }
        }
        // Each month's weight is at most what it accrued: it fits 64 bits.
        let mut weights: Vec<u64> = left
            .values()
            .map(|amount| u64::try_from((*amount).max(0)).unwrap_or(u64::MAX))
            .collect();
        if weights.iter().all(|weight| *weight == 0) {
            weights = accrued
                .values()
                .map(|amount| u64::try_from(*amount).unwrap_or(0))
                .collect();
        }
        let Ok(parts) = split_by_weights(Amount::new(due)?, &weights) else {
            // No commission with anything accrued: no month to free.
            return Ok(Vec::new());
        };
        Ok(accrued
            .into_keys()
            .zip(parts)
            .filter(|(_, part)| !part.is_zero())
            .map(|(period, part)| CapShare {
                period,
                amount: -part.value(),
            })
            .collect())
    }

    fn reverse_claw_back(
        &self,
        line_id: LineId,
        clawback_source: &str,
        source: String,
        (at, rules): (DateTime<Utc>, Rules),
    ) -> Decided {
        self.fresh_line(line_id)?;
        self.sourced(&source)?;
        // Since rules 5 a refused clawback (a share that rounded to
        // nothing) is reversed too, giving back nothing: what it took off
        // the captures' refunded total is taken off again.
        let clawback = self.lines.iter().find(|line| {
            let eligible = if rules.since(Rules::FIFTH) {
                line.corrects.is_none()
            } else {
                line.status != LineStatus::Refused
            };
            line.kind == LineKind::Clawback
                && eligible
                && line.source.as_deref() == Some(clawback_source)
        });
        let corrections = self.corrections(rules)?;
        let mut line = Line::new(line_id, LineKind::Clawback, 0, at, at);
        line.source = Some(source);
        line.payable_at = Some(at);
        // What gives nothing back: a refused clawback, and since rules 6
        // one corrected to nothing.
        let nothing = match clawback {
            Some(clawback) if clawback.status == LineStatus::Refused => {
                Some("nothing was clawed back for it")
            }
            Some(clawback) if corrections.counted() && corrections.of(clawback)? >= 0 => {
                Some("its clawback was corrected to nothing")
            }
            _ => None,
        };
        match clawback {
            Some(clawback) if nothing.is_some() => {
                line.status = LineStatus::Refused;
                line.corrects = Some(clawback.line_id);
                line.payment_id = clawback.payment_id.clone();
                line.basis = clawback.basis;
                line.clawed_from = clawback.clawed_from.clone();
                line.reason =
                    nothing.map(|why| format!("no_clawback: {clawback_source} failed, and {why}"));
            }
            Some(clawback) => {
                let given_back = corrections
                    .of(clawback)?
                    .checked_neg()
                    .ok_or(AmountError::Overflow)?;
                // A clawback that recorded its months (under rules 3 or
                // later) is given back by them, whatever the reversal's
                // rules: no older history has such a clawback.
                line.amount = if !clawback.cap_shares.is_empty() {
                    line.cap_shares = self.shares_given_back(clawback, given_back)?;
                    line.cap_shares.iter().map(|share| share.amount).sum()
                } else if rules.since(Rules::SECOND) {
                    self.under_cap(clawback, given_back)
                } else {
                    given_back
                };
                line.capped = Amount::new(given_back - line.amount)?;
                line.corrects = Some(clawback.line_id);
                line.payment_id = clawback.payment_id.clone();
                line.basis = clawback.basis;
                line.clawed_from = clawback.clawed_from.clone();
                line.reason = Some(format!("{clawback_source} failed"));
                if clawback.status == LineStatus::Held {
                    line.status = LineStatus::Held;
                    line.payable_at = clawback.payable_at;
                }
            }
            None => {
                line.status = LineStatus::Refused;
                line.reason = Some(nothing_clawed_back(clawback_source));
            }
        }
        Ok(vec![PayeeEvent::LineAccrued(Box::new(line))])
    }

    /// What of `given_back` (a reversal of `clawback`) the cap leaves room
    /// for in the clawback's period: the cap of the commission whose month
    /// it counts in, less what that month has accrued since (never more
    /// room than the cap). All of it without a cap.
    fn under_cap(&self, clawback: &Line, given_back: i64) -> i64 {
        let commission = self.counted_in(clawback);
        match commission.and_then(|line| Some((line.cap?, line.accrued_at))) {
            Some((cap, accrued_at)) => given_back.min(self.cap_room(cap, accrued_at)),
            None => given_back,
        }
    }

    /// What of each month's share of `clawback` its reversal gives back:
    /// in each month, what the cap of its commissions there leaves room
    /// for (the smallest, when they were valued under different caps; all
    /// of it without a cap). Of a clawback corrected down to `given_back`
    /// (rules 6), that much split over its months as they were shared.
    fn shares_given_back(
        &self,
        clawback: &Line,
        given_back: i64,
    ) -> Result<Vec<CapShare>, AmountError> {
        let whole: Vec<i64> = clawback
            .cap_shares
            .iter()
            .map(|share| share.amount.saturating_neg())
            .collect();
        let sum = whole
            .iter()
            .fold(0i64, |sum, amount| sum.saturating_add(*amount));
        let weights: Vec<u64> = whole.iter().map(|amount| amount.unsigned_abs()).collect();
        let given: Vec<i64> = match split_by_weights(Amount::new(given_back)?, &weights) {
            Ok(parts) if given_back != sum => parts.iter().map(|part| part.value()).collect(),
            // All of it, or shares of nothing to weigh by.
            _ => whole,
        };
        Ok(clawback
            .cap_shares
            .iter()
            .zip(given)
            .filter_map(|(share, given)| {
                let cap = self
                    .commissions_of(&clawback.clawed_from)
                    .filter(|line| cap_period(line.accrued_at) == share.period)
                    .filter_map(|line| line.cap)
                    .min();
                let amount =
                    cap.map_or(given, |cap| given.min(self.cap_room_in(cap, &share.period)));
                (amount != 0).then(|| CapShare {
                    period: share.period.clone(),
                    amount,
                })
            })
            .collect())
    }

    fn adjust(
        &self,
        line_id: LineId,
        (amount, reason, corrects): (i64, Option<String>, Option<LineId>),
        (at, rules): (DateTime<Utc>, Rules),
    ) -> Decided {
        self.fresh_line(line_id)?;
        if amount == 0 {
            return Err(CompensationError::ZeroAdjustment);
        }
        let (mut cap_shares, mut held_until) = (Vec::new(), None);
        if let Some(corrected) = corrects {
            let line = self
                .line(corrected)
                .ok_or(CompensationError::UnknownLine(corrected))?;
            if rules.since(Rules::SIXTH) {
                cap_shares = self.corrected_by(line, amount)?;
            }
            if rules.since(Rules::TENTH) && line.status == LineStatus::Held {
                held_until = line.payable_at;
            }
        }
        let mut line = Line::new(line_id, LineKind::Adjustment, amount, at, at);
        line.cap_shares = cap_shares;
        line.reason = reason;
        line.corrects = corrects;
        line.payable_at = Some(at);
        if let Some(payable_at) = held_until {
            line.status = LineStatus::Held;
            line.payable_at = Some(payable_at);
        }
        Ok(vec![PayeeEvent::LineAccrued(Box::new(line))])
    }

    fn claim(
        &self,
        run_id: PayRunId,
        cutoff: DateTime<Utc>,
        (at, rules): (DateTime<Utc>, Rules),
    ) -> Decided {
        self.existing()?;
        if self.runs.contains_key(&run_id) {
            return Err(CompensationError::Exists);
        }
        // The payee's runs are paid in turn: what an unpaid run carried in,
        // or will carry out, is the next run's to recover.
        if rules.since(Rules::TENTH) && self.unpaid_runs().next().is_some() {
            return Ok(Vec::new());
        }
        let lines: Vec<&Line> = self.payable_by(cutoff).collect();
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let gross = lines
            .iter()
            .try_fold(0i64, |sum, line| add(sum, line.amount))?;
        Ok(vec![PayeeEvent::LinesClaimed {
            run_id,
            lines: lines.iter().map(|line| line.line_id).collect(),
            gross,
            carried_in: self.carried,
            at,
        }])
    }

    fn unpaid_share(&self, run_id: PayRunId) -> Result<&super::payee::RunShare, CompensationError> {
        let share = self
            .runs
            .get(&run_id)
            .ok_or(CompensationError::NotInRun(run_id))?;
        if share.paid.is_some() {
            return Err(CompensationError::PayRunPaid);
        }
        Ok(share)
    }

    fn pay(&self, run_id: PayRunId, at: DateTime<Utc>) -> Decided {
        let net = self.unpaid_share(run_id)?.net()?;
        Ok(vec![PayeeEvent::RunPaid {
            run_id,
            paid: Amount::new(net.max(0))?,
            carried_out: net.min(0),
            at,
        }])
    }
}

impl Decide for Payee {
    fn decide(&self, command: PayeeCommand) -> Decided {
        let events = self.decide_command(command)?;
        for event in &events {
            if let PayeeEvent::LineAccrued(line) = event {
                self.room_for(line)?;
            }
        }
        Ok(events)
    }
}

impl Payee {
    /// Checks that the payee's sums stay within `i64` with `line` added:
    /// the sizes of every line's amount, and the capped amounts, each add
    /// up to at most `i64::MAX`, so no sum of any of them (accrued,
    /// payable, in a run, paid) can overflow; else `amount_overflow`.
    fn room_for(&self, line: &Line) -> Result<(), AmountError> {
        let within = |values: &mut dyn Iterator<Item = i64>| {
            let total: i128 = values.map(|value| i128::from(value).abs()).sum();
            if total > i128::from(i64::MAX) {
                return Err(AmountError::Overflow);
            }
            Ok(())
        };
        let lines = || self.lines.iter().chain(std::iter::once(line));
        within(&mut lines().map(|line| line.amount))?;
        within(&mut lines().map(|line| line.capped.value()))
    }

    fn decide_command(&self, command: PayeeCommand) -> Decided {
        match command {
            PayeeCommand::Create {
                name,
                asset,
                role_id,
                at,
            } => match self.profile {
                Some(_) => Err(CompensationError::Exists),
                None => Ok(vec![PayeeEvent::PayeeCreated {
                    name,
                    asset,
                    role_id,
                    at,
                }]),
            },
            PayeeCommand::Assign { plan_id, from, at } => {
                self.existing()?;
                Ok(vec![PayeeEvent::PlanAssigned { plan_id, from, at }])
            }
            PayeeCommand::RecordWork {
                line_id,
                work,
                worked_at,
                reference,
                plan,
                rules,
                at,
            } => self.record_work(line_id, (work, worked_at, reference), plan, (at, rules)),
            PayeeCommand::AccrueCommission {
                line_id,
                payment_id,
                source,
                basis,
                asset,
                plan,
                captured_at,
                rules,
                at,
            } => self.accrue_commission(
                line_id,
                payment_id,
                source,
                basis,
                asset,
                plan,
                captured_at,
                (at, rules),
            ),
            PayeeCommand::ClawBack {
                line_id,
                payment_id,
                source,
                captures,
                amount,
                rules,
                at,
            } => self.claw_back(line_id, (payment_id, source), captures, amount, (at, rules)),
            PayeeCommand::ReverseClawBack {
                line_id,
                clawback_source,
                source,
                rules,
                at,
            } => self.reverse_claw_back(line_id, &clawback_source, source, (at, rules)),
            PayeeCommand::Adjust {
                line_id,
                amount,
                reason,
                corrects,
                rules,
                at,
            } => self.adjust(line_id, (amount, reason, corrects), (at, rules)),
            PayeeCommand::MakePayable { line_id, at } => {
                let line = self
                    .line(line_id)
                    .ok_or(CompensationError::UnknownLine(line_id))?;
                if line.status != LineStatus::Held {
                    return Err(CompensationError::NotHeld);
                }
                // Never before its holding period is over, whoever asks.
                if let Some(payable_at) = line.payable_at.filter(|payable_at| at < *payable_at) {
                    return Err(CompensationError::StillHeld { payable_at });
                }
                Ok(vec![PayeeEvent::LinePayable { line_id, at }])
            }
            PayeeCommand::Claim {
                run_id,
                cutoff,
                rules,
                at,
            } => self.claim(run_id, cutoff, (at, rules)),
            PayeeCommand::Release { run_id, at } => {
                self.unpaid_share(run_id)?;
                Ok(vec![PayeeEvent::LinesReleased { run_id, at }])
            }
            PayeeCommand::Pay { run_id, at } => self.pay(run_id, at),
        }
    }
}

/// The reason of a reversal that finds no clawback of `clawback_source`:
/// under rules before version 5 the only record of which clawback it
/// failed (see `failed_unlinked`), so one text serves both.
fn nothing_clawed_back(clawback_source: &str) -> String {
    format!("no_clawback: nothing was clawed back for {clawback_source}")
}
