//! Disputes: on a capture, for at most its undisputed, unrefunded amount;
//! `needs_response` -> `under_review` -> `won` (reinstated) | `lost`, once.

use super::*;

fn open(n: u128, capture: u128, amount: i64) -> PaymentCommand {
    PaymentCommand::OpenDispute {
        dispute_id: dispute_id(n),
        capture_id: capture_id(capture),
        amount: cents(amount),
        fee: cents(1_500),
        reference: Some(format!("dp_{n}")),
        reason: Some("fraudulent".into()),
        rules: Rules::CURRENT,
        at: at(5),
    }
}

fn opened(n: u128, tender: u128, capture: u128, amount: i64) -> PaymentEvent {
    PaymentEvent::DisputeOpened {
        dispute_id: dispute_id(n),
        tender_id: tender_id(tender),
        capture_id: capture_id(capture),
        amount: cents(amount),
        fee: cents(1_500),
        reference: Some(format!("dp_{n}")),
        reason: Some("fraudulent".into()),
        at: at(5),
    }
}

/// One tender of 10000, captured 4000 then 5000.
fn captured_twice() -> Vec<PaymentEvent> {
    vec![
        created(),
        authorized(1, 10_000),
        captured(1, 1, 4_000, 0),
        captured(1, 2, 5_000, 1_000),
    ]
}

#[test]
fn a_dispute_opens_on_a_capture_for_at_most_what_is_left_of_it() {
    Given::with(())
        .given(captured_twice())
        .when(open(1, 1, 2_000))
        .then_expect_events(vec![opened(1, 1, 1, 2_000)]);
    let mut events = captured_twice();
    events.push(opened(1, 1, 1, 2_000));
    Given::with(())
        .given(events.clone())
        .when(open(2, 1, 2_001))
        .then_expect_error(PaymentError::DisputeExceedsCaptured {
            disputable: cents(2_000),
            asked: cents(2_001),
        });
    // Refunds count too: 9000 captured, 8000 refunded, 2000 disputed.
    events.push(PaymentEvent::Refunded {
        refund_id: refund_id(1),
        amount: cents(6_500),
        parts: vec![RefundPart {
            tender_id: tender_id(1),
            amount: cents(6_500),
        }],
        reference: None,
        reason: None,
        at: at(5),
    });
    Given::with(())
        .given(events)
        .when(open(2, 2, 501))
        .then_expect_error(PaymentError::DisputeExceedsCaptured {
            disputable: cents(500),
            asked: cents(501),
        });
}

#[test]
fn only_a_capture_through_a_processor_is_disputed() {
    let cash = vec![
        created(),
        PaymentEvent::TenderAuthorized {
            tender_id: tender_id(1),
            method: TenderMethod::Cash,
            source: TenderSource::Cash,
            amount: cents(2_500),
            expires_at: at(7),
            hold_id: None,
            at: at(2),
        },
        PaymentEvent::Captured {
            tender_id: tender_id(1),
            capture_id: capture_id(1),
            amount: cents(2_500),
            reference: None,
            released: Amount::ZERO,
            settled_hold_id: None,
            next_hold_id: None,
            at: at(2),
        },
    ];
    Given::with(())
        .given(cash)
        .when(open(1, 1, 1_000))
        .then_expect_error(PaymentError::DisputeNeedsProcessor);
}

#[test]
fn a_dispute_names_a_known_capture_a_positive_amount_and_a_new_id() {
    Given::with(())
        .given(captured_twice())
        .when(open(1, 9, 1))
        .then_expect_error(PaymentError::UnknownCapture(capture_id(9)));
    Given::with(())
        .given(captured_twice())
        .when(open(1, 1, 0))
        .then_expect_error(PaymentError::NonPositive);
    let mut events = captured_twice();
    events.push(opened(1, 1, 1, 10));
    Given::with(())
        .given(events)
        .when(open(1, 2, 10))
        .then_expect_error(PaymentError::DisputeExists);
}

#[test]
fn a_dispute_goes_under_review_once_and_closes_once() {
    let mut events = captured_twice();
    events.push(opened(1, 1, 1, 2_000));
    let evidence = |hour| PaymentCommand::SubmitEvidence {
        dispute_id: dispute_id(1),
        at: at(hour),
    };
    let close = |outcome| PaymentCommand::CloseDispute {
        dispute_id: dispute_id(1),
        outcome,
        at: at(7),
    };
    Given::with(())
        .given(events.clone())
        .when(evidence(6))
        .then_expect_events(vec![PaymentEvent::EvidenceSubmitted {
            dispute_id: dispute_id(1),
            at: at(6),
        }]);
    events.push(PaymentEvent::EvidenceSubmitted {
        dispute_id: dispute_id(1),
        at: at(6),
    });
    Given::with(())
        .given(events.clone())
        .when(evidence(6))
        .then_expect_error(PaymentError::EvidenceAlreadySubmitted);
    Given::with(())
        .given(events.clone())
        .when(close(DisputeOutcome::Lost))
        .then_expect_events(vec![PaymentEvent::DisputeClosed {
            dispute_id: dispute_id(1),
            outcome: DisputeOutcome::Lost,
            at: at(7),
        }]);
    events.push(PaymentEvent::DisputeClosed {
        dispute_id: dispute_id(1),
        outcome: DisputeOutcome::Lost,
        at: at(7),
    });
    for command in [evidence(8), close(DisputeOutcome::Won)] {
        Given::with(())
            .given(events.clone())
            .when(command)
            .then_expect_error(PaymentError::DisputeClosed);
    }
    Given::with(())
        .given(captured_twice())
        .when(evidence(6))
        .then_expect_error(PaymentError::UnknownDispute(dispute_id(1)));
}

#[test]
fn a_won_dispute_reinstates_its_amount_and_a_lost_one_keeps_it_out() {
    let mut events = captured_twice();
    events.push(opened(1, 1, 1, 2_000));
    let outcome = |outcome| {
        let mut closed = events.clone();
        closed.push(PaymentEvent::DisputeClosed {
            dispute_id: dispute_id(1),
            outcome,
            at: at(7),
        });
        state(closed)
    };
    let refundable = |payment: Payment| payment.tender(tender_id(1)).unwrap().refundable().unwrap();
    assert_eq!(refundable(state(events.clone())), cents(7_000));
    assert_eq!(refundable(outcome(DisputeOutcome::Won)), cents(9_000));
    assert_eq!(refundable(outcome(DisputeOutcome::Lost)), cents(7_000));
    assert_eq!(
        outcome(DisputeOutcome::Lost)
            .dispute(dispute_id(1))
            .unwrap()
            .state,
        DisputeState::Lost
    );
}

#[test]
fn under_the_third_rules_a_dispute_names_the_processors_reference() {
    let unnamed = |rules: Rules| PaymentCommand::OpenDispute {
        dispute_id: dispute_id(1),
        capture_id: capture_id(1),
        amount: cents(2_000),
        fee: cents(1_500),
        reference: None,
        reason: Some("fraudulent".into()),
        rules,
        at: at(5),
    };
    Given::with(())
        .given(captured_twice())
        .when(unnamed(Rules::THIRD))
        .then_expect_error(PaymentError::DisputeReferenceRequired);
    let mut without = opened(1, 1, 1, 2_000);
    if let PaymentEvent::DisputeOpened { reference, .. } = &mut without {
        *reference = None;
    }
    Given::with(())
        .given(captured_twice())
        .when(unnamed(Rules::SECOND))
        .then_expect_events(vec![without]);
}
