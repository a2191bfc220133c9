//! Payment requests: creating an intent, tendering, capturing, canceling,
//! expiring authorizations (the scheduler's), refunding (`refunds`) and
//! disputes (`disputes`), each deciding
//! the payment aggregate and moving the money in the journal through
//! `books`, on the fixed accounts of `aggregates::payments::accounts`.
//!
//! - An authorization reserves Dr `receivable:<processor>` / Cr `revenue`
//!   under the hold id the payment keeps; each capture settles it (the
//!   captured part posted as an entry, the capture's id) and reserves what
//!   is left under a new one; a last capture, a cancel or an expiry
//!   releases the rest.
//! - Cash is captured as it is taken: Dr `cash` / Cr `revenue`; so is any
//!   tender of an automatic-capture payment (Dr its receivable).
//! - A refund posts Dr `refunds` / Cr each tender's account it draws from.
//!
//! Everything a decision reads besides its targets is resolved into the
//! request before it is submitted (the payment's asset, its tenders'
//! processors), and checked against the payment again in the decision.

mod answers;
mod disputes;
mod gift_cards;
mod payouts;
mod refunds;
mod settlements;

pub use answers::{
    BreakAnswer, BreakResolvedAnswer, CaptureAnswer, DisputeAnswer, GiftCardAnswer, PaymentAnswer,
    PayoutAnswer, RefundAnswer, SettlementAnswer, TenderAnswer,
};
pub use disputes::{CloseDispute, OpenDispute, SubmitEvidence, DISPUTE_ENTITY};
pub use gift_cards::{IssueGiftCard, LoadGiftCard};
pub use payouts::{CreatePayout, MarkPayoutFailed, MarkPayoutPaid};
pub use refunds::{FailRefund, RefundPayment, REFUND_ENTITY};
pub use settlements::{
    reference_kind, settlement_id, ImportSettlement, ResolveBreak, BREAK_ENTITY,
};

use super::books;
use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use aggregates::ids::{CaptureId, PaymentId, TenderId};
use aggregates::journal::account::AccountCode;
use aggregates::journal::entry::EntryRecord;
use aggregates::journal::hold::PendingTransfer;
use aggregates::money::{Amount, Asset};
use aggregates::payments::accounts::{self, PaymentAccount};
use aggregates::payments::reference::{
    reference_id, Owner, ProcessorReference, ReferenceCommand, ReferenceError, ReferenceKind,
};
use aggregates::payments::settlement::Item;
use aggregates::payments::{
    IntentTerms, Payment, PaymentCommand, PaymentEvent, Tender, TenderMethod, TenderSource,
};
use aggregates::rules::Rules;
use aggregates::{EntryId, HoldId, RejectionKind};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Refused: a name that makes no account code.
pub(super) fn invalid(field: &str, value: &str) -> Refusal {
    Refusal::Rejected {
        kind: RejectionKind::Invalid,
        code: format!("invalid_{field}"),
        message: format!("{field} {value:?} names no account (1-200 of A-Za-z0-9_.:@/-)"),
        details: json!({ field: value }),
    }
}

/// The account a tender's money comes from.
pub fn source_account(source: &TenderSource) -> Result<PaymentAccount, Refusal> {
    match source {
        TenderSource::Processor { processor, .. } => {
            accounts::receivable(processor).map_err(|_| invalid("processor", processor))
        }
        TenderSource::Cash => Ok(accounts::cash()),
        TenderSource::GiftCard { code } => {
            accounts::gift_card(code).map_err(|_| invalid("gift_card", code))
        }
    }
}

/// Opens each of `accounts` as payments fix them (nothing when open
/// already as the same).
pub(super) fn open(decider: &mut Decider<'_>, accounts: &[&PaymentAccount]) -> Result<(), Refusal> {
    for account in accounts {
        books::open(decider, &account.code, account.spec)?;
    }
    Ok(())
}

/// The payment `payment_id`, and its asset checked against the one the
/// request was resolved with.
pub(super) fn payment<'a>(
    decider: &'a Decider<'_>,
    payment_id: PaymentId,
    asset: Option<&Asset>,
) -> Result<&'a Payment, Refusal> {
    let payment = decider.state::<Payment>(&payment_id.to_string())?;
    if let (Some(intent), Some(asset)) = (&payment.intent, asset) {
        if intent.terms.asset != *asset {
            return Err(Refusal::Stale(format!(
                "the request names {asset}, payment {payment_id} is in {}",
                intent.terms.asset
            )));
        }
    }
    Ok(payment)
}

