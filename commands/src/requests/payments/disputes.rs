//! Disputes: opening one freezes its amount (Dr `funds_in_dispute` / Cr
//! the disputed tender's account) and books the processor's fee (Dr
//! `dispute_fees`); evidence moves it under review; closing it won
//! reinstates the amount (Dr the tender's account / Cr `funds_in_dispute`),
//! lost writes it off (Dr `dispute_losses` / Cr `funds_in_dispute`). Once.

use super::answers::DisputeAnswer;
use super::{claim, open, payment, processor_of, reference_target, source_account};
use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use crate::requests::books::{self, EntryLine};
use aggregates::ids::{CaptureId, DisputeId, PaymentId};
use aggregates::journal::account::AccountCode;
use aggregates::journal::entry::EntryRecord;
use aggregates::journal::Side;
use aggregates::money::{Amount, Asset};
use aggregates::payments::accounts;
use aggregates::payments::reference::{Owner, ReferenceKind};
use aggregates::payments::settlement::Item;
use aggregates::payments::DisputeState;
use aggregates::payments::{DisputeOutcome, Payment, PaymentCommand};
use aggregates::EntryId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The entity index's name for disputes.
pub const DISPUTE_ENTITY: &str = "dispute";

/// Records an entry of `lines` (each `(account, side, amount)`, zero
/// amounts left out) as `entry_id`.
fn post(
    decider: &mut Decider<'_>,
    entry_id: EntryId,
    asset: &Asset,
    lines: &[(&AccountCode, Side, Amount)],
    reference: Option<String>,
    at: DateTime<Utc>,
) -> Result<(), Refusal> {
    let lines: Vec<EntryLine> = lines
        .iter()
        .filter(|(_, _, amount)| !amount.is_zero())
        .map(|(account, side, amount)| EntryLine {
            account: (*account).clone(),
            asset: asset.clone(),
            side: *side,
            amount: *amount,
        })
        .collect();
    books::post(decider, entry_id, &lines, reference, at)
}

/// Opens a dispute on a capture. `account` is the disputed tender's
/// (`receivable:<processor>`), resolved before submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenDispute {
    pub payment_id: PaymentId,
    pub dispute_id: DisputeId,
    pub capture_id: CaptureId,
    pub amount: Amount,
    pub fee: Amount,
    pub reference: Option<String>,
    pub reason: Option<String>,
    pub account: AccountCode,
    pub asset: Asset,
}

impl Request for OpenDispute {
    const KIND: &'static str = "open_dispute";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![
            Target::of::<Payment>(self.payment_id.to_string()),
            Target::of::<EntryRecord>(self.dispute_id.to_string()),
        ];
        let codes = [
            self.account.clone(),
            accounts::funds_in_dispute().code,
            accounts::dispute_fees().code,
        ];
        targets.extend(books::money_targets(codes.iter(), [&self.asset]));
        if let (Some(processor), Some(reference)) = (processor_of(&self.account), &self.reference) {
            targets.push(reference_target(
                ReferenceKind::Dispute,
                processor,
                reference,
            ));
        }
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        if let (Some(processor), Some(reference)) = (processor_of(&self.account), &self.reference) {
            let owner = Owner::of(
                self.payment_id,
                Item::Dispute {
                    dispute_id: self.dispute_id,
                },
            );
            claim(decider, ReferenceKind::Dispute, processor, reference, owner)?;
        }
        let before = payment(decider, self.payment_id, Some(&self.asset))?;
        if let Some((tender, _)) = before.capture(self.capture_id) {
            let from = source_account(&tender.source)?;
            if from.code != self.account {
                return Err(Refusal::Stale(format!(
                    "the request names account {}, the capture's tender posts to {}",
                    self.account, from.code
                )));
            }
        }
        decider.execute::<Payment>(
            &self.payment_id.to_string(),
            PaymentCommand::OpenDispute {
                dispute_id: self.dispute_id,
                capture_id: self.capture_id,
                amount: self.amount,
                fee: self.fee,
                reference: self.reference.clone(),
                reason: self.reason.clone(),
                rules: decider.rules(),
                at,
            },
        )?;
        let (frozen, fees) = (accounts::funds_in_dispute(), accounts::dispute_fees());
        open(decider, &[&frozen, &fees])?;
        let owed = self.amount.checked_add(self.fee)?;
        post(
            decider,
            EntryId::from_uuid(self.dispute_id.as_uuid()),
            &self.asset,
            &[
                (&frozen.code, Side::Debit, self.amount),
                (&fees.code, Side::Debit, self.fee),
                (&self.account, Side::Credit, owed),
            ],
            self.reference.clone(),
            at,
        )?;
        decider.index::<Payment>(
            DISPUTE_ENTITY,
            self.dispute_id.to_string(),
            &self.payment_id.to_string(),
        );
        Reply::created(
            self.payment_id.to_string(),
            &DisputeAnswer {
                payment_id: self.payment_id,
                dispute_id: self.dispute_id,
                dispute_status: DisputeState::NeedsResponse,
            },
        )
    }
}

