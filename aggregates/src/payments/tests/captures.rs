//! Captures: never past what was authorized, at most 50 per tender, a last
//! one releasing the rest, none after the authorization's time.

use super::*;

#[test]
fn captures_add_up_to_the_authorization_and_a_last_one_releases_the_rest() {
    Given::with(())
        .given(vec![created(), authorized(1, 10_000)])
        .when(capture(1, 1, 4_000, false, 3))
        .then_expect_events(vec![with_holds(captured(1, 1, 4_000, 0), Some(0), Some(1))]);
    Given::with(())
        .given(vec![
            created(),
            authorized(1, 10_000),
            with_holds(captured(1, 1, 4_000, 0), Some(0), Some(1)),
        ])
        .when(capture(1, 2, 5_000, true, 3))
        .then_expect_events(vec![with_holds(
            captured(1, 2, 5_000, 1_000),
            Some(1),
            None,
        )]);
    let closed = state(vec![
        created(),
        authorized(1, 10_000),
        captured(1, 1, 4_000, 0),
        captured(1, 2, 5_000, 1_000),
    ]);
    let tender = closed.tender(tender_id(1)).unwrap();
    assert_eq!(
        (
            tender.state,
            tender.captured,
            tender.released,
            tender.hold_id
        ),
        (AuthorizationState::Closed, cents(9_000), cents(1_000), None)
    );
    // Captured in full without saying last: closed too, nothing reserved.
    Given::with(())
        .given(vec![created(), authorized(1, 10_000)])
        .when(capture(1, 1, 10_000, false, 3))
        .then_expect_events(vec![with_holds(captured(1, 1, 10_000, 0), Some(0), None)]);
    // Captured 9000 of a 10000 payment, the rest released: nothing more
    // is to be captured, so it is captured (its amounts tell 9000).
    assert_eq!(closed.status(), Some(PaymentStatus::Captured));
}

#[test]
fn a_capture_past_the_authorization_is_capture_exceeds_authorized() {
    Given::with(())
        .given(vec![
            created(),
            authorized(1, 10_000),
            captured(1, 1, 4_000, 0),
        ])
        .when(capture(1, 2, 6_001, false, 3))
        .then_expect_error(PaymentError::CaptureExceedsAuthorized {
            authorized: cents(10_000),
            captured: cents(4_000),
            asked: cents(6_001),
        });
}

#[test]
fn nothing_is_captured_after_the_authorization_closed_expired_or_was_voided() {
    Given::with(())
        .given(vec![
            created(),
            authorized(1, 10_000),
            captured(1, 1, 4_000, 6_000),
        ])
        .when(capture(1, 2, 1, false, 3))
        .then_expect_error(PaymentError::AuthorizationClosed);
    Given::with(())
        .given(vec![created(), authorized(1, 10_000)])
        .when(capture(1, 1, 1, false, 7))
        .then_expect_error(PaymentError::AuthorizationExpired { expires_at: at(7) });
    Given::with(())
        .given(vec![
            created(),
            authorized(1, 10_000),
            PaymentEvent::AuthorizationExpired {
                tender_id: tender_id(1),
                released: cents(10_000),
                at: at(7),
            },
            authorized(2, 10_000),
        ])
        .when(capture(1, 1, 1, false, 3))
        .then_expect_error(PaymentError::AuthorizationExpired { expires_at: at(7) });
    // Cash is captured as it is taken: there is nothing to capture.
    Given::with(())
        .given(vec![
            created(),
            PaymentEvent::TenderAuthorized {
                tender_id: tender_id(1),
                method: TenderMethod::Cash,
                source: TenderSource::Cash,
                amount: cents(100),
                expires_at: at(7),
                hold_id: None,
                at: at(2),
            },
            PaymentEvent::Captured {
                tender_id: tender_id(1),
                capture_id: capture_id(1),
                amount: cents(100),
                reference: None,
                released: Amount::ZERO,
                settled_hold_id: None,
                next_hold_id: None,
                at: at(2),
            },
        ])
        .when(capture(1, 2, 1, false, 3))
        .then_expect_error(PaymentError::NotCapturable);
}

#[test]
fn a_capture_is_positive_unique_on_a_known_tender_and_one_of_at_most_fifty() {
    Given::with(())
        .given(vec![created(), authorized(1, 10_000)])
        .when(capture(1, 1, 0, false, 3))
        .then_expect_error(PaymentError::NonPositive);
    Given::with(())
        .given(vec![created(), authorized(1, 10_000)])
        .when(capture(2, 1, 1, false, 3))
        .then_expect_error(PaymentError::UnknownTender(tender_id(2)));
    Given::with(())
        .given(vec![created(), authorized(1, 10_000), captured(1, 1, 1, 0)])
        .when(capture(1, 1, 1, false, 3))
        .then_expect_error(PaymentError::CaptureExists);
    let mut fifty = vec![created(), authorized(1, 10_000)];
    fifty.extend((1..=CAPTURES_PER_TENDER_MAX as u128).map(|n| captured(1, n, 1, 0)));
    Given::with(())
        .given(fifty)
        .when(capture(1, 999, 1, false, 3))
        .then_expect_error(PaymentError::TooManyCaptures {
            max: CAPTURES_PER_TENDER_MAX,
        });
}

#[test]
fn a_further_capture_of_a_processors_tender_names_its_reference() {
    // The first capture may go without one (the processor knows it by the
    // charge's); a further one without one could never settle.
    let without = |capture_n| {
        let mut command = capture(1, capture_n, 1_000, false, 3);
        if let PaymentCommand::Capture { reference, .. } = &mut command {
            *reference = None;
        }
        command
    };
    let mut first = with_holds(captured(1, 1, 1_000, 0), Some(0), Some(1));
    if let PaymentEvent::Captured { reference, .. } = &mut first {
        *reference = None;
    }
    Given::with(())
        .given(vec![created(), authorized(1, 10_000)])
        .when(without(1))
        .then_expect_events(vec![first.clone()]);
    Given::with(())
        .given(vec![created(), authorized(1, 10_000), first.clone()])
        .when(without(2))
        .then_expect_error(PaymentError::CaptureReferenceRequired);
    // Recorded under the first rules, such a capture was taken: it is
    // decided again the same.
    let mut old = without(2);
    if let PaymentCommand::Capture { rules, .. } = &mut old {
        *rules = crate::rules::Rules::FIRST;
    }
    let mut second = with_holds(captured(1, 2, 1_000, 0), Some(1), Some(2));
    if let PaymentEvent::Captured { reference, .. } = &mut second {
        *reference = None;
    }
    Given::with(())
        .given(vec![created(), authorized(1, 10_000), first])
        .when(old)
        .then_expect_events(vec![second]);
    Given::with(())
        .given(vec![
            created(),
            authorized(1, 10_000),
            with_holds(captured(1, 1, 1_000, 0), Some(0), Some(1)),
        ])
        .when(capture(1, 2, 1_000, false, 3))
        .then_expect_events(vec![with_holds(captured(1, 2, 1_000, 0), Some(1), Some(2))]);
}
