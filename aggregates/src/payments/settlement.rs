//! A settlement batch imported from a processor (its id
//! `<processor>:<batch_id>`, so a batch is imported once per processor):
//! its lines checked (each `gross - fee = net`), each matched by processor
//! reference to what the ledger expects (resolved by the request from the
//! payments it names) or opened as a **break** of its class, each break
//! resolved once; and the payout that pays the batch out, once.

use crate::decide::{handle_by_deciding, Decide, Rejection, RejectionKind};
use crate::ids::{CaptureId, DisputeId, PaymentId, RefundId};
use crate::money::Asset;
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

/// Aggregate type of settlement batches; the id is `<processor>:<batch_id>`.
pub const SETTLEMENT_AGGREGATE: &str = "settlement";

/// Most lines one batch holds.
pub const LINES_MAX: usize = 10_000;

/// What a settlement line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineType {
    Capture,
    Refund,
    Dispute,
    DisputeReversal,
    Fee,
    Adjustment,
}

impl LineType {
    /// Whether the line settles an item of the ledger (matched by its
    /// reference); fees and adjustments are the processor's own.
    pub fn settles_an_item(self) -> bool {
        matches!(
            self,
            Self::Capture | Self::Refund | Self::Dispute | Self::DisputeReversal
        )
    }
}

/// One line as the processor reports it: signed amounts in minor units
/// (refunds and disputes negative gross).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    #[serde(rename = "type")]
    pub line_type: LineType,
    pub reference: String,
    pub gross: i64,
    pub fee: i64,
    pub net: i64,
}

/// The item of the ledger a line's reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "item")]
pub enum Item {
    Capture {
        capture_id: CaptureId,
    },
    Refund {
        refund_id: RefundId,
    },
    /// The amount and fee a dispute took from the processor's balance.
    Dispute {
        dispute_id: DisputeId,
    },
    /// What a won dispute gave back.
    DisputeReversal {
        dispute_id: DisputeId,
    },
}

/// What the ledger expects of a line, resolved by the request from the
/// payment its reference names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    pub payment_id: PaymentId,
    pub item: Item,
    pub asset: Asset,
    /// The gross the processor should report (signed as it does).
    pub gross: i64,
    /// The fee the ledger booked for it already (a dispute's, when it
    /// opened); 0 otherwise.
    #[serde(default)]
    pub fee: i64,
    /// Settled by an earlier batch already.
    pub settled: bool,
}

/// Why a line did not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakClass {
    UnknownReference,
    AmountMismatch,
    CurrencyMismatch,
    Duplicate,
}

/// How a line came out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// It settles `item` of `payment_id`.
    Matched { payment_id: PaymentId, item: Item },
    /// The processor's own (a fee, an adjustment).
    Processor,
    /// A break: `expected` is the ledger's gross, when it has one.
    Break {
        break_id: Uuid,
        class: BreakClass,
        expected: Option<i64>,
    },
}

/// A line and how it came out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettledLine {
    pub line: Line,
    pub outcome: Outcome,
}

/// How a break is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// The difference is written off.
    WriteOff,
    /// The difference is booked where it belongs (an adjustment).
    Adjust,
    /// The line settles the item its reference names after all: the item
    /// came to be (or came to owe the line's amount) after the batch was
    /// imported, and now expects exactly the line.
    Match,
}

