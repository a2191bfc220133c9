//! Importing a processor's settlement batch: each line matched by its
//! reference (the claim of `reference`) to the payment item it settles, or
//! a break; the items settled in their payments; and one entry for the
//! batch, so the books balance whatever the file says:
//!
//! - a matched line: Dr `processor_balance:<p>` net, Dr `processing_fees`
//!   fee / Cr `receivable:<p>` gross (signs flip for negative amounts: a
//!   rebate is a negative fee); a dispute's fee was booked when it opened,
//!   so a dispute line gives that fee back to the receivable, and what the
//!   processor charged beyond it (or less) goes to `dispute_fees`;
//! - an amount mismatch: the receivable settles what the ledger expected,
//!   the difference goes to `settlement_suspense`;
//! - any other break: the gross goes to `settlement_suspense`, the fee and
//!   net as above;
//! - an adjustment or a fee line, the processor's own: its gross and fee to
//!   `processing_fees`;
//! - since rules 4, what the batch's nets take from `processor_balance:<p>`
//!   beyond what it holds (refunds and disputes outweighing captures after
//!   a payout) is owed to the processor, Cr `processor_payable:<p>`; and a
//!   batch's nets first pay that down (Dr `processor_payable:<p>`) before
//!   adding to the balance (a failed payout's money back pays it down
//!   too: see `payouts`). A payout the balance cannot cover is refused by
//!   its flag.
//!
//! A break is resolved once (`ResolveBreak`): what it left in suspense is
//! written off or adjusted.

use super::answers::{BreakAnswer, BreakResolvedAnswer, SettlementAnswer};
use super::payment;
use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use crate::requests::books::{self, EntryLine};
use aggregates::ids::PaymentId;
use aggregates::journal::account::{AccountCode, LedgerAccount};
use aggregates::journal::entry::EntryRecord;
use aggregates::journal::Side;
use aggregates::money::{Amount, Asset};
use aggregates::payments::accounts::{self, PaymentAccount};
use aggregates::payments::reference::{reference_id, ProcessorReference, ReferenceKind};
use aggregates::payments::settlement::{
    BreakClass, Expected, Item, Line, LineType, Outcome, Resolution, Settlement, SettlementCommand,
    SettlementError, SettlementEvent,
};
use aggregates::payments::{DisputeState, Payment, PaymentCommand, RefundState};
use aggregates::rules::Rules;
use aggregates::EntryId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// The reference kind a line of `line_type` names, if it names one.
pub fn reference_kind(line_type: LineType) -> Option<ReferenceKind> {
    match line_type {
        LineType::Capture => Some(ReferenceKind::Capture),
        LineType::Refund => Some(ReferenceKind::Refund),
        LineType::Dispute | LineType::DisputeReversal => Some(ReferenceKind::Dispute),
        LineType::Fee | LineType::Adjustment => None,
    }
}

/// The entity index's name for breaks (found by their own id).
pub const BREAK_ENTITY: &str = "break";

/// The settlement's aggregate id.
pub fn settlement_id(processor: &str, batch_id: &str) -> String {
    format!("{processor}:{batch_id}")
}

/// Imports a settlement batch. `payments[i]` is the payment line `i`'s
/// reference names (resolved before submission from its claim; `None`
/// when nothing claims it); `entry_id` the batch's entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportSettlement {
    pub processor: String,
    pub batch_id: String,
    pub asset: Asset,
    pub settled_at: DateTime<Utc>,
    pub lines: Vec<Line>,
    pub payments: Vec<Option<PaymentId>>,
    pub entry_id: EntryId,
}

impl ImportSettlement {
    fn accounts(&self) -> Result<[PaymentAccount; 4], Refusal> {
        let invalid = || super::invalid("processor", &self.processor);
        Ok([
            accounts::receivable(&self.processor).map_err(|_| invalid())?,
            accounts::processor_balance(&self.processor).map_err(|_| invalid())?,
            accounts::processing_fees(),
            accounts::settlement_suspense(),
        ])
    }

