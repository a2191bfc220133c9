//! Grants past their expiry or not yet in effect.

use super::*;

#[test]
fn a_grant_past_its_expiry_is_expired_with_breakage_and_not_used() {
    let mut expiring = terms(1, GrantSource::Purchase, Some(10));
    expiring.expires_at = Some(at(5));
    let other = terms(2, GrantSource::Purchase, Some(10));
    let breakage = JournalEntry::transfer(
        grant_account(&expiring),
        breakage_account(QuotaType::Credits, None),
        &QuotaType::Credits.asset(),
        units(10),
    )
    .unwrap();
    Given::with(())
        .given(vec![
            issued(QuotaType::Credits, expiring.clone()),
            issued(QuotaType::Credits, other.clone()),
        ])
        .when(consume(3, 5))
        .then_expect_events(vec![
            QuotaEvent::GrantExpired {
                grant_id: id(1),
                expired_at: at(5),
                breakage: units(10),
                entry: Some(breakage),
            },
            consumed(QuotaType::Credits, &[(&other, 3)], None),
        ]);
}

#[test]
fn a_grant_not_yet_in_effect_is_not_used() {
    let mut future = terms(1, GrantSource::Purchase, Some(10));
    future.effective_at = at(8);
    Given::with(())
        .given(vec![issued(QuotaType::Credits, future)])
        .when(consume(1, 2))
        .then_expect_error(QuotaError::QuotaExceeded {
            quota: QuotaType::Credits,
            requested: 1,
            available: 0,
        });
}

#[test]
fn expiring_as_of_a_time_closes_only_the_grants_past_expiry() {
    let mut expiring = terms(1, GrantSource::Purchase, Some(4));
    expiring.expires_at = Some(at(5));
    let breakage = JournalEntry::transfer(
        grant_account(&expiring),
        breakage_account(QuotaType::Credits, None),
        &QuotaType::Credits.asset(),
        units(4),
    )
    .unwrap();
    Given::with(())
        .given(vec![
            issued(QuotaType::Credits, expiring.clone()),
            issued(QuotaType::Credits, terms(2, GrantSource::Purchase, Some(1))),
        ])
        .when(QuotaCommand::ExpireGrants {
            quota: QuotaType::Credits,
            at: at(6),
        })
        // Expired at its expiry (5), not at the command's time (6).
        .then_expect_events(vec![QuotaEvent::GrantExpired {
            grant_id: id(1),
            expired_at: at(5),
            breakage: units(4),
            entry: Some(breakage),
        }]);
    Given::with(())
        .given(vec![issued(QuotaType::Credits, expiring)])
        .when(QuotaCommand::ExpireGrants {
            quota: QuotaType::Credits,
            at: at(4),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_grant_expiring_in_the_same_command_makes_room_for_another() {
    let mut events: Vec<QuotaEvent> = (1..OPEN_GRANTS_MAX as u128)
        .map(|n| {
            issued(
                QuotaType::Runs,
                terms(n + 1, GrantSource::Purchase, Some(1)),
            )
        })
        .collect();
    let mut expiring = terms(1, GrantSource::Purchase, Some(1));
    expiring.expires_at = Some(at(3));
    events.push(issued(QuotaType::Runs, expiring.clone()));
    let next = terms(5_000, GrantSource::Purchase, Some(1));
    let breakage = JournalEntry::transfer(
        grant_account(&expiring),
        breakage_account(QuotaType::Runs, None),
        &QuotaType::Runs.asset(),
        units(1),
    )
    .unwrap();
    Given::with(())
        .given(events)
        .when(issue(QuotaType::Runs, next.clone(), 3))
        .then_expect_events(vec![
            QuotaEvent::GrantExpired {
                grant_id: id(1),
                expired_at: at(3),
                breakage: units(1),
                entry: Some(breakage),
            },
            issued(QuotaType::Runs, next),
        ]);
}

#[test]
fn revoking_a_grant_that_expires_in_the_same_command_is_rejected_as_expired() {
    let mut expiring = terms(1, GrantSource::Purchase, Some(4));
    expiring.expires_at = Some(at(5));
    Given::with(())
        .given(vec![issued(QuotaType::Credits, expiring)])
        .when(QuotaCommand::RevokeGrant {
            grant_id: id(1),
            at: at(5),
        })
        .then_expect_error(QuotaError::GrantClosed {
            grant_id: id(1),
            status: "expired",
        });
}

#[test]
fn ending_subscription_grants_as_expired_records_expiry_with_breakage() {
    let subscription = terms(1, GrantSource::Subscription, Some(10));
    let breakage = JournalEntry::transfer(
        grant_account(&subscription),
        breakage_account(QuotaType::Runs, None),
        &QuotaType::Runs.asset(),
        units(7),
    )
    .unwrap();
    Given::with(())
        .given(vec![
            issued(QuotaType::Runs, subscription.clone()),
            consumed(QuotaType::Runs, &[(&subscription, 3)], None),
        ])
        .when(end_subscription(QuotaType::Runs, Ending::Expired, 4))
        .then_expect_events(vec![QuotaEvent::GrantExpired {
            grant_id: id(1),
            expired_at: at(4),
            breakage: units(7),
            entry: Some(breakage),
        }]);
}
