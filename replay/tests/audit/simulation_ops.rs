//! The simulation's commands beyond its first domains: the journal's own
//! accounts, entries, reversals and holds (expiring by the scheduler);
//! subscriptions (renewed by the scheduler) and seats; a payment's
//! refunds, disputes and settlement batches (refunds and lost disputes
//! clawed back by the commissions process manager), gift cards (their
//! tenders refunded) and payouts; an escrow commitment's claims and
//! cancel; grants revoked; and compensation's adjustment lines and pay
//! runs (created, approved, reopened, canceled, paid). Each
//! mostly valid, some refused by a rule, aimed at what the script created
//! whether or not the ledger accepted it.

use super::{amount, id, usd, Op, Rng};
use aggregates::compensation::RunTerms;
use aggregates::escrow::ClaimOutcome;
use aggregates::ids::CommitmentId;
use aggregates::ids::{CaptureId, ClaimId, DisputeId, PaymentId, RefundId, TenderId, TransferId};
use aggregates::ids::{LineId, PayRunId};
use aggregates::journal::account::{AccountCode, AccountSpec};
use aggregates::journal::hold::PendingTransfer;
use aggregates::journal::{AccountType, Side};
use aggregates::payments::payout::PayoutTerms;
use aggregates::payments::settlement::{Line, LineType};
use aggregates::payments::{DisputeOutcome, TenderMethod, TenderSource};
use aggregates::plan::PlanCatalog;
use aggregates::quota::QuotaAccount;
use aggregates::quota::QuotaType;
use aggregates::subscription::CancelAt;
use aggregates::{EntryId, HoldId};
use aggregates::{GrantId, TenantId};
use chrono::{DateTime, Duration, Utc};
use commands::requests::compensation::{
    AdjustLine, ApprovePayRun, CancelPayRun, CreatePayRun, PayPayRun, ReopenPayRun,
};
use commands::requests::escrow::{CancelCommitment, ClaimMilestone, ResolveClaim};
use commands::requests::journal::{
    EntryLine, OpenAccount, PlaceHold, PostEntry, Resolve, ResolveHold, ReverseEntry,
};
use commands::requests::payments::{
    AddTender, CloseDispute, CreatePayout, FailRefund, ImportSettlement, IssueGiftCard,
    LoadGiftCard, MarkPayoutFailed, MarkPayoutPaid, OpenDispute, RefundPayment,
};
use commands::requests::quota::ChangeSeats;
use commands::requests::quota::RevokeGrant;
use commands::requests::subscription::{CancelSubscription, ChangePlan, Subscribe};
use eventstore::IdempotencyKey;
use std::collections::BTreeSet;
use uuid::Uuid;

/// The journal's own accounts of the script: (code, type, no overdraft).
const ACCOUNTS: [(&str, AccountType, bool); 3] = [
    ("sim:cash", AccountType::Asset, false),
    ("sim:wallet", AccountType::Liability, true),
    ("sim:sales", AccountType::Revenue, false),
];

/// What the script knows of a tenant: what it created (whether or not the
/// ledger accepted it), to aim later commands at.
#[derive(Default)]
pub(super) struct Known {
    /// The tenant's id, from which the ids a request derives from its key
    /// are known before it is sent.
    pub(super) tenant_id: Option<TenantId>,
    /// Payments created: id, amount, whether its payee exists.
    pub(super) payments: Vec<(PaymentId, u64, bool)>,
    pub(super) commitments: Vec<CommitmentId>,
    /// Commitments a deposit was sent to.
    pub(super) deposited: Vec<CommitmentId>,
    pub(super) references: Vec<String>,
    /// Tenders of a payment's whole amount (captured as they are taken):
    /// payment, tender, charge reference, amount.
    pub(super) captures: Vec<(PaymentId, TenderId, String, u64)>,
    pub(super) disputes: Vec<(PaymentId, DisputeId)>,
    /// The journal's entries posted, with their lines.
    pub(super) entries: Vec<(EntryId, Vec<EntryLine>)>,
    pub(super) holds: Vec<(HoldId, PendingTransfer)>,
    /// The net of each settlement batch sent (the nth is `b_<n>`).
    pub(super) batch_nets: Vec<u64>,
    /// Escrow claims made: commitment, claim.
    pub(super) claims: Vec<(CommitmentId, ClaimId)>,
    /// Gift card codes sold.
    pub(super) gift_cards: Vec<String>,
    /// Payouts created: id, terms, entry.
    pub(super) payouts: Vec<(Uuid, PayoutTerms, EntryId)>,
    /// Every tender's payment and source account (card or gift card).
    pub(super) tendered: Vec<(PaymentId, AccountCode)>,
    /// Gift card tenders: payment, amount.
    pub(super) gift_tenders: Vec<(PaymentId, u64)>,
    /// Grants issued: id (derived from the key) and quota account.
    pub(super) grants: Vec<(GrantId, QuotaAccount)>,
    /// Refunds asked for: payment, refund.
    pub(super) refunds: Vec<(PaymentId, RefundId)>,
    /// Work and adjustment lines recorded: payee, line.
    pub(super) lines: Vec<(String, LineId)>,
    pub(super) pay_runs: Vec<PayRunId>,
    /// Pay runs the script approved (whether or not the ledger did).
    pub(super) approved: Vec<PayRunId>,
}