    /// What the ledger expects of each line, from its reference's claim
    /// and the payment holding the item.
    fn expectations(&self, decider: &Decider<'_>) -> Result<Vec<Option<Expected>>, Refusal> {
        let mut expected = Vec::with_capacity(self.lines.len());
        for (index, line) in self.lines.iter().enumerate() {
            let Some(kind) = reference_kind(line.line_type) else {
                expected.push(None);
                continue;
            };
            let id = reference_id(kind, &self.processor, &line.reference);
            let Some(owner) = decider.state::<ProcessorReference>(&id)?.owner.clone() else {
                expected.push(None);
                continue;
            };
            if self.payments.get(index).copied().flatten() != Some(owner.payment_id) {
                return Err(Refusal::Stale(format!(
                    "line {}: the request names another payment than reference {id} is claimed by",
                    index + 1
                )));
            }
            let payment = payment(decider, owner.payment_id, None)?;
            expected.push(expect(
                payment,
                owner.payment_id,
                owner.item,
                line.line_type,
                &self.processor,
            ));
        }
        Ok(expected)
    }
}

/// What `payment` expects of a line of `line_type` naming `item`, from
/// `processor`.
fn expect(
    payment: &Payment,
    payment_id: PaymentId,
    item: Option<Item>,
    line_type: LineType,
    processor: &str,
) -> Option<Expected> {
    let asset = payment.intent.as_ref()?.terms.asset.clone();
    let (item, gross, fee, settled) = match (item?, line_type) {
        (Item::Capture { capture_id }, LineType::Capture) => {
            let (_, capture) = payment.capture(capture_id)?;
            (
                item?,
                capture.amount.value(),
                0,
                capture.settled_in.is_some(),
            )
        }
        (Item::Refund { refund_id }, LineType::Refund) => {
            let refund = payment.refund(refund_id)?;
            // The parts drawn from this processor's tenders; a failed
            // refund is owed nothing.
            let mut owed = 0_i64;
            if refund.state != RefundState::Failed {
                for part in &refund.parts {
                    let through = payment
                        .tender(part.tender_id)
                        .is_some_and(|tender| tender.source.processor() == Some(processor));
                    if through {
                        owed = owed.checked_add(part.amount.value())?;
                    }
                }
            }
            (item?, -owed, 0, refund.settled_in.is_some())
        }
        (Item::Dispute { dispute_id }, LineType::Dispute) => {
            let dispute = payment.dispute(dispute_id)?;
            (
                item?,
                -dispute.amount.value(),
                dispute.fee.value(),
                dispute.settled_in.is_some(),
            )
        }
        (Item::Dispute { dispute_id }, LineType::DisputeReversal) => {
            let dispute = payment.dispute(dispute_id)?;
            let gross = match dispute.state {
                DisputeState::Won => dispute.amount.value(),
                _ => 0,
            };
            (
                Item::DisputeReversal { dispute_id },
                gross,
                0,
                dispute.reversal_settled_in.is_some(),
            )
        }
        _ => return None,
    };
    Some(Expected {
        payment_id,
        item,
        asset,
        gross,
        fee,
        settled,
    })
}

/// Per account, the signed debit (negative: credit) a batch's lines make.
#[derive(Default)]
struct Movements(BTreeMap<AccountCode, i128>);

impl Movements {
    fn add(&mut self, account: &AccountCode, debit: i128) {
        *self.0.entry(account.clone()).or_default() += debit;
    }

    /// Since rules 4: what the batch takes from the processor's `balance`
    /// beyond what it holds is owed to the processor instead (`payable`),
    /// and what the batch adds first pays down what is owed. Answers
    /// whether the payable moves.
    fn net_against_payable(
        &mut self,
        decider: &Decider<'_>,
        balance: &PaymentAccount,
        payable: &PaymentAccount,
        asset: &Asset,
    ) -> Result<bool, Refusal> {
        let net = self.0.get(&balance.code).copied().unwrap_or(0);
        // The payable's signed debit: a credit (what the balance cannot
        // give, as its flag counts it), or a debit (what is owed, as far
        // as the batch adds).
        let moved = if net < 0 {
            -(-net - room(decider, balance, asset)?).max(0)
        } else {
            net.min(owed(decider, payable, asset)?)
        };
        if moved == 0 {
            return Ok(false);
        }
        self.add(&balance.code, -moved);
        self.add(&payable.code, moved);
        Ok(true)
    }