/// The target of `reference` of `processor`, of `kind`.
pub(super) fn reference_target(kind: ReferenceKind, processor: &str, reference: &str) -> Target {
    Target::of::<ProcessorReference>(reference_id(kind, processor, reference))
}

/// Checks that `reference` of `processor` names no other tender's charge:
/// a capture may go by its own charge's reference (the processor knows a
/// single capture by it), never by another's (`reference_taken`).
fn not_another_charge(
    decider: &Decider<'_>,
    (processor, reference): (&str, &str),
    payment_id: PaymentId,
    tender_id: TenderId,
) -> Result<(), Refusal> {
    let charge = decider.state::<ProcessorReference>(&reference_id(
        ReferenceKind::Charge,
        processor,
        reference,
    ))?;
    // A charge claimed under the first rules names its payment only: since
    // the third, it is its own tenders' (those of the payment charged by
    // it), never another tender's.
    let another_tenders = |owner: &Owner| -> Result<bool, Refusal> {
        if let Some(charged) = owner.tender_id {
            return Ok(charged != tender_id);
        }
        if !decider.rules().since(Rules::THIRD) {
            return Ok(false);
        }
        let payment = decider.state::<Payment>(&payment_id.to_string())?;
        let charged_by = |tender: &&aggregates::payments::Tender| {
            matches!(&tender.source, TenderSource::Processor { processor: p, reference: r }
                if p == processor && r == reference)
        };
        let own = payment
            .tender(tender_id)
            .is_some_and(|tender| charged_by(&tender));
        Ok(!own && payment.tenders.iter().any(|tender| charged_by(&tender)))
    };
    match &charge.owner {
        Some(owner) if owner.payment_id != payment_id || another_tenders(owner)? => {
            Err(ReferenceError::Taken {
                owner: owner.clone(),
            }
            .into())
        }
        _ => Ok(()),
    }
}

/// Claims `reference` of `processor`, of `kind`, for `owner`: refused
/// (`reference_taken`) when something else holds it.
pub(super) fn claim(
    decider: &mut Decider<'_>,
    kind: ReferenceKind,
    processor: &str,
    reference: &str,
    owner: Owner,
) -> Result<(), Refusal> {
    let at = decider.at();
    decider.execute::<ProcessorReference>(
        &reference_id(kind, processor, reference),
        ReferenceCommand::Claim { owner, at },
    )?;
    Ok(())
}

/// The processor whose receivable `code` is, if it is one.
pub(super) fn processor_of(code: &AccountCode) -> Option<&str> {
    code.as_str().strip_prefix("receivable:")
}

fn answer(decider: &Decider<'_>, payment_id: PaymentId) -> Result<PaymentAnswer, Refusal> {
    Ok(PaymentAnswer {
        payment_id,
        status: decider.state::<Payment>(&payment_id.to_string())?.status(),
    })
}

/// Creates a payment intent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    pub payment_id: PaymentId,
    pub terms: IntentTerms,
}

impl CreatePayment {
    /// Refused (`unknown_payee`, since rules 8) when the payee the payment
    /// is attributed to is not created yet: its commission's process
    /// manager, reacting to the capture, would be refused for good or not
    /// depending on how far it lags behind the payee's creation.
    fn payee_exists(&self, decider: &Decider<'_>) -> Result<(), Refusal> {
        let Some(payee_id) = self.terms.payee.as_deref() else {
            return Ok(());
        };
        let payee = decider.state::<aggregates::compensation::Payee>(payee_id)?;
        if payee.profile.is_some() {
            return Ok(());
        }
        Err(Refusal::Rejected {
            kind: aggregates::RejectionKind::RuleBroken,
            code: "unknown_payee".into(),
            message: format!("no payee {payee_id}: create it before attributing a sale to it"),
            details: serde_json::json!({ "payee_id": payee_id }),
        })
    }
}

impl Request for CreatePayment {
    const KIND: &'static str = "create_payment";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![Target::of::<Payment>(self.payment_id.to_string())];
        targets.extend(books::money_targets([], [&self.terms.asset]));
        targets.extend(
            self.terms
                .payee
                .clone()
                .map(Target::of::<aggregates::compensation::Payee>),
        );
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        if decider.rules().since(aggregates::rules::Rules::EIGHTH) {
            self.payee_exists(decider)?;
        }
        // The payment's currency keeps one scale in the tenant.
        books::use_assets(decider, [&self.terms.asset])?;
        decider.execute::<Payment>(
            &self.payment_id.to_string(),
            PaymentCommand::Create {
                terms: self.terms.clone(),
                at,
            },
        )?;
        Reply::created(
            self.payment_id.to_string(),
            &answer(decider, self.payment_id)?,
        )
    }
}

