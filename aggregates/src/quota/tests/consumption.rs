//! Consuming runs and credits, and what is available.

use super::*;

#[test]
fn consuming_within_the_balance_debits_the_grant_and_credits_consumption() {
    let grant = terms(1, GrantSource::Purchase, Some(10));
    Given::with(())
        .given(vec![issued(QuotaType::Credits, grant.clone())])
        .when(QuotaCommand::Consume {
            quota: QuotaType::Credits,
            amount: units(4),
            reference: Some("run-1".into()),
            at: at(1),
        })
        .then_expect_events(vec![consumed(
            QuotaType::Credits,
            &[(&grant, 4)],
            Some("run-1"),
        )]);
}

#[test]
fn consuming_more_than_available_is_rejected_and_consumes_nothing() {
    let grant = terms(1, GrantSource::Purchase, Some(3));
    let mut events = vec![issued(QuotaType::Credits, grant.clone())];
    events.push(consumed(QuotaType::Credits, &[(&grant, 1)], None));
    Given::with(())
        .given(events)
        .when(consume(3, 1))
        .then_expect_error(QuotaError::QuotaExceeded {
            quota: QuotaType::Credits,
            requested: 3,
            available: 2,
        });
}

#[test]
fn consumption_against_an_unlimited_grant_always_succeeds() {
    let small = terms(1, GrantSource::Purchase, Some(2));
    let mut unlimited = terms(2, GrantSource::Purchase, None);
    unlimited.priority = 90;
    Given::with(())
        .given(vec![
            issued(QuotaType::Credits, small.clone()),
            issued(QuotaType::Credits, unlimited.clone()),
        ])
        .when(consume(1_000_000, 1))
        .then_expect_events(vec![consumed(
            QuotaType::Credits,
            &[(&small, 2), (&unlimited, 999_998)],
            None,
        )]);
}

#[test]
fn zero_amounts_and_long_references_are_rejected() {
    let grant = terms(1, GrantSource::Purchase, Some(5));
    Given::with(())
        .given(vec![issued(QuotaType::Credits, grant.clone())])
        .when(consume(0, 1))
        .then_expect_error(QuotaError::AmountNotPositive);
    Given::with(())
        .given(vec![issued(QuotaType::Credits, grant)])
        .when(QuotaCommand::Consume {
            quota: QuotaType::Credits,
            amount: units(1),
            reference: Some("r".repeat(201)),
            at: at(1),
        })
        .then_expect_error(QuotaError::InvalidReference(
            crate::text::TextError::TooLong {
                max_chars: REFERENCE_LENGTH_MAX,
            },
        ));
}

#[test]
fn references_with_nul_are_rejected_and_consume_nothing() {
    // Other control characters are refused at the edge; the decision
    // keeps to what storage needs, so earlier history re-decides alike.
    let grant = terms(1, GrantSource::Purchase, Some(5));
    for (reference, code_point, index) in [("run\u{0}1", 0, 3), ("\u{0}", 0, 0)] {
        Given::with(())
            .given(vec![issued(QuotaType::Credits, grant.clone())])
            .when(QuotaCommand::Consume {
                quota: QuotaType::Credits,
                amount: units(1),
                reference: Some(reference.to_string()),
                at: at(1),
            })
            .then_expect_error(QuotaError::InvalidReference(
                crate::text::TextError::ControlCharacter { code_point, index },
            ));
    }
}

#[test]
fn available_units_follow_consumption_and_unlimited_grants() {
    let mut quota = Quota::default();
    let grant = terms(1, GrantSource::Purchase, Some(10));
    quota.apply(issued(QuotaType::Credits, grant.clone()));
    quota.apply(consumed(QuotaType::Credits, &[(&grant, 4)], None));
    assert_eq!(quota.available(at(1)), Ok(Available::Units(units(6))));
    quota.apply(issued(
        QuotaType::Credits,
        terms(2, GrantSource::Promocode, None),
    ));
    assert_eq!(quota.available(at(1)), Ok(Available::Unlimited));
}
