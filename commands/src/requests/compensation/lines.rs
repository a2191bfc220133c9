//! The lines of a payee's ledger: work valued by the plan version in
//! effect when it was done, adjustments, commissions and clawbacks (the
//! process manager's), and a held line becoming payable (the
//! scheduler's). Each accrues once and posts its entry.

use super::commissions::capture_source;
use super::{accrue, line_targets, payee};
use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use aggregates::compensation::{Payee, PayeeCommand, Plan, PlanInEffect, Work};
use aggregates::ids::LineId;
use aggregates::money::{Amount, Asset};
use aggregates::payments::{Capture, DisputeState, IntentTerms, Payment, RefundState};
use aggregates::rules::Rules;
use aggregates::RejectionKind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The version in effect at `at` of the plan assigned to `payee_id` then,
/// checked against `resolved` (the plan the request was resolved with).
fn plan_at(
    decider: &Decider<'_>,
    payee_id: &str,
    resolved: Option<&String>,
    at: DateTime<Utc>,
) -> Result<Option<PlanInEffect>, Refusal> {
    let assigned = payee(decider, payee_id)?
        .assignment_at(at)
        .map(|assignment| &assignment.plan_id);
    if assigned != resolved {
        return Err(Refusal::Stale(format!(
            "payee {payee_id}'s plan at {at} is not the one resolved"
        )));
    }
    match resolved {
        Some(plan_id) => Ok(decider.state::<Plan>(plan_id)?.in_effect(plan_id, at)),
        None => Ok(None),
    }
}

fn plan_target(plan_id: Option<&String>) -> Option<Target> {
    plan_id.cloned().map(Target::of::<Plan>)
}

/// Records work: a line valued by the plan assigned at `worked_at`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordWork {
    pub payee_id: String,
    pub line_id: LineId,
    pub work: Work,
    pub worked_at: DateTime<Utc>,
    pub reference: Option<String>,
    /// Resolved: the payee's currency and the plan assigned at
    /// `worked_at`.
    pub asset: Asset,
    pub plan_id: Option<String>,
}

impl Request for RecordWork {
    const KIND: &'static str = "record_work";

    fn targets(&self) -> Vec<Target> {
        let mut targets = line_targets(&self.payee_id, &self.asset, self.line_id);
        targets.extend(plan_target(self.plan_id.as_ref()));
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let plan = plan_at(
            decider,
            &self.payee_id,
            self.plan_id.as_ref(),
            self.worked_at,
        )?;
        let command = PayeeCommand::RecordWork {
            line_id: self.line_id,
            work: self.work.clone(),
            worked_at: self.worked_at,
            reference: self.reference.clone(),
            plan,
            rules: decider.rules(),
            at: decider.at(),
        };
        accrue(decider, &self.payee_id, &self.asset, command)
    }
}

/// An adjustment line (a correction, paid in a later run).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustLine {
    pub payee_id: String,
    pub line_id: LineId,
    pub amount: i64,
    pub reason: Option<String>,
    pub corrects: Option<LineId>,
    pub asset: Asset,
}

impl Request for AdjustLine {
    const KIND: &'static str = "adjust_line";

    fn targets(&self) -> Vec<Target> {
        line_targets(&self.payee_id, &self.asset, self.line_id)
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let command = PayeeCommand::Adjust {
            line_id: self.line_id,
            amount: self.amount,
            reason: self.reason.clone(),
            corrects: self.corrects,
            rules: decider.rules(),
            at: decider.at(),
        };
        accrue(decider, &self.payee_id, &self.asset, command)
    }
}

/// A commission on an attributed capture (the process manager's): a line
/// held for the rule's holding days, capped per month, or a refused line
/// saying why it could not accrue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccrueCommission {
    pub payee_id: String,
    pub line_id: LineId,
    pub payment_id: String,
    /// `capture:<capture_id>`.
    pub source: String,
    pub basis: Amount,
    /// The capture's currency.
    pub currency: Asset,
    pub captured_at: DateTime<Utc>,
    /// Resolved: the payee's currency and the plan assigned at
    /// `captured_at`.
    pub asset: Asset,
    pub plan_id: Option<String>,
}

/// Refused (`commission_source_mismatch`): a process manager's request
/// naming in payment `payment_id`, for payee `payee_id`, a `source` the
/// payment does not hold so (`held`, what the request says it held).
fn source_mismatch(payment_id: &str, payee_id: &str, source: &str, held: String) -> Refusal {
    Refusal::Rejected {
        kind: RejectionKind::RuleBroken,
        code: "commission_source_mismatch".into(),
        message: format!("payment {payment_id} attributed to {payee_id} has no {source} {held}"),
        details: json!({
            "payment_id": payment_id,
            "payee_id": payee_id,
            "source": source,
        }),
    }
}

/// The terms of `payment` when it is attributed to `payee_id`.
fn attributed<'a>(payment: &'a Payment, payee_id: &str) -> Option<&'a IntentTerms> {
    payment
        .intent
        .as_ref()
        .map(|intent| &intent.terms)
        .filter(|terms| terms.payee.as_deref() == Some(payee_id))
}

