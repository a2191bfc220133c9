//! Journal requests: opening accounts, posting entries and reversing them,
//! and holds (placed, then posted in part or whole, voided or expired).
//!
//! Every account a request posts to is one of its targets, so its flags are
//! checked against its whole balance (every other request's postings and
//! pending holds included) and the append's version check keeps that true
//! under concurrent requests. Every asset it moves is a target too, so a
//! tenant's asset codes keep one scale.

use super::books::{self, entry_of, money_targets, use_assets};

/// The account codes a domain owns, each with what it is and the rules
/// since which the journal refuses it: only that domain's requests move
/// money on them. A commitment's held funds and a payee's ledger from the
/// first; since version 3 the accounts payments own (each must agree with
/// what a payment, a settlement or a gift card keeps, so an entry of the
/// journal's own on it, or reversing one of payments' entries on it,
/// would leave the two apart for good); since version 4 what the tenant
/// owes a processor.
const DOMAIN_OWNED: [(Rules, &str, &str); 8] = [
    (
        Rules::FIRST,
        "escrow_held:",
        "a commitment's held funds: only its escrow requests",
    ),
    (
        Rules::FIRST,
        "compensation_payable:",
        "a payee's compensation payable: only their ledger's lines and pay runs",
    ),
    (
        Rules::THIRD,
        "receivable:",
        "what a processor owes for captures not yet settled: only payments requests",
    ),
    (
        Rules::THIRD,
        "processor_balance:",
        "what a processor holds for the tenant: only its settlements and payouts",
    ),
    (
        Rules::THIRD,
        "gift_cards:",
        "a gift card's balance: only its issue, loads and tenders",
    ),
    (
        Rules::THIRD,
        "funds_in_dispute",
        "captured amounts frozen by open disputes: only the disputes",
    ),
    (
        Rules::THIRD,
        "settlement_suspense",
        "settlement lines awaiting a resolution: only the settlements and their breaks",
    ),
    (
        Rules::FOURTH,
        "processor_payable:",
        "what the tenant owes a processor: only its settlements",
    ),
];

/// Refused: `code` is one a domain owns under `rules` ([`DOMAIN_OWNED`]).
fn domain_owned<'a>(
    rules: Rules,
    codes: impl IntoIterator<Item = &'a AccountCode>,
) -> Result<(), Refusal> {
    for code in codes {
        if let Some((_, _, owner)) = DOMAIN_OWNED
            .iter()
            .find(|(since, prefix, _)| rules.since(*since) && code.as_str().starts_with(prefix))
        {
            return Err(Refusal::Rejected {
                kind: aggregates::RejectionKind::RuleBroken,
                code: "account_code_reserved".into(),
                message: format!("{code} is {owner} move money on it"),
                details: serde_json::json!({ "code": code }),
            });
        }
    }
    Ok(())
}
use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use aggregates::journal::account::{AccountCode, AccountSpec, LedgerAccount};
use aggregates::journal::asset::AssetScale;
use aggregates::journal::entry::{EntryRecord, Recorded};
use aggregates::journal::hold::{Hold, HoldCommand, HoldEvent, PendingTransfer};
use aggregates::journal::{AccountFlags, AccountType, JournalEntry, Side};
use aggregates::money::{Amount, Asset};
use aggregates::rules::Rules;
use aggregates::{EntryId, HoldId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One line of an entry: an amount of an asset debited or credited to an
/// account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryLine {
    pub account: AccountCode,
    pub asset: Asset,
    pub side: Side,
    pub amount: Amount,
}

/// The lines of `entry`, as a client reads them.
pub fn lines_of(entry: &JournalEntry) -> Vec<EntryLine> {
    entry
        .postings()
        .iter()
        .filter_map(|posting| {
            Some(EntryLine {
                account: AccountCode::parse(&posting.account.code).ok()?,
                asset: posting.asset.clone(),
                side: posting.side,
                amount: posting.amount,
            })
        })
        .collect()
}

/// Opens an account with its type and flags, fixed for its life.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAccount {
    pub code: AccountCode,
    pub spec: AccountSpec,
}

