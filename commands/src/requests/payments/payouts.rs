//! Payouts: settled money moved from `processor_balance:<processor>` (never
//! below zero) to `bank:<account>`, for exactly the net of the batches
//! named, each paid out once; a failed payout's entry is reversed and its
//! batches may be paid out again.

use super::answers::PayoutAnswer;
use super::settlements;
use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use crate::requests::books;
use aggregates::journal::account::AccountCode;
use aggregates::journal::entry::EntryRecord;
use aggregates::money::Asset;
use aggregates::money::{Amount, AmountError};
use aggregates::payments::accounts::{self, PaymentAccount};
use aggregates::payments::payout::{Payout, PayoutCommand, PayoutTerms};
use aggregates::payments::settlement::{Settlement, SettlementCommand, SettlementError};
use aggregates::rules::Rules;
use aggregates::{EntryId, RejectionKind};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeSet;
use uuid::Uuid;

/// The bank and processor balance accounts of a payout. `bank:payroll` is
/// compensation's (what pay runs pay from): a payout names another.
fn payout_accounts(processor: &str, bank: &str) -> Result<[PaymentAccount; 2], Refusal> {
    if bank == "payroll" {
        return Err(Refusal::Rejected {
            kind: RejectionKind::RuleBroken,
            code: "bank_account_reserved".into(),
            message: "bank:payroll is what pay runs pay from: pay out to another bank account"
                .into(),
            details: json!({ "bank_account": bank }),
        });
    }
    Ok([
        accounts::bank(bank).map_err(|_| super::invalid("bank_account", bank))?,
        accounts::processor_balance(processor)
            .map_err(|_| super::invalid("processor", processor))?,
    ])
}

fn targets(
    payout_id: Uuid,
    batches: &[String],
    entries: &[EntryId],
    processor: &str,
    bank: &str,
    asset: &Asset,
) -> Vec<Target> {
    let mut targets = vec![Target::of::<Payout>(payout_id.to_string())];
    targets.extend(
        batches
            .iter()
            .map(|batch| Target::of::<Settlement>(batch.as_str())),
    );
    targets.extend(
        entries
            .iter()
            .map(|entry| Target::of::<EntryRecord>(entry.to_string())),
    );
    if let Ok(accounts) = payout_accounts(processor, bank) {
        targets.extend(books::money_targets(
            accounts.iter().map(|account| &account.code),
            [asset],
        ));
    }
    targets
}

/// Refused: a batch of another processor or currency than the payout's.
fn mismatch(batch: &str) -> Refusal {
    Refusal::Rejected {
        kind: RejectionKind::RuleBroken,
        code: "payout_batch_mismatch".into(),
        message: format!("batch {batch} is of another processor or currency than the payout"),
        details: json!({"batch": batch}),
    }
}

/// Pays out the batches `terms.batches` (`<processor>:<batch_id>`) of
/// `terms.processor`: exactly their net, each batch once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePayout {
    pub payout_id: Uuid,
    pub terms: PayoutTerms,
    pub entry_id: EntryId,
}

impl Request for CreatePayout {
    const KIND: &'static str = "create_payout";

    fn targets(&self) -> Vec<Target> {
        targets(
            self.payout_id,
            &self.terms.batches,
            &[self.entry_id],
            &self.terms.processor,
            &self.terms.bank_account,
            &self.terms.asset,
        )
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        let distinct: BTreeSet<&String> = self.terms.batches.iter().collect();
        if distinct.len() != self.terms.batches.len() {
            return Err(Refusal::Rejected {
                kind: aggregates::RejectionKind::Invalid,
                code: "invalid_batches".into(),
                message: "a payout names each batch once".into(),
                details: serde_json::json!({"batches": self.terms.batches}),
            });
        }
        let mut net = 0_i128;
        for batch in &self.terms.batches {
            let settlement = decider.state::<Settlement>(batch)?;
            let processor = settlement
                .processor
                .as_ref()
                .ok_or(SettlementError::Unknown)?;
            if *processor != self.terms.processor
                || settlement.asset.as_ref() != Some(&self.terms.asset)
            {
                return Err(mismatch(batch));
            }
            net += settlement.net();
        }
        decider.execute::<Payout>(
            &self.payout_id.to_string(),
            PayoutCommand::Create {
                terms: self.terms.clone(),
                net,
                at,
            },
        )?;
        for batch in &self.terms.batches {
            decider.execute::<Settlement>(
                batch,
                SettlementCommand::PayOut {
                    payout_id: self.payout_id,
                    at,
                },
            )?;
        }
        let [bank, balance] = payout_accounts(&self.terms.processor, &self.terms.bank_account)?;
        super::open(decider, &[&bank, &balance])?;
        let lines = books::transfer_lines(
            &bank.code,
            &balance.code,
            &self.terms.asset,
            self.terms.amount,
        );
        books::post(
            decider,
            self.entry_id,
            &lines,
            Some(format!("payout:{}", self.payout_id)),
            at,
        )?;
        Reply::created(
            self.payout_id.to_string(),
            &PayoutAnswer {
                payout_id: self.payout_id,
                status: "pending",
                amount: Some(self.terms.amount),
                batches: Some(self.terms.batches.clone()),
                reversal_id: None,
            },
        )
    }
}