impl Known {
    pub(super) fn new(tenant_id: TenantId) -> Self {
        Self {
            tenant_id: Some(tenant_id),
            ..Self::default()
        }
    }

    /// The id a request sent under `key` derives with `label`.
    pub(super) fn derived(&self, key: &str, label: &str) -> Uuid {
        let key = IdempotencyKey::parse(key).unwrap();
        commands::pipeline::request::derive_id(self.tenant_id.unwrap(), &key, label)
    }
}

fn code(text: &str) -> AccountCode {
    AccountCode::parse(text).unwrap()
}

/// The processor's receivable, where every card tender of the script is.
pub(super) fn receivable() -> AccountCode {
    code("receivable:stripe")
}

/// Two of the script's journal accounts, by draw: now and then the same
/// one twice (refused).
fn two_accounts(rng: &mut Rng) -> (AccountCode, AccountCode) {
    let count = ACCOUNTS.len() as u64;
    let first = rng.below(count);
    let second = if rng.chance(5) {
        first
    } else {
        (first + 1 + rng.below(count - 1)) % count
    };
    (
        code(ACCOUNTS[first as usize].0),
        code(ACCOUNTS[second as usize].0),
    )
}

/// The requests that open the script's journal accounts (the setup's).
pub(super) fn open_accounts() -> Vec<Op> {
    ACCOUNTS
        .iter()
        .map(|(text, account_type, no_overdraft)| open_account(text, *account_type, *no_overdraft))
        .collect()
}

fn open_account(text: &str, account_type: AccountType, no_overdraft: bool) -> Op {
    let mut spec = AccountSpec::new(account_type);
    spec.flags.debits_must_not_exceed_credits = no_overdraft;
    Op::OpenAccount(OpenAccount {
        code: code(text),
        spec,
    })
}