impl AccrueCommission {
    /// Refused (`commission_source_mismatch`, since rules 7) unless the
    /// payment it names is attributed to the payee, in the request's
    /// `currency` (the payment's, not the payee's `asset`), and
    /// holds the capture `source` names with `basis` as its amount, captured
    /// at `captured_at`: what the process manager read from the capture,
    /// read again from the payment, so a request not made from a capture
    /// (a defect, a rewritten history) is not taken as one.
    fn made_from_capture(&self, decider: &Decider<'_>) -> Result<(), Refusal> {
        let payment = decider.state::<Payment>(&self.payment_id)?;
        let in_currency =
            attributed(payment, &self.payee_id).is_some_and(|terms| terms.asset == self.currency);
        let capture = self
            .source
            .strip_prefix("capture:")
            .and_then(|id| id.parse().ok())
            .and_then(|capture_id| payment.capture(capture_id));
        match capture {
            Some((_, capture))
                if in_currency
                    && capture.amount == self.basis
                    && capture.at == self.captured_at =>
            {
                Ok(())
            }
            _ => Err(source_mismatch(
                &self.payment_id,
                &self.payee_id,
                &self.source,
                format!("of {} captured at {}", self.basis, self.captured_at),
            )),
        }
    }
}

impl Request for AccrueCommission {
    const KIND: &'static str = "accrue_commission";

    fn targets(&self) -> Vec<Target> {
        let mut targets = line_targets(&self.payee_id, &self.asset, self.line_id);
        targets.extend(plan_target(self.plan_id.as_ref()));
        targets.push(Target::of::<Payment>(self.payment_id.clone()));
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        if decider.rules().since(Rules::SEVENTH) {
            self.made_from_capture(decider)?;
        }
        let plan = plan_at(
            decider,
            &self.payee_id,
            self.plan_id.as_ref(),
            self.captured_at,
        )?;
        let command = PayeeCommand::AccrueCommission {
            line_id: self.line_id,
            payment_id: self.payment_id.clone(),
            source: self.source.clone(),
            basis: self.basis,
            asset: self.currency.clone(),
            plan,
            captured_at: self.captured_at,
            rules: decider.rules(),
            at: decider.at(),
        };
        accrue(decider, &self.payee_id, &self.asset, command)
    }
}

/// Claws back the share of the commission on the captures a refund or a
/// lost dispute (`source`) of `amount` took from (the process manager's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClawBack {
    pub payee_id: String,
    pub line_id: LineId,
    pub payment_id: String,
    /// `refund:<refund_id>` or `dispute:<dispute_id>`.
    pub source: String,
    /// The captures refunded or disputed (`capture:<capture_id>`): the
    /// commission lines whose share is clawed back.
    pub captures: Vec<String>,
    pub amount: Amount,
    pub asset: Asset,
}

impl ClawBack {
    /// Refused (`commission_source_mismatch`, since rules 7) unless the
    /// payment it names is attributed to the payee and holds what `source`
    /// names with `amount`: a lost dispute of the one capture `captures`
    /// names, or a refund whose tenders hold every capture `captures`
    /// names and every one made before the refund (later captures of a
    /// tender it drew from may be named or not: the refund's own time
    /// bounds them), and not a refund that failed and whose failure the
    /// payee's ledger has already given back.
    fn made_from_source(&self, decider: &Decider<'_>) -> Result<(), Refusal> {
        let payment = decider.state::<Payment>(&self.payment_id)?;
        let agrees = attributed(payment, &self.payee_id).is_some()
            && if let Some(id) = self.source.strip_prefix("refund:") {
                self.takes_from_refund(decider, payment, id)
            } else if let Some(id) = self.source.strip_prefix("dispute:") {
                id.parse()
                    .ok()
                    .and_then(|id| payment.dispute(id))
                    .is_some_and(|dispute| {
                        dispute.state == DisputeState::Lost
                            && dispute.amount == self.amount
                            && self.captures == [capture_source(dispute.capture_id)]
                    })
            } else {
                false
            };
        if agrees {
            return Ok(());
        }
        Err(source_mismatch(
            &self.payment_id,
            &self.payee_id,
            &self.source,
            format!("of {} taking from {:?}", self.amount, self.captures),
        ))
    }

    /// Whether refund `id` of `payment` is what the clawback names: its
    /// amount, captures of its tenders (every one made before it), and
    /// not a failure the payee's ledger has given back already (a
    /// clawback then would take again what the refund never paid).
    fn takes_from_refund(&self, decider: &Decider<'_>, payment: &Payment, id: &str) -> bool {
        let Some(refund) = id.parse().ok().and_then(|id| payment.refund(id)) else {
            return false;
        };
        let made: Vec<&Capture> = payment
            .tenders
            .iter()
            .filter(|tender| {
                refund
                    .parts
                    .iter()
                    .any(|part| part.tender_id == tender.tender_id)
            })
            .flat_map(|tender| &tender.captures)
            .collect();
        let given_back = refund.state == RefundState::Failed
            && decider
                .state::<Payee>(&self.payee_id)
                .is_ok_and(|payee| payee.has_line_from(&format!("refund_failed:{id}")));
        refund.amount == self.amount
            && !given_back
            && self.captures.iter().all(|named| {
                made.iter()
                    .any(|capture| *named == capture_source(capture.capture_id))
            })
            && made
                .iter()
                .filter(|capture| capture.at < refund.at)
                .all(|capture| self.captures.contains(&capture_source(capture.capture_id)))
    }
}