/// Tenders part or all of a payment: a card or bank transfer through a
/// processor (authorized, reserved until captured), or cash or a gift card
/// (captured as it is taken; a gift card never below zero). `asset` is the payment's, resolved before submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddTender {
    pub payment_id: PaymentId,
    pub tender_id: TenderId,
    pub method: TenderMethod,
    pub source: TenderSource,
    pub amount: Amount,
    pub asset: Asset,
}

impl AddTender {
    fn accounts(&self) -> Result<[PaymentAccount; 2], Refusal> {
        Ok([source_account(&self.source)?, accounts::revenue()])
    }
}

impl Request for AddTender {
    const KIND: &'static str = "add_tender";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![
            Target::of::<Payment>(self.payment_id.to_string()),
            Target::of::<EntryRecord>(self.tender_id.to_string()),
        ];
        if let Ok(accounts) = self.accounts() {
            targets.extend(books::money_targets(
                accounts.iter().map(|account| &account.code),
                [&self.asset],
            ));
        }
        match &self.source {
            TenderSource::GiftCard { code } => targets.push(Target::of::<
                aggregates::payments::gift_card::GiftCard,
            >(code.as_str())),
            TenderSource::Processor {
                processor,
                reference,
            } => {
                // A tender captured as it is taken settles under its
                // charge's reference.
                targets.push(reference_target(
                    ReferenceKind::Charge,
                    processor,
                    reference,
                ));
                targets.push(reference_target(
                    ReferenceKind::Capture,
                    processor,
                    reference,
                ));
            }
            TenderSource::Cash => {}
        }
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        if let TenderSource::GiftCard { code } = &self.source {
            gift_cards::check_redemption(decider, code, &self.asset, self.amount)?;
        }
        payment(decider, self.payment_id, Some(&self.asset))?;
        let [from, revenue] = self.accounts()?;
        // A tender captured as it is taken: its capture and entry share
        // its id.
        let capture_id = CaptureId::from_uuid(self.tender_id.as_uuid());
        let hold_id = HoldId::from_uuid(decider.derive_id("authorization"));
        let events = decider.execute::<Payment>(
            &self.payment_id.to_string(),
            PaymentCommand::Tender {
                tender_id: self.tender_id,
                method: self.method,
                source: self.source.clone(),
                amount: self.amount,
                capture_id,
                hold_id,
                at,
            },
        )?;
        if let TenderSource::Processor {
            processor,
            reference,
        } = &self.source
        {
            // Under the first rules a charge's claim named its payment only.
            let tender = decider.rules().since(Rules::SECOND);
            let owner = Owner::charge(self.payment_id, tender.then_some(self.tender_id));
            claim(decider, ReferenceKind::Charge, processor, reference, owner)?;
        }
        open(decider, &[&from, &revenue])?;
        let transfer = PendingTransfer {
            debit: from.code.clone(),
            credit: revenue.code.clone(),
            asset: self.asset.clone(),
            amount: self.amount,
        };
        let mut captured = None;
        for event in &events {
            match event {
                PaymentEvent::TenderAuthorized {
                    hold_id: Some(hold_id),
                    ..
                } => books::reserve(decider, *hold_id, &transfer)?,
                PaymentEvent::Captured { capture_id, .. } => {
                    post(decider, *capture_id, &transfer, None, at)?;
                    captured = Some(*capture_id);
                    if let TenderSource::Processor {
                        processor,
                        reference,
                    } = &self.source
                    {
                        let owner = Owner::of(
                            self.payment_id,
                            Item::Capture {
                                capture_id: *capture_id,
                            },
                        );
                        claim(decider, ReferenceKind::Capture, processor, reference, owner)?;
                    }
                }
                _ => {}
            }
        }
        let answer = TenderAnswer {
            payment_id: self.payment_id,
            tender_id: self.tender_id,
            status: if captured.is_some() {
                "captured"
            } else {
                "authorized"
            },
            capture_id: captured,
            payment_status: decider
                .state::<Payment>(&self.payment_id.to_string())?
                .status(),
        };
        decider.index::<Payment>(
            TENDER_ENTITY,
            self.tender_id.to_string(),
            &self.payment_id.to_string(),
        );
        Reply::created(self.payment_id.to_string(), &answer)
    }
}