/// An entry, a reversal, or a hold placed or resolved; or an account opened
/// (one of three, with its fixed type and flags: opened again, refused).
pub(super) fn journal_op(rng: &mut Rng, known: &mut Known, now: DateTime<Utc>) -> Op {
    match rng.below(6) {
        // Opened by the setup: refused.
        0 => {
            let (text, account_type, no_overdraft) =
                ACCOUNTS[rng.below(ACCOUNTS.len() as u64) as usize];
            open_account(text, account_type, no_overdraft)
        }
        1 | 2 => {
            // The same account on both sides, or an overdraft of the
            // wallet: refused.
            let (debit, credit) = two_accounts(rng);
            let value = amount(1 + rng.below(500));
            let lines = vec![
                EntryLine {
                    account: debit,
                    asset: usd(),
                    side: Side::Debit,
                    amount: value,
                },
                EntryLine {
                    account: credit,
                    asset: usd(),
                    side: Side::Credit,
                    amount: value,
                },
            ];
            // An entry's id again, with its lines (as a client repeating
            // itself under another key): refused, unless the first was.
            if let Some((entry_id, lines)) = rng.pick(&known.entries).cloned() {
                if rng.chance(5) {
                    return Op::Post(PostEntry {
                        entry_id,
                        lines,
                        effective_at: None,
                        reference: None,
                    });
                }
            }
            let entry_id = EntryId::from_uuid(id(rng));
            known.entries.push((entry_id, lines.clone()));
            Op::Post(PostEntry {
                entry_id,
                lines,
                effective_at: None,
                reference: None,
            })
        }
        3 => match rng.pick(&known.entries).cloned() {
            // Its mirror, as the route resolves it from the entry (which
            // has these lines, or is none).
            Some((entry_id, lines)) => Op::Reverse(ReverseEntry {
                entry_id,
                reversal_id: EntryId::from_uuid(id(rng)),
                lines,
                reference: None,
            }),
            None => place_hold(rng, known, now),
        },
        4 => place_hold(rng, known, now),
        _ => match rng.pick(&known.holds).cloned() {
            Some((hold_id, transfer)) => {
                let resolve = if rng.chance(60) {
                    Resolve::Post {
                        amount: rng
                            .chance(40)
                            .then(|| amount(1 + rng.below(transfer.amount.value() as u64))),
                        entry_id: EntryId::from_uuid(id(rng)),
                    }
                } else {
                    Resolve::Void
                };
                Op::Resolve(ResolveHold {
                    hold_id,
                    transfer,
                    resolve,
                    due_at: None,
                })
            }
            None => place_hold(rng, known, now),
        },
    }
}

/// A hold between two of the script's accounts, half of them expiring
/// within two days (the scheduler's).
fn place_hold(rng: &mut Rng, known: &mut Known, now: DateTime<Utc>) -> Op {
    let hold_id = HoldId::from_uuid(id(rng));
    let (debit, credit) = two_accounts(rng);
    let transfer = PendingTransfer {
        debit,
        credit,
        asset: usd(),
        amount: amount(1 + rng.below(300)),
    };
    known.holds.push((hold_id, transfer.clone()));
    Op::Hold(PlaceHold {
        hold_id,
        transfer,
        expires_at: rng
            .chance(50)
            .then(|| now + Duration::minutes(10 + rng.below(48 * 60) as i64)),
    })
}

/// A subscription to one of two plans, changed, or cancelled now or at its
/// period's end (renewals are the scheduler's).
pub(super) fn subscription_op(rng: &mut Rng) -> Op {
    let catalog = PlanCatalog::builtin();
    let plan = catalog
        .get(if rng.chance(50) {
            "team_v4"
        } else {
            "hobby_v3"
        })
        .unwrap()
        .clone();
    match rng.below(4) {
        0 | 1 => Op::Subscribe(Subscribe {
            plan,
            trial_ends_at: None,
        }),
        2 => Op::ChangePlan(ChangePlan { plan }),
        _ => Op::Cancel(CancelSubscription {
            at: if rng.chance(50) {
                CancelAt::Now
            } else {
                CancelAt::PeriodEnd
            },
        }),
    }
}

