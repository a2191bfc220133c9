//! The journal as every domain uses it: the targets a request moving
//! money declares, accounts opened as a domain fixes them, entries recorded
//! on their accounts and in the journal, and holds placed and resolved.
//! The journal's own requests (`journal`) and every money domain decide
//! through these, so an account's flags are checked the same way whichever
//! domain posts to it.

use crate::pipeline::{Decider, Refusal, Target};
use aggregates::journal::account::{
    AccountCode, AccountCommand, AccountSpec, LedgerAccount, Movement,
};
use aggregates::journal::asset::{AssetCommand, AssetScale};
use aggregates::journal::entry::{EntryCommand, EntryRecord, Recorded};
use aggregates::journal::hold::{Hold, HoldCommand, HoldEvent, PendingTransfer};
use aggregates::journal::{Account, JournalEntry, Posting, Side};
use aggregates::money::{Amount, Asset};
use aggregates::rules::Rules;
use aggregates::{EntryId, HoldId};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

pub use super::journal::EntryLine;

/// The targets of a request moving `assets` on `accounts`.
pub fn money_targets<'a>(
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
pub fn use_assets<'a>(
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
pub fn opened_account(decider: &Decider<'_>, code: &AccountCode) -> Result<Account, Refusal> {
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
pub fn entry_of(decider: &Decider<'_>, lines: &[EntryLine]) -> Result<JournalEntry, Refusal> {
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
pub fn post_to_accounts(
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

/// Opens `code` as `spec`, fixed for its life: a domain's accounts open
/// with the first request that posts to them, the journal's by their own
/// request. Open already as the same is nothing (answers false); as
/// anything else, refused (`account_opened_otherwise`).
pub fn open(
    decider: &mut Decider<'_>,
    code: &AccountCode,
    spec: AccountSpec,
) -> Result<bool, Refusal> {
    let events = decider.execute::<LedgerAccount>(
        code.as_str(),
        AccountCommand::Open {
            code: code.clone(),
            spec,
        },
    )?;
    Ok(!events.is_empty())
}

/// The two lines of moving `amount` of `asset` from `credit` to `debit`.
pub fn transfer_lines(
    debit: &AccountCode,
    credit: &AccountCode,
    asset: &Asset,
    amount: Amount,
) -> [EntryLine; 2] {
    [(debit, Side::Debit), (credit, Side::Credit)].map(|(account, side)| EntryLine {
        account: account.clone(),
        asset: asset.clone(),
        side,
        amount,
    })
}

/// Records the entry `lines` make (their accounts as opened) as
/// `entry_id`, with `reference`, effective at `effective_at`.
pub fn post(
    decider: &mut Decider<'_>,
    entry_id: EntryId,
    lines: &[EntryLine],
    reference: Option<String>,
    effective_at: DateTime<Utc>,
) -> Result<(), Refusal> {
    let entry = entry_of(decider, lines)?;
    record(
        decider,
        entry_id,
        Recorded {
            entry,
            effective_at,
            reference,
            reverses: None,
            recorded_by: None,
        },
    )
}

/// Records `recorded` as the entry `entry_id`: its assets used (a code
/// keeps one scale in the tenant), posted on each of its accounts (each
/// checking its flags) and kept in the journal.
pub fn record(
    decider: &mut Decider<'_>,
    entry_id: EntryId,
    recorded: Recorded,
) -> Result<(), Refusal> {
    let assets: Vec<Asset> = recorded
        .entry
        .postings()
        .iter()
        .map(|posting| posting.asset.clone())
        .collect();
    use_assets(decider, assets.iter())?;
    post_to_accounts(decider, entry_id, &recorded.entry)?;
    keep_entry(decider, entry_id, recorded)
}

/// Keeps `recorded` in the journal as `entry_id`, naming (since rules 7)
/// the kind of the request recording it.
fn keep_entry(
    decider: &mut Decider<'_>,
    entry_id: EntryId,
    recorded: Recorded,
) -> Result<(), Refusal> {
    let recorded_by = decider
        .rules()
        .since(Rules::SEVENTH)
        .then(|| decider.kind().to_string());
    decider.execute::<EntryRecord>(
        &entry_id.to_string(),
        EntryCommand::Record(Recorded {
            recorded_by,
            ..recorded
        }),
    )?;
    Ok(())
}

/// Reverses entry `entry_id`, once: `reversal_id` records its exact mirror
/// (effective now, with `reference`) on the same accounts. Returns the
/// reversing entry's record.
pub fn reverse(
    decider: &mut Decider<'_>,
    entry_id: EntryId,
    reversal_id: EntryId,
    reference: Option<String>,
) -> Result<Recorded, Refusal> {
    decider.execute::<EntryRecord>(
        &entry_id.to_string(),
        EntryCommand::Reverse { by: reversal_id },
    )?;
    let original = decider
        .state::<EntryRecord>(&entry_id.to_string())?
        .recorded
        .clone()
        .ok_or_else(|| Refusal::Internal("a reversed entry has no record".into()))?;
    let recorded = Recorded {
        entry: original.entry.mirror()?,
        effective_at: decider.at(),
        reference,
        reverses: Some(entry_id),
        recorded_by: None,
    };
    record(decider, reversal_id, recorded.clone())?;
    Ok(recorded)
}

/// Places hold `hold_id`: `transfer` reserved on both its accounts (pending,
/// counted against their flags at once) until it is posted, voided or
/// expires at `expires_at`.
pub fn place_hold(
    decider: &mut Decider<'_>,
    hold_id: HoldId,
    transfer: &PendingTransfer,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(), Refusal> {
    let at = decider.at();
    decider.execute::<Hold>(
        &hold_id.to_string(),
        HoldCommand::Place {
            transfer: transfer.clone(),
            expires_at,
            at,
        },
    )?;
    reserve(decider, hold_id, transfer)
}

/// Reserves `transfer` on both its accounts under `hold_id`: pending, and
/// counted against their flags at once. The journal's holds reserve so; a
/// domain whose own aggregate keeps a hold's life (a payment's
/// authorization) reserves directly.
pub fn reserve(
    decider: &mut Decider<'_>,
    hold_id: HoldId,
    transfer: &PendingTransfer,
) -> Result<(), Refusal> {
    use_assets(decider, [&transfer.asset])?;
    for (code, side) in transfer.sides() {
        decider.execute::<LedgerAccount>(
            code.as_str(),
            AccountCommand::Reserve {
                hold_id,
                asset: transfer.asset.clone(),
                movement: Movement::on(side, transfer.amount),
            },
        )?;
    }
    Ok(())
}

/// Settles reservation `hold_id` of `transfer` on both its accounts, once:
/// `posted` of it becomes posted (recorded as the entry `entry`, with its
/// reference, at `at`: refused without one), the rest is released.
pub fn settle(
    decider: &mut Decider<'_>,
    hold_id: HoldId,
    transfer: &PendingTransfer,
    posted: Amount,
    entry: Option<(EntryId, Option<String>)>,
    at: DateTime<Utc>,
) -> Result<(), Refusal> {
    for (code, side) in transfer.sides() {
        let movement = if posted.is_zero() {
            Movement::default()
        } else {
            Movement::on(side, posted)
        };
        decider.execute::<LedgerAccount>(
            code.as_str(),
            AccountCommand::Settle {
                hold_id,
                posted: movement,
            },
        )?;
    }
    if posted.is_zero() {
        return Ok(());
    }
    // What is posted is recorded: an amount posted without its entry would
    // leave the accounts and the journal disagreeing.
    let Some((entry_id, reference)) = entry else {
        return Err(Refusal::Internal(format!(
            "hold {hold_id} settled {posted} posted without an entry to record it"
        )));
    };
    let entry = JournalEntry::transfer(
        opened_account(decider, &transfer.debit)?,
        opened_account(decider, &transfer.credit)?,
        &transfer.asset,
        posted,
    )?;
    keep_entry(
        decider,
        entry_id,
        Recorded {
            entry,
            effective_at: at,
            reference,
            reverses: None,
            recorded_by: None,
        },
    )
}

/// How a hold resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldResolved {
    /// Posted (zero unless posted).
    pub posted: Amount,
    /// Released unposted.
    pub released: Amount,
    /// The entry posting it, when posted.
    pub entry_id: Option<EntryId>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Resolves hold `hold_id`, which reserves `transfer` (resolved before the
/// request was submitted; another transfer than the hold's is a defect),
/// by `command`: both accounts settle (what is posted becomes posted, the
/// rest is released) and a posted part is recorded as an entry with
/// `reference`, at the command's time.
pub fn resolve_hold(
    decider: &mut Decider<'_>,
    hold_id: HoldId,
    transfer: &PendingTransfer,
    command: HoldCommand,
    reference: Option<String>,
) -> Result<HoldResolved, Refusal> {
    let id = hold_id.to_string();
    let expires_at = match &decider.state::<Hold>(&id)?.placed {
        Some(placed) if placed.transfer != *transfer => {
            return Err(Refusal::Internal(format!(
                "the request names another transfer than hold {id} reserves"
            )))
        }
        Some(placed) => placed.expires_at,
        None => None,
    };
    let events = decider.execute::<Hold>(&id, command)?;
    let (posted, released, entry_id, at) = match events.first() {
        Some(HoldEvent::HoldPosted {
            entry_id,
            amount,
            released,
            at,
        }) => (*amount, *released, Some(*entry_id), *at),
        Some(HoldEvent::HoldVoided { released, at })
        | Some(HoldEvent::HoldExpired { released, at }) => (Amount::ZERO, *released, None, *at),
        _ => return Err(Refusal::Internal("resolving a hold gave no event".into())),
    };
    settle(
        decider,
        hold_id,
        transfer,
        posted,
        entry_id.map(|entry_id| (entry_id, reference)),
        at,
    )?;
    Ok(HoldResolved {
        posted,
        released,
        entry_id,
        expires_at,
    })
}