/// The entity index's name for tenders (found by their own id).
pub const TENDER_ENTITY: &str = "tender";

/// Posts `transfer` (its amount) as the entry of capture `capture_id`.
fn post(
    decider: &mut Decider<'_>,
    capture_id: CaptureId,
    transfer: &PendingTransfer,
    reference: Option<String>,
    at: DateTime<Utc>,
) -> Result<(), Refusal> {
    let lines = books::transfer_lines(
        &transfer.debit,
        &transfer.credit,
        &transfer.asset,
        transfer.amount,
    );
    books::post(
        decider,
        EntryId::from_uuid(capture_id.as_uuid()),
        &lines,
        reference,
        at,
    )
}

/// The tender `tender_id` of the payment, with the receivable/revenue
/// transfer its reservation holds (of `amount`).
fn authorization(
    payment: &Payment,
    tender_id: TenderId,
    amount: Amount,
) -> Result<Option<(Tender, PendingTransfer)>, Refusal> {
    let (Some(intent), Some(tender)) = (&payment.intent, payment.tender(tender_id)) else {
        return Ok(None);
    };
    let from = source_account(&tender.source)?;
    let transfer = PendingTransfer {
        debit: from.code,
        credit: accounts::revenue().code,
        asset: intent.terms.asset.clone(),
        amount,
    };
    Ok(Some((tender.clone(), transfer)))
}

/// The accounts a tender through `processor` reserves on.
fn authorization_targets(processor: &str, asset: Option<&Asset>) -> Vec<Target> {
    let Ok(receivable) = accounts::receivable(processor) else {
        return Vec::new();
    };
    let codes = [receivable.code, accounts::revenue().code];
    books::money_targets(codes.iter(), asset)
}

/// Captures part or all of a tender's authorization. `processor` and
/// `asset` are the tender's and the payment's, resolved before submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapturePayment {
    pub payment_id: PaymentId,
    pub tender_id: TenderId,
    pub capture_id: CaptureId,
    pub amount: Amount,
    pub reference: Option<String>,
    pub last: bool,
    pub processor: String,
    pub asset: Asset,
}

impl Request for CapturePayment {
    const KIND: &'static str = "capture_payment";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![
            Target::of::<Payment>(self.payment_id.to_string()),
            Target::of::<EntryRecord>(self.capture_id.to_string()),
        ];
        targets.extend(authorization_targets(&self.processor, Some(&self.asset)));
        if let Some(reference) = &self.reference {
            for kind in [ReferenceKind::Capture, ReferenceKind::Charge] {
                targets.push(reference_target(kind, &self.processor, reference));
            }
        }
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        let before = payment(decider, self.payment_id, Some(&self.asset))?;
        let reserved = match before.tender(self.tender_id) {
            Some(tender) => tender.uncaptured()?,
            None => Amount::ZERO,
        };
        let authorization = authorization(before, self.tender_id, reserved)?;
        if let Some((tender, _)) = &authorization {
            let processor = tender.source.processor().unwrap_or_default();
            if processor != self.processor && tender.method.through_processor() {
                return Err(Refusal::Stale(format!(
                    "the request names processor {}, tender {} is {processor}",
                    self.processor, self.tender_id
                )));
            }
        }
        let next_hold_id = HoldId::from_uuid(decider.derive_id("authorization"));
        let events = decider.execute::<Payment>(
            &self.payment_id.to_string(),
            PaymentCommand::Capture {
                tender_id: self.tender_id,
                capture_id: self.capture_id,
                amount: self.amount,
                reference: self.reference.clone(),
                last: self.last,
                next_hold_id,
                rules: decider.rules(),
                at,
            },
        )?;
        let Some((_, transfer)) = authorization else {
            return Err(Refusal::Internal("a capture of no tender".into()));
        };
        if let Some(reference) = &self.reference {
            if decider.rules().since(Rules::SECOND) {
                let named = (self.processor.as_str(), reference.as_str());
                not_another_charge(decider, named, self.payment_id, self.tender_id)?;
            }
            let owner = Owner::of(
                self.payment_id,
                Item::Capture {
                    capture_id: self.capture_id,
                },
            );
            claim(
                decider,
                ReferenceKind::Capture,
                &self.processor,
                reference,
                owner,
            )?;
        }
        let mut released = Amount::ZERO;
        for event in &events {
            if let PaymentEvent::Captured {
                settled_hold_id,
                next_hold_id,
                released: rest,
                ..
            } = event
            {
                released = *rest;
                if let Some(settled) = settled_hold_id {
                    let entry = EntryId::from_uuid(self.capture_id.as_uuid());
                    books::settle(
                        decider,
                        *settled,
                        &transfer,
                        self.amount,
                        Some((entry, self.reference.clone())),
                        at,
                    )?;
                }
                if let Some(next) = next_hold_id {
                    let left = PendingTransfer {
                        amount: transfer.amount.checked_sub(self.amount)?,
                        ..transfer.clone()
                    };
                    books::reserve(decider, *next, &left)?;
                }
            }
        }
        decider.index::<Payment>(
            CAPTURE_ENTITY,
            self.capture_id.to_string(),
            &self.payment_id.to_string(),
        );
        let answer = CaptureAnswer {
            payment_id: self.payment_id,
            tender_id: self.tender_id,
            capture_id: self.capture_id,
            amount: self.amount,
            released,
            status: decider
                .state::<Payment>(&self.payment_id.to_string())?
                .status(),
        };
        Reply::created(self.payment_id.to_string(), &answer)
    }
}

