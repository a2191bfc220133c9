//! Refunds: Dr `refunds` / Cr the account of each tender a refund draws
//! from (the most recently captured first); a failed refund's entry is
//! reversed.

use super::answers::RefundAnswer;
use super::{claim, open, payment, processor_of, reference_target, source_account};
use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use crate::requests::books;
use aggregates::ids::{PaymentId, RefundId, TenderId};
use aggregates::journal::account::AccountCode;
use aggregates::journal::entry::EntryRecord;
use aggregates::journal::Side;
use aggregates::money::{Amount, Asset};
use aggregates::payments::accounts;
use aggregates::payments::reference::{Owner, ReferenceKind};
use aggregates::payments::settlement::Item;
use aggregates::payments::RefundState;
use aggregates::payments::TenderSource;
use aggregates::payments::{Payment, PaymentCommand, PaymentEvent};
use aggregates::EntryId;
use serde::{Deserialize, Serialize};

/// Refunds part or all of what was captured: from the tender named, or
/// the most recently captured first. `accounts` are the codes of every
/// tender's source account, resolved before submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundPayment {
    pub payment_id: PaymentId,
    pub refund_id: RefundId,
    pub amount: Amount,
    pub tender_id: Option<TenderId>,
    pub reference: Option<String>,
    pub reason: Option<String>,
    pub accounts: Vec<AccountCode>,
    pub asset: Asset,
}

impl Request for RefundPayment {
    const KIND: &'static str = "refund_payment";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![
            Target::of::<Payment>(self.payment_id.to_string()),
            Target::of::<EntryRecord>(self.refund_id.to_string()),
        ];
        let refunds = accounts::refunds().code;
        targets.extend(books::money_targets(
            self.accounts.iter().chain([&refunds]),
            [&self.asset],
        ));
        if let Some(reference) = &self.reference {
            for processor in self.accounts.iter().filter_map(processor_of) {
                targets.push(reference_target(
                    ReferenceKind::Refund,
                    processor,
                    reference,
                ));
            }
        }
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        let before = payment(decider, self.payment_id, Some(&self.asset))?.clone();
        // Every account the refund may draw from was resolved (and is a
        // target) before anything is claimed or posted.
        for tender in &before.tenders {
            let from = source_account(&tender.source)?;
            if !self.accounts.contains(&from.code) {
                return Err(Refusal::Stale(format!(
                    "the request does not name account {}",
                    from.code
                )));
            }
        }
        let events = decider.execute::<Payment>(
            &self.payment_id.to_string(),
            PaymentCommand::Refund {
                refund_id: self.refund_id,
                amount: self.amount,
                tender_id: self.tender_id,
                reference: self.reference.clone(),
                reason: self.reason.clone(),
                rules: decider.rules(),
                at,
            },
        )?;
        let refunds = accounts::refunds();
        open(decider, &[&refunds])?;
        let mut lines = vec![books::EntryLine {
            account: refunds.code.clone(),
            asset: self.asset.clone(),
            side: Side::Debit,
            amount: self.amount,
        }];
        for event in &events {
            if let PaymentEvent::Refunded { parts, .. } = event {
                for part in parts {
                    let tender = before
                        .tender(part.tender_id)
                        .ok_or_else(|| Refusal::Internal("a refund of no tender".into()))?;
                    if let (TenderSource::Processor { processor, .. }, Some(reference)) =
                        (&tender.source, &self.reference)
                    {
                        let owner = Owner::of(
                            self.payment_id,
                            Item::Refund {
                                refund_id: self.refund_id,
                            },
                        );
                        claim(decider, ReferenceKind::Refund, processor, reference, owner)?;
                    }
                    lines.push(books::EntryLine {
                        account: source_account(&tender.source)?.code,
                        asset: self.asset.clone(),
                        side: Side::Credit,
                        amount: part.amount,
                    });
                }
            }
        }
        books::post(
            decider,
            EntryId::from_uuid(self.refund_id.as_uuid()),
            &lines,
            self.reference.clone(),
            at,
        )?;
        decider.index::<Payment>(
            REFUND_ENTITY,
            self.refund_id.to_string(),
            &self.payment_id.to_string(),
        );
        Reply::created(
            self.payment_id.to_string(),
            &RefundAnswer {
                payment_id: self.payment_id,
                refund_id: self.refund_id,
                refund_status: RefundState::Pending,
                reversal_id: None,
                status: decider
                    .state::<Payment>(&self.payment_id.to_string())?
                    .status(),
            },
        )
    }
}

/// The entity index's name for refunds.
pub const REFUND_ENTITY: &str = "refund";

/// Fails a pending refund (its processor could not pay it out): its entry
/// is reversed. `accounts` are the refund entry's, resolved before
/// submission; `reversal_id` the reversing entry's id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailRefund {
    pub payment_id: PaymentId,
    pub refund_id: RefundId,
    pub reversal_id: EntryId,
    pub reason: Option<String>,
    pub accounts: Vec<AccountCode>,
    pub asset: Asset,
}

impl Request for FailRefund {
    const KIND: &'static str = "fail_refund";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![
            Target::of::<Payment>(self.payment_id.to_string()),
            Target::of::<EntryRecord>(self.refund_id.to_string()),
            Target::of::<EntryRecord>(self.reversal_id.to_string()),
        ];
        targets.extend(books::money_targets(self.accounts.iter(), [&self.asset]));
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        payment(decider, self.payment_id, Some(&self.asset))?;
        decider.execute::<Payment>(
            &self.payment_id.to_string(),
            PaymentCommand::FailRefund {
                refund_id: self.refund_id,
                reason: self.reason.clone(),
                at,
            },
        )?;
        let reversed = books::reverse(
            decider,
            EntryId::from_uuid(self.refund_id.as_uuid()),
            self.reversal_id,
            Some(format!("refund:{}", self.refund_id)),
        )?;
        for posting in reversed.entry.postings() {
            if !self
                .accounts
                .iter()
                .any(|code| code.as_str() == posting.account.code)
            {
                return Err(Refusal::Internal(format!(
                    "the request does not name account {}",
                    posting.account.code
                )));
            }
        }
        Reply::ok(
            self.payment_id.to_string(),
            &RefundAnswer {
                payment_id: self.payment_id,
                refund_id: self.refund_id,
                refund_status: RefundState::Failed,
                reversal_id: Some(self.reversal_id),
                status: decider
                    .state::<Payment>(&self.payment_id.to_string())?
                    .status(),
            },
        )
    }
}