/// The answer to opening an account.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountOpened {
    pub code: AccountCode,
    #[serde(rename = "type")]
    pub account_type: AccountType,
    pub flags: AccountFlags,
    /// False when the account was open already, as the same.
    pub opened_now: bool,
}

/// How the ledger's domains open `code`, when one of them posts to it
/// (payments' `revenue`, `cash`, `bank:<name>`, ..., escrow's
/// `escrow_cash` and the parties' payables, compensation's expense).
fn domain_spec(code: &AccountCode) -> Option<AccountSpec> {
    use aggregates::compensation::accounts as compensation;
    use aggregates::escrow::accounts as escrow;
    use aggregates::payments::accounts::{self as payments, PaymentAccount};
    let fixed = [
        payments::revenue(),
        payments::refunds(),
        payments::cash(),
        payments::processing_fees(),
        payments::dispute_fees(),
        payments::dispute_losses(),
        payments::settlement_write_offs(),
        escrow::escrow_cash(),
        compensation::expense(),
    ];
    if let Some(account) = fixed.iter().find(|account| account.code == *code) {
        return Some(account.spec);
    }
    type Named =
        fn(&str) -> Result<PaymentAccount, aggregates::journal::account::InvalidAccountCode>;
    let named: [(&str, Named); 3] = [
        ("bank:", payments::bank),
        ("payee_payable:", escrow::payee_payable),
        ("payer_refunds:", escrow::payer_refunds),
    ];
    named.iter().find_map(|(prefix, account)| {
        let name = code.as_str().strip_prefix(prefix)?;
        account(name).ok().map(|account| account.spec)
    })
}

/// Since version 4 of the rules: an account a domain posts to opens only
/// as that domain opens it (its flags are fixed for life, so another type
/// or flag would refuse every request of the domain after).
fn domain_spec_kept(rules: Rules, code: &AccountCode, spec: AccountSpec) -> Result<(), Refusal> {
    match domain_spec(code) {
        Some(domain) if rules.since(Rules::FOURTH) && domain != spec => Err(Refusal::Rejected {
            kind: aggregates::RejectionKind::RuleBroken,
            code: "account_spec_reserved".into(),
            message: format!(
                "{code} is an account the ledger's domains post to, opened as {} with {}: open it so, or choose another code",
                domain.account_type.as_str(),
                flag_names(domain.flags)
            ),
            details: serde_json::json!({
                "code": code,
                "type": domain.account_type,
                "flags": domain.flags,
            }),
        }),
        _ => Ok(()),
    }
}

/// The flags set, by name (`no flags` when none is).
fn flag_names(flags: AccountFlags) -> String {
    let names: Vec<&str> = [
        (
            flags.debits_must_not_exceed_credits,
            "debits_must_not_exceed_credits",
        ),
        (
            flags.credits_must_not_exceed_debits,
            "credits_must_not_exceed_debits",
        ),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    if names.is_empty() {
        "no flags".to_string()
    } else {
        names.join(" and ")
    }
}

impl Request for OpenAccount {
    const KIND: &'static str = "open_account";

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<LedgerAccount>(self.code.as_str())]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        domain_owned(decider.rules(), [&self.code])?;
        domain_spec_kept(decider.rules(), &self.code, self.spec)?;
        let answer = AccountOpened {
            code: self.code.clone(),
            account_type: self.spec.account_type,
            flags: self.spec.flags,
            opened_now: books::open(decider, &self.code, self.spec)?,
        };
        if answer.opened_now {
            Reply::created(self.code.as_str(), &answer)
        } else {
            Reply::ok(self.code.as_str(), &answer)
        }
    }
}

/// Posts an entry of two or more lines, balanced per asset, to opened
/// accounts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostEntry {
    pub entry_id: EntryId,
    pub lines: Vec<EntryLine>,
    pub effective_at: Option<DateTime<Utc>>,
    pub reference: Option<String>,
}

/// An entry as answered.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EntryAnswer {
    pub entry_id: EntryId,
    pub effective_at: DateTime<Utc>,
    pub reference: Option<String>,
    /// The entry this one reverses.
    pub reverses: Option<EntryId>,
    pub lines: Vec<EntryLine>,
}