/// A refund of a captured tender (some past what was captured), a dispute
/// opened or closed, or a settlement batch of captures (some lines off by
/// a cent: breaks).
pub(super) fn after_capture_op(rng: &mut Rng, known: &mut Known, now: DateTime<Utc>) -> Op {
    let Some(&(payment_id, tender_id, _, value)) = rng.pick(&known.captures) else {
        return subscription_op(rng);
    };
    let capture_id = CaptureId::from_uuid(tender_id.as_uuid());
    match rng.below(6) {
        0 | 1 => {
            // Some of a payment tendered by gift card (with or without a
            // card's capture besides).
            let (payment_id, value) = match rng.pick(&known.gift_tenders) {
                Some(&gift) if rng.chance(30) => gift,
                _ => (payment_id, value),
            };
            let refund_id = RefundId::from_uuid(id(rng));
            known.refunds.push((payment_id, refund_id));
            Op::Refund(RefundPayment {
                payment_id,
                refund_id,
                amount: amount(1 + rng.below(value + 1)),
                tender_id: None,
                reference: Some(format!("re_{}", rng.next())),
                reason: None,
                accounts: tender_accounts(known, payment_id),
                asset: usd(),
            })
        }
        2 => {
            let dispute_id = DisputeId::from_uuid(id(rng));
            known.disputes.push((payment_id, dispute_id));
            Op::Dispute(OpenDispute {
                payment_id,
                dispute_id,
                capture_id,
                amount: amount(1 + rng.below(value)),
                fee: amount(1_500),
                reference: Some(format!("dp_{}", rng.next())),
                reason: None,
                account: receivable(),
                asset: usd(),
            })
        }
        3 => match rng.pick(&known.disputes).copied() {
            Some((payment_id, dispute_id)) => Op::CloseDispute(CloseDispute {
                payment_id,
                dispute_id,
                outcome: if rng.chance(50) {
                    DisputeOutcome::Won
                } else {
                    DisputeOutcome::Lost
                },
                entry_id: EntryId::from_uuid(id(rng)),
                account: receivable(),
                asset: usd(),
            }),
            None => subscription_op(rng),
        },
        // A refund failed (its processor could not pay it out): its entry
        // reversed, and the commission it clawed back given back by the
        // process manager (some not pending any more: refused).
        5 if !known.refunds.is_empty() => {
            let &(payment_id, refund_id) = rng.pick(&known.refunds).unwrap();
            let mut accounts = tender_accounts(known, payment_id);
            accounts.push(aggregates::payments::accounts::refunds().code);
            accounts.sort();
            Op::FailRefund(FailRefund {
                payment_id,
                refund_id,
                reversal_id: EntryId::from_uuid(id(rng)),
                reason: Some("returned by the bank".into()),
                accounts,
                asset: usd(),
            })
        }
        _ => settlement(rng, known, now),
    }
}

/// The accounts of every tender sent for `payment_id`, as the route
/// resolves them from the payment's tenders (a refused tender's too: the
/// request names more, which changes nothing).
fn tender_accounts(known: &Known, payment_id: PaymentId) -> Vec<AccountCode> {
    let codes: BTreeSet<AccountCode> = known
        .tendered
        .iter()
        .filter(|(tendered, _)| *tendered == payment_id)
        .map(|(_, code)| code.clone())
        .collect();
    codes.into_iter().collect()
}

/// A batch of up to three of the captures, each line naming its charge's
/// reference (a tender captured as it is taken settles under it).
fn settlement(rng: &mut Rng, known: &mut Known, now: DateTime<Utc>) -> Op {
    let mut lines = Vec::new();
    let mut payments = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let &(payment_id, _, ref reference, value) = rng.pick(&known.captures).unwrap();
        let gross = value as i64 + i64::from(rng.chance(10));
        lines.push(Line {
            line_type: LineType::Capture,
            reference: reference.clone(),
            gross,
            fee: 30,
            net: gross - 30,
        });
        payments.push(Some(payment_id));
    }
    known
        .batch_nets
        .push(lines.iter().map(|line| line.net as u64).sum());
    Op::Settle(ImportSettlement {
        processor: "stripe".into(),
        batch_id: format!("b_{}", known.batch_nets.len()),
        asset: usd(),
        settled_at: now,
        lines,
        payments,
        entry_id: EntryId::from_uuid(id(rng)),
    })
}

/// An escrow commitment cancelled: what is held back to the payer.
pub(super) fn cancel_commitment(rng: &mut Rng, known: &Known, tenant: usize) -> Option<Op> {
    let &commitment_id = rng.pick(&known.commitments)?;
    Some(Op::CancelCommitment(CancelCommitment {
        commitment_id,
        transfer_id: TransferId::from_uuid(id(rng)),
        parties: super::parties(tenant),
    }))
}

/// Seats allocated or released on the tenant's seats (a subscription's):
/// past what is granted, or released past what is allocated, refused.
pub(super) fn seats_op(rng: &mut Rng) -> Op {
    Op::Seats(ChangeSeats {
        account: None,
        amount: amount(1 + rng.below(3)),
        release: rng.chance(40),
    })
}

