//! Corrections: adjustments that name the line they correct. Since rules
//! version 6 a correction is bounded by what is left of its line, a
//! commission's corrections count in its month's cap, and what clawbacks
//! and their reversals count of a line is the line as corrected.

use super::ledger::{cap_period, CapShare, Line, LineKind, LineStatus};
use super::payee::Payee;
use super::CompensationError;
use crate::ids::LineId;
use crate::money::AmountError;
use crate::rules::Rules;
use std::collections::HashMap;

/// What each line counts for in one decision: its amount, and since rules
/// 6 the corrections of it (summed once per decision).
pub(super) struct Corrections {
    /// By root line: the sum of the adjustments that correct it, directly
    /// or by correcting one of its corrections.
    sums: HashMap<LineId, i64>,
}

impl Corrections {
    /// What `line` counts for: its amount and its corrections.
    pub(super) fn of(&self, line: &Line) -> Result<i64, AmountError> {
        let corrections = self.sums.get(&line.line_id).copied().unwrap_or(0);
        line.amount
            .checked_add(corrections)
            .ok_or(AmountError::Overflow)
    }
}

impl Payee {
    /// The corrections a decision under `rules` counts: none before version
    /// 6 (each line counts for its own amount).
    pub(super) fn corrections(&self, rules: Rules) -> Result<Corrections, AmountError> {
        let mut sums: HashMap<LineId, i64> = HashMap::new();
        if !rules.since(Rules::SIXTH) {
            return Ok(Corrections { sums });
        }
        let index: HashMap<LineId, &Line> =
            self.lines.iter().map(|line| (line.line_id, line)).collect();
        for line in &self.lines {
            if line.kind != LineKind::Adjustment || line.corrects.is_none() {
                continue;
            }
            let sum = sums.entry(root_of(&index, line.line_id)).or_default();
            *sum = sum.checked_add(line.amount).ok_or(AmountError::Overflow)?;
        }
        Ok(Corrections { sums })
    }

    /// Checks a correction of `amount` to `line` under rules 6, and gives
    /// the cap shares it records. A clawback (or its reversal) is corrected
    /// by its reversal or by correcting its commission, and a refused line
    /// has nothing to correct: `line_not_correctable`. Otherwise what is
    /// left of the line it comes down to (its root: the line a chain of
    /// corrections corrects) stays on the line's side of nothing: the
    /// line as corrected, and for a commission also what is left of it to
    /// claw back (a commission clawed back whole is corrected down no
    /// further), else `correction_exceeds_line`. A commission's correction
    /// counts in the cap of the commission's month, as the commission did.
    pub(super) fn corrected_by(
        &self,
        line: &Line,
        amount: i64,
    ) -> Result<Vec<CapShare>, CompensationError> {
        let index: HashMap<LineId, &Line> =
            self.lines.iter().map(|line| (line.line_id, line)).collect();
        let root = index
            .get(&root_of(&index, line.line_id))
            .copied()
            .unwrap_or(line);
        for line in [line, root] {
            if line.kind == LineKind::Clawback || line.status == LineStatus::Refused {
                return Err(CompensationError::NotCorrectable {
                    line_id: line.line_id,
                });
            }
        }
        let corrections = self.corrections(Rules::SIXTH)?;
        let mut left = corrections.of(root)?;
        if root.kind == LineKind::Commission {
            if let Some(source) = &root.source {
                left = left.min(self.left_to_claw(std::slice::from_ref(source), &corrections)?);
            }
        }
        let after = left.checked_add(amount).ok_or(AmountError::Overflow)?;
        let past = if root.amount >= 0 {
            after < 0
        } else {
            after > 0
        };
        if past {
            return Err(CompensationError::CorrectionExceedsLine {
                line_id: root.line_id,
                left,
            });
        }
        Ok(match root.kind {
            LineKind::Commission => vec![CapShare {
                period: cap_period(root.accrued_at),
                amount,
            }],
            _ => Vec::new(),
        })
    }
}

/// The line a correction chain ends at: `line_id` itself, unless it is an
/// adjustment correcting another line, then that line's root. A decided
/// adjustment names an earlier line, so the chain ends; a stored history
/// that loops is followed no further than it has lines.
fn root_of(index: &HashMap<LineId, &Line>, line_id: LineId) -> LineId {
    let mut at = line_id;
    for _ in 0..index.len() {
        match index
            .get(&at)
            .filter(|line| line.kind == LineKind::Adjustment)
            .and_then(|line| line.corrects)
        {
            Some(next) => at = next,
            None => break,
        }
    }
    at
}