impl EntryAnswer {
    fn of(entry_id: EntryId, recorded: &Recorded) -> Self {
        Self {
            entry_id,
            effective_at: recorded.effective_at,
            reference: recorded.reference.clone(),
            reverses: recorded.reverses,
            lines: lines_of(&recorded.entry),
        }
    }
}

/// Records `entry` as `entry_id` on its accounts and in the journal, and
/// answers it.
fn record_entry(
    decider: &mut Decider<'_>,
    entry_id: EntryId,
    recorded: Recorded,
) -> Result<Reply, Refusal> {
    let answer = EntryAnswer::of(entry_id, &recorded);
    books::record(decider, entry_id, recorded)?;
    Reply::created(entry_id.to_string(), &answer)
}

impl Request for PostEntry {
    const KIND: &'static str = "post_entry";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![Target::of::<EntryRecord>(self.entry_id.to_string())];
        targets.extend(money_targets(
            self.lines.iter().map(|line| &line.account),
            self.lines.iter().map(|line| &line.asset),
        ));
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        domain_owned(decider.rules(), self.lines.iter().map(|line| &line.account))?;
        currencies_at_scale(decider.rules(), self.lines.iter().map(|line| &line.asset))?;
        use_assets(decider, self.lines.iter().map(|line| &line.asset))?;
        let entry = entry_of(decider, &self.lines)?;
        let recorded = Recorded {
            entry,
            effective_at: self.effective_at.unwrap_or(decider.at()),
            reference: self.reference.clone(),
            reverses: None,
            recorded_by: None,
        };
        record_entry(decider, self.entry_id, recorded)
    }
}

/// Reverses an entry, once: a new entry, its exact mirror. `lines` are the
/// reversed entry's, resolved before the request is submitted (they name
/// the accounts it posts to).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReverseEntry {
    pub entry_id: EntryId,
    pub reversal_id: EntryId,
    pub lines: Vec<EntryLine>,
    pub reference: Option<String>,
}

impl Request for ReverseEntry {
    const KIND: &'static str = "reverse_entry";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![
            Target::of::<EntryRecord>(self.entry_id.to_string()),
            Target::of::<EntryRecord>(self.reversal_id.to_string()),
        ];
        targets.extend(money_targets(
            self.lines.iter().map(|line| &line.account),
            self.lines.iter().map(|line| &line.asset),
        ));
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        domain_owned(decider.rules(), self.lines.iter().map(|line| &line.account))?;
        if decider.rules().since(Rules::SEVENTH) {
            let entry = decider.state::<EntryRecord>(&self.entry_id.to_string())?;
            let recorded_by = entry
                .recorded
                .as_ref()
                .and_then(|r| r.recorded_by.as_deref());
            reversible(self.entry_id, recorded_by)?;
        }
        let recorded = books::reverse(
            decider,
            self.entry_id,
            self.reversal_id,
            self.reference.clone(),
        )?;
        if lines_of(&recorded.entry.mirror()?) != self.lines {
            return Err(Refusal::Internal(format!(
                "the request names other lines than entry {} has",
                self.entry_id
            )));
        }
        let answer = EntryAnswer::of(self.reversal_id, &recorded);
        Reply::created(self.reversal_id.to_string(), &answer)
    }
}

/// Refused (`asset_scale_mismatch`, since rules 7): a currency at another
/// scale than its minor unit, which the domains post it at
/// ([`aggregates::journal::asset::currency_scale`]).
fn currencies_at_scale<'a>(
    rules: Rules,
    assets: impl IntoIterator<Item = &'a Asset>,
) -> Result<(), Refusal> {
    if rules.since(Rules::SEVENTH) {
        for asset in assets {
            aggregates::journal::asset::currency_scale(asset)?;
        }
    }
    Ok(())
}

/// The kinds of the journal's own requests that record entries. Only
/// their entries does the journal reverse: a domain's entry is reversed by
/// that domain (a failed refund, a failed payout), which keeps its own
/// state beside it.
pub const OWN_ENTRY_KINDS: [&str; 3] = [PostEntry::KIND, ReverseEntry::KIND, ResolveHold::KIND];