/// A claim on a milestone (some the payer's rejection), or a claim
/// resolved: released, refunded or split.
pub(super) fn claim_op(rng: &mut Rng, known: &mut Known, tenant: usize) -> Option<Op> {
    // Mostly one deposited to: a claim freezes held funds.
    let &commitment_id = match rng.pick(&known.deposited) {
        Some(deposited) if rng.chance(80) => deposited,
        _ => rng.pick(&known.commitments)?,
    };
    let parties = super::parties(tenant);
    if let Some(&(commitment_id, claim_id)) = rng.pick(&known.claims) {
        if rng.chance(50) {
            let outcome = match rng.below(3) {
                0 => ClaimOutcome::Release,
                1 => ClaimOutcome::Refund,
                _ => ClaimOutcome::Split {
                    payee_bps: 1 + rng.below(9_999) as u16,
                },
            };
            return Some(Op::ResolveClaim(ResolveClaim {
                commitment_id,
                claim_id,
                outcome,
                release_id: TransferId::from_uuid(id(rng)),
                refund_id: TransferId::from_uuid(id(rng)),
                parties,
            }));
        }
    }
    let claim_id = ClaimId::from_uuid(id(rng));
    known.claims.push((commitment_id, claim_id));
    // Mostly the first milestone, which deposits fund first, and what a
    // small deposit holds (some past it: refused).
    Some(Op::Claim(ClaimMilestone {
        commitment_id,
        claim_id,
        milestone_id: if rng.chance(80) { "a" } else { "b" }.into(),
        amount: amount(
            1 + if rng.chance(80) {
                rng.below(50)
            } else {
                rng.below(600)
            },
        ),
        reason: None,
        rejection: rng.chance(30),
        parties,
    }))
}

/// A gift card sold or loaded (some unknown), or a payment tendered from
/// one (some past its balance).
pub(super) fn gift_card_op(rng: &mut Rng, known: &mut Known) -> Op {
    let code = match rng.pick(&known.gift_cards) {
        Some(code) if rng.chance(80) => code.clone(),
        _ => format!("gc-{}", rng.below(1_000_000)),
    };
    match rng.below(3) {
        0 => {
            known.gift_cards.push(code.clone());
            Op::IssueGiftCard(IssueGiftCard {
                code,
                asset: usd(),
                amount: amount(100 + rng.below(3_000)),
                entry_id: EntryId::from_uuid(id(rng)),
            })
        }
        1 => Op::LoadGiftCard(LoadGiftCard {
            code,
            asset: usd(),
            amount: amount(1 + rng.below(1_000)),
            entry_id: EntryId::from_uuid(id(rng)),
        }),
        _ => {
            let Some(&(payment_id, value, _)) = rng.pick(&known.payments) else {
                return seats_op(rng);
            };
            gift_card_tender(rng, known, (payment_id, value), code)
        }
    }
}

fn gift_card_tender(
    rng: &mut Rng,
    known: &mut Known,
    (payment_id, value): (PaymentId, u64),
    code: String,
) -> Op {
    let tendered = 1 + rng.below(value);
    known.tendered.push((
        payment_id,
        aggregates::payments::accounts::gift_card(&code)
            .unwrap()
            .code,
    ));
    known.gift_tenders.push((payment_id, tendered));
    Op::Tender(AddTender {
        payment_id,
        tender_id: TenderId::from_uuid(id(rng)),
        method: TenderMethod::GiftCard,
        source: TenderSource::GiftCard { code },
        amount: amount(tendered),
        asset: usd(),
    })
}

/// A payout of settled batches to the bank (some past what they hold), or
/// one marked paid or failed (its terms as created: what the route
/// resolves from it).
pub(super) fn payout_op(rng: &mut Rng, known: &mut Known) -> Op {
    if let Some((payout_id, terms, entry_id)) = rng.pick(&known.payouts).cloned() {
        if rng.chance(60) {
            return if rng.chance(70) {
                Op::PayoutPaid(MarkPayoutPaid { payout_id })
            } else {
                Op::PayoutFailed(MarkPayoutFailed {
                    payout_id,
                    reason: None,
                    batches: terms.batches,
                    entry_id,
                    reversal_id: EntryId::from_uuid(id(rng)),
                    processor: terms.processor,
                    bank_account: terms.bank_account,
                    asset: terms.asset,
                    netting_id: Some(EntryId::from_uuid(id(rng))),
                })
            };
        }
    }
    if known.batch_nets.is_empty() {
        return seats_op(rng);
    }
    // A batch's net (some a cent more: refused).
    let batch = rng.below(known.batch_nets.len() as u64);
    let net = known.batch_nets[batch as usize] + u64::from(rng.chance(15));
    let payout_id = id(rng);
    let terms = PayoutTerms {
        processor: "stripe".into(),
        asset: usd(),
        amount: amount(net),
        bank_account: "bank-1".into(),
        batches: vec![format!("stripe:b_{}", batch + 1)],
    };
    // The payout's entry shares its id, as the route makes it.
    let entry_id = EntryId::from_uuid(payout_id);
    known.payouts.push((payout_id, terms.clone(), entry_id));
    Op::Payout(CreatePayout {
        payout_id,
        terms,
        entry_id,
    })
}