/// The entity index's name for captures.
pub const CAPTURE_ENTITY: &str = "capture";

/// Releases the reservation of each of `released` (tender, amount) of the
/// payment as it was `before`.
fn release(
    decider: &mut Decider<'_>,
    before: &Payment,
    released: &[(TenderId, Amount)],
    at: DateTime<Utc>,
) -> Result<(), Refusal> {
    for (tender_id, amount) in released {
        let Some((tender, transfer)) = authorization(before, *tender_id, *amount)? else {
            continue;
        };
        if let Some(hold_id) = tender.hold_id {
            books::settle(decider, hold_id, &transfer, Amount::ZERO, None, at)?;
        }
    }
    Ok(())
}

/// Cancels a payment before anything is captured: every open
/// authorization is voided. `processors` are its tenders', resolved
/// before submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelPayment {
    pub payment_id: PaymentId,
    pub processors: Vec<String>,
}

impl Request for CancelPayment {
    const KIND: &'static str = "cancel_payment";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![Target::of::<Payment>(self.payment_id.to_string())];
        for processor in &self.processors {
            targets.extend(authorization_targets(processor, None));
        }
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        let before = payment(decider, self.payment_id, None)?.clone();
        // Every processor whose authorization it may void was resolved
        // (its receivable is a target).
        for tender in &before.tenders {
            if let TenderSource::Processor { processor, .. } = &tender.source {
                if !self.processors.contains(processor) {
                    return Err(Refusal::Stale(format!(
                        "the request does not name processor {processor}"
                    )));
                }
            }
        }
        let events = decider
            .execute::<Payment>(&self.payment_id.to_string(), PaymentCommand::Cancel { at })?;
        for event in &events {
            if let PaymentEvent::PaymentCanceled { released, .. } = event {
                release(decider, &before, released, at)?;
            }
        }
        Reply::ok(
            self.payment_id.to_string(),
            &answer(decider, self.payment_id)?,
        )
    }
}

/// Expires a tender's authorization at its expiry (the scheduler submits
/// it then, carrying that time): what was not captured is released.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireAuthorization {
    pub payment_id: PaymentId,
    pub tender_id: TenderId,
    pub processor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
}

impl Request for ExpireAuthorization {
    const KIND: &'static str = "expire_authorization";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![Target::of::<Payment>(self.payment_id.to_string())];
        targets.extend(authorization_targets(&self.processor, None));
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at_due(self.due_at)?;
        let before = payment(decider, self.payment_id, None)?.clone();
        let events = decider.execute::<Payment>(
            &self.payment_id.to_string(),
            PaymentCommand::ExpireAuthorization {
                tender_id: self.tender_id,
                at,
            },
        )?;
        for event in &events {
            if let PaymentEvent::AuthorizationExpired {
                tender_id,
                released,
                ..
            } = event
            {
                release(decider, &before, &[(*tender_id, *released)], at)?;
            }
        }
        Reply::ok(
            self.payment_id.to_string(),
            &answer(decider, self.payment_id)?,
        )
    }
}

/// The scheduled work of tender `tender_id`: its authorization's expiry.
pub fn authorization_expiry(tender_id: TenderId) -> String {
    format!("tender:{tender_id}:expiry")
}