/// Refused (`entry_recorded_by_domain`) when entry `entry_id` was recorded
/// by `recorded_by`, a request of another domain than the journal's.
/// Checked by the decision since rules 7 (entries name their request
/// since), and by the route for entries of any age (from the request kind
/// their first event records).
pub fn reversible(entry_id: EntryId, recorded_by: Option<&str>) -> Result<(), Refusal> {
    match recorded_by {
        Some(kind) if !OWN_ENTRY_KINDS.contains(&kind) => Err(Refusal::Rejected {
            kind: aggregates::RejectionKind::RuleBroken,
            code: ENTRY_RECORDED_BY_DOMAIN.into(),
            message: format!(
                "entry {entry_id} was recorded by {kind}, not by the journal: its own domain reverses it"
            ),
            details: serde_json::json!({ "entry_id": entry_id, "recorded_by": kind }),
        }),
        _ => Ok(()),
    }
}

/// The code of [`reversible`]'s refusal.
pub const ENTRY_RECORDED_BY_DOMAIN: &str = "entry_recorded_by_domain";

/// Places a hold: `transfer` reserved on both its accounts (pending, and
/// counted against their flags at once) until it is posted, voided or
/// expires.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceHold {
    pub hold_id: HoldId,
    pub transfer: PendingTransfer,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A hold as answered.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HoldAnswer {
    pub hold_id: HoldId,
    /// `pending`, `posted`, `voided` or `expired`.
    pub status: &'static str,
    pub debit: AccountCode,
    pub credit: AccountCode,
    pub asset: Asset,
    /// What the hold reserved.
    pub amount: Amount,
    pub expires_at: Option<DateTime<Utc>>,
    /// Posted only: what was posted, and the entry posting it.
    pub posted: Option<Amount>,
    pub entry_id: Option<EntryId>,
    /// Released unposted (the rest of a partial post, or all of a void or
    /// an expiry).
    pub released: Option<Amount>,
}

impl HoldAnswer {
    fn of(hold_id: HoldId, transfer: &PendingTransfer, expires_at: Option<DateTime<Utc>>) -> Self {
        Self {
            hold_id,
            status: "pending",
            debit: transfer.debit.clone(),
            credit: transfer.credit.clone(),
            asset: transfer.asset.clone(),
            amount: transfer.amount,
            expires_at,
            posted: None,
            entry_id: None,
            released: None,
        }
    }
}

impl Request for PlaceHold {
    const KIND: &'static str = "place_hold";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![Target::of::<Hold>(self.hold_id.to_string())];
        targets.extend(money_targets(
            [&self.transfer.debit, &self.transfer.credit],
            [&self.transfer.asset],
        ));
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let accounts = [&self.transfer.debit, &self.transfer.credit];
        domain_owned(decider.rules(), accounts)?;
        currencies_at_scale(decider.rules(), [&self.transfer.asset])?;
        books::place_hold(decider, self.hold_id, &self.transfer, self.expires_at)?;
        let answer = HoldAnswer::of(self.hold_id, &self.transfer, self.expires_at);
        Reply::created(self.hold_id.to_string(), &answer)
    }
}

/// How a request resolves a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum Resolve {
    /// Posts `amount` (all when `None`) as the entry `entry_id`.
    Post {
        amount: Option<Amount>,
        entry_id: EntryId,
    },
    Void,
    Expire,
}

/// Resolves a hold, once. `transfer` is the hold's, resolved before the
/// request is submitted (it names the accounts the hold reserves on).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveHold {
    pub hold_id: HoldId,
    pub transfer: PendingTransfer,
    pub resolve: Resolve,
    /// The scheduler's expiry carries the hold's expiry time: the hold
    /// expires then, however late the request runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
}