    fn lines(self, asset: &Asset) -> Result<Vec<EntryLine>, Refusal> {
        let mut lines = Vec::new();
        for (account, debit) in self.0 {
            if debit == 0 {
                continue;
            }
            let amount = i64::try_from(debit.abs())
                .map_err(|_| Refusal::from(aggregates::money::AmountError::Overflow))?;
            lines.push(EntryLine {
                account,
                asset: asset.clone(),
                side: if debit > 0 { Side::Debit } else { Side::Credit },
                amount: Amount::new(amount)?,
            });
        }
        Ok(lines)
    }
}

/// What `balance` (a processor's balance, an asset) can still give, as
/// its flag counts it: its available, posted debits less posted and
/// pending credits (never below zero).
pub(super) fn room(
    decider: &Decider<'_>,
    balance: &PaymentAccount,
    asset: &Asset,
) -> Result<i128, Refusal> {
    let held = decider
        .state::<LedgerAccount>(balance.code.as_str())?
        .balance(asset);
    Ok(held.available(balance.spec.account_type).max(0))
}

/// What `payable` says the tenant owes the processor, as its flag counts
/// it: its available (a liability), posted credits less posted and
/// pending debits (never below zero).
/// Nothing when the account was opened with another type or flags than
/// payments open it with (through the journal, under rules before version
/// 4). The test is by type and flags only: a payable the journal opened
/// exactly so before version 4, and posted to, counts as owed.
pub(super) fn owed(
    decider: &Decider<'_>,
    payable: &PaymentAccount,
    asset: &Asset,
) -> Result<i128, Refusal> {
    let account = decider.state::<LedgerAccount>(payable.code.as_str())?;
    if account.spec != Some(payable.spec) {
        return Ok(0);
    }
    Ok(account
        .balance(asset)
        .available(payable.spec.account_type)
        .max(0))
}

/// Settles `expected`'s item in its payment, in batch `batch`.
fn settle_item(
    decider: &mut Decider<'_>,
    expected: &Expected,
    batch: &str,
    at: DateTime<Utc>,
) -> Result<(), Refusal> {
    decider.execute::<Payment>(
        &expected.payment_id.to_string(),
        PaymentCommand::Settle {
            item: expected.item,
            batch: batch.to_string(),
            at,
        },
    )?;
    Ok(())
}

/// Whether a line's outcome settles its item in its payment (`owed`: the
/// ledger expects something of it; a failed refund, or a dispute not won,
/// is owed nothing and settles nothing).
fn settles(outcome: &Outcome, owed: bool) -> bool {
    owed && match outcome {
        Outcome::Matched { .. } => true,
        Outcome::Break { class, .. } => *class == BreakClass::AmountMismatch,
        Outcome::Processor => false,
    }
}

