//! Totals past 64 bits are refused.

use super::*;

#[test]
fn a_grant_that_would_take_the_open_total_past_64_bits_is_rejected_with_overflow() {
    let full = terms(1, GrantSource::Purchase, Some(i64::MAX));
    Given::with(())
        .given(vec![issued(QuotaType::Credits, full)])
        .when(issue(
            QuotaType::Credits,
            terms(2, GrantSource::Purchase, Some(1)),
            1,
        ))
        .then_expect_error(QuotaError::Overflow);
}

#[test]
fn seat_grants_count_their_whole_amount_towards_the_64_bit_limit() {
    // Seats come back when released, so a seat grant's amount counts
    // even while its seats are allocated.
    let full = terms(1, GrantSource::Purchase, Some(i64::MAX));
    Given::with(())
        .given(vec![
            issued(QuotaType::Seats, full.clone()),
            seats_allocated(&[(&full, i64::MAX)]),
        ])
        .when(issue(
            QuotaType::Seats,
            terms(2, GrantSource::Purchase, Some(1)),
            1,
        ))
        .then_expect_error(QuotaError::Overflow);
}

#[test]
fn a_grant_that_would_take_the_issued_accounts_debits_past_64_bits_is_rejected() {
    // Nothing is open, but quota_issued:credits already has i64::MAX
    // debits: verify would refuse the entry, so the decision does.
    let full = terms(1, GrantSource::Purchase, Some(i64::MAX));
    Given::with(())
        .given(vec![
            issued(QuotaType::Credits, full.clone()),
            revoked(QuotaType::Credits, &full, i64::MAX, 1),
        ])
        .when(issue(
            QuotaType::Credits,
            terms(2, GrantSource::Purchase, Some(1)),
            2,
        ))
        .then_expect_error(QuotaError::Overflow);
}

#[test]
fn consuming_past_64_bits_from_an_unlimited_grant_is_rejected_with_overflow() {
    let unlimited = terms(1, GrantSource::Purchase, None);
    let mut events = vec![issued(QuotaType::Credits, unlimited.clone())];
    events.push(QuotaEvent::QuotaConsumed {
        amount: max(),
        reference: None,
        allocations: vec![Allocation {
            grant_id: id(1),
            amount: max(),
        }],
        entry: JournalEntry::transfer(
            grant_account(&unlimited),
            consumed_account(QuotaType::Credits, None),
            &QuotaType::Credits.asset(),
            max(),
        )
        .unwrap(),
    });
    Given::with(())
        .given(events)
        .when(consume(1, 1))
        .then_expect_error(QuotaError::Overflow);
}

#[test]
fn consuming_when_the_consumed_account_would_pass_64_bits_is_rejected() {
    // Two unlimited grants each within 64 bits; their consumption account
    // is shared and would overflow.
    let first = terms(1, GrantSource::Purchase, None);
    let mut second = terms(2, GrantSource::Purchase, None);
    second.priority = 60;
    let consumed_max = QuotaEvent::QuotaConsumed {
        amount: max(),
        reference: None,
        allocations: vec![Allocation {
            grant_id: id(1),
            amount: max(),
        }],
        entry: JournalEntry::transfer(
            grant_account(&first),
            consumed_account(QuotaType::Credits, None),
            &QuotaType::Credits.asset(),
            max(),
        )
        .unwrap(),
    };
    Given::with(())
        .given(vec![
            issued(QuotaType::Credits, first.clone()),
            consumed_max,
            revoked(QuotaType::Credits, &first, 0, 1),
            issued(QuotaType::Credits, second),
        ])
        .when(consume(1, 2))
        .then_expect_error(QuotaError::Overflow);
}
