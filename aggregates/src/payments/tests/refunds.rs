//! Refunds: at most what was captured less refunded less disputed, from
//! the tender named or the most recently captured first; a pending refund
//! fails once, giving its amount back.

use super::*;

fn refund(n: u128, amount: i64, tender: Option<u128>) -> PaymentCommand {
    PaymentCommand::Refund {
        refund_id: refund_id(n),
        amount: cents(amount),
        tender_id: tender.map(tender_id),
        reference: Some(format!("re_{n}")),
        reason: None,
        rules: Rules::CURRENT,
        at: at(4),
    }
}

fn refunded(n: u128, parts: &[(u128, i64)]) -> PaymentEvent {
    PaymentEvent::Refunded {
        refund_id: refund_id(n),
        amount: cents(parts.iter().map(|(_, amount)| amount).sum()),
        parts: parts
            .iter()
            .map(|(tender, amount)| RefundPart {
                tender_id: tender_id(*tender),
                amount: cents(*amount),
            })
            .collect(),
        reference: Some(format!("re_{n}")),
        reason: None,
        at: at(4),
    }
}

/// Tender 1 captured 6000 first, tender 2 captured 4000 after.
fn two_captured() -> Vec<PaymentEvent> {
    vec![
        created(),
        authorized(1, 6_000),
        authorized(2, 4_000),
        captured(1, 1, 6_000, 0),
        captured(2, 2, 4_000, 0),
    ]
}

#[test]
fn a_refund_draws_from_the_most_recently_captured_tender_first() {
    Given::with(())
        .given(two_captured())
        .when(refund(1, 5_000, None))
        .then_expect_events(vec![refunded(1, &[(2, 4_000), (1, 1_000)])]);
}

#[test]
fn a_refund_on_a_named_tender_draws_from_it_alone() {
    Given::with(())
        .given(two_captured())
        .when(refund(1, 5_000, Some(1)))
        .then_expect_events(vec![refunded(1, &[(1, 5_000)])]);
    Given::with(())
        .given(two_captured())
        .when(refund(1, 4_001, Some(2)))
        .then_expect_error(PaymentError::RefundExceedsCaptured {
            refundable: cents(4_000),
            asked: cents(4_001),
        });
    Given::with(())
        .given(two_captured())
        .when(refund(1, 1, Some(3)))
        .then_expect_error(PaymentError::UnknownTender(tender_id(3)));
}

#[test]
fn a_refund_never_draws_from_two_processors_tenders() {
    // Tender 2 went through another processor than tender 1.
    let mut events = two_captured();
    if let PaymentEvent::TenderAuthorized { source, .. } = &mut events[2] {
        *source = TenderSource::Processor {
            processor: "adyen".into(),
            reference: "psp_2".into(),
        };
    }
    Given::with(())
        .given(events.clone())
        .when(refund(1, 5_000, None))
        .then_expect_error(PaymentError::RefundAcrossProcessors {
            processors: vec!["adyen".into(), "stripe".into()],
        });
    // Within one processor's tenders, or naming the tender, it draws.
    Given::with(())
        .given(events.clone())
        .when(refund(1, 4_000, None))
        .then_expect_events(vec![refunded(1, &[(2, 4_000)])]);
    Given::with(())
        .given(events)
        .when(refund(1, 5_000, Some(1)))
        .then_expect_events(vec![refunded(1, &[(1, 5_000)])]);
}

#[test]
fn refunds_never_pass_what_was_captured_less_refunded_less_disputed() {
    let mut events = two_captured();
    events.push(refunded(1, &[(2, 1_000)]));
    events.push(PaymentEvent::DisputeOpened {
        dispute_id: dispute_id(1),
        tender_id: tender_id(1),
        capture_id: capture_id(1),
        amount: cents(2_000),
        fee: cents(1_500),
        reference: None,
        reason: None,
        at: at(5),
    });
    // 10000 captured, 1000 refunded, 2000 disputed: 7000 left.
    Given::with(())
        .given(events.clone())
        .when(refund(2, 7_001, None))
        .then_expect_error(PaymentError::RefundExceedsCaptured {
            refundable: cents(7_000),
            asked: cents(7_001),
        });
    Given::with(())
        .given(events)
        .when(refund(2, 7_000, None))
        .then_expect_events(vec![refunded(2, &[(2, 3_000), (1, 4_000)])]);
    // Nothing captured, nothing refundable.
    Given::with(())
        .given(vec![created(), authorized(1, 6_000)])
        .when(refund(1, 1, None))
        .then_expect_error(PaymentError::RefundExceedsCaptured {
            refundable: Amount::ZERO,
            asked: cents(1),
        });
}