impl Request for ImportSettlement {
    const KIND: &'static str = "import_settlement";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![
            Target::of::<Settlement>(settlement_id(&self.processor, &self.batch_id)),
            Target::of::<EntryRecord>(self.entry_id.to_string()),
        ];
        let references: BTreeSet<String> = self
            .lines
            .iter()
            .filter_map(|line| {
                reference_kind(line.line_type)
                    .map(|kind| reference_id(kind, &self.processor, &line.reference))
            })
            .collect();
        targets.extend(references.into_iter().map(Target::of::<ProcessorReference>));
        let payments: BTreeSet<PaymentId> = self.payments.iter().flatten().copied().collect();
        targets.extend(
            payments
                .into_iter()
                .map(|payment_id| Target::of::<Payment>(payment_id.to_string())),
        );
        if let Ok(accounts) = self.accounts() {
            let dispute_fees = accounts::dispute_fees().code;
            let payable = accounts::processor_payable(&self.processor).ok();
            targets.extend(books::money_targets(
                accounts
                    .iter()
                    .map(|account| &account.code)
                    .chain([&dispute_fees])
                    .chain(payable.as_ref().map(|payable| &payable.code)),
                [&self.asset],
            ));
        }
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        let expected = self.expectations(decider)?;
        let break_ids = (0..self.lines.len())
            .map(|index| decider.derive_id(&format!("break:{index}")))
            .collect();
        let id = settlement_id(&self.processor, &self.batch_id);
        let events = decider.execute::<Settlement>(
            &id,
            SettlementCommand::Import {
                processor: self.processor.clone(),
                batch_id: self.batch_id.clone(),
                asset: self.asset.clone(),
                settled_at: self.settled_at,
                lines: self.lines.clone(),
                expected: expected.clone(),
                break_ids,
                at,
            },
        )?;
        let Some(SettlementEvent::SettlementImported { lines, .. }) = events.first() else {
            return Err(Refusal::Internal("an import gave no event".into()));
        };
        let [receivable, balance, fees, suspense] = self.accounts()?;
        super::open(decider, &[&receivable, &balance, &fees, &suspense])?;
        // Opened by the dispute whose fee it booked, when one is settled.
        let dispute_fees = accounts::dispute_fees();
        let codes = BatchAccounts {
            receivable: &receivable.code,
            balance: &balance.code,
            fees: &fees.code,
            suspense: &suspense.code,
            dispute_fees: &dispute_fees.code,
        };
        let mut movements = Movements::default();
        let (mut matched, mut breaks) = (0, Vec::new());
        for (settled, expected) in lines.iter().zip(&expected) {
            let line = &settled.line;
            codes.moved_by(&mut movements, settled, expected.as_ref());
            if matches!(settled.outcome, Outcome::Matched { .. }) {
                matched += 1;
            }
            if let Outcome::Break {
                break_id,
                class,
                expected,
            } = &settled.outcome
            {
                decider.index::<Settlement>(BREAK_ENTITY, break_id.to_string(), &id);
                breaks.push(BreakAnswer {
                    break_id: *break_id,
                    class: *class,
                    reference: line.reference.clone(),
                    expected: *expected,
                    actual: line.gross,
                });
            }
            if let Some(expected) = expected {
                // A failed refund, or a dispute not won, is owed nothing:
                // nothing of it settles.
                if settles(&settled.outcome, expected.gross != 0) {
                    settle_item(decider, expected, &id, at)?;
                }
            }
        }
        if decider.rules().since(Rules::FOURTH) {
            let payable = accounts::processor_payable(&self.processor)
                .map_err(|_| super::invalid("processor", &self.processor))?;
            if movements.net_against_payable(decider, &balance, &payable, &self.asset)? {
                super::open(decider, &[&payable])?;
            }
        }
        let entry_lines = movements.lines(&self.asset)?;
        if entry_lines.len() >= 2 {
            books::post(
                decider,
                self.entry_id,
                &entry_lines,
                Some(format!("settlement:{id}")),
                self.settled_at,
            )?;
        }
        Reply::created(
            id.clone(),
            &SettlementAnswer {
                settlement_id: id.clone(),
                matched,
                breaks,
            },
        )
    }
}

/// The accounts a batch's lines move.
struct BatchAccounts<'a> {
    receivable: &'a AccountCode,
    balance: &'a AccountCode,
    fees: &'a AccountCode,
    suspense: &'a AccountCode,
    dispute_fees: &'a AccountCode,
}

