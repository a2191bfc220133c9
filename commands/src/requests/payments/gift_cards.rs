//! Gift cards: sold and loaded for money taken (Dr `cash` / Cr
//! `gift_cards:<code>`), redeemed by gift card tenders (Dr
//! `gift_cards:<code>` / Cr `revenue`, in `AddTender`), never below zero.

use super::answers::GiftCardAnswer;
use super::open;
use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use crate::requests::books;
use aggregates::journal::account::LedgerAccount;
use aggregates::journal::entry::EntryRecord;
use aggregates::money::{Amount, Asset};
use aggregates::payments::accounts::{self, PaymentAccount};
use aggregates::payments::gift_card::{GiftCard, GiftCardCommand, GiftCardError};
use aggregates::EntryId;
use serde::{Deserialize, Serialize};

/// The account of gift card `code`.
pub(super) fn card_account(code: &str) -> Result<PaymentAccount, Refusal> {
    accounts::gift_card(code).map_err(|_| super::invalid("gift_card", code))
}

/// Refuses drawing `amount` of `asset` from gift card `code` unless the
/// card exists in `asset` and its account holds that much.
pub(super) fn check_redemption(
    decider: &Decider<'_>,
    code: &str,
    asset: &Asset,
    amount: Amount,
) -> Result<(), Refusal> {
    decider.state::<GiftCard>(code)?.in_currency(asset)?;
    let account = card_account(code)?;
    let balance = decider
        .state::<LedgerAccount>(account.code.as_str())?
        .balances
        .get(asset)
        .map_or(0, |balance| balance.available(account.spec.account_type));
    if balance < i128::from(amount.value()) {
        return Err(GiftCardError::Insufficient {
            balance,
            asked: amount,
        }
        .into());
    }
    Ok(())
}

/// Money taken for gift card `code`: Dr `cash` / Cr its account.
fn take(
    decider: &mut Decider<'_>,
    code: &str,
    entry_id: EntryId,
    asset: &Asset,
    amount: Amount,
) -> Result<(), Refusal> {
    let (cash, card) = (accounts::cash(), card_account(code)?);
    open(decider, &[&cash, &card])?;
    let lines = books::transfer_lines(&cash.code, &card.code, asset, amount);
    let at = decider.at();
    books::post(
        decider,
        entry_id,
        &lines,
        Some(format!("gift_card:{code}")),
        at,
    )
}

fn targets(code: &str, entry_id: EntryId, asset: &Asset) -> Vec<Target> {
    let mut targets = vec![
        Target::of::<GiftCard>(code),
        Target::of::<EntryRecord>(entry_id.to_string()),
    ];
    if let Ok(card) = card_account(code) {
        let codes = [accounts::cash().code, card.code];
        targets.extend(books::money_targets(codes.iter(), [asset]));
    }
    targets
}

/// Sells gift card `code` for `amount`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueGiftCard {
    pub code: String,
    pub asset: Asset,
    pub amount: Amount,
    pub entry_id: EntryId,
}

impl Request for IssueGiftCard {
    const KIND: &'static str = "issue_gift_card";

    fn targets(&self) -> Vec<Target> {
        targets(&self.code, self.entry_id, &self.asset)
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        decider.execute::<GiftCard>(
            &self.code,
            GiftCardCommand::Issue {
                asset: self.asset.clone(),
                amount: self.amount,
                at,
            },
        )?;
        take(decider, &self.code, self.entry_id, &self.asset, self.amount)?;
        Reply::created(
            self.code.clone(),
            &GiftCardAnswer {
                code: self.code.clone(),
                asset: self.asset.clone(),
                balance: self.amount.value(),
            },
        )
    }
}

/// Loads `amount` more onto gift card `code` (in its currency, `asset`,
/// resolved before submission).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadGiftCard {
    pub code: String,
    pub asset: Asset,
    pub amount: Amount,
    pub entry_id: EntryId,
}

impl Request for LoadGiftCard {
    const KIND: &'static str = "load_gift_card";

    fn targets(&self) -> Vec<Target> {
        targets(&self.code, self.entry_id, &self.asset)
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        decider.execute::<GiftCard>(
            &self.code,
            GiftCardCommand::Load {
                amount: self.amount,
                at,
            },
        )?;
        decider
            .state::<GiftCard>(&self.code)?
            .in_currency(&self.asset)?;
        take(decider, &self.code, self.entry_id, &self.asset, self.amount)?;
        let card = card_account(&self.code)?;
        let balance = decider
            .state::<LedgerAccount>(card.code.as_str())?
            .balances
            .get(&self.asset)
            .map_or(0, |balance| balance.available(card.spec.account_type));
        Reply::ok(
            self.code.clone(),
            &GiftCardAnswer {
                code: self.code.clone(),
                asset: self.asset.clone(),
                balance: i64::try_from(balance)
                    .map_err(|_| Refusal::from(aggregates::money::AmountError::Overflow))?,
            },
        )
    }
}