#[test]
fn a_refund_is_positive_and_its_id_unique() {
    Given::with(())
        .given(two_captured())
        .when(refund(1, 0, None))
        .then_expect_error(PaymentError::NonPositive);
    let mut events = two_captured();
    events.push(refunded(1, &[(2, 10)]));
    Given::with(())
        .given(events)
        .when(refund(1, 10, None))
        .then_expect_error(PaymentError::RefundExists);
}

#[test]
fn a_pending_refund_fails_once_and_gives_its_amount_back() {
    let mut events = two_captured();
    events.push(refunded(1, &[(2, 4_000), (1, 1_000)]));
    let fail = |hour| PaymentCommand::FailRefund {
        refund_id: refund_id(1),
        reason: Some("closed account".into()),
        at: at(hour),
    };
    let failed = PaymentEvent::RefundFailed {
        refund_id: refund_id(1),
        reason: Some("closed account".into()),
        at: at(5),
    };
    Given::with(())
        .given(events.clone())
        .when(fail(5))
        .then_expect_events(vec![failed.clone()]);
    events.push(failed);
    Given::with(())
        .given(events.clone())
        .when(fail(6))
        .then_expect_error(PaymentError::RefundNotPending { state: "failed" });
    let after = state(events.clone());
    assert_eq!(after.refunded().unwrap(), Amount::ZERO);
    assert_eq!(after.status(), Some(PaymentStatus::Captured));
    // Its amount is refundable again.
    Given::with(())
        .given(events)
        .when(refund(2, 10_000, None))
        .then_expect_events(vec![refunded(2, &[(2, 4_000), (1, 6_000)])]);
    Given::with(())
        .given(two_captured())
        .when(fail(5))
        .then_expect_error(PaymentError::UnknownRefund(refund_id(1)));
}

#[test]
fn under_the_third_rules_a_refund_of_a_processors_tender_names_its_reference() {
    let unnamed = |rules: Rules| PaymentCommand::Refund {
        refund_id: refund_id(1),
        amount: cents(5_000),
        tender_id: None,
        reference: None,
        reason: None,
        rules,
        at: at(4),
    };
    Given::with(())
        .given(two_captured())
        .when(unnamed(Rules::THIRD))
        .then_expect_error(PaymentError::RefundReferenceRequired);
    // What the second rules accepted, a history of them still holds.
    let mut without = refunded(1, &[(2, 4_000), (1, 1_000)]);
    if let PaymentEvent::Refunded { reference, .. } = &mut without {
        *reference = None;
    }
    Given::with(())
        .given(two_captured())
        .when(unnamed(Rules::SECOND))
        .then_expect_events(vec![without]);
    // Named, it is refunded.
    Given::with(())
        .given(two_captured())
        .when(refund(1, 5_000, None))
        .then_expect_events(vec![refunded(1, &[(2, 4_000), (1, 1_000)])]);
}

#[test]
fn a_refund_of_cash_alone_names_no_reference() {
    use crate::decide::Decide;
    let mut payment = state(vec![created()]);
    let tendered = payment
        .decide(PaymentCommand::Tender {
            tender_id: tender_id(1),
            method: TenderMethod::Cash,
            source: TenderSource::Cash,
            amount: cents(6_000),
            capture_id: capture_id(1),
            hold_id: hold(1, 0),
            at: at(2),
        })
        .unwrap();
    for event in tendered {
        payment.apply(event);
    }
    let decided = payment
        .decide(PaymentCommand::Refund {
            refund_id: refund_id(1),
            amount: cents(1_000),
            tender_id: None,
            reference: None,
            reason: None,
            rules: Rules::THIRD,
            at: at(4),
        })
        .unwrap();
    assert!(
        matches!(
            &decided[..],
            [PaymentEvent::Refunded {
                reference: None,
                ..
            }]
        ),
        "{decided:?}"
    );
}
