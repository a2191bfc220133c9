//! Corrections: adjustments that name the line they correct. Since rules
//! version 6 a line's corrections are bounded by it, and what clawbacks
//! and their reversals count of a line is the line as corrected.

use super::ledger::{Line, LineKind};
use super::payee::Payee;
use super::CompensationError;
use crate::ids::LineId;
use crate::money::AmountError;
use crate::rules::Rules;

impl Payee {
    /// The line a correction chain ends at: `line_id` itself, unless it is
    /// an adjustment correcting another line, then that line's root. An
    /// adjustment names an earlier line, so the chain ends.
    fn root_of(&self, line_id: LineId) -> LineId {
        let mut at = line_id;
        while let Some(next) = self
            .line(at)
            .filter(|line| line.kind == LineKind::Adjustment)
            .and_then(|line| line.corrects)
        {
            at = next;
        }
        at
    }

    /// `line` as corrected: its amount and every adjustment that corrects
    /// it, directly or by correcting one of its corrections.
    pub(super) fn corrected(&self, line: &Line) -> Result<i64, AmountError> {
        self.lines
            .iter()
            .filter(|other| {
                other.kind == LineKind::Adjustment
                    && other.corrects.is_some()
                    && self.root_of(other.line_id) == line.line_id
            })
            .try_fold(line.amount, |sum, other| {
                sum.checked_add(other.amount).ok_or(AmountError::Overflow)
            })
    }

    /// What `line` counts for in a clawback or its reversal decided under
    /// `rules`: as corrected since version 6, its own amount before.
    pub(super) fn counted(&self, line: &Line, rules: Rules) -> Result<i64, AmountError> {
        if rules.since(Rules::SIXTH) {
            self.corrected(line)
        } else {
            Ok(line.amount)
        }
    }

    /// Refuses a correction of `amount` to `line` (or to a correction of
    /// it) that would take the line as corrected past nothing: a line of
    /// zero or more stays at zero or more, a negative one at zero or less.
    pub(super) fn within_its_line(
        &self,
        line: &Line,
        amount: i64,
    ) -> Result<(), CompensationError> {
        let root = self.line(self.root_of(line.line_id)).unwrap_or(line);
        let corrected = self.corrected(root)?;
        let after = corrected.checked_add(amount).ok_or(AmountError::Overflow)?;
        let past = if root.amount >= 0 {
            after < 0
        } else {
            after > 0
        };
        if past {
            return Err(CompensationError::CorrectionExceedsLine {
                line_id: root.line_id,
                corrected,
            });
        }
        Ok(())
    }
}