impl Request for ClawBack {
    const KIND: &'static str = "claw_back_commission";

    fn targets(&self) -> Vec<Target> {
        let mut targets = line_targets(&self.payee_id, &self.asset, self.line_id);
        targets.push(Target::of::<Payment>(self.payment_id.clone()));
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        if decider.rules().since(Rules::SEVENTH) {
            self.made_from_source(decider)?;
        }
        let command = PayeeCommand::ClawBack {
            line_id: self.line_id,
            payment_id: self.payment_id.clone(),
            source: self.source.clone(),
            captures: self.captures.clone(),
            amount: self.amount,
            rules: decider.rules(),
            at: decider.at(),
        };
        accrue(decider, &self.payee_id, &self.asset, command)
    }
}

/// Gives back a clawback whose refund failed (the process manager's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReverseClawBack {
    pub payee_id: String,
    pub line_id: LineId,
    /// `refund:<refund_id>`: the clawback given back.
    pub clawback_source: String,
    /// `refund_failed:<refund_id>`.
    pub source: String,
    pub asset: Asset,
    /// The payment whose refund failed (named since rules 8; the requests
    /// recorded before name none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
}

impl ReverseClawBack {
    /// Refused (`commission_source_mismatch`, since rules 8) unless it
    /// names its payment, attributed to the payee, and that payment holds
    /// the refund both sources name, failed: a reversal not made from a
    /// failed refund (a defect, a rewritten history) would give back what
    /// a refund that stands took.
    fn made_from_failure(&self, decider: &Decider<'_>) -> Result<(), Refusal> {
        let Some(payment_id) = self.payment_id.as_deref() else {
            return Err(Refusal::Rejected {
                kind: RejectionKind::RuleBroken,
                code: "commission_source_mismatch".into(),
                message: format!(
                    "the reversal of {}'s {} names no payment",
                    self.payee_id, self.clawback_source
                ),
                details: json!({
                    "payment_id": null,
                    "payee_id": self.payee_id,
                    "source": self.source,
                }),
            });
        };
        let payment = decider.state::<Payment>(payment_id)?;
        let refund_id = self
            .source
            .strip_prefix("refund_failed:")
            .filter(|id| self.clawback_source.strip_prefix("refund:") == Some(id))
            .and_then(|id| id.parse().ok());
        let failed = attributed(payment, &self.payee_id).is_some()
            && refund_id
                .and_then(|refund_id| payment.refund(refund_id))
                .is_some_and(|refund| refund.state == RefundState::Failed);
        if failed {
            return Ok(());
        }
        Err(source_mismatch(
            payment_id,
            &self.payee_id,
            &self.source,
            format!("giving back {}", self.clawback_source),
        ))
    }
}

impl Request for ReverseClawBack {
    const KIND: &'static str = "reverse_claw_back";

    fn targets(&self) -> Vec<Target> {
        let mut targets = line_targets(&self.payee_id, &self.asset, self.line_id);
        targets.extend(self.payment_id.clone().map(Target::of::<Payment>));
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        if decider.rules().since(Rules::EIGHTH) {
            self.made_from_failure(decider)?;
        }
        let command = PayeeCommand::ReverseClawBack {
            line_id: self.line_id,
            clawback_source: self.clawback_source.clone(),
            source: self.source.clone(),
            rules: decider.rules(),
            at: decider.at(),
        };
        accrue(decider, &self.payee_id, &self.asset, command)
    }
}

/// A held line's holding period is over: payable from its due time (the
/// scheduler's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MakeLinePayable {
    pub payee_id: String,
    pub line_id: LineId,
    pub due_at: Option<DateTime<Utc>>,
}

impl Request for MakeLinePayable {
    const KIND: &'static str = "make_line_payable";

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<aggregates::compensation::Payee>(
            self.payee_id.clone(),
        )]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at_due(self.due_at)?;
        decider.execute::<aggregates::compensation::Payee>(
            &self.payee_id,
            PayeeCommand::MakePayable {
                line_id: self.line_id,
                at,
            },
        )?;
        let line = payee(decider, &self.payee_id)?
            .line(self.line_id)
            .cloned()
            .ok_or(aggregates::compensation::CompensationError::UnknownLine(
                self.line_id,
            ))?;
        Reply::ok(
            self.payee_id.clone(),
            &super::LineAnswer {
                payee_id: self.payee_id.clone(),
                line,
            },
        )
    }
}