/// A grant revoked: its unused balance is breakage (one revoked already,
/// or never issued, refused).
pub(super) fn revoke_op(rng: &mut Rng, known: &Known) -> Op {
    match rng.pick(&known.grants) {
        Some((grant_id, account)) => Op::Revoke(RevokeGrant {
            grant_id: *grant_id,
            quota: QuotaType::Credits,
            account: Some(account.clone()),
        }),
        None => seats_op(rng),
    }
}

/// The payees of the script's directory, as the routes resolve them.
fn directory() -> Vec<String> {
    (0..3).map(|rep| format!("rep-{rep}")).collect()
}

/// An adjustment line (some correcting a line, some taking back, some of
/// no payee: refused), or a pay run created (its id derived from `key`),
/// approved, reopened, canceled or paid (some out of turn: refused).
pub(super) fn compensation_op(
    rng: &mut Rng,
    known: &mut Known,
    now: DateTime<Utc>,
    key: &str,
) -> Op {
    // Mostly the latest run: a draft to approve, an approved one to pay.
    let run = match known.pay_runs.last() {
        Some(&last) if rng.chance(60) => Some(last),
        _ => rng.pick(&known.pay_runs).copied(),
    };
    match (rng.below(8), run) {
        (0 | 1, _) => {
            let payee_id = format!("rep-{}", rng.below(4));
            let line_id = LineId::from_uuid(id(rng));
            let corrects = rng
                .pick(&known.lines)
                .filter(|(payee, _)| *payee == payee_id)
                .map(|(_, line)| *line);
            known.lines.push((payee_id.clone(), line_id));
            Op::Adjust(AdjustLine {
                payee_id,
                line_id,
                amount: rng.below(3_000) as i64 - 1_000,
                reason: Some("correction".into()),
                corrects,
                asset: usd(),
            })
        }
        (2 | 3, Some(pay_run_id)) => {
            known.approved.push(pay_run_id);
            Op::ApproveRun(ApprovePayRun { pay_run_id })
        }
        // Reopened, or now and then canceled (its lines released for good).
        (4, Some(pay_run_id)) if rng.chance(25) => Op::CancelRun(CancelPayRun {
            pay_run_id,
            payees: directory(),
        }),
        (4, Some(pay_run_id)) => Op::ReopenRun(ReopenPayRun {
            pay_run_id,
            payees: directory(),
        }),
        (5 | 6, Some(run)) => Op::PayRun(PayPayRun {
            // Mostly one the script approved (some not: refused).
            pay_run_id: match rng.pick(&known.approved) {
                Some(&approved) if rng.chance(70) => approved,
                _ => run,
            },
            // Resolved when sent: the run's payees, as the route reads them.
            payees: Vec::new(),
        }),
        _ => {
            let pay_run_id = PayRunId::from_uuid(known.derived(key, "pay_run"));
            known.pay_runs.push(pay_run_id);
            let days = rng.below(10) as i64;
            Op::CreateRun(CreatePayRun {
                pay_run_id,
                terms: RunTerms {
                    period_start: now - Duration::days(30),
                    // Now and then an empty period: refused.
                    period_end: if rng.chance(5) {
                        now - Duration::days(30)
                    } else {
                        now
                    },
                    // Now and then a cutoff past the period and after
                    // now: refused (since rules 11).
                    cutoff: if rng.chance(8) {
                        now + Duration::days(1)
                    } else {
                        now - Duration::days(days)
                    },
                },
                payees: directory(),
            })
        }
    }
}
