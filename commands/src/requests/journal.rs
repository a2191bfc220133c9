//! Journal requests: opening accounts, posting entries and reversing them,
//! and holds (placed, then posted in part or whole, voided or expired).
//!
//! Every account a request posts to is one of its targets, so its flags are
//! checked against its whole balance (every other request's postings and
//! pending holds included) and the append's version check keeps that true
//! under concurrent requests. Every asset it moves is a target too, so a
//! tenant's asset codes keep one scale.

use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use aggregates::journal::account::{
    AccountCode, AccountCommand, AccountSpec, LedgerAccount, Movement,
};
use aggregates::journal::asset::{AssetCommand, AssetScale};
use aggregates::journal::entry::{EntryCommand, EntryRecord, Recorded};
use aggregates::journal::hold::{Hold, HoldCommand, HoldEvent, PendingTransfer};
use aggregates::journal::{Account, AccountFlags, AccountType, JournalEntry, Posting, Side};
use aggregates::money::{Amount, Asset};
use aggregates::{EntryId, HoldId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
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

/// The targets of a request moving `assets` on `accounts`.
fn money_targets<'a>(
    accounts: impl IntoIterator<Item = &'a AccountCode>,
    assets: impl IntoIterator<Item = &'a Asset>,
) -> Vec<Target> {
    let accounts: BTreeSet<&AccountCode> = accounts.into_iter().collect();
    let codes: BTreeSet<&str> = assets.into_iter().map(Asset::code).collect();
    accounts
        .into_iter()
        .map(|code| Target::of::<LedgerAccount>(code.as_str()))
        .chain(codes.into_iter().map(Target::of::<AssetScale>))
        .collect()
}

/// Uses every asset of `assets` in the tenant: the first use fixes a code's
/// scale, another scale is refused.
fn use_assets<'a>(
    decider: &mut Decider<'_>,
    assets: impl IntoIterator<Item = &'a Asset>,
) -> Result<(), Refusal> {
    let assets: BTreeSet<&Asset> = assets.into_iter().collect();
    for asset in assets {
        decider.execute::<AssetScale>(
            asset.code(),
            AssetCommand::Use {
                asset: asset.clone(),
            },
        )?;
    }
    Ok(())
}

/// The account `code` as postings carry it: its type and flags as it was
/// opened (never as a request says).
fn opened_account(decider: &Decider<'_>, code: &AccountCode) -> Result<Account, Refusal> {
    let spec = decider
        .state::<LedgerAccount>(code.as_str())?
        .spec
        .ok_or_else(|| Refusal::from(aggregates::journal::account::AccountError::NotOpened))?;
    Ok(Account {
        code: code.to_string(),
        account_type: spec.account_type,
        flags: spec.flags,
    })
}

/// The entry `lines` make, its accounts as they were opened.
fn entry_of(decider: &Decider<'_>, lines: &[EntryLine]) -> Result<JournalEntry, Refusal> {
    let postings = lines
        .iter()
        .map(|line| {
            Ok(Posting {
                account: opened_account(decider, &line.account)?,
                asset: line.asset.clone(),
                side: line.side,
                amount: line.amount,
            })
        })
        .collect::<Result<Vec<_>, Refusal>>()?;
    Ok(JournalEntry::new(postings)?)
}

