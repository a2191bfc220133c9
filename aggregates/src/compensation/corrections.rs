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
    /// Whether the decision counts corrections (rules 6 or later).
    counted: bool,
    /// By root line: the sum of the adjustments that correct it, directly
    /// or by correcting one of its corrections.
    sums: HashMap<LineId, i64>,
    /// By root line: what the corrections of it counted in a cap (their
    /// `cap_shares`, recorded under rules 6 or later).
    in_cap: HashMap<LineId, i64>,
}

impl Corrections {
    /// What `line` counts for: its amount and its corrections.
    pub(super) fn of(&self, line: &Line) -> Result<i64, AmountError> {
        Self::with(line, &self.sums)
    }

    /// What `line` counts for in its month's cap: its amount and what the
    /// corrections of it counted there.
    pub(super) fn in_cap(&self, line: &Line) -> Result<i64, AmountError> {
        Self::with(line, &self.in_cap)
    }

    /// Whether the decision counts corrections (rules 6 or later).
    pub(super) fn counted(&self) -> bool {
        self.counted
    }

    fn with(line: &Line, sums: &HashMap<LineId, i64>) -> Result<i64, AmountError> {
        let corrections = sums.get(&line.line_id).copied().unwrap_or(0);
        line.amount
            .checked_add(corrections)
            .ok_or(AmountError::Overflow)
    }
}

impl Payee {
    /// The corrections a decision under `rules` counts: none before version
    /// 6 (each line counts for its own amount).
    pub(super) fn corrections(&self, rules: Rules) -> Result<Corrections, AmountError> {
        if !rules.since(Rules::SIXTH) {
            return Ok(Corrections {
                counted: false,
                sums: HashMap::new(),
                in_cap: HashMap::new(),
            });
        }
        self.corrections_over(&self.index())
    }

    /// The payee's lines by id.
    fn index(&self) -> HashMap<LineId, &Line> {
        self.lines.iter().map(|line| (line.line_id, line)).collect()
    }

    /// Every correction summed by its root line, found through `index`.
    fn corrections_over(&self, index: &HashMap<LineId, &Line>) -> Result<Corrections, AmountError> {
        let mut corrections = Corrections {
            counted: true,
            sums: HashMap::new(),
            in_cap: HashMap::new(),
        };
        let add = |sums: &mut HashMap<LineId, i64>, root, amount: i64| {
            let sum: &mut i64 = sums.entry(root).or_default();
            *sum = sum.checked_add(amount).ok_or(AmountError::Overflow)?;
            Ok::<(), AmountError>(())
        };
        for line in &self.lines {
            if line.kind != LineKind::Adjustment || line.corrects.is_none() {
                continue;
            }
            let root = root_of(index, line.line_id);
            add(&mut corrections.sums, root, line.amount)?;
            for share in &line.cap_shares {
                add(&mut corrections.in_cap, root, share.amount)?;
            }
        }
        Ok(corrections)
    }

    /// Checks a correction of `amount` to `line` under rules 6, and gives
    /// the cap shares it records. A clawback (or its reversal) is corrected
    /// by its reversal or by correcting its commission, and a refused line
    /// has nothing to correct: `line_not_correctable`. Otherwise a
    /// correction toward nothing stops at what is left of the line it comes
    /// down to (its root: the line a chain of corrections corrects): the
    /// line as corrected, and for a commission also what every clawback of
    /// its capture leaves of it ([`Payee::own_left`]) and what its linked
    /// captures have left to claw back, else `correction_exceeds_line`. A
    /// commission's correction counts in the cap of the commission's month,
    /// as the commission did (down, no more than the commission counts for
    /// there).
    pub(super) fn corrected_by(
        &self,
        line: &Line,
        amount: i64,
    ) -> Result<Vec<CapShare>, CompensationError> {
        let index = self.index();
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
        let corrections = self.corrections_over(&index)?;
        let mut left = corrections.of(root)?;
        if root.kind == LineKind::Commission {
            if let Some(source) = &root.source {
                let linked = self.left_to_claw(std::slice::from_ref(source), &corrections)?;
                left = left
                    .min(linked)
                    .min(self.own_left(root, source, &corrections)?);
            }
        }
        // Only a correction toward nothing is bounded: one away from it
        // (a commission corrected up) is not, however little is left.
        let after = left.checked_add(amount).ok_or(AmountError::Overflow)?;
        let past = if root.amount >= 0 {
            amount < 0 && after < 0
        } else {
            amount > 0 && after > 0
        };
        if past {
            return Err(CompensationError::CorrectionExceedsLine {
                line_id: root.line_id,
                left,
            });
        }
        if root.kind != LineKind::Commission {
            return Ok(Vec::new());
        }
        // Down, it first takes off what was paid but never counted in the
        // cap (a correction older rules made up), and frees no more than
        // the commission counts for there.
        let in_cap = corrections.in_cap(root)?;
        let share = if amount < 0 {
            let outside = corrections.of(root)?.saturating_sub(in_cap).max(0);
            amount
                .saturating_add(outside)
                .min(0)
                .max(in_cap.max(0).saturating_neg())
        } else {
            amount
        };
        Ok((share != 0)
            .then(|| CapShare {
                period: cap_period(root.accrued_at),
                amount: share,
            })
            .into_iter()
            .collect())
    }

    /// What is left of `commission` (on capture `source`) as corrected,
    /// less every clawback (and reversal) of its capture, as corrected: a
    /// clawback of several captures counts whole against each of their
    /// commissions, so no order of corrections and clawbacks docks the
    /// commission twice.
    fn own_left(
        &self,
        commission: &Line,
        source: &str,
        corrections: &Corrections,
    ) -> Result<i64, AmountError> {
        let mut left = corrections.of(commission)?;
        for clawback in self
            .standing_clawbacks()
            .filter(|line| line.clawed_from.iter().any(|capture| capture == source))
        {
            left = left
                .checked_add(corrections.of(clawback)?)
                .ok_or(AmountError::Overflow)?;
        }
        Ok(left)
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
