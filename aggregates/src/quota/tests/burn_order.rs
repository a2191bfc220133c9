//! The burn-down order of consumption across grants.

use super::*;

#[test]
fn consumption_burns_lower_priority_numbers_first_and_spans_grants() {
    let mut later = terms(1, GrantSource::Purchase, Some(10));
    later.priority = 60;
    let mut first = terms(2, GrantSource::Purchase, Some(3));
    first.priority = 10;
    Given::with(())
        .given(vec![
            issued(QuotaType::Credits, later.clone()),
            issued(QuotaType::Credits, first.clone()),
        ])
        .when(consume(5, 1))
        .then_expect_events(vec![consumed(
            QuotaType::Credits,
            &[(&first, 3), (&later, 2)],
            None,
        )]);
}

#[test]
fn at_equal_priority_the_earliest_expiry_burns_first_and_no_expiry_last() {
    let never = terms(1, GrantSource::Purchase, Some(5));
    let mut late = terms(2, GrantSource::Purchase, Some(5));
    late.expires_at = Some(at(20));
    let mut soon = terms(3, GrantSource::Purchase, Some(5));
    soon.expires_at = Some(at(10));
    Given::with(())
        .given(vec![
            issued(QuotaType::Credits, never.clone()),
            issued(QuotaType::Credits, late.clone()),
            issued(QuotaType::Credits, soon.clone()),
        ])
        .when(consume(12, 1))
        .then_expect_events(vec![consumed(
            QuotaType::Credits,
            &[(&soon, 5), (&late, 5), (&never, 2)],
            None,
        )]);
}

#[test]
fn a_lower_priority_number_burns_first_even_against_an_earlier_expiry() {
    // Priority is the first key: it beats expiry.
    let mut first = terms(1, GrantSource::Purchase, Some(5));
    first.priority = 10;
    let mut expiring = terms(2, GrantSource::Purchase, Some(5));
    expiring.expires_at = Some(at(10));
    Given::with(())
        .given(vec![
            issued(QuotaType::Credits, expiring.clone()),
            issued(QuotaType::Credits, first.clone()),
        ])
        .when(consume(6, 1))
        .then_expect_events(vec![consumed(
            QuotaType::Credits,
            &[(&first, 5), (&expiring, 1)],
            None,
        )]);
}

#[test]
fn an_earlier_expiry_burns_first_even_when_the_other_grant_is_promotional() {
    // Expiry is the second key: it beats promotional before paid.
    let mut paid = terms(1, GrantSource::Purchase, Some(5));
    paid.expires_at = Some(at(10));
    let mut promo = terms(2, GrantSource::Promocode, Some(5));
    promo.expires_at = Some(at(20));
    Given::with(())
        .given(vec![
            issued(QuotaType::Credits, promo.clone()),
            issued(QuotaType::Credits, paid.clone()),
        ])
        .when(consume(6, 1))
        .then_expect_events(vec![consumed(
            QuotaType::Credits,
            &[(&paid, 5), (&promo, 1)],
            None,
        )]);
}

#[test]
fn a_promotional_grant_burns_before_an_older_paid_one() {
    // Promotional before paid is the third key: it beats age.
    let paid = terms(1, GrantSource::Subscription, Some(5));
    let promo = terms(2, GrantSource::Promocode, Some(5));
    Given::with(())
        .given(vec![
            issued(QuotaType::Credits, paid.clone()),
            issued(QuotaType::Credits, promo.clone()),
        ])
        .when(consume(6, 1))
        .then_expect_events(vec![consumed(
            QuotaType::Credits,
            &[(&promo, 5), (&paid, 1)],
            None,
        )]);
}

#[test]
fn the_grant_issued_first_burns_first_whatever_its_id_or_backdated_effective_time() {
    // Age is issue order, the fourth key: it beats the id, and a later
    // grant backdating its effective time does not make it older.
    let mut older = terms(9, GrantSource::Purchase, Some(5));
    older.effective_at = at(1);
    let mut backdated = terms(1, GrantSource::Purchase, Some(5));
    backdated.effective_at = at(0);
    Given::with(())
        .given(vec![
            issued(QuotaType::Credits, older.clone()),
            issued(QuotaType::Credits, backdated.clone()),
        ])
        .when(consume(6, 2))
        .then_expect_events(vec![consumed(
            QuotaType::Credits,
            &[(&older, 5), (&backdated, 1)],
            None,
        )]);
}