/// A payout that reached the bank.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkPayoutPaid {
    pub payout_id: Uuid,
}

impl Request for MarkPayoutPaid {
    const KIND: &'static str = "mark_payout_paid";

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Payout>(self.payout_id.to_string())]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        decider.execute::<Payout>(&self.payout_id.to_string(), PayoutCommand::MarkPaid { at })?;
        Reply::ok(
            self.payout_id.to_string(),
            &PayoutAnswer {
                payout_id: self.payout_id,
                status: "paid",
                amount: None,
                batches: None,
                reversal_id: None,
            },
        )
    }
}

/// A payout that failed, or (since rules 10) was paid and returned by
/// the bank: its entry (`entry_id`) is reversed by `reversal_id` and its
/// batches may be paid out again. What it names is
/// the payout's, resolved before submission. Since rules 4, what the
/// money back at the processor covers of what the tenant owes it (a
/// batch's shortfall) is paid down at once by `netting_id`, so the
/// processor never holds money of the tenant's while the tenant owes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkPayoutFailed {
    pub payout_id: Uuid,
    pub reason: Option<String>,
    pub batches: Vec<String>,
    pub entry_id: EntryId,
    pub reversal_id: EntryId,
    pub processor: String,
    pub bank_account: String,
    pub asset: Asset,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netting_id: Option<EntryId>,
}

impl MarkPayoutFailed {
    /// Since rules 4: pays down, Dr `processor_payable:<p>` / Cr
    /// `processor_balance:<p>`, as much of what is owed as the balance
    /// now holds (the entry `netting_id`).
    fn net_owed(&self, decider: &mut Decider<'_>, at: DateTime<Utc>) -> Result<(), Refusal> {
        let Some(netting_id) = self.netting_id else {
            return Ok(());
        };
        let payable = accounts::processor_payable(&self.processor)
            .map_err(|_| super::invalid("processor", &self.processor))?;
        let balance = accounts::processor_balance(&self.processor)
            .map_err(|_| super::invalid("processor", &self.processor))?;
        let owed = settlements::owed(decider, &payable, &self.asset)?;
        // At most what one entry line holds: what is left is paid down
        // by the next batches, as any shortfall is.
        let amount = owed
            .min(settlements::room(decider, &balance, &self.asset)?)
            .min(i128::from(i64::MAX));
        if amount == 0 {
            return Ok(());
        }
        let amount =
            Amount::new(i64::try_from(amount).map_err(|_| Refusal::from(AmountError::Overflow))?)?;
        let lines = books::transfer_lines(&payable.code, &balance.code, &self.asset, amount);
        books::post(
            decider,
            netting_id,
            &lines,
            Some(format!("payout:{}", self.payout_id)),
            at,
        )
    }
}

impl Request for MarkPayoutFailed {
    const KIND: &'static str = "mark_payout_failed";

    fn targets(&self) -> Vec<Target> {
        let mut targets = targets(
            self.payout_id,
            &self.batches,
            &[self.entry_id, self.reversal_id],
            &self.processor,
            &self.bank_account,
            &self.asset,
        );
        if let (Some(netting_id), Ok(payable)) = (
            self.netting_id,
            accounts::processor_payable(&self.processor),
        ) {
            targets.push(Target::of::<EntryRecord>(netting_id.to_string()));
            targets.extend(books::money_targets([&payable.code], [&self.asset]));
        }
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        let named = decider
            .state::<Payout>(&self.payout_id.to_string())?
            .terms
            .as_ref()
            .map(|terms| terms.batches.clone());
        if named
            .as_ref()
            .is_some_and(|batches| *batches != self.batches)
        {
            return Err(Refusal::Internal(format!(
                "the request names other batches than payout {} pays out",
                self.payout_id
            )));
        }
        decider.execute::<Payout>(
            &self.payout_id.to_string(),
            PayoutCommand::MarkFailed {
                reason: self.reason.clone(),
                rules: decider.rules(),
                at,
            },
        )?;
        for batch in &self.batches {
            decider.execute::<Settlement>(
                batch,
                SettlementCommand::ReleasePayout {
                    payout_id: self.payout_id,
                    at,
                },
            )?;
        }
        let reversed = books::reverse(
            decider,
            self.entry_id,
            self.reversal_id,
            Some(format!("payout:{}", self.payout_id)),
        )?;
        let named: Vec<AccountCode> = payout_accounts(&self.processor, &self.bank_account)?
            .into_iter()
            .map(|account| account.code)
            .collect();
        if reversed.entry.postings().iter().any(|posting| {
            !named
                .iter()
                .any(|code| code.as_str() == posting.account.code)
        }) {
            return Err(Refusal::Internal(
                "the payout's entry posts to other accounts than the request names".into(),
            ));
        }
        if decider.rules().since(Rules::FOURTH) {
            self.net_owed(decider, at)?;
        }
        Reply::ok(
            self.payout_id.to_string(),
            &PayoutAnswer {
                payout_id: self.payout_id,
                status: "failed",
                amount: None,
                batches: None,
                reversal_id: Some(self.reversal_id),
            },
        )
    }
}