impl BatchAccounts<'_> {
    /// What `settled` (matched against `expected`, the ledger's item)
    /// moves, as signed debits.
    fn moved_by(
        &self,
        movements: &mut Movements,
        settled: &aggregates::payments::settlement::SettledLine,
        expected: Option<&Expected>,
    ) {
        let line = &settled.line;
        let (gross, fee) = (i128::from(line.gross), i128::from(line.fee));
        movements.add(self.balance, i128::from(line.net));
        // The fee the ledger booked already (a dispute's, when it opened)
        // settles the receivable it was booked against, and what the
        // processor charged beyond it (or less: either sign) corrects the
        // dispute's fee; any other line's fee is the processor's (a
        // rebate, negative, included).
        let settles_item = matches!(
            settled.outcome,
            Outcome::Matched { .. }
                | Outcome::Break {
                    class: BreakClass::AmountMismatch,
                    ..
                }
        );
        let booked = match expected {
            Some(expected) if settles_item => i128::from(expected.fee),
            _ => 0,
        };
        movements.add(self.receivable, booked);
        let charged = if booked == 0 {
            self.fees
        } else {
            self.dispute_fees
        };
        movements.add(charged, fee - booked);
        match &settled.outcome {
            Outcome::Matched { .. } => movements.add(self.receivable, -gross),
            Outcome::Break {
                class: BreakClass::AmountMismatch,
                expected: Some(ledger),
                ..
            } => {
                let ledger = i128::from(*ledger);
                movements.add(self.receivable, -ledger);
                movements.add(self.suspense, ledger - gross);
            }
            // The processor's own (a fee, an adjustment): its cost.
            Outcome::Processor => movements.add(self.fees, -gross),
            Outcome::Break { .. } => movements.add(self.suspense, -gross),
        }
    }
}

/// What break `line` left in `settlement_suspense`, as a signed debit.
fn suspended(line: &aggregates::payments::settlement::SettledLine) -> i128 {
    let gross = i128::from(line.line.gross);
    match line.outcome {
        Outcome::Break {
            class: BreakClass::AmountMismatch,
            expected: Some(ledger),
            ..
        } => i128::from(ledger) - gross,
        _ => -gross,
    }
}

/// Resolves a break of a batch, once: what it left in
/// `settlement_suspense` is cleared, written off (to
/// `settlement_write_offs`), adjusted (to `revenue`, taking the
/// processor's figure) or matched (to the receivable, settling the item
/// the line's reference names, which now expects exactly the line).
/// `asset` is the batch's, resolved before submission; `entry_id` the
/// resolving entry's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBreak {
    pub processor: String,
    pub batch_id: String,
    pub break_id: Uuid,
    pub resolution: Resolution,
    pub reason: Option<String>,
    pub asset: Asset,
    pub entry_id: EntryId,
    /// The line's reference's claim (`<kind>/<processor>/<ref>`) and the
    /// payment claiming it, resolved before submission: what a match
    /// settles, and (since rules 3) what a write-off or an adjustment is
    /// checked not to leave unsettled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<(String, Option<PaymentId>)>,
}

impl ResolveBreak {
    /// Where a write-off or an adjustment books what the break suspended
    /// (a match books it to the receivable: [`matching_accounts`]).
    fn counter(&self) -> Option<PaymentAccount> {
        match self.resolution {
            Resolution::WriteOff => Some(accounts::settlement_write_offs()),
            Resolution::Adjust => Some(accounts::revenue()),
            Resolution::Match => None,
        }
    }
}

impl Request for ResolveBreak {
    const KIND: &'static str = "resolve_break";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![
            Target::of::<Settlement>(settlement_id(&self.processor, &self.batch_id)),
            Target::of::<EntryRecord>(self.entry_id.to_string()),
        ];
        // The item the line's reference names: what a match settles, and
        // what a write-off or an adjustment checks does not expect the line.
        if let Some((claim, payment_id)) = &self.claim {
            targets.push(Target::of::<ProcessorReference>(claim.as_str()));
            targets.extend(payment_id.map(|id| Target::of::<Payment>(id.to_string())));
        }
        let moved: Vec<PaymentAccount> = match self.counter() {
            Some(counter) => vec![accounts::settlement_suspense(), counter],
            None => matching_accounts(&self.processor).map_or(Vec::new(), Vec::from),
        };
        let codes = moved.iter().map(|account| &account.code);
        targets.extend(books::money_targets(codes, [&self.asset]));
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        if self.resolution == Resolution::Match {
            return self.decide_match(decider);
        }
        let at = decider.at();
        let id = settlement_id(&self.processor, &self.batch_id);
        if decider.rules().since(Rules::THIRD) {
            self.not_matchable(decider, &id)?;
        }
        decider.execute::<Settlement>(
            &id,
            SettlementCommand::ResolveBreak {
                break_id: self.break_id,
                resolution: self.resolution,
                matched: None,
                reason: self.reason.clone(),
                at,
            },
        )?;
        let suspended = self
            .batch(decider, &id)?
            .find_break(self.break_id)
            .map(suspended)
            .unwrap_or_default();
        let counter = self
            .counter()
            .ok_or_else(|| Refusal::Internal("a match has no counter account".into()))?;
        let suspense = accounts::settlement_suspense();
        super::open(decider, &[&suspense, &counter])?;
        let mut movements = Movements::default();
        movements.add(&suspense.code, -suspended);
        movements.add(&counter.code, suspended);
        self.book(decider, (movements, suspended), (id, at))
    }
}