/// Submits evidence for an open dispute: it goes under review.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitEvidence {
    pub payment_id: PaymentId,
    pub dispute_id: DisputeId,
}

impl Request for SubmitEvidence {
    const KIND: &'static str = "submit_evidence";

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Payment>(self.payment_id.to_string())]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        decider.execute::<Payment>(
            &self.payment_id.to_string(),
            PaymentCommand::SubmitEvidence {
                dispute_id: self.dispute_id,
                at,
            },
        )?;
        Reply::ok(
            self.payment_id.to_string(),
            &DisputeAnswer {
                payment_id: self.payment_id,
                dispute_id: self.dispute_id,
                dispute_status: DisputeState::UnderReview,
            },
        )
    }
}

/// Closes a dispute, once: won reinstates its amount, lost writes it off.
/// `account` is the disputed tender's, `entry_id` the closing entry's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseDispute {
    pub payment_id: PaymentId,
    pub dispute_id: DisputeId,
    pub outcome: DisputeOutcome,
    pub entry_id: EntryId,
    pub account: AccountCode,
    pub asset: Asset,
}

impl Request for CloseDispute {
    const KIND: &'static str = "close_dispute";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![
            Target::of::<Payment>(self.payment_id.to_string()),
            Target::of::<EntryRecord>(self.entry_id.to_string()),
        ];
        let codes = [
            self.account.clone(),
            accounts::funds_in_dispute().code,
            accounts::dispute_losses().code,
        ];
        targets.extend(books::money_targets(codes.iter(), [&self.asset]));
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        let before = payment(decider, self.payment_id, Some(&self.asset))?;
        let amount = match before.dispute(self.dispute_id) {
            Some(dispute) => {
                let tender = before
                    .tender(dispute.tender_id)
                    .ok_or_else(|| Refusal::Internal("a dispute of no tender".into()))?;
                if source_account(&tender.source)?.code != self.account {
                    return Err(Refusal::Internal(format!(
                        "the request names account {}, the disputed tender posts to another",
                        self.account
                    )));
                }
                dispute.amount
            }
            None => Amount::ZERO,
        };
        decider.execute::<Payment>(
            &self.payment_id.to_string(),
            PaymentCommand::CloseDispute {
                dispute_id: self.dispute_id,
                outcome: self.outcome,
                at,
            },
        )?;
        let frozen = accounts::funds_in_dispute();
        let to = match self.outcome {
            DisputeOutcome::Won => self.account.clone(),
            DisputeOutcome::Lost => {
                let losses = accounts::dispute_losses();
                open(decider, &[&losses])?;
                losses.code
            }
        };
        post(
            decider,
            self.entry_id,
            &self.asset,
            &[
                (&to, Side::Debit, amount),
                (&frozen.code, Side::Credit, amount),
            ],
            Some(format!("dispute:{}", self.dispute_id)),
            at,
        )?;
        Reply::ok(
            self.payment_id.to_string(),
            &DisputeAnswer {
                payment_id: self.payment_id,
                dispute_id: self.dispute_id,
                dispute_status: match self.outcome {
                    DisputeOutcome::Won => DisputeState::Won,
                    DisputeOutcome::Lost => DisputeState::Lost,
                },
            },
        )
    }
}