impl Request for ResolveHold {
    const KIND: &'static str = "resolve_hold";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![Target::of::<Hold>(self.hold_id.to_string())];
        if let Resolve::Post { entry_id, .. } = self.resolve {
            targets.push(Target::of::<EntryRecord>(entry_id.to_string()));
        }
        targets.extend(money_targets(
            [&self.transfer.debit, &self.transfer.credit],
            [&self.transfer.asset],
        ));
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at_due(self.due_at)?;
        let command = match self.resolve {
            Resolve::Post { amount, entry_id } => HoldCommand::Post {
                amount,
                entry_id,
                at,
            },
            Resolve::Void => HoldCommand::Void { at },
            Resolve::Expire => HoldCommand::Expire { at },
        };
        let hold_id = self.hold_id.to_string();
        let reference = Some(format!("hold:{hold_id}"));
        let resolved =
            books::resolve_hold(decider, self.hold_id, &self.transfer, command, reference)?;
        // A hold placed on an account the journal has since come to refuse
        // (under older rules) is voided or expires, never posted. Checked
        // once the hold took the post, so a hold resolved already answers
        // how (`hold_already_voided`, ...); the refusal drops it all.
        if matches!(self.resolve, Resolve::Post { .. }) && decider.rules().since(Rules::THIRD) {
            let accounts = [&self.transfer.debit, &self.transfer.credit];
            domain_owned(decider.rules(), accounts)?;
        }
        let mut answer = HoldAnswer::of(self.hold_id, &self.transfer, resolved.expires_at);
        answer.status = match self.resolve {
            Resolve::Post { .. } => "posted",
            Resolve::Void => "voided",
            Resolve::Expire => "expired",
        };
        answer.posted = resolved.entry_id.map(|_| resolved.posted);
        answer.entry_id = resolved.entry_id;
        answer.released = Some(resolved.released);
        Reply::ok(hold_id, &answer)
    }
}

/// The scheduled work of hold `hold_id`: its expiry.
pub fn hold_expiry(hold_id: &str) -> String {
    format!("hold:{hold_id}:expiry")
}

/// What a hold event schedules: its expiry at its expiry time; its
/// resolution (posted, voided, expired) settles it.
fn schedule(
    event: &eventstore::StoredEvent,
) -> Result<Vec<projections::scheduled::ScheduleChange>, projections::ApplyError> {
    use crate::scheduler::{due, settled};
    let work = hold_expiry(&event.aggregate_id);
    Ok(match projections::decode::decode::<Hold>(event)? {
        HoldEvent::HoldPlaced {
            transfer,
            expires_at: Some(expires_at),
            ..
        } => {
            let hold_id = event.aggregate_id.parse::<HoldId>().map_err(|error| {
                projections::ApplyError::Event {
                    tenant_seq: event.tenant_seq,
                    message: format!("hold id {}: {error}", event.aggregate_id),
                }
            })?;
            let expire = ResolveHold {
                hold_id,
                transfer,
                resolve: Resolve::Expire,
                due_at: Some(expires_at),
            };
            vec![due(work, expires_at, &expire)?]
        }
        HoldEvent::HoldPlaced { .. } => Vec::new(),
        HoldEvent::HoldPosted { .. }
        | HoldEvent::HoldVoided { .. }
        | HoldEvent::HoldExpired { .. } => {
            vec![settled(work)]
        }
    })
}

/// The journal domain: accounts, entries, holds and asset scales, shared by
/// every domain that moves money.
pub fn domain() -> crate::domains::Domain {
    use crate::domains::{Domain, RequestKind};
    use crate::pipeline::AggregateKind;
    Domain {
        name: "journal",
        aggregates: vec![
            AggregateKind::of::<LedgerAccount>(),
            AggregateKind::of::<EntryRecord>(),
            AggregateKind::of::<Hold>(),
            AggregateKind::of::<AssetScale>(),
        ],
        requests: vec![
            RequestKind::of::<OpenAccount>(),
            RequestKind::of::<PostEntry>(),
            RequestKind::of::<ReverseEntry>(),
            RequestKind::of::<PlaceHold>(),
            RequestKind::of::<ResolveHold>(),
        ],
        projections: vec![std::sync::Arc::new(projections::accounts::Accounts)],
        process_managers: Vec::new(),
        reactions: Vec::new(),
        schedules: vec![projections::scheduled::ScheduleReader {
            aggregate_type: aggregates::journal::hold::HOLD_AGGREGATE,
            events: &["HoldPlaced", "HoldPosted", "HoldVoided", "HoldExpired"],
            read: schedule,
        }],
        routes: || crate::http::journal::router().merge(crate::http::ledger::router()),
        tags: vec![(
            "journal",
            "Accounts, entries, holds, balances and the trial balance",
        )],
        sections: Vec::new(),
    }
}