impl ResolveBreak {
    /// Batch `id`, in the asset the request was resolved with (it never
    /// changes: another is stale).
    fn batch<'a>(&self, decider: &'a Decider<'_>, id: &str) -> Result<&'a Settlement, Refusal> {
        let settlement = decider.state::<Settlement>(id)?;
        if settlement.asset.as_ref() != Some(&self.asset) {
            return Err(Refusal::Stale(format!(
                "the request names {}, batch {id} is in another asset",
                self.asset
            )));
        }
        Ok(settlement)
    }

    /// Posts the resolution's `movements` (of a break that suspended
    /// `suspended`) as its entry and answers it.
    fn book(
        &self,
        decider: &mut Decider<'_>,
        (movements, suspended): (Movements, i128),
        (id, at): (String, DateTime<Utc>),
    ) -> Result<Reply, Refusal> {
        let lines = movements.lines(&self.asset)?;
        if lines.len() >= 2 {
            books::post(
                decider,
                self.entry_id,
                &lines,
                Some(format!("break:{}", self.break_id)),
                at,
            )?;
        }
        Reply::ok(
            id,
            &BreakResolvedAnswer {
                break_id: self.break_id,
                resolution: self.resolution,
                amount: i64::try_from(suspended.abs())
                    .map_err(|_| Refusal::from(aggregates::money::AmountError::Overflow))?,
            },
        )
    }
}

/// The accounts a match moves: the receivable, the processing and dispute
/// fees (a dispute line's fee, booked to processing fees by the import, is
/// corrected as a matched line's is), the suspense.
fn matching_accounts(processor: &str) -> Result<[PaymentAccount; 4], Refusal> {
    Ok([
        accounts::receivable(processor).map_err(|_| super::invalid("processor", processor))?,
        accounts::processing_fees(),
        accounts::dispute_fees(),
        accounts::settlement_suspense(),
    ])
}

impl ResolveBreak {
    /// What the item the line of this break names expects now, if it is
    /// exactly the line; else why not (`break_not_matched`). Refused only
    /// when the request is stale.
    fn expected_now(
        &self,
        decider: &Decider<'_>,
        line: &Line,
    ) -> Result<Result<Expected, SettlementError>, Refusal> {
        let not_matched = |expected: Option<i64>| {
            Ok(Err(SettlementError::BreakNotMatched {
                expected,
                actual: line.gross,
            }))
        };
        let Some(kind) = reference_kind(line.line_type) else {
            return not_matched(None);
        };
        let claim = reference_id(kind, &self.processor, &line.reference);
        let Some((asked, payment_id)) = &self.claim else {
            return Err(Refusal::Stale("a match names no claim".into()));
        };
        if *asked != claim {
            return Err(Refusal::Stale(format!(
                "the request names claim {asked}, the line's is {claim}"
            )));
        }
        let owner = decider.state::<ProcessorReference>(&claim)?.owner.clone();
        if owner.as_ref().map(|owner| owner.payment_id) != *payment_id {
            return Err(Refusal::Stale(format!(
                "claim {claim} is held by another payment than the request names"
            )));
        }
        let Some(owner) = owner else {
            return not_matched(None);
        };
        let payment = payment(decider, owner.payment_id, None)?;
        let expected = expect(
            payment,
            owner.payment_id,
            owner.item,
            line.line_type,
            &self.processor,
        );
        match expected {
            Some(expected)
                if expected.asset == self.asset
                    && !expected.settled
                    && expected.gross != 0
                    && expected.gross == line.gross =>
            {
                Ok(Ok(expected))
            }
            Some(expected) if !expected.settled && expected.asset == self.asset => {
                not_matched(Some(expected.gross))
            }
            _ => not_matched(None),
        }
    }