/// A settlement batch's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub processor: Option<String>,
    pub batch_id: String,
    pub asset: Option<Asset>,
    pub settled_at: Option<DateTime<Utc>>,
    pub lines: Vec<SettledLine>,
    /// Resolved breaks: (break id, resolution).
    pub resolved: Vec<(Uuid, Resolution)>,
    /// The items breaks resolved by matching settled: (break id, item).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<(Uuid, Item)>,
    /// The payout that paid the batch out.
    pub paid_out: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SettlementCommand {
    /// Imports the batch: `expected[i]` is what the ledger expects of line
    /// `i` (`None`: nothing of that reference); `break_ids[i]` names line
    /// `i`'s break should it be one.
    Import {
        processor: String,
        batch_id: String,
        asset: Asset,
        settled_at: DateTime<Utc>,
        lines: Vec<Line>,
        expected: Vec<Option<Expected>>,
        break_ids: Vec<Uuid>,
        at: DateTime<Utc>,
    },
    /// Resolves a break; `matched` is the item a match settles.
    ResolveBreak {
        break_id: Uuid,
        resolution: Resolution,
        matched: Option<Item>,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    PayOut {
        payout_id: Uuid,
        at: DateTime<Utc>,
    },
    /// The payout that paid the batch out failed: the batch may be paid out
    /// again.
    ReleasePayout {
        payout_id: Uuid,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettlementEvent {
    SettlementImported {
        processor: String,
        batch_id: String,
        asset: Asset,
        settled_at: DateTime<Utc>,
        lines: Vec<SettledLine>,
        at: DateTime<Utc>,
    },
    BreakResolved {
        break_id: Uuid,
        resolution: Resolution,
        /// The item a match settled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        matched: Option<Item>,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    PaidOut {
        payout_id: Uuid,
        at: DateTime<Utc>,
    },
    PayoutReleased {
        payout_id: Uuid,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for SettlementEvent {
    fn event_type(&self) -> String {
        match self {
            Self::SettlementImported { .. } => "SettlementImported",
            Self::BreakResolved { .. } => "BreakResolved",
            Self::PaidOut { .. } => "PaidOut",
            Self::PayoutReleased { .. } => "PayoutReleased",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettlementError {
    #[error("batch {batch_id} of {processor} was imported already")]
    AlreadyImported { processor: String, batch_id: String },
    #[error("no such settlement")]
    Unknown,
    #[error("line {line}: gross {gross} - fee {fee} is not net {net}")]
    LineDoesNotAddUp {
        line: usize,
        gross: i64,
        fee: i64,
        net: i64,
    },
    #[error("a batch has 1 to {max} lines")]
    LineCount { max: usize },
    #[error("line {line}: a reference is 1-200 characters")]
    InvalidReference { line: usize },
    #[error("the lines' totals overflow")]
    Overflow,
    #[error("no break {0}")]
    UnknownBreak(Uuid),
    #[error("the break was resolved already")]
    BreakResolved,
    #[error("the line does not settle what its reference names: it expects {}, the line is {actual}", expected.map_or("nothing".to_string(), |expected| expected.to_string()))]
    BreakNotMatched { expected: Option<i64>, actual: i64 },
    #[error("the item the line names expects exactly the line now ({expected}): resolve the break by match, which settles it")]
    BreakMatchable { expected: i64 },
    #[error("the line reverses dispute {dispute_id}, which is still open: once it is won the line matches; resolve the break after the dispute closes")]
    BreakAwaitsDispute { dispute_id: DisputeId },
    #[error("the batch was paid out already")]
    AlreadyPaidOut,
    #[error("the batch is not paid out by that payout")]
    NotPaidOutBy,
}

impl Rejection for SettlementError {
    fn kind(&self) -> RejectionKind {
        match self {
            Self::Unknown | Self::UnknownBreak(_) => RejectionKind::NotFound,
            Self::LineDoesNotAddUp { .. }
            | Self::LineCount { .. }
            | Self::InvalidReference { .. } => RejectionKind::Invalid,
            _ => RejectionKind::RuleBroken,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::AlreadyImported { .. } => "settlement_already_imported",
            Self::Unknown => "unknown_settlement",
            Self::LineDoesNotAddUp { .. } => "settlement_line_does_not_add_up",
            Self::LineCount { .. } => "invalid_settlement_lines",
            Self::InvalidReference { .. } => "invalid_reference",
            Self::Overflow => "amount_overflow",
            Self::UnknownBreak(_) => "unknown_break",
            Self::BreakResolved => "break_already_resolved",
            Self::BreakNotMatched { .. } => "break_not_matched",
            Self::BreakMatchable { .. } => "break_matchable",
            Self::BreakAwaitsDispute { .. } => "break_awaits_dispute",
            Self::AlreadyPaidOut => "settlement_already_paid_out",
            Self::NotPaidOutBy => "settlement_not_paid_out_by_payout",
        }
    }

    fn details(&self) -> serde_json::Value {
        match self {
            Self::LineDoesNotAddUp { line, .. } | Self::InvalidReference { line } => {
                json!({"line": line})
            }
            Self::BreakNotMatched { expected, actual } => {
                json!({"expected": expected, "actual": actual})
            }
            Self::BreakMatchable { expected } => json!({"expected": expected}),
            Self::BreakAwaitsDispute { dispute_id } => json!({"dispute_id": dispute_id}),
            _ => serde_json::Value::Null,
        }
    }
}

/// Checks every line adds up (`gross - fee = net`, no overflow) and has a
/// reference; the first that does not is named.
pub fn check_lines(lines: &[Line]) -> Result<(), SettlementError> {
    if lines.is_empty() || lines.len() > LINES_MAX {
        return Err(SettlementError::LineCount { max: LINES_MAX });
    }
    let mut totals = (0_i64, 0_i64, 0_i64);
    for (index, line) in lines.iter().enumerate() {
        let number = index + 1;
        if line.reference.is_empty() || line.reference.chars().count() > 200 {
            return Err(SettlementError::InvalidReference { line: number });
        }
        if line.gross.checked_sub(line.fee) != Some(line.net) {
            return Err(SettlementError::LineDoesNotAddUp {
                line: number,
                gross: line.gross,
                fee: line.fee,
                net: line.net,
            });
        }
        totals = (
            totals
                .0
                .checked_add(line.gross)
                .ok_or(SettlementError::Overflow)?,
            totals
                .1
                .checked_add(line.fee)
                .ok_or(SettlementError::Overflow)?,
            totals
                .2
                .checked_add(line.net)
                .ok_or(SettlementError::Overflow)?,
        );
    }
    Ok(())
}

/// How line `line` comes out against `expected`, given the references
/// matched earlier in the file (`seen`).
fn classify(
    line: &Line,
    expected: Option<&Expected>,
    asset: &Asset,
    seen: &mut Vec<Item>,
    break_id: Uuid,
) -> Outcome {
    if !line.line_type.settles_an_item() {
        return Outcome::Processor;
    }
    let broken = |class, expected| Outcome::Break {
        break_id,
        class,
        expected,
    };
    let Some(expected) = expected else {
        return broken(BreakClass::UnknownReference, None);
    };
    if expected.asset != *asset {
        return broken(BreakClass::CurrencyMismatch, Some(expected.gross));
    }
    if expected.settled || seen.contains(&expected.item) {
        return broken(BreakClass::Duplicate, Some(expected.gross));
    }
    seen.push(expected.item);
    if expected.gross != line.gross {
        return broken(BreakClass::AmountMismatch, Some(expected.gross));
    }
    Outcome::Matched {
        payment_id: expected.payment_id,
        item: expected.item,
    }
}

impl Settlement {
    /// What the batch settled, net of fees: the sum of its lines' nets.
    pub fn net(&self) -> i128 {
        self.lines
            .iter()
            .map(|line| i128::from(line.line.net))
            .sum()
    }

    /// The break `break_id`: its line.
    pub fn find_break(&self, break_id: Uuid) -> Option<&SettledLine> {
        self.lines.iter().find(
            |line| matches!(line.outcome, Outcome::Break { break_id: id, .. } if id == break_id),
        )
    }

    /// The line of break `break_id` while it is open: refused when the
    /// batch or the break is unknown, or the break was resolved.
    pub fn open_break(&self, break_id: Uuid) -> Result<&SettledLine, SettlementError> {
        if self.processor.is_none() {
            return Err(SettlementError::Unknown);
        }
        let line = self
            .find_break(break_id)
            .ok_or(SettlementError::UnknownBreak(break_id))?;
        if self.resolved.iter().any(|(id, _)| *id == break_id) {
            return Err(SettlementError::BreakResolved);
        }
        Ok(line)
    }
}

impl Aggregate for Settlement {
    const TYPE: &'static str = SETTLEMENT_AGGREGATE;
    type Command = SettlementCommand;
    type Event = SettlementEvent;
    type Error = SettlementError;
    type Services = ();

    async fn handle(
        &mut self,
        command: SettlementCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), SettlementError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: SettlementEvent) {
        match event {
            SettlementEvent::SettlementImported {
                processor,
                batch_id,
                asset,
                settled_at,
                lines,
                ..
            } => {
                self.processor = Some(processor);
                self.batch_id = batch_id;
                self.asset = Some(asset);
                self.settled_at = Some(settled_at);
                self.lines = lines;
            }
            SettlementEvent::BreakResolved {
                break_id,
                resolution,
                matched,
                ..
            } => {
                self.resolved.push((break_id, resolution));
                self.matched.extend(matched.map(|item| (break_id, item)));
            }
            SettlementEvent::PaidOut { payout_id, .. } => self.paid_out = Some(payout_id),
            SettlementEvent::PayoutReleased { .. } => self.paid_out = None,
        }
    }
}

impl Decide for Settlement {
    fn decide(&self, command: SettlementCommand) -> Result<Vec<SettlementEvent>, SettlementError> {
        match command {
            SettlementCommand::Import {
                processor,
                batch_id,
                asset,
                settled_at,
                lines,
                expected,
                break_ids,
                at,
            } => {
                if self.processor.is_some() {
                    return Err(SettlementError::AlreadyImported {
                        processor,
                        batch_id,
                    });
                }
                check_lines(&lines)?;
                let mut seen = Vec::new();
                let lines = lines
                    .into_iter()
                    .enumerate()
                    .map(|(index, line)| {
                        let expected = expected.get(index).and_then(Option::as_ref);
                        let break_id = break_ids.get(index).copied().unwrap_or_default();
                        let outcome = classify(&line, expected, &asset, &mut seen, break_id);
                        SettledLine { line, outcome }
                    })
                    .collect();
                Ok(vec![SettlementEvent::SettlementImported {
                    processor,
                    batch_id,
                    asset,
                    settled_at,
                    lines,
                    at,
                }])
            }
            SettlementCommand::ResolveBreak {
                break_id,
                resolution,
                matched,
                reason,
                at,
            } => {
                self.open_break(break_id)?;
                Ok(vec![SettlementEvent::BreakResolved {
                    break_id,
                    resolution,
                    matched,
                    reason,
                    at,
                }])
            }
            SettlementCommand::PayOut { payout_id, at } => {
                if self.processor.is_none() {
                    return Err(SettlementError::Unknown);
                }
                if self.paid_out.is_some() {
                    return Err(SettlementError::AlreadyPaidOut);
                }
                Ok(vec![SettlementEvent::PaidOut { payout_id, at }])
            }
            SettlementCommand::ReleasePayout { payout_id, at } => {
                if self.paid_out != Some(payout_id) {
                    return Err(SettlementError::NotPaidOutBy);
                }
                Ok(vec![SettlementEvent::PayoutReleased { payout_id, at }])
            }
        }
    }
}

#[cfg(test)]
#[path = "settlement_tests.rs"]
mod tests;
