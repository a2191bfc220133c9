//! Tests of the quota aggregate, by theme, with the helpers they share.

mod burn_order;
mod consumption;
mod expiry;
mod grants;
mod overflow;
mod seats;

use super::*;
use crate::ids::GrantId;
use crate::journal::{JournalEntry, Posting};
use crate::money::Amount;
use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;
type Given = TestFramework<Quota>;

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, hour, 0, 0).unwrap()
}

fn id(n: u128) -> GrantId {
    GrantId::from_uuid(uuid::Uuid::from_u128(n))
}

fn units(value: i64) -> Amount {
    Amount::new(value).unwrap()
}

fn terms(n: u128, source: GrantSource, amount: Option<i64>) -> GrantTerms {
    GrantTerms {
        grant_id: id(n),
        source,
        amount: amount.map(units),
        priority: PRIORITY_DEFAULT,
        effective_at: at(0),
        expires_at: None,
    }
}

fn issued(quota: QuotaType, terms: GrantTerms) -> QuotaEvent {
    let entry = terms.amount.map(|amount| {
        JournalEntry::transfer(
            issued_account(quota, None),
            grant_account(&terms),
            &quota.asset(),
            amount,
        )
        .unwrap()
    });
    QuotaEvent::GrantIssued {
        quota,
        account: None,
        terms,
        entry,
    }
}

fn consumed(quota: QuotaType, draws: &[(&GrantTerms, i64)], reference: Option<&str>) -> QuotaEvent {
    let total: i64 = draws.iter().map(|(_, amount)| amount).sum();
    let mut postings: Vec<Posting> = draws
        .iter()
        .map(|(terms, amount)| Posting::debit(grant_account(terms), quota.asset(), units(*amount)))
        .collect();
    postings.push(Posting::credit(
        consumed_account(quota, None),
        quota.asset(),
        units(total),
    ));
    QuotaEvent::QuotaConsumed {
        amount: units(total),
        reference: reference.map(str::to_string),
        allocations: draws
            .iter()
            .map(|(terms, amount)| Allocation {
                grant_id: terms.grant_id,
                amount: units(*amount),
            })
            .collect(),
        entry: JournalEntry::new(postings).unwrap(),
    }
}

fn consume(amount: i64, hour: u32) -> QuotaCommand {
    QuotaCommand::Consume {
        quota: QuotaType::Credits,
        amount: units(amount),
        reference: None,
        at: at(hour),
    }
}

fn max() -> Amount {
    units(i64::MAX)
}

fn revoked(quota: QuotaType, grant: &GrantTerms, breakage: i64, hour: u32) -> QuotaEvent {
    QuotaEvent::GrantRevoked {
        grant_id: grant.grant_id,
        revoked_at: at(hour),
        breakage: units(breakage),
        entry: (breakage > 0).then(|| {
            JournalEntry::transfer(
                grant_account(grant),
                breakage_account(quota, None),
                &quota.asset(),
                units(breakage),
            )
            .unwrap()
        }),
    }
}

fn seats_allocated(draws: &[(&GrantTerms, i64)]) -> QuotaEvent {
    let total: i64 = draws.iter().map(|(_, amount)| amount).sum();
    let mut postings: Vec<Posting> = draws
        .iter()
        .map(|(terms, amount)| {
            Posting::debit(
                grant_account(terms),
                QuotaType::Seats.asset(),
                units(*amount),
            )
        })
        .collect();
    postings.push(Posting::credit(
        allocated_account(None),
        QuotaType::Seats.asset(),
        units(total),
    ));
    QuotaEvent::SeatsAllocated {
        amount: units(total),
        allocations: draws
            .iter()
            .map(|(terms, amount)| Allocation {
                grant_id: terms.grant_id,
                amount: units(*amount),
            })
            .collect(),
        entry: JournalEntry::new(postings).unwrap(),
    }
}

/// Seats moved off `from` (or out of the unbacked seats) onto `to`, the
/// rest unbacked; postings in the order the decision writes them.
fn seats_moved(from: Option<&GrantTerms>, to: &[(&GrantTerms, i64)], unbacked: i64) -> QuotaEvent {
    let asset = QuotaType::Seats.asset();
    let placed: i64 = to.iter().map(|(_, amount)| amount).sum();
    let mut postings: Vec<Posting> = to
        .iter()
        .map(|(terms, amount)| Posting::debit(grant_account(terms), asset.clone(), units(*amount)))
        .collect();
    if unbacked > 0 {
        postings.push(Posting::debit(
            unbacked_account(None),
            asset.clone(),
            units(unbacked),
        ));
    }
    let source = from.map_or_else(|| unbacked_account(None), grant_account);
    postings.push(Posting::credit(source, asset, units(placed + unbacked)));
    QuotaEvent::SeatsMoved {
        from: from.map(|terms| terms.grant_id),
        amount: units(placed + unbacked),
        allocations: to
            .iter()
            .map(|(terms, amount)| Allocation {
                grant_id: terms.grant_id,
                amount: units(*amount),
            })
            .collect(),
        unbacked: units(unbacked),
        entry: JournalEntry::new(postings).unwrap(),
    }
}

fn end_subscription(quota: QuotaType, ending: Ending, hour: u32) -> QuotaCommand {
    QuotaCommand::EndSubscriptionGrants {
        quota,
        ending,
        at: at(hour),
    }
}

fn issue(quota: QuotaType, terms: GrantTerms, hour: u32) -> QuotaCommand {
    QuotaCommand::IssueGrant {
        quota,
        account: None,
        terms,
        at: at(hour),
    }
}