    /// Refused (`break_matchable`) when the item the break's line names
    /// expects exactly the line now: writing it off or adjusting it would
    /// leave the item unsettled and its receivable open for good, where a
    /// match settles both. Checked against the claim the request names
    /// (the route always resolves it; a request naming none is not).
    fn not_matchable(&self, decider: &Decider<'_>, id: &str) -> Result<(), Refusal> {
        if self.claim.is_none() {
            return Ok(());
        }
        let Ok(settled) = self.batch(decider, id)?.open_break(self.break_id) else {
            // The resolution itself says why (unknown, resolved already).
            return Ok(());
        };
        match self.expected_now(decider, &settled.line)? {
            Ok(expected) => Err(SettlementError::BreakMatchable {
                expected: expected.gross,
            }
            .into()),
            Err(_) if decider.rules().since(Rules::SEVENTH) => {
                self.no_open_dispute(decider, &settled.line)
            }
            // Not matchable: the resolution goes on.
            Err(_) => Ok(()),
        }
    }

    /// Refused (`break_awaits_dispute`, since rules 7) when the break's
    /// line reverses a dispute still open: won, the dispute expects the
    /// line and a match settles it; written off first, the won dispute's
    /// receivable would stay open for good.
    fn no_open_dispute(&self, decider: &Decider<'_>, line: &Line) -> Result<(), Refusal> {
        if line.line_type != LineType::DisputeReversal {
            return Ok(());
        }
        let Some((claim, _)) = &self.claim else {
            return Ok(());
        };
        let Some(owner) = decider.state::<ProcessorReference>(claim)?.owner.clone() else {
            return Ok(());
        };
        let Some(Item::Dispute { dispute_id }) = owner.item else {
            return Ok(());
        };
        let payment = payment(decider, owner.payment_id, None)?;
        match payment.dispute(dispute_id) {
            Some(dispute) if dispute.state.is_open() => {
                Err(SettlementError::BreakAwaitsDispute { dispute_id }.into())
            }
            _ => Ok(()),
        }
    }

    /// A match: the line settles its item after all. What the break
    /// suspended goes to the receivable (with a dispute's booked fee given
    /// back to it, as an import gives it), the item is settled in this
    /// batch.
    fn decide_match(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        let id = settlement_id(&self.processor, &self.batch_id);
        let settled = self.batch(decider, &id)?.open_break(self.break_id)?.clone();
        let expected = self.expected_now(decider, &settled.line)??;
        decider.execute::<Settlement>(
            &id,
            SettlementCommand::ResolveBreak {
                break_id: self.break_id,
                resolution: Resolution::Match,
                matched: Some(expected.item),
                reason: self.reason.clone(),
                at,
            },
        )?;
        settle_item(decider, &expected, &id, at)?;
        let [receivable, fees, dispute_fees, suspense] = &matching_accounts(&self.processor)?;
        super::open(decider, &[receivable, fees, dispute_fees, suspense])?;
        let suspended = suspended(&settled);
        let booked = i128::from(expected.fee);
        let mut movements = Movements::default();
        movements.add(&suspense.code, -suspended);
        movements.add(&receivable.code, suspended + booked);
        if booked != 0 {
            let fee = i128::from(settled.line.fee);
            movements.add(&fees.code, -fee);
            movements.add(&dispute_fees.code, fee - booked);
        }
        self.book(decider, (movements, suspended), (id, at))
    }
}