/// Posts `entry` on each of its accounts (one posting per account and
/// asset), each checking its flags.
fn post_to_accounts(
    decider: &mut Decider<'_>,
    entry_id: EntryId,
    entry: &JournalEntry,
) -> Result<(), Refusal> {
    let mut movements: BTreeMap<(String, Asset), Movement> = BTreeMap::new();
    for posting in entry.postings() {
        let movement = movements
            .entry((posting.account.code.clone(), posting.asset.clone()))
            .or_default();
        let added = Movement::on(posting.side, posting.amount);
        movement.debit = movement.debit.checked_add(added.debit)?;
        movement.credit = movement.credit.checked_add(added.credit)?;
    }
    for ((code, asset), movement) in movements {
        decider.execute::<LedgerAccount>(
            &code,
            AccountCommand::Post {
                entry_id,
                asset,
                movement,
            },
        )?;
    }
    Ok(())
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

impl Request for OpenAccount {
    const KIND: &'static str = "open_account";

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<LedgerAccount>(self.code.as_str())]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let events = decider.execute::<LedgerAccount>(
            self.code.as_str(),
            AccountCommand::Open {
                code: self.code.clone(),
                spec: self.spec,
            },
        )?;
        let answer = AccountOpened {
            code: self.code.clone(),
            account_type: self.spec.account_type,
            flags: self.spec.flags,
            opened_now: !events.is_empty(),
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

/// Records `entry` as `entry_id` on its accounts and in the journal.
fn record_entry(
    decider: &mut Decider<'_>,
    entry_id: EntryId,
    recorded: Recorded,
) -> Result<Reply, Refusal> {
    post_to_accounts(decider, entry_id, &recorded.entry)?;
    let answer = EntryAnswer::of(entry_id, &recorded);
    decider.execute::<EntryRecord>(&entry_id.to_string(), EntryCommand::Record(recorded))?;
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
        use_assets(decider, self.lines.iter().map(|line| &line.asset))?;
        let entry = entry_of(decider, &self.lines)?;
        let recorded = Recorded {
            entry,
            effective_at: self.effective_at.unwrap_or(decider.at()),
            reference: self.reference.clone(),
            reverses: None,
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
        decider.execute::<EntryRecord>(
            &self.entry_id.to_string(),
            EntryCommand::Reverse {
                by: self.reversal_id,
            },
        )?;
        let original = decider
            .state::<EntryRecord>(&self.entry_id.to_string())?
            .recorded
            .clone()
            .ok_or_else(|| Refusal::Internal("a reversed entry has no record".into()))?;
        if lines_of(&original.entry) != self.lines {
            return Err(Refusal::Internal(format!(
                "the request names other lines than entry {} has",
                self.entry_id
            )));
        }
        let recorded = Recorded {
            entry: original.entry.mirror()?,
            effective_at: decider.at(),
            reference: self.reference.clone(),
            reverses: Some(self.entry_id),
        };
        record_entry(decider, self.reversal_id, recorded)
    }
}

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
        let at = decider.at();
        use_assets(decider, [&self.transfer.asset])?;
        decider.execute::<Hold>(
            &self.hold_id.to_string(),
            HoldCommand::Place {
                transfer: self.transfer.clone(),
                expires_at: self.expires_at,
                at,
            },
        )?;
        for (code, side) in self.transfer.sides() {
            decider.execute::<LedgerAccount>(
                code.as_str(),
                AccountCommand::Reserve {
                    hold_id: self.hold_id,
                    asset: self.transfer.asset.clone(),
                    movement: Movement::on(side, self.transfer.amount),
                },
            )?;
        }
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
        let hold_id = self.hold_id.to_string();
        let placed = decider
            .state::<Hold>(&hold_id)?
            .placed
            .as_ref()
            .map(|placed| (placed.transfer.clone(), placed.expires_at));
        if let Some((transfer, _)) = &placed {
            if *transfer != self.transfer {
                return Err(Refusal::Internal(format!(
                    "the request names another transfer than hold {hold_id} reserves"
                )));
            }
        }
        let command = match self.resolve {
            Resolve::Post { amount, entry_id } => HoldCommand::Post {
                amount,
                entry_id,
                at,
            },
            Resolve::Void => HoldCommand::Void { at },
            Resolve::Expire => HoldCommand::Expire { at },
        };
        let events = decider.execute::<Hold>(&hold_id, command)?;
        let (posted, released, entry_id) = match events.first() {
            Some(HoldEvent::HoldPosted {
                entry_id,
                amount,
                released,
                ..
            }) => (*amount, *released, Some(*entry_id)),
            Some(HoldEvent::HoldVoided { released, .. })
            | Some(HoldEvent::HoldExpired { released, .. }) => (Amount::ZERO, *released, None),
            _ => return Err(Refusal::Internal("resolving a hold gave no event".into())),
        };
        self.settle_accounts(decider, posted)?;
        if let Some(entry_id) = entry_id {
            let entry = JournalEntry::transfer(
                opened_account(decider, &self.transfer.debit)?,
                opened_account(decider, &self.transfer.credit)?,
                &self.transfer.asset,
                posted,
            )?;
            decider.execute::<EntryRecord>(
                &entry_id.to_string(),
                EntryCommand::Record(Recorded {
                    entry,
                    effective_at: at,
                    reference: Some(format!("hold:{hold_id}")),
                    reverses: None,
                }),
            )?;
        }
        let mut answer = HoldAnswer::of(
            self.hold_id,
            &self.transfer,
            placed.and_then(|(_, expires_at)| expires_at),
        );
        answer.status = match self.resolve {
            Resolve::Post { .. } => "posted",
            Resolve::Void => "voided",
            Resolve::Expire => "expired",
        };
        answer.posted = entry_id.map(|_| posted);
        answer.entry_id = entry_id;
        answer.released = Some(released);
        Reply::ok(hold_id, &answer)
    }
}

impl ResolveHold {
    /// Settles the hold on both its accounts: `posted` becomes posted, the
    /// rest is released.
    fn settle_accounts(&self, decider: &mut Decider<'_>, posted: Amount) -> Result<(), Refusal> {
        for (code, side) in self.transfer.sides() {
            let movement = if posted.is_zero() {
                Movement::default()
            } else {
                Movement::on(side, posted)
            };
            decider.execute::<LedgerAccount>(
                code.as_str(),
                AccountCommand::Settle {
                    hold_id: self.hold_id,
                    posted: movement,
                },
            )?;
        }
        Ok(())
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
        schedules: vec![projections::scheduled::ScheduleReader {
            aggregate_type: aggregates::journal::hold::HOLD_AGGREGATE,
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