/// What a payment event schedules: an authorization's expiry at its time;
/// its close (captured in full or last, canceled, expired) settles it.
fn schedule(
    event: &eventstore::StoredEvent,
) -> Result<Vec<projections::scheduled::ScheduleChange>, projections::ApplyError> {
    use crate::scheduler::{due, settled};
    let payment_id = || {
        event
            .aggregate_id
            .parse::<PaymentId>()
            .map_err(|error| projections::ApplyError::Event {
                tenant_seq: event.tenant_seq,
                message: format!("payment id {}: {error}", event.aggregate_id),
            })
    };
    Ok(match projections::decode::decode::<Payment>(event)? {
        PaymentEvent::TenderAuthorized {
            tender_id,
            source: TenderSource::Processor { processor, .. },
            expires_at,
            hold_id: Some(_),
            ..
        } => vec![due(
            authorization_expiry(tender_id),
            expires_at,
            &ExpireAuthorization {
                payment_id: payment_id()?,
                tender_id,
                processor,
                due_at: Some(expires_at),
            },
        )?],
        PaymentEvent::Captured {
            tender_id,
            settled_hold_id: Some(_),
            next_hold_id: None,
            ..
        }
        | PaymentEvent::AuthorizationExpired { tender_id, .. } => {
            vec![settled(authorization_expiry(tender_id))]
        }
        PaymentEvent::PaymentCanceled { released, .. } => released
            .iter()
            .map(|(tender_id, _)| settled(authorization_expiry(*tender_id)))
            .collect(),
        _ => Vec::new(),
    })
}

/// A payment as a replay reports it.
fn report(payment_id: &str, payment: &Payment) -> serde_json::Value {
    let Some(intent) = &payment.intent else {
        return serde_json::Value::Null;
    };
    json!({
        "payment_id": payment_id,
        "status": payment.status(),
        "amount": intent.terms.amount,
        "asset": intent.terms.asset,
        "captured": payment.captured().ok(),
        "refunded": payment.refunded().ok(),
        "tenders": payment.tenders.len(),
        "disputes": payment.disputes.len(),
    })
}

/// The payments domain: intents, tenders, captures, cancels, expiries and
/// refunds, moving money in the journal.
pub fn domain() -> crate::domains::Domain {
    use crate::domains::{Domain, RequestKind, Section};
    use crate::pipeline::AggregateKind;
    Domain {
        name: "payments",
        aggregates: vec![
            AggregateKind::of::<Payment>(),
            AggregateKind::of::<aggregates::payments::gift_card::GiftCard>(),
            AggregateKind::of::<ProcessorReference>(),
            AggregateKind::of::<aggregates::payments::settlement::Settlement>(),
            AggregateKind::of::<aggregates::payments::payout::Payout>(),
        ],
        requests: vec![
            RequestKind::of::<CreatePayment>(),
            RequestKind::of::<AddTender>(),
            RequestKind::of::<CapturePayment>(),
            RequestKind::of::<CancelPayment>(),
            RequestKind::of::<ExpireAuthorization>(),
            RequestKind::of::<RefundPayment>(),
            RequestKind::of::<FailRefund>(),
            RequestKind::of::<OpenDispute>(),
            RequestKind::of::<SubmitEvidence>(),
            RequestKind::of::<CloseDispute>(),
            RequestKind::of::<IssueGiftCard>(),
            RequestKind::of::<LoadGiftCard>(),
            RequestKind::of::<ImportSettlement>(),
            RequestKind::of::<ResolveBreak>(),
            RequestKind::of::<CreatePayout>(),
            RequestKind::of::<MarkPayoutPaid>(),
            RequestKind::of::<MarkPayoutFailed>(),
        ],
        projections: vec![std::sync::Arc::new(projections::payments::Payments)],
        process_managers: Vec::new(),
        reactions: Vec::new(),
        schedules: vec![projections::scheduled::ScheduleReader {
            aggregate_type: aggregates::payments::PAYMENT_AGGREGATE,
            events: &[
                "TenderAuthorized",
                "Captured",
                "AuthorizationExpired",
                "PaymentCanceled",
            ],
            read: schedule,
        }],
        routes: crate::http::payments::router,
        tags: crate::http::payments::tags(),
        sections: vec![Section {
            name: "payments",
            aggregate_type: aggregates::payments::PAYMENT_AGGREGATE,
            one: false,
            report: |payment_id, state, _| match state.as_any().downcast_ref::<Payment>() {
                Some(payment) => report(payment_id, payment),
                None => serde_json::Value::Null,
            },
        }],
    }
}
